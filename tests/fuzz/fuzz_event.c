/* The JSON-to-event decoder: JSON -> msgpack -> jd_event_normalize -> jd_event_view.
 * Every input is normalised twice: as `journeyd replay` does (default timestamp and
 * messageId), and as the HTTP API does (Segment's clock-skew rule, no default id, and the
 * endpoint's type when the input has "_endpoint": "page" etc., with the batch-level
 * "context" and "sentAt" taken from an "_batch" object). An accepted event's record must
 * have the fixed shape (the keys, in order, of a reference event's record), be read by
 * jd_event_view, agree with the input, and round-trip: the event rebuilt from the view
 * normalises to a record with the same view. A rejected one must say why. Nothing may
 * crash or leak. */
#include <msgpack.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "json.h"

#define T_REPLAY 1793523600000LL /* 2026-11-01T09:00:00Z */
#define T_HTTP 1793527200123LL
#define DEFAULT_ID "fuzz-default-id"

static jd_json_reader *r;
/* the record of a plain track event: every record has its keys, in its order */
static jd_buf ref;
static msgpack_zone ref_zone;
static msgpack_object ref_root;

static void cleanup(void)
{
    jd_json_reader_free(r);
    jd_buf_free(&ref);
    msgpack_zone_destroy(&ref_zone);
}

static void fail(const char *what)
{
    fprintf(stderr, "fuzz_event: %s\n", what);
    abort();
}

static int is_present(const msgpack_object *o)
{
    return o && o->type != MSGPACK_OBJECT_NIL && !(o->type == MSGPACK_OBJECT_STR && o->via.str.size == 0);
}

static int str_eq(jd_str a, const msgpack_object *o)
{
    return o->type == MSGPACK_OBJECT_STR && a.n == o->via.str.size && memcmp(a.p, o->via.str.ptr, a.n) == 0;
}

static int obj_eq(const msgpack_object *a, const msgpack_object *b)
{
    return msgpack_object_equal(*a, *b);
}

