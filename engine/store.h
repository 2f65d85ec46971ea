/* store: the embedded store — an LMDB environment in DATA_DIR/store with one named
 * database per kind of state (meta, users, aliases, timers, outbox, dedupe). The engine
 * writes a checkpoint into it in one write transaction; readers on the same thread see
 * the last committed checkpoint. Uses LMDB. One thread writes (begin .. commit) while one
 * other thread reads: a reader never sees the open write transaction of another thread. */
#ifndef JD_STORE_H
#define JD_STORE_H

#include <stddef.h>
#include <stdint.h>

typedef struct jd_store jd_store;

enum { JD_DB_META, JD_DB_USERS, JD_DB_ALIASES, JD_DB_TIMERS, JD_DB_OUTBOX, JD_DB_DEDUPE, JD_DB_OUTBOX_IDS, JD_DB_N };

/* Opens (creating) the store in dir. map_bytes: the largest the store may grow (0: 64
 * GiB; the file is sparse). readonly: another process may be writing (the CLI); a
 * database an older journeyd did not create reads as empty. NULL with err on failure. */
jd_store *jd_store_open(const char *dir, size_t map_bytes, int readonly, char *err, size_t errlen);
void jd_store_close(jd_store *s);

/* One write transaction at a time. put/del return 0 or -1 (err via jd_store_error). */
int jd_store_begin(jd_store *s);
/* no_overwrite: keep an existing value (returns 0 either way). */
int jd_store_put(jd_store *s, int db, const void *k, size_t kn, const void *v, size_t vn, int no_overwrite);
/* Adds a key that is not there: 0, 1 when it is (its value kept), -1 on error. */
int jd_store_put_new(jd_store *s, int db, const void *k, size_t kn, const void *v, size_t vn);
/* A put for a key above every key in db (LMDB fills pages to the end instead of splitting
 * them in half); any other key is added where it goes, and one already there is an error
 * (-1), never overwritten. */
int jd_store_append(jd_store *s, int db, const void *k, size_t kn, const void *v, size_t vn);
int jd_store_del(jd_store *s, int db, const void *k, size_t kn); /* absent: 0 */
int jd_store_commit(jd_store *s);
void jd_store_abort(jd_store *s);
const char *jd_store_error(const jd_store *s);

/* Reads see the open write transaction, else the last commit. The value is valid until
 * the next call on the store. 0 found, 1 absent, -1 error. */
int jd_store_get(jd_store *s, int db, const void *k, size_t kn, const void **v, size_t *vn);

/* Calls fn for each entry with key >= from (all when from is NULL), in key order, until
 * fn returns non-zero (that value is returned). 0 at the end, -1 on error. The pointers
 * are valid during the call only; fn must not call the store. */
typedef int (*jd_store_visit_fn)(const void *k, size_t kn, const void *v, size_t vn, void *ud);
int jd_store_scan(jd_store *s, int db, const void *from, size_t fromn, jd_store_visit_fn fn, void *ud);

/* Whether people and outbox rows are written packed (zrow.h; on by default). Packed rows
 * are read either way. */
void jd_store_set_packing(jd_store *s, int on);

/* Rows scans have skipped because they were damaged (a packed row that does not unpack:
 * jd_store_error says which). */
uint64_t jd_store_damaged(const jd_store *s);

/* Entries in db (last commit). */
uint64_t jd_store_count(jd_store *s, int db);
/* Bytes of pages a database uses (last commit). */
uint64_t jd_store_db_bytes(jd_store *s, int db);
/* Bytes the store file takes on disk. */
uint64_t jd_store_disk_bytes(const jd_store *s);

/* The store an engine checkpoints into (checkpoint.c), or NULL. */
struct jd_engine;
jd_store *jd_engine_store(const struct jd_engine *e);

/* Big-endian helpers for ordered keys. */
void jd_be64_put(unsigned char *p, uint64_t v);
uint64_t jd_be64_get(const unsigned char *p);

#endif
