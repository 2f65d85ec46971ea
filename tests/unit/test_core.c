/* test_core: engine/map.h (hash map, jd_hash), engine/dedupe.h (messageId set with a
 * ttl in event time), engine/timer.h (the (due, seq) min-heap), a person's traits and
 * decision trace (engine/user.h), and traits pushed to Lua from their packed bytes
 * (engine/lua_msgpack.h). */
#define _DEFAULT_SOURCE /* mincore, MAP_ANONYMOUS */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>
#include <lauxlib.h>
#include <lua.h>
#include <math.h>

#include "buf.h"
#include "dedupe.h"
#include "event.h"
#include "lua_msgpack.h"
#include "map.h"
#include "timer.h"
#include "user.h"

/* A small deterministic PRNG (xorshift64). */
static uint64_t rng_state;
static void rng_seed(uint64_t s)
{
    rng_state = s ? s : 1;
}
static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

#define VAL(i) ((void *)(uintptr_t)((i) + 1)) /* never NULL */

static size_t key_of(char *buf, size_t i)
{
    return (size_t)snprintf(buf, 32, "key-%zu", i);
}

/* ---------------------------------------------------------------- map */

/* Prefaulting changes no byte: written memory keeps its contents, fresh memory reads
 * zero, and a fresh mapping is resident afterwards (where the kernel can populate). The
 * main heap's growth is prefaulted the same way. */
static void test_prefault(void **state)
{
    (void)state;
    size_t n = 300000;
    unsigned char *p = malloc(n);
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(i * 7);
    jd_prefault(p + 5, n - 10);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(p[i], (unsigned char)(i * 7));
    free(p);

    long pg = sysconf(_SC_PAGESIZE);
    size_t len = 64 * (size_t)pg;
    unsigned char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(m != MAP_FAILED);
    unsigned char vec[64];
    int can = madvise(m, (size_t)pg, 23 /* MADV_POPULATE_WRITE */) == 0;
    jd_prefault(m + 1, len - 2); /* unaligned: the whole pages around it */
    assert_int_equal(mincore(m, len, vec), 0);
    for (int i = 0; i < 64; i++) {
        if (can)
            assert_true(vec[i] & 1);
        assert_int_equal(m[(size_t)i * (size_t)pg], 0);
    }
    munmap(m, len);

    jd_heap_prefault();
    char *grow[64];
    for (int i = 0; i < 64; i++) { /* small blocks: from the heap, which grows */
        grow[i] = malloc(4000);
        memset(grow[i], i, 4000);
        jd_heap_prefault();
    }
    for (int i = 0; i < 64; i++) {
        for (int k = 0; k < 4000; k += 999)
            assert_int_equal(grow[i][k], i);
        free(grow[i]);
    }
}

/* A big queue's room is populated a chunk ahead of its tail (jd_queue_room): once its
 * tail has entered a chunk, the pages up to the end of the next one are resident before
 * anything is written there, and the items are as pushed. */
