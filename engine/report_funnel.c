/* report_funnel: GET /v1/journeys/NAME/funnel — a journey's funnel over a window as
 * JSON, from the engine's jd_stats (windowed counters, quantiles, alert states). Uses
 * engine_internal, stats. */
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
