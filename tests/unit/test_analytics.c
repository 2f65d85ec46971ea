/* Journey analytics through the engine: the windowed counters under transitions,
 * timeouts, exits, goals, re-entry and entry hooks on the virtual clock; windows rolling
 * over; an alert that fires once as a real action on its channel, stays quiet and
 * recovers; analytics across a reload and a store round trip, with the same alert ids
 * when the log is processed again after a crash. */
#define _GNU_SOURCE /* strndup, mkstemps (testutil.h) */
#include "testutil.h"

#include <math.h>

#include "engine_internal.h"
#include "stats.h"

static const char *const FLOW =
    HDR "j.journey \"jr\" {\n"
        "  entry = j.on(\"Start\"), goal = j.on(\"Paid\"), exit = j.on(\"Quit\"), reentry = \"always\",\n"
        "  j.stage \"a\" { j.on(\"Next\"):go \"b\", j.after(\"1h\", function(ctx) end):go \"c\" },\n"
        "  j.stage \"b\" { j.on(\"Back\"):go \"a\" },\n"
        "  j.stage \"c\" { },\n"
        "}\n"
        "j.journey \"jg\" {\n"
        "  entry = j.on(\"Begin\", function(ctx) ctx:go \"y\" end),\n"
        "  j.stage \"x\" { },\n"
        "  j.stage \"y\" { enter = function(ctx) if ctx.event.properties.hop then ctx:go \"z\" end end },\n"
        "  j.stage \"z\" { },\n"
        "}\n";

static const char *const ALERT =
    HDR "j.journey \"al\" {\n"
        "  entry = j.on(\"Start\"), exit = j.on(\"Quit\"), reentry = \"always\",\n"
        "  alert = { stage = \"a\", dropoff_above = 0.5, window = \"1h\", min_sample = 4, channel = \"team\" },\n"
        "  j.stage \"a\" { j.on(\"Next\"):go \"b\" },\n"
        "  j.stage \"b\" { },\n"
        "}\n";

#define MIN_MS 60000.0

static jd_stage_figures sfig(const tu_run *r, int j, int k, jd_stats_window w)
{
    jd_stage_figures f;
    jd_stats_query_stage(jd_engine_stats(r->e), j, k, w, jd_engine_now(r->e), &f);
    return f;
}

static jd_journey_figures jfig(const tu_run *r, int j, jd_stats_window w)
{
    jd_journey_figures f;
    jd_stats_query(jd_engine_stats(r->e), j, w, jd_engine_now(r->e), &f);
    return f;
}

/* within the histogram's 1.96% */
static void assert_near(double got, double want)
{
    if (fabs(got - want) > want * 0.0197)
        fail_msg("expected about %.0f, got %.0f", want, got);
}

static void ev(tu_run *r, const char *user, const char *event, const char *hhmm, const char *props)
{
    char t[40];
    snprintf(t, sizeof t, "2026-11-01T%s:00Z", hhmm);
    tu_track(r, user, event, t, props);
}

/* The FLOW scenario up to 01:10 (see test_counts_through_the_engine). */
static void flow(tu_run *r)
{
    tu_start(r, FLOW);
    ev(r, "u1", "Start", "00:00", NULL);
    ev(r, "u2", "Start", "00:00", NULL);
    ev(r, "u4", "Begin", "00:00", NULL);
    ev(r, "u5", "Begin", "00:00", "{\"hop\":true}");
    ev(r, "u3", "Start", "00:05", NULL);
    ev(r, "u1", "Next", "00:10", NULL);
    ev(r, "u3", "Quit", "00:15", NULL);
    ev(r, "u3", "Start", "00:20", NULL); /* re-entry */
    ev(r, "u3", "Next", "00:25", NULL);
    ev(r, "u3", "Back", "00:26", NULL);
    ev(r, "u1", "Paid", "00:30", NULL);
    ev(r, "u2", "Quit", "01:05", NULL); /* its 1h timer took it to c at 01:00 */
    tu_advance(r, "2026-11-01T01:10:00Z");
}

