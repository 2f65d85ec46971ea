/* event: the one event record. Normalises Segment-spec input (track, identify, page,
 * screen, group, alias) into the internal msgpack record, and reads a record back as a
 * flat view for the processor. Timer firings use the same record with type "timer".
 * Uses buf, clock, json, msgpack-c. */
#ifndef JD_EVENT_H
#define JD_EVENT_H

#include <msgpack.h>
#include <stdint.h>

#include "buf.h"

typedef enum jd_event_type {
    JD_EV_TRACK,
    JD_EV_IDENTIFY,
    JD_EV_PAGE,
    JD_EV_SCREEN,
    JD_EV_GROUP,
    JD_EV_ALIAS,
    JD_EV_TIMER,
    JD_EV_TICK, /* the clock moved (the daemon logs these so a replay fires timers alike) */
    JD_EV_NTYPES
} jd_event_type;

typedef struct jd_str {
    const char *p;
    size_t n;
} jd_str;

static inline int jd_str_eq(jd_str a, const char *s, size_t n)
{
    return a.n == n && memcmp(a.p, s, n) == 0;
}

/* The maps of an event: properties, traits, context, and the profile a shard folds in. */
typedef enum jd_event_map_id {
    JD_MAP_PROPERTIES,
    JD_MAP_TRAITS,
    JD_MAP_CONTEXT,
    JD_MAP_FOLD,
    JD_NMAPS
} jd_event_map_id;

/* One of them: its tree, or (in a view jd_event_read gave) its packed bytes, already
 * checked, which jd_event_map builds into the view's zone the first time it is asked
 * for the map (most events are never asked for most of their maps). tree is a memo that
 * jd_event_map fills in through a const view: only jd_event_read sets raw, and only in
 * its caller's view, which is never a const object. */
typedef struct jd_event_lazy {
    const msgpack_object *tree; /* the map; NULL: not built yet (or, with raw NULL, none) */
    const unsigned char *raw;   /* its bytes when tree is NULL (raw[0..len)), else unused */
    size_t len;
} jd_event_lazy;

/* A view into an unpacked record; pointers live as long as the record's bytes and zone. */
typedef struct jd_event {
    jd_event_type type;
    jd_str user_id;      /* userId, or anonymousId when there is none */
    int has_user_id;     /* the event named a userId (else user_id is the anonymousId) */
    jd_str anonymous_id; /* may be empty */
    jd_str name;         /* track: event; page/screen: name; timer: timer id */
    jd_str message_id;
    jd_str group_id;     /* group */
    jd_str previous_id;  /* alias */
    int64_t timestamp;   /* ms since epoch, UTC */
    int64_t received_at; /* when journeyd received it (the daemon's clock), 0 when unknown */
    /* properties, traits, context (maps, never NULL) and fold (a map, or NULL): read them
     * with jd_event_map or jd_event_properties etc., never from here. Shards
     * (engine/shard.c): an identify or alias whose earlier id lives on another shard goes
     * there first as a link (that shard records the alias and exports the earlier
     * profile), then here with the exported profile ("jd_fold") as fold. */
    jd_event_lazy map[JD_NMAPS];
    msgpack_zone *zone;         /* where jd_event_map builds a map from raw (jd_event_read's) */
    const msgpack_object *root; /* the record's map; NULL when read from bytes or a timer's */
    uint64_t link;              /* "jd_link": a link record's handoff id, 0 otherwise */
} jd_event;

/* jd_event_map's slow half: builds a map from its bytes, once. The bytes were checked:
 * it aborts only when the zone cannot grow (as jd_xmalloc does). */
const msgpack_object *jd_event_map_build(const jd_event *ev, jd_event_map_id m);

/* One of the event's maps, built on first use. properties, traits and context are never
 * NULL; fold is NULL when the record has none. */
static inline const msgpack_object *jd_event_map(const jd_event *ev, jd_event_map_id m)
{
    const msgpack_object *t = ev->map[m].tree;
    return t ? t : jd_event_map_build(ev, m);
}

static inline const msgpack_object *jd_event_properties(const jd_event *ev)
{
    return jd_event_map(ev, JD_MAP_PROPERTIES);
}

static inline const msgpack_object *jd_event_traits(const jd_event *ev)
{
    return jd_event_map(ev, JD_MAP_TRAITS);
}

static inline const msgpack_object *jd_event_context(const jd_event *ev)
{
    return jd_event_map(ev, JD_MAP_CONTEXT);
}

