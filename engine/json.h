/* json: strict, exact JSON (RFC 8259) to msgpack and back, on yajl.
 * Uses buf, yajl, msgpack-c. Integers that fit int64/uint64 stay integers, bit for bit;
 * other numbers become float64. Objects keep their key order and duplicate keys. */
#ifndef JD_JSON_H
#define JD_JSON_H

#include <msgpack.h>
#include <stddef.h>

#include "buf.h"

typedef struct jd_json_reader jd_json_reader;

/* Nesting deeper than this is refused (events are shallow; this bounds memory). It is
 * msgpack-c's limit (MSGPACK_EMBED_STACK_SIZE): msgpack_unpack fails on deeper values,
 * and what we read gets unpacked. */
#define JD_JSON_MAX_DEPTH 32

jd_json_reader *jd_json_reader_new(void);
void jd_json_reader_free(jd_json_reader *r);

/* Parses exactly one JSON value from text[0..len) and appends its msgpack encoding
 * to out. On error returns -1, leaves out at its old length and writes
 * "byte N: reason" into err. */
int jd_json_to_msgpack(jd_json_reader *r, const char *text, size_t len, jd_buf *out, char *err, size_t errlen);

typedef struct jd_json_writer jd_json_writer;
jd_json_writer *jd_json_writer_new(void);
void jd_json_writer_free(jd_json_writer *w);
/* Appends the JSON text of obj to out (compact, no newline). Non-string map keys are
 * written as their JSON text in quotes; NaN and infinities as null; a string byte that
 * does not begin a UTF-8 sequence as U+FFFD. */
void jd_json_write(jd_json_writer *w, const msgpack_object *obj, jd_buf *out);

/* Appends the JSON text of packed msgpack bytes (one value). Returns 0, or -1 when the
 * bytes are not one msgpack value (out unchanged). */
int jd_json_write_msgpack(jd_json_writer *w, const char *data, size_t len, jd_buf *out);

/* Shortest text that reads back as the same double, and as a double: "0.1", "25.0",
 * "1e+300". */
size_t jd_json_format_double(double d, char *out, size_t outlen);

#endif
