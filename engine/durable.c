#define _GNU_SOURCE
#include "durable.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "log.h"
#include "serve.h"
#include "store.h"

typedef struct pending_rec {
    uint64_t lsn;
    size_t off, len;
} pending_rec;

typedef struct waiter {
    uint64_t lsn;
    jd_durable_fn fn;
    void *ctx;
} waiter;

struct jd_durable {
    jd_log *log;
    int efd;
    struct event *ev;
    uint64_t processed; /* the last LSN the engine has processed */
    pending_rec *recs;  /* appended, not yet processed, in LSN order */
    size_t nrecs, caprecs, headrec;
    jd_buf data;
    waiter *waits; /* in LSN order: answers go out in the order requests were logged */
    size_t nwaits, capwaits, headwait;
    uint64_t tick_lsn;           /* a tick on its way (0: none) */
    uint64_t checkpointed;       /* the LSN the store reflects */
    int force_checkpoint;        /* state changed outside the log (a reload) */
    struct event *checkpoint_ev; /* every checkpoint interval */
    int64_t checkpoint_ms;
    int checkpoint_failing; /* logged once until it works again */
    /* the checkpoint writer: the store is written off the loop, one batch at a time */
    pthread_t ck_thread;
    int ck_started;
    pthread_mutex_t ck_mu;
    pthread_cond_t ck_cv;
    jd_ckpt *ck_job;  /* handed to the writer */
    jd_ckpt *ck_done; /* written (or failed), back to the loop */
    int ck_busy;      /* a batch is taken and not yet handed back */
    uint64_t ck_lsn;  /* the position the batch reflects */
    int ck_stop;
    int ck_efd;
    struct event *ck_ev;
    struct event *ck_slice_ev;    /* the next slice of the checkpoint being built */
    int paired;                   /* the store names this log (jd_durable_pair) */
    int pair_checked, pair_fresh; /* check_log passed; an empty directory takes over */
    char pair_id[33];             /* the log's id ("" : one is made) */
    char pair_dir[4096];
};

/* The longest the loop encodes people for a checkpoint at one go: the rest waits for the
 * loop's next turn (events in between touch the people they change first). */
#define CK_SLICE_NS 500000

/* The store's writes are background work, the log's syncs are on every answer's path:
 * on one disk a checkpoint's commit (tens of MB of pages, then fdatasync) held the log's
 * fdatasync for 10-50 ms. This thread's I/O goes in the idle class, served when the disk
 * has nothing else to do (mq-deadline and bfq still dispatch it after ~10 s of waiting).
 * In the half-load bench, log syncs over 10 ms: 9-26 a run -> 4-6. Linux only. */
static void background_io(void)
{
#ifdef SYS_ioprio_set
    enum { WHO_THREAD = 1, CLASS_IDLE = 3, CLASS_SHIFT = 13 };
    long rc = syscall(SYS_ioprio_set, WHO_THREAD, 0, CLASS_IDLE << CLASS_SHIFT);
    (void)rc; /* not permitted or not supported: the default class, as before */
#endif
}

static void *ck_writer(void *arg)
{
    jd_durable *d = arg;
    background_io();
    pthread_mutex_lock(&d->ck_mu);
    for (;;) {
        while (!d->ck_job && !d->ck_stop)
            pthread_cond_wait(&d->ck_cv, &d->ck_mu);
        if (!d->ck_job)
            break;
        jd_ckpt *c = d->ck_job;
        pthread_mutex_unlock(&d->ck_mu);
        jd_ckpt_write(c);
        pthread_mutex_lock(&d->ck_mu);
        d->ck_job = NULL;
        d->ck_done = c;
        pthread_cond_broadcast(&d->ck_cv);
        uint64_t one = 1;
        ssize_t w = write(d->ck_efd, &one, sizeof one);
        (void)w;
    }
    pthread_mutex_unlock(&d->ck_mu);
    return NULL;
}

static void checkpoint_failed(jd_server *s, const char *why)
{
    jd_durable *d = s->durable;
    if (!d->checkpoint_failing) {
        jd_buf b;
        jd_buf_init(&b);
        jd_buf_puts(&b, "\"error\":");
        jd_serve_json_string(s, &b, why);
        jd_serve_log(s, "error", "store: checkpoint failed; the event log keeps everything until one works",
                     jd_buf_cstr(&b));
        jd_buf_free(&b);
    }
    d->checkpoint_failing = 1;
}