static inline const msgpack_object *jd_event_fold(const jd_event *ev)
{
    return jd_event_map(ev, JD_MAP_FOLD);
}

const char *jd_event_type_name(jd_event_type t);
int jd_event_type_parse(const char *s, size_t n, jd_event_type *t);

/* Normalises one Segment event (already converted from JSON to msgpack) into a record
 * appended to out. default_ts is used when the event has no timestamp; default_id
 * (may be NULL) when it has no messageId. Returns 0, or -1 with a reason in err. */
int jd_event_normalize(const msgpack_object *in, int64_t default_ts, const char *default_id, jd_buf *out, char *err,
                       size_t errlen);

/* How the HTTP API adjusts events while normalising them. */
typedef struct jd_norm_opts {
    int64_t default_ts;     /* when the event has no timestamp */
    const char *default_id; /* when it has no messageId (may be NULL) */
    int force_type;         /* 1: the event's type is `type` (the endpoint's) */
    jd_event_type type;
    int64_t received_ms;                 /* > 0: correct timestamps by sentAt (Segment's skew rule) */
    const msgpack_object *sent_at;       /* batch-level sentAt when the item has none (may be NULL) */
    const msgpack_object *batch_context; /* merged under the item's context (may be NULL) */
} jd_norm_opts;

int jd_event_normalize_ex(const msgpack_object *in, const jd_norm_opts *o, jd_buf *out, char *err, size_t errlen);

/* The same validation as normalisation, but into a view that points into `in` (ids
 * given as numbers are formatted into ids); no record is written. The view reads as the
 * record would. Returns 0, -1 with err, or 1 when the view cannot point into `in` (a
 * batch context to merge): then normalise into a record instead. */
typedef char jd_event_ids[5][24]; /* userId, anonymousId, groupId, previousId, messageId */
int jd_event_prepare(const msgpack_object *in, const jd_norm_opts *o, jd_event *ev, jd_event_ids ids, char *err,
                     size_t errlen);
/* Writes the record of a prepared view (what jd_event_normalize_ex writes). */
void jd_event_pack(const jd_event *ev, const msgpack_object *batch_context, jd_buf *out);

/* A tick record: the clock reached t. */
void jd_event_pack_tick(int64_t t, jd_buf *out);

/* Reads a record into a view. Returns 0 or -1 (not a record). */
int jd_event_view(const msgpack_object *root, jd_event *ev);
/* The same view read straight from a record's bytes: what jd_mp_unpack and
 * jd_event_view give (the same verdict on any bytes), but no value is built: each is
 * checked and pointed into. properties, traits, context and jd_fold are built into zone
 * when jd_event_map first asks for them; rec and zone must outlive the view. ev->root
 * is NULL. */
int jd_event_read(const void *rec, size_t len, msgpack_zone *zone, jd_event *ev);

/* The leading fields of a record as jd_event_pack writes them, pointed into without
 * checking the rest: a hint of what processing it will look up (an id's slot to
 * prefetch), never a verdict on the record. A field not found in its place is empty. */
typedef struct jd_event_peek {
    jd_str message_id, user_id, anonymous_id;
    int64_t timestamp; /* when has_timestamp */
    int has_timestamp;
} jd_event_peek;
void jd_event_peek_ids(const void *rec, size_t len, jd_event_peek *out);

/* Packs a string (with its length / NUL-terminated). */
void jd_mp_pack_str(msgpack_packer *pk, const char *s, size_t n);
void jd_mp_pack_cstr(msgpack_packer *pk, const char *s);

/* Reads the one msgpack object that fills data[0..len) exactly into zone: the tree
 * msgpack_unpack gives when it returns MSGPACK_UNPACK_SUCCESS (strings point into
 * data; the same 32 levels of nesting), for a fraction of its cost. Returns 0, or -1
 * where msgpack_unpack would not succeed (malformed, truncated, trailing bytes). */
int jd_mp_unpack(const void *data, size_t len, msgpack_zone *zone, msgpack_object *out);

/* The entries of a packed map, in order: each one's key (read shallow: a string points
 * into data, a container is empty) and the bytes of its key and value. Fills at most max
 * spans; returns the map's count, or -1 where jd_mp_unpack would fail or the data is not
 * a map. */
