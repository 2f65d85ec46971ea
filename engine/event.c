#include "event.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include "clock.h"

static const char *const type_names[JD_EV_NTYPES] = {
    "track", "identify", "page", "screen", "group", "alias", "timer", "tick",
};

static const msgpack_object empty_map = {.type = MSGPACK_OBJECT_MAP, .via.map = {0, NULL}};

const char *jd_event_type_name(jd_event_type t)
{
    return t < JD_EV_NTYPES ? type_names[t] : "?";
}

int jd_event_type_parse(const char *s, size_t n, jd_event_type *t)
{
    static const unsigned char lens[JD_EV_NTYPES] = {5, 8, 4, 6, 5, 5, 5, 4}; /* strlen(type_names[i]) */
    for (int i = 0; i < JD_EV_NTYPES; i++) {
        if (lens[i] == n && memcmp(type_names[i], s, n) == 0) {
            *t = (jd_event_type)i;
            return 0;
        }
    }
    return -1;
}

const msgpack_object *jd_mp_get(const msgpack_object *map, const char *key, size_t klen)
{
    if (!map || map->type != MSGPACK_OBJECT_MAP)
        return NULL;
    const msgpack_object *found = NULL;
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == klen && memcmp(k->via.str.ptr, key, klen) == 0)
            found = &map->via.map.ptr[i].val;
    }
    return found;
}

const msgpack_object *jd_mp_path(const msgpack_object *map, const char *path, size_t plen)
{
    const msgpack_object *o = map;
    size_t i = 0;
    while (o && i <= plen) {
        const char *dot = memchr(path + i, '.', plen - i);
        size_t seg = dot ? (size_t)(dot - (path + i)) : plen - i;
        o = jd_mp_get(o, path + i, seg);
        if (!dot)
            return o;
        i += seg + 1;
    }
    return o;
}

/* ---------------------------------------------------------------- reading msgpack */

/* msgpack-c's MSGPACK_EMBED_STACK_SIZE: it refuses a 33rd nested container, and so do we */
#define MP_MAX_DEPTH 32

typedef struct mp_reader {
    const unsigned char *p, *end;
    msgpack_zone *z;
} mp_reader;

/* What the next object's header says. */
enum { MP_SCALAR, MP_BODY, MP_ARRAY, MP_MAP };

/* Type bytes 0xc0..0xdf: how many bytes of value (or of length) follow the type byte;
 * a fixext's body (0xd4..0xd8) is not counted */
static const unsigned char mp_var_width[32] = {
    [0x04] = 1, [0x05] = 2, [0x06] = 4, [0x07] = 1, [0x08] = 2, [0x09] = 4, [0x0a] = 4, [0x0b] = 8,
    [0x0c] = 1, [0x0d] = 2, [0x0e] = 4, [0x0f] = 8, [0x10] = 1, [0x11] = 2, [0x12] = 4, [0x13] = 8,
    [0x19] = 1, [0x1a] = 2, [0x1b] = 4, [0x1c] = 2, [0x1d] = 4, [0x1e] = 2, [0x1f] = 4,
};

/* The header of a type byte 0xc0..0xdf (mp_head's rarer half). */
static int mp_head_var(mp_reader *r, unsigned c, msgpack_object *o, uint64_t *n)
{
    int w = mp_var_width[c - 0xc0];
    if ((size_t)(r->end - r->p) < (size_t)w)
        return -1;
    uint64_t v = jd_mp_be(r->p, w);
    r->p += w;
    switch (c) {
    case 0xc0: o->type = MSGPACK_OBJECT_NIL; return MP_SCALAR;
    case 0xc2:
    case 0xc3:
        o->type = MSGPACK_OBJECT_BOOLEAN;
        o->via.boolean = c == 0xc3;
        return MP_SCALAR;
    case 0xc4:
    case 0xc5:
    case 0xc6:
        o->type = MSGPACK_OBJECT_BIN;
        *n = v;
        return MP_BODY;
    case 0xc7:
    case 0xc8:
    case 0xc9:
        o->type = MSGPACK_OBJECT_EXT;
        *n = v + 1;
        return MP_BODY;
    case 0xca: {
        union {
            uint32_t i;
            float f;
        } m = {.i = (uint32_t)v};
        o->type = MSGPACK_OBJECT_FLOAT32;
        o->via.f64 = m.f;
        return MP_SCALAR;
    }
    case 0xcb: {
        union {
            uint64_t i;
            double f;
        } m = {.i = v};
        o->type = MSGPACK_OBJECT_FLOAT64;
        o->via.f64 = m.f;
        return MP_SCALAR;
    }
    case 0xcc:
    case 0xcd:
    case 0xce:
    case 0xcf:
        o->type = MSGPACK_OBJECT_POSITIVE_INTEGER;
        o->via.u64 = v;
        return MP_SCALAR;
    case 0xd0:
    case 0xd1:
    case 0xd2:
    case 0xd3: {
        int64_t s = c == 0xd0 ? (int8_t)v : c == 0xd1 ? (int16_t)v : c == 0xd2 ? (int32_t)v : (int64_t)v;
        if (s >= 0) {
            o->type = MSGPACK_OBJECT_POSITIVE_INTEGER;
            o->via.u64 = (uint64_t)s;
        } else {
            o->type = MSGPACK_OBJECT_NEGATIVE_INTEGER;
            o->via.i64 = s;
        }
        return MP_SCALAR;
    }
    case 0xd4:
    case 0xd5:
    case 0xd6:
    case 0xd7:
    case 0xd8:
        o->type = MSGPACK_OBJECT_EXT;
        *n = (1u << (c - 0xd4)) + 1;
        return MP_BODY;
    case 0xd9:
    case 0xda:
    case 0xdb:
        o->type = MSGPACK_OBJECT_STR;
        *n = v;
        return MP_BODY;
    case 0xdc:
    case 0xdd: *n = v; return MP_ARRAY;
    case 0xde:
    case 0xdf: *n = v; return MP_MAP;
    default: return -1; /* 0xc1: never used */
    }
}

