#include "match.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

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

int jd_op_parse(const char *s, jd_op *op)
{
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        if (strcmp(ops[i].name, s) == 0) {
            *op = ops[i].op;
            return 0;
        }
    }
    return -1;
}

const char *jd_op_names(void)
{
    return "eq, ne, gt, gte, lt, lte, in_, not_in, exists, contains, prefix";
}

static int starts(const char *p, size_t n, const char *pre, size_t pn)
{
    return n > pn && memcmp(p, pre, pn) == 0;
}

int jd_pred_parse_path(const char *path, size_t n, jd_root *root, const char **rest, size_t *restn)
{
    if (n == 0 || path[0] == '.' || path[n - 1] == '.')
        return -1;
    for (size_t i = 1; i < n; i++)
        if (path[i] == '.' && path[i - 1] == '.')
            return -1;
#define ROOT(pre, r)                             \
    if (starts(path, n, pre, sizeof(pre) - 1)) { \
        *root = r;                               \
        *rest = path + sizeof(pre) - 1;          \
        *restn = n - (sizeof(pre) - 1);          \
        return 0;                                \
    }
    ROOT("properties.", JD_ROOT_PROPERTIES)
    ROOT("traits.", JD_ROOT_TRAITS)
    ROOT("context.", JD_ROOT_CONTEXT)
    ROOT("event.", JD_ROOT_EVENT)
    ROOT("user.traits.", JD_ROOT_USER_TRAITS)
#undef ROOT
    if (n == 10 && memcmp(path, "user.score", 10) == 0) {
        *root = JD_ROOT_USER_SCORE;
        *rest = path + n;
        *restn = 0;
        return 0;
    }
    if (n == 13 && memcmp(path, "user.segments", 13) == 0) {
        *root = JD_ROOT_USER_SEGMENTS;
        *rest = path + n;
        *restn = 0;
        return 0;
    }
    if (starts(path, n, "user.", 5))
        return -1; /* user.<other> is not a thing */
    *root = JD_ROOT_DEFAULT;
    *rest = path;
    *restn = n;
    return 0;
}

void jd_val_free(jd_val *v)
{
    free(v->s);
    v->s = NULL;
}

void jd_pred_free(jd_pred *p)
{
    free(p->path);
    jd_val_free(&p->v);
    for (size_t i = 0; i < p->nset; i++)
        jd_val_free(&p->set[i]);
    free(p->set);
}

/* Integers against doubles by exact value, as Lua does (converting the integer would
 * make 2^53 + 1 equal 2^53). Returns -1/0/1, or 2 for NaN. */
static int cmp_i64_d(int64_t a, double b)
{
    if (b != b)
        return 2;
    if (b >= 9223372036854775808.0)
        return -1;
    if (b < -9223372036854775808.0)
        return 1;
    double fb = floor(b); /* in [-2^63, 2^63): exact as an int64 */
    int64_t ib = (int64_t)fb;
    if (a != ib)
        return a < ib ? -1 : 1;
    return fb < b ? -1 : 0;
}

static int cmp_u64_d(uint64_t a, double b)
{
    if (b != b)
        return 2;
    if (b < 0)
        return 1;
    if (b >= 18446744073709551616.0)
        return -1;
    double fb = floor(b);
    uint64_t ib = (uint64_t)fb;
    if (a != ib)
        return a < ib ? -1 : 1;
    return fb < b ? -1 : 0;
}

