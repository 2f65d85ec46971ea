#define _POSIX_C_SOURCE 200809L
#include "json.h"

#include "../include/journeyd.h"
#include "event.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_parse.h>

/* ---------------------------------------------------------------- reading */

typedef struct frame {
    size_t header; /* offset of the 5-byte placeholder header */
    uint32_t count;
    int is_map;
} frame;

/* yajl allocates a handle, a lexer and buffers for every parse; a bump arena reset after
 * each parse makes that free. Blocks carry their size (for realloc); anything that does
 * not fit goes to malloc. */
#define ARENA_BYTES (64 * 1024)

typedef struct arena {
    unsigned char mem[ARENA_BYTES];
    size_t used;
} arena;

static int in_arena(const arena *a, const void *p)
{
    return (const unsigned char *)p >= a->mem && (const unsigned char *)p < a->mem + ARENA_BYTES;
}

static void *ar_malloc(void *ctx, size_t sz)
{
    arena *a = ctx;
    size_t need = 16 + ((sz + 15) & ~(size_t)15);
    if (a->used + need > ARENA_BYTES)
        return malloc(sz);
    unsigned char *p = a->mem + a->used;
    memcpy(p, &sz, sizeof sz);
    a->used += need;
    return p + 16;
}

static void ar_free(void *ctx, void *p)
{
    if (p && !in_arena(ctx, p))
        free(p);
}

static void *ar_realloc(void *ctx, void *p, size_t sz)
{
    if (!p)
        return ar_malloc(ctx, sz);
    if (!in_arena(ctx, p))
        return realloc(p, sz);
    size_t old;
    memcpy(&old, (unsigned char *)p - 16, sizeof old);
    if (sz <= old)
        return p;
    void *q = ar_malloc(ctx, sz);
    if (q)
        memcpy(q, p, old);
    return q;
}

struct jd_json_reader {
    arena mem;
    yajl_alloc_funcs afs;
    jd_buf *out;
    msgpack_packer pk;
    frame stack[JD_JSON_MAX_DEPTH];
    int depth;
    const char *fail; /* our own reason to stop, when not yajl's */
    size_t fail_at;   /* ... and the byte it concerns */
    yajl_handle h;    /* the parse in progress, for positions */
    size_t len;       /* its text's length */
    int finishing;    /* inside yajl_complete_parse: the last token ends the text */
    size_t end;       /* where the last complete value ends */
    int done;         /* it was the top-level value */
};

/* The offset just past the token being reported to a callback. During the final flush
 * that token is the tail of the text (yajl buffered it waiting for a delimiter). */
static size_t here(const jd_json_reader *r)
{
    return r->finishing ? r->len : yajl_get_bytes_consumed(r->h);
}

/* Called after each complete value. */
static void value_done(jd_json_reader *r)
{
    r->end = here(r);
    r->done = r->depth == 0;
}

static void count_value(jd_json_reader *r)
{
    if (r->depth > 0 && !r->stack[r->depth - 1].is_map)
        r->stack[r->depth - 1].count++;
}

static int on_null(void *ctx)
{
    jd_json_reader *r = ctx;
    count_value(r);
    msgpack_pack_nil(&r->pk);
    value_done(r);
    return 1;
}

static int on_bool(void *ctx, int b)
{
    jd_json_reader *r = ctx;
    count_value(r);
    if (b)
        msgpack_pack_true(&r->pk);
    else
        msgpack_pack_false(&r->pk);
    value_done(r);
    return 1;
}

