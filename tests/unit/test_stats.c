/* Unit tests of stats: windowed funnel counters, quantiles, save/load and carry-over,
 * and alerts with hysteresis; plus the parsing of `alert` entries in scripts. */
#define _GNU_SOURCE /* strndup, mkstemps (testutil.h) */
#include "testutil.h"

#include <math.h>

#include "stats.h"

#define MIN_MS 60000LL
#define HOUR_MS 3600000LL
#define DAY_MS 86400000LL
/* 2026-11-01T00:00:00Z */
#define T0 1793491200000LL

static const char *const stages3[] = {"a", "b", "c"};

static jd_stats *three_stages(int *j)
{
    jd_stats *s = jd_stats_new();
    *j = jd_stats_journey(s, "jr", 3, stages3);
    assert_int_equal(*j, 0);
    return s;
}

static jd_stage_figures stage(const jd_stats *s, int j, int k, jd_stats_window w, int64_t now)
{
    jd_stage_figures f;
    jd_stats_query_stage(s, j, k, w, now, &f);
    return f;
}

static jd_journey_figures whole(const jd_stats *s, int j, jd_stats_window w, int64_t now)
{
    jd_journey_figures f;
    jd_stats_query(s, j, w, now, &f);
    return f;
}

static void test_counts_follow_transitions(void **state)
{
    (void)state;
    int j;
    jd_stats *s = three_stages(&j);
    for (int i = 0; i < 4; i++)
        jd_stats_entered(s, j, 0, T0 + i * 1000);
    jd_stats_moved(s, j, 0, 1, T0 + 10000, 9000);     /* a -> b by an event */
    jd_stats_timed_out(s, j, 0, 2, T0 + 20000, 5000); /* a -> c by a j.after */
    jd_stats_exited(s, j, 0, T0 + 30000, 100);        /* left from a */
    jd_stats_converted(s, j, 1, T0 + 40000, 30000, 39000);

    for (int w = 0; w < JD_NWINDOWS; w++) {
        jd_stage_figures a = stage(s, j, 0, (jd_stats_window)w, T0 + 60000);
        assert_int_equal(a.entered, 4);
        assert_int_equal(a.now, 1);
        assert_int_equal(a.moved_on, 1);
        assert_int_equal(a.timed_out, 1);
        assert_int_equal(a.exited, 1);
        assert_int_equal(a.converted, 0);
        assert_int_equal(a.left, 3);
        assert_true(fabs(a.dropoff - 2.0 / 3) < 1e-9);
        assert_int_equal(a.in_stage.n, 3);
        jd_stage_figures b = stage(s, j, 1, (jd_stats_window)w, T0 + 60000);
        assert_int_equal(b.entered, 1);
        assert_int_equal(b.now, 0);
        assert_int_equal(b.converted, 1);
        assert_true(b.dropoff == 0 && b.conversion == 1);
        jd_stage_figures c = stage(s, j, 2, (jd_stats_window)w, T0 + 60000);
        assert_int_equal(c.entered, 1);
        assert_int_equal(c.now, 1);
        assert_true(c.dropoff < 0); /* nobody left c: no figure */
        jd_journey_figures jf = whole(s, j, (jd_stats_window)w, T0 + 60000);
        assert_int_equal(jf.entered, 4);
        assert_int_equal(jf.active, 2);
        assert_int_equal(jf.converted, 1);
        assert_int_equal(jf.exited, 1);
        assert_true(fabs(jf.conversion - 0.25) < 1e-9);
        assert_int_equal(jf.to_convert.n, 1);
        assert_true(fabs(jf.to_convert.median_ms - 39000) <= 39000 * 0.0197);
    }
    assert_int_equal(jd_stats_moved_to(s, j, 0, 1), 1);
    assert_int_equal(jd_stats_moved_to(s, j, 0, 2), 1);
    assert_int_equal(jd_stats_moved_to(s, j, 1, 2), 0);
    /* out-of-range indexes are ignored, not crashes */
    jd_stats_entered(s, 5, 0, T0);
    jd_stats_moved(s, j, 0, 9, T0, 0);
    jd_stats_exited(s, j, -1, T0, 0);
    assert_int_equal(stage(s, j, 0, JD_WIN_ALL, T0).entered, 4);
    jd_stats_free(s);
}

