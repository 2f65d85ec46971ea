#define _DEFAULT_SOURCE /* MADV_HUGEPAGE */
#include "dedupe.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "buf.h"
#include "map.h"

void jd_dedupe_init(jd_dedupe *d, int64_t ttl_ms)
{
    memset(d, 0, sizeof *d);
    d->ttl_ms = ttl_ms;
}

/* A table of n slots, zeroed. A big one is mapped on its own, in huge pages where the
 * system allows: every check lands on a random slot, and with 4 KB pages that is a TLB
 * miss (and a page fault on first touch) as well as a cache miss. */
#define HUGE_PAGE (2u << 20)

static size_t table_bytes(size_t n, size_t words)
{
    return n * words * sizeof(uint64_t); /* the slots' hashes, then (3 words) their times */
}

static jd_dedupe_table table_new(size_t n, size_t words)
{
    jd_dedupe_table t = {NULL, NULL, n, words};
    size_t bytes = table_bytes(n, words);
    if (bytes < HUGE_PAGE) {
        t.w = aligned_alloc(64, bytes); /* a bucket is a cache line (bytes: a multiple of 64) */
        if (!t.w)
            abort(); /* as jd_xcalloc does */
        memset(t.w, 0, bytes);
    } else {
        void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            abort(); /* as jd_xcalloc does */
#ifdef MADV_HUGEPAGE
        madvise(p, bytes, MADV_HUGEPAGE);
#endif
        t.w = p;
    }
    t.seen = words == 3 ? (int64_t *)(t.w + 2 * n) : NULL;
    return t;
}

static void table_free(jd_dedupe_table *t)
{
    size_t bytes = table_bytes(t->cap, t->words);
    if (t->w && bytes >= HUGE_PAGE)
        munmap(t->w, bytes);
    else
        free(t->w);
    t->w = NULL;
}

void jd_dedupe_free(jd_dedupe *d)
{
    table_free(&d->cur);
    table_free(&d->old);
    table_free(&d->next);
}

/* Checks ahead of growth that the next table is made at, per huge page of it. */
#define AHEAD_PER_PAGE 64

/* The table the next growth uses is made shortly before growth, and faulted in one huge
 * page a check. A fresh table's first writes fault its pages in (a huge page is zeroed
 * on the spot: about a millisecond on a VM), and the move's scattered writes touched all
 * of them in the first checks: 11 ms in one event. It is made no earlier than that: a
 * table made half way to the limit was zeroed (64 MB at 1M ids) and held for a growth
 * that may never come. Each check adds at most one id, so AHEAD_PER_PAGE checks a page
 * is ample to fault it all in first. */
static void prepare(jd_dedupe *d)
{
    if (!d->next.w) {
        size_t bytes = table_bytes(d->cur.cap, d->cur.words);
        size_t ahead = 2 * bytes / HUGE_PAGE * AHEAD_PER_PAGE; /* the next table's pages */
        if (bytes < HUGE_PAGE || (d->count + 1 + ahead) * 4 <= d->cur.cap * 3)
            return;
        d->next = table_new(d->cur.cap * 2, d->ttl_ms ? 3 : 2);
        d->next_touched = 0;
    }
    size_t bytes = table_bytes(d->next.cap, d->next.words);
    if (d->next_touched < bytes) {
        ((volatile char *)d->next.w)[d->next_touched] = 0;
        d->next_touched += HUGE_PAGE;
    }
}

static uint64_t *slot(const jd_dedupe_table *t, size_t i)
{
    return t->w + 2 * i;
}

/* When the id in slot i was seen (a table without times: the newest time). */
static int64_t seen_at(const jd_dedupe *d, const jd_dedupe_table *t, size_t i)
{
    return t->seen ? t->seen[i] : d->newest;
}

static int expired(const jd_dedupe *d, const jd_dedupe_table *t, size_t i)
{
    return d->ttl_ms && seen_at(d, t, i) < d->newest - d->ttl_ms;
}

#define MOVE_PER_CHECK 64

/* Probes t for (a, b): 1 and *at = its slot when there, else 0 and *at = the empty slot
 * that ends the probe (where it would go). A bucket's slots fill in order and are never
 * emptied, so the first empty one ends the probe; a full bucket sends it to the next. */
