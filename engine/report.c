/* report: read-only views of an engine — the funnel text, the script description for
 * `check`, JSON for the admin API (a user, their decision trace, the journeys),
 * Prometheus metrics, and j.config values. Uses engine_internal, json, msgpack-c. */
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"
#include "outbox.h"

char *jd_engine_funnel_text(const jd_engine *e)
{
    jd_buf b;
    jd_buf_init(&b);
    for (size_t i = 0; i < e->defs->njourneys; i++) {
        const jd_journey *j = &e->defs->journeys[i];
        const jd_journey_count *c = &e->counts[i];
        double conv = c->entered ? 100.0 * (double)c->converted / (double)c->entered : 0;
        jd_buf_printf(&b, "journey %s: entered %llu, active %llu, converted %llu (%.1f%%), exited %llu\n", j->name,
                      (unsigned long long)c->entered, (unsigned long long)c->active, (unsigned long long)c->converted,
                      conv, (unsigned long long)c->exited);
        jd_buf_printf(&b, "  %-24s %9s %9s %9s %9s %9s %9s\n", "stage", "entered", "now", "moved_on", "timed_out",
                      "converted", "exited");
        for (size_t s = 0; s < j->nstages; s++) {
            const jd_stage_count *sc = &c->stages[s];
            jd_buf_printf(&b, "  %-24s %9llu %9llu %9llu %9llu %9llu %9llu\n", j->stages[s].name,
                          (unsigned long long)sc->entered, (unsigned long long)sc->now,
                          (unsigned long long)sc->moved_on, (unsigned long long)sc->timed_out,
                          (unsigned long long)sc->converted, (unsigned long long)sc->exited);
        }
    }
    jd_buf_cstr(&b);
    return b.data;
}

static void describe_trigger(jd_buf *b, const jd_trigger *t, const jd_journey *j)
{
    if (t->is_after)
        jd_buf_printf(b, "after %s", t->delay_text);
    else if (t->type == JD_EV_TRACK)
        jd_buf_printf(b, "on \"%s\"", t->name);
    else
        jd_buf_printf(b, "%s%s%s", jd_event_type_name(t->type), t->name ? " " : "", t->name ? t->name : "");
    if (t->npreds)
        jd_buf_printf(b, " where(%zu)", t->npreds);
    if (t->when_ref != LUA_NOREF)
        jd_buf_puts(b, " when()");
    if (t->fn_ref != LUA_NOREF)
        jd_buf_puts(b, " fn()");
    if (t->action == JD_ACT_GO && j)
        jd_buf_printf(b, " -> %s", j->stages[t->target].name);
    else if (t->action == JD_ACT_EXIT)
        jd_buf_puts(b, " -> exit");
}

/* One line per trigger, each behind prefix. */
static void describe_list(jd_buf *b, const char *prefix, jd_trigger *const *t, size_t n, const jd_journey *j)
{
    for (size_t k = 0; k < n; k++) {
        jd_buf_puts(b, prefix);
        describe_trigger(b, t[k], j);
        jd_buf_putc(b, '\n');
    }
}

char *jd_engine_describe(const jd_engine *e)
{
    jd_buf b;
    jd_buf_init(&b);
    const jd_defs *d = e->defs;
    for (size_t i = 0; i < d->nchannels; i++)
        jd_buf_printf(&b, "channel %s (%s)\n", d->channels[i].name, d->channels[i].type);
    for (size_t i = 0; i < d->njourneys; i++) {
        const jd_journey *j = &d->journeys[i];
        jd_buf_printf(&b, "journey %s  version %016llx  %s\n", j->name, (unsigned long long)j->version, j->loc);
        jd_buf_puts(&b, "  entry: ");
        describe_trigger(&b, j->entry, j);
        jd_buf_printf(&b, "  (starts in %s)\n", j->stages[j->entry_stage].name);
        describe_list(&b, "  goal: ", j->goals, j->ngoals, j);
        describe_list(&b, "  exit: ", j->exits, j->nexits, j);
        if (j->reentry == JD_REENTRY_COOLDOWN)
            jd_buf_printf(&b, "  reentry: after %lld ms\n", (long long)j->cooldown_ms);
        else
            jd_buf_printf(&b, "  reentry: %s\n", j->reentry == JD_REENTRY_NEVER ? "never" : "always");
        if (j->key)
            jd_buf_printf(&b, "  key: %s\n", j->key);
        for (size_t s = 0; s < j->nstages; s++) {
            const jd_stage *st = &j->stages[s];
            jd_buf_printf(&b, "  stage %s%s\n", st->name, st->enter_ref != LUA_NOREF ? "  enter()" : "");
            describe_list(&b, "    ", st->on, st->non, j);
            describe_list(&b, "    ", st->after, st->nafter, j);
        }
    }
    for (size_t i = 0; i < d->ntriggers; i++) {
        const jd_trigger *t = d->triggers[i];
        if (t->role != JD_ROLE_RULE)
            continue;
        jd_buf_puts(&b, "rule ");
        describe_trigger(&b, t, NULL);
        jd_buf_printf(&b, "  %s\n", t->loc);
    }
    jd_buf_cstr(&b);
    return b.data;
}

