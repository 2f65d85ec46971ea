/* lua_ctx: the `ctx` object hooks receive, and the C half of the journey module
 * ("journey.core"). ctx methods record effects in the engine's jd_effects; the
 * processor applies them only when the hook returns without error.
 * Uses engine_internal, lua_msgpack, clock. */
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"
#include "lua_msgpack.h"

#define CTX_MT "journey.ctx"

/* The ctx userdata. anchor == &ctx_anchor tells a ctx from any other userdata of the
 * same size without a metatable lookup (no other userdata holds this address). */
static const char ctx_anchor;

/* Trait names as Lua strings, kept from one ctx.user to the next: every profile has the
 * same few, and pushing a kept string skips hashing and interning it again. A small
 * direct-mapped cache; the strings live in ctx_field's upvalue 2 (a table, slot + 1). */
#define KEYC 64
#define KEYC_MAX 31

typedef struct ctx_key {
    uint8_t n; /* 0: empty */
    char s[KEYC_MAX];
} ctx_key;

typedef struct ctx_ud {
    jd_engine *e;
    const char *anchor;
    uint64_t call; /* the call it belongs to (jd_call.id); stale once that returns */
    ctx_key keys[KEYC];
} ctx_ud;

/* ---------------------------------------------------------------- effects */

void jd_effects_reset(jd_effects *fx)
{
    fx->nsends = 0;
    jd_buf_reset(&fx->payloads);
    jd_buf_reset(&fx->sets);
    fx->nsets = 0;
    fx->score = 0;
    jd_buf_reset(&fx->segops);
    fx->go = -1;
    fx->exit = 0;
    jd_buf_reset(&fx->logs);
}

void jd_effects_free(jd_effects *fx)
{
    free(fx->sends);
    jd_buf_free(&fx->payloads);
    jd_buf_free(&fx->sets);
    jd_buf_free(&fx->segops);
    jd_buf_free(&fx->logs);
}

/* ---------------------------------------------------------------- ctx */

static ctx_ud *to_ctx(lua_State *L)
{
    ctx_ud *u = lua_type(L, 1) == LUA_TUSERDATA && lua_rawlen(L, 1) == sizeof *u ? lua_touserdata(L, 1) : NULL;
    return u && u->anchor == &ctx_anchor ? u : luaL_checkudata(L, 1, CTX_MT); /* the latter raises */
}

static jd_engine *live(lua_State *L, int writes)
{
    ctx_ud *u = to_ctx(L);
    jd_engine *e = u->e;
    if (u->call != e->call.id)
        luaL_error(L, "this ctx belongs to a hook that has returned");
    if (writes && e->call.readonly)
        luaL_error(L, "a 'when' predicate cannot take actions");
    return e;
}

/* ctx:send's options: { window = table | false, cap = table | false }. */
static void send_options(jd_engine *e, lua_State *L, int idx, jd_send *s)
{
    if (!lua_istable(L, idx))
        luaL_error(L, "send: options must be a table { window = ..., cap = ... }");
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "";
        if (strcmp(k, "window") && strcmp(k, "cap"))
            luaL_error(L, "send: unknown option '%s' (window, cap)", k);
        lua_pop(L, 1);
    }
    int t = lua_getfield(L, idx, "window");
    if (t == LUA_TBOOLEAN && !lua_toboolean(L, -1))
        s->has_window = 1; /* days == 0: no window, whatever the channel says */
    else if (t != LUA_TNIL) {
        jd_lua_window(e, L, -1, &s->window, "send");
        s->has_window = 1;
    }
    lua_pop(L, 1);
    t = lua_getfield(L, idx, "cap");
    if (t == LUA_TBOOLEAN && !lua_toboolean(L, -1))
        s->has_cap = 1; /* max == 0: no cap */
    else if (t != LUA_TNIL) {
        jd_lua_cap(L, -1, &s->cap, "send");
        s->has_cap = 1;
    }
    lua_pop(L, 1);
}

/*** @method ctx:send(channel, payload, options)
 * Decides an action on a declared channel. payload is a table (sent as JSON) or a
 * string. Delivered after the hook returns without error. options (optional):
 * { window = {...} | false, cap = {...} | false } override the channel's. */
