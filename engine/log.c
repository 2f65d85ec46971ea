#define _GNU_SOURCE
#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "buf.h"

#define HDR 16
#define MAX_RECORD (64u << 20)

struct jd_log {
    char *dir;
    jd_log_opts opts;
    int fd;             /* the newest segment, open for append */
    uint64_t seg_first; /* first LSN of the newest segment */
    uint64_t seg_size;  /* bytes in it */
    uint64_t *segs;     /* first LSNs of all segments, ascending */
    size_t nsegs;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    jd_buf pending;    /* encoded records not yet written */
    jd_buf spare;      /* the buffer of the group last written, for the next one */
    uint64_t next_lsn; /* the next LSN to hand out */
    uint64_t pending_last;
    _Atomic uint64_t durable;
    int err; /* errno of the last failed write, 0 when healthy */
    int stop;
    int running;
    int notify_fd;
    pthread_t thread;
};

static void put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* A record's CRC: over its payload, then its LSN's 8 bytes, so that the payload's part
 * can be computed before the LSN is known (by the daemon's front, off the shard's
 * thread) and finished with 8 bytes. */
static uint32_t checksum_of(uint32_t payload_crc, const unsigned char *lsn8)
{
    return (uint32_t)crc32(payload_crc, lsn8, 8);
}

/* Whether a record checks out: as written now, or as segments written before did, over
 * (LSN, payload) — a log from an older journeyd still replays. */
static int checksum_ok(uint32_t crc, const unsigned char *lsn8, const void *payload, size_t n)
{
    uLong c = crc32(crc32(0L, Z_NULL, 0), payload, (uInt)n);
    if (checksum_of((uint32_t)c, lsn8) == crc)
        return 1;
    c = crc32(crc32(crc32(0L, Z_NULL, 0), lsn8, 8), payload, (uInt)n);
    return (uint32_t)c == crc;
}

static void seg_path(const jd_log *l, uint64_t first, char *out, size_t n)
{
    snprintf(out, n, "%s/%020llu.log", l->dir, (unsigned long long)first);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

/* Reads a whole file; NULL on error. */
static unsigned char *slurp(const char *path, size_t *n)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return NULL;
    struct stat st;
    if (fstat(fd, &st)) {
        close(fd);
        return NULL;
    }
    unsigned char *b = jd_xmalloc((size_t)st.st_size + 1);
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, b + got, (size_t)st.st_size - got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    *n = got;
    return b;
}

/* Walks the records of one segment buffer. Returns the byte length of its good prefix;
 * *last gets the last good LSN; *why says what stopped it early ("" at a clean end). */
static size_t scan(const unsigned char *b, size_t n, uint64_t expect, uint64_t *last, char *why, size_t wn)
{
    size_t off = 0;
    why[0] = '\0';
    while (off < n) {
        if (n - off < HDR) {
            snprintf(why, wn, "torn record header at byte %zu", off);
            break;
        }
        uint32_t len = get32(b + off);
        uint32_t crc = get32(b + off + 4);
        uint64_t lsn = get64(b + off + 8);
        if (len > MAX_RECORD || n - off - HDR < len) {
            snprintf(why, wn, "torn record at byte %zu (lsn %llu)", off, (unsigned long long)lsn);
            break;
        }
        if (lsn != expect) {
            snprintf(why, wn, "unexpected lsn %llu at byte %zu (wanted %llu)", (unsigned long long)lsn, off,
                     (unsigned long long)expect);
            break;
        }
        if (!checksum_ok(crc, b + off + 8, b + off + HDR, len)) {
            snprintf(why, wn, "checksum mismatch at byte %zu (lsn %llu)", off, (unsigned long long)lsn);
            break;
        }
        *last = lsn;
        expect++;
        off += HDR + len;
    }
    return off;
}