/* ---------------------------------------------------------------- JSON */

static void pk_time(msgpack_packer *pk, int64_t ms)
{
    char t[40];
    jd_mp_pack_str(pk, t, jd_time_format(ms, t));
}

/* Turns a packed msgpack value into malloc'd JSON text. */
static char *to_json(const jd_engine *e, jd_buf *mp)
{
    jd_buf out;
    jd_buf_init(&out);
    jd_json_write_msgpack(e->jw, mp->data, mp->len, &out);
    jd_buf_free(mp);
    jd_buf_cstr(&out);
    return out.data;
}

/* An instance's key, or nil when the journey is not keyed. */
static void pack_key_or_nil(msgpack_packer *pk, const jd_instance *i)
{
    if (i->keylen)
        jd_mp_pack_str(pk, i->key, i->keylen);
    else
        msgpack_pack_nil(pk);
}
static const char *status_name(jd_inst_status s)
{
    return s == JD_INST_ACTIVE ? "active" : s == JD_INST_CONVERTED ? "converted" : "exited";
}

/* A person's recent decisions, oldest first: [{time, kind, journey, stage, detail}]
 * (shared by /v1/users/ID and /v1/users/ID/trace). */
static void pack_decisions(msgpack_packer *pk, const jd_engine *e, const jd_user *u)
{
    const jd_defs *d = e->defs;
    msgpack_pack_array(pk, u->ndecisions);
    for (int k = 0; k < u->ndecisions; k++) {
        jd_decision dcv;
        const jd_decision *dc = jd_user_decision(u, k, &dcv); /* oldest first */
        msgpack_pack_map(pk, 5);
        jd_mp_pack_cstr(pk, "time");
        pk_time(pk, dc->time);
        jd_mp_pack_cstr(pk, "kind");
        jd_mp_pack_cstr(pk, jd_decision_kind_name(dc->kind));
        jd_mp_pack_cstr(pk, "journey");
        if (dc->journey >= 0 && (size_t)dc->journey < d->njourneys)
            jd_mp_pack_cstr(pk, d->journeys[dc->journey].name);
        else
            msgpack_pack_nil(pk);
        jd_mp_pack_cstr(pk, "stage");
        if (dc->journey >= 0 && (size_t)dc->journey < d->njourneys && dc->stage >= 0)
            jd_mp_pack_cstr(pk, d->journeys[dc->journey].stages[dc->stage].name);
        else
            msgpack_pack_nil(pk);
        jd_mp_pack_cstr(pk, "detail");
        jd_mp_pack_cstr(pk, dc->detail);
    }
}

/* A person's instances, then those pinned to an earlier generation (which index its defs). */
static const jd_instance *pinned_from(const jd_instance *i)
{
    while (i && !i->pin)
        i = i->next;
    return i;
}

static const jd_instance *first_inst(const jd_user *u)
{
    return u->instances ? u->instances : pinned_from(u->pinned);
}

static const jd_instance *next_inst(const jd_user *u, const jd_instance *i)
{
    if (i->pin)
        return pinned_from(i->next);
    return i->next ? i->next : pinned_from(u->pinned);
}

static const jd_defs *inst_defs(const jd_engine *e, const jd_instance *i)
{
    return i->pin ? i->pin->defs : e->defs;
}

