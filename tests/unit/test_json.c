/* test_json: engine/json.h — conformance over the shared JSONTestSuite files, exact
 * 64-bit integers, error offsets, and the writer (escapes, containers, doubles, keys). */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <float.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "json.h"

/* ---------------------------------------------------------------- helpers */

static jd_json_reader *rd;
static jd_json_writer *wr;

static int setup(void **state)
{
    (void)state;
    rd = jd_json_reader_new();
    wr = jd_json_writer_new();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    jd_json_reader_free(rd);
    jd_json_writer_free(wr);
    return 0;
}

/* A parsed value: the unpacked object points into buf, so both live together. */
typedef struct parsed {
    jd_buf buf;
    msgpack_unpacked u;
} parsed;

static void parsed_free(parsed *p)
{
    msgpack_unpacked_destroy(&p->u);
    jd_buf_free(&p->buf);
}

/* Parses text and unpacks the single msgpack value it produced; the caller frees p
 * (also after a failure). */
static int parse_unpack(const char *text, size_t len, parsed *p, char *err, size_t errlen)
{
    jd_buf_init(&p->buf);
    msgpack_unpacked_init(&p->u);
    int rc = jd_json_to_msgpack(rd, text, len, &p->buf, err, errlen);
    if (rc == 0) {
        size_t off = 0;
        msgpack_unpack_return ur = msgpack_unpack_next(&p->u, p->buf.data, p->buf.len, &off);
        if (ur != MSGPACK_UNPACK_SUCCESS || off != p->buf.len)
            fail_msg("reader produced bad msgpack for %.*s", (int)len, text);
    }
    return rc;
}

/* JSON text -> msgpack -> JSON text; returns a malloc'd string or fails the test. */
static char *roundtrip(const char *text)
{
    parsed p;
    char err[256];
    if (parse_unpack(text, strlen(text), &p, err, sizeof err))
        fail_msg("rejected %s: %s", text, err);
    jd_buf out;
    jd_buf_init(&out);
    jd_json_write(wr, &p.u.data, &out);
    parsed_free(&p);
    char *s = jd_strndup(out.data ? out.data : "", out.len);
    jd_buf_free(&out);
    return s;
}

/* Writes a msgpack value held in b as JSON; returns a malloc'd string. */
static char *write_packed(const jd_buf *b)
{
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    assert_int_equal(msgpack_unpack_next(&u, b->data, b->len, &off), MSGPACK_UNPACK_SUCCESS);
    jd_buf out;
    jd_buf_init(&out);
    jd_json_write(wr, &u.data, &out);
    msgpack_unpacked_destroy(&u);
    char *s = jd_strndup(out.data ? out.data : "", out.len);
    jd_buf_free(&out);
    return s;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    jd_buf b;
    jd_buf_init(&b);
    char tmp[4096];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0)
        jd_buf_append(&b, tmp, n);
    fclose(f);
    *len = b.len;
    jd_buf_reserve(&b, 0); /* a NULL data pointer for an empty file would be awkward */
    return b.data;
}

/* ---------------------------------------------------------------- (a) conformance */