static int on_number(void *ctx, const char *s, size_t n)
{
    jd_json_reader *r = ctx;
    char tmp[64];
    char *num = tmp;
    if (n >= sizeof tmp)
        num = jd_xmalloc(n + 1);
    memcpy(num, s, n);
    num[n] = '\0';
    int is_int = !memchr(s, '.', n) && !memchr(s, 'e', n) && !memchr(s, 'E', n);
    int ok = 1;
    count_value(r);
    if (is_int) {
        errno = 0;
        if (num[0] == '-') {
            long long v = strtoll(num, NULL, 10);
            if (errno == 0) {
                msgpack_pack_int64(&r->pk, v);
                goto done;
            }
        } else {
            unsigned long long v = strtoull(num, NULL, 10);
            if (errno == 0) {
                msgpack_pack_uint64(&r->pk, v);
                goto done;
            }
        }
    }
    errno = 0;
    double d = strtod(num, NULL);
    if (isinf(d)) {
        r->fail = "number out of range";
        r->fail_at = here(r) - n;
        ok = 0;
        goto done;
    }
    msgpack_pack_double(&r->pk, d);
done:
    if (num != tmp)
        free(num);
    if (ok)
        value_done(r);
    return ok;
}

static int on_string(void *ctx, const unsigned char *s, size_t n)
{
    jd_json_reader *r = ctx;
    count_value(r);
    msgpack_pack_str(&r->pk, n);
    msgpack_pack_str_body(&r->pk, s, n);
    value_done(r);
    return 1;
}

static int on_key(void *ctx, const unsigned char *s, size_t n)
{
    jd_json_reader *r = ctx;
    r->stack[r->depth - 1].count++;
    msgpack_pack_str(&r->pk, n);
    msgpack_pack_str_body(&r->pk, s, n);
    return 1;
}

static int open_container(jd_json_reader *r, int is_map)
{
    count_value(r);
    if (r->depth == JD_JSON_MAX_DEPTH) {
        r->fail = "nesting too deep";
        r->fail_at = here(r) - 1;
        return 0;
    }
    frame *f = &r->stack[r->depth++];
    f->header = r->out->len;
    f->count = 0;
    f->is_map = is_map;
    jd_buf_append(r->out, "\0\0\0\0\0", 5);
    return 1;
}

/* Rewrites the placeholder as the smallest header for the final count and slides the
 * body left over the unused bytes. */
static int close_container(jd_json_reader *r)
{
    frame *f = &r->stack[--r->depth];
    unsigned char hdr[5];
    size_t hl;
    uint32_t c = f->count;
    if (c < 16) {
        hdr[0] = (unsigned char)((f->is_map ? 0x80 : 0x90) | c);
        hl = 1;
    } else if (c < 65536) {
        hdr[0] = f->is_map ? 0xde : 0xdc;
        hdr[1] = (unsigned char)(c >> 8);
        hdr[2] = (unsigned char)c;
        hl = 3;
    } else {
        hdr[0] = f->is_map ? 0xdf : 0xdd;
        hdr[1] = (unsigned char)(c >> 24);
        hdr[2] = (unsigned char)(c >> 16);
        hdr[3] = (unsigned char)(c >> 8);
        hdr[4] = (unsigned char)c;
        hl = 5;
    }
    char *base = r->out->data + f->header;
    size_t body = r->out->len - f->header - 5;
    if (hl < 5)
        memmove(base + hl, base + 5, body);
    memcpy(base, hdr, hl);
    r->out->len -= 5 - hl;
    value_done(r);
    return 1;
}

static int on_start_map(void *ctx)
{
    return open_container(ctx, 1);
}
static int on_end(void *ctx)
{
    return close_container(ctx);
}
static int on_start_array(void *ctx)
{
    return open_container(ctx, 0);
}

static const yajl_callbacks reader_callbacks = {
    on_null, on_bool, NULL, NULL, on_number, on_string, on_start_map, on_key, on_end, on_start_array, on_end,
};

jd_json_reader *jd_json_reader_new(void)
{
    return jd_xcalloc(1, sizeof(jd_json_reader));
}

void jd_json_reader_free(jd_json_reader *r)
{
    free(r);
}

static int is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int is_atom_char(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '+' || c == '-' || c == '.';
}

/* Length of the number or literal that starts p[0..n): the longest JSON number, or 4/5
 * bytes for true/null/false. At least 1. */