char *jd_engine_user_json(const jd_engine *e, const char *id, size_t n)
{
    /* reading a person in from the store changes no state: the cache is not the model */
    const jd_user *u = jd_engine_find_user((jd_engine *)e, id, n);
    if (!u)
        return NULL;
    jd_buf mp;
    jd_buf_init(&mp);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &mp, jd_buf_msgpack_write);
    msgpack_pack_map(&pk, 7);
    jd_mp_pack_cstr(&pk, "id");
    jd_mp_pack_str(&pk, u->id, u->idlen);
    jd_mp_pack_cstr(&pk, "traits");
    if (u->traits.len)
        jd_buf_append(&mp, u->traits.data, u->traits.len);
    else
        msgpack_pack_map(&pk, 0);
    jd_mp_pack_cstr(&pk, "segments");
    msgpack_pack_array(&pk, u->nsegments);
    for (size_t i = 0; i < u->nsegments; i++)
        jd_mp_pack_cstr(&pk, u->segments[i]);
    jd_mp_pack_cstr(&pk, "score");
    msgpack_pack_double(&pk, u->score);

    size_t ninst = 0;
    for (const jd_instance *i = first_inst(u); i; i = next_inst(u, i))
        ninst++;
    jd_mp_pack_cstr(&pk, "journeys");
    msgpack_pack_array(&pk, ninst);
    for (const jd_instance *i = first_inst(u); i; i = next_inst(u, i)) {
        const jd_journey *j = &inst_defs(e, i)->journeys[i->journey];
        msgpack_pack_map(&pk, 9);
        jd_mp_pack_cstr(&pk, "journey");
        jd_mp_pack_cstr(&pk, j->name);
        jd_mp_pack_cstr(&pk, "pinned"); /* runs the earlier version it entered with */
        if (i->pin)
            msgpack_pack_true(&pk);
        else
            msgpack_pack_false(&pk);
        char v[24];
        snprintf(v, sizeof v, "%016llx", (unsigned long long)i->version);
        jd_mp_pack_cstr(&pk, "version"); /* the one it entered with (or migrated to); 0: unknown */
        jd_mp_pack_cstr(&pk, v);
        jd_mp_pack_cstr(&pk, "key");
        pack_key_or_nil(&pk, i);
        jd_mp_pack_cstr(&pk, "status");
        jd_mp_pack_cstr(&pk, status_name(i->status));
        jd_mp_pack_cstr(&pk, "stage");
        jd_mp_pack_cstr(&pk, j->stages[i->stage].name);
        jd_mp_pack_cstr(&pk, "entered_at");
        pk_time(&pk, i->entered_at);
        jd_mp_pack_cstr(&pk, "stage_entered_at");
        pk_time(&pk, i->stage_entered_at);
        jd_mp_pack_cstr(&pk, "entries");
        msgpack_pack_uint32(&pk, i->entries);
    }
    /* pending timers follow from the stage entry: each j.after of the current stage
     * that has not fired yet */
    int64_t now = jd_clock_now(&e->clock);
    size_t npend = 0;
    for (const jd_instance *i = first_inst(u); i; i = next_inst(u, i)) {
        if (i->status != JD_INST_ACTIVE)
            continue;
        const jd_stage *st = &inst_defs(e, i)->journeys[i->journey].stages[i->stage];
        for (size_t k = 0; k < st->nafter; k++)
            npend += i->stage_entered_at + st->after[k]->delay_ms > now;
    }
    jd_mp_pack_cstr(&pk, "pending_timers");
    msgpack_pack_array(&pk, npend);
    for (const jd_instance *i = first_inst(u); i; i = next_inst(u, i)) {
        if (i->status != JD_INST_ACTIVE)
            continue;
        const jd_journey *j = &inst_defs(e, i)->journeys[i->journey];
        const jd_stage *st = &j->stages[i->stage];
        for (size_t k = 0; k < st->nafter; k++) {
            int64_t due = i->stage_entered_at + st->after[k]->delay_ms;
            if (due <= now)
                continue;
            msgpack_pack_map(&pk, 5);
            jd_mp_pack_cstr(&pk, "journey");
            jd_mp_pack_cstr(&pk, j->name);
            jd_mp_pack_cstr(&pk, "key");
            pack_key_or_nil(&pk, i);
            jd_mp_pack_cstr(&pk, "stage");
            jd_mp_pack_cstr(&pk, st->name);
            jd_mp_pack_cstr(&pk, "after");
            jd_mp_pack_cstr(&pk, st->after[k]->delay_text);
            jd_mp_pack_cstr(&pk, "due");
            pk_time(&pk, due);
        }
    }
    jd_mp_pack_cstr(&pk, "decisions");
    pack_decisions(&pk, e, u);
    return to_json(e, &mp);
}

