/* floor: the cost of the Lua calls alone, without the engine — the floor journeyd
 * replay is compared with in tests/bench/run.sh.
 *
 *   floor HOOKS.lua PLAN.bin [EVENTS]
 *
 * Creates a plain Lua state, loads the hook functions bench.lua uses (HOOKS.lua returns
 * them in a table), then for every record of PLAN.bin (one per Lua call the engine
 * makes on the stream, written by gen -p: which hook, which user, from an event or a
 * timer) builds a ctx table in C and calls that hook with lua_pcall. The ctx has 6
 * fields — user, event, journey, stage, instance, now — with user = {id, score,
 * traits = {email, company, company_size}} and event = {type, event, userId,
 * properties = {feature, product_id, price, revenue}} for an event's call, {type =
 * "timer", userId} for a timer's: enough for every hook. Its methods (send, score, set,
 * segment_add, segment_remove, log) are C functions that check their arguments and walk
 * a payload table, and record nothing. No JSON, no msgpack, no profiles, no timers, no
 * time limit hook.
 * Prints "floor: key value" lines; EVENTS (the stream's event count) adds the events/s
 * the stream would reach if those calls were all there was to do. */
#define _POSIX_C_SOURCE 200809L
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_hooks.h"

static double sink; /* keeps the stubs' work observable */

static int m_send(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    size_t n;
    luaL_checklstring(L, 2, &n);
    sink += (double)n;
    if (lua_istable(L, 3)) {
        lua_pushnil(L);
        while (lua_next(L, 3)) {
            size_t kl = 0;
            if (lua_type(L, -2) == LUA_TSTRING)
                lua_tolstring(L, -2, &kl);
            sink += (double)kl + (double)lua_type(L, -1);
            lua_pop(L, 1);
        }
    }
    return 0;
}

static int m_score(lua_State *L)
{
    sink += luaL_checknumber(L, 2);
    return 0;
}

static int m_segment(lua_State *L)
{
    size_t n;
    luaL_checklstring(L, 2, &n);
    sink += (double)n;
    return 0;
}

static int m_set(lua_State *L)
{
    if (!lua_istable(L, 2)) {
        size_t n;
        luaL_checklstring(L, 2, &n);
        sink += (double)n + (double)lua_type(L, 3);
    }
    return 0;
}

static int m_log(lua_State *L)
{
    sink += lua_gettop(L);
    return 0;
}

static void set_str(lua_State *L, const char *k, const char *v)
{
    lua_pushstring(L, v);
    lua_setfield(L, -2, k);
}

static void set_int(lua_State *L, const char *k, lua_Integer v)
{
    lua_pushinteger(L, v);
    lua_setfield(L, -2, k);
}

/* An event's ctx.event: a track of the hook's name with 4 properties. */
static void push_event(lua_State *L, unsigned hook, const char *uid, unsigned arg)
{
    char prod[16];
    lua_createtable(L, 0, 4);
    set_str(L, "type", "track");
    set_str(L, "event", bench_hook_names[hook]);
    set_str(L, "userId", uid);
    lua_createtable(L, 0, 4);
    set_str(L, "feature", "export");
    snprintf(prod, sizeof prod, "p%05u", arg);
    set_str(L, "product_id", prod);
    lua_pushnumber(L, 749.5);
    lua_setfield(L, -2, "price");
    lua_pushnumber(L, 59.99);
    lua_setfield(L, -2, "revenue");
    lua_setfield(L, -2, "properties");
}