static inline int probe(const jd_dedupe_table *t, uint64_t a, uint64_t b, size_t *at)
{
    size_t mask = t->cap - 1;
    for (size_t i = jd_dedupe_bucket(t, a);; i = (i + JD_DEDUPE_BUCKET) & mask) {
        const uint64_t *s = t->w + 2 * i;
        for (size_t k = 0; k < JD_DEDUPE_BUCKET; k++, s += 2) {
            if (s[0] == a && s[1] == b) {
                *at = i + k;
                return 1;
            }
            if (!(s[0] | s[1])) {
                *at = i + k;
                return 0;
            }
        }
    }
}

static void put(const jd_dedupe_table *t, size_t i, uint64_t a, uint64_t b, int64_t ts)
{
    uint64_t *s = slot(t, i);
    s[0] = a;
    s[1] = b;
    if (t->seen)
        t->seen[i] = ts;
}

/* Moves up to n live, unexpired slots of the old table; frees it when done. */
static void move_some(jd_dedupe *d, size_t n)
{
    while (d->old.w && n--) {
        if (d->old_pos == d->old.cap) {
            table_free(&d->old);
            return;
        }
        size_t oi = d->old_pos++;
        const uint64_t *s = slot(&d->old, oi);
        if (!(s[0] | s[1]))
            continue;
        d->count--; /* it leaves the old table's share of the count ... */
        if (expired(d, &d->old, oi)) {
            d->moved_dead++;
            continue;
        }
        d->moved_live++;
        size_t at;
        if (probe(&d->cur, s[0], s[1], &at))
            continue; /* seen again meanwhile: the new copy is newer */
        put(&d->cur, at, s[0], s[1], seen_at(d, &d->old, oi));
        d->count++; /* ... and joins the new one */
    }
}

/* Starts growing: a table twice the size of what is live (the old one moves over bit by
 * bit). With a ttl, expired entries are simply not moved. */
static void grow(jd_dedupe *d)
{
    while (d->old.w) /* finish a previous move first (rare: only if growth outpaces it) */
        move_some(d, SIZE_MAX);
    size_t ncap = d->cur.cap ? d->cur.cap * 2 : 1024;
    /* with a ttl, when most of what the last move saw had expired, this table is mostly
     * expired too: rebuild it at the same size (the move drops the expired ids) */
    if (d->ttl_ms && d->cur.cap && d->moved_dead >= d->moved_live)
        ncap = d->cur.cap;
    d->moved_live = d->moved_dead = 0;
    d->old = d->cur;
    d->old_pos = 0;
    size_t words = d->ttl_ms ? 3 : 2;
    if (d->next.w && d->next.cap == ncap && d->next.words == words) {
        d->cur = d->next; /* made ahead (prepare) */
        d->next.w = NULL;
    } else {
        table_free(&d->next);
        d->cur = table_new(ncap, words);
    }
    if (!d->old.cap)
        table_free(&d->old);
}

void jd_dedupe_hash(const char *id, size_t n, uint64_t *a, uint64_t *b)
{
    jd_hash2(id, n, 0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL, a, b);
}

int jd_dedupe_check(jd_dedupe *d, const char *id, size_t n, int64_t ts)
{
    uint64_t a, b;
    jd_dedupe_hash(id, n, &a, &b);
    return jd_dedupe_check_hash(d, a, b, ts);
}

int jd_dedupe_check_hash(jd_dedupe *d, uint64_t a, uint64_t b, int64_t ts)
{
    if (!a && !b)
        b = 1; /* (0, 0) marks an empty slot: the one place that keeps it so */
    if (ts > d->newest)
        d->newest = ts;
    move_some(d, MOVE_PER_CHECK);
    prepare(d);
    if ((d->count + 1) * 4 > d->cur.cap * 3)
        grow(d);
    /* one probe of the new table finds the id or the slot it goes in */
    size_t at, i;
    const jd_dedupe_table *t = &d->cur;
    int seen = probe(t, a, b, &at);
    i = at;
    if (!seen && d->old.w && probe(&d->old, a, b, &i)) {
        seen = 1;
        t = &d->old;
    }
    if (seen && !expired(d, t, i))
        return 1;
    if (seen) { /* seen long ago: refresh where it is (an old copy moves with its new time) */
        put(t, i, a, b, ts);
        return 0;
    }
    put(&d->cur, at, a, b, ts);
    d->count++;
    return 0;
}