static void test_reentry_counts_again(void **state)
{
    (void)state;
    int j;
    jd_stats *s = three_stages(&j);
    jd_stats_entered(s, j, 0, T0);
    jd_stats_converted(s, j, 0, T0 + 1000, 1000, 1000);
    jd_stats_entered(s, j, 0, T0 + 2000); /* the same person again (reentry = "always") */
    jd_stats_moved(s, j, 0, 1, T0 + 3000, 1000);
    jd_stats_moved(s, j, 1, 0, T0 + 4000, 1000); /* back to a */
    jd_stage_figures a = stage(s, j, 0, JD_WIN_1H, T0 + 5000);
    assert_int_equal(a.entered, 3);
    assert_int_equal(a.now, 1);
    assert_int_equal(a.converted, 1);
    assert_int_equal(a.moved_on, 1);
    jd_journey_figures jf = whole(s, j, JD_WIN_1H, T0 + 5000);
    assert_int_equal(jf.entered, 2);
    assert_int_equal(jf.active, 1);
    assert_int_equal(jf.converted, 1);
    /* the first stage has no previous one; the funnel shows b's conversion from a */
    char *json = jd_stats_funnel_json(s, j, "1h", T0 + 5000);
    assert_non_null(json);
    assert_non_null(strstr(json, "\"conversion_from_previous\":null"));
    assert_non_null(strstr(json, "\"name\":\"b\",\"entered\":1"));
    free(json);
    jd_stats_free(s);
}

static void test_windows_roll_over(void **state)
{
    (void)state;
    int j;
    jd_stats *s = three_stages(&j);
    jd_stats_entered(s, j, 0, T0);
    jd_stats_timed_out(s, j, 0, 1, T0 + 5 * MIN_MS, 5 * MIN_MS);
    /* 30 minutes later: in every window */
    int64_t t = T0 + 30 * MIN_MS;
    assert_int_equal(stage(s, j, 0, JD_WIN_1H, t).entered, 1);
    assert_int_equal(stage(s, j, 0, JD_WIN_1H, t).timed_out, 1);
    /* 61 minutes after entry: the entry left the 1h window, the timeout (at +5m) not yet */
    t = T0 + 61 * MIN_MS;
    assert_int_equal(stage(s, j, 0, JD_WIN_1H, t).entered, 0);
    assert_int_equal(stage(s, j, 0, JD_WIN_1H, t).timed_out, 1);
    assert_int_equal(stage(s, j, 0, JD_WIN_24H, t).entered, 1);
    /* 66 minutes: both gone from 1h */
    t = T0 + 66 * MIN_MS;
    assert_int_equal(stage(s, j, 0, JD_WIN_1H, t).timed_out, 0);
    assert_int_equal(stage(s, j, 0, JD_WIN_1H, t).in_stage.n, 0);
    /* 25 hours: out of 24h, in 7d */
    t = T0 + 25 * HOUR_MS;
    assert_int_equal(stage(s, j, 0, JD_WIN_24H, t).entered, 0);
    assert_int_equal(stage(s, j, 0, JD_WIN_7D, t).entered, 1);
    assert_int_equal(stage(s, j, 0, JD_WIN_7D, t).in_stage.n, 1);
    /* 8 days: only all time */
    t = T0 + 8 * DAY_MS;
    assert_int_equal(stage(s, j, 0, JD_WIN_7D, t).entered, 0);
    assert_int_equal(stage(s, j, 0, JD_WIN_ALL, t).entered, 1);
    assert_int_equal(stage(s, j, 0, JD_WIN_ALL, t).in_stage.n, 1);
    /* "now" is a gauge, the same in every window */
    assert_int_equal(stage(s, j, 1, JD_WIN_1H, t).now, 1);

    /* a week later new events recycle the buckets (same slots: 168 hours later) */
    jd_stats_entered(s, j, 0, T0 + 7 * DAY_MS);
    jd_stats_timed_out(s, j, 0, 1, T0 + 7 * DAY_MS + 5 * MIN_MS, 7 * MIN_MS);
    t = T0 + 7 * DAY_MS + 10 * MIN_MS;
    assert_int_equal(stage(s, j, 0, JD_WIN_7D, t).entered, 1);
    assert_int_equal(stage(s, j, 0, JD_WIN_7D, t).in_stage.n, 1);
    assert_int_equal(stage(s, j, 0, JD_WIN_1H, t).entered, 1);
    assert_int_equal(stage(s, j, 0, JD_WIN_ALL, t).entered, 2);
    /* a late event older than the ring reaches counts for all time only */
    jd_stats_entered(s, j, 0, T0 + 10 * MIN_MS);
    assert_int_equal(stage(s, j, 0, JD_WIN_7D, t).entered, 1);
    assert_int_equal(stage(s, j, 0, JD_WIN_ALL, t).entered, 3);
    /* a late event within the window lands in its own bucket */
    jd_stats_entered(s, j, 0, T0 + 7 * DAY_MS - 2 * HOUR_MS);
    assert_int_equal(stage(s, j, 0, JD_WIN_24H, t).entered, 2);
    assert_int_equal(stage(s, j, 0, JD_WIN_1H, t).entered, 1);
    jd_stats_free(s);
}

