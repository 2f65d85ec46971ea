/* replay: `journeyd replay -c CONFIG.lua EVENTS.jsonl [--until T] [--report FILE]`.
 * A deterministic dry run on a virtual clock: every decided action as a JSON line on
 * stdout, in time order; then the funnel on stderr (or --report). Nothing is
 * delivered. Uses the public engine API. */
#define _POSIX_C_SOURCE 200809L
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../include/journeyd.h"
#include "cli.h"

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
    fprintf(f, "usage: journeyd replay -c CONFIG.lua EVENTS.jsonl [--until ISO8601] [--report FILE]\n");
}

int jd_cmd_replay(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, 0, 'c'},
        {"until", required_argument, 0, 'u'},
        {"report", required_argument, 0, 'r'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *config = NULL, *until = NULL, *report = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "c:u:r:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': config = optarg; break;
        case 'u': until = optarg; break;
        case 'r': report = optarg; break;
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
    if (argc != 2 || argv[1][0] == '-') {
        fprintf(stderr, "usage: journeyd check CONFIG.lua\n");
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
    printf("%s: ok\n", argv[1]);
    jd_engine_free(e);
    return 0;
}