static void pk_str(msgpack_packer *pk, const char *s, size_t n)
{
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static void pk_key(msgpack_packer *pk, const char *k)
{
    pk_str(pk, k, strlen(k));
}

/* Unpacks a record from normalize and checks its shape; *ev views it (valid while z and
 * rec live). */
static void view_record(const jd_buf *rec, msgpack_zone *z, msgpack_object *root, jd_event *ev)
{
    size_t off = 0;
    if (msgpack_unpack(rec->data, rec->len, &off, z, root) != MSGPACK_UNPACK_SUCCESS || off != rec->len)
        fail("the record is not one msgpack value");
    if (root->type != MSGPACK_OBJECT_MAP || root->via.map.size != ref_root.via.map.size)
        fail("the record is not a map of the fixed keys");
    for (uint32_t i = 0; i < root->via.map.size; i++)
        if (!obj_eq(&root->via.map.ptr[i].key, &ref_root.via.map.ptr[i].key))
            fail("the record's keys are not in the fixed order");
    if (jd_event_view(root, ev))
        fail("jd_event_view refuses a record from jd_event_normalize");
}

static void init(void)
{
    static const char ev[] = "{\"type\":\"track\",\"userId\":\"u\",\"event\":\"E\",\"messageId\":\"m\"}";
    r = jd_json_reader_new();
    jd_buf mp;
    jd_buf_init(&mp);
    jd_buf_init(&ref);
    char err[256];
    msgpack_zone z;
    msgpack_zone_init(&z, 1024);
    msgpack_zone_init(&ref_zone, 1024);
    msgpack_object o;
    size_t off = 0, roff = 0;
    if (jd_json_to_msgpack(r, ev, sizeof ev - 1, &mp, err, sizeof err) ||
        msgpack_unpack(mp.data, mp.len, &off, &z, &o) != MSGPACK_UNPACK_SUCCESS ||
        jd_event_normalize(&o, T_REPLAY, NULL, &ref, err, sizeof err) ||
        msgpack_unpack(ref.data, ref.len, &roff, &ref_zone, &ref_root) != MSGPACK_UNPACK_SUCCESS ||
        ref_root.type != MSGPACK_OBJECT_MAP)
        fail("the reference event is refused");
    msgpack_zone_destroy(&z);
    jd_buf_free(&mp);
    atexit(cleanup);
}

/* What the record must say about the input's fields. */
static void check_against_input(const msgpack_object *in, const jd_event *ev, jd_event_type t, const char *default_id)
{
    if (ev->type != t)
        fail("type differs from the input's");
    const msgpack_object *mid = jd_mp_get(in, "messageId", 9);
    if (is_present(mid) ? mid->type == MSGPACK_OBJECT_STR && !str_eq(ev->message_id, mid)
                        : !default_id || !jd_str_eq(ev->message_id, default_id, strlen(default_id)))
        fail("messageId differs from the input's");
    const msgpack_object *uid = jd_mp_get(in, "userId", 6), *aid = jd_mp_get(in, "anonymousId", 11);
    if (uid && uid->type == MSGPACK_OBJECT_STR && uid->via.str.size > 0 && !str_eq(ev->user_id, uid))
        fail("userId differs from the input's");
    if (!is_present(uid) && aid && aid->type == MSGPACK_OBJECT_STR && !str_eq(ev->user_id, aid))
        fail("a user without userId is not its anonymousId");
    if (t == JD_EV_TRACK && !str_eq(ev->name, jd_mp_get(in, "event", 5)))
        fail("a track event's name differs from the input's");
    const msgpack_object *props = jd_mp_get(in, "properties", 10);
    if (props && props->type == MSGPACK_OBJECT_MAP ? !obj_eq(jd_event_properties(ev), props)
                                                   : jd_event_properties(ev)->via.map.size != 0)
        fail("properties differ from the input's");
    if (jd_event_properties(ev)->type != MSGPACK_OBJECT_MAP || jd_event_traits(ev)->type != MSGPACK_OBJECT_MAP ||
        jd_event_context(ev)->type != MSGPACK_OBJECT_MAP)
        fail("properties, traits or context is not a map");
}

/* Rebuilds a Segment event from the view, normalises it and compares the views. */
static void check_round_trip(const jd_event *ev)
{
    jd_buf in, rec;
    jd_buf_init(&in);
    jd_buf_init(&rec);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &in, jd_buf_msgpack_write);
    int named = ev->name.n > 0 && (ev->type == JD_EV_TRACK || ev->type == JD_EV_PAGE || ev->type == JD_EV_SCREEN);
    msgpack_pack_map(&pk, 5 + (ev->has_user_id != 0) + (ev->anonymous_id.n > 0) + named + (ev->group_id.n > 0) +
                              (ev->previous_id.n > 0));
    pk_key(&pk, "type");
    pk_key(&pk, jd_event_type_name(ev->type));
    pk_key(&pk, "messageId");
    pk_str(&pk, ev->message_id.p, ev->message_id.n);
    if (ev->has_user_id) {
        pk_key(&pk, "userId");
        pk_str(&pk, ev->user_id.p, ev->user_id.n);
    }
    if (ev->anonymous_id.n) {
        pk_key(&pk, "anonymousId");
        pk_str(&pk, ev->anonymous_id.p, ev->anonymous_id.n);
    }
    if (named) {
        pk_key(&pk, ev->type == JD_EV_TRACK ? "event" : "name");
        pk_str(&pk, ev->name.p, ev->name.n);
    }
    pk_key(&pk, "properties");
    msgpack_pack_object(&pk, *jd_event_properties(ev));
    pk_key(&pk, "traits");
    msgpack_pack_object(&pk, *jd_event_traits(ev));
    pk_key(&pk, "context");
    msgpack_pack_object(&pk, *jd_event_context(ev));
    if (ev->group_id.n) {
        pk_key(&pk, "groupId");
        pk_str(&pk, ev->group_id.p, ev->group_id.n);
    }
    if (ev->previous_id.n) {
        pk_key(&pk, "previousId");
        pk_str(&pk, ev->previous_id.p, ev->previous_id.n);
    }
    msgpack_zone z, z2;
    msgpack_zone_init(&z, 2048);
    msgpack_zone_init(&z2, 2048);
    msgpack_object o, root;
    size_t off = 0;
    if (msgpack_unpack(in.data, in.len, &off, &z, &o) != MSGPACK_UNPACK_SUCCESS)
        fail("cannot unpack the rebuilt event");
    char err[512];
    /* the timestamp comes back as the default: the record's time need not be printable
     * as a 4-digit-year ISO date (the skew rule can move it out of range) */
    if (jd_event_normalize(&o, ev->timestamp, NULL, &rec, err, sizeof err)) {
        fprintf(stderr, "fuzz_event: the event rebuilt from a record is refused: %s\n", err);
        abort();
    }
    jd_event ev2;
    view_record(&rec, &z2, &root, &ev2);
    if (ev2.type != ev->type || ev2.timestamp != ev->timestamp || ev2.has_user_id != ev->has_user_id ||
        !jd_str_eq(ev2.user_id, ev->user_id.p, ev->user_id.n) ||
        !jd_str_eq(ev2.anonymous_id, ev->anonymous_id.p, ev->anonymous_id.n) ||
        !jd_str_eq(ev2.name, ev->name.p, ev->name.n) ||
        !jd_str_eq(ev2.message_id, ev->message_id.p, ev->message_id.n) ||
        !jd_str_eq(ev2.group_id, ev->group_id.p, ev->group_id.n) ||
        !jd_str_eq(ev2.previous_id, ev->previous_id.p, ev->previous_id.n) ||
        !obj_eq(jd_event_properties(&ev2), jd_event_properties(ev)) ||
        !obj_eq(jd_event_traits(&ev2), jd_event_traits(ev)) || !obj_eq(jd_event_context(&ev2), jd_event_context(ev)))
        fail("the record does not round-trip through jd_event_view");
    msgpack_zone_destroy(&z);
    msgpack_zone_destroy(&z2);
    jd_buf_free(&in);
    jd_buf_free(&rec);
}

