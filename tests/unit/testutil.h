/* testutil: helpers for the C unit tests (cmocka): an engine on a virtual clock built
 * from a Lua string, with every decided action collected as a JSON line. */
#ifndef JD_TESTUTIL_H
#define JD_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "journeyd.h"

typedef struct tu_run {
    jd_engine *e;
    char **actions; /* JSON lines, owned */
    size_t nactions;
    char **logs;
    size_t nlogs;
    char path[256];
} tu_run;

static void tu_on_action(const jd_action *a, void *ud)
{
    tu_run *r = ud;
    size_t n;
    const char *j = jd_action_json(a, &n);
    r->actions = realloc(r->actions, (r->nactions + 1) * sizeof *r->actions);
    r->actions[r->nactions++] = strndup(j, n);
}

static void tu_on_log(const char *level, const char *line, void *ud)
{
    tu_run *r = ud;
    size_t n = strlen(level) + strlen(line) + 3;
    char *s = malloc(n);
    snprintf(s, n, "%s: %s", level, line);
    r->logs = realloc(r->logs, (r->nlogs + 1) * sizeof *r->logs);
    r->logs[r->nlogs++] = s;
}

/* Writes lua to a temporary file and loads it with opts. NULL and err on failure. */
static inline jd_engine *tu_load_opts(tu_run *r, const char *lua, const jd_options *opts, jd_error *err);

/* Writes lua to a temporary file and loads it on a virtual clock. NULL and err on failure. */
static inline jd_engine *tu_load(tu_run *r, const char *lua, jd_error *err)
{
    jd_options o = {.virtual_clock = 1};
    return tu_load_opts(r, lua, &o, err);
}

static inline jd_engine *tu_load_opts(tu_run *r, const char *lua, const jd_options *opts, jd_error *err)
{
    memset(r, 0, sizeof *r);
    snprintf(r->path, sizeof r->path, "/tmp/jdtest-%d-XXXXXX.lua", (int)getpid());
    int fd = mkstemps(r->path, 4);
    if (fd < 0)
        return NULL;
    size_t n = strlen(lua);
    if (write(fd, lua, n) != (ssize_t)n) {
        close(fd);
        return NULL;
    }
    close(fd);
    r->e = jd_engine_new(r->path, opts, err);
    if (r->e) {
        jd_engine_on_action(r->e, tu_on_action, r);
        jd_engine_on_log(r->e, tu_on_log, r);
    }
    return r->e;
}

/* Loads or fails the test with the error. */
static inline void tu_start(tu_run *r, const char *lua)
{
    jd_error err;
    if (!tu_load(r, lua, &err))
        fail_msg("load failed: %s", err.text);
}

static inline void tu_free(tu_run *r)
{
    jd_engine_free(r->e);
    for (size_t i = 0; i < r->nactions; i++)
        free(r->actions[i]);
    free(r->actions);
    for (size_t i = 0; i < r->nlogs; i++)
        free(r->logs[i]);
    free(r->logs);
    unlink(r->path);
    memset(r, 0, sizeof *r);
}

/* Ingests one JSON event (printf-style); fails the test if it is rejected. */
static inline void tu_event(tu_run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline void tu_event(tu_run *r, const char *fmt, ...)
{
    char buf[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    jd_error err;
    if (jd_engine_ingest_json(r->e, buf, strlen(buf), NULL, &err))
        fail_msg("event rejected: %s\n  %s", err.text, buf);
}

/* A track event for user at ISO time t with a messageId and optional properties JSON. */
static inline void tu_track(tu_run *r, const char *user, const char *event, const char *t, const char *props)
{
    static unsigned long seq;
    tu_event(
        r,
        "{\"type\":\"track\",\"userId\":\"%s\",\"event\":\"%s\",\"timestamp\":\"%s\",\"messageId\":\"tu-%lu\"%s%s%s}",
        user, event, t, ++seq, props ? ",\"properties\":" : "", props ? props : "", "");
}

static inline void tu_advance(tu_run *r, const char *iso)
{
    int64_t ms;
    assert_int_equal(jd_parse_time(iso, &ms), 0);
    jd_engine_advance(r->e, ms);
}

/* Number of actions whose JSON contains every given substring (NULL-terminated). */
static inline size_t tu_count(const tu_run *r, ...)
{
    size_t n = 0;
    for (size_t i = 0; i < r->nactions; i++) {
        va_list ap;
        va_start(ap, r);
        int ok = 1;
        const char *s;
        while ((s = va_arg(ap, const char *)))
            if (!strstr(r->actions[i], s))
                ok = 0;
        va_end(ap);
        n += ok;
    }
    return n;
}

static inline void tu_dump(const tu_run *r)
{
    for (size_t i = 0; i < r->nactions; i++)
        fprintf(stderr, "  action %zu: %s\n", i, r->actions[i]);
    for (size_t i = 0; i < r->nlogs; i++)
        fprintf(stderr, "  log %zu: %s\n", i, r->logs[i]);
}

/* ---------------------------------------------------------------- the store */

/* A temporary directory for a test group's stores: tu_group_setup / tu_group_teardown as
 * cmocka's group setup and teardown. */
static char tu_dir[64];

static inline int tu_group_setup(void **state)
{
    (void)state;
    snprintf(tu_dir, sizeof tu_dir, "/tmp/jd-test-%d-XXXXXX", (int)getpid());
    return mkdtemp(tu_dir) ? 0 : -1;
}

static inline int tu_group_teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tu_dir);
    return system(cmd) ? -1 : 0;
}

