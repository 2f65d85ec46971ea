/* watch: one thread for the process that notices a call running longer than
 * JD_WATCH_NS and interrupts the thread running it with a signal, whose handler (the
 * owner's, jd_watch_init) runs on that thread. The script states' time limit uses it so
 * that the Lua VM runs without an instruction hook until a call has lasted a few
 * milliseconds (script.c). Uses pthreads and nothing else.
 *
 * A slot is watched from jd_watch_add to jd_watch_remove; a call on it is published by
 * jd_watch_begin and withdrawn by jd_watch_end, a few stores each (no lock, no syscall).
 * The thread polls every JD_WATCH_NS while calls are being made and sleeps after a second
 * without any, until the next jd_watch_begin wakes it. */
#ifndef JD_WATCH_H
#define JD_WATCH_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#define JD_WATCH_NS 4000000LL /* 4 ms */

typedef struct jd_watch {
    _Atomic int64_t at;        /* on clock: when the call in progress is interrupted; 0: none */
    _Atomic uint64_t calls;    /* calls begun, so the thread can tell busy from idle */
    atomic_int clock;          /* at's clock (a clockid_t) */
    _Atomic(pthread_t) thread; /* the caller's */
    struct jd_watch *next;     /* in the watched list (the watch thread's lock) */
    struct jd_watch **prevp;   /* what points at this one */
} jd_watch;

/* Once per process, before the first jd_watch_add: on_signal runs on the interrupted
 * thread, in a signal handler (so: async-signal-safe; lua_sethook is). */
void jd_watch_init(void (*on_signal)(void));
void jd_watch_add(jd_watch *w);
void jd_watch_remove(jd_watch *w);
/* A call begins on the calling thread; it is interrupted once at time at (on clock)
 * unless jd_watch_end comes first. Returns 0, or -1 when there is no watch thread (it
 * could not be started): then nothing will interrupt the call. */
int jd_watch_begin(jd_watch *w, clockid_t clock, int64_t at);
void jd_watch_end(jd_watch *w);

#endif
