/* journeyd.h — the journeyd engine as a library.
 *
 * An engine loads a journey script (Lua), takes events (Segment-spec JSON, or the
 * internal msgpack record), keeps each person's state, runs timers on its clock, and
 * hands every decided action to a callback. Handles are opaque; every pointer the
 * engine gives a callback is valid only during that call. Not thread-safe: one engine
 * per thread. */
#ifndef JOURNEYD_H
#define JOURNEYD_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define JOURNEYD_VERSION "0.1.0"

typedef struct jd_engine jd_engine;
typedef struct jd_action jd_action;

typedef struct jd_options {
    int virtual_clock;        /* 1: time moves only with events and jd_engine_advance */
    int64_t call_limit_ms;    /* per Lua call; 0: default (50 ms) */
    size_t memory_limit;      /* bytes for the Lua state; 0: default (256 MiB) */
    int64_t dedupe_ttl_ms;    /* 0: remember messageIds forever (replay) */
    int decisions_per_user;   /* recent decisions kept per person (admin API); 0: none */
    int64_t overdue_limit_ms; /* timers overdue by more than this are skipped; 0: all fire */
    int live;                 /* the daemon: the clock follows records' receivedAt and tick
                               * records (implies a virtual clock), so replaying the event log
                               * after a restart decides exactly what was decided live */
} jd_options;

/* An error with a position: "file:line: message" in text. */
typedef struct jd_error {
    char text[1024];
} jd_error;

/* Called for every decided action, in decision order. */
typedef void (*jd_action_fn)(const jd_action *a, void *ud);
/* Called for diagnostics (Lua errors in hooks, dropped events); one line, no newline. */
typedef void (*jd_log_fn)(const char *level, const char *line, void *ud);

/* Creates an engine and loads the script at config_path. Returns NULL with err set on
 * a script error (err->text is "file:line: message"). Free with jd_engine_free. */
jd_engine *jd_engine_new(const char *config_path, const jd_options *opts, jd_error *err);
void jd_engine_free(jd_engine *e);

/* Loads config_path into a fresh Lua state, validates and compiles it, and swaps it in:
 * people, timers and counters carry over by journey and stage name (a person in a
 * journey or stage that no longer exists leaves it, logged). On failure the old scripts
 * stay and err says why ("file:line: message"). Call between events. */
int jd_engine_reload(jd_engine *e, const char *config_path, jd_error *err);

void jd_engine_on_action(jd_engine *e, jd_action_fn fn, void *ud);
void jd_engine_on_log(jd_engine *e, jd_log_fn fn, void *ud);
/* Shards: a link record (an identify or alias sent to the shard of its earlier id, with
 * "jd_link" set) records the alias there and hands the earlier id's profile (a msgpack
 * map {traits, score, segments}, or an empty map when there is none) to fn, which the
 * daemon adds to the record as "jd_fold" before it goes to the later id's shard. */
typedef void (*jd_export_fn)(uint64_t link, const void *profile, size_t len, void *ud);
void jd_engine_on_export(jd_engine *e, jd_export_fn fn, void *ud);

/* Normalises and processes one Segment JSON event. default_id names the event when it
 * has no messageId (may be NULL: then one is required). Returns 0 (processed or
 * dropped as a duplicate), or -1 with err set when the event is invalid. */
int jd_engine_ingest_json(jd_engine *e, const char *json, size_t len, const char *default_id, jd_error *err);
/* Processes one internal msgpack record (from jd_engine_normalize or the log). */
int jd_engine_process(jd_engine *e, const void *record, size_t len, jd_error *err);
/* Normalises one JSON event into a record appended to *out (malloc'd, caller frees).
 * default_ts (ms) is used when the event has no timestamp. */
int jd_engine_normalize(jd_engine *e, const char *json, size_t len, int64_t default_ts, const char *default_id,
                        char **out, size_t *outlen, jd_error *err);
/* A tick record (the clock reached t_ms), malloc'd: the daemon logs one when timers are
 * due, so they fire at the same point when the log is replayed. */
