/* shard: `journeyd serve` runs N shards (default one per core). Each shard is a whole
 * engine — its own Lua state, event log, store, checkpoint writer, dispatcher and
 * timers — on its own thread and libevent loop. The front (the HTTP and stream surface,
 * on the main thread) normalises events and routes each to its user's shard: a stable
 * hash of the userId, or of the anonymousId when there is none (after the front's
 * table of anonymous ids linked to a user on another shard). Handing a record to a shard
 * takes that shard's inbox lock only: there is no lock shared by all shards.
 *
 * An identify or alias that links an id living on another shard goes there first as a
 * link record: that shard records the alias in its own log and store and exports the
 * earlier profile, which travels with the record to the user's shard and is folded in
 * there as one shard would. Until then the front holds the later events of both ids,
 * so each person's events reach their shard in the order they came.
 *
 * Answers wait for every record of a request to be durable and processed on its shard
 * (a wait set). Admin reads run on the shards' threads and are summed.
 * Uses serve, durable, delivery, engine API, libevent, pthreads. */
#ifndef JD_SHARD_H
#define JD_SHARD_H

#include <stddef.h>
#include <stdint.h>

#include "event.h"

struct jd_server;
struct jd_options;

#define JD_MAX_SHARDS 64

/* Opens nshards shards under data_dir (DATA_DIR itself for one shard, DATA_DIR/shard-K
 * for more), each replaying its log, and starts their threads. log_dir: where the event
 * logs go, laid out the same (NULL: DATA_DIR[/shard-K]/log). 0, or -1 with err. */
int jd_shards_open(struct jd_server *front, const char *config, const struct jd_options *opts, const char *data_dir,
                   const char *log_dir, int nshards, char *err, size_t errlen);
/* Stops the threads (what is queued is logged and processed first) and closes the
 * shards: their last checkpoints are written. */
void jd_shards_close(struct jd_server *front);
/* The number of shards a data directory holds (0: none yet), or -1 with err when it
 * holds a layout this build does not know. */
int jd_shards_on_disk(const char *data_dir, char *err, size_t errlen);
/* DATA_DIR/shard-K (or DATA_DIR when it holds one shard) into out. */
void jd_shard_dir(const char *data_dir, int nshards, int k, char *out, size_t n);

/* The shard of a user id (a stable hash; it does not change between versions). */
int jd_shard_of(const char *id, size_t n, int nshards);

/* Hands a normalised record to its shard (or processes it at once when the front has
 * no shards). ev is the record's view (for routing). A log that cannot write shows in
 * the wait set (failed). */
typedef struct jd_waitset jd_waitset;
void jd_shards_submit(struct jd_server *front, const void *rec, size_t len, const jd_event *ev, jd_waitset *ws);

/* Runs fn(arg) on shard k's thread between its events and returns when it has run. */
void jd_shards_call(struct jd_server *front, int k, void (*fn)(struct jd_server *shard, void *arg), void *arg);
int jd_shards_count(const struct jd_server *front);

/* Admin reads. A JSON answer of one shard (run on its thread), or of every shard summed
 * (maps by key, arrays by index, integers added; anything else is the first shard's). */
typedef char *(*jd_shard_json_fn)(struct jd_server *shard, void *arg);
char *jd_shards_json(struct jd_server *front, int k, jd_shard_json_fn fn, void *arg);
char *jd_shards_json_sum(struct jd_server *front, jd_shard_json_fn fn, void *arg);
/* The shard to ask for a user id: the one holding its own profile, else (an anonymous id
 * linked to a user on another shard) the shard of the user it was linked to. */
int jd_shards_user_shard(struct jd_server *front, const char *id, size_t n);
/* A journey's funnel with every shard's counters, buckets and histograms added. */
char *jd_shards_funnel_json(struct jd_server *front, const char *name, size_t n, const char *window);
/* Prometheus text of the engines and dispatchers, summed by series, and journeyd_shards. */
char *jd_shards_metrics(struct jd_server *front);
/* Dead letters of every shard; a retry on the shard that has the row. */
char *jd_shards_dead_json(struct jd_server *front);
int jd_shards_retry(struct jd_server *front, const char *id);

#endif
