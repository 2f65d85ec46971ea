/* stats: journey analytics kept as events flow — per journey and stage, windowed counters
 * (entered, in stage now, moved on and to which stage, timed out, exited, converted),
 * time in stage and time to convert as streaming quantiles, and drop-off / conversion
 * alerts with hysteresis. A pure data structure: no Lua, no I/O; time is whatever the
 * caller passes (the engine's clock). Uses buf, json, event (msgpack helpers), msgpack-c.
 *
 * Windows: 1h (minute buckets: the current minute and the 59 before it), 24h and 7d (hour
 * buckets: the current hour and the 23 / 167 before it, one ring of 168 serves both) and
 * all time. An observation lands in the bucket of the time passed with it; buckets roll
 * over when a later time comes in, and a query at time `now` sums the buckets of its
 * window. Counts in a window are events in it (not cohorts): a window's "converted" are
 * conversions that happened in it.
 *
 * Quantiles: a log-bucketed histogram (bin k >= 1 holds [g^(k-1), g^k) ms, g = 1.04; bin 0
 * holds values < 1 ms), reported as 2 g^k / (1 + g): at most (g - 1) / (g + 1) = 1.96%
 * relative error against the exact nearest-rank quantile; values above about a year
 * go to the last bin. Bins are kept sparse.
 *
 * Memory: per stage (and once more per journey, for its own entered/converted/exited and
 * time to convert) 228 buckets of 24 bytes = 5,472 bytes fixed, plus 8 bytes per distinct
 * (bucket, histogram bin) pair seen in the rings, 8 bytes per distinct all-time bin (at
 * most 620) and 8 bytes per move target. */
#ifndef JD_STATS_H
#define JD_STATS_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

typedef struct jd_stats jd_stats;

typedef enum jd_stats_window { JD_WIN_1H, JD_WIN_24H, JD_WIN_7D, JD_WIN_ALL, JD_NWINDOWS } jd_stats_window;

/* "1h", "24h", "7d", "all" -> 0 and *w; -1 otherwise. */
int jd_stats_window_parse(const char *s, jd_stats_window *w);
const char *jd_stats_window_name(jd_stats_window w);

/* ---------------------------------------------------------------- alerts (specs) */

typedef enum jd_alert_kind {
    JD_ALERT_DROPOFF_ABOVE,   /* a stage's drop-off above the threshold */
    JD_ALERT_CONVERSION_BELOW /* the journey's (or a stage's) conversion below it */
} jd_alert_kind;

#define JD_MAX_ALERTS 8

/* One `alert` entry of a journey, as compiled from the script. */
typedef struct jd_alert_spec {
    jd_alert_kind kind;
    int stage; /* stage index; -1: the whole journey (conversion_below only) */
    double threshold;
    jd_stats_window window; /* 1h, 24h or 7d */
    uint32_t min_sample;    /* no state change while the sample is smaller */
    int channel;            /* channel index in the defs, -1: none */
    char channel_name[64];
} jd_alert_spec;

/* Hysteresis margin: an alert that fired recovers only once the figure is back past the
 * threshold by 10% of the threshold (dropoff_above 0.6 fires above 0.6, recovers below
 * 0.54; conversion_below 0.1 fires below 0.1, recovers above 0.11). */
#define JD_ALERT_MARGIN 0.10

/* A state change of an alert: the engine turns it into an action on the channel. */
typedef struct jd_alert_edge {
    int journey;
    int alert;  /* index among the journey's alerts */
    int firing; /* 1: fired (crossed the threshold), 0: recovered */
    jd_alert_spec spec;
    double value;    /* the figure that crossed */
    uint64_t sample; /* its denominator: people who left the stage, or entered the journey */
} jd_alert_edge;

/* ---------------------------------------------------------------- figures */

typedef struct jd_quantiles {
    uint64_t n;
    double median_ms, p90_ms; /* 0 when n == 0 */
} jd_quantiles;

typedef struct jd_stage_figures {
    uint64_t entered, now, moved_on, timed_out, exited, converted;
    uint64_t left;         /* moved_on + timed_out + exited + converted */
    double dropoff;        /* (timed_out + exited) / left; -1 when left == 0 */
    double conversion;     /* (moved_on + converted) / left; -1 when left == 0 */
    jd_quantiles in_stage; /* time in stage of the visits that ended in the window */
} jd_stage_figures;

typedef struct jd_journey_figures {
    uint64_t entered, active, converted, exited;
    double conversion; /* converted / entered; -1 when entered == 0 */
    jd_quantiles to_convert;
} jd_journey_figures;

/* ---------------------------------------------------------------- API */

/* An empty set of statistics. Free with jd_stats_free. */
jd_stats *jd_stats_new(void);
void jd_stats_free(jd_stats *s);

