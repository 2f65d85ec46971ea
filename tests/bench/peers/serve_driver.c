/* serve_driver: feeds the benchmark's events to a running `journeyd serve`, for the
 * durable journeyd rows of `make bench` (tests/bench/table.sh).
 *
 *   serve_driver http|stream HOST PORT EVENTS.jsonl [--max N] [--batch B] [--inflight K]
 *                [--rate EVENTS_PER_S]
 *
 * Before the clock starts: reads the first N events (all by default) and builds every
 * request: `http` a `POST /v1/batch` of B (500) events as they are in the file,
 * `stream` a msgpack-stream frame of B events (converted with libjourneyd's strict
 * JSON-to-msgpack reader, as build/jd-stream-send does while it sends). Then sends them
 * in order with K (1) batches in flight: `stream` on one connection, the next frame
 * written while up to K are unacknowledged (the protocol answers frames in order), the
 * same shape as the Redis driver's K pipelined batches; `http` on K keep-alive
 * connections, one request in flight on each. A batch's answer comes after its events
 * are durable (group commit, fdatasync) and processed. Latency: from writing a batch to
 * reading its answer.
 *
 * --rate paces the batches: batch b leaves at b * B / rate seconds (or as soon as one of
 * the K slots is free, when all are taken at that moment: counted in "sent_late", the
 * batches that left more than 1 ms after their time) instead of as soon as a slot is
 * free; answers are read while waiting. Latency at a given load, not at saturation.
 *
 * Sockets are non-blocking and one poll loop writes and reads, so an answer is read
 * when it arrives even while another batch is being written.
 * Prints "serve: key value" lines (events = events accepted). */
#define _GNU_SOURCE /* strcasestr, ppoll */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <msgpack.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "journeyd.h"
#include "peer_events.h"

typedef struct dconn {
    int fd;
    char *in; /* bytes read, not yet taken as answers: [at, len) */
    size_t at, len, cap;
    size_t *q; /* batches written (or being written), not yet answered: a ring of qcap */
    size_t qhead, qn, qcap;
    int writing; /* q's newest batch is being written, from woff */
    size_t woff;
} dconn;

/* Reads what is there (non-blocking) into c->in; -1 on EOF or error. */
static int fill(dconn *c)
{
    for (;;) {
        if (c->at && c->at == c->len)
            c->at = c->len = 0;
        if (c->cap - c->len < 65536) {
            if (c->at) { /* compact first */
                memmove(c->in, c->in + c->at, c->len - c->at);
                c->len -= c->at;
                c->at = 0;
            }
            if (c->cap - c->len < 65536) {
                c->cap = c->cap ? c->cap * 2 : 1 << 17;
                c->in = realloc(c->in, c->cap);
            }
        }
        ssize_t r = read(c->fd, c->in + c->len, c->cap - c->len);
        if (r > 0) {
            c->len += (size_t)r;
            continue;
        }
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        if (r < 0 && errno == EINTR)
            continue;
        return -1;
    }
}

/* The next complete HTTP answer in c->in: 1 with its status and accepted count (-1
 * when absent) and the body (for errors), 0 when incomplete, -1 when malformed. */
static int take_http(dconn *c, int *status, long *acc, char *body, size_t cap)
{
    const char *p = c->in + c->at;
    size_t n = c->len - c->at;
    const char *end = memmem(p, n, "\r\n\r\n", 4);
    if (!end)
        return n > 65536 ? -1 : 0;
    size_t hl = (size_t)(end - p) + 4;
    char head[4096];
    if (hl >= sizeof head)
        return -1;
    memcpy(head, p, hl);
    head[hl] = '\0';
    const char *cl = strcasestr(head, "\r\ncontent-length:");
    size_t len = cl ? (size_t)strtoul(cl + 17, NULL, 10) : 0;
    if (sscanf(head, "HTTP/1.%*d %d", status) != 1)
        return -1;
    if (n < hl + len)
        return 0;
    size_t bl = len < cap ? len : cap - 1;
    memcpy(body, p + hl, bl);
    body[bl] = '\0';
    const char *a = strstr(body, "\"accepted\":");
    *acc = *status == 200 && a ? atol(a + 11) : -1;
    c->at += hl + len;
    return 1;
}

/* The next complete stream answer in c->in: 1 with its "accepted" count (-1 when
 * absent), 0 when incomplete. */