static void test_conformance_suite(void **state)
{
    (void)state;
    const char *shared = getenv("JD_SHARED");
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/testdata/json-conformance", shared && *shared ? shared : "../shared");
    DIR *d = opendir(dir);
    if (!d)
        fail_msg("cannot open %s (set JD_SHARED)", dir);
    size_t ny = 0, nn = 0, ni = 0, ni_ok = 0, bad = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        const char *name = de->d_name;
        size_t nl = strlen(name);
        if (nl < 7 || name[1] != '_' || strcmp(name + nl - 5, ".json") != 0)
            continue;
        char kind = name[0];
        if (kind != 'y' && kind != 'n' && kind != 'i')
            continue;
        char path[2048];
        snprintf(path, sizeof path, "%s/%s", dir, name);
        size_t len = 0;
        char *text = read_file(path, &len);
        if (!text)
            fail_msg("cannot read %s", path);
        jd_buf out;
        jd_buf_init(&out);
        char err[256] = "";
        int rc = jd_json_to_msgpack(rd, text, len, &out, err, sizeof err);
        if (kind == 'y') {
            ny++;
            if (rc != 0) {
                print_error("y_ file rejected: %s: %s\n", name, err);
                bad++;
            } else {
                /* what was read writes back to text that reads as the same msgpack */
                msgpack_unpacked u;
                msgpack_unpacked_init(&u);
                size_t off = 0;
                assert_int_equal(msgpack_unpack_next(&u, out.data, out.len, &off), MSGPACK_UNPACK_SUCCESS);
                assert_int_equal(off, out.len);
                jd_buf js, again;
                jd_buf_init(&js);
                jd_buf_init(&again);
                jd_json_write(wr, &u.data, &js);
                if (jd_json_to_msgpack(rd, js.data, js.len, &again, err, sizeof err) != 0 || again.len != out.len ||
                    memcmp(again.data, out.data, out.len) != 0) {
                    print_error("y_ file does not survive write+read: %s -> %.*s\n", name, (int)js.len, js.data);
                    bad++;
                }
                jd_buf_free(&js);
                jd_buf_free(&again);
                msgpack_unpacked_destroy(&u);
            }
        } else if (kind == 'n') {
            nn++;
            if (rc == 0) {
                print_error("n_ file accepted: %s\n", name);
                bad++;
            } else if (strncmp(err, "byte ", 5) != 0 || strtoul(err + 5, NULL, 10) > len || out.len != 0) {
                print_error("n_ file %s: bad error report \"%s\" (out.len %zu)\n", name, err, out.len);
                bad++;
            } else {
                /* the text before the reported byte has no error of its own before its end */
                size_t at = strtoul(err + 5, NULL, 10);
                char perr[256] = "";
                if (jd_json_to_msgpack(rd, text, at, &out, perr, sizeof perr) != 0 &&
                    strtoul(perr + 5, NULL, 10) != at) {
                    print_error("n_ file %s: \"%s\", but its prefix has \"%s\"\n", name, err, perr);
                    bad++;
                }
            }
        } else {
            ni++;
            ni_ok += rc == 0;
        }
        jd_buf_free(&out);
        free(text);
    }
    closedir(d);
    print_message("json conformance: %zu y_ accepted, %zu n_ rejected, %zu i_ (%zu accepted), %zu failures\n", ny, nn,
                  ni, ni_ok, bad);
    assert_true(ny > 0);
    assert_true(nn > 0);
    assert_int_equal(bad, 0);
}

/* Every error names a byte inside the text (or its end), whatever the damage: valid
 * texts truncated, or with one byte replaced or removed. */
static void test_error_offsets_mutated(void **state)
{
    (void)state;
    static const char *const texts[] = {
        "{\"type\":\"track\",\"userId\":\"u1\",\"event\":\"Signed Up\",\"properties\":{\"plan\":\"pro\","
        "\"seats\":12,\"price\":-9.5e2,\"tags\":[\"a\\\"b\",true,false,null]}}",
        "[0,-0,1.5e+10,\"\\u00e9\\n\",{\"\":[]},[[{}]],18446744073709551615]",
    };
    static const char repl[] = "{}[],:\"\\ 0-1.eEtfnx\x01\xff\f\v";
    uint32_t x = 12345;
    size_t errors = 0;
    for (size_t t = 0; t < sizeof texts / sizeof texts[0]; t++) {
        size_t n = strlen(texts[t]);
        for (size_t pos = 0; pos <= n; pos++) {
            for (int kind = 0; kind < 4; kind++) {
                char buf[512];
                size_t len;
                memcpy(buf, texts[t], n);
                if (kind == 0) { /* truncated */
                    len = pos;
                } else if (kind == 1) { /* byte removed */
                    if (pos == n)
                        continue;
                    memmove(buf + pos, buf + pos + 1, n - pos - 1);
                    len = n - 1;
                } else { /* byte replaced */
                    if (pos == n)
                        continue;
                    x = x * 1103515245u + 12345u;
                    buf[pos] = repl[(x >> 16) % (sizeof repl - 1)];
                    len = n;
                }
                jd_buf out;
                jd_buf_init(&out);
                char err[256] = "";
                if (jd_json_to_msgpack(rd, buf, len, &out, err, sizeof err) != 0) {
                    errors++;
                    char *endp;
                    unsigned long at = strncmp(err, "byte ", 5) == 0 ? strtoul(err + 5, &endp, 10) : 0;
                    if (strncmp(err, "byte ", 5) != 0 || *endp != ':' || at > len || out.len != 0)
                        fail_msg("bad error \"%s\" for %.*s", err, (int)len, buf);
                    /* the text before that byte has no error of its own before its end */
                    char perr[256] = "";
                    jd_buf_reset(&out);
                    if (jd_json_to_msgpack(rd, buf, at, &out, perr, sizeof perr) != 0 &&
                        strtoul(perr + 5, NULL, 10) != at)
                        fail_msg("error \"%s\" for %.*s, but its prefix has \"%s\"", err, (int)len, buf, perr);
                }
                jd_buf_free(&out);
            }
        }
    }
    assert_true(errors > 100);
}

