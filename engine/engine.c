/* engine: the processor. Every input — an event record or a timer that came due —
 * goes through process(): dedupe by messageId, identity and profile update, one index
 * lookup, C predicates, stage transitions, Lua hooks, effects, actions.
 * Uses every other engine unit. */
#define _POSIX_C_SOURCE 200809L
#include <lauxlib.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"
#include "store.h"

#define MAX_CHAIN 16 /* stage moves caused by one input (enter hooks calling go) */

static const char *const stat_names[JD_NSTATS] = {
    "events",         "duplicates",       "invalid",           "unmatched",      "actions",    "lua_errors",
    "lua_calls",      "timers_scheduled", "timers_fired",      "timers_dropped", "late",       "transitions",
    "timers_skipped", "quarantine_skips", "rules_quarantined", "deferred",       "suppressed",
};

void jd_engine_decide(jd_engine *e, int kind, const jd_journey *j, int stage, const char *fmt, ...)
{
    if (e->opts.decisions_per_user <= 0 || !e->user)
        return;
    jd_decision d = {
        .time = jd_clock_now(&e->clock),
        .kind = (uint8_t)kind,
        .journey = (int16_t)(j ? j->index : -1),
        .stage = (int16_t)stage,
    };
    if (e->running && j) { /* a pinned generation runs: the trace names the current one's */
        d.journey = (int16_t)e->running->cur_journey[j->index];
        d.stage = (int16_t)(d.journey >= 0 && stage >= 0 ? e->running->cur_stage[j->index][stage] : -1);
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d.detail, sizeof d.detail, fmt, ap);
    va_end(ap);
    jd_user_decide(e->user, e->opts.decisions_per_user, &d);
}

void jd_engine_log(jd_engine *e, const char *level, const char *fmt, ...)
{
    char line[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (e->on_log)
        e->on_log(level, line, e->on_log_ud);
    else
        fprintf(stderr, "%s: %s\n", level, line);
}

/* ---------------------------------------------------------------- setup */

static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return jd_strndup(".", 1);
    if (slash == path)
        return jd_strndup("/", 1);
    return jd_strndup(path, (size_t)(slash - path));
}

static void free_user(void *p)
{
    jd_user_free(p);
}

jd_script *jd_engine_script_new(jd_engine *e, const char *dir)
{
    jd_script_limits lim = {
        .call_ns = e->opts.call_limit_ms * 1000000,
        .load_ns = 10LL * 1000000000,
        .memory_bytes = e->opts.memory_limit,
    };
    return jd_script_new(dir, &lim);
}

/* Runs the entry file in sc — config_path, or (NULL) the sources kept in sc — and compiles
 * the registry into *defs with its ctx in *ctx. The engine's script and ctx are as they
 * were after; its config is the new scripts' unless keep_config. On failure sc is freed. */
static int build_scripts(jd_engine *e, jd_script *sc, const char *config_path, int keep_config, jd_defs **defs,
                         int *ctx, jd_error *err)
{
    jd_script *prev_script = e->script;
    int prev_ctx = e->ctx_ref;
    jd_buf config = e->config;
    if (keep_config)
        jd_buf_init(&e->config);
    e->script = sc;
    jd_script_set_owner(sc, e);
    jd_script_preload(sc, "journey.core", jd_journey_core_open);
    jd_script_preload(sc, "journey.crypto", jd_crypto_open);
    e->ctx_ref = jd_ctx_create(e);
    jd_script_error se = {0};
    jd_defs *d = NULL;
    if (config_path ? jd_script_run_file(sc, config_path, &se) : jd_script_run_stored(sc, &se)) {
        jd_script_error_text(&se, err->text, sizeof err->text);
        jd_script_error_clear(&se);
    } else {
        d = jd_compile(e, err->text, sizeof err->text);
    }
    *ctx = e->ctx_ref;
    e->script = prev_script;
    e->ctx_ref = prev_ctx;
    if (keep_config) {
        jd_buf_free(&e->config);
        e->config = config;
    }
    if (!d) {
        jd_script_free(sc);
        return -1;
    }
    jd_script_seal_globals(sc);
    *defs = d;
    return 0;
}

/* Creates a Lua state, runs config_path in it and compiles the registry into defs. On
 * success the engine's script, ctx and defs are the new ones and *old_script / *old_defs
 * hold the previous ones (the caller frees them); on failure nothing changed. */
static int load_scripts(jd_engine *e, const char *config_path, jd_script **old_script, jd_defs **old_defs,
                        jd_error *err)
{
    char *dir = dir_of(config_path);
    jd_script *sc = jd_engine_script_new(e, dir);
    free(dir);
    if (!sc) {
        snprintf(err->text, sizeof err->text, "cannot create a Lua state");
        return -1;
    }
    jd_defs *d;
    int ctx;
    if (build_scripts(e, sc, config_path, 0, &d, &ctx, err))
        return -1;
    *old_script = e->script;
    *old_defs = e->defs;
    e->script = sc;
    e->ctx_ref = ctx;
    e->defs = d;
    msgpack_zone_clear(&e->config_zone);
    size_t off = 0;
    if (!e->config.len ||
        msgpack_unpack(e->config.data, e->config.len, &off, &e->config_zone, &e->config_obj) != MSGPACK_UNPACK_SUCCESS)
        e->config_obj.type = MSGPACK_OBJECT_NIL;
    return 0;
}

static jd_journey_count *new_counts(const jd_defs *d)
{
    jd_journey_count *c = jd_xcalloc(d->njourneys ? d->njourneys : 1, sizeof *c);
    for (size_t i = 0; i < d->njourneys; i++)
        c[i].stages = jd_xcalloc(d->journeys[i].nstages ? d->journeys[i].nstages : 1, sizeof(jd_stage_count));
    return c;
}

static void free_counts(jd_journey_count *c, size_t n)
{
    if (!c)
        return;
    for (size_t i = 0; i < n; i++)
        free(c[i].stages);
    free(c);
}

/* ---------------------------------------------------------------- pinned generations */

static int stage_named(const jd_journey *j, const char *name)
{
    for (size_t s = 0; s < j->nstages; s++)
        if (strcmp(j->stages[s].name, name) == 0)
            return (int)s;
    return -1;
}

static void gen_unmap(jd_gen *g)
{
    for (size_t i = 0; g->cur_stage && i < g->defs->njourneys; i++)
        free(g->cur_stage[i]);
    free(g->cur_stage);
    free(g->cur_journey);
    g->cur_stage = NULL;
    g->cur_journey = NULL;
}

/* g's journeys and stages in the current defs, by name (again after every reload). */
static void gen_map(jd_engine *e, jd_gen *g)
{
    const jd_defs *od = g->defs;
    gen_unmap(g);
    g->cur_journey = jd_xcalloc(od->njourneys ? od->njourneys : 1, sizeof *g->cur_journey);
    g->cur_stage = jd_xcalloc(od->njourneys ? od->njourneys : 1, sizeof *g->cur_stage);
    for (size_t i = 0; i < od->njourneys; i++) {
        const jd_journey *oj = &od->journeys[i];
        const jd_journey *cj = jd_defs_journey(e->defs, oj->name, strlen(oj->name));
        g->cur_journey[i] = cj ? cj->index : -1;
        g->cur_stage[i] = jd_xcalloc(oj->nstages ? oj->nstages : 1, sizeof **g->cur_stage);
        for (size_t k = 0; k < oj->nstages; k++)
            g->cur_stage[i][k] = cj ? stage_named(cj, oj->stages[k].name) : -1;
    }
}

static jd_gen *gen_new(jd_engine *e, jd_script *script, jd_defs *d, int ctx_ref)
{
    jd_gen *g = jd_xcalloc(1, sizeof *g);
    g->script = script;
    g->defs = d;
    g->ctx_ref = ctx_ref;
    g->counts = new_counts(d);
    g->channel_actions = jd_xcalloc(d->nchannels + 1, sizeof *g->channel_actions);
    gen_map(e, g);
    return g;
}

static void gen_free(jd_gen *g)
{
    gen_unmap(g);
    free_counts(g->counts, g->defs->njourneys);
    free(g->channel_actions);
    jd_defs_release_refs(jd_script_L(g->script), g->defs);
    jd_defs_free(g->defs);
    jd_script_free(g->script);
    free(g);
}

/* Swaps g's scripts and per-defs counters with the engine's; twice restores. */
static void gen_swap(jd_engine *e, jd_gen *g)
{
    jd_script *sc = e->script;
    e->script = g->script;
    g->script = sc;
    jd_defs *d = e->defs;
    e->defs = g->defs;
    g->defs = d;
    int ctx = e->ctx_ref;
    e->ctx_ref = g->ctx_ref;
    g->ctx_ref = ctx;
    jd_journey_count *c = e->counts;
    e->counts = g->counts;
    g->counts = c;
    uint64_t *ca = e->channel_actions;
    e->channel_actions = g->channel_actions;
    g->channel_actions = ca;
    e->running = e->running ? NULL : g;
}

/* The analytics are the current version's: while a pinned generation runs, its journey
 * and stages count as the current journey and stages of the same name (-1: none). */
static int an_journey(const jd_engine *e, const jd_journey *j)
{
    return e->running ? e->running->cur_journey[j->index] : j->index;
}

static int an_stage(const jd_engine *e, const jd_journey *j, int stage)
{
    return e->running && stage >= 0 ? e->running->cur_stage[j->index][stage] : stage;
}

/* Adds what a pass over g counted in its scratch counters to the current ones, by
 * journey, stage and channel name (unsigned wrap-around carries the decrements), and
 * zeroes them. */
static void gen_fold(jd_engine *e, jd_gen *g)
{
    for (size_t i = 0; i < g->defs->njourneys; i++) {
        const jd_journey *oj = &g->defs->journeys[i];
        jd_journey_count *sc = &g->counts[i];
        int cj = g->cur_journey[i];
        if (cj >= 0) {
            jd_journey_count *cc = &e->counts[cj];
            cc->entered += sc->entered;
            cc->converted += sc->converted;
            cc->exited += sc->exited;
            cc->active += sc->active;
            for (size_t s = 0; s < oj->nstages; s++) {
                int cs = g->cur_stage[i][s];
                if (cs < 0)
                    continue;
                jd_stage_count *a = &cc->stages[cs], *b = &sc->stages[s];
                a->entered += b->entered;
                a->now += b->now;
                a->moved_on += b->moved_on;
                a->timed_out += b->timed_out;
                a->converted += b->converted;
                a->exited += b->exited;
            }
        }
        sc->entered = sc->converted = sc->exited = sc->active = 0;
        memset(sc->stages, 0, (oj->nstages ? oj->nstages : 1) * sizeof *sc->stages);
    }
    for (size_t c = 0; c < g->defs->nchannels; c++) {
        const jd_channel *ch = jd_defs_channel(e->defs, g->defs->channels[c].name, strlen(g->defs->channels[c].name));
        if (ch)
            e->channel_actions[ch->index] += g->channel_actions[c];
        g->channel_actions[c] = 0;
    }
}

/* Pinned instances that left go back among the person's instances, in the current
 * defs by name (for re-entry rules); one whose journey is gone stays behind, inert. */
static void unpin_left(jd_engine *e, jd_user *u)
{
    for (jd_instance **pp = &u->pinned; *pp;) {
        jd_instance *in = *pp;
        if (!in->pin || in->status == JD_INST_ACTIVE) {
            pp = &in->next;
            continue;
        }
        jd_gen *g = in->pin;
        int cj = g->cur_journey[in->journey];
        g->pinned--;
        u->npinned--;
        in->pin = NULL;
        if (cj < 0) {
            in->journey = -1;
            pp = &in->next;
            continue;
        }
        int cs = g->cur_stage[in->journey][in->stage];
        in->stage = cs >= 0 ? cs : e->defs->journeys[cj].entry_stage;
        in->journey = cj;
        *pp = in->next;
        in->next = u->instances;
        u->instances = in;
        jd_persist_user_changed(e, u);
    }
}

/* Frees the retired generations nobody is pinned to and no timer names; their stored
 * sources leave the store with the next checkpoint. */
static void gens_collect(jd_engine *e)
{
    size_t k = 0;
    for (size_t i = 0; i < e->ngens; i++) {
        jd_gen *g = e->gens[i];
        if (g->pinned || g->timers) {
            e->gens[k++] = g;
            continue;
        }
        if (g->id && e->persist)
            jd_persist_gen_del(e, g->id);
        gen_free(g);
    }
    e->ngens = k;
}

void jd_engine_gens_collect(jd_engine *e)
{
    gens_collect(e);
}

jd_gen *jd_engine_gen_restore(jd_engine *e, jd_script *sc, jd_error *err)
{
    jd_defs *d;
    int ctx;
    if (build_scripts(e, sc, NULL, 1, &d, &ctx, err))
        return NULL;
    jd_script_freeze(sc);
    jd_gen *g = gen_new(e, sc, d, ctx);
    e->gens = jd_xrealloc(e->gens, (e->ngens + 1) * sizeof *e->gens);
    e->gens[e->ngens++] = g;
    return g;
}

