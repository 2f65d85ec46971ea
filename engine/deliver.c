/* deliver: action -> request through the channel's Lua formatter, channel options from
 * the j.channel spec, Standard Webhooks signatures, and the SSRF address classes.
 * Nothing here does I/O; the dispatcher (dispatch.c) sends. */
#define _POSIX_C_SOURCE 200809L
#include "deliver.h"

#include <arpa/inet.h>
#include <lauxlib.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "engine_internal.h"
#include "lua_msgpack.h"

/* ---------------------------------------------------------------- requests */

static char *dup_str(const char *s)
{
    return s ? jd_strndup(s, strlen(s)) : NULL;
}

void jd_request_free(jd_request *r)
{
    if (!r)
        return;
    free(r->url);
    free(r->method);
    for (size_t i = 0; i < r->nheaders; i++) {
        if (r->headers[i].value)
            OPENSSL_cleanse(r->headers[i].value, strlen(r->headers[i].value)); /* may be a token */
        free(r->headers[i].name);
        free(r->headers[i].value);
    }
    free(r->headers);
    free(r->body);
    free(r->mail_from);
    for (size_t i = 0; i < r->nrcpt; i++)
        free(r->rcpt[i]);
    free(r->rcpt);
    free(r->user);
    if (r->password) {
        OPENSSL_cleanse(r->password, strlen(r->password));
        free(r->password);
    }
    memset(r, 0, sizeof *r);
}

void jd_request_copy(jd_request *dst, const jd_request *src)
{
    memset(dst, 0, sizeof *dst);
    dst->smtp = src->smtp;
    dst->url = dup_str(src->url);
    dst->method = dup_str(src->method);
    if (src->nheaders) {
        dst->headers = jd_xcalloc(src->nheaders, sizeof *dst->headers);
        for (size_t i = 0; i < src->nheaders; i++) {
            dst->headers[i].name = dup_str(src->headers[i].name);
            dst->headers[i].value = dup_str(src->headers[i].value);
        }
        dst->nheaders = src->nheaders;
    }
    if (src->body) {
        dst->body = jd_strndup(src->body, src->body_len);
        dst->body_len = src->body_len;
    }
    dst->mail_from = dup_str(src->mail_from);
    if (src->nrcpt) {
        dst->rcpt = jd_xcalloc(src->nrcpt, sizeof *dst->rcpt);
        for (size_t i = 0; i < src->nrcpt; i++)
            dst->rcpt[i] = dup_str(src->rcpt[i]);
        dst->nrcpt = src->nrcpt;
    }
    dst->starttls = src->starttls;
    dst->user = dup_str(src->user);
    dst->password = dup_str(src->password);
}

/* ---------------------------------------------------------------- formatting */

typedef struct format_call {
    const msgpack_object *action;
    const char *channel;
    jd_request *out;
    jd_json_writer *jw;
} format_call;

/* A string field or NULL; a non-string is an error. Allocation happens after every
 * Lua call that could raise, or is owned by out (freed by the caller on error). */
static char *opt_field(lua_State *L, int idx, const char *k)
{
    char *s = NULL;
    int t = lua_getfield(L, idx, k);
    if (t == LUA_TSTRING) {
        size_t n;
        const char *p = lua_tolstring(L, -1, &n);
        s = jd_strndup(p, n);
    } else if (t != LUA_TNIL) {
        lua_pop(L, 1);
        luaL_error(L, "the request's %s must be a string", k);
    }
    lua_pop(L, 1);
    return s;
}

