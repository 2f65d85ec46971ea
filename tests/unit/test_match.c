/* test_match: engine/match.h — `where` predicates over events built the way the engine
 * builds them (JSON -> msgpack -> normalised record -> view), every operator and root. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "event.h"
#include "json.h"
#include "match.h"

/* ---------------------------------------------------------------- fixtures */

static const char *const track_json =
    "{\"type\":\"track\",\"userId\":\"u1\",\"anonymousId\":\"a1\",\"event\":\"Order Completed\",\"messageId\":\"m1\","
    "\"timestamp\":\"2026-11-01T10:00:00Z\","
    "\"properties\":{\"total\":42,\"price\":19.99,\"name\":\"Widget Pro\",\"qty\":0,\"neg\":-5,"
    "\"big\":9223372036854775807,\"small\":-9223372036854775808,\"huge\":18446744073709551615,"
    "\"p53\":9007199254740993,\"f53\":9007199254740992.0,\"ok\":true,\"no\":false,\"nothing\":null,"
    "\"tags\":[\"a\",\"b\",3,2.5,true],\"nested\":{\"a\":{\"b\":{\"c\":\"deep\",\"n\":7}}},\"three\":3.0,"
    "\"empty\":\"\",\"dup\":1,\"dup\":2,\"plan\":\"prop-plan\"},"
    "\"traits\":{\"plan\":\"trait-plan\"},"
    "\"context\":{\"ip\":\"1.2.3.4\",\"locale\":\"en-US\",\"campaign\":{\"source\":\"google\"}}}";

static const char *const identify_json =
    "{\"type\":\"identify\",\"userId\":\"u2\",\"messageId\":\"m2\",\"timestamp\":\"2026-11-01T10:00:00Z\","
    "\"traits\":{\"plan\":\"enterprise\",\"seats\":10},\"properties\":{\"plan\":\"free\"}}";

static const char *const group_json = "{\"type\":\"group\",\"userId\":\"u3\",\"groupId\":\"g1\",\"messageId\":\"m3\","
                                      "\"timestamp\":\"2026-11-01T10:00:00Z\","
                                      "\"traits\":{\"plan\":\"team\"}}";

static const char *const page_json =
    "{\"type\":\"page\",\"anonymousId\":\"a4\",\"name\":\"Pricing\",\"messageId\":\"m4\","
    "\"timestamp\":\"2026-11-01T10:00:00Z\",\"properties\":{\"plan\":\"page-plan\"},"
    "\"context\":{\"traits\":{\"plan\":\"ctx-plan\"}}}";

static const char *const user_traits_json =
    "{\"plan\":\"pro\",\"ltv\":1500,\"address\":{\"country\":\"DE\"},\"beta\":true}";

static jd_json_reader *rd;

/* An event normalised and viewed, with what it points into. */
typedef struct fx {
    jd_buf in_buf, rec_buf;
    msgpack_unpacked in, rec;
    jd_event ev;
} fx;

static void unpack(const jd_buf *b, msgpack_unpacked *u)
{
    msgpack_unpacked_init(u);
    size_t off = 0;
    assert_int_equal(msgpack_unpack_next(u, b->data, b->len, &off), MSGPACK_UNPACK_SUCCESS);
}

static void read_json(const char *json, jd_buf *b, msgpack_unpacked *u)
{
    char err[256];
    jd_buf_init(b);
    if (jd_json_to_msgpack(rd, json, strlen(json), b, err, sizeof err))
        fail_msg("bad JSON: %s", err);
    unpack(b, u);
}

static void fx_init(fx *f, const char *json)
{
    char err[256];
    read_json(json, &f->in_buf, &f->in);
    jd_buf_init(&f->rec_buf);
    if (jd_event_normalize(&f->in.data, 0, NULL, &f->rec_buf, err, sizeof err))
        fail_msg("rejected: %s", err);
    unpack(&f->rec_buf, &f->rec);
    assert_int_equal(jd_event_view(&f->rec.data, &f->ev), 0);
}

static void fx_free(fx *f)
{
    msgpack_unpacked_destroy(&f->in);
    msgpack_unpacked_destroy(&f->rec);
    jd_buf_free(&f->in_buf);
    jd_buf_free(&f->rec_buf);
}

/* Segments the test user is in; counts the calls. */
typedef struct segs {
    const char *const *names;
    int calls;
} segs;

static int in_segment(void *ud, const char *name, size_t n)
{
    segs *s = ud;
    s->calls++;
    for (const char *const *p = s->names; *p; p++)
        if (strlen(*p) == n && memcmp(*p, name, n) == 0)
            return 1;
    return 0;
}

static const char *const user_segments[] = {"vip", "beta", NULL};

/* ---------------------------------------------------------------- predicate building */

typedef struct tv {
    jd_vkind kind;
    int64_t i;
    double d;
    const char *s;
} tv;

#define I(x)                   \
    {                          \
        JD_V_INT, (x), 0, NULL \
    }
#define N(x)                   \
    {                          \
        JD_V_NUM, 0, (x), NULL \
    }
#define S(x)                \
    {                       \
        JD_V_STR, 0, 0, (x) \
    }
#define B(x)                    \
    {                           \
        JD_V_BOOL, (x), 0, NULL \
    }
#define NIL                  \
    {                        \
        JD_V_NIL, 0, 0, NULL \
    }

static jd_val mkval(tv t)
{
    jd_val v;
    memset(&v, 0, sizeof v);
    v.kind = t.kind;
    if (t.kind == JD_V_BOOL)
        v.b = (int)t.i;
    else if (t.kind == JD_V_INT)
        v.i = t.i;
    else if (t.kind == JD_V_NUM)
        v.d = t.d;
    else if (t.kind == JD_V_STR) {
        v.n = strlen(t.s);
        v.s = jd_strndup(t.s, v.n);
    }
    return v;
}