/* Compares a msgpack scalar with a value: returns -1/0/1, or 2 when incomparable. */
static int cmp(const msgpack_object *o, const jd_val *v)
{
    switch (o->type) {
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        if (v->kind == JD_V_INT) {
            if (v->i < 0)
                return 1;
            uint64_t a = o->via.u64, b = (uint64_t)v->i;
            return a < b ? -1 : a > b;
        }
        if (v->kind == JD_V_NUM)
            return cmp_u64_d(o->via.u64, v->d);
        return 2;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        if (v->kind == JD_V_INT)
            return o->via.i64 < v->i ? -1 : o->via.i64 > v->i;
        if (v->kind == JD_V_NUM)
            return cmp_i64_d(o->via.i64, v->d);
        return 2;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: {
        double a = o->via.f64, b;
        if (v->kind == JD_V_INT) {
            int c = cmp_i64_d(v->i, a);
            return c == 2 ? 2 : -c;
        }
        if (v->kind == JD_V_NUM)
            b = v->d;
        else
            return 2;
        if (a != a || b != b)
            return 2;
        return a < b ? -1 : a > b ? 1 : 0;
    }
    case MSGPACK_OBJECT_STR: {
        if (v->kind != JD_V_STR)
            return 2;
        size_t m = o->via.str.size < v->n ? o->via.str.size : v->n;
        int c = memcmp(o->via.str.ptr, v->s, m);
        if (c)
            return c < 0 ? -1 : 1;
        return o->via.str.size < v->n ? -1 : o->via.str.size > v->n;
    }
    case MSGPACK_OBJECT_BOOLEAN:
        if (v->kind != JD_V_BOOL)
            return 2;
        return (o->via.boolean ? 1 : 0) == (v->b ? 1 : 0) ? 0 : 2;
    case MSGPACK_OBJECT_NIL: return v->kind == JD_V_NIL ? 0 : 2;
    default: return 2;
    }
}

static int eq(const msgpack_object *o, const jd_val *v)
{
    return o && cmp(o, v) == 0;
}

static int contains(const msgpack_object *o, const jd_val *v)
{
    if (!o)
        return 0;
    if (o->type == MSGPACK_OBJECT_STR && v->kind == JD_V_STR) {
        if (v->n == 0)
            return 1;
        if (v->n > o->via.str.size)
            return 0;
        const char *h = o->via.str.ptr;
        for (size_t i = 0; i + v->n <= o->via.str.size; i++)
            if (h[i] == v->s[0] && memcmp(h + i, v->s, v->n) == 0)
                return 1;
        return 0;
    }
    if (o->type == MSGPACK_OBJECT_ARRAY) {
        for (uint32_t i = 0; i < o->via.array.size; i++)
            if (eq(&o->via.array.ptr[i], v))
                return 1;
    }
    return 0;
}

static int in_set(const msgpack_object *o, const jd_pred *p)
{
    if (!o)
        return 0;
    for (size_t i = 0; i < p->nset; i++)
        if (eq(o, &p->set[i]))
            return 1;
    return 0;
}

/* A record holds every field, nil when empty: so does this. */
static const msgpack_object *str_obj(msgpack_object *tmp, jd_str v)
{
    if (!v.n) {
        tmp->type = MSGPACK_OBJECT_NIL;
        return tmp;
    }
    tmp->type = MSGPACK_OBJECT_STR;
    tmp->via.str.ptr = v.p;
    tmp->via.str.size = (uint32_t)v.n;
    return tmp;
}

/* "event.<field>[.path]": the normalised record's fields, read from the view, so a view
 * prepared straight from the input and one read from a record answer alike. */
static const msgpack_object *event_field(const jd_event *ev, const char *path, size_t plen, msgpack_object *tmp)
{
    const char *dot = memchr(path, '.', plen);
    size_t n = dot ? (size_t)(dot - path) : plen;
    const char *rest = dot ? dot + 1 : path + plen;
    size_t rn = dot ? plen - n - 1 : 0;
#define IS(lit) (n == sizeof(lit) - 1 && memcmp(path, lit, n) == 0)
    const msgpack_object *map = NULL;
    if (IS("properties"))
        map = jd_event_properties(ev);
    else if (IS("traits"))
        map = jd_event_traits(ev);
    else if (IS("context"))
        map = jd_event_context(ev);
    if (map)
        return rn ? jd_mp_path(map, rest, rn) : map;
    if (dot)
        return NULL; /* scalars have no fields */
    if (IS("type")) {
        const char *t = jd_event_type_name(ev->type);
        return str_obj(tmp, (jd_str){t, strlen(t)});
    }
    if (IS("timestamp")) {
        tmp->type = ev->timestamp < 0 ? MSGPACK_OBJECT_NEGATIVE_INTEGER : MSGPACK_OBJECT_POSITIVE_INTEGER;
        tmp->via.i64 = ev->timestamp;
        return tmp;
    }
    if (IS("messageId"))
        return str_obj(tmp, ev->message_id);
    if (IS("userId"))
        return str_obj(tmp, ev->has_user_id ? ev->user_id : (jd_str){"", 0});
    if (IS("anonymousId"))
        return str_obj(tmp, ev->anonymous_id);
    if (IS("event"))
        return str_obj(tmp, ev->name);
    if (IS("groupId"))
        return str_obj(tmp, ev->group_id);
    if (IS("previousId"))
        return str_obj(tmp, ev->previous_id);
#undef IS
    return NULL;
}