/* Runs in jd_script_call: require the formatter module, call format, copy the request. */
static int format_cf(lua_State *L)
{
    format_call *fc = lua_touserdata(L, 1);
    jd_request *r = fc->out;
    lua_getglobal(L, "require");
    lua_pushstring(L, "journey.channels.init");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "format");
    lua_pushstring(L, fc->channel);
    jd_lua_push_msgpack(L, fc->action);
    lua_call(L, 2, 1);
    int rq = lua_gettop(L);
    if (!lua_istable(L, rq))
        return luaL_error(L, "channel %s: the formatter returned no request", fc->channel);
    lua_getfield(L, rq, "smtp");
    r->smtp = lua_toboolean(L, -1);
    lua_pop(L, 1);
    r->url = opt_field(L, rq, "url");
    if (!r->url)
        return luaL_error(L, "channel %s: the request has no url", fc->channel);
    if (r->smtp) {
        r->mail_from = opt_field(L, rq, "from");
        r->user = opt_field(L, rq, "user");
        r->password = opt_field(L, rq, "password");
        lua_getfield(L, rq, "starttls");
        if (lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "try") == 0)
            r->starttls = JD_STARTTLS_TRY;
        else
            r->starttls = lua_toboolean(L, -1) ? JD_STARTTLS_REQUIRED : JD_STARTTLS_NONE;
        lua_pop(L, 1);
        lua_getfield(L, rq, "to");
        if (!lua_istable(L, -1))
            return luaL_error(L, "channel %s: the smtp request needs to = { ... }", fc->channel);
        size_t n = (size_t)lua_rawlen(L, -1);
        r->rcpt = jd_xcalloc(n ? n : 1, sizeof *r->rcpt);
        for (size_t i = 0; i < n; i++) {
            lua_rawgeti(L, -1, (lua_Integer)i + 1);
            if (lua_type(L, -1) != LUA_TSTRING)
                return luaL_error(L, "channel %s: recipient #%d is not a string", fc->channel, (int)i + 1);
            r->rcpt[r->nrcpt++] = dup_str(lua_tostring(L, -1));
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
        lua_getfield(L, rq, "data");
        size_t dn;
        const char *d = lua_tolstring(L, -1, &dn);
        if (!d)
            return luaL_error(L, "channel %s: the smtp request needs data", fc->channel);
        r->body = jd_strndup(d, dn);
        r->body_len = dn;
        lua_pop(L, 1);
        return 0;
    }
    r->method = opt_field(L, rq, "method");
    if (!r->method)
        r->method = dup_str("POST");
    lua_getfield(L, rq, "headers");
    if (lua_istable(L, -1)) {
        size_t n = (size_t)lua_rawlen(L, -1);
        r->headers = jd_xcalloc(n ? n : 1, sizeof *r->headers);
        for (size_t i = 0; i < n; i++) {
            lua_rawgeti(L, -1, (lua_Integer)i + 1);
            if (!lua_istable(L, -1))
                return luaL_error(L, "channel %s: header #%d must be { name, value }", fc->channel, (int)i + 1);
            lua_rawgeti(L, -1, 1);
            lua_rawgeti(L, -2, 2);
            const char *hn = lua_tostring(L, -2), *hv = lua_tostring(L, -1);
            if (!hn || !hv || strpbrk(hn, "\r\n:") || strpbrk(hv, "\r\n"))
                return luaL_error(L, "channel %s: header #%d must be { name, value } without line breaks", fc->channel,
                                  (int)i + 1);
            r->headers[i].name = dup_str(hn);
            r->headers[i].value = dup_str(hv);
            r->nheaders = i + 1;
            lua_pop(L, 3);
        }
    } else if (!lua_isnil(L, -1)) {
        return luaL_error(L, "channel %s: headers must be a list of { name, value }", fc->channel);
    }
    lua_pop(L, 1);
    lua_getfield(L, rq, "body");
    if (lua_type(L, -1) == LUA_TSTRING) {
        size_t bn;
        const char *b = lua_tolstring(L, -1, &bn);
        r->body = jd_strndup(b, bn);
        r->body_len = bn;
    } else if (lua_istable(L, -1)) {
        jd_buf mp, js;
        jd_buf_init(&mp);
        jd_buf_init(&js);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &mp, jd_buf_msgpack_write);
        const char *perr = NULL;
        int bad = jd_lua_pack(L, -1, &pk, &perr) || jd_json_write_msgpack(fc->jw, mp.data, mp.len, &js);
        jd_buf_free(&mp);
        if (bad) {
            jd_buf_free(&js);
            return luaL_error(L, "channel %s: the body cannot be JSON: %s", fc->channel, perr ? perr : "?");
        }
        r->body = jd_strndup(js.data ? js.data : "", js.len);
        r->body_len = js.len;
        jd_buf_free(&js);
    } else if (!lua_isnil(L, -1)) {
        return luaL_error(L, "channel %s: the body must be a string or a table", fc->channel);
    }
    lua_pop(L, 1);
    return 0;
}