static size_t atom_len(const char *p, size_t n)
{
    if (p[0] == 't' || p[0] == 'n')
        return n < 4 ? n : 4;
    if (p[0] == 'f')
        return n < 5 ? n : 5;
    size_t i = p[0] == '-';
    if (i < n && p[i] == '0')
        i++;
    else
        while (i < n && is_digit(p[i]))
            i++;
    if (i + 1 < n && p[i] == '.' && is_digit(p[i + 1]))
        for (i++; i < n && is_digit(p[i]); i++)
            ;
    if (i + 1 < n && (p[i] == 'e' || p[i] == 'E')) {
        size_t k = i + 1;
        if (k < n && (p[k] == '+' || p[k] == '-'))
            k++;
        if (k < n && is_digit(p[k]))
            for (i = k; i < n && is_digit(p[i]); i++)
                ;
    }
    return i ? i : 1;
}

/* Where the token that ends just before `end` begins (the token yajl complained about). */
static size_t token_start(const char *text, size_t end)
{
    if (end == 0)
        return 0;
    char c = text[end - 1];
    if (strchr("{}[],:", c))
        return end - 1;
    size_t i = end - 1;
    if (c == '"') {
        /* back to the opening quote: the first one not escaped by an odd run of '\' */
        while (i > 0) {
            i--;
            if (text[i] != '"')
                continue;
            size_t bs = 0;
            while (bs < i && text[i - 1 - bs] == '\\')
                bs++;
            if (bs % 2 == 0)
                return i;
        }
        return 0;
    }
    /* a number or literal: back to the start of the run of such tokens, then lex the
     * run forward as yajl does ("01" is "0" then "1") */
    while (i > 0 && is_atom_char(text[i - 1]))
        i--;
    for (;;) {
        size_t k = i + atom_len(text + i, end - i);
        if (k >= end)
            return i;
        i = k;
    }
}

int jd_json_to_msgpack(jd_json_reader *r, const char *text, size_t len, jd_buf *out, char *err, size_t errlen)
{
    size_t start = out->len;
    /* yajl takes form feed and vertical tab as whitespace; RFC 8259 does not, and a raw
     * control byte is never valid inside a string either, so either makes the text
     * invalid. */
    const char *ff = memchr(text, '\f', len), *vt = memchr(text, '\v', len);
    if (ff || vt) {
        const char *at = ff && (!vt || ff < vt) ? ff : vt;
        size_t k = (size_t)(at - text);
        /* unless the text before it has an error of its own, which comes first */
        if (jd_json_to_msgpack(r, text, k, out, err, errlen) == 0 || strtoul(err + 5, NULL, 10) >= k)
            snprintf(err, errlen, "byte %zu: %s is not JSON whitespace", k, at == ff ? "form feed" : "vertical tab");
        out->len = start;
        return -1;
    }
    r->out = out;
    r->depth = 0;
    r->fail = NULL;
    r->len = len;
    r->finishing = 0;
    r->done = 0;
    r->end = 0;
    msgpack_packer_init(&r->pk, out, jd_buf_msgpack_write);
    r->mem.used = 0;
    r->afs = (yajl_alloc_funcs){ar_malloc, ar_realloc, ar_free, &r->mem};
    yajl_handle h = yajl_alloc(&reader_callbacks, &r->afs, r);
    r->h = h;
    yajl_status st = yajl_parse(h, (const unsigned char *)text, len);
    if (st == yajl_status_ok) {
        r->finishing = 1;
        st = yajl_complete_parse(h);
    }
    /* yajl leaves an unterminated string after a complete value unreported */
    size_t garbage = r->end;
    while (r->done && garbage < len && is_ws(text[garbage]))
        garbage++;
    int rc = 0;
    if (st != yajl_status_ok || (r->done && garbage < len)) {
        /* Report the first byte where the text stops being JSON (its length when it
         * ends early). yajl's own offset is past the offending token, or relative to
         * the final flush, so it is only a starting point. */
        if (r->fail) {
            snprintf(err, errlen, "byte %zu: %s", r->fail_at, r->fail);
        } else if (r->done) {
            snprintf(err, errlen, "byte %zu: parse error: trailing garbage", garbage);
        } else {
            unsigned char *msg = yajl_get_error(h, 0, (const unsigned char *)text, len);
            /* yajl says "lexical error: invalid char in json text.\n"; keep one line */
            char *nl = strchr((char *)msg, '\n');
            if (nl)
                *nl = '\0';
            size_t at = yajl_get_bytes_consumed(h);
            if (r->finishing) {
                at = len; /* premature end, or a last token the end left unfinished */
            } else if (strstr((char *)msg, "after key and value")) {
                /* yajl rewinds this one by part of the token: use the end of the value */
                for (at = r->end; at < len && is_ws(text[at]); at++)
                    ;
            } else if (strncmp((char *)msg, "parse error", 11) == 0) {
                at = token_start(text, at);
            } else if (at > 0 && (strstr((char *)msg, "invalid char in json text") ||
                                  strstr((char *)msg, "invalid bytes in UTF8 string"))) {
                at--; /* the lexer consumed the offending byte */
            }
            snprintf(err, errlen, "byte %zu: %s", at, (char *)msg);
            yajl_free_error(h, msg);
        }
        out->len = start;
        rc = -1;
    } else if (out->len == start) {
        snprintf(err, errlen, "byte 0: empty input");
        rc = -1;
    }
    r->h = NULL;
    yajl_free(h);
    return rc;
}