/* Cases the suite does not cover, or covers only by accident of another check. */
static void test_conformance_extra(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        size_t len; /* 0: strlen */
        int ok;
    } cases[] = {
        {"0", 0, 1},
        {"  [ 1 , 2 ]\r\n\t ", 0, 1},
        {"\"\"", 0, 1},
        {"{}", 0, 1},
        {"[\"a\\u0000b\"]", 0, 1},
        {"[1,\v2]", 0, 0}, /* vertical tab is not JSON whitespace */
        {"[1]\v", 0, 0},
        {"[1,\f2]", 0, 0}, /* nor form feed */
        {"1 \"abc", 0, 0}, /* trailing unterminated string */
        {"{\"a\":1} \"x y", 0, 0},
        {"1 2", 0, 0},
        {"[1] [2]", 0, 0},
        {"[1]x", 0, 0},
        {"", 0, 0},
        {"   ", 0, 0},
        {"[1]\0", 4, 0},      /* NUL after the value */
        {"[\"a\0b\"]", 7, 0}, /* raw NUL inside a string */
        {"[01]", 0, 0},
        {"[+1]", 0, 0},
        {"[.5]", 0, 0},
        {"[1.]", 0, 0},
        {"[0x10]", 0, 0},
        {"[NaN]", 0, 0},
        {"[Infinity]", 0, 0},
        {"['a']", 0, 0},
        {"[1,]", 0, 0},
        {"{\"a\":1,}", 0, 0},
        {"/*c*/1", 0, 0},
        {"[\"\t\"]", 0, 0}, /* raw tab inside a string */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len = cases[i].len ? cases[i].len : strlen(cases[i].text);
        jd_buf out;
        jd_buf_init(&out);
        char err[256] = "";
        int rc = jd_json_to_msgpack(rd, cases[i].text, len, &out, err, sizeof err);
        if ((rc == 0) != cases[i].ok)
            fail_msg("case %zu %.*s: expected %s, got rc %d (%s)", i, (int)len, cases[i].text,
                     cases[i].ok ? "accept" : "reject", rc, err);
        jd_buf_free(&out);
    }
}

/* Nesting up to JD_JSON_MAX_DEPTH is fine, one more is refused. */
static void test_depth_limit(void **state)
{
    (void)state;
    for (int depth = JD_JSON_MAX_DEPTH - 1; depth <= JD_JSON_MAX_DEPTH + 1; depth++) {
        jd_buf t;
        jd_buf_init(&t);
        for (int k = 0; k < depth; k++)
            jd_buf_putc(&t, '[');
        for (int k = 0; k < depth; k++)
            jd_buf_putc(&t, ']');
        jd_buf out;
        jd_buf_init(&out);
        char err[256] = "";
        int rc = jd_json_to_msgpack(rd, t.data, t.len, &out, err, sizeof err);
        if (depth <= JD_JSON_MAX_DEPTH) {
            assert_int_equal(rc, 0);
        } else {
            assert_int_equal(rc, -1);
            char want[64];
            snprintf(want, sizeof want, "byte %d: nesting too deep", JD_JSON_MAX_DEPTH);
            assert_string_equal(err, want);
            assert_int_equal(out.len, 0);
        }
        jd_buf_free(&out);
        jd_buf_free(&t);
    }
}

