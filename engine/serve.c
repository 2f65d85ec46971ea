/* serve: `journeyd serve -c journeyd.lua` — the sidecar daemon. Resolves config
 * (j.config, then the environment, then flags), runs the libevent loop with the HTTP
 * surface, arms one libevent timer for the engine's earliest timer, logs JSON lines on
 * stdout, and handles SIGTERM/SIGINT (drain and exit) and SIGHUP.
 * Uses serve, http, the engine API, libevent. */
#define _POSIX_C_SOURCE 200809L
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <getopt.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <signal.h>
#include <sys/random.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <string.h>

#include "clock.h"
#include "event.h"
#include "serve.h"

#include "delivery.h"
#include "shard.h"

/* ---------------------------------------------------------------- logging */

void jd_serve_json_string(jd_server *s, jd_buf *out, const char *str)
{
    msgpack_object o = {.type = MSGPACK_OBJECT_STR, .via.str = {(uint32_t)strlen(str), str}};
    jd_json_write(s->jw, &o, out);
}

static void log_line(jd_server *s, const char *level, const char *msg, const char *extra_json, int flush);

void jd_serve_log(jd_server *s, const char *level, const char *msg, const char *extra_json)
{
    log_line(s, level, msg, extra_json, 1);
}

/* The head of a log line, `{"time":...,"level":...,"msg":...`, into b. */
static void log_head(jd_server *s, jd_buf *b, const char *level, const char *msg)
{
    char t[40];
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    jd_time_format((int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000, t);
    jd_buf_puts(b, "{\"time\":\"");
    jd_buf_puts(b, t);
    jd_buf_puts(b, "\",\"level\":\"");
    jd_buf_puts(b, level);
    jd_buf_puts(b, "\",\"msg\":");
    jd_serve_json_string(s, b, msg);
}

/* A line per decided action is written without a flush of its own (stdout is flushed
 * once per batch of records, jd_serve_log_flush), since a write per action was most of
 * the daemon's system time. */
static void log_line(jd_server *s, const char *level, const char *msg, const char *extra_json, int flush)
{
    jd_buf b;
    jd_buf_init(&b);
    log_head(s, &b, level, msg);
    if (extra_json && extra_json[0]) {
        jd_buf_putc(&b, ',');
        jd_buf_puts(&b, extra_json);
    }
    jd_buf_puts(&b, "}\n");
    fwrite(b.data, 1, b.len, stdout); /* one call: lines of different threads never mix */
    if (flush)
        fflush(stdout);
    jd_buf_free(&b);
}

void jd_serve_log_flush(void)
{
    fflush(stdout);
}

static void on_engine_log(const char *level, const char *line, void *ud)
{
    jd_serve_log(ud, level, line, NULL);
}

/* A decided action is logged as a JSON line and handed to delivery. */
static void on_action(const jd_action *a, void *ud)
{
    jd_server *s = ud;
    if (s->replaying)
        return; /* logged when first decided; its outbox row is delivered from the store */
    jd_delivery_action(s, a);
    size_t n;
    const char *j = jd_action_json(a, &n);
    jd_buf *b = &s->logline; /* one per server: a shard's lines are built on its thread */
    jd_buf_reset(b);
    log_head(s, b, "info", "action decided");
    jd_buf_puts(b, ",\"action\":");
    jd_buf_append(b, j, n);
    jd_buf_puts(b, "}\n");
    fwrite(b->data, 1, b->len, stdout);
}

/* ---------------------------------------------------------------- ids */

static uint64_t splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

void jd_serve_message_id(jd_server *s, char out[40])
{
    static const char hx[] = "0123456789abcdef";
    uint64_t a = splitmix(&s->id_state[0]), b = splitmix(&s->id_state[1]);
    memcpy(out, "jd-", 3);
    for (int i = 0; i < 16; i++) {
        out[3 + i] = hx[(a >> (60 - 4 * i)) & 15];
        out[19 + i] = hx[(b >> (60 - 4 * i)) & 15];
    }
    out[35] = '\0';
}

int jd_serve_ingest(jd_server *s, const msgpack_object *item, const jd_norm_opts *base, char *err, size_t errlen,
                    jd_waitset *ws)
{
    char id[40];
    jd_norm_opts o = *base;
    jd_serve_message_id(s, id);
    o.default_id = id;
    s->received++;
    jd_buf_reset(&s->recs);
    jd_event ev;
    jd_event_ids ids;
    if (jd_event_prepare(item, &o, &ev, ids, err, errlen) < 0) {
        s->rejected[JD_REJ_INVALID]++;
        return JD_INGEST_INVALID;
    }
    jd_event_pack(&ev, o.batch_context, &s->recs);
    if (s->recs.len > JD_MAX_EVENT_BYTES) {
        snprintf(err, errlen, "event of %zu bytes is over the limit of %d bytes", s->recs.len, JD_MAX_EVENT_BYTES);
        s->rejected[JD_REJ_TOO_LARGE]++;
        return JD_INGEST_INVALID;
    }
    jd_shards_submit(s, s->recs.data, s->recs.len, &ev, ws);
    return JD_INGEST_OK;
}

int jd_serve_submit(jd_server *s, const void *rec, size_t len, jd_waitset *ws, char *err, size_t errlen)
{
    msgpack_zone z;
    msgpack_zone_init(&z, 2048);
    jd_event ev;
    int rc = jd_event_read(rec, len, &z, &ev);
    if (rc)
        snprintf(err, errlen, "not an event record");
    else
        jd_shards_submit(s, rec, len, &ev, ws);
    msgpack_zone_destroy(&z);
    return rc;
}

/* ---------------------------------------------------------------- timers */

int64_t jd_serve_now(jd_server *s)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    if (now < s->last_received)
        now = s->last_received; /* the wall clock stepped back: time still only moves on */
    s->last_received = now;
    return now;
}

