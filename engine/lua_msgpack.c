#include "lua_msgpack.h"

#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "event.h"

/* Anything but an array or a map (those are pushed by their callers). */
static inline void push_scalar(lua_State *L, const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: lua_pushnil(L); break;
    case MSGPACK_OBJECT_BOOLEAN: lua_pushboolean(L, o->via.boolean); break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        /* above INT64_MAX there is no Lua integer: use a float rather than wrap */
        if (o->via.u64 > (uint64_t)INT64_MAX)
            lua_pushnumber(L, (lua_Number)o->via.u64);
        else
            lua_pushinteger(L, (lua_Integer)o->via.u64);
        break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: lua_pushinteger(L, (lua_Integer)o->via.i64); break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: lua_pushnumber(L, o->via.f64); break;
    case MSGPACK_OBJECT_STR: lua_pushlstring(L, o->via.str.ptr, o->via.str.size); break;
    case MSGPACK_OBJECT_BIN: lua_pushlstring(L, o->via.bin.ptr, o->via.bin.size); break;
    default: lua_pushnil(L); break;
    }
}

void jd_lua_push_msgpack(lua_State *L, const msgpack_object *o)
{
    luaL_checkstack(L, 4, "nesting too deep");
    switch (o->type) {
    case MSGPACK_OBJECT_ARRAY:
        lua_createtable(L, (int)o->via.array.size, 0);
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            jd_lua_push_msgpack(L, &o->via.array.ptr[i]);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        luaL_setmetatable(L, JD_ARRAY_MT);
        break;
    case MSGPACK_OBJECT_MAP:
        lua_createtable(L, 0, (int)o->via.map.size);
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            const msgpack_object *k = &o->via.map.ptr[i].key;
            if (k->type == MSGPACK_OBJECT_NIL)
                continue;
            jd_lua_push_msgpack(L, k);
            jd_lua_push_msgpack(L, &o->via.map.ptr[i].val);
            lua_rawset(L, -3);
        }
        break;
    default: push_scalar(L, o); break;
    }
}

/* ---------------------------------------------------------------- from packed bytes */

typedef struct packed {
    jd_mp_cursor c;
    int bad; /* a key lua_rawset refuses, met first: 1 nil (an ext), 2 NaN; raised at the end */
} packed;

static int push_items(lua_State *L, packed *s, const msgpack_object *o, uint32_t n, int depth, jd_lua_key_fn key,
                      void *ud);

/* The next object, read at depth. Inlined: it runs for every value. */
static inline __attribute__((always_inline)) int push_next(lua_State *L, packed *s, int depth)
{
    msgpack_object o;
    uint32_t n = 0;
    if (jd_mp_next(&s->c, &o, &n, depth))
        return -1;
    if (o.type == MSGPACK_OBJECT_ARRAY || o.type == MSGPACK_OBJECT_MAP)
        return push_items(L, s, &o, n, depth, NULL, NULL);
    push_scalar(L, &o);
    return 0;
}

/* The items of a container whose head (o, n items) has been read, as
 * jd_lua_push_msgpack pushes them. key: the map's string keys, when not NULL. The
 * stack is checked once for the container and the key and value of an item. */