/* Reads the next header: a scalar into o; for a string, bin or ext its type in o and
 * its body's length in *n (an ext's counts its type byte); for a container its count.
 * Returns the MP_ kind, or -1. */
static inline int mp_head(mp_reader *r, msgpack_object *o, uint64_t *n)
{
    if (r->p >= r->end)
        return -1;
    unsigned c = *r->p++;
    if (c >= 0xa0 && c <= 0xbf) {
        o->type = MSGPACK_OBJECT_STR;
        *n = c & 0x1f;
        return MP_BODY;
    }
    if (c <= 0x7f) {
        o->type = MSGPACK_OBJECT_POSITIVE_INTEGER;
        o->via.u64 = c;
        return MP_SCALAR;
    }
    if (c <= 0x9f) {
        *n = c & 0x0f;
        return c <= 0x8f ? MP_MAP : MP_ARRAY;
    }
    if (c >= 0xe0) {
        o->type = MSGPACK_OBJECT_NEGATIVE_INTEGER;
        o->via.i64 = (int8_t)c;
        return MP_SCALAR;
    }
    return mp_head_var(r, c, o, n);
}

/* A string, bin or ext body of n bytes: points into the input, like msgpack-c's. */
static inline int mp_body(mp_reader *r, msgpack_object *o, uint64_t n)
{
    if (n > (uint64_t)(r->end - r->p))
        return -1;
    if (o->type == MSGPACK_OBJECT_STR) {
        o->via.str.ptr = (const char *)r->p;
        o->via.str.size = (uint32_t)n;
    } else if (o->type == MSGPACK_OBJECT_EXT) {
        if (n == 0)
            return -1;
        o->via.ext.type = (int8_t)r->p[0];
        o->via.ext.ptr = (const char *)r->p + 1;
        o->via.ext.size = (uint32_t)(n - 1);
    } else if (o->type == MSGPACK_OBJECT_BIN) {
        o->via.bin.ptr = (const char *)r->p;
        o->via.bin.size = (uint32_t)n;
    }
    r->p += n;
    return 0;
}

/* A container's count is checked against the bytes left (every item takes one) before
 * anything is allocated for it, and against msgpack-c's nesting limit. */
static int mp_count_ok(const mp_reader *r, uint64_t n, int kind, int depth)
{
    return depth < MP_MAX_DEPTH && n <= (uint64_t)(r->end - r->p) / (kind == MP_MAP ? 2 : 1);
}

/* The common items without a call (jd_mp_quick). */
static inline int mp_quick(mp_reader *r, msgpack_object *o)
{
    return jd_mp_quick(&r->p, r->end, o);
}

static int mp_obj(mp_reader *r, msgpack_object *o, int depth);

/* One item of a container (or any object): the quick way when it can be. */
static inline int mp_item(mp_reader *r, msgpack_object *o, int depth)
{
    return mp_quick(r, o) == 0 ? 0 : mp_obj(r, o, depth);
}

static int mp_obj(mp_reader *r, msgpack_object *o, int depth)
{
    uint64_t n = 0;
    int kind = mp_head(r, o, &n);
    if (kind == MP_SCALAR)
        return 0;
    if (kind == MP_BODY)
        return mp_body(r, o, n);
    if (kind < 0 || !mp_count_ok(r, n, kind, depth))
        return -1;
    if (kind == MP_MAP) {
        msgpack_object_kv *kv = msgpack_zone_malloc(r->z, n * sizeof *kv);
        if (!kv)
            return -1;
        o->type = MSGPACK_OBJECT_MAP;
        o->via.map.ptr = kv;
        o->via.map.size = (uint32_t)n;
        for (uint64_t i = 0; i < n; i++)
            if (mp_item(r, &kv[i].key, depth + 1) || mp_item(r, &kv[i].val, depth + 1))
                return -1;
    } else {
        msgpack_object *a = msgpack_zone_malloc(r->z, n * sizeof *a);
        if (!a)
            return -1;
        o->type = MSGPACK_OBJECT_ARRAY;
        o->via.array.ptr = a;
        o->via.array.size = (uint32_t)n;
        for (uint64_t i = 0; i < n; i++)
            if (mp_item(r, &a[i], depth + 1))
                return -1;
    }
    return 0;
}

/* The whole size of an object by its type byte, for those with no length field and no
 * items; 0 for the others (containers; bin, str 8/16/32 and ext 8/16/32; 0xc1) */
#define MP_16(x) x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x
#define MP_ROW(...) __VA_ARGS__
static const unsigned char mp_size[256] = {
    MP_ROW(MP_16(1), MP_16(1), MP_16(1), MP_16(1), MP_16(1), MP_16(1), MP_16(1), MP_16(1)), /* positive fixint */
    MP_ROW(MP_16(0), MP_16(0)),                                                             /* fixmap, fixarray */
    MP_ROW(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16),                          /* fixstr */
    MP_ROW(17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32),
    MP_ROW(1, 0, 1, 1, 0, 0, 0, 0, 0, 0, 5, 9, 2, 3, 5, 9),   /* nil, bools; floats, uints */
    MP_ROW(2, 3, 5, 9, 3, 4, 6, 10, 18, 0, 0, 0, 0, 0, 0, 0), /* ints, fixexts */
    MP_ROW(MP_16(1), MP_16(1)),                               /* negative fixint */
};
#undef MP_ROW
#undef MP_16

