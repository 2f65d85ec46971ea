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

static jd_dedupe_slot *table_new(size_t n)
{
    size_t bytes = n * sizeof(jd_dedupe_slot);
    if (bytes < HUGE_PAGE)
        return jd_xcalloc(n, sizeof(jd_dedupe_slot));
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        abort(); /* as jd_xcalloc does */
#ifdef MADV_HUGEPAGE
    madvise(p, bytes, MADV_HUGEPAGE);
#endif
    return p;
}

static void table_free(jd_dedupe_slot *t, size_t n)
{
    if (t && n * sizeof *t >= HUGE_PAGE)
        munmap(t, n * sizeof *t);
    else
        free(t);
}

void jd_dedupe_free(jd_dedupe *d)
{
    table_free(d->slots, d->cap);
    table_free(d->old, d->old_cap);
}

static int expired(const jd_dedupe *d, const jd_dedupe_slot *s)
{
    return d->ttl_ms && s->ts < d->newest - d->ttl_ms;
}

#define MOVE_PER_CHECK 64

static int empty(const jd_dedupe_slot *s)
{
    return !s->a && !s->b;
}

/* Where (a, b) is in table t, or NULL. */
static jd_dedupe_slot *find(jd_dedupe_slot *t, size_t cap, uint64_t a, uint64_t b)
{
    for (size_t i = a & (cap - 1);; i = (i + 1) & (cap - 1)) {
        jd_dedupe_slot *s = &t[i];
        if (empty(s))
            return NULL;
        if (s->a == a && s->b == b)
            return s;
    }
}

static jd_dedupe_slot *place(jd_dedupe_slot *t, size_t cap, uint64_t a)
{
    for (size_t i = a & (cap - 1);; i = (i + 1) & (cap - 1))
        if (empty(&t[i]))
            return &t[i];
}

/* Moves up to n live, unexpired slots of the old table; frees it when done. */
static void move_some(jd_dedupe *d, size_t n)
{
    while (d->old && n--) {
        if (d->old_pos == d->old_cap) {
            table_free(d->old, d->old_cap);
            d->old = NULL;
            return;
        }
        jd_dedupe_slot *s = &d->old[d->old_pos++];
        if (empty(s))
            continue;
        d->count--; /* it leaves the old table's share of the count ... */
        if (expired(d, s)) {
            d->moved_dead++;
            continue;
        }
        d->moved_live++;
        if (find(d->slots, d->cap, s->a, s->b))
            continue; /* seen again meanwhile: the new copy is newer */
        *place(d->slots, d->cap, s->a) = *s;
        d->count++; /* ... and joins the new one */
    }
}

/* Starts growing: a table twice the size of what is live (the old one moves over bit by
 * bit). With a ttl, expired entries are simply not moved. */
static void grow(jd_dedupe *d)
{
    while (d->old) /* finish a previous move first (rare: only if growth outpaces it) */
        move_some(d, SIZE_MAX);
    size_t ncap = d->cap ? d->cap * 2 : 1024;
    /* with a ttl, when most of what the last move saw had expired, this table is mostly
     * expired too: rebuild it at the same size (the move drops the expired ids) */
    if (d->ttl_ms && d->cap && d->moved_dead >= d->moved_live)
        ncap = d->cap;
    d->moved_live = d->moved_dead = 0;
    d->old = d->slots;
    d->old_cap = d->cap;
    d->old_pos = 0;
    d->slots = table_new(ncap);
    d->cap = ncap;
    if (!d->old_cap) {
        table_free(d->old, 0);
        d->old = NULL;
    }
}

void jd_dedupe_hash(const char *id, size_t n, uint64_t *a, uint64_t *b)
{
    jd_hash2(id, n, 0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL, a, b);
    if (!*a && !*b)
        *b = 1;
}

int jd_dedupe_check(jd_dedupe *d, const char *id, size_t n, int64_t ts)
{
    uint64_t a, b;
    jd_dedupe_hash(id, n, &a, &b);
    return jd_dedupe_check_hash(d, a, b, ts);
}

int jd_dedupe_check_hash(jd_dedupe *d, uint64_t a, uint64_t b, int64_t ts)
{
    if (ts > d->newest)
        d->newest = ts;
    move_some(d, MOVE_PER_CHECK);
    if ((d->count + 1) * 4 > d->cap * 3)
        grow(d);
    /* one probe of the new table finds the id or the slot it goes in */
    jd_dedupe_slot *s = NULL, *at = NULL;
    for (size_t i = a & (d->cap - 1);; i = (i + 1) & (d->cap - 1)) {
        if (empty(&d->slots[i])) {
            at = &d->slots[i];
            break;
        }
        if (d->slots[i].a == a && d->slots[i].b == b) {
            s = &d->slots[i];
            break;
        }
    }
    if (!s && d->old)
        s = find(d->old, d->old_cap, a, b);
    if (s && !expired(d, s))
        return 1;
    if (s) { /* seen long ago: refresh where it is (an old copy moves with its new time) */
        s->ts = ts;
        return 0;
    }
    s = at;
    s->a = a;
    s->b = b;
    s->ts = ts;
    d->count++;
    return 0;
}