/* Builds a predicate the way the compiler does: path split into root + rest. */
static jd_pred mkpred(const char *path, jd_op op, tv v, const tv *set, size_t nset)
{
    jd_pred p;
    memset(&p, 0, sizeof p);
    const char *rest;
    size_t restn;
    if (jd_pred_parse_path(path, strlen(path), &p.root, &rest, &restn))
        fail_msg("bad path %s", path);
    p.path = jd_strndup(rest, restn);
    p.plen = restn;
    p.op = op;
    p.v = mkval(v);
    if (nset) {
        p.set = calloc(nset, sizeof *p.set);
        for (size_t i = 0; i < nset; i++)
            p.set[i] = mkval(set[i]);
        p.nset = nset;
    }
    return p;
}

typedef struct pcase {
    const char *path;
    jd_op op;
    tv v;
    tv set[4];
    size_t nset;
    int want;
} pcase;

static const char *op_name(jd_op op)
{
    static const char *const names[] = {"eq",  "ne",     "gt",     "gte",      "lt",    "lte",
                                        "in_", "not_in", "exists", "contains", "prefix"};
    return names[op];
}

static void run_cases(const char *what, const pcase *cases, size_t n, const jd_match_env *env)
{
    for (size_t i = 0; i < n; i++) {
        jd_pred p = mkpred(cases[i].path, cases[i].op, cases[i].v, cases[i].set, cases[i].nset);
        int got = jd_pred_eval(&p, env);
        jd_pred_free(&p);
        if (got != cases[i].want)
            fail_msg("%s case %zu: %s %s ... gave %d, want %d", what, i, cases[i].path, op_name(cases[i].op), got,
                     cases[i].want);
    }
}

#define RUN(what, cases, env) run_cases(what, cases, sizeof cases / sizeof cases[0], env)

static int setup(void **state)
{
    (void)state;
    rd = jd_json_reader_new();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    jd_json_reader_free(rd);
    return 0;
}

/* ---------------------------------------------------------------- operators */

static const pcase eq_cases[] = {
    /* int in the event */
    {"total", JD_OP_EQ, I(42), {{0}}, 0, 1},
    {"total", JD_OP_EQ, I(43), {{0}}, 0, 0},
    {"total", JD_OP_EQ, N(42.0), {{0}}, 0, 1}, /* 42 == 42.0, as in Lua */
    {"total", JD_OP_EQ, N(42.5), {{0}}, 0, 0},
    {"total", JD_OP_EQ, S("42"), {{0}}, 0, 0}, /* no string coercion */
    {"total", JD_OP_EQ, B(1), {{0}}, 0, 0},
    {"total", JD_OP_EQ, I(-42), {{0}}, 0, 0},
    {"qty", JD_OP_EQ, I(0), {{0}}, 0, 1},
    {"qty", JD_OP_EQ, B(0), {{0}}, 0, 0}, /* 0 is not false */
    {"qty", JD_OP_EQ, N(-0.0), {{0}}, 0, 1},
    {"neg", JD_OP_EQ, I(-5), {{0}}, 0, 1},
    {"neg", JD_OP_EQ, N(-5.0), {{0}}, 0, 1},
    /* float in the event */
    {"price", JD_OP_EQ, N(19.99), {{0}}, 0, 1},
    {"price", JD_OP_EQ, I(19), {{0}}, 0, 0},
    {"price", JD_OP_EQ, S("19.99"), {{0}}, 0, 0},
    {"three", JD_OP_EQ, I(3), {{0}}, 0, 1}, /* 3.0 == 3 */
    {"three", JD_OP_EQ, N(3.0), {{0}}, 0, 1},
    /* exactness beyond 2^53: integers and floats compare by value, not by rounding */
    {"p53", JD_OP_EQ, I(9007199254740993LL), {{0}}, 0, 1},
    {"p53", JD_OP_EQ, I(9007199254740992LL), {{0}}, 0, 0},
    {"p53", JD_OP_EQ, N(9007199254740992.0), {{0}}, 0, 0},
    {"f53", JD_OP_EQ, I(9007199254740993LL), {{0}}, 0, 0},
    {"f53", JD_OP_EQ, I(9007199254740992LL), {{0}}, 0, 1},
    {"big", JD_OP_EQ, I(INT64_MAX), {{0}}, 0, 1},
    {"big", JD_OP_EQ, I(INT64_MAX - 1), {{0}}, 0, 0},
    {"big", JD_OP_EQ, N(9223372036854775808.0), {{0}}, 0, 0}, /* 2^63 is not INT64_MAX */
    {"small", JD_OP_EQ, I(INT64_MIN), {{0}}, 0, 1},
    {"small", JD_OP_EQ, N(-9223372036854775808.0), {{0}}, 0, 1}, /* -2^63 is exact */
    {"huge", JD_OP_EQ, I(-1), {{0}}, 0, 0},                      /* UINT64_MAX is not -1 */
    {"huge", JD_OP_EQ, I(INT64_MAX), {{0}}, 0, 0},
    {"huge", JD_OP_EQ, N(18446744073709551616.0), {{0}}, 0, 0}, /* 2^64 is not UINT64_MAX */
    /* NaN equals nothing */
    {"total", JD_OP_EQ, N(NAN), {{0}}, 0, 0},
    {"price", JD_OP_EQ, N(NAN), {{0}}, 0, 0},
    {"total", JD_OP_NE, N(NAN), {{0}}, 0, 1},
    /* strings */
    {"name", JD_OP_EQ, S("Widget Pro"), {{0}}, 0, 1},
    {"name", JD_OP_EQ, S("widget pro"), {{0}}, 0, 0},
    {"name", JD_OP_EQ, S("Widget"), {{0}}, 0, 0},
    {"name", JD_OP_EQ, S("Widget Pro "), {{0}}, 0, 0},
    {"empty", JD_OP_EQ, S(""), {{0}}, 0, 1},
    {"empty", JD_OP_EQ, NIL, {{0}}, 0, 0},
    /* booleans and null */
    {"ok", JD_OP_EQ, B(1), {{0}}, 0, 1},
    {"ok", JD_OP_EQ, B(0), {{0}}, 0, 0},
    {"ok", JD_OP_EQ, I(1), {{0}}, 0, 0}, /* true is not 1 */
    {"ok", JD_OP_EQ, S("true"), {{0}}, 0, 0},
    {"no", JD_OP_EQ, B(0), {{0}}, 0, 1},
    {"no", JD_OP_EQ, B(1), {{0}}, 0, 0},
    {"nothing", JD_OP_EQ, NIL, {{0}}, 0, 1},
    {"nothing", JD_OP_EQ, B(0), {{0}}, 0, 0},
    {"nothing", JD_OP_EQ, S(""), {{0}}, 0, 0},
    /* containers equal nothing */
    {"tags", JD_OP_EQ, S("a"), {{0}}, 0, 0},
    {"nested", JD_OP_EQ, NIL, {{0}}, 0, 0},
    /* missing is not equal to anything, so not-equal to everything */
    {"missing", JD_OP_EQ, S("x"), {{0}}, 0, 0},
    {"missing", JD_OP_EQ, NIL, {{0}}, 0, 0},
    {"missing", JD_OP_NE, S("x"), {{0}}, 0, 1},
    /* duplicate keys: the last one */
    {"dup", JD_OP_EQ, I(2), {{0}}, 0, 1},
    {"dup", JD_OP_EQ, I(1), {{0}}, 0, 0},
    /* ne is the negation of eq */
    {"total", JD_OP_NE, I(42), {{0}}, 0, 0},
    {"total", JD_OP_NE, I(43), {{0}}, 0, 1},
    {"total", JD_OP_NE, N(42.0), {{0}}, 0, 0},
    {"total", JD_OP_NE, S("42"), {{0}}, 0, 1},
    {"name", JD_OP_NE, S("Widget Pro"), {{0}}, 0, 0},
    {"ok", JD_OP_NE, B(0), {{0}}, 0, 1},
    {"nothing", JD_OP_NE, NIL, {{0}}, 0, 0},
};