/* Steps over the objects mp_size knows among the next *n in d[*i..len), one table
 * look-up each, until one it does not know, the end of the bytes or *n is 0. A string
 * cut short leaves *i past len. */
static inline void mp_skip_sized(const unsigned char *d, size_t len, size_t *i, uint64_t *n)
{
    size_t at = *i, size;
    uint64_t left = *n;
    while (left && at < len && (size = mp_size[d[at]]) != 0) {
        at += size;
        left--;
    }
    *i = at;
    *n = left;
}

/* Steps over n objects at nesting level depth (a record's values are at 1) without
 * building them: mp_obj's verdict on each (the same checks, the same limits), without
 * its zone, its objects or its recursion. */
static int mp_skip(mp_reader *r, uint64_t n, int depth)
{
    uint64_t outer[MP_MAX_DEPTH]; /* what is left of each enclosing container */
    int nouter = 0;
    const unsigned char *d = r->p;
    size_t len = (size_t)(r->end - r->p), i = 0;
    for (;;) {
        mp_skip_sized(d, len, &i, &n);
        if (i > len)
            return -1;
        if (n == 0) {
            if (nouter == 0) {
                r->p = d + i;
                return 0;
            }
            n = outer[--nouter];
            depth--;
            continue;
        }
        if (i == len)
            return -1;
        /* a container, or a length after the type byte */
        unsigned c = d[i++];
        uint64_t v;
        n--;
        if (c <= 0x9f) {
            v = c & 0x0f;
        } else {
            int w = mp_var_width[c - 0xc0];
            if (c == 0xc1 || len - i < (size_t)w)
                return -1; /* 0xc1: never used */
            v = jd_mp_be(d + i, w);
            i += (size_t)w;
        }
        if (c > 0x9f && c < 0xdc) { /* bin, str, ext (and its type byte) */
            v += c >= 0xc7 && c <= 0xc9;
            if (v > len - i)
                return -1;
            i += (size_t)v;
            continue;
        }
        /* mp_count_ok's limits: the nesting, and no more items than bytes left */
        int pairs = c <= 0x8f || c >= 0xde;
        if (depth >= MP_MAX_DEPTH || v > (len - i) >> pairs)
            return -1;
        outer[nouter++] = n;
        n = v << pairs;
        depth++;
    }
}

/* Like mp_obj, but a container is only checked, not built: o gets its type, an empty
 * item list. */
static int mp_shallow(mp_reader *r, msgpack_object *o, int depth)
{
    uint64_t n = 0;
    int kind = mp_head(r, o, &n);
    if (kind == MP_SCALAR)
        return 0;
    if (kind == MP_BODY)
        return mp_body(r, o, n);
    if (kind < 0 || !mp_count_ok(r, n, kind, depth))
        return -1;
    o->type = kind == MP_MAP ? MSGPACK_OBJECT_MAP : MSGPACK_OBJECT_ARRAY;
    o->via.array.ptr = NULL;
    o->via.array.size = 0;
    return mp_skip(r, kind == MP_MAP ? 2 * n : n, depth + 1);
}

int jd_mp_unpack(const void *data, size_t len, msgpack_zone *zone, msgpack_object *out)
{
    mp_reader r = {data, (const unsigned char *)data + len, zone};
    if (mp_obj(&r, out, 0) || r.p != r.end)
        return -1;
    return 0;
}

int jd_mp_map_spans(const void *data, size_t len, jd_mp_span *out, size_t max)
{
    mp_reader r = {data, (const unsigned char *)data + len, NULL};
    msgpack_object o;
    uint64_t n = 0;
    if (mp_head(&r, &o, &n) != MP_MAP || !mp_count_ok(&r, n, MP_MAP, 0))
        return -1;
    for (uint64_t i = 0; i < n; i++) {
        const unsigned char *start = r.p;
        msgpack_object k, v;
        if (mp_shallow(&r, &k, 1) || mp_shallow(&r, &v, 1))
            return -1;
        if (i < max) {
            out[i].key = k;
            out[i].p = (const char *)start;
            out[i].n = (size_t)(r.p - start);
        }
    }
    return r.p == r.end ? (int)n : -1;
}

int jd_mp_skip_next(jd_mp_cursor *c, int depth)
{
    mp_reader r = {c->p, c->end, NULL};
    if (mp_skip(&r, 1, depth))
        return -1;
    c->p = r.p;
    return 0;
}

int jd_mp_next_any(jd_mp_cursor *c, msgpack_object *o, uint32_t *count, int depth)
{
    mp_reader r = {c->p, c->end, NULL};
    uint64_t n = 0;
    int kind = mp_head(&r, o, &n);
    if (kind == MP_BODY) {
        if (mp_body(&r, o, n))
            return -1;
    } else if (kind != MP_SCALAR) {
        if (kind < 0 || !mp_count_ok(&r, n, kind, depth))
            return -1;
        o->type = kind == MP_MAP ? MSGPACK_OBJECT_MAP : MSGPACK_OBJECT_ARRAY;
        o->via.array.ptr = NULL;
        o->via.array.size = 0;
        *count = (uint32_t)n;
    }
    c->p = r.p;
    return 0;
}

