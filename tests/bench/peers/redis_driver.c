/* redis_driver: feeds the benchmark's events to a Redis server running
 * redis_journey.lua (the journeys of tests/bench/bench.lua as a server-side script), the
 * Redis + Lua peer of `make bench`.
 *
 *   redis_driver HOST PORT SCRIPT.lua EVENTS.jsonl [--max N] [--batch B] [--inflight K]
 *
 * Before the clock starts: reads the first N events (all by default) and converts each
 * into the script's arguments (type, id, event name, time in ms, messageId, then the
 * top-level properties or traits as key/value strings; nested values are left out),
 * with libjourneyd's strict JSON-to-msgpack reader. SCRIPT LOAD, then one EVALSHA per
 * event, in order, on one connection, pipelined in batches of B commands (500) with K
 * (1) batches outstanding: a batch is appended and written out, the next one follows
 * while fewer than K have all their replies, and replies are read as they arrive (the
 * socket is non-blocking, one poll loop writes and reads) — the same shape as
 * serve_driver's stream mode. Each reply is the number of actions that call decided.
 * Latency: from starting to write a batch to reading its last reply.
 * Prints "redis: key value" lines (events, seconds, events_per_s, actions, p50_ms,
 * p99_ms). Links hiredis, libjourneyd and msgpack-c. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <msgpack.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "journeyd.h"
#include "peer_events.h"

enum { MAX_ARGS = 64 };

typedef struct ev_args {
    int argc;
    char **argv;
    size_t *argl;
} ev_args;

static int str_is(const msgpack_object *o, const char *s)
{
    size_t n = strlen(s);
    return o->type == MSGPACK_OBJECT_STR && o->via.str.size == n && memcmp(o->via.str.ptr, s, n) == 0;
}

/* A scalar as text into buf; 0 when o is not a scalar. */
static int scalar_text(const msgpack_object *o, char *buf, size_t cap, const char **p, size_t *n)
{
    switch (o->type) {
    case MSGPACK_OBJECT_STR:
        *p = o->via.str.ptr;
        *n = o->via.str.size;
        return 1;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        *n = (size_t)snprintf(buf, cap, "%llu", (unsigned long long)o->via.u64);
        break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: *n = (size_t)snprintf(buf, cap, "%lld", (long long)o->via.i64); break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: *n = (size_t)snprintf(buf, cap, "%.15g", o->via.f64); break;
    case MSGPACK_OBJECT_BOOLEAN: *n = (size_t)snprintf(buf, cap, "%s", o->via.boolean ? "true" : "false"); break;
    default: return 0;
    }
    *p = buf;
    return 1;
}

