#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE /* CLOCK_MONOTONIC_COARSE */
#include "script.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "pool.h"
#include "watch.h"

/* generated from scripts/ by the Makefile */
typedef struct jd_embedded {
    const char *module;
    const char *path;
    const unsigned char *data;
    size_t len;
} jd_embedded;
extern const jd_embedded jd_embedded_scripts[];

/* A file the state loaded from the script directory, kept so that the same version can be
 * rebuilt later without the disk (a pinned version after a restart). */
typedef struct jd_src_file {
    char *module; /* NULL: the entry file */
    char *path;   /* as loaded (the chunk name without its '@') */
    char *text;
    size_t len;
} jd_src_file;

struct jd_script {
    lua_State *L;
    char *dir;
    jd_src_file *files; /* in load order, the entry file first */
    size_t nfiles, capfiles;
    int frozen; /* require reaches only files[]: nothing more is read from the disk */
    void *owner;
    jd_script_limits limits;
    size_t mem_used;
    size_t mem_cap;      /* 0 while unlimited (setup) */
    jd_pool pool;        /* the state's blocks (counting_alloc) */
    int64_t deadline_ns; /* on deadline_clock */
    clockid_t deadline_clock;
    int64_t coarse_tick_ns; /* CLOCK_MONOTONIC_COARSE's resolution (0: none) */
    int timed_out;
    jd_watch watch; /* the watch thread's view of a call in progress */
};

/* The state's extra space holds the jd_script pointer (STYLE: never search a list). */
static jd_script *self_of(lua_State *L)
{
    return *(jd_script **)lua_getextraspace(L);
}
void *jd_script_owner(lua_State *L)
{
    return self_of(L)->owner;
}
void jd_script_set_owner(jd_script *s, void *owner)
{
    s->owner = owner;
}
lua_State *jd_script_L(jd_script *s)
{
    return s->L;
}
size_t jd_script_memory(const jd_script *s)
{
    return s->mem_used;
}

/* ---------------------------------------------------------------- errors */

void jd_script_error_clear(jd_script_error *e)
{
    free(e->message);
    free(e->where);
    free(e->traceback);
    memset(e, 0, sizeof *e);
}

void jd_script_error_set(jd_script_error *e, int kind, const char *msg, const char *tb)
{
    jd_script_error_clear(e);
    e->kind = kind;
    if (!msg)
        msg = "(error object is not a string)";
    /* "file:line: text" -> where + message; the file part has no ": " in practice */
    const char *p = strstr(msg, ": ");
    const char *colon = NULL;
    if (p) {
        for (const char *q = msg; q < p; q++)
            if (*q == ':')
                colon = q;
    }
    int numeric = colon && colon + 1 < p;
    for (const char *q = colon ? colon + 1 : p; numeric && q < p; q++)
        if (*q < '0' || *q > '9')
            numeric = 0;
    if (p && colon && numeric) {
        e->where = jd_strndup(msg, (size_t)(p - msg));
        e->message = jd_strndup(p + 2, strlen(p + 2));
    } else {
        e->where = jd_strndup("", 0);
        e->message = jd_strndup(msg, strlen(msg));
    }
    e->traceback = jd_strndup(tb ? tb : "", tb ? strlen(tb) : 0);
}

const char *jd_script_error_text(const jd_script_error *e, char *out, size_t n)
{
    if (e->where && e->where[0])
        snprintf(out, n, "%s: %s", e->where, e->message ? e->message : "");
    else
        snprintf(out, n, "%s", e->message ? e->message : "");
    return out;
}

/* ---------------------------------------------------------------- limits */

static void *counting_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    jd_script *s = ud;
    size_t old = ptr ? osize : 0;
    if (nsize == 0) {
        jd_pool_realloc(&s->pool, ptr, osize, 0);
        s->mem_used -= old;
        return NULL;
    }
    if (s->mem_cap && nsize > old && s->mem_used + (nsize - old) > s->mem_cap)
        return NULL; /* Lua raises a memory error; the engine carries on */
    void *p = jd_pool_realloc(&s->pool, ptr, osize, nsize);
    if (p)
        s->mem_used = s->mem_used - old + nsize;
    return p;
}

