#define _GNU_SOURCE
/* The embedded store (store.c, checkpoint.c, outbox.c): state written by a checkpoint
 * comes back in a fresh engine; re-processing after a crash decides the same action ids
 * and adds no duplicate to the outbox; only the near window of timers is held in memory;
 * a timer fires once across a restart; messageIds stay seen. */
#include "testutil.h"

#include <sys/stat.h>

#include <lmdb.h>
#include <msgpack.h>

#include "buf.h"
#include "clock.h"
#include "event.h"
#include "dedupe.h"
#include "engine_internal.h"
#include "outbox.h"
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
        "  },\n"
        "}\n"
        "j.on(\"Pricing Viewed\", function(ctx) ctx:score(5) end)\n";

static void open_with_store(tu_run *r, const char *path, int64_t window_ms)
{
    jd_options o = {.virtual_clock = 1, .dedupe_ttl_ms = 86400000, .decisions_per_user = 20};
    jd_error err;
    if (!tu_load_opts(r, LUA, &o, &err))
        fail_msg("load: %s", err.text);
    jd_store_opts so = {.window_ms = window_ms};
    tu_open_store(r, path, &so);
}

static void ev(tu_run *r, const char *user, const char *event, const char *t, const char *id)
{
    tu_event(r, "{\"type\":\"track\",\"userId\":\"%s\",\"event\":\"%s\",\"timestamp\":\"%s\",\"messageId\":\"%s\"}",
             user, event, t, id);
}

/* The outbox rows (JSON action text) of a store, in decision order. */
static long outbox(const char *name, char ids[][33], long max)
{
    char err[256], path[256];
    snprintf(path, sizeof path, "%s/%s", tu_dir, name);
    jd_store *st = jd_store_open(path, 0, 1, err, sizeof err);
    if (!st)
        fail_msg("%s", err);
    jd_buf rows, keep;
    jd_buf_init(&rows);
    jd_buf_init(&keep);
    long n = jd_outbox_list(st, NULL, &rows, &keep);
    for (long i = 0; i < n && i < max; i++)
        memcpy(ids[i], ((jd_outbox_row *)rows.data)[i].id, 33);
    jd_buf_free(&rows);
    jd_buf_free(&keep);
    jd_store_close(st);
    return n;
}

static void action_id(const char *json, char out[33])
{
    const char *p = strstr(json, "\"id\":\"");
    assert_non_null(p);
    memcpy(out, p + 6, 32);
    out[32] = '\0';
}

static void test_state_comes_back(void **state)
{
    (void)state;
    const char *path = "back";
    tu_run a;
    open_with_store(&a, path, 0);
    tu_event(&a, "{\"type\":\"identify\",\"userId\":\"u1\",\"traits\":{\"plan\":\"pro\"},\"messageId\":\"i1\","
                 "\"timestamp\":\"2026-03-01T09:00:00Z\"}");
    ev(&a, "u1", "Signed Up", "2026-03-01T10:00:00Z", "e1");
    ev(&a, "u1", "Pricing Viewed", "2026-03-01T10:01:00Z", "e2");
    ev(&a, "u2", "Signed Up", "2026-03-01T10:02:00Z", "e3");
    ev(&a, "u2", "Project Created", "2026-03-01T10:03:00Z", "e4");
    tu_checkpoint(&a, 5);
    EXPECT_NACTIONS(&a, 2);
    tu_free(&a);

    tu_run b;
    open_with_store(&b, path, 0);
    assert_int_equal(jd_engine_store_position(b.e), 5);
    char *u1 = jd_engine_user_json(b.e, "u1", 2);
    assert_non_null(u1);
    assert_non_null(strstr(u1, "\"plan\":\"pro\""));
    assert_non_null(strstr(u1, "\"score\":5"));
    assert_non_null(strstr(u1, "\"stage\":\"new\""));
    free(u1);
    char *u2 = jd_engine_user_json(b.e, "u2", 2);
    assert_non_null(u2);
    assert_non_null(strstr(u2, "\"stage\":\"active\""));
    assert_non_null(strstr(u2, "doers"));
    free(u2);
    /* counters came back too */
    char *js = jd_engine_journeys_json(b.e);
    assert_non_null(strstr(js, "\"entered\":2"));
    free(js);
    /* an id seen before the restart is still a duplicate */
    ev(&b, "u1", "Pricing Viewed", "2026-03-01T10:05:00Z", "e2");
    assert_int_equal(jd_engine_stat(b.e, "duplicates"), 1);
    /* u1's 2h nudge fires once, after the restart (u2 left the stage: its timer drops) */
    tu_advance(&b, "2026-03-01T13:00:00Z");
    EXPECT_NACTIONS(&b, 1);
    EXPECT_COUNT(&b, 1, "\"user\":\"u1\"", "nudge");
    tu_checkpoint(&b, 6);
    tu_free(&b);

    tu_run c;
    open_with_store(&c, path, 0);
    tu_advance(&c, "2026-03-02T13:00:00Z");
    EXPECT_NACTIONS(&c, 0); /* fired once: never again */
    assert_int_equal(jd_engine_next_due(c.e), -1);
    tu_free(&c);
    char ids[8][33];
    assert_int_equal(outbox(path, ids, 8), 3); /* two welcomes and the nudge */
}

