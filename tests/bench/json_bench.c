/* json_bench: what parsing one Segment event costs, for a ~200 B and a ~800 B event.
 *
 *   json_bench [CONFIG.lua]
 *
 * Rows: our reader (jd_json_to_msgpack: yajl callbacks building msgpack), yajl alone
 * with no callbacks (the lexing floor under our reader), jansson (json_loadb +
 * json_decref) and cJSON (cJSON_ParseWithLength + cJSON_Delete); with CONFIG.lua also
 * jd_engine_normalize, the whole JSON -> event record step the engine runs per event.
 * Each cell is the median of 7 runs (~60 ms each) over 64 variants of the event
 * (ids, times and numbers differ), after a warm-up: microseconds per event and MB/s
 * of JSON text. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <yajl/yajl_parse.h>

#include "journeyd.h"
#include "json.h"

/* run.sh defines these when pkg-config finds the libraries */
#ifdef HAVE_JANSSON
#include <jansson.h>
#endif
#ifdef HAVE_CJSON
#include <cJSON.h>
#endif

#define VARIANTS 64
#define RUNS 7

typedef struct sample {
    char *text[VARIANTS];
    size_t len[VARIANTS];
    size_t bytes; /* all variants */
} sample;

static void make_small(sample *s)
{
    static const char *const features[] = {"export", "api", "sso", "dashboards", "alerts", "templates"};
    for (int i = 0; i < VARIANTS; i++) {
        char buf[512];
        int n = snprintf(buf, sizeof buf,
                         "{\"type\":\"track\",\"userId\":\"u%07d\",\"event\":\"Feature Used\",\"properties\":"
                         "{\"feature\":\"%s\",\"duration_ms\":%d},\"timestamp\":"
                         "\"2026-03-02T10:%02d:%02d.%03dZ\",\"messageId\":\"%08x-5f3c-4a1e-9b2d-%012x\"}",
                         1000 + i * 7919, features[i % 6], 200 + i * 37, i % 60, (i * 7) % 60, i * 15,
                         0x9e3779b9u * (unsigned)(i + 1), 0x7f4a7c15u * (unsigned)(i + 3));
        s->text[i] = strdup(buf);
        s->len[i] = (size_t)n;
        s->bytes += (size_t)n;
    }
}

static void make_large(sample *s)
{
    for (int i = 0; i < VARIANTS; i++) {
        char buf[2048];
        int n = snprintf(
            buf, sizeof buf,
            "{\"type\":\"track\",\"event\":\"Order Completed\",\"userId\":\"u%07d\",\"anonymousId\":"
            "\"anon-%016llx\",\"messageId\":\"%08x-5f3c-4a1e-9b2d-%012x\",\"timestamp\":\"2026-03-02T10:%02d:%02d.%"
            "03dZ\","
            "\"properties\":{\"order_id\":\"o%07d\",\"total\":%d.97,\"revenue\":%d.97,\"shipping\":5.0,\"tax\":5.25,"
            "\"discount\":0,\"coupon\":\"SPRING26\",\"currency\":\"USD\",\"products\":["
            "{\"product_id\":\"p%05d\",\"sku\":\"SKU-%05d\",\"name\":\"Journey templates pack\",\"price\":49.99,"
            "\"quantity\":1,\"category\":\"templates\"},"
            "{\"product_id\":\"p%05d\",\"sku\":\"SKU-%05d\",\"name\":\"Slack alerts add-on\",\"price\":34.99,"
            "\"quantity\":%d,\"category\":\"add-ons\"}]},"
            "\"context\":{\"ip\":\"203.0.113.%d\",\"library\":{\"name\":\"analytics.js\",\"version\":\"4.1.0\"},"
            "\"locale\":\"en-US\",\"page\":{\"path\":\"/checkout\",\"url\":\"https://shop.example.com/checkout\"},"
            "\"userAgent\":\"Mozilla/5.0 (X11; Linux x86_64) Chrome/124.0 Safari/537.36\"}}",
            1000 + i * 7919, 0x243f6a8885a308d3ULL * (unsigned long long)(i + 1), 0x9e3779b9u * (unsigned)(i + 1),
            0x7f4a7c15u * (unsigned)(i + 3), i % 60, (i * 7) % 60, i * 15, 5000 + i, 100 + i, 90 + i, i * 31 % 99999,
            i * 31 % 99999, i * 17 % 99999, i * 17 % 99999, 1 + i % 3, i % 250);
        s->text[i] = strdup(buf);
        s->len[i] = (size_t)n;
        s->bytes += (size_t)n;
    }
}

/* ---------------------------------------------------------------- parsers */

typedef int (*parse_fn)(const char *text, size_t len);

static jd_json_reader *reader;
static jd_buf out;
static char errbuf[256];

static int p_ours(const char *text, size_t len)
{
    jd_buf_reset(&out);
    return jd_json_to_msgpack(reader, text, len, &out, errbuf, sizeof errbuf) == 0;
}

