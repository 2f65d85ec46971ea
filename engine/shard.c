#define _GNU_SOURCE
#include "shard.h"

#include <errno.h>
#include <event2/event.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "delivery.h"
#include "durable.h"
#include "engine_internal.h"
#include "map.h"
#include "serve.h"
#include "store.h"

/* ---------------------------------------------------------------- types */

typedef struct inbox_rec {
    uint64_t seq; /* the front's number for it on this shard (1, 2, ...) */
    size_t off, len;
    uint32_t crc; /* of the record, for the log: computed by the front, off the shard's thread */
    int link;     /* a link record: its failure is reported to the front */
    uint64_t link_id;
} inbox_rec;

typedef struct shard_call {
    void (*fn)(jd_server *, void *);
    void *arg;
    int done;
} shard_call;

typedef struct jd_shard {
    jd_server srv; /* the shard's engine, log, store, dispatcher, loop, timer */
    struct jd_shards *all;
    pthread_t thread;
    int started;
    /* the inbox: the front appends, the shard's thread takes it all at once */
    pthread_mutex_t mu;
    pthread_cond_t cv; /* calls done */
    jd_buf in_data;
    inbox_rec *in_recs;
    size_t in_n, in_cap;
    shard_call **calls;
    size_t ncalls, capcalls;
    int stop;
    int efd;
    struct event *inbox_ev;
    /* the shard thread's side of the swap */
    jd_buf work_data;
    inbox_rec *work_recs;
    size_t work_cap;
    jd_log_rec *logrecs; /* the inbox's records as the log takes them */
    size_t nlogrecs;
    uint64_t last_lsn; /* the last record it appended to its log */
    /* the front's side: records staged during a request, handed over at its end */
    uint64_t pushed;
    jd_buf st_data;
    inbox_rec *st_recs;
    size_t st_n, st_cap;
    /* both: the last seq durable and processed (or refused) */
    _Atomic uint64_t done;
    pthread_mutex_t fail_mu;
    uint64_t *failed; /* seqs the log refused, ascending */
    size_t nfailed, capfailed;
} jd_shard;

/* A record held while its person's earlier id is linked on another shard. */
typedef struct held_item {
    jd_buf rec;
    jd_waitset *ws;
} held_item;

typedef struct handoff {
    uint64_t id;
    char *from, *to;
    size_t fromn, ton;
    int dst;
    held_item *items; /* items[0]: the identify or alias itself */
    size_t n, cap;
    /* more ids held behind it: those of the links it holds (their later events must not
     * overtake them) */
    char **also;
    size_t nalso;
    struct handoff *next;
} handoff;

typedef struct export_msg {
    uint64_t link;
    jd_buf profile;
    int failed;
} export_msg;

struct jd_waitset {
    uint64_t *lo, *hi; /* per shard: the first and last seq handed to it (0: none) */
    uint32_t held;     /* records still held by a handoff */
    int failed;
    void (*fn)(void *, int);
    void *ctx;
};

typedef struct jd_shards {
    jd_shard **s;
    int n;
    jd_server *front;
    int efd; /* shards wake the front: something is done, or an export came */
    struct event *ev;
    pthread_mutex_t mu; /* exports */
    export_msg *exports;
    size_t nexp, capexp;
    jd_waitset **waits; /* first in, first out */
    size_t whead, wn, wcap;
    jd_map routes; /* anonymous id -> the user id it was linked to, on another shard */
    jd_map held;   /* id -> handoff in flight */
    handoff *handoffs;
    uint64_t next_link;
    msgpack_zone zone;
} jd_shards;

static void wake(int fd)
{
    uint64_t one = 1;
    ssize_t w = write(fd, &one, sizeof one);
    (void)w;
}

static void drain_fd(int fd)
{
    uint64_t v;
    ssize_t r = read(fd, &v, sizeof v);
    (void)r;
}

/* ---------------------------------------------------------------- layout */

int jd_shard_of(const char *id, size_t n, int nshards)
{
    if (nshards <= 1)
        return 0;
    /* FNV-1a, 64 bit: stable across builds and versions (the data directory depends on it) */
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)id[i];
        h *= 0x100000001b3ULL;
    }
    return (int)(h % (uint64_t)nshards);
}

void jd_shard_dir(const char *data_dir, int nshards, int k, char *out, size_t n)
{
    if (nshards <= 1)
        snprintf(out, n, "%s", data_dir);
    else
        snprintf(out, n, "%s/shard-%d", data_dir, k);
}

static int is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

int jd_shards_on_disk(const char *data_dir, char *err, size_t errlen)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/shard-0", data_dir);
    if (!is_dir(p)) {
        snprintf(p, sizeof p, "%s/store", data_dir);
        return is_dir(p) ? 1 : 0;
    }
    int n = 0;
    for (;;) {
        snprintf(p, sizeof p, "%s/shard-%d", data_dir, n);
        if (!is_dir(p))
            break;
        n++;
    }
    snprintf(p, sizeof p, "%s/store", data_dir);
    if (is_dir(p)) {
        snprintf(err, errlen, "%s holds both a single store and shard directories", data_dir);
        return -1;
    }
    return n;
}

/* ---------------------------------------------------------------- the shard's thread */

static void notify_done(void *arg);

typedef struct done_note {
    jd_shard *sh;
    uint64_t seq;
} done_note;

