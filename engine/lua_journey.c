/* lua_journey: compiles the journey module's registry (tables built by
 * scripts/journey.lua) into defs — triggers with C predicates, stages, journeys,
 * channels — and checks it: unknown stages, bad durations and unknown channels are
 * "file:line: message" errors before any event is read. Uses defs, match, script. */
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"
#include "lua_msgpack.h"

typedef struct cstate {
    jd_engine *e;
    jd_defs *d;
    jd_buf desc;   /* canonical text of the journey being compiled, for its version */
    jd_buf config; /* j.config packed; handed to the engine only when compiling succeeds */
} cstate;

static char *field_str(lua_State *L, int idx, const char *f)
{
    char *r = NULL;
    if (lua_getfield(L, idx, f) == LUA_TSTRING) {
        size_t n;
        const char *s = lua_tolstring(L, -1, &n);
        r = jd_strndup(s, n);
    }
    lua_pop(L, 1);
    return r;
}

static const char *field_cstr(lua_State *L, int idx, const char *f, char *tmp, size_t n)
{
    tmp[0] = '\0';
    if (lua_getfield(L, idx, f) == LUA_TSTRING)
        snprintf(tmp, n, "%s", lua_tostring(L, -1));
    lua_pop(L, 1);
    return tmp;
}

static int field_ref(lua_State *L, int idx, const char *f)
{
    if (lua_getfield(L, idx, f) == LUA_TFUNCTION)
        return luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pop(L, 1);
    return LUA_NOREF;
}

/* ---------------------------------------------------------------- windows, caps */

/* A string field of a window table, or NULL; an error when present but not a string. */
static const char *window_field(lua_State *L, int idx, const char *f, char *tmp, size_t n, const char *where)
{
    int t = lua_getfield(L, idx, f);
    if (t != LUA_TNIL && t != LUA_TSTRING)
        luaL_error(L, "%s: window %s must be a string", where, f);
    const char *r = t == LUA_TSTRING ? (snprintf(tmp, n, "%s", lua_tostring(L, -1)), tmp) : NULL;
    lua_pop(L, 1);
    return r;
}

void jd_lua_window(jd_engine *e, lua_State *L, int idx, jd_window *w, const char *where)
{
    idx = lua_absindex(L, idx);
    if (!lua_istable(L, idx))
        luaL_error(L, "%s: window must be a table { days = \"mon-fri\", hours = \"09-17\", tz = \"user\" }", where);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "";
        if (strcmp(k, "days") && strcmp(k, "hours") && strcmp(k, "tz"))
            luaL_error(L, "%s: window: unknown field '%s' (days, hours, tz)", where, k);
        lua_pop(L, 1);
    }
    char days[64], hours[64], tz[128], err[256];
    const char *d = window_field(L, idx, "days", days, sizeof days, where);
    const char *h = window_field(L, idx, "hours", hours, sizeof hours, where);
    const char *z = window_field(L, idx, "tz", tz, sizeof tz, where);
    if (jd_window_parse(w, d, h, z, err, sizeof err))
        luaL_error(L, "%s: %s", where, err);
    if (w->tz[0] && !jd_tzcache_get(&e->zones, w->tz, strlen(w->tz)))
        luaL_error(L, "%s: window tz '%s': no such zone in the system tz database", where, w->tz);
}

void jd_lua_cap(lua_State *L, int idx, jd_cap *c, const char *where)
{
    idx = lua_absindex(L, idx);
    if (!lua_istable(L, idx))
        luaL_error(L, "%s: cap must be a table { max = 3, per = \"7d\" }", where);
    lua_getfield(L, idx, "max");
    lua_getfield(L, idx, "per");
    char err[256];
    if (!lua_isinteger(L, -2) || lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "%s: cap needs max (an integer) and per (a duration like \"7d\")", where);
    if (jd_cap_parse(c, lua_tointeger(L, -2), lua_tostring(L, -1), err, sizeof err))
        luaL_error(L, "%s: %s", where, err);
    lua_pop(L, 2);
}

static jd_trigger *new_trigger(cstate *cs)
{
    jd_defs *d = cs->d;
    jd_trigger *t = jd_xcalloc(1, sizeof *t);
    t->when_ref = t->fn_ref = LUA_NOREF;
    t->journey = t->stage = t->target = -1;
    d->triggers = jd_xrealloc(d->triggers, (d->ntriggers + 1) * sizeof *d->triggers);
    d->triggers[d->ntriggers++] = t;
    return t;
}

static void read_val(lua_State *L, int idx, jd_val *v, const char *loc, const char *path)
{
    switch (lua_type(L, idx)) {
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        v->kind = JD_V_STR;
        v->s = jd_strndup(s, n);
        v->n = n;
        break;
    }
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) {
            v->kind = JD_V_INT;
            v->i = lua_tointeger(L, idx);
        } else {
            v->kind = JD_V_NUM;
            v->d = lua_tonumber(L, idx);
        }
        break;
    case LUA_TBOOLEAN:
        v->kind = JD_V_BOOL;
        v->b = lua_toboolean(L, idx);
        break;
    default:
        luaL_error(L, "%s: where '%s': expected a string, number or boolean, got %s", loc, path, luaL_typename(L, idx));
    }
}