static int push_items(lua_State *L, packed *s, const msgpack_object *o, uint32_t n, int depth, jd_lua_key_fn key,
                      void *ud)
{
    luaL_checkstack(L, 4, "nesting too deep");
    if (o->type == MSGPACK_OBJECT_ARRAY) {
        lua_createtable(L, (int)n, 0);
        for (uint32_t i = 0; i < n; i++) {
            if (push_next(L, s, depth + 1))
                return -1;
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        luaL_setmetatable(L, JD_ARRAY_MT);
        return 0;
    }
    lua_createtable(L, 0, (int)n);
    for (uint32_t i = 0; i < n; i++) {
        msgpack_object k;
        uint32_t kn = 0;
        if (jd_mp_next(&s->c, &k, &kn, depth + 1))
            return -1;
        if (k.type == MSGPACK_OBJECT_STR && key) {
            key(L, ud, k.via.str.ptr, k.via.str.size);
        } else if (k.type == MSGPACK_OBJECT_ARRAY || k.type == MSGPACK_OBJECT_MAP) {
            if (push_items(L, s, &k, kn, depth + 1, NULL, NULL))
                return -1;
        } else if (k.type == MSGPACK_OBJECT_NIL) { /* skipped, value and all */
            if (jd_mp_skip_next(&s->c, depth + 1))
                return -1;
            continue;
        } else {
            push_scalar(L, &k);
        }
        if (push_next(L, s, depth + 1))
            return -1;
        if (k.type == MSGPACK_OBJECT_STR) {
            lua_rawset(L, -3);
            continue;
        }
        /* a key lua_rawset refuses (nil: an ext; NaN) fails the push once every byte
         * is read, so that unreadable bytes still give their -1 first */
        if (k.type == MSGPACK_OBJECT_EXT ||
            ((k.type == MSGPACK_OBJECT_FLOAT32 || k.type == MSGPACK_OBJECT_FLOAT64) && isnan(k.via.f64))) {
            if (!s->bad)
                s->bad = k.type == MSGPACK_OBJECT_EXT ? 1 : 2;
            lua_pop(L, 2);
            continue;
        }
        lua_rawset(L, -3);
    }
    return 0;
}

int jd_lua_push_packed(lua_State *L, const void *data, size_t len, jd_lua_key_fn key, void *ud)
{
    int base = lua_gettop(L);
    packed s = {{data, (const unsigned char *)data + len}, 0};
    msgpack_object o;
    uint32_t n = 0;
    int rc = jd_mp_next(&s.c, &o, &n, 0);
    if (rc == 0 && (o.type == MSGPACK_OBJECT_ARRAY || o.type == MSGPACK_OBJECT_MAP)) {
        rc = push_items(L, &s, &o, n, 0, key, ud);
    } else if (rc == 0) {
        luaL_checkstack(L, 1, "nesting too deep");
        push_scalar(L, &o);
    }
    if (rc || s.c.p != s.c.end) {
        lua_settop(L, base);
        return -1;
    }
    if (s.bad) { /* the error lua_rawset raises, in this Lua's words */
        lua_settop(L, base);
        lua_createtable(L, 0, 1);
        if (s.bad == 1)
            lua_pushnil(L);
        else
            lua_pushnumber(L, (lua_Number)NAN);
        lua_pushboolean(L, 1);
        lua_rawset(L, -3);
    }
    return 0;
}

typedef struct key {
    const char *s; /* points into Lua strings (alive while the table is) or tmp */
    size_t n;
    char tmp[40];
    int is_num;
    lua_Integer i;
    lua_Number d;
    int is_int;
    int vidx; /* where its value is on the stack (a small map), else 0 */
} key;

static int keycmp(const void *a, const void *b)
{
    const key *x = a, *y = b;
    size_t m = x->n < y->n ? x->n : y->n;
    /* a number's text is in its own tmp, wherever a sort has moved it */
    int c = memcmp(x->is_num ? x->tmp : x->s, y->is_num ? y->tmp : y->s, m);
    if (c)
        return c;
    return x->n < y->n ? -1 : x->n > y->n;
}

static int pack_value(lua_State *L, int idx, msgpack_packer *pk, int depth, const char **err);

/* Sorts keys by keycmp, stably (what qsort's merge sort gives for a small array). */
static void sort_keys(key *k, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        key x = k[i];
        size_t j = i;
        while (j > 0 && keycmp(&k[j - 1], &x) > 0) {
            k[j] = k[j - 1];
            j--;
        }
        k[j] = x;
    }
}

static void pack_array(lua_State *L, int idx, msgpack_packer *pk, int depth, lua_Integer len, const char **err,
                       int *rc);

#define SMALL 16