/* exact nearest-rank quantile of sorted v */
static double exact(const int64_t *v, size_t n, double q)
{
    size_t r = (size_t)ceil(q * (double)n);
    return (double)v[(r ? r : 1) - 1];
}

static int cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static void test_quantiles_within_error(void **state)
{
    (void)state;
    enum { N = 5000 };
    static int64_t v[N];
    for (int round = 0; round < 4; round++) {
        int j;
        jd_stats *s = three_stages(&j);
        uint64_t x = 88172645463325252ULL + (uint64_t)round;
        size_t n = round == 0 ? 1 : round == 1 ? 7 : N;
        for (size_t i = 0; i < n; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            /* log-uniform between 10 ms and 10 days (round 3: a tight cluster) */
            double u = (double)(x % 1000000) / 1e6;
            v[i] = round == 3 ? 2 * DAY_MS + (int64_t)(u * 1000) : (int64_t)exp(log(10.0) + u * log(86400000.0));
            jd_stats_entered(s, j, 0, T0);
            jd_stats_moved(s, j, 0, 1, T0 + (int64_t)i, v[i]);
        }
        qsort(v, n, sizeof *v, cmp64);
        for (int w = 0; w < JD_NWINDOWS; w++) {
            jd_stage_figures f = stage(s, j, 0, (jd_stats_window)w, T0 + N);
            assert_int_equal(f.in_stage.n, n);
            double m = exact(v, n, 0.5), p = exact(v, n, 0.9);
            if (fabs(f.in_stage.median_ms - m) > m * 0.0197 || fabs(f.in_stage.p90_ms - p) > p * 0.0197)
                fail_msg("round %d window %d: median %.1f (exact %.1f), p90 %.1f (exact %.1f)", round, w,
                         f.in_stage.median_ms, m, f.in_stage.p90_ms, p);
        }
        jd_stats_free(s);
    }
}