/* An active instance of j (by name) and key pinned to an earlier version. */
static int pinned_active(const jd_user *u, const jd_journey *j, const char *key, size_t keylen)
{
    for (const jd_instance *in = u->pinned; in; in = in->next)
        if (in->pin && in->status == JD_INST_ACTIVE && in->keylen == keylen && memcmp(in->key, key, keylen) == 0 &&
            strcmp(in->pin->defs->journeys[in->journey].name, j->name) == 0)
            return 1;
    return 0;
}

/* Analytics for a set of defs: every journey registered in defs order (a stats index is
 * the journey index) with its alerts; nothing counted yet. */
jd_stats *jd_analytics_for(const jd_defs *d)
{
    jd_stats *s = jd_stats_new();
    for (size_t i = 0; i < d->njourneys; i++) {
        const jd_journey *j = &d->journeys[i];
        const char **names = jd_xcalloc(j->nstages ? j->nstages : 1, sizeof *names);
        for (size_t k = 0; k < j->nstages; k++)
            names[k] = j->stages[k].name;
        jd_stats_journey(s, j->name, j->nstages, names);
        free(names);
        jd_stats_set_alerts(s, (int)i, j->alerts, j->nalerts);
    }
    return s;
}

static void new_analytics(jd_engine *e)
{
    const jd_defs *d = e->defs;
    e->analytics = jd_analytics_for(d);
    e->alert_journeys = 0;
    for (size_t i = 0; i < d->njourneys; i++)
        e->alert_journeys += d->journeys[i].nalerts > 0;
    free(e->analytics_dirty);
    e->analytics_dirty = jd_xcalloc(d->njourneys ? d->njourneys : 1, 1);
    e->analytics_changed = 0;
    e->alert_minute = INT64_MIN; /* evaluate every alert at the next check */
}

const jd_stats *jd_engine_stats(const jd_engine *e)
{
    return e->analytics;
}

