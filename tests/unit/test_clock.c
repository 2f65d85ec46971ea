/* test_clock: engine/clock.h — ISO 8601 parsing and formatting, durations, and the
 * virtual clock. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "clock.h"

#define T_2026_11_01_10 1793527200000LL /* 2026-11-01T10:00:00Z */
#define T_2026_11_01 1793491200000LL    /* 2026-11-01T00:00:00Z */
#define BAD INT64_MIN                   /* expected: rejected */

static const struct {
    const char *s;
    int64_t want;
} parse_cases[] = {
    {"1970-01-01T00:00:00Z", 0},
    {"2026-11-01T10:00:00Z", T_2026_11_01_10},
    {"2026-11-01T10:00:00z", T_2026_11_01_10},
    {"2026-11-01t10:00:00Z", T_2026_11_01_10},
    {"2026-11-01 10:00:00Z", T_2026_11_01_10},
    {"2026-11-01T10:00Z", T_2026_11_01_10}, /* seconds are optional */
    /* fractional seconds, 1 to 9 digits, kept to the millisecond (truncated) */
    {"2026-11-01T10:00:00.5Z", T_2026_11_01_10 + 500},
    {"2026-11-01T10:00:00.12Z", T_2026_11_01_10 + 120},
    {"2026-11-01T10:00:00.123Z", T_2026_11_01_10 + 123},
    {"2026-11-01T10:00:00.1239Z", T_2026_11_01_10 + 123},
    {"2026-11-01T10:00:00.12345Z", T_2026_11_01_10 + 123},
    {"2026-11-01T10:00:00.123456Z", T_2026_11_01_10 + 123},
    {"2026-11-01T10:00:00.1234567Z", T_2026_11_01_10 + 123},
    {"2026-11-01T10:00:00.12345678Z", T_2026_11_01_10 + 123},
    {"2026-11-01T10:00:00.123456789Z", T_2026_11_01_10 + 123},
    {"2026-11-01T10:00:00.999999999Z", T_2026_11_01_10 + 999},
    {"2026-11-01T10:00:00.0009Z", T_2026_11_01_10},
    {"2026-11-01T10:00:00,25Z", T_2026_11_01_10 + 250},
    {"2026-11-01T10:00:00.Z", BAD}, /* a point needs digits */
    /* offsets */
    {"2026-11-01T12:00:00+02:00", T_2026_11_01_10},
    {"2026-11-01T12:00:00+0200", T_2026_11_01_10},
    {"2026-11-01T04:30:00-05:30", T_2026_11_01_10},
    {"2026-11-01T04:30:00-0530", T_2026_11_01_10},
    {"2026-11-01T10:00:00+00:00", T_2026_11_01_10},
    {"2026-11-01T10:00:00-00:00", T_2026_11_01_10},
    {"2026-11-01T15:45:00.250+05:45", T_2026_11_01_10 + 250},
    {"2026-01-01T00:30:00+01:00", 1767223800000LL}, /* the previous day in UTC */
    {"2026-11-01T10:00:00+2:00", BAD},
    {"2026-11-01T10:00:00+02", BAD},
    {"2026-11-01T10:00:00+02:60", BAD},
    {"2026-11-01T10:00:00+24:00", BAD},
    {"2026-11-01T10:00:00+02:00:00", BAD},
    /* bare dates are midnight UTC */
    {"2026-11-01", T_2026_11_01},
    {"2024-02-29", 1709164800000LL}, /* leap year */
    {"2024-02-29T23:59:59Z", 1709251199000LL},
    {"2000-02-29", 951782400000LL}, /* divisible by 400 */
    {"2023-02-29", BAD},
    {"1900-02-29", BAD}, /* divisible by 100 */
    {"2026-04-31", BAD},
    {"2026-01-32", BAD},
    {"2026-01-00", BAD},
    {"2026-13-01", BAD},
    {"2026-00-10", BAD},
    {"2026-1-01", BAD},
    {"26-11-01", BAD},
    {"2026/11/01", BAD},
    /* times */
    {"2026-11-01T10:00:00", BAD}, /* no zone: ambiguous */
    {"2026-11-01T10:00", BAD},
    {"2026-11-01T", BAD},
    {"2026-11-01T24:00:00Z", BAD},
    {"2026-11-01T23:60:00Z", BAD},
    {"2026-11-01T23:59:61Z", BAD},
    {"2026-11-01T09:59:60Z", T_2026_11_01_10 - 1000}, /* a leap second is clamped */
    {"2026-11-01T1:00:00Z", BAD},
    /* trailing junk, leading junk */
    {"2026-11-01T10:00:00Zx", BAD},
    {"2026-11-01T10:00:00Z ", BAD},
    {"2026-11-01x", BAD},
    {" 2026-11-01", BAD},
    {"", BAD},
    {"now", BAD},
    /* far away */
    {"1969-12-31T23:59:59.999Z", -1},
    {"1969-12-31T23:59:59.9999Z", -1},
    {"1900-01-01T00:00:00Z", -2208988800000LL},
    {"0001-01-01T00:00:00Z", -62135596800000LL},
    {"9999-12-31T23:59:59.999Z", 253402300799999LL},
};