static void checkpoint_ok(jd_server *s, uint64_t lsn)
{
    jd_durable *d = s->durable;
    if (d->checkpoint_failing)
        jd_serve_log(s, "info", "store: checkpoints work again", NULL);
    d->checkpoint_failing = 0;
    d->checkpointed = lsn;
    jd_log_remove_before(d->log, d->checkpointed + 1);
}

/* A written batch back on the loop. */
static void ck_finish(jd_server *s, jd_ckpt *c)
{
    jd_durable *d = s->durable;
    jd_error err;
    d->ck_busy = 0;
    if (jd_engine_checkpoint_done(s->engine, c, &err))
        checkpoint_failed(s, err.text);
    else
        checkpoint_ok(s, d->ck_lsn);
}

/* Takes a written batch back (waiting for the writer first when asked). */
static void ck_collect(jd_server *s, int wait)
{
    jd_durable *d = s->durable;
    pthread_mutex_lock(&d->ck_mu);
    while (wait && d->ck_job)
        pthread_cond_wait(&d->ck_cv, &d->ck_mu);
    jd_ckpt *c = d->ck_done;
    d->ck_done = NULL;
    pthread_mutex_unlock(&d->ck_mu);
    if (c)
        ck_finish(s, c);
}

static void on_ck_done(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    uint64_t v;
    ssize_t r = read(fd, &v, sizeof v);
    (void)r;
    ck_collect(arg, 0);
}

/* Waits for the batch in flight, if any, and takes it back. */
static void ck_wait(jd_server *s)
{
    if (s->durable->ck_busy)
        ck_collect(s, 1);
}

/* Checkpoints now, in the loop's thread (start, reload, close); one being built is
 * finished into it. */
static void checkpoint_now(jd_server *s)
{
    jd_durable *d = s->durable;
    ck_wait(s);
    if (d->processed <= d->checkpointed && !d->force_checkpoint && !jd_engine_checkpoint_building(s->engine))
        return;
    d->force_checkpoint = 0;
    jd_error err;
    if (jd_engine_checkpoint(s->engine, d->processed, &err))
        checkpoint_failed(s, err.text);
    else
        checkpoint_ok(s, d->processed);
}

/* Encodes a slice of the checkpoint being built; the batch goes to the writer thread
 * once it is complete, else the next slice waits for the loop's next turn (a zero
 * timeout runs after the sockets ready by then). */
static void ck_slice(jd_server *s)
{
    jd_durable *d = s->durable;
    jd_ckpt *c = jd_engine_checkpoint_step(s->engine, CK_SLICE_NS);
    if (!c) {
        if (jd_engine_checkpoint_building(s->engine)) {
            struct timeval now = {0, 0};
            event_add(d->ck_slice_ev, &now);
        }
        return;
    }
    d->ck_busy = 1;
    pthread_mutex_lock(&d->ck_mu);
    d->ck_job = c;
    pthread_cond_signal(&d->ck_cv);
    pthread_mutex_unlock(&d->ck_mu);
}

static void on_ck_slice(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    ck_slice(arg);
}

/* Every interval: what changed is taken at the position processed so far and encoded in
 * slices between events (ck_slice), then written by the writer thread; when it is in,
 * the log segments the store covers are dropped. */
static void checkpoint(jd_server *s)
{
    jd_durable *d = s->durable;
    if (d->ck_busy || jd_engine_checkpoint_building(s->engine) ||
        (d->processed <= d->checkpointed && !d->force_checkpoint))
        return;
    if (!d->ck_started) {
        checkpoint_now(s);
        return;
    }
    if (jd_engine_checkpoint_begin(s->engine, d->processed))
        return;
    d->force_checkpoint = 0;
    d->ck_lsn = d->processed;
    ck_slice(s);
}

static void on_checkpoint(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    checkpoint(arg);
}

void jd_durable_changed(jd_server *s)
{
    if (s->durable)
        s->durable->force_checkpoint = 1;
}

void jd_durable_checkpoint(jd_server *s)
{
    if (!s->durable)
        return;
    s->durable->force_checkpoint = 1;
    checkpoint_now(s);
}

