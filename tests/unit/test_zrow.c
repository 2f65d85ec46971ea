#define _GNU_SOURCE
/* Packed store rows (zrow.c, store.c): rows come back byte for byte, with and without a
 * dictionary; the store trains one from its own rows and keeps it in meta; a handle opened
 * before the dictionary existed loads it when a row names it; rows from before (msgpack)
 * read as they are; a damaged row is an error, never a wrong value. */
#include "testutil.h"

#include <lmdb.h>

#include "buf.h"
#include "store.h"
#include "zrow.h"

/* A people-like row: msgpack-ish bytes with repeated names and varying fields. */
static size_t row(char *b, size_t cap, int i)
{
    return (size_t)snprintf(b, cap,
                            "\x97\x86\xa5"
                            "email\xb9user%d@example.com\xa4plan\xa5trial\xa4role\xa3"
                            "cto"
                            "\x9c\xb0trial_onboarding\xa9signed_up\xac"
                            "on Signed Up %d"
                            "\xb0trial_onboarding\xa7"
                            "dormant\xd9"
                            "8signed_up -> dormant after %dd",
                            i, i * 7919 % 1000, i % 9);
}

static void test_pack_round_trip(void **state)
{
    (void)state;
    jd_zrow *z = jd_zrow_new();
    char b[512];
    size_t n = row(b, sizeof b, 1);
    const void *out;
    size_t outn;
    uint32_t id = 99;
    /* no dictionary yet: plain zstd, when that is smaller */
    char big[4096];
    size_t bn = 0;
    while (bn + n < sizeof big) {
        memcpy(big + bn, b, n);
        bn += n;
    }
    assert_int_equal(jd_zrow_pack(z, JD_DB_USERS, big, bn, &out, &outn), 0);
    assert_true(outn < bn);
    assert_true(jd_zrow_packed(out, outn, &id));
    assert_int_equal(id, 0);
    jd_buf copy;
    jd_buf_init(&copy);
    jd_buf_append(&copy, out, outn);
    const void *plain;
    size_t plainn;
    assert_int_equal(jd_zrow_unpack(z, 0, copy.data, copy.len, &plain, &plainn), 0);
    assert_int_equal(plainn, bn);
    assert_memory_equal(plain, big, bn);
    /* too small to gain: stays as it is */
    assert_int_equal(jd_zrow_pack(z, JD_DB_USERS, "\x97\xc4\x00", 3, &out, &outn), 1);
    assert_int_equal(outn, 3);
    jd_buf_free(&copy);
    jd_zrow_free(z);
}

static void test_dictionary(void **state)
{
    (void)state;
    jd_zrow *w = jd_zrow_new(), *r = jd_zrow_new();
    char b[512];
    const void *out;
    size_t outn, plain_size = 0;
    jd_buf dict;
    jd_buf_init(&dict);
    int trained = 0;
    for (int i = 0; i < 20000 && !trained; i++) {
        size_t n = row(b, sizeof b, i);
        jd_zrow_pack(w, JD_DB_USERS, b, n, &out, &outn);
        plain_size = outn;
        trained = jd_zrow_train(w, JD_DB_USERS, &dict);
    }
    assert_true(trained);
    assert_true(dict.len > 0);
    assert_int_equal(jd_zrow_add_dict(w, 7, JD_DB_USERS, dict.data, dict.len, 1), 0);
    size_t n = row(b, sizeof b, 123456);
    assert_int_equal(jd_zrow_pack(w, JD_DB_USERS, b, n, &out, &outn), 0);
    uint32_t id;
    assert_true(jd_zrow_packed(out, outn, &id));
    assert_int_equal(id, 7);
    assert_true(outn < plain_size); /* the dictionary pays */
    jd_buf packed;
    jd_buf_init(&packed);
    jd_buf_append(&packed, out, outn);
    /* another handle without it: told so, then reads once it has it */
    const void *plain;
    size_t plainn;
    assert_int_equal(jd_zrow_unpack(r, 1, packed.data, packed.len, &plain, &plainn), 1);
    assert_int_equal(jd_zrow_add_dict(r, 7, JD_DB_USERS, dict.data, dict.len, 0), 0);
    assert_int_equal(jd_zrow_unpack(r, 1, packed.data, packed.len, &plain, &plainn), 0);
    assert_int_equal(plainn, n);
    assert_memory_equal(plain, b, n);
    /* a flipped byte in the frame: an error, not a wrong row */
    packed.data[packed.len / 2] ^= 0x55;
    packed.data[packed.len - 1] ^= 0x55;
    assert_int_equal(jd_zrow_unpack(r, 1, packed.data, packed.len, &plain, &plainn), -1);
    jd_buf_free(&packed);
    jd_buf_free(&dict);
    jd_zrow_free(w);
    jd_zrow_free(r);
}

