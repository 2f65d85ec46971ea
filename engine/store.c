#define _POSIX_C_SOURCE 200809L
#include "store.h"

#include <errno.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/stat.h>

#include "buf.h"
#include "zrow.h"

static const char *const db_names[JD_DB_N] = {"meta", "users", "aliases", "timers", "outbox", "dedupe", "outbox_ids"};

struct jd_store {
    MDB_env *env;
    MDB_dbi dbi[JD_DB_N];
    int absent[JD_DB_N]; /* read-only, and an older journeyd made no such database */
    MDB_txn *wtxn;       /* the open write transaction, or NULL */
    pthread_t wowner;    /* the thread that opened it: only its reads see it */
    MDB_txn *rtxn;       /* a reset read transaction, renewed per read */
    int rtxn_live;
    jd_zrow *z;       /* people and outbox rows are packed (zrow.h) */
    uint64_t damaged; /* rows scans skipped because they could not be unpacked */
    int no_pack;      /* rows are written as they come (jd_store_set_packing) */
    uint32_t zid_max; /* the highest dictionary id in the store */
    jd_buf zdict;     /* a dictionary trained for the commit */
    char path[4096];
    char err[256];
};

static int fail(jd_store *s, const char *what, int rc)
{
    snprintf(s->err, sizeof s->err, "store: %s: %s", what, mdb_strerror(rc));
    return -1;
}

/* ---------------------------------------------------------------- packed rows
 * People and outbox rows are packed with zrow; its dictionaries are meta rows
 * "zdict" + u32 BE id -> kind (the database), the dictionary. */
static const char ZDICT_KEY[] = "zdict";
enum { ZDICT_KEYLEN = sizeof ZDICT_KEY - 1 + 4 };

static int packs(int db)
{
    return db == JD_DB_USERS || db == JD_DB_OUTBOX;
}

void jd_store_set_packing(jd_store *s, int on)
{
    s->no_pack = !on;
}

static void zdict_key(unsigned char k[ZDICT_KEYLEN], uint32_t id)
{
    memcpy(k, ZDICT_KEY, sizeof ZDICT_KEY - 1);
    jd_be32_put(k + sizeof ZDICT_KEY - 1, id);
}

/* Every dictionary in the store (pack: the newest of each kind packs this handle's rows). */
static int load_dicts(jd_store *s, MDB_txn *t, int pack)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(t, s->dbi[JD_DB_META], &c);
    if (rc)
        return rc;
    unsigned char from[ZDICT_KEYLEN];
    zdict_key(from, 0);
    MDB_val key = {sizeof from, from}, val;
    for (rc = mdb_cursor_get(c, &key, &val, MDB_SET_RANGE); !rc; rc = mdb_cursor_get(c, &key, &val, MDB_NEXT)) {
        if (key.mv_size != ZDICT_KEYLEN || memcmp(key.mv_data, ZDICT_KEY, sizeof ZDICT_KEY - 1))
            break;
        uint32_t id = jd_be32_get((const unsigned char *)key.mv_data + sizeof ZDICT_KEY - 1);
        const unsigned char *v = val.mv_data;
        if (id > s->zid_max) /* (an id is never used again, even one that does not load) */
            s->zid_max = id;
        if (val.mv_size > 1)
            jd_zrow_add_dict(s->z, id, v[0], v + 1, val.mv_size - 1, pack);
    }
    mdb_cursor_close(c);
    return rc == MDB_NOTFOUND || rc == 0 ? 0 : rc;
}

/* A value read from db as the caller sees it: packed rows unpacked (into a buffer of the
 * reading thread's role). 0, or -1 with the error set. */