void jd_mp_pack_object(msgpack_packer *pk, const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: msgpack_pack_nil(pk); break;
    case MSGPACK_OBJECT_BOOLEAN:
        if (o->via.boolean)
            msgpack_pack_true(pk);
        else
            msgpack_pack_false(pk);
        break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER: msgpack_pack_uint64(pk, o->via.u64); break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: msgpack_pack_int64(pk, o->via.i64); break;
    case MSGPACK_OBJECT_FLOAT32: msgpack_pack_float(pk, (float)o->via.f64); break;
    case MSGPACK_OBJECT_FLOAT64: msgpack_pack_double(pk, o->via.f64); break;
    case MSGPACK_OBJECT_STR:
        msgpack_pack_str(pk, o->via.str.size);
        msgpack_pack_str_body(pk, o->via.str.ptr, o->via.str.size);
        break;
    case MSGPACK_OBJECT_BIN:
        msgpack_pack_bin(pk, o->via.bin.size);
        msgpack_pack_bin_body(pk, o->via.bin.ptr, o->via.bin.size);
        break;
    case MSGPACK_OBJECT_EXT:
        msgpack_pack_ext(pk, o->via.ext.size, o->via.ext.type);
        msgpack_pack_ext_body(pk, o->via.ext.ptr, o->via.ext.size);
        break;
    case MSGPACK_OBJECT_ARRAY:
        msgpack_pack_array(pk, o->via.array.size);
        for (uint32_t i = 0; i < o->via.array.size; i++)
            jd_mp_pack_object(pk, &o->via.array.ptr[i]);
        break;
    case MSGPACK_OBJECT_MAP:
        msgpack_pack_map(pk, o->via.map.size);
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            jd_mp_pack_object(pk, &o->via.map.ptr[i].key);
            jd_mp_pack_object(pk, &o->via.map.ptr[i].val);
        }
        break;
    }
}

void jd_mp_pack_str(msgpack_packer *pk, const char *s, size_t n)
{
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

void jd_mp_pack_cstr(msgpack_packer *pk, const char *s)
{
    jd_mp_pack_str(pk, s, strlen(s));
}

static int is_present(const msgpack_object *o)
{
    return o && o->type != MSGPACK_OBJECT_NIL && !(o->type == MSGPACK_OBJECT_STR && o->via.str.size == 0);
}

/* The top-level fields normalisation reads, found in one pass (last occurrence wins, as
 * in JSON objects). */
typedef struct fields {
    const msgpack_object *type, *event, *userId, *anonymousId, *name, *timestamp, *originalTimestamp, *sentAt,
        *properties, *traits, *context, *groupId, *previousId, *messageId;
} fields;

static void scan_fields(const msgpack_object *in, fields *f)
{
    memset(f, 0, sizeof *f);
    static const struct {
        const char *k;
        size_t n;
        size_t off;
    } known[] = {
#define F(name) {#name, sizeof(#name) - 1, offsetof(fields, name)}
        F(type),   F(event),      F(userId), F(anonymousId), F(name),    F(timestamp),  F(originalTimestamp),
        F(sentAt), F(properties), F(traits), F(context),     F(groupId), F(previousId), F(messageId),
#undef F
    };
    for (uint32_t i = 0; i < in->via.map.size; i++) {
        const msgpack_object *k = &in->via.map.ptr[i].key;
        if (k->type != MSGPACK_OBJECT_STR)
            continue;
        for (size_t j = 0; j < sizeof known / sizeof known[0]; j++) {
            if (known[j].n == k->via.str.size && memcmp(known[j].k, k->via.str.ptr, known[j].n) == 0) {
                *(const msgpack_object **)((char *)f + known[j].off) = &in->via.map.ptr[i].val;
                break;
            }
        }
    }
}

#define FAIL(...)                           \
    do {                                    \
        snprintf(err, errlen, __VA_ARGS__); \
        goto fail;                          \
    } while (0)

int jd_event_normalize(const msgpack_object *in, int64_t default_ts, const char *default_id, jd_buf *out, char *err,
                       size_t errlen)
{
    jd_norm_opts o = {.default_ts = default_ts, .default_id = default_id};
    return jd_event_normalize_ex(in, &o, out, err, errlen);
}

/* Packs the item's context with the batch context's keys it lacks. */
static void pack_context(msgpack_packer *pk, const msgpack_object *ctx, const msgpack_object *batch)
{
    if (!batch || batch->type != MSGPACK_OBJECT_MAP || batch->via.map.size == 0) {
        msgpack_pack_object(pk, ctx && ctx->type == MSGPACK_OBJECT_MAP ? *ctx : empty_map);
        return;
    }
    const msgpack_object *c = ctx && ctx->type == MSGPACK_OBJECT_MAP ? ctx : &empty_map;
    uint32_t extra = 0;
    for (uint32_t i = 0; i < batch->via.map.size; i++) {
        const msgpack_object *k = &batch->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && !jd_mp_get(c, k->via.str.ptr, k->via.str.size))
            extra++;
    }
    msgpack_pack_map(pk, c->via.map.size + extra);
    for (uint32_t i = 0; i < batch->via.map.size; i++) {
        const msgpack_object *k = &batch->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && !jd_mp_get(c, k->via.str.ptr, k->via.str.size)) {
            msgpack_pack_object(pk, *k);
            msgpack_pack_object(pk, batch->via.map.ptr[i].val);
        }
    }
    for (uint32_t i = 0; i < c->via.map.size; i++) {
        msgpack_pack_object(pk, c->via.map.ptr[i].key);
        msgpack_pack_object(pk, c->via.map.ptr[i].val);
    }
}

static jd_str str_of(const msgpack_object *o)
{
    jd_str s = {"", 0};
    if (o && o->type == MSGPACK_OBJECT_STR) {
        s.p = o->via.str.ptr;
        s.n = o->via.str.size;
    }
    return s;
}

/* An id as text: strings as they are, integers formatted into buf. Returns 1 when set,
 * 0 when absent (nil or empty), -1 for a wrong type. */
