/* Feeds arbitrary lines to an engine running the trial-onboarding example: invalid
 * events must be rejected with a reason, valid ones processed, nothing may crash. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "journeyd.h"

static void sink(const jd_action *a, void *ud)
{
    size_t n;
    (void)ud;
    if (!jd_action_json(a, &n) || n == 0)
        abort();
}

static void quiet(const char *level, const char *line, void *ud)
{
    (void)level;
    (void)line;
    (void)ud;
}

static jd_engine *e;

static void cleanup(void)
{
    jd_engine_free(e);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static unsigned long runs;
    if (!e)
        atexit(cleanup);
    if (!e || ++runs % 5000 == 0) {
        jd_engine_free(e);
        jd_options o = {.virtual_clock = 1};
        jd_error err;
        e = jd_engine_new("examples/trial-onboarding/journeyd.lua", &o, &err);
        if (!e) {
            fprintf(stderr, "%s\n", err.text);
            abort();
        }
        jd_engine_on_action(e, sink, NULL);
        jd_engine_on_log(e, quiet, NULL);
    }
    const char *p = (const char *)data, *end = p + size;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        jd_error err;
        err.text[0] = '\0';
        if (jd_engine_ingest_json(e, p, n, "fuzz", &err) && err.text[0] == '\0')
            abort(); /* a rejection always says why */
        p += n + 1;
    }
    return 0;
}
