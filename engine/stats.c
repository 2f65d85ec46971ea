/* stats: journey analytics kept as events flow (see stats.h for the windows, the
 * histogram and the memory figures). Uses buf, json, event (msgpack helpers), msgpack-c. */
#include "stats.h"

#include <math.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "event.h"
#include "json.h"

#define MIN_SLOTS 60   /* minute buckets: the 1h window */
#define HOUR_SLOTS 168 /* hour buckets: the 24h and 7d windows */
#define NBINS 620      /* histogram bins: 1 ms .. about a year at g = 1.04 */
#define GROWTH 1.04

enum { C_ENTERED, C_MOVED, C_TIMED_OUT, C_EXITED, C_CONVERTED, NC };

/* Histogram counts per bin, sorted by bin: sparse, so a bucket costs only the bins it
 * saw. */
typedef struct qent {
    uint16_t bin;
    uint32_t count;
} qent;

typedef struct qset {
    qent *e;
    uint32_t n, cap;
} qset;

/* One time bucket: its period (minutes or hours since the epoch), counts and histogram.
 * Each bucket has its own histogram: with one sorted set for the whole ring, a new bin
 * in an early slot moved every later slot's entries (2-3% of the in-memory bench). */
typedef struct cell {
    int32_t period;
    uint32_t c[NC];
    qset q;
} cell;

/* The figures of a stage, or of a journey as a whole (then entered/converted/exited are
 * the journey's, now is the number of active people and the histogram is time to
 * convert). */
typedef struct node {
    uint64_t all[NC];
    uint64_t now;
    cell min[MIN_SLOTS];
    cell hour[HOUR_SLOTS];
    qset qall;
    uint64_t *targets; /* per stage of the journey: all-time moves to it */
} node;

typedef struct alert_state {
    jd_alert_spec spec;
    int firing;
    double value;
    uint64_t sample;
} alert_state;

typedef struct sjourney {
    char *name;
    size_t nstages;
    char **stage_names;
    node whole;
    node *stages;
    alert_state alerts[JD_MAX_ALERTS];
    size_t nalerts;
} sjourney;

struct jd_stats {
    sjourney *j;
    size_t n;
};

/* ---------------------------------------------------------------- windows */

static const char *const window_names[JD_NWINDOWS] = {"1h", "24h", "7d", "all"};

int jd_stats_window_parse(const char *s, jd_stats_window *w)
{
    for (int i = 0; s && i < JD_NWINDOWS; i++)
        if (strcmp(s, window_names[i]) == 0) {
            *w = (jd_stats_window)i;
            return 0;
        }
    return -1;
}

const char *jd_stats_window_name(jd_stats_window w)
{
    return (unsigned)w < JD_NWINDOWS ? window_names[w] : "?";
}

static int32_t period_of(int64_t t, int64_t unit)
{
    int64_t p = t / unit - (t % unit < 0); /* floor */
    return p > INT32_MAX ? INT32_MAX : p < INT32_MIN + 1 ? INT32_MIN + 1 : (int32_t)p;
}

/* The ring and the period range [lo, hi] of a window at time now. */
static void window_range(jd_stats_window w, int64_t now, int *hourly, int32_t *lo, int32_t *hi)
{
    *hourly = w != JD_WIN_1H;
    *hi = period_of(now, *hourly ? 3600000 : 60000);
    int span = w == JD_WIN_1H ? MIN_SLOTS : w == JD_WIN_24H ? 24 : HOUR_SLOTS;
    *lo = *hi - (span - 1);
}

/* ---------------------------------------------------------------- histogram */

static int bin_of(int64_t v)
{
    if (v < 1)
        return 0;
    double k = 1 + floor(log((double)v) / log(GROWTH));
    return k >= NBINS - 1 ? NBINS - 1 : (int)k;
}

static double bin_value(int k)
{
    return k == 0 ? 0 : 2 * pow(GROWTH, k) / (1 + GROWTH);
}