static void test_queue_room_populated_ahead(void **state)
{
    (void)state;
    long pg = sysconf(_SC_PAGESIZE);
    void *room = mmap(NULL, (size_t)pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int can = room != MAP_FAILED && madvise(room, (size_t)pg, 23 /* MADV_POPULATE_WRITE */) == 0;
    if (room != MAP_FAILED)
        munmap(room, (size_t)pg);
    void *q = NULL;
    size_t head = 0, tail = 0, cap = 0, size = sizeof(uint64_t);
    size_t n = (600u << 10) / size; /* past 256 KB: the 64 MB room, several 128 KB chunks */
    for (size_t i = 0; i < n; i++) {
        jd_queue_room(&q, &head, &tail, &cap, size, 1024);
        ((uint64_t *)q)[tail++] = i * 3;
    }
    assert_true(cap * size >= (64u << 20));
    for (size_t i = 0; i < n; i++)
        assert_int_equal(((uint64_t *)q)[i], i * 3);
    /* the tail is in the chunk at 512 KB: the one after it (to 768 KB) is resident */
    char *base = (char *)q;
    uintptr_t from = ((uintptr_t)(base + (size_t)(700u << 10)) + (uintptr_t)pg - 1) & ~(uintptr_t)(pg - 1);
    size_t pages = (size_t)((uintptr_t)(base + (size_t)(760u << 10)) - from) / (size_t)pg;
    unsigned char vec[64];
    assert_true(pages > 0 && pages <= sizeof vec);
    assert_int_equal(mincore((void *)from, pages * (size_t)pg, vec), 0);
    for (size_t i = 0; i < pages; i++)
        if (can)
            assert_true(vec[i] & 1);
    free(q);
}

static void test_map_empty(void **state)
{
    (void)state;
    jd_map m;
    jd_map_init(&m);
    assert_null(jd_map_get(&m, "a", 1));
    assert_null(jd_map_del(&m, "a", 1));
    size_t it = 0;
    const jd_map_slot *s;
    assert_int_equal(jd_map_next(&m, &it, &s), 0);
    jd_map_free(&m, NULL);
    jd_map_free(&m, NULL); /* freeing resets: a second free is harmless */
}

/* Growth moves entries over a few per put: while both tables hold entries, every key is
 * found, replaced, deleted and iterated exactly once, wherever it is. */
static void test_map_moving(void **state)
{
    (void)state;
    enum { N = 50000 };
    jd_map m;
    jd_map_init(&m);
    char k[32];
    size_t seen_moving = 0;
    for (size_t i = 0; i < N; i++) {
        size_t n = key_of(k, i);
        assert_null(jd_map_put(&m, k, n, VAL(i)));
        if (!m.old)
            continue;
        seen_moving++;
        /* mid-move: an early key (likely still in the old table) and the newest */
        size_t j = i / 3;
        n = key_of(k, j);
        if (j % 5 == 0) {
            assert_ptr_equal(jd_map_del(&m, k, n), VAL(j)); /* gone from wherever it was */
            assert_null(jd_map_get(&m, k, n));
            assert_null(jd_map_put(&m, k, n, VAL(j))); /* and back */
        }
        assert_ptr_equal(jd_map_put(&m, k, n, VAL(j)), VAL(j)); /* replaced in place */
        n = key_of(k, i);
        assert_ptr_equal(jd_map_get(&m, k, n), VAL(i));
        if (i % 997 == 0) { /* iteration sees both tables, each key once */
            size_t it = 0, c = 0;
            const jd_map_slot *s;
            while (jd_map_next(&m, &it, &s))
                c++;
            assert_int_equal(c, m.count);
        }
    }
    assert_true(seen_moving > 0);
    assert_int_equal(m.count, N);
    for (size_t i = 0; i < N; i++) {
        size_t n = key_of(k, i);
        assert_ptr_equal(jd_map_get(&m, k, n), VAL(i));
    }
    jd_map_free(&m, NULL);
}

static void test_map_100k(void **state)
{
    (void)state;
    enum { N = 100000 };
    jd_map m;
    jd_map_init(&m);
    char k[32];
    for (size_t i = 0; i < N; i++) {
        size_t n = key_of(k, i);
        assert_null(jd_map_put(&m, k, n, VAL(i)));
    }
    assert_int_equal(m.count, N);
    assert_true((m.cap & (m.cap - 1)) == 0);
    assert_true(m.count * 4 < m.cap * 3);
    for (size_t i = 0; i < N; i++) {
        size_t n = key_of(k, i);
        assert_ptr_equal(jd_map_get(&m, k, n), VAL(i));
    }
    assert_null(jd_map_get(&m, "key-100000", 10));
    assert_null(jd_map_get(&m, "key-", 4));

    /* replacing returns the old value and keeps the count */
    for (size_t i = 0; i < N; i += 7) {
        size_t n = key_of(k, i);
        assert_ptr_equal(jd_map_put(&m, k, n, VAL(i + N)), VAL(i));
        assert_ptr_equal(jd_map_get(&m, k, n), VAL(i + N));
        assert_ptr_equal(jd_map_put(&m, k, n, VAL(i)), VAL(i + N));
    }
    assert_int_equal(m.count, N);

    /* delete the even keys */
    size_t cap = m.cap;
    for (size_t i = 0; i < N; i += 2) {
        size_t n = key_of(k, i);
        assert_ptr_equal(jd_map_del(&m, k, n), VAL(i));
        assert_null(jd_map_del(&m, k, n)); /* gone */
    }
    assert_int_equal(m.count, N / 2);
    assert_int_equal(m.tombs, N / 2);
    for (size_t i = 0; i < N; i++) {
        size_t n = key_of(k, i);
        if (i % 2)
            assert_ptr_equal(jd_map_get(&m, k, n), VAL(i));
        else
            assert_null(jd_map_get(&m, k, n));
    }

    /* iteration visits each live key once, with its value */
    unsigned char *seen = calloc(N, 1);
    size_t it = 0, visited = 0;
    const jd_map_slot *s;
    while (jd_map_next(&m, &it, &s)) {
        assert_true(s->klen > 4 && memcmp(s->key, "key-", 4) == 0);
        char tmp[32];
        memcpy(tmp, s->key + 4, s->klen - 4);
        tmp[s->klen - 4] = '\0';
        size_t i = (size_t)strtoul(tmp, NULL, 10);
        assert_true(i < N && i % 2 == 1);
        assert_int_equal(seen[i], 0);
        seen[i] = 1;
        assert_ptr_equal(s->value, VAL(i));
        visited++;
    }
    assert_int_equal(visited, N / 2);
    free(seen);

    /* putting the deleted keys back reuses their tombstones: no growth, none left */
    for (size_t i = 0; i < N; i += 2) {
        size_t n = key_of(k, i);
        assert_null(jd_map_put(&m, k, n, VAL(i)));
    }
    assert_int_equal(m.count, N);
    assert_int_equal(m.tombs, 0);
    assert_int_equal(m.cap, cap);
    for (size_t i = 0; i < N; i++) {
        size_t n = key_of(k, i);
        assert_ptr_equal(jd_map_get(&m, k, n), VAL(i));
    }
    jd_map_free(&m, NULL);
    assert_int_equal(m.count, 0);
    assert_null(m.slots);
}

/* A rolling window of live keys: tombstones are cleaned up, the table stays small. */
static void test_map_churn(void **state)
{
    (void)state;
    enum { LIVE = 1000, TOTAL = 200000 };
    jd_map m;
    jd_map_init(&m);
    char k[32];
    size_t maxcap = 0;
    for (size_t i = 0; i < TOTAL; i++) {
        size_t n = key_of(k, i);
        assert_null(jd_map_put(&m, k, n, VAL(i)));
        if (i >= LIVE) {
            n = key_of(k, i - LIVE);
            assert_ptr_equal(jd_map_del(&m, k, n), VAL(i - LIVE));
        }
        if (m.cap > maxcap)
            maxcap = m.cap;
        assert_true(m.count + m.tombs < m.cap); /* always an empty slot to end a probe */
    }
    assert_int_equal(m.count, LIVE);
    assert_true(maxcap <= 4096);
    for (size_t i = TOTAL - LIVE; i < TOTAL; i++) {
        size_t n = key_of(k, i);
        assert_ptr_equal(jd_map_get(&m, k, n), VAL(i));
    }
    assert_null(jd_map_get(&m, "key-0", 5));
    jd_map_free(&m, NULL);
}

static int freed;
static void count_free(void *v)
{
    freed++;
    free(v);
}

/* Keys are bytes, not C strings; values are freed by jd_map_free's callback. */
/* A map that borrows its keys (the people map): the key is the value's own memory, found
 * by equal bytes from anywhere, and never freed by the map (the value's free takes it;
 * AddressSanitizer would see a double free or a read after it). */
typedef struct bval {
    size_t n;
    char key[24];
} bval;

static void free_bval(void *p)
{
    free(p);
}

static void test_map_borrowed_keys(void **state)
{
    (void)state;
    jd_map m;
    jd_map_init(&m);
    m.borrow_keys = 1;
    enum { N = 5000 };
    for (int i = 0; i < N; i++) {
        bval *v = malloc(sizeof *v);
        v->n = (size_t)snprintf(v->key, sizeof v->key, "person-%d", i);
        assert_null(jd_map_put(&m, v->key, v->n, v));
    }
    char k[24];
    for (int i = 0; i < N; i++) {
        size_t n = (size_t)snprintf(k, sizeof k, "person-%d", i);
        bval *v = jd_map_get(&m, k, n);
        assert_non_null(v);
        assert_memory_equal(v->key, k, n);
        if (i % 2 == 0) { /* deleted: the map lets go, the caller frees */
            assert_ptr_equal(jd_map_del(&m, k, n), v);
            free(v);
        }
    }
    for (int i = 0; i < N; i++) {
        size_t n = (size_t)snprintf(k, sizeof k, "person-%d", i);
        bval *v = jd_map_get(&m, k, n);
        if (i % 2 == 0)
            assert_null(v);
        else
            assert_ptr_equal(v->key, ((bval *)jd_map_get(&m, v->key, v->n))->key);
    }
    /* a value replaced under a borrowed key: the slot takes the new value's key, so the
     * old value (and its key) can go */
    bval *nv = malloc(sizeof *nv);
    nv->n = (size_t)snprintf(nv->key, sizeof nv->key, "person-%d", 1);
    bval *old = jd_map_put(&m, nv->key, nv->n, nv);
    assert_non_null(old);
    free(old);
    assert_ptr_equal(jd_map_get(&m, "person-1", 8), nv);
    const jd_map_slot *sl;
    size_t live = 0;
    for (size_t it = 0; jd_map_next(&m, &it, &sl); live++) /* the slots hold the values' own keys */
        assert_ptr_equal(sl->key, ((const bval *)sl->value)->key);
    assert_int_equal(live, N / 2);
    jd_map_free(&m, free_bval);
}

static void test_map_keys(void **state)
{
    (void)state;
    static const struct {
        const char *k;
        size_t n;
    } keys[] = {
        {"", 0},  {"a", 1},  {"a\0", 2}, {"a\0b", 3},     {"a\0c", 3},     {"\0", 1},        {"\0\0", 2},
        {"A", 1}, {"ab", 2}, {"ba", 2},  {"12345678", 8}, {"12345679", 8}, {"123456789", 9}, {"1234567\xff", 8},
    };
    size_t nk = sizeof keys / sizeof keys[0];
    jd_map m;
    jd_map_init(&m);
    for (size_t i = 0; i < nk; i++) {
        int *v = malloc(sizeof *v);
        *v = (int)i;
        assert_null(jd_map_put(&m, keys[i].k, keys[i].n, v));
    }
    /* a long key */
    char *big = malloc(1000);
    memset(big, 'x', 1000);
    int *bv = malloc(sizeof *bv);
    *bv = -1;
    assert_null(jd_map_put(&m, big, 1000, bv));
    big[999] = 'y';
    assert_null(jd_map_get(&m, big, 1000));
    big[999] = 'x';
    assert_ptr_equal(jd_map_get(&m, big, 1000), bv);
    free(big); /* the map owns a copy */
    assert_int_equal(m.count, nk + 1);
    for (size_t i = 0; i < nk; i++) {
        int *v = jd_map_get(&m, keys[i].k, keys[i].n);
        assert_non_null(v);
        assert_int_equal(*v, (int)i);
    }
    /* deleting one of two keys that differ after a NUL leaves the other */
    free(jd_map_del(&m, "a\0b", 3));
    assert_null(jd_map_get(&m, "a\0b", 3));
    assert_int_equal(*(int *)jd_map_get(&m, "a\0c", 3), 4);
    freed = 0;
    jd_map_free(&m, count_free);
    assert_int_equal(freed, (int)nk);
}

static void test_hash(void **state)
{
    (void)state;
    /* the same bytes hash the same, wherever they are */
    char a[64], b[80];
    for (size_t n = 0; n <= 40; n++) {
        for (size_t i = 0; i < n; i++)
            a[i] = (char)('a' + i % 26);
        memcpy(b + 3, a, n); /* unaligned */
        assert_true(jd_hash(a, n, 0) == jd_hash(b + 3, n, 0));
        assert_true(jd_hash(a, n, 7) == jd_hash(b + 3, n, 7));
        assert_true(jd_hash(a, n, 0) != jd_hash(a, n, 1)); /* the seed matters */
    }
    /* lengths and trailing zero bytes matter */
    memset(a, 0, sizeof a);
    uint64_t hs[33];
    for (size_t n = 0; n <= 32; n++) {
        hs[n] = jd_hash(a, n, 0);
        for (size_t j = 0; j < n; j++)
            assert_true(hs[j] != hs[n]);
    }
    /* stable across runs and builds: action ids and shard choice depend on it (the
     * reference values assume a little-endian machine) */
    uint16_t one = 1;
    unsigned char lo;
    memcpy(&lo, &one, 1);
    if (lo == 1) {
        static const struct {
            const char *s;
            uint64_t seed, h;
        } golden[] = {
            {"", 0, 0x0a3f46e79293b578ULL},
            {"a", 0, 0xc1c732196149fb5cULL},
            {"user-1", 0, 0x4377aa4b56fb43d4ULL},
            {"0123456789abcdef", 0, 0x469cb564191f83d3ULL},
            {"hello world, this is a longer key!", 0, 0x0bb25736427c70d8ULL},
            {"a", 42, 0x3d72b7b35500d700ULL},
        };
        for (size_t i = 0; i < sizeof golden / sizeof golden[0]; i++)
            if (jd_hash(golden[i].s, strlen(golden[i].s), golden[i].seed) != golden[i].h)
                fail_msg("jd_hash(\"%s\", %llu) changed", golden[i].s, (unsigned long long)golden[i].seed);
    }
    /* similar keys spread over buckets (a fixed input: no flakiness) */
    enum { KEYS = 100000, BUCKETS = 1024 };
    unsigned *count = calloc(BUCKETS, sizeof *count);
    char k[32];
    for (size_t i = 0; i < KEYS; i++) {
        size_t n = key_of(k, i);
        count[jd_hash(k, n, 0) & (BUCKETS - 1)]++;
    }
    unsigned max = 0, min = KEYS;
    for (size_t i = 0; i < BUCKETS; i++) {
        if (count[i] > max)
            max = count[i];
        if (count[i] < min)
            min = count[i];
    }
    free(count);
    assert_true(max < 160); /* the mean is ~98 */
    assert_true(min > 40);
}

/* jd_hash2 is jd_hash with two seeds, in one pass. */
static void test_hash2(void **state)
{
    (void)state;
    unsigned char buf[64];
    rng_seed(7);
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (unsigned char)rng();
    for (size_t n = 0; n <= sizeof buf; n++)
        for (int k = 0; k < 4; k++) {
            uint64_t sa = rng(), sb = k ? rng() : sa, a, b;
            jd_hash2(buf, n, sa, sb, &a, &b);
            assert_true(a == jd_hash(buf, n, sa));
            assert_true(b == jd_hash(buf, n, sb));
        }
}

/* jd_hash as first written (the tail a byte at a time): the values action ids and shard
 * choice rest on must not change. */
static uint64_t ref_hash(const unsigned char *s, size_t n, uint64_t seed)
{
    uint64_t h = seed ^ (0x9E3779B97F4A7C15ULL * (n + 1));
    for (; n >= 8; s += 8, n -= 8) {
        uint64_t w = 0;
        for (int i = 0; i < 8; i++)
            w |= (uint64_t)s[i] << (8 * i);
        w *= 0xBF58476D1CE4E5B9ULL;
        w ^= w >> 31;
        h = (h ^ w) * 0x94D049BB133111EBULL;
    }
    uint64_t w = 0;
    for (size_t i = 0; i < n; i++)
        w |= (uint64_t)s[i] << (8 * i);
    w *= 0xBF58476D1CE4E5B9ULL;
    w ^= w >> 31;
    h = (h ^ w) * 0x94D049BB133111EBULL;
    h ^= h >> 29;
    h *= 0xBF58476D1CE4E5B9ULL;
    return h ^ (h >> 32);
}

static void test_hash_values(void **state)
{
    (void)state;
    rng_seed(11);
    for (size_t n = 0; n <= 40; n++)
        for (size_t off = 0; off < 8; off++) {
            unsigned char *buf = malloc(n + off ? n + off : 1); /* the key ends where its block does (ASan) */
            for (size_t i = 0; i < n + off; i++)
                buf[i] = (unsigned char)rng();
            uint64_t seed = rng();
            assert_true(jd_hash(buf + off, n, seed) == ref_hash(buf + off, n, seed));
            free(buf);
        }
    assert_true(jd_hash("", 0, 0) == ref_hash((const unsigned char *)"", 0, 0));
}

/* ---------------------------------------------------------------- dedupe */

static void test_dedupe_basic(void **state)
{
    (void)state;
    jd_dedupe d;
    jd_dedupe_init(&d, 0);
    static const struct {
        const char *id;
        size_t n;
        int want;
    } steps[] = {
        {"m1", 2, 0}, {"m1", 2, 1},   {"m2", 2, 0},   {"m1", 2, 1}, {"m2", 2, 1},  {"", 0, 0},
        {"", 0, 1},   {"m1\0", 3, 0}, {"m1\0", 3, 1}, {"M1", 2, 0}, {"m10", 3, 0}, {"m1", 2, 1},
    };
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++)
        if (jd_dedupe_check(&d, steps[i].id, steps[i].n, 1000) != steps[i].want)
            fail_msg("step %zu (%.*s): want %d", i, (int)steps[i].n, steps[i].id, steps[i].want);
    jd_dedupe_free(&d);
}