static int64_t clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* A call's deadline is read from CLOCK_MONOTONIC_COARSE when the limit is at least ten of
 * its ticks (the default 50 ms against a 4 ms tick): every call sets one, and a coarse
 * read is 3 ns against 26 for the precise clock on a VM's kvm-clock (1% of the
 * in-memory bench). A shorter limit uses the precise clock. */
static void set_deadline(jd_script *s, int64_t limit_ns)
{
    s->deadline_clock = CLOCK_MONOTONIC;
#ifdef CLOCK_MONOTONIC_COARSE
    if (s->coarse_tick_ns && limit_ns >= 10 * s->coarse_tick_ns)
        s->deadline_clock = CLOCK_MONOTONIC_COARSE;
#endif
    s->deadline_ns = clock_ns(s->deadline_clock) + limit_ns;
}

static void count_hook(lua_State *L, lua_Debug *ar);

/* The hook is not set for every call. With a count hook Lua calls into its debug code
 * before every instruction (luaG_traceexec in Lua 5.4), for hooks that nearly all end
 * within microseconds: 2.7% of the in-memory run's instructions. So a call with a limit of
 * HOOK_AT_ONCE_NS or more starts without it, and the watch thread (watch.c) interrupts
 * one still running JD_WATCH_NS later with a signal whose handler arms the hook on the
 * state the call runs in — lua_sethook is meant to be called from a signal handler (lua.c
 * stops a script on Ctrl-C so). From then on it is as before: the deadline is checked
 * every 1000 instructions. A shorter limit, or no watch thread, arms it at the start.
 * Coroutines are created with the hook set (l_cocreate): the handler only knows the
 * state the call began in. */
#define HOOK_AT_ONCE_NS (4 * JD_WATCH_NS)

static _Thread_local jd_script *running; /* the state this thread is calling into */

static void arm_running(void)
{
    jd_script *s = running;
    if (s)
        lua_sethook(s->L, count_hook, LUA_MASKCOUNT, 1000);
}

/* Checks the deadline every 1000 instructions. Once past it, re-arms to fire on every
 * instruction, so a pcall inside the script cannot swallow the stop. */
static void count_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    jd_script *s = self_of(L);
    if (s->deadline_ns && (s->timed_out || clock_ns(s->deadline_clock) > s->deadline_ns)) {
        if (!s->timed_out) {
            s->timed_out = 1;
            lua_sethook(L, count_hook, LUA_MASKCOUNT, 1);
            /* L may be a coroutine: its error can be caught by resume in the main thread,
             * so the main thread must stop on its next instruction too */
            if (L != s->L)
                lua_sethook(s->L, count_hook, LUA_MASKCOUNT, 1);
        }
        luaL_error(L, "script exceeded its time limit of %d ms", (int)(s->limits.call_ns / 1000000));
    }
}

/* ---------------------------------------------------------------- sandbox */

static int l_print(lua_State *L)
{
    int n = lua_gettop(L);
    jd_buf b;
    jd_buf_init(&b);
    for (int i = 1; i <= n; i++) {
        size_t len;
        const char *s = luaL_tolstring(L, i, &len);
        if (i > 1)
            jd_buf_putc(&b, '\t');
        jd_buf_append(&b, s, len);
        lua_pop(L, 1);
    }
    fprintf(stderr, "lua: %s\n", jd_buf_cstr(&b));
    jd_buf_free(&b);
    return 0;
}

static int l_setmetatable(lua_State *L)
{
    if (lua_istable(L, 2)) {
        if (lua_getfield(L, 2, "__gc") != LUA_TNIL)
            return luaL_error(L, "__gc metamethods are not allowed in journey scripts");
        lua_pop(L, 1);
    }
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    return 1;
}

static int load_text(lua_State *L, const char *buf, size_t len, const char *chunkname)
{
    return luaL_loadbufferx(L, buf, len, chunkname, "t");
}

/* ---------------------------------------------------------------- sources */

