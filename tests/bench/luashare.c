/* luashare: replays an events file through libjourneyd like `journeyd replay` does,
 * but counts instead of printing: how many events reached Lua (ran at least one hook
 * or `when`), how many Lua calls came from events and how many from timers.
 *
 *   luashare CONFIG.lua EVENTS.jsonl
 *
 * Before each event it fires the timers due by the event's time itself (what the
 * engine would do first anyway), so a timer's hooks are not charged to the event that
 * happens to move the clock. Prints "luashare: key value" lines, and the wall time of
 * the loop (the library path without action JSON: a second, lower figure next to the
 * replay's). Uses only the public API (include/journeyd.h). */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "journeyd.h"

static uint64_t nactions, nlogs;

static void on_action(const jd_action *a, void *ud)
{
    (void)a;
    (void)ud;
    nactions++;
}

static void on_log(const char *level, const char *line, void *ud)
{
    (void)ud;
    if (nlogs++ < 5)
        fprintf(stderr, "luashare: %s: %s\n", level, line);
}

/* The value of "timestamp" in a Segment JSON line, parsed; 0 when absent. */
static int event_time(const char *s, size_t n, int64_t *ms)
{
    static const char key[] = "\"timestamp\":\"";
    const char *end = s + n;
    for (const char *p = s; p + sizeof key - 1 < end; p++) {
        p = memchr(p, '"', (size_t)(end - p));
        if (!p)
            return 0;
        if ((size_t)(end - p) > sizeof key && memcmp(p, key, sizeof key - 1) == 0) {
            const char *v = p + sizeof key - 1, *q = memchr(v, '"', (size_t)(end - v));
            char t[64];
            if (!q || q - v >= (long)sizeof t)
                return 0;
            memcpy(t, v, (size_t)(q - v));
            t[q - v] = '\0';
            return jd_parse_time(t, ms) == 0;
        }
    }
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: luashare CONFIG.lua EVENTS.jsonl\n");
        return 2;
    }
    FILE *in = fopen(argv[2], "rb");
    if (!in) {
        fprintf(stderr, "luashare: %s: cannot open\n", argv[2]);
        return 2;
    }
    jd_options o = {.virtual_clock = 1};
    jd_error err;
    jd_engine *e = jd_engine_new(argv[1], &o, &err);
    if (!e) {
        fprintf(stderr, "%s\n", err.text);
        return 2;
    }
    jd_engine_on_action(e, on_action, NULL);
    jd_engine_on_log(e, on_log, NULL);

    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    unsigned long lineno = 0;
    uint64_t lines = 0, invalid = 0, lua_events = 0, calls_events = 0, calls_timers = 0;
    char id[64];
    double t0 = now_s();
    while ((n = getline(&line, &cap, in)) > 0) {
        lineno++;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            n--;
        if (n == 0)
            continue;
        lines++;
        int64_t ts;
        uint64_t c0 = jd_engine_stat(e, "lua_calls");
        if (event_time(line, (size_t)n, &ts))
            jd_engine_advance(e, ts);
        uint64_t c1 = jd_engine_stat(e, "lua_calls");
        snprintf(id, sizeof id, "replay-line-%lu", lineno);
        if (jd_engine_ingest_json(e, line, (size_t)n, id, &err))
            invalid++;
        uint64_t c2 = jd_engine_stat(e, "lua_calls");
        calls_timers += c1 - c0;
        calls_events += c2 - c1;
        lua_events += c2 > c1;
    }
    double secs = now_s() - t0;
    free(line);
    fclose(in);

    printf("luashare: lines %llu\n", (unsigned long long)lines);
    printf("luashare: invalid %llu\n", (unsigned long long)invalid);
    printf("luashare: unmatched %llu\n", (unsigned long long)jd_engine_stat(e, "unmatched"));
    printf("luashare: lua_events %llu\n", (unsigned long long)lua_events);
    printf("luashare: lua_calls_events %llu\n", (unsigned long long)calls_events);
    printf("luashare: lua_calls_timers %llu\n", (unsigned long long)calls_timers);
    printf("luashare: lua_calls %llu\n", (unsigned long long)jd_engine_stat(e, "lua_calls"));
    printf("luashare: lua_errors %llu\n", (unsigned long long)jd_engine_stat(e, "lua_errors"));
    printf("luashare: timers_fired %llu\n", (unsigned long long)jd_engine_stat(e, "timers_fired"));
    printf("luashare: actions %llu\n", (unsigned long long)nactions);
    printf("luashare: users %llu\n", (unsigned long long)jd_engine_stat(e, "users"));
    printf("luashare: lua_memory %llu\n", (unsigned long long)jd_engine_stat(e, "lua_memory"));
    printf("luashare: seconds %.3f\n", secs);
    jd_engine_free(e);
    return 0;
}