static int ctx_send(lua_State *L)
{
    jd_engine *e = live(L, 1);
    size_t n;
    const char *ch = luaL_checklstring(L, 2, &n);
    const jd_channel *c = jd_defs_channel(e->defs, ch, n);
    if (!c)
        return luaL_error(L, "send: unknown channel '%s' (declare it with j.channel)", ch);
    if (!lua_isnoneornil(L, 3) && !lua_istable(L, 3) && lua_type(L, 3) != LUA_TSTRING)
        return luaL_error(L, "send: payload must be a table or a string");
    jd_effects *fx = &e->fx;
    size_t off = fx->payloads.len;
    msgpack_packer pk;
    msgpack_packer_init(&pk, &fx->payloads, jd_buf_msgpack_write);
    const char *err = NULL;
    if (lua_isnoneornil(L, 3)) {
        msgpack_pack_map(&pk, 0);
    } else if (jd_lua_pack(L, 3, &pk, &err)) {
        fx->payloads.len = off;
        return luaL_error(L, "send: payload: %s", err);
    }
    jd_send snd = {.channel = c->index, .off = off, .len = fx->payloads.len - off};
    if (!lua_isnoneornil(L, 4))
        send_options(e, L, 4, &snd); /* an error fails the hook: none of its effects apply */
    if (fx->nsends == fx->capsends) {
        fx->capsends = fx->capsends ? fx->capsends * 2 : 8;
        fx->sends = jd_xrealloc(fx->sends, fx->capsends * sizeof *fx->sends);
    }
    fx->sends[fx->nsends++] = snd;
    return 0;
}

/*** @method ctx:set(name, value) | ctx:set{ name = value, ... }
 * Sets profile traits (nil removes). Takes effect when the hook returns. */
static int ctx_set(lua_State *L)
{
    jd_engine *e = live(L, 1);
    jd_effects *fx = &e->fx;
    msgpack_packer pk;
    msgpack_packer_init(&pk, &fx->sets, jd_buf_msgpack_write);
    const char *err = NULL;
    size_t off = fx->sets.len;
    if (lua_istable(L, 2)) {
        lua_pushnil(L);
        while (lua_next(L, 2)) {
            if (lua_type(L, -2) != LUA_TSTRING) {
                fx->sets.len = off;
                return luaL_error(L, "set: trait names must be strings");
            }
            size_t kn;
            const char *k = lua_tolstring(L, -2, &kn);
            jd_mp_pack_str(&pk, k, kn);
            if (jd_lua_pack(L, -1, &pk, &err)) {
                fx->sets.len = off;
                return luaL_error(L, "set %s: %s", k, err);
            }
            fx->nsets++;
            lua_pop(L, 1);
        }
        return 0;
    }
    size_t kn;
    const char *k = luaL_checklstring(L, 2, &kn);
    jd_mp_pack_str(&pk, k, kn);
    if (jd_lua_pack(L, 3, &pk, &err)) {
        fx->sets.len = off;
        return luaL_error(L, "set %s: %s", k, err);
    }
    fx->nsets++;
    return 0;
}

/*** @method ctx:score(delta)
 * Adds delta (may be negative) to the person's score. */
static int ctx_score(lua_State *L)
{
    jd_engine *e = live(L, 1);
    e->fx.score += luaL_checknumber(L, 2);
    return 0;
}

static int segop(lua_State *L, char op)
{
    jd_engine *e = live(L, 1);
    size_t n;
    const char *s = luaL_checklstring(L, 2, &n);
    if (n == 0 || memchr(s, '\0', n))
        return luaL_error(L, "segment names must be non-empty text");
    jd_buf_putc(&e->fx.segops, op);
    jd_buf_append(&e->fx.segops, s, n);
    jd_buf_putc(&e->fx.segops, '\0');
    return 0;
}

/*** @method ctx:segment_add(name) */
static int ctx_segment_add(lua_State *L)
{
    return segop(L, '+');
}
/*** @method ctx:segment_remove(name) */
static int ctx_segment_remove(lua_State *L)
{
    return segop(L, '-');
}

/*** @method ctx:go(stage)
 * Moves this journey instance to a stage after the hook returns. */
