/* test_window: send windows and frequency caps — parsing and its errors, the next
 * allowed moment across days, midnight, weekends and DST changes (window.c, with the
 * zone offsets checked against glibc's localtime_r), and through the engine on a
 * virtual clock: deferral with deliver_at and the same id, cap suppression and its
 * sliding period, per-send options over the channel's, the person's timezone trait vs
 * the default, decisions, stats, metrics, load-time errors, and the send history
 * across a store round trip. */
#define _GNU_SOURCE
#include "testutil.h"

#include <time.h>

#include "clock.h"
#include "outbox.h"
#include "store.h"
#include "window.h"

static int64_t ms_of(const char *iso)
{
    int64_t ms;
    assert_int_equal(jd_parse_time(iso, &ms), 0);
    return ms;
}

static void parse_ok(jd_window *w, const char *days, const char *hours, const char *tz)
{
    char err[256];
    if (jd_window_parse(w, days, hours, tz, err, sizeof err))
        fail_msg("window %s %s %s: %s", days ? days : "-", hours ? hours : "-", tz ? tz : "-", err);
}

/* next(window, zone, from) must be want (ISO times) */
static void expect_next(const char *days, const char *hours, const char *zone, const char *from, const char *want)
{
    jd_window w;
    parse_ok(&w, days, hours, NULL);
    jd_tz *z = zone ? jd_tz_load(zone) : NULL;
    if (zone)
        assert_non_null(z);
    int64_t got = jd_window_next(&w, z, ms_of(from));
    char g[40];
    jd_time_format(got, g);
    jd_tz_free(z);
    if (got != ms_of(want))
        fail_msg("%s %s in %s from %s: expected %s, got %s", days ? days : "-", hours ? hours : "-",
                 zone ? zone : "UTC", from, want, g);
}

/* ---------------------------------------------------------------- window.c */

