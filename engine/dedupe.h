/* dedupe: the set of messageIds already seen, as 128-bit hashes (a false "seen" needs
 * a 128-bit collision), with an optional time-to-live counted from when an id was seen
 * (the caller passes the engine clock). Uses map (hash). */
#ifndef JD_DEDUPE_H
#define JD_DEDUPE_H

#include <stddef.h>
#include <stdint.h>

/* A slot is two words, the id's hash (a, b); (0, 0) is an empty slot. Slots come in
 * buckets of four, 64 bytes, one cache line: an id's probe starts at the bucket of a and
 * reads only that line unless the bucket is full. Nearly every id checked is new, so a
 * check is a read and a write of one line (prefetched: jd_dedupe_prefetch). With a ttl
 * the table has a third word a slot, when it was seen, in an array of its own after the
 * slots: written with the slot, read only for an id found again and when moving. */
#define JD_DEDUPE_BUCKET 4

typedef struct jd_dedupe_table {
    uint64_t *w;   /* cap slots of 2 words, then (words 3) cap times */
    int64_t *seen; /* the times (inside w's block), or NULL */
    size_t cap;    /* slots, a power of two (at least a bucket) */
    size_t words;  /* per slot: 2, or 3 with times */
} jd_dedupe_table;

/* Growing is incremental: the new table is allocated at once, and each check moves a
 * few slots of the old one over, so no single check pays for copying millions of ids.
 * While moving, lookups probe both tables; old slots are copied, never cleared, so the
 * old table's probe chains stay intact until it is freed. */
typedef struct jd_dedupe {
    jd_dedupe_table cur;
    size_t count;
    jd_dedupe_table old; /* the table being moved from (w NULL: none) */
    size_t old_pos;
    jd_dedupe_table next;          /* the next growth's table, made ahead and touched bit by bit */
    size_t next_touched;           /* bytes of it faulted in */
    size_t moved_live, moved_dead; /* what the last move found: with a ttl, a table mostly
                                    * of expired ids is rebuilt at the same size */
    int64_t ttl_ms;                /* 0: keep forever; a table made while it is 0 keeps
                                    * no times, and its ids count as seen at the newest time */
    int64_t newest;
} jd_dedupe;

void jd_dedupe_init(jd_dedupe *d, int64_t ttl_ms);
void jd_dedupe_free(jd_dedupe *d);
/* Returns 1 if id was seen (within the ttl), else records it and returns 0. */
int jd_dedupe_check(jd_dedupe *d, const char *id, size_t n, int64_t ts);
/* The same in two steps: an id's 128-bit hash (what the store keeps), and the check of
 * a hash (also how the store's ids are loaded back). */
void jd_dedupe_hash(const char *id, size_t n, uint64_t *a, uint64_t *b);
int jd_dedupe_check_hash(jd_dedupe *d, uint64_t a, uint64_t b, int64_t ts);
/* The first slot of the bucket a probe for hash a starts at. */
static inline size_t jd_dedupe_bucket(const jd_dedupe_table *t, uint64_t a)
{
    return (size_t)a & (t->cap - 1) & ~(size_t)(JD_DEDUPE_BUCKET - 1);
}

/* A hint: the bucket where a check of hash a starts is about to be read. Always inlined:
 * gcc (12, -O2) takes a function that only prefetches for one without effects and
 * deletes its calls, prefetch and all. */
static inline __attribute__((always_inline)) void jd_dedupe_prefetch(const jd_dedupe *d, uint64_t a)
{
    if (d->cur.w) /* for writing: the id is nearly always new */
        __builtin_prefetch(d->cur.w + 2 * jd_dedupe_bucket(&d->cur, a), 1);
}

#endif
