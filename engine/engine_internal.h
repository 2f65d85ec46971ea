/* engine_internal: the engine's layout, shared by engine.c (the processor),
 * lua_ctx.c (the ctx object hooks see) and lua_journey.c (compiling the registry).
 * Not part of the public API. */
#ifndef JD_ENGINE_INTERNAL_H
#define JD_ENGINE_INTERNAL_H

#include <msgpack.h>

#include "../include/journeyd.h"
#include "buf.h"
#include "clock.h"
#include "dedupe.h"
#include "defs.h"
#include "event.h"
#include "json.h"
#include "map.h"
#include "script.h"
#include "timer.h"
#include "user.h"
#include "window.h"

/* What a hook asked for; applied only if the hook returns without error. */
typedef struct jd_send {
    int channel;
    size_t off, len; /* payload bytes in fx.payloads */
    /* ctx:send's third argument: overrides the channel's window / cap when set */
    uint8_t has_window, has_cap; /* has_window with window.days == 0: `window = false` */
    jd_window window;
    jd_cap cap;
} jd_send;

typedef struct jd_effects {
    jd_send *sends;
    size_t nsends, capsends;
    jd_buf payloads;
    jd_buf sets; /* packed key/value pairs */
    uint32_t nsets;
    double score;
    jd_buf segops; /* '+'/'-' then name then NUL, repeated */
    int go;        /* stage index, -1: none */
    int exit;
    jd_buf logs; /* lines, NUL separated */
} jd_effects;

/* The call a hook is running in (ctx's view). */
typedef struct jd_call {
    uint64_t id;  /* bumps per call; a ctx kept past its call is refused */
    int readonly; /* `when` predicates */
    const jd_journey *journey;
    int stage;
    jd_instance *inst;
    const jd_trigger *trigger;
    const char *hook; /* "enter", "on", "after", "entry", "goal", "exit", "rule", "when" */
} jd_call;

typedef struct jd_stage_count {
    uint64_t entered, now, moved_on, timed_out, converted, exited;
} jd_stage_count;

typedef struct jd_journey_count {
    uint64_t entered, converted, exited, active;
    jd_stage_count *stages;
} jd_journey_count;

struct jd_action {
    char id[33];
    int64_t time;
    const jd_user *user;
    const jd_journey *journey;
    int stage;
    const jd_channel *channel;
    const char *payload;
    size_t payload_len;
    const char *rule;
    int64_t deliver_at; /* deferred by a send window to this time (ms); 0: now */
    struct jd_engine *e;
};

enum {
    JD_STAT_EVENTS,
    JD_STAT_DUPLICATES,
    JD_STAT_INVALID,
    JD_STAT_UNMATCHED,
    JD_STAT_ACTIONS,
    JD_STAT_LUA_ERRORS,
    JD_STAT_LUA_CALLS,
    JD_STAT_TIMERS_SCHEDULED,
    JD_STAT_TIMERS_FIRED,
    JD_STAT_TIMERS_DROPPED,
    JD_STAT_LATE,
    JD_STAT_TRANSITIONS,
    JD_STAT_TIMERS_SKIPPED,
    JD_STAT_QUARANTINE_SKIPS,
    JD_STAT_QUARANTINED,
    JD_STAT_DEFERRED,
    JD_STAT_SUPPRESSED,
    JD_NSTATS
};

/* A retired generation of the scripts, kept while people are pinned to it: they entered
 * a journey whose version a reload changed without `migrate`, and keep running it until
 * they leave. While it runs, the engine's script, defs, ctx and per-defs counters are
 * swapped with these; its counters are scratch, folded into the current ones by name.
 * The windowed analytics are not swapped: its journeys and stages count in the current
 * ones of the same name (cur_journey, cur_stage). With a store, its sources are a row of
 * the store (id) while anyone is pinned to it, so it is rebuilt after a restart. */