/* ---------------------------------------------------------------- (b) 64-bit integers */

static void test_int64_exact(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        int negative;
        int64_t i;
        uint64_t u;
    } cases[] = {
        {"-9223372036854775808", 1, INT64_MIN, 0}, /* INT64_MIN, -2^63 */
        {"9223372036854775807", 0, 0, INT64_MAX},
        {"18446744073709551615", 0, 0, UINT64_MAX},
        {"9223372036854775808", 0, 0, (uint64_t)INT64_MAX + 1},
        {"9007199254740993", 0, 0, 9007199254740993ULL}, /* 2^53+1: not a double */
        {"-9007199254740993", 1, -9007199254740993LL, 0},
        {"0", 0, 0, 0},
        {"-1", 1, -1, 0},
        {"1", 0, 0, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *t = cases[i].text;
        parsed p;
        char err[256];
        assert_int_equal(parse_unpack(t, strlen(t), &p, err, sizeof err), 0);
        if (cases[i].negative) {
            if (p.u.data.type != MSGPACK_OBJECT_NEGATIVE_INTEGER)
                fail_msg("%s: type %d, want negative integer", t, (int)p.u.data.type);
            assert_true(p.u.data.via.i64 == cases[i].i);
        } else {
            if (p.u.data.type != MSGPACK_OBJECT_POSITIVE_INTEGER)
                fail_msg("%s: type %d, want positive integer", t, (int)p.u.data.type);
            assert_true(p.u.data.via.u64 == cases[i].u);
        }
        parsed_free(&p);
        char *back = roundtrip(t);
        assert_string_equal(back, t);
        free(back);
    }
    /* the same inside containers, as object values and array elements */
    static const char *const texts[] = {
        "[-9223372036854775808,9223372036854775807,18446744073709551615,9007199254740993]",
        "{\"min\":-9223372036854775808,\"max\":9223372036854775807,\"umax\":18446744073709551615,"
        "\"p53\":9007199254740993}",
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        char *back = roundtrip(texts[i]);
        assert_string_equal(back, texts[i]);
        free(back);
    }
}

/* Integers beyond 64 bits, and numbers with a fraction or exponent, are doubles. */
static void test_numbers_become_doubles(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        double d;
    } cases[] = {
        {"18446744073709551616", 18446744073709551616.0}, /* UINT64_MAX + 1 */
        {"-9223372036854775809", -9223372036854775808.0}, /* INT64_MIN - 1 */
        {"1.0", 1.0},
        {"1e2", 100.0},
        {"1E2", 100.0},
        {"-0.0", -0.0},
        {"0.1", 0.1},
        {"123e-10000000", 0.0}, /* underflow is zero, not an error */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        parsed p;
        char err[256];
        assert_int_equal(parse_unpack(cases[i].text, strlen(cases[i].text), &p, err, sizeof err), 0);
        if (p.u.data.type != MSGPACK_OBJECT_FLOAT64)
            fail_msg("%s: type %d, want float64", cases[i].text, (int)p.u.data.type);
        assert_memory_equal(&p.u.data.via.f64, &cases[i].d, sizeof(double));
        parsed_free(&p);
    }
}

/* ---------------------------------------------------------------- (c) errors */