static void test_time_parse(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof parse_cases / sizeof parse_cases[0]; i++) {
        const char *s = parse_cases[i].s;
        int64_t ms = 12345;
        int rc = jd_time_parse(s, strlen(s), &ms);
        if (parse_cases[i].want == BAD) {
            if (rc != -1)
                fail_msg("\"%s\": accepted as %lld, want rejected", s, (long long)ms);
        } else if (rc != 0 || ms != parse_cases[i].want) {
            fail_msg("\"%s\": rc %d ms %lld, want %lld", s, rc, (long long)ms, (long long)parse_cases[i].want);
        }
    }
}

/* The length argument bounds the text: no NUL needed, and nothing read past it. */
static void test_time_parse_length(void **state)
{
    (void)state;
    const char *s = "2026-11-01T10:00:00Zjunk";
    int64_t ms;
    assert_int_equal(jd_time_parse(s, 20, &ms), 0);
    assert_int_equal(ms, T_2026_11_01_10);
    assert_int_equal(jd_time_parse(s, 10, &ms), 0); /* the date alone */
    assert_int_equal(ms, T_2026_11_01);
    assert_int_equal(jd_time_parse(s, 19, &ms), -1); /* cut before the zone */
    assert_int_equal(jd_time_parse(s, 9, &ms), -1);
    assert_int_equal(jd_time_parse(s, 0, &ms), -1);
    /* every prefix of a long valid timestamp, in an exact-size heap copy (ASan checks
     * that nothing past n is read) */
    const char *full = "2026-11-01T15:45:00.123456789+05:45";
    size_t n = strlen(full);
    for (size_t k = 0; k <= n; k++) {
        char *p = malloc(k ? k : 1);
        memcpy(p, full, k);
        int rc = jd_time_parse(p, k, &ms);
        int ok = k == 10 || k == n; /* the date alone, or all of it */
        if (ok ? rc != 0 : rc != -1)
            fail_msg("prefix %zu \"%.*s\": rc %d", k, (int)k, full, rc);
        free(p);
    }
}

static const struct {
    int64_t ms;
    const char *want;
} format_cases[] = {
    {0, "1970-01-01T00:00:00.000Z"},
    {1, "1970-01-01T00:00:00.001Z"},
    {999, "1970-01-01T00:00:00.999Z"},
    {1000, "1970-01-01T00:00:01.000Z"},
    {-1, "1969-12-31T23:59:59.999Z"},
    {-999, "1969-12-31T23:59:59.001Z"},
    {-1000, "1969-12-31T23:59:59.000Z"},
    {-1001, "1969-12-31T23:59:58.999Z"},
    {-86400000, "1969-12-31T00:00:00.000Z"},
    {-86400001, "1969-12-30T23:59:59.999Z"},
    {T_2026_11_01_10 + 123, "2026-11-01T10:00:00.123Z"},
    {1709251199000LL, "2024-02-29T23:59:59.000Z"},
    {1709251200000LL, "2024-03-01T00:00:00.000Z"},
    {951782400000LL, "2000-02-29T00:00:00.000Z"},
    {-2208988800000LL, "1900-01-01T00:00:00.000Z"},
    {-62135596800000LL, "0001-01-01T00:00:00.000Z"},
    {253402300799999LL, "9999-12-31T23:59:59.999Z"},
    {-62135596800001LL, "0000-12-31T23:59:59.999Z"},
};