static int take_frame(dconn *c, long *acc)
{
    const unsigned char *h = (const unsigned char *)c->in + c->at;
    if (c->len - c->at < 4)
        return 0;
    uint32_t n = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
    if (c->len - c->at - 4 < n)
        return 0;
    const char *buf = c->in + c->at + 4;
    *acc = -1;
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    if (msgpack_unpack_next(&u, buf, n, &off) == MSGPACK_UNPACK_SUCCESS && u.data.type == MSGPACK_OBJECT_MAP) {
        for (uint32_t i = 0; i < u.data.via.map.size; i++) {
            const msgpack_object *k = &u.data.via.map.ptr[i].key, *v = &u.data.via.map.ptr[i].val;
            if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == 8 && memcmp(k->via.str.ptr, "accepted", 8) == 0 &&
                v->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
                *acc = (long)v->via.u64;
        }
    }
    msgpack_unpacked_destroy(&u);
    c->at += 4 + n;
    return 1;
}

/* Writes what the socket takes of the batch being written; -1 on error. */
static int push(dconn *c, const msgpack_sbuffer *req)
{
    const msgpack_sbuffer *r = &req[c->q[(c->qhead + c->qn - 1) % c->qcap]];
    while (c->woff < r->size) {
        ssize_t w = write(c->fd, r->data + c->woff, r->size - c->woff);
        if (w > 0)
            c->woff += (size_t)w;
        else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        else if (!(w < 0 && errno == EINTR))
            return -1;
    }
    c->writing = 0;
    return 0;
}