static const jd_src_file *file_add(jd_script *s, const char *module, const char *path, const char *text, size_t len)
{
    if (s->nfiles == s->capfiles) {
        s->capfiles = s->capfiles ? s->capfiles * 2 : 4;
        s->files = jd_xrealloc(s->files, s->capfiles * sizeof *s->files);
    }
    jd_src_file *f = &s->files[s->nfiles++];
    f->module = module ? jd_strndup(module, strlen(module)) : NULL;
    f->path = jd_strndup(path, strlen(path));
    f->text = jd_xmalloc(len ? len : 1);
    if (len)
        memcpy(f->text, text, len);
    f->len = len;
    return f;
}

/* The kept file of a module (NULL: the entry file), or NULL. */
static const jd_src_file *file_find(const jd_script *s, const char *module)
{
    for (size_t i = 0; i < s->nfiles; i++) {
        const jd_src_file *f = &s->files[i];
        if (module ? f->module && strcmp(f->module, module) == 0 : !f->module)
            return f;
    }
    return NULL;
}

/* The whole file, malloc'd; -1 with errno when it cannot be read. */
static int read_file(const char *path, char **out, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    jd_buf b;
    jd_buf_init(&b);
    char chunk[8192];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0)
        jd_buf_append(&b, chunk, got);
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        jd_buf_free(&b);
        return -1;
    }
    *n = b.len;
    *out = b.data ? b.data : jd_xmalloc(1);
    return 0;
}

/* Loads a kept file as luaL_loadfilex would load it from the disk: text only, a UTF-8 BOM
 * and a first line starting with '#' skipped (its newline kept, so lines count the same). */
static int load_source(lua_State *L, const jd_src_file *f)
{
    const char *p = f->text, *end = f->text + f->len;
    if (end - p >= 3 && memcmp(p, "\xEF\xBB\xBF", 3) == 0)
        p += 3;
    if (p < end && *p == '#') {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        p = nl ? nl : end;
    }
    jd_buf chunk;
    jd_buf_init(&chunk);
    jd_buf_printf(&chunk, "@%s", f->path);
    int status = luaL_loadbufferx(L, p, (size_t)(end - p), jd_buf_cstr(&chunk), "t");
    jd_buf_free(&chunk);
    return status;
}

void jd_script_add_file(jd_script *s, const char *module, const char *path, const char *text, size_t len)
{
    file_add(s, module, path, text, len);
    s->frozen = 1;
}

void jd_script_freeze(jd_script *s)
{
    s->frozen = 1;
}

size_t jd_script_nfiles(const jd_script *s)
{
    return s->nfiles;
}

void jd_script_file(const jd_script *s, size_t i, const char **module, const char **path, const char **text,
                    size_t *len)
{
    const jd_src_file *f = &s->files[i];
    *module = f->module;
    *path = f->path;
    *text = f->text;
    *len = f->len;
}

/* require: the loaded cache, then engine modules (C, then embedded Lua), then
 * <script_dir>/<name with dots as slashes>.lua (kept in memory once read; a frozen state
 * reaches only the files it kept). Nothing else is reachable. */