jd_engine *jd_engine_new(const char *config_path, const jd_options *opts, jd_error *err)
{
    jd_engine *e = jd_xcalloc(1, sizeof *e);
    if (opts)
        e->opts = *opts;
    if (!e->opts.call_limit_ms)
        e->opts.call_limit_ms = 50;
    if (!e->opts.memory_limit)
        e->opts.memory_limit = 256u << 20;
    if (e->opts.live)
        e->opts.virtual_clock = 1;
    if (e->opts.virtual_clock)
        jd_clock_init_virtual(&e->clock, 0);
    else
        jd_clock_init_real(&e->clock);
    jd_map_init(&e->users);
    e->users.borrow_keys = 1; /* each person's id, in their block */
    jd_map_init(&e->aliases);
    jd_map_init(&e->rule_errors);
    jd_map_init(&e->alert_counts);
    e->alert_user = jd_user_new("", 0);
    jd_dedupe_init(&e->dedupe, e->opts.dedupe_ttl_ms);
    jd_timers_init(&e->timers);
    msgpack_zone_init(&e->zone, 4096);
    msgpack_zone_init(&e->in_zone, 4096);
    msgpack_zone_init(&e->config_zone, 1024);
    msgpack_zone_init(&e->action_zone, 2048);
    jd_buf_init(&e->action_rec);
    jd_buf_init(&e->config);
    jd_map_init(&e->config_cache);
    jd_buf_init(&e->rec);
    jd_buf_init(&e->sets_rec);
    jd_buf_init(&e->scratch);
    jd_buf_init(&e->trec);
    jd_buf_init(&e->keybuf);
    e->jr = jd_json_reader_new();
    e->jw = jd_json_writer_new();
    e->ctx_ref = LUA_NOREF;
    jd_script *none_s = NULL;
    jd_defs *none_d = NULL;
    if (load_scripts(e, config_path, &none_s, &none_d, err)) {
        jd_engine_free(e);
        return NULL;
    }
    e->channel_actions = jd_xcalloc(e->defs->nchannels + 1, sizeof *e->channel_actions);
    e->counts = new_counts(e->defs);
    new_analytics(e);
    /* j.config { quarantine = { errors = 20, window = "1m" } }; errors = 0 turns it off */
    e->quarantine_errors = 20;
    e->quarantine_window_ms = 60000;
    const msgpack_object *q = jd_mp_get(&e->config_obj, "quarantine", 10);
    if (q && q->type == MSGPACK_OBJECT_MAP) {
        const msgpack_object *qe = jd_mp_get(q, "errors", 6), *qw = jd_mp_get(q, "window", 6);
        if (qe && qe->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
            e->quarantine_errors = (uint32_t)qe->via.u64;
        if (qw && (qw->type != MSGPACK_OBJECT_STR ||
                   jd_duration_parse(qw->via.str.ptr, qw->via.str.size, &e->quarantine_window_ms))) {
            snprintf(err->text, sizeof err->text, "%s: j.config quarantine.window: a duration like \"1m\"",
                     config_path);
            jd_engine_free(e);
            return NULL;
        }
    }
    const char *ol = jd_engine_config(e, "overdue_limit");
    if (ol && !e->opts.overdue_limit_ms && jd_duration_parse(ol, strlen(ol), &e->opts.overdue_limit_ms)) {
        snprintf(err->text, sizeof err->text, "%s: j.config overdue_limit: bad duration '%s' (like \"6h\" or \"2d\")",
                 config_path, ol);
        jd_engine_free(e);
        return NULL;
    }
    return e;
}

static void schedule_migrated(jd_engine *e, jd_user *u);

/* Carries state from the old defs to the new by name: instances (removed journeys are
 * forgotten, removed stages make an active person leave), counters, timers. A journey
 * whose version changed and that declares `migrate` moves its active people to the
 * stages the table names (or exits them); a person whose stage changed gets the new
 * stage's timers, one whose stage kept its name keeps the pending ones. */
static void carry_over(jd_engine *e, jd_gen *g, jd_journey_count *ocounts, uint64_t *ochan)
{
    const jd_defs *od = g->defs;
    const jd_defs *nd = e->defs;
    int *jmap = jd_xcalloc(od->njourneys ? od->njourneys : 1, sizeof *jmap);
    int **smap = jd_xcalloc(od->njourneys ? od->njourneys : 1, sizeof *smap);
    unsigned char *migrating = jd_xcalloc(od->njourneys ? od->njourneys : 1, 1);
    int64_t now = jd_clock_now(&e->clock);
    int moved = 0;
    jd_map freed; /* instances freed below, by address */
    jd_map_init(&freed);
    for (size_t i = 0; i < od->njourneys; i++) {
        const jd_journey *oj = &od->journeys[i];
        const jd_journey *nj = jd_defs_journey(nd, oj->name, strlen(oj->name));
        jmap[i] = nj ? nj->index : -1;
        smap[i] = jd_xcalloc(oj->nstages ? oj->nstages : 1, sizeof **smap);
        migrating[i] = nj && nj->migrates && nj->version != oj->version;
        for (size_t s = 0; s < oj->nstages; s++) {
            smap[i][s] = -1;
            if (migrating[i]) {
                smap[i][s] = jd_journey_migrate_stage(nj, oj->stages[s].name, strlen(oj->stages[s].name));
                continue;
            }
            for (size_t k = 0; nj && k < nj->nstages; k++)
                if (strcmp(nj->stages[k].name, oj->stages[s].name) == 0)
                    smap[i][s] = (int)k;
        }
        if (nj) {
            e->counts[nj->index].entered = ocounts[i].entered;
            e->counts[nj->index].converted = ocounts[i].converted;
            e->counts[nj->index].exited = ocounts[i].exited;
            for (size_t s = 0; s < oj->nstages; s++)
                if (smap[i][s] >= 0 && strcmp(oj->stages[s].name, nj->stages[smap[i][s]].name) == 0) {
                    jd_stage_count sc = e->counts[nj->index].stages[smap[i][s]];
                    e->counts[nj->index].stages[smap[i][s]] = ocounts[i].stages[s];
                    e->counts[nj->index].stages[smap[i][s]].now = sc.now;
                }
        }
    }
    for (size_t c = 0; c < od->nchannels; c++) {
        const jd_channel *ch = jd_defs_channel(nd, od->channels[c].name, strlen(od->channels[c].name));
        if (ch)
            e->channel_actions[ch->index] = ochan[c];
    }
    /* instances; `now` and `active` are recounted from them */
    size_t it = 0;
    const jd_map_slot *slot;
    while (jd_map_next(&e->users, &it, &slot)) {
        jd_user *u = slot->value;
        /* people pinned to an earlier generation of a journey that now migrates: moved
         * to the new version like the others (appended to the instances below) */
        jd_instance *unpinned = NULL;
        for (jd_instance **pp = &u->pinned; *pp;) {
            jd_instance *in = *pp;
            const jd_journey *pj =
                in->pin && in->status == JD_INST_ACTIVE ? &in->pin->defs->journeys[in->journey] : NULL;
            const jd_journey *cj = pj ? jd_defs_journey(nd, pj->name, strlen(pj->name)) : NULL;
            if (!cj || !cj->migrates || cj->version == pj->version) {
                pp = &in->next;
                continue;
            }
            const char *sn = pj->stages[in->stage].name;
            int to = jd_journey_migrate_stage(cj, sn, strlen(sn));
            in->pin->pinned--;
            u->npinned--;
            in->pin = NULL;
            *pp = in->next;
            in->next = unpinned;
            unpinned = in;
            in->journey = cj->index;
            in->version = cj->version;
            if (to < 0) { /* "exit", or a removed stage with no rule */
                jd_engine_log(e, "info", "reload: journey '%s' migrates stage '%s' to exit; user %s leaves", cj->name,
                              sn, u->id);
                in->status = JD_INST_EXITED;
                in->left_at = now;
                in->stage = cj->entry_stage;
                e->counts[cj->index].exited++;
                continue;
            }
            if (strcmp(cj->stages[to].name, sn) != 0) {
                in->gen++;
                in->stage_entered_at = now;
                in->migrated = 1;
                moved = 1;
                e->counts[cj->index].stages[to].entered++;
            }
            in->stage = to;
            e->counts[cj->index].active++;
            e->counts[cj->index].stages[to].now++;
        }
        /* people pinned to earlier generations count in the new journey of that name */
        for (const jd_instance *in = u->pinned; in; in = in->next) {
            if (!in->pin || in->status != JD_INST_ACTIVE)
                continue;
            const jd_journey *pj = &in->pin->defs->journeys[in->journey];
            const jd_journey *cj = jd_defs_journey(nd, pj->name, strlen(pj->name));
            int cs = cj ? stage_named(cj, pj->stages[in->stage].name) : -1;
            if (cj)
                e->counts[cj->index].active++;
            if (cs >= 0)
                e->counts[cj->index].stages[cs].now++;
        }
        for (jd_instance **pp = &u->instances; *pp;) {
            jd_instance *in = *pp;
            int nj = jmap[in->journey];
            if (nj >= 0 && in->status == JD_INST_ACTIVE && !migrating[in->journey] &&
                nd->journeys[nj].version != od->journeys[in->journey].version) {
                /* edited without `migrate`: pinned to the old generation until they leave */
                *pp = in->next;
                in->pin = g;
                in->next = u->pinned;
                u->pinned = in;
                g->pinned++;
                u->npinned++;
                e->counts[nj].active++;
                if (smap[in->journey][in->stage] >= 0)
                    e->counts[nj].stages[smap[in->journey][in->stage]].now++;
                continue;
            }
            if (nj < 0) { /* the journey is gone: forget the instance */
                if (in->status == JD_INST_ACTIVE)
                    jd_engine_log(e, "warn", "reload: journey '%s' removed; user %s leaves it",
                                  od->journeys[in->journey].name, u->id);
                *pp = in->next;
                jd_map_put(&freed, (const char *)&in, sizeof in, in); /* timers below may name it */
                jd_instance_free(in);
                continue;
            }
            int ns = smap[in->journey][in->stage];
            const jd_journey *oj = &od->journeys[in->journey];
            if (migrating[in->journey] && in->status == JD_INST_ACTIVE) {
                in->version = nd->journeys[nj].version;
                if (ns == JD_MIGRATE_EXIT) {
                    jd_engine_log(e, "info", "reload: journey '%s' migrates stage '%s' to exit; user %s leaves",
                                  oj->name, oj->stages[in->stage].name, u->id);
                    in->status = JD_INST_EXITED;
                    in->left_at = now;
                    e->counts[nj].exited++;
                    ns = 0;
                } else if (ns >= 0 && strcmp(nd->journeys[nj].stages[ns].name, oj->stages[in->stage].name) != 0) {
                    /* a new stage entry: the old stage's timers are dropped (gen), the new
                     * stage's are scheduled below */
                    in->gen++;
                    in->stage_entered_at = now;
                    in->migrated = 1;
                    moved = 1;
                    e->counts[nj].stages[ns].entered++;
                }
            }
            if (ns < 0) {
                if (in->status == JD_INST_ACTIVE) {
                    jd_engine_log(e, "warn", "reload: stage '%s' of journey '%s' removed; user %s leaves the journey",
                                  od->journeys[in->journey].stages[in->stage].name, od->journeys[in->journey].name,
                                  u->id);
                    in->status = JD_INST_EXITED;
                    e->counts[nj].exited++;
                }
                ns = 0;
            }
            in->journey = nj;
            in->stage = ns;
            if (in->status == JD_INST_ACTIVE) {
                e->counts[nj].active++;
                e->counts[nj].stages[ns].now++;
            }
            pp = &in->next;
        }
        jd_instance **tail = &u->instances; /* after the loop above: they have new indexes */
        while (*tail)
            tail = &(*tail)->next;
        *tail = unpinned;
    }
    /* timers: drop those whose instance is gone, point the rest at the new indexes */
    jd_timers old = e->timers;
    jd_timers_init(&e->timers);
    e->timers.next_seq = old.next_seq;
    const jd_timer *ot;
    for (size_t ti = 0; (ot = jd_timers_each(&old, &ti));) {
        jd_timer t = *ot;
        if (t.pin) { /* an earlier generation's */
            if (jd_map_get(&freed, (const char *)&t.inst, sizeof t.inst) ||
                (t.inst->pin != t.pin &&
                 (t.inst->pin || t.inst->status != JD_INST_ACTIVE || t.inst->iid != t.iid || t.inst->gen != t.gen))) {
                t.user->timers--; /* its instance is gone, left, or moved on */
                t.pin->timers--;
                continue;
            }
            if (t.inst->pin != t.pin) { /* migrated out of its generation just now */
                t.pin->timers--;
                t.pin = NULL;
                t.journey = (uint16_t)t.inst->journey;
            }
            jd_timers_insert(&e->timers, t);
            continue;
        }
        int nj = jmap[t.journey];
        if (nj >= 0 && t.inst->pin == g) { /* pinned just now: the timer names g */
            if (t.inst->status == JD_INST_ACTIVE && t.inst->iid == t.iid && t.inst->gen == t.gen) {
                t.pin = g;
                g->timers++;
                jd_timers_insert(&e->timers, t);
            } else {
                t.user->timers--;
            }
            continue;
        }
        if (nj < 0 || t.inst->status != JD_INST_ACTIVE || t.inst->iid != t.iid || t.inst->gen != t.gen) {
            t.user->timers--;
            continue; /* (instances of removed journeys are freed: never dereference them) */
        }
        t.journey = (uint16_t)nj;
        jd_timers_insert(&e->timers, t); /* keeps its seq: the original order among equals */
    }
    e->timers.next_seq = old.next_seq;
    jd_timers_free(&old);
    it = 0;
    while (moved && jd_map_next(&e->users, &it, &slot))
        schedule_migrated(e, slot->value);
    for (size_t i = 0; i < od->njourneys; i++)
        free(smap[i]);
    free(smap);
    free(jmap);
    free(migrating);
    jd_map_free(&freed, NULL);
}

typedef struct pin_defs {
    const jd_defs *old, *cur;
} pin_defs;

/* A journey that the reload from old to cur changes without `migrate`: its people pin. */
static int pins_journey(const char *name, size_t n, void *ud)
{
    const pin_defs *pd = ud;
    const jd_journey *oj = jd_defs_journey(pd->old, name, n), *nj = jd_defs_journey(pd->cur, name, n);
    return oj && nj && !nj->migrates && nj->version != oj->version;
}

int jd_engine_reload(jd_engine *e, const char *config_path, jd_error *err)
{
    jd_script *old_script = NULL;
    jd_defs *old_defs = NULL;
    int old_ctx = e->ctx_ref;
    jd_persist_settle(e); /* a checkpoint being built names journeys by the current defs */
    if (load_scripts(e, config_path, &old_script, &old_defs, err))
        return -1;
    for (size_t i = 0; i < e->ngens; i++)
        gen_map(e, e->gens[i]);
    jd_gen *g = gen_new(e, old_script, old_defs, old_ctx);
    jd_script_freeze(old_script); /* retired: it never reads a newer module from the disk */
    if (e->persist) {
        /* its sources stay in the store while anyone is pinned to it (with the modules it
         * required since they were stored); the new scripts' are a new row */
        g->id = e->gen_id;
        g->hash = e->gen_hash;
        if (g->id && jd_script_nfiles(old_script) > e->gen_nfiles)
            jd_persist_gen_put(e, g->id, g->hash, old_script);
        jd_persist_gen_current(e);
        /* people of journeys that pin who are only in the store: read them in (with the
         * old defs, as they were written) so that they are pinned like the others */
        pin_defs pd = {old_defs, e->defs};
        jd_defs *cur = e->defs;
        e->defs = old_defs;
        jd_persist_load_active(e, pins_journey, &pd);
        e->defs = cur;
    }
    jd_journey_count *ocounts = e->counts;
    uint64_t *ochan = e->channel_actions;
    e->channel_actions = jd_xcalloc(e->defs->nchannels + 1, sizeof *e->channel_actions);
    e->counts = new_counts(e->defs);
    carry_over(e, g, ocounts, ochan);
    /* analytics by journey and stage name; "in stage now" from the recount above */
    jd_stats *oan = e->analytics;
    new_analytics(e);
    jd_stats_carry(e->analytics, oan);
    jd_stats_free(oan);
    for (size_t i = 0; i < e->defs->njourneys; i++)
        for (size_t s = 0; s < e->defs->journeys[i].nstages; s++)
            jd_stats_set_now(e->analytics, (int)i, (int)s, e->counts[i].stages[s].now);
    jd_persist_all_changed(e); /* statuses may have changed; rows name journeys anyway */
    free_counts(ocounts, old_defs->njourneys);
    free(ochan);
    e->gens = jd_xrealloc(e->gens, (e->ngens + 1) * sizeof *e->gens);
    e->gens[e->ngens++] = g; /* freed now unless people are pinned to it */
    gens_collect(e);
    jd_engine_log(e, "info", "scripts reloaded from %s: %zu journeys", config_path, e->defs->njourneys);
    return 0;
}

void jd_engine_free(jd_engine *e)
{
    if (!e)
        return;
    if (e->defs) {
        free_counts(e->counts, e->defs->njourneys);
        if (e->script)
            jd_defs_release_refs(jd_script_L(e->script), e->defs);
        jd_defs_free(e->defs);
    }
    jd_script_free(e->script);
    for (size_t i = 0; i < e->ngens; i++)
        gen_free(e->gens[i]);
    free(e->gens);
    jd_stats_free(e->analytics);
    free(e->analytics_dirty);
    jd_map_free(&e->alert_counts, free);
    jd_user_free(e->alert_user);
    free(e->channel_actions);
    jd_map_free(&e->channel_held, free);
    jd_tzcache_free(e->zones);
    jd_buf_free(&e->config);
    jd_map_free(&e->config_cache, free);
    msgpack_zone_destroy(&e->config_zone);
    jd_map_free(&e->users, free_user);
    jd_map_free(&e->rule_errors, free);
    jd_map_free(&e->aliases, free);
    jd_dedupe_free(&e->dedupe);
    jd_timers_free(&e->timers);
    msgpack_zone_destroy(&e->zone);
    msgpack_zone_destroy(&e->in_zone);
    jd_buf_free(&e->rec);
    jd_buf_free(&e->sets_rec);
    jd_buf_free(&e->traits_buf);
    jd_buf_free(&e->scratch);
    jd_buf_free(&e->trec);
    jd_buf_free(&e->keybuf);
    jd_buf_free(&e->action_json);
    jd_buf_free(&e->action_rec);
    msgpack_zone_destroy(&e->action_zone);
    jd_json_reader_free(e->jr);
    jd_json_writer_free(e->jw);
    jd_effects_free(&e->fx);
    jd_persist_free(e);
    free(e);
}

void jd_engine_on_action(jd_engine *e, jd_action_fn fn, void *ud)
{
    e->on_action = fn;
    e->on_action_ud = ud;
}

void jd_engine_on_log(jd_engine *e, jd_log_fn fn, void *ud)
{
    e->on_log = fn;
    e->on_log_ud = ud;
}

void jd_engine_on_export(jd_engine *e, jd_export_fn fn, void *ud)
{
    e->on_export = fn;
    e->on_export_ud = ud;
}

int64_t jd_engine_now(const jd_engine *e)
{
    return jd_clock_now(&e->clock);
}

int64_t jd_engine_next_due(const jd_engine *e)
{
    const jd_timer *t = jd_timers_peek(&e->timers);
    int64_t due = t ? t->due : -1;
    if (e->persist) {
        int64_t stored = jd_persist_next_due(e);
        if (stored != INT64_MAX && (due < 0 || stored < due))
            due = stored;
    }
    return due;
}

/* The time an event acts at. On the real clock an event cannot act in the future (a
 * sender's clock running ahead would delay its timers); on a virtual clock the event's
 * timestamp is the time. */
static int64_t event_time(const jd_engine *e)
{
    int64_t ts = e->ev->timestamp;
    if (!e->clock.is_virtual || e->opts.live) {
        int64_t now = jd_clock_now(&e->clock);
        if (ts > now)
            ts = now;
    }
    return ts;
}

uint64_t jd_engine_stat(const jd_engine *e, const char *name)
{
    for (int i = 0; i < JD_NSTATS; i++)
        if (strcmp(stat_names[i], name) == 0)
            return e->stats[i];
    if (strcmp(name, "users") == 0)
        return e->users.count;
    if (strcmp(name, "timers_pending") == 0)
        return e->timers.n;
    if (strcmp(name, "lua_memory") == 0)
        return jd_script_memory(e->script);
    return 0;
}

int jd_parse_time(const char *s, int64_t *ms)
{
    return jd_time_parse(s, strlen(s), ms);
}

int jd_parse_duration(const char *s, int64_t *ms)
{
    return jd_duration_parse(s, strlen(s), ms);
}

char *jd_tick_record(int64_t t_ms, size_t *len)
{
    jd_buf b;
    jd_buf_init(&b);
    jd_event_pack_tick(t_ms, &b);
    *len = b.len;
    return b.data;
}

/* ---------------------------------------------------------------- hooks */

static int in_segment_cb(void *ud, const char *name, size_t n)
{
    return jd_user_in_segment(ud, name, n);
}

static const msgpack_object *user_traits(jd_engine *e)
{
    if (!e->user_traits)
        e->user_traits = jd_user_traits(e->user, &e->zone, &e->user_traits_obj);
    return e->user_traits;
}

void jd_engine_count_error(jd_engine *e, const char *rule)
{
    e->stats[JD_STAT_LUA_ERRORS]++;
    jd_rule_stat *rs = jd_map_get(&e->rule_errors, rule, strlen(rule));
    if (!rs) {
        rs = jd_xcalloc(1, sizeof *rs);
        jd_map_put(&e->rule_errors, rule, strlen(rule), rs);
    }
    rs->errors++;
    int64_t now = jd_clock_now(&e->clock);
    if (rs->in_window == 0 || now - rs->window_start > e->quarantine_window_ms) {
        rs->window_start = now;
        rs->in_window = 0;
    }
    rs->in_window++;
    if (e->quarantine_errors && rs->in_window >= e->quarantine_errors && !rs->quarantined) {
        rs->quarantined = 1;
        e->stats[JD_STAT_QUARANTINED]++;
        jd_engine_log(e, "error",
                      "rule %s quarantined after %u errors within %lld ms: it will not run again until the scripts "
                      "are reloaded",
                      rule, rs->in_window, (long long)e->quarantine_window_ms);
    }
}

/* Rules only get stats once they fail, so a healthy engine pays nothing here. */
static int quarantined(jd_engine *e, const char *rule)
{
    if (!e->rule_errors.count || !rule)
        return 0;
    const jd_rule_stat *rs = jd_map_get(&e->rule_errors, rule, strlen(rule));
    if (rs && rs->quarantined) {
        e->stats[JD_STAT_QUARANTINE_SKIPS]++;
        return 1;
    }
    return 0;
}

static void log_hook_error(jd_engine *e, const char *rule, jd_script_error *se)
{
    char text[2048];
    jd_engine_count_error(e, rule);
    jd_script_error_text(se, text, sizeof text);
    jd_engine_log(e, "error", "lua error in %s (user %s, event %.*s): %s%s%s", rule, e->user->id,
                  (int)e->ev->message_id.n, e->ev->message_id.p, text, se->traceback[0] ? "\n" : "", se->traceback);
    jd_engine_decide(e, JD_DEC_ERROR, e->call.journey, e->call.stage, "%s: %s", rule, text);
}

/* Pushes the shared ctx, stamped for a new call. */
static void push_ctx(jd_engine *e, lua_State *L)
{
    jd_ctx_push(e, L);
}

static void set_call(jd_engine *e, const jd_journey *j, int stage, jd_instance *inst, const jd_trigger *t,
                     const char *hook, int readonly)
{
    e->call.id++;
    e->call.journey = j;
    e->call.stage = stage;
    e->call.inst = inst;
    e->call.trigger = t;
    e->call.hook = hook;
    e->call.readonly = readonly;
}

/* Runs a hook; on success its effects are in e->fx (not yet applied). A failing hook
 * leaves e->fx empty: none of its actions are taken. */
static int run_hook(jd_engine *e, int ref, const jd_journey *j, int stage, jd_instance *inst, const jd_trigger *t,
                    const char *hook, const char *rule)
{
    jd_effects_reset(&e->fx);
    if (ref == LUA_NOREF)
        return 0;
    if (quarantined(e, rule))
        return -1; /* as if it failed: none of its actions; the transition still happens */
    lua_State *L = jd_script_L(e->script);
    set_call(e, j, stage, inst, t, hook, 0);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    push_ctx(e, L);
    e->stats[JD_STAT_LUA_CALLS]++;
    jd_script_error se = {0};
    int rc = jd_script_call(e->script, 1, 0, &se);
    e->call.id++; /* the ctx is dead once the hook returns */
    if (rc) {
        log_hook_error(e, rule, &se);
        jd_script_error_clear(&se);
        jd_effects_reset(&e->fx);
        return -1;
    }
    return 0;
}

static int when_ok(jd_engine *e, const jd_trigger *t, const jd_journey *j, jd_instance *inst)
{
    if (quarantined(e, t->rule_id))
        return 0;
    lua_State *L = jd_script_L(e->script);
    set_call(e, j, inst ? inst->stage : -1, inst, t, "when", 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->when_ref);
    push_ctx(e, L);
    e->stats[JD_STAT_LUA_CALLS]++;
    jd_script_error se = {0};
    int rc = jd_script_call(e->script, 1, 1, &se);
    e->call.id++;
    if (rc) {
        log_hook_error(e, t->rule_id, &se);
        jd_script_error_clear(&se);
        return 0;
    }
    int ok = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return ok;
}

static int matches(jd_engine *e, const jd_trigger *t, const jd_journey *j, jd_instance *inst)
{
    jd_match_env env = {.ev = e->ev, .score = e->user->score, .in_segment = in_segment_cb, .ud = e->user};
    for (size_t i = 0; i < t->npreds; i++) {
        if (t->preds[i].root == JD_ROOT_USER_TRAITS && !env.user_traits)
            env.user_traits = user_traits(e);
        if (!jd_pred_eval(&t->preds[i], &env))
            return 0;
    }
    if (t->when_ref != LUA_NOREF)
        return when_ok(e, t, j, inst);
    return 1;
}

/* ---------------------------------------------------------------- actions */

static void hex128(char *out, uint64_t a, uint64_t b)
{
    /* a byte's two digits at a time */
    static const char pairs[513] = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
                                   "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
                                   "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
                                   "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
                                   "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
                                   "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
                                   "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
                                   "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";
    for (int i = 0; i < 8; i++) {
        memcpy(out + 2 * i, pairs + 2 * ((a >> (56 - 8 * i)) & 255), 2);
        memcpy(out + 16 + 2 * i, pairs + 2 * ((b >> (56 - 8 * i)) & 255), 2);
    }
    out[32] = '\0';
}

/* Stable action id: the input's messageId, the user, the rule, the instance key, how
 * many times this rule already ran for this input, and the action's index. The same
 * input re-processed with the same scripts yields the same ids. */
static void action_id(jd_engine *e, char out[33], const char *rule, const jd_instance *inst, int repeat, size_t index)
{
    jd_buf *b = &e->keybuf;
    jd_buf_reset(b);
    jd_buf_append(b, e->ev->message_id.p, e->ev->message_id.n);
    jd_buf_putc(b, '\0');
    jd_buf_append(b, e->user->id, e->user->idlen);
    jd_buf_putc(b, '\0');
    /* journey and stage names on their own: the rule text joins them with '/', which
     * names may contain ("a/b" + "c" vs "a" + "b/c") */
    if (e->call.journey) {
        jd_buf_puts(b, e->call.journey->name);
        jd_buf_putc(b, '\0');
        if (e->call.stage >= 0)
            jd_buf_puts(b, e->call.journey->stages[e->call.stage].name);
    }
    jd_buf_putc(b, '\0');
    jd_buf_puts(b, rule);
    jd_buf_putc(b, '\0');
    if (inst)
        jd_buf_append(b, inst->key, inst->keylen);
    jd_buf_putc(b, 0);
    jd_buf_put_i64(b, repeat);
    jd_buf_putc(b, 0);
    jd_buf_put_u64(b, index);
    uint64_t ha, hb;
    jd_hash2(b->data, b->len, 0x1f83d9abfb41bd6bULL, 0x5be0cd19137e2179ULL, &ha, &hb);
    hex128(out, ha, hb);
}

static int rule_repeat(jd_engine *e, const char *rule, const jd_instance *inst)
{
    uint64_t h = jd_hash(rule, strlen(rule), inst ? inst->iid : 0);
    int n = 0;
    for (int i = 0; i < e->nfired; i++)
        n += e->fired_hash[i] == h;
    if (e->nfired < (int)(sizeof e->fired_hash / sizeof e->fired_hash[0]))
        e->fired_hash[e->nfired++] = h;
    return n;
}

const char *jd_action_id(const jd_action *a)
{
    return a->id;
}
int64_t jd_action_time(const jd_action *a)
{
    return a->time;
}
int64_t jd_action_deliver_at(const jd_action *a)
{
    return a->deliver_at;
}
const char *jd_action_channel(const jd_action *a)
{
    return a->channel->name;
}

const char *jd_action_json(const jd_action *a, size_t *len)
{
    jd_engine *e = a->e;
    /* the outbox, the log line and delivery each ask for the same action: render it once
     * (an id names exactly one action) */
    if (e->action_json.len && strcmp(e->action_json_id, a->id) == 0) {
        if (len)
            *len = e->action_json.len;
        return jd_buf_cstr(&e->action_json);
    }
    jd_buf *rec = &e->action_rec; /* scratch reused across actions */
    jd_buf_reset(rec);
    msgpack_packer pk;
    msgpack_packer_init(&pk, rec, jd_buf_msgpack_write);
    char t[40];
    jd_time_format(a->time, t);
    msgpack_pack_map(&pk, a->deliver_at ? 8 : 7);
    jd_mp_pack_cstr(&pk, "time");
    jd_mp_pack_cstr(&pk, t);
    jd_mp_pack_cstr(&pk, "user");
    jd_mp_pack_str(&pk, a->user->id, a->user->idlen);
    jd_mp_pack_cstr(&pk, "journey");
    if (a->journey)
        jd_mp_pack_cstr(&pk, a->journey->name);
    else
        msgpack_pack_nil(&pk);
    jd_mp_pack_cstr(&pk, "stage");
    if (a->journey && a->stage >= 0)
        jd_mp_pack_cstr(&pk, a->journey->stages[a->stage].name);
    else
        msgpack_pack_nil(&pk);
    jd_mp_pack_cstr(&pk, "channel");
    jd_mp_pack_cstr(&pk, a->channel->name);
    jd_mp_pack_cstr(&pk, "payload");
    jd_buf_append(rec, a->payload, a->payload_len);
    jd_mp_pack_cstr(&pk, "id");
    jd_mp_pack_cstr(&pk, a->id);
    if (a->deliver_at) {
        char da[40];
        jd_time_format(a->deliver_at, da);
        jd_mp_pack_cstr(&pk, "deliver_at");
        jd_mp_pack_cstr(&pk, da);
    }
    msgpack_zone_clear(&e->action_zone);
    msgpack_object o;
    jd_buf_reset(&e->action_json);
    if (jd_mp_unpack(rec->data, rec->len, &e->action_zone, &o) == 0)
        jd_json_write(e->jw, &o, &e->action_json);
    memcpy(e->action_json_id, a->id, sizeof e->action_json_id);
    if (len)
        *len = e->action_json.len;
    return jd_buf_cstr(&e->action_json);
}

/* The zone a send window reads the clock in: its fixed zone, else the person's
 * `timezone` trait (when tz = "user"), else j.config default_timezone, else UTC. A bad
 * trait falls back to the default and is logged once per name. NULL: UTC. */
static const jd_tz *window_zone(jd_engine *e, const jd_window *w)
{
    if (w->tz[0])
        return jd_tzcache_get(&e->zones, w->tz, strlen(w->tz));
    if (w->tz_user) {
        const msgpack_object *tz = jd_mp_get(user_traits(e), "timezone", 8);
        if (tz && tz->type == MSGPACK_OBJECT_STR) {
            const jd_tz *z = jd_tzcache_get(&e->zones, tz->via.str.ptr, tz->via.str.size);
            if (z)
                return z;
            if (jd_tzcache_first_warning(&e->zones, tz->via.str.ptr, tz->via.str.size))
                jd_engine_log(e, "warn",
                              "user %s: timezone '%.*s' is not in the system tz database; send windows use "
                              "the default zone",
                              e->user->id, (int)tz->via.str.size, tz->via.str.ptr);
        }
    }
    const char *def = jd_engine_config(e, "default_timezone");
    return def ? jd_tzcache_get(&e->zones, def, strlen(def)) : NULL;
}

static uint64_t *held_count(jd_engine *e, const jd_channel *ch)
{
    uint64_t *c = jd_map_get(&e->channel_held, ch->name, strlen(ch->name));
    if (!c) {
        c = jd_xcalloc(2, sizeof *c);
        jd_map_put(&e->channel_held, ch->name, strlen(ch->name), c);
    }
    return c;
}

/* Send windows and frequency caps, decided on the engine's clock: 1 when the send is
 * suppressed by its cap; else sets a->deliver_at when the window defers it, and
 * remembers a capped send (at the time it reaches the person). */
static int hold(jd_engine *e, const jd_send *s, jd_action *a)
{
    const jd_channel *ch = a->channel;
    const jd_window *w = s->has_window ? &s->window : ch->window;
    const jd_cap *cap = s->has_cap ? &s->cap : &ch->cap;
    if (w && !w->days)
        w = NULL; /* `window = false` */
    if (!w && !cap->max)
        return 0;
    jd_user *u = e->user;
    uint64_t chash = jd_hash(ch->name, strlen(ch->name), 0);
    if (cap->max && jd_user_sent_count(u, chash, a->time - cap->per_ms) >= cap->max) {
        e->stats[JD_STAT_SUPPRESSED]++;
        held_count(e, ch)[1]++;
        jd_engine_decide(e, JD_DEC_SUPPRESSED, a->journey, a->stage, "%s: cap %u per %s reached", ch->name, cap->max,
                         cap->per);
        return 1;
    }
    if (w) {
        const jd_tz *z = window_zone(e, w);
        int64_t at = jd_window_next(w, z, a->time);
        if (at > a->time) {
            char t[40];
            jd_time_format(at, t);
            a->deliver_at = at;
            e->stats[JD_STAT_DEFERRED]++;
            held_count(e, ch)[0]++;
            jd_engine_decide(e, JD_DEC_DEFERRED, a->journey, a->stage, "window %s %s: deferred to %s", w->text,
                             z ? jd_tz_name(z) : "UTC", t);
        }
    }
    if (cap->max) {
        /* keep what the largest cap on the channel (this one or the declared one) needs */
        int64_t per = cap->per_ms > ch->cap.per_ms ? cap->per_ms : ch->cap.per_ms;
        uint32_t max = cap->max > ch->cap.max ? cap->max : ch->cap.max;
        jd_user_sent_add(u, chash, a->deliver_at ? a->deliver_at : a->time, a->time - per, max);
    }
    return 0;
}

/* Applies a successful hook's effects: traits, score, segments, log lines, sends. */
static void apply(jd_engine *e, const char *rule, const jd_journey *j, int stage, const jd_instance *inst)
{
    jd_effects *fx = &e->fx;
    jd_user *u = e->user;
    if (fx->nsets) {
        /* the sets as one map, read into the event's zone (scratch: the traits tree
         * it may hold is stale once they change) */
        jd_buf *m = &e->sets_rec;
        jd_buf_reset(m);
        msgpack_packer pk;
        msgpack_packer_init(&pk, m, jd_buf_msgpack_write);
        msgpack_pack_map(&pk, fx->nsets);
        jd_buf_append(m, fx->sets.data, fx->sets.len);
        msgpack_object o;
        if (jd_mp_unpack(m->data, m->len, &e->zone, &o) == 0)
            jd_user_merge_traits(u, &o, &e->traits_buf);
        e->user_traits = NULL;
    }
    u->score += fx->score;
    for (size_t i = 0; i < fx->segops.len;) {
        const char *name = fx->segops.data + i + 1;
        size_t n = strlen(name);
        if (fx->segops.data[i] == '+')
            jd_user_segment_add(u, name, n);
        else
            jd_user_segment_remove(u, name, n);
        i += n + 2;
    }
    for (size_t i = 0; i < fx->logs.len;) {
        const char *line = fx->logs.data + i;
        jd_engine_log(e, "info", "%s (user %s): %s", rule, u->id, line);
        i += strlen(line) + 1;
    }
    if (!fx->nsends)
        return;
    int repeat = rule_repeat(e, rule, inst);
    for (size_t i = 0; i < fx->nsends; i++) {
        jd_send *s = &fx->sends[i];
        jd_action a = {
            .time = jd_clock_now(&e->clock),
            .user = u,
            .journey = j,
            .stage = stage,
            .channel = &e->defs->channels[s->channel],
            .payload = fx->payloads.data + s->off,
            .payload_len = s->len,
            .rule = rule,
            .e = e,
        };
        action_id(e, a.id, rule, inst, repeat, i);
        if (hold(e, s, &a))
            continue;
        if (e->persist)
            jd_persist_action(e, &a);
        e->stats[JD_STAT_ACTIONS]++;
        e->channel_actions[s->channel]++;
        jd_engine_decide(e, JD_DEC_ACTION, j, stage, "%s %s (%s)", a.channel->name, a.id, rule);
        if (e->on_action)
            e->on_action(&a, e->on_action_ud);
    }
}

/* ---------------------------------------------------------------- alerts */

/* Turns an alert's state change into a log line, a metrics count and, when the alert has
 * a channel, an action decided like a ctx:send's (the channel's send window and cap,
 * outbox, dispatcher, signing, retries). Alert actions belong to no person: their user is
 * e->alert_user, id "" (no traits: a window uses the default zone; a cap counts the
 * channel's alerts, in memory). Its id comes from the journey, the alert's index, the edge and the clock minute and
 * input sequence it happened at, so re-processing the log after a crash decides the same
 * id. */
static void emit_alert(jd_engine *e, const jd_alert_edge *ed, int64_t now)
{
    const jd_journey *j = &e->defs->journeys[ed->journey];
    const char *stage = ed->spec.stage >= 0 ? j->stages[ed->spec.stage].name : "";
    const char *edge = ed->firing ? "fired" : "recovered";
    char text[512];
    jd_alert_edge_text(e->analytics, ed, text, sizeof text);
    jd_engine_log(e, ed->firing ? "warn" : "info", "alert %s: %s", edge, text);
    jd_buf *k = &e->keybuf;
    jd_buf_reset(k);
    jd_buf_printf(k, "%s%c%s%c%s", j->name, 0, stage, 0, edge);
    uint64_t *n = jd_map_get(&e->alert_counts, k->data, k->len);
    if (!n) {
        n = jd_xcalloc(1, sizeof *n);
        jd_map_put(&e->alert_counts, k->data, k->len, n);
    }
    (*n)++;
    const jd_channel *ch = jd_defs_channel(e->defs, ed->spec.channel_name, strlen(ed->spec.channel_name));
    if (!ch)
        return;
    jd_buf payload;
    jd_buf_init(&payload);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &payload, jd_buf_msgpack_write);
    msgpack_pack_map(&pk, 9);
    jd_mp_pack_cstr(&pk, "text");
    jd_mp_pack_cstr(&pk, text);
    jd_mp_pack_cstr(&pk, "alert");
    jd_mp_pack_cstr(&pk, edge);
    jd_mp_pack_cstr(&pk, "kind");
    jd_mp_pack_cstr(&pk, ed->spec.kind == JD_ALERT_DROPOFF_ABOVE ? "dropoff_above" : "conversion_below");
    jd_mp_pack_cstr(&pk, "journey");
    jd_mp_pack_cstr(&pk, j->name);
    jd_mp_pack_cstr(&pk, "stage");
    if (ed->spec.stage >= 0)
        jd_mp_pack_cstr(&pk, stage);
    else
        msgpack_pack_nil(&pk);
    jd_mp_pack_cstr(&pk, "value");
    msgpack_pack_double(&pk, ed->value);
    jd_mp_pack_cstr(&pk, "threshold");
    msgpack_pack_double(&pk, ed->spec.threshold);
    jd_mp_pack_cstr(&pk, "window");
    jd_mp_pack_cstr(&pk, jd_stats_window_name(ed->spec.window));
    jd_mp_pack_cstr(&pk, "sample");
    msgpack_pack_uint64(&pk, ed->sample);
    char rule[300];
    snprintf(rule, sizeof rule, "%s/alert#%d", j->name, ed->alert + 1);
    jd_action a = {
        .time = now,
        .user = e->alert_user,
        .journey = j,
        .stage = ed->spec.stage,
        .channel = ch,
        .payload = payload.data,
        .payload_len = payload.len,
        .rule = rule,
        .e = e,
    };
    jd_buf_reset(k);
    jd_buf_printf(k, "alert%c%s%c%d%c%s%c%lld%c%llu", 0, j->name, 0, ed->alert, 0, edge, 0,
                  (long long)(now / 60000 - (now % 60000 < 0)), 0, (unsigned long long)e->event_seq);
    hex128(a.id, jd_hash(k->data, k->len, 0x1f83d9abfb41bd6bULL), jd_hash(k->data, k->len, 0x5be0cd19137e2179ULL));
    /* checks run between inputs: the current person is free to borrow */
    jd_user *person = e->user;
    jd_send send = {.channel = (int)ch->index};
    e->user = e->alert_user;
    e->user_traits = NULL;
    int held = hold(e, &send, &a);
    e->user = person;
    e->user_traits = NULL;
    if (!held) {
        if (e->persist)
            jd_persist_action(e, &a);
        e->stats[JD_STAT_ACTIONS]++;
        e->channel_actions[ch->index]++;
        if (e->on_action)
            e->on_action(&a, e->on_action_ud);
    }
    jd_buf_free(&payload);
}

