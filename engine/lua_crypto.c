/* lua_crypto: require "journey.crypto" — what webhook verification needs, on OpenSSL:
 * HMAC-SHA256, SHA-256, base64, hex and a constant-time comparison. Uses OpenSSL
 * libcrypto, the Lua C API. */
#include <lauxlib.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <string.h>

#include "engine_internal.h"

/*** @function crypto.hmac_sha256(key, message) -> raw 32 bytes */
static int l_hmac_sha256(lua_State *L)
{
    size_t kn, mn;
    const char *k = luaL_checklstring(L, 1, &kn);
    const char *m = luaL_checklstring(L, 2, &mn);
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (!HMAC(EVP_sha256(), k, (int)kn, (const unsigned char *)m, mn, out, &n))
        return luaL_error(L, "hmac_sha256 failed");
    lua_pushlstring(L, (const char *)out, n);
    return 1;
}

/*** @function crypto.sha256(message) -> raw 32 bytes */
static int l_sha256(lua_State *L)
{
    size_t mn;
    const char *m = luaL_checklstring(L, 1, &mn);
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (!EVP_Digest(m, mn, out, &n, EVP_sha256(), NULL))
        return luaL_error(L, "sha256 failed");
    lua_pushlstring(L, (const char *)out, n);
    return 1;
}

/*** @function crypto.base64(raw) -> text */
static int l_base64(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    luaL_Buffer b;
    char *out = luaL_buffinitsize(L, &b, 4 * ((n + 2) / 3) + 1);
    int len = EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)s, (int)n);
    luaL_pushresultsize(&b, (size_t)len);
    return 1;
}

/*** @function crypto.base64_decode(text) -> raw, or nil for bad input */
static int l_base64_decode(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    if (n % 4) {
        lua_pushnil(L);
        return 1;
    }
    luaL_Buffer b;
    char *out = luaL_buffinitsize(L, &b, n / 4 * 3 + 1);
    int len = EVP_DecodeBlock((unsigned char *)out, (const unsigned char *)s, (int)n);
    if (len < 0) {
        lua_pushnil(L);
        return 1;
    }
    for (size_t i = n; i > 0 && s[i - 1] == '='; i--)
        len--; /* EVP_DecodeBlock counts padding as zero bytes */
    luaL_pushresultsize(&b, (size_t)len);
    return 1;
}

/*** @function crypto.hex(raw) -> lowercase hex */
static int l_hex(lua_State *L)
{
    size_t n;
    const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &n);
    static const char hx[] = "0123456789abcdef";
    luaL_Buffer b;
    char *out = luaL_buffinitsize(L, &b, 2 * n);
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hx[s[i] >> 4];
        out[2 * i + 1] = hx[s[i] & 15];
    }
    luaL_pushresultsize(&b, 2 * n);
    return 1;
}

/*** @function crypto.equal(a, b) -> boolean, in time independent of where they differ */
static int l_equal(lua_State *L)
{
    size_t an, bn;
    const char *a = luaL_checklstring(L, 1, &an);
    const char *b = luaL_checklstring(L, 2, &bn);
    lua_pushboolean(L, an == bn && CRYPTO_memcmp(a, b, an) == 0);
    return 1;
}

int jd_crypto_open(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"hmac_sha256", l_hmac_sha256},
        {"sha256", l_sha256},
        {"base64", l_base64},
        {"base64_decode", l_base64_decode},
        {"hex", l_hex},
        {"equal", l_equal},
        {NULL, NULL},
    };
    luaL_newlib(L, fns);
    return 1;
}
