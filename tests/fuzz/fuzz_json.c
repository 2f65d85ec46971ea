/* JSON -> msgpack -> JSON -> msgpack must be a fixed point for every accepted input,
 * and nothing may crash or leak on any input. */
#include <msgpack.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

static jd_json_reader *r;
static jd_json_writer *w;

static void cleanup(void)
{
    jd_json_reader_free(r);
    jd_json_writer_free(w);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!r) {
        r = jd_json_reader_new();
        w = jd_json_writer_new();
        atexit(cleanup);
    }
    jd_buf a, js, b;
    jd_buf_init(&a);
    jd_buf_init(&js);
    jd_buf_init(&b);
    char err[256];
    if (jd_json_to_msgpack(r, (const char *)data, size, &a, err, sizeof err) == 0) {
        msgpack_zone z;
        msgpack_zone_init(&z, 2048);
        msgpack_object o;
        size_t off = 0;
        if (msgpack_unpack(a.data, a.len, &off, &z, &o) != MSGPACK_UNPACK_SUCCESS || off != a.len)
            abort();
        jd_json_write(w, &o, &js);
        if (jd_json_to_msgpack(r, js.data, js.len, &b, err, sizeof err) != 0)
            abort(); /* our own output must parse */
        /* floats may print shorter but read back the same: compare the msgpack */
        if (a.len != b.len || memcmp(a.data, b.data, a.len) != 0) {
            msgpack_zone z2;
            msgpack_zone_init(&z2, 2048);
            msgpack_object o2;
            off = 0;
            if (msgpack_unpack(b.data, b.len, &off, &z2, &o2) != MSGPACK_UNPACK_SUCCESS || !msgpack_object_equal(o, o2))
                abort();
            msgpack_zone_destroy(&z2);
        }
        msgpack_zone_destroy(&z);
    }
    jd_buf_free(&a);
    jd_buf_free(&js);
    jd_buf_free(&b);
    return 0;
}