static void test_dedupe_many(void **state)
{
    (void)state;
    enum { N = 200000 };
    jd_dedupe d;
    jd_dedupe_init(&d, 0);
    char k[32];
    for (size_t i = 0; i < N; i++) {
        size_t n = (size_t)snprintf(k, sizeof k, "msg-%zu", i);
        assert_int_equal(jd_dedupe_check(&d, k, n, (int64_t)i), 0);
    }
    assert_int_equal(d.count, N);
    /* with no ttl nothing expires, however far event time moves */
    for (size_t i = 0; i < N; i++) {
        size_t n = (size_t)snprintf(k, sizeof k, "msg-%zu", i);
        assert_int_equal(jd_dedupe_check(&d, k, n, INT64_MAX / 2), 1);
    }
    for (size_t i = N; i < N + 1000; i++) {
        size_t n = (size_t)snprintf(k, sizeof k, "msg-%zu", i);
        assert_int_equal(jd_dedupe_check(&d, k, n, 0), 0);
    }
    jd_dedupe_free(&d);
}

/* A big table's successor is made ahead and faulted in a huge page a check; growth then
 * takes it, and every id is still found through the move. */
static void test_dedupe_made_ahead(void **state)
{
    (void)state;
    enum { N = 300000 };
    jd_dedupe d;
    jd_dedupe_init(&d, 86400000);
    char k[32];
    int took_ahead = 0;
    for (size_t i = 0; i < N; i++) {
        const uint64_t *ahead = d.next.w;
        size_t n = (size_t)snprintf(k, sizeof k, "m-%zu", i);
        assert_int_equal(jd_dedupe_check(&d, k, n, 1000), 0);
        if (ahead && d.cur.w == ahead) {
            took_ahead++;
            assert_true(d.next_touched >= d.cur.cap * d.cur.words * sizeof(uint64_t)); /* all of it */
        }
    }
    assert_true(took_ahead >= 2);
    for (size_t i = 0; i < N; i++) {
        size_t n = (size_t)snprintf(k, sizeof k, "m-%zu", i);
        assert_int_equal(jd_dedupe_check(&d, k, n, 2000), 1);
    }
    jd_dedupe_free(&d);
}

static void test_dedupe_ttl(void **state)
{
    (void)state;
    jd_dedupe d;
    jd_dedupe_init(&d, 1000);
    static const struct {
        const char *id;
        int64_t ts;
        int want;
    } steps[] = {
        {"x", 0, 0},    {"x", 500, 1},  {"x", 1000, 1}, /* exactly ttl old: still seen */
        {"y", 1000, 0}, {"x", 1001, 0},                 /* newest is now 1001: x (ts 0) is more than ttl old */
        {"x", 1002, 1},                                 /* recorded again at 1001 */
        {"y", 1500, 1}, {"z", 5000, 0},                 /* event time jumps: everything before 4000 expires */
        {"y", 5000, 0}, {"x", 4000, 0}, {"x", 4001, 1}, {"w", 100, 0}, /* an event older than the ttl ... */
        {"w", 100, 0},                                                 /* ... cannot be remembered */
        {"v", 4500, 0},                                                /* out of order but within the ttl: fine */
        {"v", 4600, 1}, {"z", 3000, 1},                                /* a late duplicate of something recent */
    };
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++)
        if (jd_dedupe_check(&d, steps[i].id, strlen(steps[i].id), steps[i].ts) != steps[i].want)
            fail_msg("step %zu (%s at %lld): want %d", i, steps[i].id, (long long)steps[i].ts, steps[i].want);
    jd_dedupe_free(&d);
}

/* Expired entries make room: a steady stream with a short ttl never grows the table. */
static void test_dedupe_expiry_bounds_memory(void **state)
{
    (void)state;
    enum { N = 100000, TTL = 100 };
    jd_dedupe d;
    jd_dedupe_init(&d, TTL);
    char k[32];
    for (size_t i = 0; i < N; i++) {
        size_t n = (size_t)snprintf(k, sizeof k, "e-%zu", i);
        assert_int_equal(jd_dedupe_check(&d, k, n, (int64_t)i), 0);
        if (i >= 50) {
            n = (size_t)snprintf(k, sizeof k, "e-%zu", i - 50);
            assert_int_equal(jd_dedupe_check(&d, k, n, (int64_t)i), 1); /* recent: still seen */
        }
    }
    assert_true(d.cur.cap <= 1024);
    size_t n = (size_t)snprintf(k, sizeof k, "e-%d", 0);
    assert_int_equal(jd_dedupe_check(&d, k, n, N), 0); /* long expired */
    jd_dedupe_free(&d);
}

/* ---------------------------------------------------------------- timers */

static void test_timers_empty(void **state)
{
    (void)state;
    jd_timers t;
    jd_timers_init(&t);
    assert_null(jd_timers_peek(&t));
    jd_timers_free(&t);
    assert_null(jd_timers_peek(&t));
}

