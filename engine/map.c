#include "map.h"

#include <stdlib.h>
#include <string.h>

#include "buf.h"

static char tomb_key[1];
#define TOMB (tomb_key)
/* A new table this big is faulted in at once (jd_prefault), not probe by probe. */
#define MAP_PREFAULT ((size_t)256 << 10)

/* The word mixing and the final avalanche of jd_hash: shared by jd_hash2, whose halves
 * must equal jd_hash with each seed. */
static inline uint64_t mix_word(uint64_t w)
{
    w *= 0xBF58476D1CE4E5B9ULL;
    return w ^ (w >> 31);
}

/* The last n < 8 bytes as a little-endian word. start is the key's first byte: when the
 * key has 8 bytes before the tail's end, one load of those 8 (shifted) serves; else two
 * overlapping loads, or three bytes. The same word as a byte loop gives. */
static inline uint64_t tail_word(const unsigned char *s, size_t n, const unsigned char *start)
{
    uint64_t w = 0;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (n == 0)
        return mix_word(0);
    if (s + n - start >= 8) {
        memcpy(&w, s + n - 8, 8);
        w >>= 8 * (8 - n);
    } else if (n >= 4) {
        uint32_t lo, hi;
        memcpy(&lo, s, 4);
        memcpy(&hi, s + n - 4, 4);
        w = lo | (uint64_t)hi << (8 * (n - 4));
    } else {
        w = s[0] | (uint64_t)s[n / 2] << (8 * (n / 2)) | (uint64_t)s[n - 1] << (8 * (n - 1));
    }
#else
    (void)start;
    for (size_t i = 0; i < n; i++)
        w |= (uint64_t)s[i] << (8 * i);
#endif
    return mix_word(w);
}

static inline uint64_t finish(uint64_t h)
{
    h ^= h >> 29;
    h *= 0xBF58476D1CE4E5B9ULL;
    return h ^ (h >> 32);
}

/* A 64-bit multiply-mix hash over 8-byte words; deterministic across runs so that
 * anything derived from it (action ids, shard choice) is stable. */
uint64_t jd_hash(const void *p, size_t n, uint64_t seed)
{
    const unsigned char *s = p, *start = p;
    uint64_t h = seed ^ (0x9E3779B97F4A7C15ULL * (n + 1));
    for (; n >= 8; s += 8, n -= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ mix_word(w)) * 0x94D049BB133111EBULL;
    }
    return finish((h ^ tail_word(s, n, start)) * 0x94D049BB133111EBULL);
}

void jd_hash2(const void *p, size_t n, uint64_t seed_a, uint64_t seed_b, uint64_t *a, uint64_t *b)
{
    /* jd_hash twice, sharing the per-word mixing (it does not depend on the seed) */
    const unsigned char *s = p, *start = p;
    uint64_t len = 0x9E3779B97F4A7C15ULL * (n + 1);
    uint64_t ha = seed_a ^ len, hb = seed_b ^ len;
    for (; n >= 8; s += 8, n -= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        w = mix_word(w);
        ha = (ha ^ w) * 0x94D049BB133111EBULL;
        hb = (hb ^ w) * 0x94D049BB133111EBULL;
    }
    uint64_t w = tail_word(s, n, start);
    *a = finish((ha ^ w) * 0x94D049BB133111EBULL);
    *b = finish((hb ^ w) * 0x94D049BB133111EBULL);
}

void jd_map_init(jd_map *m)
{
    memset(m, 0, sizeof *m);
}

static void free_slots(jd_map_slot *t, size_t n, void (*free_value)(void *), int borrowed)
{
    for (size_t i = 0; i < n; i++) {
        jd_map_slot *s = &t[i];
        if (s->key && s->key != TOMB) {
            if (free_value)
                free_value(s->value); /* (a borrowed key may go with it) */
            if (!borrowed)
                free(s->key);
        }
    }
    free(t);
}

void jd_map_free(jd_map *m, void (*free_value)(void *))
{
    free_slots(m->slots, m->cap, free_value, m->borrow_keys);
    free_slots(m->old, m->old_cap, free_value, m->borrow_keys);
    jd_map_init(m);
}

static jd_map_slot *probe(jd_map_slot *t, size_t cap, const char *key, size_t klen, uint64_t h)
{
    if (!cap)
        return NULL;
    size_t mask = cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        jd_map_slot *s = &t[i];
        if (!s->key)
            return NULL;
        if (s->key != TOMB && s->hash == h && s->klen == klen && memcmp(s->key, key, klen) == 0)
            return s;
    }
}

