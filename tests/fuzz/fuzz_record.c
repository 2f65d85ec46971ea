/* The record reader: jd_event_read (the engine's, straight from the bytes) must give
 * what jd_mp_unpack + jd_event_view give on any input — the same verdict, and when both
 * read a view, the same fields pointing at the same bytes and the same trees. */
#include <msgpack.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"

static void fail(const char *what)
{
    fprintf(stderr, "fuzz_record: %s\n", what);
    abort();
}

static int same_obj(const msgpack_object *a, const msgpack_object *b)
{
    if (!a || !b)
        return a == b;
    if (a->type != b->type)
        return 0;
    switch (a->type) {
    case MSGPACK_OBJECT_NIL: return 1;
    case MSGPACK_OBJECT_BOOLEAN: return a->via.boolean == b->via.boolean;
    case MSGPACK_OBJECT_POSITIVE_INTEGER: return a->via.u64 == b->via.u64;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return a->via.i64 == b->via.i64;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: return memcmp(&a->via.f64, &b->via.f64, sizeof a->via.f64) == 0;
    case MSGPACK_OBJECT_STR:
    case MSGPACK_OBJECT_BIN: return a->via.str.size == b->via.str.size && a->via.str.ptr == b->via.str.ptr;
    case MSGPACK_OBJECT_EXT:
        return a->via.ext.type == b->via.ext.type && a->via.ext.size == b->via.ext.size &&
               a->via.ext.ptr == b->via.ext.ptr;
    case MSGPACK_OBJECT_ARRAY:
        if (a->via.array.size != b->via.array.size)
            return 0;
        for (uint32_t i = 0; i < a->via.array.size; i++)
            if (!same_obj(&a->via.array.ptr[i], &b->via.array.ptr[i]))
                return 0;
        return 1;
    case MSGPACK_OBJECT_MAP:
        if (a->via.map.size != b->via.map.size)
            return 0;
        for (uint32_t i = 0; i < a->via.map.size; i++)
            if (!same_obj(&a->via.map.ptr[i].key, &b->via.map.ptr[i].key) ||
                !same_obj(&a->via.map.ptr[i].val, &b->via.map.ptr[i].val))
                return 0;
        return 1;
    }
    return 0;
}

/* Equal text; the same bytes when not empty (an empty one may point anywhere). */
static int same_str(jd_str a, jd_str b)
{
    return a.n == b.n && (a.n == 0 || a.p == b.p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    msgpack_zone za, zb;
    msgpack_zone_init(&za, 1024);
    msgpack_zone_init(&zb, 1024);
    msgpack_object root;
    jd_event a, b;
    int ra = jd_mp_unpack(data, size, &za, &root) || jd_event_view(&root, &a) ? -1 : 0;
    int rb = jd_event_read(data, size, &zb, &b);
    if (ra != rb)
        fail(ra ? "jd_event_read reads what jd_event_view refuses" : "jd_event_read refuses what jd_event_view reads");
    if (ra == 0 &&
        (a.type != b.type || !same_str(a.user_id, b.user_id) || a.has_user_id != b.has_user_id ||
         !same_str(a.anonymous_id, b.anonymous_id) || !same_str(a.name, b.name) ||
         !same_str(a.message_id, b.message_id) || !same_str(a.group_id, b.group_id) ||
         !same_str(a.previous_id, b.previous_id) || a.timestamp != b.timestamp || a.received_at != b.received_at ||
         a.link != b.link || !same_obj(jd_event_properties(&a), jd_event_properties(&b)) ||
         !same_obj(jd_event_traits(&a), jd_event_traits(&b)) || !same_obj(jd_event_context(&a), jd_event_context(&b)) ||
         !same_obj(jd_event_fold(&a), jd_event_fold(&b)) || b.root != NULL))
        fail("the two views differ");
    msgpack_zone_destroy(&za);
    msgpack_zone_destroy(&zb);
    return 0;
}