/* Pops come out in (due, seq) order, and seq is the push order. */
static void test_timers_random(void **state)
{
    (void)state;
    enum { N = 10000 };
    for (int round = 0; round < 3; round++) {
        rng_seed(0x1234 + (uint64_t)round);
        jd_timers t;
        jd_timers_init(&t);
        /* round 0: many ties; round 1: wide range with extremes; round 2: all equal */
        for (uint32_t i = 0; i < N; i++) {
            jd_timer tm;
            memset(&tm, 0, sizeof tm);
            uint64_t r = rng();
            if (round == 0)
                tm.due = (int64_t)(r % 500);
            else if (round == 1)
                tm.due = i % 97 == 0 ? (i % 2 ? INT64_MAX : INT64_MIN) : (int64_t)r;
            else
                tm.due = 42;
            tm.iid = i;
            tm.gen = (uint32_t)(r >> 32);
            tm.after = (uint16_t)(i & 0xffff);
            tm.journey = (uint16_t)(i % 7);
            tm.user = (struct jd_user *)(uintptr_t)(0x1000 + i);
            jd_timers_push(&t, tm);
        }
        assert_int_equal(t.n, N);
        int64_t prev_due = INT64_MIN;
        uint64_t prev_seq = 0;
        for (uint32_t k = 0; k < N; k++) {
            const jd_timer *top = jd_timers_peek(&t);
            assert_non_null(top);
            jd_timer peeked = *top, tm;
            jd_timers_pop(&t, &tm);
            assert_memory_equal(&peeked, &tm, sizeof tm);
            assert_true(tm.seq == tm.iid); /* seq numbers pushes from 0 */
            if (k > 0 && (tm.due < prev_due || (tm.due == prev_due && tm.seq <= prev_seq)))
                fail_msg("round %d pop %u: (%lld, %llu) after (%lld, %llu)", round, k, (long long)tm.due,
                         (unsigned long long)tm.seq, (long long)prev_due, (unsigned long long)prev_seq);
            /* the payload travels with its timer */
            assert_true(tm.user == (struct jd_user *)(uintptr_t)(0x1000 + tm.iid));
            assert_int_equal(tm.after, tm.iid & 0xffff);
            assert_int_equal(tm.journey, tm.iid % 7);
            prev_due = tm.due;
            prev_seq = tm.seq;
        }
        assert_null(jd_timers_peek(&t));
        assert_int_equal(t.n, 0);
        jd_timers_free(&t);
    }
}

/* The earliest of the n reference timers, by (due, seq). */
static size_t ref_earliest(const jd_timer *ref, size_t n)
{
    size_t best = 0;
    for (size_t i = 1; i < n; i++)
        if (ref[i].due < ref[best].due || (ref[i].due == ref[best].due && ref[i].seq < ref[best].seq))
            best = i;
    return best;
}

/* Pops t's earliest and checks it is the reference's, which it then drops. */
static void pop_against(jd_timers *t, jd_timer *ref, size_t *nref, int op)
{
    size_t best = ref_earliest(ref, *nref);
    const jd_timer *top = jd_timers_peek(t);
    assert_non_null(top);
    assert_int_equal(top->iid, ref[best].iid);
    jd_timer got;
    jd_timers_pop(t, &got);
    if (got.iid != ref[best].iid || got.due != ref[best].due || got.seq != ref[best].seq)
        fail_msg("op %d: popped iid %u due %lld, want iid %u due %lld", op, got.iid, (long long)got.due, ref[best].iid,
                 (long long)ref[best].due);
    ref[best] = ref[--*nref];
}

/* Pushes and pops interleaved, checked against a plain array. */
static void test_timers_interleaved(void **state)
{
    (void)state;
    enum { OPS = 20000 };
    rng_seed(99);
    jd_timers t;
    jd_timers_init(&t);
    jd_timer *ref = malloc(OPS * sizeof *ref);
    size_t nref = 0;
    uint64_t pushed = 0;
    for (int op = 0; op < OPS; op++) {
        uint64_t r = rng();
        if (nref == 0 || r % 3 != 0) {
            jd_timer tm;
            memset(&tm, 0, sizeof tm);
            tm.due = (int64_t)(r % 1000) + op / 10; /* time moves on, with ties */
            tm.iid = (uint32_t)pushed;
            jd_timers_push(&t, tm);
            tm.seq = pushed++;
            ref[nref++] = tm;
        } else {
            pop_against(&t, ref, &nref, op);
        }
        assert_int_equal(t.n, nref);
    }
    free(ref);
    jd_timers_free(&t);
    /* usable again after free */
    jd_timers_init(&t);
    jd_timer tm;
    memset(&tm, 0, sizeof tm);
    tm.due = 5;
    jd_timers_push(&t, tm);
    assert_int_equal(jd_timers_peek(&t)->due, 5);
    jd_timers_free(&t);
}

/* Schedules a timer due at i (and numbered i) with the given delay, in order. */
static void schedule_at(jd_timers *t, uint32_t i, int64_t delay)
{
    jd_timer tm;
    memset(&tm, 0, sizeof tm);
    tm.due = i;
    tm.iid = i;
    tm.seq = t->next_seq++;
    jd_timers_schedule(t, tm, delay);
}

/* Timers scheduled with a delay go to that delay's lane while they keep it in order;
 * the rest (out of order, beyond the lanes, inserted) to the heap. Whatever the mix,
 * pops come in (due, seq) order, checked against a plain array, and iteration visits
 * every pending timer once. */
static void test_timers_lanes(void **state)
{
    (void)state;
    enum { OPS = 30000, NDELAYS = JD_TIMER_LANES + 4 };
    rng_seed(7);
    jd_timers t;
    jd_timers_init(&t);
    jd_timer *ref = malloc(OPS * sizeof *ref);
    size_t nref = 0, max_hn = 0;
    int64_t now = 1000;
    for (int op = 0; op < OPS; op++) {
        uint64_t r = rng();
        if (nref == 0 || r % 5 < (op < OPS / 2 ? 3u : 2u)) { /* grows, then shrinks */
            jd_timer tm;
            memset(&tm, 0, sizeof tm);
            tm.iid = (uint32_t)op;
            tm.seq = t.next_seq++;
            if (r % 50 == 0) { /* loaded from the store: any time */
                tm.due = now + (int64_t)(r >> 40) % 5000 - 1000;
                jd_timers_insert(&t, tm);
            } else {
                /* the clock mostly moves on, sometimes back (a late event) */
                now += (r >> 8) % 16 == 0 ? -(int64_t)((r >> 12) % 300) : (int64_t)((r >> 12) % 4);
                /* half on one delay: its lane grows, and slides down once half taken */
                int64_t delay = (r >> 30) % 2 ? 0 : 10 * (int64_t)((r >> 20) % NDELAYS);
                tm.due = now + delay;
                jd_timers_schedule(&t, tm, delay);
            }
            ref[nref++] = tm;
        } else {
            pop_against(&t, ref, &nref, op);
        }
        assert_int_equal(t.n, nref);
        if (t.hn > max_hn)
            max_hn = t.hn;
        if (op % 1000 == 0) { /* iteration: each pending timer once */
            uint64_t sum = 0, want = 0;
            size_t seen = 0;
            const jd_timer *x;
            for (size_t it = 0; (x = jd_timers_each(&t, &it));) {
                sum += x->seq * 2654435761u;
                seen++;
            }
            for (size_t i = 0; i < nref; i++)
                want += ref[i].seq * 2654435761u;
            assert_int_equal(seen, nref);
            assert_true(sum == want);
        }
    }
    assert_true(t.nlanes == JD_TIMER_LANES); /* the lanes were used, and some delays overflowed */
    assert_true(max_hn > 0);
    while (nref) /* drain */
        pop_against(&t, ref, &nref, OPS);
    assert_null(jd_timers_peek(&t));
    free(ref);
    /* a full lane more than half taken slides down rather than growing */
    jd_timers_free(&t);
    jd_timers_init(&t);
    for (uint32_t i = 0; i < 1024 + 300; i++) {
        schedule_at(&t, i, 5);
        if (i == 1023) {
            for (uint32_t k = 0; k < 600; k++) {
                jd_timer got;
                jd_timers_pop(&t, &got);
                assert_int_equal(got.iid, k);
            }
        }
    }
    assert_int_equal(t.lane[0].cap, 1024);
    for (uint32_t k = 600; k < 1024 + 300; k++) {
        jd_timer got;
        jd_timers_pop(&t, &got);
        assert_int_equal(got.iid, k);
        /* what fires next in the lane popped from: k + 1, k + 2, ... while there are any */
        const jd_timer *a1 = jd_timers_ahead(&t, 0), *a4 = jd_timers_ahead(&t, 3);
        if (k + 1 < 1024 + 300)
            assert_int_equal(a1->iid, k + 1);
        else
            assert_null(a1);
        if (k + 4 < 1024 + 300)
            assert_int_equal(a4->iid, k + 4);
        else
            assert_null(a4);
    }
    assert_null(jd_timers_peek(&t));
    /* a big lane in a steady state (one in, one out) reuses its memory: it slides down
     * once as many have been taken as are left, so its tail stays near twice what is
     * live rather than walking through all of its room */
    enum { LIVE = 10000, STEADY = 100000 };
    uint32_t next_in = 0, next_out = 0;
    for (; next_in < LIVE; next_in++)
        schedule_at(&t, next_in, 7);
    const jd_timer_lane *big = &t.lane[t.nlanes - 1];
    assert_int_equal(big->delay_ms, 7);
    assert_true(big->cap > STEADY + LIVE); /* the room would hold it all without sliding */
    size_t max_tail = 0;
    for (int i = 0; i < STEADY; i++) {
        jd_timer got;
        jd_timers_pop(&t, &got);
        assert_int_equal(got.iid, next_out++);
        schedule_at(&t, next_in++, 7);
        if (big->tail > max_tail)
            max_tail = big->tail;
    }
    assert_true(max_tail <= 2 * LIVE + 1);
    while (jd_timers_peek(&t)) {
        jd_timer got;
        jd_timers_pop(&t, &got);
        assert_int_equal(got.iid, next_out++);
    }
    assert_int_equal(next_out, next_in);
    /* a timer taken from the heap has no lane: nothing ahead */
    jd_timer h;
    memset(&h, 0, sizeof h);
    h.seq = t.next_seq++;
    jd_timers_insert(&t, h);
    h.seq = t.next_seq++;
    jd_timers_insert(&t, h);
    jd_timers_pop(&t, &h);
    assert_null(jd_timers_ahead(&t, 0));
    jd_timers_free(&t);
}