static jd_pred *add_pred(jd_trigger *t)
{
    t->preds = jd_xrealloc(t->preds, (t->npreds + 1) * sizeof *t->preds);
    jd_pred *p = &t->preds[t->npreds++];
    memset(p, 0, sizeof *p);
    return p;
}

static void read_set(lua_State *L, int idx, jd_pred *p, const char *loc, const char *path)
{
    if (lua_type(L, idx) != LUA_TTABLE)
        luaL_error(L, "%s: where '%s': in_/not_in expects a list", loc, path);
    size_t n = (size_t)lua_rawlen(L, idx);
    p->set = jd_xcalloc(n ? n : 1, sizeof *p->set);
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, idx, (lua_Integer)i + 1);
        read_val(L, lua_gettop(L), &p->set[i], loc, path);
        p->nset = i + 1;
        lua_pop(L, 1);
    }
}

static int strcmp_p(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Collects the string keys of the table at idx, sorted (pointers stay valid while the
 * table holds them). The array lives in a Lua userdata pushed on the stack. */
static const char **sorted_keys(lua_State *L, int idx, size_t *count, const char *loc, const char *what)
{
    size_t n = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_error(L, "%s: %s: keys must be strings", loc, what);
        n++;
        lua_pop(L, 1);
    }
    const char **keys = lua_newuserdatauv(L, (n ? n : 1) * sizeof *keys, 0);
    size_t i = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        keys[i++] = lua_tostring(L, -1);
    }
    qsort(keys, n, sizeof *keys, strcmp_p);
    *count = n;
    return keys;
}

static void compile_where(cstate *cs, lua_State *L, int tidx, jd_trigger *t)
{
    if (lua_getfield(L, tidx, "where") != LUA_TTABLE) {
        lua_pop(L, 1);
        goto when_fn;
    }
    int w = lua_gettop(L);
    size_t nk;
    const char **keys = sorted_keys(L, w, &nk, t->loc, "where");
    for (size_t k = 0; k < nk; k++) {
        const char *path = keys[k];
        lua_getfield(L, w, path);
        int v = lua_gettop(L);
        if (strcmp(path, "when") == 0 && lua_type(L, v) == LUA_TFUNCTION) {
            t->when_ref = luaL_ref(L, LUA_REGISTRYINDEX);
            continue;
        }
        jd_root root;
        const char *rest;
        size_t restn;
        if (jd_pred_parse_path(path, strlen(path), &root, &rest, &restn))
            luaL_error(L, "%s: where: bad path '%s'", t->loc, path);
        jd_buf_printf(&cs->desc, " %s", path);
        if (lua_type(L, v) == LUA_TTABLE) {
            lua_Integer len = (lua_Integer)lua_rawlen(L, v);
            if (len > 0) { /* a list: shorthand for in_ */
                jd_pred *p = add_pred(t);
                p->root = root;
                p->path = jd_strndup(rest, restn);
                p->plen = restn;
                p->op = JD_OP_IN;
                read_set(L, v, p, t->loc, path);
            } else {
                size_t no;
                const char **ops = sorted_keys(L, v, &no, t->loc, path);
                if (no == 0)
                    luaL_error(L, "%s: where '%s': empty condition", t->loc, path);
                for (size_t o = 0; o < no; o++) {
                    jd_op op;
                    if (jd_op_parse(ops[o], &op))
                        luaL_error(L, "%s: where '%s': unknown operator '%s' (expected %s)", t->loc, path, ops[o],
                                   jd_op_names());
                    jd_pred *p = add_pred(t);
                    p->root = root;
                    p->path = jd_strndup(rest, restn);
                    p->plen = restn;
                    p->op = op;
                    lua_getfield(L, v, ops[o]);
                    int ov = lua_gettop(L);
                    if (op == JD_OP_IN || op == JD_OP_NOT_IN) {
                        read_set(L, ov, p, t->loc, path);
                    } else if (op == JD_OP_EXISTS) {
                        if (lua_type(L, ov) != LUA_TBOOLEAN)
                            luaL_error(L, "%s: where '%s': exists expects true or false", t->loc, path);
                        p->v.kind = JD_V_BOOL;
                        p->v.b = lua_toboolean(L, ov);
                    } else {
                        read_val(L, ov, &p->v, t->loc, path);
                        if ((op == JD_OP_GT || op == JD_OP_GTE || op == JD_OP_LT || op == JD_OP_LTE) &&
                            p->v.kind != JD_V_INT && p->v.kind != JD_V_NUM && p->v.kind != JD_V_STR)
                            luaL_error(L, "%s: where '%s': %s expects a number or string", t->loc, path, ops[o]);
                        if ((op == JD_OP_PREFIX || op == JD_OP_CONTAINS) && root == JD_ROOT_USER_SEGMENTS &&
                            p->v.kind != JD_V_STR)
                            luaL_error(L, "%s: where '%s': expects a segment name", t->loc, path);
                    }
                    jd_buf_printf(&cs->desc, ":%s=%s", ops[o], luaL_tolstring(L, ov, NULL));
                    lua_pop(L, 2);
                }
                lua_pop(L, 1); /* ops */
            }
        } else {
            jd_pred *p = add_pred(t);
            p->root = root;
            p->path = jd_strndup(rest, restn);
            p->plen = restn;
            p->op = root == JD_ROOT_USER_SEGMENTS ? JD_OP_CONTAINS : JD_OP_EQ;
            read_val(L, v, &p->v, t->loc, path);
            jd_buf_printf(&cs->desc, "=%s", luaL_tolstring(L, v, NULL));
            lua_pop(L, 1);
        }
        if (root == JD_ROOT_USER_SEGMENTS && t->preds[t->npreds - 1].op != JD_OP_CONTAINS &&
            t->preds[t->npreds - 1].op != JD_OP_NE && t->preds[t->npreds - 1].op != JD_OP_IN &&
            t->preds[t->npreds - 1].op != JD_OP_NOT_IN)
            luaL_error(L, "%s: where 'user.segments': use a segment name, contains, ne, in_ or not_in", t->loc);
        lua_pop(L, 1);
    }
    lua_pop(L, 2); /* keys, where */
when_fn:
    if (lua_getfield(L, tidx, "when_fn") == LUA_TFUNCTION) {
        if (t->when_ref != LUA_NOREF)
            luaL_error(L, "%s: both where.when and :when() given", t->loc);
        t->when_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    } else {
        lua_pop(L, 1);
    }
}

