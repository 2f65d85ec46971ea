/* zrow: compressed store rows (see zrow.h). */
#define _POSIX_C_SOURCE 200809L
#include "zrow.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <zdict.h>
#include <zlib.h>
#include <zstd.h>

/* zstd's fastest level: a checkpoint packs tens of thousands of rows a second on the
 * writer thread (about 2 us a row), and level 3 saved only a few percent more. */
#define LEVEL 1
/* Training waits for this many rows and bytes of them (zstd suggests samples of about 100x
 * the dictionary's size), and keeps at most SAMPLE_MAX bytes. */
#define SAMPLE_ROWS 2000
#define SAMPLE_MIN (512u << 10)
#define SAMPLE_MAX (4u << 20)
#define DICT_MAX (16u << 10)
#define TRIES 3 /* failed trainings before a kind stays without a dictionary */
/* The largest row unpacked: a damaged header must not ask for gigabytes (rows are a few
 * KB; the engine's payload limits keep them far below this). */
#define ROW_MAX (64ull << 20)

typedef struct zdict {
    uint32_t id;
    int kind;
    ZSTD_DDict *d;
} zdict;

typedef struct sampler {
    jd_buf bytes;
    size_t *sizes;
    size_t n, cap;
    int tries;
} sampler;

struct jd_zrow {
    pthread_mutex_t mu; /* the dictionary table (a reader may load one while the writer packs) */
    zdict *dicts;
    size_t ndicts, cap;
    /* the writer's side */
    ZSTD_CCtx *cctx;
    ZSTD_CDict *cdict[JD_ZROW_KINDS];
    uint32_t cdict_id[JD_ZROW_KINDS];
    sampler samples[JD_ZROW_KINDS];
    jd_buf packed;
    /* the readers' side, one per role */
    ZSTD_DCtx *dctx[2];
    jd_buf plain[2];
};

jd_zrow *jd_zrow_new(void)
{
    jd_zrow *z = jd_xcalloc(1, sizeof *z);
    pthread_mutex_init(&z->mu, NULL);
    jd_buf_init(&z->packed);
    for (int r = 0; r < 2; r++)
        jd_buf_init(&z->plain[r]);
    for (int k = 0; k < JD_ZROW_KINDS; k++)
        jd_buf_init(&z->samples[k].bytes);
    return z;
}

void jd_zrow_free(jd_zrow *z)
{
    if (!z)
        return;
    for (size_t i = 0; i < z->ndicts; i++)
        ZSTD_freeDDict(z->dicts[i].d);
    free(z->dicts);
    for (int k = 0; k < JD_ZROW_KINDS; k++) {
        ZSTD_freeCDict(z->cdict[k]);
        jd_buf_free(&z->samples[k].bytes);
        free(z->samples[k].sizes);
    }
    ZSTD_freeCCtx(z->cctx);
    jd_buf_free(&z->packed);
    for (int r = 0; r < 2; r++) {
        ZSTD_freeDCtx(z->dctx[r]);
        jd_buf_free(&z->plain[r]);
    }
    pthread_mutex_destroy(&z->mu);
    free(z);
}

static ZSTD_DDict *find(jd_zrow *z, uint32_t id)
{
    ZSTD_DDict *d = NULL;
    pthread_mutex_lock(&z->mu);
    for (size_t i = 0; i < z->ndicts && !d; i++)
        if (z->dicts[i].id == id)
            d = z->dicts[i].d;
    pthread_mutex_unlock(&z->mu);
    return d;
}

int jd_zrow_add_dict(jd_zrow *z, uint32_t id, int kind, const void *dict, size_t n, int pack)
{
    if (kind < 0 || kind >= JD_ZROW_KINDS || !id)
        return -1;
    if (find(z, id))
        return 0;
    ZSTD_DDict *d = ZSTD_createDDict(dict, n);
    if (!d)
        return -1;
    if (pack && id > z->cdict_id[kind]) { /* the newest of its kind packs */
        ZSTD_CDict *c = ZSTD_createCDict(dict, n, LEVEL);
        if (!c) {
            ZSTD_freeDDict(d);
            return -1;
        }
        ZSTD_freeCDict(z->cdict[kind]);
        z->cdict[kind] = c;
        z->cdict_id[kind] = id;
    }
    pthread_mutex_lock(&z->mu);
    if (z->ndicts == z->cap) {
        z->cap = z->cap ? 2 * z->cap : 4;
        z->dicts = jd_xrealloc(z->dicts, z->cap * sizeof *z->dicts);
    }
    z->dicts[z->ndicts++] = (zdict){id, kind, d};
    pthread_mutex_unlock(&z->mu);
    return 0;
}