static int id_of(const msgpack_object *o, jd_str *out, char buf[24])
{
    int n;
    if (!o || o->type == MSGPACK_OBJECT_NIL)
        return 0;
    switch (o->type) {
    case MSGPACK_OBJECT_STR:
        if (o->via.str.size == 0)
            return 0;
        out->p = o->via.str.ptr;
        out->n = o->via.str.size;
        return 1;
    case MSGPACK_OBJECT_POSITIVE_INTEGER: n = snprintf(buf, 24, "%llu", (unsigned long long)o->via.u64); break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: n = snprintf(buf, 24, "%lld", (long long)o->via.i64); break;
    default: return -1;
    }
    out->p = buf;
    out->n = (size_t)n;
    return 1;
}

#undef FAIL
#define FAIL(...)                           \
    do {                                    \
        snprintf(err, errlen, __VA_ARGS__); \
        return -1;                          \
    } while (0)

int jd_event_prepare(const msgpack_object *in, const jd_norm_opts *opt, jd_event *ev, jd_event_ids ids, char *err,
                     size_t errlen)
{
    memset(ev, 0, sizeof *ev);
    ev->map[JD_MAP_PROPERTIES].tree = ev->map[JD_MAP_TRAITS].tree = ev->map[JD_MAP_CONTEXT].tree = &empty_map;
    ev->user_id = ev->anonymous_id = ev->name = ev->message_id = ev->group_id = ev->previous_id = (jd_str){"", 0};
    if (in->type != MSGPACK_OBJECT_MAP)
        FAIL("an event must be a JSON object");
    fields f;
    scan_fields(in, &f);

    jd_event_type t;
    if (opt->force_type) {
        t = opt->type;
    } else if (!is_present(f.type)) {
        if (!is_present(f.event))
            FAIL("missing \"type\"");
        t = JD_EV_TRACK;
    } else if (f.type->type != MSGPACK_OBJECT_STR ||
               jd_event_type_parse(f.type->via.str.ptr, f.type->via.str.size, &t) || t >= JD_EV_TIMER) {
        FAIL("\"type\" must be one of track, identify, page, screen, group, alias");
    }
    ev->type = t;

    int ru = id_of(f.userId, &ev->user_id, ids[0]);
    int ra = id_of(f.anonymousId, &ev->anonymous_id, ids[1]);
    if (ru < 0)
        FAIL("\"userId\" must be a string");
    if (ra < 0)
        FAIL("\"anonymousId\" must be a string");
    if (ru == 0 && ra == 0)
        FAIL("missing \"userId\" or \"anonymousId\"");
    ev->has_user_id = ru == 1;
    if (!ev->has_user_id)
        ev->user_id = ev->anonymous_id;

    if (t == JD_EV_TRACK) {
        if (!f.event || f.event->type != MSGPACK_OBJECT_STR || f.event->via.str.size == 0)
            FAIL("a track event needs a non-empty string \"event\"");
        ev->name = str_of(f.event);
    } else if (t == JD_EV_PAGE || t == JD_EV_SCREEN) {
        if (f.name && f.name->type != MSGPACK_OBJECT_STR && f.name->type != MSGPACK_OBJECT_NIL)
            FAIL("\"name\" must be a string");
        ev->name = str_of(f.name);
    }

    int64_t ts = opt->default_ts;
    const msgpack_object *tso = is_present(f.timestamp) ? f.timestamp : f.originalTimestamp;
    if (is_present(tso)) {
        if (tso->type != MSGPACK_OBJECT_STR || jd_time_parse(tso->via.str.ptr, tso->via.str.size, &ts))
            FAIL("\"timestamp\" must be an ISO 8601 date-time with a zone");
        /* Segment's clock-skew rule: the sender's clock is off by sentAt - receivedAt */
        const msgpack_object *sent = is_present(f.sentAt) ? f.sentAt : opt->sent_at;
        int64_t sent_ms;
        if (opt->received_ms > 0 && is_present(sent) && sent->type == MSGPACK_OBJECT_STR &&
            jd_time_parse(sent->via.str.ptr, sent->via.str.size, &sent_ms) == 0)
            ts += opt->received_ms - sent_ms;
    } else if (opt->received_ms > 0) {
        ts = opt->received_ms;
    }
    ev->timestamp = ts;
    ev->received_at = opt->received_ms > 0 ? opt->received_ms : 0;

    if (f.properties && f.properties->type != MSGPACK_OBJECT_MAP && f.properties->type != MSGPACK_OBJECT_NIL)
        FAIL("\"properties\" must be an object");
    if (f.traits && f.traits->type != MSGPACK_OBJECT_MAP && f.traits->type != MSGPACK_OBJECT_NIL)
        FAIL("\"traits\" must be an object");
    if (f.context && f.context->type != MSGPACK_OBJECT_MAP && f.context->type != MSGPACK_OBJECT_NIL)
        FAIL("\"context\" must be an object");
    if (f.properties && f.properties->type == MSGPACK_OBJECT_MAP)
        ev->map[JD_MAP_PROPERTIES].tree = f.properties;
    if (f.context && f.context->type == MSGPACK_OBJECT_MAP)
        ev->map[JD_MAP_CONTEXT].tree = f.context;
    if (f.traits && f.traits->type == MSGPACK_OBJECT_MAP) {
        ev->map[JD_MAP_TRAITS].tree = f.traits;
    } else {
        /* Segment puts a track call's user traits in context.traits */
        const msgpack_object *ct = jd_mp_get(ev->map[JD_MAP_CONTEXT].tree, "traits", 6);
        if (ct && ct->type == MSGPACK_OBJECT_MAP)
            ev->map[JD_MAP_TRAITS].tree = ct;
    }

    /* the id a group or alias call is about must be usable; elsewhere it is ignored */
    int rg = id_of(f.groupId, &ev->group_id, ids[2]);
    int rp = id_of(f.previousId, &ev->previous_id, ids[3]);
    if (t == JD_EV_GROUP && rg < 0)
        FAIL("\"groupId\" must be a string");
    if (t == JD_EV_ALIAS && rp < 0)
        FAIL("\"previousId\" must be a string");
    if (rg < 0)
        ev->group_id = (jd_str){"", 0};
    if (rp < 0)
        ev->previous_id = (jd_str){"", 0};
    if (t == JD_EV_GROUP && rg <= 0)
        FAIL("a group event needs \"groupId\"");
    if (t == JD_EV_ALIAS && (rp <= 0 || !ev->has_user_id))
        FAIL("an alias event needs \"previousId\" and \"userId\"");

    if (is_present(f.messageId)) {
        if (f.messageId->type != MSGPACK_OBJECT_STR && f.messageId->type != MSGPACK_OBJECT_POSITIVE_INTEGER &&
            f.messageId->type != MSGPACK_OBJECT_NEGATIVE_INTEGER)
            FAIL("\"messageId\" must be a string");
        id_of(f.messageId, &ev->message_id, ids[4]);
    } else if (opt->default_id) {
        ev->message_id = (jd_str){opt->default_id, strlen(opt->default_id)};
    } else {
        FAIL("missing \"messageId\"");
    }
    return opt->batch_context && opt->batch_context->type == MSGPACK_OBJECT_MAP && opt->batch_context->via.map.size ? 1
                                                                                                                    : 0;
}

