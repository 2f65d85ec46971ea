#define _GNU_SOURCE
/* Sliced checkpoints (checkpoint.c: jd_engine_checkpoint_begin / _step): the batch is
 * taken at a position X and its people are encoded a slice at a time while events, timers
 * and identity merges go on changing them. The store must hold exactly the state at X —
 * the same rows a checkpoint taken at once at X writes — and a restart from it that
 * replays the records after X must end where a run that never stopped ends. */
#include "testutil.h"

#include "buf.h"
#include "clock.h"
#include "store.h"

static const char *const LUA =
    HDR "j.journey \"trial\" {\n"
        "  entry = j.on(\"Signed Up\"),\n"
        "  goal = j.on(\"Paid\"),\n"
        "  j.stage \"new\" {\n"
        "    enter = function(ctx) ctx:send(\"email\", { t = \"welcome\" }) end,\n"
        "    j.on(\"Project Created\"):go \"active\",\n"
        "    j.after(\"2h\", function(ctx) ctx:send(\"email\", { t = \"nudge\" }) end),\n"
        "  },\n"
        "  j.stage \"active\" {\n"
        "    enter = function(ctx) ctx:set(\"active\", true) ctx:segment_add(\"doers\") end,\n"
        "    j.after(\"3h\", function(ctx) ctx:score(1) end),\n"
        "  },\n"
        "}\n"
        "j.on(\"Pricing Viewed\", function(ctx) ctx:score(5) end)\n";

/* 1 ns: every step encodes one batch of people (32), so the changes below land between
 * slices with most people still pending */
#define TINY_BUDGET 1

static void open_engine(tu_run *r, const char *store, size_t cache_users)
{
    jd_options o = {.virtual_clock = 1, .dedupe_ttl_ms = 86400000, .decisions_per_user = 20};
    jd_error err;
    if (!tu_load_opts(r, LUA, &o, &err))
        fail_msg("load: %s", err.text);
    if (store) {
        jd_store_opts so = {.cache_users = cache_users};
        tu_open_store(r, store, &so);
    }
}

/* ---------------------------------------------------------------- the inputs */

/* Record i of a deterministic stream (the event log): events of 60 people and 12
 * anonymous visitors one minute apart, every 10th record a clock tick (timers fire). */
static void op_text(int i, char *buf, size_t n, int64_t *tick)
{
    static const char *const names[] = {"Signed Up", "Project Created", "Pricing Viewed", "Paid", "Page"};
    int64_t base;
    assert_int_equal(jd_parse_time("2026-03-01T08:00:00Z", &base), 0);
    int64_t t = base + (int64_t)i * 60000;
    *tick = 0;
    if (i % 10 == 9) {
        *tick = t;
        return;
    }
    char ts[40];
    jd_time_format(t, ts);
    unsigned h = (unsigned)i * 2654435761u;
    int user = (int)(h >> 8) % 60, kind = (int)(h >> 20) % 16;
    if (kind == 15) { /* an anonymous visitor identifies as a person: their profiles fold */
        snprintf(buf, n,
                 "{\"type\":\"identify\",\"userId\":\"u%d\",\"anonymousId\":\"a%d\",\"traits\":{\"n\":%d},"
                 "\"timestamp\":\"%s\",\"messageId\":\"m%d\"}",
                 user, user % 12, i, ts, i);
    } else if (kind == 14) {
        snprintf(buf, n,
                 "{\"type\":\"track\",\"anonymousId\":\"a%d\",\"event\":\"Pricing Viewed\",\"timestamp\":\"%s\","
                 "\"messageId\":\"m%d\"}",
                 user % 12, ts, i);
    } else {
        const char *ev = kind < 5    ? names[0]
                         : kind < 8  ? names[1]
                         : kind < 12 ? names[2]
                         : kind < 13 ? names[3]
                                     : names[4];
        snprintf(buf, n,
                 "{\"type\":\"track\",\"userId\":\"u%d\",\"event\":\"%s\",\"timestamp\":\"%s\",\"messageId\":\"m%d\"}",
                 user, ev, ts, i);
    }
}

static void apply_op(tu_run *r, int i)
{
    char buf[512];
    int64_t tick;
    op_text(i, buf, sizeof buf, &tick);
    if (tick)
        jd_engine_advance(r->e, tick);
    else
        tu_event(r, "%s", buf);
}

/* ---------------------------------------------------------------- the store's contents */

static int collect(const void *k, size_t kn, const void *v, size_t vn, void *ud)
{
    jd_buf *b = ud;
    if (kn >= 4 && memcmp(k, "gen/", 4) == 0)
        return 0; /* script sources name the test's temporary file: not state */
    uint32_t a = (uint32_t)kn, c = (uint32_t)vn;
    jd_buf_append(b, &a, 4);
    jd_buf_append(b, k, kn);
    jd_buf_append(b, &c, 4);
    jd_buf_append(b, v, vn);
    return 0;
}