static int ctx_go(lua_State *L)
{
    jd_engine *e = live(L, 1);
    const char *s = luaL_checkstring(L, 2);
    const jd_journey *j = e->call.journey;
    if (!j || !e->call.inst)
        return luaL_error(L, "go: only inside a journey");
    for (size_t i = 0; i < j->nstages; i++) {
        if (strcmp(j->stages[i].name, s) == 0) {
            e->fx.go = (int)i;
            e->fx.exit = 0;
            return 0;
        }
    }
    return luaL_error(L, "go: journey '%s' has no stage '%s'", j->name, s);
}

/*** @method ctx:exit()
 * Leaves this journey (not converted) after the hook returns. */
static int ctx_exit(lua_State *L)
{
    jd_engine *e = live(L, 1);
    if (!e->call.journey || !e->call.inst)
        return luaL_error(L, "exit: only inside a journey");
    e->fx.exit = 1;
    e->fx.go = -1;
    return 0;
}

/*** @method ctx:log(...)
 * Writes a line to the engine log (and the decision trace). */
static int ctx_log(lua_State *L)
{
    jd_engine *e = live(L, 0);
    int n = lua_gettop(L);
    for (int i = 2; i <= n; i++) {
        size_t len;
        const char *s = luaL_tolstring(L, i, &len);
        if (i > 2)
            jd_buf_putc(&e->fx.logs, ' ');
        jd_buf_append(&e->fx.logs, s, len);
        lua_pop(L, 1);
    }
    jd_buf_putc(&e->fx.logs, '\0');
    return 0;
}

/* Pushes a map key: from the cache when it holds these bytes. Runs in ctx_field. */
static void push_key(lua_State *L, ctx_ud *c, const char *s, size_t n)
{
    if (n == 0 || n > KEYC_MAX) {
        lua_pushlstring(L, s, n);
        return;
    }
    size_t h = (n * 31 + (unsigned char)s[0] * 7 + (unsigned char)s[n - 1]) & (KEYC - 1);
    ctx_key *k = &c->keys[h];
    if (k->n == n && memcmp(k->s, s, n) == 0) {
        lua_rawgeti(L, lua_upvalueindex(2), (lua_Integer)h + 1);
        return;
    }
    lua_pushlstring(L, s, n);
    lua_pushvalue(L, -1);
    lua_rawseti(L, lua_upvalueindex(2), (lua_Integer)h + 1);
    k->n = (uint8_t)n;
    memcpy(k->s, s, n);
}

static void push_traits_key(lua_State *L, void *ud, const char *s, size_t n)
{
    push_key(L, ud, s, n);
}

/* The traits as jd_user_traits and jd_lua_push_msgpack would give them (the same
 * table, built in the same order; {} for none or unreadable bytes), read straight from
 * the packed bytes, string keys through the cache. The unpacked tree stays for the C
 * predicates that ask for it (engine.c user_traits). */
static void push_traits(lua_State *L, ctx_ud *c, const jd_user *u)
{
    const unsigned char *p = (const unsigned char *)u->traits.data;
    int map = u->traits.len && ((*p >= 0x80 && *p <= 0x8f) || *p == 0xde || *p == 0xdf);
    if (!map || jd_lua_push_packed(L, p, u->traits.len, push_traits_key, c))
        lua_createtable(L, 0, 0);
}

static void push_user(lua_State *L, ctx_ud *c, jd_engine *e)
{
    jd_user *u = e->user;
    lua_createtable(L, 0, 4);
    lua_pushlstring(L, u->id, u->idlen);
    lua_setfield(L, -2, "id");
    push_traits(L, c, u);
    lua_setfield(L, -2, "traits");
    lua_createtable(L, 0, (int)u->nsegments);
    for (size_t i = 0; i < u->nsegments; i++) {
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, u->segments[i]);
    }
    lua_setfield(L, -2, "segments");
    lua_Number sc = (lua_Number)u->score;
    if (sc == (lua_Number)(lua_Integer)sc)
        lua_pushinteger(L, (lua_Integer)sc);
    else
        lua_pushnumber(L, sc);
    lua_setfield(L, -2, "score");
}

static void push_time(lua_State *L, int64_t ms)
{
    char t[40];
    jd_time_format(ms, t);
    lua_pushstring(L, t);
}