char *jd_engine_user_trace_json(const jd_engine *e, const char *id, size_t n)
{
    const jd_user *u = jd_engine_find_user((jd_engine *)e, id, n);
    if (!u)
        return NULL;
    jd_buf mp;
    jd_buf_init(&mp);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &mp, jd_buf_msgpack_write);
    msgpack_pack_map(&pk, 2);
    jd_mp_pack_cstr(&pk, "id");
    jd_mp_pack_str(&pk, u->id, u->idlen);
    jd_mp_pack_cstr(&pk, "decisions");
    pack_decisions(&pk, e, u);
    return to_json(e, &mp);
}

static void pack_journey_counts(msgpack_packer *pk, const jd_journey *j, const jd_journey_count *c)
{
    char v[24];
    snprintf(v, sizeof v, "%016llx", (unsigned long long)j->version);
    jd_mp_pack_cstr(pk, "name");
    jd_mp_pack_cstr(pk, j->name);
    jd_mp_pack_cstr(pk, "version");
    jd_mp_pack_cstr(pk, v);
    jd_mp_pack_cstr(pk, "entered");
    msgpack_pack_uint64(pk, c->entered);
    jd_mp_pack_cstr(pk, "active");
    msgpack_pack_uint64(pk, c->active);
    jd_mp_pack_cstr(pk, "converted");
    msgpack_pack_uint64(pk, c->converted);
    jd_mp_pack_cstr(pk, "exited");
    msgpack_pack_uint64(pk, c->exited);
}

char *jd_engine_journeys_json(const jd_engine *e)
{
    jd_buf mp;
    jd_buf_init(&mp);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &mp, jd_buf_msgpack_write);
    msgpack_pack_map(&pk, 1);
    jd_mp_pack_cstr(&pk, "journeys");
    msgpack_pack_array(&pk, e->defs->njourneys);
    for (size_t i = 0; i < e->defs->njourneys; i++) {
        const jd_journey *j = &e->defs->journeys[i];
        msgpack_pack_map(&pk, 7);
        pack_journey_counts(&pk, j, &e->counts[i]);
        jd_mp_pack_cstr(&pk, "stages");
        msgpack_pack_array(&pk, j->nstages);
        for (size_t s = 0; s < j->nstages; s++)
            jd_mp_pack_cstr(&pk, j->stages[s].name);
    }
    return to_json(e, &mp);
}

char *jd_engine_journey_json(const jd_engine *e, const char *name, size_t n)
{
    const jd_journey *j = jd_defs_journey(e->defs, name, n);
    if (!j)
        return NULL;
    const jd_journey_count *c = &e->counts[j->index];
    jd_buf mp;
    jd_buf_init(&mp);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &mp, jd_buf_msgpack_write);
    msgpack_pack_map(&pk, 7);
    pack_journey_counts(&pk, j, c);
    jd_mp_pack_cstr(&pk, "stages");
    msgpack_pack_array(&pk, j->nstages);
    for (size_t s = 0; s < j->nstages; s++) {
        const jd_stage_count *sc = &c->stages[s];
        msgpack_pack_map(&pk, 7);
        jd_mp_pack_cstr(&pk, "name");
        jd_mp_pack_cstr(&pk, j->stages[s].name);
        jd_mp_pack_cstr(&pk, "entered");
        msgpack_pack_uint64(&pk, sc->entered);
        jd_mp_pack_cstr(&pk, "now");
        msgpack_pack_uint64(&pk, sc->now);
        jd_mp_pack_cstr(&pk, "moved_on");
        msgpack_pack_uint64(&pk, sc->moved_on);
        jd_mp_pack_cstr(&pk, "timed_out");
        msgpack_pack_uint64(&pk, sc->timed_out);
        jd_mp_pack_cstr(&pk, "converted");
        msgpack_pack_uint64(&pk, sc->converted);
        jd_mp_pack_cstr(&pk, "exited");
        msgpack_pack_uint64(&pk, sc->exited);
    }
    return to_json(e, &mp);
}

/* ---------------------------------------------------------------- metrics */

/* Prometheus label values escape backslash, quote and newline. */
static void label(jd_buf *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            jd_buf_putc(b, '\\');
        if (*s == '\n') {
            jd_buf_puts(b, "\\n");
            continue;
        }
        jd_buf_putc(b, *s);
    }
}

static void counter(jd_buf *b, const char *name, const char *help, const char *type, uint64_t v)
{
    jd_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n%s %llu\n", name, help, name, type, name, (unsigned long long)v);
}

