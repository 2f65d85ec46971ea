#include "dedupe.h"

#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "map.h"

void jd_dedupe_init(jd_dedupe *d, int64_t ttl_ms)
{
    memset(d, 0, sizeof *d);
    d->ttl_ms = ttl_ms;
}

void jd_dedupe_free(jd_dedupe *d)
{
    free(d->slots);
}

static int expired(const jd_dedupe *d, const jd_dedupe_slot *s)
{
    return d->ttl_ms && s->ts < d->newest - d->ttl_ms;
}

/* Rebuilds at twice the size (or the same size when expiry frees enough), dropping
 * expired entries; linear probing needs no tombstones this way. */
static void rehash(jd_dedupe *d)
{
    size_t live = 0;
    for (size_t i = 0; i < d->cap; i++)
        if ((d->slots[i].a || d->slots[i].b) && !expired(d, &d->slots[i]))
            live++;
    size_t ncap = d->cap ? d->cap : 1024;
    while ((live + 1) * 2 > ncap)
        ncap *= 2;
    jd_dedupe_slot *ns = jd_xcalloc(ncap, sizeof *ns);
    for (size_t i = 0; i < d->cap; i++) {
        jd_dedupe_slot *s = &d->slots[i];
        if ((!s->a && !s->b) || expired(d, s))
            continue;
        for (size_t j = s->a & (ncap - 1);; j = (j + 1) & (ncap - 1)) {
            if (!ns[j].a && !ns[j].b) {
                ns[j] = *s;
                break;
            }
        }
    }
    free(d->slots);
    d->slots = ns;
    d->cap = ncap;
    d->count = live;
}

int jd_dedupe_check(jd_dedupe *d, const char *id, size_t n, int64_t ts)
{
    uint64_t a = jd_hash(id, n, 0x6a09e667f3bcc908ULL), b = jd_hash(id, n, 0xbb67ae8584caa73bULL);
    if (!a && !b)
        b = 1;
    if (ts > d->newest)
        d->newest = ts;
    if ((d->count + 1) * 4 > d->cap * 3)
        rehash(d);
    size_t mask = d->cap - 1;
    for (size_t i = a & mask;; i = (i + 1) & mask) {
        jd_dedupe_slot *s = &d->slots[i];
        if (!s->a && !s->b) {
            s->a = a;
            s->b = b;
            s->ts = ts;
            d->count++;
            return 0;
        }
        if (s->a == a && s->b == b) {
            if (expired(d, s)) {
                s->ts = ts;
                return 0;
            }
            return 1;
        }
    }
}
