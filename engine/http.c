/* http: the HTTP surface of `journeyd serve` — the Segment Tracking API
 * (/v1/track|identify|page|screen|group|alias|batch), the admin API
 * (/v1/users/ID[/trace], /v1/journeys[/NAME[/funnel]]), the dashboard (/) and /metrics,
 * /livez, /readyz. Auth, size limits and JSON error bodies live here. Uses serve, event,
 * json, the engine API, libevent, OpenSSL (base64, constant-time compare). */
#define _POSIX_C_SOURCE 200809L
#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "event.h"
#include "serve.h"
#include "shard.h"

#include "delivery.h"

/* ---------------------------------------------------------------- replies */

static void reply(struct evhttp_request *req, int code, const char *reason, const char *ctype, const char *body,
                  size_t n)
{
    struct evbuffer *out = evbuffer_new();
    evbuffer_add(out, body, n);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", ctype);
    evhttp_send_reply(req, code, reason, out);
    evbuffer_free(out);
}

static void reply_json(struct evhttp_request *req, int code, const char *reason, const char *json)
{
    reply(req, code, reason, "application/json", json, strlen(json));
}

/* {"success":false,"code":code,"error":message} with the message escaped by yajl. */
static void reply_error(jd_server *s, struct evhttp_request *req, int status, const char *reason, const char *code,
                        const char *msg)
{
    jd_buf mp;
    jd_buf_init(&mp);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &mp, jd_buf_msgpack_write);
    msgpack_pack_map(&pk, 3);
    jd_mp_pack_cstr(&pk, "success");
    msgpack_pack_false(&pk);
    jd_mp_pack_cstr(&pk, "code");
    jd_mp_pack_cstr(&pk, code);
    jd_mp_pack_cstr(&pk, "error");
    jd_mp_pack_cstr(&pk, msg);
    jd_buf_reset(&s->tmp);
    jd_json_write_msgpack(s->jw, mp.data, mp.len, &s->tmp);
    jd_buf_free(&mp);
    reply_json(req, status, reason, jd_buf_cstr(&s->tmp));
}

/* ---------------------------------------------------------------- auth */

static int is_loopback(struct evhttp_request *req)
{
    char *addr = NULL;
    ev_uint16_t port = 0;
    evhttp_connection_get_peer(evhttp_request_get_connection(req), &addr, &port);
    if (!addr)
        return 0;
    return strncmp(addr, "127.", 4) == 0 || strcmp(addr, "::1") == 0 || strncmp(addr, "::ffff:127.", 11) == 0;
}

static int key_in(char **keys, size_t n, const char *k, size_t kn)
{
    int found = 0;
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(keys[i]);
        /* compare every key in constant time per key; no early exit on a match */
        if (l == kn && CRYPTO_memcmp(keys[i], k, kn) == 0)
            found = 1;
    }
    return found;
}

/* The credential in Authorization: "Basic base64(key:)" (Segment) or "Bearer key".
 * Returns its length (0: none) and copies it into out. */
static size_t credential(struct evhttp_request *req, char *out, size_t cap)
{
    const char *h = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    if (!h)
        return 0;
    if (strncasecmp(h, "Bearer ", 7) == 0) {
        size_t n = strlen(h + 7);
        if (n >= cap)
            return 0;
        memcpy(out, h + 7, n + 1);
        return n;
    }
    if (strncasecmp(h, "Basic ", 6) == 0) {
        const char *b64 = h + 6;
        size_t n = strlen(b64);
        if (n == 0 || n % 4 || n / 4 * 3 >= cap)
            return 0;
        int len = EVP_DecodeBlock((unsigned char *)out, (const unsigned char *)b64, (int)n);
        if (len < 0)
            return 0;
        int pad = 0;
        while (n && b64[n - 1] == '=') { /* EVP_DecodeBlock counts padding as zero bytes */
            pad++;
            n--;
        }
        if (pad > 2) /* "====" would take len below 0 */
            return 0;
        len -= pad;
        out[len] = '\0';
        char *colon = memchr(out, ':', (size_t)len);
        if (colon) {
            *colon = '\0';
            return (size_t)(colon - out);
        }
        return (size_t)len;
    }
    return 0;
}

