/* deliver: what the dispatcher needs from the engine and from crypto, without any I/O —
 * formats an action into a request with the channel's Lua formatter (in the engine's
 * sandbox), reads a channel's delivery options from its j.channel spec, signs webhooks
 * per Standard Webhooks, and classifies addresses and hosts for the SSRF guard.
 * Uses engine_internal, script, json, lua_msgpack, OpenSSL libcrypto. */
#ifndef JD_DELIVER_H
#define JD_DELIVER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "../include/journeyd.h"

/* ---------------------------------------------------------------- requests */

typedef struct jd_request_header {
    char *name;
    char *value;
} jd_request_header;

enum { JD_STARTTLS_NONE, JD_STARTTLS_REQUIRED, JD_STARTTLS_TRY };

/* One request to send, as a formatter made it. Owns every string; jd_request_free. */
typedef struct jd_request {
    int smtp;     /* 0: HTTP; 1: SMTP (the fields below the line) */
    char *url;    /* http(s):// or smtp(s):// */
    char *method; /* HTTP: "POST" unless the formatter said otherwise */
    jd_request_header *headers;
    size_t nheaders;
    char *body; /* HTTP body, or the SMTP message (RFC 5322 text, CRLF lines) */
    size_t body_len;
    /* ---- SMTP */
    char *mail_from;
    char **rcpt;
    size_t nrcpt;
    int starttls;          /* JD_STARTTLS_* */
    char *user, *password; /* may be NULL */
} jd_request;

void jd_request_free(jd_request *r);
/* A deep copy of src into dst (dst is overwritten, not freed). */
void jd_request_copy(jd_request *dst, const jd_request *src);

/* Formats an action (its JSON form, jd_action_json: time, user, journey, stage,
 * channel, payload, id) with its channel's formatter: journey.channels.init.format
 * in the engine's Lua state, protected, under the per-call time and memory limits.
 * A table body is encoded as JSON (keys sorted). Returns 0 and fills out (free with
 * jd_request_free), or -1 with err set ("channel x: ..."); a formatter that fails is
 * counted like any Lua error (rule "channel/<name>/format"). */
int jd_engine_format_action(jd_engine *e, const char *action_json, size_t n, jd_request *out, jd_error *err);

/* ---------------------------------------------------------------- channel options */

/* Address classes refused unless allowed (jd_addr_check). */
enum {
    JD_ALLOW_PRIVATE = 1,    /* 10/8, 172.16/12, 192.168/16, fc00::/7, 100.64/10 */
    JD_ALLOW_LOOPBACK = 2,   /* 127/8, ::1 */
    JD_ALLOW_LINK_LOCAL = 4, /* 169.254/16 (cloud metadata lives here), fe80::/10 */
};

/* Delivery settings of one channel. The dispatcher copies what it keeps. */
typedef struct jd_channel_opts {
    const char *type;           /* "webhook", "slack", ... (webhook: id/timestamp headers) */
    uint32_t concurrency;       /* requests in flight at most; 0: 16 */
    int64_t timeout_ms;         /* per request; 0: 15 s */
    const int64_t *retry_ms;    /* the retry schedule (delays after attempt 1, 2, ...); */
    size_t nretry;              /* NULL/0: 5s 5m 30m 2h 5h 10h 14h 20h 24h */
    int no_retry;               /* 1: an explicitly empty schedule (first failure is final) */
    double jitter;              /* a delay grows by up to this fraction; < 0: none; 0: 0.2 */
    const char *const *secrets; /* "whsec_<base64>" (or bare base64); several: rotation */
    size_t nsecrets;
    const char *const *allow_hosts; /* empty: any host; "*.example.com" matches subdomains */
    size_t nallow_hosts;
    unsigned allow; /* JD_ALLOW_* */
} jd_channel_opts;

/* The channels the script declares: the i-th name, NULL past the end. Valid until the
 * next reload. */
const char *jd_engine_channel_name(const jd_engine *e, size_t i);

/* A channel's options read from its j.channel spec: type, concurrency, timeout ("15s"
 * or ms), retry = { "5s", "1m", ... }, jitter, secret / secrets, allow_hosts,
 * allow_private, allow_loopback, allow_link_local. Returns an owned struct (one
 * allocation set; free with jd_channel_opts_free, which wipes the secrets), or NULL
 * with err set. */
jd_channel_opts *jd_engine_channel_opts(jd_engine *e, const char *name, jd_error *err);
void jd_channel_opts_free(jd_channel_opts *o);

/* ---------------------------------------------------------------- signing */

/* Standard Webhooks: for each secret, "v1," + base64(HMAC-SHA256(key, id "." ts "."
 * body)), space separated, into out. key is the base64 decoding of the secret after
 * an optional "whsec_" prefix. Returns the length written, or -1 (a secret that is not
 * base64, or out too small). Never logs or returns a secret. */
int jd_webhook_sign(const char *const *secrets, size_t nsecrets, const char *id, int64_t ts, const char *body,
                    size_t body_len, char *out, size_t outlen);

/* ---------------------------------------------------------------- SSRF guard */

typedef enum jd_addr_class {
    JD_ADDR_PUBLIC,
    JD_ADDR_PRIVATE,     /* RFC 1918, fc00::/7 */
    JD_ADDR_CGNAT,       /* 100.64.0.0/10 */
    JD_ADDR_LOOPBACK,    /* 127/8, ::1 */
    JD_ADDR_LINK_LOCAL,  /* 169.254/16, fe80::/10 */
    JD_ADDR_UNSPECIFIED, /* 0.0.0.0/8, :: */
    JD_ADDR_RESERVED,    /* multicast, 240/4, broadcast, unknown families */
} jd_addr_class;

/* Classifies an address; IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d) and
 * NAT64 (64:ff9b::/96) IPv6 forms are classified as the IPv4 address they carry. */
jd_addr_class jd_addr_classify(const struct sockaddr *sa, socklen_t len);
const char *jd_addr_class_name(jd_addr_class c);
/* 0 when the address may be connected to under allow (JD_ALLOW_*), else the class
 * that refuses it. Unspecified and reserved addresses are always refused. */
jd_addr_class jd_addr_check(const struct sockaddr *sa, socklen_t len, unsigned allow);
/* 1 when host is allowed by the list (empty list: every host). Case-insensitive;
 * "*.example.com" matches any subdomain of example.com (not example.com itself). */
int jd_host_allowed(const char *const *allow, size_t n, const char *host);

#endif
