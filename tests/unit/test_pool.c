/* test_pool: engine/pool.h, the size-class allocator behind the Lua states: blocks keep
 * their bytes through resizes across classes and to and from malloc, freed blocks are
 * reused, and the sanitizer mode passes everything to malloc. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "pool.h"

static uint64_t rng_state;
static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

typedef struct blk {
    unsigned char *p;
    size_t n;
    unsigned char fill;
} blk;

static void fill(blk *b)
{
    for (size_t i = 0; i < b->n; i++)
        b->p[i] = (unsigned char)(b->fill + i);
}

static void check(const blk *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        assert_int_equal(b->p[i], (unsigned char)(b->fill + i));
}

/* random allocations, resizes (within and across classes, to and from malloc's sizes)
 * and frees; every live block keeps its bytes and no two overlap */
static void run_random(int off)
{
    jd_pool p;
    jd_pool_init(&p);
    p.off = off;
    rng_state = 0x9e3779b97f4a7c15ULL;
    enum { N = 512 };
    blk b[N];
    memset(b, 0, sizeof b);
    for (int step = 0; step < 200000; step++) {
        blk *x = &b[rng() % N];
        uint64_t r = rng();
        size_t n = r % 8 == 0 ? 1 + (r >> 8) % 2000 : 1 + (r >> 8) % JD_POOL_MAX;
        if (!x->p) {
            x->p = jd_pool_realloc(&p, NULL, r & 7, n); /* osize: a type tag when ptr is NULL */
            assert_non_null(x->p);
            x->n = n;
            x->fill = (unsigned char)(r >> 40);
            fill(x);
        } else if (r % 3 == 0) {
            check(x, x->n);
            assert_null(jd_pool_realloc(&p, x->p, x->n, 0));
            x->p = NULL;
        } else {
            check(x, x->n);
            x->p = jd_pool_realloc(&p, x->p, x->n, n);
            assert_non_null(x->p);
            check(x, x->n < n ? x->n : n);
            x->n = n;
            fill(x);
        }
    }
    for (int i = 0; i < N; i++) /* nothing was overwritten by a neighbour */
        if (b[i].p)
            check(&b[i], b[i].n);
    for (int i = 0; i < N; i++)
        if (b[i].p)
            jd_pool_realloc(&p, b[i].p, b[i].n, 0);
    jd_pool_destroy(&p);
}

static void test_pool_random(void **state)
{
    (void)state;
    run_random(0);
}

static void test_pool_off(void **state)
{
    (void)state;
    run_random(1);
}

static void test_pool_reuse(void **state)
{
    (void)state;
    jd_pool p;
    jd_pool_init(&p);
    p.off = 0;
    void *a = jd_pool_realloc(&p, NULL, 0, 40);
    void *b = jd_pool_realloc(&p, NULL, 0, 40);
    assert_ptr_not_equal(a, b);
    assert_int_equal((uintptr_t)a % JD_POOL_GRAIN, 0);
    jd_pool_realloc(&p, a, 40, 0);
    assert_ptr_equal(jd_pool_realloc(&p, NULL, 0, 33), a); /* same class: the freed block */
    /* within a class a resize keeps the block */
    assert_ptr_equal(jd_pool_realloc(&p, a, 33, 48), a);
    /* many slabs' worth of blocks, all distinct and aligned */
    enum { M = 20000 };
    void **v = malloc(M * sizeof *v);
    for (int i = 0; i < M; i++) {
        v[i] = jd_pool_realloc(&p, NULL, 0, (size_t)(1 + i % JD_POOL_MAX));
        assert_int_equal((uintptr_t)v[i] % JD_POOL_GRAIN, 0);
        memset(v[i], i & 0xff, (size_t)(1 + i % JD_POOL_MAX));
    }
    for (int i = 0; i < M; i++)
        assert_int_equal(((unsigned char *)v[i])[i % JD_POOL_MAX], i & 0xff);
    free(v);
    jd_pool_destroy(&p);
    jd_pool_destroy(&p); /* twice: an emptied pool is a fresh one */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pool_random),
        cmocka_unit_test(test_pool_off),
        cmocka_unit_test(test_pool_reuse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