static void record_failed(jd_shard *sh, uint64_t seq)
{
    pthread_mutex_lock(&sh->fail_mu);
    if (sh->nfailed == sh->capfailed) {
        sh->capfailed = sh->capfailed ? sh->capfailed * 2 : 16;
        sh->failed = jd_xrealloc(sh->failed, sh->capfailed * sizeof *sh->failed);
    }
    sh->failed[sh->nfailed++] = seq;
    pthread_mutex_unlock(&sh->fail_mu);
}

static void post_export(jd_shards *all, uint64_t link, const void *p, size_t n, int failed)
{
    pthread_mutex_lock(&all->mu);
    if (all->nexp == all->capexp) {
        all->capexp = all->capexp ? all->capexp * 2 : 16;
        all->exports = jd_xrealloc(all->exports, all->capexp * sizeof *all->exports);
    }
    export_msg *m = &all->exports[all->nexp++];
    m->link = link;
    m->failed = failed;
    jd_buf_init(&m->profile);
    jd_buf_append(&m->profile, p, n);
    pthread_mutex_unlock(&all->mu);
    wake(all->efd);
}

static void on_export(uint64_t link, const void *profile, size_t len, void *ud)
{
    jd_shard *sh = ud;
    post_export(sh->all, link, profile, len, 0);
}

static void on_inbox(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    jd_shard *sh = arg;
    drain_fd(fd);
    pthread_mutex_lock(&sh->mu);
    /* swap: the front goes on filling an empty inbox while this thread logs the batch */
    jd_buf d = sh->in_data;
    sh->in_data = sh->work_data;
    sh->work_data = d;
    inbox_rec *r = sh->in_recs;
    size_t n = sh->in_n, cap = sh->in_cap;
    sh->in_recs = sh->work_recs;
    sh->in_cap = sh->work_cap;
    sh->in_n = 0;
    sh->work_recs = r;
    sh->work_cap = cap;
    size_t ncalls = sh->ncalls;
    shard_call *calls[64];
    if (ncalls > 64)
        ncalls = 64;
    if (ncalls) {
        memcpy(calls, sh->calls, ncalls * sizeof *calls);
        memmove(sh->calls, sh->calls + ncalls, (sh->ncalls - ncalls) * sizeof *calls);
        sh->ncalls -= ncalls;
    }
    int stop = sh->stop;
    if (sh->ncalls)
        wake(sh->efd);
    pthread_mutex_unlock(&sh->mu);
    jd_server *s = &sh->srv;
    uint64_t last = n ? r[n - 1].seq : 0;
    if (n) { /* the whole inbox into the log under one lock */
        if (n > sh->nlogrecs) {
            sh->nlogrecs = n * 2;
            sh->logrecs = jd_xrealloc(sh->logrecs, sh->nlogrecs * sizeof *sh->logrecs);
        }
        for (size_t i = 0; i < n; i++)
            sh->logrecs[i] = (jd_log_rec){sh->work_data.data + r[i].off, r[i].len, r[i].crc};
        uint64_t first;
        if (jd_durable_append_batch(s, sh->logrecs, n, &first) == 0) {
            sh->last_lsn = first + n - 1;
        } else {
            for (size_t i = 0; i < n; i++) {
                record_failed(sh, r[i].seq);
                if (r[i].link)
                    post_export(sh->all, r[i].link_id, NULL, 0, 1);
            }
        }
    }
    jd_buf_reset(&sh->work_data);
    if (last) {
        done_note *dn = jd_xcalloc(1, sizeof *dn);
        *dn = (done_note){sh, last};
        jd_durable_wait(s, sh->last_lsn, notify_done, dn);
    }
    for (size_t i = 0; i < ncalls; i++) {
        calls[i]->fn(s, calls[i]->arg);
        pthread_mutex_lock(&sh->mu);
        calls[i]->done = 1;
        pthread_cond_broadcast(&sh->cv);
        pthread_mutex_unlock(&sh->mu);
    }
    if (stop)
        event_base_loopexit(s->base, NULL);
}

static void notify_done(void *arg)
{
    done_note *dn = arg;
    atomic_store(&dn->sh->done, dn->seq);
    wake(dn->sh->all->efd);
    free(dn);
}

static void *shard_main(void *arg)
{
    jd_shard *sh = arg;
    jd_serve_arm_timer(&sh->srv);
    event_base_dispatch(sh->srv.base);
    return NULL;
}

/* ---------------------------------------------------------------- the front */

static void fire_waiters(jd_shards *all);
static void route(jd_shards *all, const void *rec, size_t len, const jd_event *ev, jd_waitset *ws);

static int set_failed(jd_shards *all, jd_waitset *ws)
{
    int failed = ws->failed;
    for (int k = 0; k < all->n && !failed; k++) {
        if (!ws->hi[k])
            continue;
        jd_shard *sh = all->s[k];
        pthread_mutex_lock(&sh->fail_mu);
        for (size_t i = 0; i < sh->nfailed; i++)
            if (sh->failed[i] >= ws->lo[k] && sh->failed[i] <= ws->hi[k])
                failed = 1;
        /* waits complete in order: refusals up to this wait's last are of no one's concern */
        size_t keep = 0;
        for (size_t i = 0; i < sh->nfailed; i++)
            if (sh->failed[i] > ws->hi[k])
                sh->failed[keep++] = sh->failed[i];
        sh->nfailed = keep;
        pthread_mutex_unlock(&sh->fail_mu);
    }
    return failed;
}

