#include "user.h"

#include <stdlib.h>
#include <string.h>

#include "event.h"

/* The id lives in the person's own allocation, after the struct (one block, and read
 * with it). */
jd_user *jd_user_new(const char *id, size_t n)
{
    jd_user *u = jd_xcalloc(1, sizeof *u + n + 1);
    u->id = (char *)(u + 1);
    if (n)
        memcpy(u->id, id, n);
    u->idlen = n;
    jd_buf_init(&u->traits);
    return u;
}

void jd_instance_free(jd_instance *i)
{
    if (i->key != (char *)(i + 1)) /* not the key jd_user_instance_add put inline */
        free(i->key);
    free(i);
}

void jd_user_free(jd_user *u)
{
    if (!u)
        return;
    for (jd_instance *i = u->instances, *nx; i; i = nx) {
        nx = i->next;
        jd_instance_free(i);
    }
    for (jd_instance *i = u->pinned, *nx; i; i = nx) {
        nx = i->next;
        jd_instance_free(i);
    }
    for (size_t i = 0; i < u->nsegments; i++)
        free(u->segments[i]);
    free(u->segments);
    free(u->decisions);
    free(u->sent);
    jd_buf_free(&u->traits);
    free(u);
}

static const msgpack_object empty_map = {.type = MSGPACK_OBJECT_MAP, .via.map = {0, NULL}};

const msgpack_object *jd_user_traits(const jd_user *u, msgpack_zone *zone, msgpack_object *out)
{
    if (u->traits.len == 0)
        return &empty_map;
    if (jd_mp_unpack(u->traits.data, u->traits.len, zone, out) || out->type != MSGPACK_OBJECT_MAP)
        return &empty_map;
    return out;
}

static int key_eq(const msgpack_object *a, const msgpack_object *b)
{
    return a->type == MSGPACK_OBJECT_STR && b->type == MSGPACK_OBJECT_STR && a->via.str.size == b->via.str.size &&
           memcmp(a->via.str.ptr, b->via.str.ptr, a->via.str.size) == 0;
}

static int span_key_eq(const jd_mp_span *a, const msgpack_object *b)
{
    return key_eq(&a->key, b);
}

/* Keeps merged traits: nothing changes when they are the bytes the person has (an
 * identify with the same traits); they go into the person's allocation when they fit it
 * and take at least half of it; else the allocation becomes exactly their size (a
 * buffer's first 256 bytes would double the memory of a typical profile, and a profile
 * that shrank should not keep what it no longer uses). */
static void traits_store(jd_buf *t, const jd_buf *in)
{
    if (in->len == t->len && memcmp(in->data, t->data, in->len) == 0)
        return;
    if (in->len >= t->cap || in->len + 1 < t->cap / 2) {
        t->data = jd_xrealloc(t->data, in->len + 1);
        t->cap = in->len + 1;
    }
    memcpy(t->data, in->data, in->len);
    t->len = in->len;
}

/* The old traits are copied as the bytes they are (they were written here, as
 * msgpack_pack_object writes them, so repacking them would give the same bytes); the
 * new ones are packed. The merged map is packed into scratch, then kept (traits_store). */