static int open_segment(jd_log *l, uint64_t first, char *err, size_t errlen)
{
    char p[4096];
    seg_path(l, first, p, sizeof p);
    int fd = open(p, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", p, strerror(errno));
        return -1;
    }
    if (l->fd >= 0)
        close(l->fd);
    l->fd = fd;
    l->seg_first = first;
    struct stat st;
    l->seg_size = fstat(fd, &st) == 0 ? (uint64_t)st.st_size : 0;
    if (l->nsegs == 0 || l->segs[l->nsegs - 1] != first) {
        l->segs = jd_xrealloc(l->segs, (l->nsegs + 1) * sizeof *l->segs);
        l->segs[l->nsegs++] = first;
    }
    sync_dir(l->dir);
    return 0;
}

jd_log *jd_log_open(const char *dir, const jd_log_opts *opts, jd_log_info *info, char *err, size_t errlen)
{
    jd_log_info dummy;
    if (!info)
        info = &dummy;
    memset(info, 0, sizeof *info);
    if (mkdir(dir, 0755) && errno != EEXIST) {
        snprintf(err, errlen, "%s: %s", dir, strerror(errno));
        return NULL;
    }
    jd_log *l = jd_xcalloc(1, sizeof *l);
    l->dir = jd_strndup(dir, strlen(dir));
    if (opts)
        l->opts = *opts;
    if (!l->opts.segment_bytes)
        l->opts.segment_bytes = 64u << 20;
    l->fd = -1;
    l->notify_fd = -1;
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    jd_buf_init(&l->pending);
    jd_buf_init(&l->spare);

    DIR *d = opendir(dir);
    if (!d) {
        snprintf(err, errlen, "%s: %s", dir, strerror(errno));
        goto fail;
    }
    struct dirent *de;
    while ((de = readdir(d))) {
        unsigned long long first;
        char tail[8];
        if (sscanf(de->d_name, "%20llu.%7s", &first, tail) == 2 && strcmp(tail, "log") == 0 && first > 0) {
            l->segs = jd_xrealloc(l->segs, (l->nsegs + 1) * sizeof *l->segs);
            l->segs[l->nsegs++] = first;
        }
    }
    closedir(d);
    if (l->nsegs)
        qsort(l->segs, l->nsegs, sizeof *l->segs, cmp_u64);
    info->segments = l->nsegs;
    l->next_lsn = 1;
    if (l->nsegs) {
        /* only the newest segment can have a torn tail; the others were closed whole */
        uint64_t first = l->segs[l->nsegs - 1];
        char p[4096];
        seg_path(l, first, p, sizeof p);
        size_t n = 0;
        unsigned char *b = slurp(p, &n);
        if (!b) {
            snprintf(err, errlen, "%s: %s", p, strerror(errno));
            goto fail;
        }
        uint64_t last = first - 1;
        char why[200];
        size_t good = scan(b, n, first, &last, why, sizeof why);
        free(b);
        if (good < n) {
            if (truncate(p, (off_t)good)) {
                snprintf(err, errlen, "%s: cannot cut the damaged tail: %s", p, strerror(errno));
                goto fail;
            }
            info->cut_bytes = n - good;
            snprintf(info->cut_reason, sizeof info->cut_reason, "%.80s: %.120s; %zu bytes after it dropped", p, why,
                     n - good);
        }
        l->next_lsn = last + 1;
        info->first_lsn = l->segs[0];
        info->last_lsn = last;
        if (last < l->segs[0])
            info->first_lsn = info->last_lsn = 0;
    }
    atomic_store(&l->durable, l->next_lsn - 1);
    l->pending_last = l->next_lsn - 1;
    if (open_segment(l, l->nsegs ? l->segs[l->nsegs - 1] : 1, err, errlen))
        goto fail;
    return l;
fail:
    jd_log_close(l);
    return NULL;
}

/* Writes buf fully at the end of the current segment (rolling first if it is full) and
 * syncs. On failure the segment is cut back to where it was, so a retry cannot leave a
 * half-written record in the middle. */