static int ws_ready(const jd_shards *all, const jd_waitset *ws)
{
    if (ws->held)
        return 0;
    for (int k = 0; k < all->n; k++)
        if (ws->hi[k] && atomic_load(&all->s[k]->done) < ws->hi[k])
            return 0;
    return 1;
}

static void ws_free(jd_waitset *ws)
{
    free(ws->lo);
    free(ws);
}

static void fire_waiters(jd_shards *all)
{
    while (all->whead < all->wn && ws_ready(all, all->waits[all->whead])) {
        jd_waitset *ws = all->waits[all->whead++];
        int failed = set_failed(all, ws);
        ws->fn(ws->ctx, failed);
        ws_free(ws);
    }
    if (all->whead == all->wn)
        all->whead = all->wn = 0;
}

static void push(jd_shards *all, int k, const void *rec, size_t len, jd_waitset *ws, uint64_t link_id)
{
    jd_shard *sh = all->s[k];
    uint64_t seq = ++sh->pushed;
    if (ws) {
        if (!ws->lo[k])
            ws->lo[k] = seq;
        ws->hi[k] = seq;
    }
    if (sh->st_n == sh->st_cap) {
        sh->st_cap = sh->st_cap ? sh->st_cap * 2 : 256;
        sh->st_recs = jd_xrealloc(sh->st_recs, sh->st_cap * sizeof *sh->st_recs);
    }
    sh->st_recs[sh->st_n++] =
        (inbox_rec){seq, sh->st_data.len, len, jd_log_payload_crc(rec, len), link_id != 0, link_id};
    jd_buf_append(&sh->st_data, rec, len);
}

/* Hands what the front staged to the shards: one lock and at most one wake per shard
 * (a request's records reach the shard's log together, so they share an fdatasync). */
static void flush_pushes(jd_shards *all)
{
    for (int k = 0; k < all->n; k++) {
        jd_shard *sh = all->s[k];
        if (!sh->st_n)
            continue;
        pthread_mutex_lock(&sh->mu);
        int was_empty = sh->in_n == 0;
        if (was_empty) { /* swap the buffers: nothing is copied */
            jd_buf d = sh->in_data;
            sh->in_data = sh->st_data;
            sh->st_data = d;
            inbox_rec *r = sh->in_recs;
            size_t cap = sh->in_cap;
            sh->in_recs = sh->st_recs;
            sh->in_cap = sh->st_cap;
            sh->in_n = sh->st_n;
            sh->st_recs = r;
            sh->st_cap = cap;
        } else {
            if (sh->in_n + sh->st_n > sh->in_cap) {
                sh->in_cap = (sh->in_n + sh->st_n) * 2;
                sh->in_recs = jd_xrealloc(sh->in_recs, sh->in_cap * sizeof *sh->in_recs);
            }
            size_t base = sh->in_data.len;
            for (size_t i = 0; i < sh->st_n; i++) {
                sh->in_recs[sh->in_n + i] = sh->st_recs[i];
                sh->in_recs[sh->in_n + i].off += base;
            }
            sh->in_n += sh->st_n;
            jd_buf_append(&sh->in_data, sh->st_data.data, sh->st_data.len);
        }
        pthread_mutex_unlock(&sh->mu);
        sh->st_n = 0;
        jd_buf_reset(&sh->st_data);
        if (was_empty)
            wake(sh->efd);
    }
}

/* rec with one more key at the end of its map (records are maps of fewer than 65536
 * keys: a fixmap or a map16). */
static void record_with(const unsigned char *rec, size_t len, const char *key, const void *val, size_t vlen,
                        jd_buf *out)
{
    unsigned b = rec[0];
    size_t hdr;
    uint32_t n;
    if ((b & 0xf0) == 0x80) {
        n = b & 0x0f;
        hdr = 1;
    } else {
        n = (uint32_t)rec[1] << 8 | rec[2];
        hdr = 3;
    }
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, jd_buf_msgpack_write);
    msgpack_pack_map(&pk, n + 1);
    jd_buf_append(out, rec + hdr, len - hdr);
    jd_mp_pack_cstr(&pk, key);
    jd_buf_append(out, val, vlen);
}

static const char *canonical(jd_shards *all, jd_str id, size_t *n)
{
    const char *to = all->routes.count ? jd_map_get(&all->routes, id.p, id.n) : NULL;
    if (to) {
        *n = strlen(to);
        return to;
    }
    *n = id.n;
    return id.p;
}

static void hold(handoff *h, const void *rec, size_t len, jd_waitset *ws)
{
    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 4;
        h->items = jd_xrealloc(h->items, h->cap * sizeof *h->items);
    }
    held_item *it = &h->items[h->n++];
    jd_buf_init(&it->rec);
    jd_buf_append(&it->rec, rec, len);
    it->ws = ws;
    if (ws)
        ws->held++;
}

/* id's later events wait behind h too (unless another handoff holds them already). */
static void hold_id(jd_shards *all, handoff *h, const char *id, size_t n)
{
    if (!n || jd_map_get(&all->held, id, n))
        return;
    h->also = jd_xrealloc(h->also, (h->nalso + 1) * sizeof *h->also);
    h->also[h->nalso++] = jd_strndup(id, n);
    jd_map_put(&all->held, id, n, h);
}

static void free_handoff(handoff *h)
{
    for (size_t i = 0; i < h->nalso; i++)
        free(h->also[i]);
    free(h->also);
    free(h->items);
    free(h->from);
    free(h->to);
    free(h);
}