/* Write access: a configured write key (header or body writeKey); with no keys
 * configured, loopback clients only. */
static int write_allowed(jd_server *s, struct evhttp_request *req, const char *body_key, size_t body_key_len)
{
    char cred[512];
    size_t n = credential(req, cred, sizeof cred);
    if (s->nwrite_keys == 0)
        return is_loopback(req);
    if (n && key_in(s->write_keys, s->nwrite_keys, cred, n))
        return 1;
    return body_key && key_in(s->write_keys, s->nwrite_keys, body_key, body_key_len);
}

/* Admin access: a configured admin key as Bearer; with none configured, loopback
 * clients only. A write key never reads data. */
static int admin_allowed(jd_server *s, struct evhttp_request *req)
{
    if (s->nadmin_keys == 0)
        return is_loopback(req);
    char cred[512];
    size_t n = credential(req, cred, sizeof cred);
    return n && key_in(s->admin_keys, s->nadmin_keys, cred, n);
}

/* ---------------------------------------------------------------- ingest */

static void observe_latency(jd_server *s, int64_t start_ns)
{
    static const double bounds[JD_LATENCY_BUCKETS] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                                      0.01,   0.025,   0.05,   0.1,   0.5,    1.0};
    double sec = (double)(jd_monotonic_ns() - start_ns) / 1e9;
    s->latency_count++;
    s->latency_sum += sec;
    for (int i = 0; i < JD_LATENCY_BUCKETS; i++)
        if (sec <= bounds[i]) {
            s->latency_bucket[i]++;
            break;
        }
}

/* Normalises and processes one item; on failure writes the reason into err. */
/* An answer that waits until the request's records are durable (and processed). The
 * connection's close callback marks it dead: evhttp frees a request whose client went
 * away, and a dead answer is dropped instead of sent to freed memory. */
typedef struct later {
    jd_server *s;
    struct evhttp_request *req;
    struct evhttp_connection *conn;
    int status;
    const char *reason;
    char *body;
    int64_t t0;
    uint64_t nevents;
    int dead;
} later;

static void later_conn_closed(struct evhttp_connection *c, void *arg)
{
    (void)c;
    ((later *)arg)->dead = 1;
}

static void later_answer(void *arg, int failed)
{
    later *l = arg;
    if (!l->dead) {
        evhttp_connection_set_closecb(l->conn, NULL, NULL);
        if (failed) {
            char why[256];
            reply_error(l->s, l->req, 503, "Service Unavailable", "unavailable",
                        *jd_serve_unavailable(l->s, why, sizeof why) ? why : "the event log could not write");
        } else {
            reply_json(l->req, l->status, l->reason, l->body);
            for (uint64_t i = 0; i < l->nevents; i++)
                observe_latency(l->s, l->t0);
        }
    }
    free(l->body);
    free(l);
}

/* A request answered at once: its wait set still takes its turn (records handed on
 * before a refusal are processed all the same). */
static void no_answer(void *ctx, int failed)
{
    (void)ctx;
    (void)failed;
}

/* Replies once the request's records are durable and processed (ws: may hold none). */
static void answer_when_durable(jd_server *s, struct evhttp_request *req, jd_waitset *ws, int status,
                                const char *reason, const char *body, int64_t t0, uint64_t nevents)
{
    later *l = jd_xcalloc(1, sizeof *l);
    *l = (later){s,       req, evhttp_request_get_connection(req), status, reason, jd_strndup(body, strlen(body)), t0,
                 nevents, 0};
    evhttp_connection_set_closecb(l->conn, later_conn_closed, l);
    jd_waitset_wait(s, ws, later_answer, l);
}

