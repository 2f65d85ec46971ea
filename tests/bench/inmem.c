/* inmem: the in-memory replay path — events already normalised into records (the
 * internal msgpack format, as the event log holds them) processed by jd_engine_process
 * on a virtual clock, actions counted, nothing printed. Normalising happens before the
 * clock starts; only processing is timed.
 *
 *   inmem CONFIG.lua EVENTS.jsonl
 *
 * Prints "inmem: records N", "inmem: seconds S", "inmem: actions A". Uses the public API.
 * INMEM_NO_FREE=1 exits without freeing the engine, so that a profile of the whole run
 * (perf record -D, past the loading) holds only processing. */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "journeyd.h"

static uint64_t nactions;

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
    if (argc != 3) {
        fprintf(stderr, "usage: inmem CONFIG.lua EVENTS.jsonl\n");
        return 2;
    }
    jd_options o = {.virtual_clock = 1};
    jd_error err;
    jd_engine *norm = jd_engine_new(argv[1], &o, &err);
    if (!norm) {
        fprintf(stderr, "%s\n", err.text);
        return 2;
    }
    FILE *in = fopen(argv[2], "rb");
    if (!in) {
        fprintf(stderr, "inmem: cannot open %s\n", argv[2]);
        return 2;
    }
    /* all records in one buffer; offsets in another */
    size_t cap = 1 << 20, len = 0, n = 0, ocap = 1 << 16;
    char *recs = malloc(cap);
    size_t *offs = malloc(ocap * sizeof *offs);
    char *line = NULL, id[32];
    size_t lcap = 0;
    ssize_t got;
    int64_t prev_ts = 0;
    while ((got = getline(&line, &lcap, in)) > 0) {
        char *r;
        size_t rl;
        snprintf(id, sizeof id, "line-%zu", n + 1);
        if (jd_engine_normalize(norm, line, (size_t)got, prev_ts, id, &r, &rl, &err))
            continue;
        while (len + rl > cap)
            recs = realloc(recs, cap *= 2);
        if (n + 2 > ocap)
            offs = realloc(offs, (ocap *= 2) * sizeof *offs);
        memcpy(recs + len, r, rl);
        free(r);
        offs[n++] = len;
        len += rl;
    }
    offs[n] = len;
    free(line);
    fclose(in);
    jd_engine_free(norm);

    jd_engine *e = jd_engine_new(argv[1], &o, &err);
    jd_engine_on_action(e, on_action, NULL);
    jd_engine_on_log(e, quiet, NULL);
    /* The records are read once before the clock starts, a byte a page. On the VM this
     * was measured on, a large munmap or mremap (the loading's reallocs, the normalising
     * engine's free) makes the next access to every other page of the process trap once,
     * about 1.3 us a page: 0.09 s over these records, which a replay reading its input
     * through one reused buffer never pays (nor floor, whose plan fread writes just before
     * its clock). The buffer is far larger than the caches: nothing else stays warm. */
    for (size_t i = 0; i < len; i += 4096)
        (void)*(volatile const char *)(recs + i);
    for (size_t i = 0; i <= n; i += 4096 / sizeof *offs)
        (void)*(volatile const size_t *)(offs + i);
    struct timespec t0, t1, c0, c1;
    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (size_t i = 0; i < n; i++)
        jd_engine_process(e, recs + offs[i], offs[i + 1] - offs[i], &err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
    getrusage(RUSAGE_SELF, &ru1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    double cs = (double)(c1.tv_sec - c0.tv_sec) + (double)(c1.tv_nsec - c0.tv_nsec) / 1e9;
    /* the CPU time is the steadier figure on a busy machine (no waiting for a core) */
    printf("inmem: records %zu\ninmem: seconds %.3f\ninmem: cpu_seconds %.3f\ninmem: actions %llu\n"
           "inmem: page_faults %ld\n",
           n, s, cs, (unsigned long long)nactions, ru1.ru_minflt - ru0.ru_minflt);
    if (getenv("INMEM_NO_FREE")) {
        fflush(stdout);
        _exit(0);
    }
    jd_engine_free(e);
    free(recs);
    free(offs);
    return 0;
}