static void route(jd_shards *all, const void *rec, size_t len, const jd_event *ev, jd_waitset *ws)
{
    size_t cn;
    const char *cid = ev->has_user_id ? ev->user_id.p : canonical(all, ev->user_id, &cn);
    if (ev->has_user_id)
        cn = ev->user_id.n;
    jd_str from = {0};
    if (ev->type == JD_EV_IDENTIFY && ev->has_user_id && ev->anonymous_id.n &&
        !jd_str_eq(ev->anonymous_id, ev->user_id.p, ev->user_id.n))
        from = ev->anonymous_id;
    else if (ev->type == JD_EV_ALIAS && ev->previous_id.n && !jd_str_eq(ev->previous_id, ev->user_id.p, ev->user_id.n))
        from = ev->previous_id;
    /* a person whose earlier id is being linked: behind the link, in order */
    if (all->held.count) {
        handoff *h = jd_map_get(&all->held, cid, cn);
        if (!h && from.n)
            h = jd_map_get(&all->held, from.p, from.n);
        if (h) {
            /* a held identify or alias links ids of its own: their events wait with it,
             * or an anonymous event would reach its shard before the link */
            hold_id(all, h, cid, cn);
            hold_id(all, h, from.p, from.n);
            hold(h, rec, len, ws);
            return;
        }
    }
    int dst = jd_shard_of(cid, cn, all->n);
    if (from.n) {
        int src = jd_shard_of(from.p, from.n, all->n);
        if (src == dst) {
            /* linked on its own shard: anonymous events go there by their own hash */
            free(jd_map_del(&all->routes, from.p, from.n));
        } else {
            /* the earlier id's shard records the link and exports its profile first */
            handoff *h = jd_xcalloc(1, sizeof *h);
            h->id = ++all->next_link;
            h->from = jd_strndup(from.p, from.n);
            h->fromn = from.n;
            h->to = jd_strndup(cid, cn);
            h->ton = cn;
            h->dst = dst;
            h->next = all->handoffs;
            all->handoffs = h;
            jd_map_put(&all->held, h->from, h->fromn, h);
            jd_map_put(&all->held, h->to, h->ton, h);
            free(jd_map_put(&all->routes, h->from, h->fromn, jd_strndup(h->to, h->ton)));
            hold(h, rec, len, ws);
            jd_buf link;
            jd_buf_init(&link);
            unsigned char idb[9];
            idb[0] = 0xcf;
            jd_be64_put(idb + 1, h->id);
            record_with(rec, len, "jd_link", idb, sizeof idb, &link);
            push(all, src, link.data, link.len, NULL, h->id);
            jd_buf_free(&link);
            return;
        }
    }
    push(all, dst, rec, len, ws, 0);
}

/* An export is back: the held records go on, the link first with the profile. */
static void finish_handoff(jd_shards *all, const export_msg *m)
{
    handoff **pp = &all->handoffs;
    while (*pp && (*pp)->id != m->link)
        pp = &(*pp)->next;
    handoff *h = *pp;
    if (!h)
        return; /* a link replayed at start: nobody waits for it */
    *pp = h->next;
    jd_map_del(&all->held, h->from, h->fromn);
    jd_map_del(&all->held, h->to, h->ton);
    for (size_t i = 0; i < h->nalso; i++)
        jd_map_del(&all->held, h->also[i], strlen(h->also[i]));
    for (size_t i = 0; i < h->n; i++) {
        held_item *it = &h->items[i];
        if (it->ws)
            it->ws->held--;
        if (m->failed) {
            if (it->ws)
                it->ws->failed = 1;
        } else if (i == 0) {
            jd_buf rec;
            jd_buf_init(&rec);
            record_with((const unsigned char *)it->rec.data, it->rec.len, "jd_fold", m->profile.data, m->profile.len,
                        &rec);
            push(all, h->dst, rec.data, rec.len, it->ws, 0);
            jd_buf_free(&rec);
        } else {
            jd_event ev;
            msgpack_zone_clear(&all->zone);
            if (jd_event_read(it->rec.data, it->rec.len, &all->zone, &ev) == 0)
                route(all, it->rec.data, it->rec.len, &ev, it->ws);
        }
        jd_buf_free(&it->rec);
    }
    if (m->failed) { /* the link was not logged: the alias is not made */
        char *to = jd_map_get(&all->routes, h->from, h->fromn);
        if (to && strlen(to) == h->ton && memcmp(to, h->to, h->ton) == 0)
            free(jd_map_del(&all->routes, h->from, h->fromn));
    }
    free_handoff(h);
}

static void on_front(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    jd_shards *all = arg;
    drain_fd(fd);
    for (;;) {
        pthread_mutex_lock(&all->mu);
        size_t n = all->nexp;
        export_msg *ms = all->exports;
        all->exports = NULL;
        all->nexp = all->capexp = 0;
        pthread_mutex_unlock(&all->mu);
        if (!n)
            break;
        for (size_t i = 0; i < n; i++) {
            finish_handoff(all, &ms[i]);
            jd_buf_free(&ms[i].profile);
        }
        free(ms);
    }
    flush_pushes(all); /* the records the links released */
    fire_waiters(all);
}

/* ---------------------------------------------------------------- wait sets */

jd_waitset *jd_waitset_new(jd_server *s)
{
    jd_waitset *ws = jd_xcalloc(1, sizeof *ws);
    int n = s->shards ? s->shards->n : 1;
    ws->lo = jd_xcalloc(2 * (size_t)n, sizeof *ws->lo);
    ws->hi = ws->lo + n;
    return ws;
}