static void test_parse(void **state)
{
    (void)state;
    jd_window w;
    parse_ok(&w, "mon-fri", "09-17", "user");
    assert_int_equal(w.days, 0x1f);
    assert_int_equal(w.start, 9 * 60);
    assert_int_equal(w.end, 17 * 60);
    assert_true(w.tz_user);
    assert_string_equal(w.text, "mon-fri 09-17");
    parse_ok(&w, "sat,sun", "08:30-12:15", "Europe/Berlin");
    assert_int_equal(w.days, 0x60);
    assert_int_equal(w.start, 8 * 60 + 30);
    assert_int_equal(w.end, 12 * 60 + 15);
    assert_string_equal(w.tz, "Europe/Berlin");
    parse_ok(&w, "mon-wed,fri", "22-06", NULL);
    assert_int_equal(w.days, 0x17);
    assert_int_equal(w.start, 22 * 60);
    assert_int_equal(w.end, 6 * 60);
    parse_ok(&w, "fri-mon", "18-00", NULL); /* wraps the week; 00 as an end is midnight */
    assert_int_equal(w.days, 0x71);
    assert_int_equal(w.end, 1440);
    parse_ok(&w, NULL, "00-24", NULL);
    assert_int_equal(w.days, 0x7f);
    assert_int_equal(w.end, 1440);

    static const char *const bad[][4] = {
        {"monday-fri", "09-17", NULL, "days"},
        {"mon-", "09-17", NULL, "range"},
        {"mon;fri", "09-17", NULL, "','"},
        {"", "09-17", NULL, "days"},
        {"mon", "9-", NULL, "hours"},
        {"mon", "09-17-18", NULL, "hours"},
        {"mon", "25-26", NULL, "hours"},
        {"mon", "09:60-10", NULL, "hours"},
        {"mon", "10-10", NULL, "empty"},
        {"mon", "24-06", NULL, "hours"},
        {"mon", "09-17", "", "tz"},
        {"mon", "09-17", "../etc/passwd", "tz"},
        {"mon", "09-17", "/etc/passwd", "tz"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[256] = "";
        if (jd_window_parse(&w, bad[i][0], bad[i][1], bad[i][2], err, sizeof err) == 0)
            fail_msg("accepted days '%s' hours '%s'", bad[i][0], bad[i][1]);
        if (!strstr(err, bad[i][3]))
            fail_msg("days '%s' hours '%s': '%s' lacks '%s'", bad[i][0], bad[i][1], err, bad[i][3]);
    }
    jd_cap c;
    char err[256];
    assert_int_equal(jd_cap_parse(&c, 3, "7d", err, sizeof err), 0);
    assert_int_equal(c.max, 3);
    assert_int_equal(c.per_ms, 7 * 86400000LL);
    assert_int_equal(jd_cap_parse(&c, 0, "7d", err, sizeof err), -1);
    assert_int_equal(jd_cap_parse(&c, 3, "weekly", err, sizeof err), -1);
}

static void test_zones_load(void **state)
{
    (void)state;
    static const char *const bad[] = {"Mars/Olympus", "Europe", "", "Europe/../Europe/Berlin", "zone.tab"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        jd_tz *z = jd_tz_load(bad[i]);
        if (z) {
            jd_tz_free(z);
            fail_msg("loaded '%s'", bad[i]);
        }
    }
    jd_tz *z = jd_tz_load("UTC");
    assert_non_null(z);
    assert_int_equal(jd_tz_offset(z, 1780000000), 0);
    jd_tz_free(z);
}

/* The offsets agree with glibc's reading of the same files, from 1901 to 2100 (past
 * 2037 they come from the files' POSIX-TZ footer rules). */
static void test_offsets_match_libc(void **state)
{
    (void)state;
    static const char *const zones[] = {"Europe/Berlin",     "America/New_York", "Australia/Sydney",
                                        "Asia/Kolkata",      "America/Santiago", "Pacific/Chatham",
                                        "Africa/Casablanca", "Europe/Dublin",    "America/St_Johns"};
    char *old = getenv("TZ") ? strdup(getenv("TZ")) : NULL;
    long mismatches = 0;
    for (size_t i = 0; i < sizeof zones / sizeof zones[0]; i++) {
        jd_tz *z = jd_tz_load(zones[i]);
        assert_non_null(z);
        setenv("TZ", zones[i], 1);
        tzset();
        for (int64_t t = -2000000000LL; t < 4100000000LL; t += 86400 * 3 + 3607) {
            struct tm tm;
            time_t tt = (time_t)t;
            localtime_r(&tt, &tm);
            if (tm.tm_gmtoff != jd_tz_offset(z, t) && mismatches++ < 5)
                fprintf(stderr, "%s at %lld: libc %ld, ours %d\n", zones[i], (long long)t, tm.tm_gmtoff,
                        jd_tz_offset(z, t));
        }
        jd_tz_free(z);
    }
    if (old)
        setenv("TZ", old, 1);
    else
        unsetenv("TZ");
    tzset();
    free(old);
    assert_int_equal(mismatches, 0);
}

static void test_next_days_and_hours(void **state)
{
    (void)state;
    /* inside: now */
    expect_next("mon-fri", "09-17", NULL, "2026-03-02T10:00:00Z", "2026-03-02T10:00:00Z");
    expect_next("mon-fri", "09-17", NULL, "2026-03-02T09:00:00Z", "2026-03-02T09:00:00Z");
    /* before the hours, after them (end exclusive), on the weekend */
    expect_next("mon-fri", "09-17", NULL, "2026-03-02T06:00:00Z", "2026-03-02T09:00:00Z");
    expect_next("mon-fri", "09-17", NULL, "2026-03-02T17:00:00Z", "2026-03-03T09:00:00Z");
    expect_next("mon-fri", "09-17", NULL, "2026-03-06T16:59:59.999Z", "2026-03-06T16:59:59.999Z");
    expect_next("mon-fri", "09-17", NULL, "2026-03-06T17:00:00Z", "2026-03-09T09:00:00Z");
    expect_next("mon-fri", "09-17", NULL, "2026-02-28T12:00:00Z", "2026-03-02T09:00:00Z");
    expect_next("sat,sun", "10:30-12", NULL, "2026-03-02T12:00:00Z", "2026-03-07T10:30:00Z");
    expect_next("mon-wed,fri", NULL, NULL, "2026-03-05T12:00:00Z", "2026-03-06T00:00:00Z");
    /* local days and hours */
    expect_next("mon-fri", "09-17", "Europe/Berlin", "2026-02-28T10:00:00Z", "2026-03-02T08:00:00Z");
    expect_next("mon-fri", "09-17", "America/New_York", "2026-03-02T08:00:00Z", "2026-03-02T14:00:00Z");
    expect_next("mon-fri", "09-17", "Asia/Kolkata", "2026-03-02T11:30:00Z", "2026-03-03T03:30:00Z");
    /* Friday 23:00 in Berlin is Friday 22:00 UTC: outside; Monday 09:00 Berlin */
    expect_next("mon-fri", "09-17", "Europe/Berlin", "2026-03-06T22:00:00Z", "2026-03-09T08:00:00Z");
}

static void test_next_wrapping_midnight(void **state)
{
    (void)state;
    /* "fri 22-06" is Friday 22:00 to Saturday 06:00 */
    expect_next("fri", "22-06", NULL, "2026-03-06T23:00:00Z", "2026-03-06T23:00:00Z");
    expect_next("fri", "22-06", NULL, "2026-03-07T05:59:00Z", "2026-03-07T05:59:00Z");
    expect_next("fri", "22-06", NULL, "2026-03-07T06:00:00Z", "2026-03-13T22:00:00Z");
    expect_next("fri", "22-06", NULL, "2026-03-06T03:00:00Z", "2026-03-06T22:00:00Z"); /* Thursday's night: no */
    expect_next("mon-fri", "22-06", NULL, "2026-03-07T23:00:00Z", "2026-03-09T22:00:00Z");
    expect_next("mon-fri", "22-06", NULL, "2026-03-03T02:00:00Z", "2026-03-03T02:00:00Z");
}

static void test_next_across_dst(void **state)
{
    (void)state;
    /* Berlin: 2026-03-29 02:00 CET -> 03:00 CEST (01:00Z); 2026-10-25 03:00 CEST -> 02:00 CET (01:00Z) */
    expect_next("mon-fri", "09-17", "Europe/Berlin", "2026-03-27T17:00:00Z", "2026-03-30T07:00:00Z");
    expect_next(NULL, "09-17", "Europe/Berlin", "2026-03-28T17:00:00Z", "2026-03-29T07:00:00Z");
    expect_next(NULL, "09-17", "Europe/Berlin", "2026-03-28T07:00:00Z", "2026-03-28T08:00:00Z");
    /* 02:00-03:00 does not exist on 2026-03-29: the next is a week later, in CEST */
    expect_next("sun", "02-03", "Europe/Berlin", "2026-03-28T12:00:00Z", "2026-04-05T00:00:00Z");
    /* 02:30 happens twice on 2026-10-25: first in CEST, then in CET */
    expect_next("sun", "02:30-02:45", "Europe/Berlin", "2026-10-25T00:00:00Z", "2026-10-25T00:30:00Z");
    expect_next("sun", "02:30-02:45", "Europe/Berlin", "2026-10-25T00:45:00Z", "2026-10-25T01:30:00Z");
    expect_next(NULL, "09-17", "Europe/Berlin", "2026-10-24T17:00:00Z", "2026-10-25T08:00:00Z");
    /* New York, 2026-03-08 02:00 EST -> 03:00 EDT: 02:30 is skipped; the window opens at
     * the change (03:00 EDT, 07:00Z) */
    expect_next("sun", "02:30-04", "America/New_York", "2026-03-08T05:00:00Z", "2026-03-08T07:00:00Z");
    /* past 2037: from the footer rules */
    expect_next(NULL, "09-17", "Europe/Berlin", "2040-07-01T16:00:00Z", "2040-07-02T07:00:00Z");
}

/* ---------------------------------------------------------------- through the engine */

#define CHANNELS                                                                                             \
    "local j = require 'journey'\n"                                                                          \
    "j.config { default_timezone = 'Europe/Berlin' }\n"                                                      \
    "j.channel 'email' { type = 'webhook', url = 'http://x', window = { days = 'mon-fri', hours = '09-17', " \
    "tz = 'user' }, cap = { max = 2, per = '1d' } }\n"                                                       \
    "j.channel 'team' { type = 'slack', url = 'http://y' }\n"

static const char *const SCRIPT =
    CHANNELS "j.on('Ping', function(ctx) ctx:send('email', { n = ctx.event.properties.n }) end)\n"
             "j.on('Now', function(ctx) ctx:send('email', { n = 0 }, { window = false }) end)\n"
             "j.on('Free', function(ctx) ctx:send('email', { n = 0 }, { window = false, cap = false }) end)\n"
             "j.on('Night', function(ctx) ctx:send('team', { text = 'x' }, { window = { hours = '22-06', "
             "tz = 'UTC' }, cap = { max = 1, per = '1h' } }) end)\n"
             "j.on('Twice', function(ctx) ctx:send('email', { a = 1 }) ctx:send('email', { a = 2 }) "
             "ctx:send('email', { a = 3 }) end)\n";

static void load(tu_run *r, const char *lua)
{
    jd_options o = {.virtual_clock = 1, .decisions_per_user = 20};
    jd_error err;
    if (!tu_load_opts(r, lua, &o, &err))
        fail_msg("load: %s", err.text);
}

static void ping(tu_run *r, const char *user, const char *event, const char *t, const char *mid)
{
    tu_event(r, "{\"type\":\"track\",\"userId\":\"%s\",\"event\":\"%s\",\"timestamp\":\"%s\",\"messageId\":\"%s\"}",
             user, event, t, mid);
}

static void identify_tz(tu_run *r, const char *user, const char *tz, const char *t, const char *mid)
{
    tu_event(r,
             "{\"type\":\"identify\",\"userId\":\"%s\",\"traits\":{\"timezone\":\"%s\"},\"timestamp\":\"%s\","
             "\"messageId\":\"%s\"}",
             user, tz, t, mid);
}

static char *id_of(const char *json)
{
    const char *p = strstr(json, "\"id\":\"");
    assert_non_null(p);
    return strndup(p + 6, 32);
}

static void test_deferred_to_monday_same_id(void **state)
{
    (void)state;
    tu_run r;
    load(&r, SCRIPT);
    /* Saturday in Berlin (the default zone): Monday 09:00 CET */
    ping(&r, "u1", "Ping", "2026-02-28T10:00:00Z", "m1");
    EXPECT_NACTIONS(&r, 1);
    EXPECT_COUNT(&r, 1, "\"time\":\"2026-02-28T10:00:00.000Z\"", "\"deliver_at\":\"2026-03-02T08:00:00.000Z\"");
    char *deferred_id = id_of(r.actions[0]);
    assert_int_equal(jd_engine_stat(r.e, "deferred"), 1);
    assert_int_equal(jd_engine_stat(r.e, "actions"), 1);
    /* a person in New York: Monday 09:00 EST */
    identify_tz(&r, "u2", "America/New_York", "2026-02-28T10:00:00Z", "i2");
    ping(&r, "u2", "Ping", "2026-02-28T10:01:00Z", "m2");
    EXPECT_COUNT(&r, 1, "\"user\":\"u2\"", "\"deliver_at\":\"2026-03-02T14:00:00.000Z\"");
    /* inside the window: no deliver_at */
    ping(&r, "u3", "Ping", "2026-03-02T10:00:00Z", "m3");
    EXPECT_COUNT(&r, 1, "\"user\":\"u3\"");
    EXPECT_COUNT(&r, 0, "\"user\":\"u3\"", "deliver_at");
    char *u1 = jd_engine_user_json(r.e, "u1", 2);
    assert_non_null(strstr(u1, "\"kind\":\"deferred\""));
    assert_non_null(strstr(u1, "window mon-fri 09-17 Europe/Berlin: deferred to 2026-03-02T08:00:00.000Z"));
    free(u1);
    char *m = jd_engine_metrics(r.e);
    assert_non_null(strstr(m, "journeyd_actions_deferred_total{channel=\"email\"} 2\n"));
    assert_non_null(strstr(m, "journeyd_actions_deferred_total{channel=\"team\"} 0\n"));
    assert_non_null(strstr(m, "journeyd_actions_suppressed_total{channel=\"email\"} 0\n"));
    free(m);
    tu_free(&r);

    /* the same input without a window decides the same id */
    load(&r, "local j = require 'journey'\n"
             "j.channel 'email' { type = 'webhook', url = 'http://x' }\n"
             "j.on('Ping', function(ctx) ctx:send('email', { n = ctx.event.properties.n }) end)\n");
    ping(&r, "u1", "Ping", "2026-02-28T10:00:00Z", "m1");
    EXPECT_NACTIONS(&r, 1);
    EXPECT_COUNT(&r, 0, "deliver_at");
    char *plain_id = id_of(r.actions[0]);
    assert_string_equal(plain_id, deferred_id);
    free(plain_id);
    free(deferred_id);
    tu_free(&r);
}

static void test_cap_suppresses_then_allows(void **state)
{
    (void)state;
    tu_run r;
    load(&r, SCRIPT);
    ping(&r, "u1", "Ping", "2026-03-02T09:00:00Z", "m1");
    ping(&r, "u1", "Ping", "2026-03-02T10:00:00Z", "m2");
    ping(&r, "u1", "Ping", "2026-03-02T11:00:00Z", "m3"); /* the third within a day */
    EXPECT_NACTIONS(&r, 2);
    assert_int_equal(jd_engine_stat(r.e, "suppressed"), 1);
    assert_int_equal(jd_engine_stat(r.e, "actions"), 2);
    ping(&r, "u2", "Ping", "2026-03-02T11:00:00Z", "m4"); /* per person */
    EXPECT_NACTIONS(&r, 3);
    ping(&r, "u1", "Ping", "2026-03-03T08:59:00Z", "m5"); /* 10:00 yesterday still counts */
    EXPECT_NACTIONS(&r, 3);
    ping(&r, "u1", "Ping", "2026-03-03T09:00:00Z", "m6"); /* 09:00 yesterday has slid out */
    EXPECT_NACTIONS(&r, 4);
    EXPECT_COUNT(&r, 1, "\"user\":\"u1\"", "\"time\":\"2026-03-03T09:00:00.000Z\"");
    char *u1 = jd_engine_user_json(r.e, "u1", 2);
    assert_non_null(strstr(u1, "\"kind\":\"suppressed\""));
    assert_non_null(strstr(u1, "email: cap 2 per 1d reached"));
    free(u1);
    char *m = jd_engine_metrics(r.e);
    assert_non_null(strstr(m, "journeyd_actions_suppressed_total{channel=\"email\"} 2\n"));
    free(m);
    tu_free(&r);
}

static void test_cap_counts_sends_within_one_hook(void **state)
{
    (void)state;
    tu_run r;
    load(&r, SCRIPT);
    ping(&r, "u1", "Twice", "2026-03-02T10:00:00Z", "m1");
    EXPECT_NACTIONS(&r, 2);
    EXPECT_COUNT(&r, 1, "\"a\":1");
    EXPECT_COUNT(&r, 1, "\"a\":2");
    tu_free(&r);
}

/* Deferred sends count at the time they will arrive: two deferred to Monday fill
 * Monday's cap. */
static void test_cap_counts_deferred_sends(void **state)
{
    (void)state;
    tu_run r;
    load(&r, SCRIPT);
    ping(&r, "u1", "Ping", "2026-02-28T10:00:00Z", "m1");
    ping(&r, "u1", "Ping", "2026-02-28T11:00:00Z", "m2");
    EXPECT_COUNT(&r, 2, "\"deliver_at\":\"2026-03-02T08:00:00.000Z\"");
    ping(&r, "u1", "Ping", "2026-03-02T10:00:00Z", "m3");
    EXPECT_NACTIONS(&r, 2);
    assert_int_equal(jd_engine_stat(r.e, "suppressed"), 1);
    tu_free(&r);
}

static void test_per_send_options_override(void **state)
{
    (void)state;
    tu_run r;
    load(&r, SCRIPT);
    /* window = false: now, on Saturday; still under the channel's cap */
    ping(&r, "u1", "Now", "2026-02-28T10:00:00Z", "m1");
    ping(&r, "u1", "Now", "2026-02-28T10:01:00Z", "m2");
    ping(&r, "u1", "Now", "2026-02-28T10:02:00Z", "m3");
    EXPECT_NACTIONS(&r, 2);
    EXPECT_COUNT(&r, 0, "deliver_at");
    /* cap = false too: always */
    ping(&r, "u1", "Free", "2026-02-28T10:03:00Z", "m4");
    EXPECT_NACTIONS(&r, 3);
    /* a window and a cap on a channel that has neither */
    ping(&r, "u1", "Night", "2026-03-02T12:00:00Z", "m5");
    EXPECT_COUNT(&r, 1, "\"channel\":\"team\"", "\"deliver_at\":\"2026-03-02T22:00:00.000Z\"");
    ping(&r, "u1", "Night", "2026-03-02T12:30:00Z", "m6"); /* the same hour: capped */
    EXPECT_COUNT(&r, 1, "\"channel\":\"team\"");
    char *m = jd_engine_metrics(r.e);
    assert_non_null(strstr(m, "journeyd_actions_suppressed_total{channel=\"email\"} 1\n"));
    assert_non_null(strstr(m, "journeyd_actions_suppressed_total{channel=\"team\"} 1\n"));
    assert_non_null(strstr(m, "journeyd_actions_deferred_total{channel=\"team\"} 1\n"));
    free(m);
    tu_free(&r);
}

static void test_bad_user_timezone_falls_back(void **state)
{
    (void)state;
    tu_run r;
    load(&r, SCRIPT);
    identify_tz(&r, "u1", "Mars/Olympus", "2026-02-28T09:00:00Z", "i1");
    ping(&r, "u1", "Ping", "2026-02-28T10:00:00Z", "m1");
    ping(&r, "u1", "Ping", "2026-02-28T10:01:00Z", "m2");
    EXPECT_COUNT(&r, 2, "\"deliver_at\":\"2026-03-02T08:00:00.000Z\""); /* Berlin, the default */
    size_t warned = 0;
    for (size_t i = 0; i < r.nlogs; i++)
        warned += strstr(r.logs[i], "Mars/Olympus") != NULL;
    assert_int_equal(warned, 1); /* logged once */
    /* a zone set by a hook applies to that hook's sends */
    tu_free(&r);
    load(&r, CHANNELS "j.on('Go', function(ctx) ctx:set('timezone', 'Asia/Tokyo') ctx:send('email', {}) end)\n");
    ping(&r, "u1", "Go", "2026-02-28T10:00:00Z", "m1");
    EXPECT_COUNT(&r, 1, "\"deliver_at\":\"2026-03-02T00:00:00.000Z\"");
    tu_free(&r);
}

static void test_hook_with_bad_options_fails(void **state)
{
    (void)state;
    tu_run r;
    load(&r, CHANNELS "j.on('A', function(ctx) ctx:send('team', {}, { window = { hours = '9 to 5' } }) end)\n"
                      "j.on('B', function(ctx) ctx:send('team', {}, { window = { tz = 'Nowhere/Land' } }) end)\n"
                      "j.on('C', function(ctx) ctx:send('team', {}, { cap = { max = 0, per = '1d' } }) end)\n"
                      "j.on('D', function(ctx) ctx:send('team', {}, { when = 'later' }) end)\n");
    ping(&r, "u1", "A", "2026-03-02T10:00:00Z", "m1");
    ping(&r, "u1", "B", "2026-03-02T10:00:00Z", "m2");
    ping(&r, "u1", "C", "2026-03-02T10:00:00Z", "m3");
    ping(&r, "u1", "D", "2026-03-02T10:00:00Z", "m4");
    EXPECT_NACTIONS(&r, 0);
    assert_int_equal(jd_engine_stat(r.e, "lua_errors"), 4);
    const char *want[] = {"window hours '9 to 5'", "no such zone", "cap max", "unknown option 'when'"};
    for (size_t k = 0; k < 4; k++) {
        int found = 0;
        for (size_t i = 0; i < r.nlogs && !found; i++)
            found = strstr(r.logs[i], want[k]) != NULL;
        if (!found)
            fail_msg("no log line with '%s'", want[k]);
    }
    tu_free(&r);
}

static int line_of(const char *src, const char *mark)
{
    const char *p = strstr(src, mark);
    int line = 1;
    for (const char *q = src; q < p; q++)
        line += *q == '\n';
    return line;
}

static void test_load_errors(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"local j = require 'journey'\n"
         "j.channel 'email' { type = 'webhook', window = { days = 'weekdays' } } --@L\n",
         "window days 'weekdays'"},
        {"local j = require 'journey'\n"
         "j.channel 'email' { type = 'webhook', window = { hours = '9-5pm' } } --@L\n",
         "window hours"},
        {"local j = require 'journey'\n"
         "j.channel 'email' { type = 'webhook', window = { tz = 'Europe/Atlantis' } } --@L\n",
         "no such zone"},
        {"local j = require 'journey'\n"
         "j.channel 'email' { type = 'webhook', window = { day = 'mon' } } --@L\n",
         "unknown field 'day'"},
        {"local j = require 'journey'\n"
         "j.channel 'email' { type = 'webhook', cap = { max = 3 } } --@L\n",
         "cap needs max"},
        {"local j = require 'journey'\n"
         "j.channel 'email' { type = 'webhook', cap = { max = 3, per = 'often' } } --@L\n",
         "cap per"},
        {"local j = require 'journey'\n"
         "j.config { default_timezone = 'Moon/Base' } --@L\n",
         "default_timezone"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tu_run r;
        jd_error err;
        memset(&err, 0, sizeof err);
        if (tu_load(&r, cases[i][0], &err)) {
            tu_free(&r);
            fail_msg("case %zu loaded", i);
        }
        char want[320];
        snprintf(want, sizeof want, "%s:%d:", r.path, line_of(cases[i][0], "--@L"));
        int ok = strstr(err.text, want) == err.text && strstr(err.text, cases[i][1]);
        tu_free(&r);
        if (!ok)
            fail_msg("case %zu: expected '%s ...%s...', got '%s'", i, want, cases[i][1], err.text);
    }
}