static void test_error_offsets(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        size_t len; /* 0: strlen */
        size_t at;
        const char *reason; /* substring of the message, or NULL */
    } cases[] = {
        {"{\"a\":1,}", 0, 7, NULL}, /* the '}' where a key must be */
        {"[1,]", 0, 3, NULL},
        {"{\"a\" 1}", 0, 5, "colon"},
        {"{\"a\":1}}", 0, 7, "trailing garbage"},
        {"[1] x", 0, 4, NULL},
        {"1 2", 0, 2, "trailing garbage"},
        {"[1] [2]", 0, 4, "trailing garbage"},
        {"1 \"abc", 0, 2, "trailing garbage"},
        {"   [1,2,x]", 0, 8, NULL},
        {"{\"a\":01}", 0, 6, NULL}, /* "0" is a number, the "1" is the error */
        {"[01]", 0, 2, NULL},
        {"{\"a\":\"x\" \"b\"}", 0, 9, NULL}, /* a value where ',' or '}' must be */
        {"{\"a\":\"\"1}", 0, 7, NULL},
        {"{\"a\":true1}", 0, 9, NULL},
        {"{\"a\":1 :}", 0, 7, NULL},
        {"{\"a\":[1] 2}", 0, 9, NULL},
        {"{1:2}", 0, 1, NULL},
        {"[1 2]", 0, 3, NULL},
        {"[1,2,]", 0, 5, NULL},
        {"[true false]", 0, 6, NULL},
        {"[\"a\" \"b\\\"c\"]", 0, 5, NULL},     /* an escaped quote inside the offending string */
        {"[\"a\\\"b\" \"c\\\\\"]", 0, 8, NULL}, /* an escaped backslash before its closing quote */
        {"[\"\\x\"]", 0, 3, NULL},              /* the escape letter */
        {"[\"b\x01\"]", 0, 3, NULL},            /* raw control character */
        {"[\"\xff\"]", 0, 2, "UTF8"},           /* invalid UTF-8 lead byte */
        {"[1.]", 0, 3, NULL},                   /* where a digit must be */
        {"[nul]", 0, 4, NULL},
        {"[1,2", 0, 4, "premature EOF"}, /* the end of the text */
        {"tru", 0, 3, NULL},
        {"", 0, 0, NULL},
        {"   ", 0, 3, NULL},
        {"[1,\f2]", 0, 3, "form feed"},
        {"[1,\v2]", 0, 3, "vertical tab"},
        {"\f", 0, 0, "form feed"},
        {"x\f", 0, 0, "invalid"}, /* the earlier error comes first */
        {"[1] \v", 0, 4, NULL},
        {"[1] x\v", 0, 4, "trailing garbage"},
        {"[1e999]", 0, 1, "out of range"}, /* the start of the number */
        {"1e999", 0, 0, "out of range"},
        {"[1]\0", 4, 3, "trailing garbage"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len = cases[i].len ? cases[i].len : strlen(cases[i].text);
        jd_buf out;
        jd_buf_init(&out);
        jd_buf_puts(&out, "keep"); /* must survive the failed parse */
        char err[256] = "";
        int rc = jd_json_to_msgpack(rd, cases[i].text, len, &out, err, sizeof err);
        char want[64];
        snprintf(want, sizeof want, "byte %zu: ", cases[i].at);
        if (rc != -1 || strncmp(err, want, strlen(want)) != 0)
            fail_msg("case %zu %.*s: rc %d, err \"%s\", want \"%s...\"", i, (int)len, cases[i].text, rc, err, want);
        if (strlen(err) <= strlen(want) || strchr(err, '\n'))
            fail_msg("case %zu: error not one non-empty line: \"%s\"", i, err);
        if (cases[i].reason && !strstr(err, cases[i].reason))
            fail_msg("case %zu: error \"%s\" does not mention \"%s\"", i, err, cases[i].reason);
        assert_int_equal(out.len, 4);
        assert_memory_equal(out.data, "keep", 4);
        jd_buf_free(&out);
    }
}

/* A failure in the middle of a container, after output was produced, also rolls back;
 * and a success appends after what was there. */
static void test_error_keeps_buffer(void **state)
{
    (void)state;
    jd_buf out;
    jd_buf_init(&out);
    char err[256];
    assert_int_equal(jd_json_to_msgpack(rd, "[1,2,3]", 7, &out, err, sizeof err), 0);
    size_t first = out.len;
    char *copy = jd_strndup(out.data, first);
    const char *big = "{\"a\":[1,2,3,{\"b\":\"cccccccccccccccccccccccccccccccccccc\"}],\"d\":[true,false,null,x]}";
    assert_int_equal(jd_json_to_msgpack(rd, big, strlen(big), &out, err, sizeof err), -1);
    assert_int_equal(out.len, first);
    assert_memory_equal(out.data, copy, first);
    assert_int_equal(jd_json_to_msgpack(rd, "{}", 2, &out, err, sizeof err), 0);
    assert_int_equal(out.len, first + 1);
    assert_memory_equal(out.data, copy, first);
    assert_int_equal((unsigned char)out.data[first], 0x80); /* fixmap 0 */
    free(copy);
    jd_buf_free(&out);
}