/* One event's EVALSHA arguments (after "EVALSHA sha 0"); -1 when it has no id. */
static int convert(const char *sha, const char *line, size_t len, ev_args *out)
{
    char *mp, err[256];
    size_t mplen;
    if (jd_json_to_msgpack_alloc(line, len, &mp, &mplen, err, sizeof err)) {
        fprintf(stderr, "redis_driver: %s\n", err);
        return -1;
    }
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    int rc = -1;
    if (msgpack_unpack_next(&u, mp, mplen, &off) != MSGPACK_UNPACK_SUCCESS || u.data.type != MSGPACK_OBJECT_MAP)
        goto done;
    const msgpack_object *m = &u.data, *type = NULL, *uid = NULL, *aid = NULL, *name = NULL, *tsv = NULL, *mid = NULL,
                         *fields = NULL;
    for (uint32_t i = 0; i < m->via.map.size; i++) {
        const msgpack_object *k = &m->via.map.ptr[i].key, *v = &m->via.map.ptr[i].val;
        if (str_is(k, "type"))
            type = v;
        else if (str_is(k, "userId"))
            uid = v;
        else if (str_is(k, "anonymousId"))
            aid = v;
        else if (str_is(k, "event"))
            name = v;
        else if (str_is(k, "timestamp"))
            tsv = v;
        else if (str_is(k, "messageId"))
            mid = v;
        else if ((str_is(k, "properties") || str_is(k, "traits")) && v->type == MSGPACK_OBJECT_MAP)
            fields = v;
    }
    if (!uid || uid->type != MSGPACK_OBJECT_STR)
        uid = aid;
    if (!type || !uid || !tsv || !mid || uid->type != MSGPACK_OBJECT_STR || tsv->type != MSGPACK_OBJECT_STR ||
        mid->type != MSGPACK_OBJECT_STR)
        goto done;
    char tsbuf[64];
    int64_t ts;
    snprintf(tsbuf, sizeof tsbuf, "%.*s", (int)tsv->via.str.size, tsv->via.str.ptr);
    if (jd_parse_time(tsbuf, &ts))
        goto done;
    const char *argv[MAX_ARGS];
    size_t argl[MAX_ARGS];
    char nums[MAX_ARGS][40];
    int argc = 0;
    argv[argc] = "EVALSHA", argl[argc++] = 7;
    argv[argc] = sha, argl[argc++] = strlen(sha);
    argv[argc] = "0", argl[argc++] = 1;
    argv[argc] = type->via.str.ptr, argl[argc++] = type->via.str.size;
    argv[argc] = uid->via.str.ptr, argl[argc++] = uid->via.str.size;
    if (name && name->type == MSGPACK_OBJECT_STR)
        argv[argc] = name->via.str.ptr, argl[argc++] = name->via.str.size;
    else
        argv[argc] = "", argl[argc++] = 0;
    argl[argc] = (size_t)snprintf(nums[argc], sizeof nums[argc], "%lld", (long long)ts);
    argv[argc] = nums[argc];
    argc++;
    argv[argc] = mid->via.str.ptr, argl[argc++] = mid->via.str.size;
    for (uint32_t i = 0; fields && i < fields->via.map.size && argc + 2 <= MAX_ARGS; i++) {
        const msgpack_object *k = &fields->via.map.ptr[i].key, *v = &fields->via.map.ptr[i].val;
        const char *p;
        size_t n;
        if (k->type != MSGPACK_OBJECT_STR || !scalar_text(v, nums[argc + 1], sizeof nums[0], &p, &n))
            continue;
        argv[argc] = k->via.str.ptr, argl[argc++] = k->via.str.size;
        argv[argc] = p, argl[argc++] = n;
    }
    /* copies: the msgpack buffer goes away */
    out->argc = argc;
    out->argv = malloc((size_t)argc * sizeof *out->argv);
    out->argl = malloc((size_t)argc * sizeof *out->argl);
    for (int i = 0; i < argc; i++) {
        out->argv[i] = malloc(argl[i] + 1);
        memcpy(out->argv[i], argv[i], argl[i]);
        out->argv[i][argl[i]] = '\0';
        out->argl[i] = argl[i];
    }
    rc = 0;
done:
    msgpack_unpacked_destroy(&u);
    free(mp);
    return rc;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    if (fread(s, 1, (size_t)n, f) != (size_t)n) {
        fclose(f);
        free(s);
        return NULL;
    }
    s[n] = '\0';
    fclose(f);
    return s;
}