static void test_counts_through_the_engine(void **state)
{
    (void)state;
    tu_run r;
    flow(&r);
    /* a: u1, u2, u3, u3 again, u3 back; left by u1 and u3 (moved), u2 (timed out), u3 (quit) */
    jd_stage_figures a = sfig(&r, 0, 0, JD_WIN_ALL);
    assert_int_equal(a.entered, 5);
    assert_int_equal(a.moved_on, 2);
    assert_int_equal(a.timed_out, 1);
    assert_int_equal(a.exited, 1);
    assert_int_equal(a.converted, 0);
    assert_int_equal(a.now, 1);
    assert_true(fabs(a.dropoff - 0.5) < 1e-9 && fabs(a.conversion - 0.5) < 1e-9);
    assert_int_equal(a.in_stage.n, 4); /* 10m, 60m, 10m, 5m: median (rank 2) 10m, p90 60m */
    assert_near(a.in_stage.median_ms, 10 * MIN_MS);
    assert_near(a.in_stage.p90_ms, 60 * MIN_MS);
    jd_stage_figures b = sfig(&r, 0, 1, JD_WIN_ALL);
    assert_int_equal(b.entered, 2);
    assert_int_equal(b.moved_on, 1);
    assert_int_equal(b.converted, 1);
    assert_int_equal(b.now, 0);
    assert_int_equal(b.in_stage.n, 2); /* 1m (u3 back), 20m (u1 paid) */
    assert_near(b.in_stage.median_ms, 1 * MIN_MS);
    jd_stage_figures c = sfig(&r, 0, 2, JD_WIN_ALL);
    assert_int_equal(c.entered, 1);
    assert_int_equal(c.exited, 1);
    assert_int_equal(c.now, 0);
    assert_near(c.in_stage.median_ms, 5 * MIN_MS);
    assert_int_equal(jd_stats_moved_to(jd_engine_stats(r.e), 0, 0, 1), 2);
    assert_int_equal(jd_stats_moved_to(jd_engine_stats(r.e), 0, 0, 2), 1);
    assert_int_equal(jd_stats_moved_to(jd_engine_stats(r.e), 0, 1, 0), 1);
    jd_journey_figures jf = jfig(&r, 0, JD_WIN_ALL);
    assert_int_equal(jf.entered, 4);
    assert_int_equal(jf.converted, 1);
    assert_int_equal(jf.exited, 2);
    assert_int_equal(jf.active, 1);
    assert_int_equal(jf.to_convert.n, 1);
    assert_near(jf.to_convert.median_ms, 30 * MIN_MS);
    /* the entry hook's ctx:go: counted at y only, once; y's enter hook moves u5 on to z */
    jd_stage_figures x = sfig(&r, 1, 0, JD_WIN_ALL), y = sfig(&r, 1, 1, JD_WIN_ALL), z = sfig(&r, 1, 2, JD_WIN_ALL);
    assert_int_equal(x.entered, 0);
    assert_int_equal(y.entered, 2);
    assert_int_equal(y.moved_on, 1);
    assert_int_equal(y.now, 1);
    assert_int_equal(z.entered, 1);
    assert_int_equal(z.now, 1);
    assert_true(y.in_stage.n == 1 && y.in_stage.median_ms == 0); /* moved on at once: 0 ms */
    assert_int_equal(jfig(&r, 1, JD_WIN_ALL).entered, 2);
    assert_int_equal(jfig(&r, 1, JD_WIN_ALL).active, 2);
    /* the funnel endpoint answers from the same analytics */
    char *js = jd_engine_funnel_json(r.e, "jr", 2, "all");
    assert_non_null(js);
    assert_non_null(strstr(js, "\"source\":\"stats\""));
    assert_non_null(strstr(js, "\"moved_to_all_time\":{\"b\":2,\"c\":1}"));
    free(js);
    tu_free(&r);
}