/* A table of at most SMALL entries, in one walk: keys and values stay on the stack as
 * they are met (no second walk to count them, no lookup of a value by its key). Packs it
 * as pack_table's general path would (an array when its entries are exactly 1..len) and
 * returns 0 or -1; returns 1 with nothing packed when the table is bigger. */
static int pack_small(lua_State *L, int idx, msgpack_packer *pk, int depth, lua_Integer len, const char **err)
{
    if (!lua_checkstack(L, 2 * SMALL + 4))
        return 1;
    key keys[SMALL];
    int base = lua_gettop(L), rc = 0, bad = 0;
    size_t count = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (count == SMALL) {
            lua_settop(L, base);
            return 1;
        }
        key *ky = &keys[count++];
        ky->vidx = lua_gettop(L);
        ky->is_num = 0;
        lua_pushvalue(L, -2);
        int t = lua_type(L, -1);
        if (t == LUA_TSTRING) {
            ky->s = lua_tolstring(L, -1, &ky->n);
        } else if (t == LUA_TNUMBER) {
            ky->is_num = 1;
            ky->is_int = lua_isinteger(L, -1);
            if (ky->is_int)
                ky->i = lua_tointeger(L, -1);
            else
                ky->d = lua_tonumber(L, -1);
        } else {
            bad = 1; /* an error only if this is not packed as an array */
        }
    }
    if (len > 0 && (size_t)len == count) {
        lua_settop(L, base);
        pack_array(L, idx, pk, depth, len, err, &rc);
        return rc;
    }
    if (bad) {
        *err = "table keys must be strings or numbers";
        lua_settop(L, base);
        return -1;
    }
    for (size_t i = 0; i < count; i++) {
        key *ky = &keys[i];
        if (!ky->is_num)
            continue;
        if (ky->is_int)
            ky->n = (size_t)snprintf(ky->tmp, sizeof ky->tmp, "%lld", (long long)ky->i);
        else
            ky->n = (size_t)snprintf(ky->tmp, sizeof ky->tmp, "%.17g", ky->d);
    }
    sort_keys(keys, count); /* moves keys: tmp-backed ones point at their own again below */
    for (size_t i = 0; i < count; i++)
        if (keys[i].is_num)
            keys[i].s = keys[i].tmp;
    msgpack_pack_map(pk, count);
    for (size_t i = 0; i < count && !rc; i++) {
        jd_mp_pack_str(pk, keys[i].s, keys[i].n);
        rc = pack_value(L, keys[i].vidx, pk, depth + 1, err);
    }
    lua_settop(L, base);
    return rc;
}