/* ---------------------------------------------------------------- (d) writer */

static void test_write_strings(void **state)
{
    (void)state;
    static const struct {
        const char *in, *want;
    } cases[] = {
        {"\"plain\"", "\"plain\""},
        {"\"q\\\"b\\\\s\\/\"", "\"q\\\"b\\\\s/\""},
        {"\"\\b\\f\\n\\r\\t\"", "\"\\b\\f\\n\\r\\t\""},
        {"\"\\u0001\\u001f\"", "\"\\u0001\\u001F\""}, /* yajl writes upper-case hex */
        {"\"a\\u0000b\"", "\"a\\u0000b\""},
        {"\"\\u00e9\xc3\xa9\"", "\"\xc3\xa9\xc3\xa9\""},                                /* é both ways */
        {"\"\\u20ac\"", "\"\xe2\x82\xac\""},                                            /* € */
        {"\"\\ud83d\\ude00\xf0\x9f\x98\x80\"", "\"\xf0\x9f\x98\x80\xf0\x9f\x98\x80\""}, /* surrogate pair */
        {"\"\xe6\x97\xa5\xe6\x9c\xac\"", "\"\xe6\x97\xa5\xe6\x9c\xac\""},
        {"{\"k\\\"ey\\n\":\"v\"}", "{\"k\\\"ey\\n\":\"v\"}"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *s = roundtrip(cases[i].in);
        if (strcmp(s, cases[i].want) != 0)
            fail_msg("case %zu: %s -> %s, want %s", i, cases[i].in, s, cases[i].want);
        free(s);
    }
    /* a string with an embedded NUL packed directly */
    jd_buf b;
    jd_buf_init(&b);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &b, jd_buf_msgpack_write);
    msgpack_pack_str(&pk, 3);
    msgpack_pack_str_body(&pk, "a\0b", 3);
    char *s = write_packed(&b);
    assert_string_equal(s, "\"a\\u0000b\"");
    free(s);
    jd_buf_free(&b);
}

static void test_write_containers(void **state)
{
    (void)state;
    static const char *const texts[] = {
        "[]",
        "{}",
        "[[],{},[[]],[{}]]",
        "{\"a\":[1,{\"b\":[]},{}],\"c\":{\"d\":null,\"e\":true,\"f\":false}}",
        "{\"b\":1,\"a\":2,\"b\":3}", /* order and duplicate keys kept */
        "[1,-1,1.5,\"s\",null,true,false]",
        "\"top-level string\"",
        "null",
        "true",
        "42",
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        char *s = roundtrip(texts[i]);
        assert_string_equal(s, texts[i]);
        free(s);
    }
    /* whitespace is dropped, containers with 16 and 65536 elements use the wider headers */
    char *s = roundtrip(" { \"a\" : [ 1 , 2 ] } ");
    assert_string_equal(s, "{\"a\":[1,2]}");
    free(s);
    for (size_t n = 15; n <= 65537; n = n == 17 ? 65535 : n + 1) {
        jd_buf t;
        jd_buf_init(&t);
        jd_buf_putc(&t, '[');
        for (size_t k = 0; k < n; k++)
            jd_buf_printf(&t, "%s%zu", k ? "," : "", k % 10);
        jd_buf_putc(&t, ']');
        parsed p;
        char err[256];
        assert_int_equal(parse_unpack(t.data, t.len, &p, err, sizeof err), 0);
        assert_int_equal(p.u.data.type, MSGPACK_OBJECT_ARRAY);
        assert_int_equal(p.u.data.via.array.size, n);
        assert_int_equal(p.u.data.via.array.ptr[n - 1].via.u64, (n - 1) % 10);
        parsed_free(&p);
        char *back = roundtrip(jd_buf_cstr(&t));
        assert_string_equal(back, t.data);
        free(back);
        jd_buf_free(&t);
    }
}