static void test_save_load_round_trip(void **state)
{
    (void)state;
    int j;
    jd_stats *s = three_stages(&j);
    jd_alert_spec al = {.kind = JD_ALERT_DROPOFF_ABOVE,
                        .stage = 0,
                        .threshold = 0.5,
                        .window = JD_WIN_24H,
                        .min_sample = 2,
                        .channel = 1,
                        .channel_name = "team"};
    jd_stats_set_alerts(s, j, &al, 1);
    for (int i = 0; i < 50; i++) {
        int64_t t = T0 + i * 17 * MIN_MS;
        jd_stats_entered(s, j, 0, t);
        if (i % 3 == 0)
            jd_stats_moved(s, j, 0, 1, t + MIN_MS, MIN_MS + i);
        else if (i % 3 == 1)
            jd_stats_timed_out(s, j, 0, 2, t + 2 * DAY_MS, 2 * DAY_MS);
        if (i % 5 == 0)
            jd_stats_converted(s, j, i % 3 == 0 ? 1 : 0, t + 3 * MIN_MS, 2 * MIN_MS, 3 * MIN_MS);
    }
    jd_alert_edge edges[4];
    int64_t now = T0 + 50 * 17 * MIN_MS + 2 * DAY_MS;
    assert_int_equal(jd_stats_check_alerts(s, -1, now, edges, 4), 1);
    jd_buf b;
    jd_buf_init(&b);
    jd_stats_save(s, &b);

    jd_stats *t = jd_stats_new();
    int tj = jd_stats_journey(t, "jr", 3, stages3);
    jd_stats_set_alerts(t, tj, &al, 1);
    assert_int_equal(jd_stats_load(t, b.data, b.len), 0);
    for (int w = 0; w < JD_NWINDOWS; w++) {
        char *x = jd_stats_funnel_json(s, j, jd_stats_window_name((jd_stats_window)w), now);
        char *y = jd_stats_funnel_json(t, tj, jd_stats_window_name((jd_stats_window)w), now);
        assert_string_equal(x, y);
        free(x);
        free(y);
    }
    /* the alert state came along: no second firing */
    assert_int_equal(jd_stats_check_alerts(t, -1, now, edges, 4), 0);

    /* carry by name: another journey first, stages reordered, one removed, one added */
    static const char *const other[] = {"x"};
    static const char *const renamed[] = {"new", "c", "a"};
    jd_stats *u = jd_stats_new();
    jd_stats_journey(u, "other", 1, other);
    int uj = jd_stats_journey(u, "jr", 3, renamed);
    assert_int_equal(jd_stats_load(u, b.data, b.len), 0);
    jd_stage_figures a0 = stage(s, j, 0, JD_WIN_ALL, now), a1 = stage(u, uj, 2, JD_WIN_ALL, now);
    assert_int_equal(a0.entered, a1.entered);
    assert_int_equal(a0.moved_on, a1.moved_on);
    assert_int_equal(a0.timed_out, a1.timed_out);
    assert_int_equal(a0.in_stage.n, a1.in_stage.n);
    assert_true(a0.in_stage.median_ms == a1.in_stage.median_ms);
    assert_int_equal(jd_stats_moved_to(u, uj, 2, 1), jd_stats_moved_to(s, j, 0, 2)); /* a -> c */
    assert_int_equal(stage(u, uj, 0, JD_WIN_ALL, now).entered, 0);
    /* the journey's active count is what the kept stages hold */
    assert_int_equal(whole(u, uj, JD_WIN_ALL, now).active,
                     stage(s, j, 0, JD_WIN_ALL, now).now + stage(s, j, 2, JD_WIN_ALL, now).now);

    /* not stats: refused, dst unchanged */
    assert_int_equal(jd_stats_load(u, "\x93\xa1x\x01\x90", 5), -1);
    assert_int_equal(jd_stats_load(u, b.data, b.len - 1), -1);
    assert_int_equal(stage(u, uj, 2, JD_WIN_ALL, now).entered, a0.entered);
    jd_buf_free(&b);
    jd_stats_free(s);
    jd_stats_free(t);
    jd_stats_free(u);
}

/* The sum of shards' saved stats (the admin API's funnel with several shards): a bucket
 * of the same period adds up, histogram and all; a newer period replaces an older one. */
