/* dedupe: the set of messageIds already seen, as 128-bit hashes (a false "seen" needs
 * a 128-bit collision), with an optional time-to-live counted from when an id was seen
 * (the caller passes the engine clock). Uses map (hash). */
#ifndef JD_DEDUPE_H
#define JD_DEDUPE_H

#include <stddef.h>
#include <stdint.h>

typedef struct jd_dedupe_slot {
    uint64_t a, b; /* a == 0 && b == 0: empty */
    int64_t ts;
} jd_dedupe_slot;

/* Growing is incremental: the new table is allocated at once, and each check moves a
 * few slots of the old one over, so no single check pays for copying millions of ids.
 * While moving, lookups probe both tables; old slots are copied, never cleared, so the
 * old table's probe chains stay intact until it is freed. */
typedef struct jd_dedupe {
    jd_dedupe_slot *slots;
    size_t cap, count;
    jd_dedupe_slot *old; /* the table being moved from, or NULL */
    size_t old_cap, old_pos;
    size_t moved_live, moved_dead; /* what the last move found: with a ttl, a table mostly
                                    * of expired ids is rebuilt at the same size */
    int64_t ttl_ms;                /* 0: keep forever */
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

#endif