/* Puts a second copy of u1's nudge timer (same stage entry, same j.after) in memory, due
 * at iso: a repeat nothing in the engine makes, standing for any that a bug could. */
static void repeat_nudge(tu_run *r, const char *iso)
{
    jd_engine *e = r->e;
    jd_user *u = jd_engine_find_user(e, "u1", 2);
    assert_non_null(u);
    jd_instance *in = jd_user_instance(u, 0, "", 0);
    assert_non_null(in);
    int64_t due;
    assert_int_equal(jd_parse_time(iso, &due), 0);
    jd_timer tm = {.due = due, .seq = e->timers.next_seq++, .user = u, .inst = in, .iid = in->iid, .gen = in->gen};
    jd_timers_schedule(&e->timers, tm, 3600000);
    u->timers++;
}

/* A timer fires once per stage entry: a repeat of one that fired is dropped as a
 * duplicate, and still after a restart (the instance's row keeps which fired). */
static void test_timer_repeat_is_dropped(void **state)
{
    (void)state;
    const char *path = "repeat";
    tu_run a;
    open_with_store(&a, path, 0);
    ev(&a, "u1", "Signed Up", "2026-03-01T10:00:00Z", "e1");
    tu_advance(&a, "2026-03-01T12:30:00Z");
    EXPECT_COUNT(&a, 1, "nudge");
    repeat_nudge(&a, "2026-03-01T12:40:00Z");
    tu_advance(&a, "2026-03-01T12:50:00Z");
    EXPECT_COUNT(&a, 1, "nudge");
    EXPECT_STAT(&a, "duplicates", 1);
    tu_checkpoint(&a, 1);
    tu_free(&a);

    tu_run b;
    open_with_store(&b, path, 0);
    repeat_nudge(&b, "2026-03-01T13:00:00Z");
    tu_advance(&b, "2026-03-01T13:10:00Z");
    EXPECT_NACTIONS(&b, 0);
    EXPECT_STAT(&b, "duplicates", 2); /* the counters came back with the store */
    tu_free(&b);
}

/* The rows of the dedupe database: their key lengths, in key order. */
static int seen_row(const void *k, size_t kn, const void *v, size_t vn, void *ud)
{
    (void)k;
    (void)v;
    (void)vn;
    jd_buf_putc(ud, (char)('0' + kn / 8));
    return 0;
}

static void seen_rows(const char *name, char *out, size_t n)
{
    char err[256], path[256];
    snprintf(path, sizeof path, "%s/%s", tu_dir, name);
    jd_store *st = jd_store_open(path, 0, 1, err, sizeof err);
    if (!st)
        fail_msg("%s", err);
    jd_buf b;
    jd_buf_init(&b);
    jd_store_scan(st, JD_DB_DEDUPE, NULL, 0, seen_row, &b);
    snprintf(out, n, "%.*s", (int)b.len, b.data);
    jd_buf_free(&b);
    jd_store_close(st);
}

static int64_t ms_of(const char *iso)
{
    int64_t t;
    assert_int_equal(jd_time_parse(iso, strlen(iso), &t), 0);
    return t;
}

/* messageIds are stored in rows of up to 168 (16-byte key); stores from before hold a
 * row an id (24-byte key, empty value). Both kinds are read back and pruned; an id past
 * the time to live is not a duplicate, even in a row with younger ones. */