/* Opens a store in tu_dir/name for r's engine, or fails the test. */
static inline void tu_open_store(tu_run *r, const char *name, const jd_store_opts *so)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", tu_dir, name);
    jd_error err;
    if (jd_engine_open_store(r->e, path, so, &err))
        fail_msg("store: %s", err.text);
}

static inline void tu_checkpoint(tu_run *r, uint64_t lsn)
{
    jd_error err;
    if (jd_engine_checkpoint(r->e, lsn, &err))
        fail_msg("checkpoint: %s", err.text);
}

/* ---------------------------------------------------------------- shared by the script tests */

/* Two channels every test script declares (3 lines). */
#define HDR                                                                            \
    "local j = require \"journey\"\n"                                                  \
    "j.channel \"email\" { type = \"webhook\", url = \"http://127.0.0.1:9/email\" }\n" \
    "j.channel \"team\" { type = \"slack\", url = \"http://127.0.0.1:9/team\" }\n"

static inline size_t tu_nlogs(const tu_run *r, ...)
{
    size_t n = 0;
    for (size_t i = 0; i < r->nlogs; i++) {
        va_list ap;
        va_start(ap, r);
        int ok = 1;
        const char *s;
        while ((s = va_arg(ap, const char *)))
            if (!strstr(r->logs[i], s))
                ok = 0;
        va_end(ap);
        n += ok;
    }
    return n;
}

#define EXPECT_COUNT(r, n, ...)                                                                               \
    do {                                                                                                      \
        size_t got_ = tu_count((r), __VA_ARGS__, NULL);                                                       \
        if (got_ != (size_t)(n)) {                                                                            \
            tu_dump(r);                                                                                       \
            fail_msg("%s:%d: expected %zu action(s) matching [%s], got %zu", __FILE__, __LINE__, (size_t)(n), \
                     #__VA_ARGS__, got_);                                                                     \
        }                                                                                                     \
    } while (0)

#define EXPECT_NACTIONS(r, n)                                                                                   \
    do {                                                                                                        \
        if ((r)->nactions != (size_t)(n)) {                                                                     \
            tu_dump(r);                                                                                         \
            fail_msg("%s:%d: expected %zu action(s), got %zu", __FILE__, __LINE__, (size_t)(n), (r)->nactions); \
        }                                                                                                       \
    } while (0)

#define EXPECT_ACTION(r, i, ...)                                                                         \
    do {                                                                                                 \
        const char *subs_[] = {__VA_ARGS__, NULL};                                                       \
        if ((size_t)(i) >= (r)->nactions) {                                                              \
            tu_dump(r);                                                                                  \
            fail_msg("%s:%d: no action %zu (have %zu)", __FILE__, __LINE__, (size_t)(i), (r)->nactions); \
        }                                                                                                \
        for (const char **s_ = subs_; *s_; s_++)                                                         \
            if (!strstr((r)->actions[i], *s_)) {                                                         \
                tu_dump(r);                                                                              \
                fail_msg("%s:%d: action %zu lacks %s", __FILE__, __LINE__, (size_t)(i), *s_);            \
            }                                                                                            \
    } while (0)

#define EXPECT_STAT(r, name, n)                                                                                    \
    do {                                                                                                           \
        uint64_t v_ = jd_engine_stat((r)->e, name);                                                                \
        if (v_ != (uint64_t)(n)) {                                                                                 \
            tu_dump(r);                                                                                            \
            fail_msg("%s:%d: stat %s: expected %llu, got %llu", __FILE__, __LINE__, name, (unsigned long long)(n), \
                     (unsigned long long)v_);                                                                      \
        }                                                                                                          \
    } while (0)

#define EXPECT_LOGS(r, n, ...)                                                                                  \
    do {                                                                                                        \
        size_t got_ = tu_nlogs((r), __VA_ARGS__, NULL);                                                         \
        if (got_ != (size_t)(n)) {                                                                              \
            tu_dump(r);                                                                                         \
            fail_msg("%s:%d: expected %zu log line(s) matching [%s], got %zu", __FILE__, __LINE__, (size_t)(n), \
                     #__VA_ARGS__, got_);                                                                       \
        }                                                                                                       \
    } while (0)

#endif