/* Timers are due: log a tick, so the engine moves its clock (and fires them) at the
 * same point of the log live and in a replay. */
static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    jd_server *s = arg;
    jd_durable_tick(s, jd_serve_now(s));
    jd_serve_arm_timer(s);
}

void jd_serve_arm_timer(jd_server *s)
{
    int64_t due = jd_engine_next_due(s->engine);
    if (due < 0) {
        evtimer_del(s->timer);
        return;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t wait = due - ((int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
    if (wait < 0)
        wait = 0;
    struct timeval tv = {.tv_sec = (time_t)(wait / 1000), .tv_usec = (suseconds_t)(wait % 1000) * 1000};
    evtimer_add(s->timer, &tv);
}

/* ---------------------------------------------------------------- signals */

#define DRAIN_QUIET_NS 1000000000LL /* exit after this long without a completed request */
#define DRAIN_MAX_NS 10000000000LL  /* or after this long in any case */

static void on_drain(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    jd_server *s = arg;
    int64_t now = jd_monotonic_ns();
    int64_t quiet_since = s->last_activity_ns > s->draining_since_ns ? s->last_activity_ns : s->draining_since_ns;
    if (now - quiet_since >= DRAIN_QUIET_NS || now - s->draining_since_ns >= DRAIN_MAX_NS)
        event_base_loopexit(s->base, NULL);
}

/* SIGTERM/SIGINT: stop accepting, let connections in flight finish their requests, then
 * leave the loop. */
static void on_stop(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    jd_server *s = arg;
    if (s->drain)
        return;
    char extra[64];
    snprintf(extra, sizeof extra, "\"signal\":%d", (int)sig);
    jd_serve_log(s, "info", "stopping: no new connections, draining", extra);
    s->ready = 0;
    if (s->bound) {
        evhttp_del_accept_socket(s->http, s->bound);
        s->bound = NULL;
    }
    if (s->stream)
        evconnlistener_disable(s->stream);
    s->draining_since_ns = jd_monotonic_ns();
    s->drain = event_new(s->base, -1, EV_PERSIST, on_drain, s);
    struct timeval tv = {0, 50000};
    event_add(s->drain, &tv);
}

static int reload_one(jd_server *s, char *why, size_t n)
{
    jd_error err;
    if (jd_engine_reload(s->engine, s->config_path, &err)) {
        jd_buf b;
        jd_buf_init(&b);
        jd_buf_puts(&b, "\"error\":");
        jd_serve_json_string(s, &b, err.text);
        jd_serve_log(s, "error", "reload failed; the previous scripts stay", jd_buf_cstr(&b));
        jd_buf_free(&b);
        snprintf(why, n, "%s", err.text);
        return -1;
    }
    /* the store must not replay records decided by the old scripts with the new ones */
    jd_durable_checkpoint(s);
    jd_delivery_reload(s);
    jd_serve_arm_timer(s);
    return 0;
}

typedef struct reload_call {
    char why[1024];
    int rc;
} reload_call;

static void reload_shard(jd_server *shard, void *arg)
{
    reload_call *r = arg;
    r->rc = reload_one(shard, r->why, sizeof r->why);
}

/* The front's engine first: a script that does not load stops there, and every shard
 * keeps its scripts. Then each shard between two of its events. */
int jd_serve_reload(jd_server *s, char *why, size_t n)
{
    if (reload_one(s, why, n))
        return -1;
    for (int k = 0; s->shards && k < jd_shards_count(s); k++) {
        reload_call r = {.rc = 0};
        jd_shards_call(s, k, reload_shard, &r);
        if (r.rc) {
            snprintf(why, n, "shard %d: %s", k, r.why);
            return -1;
        }
    }
    return 0;
}

/* Between events: the loop runs one callback at a time, so the swap never splits one. */
static void on_hup(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    char why[1024];
    jd_serve_reload(arg, why, sizeof why);
}

/* ---------------------------------------------------------------- config */

/* Splits a comma-separated list (environment variables) or reads a j.config list. */
static void load_keys(jd_server *s, const char *env, const char *cfg, char ***out, size_t *n)
{
    const char *v = getenv(env);
    *out = NULL;
    *n = 0;
    if (v && *v) {
        char *copy = jd_strndup(v, strlen(v)), *save = NULL;
        for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            while (*tok == ' ')
                tok++;
            if (!*tok)
                continue;
            *out = jd_xrealloc(*out, (*n + 1) * sizeof **out);
            (*out)[(*n)++] = jd_strndup(tok, strlen(tok));
        }
        free(copy);
        return;
    }
    const char *k;
    for (size_t i = 0; (k = jd_engine_config_item(s->engine, cfg, i)); i++) {
        *out = jd_xrealloc(*out, (*n + 1) * sizeof **out);
        (*out)[(*n)++] = jd_strndup(k, strlen(k));
    }
}

static void free_keys(char **k, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(k[i]);
    free(k);
}

/* "host:port", "[v6]:port" or ":port" (loopback). */
static int parse_listen(const char *v, char *host, size_t hn, int *port)
{
    const char *colon = strrchr(v, ':');
    if (!colon)
        return -1;
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (*end || p < 0 || p > 65535)
        return -1;
    size_t l = (size_t)(colon - v);
    if (l >= 2 && v[0] == '[' && v[l - 1] == ']') {
        v++;
        l -= 2;
    }
    if (l == 0) {
        snprintf(host, hn, "127.0.0.1");
    } else {
        if (l >= hn)
            return -1;
        memcpy(host, v, l);
        host[l] = '\0';
    }
    *port = (int)p;
    return 0;
}

/* JOURNEYD_SHARDS, then j.config shards, else one per core beyond the first: the front
 * (parsing and normalising every event) and the log and checkpoint writers keep about a
 * core busy, and on 2 cores one shard beat two (README, "Shards"). -1 (printed) when
 * invalid. */
static int shard_count(jd_server *s)
{
    const char *v = getenv("JOURNEYD_SHARDS");
    if (!v || !*v)
        v = jd_engine_config(s->engine, "shards");
    if (!v || !*v) {
        long c = sysconf(_SC_NPROCESSORS_ONLN) - 1;
        return c < 1 ? 1 : c > JD_MAX_SHARDS ? JD_MAX_SHARDS : (int)c;
    }
    char *end;
    long n = strtol(v, &end, 10);
    if (*end || n < 1 || n > JD_MAX_SHARDS) {
        fprintf(stderr, "journeyd: shards: a number from 1 to %d, got '%s'\n", JD_MAX_SHARDS, v);
        return -1;
    }
    return (int)n;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: journeyd serve -c CONFIG.lua [--listen HOST:PORT] [--data-dir DIR] [--log-dir DIR]\n"
               "  environment: JOURNEYD_LISTEN, JOURNEYD_DATA_DIR, JOURNEYD_LOG_DIR, JOURNEYD_WRITE_KEYS,\n"
               "               JOURNEYD_ADMIN_KEYS,\n"
               "               JOURNEYD_STREAM_LISTEN (HOST:PORT or a unix socket path)\n");
}

int jd_server_open_core(jd_server *s, const char *config, const jd_options *opts, char *err, size_t errlen)
{
    memset(s, 0, sizeof *s);
    jd_error e;
    s->engine = jd_engine_new(config, opts, &e);
    if (!s->engine) {
        snprintf(err, errlen, "%s", e.text);
        return -1;
    }
    s->config_path = jd_strndup(config, strlen(config));
    s->jr = jd_json_reader_new();
    s->jw = jd_json_writer_new();
    jd_buf_init(&s->body);
    jd_buf_init(&s->tmp);
    jd_buf_init(&s->recs);
    jd_buf_init(&s->logline);
    jd_engine_on_log(s->engine, on_engine_log, s);
    jd_engine_on_action(s->engine, on_action, s);
    if (getrandom(s->id_state, sizeof s->id_state, 0) != (ssize_t)sizeof s->id_state) {
        s->id_state[0] = (uint64_t)jd_monotonic_ns();
        s->id_state[1] = (uint64_t)getpid() << 32 ^ (uint64_t)time(NULL);
    }
    /* the epoll changelist folds the add/del pairs evhttp makes per request into one
     * epoll_ctl, which matters where syscalls are expensive (VMs) */
    struct event_config *cfg = event_config_new();
    event_config_set_flag(cfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    s->base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    s->timer = evtimer_new(s->base, on_timer, s);
    s->ready = 1;
    return 0;
}

int jd_server_open(jd_server *s, const char *config, const jd_options *opts, char *err, size_t errlen)
{
    if (jd_server_open_core(s, config, opts, err, errlen))
        return -1;
    load_keys(s, "JOURNEYD_WRITE_KEYS", "write_keys", &s->write_keys, &s->nwrite_keys);
    load_keys(s, "JOURNEYD_ADMIN_KEYS", "admin_keys", &s->admin_keys, &s->nadmin_keys);
    s->http = evhttp_new(s->base);
    /* beyond this evhttp answers 413 itself; below it, the handlers apply the API's limits
     * with JSON errors */
    evhttp_set_max_body_size(s->http, 4 * 1024 * 1024);
    evhttp_set_max_headers_size(s->http, 64 * 1024);
    evhttp_set_timeout(s->http, 30);
    evhttp_set_allowed_methods(s->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD);
    jd_http_routes(s);
    return 0;
}

void jd_server_close(jd_server *s)
{
    jd_shards_close(s);
    jd_delivery_close(s); /* what is in flight is in the outbox: it goes again at start */
    jd_durable_close(s);
    if (s->timer)
        event_free(s->timer);
    if (s->sigterm)
        event_free(s->sigterm);
    if (s->sigint)
        event_free(s->sigint);
    if (s->sighup)
        event_free(s->sighup);
    if (s->drain)
        event_free(s->drain);
    if (s->stream)
        evconnlistener_free(s->stream);
    if (s->http)
        evhttp_free(s->http);
    if (s->base)
        event_base_free(s->base);
    free_keys(s->write_keys, s->nwrite_keys);
    free_keys(s->admin_keys, s->nadmin_keys);
    jd_json_reader_free(s->jr);
    jd_json_writer_free(s->jw);
    jd_buf_free(&s->body);
    jd_buf_free(&s->tmp);
    jd_buf_free(&s->recs);
    jd_buf_free(&s->logline);
    jd_engine_free(s->engine);
    free(s->config_path);
    memset(s, 0, sizeof *s);
}

int jd_cmd_serve(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, 0, 'c'},   {"listen", required_argument, 0, 'l'},
        {"data-dir", required_argument, 0, 'd'}, {"log-dir", required_argument, 0, 'L'},
        {"help", no_argument, 0, 'h'},           {0, 0, 0, 0},
    };
    const char *config = NULL, *listen_flag = NULL, *data_flag = NULL, *log_flag = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "c:l:d:L:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': config = optarg; break;
        case 'l': listen_flag = optarg; break;
        case 'd': data_flag = optarg; break;
        case 'L': log_flag = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!config || optind != argc) {
        usage(stderr);
        return 2;
    }
