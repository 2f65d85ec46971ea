/* store_bench: the embedded store at scale. Two phases, each its own process:
 *
 *   store_bench build DIR USERS   USERS sign-ups spread over 10 days of event time, each
 *                                 scheduling ten timers 30-39 days out (tests/bench/
 *                                 store_bench.lua), checkpointed every 100K events
 *   store_bench start DIR         a cold engine opens the store and advances its clock to
 *                                 the earliest pending timer: time from process start to
 *                                 that timer's action, resident memory, timers in memory
 *
 * Prints "store_bench: key value" lines. Uses the public API. */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "journeyd.h"
#include "store.h"
#include "timer.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long rss_kb(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    size_t n = strlen(field);
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, field, n) == 0)
            v = atol(line + n + 1);
    if (f)
        fclose(f);
    return v;
}

static void format_time(int64_t ms, char out[40])
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    size_t n = strftime(out, 40, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 40 - n, ".%03dZ", (int)(ms % 1000));
}

static uint64_t nactions;
static double first_action_at;

static void on_action(const jd_action *a, void *ud)
{
    (void)a;
    (void)ud;
    if (!nactions++)
        first_action_at = now_s();
}

static void quiet(const char *level, const char *line, void *ud)
{
    (void)ud;
    if (strcmp(level, "info") != 0)
        fprintf(stderr, "%s: %s\n", level, line);
}

static jd_engine *open_engine(const char *config, const char *dir)
{
    jd_options o = {.virtual_clock = 1, .dedupe_ttl_ms = 86400000, .decisions_per_user = 20};
    jd_error err;
    jd_engine *e = jd_engine_new(config, &o, &err);
    if (!e) {
        fprintf(stderr, "%s\n", err.text);
        exit(2);
    }
    jd_engine_on_log(e, quiet, NULL);
    jd_engine_on_action(e, on_action, NULL);
    jd_store_opts so = {0};
    if (jd_engine_open_store(e, dir, &so, &err)) {
        fprintf(stderr, "%s\n", err.text);
        exit(2);
    }
    return e;
}

static int build(const char *config, const char *dir, long users)
{
    jd_engine *e = open_engine(config, dir);
    int64_t t0;
    jd_parse_time("2026-01-01T00:00:00Z", &t0);
    int64_t spread = 10LL * 86400000 / users; /* ten days of sign-ups */
    char json[256], ts[40];
    jd_error err;
    double start = now_s(), cp_total = 0, cp_max = 0;
    for (long i = 0; i < users; i++) {
        format_time(t0 + i * spread, ts);
        snprintf(json, sizeof json,
                 "{\"type\":\"track\",\"userId\":\"user-%ld\",\"event\":\"Signed Up\",\"messageId\":\"m-%ld\","
                 "\"timestamp\":\"%s\"}",
                 i, i, ts);
        if (jd_engine_ingest_json(e, json, strlen(json), NULL, &err)) {
            fprintf(stderr, "event %ld: %s\n", i, err.text);
            return 1;
        }
        if ((i + 1) % 100000 == 0 || i + 1 == users) {
            double c0 = now_s();
            if (jd_engine_checkpoint(e, (uint64_t)i + 1, &err)) {
                fprintf(stderr, "checkpoint: %s\n", err.text);
                return 1;
            }
            double c = now_s() - c0;
            cp_total += c;
            if (c > cp_max)
                cp_max = c;
        }
    }
    double secs = now_s() - start;
    printf("store_bench: users %ld\n", users);
    printf("store_bench: timers_scheduled %llu\n", (unsigned long long)jd_engine_stat(e, "timers_scheduled"));
    printf("store_bench: build_seconds %.2f\n", secs);
    printf("store_bench: build_events_per_s %.0f\n", users / secs);
    printf("store_bench: checkpoint_seconds_total %.2f\n", cp_total);
    printf("store_bench: checkpoint_seconds_max %.3f\n", cp_max);
    printf("store_bench: build_peak_rss_mb %.0f\n", rss_kb("VmHWM:") / 1024.0);
    printf("store_bench: users_in_memory_after_build %llu\n", (unsigned long long)jd_engine_stat(e, "users"));
    jd_store *st = jd_engine_store(e);
    uint64_t nt = jd_store_count(st, JD_DB_TIMERS), nu = jd_store_count(st, JD_DB_USERS);
    printf("store_bench: store_timers %llu\n", (unsigned long long)nt);
    printf("store_bench: store_users %llu\n", (unsigned long long)nu);
    printf("store_bench: disk_bytes_per_timer %.0f\n", nt ? (double)jd_store_db_bytes(st, JD_DB_TIMERS) / nt : 0);
    printf("store_bench: disk_bytes_per_profile %.0f\n", nu ? (double)jd_store_db_bytes(st, JD_DB_USERS) / nu : 0);
    printf("store_bench: disk_bytes_total %llu\n", (unsigned long long)jd_store_disk_bytes(st));
    jd_engine_free(e);
    return 0;
}

static int start(const char *config, const char *dir)
{
    double t_start = now_s();
    jd_engine *e = open_engine(config, dir);
    double opened = now_s();
    int64_t due = jd_engine_next_due(e);
    if (due < 0) {
        fprintf(stderr, "store_bench: no pending timer in %s\n", dir);
        return 1;
    }
    jd_engine_advance(e, due);
    if (!nactions) {
        fprintf(stderr, "store_bench: the first due timer did not fire\n");
        return 1;
    }
    printf("store_bench: open_ms %.1f\n", (opened - t_start) * 1e3);
    printf("store_bench: first_timer_ms %.1f\n", (first_action_at - t_start) * 1e3);
    printf("store_bench: fired_at_first_due %llu\n", (unsigned long long)nactions);
    printf("store_bench: timers_in_memory %llu\n", (unsigned long long)jd_engine_stat(e, "timers_pending"));
    printf("store_bench: users_in_memory %llu\n", (unsigned long long)jd_engine_stat(e, "users"));
    printf("store_bench: start_rss_mb %.1f\n", rss_kb("VmRSS:") / 1024.0);
    printf("store_bench: memory_bytes_per_timer_in_memory %zu\n", sizeof(jd_timer));
    jd_engine_free(e);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 5 && strcmp(argv[1], "build") == 0)
        return build(argv[2], argv[3], atol(argv[4]));
    if (argc == 4 && strcmp(argv[1], "start") == 0)
        return start(argv[2], argv[3]);
    fprintf(stderr, "usage: store_bench build CONFIG DIR USERS | store_bench start CONFIG DIR\n");
    return 2;
}