typedef struct jd_gen {
    jd_script *script;
    jd_defs *defs;
    int ctx_ref;
    jd_journey_count *counts;
    uint64_t *channel_actions;
    int *cur_journey; /* per journey of defs: the current journey of that name, -1: none */
    int **cur_stage;  /* per journey and stage: the current stage of that name, -1: none */
    uint64_t pinned;  /* active instances pinned to it, in memory or only in the store */
    uint64_t timers;  /* timers in memory that name it */
    uint64_t id;      /* its sources' row in the store; 0: not stored */
    uint64_t hash;    /* of its sources (jd_persist_sources_hash) */
} jd_gen;

struct jd_engine {
    jd_options opts;
    jd_clock clock;
    jd_script *script;
    jd_defs *defs;
    int ctx_ref;    /* the reusable ctx userdata */
    jd_map users;   /* id -> jd_user* */
    jd_map aliases; /* anonymous/previous id -> canonical id (value: malloc'd jd_str-like) */
    jd_dedupe dedupe;
    jd_timers timers;
    jd_journey_count *counts;
    /* journey analytics (stats.c): windowed counters and alert states, journeys in defs
     * order; `stats` below is the engine's own counters */
    jd_stats *analytics;
    unsigned char *analytics_dirty; /* per journey: counters changed since the last alert check */
    int analytics_changed;          /* some analytics_dirty is set */
    int64_t alert_minute;           /* clock minute of the last check of every alert */
    size_t alert_journeys;          /* journeys with alerts (0: nothing to check) */
    /* alert edges for /metrics: "journey\0stage\0fired|recovered" -> malloc'd uint64_t */
    jd_map alert_counts;
    jd_user *alert_user;          /* whom alert actions belong to: id "", never stored */
    uint64_t *channel_actions;    /* per channel */
    jd_map channel_held;          /* channel name -> malloc'd uint64_t[2]: deferred, suppressed */
    jd_tzcache *zones;            /* send windows' time zones, loaded on first use */
    jd_map rule_errors;           /* rule id -> jd_rule_stat*: Lua errors, quarantine */
    uint32_t quarantine_errors;   /* this many errors ... (0: never quarantine) */
    int64_t quarantine_window_ms; /* ... within this window quarantine a rule */
    uint64_t stats[JD_NSTATS];
    /* overdue timers not yet reported: one notice a minute at most (jd_engine_advance) */
    uint64_t overdue_fired, overdue_skipped;
    int64_t overdue_noticed_at;
    jd_buf config; /* j.config packed as msgpack */
    msgpack_zone config_zone;
    msgpack_object config_obj;
    jd_map config_cache; /* text -> the same text, owned: stable pointers to hand out */

    /* per event */
    msgpack_zone zone;      /* profile unpacking while processing */
    msgpack_zone in_zone;   /* the input record */
    jd_buf trec;            /* a firing timer's strings (timer_view) */
    const jd_timer *firing; /* the timer whose view process_view runs (jd_engine_advance) */
    jd_buf action_json;
    char action_json_id[33]; /* the action action_json holds */
    jd_buf action_rec;       /* jd_action_json scratch */
    msgpack_zone action_zone;
    jd_buf rec;        /* normalised record scratch */
    jd_buf sets_rec;   /* a hook's ctx:set traits as one map (apply) */
    jd_buf traits_buf; /* merged traits on their way into a profile (jd_user_merge_traits) */
    jd_buf scratch;    /* json scratch */
    jd_buf keybuf;
    jd_json_reader *jr;
    jd_json_writer *jw;
    const jd_event *ev;
    /* the input's messageId hash (jd_engine_process), until its dedupe check */
    const char *msg_hashed; /* its messageId bytes; NULL: none pending */
    uint64_t msg_ha, msg_hb;
    /* the input's person id as jd_engine_process hashed it for its prefetch, for the
     * people and alias maps' lookups of the same bytes (id_hash); NULL: none */
    const char *who_hashed;
    size_t who_n;
    uint64_t who_h;
    jd_user *user;
    const msgpack_object *user_traits; /* cached for this event, NULL: not unpacked */
    msgpack_object user_traits_obj;
    uint64_t event_seq;
    uint64_t fired_hash[64]; /* rules that ran for this input, for action id repeats */
    int nfired;

