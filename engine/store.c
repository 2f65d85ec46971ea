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

static const char *const db_names[JD_DB_N] = {"meta", "users", "aliases", "timers", "outbox", "dedupe", "outbox_ids"};

struct jd_store {
    MDB_env *env;
    MDB_dbi dbi[JD_DB_N];
    int absent[JD_DB_N]; /* read-only, and an older journeyd made no such database */
    MDB_txn *wtxn;       /* the open write transaction, or NULL */
    pthread_t wowner;    /* the thread that opened it: only its reads see it */
    MDB_txn *rtxn;       /* a reset read transaction, renewed per read */
    int rtxn_live;
    char path[4096];
    char err[256];
};

static int fail(jd_store *s, const char *what, int rc)
{
    snprintf(s->err, sizeof s->err, "store: %s: %s", what, mdb_strerror(rc));
    return -1;
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
    if (!rc) /* committed even when read-only: an aborted transaction closes its handles */
        rc = mdb_txn_commit(t);
    else
        mdb_txn_abort(t);
    if (rc) {
        snprintf(err, errlen, "%s: cannot open the store's databases: %s", dir,
                 rc == MDB_NOTFOUND ? "no store here yet" : mdb_strerror(rc));
        mdb_env_close(s->env);
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
    MDB_val key = {kn, (void *)k}, val = {vn, (void *)v};
    int rc = mdb_put(s->wtxn, s->dbi[db], &key, &val, no_overwrite ? MDB_NOOVERWRITE : 0);
    if (rc == MDB_KEYEXIST)
        return 0;
    return rc ? fail(s, db_names[db], rc) : 0;
}

int jd_store_put_new(jd_store *s, int db, const void *k, size_t kn, const void *v, size_t vn)
{
    MDB_val key = {kn, (void *)k}, val = {vn, (void *)v};
    int rc = mdb_put(s->wtxn, s->dbi[db], &key, &val, MDB_NOOVERWRITE);
    if (rc == MDB_KEYEXIST)
        return 1;
    return rc ? fail(s, db_names[db], rc) : 0;
}

int jd_store_append(jd_store *s, int db, const void *k, size_t kn, const void *v, size_t vn)
{
    MDB_val key = {kn, (void *)k}, val = {vn, (void *)v};
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
    MDB_txn *t = s->wtxn;
    __atomic_store_n(&s->wtxn, NULL, __ATOMIC_RELEASE);
    int rc = mdb_txn_commit(t);
    return rc ? fail(s, "commit", rc) : 0;
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
