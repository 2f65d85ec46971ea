/* source: CRM webhooks through j.source — builds the request table, runs the source's
 * verify(req) and map(body, req) in the sandbox, and turns what map returns (an event,
 * a list of events, or nil) into records processed like any other input. An event
 * without messageId is named from the request body and its position, so a webhook
 * delivered twice is processed once. Uses engine_internal, lua_msgpack, event, json. */
#include <lauxlib.h>
#include <stdio.h>
#include <string.h>

#include "engine_internal.h"
#include "lua_msgpack.h"

int jd_engine_source_verifies(const jd_engine *e, const char *name)
{
    const jd_source *s = jd_defs_source(e->defs, name);
    return s && s->verify_ref != LUA_NOREF;
}

/* Pushes { method, uri, path, query, body, headers = {lowercase = value}, time,
 * json = parsed body or nil }. */
static void push_request(jd_engine *e, lua_State *L, const jd_source_request *rq)
{
    lua_createtable(L, 0, 8);
    lua_pushstring(L, rq->method ? rq->method : "POST");
    lua_setfield(L, -2, "method");
    const char *uri = rq->uri ? rq->uri : "/";
    lua_pushstring(L, uri);
    lua_setfield(L, -2, "uri");
    const char *q = strchr(uri, '?');
    lua_pushlstring(L, uri, q ? (size_t)(q - uri) : strlen(uri));
    lua_setfield(L, -2, "path");
    lua_pushstring(L, q ? q + 1 : "");
    lua_setfield(L, -2, "query");
    lua_pushlstring(L, rq->body ? rq->body : "", rq->body_len);
    lua_setfield(L, -2, "body");
    lua_createtable(L, 0, (int)rq->nheaders);
    for (size_t i = 0; i < rq->nheaders; i++) {
        char name[256];
        size_t n = strlen(rq->headers[i].name);
        if (n >= sizeof name)
            continue;
        for (size_t k = 0; k <= n; k++) {
            char c = rq->headers[i].name[k];
            name[k] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
        }
        lua_pushstring(L, rq->headers[i].value);
        lua_setfield(L, -2, name);
    }
    lua_setfield(L, -2, "headers");
    lua_pushinteger(L, (lua_Integer)jd_clock_now(&e->clock));
    lua_setfield(L, -2, "time");
    /* the body as JSON, when it is JSON */
    jd_buf_reset(&e->scratch);
    char err[256];
    if (rq->body_len && jd_json_to_msgpack(e->jr, rq->body, rq->body_len, &e->scratch, err, sizeof err) == 0) {
        msgpack_zone_clear(&e->in_zone);
        msgpack_object o;
        size_t off = 0;
        if (msgpack_unpack(e->scratch.data, e->scratch.len, &off, &e->in_zone, &o) == MSGPACK_UNPACK_SUCCESS) {
            jd_lua_push_msgpack(L, &o);
            lua_setfield(L, -2, "json");
        }
    }
}

static int lua_fail(jd_engine *e, jd_source_result *res, const char *what, const jd_source *src, jd_script_error *se)
{
    char text[400];
    jd_script_error_text(se, text, sizeof text);
    char rule[300];
    snprintf(rule, sizeof rule, "source/%s/%s", src->name, what);
    jd_engine_count_error(e, rule);
    jd_engine_log(e, "error", "source %s: %s failed: %s%s%s", src->name, what, text, se->traceback[0] ? "\n" : "",
                  se->traceback);
    jd_script_error_clear(se);
    res->status = 500;
    snprintf(res->error, sizeof res->error, "source %s: %s failed: %s", src->name, what, text);
    return -1;
}

/* Processes the event table at the top of the stack; index names it when it has no
 * messageId. */