static int unpacked(jd_store *s, MDB_txn *t, int db, MDB_val *val)
{
    uint32_t id;
    if (!packs(db) || !jd_zrow_packed(val->mv_data, val->mv_size, &id))
        return 0;
    int role = t == s->wtxn;
    const void *out;
    size_t outn;
    int rc = jd_zrow_unpack(s->z, role, val->mv_data, val->mv_size, &out, &outn);
    if (rc == 1) { /* a dictionary another process added since this one loaded them */
        unsigned char k[ZDICT_KEYLEN];
        zdict_key(k, id);
        MDB_val key = {sizeof k, k}, dv;
        if (mdb_get(t, s->dbi[JD_DB_META], &key, &dv) == 0 && dv.mv_size > 1)
            jd_zrow_add_dict(s->z, id, ((const unsigned char *)dv.mv_data)[0], (const char *)dv.mv_data + 1,
                             dv.mv_size - 1, 0);
        rc = jd_zrow_unpack(s->z, role, val->mv_data, val->mv_size, &out, &outn);
    }
    if (rc) {
        snprintf(s->err, sizeof s->err, "store: %s: a packed row is damaged or its dictionary %u is missing",
                 db_names[db], (unsigned)id);
        return -1;
    }
    val->mv_data = (void *)out;
    val->mv_size = outn;
    return 0;
}

/* The value to write for db: packed when that makes it smaller. */
static MDB_val packed(jd_store *s, int db, const void *v, size_t vn)
{
    MDB_val val = {vn, (void *)v};
    const void *out;
    size_t outn;
    if (!s->no_pack && packs(db) && jd_zrow_pack(s->z, db, v, vn, &out, &outn) == 0) {
        val.mv_data = (void *)out;
        val.mv_size = outn;
    }
    return val;
}

/* Before a commit: a dictionary trained from the rows written so far goes into the same
 * transaction; it packs rows from the next transaction on. */
static int train_dicts(jd_store *s, uint32_t *id, int *kind)
{
    *id = 0;
    for (int db = 0; db < JD_DB_N; db++) {
        if (!packs(db) || !jd_zrow_train(s->z, db, &s->zdict))
            continue;
        unsigned char k[ZDICT_KEYLEN];
        *id = s->zid_max + 1;
        *kind = db;
        zdict_key(k, *id);
        MDB_val key = {sizeof k, k}, val;
        val.mv_size = 1 + s->zdict.len;
        int rc = mdb_put(s->wtxn, s->dbi[JD_DB_META], &key, &val, MDB_RESERVE | MDB_NOOVERWRITE);
        if (rc)
            return fail(s, "meta", rc);
        ((unsigned char *)val.mv_data)[0] = (unsigned char)db;
        memcpy((unsigned char *)val.mv_data + 1, s->zdict.data, s->zdict.len);
        return 0; /* one a commit */
    }
    return 0;
}

jd_store *jd_store_open(const char *dir, size_t map_bytes, int readonly, char *err, size_t errlen)
{
    if (!readonly && mkdir(dir, 0755) && errno != EEXIST) {
        snprintf(err, errlen, "%s: cannot create the store directory: %s", dir, strerror(errno));
        return NULL;
    }
    jd_store *s = jd_xcalloc(1, sizeof *s);
    snprintf(s->path, sizeof s->path, "%s/data.mdb", dir);
    int rc = mdb_env_create(&s->env);
    if (!rc)
        rc = mdb_env_set_maxdbs(s->env, JD_DB_N);
    if (!rc)
        rc = mdb_env_set_mapsize(s->env, map_bytes ? map_bytes : (size_t)64 << 30);
    /* MDB_NOTLS: read transactions are not tied to a thread slot (they are reset and
     * renewed around each read) */
    if (!rc)
        rc = mdb_env_open(s->env, dir, MDB_NOTLS | (readonly ? MDB_RDONLY : 0), 0644);
    if (rc) {
        snprintf(err, errlen, "%s: cannot open the store: %s", dir, mdb_strerror(rc));
        if (s->env)
            mdb_env_close(s->env);
        free(s);
        return NULL;
    }
    MDB_txn *t;
    rc = mdb_txn_begin(s->env, NULL, readonly ? MDB_RDONLY : 0, &t);
    for (int i = 0; !rc && i < JD_DB_N; i++) {
        rc = mdb_dbi_open(t, db_names[i], readonly ? 0 : MDB_CREATE, &s->dbi[i]);
        if (rc == MDB_NOTFOUND && readonly && i != JD_DB_META) {
            s->absent[i] = 1; /* reads of it find nothing */
            rc = 0;
        }
    }
    s->z = jd_zrow_new();
    jd_buf_init(&s->zdict);
    if (!rc)
        rc = load_dicts(s, t, !readonly);
    if (!rc) /* committed even when read-only: an aborted transaction closes its handles */
        rc = mdb_txn_commit(t);
    else
        mdb_txn_abort(t);
    if (rc) {
        snprintf(err, errlen, "%s: cannot open the store's databases: %s", dir,
                 rc == MDB_NOTFOUND ? "no store here yet" : mdb_strerror(rc));
        mdb_env_close(s->env);
        jd_zrow_free(s->z);
        jd_buf_free(&s->zdict);
        free(s);
        return NULL;
    }
    return s;
}