static void normalize_and_check(const msgpack_object *in, const jd_norm_opts *opts)
{
    jd_buf rec;
    jd_buf_init(&rec);
    jd_buf_append(&rec, "junk", 4); /* normalize appends, and rolls back to here on failure */
    char err[512];
    err[0] = '\0';
    if (jd_event_normalize_ex(in, opts, &rec, err, sizeof err)) {
        if (err[0] == '\0')
            fail("a rejection without a reason");
        if (rec.len != 4)
            fail("a rejection left bytes in the output");
        jd_buf_free(&rec);
        return;
    }
    jd_event_type t = JD_EV_TRACK;
    const msgpack_object *type = jd_mp_get(in, "type", 4);
    if (opts->force_type)
        t = opts->type;
    else if (is_present(type) &&
             (type->type != MSGPACK_OBJECT_STR || jd_event_type_parse(type->via.str.ptr, type->via.str.size, &t)))
        fail("an unknown type is accepted");
    if (t >= JD_EV_TIMER)
        fail("an event of an internal type (timer, tick) is accepted");
    jd_buf body = {rec.data + 4, rec.len - 4, rec.len - 4};
    msgpack_zone z;
    msgpack_zone_init(&z, 2048);
    msgpack_object root;
    jd_event ev;
    view_record(&body, &z, &root, &ev);
    check_against_input(in, &ev, t, opts->default_id);
    if (ev.received_at != (opts->received_ms > 0 ? opts->received_ms : 0))
        fail("receivedAt is not when the event was received");
    if (!opts->received_ms && !is_present(jd_mp_get(in, "timestamp", 9)) &&
        !is_present(jd_mp_get(in, "originalTimestamp", 17)) && ev.timestamp != opts->default_ts)
        fail("an event without a timestamp does not get the default");
    check_round_trip(&ev);
    msgpack_zone_destroy(&z);
    jd_buf_free(&rec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!r)
        init();
    jd_buf mp;
    jd_buf_init(&mp);
    char err[256];
    if (jd_json_to_msgpack(r, (const char *)data, size, &mp, err, sizeof err) == 0) {
        msgpack_zone z;
        msgpack_zone_init(&z, 2048);
        msgpack_object in;
        size_t off = 0;
        if (msgpack_unpack(mp.data, mp.len, &off, &z, &in) != MSGPACK_UNPACK_SUCCESS || off != mp.len)
            fail("jd_json_to_msgpack wrote something that does not unpack");
        jd_norm_opts replay = {.default_ts = T_REPLAY, .default_id = DEFAULT_ID};
        normalize_and_check(&in, &replay);
        jd_norm_opts http = {.default_ts = T_HTTP, .received_ms = T_HTTP};
        const msgpack_object *ep = jd_mp_get(&in, "_endpoint", 9);
        if (ep && ep->type == MSGPACK_OBJECT_STR &&
            jd_event_type_parse(ep->via.str.ptr, ep->via.str.size, &http.type) == 0 && http.type < JD_EV_TIMER)
            http.force_type = 1;
        const msgpack_object *batch = jd_mp_get(&in, "_batch", 6);
        http.batch_context = jd_mp_get(batch, "context", 7);
        http.sent_at = jd_mp_get(batch, "sentAt", 6);
        normalize_and_check(&in, &http);
        msgpack_zone_destroy(&z);
    }
    jd_buf_free(&mp);
    return 0;
}