void jd_waitset_wait(jd_server *s, jd_waitset *ws, void (*fn)(void *, int), void *ctx)
{
    jd_shards *all = s->shards;
    if (!all) {
        int failed = ws->failed;
        ws_free(ws);
        fn(ctx, failed);
        return;
    }
    ws->fn = fn;
    ws->ctx = ctx;
    void *q = all->waits;
    jd_queue_room(&q, &all->whead, &all->wn, &all->wcap, sizeof *all->waits, 256);
    all->waits = q;
    all->waits[all->wn++] = ws;
    flush_pushes(all); /* the end of a request: its records go to the shards */
    fire_waiters(all);
}

void jd_shards_submit(jd_server *front, const void *rec, size_t len, const jd_event *ev, jd_waitset *ws)
{
    jd_shards *all = front->shards;
    if (!all) { /* in-process (tests, fuzzing): processed at once */
        jd_error e;
        if (jd_engine_process(front->engine, rec, len, &e))
            ws->failed = 1;
        return;
    }
    /* a log that cannot write is refused per request (jd_serve_unavailable); one that
     * fails after that is reported through the wait set */
    route(all, rec, len, ev, ws);
}

const char *jd_serve_unavailable(jd_server *s, char *out, size_t n)
{
    out[0] = '\0';
    jd_shards *all = s->shards;
    for (int k = 0; all && k < all->n && !out[0]; k++) {
        char why[256];
        if (*jd_durable_error(&all->s[k]->srv, why, sizeof why))
            snprintf(out, n, "shard %d: %s", k, why);
    }
    return out;
}

/* ---------------------------------------------------------------- calls */

void jd_shards_call(jd_server *front, int k, void (*fn)(jd_server *, void *), void *arg)
{
    jd_shards *all = front->shards;
    if (!all) {
        fn(front, arg);
        return;
    }
    jd_shard *sh = all->s[k];
    shard_call c = {fn, arg, 0};
    shard_call *cp = &c;
    pthread_mutex_lock(&sh->mu);
    if (sh->ncalls == sh->capcalls) {
        sh->capcalls = sh->capcalls ? sh->capcalls * 2 : 8;
        sh->calls = jd_xrealloc(sh->calls, sh->capcalls * sizeof *sh->calls);
    }
    sh->calls[sh->ncalls++] = cp;
    pthread_mutex_unlock(&sh->mu);
    wake(sh->efd);
    pthread_mutex_lock(&sh->mu);
    while (!c.done)
        pthread_cond_wait(&sh->cv, &sh->mu);
    pthread_mutex_unlock(&sh->mu);
}

int jd_shards_count(const jd_server *front)
{
    return front->shards ? front->shards->n : 1;
}

/* ---------------------------------------------------------------- open, close */

typedef struct route_scan {
    jd_shards *all;
    int k;
} route_scan;

/* The front's routes come back from the shards' stores: an alias kept on the shard of
 * its anonymous id whose user lives on another shard. */
static int scan_alias(const void *k, size_t kn, const void *v, size_t vn, void *ud)
{
    route_scan *rs = ud;
    if (jd_shard_of(k, kn, rs->all->n) == rs->k && jd_shard_of(v, vn, rs->all->n) != rs->k)
        free(jd_map_put(&rs->all->routes, k, kn, jd_strndup(v, vn)));
    return 0;
}

int jd_shards_open(jd_server *front, const char *config, const jd_options *opts, const char *data_dir,
                   const char *log_dir, int nshards, char *err, size_t errlen)
{
    int on_disk = jd_shards_on_disk(data_dir, err, errlen);
    if (on_disk < 0)
        return -1;
    if (on_disk && on_disk != nshards) {
        snprintf(err, errlen,
                 "%s holds %d shard%s but %d are configured: set shards = %d (j.config) or JOURNEYD_SHARDS=%d; "
                 "moving people between shards is not supported yet",
                 data_dir, on_disk, on_disk == 1 ? "" : "s", nshards, on_disk, on_disk);
        return -1;
    }
    jd_shards *all = jd_xcalloc(1, sizeof *all);
    all->front = front;
    all->n = nshards;
    all->s = jd_xcalloc((size_t)nshards, sizeof *all->s);
    pthread_mutex_init(&all->mu, NULL);
    jd_map_init(&all->routes);
    jd_map_init(&all->held);
    msgpack_zone_init(&all->zone, 4096);
    all->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    front->shards = all;
    all->ev = event_new(front->base, all->efd, EV_READ | EV_PERSIST, on_front, all);
    event_add(all->ev, NULL);
    for (int k = 0; k < nshards; k++) {
        jd_shard *sh = jd_xcalloc(1, sizeof *sh);
        all->s[k] = sh;
        sh->all = all;
        sh->efd = -1;
        pthread_mutex_init(&sh->mu, NULL);
        pthread_cond_init(&sh->cv, NULL);
        pthread_mutex_init(&sh->fail_mu, NULL);
        jd_buf_init(&sh->in_data);
        jd_buf_init(&sh->work_data);
        jd_buf_init(&sh->st_data);
        if (jd_server_open_core(&sh->srv, config, opts, err, errlen))
            return -1;
        jd_engine_on_export(sh->srv.engine, on_export, sh);
        char dir[4096], ldir[4096];
        jd_shard_dir(data_dir, nshards, k, dir, sizeof dir);
        if (log_dir)
            jd_shard_dir(log_dir, nshards, k, ldir, sizeof ldir);
        if (jd_durable_open(&sh->srv, dir, log_dir ? ldir : NULL, err, errlen) ||
            jd_delivery_open(&sh->srv, err, errlen))
            return -1;
        jd_store *st = jd_engine_store(sh->srv.engine);
        route_scan rs = {all, k};
        if (st && nshards > 1)
            jd_store_scan(st, JD_DB_ALIASES, NULL, 0, scan_alias, &rs);
        sh->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        sh->inbox_ev = event_new(sh->srv.base, sh->efd, EV_READ | EV_PERSIST, on_inbox, sh);
        event_add(sh->inbox_ev, NULL);
    }
    /* every shard's log checked against its store first: a move of log_dir is taken by
     * all shards or by none */
    for (int k = 0; k < nshards; k++)
        if (jd_durable_pair(&all->s[k]->srv, err, errlen))
            return -1;
    for (int k = 0; k < nshards; k++) {
        jd_shard *sh = all->s[k];
        if (pthread_create(&sh->thread, NULL, shard_main, sh)) {
            snprintf(err, errlen, "cannot start shard %d's thread", k);
            return -1;
        }
        char name[24]; /* as top -H and /proc show it: at most 15 characters */
        snprintf(name, sizeof name, "jd-shard-%d", k);
        name[15] = '\0';
        pthread_setname_np(sh->thread, name);
        sh->started = 1;
    }
    return 0;
}