static void put_rows(jd_store *st, int from, int to)
{
    char k[32], b[512];
    assert_int_equal(jd_store_begin(st), 0);
    for (int i = from; i < to; i++) {
        size_t kn = (size_t)snprintf(k, sizeof k, "user-%06d", i);
        assert_int_equal(jd_store_put(st, JD_DB_USERS, k, kn, b, row(b, sizeof b, i), 0), 0);
    }
    assert_int_equal(jd_store_commit(st), 0);
}

static void check_rows(jd_store *st, int from, int to)
{
    char k[32], b[512];
    for (int i = from; i < to; i++) {
        size_t kn = (size_t)snprintf(k, sizeof k, "user-%06d", i);
        const void *v;
        size_t vn, n = row(b, sizeof b, i);
        assert_int_equal(jd_store_get(st, JD_DB_USERS, k, kn, &v, &vn), 0);
        assert_int_equal(vn, n);
        assert_memory_equal(v, b, n);
    }
}

/* The first byte and dictionary id of a row as it is on disk. */
static int raw_row(const char *dir, const char *key, unsigned char *first, uint32_t *id)
{
    MDB_env *env;
    MDB_txn *t;
    MDB_dbi dbi;
    MDB_val k = {strlen(key), (void *)key}, v;
    mdb_env_create(&env);
    mdb_env_set_maxdbs(env, 16);
    int rc = mdb_env_open(env, dir, MDB_RDONLY, 0644);
    if (!rc)
        rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &t);
    if (!rc) {
        rc = mdb_dbi_open(t, "users", 0, &dbi);
        if (!rc)
            rc = mdb_get(t, dbi, &k, &v);
        if (!rc) {
            *first = ((unsigned char *)v.mv_data)[0];
            *id = 0;
            jd_zrow_packed(v.mv_data, v.mv_size, id);
        }
        mdb_txn_abort(t);
    }
    mdb_env_close(env);
    return rc;
}