static void test_seen_rows(void **state)
{
    (void)state;
    const char *path = "seen";
    tu_run a;
    open_with_store(&a, path, 0);
    ev(&a, "u1", "Pricing Viewed", "2026-03-01T08:00:00Z", "e1");
    tu_checkpoint(&a, 1);
    ev(&a, "u1", "Pricing Viewed", "2026-03-01T10:00:00Z", "e2");
    ev(&a, "u1", "Pricing Viewed", "2026-03-01T22:00:00Z", "e3"); /* e2's row is e3's */
    tu_checkpoint(&a, 3);
    tu_free(&a);
    char rows[16];
    seen_rows(path, rows, sizeof rows);
    assert_string_equal(rows, "22"); /* two checkpoints, two rows */

    /* a row as an older journeyd wrote it: one id, seen at 21:00 */
    char err[256], full[256];
    snprintf(full, sizeof full, "%s/%s", tu_dir, path);
    jd_store *st = jd_store_open(full, 0, 0, err, sizeof err);
    assert_non_null(st);
    uint64_t ha, hb;
    jd_dedupe_hash("old1", 4, &ha, &hb);
    unsigned char key[24];
    jd_be64_put(key, (uint64_t)ms_of("2026-03-01T21:00:00Z") ^ (1ULL << 63));
    jd_be64_put(key + 8, ha);
    jd_be64_put(key + 16, hb);
    assert_int_equal(jd_store_begin(st), 0);
    assert_int_equal(jd_store_put(st, JD_DB_DEDUPE, key, 24, "", 0, 0), 0);
    assert_int_equal(jd_store_commit(st), 0);
    jd_store_close(st);

    tu_run b;
    open_with_store(&b, path, 0);
    ev(&b, "u1", "Pricing Viewed", "2026-03-01T22:10:00Z", "e1");
    ev(&b, "u1", "Pricing Viewed", "2026-03-01T22:10:00Z", "e2");
    ev(&b, "u1", "Pricing Viewed", "2026-03-01T22:10:00Z", "e3");
    ev(&b, "u1", "Pricing Viewed", "2026-03-01T22:10:00Z", "old1");
    assert_int_equal(jd_engine_stat(b.e, "duplicates"), 4);
    tu_free(&b);

    /* a day later: e1 and e2 are past the day's time to live, e3 and old1 are not */
    tu_run c;
    open_with_store(&c, path, 0);
    tu_advance(&c, "2026-03-02T20:30:00Z");
    ev(&c, "u2", "Pricing Viewed", "2026-03-02T20:30:00Z", "e2");
    ev(&c, "u2", "Pricing Viewed", "2026-03-02T20:30:00Z", "e3");
    ev(&c, "u2", "Pricing Viewed", "2026-03-02T20:30:00Z", "old1");
    assert_int_equal(jd_engine_stat(c.e, "duplicates"), 2);
    tu_checkpoint(&c, 4); /* prunes what was seen before 03-01 20:30: the first row */
    tu_free(&c);
    seen_rows(path, rows, sizeof rows);
    assert_string_equal(rows, "322"); /* old1 (21:00), e2 and e3 (22:00), e2 seen again */
}

/* Outbox rows are keyed by sequence number, with an id index. A store from before has
 * rows keyed by id (value without the id) and no index database: read-only it still
 * lists; opened for writing it gains the index, new rows go after, and both kinds are
 * found and updated by id. */
