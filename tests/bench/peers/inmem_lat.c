/* inmem_lat: the in-memory replay path of tests/bench/inmem.c (normalised records
 * through jd_engine_process on a virtual clock, actions counted), timed in chunks for
 * the latency columns of `make bench`'s table (tests/bench/table.sh).
 *
 *   inmem_lat CONFIG.lua EVENTS.jsonl [CHUNK]
 *
 * Normalising happens before the clock starts. Latency: the time to process a chunk of
 * CHUNK (500) records, as if they had arrived together. Prints "inmem: key value" lines. */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "journeyd.h"
#include "peer_events.h"

static unsigned long long nactions;

static void on_action(const jd_action *a, void *ud)
{
    (void)a;
    (void)ud;
    nactions++;
}

static void quiet(const char *level, const char *line, void *ud)
{
    (void)level;
    (void)line;
    (void)ud;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: inmem_lat CONFIG.lua EVENTS.jsonl [CHUNK]\n");
        return 2;
    }
    size_t chunk = argc > 3 ? (size_t)atol(argv[3]) : 500;
    jd_options o = {.virtual_clock = 1};
    jd_error err;
    jd_engine *norm = jd_engine_new(argv[1], &o, &err);
    if (!norm || !chunk) {
        fprintf(stderr, "%s\n", norm ? "bad chunk" : err.text);
        return 2;
    }
    FILE *in = fopen(argv[2], "rb");
    if (!in) {
        fprintf(stderr, "inmem_lat: cannot open %s\n", argv[2]);
        return 2;
    }
    size_t cap = 1 << 16, n = 0, lcap = 0;
    char **rec = malloc(cap * sizeof *rec), *line = NULL;
    size_t *rlen = malloc(cap * sizeof *rlen);
    ssize_t got;
    while ((got = getline(&line, &lcap, in)) > 0) {
        char id[32];
        snprintf(id, sizeof id, "line-%zu", n + 1);
        if (n == cap) {
            cap *= 2;
            rec = realloc(rec, cap * sizeof *rec);
            rlen = realloc(rlen, cap * sizeof *rlen);
        }
        if (jd_engine_normalize(norm, line, (size_t)got, 0, id, &rec[n], &rlen[n], &err) == 0)
            n++;
    }
    free(line);
    fclose(in);
    jd_engine_free(norm);

    jd_engine *e = jd_engine_new(argv[1], &o, &err);
    if (!e) {
        fprintf(stderr, "%s\n", err.text);
        return 2;
    }
    jd_engine_on_action(e, on_action, NULL);
    jd_engine_on_log(e, quiet, NULL);
    size_t nb = (n + chunk - 1) / chunk;
    double *lat = malloc((nb ? nb : 1) * sizeof *lat);
    double t0 = peer_now();
    for (size_t b = 0; b < nb; b++) {
        double s = peer_now();
        size_t to = (b + 1) * chunk < n ? (b + 1) * chunk : n;
        for (size_t i = b * chunk; i < to; i++)
            jd_engine_process(e, rec[i], rlen[i], &err);
        lat[b] = peer_now() - s;
    }
    double secs = peer_now() - t0;
    peer_report("inmem", n, secs, nactions, lat, nb);
    jd_engine_free(e);
    return 0;
}
