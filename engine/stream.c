/* stream: the msgpack stream socket of `journeyd serve` for high-volume producers, on
 * TCP (stream_listen / JOURNEYD_STREAM_LISTEN) or a unix socket (stream_socket).
 *
 * Framing, both directions: a 4-byte big-endian length, then that many bytes of one
 * msgpack value. Frames from the client:
 *   1. {"writeKey": "..."}                 (only when write keys are configured)
 *   2. [event, event, ...]                 a batch: Segment-shaped maps, at most 5000 or 1 MiB
 *      or {"batch": [...], "context": {...}, "sentAt": "..."}
 * The server answers each frame with one frame, in order:
 *   {"ok": true}                           for the auth frame
 *   {"seq": n, "accepted": k, "rejected": [{"index": i, "error": "..."}]}
 *   {"error": "...", "fatal": true}        then closes (bad frame, bad key, too large)
 * `seq` counts batch frames on the connection from 1; a client resends the batches it has
 * no ack for (duplicates are dropped by messageId). Uses serve, event, engine API,
 * libevent bufferevents. */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "clock.h"
#include "event.h"
#include "serve.h"

#define MAX_FRAME (1u << 20)
#define MAX_BATCH 5000

typedef struct conn {
    jd_server *s;
    struct bufferevent *bev; /* NULL once the client is gone */
    int authed;
    uint64_t seq;
    int closing;
    int refs; /* acks waiting for durability hold the connection */
} conn;

static void conn_release(conn *c)
{
    if (--c->refs == 0 && !c->bev)
        free(c);
}

static void send_frame(conn *c, const jd_buf *payload)
{
    unsigned char len[4] = {(unsigned char)(payload->len >> 24), (unsigned char)(payload->len >> 16),
                            (unsigned char)(payload->len >> 8), (unsigned char)payload->len};
    bufferevent_write(c->bev, len, 4);
    bufferevent_write(c->bev, payload->data, payload->len);
}

static void fatal(conn *c, const char *msg)
{
    jd_buf b;
    jd_buf_init(&b);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &b, jd_buf_msgpack_write);
    msgpack_pack_map(&pk, 2);
    jd_mp_pack_cstr(&pk, "error");
    jd_mp_pack_cstr(&pk, msg);
    jd_mp_pack_cstr(&pk, "fatal");
    msgpack_pack_true(&pk);
    send_frame(c, &b);
    jd_buf_free(&b);
    c->closing = 1;
    bufferevent_disable(c->bev, EV_READ);
}

static void close_conn(conn *c)
{
    if (c->bev)
        bufferevent_free(c->bev);
    c->bev = NULL;
    c->refs++;
    conn_release(c);
}

static int authorize(conn *c, const msgpack_object *o)
{
    jd_server *s = c->s;
    const msgpack_object *k = jd_mp_get(o, "writeKey", 8);
    if (!k || k->type != MSGPACK_OBJECT_STR)
        return 0;
    int found = 0;
    for (size_t i = 0; i < s->nwrite_keys; i++)
        if (strlen(s->write_keys[i]) == k->via.str.size &&
            CRYPTO_memcmp(s->write_keys[i], k->via.str.ptr, k->via.str.size) == 0)
            found = 1;
    return found;
}

/* An acknowledgement that waits until its batch is durable. */
typedef struct pending_ack {
    conn *c;
    jd_buf frame;
    int64_t t0;
    uint32_t accepted;
} pending_ack;

static void ack_durable(void *arg, int failed)
{
    pending_ack *a = arg;
    conn *c = a->c;
    if (c->bev && failed && !c->closing)
        fatal(c, "event log unavailable: the batch was not logged");
    else if (c->bev && !c->closing)
        send_frame(c, &a->frame);
    if (a->accepted) {
        double sec = (double)(jd_monotonic_ns() - a->t0) / 1e9;
        c->s->latency_count += a->accepted;
        c->s->latency_sum += sec * a->accepted;
    }
    jd_buf_free(&a->frame);
    free(a);
    conn_release(c);
}

