/* serve_driver: feeds the benchmark's events to a running `journeyd serve`, for the
 * durable journeyd rows of `make bench` (tests/bench/table.sh).
 *
 *   serve_driver http|stream HOST PORT EVENTS.jsonl [--max N] [--batch B] [--rate EVENTS_PER_S]
 *
 * --rate paces the batches (batch b leaves at b * B / rate seconds) instead of sending the
 * next as soon as the previous is answered: latency at a given load, not at saturation.
 *
 * Before the clock starts: reads the first N events (all by default) and builds every
 * request: `http` a `POST /v1/batch` of B (500) events as they are in the file,
 * `stream` a msgpack-stream frame of B events (converted with libjourneyd's strict
 * JSON-to-msgpack reader, as build/jd-stream-send does while it sends). Then sends them
 * in order on one connection, one batch in flight, the same shape as the Redis driver's
 * pipeline. A batch's answer comes after its events are durable (group commit,
 * fdatasync) and processed. Latency: from writing a batch to reading its answer.
 * Prints "serve: key value" lines (events = events accepted). */
#define _GNU_SOURCE /* strcasestr */
#include <arpa/inet.h>
#include <msgpack.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "journeyd.h"
#include "peer_events.h"

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int read_all(int fd, char *p, size_t n)
{
    while (n) {
        ssize_t r = read(fd, p, n);
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* One HTTP answer: status and body (NUL-terminated, into body of cap bytes); -1 on error. */
static int read_http(int fd, int *status, char *body, size_t cap)
{
    char head[4096];
    size_t n = 0;
    while (n < sizeof head - 1) {
        if (read(fd, head + n, 1) != 1)
            return -1;
        n++;
        if (n >= 4 && memcmp(head + n - 4, "\r\n\r\n", 4) == 0)
            break;
    }
    head[n] = '\0';
    const char *cl = strcasestr(head, "\r\ncontent-length:");
    size_t len = cl ? (size_t)strtoul(cl + 17, NULL, 10) : 0;
    if (sscanf(head, "HTTP/1.%*d %d", status) != 1 || len >= cap)
        return -1;
    if (read_all(fd, body, len))
        return -1;
    body[len] = '\0';
    return 0;
}

/* A stream answer's "accepted" count; -1 on error. */
static long read_frame_accepted(int fd)
{
    unsigned char h[4];
    if (read_all(fd, (char *)h, 4))
        return -1;
    uint32_t n = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
    char *buf = malloc(n ? n : 1);
    long acc = -1;
    if (read_all(fd, buf, n) == 0) {
        msgpack_unpacked u;
        msgpack_unpacked_init(&u);
        size_t off = 0;
        if (msgpack_unpack_next(&u, buf, n, &off) == MSGPACK_UNPACK_SUCCESS && u.data.type == MSGPACK_OBJECT_MAP) {
            for (uint32_t i = 0; i < u.data.via.map.size; i++) {
                const msgpack_object *k = &u.data.via.map.ptr[i].key, *v = &u.data.via.map.ptr[i].val;
                if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == 8 &&
                    memcmp(k->via.str.ptr, "accepted", 8) == 0 && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
                    acc = (long)v->via.u64;
            }
        }
        msgpack_unpacked_destroy(&u);
    }
    free(buf);
    return acc;
}

int main(int argc, char **argv)
{
    size_t max = 0, batch = 500;
    double rate = 0;
    if (argc < 5 || (strcmp(argv[1], "http") != 0 && strcmp(argv[1], "stream") != 0)) {
        fprintf(stderr, "usage: serve_driver http|stream HOST PORT EVENTS.jsonl [--max N] [--batch B] [--rate R]\n");
        return 2;
    }
    int http = strcmp(argv[1], "http") == 0;
    for (int i = 5; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--max") == 0)
            max = (size_t)atol(argv[i + 1]);
        else if (strcmp(argv[i], "--batch") == 0)
            batch = (size_t)atol(argv[i + 1]);
        else if (strcmp(argv[i], "--rate") == 0)
            rate = atof(argv[i + 1]);
    }
    if (!batch)
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

    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[3]))};
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    if (inet_pton(AF_INET, argv[2], &sa.sin_addr) != 1 || fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa)) {
        fprintf(stderr, "serve_driver: cannot connect to %s:%s\n", argv[2], argv[3]);
        return 1;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

    double *lat = malloc((nb ? nb : 1) * sizeof *lat);
    static char ans[1 << 20];
    size_t accepted = 0;
    double t0 = peer_now();
    for (size_t b = 0; b < nb; b++) {
        if (rate > 0) { /* wait for this batch's moment */
            double due = t0 + (double)(b * batch) / rate, now;
            while ((now = peer_now()) < due) {
                struct timespec ts = {0, (long)((due - now) * 1e9)};
                nanosleep(&ts, NULL);
            }
        }
        double s = peer_now();
        long acc = -1;
        int status = 0;
        if (write_all(fd, req[b].data, req[b].size) == 0) {
            if (http) {
                const char *a;
                if (read_http(fd, &status, ans, sizeof ans) == 0 && status == 200 && (a = strstr(ans, "\"accepted\":")))
                    acc = atol(a + 11);
            } else {
                acc = read_frame_accepted(fd);
            }
        }
        if (acc < 0) {
            fprintf(stderr, "serve_driver: batch %zu failed (status %d): %.200s\n", b + 1, status, ans);
            return 1;
        }
        accepted += (size_t)acc;
        lat[b] = peer_now() - s;
    }
    double secs = peer_now() - t0;
    peer_report("serve", accepted, secs, ~0ULL, lat, nb);
    close(fd);
    return 0;
}