    jd_call call;
    jd_effects fx;

    struct jd_persist *persist; /* the embedded store (checkpoint.c), NULL: memory only */

    jd_gen **gens; /* retired generations with pinned people, oldest first */
    size_t ngens;
    jd_gen *running;   /* the retired generation swapped in, NULL: the current one */
    uint64_t gen_id;   /* the current scripts' sources row in the store; 0: none */
    uint64_t gen_hash; /* of those sources */
    size_t gen_nfiles; /* files in that row */

    jd_action_fn on_action;
    void *on_action_ud;
    jd_log_fn on_log;
    void *on_log_ud;
    jd_export_fn on_export;
    void *on_export_ud;
};

/* checkpoint.c: one journey instance of a stored person, as the store holds it (the
 * strings point into the row: valid during the callback only). */
typedef struct jd_stored_instance {
    const char *journey, *key, *stage; /* stage NULL: none stored */
    size_t journeyn, keylen, stagen;
    jd_inst_status status;
    uint32_t iid, gen, entries;
    int64_t entered_at, stage_entered_at, left_at;
    uint64_t touched, version;
    uint64_t pin;   /* the stored generation it is pinned to (jd_gen.id); 0: none */
    uint64_t fired; /* the stage entry's timers that fired (jd_instance.fired) */
} jd_stored_instance;
typedef int (*jd_stored_instance_fn)(const jd_stored_instance *si, void *ud); /* nonzero: stop */
/* A journey as the scripts of the store's last checkpoint defined it (the state row). */
typedef struct jd_stored_journey {
    const char *name;
    size_t namen;
    uint64_t version; /* 0: not recorded */
    const char **stages;
    size_t *stagen;
    size_t nstages;
} jd_stored_journey;
typedef void (*jd_stored_journey_fn)(const jd_stored_journey *sj, void *ud);
/* Opens the store at store_dir read-only, hands jfn (when not NULL) each journey of the
 * last checkpoint, then fn every instance of every person. */
int jd_persist_scan_instances(const char *store_dir, jd_stored_journey_fn jfn, jd_stored_instance_fn fn, void *ud,
                              char *err, size_t errlen);

/* checkpoint.c: reads into memory the stored people not in memory who are active in a
 * journey for which want(name) is nonzero (a reload pins them). */
void jd_persist_load_active(jd_engine *e, int (*want)(const char *journey, size_t n, void *ud), void *ud);

/* engine.c: generations. A Lua state with the engine's limits for scripts in dir. */
jd_script *jd_engine_script_new(jd_engine *e, const char *dir);
/* Builds a retired generation from the kept sources given to sc (jd_script_add_file) and
 * adds it to e->gens with nobody pinned yet; NULL with err (sc is freed). */
jd_gen *jd_engine_gen_restore(jd_engine *e, jd_script *sc, jd_error *err);
/* Frees the retired generations nobody is pinned to (their stored rows go at the next
 * checkpoint). */
void jd_engine_gens_collect(jd_engine *e);

/* checkpoint.c: generations in the store. A hash of the sources a state kept (modules and
 * texts; not the paths). */
uint64_t jd_persist_sources_hash(const jd_script *s);
/* Notes the current scripts' sources as a new row (sets e->gen_id, gen_hash, gen_nfiles). */
void jd_persist_gen_current(jd_engine *e);
/* Notes a (re)write of a generation's sources row, or its removal. */
void jd_persist_gen_put(jd_engine *e, uint64_t id, uint64_t hash, const jd_script *s);
void jd_persist_gen_del(jd_engine *e, uint64_t id);

/* checkpoint.c: the engine's state in the store (all no-ops need e->persist) */
struct jd_persist;
jd_user *jd_persist_load_user(jd_engine *e, const char *id, size_t n);
void jd_persist_user_changed(jd_engine *e, jd_user *u);
/* The barrier of a checkpoint being built (jd_engine_checkpoint_begin): its people are
 * stored as they were at its position, so one still pending (u->ckpt) is encoded before
 * anything changes or frees it. Call before changing a person found other than through
 * jd_engine_user / jd_engine_find_user (which call it). */
