/* durable: acknowledged means durable, for `journeyd serve`. Records are appended to the
 * event log; the log's writer thread commits them in groups and wakes the loop; the loop
 * then processes the durable records in log order and runs the waiters (HTTP answers,
 * stream acks) whose last record is durable. At start the log is replayed into the engine,
 * so a restart resumes exactly where the last durable record left it.
 * Uses log, serve, the engine API, libevent. */
#ifndef JD_DURABLE_H
#define JD_DURABLE_H

#include <stddef.h>
#include <stdint.h>

#include "log.h"

struct jd_server;

/* Called once the records up to the waited LSN are durable and processed. */
typedef void (*jd_durable_fn)(void *ctx);

/* Opens the event log (LOG_DIR, or DATA_DIR/log when NULL), checks that it is the log the
 * store in DATA_DIR was checkpointed from, replays it into the engine (actions of replayed
 * records are not logged again), starts the writer. 0, or -1 with err. */
int jd_durable_open(struct jd_server *s, const char *data_dir, const char *log_dir, char *err, size_t errlen);
/* After every shard's jd_durable_open passed: the store names its event log (an empty new
 * log directory gets its id). 0, or -1 with err. */
int jd_durable_pair(struct jd_server *s, char *err, size_t errlen);
/* Queues a record. -1 when the log cannot write (disk full): the caller answers 503. */
int jd_durable_append(struct jd_server *s, const void *rec, size_t len, uint64_t *lsn);
/* Queues n records (their payload CRCs computed by the caller, jd_log_payload_crc)
 * under one lock of the log: consecutive LSNs from *first_lsn. All or nothing. */
int jd_durable_append_batch(struct jd_server *s, const jd_log_rec *recs, size_t n, uint64_t *first_lsn);
/* Runs fn(ctx) once lsn is durable and processed (at once when it already is). */
void jd_durable_wait(struct jd_server *s, uint64_t lsn, jd_durable_fn fn, void *ctx);
/* Appends a tick record for wall time t unless one is already on its way. */
void jd_durable_tick(struct jd_server *s, int64_t t);
/* "" or why the log cannot write. */
const char *jd_durable_error(struct jd_server *s, char *out, size_t n);
/* State changed outside the log (a delivery outcome): the next periodic checkpoint
 * writes it even when no record came in. */
void jd_durable_changed(struct jd_server *s);
/* Checkpoints the engine's state into the store now (after a reload). */
void jd_durable_checkpoint(struct jd_server *s);
/* Commits what is queued, processes it, and closes the log. */
void jd_durable_close(struct jd_server *s);

#endif