int jd_engine_format_action(jd_engine *e, const char *action_json, size_t n, jd_request *out, jd_error *err)
{
    memset(out, 0, sizeof *out);
    int rc = -1;
    jd_buf mp;
    jd_buf_init(&mp);
    msgpack_zone z;
    msgpack_zone_init(&z, 2048);
    jd_json_reader *jr = jd_json_reader_new();
    jd_json_writer *jw = jd_json_writer_new();
    char perr[256], channel[256];
    msgpack_object o;
    size_t off = 0;
    if (jd_json_to_msgpack(jr, action_json, n, &mp, perr, sizeof perr)) {
        snprintf(err->text, sizeof err->text, "action is not JSON: %s", perr);
        goto done;
    }
    if (msgpack_unpack(mp.data, mp.len, &off, &z, &o) != MSGPACK_UNPACK_SUCCESS || o.type != MSGPACK_OBJECT_MAP) {
        snprintf(err->text, sizeof err->text, "action is not a JSON object");
        goto done;
    }
    channel[0] = 0;
    for (uint32_t i = 0; i < o.via.map.size; i++) {
        const msgpack_object_kv *kv = &o.via.map.ptr[i];
        if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == 7 &&
            memcmp(kv->key.via.str.ptr, "channel", 7) == 0 && kv->val.type == MSGPACK_OBJECT_STR &&
            kv->val.via.str.size < sizeof channel) {
            memcpy(channel, kv->val.via.str.ptr, kv->val.via.str.size);
            channel[kv->val.via.str.size] = 0;
        }
    }
    if (!channel[0]) {
        snprintf(err->text, sizeof err->text, "action has no channel");
        goto done;
    }
    format_call fc = {.action = &o, .channel = channel, .out = out, .jw = jw};
    lua_State *L = jd_script_L(e->script);
    int top = lua_gettop(L);
    lua_pushcfunction(L, format_cf);
    lua_pushlightuserdata(L, &fc);
    jd_script_error se = {0};
    e->stats[JD_STAT_LUA_CALLS]++;
    if (jd_script_call(e->script, 1, 0, &se)) {
        char text[700], rule[300];
        jd_script_error_text(&se, text, sizeof text);
        snprintf(rule, sizeof rule, "channel/%s/format", channel);
        jd_engine_count_error(e, rule);
        jd_engine_log(e, "error", "channel %s: format failed: %s", channel, text);
        snprintf(err->text, sizeof err->text, "%s", text);
        jd_script_error_clear(&se);
        lua_settop(L, top);
        jd_request_free(out);
        goto done;
    }
    lua_settop(L, top);
    rc = 0;
done:
    jd_json_reader_free(jr);
    jd_json_writer_free(jw);
    msgpack_zone_destroy(&z);
    jd_buf_free(&mp);
    return rc;
}

/* ---------------------------------------------------------------- channel options */

const char *jd_engine_channel_name(const jd_engine *e, size_t i)
{
    return e->defs && i < e->defs->nchannels ? e->defs->channels[i].name : NULL;
}

/* The owned form behind a jd_channel_opts (first member: the pointer we hand out). */
typedef struct opts_owned {
    jd_channel_opts o;
    char *type;
    int64_t *retry;
    char **secrets;
    size_t nsecrets;
    char **hosts;
    size_t nhosts;
} opts_owned;

void jd_channel_opts_free(jd_channel_opts *o)
{
    if (!o)
        return;
    opts_owned *w = (opts_owned *)o;
    free(w->type);
    free(w->retry);
    for (size_t i = 0; i < w->nsecrets; i++) {
        OPENSSL_cleanse(w->secrets[i], strlen(w->secrets[i]));
        free(w->secrets[i]);
    }
    free(w->secrets);
    for (size_t i = 0; i < w->nhosts; i++)
        free(w->hosts[i]);
    free(w->hosts);
    free(w);
}

typedef struct opts_call {
    const char *name;
    opts_owned *w;
} opts_call;

static int64_t duration_of(lua_State *L, int idx, const char *what)
{
    if (lua_isinteger(L, idx))
        return (int64_t)lua_tointeger(L, idx);
    int64_t ms = 0;
    const char *s = lua_tostring(L, idx);
    if (!s || jd_parse_duration(s, &ms))
        return luaL_error(L, "%s must be a duration like \"15s\" or milliseconds", what);
    return ms;
}

