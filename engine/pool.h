/* pool: size-class free lists for small blocks, carved from 64 KB slabs, with a
 * lua_Alloc-shaped realloc (blocks above JD_POOL_MAX go to malloc). The Lua states'
 * allocator: most of what a hook allocates is small and dies at once, and a free list
 * serves that for a fraction of malloc's cost. Uses nothing else. */
#ifndef JD_POOL_H
#define JD_POOL_H

#include <stddef.h>

#define JD_POOL_GRAIN 16 /* classes are multiples of this */
#define JD_POOL_MAX 512  /* the largest pooled block */
#define JD_POOL_CLASSES (JD_POOL_MAX / JD_POOL_GRAIN)

typedef struct jd_pool {
    void *free[JD_POOL_CLASSES]; /* per class: a list threaded through the free blocks */
    char *cur, *end;             /* the unused rest of the newest slab */
    void *slabs;                 /* every slab, linked through its first word */
    int off;                     /* 1: every block goes to malloc (the sanitizers' builds) */
} jd_pool;

void jd_pool_init(jd_pool *p);
/* Frees every slab: all pooled blocks die at once (blocks from malloc are the caller's
 * to free first). */
void jd_pool_destroy(jd_pool *p);

/* lua_Alloc's contract with the sizes the caller keeps: ptr of osize bytes (ptr NULL:
 * a new block) becomes nsize bytes; nsize 0 frees and returns NULL. The caller passes
 * back a block's exact size when it resizes or frees it (Lua does). NULL when memory is
 * out; then ptr is untouched. */
void *jd_pool_realloc(jd_pool *p, void *ptr, size_t osize, size_t nsize);

#endif