static void test_store_trains_and_reads(void **state)
{
    (void)state;
    char dir[256], err[256];
    snprintf(dir, sizeof dir, "%s/packed", tu_dir);
    /* (raw_row opens the environment again: only with every store handle closed, as LMDB
     * allows one handle of an environment per process at a time) */
    jd_store *st = jd_store_open(dir, 0, 0, err, sizeof err);
    assert_non_null(st);
    jd_store *ro = jd_store_open(dir, 0, 1, err, sizeof err); /* before any dictionary */
    assert_non_null(ro);
    put_rows(st, 0, 6000); /* enough to train on: the dictionary is in this commit */
    put_rows(st, 6000, 7000);
    check_rows(st, 0, 7000);
    check_rows(ro, 0, 7000); /* loads the dictionary when a row names it */
    jd_store_close(ro);
    jd_store_close(st);
    unsigned char first = 0;
    uint32_t id = 0;
    assert_int_equal(raw_row(dir, "user-006500", &first, &id), 0);
    assert_int_equal(first, JD_ZROW_MARK);
    assert_int_equal(id, 1);
    assert_int_equal(raw_row(dir, "user-000001", &first, &id), 0);
    assert_int_equal(id, 0); /* written before the dictionary: plain zstd */
    /* a fresh handle reads the dictionary at open and packs with it */
    st = jd_store_open(dir, 0, 0, err, sizeof err);
    assert_non_null(st);
    put_rows(st, 0, 10);
    check_rows(st, 0, 7000);
    jd_store_close(st);
    assert_int_equal(raw_row(dir, "user-000001", &first, &id), 0);
    assert_int_equal(id, 1);
    /* packing off (j.config pack_rows = false): new rows as they come, packed ones still read */
    st = jd_store_open(dir, 0, 0, err, sizeof err);
    assert_non_null(st);
    jd_store_set_packing(st, 0);
    put_rows(st, 0, 10);
    check_rows(st, 0, 7000);
    jd_store_close(st);
    assert_int_equal(raw_row(dir, "user-000001", &first, &id), 0);
    assert_int_equal(first, 0x97);
}

static int count_row(const void *k, size_t kn, const void *v, size_t vn, void *ud)
{
    (void)k;
    (void)kn;
    (void)v;
    (void)vn;
    ++*(int *)ud;
    return 0;
}

/* Rows as an older journeyd wrote them (msgpack), and a damaged packed row. */
static void test_store_old_and_damaged(void **state)
{
    (void)state;
    char dir[256], err[256];
    snprintf(dir, sizeof dir, "%s/old", tu_dir);
    jd_store *st = jd_store_open(dir, 0, 0, err, sizeof err);
    assert_non_null(st);
    jd_store_close(st);
    MDB_env *env;
    MDB_txn *t;
    MDB_dbi dbi;
    mdb_env_create(&env);
    mdb_env_set_maxdbs(env, 16);
    assert_int_equal(mdb_env_open(env, dir, 0, 0644), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &t), 0);
    assert_int_equal(mdb_dbi_open(t, "users", 0, &dbi), 0);
    char b[512];
    size_t n = row(b, sizeof b, 5);
    MDB_val k = {6, (void *)"old-05"}, v = {n, b};
    assert_int_equal(mdb_put(t, dbi, &k, &v, 0), 0);
    unsigned char bad[40] = {JD_ZROW_MARK, 0, 0, 0, 0, 1, 2, 3, 4, 0x28, 0xb5, 0x2f, 0xfd, 0x20, 0x40};
    MDB_val k2 = {3, (void *)"bad"}, v2 = {sizeof bad, bad};
    assert_int_equal(mdb_put(t, dbi, &k2, &v2, 0), 0);
    assert_int_equal(mdb_txn_commit(t), 0);
    mdb_env_close(env);

    st = jd_store_open(dir, 0, 1, err, sizeof err);
    assert_non_null(st);
    const void *got;
    size_t gn;
    assert_int_equal(jd_store_get(st, JD_DB_USERS, "old-05", 6, &got, &gn), 0);
    assert_int_equal(gn, n);
    assert_memory_equal(got, b, n);
    assert_int_equal(jd_store_get(st, JD_DB_USERS, "bad", 3, &got, &gn), -1);
    assert_non_null(strstr(jd_store_error(st), "damaged"));
    /* a scan skips it and counts it; the other rows still come */
    int seen = 0;
    assert_int_equal(jd_store_scan(st, JD_DB_USERS, NULL, 0, count_row, &seen), 0);
    assert_int_equal(seen, 1);
    assert_int_equal(jd_store_damaged(st), 1);
    jd_store_close(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pack_round_trip),
        cmocka_unit_test(test_dictionary),
        cmocka_unit_test(test_store_trains_and_reads),
        cmocka_unit_test(test_store_old_and_damaged),
    };
    return cmocka_run_group_tests_name("zrow", tests, tu_group_setup, tu_group_teardown);
}
