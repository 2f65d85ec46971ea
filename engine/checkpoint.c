/* checkpoint: the engine's state in the embedded store. Between checkpoints the engine
 * notes what changed — people, aliases, timers scheduled and done, actions decided, new
 * messageIds — and jd_engine_checkpoint writes it all, with the log position it
 * reflects, in one LMDB transaction. People and aliases are read back on first use;
 * timers are held in memory only for the near window (due before `horizon`), the rest
 * stay on disk keyed by big-endian (due, seq) and are loaded as the clock approaches.
 * Rows name journeys and stages (not indexes), so they survive a reload of the scripts.
 * Uses store, user, timer, dedupe, msgpack-c. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"
#include "outbox.h"
#include "store.h"

#define LOAD_LIMIT 262144          /* timers loaded into memory per step */
#define DEDUPE_PRUNE_MS 600000     /* expired messageIds leave the store this often */
#define DEFAULT_WINDOW_MS 900000   /* the near window of timers: 15 minutes */
#define DEFAULT_CACHE_USERS 100000 /* people kept in memory between uses */
#define NSTALL 10                  /* buckets of the checkpoint pause histogram (stall_le) */

static const double stall_le[NSTALL] = {0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 1};

typedef struct jd_persist {
    jd_store *store;
    uint64_t lsn;      /* the log position the store reflects */
    int64_t window_ms; /* timers due within this of the clock are in memory */
    int64_t horizon;   /* every pending timer due before this is in the heap */
    int64_t beyond;    /* the earliest known timer at or after horizon (INT64_MAX: none) */
    jd_user **dirty;
    size_t ndirty, capdirty;
    /* the people of the checkpoint being built (building), as they were at its position:
     * those whose ckpt is still set are encoded in slices, or at once before anything
     * changes them (jd_persist_touch) */
    jd_user **pending;
    size_t npending, cappending, pending_at;
    struct jd_ckpt *building; /* taken at its position, its people not all encoded yet */
    /* the loop's pauses for checkpoints (taking one, each slice), for /metrics */
    uint64_t stalls[NSTALL + 1], nstalls, stall_ns;
    uint64_t encoded, encoded_early;   /* people encoded in slices / before a change */
    jd_buf aliases;                    /* from, to: NUL-terminated pairs changed since the checkpoint */
    jd_buf tm_ins;                     /* timer rows scheduled since the checkpoint: key[16] u32 len value */
    jd_buf tm_del;                     /* keys[16] of timers done since the checkpoint */
    jd_buf far;                        /* timer rows at or after horizon, not yet committed (same layout) */
    int64_t far_min;                   /* the earliest due in far (INT64_MAX: empty) */
    size_t cache_users;                /* people kept in memory after a checkpoint */
    struct jd_ckpt *inflight, *failed; /* the batch being written; one that failed */
    struct jd_ckpt *spare;             /* the last batch written, emptied: its buffers keep their
                                        * room for the next (see ckpt_recycle) */
    jd_buf far_inflight;               /* far timer rows in the batch being written */
    int64_t far_inflight_min;
    jd_buf outbox;  /* action rows: key[16] u32 len value */
    jd_buf results; /* delivery outcomes: id, status, error (NUL-ended), attempts u32, next i64 */
    jd_buf dd;      /* new messageIds: a, b, ts */
    uint64_t outbox_seq;
    int64_t last_prune;
    uint64_t gen_seq;  /* the last generation id given out */
    jd_buf gen_rows;   /* generations' sources rows to write: u64 id, u32 length (GEN_DEL: remove), value */
    uint64_t last_gen; /* read from the state row: the generation current at that checkpoint */
    jd_buf last_pins;  /* read from the state row: u64 id, u64 people pinned, repeated */
    jd_buf scratch, rows;
    msgpack_zone zone;
} jd_persist;

#define GEN_DEL UINT32_MAX

/* ---------------------------------------------------------------- rows */

static void row_put(jd_buf *b, const unsigned char key[16], const void *v, size_t n)
{
    uint32_t len = (uint32_t)n;
    jd_buf_append(b, key, 16);
    jd_buf_append(b, &len, 4);
    jd_buf_append(b, v, n);
}

/* Iterates rows: returns the next offset, or 0 at the end. */
static size_t row_next(const jd_buf *b, size_t off, const unsigned char **key, const char **v, uint32_t *n)
{
    if (off + 20 > b->len)
        return 0;
    *key = (const unsigned char *)b->data + off;
    memcpy(n, b->data + off + 16, 4);
    *v = b->data + off + 20;
    return off + 20 + *n;
}

/* A time as 8 bytes that sort as the signed value does (keys of timers and seen ids). */
static void time_put(unsigned char *p, int64_t t)
{
    jd_be64_put(p, (uint64_t)t ^ (1ULL << 63));
}

static void timer_key(unsigned char key[16], int64_t due, uint64_t seq)
{
    time_put(key, due);
    jd_be64_put(key + 8, seq);
}

static int64_t key_due(const unsigned char key[16])
{
    return (int64_t)(jd_be64_get(key) ^ (1ULL << 63));
}

static int obj_str(const msgpack_object *o, const char **p, size_t *n)
{
    if (o->type != MSGPACK_OBJECT_STR)
        return -1;
    *p = o->via.str.ptr;
    *n = o->via.str.size;
    return 0;
}

static uint64_t obj_u64(const msgpack_object *o)
{
    return o->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? o->via.u64 : 0;
}

static int64_t obj_i64(const msgpack_object *o)
{
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        return (int64_t)o->via.u64;
    return o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER ? o->via.i64 : 0;
}

static int stage_index(const jd_journey *j, const char *name, size_t n)
{
    for (size_t s = 0; s < j->nstages; s++)
        if (strlen(j->stages[s].name) == n && memcmp(j->stages[s].name, name, n) == 0)
            return (int)s;
    return -1;
}

/* ---------------------------------------------------------------- people */

static void pack_name(msgpack_packer *pk, const jd_defs *d, int journey, int stage)
{
    if (journey < 0 || (size_t)journey >= d->njourneys) {
        msgpack_pack_nil(pk);
        return;
    }
    const jd_journey *j = &d->journeys[journey];
    if (stage < 0 || (size_t)stage >= j->nstages)
        msgpack_pack_nil(pk);
    else
        jd_mp_pack_cstr(pk, j->stages[stage].name);
}

static void pack_instance(msgpack_packer *pk, const jd_defs *d, const jd_instance *in, uint64_t pin)
{
    /* the fired timers of the stage entry it is in (engine.c timer_once), when any */
    uint64_t fired = in->fired_gen == in->gen ? in->fired : 0;
    msgpack_pack_array(pk, fired ? 14 : pin ? 13 : 12);
    jd_mp_pack_cstr(pk, d->journeys[in->journey].name);
    jd_mp_pack_str(pk, in->key, in->keylen);
    msgpack_pack_uint8(pk, (uint8_t)in->status);
    pack_name(pk, d, in->journey, in->stage);
    msgpack_pack_uint32(pk, in->iid);
    msgpack_pack_uint32(pk, in->gen);
    msgpack_pack_int64(pk, in->entered_at);
    msgpack_pack_int64(pk, in->stage_entered_at);
    msgpack_pack_int64(pk, in->left_at);
    msgpack_pack_uint32(pk, in->entries);
    msgpack_pack_uint64(pk, in->touched);
    msgpack_pack_uint64(pk, in->version); /* came later: rows without it decode as 0 */
    if (pin || fired)                     /* pinned: the stored generation it runs (0: none) */
        msgpack_pack_uint64(pk, pin);
    if (fired)
        msgpack_pack_uint64(pk, fired);
}

/* [traits, score, segments, next_iid, instances, decisions, sent]; sent (frequency
 * caps' history, [[channel hash, time], ...]) came later: rows without it decode */
static void encode_user(const jd_engine *e, const jd_user *u, jd_buf *out)
{
    const jd_defs *d = e->defs;
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, jd_buf_msgpack_write);
    msgpack_pack_array(&pk, 7);
    msgpack_pack_bin(&pk, u->traits.len);
    msgpack_pack_bin_body(&pk, u->traits.data, u->traits.len);
    msgpack_pack_double(&pk, u->score);
    msgpack_pack_array(&pk, (uint32_t)u->nsegments);
    for (size_t i = 0; i < u->nsegments; i++)
        jd_mp_pack_cstr(&pk, u->segments[i]);
    msgpack_pack_uint32(&pk, u->next_iid);
    uint32_t ni = 0;
    for (const jd_instance *in = u->instances; in; in = in->next)
        ni++;
    for (const jd_instance *in = u->pinned; in; in = in->next)
        ni += in->pin != NULL;
    msgpack_pack_array(&pk, ni);
    for (const jd_instance *in = u->instances; in; in = in->next)
        pack_instance(&pk, d, in, 0);
    /* pinned ones by the names of their generation's defs, with its id: its sources are a
     * row of the store, so after a restart they run that version again */
    for (const jd_instance *in = u->pinned; in; in = in->next)
        if (in->pin)
            pack_instance(&pk, in->pin->defs, in, in->pin->id);
    msgpack_pack_array(&pk, u->decisions ? u->ndecisions : 0);
    for (int i = 0; u->decisions && i < u->ndecisions; i++) {
        jd_decision dcv;
        const jd_decision *dc = jd_user_decision(u, i, &dcv);
        msgpack_pack_array(&pk, 5);
        msgpack_pack_int64(&pk, dc->time);
        msgpack_pack_uint8(&pk, dc->kind);
        if (dc->journey >= 0 && (size_t)dc->journey < d->njourneys)
            jd_mp_pack_cstr(&pk, d->journeys[dc->journey].name);
        else
            msgpack_pack_nil(&pk);
        pack_name(&pk, d, dc->journey, dc->stage);
        jd_mp_pack_cstr(&pk, dc->detail);
    }
    msgpack_pack_array(&pk, u->nsent);
    for (uint16_t i = 0; i < u->nsent; i++) {
        msgpack_pack_array(&pk, 2);
        msgpack_pack_uint64(&pk, u->sent[i].channel);
        msgpack_pack_int64(&pk, u->sent[i].time);
    }
}