/* Significant digits in a formatted double ("1.2300e+05" -> 3). */
static int sig_digits(const char *s)
{
    char m[64];
    size_t k = 0;
    for (const char *p = s; *p && *p != 'e' && *p != 'E' && k < sizeof m - 1; p++)
        if (*p >= '0' && *p <= '9')
            m[k++] = *p;
    m[k] = '\0';
    size_t a = 0;
    while (a < k && m[a] == '0')
        a++;
    while (k > a && m[k - 1] == '0')
        k--;
    return k > a ? (int)(k - a) : 1;
}

/* text is the formatting of d: reads back as the same double, through strtod and through
 * the JSON reader (as a float64, not an integer), and no shorter text would. */
static void check_double_text(double d, const char *text)
{
    double back = strtod(text, NULL);
    if (memcmp(&back, &d, sizeof d) != 0)
        fail_msg("%s does not read back as %.17g", text, d);
    parsed p;
    char err[256];
    if (parse_unpack(text, strlen(text), &p, err, sizeof err))
        fail_msg("%s rejected by the reader: %s", text, err);
    if (p.u.data.type != MSGPACK_OBJECT_FLOAT64 || memcmp(&p.u.data.via.f64, &d, sizeof d) != 0)
        fail_msg("%s reads back as type %d", text, (int)p.u.data.type);
    parsed_free(&p);
    int k = sig_digits(text);
    if (k > 1) {
        char shorter[80];
        snprintf(shorter, sizeof shorter, "%.*g", k - 1, d);
        if (strtod(shorter, NULL) == d)
            fail_msg("%s is not shortest: %s also reads back", text, shorter);
    }
}

static void test_write_doubles(void **state)
{
    (void)state;
    static const struct {
        double d;
        const char *want;
    } cases[] = {
        {25.0, "25.0"},
        {0.1, "0.1"},
        {-0.0, "-0.0"},
        {0.0, "0.0"},
        {1.5, "1.5"},
        {-2.0, "-2.0"},
        {100.0, "100.0"},
        {123456789.0, "123456789.0"},
        {9007199254740992.0, "9007199254740992.0"},
        {1e15, "1e+15"},
        {1e21, "1e+21"},
        {1e300, "1e+300"},
        {1e-7, "1e-07"},
        {0.30000000000000004, "0.30000000000000004"},
        {1.0 / 3.0, "0.3333333333333333"},
        {DBL_MAX, "1.7976931348623157e+308"},
        {DBL_MIN, "2.2250738585072014e-308"},
        {5e-324, "5e-324"}, /* the smallest subnormal */
        {1e-310, "1e-310"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char buf[64];
        size_t n = jd_json_format_double(cases[i].d, buf, sizeof buf);
        assert_int_equal(n, strlen(buf));
        if (strcmp(buf, cases[i].want) != 0)
            fail_msg("case %zu: %.17g formats as %s, want %s", i, cases[i].d, buf, cases[i].want);
        check_double_text(cases[i].d, buf);
        /* the writer uses the same text */
        jd_buf b;
        jd_buf_init(&b);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &b, jd_buf_msgpack_write);
        msgpack_pack_double(&pk, cases[i].d);
        char *s = write_packed(&b);
        assert_string_equal(s, cases[i].want);
        free(s);
        jd_buf_free(&b);
    }
    /* JSON texts of doubles come back as themselves */
    static const char *const texts[] = {"25.0", "0.1", "-0.0", "[1.5,2.0,1e+300]"};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        char *s = roundtrip(texts[i]);
        assert_string_equal(s, texts[i]);
        free(s);
    }
    /* NaN and infinities have no JSON form: null */
    const double special[] = {NAN, INFINITY, -INFINITY};
    for (size_t i = 0; i < 3; i++) {
        jd_buf b;
        jd_buf_init(&b);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &b, jd_buf_msgpack_write);
        msgpack_pack_array(&pk, 1);
        msgpack_pack_double(&pk, special[i]);
        char *s = write_packed(&b);
        assert_string_equal(s, "[null]");
        free(s);
        jd_buf_free(&b);
    }
}