static int p_yajl(const char *text, size_t len)
{
    yajl_handle h = yajl_alloc(NULL, NULL, NULL);
    yajl_status st = yajl_parse(h, (const unsigned char *)text, len);
    if (st == yajl_status_ok)
        st = yajl_complete_parse(h);
    yajl_free(h);
    return st == yajl_status_ok;
}

#ifdef HAVE_JANSSON
static int p_jansson(const char *text, size_t len)
{
    json_error_t e;
    json_t *j = json_loadb(text, len, 0, &e);
    if (!j)
        return 0;
    json_decref(j);
    return 1;
}
#endif

#ifdef HAVE_CJSON
static int p_cjson(const char *text, size_t len)
{
    cJSON *j = cJSON_ParseWithLength(text, len);
    if (!j)
        return 0;
    cJSON_Delete(j);
    return 1;
}
#endif

static jd_engine *engine;

static int p_normalize(const char *text, size_t len)
{
    char *rec;
    size_t n;
    jd_error err;
    if (jd_engine_normalize(engine, text, len, 0, "bench-id", &rec, &n, &err))
        return 0;
    free(rec);
    return 1;
}

/* ---------------------------------------------------------------- timing */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Median seconds per event over RUNS runs of about 60 ms each (passes over the
 * variants), after a warm-up of about 20 ms that also sizes the runs. */
static double measure(parse_fn fn, const sample *s)
{
    volatile int ok = 0;
    int rounds = 0;
    double t0 = now_s(), dt;
    do {
        for (int i = 0; i < VARIANTS; i++)
            ok += fn(s->text[i], s->len[i]);
        rounds++;
    } while ((dt = now_s() - t0) < 0.02);
    rounds = (int)(rounds * 0.06 / dt) + 1;
    double t[RUNS];
    for (int k = 0; k < RUNS; k++) {
        double start = now_s();
        for (int r = 0; r < rounds; r++)
            for (int i = 0; i < VARIANTS; i++)
                ok += fn(s->text[i], s->len[i]);
        t[k] = (now_s() - start) / ((double)rounds * VARIANTS);
    }
    qsort(t, RUNS, sizeof t[0], cmp_d);
    return t[RUNS / 2];
}

int main(int argc, char **argv)
{
    if (argc > 2) {
        fprintf(stderr, "usage: json_bench [CONFIG.lua]\n");
        return 2;
    }
    sample small = {0}, large = {0};
    make_small(&small);
    make_large(&large);
    reader = jd_json_reader_new();
    jd_buf_init(&out);
    if (argc == 2) {
        jd_options o = {.virtual_clock = 1};
        jd_error err;
        engine = jd_engine_new(argv[1], &o, &err);
        if (!engine) {
            fprintf(stderr, "json_bench: %s\n", err.text);
            return 2;
        }
    }
    struct {
        const char *name;
        parse_fn fn;
    } rows[5];
    int nrows = 0;
    rows[nrows].name = "journeyd jd_json_to_msgpack", rows[nrows++].fn = p_ours;
    rows[nrows].name = "  yajl alone, no callbacks", rows[nrows++].fn = p_yajl;
#ifdef HAVE_JANSSON
    rows[nrows].name = "jansson json_loadb", rows[nrows++].fn = p_jansson;
#endif
#ifdef HAVE_CJSON
    rows[nrows].name = "cJSON cJSON_ParseWithLength", rows[nrows++].fn = p_cjson;
#endif
    if (engine)
        rows[nrows].name = "journeyd normalize (JSON->record)", rows[nrows++].fn = p_normalize;
    for (int r = 0; r < nrows; r++) { /* every parser must accept every variant */
        for (int i = 0; i < VARIANTS; i++) {
            if (!rows[r].fn(small.text[i], small.len[i]) || !rows[r].fn(large.text[i], large.len[i])) {
                fprintf(stderr, "json_bench: %s refused variant %d: %s\n", rows[r].name, i, errbuf);
                return 1;
            }
        }
    }
    double avg_small = (double)small.bytes / VARIANTS, avg_large = (double)large.bytes / VARIANTS;
    printf("JSON parse cost per event (median of %d runs, %d variants each)\n", RUNS, VARIANTS);
    printf("%-36s %10s %9s   %10s %9s\n", "", "~200 B", "", "~800 B", "");
    printf("%-36s %10s %9s   %10s %9s\n", "parser", "us/event", "MB/s", "us/event", "MB/s");
    printf("%-36s %10.0f %9s   %10.0f %9s\n", "(average event size, bytes)", avg_small, "", avg_large, "");
    for (int r = 0; r < nrows; r++) {
        double ts = measure(rows[r].fn, &small), tl = measure(rows[r].fn, &large);
        printf("%-36s %10.3f %9.1f   %10.3f %9.1f\n", rows[r].name, ts * 1e6, avg_small / ts / 1e6, tl * 1e6,
               avg_large / tl / 1e6);
        fflush(stdout);
    }
    if (engine)
        jd_engine_free(engine);
    jd_json_reader_free(reader);
    jd_buf_free(&out);
    return 0;
}