static const msgpack_object *body_write_key(const msgpack_object *root, size_t *n)
{
    const msgpack_object *k = jd_mp_get(root, "writeKey", 8);
    if (k && k->type == MSGPACK_OBJECT_STR) {
        *n = k->via.str.size;
        return k;
    }
    return NULL;
}

/* POST /v1/<type> and /v1/batch. */
static void handle_ingest(jd_server *s, struct evhttp_request *req, const char *kind)
{
    int64_t t0 = jd_monotonic_ns();
    int is_batch = strcmp(kind, "batch") == 0;
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    size_t limit = is_batch ? JD_MAX_BATCH_BYTES : JD_MAX_EVENT_BYTES;
    if (len > limit) {
        s->rejected[JD_REJ_TOO_LARGE]++;
        char msg[128];
        snprintf(msg, sizeof msg, "body of %zu bytes is over the limit of %zu bytes", len, limit);
        reply_error(s, req, 413, "Payload Too Large", "too_large", msg);
        return;
    }
    jd_buf_reset(&s->body);
    jd_buf_reserve(&s->body, len);
    evbuffer_remove(in, s->body.data, len);
    s->body.len = len;
    jd_buf_reset(&s->tmp);
    char err[512];
    if (jd_json_to_msgpack(s->jr, s->body.data, len, &s->tmp, err, sizeof err)) {
        /* auth first: an unauthenticated client learns nothing about parsing */
        if (!write_allowed(s, req, NULL, 0)) {
            s->rejected[JD_REJ_UNAUTHORIZED]++;
            reply_error(s, req, 401, "Unauthorized", "unauthorized", "missing or wrong write key");
            return;
        }
        s->rejected[JD_REJ_MALFORMED]++;
        char msg[600];
        snprintf(msg, sizeof msg, "malformed JSON at %s", err);
        reply_error(s, req, 400, "Bad Request", "malformed_json", msg);
        return;
    }
    msgpack_zone z;
    msgpack_zone_init(&z, 8192);
    msgpack_object root;
    if (jd_mp_unpack(s->tmp.data, s->tmp.len, &z, &root)) {
        s->rejected[JD_REJ_MALFORMED]++;
        reply_error(s, req, 400, "Bad Request", "malformed_json", "the body cannot be read back (nested too deep)");
        goto done;
    }
    size_t bkn = 0;
    const msgpack_object *bk = root.type == MSGPACK_OBJECT_MAP ? body_write_key(&root, &bkn) : NULL;
    if (!write_allowed(s, req, bk ? bk->via.str.ptr : NULL, bkn)) {
        s->rejected[JD_REJ_UNAUTHORIZED]++;
        reply_error(s, req, 401, "Unauthorized", "unauthorized", "missing or wrong write key");
        goto done;
    }
    if (*jd_serve_unavailable(s, err, sizeof err)) {
        reply_error(s, req, 503, "Service Unavailable", "unavailable", err);
        goto done;
    }
    int64_t now = jd_serve_now(s);
    jd_norm_opts o = {.received_ms = now, .default_ts = now};
    jd_waitset *ws = jd_waitset_new(s);
    if (!is_batch) {
        o.force_type = 1;
        jd_event_type_parse(kind, strlen(kind), &o.type);
        int rc = jd_serve_ingest(s, &root, &o, err, sizeof err, ws);
        if (rc == JD_INGEST_OK) {
            answer_when_durable(s, req, ws, 200, "OK", "{\"success\":true}", t0, 1);
            goto done;
        }
        jd_waitset_wait(s, ws, no_answer, NULL);
        reply_error(s, req, 400, "Bad Request", "invalid_event", err);
        goto done;
    }
    const msgpack_object *batch = jd_mp_get(&root, "batch", 5);
    if (root.type != MSGPACK_OBJECT_MAP || !batch || batch->type != MSGPACK_OBJECT_ARRAY) {
        jd_waitset_wait(s, ws, no_answer, NULL);
        s->rejected[JD_REJ_INVALID]++;
        reply_error(s, req, 400, "Bad Request", "invalid_batch", "a batch is an object with a \"batch\" array");
        goto done;
    }
    o.batch_context = jd_mp_get(&root, "context", 7);
    o.sent_at = jd_mp_get(&root, "sentAt", 6);
    /* Valid items are processed; invalid ones are reported by index and counted. A
     * batch with no valid item is a 400: re-sending it cannot succeed. */
    jd_buf rej;
    jd_buf_init(&rej);
    size_t accepted = 0, nrej = 0;
    for (uint32_t i = 0; i < batch->via.array.size; i++) {
        int rc = jd_serve_ingest(s, &batch->via.array.ptr[i], &o, err, sizeof err, ws);
        if (rc == JD_INGEST_OK) {
            accepted++;
            continue;
        }
        /* {"index":i,"error":err} */
        jd_buf mp;
        jd_buf_init(&mp);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &mp, jd_buf_msgpack_write);
        msgpack_pack_map(&pk, 2);
        jd_mp_pack_cstr(&pk, "index");
        msgpack_pack_uint32(&pk, i);
        jd_mp_pack_cstr(&pk, "error");
        jd_mp_pack_cstr(&pk, err);
        if (nrej++)
            jd_buf_putc(&rej, ',');
        jd_json_write_msgpack(s->jw, mp.data, mp.len, &rej);
        jd_buf_free(&mp);
    }
    jd_buf_reset(&s->tmp);
    if (accepted == 0 && nrej > 0)
        jd_buf_printf(&s->tmp,
                      "{\"success\":false,\"code\":\"invalid_batch\",\"error\":\"no valid event in the "
                      "batch\",\"accepted\":0,\"rejected\":[%.*s]}",
                      (int)rej.len, rej.data);
    else
        jd_buf_printf(&s->tmp, "{\"success\":true,\"accepted\":%zu,\"rejected\":[%.*s]}", accepted, (int)rej.len,
                      rej.data ? rej.data : "");
    answer_when_durable(s, req, ws, accepted == 0 && nrej > 0 ? 400 : 200,
                        accepted == 0 && nrej > 0 ? "Bad Request" : "OK", jd_buf_cstr(&s->tmp), t0, accepted);
    jd_buf_free(&rej);