static void test_outbox_from_before(void **state)
{
    (void)state;
    char dir[256];
    snprintf(dir, sizeof dir, "%s/before", tu_dir);
    assert_int_equal(mkdir(dir, 0755), 0);
    MDB_env *env;
    MDB_txn *t;
    MDB_dbi dbi;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 8), 0);
    assert_int_equal(mdb_env_open(env, dir, 0, 0644), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &t), 0);
    static const char *const old_dbs[] = {"meta", "users", "aliases", "timers", "dedupe", "outbox"};
    for (int i = 0; i < 6; i++)
        assert_int_equal(mdb_dbi_open(t, old_dbs[i], MDB_CREATE, &dbi), 0);
    const char *old_id = "00112233445566778899aabbccddeeff";
    jd_buf v;
    jd_buf_init(&v);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &v, jd_buf_msgpack_write);
    msgpack_pack_map(&pk, 5);
    jd_mp_pack_cstr(&pk, "seq");
    msgpack_pack_uint64(&pk, 1);
    jd_mp_pack_cstr(&pk, "status");
    jd_mp_pack_cstr(&pk, "pending");
    jd_mp_pack_cstr(&pk, "attempts");
    msgpack_pack_uint32(&pk, 0);
    jd_mp_pack_cstr(&pk, "next");
    msgpack_pack_int64(&pk, 0);
    jd_mp_pack_cstr(&pk, "action");
    jd_mp_pack_cstr(&pk, "{\"old\":true}");
    unsigned char k16[16];
    jd_outbox_key(k16, old_id);
    MDB_val key = {16, k16}, val = {v.len, v.data};
    assert_int_equal(mdb_put(t, dbi, &key, &val, 0), 0); /* dbi: outbox, opened last */
    assert_int_equal(mdb_txn_commit(t), 0);
    mdb_env_close(env);

    char err[256];
    jd_buf rows, keep;
    jd_buf_init(&rows);
    jd_buf_init(&keep);
    jd_store *ro = jd_store_open(dir, 0, 1, err, sizeof err);
    if (!ro)
        fail_msg("%s", err);
    assert_int_equal(jd_outbox_list(ro, NULL, &rows, &keep), 1);
    assert_string_equal(((jd_outbox_row *)rows.data)[0].id, old_id);
    jd_outbox_row r;
    assert_int_equal(jd_outbox_get(ro, old_id, &r), 0);
    assert_int_equal(r.seq, 1);
    jd_store_close(ro);

    jd_store *st = jd_store_open(dir, 0, 0, err, sizeof err);
    if (!st)
        fail_msg("%s", err);
    const char *new_id = "ffeeddccbbaa99887766554433221100";
    jd_outbox_row nr = {.seq = 2, .status = "pending", .action = "{\"new\":true}", .action_len = 12};
    memcpy(nr.id, new_id, 33);
    jd_buf_reset(&v);
    jd_outbox_encode(&nr, &v);
    unsigned char nk[16];
    jd_outbox_key(nk, new_id);
    assert_int_equal(jd_store_begin(st), 0);
    int legacy = jd_outbox_legacy(st);
    assert_true(legacy);
    assert_int_equal(jd_outbox_add(st, nk, 2, v.data, v.len, legacy), 0);
    assert_int_equal(jd_outbox_add(st, nk, 3, v.data, v.len, legacy), 0);  /* decided again: kept once */
    assert_int_equal(jd_outbox_add(st, k16, 4, v.data, v.len, legacy), 0); /* the old one decided again */
    assert_int_equal(jd_store_commit(st), 0);
    assert_int_equal(jd_outbox_update(st, old_id, "delivered", 1, 0, NULL), 0);
    assert_int_equal(jd_outbox_update(st, new_id, "dead", 3, 0, "boom"), 0);
    assert_int_equal(jd_outbox_update(st, "0123456789abcdef0123456789abcdef", "dead", 1, 0, NULL), 1);
    jd_buf_reset(&rows);
    jd_buf_free(&keep);
    jd_buf_init(&keep);
    assert_int_equal(jd_outbox_list(st, NULL, &rows, &keep), 2);
    const jd_outbox_row *l = (const jd_outbox_row *)rows.data;
    assert_string_equal(l[0].id, old_id);
    assert_int_equal(l[0].status_len, 9);
    assert_memory_equal(l[0].status, "delivered", 9);
    assert_string_equal(l[1].id, new_id);
    assert_int_equal(l[1].seq, 2);
    assert_memory_equal(l[1].status, "dead", 4);
    assert_memory_equal(l[1].error, "boom", 4);
    assert_memory_equal(l[1].action, "{\"new\":true}", 12);
    assert_int_equal(jd_store_count(st, JD_DB_OUTBOX), 2);
    unsigned char seq2[8];
    jd_be64_put(seq2, 2);
    assert_int_equal(jd_store_begin(st), 0);
    assert_int_equal(jd_store_append(st, JD_DB_OUTBOX, seq2, 8, "x", 1), -1); /* never over a row */
    jd_store_abort(st);
    jd_store_close(st);
    jd_buf_free(&rows);
    jd_buf_free(&keep);
    jd_buf_free(&v);
}

/* A crash after the checkpoint at record 3: records 4..6 are processed again from the
 * log. The actions they decide carry the same ids, and the outbox holds each once. */