static void pack_str_or_nil(msgpack_packer *pk, jd_str s)
{
    if (s.n)
        jd_mp_pack_str(pk, s.p, s.n);
    else
        msgpack_pack_nil(pk);
}

void jd_event_pack(const jd_event *ev, const msgpack_object *batch_context, jd_buf *out)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, jd_buf_msgpack_write);
    /* fixed order, every key present: readers can rely on the shape */
    msgpack_pack_map(&pk, 13);
    jd_mp_pack_cstr(&pk, "type");
    jd_mp_pack_cstr(&pk, jd_event_type_name(ev->type));
    jd_mp_pack_cstr(&pk, "messageId");
    jd_mp_pack_str(&pk, ev->message_id.p, ev->message_id.n);
    jd_mp_pack_cstr(&pk, "timestamp");
    msgpack_pack_int64(&pk, ev->timestamp);
    jd_mp_pack_cstr(&pk, "userId");
    pack_str_or_nil(&pk, ev->has_user_id ? ev->user_id : (jd_str){"", 0});
    jd_mp_pack_cstr(&pk, "anonymousId");
    pack_str_or_nil(&pk, ev->anonymous_id);
    jd_mp_pack_cstr(&pk, "event");
    pack_str_or_nil(&pk, ev->name);
    jd_mp_pack_cstr(&pk, "properties");
    msgpack_pack_object(&pk, *jd_event_properties(ev));
    jd_mp_pack_cstr(&pk, "traits");
    msgpack_pack_object(&pk, *jd_event_traits(ev));
    jd_mp_pack_cstr(&pk, "context");
    pack_context(&pk, jd_event_context(ev), batch_context);
    jd_mp_pack_cstr(&pk, "groupId");
    pack_str_or_nil(&pk, ev->group_id);
    jd_mp_pack_cstr(&pk, "previousId");
    pack_str_or_nil(&pk, ev->previous_id);
    jd_mp_pack_cstr(&pk, "receivedAt");
    if (ev->received_at > 0)
        msgpack_pack_int64(&pk, ev->received_at);
    else
        msgpack_pack_nil(&pk);
    jd_mp_pack_cstr(&pk, "v");
    msgpack_pack_uint8(&pk, 1); /* record format version */
}

void jd_event_pack_tick(int64_t t, jd_buf *out)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, jd_buf_msgpack_write);
    msgpack_pack_map(&pk, 3);
    jd_mp_pack_cstr(&pk, "type");
    jd_mp_pack_cstr(&pk, "tick");
    jd_mp_pack_cstr(&pk, "receivedAt");
    msgpack_pack_int64(&pk, t);
    jd_mp_pack_cstr(&pk, "v");
    msgpack_pack_uint8(&pk, 1);
}

int jd_event_normalize_ex(const msgpack_object *in, const jd_norm_opts *opt, jd_buf *out, char *err, size_t errlen)
{
    jd_event ev;
    jd_event_ids ids;
    if (jd_event_prepare(in, opt, &ev, ids, err, errlen) < 0)
        return -1;
    jd_event_pack(&ev, opt->batch_context, out);
    return 0;
}

/* The top-level fields of a record the view reads. */
typedef enum view_fld {
    FLD_OTHER,
    FLD_TYPE,
    FLD_EVENT,
    FLD_USER_ID,
    FLD_ANONYMOUS_ID,
    FLD_MESSAGE_ID,
    FLD_GROUP_ID,
    FLD_PREVIOUS_ID,
    FLD_TIMESTAMP,
    FLD_RECEIVED_AT,
    FLD_LINK,
    FLD_PROPERTIES, /* from here on: the maps, in jd_event_map_id's order */
    FLD_TRAITS,
    FLD_CONTEXT,
    FLD_FOLD,
} view_fld;