char *jd_engine_metrics(const jd_engine *e)
{
    jd_buf b;
    jd_buf_init(&b);
    const uint64_t *st = e->stats;
    counter(&b, "journeyd_events_processed_total", "Events processed (after normalisation).", "counter",
            st[JD_STAT_EVENTS] - st[JD_STAT_DUPLICATES]);
    counter(&b, "journeyd_events_duplicate_total", "Events dropped as duplicate messageIds.", "counter",
            st[JD_STAT_DUPLICATES]);
    counter(&b, "journeyd_events_unmatched_total", "Events that matched no trigger (never entered Lua).", "counter",
            st[JD_STAT_UNMATCHED]);
    counter(&b, "journeyd_events_late_total", "Events older than the engine clock.", "counter", st[JD_STAT_LATE]);
    counter(&b, "journeyd_lua_calls_total", "Calls into Lua (hooks and when predicates).", "counter",
            st[JD_STAT_LUA_CALLS]);
    jd_buf_puts(&b, "# HELP journeyd_lua_errors_total Lua errors, by rule (the failing hooks' actions were not "
                    "taken).\n# TYPE journeyd_lua_errors_total counter\n");
    size_t it = 0;
    const jd_map_slot *slot;
    while (jd_map_next(&e->rule_errors, &it, &slot)) {
        jd_buf_puts(&b, "journeyd_lua_errors_total{rule=\"");
        label(&b, slot->key);
        jd_buf_printf(&b, "\"} %llu\n", (unsigned long long)((const jd_rule_stat *)slot->value)->errors);
    }
    jd_buf_puts(&b, "# HELP journeyd_rule_quarantined Rules that kept failing and no longer run (until a reload).\n"
                    "# TYPE journeyd_rule_quarantined gauge\n");
    it = 0;
    while (jd_map_next(&e->rule_errors, &it, &slot)) {
        if (!((const jd_rule_stat *)slot->value)->quarantined)
            continue;
        jd_buf_puts(&b, "journeyd_rule_quarantined{rule=\"");
        label(&b, slot->key);
        jd_buf_puts(&b, "\"} 1\n");
    }
    uint64_t pinned_mem = 0, pinned_people = 0;
    for (size_t i = 0; i < e->ngens; i++) {
        pinned_mem += jd_script_memory(e->gens[i]->script);
        pinned_people += e->gens[i]->pinned;
    }
    counter(&b, "journeyd_lua_memory_bytes", "Memory used by the Lua states (the current one and pinned versions').",
            "gauge", jd_script_memory(e->script) + pinned_mem);
    counter(&b, "journeyd_pinned_versions", "Earlier script versions kept for people pinned to them.", "gauge",
            e->ngens);
    counter(&b, "journeyd_pinned_people", "Active journey instances pinned to an earlier version.", "gauge",
            pinned_people);
    counter(&b, "journeyd_timers_pending", "Timers scheduled and not yet due.", "gauge", e->timers.n);
    counter(&b, "journeyd_timers_fired_total", "Timers that fired.", "counter", st[JD_STAT_TIMERS_FIRED]);
    counter(&b, "journeyd_timers_dropped_total", "Timers dropped because the person had moved on.", "counter",
            st[JD_STAT_TIMERS_DROPPED]);
    counter(&b, "journeyd_timers_skipped_total", "Timers skipped for being overdue past overdue_limit.", "counter",
            st[JD_STAT_TIMERS_SKIPPED]);
    counter(&b, "journeyd_users", "People known to the engine.", "gauge", e->users.count);
    jd_persist_metrics(e, &b);
    jd_buf_puts(&b,
                "# HELP journeyd_actions_total Actions decided, by channel.\n# TYPE journeyd_actions_total counter\n");
    for (size_t i = 0; i < e->defs->nchannels; i++) {
        jd_buf_puts(&b, "journeyd_actions_total{channel=\"");
        label(&b, e->defs->channels[i].name);
        jd_buf_printf(&b, "\"} %llu\n", (unsigned long long)e->channel_actions[i]);
    }
    static const char *const held[2][2] = {{"deferred", "Actions deferred by a send window, by channel."},
                                           {"suppressed", "Sends suppressed by a frequency cap, by channel."}};
    for (int k = 0; k < 2; k++) {
        jd_buf_printf(&b, "# HELP journeyd_actions_%s_total %s\n# TYPE journeyd_actions_%s_total counter\n", held[k][0],
                      held[k][1], held[k][0]);
        for (size_t i = 0; i < e->defs->nchannels; i++) {
            const char *name = e->defs->channels[i].name;
            const uint64_t *c = jd_map_get(&e->channel_held, name, strlen(name));
            jd_buf_printf(&b, "journeyd_actions_%s_total{channel=\"", held[k][0]);
            label(&b, name);
            jd_buf_printf(&b, "\"} %llu\n", (unsigned long long)(c ? c[k] : 0));
        }
    }
    static const char *const jn[] = {"entered", "converted", "exited"};
    for (int k = 0; k < 3; k++) {
        jd_buf_printf(&b,
                      "# HELP journeyd_journey_%s_total People who %s a journey.\n"
                      "# TYPE journeyd_journey_%s_total counter\n",
                      jn[k], jn[k], jn[k]);
        for (size_t i = 0; i < e->defs->njourneys; i++) {
            const jd_journey_count *c = &e->counts[i];
            uint64_t v = k == 0 ? c->entered : k == 1 ? c->converted : c->exited;
            jd_buf_printf(&b, "journeyd_journey_%s_total{journey=\"", jn[k]);
            label(&b, e->defs->journeys[i].name);
            jd_buf_printf(&b, "\"} %llu\n", (unsigned long long)v);
        }
    }
    jd_buf_puts(&b, "# HELP journeyd_stage_people People in a stage now.\n# TYPE journeyd_stage_people gauge\n");
    for (size_t i = 0; i < e->defs->njourneys; i++) {
        const jd_journey *j = &e->defs->journeys[i];
        for (size_t s = 0; s < j->nstages; s++) {
            jd_buf_puts(&b, "journeyd_stage_people{journey=\"");
            label(&b, j->name);
            jd_buf_puts(&b, "\",stage=\"");
            label(&b, j->stages[s].name);
            jd_buf_printf(&b, "\"} %llu\n", (unsigned long long)e->counts[i].stages[s].now);
        }
    }
    jd_buf_puts(&b, "# HELP journeyd_alerts_total Journey alerts that fired or recovered (stage \"\": the whole "
                    "journey).\n# TYPE journeyd_alerts_total counter\n");
    it = 0;
    while (jd_map_next(&e->alert_counts, &it, &slot)) { /* key: journey NUL stage NUL edge */
        const char *stage = slot->key + strlen(slot->key) + 1, *edge = stage + strlen(stage) + 1;
        jd_buf_puts(&b, "journeyd_alerts_total{journey=\"");
        label(&b, slot->key);
        jd_buf_puts(&b, "\",stage=\"");
        label(&b, stage);
        jd_buf_printf(&b, "\",edge=\"%s\"} %llu\n", edge, (unsigned long long)*(const uint64_t *)slot->value);
    }
    jd_buf_cstr(&b);
    return b.data;
}