static int l_require(lua_State *L)
{
    size_t nlen;
    const char *name = luaL_checklstring(L, 1, &nlen);
    lua_getfield(L, LUA_REGISTRYINDEX, "jd.loaded");
    if (lua_getfield(L, -1, name) != LUA_TNIL)
        return 1;
    lua_pop(L, 1);
    int loaded = lua_gettop(L);
    lua_getfield(L, LUA_REGISTRYINDEX, "jd.preload");
    if (lua_getfield(L, -1, name) == LUA_TFUNCTION) {
        lua_pushstring(L, name);
        lua_call(L, 1, 1);
    } else {
        lua_pop(L, 2);
        const jd_embedded *e = NULL;
        for (const jd_embedded *x = jd_embedded_scripts; x->module; x++)
            if (strcmp(x->module, name) == 0)
                e = x;
        if (e) {
            char chunk[256];
            snprintf(chunk, sizeof chunk, "@[journeyd]/%s", e->path);
            if (load_text(L, (const char *)e->data, e->len, chunk) != LUA_OK)
                return lua_error(L);
        } else {
            jd_script *s = self_of(L);
            for (size_t i = 0; i < nlen; i++)
                if (name[i] == '/' || name[i] == '\\' || (name[i] == '.' && i + 1 < nlen && name[i + 1] == '.'))
                    return luaL_error(L, "module '%s' not found: bad module name", name);
            if (!s->dir)
                return luaL_error(L, "module '%s' not found", name);
            jd_buf path;
            jd_buf_init(&path);
            jd_buf_printf(&path, "%s/", s->dir);
            for (size_t i = 0; i < nlen; i++)
                jd_buf_putc(&path, name[i] == '.' ? '/' : name[i]);
            jd_buf_puts(&path, ".lua");
            lua_pushstring(L, jd_buf_cstr(&path));
            jd_buf_free(&path);
            const char *p = lua_tostring(L, -1);
            const jd_src_file *kept = file_find(s, name);
            if (!kept && s->frozen)
                return luaL_error(L, "module '%s' not found (not kept with this version of the scripts)", name);
            if (!kept) {
                char *text;
                size_t len;
                if (read_file(p, &text, &len))
                    return luaL_error(L, "module '%s' not found (looked for %s)", name, p);
                kept = file_add(s, name, p, text, len);
                free(text);
            }
            if (load_source(L, kept) != LUA_OK)
                return lua_error(L);
            lua_remove(L, -2);
        }
        lua_pushstring(L, name);
        lua_call(L, 1, 1);
    }
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_pushboolean(L, 1);
    }
    lua_pushvalue(L, -1);
    lua_setfield(L, loaded, name);
    return 1;
}

/* coroutine.create and coroutine.wrap (upvalue 1: Lua's own): the new coroutine gets
 * the count hook (lua_newthread copies the creating thread's), so that its code checks
 * the deadline without the watch thread, which arms only the calling state. Outside a
 * call (no deadline) the hook returns at once. */
static int l_cocreate(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION); /* Lua's own cannot fail after this (but for memory) */
    lua_Hook h = lua_gethook(L);
    int mask = lua_gethookmask(L), count = lua_gethookcount(L);
    lua_sethook(L, count_hook, LUA_MASKCOUNT, 1000);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    lua_sethook(L, h, mask, count);
    return lua_gettop(L);
}

/* Runs in protected mode: an error while setting up never aborts (STYLE 5). */
static int setup(lua_State *L)
{
    static const luaL_Reg libs[] = {
        {LUA_GNAME, luaopen_base},        {LUA_TABLIBNAME, luaopen_table},
        {LUA_STRLIBNAME, luaopen_string}, {LUA_MATHLIBNAME, luaopen_math},
        {LUA_UTF8LIBNAME, luaopen_utf8},  {LUA_COLIBNAME, luaopen_coroutine},
        {LUA_OSLIBNAME, luaopen_os},      {NULL, NULL},
    };
    for (const luaL_Reg *l = libs; l->func; l++) {
        luaL_requiref(L, l->name, l->func, 1);
        lua_pop(L, 1);
    }
    /* os: time, date, clock only */
    lua_getglobal(L, "os");
    lua_newtable(L);
    static const char *const keep[] = {"time", "date", "clock", "difftime", NULL};
    for (int i = 0; keep[i]; i++) {
        lua_getfield(L, -2, keep[i]);
        lua_setfield(L, -2, keep[i]);
    }
    lua_setglobal(L, "os");
    lua_pop(L, 1);
    lua_getglobal(L, "coroutine");
    static const char *const cofns[] = {"create", "wrap", NULL};
    for (int i = 0; cofns[i]; i++) {
        lua_getfield(L, -1, cofns[i]);
        lua_pushcclosure(L, l_cocreate, 1);
        lua_setfield(L, -2, cofns[i]);
    }
    lua_pop(L, 1);
    static const char *const drop[] = {"load", "loadfile", "dofile", "collectgarbage", "require", NULL};
    for (int i = 0; drop[i]; i++) {
        lua_pushnil(L);
        lua_setglobal(L, drop[i]);
    }
    lua_pushcfunction(L, l_print);
    lua_setglobal(L, "print");
    /* setmetatable without finalizers: a __gc runs whenever the collector decides,
     * outside any hook's deadline */
    lua_getglobal(L, "setmetatable");
    lua_pushcclosure(L, l_setmetatable, 1);
    lua_setglobal(L, "setmetatable");
    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, "jd.loaded");
    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, "jd.preload");
    lua_pushcfunction(L, l_require);
    lua_setglobal(L, "require");
    return 0;
}