done:
    msgpack_zone_destroy(&z);
}

/* Mapped records go to the event log like any other input. */
typedef struct source_emit {
    jd_server *s;
    jd_waitset *ws;
    int unavailable;
} source_emit;

static int emit_record(const void *rec, size_t len, void *ud)
{
    source_emit *em = ud;
    char err[256];
    if (em->unavailable || jd_serve_submit(em->s, rec, len, em->ws, err, sizeof err)) {
        em->unavailable = 1;
        return -1;
    }
    return 0;
}

/* POST /v1/sources/NAME: a CRM webhook through the source's Lua verify and map. A
 * source without its own verify needs a write key like the tracking API. */
static void handle_source(jd_server *s, struct evhttp_request *req, const char *enc_name)
{
    int64_t t0 = jd_monotonic_ns();
    size_t n = 0;
    char *name = evhttp_uridecode(enc_name, 0, &n);
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    if (!name || strchr(name, '/')) {
        reply_error(s, req, 404, "Not Found", "not_found", "no such source");
        free(name);
        return;
    }
    if (len > JD_MAX_BATCH_BYTES) {
        s->rejected[JD_REJ_TOO_LARGE]++;
        reply_error(s, req, 413, "Payload Too Large", "too_large", "webhook body over 500 KB");
        free(name);
        return;
    }
    if (!jd_engine_source_verifies(s->engine, name) && !write_allowed(s, req, NULL, 0)) {
        s->rejected[JD_REJ_UNAUTHORIZED]++;
        reply_error(s, req, 401, "Unauthorized", "unauthorized", "missing or wrong write key");
        free(name);
        return;
    }
    jd_buf_reset(&s->body);
    jd_buf_reserve(&s->body, len);
    evbuffer_remove(in, s->body.data, len);
    s->body.len = len;
    struct evkeyvalq *hq = evhttp_request_get_input_headers(req);
    size_t nh = 0;
    for (struct evkeyval *kv = hq->tqh_first; kv; kv = kv->next.tqe_next)
        nh++;
    jd_header *hs = jd_xcalloc(nh ? nh : 1, sizeof *hs);
    nh = 0;
    for (struct evkeyval *kv = hq->tqh_first; kv; kv = kv->next.tqe_next)
        hs[nh++] = (jd_header){kv->key, kv->value};
    char why[256];
    if (*jd_serve_unavailable(s, why, sizeof why)) {
        reply_error(s, req, 503, "Service Unavailable", "unavailable", why);
        free(hs);
        free(name);
        return;
    }
    source_emit em = {s, jd_waitset_new(s), 0};
    jd_source_request sr = {
        .method = "POST",
        .uri = evhttp_request_get_uri(req),
        .body = s->body.data,
        .body_len = len,
        .headers = hs,
        .nheaders = nh,
        .received_ms = jd_serve_now(s),
        .emit = emit_record,
        .emit_ud = &em,
    };
    jd_source_result res;
    if (s->shards) /* the front's engine processes nothing: its clock follows the requests */
        jd_engine_advance(s->engine, sr.received_ms);
    jd_engine_source(s->engine, name, &sr, &res);
    free(hs);
    if (em.unavailable) {
        jd_waitset_wait(s, em.ws, no_answer, NULL);
        reply_error(s, req, 503, "Service Unavailable", "unavailable", "a CRM record could not be handed on");
        free(name);
        return;
    }
    s->received += (uint64_t)(res.accepted + res.rejected);
    if (res.status == 401)
        s->rejected[JD_REJ_UNAUTHORIZED]++;
    else if (res.rejected)
        s->rejected[JD_REJ_INVALID] += (uint64_t)res.rejected;
    if (res.status == 200) {
        jd_buf_reset(&s->tmp);
        jd_buf_printf(&s->tmp, "{\"success\":true,\"accepted\":%d,\"rejected\":%d}", res.accepted, res.rejected);
        answer_when_durable(s, req, em.ws, 200, "OK", jd_buf_cstr(&s->tmp), t0, (uint64_t)res.accepted);
    } else {
        jd_waitset_wait(s, em.ws, no_answer, NULL);
        static const struct {
            int status;
            const char *reason, *code;
        } m[] = {{400, "Bad Request", "invalid_webhook"},
                 {401, "Unauthorized", "verification_failed"},
                 {404, "Not Found", "not_found"},
                 {500, "Internal Server Error", "source_error"}};
        size_t k = 0;
        while (k < 3 && m[k].status != res.status)
            k++;
        reply_error(s, req, m[k].status, m[k].reason, m[k].code, res.error);
    }
    free(name);
}