static int write_group(jd_log *l, const unsigned char *b, size_t n, uint64_t first_lsn)
{
    if (l->seg_size > 0 && l->seg_size + n > l->opts.segment_bytes) {
        char err[256];
        if (l->fd >= 0)
            fdatasync(l->fd);
        if (open_segment(l, first_lsn, err, sizeof err))
            return errno ? errno : EIO;
    }
    uint64_t before = l->seg_size;
    size_t off = 0;
    int e = 0;
    while (off < n) {
        ssize_t w = write(l->fd, b + off, n - off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            e = errno;
            break;
        }
        off += (size_t)w;
    }
    if (!e && !l->opts.no_sync && fdatasync(l->fd))
        e = errno;
    if (e) {
        if (ftruncate(l->fd, (off_t)before) == 0)
            l->seg_size = before;
        return e;
    }
    l->seg_size += n;
    return 0;
}

/* Takes the pending group and commits it. Called with mu held; releases it while writing. */
static int commit_pending(jd_log *l)
{
    if (l->pending.len == 0)
        return 0;
    jd_buf group = l->pending;
    uint64_t last = l->pending_last;
    uint64_t first = get64((unsigned char *)group.data + 8);
    l->pending = l->spare; /* the last group's buffer, emptied: no regrowth per group */
    jd_buf_init(&l->spare);
    pthread_mutex_unlock(&l->mu);
    int e = write_group(l, (unsigned char *)group.data, group.len, first);
    pthread_mutex_lock(&l->mu);
    if (e) {
        /* keep the group, in front of anything queued meanwhile, and retry later */
        jd_buf_append(&group, l->pending.data, l->pending.len);
        jd_buf_free(&l->pending);
        l->pending = group;
        l->err = e;
        return -1;
    }
    jd_buf_reset(&group);
    if (group.cap > ((size_t)64 << 20)) /* grown in a burst: not kept */
        jd_buf_free(&group);
    jd_buf_free(&l->spare);
    l->spare = group;
    l->err = 0;
    atomic_store(&l->durable, last);
    return 0;
}

static void *writer(void *arg)
{
    jd_log *l = arg;
    pthread_mutex_lock(&l->mu);
    while (!l->stop || l->pending.len) {
        if (l->pending.len == 0) {
            pthread_cond_wait(&l->cv, &l->mu);
            continue;
        }
        int rc = commit_pending(l);
        if (l->notify_fd >= 0 && rc == 0) {
            uint64_t one = 1;
            ssize_t w = write(l->notify_fd, &one, sizeof one);
            (void)w;
        }
        if (rc) {
            if (l->stop)
                break; /* shutting down with a full disk: what is not durable was never acked */
            /* a failing disk: wait before retrying (space may come back) */
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 100 * 1000000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&l->cv, &l->mu, &ts);
        }
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

int jd_log_start(jd_log *l, int notify_fd)
{
    l->notify_fd = notify_fd;
    if (pthread_create(&l->thread, NULL, writer, l))
        return -1;
    pthread_setname_np(l->thread, "jd-log"); /* as top -H and /proc show it */
    l->running = 1;
    return 0;
}

uint32_t jd_log_payload_crc(const void *rec, size_t len)
{
    return (uint32_t)crc32(crc32(0L, Z_NULL, 0), rec, (uInt)len);
}

int jd_log_append_batch(jd_log *l, const jd_log_rec *recs, size_t n, uint64_t *first_lsn)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (recs[i].len > MAX_RECORD)
            return -1;
        total += HDR + recs[i].len;
    }
    pthread_mutex_lock(&l->mu);
    if (l->err) {
        pthread_mutex_unlock(&l->mu);
        return -1;
    }
    *first_lsn = l->next_lsn;
    jd_buf_reserve(&l->pending, total);
    for (size_t i = 0; i < n; i++) {
        uint64_t lsn = l->next_lsn++;
        unsigned char hdr[HDR];
        put32(hdr, (uint32_t)recs[i].len);
        put64(hdr + 8, lsn);
        put32(hdr + 4, checksum_of(recs[i].crc, hdr + 8));
        jd_buf_append(&l->pending, hdr, HDR);
        jd_buf_append(&l->pending, recs[i].data, recs[i].len);
        l->pending_last = lsn;
    }
    if (n)
        pthread_cond_signal(&l->cv);
    pthread_mutex_unlock(&l->mu);
    return 0;
}