/* Every row of every database of two stores is the same. */
static void assert_same_store(const char *x, const char *y)
{
    static const char *const dbs[] = {"meta", "users", "aliases", "timers", "outbox", "dedupe"};
    char err[256], px[256], py[256];
    snprintf(px, sizeof px, "%s/%s", tu_dir, x);
    snprintf(py, sizeof py, "%s/%s", tu_dir, y);
    jd_store *sx = jd_store_open(px, 0, 1, err, sizeof err);
    assert_non_null(sx);
    jd_store *sy = jd_store_open(py, 0, 1, err, sizeof err);
    assert_non_null(sy);
    for (int db = 0; db < JD_DB_N; db++) {
        jd_buf bx, by;
        jd_buf_init(&bx);
        jd_buf_init(&by);
        assert_int_equal(jd_store_scan(sx, db, NULL, 0, collect, &bx), 0);
        assert_int_equal(jd_store_scan(sy, db, NULL, 0, collect, &by), 0);
        if (bx.len != by.len || memcmp(bx.data, by.data, bx.len) != 0)
            fail_msg("stores %s and %s differ in %s (%llu and %llu rows)", x, y, dbs[db],
                     (unsigned long long)jd_store_count(sx, db), (unsigned long long)jd_store_count(sy, db));
        jd_buf_free(&bx);
        jd_buf_free(&by);
    }
    jd_store_close(sx);
    jd_store_close(sy);
}

/* Steps the checkpoint being built once; writes it and hands it back when it is done
 * (returns 1 then). */
static int step(tu_run *r, int64_t budget)
{
    jd_ckpt *c = jd_engine_checkpoint_step(r->e, budget);
    if (!c)
        return 0;
    assert_int_equal(jd_ckpt_write(c), 0);
    jd_error err;
    if (jd_engine_checkpoint_done(r->e, c, &err))
        fail_msg("checkpoint: %s", err.text);
    return 1;
}

/* ---------------------------------------------------------------- tests */

/* Changes of every kind between slices — events that move people on, score and merge
 * them, timers that fire for them, an admin read — and the stored rows are still the
 * state at X: the same, row for row, as a checkpoint taken at once at X. */
static void test_slices_store_state_at_x(void **state)
{
    (void)state;
    const int X = 240;
    tu_run ref, a;
    open_engine(&ref, "ref", 0);
    open_engine(&a, "sliced", 0);
    for (int i = 0; i < X; i++) {
        apply_op(&ref, i);
        apply_op(&a, i);
    }
    tu_checkpoint(&ref, (uint64_t)X);
    tu_free(&ref);

    assert_int_equal(jd_engine_checkpoint_begin(a.e, (uint64_t)X), 0);
    assert_true(jd_engine_checkpoint_building(a.e));
    assert_int_equal(step(&a, TINY_BUDGET), 0);
    /* people still pending change: moved on, scored, converted, folded into */
    for (int u = 0; u < 60; u += 3)
        tu_event(&a,
                 "{\"type\":\"track\",\"userId\":\"u%d\",\"event\":\"Project Created\","
                 "\"timestamp\":\"2026-03-01T12:01:00Z\",\"messageId\":\"x%d\"}",
                 u, u);
    assert_int_equal(step(&a, TINY_BUDGET), 0);
    for (int u = 1; u < 60; u += 3)
        tu_event(&a,
                 "{\"type\":\"track\",\"userId\":\"u%d\",\"event\":\"Pricing Viewed\","
                 "\"timestamp\":\"2026-03-01T12:02:00Z\",\"messageId\":\"y%d\"}",
                 u, u);
    tu_event(&a, "{\"type\":\"track\",\"userId\":\"u2\",\"event\":\"Paid\",\"timestamp\":\"2026-03-01T12:03:00Z\","
                 "\"messageId\":\"z1\"}");
    for (int k = 0; k < 12; k++)
        tu_event(&a,
                 "{\"type\":\"identify\",\"userId\":\"u%d\",\"anonymousId\":\"a%d\",\"traits\":{\"late\":1},"
                 "\"timestamp\":\"2026-03-01T12:04:00Z\",\"messageId\":\"w%d\"}",
                 50 - k, k, k);
    char *js = jd_engine_user_json(a.e, "u5", 2);
    assert_non_null(js);
    free(js);
    /* hours later: every pending nudge and score timer fires */
    tu_advance(&a, "2026-03-01T20:00:00Z");
    while (!step(&a, TINY_BUDGET))
        ;
    assert_false(jd_engine_checkpoint_building(a.e));
    assert_int_equal(jd_engine_store_position(a.e), X);
    /* some were encoded in slices, the others early, just before they changed */
    char *m = jd_engine_metrics(a.e);
    const char *sl = strstr(m, "journeyd_checkpoint_people_total{when=\"slice\"} ");
    const char *early = strstr(m, "journeyd_checkpoint_people_total{when=\"early\"} ");
    assert_non_null(sl);
    assert_non_null(early);
    assert_true(atoi(strchr(sl, '}') + 2) >= 32);
    assert_true(atoi(strchr(early, '}') + 2) > 0);
    free(m);
    /* the people who changed after X are the next checkpoint's */
    tu_free(&a);
    assert_same_store("ref", "sliced");
}