/* ---------------------------------------------------------------- admin */

/* GET /v1/users/ID and /v1/journeys/NAME: the engine's JSON for a decoded path name —
 * a user's from the shard that holds them, a journey's summed over the shards. */
typedef struct lookup_arg {
    char *(*lookup)(const jd_engine *, const char *, size_t);
    const char *name;
    size_t n;
} lookup_arg;

static char *run_lookup(jd_server *shard, void *arg)
{
    lookup_arg *a = arg;
    return a->lookup(shard->engine, a->name, a->n);
}

static void handle_lookup(jd_server *s, struct evhttp_request *req, const char *encoded,
                          char *(*lookup)(const jd_engine *, const char *, size_t), const char *missing, int user)
{
    size_t n = 0;
    char *name = evhttp_uridecode(encoded, 0, &n);
    char *json = NULL;
    if (name) {
        lookup_arg a = {lookup, name, n};
        if (!user) {
            json = jd_shards_json_sum(s, run_lookup, &a);
        } else {
            int k = jd_shards_user_shard(s, name, n);
            json = jd_shards_json(s, k, run_lookup, &a);
            /* an anonymous id's own profile stays on its shard after it was linked */
            int own = jd_shard_of(name, n, jd_shards_count(s));
            if (!json && own != k)
                json = jd_shards_json(s, own, run_lookup, &a);
        }
    }
    if (!json)
        reply_error(s, req, 404, "Not Found", "not_found", missing);
    else
        reply_json(req, 200, "OK", json);
    free(json);
    free(name);
}

