/* replay: `journeyd replay -c CONFIG.lua EVENTS.jsonl [--until T] [--report FILE]
 * [--window W]`. A deterministic dry run on a virtual clock: every decided action as a
 * JSON line on stdout, in time order; then the funnel on stderr (or --report), with the
 * windowed figures of the journey analytics. Nothing is delivered. Uses the public
 * engine API, and engine_internal and stats for the analytics. */
#define _POSIX_C_SOURCE 200809L
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../include/journeyd.h"
#include "cli.h"
#include "engine_internal.h"
#include "stats.h"

static void print_action(const jd_action *a, void *ud)
{
    FILE *out = ud;
    size_t n;
    const char *j = jd_action_json(a, &n);
    fwrite(j, 1, n, out);
    fputc('\n', out);
}

static void print_log(const char *level, const char *line, void *ud)
{
    (void)ud;
    fprintf(stderr, "%s: %s\n", level, line);
}

/* "replay-line-N": the name of a line without messageId (no printf per line) */
static void line_id(char out[64], unsigned long n)
{
    char digits[24];
    int k = 0;
    do {
        digits[k++] = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    memcpy(out, "replay-line-", 12);
    for (int i = 0; i < k; i++)
        out[12 + i] = digits[k - 1 - i];
    out[12 + k] = '\0';
}

static void usage(FILE *f)
{
    fprintf(f, "usage: journeyd replay -c CONFIG.lua EVENTS.jsonl [--until ISO8601] [--report FILE] "
               "[--window 1h|24h|7d|all]\n");
}

/* A duration in ms, short: "850ms", "42.0s", "12.5m", "30.2h", "2.5d" (quantiles are
 * within 2%: three figures say all there is). */
static const char *ms_text(char t[32], double ms)
{
    if (ms < 1000)
        snprintf(t, 32, "%.0fms", ms);
    else if (ms < 60e3)
        snprintf(t, 32, "%.1fs", ms / 1e3);
    else if (ms < 3600e3)
        snprintf(t, 32, "%.1fm", ms / 60e3);
    else if (ms < 2 * 86400e3)
        snprintf(t, 32, "%.1fh", ms / 3600e3);
    else
        snprintf(t, 32, "%.1fd", ms / 86400e3);
    return t;
}

/* A ratio as a percentage, "-" when there is none (r < 0). */
static const char *pct_text(char t[32], double r)
{
    if (r < 0)
        snprintf(t, 32, "-");
    else
        snprintf(t, 32, "%.1f%%", r * 100);
    return t;
}

/* The analytics over a window at the end of the replay: per journey its conversion and
 * time to convert, per stage conversion from the previous stage, drop-off (timed out or
 * exited, of those who left), conversion (moved on or converted, of those who left) and
 * time in stage (median, p90) of the visits that ended in the window. */
static void print_window(FILE *f, const jd_engine *e, jd_stats_window w)
{
    const jd_stats *s = jd_engine_stats(e);
    int64_t now = jd_engine_now(e);
    char t[40];
    jd_time_format(now, t);
    for (size_t i = 0; i < e->defs->njourneys; i++) {
        const jd_journey *j = &e->defs->journeys[i];
        jd_journey_figures jf;
        jd_stats_query(s, (int)i, w, now, &jf);
        char a[32], b[32], c[32];
        fprintf(f, "journey %s over %s at %s: entered %llu, converted %llu (%s), exited %llu", j->name,
                jd_stats_window_name(w), t, (unsigned long long)jf.entered, (unsigned long long)jf.converted,
                pct_text(a, jf.conversion), (unsigned long long)jf.exited);
        if (jf.to_convert.n)
            fprintf(f, ", time to convert median %s, p90 %s", ms_text(a, jf.to_convert.median_ms),
                    ms_text(b, jf.to_convert.p90_ms));
        fprintf(f, "\n  %-24s %9s %9s %9s %9s %10s %9s %9s\n", "stage", "entered", "left", "from_prev", "dropoff",
                "conversion", "median", "p90");
        uint64_t prev = 0;
        for (size_t k = 0; k < j->nstages; k++) {
            jd_stage_figures sf;
            jd_stats_query_stage(s, (int)i, (int)k, w, now, &sf);
            fprintf(f, "  %-24s %9llu %9llu %9s %9s %10s", j->stages[k].name, (unsigned long long)sf.entered,
                    (unsigned long long)sf.left, pct_text(a, k && prev ? (double)sf.entered / (double)prev : -1),
                    pct_text(b, sf.dropoff), pct_text(c, sf.conversion));
            if (sf.in_stage.n)
                fprintf(f, " %9s %9s\n", ms_text(a, sf.in_stage.median_ms), ms_text(b, sf.in_stage.p90_ms));
            else
                fprintf(f, " %9s %9s\n", "-", "-");
            prev = sf.entered;
        }
    }
}

int jd_cmd_replay(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, 0, 'c'}, {"until", required_argument, 0, 'u'},
        {"report", required_argument, 0, 'r'}, {"window", required_argument, 0, 'w'},
        {"help", no_argument, 0, 'h'},         {0, 0, 0, 0},
    };
    const char *config = NULL, *until = NULL, *report = NULL;
    jd_stats_window window = JD_WIN_ALL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "c:u:r:w:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': config = optarg; break;
        case 'u': until = optarg; break;
        case 'r': report = optarg; break;
        case 'w':
            if (jd_stats_window_parse(optarg, &window)) {
                fprintf(stderr, "journeyd: --window: 1h, 24h, 7d or all, not '%s'\n", optarg);
                return 2;
            }
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!config || optind != argc - 1) {
        usage(stderr);
        return 2;
    }
    const char *events = argv[optind];
    int64_t until_ms = 0;
    if (until && jd_parse_time(until, &until_ms)) {
        fprintf(stderr, "journeyd: --until: not an ISO 8601 time: %s\n", until);
        return 2;
    }
    FILE *in = strcmp(events, "-") == 0 ? stdin : fopen(events, "rb");
    if (!in) {
        fprintf(stderr, "journeyd: %s: cannot open\n", events);
        return 2;
    }
    jd_options o = {.virtual_clock = 1};
    jd_error err;
    jd_engine *e = jd_engine_new(config, &o, &err);
    if (!e) {
        fprintf(stderr, "%s\n", err.text);
        if (in != stdin)
            fclose(in);
        return 2;
    }
    static char outbuf[1 << 16];
    setvbuf(stdout, outbuf, _IOFBF, sizeof outbuf);
    jd_engine_on_action(e, print_action, stdout);
    jd_engine_on_log(e, print_log, NULL);

    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    unsigned long lineno = 0, invalid = 0, read = 0;
    char id[64];
    while ((n = getline(&line, &cap, in)) > 0) {
        lineno++;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            n--;
        size_t i = 0;
        while (i < (size_t)n && (line[i] == ' ' || line[i] == '\t'))
            i++;
        if (i == (size_t)n)
            continue;
        read++;
        line_id(id, lineno);
        if (jd_engine_ingest_json(e, line, (size_t)n, id, &err)) {
            invalid++;
            fflush(stdout);
            fprintf(stderr, "%s:%lu: %s\n", events, lineno, err.text);
        }
    }
    free(line);
    if (in != stdin)
        fclose(in);
    if (until)
        jd_engine_advance(e, until_ms);
    fflush(stdout);

    FILE *rep = stderr;
    if (report && !(rep = fopen(report, "w"))) {
        fprintf(stderr, "journeyd: %s: cannot write\n", report);
        rep = stderr;
    }
    char *funnel = jd_engine_funnel_text(e);
    fputs(funnel, rep);
    free(funnel);
    print_window(rep, e, window);
    fprintf(rep,
            "replayed %lu lines: %llu events, %lu invalid, %llu duplicates, %llu unmatched; %llu actions, "
            "%llu timers fired, %llu timers dropped, %llu late events, %llu lua errors\n",
            read, (unsigned long long)jd_engine_stat(e, "events"), invalid,
            (unsigned long long)jd_engine_stat(e, "duplicates"), (unsigned long long)jd_engine_stat(e, "unmatched"),
            (unsigned long long)jd_engine_stat(e, "actions"), (unsigned long long)jd_engine_stat(e, "timers_fired"),
            (unsigned long long)jd_engine_stat(e, "timers_dropped"), (unsigned long long)jd_engine_stat(e, "late"),
            (unsigned long long)jd_engine_stat(e, "lua_errors"));
    if (rep != stderr)
        fclose(rep);
    jd_engine_free(e);
    return 0;
}

int jd_cmd_check(int argc, char **argv)
{
    const char *against = NULL;
    if (argc == 4 && strcmp(argv[1], "--against") == 0) {
        against = argv[2];
        argv += 2;
        argc -= 2;
    }
    if (argc != 2 || argv[1][0] == '-') {
        fprintf(stderr, "usage: journeyd check [--against DATA_DIR] CONFIG.lua\n");
        return 2;
    }
    jd_options o = {.virtual_clock = 1};
    jd_error err;
    jd_engine *e = jd_engine_new(argv[1], &o, &err);
    if (!e) {
        fprintf(stderr, "%s\n", err.text);
        return 2;
    }
    char *d = jd_engine_describe(e);
    fputs(d, stdout);
    free(d);
    int rc = 0;
    if (against) {
        char *a = jd_engine_check_against(e, against, &err);
        if (a) {
            printf("against %s:\n%s", against, a);
            free(a);
        } else {
            fprintf(stderr, "%s\n", err.text);
            rc = 2;
        }
    }
    if (rc == 0)
        printf("%s: ok\n", argv[1]);
    jd_engine_free(e);
    return rc;
}