void jd_user_merge_traits(jd_user *u, const msgpack_object *m, jd_buf *scratch)
{
    if (!m || m->type != MSGPACK_OBJECT_MAP || m->via.map.size == 0)
        return;
    jd_mp_span small[32], *old = small;
    int on = u->traits.len ? jd_mp_map_spans(u->traits.data, u->traits.len, small, 32) : 0;
    if (on > 32) {
        old = jd_xmalloc((size_t)on * sizeof *old);
        jd_mp_map_spans(u->traits.data, u->traits.len, old, (size_t)on);
    }
    if (on < 0) /* unreadable: as if empty (jd_user_traits reads it so) */
        on = 0;
    jd_buf own, *out = scratch ? scratch : &own;
    if (!scratch)
        jd_buf_init(&own);
    jd_buf_reset(out);
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, jd_buf_msgpack_write);
    /* count survivors: old keys not overridden, new keys (last occurrence) not nil */
    uint32_t count = 0;
    unsigned char keep_small[32], *keep = on > 32 ? jd_xmalloc((size_t)on) : keep_small;
    for (int i = 0; i < on; i++) {
        int overridden = 0;
        for (uint32_t j = 0; j < m->via.map.size && !overridden; j++)
            overridden = span_key_eq(&old[i], &m->via.map.ptr[j].key);
        keep[i] = (unsigned char)!overridden;
        count += !overridden;
    }
    for (uint32_t j = 0; j < m->via.map.size; j++) {
        int later = 0;
        for (uint32_t k = j + 1; k < m->via.map.size && !later; k++)
            later = key_eq(&m->via.map.ptr[j].key, &m->via.map.ptr[k].key);
        if (!later && m->via.map.ptr[j].val.type != MSGPACK_OBJECT_NIL)
            count++;
    }
    msgpack_pack_map(&pk, count);
    for (int i = 0; i < on; i++)
        if (keep[i])
            jd_buf_append(out, old[i].p, old[i].n);
    for (uint32_t j = 0; j < m->via.map.size; j++) {
        int later = 0;
        for (uint32_t k = j + 1; k < m->via.map.size && !later; k++)
            later = key_eq(&m->via.map.ptr[j].key, &m->via.map.ptr[k].key);
        if (!later && m->via.map.ptr[j].val.type != MSGPACK_OBJECT_NIL) {
            jd_mp_pack_object(&pk, &m->via.map.ptr[j].key);
            jd_mp_pack_object(&pk, &m->via.map.ptr[j].val);
        }
    }
    if (old != small)
        free(old);
    if (keep != keep_small)
        free(keep);
    traits_store(&u->traits, out);
    if (!scratch)
        jd_buf_free(&own);
}