#ifdef __GLIBC__
    /* The daemon's buffers (log batches, checkpoint batches, LMDB's dirty pages) are
     * freed and allocated again every batch. glibc's defaults hand big ones back to the
     * kernel (munmap, heap trim) and fault them in again: about 7% of the shard thread's
     * time in the stream bench. Keep up to 64 MB of freed memory instead. Blocks of 4 MB
     * and more stay mapped on their own, so growing one is an mremap, not a copy that
     * faults every page in at once (10-15 ms in one event on this VM). */
    mallopt(M_MMAP_THRESHOLD, 4 << 20);
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
    mallopt(M_TOP_PAD, 8 << 20);
#endif
    jd_server srv;
    jd_server *s = &srv;
    jd_options o = {.decisions_per_user = 20, .dedupe_ttl_ms = 24LL * 3600 * 1000, .live = 1};
    const char *ol = getenv("JOURNEYD_OVERDUE_LIMIT");
    if (ol && *ol && jd_parse_duration(ol, &o.overdue_limit_ms)) {
        fprintf(stderr, "journeyd: JOURNEYD_OVERDUE_LIMIT: bad duration '%s'\n", ol);
        return 2;
    }
    char err[1024];
    if (jd_server_open(s, config, &o, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    int rc = 1;
    /* flags win over the environment, which wins over j.config */
    const char *listen = listen_flag ? listen_flag : getenv("JOURNEYD_LISTEN");
    if (!listen || !*listen)
        listen = jd_engine_config(s->engine, "listen");
    if (!listen)
        listen = "127.0.0.1:8080";
    const char *data_dir = data_flag ? data_flag : getenv("JOURNEYD_DATA_DIR");
    if (!data_dir || !*data_dir)
        data_dir = jd_engine_config(s->engine, "data_dir");
    if (!data_dir)
        data_dir = "./data";
    /* the event log on its own disk: its syncs then never wait behind the store's writes */
    const char *log_dir = log_flag ? log_flag : getenv("JOURNEYD_LOG_DIR");
    if (!log_dir || !*log_dir)
        log_dir = jd_engine_config(s->engine, "log_dir");
    if (log_dir && !*log_dir)
        log_dir = NULL;
    if (parse_listen(listen, s->listen_host, sizeof s->listen_host, &s->listen_port)) {
        fprintf(stderr, "journeyd: listen: expected HOST:PORT, got '%s'\n", listen);
        goto done;
    }
    signal(SIGPIPE, SIG_IGN);
    static char logbuf[1 << 16]; /* action lines go out a batch at a time */
    setvbuf(stdout, logbuf, _IOFBF, sizeof logbuf);
    /* the state comes back from the event log before anything is accepted */
    s->ready = 0;
    int nshards = shard_count(s);
    if (nshards < 0)
        goto done;
    if (jd_shards_open(s, config, &o, data_dir, log_dir, nshards, err, sizeof err)) {
        fprintf(stderr, "journeyd: %s\n", err);
        goto done;
    }
    s->ready = 1;
    s->bound = evhttp_bind_socket_with_handle(s->http, s->listen_host, (ev_uint16_t)s->listen_port);
    if (!s->bound) {
        fprintf(stderr, "journeyd: cannot listen on %s:%d\n", s->listen_host, s->listen_port);
        goto done;
    }
    const char *stream = getenv("JOURNEYD_STREAM_LISTEN");
    if (!stream || !*stream)
        stream = jd_engine_config(s->engine, "stream_listen");
    if (stream && *stream) {
        char serr[256];
        s->stream = jd_stream_listen(s, stream, serr, sizeof serr);
        if (!s->stream) {
            fprintf(stderr, "journeyd: %s\n", serr);
            goto done;
        }
    }
    s->sigterm = evsignal_new(s->base, SIGTERM, on_stop, s);
    s->sigint = evsignal_new(s->base, SIGINT, on_stop, s);
    s->sighup = evsignal_new(s->base, SIGHUP, on_hup, s);
    evsignal_add(s->sigterm, NULL);
    evsignal_add(s->sigint, NULL);
    evsignal_add(s->sighup, NULL);
    char extra[1024];
    snprintf(extra, sizeof extra,
             "\"listen\":\"%s:%d\",\"stream\":\"%s\",\"config\":\"%s\",\"data_dir\":\"%s\",\"write_keys\":%zu,"
             "\"admin_keys\":%zu,\"shards\":%d,\"version\":\"%s\"",
             s->listen_host, s->listen_port, stream ? stream : "", config, data_dir, s->nwrite_keys, s->nadmin_keys,
             nshards, JOURNEYD_VERSION);
    jd_serve_log(s, "info", "listening", extra);
    jd_serve_arm_timer(s);
    event_base_dispatch(s->base);
    jd_serve_log(s, "info", "stopped", NULL);
    rc = 0;
done:
    jd_server_close(s);
    return rc;
}