/* With a ttl the table stays bounded by what is live, however many ids pass through
 * (growth is incremental; a table mostly of expired ids is rebuilt at the same size). */
static void test_dedupe_ttl_bounded(void **state)
{
    (void)state;
    jd_dedupe d;
    jd_dedupe_init(&d, 1000);
    char id[32];
    size_t maxcap = 0;
    for (long i = 0; i < 500000; i++) {
        int n = snprintf(id, sizeof id, "m-%ld", i);
        assert_int_equal(jd_dedupe_check(&d, id, (size_t)n, i), 0);
        if (d.cur.cap > maxcap)
            maxcap = d.cur.cap;
    }
    assert_true(maxcap <= 16384); /* about 1000 live ids at any time */
    assert_int_equal(jd_dedupe_check(&d, "m-499500", 8, 500000), 1);
    assert_int_equal(jd_dedupe_check(&d, "m-5", 3, 500001), 0);
    jd_dedupe_free(&d);
}

/* Without a ttl a slot is the hash alone; a ttl set later (as the store does when it
 * opens) applies to the tables made from then on: ids from before count as seen when
 * they move over. */
static void test_dedupe_ttl_later(void **state)
{
    (void)state;
    jd_dedupe d;
    jd_dedupe_init(&d, 0);
    char id[32];
    for (long i = 0; i < 1000; i++) {
        int n = snprintf(id, sizeof id, "a-%ld", i);
        assert_int_equal(jd_dedupe_check(&d, id, (size_t)n, i), 0);
    }
    assert_int_equal(d.cur.words, 2);
    d.ttl_ms = 100;
    assert_int_equal(jd_dedupe_check(&d, "a-5", 3, 5000), 1); /* no time kept: not expired */
    for (long i = 0; i < 3000; i++) {                         /* grows: the old ids move over */
        int n = snprintf(id, sizeof id, "b-%ld", i);
        assert_int_equal(jd_dedupe_check(&d, id, (size_t)n, 5000), 0);
    }
    assert_int_equal(d.cur.words, 3);
    assert_null(d.old.w);
    assert_int_equal(jd_dedupe_check(&d, "a-7", 3, 5050), 1); /* moved at 5000 */
    assert_int_equal(jd_dedupe_check(&d, "b-9", 3, 5100), 1); /* exactly ttl old */
    assert_int_equal(jd_dedupe_check(&d, "a-8", 3, 5200), 0); /* now expired */
    assert_int_equal(jd_dedupe_check(&d, "a-8", 3, 5201), 1);
    jd_dedupe_free(&d);
}

/* A hash whose first word is 0 is kept like any other, through growth. */
static void test_dedupe_zero_word(void **state)
{
    (void)state;
    jd_dedupe d;
    jd_dedupe_init(&d, 0);
    assert_int_equal(jd_dedupe_check_hash(&d, 0, 5, 1), 0);
    assert_int_equal(jd_dedupe_check_hash(&d, 0, 5, 1), 1);
    assert_int_equal(jd_dedupe_check_hash(&d, 0, 0, 1), 0); /* the empty slot's value: kept */
    assert_int_equal(jd_dedupe_check_hash(&d, 0, 0, 1), 1);
    assert_int_equal(jd_dedupe_check_hash(&d, 0, 6, 1), 0);
    assert_int_equal(jd_dedupe_check_hash(&d, 7, 5, 1), 0);
    for (uint64_t i = 1; i < 100000; i++) /* several growths: (0, 5) moves each time */
        assert_int_equal(jd_dedupe_check_hash(&d, i * 0x9E3779B97F4A7C15ULL, i, 1), 0);
    assert_int_equal(jd_dedupe_check_hash(&d, 0, 5, 1), 1); /* found in the old table or the new */
    for (uint64_t i = 100000; d.old.w; i++)                 /* until the move is done */
        assert_int_equal(jd_dedupe_check_hash(&d, i * 0x9E3779B97F4A7C15ULL, i, 1), 0);
    assert_int_equal(jd_dedupe_check_hash(&d, 0, 5, 1), 1);
    assert_int_equal(jd_dedupe_check_hash(&d, 0, 6, 1), 1);
    assert_int_equal(jd_dedupe_check_hash(&d, 0, 8, 1), 0);
    jd_dedupe_free(&d);
}

/* Ids whose probes start at the same bucket fill it and spill into the next ones (from
 * the table's last bucket, round to the first); each is still found, alone or among
 * ids of the buckets they spilled into, and after every growth. */
static void test_dedupe_full_buckets(void **state)
{
    (void)state;
    jd_dedupe d;
    jd_dedupe_init(&d, 0);
    enum { SAME = 40 };
    for (uint64_t k = 1; k <= SAME; k++) { /* low bits all ones: the last bucket */
        assert_int_equal(jd_dedupe_check_hash(&d, k << 40 | 0xffffff, k, 1), 0);
        assert_int_equal(jd_dedupe_check_hash(&d, k, 0xffffff, 1), 0); /* bucket 0, spilled into */
    }
    for (uint64_t k = 1; k <= SAME; k++) {
        assert_int_equal(jd_dedupe_check_hash(&d, k << 40 | 0xffffff, k, 2), 1);
        assert_int_equal(jd_dedupe_check_hash(&d, k << 40 | 0xffffff, k + 1000, 2), 0); /* b differs */
        assert_int_equal(jd_dedupe_check_hash(&d, k, 0xffffff, 2), 1);
    }
    size_t cap0 = d.cur.cap;
    for (uint64_t i = 1; d.cur.cap < 8 * cap0 || d.old.w; i++)
        assert_int_equal(jd_dedupe_check_hash(&d, i * 0x9E3779B97F4A7C15ULL, i << 32, 3), 0);
    for (uint64_t k = 1; k <= SAME; k++) {
        assert_int_equal(jd_dedupe_check_hash(&d, k << 40 | 0xffffff, k, 4), 1);
        assert_int_equal(jd_dedupe_check_hash(&d, k, 0xffffff, 4), 1);
    }
    jd_dedupe_free(&d);
}

/* ---------------------------------------------------------------- traits */

/* The merge as it was written first (msgpack-c's unpacker and packer), the reference the
 * byte-copying one must match. */
static int ref_key_eq(const msgpack_object *a, const msgpack_object *b)
{
    return a->type == MSGPACK_OBJECT_STR && b->type == MSGPACK_OBJECT_STR && a->via.str.size == b->via.str.size &&
           memcmp(a->via.str.ptr, b->via.str.ptr, a->via.str.size) == 0;
}

static void ref_merge(jd_buf *traits, const msgpack_object *m)
{
    if (m->via.map.size == 0)
        return;
    msgpack_zone z;
    msgpack_zone_init(&z, 1024);
    msgpack_object oo = {.type = MSGPACK_OBJECT_MAP}, *old = &oo;
    size_t off = 0;
    if (traits->len && (msgpack_unpack(traits->data, traits->len, &off, &z, &oo) != MSGPACK_UNPACK_SUCCESS ||
                        oo.type != MSGPACK_OBJECT_MAP))
        oo = (msgpack_object){.type = MSGPACK_OBJECT_MAP};
    jd_buf out;
    jd_buf_init(&out);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &out, jd_buf_msgpack_write);
    uint32_t count = 0;
    for (int pass = 0; pass < 2; pass++) {
        if (pass)
            msgpack_pack_map(&pk, count);
        for (uint32_t i = 0; i < old->via.map.size; i++) {
            int over = 0;
            for (uint32_t j = 0; j < m->via.map.size && !over; j++)
                over = ref_key_eq(&old->via.map.ptr[i].key, &m->via.map.ptr[j].key);
            if (!over && !pass)
                count++;
            if (!over && pass) {
                msgpack_pack_object(&pk, old->via.map.ptr[i].key);
                msgpack_pack_object(&pk, old->via.map.ptr[i].val);
            }
        }
        for (uint32_t j = 0; j < m->via.map.size; j++) {
            int later = 0;
            for (uint32_t k = j + 1; k < m->via.map.size && !later; k++)
                later = ref_key_eq(&m->via.map.ptr[j].key, &m->via.map.ptr[k].key);
            if (later || m->via.map.ptr[j].val.type == MSGPACK_OBJECT_NIL)
                continue;
            if (!pass)
                count++;
            else {
                msgpack_pack_object(&pk, m->via.map.ptr[j].key);
                msgpack_pack_object(&pk, m->via.map.ptr[j].val);
            }
        }
    }
    msgpack_zone_destroy(&z);
    jd_buf_free(traits);
    *traits = out;
}