char *jd_tick_record(int64_t t_ms, size_t *len);
/* Fires every timer due at or before t (virtual clock) and moves the clock to t. */
void jd_engine_advance(jd_engine *e, int64_t t_ms);
int64_t jd_engine_now(const jd_engine *e);
/* When the earliest pending timer is due (ms), or -1 when none is pending. */
int64_t jd_engine_next_due(const jd_engine *e);

/* The embedded store (LMDB in dir): the engine's state is checkpointed there and read
 * back on first use; only the near window of timers is held in memory. */
typedef struct jd_store_opts {
    size_t map_bytes;      /* the most the store may grow to (0: 64 GiB, sparse) */
    int64_t window_ms;     /* timers due within this are held in memory (0: 15 minutes) */
    size_t cache_users;    /* people kept in memory after a checkpoint (0: 100,000) */
    int64_t dedupe_ttl_ms; /* messageIds are remembered this long (0: as in jd_options) */
    int no_pack;           /* write rows as msgpack, not packed with zstd (they read either way) */
} jd_store_opts;

/* Opens the store and loads what it holds: the checkpointed state, the messageIds
 * seen, the near window of timers. Call once, after jd_engine_new and before any
 * input. 0, or -1 with err. */
int jd_engine_open_store(jd_engine *e, const char *dir, const jd_store_opts *opts, jd_error *err);
/* The event log position (LSN) the store reflects: replay the log after it. */
uint64_t jd_engine_store_position(const jd_engine *e);
/* Writes everything changed since the last checkpoint — people, aliases, timers, the
 * outbox of decided actions, messageIds — and lsn, in one transaction. On failure
 * nothing is lost: the next checkpoint writes it. 0, or -1 with err. */
int jd_engine_checkpoint(jd_engine *e, uint64_t lsn, jd_error *err);

/* The same in three steps, so the store is written off the processor's thread: take
 * what changed into a batch (processor thread; NULL while a batch is in flight), write
 * it (any thread; 0 or -1), then hand it back (processor thread): on success the store
 * reflects lsn and the batch is freed; on failure it is kept and written first next time
 * (-1 with err). */
typedef struct jd_ckpt jd_ckpt;
jd_ckpt *jd_engine_checkpoint_take(jd_engine *e, uint64_t lsn);
int jd_ckpt_write(jd_ckpt *c);
int jd_engine_checkpoint_done(jd_engine *e, jd_ckpt *c, jd_error *err);
/* jd_engine_checkpoint_take in slices, so the processor never pauses for long: begin
 * takes the batch at lsn but only marks the people who changed (-1 while a batch is in
 * flight); step encodes them for about budget_ns (0: all) and returns the batch once
 * they all are (NULL before, or when none is being built), to write and hand back as
 * above. Until then the engine encodes a marked person before it changes them, so the
 * batch holds everyone as they were at lsn. A checkpoint or take meanwhile finishes the
 * one being built into its own. building: 1 while one is begun and not yet returned. */
int jd_engine_checkpoint_begin(jd_engine *e, uint64_t lsn);
jd_ckpt *jd_engine_checkpoint_step(jd_engine *e, int64_t budget_ns);
int jd_engine_checkpoint_building(const jd_engine *e);

/* What delivery made of an outbox row ("delivered", "retrying", "dead", "pending"),
 * written with the next checkpoint. */
void jd_engine_outbox_result(jd_engine *e, const char *id, const char *status, uint32_t attempts, int64_t next,
                             const char *error);

/* Action accessors. */
const char *jd_action_id(const jd_action *a);
int64_t jd_action_time(const jd_action *a);
/* When a send window deferred the action: the moment it may be delivered (ms, UTC); 0: now. */
int64_t jd_action_deliver_at(const jd_action *a);
const char *jd_action_channel(const jd_action *a);
/* The action as one JSON object: time, user, journey, stage, channel, payload, id. */
const char *jd_action_json(const jd_action *a, size_t *len);

/* Funnel summary as text (per journey and stage), appended to a malloc'd string. */
char *jd_engine_funnel_text(const jd_engine *e);
/* Counters: events, duplicates, invalid, actions, lua_errors, timers_fired, ... */
uint64_t jd_engine_stat(const jd_engine *e, const char *name);

/* Lists journeys and stages (for `journeyd check`), malloc'd text. */
char *jd_engine_describe(const jd_engine *e);
/* For `journeyd check --against DATA_DIR`: per journey whether its version changes and
 * where the active people of DATA_DIR/store (read only) would go on a reload to e's
 * scripts; malloc'd text, NULL with err set when the store cannot be read. */