/* Registers a journey and its stages (in order); returns its index (registration order),
 * or the existing index when a journey of that name is registered with the same stages.
 * Names are copied. */
int jd_stats_journey(jd_stats *s, const char *name, size_t nstages, const char *const *stage_names);
/* Index of a journey by name, or -1. */
int jd_stats_find(const jd_stats *s, const char *name);
size_t jd_stats_njourneys(const jd_stats *s);
/* Sets a journey's alerts (copied, at most JD_MAX_ALERTS; their states start quiet unless
 * an identical spec was already set at the same position). */
void jd_stats_set_alerts(jd_stats *s, int journey, const jd_alert_spec *alerts, size_t n);

/* Transitions, at time t (ms). Stage arguments are stage indexes of that journey.
 * entered: someone entered the journey, at `stage` (journey and stage entered, now+1).
 * moved: from -> to by an event transition (or a hook's ctx:go); ms_in_stage is how long
 *   they were in `from`. timed_out: the same, by a j.after. A timeout that leaves the
 *   journey is jd_stats_exited.
 * exited / converted: left the journey from `stage` (not converted / converted);
 *   ms_to_convert is from journey entry.
 * A stage index out of range (-1: a person pinned to an earlier version of the journey, in
 * a stage this one does not have) is left out: a move counts its other side, a person who
 * leaves from it counts for the journey as a whole only. */
void jd_stats_entered(jd_stats *s, int j, int stage, int64_t t);
void jd_stats_moved(jd_stats *s, int j, int from, int to, int64_t t, int64_t ms_in_stage);
void jd_stats_timed_out(jd_stats *s, int j, int from, int to, int64_t t, int64_t ms_in_stage);
void jd_stats_exited(jd_stats *s, int j, int stage, int64_t t, int64_t ms_in_stage);
void jd_stats_converted(jd_stats *s, int j, int stage, int64_t t, int64_t ms_in_stage, int64_t ms_to_convert);
/* Overrides the "in stage now" gauge (after a reload recounted people by stage). */
void jd_stats_set_now(jd_stats *s, int j, int stage, uint64_t now);

/* Figures of a window as seen at time now. */
void jd_stats_query(const jd_stats *s, int j, jd_stats_window w, int64_t now, jd_journey_figures *jf);
void jd_stats_query_stage(const jd_stats *s, int j, int stage, jd_stats_window w, int64_t now, jd_stage_figures *sf);
/* All-time moves from a stage to a target stage. */
uint64_t jd_stats_moved_to(const jd_stats *s, int j, int from, int to);

/* Evaluates the alerts of journey j (-1: every journey) at time now and writes up to cap
 * state changes to out; returns how many were written. Call after counters changed (and
 * now and then as time passes: figures also change when old buckets leave a window). */
size_t jd_stats_check_alerts(jd_stats *s, int j, int64_t now, jd_alert_edge *out, size_t cap);
/* An alert's state: 1 firing, 0 quiet; value and sample as last evaluated (-1 / 0 before
 * the first evaluation with enough sample). */
int jd_stats_alert_state(const jd_stats *s, int j, int alert, double *value, uint64_t *sample);
/* A one-line human text of an edge ("trial_onboarding/signed_up: drop-off 72.0% above 60%
 * over 24h (64 people)"), NUL-terminated into out. */
size_t jd_alert_edge_text(const jd_stats *s, const jd_alert_edge *e, char *out, size_t cap);

/* The funnel of journey j over a window at time now, as JSON (malloc'd): the stages in
 * order with their counts, conversion from the previous stage, drop-off, time in stage,
 * moves by target, and the alerts' states. NULL when j is out of range. */
char *jd_stats_funnel_json(const jd_stats *s, int journey, const char *window, int64_t now);

/* Copies every journey and stage of src that dst also has (by name) into dst: counters,
 * buckets, histograms, targets, and the states of alerts whose spec is unchanged (for a
 * script reload). */
void jd_stats_carry(jd_stats *dst, const jd_stats *src);

/* Serialises everything (journeys, stages, counters, buckets, histograms, alert states) as
 * one msgpack value appended to out. */
void jd_stats_save(const jd_stats *s, jd_buf *out);
/* Reads bytes from jd_stats_save into dst by journey and stage name (as jd_stats_carry;
 * what dst does not have is ignored). Returns 0, or -1 when the bytes are not stats. */
int jd_stats_load(jd_stats *dst, const void *data, size_t len);
/* Adds bytes from jd_stats_save (another shard's) to dst, by journey and stage name:
 * counters, window buckets and histograms sum. 0, or -1 when the bytes are not stats. */
int jd_stats_add_saved(jd_stats *dst, const void *data, size_t len);

#endif