/* Outside years 0-9999 the text is longer (and not parseable), but still exact. */
static void test_time_format_extremes(void **state)
{
    (void)state;
    static const struct {
        int64_t ms;
        const char *want;
    } cases[] = {
        {1000000000000000LL, "33658-09-27T01:46:40.000Z"},
        {INT64_MAX, "292278994-08-17T07:12:55.807Z"},
        {INT64_MIN, "-292275055-05-16T16:47:04.192Z"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[40];
        size_t n = jd_time_format(cases[i].ms, out);
        assert_string_equal(out, cases[i].want);
        assert_int_equal(n, strlen(cases[i].want));
    }
}

static void test_time_format(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof format_cases / sizeof format_cases[0]; i++) {
        char out[32];
        memset(out, 'x', sizeof out);
        size_t n = jd_time_format(format_cases[i].ms, out);
        assert_int_equal(n, 24);
        assert_int_equal(out[24], '\0');
        if (strcmp(out, format_cases[i].want) != 0)
            fail_msg("%lld formats as %s, want %s", (long long)format_cases[i].ms, out, format_cases[i].want);
        int64_t back;
        assert_int_equal(jd_time_parse(out, n, &back), 0);
        assert_int_equal(back, format_cases[i].ms);
    }
}

/* Parsing then formatting a valid case gives the same instant in canonical form, and
 * that form is a fixed point. */
static void test_time_canonical(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof parse_cases / sizeof parse_cases[0]; i++) {
        if (parse_cases[i].want == BAD)
            continue;
        int64_t ms, again;
        const char *s = parse_cases[i].s;
        assert_int_equal(jd_time_parse(s, strlen(s), &ms), 0);
        char out[32];
        size_t n = jd_time_format(ms, out);
        assert_int_equal(jd_time_parse(out, n, &again), 0);
        assert_int_equal(again, ms);
        char out2[32];
        jd_time_format(again, out2);
        assert_string_equal(out, out2);
    }
}

/* Random instants from year 1 to 9999: format agrees with gmtime_r, and parses back. */
static void test_time_roundtrip_random(void **state)
{
    (void)state;
    const int64_t lo = -62135596800000LL, hi = 253402300799999LL;
    uint64_t x = 88172645463325252ULL;
    for (int i = 0; i < 20000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        int64_t ms = lo + (int64_t)(x % (uint64_t)(hi - lo + 1));
        if (i % 3 == 0)
            ms = (int64_t)(x % 4000000000000ULL) - 2000000000000LL; /* around the epoch */
        char out[32];
        size_t n = jd_time_format(ms, out);
        assert_int_equal(n, 24);
        int64_t back;
        if (jd_time_parse(out, n, &back) != 0 || back != ms)
            fail_msg("%lld -> %s -> %lld", (long long)ms, out, (long long)back);
        /* an independent opinion on the calendar */
        int64_t secs = ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000);
        time_t t = (time_t)secs;
        struct tm tm;
        assert_non_null(gmtime_r(&t, &tm));
        char want[80];
        snprintf(want, sizeof want, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                 tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms - secs * 1000));
        assert_string_equal(out, want);
    }
}