static void test_shard_sums(void **state)
{
    (void)state;
    int j, k;
    jd_stats *a = three_stages(&j), *b = three_stages(&k);
    jd_stats_entered(a, j, 0, T0);
    jd_stats_moved(a, j, 0, 1, T0 + MIN_MS, 1000);
    jd_stats_moved(b, k, 0, 1, T0 + 2 * MIN_MS, 4000);
    jd_stats_moved(b, k, 0, 1, T0 + 7 * DAY_MS + MIN_MS, 9000); /* the same hour slot, a week on */
    jd_buf ba, bb;
    jd_buf_init(&ba);
    jd_buf_init(&bb);
    jd_stats_save(a, &ba);
    jd_stats_save(b, &bb);
    jd_stats *sum = three_stages(&j);
    assert_int_equal(jd_stats_add_saved(sum, ba.data, ba.len), 0);
    assert_int_equal(jd_stats_add_saved(sum, bb.data, bb.len), 0);
    /* all time: all three */
    jd_stage_figures f = stage(sum, j, 0, JD_WIN_ALL, T0 + 7 * DAY_MS + 2 * MIN_MS);
    assert_int_equal(f.moved_on, 3);
    assert_int_equal(f.in_stage.n, 3);
    assert_true(fabs(f.in_stage.median_ms - 4000) <= 4000 * 0.0197);
    /* the last hour a week on: only b's newest; the older hour of both shards was replaced */
    f = stage(sum, j, 0, JD_WIN_1H, T0 + 7 * DAY_MS + 2 * MIN_MS);
    assert_int_equal(f.moved_on, 1);
    assert_int_equal(f.in_stage.n, 1);
    assert_true(fabs(f.in_stage.median_ms - 9000) <= 9000 * 0.0197);
    f = stage(sum, j, 0, JD_WIN_7D, T0 + 7 * DAY_MS + 2 * MIN_MS);
    assert_int_equal(f.in_stage.n, 1);
    /* the same period from two shards adds up (a's and b's first hour, queried then) */
    jd_stats *early = three_stages(&j);
    jd_stats_moved(b, k, 0, 1, T0 + 7 * DAY_MS + 3 * MIN_MS, 16000);
    jd_buf_reset(&bb);
    jd_stats_save(b, &bb);
    assert_int_equal(jd_stats_add_saved(early, bb.data, bb.len), 0);
    assert_int_equal(jd_stats_add_saved(early, bb.data, bb.len), 0);
    f = stage(early, j, 0, JD_WIN_1H, T0 + 7 * DAY_MS + 4 * MIN_MS);
    assert_int_equal(f.moved_on, 4);
    assert_int_equal(f.in_stage.n, 4);
    jd_buf_free(&ba);
    jd_buf_free(&bb);
    jd_stats_free(a);
    jd_stats_free(b);
    jd_stats_free(sum);
    jd_stats_free(early);
}