/* First entry with bin >= bin. */
static uint32_t qfind(const qset *q, uint16_t bin)
{
    uint32_t lo = 0, hi = q->n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (q->e[mid].bin < bin)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static void qadd(qset *q, uint16_t bin, uint32_t count)
{
    uint32_t i = qfind(q, bin);
    if (i < q->n && q->e[i].bin == bin) {
        q->e[i].count = q->e[i].count > UINT32_MAX - count ? UINT32_MAX : q->e[i].count + count; /* saturates */
        return;
    }
    if (q->n == q->cap) {
        q->cap = q->cap ? q->cap * 2 : 8;
        q->e = jd_xrealloc(q->e, q->cap * sizeof *q->e);
    }
    memmove(&q->e[i + 1], &q->e[i], (q->n - i) * sizeof *q->e);
    q->e[i] = (qent){bin, count};
    q->n++;
}

static void qcopy(qset *dst, const qset *src)
{
    free(dst->e);
    dst->n = dst->cap = src->n;
    dst->e = src->n ? jd_xmalloc(src->n * sizeof *src->e) : NULL;
    if (src->n)
        memcpy(dst->e, src->e, src->n * sizeof *src->e);
}

/* Median and p90 (nearest rank) of dense bin counts. */
static void quantiles(const uint64_t *bins, jd_quantiles *out)
{
    uint64_t n = 0;
    for (int k = 0; k < NBINS; k++)
        n += bins[k];
    out->n = n;
    out->median_ms = out->p90_ms = 0;
    if (!n)
        return;
    uint64_t r50 = (n + 1) / 2, r90 = (n * 9 + 9) / 10, cum = 0;
    int have50 = 0;
    for (int k = 0; k < NBINS; k++) {
        cum += bins[k];
        if (!have50 && cum >= r50) {
            out->median_ms = bin_value(k);
            have50 = 1;
        }
        if (cum >= r90) {
            out->p90_ms = bin_value(k);
            return;
        }
    }
}

/* ---------------------------------------------------------------- nodes */

/* Empties a cell for period p (its histogram keeps its memory). */
static void cell_reset(cell *c, int32_t p)
{
    memset(c->c, 0, sizeof c->c);
    c->period = p;
    c->q.n = 0;
}

/* The cell for period p in a ring, recycled when it holds an older period; NULL when the
 * ring already moved past p (an observation older than the ring reaches). */
static cell *ring_cell(cell *ring, size_t nslots, int32_t p)
{
    int64_t m = (int64_t)p % (int64_t)nslots;
    cell *c = &ring[m < 0 ? m + (int64_t)nslots : m];
    if (c->period == p)
        return c;
    if (c->period > p)
        return NULL;
    cell_reset(c, p);
    return c;
}

/* Counts one transition of kind k at t; a duration >= 0 goes into the histogram. */
static void observe(node *nd, int k, int64_t t, int64_t duration)
{
    nd->all[k]++;
    int bin = duration >= 0 ? bin_of(duration) : -1;
    if (bin >= 0)
        qadd(&nd->qall, (uint16_t)bin, 1);
    cell *c = ring_cell(nd->min, MIN_SLOTS, period_of(t, 60000));
    if (c) {
        c->c[k]++;
        if (bin >= 0)
            qadd(&c->q, (uint16_t)bin, 1);
    }
    c = ring_cell(nd->hour, HOUR_SLOTS, period_of(t, 3600000));
    if (c) {
        c->c[k]++;
        if (bin >= 0)
            qadd(&c->q, (uint16_t)bin, 1);
    }
}

/* Counts of a window; bins (NBINS, may be NULL) gets the histogram. */
static void node_window(const node *nd, jd_stats_window w, int64_t now, uint64_t out[NC], uint64_t *bins)
{
    if (w == JD_WIN_ALL) {
        memcpy(out, nd->all, sizeof nd->all);
        if (bins)
            for (uint32_t i = 0; i < nd->qall.n; i++)
                bins[nd->qall.e[i].bin] += nd->qall.e[i].count;
        return;
    }
    int hourly;
    int32_t lo, hi;
    window_range(w, now, &hourly, &lo, &hi);
    const cell *ring = hourly ? nd->hour : nd->min;
    size_t nslots = hourly ? HOUR_SLOTS : MIN_SLOTS;
    memset(out, 0, NC * sizeof *out);
    /* only the window's periods: 24 cells for 24h, not the whole ring (alerts ask this
     * after every transition) */
    for (int64_t p = lo; p <= hi; p++) {
        int64_t m = p % (int64_t)nslots;
        const cell *c = &ring[m < 0 ? m + (int64_t)nslots : m];
        if (c->period != p)
            continue;
        for (int k = 0; k < NC; k++)
            out[k] += c->c[k];
        for (uint32_t i = 0; bins && i < c->q.n; i++)
            bins[c->q.e[i].bin] += c->q.e[i].count;
    }
}

static void node_free(node *nd)
{
    for (size_t i = 0; i < MIN_SLOTS; i++)
        free(nd->min[i].q.e);
    for (size_t i = 0; i < HOUR_SLOTS; i++)
        free(nd->hour[i].q.e);
    free(nd->qall.e);
    free(nd->targets);
}

/* ---------------------------------------------------------------- journeys */

jd_stats *jd_stats_new(void)
{
    return jd_xcalloc(1, sizeof(jd_stats));
}

void jd_stats_free(jd_stats *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++) {
        sjourney *j = &s->j[i];
        for (size_t k = 0; k < j->nstages; k++) {
            node_free(&j->stages[k]);
            free(j->stage_names[k]);
        }
        node_free(&j->whole);
        free(j->stages);
        free(j->stage_names);
        free(j->name);
    }
    free(s->j);
    free(s);
}

int jd_stats_find(const jd_stats *s, const char *name)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->j[i].name, name) == 0)
            return (int)i;
    return -1;
}

size_t jd_stats_njourneys(const jd_stats *s)
{
    return s->n;
}

static int stage_index(const sjourney *j, const char *name)
{
    for (size_t k = 0; k < j->nstages; k++)
        if (strcmp(j->stage_names[k], name) == 0)
            return (int)k;
    return -1;
}

int jd_stats_journey(jd_stats *s, const char *name, size_t nstages, const char *const *stage_names)
{
    int have = jd_stats_find(s, name);
    if (have >= 0) {
        const sjourney *j = &s->j[have];
        int same = j->nstages == nstages;
        for (size_t k = 0; same && k < nstages; k++)
            same = strcmp(j->stage_names[k], stage_names[k]) == 0;
        if (same)
            return have;
    }
    s->j = jd_xrealloc(s->j, (s->n + 1) * sizeof *s->j);
    sjourney *j = &s->j[s->n];
    memset(j, 0, sizeof *j);
    j->name = jd_strndup(name, strlen(name));
    j->nstages = nstages;
    j->stages = jd_xcalloc(nstages ? nstages : 1, sizeof *j->stages);
    j->stage_names = jd_xcalloc(nstages ? nstages : 1, sizeof *j->stage_names);
    for (size_t k = 0; k < nstages; k++) {
        j->stage_names[k] = jd_strndup(stage_names[k], strlen(stage_names[k]));
        j->stages[k].targets = jd_xcalloc(nstages, sizeof *j->stages[k].targets);
    }
    return (int)s->n++;
}

static int spec_equal(const sjourney *a, const jd_alert_spec *x, const sjourney *b, const jd_alert_spec *y)
{
    if (x->kind != y->kind || x->threshold != y->threshold || x->window != y->window ||
        x->min_sample != y->min_sample || strcmp(x->channel_name, y->channel_name) != 0)
        return 0;
    if (x->stage < 0 || y->stage < 0)
        return x->stage == y->stage;
    return strcmp(a->stage_names[x->stage], b->stage_names[y->stage]) == 0;
}