char *jd_engine_check_against(const jd_engine *e, const char *data_dir, jd_error *err);

/* A CRM webhook for a j.source: the request as received. */
typedef struct jd_header {
    const char *name;
    const char *value;
} jd_header;

typedef struct jd_source_request {
    const char *method;
    const char *uri; /* path and query as received */
    const char *body;
    size_t body_len;
    const jd_header *headers;
    size_t nheaders;
    int64_t received_ms; /* > 0: stamped into the records as receivedAt */
    /* When set, each mapped record is handed here (to be logged) instead of processed;
     * a non-zero return refuses it (counted as rejected). */
    int (*emit)(const void *record, size_t len, void *ud);
    void *emit_ud;
} jd_source_request;

typedef struct jd_source_result {
    int status;   /* HTTP-like: 200, 400 (bad body or mapping), 401 (verify failed), 404 (no such source), 500 */
    int accepted; /* events processed */
    int rejected; /* events the mapper produced that were invalid */
    int verified; /* the source has a verify function and it passed */
    char error[512];
} jd_source_result;

/* Runs source `name`'s verify and map functions on a request and processes the events
 * map returns. Returns 0 when status is 200. */
int jd_engine_source(jd_engine *e, const char *name, const jd_source_request *req, jd_source_result *res);
/* 1 if the source exists and declares its own verify function. */
int jd_engine_source_verifies(const jd_engine *e, const char *name);

/* Reports as JSON (malloc'd; NULL when the user or journey is unknown). */
char *jd_engine_user_json(const jd_engine *e, const char *id, size_t n);
char *jd_engine_journeys_json(const jd_engine *e);
char *jd_engine_journey_json(const jd_engine *e, const char *name, size_t n);
/* Prometheus text exposition of the engine's counters (malloc'd). */
char *jd_engine_metrics(const jd_engine *e);

/* Analytics. The funnel of journey `name` over a window ("1h", "24h", "7d" or "all";
 * NULL: "all") as JSON: its stages in order with counts (entered, now, moved_on,
 * timed_out, exited, converted), conversion from the previous stage, drop-off, time in
 * stage (median, p90) and the state of its alerts. Malloc'd; NULL when the journey is
 * unknown or the window is not one of those. */
char *jd_engine_funnel_json(const jd_engine *e, const char *name, size_t n, const char *window);
/* Shards: the engine's analytics as bytes (malloc'd, *len set), and a funnel summed over
 * such bytes from every shard, with e's journeys, at time now. */
char *jd_engine_stats_saved(const jd_engine *e, size_t *len);
char *jd_engine_funnel_json_sum(const jd_engine *e, char *const *saved, const size_t *lens, size_t n, const char *name,
                                size_t nlen, const char *window, int64_t now);
/* A person's recent decisions with their reasons, oldest first, as JSON
 * {"id", "decisions": [{time, kind, journey, stage, detail}]} (kept when
 * jd_options.decisions_per_user > 0). Malloc'd; NULL when the person is unknown. */
char *jd_engine_user_trace_json(const jd_engine *e, const char *id, size_t n);

/* A j.config value as text (strings, numbers, booleans), or NULL. Valid while e lives. */
const char *jd_engine_config(const jd_engine *e, const char *key);
/* The i-th element of a j.config list of strings (or a single string when i == 0), or
 * NULL past the end. Valid while e lives. */
const char *jd_engine_config_item(const jd_engine *e, const char *key, size_t i);

/* Converts one JSON value to msgpack (strict; 64-bit integers exact). *out is malloc'd.
 * Returns 0, or -1 with "byte N: reason" in err. */
int jd_json_to_msgpack_alloc(const char *json, size_t len, char **out, size_t *outlen, char *err, size_t errlen);

/* Parses ISO 8601 into ms; 0 or -1. */
int jd_parse_time(const char *s, int64_t *ms);
/* Parses a duration ("90s", "2h", "3d") into ms; 0 or -1. */
int jd_parse_duration(const char *s, int64_t *ms);

#ifdef __cplusplus
}
#endif

#endif