/* Processes the queued records up to LSN durable, in order. */
static void process_records(jd_server *s, uint64_t durable)
{
    jd_durable *d = s->durable;
    while (d->headrec < d->nrecs && d->recs[d->headrec].lsn <= durable) {
        pending_rec *r = &d->recs[d->headrec++];
        jd_error err;
        if (jd_engine_process(s->engine, d->data.data + r->off, r->len, &err))
            jd_serve_log(s, "error", "a logged record could not be processed", NULL);
        d->processed = r->lsn;
    }
    if (d->headrec == d->nrecs) { /* everything processed: reuse the buffers from the start */
        d->headrec = d->nrecs = 0;
        jd_buf_reset(&d->data);
    }
}

static void process_durable(jd_server *s)
{
    jd_durable *d = s->durable;
    process_records(s, jd_log_durable(d->log));
    if (d->tick_lsn && d->processed >= d->tick_lsn)
        d->tick_lsn = 0;
    while (d->headwait < d->nwaits && d->waits[d->headwait].lsn <= d->processed) {
        waiter w = d->waits[d->headwait++];
        w.fn(w.ctx);
    }
    if (d->headwait == d->nwaits)
        d->headwait = d->nwaits = 0;
    jd_serve_log_flush();
    jd_serve_arm_timer(s);
}

static void on_durable(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    uint64_t v;
    ssize_t r = read(fd, &v, sizeof v);
    (void)r;
    process_durable(arg);
}

static int mkdir_p(const char *path)
{
    char p[4096];
    snprintf(p, sizeof p, "%s", path);
    for (char *c = p + 1; *c; c++) {
        if (*c == '/') {
            *c = '\0';
            if (mkdir(p, 0755) && errno != EEXIST)
                return -1;
            *c = '/';
        }
    }
    return mkdir(p, 0755) && errno != EEXIST ? -1 : 0;
}

typedef struct replay_ctx {
    jd_server *s;
    uint64_t n;
} replay_ctx;

static int replay_one(uint64_t lsn, const void *rec, size_t len, void *ud)
{
    replay_ctx *rc = ud;
    jd_error err;
    jd_engine_process(rc->s->engine, rec, len, &err);
    rc->s->durable->processed = lsn;
    rc->n++;
    return 0;
}

/* ---------------------------------------------------------------- the log and its store
 * The event log may live on another disk than the store (log_dir). The store names the log
 * it is checkpointed from (meta "log_id" = the log directory's ID file), so that a changed
 * log_dir never silently skips records the store has not taken in: another store's log is
 * refused, and an empty log directory is taken only when the store says its last stop was
 * clean (meta "log_closed" = the LSN the old log ended at, all of it in the store). */

static const char LOG_ID_KEY[] = "log_id", LOG_CLOSED_KEY[] = "log_closed";
enum { LOG_ID_LEN = 32 };

static int read_log_id(const char *dir, char id[LOG_ID_LEN + 1])
{
    char p[4200];
    snprintf(p, sizeof p, "%s/ID", dir);
    id[0] = '\0';
    FILE *f = fopen(p, "r");
    if (!f)
        return errno == ENOENT ? 0 : -1;
    size_t n = fread(id, 1, LOG_ID_LEN, f);
    fclose(f);
    if (n != LOG_ID_LEN) {
        errno = EILSEQ; /* not an id journeyd wrote */
        return -1;
    }
    id[LOG_ID_LEN] = '\0';
    return 0;
}

/* A fresh id, written to DIR/ID.tmp, synced and renamed into place. */
static int write_log_id(const char *dir, char id[LOG_ID_LEN + 1])
{
    unsigned char r[LOG_ID_LEN / 2];
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r)
        return -1;
    for (size_t i = 0; i < sizeof r; i++)
        snprintf(id + 2 * i, 3, "%02x", r[i]);
    char tmp[4200], p[4200];
    snprintf(tmp, sizeof tmp, "%s/ID.tmp", dir);
    snprintf(p, sizeof p, "%s/ID", dir);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    int bad = write(fd, id, LOG_ID_LEN) != LOG_ID_LEN || fsync(fd);
    bad |= close(fd) != 0;
    if (bad || rename(tmp, p))
        return -1;
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return 0;
}

/* Checks that the log in dir (whose last record is info->last_lsn) belongs to the store
 * at position from; writes nothing (jd_durable_pair does, once every shard has passed).
 * moved: dir is a configured log_dir, not DATA_DIR/log. */
