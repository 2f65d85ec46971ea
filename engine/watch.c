#define _GNU_SOURCE /* pthread_setname_np */
#include "watch.h"

#include <signal.h>
#include <stddef.h>

/* The list, the thread's state and the fork handlers' hand-over share one lock. */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static jd_watch *head;
static atomic_int started;   /* the thread runs (in this process: not after a fork) */
static atomic_int sleeping;  /* the thread waits for a jd_watch_begin */
static void (*action)(void); /* on the interrupted thread */
static pthread_once_t once = PTHREAD_ONCE_INIT;

#define QUIET_ROUNDS (1000000000LL / JD_WATCH_NS) /* a second without calls: sleep */

static int watch_signal(void)
{
    return SIGRTMIN + 1;
}

static void on_signal(int sig)
{
    (void)sig;
    if (action)
        action();
}

static int64_t now_on(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* 1 when a call is in progress on some slot (under mu). */
static int any_call(void)
{
    for (jd_watch *w = head; w; w = w->next)
        if (atomic_load(&w->at))
            return 1;
    return 0;
}

static void *run(void *arg)
{
    (void)arg;
    pthread_setname_np(pthread_self(), "jd-watch");
    atomic_store(&sleeping, 0); /* a forked child's calls stop waking it (after_fork_child) */
    uint64_t last = 0;
    long quiet = 0;
    struct timespec tick = {0, JD_WATCH_NS};
    pthread_mutex_lock(&mu);
    for (;;) {
        uint64_t calls = 0;
        for (jd_watch *w = head; w; w = w->next) {
            calls += atomic_load_explicit(&w->calls, memory_order_relaxed);
            int64_t at = atomic_load(&w->at);
            /* the exchange makes sure the call is still the one that set at: a signal
             * that reaches the next call instead only arms its hook early */
            if (at && now_on((clockid_t)atomic_load_explicit(&w->clock, memory_order_relaxed)) >= at &&
                atomic_compare_exchange_strong(&w->at, &at, 0))
                pthread_kill(atomic_load_explicit(&w->thread, memory_order_relaxed), watch_signal());
        }
        quiet = calls == last ? quiet + 1 : 0;
        last = calls;
        if (quiet >= QUIET_ROUNDS || !head) {
            /* announced before looking: a call that begins after the look sees it and
             * wakes us (jd_watch_begin), one that began before is seen here */
            atomic_store(&sleeping, 1);
            if (!any_call())
                pthread_cond_wait(&wake, &mu);
            atomic_store(&sleeping, 0);
            quiet = 0;
        }
        pthread_mutex_unlock(&mu);
        nanosleep(&tick, NULL);
        pthread_mutex_lock(&mu);
    }
    return NULL;
}

/* Under mu. */
static void start(void)
{
    if (atomic_load(&started))
        return;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    /* the thread takes no process signal (it inherits this mask) */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t t;
    atomic_store(&started, pthread_create(&t, &a, run, NULL) == 0);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&a);
}

/* Under mu: the thread runs and is not waiting. */
static void start_awake(void)
{
    start();
    pthread_cond_signal(&wake);
}

/* A fork copies the lock as the forking thread held it and no thread: the child starts
 * its own when it first begins a call (sleeping 1 sends that call to wake()). */
static void before_fork(void)
{
    pthread_mutex_lock(&mu);
}
static void after_fork_parent(void)
{
    pthread_mutex_unlock(&mu);
}
static void after_fork_child(void)
{
    atomic_store(&started, 0);
    atomic_store(&sleeping, 1);
    pthread_mutex_unlock(&mu);
}

static void setup(void)
{
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(watch_signal(), &sa, NULL);
    pthread_atfork(before_fork, after_fork_parent, after_fork_child);
}

void jd_watch_init(void (*on_signal_fn)(void))
{
    action = on_signal_fn;
    pthread_once(&once, setup);
}

void jd_watch_add(jd_watch *w)
{
    atomic_store(&w->at, 0);
    pthread_mutex_lock(&mu);
    w->next = head;
    w->prevp = &head;
    if (head)
        head->prevp = &w->next;
    head = w;
    start_awake();
    pthread_mutex_unlock(&mu);
}

void jd_watch_remove(jd_watch *w)
{
    pthread_mutex_lock(&mu);
    *w->prevp = w->next;
    if (w->next)
        w->next->prevp = w->prevp;
    pthread_mutex_unlock(&mu);
}

static void wake_thread(void)
{
    pthread_mutex_lock(&mu);
    start_awake();
    pthread_mutex_unlock(&mu);
}

int jd_watch_begin(jd_watch *w, clockid_t clock, int64_t at)
{
    atomic_store_explicit(&w->clock, (int)clock, memory_order_relaxed);
    atomic_store_explicit(&w->thread, pthread_self(), memory_order_relaxed);
    atomic_store_explicit(&w->calls, atomic_load_explicit(&w->calls, memory_order_relaxed) + 1, memory_order_relaxed);
    atomic_store(&w->at, at); /* sequentially consistent, against the thread's sleeping */
    if (atomic_load(&sleeping))
        wake_thread();
    return atomic_load_explicit(&started, memory_order_relaxed) ? 0 : -1;
}

void jd_watch_end(jd_watch *w)
{
    atomic_store_explicit(&w->at, 0, memory_order_relaxed);
}