/* ---------------------------------------------------------------- the store */

static void open_store(tu_run *r, const char *path)
{
    load(r, SCRIPT);
    tu_open_store(r, path, NULL);
}

static void test_state_survives_the_store(void **state)
{
    (void)state;
    const char *path = "caps";
    tu_run a;
    open_store(&a, path);
    ping(&a, "u1", "Ping", "2026-02-28T10:00:00Z", "m1"); /* deferred to Monday 08:00Z */
    ping(&a, "u1", "Ping", "2026-03-02T09:30:00Z", "m2");
    EXPECT_NACTIONS(&a, 2);
    char *deferred = id_of(a.actions[0]);
    tu_checkpoint(&a, 2);
    tu_free(&a);

    tu_run b;
    open_store(&b, path);
    ping(&b, "u1", "Ping", "2026-03-02T10:00:00Z", "m3"); /* the cap remembers both */
    EXPECT_NACTIONS(&b, 0);
    assert_int_equal(jd_engine_stat(b.e, "suppressed"), 1);
    char *u1 = jd_engine_user_json(b.e, "u1", 2);
    assert_non_null(strstr(u1, "deferred to 2026-03-02T08:00:00.000Z"));
    free(u1);
    ping(&b, "u1", "Ping", "2026-03-03T08:00:00.001Z", "m4"); /* Monday 08:00Z slid out */
    EXPECT_NACTIONS(&b, 1);
    tu_free(&b);

    /* the outbox row of the deferred action waits until deliver_at */
    char e2[256], full[256];
    snprintf(full, sizeof full, "%s/%s", tu_dir, path);
    jd_store *st = jd_store_open(full, 0, 1, e2, sizeof e2);
    assert_non_null(st);
    jd_buf rows, keep;
    jd_buf_init(&rows);
    jd_buf_init(&keep);
    long n = jd_outbox_list(st, NULL, &rows, &keep);
    assert_int_equal(n, 2);
    int seen = 0;
    for (long i = 0; i < n; i++) {
        const jd_outbox_row *row = &((jd_outbox_row *)rows.data)[i];
        if (strcmp(row->id, deferred) == 0) {
            assert_int_equal(row->next, ms_of("2026-03-02T08:00:00Z"));
            seen = 1;
        }
    }
    assert_true(seen);
    jd_buf_free(&rows);
    jd_buf_free(&keep);
    jd_store_close(st);
    free(deferred);
}

