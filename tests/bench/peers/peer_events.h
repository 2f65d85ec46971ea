/* peer_events.h: helpers shared by the peer drivers of `make bench`
 * (tests/bench/peers, the drivers): read a JSON Lines file into memory, time, and
 * percentiles of batch latencies. Header-only: each driver is one compile command. */
#ifndef PEER_EVENTS_H
#define PEER_EVENTS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct peer_lines {
    char **line; /* NUL-terminated, without the newline */
    size_t *len;
    size_t n;
} peer_lines;

/* Reads at most max lines (0: all) of path; exits on error. */
static inline void peer_read_lines(const char *path, size_t max, peer_lines *out)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path);
        exit(2);
    }
    size_t cap = 1 << 16;
    out->line = malloc(cap * sizeof *out->line);
    out->len = malloc(cap * sizeof *out->len);
    out->n = 0;
    char *buf = NULL;
    size_t bcap = 0;
    ssize_t got;
    while ((max == 0 || out->n < max) && (got = getline(&buf, &bcap, f)) > 0) {
        while (got && (buf[got - 1] == '\n' || buf[got - 1] == '\r'))
            buf[--got] = '\0';
        if (!got)
            continue;
        if (out->n == cap) {
            cap *= 2;
            out->line = realloc(out->line, cap * sizeof *out->line);
            out->len = realloc(out->len, cap * sizeof *out->len);
        }
        out->line[out->n] = malloc((size_t)got + 1);
        memcpy(out->line[out->n], buf, (size_t)got + 1);
        out->len[out->n++] = (size_t)got;
    }
    free(buf);
    fclose(f);
}

static inline double peer_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static inline int peer_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The q-quantile (0..1) of n values, sorted in place (nearest rank). */
static inline double peer_quantile(double *v, size_t n, double q)
{
    if (!n)
        return 0;
    qsort(v, n, sizeof *v, peer_cmp_double);
    size_t i = (size_t)(q * (double)n + 0.999999);
    return v[i ? i - 1 : 0];
}

/* Prints the common result lines: "NAME: key value" (actions only when known: not ~0). */
static inline void peer_report(const char *name, size_t events, double seconds, unsigned long long actions, double *lat,
                               size_t nlat)
{
    printf("%s: events %zu\n%s: seconds %.3f\n%s: events_per_s %.0f\n", name, events, name, seconds, name,
           (double)events / seconds);
    if (actions != ~0ULL)
        printf("%s: actions %llu\n", name, actions);
    printf("%s: p50_ms %.2f\n", name, peer_quantile(lat, nlat, 0.50) * 1e3);
    printf("%s: p99_ms %.2f\n", name, peer_quantile(lat, nlat, 0.99) * 1e3);
}

#endif