/* ---------------------------------------------------------------- writing */

struct jd_json_writer {
    yajl_gen g;
};

jd_json_writer *jd_json_writer_new(void)
{
    jd_json_writer *w = jd_xcalloc(1, sizeof *w);
    w->g = yajl_gen_alloc(NULL);
    yajl_gen_config(w->g, yajl_gen_validate_utf8, 0);
    return w;
}

void jd_json_writer_free(jd_json_writer *w)
{
    if (!w)
        return;
    yajl_gen_free(w->g);
    free(w);
}

size_t jd_json_format_double(double d, char *out, size_t outlen)
{
    if (!isfinite(d))
        return (size_t)snprintf(out, outlen, "null");
    int n = 0;
    /* 15 digits suffice for any double that has a shorter form, except subnormals,
     * which carry fewer digits */
    for (int prec = d != 0 && fabs(d) < DBL_MIN ? 1 : 15; prec <= 17; prec++) {
        n = snprintf(out, outlen, "%.*g", prec, d);
        if (strtod(out, NULL) == d)
            break;
    }
    /* a float stays a float when read back: "25" would come back as an integer */
    if (n > 0 && (size_t)n + 2 < outlen && !strpbrk(out, ".eE")) {
        memcpy(out + n, ".0", 3);
        n += 2;
    }
    return n > 0 ? (size_t)n : 0;
}

static void gen_value(yajl_gen g, const msgpack_object *o);

/* Length of the UTF-8 sequence at p[0..n) as our reader (yajl) accepts it: a lead byte
 * and its continuation bytes; 0 when there is none. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
    size_t len = p[0] < 0x80 ? 1 : (p[0] >> 5) == 0x6 ? 2 : (p[0] >> 4) == 0xe ? 3 : (p[0] >> 3) == 0x1e ? 4 : 0;
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    return len;
}

/* JSON text is UTF-8, but strings can hold any bytes (stream clients, URLs, Lua): each
 * byte that does not begin a sequence is written as U+FFFD. */
static void gen_string(yajl_gen g, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, l;
    /* ASCII (the usual case) needs no UTF-8 check: look 8 bytes at a time */
    while (i + 8 <= n) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        if (w & 0x8080808080808080ULL)
            break;
        i += 8;
    }
    while (i < n && p[i] < 0x80)
        i++;
    while (i < n && (l = utf8_len(p + i, n - i)))
        i += l;
    if (i == n) {
        yajl_gen_string(g, p, n);
        return;
    }
    jd_buf b;
    jd_buf_init(&b);
    jd_buf_append(&b, s, i);
    while (i < n) {
        l = utf8_len(p + i, n - i);
        jd_buf_append(&b, l ? s + i : "\xef\xbf\xbd", l ? l : 3);
        i += l ? l : 1;
    }
    yajl_gen_string(g, (const unsigned char *)b.data, b.len);
    jd_buf_free(&b);
}