void jd_store_close(jd_store *s)
{
    if (!s)
        return;
    if (s->wtxn)
        mdb_txn_abort(s->wtxn);
    if (s->rtxn)
        mdb_txn_abort(s->rtxn);
    mdb_env_close(s->env);
    jd_zrow_free(s->z);
    jd_buf_free(&s->zdict);
    free(s);
}

int jd_store_begin(jd_store *s)
{
    if (s->wtxn)
        return 0;
    MDB_txn *t;
    int rc = mdb_txn_begin(s->env, NULL, 0, &t);
    if (rc)
        return fail(s, "begin", rc);
    s->wowner = pthread_self();
    __atomic_store_n(&s->wtxn, t, __ATOMIC_RELEASE); /* after wowner: a reader sees both */
    return 0;
}

int jd_store_put(jd_store *s, int db, const void *k, size_t kn, const void *v, size_t vn, int no_overwrite)
{
    MDB_val key = {kn, (void *)k}, val = packed(s, db, v, vn);
    int rc = mdb_put(s->wtxn, s->dbi[db], &key, &val, no_overwrite ? MDB_NOOVERWRITE : 0);
    if (rc == MDB_KEYEXIST)
        return 0;
    return rc ? fail(s, db_names[db], rc) : 0;
}

int jd_store_put_new(jd_store *s, int db, const void *k, size_t kn, const void *v, size_t vn)
{
    MDB_val key = {kn, (void *)k}, val = packed(s, db, v, vn);
    int rc = mdb_put(s->wtxn, s->dbi[db], &key, &val, MDB_NOOVERWRITE);
    if (rc == MDB_KEYEXIST)
        return 1;
    return rc ? fail(s, db_names[db], rc) : 0;
}

int jd_store_append(jd_store *s, int db, const void *k, size_t kn, const void *v, size_t vn)
{
    MDB_val key = {kn, (void *)k}, val = packed(s, db, v, vn);
    int rc = mdb_put(s->wtxn, s->dbi[db], &key, &val, MDB_APPEND);
    if (rc == MDB_KEYEXIST) /* not above the last key: added where it goes, never over one */
        rc = mdb_put(s->wtxn, s->dbi[db], &key, &val, MDB_NOOVERWRITE);
    return rc ? fail(s, db_names[db], rc) : 0;
}

int jd_store_del(jd_store *s, int db, const void *k, size_t kn)
{
    MDB_val key = {kn, (void *)k};
    int rc = mdb_del(s->wtxn, s->dbi[db], &key, NULL);
    if (rc == MDB_NOTFOUND)
        return 0;
    return rc ? fail(s, db_names[db], rc) : 0;
}

int jd_store_commit(jd_store *s)
{
    if (!s->wtxn)
        return 0;
    uint32_t zid;
    int zkind = 0;
    if (train_dicts(s, &zid, &zkind))
        return -1; /* the caller aborts */
    MDB_txn *t = s->wtxn;
    __atomic_store_n(&s->wtxn, NULL, __ATOMIC_RELEASE);
    int rc = mdb_txn_commit(t);
    if (rc)
        return fail(s, "commit", rc);
    if (zid) {
        s->zid_max = zid;
        jd_zrow_add_dict(s->z, zid, zkind, s->zdict.data, s->zdict.len, 1);
    }
    return 0;
}