/* ---------------------------------------------------------------- config */

/* A config value as text, interned in the engine (stable while it lives). */
static const char *config_text(const jd_engine *e, const msgpack_object *o)
{
    char tmp[64];
    const char *p = tmp;
    size_t n;
    switch (o->type) {
    case MSGPACK_OBJECT_STR:
        p = o->via.str.ptr;
        n = o->via.str.size;
        break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        n = (size_t)snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)o->via.u64);
        break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: n = (size_t)snprintf(tmp, sizeof tmp, "%lld", (long long)o->via.i64); break;
    case MSGPACK_OBJECT_FLOAT64:
    case MSGPACK_OBJECT_FLOAT32: n = (size_t)snprintf(tmp, sizeof tmp, "%g", o->via.f64); break;
    case MSGPACK_OBJECT_BOOLEAN: n = (size_t)snprintf(tmp, sizeof tmp, "%s", o->via.boolean ? "true" : "false"); break;
    default: return NULL;
    }
    jd_map *cache = (jd_map *)&e->config_cache;
    char *have = jd_map_get(cache, p, n);
    if (have)
        return have;
    char *copy = jd_strndup(p, n);
    jd_map_put(cache, p, n, copy);
    return copy;
}

const char *jd_engine_config(const jd_engine *e, const char *key)
{
    const msgpack_object *o = jd_mp_get(&e->config_obj, key, strlen(key));
    return o ? config_text(e, o) : NULL;
}

const char *jd_engine_config_item(const jd_engine *e, const char *key, size_t i)
{
    const msgpack_object *o = jd_mp_get(&e->config_obj, key, strlen(key));
    if (!o)
        return NULL;
    if (o->type == MSGPACK_OBJECT_ARRAY)
        return i < o->via.array.size ? config_text(e, &o->via.array.ptr[i]) : NULL;
    return i == 0 ? config_text(e, o) : NULL;
}

/* ---------------------------------------------------------------- check --against */