static void gen_key(yajl_gen g, const msgpack_object *k)
{
    if (k->type == MSGPACK_OBJECT_STR) {
        gen_string(g, k->via.str.ptr, k->via.str.size);
        return;
    }
    char tmp[64];
    int n = 0;
    switch (k->type) {
    case MSGPACK_OBJECT_POSITIVE_INTEGER: n = snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)k->via.u64); break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: n = snprintf(tmp, sizeof tmp, "%lld", (long long)k->via.i64); break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: n = (int)jd_json_format_double(k->via.f64, tmp, sizeof tmp); break;
    case MSGPACK_OBJECT_BOOLEAN: n = snprintf(tmp, sizeof tmp, "%s", k->via.boolean ? "true" : "false"); break;
    default: n = snprintf(tmp, sizeof tmp, "null"); break;
    }
    yajl_gen_string(g, (const unsigned char *)tmp, (size_t)n);
}

static void gen_value(yajl_gen g, const msgpack_object *o)
{
    char tmp[64];
    int n;
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: yajl_gen_null(g); break;
    case MSGPACK_OBJECT_BOOLEAN: yajl_gen_bool(g, o->via.boolean); break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        n = snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)o->via.u64);
        yajl_gen_number(g, tmp, (size_t)n);
        break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        n = snprintf(tmp, sizeof tmp, "%lld", (long long)o->via.i64);
        yajl_gen_number(g, tmp, (size_t)n);
        break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        if (!isfinite(o->via.f64)) {
            yajl_gen_null(g);
            break;
        }
        n = (int)jd_json_format_double(o->via.f64, tmp, sizeof tmp);
        yajl_gen_number(g, tmp, (size_t)n);
        break;
    case MSGPACK_OBJECT_STR: gen_string(g, o->via.str.ptr, o->via.str.size); break;
    case MSGPACK_OBJECT_BIN: gen_string(g, o->via.bin.ptr, o->via.bin.size); break;
    case MSGPACK_OBJECT_ARRAY:
        yajl_gen_array_open(g);
        for (uint32_t i = 0; i < o->via.array.size; i++)
            gen_value(g, &o->via.array.ptr[i]);
        yajl_gen_array_close(g);
        break;
    case MSGPACK_OBJECT_MAP:
        yajl_gen_map_open(g);
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            gen_key(g, &o->via.map.ptr[i].key);
            gen_value(g, &o->via.map.ptr[i].val);
        }
        yajl_gen_map_close(g);
        break;
    default: yajl_gen_null(g); break;
    }
}

void jd_json_write(jd_json_writer *w, const msgpack_object *obj, jd_buf *out)
{
    const unsigned char *p;
    size_t n;
    yajl_gen_reset(w->g, NULL);
    gen_value(w->g, obj);
    yajl_gen_get_buf(w->g, &p, &n);
    jd_buf_append(out, p, n);
    yajl_gen_clear(w->g);
}

int jd_json_write_msgpack(jd_json_writer *w, const char *data, size_t len, jd_buf *out)
{
    msgpack_zone z;
    msgpack_zone_init(&z, 2048);
    msgpack_object o;
    int rc = -1;
    if (jd_mp_unpack(data, len, &z, &o) == 0) {
        jd_json_write(w, &o, out);
        rc = 0;
    }
    msgpack_zone_destroy(&z);
    return rc;
}

int jd_json_to_msgpack_alloc(const char *json, size_t len, char **out, size_t *outlen, char *err, size_t errlen)
{
    jd_json_reader *r = jd_json_reader_new();
    jd_buf b;
    jd_buf_init(&b);
    int rc = jd_json_to_msgpack(r, json, len, &b, err, errlen);
    jd_json_reader_free(r);
    if (rc) {
        jd_buf_free(&b);
        return -1;
    }
    *out = b.data ? b.data : jd_xmalloc(1);
    *outlen = b.len;
    return 0;
}