/* One element of a row's instance array: [journey, key, status, stage, iid, gen,
 * entered_at, stage_entered_at, left_at, entries, touched, version, pin, fired]; version
 * came later (absent: 0), pin (the generation id, 0: none) for a pinned one or when fired
 * follows, fired (the stage entry's timers that fired) only when one did. Returns -1 when
 * it is not one. */
static int stored_instance(const msgpack_object *r, jd_stored_instance *si)
{
    if (r->type != MSGPACK_OBJECT_ARRAY || r->via.array.size < 11)
        return -1;
    const msgpack_object *x = r->via.array.ptr;
    memset(si, 0, sizeof *si);
    if (obj_str(&x[0], &si->journey, &si->journeyn) || obj_str(&x[1], &si->key, &si->keylen))
        return -1;
    if (obj_str(&x[3], &si->stage, &si->stagen))
        si->stage = NULL, si->stagen = 0;
    si->status = (jd_inst_status)obj_u64(&x[2]);
    si->iid = (uint32_t)obj_u64(&x[4]);
    si->gen = (uint32_t)obj_u64(&x[5]);
    si->entered_at = obj_i64(&x[6]);
    si->stage_entered_at = obj_i64(&x[7]);
    si->left_at = obj_i64(&x[8]);
    si->entries = (uint32_t)obj_u64(&x[9]);
    si->touched = obj_u64(&x[10]);
    si->version = r->via.array.size > 11 ? obj_u64(&x[11]) : 0;
    si->pin = r->via.array.size > 12 ? obj_u64(&x[12]) : 0;
    si->fired = r->via.array.size > 13 ? obj_u64(&x[13]) : 0;
    return 0;
}

/* The retired generation a stored active instance runs, with its journey there (*gj):
 * the one it is pinned to, or — not pinned yet: stored under a version of its journey
 * that the process's scripts changed without `migrate` — one whose journey of that name
 * has the version it entered with (then it is pinned now). NULL: the current scripts (a
 * version no longer kept continues on them by stage name; a `migrate` moves it). */
static jd_gen *stored_pin(jd_engine *e, jd_user *u, const jd_stored_instance *si, const jd_journey *j,
                          const jd_journey **gj)
{
    if (si->status != JD_INST_ACTIVE || !si->stage)
        return NULL;
    if (si->pin) {
        for (size_t i = 0; i < e->ngens; i++) {
            jd_gen *g = e->gens[i];
            if (g->id != si->pin)
                continue;
            *gj = jd_defs_journey(g->defs, si->journey, si->journeyn);
            if (*gj && stage_index(*gj, si->stage, si->stagen) >= 0 && !(j && j->migrates && j->version != si->version))
                return g;
            if (g->pinned) /* it leaves g, where it counted while only in the store */
                g->pinned--;
            break;
        }
        jd_persist_user_changed(e, u); /* its row no longer names the generation */
        return NULL;
    }
    if (!j || j->migrates || !si->version || si->version == j->version)
        return NULL;
    for (size_t i = e->ngens; i-- > 0;) {
        jd_gen *g = e->gens[i];
        const jd_journey *x = jd_defs_journey(g->defs, si->journey, si->journeyn);
        if (x && x->version == si->version && stage_index(x, si->stage, si->stagen) >= 0) {
            *gj = x;
            g->pinned++;
            jd_persist_user_changed(e, u); /* its row names the generation from now on */
            return g;
        }
    }
    return NULL;
}

static jd_user *decode_user(jd_engine *e, const char *id, size_t idn, const void *v, size_t vn)
{
    jd_persist *p = e->persist;
    msgpack_zone_clear(&p->zone);
    msgpack_object o;
    size_t off = 0;
    if (msgpack_unpack(v, vn, &off, &p->zone, &o) != MSGPACK_UNPACK_SUCCESS || o.type != MSGPACK_OBJECT_ARRAY ||
        o.via.array.size < 6) {
        jd_engine_log(e, "error", "store: the profile of %.*s is unreadable; starting it afresh", (int)idn, id);
        return jd_user_new(id, idn);
    }
    const msgpack_object *f = o.via.array.ptr;
    jd_user *u = jd_user_new(id, idn);
    if (f[0].type == MSGPACK_OBJECT_BIN && f[0].via.bin.size)
        jd_buf_append(&u->traits, f[0].via.bin.ptr, f[0].via.bin.size);
    u->score = f[1].type == MSGPACK_OBJECT_FLOAT64 || f[1].type == MSGPACK_OBJECT_FLOAT32 ? f[1].via.f64
                                                                                          : (double)obj_i64(&f[1]);
    for (uint32_t i = 0; f[2].type == MSGPACK_OBJECT_ARRAY && i < f[2].via.array.size; i++) {
        const char *s;
        size_t n;
        if (!obj_str(&f[2].via.array.ptr[i], &s, &n))
            jd_user_segment_add(u, s, n);
    }
    u->next_iid = (uint32_t)obj_u64(&f[3]);
    for (uint32_t i = 0; f[4].type == MSGPACK_OBJECT_ARRAY && i < f[4].via.array.size; i++) {
        jd_stored_instance si;
        if (stored_instance(&f[4].via.array.ptr[i], &si))
            continue;
        const char *sn = si.stage;
        size_t sl = si.stagen;
        const jd_journey *j = jd_defs_journey(e->defs, si.journey, si.journeyn), *gj = NULL;
        jd_gen *pin = stored_pin(e, u, &si, j, &gj);
        if (pin) { /* runs its generation again: journey and stage index its defs */
            jd_instance *in = jd_xcalloc(1, sizeof *in);
            in->journey = gj->index;
            in->key = jd_strndup(si.key, si.keylen);
            in->keylen = si.keylen;
            in->status = JD_INST_ACTIVE;
            in->stage = stage_index(gj, sn, sl);
            in->iid = si.iid;
            in->gen = si.gen;
            in->fired_gen = si.gen;
            in->fired = si.fired;
            in->entered_at = si.entered_at;
            in->stage_entered_at = si.stage_entered_at;
            in->left_at = si.left_at;
            in->entries = si.entries;
            in->touched = si.touched;
            in->version = si.version;
            in->pin = pin;
            in->next = u->pinned;
            u->pinned = in;
            u->npinned++;
            continue;
        }
        if (!j)
            continue; /* the journey is gone: forget the instance (as a reload does) */
        jd_instance *in = jd_user_instance_add(u, j->index, si.key, si.keylen);
        in->status = si.status;
        in->version = si.version;
        in->gen = si.gen;
        in->fired_gen = si.gen;
        in->fired = si.fired;
        in->stage_entered_at = si.stage_entered_at;
        in->left_at = si.left_at;
        int st = sn ? stage_index(j, sn, sl) : -1;
        if (in->status == JD_INST_ACTIVE && j->migrates && in->version && in->version != j->version && sn) {
            /* stored under an earlier version of a journey that migrates (a reload
             * happened while this person was not in memory): as carry_over does */
            int to = jd_journey_migrate_stage(j, sn, sl);
            in->version = j->version;
            jd_persist_user_changed(e, u);
            if (to == JD_MIGRATE_EXIT) {
                in->status = JD_INST_EXITED;
                in->left_at = jd_clock_now(&e->clock);
                e->counts[j->index].exited++;
                e->counts[j->index].active--;
                st = j->entry_stage;
            } else if (to >= 0 && to != st) {
                in->gen++;
                in->stage_entered_at = jd_clock_now(&e->clock);
                in->migrated = 1; /* the engine schedules the new stage's timers */
                st = to;
            }
        }
        if (st < 0) {
            if (in->status == JD_INST_ACTIVE) {
                jd_engine_log(e, "warn", "store: stage '%.*s' of journey '%s' no longer exists; user %s leaves it",
                              (int)sl, sn ? sn : "", j->name, u->id);
                in->status = JD_INST_EXITED;
                e->counts[j->index].exited++;
                e->counts[j->index].active--;
                jd_persist_user_changed(e, u);
            }
            st = j->entry_stage;
        }
        in->stage = st;
        in->iid = si.iid;
        in->entered_at = si.entered_at;
        in->entries = si.entries;
        in->touched = si.touched;
    }
    for (uint32_t i = 0; f[5].type == MSGPACK_OBJECT_ARRAY && i < f[5].via.array.size; i++) {
        const msgpack_object *r = &f[5].via.array.ptr[i];
        if (r->type != MSGPACK_OBJECT_ARRAY || r->via.array.size < 5)
            continue;
        const msgpack_object *x = r->via.array.ptr;
        jd_decision dc = {.time = obj_i64(&x[0]), .kind = (uint8_t)obj_u64(&x[1]), .journey = -1, .stage = -1};
        const char *s;
        size_t n;
        const jd_journey *j = obj_str(&x[2], &s, &n) ? NULL : jd_defs_journey(e->defs, s, n);
        if (j) {
            dc.journey = (int16_t)j->index;
            if (!obj_str(&x[3], &s, &n))
                dc.stage = (int16_t)stage_index(j, s, n);
        }
        if (!obj_str(&x[4], &s, &n))
            snprintf(dc.detail, sizeof dc.detail, "%.*s", (int)n, s);
        jd_user_decide(u, e->opts.decisions_per_user, &dc);
    }
    for (uint32_t i = 0; o.via.array.size > 6 && f[6].type == MSGPACK_OBJECT_ARRAY && i < f[6].via.array.size; i++) {
        const msgpack_object *r = &f[6].via.array.ptr[i];
        if (r->type == MSGPACK_OBJECT_ARRAY && r->via.array.size >= 2 && u->nsent < JD_MAX_SENT)
            jd_user_sent_add(u, obj_u64(&r->via.array.ptr[0]), obj_i64(&r->via.array.ptr[1]), INT64_MIN, JD_MAX_SENT);
    }
    return u;
}

jd_user *jd_persist_load_user(jd_engine *e, const char *id, size_t n)
{
    const void *v;
    size_t vn;
    if (!e->persist)
        return NULL;
    int rc = jd_store_get(e->persist->store, JD_DB_USERS, id, n, &v, &vn);
    if (rc < 0)
        jd_engine_log(e, "error", "%s; %.*s starts afresh", jd_store_error(e->persist->store), (int)n, id);
    return rc ? NULL : decode_user(e, id, n, v, vn);
}