/* A checkpoint taken at once while one is being built finishes it into its own: the
 * store then holds the state at the later position, as if only that one had run. */
static void test_checkpoint_finishes_the_one_building(void **state)
{
    (void)state;
    const int X = 150, Y = 230;
    tu_run ref, a;
    open_engine(&ref, "ref2", 0);
    open_engine(&a, "merged", 0);
    for (int i = 0; i < Y; i++)
        apply_op(&ref, i);
    tu_checkpoint(&ref, (uint64_t)Y);
    tu_free(&ref);
    for (int i = 0; i < X; i++)
        apply_op(&a, i);
    assert_int_equal(jd_engine_checkpoint_begin(a.e, (uint64_t)X), 0);
    for (int i = X; i < Y; i++) {
        apply_op(&a, i);
        if (i == X)
            assert_int_equal(step(&a, TINY_BUDGET), 0);
    }
    tu_checkpoint(&a, (uint64_t)Y);
    assert_false(jd_engine_checkpoint_building(a.e));
    assert_null(jd_engine_checkpoint_step(a.e, 0));
    assert_int_equal(jd_engine_store_position(a.e), Y);
    tu_free(&a);
    assert_same_store("ref2", "merged");
}

/* Two sliced checkpoints with records processed between their slices and few people kept
 * in memory (the others leave after each checkpoint and are read back), a crash, a
 * restart from the store that replays the records after its position: the actions and
 * the people are those of a run that never stopped. */
static void test_restart_replays_to_the_same_end(void **state)
{
    (void)state;
    enum { N = 900, X1 = 300, X2 = 620, CRASH = 760 };
    tu_run c;
    open_engine(&c, NULL, 0);
    size_t before[N + 1];
    for (int i = 0; i < N; i++) {
        before[i] = c.nactions;
        apply_op(&c, i);
    }
    before[N] = c.nactions;

    tu_run a;
    open_engine(&a, "crashed", 8);
    int i = 0;
    for (int round = 0; round < 2; round++) {
        int x = round ? X2 : X1;
        for (; i < x; i++)
            apply_op(&a, i);
        assert_int_equal(jd_engine_checkpoint_begin(a.e, (uint64_t)x), 0);
        int done = 0;
        for (; !done; i++) {
            apply_op(&a, i);
            done = step(&a, TINY_BUDGET);
        }
        assert_int_equal(jd_engine_store_position(a.e), x);
        assert_true(i < CRASH);
    }
    for (; i < CRASH; i++)
        apply_op(&a, i);
    /* the checkpoints changed no decision */
    assert_int_equal(a.nactions, before[CRASH]);
    for (size_t k = 0; k < a.nactions; k++)
        assert_string_equal(a.actions[k], c.actions[k]);
    tu_free(&a); /* the crash: records after X2 are only in the log */

    tu_run b;
    open_engine(&b, "crashed", 8);
    assert_int_equal(jd_engine_store_position(b.e), X2);
    for (i = X2; i < N; i++)
        apply_op(&b, i);
    assert_int_equal(b.nactions, before[N] - before[X2]);
    for (size_t k = 0; k < b.nactions; k++)
        assert_string_equal(b.actions[k], c.actions[before[X2] + k]);
    char id[16];
    for (int u = 0; u < 60; u++) {
        snprintf(id, sizeof id, "u%d", u);
        char *jb = jd_engine_user_json(b.e, id, strlen(id)), *jc = jd_engine_user_json(c.e, id, strlen(id));
        if (!jb || !jc || strcmp(jb, jc) != 0)
            fail_msg("%s after the restart:\n  %s\nwithout one:\n  %s", id, jb ? jb : "(none)", jc ? jc : "(none)");
        free(jb);
        free(jc);
    }
    tu_free(&b);
    tu_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slices_store_state_at_x),
        cmocka_unit_test(test_checkpoint_finishes_the_one_building),
        cmocka_unit_test(test_restart_replays_to_the_same_end),
    };
    return cmocka_run_group_tests_name("ckpt", tests, tu_group_setup, tu_group_teardown);
}
