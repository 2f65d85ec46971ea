/* lua_msgpack: converts between msgpack (objects or packed bytes) and Lua values.
 * Uses msgpack-c, event (its msgpack reader), the Lua C API. Tables become maps with
 * keys in sorted order (so output is deterministic) or arrays (sequences, or tables
 * marked with j.array). */
#ifndef JD_LUA_MSGPACK_H
#define JD_LUA_MSGPACK_H

#include <lua.h>
#include <msgpack.h>

#define JD_LUA_MAX_DEPTH 32

/* Registry key of the metatable that marks arrays (journey.array). */
#define JD_ARRAY_MT "journey.array"

/* Pushes obj as a Lua value. Arrays get the array metatable. */
void jd_lua_push_msgpack(lua_State *L, const msgpack_object *obj);
/* Pushes the one msgpack value that fills data[0..len) exactly, as jd_mp_unpack and
 * jd_lua_push_msgpack would (the same tables, built in the same order), without
 * building the tree. key (may be NULL) pushes the outermost map's string keys (a cache
 * of kept strings, say); ud is passed to it. Returns 0, or -1 with nothing pushed where
 * jd_mp_unpack fails; raises what jd_lua_push_msgpack would (a nil or NaN key). */
typedef void (*jd_lua_key_fn)(lua_State *L, void *ud, const char *s, size_t n);
int jd_lua_push_packed(lua_State *L, const void *data, size_t len, jd_lua_key_fn key, void *ud);
/* Packs the value at idx. Returns 0, or -1 with *err set to a static reason
 * (functions, userdata, too deep, keys that are not strings or numbers). */
int jd_lua_pack(lua_State *L, int idx, msgpack_packer *pk, const char **err);

#endif