/* A random update: string keys from a small set (so they override), now and then a
 * number key, nil (removes), nested values, floats, long strings. */
static void random_update(msgpack_packer *pk)
{
    static const char *const keys[] = {"email", "plan", "role", "company", "company_size", "a", "b", "nested"};
    uint32_t n = (uint32_t)(rng() % 6);
    msgpack_pack_map(pk, n);
    for (uint32_t i = 0; i < n; i++) {
        if (rng() % 10 == 0)
            msgpack_pack_int(pk, (int)(rng() % 3));
        else
            jd_mp_pack_cstr(pk, keys[rng() % 8]);
        switch (rng() % 8) {
        case 0: msgpack_pack_nil(pk); break;
        case 1: msgpack_pack_int64(pk, (int64_t)(rng() % 100000) - 50000); break;
        case 2: msgpack_pack_double(pk, (double)(rng() % 1000) / 8); break;
        case 3: msgpack_pack_float(pk, 0.5f); break;
        case 4: {
            char big[300];
            size_t len = (size_t)(rng() % sizeof big);
            memset(big, 'x', len);
            msgpack_pack_str(pk, len);
            msgpack_pack_str_body(pk, big, len);
            break;
        }
        case 5:
            msgpack_pack_array(pk, 2);
            msgpack_pack_true(pk);
            msgpack_pack_map(pk, 1);
            jd_mp_pack_cstr(pk, "k");
            msgpack_pack_uint64(pk, rng());
            break;
        default: jd_mp_pack_cstr(pk, "trial"); break;
        }
    }
}

static void test_user_merge_traits(void **state)
{
    (void)state;
    rng_seed(42);
    jd_buf scratch; /* one for every run, as an engine keeps its own */
    jd_buf_init(&scratch);
    for (int run = 0; run < 200; run++) {
        jd_user *u = jd_user_new("u", 1);
        jd_buf ref;
        jd_buf_init(&ref);
        for (int step = 0; step < 40; step++) {
            jd_buf upd;
            jd_buf_init(&upd);
            msgpack_packer pk;
            msgpack_packer_init(&pk, &upd, jd_buf_msgpack_write);
            random_update(&pk);
            msgpack_zone z;
            msgpack_zone_init(&z, 1024);
            msgpack_object m;
            size_t off = 0;
            assert_int_equal(msgpack_unpack(upd.data, upd.len, &off, &z, &m), MSGPACK_UNPACK_SUCCESS);
            jd_user_merge_traits(u, &m, run % 2 ? &scratch : NULL);
            ref_merge(&ref, &m);
            assert_int_equal(u->traits.len, ref.len);
            assert_memory_equal(u->traits.data, ref.data, ref.len);
            msgpack_zone_destroy(&z);
            jd_buf_free(&upd);
        }
        jd_buf_free(&ref);
        jd_user_free(u);
    }
    jd_buf_free(&scratch);
    /* unreadable traits count as none */
    jd_user *u = jd_user_new("u", 1);
    jd_buf_append(&u->traits, "\x82\xa1", 2);
    msgpack_object_kv kv = {{.type = MSGPACK_OBJECT_STR, .via.str = {1, "k"}},
                            {.type = MSGPACK_OBJECT_BOOLEAN, .via.boolean = true}};
    msgpack_object m = {.type = MSGPACK_OBJECT_MAP, .via.map = {1, &kv}};
    jd_user_merge_traits(u, &m, NULL);
    assert_int_equal(u->traits.len, 4);
    assert_memory_equal(u->traits.data, "\x81\xa1k\xc3", 4);
    jd_user_free(u);
}

/* An update from JSON-like text: {k=v,...} with v an integer, a float (has a '.'), t/f,
 * n (nil: removes), a "string", or a nested {..} map. Keys may repeat. */
static const char *pack_text(msgpack_packer *pk, const char *p);

static const char *pack_text_map(msgpack_packer *pk, const char *p)
{
    uint32_t n = 0;
    int depth = 0;
    for (const char *q = p + 1; *q && !(depth == 0 && *q == '}'); q++) {
        if (*q == '{')
            depth++;
        else if (*q == '}')
            depth--;
        else if (*q == '=' && depth == 0)
            n++;
    }
    msgpack_pack_map(pk, n);
    p++;
    while (*p != '}') {
        const char *eq = strchr(p, '=');
        jd_mp_pack_str(pk, p, (size_t)(eq - p));
        p = pack_text(pk, eq + 1);
        if (*p == ',')
            p++;
    }
    return p + 1;
}

static const char *pack_text(msgpack_packer *pk, const char *p)
{
    if (*p == '{')
        return pack_text_map(pk, p);
    if (*p == '"') {
        const char *e = strchr(p + 1, '"');
        jd_mp_pack_str(pk, p + 1, (size_t)(e - p - 1));
        return e + 1;
    }
    if (*p == 't' || *p == 'f' || *p == 'n') {
        if (*p == 'n')
            msgpack_pack_nil(pk);
        else if (*p == 't')
            msgpack_pack_true(pk);
        else
            msgpack_pack_false(pk);
        return p + 1;
    }
    char *end;
    size_t len = strcspn(p, ",}");
    if (memchr(p, '.', len))
        msgpack_pack_double(pk, strtod(p, &end));
    else
        msgpack_pack_int64(pk, strtoll(p, &end, 10));
    return end;
}

/* Merges the update given as text into u (and into the reference). */
static void merge_text(jd_user *u, jd_buf *ref, jd_buf *scratch, const char *text)
{
    jd_buf upd;
    jd_buf_init(&upd);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &upd, jd_buf_msgpack_write);
    pack_text(&pk, text);
    msgpack_zone z;
    msgpack_zone_init(&z, 1024);
    msgpack_object m;
    assert_int_equal(jd_mp_unpack(upd.data, upd.len, &z, &m), 0);
    jd_user_merge_traits(u, &m, scratch);
    ref_merge(ref, &m);
    assert_int_equal(u->traits.len, ref->len);
    assert_memory_equal(u->traits.data, ref->data, ref->len);
    assert_true(u->traits.cap > u->traits.len);
    msgpack_zone_destroy(&z);
    jd_buf_free(&upd);
}

/* Where merged traits are kept: the same bytes change nothing (not even the pointer); a
 * result that fits the allocation goes into it; for a larger one, or one under half of
 * it, the allocation becomes exactly its size. The bytes are the reference merge's in
 * every case. */
static void test_user_merge_traits_storage(void **state)
{
    (void)state;
    jd_buf scratch, ref;
    jd_buf_init(&scratch);
    jd_buf_init(&ref);
    jd_user *u = jd_user_new("u", 1);
    merge_text(u, &ref, &scratch, "{email=\"a@x\",plan=\"trial\",seats=3,score=1.5,tags={a=1,b=t}}");
    assert_int_equal(u->traits.cap, u->traits.len + 1); /* a new allocation: exact */

    /* the same traits again, in any order of the same values: nothing moves */
    char *p = u->traits.data;
    size_t cap = u->traits.cap;
    merge_text(u, &ref, &scratch, "{email=\"a@x\",plan=\"trial\",seats=3,score=1.5,tags={a=1,b=t}}");
    merge_text(u, &ref, &scratch, "{tags={a=1,b=t},email=\"a@x\"}");
    merge_text(u, &ref, &scratch, "{plan=\"trial\"}");
    assert_ptr_equal(u->traits.data, p);
    assert_int_equal(u->traits.cap, cap);

    /* smaller, in the same allocation: a value shrinks; a key is removed (nil) */
    merge_text(u, &ref, &scratch, "{plan=\"x\"}");
    assert_ptr_equal(u->traits.data, p);
    merge_text(u, &ref, &scratch, "{seats=n}");
    assert_ptr_equal(u->traits.data, p);
    assert_int_equal(u->traits.cap, cap);

    /* duplicate keys: the last wins (a nil last removes, a nil before a value does not) */
    merge_text(u, &ref, &scratch, "{plan=\"a\",plan=\"b\",email=\"c@x\",email=n,score=n,score=2.5}");
    assert_ptr_equal(u->traits.data, p);

    /* larger: the allocation becomes exactly its size */
    merge_text(u, &ref, &scratch, "{company=\"a company with a long name\",nested={a={b={c=1.25,d=-7}}}}");
    assert_true(u->traits.len + 1 > cap);
    assert_int_equal(u->traits.cap, u->traits.len + 1);

    /* much smaller (under half the allocation): exact again */
    cap = u->traits.cap;
    merge_text(u, &ref, &scratch, "{company=n,nested=n,tags=n,plan=n}");
    assert_true(u->traits.len + 1 < cap / 2);
    assert_int_equal(u->traits.cap, u->traits.len + 1);

    /* everything removed: an empty map, as before */
    merge_text(u, &ref, &scratch, "{score=n,email=n}");
    assert_int_equal(u->traits.len, 1);
    assert_memory_equal(u->traits.data, "\x80", 1);

    /* an empty update changes nothing */
    p = u->traits.data;
    merge_text(u, &ref, &scratch, "{}");
    assert_ptr_equal(u->traits.data, p);

    /* traits read back from a checkpoint sit in a buffer grown by appends: the first
     * change gives them their exact size */
    jd_user *v = jd_user_new("v", 1);
    jd_buf_append(&v->traits, ref.data, ref.len);
    jd_buf_append(&v->traits, "", 0);
    jd_buf vref;
    jd_buf_init(&vref);
    jd_buf_append(&vref, ref.data, ref.len);
    assert_true(v->traits.cap >= 256);
    merge_text(v, &vref, &scratch, "{a=1}");
    assert_int_equal(v->traits.cap, v->traits.len + 1);
    jd_buf_free(&vref);
    jd_user_free(v);

    jd_buf_free(&ref);
    jd_buf_free(&scratch);
    jd_user_free(u);
}

