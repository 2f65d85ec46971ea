/* lua_msgpack: converts between msgpack objects and Lua values.
 * Uses msgpack-c, the Lua C API. Tables become maps with keys in sorted order (so
 * output is deterministic) or arrays (sequences, or tables marked with j.array). */
#ifndef JD_LUA_MSGPACK_H
#define JD_LUA_MSGPACK_H

#include <lua.h>
#include <msgpack.h>

#define JD_LUA_MAX_DEPTH 32

/* Registry key of the metatable that marks arrays (journey.array). */
#define JD_ARRAY_MT "journey.array"

/* Pushes obj as a Lua value. Arrays get the array metatable. */
void jd_lua_push_msgpack(lua_State *L, const msgpack_object *obj);
/* Packs the value at idx. Returns 0, or -1 with *err set to a static reason
 * (functions, userdata, too deep, keys that are not strings or numbers). */
int jd_lua_pack(lua_State *L, int idx, msgpack_packer *pk, const char **err);

#endif