static const pcase order_cases[] = {
    /* ints */
    {"total", JD_OP_GT, I(41), {{0}}, 0, 1},
    {"total", JD_OP_GT, I(42), {{0}}, 0, 0},
    {"total", JD_OP_GTE, I(42), {{0}}, 0, 1},
    {"total", JD_OP_GTE, I(43), {{0}}, 0, 0},
    {"total", JD_OP_LT, I(43), {{0}}, 0, 1},
    {"total", JD_OP_LT, I(42), {{0}}, 0, 0},
    {"total", JD_OP_LTE, I(42), {{0}}, 0, 1},
    {"total", JD_OP_LTE, I(41), {{0}}, 0, 0},
    {"total", JD_OP_GT, I(-100), {{0}}, 0, 1},
    {"total", JD_OP_GT, I(INT64_MIN), {{0}}, 0, 1},
    {"total", JD_OP_LT, I(INT64_MAX), {{0}}, 0, 1},
    {"qty", JD_OP_GT, I(-1), {{0}}, 0, 1},
    {"qty", JD_OP_GTE, I(0), {{0}}, 0, 1},
    {"neg", JD_OP_LT, I(0), {{0}}, 0, 1},
    {"neg", JD_OP_GT, I(-6), {{0}}, 0, 1},
    {"neg", JD_OP_LT, I(-5), {{0}}, 0, 0},
    {"neg", JD_OP_LTE, I(-5), {{0}}, 0, 1},
    {"neg", JD_OP_GTE, I(-4), {{0}}, 0, 0},
    /* int against float */
    {"total", JD_OP_GT, N(41.5), {{0}}, 0, 1},
    {"total", JD_OP_LT, N(42.5), {{0}}, 0, 1},
    {"total", JD_OP_GT, N(42.0), {{0}}, 0, 0},
    {"total", JD_OP_GTE, N(42.0), {{0}}, 0, 1},
    {"total", JD_OP_LT, N(INFINITY), {{0}}, 0, 1},
    {"total", JD_OP_GT, N(-INFINITY), {{0}}, 0, 1},
    {"neg", JD_OP_LT, N(-4.5), {{0}}, 0, 1},
    {"neg", JD_OP_GT, N(-5.5), {{0}}, 0, 1},
    {"neg", JD_OP_LT, N(-5.0), {{0}}, 0, 0},
    {"neg", JD_OP_LTE, N(-5.0), {{0}}, 0, 1},
    /* float against int and float */
    {"price", JD_OP_GT, I(19), {{0}}, 0, 1},
    {"price", JD_OP_LT, I(20), {{0}}, 0, 1},
    {"price", JD_OP_GTE, N(19.99), {{0}}, 0, 1},
    {"price", JD_OP_GT, N(19.99), {{0}}, 0, 0},
    {"price", JD_OP_LTE, N(19.98), {{0}}, 0, 0},
    /* NaN orders with nothing */
    {"total", JD_OP_LT, N(NAN), {{0}}, 0, 0},
    {"total", JD_OP_GTE, N(NAN), {{0}}, 0, 0},
    {"total", JD_OP_LTE, N(NAN), {{0}}, 0, 0},
    {"neg", JD_OP_LTE, N(NAN), {{0}}, 0, 0},
    {"price", JD_OP_GT, N(NAN), {{0}}, 0, 0},
    {"price", JD_OP_LTE, N(NAN), {{0}}, 0, 0},
    /* int64 extremes */
    {"big", JD_OP_GTE, I(INT64_MAX), {{0}}, 0, 1},
    {"big", JD_OP_GT, I(INT64_MAX), {{0}}, 0, 0},
    {"big", JD_OP_GT, I(INT64_MAX - 1), {{0}}, 0, 1},
    {"big", JD_OP_LT, N(9223372036854775808.0), {{0}}, 0, 1}, /* INT64_MAX < 2^63 */
    {"big", JD_OP_GTE, N(9223372036854775808.0), {{0}}, 0, 0},
    {"big", JD_OP_GT, N(9223372036854774784.0), {{0}}, 0, 1}, /* the double below 2^63 */
    {"small", JD_OP_LTE, I(INT64_MIN), {{0}}, 0, 1},
    {"small", JD_OP_LT, I(INT64_MIN), {{0}}, 0, 0},
    {"small", JD_OP_LT, I(INT64_MIN + 1), {{0}}, 0, 1},
    {"small", JD_OP_GT, I(INT64_MIN), {{0}}, 0, 0},
    {"small", JD_OP_LT, I(0), {{0}}, 0, 1},
    {"small", JD_OP_GT, N(-9223372036854777856.0), {{0}}, 0, 1}, /* the double below -2^63 */
    {"small", JD_OP_GTE, N(-9223372036854775808.0), {{0}}, 0, 1},
    /* uint64 above INT64_MAX */
    {"huge", JD_OP_GT, I(INT64_MAX), {{0}}, 0, 1},
    {"huge", JD_OP_GTE, I(INT64_MAX), {{0}}, 0, 1},
    {"huge", JD_OP_LT, I(INT64_MAX), {{0}}, 0, 0},
    {"huge", JD_OP_LTE, I(INT64_MAX), {{0}}, 0, 0},
    {"huge", JD_OP_GT, I(-1), {{0}}, 0, 1},
    {"huge", JD_OP_GT, I(INT64_MIN), {{0}}, 0, 1},
    {"huge", JD_OP_LT, N(18446744073709551616.0), {{0}}, 0, 1}, /* UINT64_MAX < 2^64 */
    {"huge", JD_OP_GT, N(18446744073709549568.0), {{0}}, 0, 1}, /* the double below 2^64 */
    {"huge", JD_OP_GT, N(-1.0), {{0}}, 0, 1},
    {"big", JD_OP_LT, I(INT64_MAX), {{0}}, 0, 0},
    /* beyond 2^53 */
    {"p53", JD_OP_GT, N(9007199254740992.0), {{0}}, 0, 1},
    {"p53", JD_OP_LTE, N(9007199254740992.0), {{0}}, 0, 0},
    {"f53", JD_OP_LT, I(9007199254740993LL), {{0}}, 0, 1},
    {"f53", JD_OP_GTE, I(9007199254740993LL), {{0}}, 0, 0},
    {"f53", JD_OP_GTE, I(9007199254740992LL), {{0}}, 0, 1},
    /* strings order bytewise, a prefix first */
    {"name", JD_OP_GT, S("Widget"), {{0}}, 0, 1},
    {"name", JD_OP_LT, S("Widget Zzz"), {{0}}, 0, 1},
    {"name", JD_OP_GT, S("X"), {{0}}, 0, 0},
    {"name", JD_OP_LT, S("X"), {{0}}, 0, 1},
    {"name", JD_OP_GTE, S("Widget Pro"), {{0}}, 0, 1},
    {"name", JD_OP_LTE, S("Widget Pro"), {{0}}, 0, 1},
    {"name", JD_OP_GT, S("Widget Pro"), {{0}}, 0, 0},
    {"name", JD_OP_GT, S(""), {{0}}, 0, 1},
    {"empty", JD_OP_LT, S("a"), {{0}}, 0, 1},
    {"empty", JD_OP_GTE, S(""), {{0}}, 0, 1},
    /* incomparable: all false */
    {"name", JD_OP_GT, I(1), {{0}}, 0, 0},
    {"name", JD_OP_LT, I(1), {{0}}, 0, 0},
    {"total", JD_OP_GT, S("1"), {{0}}, 0, 0},
    {"total", JD_OP_LT, S("1"), {{0}}, 0, 0},
    {"ok", JD_OP_GT, B(0), {{0}}, 0, 0},
    {"ok", JD_OP_LT, B(1), {{0}}, 0, 0},
    {"ok", JD_OP_GTE, B(1), {{0}}, 0, 1}, /* equal, so gte and lte hold */
    {"ok", JD_OP_LTE, B(1), {{0}}, 0, 1},
    {"ok", JD_OP_LTE, B(0), {{0}}, 0, 0},
    {"ok", JD_OP_GT, I(0), {{0}}, 0, 0},
    {"nothing", JD_OP_GTE, NIL, {{0}}, 0, 1}, /* null == null */
    {"nothing", JD_OP_GT, I(0), {{0}}, 0, 0},
    {"tags", JD_OP_GT, I(0), {{0}}, 0, 0},
    {"nested", JD_OP_LT, I(0), {{0}}, 0, 0},
    {"missing", JD_OP_GT, I(0), {{0}}, 0, 0},
    {"missing", JD_OP_LT, I(0), {{0}}, 0, 0},
    {"missing", JD_OP_GTE, I(0), {{0}}, 0, 0},
    {"missing", JD_OP_LTE, I(0), {{0}}, 0, 0},
};