/* ---------------------------------------------------------------- traits in Lua */

static int strptr_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A Lua value as text: types (integer or float subtype, exact float bits), strings'
 * bytes, tables in their traversal order (next), whether one has the array metatable.
 * Two values with the same text are the same to any script. (A table with a table for
 * a key is traversed in an order its address decides: its entries are sorted.) */
static void describe(lua_State *L, int idx, jd_buf *out)
{
    idx = lua_absindex(L, idx);
    char t[64];
    switch (lua_type(L, idx)) {
    case LUA_TNIL: jd_buf_puts(out, "nil"); break;
    case LUA_TBOOLEAN: jd_buf_puts(out, lua_toboolean(L, idx) ? "true" : "false"); break;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx))
            snprintf(t, sizeof t, "i%lld", (long long)lua_tointeger(L, idx));
        else
            snprintf(t, sizeof t, "f%a", (double)lua_tonumber(L, idx));
        jd_buf_puts(out, t);
        break;
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        snprintf(t, sizeof t, "s%zu:", n);
        jd_buf_puts(out, t);
        for (size_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char)s[i];
            if (c >= 32 && c < 127 && c != '\\') {
                jd_buf_putc(out, (char)c);
            } else {
                snprintf(t, sizeof t, "\\x%02x", c);
                jd_buf_puts(out, t);
            }
        }
        break;
    }
    case LUA_TTABLE: {
        int marked = 0;
        if (lua_getmetatable(L, idx)) {
            luaL_getmetatable(L, JD_ARRAY_MT);
            marked = lua_rawequal(L, -1, -2) ? 1 : 2;
            lua_pop(L, 2);
        }
        jd_buf_puts(out, marked == 1 ? "[" : marked ? "?{" : "{");
        char **ents = NULL;
        size_t n = 0;
        int table_key = 0;
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            jd_buf e;
            jd_buf_init(&e);
            table_key |= lua_type(L, -2) == LUA_TTABLE;
            describe(L, -2, &e);
            jd_buf_putc(&e, '=');
            describe(L, -1, &e);
            jd_buf_putc(&e, ',');
            ents = realloc(ents, (n + 1) * sizeof *ents);
            ents[n++] = (char *)jd_buf_cstr(&e);
            lua_pop(L, 1);
        }
        if (table_key)
            qsort(ents, n, sizeof *ents, strptr_cmp);
        for (size_t i = 0; i < n; i++) {
            jd_buf_puts(out, ents[i]);
            free(ents[i]);
        }
        free(ents);
        jd_buf_putc(out, '}');
        break;
    }
    default: jd_buf_puts(out, "?"); break;
    }
}

typedef struct push_case {
    const char *data;
    size_t len;
    int packed; /* 1: jd_lua_push_packed; 0: jd_mp_unpack, then jd_lua_push_msgpack */
    int keys;   /* the outermost map's string keys through a key function */
    int rc;
    msgpack_zone *z; /* the tree's, kept outside the call (a raised error skips its end) */
} push_case;

static int key_calls;

static void test_key(lua_State *L, void *ud, const char *s, size_t n)
{
    assert_ptr_equal(ud, &key_calls);
    key_calls++;
    lua_pushlstring(L, s, n);
}

static int push_case_cf(lua_State *L)
{
    push_case *c = lua_touserdata(L, 1);
    int top = lua_gettop(L);
    if (c->packed) {
        c->rc = jd_lua_push_packed(L, c->data, c->len, c->keys ? test_key : NULL, &key_calls);
    } else {
        msgpack_object o;
        c->rc = jd_mp_unpack(c->data, c->len, c->z, &o);
        if (c->rc == 0)
            jd_lua_push_msgpack(L, &o);
    }
    assert_int_equal(lua_gettop(L), top + (c->rc == 0));
    return c->rc == 0;
}

/* What one way of pushing gives: its verdict and the value (or error) as text. */
static void push_describe(lua_State *L, const void *data, size_t len, int packed, int keys, jd_buf *out)
{
    msgpack_zone z;
    msgpack_zone_init(&z, 1024);
    push_case c = {data, len, packed, keys, 0, &z};
    jd_buf_reset(out);
    int top = lua_gettop(L);
    /* both ways start from the same collector state: a collection step that clears a
     * key set to nil moves where the key goes when it is set again, so the two agree on
     * the order of such a table only when they allocate alike (a nil key's value is
     * skipped, not built and dropped) */
    lua_gc(L, LUA_GCCOLLECT);
    lua_pushcfunction(L, push_case_cf);
    lua_pushlightuserdata(L, &c);
    if (lua_pcall(L, 1, LUA_MULTRET, 0) != LUA_OK) {
        jd_buf_puts(out, "error: ");
        jd_buf_puts(out, lua_tostring(L, -1));
    } else if (c.rc) {
        jd_buf_puts(out, "unreadable");
    } else {
        describe(L, -1, out);
    }
    lua_settop(L, top);
    msgpack_zone_destroy(&z);
}

/* what expect_same_push has met: errors, unreadable bytes, tables */
static int met_error, met_unreadable, met_table;

static void expect_same_push(lua_State *L, const void *data, size_t len)
{
    jd_buf a, b;
    jd_buf_init(&a);
    jd_buf_init(&b);
    push_describe(L, data, len, 0, 0, &a);
    met_error += a.len > 6 && memcmp(a.data, "error:", 6) == 0;
    met_unreadable += a.len == 10 && memcmp(a.data, "unreadable", 10) == 0;
    met_table += a.len && (a.data[0] == '{' || a.data[0] == '[');
    for (int keys = 0; keys < 2; keys++) {
        push_describe(L, data, len, 1, keys, &b);
        if (a.len != b.len || memcmp(a.data, b.data, a.len)) {
            for (size_t i = 0; i < len; i++)
                fprintf(stderr, "%02x", ((const unsigned char *)data)[i]);
            fail_msg("\ntree: %.*s\nbytes (keys %d): %.*s", (int)a.len, a.data, keys, (int)b.len, b.data);
        }
    }
    jd_buf_free(&a);
    jd_buf_free(&b);
}

static lua_State *push_state(void)
{
    lua_State *L = luaL_newstate();
    assert_non_null(L);
    luaL_newmetatable(L, JD_ARRAY_MT);
    lua_pop(L, 1);
    return L;
}

/* Any value, every type msgpack has, now and then a key Lua refuses. */
static void random_value(msgpack_packer *pk, int depth)
{
    switch (rng() % (depth > 3 ? 13 : 16)) {
    case 0: msgpack_pack_nil(pk); break;
    case 1: msgpack_pack_true(pk); break;
    case 2: msgpack_pack_false(pk); break;
    case 3: msgpack_pack_uint64(pk, rng() >> (rng() % 64)); break; /* up to beyond INT64_MAX */
    case 4: msgpack_pack_int64(pk, -(int64_t)(rng() >> (1 + rng() % 63))); break;
    case 5: msgpack_pack_double(pk, (double)(int64_t)(rng() % 2000 - 1000) / 4); break; /* 2.0 is a float */
    case 6: msgpack_pack_float(pk, (float)(rng() % 100) / 8); break;
    case 7: msgpack_pack_double(pk, rng() % 2 ? NAN : INFINITY); break;
    case 8:
    case 9: {
        static const char *const s[] = {"", "email", "plan", "a", "x_long_trait_name_beyond_the_cache_limit", "1"};
        jd_mp_pack_cstr(pk, s[rng() % 6]);
        break;
    }
    case 10: {
        char big[300];
        size_t n = (size_t)(rng() % sizeof big);
        memset(big, 'y', n);
        jd_mp_pack_str(pk, big, n);
        break;
    }
    case 11:
        msgpack_pack_bin(pk, 3);
        msgpack_pack_bin_body(pk, "\0b\xff", 3);
        break;
    case 12:
        msgpack_pack_ext(pk, 2, 7);
        msgpack_pack_ext_body(pk, "ex", 2);
        break;
    case 13: {
        uint32_t n = (uint32_t)(rng() % 5);
        msgpack_pack_array(pk, n);
        for (uint32_t i = 0; i < n; i++)
            random_value(pk, depth + 1);
        break;
    }
    default: {
        uint32_t n = (uint32_t)(rng() % 6);
        msgpack_pack_map(pk, n);
        for (uint32_t i = 0; i < n; i++) {
            uint64_t r = rng() % 40;
            if (r == 0) /* a refused key: ext (nil in Lua) or NaN */
                rng() % 2 ? msgpack_pack_double(pk, NAN)
                          : (void)(msgpack_pack_ext(pk, 1, 1), msgpack_pack_ext_body(pk, "e", 1));
            else if (r == 1)
                msgpack_pack_nil(pk); /* skipped, with its value */
            else if (r < 4)
                random_value(pk, depth + 4); /* any key, containers too */
            else
                jd_mp_pack_cstr(pk, (const char *[]){"email", "plan", "a", "b",
                                                     "x_long_trait_name_beyond_the_cache_limit", ""}[rng() % 6]);
            random_value(pk, depth + 1);
        }
        break;
    }
    }
}

