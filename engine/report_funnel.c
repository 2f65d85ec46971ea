/* report_funnel: GET /v1/journeys/NAME/funnel — a journey's funnel over a window as
 * JSON, from the engine's jd_stats (windowed counters, quantiles, alert states). Uses
 * engine_internal, stats. */
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"
#include "stats.h"

char *jd_engine_funnel_json(const jd_engine *e, const char *name, size_t n, const char *window)
{
    jd_stats_window w;
    if (jd_stats_window_parse(window ? window : "all", &w))
        return NULL;
    const jd_journey *j = jd_defs_journey(e->defs, name, n);
    if (!j)
        return NULL;
    /* stats indexes are journey indexes (registered in defs order) */
    return jd_stats_funnel_json(jd_engine_stats(e), j->index, jd_stats_window_name(w), jd_engine_now(e));
}

char *jd_engine_stats_saved(const jd_engine *e, size_t *len)
{
    jd_buf b;
    jd_buf_init(&b);
    jd_stats_save(jd_engine_stats(e), &b);
    *len = b.len;
    return b.data;
}

char *jd_engine_funnel_json_sum(const jd_engine *e, char *const *saved, const size_t *lens, size_t n, const char *name,
                                size_t nlen, const char *window, int64_t now)
{
    jd_stats_window w;
    if (jd_stats_window_parse(window ? window : "all", &w))
        return NULL;
    const jd_journey *j = jd_defs_journey(e->defs, name, nlen);
    if (!j)
        return NULL;
    /* e's journeys, empty, then every shard's counts added */
    jd_stats *m = jd_analytics_for(e->defs);
    for (size_t i = 0; i < n; i++)
        jd_stats_add_saved(m, saved[i], lens[i]);
    char *json = jd_stats_funnel_json(m, j->index, jd_stats_window_name(w), now);
    jd_stats_free(m);
    return json;
}