static int msgh(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (!msg) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
            msg = lua_tostring(L, -1);
        else
            msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

jd_script *jd_script_new(const char *script_dir, const jd_script_limits *limits)
{
    jd_script *s = jd_xcalloc(1, sizeof *s);
    if (limits)
        s->limits = *limits;
    s->dir = script_dir ? jd_strndup(script_dir, strlen(script_dir)) : NULL;
    jd_pool_init(&s->pool);
#ifdef CLOCK_MONOTONIC_COARSE
    struct timespec res;
    if (clock_getres(CLOCK_MONOTONIC_COARSE, &res) == 0)
        s->coarse_tick_ns = (int64_t)res.tv_sec * 1000000000 + res.tv_nsec;
#endif
    s->L = lua_newstate(counting_alloc, s);
    if (!s->L) {
        jd_pool_destroy(&s->pool);
        free(s->dir);
        free(s);
        return NULL;
    }
    *(jd_script **)lua_getextraspace(s->L) = s;
    lua_pushcfunction(s->L, setup);
    if (lua_pcall(s->L, 0, 0, 0) != LUA_OK) {
        fprintf(stderr, "journeyd: cannot set up Lua: %s\n", lua_tostring(s->L, -1));
        jd_script_free(s);
        return NULL;
    }
    s->mem_cap = s->limits.memory_bytes;
    jd_watch_init(arm_running);
    jd_watch_add(&s->watch);
    return s;
}

void jd_script_free(jd_script *s)
{
    if (!s)
        return;
    if (s->L) {
        if (s->watch.prevp) /* jd_script_new added it */
            jd_watch_remove(&s->watch);
        s->mem_cap = 0;
        /* finalizers run in lua_close; whatever slipped past the sandbox gets a deadline */
        s->timed_out = 0;
        set_deadline(s, 100 * 1000000LL);
        lua_sethook(s->L, count_hook, LUA_MASKCOUNT, 1000);
        lua_close(s->L);
    }
    jd_pool_destroy(&s->pool); /* after lua_close: the state's last blocks are gone */
    for (size_t i = 0; i < s->nfiles; i++) {
        free(s->files[i].module);
        free(s->files[i].path);
        free(s->files[i].text);
    }
    free(s->files);
    free(s->dir);
    free(s);
}

static int preload_set(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, "jd.preload");
    lua_pushvalue(L, 2);
    lua_setfield(L, -2, lua_tostring(L, 1));
    return 0;
}

void jd_script_preload(jd_script *s, const char *name, lua_CFunction open)
{
    lua_pushcfunction(s->L, preload_set);
    lua_pushstring(s->L, name);
    lua_pushcfunction(s->L, open);
    lua_pcall(s->L, 2, 0, 0);
}

static int kind_of(jd_script *s, int status)
{
    if (s->timed_out)
        return JD_SERR_TIMEOUT;
    switch (status) {
    case LUA_ERRMEM: return JD_SERR_MEMORY;
    case LUA_ERRSYNTAX: return JD_SERR_SYNTAX;
    case LUA_ERRFILE: return JD_SERR_FILE;
    default: return JD_SERR_RUNTIME;
    }
}

static void take_error(jd_script *s, int status, jd_script_error *err)
{
    lua_State *L = s->L;
    const char *full = lua_tostring(L, -1);
    if (!full)
        full = status == LUA_ERRMEM ? "not enough memory (script memory limit)" : "(no message)";
    const char *tb = strstr(full, "\nstack traceback:");
    char *msg = tb ? jd_strndup(full, (size_t)(tb - full)) : jd_strndup(full, strlen(full));
    if (status == LUA_ERRMEM && strcmp(msg, "not enough memory") == 0) {
        free(msg);
        msg = jd_strndup("not enough memory (script memory limit)", 39);
    }
    if (err)
        jd_script_error_set(err, kind_of(s, status), msg, tb ? tb + 1 : "");
    free(msg);
}