static void map_one(jd_engine *e, lua_State *L, const jd_source *src, const jd_source_request *rq, uint64_t body_hash,
                    int index, jd_source_result *res)
{
    jd_buf *rec = &e->trec;
    jd_buf_reset(&e->keybuf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &e->keybuf, jd_buf_msgpack_write);
    const char *perr = NULL;
    char err[300];
    if (!lua_istable(L, -1)) {
        snprintf(err, sizeof err, "item %d: map must return event tables", index);
        goto bad;
    }
    if (jd_lua_pack(L, -1, &pk, &perr)) {
        snprintf(err, sizeof err, "item %d: %s", index, perr);
        goto bad;
    }
    msgpack_zone z;
    msgpack_zone_init(&z, 2048);
    msgpack_object o;
    size_t off = 0;
    if (msgpack_unpack(e->keybuf.data, e->keybuf.len, &off, &z, &o) != MSGPACK_UNPACK_SUCCESS) {
        msgpack_zone_destroy(&z);
        snprintf(err, sizeof err, "item %d: cannot be read back (nested too deep?)", index);
        goto bad;
    }
    char id[96];
    snprintf(id, sizeof id, "source:%s:%016llx:%d", src->name, (unsigned long long)body_hash, index);
    jd_norm_opts no = {.default_ts = rq->received_ms > 0 ? rq->received_ms : jd_clock_now(&e->clock),
                       .default_id = id,
                       .received_ms = rq->received_ms};
    jd_buf_reset(rec);
    char nerr[256];
    int rc = jd_event_normalize_ex(&o, &no, rec, nerr, sizeof nerr);
    msgpack_zone_destroy(&z);
    if (rc) {
        snprintf(err, sizeof err, "item %d: %s", index, nerr);
        goto bad;
    }
    /* the record lives in trec, which processing reuses for timers: copy it */
    jd_buf copy;
    jd_buf_init(&copy);
    jd_buf_append(&copy, rec->data, rec->len);
    jd_error je;
    rc = rq->emit ? rq->emit(copy.data, copy.len, rq->emit_ud) : jd_engine_process(e, copy.data, copy.len, &je);
    if (rc == 0)
        res->accepted++;
    else
        res->rejected++;
    jd_buf_free(&copy);
    return;
bad:
    res->rejected++;
    if (!res->error[0])
        snprintf(res->error, sizeof res->error, "%s", err);
    jd_engine_log(e, "warn", "source %s: %s", src->name, err);
}

int jd_engine_source(jd_engine *e, const char *name, const jd_source_request *rq, jd_source_result *res)
{
    memset(res, 0, sizeof *res);
    const jd_source *src = jd_defs_source(e->defs, name);
    if (!src) {
        res->status = 404;
        snprintf(res->error, sizeof res->error, "no source named '%s'", name);
        return -1;
    }
    lua_State *L = jd_script_L(e->script);
    int top = lua_gettop(L);
    push_request(e, L, rq);
    int req = lua_gettop(L);
    jd_script_error se = {0};
    if (src->verify_ref != LUA_NOREF) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, src->verify_ref);
        lua_pushvalue(L, req);
        e->stats[JD_STAT_LUA_CALLS]++;
        if (jd_script_call(e->script, 1, 2, &se)) {
            lua_settop(L, top);
            return lua_fail(e, res, "verify", src, &se);
        }
        if (!lua_toboolean(L, -2)) {
            res->status = 401;
            const char *why = lua_tostring(L, -1);
            snprintf(res->error, sizeof res->error, "verification failed: %s", why ? why : "rejected");
            lua_settop(L, top);
            return -1;
        }
        res->verified = 1;
        lua_pop(L, 2);
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, src->map_ref);
    lua_getfield(L, req, "json");
    lua_pushvalue(L, req);
    e->stats[JD_STAT_LUA_CALLS]++;
    if (jd_script_call(e->script, 2, 1, &se)) {
        lua_settop(L, top);
        return lua_fail(e, res, "map", src, &se);
    }
    uint64_t body_hash = jd_hash(rq->body ? rq->body : "", rq->body_len, 0x736f75726365ULL);
    int out = lua_gettop(L);
    if (lua_istable(L, out)) {
        lua_Integer n = (lua_Integer)lua_rawlen(L, out);
        lua_getfield(L, out, "type");
        int single = !lua_isnil(L, -1) || n == 0;
        lua_pop(L, 1);
        if (single) {
            lua_pushvalue(L, out);
            map_one(e, L, src, rq, body_hash, 0, res);
            lua_pop(L, 1);
        } else {
            for (lua_Integer i = 1; i <= n; i++) {
                lua_rawgeti(L, out, i);
                map_one(e, L, src, rq, body_hash, (int)i - 1, res);
                lua_pop(L, 1);
            }
        }
    } else if (!lua_isnil(L, out)) {
        res->rejected++;
        snprintf(res->error, sizeof res->error, "map must return an event, a list of events or nil");
    }
    lua_settop(L, top);
    res->status = res->accepted == 0 && res->rejected > 0 ? 400 : 200;
    return res->status == 200 ? 0 : -1;
}