static inline view_fld field_of(const char *kp, size_t n)
{
    switch (n) {
    case 4: return memcmp(kp, "type", 4) == 0 ? FLD_TYPE : FLD_OTHER;
    case 5: return memcmp(kp, "event", 5) == 0 ? FLD_EVENT : FLD_OTHER;
    case 6:
        if (memcmp(kp, "userId", 6) == 0)
            return FLD_USER_ID;
        return memcmp(kp, "traits", 6) == 0 ? FLD_TRAITS : FLD_OTHER;
    case 7:
        if (memcmp(kp, "context", 7) == 0)
            return FLD_CONTEXT;
        if (memcmp(kp, "groupId", 7) == 0)
            return FLD_GROUP_ID;
        if (memcmp(kp, "jd_link", 7) == 0)
            return FLD_LINK;
        return memcmp(kp, "jd_fold", 7) == 0 ? FLD_FOLD : FLD_OTHER;
    case 9:
        if (memcmp(kp, "messageId", 9) == 0)
            return FLD_MESSAGE_ID;
        return memcmp(kp, "timestamp", 9) == 0 ? FLD_TIMESTAMP : FLD_OTHER;
    case 10:
        if (memcmp(kp, "receivedAt", 10) == 0)
            return FLD_RECEIVED_AT;
        if (memcmp(kp, "properties", 10) == 0)
            return FLD_PROPERTIES;
        return memcmp(kp, "previousId", 10) == 0 ? FLD_PREVIOUS_ID : FLD_OTHER;
    case 11: return memcmp(kp, "anonymousId", 11) == 0 ? FLD_ANONYMOUS_ID : FLD_OTHER;
    default: return FLD_OTHER;
    }
}

/* Out of line: the view's field switch stays a leaf. */
static int type_parse(const char *s, size_t n, jd_event_type *t) __attribute__((noinline));
static int type_parse(const char *s, size_t n, jd_event_type *t)
{
    return jd_event_type_parse(s, n, t);
}

/* One top-level field of a record into the view (a later occurrence wins). Inlined:
 * it runs for every field of every record. */
static inline __attribute__((always_inline)) void view_set(jd_event *ev, view_fld f, const msgpack_object *v,
                                                           int *have_type)
{
    switch (f) {
    case FLD_OTHER: break;
    case FLD_TYPE:
        if (v->type == MSGPACK_OBJECT_STR)
            *have_type = type_parse(v->via.str.ptr, v->via.str.size, &ev->type) == 0;
        break;
    case FLD_EVENT: ev->name = str_of(v); break;
    case FLD_USER_ID: ev->user_id = str_of(v); break;
    case FLD_ANONYMOUS_ID: ev->anonymous_id = str_of(v); break;
    case FLD_MESSAGE_ID: ev->message_id = str_of(v); break;
    case FLD_GROUP_ID: ev->group_id = str_of(v); break;
    case FLD_PREVIOUS_ID: ev->previous_id = str_of(v); break;
    case FLD_TIMESTAMP:
        if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
            ev->timestamp = (int64_t)v->via.u64;
        else if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
            ev->timestamp = v->via.i64;
        break;
    case FLD_RECEIVED_AT:
        if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
            ev->received_at = (int64_t)v->via.u64;
        break;
    case FLD_LINK:
        if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
            ev->link = v->via.u64;
        break;
    case FLD_PROPERTIES:
    case FLD_TRAITS:
    case FLD_CONTEXT:
    case FLD_FOLD:
        if (v->type == MSGPACK_OBJECT_MAP)
            ev->map[f - FLD_PROPERTIES] = (jd_event_lazy){v, NULL, 0};
        break;
    }
}

static void view_init(jd_event *ev)
{
    memset(ev, 0, sizeof *ev);
    ev->map[JD_MAP_PROPERTIES].tree = ev->map[JD_MAP_TRAITS].tree = ev->map[JD_MAP_CONTEXT].tree = &empty_map;
}

static int view_finish(jd_event *ev, int have_type)
{
    if (!have_type)
        return -1;
    if (ev->type == JD_EV_TICK)
        return ev->received_at > 0 ? 0 : -1;
    ev->has_user_id = ev->user_id.n > 0;
    if (ev->user_id.n == 0)
        ev->user_id = ev->anonymous_id;
    if (ev->user_id.n == 0 || ev->message_id.n == 0)
        return -1;
    return 0;
}

int jd_event_view(const msgpack_object *root, jd_event *ev)
{
    if (root->type != MSGPACK_OBJECT_MAP)
        return -1;
    view_init(ev);
    ev->root = root;
    int have_type = 0;
    for (uint32_t i = 0; i < root->via.map.size; i++) {
        const msgpack_object *k = &root->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR)
            view_set(ev, field_of(k->via.str.ptr, k->via.str.size), &root->via.map.ptr[i].val, &have_type);
    }
    return view_finish(ev, have_type);
}

/* The key at position i of a record as jd_event_pack writes them (its order, fixstr
 * keys), checked byte for byte: its field, with *used set; -1 when it is another.
 * Always inlined: with two callers gcc made it a call, and each key cost twice. */
static inline __attribute__((always_inline)) int record_key(uint64_t i, const unsigned char *p, size_t left,
                                                            size_t *used)
{
#define KEY(packed, fld)                                                          \
    if (left >= sizeof packed - 1 && memcmp(p, packed, sizeof packed - 1) == 0) { \
        *used = sizeof packed - 1;                                                \
        return fld;                                                               \
    }                                                                             \
    return -1
    /* a fixstr header (0xa0 | length, in octal), then the name */
    switch (i) {
    case 0: KEY("\244type", FLD_TYPE);
    case 1: KEY("\251messageId", FLD_MESSAGE_ID);
    case 2: KEY("\251timestamp", FLD_TIMESTAMP);
    case 3: KEY("\246userId", FLD_USER_ID);
    case 4: KEY("\253anonymousId", FLD_ANONYMOUS_ID);
    case 5: KEY("\245event", FLD_EVENT);
    case 6: KEY("\252properties", FLD_PROPERTIES);
    case 7: KEY("\246traits", FLD_TRAITS);
    case 8: KEY("\247context", FLD_CONTEXT);
    case 9: KEY("\247groupId", FLD_GROUP_ID);
    case 10: KEY("\252previousId", FLD_PREVIOUS_ID);
    case 11: KEY("\252receivedAt", FLD_RECEIVED_AT);
    case 12: KEY("\241v", FLD_OTHER);
    default: return -1;
    }
#undef KEY
}