/* The bytes way pushes what the tree way pushed: the same tables (keys, value types,
 * integers and floats, array metatables, traversal order), the same refusal of a nil
 * or NaN key, the same verdict on unreadable bytes (truncated, trailing, too deep). */
static void test_lua_push_packed(void **state)
{
    (void)state;
    lua_State *L = push_state();
    rng_seed(5);
    met_error = met_unreadable = met_table = 0;
    jd_buf b;
    jd_buf_init(&b);
    for (int run = 0; run < 3000; run++) {
        jd_buf_reset(&b);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &b, jd_buf_msgpack_write);
        if (run % 4) { /* most of them maps, as traits are */
            uint32_t n = (uint32_t)(rng() % 12);
            msgpack_pack_map(&pk, n);
            for (uint32_t i = 0; i < n; i++) {
                static const char *const keys[] = {"email", "plan", "nested", "tags",
                                                   "x_long_trait_name_beyond_the_cache_limit"};
                if (rng() % 8)
                    jd_mp_pack_cstr(&pk, keys[rng() % 5]);
                else
                    random_value(&pk, 4);
                random_value(&pk, 1);
            }
        } else {
            random_value(&pk, 0);
        }
        expect_same_push(L, b.data, b.len);
        if (b.len > 1) { /* truncated; with a byte more */
            expect_same_push(L, b.data, b.len - 1 - (size_t)(rng() % (b.len - 1)));
            jd_buf_putc(&b, (char)0xc0);
            expect_same_push(L, b.data, b.len);
        }
    }
    /* the keys met through the key function: the outermost map's strings only:
     * {a = {b = 1}, c = {"d"}, [1] = true} */
    key_calls = 0;
    push_case c = {.data = "\x83\xa1"
                           "a\x81\xa1"
                           "b\x01\xa1"
                           "c\x91\xa1"
                           "d\x01\xc3",
                   .len = 14,
                   .packed = 1,
                   .keys = 1};
    lua_pushcfunction(L, push_case_cf);
    lua_pushlightuserdata(L, &c);
    assert_int_equal(lua_pcall(L, 1, 1, 0), LUA_OK);
    assert_int_equal(c.rc, 0);
    assert_int_equal(key_calls, 2);
    lua_pop(L, 1);
    /* nesting: 32 levels are read, 33 are not (jd_mp_unpack's limit) */
    for (int depth = 31; depth <= 33; depth++) {
        jd_buf_reset(&b);
        for (int i = 0; i < depth; i++)
            jd_buf_append(&b, i % 2 ? "\x91" : "\x81\xa1k", i % 2 ? 1 : 3);
        jd_buf_putc(&b, 1);
        expect_same_push(L, b.data, b.len);
        push_case d = {.data = b.data, .len = b.len, .packed = 1};
        lua_pushcfunction(L, push_case_cf);
        lua_pushlightuserdata(L, &d);
        assert_int_equal(lua_pcall(L, 1, LUA_MULTRET, 0), LUA_OK);
        assert_int_equal(d.rc, depth <= 32 ? 0 : -1);
        lua_settop(L, 0);
    }
    /* a refused key in a map whose bytes are unreadable later: unreadable, as before */
    expect_same_push(L, "\x82\xd4\x01\x01\x01\xa1k", 7);
    expect_same_push(L, "\x81\xd4\x01\x01\x01", 5);
    assert_true(met_error > 10 && met_unreadable > 100 && met_table > 1000);
    jd_buf_free(&b);
    lua_close(L);
}

/* ---------------------------------------------------------------- decision trace */

static jd_decision decision(int i, size_t detail_len)
{
    jd_decision d = {.time = 1000 * (int64_t)i - 5,
                     .kind = (uint8_t)(i % JD_DEC_NKINDS),
                     .journey = (int16_t)(i % 7 - 1),
                     .stage = (int16_t)(i % 5 - 1)};
    for (size_t k = 0; k < detail_len && k < sizeof d.detail - 1; k++)
        d.detail[k] = (char)('a' + (i + (int)k) % 26);
    return d;
}

/* The trace keeps the last cap decisions, oldest first, each as it was given. */
static void check_trace(const jd_user *u, int first, int n, size_t (*len_of)(int))
{
    assert_int_equal(u->ndecisions, n);
    for (int k = 0; k < n; k++) {
        jd_decision want = decision(first + k, len_of(first + k)), got;
        memset(&got, 0x55, sizeof got);
        const jd_decision *g = jd_user_decision(u, k, &got);
        assert_ptr_equal(g, &got);
        assert_true(got.time == want.time);
        assert_int_equal(got.kind, want.kind);
        assert_int_equal(got.journey, want.journey);
        assert_int_equal(got.stage, want.stage);
        assert_string_equal(got.detail, want.detail);
    }
}

static size_t len_varied(int i)
{
    return (size_t)(i * 37 % 120); /* 0 .. 119: past 103 the detail is cut as jd_decision holds it */
}

static size_t len_full(int i)
{
    (void)i;
    return 103;
}

static void test_user_decisions(void **state)
{
    (void)state;
    jd_user *u = jd_user_new("u", 1);
    jd_user_decide(u, 0, &(jd_decision){.time = 1}); /* cap 0: nothing kept */
    assert_int_equal(u->ndecisions, 0);
    for (int i = 0; i < 7; i++)
        jd_user_decide(u, 20, &(jd_decision){0});
    jd_user_free(u);

    u = jd_user_new("u", 1);
    for (int i = 0; i < 300; i++) {
        jd_decision d = decision(i, len_varied(i));
        jd_user_decide(u, 20, &d);
        int n = i + 1 < 20 ? i + 1 : 20;
        check_trace(u, i + 1 - n, n, len_varied);
    }
    /* a smaller cap (a restart with another decisions_per_user) drops the oldest first */
    jd_decision d = decision(300, len_varied(300));
    jd_user_decide(u, 5, &d);
    check_trace(u, 296, 5, len_varied);
    jd_user_free(u);

    /* at most 64 KB: 1000 full details do not fit, the oldest go */
    u = jd_user_new("u", 1);
    for (int i = 0; i < 1000; i++) {
        d = decision(i, 103);
        jd_user_decide(u, 1000, &d);
    }
    int kept = 65535 / (14 + 103);
    check_trace(u, 1000 - kept, kept, len_full);
    jd_user_free(u);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_map_empty),
        cmocka_unit_test(test_map_100k),
        cmocka_unit_test(test_map_moving),
        cmocka_unit_test(test_map_churn),
        cmocka_unit_test(test_map_keys),
        cmocka_unit_test(test_prefault),
        cmocka_unit_test(test_queue_room_populated_ahead),
        cmocka_unit_test(test_map_borrowed_keys),
        cmocka_unit_test(test_hash),
        cmocka_unit_test(test_dedupe_ttl_bounded),
        cmocka_unit_test(test_dedupe_basic),
        cmocka_unit_test(test_dedupe_many),
        cmocka_unit_test(test_dedupe_made_ahead),
        cmocka_unit_test(test_dedupe_ttl),
        cmocka_unit_test(test_dedupe_expiry_bounds_memory),
        cmocka_unit_test(test_timers_empty),
        cmocka_unit_test(test_timers_random),
        cmocka_unit_test(test_timers_interleaved),
        cmocka_unit_test(test_timers_lanes),
        cmocka_unit_test(test_user_decisions),
        cmocka_unit_test(test_hash2),
        cmocka_unit_test(test_hash_values),
        cmocka_unit_test(test_dedupe_ttl_later),
        cmocka_unit_test(test_user_merge_traits),
        cmocka_unit_test(test_user_merge_traits_storage),
        cmocka_unit_test(test_lua_push_packed),
        cmocka_unit_test(test_dedupe_zero_word),
        cmocka_unit_test(test_dedupe_full_buckets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
