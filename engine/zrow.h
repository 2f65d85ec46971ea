/* zrow: compressed store rows. People and outbox rows are small msgpack values that repeat
 * the same keys, journey and stage names from row to row, so each is compressed with zstd
 * and a dictionary trained from the store's own rows (about 4.6x for people, 4x for the
 * outbox on the bench workload; plain zstd gets 1.9x and 1.2x). A packed row is
 *   0xc1 (never the first byte of a msgpack value), u32 BE dictionary id (0: none), u32 BE
 *   CRC-32 of the row, the zstd frame (with its content size).
 * Rows that do not get smaller, and rows written before, stay msgpack and read as they are.
 * The store keeps dictionaries in its meta database (it calls add_dict at open and when a
 * row names an id it does not have); a dictionary is never changed or removed.
 * Threads: pack and train from the one writing thread; unpack from any, each role (see
 * jd_zrow_unpack) from one thread at a time. Uses libzstd. */
#ifndef JD_ZROW_H
#define JD_ZROW_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

typedef struct jd_zrow jd_zrow;

enum { JD_ZROW_MARK = 0xc1, JD_ZROW_HEAD = 9, JD_ZROW_KINDS = 8 };

/* Big-endian u32, as the header (and the store's dictionary keys) hold ids. */
static inline void jd_be32_put(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static inline uint32_t jd_be32_get(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

jd_zrow *jd_zrow_new(void);
void jd_zrow_free(jd_zrow *z);

/* Adds dictionary id for rows of kind (a database number below JD_ZROW_KINDS). pack: the
 * writing thread's call (or one at open): the newest (highest id) of a kind then packs its
 * new rows; a reader loading one on the way passes 0. 0, or -1 when zstd cannot load it. */
int jd_zrow_add_dict(jd_zrow *z, uint32_t id, int kind, const void *dict, size_t n, int pack);

/* Packs v (msgpack) for kind into a buffer valid until the next pack: *out, *outn. Returns
 * 1 when the row stays as it is (*out = v). While kind has no dictionary, the row is kept
 * as a training sample. */
int jd_zrow_pack(jd_zrow *z, int kind, const void *v, size_t n, const void **out, size_t *outn);

/* When kind has samples enough and no dictionary: trains one into dict (cleared first) and
 * returns 1; 0 when not yet (or training failed: the samples start again). */
int jd_zrow_train(jd_zrow *z, int kind, jd_buf *dict);

/* Whether v is a packed row; *id its dictionary id. */
int jd_zrow_packed(const void *v, size_t n, uint32_t *id);

/* Unpacks a packed row into role's buffer (valid until role's next unpack; role 0 or 1,
 * one thread each). 0; 1 when its dictionary is not loaded (add it, then call again); -1
 * when the row is damaged. */
int jd_zrow_unpack(jd_zrow *z, int role, const void *v, size_t n, const void **out, size_t *outn);

#endif