static char *run_journeys(jd_server *shard, void *arg)
{
    (void)arg;
    return jd_engine_journeys_json(shard->engine);
}

/* The path segment before suffix ("/v1/users/ID/trace" -> "ID"), malloc'd, or NULL when
 * path is not prefix + a non-empty segment + suffix. */
static char *segment_before(const char *path, const char *prefix, const char *suffix)
{
    size_t pl = strlen(prefix), sl = strlen(suffix), n = strlen(path);
    if (n <= pl + sl || strncmp(path, prefix, pl) != 0 || strcmp(path + n - sl, suffix) != 0)
        return NULL;
    char *seg = malloc(n - pl - sl + 1);
    if (seg) {
        memcpy(seg, path + pl, n - pl - sl);
        seg[n - pl - sl] = '\0';
    }
    return seg;
}

/* GET /v1/journeys/NAME/funnel?window=1h|24h|7d|all (default all). */
static void handle_funnel(jd_server *s, struct evhttp_request *req, const char *encoded)
{
    struct evkeyvalq q;
    const char *query = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));
    if (evhttp_parse_query_str(query && *query ? query : "window=all", &q) != 0) { /* (it initialises q) */
        reply_error(s, req, 400, "Bad Request", "bad_request", "malformed query");
        return;
    }
    const char *w = evhttp_find_header(&q, "window");
    if (!w)
        w = "all";
    if (strcmp(w, "1h") && strcmp(w, "24h") && strcmp(w, "7d") && strcmp(w, "all")) {
        reply_error(s, req, 400, "Bad Request", "bad_request", "window must be 1h, 24h, 7d or all");
        evhttp_clear_headers(&q);
        return;
    }
    size_t n = 0;
    char *name = evhttp_uridecode(encoded, 0, &n);
    char *json = name ? jd_shards_funnel_json(s, name, n, w) : NULL;
    if (!json)
        reply_error(s, req, 404, "Not Found", "not_found", "no such journey");
    else
        reply_json(req, 200, "OK", json);
    free(json);
    free(name);
    evhttp_clear_headers(&q);
}

/* GET /: the dashboard (engine/dashboard.html, built into the binary). It holds no data:
 * the page asks the admin API, so it is served without a key. */
extern const unsigned char jd_dashboard_html[];
extern const size_t jd_dashboard_html_len;

static void handle_dashboard(struct evhttp_request *req)
{
    evhttp_add_header(evhttp_request_get_output_headers(req), "Cache-Control", "no-store");
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Security-Policy",
                      "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'");
    reply(req, 200, "OK", "text/html; charset=utf-8", (const char *)jd_dashboard_html, jd_dashboard_html_len);
}

