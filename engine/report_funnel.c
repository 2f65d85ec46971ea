/* report_funnel: GET /v1/journeys/NAME/funnel — a journey's funnel over a window as
 * JSON, from the engine's jd_stats (windowed counters, quantiles, alert states). Uses
 * engine_internal, stats, json, msgpack-c. */
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"
#include "stats.h"

/* The engine's analytics, or NULL while it keeps none. Until the engine keeps jd_stats
 * this unit defines the accessor itself; engine.c takes it over (and declares it in
 * engine_internal.h) when it does. */
const jd_stats *jd_engine_stats(const jd_engine *e);
const jd_stats *jd_engine_stats(const jd_engine *e)
{
    (void)e;
    return NULL;
}

static void pk_u64(msgpack_packer *pk, const char *k, uint64_t v)
{
    jd_mp_pack_cstr(pk, k);
    msgpack_pack_uint64(pk, v);
}

static void pk_ratio(msgpack_packer *pk, uint64_t a, uint64_t b)
{
    if (b)
        msgpack_pack_double(pk, (double)a / (double)b);
    else
        msgpack_pack_nil(pk);
}

static void pk_no_quantiles(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 3);
    pk_u64(pk, "n", 0);
    jd_mp_pack_cstr(pk, "median");
    msgpack_pack_nil(pk);
    jd_mp_pack_cstr(pk, "p90");
    msgpack_pack_nil(pk);
}

/* until the engine keeps jd_stats: the same JSON shape from the all-time counters the
 * engine keeps today (e->counts). Every window answers with all-time figures (said in
 * "window" and "source"); no time in stage, no moves by target, alert states unknown. */
static char *fallback_json(const jd_engine *e, const jd_journey *j)
{
    const jd_journey_count *c = &e->counts[j->index];
    jd_buf mp;
    jd_buf_init(&mp);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &mp, jd_buf_msgpack_write);
    char t[40];
    msgpack_pack_map(&pk, 12);
    jd_mp_pack_cstr(&pk, "journey");
    jd_mp_pack_cstr(&pk, j->name);
    jd_mp_pack_cstr(&pk, "window");
    jd_mp_pack_cstr(&pk, "all");
    jd_mp_pack_cstr(&pk, "now");
    jd_mp_pack_str(&pk, t, jd_time_format(jd_engine_now(e), t));
    jd_mp_pack_cstr(&pk, "source");
    jd_mp_pack_cstr(&pk, "all_time_counters");
    pk_u64(&pk, "entered", c->entered);
    pk_u64(&pk, "active", c->active);
    pk_u64(&pk, "converted", c->converted);
    pk_u64(&pk, "exited", c->exited);
    jd_mp_pack_cstr(&pk, "conversion");
    pk_ratio(&pk, c->converted, c->entered);
    jd_mp_pack_cstr(&pk, "time_to_convert_ms");
    pk_no_quantiles(&pk);
    jd_mp_pack_cstr(&pk, "stages");
    msgpack_pack_array(&pk, j->nstages);
    for (size_t s = 0; s < j->nstages; s++) {
        const jd_stage_count *sc = &c->stages[s];
        uint64_t left = sc->moved_on + sc->timed_out + sc->exited + sc->converted;
        msgpack_pack_map(&pk, 14);
        jd_mp_pack_cstr(&pk, "name");
        jd_mp_pack_cstr(&pk, j->stages[s].name);
        pk_u64(&pk, "entered", sc->entered);
        pk_u64(&pk, "now", sc->now);
        pk_u64(&pk, "moved_on", sc->moved_on);
        pk_u64(&pk, "timed_out", sc->timed_out);
        pk_u64(&pk, "exited", sc->exited);
        pk_u64(&pk, "converted", sc->converted);
        pk_u64(&pk, "left", left);
        jd_mp_pack_cstr(&pk, "conversion_from_previous");
        if (s)
            pk_ratio(&pk, sc->entered, c->stages[s - 1].entered);
        else
            msgpack_pack_nil(&pk);
        jd_mp_pack_cstr(&pk, "dropoff");
        pk_ratio(&pk, sc->timed_out + sc->exited, left);
        jd_mp_pack_cstr(&pk, "conversion");
        pk_ratio(&pk, sc->moved_on + sc->converted, left);
        jd_mp_pack_cstr(&pk, "time_in_stage_ms");
        pk_no_quantiles(&pk);
        jd_mp_pack_cstr(&pk, "moved_to_all_time");
        msgpack_pack_map(&pk, 0);
        int has = 0;
        for (size_t a = 0; a < j->nalerts; a++)
            has |= j->alerts[a].stage == (int)s;
        jd_mp_pack_cstr(&pk, "alert");
        jd_mp_pack_cstr(&pk, has ? "unknown" : "none");
    }
    jd_mp_pack_cstr(&pk, "alerts");
    msgpack_pack_array(&pk, j->nalerts);
    for (size_t a = 0; a < j->nalerts; a++) {
        const jd_alert_spec *sp = &j->alerts[a];
        msgpack_pack_map(&pk, 9);
        jd_mp_pack_cstr(&pk, "kind");
        jd_mp_pack_cstr(&pk, sp->kind == JD_ALERT_DROPOFF_ABOVE ? "dropoff_above" : "conversion_below");
        jd_mp_pack_cstr(&pk, "stage");
        if (sp->stage >= 0)
            jd_mp_pack_cstr(&pk, j->stages[sp->stage].name);
        else
            msgpack_pack_nil(&pk);
        jd_mp_pack_cstr(&pk, "threshold");
        msgpack_pack_double(&pk, sp->threshold);
        jd_mp_pack_cstr(&pk, "window");
        jd_mp_pack_cstr(&pk, jd_stats_window_name(sp->window));
        pk_u64(&pk, "min_sample", sp->min_sample);
        jd_mp_pack_cstr(&pk, "channel");
        jd_mp_pack_cstr(&pk, sp->channel_name);
        jd_mp_pack_cstr(&pk, "state");
        jd_mp_pack_cstr(&pk, "unknown");
        jd_mp_pack_cstr(&pk, "value");
        msgpack_pack_nil(&pk);
        pk_u64(&pk, "sample", 0);
    }
    jd_json_writer *jw = jd_json_writer_new();
    jd_buf out;
    jd_buf_init(&out);
    jd_json_write_msgpack(jw, mp.data, mp.len, &out);
    jd_json_writer_free(jw);
    jd_buf_free(&mp);
    jd_buf_cstr(&out);
    return out.data;
}

char *jd_engine_funnel_json(const jd_engine *e, const char *name, size_t n, const char *window)
{
    jd_stats_window w;
    if (jd_stats_window_parse(window ? window : "all", &w))
        return NULL;
    const jd_journey *j = jd_defs_journey(e->defs, name, n);
    if (!j)
        return NULL;
    const jd_stats *s = jd_engine_stats(e);
    if (!s)
        return fallback_json(e, j); /* until the engine keeps jd_stats */
    int sj = jd_stats_find(s, j->name);
    if (sj < 0)
        return fallback_json(e, j);
    return jd_stats_funnel_json(s, sj, jd_stats_window_name(w), jd_engine_now(e));
}