int jd_log_append(jd_log *l, const void *rec, size_t len, uint64_t *lsn)
{
    jd_log_rec r = {rec, len, jd_log_payload_crc(rec, len)};
    return jd_log_append_batch(l, &r, 1, lsn);
}

uint64_t jd_log_durable(jd_log *l)
{
    return atomic_load(&l->durable);
}

int jd_log_sync(jd_log *l)
{
    pthread_mutex_lock(&l->mu);
    int rc = commit_pending(l);
    pthread_mutex_unlock(&l->mu);
    return rc;
}

const char *jd_log_error(jd_log *l, char *out, size_t n)
{
    pthread_mutex_lock(&l->mu);
    int e = l->err;
    pthread_mutex_unlock(&l->mu);
    snprintf(out, n, "%s", e ? strerror(e) : "");
    return out;
}

int jd_log_replay(jd_log *l, uint64_t from, jd_log_visit_fn fn, void *ud)
{
    uint64_t durable = jd_log_durable(l);
    for (size_t i = 0; i < l->nsegs; i++) {
        uint64_t next_first = i + 1 < l->nsegs ? l->segs[i + 1] : UINT64_MAX;
        if (next_first <= from)
            continue; /* every record here is below from */
        char p[4096];
        seg_path(l, l->segs[i], p, sizeof p);
        size_t n = 0;
        unsigned char *b = slurp(p, &n);
        if (!b)
            return -1;
        size_t off = 0;
        uint64_t expect = l->segs[i];
        while (off + HDR <= n) {
            uint32_t len = get32(b + off);
            uint64_t lsn = get64(b + off + 8);
            if (len > n - off - HDR || lsn != expect ||
                !checksum_ok(get32(b + off + 4), b + off + 8, b + off + HDR, len)) {
                free(b);
                return -1;
            }
            if (lsn > durable)
                break;
            if (lsn >= from) {
                int rc = fn(lsn, b + off + HDR, len, ud);
                if (rc) {
                    free(b);
                    return rc;
                }
            }
            expect++;
            off += HDR + len;
        }
        free(b);
    }
    return 0;
}

int jd_log_continue_after(jd_log *l, uint64_t lsn, char *err, size_t errlen)
{
    if (l->next_lsn > lsn)
        return 0;
    /* a new segment starting at lsn + 1 keeps the numbering consecutive within it */
    l->next_lsn = lsn + 1;
    l->pending_last = lsn;
    atomic_store(&l->durable, lsn);
    return open_segment(l, lsn + 1, err, errlen);
}

int jd_log_remove_before(jd_log *l, uint64_t lsn)
{
    size_t keep = 0;
    while (keep + 1 < l->nsegs && l->segs[keep + 1] <= lsn) {
        char p[4096];
        seg_path(l, l->segs[keep], p, sizeof p);
        if (unlink(p) && errno != ENOENT)
            return -1;
        keep++;
    }
    if (keep) {
        memmove(l->segs, l->segs + keep, (l->nsegs - keep) * sizeof *l->segs);
        l->nsegs -= keep;
        sync_dir(l->dir);
    }
    return 0;
}

uint64_t jd_log_stop(jd_log *l)
{
    if (l->running) {
        pthread_mutex_lock(&l->mu);
        l->stop = 1;
        pthread_cond_signal(&l->cv);
        pthread_mutex_unlock(&l->mu);
        pthread_join(l->thread, NULL);
        l->running = 0;
    }
    pthread_mutex_lock(&l->mu);
    uint64_t last = l->next_lsn - 1;
    pthread_mutex_unlock(&l->mu);
    return last;
}

void jd_log_close(jd_log *l)
{
    if (!l)
        return;
    if (l->running) {
        jd_log_stop(l);
    } else if (l->fd >= 0) {
        jd_log_sync(l);
    }
    if (l->fd >= 0)
        close(l->fd);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv);
    jd_buf_free(&l->pending);
    jd_buf_free(&l->spare);
    free(l->segs);
    free(l->dir);
    free(l);
}
