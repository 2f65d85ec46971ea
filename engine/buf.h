/* buf: a growable byte buffer used for records, JSON output and keys.
 * Uses nothing else. Allocation failure aborts (the one place we do): an engine
 * that cannot grow a 1 KB buffer cannot keep its promises anyway. */
#ifndef JD_BUF_H
#define JD_BUF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct jd_buf {
    char *data;
    size_t len;
    size_t cap;
} jd_buf;

void jd_buf_init(jd_buf *b);
void jd_buf_free(jd_buf *b);
void jd_buf_reserve(jd_buf *b, size_t extra);
void jd_buf_append(jd_buf *b, const void *p, size_t n);
void jd_buf_puts(jd_buf *b, const char *s);
/* Decimal text of v, as printf's %llu / %lld writes it (without printf's cost). */
void jd_buf_put_u64(jd_buf *b, uint64_t v);
void jd_buf_put_i64(jd_buf *b, int64_t v);
void jd_buf_printf(jd_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* NUL-terminates without counting the NUL in len; returns data. */
const char *jd_buf_cstr(jd_buf *b);

static inline void jd_buf_reset(jd_buf *b)
{
    b->len = 0;
}
static inline void jd_buf_putc(jd_buf *b, char c)
{
    if (b->len + 1 > b->cap)
        jd_buf_reserve(b, 1);
    b->data[b->len++] = c;
}

/* msgpack_packer write callback appending to a jd_buf. */
int jd_buf_msgpack_write(void *data, const char *buf, size_t len);

/* Duplicate n bytes as a NUL-terminated string (caller frees). */
char *jd_strndup(const char *s, size_t n);
void *jd_xmalloc(size_t n);
void *jd_xcalloc(size_t n, size_t sz);
void *jd_xrealloc(void *p, size_t n);
/* Faults p[0..n) in with one call, where the kernel can (MADV_POPULATE_WRITE, Linux
 * 5.14), not one fault per page as it is first written. For memory about to be written
 * anyway: it becomes resident. On this project's VM a page's fault costs about 12 us,
 * and populating a range about 1 us a page (README, design notes). */
void jd_prefault(void *p, size_t n);
/* The same for the main heap's growth since the last call: malloc extends it a little
 * at a time (sbrk), and new people, instances and traits then fault it in page by page.
 * Reads the break without a lock: for a process whose other threads do not malloc
 * meanwhile (replay), never for the daemon's threads (whose arenas are not the heap). */
void jd_heap_prefault(void);
/* Room for one more item at the tail of a queue of size-byte items, *q[*head..*tail)
 * in *cap: the items slide down when at least as many have been taken from the head as
 * are left (and 64 KB of them), or when it is full and half of it has been taken; else
 * a full queue grows (first_cap items at first). Sliding moves the items: indexes into
 * the queue change, and pointers go stale. */
void jd_queue_room(void **q, size_t *head, size_t *tail, size_t *cap, size_t size, size_t first_cap);

#endif
