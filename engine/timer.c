#include "timer.h"

#include <stdlib.h>
#include <string.h>

#include "buf.h"

void jd_timers_init(jd_timers *t)
{
    memset(t, 0, sizeof *t);
    t->first = -2;
    t->popped = -1;
}

void jd_timers_free(jd_timers *t)
{
    free(t->heap);
    for (int i = 0; i < t->nlanes; i++)
        free(t->lane[i].q);
    jd_timers_init(t);
}

static int before(const jd_timer *a, const jd_timer *b)
{
    return a->due < b->due || (a->due == b->due && a->seq < b->seq);
}

/* The earliest of the heap's top and the lanes' heads. */
static void find_first(jd_timers *t)
{
    const jd_timer *best = t->hn ? &t->heap[0] : NULL;
    t->first = best ? -1 : -2;
    for (int i = 0; i < t->nlanes; i++) {
        const jd_timer_lane *l = &t->lane[i];
        if (l->head < l->tail && (!best || before(&l->q[l->head], best))) {
            best = &l->q[l->head];
            t->first = i;
        }
    }
}

/* Takes tm as the earliest if it is (tm was just stored at *at). */
static void consider(jd_timers *t, const jd_timer *at, int where)
{
    const jd_timer *cur = jd_timers_peek(t);
    if (!cur || before(at, cur))
        t->first = where;
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
    if (t->hn == t->hcap) {
        t->hcap = t->hcap ? t->hcap * 2 : 1024;
        t->heap = jd_xrealloc(t->heap, t->hcap * sizeof *t->heap);
    }
    size_t i = t->hn++;
    while (i > 0) {
        size_t p = (i - 1) / ARITY;
        if (!before(&tm, &t->heap[p]))
            break;
        t->heap[i] = t->heap[p];
        i = p;
    }
    t->heap[i] = tm;
    t->n++;
    if (t->first == -1 || i == 0) /* the top changed, or was the earliest and moved down */
        consider(t, &t->heap[0], -1);
}

static void heap_pop(jd_timers *t)
{
    jd_timer last = t->heap[--t->hn];
    size_t i = 0, n = t->hn;
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

void jd_timers_schedule(jd_timers *t, jd_timer tm, int64_t delay_ms)
{
    jd_timer_lane *l = NULL;
    for (int i = 0; i < t->nlanes && !l; i++)
        if (t->lane[i].delay_ms == delay_ms)
            l = &t->lane[i];
    if (!l && t->nlanes < JD_TIMER_LANES) {
        l = &t->lane[t->nlanes++];
        l->delay_ms = delay_ms;
    }
    if (!l || (l->head < l->tail && before(&tm, &l->q[l->tail - 1]))) {
        jd_timers_insert(t, tm); /* would break the lane's order */
        return;
    }
    void *q = l->q;
    jd_queue_room(&q, &l->head, &l->tail, &l->cap, sizeof *l->q, 1024);
    l->q = q;
    l->q[l->tail++] = tm;
    t->n++;
    consider(t, &l->q[l->tail - 1], (int)(l - t->lane));
}

const jd_timer *jd_timers_peek(const jd_timers *t)
{
    if (t->first == -1)
        return &t->heap[0];
    if (t->first >= 0)
        return &t->lane[t->first].q[t->lane[t->first].head];
    return NULL;
}

void jd_timers_pop(jd_timers *t, jd_timer *out)
{
    *out = *jd_timers_peek(t);
    t->popped = t->first;
    if (t->first == -1) {
        heap_pop(t);
    } else {
        jd_timer_lane *l = &t->lane[t->first];
        if (++l->head == l->tail)
            l->head = l->tail = 0;
    }
    t->n--;
    find_first(t);
}

const jd_timer *jd_timers_ahead(const jd_timers *t, size_t k)
{
    if (t->popped < 0)
        return NULL;
    const jd_timer_lane *l = &t->lane[t->popped];
    return l->head + k < l->tail ? &l->q[l->head + k] : NULL;
}

const jd_timer *jd_timers_each(const jd_timers *t, size_t *it)
{
    size_t i = *it;
    if (i < t->hn) {
        ++*it;
        return &t->heap[i];
    }
    i -= t->hn;
    for (int k = 0; k < t->nlanes; k++) {
        const jd_timer_lane *l = &t->lane[k];
        if (i < l->tail - l->head) {
            ++*it;
            return &l->q[l->head + i];
        }
        i -= l->tail - l->head;
    }
    return NULL;
}