static int pack_table(lua_State *L, int idx, msgpack_packer *pk, int depth, const char **err)
{
    if (depth >= JD_LUA_MAX_DEPTH) { /* depths 0..31: what msgpack-c unpacks again */
        *err = "table nesting too deep (more than 32 levels)";
        return -1;
    }
    if (!lua_checkstack(L, 6)) {
        *err = "Lua stack exhausted";
        return -1;
    }
    int marked = 0;
    if (lua_getmetatable(L, idx)) {
        luaL_getmetatable(L, JD_ARRAY_MT);
        marked = lua_rawequal(L, -1, -2);
        lua_pop(L, 2);
    }
    lua_Integer len = (lua_Integer)lua_rawlen(L, idx);
    if (!marked) {
        int rc = pack_small(L, idx, pk, depth, len, err);
        if (rc != 1)
            return rc;
    }
    size_t count = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        count++;
        lua_pop(L, 1);
    }
    if (marked || (len > 0 && (size_t)len == count)) {
        int rc = 0;
        pack_array(L, idx, pk, depth, len, err, &rc);
        return rc;
    }
    /* A small map keeps its keys and values on the stack while it is packed: a value is
     * not looked up again by its key (which hashed the key string anew), and the keys
     * need no allocation. */
    key small[16];
    int on_stack = count <= sizeof small / sizeof small[0] && lua_checkstack(L, (int)(2 * count + 2));
    key *keys = !count ? NULL : on_stack ? small : jd_xcalloc(count, sizeof *keys);
    if (on_stack)
        memset(small, 0, count * sizeof *keys);
    int base = lua_gettop(L);
    size_t k = 0;
    int rc = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        key *ky = &keys[k++];
        if (on_stack) { /* key, value stay; a copy of the key goes on for lua_next */
            ky->vidx = lua_gettop(L);
            lua_pushvalue(L, -2);
        } else {
            lua_pop(L, 1);
        }
        int t = lua_type(L, -1);
        if (t == LUA_TSTRING) {
            ky->s = lua_tolstring(L, -1, &ky->n);
        } else if (t == LUA_TNUMBER) {
            ky->is_num = 1;
            if (lua_isinteger(L, -1)) {
                ky->is_int = 1;
                ky->i = lua_tointeger(L, -1);
                ky->n = (size_t)snprintf(ky->tmp, sizeof ky->tmp, "%lld", (long long)ky->i);
            } else {
                ky->d = lua_tonumber(L, -1);
                ky->n = (size_t)snprintf(ky->tmp, sizeof ky->tmp, "%.17g", ky->d);
            }
            ky->s = ky->tmp;
        } else {
            *err = "table keys must be strings or numbers";
            lua_pop(L, 1);
            rc = -1;
            goto done;
        }
    }
    /* tmp-backed keys must point at their own storage after qsort moves them */
    if (count)
        qsort(keys, count, sizeof *keys, keycmp);
    for (size_t i = 0; i < count; i++)
        if (keys[i].is_num)
            keys[i].s = keys[i].tmp;
    msgpack_pack_map(pk, count);
    for (size_t i = 0; i < count; i++) {
        key *ky = &keys[i];
        jd_mp_pack_str(pk, ky->s, ky->n);
        if (ky->vidx) {
            if ((rc = pack_value(L, ky->vidx, pk, depth + 1, err)))
                goto done;
            continue;
        }
        if (ky->is_num) {
            if (ky->is_int)
                lua_pushinteger(L, ky->i);
            else
                lua_pushnumber(L, ky->d);
        } else {
            lua_pushlstring(L, ky->s, ky->n);
        }
        lua_rawget(L, idx);
        rc = pack_value(L, lua_gettop(L), pk, depth + 1, err);
        lua_pop(L, 1);
        if (rc)
            goto done;
    }
done:
    lua_settop(L, base);
    if (keys != small)
        free(keys);
    return rc;
}

static int pack_value(lua_State *L, int idx, msgpack_packer *pk, int depth, const char **err)
{
    switch (lua_type(L, idx)) {
    case LUA_TNIL: msgpack_pack_nil(pk); return 0;
    case LUA_TBOOLEAN:
        if (lua_toboolean(L, idx))
            msgpack_pack_true(pk);
        else
            msgpack_pack_false(pk);
        return 0;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) {
            msgpack_pack_int64(pk, (int64_t)lua_tointeger(L, idx));
        } else {
            double d = lua_tonumber(L, idx);
            if (isfinite(d))
                msgpack_pack_double(pk, d);
            else
                msgpack_pack_nil(pk);
        }
        return 0;
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        jd_mp_pack_str(pk, s, n);
        return 0;
    }
    case LUA_TTABLE: return pack_table(L, idx, pk, depth, err);
    default: *err = "cannot encode a function, thread or userdata"; return -1;
    }
}

static void pack_array(lua_State *L, int idx, msgpack_packer *pk, int depth, lua_Integer len, const char **err, int *rc)
{
    msgpack_pack_array(pk, (size_t)len);
    for (lua_Integer i = 1; i <= len; i++) {
        lua_rawgeti(L, idx, i);
        int r = pack_value(L, lua_gettop(L), pk, depth + 1, err);
        lua_pop(L, 1);
        if (r) {
            *rc = -1;
            return;
        }
    }
    *rc = 0;
}

int jd_lua_pack(lua_State *L, int idx, msgpack_packer *pk, const char **err)
{
    *err = NULL;
    return pack_value(L, lua_absindex(L, idx), pk, 0, err);
}