void jd_persist_user_changed(jd_engine *e, jd_user *u)
{
    jd_persist *p = e->persist;
    if (!p)
        return;
    jd_persist_touch(e, u); /* (callers have touched u before changing it: a no-op then) */
    if (u->dirty)
        return;
    u->dirty = 1;
    if (p->ndirty == p->capdirty) {
        p->capdirty = p->capdirty ? p->capdirty * 2 : 1024;
        p->dirty = jd_xrealloc(p->dirty, p->capdirty * sizeof *p->dirty);
    }
    p->dirty[p->ndirty++] = u;
}

const char *jd_persist_load_alias(jd_engine *e, const char *id, size_t n)
{
    const void *v;
    size_t vn;
    if (!e->persist || jd_store_get(e->persist->store, JD_DB_ALIASES, id, n, &v, &vn) != 0)
        return NULL;
    char *to = jd_strndup(v, vn);
    jd_map_put(&e->aliases, id, n, to);
    return to;
}

void jd_persist_alias(jd_engine *e, const char *from, size_t fn, const char *to, size_t tn)
{
    jd_persist *p = e->persist;
    if (!p)
        return;
    jd_buf_append(&p->aliases, from, fn);
    jd_buf_putc(&p->aliases, '\0');
    jd_buf_append(&p->aliases, to, tn);
    jd_buf_putc(&p->aliases, '\0');
}

/* ---------------------------------------------------------------- timers */

/* [user, journey, key, iid, gen, after] */
static void encode_timer(const jd_engine *e, const jd_timer *tm, jd_buf *out)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, jd_buf_msgpack_write);
    msgpack_pack_array(&pk, 6);
    jd_mp_pack_str(&pk, tm->user->id, tm->user->idlen);
    jd_mp_pack_cstr(&pk, e->defs->journeys[tm->journey].name);
    jd_mp_pack_str(&pk, tm->inst->key, tm->inst->keylen);
    msgpack_pack_uint32(&pk, tm->iid);
    msgpack_pack_uint32(&pk, tm->gen);
    msgpack_pack_uint16(&pk, tm->after);
}

int jd_persist_timer_added(jd_engine *e, const jd_timer *tm)
{
    jd_persist *p = e->persist;
    unsigned char key[16];
    timer_key(key, tm->due, tm->seq);
    jd_buf_reset(&p->scratch);
    encode_timer(e, tm, &p->scratch);
    row_put(&p->tm_ins, key, p->scratch.data, p->scratch.len);
    if (tm->due < p->horizon)
        return 0;
    row_put(&p->far, key, p->scratch.data, p->scratch.len);
    if (tm->due < p->far_min)
        p->far_min = tm->due;
    if (tm->due < p->beyond)
        p->beyond = tm->due;
    return 1;
}

void jd_persist_timer_done(jd_engine *e, const jd_timer *tm)
{
    unsigned char key[16];
    timer_key(key, tm->due, tm->seq);
    jd_buf_append(&e->persist->tm_del, key, 16);
}

/* A stored timer row back into the heap; a row whose stage entry is gone is deleted. */
static void load_timer(jd_engine *e, const unsigned char key[16], const char *v, size_t vn)
{
    jd_persist *p = e->persist;
    msgpack_zone_clear(&p->zone);
    msgpack_object o;
    size_t off = 0;
    const jd_journey *j = NULL;
    jd_instance *inst = NULL;
    jd_user *u = NULL;
    uint64_t iid = 0, gen = 0, after = 0;
    jd_gen *pin = NULL;
    if (msgpack_unpack(v, vn, &off, &p->zone, &o) == MSGPACK_UNPACK_SUCCESS && o.type == MSGPACK_OBJECT_ARRAY &&
        o.via.array.size >= 6) {
        const msgpack_object *f = o.via.array.ptr;
        const char *uid, *jn, *k;
        size_t ul, jl, kl;
        if (!obj_str(&f[0], &uid, &ul) && !obj_str(&f[1], &jn, &jl) && !obj_str(&f[2], &k, &kl)) {
            j = jd_defs_journey(e->defs, jn, jl);
            iid = obj_u64(&f[3]);
            gen = obj_u64(&f[4]);
            after = obj_u64(&f[5]);
            /* copies: loading the profile reuses the zone */
            char *us = jd_strndup(uid, ul), *ks = jd_strndup(k, kl);
            /* a journey the current scripts removed may still run for people pinned to it */
            u = j ? jd_engine_user(e, us, ul) : jd_engine_find_user(e, us, ul);
            inst = j && u ? jd_user_instance(u, j->index, ks, kl) : NULL;
            for (jd_instance *pi = u && u->npinned ? u->pinned : NULL; pi && !pin; pi = pi->next)
                if (pi->pin && pi->status == JD_INST_ACTIVE && pi->iid == iid) {
                    inst = pi; /* pinned: its generation's journey */
                    pin = pi->pin;
                    j = &pin->defs->journeys[pi->journey];
                }
            free(us);
            free(ks);
        }
    }
    if (!inst || inst->status != JD_INST_ACTIVE || inst->iid != iid || inst->gen != gen ||
        after >= j->stages[inst->stage].nafter) {
        e->stats[JD_STAT_TIMERS_DROPPED]++;
        jd_buf_append(&p->tm_del, key, 16);
        return;
    }
    jd_timer tm = {
        .due = key_due(key),
        .seq = jd_be64_get(key + 8),
        .user = u,
        .inst = inst,
        .iid = (uint32_t)iid,
        .gen = (uint32_t)gen,
        .after = (uint16_t)after,
        .journey = (uint16_t)j->index,
        .pin = pin,
    };
    jd_timers_insert(&e->timers, tm);
    u->timers++;
    if (pin)
        pin->timers++;
}

typedef struct scan_ctx {
    jd_buf *rows;
    int64_t target;
    size_t n;
    int64_t last_due;
    int64_t stopped_at; /* the first due not taken, INT64_MAX: the end */
} scan_ctx;

static int collect_timer(const void *k, size_t kn, const void *v, size_t vn, void *ud)
{
    scan_ctx *c = ud;
    if (kn != 16)
        return 0;
    int64_t due = key_due(k);
    if (due >= c->target || (c->n >= LOAD_LIMIT && due != c->last_due)) {
        c->stopped_at = due;
        return 1;
    }
    row_put(c->rows, k, v, vn);
    c->n++;
    c->last_due = due;
    return 0;
}

/* Loads the timers due before t + window into the heap (up to LOAD_LIMIT at a time). */
static void load_window(jd_engine *e, int64_t t)
{
    jd_persist *p = e->persist;
    int64_t target = t + p->window_ms;
    if (target <= p->horizon)
        return;
    unsigned char from[16];
    timer_key(from, p->horizon, 0);
    jd_buf_reset(&p->rows);
    scan_ctx c = {&p->rows, target, 0, INT64_MIN, INT64_MAX};
    if (jd_store_scan(p->store, JD_DB_TIMERS, from, 16, collect_timer, &c) < 0) {
        jd_engine_log(e, "error", "%s", jd_store_error(p->store));
        return;
    }
    int64_t new_horizon = c.stopped_at < target ? c.stopped_at : target;
    if (c.n >= LOAD_LIMIT && c.stopped_at < target)
        new_horizon = c.stopped_at; /* the rest next time */
    /* rows not yet committed: those now inside the window move to the heap (the buffer
     * is only walked when one of them is) */
    const unsigned char *k;
    const char *v;
    uint32_t n;
    if (p->far_min < new_horizon) {
        jd_buf keep;
        jd_buf_init(&keep);
        p->far_min = INT64_MAX;
        for (size_t off = 0; (off = row_next(&p->far, off, &k, &v, &n));) {
            int64_t due = key_due(k);
            if (due < new_horizon) {
                row_put(&p->rows, k, v, n);
            } else {
                row_put(&keep, k, v, n);
                if (due < p->far_min)
                    p->far_min = due;
            }
        }
        jd_buf_free(&p->far);
        p->far = keep;
    }
    if (p->far_inflight_min < new_horizon) {
        /* the batch may have committed before the scan: skip what the scan returned */
        jd_map seen;
        jd_map_init(&seen);
        for (size_t off = 0; (off = row_next(&p->rows, off, &k, &v, &n));)
            jd_map_put(&seen, (const char *)k, 16, &seen);
        jd_buf keep;
        jd_buf_init(&keep);
        p->far_inflight_min = INT64_MAX;
        for (size_t off = 0; (off = row_next(&p->far_inflight, off, &k, &v, &n));) {
            int64_t due = key_due(k);
            if (due >= new_horizon) {
                row_put(&keep, k, v, n);
                if (due < p->far_inflight_min)
                    p->far_inflight_min = due;
            } else if (!jd_map_get(&seen, (const char *)k, 16)) {
                row_put(&p->rows, k, v, n);
            }
        }
        jd_map_free(&seen, NULL);
        jd_buf_free(&p->far_inflight);
        p->far_inflight = keep;
    }
    p->horizon = new_horizon;
    int64_t fm = p->far_min < p->far_inflight_min ? p->far_min : p->far_inflight_min;
    p->beyond = c.stopped_at < fm ? c.stopped_at : fm;
    for (size_t off = 0; (off = row_next(&p->rows, off, &k, &v, &n));)
        load_timer(e, k, v, n);
}

void jd_persist_window(jd_engine *e, int64_t t)
{
    jd_persist *p = e->persist;
    if (p->horizon > t + p->window_ms / 2 || e->timers.n >= LOAD_LIMIT / 2)
        return;
    load_window(e, t);
}

int64_t jd_persist_next_due(const jd_engine *e)
{
    return e->persist->beyond;
}

/* ---------------------------------------------------------------- outbox */

void jd_persist_action(jd_engine *e, const jd_action *a)
{
    jd_persist *p = e->persist;
    jd_outbox_row row = {.seq = ++p->outbox_seq, .status = "pending", .next = a->deliver_at ? a->deliver_at : a->time};
    memcpy(row.id, a->id, sizeof row.id);
    row.action = jd_action_json(a, &row.action_len);
    /* the row goes in under its sequence number, after it (see write_outbox) */
    jd_buf_reset(&p->scratch);
    unsigned char seq[8];
    jd_be64_put(seq, row.seq);
    jd_buf_append(&p->scratch, seq, 8);
    jd_outbox_encode(&row, &p->scratch);
    unsigned char key[16];
    jd_outbox_key(key, a->id);
    row_put(&p->outbox, key, p->scratch.data, p->scratch.len);
}