void jd_stats_set_alerts(jd_stats *s, int journey, const jd_alert_spec *alerts, size_t n)
{
    if (journey < 0 || (size_t)journey >= s->n)
        return;
    sjourney *j = &s->j[journey];
    if (n > JD_MAX_ALERTS)
        n = JD_MAX_ALERTS;
    for (size_t i = 0; i < n; i++) {
        alert_state *a = &j->alerts[i];
        int keep = i < j->nalerts && spec_equal(j, &a->spec, j, &alerts[i]);
        a->spec = alerts[i];
        if (a->spec.stage >= (int)j->nstages)
            a->spec.stage = -1;
        if (!keep) {
            a->firing = 0;
            a->value = -1;
            a->sample = 0;
        }
    }
    j->nalerts = n;
}

static sjourney *journey_at(const jd_stats *s, int j)
{
    return j >= 0 && (size_t)j < s->n ? &s->j[j] : NULL;
}

static node *stage_at(const jd_stats *s, int j, int stage)
{
    sjourney *sj = journey_at(s, j);
    return sj && stage >= 0 && (size_t)stage < sj->nstages ? &sj->stages[stage] : NULL;
}

/* ---------------------------------------------------------------- transitions */

static void enter_stage(node *nd, int64_t t)
{
    observe(nd, C_ENTERED, t, -1);
    nd->now++;
}

static void leave_stage(node *nd, int k, int64_t t, int64_t ms_in_stage)
{
    observe(nd, k, t, ms_in_stage < 0 ? 0 : ms_in_stage);
    if (nd->now)
        nd->now--;
}

void jd_stats_entered(jd_stats *s, int j, int stage, int64_t t)
{
    node *nd = stage_at(s, j, stage);
    if (!nd)
        return;
    node *w = &s->j[j].whole;
    observe(w, C_ENTERED, t, -1);
    w->now++;
    enter_stage(nd, t);
}

/* A side that is not a stage of the journey (a person pinned to an earlier version, in or
 * into a stage the current one does not have) is not counted; the other side is. */
static void move(jd_stats *s, int j, int from, int to, int64_t t, int64_t ms, int k)
{
    node *a = stage_at(s, j, from), *b = stage_at(s, j, to);
    if (a)
        leave_stage(a, k, t, ms);
    if (a && b)
        a->targets[to]++;
    if (b)
        enter_stage(b, t);
}

void jd_stats_moved(jd_stats *s, int j, int from, int to, int64_t t, int64_t ms_in_stage)
{
    move(s, j, from, to, t, ms_in_stage, C_MOVED);
}

void jd_stats_timed_out(jd_stats *s, int j, int from, int to, int64_t t, int64_t ms_in_stage)
{
    move(s, j, from, to, t, ms_in_stage, C_TIMED_OUT);
}

void jd_stats_exited(jd_stats *s, int j, int stage, int64_t t, int64_t ms_in_stage)
{
    node *nd = stage_at(s, j, stage);
    if (!journey_at(s, j))
        return;
    if (nd)
        leave_stage(nd, C_EXITED, t, ms_in_stage);
    node *w = &s->j[j].whole;
    observe(w, C_EXITED, t, -1);
    if (w->now)
        w->now--;
}

void jd_stats_converted(jd_stats *s, int j, int stage, int64_t t, int64_t ms_in_stage, int64_t ms_to_convert)
{
    node *nd = stage_at(s, j, stage);
    if (!journey_at(s, j))
        return;
    if (nd)
        leave_stage(nd, C_CONVERTED, t, ms_in_stage);
    node *w = &s->j[j].whole;
    observe(w, C_CONVERTED, t, ms_to_convert < 0 ? 0 : ms_to_convert);
    if (w->now)
        w->now--;
}

void jd_stats_set_now(jd_stats *s, int j, int stage, uint64_t now)
{
    node *nd = stage_at(s, j, stage);
    if (!nd)
        return;
    sjourney *sj = &s->j[j];
    sj->whole.now = sj->whole.now - nd->now + now;
    nd->now = now;
}

/* ---------------------------------------------------------------- queries */

static double ratio(uint64_t a, uint64_t b)
{
    return b ? (double)a / (double)b : -1;
}

static void stage_figures(const node *nd, jd_stats_window w, int64_t now, jd_stage_figures *sf, int with_quantiles)
{
    uint64_t c[NC];
    uint64_t *bins = with_quantiles ? jd_xcalloc(NBINS, sizeof *bins) : NULL;
    node_window(nd, w, now, c, bins);
    memset(sf, 0, sizeof *sf);
    sf->entered = c[C_ENTERED];
    sf->now = nd->now;
    sf->moved_on = c[C_MOVED];
    sf->timed_out = c[C_TIMED_OUT];
    sf->exited = c[C_EXITED];
    sf->converted = c[C_CONVERTED];
    sf->left = sf->moved_on + sf->timed_out + sf->exited + sf->converted;
    sf->dropoff = ratio(sf->timed_out + sf->exited, sf->left);
    sf->conversion = ratio(sf->moved_on + sf->converted, sf->left);
    if (bins)
        quantiles(bins, &sf->in_stage);
    free(bins);
}

static void journey_figures(const sjourney *sj, jd_stats_window w, int64_t now, jd_journey_figures *jf,
                            int with_quantiles)
{
    uint64_t c[NC];
    uint64_t *bins = with_quantiles ? jd_xcalloc(NBINS, sizeof *bins) : NULL;
    node_window(&sj->whole, w, now, c, bins);
    memset(jf, 0, sizeof *jf);
    jf->entered = c[C_ENTERED];
    jf->active = sj->whole.now;
    jf->converted = c[C_CONVERTED];
    jf->exited = c[C_EXITED];
    jf->conversion = ratio(jf->converted, jf->entered);
    if (bins)
        quantiles(bins, &jf->to_convert);
    free(bins);
}

