/* log: the event log — append-only segment files of checksummed records, made durable
 * by group commit (one write + fdatasync per group) on a writer thread.
 *
 * Record: u32 payload length, u32 CRC-32 of (payload, lsn), u64 lsn, payload; all
 * little-endian (records an older journeyd wrote, with a CRC of (lsn, payload), are read
 * too). LSNs start at 1 and are consecutive. Segments are named by their first LSN
 * ("00000000000000000001.log") and roll at a size limit. Opening scans the newest segment
 * and cuts a torn or corrupt tail at the first bad record (and says so).
 * Uses buf, zlib (crc32), pthreads. */
#ifndef JD_LOG_H
#define JD_LOG_H

#include <stddef.h>
#include <stdint.h>

typedef struct jd_log jd_log;

typedef struct jd_log_opts {
    size_t segment_bytes; /* roll after this much (default 64 MiB) */
    int no_sync;          /* tests only: skip fdatasync */
} jd_log_opts;

/* What opening found: how far the log goes and what was cut. */
typedef struct jd_log_info {
    uint64_t first_lsn, last_lsn; /* 0, 0 for an empty log */
    uint64_t cut_bytes;           /* bytes removed from a torn/corrupt tail */
    char cut_reason[256];         /* "" when nothing was cut */
    size_t segments;
} jd_log_info;

/* Opens (creating) the log in dir. NULL with err on failure. */
jd_log *jd_log_open(const char *dir, const jd_log_opts *opts, jd_log_info *info, char *err, size_t errlen);
/* Stops the writer (after writing what is pending) and frees. */
void jd_log_close(jd_log *l);
/* Stops the writer thread after it has written what is pending (jd_log_durable is then
 * final); jd_log_close still frees. Returns the last LSN handed out: equal to
 * jd_log_durable when every appended record is durable. */
uint64_t jd_log_stop(jd_log *l);

/* Starts the group-commit thread; after each group it writes 8 bytes to notify_fd (an
 * eventfd or pipe; -1 for none). Without it, jd_log_sync commits in the caller. */
int jd_log_start(jd_log *l, int notify_fd);

/* Queues a record; *lsn is its number. Returns -1 (and queues nothing) while the log is
 * failing to write (disk full, I/O error): jd_log_error says why. Thread-safe. */
int jd_log_append(jd_log *l, const void *rec, size_t len, uint64_t *lsn);
/* One record of a batch: its payload and the CRC-32 of the payload alone
 * (jd_log_payload_crc), which the caller may compute on another thread. */
typedef struct jd_log_rec {
    const void *data;
    size_t len;
    uint32_t crc;
} jd_log_rec;
uint32_t jd_log_payload_crc(const void *rec, size_t len);
/* Queues n records under one lock; they take consecutive LSNs from *first_lsn. All or
 * nothing: -1 (nothing queued) while the log is failing or a record is too big. */
int jd_log_append_batch(jd_log *l, const jd_log_rec *recs, size_t n, uint64_t *first_lsn);
/* The highest LSN known durable. Thread-safe. */
uint64_t jd_log_durable(jd_log *l);
/* Writes and syncs everything queued, in the caller's thread (no writer thread). */
int jd_log_sync(jd_log *l);
/* "" or the current write error ("No space left on device"). Thread-safe. */
const char *jd_log_error(jd_log *l, char *out, size_t n);

/* Calls fn for every record with lsn >= from, in order, stopping early when fn returns
 * non-zero (its value is returned). Returns -1 when a record does not check out. */
typedef int (*jd_log_visit_fn)(uint64_t lsn, const void *rec, size_t len, void *ud);
int jd_log_replay(jd_log *l, uint64_t from, jd_log_visit_fn fn, void *ud);

/* Makes the next LSN at least lsn + 1 (a store that has seen records the log lost
 * with a damaged tail must never see their numbers again). Before jd_log_start. */
int jd_log_continue_after(jd_log *l, uint64_t lsn, char *err, size_t errlen);

/* Deletes segments all of whose records are below lsn (a checkpoint covers them). */
int jd_log_remove_before(jd_log *l, uint64_t lsn);

#endif