void jd_engine_outbox_result(jd_engine *e, const char *id, const char *status, uint32_t attempts, int64_t next,
                             const char *error)
{
    jd_persist *p = e->persist;
    if (!p)
        return;
    jd_buf_puts(&p->results, id);
    jd_buf_putc(&p->results, '\0');
    jd_buf_puts(&p->results, status);
    jd_buf_putc(&p->results, '\0');
    jd_buf_puts(&p->results, error ? error : "");
    jd_buf_putc(&p->results, '\0');
    jd_buf_append(&p->results, &attempts, 4);
    jd_buf_append(&p->results, &next, 8);
}

void jd_persist_seen(jd_engine *e, uint64_t a, uint64_t b, int64_t ts)
{
    jd_persist *p = e->persist;
    jd_buf_append(&p->dd, &a, 8);
    jd_buf_append(&p->dd, &b, 8);
    jd_buf_append(&p->dd, &ts, 8);
}

/* ---------------------------------------------------------------- generations */

/* A generation's sources are a row of the meta database keyed "gen/" + big-endian id:
 * [hash, [[module (nil: the entry file), path, text], ...]] — every file its Lua state
 * read from the script directory, so the version can be rebuilt without the disk. The
 * state row names the current scripts' row and counts the people pinned to each other
 * one; a row leaves in the checkpoint after the last of them left. */
static void gen_key(unsigned char key[12], uint64_t id)
{
    memcpy(key, "gen/", 4);
    jd_be64_put(key + 4, id);
}

uint64_t jd_persist_sources_hash(const jd_script *s)
{
    uint64_t h = 0x6a09e667f3bcc908ULL;
    for (size_t i = 0; i < jd_script_nfiles(s); i++) {
        const char *module, *path, *text;
        size_t len;
        jd_script_file(s, i, &module, &path, &text, &len);
        h = jd_hash(module ? module : "", module ? strlen(module) + 1 : 0, h);
        h = jd_hash(text, len, h);
    }
    return h;
}

void jd_persist_gen_put(jd_engine *e, uint64_t id, uint64_t hash, const jd_script *s)
{
    jd_persist *p = e->persist;
    if (!p || !id)
        return;
    jd_buf_reset(&p->scratch);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &p->scratch, jd_buf_msgpack_write);
    size_t n = jd_script_nfiles(s);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_uint64(&pk, hash);
    msgpack_pack_array(&pk, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        const char *module, *path, *text;
        size_t len;
        jd_script_file(s, i, &module, &path, &text, &len);
        msgpack_pack_array(&pk, 3);
        if (module)
            jd_mp_pack_cstr(&pk, module);
        else
            msgpack_pack_nil(&pk);
        jd_mp_pack_cstr(&pk, path);
        jd_mp_pack_str(&pk, text, len);
    }
    uint32_t vl = (uint32_t)p->scratch.len;
    jd_buf_append(&p->gen_rows, &id, 8);
    jd_buf_append(&p->gen_rows, &vl, 4);
    jd_buf_append(&p->gen_rows, p->scratch.data, p->scratch.len);
}

void jd_persist_gen_del(jd_engine *e, uint64_t id)
{
    jd_persist *p = e->persist;
    uint32_t del = GEN_DEL;
    if (!p || !id)
        return;
    jd_buf_append(&p->gen_rows, &id, 8);
    jd_buf_append(&p->gen_rows, &del, 4);
}

void jd_persist_gen_current(jd_engine *e)
{
    jd_persist *p = e->persist;
    if (!p)
        return;
    e->gen_id = ++p->gen_seq;
    e->gen_hash = jd_persist_sources_hash(e->script);
    e->gen_nfiles = jd_script_nfiles(e->script);
    jd_persist_gen_put(e, e->gen_id, e->gen_hash, e->script);
}

static int write_gens(jd_store *st, const jd_buf *b)
{
    for (size_t off = 0; off + 12 <= b->len;) {
        uint64_t id;
        uint32_t vl;
        memcpy(&id, b->data + off, 8);
        memcpy(&vl, b->data + off + 8, 4);
        off += 12;
        unsigned char key[12];
        gen_key(key, id);
        if (vl == GEN_DEL) {
            if (jd_store_del(st, JD_DB_META, key, sizeof key))
                return -1;
            continue;
        }
        if (jd_store_put(st, JD_DB_META, key, sizeof key, b->data + off, vl, 0))
            return -1;
        off += vl;
    }
    return 0;
}

typedef struct gen_row {
    uint64_t id;
    size_t off, len; /* the value in the rows buffer */
} gen_row;

static int collect_gen(const void *k, size_t kn, const void *v, size_t vn, void *ud)
{
    jd_buf *rows = ud;
    if (kn != 12 || memcmp(k, "gen/", 4) != 0)
        return 1; /* past the generations */
    uint64_t id = jd_be64_get((const unsigned char *)k + 4);
    uint64_t len = vn;
    jd_buf_append(rows, &id, 8);
    jd_buf_append(rows, &len, 8);
    jd_buf_append(rows, v, vn);
    return 0;
}

/* People pinned to generation id at the last checkpoint (0: none recorded). */
static uint64_t last_pins(const jd_persist *p, uint64_t id)
{
    for (size_t off = 0; off + 16 <= p->last_pins.len; off += 16) {
        uint64_t x, n;
        memcpy(&x, p->last_pins.data + off, 8);
        memcpy(&n, p->last_pins.data + off + 8, 8);
        if (x == id)
            return n;
    }
    return 0;
}

/* A Lua state holding the files of a stored row (NULL when the row is not one). */
static jd_script *row_script(jd_engine *e, const char *v, size_t vn, uint64_t *hash)
{
    jd_persist *p = e->persist;
    msgpack_zone_clear(&p->zone);
    msgpack_object o;
    size_t off = 0;
    if (msgpack_unpack(v, vn, &off, &p->zone, &o) != MSGPACK_UNPACK_SUCCESS || o.type != MSGPACK_OBJECT_ARRAY ||
        o.via.array.size < 2 || o.via.array.ptr[1].type != MSGPACK_OBJECT_ARRAY)
        return NULL;
    *hash = obj_u64(&o.via.array.ptr[0]);
    const msgpack_object *files = &o.via.array.ptr[1];
    jd_script *sc = NULL;
    for (uint32_t i = 0; i < files->via.array.size; i++) {
        const msgpack_object *f = &files->via.array.ptr[i];
        const char *module = NULL, *path, *text;
        size_t mn = 0, pn, tn;
        if (f->type != MSGPACK_OBJECT_ARRAY || f->via.array.size < 3 ||
            (f->via.array.ptr[0].type != MSGPACK_OBJECT_NIL && obj_str(&f->via.array.ptr[0], &module, &mn)) ||
            obj_str(&f->via.array.ptr[1], &path, &pn) || obj_str(&f->via.array.ptr[2], &text, &tn))
            continue;
        char *ms = module ? jd_strndup(module, mn) : NULL, *ps = jd_strndup(path, pn);
        if (!sc) { /* the directory only names files in messages: nothing is read from it */
            const char *slash = strrchr(ps, '/');
            char *dir = slash ? jd_strndup(ps, (size_t)(slash - ps)) : jd_strndup(".", 1);
            sc = jd_engine_script_new(e, dir);
            free(dir);
        }
        if (sc)
            jd_script_add_file(sc, ms, ps, text, tn);
        free(ms);
        free(ps);
    }
    return sc;
}

typedef struct prev_pins {
    const jd_defs *prev, *cur;
} prev_pins;

/* A journey the process's scripts changed (without `migrate`) since prev was current. */
static int prev_pins_journey(const char *name, size_t n, void *ud)
{
    const prev_pins *pp = ud;
    const jd_journey *oj = jd_defs_journey(pp->prev, name, n), *nj = jd_defs_journey(pp->cur, name, n);
    return oj && nj && !nj->migrates && nj->version != oj->version;
}

/* At open: rebuilds every stored generation people are pinned to from its sources; the
 * current scripts' row is the last checkpoint's when they are the same sources, else a
 * new one — and then the last checkpoint's scripts are a generation too: the people
 * active in a journey the process's scripts changed without `migrate` are read in and
 * pinned to it, as a reload would have pinned them. */
static void restore_gens(jd_engine *e)
{
    jd_persist *p = e->persist;
    jd_buf rows;
    jd_buf_init(&rows);
    unsigned char from[4] = {'g', 'e', 'n', '/'};
    if (jd_store_scan(p->store, JD_DB_META, from, sizeof from, collect_gen, &rows) < 0)
        jd_engine_log(e, "error", "store: cannot read the stored script versions: %s", jd_store_error(p->store));
    uint64_t cur_hash = jd_persist_sources_hash(e->script);
    jd_gen *prev = NULL;
    for (size_t off = 0; off + 16 <= rows.len;) {
        uint64_t id, len, hash = 0;
        memcpy(&id, rows.data + off, 8);
        memcpy(&len, rows.data + off + 8, 8);
        const char *v = rows.data + off + 16;
        off += 16 + len;
        uint64_t pins = last_pins(p, id);
        int was_current = id == p->last_gen;
        jd_script *sc = pins || was_current ? row_script(e, v, len, &hash) : NULL;
        if (was_current && sc && hash == cur_hash && !e->gen_id) { /* the same scripts */
            e->gen_id = id;
            e->gen_hash = hash;
            e->gen_nfiles = jd_script_nfiles(sc);
            jd_script_free(sc);
            continue;
        }
        jd_error err = {{0}};
        jd_gen *g = NULL;
        if (sc && !(g = jd_engine_gen_restore(e, sc, &err)))
            jd_engine_log(e, "error",
                          "store: cannot rebuild the stored scripts %016llx: %s; the %llu people pinned to them "
                          "continue on the current scripts",
                          (unsigned long long)hash, err.text, (unsigned long long)pins);
        if (!g) {
            jd_persist_gen_del(e, id);
            continue;
        }
        g->id = id;
        g->hash = hash;
        g->pinned = pins;
        if (was_current)
            prev = g;
    }
    jd_buf_free(&rows);
    if (!e->gen_id)
        jd_persist_gen_current(e);
    if (prev) {
        prev_pins pp = {prev->defs, e->defs};
        jd_persist_load_active(e, prev_pins_journey, &pp);
        if (prev->pinned)
            jd_engine_log(e, "info",
                          "store: the scripts changed since the last checkpoint: %llu people in journeys changed "
                          "without migrate stay on the version they entered with",
                          (unsigned long long)prev->pinned);
    }
    jd_engine_gens_collect(e);
    jd_buf_free(&p->last_pins); /* read once, at open */
    jd_buf_init(&p->last_pins);
}