typedef struct against {
    jd_map counts;   /* "journey\0stage\0" + 8 version bytes -> uint64_t active people */
    jd_map journeys; /* journey name -> stored_journey: the last checkpoint's definition */
} against;

typedef struct stored_journey {
    uint64_t version;
    jd_buf stages; /* names, NUL-terminated, in a row */
} stored_journey;

static void free_stored_journey(void *p)
{
    stored_journey *sj = p;
    jd_buf_free(&sj->stages);
    free(sj);
}

static void note_journey(const jd_stored_journey *sj, void *ud)
{
    against *a = ud;
    stored_journey *x = jd_xcalloc(1, sizeof *x);
    x->version = sj->version;
    jd_buf_init(&x->stages);
    for (size_t i = 0; i < sj->nstages; i++) {
        jd_buf_append(&x->stages, sj->stages[i], sj->stagen[i]);
        jd_buf_putc(&x->stages, '\0');
    }
    stored_journey *old = jd_map_put(&a->journeys, sj->name, sj->namen, x);
    if (old)
        free_stored_journey(old);
}

static int stored_has_stage(const stored_journey *sj, const char *name)
{
    for (size_t off = 0; sj && off < sj->stages.len; off += strlen(sj->stages.data + off) + 1)
        if (strcmp(sj->stages.data + off, name) == 0)
            return 1;
    return 0;
}

static int count_active(const jd_stored_instance *si, void *ud)
{
    against *a = ud;
    if (si->status != JD_INST_ACTIVE)
        return 0;
    jd_buf k;
    jd_buf_init(&k);
    jd_buf_append(&k, si->journey, si->journeyn);
    jd_buf_putc(&k, '\0');
    if (si->stage)
        jd_buf_append(&k, si->stage, si->stagen);
    jd_buf_putc(&k, '\0');
    jd_buf_append(&k, &si->version, sizeof si->version);
    uint64_t *n = jd_map_get(&a->counts, k.data, k.len);
    if (!n) {
        n = jd_xcalloc(1, sizeof *n);
        jd_map_put(&a->counts, k.data, k.len, n);
    }
    (*n)++;
    jd_buf_free(&k);
    return 0;
}

/* One stored (stage, version) group of a journey's active people and what a reload to j
 * does to them. */
static void against_stage(jd_buf *b, const jd_journey *j, const char *sn, uint64_t v, unsigned long long n)
{
    size_t sl = strlen(sn);
    int here = -1;
    for (size_t s = 0; s < j->nstages; s++)
        if (strcmp(j->stages[s].name, sn) == 0)
            here = (int)s;
    jd_buf_printf(b, "  stage %s: %llu active (version %016llx) ", sn, n, (unsigned long long)v);
    int to = j->migrates && v ? jd_journey_migrate_stage(j, sn, sl) : here;
    if (j->migrates && v && to == JD_MIGRATE_EXIT)
        jd_buf_puts(b, "migrate: exit\n");
    else if (j->migrates && v && to >= 0 && to == here)
        jd_buf_puts(b, "migrate: stay, timers kept\n");
    else if (j->migrates && v && to >= 0)
        jd_buf_printf(b, "migrate: to %s\n", j->stages[to].name);
    else if (!j->migrates && v)
        jd_buf_printf(b, "pin: keep version %016llx until they leave\n", (unsigned long long)v);
    else if (to >= 0)
        jd_buf_printf(b, "keep: stay in %s, new version\n", sn);
    else
        jd_buf_puts(b, "removed: they leave (exited)\n");
}