static int check_log(jd_server *s, const char *dir, int moved, const jd_log_info *info, uint64_t from, char *err,
                     size_t errlen)
{
    jd_durable *d = s->durable;
    jd_store *st = jd_engine_store(s->engine);
    char log_id[LOG_ID_LEN + 1], store_id[LOG_ID_LEN + 1] = "";
    const void *v;
    size_t vn;
    if (!st)
        return 0;
    if (read_log_id(dir, log_id)) {
        snprintf(err, errlen, "%s/ID: unreadable (the event log's identity): %s", dir, strerror(errno));
        return -1;
    }
    int rc = jd_store_get(st, JD_DB_META, LOG_ID_KEY, sizeof LOG_ID_KEY - 1, &v, &vn);
    if (rc < 0) {
        snprintf(err, errlen, "%s", jd_store_error(st));
        return -1;
    }
    if (rc == 0 && vn == LOG_ID_LEN) {
        memcpy(store_id, v, LOG_ID_LEN);
        store_id[LOG_ID_LEN] = '\0';
    }
    int closed = jd_store_get(st, JD_DB_META, LOG_CLOSED_KEY, sizeof LOG_CLOSED_KEY - 1, &v, &vn) == 0 && vn == 8 &&
                 jd_be64_get(v) == from;
    /* nothing in this log the store has not taken in; whether an old log had more is what
     * "closed" says */
    int nothing_new = info->last_lsn <= from;
    if (store_id[0] && log_id[0] && strcmp(store_id, log_id)) {
        snprintf(err, errlen,
                 "%s: not the event log the store in this data directory was last checkpointed from (this "
                 "log's id is %s, the store's %s): point log_dir at that log (a directory that holds no "
                 "records yet, left by a start that failed: remove its ID file)",
                 dir, log_id, store_id);
        return -1;
    }
    d->pair_fresh = 0;
    /* a store that has taken in records and names no log (from before the pairing) runs
     * first with the log it has, in DATA_DIR/log; one that names its log takes a log
     * directory new to it only when its last stop was clean */
    if (from > 0 && ((!store_id[0] && moved) || (store_id[0] && !log_id[0]))) {
        if (!store_id[0] || !nothing_new || !closed) {
            snprintf(err, errlen,
                     "%s: not the event log this store was checkpointed from (%s%s), and %s, so that log may hold "
                     "records the store has not taken in: start once with the log_dir it last ran with "
                     "(none: DATA_DIR/log) and stop journeyd with SIGTERM (the last checkpoint takes in "
                     "everything), then move log_dir",
                     dir, store_id[0] ? "log id " : "a store from before logs were paired", store_id[0] ? store_id : "",
                     store_id[0] ? "the store's last stop was not clean" : "it never was");
            return -1;
        }
        d->pair_fresh = 1;
    }
    memcpy(d->pair_id, log_id, sizeof log_id);
    snprintf(d->pair_dir, sizeof d->pair_dir, "%s", dir);
    d->pair_checked = 1;
    return 0;
}

int jd_durable_pair(jd_server *s, char *err, size_t errlen)
{
    jd_durable *d = s->durable;
    jd_store *st = jd_engine_store(s->engine);
    if (!d || !d->pair_checked || !st)
        return 0;
    if (!d->pair_id[0] && write_log_id(d->pair_dir, d->pair_id)) {
        snprintf(err, errlen, "%s/ID: cannot write the event log's identity: %s", d->pair_dir, strerror(errno));
        return -1;
    }
    /* the store names this log; "closed" goes until the next clean stop */
    if (jd_store_begin(st) ||
        jd_store_put(st, JD_DB_META, LOG_ID_KEY, sizeof LOG_ID_KEY - 1, d->pair_id, LOG_ID_LEN, 0) ||
        jd_store_del(st, JD_DB_META, LOG_CLOSED_KEY, sizeof LOG_CLOSED_KEY - 1) || jd_store_commit(st)) {
        snprintf(err, errlen, "%s", jd_store_error(st));
        jd_store_abort(st);
        return -1;
    }
    d->paired = 1;
    if (d->pair_fresh) {
        char extra[4200];
        snprintf(extra, sizeof extra, "\"log_dir\":\"%s\"", d->pair_dir);
        jd_serve_log(s, "info", "event log: a new log directory; the store holds all of the last one", extra);
    }
    return 0;
}

