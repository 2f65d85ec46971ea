/* jd-stream-send: a small client for journeyd's msgpack stream socket.
 *
 *   jd-stream-send HOST:PORT|/path/to.sock [--key WRITE_KEY] [--batch N] [--inflight K] < events.jsonl
 *
 * Reads Segment events as JSON Lines, sends them in batches of N (default 500) as
 * length-prefixed msgpack frames, keeping up to K (default 4) batches sent and not yet
 * acknowledged (answers come back in order), and prints "sent S, accepted A, rejected R"
 * (and each rejection) on stderr. Exit status 0 when every batch was acknowledged. Links libjourneyd (for strict JSON
 * -> msgpack) and msgpack-c. */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <msgpack.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "journeyd.h"

static int connect_to(const char *spec)
{
    if (spec[0] == '/') {
        struct sockaddr_un un = {.sun_family = AF_UNIX};
        if (strlen(spec) >= sizeof un.sun_path)
            return -1;
        strcpy(un.sun_path, spec);
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&un, sizeof un) == 0)
            return fd;
        if (fd >= 0)
            close(fd);
        return -1;
    }
    char host[256];
    const char *colon = strrchr(spec, ':');
    if (!colon || (size_t)(colon - spec) >= sizeof host)
        return -1;
    memcpy(host, spec, (size_t)(colon - spec));
    host[colon - spec] = '\0';
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai;
    if (getaddrinfo(host, colon + 1, &hints, &ai))
        return -1;
    int fd = socket(ai->ai_family, SOCK_STREAM, 0);
    if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    return fd;
}

static int write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w <= 0)
            return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

static int read_all(int fd, void *p, size_t n)
{
    char *c = p;
    while (n) {
        ssize_t r = read(fd, c, n);
        if (r <= 0)
            return -1;
        c += r;
        n -= (size_t)r;
    }
    return 0;
}

static int send_frame(int fd, const char *p, size_t n)
{
    unsigned char h[4] = {(unsigned char)(n >> 24), (unsigned char)(n >> 16), (unsigned char)(n >> 8),
                          (unsigned char)n};
    return write_all(fd, h, 4) || write_all(fd, p, n);
}

/* Reads one answer frame; returns its unpacked value (zone owned by caller). */
static int read_frame(int fd, msgpack_zone *z, msgpack_object *o, char **buf)
{
    unsigned char h[4];
    if (read_all(fd, h, 4))
        return -1;
    uint32_t n = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
    *buf = malloc(n ? n : 1);
    if (read_all(fd, *buf, n))
        return -1;
    size_t off = 0;
    return msgpack_unpack(*buf, n, &off, z, o) == MSGPACK_UNPACK_SUCCESS ? 0 : -1;
}

static const msgpack_object *get(const msgpack_object *m, const char *k)
{
    if (m->type != MSGPACK_OBJECT_MAP)
        return NULL;
    for (uint32_t i = 0; i < m->via.map.size; i++) {
        const msgpack_object *key = &m->via.map.ptr[i].key;
        if (key->type == MSGPACK_OBJECT_STR && key->via.str.size == strlen(k) &&
            memcmp(key->via.str.ptr, k, key->via.str.size) == 0)
            return &m->via.map.ptr[i].val;
    }
    return NULL;
}

/* Reads the answer to the oldest batch in flight and counts it. 0, or -1 (said why). */
static int take_answer(int fd, msgpack_zone *z, unsigned long *sent, unsigned long *accepted, unsigned long *rejected,
                       size_t n)
{
    msgpack_object o;
    char *ans = NULL;
    if (read_frame(fd, z, &o, &ans)) {
        fprintf(stderr, "jd-stream-send: connection lost after %lu events\n", *sent);
        free(ans);
        return -1;
    }
    int rc = 0;
    const msgpack_object *err = get(&o, "error"), *acc = get(&o, "accepted"), *rej = get(&o, "rejected");
    if (err || !acc) {
        fprintf(stderr, "jd-stream-send: server refused the batch: %.*s\n",
                err && err->type == MSGPACK_OBJECT_STR ? (int)err->via.str.size : 0,
                err && err->type == MSGPACK_OBJECT_STR ? err->via.str.ptr : "");
        rc = -1;
    } else {
        *sent += n;
        *accepted += (unsigned long)acc->via.u64;
        if (rej && rej->type == MSGPACK_OBJECT_ARRAY) {
            *rejected += rej->via.array.size;
            for (uint32_t i = 0; i < rej->via.array.size; i++) {
                const msgpack_object *e = get(&rej->via.array.ptr[i], "error");
                const msgpack_object *ix = get(&rej->via.array.ptr[i], "index");
                if (e && ix && e->type == MSGPACK_OBJECT_STR)
                    fprintf(stderr, "rejected (batch index %llu): %.*s\n", (unsigned long long)ix->via.u64,
                            (int)e->via.str.size, e->via.str.ptr);
            }
        }
    }
    free(ans);
    msgpack_zone_clear(z);
    return rc;
}