void jd_stats_query(const jd_stats *s, int j, jd_stats_window w, int64_t now, jd_journey_figures *jf)
{
    const sjourney *sj = journey_at(s, j);
    if (!sj) {
        memset(jf, 0, sizeof *jf);
        jf->conversion = -1;
        return;
    }
    journey_figures(sj, w, now, jf, 1);
}

void jd_stats_query_stage(const jd_stats *s, int j, int stage, jd_stats_window w, int64_t now, jd_stage_figures *sf)
{
    const node *nd = stage_at(s, j, stage);
    if (!nd) {
        memset(sf, 0, sizeof *sf);
        sf->dropoff = sf->conversion = -1;
        return;
    }
    stage_figures(nd, w, now, sf, 1);
}

uint64_t jd_stats_moved_to(const jd_stats *s, int j, int from, int to)
{
    const node *nd = stage_at(s, j, from);
    return nd && to >= 0 && (size_t)to < s->j[j].nstages ? nd->targets[to] : 0;
}

/* ---------------------------------------------------------------- alerts */

/* The figure an alert watches and its sample. */
static void alert_figure(const sjourney *sj, const jd_alert_spec *sp, int64_t now, double *value, uint64_t *sample)
{
    if (sp->stage >= 0) {
        jd_stage_figures sf;
        stage_figures(&sj->stages[sp->stage], sp->window, now, &sf, 0);
        *value = sp->kind == JD_ALERT_DROPOFF_ABOVE ? sf.dropoff : sf.conversion;
        *sample = sf.left;
    } else {
        jd_journey_figures jf;
        journey_figures(sj, sp->window, now, &jf, 0);
        *value = sp->kind == JD_ALERT_DROPOFF_ABOVE ? (jf.conversion < 0 ? -1 : 1 - jf.conversion) : jf.conversion;
        *sample = jf.entered;
    }
}

size_t jd_stats_check_alerts(jd_stats *s, int j, int64_t now, jd_alert_edge *out, size_t cap)
{
    size_t n = 0;
    for (size_t ji = j < 0 ? 0 : (size_t)j; ji < s->n && (j < 0 || ji == (size_t)j); ji++) {
        sjourney *sj = &s->j[ji];
        for (size_t i = 0; i < sj->nalerts; i++) {
            alert_state *a = &sj->alerts[i];
            double v;
            uint64_t sample;
            alert_figure(sj, &a->spec, now, &v, &sample);
            a->value = v;
            a->sample = sample;
            if (sample == 0 || sample < a->spec.min_sample || v < 0)
                continue; /* too few people to say anything: the state stays */
            double th = a->spec.threshold, margin = th * JD_ALERT_MARGIN;
            int above = a->spec.kind == JD_ALERT_DROPOFF_ABOVE;
            int edge = 0;
            if (!a->firing && (above ? v > th : v < th))
                edge = 1;
            else if (a->firing && (above ? v < th - margin : v > th + margin))
                edge = -1;
            if (!edge)
                continue;
            a->firing = edge > 0;
            if (n < cap)
                out[n++] = (jd_alert_edge){.journey = (int)ji,
                                           .alert = (int)i,
                                           .firing = a->firing,
                                           .spec = a->spec,
                                           .value = v,
                                           .sample = sample};
        }
    }
    return n;
}

int jd_stats_alert_state(const jd_stats *s, int j, int alert, double *value, uint64_t *sample)
{
    const sjourney *sj = journey_at(s, j);
    if (!sj || alert < 0 || (size_t)alert >= sj->nalerts)
        return 0;
    if (value)
        *value = sj->alerts[alert].value;
    if (sample)
        *sample = sj->alerts[alert].sample;
    return sj->alerts[alert].firing;
}

size_t jd_alert_edge_text(const jd_stats *s, const jd_alert_edge *e, char *out, size_t cap)
{
    const sjourney *sj = journey_at(s, e->journey);
    const jd_alert_spec *sp = &e->spec;
    const char *stage = sj && sp->stage >= 0 ? sj->stage_names[sp->stage] : NULL;
    int above = sp->kind == JD_ALERT_DROPOFF_ABOVE;
    int n =
        snprintf(out, cap, "%s%s%s: %s %.1f%% %s %.0f%% over %s (%llu people)%s", sj ? sj->name : "?", stage ? "/" : "",
                 stage ? stage : "", above ? "drop-off" : "conversion", e->value * 100,
                 e->firing ? (above ? "above" : "below") : (above ? "back below" : "back above"), sp->threshold * 100,
                 jd_stats_window_name(sp->window), (unsigned long long)e->sample, e->firing ? "" : " (recovered)");
    return n < 0 ? 0 : (size_t)n >= cap ? cap - 1 : (size_t)n;
}

/* ---------------------------------------------------------------- funnel JSON */

static void pk_ratio(msgpack_packer *pk, double r)
{
    if (r < 0)
        msgpack_pack_nil(pk);
    else
        msgpack_pack_double(pk, r);
}

static void pk_quantiles(msgpack_packer *pk, const jd_quantiles *q)
{
    msgpack_pack_map(pk, 3);
    jd_mp_pack_cstr(pk, "n");
    msgpack_pack_uint64(pk, q->n);
    jd_mp_pack_cstr(pk, "median");
    if (q->n)
        msgpack_pack_double(pk, round(q->median_ms));
    else
        msgpack_pack_nil(pk);
    jd_mp_pack_cstr(pk, "p90");
    if (q->n)
        msgpack_pack_double(pk, round(q->p90_ms));
    else
        msgpack_pack_nil(pk);
}

