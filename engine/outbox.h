/* outbox: the decided actions in the store, each with its stable id, with where its
 * delivery stands (pending, retrying, delivered, dead). Rows are keyed by their sequence
 * number (decision order: a checkpoint's rows go at the end of the tree), and an index
 * (JD_DB_OUTBOX_IDS) maps each id to it; stores from before keyed rows by id, and those
 * are still read and updated where they are. The processor adds rows in its checkpoint
 * (checkpoint.c); delivery updates them here. Uses store, msgpack-c. */
#ifndef JD_OUTBOX_H
#define JD_OUTBOX_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "store.h"

typedef struct jd_outbox_row {
    char id[33];
    uint64_t seq;       /* decision order */
    const char *status; /* "pending", "retrying", "delivered", "dead" */
    size_t status_len;
    uint32_t attempts;
    int64_t next;       /* when the next attempt may go (ms) */
    const char *action; /* the action as JSON */
    size_t action_len;
    const char *error; /* the last failure, or NULL */
    size_t error_len;
} jd_outbox_row;

/* Decodes a stored row; 0 or -1. Pointers are into v. */
int jd_outbox_decode(const void *k, size_t kn, const void *v, size_t vn, jd_outbox_row *row);
/* Encodes a row (its id included). */
void jd_outbox_encode(const jd_outbox_row *row, jd_buf *out);
void jd_outbox_key(unsigned char key[16], const char *hex_id);

/* Every row (status NULL) or those with a status, in decision order, appended to out as
 * rows of the struct above (pointers into a copy kept in *keep). Returns the count, -1 on
 * error. Free keep with jd_buf_free. */
long jd_outbox_list(jd_store *st, const char *status, jd_buf *rows, jd_buf *keep);

/* Adds the row of a newly decided action (in a write transaction; id: jd_outbox_key's
 * bytes): 0, or -1 on error. An id already there keeps its row; with legacy set, that
 * includes a row from before keyed by the id (jd_outbox_legacy: whether there are any,
 * asked once per batch). */
int jd_outbox_add(jd_store *st, const unsigned char id[16], uint64_t seq, const void *row, size_t n, int legacy);
int jd_outbox_legacy(jd_store *st);
/* The row of an id: 0, 1 when there is none, -1 on error. Pointers into the store: valid
 * until its next call. */
int jd_outbox_get(jd_store *st, const char *id, jd_outbox_row *row);

/* Sets a row's status, attempts, next attempt time and last error, in its own
 * transaction. 0, 1 when there is no such row, -1 on error. */
int jd_outbox_update(jd_store *st, const char *id, const char *status, uint32_t attempts, int64_t next,
                     const char *error);

/* The same inside the open write transaction. */
int jd_outbox_set(jd_store *st, const char *id, const char *status, uint32_t attempts, int64_t next, const char *error);

/* `journeyd outbox DATA_DIR [--status S]`: the rows as JSON lines. */
int jd_cmd_outbox(int argc, char **argv);

/* The k-th store under a data directory: DATA_DIR/shard-K/store, or DATA_DIR/store when
 * it holds one shard (k = 0). 0, or -1 when there is no k-th. */
int jd_data_store_dir(const char *data_dir, int k, char *out, size_t n);

#endif
