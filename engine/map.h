/* map: an open-addressing hash map from byte-string keys to pointers.
 * Uses buf (allocation). Keys are copied and owned by the map (unless borrow_keys);
 * values are not. */
#ifndef JD_MAP_H
#define JD_MAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct jd_map_slot {
    char *key; /* NULL: empty; owned */
    size_t klen;
    uint64_t hash;
    void *value;
} jd_map_slot;

/* Growth moves the entries over a few at a time: until the old table is empty, a key is
 * in exactly one of the two (lookups try both). No stall of a whole rehash, which on a
 * table of 100K people was 16 ms of page faults and cache misses in one event. */
typedef struct jd_map {
    jd_map_slot *slots;
    size_t cap;       /* power of two */
    size_t count;     /* live entries in both tables */
    size_t tombs;     /* in slots */
    jd_map_slot *old; /* the table being moved out of, or NULL */
    size_t old_cap, old_pos, old_live;
    /* Set after jd_map_init: keys are not copied but borrowed from the caller, and must
     * live, unchanged, while their entry does (the people map: each person's id, in the
     * person's own block). A lookup then compares with memory the value's reader is about
     * to touch anyway, not a copy elsewhere: one cache miss less. */
    int borrow_keys;
} jd_map;

uint64_t jd_hash(const void *p, size_t n, uint64_t seed);
/* jd_hash(p, n, seed_a) and jd_hash(p, n, seed_b), in one pass. */
void jd_hash2(const void *p, size_t n, uint64_t seed_a, uint64_t seed_b, uint64_t *a, uint64_t *b);

void jd_map_init(jd_map *m);
/* Frees keys; calls free_value on each value when not NULL. */
void jd_map_free(jd_map *m, void (*free_value)(void *));
void *jd_map_get(const jd_map *m, const char *key, size_t klen);
/* Inserts or replaces; returns the previous value or NULL. */
void *jd_map_put(jd_map *m, const char *key, size_t klen, void *value);
/* The same, given the key's jd_hash(key, klen, 0) (a caller that has it already). */
void *jd_map_get_hashed(const jd_map *m, const char *key, size_t klen, uint64_t h);
void *jd_map_put_hashed(jd_map *m, const char *key, size_t klen, void *value, uint64_t h);
/* Removes; returns the removed value or NULL. */
void *jd_map_del(jd_map *m, const char *key, size_t klen);
/* Hints for a lookup of a key whose jd_hash(key, n, 0) is h, about to come (they never
 * change the map): the slot its probe starts at is read ahead. Always inlined: gcc
 * (12, -O2) takes a function that only prefetches for one without effects and deletes
 * its calls, prefetch and all. */
static inline __attribute__((always_inline)) void jd_map_prefetch(const jd_map *m, uint64_t h)
{
    if (m->cap)
        __builtin_prefetch(&m->slots[h & (m->cap - 1)]);
}
/* Iteration: for (size_t i = 0; jd_map_next(m, &i, &slot);) — with no put meanwhile (a
 * put may move entries); deleting is fine. */
int jd_map_next(const jd_map *m, size_t *it, const jd_map_slot **slot);

#endif