/* ---------------------------------------------------------------- meta */

static void encode_state(const jd_engine *e, jd_buf *out)
{
    jd_persist *p = e->persist;
    const jd_defs *d = e->defs;
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, jd_buf_msgpack_write);
    size_t npins = 0;
    for (size_t i = 0; i < e->ngens; i++)
        npins += e->gens[i]->id != 0;
    msgpack_pack_map(&pk, 13);
    jd_mp_pack_cstr(&pk, "lsn");
    msgpack_pack_uint64(&pk, p->lsn);
    jd_mp_pack_cstr(&pk, "now");
    msgpack_pack_int64(&pk, jd_clock_now(&e->clock));
    jd_mp_pack_cstr(&pk, "event_seq");
    msgpack_pack_uint64(&pk, e->event_seq);
    jd_mp_pack_cstr(&pk, "timer_seq");
    msgpack_pack_uint64(&pk, e->timers.next_seq);
    jd_mp_pack_cstr(&pk, "outbox_seq");
    msgpack_pack_uint64(&pk, p->outbox_seq);
    jd_mp_pack_cstr(&pk, "last_prune");
    msgpack_pack_int64(&pk, p->last_prune);
    /* generations: the current scripts' sources row, the last id given out, and for each
     * retired one in the store the people pinned to it (in memory or not) */
    jd_mp_pack_cstr(&pk, "gen");
    msgpack_pack_uint64(&pk, e->gen_id);
    jd_mp_pack_cstr(&pk, "gen_seq");
    msgpack_pack_uint64(&pk, p->gen_seq);
    jd_mp_pack_cstr(&pk, "pins");
    msgpack_pack_array(&pk, (uint32_t)npins);
    for (size_t i = 0; i < e->ngens; i++)
        if (e->gens[i]->id) {
            msgpack_pack_array(&pk, 2);
            msgpack_pack_uint64(&pk, e->gens[i]->id);
            msgpack_pack_uint64(&pk, e->gens[i]->pinned);
        }
    jd_mp_pack_cstr(&pk, "stats");
    msgpack_pack_array(&pk, JD_NSTATS);
    for (int i = 0; i < JD_NSTATS; i++)
        msgpack_pack_uint64(&pk, e->stats[i]);
    jd_mp_pack_cstr(&pk, "journeys");
    msgpack_pack_map(&pk, (uint32_t)d->njourneys);
    for (size_t i = 0; i < d->njourneys; i++) {
        const jd_journey *j = &d->journeys[i];
        const jd_journey_count *jc = &e->counts[i];
        jd_mp_pack_cstr(&pk, j->name);
        msgpack_pack_array(&pk, 6); /* the version came later: rows without it still load */
        msgpack_pack_uint64(&pk, jc->entered);
        msgpack_pack_uint64(&pk, jc->converted);
        msgpack_pack_uint64(&pk, jc->exited);
        msgpack_pack_uint64(&pk, jc->active);
        msgpack_pack_map(&pk, (uint32_t)j->nstages);
        for (size_t s = 0; s < j->nstages; s++) {
            const jd_stage_count *sc = &jc->stages[s];
            jd_mp_pack_cstr(&pk, j->stages[s].name);
            msgpack_pack_array(&pk, 6);
            msgpack_pack_uint64(&pk, sc->entered);
            msgpack_pack_uint64(&pk, sc->now);
            msgpack_pack_uint64(&pk, sc->moved_on);
            msgpack_pack_uint64(&pk, sc->timed_out);
            msgpack_pack_uint64(&pk, sc->converted);
            msgpack_pack_uint64(&pk, sc->exited);
        }
        msgpack_pack_uint64(&pk, j->version);
    }
    jd_mp_pack_cstr(&pk, "channels");
    msgpack_pack_map(&pk, (uint32_t)d->nchannels);
    for (size_t c = 0; c < d->nchannels; c++) {
        jd_mp_pack_cstr(&pk, d->channels[c].name);
        msgpack_pack_uint64(&pk, e->channel_actions[c]);
    }
    /* journey analytics (jd_stats_save bytes), loaded by name like the counters above */
    jd_buf an;
    jd_buf_init(&an);
    jd_stats_save(jd_engine_stats(e), &an);
    jd_mp_pack_cstr(&pk, "analytics");
    msgpack_pack_bin(&pk, an.len);
    msgpack_pack_bin_body(&pk, an.data, an.len);
    jd_buf_free(&an);
}

static void decode_state(jd_engine *e, const void *v, size_t vn)
{
    jd_persist *p = e->persist;
    msgpack_zone_clear(&p->zone);
    msgpack_object o;
    size_t off = 0;
    if (msgpack_unpack(v, vn, &off, &p->zone, &o) != MSGPACK_UNPACK_SUCCESS || o.type != MSGPACK_OBJECT_MAP)
        return;
    const msgpack_object *x;
    if ((x = jd_mp_get(&o, "lsn", 3)))
        p->lsn = obj_u64(x);
    if ((x = jd_mp_get(&o, "now", 3)))
        jd_clock_advance(&e->clock, obj_i64(x));
    if ((x = jd_mp_get(&o, "event_seq", 9)))
        e->event_seq = obj_u64(x);
    if ((x = jd_mp_get(&o, "timer_seq", 9)))
        e->timers.next_seq = obj_u64(x);
    if ((x = jd_mp_get(&o, "outbox_seq", 10)))
        p->outbox_seq = obj_u64(x);
    if ((x = jd_mp_get(&o, "last_prune", 10)))
        p->last_prune = obj_i64(x);
    if ((x = jd_mp_get(&o, "gen", 3)))
        p->last_gen = obj_u64(x);
    if ((x = jd_mp_get(&o, "gen_seq", 7)))
        p->gen_seq = obj_u64(x);
    jd_buf_reset(&p->last_pins);
    for (uint32_t i = 0; (x = jd_mp_get(&o, "pins", 4)) && x->type == MSGPACK_OBJECT_ARRAY && i < x->via.array.size;
         i++) {
        const msgpack_object *r = &x->via.array.ptr[i];
        if (r->type != MSGPACK_OBJECT_ARRAY || r->via.array.size < 2)
            continue;
        uint64_t pid = obj_u64(&r->via.array.ptr[0]), n = obj_u64(&r->via.array.ptr[1]);
        jd_buf_append(&p->last_pins, &pid, 8);
        jd_buf_append(&p->last_pins, &n, 8);
    }
    if ((x = jd_mp_get(&o, "stats", 5)) && x->type == MSGPACK_OBJECT_ARRAY)
        for (uint32_t i = 0; i < x->via.array.size && i < JD_NSTATS; i++)
            e->stats[i] = obj_u64(&x->via.array.ptr[i]);
    if ((x = jd_mp_get(&o, "journeys", 8)) && x->type == MSGPACK_OBJECT_MAP) {
        for (uint32_t i = 0; i < x->via.map.size; i++) {
            const msgpack_object *k = &x->via.map.ptr[i].key, *r = &x->via.map.ptr[i].val;
            const char *name;
            size_t n;
            const jd_journey *j = obj_str(k, &name, &n) ? NULL : jd_defs_journey(e->defs, name, n);
            if (!j || r->type != MSGPACK_OBJECT_ARRAY || r->via.array.size < 5)
                continue;
            jd_journey_count *jc = &e->counts[j->index];
            jc->entered = obj_u64(&r->via.array.ptr[0]);
            jc->converted = obj_u64(&r->via.array.ptr[1]);
            jc->exited = obj_u64(&r->via.array.ptr[2]);
            jc->active = obj_u64(&r->via.array.ptr[3]);
            const msgpack_object *sm = &r->via.array.ptr[4];
            for (uint32_t s = 0; sm->type == MSGPACK_OBJECT_MAP && s < sm->via.map.size; s++) {
                const msgpack_object *sa = &sm->via.map.ptr[s].val;
                int si = obj_str(&sm->via.map.ptr[s].key, &name, &n) ? -1 : stage_index(j, name, n);
                if (si < 0 || sa->type != MSGPACK_OBJECT_ARRAY || sa->via.array.size < 6)
                    continue;
                jd_stage_count *sc = &jc->stages[si];
                const msgpack_object *f = sa->via.array.ptr;
                *sc = (jd_stage_count){obj_u64(&f[0]), obj_u64(&f[1]), obj_u64(&f[2]),
                                       obj_u64(&f[3]), obj_u64(&f[4]), obj_u64(&f[5])};
            }
        }
    }
    if ((x = jd_mp_get(&o, "channels", 8)) && x->type == MSGPACK_OBJECT_MAP) {
        for (uint32_t i = 0; i < x->via.map.size; i++) {
            const char *name;
            size_t n;
            const jd_channel *c = obj_str(&x->via.map.ptr[i].key, &name, &n) ? NULL : jd_defs_channel(e->defs, name, n);
            if (c)
                e->channel_actions[c->index] = obj_u64(&x->via.map.ptr[i].val);
        }
    }
    if ((x = jd_mp_get(&o, "analytics", 9)) && x->type == MSGPACK_OBJECT_BIN &&
        jd_stats_load(e->analytics, x->via.bin.ptr, x->via.bin.size))
        jd_engine_log(e, "warn", "store: the saved journey analytics are unreadable; counting starts afresh");
}

typedef struct dd_ctx {
    jd_engine *e;
    int64_t now;
    uint64_t loaded;
    int64_t from; /* entries seen before this are past their time to live */
} dd_ctx;