static int pcall_limited(jd_script *s, int nargs, int nres, int64_t limit_ns, jd_script_error *err)
{
    lua_State *L = s->L;
    int base = lua_gettop(L) - nargs; /* the function's slot */
    lua_pushcfunction(L, msgh);
    lua_insert(L, base);
    s->timed_out = 0;
    s->deadline_ns = 0;
    jd_script *outer = running;
    if (limit_ns) {
        set_deadline(s, limit_ns);
        if (limit_ns < HOOK_AT_ONCE_NS ||
            jd_watch_begin(&s->watch, s->deadline_clock, s->deadline_ns - limit_ns + JD_WATCH_NS))
            lua_sethook(L, count_hook, LUA_MASKCOUNT, 1000);
        running = s;
    }
    int status = lua_pcall(L, nargs, nres, base);
    if (limit_ns) {
        running = outer;
        jd_watch_end(&s->watch);
        lua_sethook(L, NULL, 0, 0); /* set at the start, or by the watch thread's signal */
    }
    s->deadline_ns = 0;
    if (status == LUA_OK && s->timed_out) {
        /* the stop was swallowed (a coroutine's error returned by resume, say) and the
         * function returned anyway: a call past its deadline fails all the same */
        lua_settop(L, base);
        lua_pushfstring(L, "script exceeded its time limit of %d ms", (int)(limit_ns / 1000000));
        status = LUA_ERRRUN;
    }
    if (status != LUA_OK) {
        take_error(s, status, err);
        lua_settop(L, base - 1);
        s->timed_out = 0;
        return -1;
    }
    lua_remove(L, base);
    return 0;
}

int jd_script_call(jd_script *s, int nargs, int nres, jd_script_error *err)
{
    return pcall_limited(s, nargs, nres, s->limits.call_ns, err);
}

int jd_script_call_ns(jd_script *s, int nargs, int nres, int64_t limit_ns, jd_script_error *err)
{
    return pcall_limited(s, nargs, nres, limit_ns, err);
}

int jd_script_run_file(jd_script *s, const char *path, jd_script_error *err)
{
    char *text;
    size_t len;
    int status;
    if (read_file(path, &text, &len) == 0) {
        status = load_source(s->L, file_add(s, NULL, path, text, len));
        free(text);
    } else {
        status = luaL_loadfilex(s->L, path, "t"); /* its message: "cannot open PATH: ..." */
    }
    if (status != LUA_OK) {
        take_error(s, status, err);
        lua_pop(s->L, 1);
        return -1;
    }
    return pcall_limited(s, 0, 0, s->limits.load_ns, err);
}

int jd_script_run_stored(jd_script *s, jd_script_error *err)
{
    const jd_src_file *f = file_find(s, NULL);
    if (!f) {
        jd_script_error_set(err, JD_SERR_FILE, "no entry file kept with this version of the scripts", NULL);
        return -1;
    }
    int status = load_source(s->L, f);
    if (status != LUA_OK) {
        take_error(s, status, err);
        lua_pop(s->L, 1);
        return -1;
    }
    return pcall_limited(s, 0, 0, s->limits.load_ns, err);
}

int jd_script_run_string(jd_script *s, const char *code, const char *chunkname, jd_script_error *err)
{
    int status = load_text(s->L, code, strlen(code), chunkname);
    if (status != LUA_OK) {
        take_error(s, status, err);
        lua_pop(s->L, 1);
        return -1;
    }
    return pcall_limited(s, 0, 0, s->limits.load_ns, err);
}

static int global_guard(lua_State *L)
{
    const char *k = lua_tostring(L, 2);
    return luaL_error(L, "assignment to undeclared global '%s' (use local)", k ? k : "?");
}

static int seal(lua_State *L)
{
    lua_pushglobaltable(L);
    lua_newtable(L);
    lua_pushcfunction(L, global_guard);
    lua_setfield(L, -2, "__newindex");
    lua_setmetatable(L, -2);
    return 0;
}

void jd_script_seal_globals(jd_script *s)
{
    lua_pushcfunction(s->L, seal);
    lua_pcall(s->L, 0, 0, 0);
}