typedef struct jd_mp_span {
    msgpack_object key;
    const char *p;
    size_t n;
} jd_mp_span;
int jd_mp_map_spans(const void *data, size_t len, jd_mp_span *out, size_t max);

/* A big-endian unsigned integer of n bytes (msgpack's lengths and numbers). */
static inline uint64_t jd_mp_be(const unsigned char *p, int n)
{
    /* spelled out per width, which gcc turns into one load and a byte swap; a loop cost
     * ~60 instructions for a record's 8-byte timestamp */
    switch (n) {
    case 1: return p[0];
    case 2: return (uint64_t)p[0] << 8 | p[1];
    case 4: return (uint64_t)p[0] << 24 | (uint64_t)p[1] << 16 | (uint64_t)p[2] << 8 | p[3];
    case 8:
        return (uint64_t)p[0] << 56 | (uint64_t)p[1] << 48 | (uint64_t)p[2] << 40 | (uint64_t)p[3] << 32 |
               (uint64_t)p[4] << 24 | (uint64_t)p[5] << 16 | (uint64_t)p[6] << 8 | p[7];
    default: return 0;
    }
}

/* The common items without a call: a string shorter than 256 bytes, a small
 * non-negative integer, nil, a uint64 (a record's timestamp). Returns 0 with *pp past
 * it, or -1 for anything else, a bad item included (the caller then reads it the long
 * way, which refuses it as it should). */
static inline int jd_mp_quick(const unsigned char **pp, const unsigned char *end, msgpack_object *o)
{
    const unsigned char *p = *pp;
    if (p >= end)
        return -1;
    unsigned c = *p;
    size_t h, n;
    if (c >= 0xa0 && c <= 0xbf) {
        h = 1;
        n = c & 0x1f;
    } else if (c == 0xd9 && end - p >= 2) {
        h = 2;
        n = p[1];
    } else if (c <= 0x7f) {
        o->type = MSGPACK_OBJECT_POSITIVE_INTEGER;
        o->via.u64 = c;
        *pp = p + 1;
        return 0;
    } else if (c == 0xc0) {
        o->type = MSGPACK_OBJECT_NIL;
        *pp = p + 1;
        return 0;
    } else if (c == 0xcf && end - p >= 9) {
        o->type = MSGPACK_OBJECT_POSITIVE_INTEGER;
        o->via.u64 = jd_mp_be(p + 1, 8);
        *pp = p + 9;
        return 0;
    } else {
        return -1;
    }
    if (n > (size_t)(end - p) - h)
        return -1;
    o->type = MSGPACK_OBJECT_STR;
    o->via.str.ptr = (const char *)p + h;
    o->via.str.size = (uint32_t)n;
    *pp = p + h + n;
    return 0;
}

/* Packed msgpack read one object at a time, without building a tree: jd_mp_next reads
 * the next object, a scalar, a string, bin or ext (pointing into the bytes) or only a
 * container's head (type and *count; its items follow, 2 * count for a map). depth is
 * the object's nesting (0: the outermost). Returns 0, or -1 where jd_mp_unpack would
 * fail on it (a walk that also ends exactly at end gives jd_mp_unpack's verdict). */
typedef struct jd_mp_cursor {
    const unsigned char *p, *end;
} jd_mp_cursor;
/* Steps over the next object (at nesting depth) with jd_mp_next's checks, building
 * nothing. Returns 0, or -1 where jd_mp_unpack would fail on it. */
int jd_mp_skip_next(jd_mp_cursor *c, int depth);
/* jd_mp_next for what jd_mp_quick does not read. */
int jd_mp_next_any(jd_mp_cursor *c, msgpack_object *o, uint32_t *count, int depth);
static inline int jd_mp_next(jd_mp_cursor *c, msgpack_object *o, uint32_t *count, int depth)
{
    return jd_mp_quick(&c->p, c->end, o) == 0 ? 0 : jd_mp_next_any(c, o, count, depth);
}

/* Packs o as msgpack_pack_object does (the same bytes), with the header's inline packer
 * functions rather than the library's. */
void jd_mp_pack_object(msgpack_packer *pk, const msgpack_object *o);

/* Looks up key in a msgpack map (last occurrence wins, as in JSON objects). */
const msgpack_object *jd_mp_get(const msgpack_object *map, const char *key, size_t klen);
/* Follows a dotted path ("a.b.c") from a map. */
const msgpack_object *jd_mp_path(const msgpack_object *map, const char *path, size_t plen);

#endif