/* Checks alerts as counters change and as time passes: the journeys whose counters
 * changed since the last check, and every journey once per minute of clock time (old
 * buckets leaving a window change figures too). */
static void check_alerts(jd_engine *e)
{
    if (!e->alert_journeys)
        return;
    int64_t now = jd_clock_now(&e->clock), minute = now / 60000 - (now % 60000 < 0);
    int all = minute != e->alert_minute;
    if (!all && !e->analytics_changed)
        return;
    jd_alert_edge edges[JD_MAX_ALERTS * 4];
    for (size_t i = 0; i < e->defs->njourneys; i++) {
        if (!e->defs->journeys[i].nalerts || (!all && !e->analytics_dirty[i]))
            continue;
        size_t n = jd_stats_check_alerts(e->analytics, (int)i, now, edges, sizeof edges / sizeof edges[0]);
        for (size_t k = 0; k < n; k++)
            emit_alert(e, &edges[k], now);
    }
    memset(e->analytics_dirty, 0, e->defs->njourneys);
    e->analytics_changed = 0;
    e->alert_minute = minute;
}

/* ---------------------------------------------------------------- stages */

static void enter_stage(jd_engine *e, const jd_journey *j, jd_instance *inst, int s, int64_t at, int depth);

/* The journey's analytics changed: its alerts are checked after this input. */
static void analytics_touch(jd_engine *e, const jd_journey *j)
{
    int aj = an_journey(e, j);
    if (aj < 0)
        return;
    e->analytics_dirty[aj] = 1;
    e->analytics_changed = 1;
}

