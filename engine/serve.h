/* serve: the sidecar daemon (`journeyd serve`) — shared state of the HTTP surface
 * (http.c) and the daemon around it (serve.c). Uses the public engine API, json, event,
 * libevent. */
#ifndef JD_SERVE_H
#define JD_SERVE_H

#include <event2/event.h>
#include <event2/http.h>
#include <stdint.h>

#include "../include/journeyd.h"
#include "buf.h"
#include "durable.h"
#include "event.h"
#include "json.h"

#define JD_MAX_EVENT_BYTES (32 * 1024)
#define JD_MAX_BATCH_BYTES (500 * 1024)
#define JD_LATENCY_BUCKETS 12

enum { JD_REJ_MALFORMED, JD_REJ_INVALID, JD_REJ_TOO_LARGE, JD_REJ_UNAUTHORIZED, JD_REJ_NREASONS };

typedef struct jd_durable jd_durable;

typedef struct jd_server {
    jd_engine *engine;            /* a shard's engine; the front's loads the same scripts for config,
                                   * sources and validation, and processes only when there are no
                                   * shards (in-process tests) */
    struct jd_shards *shards;     /* the front: its shards (shard.c), NULL in-process */
    jd_durable *durable;          /* NULL: no event log (events are processed at once) */
    struct jd_dispatch *dispatch; /* NULL: delivery is off (delivery.c) */
    int replaying;                /* the log is being replayed: decided actions are not logged again */
    int64_t last_received;        /* receivedAt never goes backwards */
    char *config_path;
    struct event_base *base;
    struct evhttp *http;
    struct event *timer; /* armed for the engine's earliest timer */
    struct event *sigterm, *sigint, *sighup;
    struct evconnlistener *stream;
    struct evhttp_bound_socket *bound;
    struct event *drain; /* after SIGTERM: polls for quiet */
    int64_t draining_since_ns, last_activity_ns;
    char listen_host[256];
    int listen_port;
    char **write_keys;
    size_t nwrite_keys;
    char **admin_keys;
    size_t nadmin_keys;
    jd_json_reader *jr;
    jd_json_writer *jw;
    jd_buf body, tmp, recs; /* per request scratch */
    jd_buf logline;         /* an action's log line */
    int ready;
    uint64_t id_state[2]; /* message id generator */
    /* metrics kept by the HTTP layer */
    uint64_t received;
    uint64_t rejected[JD_REJ_NREASONS];
    uint64_t requests;
    uint64_t latency_count;
    double latency_sum;
    uint64_t latency_bucket[JD_LATENCY_BUCKETS]; /* cumulative at exposition */
} jd_server;

/* A messageId for an event that came without one: "jd-" and 32 hex digits from a
 * per-process generator seeded from the kernel (unique, not secret; no syscall per id). */
void jd_serve_message_id(jd_server *s, char out[40]);

/* One event from a client (an HTTP body or batch item, a stream item): named when it
 * has no messageId, normalised into a record, held to the per-event limit, appended to
 * the event log. Counts it as received and, when refused, by reason. */
enum { JD_INGEST_OK, JD_INGEST_INVALID };
/* JD_INGEST_OK (handed to its shard, in ws) or JD_INGEST_INVALID (err says why). A log
 * that cannot write is refused per request first (jd_serve_unavailable) and shows in the
 * wait set after that. */
typedef struct jd_waitset jd_waitset;
int jd_serve_ingest(jd_server *s, const msgpack_object *item, const jd_norm_opts *base, char *err, size_t errlen,
                    jd_waitset *ws);
/* A normalised record (a CRM source's), as jd_serve_ingest hands one on. 0, or -1 with
 * err when the log cannot write. */
int jd_serve_submit(jd_server *s, const void *rec, size_t len, jd_waitset *ws, char *err, size_t errlen);
/* A request's records (shard.c): fn(ctx, failed) runs once every record handed on with
 * ws is durable and processed on its shard, in the order the waits were made; failed
 * is 1 when a log refused one of them. The wait set is freed after fn. */
jd_waitset *jd_waitset_new(jd_server *s);
void jd_waitset_wait(jd_server *s, jd_waitset *ws, void (*fn)(void *ctx, int failed), void *ctx);
/* "" or why some shard's log cannot write. */
const char *jd_serve_unavailable(jd_server *s, char *out, size_t n);

/* A string as a JSON string literal, appended to out. */
void jd_serve_json_string(jd_server *s, jd_buf *out, const char *str);

/* http.c */
void jd_http_routes(jd_server *s);
/* One JSON object per line on stdout: {"time", "level", "msg", ...extra}. extra_json is
 * a JSON object's members without braces (may be NULL). */
void jd_serve_log(jd_server *s, const char *level, const char *msg, const char *extra_json);
/* Flushes the action lines written since the last flush (after each batch of records). */
void jd_serve_log_flush(void);
/* Wall-clock ms for receivedAt and ticks, never below the last value handed out. */
int64_t jd_serve_now(jd_server *s);
/* Arms the timer event for the engine's earliest pending timer. */
void jd_serve_arm_timer(jd_server *s);

/* stream.c: listens for msgpack stream clients on HOST:PORT or a unix socket path. */
struct evconnlistener;
struct evconnlistener *jd_stream_listen(jd_server *s, const char *spec, char *err, size_t errlen);
/* Serves a connected socket as a stream client, as the listener does for an accepted one
 * (local: loopback or unix socket, which needs no auth frame when no write keys are
 * configured; otherwise, with no write keys, the socket is closed). Takes fd. */
void jd_stream_accept_fd(jd_server *s, evutil_socket_t fd, int local);

/* Creates a server around a freshly loaded engine: routes on a new event base, keys from
 * the environment or j.config. Binds nothing (jd_cmd_serve does). 0, or -1 with err. */
int jd_server_open(jd_server *s, const char *config, const jd_options *opts, char *err, size_t errlen);
/* What a shard needs of a server: the engine, a loop and its timer, logging. */
int jd_server_open_core(jd_server *s, const char *config, const jd_options *opts, char *err, size_t errlen);
void jd_server_close(jd_server *s);
/* Reloads the scripts (SIGHUP, POST /v1/admin/reload). 0, or -1 with the reason. */
int jd_serve_reload(jd_server *s, char *why, size_t n);

int jd_cmd_serve(int argc, char **argv);

#endif