static void push_event(lua_State *L, jd_engine *e)
{
    const jd_event *ev = e->ev;
    lua_createtable(L, 0, 10);
    lua_pushstring(L, jd_event_type_name(ev->type));
    lua_setfield(L, -2, "type");
    if (ev->name.n) {
        lua_pushlstring(L, ev->name.p, ev->name.n);
        lua_setfield(L, -2, ev->type == JD_EV_TRACK ? "event" : "name");
    }
    lua_pushlstring(L, ev->message_id.p, ev->message_id.n);
    lua_setfield(L, -2, "messageId");
    lua_pushlstring(L, ev->user_id.p, ev->user_id.n);
    lua_setfield(L, -2, "userId");
    if (ev->anonymous_id.n) {
        lua_pushlstring(L, ev->anonymous_id.p, ev->anonymous_id.n);
        lua_setfield(L, -2, "anonymousId");
    }
    push_time(L, ev->timestamp);
    lua_setfield(L, -2, "timestamp");
    jd_lua_push_msgpack(L, jd_event_properties(ev));
    lua_setfield(L, -2, "properties");
    jd_lua_push_msgpack(L, jd_event_traits(ev));
    lua_setfield(L, -2, "traits");
    jd_lua_push_msgpack(L, jd_event_context(ev));
    lua_setfield(L, -2, "context");
}

/* The fields: what the ctx's __index (the methods table) does not hold, through the
 * methods table's own __index. Called with (methods, key); the ctx is upvalue 1 (one ctx
 * per Lua state), the key cache's strings upvalue 2. */
static int ctx_field(lua_State *L)
{
    ctx_ud *u = lua_touserdata(L, lua_upvalueindex(1));
    jd_engine *e = u->e;
    if (u->call != e->call.id)
        return luaL_error(L, "this ctx belongs to a hook that has returned");
    size_t n;
    const char *k = luaL_checklstring(L, 2, &n);
    const jd_call *c = &e->call;
    if (strcmp(k, "user") == 0 || strcmp(k, "event") == 0) {
        /* built once per call, kept in the ctx's user value 1 (user) or 2 (event) */
        int uv = k[0] == 'u' ? 1 : 2;
        if (lua_getiuservalue(L, lua_upvalueindex(1), uv) != LUA_TNIL)
            return 1;
        lua_pop(L, 1);
        if (uv == 1)
            push_user(L, u, e);
        else
            push_event(L, e);
        lua_pushvalue(L, -1);
        lua_setiuservalue(L, lua_upvalueindex(1), uv);
        return 1;
    }
    if (strcmp(k, "journey") == 0) {
        if (c->journey)
            lua_pushstring(L, c->journey->name);
        else
            lua_pushnil(L);
    } else if (strcmp(k, "stage") == 0) {
        if (c->journey && c->stage >= 0)
            lua_pushstring(L, c->journey->stages[c->stage].name);
        else
            lua_pushnil(L);
    } else if (strcmp(k, "instance") == 0) {
        if (c->inst && c->inst->keylen)
            lua_pushlstring(L, c->inst->key, c->inst->keylen);
        else
            lua_pushnil(L);
    } else if (strcmp(k, "now") == 0) {
        push_time(L, jd_clock_now(&e->clock));
    } else if (strcmp(k, "time") == 0) {
        lua_pushinteger(L, (lua_Integer)jd_clock_now(&e->clock));
    } else if (strcmp(k, "entered_at") == 0) {
        if (c->inst)
            push_time(L, c->inst->stage_entered_at);
        else
            lua_pushnil(L);
    } else if (strcmp(k, "rule") == 0) {
        if (c->trigger && c->trigger->rule_id)
            lua_pushstring(L, c->trigger->rule_id);
        else
            lua_pushstring(L, c->hook);
    } else {
        return luaL_error(L, "ctx has no field '%s'", k);
    }
    return 1;
}

static int ctx_newindex(lua_State *L)
{
    return luaL_error(L, "ctx is read-only (use ctx:set to change traits)");
}

static int ctx_tostring(lua_State *L)
{
    lua_pushliteral(L, "ctx");
    return 1;
}

static const luaL_Reg ctx_methods[] = {
    {"send", ctx_send},
    {"set", ctx_set},
    {"score", ctx_score},
    {"segment_add", ctx_segment_add},
    {"segment_remove", ctx_segment_remove},
    {"go", ctx_go},
    {"exit", ctx_exit},
    {"log", ctx_log},
    {NULL, NULL},
};