static void leave(jd_engine *e, const jd_journey *j, jd_instance *inst, jd_inst_status status)
{
    if (inst->status != JD_INST_ACTIVE)
        return;
    jd_journey_count *jc = &e->counts[j->index];
    jd_stage_count *sc = &jc->stages[inst->stage];
    sc->now--;
    jc->active--;
    int64_t now = jd_clock_now(&e->clock);
    if (status == JD_INST_CONVERTED) {
        sc->converted++;
        jc->converted++;
        jd_stats_converted(e->analytics, an_journey(e, j), an_stage(e, j, inst->stage), now,
                           now - inst->stage_entered_at, now - inst->entered_at);
    } else {
        sc->exited++;
        jc->exited++;
        jd_stats_exited(e->analytics, an_journey(e, j), an_stage(e, j, inst->stage), now, now - inst->stage_entered_at);
    }
    analytics_touch(e, j);
    jd_engine_decide(e, status == JD_INST_CONVERTED ? JD_DEC_CONVERTED : JD_DEC_EXITED, j, inst->stage, "%.*s",
                     (int)e->ev->name.n, e->ev->name.p);
    inst->status = status;
    inst->left_at = now;
    inst->touched = e->event_seq;
}

static void move(jd_engine *e, const jd_journey *j, jd_instance *inst, int target, int64_t at, int depth, int timed_out)
{
    if (inst->status != JD_INST_ACTIVE)
        return;
    if (depth >= MAX_CHAIN) {
        char rule[300];
        snprintf(rule, sizeof rule, "%s/chain", j->name);
        jd_engine_count_error(e, rule);
        jd_engine_log(e, "error", "journey %s: more than %d stage moves for one input (user %s): stopped in '%s'",
                      j->name, MAX_CHAIN, e->user->id, j->stages[inst->stage].name);
        return;
    }
    jd_stage_count *sc = &e->counts[j->index].stages[inst->stage];
    sc->now--;
    /* time in the stage from the entry enter_stage is about to overwrite */
    int64_t in_stage = at - inst->stage_entered_at, now = jd_clock_now(&e->clock);
    if (timed_out) {
        sc->timed_out++;
        jd_stats_timed_out(e->analytics, an_journey(e, j), an_stage(e, j, inst->stage), an_stage(e, j, target), now,
                           in_stage);
    } else {
        sc->moved_on++;
        jd_stats_moved(e->analytics, an_journey(e, j), an_stage(e, j, inst->stage), an_stage(e, j, target), now,
                       in_stage);
    }
    analytics_touch(e, j);
    e->stats[JD_STAT_TRANSITIONS]++;
    jd_engine_decide(e, JD_DEC_MOVED, j, target, "%s -> %s on %.*s", j->stages[inst->stage].name,
                     j->stages[target].name, (int)e->ev->name.n, e->ev->name.p);
    enter_stage(e, j, inst, target, at, depth + 1);
}

/* After a hook ran (rc 0) or failed: follow its go/exit, else the trigger's action. */
static void follow(jd_engine *e, const jd_journey *j, jd_instance *inst, int go, int ex, jd_action_kind act, int target,
                   int64_t at, int depth, int timed_out)
{
    if (ex)
        leave(e, j, inst, JD_INST_EXITED);
    else if (go >= 0)
        move(e, j, inst, go, at, depth, timed_out);
    else if (act == JD_ACT_GO)
        move(e, j, inst, target, at, depth, timed_out);
    else if (act == JD_ACT_EXIT)
        leave(e, j, inst, JD_INST_EXITED);
}

/* The timers (j.after) of the stage inst is in, counted from at, for this stage entry. */
static void schedule_afters(jd_engine *e, jd_user *u, const jd_journey *j, jd_instance *inst, int64_t at)
{
    const jd_stage *st = &j->stages[inst->stage];
    for (size_t i = 0; i < st->nafter; i++) {
        jd_timer tm = {
            .due = at + st->after[i]->delay_ms,
            .user = u,
            .inst = inst,
            .iid = inst->iid,
            .gen = inst->gen,
            .after = (uint16_t)i,
            .journey = (uint16_t)j->index,
            .seq = e->timers.next_seq++,
            .pin = e->running,
        };
        if (!e->persist || !jd_persist_timer_added(e, &tm)) {
            jd_timers_schedule(&e->timers, tm, st->after[i]->delay_ms);
            u->timers++;
            if (tm.pin)
                tm.pin->timers++;
        }
        e->stats[JD_STAT_TIMERS_SCHEDULED]++;
    }
}

/* A person's instances that a `migrate` moved to another stage when they were loaded
 * or reloaded: the new stage's timers, from the time of the move. */
static void schedule_migrated(jd_engine *e, jd_user *u)
{
    for (jd_instance *in = u->instances; in; in = in->next)
        if (in->migrated) {
            in->migrated = 0;
            if (in->status == JD_INST_ACTIVE)
                schedule_afters(e, u, &e->defs->journeys[in->journey], in, in->stage_entered_at);
        }
}