/* The send history stays bounded by what the caps need. */
static void test_history_is_bounded(void **state)
{
    (void)state;
    tu_run r;
    load(&r, CHANNELS "j.on('F', function(ctx) ctx:send('team', {}, { cap = { max = 5, per = '1h' } }) end)\n");
    char t[40], mid[32];
    for (int i = 0; i < 500; i++) {
        jd_time_format(ms_of("2026-03-02T10:00:00Z") + (int64_t)i * 60000, t);
        snprintf(mid, sizeof mid, "f%d", i);
        ping(&r, "u1", "F", t, mid);
    }
    EXPECT_NACTIONS(&r, 45); /* 5 at minutes 0-4, 60-64, ..., 480-484 */
    tu_free(&r);
}

/* What one conversion costs (printed, not asserted): a cached zone vs. TZ + tzset. */
static void test_cost(void **state)
{
    (void)state;
    jd_tz *b = jd_tz_load("Europe/Berlin"), *ny = jd_tz_load("America/New_York");
    jd_window w;
    parse_ok(&w, "mon-fri", "09-17", NULL);
    struct timespec t0, t1;
    volatile int64_t sink = 0;
    enum { N = 1000000 };
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < N; i++)
        sink += jd_tz_offset(i & 1 ? b : ny, 1770000000LL + i * 37);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double off_ns = ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / N;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < N; i++)
        sink += jd_window_next(&w, b, 1770000000000LL + (int64_t)i * 3700000);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double next_ns = ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / N;
    fprintf(stderr, "window: jd_tz_offset %.0f ns, jd_window_next %.0f ns\n", off_ns, next_ns);
    jd_tz_free(b);
    jd_tz_free(ny);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_zones_load),
        cmocka_unit_test(test_offsets_match_libc),
        cmocka_unit_test(test_next_days_and_hours),
        cmocka_unit_test(test_next_wrapping_midnight),
        cmocka_unit_test(test_next_across_dst),
        cmocka_unit_test(test_deferred_to_monday_same_id),
        cmocka_unit_test(test_cap_suppresses_then_allows),
        cmocka_unit_test(test_cap_counts_sends_within_one_hook),
        cmocka_unit_test(test_cap_counts_deferred_sends),
        cmocka_unit_test(test_per_send_options_override),
        cmocka_unit_test(test_bad_user_timezone_falls_back),
        cmocka_unit_test(test_hook_with_bad_options_fails),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_state_survives_the_store),
        cmocka_unit_test(test_history_is_bounded),
        cmocka_unit_test(test_cost),
    };
    return cmocka_run_group_tests_name("window", tests, tu_group_setup, tu_group_teardown);
}
