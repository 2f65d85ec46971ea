/* deliver_bench: signed webhook deliveries per second through the dispatcher to a fast
 * local receiver (libevent evhttp in a forked child, answering 204), with 64 requests in
 * flight on one channel, each to a different user (so per-user order does not serialise
 * them). Prints deliveries/s and the p50/p99 latency of one attempt.
 *
 *   deliver_bench [-n 20000] [-c 64] [-b 300]   (requests, concurrency, body bytes) */
#define _GNU_SOURCE
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "deliver.h"
#include "dispatch.h"

static void on_request(struct evhttp_request *req, void *arg)
{
    (void)arg;
    evhttp_send_reply(req, 204, "No Content", NULL);
}

/* The receiver: binds 127.0.0.1:0, writes its port to fd, serves until killed. */
static void receiver(int fd)
{
    struct event_base *b = event_base_new();
    struct evhttp *h = evhttp_new(b);
    evhttp_set_gencb(h, on_request, NULL);
    struct evhttp_bound_socket *s = evhttp_bind_socket_with_handle(h, "127.0.0.1", 0);
    if (!s)
        _exit(1);
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    getsockname(evhttp_bound_socket_get_fd(s), (struct sockaddr *)&a, &len);
    int port = ntohs(a.sin_port);
    if (write(fd, &port, sizeof port) != sizeof port)
        _exit(1);
    close(fd);
    event_base_dispatch(b);
    _exit(0);
}

static int64_t *lat;
static size_t nlat, ndone, nfailed;
static size_t total;
static struct event_base *base;

static void on_result(void *ud, const jd_dispatch_result *r)
{
    (void)ud;
    if (r->outcome == JD_DELIVERED)
        lat[nlat++] = r->latency_us;
    else if (r->outcome != JD_RETRY_SCHEDULED)
        nfailed++;
    if (r->outcome != JD_RETRY_SCHEDULED && ++ndone == total)
        event_base_loopbreak(base);
}

static int cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    size_t n = 20000, body_bytes = 300;
    unsigned conc = 64;
    int opt;
    while ((opt = getopt(argc, argv, "n:c:b:")) != -1) {
        if (opt == 'n')
            n = strtoul(optarg, NULL, 10);
        else if (opt == 'c')
            conc = (unsigned)strtoul(optarg, NULL, 10);
        else if (opt == 'b')
            body_bytes = strtoul(optarg, NULL, 10);
    }
    int fds[2];
    if (pipe(fds))
        return 1;
    pid_t child = fork();
    if (child == 0) {
        close(fds[0]);
        receiver(fds[1]);
    }
    close(fds[1]);
    int port = 0;
    if (read(fds[0], &port, sizeof port) != sizeof port) {
        fprintf(stderr, "deliver_bench: the receiver did not start\n");
        return 1;
    }
    close(fds[0]);

    base = event_base_new();
    jd_dispatch_hooks hooks = {.on_result = on_result};
    jd_dispatch *d = jd_dispatch_new(base, &hooks);
    const char *secrets[] = {"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"};
    jd_channel_opts o = {
        .type = "webhook", .concurrency = conc, .secrets = secrets, .nsecrets = 1, .allow = JD_ALLOW_LOOPBACK};
    jd_dispatch_channel(d, "bench", &o);

    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/hook", port);
    char *body = malloc(body_bytes + 1);
    memset(body, 'x', body_bytes);
    memcpy(body, "{\"payload\":\"", 12);
    memcpy(body + body_bytes - 2, "\"}", 2);
    body[body_bytes] = 0;
    jd_request_header hdr = {.name = (char *)"content-type", .value = (char *)"application/json"};
    jd_request req = {
        .url = url, .method = (char *)"POST", .headers = &hdr, .nheaders = 1, .body = body, .body_len = body_bytes};
    total = n;
    lat = calloc(n, sizeof *lat);
    double t0 = now_s();
    char id[40], user[32];
    for (size_t i = 0; i < n; i++) {
        snprintf(id, sizeof id, "%032zx", i);
        snprintf(user, sizeof user, "user%zu", i);
        jd_dispatch_submit(d, id, "bench", user, &req, 0, 0);
    }
    double t1 = now_s();
    event_base_dispatch(base);
    double t2 = now_s();
    qsort(lat, nlat, sizeof *lat, cmp64);
    printf("deliver_bench: %zu signed webhooks (%zu B bodies), %u in flight, loopback evhttp receiver (204)\n", n,
           body_bytes, conc);
    printf("deliver_bench: %.0f deliveries/s (%.3f s; queueing %zu took %.3f s), failed %zu\n",
           (double)nlat / (t2 - t0), t2 - t0, n, t1 - t0, nfailed);
    if (nlat)
        printf("deliver_bench: latency per attempt p50 %.2f ms, p99 %.2f ms\n", lat[nlat / 2] / 1000.0,
               lat[nlat * 99 / 100] / 1000.0);
    jd_dispatch_free(d);
    event_base_free(base);
    free(lat);
    free(body);
    kill(child, SIGTERM);
    waitpid(child, NULL, 0);
    return nfailed ? 1 : 0;
}