void jd_shards_close(jd_server *front)
{
    jd_shards *all = front->shards;
    if (!all)
        return;
    if (all->s[all->n - 1])
        flush_pushes(all);
    for (int k = 0; k < all->n; k++) {
        jd_shard *sh = all->s[k];
        if (!sh || !sh->started)
            continue;
        pthread_mutex_lock(&sh->mu);
        sh->stop = 1;
        pthread_mutex_unlock(&sh->mu);
        wake(sh->efd);
        pthread_join(sh->thread, NULL);
        sh->started = 0;
    }
    for (int k = 0; k < all->n; k++) {
        jd_shard *sh = all->s[k];
        if (!sh)
            continue;
        if (sh->inbox_ev)
            event_free(sh->inbox_ev);
        if (sh->efd >= 0)
            close(sh->efd);
        jd_server_close(&sh->srv);
        jd_buf_free(&sh->in_data);
        jd_buf_free(&sh->work_data);
        jd_buf_free(&sh->st_data);
        free(sh->st_recs);
        free(sh->in_recs);
        free(sh->work_recs);
        free(sh->logrecs);
        free(sh->calls);
        free(sh->failed);
        pthread_mutex_destroy(&sh->mu);
        pthread_cond_destroy(&sh->cv);
        pthread_mutex_destroy(&sh->fail_mu);
        free(sh);
    }
    /* answers still waiting: their connections are going away with the loop */
    for (size_t i = all->whead; i < all->wn; i++)
        ws_free(all->waits[i]);
    free(all->waits);
    while (all->handoffs) {
        handoff *h = all->handoffs;
        all->handoffs = h->next;
        for (size_t i = 0; i < h->n; i++)
            jd_buf_free(&h->items[i].rec);
        free_handoff(h);
    }
    for (size_t i = 0; i < all->nexp; i++)
        jd_buf_free(&all->exports[i].profile);
    free(all->exports);
    if (all->ev)
        event_free(all->ev);
    if (all->efd >= 0)
        close(all->efd);
    jd_map_free(&all->routes, free);
    jd_map_free(&all->held, NULL);
    msgpack_zone_destroy(&all->zone);
    pthread_mutex_destroy(&all->mu);
    free(all->s);
    free(all);
    front->shards = NULL;
}

/* ---------------------------------------------------------------- admin reads */

typedef struct json_call {
    jd_shard_json_fn fn;
    void *arg;
    char *out;
} json_call;

static void run_json(jd_server *shard, void *arg)
{
    json_call *c = arg;
    c->out = c->fn(shard, c->arg);
}

char *jd_shards_json(jd_server *front, int k, jd_shard_json_fn fn, void *arg)
{
    json_call c = {fn, arg, NULL};
    jd_shards_call(front, k, run_json, &c);
    return c.out;
}

typedef struct own_query {
    const char *id;
    size_t n;
    int own;
} own_query;

static void has_own_profile(jd_server *shard, void *arg)
{
    own_query *q = arg;
    const jd_user *u = jd_engine_find_user(shard->engine, q->id, q->n); /* (or the alias's) */
    q->own = u && u->idlen == q->n && memcmp(u->id, q->id, q->n) == 0;
}

int jd_shards_user_shard(jd_server *front, const char *id, size_t n)
{
    jd_shards *all = front->shards;
    if (!all)
        return 0;
    size_t cn;
    const char *cid = canonical(all, (jd_str){id, n}, &cn);
    int k = jd_shard_of(cid, cn, all->n), own = jd_shard_of(id, n, all->n);
    if (k != own) {
        /* an anonymous id linked to a user on another shard: its own profile, when it
         * has one, stays on its shard (as one engine answers), else the user's */
        own_query q = {id, n, 0};
        jd_shards_call(front, own, has_own_profile, &q);
        if (q.own)
            return own;
    }
    return k;
}

/* Two JSON values as msgpack, summed: maps by key, arrays by index, integers added;
 * anything else is a's. */
