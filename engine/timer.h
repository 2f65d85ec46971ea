/* timer: the in-memory window of pending timers, fired in (due, seq) order. A timer
 * names the stage entry it belongs to (instance number and generation); firing it turns
 * it into a timer event, which the processor drops if the person has moved on. Uses buf.
 * 48 bytes per pending timer.
 *
 * Timers of one j.after all have its delay, and are scheduled as the clock moves
 * forward: in due order. So a timer scheduled with its delay goes to that delay's lane,
 * a queue in due order (appended at the tail, taken from the head: memory read in
 * order). Only a timer that would not keep its lane in order (scheduled at an earlier
 * time than the lane's last, a lane's delay edited by a reload) and those loaded from the
 * store or carried over go to a 4-ary min-heap. The earliest timer is the least of the
 * heap's top and the lanes' heads. */
#ifndef JD_TIMER_H
#define JD_TIMER_H

#include <stddef.h>
#include <stdint.h>

struct jd_user;
struct jd_instance;

typedef struct jd_timer {
    int64_t due;
    uint64_t seq; /* scheduling order: ties on due fire in the order scheduled */
    struct jd_user *user;
    struct jd_instance *inst;
    uint32_t iid;
    uint32_t gen;
    uint16_t after; /* index of the j.after in its stage */
    uint16_t journey;
    struct jd_gen *pin; /* a pinned instance's: journey indexes its defs; NULL: current */
} jd_timer;

#define JD_TIMER_LANES 16

typedef struct jd_timer_lane {
    int64_t delay_ms;
    jd_timer *q; /* q[head..tail) in (due, seq) order */
    size_t head, tail, cap;
} jd_timer_lane;

typedef struct jd_timers {
    jd_timer *heap;
    size_t hn, hcap;
    jd_timer_lane lane[JD_TIMER_LANES];
    int nlanes;
    int first;  /* where the earliest is: a lane, -1 the heap, -2 none */
    int popped; /* where jd_timers_pop took the last one from (the same) */
    size_t n;   /* timers pending, in all */
    uint64_t next_seq;
} jd_timers;

void jd_timers_init(jd_timers *t);
void jd_timers_free(jd_timers *t);
void jd_timers_push(jd_timers *t, jd_timer tm); /* assigns seq */
/* Inserts with the seq it has (a timer loaded from the store or carried over). */
void jd_timers_insert(jd_timers *t, jd_timer tm);
/* Inserts a timer scheduled delay_ms after its stage entry (its j.after's delay). */
void jd_timers_schedule(jd_timers *t, jd_timer tm, int64_t delay_ms);
/* The earliest timer, or NULL. */
const jd_timer *jd_timers_peek(const jd_timers *t);
void jd_timers_pop(jd_timers *t, jd_timer *out);
/* The timer k places after the last one popped, in its lane; NULL when there is none or
 * that one came from the heap. A lane's timers come due in order: these fire soon. */
const jd_timer *jd_timers_ahead(const jd_timers *t, size_t k);
/* Iteration in no particular order: for (size_t it = 0; (tm = jd_timers_each(t, &it));) */
const jd_timer *jd_timers_each(const jd_timers *t, size_t *it);

#endif