static const msgpack_object *resolve(const jd_pred *p, const jd_match_env *env, msgpack_object *tmp)
{
    const jd_event *ev = env->ev;
    switch (p->root) {
    case JD_ROOT_DEFAULT:
        if (ev->type == JD_EV_IDENTIFY || ev->type == JD_EV_GROUP)
            return jd_mp_path(jd_event_traits(ev), p->path, p->plen);
        return jd_mp_path(jd_event_properties(ev), p->path, p->plen);
    case JD_ROOT_PROPERTIES: return jd_mp_path(jd_event_properties(ev), p->path, p->plen);
    case JD_ROOT_TRAITS: return jd_mp_path(jd_event_traits(ev), p->path, p->plen);
    case JD_ROOT_CONTEXT: return jd_mp_path(jd_event_context(ev), p->path, p->plen);
    case JD_ROOT_EVENT: return event_field(ev, p->path, p->plen, tmp);
    case JD_ROOT_USER_TRAITS: return env->user_traits ? jd_mp_path(env->user_traits, p->path, p->plen) : NULL;
    case JD_ROOT_USER_SCORE:
        tmp->type = MSGPACK_OBJECT_FLOAT64;
        tmp->via.f64 = env->score;
        return tmp;
    case JD_ROOT_USER_SEGMENTS: return NULL; /* handled by the caller */
    }
    return NULL;
}

int jd_pred_eval(const jd_pred *p, const jd_match_env *env)
{
    if (p->root == JD_ROOT_USER_SEGMENTS) {
        int in = p->v.kind == JD_V_STR && env->in_segment && env->in_segment(env->ud, p->v.s, p->v.n);
        switch (p->op) {
        case JD_OP_CONTAINS: return in;
        case JD_OP_NE: return !in;
        case JD_OP_IN:
        case JD_OP_NOT_IN: {
            int any = 0;
            for (size_t i = 0; i < p->nset && !any; i++)
                any =
                    p->set[i].kind == JD_V_STR && env->in_segment && env->in_segment(env->ud, p->set[i].s, p->set[i].n);
            return p->op == JD_OP_IN ? any : !any;
        }
        default: return 0;
        }
    }
    msgpack_object tmp;
    const msgpack_object *o = resolve(p, env, &tmp);
    int c;
    switch (p->op) {
    case JD_OP_EQ: return eq(o, &p->v);
    case JD_OP_NE: return !eq(o, &p->v);
    case JD_OP_GT: return o && (c = cmp(o, &p->v)) != 2 && c > 0;
    case JD_OP_GTE: return o && (c = cmp(o, &p->v)) != 2 && c >= 0;
    case JD_OP_LT: return o && (c = cmp(o, &p->v)) != 2 && c < 0;
    case JD_OP_LTE: return o && (c = cmp(o, &p->v)) != 2 && c <= 0;
    case JD_OP_IN: return in_set(o, p);
    case JD_OP_NOT_IN: return !in_set(o, p);
    case JD_OP_EXISTS: {
        int ex = o && o->type != MSGPACK_OBJECT_NIL;
        return p->v.b ? ex : !ex;
    }
    case JD_OP_CONTAINS: return contains(o, &p->v);
    case JD_OP_PREFIX:
        return o && o->type == MSGPACK_OBJECT_STR && p->v.kind == JD_V_STR && o->via.str.size >= p->v.n &&
               memcmp(o->via.str.ptr, p->v.s, p->v.n) == 0;
    }
    return 0;
}
