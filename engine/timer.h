/* timer: the in-memory window of pending timers, a 4-ary min-heap ordered by
 * (due, seq). A timer names the stage entry it belongs to (instance number and
 * generation); firing it turns it into a timer event, which the processor drops if
 * the person has moved on. Uses buf. 48 bytes per pending timer. */
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

typedef struct jd_timers {
    jd_timer *heap;
    size_t n, cap;
    uint64_t next_seq;
} jd_timers;

void jd_timers_init(jd_timers *t);
void jd_timers_free(jd_timers *t);
void jd_timers_push(jd_timers *t, jd_timer tm); /* assigns seq */
/* Inserts with the seq it has (a timer loaded from the store or carried over). */
void jd_timers_insert(jd_timers *t, jd_timer tm);
/* The earliest timer, or NULL. */
const jd_timer *jd_timers_peek(const jd_timers *t);
void jd_timers_pop(jd_timers *t, jd_timer *out);

#endif