static void pk_u64(msgpack_packer *pk, const char *k, uint64_t v)
{
    jd_mp_pack_cstr(pk, k);
    msgpack_pack_uint64(pk, v);
}

char *jd_stats_funnel_json(const jd_stats *s, int journey, const char *window, int64_t now)
{
    const sjourney *sj = journey_at(s, journey);
    jd_stats_window w;
    if (!sj || jd_stats_window_parse(window ? window : "all", &w))
        return NULL;
    jd_buf mp;
    jd_buf_init(&mp);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &mp, jd_buf_msgpack_write);
    jd_journey_figures jf;
    journey_figures(sj, w, now, &jf, 1);
    char t[40];
    msgpack_pack_map(&pk, 12);
    jd_mp_pack_cstr(&pk, "journey");
    jd_mp_pack_cstr(&pk, sj->name);
    jd_mp_pack_cstr(&pk, "window");
    jd_mp_pack_cstr(&pk, jd_stats_window_name(w));
    jd_mp_pack_cstr(&pk, "now");
    jd_mp_pack_str(&pk, t, jd_time_format(now, t));
    jd_mp_pack_cstr(&pk, "source");
    jd_mp_pack_cstr(&pk, "stats");
    pk_u64(&pk, "entered", jf.entered);
    pk_u64(&pk, "active", jf.active);
    pk_u64(&pk, "converted", jf.converted);
    pk_u64(&pk, "exited", jf.exited);
    jd_mp_pack_cstr(&pk, "conversion");
    pk_ratio(&pk, jf.conversion);
    jd_mp_pack_cstr(&pk, "time_to_convert_ms");
    pk_quantiles(&pk, &jf.to_convert);
    jd_mp_pack_cstr(&pk, "stages");
    msgpack_pack_array(&pk, sj->nstages);
    uint64_t prev = 0;
    for (size_t k = 0; k < sj->nstages; k++) {
        jd_stage_figures sf;
        stage_figures(&sj->stages[k], w, now, &sf, 1);
        msgpack_pack_map(&pk, 14);
        jd_mp_pack_cstr(&pk, "name");
        jd_mp_pack_cstr(&pk, sj->stage_names[k]);
        pk_u64(&pk, "entered", sf.entered);
        pk_u64(&pk, "now", sf.now);
        pk_u64(&pk, "moved_on", sf.moved_on);
        pk_u64(&pk, "timed_out", sf.timed_out);
        pk_u64(&pk, "exited", sf.exited);
        pk_u64(&pk, "converted", sf.converted);
        pk_u64(&pk, "left", sf.left);
        jd_mp_pack_cstr(&pk, "conversion_from_previous");
        pk_ratio(&pk, k ? ratio(sf.entered, prev) : -1);
        jd_mp_pack_cstr(&pk, "dropoff");
        pk_ratio(&pk, sf.dropoff);
        jd_mp_pack_cstr(&pk, "conversion");
        pk_ratio(&pk, sf.conversion);
        jd_mp_pack_cstr(&pk, "time_in_stage_ms");
        pk_quantiles(&pk, &sf.in_stage);
        /* moves by target are kept for all time only */
        size_t nt = 0;
        for (size_t to = 0; to < sj->nstages; to++)
            nt += sj->stages[k].targets[to] != 0;
        jd_mp_pack_cstr(&pk, "moved_to_all_time");
        msgpack_pack_map(&pk, nt);
        for (size_t to = 0; to < sj->nstages; to++)
            if (sj->stages[k].targets[to]) {
                jd_mp_pack_cstr(&pk, sj->stage_names[to]);
                msgpack_pack_uint64(&pk, sj->stages[k].targets[to]);
            }
        jd_mp_pack_cstr(&pk, "alert");
        int firing = 0, has = 0;
        for (size_t i = 0; i < sj->nalerts; i++)
            if (sj->alerts[i].spec.stage == (int)k) {
                has = 1;
                firing |= sj->alerts[i].firing;
            }
        jd_mp_pack_cstr(&pk, !has ? "none" : firing ? "firing" : "ok");
        prev = sf.entered;
    }
    jd_mp_pack_cstr(&pk, "alerts");
    msgpack_pack_array(&pk, sj->nalerts);
    for (size_t i = 0; i < sj->nalerts; i++) {
        const alert_state *a = &sj->alerts[i];
        msgpack_pack_map(&pk, 9);
        jd_mp_pack_cstr(&pk, "kind");
        jd_mp_pack_cstr(&pk, a->spec.kind == JD_ALERT_DROPOFF_ABOVE ? "dropoff_above" : "conversion_below");
        jd_mp_pack_cstr(&pk, "stage");
        if (a->spec.stage >= 0)
            jd_mp_pack_cstr(&pk, sj->stage_names[a->spec.stage]);
        else
            msgpack_pack_nil(&pk);
        jd_mp_pack_cstr(&pk, "threshold");
        msgpack_pack_double(&pk, a->spec.threshold);
        jd_mp_pack_cstr(&pk, "window");
        jd_mp_pack_cstr(&pk, jd_stats_window_name(a->spec.window));
        pk_u64(&pk, "min_sample", a->spec.min_sample);
        jd_mp_pack_cstr(&pk, "channel");
        jd_mp_pack_cstr(&pk, a->spec.channel_name);
        jd_mp_pack_cstr(&pk, "state");
        jd_mp_pack_cstr(&pk, a->firing ? "firing" : "ok");
        jd_mp_pack_cstr(&pk, "value");
        pk_ratio(&pk, a->value);
        pk_u64(&pk, "sample", a->sample);
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

/* ---------------------------------------------------------------- carry-over */

static void ring_copy(cell *dst, const cell *src, size_t nslots)
{
    for (size_t i = 0; i < nslots; i++) {
        cell_reset(&dst[i], src[i].period);
        memcpy(dst[i].c, src[i].c, sizeof dst[i].c);
        qcopy(&dst[i].q, &src[i].q);
    }
}

static void node_copy(node *dst, const sjourney *dj, const node *src, const sjourney *sjr)
{
    memcpy(dst->all, src->all, sizeof dst->all);
    dst->now = src->now;
    ring_copy(dst->min, src->min, MIN_SLOTS);
    ring_copy(dst->hour, src->hour, HOUR_SLOTS);
    qcopy(&dst->qall, &src->qall);
    if (dst->targets && src->targets) {
        memset(dst->targets, 0, dj->nstages * sizeof *dst->targets);
        for (size_t k = 0; k < sjr->nstages; k++) {
            int to = stage_index(dj, sjr->stage_names[k]);
            if (to >= 0)
                dst->targets[to] = src->targets[k];
        }
    }
}

void jd_stats_carry(jd_stats *dst, const jd_stats *src)
{
    for (size_t i = 0; i < dst->n; i++) {
        sjourney *dj = &dst->j[i];
        int si = jd_stats_find(src, dj->name);
        if (si < 0)
            continue;
        const sjourney *sjr = &src->j[si];
        node_copy(&dj->whole, dj, &sjr->whole, sjr);
        uint64_t active = 0;
        for (size_t k = 0; k < dj->nstages; k++) {
            int sk = stage_index(sjr, dj->stage_names[k]);
            if (sk >= 0) {
                node_copy(&dj->stages[k], dj, &sjr->stages[sk], sjr);
                active += dj->stages[k].now;
            }
        }
        dj->whole.now = active; /* people of removed stages are no longer active here */
        for (size_t a = 0; a < dj->nalerts; a++)
            for (size_t b = 0; b < sjr->nalerts; b++)
                if (spec_equal(dj, &dj->alerts[a].spec, sjr, &sjr->alerts[b].spec)) {
                    dj->alerts[a].firing = sjr->alerts[b].firing;
                    dj->alerts[a].value = sjr->alerts[b].value;
                    dj->alerts[a].sample = sjr->alerts[b].sample;
                    break;
                }
    }
}

/* ---------------------------------------------------------------- save / load */

/* Format (msgpack): ["jd_stats", 1, [journey...]]
 *   journey: [name, [stage names], whole node, [stage nodes], [alert...]]
 *   node:    [[entered, moved_on, timed_out, exited, converted], now, [target counts],
 *             [minute cell...], [hour cell...], [bin, count, ...] (all time)]
 *   cell:    [slot, period, [5 counts], [bin, count, ...]] (only cells with counts)
 *   alert:   [kind, stage name or nil, threshold, window, min_sample, channel, firing,
 *             value, sample] */
static void save_q(msgpack_packer *pk, const qset *q)
{
    msgpack_pack_array(pk, q->n * 2);
    for (uint32_t i = 0; i < q->n; i++) {
        msgpack_pack_uint16(pk, q->e[i].bin);
        msgpack_pack_uint32(pk, q->e[i].count);
    }
}

static void save_ring(msgpack_packer *pk, const cell *ring, size_t nslots)
{
    size_t n = 0;
    for (size_t i = 0; i < nslots; i++) {
        int used = 0;
        for (int k = 0; k < NC; k++)
            used |= ring[i].c[k] != 0;
        n += used;
    }
    msgpack_pack_array(pk, n);
    for (size_t i = 0; i < nslots; i++) {
        int used = 0;
        for (int k = 0; k < NC; k++)
            used |= ring[i].c[k] != 0;
        if (!used)
            continue;
        msgpack_pack_array(pk, 4);
        msgpack_pack_uint32(pk, (uint32_t)i);
        msgpack_pack_int32(pk, ring[i].period);
        msgpack_pack_array(pk, NC);
        for (int k = 0; k < NC; k++)
            msgpack_pack_uint32(pk, ring[i].c[k]);
        save_q(pk, &ring[i].q);
    }
}

static void save_node(msgpack_packer *pk, const node *nd, size_t nstages)
{
    msgpack_pack_array(pk, 6);
    msgpack_pack_array(pk, NC);
    for (int k = 0; k < NC; k++)
        msgpack_pack_uint64(pk, nd->all[k]);
    msgpack_pack_uint64(pk, nd->now);
    size_t nt = nd->targets ? nstages : 0;
    msgpack_pack_array(pk, nt);
    for (size_t k = 0; k < nt; k++)
        msgpack_pack_uint64(pk, nd->targets[k]);
    save_ring(pk, nd->min, MIN_SLOTS);
    save_ring(pk, nd->hour, HOUR_SLOTS);
    save_q(pk, &nd->qall);
}

void jd_stats_save(const jd_stats *s, jd_buf *out)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, jd_buf_msgpack_write);
    msgpack_pack_array(&pk, 3);
    jd_mp_pack_cstr(&pk, "jd_stats");
    msgpack_pack_uint32(&pk, 1);
    msgpack_pack_array(&pk, s->n);
    for (size_t i = 0; i < s->n; i++) {
        const sjourney *j = &s->j[i];
        msgpack_pack_array(&pk, 5);
        jd_mp_pack_cstr(&pk, j->name);
        msgpack_pack_array(&pk, j->nstages);
        for (size_t k = 0; k < j->nstages; k++)
            jd_mp_pack_cstr(&pk, j->stage_names[k]);
        save_node(&pk, &j->whole, j->nstages);
        msgpack_pack_array(&pk, j->nstages);
        for (size_t k = 0; k < j->nstages; k++)
            save_node(&pk, &j->stages[k], j->nstages);
        msgpack_pack_array(&pk, j->nalerts);
        for (size_t a = 0; a < j->nalerts; a++) {
            const alert_state *as = &j->alerts[a];
            msgpack_pack_array(&pk, 9);
            msgpack_pack_int(&pk, (int)as->spec.kind);
            if (as->spec.stage >= 0)
                jd_mp_pack_cstr(&pk, j->stage_names[as->spec.stage]);
            else
                msgpack_pack_nil(&pk);
            msgpack_pack_double(&pk, as->spec.threshold);
            msgpack_pack_int(&pk, (int)as->spec.window);
            msgpack_pack_uint32(&pk, as->spec.min_sample);
            jd_mp_pack_cstr(&pk, as->spec.channel_name);
            msgpack_pack_int(&pk, as->firing);
            msgpack_pack_double(&pk, as->value);
            msgpack_pack_uint64(&pk, as->sample);
        }
    }
}