static void test_alert_fires_once_and_recovers(void **state)
{
    (void)state;
    int j;
    jd_stats *s = three_stages(&j);
    jd_alert_spec al[2] = {
        {.kind = JD_ALERT_DROPOFF_ABOVE,
         .stage = 0,
         .threshold = 0.6,
         .window = JD_WIN_24H,
         .min_sample = 10,
         .channel = 0,
         .channel_name = "team"},
        {.kind = JD_ALERT_CONVERSION_BELOW,
         .stage = -1,
         .threshold = 0.5,
         .window = JD_WIN_7D,
         .min_sample = 4,
         .channel = 0,
         .channel_name = "team"},
    };
    jd_stats_set_alerts(s, j, al, 2);
    jd_alert_edge e[4];
    int64_t t = T0;
    size_t fired = 0;
    /* 9 people time out of a: 100% drop-off, but below min_sample -> nothing */
    for (int i = 0; i < 9; i++) {
        jd_stats_entered(s, j, 0, t);
        jd_stats_timed_out(s, j, 0, 2, ++t, 1);
        size_t n = jd_stats_check_alerts(s, j, t, e, 4);
        for (size_t k = 0; k < n; k++)
            assert_int_equal(e[k].alert, 1); /* only the journey conversion (sample 4 reached) */
        fired += n;
    }
    assert_int_equal(fired, 1);
    assert_int_equal(jd_stats_alert_state(s, j, 1, NULL, NULL), 1);
    assert_int_equal(jd_stats_alert_state(s, j, 0, NULL, NULL), 0);
    /* the 10th: fires, with the figures */
    jd_stats_entered(s, j, 0, t);
    jd_stats_timed_out(s, j, 0, 2, ++t, 1);
    assert_int_equal(jd_stats_check_alerts(s, j, t, e, 4), 1);
    assert_int_equal(e[0].alert, 0);
    assert_int_equal(e[0].firing, 1);
    assert_int_equal(e[0].sample, 10);
    assert_true(e[0].value == 1.0);
    char text[256];
    jd_alert_edge_text(s, &e[0], text, sizeof text);
    assert_string_equal(text, "jr/a: drop-off 100.0% above 60% over 24h (10 people)");
    /* stays quiet while it stays above */
    for (int i = 0; i < 5; i++) {
        jd_stats_entered(s, j, 0, t);
        jd_stats_timed_out(s, j, 0, 2, ++t, 1);
        assert_int_equal(jd_stats_check_alerts(s, j, t, e, 4), 0);
    }
    /* 15 dropped; moves bring it to 15/26 = 0.577: below 0.6 but inside the 10% margin */
    for (int i = 0; i < 11; i++) {
        jd_stats_entered(s, j, 0, t);
        jd_stats_moved(s, j, 0, 1, ++t, 1);
        assert_int_equal(jd_stats_check_alerts(s, j, t, e, 4), 0);
    }
    double v;
    uint64_t n;
    assert_int_equal(jd_stats_alert_state(s, j, 0, &v, &n), 1);
    assert_int_equal(n, 26);
    /* 15/28 = 0.536 < 0.54: recovers, once */
    jd_stats_entered(s, j, 0, t);
    jd_stats_moved(s, j, 0, 1, ++t, 1);
    assert_int_equal(jd_stats_check_alerts(s, j, t, e, 4), 0); /* 15/27 = 0.556 */
    jd_stats_entered(s, j, 0, t);
    jd_stats_moved(s, j, 0, 1, ++t, 1);
    assert_int_equal(jd_stats_check_alerts(s, j, t, e, 4), 1);
    assert_int_equal(e[0].alert, 0);
    assert_int_equal(e[0].firing, 0);
    jd_alert_edge_text(s, &e[0], text, sizeof text);
    assert_non_null(strstr(text, "back below 60%"));
    assert_int_equal(jd_stats_check_alerts(s, j, t, e, 4), 0);
    /* journey conversion: 13 of 28 reached b, none converted: still firing; conversions
     * bring it above 0.55 -> recovers */
    for (int i = 0; i < 13; i++)
        jd_stats_converted(s, j, 1, ++t, 1, 2);
    assert_int_equal(jd_stats_check_alerts(s, j, t, e, 4), 0); /* 13/28 = 0.46 */
    /* (13 + k) / (28 + k) passes 0.5 at k = 3 but the margin (0.55) only at k = 6 */
    for (int k = 1; k <= 6; k++) {
        jd_stats_entered(s, j, 0, t);
        jd_stats_converted(s, j, 0, ++t, 1, 1);
        size_t got = jd_stats_check_alerts(s, j, t, e, 4);
        assert_int_equal(got, k == 6);
    }
    assert_int_equal(e[0].alert, 1);
    assert_int_equal(e[0].firing, 0);
    assert_true(fabs(e[0].value - 19.0 / 34) < 1e-9);
    jd_stats_free(s);
}