/* Random bit patterns: every finite double formats to a shortest round-trip text. */
static void test_write_doubles_random(void **state)
{
    (void)state;
    uint64_t x = 0x2545F4914F6CDD1DULL;
    int checked = 0;
    for (int i = 0; i < 20000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        uint64_t bits = x;
        if (i % 4 == 1)
            bits &= 0x800FFFFFFFFFFFFFULL; /* subnormals too */
        else if (i % 4 == 2)
            bits = (bits & 0x8000000000000000ULL) | (uint64_t)(1000 + (x >> 40) % 100) << 52 |
                   (bits & 0xFFFFF00000000ULL); /* near 1, short mantissas */
        double d;
        memcpy(&d, &bits, sizeof d);
        if (!isfinite(d))
            continue;
        char buf[64];
        jd_json_format_double(d, buf, sizeof buf);
        check_double_text(d, buf);
        checked++;
    }
    assert_true(checked > 15000);
}

static void test_write_nonstring_keys(void **state)
{
    (void)state;
    jd_buf b;
    jd_buf_init(&b);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &b, jd_buf_msgpack_write);
    msgpack_pack_map(&pk, 7);
    msgpack_pack_uint64(&pk, 1);
    msgpack_pack_str(&pk, 1);
    msgpack_pack_str_body(&pk, "a", 1);
    msgpack_pack_int64(&pk, -2);
    msgpack_pack_int(&pk, 2);
    msgpack_pack_double(&pk, 1.5);
    msgpack_pack_true(&pk);
    msgpack_pack_double(&pk, 3.0);
    msgpack_pack_nil(&pk);
    msgpack_pack_true(&pk);
    msgpack_pack_false(&pk);
    msgpack_pack_nil(&pk);
    msgpack_pack_array(&pk, 0);
    msgpack_pack_uint64(&pk, UINT64_MAX);
    msgpack_pack_int64(&pk, INT64_MIN);
    char *s = write_packed(&b);
    assert_string_equal(s, "{\"1\":\"a\",\"-2\":2,\"1.5\":true,\"3.0\":null,\"true\":false,\"null\":[],"
                           "\"18446744073709551615\":-9223372036854775808}");
    /* what comes out is JSON */
    parsed p;
    char err[256];
    assert_int_equal(parse_unpack(s, strlen(s), &p, err, sizeof err), 0);
    assert_int_equal(p.u.data.type, MSGPACK_OBJECT_MAP);
    assert_int_equal(p.u.data.via.map.size, 7);
    parsed_free(&p);
    free(s);
    jd_buf_free(&b);
}

/* The writer appends, and can be reused after any value. */
static void test_write_appends(void **state)
{
    (void)state;
    jd_buf in, out;
    jd_buf_init(&in);
    jd_buf_init(&out);
    char err[256];
    assert_int_equal(jd_json_to_msgpack(rd, "[1,{\"a\":\"b\"}]", 13, &in, err, sizeof err), 0);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    assert_int_equal(msgpack_unpack_next(&u, in.data, in.len, &off), MSGPACK_UNPACK_SUCCESS);
    jd_buf_puts(&out, "x=");
    jd_json_write(wr, &u.data, &out);
    jd_buf_putc(&out, ';');
    jd_json_write(wr, &u.data.via.array.ptr[1], &out);
    jd_buf_putc(&out, ';');
    jd_json_write(wr, &u.data.via.array.ptr[0], &out);
    assert_string_equal(jd_buf_cstr(&out), "x=[1,{\"a\":\"b\"}];{\"a\":\"b\"};1");
    msgpack_unpacked_destroy(&u);
    jd_buf_free(&in);
    jd_buf_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conformance_suite),     cmocka_unit_test(test_conformance_extra),
        cmocka_unit_test(test_error_offsets_mutated), cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_int64_exact),           cmocka_unit_test(test_numbers_become_doubles),
        cmocka_unit_test(test_error_offsets),         cmocka_unit_test(test_error_keeps_buffer),
        cmocka_unit_test(test_write_strings),         cmocka_unit_test(test_write_containers),
        cmocka_unit_test(test_write_doubles),         cmocka_unit_test(test_write_doubles_random),
        cmocka_unit_test(test_write_nonstring_keys),  cmocka_unit_test(test_write_appends),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