void jd_persist_touch_slow(jd_engine *e, jd_user *u);
static inline void jd_persist_touch(jd_engine *e, jd_user *u)
{
    if (u->ckpt)
        jd_persist_touch_slow(e, u);
}
/* Encodes every person still pending in the checkpoint being built (before a change to
 * many of them, or to the scripts their rows name journeys by). */
void jd_persist_settle(jd_engine *e);
/* The store's own metrics (checkpoint pauses) in Prometheus text, appended to b. */
void jd_persist_metrics(const jd_engine *e, jd_buf *b);
void jd_persist_all_changed(jd_engine *e);
const char *jd_persist_load_alias(jd_engine *e, const char *id, size_t n);
void jd_persist_alias(jd_engine *e, const char *from, size_t fn, const char *to, size_t tn);
/* A timer was scheduled (seq set): noted for the store; 1 when it is beyond the near
 * window (it stays on disk, not in the heap). */
int jd_persist_timer_added(jd_engine *e, const jd_timer *tm);
void jd_persist_timer_done(jd_engine *e, const jd_timer *tm);
/* Loads stored timers as the clock t nears the edge of the window. */
void jd_persist_window(jd_engine *e, int64_t t);
/* The earliest stored timer not in memory (INT64_MAX: none). */
int64_t jd_persist_next_due(const jd_engine *e);
void jd_persist_action(jd_engine *e, const jd_action *a);
void jd_persist_seen(jd_engine *e, uint64_t a, uint64_t b, int64_t ts);
void jd_persist_free(jd_engine *e);
/* The person with this id: in memory, else from the store, else new. */
jd_user *jd_engine_user(jd_engine *e, const char *id, size_t n);
/* The person with this id or alias if they exist (memory or store), else NULL. */
jd_user *jd_engine_find_user(jd_engine *e, const char *id, size_t n);

/* lua_ctx.c */
int jd_ctx_create(jd_engine *e);        /* registers the ctx metatable, returns a ref */
int jd_journey_core_open(lua_State *L); /* require "journey.core" */
int jd_crypto_open(lua_State *L);       /* require "journey.crypto" (lua_crypto.c) */
void jd_effects_reset(jd_effects *fx);
void jd_effects_free(jd_effects *fx);
/* Pushes the ctx, stamped for e->call (a ctx kept past its call is refused). */
void jd_ctx_push(jd_engine *e, lua_State *L);

/* lua_journey.c: a `window` / `cap` table at idx (j.channel, ctx:send) into *w / *c;
 * raises a Lua error prefixed with where on a bad spec or an unknown fixed zone. */
void jd_lua_window(jd_engine *e, lua_State *L, int idx, jd_window *w, const char *where);
void jd_lua_cap(lua_State *L, int idx, jd_cap *c, const char *where);

/* lua_journey.c: compiles the journey module's registry; NULL with err set. */
jd_defs *jd_compile(jd_engine *e, char *err, size_t errlen);
void jd_defs_release_refs(lua_State *L, jd_defs *d);

/* A rule's Lua errors. A rule that fails quarantine_errors times within the window is
 * quarantined: its hook is not called again until the scripts are reloaded. */
typedef struct jd_rule_stat {
    uint64_t errors;
    int64_t window_start;
    uint32_t in_window;
    int quarantined;
} jd_rule_stat;

/* Counts a Lua error of a rule (total and per rule) and quarantines it when it keeps
 * failing. */
void jd_engine_count_error(jd_engine *e, const char *rule);

/* The engine's analytics (windowed counters, quantiles, alert states). */
const jd_stats *jd_engine_stats(const jd_engine *e);
/* Analytics for a set of defs: every journey in defs order (a stats index is the journey
 * index) with its alerts, nothing counted yet. */
jd_stats *jd_analytics_for(const jd_defs *d);

/* Records a decision in the current user's trace (when enabled). */
void jd_engine_decide(jd_engine *e, int kind, const jd_journey *j, int stage, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

void jd_engine_log(jd_engine *e, const char *level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