static void sum_objects(msgpack_packer *pk, const msgpack_object *a, const msgpack_object *b)
{
    if (a->type == MSGPACK_OBJECT_MAP && b && b->type == MSGPACK_OBJECT_MAP) {
        uint32_t extra = 0;
        for (uint32_t i = 0; i < b->via.map.size; i++) {
            const msgpack_object *k = &b->via.map.ptr[i].key;
            if (k->type == MSGPACK_OBJECT_STR && !jd_mp_get(a, k->via.str.ptr, k->via.str.size))
                extra++;
        }
        msgpack_pack_map(pk, a->via.map.size + extra);
        for (uint32_t i = 0; i < a->via.map.size; i++) {
            const msgpack_object *k = &a->via.map.ptr[i].key;
            msgpack_pack_object(pk, *k);
            const msgpack_object *bv =
                k->type == MSGPACK_OBJECT_STR ? jd_mp_get(b, k->via.str.ptr, k->via.str.size) : NULL;
            sum_objects(pk, &a->via.map.ptr[i].val, bv);
        }
        for (uint32_t i = 0; i < b->via.map.size; i++) {
            const msgpack_object *k = &b->via.map.ptr[i].key;
            if (k->type == MSGPACK_OBJECT_STR && !jd_mp_get(a, k->via.str.ptr, k->via.str.size)) {
                msgpack_pack_object(pk, *k);
                msgpack_pack_object(pk, b->via.map.ptr[i].val);
            }
        }
        return;
    }
    if (a->type == MSGPACK_OBJECT_ARRAY && b && b->type == MSGPACK_OBJECT_ARRAY &&
        a->via.array.size == b->via.array.size) {
        msgpack_pack_array(pk, a->via.array.size);
        for (uint32_t i = 0; i < a->via.array.size; i++)
            sum_objects(pk, &a->via.array.ptr[i], &b->via.array.ptr[i]);
        return;
    }
    if (a->type == MSGPACK_OBJECT_POSITIVE_INTEGER && b && b->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        msgpack_pack_uint64(pk, a->via.u64 + b->via.u64);
        return;
    }
    msgpack_pack_object(pk, *a);
}

char *jd_shards_json_sum(jd_server *front, jd_shard_json_fn fn, void *arg)
{
    int n = jd_shards_count(front);
    char *acc = jd_shards_json(front, 0, fn, arg);
    for (int k = 1; acc && k < n; k++) {
        char *next = jd_shards_json(front, k, fn, arg);
        if (!next)
            continue;
        jd_buf ma, mb, out;
        jd_buf_init(&ma);
        jd_buf_init(&mb);
        jd_buf_init(&out);
        char err[128];
        msgpack_zone z;
        msgpack_zone_init(&z, 4096);
        msgpack_object oa, ob;
        size_t offa = 0, offb = 0;
        if (jd_json_to_msgpack(front->jr, acc, strlen(acc), &ma, err, sizeof err) == 0 &&
            jd_json_to_msgpack(front->jr, next, strlen(next), &mb, err, sizeof err) == 0 &&
            msgpack_unpack(ma.data, ma.len, &offa, &z, &oa) == MSGPACK_UNPACK_SUCCESS &&
            msgpack_unpack(mb.data, mb.len, &offb, &z, &ob) == MSGPACK_UNPACK_SUCCESS) {
            jd_buf packed;
            jd_buf_init(&packed);
            msgpack_packer pk;
            msgpack_packer_init(&pk, &packed, jd_buf_msgpack_write);
            sum_objects(&pk, &oa, &ob);
            jd_json_write_msgpack(front->jw, packed.data, packed.len, &out);
            jd_buf_free(&packed);
            free(acc);
            acc = jd_strndup(out.data, out.len);
        }
        msgpack_zone_destroy(&z);
        jd_buf_free(&ma);
        jd_buf_free(&mb);
        jd_buf_free(&out);
        free(next);
    }
    return acc;
}

typedef struct saved_stats {
    char *bytes;
    size_t len;
    int64_t now;
} saved_stats;

static void save_stats(jd_server *shard, void *arg)
{
    saved_stats *st = arg;
    st->bytes = jd_engine_stats_saved(shard->engine, &st->len);
    st->now = jd_engine_now(shard->engine);
}

char *jd_shards_funnel_json(jd_server *front, const char *name, size_t n, const char *window)
{
    if (!front->shards)
        return jd_engine_funnel_json(front->engine, name, n, window);
    int ns = front->shards->n;
    char *bytes[JD_MAX_SHARDS] = {0};
    size_t lens[JD_MAX_SHARDS] = {0};
    int64_t now = 0;
    for (int k = 0; k < ns; k++) {
        saved_stats st = {0};
        jd_shards_call(front, k, save_stats, &st);
        bytes[k] = st.bytes;
        lens[k] = st.len;
        if (st.now > now)
            now = st.now;
    }
    char *json = jd_engine_funnel_json_sum(front->engine, bytes, lens, (size_t)ns, name, n, window, now);
    for (int k = 0; k < ns; k++)
        free(bytes[k]);
    return json;
}

/* Prometheus text of every shard, summed by series (a series that only some shards have
 * goes after the last line of its family). */
typedef struct mline {
    char *key;     /* a comment line, or a sample's series (name and labels) */
    size_t family; /* length of the family name within key (0: a comment) */
    double v;
    int integral;
} mline;

static size_t family_len(const char *series)
{
    size_t n = strcspn(series, "{ ");
    static const char *const sfx[] = {"_bucket", "_sum", "_count"};
    for (int i = 0; i < 3; i++) {
        size_t l = strlen(sfx[i]);
        if (n > l && memcmp(series + n - l, sfx[i], l) == 0)
            return n - l;
    }
    return n;
}

