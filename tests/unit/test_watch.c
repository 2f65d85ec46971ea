/* test_watch: engine/watch.h — the thread that interrupts a call running past its time
 * with a signal on the caller's thread: a long call is interrupted, once; a call that
 * ended is not; the thread sleeps when no calls come and wakes for the next one; after
 * a fork the child gets a thread of its own. The script states' use of it (endless
 * loops stopped, in coroutines too) is in test_script. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "watch.h"

static volatile sig_atomic_t hits;

static void on_hit(void)
{
    hits++;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Spins (a call that does not return) until the handler ran or max_ms passed; returns
 * the milliseconds it took. */
static int64_t spin_until_hit(int max_ms)
{
    int64_t t0 = now_ns();
    while (!hits && now_ns() - t0 < (int64_t)max_ms * 1000000)
        ;
    return (now_ns() - t0) / 1000000;
}

static jd_watch w;

static int setup(void **state)
{
    (void)state;
    jd_watch_init(on_hit);
    jd_watch_add(&w);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    jd_watch_remove(&w);
    return 0;
}

static void test_long_call_is_interrupted_once(void **state)
{
    (void)state;
    hits = 0;
    assert_int_equal(jd_watch_begin(&w, CLOCK_MONOTONIC, now_ns() + 10000000), 0);
    int64_t ms = spin_until_hit(5000);
    assert_int_equal(hits, 1);
    assert_true(ms >= 9); /* not before its time */
    /* still running: no second signal */
    int64_t t0 = now_ns();
    while (now_ns() - t0 < 30000000)
        ;
    assert_int_equal(hits, 1);
    jd_watch_end(&w);
}

static void test_ended_call_is_left_alone(void **state)
{
    (void)state;
    hits = 0;
    jd_watch_begin(&w, CLOCK_MONOTONIC, now_ns() + 5000000);
    jd_watch_end(&w);
    sleep_ms(30); /* several of the thread's rounds */
    assert_int_equal(hits, 0);
}

static void test_wakes_after_sleeping(void **state)
{
    (void)state;
    /* a second and a bit without calls: the thread sleeps on its condition */
    sleep_ms(1300);
    hits = 0;
    jd_watch_begin(&w, CLOCK_MONOTONIC, now_ns() + 5000000);
    spin_until_hit(5000);
    jd_watch_end(&w);
    assert_int_equal(hits, 1);
}

static void test_forked_child_is_watched(void **state)
{
    (void)state;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        hits = 0;
        int rc = jd_watch_begin(&w, CLOCK_MONOTONIC, now_ns() + 5000000);
        spin_until_hit(3000);
        jd_watch_end(&w);
        _exit(rc == 0 && hits == 1 ? 0 : 1);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_long_call_is_interrupted_once),
        cmocka_unit_test(test_ended_call_is_left_alone),
        cmocka_unit_test(test_wakes_after_sleeping),
        cmocka_unit_test(test_forked_child_is_watched),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