char *jd_engine_check_against(const jd_engine *e, const char *data_dir, jd_error *err)
{
    char dir[4096];
    against a;
    jd_map_init(&a.counts);
    jd_map_init(&a.journeys);
    jd_buf b;
    jd_buf_init(&b);
    int bad = 0; /* every shard's store: the counts add up */
    for (int k = 0; !bad && jd_data_store_dir(data_dir, k, dir, sizeof dir) == 0; k++)
        bad = jd_persist_scan_instances(dir, note_journey, count_active, &a, err->text, sizeof err->text);
    if (bad) {
        jd_map_free(&a.counts, free);
        jd_map_free(&a.journeys, free_stored_journey);
        jd_buf_free(&b);
        return NULL;
    }
    const jd_defs *d = e->defs;
    /* journeys the edit removes: in the last checkpoint's scripts or with people, not in e's */
    jd_map gone;
    jd_map_init(&gone);
    size_t it = 0;
    const jd_map_slot *slot;
    while (jd_map_next(&a.journeys, &it, &slot))
        if (!jd_defs_journey(d, slot->key, strlen(slot->key)) && !jd_map_get(&gone, slot->key, strlen(slot->key)))
            jd_map_put(&gone, slot->key, strlen(slot->key), jd_xcalloc(1, sizeof(uint64_t)));
    it = 0;
    while (jd_map_next(&a.counts, &it, &slot)) {
        const char *jn = slot->key;
        if (jd_defs_journey(d, jn, strlen(jn)))
            continue;
        uint64_t *n = jd_map_get(&gone, jn, strlen(jn));
        if (!n) {
            n = jd_xcalloc(1, sizeof *n);
            jd_map_put(&gone, jn, strlen(jn), n);
        }
        *n += *(uint64_t *)slot->value;
    }
    it = 0;
    while (jd_map_next(&gone, &it, &slot))
        jd_buf_printf(&b, "journey %s: removed; %llu active leave it\n", slot->key,
                      (unsigned long long)*(uint64_t *)slot->value);
    jd_map_free(&gone, free);
    for (size_t i = 0; i < d->njourneys; i++) {
        const jd_journey *j = &d->journeys[i];
        size_t jl = strlen(j->name);
        const stored_journey *sj = jd_map_get(&a.journeys, j->name, jl);
        uint64_t same = 0, other = 0, unknown = 0;
        it = 0;
        while (jd_map_next(&a.counts, &it, &slot)) {
            if (strcmp(slot->key, j->name) != 0)
                continue;
            const char *sn = slot->key + jl + 1;
            uint64_t v;
            memcpy(&v, sn + strlen(sn) + 1, sizeof v);
            *(v == j->version ? &same : v ? &other : &unknown) += *(uint64_t *)slot->value;
        }
        const char *what = other ? "changes" : same ? "unchanged" : unknown ? "unknown" : "no one active";
        if (!sj)
            what = "new journey";
        else if (sj->version)
            what = sj->version != j->version ? "changes" : "unchanged";
        jd_buf_printf(&b, "journey %s  version %016llx: %s", j->name, (unsigned long long)j->version, what);
        if (sj && sj->version && sj->version != j->version)
            jd_buf_printf(&b, " (was %016llx)", (unsigned long long)sj->version);
        jd_buf_printf(&b, " (active: %llu on it, %llu on others, %llu unknown)%s\n", (unsigned long long)same,
                      (unsigned long long)other, (unsigned long long)unknown,
                      other + unknown && !j->migrates ? "; no migrate" : "");
        it = 0;
        while (jd_map_next(&a.counts, &it, &slot)) {
            if (strcmp(slot->key, j->name) != 0)
                continue;
            const char *sn = slot->key + jl + 1;
            uint64_t v;
            memcpy(&v, sn + strlen(sn) + 1, sizeof v);
            if (v != j->version)
                against_stage(&b, j, sn, v, (unsigned long long)*(uint64_t *)slot->value);
        }
        /* stages of the last checkpoint's scripts that the edit removes (with no one in
         * them: those with people are listed above) */
        for (size_t off = 0; sj && off < sj->stages.len; off += strlen(sj->stages.data + off) + 1) {
            const char *sn = sj->stages.data + off;
            int kept = 0, people = 0;
            for (size_t s = 0; s < j->nstages; s++)
                kept |= strcmp(j->stages[s].name, sn) == 0;
            it = 0;
            while (!people && jd_map_next(&a.counts, &it, &slot))
                people = strcmp(slot->key, j->name) == 0 && strcmp(slot->key + jl + 1, sn) == 0;
            if (!kept && !people)
                jd_buf_printf(&b, "  stage %s: removed, no one active\n", sn);
        }
        for (size_t s = 0; s < j->nstages; s++) {
            const char *sn = j->stages[s].name;
            if (sj && sj->stages.len && !stored_has_stage(sj, sn)) {
                jd_buf_printf(&b, "  stage %s: added\n", sn);
                continue;
            }
            int people = 0;
            it = 0;
            while (!people && jd_map_next(&a.counts, &it, &slot))
                people = strcmp(slot->key, j->name) == 0 && strcmp(slot->key + jl + 1, sn) == 0;
            if (!people)
                jd_buf_printf(&b, "  stage %s: no one active\n", sn);
        }
    }
    jd_map_free(&a.counts, free);
    jd_map_free(&a.journeys, free_stored_journey);
    jd_buf_cstr(&b);
    return b.data;
}