/* Strings of a string-or-list field into *out (owned by the caller's struct). */
static void string_list(lua_State *L, int spec, const char *k, char ***out, size_t *n)
{
    int t = lua_getfield(L, spec, k);
    if (t == LUA_TSTRING) {
        *out = jd_xcalloc(1, sizeof **out);
        (*out)[(*n)++] = dup_str(lua_tostring(L, -1));
    } else if (t == LUA_TTABLE) {
        size_t len = (size_t)lua_rawlen(L, -1);
        *out = jd_xcalloc(len ? len : 1, sizeof **out);
        for (size_t i = 0; i < len; i++) {
            lua_rawgeti(L, -1, (lua_Integer)i + 1);
            if (lua_type(L, -1) != LUA_TSTRING)
                luaL_error(L, "%s: item %d is not a string", k, (int)i + 1);
            (*out)[(*n)++] = dup_str(lua_tostring(L, -1));
            lua_pop(L, 1);
        }
    } else if (t != LUA_TNIL) {
        luaL_error(L, "%s must be a string or a list of strings", k);
    }
    lua_pop(L, 1);
}

static int opts_cf(lua_State *L)
{
    opts_call *oc = lua_touserdata(L, 1);
    opts_owned *w = oc->w;
    jd_channel_opts *o = &w->o;
    lua_getglobal(L, "require");
    lua_pushstring(L, "journey");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "_registry");
    lua_call(L, 0, 1);
    lua_getfield(L, -1, "channels");
    if (lua_getfield(L, -1, oc->name) != LUA_TTABLE)
        return luaL_error(L, "no channel named '%s'", oc->name);
    int spec = lua_gettop(L);
    lua_getfield(L, spec, "type");
    w->type = dup_str(lua_tostring(L, -1));
    lua_pop(L, 1);
    if (lua_getfield(L, spec, "concurrency") != LUA_TNIL) {
        lua_Integer c = lua_tointeger(L, -1);
        if (c < 1 || c > 10000)
            return luaL_error(L, "channel %s: concurrency must be an integer 1..10000", oc->name);
        o->concurrency = (uint32_t)c;
    }
    lua_pop(L, 1);
    if (lua_getfield(L, spec, "timeout") != LUA_TNIL)
        o->timeout_ms = duration_of(L, -1, "timeout");
    lua_pop(L, 1);
    if (lua_getfield(L, spec, "jitter") != LUA_TNIL) {
        o->jitter = lua_tonumber(L, -1);
        if (o->jitter == 0)
            o->jitter = -1; /* an explicit 0: none */
    }
    lua_pop(L, 1);
    if (lua_getfield(L, spec, "retry") == LUA_TTABLE) {
        size_t n = (size_t)lua_rawlen(L, -1);
        w->retry = jd_xcalloc(n ? n : 1, sizeof *w->retry);
        for (size_t i = 0; i < n; i++) {
            lua_rawgeti(L, -1, (lua_Integer)i + 1);
            w->retry[i] = duration_of(L, -1, "retry");
            o->nretry = i + 1;
            lua_pop(L, 1);
        }
        o->no_retry = n == 0;
    } else if (!lua_isnil(L, -1)) {
        return luaL_error(L, "channel %s: retry must be a list of durations", oc->name);
    }
    lua_pop(L, 1);
    string_list(L, spec, "secret", &w->secrets, &w->nsecrets);
    if (!w->nsecrets)
        string_list(L, spec, "secrets", &w->secrets, &w->nsecrets);
    string_list(L, spec, "allow_hosts", &w->hosts, &w->nhosts);
    static const struct {
        const char *k;
        unsigned bit;
    } flags[] = {{"allow_private", JD_ALLOW_PRIVATE},
                 {"allow_loopback", JD_ALLOW_LOOPBACK},
                 {"allow_link_local", JD_ALLOW_LINK_LOCAL}};
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
        lua_getfield(L, spec, flags[i].k);
        if (lua_toboolean(L, -1))
            o->allow |= flags[i].bit;
        lua_pop(L, 1);
    }
    return 0;
}