int main(int argc, char **argv)
{
    size_t max = 0, batch = 500, inflight = 1;
    if (argc < 5) {
        fprintf(stderr, "usage: redis_driver HOST PORT SCRIPT.lua EVENTS.jsonl [--max N] [--batch B] [--inflight K]\n");
        return 2;
    }
    for (int i = 5; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--max") == 0)
            max = (size_t)atol(argv[i + 1]);
        else if (strcmp(argv[i], "--batch") == 0)
            batch = (size_t)atol(argv[i + 1]);
        else if (strcmp(argv[i], "--inflight") == 0)
            inflight = (size_t)atol(argv[i + 1]);
    }
    char *script = slurp(argv[3]);
    if (!script || !batch || !inflight) {
        fprintf(stderr, "redis_driver: cannot read %s\n", argv[3]);
        return 2;
    }
    redisContext *c = redisConnect(argv[1], atoi(argv[2]));
    if (!c || c->err) {
        fprintf(stderr, "redis_driver: cannot connect: %s\n", c ? c->errstr : "?");
        return 1;
    }
    redisReply *r = redisCommand(c, "SCRIPT LOAD %s", script);
    if (!r || r->type != REDIS_REPLY_STRING) {
        fprintf(stderr, "redis_driver: SCRIPT LOAD failed: %s\n", r && r->str ? r->str : c->errstr);
        return 1;
    }
    char sha[64];
    snprintf(sha, sizeof sha, "%s", r->str);
    freeReplyObject(r);

    peer_lines in;
    peer_read_lines(argv[4], max, &in);
    ev_args *ev = calloc(in.n, sizeof *ev);
    size_t n = 0;
    for (size_t i = 0; i < in.n; i++) {
        if (convert(sha, in.line[i], in.len[i], &ev[n]) == 0)
            n++;
        free(in.line[i]);
    }

    /* from here the context is non-blocking (hiredis 0.14 has no option for it after
     * connecting: its write and read calls treat EAGAIN as "later" without REDIS_BLOCK) */
    c->flags &= ~REDIS_BLOCK;
    fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);

    size_t nb = (n + batch - 1) / batch;
    double *lat = malloc((nb ? nb : 1) * sizeof *lat), *sent = malloc((nb ? nb : 1) * sizeof *sent);
    unsigned long long actions = 0;
    size_t next = 0, oldest = 0, replies = 0; /* batches appended, batches fully answered, replies read */
    int writing = 0;
    double t0 = peer_now();
    while (oldest < nb) {
        if (!writing && next < nb && next - oldest < inflight) {
            size_t from = next * batch, to = from + batch < n ? from + batch : n;
            sent[next++] = peer_now();
            for (size_t i = from; i < to; i++)
                redisAppendCommandArgv(c, ev[i].argc, (const char **)ev[i].argv, ev[i].argl);
            writing = 1;
        }
        int done = 0;
        if (writing && redisBufferWrite(c, &done) != REDIS_OK) {
            fprintf(stderr, "redis_driver: write failed: %s\n", c->errstr);
            return 1;
        }
        if (writing && done) {
            writing = 0;
            if (next < nb && next - oldest < inflight)
                continue; /* the next batch right away */
        }
        struct pollfd p = {.fd = c->fd, .events = (short)(POLLIN | (writing ? POLLOUT : 0))};
        if (poll(&p, 1, -1) < 0 && errno != EINTR) {
            perror("redis_driver: poll");
            return 1;
        }
        if (!(p.revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        if (redisBufferRead(c) != REDIS_OK) {
            fprintf(stderr, "redis_driver: connection lost: %s\n", c->errstr);
            return 1;
        }
        void *rv;
        while (oldest < nb) {
            if (redisGetReplyFromReader(c, &rv) != REDIS_OK) {
                fprintf(stderr, "redis_driver: bad reply: %s\n", c->errstr);
                return 1;
            }
            if (!rv)
                break;
            r = rv;
            if (r->type == REDIS_REPLY_INTEGER)
                actions += (unsigned long long)r->integer;
            else if (r->type == REDIS_REPLY_ERROR) {
                fprintf(stderr, "redis_driver: event %zu: %s\n", replies + 1, r->str);
                return 1;
            }
            freeReplyObject(r);
            if (++replies == (oldest + 1 == nb ? n : (oldest + 1) * batch)) {
                lat[oldest] = peer_now() - sent[oldest];
                oldest++;
            }
        }
    }
    double secs = peer_now() - t0;
    peer_report("redis", n, secs, actions, lat, nb);
    printf("redis: inflight %zu\n", inflight);
    redisFree(c);
    return 0;
}