/* When the window empties the sample is 0: the state stays (no recovery by silence). */
static void test_alert_state_holds_without_sample(void **state)
{
    (void)state;
    int j;
    jd_stats *s = three_stages(&j);
    jd_alert_spec al = {.kind = JD_ALERT_DROPOFF_ABOVE,
                        .stage = 0,
                        .threshold = 0.5,
                        .window = JD_WIN_1H,
                        .min_sample = 2,
                        .channel = 0,
                        .channel_name = "team"};
    jd_stats_set_alerts(s, j, &al, 1);
    jd_alert_edge e[2];
    for (int i = 0; i < 2; i++) {
        jd_stats_entered(s, j, 0, T0);
        jd_stats_exited(s, j, 0, T0 + 1, 1);
    }
    assert_int_equal(jd_stats_check_alerts(s, j, T0 + 1, e, 2), 1);
    assert_int_equal(jd_stats_check_alerts(s, j, T0 + 2 * HOUR_MS, e, 2), 0);
    assert_int_equal(jd_stats_alert_state(s, j, 0, NULL, NULL), 1);
    /* an identical spec set again keeps the state; a changed one starts quiet */
    jd_stats_set_alerts(s, j, &al, 1);
    assert_int_equal(jd_stats_alert_state(s, j, 0, NULL, NULL), 1);
    al.threshold = 0.7;
    jd_stats_set_alerts(s, j, &al, 1);
    assert_int_equal(jd_stats_alert_state(s, j, 0, NULL, NULL), 0);
    char *json = jd_stats_funnel_json(s, j, "all", T0 + 2 * HOUR_MS);
    assert_non_null(strstr(json, "\"kind\":\"dropoff_above\",\"stage\":\"a\",\"threshold\":0.7"));
    assert_null(jd_stats_funnel_json(s, j, "2h", T0));
    assert_null(jd_stats_funnel_json(s, 3, "all", T0));
    free(json);
    jd_stats_free(s);
}

/* ---------------------------------------------------------------- alert entries in scripts */

static void test_alert_entries_parse(void **state)
{
    (void)state;
    static const struct {
        const char *alert, *error; /* NULL: loads */
    } cases[] = {
        {"{ stage = \"s\", dropoff_above = 0.6, window = \"24h\", min_sample = 50, channel = \"team\" }", NULL},
        {"{ conversion_below = 0.1, window = \"7d\", min_sample = 50, channel = \"team\" }", NULL},
        {"{ { stage = \"s\", conversion_below = 0.2, window = \"1h\", channel = \"team\" },"
         " { stage = \"s\", dropoff_above = 0.9, channel = \"email\" } }",
         NULL},
        {"{ dropoff_above = 0.6, channel = \"team\" }", "dropoff_above needs a stage"},
        {"{ stage = \"s\", channel = \"team\" }", "one of dropoff_above or conversion_below"},
        {"{ stage = \"s\", dropoff_above = 0.6, conversion_below = 0.1, channel = \"team\" }", "one of"},
        {"{ stage = \"s\", dropoff_above = 1.5, channel = \"team\" }", "between 0 and 1"},
        {"{ stage = \"s\", dropoff_above = \"lots\", channel = \"team\" }", "must be a number"},
        {"{ stage = \"s\", dropoff_above = 0.5, window = \"2h\", channel = \"team\" }", "\"1h\", \"24h\" or \"7d\""},
        {"{ stage = \"s\", dropoff_above = 0.5 }", "needs a channel"},
        {"{ stage = \"nope\", dropoff_above = 0.5, channel = \"team\" }", "unknown stage 'nope'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char lua[2048];
        snprintf(lua, sizeof lua,
                 HDR "j.journey \"x\" {\n  entry = j.on(\"A\"),\n  j.stage \"s\" { j.on(\"B\"):go \"s\" },\n"
                     "  alert = %s,\n}\n",
                 cases[i].alert);
        tu_run r;
        jd_error err;
        jd_engine *e = tu_load(&r, lua, &err);
        if (cases[i].error && e)
            fail_msg("case %zu loaded, want error '%s'", i, cases[i].error);
        if (!cases[i].error && !e)
            fail_msg("case %zu: %s", i, err.text);
        if (cases[i].error && !strstr(err.text, cases[i].error))
            fail_msg("case %zu: want '%s', got '%s'", i, cases[i].error, err.text);
        if (e)
            tu_free(&r);
        else
            unlink(r.path);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counts_follow_transitions),
        cmocka_unit_test(test_reentry_counts_again),
        cmocka_unit_test(test_windows_roll_over),
        cmocka_unit_test(test_quantiles_within_error),
        cmocka_unit_test(test_save_load_round_trip),
        cmocka_unit_test(test_shard_sums),
        cmocka_unit_test(test_alert_fires_once_and_recovers),
        cmocka_unit_test(test_alert_state_holds_without_sample),
        cmocka_unit_test(test_alert_entries_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