/* After the last checkpoint of a clean stop: the store holds the whole log, up to end. */
static void mark_closed(jd_server *s, uint64_t end)
{
    jd_store *st = jd_engine_store(s->engine);
    unsigned char b[8];
    jd_be64_put(b, end);
    if (jd_store_begin(st) || jd_store_put(st, JD_DB_META, LOG_CLOSED_KEY, sizeof LOG_CLOSED_KEY - 1, b, 8, 0) ||
        jd_store_commit(st))
        jd_store_abort(st); /* the log stays where it is needed: a move is refused */
}

int jd_durable_open(jd_server *s, const char *data_dir, const char *log_dir, char *err, size_t errlen)
{
    char dir[4096];
    if (mkdir_p(data_dir)) {
        snprintf(err, errlen, "%s: cannot create the data directory", data_dir);
        return -1;
    }
    if (log_dir && mkdir_p(log_dir)) {
        snprintf(err, errlen, "%s: cannot create the event log's directory", log_dir);
        return -1;
    }
    snprintf(dir, sizeof dir, "%s%s", log_dir ? log_dir : data_dir, log_dir ? "" : "/log");
    jd_durable *d = jd_xcalloc(1, sizeof *d);
    jd_buf_init(&d->data);
    d->efd = -1;
    d->ck_efd = -1;
    s->durable = d;
    /* the store first: it says where in the log to start */
    char sdir[4096];
    snprintf(sdir, sizeof sdir, "%s/store", data_dir);
    jd_store_opts so = {0};
    const char *tw = jd_engine_config(s->engine, "timer_window");
    if (tw && jd_parse_duration(tw, &so.window_ms)) {
        snprintf(err, errlen, "j.config timer_window: a duration like \"15m\", got '%s'", tw);
        return -1;
    }
    const char *dw = getenv("JOURNEYD_DEDUPE_WINDOW");
    if (!dw || !*dw)
        dw = jd_engine_config(s->engine, "dedupe_window");
    if (dw && (jd_parse_duration(dw, &so.dedupe_ttl_ms) || so.dedupe_ttl_ms <= 0)) {
        snprintf(err, errlen, "dedupe_window: a duration like \"24h\", got '%s'", dw);
        return -1;
    }
    const char *pack = jd_engine_config(s->engine, "pack_rows");
    if (pack && strcmp(pack, "true") && strcmp(pack, "false")) {
        snprintf(err, errlen, "j.config pack_rows: true or false, got '%s'", pack);
        return -1;
    }
    so.no_pack = pack && strcmp(pack, "false") == 0;
    d->checkpoint_ms = 3000; /* see the README's Durability: 1 s wrote more and held the log's syncs longer */
    const char *ci = jd_engine_config(s->engine, "checkpoint_interval");
    if (ci && (jd_parse_duration(ci, &d->checkpoint_ms) || d->checkpoint_ms <= 0)) {
        snprintf(err, errlen, "j.config checkpoint_interval: a duration like \"1s\", got '%s'", ci);
        return -1;
    }
    jd_error se;
    if (jd_engine_open_store(s->engine, sdir, &so, &se)) {
        snprintf(err, errlen, "%s", se.text);
        return -1;
    }
    uint64_t from = jd_engine_store_position(s->engine);
    d->processed = d->checkpointed = from;
    jd_log_info info;
    jd_log_opts lo = {0};
    const char *ss = jd_engine_config(s->engine, "log_segment_size"); /* bytes; tests use small ones */
    if (ss) {
        char *end;
        unsigned long long v = strtoull(ss, &end, 10);
        if (*end || v < 4096) {
            snprintf(err, errlen, "j.config log_segment_size: a number of bytes (at least 4096), got '%s'", ss);
            return -1;
        }
        lo.segment_bytes = (size_t)v;
    }
    d->log = jd_log_open(dir, &lo, &info, err, errlen);
    if (!d->log)
        return -1;
    if (check_log(s, dir, log_dir != NULL, &info, from, err, errlen))
        return -1;
    if (d->pair_fresh) {
        if (jd_log_continue_after(d->log, from, err, errlen))
            return -1;
    } else if (info.last_lsn < from) {
        /* the damaged tail held records the store had already taken in: new records
         * must not reuse their numbers */
        if (jd_log_continue_after(d->log, from, err, errlen))
            return -1;
        char extra[128];
        snprintf(extra, sizeof extra, "\"store_lsn\":%llu,\"log_lsn\":%llu", (unsigned long long)from,
                 (unsigned long long)info.last_lsn);
        jd_serve_log(s, "warn", "event log ends before the store's checkpoint; continuing after it", extra);
    }
    if (info.cut_reason[0]) {
        jd_buf b;
        jd_buf_init(&b);
        jd_buf_puts(&b, "\"reason\":");
        msgpack_object o = {.type = MSGPACK_OBJECT_STR,
                            .via.str = {(uint32_t)strlen(info.cut_reason), info.cut_reason}};
        jd_json_write(s->jw, &o, &b);
        jd_buf_printf(&b, ",\"bytes\":%llu,\"last_lsn\":%llu", (unsigned long long)info.cut_bytes,
                      (unsigned long long)info.last_lsn);
        jd_serve_log(s, "warn", "event log: damaged tail cut; starting with everything before it", jd_buf_cstr(&b));
        jd_buf_free(&b);
    }
    /* replay: the engine comes back to the state of the last durable record */
    replay_ctx rc = {s, 0};
    s->replaying = 1;
    int rr = jd_log_replay(d->log, from + 1, replay_one, &rc);
    s->replaying = 0;
    char extra[256];
    snprintf(extra, sizeof extra,
             "\"records\":%llu,\"from_lsn\":%llu,\"last_lsn\":%llu,\"segments\":%zu,\"timers_in_memory\":%llu",
             (unsigned long long)rc.n, (unsigned long long)from + 1, (unsigned long long)info.last_lsn, info.segments,
             (unsigned long long)jd_engine_stat(s->engine, "timers_pending"));
    jd_serve_log(s, rr ? "error" : "info", rr ? "event log: replay stopped at a bad record" : "event log replayed",
                 extra);
    d->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (d->efd < 0 || jd_log_start(d->log, d->efd)) {
        snprintf(err, errlen, "cannot start the event log writer");
        return -1;
    }
    d->ev = event_new(s->base, d->efd, EV_READ | EV_PERSIST, on_durable, s);
    event_add(d->ev, NULL);
    checkpoint_now(s); /* what the replay rebuilt goes into the store */
    pthread_mutex_init(&d->ck_mu, NULL);
    pthread_cond_init(&d->ck_cv, NULL);
    d->ck_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (d->ck_efd < 0 || pthread_create(&d->ck_thread, NULL, ck_writer, d)) {
        snprintf(err, errlen, "cannot start the checkpoint writer");
        return -1;
    }
    pthread_setname_np(d->ck_thread, "jd-checkpoint"); /* as top -H and /proc show it */
    d->ck_started = 1;
    d->ck_ev = event_new(s->base, d->ck_efd, EV_READ | EV_PERSIST, on_ck_done, s);
    event_add(d->ck_ev, NULL);
    d->ck_slice_ev = evtimer_new(s->base, on_ck_slice, s);
    d->checkpoint_ev = event_new(s->base, -1, EV_PERSIST, on_checkpoint, s);
    struct timeval tv = {(time_t)(d->checkpoint_ms / 1000), (suseconds_t)(d->checkpoint_ms % 1000) * 1000};
    event_add(d->checkpoint_ev, &tv);
    return 0;
}