static const pcase set_cases[] = {
    {"name", JD_OP_IN, NIL, {S("a"), S("Widget Pro"), I(1)}, 3, 1},
    {"name", JD_OP_IN, NIL, {S("a"), S("b")}, 2, 0},
    {"name", JD_OP_IN, NIL, {{0}}, 0, 0}, /* the empty set */
    {"total", JD_OP_IN, NIL, {S("42"), I(41), N(42.0)}, 3, 1},
    {"total", JD_OP_IN, NIL, {S("42"), I(41)}, 2, 0},
    {"total", JD_OP_IN, NIL, {I(1), I(42)}, 2, 1},
    {"ok", JD_OP_IN, NIL, {I(1), B(1)}, 2, 1},
    {"ok", JD_OP_IN, NIL, {I(1), S("true")}, 2, 0},
    {"nothing", JD_OP_IN, NIL, {NIL}, 1, 1},
    {"missing", JD_OP_IN, NIL, {NIL, S("")}, 2, 0},
    {"tags", JD_OP_IN, NIL, {S("a")}, 1, 0}, /* an array is not its elements */
    {"huge", JD_OP_IN, NIL, {I(-1), N(18446744073709551616.0)}, 2, 0},
    {"big", JD_OP_IN, NIL, {I(INT64_MAX)}, 1, 1},
    {"name", JD_OP_NOT_IN, NIL, {S("a"), S("b")}, 2, 1},
    {"name", JD_OP_NOT_IN, NIL, {S("a"), S("Widget Pro")}, 2, 0},
    {"name", JD_OP_NOT_IN, NIL, {{0}}, 0, 1},
    {"total", JD_OP_NOT_IN, NIL, {N(42.0)}, 1, 0},
    {"missing", JD_OP_NOT_IN, NIL, {S("x")}, 1, 1},
    {"missing", JD_OP_NOT_IN, NIL, {NIL}, 1, 1},
    {"nothing", JD_OP_NOT_IN, NIL, {NIL}, 1, 0},
};

