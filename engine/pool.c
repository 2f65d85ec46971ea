#include "pool.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define SLAB (64u << 10)

/* Under AddressSanitizer every block goes to malloc, so that a use after free in a Lua
 * state (or in a C function holding a Lua string) is still caught. */
#if defined(__SANITIZE_ADDRESS__)
#define POOL_OFF 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define POOL_OFF 1
#endif
#endif
#ifndef POOL_OFF
#define POOL_OFF 0
#endif

void jd_pool_init(jd_pool *p)
{
    memset(p, 0, sizeof *p);
    p->off = POOL_OFF;
}

void jd_pool_destroy(jd_pool *p)
{
    for (void *s = p->slabs, *nx; s; s = nx) {
        memcpy(&nx, s, sizeof nx);
        free(s);
    }
    jd_pool_init(p);
}

static size_t class_of(size_t n)
{
    return (n - 1) / JD_POOL_GRAIN; /* 1..16 -> 0, 17..32 -> 1, ... */
}

static void give(jd_pool *p, void *b, size_t c)
{
    memcpy(b, &p->free[c], sizeof(void *));
    p->free[c] = b;
}

static void *take(jd_pool *p, size_t c)
{
    void *b = p->free[c];
    if (b) {
        memcpy(&p->free[c], b, sizeof(void *));
        return b;
    }
    size_t sz = (c + 1) * JD_POOL_GRAIN;
    if ((size_t)(p->end - p->cur) < sz) {
        /* the rest of the old slab (a multiple of the grain) goes to the free lists */
        while (p->cur < p->end) {
            size_t left = (size_t)(p->end - p->cur), rc = class_of(left < JD_POOL_MAX ? left : JD_POOL_MAX);
            give(p, p->cur, rc);
            p->cur += (rc + 1) * JD_POOL_GRAIN;
        }
        char *s = malloc(SLAB);
        if (!s)
            return NULL;
        memcpy(s, &p->slabs, sizeof(void *));
        p->slabs = s;
        /* the first word links the slabs: blocks start one grain in, keeping the grain's
         * alignment */
        p->cur = s + JD_POOL_GRAIN;
        p->end = s + SLAB;
    }
    b = p->cur;
    p->cur += sz;
    return b;
}

void *jd_pool_realloc(jd_pool *p, void *ptr, size_t osize, size_t nsize)
{
    if (p->off) {
        if (nsize == 0) {
            free(ptr);
            return NULL;
        }
        return realloc(ptr, nsize);
    }
    size_t old = ptr ? osize : 0;
    int opool = old && old <= JD_POOL_MAX, npool = nsize && nsize <= JD_POOL_MAX;
    if (nsize == 0) {
        if (opool)
            give(p, ptr, class_of(old));
        else
            free(ptr);
        return NULL;
    }
    if (!npool) {
        if (!opool)
            return realloc(ptr, nsize); /* malloc's block to malloc's block (or a new one) */
        void *b = malloc(nsize);
        if (!b)
            return NULL;
        memcpy(b, ptr, old);
        give(p, ptr, class_of(old));
        return b;
    }
    size_t nc = class_of(nsize);
    if (opool && class_of(old) == nc)
        return ptr;
    void *b = take(p, nc);
    if (!b) /* a shrink must not fail (Lua counts on it): the old block still holds nsize
             * (when it came from malloc, it joins the pool for good: a leak, on no memory) */
        return nsize <= old ? ptr : NULL;
    if (ptr) {
        memcpy(b, ptr, old < nsize ? old : nsize);
        if (opool)
            give(p, ptr, class_of(old));
        else
            free(ptr);
    }
    return b;
}