int main(int argc, char **argv)
{
    const char *target = NULL, *key = NULL;
    size_t per = 500, inflight = 4;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--key") == 0 && i + 1 < argc)
            key = argv[++i];
        else if (strcmp(argv[i], "--batch") == 0 && i + 1 < argc)
            per = (size_t)atol(argv[++i]);
        else if (strcmp(argv[i], "--inflight") == 0 && i + 1 < argc)
            inflight = (size_t)atol(argv[++i]);
        else
            target = argv[i];
    }
    if (!target || per == 0 || per > 5000 || inflight == 0 || inflight > 64) {
        fprintf(stderr, "usage: jd-stream-send HOST:PORT|/path.sock [--key WRITE_KEY] [--batch 1..5000] "
                        "[--inflight 1..64] < events.jsonl\n");
        return 2;
    }
    int fd = connect_to(target);
    if (fd < 0) {
        fprintf(stderr, "jd-stream-send: cannot connect to %s\n", target);
        return 1;
    }
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    int rc = 1;
    char *line = NULL, *ans = NULL;
    size_t cap = 0;
    msgpack_zone z;
    msgpack_zone_init(&z, 1024);
    msgpack_object o;
    if (key) {
        msgpack_pack_map(&pk, 1);
        msgpack_pack_str(&pk, 8);
        msgpack_pack_str_body(&pk, "writeKey", 8);
        msgpack_pack_str(&pk, strlen(key));
        msgpack_pack_str_body(&pk, key, strlen(key));
        if (send_frame(fd, sb.data, sb.size) || read_frame(fd, &z, &o, &ans) || !get(&o, "ok")) {
            fprintf(stderr, "jd-stream-send: not authorized\n");
            goto done;
        }
        free(ans);
        ans = NULL;
        msgpack_zone_clear(&z);
    }
    unsigned long sent = 0, accepted = 0, rejected = 0, lineno = 0;
    size_t sizes[64], head = 0, nout = 0; /* events of each batch in flight, oldest at head */
    int eof = 0;
    while (!eof) {
        /* a batch: collect up to `per` converted events, then one array header */
        msgpack_sbuffer items;
        msgpack_sbuffer_init(&items);
        size_t n = 0;
        ssize_t len;
        while (n < per && (len = getline(&line, &cap, stdin)) > 0) {
            lineno++;
            while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
                line[--len] = '\0';
            if (!len)
                continue;
            char *mp, err[256];
            size_t mplen;
            if (jd_json_to_msgpack_alloc(line, (size_t)len, &mp, &mplen, err, sizeof err)) {
                fprintf(stderr, "stdin:%lu: %s\n", lineno, err);
                continue;
            }
            msgpack_sbuffer_write(&items, mp, mplen);
            free(mp);
            n++;
        }
        if (n < per)
            eof = 1;
        if (n == 0) {
            msgpack_sbuffer_destroy(&items);
            break;
        }
        msgpack_sbuffer_clear(&sb);
        msgpack_pack_array(&pk, n);
        msgpack_sbuffer_write(&sb, items.data, items.size);
        msgpack_sbuffer_destroy(&items);
        if (nout == inflight) { /* all slots taken: the oldest answer first */
            if (take_answer(fd, &z, &sent, &accepted, &rejected, sizes[head]))
                goto done;
            head = (head + 1) % 64;
            nout--;
        }
        if (send_frame(fd, sb.data, sb.size)) {
            fprintf(stderr, "jd-stream-send: connection lost after %lu events\n", sent);
            goto done;
        }
        sizes[(head + nout) % 64] = n;
        nout++;
    }
    for (; nout; nout--, head = (head + 1) % 64)
        if (take_answer(fd, &z, &sent, &accepted, &rejected, sizes[head]))
            goto done;
    fprintf(stderr, "sent %lu, accepted %lu, rejected %lu\n", sent, accepted, rejected);
    rc = 0;
done:
    free(ans);
    free(line);
    msgpack_zone_destroy(&z);
    msgpack_sbuffer_destroy(&sb);
    close(fd);
    return rc;
}
