/* fuzzutil: helpers for the libFuzzer targets that drive `journeyd serve` in process
 * (fuzz_http, fuzz_stream): one server on the trial-onboarding example for the whole run
 * (freed at exit), and a pump that writes one input into a connected socket, half-closes
 * it once the server is idle (so pipelined requests are all answered) and runs the
 * server's event loop until the server closes its end or a deadline passes. Run the
 * targets from the repository root. */
#ifndef JD_FUZZUTIL_H
#define JD_FUZZUTIL_H

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "serve.h"

#define FU_CONFIG "examples/trial-onboarding/journeyd.lua"
/* Event priorities: the server's events get the default (1); the pump's idle event the
 * lowest (2), so it runs only in a loop iteration where nothing else was ready. */
#define FU_PRIORITIES 3

static jd_server fu_srv;
static int fu_srv_open;

static void fu_server_close(void)
{
    if (fu_srv_open)
        jd_server_close(&fu_srv);
    fu_srv_open = 0;
}

/* The server, opened on first use with the daemon's options. Its JSON log (stdout) goes
 * to /dev/null; SIGPIPE is ignored as `journeyd serve` does. */
static jd_server *fu_server(void)
{
    if (fu_srv_open)
        return &fu_srv;
    signal(SIGPIPE, SIG_IGN);
    int null = open("/dev/null", O_WRONLY);
    if (null >= 0) {
        dup2(null, 1);
        close(null);
    }
    jd_options o = {.decisions_per_user = 20, .dedupe_ttl_ms = 24LL * 3600 * 1000};
    char err[1024];
    if (jd_server_open(&fu_srv, FU_CONFIG, &o, err, sizeof err)) {
        fprintf(stderr, "fuzz: %s (run from the repository root)\n", err);
        abort();
    }
    if (event_base_priority_init(fu_srv.base, FU_PRIORITIES))
        abort();
    fu_srv_open = 1;
    atexit(fu_server_close);
    return &fu_srv;
}

typedef struct fu_pump {
    const uint8_t *data;
    size_t size, off;
    jd_buf *answer;
    int done;
    struct event *rd, *wr, *idle;
} fu_pump;

static void fu_finish(fu_pump *p)
{
    p->done = 1;
    event_del(p->rd); /* a closed socket stays readable */
    event_base_loopbreak(event_get_base(p->rd));
}

static void fu_on_read(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    fu_pump *p = arg;
    char buf[16384];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n > 0) {
            jd_buf_append(p->answer, buf, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0 || errno != EAGAIN)
            fu_finish(p); /* the server closed (or reset) the connection */
        return;
    }
}

static void fu_on_write(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    fu_pump *p = arg;
    while (p->off < p->size) {
        ssize_t n = write(fd, p->data + p->off, p->size - p->off);
        if (n > 0) {
            p->off += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && errno == EAGAIN) {
            event_add(p->wr, NULL);
            return;
        } else {
            break; /* EPIPE: the server stopped reading; the rest is not sent */
        }
    }
    p->off = p->size;
    event_active(p->idle, EV_TIMEOUT, 1);
}

/* Everything is written and the server has nothing left to do: end the input. */
static void fu_on_idle(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    (void)arg;
    shutdown(fd, SHUT_WR);
}

static void fu_on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    fu_finish(arg);
}

/* Writes data[0..size) to fd (our end of a socketpair whose other end the server
 * serves), then, when the server is idle, shuts down writing; runs base until the server
 * closes its end or timeout_ms pass, appending what the server sends to answer. Closes
 * fd. */
static void fu_pump_run(struct event_base *base, int fd, const uint8_t *data, size_t size, jd_buf *answer,
                        int timeout_ms)
{
    evutil_make_socket_nonblocking(fd);
    fu_pump p = {.data = data, .size = size, .answer = answer};
    p.rd = event_new(base, fd, EV_READ | EV_PERSIST, fu_on_read, &p);
    p.wr = event_new(base, fd, EV_WRITE, fu_on_write, &p);
    p.idle = event_new(base, fd, 0, fu_on_idle, &p);
    event_priority_set(p.idle, FU_PRIORITIES - 1);
    struct event *deadline = evtimer_new(base, fu_on_deadline, &p);
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    event_add(p.rd, NULL);
    event_add(deadline, &tv);
    fu_on_write(fd, EV_WRITE, &p);
    while (!p.done)
        event_base_loop(base, EVLOOP_ONCE);
    event_free(p.rd);
    event_free(p.wr);
    event_free(p.idle);
    event_free(deadline);
    close(fd);
}

#endif