static void metrics_add(mline **lines, size_t *nl, size_t *cap, jd_map *index, const char *text)
{
    for (const char *p = text; *p;) {
        const char *e = strchr(p, '\n');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len) {
            char *line = jd_strndup(p, len);
            int comment = line[0] == '#';
            char *sp = comment ? NULL : strrchr(line, ' ');
            if (!comment && !sp) {
                free(line);
            } else {
                if (sp)
                    *sp = '\0';
                double v = sp ? strtod(sp + 1, NULL) : 0;
                uintptr_t at = (uintptr_t)jd_map_get(index, line, strlen(line));
                if (at) {
                    (*lines)[at - 1].v += v;
                    (*lines)[at - 1].integral &= sp && !strpbrk(sp + 1, ".eE");
                    free(line);
                } else {
                    size_t fam = comment ? 0 : family_len(line), pos = *nl;
                    if (!comment) /* after the last line of the same family */
                        for (size_t i = *nl; i-- > 0;)
                            if ((*lines)[i].family == fam && memcmp((*lines)[i].key, line, fam) == 0) {
                                pos = i + 1;
                                break;
                            }
                    if (*nl == *cap) {
                        *cap = *cap ? *cap * 2 : 256;
                        *lines = jd_xrealloc(*lines, *cap * sizeof **lines);
                    }
                    memmove(*lines + pos + 1, *lines + pos, (*nl - pos) * sizeof **lines);
                    (*lines)[pos] = (mline){line, fam, v, sp && !strpbrk(sp + 1, ".eE")};
                    (*nl)++;
                    /* positions after pos moved: rebuild the index */
                    for (size_t i = pos; i < *nl; i++)
                        jd_map_put(index, (*lines)[i].key, strlen((*lines)[i].key), (void *)(uintptr_t)(i + 1));
                }
            }
        }
        p += len + (e ? 1 : 0);
    }
}

static void shard_metrics(jd_server *shard, void *arg)
{
    jd_buf *b = arg;
    char *m = jd_engine_metrics(shard->engine);
    jd_buf_puts(b, m);
    free(m);
    char *d = jd_delivery_metrics(shard);
    if (d)
        jd_buf_puts(b, d);
    free(d);
}

char *jd_shards_metrics(jd_server *front)
{
    int n = jd_shards_count(front);
    mline *lines = NULL;
    size_t nl = 0, cap = 0;
    jd_map index;
    jd_map_init(&index);
    /* the front's engine runs the CRM sources' Lua: its errors and memory count too */
    char *fm = jd_engine_metrics(front->engine);
    metrics_add(&lines, &nl, &cap, &index, fm);
    free(fm);
    for (int k = 0; k < n; k++) {
        jd_buf b;
        jd_buf_init(&b);
        jd_shards_call(front, k, shard_metrics, &b);
        metrics_add(&lines, &nl, &cap, &index, jd_buf_cstr(&b));
        jd_buf_free(&b);
    }
    jd_buf out;
    jd_buf_init(&out);
    for (size_t i = 0; i < nl; i++) {
        if (!lines[i].family && lines[i].key[0] == '#')
            jd_buf_printf(&out, "%s\n", lines[i].key);
        else if (lines[i].integral)
            jd_buf_printf(&out, "%s %.0f\n", lines[i].key, lines[i].v);
        else
            jd_buf_printf(&out, "%s %.9g\n", lines[i].key, lines[i].v);
        free(lines[i].key);
    }
    free(lines);
    jd_map_free(&index, NULL);
    jd_buf_printf(&out,
                  "# HELP journeyd_shards Shards: each a processor thread, Lua state, event log and store.\n"
                  "# TYPE journeyd_shards gauge\njourneyd_shards %d\n",
                  n);
    char *s = jd_strndup(out.data, out.len);
    jd_buf_free(&out);
    return s;
}

static char *dead_json(jd_server *shard, void *arg)
{
    (void)arg;
    return jd_delivery_dead_json(shard);
}

char *jd_shards_dead_json(jd_server *front)
{
    /* {"deadletters":[...]} of each: the arrays joined */
    jd_buf out;
    jd_buf_init(&out);
    jd_buf_puts(&out, "{\"deadletters\":[");
    int any = 0;
    for (int k = 0; k < jd_shards_count(front); k++) {
        char *j = jd_shards_json(front, k, dead_json, NULL);
        const char *a = j ? strchr(j, '[') : NULL;
        const char *z = j ? strrchr(j, ']') : NULL;
        if (a && z && z > a + 1) {
            if (any++)
                jd_buf_putc(&out, ',');
            jd_buf_append(&out, a + 1, (size_t)(z - a - 1));
        }
        free(j);
    }
    jd_buf_puts(&out, "]}");
    char *s = jd_strndup(out.data, out.len);
    jd_buf_free(&out);
    return s;
}

typedef struct retry_call {
    const char *id;
    int status;
} retry_call;

static void retry_one(jd_server *shard, void *arg)
{
    retry_call *r = arg;
    r->status = jd_delivery_retry(shard, r->id);
}

int jd_shards_retry(jd_server *front, const char *id)
{
    retry_call r = {id, 404};
    for (int k = 0; k < jd_shards_count(front) && r.status == 404; k++)
        jd_shards_call(front, k, retry_one, &r);
    return r.status;
}
