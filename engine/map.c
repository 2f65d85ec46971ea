#include "map.h"

#include <stdlib.h>
#include <string.h>

#include "buf.h"

static char tomb_key[1];
#define TOMB (tomb_key)

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

void jd_map_free(jd_map *m, void (*free_value)(void *))
{
    for (size_t i = 0; i < m->cap; i++) {
        jd_map_slot *s = &m->slots[i];
        if (s->key && s->key != TOMB) {
            if (free_value)
                free_value(s->value);
            free(s->key);
        }
    }
    free(m->slots);
    jd_map_init(m);
}

static jd_map_slot *find(const jd_map *m, const char *key, size_t klen, uint64_t h)
{
    if (!m->cap)
        return NULL;
    size_t mask = m->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        jd_map_slot *s = &m->slots[i];
        if (!s->key)
            return NULL;
        if (s->key != TOMB && s->hash == h && s->klen == klen && memcmp(s->key, key, klen) == 0)
            return s;
    }
}

void *jd_map_get(const jd_map *m, const char *key, size_t klen)
{
    jd_map_slot *s = find(m, key, klen, jd_hash(key, klen, 0));
    return s ? s->value : NULL;
}

static void grow(jd_map *m)
{
    size_t ncap = m->cap ? m->cap : 16;
    if ((m->count + 1) * 4 >= ncap * 3)
        ncap *= 2;
    jd_map_slot *old = m->slots;
    size_t ocap = m->cap;
    m->slots = jd_xcalloc(ncap, sizeof *m->slots);
    m->cap = ncap;
    m->tombs = 0;
    for (size_t i = 0; i < ocap; i++) {
        jd_map_slot *s = &old[i];
        if (!s->key || s->key == TOMB)
            continue;
        for (size_t j = s->hash & (ncap - 1);; j = (j + 1) & (ncap - 1)) {
            if (!m->slots[j].key) {
                m->slots[j] = *s;
                break;
            }
        }
    }
    free(old);
}

void *jd_map_put(jd_map *m, const char *key, size_t klen, void *value)
{
    uint64_t h = jd_hash(key, klen, 0);
    jd_map_slot *s = find(m, key, klen, h);
    if (s) {
        void *prev = s->value;
        s->value = value;
        return prev;
    }
    if ((m->count + m->tombs + 1) * 4 >= m->cap * 3)
        grow(m);
    size_t mask = m->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        s = &m->slots[i];
        if (!s->key || s->key == TOMB) {
            if (s->key == TOMB)
                m->tombs--;
            s->key = jd_strndup(key, klen);
            s->klen = klen;
            s->hash = h;
            s->value = value;
            m->count++;
            return NULL;
        }
    }
}

void *jd_map_del(jd_map *m, const char *key, size_t klen)
{
    jd_map_slot *s = find(m, key, klen, jd_hash(key, klen, 0));
    if (!s)
        return NULL;
    void *v = s->value;
    free(s->key);
    s->key = TOMB;
    s->value = NULL;
    m->count--;
    m->tombs++;
    return v;
}

int jd_map_next(const jd_map *m, size_t *it, const jd_map_slot **slot)
{
    while (*it < m->cap) {
        const jd_map_slot *s = &m->slots[(*it)++];
        if (s->key && s->key != TOMB) {
            *slot = s;
            return 1;
        }
    }
    return 0;
}