static void test_windows_roll_over(void **state)
{
    (void)state;
    tu_run r;
    flow(&r);
    /* 01:10: the last hour is from 00:11 on: u3's quit, re-entry and moves, u2's timeout
     * and quit, u1's goal (not the starts at 00:00 and 00:05, nor u1's move at 00:10) */
    jd_stage_figures a = sfig(&r, 0, 0, JD_WIN_1H);
    assert_int_equal(a.entered, 2);
    assert_int_equal(a.moved_on, 1);
    assert_int_equal(a.timed_out, 1);
    assert_int_equal(a.exited, 1);
    jd_journey_figures jf = jfig(&r, 0, JD_WIN_1H);
    assert_int_equal(jf.entered, 1);
    assert_int_equal(jf.converted, 1);
    assert_int_equal(jf.exited, 2);
    assert_int_equal(jfig(&r, 0, JD_WIN_24H).entered, 4);
    /* a day later: u3's second timer (01:26) took it to c; only 7d and all see anything */
    tu_advance(&r, "2026-11-02T02:00:00Z");
    assert_int_equal(jfig(&r, 0, JD_WIN_1H).entered, 0);
    assert_int_equal(jfig(&r, 0, JD_WIN_24H).entered, 0);
    assert_int_equal(sfig(&r, 0, 0, JD_WIN_24H).left, 0);
    assert_int_equal(jfig(&r, 0, JD_WIN_7D).entered, 4);
    a = sfig(&r, 0, 0, JD_WIN_7D);
    assert_int_equal(a.timed_out, 2);
    assert_int_equal(a.now, 0);
    assert_int_equal(sfig(&r, 0, 2, JD_WIN_ALL).now, 1);
    assert_int_equal(jfig(&r, 0, JD_WIN_ALL).active, 1);
    tu_advance(&r, "2026-11-09T03:00:00Z");
    assert_int_equal(jfig(&r, 0, JD_WIN_7D).entered, 0);
    assert_int_equal(jfig(&r, 0, JD_WIN_ALL).entered, 4);
    tu_free(&r);
}

/* Four drop out at 00:01 (fires), one more at 00:02 (quiet: already firing), four move
 * on at 00:50 (5 of 9: still above), and at 01:03 the exits have left the 1h window (0 of
 * 4: recovers). Returns the two alert action ids. */
static void alert_scenario(tu_run *r, char fired[33], char recovered[33])
{
    tu_start(r, ALERT);
    char u[16];
    for (int i = 1; i <= 4; i++) {
        snprintf(u, sizeof u, "u%d", i);
        ev(r, u, "Start", "00:00", NULL);
    }
    for (int i = 1; i <= 4; i++) {
        snprintf(u, sizeof u, "u%d", i);
        ev(r, u, "Quit", "00:01", NULL);
        EXPECT_NACTIONS(r, i == 4 ? 1 : 0);
    }
    EXPECT_ACTION(r, 0, "\"channel\":\"team\"", "\"alert\":\"fired\"", "\"journey\":\"al\"", "\"stage\":\"a\"",
                  "\"user\":\"\"", "\"text\":\"al/a: drop-off 100.0% above 50% over 1h (4 people)\"",
                  "\"threshold\":0.5", "\"window\":\"1h\"", "\"sample\":4");
    ev(r, "u5", "Start", "00:02", NULL);
    ev(r, "u5", "Quit", "00:02", NULL);
    for (int i = 6; i <= 9; i++) {
        snprintf(u, sizeof u, "u%d", i);
        ev(r, u, "Start", "00:40", NULL);
        ev(r, u, "Next", "00:50", NULL);
    }
    tu_advance(r, "2026-11-01T01:00:30Z");
    EXPECT_NACTIONS(r, 1); /* 5 of 9 in the window of 00:01-01:00 */
    tu_advance(r, "2026-11-01T01:03:00Z");
    EXPECT_NACTIONS(r, 2);
    EXPECT_ACTION(r, 1, "\"channel\":\"team\"", "\"alert\":\"recovered\"", "\"value\":0", "(recovered)");
    const char *p = strstr(r->actions[0], "\"id\":\"");
    assert_non_null(p);
    snprintf(fired, 33, "%.32s", p + 6);
    p = strstr(r->actions[1], "\"id\":\"");
    assert_non_null(p);
    snprintf(recovered, 33, "%.32s", p + 6);
}