/* The ctx and its metatable. __index is the methods table, so a method is one table
 * lookup in the VM (no C call); a field falls to ctx_field through the methods table's
 * metatable. There is one ctx per Lua state: ctx_field holds it as its upvalue. */
static int ctx_create_cf(lua_State *L)
{
    jd_engine *e = lua_touserdata(L, 1);
    ctx_ud *u = lua_newuserdatauv(L, sizeof *u, 2);
    u->e = e;
    u->anchor = &ctx_anchor;
    u->call = 0;
    memset(u->keys, 0, sizeof u->keys);
    int ud = lua_gettop(L);
    luaL_newmetatable(L, CTX_MT);
    luaL_newlib(L, ctx_methods);
    lua_createtable(L, 0, 1);
    lua_pushvalue(L, ud);
    lua_createtable(L, KEYC, 0); /* the key cache's strings */
    lua_pushcclosure(L, ctx_field, 2);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, -2);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, ctx_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushcfunction(L, ctx_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_setmetatable(L, ud);
    return 1;
}

void jd_ctx_push(jd_engine *e, lua_State *L)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, e->ctx_ref);
    ctx_ud *u = lua_touserdata(L, -1);
    u->call = e->call.id;
    lua_pushnil(L); /* no user / event tables built for this call yet */
    lua_setiuservalue(L, -2, 1);
    lua_pushnil(L);
    lua_setiuservalue(L, -2, 2);
}

int jd_ctx_create(jd_engine *e)
{
    lua_State *L = jd_script_L(e->script);
    /* Most of what hooks allocate (ctx.user, ctx.event, payload tables) dies when the
     * hook returns, while the scripts' own tables live on: the generational collector
     * fits that, and spends less than the incremental one re-marking the old objects
     * every cycle (5% of the in-memory bench's time). */
    lua_gc(L, LUA_GCGEN, 0, 0);
    lua_pushcfunction(L, ctx_create_cf);
    lua_pushlightuserdata(L, e);
    if (jd_script_call_ns(e->script, 1, 1, 0, NULL))
        return LUA_NOREF;
    return luaL_ref(L, LUA_REGISTRYINDEX);
}

/* ---------------------------------------------------------------- journey.core */

static int core_where(lua_State *L)
{
    /* the first frame outside the engine's own modules: the user's line. (Levels are
     * not counted because the module's tail calls remove frames.) */
    int level = 1;
    lua_Debug ar;
    while (lua_getstack(L, level, &ar)) {
        lua_getinfo(L, "Sl", &ar);
        if (ar.currentline > 0 && strncmp(ar.source, "@[journeyd]/", 12) != 0) {
            lua_pushfstring(L, "%s:%d", ar.short_src, ar.currentline);
            return 1;
        }
        level++;
    }
    lua_pushliteral(L, "?");
    return 1;
}

static int core_duration(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    int64_t ms;
    if (jd_duration_parse(s, n, &ms)) {
        lua_pushnil(L);
        lua_pushfstring(L, "bad duration '%s' (use a number and a unit: 90s, 15m, 2h, 3d, 1w)", s);
        return 2;
    }
    lua_pushinteger(L, (lua_Integer)ms);
    return 1;
}

static int core_env(lua_State *L)
{
    const char *v = getenv(luaL_checkstring(L, 1));
    if (v)
        lua_pushstring(L, v);
    else
        lua_pushnil(L);
    return 1;
}

static int core_iso(lua_State *L)
{
    char t[40];
    lua_Integer ms = luaL_checkinteger(L, 1);
    lua_pushlstring(L, t, jd_time_format((int64_t)ms, t));
    return 1;
}

static int core_parse_time(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    int64_t ms;
    if (jd_time_parse(s, n, &ms))
        lua_pushnil(L);
    else
        lua_pushinteger(L, (lua_Integer)ms);
    return 1;
}

int jd_journey_core_open(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"where", core_where}, {"duration", core_duration},     {"env", core_env},
        {"iso", core_iso},     {"parse_time", core_parse_time}, {NULL, NULL},
    };
    luaL_newlib(L, fns);
    luaL_newmetatable(L, JD_ARRAY_MT);
    lua_setfield(L, -2, "array_mt");
    return 1;
}