/* The per-call ctx: a 6-field table built in C (see the top of the file). */
static void push_ctx(lua_State *L, int mt, const bench_plan_rec *r)
{
    char uid[16], email[48], cart[24];
    snprintf(uid, sizeof uid, "u%07u", r->user);
    snprintf(email, sizeof email, "user%u@example.com", r->user);
    lua_createtable(L, 0, 6);

    lua_createtable(L, 0, 3); /* user */
    set_str(L, "id", uid);
    set_int(L, "score", 25);
    lua_createtable(L, 0, 3);
    set_str(L, "email", email);
    set_str(L, "company", "Acme 42");
    set_int(L, "company_size", 120);
    lua_setfield(L, -2, "traits");
    lua_setfield(L, -2, "user");

    unsigned hook = r->hook & ~BENCH_PLAN_TIMER;
    if (r->hook & BENCH_PLAN_TIMER) {
        lua_createtable(L, 0, 2); /* a timer's event */
        set_str(L, "type", "timer");
        set_str(L, "userId", uid);
    } else {
        push_event(L, hook, uid, r->arg);
    }
    lua_setfield(L, -2, "event");

    set_str(L, "journey", "cart");
    set_str(L, "stage", "open");
    snprintf(cart, sizeof cart, "c%07u-%u", r->user, r->arg);
    set_str(L, "instance", cart);
    set_str(L, "now", "2026-03-02T00:00:00.000Z");
    lua_pushvalue(L, mt);
    lua_setmetatable(L, -2);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    if (argc != 3 && argc != 4) {
        fprintf(stderr, "usage: floor HOOKS.lua PLAN.bin [EVENTS]\n");
        return 2;
    }
    FILE *f = fopen(argv[2], "rb");
    if (!f) {
        fprintf(stderr, "floor: %s: cannot open\n", argv[2]);
        return 2;
    }
    fseek(f, 0, SEEK_END);
    long bytes = ftell(f);
    rewind(f);
    size_t nrec = (size_t)bytes / sizeof(bench_plan_rec);
    bench_plan_rec *plan = malloc(nrec ? nrec * sizeof *plan : 1);
    if (!plan || fread(plan, sizeof *plan, nrec, f) != nrec) {
        fprintf(stderr, "floor: %s: cannot read\n", argv[2]);
        return 2;
    }
    fclose(f);

    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    if (luaL_dofile(L, argv[1]) != LUA_OK || !lua_istable(L, -1)) {
        fprintf(stderr, "floor: %s: %s\n", argv[1], lua_isstring(L, -1) ? lua_tostring(L, -1) : "no table");
        return 2;
    }
    int hooks = lua_gettop(L);
    int ref[HK_N];
    for (int i = 1; i < HK_N; i++) {
        if (lua_getfield(L, hooks, bench_hook_names[i]) != LUA_TFUNCTION) {
            fprintf(stderr, "floor: %s has no function %s\n", argv[1], bench_hook_names[i]);
            return 2;
        }
        ref[i] = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    static const luaL_Reg methods[] = {
        {"send", m_send}, {"score", m_score}, {"set", m_set}, {"segment_add", m_segment}, {"segment_remove", m_segment},
        {"log", m_log},   {NULL, NULL},
    };
    lua_createtable(L, 0, 1); /* ctx metatable: __index = methods */
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    int mt = lua_gettop(L);

    unsigned long long errors = 0;
    double t0 = now_s();
    for (size_t i = 0; i < nrec; i++) {
        const bench_plan_rec *r = &plan[i];
        unsigned hook = r->hook & ~BENCH_PLAN_TIMER;
        if (hook == 0 || hook >= HK_N)
            continue;
        lua_rawgeti(L, LUA_REGISTRYINDEX, ref[hook]);
        push_ctx(L, mt, r);
        if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
            if (errors++ < 3)
                fprintf(stderr, "floor: %s: %s\n", bench_hook_names[hook], lua_tostring(L, -1));
            lua_pop(L, 1);
        }
    }
    double secs = now_s() - t0;
    printf("floor: calls %zu\n", nrec);
    printf("floor: errors %llu\n", errors);
    printf("floor: seconds %.3f\n", secs);
    printf("floor: us_per_call %.3f\n", nrec ? secs * 1e6 / (double)nrec : 0.0);
    if (argc == 4) {
        double events = atof(argv[3]);
        printf("floor: events_per_s %.0f\n", secs > 0 ? events / secs : 0.0);
    }
    printf("floor: lua_kb %d\n", lua_gc(L, LUA_GCCOUNT, 0));
    if (sink == 0.5) /* never: the stubs' work must not be optimised away */
        puts("");
    lua_close(L);
    free(plan);
    return errors ? 1 : 0;
}