static void describe(jd_buf *b, const jd_trigger *t)
{
    if (t->is_after)
        jd_buf_printf(b, "after %s", t->delay_text);
    else if (t->type == JD_EV_TRACK)
        jd_buf_printf(b, "on %s", t->name);
    else
        jd_buf_printf(b, "%s %s", jd_event_type_name(t->type), t->name ? t->name : "*");
}

/* Reads the trigger table at tidx. */
static jd_trigger *compile_trigger(cstate *cs, lua_State *L, int tidx, jd_role role, int journey, int stage, int unit)
{
    jd_trigger *t = new_trigger(cs);
    t->role = role;
    t->journey = journey;
    t->stage = stage;
    t->unit = unit;
    t->loc = field_str(L, tidx, "loc");
    if (!t->loc)
        t->loc = jd_strndup("?", 1);
    char kind[16], type[16], action[16];
    field_cstr(L, tidx, "kind", kind, sizeof kind);
    t->is_after = strcmp(kind, "after") == 0;
    if (t->is_after) {
        lua_getfield(L, tidx, "delay_ms");
        t->delay_ms = (int64_t)lua_tointeger(L, -1);
        lua_pop(L, 1);
        t->delay_text = field_str(L, tidx, "delay");
    } else {
        field_cstr(L, tidx, "type", type, sizeof type);
        if (jd_event_type_parse(type, strlen(type), &t->type))
            luaL_error(L, "%s: unknown event type '%s'", t->loc, type);
        t->name = field_str(L, tidx, "name");
    }
    t->fn_ref = field_ref(L, tidx, "fn");
    field_cstr(L, tidx, "action", action, sizeof action);
    t->action = strcmp(action, "go") == 0 ? JD_ACT_GO : strcmp(action, "exit") == 0 ? JD_ACT_EXIT : JD_ACT_NONE;
    jd_buf_putc(&cs->desc, '[');
    describe(&cs->desc, t);
    compile_where(cs, L, tidx, t);
    jd_buf_printf(&cs->desc, " %s]", action);
    return t;
}

static int find_stage(const jd_journey *j, const char *name)
{
    for (size_t i = 0; i < j->nstages; i++)
        if (strcmp(j->stages[i].name, name) == 0)
            return (int)i;
    return -1;
}

static void resolve_target(cstate *cs, lua_State *L, int tidx, jd_journey *j, jd_trigger *t)
{
    if (t->action != JD_ACT_GO)
        return;
    char target[256], loc[512];
    field_cstr(L, tidx, "target", target, sizeof target);
    field_cstr(L, tidx, "go_loc", loc, sizeof loc);
    t->target = find_stage(j, target);
    jd_buf_printf(&cs->desc, "[go %s]", target);
    if (t->target < 0) {
        jd_buf names;
        jd_buf_init(&names);
        for (size_t i = 0; i < j->nstages; i++)
            jd_buf_printf(&names, "%s%s", i ? ", " : "", j->stages[i].name);
        lua_pushfstring(L, "%s: journey '%s': go to unknown stage '%s' (stages: %s)", loc[0] ? loc : t->loc, j->name,
                        target, jd_buf_cstr(&names));
        jd_buf_free(&names);
        lua_error(L);
    }
}

static void check_no_after(lua_State *L, const jd_trigger *t, const char *what)
{
    if (t->is_after)
        luaL_error(L, "%s: j.after can only be used inside a stage, not as %s", t->loc, what);
}

static void rule_id(jd_trigger *t, const char *prefix, int ordinal)
{
    jd_buf b;
    jd_buf_init(&b);
    jd_buf_puts(&b, prefix);
    describe(&b, t);
    jd_buf_printf(&b, "#%d", ordinal);
    t->rule_id = jd_strndup(b.data, b.len);
    jd_buf_free(&b);
}