static void enter_stage(jd_engine *e, const jd_journey *j, jd_instance *inst, int s, int64_t at, int depth)
{
    const jd_stage *st = &j->stages[s];
    inst->stage = s;
    inst->gen++;
    inst->stage_entered_at = at;
    inst->touched = e->event_seq;
    jd_stage_count *sc = &e->counts[j->index].stages[s];
    sc->entered++;
    sc->now++;
    schedule_afters(e, e->user, j, inst, at);
    if (st->enter_ref == LUA_NOREF)
        return;
    char rule[512]; /* "JOURNEY/STAGE/enter", cut at 511 bytes as snprintf would */
    size_t jn = strlen(j->name), sn = strlen(st->name), n = 0;
    const char *part[4] = {j->name, "/", st->name, "/enter"};
    size_t plen[4] = {jn, 1, sn, 6};
    for (int i = 0; i < 4 && n < sizeof rule - 1; i++) {
        size_t m = plen[i] < sizeof rule - 1 - n ? plen[i] : sizeof rule - 1 - n;
        memcpy(rule + n, part[i], m);
        n += m;
    }
    rule[n] = '\0';
    if (run_hook(e, st->enter_ref, j, s, inst, NULL, "enter", rule) == 0)
        apply(e, rule, j, s, inst);
    int go = e->fx.go, ex = e->fx.exit;
    follow(e, j, inst, go, ex, JD_ACT_NONE, -1, at, depth, 0);
}

/* Runs a trigger's hook and follows it (transitions and timeouts). */
static void fire(jd_engine *e, const jd_journey *j, jd_instance *inst, const jd_trigger *t, int64_t at)
{
    int stage = inst->stage;
    if (run_hook(e, t->fn_ref, j, stage, inst, t, t->is_after ? "after" : "on", t->rule_id) == 0)
        apply(e, t->rule_id, j, stage, inst);
    int go = e->fx.go, ex = e->fx.exit;
    follow(e, j, inst, go, ex, t->action, t->target, at, 0, t->is_after);
}

static int reentry_ok(const jd_engine *e, const jd_journey *j, const jd_instance *inst, int64_t at)
{
    if (!inst || inst->entries == 0)
        return 1;
    if (inst->touched == e->event_seq)
        return 0; /* it left on this very input */
    switch (j->reentry) {
    case JD_REENTRY_NEVER: return 0;
    case JD_REENTRY_ALWAYS: return 1;
    case JD_REENTRY_COOLDOWN: return at - inst->entered_at >= j->cooldown_ms;
    }
    return 0;
}

static void enter_journey(jd_engine *e, const jd_journey *j, const char *key, size_t keylen, const jd_trigger *t,
                          int64_t at)
{
    jd_instance *inst = jd_user_instance(e->user, j->index, key, keylen);
    if (inst && inst->status == JD_INST_ACTIVE)
        return;
    if (e->user->npinned && pinned_active(e->user, j, key, keylen))
        return; /* still in an earlier version of this journey */
    if (!reentry_ok(e, j, inst, at))
        return;
    if (!inst)
        inst = jd_user_instance_add(e->user, j->index, key, keylen);
    inst->status = JD_INST_ACTIVE;
    inst->iid = ++e->user->next_iid;
    inst->gen = 0;
    inst->entries++;
    inst->entered_at = at;
    inst->touched = e->event_seq;
    inst->version = j->version;
    jd_journey_count *jc = &e->counts[j->index];
    jc->entered++;
    jc->active++;
    jd_engine_decide(e, JD_DEC_ENTERED, j, j->entry_stage, "on %.*s", (int)e->ev->name.n, e->ev->name.p);
    int stage = j->entry_stage;
    inst->stage = stage;
    int go = -1, ex = 0;
    if (t->fn_ref != LUA_NOREF) {
        if (run_hook(e, t->fn_ref, j, stage, inst, t, "entry", t->rule_id) == 0)
            apply(e, t->rule_id, j, stage, inst);
        go = e->fx.go;
        ex = e->fx.exit;
    }
    /* counted where they actually start (an entry hook's ctx:go); enter_stage counts
     * only the e->counts side, later moves count through move() */
    jd_stats_entered(e->analytics, an_journey(e, j), an_stage(e, j, go >= 0 ? go : stage), jd_clock_now(&e->clock));
    analytics_touch(e, j);
    enter_stage(e, j, inst, go >= 0 ? go : stage, at, 0);
    if (ex)
        leave(e, j, inst, JD_INST_EXITED);
}

/* The key of a keyed journey from the event, as text. Returns 0 when absent. */
static int event_key(jd_engine *e, const jd_journey *j, const char **key, size_t *keylen)
{
    const jd_event *ev = e->ev;
    const msgpack_object *src =
        ev->type == JD_EV_IDENTIFY || ev->type == JD_EV_GROUP ? jd_event_traits(ev) : jd_event_properties(ev);
    const msgpack_object *o = jd_mp_path(src, j->key, j->keylen);
    if (!o)
        return 0;
    if (o->type == MSGPACK_OBJECT_STR && o->via.str.size) {
        *key = o->via.str.ptr;
        *keylen = o->via.str.size;
        return 1;
    }
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER || o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        jd_buf_reset(&e->scratch);
        if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
            jd_buf_printf(&e->scratch, "%llu", (unsigned long long)o->via.u64);
        else
            jd_buf_printf(&e->scratch, "%lld", (long long)o->via.i64);
        *key = e->scratch.data;
        *keylen = e->scratch.len;
        return 1;
    }
    return 0;
}

/* One journey's triggers (t[0..n), sorted by role) against this event. */
/* Runs the triggers t of journey j for the instances in list that belong to the running
 * generation, then (when entries) its entry. */
static void process_journey(jd_engine *e, const jd_journey *j, jd_trigger *const *t, size_t n, jd_instance *list,
                            int entries)
{
    int64_t at = event_time(e);
    const char *key = "";
    size_t keylen = 0;
    int haskey = 1;
    char kbuf[64];
    if (j->key) {
        haskey = event_key(e, j, &key, &keylen);
        if (haskey) { /* the key may live in e->scratch: keep our own copy (on the stack when short) */
            char *k = keylen < sizeof kbuf ? kbuf : jd_xmalloc(keylen + 1);
            memcpy(k, key, keylen);
            k[keylen] = '\0';
            key = k;
        }
    }
    for (jd_instance *inst = list; inst; inst = inst->next) {
        if (inst->pin != e->running || inst->journey != j->index || inst->status != JD_INST_ACTIVE ||
            inst->touched == e->event_seq)
            continue;
        if (j->key && haskey && (inst->keylen != keylen || memcmp(inst->key, key, keylen) != 0))
            continue;
        for (size_t i = 0; i < n && inst->status == JD_INST_ACTIVE; i++) {
            const jd_trigger *tr = t[i];
            if (tr->role == JD_ROLE_ENTRY)
                break;
            if (tr->role == JD_ROLE_TRANSITION && tr->stage != inst->stage)
                continue;
            if (!matches(e, tr, j, inst))
                continue;
            if (tr->role == JD_ROLE_EXIT || tr->role == JD_ROLE_GOAL) {
                int stage = inst->stage;
                if (run_hook(e, tr->fn_ref, j, stage, inst, tr, tr->role == JD_ROLE_GOAL ? "goal" : "exit",
                             tr->rule_id) == 0)
                    apply(e, tr->rule_id, j, stage, inst);
                leave(e, j, inst, tr->role == JD_ROLE_GOAL ? JD_INST_CONVERTED : JD_INST_EXITED);
            } else {
                inst->touched = e->event_seq;
                fire(e, j, inst, tr, at);
            }
            break; /* one trigger per instance per event */
        }
    }
    if (haskey && entries) {
        for (size_t i = 0; i < n; i++) {
            if (t[i]->role == JD_ROLE_ENTRY && matches(e, t[i], j, NULL)) {
                enter_journey(e, j, key, keylen, t[i], at);
                break;
            }
        }
    }
    if (j->key && haskey && key != kbuf)
        free((char *)key);
}

static void run_rule(jd_engine *e, const jd_trigger *t)
{
    if (!matches(e, t, NULL, NULL))
        return;
    if (run_hook(e, t->fn_ref, NULL, -1, NULL, t, "rule", t->rule_id) == 0)
        apply(e, t->rule_id, NULL, -1, NULL);
}

/* ---------------------------------------------------------------- identity */

/* The person with this id if they exist (in memory or in the store), else NULL. Every
 * path to a person who may change goes through here: the checkpoint barrier. */
/* jd_hash(id, n, 0), the maps' hash: the input's own person id was hashed already. */
static uint64_t id_hash(const jd_engine *e, const char *id, size_t n)
{
    return id == e->who_hashed && n == e->who_n ? e->who_h : jd_hash(id, n, 0);
}

static jd_user *find_user(jd_engine *e, const char *id, size_t n)
{
    jd_user *u = jd_map_get_hashed(&e->users, id, n, id_hash(e, id, n));
    if (u) {
        jd_persist_touch(e, u);
    } else if (e->persist && (u = jd_persist_load_user(e, id, n))) {
        jd_map_put(&e->users, u->id, u->idlen, u);
        schedule_migrated(e, u);
    }
    return u;
}

jd_user *jd_engine_user(jd_engine *e, const char *id, size_t n)
{
    jd_user *u = find_user(e, id, n);
    if (!u) {
        uint64_t h = id_hash(e, id, n);
        u = jd_user_new(id, n);
        jd_map_put_hashed(&e->users, u->id, u->idlen, u, h);
    }
    return u;
}

static const char *find_alias(jd_engine *e, const char *id, size_t n)
{
    const char *to = jd_map_get_hashed(&e->aliases, id, n, id_hash(e, id, n));
    return to || !e->persist ? to : jd_persist_load_alias(e, id, n);
}

jd_user *jd_engine_find_user(jd_engine *e, const char *id, size_t n)
{
    jd_user *u = find_user(e, id, n);
    if (!u) {
        const char *canon = find_alias(e, id, n);
        if (canon)
            u = find_user(e, canon, strlen(canon));
    }
    return u;
}

/* Folds the profile `from` into `to`: traits (to's win), score, segments. */
static void merge_profiles(jd_engine *e, jd_user *from, jd_user *to)
{
    if (from == to)
        return;
    if (from->traits.len) { /* most folded profiles are anonymous visits, without traits */
        msgpack_zone z;
        msgpack_zone_init(&z, 1024);
        msgpack_object o;
        const msgpack_object *ft = jd_user_traits(from, &z, &o);
        if (ft->via.map.size) {
            /* from's merged into none, then to's over them, then in to's place */
            jd_user base = {.traits = {NULL, 0, 0}};
            jd_user_merge_traits(&base, ft, &e->traits_buf);
            msgpack_object k;
            const msgpack_object *kt = to->traits.len ? jd_user_traits(to, &z, &k) : NULL;
            if (kt)
                jd_user_merge_traits(&base, kt, &e->traits_buf);
            jd_buf_free(&to->traits);
            to->traits = base.traits;
        }
        msgpack_zone_destroy(&z);
    }
    to->score += from->score;
    for (size_t i = 0; i < from->nsegments; i++)
        jd_user_segment_add(to, from->segments[i], strlen(from->segments[i]));
}

/* A profile exported by another shard (process_link), as a free-standing jd_user. */
static jd_user *user_of_fold(jd_str id, const msgpack_object *fold)
{
    jd_user *u = jd_user_new(id.p, id.n);
    const msgpack_object *t = jd_mp_get(fold, "traits", 6);
    if (t && t->type == MSGPACK_OBJECT_MAP)
        jd_user_merge_traits(u, t, NULL);
    const msgpack_object *sc = jd_mp_get(fold, "score", 5);
    if (sc && (sc->type == MSGPACK_OBJECT_FLOAT64 || sc->type == MSGPACK_OBJECT_FLOAT32))
        u->score = sc->via.f64;
    const msgpack_object *sg = jd_mp_get(fold, "segments", 8);
    for (uint32_t i = 0; sg && sg->type == MSGPACK_OBJECT_ARRAY && i < sg->via.array.size; i++)
        if (sg->via.array.ptr[i].type == MSGPACK_OBJECT_STR)
            jd_user_segment_add(u, sg->via.array.ptr[i].via.str.ptr, sg->via.array.ptr[i].via.str.size);
    return u;
}

/* Records from -> to (in memory and for the next checkpoint). 0 when there is nothing to
 * record: no ids, the same id, or the link already made. */
static int record_alias(jd_engine *e, jd_str from, jd_str to)
{
    if (!from.n || !to.n || (from.n == to.n && memcmp(from.p, to.p, from.n) == 0))
        return 0;
    const char *prev = find_alias(e, from.p, from.n);
    if (prev && strlen(prev) == to.n && memcmp(prev, to.p, to.n) == 0)
        return 0;
    free(jd_map_put(&e->aliases, from.p, from.n, jd_strndup(to.p, to.n)));
    if (e->persist)
        jd_persist_alias(e, from.p, from.n, to.p, to.n);
    return 1;
}

static void link_alias(jd_engine *e, jd_str from, jd_str to)
{
    if (!record_alias(e, from, to))
        return;
    jd_user *old = find_user(e, from.p, from.n);
    jd_user *folded = NULL;
    const msgpack_object *fold = e->ev ? jd_event_fold(e->ev) : NULL;
    if (!old && fold && fold->via.map.size) /* the earlier profile, from its own shard */
        old = folded = user_of_fold(from, fold);
    if (old) {
        jd_user *into = jd_engine_user(e, to.p, to.n);
        merge_profiles(e, old, into);
        if (e->persist)
            jd_persist_user_changed(e, into);
    }
    if (folded)
        jd_user_free(folded);
}