/* messageIds seen are stored a checkpoint at a time, in rows of up to 168 entries keyed
 * by (the newest seen time in the row, its first id's hash a); an entry is 24 bytes:
 * hash a, hash b, seen time, big-endian. Rows are written near the end of the tree,
 * loaded from the start of the time to live, pruned from the front once their newest
 * entry is past it. Not a row an id: at 100K events/s the writer put 100K rows a second
 * into this tree. Stores written before hold a row an id, keyed (seen time, hash) with
 * an empty value; both kinds are read and pruned. */
static void seen_entry(dd_ctx *c, uint64_t a, uint64_t b, int64_t ts)
{
    if (ts < c->from)
        return; /* in a row with younger ones, already past its time to live */
    jd_dedupe_check_hash(&c->e->dedupe, a, b, ts);
    c->loaded++;
}

static int load_seen(const void *k, size_t kn, const void *v, size_t vn, void *ud)
{
    dd_ctx *c = ud;
    const unsigned char *p = k;
    if (kn == 24) { /* one id */
        seen_entry(c, jd_be64_get(p + 8), jd_be64_get(p + 16), key_due(p));
    } else if (kn == 16) { /* a checkpoint's */
        const unsigned char *q = v;
        for (size_t off = 0; off + 24 <= vn; off += 24)
            seen_entry(c, jd_be64_get(q + off), jd_be64_get(q + off + 8), key_due(q + off + 16));
    }
    return 0;
}

/* ---------------------------------------------------------------- open, checkpoint */

int jd_engine_open_store(jd_engine *e, const char *dir, const jd_store_opts *so, jd_error *err)
{
    jd_store *st = jd_store_open(dir, so ? so->map_bytes : 0, 0, err->text, sizeof err->text);
    if (!st)
        return -1;
    if (so && so->no_pack)
        jd_store_set_packing(st, 0);
    jd_persist *p = jd_xcalloc(1, sizeof *p);
    p->store = st;
    p->window_ms = so && so->window_ms > 0 ? so->window_ms : DEFAULT_WINDOW_MS;
    p->horizon = INT64_MIN;
    p->beyond = INT64_MAX;
    p->far_min = INT64_MAX;
    p->far_inflight_min = INT64_MAX;
    jd_buf_init(&p->far_inflight);
    p->cache_users = so && so->cache_users ? so->cache_users : DEFAULT_CACHE_USERS;
    jd_buf_init(&p->aliases);
    jd_buf_init(&p->tm_ins);
    jd_buf_init(&p->tm_del);
    jd_buf_init(&p->far);
    jd_buf_init(&p->outbox);
    jd_buf_init(&p->results);
    jd_buf_init(&p->dd);
    jd_buf_init(&p->gen_rows);
    jd_buf_init(&p->last_pins);
    jd_buf_init(&p->scratch);
    jd_buf_init(&p->rows);
    msgpack_zone_init(&p->zone, 4096);
    e->persist = p;
    if (so && so->dedupe_ttl_ms > 0)
        e->dedupe.ttl_ms = so->dedupe_ttl_ms;
    const void *v;
    size_t vn;
    if (jd_store_get(st, JD_DB_META, "state", 5, &v, &vn) == 0) {
        jd_buf copy;
        jd_buf_init(&copy);
        jd_buf_append(&copy, v, vn);
        decode_state(e, copy.data, copy.len);
        jd_buf_free(&copy);
    }
    dd_ctx c = {e, jd_clock_now(&e->clock), 0, INT64_MIN};
    if (e->dedupe.ttl_ms)
        c.from = c.now - e->dedupe.ttl_ms;
    unsigned char from[8]; /* rows of either kind sort by their first 8 bytes, a time */
    time_put(from, c.from);
    jd_store_scan(st, JD_DB_DEDUPE, from, sizeof from, load_seen, &c);
    restore_gens(e); /* before any person is read in: they may be pinned */
    load_window(e, jd_clock_now(&e->clock));
    return 0;
}

uint64_t jd_engine_store_position(const jd_engine *e)
{
    return e->persist ? e->persist->lsn : 0;
}

static int write_rows(jd_store *st, int db, const jd_buf *b)
{
    const unsigned char *k;
    const char *v;
    uint32_t n;
    for (size_t off = 0; (off = row_next(b, off, &k, &v, &n));)
        if (jd_store_put(st, db, k, 16, v, n, 0))
            return -1;
    return 0;
}

/* A checkpoint's writes, taken on the processor's thread and written on any thread. */
struct jd_ckpt {
    jd_store *store;
    uint64_t lsn;
    jd_buf users;   /* u32 id length, id, u32 value length, value */
    jd_buf aliases; /* as in jd_persist */
    jd_buf tm_ins, tm_del, outbox, results, dd;
    jd_buf gens; /* as jd_persist.gen_rows */
    jd_buf state;
    int64_t prune_before; /* messageIds seen before this leave the store; INT64_MIN: none */
    char err[256];
};

static void ckpt_free(jd_ckpt *c)
{
    if (!c)
        return;
    jd_buf_free(&c->users);
    jd_buf_free(&c->aliases);
    jd_buf_free(&c->tm_ins);
    jd_buf_free(&c->tm_del);
    jd_buf_free(&c->outbox);
    jd_buf_free(&c->results);
    jd_buf_free(&c->dd);
    jd_buf_free(&c->gens);
    jd_buf_free(&c->state);
    free(c);
}

/* A written batch, emptied for the next one. Buffers keep their room: growing them from
 * nothing every second (doubling copies, fresh pages faulted in) stalled the loop for
 * tens of milliseconds at each checkpoint. One that grew past 64 MB in a burst is freed. */
static jd_ckpt *ckpt_recycle(jd_ckpt *c)
{
    jd_buf *bs[] = {&c->users,   &c->aliases, &c->tm_ins, &c->tm_del, &c->outbox,
                    &c->results, &c->dd,      &c->gens,   &c->state};
    for (size_t i = 0; i < sizeof bs / sizeof *bs; i++) {
        if (bs[i]->cap > ((size_t)64 << 20))
            jd_buf_free(bs[i]);
        jd_buf_reset(bs[i]);
    }
    c->lsn = 0;
    c->prune_before = INT64_MIN;
    c->err[0] = '\0';
    return c;
}

/* Moves what is noted in src to the end of dst (src is left empty). */
static void move_buf(jd_buf *dst, jd_buf *src)
{
    if (!dst->len) {
        jd_buf tmp = *dst;
        *dst = *src;
        *src = tmp;
    } else {
        jd_buf_append(dst, src->data, src->len);
    }
    jd_buf_reset(src);
}

/* u's row into the batch: u32 id length, id, u32 value length, value (encoded in place) */
static void put_user(const jd_engine *e, jd_ckpt *c, const jd_user *u)
{
    uint32_t kl = (uint32_t)u->idlen, vl = 0;
    jd_buf_append(&c->users, &kl, 4);
    jd_buf_append(&c->users, u->id, u->idlen);
    size_t at = c->users.len;
    jd_buf_append(&c->users, &vl, 4);
    encode_user(e, u, &c->users);
    vl = (uint32_t)(c->users.len - at - 4);
    memcpy(c->users.data + at, &vl, 4);
}

void jd_persist_touch_slow(jd_engine *e, jd_user *u)
{
    jd_persist *p = e->persist;
    u->ckpt = 0;
    put_user(e, p->building, u);
    p->encoded_early++;
}

/* Encodes the building checkpoint's pending people, for about budget_ns (0: all); 1 when
 * none is left. */
static int encode_pending(jd_engine *e, int64_t budget_ns)
{
    jd_persist *p = e->persist;
    int64_t t0 = budget_ns ? jd_monotonic_ns() : 0;
    for (size_t n = 1; p->pending_at < p->npending; n++) {
        jd_user *u = p->pending[p->pending_at++];
        if (u->ckpt) {
            u->ckpt = 0;
            put_user(e, p->building, u);
            p->encoded++;
        }
        if (budget_ns && n % 32 == 0 && jd_monotonic_ns() - t0 >= budget_ns)
            break;
    }
    if (p->pending_at < p->npending)
        return 0;
    p->npending = p->pending_at = 0;
    return 1;
}

void jd_persist_settle(jd_engine *e)
{
    if (e->persist && e->persist->building)
        encode_pending(e, 0);
}

static void stall_note(jd_persist *p, int64_t ns)
{
    size_t i = 0;
    while (i < NSTALL && (double)ns > stall_le[i] * 1e9)
        i++;
    p->stalls[i]++;
    p->nstalls++;
    p->stall_ns += (uint64_t)ns;
}

/* Takes everything but the people's rows into the batch at lsn and marks the people who
 * changed (u->ckpt): their rows are encoded later, each as it is now. A checkpoint still
 * being built is finished into this one (its rows, then the newer ones, win in order). */
static int ckpt_begin(jd_engine *e, uint64_t lsn)
{
    jd_persist *p = e->persist;
    if (!p || p->inflight)
        return -1;
    jd_ckpt *c = p->building;
    if (c) {
        encode_pending(e, 0);
    } else {
        /* a batch that failed to write goes again, with what came since after it */
        c = p->failed ? p->failed : p->spare;
        if (!c) {
            c = jd_xcalloc(1, sizeof *c);
            c->prune_before = INT64_MIN;
        }
        if (c == p->spare)
            p->spare = NULL;
        p->failed = NULL; /* (a failed one keeps its prune) */
        c->store = p->store;
    }
    c->lsn = lsn;
    /* the changed people become the pending ones (an empty list by now) */
    jd_user **list = p->pending;
    size_t cap = p->cappending;
    p->pending = p->dirty;
    p->cappending = p->capdirty;
    p->npending = p->ndirty;
    p->pending_at = 0;
    p->dirty = list;
    p->capdirty = cap;
    p->ndirty = 0;
    for (size_t i = 0; i < p->npending; i++) {
        p->pending[i]->dirty = 0;
        p->pending[i]->ckpt = 1;
    }
    move_buf(&c->aliases, &p->aliases);
    move_buf(&c->tm_ins, &p->tm_ins);
    move_buf(&c->tm_del, &p->tm_del);
    move_buf(&c->outbox, &p->outbox);
    move_buf(&c->results, &p->results);
    move_buf(&c->dd, &p->dd);
    move_buf(&c->gens, &p->gen_rows);
    /* timers beyond the window stay visible to window loads until the batch is in */
    move_buf(&p->far_inflight, &p->far);
    if (p->far_min < p->far_inflight_min)
        p->far_inflight_min = p->far_min;
    p->far_min = INT64_MAX;
    int64_t now = jd_clock_now(&e->clock);
    if (e->dedupe.ttl_ms && now - p->last_prune >= DEDUPE_PRUNE_MS) {
        p->last_prune = now;
        c->prune_before = now - e->dedupe.ttl_ms;
    }
    uint64_t prev = p->lsn;
    p->lsn = lsn; /* the state row records the position it reflects */
    jd_buf_reset(&c->state);
    encode_state(e, &c->state);
    p->lsn = prev;
    p->building = c;
    return 0;
}