int jd_durable_append(jd_server *s, const void *rec, size_t len, uint64_t *lsn)
{
    jd_log_rec r = {rec, len, 0};
    if (s->durable)
        r.crc = jd_log_payload_crc(rec, len);
    return jd_durable_append_batch(s, &r, 1, lsn);
}

int jd_durable_append_batch(jd_server *s, const jd_log_rec *recs, size_t n, uint64_t *first_lsn)
{
    jd_durable *d = s->durable;
    if (!d) { /* no event log (in-process tests, fuzzing): process at once */
        int rc = 0;
        *first_lsn = 0;
        for (size_t i = 0; i < n; i++) {
            jd_error err;
            if (jd_engine_process(s->engine, recs[i].data, recs[i].len, &err))
                rc = -1;
        }
        return rc;
    }
    if (jd_log_append_batch(d->log, recs, n, first_lsn))
        return -1;
    if (d->nrecs + n > d->caprecs) {
        d->caprecs = d->caprecs ? d->caprecs * 2 : 256;
        if (d->caprecs < d->nrecs + n)
            d->caprecs = d->nrecs + n;
        d->recs = jd_xrealloc(d->recs, d->caprecs * sizeof *d->recs);
    }
    for (size_t i = 0; i < n; i++) {
        d->recs[d->nrecs++] = (pending_rec){*first_lsn + i, d->data.len, recs[i].len};
        jd_buf_append(&d->data, recs[i].data, recs[i].len);
    }
    return 0;
}