static void test_alert_fires_once_and_recovers(void **state)
{
    (void)state;
    tu_run r;
    char f1[33], r1[33];
    alert_scenario(&r, f1, r1);
    assert_string_not_equal(f1, r1);
    EXPECT_LOGS(&r, 1, "warn: alert fired: al/a: drop-off");
    EXPECT_LOGS(&r, 1, "info: alert recovered: al/a");
    /* an empty window says nothing: the state stays, no action */
    tu_advance(&r, "2026-11-01T05:00:00Z");
    EXPECT_NACTIONS(&r, 2);
    char *m = jd_engine_metrics(r.e);
    assert_non_null(strstr(m, "journeyd_alerts_total{journey=\"al\",stage=\"a\",edge=\"fired\"} 1\n"));
    assert_non_null(strstr(m, "journeyd_alerts_total{journey=\"al\",stage=\"a\",edge=\"recovered\"} 1\n"));
    assert_non_null(strstr(m, "journeyd_actions_total{channel=\"team\"} 2\n"));
    free(m);
    char *js = jd_engine_funnel_json(r.e, "al", 2, "1h");
    assert_non_null(strstr(js, "\"state\":\"ok\""));
    free(js);
    /* it can fire again: three quit at 05:10, one moves on */
    char u[16];
    for (int i = 10; i <= 13; i++) {
        snprintf(u, sizeof u, "u%d", i);
        ev(&r, u, "Start", "05:05", NULL);
        ev(&r, u, i == 13 ? "Next" : "Quit", "05:10", NULL);
    }
    EXPECT_NACTIONS(&r, 3);
    EXPECT_ACTION(&r, 2, "\"alert\":\"fired\"", "drop-off 75.0% above 50%");
    tu_free(&r);
    /* the same inputs decide the same ids (messageIds differ: ids do not depend on them) */
    char f2[33], r2[33];
    alert_scenario(&r, f2, r2);
    assert_string_equal(f1, f2);
    assert_string_equal(r1, r2);
    tu_free(&r);
}

/* The channel's cap holds alert actions like any send: the recovery is suppressed. */
static void test_alert_capped_by_channel(void **state)
{
    (void)state;
    tu_run r;
    char lua[2048];
    snprintf(lua, sizeof lua, "%s", ALERT);
    char *p = strstr(lua, "j.channel \"team\" { type = \"slack\", url = \"http://127.0.0.1:9/team\"");
    assert_non_null(p);
    p += strlen("j.channel \"team\" { type = \"slack\", url = \"http://127.0.0.1:9/team\"");
    char rest[2048];
    snprintf(rest, sizeof rest, "%s", p);
    snprintf(p, sizeof lua - (size_t)(p - lua), ", cap = { max = 1, per = \"1d\" }%s", rest);
    tu_start(&r, lua);
    char u[16];
    for (int i = 1; i <= 4; i++) {
        snprintf(u, sizeof u, "u%d", i);
        ev(&r, u, "Start", "00:00", NULL);
        ev(&r, u, "Quit", "00:01", NULL);
    }
    for (int i = 5; i <= 8; i++) {
        snprintf(u, sizeof u, "u%d", i);
        ev(&r, u, "Start", "00:30", NULL);
        ev(&r, u, "Next", "00:40", NULL);
    }
    tu_advance(&r, "2026-11-01T01:05:00Z");
    EXPECT_NACTIONS(&r, 1);
    EXPECT_ACTION(&r, 0, "\"alert\":\"fired\"");
    EXPECT_LOGS(&r, 1, "alert recovered");
    EXPECT_STAT(&r, "suppressed", 1);
    tu_free(&r);
}

static void test_reload_keeps_analytics(void **state)
{
    (void)state;
    tu_run r;
    flow(&r);
    char *before = jd_engine_funnel_json(r.e, "jr", 2, "24h");
    jd_error err;
    assert_int_equal(jd_engine_reload(r.e, r.path, &err), 0);
    char *after = jd_engine_funnel_json(r.e, "jr", 2, "24h");
    assert_string_equal(before, after);
    free(before);
    free(after);
    tu_free(&r);
    /* an alert that is firing stays firing across a reload (same spec): no second "fired" */
    tu_start(&r, ALERT);
    char u[16];
    for (int i = 1; i <= 4; i++) {
        snprintf(u, sizeof u, "u%d", i);
        ev(&r, u, "Start", "00:00", NULL);
        ev(&r, u, "Quit", "00:01", NULL);
    }
    EXPECT_NACTIONS(&r, 1);
    assert_int_equal(jd_engine_reload(r.e, r.path, &err), 0);
    ev(&r, "u5", "Start", "00:02", NULL);
    ev(&r, "u5", "Quit", "00:03", NULL);
    tu_advance(&r, "2026-11-01T00:10:00Z");
    EXPECT_NACTIONS(&r, 1);
    assert_int_equal(jd_stats_alert_state(jd_engine_stats(r.e), 0, 0, NULL, NULL), 1);
    tu_free(&r);
}

