/* The HTTP request path of `journeyd serve`: evhttp and the handlers of engine/http.c on
 * a server with the trial-onboarding example and no keys (so loopback clients may write
 * and read the admin API). Each input is the raw bytes one client sends on a connection
 * from 127.0.0.1 (requests, possibly pipelined). The first answer, when it is JSON,
 * must parse. Nothing may crash or leak.
 *
 * Connections: libevent 2.1 does not export evhttp_get_request, so a connection enters
 * evhttp the way the daemon's do, through an accept: evhttp_accept_socket() on one end
 * of a socketpair (the "listener"), and accept4() below, which for that socket hands out
 * the server end of the input's socketpair with a 127.0.0.1 peer address. Nothing is
 * bound. */
#define _DEFAULT_SOURCE
#include <arpa/inet.h>
#include <event2/http.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/syscall.h>

#include "fuzzutil.h"

static int listen_fd[2] = {-1, -1}; /* [0]: evhttp's listener, [1]: wakes it */
static int pending = -1;            /* the server end of the input's connection */
static jd_json_reader *jr;

/* Used by libevent's listener (evutil_accept4_). */
int accept4(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags);
int accept4(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags)
{
    if (fd != listen_fd[0] || listen_fd[0] < 0)
        return (int)syscall(SYS_accept4, fd, addr, addrlen, flags);
    char b;
    while (read(fd, &b, 1) == 1)
        ;
    if (pending < 0) {
        errno = EAGAIN;
        return -1;
    }
    int c = pending;
    pending = -1;
    if (flags & SOCK_NONBLOCK)
        evutil_make_socket_nonblocking(c);
    if (flags & SOCK_CLOEXEC)
        evutil_make_socket_closeonexec(c);
    struct sockaddr_in peer = {.sin_family = AF_INET, .sin_port = htons(40000)};
    peer.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (addr && addrlen) {
        memcpy(addr, &peer, *addrlen < sizeof peer ? *addrlen : sizeof peer);
        *addrlen = sizeof peer;
    }
    return c;
}

static void cleanup(void)
{
    fu_server_close(); /* frees the listener, which closes listen_fd[0] */
    listen_fd[0] = -1;
    close(listen_fd[1]);
    jd_json_reader_free(jr);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    unsetenv("JOURNEYD_WRITE_KEYS");
    unsetenv("JOURNEYD_ADMIN_KEYS");
    jd_server *s = fu_server();
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, listen_fd))
        abort();
    evutil_make_socket_nonblocking(listen_fd[0]);
    if (evhttp_accept_socket(s->http, listen_fd[0]))
        abort();
    jr = jd_json_reader_new();
    atexit(cleanup);
    return 0;
}

/* The first response, when it answers the first request (not HEAD) with a complete JSON
 * body, must be valid JSON. Skips interim 100 Continue responses. */
static void check_answer(const uint8_t *req, size_t reqlen, const jd_buf *a)
{
    if (reqlen < 5 || memcmp(req, "HEAD ", 5) == 0)
        return;
    if (a->len == 0)
        return;
    const char *p = a->data, *end = a->data + a->len;
    while (p && end - p > 12) {
        if (memcmp(p, "HTTP/", 5) != 0)
            abort(); /* not an HTTP response */
        const char *hdr_end = NULL;
        for (const char *q = p; q + 4 <= end; q++)
            if (memcmp(q, "\r\n\r\n", 4) == 0) {
                hdr_end = q + 4;
                break;
            }
        if (!hdr_end)
            return; /* cut short */
        if (memcmp(p + 8, " 100 ", 5) == 0) {
            p = hdr_end;
            continue;
        }
        int json = 0;
        long clen = -1;
        for (const char *l = p; l < hdr_end;) {
            const char *nl = memchr(l, '\n', (size_t)(hdr_end - l));
            if (!nl)
                break;
            if ((size_t)(nl - l) > 14 && strncasecmp(l, "Content-Type: ", 14) == 0)
                json = (size_t)(nl - l) >= 30 && strncmp(l + 14, "application/json", 16) == 0;
            if ((size_t)(nl - l) > 16 && strncasecmp(l, "Content-Length: ", 16) == 0)
                clen = strtol(l + 16, NULL, 10);
            l = nl + 1;
        }
        if (json && clen >= 0 && end - hdr_end >= clen) {
            jd_buf mp;
            jd_buf_init(&mp);
            char err[256];
            if (jd_json_to_msgpack(jr, hdr_end, (size_t)clen, &mp, err, sizeof err)) {
                fprintf(stderr, "fuzz_http: invalid JSON in the answer (%s): %.*s\n", err, (int)clen, hdr_end);
                abort();
            }
            jd_buf_free(&mp);
        }
        return;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    jd_server *s = fu_server();
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
        abort();
    pending = sv[0];
    if (write(listen_fd[1], "c", 1) != 1)
        abort();
    jd_buf answer;
    jd_buf_init(&answer);
    fu_pump_run(s->base, sv[1], data, size, &answer, 50);
    if (pending >= 0) { /* never accepted */
        close(pending);
        pending = -1;
    }
    check_answer(data, size, &answer);
    jd_buf_free(&answer);
    return 0;
}