void jd_durable_wait(jd_server *s, uint64_t lsn, jd_durable_fn fn, void *ctx)
{
    jd_durable *d = s->durable;
    /* strictly first in, first out: answers leave in the order they were asked for,
     * even one with nothing logged (it waits behind the others) */
    if (!d || (d->headwait == d->nwaits && lsn <= d->processed)) {
        fn(ctx);
        return;
    }
    if (d->headwait < d->nwaits && lsn < d->waits[d->nwaits - 1].lsn)
        lsn = d->waits[d->nwaits - 1].lsn;
    if (d->nwaits == d->capwaits) {
        d->capwaits = d->capwaits ? d->capwaits * 2 : 256;
        d->waits = jd_xrealloc(d->waits, d->capwaits * sizeof *d->waits);
    }
    d->waits[d->nwaits++] = (waiter){lsn, fn, ctx};
}

void jd_durable_tick(jd_server *s, int64_t t)
{
    jd_durable *d = s->durable;
    if (!d) {
        jd_engine_advance(s->engine, t);
        return;
    }
    if (d->tick_lsn)
        return;
    size_t n;
    char *rec = jd_tick_record(t, &n);
    uint64_t lsn;
    if (jd_durable_append(s, rec, n, &lsn) == 0)
        d->tick_lsn = lsn;
    free(rec);
}

const char *jd_durable_error(jd_server *s, char *out, size_t n)
{
    if (!s->durable) {
        snprintf(out, n, "%s", "");
        return out;
    }
    return jd_log_error(s->durable->log, out, n);
}

void jd_durable_close(jd_server *s)
{
    jd_durable *d = s->durable;
    if (!d)
        return;
    /* the batch in flight first (it drops log segments when it is in) */
    if (d->ck_started) {
        ck_wait(s);
        pthread_mutex_lock(&d->ck_mu);
        d->ck_stop = 1;
        pthread_cond_signal(&d->ck_cv);
        pthread_mutex_unlock(&d->ck_mu);
        pthread_join(d->ck_thread, NULL);
        pthread_mutex_destroy(&d->ck_mu);
        pthread_cond_destroy(&d->ck_cv);
        d->ck_started = 0;
    }
    uint64_t end = 0;
    int complete = 0;
    if (d->log) {
        /* the writer commits what is queued and stops; records that became durable at
         * the end are processed (their answers are gone with the connections) so that the
         * last checkpoint takes in the whole log */
        uint64_t last = jd_log_stop(d->log);
        end = jd_log_durable(d->log);
        complete = last == end;
        if (s->engine)
            process_records(s, end);
        jd_log_close(d->log);
        d->log = NULL;
    }
    int stored = 1;
    /* the state of every processed record goes into the store (the rest replays) */
    if (d->ck_ev)
        event_free(d->ck_ev);
    if (d->ck_slice_ev)
        event_free(d->ck_slice_ev);
    if (d->ck_efd >= 0)
        close(d->ck_efd);
    if (s->engine &&
        (d->processed > d->checkpointed || d->force_checkpoint || jd_engine_checkpoint_building(s->engine))) {
        jd_error err;
        if (jd_engine_checkpoint(s->engine, d->processed, &err)) {
            jd_serve_log(s, "error", "store: the last checkpoint failed; the event log replays at start", NULL);
            stored = 0;
        }
    }
    if (s->engine && d->paired && stored && complete && d->processed == end)
        mark_closed(s, end);
    if (d->checkpoint_ev)
        event_free(d->checkpoint_ev);
    if (d->ev)
        event_free(d->ev);
    if (d->efd >= 0)
        close(d->efd);
    free(d->recs);
    free(d->waits);
    jd_buf_free(&d->data);
    free(d);
    s->durable = NULL;
}
