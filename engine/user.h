/* user: a person's state — traits, score, segments, journey instances — and the
 * in-memory table of users. Uses buf, map, msgpack-c. Owns everything it points to. */
#ifndef JD_USER_H
#define JD_USER_H

#include <msgpack.h>
#include <stdint.h>

#include "buf.h"
#include "map.h"

struct jd_gen;

typedef enum jd_inst_status { JD_INST_ACTIVE, JD_INST_CONVERTED, JD_INST_EXITED } jd_inst_status;

/* One (journey, key) of a user: the running instance, or the memory of the last one
 * (for re-entry rules) once it has left. */
typedef struct jd_instance {
    struct jd_instance *next;
    int journey; /* index into the loaded defs */
    char *key;   /* owned (inline after the struct, or malloc'd); "" when the journey is not keyed */
    size_t keylen;
    jd_inst_status status;
    int stage;
    uint32_t iid; /* per-user instance number, grows with every entry */
    uint32_t gen; /* stage entries within the instance; timers carry it */
    int64_t entered_at;
    int64_t stage_entered_at;
    int64_t left_at;
    uint32_t entries; /* times entered, all time */
    uint64_t touched; /* the event that last changed it (no re-entry on the event that left) */
    uint64_t version; /* the journey's version it entered with (or migrated to); 0: unknown */
    /* The timers of stage entry fired_gen that fired (bit i: the stage's i-th j.after, for
     * i < 64): a timer fires once per stage entry (engine.c timer_once) */
    uint64_t fired;
    uint32_t fired_gen;
    uint8_t migrated; /* moved to another stage by a `migrate` on load: its timers are due */
    /* In jd_user.pinned: the retired scripts generation it runs with (journey and stage
     * index into its defs); NULL in jd_user.instances and for a pinned one that left. */
    struct jd_gen *pin;
} jd_instance;

typedef enum jd_decision_kind {
    JD_DEC_ENTERED,
    JD_DEC_MOVED,
    JD_DEC_TIMER,
    JD_DEC_ACTION,
    JD_DEC_CONVERTED,
    JD_DEC_EXITED,
    JD_DEC_ERROR,
    JD_DEC_DEFERRED,   /* an action outside its send window: delivered later */
    JD_DEC_SUPPRESSED, /* a send beyond its frequency cap: not emitted */
    JD_DEC_NKINDS
} jd_decision_kind;

/* One recent decision about a person, for "why did (or didn't) they get the email". */
typedef struct jd_decision {
    int64_t time;
    uint8_t kind;
    int16_t journey; /* -1: none */
    int16_t stage;   /* -1: none */
    char detail[104];
} jd_decision;

/* A send on a capped channel, remembered for frequency caps. */
typedef struct jd_sent {
    int64_t time;     /* when it reaches the person: deliver_at, else the decision time */
    uint64_t channel; /* jd_hash(name, n, 0) of the channel: stable across reloads */
} jd_sent;

#define JD_MAX_SENT 1024 /* per person, all channels */

typedef struct jd_user {
    char *id; /* inline after the struct (jd_user_new) */
    size_t idlen;
    jd_buf traits; /* packed msgpack map; empty buffer means {} */
    double score;
    char **segments; /* sorted, owned */
    size_t nsegments;
    jd_instance *instances;
    jd_instance *pinned; /* instances pinned to an earlier version of their journey */
    uint32_t npinned;    /* active ones among them */
    uint32_t next_iid;
    /* the last decisions, oldest first, packed end to end (jd_user_decision reads one):
     * an entry's time, kind, journey, stage and detail take 14 bytes + the detail's
     * length, not a whole jd_decision; at most 64 KB (the oldest go first) */
    uint8_t *decisions;
    jd_sent *sent;                         /* capped sends, bounded by the caps that need them */
    uint32_t timers;                       /* timers in memory that point here: not evicted while > 0 */
    uint16_t ndecisions, dec_len, dec_cap; /* decisions; their bytes used / allocated */
    uint16_t nsent;
    uint8_t dirty; /* changed since the store's last checkpoint */
    uint8_t ckpt;  /* in the checkpoint being encoded, not yet encoded (checkpoint.c) */
} jd_user;

jd_user *jd_user_new(const char *id, size_t n);
void jd_user_free(jd_user *u);

/* Merges a map into the user's traits: new keys win; a nil value removes the key.
 * scratch (the caller's, kept from call to call; NULL: a buffer of its own) holds the
 * merged map on its way: the person's traits are reallocated only when it is larger
 * than their allocation (or less than half of it), never when it changes nothing. */
void jd_user_merge_traits(jd_user *u, const msgpack_object *map, jd_buf *scratch);
/* Unpacks the traits into zone; returns a map object (empty map when none). */
const msgpack_object *jd_user_traits(const jd_user *u, msgpack_zone *zone, msgpack_object *out);

int jd_user_in_segment(const jd_user *u, const char *name, size_t n);
/* Returns 1 if changed. */
int jd_user_segment_add(jd_user *u, const char *name, size_t n);
int jd_user_segment_remove(jd_user *u, const char *name, size_t n);

const char *jd_decision_kind_name(int kind);
/* Appends to the last cap decisions (the oldest goes when there are cap). */
void jd_user_decide(jd_user *u, int cap, const jd_decision *d);
/* The i-th of the person's decisions, oldest first (i < ndecisions), into *out. */
const jd_decision *jd_user_decision(const jd_user *u, int i, jd_decision *out);

/* Sends on channel with time > since (future deliveries included). */
uint32_t jd_user_sent_count(const jd_user *u, uint64_t channel, int64_t since);
/* Remembers a send, forgetting this channel's sends at or before keep_after and all but
 * its keep_max latest (and the oldest beyond JD_MAX_SENT). */
void jd_user_sent_add(jd_user *u, uint64_t channel, int64_t time, int64_t keep_after, uint32_t keep_max);

jd_instance *jd_user_instance(jd_user *u, int journey, const char *key, size_t keylen);
/* A new instance, appended; its key is stored inline (instance and key are one block). */
jd_instance *jd_user_instance_add(jd_user *u, int journey, const char *key, size_t keylen);
/* Frees an instance and its key (inline, or a separate malloc'd copy). */
void jd_instance_free(jd_instance *i);

#endif
