/* The msgpack stream socket of `journeyd serve` (engine/stream.c): each input is the
 * byte stream one client sends (length-prefixed frames: the auth frame, then batches),
 * written into a socketpair served by jd_stream_accept_fd on a server with the write
 * key "fuzz-key". The answer must be well-formed: frames of one msgpack map each, acks
 * numbered 1, 2, ... and nothing after a fatal error. Nothing may crash or leak. */
#define _POSIX_C_SOURCE 200809L
#include <msgpack.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "fuzzutil.h"

#define FUZZ_WRITE_KEY "fuzz-key"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    setenv("JOURNEYD_WRITE_KEYS", FUZZ_WRITE_KEY, 1);
    fu_server();
    return 0;
}

/* Checks the server's answer frame by frame (a trailing partial frame is allowed: the
 * deadline may cut the answer short). */
static void check_answer(const jd_buf *a)
{
    size_t at = 0;
    uint64_t seq = 0;
    int fatal = 0;
    while (a->len - at >= 4) {
        const unsigned char *h = (const unsigned char *)a->data + at;
        size_t len = (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
        if (a->len - at - 4 < len)
            break;
        if (fatal)
            abort(); /* a frame after a fatal error */
        msgpack_zone z;
        msgpack_zone_init(&z, 1024);
        msgpack_object o;
        size_t off = 0;
        if (msgpack_unpack(a->data + at + 4, len, &off, &z, &o) != MSGPACK_UNPACK_SUCCESS || off != len ||
            o.type != MSGPACK_OBJECT_MAP)
            abort(); /* not exactly one msgpack map */
        const msgpack_object *s = jd_mp_get(&o, "seq", 3);
        if (s && (s->type != MSGPACK_OBJECT_POSITIVE_INTEGER || s->via.u64 != ++seq))
            abort(); /* acks are numbered from 1, in order */
        fatal = jd_mp_get(&o, "fatal", 5) != NULL;
        msgpack_zone_destroy(&z);
        at += 4 + len;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    jd_server *s = fu_server();
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
        abort();
    evutil_make_socket_nonblocking(sv[0]); /* as accepted sockets are */
    jd_stream_accept_fd(s, sv[0], 1);
    jd_buf answer;
    jd_buf_init(&answer);
    fu_pump_run(s->base, sv[1], data, size, &answer, 50);
    check_answer(&answer);
    jd_buf_free(&answer);
    return 0;
}