int jd_engine_checkpoint_begin(jd_engine *e, uint64_t lsn)
{
    int64_t t0 = jd_monotonic_ns();
    if (ckpt_begin(e, lsn))
        return -1;
    stall_note(e->persist, jd_monotonic_ns() - t0);
    return 0;
}

int jd_engine_checkpoint_building(const jd_engine *e)
{
    return e->persist && e->persist->building;
}

jd_ckpt *jd_engine_checkpoint_step(jd_engine *e, int64_t budget_ns)
{
    jd_persist *p = e->persist;
    if (!p || !p->building)
        return NULL;
    int64_t t0 = jd_monotonic_ns();
    int done = encode_pending(e, budget_ns > 0 ? budget_ns : 0);
    stall_note(p, jd_monotonic_ns() - t0);
    if (!done)
        return NULL;
    jd_ckpt *c = p->building;
    p->building = NULL;
    p->inflight = c;
    return c;
}

jd_ckpt *jd_engine_checkpoint_take(jd_engine *e, uint64_t lsn)
{
    int64_t t0 = jd_monotonic_ns();
    if (ckpt_begin(e, lsn))
        return NULL;
    encode_pending(e, 0);
    jd_persist *p = e->persist;
    jd_ckpt *c = p->building;
    p->building = NULL;
    p->inflight = c;
    stall_note(p, jd_monotonic_ns() - t0);
    return c;
}

void jd_persist_metrics(const jd_engine *e, jd_buf *b)
{
    const jd_persist *p = e->persist;
    if (!p)
        return;
    jd_buf_puts(b, "# HELP journeyd_checkpoint_pause_seconds Pauses of the processor loop for checkpoints: "
                   "taking one, and each slice of encoding its people.\n"
                   "# TYPE journeyd_checkpoint_pause_seconds histogram\n");
    uint64_t cum = 0;
    for (int i = 0; i < NSTALL; i++) {
        cum += p->stalls[i];
        jd_buf_printf(b, "journeyd_checkpoint_pause_seconds_bucket{le=\"%g\"} %llu\n", stall_le[i],
                      (unsigned long long)cum);
    }
    jd_buf_printf(b,
                  "journeyd_checkpoint_pause_seconds_bucket{le=\"+Inf\"} %llu\n"
                  "journeyd_checkpoint_pause_seconds_sum %.6f\njourneyd_checkpoint_pause_seconds_count %llu\n",
                  (unsigned long long)p->nstalls, (double)p->stall_ns / 1e9, (unsigned long long)p->nstalls);
    jd_buf_printf(b,
                  "# HELP journeyd_checkpoint_people_total People encoded for checkpoints, by when: in a "
                  "slice, or early, before a change to them.\n# TYPE journeyd_checkpoint_people_total counter\n"
                  "journeyd_checkpoint_people_total{when=\"slice\"} %llu\n"
                  "journeyd_checkpoint_people_total{when=\"early\"} %llu\n",
                  (unsigned long long)p->encoded, (unsigned long long)p->encoded_early);
}

static int prune_visit(const void *k, size_t kn, const void *v, size_t vn, void *ud)
{
    (void)v;
    (void)vn;
    jd_ckpt *c = ud;
    if ((kn != 24 && kn != 16) || key_due(k) >= c->prune_before)
        return 1; /* the rest is younger */
    /* after the state row (see write_batch): the key's length, then the key */
    jd_buf_putc(&c->state, (char)kn);
    jd_buf_append(&c->state, k, kn);
    return 0;
}

/* Entries a row: 168 x 24 bytes fill one 4 KB overflow page. Bigger values need runs of
 * free pages, which LMDB's free list often lacks: the file grew instead. */
#define SEEN_PER_ROW 168

/* The actions decided since the last checkpoint: rows noted by jd_persist_action (the id
 * as key; the sequence number, then the row, as value). */
static int write_outbox(jd_ckpt *c)
{
    const unsigned char *k;
    const char *v;
    uint32_t n;
    int legacy = c->outbox.len && jd_outbox_legacy(c->store);
    for (size_t off = 0; (off = row_next(&c->outbox, off, &k, &v, &n));)
        if (n < 8 || jd_outbox_add(c->store, k, jd_be64_get((const unsigned char *)v), v + 8, n - 8, legacy))
            return -1;
    return 0;
}

/* The messageIds first seen since the last checkpoint, as rows of up to SEEN_PER_ROW
 * (the layout is described above seen_entry). */
static int write_seen(jd_ckpt *c)
{
    size_t n = c->dd.len / 24;
    for (size_t first = 0; first < n; first += SEEN_PER_ROW) {
        size_t end = first + SEEN_PER_ROW < n ? first + SEEN_PER_ROW : n;
        unsigned char v[SEEN_PER_ROW * 24];
        int64_t newest = INT64_MIN;
        uint64_t a0 = 0;
        for (size_t i = first; i < end; i++) {
            uint64_t a, b;
            int64_t ts;
            memcpy(&a, c->dd.data + i * 24, 8);
            memcpy(&b, c->dd.data + i * 24 + 8, 8);
            memcpy(&ts, c->dd.data + i * 24 + 16, 8);
            if (i == first)
                a0 = a;
            if (ts > newest)
                newest = ts;
            unsigned char *e = v + (i - first) * 24;
            jd_be64_put(e, a);
            jd_be64_put(e + 8, b);
            time_put(e + 16, ts);
        }
        /* the first id's hash makes the key unique: an id is noted once within its time
         * to live, and a row's newest time moves on past that (a checkpoint's LSN would
         * not do: a store without a log checkpoints at LSN 0) */
        unsigned char key[16];
        time_put(key, newest);
        jd_be64_put(key + 8, a0);
        if (jd_store_put(c->store, JD_DB_DEDUPE, key, 16, v, (end - first) * 24, 0))
            return -1;
    }
    return 0;
}

static int write_batch(jd_ckpt *c)
{
    jd_store *st = c->store;
    for (size_t off = 0; off + 8 <= c->users.len;) {
        uint32_t kl, vl;
        memcpy(&kl, c->users.data + off, 4);
        const char *k = c->users.data + off + 4;
        memcpy(&vl, k + kl, 4);
        if (jd_store_put(st, JD_DB_USERS, k, kl, k + kl + 4, vl, 0))
            return -1;
        off += 8 + kl + vl;
    }
    for (size_t off = 0; off < c->aliases.len;) {
        const char *from = c->aliases.data + off, *to = from + strlen(from) + 1;
        if (jd_store_put(st, JD_DB_ALIASES, from, strlen(from), to, strlen(to), 0))
            return -1;
        off = (size_t)(to - c->aliases.data) + strlen(to) + 1;
    }
    if (write_rows(st, JD_DB_TIMERS, &c->tm_ins))
        return -1;
    for (size_t off = 0; off + 16 <= c->tm_del.len; off += 16)
        if (jd_store_del(st, JD_DB_TIMERS, c->tm_del.data + off, 16))
            return -1;
    /* an action already in the outbox keeps its row: delivery may have moved it on */
    if (write_outbox(c))
        return -1;
    /* then what delivery made of them (rows decided in this interval exist by now) */
    for (size_t off = 0; off < c->results.len;) {
        const char *id = c->results.data + off, *status = id + strlen(id) + 1, *error = status + strlen(status) + 1;
        off = (size_t)(error - c->results.data) + strlen(error) + 1;
        uint32_t attempts;
        int64_t next;
        memcpy(&attempts, c->results.data + off, 4);
        memcpy(&next, c->results.data + off + 4, 8);
        off += 12;
        if (jd_outbox_set(st, id, status, attempts, next, error[0] ? error : NULL) < 0)
            return -1;
    }
    if (write_seen(c))
        return -1;
    /* script versions, with the rows of the people pinned to them and the state row that
     * counts those */
    if (write_gens(st, &c->gens))
        return -1;
    size_t state_len = c->state.len;
    if (jd_store_put(st, JD_DB_META, "state", 5, c->state.data, state_len, 0))
        return -1;
    if (c->prune_before != INT64_MIN) {
        if (jd_store_scan(st, JD_DB_DEDUPE, NULL, 0, prune_visit, c) < 0)
            return -1;
        for (size_t off = state_len; off < c->state.len; off += 1 + (unsigned char)c->state.data[off])
            if (jd_store_del(st, JD_DB_DEDUPE, c->state.data + off + 1, (unsigned char)c->state.data[off]))
                return -1;
        c->state.len = state_len;
    }
    return 0;
}

int jd_ckpt_write(jd_ckpt *c)
{
    if (jd_store_begin(c->store) || write_batch(c) || jd_store_commit(c->store)) {
        snprintf(c->err, sizeof c->err, "%s", jd_store_error(c->store));
        jd_store_abort(c->store);
        return -1;
    }
    c->err[0] = '\0';
    return 0;
}

/* Whether every generation u is pinned to has its sources in the store (so reading u back
 * pins it again). */
static int pins_stored(const jd_user *u)
{
    for (const jd_instance *in = u->npinned ? u->pinned : NULL; in; in = in->next)
        if (in->pin && !in->pin->id)
            return 0;
    return 1;
}