static int is_arr(const msgpack_object *o, uint32_t n)
{
    return o->type == MSGPACK_OBJECT_ARRAY && (n == UINT32_MAX || o->via.array.size == n);
}

static int get_u64(const msgpack_object *o, uint64_t *v)
{
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return -1;
    *v = o->via.u64;
    return 0;
}

static int get_i64(const msgpack_object *o, int64_t *v)
{
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= INT64_MAX)
        *v = (int64_t)o->via.u64;
    else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        *v = o->via.i64;
    else
        return -1;
    return 0;
}

static int get_f64(const msgpack_object *o, double *v)
{
    if (o->type == MSGPACK_OBJECT_FLOAT64 || o->type == MSGPACK_OBJECT_FLOAT32)
        *v = o->via.f64;
    else if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        *v = (double)o->via.u64;
    else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        *v = (double)o->via.i64;
    else
        return -1;
    return 0;
}

/* A string object as a malloc'd C string, or NULL. */
static char *get_str(const msgpack_object *o)
{
    return o->type == MSGPACK_OBJECT_STR ? jd_strndup(o->via.str.ptr, o->via.str.size) : NULL;
}

static int load_q(qset *q, const msgpack_object *o)
{
    if (!is_arr(o, UINT32_MAX) || o->via.array.size % 2)
        return -1;
    for (uint32_t i = 0; i < o->via.array.size; i += 2) {
        uint64_t bin, count;
        if (get_u64(&o->via.array.ptr[i], &bin) || get_u64(&o->via.array.ptr[i + 1], &count) || bin >= NBINS ||
            count > UINT32_MAX)
            return -1;
        qadd(q, (uint16_t)bin, (uint32_t)count);
    }
    return 0;
}