static void handle_metrics(jd_server *s, struct evhttp_request *req)
{
    static const char *const bounds[JD_LATENCY_BUCKETS] = {"0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005",
                                                           "0.01",   "0.025",   "0.05",   "0.1",   "0.5",    "1"};
    static const char *const reasons[JD_REJ_NREASONS] = {"malformed_json", "invalid_event", "too_large",
                                                         "unauthorized"};
    char *engine = s->shards ? jd_shards_metrics(s) : jd_engine_metrics(s->engine);
    jd_buf b;
    jd_buf_init(&b);
    jd_buf_puts(&b, engine);
    free(engine);
    jd_buf_printf(&b,
                  "# HELP journeyd_events_received_total Events received over HTTP.\n"
                  "# TYPE journeyd_events_received_total counter\njourneyd_events_received_total %llu\n",
                  (unsigned long long)s->received);
    jd_buf_puts(&b, "# HELP journeyd_events_rejected_total Events or requests rejected, by reason.\n"
                    "# TYPE journeyd_events_rejected_total counter\n");
    for (int i = 0; i < JD_REJ_NREASONS; i++)
        jd_buf_printf(&b, "journeyd_events_rejected_total{reason=\"%s\"} %llu\n", reasons[i],
                      (unsigned long long)s->rejected[i]);
    jd_buf_puts(&b, "# HELP journeyd_processing_seconds Time from receiving a request to an event being "
                    "processed.\n# TYPE journeyd_processing_seconds histogram\n");
    uint64_t cum = 0;
    for (int i = 0; i < JD_LATENCY_BUCKETS; i++) {
        cum += s->latency_bucket[i];
        jd_buf_printf(&b, "journeyd_processing_seconds_bucket{le=\"%s\"} %llu\n", bounds[i], (unsigned long long)cum);
    }
    jd_buf_printf(&b,
                  "journeyd_processing_seconds_bucket{le=\"+Inf\"} %llu\njourneyd_processing_seconds_sum %.9f\n"
                  "journeyd_processing_seconds_count %llu\n",
                  (unsigned long long)s->latency_count, s->latency_sum, (unsigned long long)s->latency_count);
    reply(req, 200, "OK", "text/plain; version=0.0.4", b.data, b.len);
    jd_buf_free(&b);
}

/* GET /v1/deadletters, POST /v1/deadletters/ID/retry */
static void handle_deadletters(jd_server *s, struct evhttp_request *req, const char *rest, enum evhttp_cmd_type cmd)
{
    if (!*rest) {
        if (cmd != EVHTTP_REQ_GET) {
            reply_error(s, req, 405, "Method Not Allowed", "method_not_allowed", "use GET");
            return;
        }
        char *json = jd_shards_dead_json(s);
        reply_json(req, 200, "OK", json);
        free(json);
        return;
    }
    char id[64];
    const char *tail = rest[0] == '/' ? strchr(rest + 1, '/') : NULL;
    if (!tail || strcmp(tail, "/retry") != 0 || (size_t)(tail - rest - 1) >= sizeof id) {
        reply_error(s, req, 404, "Not Found", "not_found", "no such resource");
        return;
    }
    if (cmd != EVHTTP_REQ_POST) {
        reply_error(s, req, 405, "Method Not Allowed", "method_not_allowed", "use POST");
        return;
    }
    memcpy(id, rest + 1, (size_t)(tail - rest - 1));
    id[tail - rest - 1] = '\0';
    int st = jd_shards_retry(s, id);
    if (st == 404)
        reply_error(s, req, 404, "Not Found", "not_found", "no such dead letter (or delivery is off)");
    else if (st == 409)
        reply_error(s, req, 409, "Conflict", "not_dead", "the action is not a dead letter");
    else
        reply_json(req, 200, "OK", "{\"success\":true}");
}

/* ---------------------------------------------------------------- routing */

static int is_event_kind(const char *k)
{
    static const char *const kinds[] = {"track", "identify", "page", "screen", "group", "alias", "batch", NULL};
    for (int i = 0; kinds[i]; i++)
        if (strcmp(k, kinds[i]) == 0)
            return 1;
    return 0;
}