static void compile_list(cstate *cs, lua_State *L, int jidx, const char *field, jd_role role, jd_journey *j,
                         jd_trigger ***out, size_t *n)
{
    lua_getfield(L, jidx, field);
    int li = lua_gettop(L);
    size_t len = (size_t)lua_rawlen(L, li);
    *out = jd_xcalloc(len ? len : 1, sizeof **out);
    for (size_t i = 0; i < len; i++) {
        lua_rawgeti(L, li, (lua_Integer)i + 1);
        jd_trigger *t = compile_trigger(cs, L, lua_gettop(L), role, j->index, -1, j->unit);
        (*out)[(*n)++] = t;
        t->index = (int)i;
        check_no_after(L, t, field);
        char prefix[300];
        snprintf(prefix, sizeof prefix, "%s/%s/", j->name, field);
        rule_id(t, prefix, (int)i + 1);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

/* A number field: 1 and *v when present, 0 when absent; an error when not a number. */
static int alert_number(lua_State *L, int aidx, const char *f, double *v, const char *loc, const char *jname)
{
    int t = lua_getfield(L, aidx, f);
    if (t != LUA_TNIL && t != LUA_TNUMBER)
        luaL_error(L, "%s: journey '%s': alert %s must be a number", loc, jname, f);
    *v = lua_tonumber(L, -1);
    lua_pop(L, 1);
    return t == LUA_TNUMBER;
}

/* One `alert` entry: { stage =, dropoff_above = | conversion_below =, window = "1h" |
 * "24h" | "7d" (24h), min_sample = (20), channel = } into j->alerts. */
static void compile_alert(cstate *cs, lua_State *L, int aidx, jd_journey *j)
{
    const char *loc = j->loc;
    if (j->nalerts >= JD_MAX_ALERTS)
        luaL_error(L, "%s: journey '%s': at most %d alerts", loc, j->name, JD_MAX_ALERTS);
    jd_alert_spec *a = &j->alerts[j->nalerts];
    memset(a, 0, sizeof *a);
    char ch[256], st[256];
    field_cstr(L, aidx, "channel", ch, sizeof ch);
    field_cstr(L, aidx, "stage", st, sizeof st);
    const jd_channel *chan = ch[0] ? jd_defs_channel(cs->d, ch, strlen(ch)) : NULL;
    if (!ch[0])
        luaL_error(L, "%s: journey '%s': alert needs a channel", loc, j->name);
    if (!chan)
        luaL_error(L, "%s: journey '%s': alert uses unknown channel '%s'", loc, j->name, ch);
    if (strlen(ch) >= sizeof a->channel_name)
        luaL_error(L, "%s: journey '%s': alert channel name too long", loc, j->name);
    a->channel = chan->index;
    memcpy(a->channel_name, ch, strlen(ch) + 1); /* it fits: checked above */
    a->stage = -1;
    if (st[0] && (a->stage = find_stage(j, st)) < 0)
        luaL_error(L, "%s: journey '%s': alert names unknown stage '%s'", loc, j->name, st);
    double drop, conv;
    int has_drop = alert_number(L, aidx, "dropoff_above", &drop, loc, j->name);
    int has_conv = alert_number(L, aidx, "conversion_below", &conv, loc, j->name);
    if (has_drop == has_conv)
        luaL_error(L, "%s: journey '%s': alert needs one of dropoff_above or conversion_below", loc, j->name);
    if (has_drop && a->stage < 0)
        luaL_error(L, "%s: journey '%s': alert dropoff_above needs a stage", loc, j->name);
    a->kind = has_drop ? JD_ALERT_DROPOFF_ABOVE : JD_ALERT_CONVERSION_BELOW;
    a->threshold = has_drop ? drop : conv;
    if (!(a->threshold >= 0 && a->threshold <= 1))
        luaL_error(L, "%s: journey '%s': alert threshold must be between 0 and 1", loc, j->name);
    double ms;
    a->min_sample = 20;
    if (alert_number(L, aidx, "min_sample", &ms, loc, j->name)) {
        if (!(ms >= 0 && ms <= 4e9))
            luaL_error(L, "%s: journey '%s': alert min_sample must be a count", loc, j->name);
        a->min_sample = (uint32_t)ms;
    }
    a->window = JD_WIN_24H;
    int wt = lua_getfield(L, aidx, "window");
    if (wt == LUA_TSTRING) {
        int64_t wms;
        size_t n;
        const char *w = lua_tolstring(L, -1, &n);
        if (jd_duration_parse(w, n, &wms))
            luaL_error(L, "%s: journey '%s': alert window: bad duration '%s'", loc, j->name, w);
        if (wms == 3600000LL)
            a->window = JD_WIN_1H;
        else if (wms == 86400000LL)
            a->window = JD_WIN_24H;
        else if (wms == 7 * 86400000LL)
            a->window = JD_WIN_7D;
        else
            luaL_error(L, "%s: journey '%s': alert window must be \"1h\", \"24h\" or \"7d\", not '%s'", loc, j->name,
                       w);
    } else if (wt != LUA_TNIL) {
        luaL_error(L, "%s: journey '%s': alert window must be a string", loc, j->name);
    }
    lua_pop(L, 1);
    j->nalerts++;
}

/* ---------------------------------------------------------------- versions */

static int dump_writer(lua_State *L, const void *p, size_t n, void *ud)
{
    (void)L;
    jd_buf_append(ud, p, n);
    return 0;
}

typedef struct dump_reader {
    const unsigned char *p, *end;
    size_t isize, nsize; /* sizeof lua_Integer, lua_Number in the header */
    jd_buf *out;
} dump_reader;

/* lua_dump's variable-length size: 7 bits a byte, most significant first, the last byte
 * marked with 0x80. Returns -1 past the end. */
static int dump_size(dump_reader *r, size_t *x)
{
    *x = 0;
    for (int i = 0; i < 10 && r->p < r->end; i++) {
        unsigned b = *r->p++;
        *x = (*x << 7) | (b & 0x7f);
        if (b & 0x80)
            return 0;
    }
    return -1;
}

static int dump_copy(dump_reader *r, size_t n)
{
    if ((size_t)(r->end - r->p) < n)
        return -1;
    jd_buf_append(r->out, r->p, n);
    r->p += n;
    return 0;
}

static int dump_copy_size(dump_reader *r, size_t *x)
{
    if (dump_size(r, x))
        return -1;
    jd_buf_append(r->out, x, sizeof *x);
    return 0;
}

static int dump_string(dump_reader *r)
{
    size_t n;
    return dump_copy_size(r, &n) || (n && dump_copy(r, n - 1));
}

/* One function of a stripped Lua 5.4 dump, copied without its line numbers (which move
 * when lines are added above or inside it). */
static int dump_function(dump_reader *r, int depth)
{
    size_t n, ignored;
    if (depth > 200 || dump_string(r) || dump_size(r, &ignored) || dump_size(r, &ignored) || dump_copy(r, 3))
        return -1;
    if (dump_copy_size(r, &n) || n > (size_t)(r->end - r->p) / 4 || dump_copy(r, n * 4)) /* code */
        return -1;
    if (dump_copy_size(r, &n)) /* constants */
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (r->p >= r->end)
            return -1;
        unsigned tt = *r->p;
        if (dump_copy(r, 1))
            return -1;
        if ((tt == 0x13 && dump_copy(r, r->nsize)) || (tt == 0x03 && dump_copy(r, r->isize)) ||
            ((tt == 0x04 || tt == 0x14) && dump_string(r)))
            return -1;
    }
    if (dump_copy_size(r, &n) || n > (size_t)(r->end - r->p) / 3 || dump_copy(r, n * 3)) /* upvalues */
        return -1;
    if (dump_copy_size(r, &n)) /* nested functions */
        return -1;
    for (size_t i = 0; i < n; i++)
        if (dump_function(r, depth + 1))
            return -1;
    for (int k = 0; k < 4; k++) /* debug information: all empty when stripped */
        if (dump_size(r, &n) || n)
            return -1;
    return 0;
}

/* Appends the stripped bytecode of the function under registry ref to the version text:
 * the same code gives the same bytes whatever its comments, spacing or position. */
static void version_hook(cstate *cs, lua_State *L, int ref, const char *what)
{
    if (ref == LUA_NOREF)
        return;
    jd_buf_printf(&cs->desc, " <%s:", what);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    jd_buf raw;
    jd_buf_init(&raw);
    if (lua_type(L, -1) == LUA_TFUNCTION && !lua_iscfunction(L, -1) && lua_dump(L, dump_writer, &raw, 1) == 0) {
        const unsigned char *p = (const unsigned char *)raw.data;
        size_t before = cs->desc.len;
        dump_reader r = {.p = p, .end = p + raw.len, .out = &cs->desc};
        /* header: signature 4, version, format, data 6, sizes of Instruction, Integer,
         * Number, then a test integer and number, then the count of upvalues */
        if (raw.len < 15 || p[12] != 4 || (r.isize = p[13]) > 16 || (r.nsize = p[14]) > 16 ||
            raw.len < 15 + r.isize + r.nsize + 1) {
            r.p = r.end + 1;
        } else {
            r.p += 15 + r.isize + r.nsize;
            jd_buf_append(&cs->desc, r.p, 1); /* upvalues */
            r.p++;
        }
        if (r.p > r.end || dump_function(&r, 0) || r.p != r.end) { /* unknown layout: the whole dump */
            cs->desc.len = before;
            jd_buf_append(&cs->desc, raw.data, raw.len);
        }
    }
    jd_buf_free(&raw);
    lua_pop(L, 1);
    jd_buf_putc(&cs->desc, '>');
}

static void version_trigger(cstate *cs, lua_State *L, const jd_trigger *t)
{
    version_hook(cs, L, t->when_ref, "when");
    version_hook(cs, L, t->fn_ref, t->rule_id);
}

/* `migrate = { old = "new" | "exit", ["*"] = "exit" | "stage" }` */
static void compile_migrate(lua_State *L, int jidx, jd_journey *j)
{
    j->migrate_other = -1;
    int t = lua_getfield(L, jidx, "migrate");
    if (t == LUA_TNIL) {
        lua_pop(L, 1);
        return;
    }
    if (t != LUA_TTABLE)
        luaL_error(L, "%s: journey '%s': migrate must be a table { old_stage = \"new_stage\", [\"*\"] = \"exit\" }",
                   j->loc, j->name);
    j->migrates = 1;
    int mi = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, mi)) {
        if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "%s: journey '%s': migrate maps stage names to stage names (or \"exit\")", j->loc, j->name);
        const char *from = lua_tostring(L, -2), *to = lua_tostring(L, -1);
        int ti = strcmp(to, "exit") == 0 ? JD_MIGRATE_EXIT : find_stage(j, to);
        if (ti == -1)
            luaL_error(L, "%s: journey '%s': migrate %s -> unknown stage '%s'", j->loc, j->name, from, to);
        if (strcmp(from, "*") == 0) {
            j->migrate_other = ti;
        } else {
            j->migrate = jd_xrealloc(j->migrate, (j->nmigrate + 1) * sizeof *j->migrate);
            j->migrate[j->nmigrate].from = jd_strndup(from, strlen(from));
            j->migrate[j->nmigrate++].to = ti;
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

static void compile_journey(cstate *cs, lua_State *L, int jidx, int index)
{
    jd_defs *d = cs->d;
    jd_journey *j = &d->journeys[index];
    j->index = index;
    j->name = field_str(L, jidx, "name");
    j->loc = field_str(L, jidx, "loc");
    lua_getfield(L, jidx, "seq");
    j->unit = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    jd_buf_reset(&cs->desc);
    jd_buf_printf(&cs->desc, "journey %s", j->name);
    if (jd_map_put(&d->journey_by_name, j->name, strlen(j->name), j))
        luaL_error(L, "%s: journey '%s' defined twice", j->loc, j->name);

    /* stages first, so targets resolve */
    lua_getfield(L, jidx, "stages");
    int si = lua_gettop(L);
    j->nstages = (size_t)lua_rawlen(L, si);
    j->stages = jd_xcalloc(j->nstages, sizeof *j->stages);
    for (size_t s = 0; s < j->nstages; s++) {
        jd_stage *st = &j->stages[s];
        st->enter_ref = LUA_NOREF;
        lua_rawgeti(L, si, (lua_Integer)s + 1);
        st->name = field_str(L, -1, "name");
        st->loc = field_str(L, -1, "loc");
        lua_pop(L, 1);
        for (size_t k = 0; k < s; k++)
            if (strcmp(j->stages[k].name, st->name) == 0)
                luaL_error(L, "%s: journey '%s': stage '%s' defined twice", st->loc, j->name, st->name);
    }

    char tmp[64];
    field_cstr(L, jidx, "reentry", tmp, sizeof tmp);
    if (strcmp(tmp, "never") == 0) {
        j->reentry = JD_REENTRY_NEVER;
    } else if (strcmp(tmp, "always") == 0) {
        j->reentry = JD_REENTRY_ALWAYS;
    } else if (jd_duration_parse(tmp, strlen(tmp), &j->cooldown_ms) == 0) {
        j->reentry = JD_REENTRY_COOLDOWN;
    } else {
        luaL_error(L, "%s: journey '%s': reentry must be \"never\", \"always\" or a cooldown like \"30d\", not '%s'",
                   j->loc, j->name, tmp);
    }
    jd_buf_printf(&cs->desc, " reentry=%s", tmp);
    j->key = field_str(L, jidx, "key");
    if (j->key) {
        jd_root root;
        const char *rest;
        size_t rn;
        j->keylen = strlen(j->key);
        if (jd_pred_parse_path(j->key, j->keylen, &root, &rest, &rn) || root != JD_ROOT_DEFAULT)
            luaL_error(L, "%s: journey '%s': key must be a property path like \"cart_id\"", j->loc, j->name);
        jd_buf_printf(&cs->desc, " key=%s", j->key);
    }

    lua_getfield(L, jidx, "entry");
    j->entry = compile_trigger(cs, L, lua_gettop(L), JD_ROLE_ENTRY, index, -1, j->unit);
    check_no_after(L, j->entry, "entry");
    if (j->entry->action == JD_ACT_EXIT)
        luaL_error(L, "%s: journey '%s': an entry cannot :exit()", j->entry->loc, j->name);
    resolve_target(cs, L, lua_gettop(L), j, j->entry);
    j->entry_stage = j->entry->action == JD_ACT_GO ? j->entry->target : 0;
    char prefix[300];
    snprintf(prefix, sizeof prefix, "%s/entry/", j->name);
    rule_id(j->entry, prefix, 1);
    lua_pop(L, 1);
    compile_list(cs, L, jidx, "goal", JD_ROLE_GOAL, j, &j->goals, &j->ngoals);
    compile_list(cs, L, jidx, "exit", JD_ROLE_EXIT, j, &j->exits, &j->nexits);

    for (size_t s = 0; s < j->nstages; s++) {
        jd_stage *st = &j->stages[s];
        lua_rawgeti(L, si, (lua_Integer)s + 1);
        int sti = lua_gettop(L);
        st->enter_ref = field_ref(L, sti, "enter");
        jd_buf_printf(&cs->desc, " stage %s%s", st->name, st->enter_ref != LUA_NOREF ? " enter" : "");
        lua_getfield(L, sti, "triggers");
        int ti = lua_gettop(L);
        size_t nt = (size_t)lua_rawlen(L, ti);
        st->on = jd_xcalloc(nt ? nt : 1, sizeof *st->on);
        st->after = jd_xcalloc(nt ? nt : 1, sizeof *st->after);
        for (size_t k = 0; k < nt; k++) {
            lua_rawgeti(L, ti, (lua_Integer)k + 1);
            int tt = lua_gettop(L);
            char kind[16];
            field_cstr(L, tt, "kind", kind, sizeof kind);
            int after = strcmp(kind, "after") == 0;
            jd_trigger *t =
                compile_trigger(cs, L, tt, after ? JD_ROLE_TIMEOUT : JD_ROLE_TRANSITION, index, (int)s, j->unit);
            resolve_target(cs, L, tt, j, t);
            if (!after && t->action == JD_ACT_NONE && t->fn_ref == LUA_NOREF)
                luaL_error(L, "%s: this trigger does nothing: give it :go \"stage\", :exit() or a function", t->loc);
            snprintf(prefix, sizeof prefix, "%s/%s/", j->name, st->name);
            if (after) {
                if (st->nafter >= 65535)
                    luaL_error(L, "%s: too many j.after in one stage", t->loc);
                t->index = (int)st->nafter;
                st->after[st->nafter++] = t;
                rule_id(t, prefix, (int)st->nafter);
            } else {
                t->index = (int)st->non;
                st->on[st->non++] = t;
                rule_id(t, prefix, (int)st->non);
            }
            lua_pop(L, 1);
        }
        lua_pop(L, 2);
    }
    lua_pop(L, 1); /* stages */

    lua_getfield(L, jidx, "alert");
    int ai = lua_gettop(L);
    if (lua_type(L, ai) == LUA_TTABLE) {
        if (lua_rawlen(L, ai) > 0) {
            for (lua_Integer k = 1; k <= (lua_Integer)lua_rawlen(L, ai); k++) {
                lua_rawgeti(L, ai, k);
                if (lua_type(L, -1) == LUA_TTABLE)
                    compile_alert(cs, L, lua_gettop(L), j);
                lua_pop(L, 1);
            }
        } else {
            compile_alert(cs, L, ai, j);
        }
    }
    lua_pop(L, 1);
    compile_migrate(L, jidx, j);
    version_trigger(cs, L, j->entry);
    for (size_t k = 0; k < j->ngoals; k++)
        version_trigger(cs, L, j->goals[k]);
    for (size_t k = 0; k < j->nexits; k++)
        version_trigger(cs, L, j->exits[k]);
    for (size_t s = 0; s < j->nstages; s++) {
        const jd_stage *st = &j->stages[s];
        version_hook(cs, L, st->enter_ref, st->name);
        for (size_t k = 0; k < st->non; k++)
            version_trigger(cs, L, st->on[k]);
        for (size_t k = 0; k < st->nafter; k++)
            version_trigger(cs, L, st->after[k]);
    }
    j->version = jd_hash(cs->desc.data, cs->desc.len, 0x4a4f55524e4559ULL);
}

static int compile_cf(lua_State *L)
{
    cstate *cs = lua_touserdata(L, 1);
    jd_defs *d = cs->d;
    lua_getfield(L, LUA_REGISTRYINDEX, "jd.loaded");
    if (lua_getfield(L, -1, "journey") != LUA_TTABLE) {
        /* the script never required the module: an empty definition set */
        lua_settop(L, 1);
        jd_defs_build_index(d);
        return 0;
    }
    lua_getfield(L, -1, "_registry");
    lua_call(L, 0, 1);
    int reg = lua_gettop(L);

    /* j.config, packed for the C side */
    lua_getfield(L, reg, "config");
    msgpack_packer pk;
    msgpack_packer_init(&pk, &cs->config, jd_buf_msgpack_write);
    const char *perr = NULL;
    if (jd_lua_pack(L, -1, &pk, &perr))
        luaL_error(L, "config: %s", perr);
    int tzt = lua_getfield(L, -1, "default_timezone"); /* send windows' zone when none is named */
    if (tzt != LUA_TNIL &&
        (tzt != LUA_TSTRING || !jd_tzcache_get(&cs->e->zones, lua_tostring(L, -1), lua_rawlen(L, -1)))) {
        char tzloc[512];
        field_cstr(L, reg, "default_timezone_loc", tzloc, sizeof tzloc);
        luaL_error(L, "%s: j.config default_timezone: '%s' is not a zone of the system tz database", tzloc,
                   tzt == LUA_TSTRING ? lua_tostring(L, -1) : luaL_typename(L, -1));
    }
    lua_pop(L, 2);

    /* channels */
    lua_getfield(L, reg, "channel_list");
    int cl = lua_gettop(L);
    d->nchannels = (size_t)lua_rawlen(L, cl);
    d->channels = jd_xcalloc(d->nchannels ? d->nchannels : 1, sizeof *d->channels);
    for (size_t i = 0; i < d->nchannels; i++) {
        lua_rawgeti(L, cl, (lua_Integer)i + 1);
        jd_channel *c = &d->channels[i];
        c->index = (int)i;
        c->name = field_str(L, -1, "name");
        c->type = field_str(L, -1, "type");
        char loc[512];
        field_cstr(L, -1, "loc", loc, sizeof loc);
        if (!c->type)
            luaL_error(L, "%s: channel '%s': needs a type (webhook, slack, postmark, sendgrid, smtp, ...)", loc,
                       c->name);
        char where[600];
        snprintf(where, sizeof where, "%s: channel '%s'", loc, c->name);
        if (lua_getfield(L, -1, "window") != LUA_TNIL) {
            c->window = jd_xcalloc(1, sizeof *c->window);
            jd_lua_window(cs->e, L, -1, c->window, where);
        }
        lua_pop(L, 1);
        if (lua_getfield(L, -1, "cap") != LUA_TNIL)
            jd_lua_cap(L, -1, &c->cap, where);
        lua_pop(L, 1);
        jd_map_put(&d->channel_by_name, c->name, strlen(c->name), c);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);

    /* CRM sources */
    lua_getfield(L, reg, "source_list");
    int sl = lua_gettop(L);
    size_t ns = (size_t)lua_rawlen(L, sl);
    d->sources = jd_xcalloc(ns ? ns : 1, sizeof *d->sources);
    for (size_t i = 0; i < ns; i++) {
        lua_rawgeti(L, sl, (lua_Integer)i + 1);
        jd_source *src = &d->sources[d->nsources++];
        src->verify_ref = src->map_ref = LUA_NOREF;
        src->name = field_str(L, -1, "name");
        src->loc = field_str(L, -1, "loc");
        lua_getfield(L, -1, "verify");
        if (!lua_isnil(L, -1) && !lua_isfunction(L, -1))
            luaL_error(L, "%s: source '%s': verify must be a function", src->loc, src->name);
        lua_pop(L, 1);
        lua_getfield(L, -1, "map");
        if (!lua_isfunction(L, -1))
            luaL_error(L, "%s: source '%s': needs map = function(body, req) ... end", src->loc, src->name);
        lua_pop(L, 1);
        for (const char *c = src->name; *c; c++)
            if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '-' ||
                  *c == '_'))
                luaL_error(L, "%s: source '%s': names are letters, digits, - and _ (they appear in URLs)", src->loc,
                           src->name);
        src->verify_ref = field_ref(L, lua_gettop(L), "verify");
        src->map_ref = field_ref(L, lua_gettop(L), "map");
        lua_pop(L, 1);
    }
    lua_pop(L, 1);

    /* journeys */
    lua_getfield(L, reg, "journeys");
    int jl = lua_gettop(L);
    d->njourneys = (size_t)lua_rawlen(L, jl);
    if (d->njourneys > 65535)
        luaL_error(L, "too many journeys");
    d->journeys = jd_xcalloc(d->njourneys ? d->njourneys : 1, sizeof *d->journeys);
    for (size_t i = 0; i < d->njourneys; i++) {
        lua_rawgeti(L, jl, (lua_Integer)i + 1);
        compile_journey(cs, L, lua_gettop(L), (int)i);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);

    /* rules: triggers never placed in a journey */
    lua_getfield(L, reg, "triggers");
    int tl = lua_gettop(L);
    size_t n = (size_t)lua_rawlen(L, tl);
    int ordinal = 0;
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, tl, (lua_Integer)i + 1);
        int ti = lua_gettop(L);
        lua_getfield(L, ti, "used");
        int used = lua_toboolean(L, -1);
        lua_pop(L, 1);
        if (!used) {
            lua_getfield(L, ti, "seq");
            int unit = (int)lua_tointeger(L, -1);
            lua_pop(L, 1);
            jd_trigger *t = compile_trigger(cs, L, ti, JD_ROLE_RULE, -1, -1, unit);
            if (t->is_after)
                luaL_error(L, "%s: j.after is only meaningful inside a stage", t->loc);
            if (t->fn_ref == LUA_NOREF)
                luaL_error(L,
                           "%s: this trigger is never used: put it in a journey, or give it a function to make "
                           "it a rule",
                           t->loc);
            if (t->action != JD_ACT_NONE)
                luaL_error(L, "%s: :go and :exit need a stage; a rule outside journeys can only run a function",
                           t->loc);
            rule_id(t, "rule/", ++ordinal);
        }
        lua_pop(L, 1);
    }
    lua_settop(L, 1);
    jd_defs_build_index(d);
    return 0;
}