static int load_ring(cell *ring, size_t nslots, const msgpack_object *o)
{
    if (!is_arr(o, UINT32_MAX))
        return -1;
    for (uint32_t i = 0; i < o->via.array.size; i++) {
        const msgpack_object *c = &o->via.array.ptr[i];
        uint64_t slot, v;
        int64_t period;
        if (!is_arr(c, 4) || get_u64(&c->via.array.ptr[0], &slot) || slot >= nslots ||
            get_i64(&c->via.array.ptr[1], &period) || period < INT32_MIN || period > INT32_MAX ||
            !is_arr(&c->via.array.ptr[2], NC))
            return -1;
        ring[slot].period = (int32_t)period;
        for (int k = 0; k < NC; k++) {
            if (get_u64(&c->via.array.ptr[2].via.array.ptr[k], &v) || v > UINT32_MAX)
                return -1;
            ring[slot].c[k] = (uint32_t)v;
        }
        if (load_q(&ring[slot].q, &c->via.array.ptr[3]))
            return -1;
    }
    return 0;
}

static int load_node(node *nd, size_t nstages, const msgpack_object *o)
{
    if (!is_arr(o, 6) || !is_arr(&o->via.array.ptr[0], NC))
        return -1;
    const msgpack_object *f = o->via.array.ptr;
    for (int k = 0; k < NC; k++)
        if (get_u64(&f[0].via.array.ptr[k], &nd->all[k]))
            return -1;
    if (get_u64(&f[1], &nd->now) || !is_arr(&f[2], UINT32_MAX))
        return -1;
    if (nd->targets) {
        if (f[2].via.array.size != nstages)
            return -1;
        for (size_t k = 0; k < nstages; k++)
            if (get_u64(&f[2].via.array.ptr[k], &nd->targets[k]))
                return -1;
    }
    if (load_ring(nd->min, MIN_SLOTS, &f[3]) || load_ring(nd->hour, HOUR_SLOTS, &f[4]) || load_q(&nd->qall, &f[5]))
        return -1;
    return 0;
}