/* ---------------------------------------------------------------- store */

static void open_store(tu_run *r, const char *lua, const char *path)
{
    jd_options o = {.virtual_clock = 1, .dedupe_ttl_ms = 86400000};
    jd_error err;
    if (!tu_load_opts(r, lua, &o, &err))
        fail_msg("load: %s", err.text);
    tu_open_store(r, path, NULL);
}

static void sev(tu_run *r, const char *user, const char *event, const char *hhmm, const char *id)
{
    tu_event(r,
             "{\"type\":\"track\",\"userId\":\"%s\",\"event\":\"%s\",\"timestamp\":\"2026-11-01T%s:00Z\","
             "\"messageId\":\"%s\"}",
             user, event, hhmm, id);
}

static void test_store_round_trip(void **state)
{
    (void)state;
    const char *path = "flow";
    tu_run a;
    open_store(&a, FLOW, path);
    sev(&a, "u1", "Start", "00:00", "m1");
    sev(&a, "u2", "Start", "00:00", "m2");
    sev(&a, "u1", "Next", "00:10", "m3");
    sev(&a, "u1", "Paid", "00:30", "m4");
    sev(&a, "u2", "Quit", "00:40", "m5");
    tu_checkpoint(&a, 5);
    char *w1 = jd_engine_funnel_json(a.e, "jr", 2, "1h"), *all1 = jd_engine_funnel_json(a.e, "jr", 2, "all");
    tu_free(&a);

    tu_run b;
    open_store(&b, FLOW, path);
    char *w2 = jd_engine_funnel_json(b.e, "jr", 2, "1h"), *all2 = jd_engine_funnel_json(b.e, "jr", 2, "all");
    assert_string_equal(w1, w2);
    assert_string_equal(all1, all2);
    assert_non_null(strstr(all2, "\"converted\":1"));
    tu_free(&b);
    free(w1);
    free(w2);
    free(all1);
    free(all2);
}

/* The alert fired after the checkpoint, then a crash: processing the same records again
 * decides the same id, and the firing state comes back from the next checkpoint. */
static void test_alert_after_crash(void **state)
{
    (void)state;
    const char *path = "alert";
    static const char *const users[] = {"u1", "u2", "u3", "u4"};
    static const char *const starts[] = {"s1", "s2", "s3", "s4"}, *const quits[] = {"q1", "q2", "q3", "q4"};
    tu_run a;
    open_store(&a, ALERT, path);
    for (int i = 0; i < 4; i++)
        sev(&a, users[i], "Start", "00:00", starts[i]);
    tu_checkpoint(&a, 4);
    for (int i = 0; i < 4; i++)
        sev(&a, users[i], "Quit", "00:01", quits[i]);
    EXPECT_NACTIONS(&a, 1);
    char *first = strdup(a.actions[0]);
    tu_free(&a); /* crash: no checkpoint */

    tu_run b;
    open_store(&b, ALERT, path);
    for (int i = 0; i < 4; i++)
        sev(&b, users[i], "Quit", "00:01", quits[i]);
    EXPECT_NACTIONS(&b, 1);
    assert_string_equal(first, b.actions[0]);
    free(first);
    tu_checkpoint(&b, 8);
    tu_free(&b);

    tu_run c;
    open_store(&c, ALERT, path);
    char *js = jd_engine_funnel_json(c.e, "al", 2, "1h");
    assert_non_null(strstr(js, "\"state\":\"firing\""));
    free(js);
    sev(&c, "u5", "Start", "00:02", "s5");
    sev(&c, "u5", "Quit", "00:02", "q5");
    EXPECT_NACTIONS(&c, 0); /* still firing: no repeat */
    tu_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counts_through_the_engine),
        cmocka_unit_test(test_windows_roll_over),
        cmocka_unit_test(test_alert_fires_once_and_recovers),
        cmocka_unit_test(test_alert_capped_by_channel),
        cmocka_unit_test(test_reload_keeps_analytics),
        cmocka_unit_test(test_store_round_trip),
        cmocka_unit_test(test_alert_after_crash),
    };
    return cmocka_run_group_tests(tests, tu_group_setup, tu_group_teardown);
}