int main(int argc, char **argv)
{
    size_t max = 0, batch = 500, inflight = 1;
    double rate = 0;
    if (argc < 5 || (strcmp(argv[1], "http") != 0 && strcmp(argv[1], "stream") != 0)) {
        fprintf(stderr, "usage: serve_driver http|stream HOST PORT EVENTS.jsonl [--max N] [--batch B] [--inflight K] "
                        "[--rate R]\n");
        return 2;
    }
    int http = strcmp(argv[1], "http") == 0;
    for (int i = 5; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--max") == 0)
            max = (size_t)atol(argv[i + 1]);
        else if (strcmp(argv[i], "--batch") == 0)
            batch = (size_t)atol(argv[i + 1]);
        else if (strcmp(argv[i], "--inflight") == 0)
            inflight = (size_t)atol(argv[i + 1]);
        else if (strcmp(argv[i], "--rate") == 0)
            rate = atof(argv[i + 1]);
    }
    if (!batch || !inflight || inflight > 1024)
        return 2;
    peer_lines in;
    peer_read_lines(argv[4], max, &in);

    /* every request, built before the clock starts */
    size_t nb = (in.n + batch - 1) / batch;
    msgpack_sbuffer *req = calloc(nb ? nb : 1, sizeof *req);
    for (size_t b = 0; b < nb; b++) {
        size_t from = b * batch, to = from + batch < in.n ? from + batch : in.n;
        msgpack_sbuffer body;
        msgpack_sbuffer_init(&body);
        msgpack_sbuffer_init(&req[b]);
        if (http) {
            msgpack_sbuffer_write(&body, "{\"batch\":[", 10);
            for (size_t i = from; i < to; i++) {
                if (i > from)
                    msgpack_sbuffer_write(&body, ",", 1);
                msgpack_sbuffer_write(&body, in.line[i], in.len[i]);
            }
            msgpack_sbuffer_write(&body, "]}", 2);
            char head[256];
            int hl = snprintf(head, sizeof head,
                              "POST /v1/batch HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                              "Content-Length: %zu\r\n\r\n",
                              argv[2], body.size);
            msgpack_sbuffer_write(&req[b], head, (size_t)hl);
        } else {
            msgpack_packer pk;
            msgpack_packer_init(&pk, &body, msgpack_sbuffer_write);
            msgpack_pack_array(&pk, to - from);
            for (size_t i = from; i < to; i++) {
                char *mp, err[256];
                size_t mplen;
                if (jd_json_to_msgpack_alloc(in.line[i], in.len[i], &mp, &mplen, err, sizeof err)) {
                    fprintf(stderr, "serve_driver: line %zu: %s\n", i + 1, err);
                    return 1;
                }
                msgpack_sbuffer_write(&body, mp, mplen);
                free(mp);
            }
            unsigned char h[4] = {(unsigned char)(body.size >> 24), (unsigned char)(body.size >> 16),
                                  (unsigned char)(body.size >> 8), (unsigned char)body.size};
            msgpack_sbuffer_write(&req[b], (const char *)h, 4);
        }
        msgpack_sbuffer_write(&req[b], body.data, body.size);
        msgpack_sbuffer_destroy(&body);
    }
    for (size_t i = 0; i < in.n; i++)
        free(in.line[i]);

    /* stream: one connection holding K batches; http: K connections holding one each */
    size_t nc = http ? inflight : 1, per = http ? 1 : inflight;
    dconn *conns = calloc(nc, sizeof *conns);
    struct pollfd *pfd = calloc(nc, sizeof *pfd);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[3]))};
    if (inet_pton(AF_INET, argv[2], &sa.sin_addr) != 1) {
        fprintf(stderr, "serve_driver: not an IPv4 address: %s\n", argv[2]);
        return 1;
    }
    for (size_t i = 0; i < nc; i++) {
        dconn *c = &conns[i];
        int one = 1;
        c->fd = socket(AF_INET, SOCK_STREAM, 0);
        if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&sa, sizeof sa)) {
            fprintf(stderr, "serve_driver: cannot connect to %s:%s\n", argv[2], argv[3]);
            return 1;
        }
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
        c->qcap = per;
        c->q = malloc(per * sizeof *c->q);
    }

    double *lat = malloc((nb ? nb : 1) * sizeof *lat), *sent = malloc((nb ? nb : 1) * sizeof *sent);
    static char ans[1 << 16];
    size_t accepted = 0, next = 0, done = 0, late = 0;
    double t0 = peer_now();
    while (done < nb) {
        /* start every batch that is due, while a connection has room and is not writing */
        double now = peer_now(), wait = -1;
        while (next < nb) {
            dconn *c = NULL;
            for (size_t i = 0; i < nc && !c; i++)
                if (!conns[i].writing && conns[i].qn < per)
                    c = &conns[i];
            if (!c)
                break;
            if (rate > 0) {
                double due = t0 + (double)(next * batch) / rate;
                if (now < due) {
                    wait = due - now;
                    break;
                }
                if (now > due + 1e-3)
                    late++;
            }
            c->q[(c->qhead + c->qn++) % c->qcap] = next;
            c->writing = 1;
            c->woff = 0;
            sent[next++] = now;
            if (push(c, req)) {
                fprintf(stderr, "serve_driver: batch %zu: write failed\n", next);
                return 1;
            }
            now = peer_now();
        }
        for (size_t i = 0; i < nc; i++) {
            pfd[i].fd = conns[i].fd;
            pfd[i].events = (short)((conns[i].qn ? POLLIN : 0) | (conns[i].writing ? POLLOUT : 0));
            pfd[i].revents = 0;
        }
        struct timespec ts = {(time_t)wait, (long)((wait - (double)(time_t)wait) * 1e9)};
        if (ppoll(pfd, nc, wait >= 0 ? &ts : NULL, NULL) < 0 && errno != EINTR) {
            perror("serve_driver: poll");
            return 1;
        }
        for (size_t i = 0; i < nc; i++) {
            dconn *c = &conns[i];
            if ((pfd[i].revents & POLLOUT) && c->writing && push(c, req)) {
                fprintf(stderr, "serve_driver: write failed\n");
                return 1;
            }
            if (!(pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            int eof = fill(c);
            for (;;) {
                long acc = -1;
                int status = 0, got;
                ans[0] = '\0';
                got = http ? take_http(c, &status, &acc, ans, sizeof ans) : take_frame(c, &acc);
                if (got == 0)
                    break;
                size_t b = c->qn ? c->q[c->qhead] : nb;
                if (got < 0 || acc < 0 || b == nb) {
                    fprintf(stderr, "serve_driver: batch %zu failed (status %d): %.200s\n", b + 1, status, ans);
                    return 1;
                }
                c->qhead = (c->qhead + 1) % c->qcap;
                c->qn--;
                lat[b] = peer_now() - sent[b];
                accepted += (size_t)acc;
                done++;
            }
            if (eof && c->qn) {
                fprintf(stderr, "serve_driver: connection closed with %zu batches unanswered\n", c->qn);
                return 1;
            }
        }
    }
    double secs = peer_now() - t0;
    peer_report("serve", accepted, secs, ~0ULL, lat, nb);
    printf("serve: batches %zu\nserve: inflight %zu\n", nb, inflight);
    if (rate > 0)
        printf("serve: sent_late %zu\n", late);
    for (size_t i = 0; i < nc; i++)
        close(conns[i].fd);
    return 0;
}