jd_channel_opts *jd_engine_channel_opts(jd_engine *e, const char *name, jd_error *err)
{
    opts_owned *w = jd_xcalloc(1, sizeof *w);
    opts_call oc = {.name = name, .w = w};
    lua_State *L = jd_script_L(e->script);
    int top = lua_gettop(L);
    lua_pushcfunction(L, opts_cf);
    lua_pushlightuserdata(L, &oc);
    jd_script_error se = {0};
    if (jd_script_call(e->script, 1, 0, &se)) {
        jd_script_error_text(&se, err->text, sizeof err->text);
        jd_script_error_clear(&se);
        lua_settop(L, top);
        jd_channel_opts_free(&w->o);
        return NULL;
    }
    lua_settop(L, top);
    w->o.type = w->type;
    w->o.retry_ms = w->retry;
    w->o.secrets = (const char *const *)w->secrets;
    w->o.nsecrets = w->nsecrets;
    w->o.allow_hosts = (const char *const *)w->hosts;
    w->o.nallow_hosts = w->nhosts;
    /* a bad secret is a configuration error now, not a failed delivery later */
    char sig[128];
    for (size_t i = 0; i < w->nsecrets; i++) {
        const char *one[1] = {w->secrets[i]};
        if (jd_webhook_sign(one, 1, "x", 0, "", 0, sig, sizeof sig) < 0) {
            snprintf(err->text, sizeof err->text, "channel %s: secret #%zu is not \"whsec_<base64>\"", name, i + 1);
            jd_channel_opts_free(&w->o);
            return NULL;
        }
    }
    return &w->o;
}

/* ---------------------------------------------------------------- signing */

/* Base64 decoding of the part after "whsec_" into key (up to cap <= 128 bytes). -1: bad. */
static int secret_key(const char *secret, unsigned char *key, size_t cap)
{
    if (strncmp(secret, "whsec_", 6) == 0)
        secret += 6;
    size_t n = strlen(secret);
    char padded[4 * 128 / 3 + 8];
    if (n == 0 || n % 4 == 1 || n + 3 >= sizeof padded || (n + 3) / 4 * 3 > cap)
        return -1;
    memcpy(padded, secret, n);
    while (n % 4)
        padded[n++] = '=';
    padded[n] = 0;
    int len = EVP_DecodeBlock(key, (const unsigned char *)padded, (int)n);
    for (size_t i = n; len > 0 && i > 0 && padded[i - 1] == '='; i--)
        len--; /* EVP_DecodeBlock counts padding as zero bytes */
    OPENSSL_cleanse(padded, sizeof padded);
    return len;
}

int jd_webhook_sign(const char *const *secrets, size_t nsecrets, const char *id, int64_t ts, const char *body,
                    size_t body_len, char *out, size_t outlen)
{
    char prefix[160];
    int pn = snprintf(prefix, sizeof prefix, "%s.%lld.", id, (long long)ts);
    if (pn < 0 || (size_t)pn >= sizeof prefix)
        return -1;
    /* the signed content, id.timestamp.body, in one buffer for the one-shot HMAC */
    unsigned char small[4096];
    size_t mlen = (size_t)pn + body_len;
    unsigned char *msg = mlen <= sizeof small ? small : jd_xmalloc(mlen);
    memcpy(msg, prefix, (size_t)pn);
    if (body_len)
        memcpy(msg + pn, body, body_len);
    size_t used = 0;
    int rc = -1;
    unsigned char key[128];
    for (size_t i = 0; i < nsecrets; i++) {
        int kn = secret_key(secrets[i], key, sizeof key);
        if (kn <= 0)
            goto done;
        unsigned char mac[EVP_MAX_MD_SIZE];
        unsigned int mn = 0;
        if (!HMAC(EVP_sha256(), key, kn, msg, mlen, mac, &mn))
            goto done;
        /* "v1," + base64, space separated, NUL */
        if (used + (i ? 1 : 0) + 3 + 4 * ((mn + 2) / 3) + 1 > outlen)
            goto done;
        if (i)
            out[used++] = ' ';
        memcpy(out + used, "v1,", 3);
        used += 3;
        used += (size_t)EVP_EncodeBlock((unsigned char *)out + used, mac, (int)mn);
    }
    if (used < outlen)
        out[used] = 0;
    rc = (int)used;
done:
    OPENSSL_cleanse(key, sizeof key);
    if (msg != small)
        free(msg);
    return rc;
}

/* ---------------------------------------------------------------- SSRF guard */