static void test_reprocessing_keeps_ids(void **state)
{
    (void)state;
    const char *path = "crash";
    static const char *const users[] = {"a", "b", "c", "d", "e", "f"};
    tu_run a;
    open_with_store(&a, path, 0);
    char t[64], id[16];
    for (int i = 0; i < 6; i++) {
        snprintf(t, sizeof t, "2026-03-01T10:0%d:00Z", i);
        snprintf(id, sizeof id, "m%d", i);
        ev(&a, users[i], "Signed Up", t, id);
        if (i == 2)
            tu_checkpoint(&a, 3);
    }
    tu_advance(&a, "2026-03-01T13:00:00Z"); /* the nudges too, not checkpointed */
    assert_int_equal(a.nactions, 12);
    char decided[12][33];
    for (size_t i = 0; i < a.nactions; i++)
        action_id(a.actions[i], decided[i]);
    tu_free(&a); /* the crash: nothing after record 3 was checkpointed */

    tu_run b;
    open_with_store(&b, path, 0);
    assert_int_equal(jd_engine_store_position(b.e), 3);
    for (int i = 3; i < 6; i++) {
        snprintf(t, sizeof t, "2026-03-01T10:0%d:00Z", i);
        snprintf(id, sizeof id, "m%d", i);
        ev(&b, users[i], "Signed Up", t, id);
    }
    tu_advance(&b, "2026-03-01T13:00:00Z");
    assert_int_equal(b.nactions, 9); /* three welcomes again, six nudges */
    for (size_t i = 0; i < b.nactions; i++) {
        char got[33];
        action_id(b.actions[i], got);
        int found = 0;
        for (int k = 0; k < 12; k++)
            found |= strcmp(got, decided[k]) == 0;
        if (!found)
            fail_msg("re-processing decided a new id: %s", b.actions[i]);
    }
    tu_checkpoint(&b, 6);
    tu_free(&b);
    char ids[32][33];
    long n = outbox(path, ids, 32);
    assert_int_equal(n, 12);
    for (long i = 0; i < n; i++)
        for (long k = i + 1; k < n; k++)
            assert_string_not_equal(ids[i], ids[k]);
}

/* Timers far beyond the window stay on disk; the engine still knows when the next one
 * is due, and loads them as the clock gets there. */
static void test_near_window(void **state)
{
    (void)state;
    const char *path = "window";
    tu_run a;
    open_with_store(&a, path, 60000); /* a one-minute window */
    ev(&a, "w1", "Signed Up", "2026-03-01T10:00:00Z", "w1");
    ev(&a, "w2", "Signed Up", "2026-03-01T10:30:00Z", "w2");
    assert_int_equal(jd_engine_stat(a.e, "timers_pending"), 0); /* 2h out: on disk */
    int64_t due;
    assert_int_equal(jd_parse_time("2026-03-01T12:00:00Z", &due), 0);
    assert_int_equal(jd_engine_next_due(a.e), due);
    tu_checkpoint(&a, 2);
    tu_free(&a);

    tu_run b;
    open_with_store(&b, path, 60000);
    assert_int_equal(jd_engine_stat(b.e, "timers_pending"), 0);
    assert_int_equal(jd_engine_next_due(b.e), due);
    tu_advance(&b, "2026-03-01T12:00:00Z");
    EXPECT_NACTIONS(&b, 1);
    EXPECT_COUNT(&b, 1, "\"user\":\"w1\"", "nudge");
    tu_advance(&b, "2026-03-01T12:30:00Z");
    EXPECT_COUNT(&b, 1, "\"user\":\"w2\"", "nudge");
    EXPECT_NACTIONS(&b, 2);
    tu_free(&b);
}

/* An outbox row moved on by delivery keeps its status when the action is decided again. */
static void test_outbox_update(void **state)
{
    (void)state;
    const char *path = "update";
    tu_run a;
    open_with_store(&a, path, 0);
    ev(&a, "o1", "Signed Up", "2026-03-01T10:00:00Z", "o1");
    tu_checkpoint(&a, 1);
    char id[33];
    action_id(a.actions[0], id);
    tu_free(&a);
    char err[256], full[256];
    snprintf(full, sizeof full, "%s/%s", tu_dir, path);
    jd_store *st = jd_store_open(full, 0, 0, err, sizeof err);
    assert_non_null(st);
    assert_int_equal(jd_outbox_update(st, id, "delivered", 1, 0, NULL), 0);
    assert_int_equal(jd_outbox_update(st, "00000000000000000000000000000000", "dead", 1, 0, "x"), 1);
    jd_buf rows, keep;
    jd_buf_init(&rows);
    jd_buf_init(&keep);
    assert_int_equal(jd_outbox_list(st, "delivered", &rows, &keep), 1);
    jd_outbox_row *r = (jd_outbox_row *)rows.data;
    assert_string_equal(r->id, id);
    assert_int_equal(r->attempts, 1);
    assert_non_null(strstr(r->action, "welcome"));
    jd_buf_free(&rows);
    jd_buf_free(&keep);
    jd_store_close(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_state_comes_back),
        cmocka_unit_test(test_seen_rows),
        cmocka_unit_test(test_timer_repeat_is_dropped),
        cmocka_unit_test(test_reprocessing_keeps_ids),
        cmocka_unit_test(test_near_window),
        cmocka_unit_test(test_outbox_update),
        cmocka_unit_test(test_outbox_from_before),
    };
    return cmocka_run_group_tests_name("store", tests, tu_group_setup, tu_group_teardown);
}