static void on_request(struct evhttp_request *req, void *arg)
{
    jd_server *s = arg;
    s->requests++;
    s->last_activity_ns = jd_monotonic_ns();
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    if (!path)
        path = "/";
    if (strcmp(path, "/livez") == 0) {
        reply_json(req, 200, "OK", "{\"status\":\"ok\"}");
        return;
    }
    if (strcmp(path, "/readyz") == 0) {
        if (s->ready)
            reply_json(req, 200, "OK", "{\"status\":\"ready\"}");
        else
            reply_json(req, 503, "Service Unavailable", "{\"status\":\"not ready\"}");
        return;
    }
    if (strcmp(path, "/metrics") == 0) {
        handle_metrics(s, req);
        return;
    }
    if (strcmp(path, "/") == 0 && cmd == EVHTTP_REQ_GET) {
        handle_dashboard(req);
        return;
    }
    if (strncmp(path, "/v1/", 4) == 0 && is_event_kind(path + 4)) {
        if (cmd != EVHTTP_REQ_POST) {
            reply_error(s, req, 405, "Method Not Allowed", "method_not_allowed", "use POST");
            return;
        }
        handle_ingest(s, req, path + 4);
        return;
    }
    if (strncmp(path, "/v1/sources/", 12) == 0 && path[12]) {
        if (cmd != EVHTTP_REQ_POST) {
            reply_error(s, req, 405, "Method Not Allowed", "method_not_allowed", "use POST");
            return;
        }
        handle_source(s, req, path + 12);
        return;
    }
    int admin = strncmp(path, "/v1/users/", 10) == 0 || strcmp(path, "/v1/journeys") == 0 ||
                strncmp(path, "/v1/journeys/", 13) == 0 || strcmp(path, "/v1/admin/reload") == 0 ||
                strncmp(path, "/v1/deadletters", 15) == 0;
    if (admin) {
        if (!admin_allowed(s, req)) {
            reply_error(s, req, 401, "Unauthorized", "unauthorized", "an admin key is required");
            return;
        }
        if (strncmp(path, "/v1/deadletters", 15) == 0) {
            handle_deadletters(s, req, path + 15, cmd);
            return;
        }
        if (strcmp(path, "/v1/admin/reload") == 0) {
            if (cmd != EVHTTP_REQ_POST) {
                reply_error(s, req, 405, "Method Not Allowed", "method_not_allowed", "use POST");
                return;
            }
            char why[1024];
            if (jd_serve_reload(s, why, sizeof why)) {
                reply_error(s, req, 400, "Bad Request", "reload_failed", why);
                return;
            }
            char *json = jd_shards_json_sum(s, run_journeys, NULL);
            jd_buf_reset(&s->tmp);
            jd_buf_printf(&s->tmp, "{\"success\":true,\"loaded\":%s}", json);
            free(json);
            reply_json(req, 200, "OK", jd_buf_cstr(&s->tmp));
            return;
        }
        if (cmd != EVHTTP_REQ_GET) {
            reply_error(s, req, 405, "Method Not Allowed", "method_not_allowed", "use GET");
            return;
        }
        char *seg;
        if ((seg = segment_before(path, "/v1/users/", "/trace"))) {
            handle_lookup(s, req, seg, jd_engine_user_trace_json, "no such user", 1);
            free(seg);
        } else if ((seg = segment_before(path, "/v1/journeys/", "/funnel"))) {
            handle_funnel(s, req, seg);
            free(seg);
        } else if (strncmp(path, "/v1/users/", 10) == 0 && path[10])
            handle_lookup(s, req, path + 10, jd_engine_user_json, "no such user", 1);
        else if (strcmp(path, "/v1/journeys") == 0) {
            char *json = jd_shards_json_sum(s, run_journeys, NULL);
            reply_json(req, 200, "OK", json);
            free(json);
        } else if (strncmp(path, "/v1/journeys/", 13) == 0 && path[13]) /* "/v1/users/" is shorter */
            handle_lookup(s, req, path + 13, jd_engine_journey_json, "no such journey", 0);
        else
            reply_error(s, req, 404, "Not Found", "not_found", "no such resource");
        return;
    }
    reply_error(s, req, 404, "Not Found", "not_found", "no such resource");
}

void jd_http_routes(jd_server *s)
{
    evhttp_set_gencb(s->http, on_request, s);
}