static void sample(sampler *s, const void *v, size_t n)
{
    if (s->tries >= TRIES || s->bytes.len + n > SAMPLE_MAX)
        return;
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 1024;
        s->sizes = jd_xrealloc(s->sizes, s->cap * sizeof *s->sizes);
    }
    jd_buf_append(&s->bytes, v, n);
    s->sizes[s->n++] = n;
}

int jd_zrow_pack(jd_zrow *z, int kind, const void *v, size_t n, const void **out, size_t *outn)
{
    *out = v;
    *outn = n;
    if (kind < 0 || kind >= JD_ZROW_KINDS || n < 32)
        return 1;
    if (!z->cdict[kind])
        sample(&z->samples[kind], v, n);
    if (!z->cctx && !(z->cctx = ZSTD_createCCtx()))
        return 1;
    size_t bound = ZSTD_compressBound(n);
    jd_buf_reset(&z->packed);
    jd_buf_reserve(&z->packed, JD_ZROW_HEAD + bound);
    unsigned char *p = (unsigned char *)z->packed.data;
    /* (ZSTD_compress2 with a referenced dictionary and zstd's own checksum cost 2.2 us a
     * row against 0.75 here) */
    size_t m = z->cdict[kind] ? ZSTD_compress_usingCDict(z->cctx, p + JD_ZROW_HEAD, bound, v, n, z->cdict[kind])
                              : ZSTD_compressCCtx(z->cctx, p + JD_ZROW_HEAD, bound, v, n, LEVEL);
    if (ZSTD_isError(m) || JD_ZROW_HEAD + m >= n)
        return 1;
    uint32_t id = z->cdict[kind] ? z->cdict_id[kind] : 0;
    uint32_t crc = (uint32_t)crc32_z(0, v, n);
    p[0] = JD_ZROW_MARK;
    jd_be32_put(p + 1, id);
    jd_be32_put(p + 5, crc);
    *out = p;
    *outn = JD_ZROW_HEAD + m;
    return 0;
}

int jd_zrow_train(jd_zrow *z, int kind, jd_buf *dict)
{
    if (kind < 0 || kind >= JD_ZROW_KINDS || z->cdict[kind])
        return 0;
    sampler *s = &z->samples[kind];
    int full = s->bytes.len + (64u << 10) > SAMPLE_MAX; /* big rows: fewer of them fill it */
    if (s->tries >= TRIES || s->bytes.len < SAMPLE_MIN || (s->n < SAMPLE_ROWS && !full))
        return 0;
    size_t cap = s->bytes.len / 64 < DICT_MAX ? s->bytes.len / 64 : DICT_MAX;
    jd_buf_reset(dict);
    jd_buf_reserve(dict, cap);
    size_t m = ZDICT_trainFromBuffer(dict->data, cap, s->bytes.data, s->sizes, (unsigned)s->n);
    s->n = 0;
    if (ZDICT_isError(m)) {
        jd_buf_reset(&s->bytes);
        s->tries++;
        return 0;
    }
    jd_buf_free(&s->bytes); /* trained: no more samples */
    free(s->sizes);
    s->sizes = NULL;
    s->cap = 0;
    dict->len = m;
    return 1;
}

int jd_zrow_packed(const void *v, size_t n, uint32_t *id)
{
    const unsigned char *p = v;
    if (n < JD_ZROW_HEAD || p[0] != JD_ZROW_MARK)
        return 0;
    *id = jd_be32_get(p + 1);
    return 1;
}

int jd_zrow_unpack(jd_zrow *z, int role, const void *v, size_t n, const void **out, size_t *outn)
{
    uint32_t id;
    if (!jd_zrow_packed(v, n, &id) || role < 0 || role > 1)
        return -1;
    ZSTD_DDict *d = NULL;
    if (id && !(d = find(z, id)))
        return 1;
    const char *f = (const char *)v + JD_ZROW_HEAD;
    size_t fn = n - JD_ZROW_HEAD;
    unsigned long long size = ZSTD_getFrameContentSize(f, fn);
    if (size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN || size > ROW_MAX)
        return -1;
    if (!z->dctx[role] && !(z->dctx[role] = ZSTD_createDCtx()))
        return -1;
    jd_buf *b = &z->plain[role];
    jd_buf_reset(b);
    jd_buf_reserve(b, (size_t)size + 1);
    size_t m = d ? ZSTD_decompress_usingDDict(z->dctx[role], b->data, (size_t)size, f, fn, d)
                 : ZSTD_decompressDCtx(z->dctx[role], b->data, (size_t)size, f, fn);
    if (ZSTD_isError(m) || m != size ||
        (uint32_t)crc32_z(0, (const unsigned char *)b->data, m) != jd_be32_get((const unsigned char *)v + 5))
        return -1; /* damaged: an error, never a different row */
    b->len = m;
    *out = b->data;
    *outn = m;
    return 0;
}