static size_t seg_find(const jd_user *u, const char *name, size_t n, int *found)
{
    size_t lo = 0, hi = u->nsegments;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const char *s = u->segments[mid];
        size_t sl = strlen(s);
        size_t m = sl < n ? sl : n;
        int c = memcmp(s, name, m);
        if (c == 0)
            c = sl < n ? -1 : sl > n;
        if (c == 0) {
            *found = 1;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = 0;
    return lo;
}

int jd_user_in_segment(const jd_user *u, const char *name, size_t n)
{
    int found;
    seg_find(u, name, n, &found);
    return found;
}

int jd_user_segment_add(jd_user *u, const char *name, size_t n)
{
    int found;
    size_t at = seg_find(u, name, n, &found);
    if (found)
        return 0;
    u->segments = jd_xrealloc(u->segments, (u->nsegments + 1) * sizeof *u->segments);
    memmove(&u->segments[at + 1], &u->segments[at], (u->nsegments - at) * sizeof *u->segments);
    u->segments[at] = jd_strndup(name, n);
    u->nsegments++;
    return 1;
}

int jd_user_segment_remove(jd_user *u, const char *name, size_t n)
{
    int found;
    size_t at = seg_find(u, name, n, &found);
    if (!found)
        return 0;
    free(u->segments[at]);
    memmove(&u->segments[at], &u->segments[at + 1], (u->nsegments - at - 1) * sizeof *u->segments);
    u->nsegments--;
    return 1;
}

jd_instance *jd_user_instance(jd_user *u, int journey, const char *key, size_t keylen)
{
    for (jd_instance *i = u->instances; i; i = i->next)
        if (i->journey == journey && i->keylen == keylen && memcmp(i->key, key, keylen) == 0)
            return i;
    return NULL;
}

jd_instance *jd_user_instance_add(jd_user *u, int journey, const char *key, size_t keylen)
{
    jd_instance *i = jd_xcalloc(1, sizeof *i + keylen + 1); /* the key inline, after it */
    i->journey = journey;
    i->key = (char *)(i + 1);
    if (keylen)
        memcpy(i->key, key, keylen);
    i->keylen = keylen;
    i->status = JD_INST_EXITED;
    /* append: instances are visited in creation order */
    jd_instance **pp = &u->instances;
    while (*pp)
        pp = &(*pp)->next;
    *pp = i;
    return i;
}

const char *jd_decision_kind_name(int kind)
{
    static const char *const names[JD_DEC_NKINDS] = {
        "entered", "moved", "timer", "action", "converted", "exited", "error", "deferred", "suppressed",
    };
    return kind >= 0 && kind < JD_DEC_NKINDS ? names[kind] : "?";
}

/* A packed decision: time (8 bytes, native order), kind (1), journey (2), stage (2),
 * the detail's length (1), the detail (no NUL). */
#define DEC_HEAD 14

static size_t dec_size(const uint8_t *p)
{
    return DEC_HEAD + p[DEC_HEAD - 1];
}

void jd_user_decide(jd_user *u, int cap, const jd_decision *d)
{
    if (cap <= 0)
        return;
    _Static_assert(sizeof d->detail <= 256, "a detail's length takes one byte");
    const char *nul = memchr(d->detail, '\0', sizeof d->detail);
    size_t dn = nul ? (size_t)(nul - d->detail) : sizeof d->detail - 1, need = DEC_HEAD + dn;
    /* the oldest go while there are cap (a smaller cap after a restart drops more), or
     * the new one would not fit in 64 KB */
    size_t drop = 0;
    for (; u->ndecisions > 0 &&
           (u->ndecisions >= cap || u->ndecisions == UINT16_MAX || u->dec_len - drop + need > UINT16_MAX);
         u->ndecisions--)
        drop += dec_size(u->decisions + drop);
    if (drop) {
        memmove(u->decisions, u->decisions + drop, u->dec_len - drop);
        u->dec_len = (uint16_t)(u->dec_len - drop);
    }
    if (u->dec_len + need > u->dec_cap) {
        size_t c = u->dec_cap + u->dec_cap / 2;
        if (c < u->dec_len + need)
            c = u->dec_len + need;
        if (c > UINT16_MAX)
            c = UINT16_MAX;
        u->decisions = jd_xrealloc(u->decisions, c);
        u->dec_cap = (uint16_t)c;
    }
    uint8_t *p = u->decisions + u->dec_len;
    memcpy(p, &d->time, 8);
    p[8] = d->kind;
    memcpy(p + 9, &d->journey, 2);
    memcpy(p + 11, &d->stage, 2);
    p[13] = (uint8_t)dn;
    memcpy(p + DEC_HEAD, d->detail, dn);
    u->dec_len = (uint16_t)(u->dec_len + need);
    u->ndecisions++;
}

const jd_decision *jd_user_decision(const jd_user *u, int i, jd_decision *out)
{
    const uint8_t *p = u->decisions;
    for (int k = 0; k < i; k++)
        p += dec_size(p);
    memcpy(&out->time, p, 8);
    out->kind = p[8];
    memcpy(&out->journey, p + 9, 2);
    memcpy(&out->stage, p + 11, 2);
    memcpy(out->detail, p + DEC_HEAD, p[13]);
    out->detail[p[13]] = '\0';
    return out;
}

uint32_t jd_user_sent_count(const jd_user *u, uint64_t channel, int64_t since)
{
    uint32_t n = 0;
    for (uint16_t i = 0; i < u->nsent; i++)
        n += u->sent[i].channel == channel && u->sent[i].time > since;
    return n;
}

static void sent_remove(jd_user *u, uint16_t at)
{
    memmove(&u->sent[at], &u->sent[at + 1], (size_t)(u->nsent - at - 1) * sizeof *u->sent);
    u->nsent--;
}

void jd_user_sent_add(jd_user *u, uint64_t channel, int64_t time, int64_t keep_after, uint32_t keep_max)
{
    uint32_t mine = 0;
    for (uint16_t i = 0; i < u->nsent;) {
        if (u->sent[i].channel == channel && u->sent[i].time <= keep_after) {
            sent_remove(u, i);
            continue;
        }
        mine += u->sent[i].channel == channel;
        i++;
    }
    for (; mine && (mine >= keep_max || u->nsent >= JD_MAX_SENT); mine--) { /* drop the oldest of this channel */
        uint16_t old = UINT16_MAX;
        for (uint16_t i = 0; i < u->nsent; i++)
            if (u->sent[i].channel == channel && (old == UINT16_MAX || u->sent[i].time < u->sent[old].time))
                old = i;
        sent_remove(u, old);
    }
    if (u->nsent >= JD_MAX_SENT) { /* other channels fill it: drop the oldest overall */
        uint16_t old = 0;
        for (uint16_t i = 1; i < u->nsent; i++)
            if (u->sent[i].time < u->sent[old].time)
                old = i;
        sent_remove(u, old);
    }
    u->sent = jd_xrealloc(u->sent, ((size_t)u->nsent + 1) * sizeof *u->sent);
    u->sent[u->nsent++] = (jd_sent){.time = time, .channel = channel};
}