static void batch(conn *c, const msgpack_object *o)
{
    jd_server *s = c->s;
    s->last_activity_ns = jd_monotonic_ns();
    int64_t t0 = jd_monotonic_ns();
    const msgpack_object *items = o;
    int64_t now = jd_serve_now(s);
    jd_norm_opts no = {.received_ms = now, .default_ts = now};
    if (o->type == MSGPACK_OBJECT_MAP) {
        items = jd_mp_get(o, "batch", 5);
        no.batch_context = jd_mp_get(o, "context", 7);
        no.sent_at = jd_mp_get(o, "sentAt", 6);
    }
    if (!items || items->type != MSGPACK_OBJECT_ARRAY) {
        fatal(c, "a batch frame is an array of events or {\"batch\": [...]}");
        return;
    }
    if (items->via.array.size > MAX_BATCH) {
        fatal(c, "more than 5000 events in one frame");
        return;
    }
    char why[256];
    if (*jd_serve_unavailable(s, why, sizeof why)) {
        char msg[300];
        snprintf(msg, sizeof msg, "event log unavailable: %s", why);
        fatal(c, msg);
        return;
    }
    c->seq++;
    jd_buf ack, rej;
    jd_buf_init(&ack);
    jd_buf_init(&rej);
    msgpack_packer rk;
    msgpack_packer_init(&rk, &rej, jd_buf_msgpack_write);
    uint32_t accepted = 0, nrej = 0;
    char err[512];
    jd_waitset *ws = jd_waitset_new(s);
    for (uint32_t i = 0; i < items->via.array.size; i++) {
        int rc = jd_serve_ingest(s, &items->via.array.ptr[i], &no, err, sizeof err, ws);
        if (rc == JD_INGEST_OK) {
            accepted++;
            continue;
        }
        nrej++;
        msgpack_pack_map(&rk, 2);
        jd_mp_pack_cstr(&rk, "index");
        msgpack_pack_uint32(&rk, i);
        jd_mp_pack_cstr(&rk, "error");
        jd_mp_pack_cstr(&rk, err);
    }
    msgpack_packer pk;
    msgpack_packer_init(&pk, &ack, jd_buf_msgpack_write);
    msgpack_pack_map(&pk, 3);
    jd_mp_pack_cstr(&pk, "seq");
    msgpack_pack_uint64(&pk, c->seq);
    jd_mp_pack_cstr(&pk, "accepted");
    msgpack_pack_uint32(&pk, accepted);
    jd_mp_pack_cstr(&pk, "rejected");
    msgpack_pack_array(&pk, nrej);
    jd_buf_append(&ack, rej.data, rej.len);
    jd_buf_free(&rej);
    pending_ack *a = jd_xcalloc(1, sizeof *a);
    *a = (pending_ack){c, ack, t0, accepted};
    c->refs++;
    jd_waitset_wait(s, ws, ack_durable, a); /* acks go out in order: waits complete in order */
}

/* msgpack-c allocates a container's elements as declared, before reading them: a frame
 * of a few bytes could claim 2^32 entries and make it reserve tens of GiB. Walks the
 * frame's value without allocating and refuses containers that declare more elements
 * than the bytes left could hold (each takes at least one), so unpacking a frame costs
 * memory in proportion to its length. 1 when p[0..len) is one value with sane sizes. */
static int frame_sizes_ok(const unsigned char *p, size_t len)
{
    size_t at = 0, pending = 1; /* values still to read */
    while (pending-- > 0) {
        if (at >= len)
            return 0;
        unsigned b = p[at++];
        size_t n = 0, skip = 0; /* n: elements that follow; skip: payload bytes */
        int k = 0;              /* bytes of a big-endian length or count */
        if ((b & 0xf0) == 0x80)
            n = 2 * (size_t)(b & 0x0f);
        else if ((b & 0xf0) == 0x90)
            n = b & 0x0f;
        else if ((b & 0xe0) == 0xa0)
            skip = b & 0x1f;
        else
            switch (b) {
            case 0xc1: return 0;
            case 0xc4:
            case 0xd9: k = 1; break; /* bin8, str8 */
            case 0xc5:
            case 0xda: k = 2; break;
            case 0xc6:
            case 0xdb: k = 4; break;
            case 0xc7: k = 1, skip = 1; break; /* ext8: length, type, data */
            case 0xc8: k = 2, skip = 1; break;
            case 0xc9: k = 4, skip = 1; break;
            case 0xcc:
            case 0xd0: skip = 1; break;
            case 0xcd:
            case 0xd1: skip = 2; break;
            case 0xca:
            case 0xce:
            case 0xd2: skip = 4; break;
            case 0xcb:
            case 0xcf:
            case 0xd3: skip = 8; break;
            case 0xd4: skip = 2; break; /* fixext: type, data */
            case 0xd5: skip = 3; break;
            case 0xd6: skip = 5; break;
            case 0xd7: skip = 9; break;
            case 0xd8: skip = 17; break;
            case 0xdc:
            case 0xde: k = 2; break; /* array16, map16 */
            case 0xdd:
            case 0xdf: k = 4; break;
            default: break; /* fixints, nil, booleans */
            }
        if (k) {
            if (len - at < (size_t)k)
                return 0;
            size_t v = 0;
            for (int i = 0; i < k; i++)
                v = v << 8 | p[at++];
            if (b >= 0xdc)
                n = b >= 0xde ? 2 * v : v;
            else
                skip += v;
        }
        if (len - at < skip)
            return 0;
        at += skip;
        if (len - at < pending || len - at - pending < n)
            return 0;
        pending += n;
    }
    return at == len;
}