void jd_defs_release_refs(lua_State *L, jd_defs *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->ntriggers; i++) {
        luaL_unref(L, LUA_REGISTRYINDEX, d->triggers[i]->fn_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, d->triggers[i]->when_ref);
    }
    for (size_t i = 0; i < d->njourneys; i++)
        for (size_t s = 0; s < d->journeys[i].nstages; s++)
            luaL_unref(L, LUA_REGISTRYINDEX, d->journeys[i].stages[s].enter_ref);
    for (size_t i = 0; i < d->nsources; i++) {
        luaL_unref(L, LUA_REGISTRYINDEX, d->sources[i].verify_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, d->sources[i].map_ref);
    }
}

jd_defs *jd_compile(jd_engine *e, char *err, size_t errlen)
{
    cstate cs = {.e = e, .d = jd_xcalloc(1, sizeof(jd_defs))};
    jd_buf_init(&cs.desc);
    jd_buf_init(&cs.config);
    jd_map_init(&cs.d->channel_by_name);
    jd_map_init(&cs.d->journey_by_name);
    for (int i = 0; i < JD_EV_NTYPES; i++)
        jd_map_init(&cs.d->index[i]);
    lua_State *L = jd_script_L(e->script);
    lua_pushcfunction(L, compile_cf);
    lua_pushlightuserdata(L, &cs);
    jd_script_error se = {0};
    if (jd_script_call_ns(e->script, 1, 0, 0, &se)) {
        jd_script_error_text(&se, err, errlen);
        jd_script_error_clear(&se);
        jd_defs_release_refs(L, cs.d);
        jd_defs_free(cs.d);
        jd_buf_free(&cs.desc);
        jd_buf_free(&cs.config);
        return NULL;
    }
    jd_buf_free(&cs.desc);
    jd_buf_free(&e->config);
    e->config = cs.config;
    return cs.d;
}