void jd_store_abort(jd_store *s)
{
    MDB_txn *t = s->wtxn;
    __atomic_store_n(&s->wtxn, NULL, __ATOMIC_RELEASE);
    if (t)
        mdb_txn_abort(t);
}

const char *jd_store_error(const jd_store *s)
{
    return s->err;
}

/* The transaction a read runs in: the write one in the thread writing, else a fresh view
 * of the last commit (the processor reads while a checkpoint is written elsewhere). */
static MDB_txn *read_txn(jd_store *s)
{
    MDB_txn *w = __atomic_load_n(&s->wtxn, __ATOMIC_ACQUIRE);
    if (w && pthread_equal(s->wowner, pthread_self()))
        return w;
    if (s->rtxn_live) {
        mdb_txn_reset(s->rtxn);
        s->rtxn_live = 0;
    }
    int rc = s->rtxn ? mdb_txn_renew(s->rtxn) : mdb_txn_begin(s->env, NULL, MDB_RDONLY, &s->rtxn);
    if (rc) {
        fail(s, "read", rc);
        return NULL;
    }
    s->rtxn_live = 1;
    return s->rtxn;
}

int jd_store_get(jd_store *s, int db, const void *k, size_t kn, const void **v, size_t *vn)
{
    MDB_txn *t = read_txn(s);
    if (!t)
        return -1;
    if (s->absent[db])
        return 1;
    MDB_val key = {kn, (void *)k}, val;
    int rc = mdb_get(t, s->dbi[db], &key, &val);
    if (rc == MDB_NOTFOUND)
        return 1;
    if (rc)
        return fail(s, db_names[db], rc);
    if (unpacked(s, t, db, &val))
        return -1;
    *v = val.mv_data;
    *vn = val.mv_size;
    return 0;
}

int jd_store_scan(jd_store *s, int db, const void *from, size_t fromn, jd_store_visit_fn fn, void *ud)
{
    MDB_txn *t = read_txn(s);
    if (!t)
        return -1;
    if (s->absent[db])
        return 0;
    MDB_cursor *c;
    int rc = mdb_cursor_open(t, s->dbi[db], &c);
    if (rc)
        return fail(s, db_names[db], rc);
    MDB_val key = {fromn, (void *)from}, val;
    rc = mdb_cursor_get(c, &key, &val, from ? MDB_SET_RANGE : MDB_FIRST);
    int r = 0;
    while (rc == 0) {
        if (unpacked(s, t, db, &val)) { /* a damaged row: the others still count (error set) */
            s->damaged++;
            rc = mdb_cursor_get(c, &key, &val, MDB_NEXT);
            continue;
        }
        r = fn(key.mv_data, key.mv_size, val.mv_data, val.mv_size, ud);
        if (r)
            break;
        rc = mdb_cursor_get(c, &key, &val, MDB_NEXT);
    }
    mdb_cursor_close(c);
    if (r)
        return r;
    return rc == MDB_NOTFOUND ? 0 : fail(s, db_names[db], rc);
}

uint64_t jd_store_damaged(const jd_store *s)
{
    return s->damaged;
}

uint64_t jd_store_count(jd_store *s, int db)
{
    MDB_txn *t = read_txn(s);
    MDB_stat st;
    if (!t || s->absent[db] || mdb_stat(t, s->dbi[db], &st))
        return 0;
    return st.ms_entries;
}

uint64_t jd_store_db_bytes(jd_store *s, int db)
{
    MDB_txn *t = read_txn(s);
    MDB_stat st;
    if (!t || s->absent[db] || mdb_stat(t, s->dbi[db], &st))
        return 0;
    return (uint64_t)st.ms_psize * (st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages);
}

uint64_t jd_store_disk_bytes(const jd_store *s)
{
    struct stat st;
    return stat(s->path, &st) ? 0 : (uint64_t)st.st_blocks * 512;
}

void jd_be64_put(unsigned char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (unsigned char)(v & 0xff);
        v >>= 8;
    }
}

uint64_t jd_be64_get(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}
