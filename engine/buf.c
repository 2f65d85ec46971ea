#define _DEFAULT_SOURCE /* madvise, sbrk */
#include "buf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14; glibc's headers name it from 2.35 */
#endif

void *jd_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        abort();
    return p;
}

void *jd_xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n ? n : 1, sz ? sz : 1);
    if (!p)
        abort();
    return p;
}

/* Capacities double, except that a block growing past BIG_STEP gets BIG_ROOM at once.
 * glibc gives so big a block a mapping of its own: its pages are faulted in only as they
 * are written, and later growth moves the mapping (mremap) rather than copying it.
 * Doubling through 512 KB, 1, 2, 4 MB ... copied each step into fresh pages: a 4 MB step
 * stalled the loop 6-8 ms on a VM where a page fault costs about 12 us, 140 ms in 54
 * steps (outbox rows, seen messageIds, checkpoint batches) over the half-load bench. The
 * memory is used only as it is written. */
#define BIG_STEP ((size_t)256 << 10)
#define BIG_ROOM ((size_t)64 << 20)

static size_t grown(size_t cap, size_t need)
{
    while (cap < need)
        cap *= 2;
    return cap > BIG_STEP && cap < BIG_ROOM ? BIG_ROOM : cap;
}

/* A queue slides down before it is full once its taken head is at least this big and
 * as long as what is left: the live items are copied at most once per as many pushes,
 * and the memory past them is reused (already faulted in, likely cached) rather than
 * fresh pages of the 64 MB room. A timer lane walked through 12 MB of new pages in the
 * bench replay, for 1.5 MB of live timers. */
#define SLIDE_MIN ((size_t)64 << 10)

/* A big queue's room is populated a chunk ahead as its tail reaches each chunk
 * (jd_prefault): one call for 32 pages instead of a fault each, about 12 us apiece on
 * this VM. The timer lanes' faults were 2.5% of the in-memory run's samples; with this,
 * 0.2%. After a slide the tail crosses chunks already populated: the call finds nothing
 * to do. */
#define POPULATE_CHUNK ((size_t)128 << 10)

/* The chunk byte at lies in and the next one, within room. */
static void populate_ahead(void *q, size_t at, size_t room)
{
    size_t from = at - at % POPULATE_CHUNK, to = from + 2 * POPULATE_CHUNK;
    jd_prefault((char *)q + from, (to < room ? to : room) - from);
}

void jd_queue_room(void **q, size_t *head, size_t *tail, size_t *cap, size_t size, size_t first_cap)
{
    int slide = *head * size >= SLIDE_MIN && *head >= *tail - *head;
    if (*tail < *cap && !slide) {
        if (*cap * size > BIG_STEP && *tail * size % POPULATE_CHUNK < size)
            populate_ahead(*q, *tail * size, *cap * size);
        return;
    }
    if (*cap && (slide || *head >= *cap / 2)) {
        memmove(*q, (char *)*q + *head * size, (*tail - *head) * size);
        *tail -= *head;
        *head = 0;
        return;
    }
    *cap = *cap ? grown(*cap * size, (*cap + 1) * size) / size : first_cap;
    *q = jd_xrealloc(*q, *cap * size);
}

/* 0 once the kernel has said it cannot populate (before 5.14): no more calls. */
static int can_populate = 1;

void jd_prefault(void *p, size_t n)
{
    long pg = sysconf(_SC_PAGESIZE);
    uintptr_t lo = (uintptr_t)p & ~(uintptr_t)(pg - 1), hi = (uintptr_t)p + n;
    if (!can_populate || !n)
        return;
    if (madvise((void *)lo, hi - lo, MADV_POPULATE_WRITE) != 0 && errno == EINVAL)
        can_populate = 0;
}

/* The break as last seen: the heap below it is faulted in. */
static char *heap_seen;

void jd_heap_prefault(void)
{
    char *brk = sbrk(0);
    if (brk == (char *)-1)
        return;
    if (heap_seen && brk > heap_seen)
        jd_prefault(heap_seen, (size_t)(brk - heap_seen));
    heap_seen = brk;
}

void *jd_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        abort();
    return q;
}

char *jd_strndup(const char *s, size_t n)
{
    char *p = jd_xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

void jd_buf_init(jd_buf *b)
{
    b->data = NULL;
    b->len = b->cap = 0;
}

void jd_buf_free(jd_buf *b)
{
    free(b->data);
    jd_buf_init(b);
}

void jd_buf_reserve(jd_buf *b, size_t extra)
{
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return;
    size_t cap = grown(b->cap ? b->cap : 256, need);
    b->data = jd_xrealloc(b->data, cap);
    b->cap = cap;
}

void jd_buf_append(jd_buf *b, const void *p, size_t n)
{
    if (n == 0)
        return; /* p may be NULL (an empty buffer's data) */
    jd_buf_reserve(b, n);
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

void jd_buf_puts(jd_buf *b, const char *s)
{
    jd_buf_append(b, s, strlen(s));
}

void jd_buf_put_u64(jd_buf *b, uint64_t v)
{
    char t[20];
    size_t n = 0;
    do
        t[sizeof t - ++n] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    jd_buf_append(b, t + sizeof t - n, n);
}

void jd_buf_put_i64(jd_buf *b, int64_t v)
{
    if (v < 0) {
        jd_buf_putc(b, '-');
        jd_buf_put_u64(b, 0 - (uint64_t)v);
    } else {
        jd_buf_put_u64(b, (uint64_t)v);
    }
}

void jd_buf_printf(jd_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char tmp[256];
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof tmp) {
        jd_buf_append(b, tmp, (size_t)n);
        return;
    }
    jd_buf_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

const char *jd_buf_cstr(jd_buf *b)
{
    jd_buf_reserve(b, 0);
    b->data[b->len] = '\0';
    return b->data;
}

/* Called for every msgpack token: the common case (room left) stays a bounds check and a
 * copy. */
int jd_buf_msgpack_write(void *data, const char *buf, size_t len)
{
    jd_buf *b = data;
    if (len == 0)
        return 0; /* buf may be NULL (an empty body) */
    if (b->cap - b->len <= len)
        jd_buf_reserve(b, len);
    memcpy(b->data + b->len, buf, len);
    b->len += len;
    return 0;
}