/* After a checkpoint everything is in the store: people beyond the cache size who have
 * no timer in memory and no change since leave memory (they come back on first use,
 * pinned people to the generation they are pinned to);
 * the alias cache is dropped whole when it is over the size. */
static void evict(jd_engine *e)
{
    jd_persist *p = e->persist;
    if (e->users.count > p->cache_users) {
        jd_buf ids;
        jd_buf_init(&ids);
        size_t it = 0, want = e->users.count - p->cache_users * 9 / 10;
        const jd_map_slot *slot;
        while (want && jd_map_next(&e->users, &it, &slot)) {
            const jd_user *u = slot->value;
            /* pinned people too: read back, they are pinned again (their row names the
             * generation, whose sources are in the store) */
            if (u->dirty || u->ckpt || u->timers || u == e->user || !pins_stored(u))
                continue;
            jd_buf_append(&ids, &u, sizeof u);
            want--;
        }
        for (size_t off = 0; off < ids.len; off += sizeof(jd_user *)) {
            jd_user *u;
            memcpy(&u, ids.data + off, sizeof u);
            jd_map_del(&e->users, u->id, u->idlen);
            jd_user_free(u);
        }
        jd_buf_free(&ids);
    }
    if (e->aliases.count > p->cache_users && !p->aliases.len) {
        jd_map_free(&e->aliases, free);
        jd_map_init(&e->aliases);
    }
}

int jd_engine_checkpoint_done(jd_engine *e, jd_ckpt *c, jd_error *err)
{
    jd_persist *p = e->persist;
    p->inflight = NULL;
    jd_buf_reset(&p->far_inflight); /* committed, or kept in the failed batch's rows */
    p->far_inflight_min = INT64_MAX;
    if (c->err[0]) {
        snprintf(err->text, sizeof err->text, "%s", c->err);
        c->err[0] = '\0';
        p->failed = c; /* nothing is lost: it is written first next time */
        /* its far timers must stay visible: put them back among the uncommitted */
        const unsigned char *k;
        const char *v;
        uint32_t n;
        for (size_t off = 0; (off = row_next(&c->tm_ins, off, &k, &v, &n));)
            if (key_due(k) >= p->horizon) {
                row_put(&p->far, k, v, n);
                if (key_due(k) < p->far_min)
                    p->far_min = key_due(k);
            }
        return -1;
    }
    p->lsn = c->lsn;
    ckpt_free(p->spare);
    p->spare = ckpt_recycle(c);
    evict(e);
    return 0;
}

int jd_engine_checkpoint(jd_engine *e, uint64_t lsn, jd_error *err)
{
    if (!e->persist)
        return 0;
    jd_ckpt *c = jd_engine_checkpoint_take(e, lsn);
    if (!c) {
        snprintf(err->text, sizeof err->text, "a checkpoint is being written");
        return -1;
    }
    jd_ckpt_write(c);
    return jd_engine_checkpoint_done(e, c, err);
}

void jd_persist_free(jd_engine *e)
{
    jd_persist *p = e->persist;
    if (!p)
        return;
    jd_store_close(p->store);
    ckpt_free(p->failed);
    ckpt_free(p->spare);
    ckpt_free(p->building);
    free(p->pending);
    jd_buf_free(&p->far_inflight);
    free(p->dirty);
    jd_buf_free(&p->aliases);
    jd_buf_free(&p->tm_ins);
    jd_buf_free(&p->tm_del);
    jd_buf_free(&p->far);
    jd_buf_free(&p->outbox);
    jd_buf_free(&p->results);
    jd_buf_free(&p->dd);
    jd_buf_free(&p->gen_rows);
    jd_buf_free(&p->last_pins);
    jd_buf_free(&p->scratch);
    jd_buf_free(&p->rows);
    msgpack_zone_destroy(&p->zone);
    free(p);
    e->persist = NULL;
}

void jd_persist_all_changed(jd_engine *e)
{
    size_t it = 0;
    const jd_map_slot *slot;
    while (jd_map_next(&e->users, &it, &slot))
        jd_persist_user_changed(e, slot->value);
}

jd_store *jd_engine_store(const jd_engine *e)
{
    return e->persist ? e->persist->store : NULL;
}

typedef struct scan_instances {
    jd_stored_instance_fn fn;
    void *ud;
    msgpack_zone zone;
} scan_instances;

/* The instance list of a stored profile row (unpacked into zone), or NULL. */
static const msgpack_object *row_instances(msgpack_zone *zone, const void *v, size_t vn)
{
    msgpack_zone_clear(zone);
    msgpack_object o; /* its elements live in the zone: the list outlives o */
    size_t off = 0;
    if (msgpack_unpack(v, vn, &off, zone, &o) != MSGPACK_UNPACK_SUCCESS || o.type != MSGPACK_OBJECT_ARRAY ||
        o.via.array.size < 6 || o.via.array.ptr[4].type != MSGPACK_OBJECT_ARRAY)
        return NULL;
    return &o.via.array.ptr[4];
}

static int visit_user(const void *k, size_t kn, const void *v, size_t vn, void *ud)
{
    (void)k;
    (void)kn;
    scan_instances *sc = ud;
    const msgpack_object *list = row_instances(&sc->zone, v, vn);
    if (!list)
        return 0;
    for (uint32_t i = 0; i < list->via.array.size; i++) {
        jd_stored_instance si;
        if (stored_instance(&list->via.array.ptr[i], &si) == 0 && sc->fn(&si, sc->ud))
            return 1;
    }
    return 0;
}

/* The journeys of the state row: their version (0: not recorded) and stage names, as
 * the scripts of the last checkpoint defined them. */
static void scan_journeys(jd_store *st, jd_stored_journey_fn fn, void *ud)
{
    const void *v;
    size_t vn, off = 0;
    if (!fn || jd_store_get(st, JD_DB_META, "state", 5, &v, &vn) != 0)
        return;
    msgpack_zone zone;
    msgpack_zone_init(&zone, 4096);
    msgpack_object o;
    const msgpack_object *x;
    if (msgpack_unpack(v, vn, &off, &zone, &o) == MSGPACK_UNPACK_SUCCESS && o.type == MSGPACK_OBJECT_MAP &&
        (x = jd_mp_get(&o, "journeys", 8)) && x->type == MSGPACK_OBJECT_MAP) {
        for (uint32_t i = 0; i < x->via.map.size; i++) {
            const msgpack_object *r = &x->via.map.ptr[i].val;
            jd_stored_journey sj = {0};
            if (obj_str(&x->via.map.ptr[i].key, &sj.name, &sj.namen) || r->type != MSGPACK_OBJECT_ARRAY ||
                r->via.array.size < 5 || r->via.array.ptr[4].type != MSGPACK_OBJECT_MAP)
                continue;
            sj.version = r->via.array.size > 5 ? obj_u64(&r->via.array.ptr[5]) : 0;
            const msgpack_object *sm = &r->via.array.ptr[4];
            sj.stages = jd_xcalloc(sm->via.map.size + 1, sizeof *sj.stages);
            sj.stagen = jd_xcalloc(sm->via.map.size + 1, sizeof *sj.stagen);
            for (uint32_t k = 0; k < sm->via.map.size; k++)
                if (!obj_str(&sm->via.map.ptr[k].key, &sj.stages[sj.nstages], &sj.stagen[sj.nstages]))
                    sj.nstages++;
            fn(&sj, ud);
            free(sj.stages);
            free(sj.stagen);
        }
    }
    msgpack_zone_destroy(&zone);
}

int jd_persist_scan_instances(const char *store_dir, jd_stored_journey_fn jfn, jd_stored_instance_fn fn, void *ud,
                              char *err, size_t errlen)
{
    jd_store *st = jd_store_open(store_dir, 0, 1, err, errlen);
    if (!st)
        return -1;
    scan_journeys(st, jfn, ud);
    scan_instances sc = {.fn = fn, .ud = ud};
    msgpack_zone_init(&sc.zone, 4096);
    int rc = jd_store_scan(st, JD_DB_USERS, NULL, 0, visit_user, &sc) < 0 ? -1 : 0;
    if (rc)
        snprintf(err, errlen, "%s: cannot read the people in the store", store_dir);
    msgpack_zone_destroy(&sc.zone);
    jd_store_close(st);
    return rc;
}

typedef struct active_scan {
    jd_engine *e;
    int (*want)(const char *journey, size_t n, void *ud);
    void *ud;
    msgpack_zone zone;
    jd_buf ids; /* u32 length, then the id, repeated */
} active_scan;

static int visit_active(const void *k, size_t kn, const void *v, size_t vn, void *ud)
{
    active_scan *sc = ud;
    if (jd_map_get(&sc->e->users, k, kn))
        return 0; /* in memory already */
    const msgpack_object *list = row_instances(&sc->zone, v, vn);
    if (!list)
        return 0;
    for (uint32_t i = 0; i < list->via.array.size; i++) {
        jd_stored_instance si;
        if (stored_instance(&list->via.array.ptr[i], &si) == 0 && si.status == JD_INST_ACTIVE &&
            sc->want(si.journey, si.journeyn, sc->ud)) {
            uint32_t n = (uint32_t)kn;
            jd_buf_append(&sc->ids, &n, sizeof n);
            jd_buf_append(&sc->ids, k, kn);
            break;
        }
    }
    return 0;
}

void jd_persist_load_active(jd_engine *e, int (*want)(const char *journey, size_t n, void *ud), void *ud)
{
    if (!e->persist)
        return;
    active_scan sc = {.e = e, .want = want, .ud = ud};
    msgpack_zone_init(&sc.zone, 4096);
    jd_buf_init(&sc.ids);
    /* ids first: reading a person back opens its own read of the store */
    if (jd_store_scan(e->persist->store, JD_DB_USERS, NULL, 0, visit_active, &sc) < 0)
        jd_engine_log(e, "error", "reload: cannot scan the stored people; those not in memory are not pinned");
    for (size_t off = 0; off + sizeof(uint32_t) <= sc.ids.len;) {
        uint32_t n;
        memcpy(&n, sc.ids.data + off, sizeof n);
        off += sizeof n;
        jd_engine_user(e, sc.ids.data + off, n);
        off += n;
    }
    jd_buf_free(&sc.ids);
    msgpack_zone_destroy(&sc.zone);
}
