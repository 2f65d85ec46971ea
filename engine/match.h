/* match: `where` predicates compiled to C and evaluated against an event and a profile
 * without entering Lua. Uses event, buf, msgpack-c. */
#ifndef JD_MATCH_H
#define JD_MATCH_H

#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

#include "event.h"

typedef enum jd_root {
    JD_ROOT_DEFAULT,       /* properties (track, page, screen) or traits (identify, group) */
    JD_ROOT_PROPERTIES,    /* "properties.x" */
    JD_ROOT_TRAITS,        /* "traits.x": the event's traits */
    JD_ROOT_CONTEXT,       /* "context.x" */
    JD_ROOT_EVENT,         /* "event.userId", "event.type": top-level record fields */
    JD_ROOT_USER_TRAITS,   /* "user.traits.x": the profile */
    JD_ROOT_USER_SCORE,    /* "user.score" */
    JD_ROOT_USER_SEGMENTS, /* "user.segments" (use contains) */
} jd_root;

typedef enum jd_op {
    JD_OP_EQ,
    JD_OP_NE,
    JD_OP_GT,
    JD_OP_GTE,
    JD_OP_LT,
    JD_OP_LTE,
    JD_OP_IN,
    JD_OP_NOT_IN,
    JD_OP_EXISTS,
    JD_OP_CONTAINS,
    JD_OP_PREFIX,
} jd_op;

typedef enum jd_vkind { JD_V_NIL, JD_V_BOOL, JD_V_INT, JD_V_NUM, JD_V_STR } jd_vkind;

typedef struct jd_val {
    jd_vkind kind;
    int b;
    int64_t i;
    double d;
    char *s; /* owned */
    size_t n;
} jd_val;

typedef struct jd_pred {
    jd_root root;
    char *path; /* owned, relative to root; "" for user.score / user.segments */
    size_t plen;
    jd_op op;
    jd_val v;
    jd_val *set; /* in_ / not_in, owned */
    size_t nset;
} jd_pred;

/* What predicates can see besides the event. */
typedef struct jd_match_env {
    const jd_event *ev;
    const msgpack_object *user_traits; /* map, may be NULL */
    double score;
    int (*in_segment)(void *ud, const char *name, size_t n);
    void *ud;
} jd_match_env;

int jd_pred_eval(const jd_pred *p, const jd_match_env *env);
void jd_pred_free(jd_pred *p);
void jd_val_free(jd_val *v);

/* Parses "user.traits.plan" etc. into root + path. Returns 0 or -1 (bad path). */
int jd_pred_parse_path(const char *path, size_t n, jd_root *root, const char **rest, size_t *restn);
/* Parses an operator name ("gt", "in_", ...). Returns 0 or -1. */
int jd_op_parse(const char *s, jd_op *op);
const char *jd_op_names(void);

#endif