void jd_event_peek_ids(const void *rec, size_t len, jd_event_peek *out)
{
    mp_reader r = {rec, (const unsigned char *)rec + len, NULL};
    memset(out, 0, sizeof *out);
    unsigned c = len ? *r.p : 0;
    uint64_t n;
    if (c >= 0x80 && c <= 0x8f) { /* fixmap; a record's fields fit one (else: no hint) */
        n = c & 0x0f;
        r.p++;
    } else {
        return;
    }
    /* type, messageId, timestamp, userId, anonymousId: scalars, in this order */
    for (uint64_t i = 0; i < n && i < 5; i++) {
        size_t used;
        msgpack_object v;
        int f = record_key(i, r.p, (size_t)(r.end - r.p), &used);
        if (f < 0)
            return;
        r.p += used;
        if (mp_quick(&r, &v)) { /* a timestamp other than uint64 (mp_quick's) */
            static const unsigned char int_len[] = {2, 3, 5, 9, 2, 3, 5, 9}; /* 0xcc..0xd3 */
            unsigned t = r.p < r.end ? *r.p : 0;
            size_t w = t >= 0xe0 ? 1 : t >= 0xcc && t <= 0xd3 ? int_len[t - 0xcc] : 0;
            if (!w || w > (size_t)(r.end - r.p))
                return;
            r.p += w;
            continue;
        }
        if (f == FLD_TIMESTAMP && v.type == MSGPACK_OBJECT_POSITIVE_INTEGER && v.via.u64 <= INT64_MAX) {
            out->timestamp = (int64_t)v.via.u64;
            out->has_timestamp = 1;
        }
        if (v.type != MSGPACK_OBJECT_STR)
            continue;
        jd_str s = {v.via.str.ptr, v.via.str.size};
        if (f == FLD_MESSAGE_ID)
            out->message_id = s;
        else if (f == FLD_USER_ID)
            out->user_id = s;
        else if (f == FLD_ANONYMOUS_ID)
            out->anonymous_id = s;
    }
}

const msgpack_object *jd_event_map_build(const jd_event *ev, jd_event_map_id m)
{
    const jd_event_lazy *in = &ev->map[m];
    if (in->tree || !in->raw)
        return in->tree;
    /* the memo (see jd_event_lazy): raw is set only in jd_event_read's caller's view */
    jd_event_lazy *memo = (jd_event_lazy *)in;
    mp_reader r = {in->raw, in->raw + in->len, ev->zone};
    msgpack_object *tree = msgpack_zone_malloc(ev->zone, sizeof *tree);
    /* jd_event_read checked these bytes: only the zone running out of memory can fail */
    if (!tree || mp_obj(&r, tree, 1) || r.p != r.end)
        abort();
    memo->tree = tree;
    return tree;
}

int jd_event_read(const void *rec, size_t len, msgpack_zone *zone, jd_event *ev)
{
    mp_reader r = {rec, (const unsigned char *)rec + len, zone};
    msgpack_object root;
    uint64_t n = 0;
    if (mp_head(&r, &root, &n) != MP_MAP || !mp_count_ok(&r, n, MP_MAP, 0))
        return -1; /* not a map (or not msgpack): not a record either way */
    view_init(ev);
    ev->zone = zone;
    int have_type = 0;
    for (uint64_t i = 0; i < n; i++) {
        view_fld f = FLD_OTHER;
        msgpack_object k, v;
        size_t used;
        int rk = record_key(i, r.p, (size_t)(r.end - r.p), &used);
        if (rk >= 0) {
            f = (view_fld)rk;
            r.p += used;
        } else {
            if (mp_shallow(&r, &k, 1))
                return -1;
            if (k.type == MSGPACK_OBJECT_STR)
                f = field_of(k.via.str.ptr, k.via.str.size);
        }
        if (f >= FLD_PROPERTIES) {
            /* a map's bytes, checked, for jd_event_map to build if asked (a later map wins,
             * anything else is ignored, as view_set does) */
            const unsigned char *start = r.p;
            unsigned c = r.p < r.end ? *r.p : 0xc1;
            if (c == 0x80) { /* {} */
                r.p++;
                ev->map[f - FLD_PROPERTIES] = (jd_event_lazy){&empty_map, NULL, 0};
                continue;
            }
            if (c > 0x80 && c <= 0x8f) {
                /* a fixmap (mp_count_ok's limit), its items at level 2: mp_skip's first
                 * steps, without a call for a map of strings and numbers */
                size_t left = (size_t)(r.end - ++r.p), at = 0;
                uint64_t items = 2 * (c & 0x0f);
                if ((c & 0x0f) > left / 2)
                    return -1;
                mp_skip_sized(r.p, left, &at, &items);
                if (at > left)
                    return -1;
                r.p += at;
                if (items && mp_skip(&r, items, 2))
                    return -1;
            } else if (mp_skip(&r, 1, 1)) {
                return -1;
            }
            if ((c >= 0x80 && c <= 0x8f) || c == 0xde || c == 0xdf)
                ev->map[f - FLD_PROPERTIES] = (jd_event_lazy){NULL, start, (size_t)(r.p - start)};
            continue;
        }
        if (mp_quick(&r, &v) && mp_shallow(&r, &v, 1))
            return -1;
        view_set(ev, f, &v, &have_type);
    }
    if (r.p != r.end)
        return -1;
    return view_finish(ev, have_type);
}