static void on_read(struct bufferevent *bev, void *arg)
{
    conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    while (!c->closing) {
        unsigned char hdr[4];
        if (evbuffer_copyout(in, hdr, 4) < 4)
            return;
        uint32_t len = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
        if (len > MAX_FRAME) {
            c->s->rejected[JD_REJ_TOO_LARGE]++;
            fatal(c, "frame over 1 MiB");
            return;
        }
        if (evbuffer_get_length(in) < 4 + (size_t)len)
            return;
        evbuffer_drain(in, 4);
        unsigned char *p = evbuffer_pullup(in, len);
        msgpack_zone z;
        msgpack_zone_init(&z, 8192);
        msgpack_object o;
        int ok = len > 0 && frame_sizes_ok(p, len) && jd_mp_unpack(p, len, &z, &o) == 0;
        if (!ok) {
            c->s->rejected[JD_REJ_MALFORMED]++;
            fatal(c, "a frame must hold exactly one msgpack value");
        } else if (!c->authed) {
            if (authorize(c, &o)) {
                c->authed = 1;
                jd_buf b;
                jd_buf_init(&b);
                msgpack_packer pk;
                msgpack_packer_init(&pk, &b, jd_buf_msgpack_write);
                msgpack_pack_map(&pk, 1);
                jd_mp_pack_cstr(&pk, "ok");
                msgpack_pack_true(&pk);
                send_frame(c, &b);
                jd_buf_free(&b);
            } else {
                c->s->rejected[JD_REJ_UNAUTHORIZED]++;
                fatal(c, "the first frame must be {\"writeKey\": KEY} with a configured write key");
            }
        } else {
            batch(c, &o);
        }
        msgpack_zone_destroy(&z);
        evbuffer_drain(in, len);
    }
}

static void on_write(struct bufferevent *bev, void *arg)
{
    conn *c = arg;
    if (c->closing && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        close_conn(c);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
        close_conn(arg);
}

void jd_stream_accept_fd(jd_server *s, evutil_socket_t fd, int local)
{
    /* with no write keys, loopback TCP and unix sockets need no auth frame */
    if (s->nwrite_keys == 0 && !local) {
        close(fd);
        return;
    }
    conn *c = jd_xcalloc(1, sizeof *c);
    c->s = s;
    c->authed = s->nwrite_keys == 0 && local;
    c->bev = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
    bufferevent_setwatermark(c->bev, EV_READ, 0, 4 + MAX_FRAME);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *addr, int len, void *arg)
{
    (void)l;
    (void)len;
    int local = addr->sa_family == AF_UNIX ||
                (addr->sa_family == AF_INET && (ntohl(((struct sockaddr_in *)addr)->sin_addr.s_addr) >> 24) == 127);
    jd_stream_accept_fd(arg, fd, local);
}

struct evconnlistener *jd_stream_listen(jd_server *s, const char *spec, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t sl;
    if (spec[0] == '/' || strncmp(spec, "unix:", 5) == 0) {
        const char *path = spec[0] == '/' ? spec : spec + 5;
        struct sockaddr_un *un = (struct sockaddr_un *)&ss;
        if (strlen(path) >= sizeof un->sun_path) {
            snprintf(err, errlen, "unix socket path too long");
            return NULL;
        }
        un->sun_family = AF_UNIX;
        strcpy(un->sun_path, path);
        unlink(path);
        sl = sizeof *un;
    } else {
        int len = (int)sizeof ss;
        if (evutil_parse_sockaddr_port(spec, (struct sockaddr *)&ss, &len)) {
            snprintf(err, errlen, "stream listen: expected HOST:PORT or a socket path, got '%s'", spec);
            return NULL;
        }
        sl = (socklen_t)len;
    }
    struct evconnlistener *l = evconnlistener_new_bind(s->base, on_accept, s, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE,
                                                       128, (struct sockaddr *)&ss, (int)sl);
    if (!l)
        snprintf(err, errlen, "cannot listen on %s", spec);
    return l;
}