/* The slot of key, in the new table or the old; *in_old says which. */
static jd_map_slot *find(const jd_map *m, const char *key, size_t klen, uint64_t h, int *in_old)
{
    *in_old = 0;
    jd_map_slot *s = probe(m->slots, m->cap, key, klen, h);
    if (!s && m->old && (s = probe(m->old, m->old_cap, key, klen, h)))
        *in_old = 1;
    return s;
}

void *jd_map_get(const jd_map *m, const char *key, size_t klen)
{
    return jd_map_get_hashed(m, key, klen, jd_hash(key, klen, 0));
}

void *jd_map_get_hashed(const jd_map *m, const char *key, size_t klen, uint64_t h)
{
    int in_old;
    jd_map_slot *s = find(m, key, klen, h, &in_old);
    return s ? s->value : NULL;
}

/* An entry into the new table (its key is in neither). */
static jd_map_slot *place(jd_map *m, uint64_t h)
{
    size_t mask = m->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        jd_map_slot *s = &m->slots[i];
        if (!s->key || s->key == TOMB) {
            if (s->key == TOMB)
                m->tombs--;
            return s;
        }
    }
}

/* Moves the old table's next `n` slots over (all: SIZE_MAX). A moved entry leaves a
 * tombstone, so probes for the others still pass it. */
static void move_some(jd_map *m, size_t n)
{
    for (; m->old && n; n--) {
        if (m->old_pos == m->old_cap || !m->old_live) {
            free(m->old);
            m->old = NULL;
            m->old_cap = m->old_pos = m->old_live = 0;
            break;
        }
        jd_map_slot *s = &m->old[m->old_pos++];
        if (!s->key || s->key == TOMB)
            continue;
        *place(m, s->hash) = *s;
        s->key = TOMB;
        m->old_live--;
    }
}

/* Starts moving into a table at most half full when the new entry is in; the move
 * before is finished first (it is done long before: a put moves 8 slots, and the new
 * table has room for a quarter of its size). */
static void grow(jd_map *m)
{
    move_some(m, SIZE_MAX);
    size_t ncap = m->cap ? m->cap : 16;
    while ((m->count + 1) * 2 > ncap)
        ncap *= 2;
    m->old = m->slots;
    m->old_cap = m->cap;
    m->old_pos = 0;
    m->old_live = m->count;
    m->slots = jd_xcalloc(ncap, sizeof *m->slots);
    if (ncap * sizeof *m->slots >= MAP_PREFAULT)
        jd_prefault(m->slots, ncap * sizeof *m->slots); /* its probes would fault it page by page */
    m->cap = ncap;
    m->tombs = 0;
    if (!m->old_live) {
        free(m->old);
        m->old = NULL;
        m->old_cap = 0;
    }
}

void *jd_map_put(jd_map *m, const char *key, size_t klen, void *value)
{
    return jd_map_put_hashed(m, key, klen, value, jd_hash(key, klen, 0));
}

void *jd_map_put_hashed(jd_map *m, const char *key, size_t klen, void *value, uint64_t h)
{
    move_some(m, 8);
    int in_old;
    jd_map_slot *s = find(m, key, klen, h, &in_old);
    if (s) {
        void *prev = s->value;
        s->value = value;
        if (m->borrow_keys) /* the new value's key: the old one may go with the old value */
            s->key = (char *)(uintptr_t)key;
        return prev;
    }
    if ((m->count - m->old_live + m->tombs + 1) * 4 >= m->cap * 3)
        grow(m);
    s = place(m, h);
    s->key = m->borrow_keys ? (char *)(uintptr_t)key : jd_strndup(key, klen);
    s->klen = klen;
    s->hash = h;
    s->value = value;
    m->count++;
    return NULL;
}

void *jd_map_del(jd_map *m, const char *key, size_t klen)
{
    int in_old;
    jd_map_slot *s = find(m, key, klen, jd_hash(key, klen, 0), &in_old);
    if (!s)
        return NULL;
    void *v = s->value;
    if (!m->borrow_keys)
        free(s->key);
    s->key = TOMB;
    s->value = NULL;
    m->count--;
    if (in_old)
        m->old_live--;
    else
        m->tombs++;
    return v;
}

int jd_map_next(const jd_map *m, size_t *it, const jd_map_slot **slot)
{
    while (*it < m->cap + m->old_cap) {
        size_t i = (*it)++;
        const jd_map_slot *s = i < m->cap ? &m->slots[i] : &m->old[i - m->cap];
        if (s->key && s->key != TOMB) {
            *slot = s;
            return 1;
        }
    }
    return 0;
}
