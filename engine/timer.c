#include "timer.h"

#include <stdlib.h>

#include "buf.h"

void jd_timers_init(jd_timers *t)
{
    t->heap = NULL;
    t->n = t->cap = 0;
    t->next_seq = 0;
}

void jd_timers_free(jd_timers *t)
{
    free(t->heap);
    jd_timers_init(t);
}

static int before(const jd_timer *a, const jd_timer *b)
{
    return a->due < b->due || (a->due == b->due && a->seq < b->seq);
}

void jd_timers_push(jd_timers *t, jd_timer tm)
{
    tm.seq = t->next_seq++;
    jd_timers_insert(t, tm);
}

/* A 4-ary heap: half the levels of a binary one, so a pop of a big heap waits on half as
 * many cache misses (the four children of a node are adjacent). */
#define ARITY 4

void jd_timers_insert(jd_timers *t, jd_timer tm)
{
    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 1024;
        t->heap = jd_xrealloc(t->heap, t->cap * sizeof *t->heap);
    }
    size_t i = t->n++;
    while (i > 0) {
        size_t p = (i - 1) / ARITY;
        if (!before(&tm, &t->heap[p]))
            break;
        t->heap[i] = t->heap[p];
        i = p;
    }
    t->heap[i] = tm;
}

const jd_timer *jd_timers_peek(const jd_timers *t)
{
    return t->n ? &t->heap[0] : NULL;
}

void jd_timers_pop(jd_timers *t, jd_timer *out)
{
    *out = t->heap[0];
    jd_timer last = t->heap[--t->n];
    size_t i = 0, n = t->n;
    for (;;) {
        size_t c = ARITY * i + 1, m = i;
        const jd_timer *best = &last;
        for (size_t k = c; k < c + ARITY && k < n; k++) {
            if (before(&t->heap[k], best)) {
                m = k;
                best = &t->heap[k];
            }
        }
        if (m == i)
            break;
        t->heap[i] = t->heap[m];
        i = m;
    }
    if (n)
        t->heap[i] = last;
}