static const pcase exists_cases[] = {
    {"total", JD_OP_EXISTS, B(1), {{0}}, 0, 1},
    {"total", JD_OP_EXISTS, B(0), {{0}}, 0, 0},
    {"missing", JD_OP_EXISTS, B(1), {{0}}, 0, 0},
    {"missing", JD_OP_EXISTS, B(0), {{0}}, 0, 1},
    {"nothing", JD_OP_EXISTS, B(1), {{0}}, 0, 0}, /* null does not exist */
    {"nothing", JD_OP_EXISTS, B(0), {{0}}, 0, 1},
    {"no", JD_OP_EXISTS, B(1), {{0}}, 0, 1},    /* false does */
    {"empty", JD_OP_EXISTS, B(1), {{0}}, 0, 1}, /* and "" does */
    {"qty", JD_OP_EXISTS, B(1), {{0}}, 0, 1},
    {"tags", JD_OP_EXISTS, B(1), {{0}}, 0, 1},
    {"nested.a.b", JD_OP_EXISTS, B(1), {{0}}, 0, 1},
    {"nested.a.x", JD_OP_EXISTS, B(1), {{0}}, 0, 0},
    {"nested.a.b.c.d", JD_OP_EXISTS, B(1), {{0}}, 0, 0},
    {"name.length", JD_OP_EXISTS, B(1), {{0}}, 0, 0},
};

static const pcase contains_cases[] = {
    /* strings: substring */
    {"name", JD_OP_CONTAINS, S("Pro"), {{0}}, 0, 1},
    {"name", JD_OP_CONTAINS, S("Widget Pro"), {{0}}, 0, 1},
    {"name", JD_OP_CONTAINS, S("get P"), {{0}}, 0, 1},
    {"name", JD_OP_CONTAINS, S("W"), {{0}}, 0, 1},
    {"name", JD_OP_CONTAINS, S("o"), {{0}}, 0, 1},
    {"name", JD_OP_CONTAINS, S(""), {{0}}, 0, 1},
    {"name", JD_OP_CONTAINS, S("pro"), {{0}}, 0, 0},
    {"name", JD_OP_CONTAINS, S("Widget Pro!"), {{0}}, 0, 0},
    {"name", JD_OP_CONTAINS, S("Prox"), {{0}}, 0, 0},
    {"name", JD_OP_CONTAINS, I(1), {{0}}, 0, 0},
    {"empty", JD_OP_CONTAINS, S(""), {{0}}, 0, 1},
    {"empty", JD_OP_CONTAINS, S("a"), {{0}}, 0, 0},
    /* arrays: an element equal to the value */
    {"tags", JD_OP_CONTAINS, S("a"), {{0}}, 0, 1},
    {"tags", JD_OP_CONTAINS, S("b"), {{0}}, 0, 1},
    {"tags", JD_OP_CONTAINS, S("c"), {{0}}, 0, 0},
    {"tags", JD_OP_CONTAINS, S(""), {{0}}, 0, 0},
    {"tags", JD_OP_CONTAINS, I(3), {{0}}, 0, 1},
    {"tags", JD_OP_CONTAINS, N(3.0), {{0}}, 0, 1},
    {"tags", JD_OP_CONTAINS, N(2.5), {{0}}, 0, 1},
    {"tags", JD_OP_CONTAINS, I(2), {{0}}, 0, 0},
    {"tags", JD_OP_CONTAINS, B(1), {{0}}, 0, 1},
    {"tags", JD_OP_CONTAINS, B(0), {{0}}, 0, 0},
    {"tags", JD_OP_CONTAINS, S("3"), {{0}}, 0, 0},
    /* anything else contains nothing */
    {"total", JD_OP_CONTAINS, I(42), {{0}}, 0, 0},
    {"total", JD_OP_CONTAINS, S("4"), {{0}}, 0, 0},
    {"nested", JD_OP_CONTAINS, S("a"), {{0}}, 0, 0},
    {"missing", JD_OP_CONTAINS, S(""), {{0}}, 0, 0},
    {"nothing", JD_OP_CONTAINS, NIL, {{0}}, 0, 0},
};