static void test_duration(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        int64_t want; /* BAD: rejected */
    } cases[] = {
        {"90s", 90000},
        {"15m", 900000},
        {"2h", 7200000},
        {"3d", 259200000},
        {"1w", 604800000},
        {"1d12h", 129600000},
        {"500ms", 500},
        {"1ms", 1},
        {"1m30s", 90000},
        {"1h1m1s1ms", 3661001},
        {"2w3d", 1468800000},
        {"007s", 7000},
        {"0s1ms", 1},
        {"36500d", 3153600000000LL}, /* a century is the most */
        {"36501d", BAD},
        {"5215w", BAD},
        {"", BAD},
        {"2", BAD},
        {"d", BAD},
        {"ms", BAD},
        {"2x", BAD},
        {"2D", BAD},
        {"-1d", BAD},
        {"+1d", BAD},
        {"0s", BAD},
        {"0ms", BAD},
        {"0d0h", BAD},
        {"2 d", BAD},
        {" 2d", BAD},
        {"2d ", BAD},
        {"1.5h", BAD},
        {"1d2", BAD},
        {"1mss", BAD},
        {"99999999999w", BAD}, /* would overflow int64 */
        {"100000000000ms", 100000000000LL},
        {"3153600000001ms", BAD},
        {"99999999999999999999s", BAD}, /* more digits than int64 */
        {"36000d99999999999w", BAD},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int64_t ms = 777;
        int rc = jd_duration_parse(cases[i].s, strlen(cases[i].s), &ms);
        if (cases[i].want == BAD) {
            if (rc != -1)
                fail_msg("\"%s\": accepted as %lld, want rejected", cases[i].s, (long long)ms);
            assert_int_equal(ms, 777); /* untouched */
        } else if (rc != 0 || ms != cases[i].want) {
            fail_msg("\"%s\": rc %d ms %lld, want %lld", cases[i].s, rc, (long long)ms, (long long)cases[i].want);
        }
    }
    /* the length bounds the text */
    int64_t ms;
    assert_int_equal(jd_duration_parse("90sX", 3, &ms), 0);
    assert_int_equal(ms, 90000);
    assert_int_equal(jd_duration_parse("500ms", 4, &ms), 0); /* "500m" */
    assert_int_equal(ms, 500 * 60000);
    assert_int_equal(jd_duration_parse("90s", 2, &ms), -1);
}

static void test_virtual_clock(void **state)
{
    (void)state;
    jd_clock c;
    jd_clock_init_virtual(&c, 1000);
    assert_true(c.is_virtual);
    assert_int_equal(jd_clock_now(&c), 1000);
    static const struct {
        int64_t to, want;
    } steps[] = {
        {500, 1000},
        {1000, 1000},
        {1001, 1001},
        {T_2026_11_01_10, T_2026_11_01_10},
        {0, T_2026_11_01_10},
        {-5, T_2026_11_01_10},
        {INT64_MIN, T_2026_11_01_10},
        {T_2026_11_01_10 + 1, T_2026_11_01_10 + 1},
    };
    int64_t prev = jd_clock_now(&c);
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        jd_clock_advance(&c, steps[i].to);
        int64_t now = jd_clock_now(&c);
        assert_int_equal(now, steps[i].want);
        assert_true(now >= prev);
        prev = now;
    }
    /* random advances never move it backwards, and reach the maximum asked for */
    jd_clock_init_virtual(&c, -5000);
    assert_int_equal(jd_clock_now(&c), -5000);
    uint32_t x = 1;
    int64_t max = -5000;
    for (int i = 0; i < 10000; i++) {
        x = x * 1664525u + 1013904223u;
        int64_t t = (int64_t)(x % 2000000) - 1000000 + i * 100;
        jd_clock_advance(&c, t);
        if (t > max)
            max = t;
        assert_int_equal(jd_clock_now(&c), max);
    }
}

static void test_real_clock(void **state)
{
    (void)state;
    jd_clock c;
    jd_clock_init_real(&c);
    assert_false(c.is_virtual);
    int64_t now = jd_clock_now(&c);
    assert_true(now > 1500000000000LL); /* after 2017: it is a wall clock in ms */
    jd_clock_advance(&c, now + 86400000LL);
    assert_int_equal(c.now_ms, 0); /* advancing the real clock does nothing */
    int64_t a = jd_monotonic_ns(), b = jd_monotonic_ns();
    assert_true(b >= a);
    int64_t m1 = jd_monotonic_ms(), m2 = jd_monotonic_ms();
    assert_true(m2 >= m1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_time_parse),     cmocka_unit_test(test_time_parse_length),
        cmocka_unit_test(test_time_format),    cmocka_unit_test(test_time_format_extremes),
        cmocka_unit_test(test_time_canonical), cmocka_unit_test(test_time_roundtrip_random),
        cmocka_unit_test(test_duration),       cmocka_unit_test(test_virtual_clock),
        cmocka_unit_test(test_real_clock),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