/* A link record on the shard of its earlier id: the alias is recorded here (so this
 * shard's store says where the id went), and the earlier profile goes to the daemon for
 * the later id's shard. Nothing else happens here: no dedupe, no journeys. */
static void process_link(jd_engine *e, const jd_event *ev)
{
    jd_str from = ev->type == JD_EV_ALIAS ? ev->previous_id : ev->anonymous_id;
    record_alias(e, from, ev->user_id);
    jd_buf out;
    jd_buf_init(&out);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &out, jd_buf_msgpack_write);
    jd_user *u = from.n ? find_user(e, from.p, from.n) : NULL;
    if (!u) {
        msgpack_pack_map(&pk, 0);
    } else {
        msgpack_pack_map(&pk, 3);
        jd_mp_pack_cstr(&pk, "traits");
        if (u->traits.len)
            jd_buf_append(&out, u->traits.data, u->traits.len);
        else
            msgpack_pack_map(&pk, 0);
        jd_mp_pack_cstr(&pk, "score");
        msgpack_pack_double(&pk, u->score);
        jd_mp_pack_cstr(&pk, "segments");
        msgpack_pack_array(&pk, u->nsegments);
        for (size_t i = 0; i < u->nsegments; i++)
            jd_mp_pack_cstr(&pk, u->segments[i]);
    }
    if (e->on_export)
        e->on_export(ev->link, out.data, out.len, e->on_export_ud);
    jd_buf_free(&out);
}

static jd_user *resolve_user(jd_engine *e, const jd_event *ev)
{
    jd_str id = ev->user_id;
    /* An event with only an anonymousId belongs to whoever that id was linked to. A timer
     * is not resolved: it belongs to the stage entry of the exact profile that made it
     * (instances stay with the profile that entered; identify folds traits, not
     * journeys). */
    if (ev->user_id.p == ev->anonymous_id.p && ev->type != JD_EV_TIMER) {
        const char *canon = find_alias(e, id.p, id.n);
        if (canon) {
            id.p = canon;
            id.n = strlen(canon);
        }
    }
    return jd_engine_user(e, id.p, id.n);
}

/* ---------------------------------------------------------------- processing */

/* A firing timer (tm NULL: not one) whose repeat its instance guards (else: the set). */
static int guarded_by_instance(const jd_timer *tm)
{
    return tm && tm->after < 64;
}

/* A timer fires once per stage entry. Its firing is named after the entry (timer_view),
 * but the set of messageIds is not where that is kept: each firing would be one more
 * random line of a large table and one more id in the store, for a repeat that only a
 * bug could make (every stage entry has a new gen, and the store forgets a timer once it
 * fired). The instance remembers which of its entry's timers fired, in a line the firing
 * reads anyway; a stage with more than 64 timers keeps the rest in the set as before.
 * 1: this one fired already (a duplicate), else it is marked. */
static int timer_once(const jd_timer *tm)
{
    jd_instance *in = tm->inst;
    if (in->fired_gen != tm->gen) {
        in->fired_gen = tm->gen;
        in->fired = 0;
    }
    uint64_t bit = 1ULL << tm->after;
    if (in->fired & bit)
        return 1;
    in->fired |= bit;
    return 0;
}

static void fire_timer(jd_engine *e, const jd_journey *j, jd_instance *inst, uint64_t gen, uint64_t aft);

static void timer_event(jd_engine *e)
{
    const jd_timer *tm = e->firing;
    /* marked only now, not where process_view checks messageIds: a checkpoint being
     * written has taken the person as they were before this record (jd_persist_touch) */
    if (guarded_by_instance(tm) && timer_once(tm)) {
        e->stats[JD_STAT_DUPLICATES]++;
        return;
    }
    /* a timer fired from memory on the current scripts for a person with nothing pinned:
     * its journey and stage entry are known (jd_engine_advance checked the entry) */
    if (tm && !tm->pin && !e->user->npinned) {
        fire_timer(e, &e->defs->journeys[tm->journey], tm->inst, tm->gen, tm->after);
        return;
    }
    const msgpack_object *props = jd_event_properties(e->ev);
    const msgpack_object *jn = jd_mp_get(props, "journey", 7);
    const msgpack_object *ky = jd_mp_get(props, "key", 3);
    const msgpack_object *iid = jd_mp_get(props, "iid", 3);
    const msgpack_object *gen = jd_mp_get(props, "gen", 3);
    const msgpack_object *aft = jd_mp_get(props, "after", 5);
    if (!jn || jn->type != MSGPACK_OBJECT_STR || !ky || ky->type != MSGPACK_OBJECT_STR || !iid ||
        iid->type != MSGPACK_OBJECT_POSITIVE_INTEGER || !gen || gen->type != MSGPACK_OBJECT_POSITIVE_INTEGER || !aft ||
        aft->type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
        e->stats[JD_STAT_INVALID]++;
        return;
    }
    /* a person pinned to an earlier generation: that generation runs the timer */
    for (jd_instance *p = e->user->npinned ? e->user->pinned : NULL; p; p = p->next) {
        if (!p->pin || p->status != JD_INST_ACTIVE || p->iid != iid->via.u64)
            continue;
        jd_gen *g = p->pin;
        gen_swap(e, g);
        fire_timer(e, &e->defs->journeys[p->journey], p, gen->via.u64, aft->via.u64);
        gen_swap(e, g);
        gen_fold(e, g);
        unpin_left(e, e->user);
        gens_collect(e);
        return;
    }
    const jd_journey *j = jd_defs_journey(e->defs, jn->via.str.ptr, jn->via.str.size);
    jd_instance *inst = j ? jd_user_instance(e->user, j->index, ky->via.str.ptr, ky->via.str.size) : NULL;
    fire_timer(e, j, inst && inst->iid == iid->via.u64 ? inst : NULL, gen->via.u64, aft->via.u64);
}

/* A timer of inst's stage entry gen, the j.after at aft of its stage. */
static void fire_timer(jd_engine *e, const jd_journey *j, jd_instance *inst, uint64_t gen, uint64_t aft)
{
    const jd_event *ev = e->ev;
    /* lazy cancel: a timer of a stage entry the person has left is dropped, never fired */
    if (!inst || inst->status != JD_INST_ACTIVE || inst->gen != gen || aft >= j->stages[inst->stage].nafter) {
        e->stats[JD_STAT_TIMERS_DROPPED]++;
        return;
    }
    const jd_trigger *t = j->stages[inst->stage].after[aft];
    /* j.after(...):when(fn): a timer whose condition is false does nothing; the person
     * stays in the stage */
    if (t->when_ref != LUA_NOREF && !when_ok(e, t, j, inst)) {
        e->stats[JD_STAT_TIMERS_DROPPED]++;
        return;
    }
    e->stats[JD_STAT_TIMERS_FIRED]++;
    inst->touched = e->event_seq;
    jd_engine_decide(e, JD_DEC_TIMER, j, inst->stage, "after %s", j->stages[inst->stage].after[aft]->delay_text);
    fire(e, j, inst, t, ev->timestamp);
}

/* The event for the person's instances pinned to earlier generations: each generation's
 * own triggers and hooks, no entries (new people get the current version). */
static void run_pinned(jd_engine *e, const jd_event *ev)
{
    jd_user *u = e->user;
    if (!u->npinned)
        return;
    for (size_t gi = 0; gi < e->ngens; gi++) {
        jd_gen *g = e->gens[gi];
        int any = 0;
        for (const jd_instance *in = u->pinned; in && !any; in = in->next)
            any = in->pin == g && in->status == JD_INST_ACTIVE;
        if (!any)
            continue;
        gen_swap(e, g);
        jd_trigger *merged[256];
        jd_tlist scratch = {merged, 0};
        const jd_tlist *tl = jd_defs_lookup(e->defs, ev->type, ev->name.p, ev->name.n, &scratch, 256);
        for (size_t i = 0; tl && i < tl->n;) {
            jd_trigger *t = tl->t[i];
            size_t k = i + 1;
            if (t->journey < 0) {
                i++;
                continue;
            }
            while (k < tl->n && tl->t[k]->journey == t->journey)
                k++;
            process_journey(e, &e->defs->journeys[t->journey], &tl->t[i], k - i, u->pinned, 0);
            i = k;
        }
        gen_swap(e, g);
        gen_fold(e, g);
    }
    unpin_left(e, u);
    gens_collect(e);
}

static void process_view(jd_engine *e, const jd_event *ev)
{
    if (ev->link) {
        process_link(e, ev);
        return;
    }
    if (ev->type != JD_EV_TIMER)
        e->stats[JD_STAT_EVENTS]++;
    /* the time-to-live counts from when an id was seen on the engine clock, not from the
     * event's own timestamp: a late retry of an old event is still a duplicate */
    if (!(ev->type == JD_EV_TIMER && guarded_by_instance(e->firing))) { /* else: timer_event */
        uint64_t ha = e->msg_ha, hb = e->msg_hb;
        if (ev->message_id.p != e->msg_hashed)
            jd_dedupe_hash(ev->message_id.p, ev->message_id.n, &ha, &hb);
        if (jd_dedupe_check_hash(&e->dedupe, ha, hb, jd_clock_now(&e->clock))) {
            e->msg_hashed = NULL;
            e->stats[JD_STAT_DUPLICATES]++;
            return;
        }
        if (e->persist)
            jd_persist_seen(e, ha, hb, jd_clock_now(&e->clock));
    }
    e->msg_hashed = NULL;
    int64_t now = jd_clock_now(&e->clock);
    if (ev->type != JD_EV_TIMER) {
        /* late: older than the clock (live, by more than a minute of transit) */
        int live = !e->clock.is_virtual || e->opts.live;
        if (ev->timestamp < now - (live ? 60000 : 0))
            e->stats[JD_STAT_LATE]++;
        if (!live)
            jd_clock_advance(&e->clock, ev->timestamp);
    }
    e->event_seq++;
    e->ev = ev;
    e->nfired = 0;
    msgpack_zone_clear(&e->zone);
    e->user_traits = NULL;
    size_t known = e->users.count;
    switch (ev->type) {
    case JD_EV_IDENTIFY:
        if (ev->anonymous_id.n && ev->user_id.p != ev->anonymous_id.p)
            link_alias(e, ev->anonymous_id, ev->user_id);
        e->user = resolve_user(e, ev);
        jd_user_merge_traits(e->user, jd_event_traits(ev), &e->traits_buf);
        break;
    case JD_EV_ALIAS:
        link_alias(e, ev->previous_id, ev->user_id);
        e->user = resolve_user(e, ev);
        break;
    default:
        /* a firing timer names its person: in memory while it is pending (a person with
         * timers is never evicted), so the people map would only find the same one */
        if (e->firing && ev->type == JD_EV_TIMER) {
            e->user = e->firing->user;
            jd_persist_touch(e, e->user);
        } else {
            e->user = resolve_user(e, ev);
        }
        break;
    }
    /* The checkpoint writes a person again only when something of theirs may change: a
     * track, page or screen that matches no trigger leaves a known person as they were
     * (and re-encoding them was most of the loop's work at each checkpoint). */
    int plain = ev->type == JD_EV_TRACK || ev->type == JD_EV_PAGE || ev->type == JD_EV_SCREEN;
    if (e->persist && (!plain || e->users.count != known))
        jd_persist_user_changed(e, e->user);
    if (ev->type == JD_EV_TIMER) {
        timer_event(e);
        return;
    }
    jd_trigger *merged[256];
    jd_tlist scratch = {merged, 0};
    const jd_tlist *tl = jd_defs_lookup(e->defs, ev->type, ev->name.p, ev->name.n, &scratch, 256);
    if (!tl || !tl->n) {
        e->stats[JD_STAT_UNMATCHED]++;
        if (e->persist && e->user->npinned)
            jd_persist_user_changed(e, e->user);
        run_pinned(e, ev);
        return;
    }
    if (e->persist)
        jd_persist_user_changed(e, e->user);
    for (size_t i = 0; i < tl->n;) {
        jd_trigger *t = tl->t[i];
        if (t->journey < 0) {
            run_rule(e, t);
            i++;
            continue;
        }
        size_t k = i + 1;
        while (k < tl->n && tl->t[k]->journey == t->journey)
            k++;
        process_journey(e, &e->defs->journeys[t->journey], &tl->t[i], k - i, e->user->instances, 1);
        i = k;
    }
    run_pinned(e, ev);
}

/* A timer's event, as a view (no record is written or read): type "timer", messageId
 * derived from the stage entry it belongs to (so it can fire only once), timestamp =
 * due time, event "JOURNEY/STAGE/after", properties {journey, key, iid, gen, after} —
 * the fields a timer record would have. The strings are copies in e->trec; the
 * properties live in props. Returns -1 when it cannot be an event (no user id). */