static int load_journey(jd_stats *tmp, const msgpack_object *o)
{
    if (!is_arr(o, 5) || o->via.array.ptr[0].type != MSGPACK_OBJECT_STR || !is_arr(&o->via.array.ptr[1], UINT32_MAX))
        return -1;
    const msgpack_object *f = o->via.array.ptr;
    size_t ns = f[1].via.array.size;
    char *name = get_str(&f[0]);
    char **names = jd_xcalloc(ns ? ns : 1, sizeof *names);
    int rc = -1, ji = -1;
    for (size_t k = 0; k < ns; k++)
        if (!(names[k] = get_str(&f[1].via.array.ptr[k])))
            goto done;
    if (jd_stats_find(tmp, name) >= 0)
        goto done;
    ji = jd_stats_journey(tmp, name, ns, (const char *const *)names);
    sjourney *j = &tmp->j[ji];
    if (load_node(&j->whole, ns, &f[2]) || !is_arr(&f[3], (uint32_t)ns) || !is_arr(&f[4], UINT32_MAX) ||
        f[4].via.array.size > JD_MAX_ALERTS)
        goto done;
    for (size_t k = 0; k < ns; k++)
        if (load_node(&j->stages[k], ns, &f[3].via.array.ptr[k]))
            goto done;
    jd_alert_spec specs[JD_MAX_ALERTS];
    alert_state st[JD_MAX_ALERTS];
    size_t na = f[4].via.array.size;
    for (size_t a = 0; a < na; a++) {
        const msgpack_object *x = &f[4].via.array.ptr[a];
        int64_t kind, window, firing;
        uint64_t min_sample, sample;
        double threshold, value;
        if (!is_arr(x, 9))
            goto done;
        const msgpack_object *y = x->via.array.ptr;
        memset(&specs[a], 0, sizeof specs[a]);
        specs[a].stage = -1;
        specs[a].channel = -1;
        if (get_i64(&y[0], &kind) || kind < 0 || kind > JD_ALERT_CONVERSION_BELOW || get_f64(&y[2], &threshold) ||
            get_i64(&y[3], &window) || window < 0 || window >= JD_WIN_ALL || get_u64(&y[4], &min_sample) ||
            min_sample > UINT32_MAX || y[5].type != MSGPACK_OBJECT_STR || get_i64(&y[6], &firing) ||
            get_f64(&y[7], &value) || get_u64(&y[8], &sample))
            goto done;
        if (y[1].type == MSGPACK_OBJECT_STR) {
            char *sn = get_str(&y[1]);
            specs[a].stage = stage_index(j, sn);
            free(sn);
            if (specs[a].stage < 0)
                goto done;
        }
        specs[a].kind = (jd_alert_kind)kind;
        specs[a].threshold = threshold;
        specs[a].window = (jd_stats_window)window;
        specs[a].min_sample = (uint32_t)min_sample;
        snprintf(specs[a].channel_name, sizeof specs[a].channel_name, "%.*s", (int)y[5].via.str.size, y[5].via.str.ptr);
        st[a] = (alert_state){.firing = firing != 0, .value = value, .sample = sample};
    }
    jd_stats_set_alerts(tmp, ji, specs, na);
    for (size_t a = 0; a < na; a++) {
        j->alerts[a].firing = st[a].firing;
        j->alerts[a].value = st[a].value;
        j->alerts[a].sample = st[a].sample;
    }
    rc = 0;
done:
    for (size_t k = 0; k < ns; k++)
        free(names[k]);
    free(names);
    free(name);
    return rc;
}

int jd_stats_load(jd_stats *dst, const void *data, size_t len)
{
    msgpack_zone zone;
    msgpack_zone_init(&zone, 4096);
    msgpack_object o;
    size_t off = 0;
    jd_stats *tmp = jd_stats_new();
    int rc = -1;
    if (msgpack_unpack(data, len, &off, &zone, &o) != MSGPACK_UNPACK_SUCCESS || off != len || !is_arr(&o, 3))
        goto done;
    const msgpack_object *f = o.via.array.ptr;
    uint64_t version;
    if (f[0].type != MSGPACK_OBJECT_STR || f[0].via.str.size != 8 || memcmp(f[0].via.str.ptr, "jd_stats", 8) ||
        get_u64(&f[1], &version) || version != 1 || !is_arr(&f[2], UINT32_MAX))
        goto done;
    for (uint32_t i = 0; i < f[2].via.array.size; i++)
        if (load_journey(tmp, &f[2].via.array.ptr[i]))
            goto done;
    jd_stats_carry(dst, tmp);
    rc = 0;
done:
    jd_stats_free(tmp);
    msgpack_zone_destroy(&zone);
    return rc;
}

/* ---------------------------------------------------------------- sums (shards) */

/* Adds a ring of src into dst: a slot of the same period adds up, a newer one replaces
 * an older one (the slots of both rings hold the same periods at the same places). */
static void ring_add(cell *dr, const cell *sr, size_t nslots)
{
    for (size_t i = 0; i < nslots; i++) {
        const cell *s = &sr[i];
        cell *d = &dr[i];
        uint32_t any = 0;
        for (int c = 0; c < NC; c++)
            any |= s->c[c];
        if (!any || s->period < d->period)
            continue;
        if (s->period > d->period)
            cell_reset(d, s->period);
        for (int c = 0; c < NC; c++)
            d->c[c] += s->c[c];
        for (uint32_t k = 0; k < s->q.n; k++)
            qadd(&d->q, s->q.e[k].bin, s->q.e[k].count);
    }
}

static void node_add(node *dst, const sjourney *dj, const node *src, const sjourney *sjr)
{
    for (int c = 0; c < NC; c++)
        dst->all[c] += src->all[c];
    dst->now += src->now;
    ring_add(dst->min, src->min, MIN_SLOTS);
    ring_add(dst->hour, src->hour, HOUR_SLOTS);
    for (uint32_t k = 0; k < src->qall.n; k++)
        qadd(&dst->qall, src->qall.e[k].bin, src->qall.e[k].count);
    if (dst->targets && src->targets)
        for (size_t k = 0; k < sjr->nstages; k++) {
            int to = stage_index(dj, sjr->stage_names[k]);
            if (to >= 0)
                dst->targets[to] += src->targets[k];
        }
}

int jd_stats_add_saved(jd_stats *dst, const void *data, size_t len)
{
    jd_stats *shape = jd_stats_new(); /* dst's journeys, empty: what load reads into */
    for (size_t i = 0; i < dst->n; i++) {
        jd_stats_journey(shape, dst->j[i].name, dst->j[i].nstages, (const char *const *)dst->j[i].stage_names);
        jd_stats_set_alerts(shape, (int)i, NULL, 0);
    }
    int rc = jd_stats_load(shape, data, len);
    if (rc == 0)
        for (size_t i = 0; i < dst->n; i++) {
            sjourney *dj = &dst->j[i];
            const sjourney *sj = &shape->j[i];
            node_add(&dj->whole, dj, &sj->whole, sj);
            for (size_t k = 0; k < dj->nstages; k++)
                node_add(&dj->stages[k], dj, &sj->stages[k], sj);
        }
    jd_stats_free(shape);
    return rc;
}