static const pcase prefix_cases[] = {
    {"name", JD_OP_PREFIX, S("Wid"), {{0}}, 0, 1},
    {"name", JD_OP_PREFIX, S("Widget Pro"), {{0}}, 0, 1},
    {"name", JD_OP_PREFIX, S(""), {{0}}, 0, 1},
    {"name", JD_OP_PREFIX, S("Pro"), {{0}}, 0, 0},
    {"name", JD_OP_PREFIX, S("wid"), {{0}}, 0, 0},
    {"name", JD_OP_PREFIX, S("Widget Pro+"), {{0}}, 0, 0},
    {"name", JD_OP_PREFIX, I(1), {{0}}, 0, 0},
    {"empty", JD_OP_PREFIX, S(""), {{0}}, 0, 1},
    {"empty", JD_OP_PREFIX, S("a"), {{0}}, 0, 0},
    {"total", JD_OP_PREFIX, S("4"), {{0}}, 0, 0}, /* only strings have prefixes */
    {"tags", JD_OP_PREFIX, S("a"), {{0}}, 0, 0},
    {"missing", JD_OP_PREFIX, S(""), {{0}}, 0, 0},
    {"context.locale", JD_OP_PREFIX, S("en-"), {{0}}, 0, 1},
};

static void test_operators(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, track_json);
    jd_match_env env = {.ev = &f.ev};
    RUN("eq/ne", eq_cases, &env);
    RUN("order", order_cases, &env);
    RUN("in/not_in", set_cases, &env);
    RUN("exists", exists_cases, &env);
    RUN("contains", contains_cases, &env);
    RUN("prefix", prefix_cases, &env);
    fx_free(&f);
}

/* For every comparable pair, exactly one of lt, eq, gt holds, and gte/lte/ne agree. */
static void test_order_consistent(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, track_json);
    jd_match_env env = {.ev = &f.ev};
    static const char *const paths[] = {"total", "price", "qty", "neg", "big", "small", "huge", "p53", "f53", "three"};
    static const tv vals[] = {
        I(0),
        I(3),
        I(42),
        I(-5),
        I(INT64_MAX),
        I(INT64_MIN),
        I(9007199254740993LL),
        I(9007199254740992LL),
        N(0.0),
        N(3.0),
        N(19.99),
        N(-5.0),
        N(9223372036854775808.0),
        N(-9223372036854775808.0),
        N(18446744073709551616.0),
        N(9007199254740992.0),
        N(1e300),
        N(-1e300),
        N(0.5),
    };
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        for (size_t j = 0; j < sizeof vals / sizeof vals[0]; j++) {
            int r[6];
            for (int op = JD_OP_EQ; op <= JD_OP_LTE; op++) {
                jd_pred p = mkpred(paths[i], (jd_op)op, vals[j], NULL, 0);
                r[op] = jd_pred_eval(&p, &env);
                jd_pred_free(&p);
            }
            int eq = r[JD_OP_EQ], ne = r[JD_OP_NE], gt = r[JD_OP_GT], gte = r[JD_OP_GTE], lt = r[JD_OP_LT],
                lte = r[JD_OP_LTE];
            if (eq + gt + lt != 1 || ne != !eq || gte != (gt || eq) || lte != (lt || eq))
                fail_msg("%s vs value %zu: eq %d ne %d gt %d gte %d lt %d lte %d", paths[i], j, eq, ne, gt, gte, lt,
                         lte);
        }
    }
    fx_free(&f);
}

/* ---------------------------------------------------------------- roots and paths */