static int timer_view(jd_engine *e, const jd_timer *tm, msgpack_object_kv props[5], msgpack_object *pmap, char id[48],
                      jd_event *ev)
{
    const jd_journey *j = &(tm->pin ? tm->pin->defs : e->defs)->journeys[tm->journey];
    const jd_user *u = tm->user;
    const jd_instance *in = tm->inst;
    if (!u->idlen)
        return -1;
    jd_buf *k = &e->keybuf;
    jd_buf_reset(k);
    jd_buf_append(k, u->id, u->idlen);
    jd_buf_putc(k, 0);
    jd_buf_puts(k, j->name);
    jd_buf_putc(k, 0);
    jd_buf_append(k, in->key, in->keylen);
    jd_buf_putc(k, 0);
    jd_buf_put_u64(k, tm->iid);
    jd_buf_putc(k, '.');
    jd_buf_put_u64(k, tm->gen);
    jd_buf_putc(k, '.');
    jd_buf_put_u64(k, tm->after);
    memcpy(id, "timer:", 6);
    uint64_t ha, hb;
    jd_hash2(k->data, k->len, 0x510e527fade682d1ULL, 0x9b05688c2b3e6c1fULL, &ha, &hb);
    hex128(id + 6, ha, hb);
    const jd_stage *st = &j->stages[in->stage < (int)j->nstages ? in->stage : 0];
    /* user id, journey name, key, event name: offsets first, pointers once trec stops growing */
    jd_buf *b = &e->trec;
    jd_buf_reset(b);
    size_t jn = strlen(j->name), sn = strlen(st->name);
    jd_buf_append(b, u->id, u->idlen);
    jd_buf_append(b, in->key, in->keylen);
    jd_buf_append(b, j->name, jn);
    jd_buf_putc(b, '/');
    jd_buf_append(b, st->name, sn);
    jd_buf_append(b, "/after", 6);
    const char *p = b->data;
    const char *key = p + u->idlen, *name = key + in->keylen;
    static const msgpack_object_kv tmpl[5] = {
        {{.type = MSGPACK_OBJECT_STR, .via.str = {7, "journey"}}, {.type = MSGPACK_OBJECT_STR}},
        {{.type = MSGPACK_OBJECT_STR, .via.str = {3, "key"}}, {.type = MSGPACK_OBJECT_STR}},
        {{.type = MSGPACK_OBJECT_STR, .via.str = {3, "iid"}}, {.type = MSGPACK_OBJECT_POSITIVE_INTEGER}},
        {{.type = MSGPACK_OBJECT_STR, .via.str = {3, "gen"}}, {.type = MSGPACK_OBJECT_POSITIVE_INTEGER}},
        {{.type = MSGPACK_OBJECT_STR, .via.str = {5, "after"}}, {.type = MSGPACK_OBJECT_POSITIVE_INTEGER}},
    };
    memcpy(props, tmpl, sizeof tmpl);
    props[0].val.via.str.ptr = name;
    props[0].val.via.str.size = (uint32_t)jn;
    props[1].val.via.str.ptr = key;
    props[1].val.via.str.size = (uint32_t)in->keylen;
    props[2].val.via.u64 = tm->iid;
    props[3].val.via.u64 = tm->gen;
    props[4].val.via.u64 = tm->after;
    pmap->type = MSGPACK_OBJECT_MAP;
    pmap->via.map.ptr = props;
    pmap->via.map.size = 5;
    static const msgpack_object empty = {.type = MSGPACK_OBJECT_MAP};
    *ev = (jd_event){
        .type = JD_EV_TIMER,
        .user_id = {p, u->idlen},
        .has_user_id = 1,
        .name = {name, jn + 1 + sn + 6},
        .message_id = {id, 38},
        .timestamp = tm->due,
        .map = {[JD_MAP_PROPERTIES] = {pmap, NULL, 0},
                [JD_MAP_TRAITS] = {&empty, NULL, 0},
                [JD_MAP_CONTEXT] = {&empty, NULL, 0}},
    };
    return 0;
}

/* A timer fires for a person last seen days ago: their lines are in no cache. The
 * timers a few places behind the one just popped, in its lane, fire soon: their person
 * and stage entry are loaded now (4 on), then what the person points to (2 on, whose
 * person was loaded two pops ago), so that those misses overlap. */
static void prefetch_ahead(const jd_timers *t)
{
    const jd_timer *far = jd_timers_ahead(t, 4), *near = jd_timers_ahead(t, 2);
    if (far) {
        __builtin_prefetch(far->user);
        __builtin_prefetch(far->inst);
    }
    if (near) {
        __builtin_prefetch(near->user->traits.data);
        __builtin_prefetch(near->user->instances);
    }
}

/* Timers overdue by more than this when the clock reaches them count as catching up
 * after downtime (or a stall), and are reported. */
#define OVERDUE_NOTICE_MS 60000

void jd_engine_advance(jd_engine *e, int64_t t)
{
    const jd_timer *top;
    uint64_t overdue_fired = 0, overdue_skipped = 0;
    /* lateness is real only on the daemon's clock: a replay's virtual clock jumps over
     * the gaps between events, and a timer in a gap fires at its own due time */
    int live = e->opts.live;
    int64_t limit = live ? e->opts.overdue_limit_ms : 0;
    for (;;) {
        if (e->persist)
            jd_persist_window(e, t);
        top = jd_timers_peek(&e->timers);
        if (!top || top->due > t)
            break;
        jd_timer tm;
        jd_timers_pop(&e->timers, &tm);
        prefetch_ahead(&e->timers);
        tm.user->timers--;
        if (tm.pin) /* still alive: collected only after this timer's record is built */
            tm.pin->timers--;
        if (e->persist)
            jd_persist_timer_done(e, &tm);
        /* cheap pre-check: a stale stage entry never needs a record */
        if (tm.inst->status != JD_INST_ACTIVE || tm.inst->iid != tm.iid || tm.inst->gen != tm.gen) {
            e->stats[JD_STAT_TIMERS_DROPPED]++;
            continue;
        }
        int64_t late = t - tm.due;
        if (limit > 0 && late > limit) {
            /* policy: a follow-up far past its moment is skipped, not sent late */
            overdue_skipped++;
            e->stats[JD_STAT_TIMERS_SKIPPED]++;
            continue;
        }
        if (live && late > OVERDUE_NOTICE_MS)
            overdue_fired++;
        jd_clock_advance(&e->clock, tm.due);
        msgpack_object_kv props[5];
        msgpack_object pmap;
        char id[48];
        jd_event ev;
        if (timer_view(e, &tm, props, &pmap, id, &ev))
            continue;
        e->firing = &tm;
        process_view(e, &ev);
        e->firing = NULL;
        check_alerts(e);
        gens_collect(e);
    }
    gens_collect(e);
    jd_clock_advance(&e->clock, t);
    check_alerts(e);
    /* a catch-up is reported at once, then at most once a minute with what fired since:
     * a backlog of old events fires timers at every record, and a line each would flood
     * the log (and cost a flush each) */
    e->overdue_fired += overdue_fired;
    e->overdue_skipped += overdue_skipped;
    if ((e->overdue_fired || e->overdue_skipped) &&
        (!e->overdue_noticed_at || t - e->overdue_noticed_at >= OVERDUE_NOTICE_MS)) {
        char when[40];
        jd_time_format(t, when);
        jd_engine_log(e, "warn",
                      "timers overdue at %s: %llu fired late, %llu skipped (more than %lld ms overdue; "
                      "overdue_limit)",
                      when, (unsigned long long)e->overdue_fired, (unsigned long long)e->overdue_skipped,
                      (long long)limit);
        e->overdue_fired = e->overdue_skipped = 0;
        e->overdue_noticed_at = t;
    }
}

/* One input, on the clock: due timers fire before the event, and timers a late event
 * made due fire right after it. */
static void process_input(jd_engine *e, const jd_event *ev)
{
    if (e->opts.live) {
        /* the daemon's time is when records arrived; events never move it */
        if (ev->received_at > 0)
            jd_engine_advance(e, ev->received_at);
        if (ev->type == JD_EV_TICK)
            return;
    } else if (e->clock.is_virtual && ev->type != JD_EV_TIMER) {
        jd_engine_advance(e, ev->timestamp);
    }
    if (ev->type == JD_EV_TICK)
        return;
    process_view(e, ev);
    if (e->clock.is_virtual)
        jd_engine_advance(e, jd_clock_now(&e->clock));
    check_alerts(e);
}

int jd_engine_process(jd_engine *e, const void *record, size_t len, jd_error *err)
{
    /* The first things processing looks up are random reads: the messageId's slot in the
     * dedupe set, the person's slot in the people map (and, for an anonymous id, in the
     * aliases). Started from a glance at the record's leading fields, they overlap with
     * reading it (the messageId's hash is kept for the check). */
    jd_event_peek pk;
    jd_event_peek_ids(record, len, &pk);
    if (pk.message_id.n) {
        jd_dedupe_hash(pk.message_id.p, pk.message_id.n, &e->msg_ha, &e->msg_hb);
        jd_dedupe_prefetch(&e->dedupe, e->msg_ha);
    }
    jd_str who = pk.user_id.n ? pk.user_id : pk.anonymous_id;
    if (who.n) {
        e->who_hashed = who.p;
        e->who_n = who.n;
        e->who_h = jd_hash(who.p, who.n, 0);
        jd_map_prefetch(&e->users, e->who_h);
        if (!pk.user_id.n)
            jd_map_prefetch(&e->aliases, e->who_h);
    }
    /* a timer this event's time makes due fires first: its person and stage entry are
     * the first things its firing reads */
    const jd_timer *top = jd_timers_peek(&e->timers);
    if (top && pk.has_timestamp && top->due <= pk.timestamp) {
        __builtin_prefetch(top->user);
        __builtin_prefetch(top->inst);
    }
    msgpack_zone_clear(&e->in_zone);
    jd_event ev;
    if (jd_event_read(record, len, &e->in_zone, &ev)) {
        e->who_hashed = NULL;
        e->stats[JD_STAT_INVALID]++;
        if (err)
            snprintf(err->text, sizeof err->text, "not an event record");
        return -1;
    }
    if (ev.message_id.p != pk.message_id.p || ev.message_id.n != pk.message_id.n) {
        jd_dedupe_hash(ev.message_id.p, ev.message_id.n, &e->msg_ha, &e->msg_hb);
        jd_dedupe_prefetch(&e->dedupe, e->msg_ha);
    }
    e->msg_hashed = ev.message_id.p;
    process_input(e, &ev);
    e->msg_hashed = NULL;
    e->who_hashed = NULL; /* the record's bytes: not to be matched by address later */
    if (e->clock.is_virtual && !e->opts.live)
        jd_heap_prefault(); /* replay: one thread, on the main heap */
    return 0;
}

/* JSON text to a msgpack object in the input zone (valid until the next input). */
static int parse_json(jd_engine *e, const char *json, size_t len, msgpack_object *root, jd_error *err)
{
    jd_buf_reset(&e->scratch);
    if (jd_json_to_msgpack(e->jr, json, len, &e->scratch, err->text, sizeof err->text))
        return -1;
    msgpack_zone_clear(&e->in_zone);
    if (jd_mp_unpack(e->scratch.data, e->scratch.len, &e->in_zone, root)) {
        snprintf(err->text, sizeof err->text, "internal: cannot read converted JSON");
        return -1;
    }
    return 0;
}

int jd_engine_normalize(jd_engine *e, const char *json, size_t len, int64_t default_ts, const char *default_id,
                        char **out, size_t *outlen, jd_error *err)
{
    msgpack_object root;
    if (parse_json(e, json, len, &root, err))
        return -1;
    jd_buf_reset(&e->rec);
    if (jd_event_normalize(&root, default_ts, default_id, &e->rec, err->text, sizeof err->text))
        return -1;
    *out = jd_xmalloc(e->rec.len);
    memcpy(*out, e->rec.data, e->rec.len);
    *outlen = e->rec.len;
    return 0;
}

int jd_engine_ingest_json(jd_engine *e, const char *json, size_t len, const char *default_id, jd_error *err)
{
    msgpack_object root;
    if (parse_json(e, json, len, &root, err)) {
        e->stats[JD_STAT_INVALID]++;
        return -1;
    }
    /* the view reads the converted JSON directly: the same fields a record would give,
     * without writing and re-reading one (a log-backed caller normalises to a record) */
    jd_norm_opts o = {.default_ts = jd_clock_now(&e->clock), .default_id = default_id};
    jd_event ev;
    jd_event_ids ids;
    if (jd_event_prepare(&root, &o, &ev, ids, err->text, sizeof err->text) < 0) {
        e->stats[JD_STAT_INVALID]++;
        return -1;
    }
    process_input(e, &ev);
    return 0;
}
