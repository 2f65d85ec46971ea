/* defs: the compiled form of a script set — journeys, stages, triggers, rules,
 * channels — and the trigger index that routes an event to the triggers that could
 * match it. Built by lua_journey from the journey module's registry; read by engine.
 * Uses map, match, event, stats (alert specs), window (send windows, caps). */
#ifndef JD_DEFS_H
#define JD_DEFS_H

#include <stdint.h>

#include "map.h"
#include "match.h"
#include "stats.h"
#include "window.h"

typedef enum jd_role {
    JD_ROLE_EXIT,       /* journey exit: leaves, not converted */
    JD_ROLE_GOAL,       /* journey goal: converts and leaves */
    JD_ROLE_TRANSITION, /* stage event trigger */
    JD_ROLE_ENTRY,      /* journey entry */
    JD_ROLE_RULE,       /* a rule outside journeys */
    JD_ROLE_TIMEOUT,    /* stage j.after */
} jd_role;

typedef enum jd_action_kind { JD_ACT_NONE, JD_ACT_GO, JD_ACT_EXIT } jd_action_kind;

typedef struct jd_trigger {
    jd_role role;
    int is_after;
    jd_event_type type;
    char *name; /* NULL: any name of that type */
    jd_pred *preds;
    size_t npreds;
    int when_ref; /* Lua registry refs; LUA_NOREF when absent */
    int fn_ref;
    jd_action_kind action;
    int target; /* stage index for GO */
    int64_t delay_ms;
    char *delay_text;
    int journey;   /* index, -1 for rules */
    int stage;     /* index, -1 when not in a stage */
    int index;     /* position among its stage's triggers or afters */
    int unit;      /* ordering: journeys and rules run in definition order */
    char *loc;     /* "file:line" where it was made */
    char *rule_id; /* stable name: "journey/stage/on Project Created" */
} jd_trigger;

typedef struct jd_stage {
    char *name;
    char *loc;
    int enter_ref;
    jd_trigger **on; /* event transitions, in order */
    size_t non;
    jd_trigger **after; /* timeouts, in order */
    size_t nafter;
} jd_stage;

/* One `migrate` entry: people in stage `from` of an earlier version go to stage `to`. */
typedef struct jd_migration {
    char *from;
    int to; /* stage index, or JD_MIGRATE_EXIT */
} jd_migration;

#define JD_MIGRATE_EXIT (-2) /* leave the journey, counted as exited */

typedef enum jd_reentry { JD_REENTRY_NEVER, JD_REENTRY_ALWAYS, JD_REENTRY_COOLDOWN } jd_reentry;

typedef struct jd_journey {
    char *name;
    char *loc;
    int index;
    int unit;
    jd_trigger *entry;
    int entry_stage;
    jd_trigger **goals;
    size_t ngoals;
    jd_trigger **exits;
    size_t nexits;
    jd_reentry reentry;
    int64_t cooldown_ms;
    char *key; /* property path or NULL */
    size_t keylen;
    jd_stage *stages;
    size_t nstages;
    uint64_t version; /* hash of the definition: triggers, stages, hook bytecode */
    /* `migrate`: when declared, a reload that changes the version moves active people */
    int migrates;
    jd_migration *migrate;
    size_t nmigrate;
    int migrate_other; /* `["*"]`: a stage index, JD_MIGRATE_EXIT, or -1 (none) */
    /* `alert` entries, evaluated by stats; inline so jd_defs_free has nothing to free */
    jd_alert_spec alerts[JD_MAX_ALERTS];
    size_t nalerts;
} jd_journey;

typedef struct jd_channel {
    char *name;
    char *type;
    int index;
    jd_window *window; /* `window`: sends outside it are deferred; NULL: any time */
    jd_cap cap;        /* `cap`: sends beyond it are suppressed; max 0: none */
} jd_channel;

/* A CRM webhook source: Lua functions that verify a request and map it to events. */
typedef struct jd_source {
    char *name;
    char *loc;
    int verify_ref; /* LUA_NOREF: none (then a write key is required) */
    int map_ref;
} jd_source;

/* The triggers an event of one (type, name) could fire, ordered by (unit, role). */
typedef struct jd_tlist {
    jd_trigger **t;
    size_t n;
} jd_tlist;

typedef struct jd_defs {
    jd_journey *journeys;
    size_t njourneys;
    jd_trigger **triggers; /* owns every trigger */
    size_t ntriggers;
    jd_channel *channels;
    size_t nchannels;
    jd_source *sources;
    size_t nsources;
    jd_map channel_by_name;     /* name -> jd_channel* */
    jd_map journey_by_name;     /* name -> jd_journey* */
    jd_map index[JD_EV_NTYPES]; /* per event type: name -> jd_tlist* */
    jd_tlist any[JD_EV_NTYPES]; /* triggers without a name */
} jd_defs;

/* Index lookup for an event's (type, name); the result merges named and any-name
 * triggers in (unit, role) order into *scratch when both exist. */
const jd_tlist *jd_defs_lookup(const jd_defs *d, jd_event_type type, const char *name, size_t n, jd_tlist *scratch,
                               size_t scratch_cap);
void jd_defs_build_index(jd_defs *d);
/* Frees the structures; Lua refs are released by the owner of the Lua state. */
void jd_defs_free(jd_defs *d);
const jd_journey *jd_defs_journey(const jd_defs *d, const char *name, size_t n);
const jd_channel *jd_defs_channel(const jd_defs *d, const char *name, size_t n);
/* Where a person in stage `old_stage` of an earlier version of j goes under j's
 * `migrate`: the table's entry, else the stage of the same name, else `["*"]`. Returns a
 * stage index, JD_MIGRATE_EXIT, or -1 (no rule: the stage is gone). */
int jd_journey_migrate_stage(const jd_journey *j, const char *old_stage, size_t n);
const jd_source *jd_defs_source(const jd_defs *d, const char *name);

#endif