static void test_roots_track(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, track_json);
    jd_buf ub;
    msgpack_unpacked uu;
    read_json(user_traits_json, &ub, &uu);
    segs sg = {user_segments, 0};
    jd_match_env env = {.ev = &f.ev, .user_traits = &uu.data, .score = 12.5, .in_segment = in_segment, .ud = &sg};
    static const pcase cases[] = {
        /* the default root of a track call is its properties */
        {"plan", JD_OP_EQ, S("prop-plan"), {{0}}, 0, 1},
        {"properties.plan", JD_OP_EQ, S("prop-plan"), {{0}}, 0, 1},
        {"traits.plan", JD_OP_EQ, S("trait-plan"), {{0}}, 0, 1},
        {"nested.a.b.c", JD_OP_EQ, S("deep"), {{0}}, 0, 1},
        {"properties.nested.a.b.n", JD_OP_GT, I(6), {{0}}, 0, 1},
        {"nested.a.b", JD_OP_EXISTS, B(1), {{0}}, 0, 1},
        {"nested.b", JD_OP_EXISTS, B(1), {{0}}, 0, 0},
        /* context */
        {"context.ip", JD_OP_EQ, S("1.2.3.4"), {{0}}, 0, 1},
        {"context.campaign.source", JD_OP_EQ, S("google"), {{0}}, 0, 1},
        {"context.campaign.medium", JD_OP_EXISTS, B(0), {{0}}, 0, 1},
        {"ip", JD_OP_EXISTS, B(1), {{0}}, 0, 0}, /* not in properties */
        /* top-level record fields */
        {"event.type", JD_OP_EQ, S("track"), {{0}}, 0, 1},
        {"event.event", JD_OP_EQ, S("Order Completed"), {{0}}, 0, 1},
        {"event.userId", JD_OP_EQ, S("u1"), {{0}}, 0, 1},
        {"event.anonymousId", JD_OP_EQ, S("a1"), {{0}}, 0, 1},
        {"event.messageId", JD_OP_PREFIX, S("m"), {{0}}, 0, 1},
        {"event.timestamp", JD_OP_EQ, I(1793527200000LL), {{0}}, 0, 1},
        {"event.groupId", JD_OP_EXISTS, B(1), {{0}}, 0, 0}, /* null in a track record */
        {"event.properties.total", JD_OP_EQ, I(42), {{0}}, 0, 1},
        {"event.bogus", JD_OP_EXISTS, B(1), {{0}}, 0, 0},
        /* the profile */
        {"user.traits.plan", JD_OP_EQ, S("pro"), {{0}}, 0, 1},
        {"user.traits.ltv", JD_OP_GTE, I(1500), {{0}}, 0, 1},
        {"user.traits.address.country", JD_OP_IN, NIL, {S("DE"), S("AT")}, 2, 1},
        {"user.traits.beta", JD_OP_EQ, B(1), {{0}}, 0, 1},
        {"user.traits.gone", JD_OP_EXISTS, B(0), {{0}}, 0, 1},
        /* the score is a float */
        {"user.score", JD_OP_EQ, N(12.5), {{0}}, 0, 1},
        {"user.score", JD_OP_GT, I(12), {{0}}, 0, 1},
        {"user.score", JD_OP_LT, I(13), {{0}}, 0, 1},
        {"user.score", JD_OP_GTE, N(12.6), {{0}}, 0, 0},
        {"user.score", JD_OP_EQ, I(12), {{0}}, 0, 0},
        {"user.score", JD_OP_IN, NIL, {I(1), N(12.5)}, 2, 1},
        /* segments go through the callback */
        {"user.segments", JD_OP_CONTAINS, S("vip"), {{0}}, 0, 1},
        {"user.segments", JD_OP_CONTAINS, S("beta"), {{0}}, 0, 1},
        {"user.segments", JD_OP_CONTAINS, S("churned"), {{0}}, 0, 0},
        {"user.segments", JD_OP_CONTAINS, S("VIP"), {{0}}, 0, 0},
        {"user.segments", JD_OP_CONTAINS, I(1), {{0}}, 0, 0},
        {"user.segments", JD_OP_NE, S("churned"), {{0}}, 0, 1},
        {"user.segments", JD_OP_NE, S("vip"), {{0}}, 0, 0},
        {"user.segments", JD_OP_IN, NIL, {S("churned"), S("beta")}, 2, 1},
        {"user.segments", JD_OP_IN, NIL, {S("churned"), S("new")}, 2, 0},
        {"user.segments", JD_OP_IN, NIL, {{0}}, 0, 0},
        {"user.segments", JD_OP_NOT_IN, NIL, {S("churned"), S("new")}, 2, 1},
        {"user.segments", JD_OP_NOT_IN, NIL, {S("vip")}, 1, 0},
        {"user.segments", JD_OP_EQ, S("vip"), {{0}}, 0, 0}, /* segments are a set: use contains */
        {"user.segments", JD_OP_EXISTS, B(1), {{0}}, 0, 0},
    };
    RUN("track roots", cases, &env);
    assert_true(sg.calls > 0);

    /* segment names are passed with their length and without a NUL requirement */
    sg.calls = 0;
    jd_pred p = mkpred("user.segments", JD_OP_CONTAINS, (tv)S("vipx"), NULL, 0);
    p.v.n = 3;
    assert_int_equal(jd_pred_eval(&p, &env), 1);
    assert_int_equal(sg.calls, 1);
    jd_pred_free(&p);

    /* without a profile or a segment callback, nothing about the user matches */
    jd_match_env bare = {.ev = &f.ev};
    static const pcase bare_cases[] = {
        {"user.traits.plan", JD_OP_EQ, S("pro"), {{0}}, 0, 0},
        {"user.traits.plan", JD_OP_EXISTS, B(0), {{0}}, 0, 1},
        {"user.segments", JD_OP_CONTAINS, S("vip"), {{0}}, 0, 0},
        {"user.segments", JD_OP_NOT_IN, NIL, {S("vip")}, 1, 1},
        {"user.score", JD_OP_EQ, I(0), {{0}}, 0, 1},
        {"plan", JD_OP_EQ, S("prop-plan"), {{0}}, 0, 1},
    };
    RUN("bare env", bare_cases, &bare);
    msgpack_unpacked_destroy(&uu);
    jd_buf_free(&ub);
    fx_free(&f);
}

/* The default root: traits for identify and group, properties otherwise. */
static void test_default_root_by_type(void **state)
{
    (void)state;
    static const struct {
        const char *json;
        const char *plan; /* what "plan" means */
        const char *props_plan, *traits_plan;
    } cases[] = {
        {identify_json, "enterprise", "free", "enterprise"},
        {group_json, "team", NULL, "team"},
        {page_json, "page-plan", "page-plan", "ctx-plan"}, /* traits from context.traits */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fx f;
        fx_init(&f, cases[i].json);
        jd_match_env env = {.ev = &f.ev};
        pcase pc[3] = {
            {"plan", JD_OP_EQ, S(cases[i].plan), {{0}}, 0, 1},
            {"properties.plan",
             cases[i].props_plan ? JD_OP_EQ : JD_OP_EXISTS,
             cases[i].props_plan ? (tv)S(cases[i].props_plan) : (tv)B(0),
             {{0}},
             0,
             1},
            {"traits.plan", JD_OP_EQ, S(cases[i].traits_plan), {{0}}, 0, 1},
        };
        run_cases(cases[i].json, pc, 3, &env);
        fx_free(&f);
    }
    /* identify: seats is a trait, so it is found by default */
    fx f;
    fx_init(&f, identify_json);
    jd_match_env env = {.ev = &f.ev};
    static const pcase more[] = {
        {"seats", JD_OP_GTE, I(10), {{0}}, 0, 1},
        {"traits.seats", JD_OP_EQ, N(10.0), {{0}}, 0, 1},
        {"properties.seats", JD_OP_EXISTS, B(0), {{0}}, 0, 1},
        {"event.type", JD_OP_EQ, S("identify"), {{0}}, 0, 1},
        {"event.event", JD_OP_EQ, NIL, {{0}}, 0, 1},
    };
    RUN("identify", more, &env);
    fx_free(&f);
}