static jd_addr_class classify_v4(uint32_t a)
{
    uint32_t b1 = a >> 24, b2 = (a >> 16) & 255;
    if (b1 == 0)
        return JD_ADDR_UNSPECIFIED;
    if (b1 == 10 || (b1 == 172 && (b2 & 0xf0) == 16) || (b1 == 192 && b2 == 168) || (b1 == 198 && (b2 & 0xfe) == 18))
        return JD_ADDR_PRIVATE;
    if (b1 == 100 && (b2 & 0xc0) == 64)
        return JD_ADDR_CGNAT;
    if (b1 == 127)
        return JD_ADDR_LOOPBACK;
    if (b1 == 169 && b2 == 254)
        return JD_ADDR_LINK_LOCAL;
    if (b1 >= 224) /* multicast, 240/4, broadcast */
        return JD_ADDR_RESERVED;
    if ((a & 0xffffff00u) == 0xc0000000u || (a & 0xffffff00u) == 0xc0000200u || (a & 0xffffff00u) == 0xc6336400u ||
        (a & 0xffffff00u) == 0xcb007100u) /* 192.0.0/24, documentation nets */
        return JD_ADDR_RESERVED;
    return JD_ADDR_PUBLIC;
}

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

jd_addr_class jd_addr_classify(const struct sockaddr *sa, socklen_t len)
{
    if (!sa)
        return JD_ADDR_RESERVED;
    if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        return classify_v4(ntohl(in->sin_addr.s_addr));
    }
    if (sa->sa_family != AF_INET6 || len < (socklen_t)sizeof(struct sockaddr_in6))
        return JD_ADDR_RESERVED;
    const unsigned char *b = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
    static const unsigned char zero[16];
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    static const unsigned char nat64[12] = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
    if (memcmp(b, zero, 16) == 0)
        return JD_ADDR_UNSPECIFIED;
    if (memcmp(b, zero, 15) == 0 && b[15] == 1)
        return JD_ADDR_LOOPBACK;
    if (memcmp(b, mapped, 12) == 0 || memcmp(b, zero, 12) == 0 || memcmp(b, nat64, 12) == 0)
        return classify_v4(be32(b + 12));
    if (b[0] == 0x20 && b[1] == 0x02) /* 6to4 carries an IPv4 address in bits 16..47 */
        return classify_v4(be32(b + 2));
    if ((b[0] & 0xfe) == 0xfc || (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0)) /* ULA, old site-local */
        return JD_ADDR_PRIVATE;
    if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80)
        return JD_ADDR_LINK_LOCAL;
    if (b[0] == 0xff)
        return JD_ADDR_RESERVED;
    return JD_ADDR_PUBLIC;
}

const char *jd_addr_class_name(jd_addr_class c)
{
    switch (c) {
    case JD_ADDR_PUBLIC: return "public";
    case JD_ADDR_PRIVATE: return "private";
    case JD_ADDR_CGNAT: return "carrier-grade NAT";
    case JD_ADDR_LOOPBACK: return "loopback";
    case JD_ADDR_LINK_LOCAL: return "link-local";
    case JD_ADDR_UNSPECIFIED: return "unspecified";
    case JD_ADDR_RESERVED: return "reserved";
    }
    return "?";
}

jd_addr_class jd_addr_check(const struct sockaddr *sa, socklen_t len, unsigned allow)
{
    jd_addr_class c = jd_addr_classify(sa, len);
    switch (c) {
    case JD_ADDR_PUBLIC: return JD_ADDR_PUBLIC;
    case JD_ADDR_PRIVATE:
    case JD_ADDR_CGNAT: return (allow & JD_ALLOW_PRIVATE) ? JD_ADDR_PUBLIC : c;
    case JD_ADDR_LOOPBACK: return (allow & JD_ALLOW_LOOPBACK) ? JD_ADDR_PUBLIC : c;
    case JD_ADDR_LINK_LOCAL: return (allow & JD_ALLOW_LINK_LOCAL) ? JD_ADDR_PUBLIC : c;
    default: return c;
    }
}

int jd_host_allowed(const char *const *allow, size_t n, const char *host)
{
    if (n == 0)
        return 1;
    if (!host)
        return 0;
    size_t hn = strlen(host);
    while (hn && host[hn - 1] == '.') /* "example.com." is example.com */
        hn--;
    for (size_t i = 0; i < n; i++) {
        const char *a = allow[i];
        size_t an = strlen(a);
        if (an > 2 && a[0] == '*' && a[1] == '.') {
            /* ".example.com" must end the host, with at least one label before it */
            if (hn > an - 1 && strncasecmp(host + hn - (an - 1), a + 1, an - 1) == 0)
                return 1;
        } else if (an == hn && strncasecmp(host, a, hn) == 0) {
            return 1;
        }
    }
    return 0;
}