static void test_parse_path(void **state)
{
    (void)state;
    static const struct {
        const char *path;
        int rc;
        jd_root root;
        const char *rest;
    } cases[] = {
        {"plan", 0, JD_ROOT_DEFAULT, "plan"},
        {"a.b.c", 0, JD_ROOT_DEFAULT, "a.b.c"},
        {"properties.plan", 0, JD_ROOT_PROPERTIES, "plan"},
        {"properties.a.b", 0, JD_ROOT_PROPERTIES, "a.b"},
        {"traits.email", 0, JD_ROOT_TRAITS, "email"},
        {"context.page.url", 0, JD_ROOT_CONTEXT, "page.url"},
        {"event.userId", 0, JD_ROOT_EVENT, "userId"},
        {"user.traits.plan", 0, JD_ROOT_USER_TRAITS, "plan"},
        {"user.traits.address.city", 0, JD_ROOT_USER_TRAITS, "address.city"},
        {"user.score", 0, JD_ROOT_USER_SCORE, ""},
        {"user.segments", 0, JD_ROOT_USER_SEGMENTS, ""},
        {"properties", 0, JD_ROOT_DEFAULT, "properties"}, /* a key named "properties" */
        {"propertiesx.y", 0, JD_ROOT_DEFAULT, "propertiesx.y"},
        {"users.x", 0, JD_ROOT_DEFAULT, "users.x"},
        {"user", 0, JD_ROOT_DEFAULT, "user"},
        {"a..b", -1, 0, NULL},
        {".a", -1, 0, NULL},
        {"a.", -1, 0, NULL},
        {".", -1, 0, NULL},
        {"", -1, 0, NULL},
        {"properties.", -1, 0, NULL},
        {"properties..a", -1, 0, NULL},
        {"user.bogus", -1, 0, NULL},
        {"user.traits", -1, 0, NULL},
        {"user.traits.", -1, 0, NULL},
        {"user.score.x", -1, 0, NULL},
        {"user.segments.vip", -1, 0, NULL},
        {"user.scores", -1, 0, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        jd_root root = (jd_root)99;
        const char *rest = NULL;
        size_t restn = 12345;
        int rc = jd_pred_parse_path(cases[i].path, strlen(cases[i].path), &root, &rest, &restn);
        if (rc != cases[i].rc)
            fail_msg("\"%s\": rc %d, want %d", cases[i].path, rc, cases[i].rc);
        if (rc == 0) {
            assert_int_equal(root, cases[i].root);
            if (restn != strlen(cases[i].rest) || memcmp(rest, cases[i].rest, restn) != 0)
                fail_msg("\"%s\": rest \"%.*s\", want \"%s\"", cases[i].path, (int)restn, rest, cases[i].rest);
        }
    }
    /* the length bounds the path */
    jd_root root;
    const char *rest;
    size_t restn;
    assert_int_equal(jd_pred_parse_path("user.scoreboard", 10, &root, &rest, &restn), 0);
    assert_int_equal(root, JD_ROOT_USER_SCORE);
    assert_int_equal(jd_pred_parse_path("a.b..", 3, &root, &rest, &restn), 0);
    assert_int_equal(restn, 3);
}

static void test_op_parse(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        jd_op op;
    } ops[] = {
        {"eq", JD_OP_EQ},         {"ne", JD_OP_NE},
        {"gt", JD_OP_GT},         {"gte", JD_OP_GTE},
        {"lt", JD_OP_LT},         {"lte", JD_OP_LTE},
        {"in_", JD_OP_IN},        {"not_in", JD_OP_NOT_IN},
        {"exists", JD_OP_EXISTS}, {"contains", JD_OP_CONTAINS},
        {"prefix", JD_OP_PREFIX},
    };
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        jd_op op = (jd_op)99;
        assert_int_equal(jd_op_parse(ops[i].name, &op), 0);
        assert_int_equal(op, ops[i].op);
        assert_non_null(strstr(jd_op_names(), ops[i].name));
    }
    static const char *const bad[] = {"in", "EQ", "", "equals", "not in", "eq "};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        jd_op op;
        if (jd_op_parse(bad[i], &op) != -1)
            fail_msg("\"%s\" parsed", bad[i]);
    }
}

/* jd_val_free and jd_pred_free release everything (ASan checks); jd_val_free clears. */
static void test_pred_free(void **state)
{
    (void)state;
    tv set[] = {S("a"), I(1), S("b")};
    jd_pred p = mkpred("properties.x", JD_OP_IN, (tv)S("v"), set, 3);
    jd_pred_free(&p);
    jd_val v = mkval((tv)S("x"));
    jd_val_free(&v);
    assert_null(v.s);
    jd_val_free(&v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_operators),   cmocka_unit_test(test_order_consistent),
        cmocka_unit_test(test_roots_track), cmocka_unit_test(test_default_root_by_type),
        cmocka_unit_test(test_parse_path),  cmocka_unit_test(test_op_parse),
        cmocka_unit_test(test_pred_free),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
