/* test_event: engine/event.h — normalising Segment events into records, the record
 * view, msgpack map lookups, and the msgpack reader. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "event.h"
#include "json.h"

#define T0 1793527200000LL /* 2026-11-01T10:00:00Z */
#define DEFAULT_TS 1700000000000LL

static jd_json_reader *rd;

static int setup(void **state)
{
    (void)state;
    rd = jd_json_reader_new();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    jd_json_reader_free(rd);
    return 0;
}

/* A JSON text read into msgpack and unpacked; the object points into buf. */
typedef struct obj {
    jd_buf buf;
    msgpack_unpacked u;
} obj;

static void obj_json(obj *o, const char *json)
{
    char err[256];
    jd_buf_init(&o->buf);
    msgpack_unpacked_init(&o->u);
    if (jd_json_to_msgpack(rd, json, strlen(json), &o->buf, err, sizeof err))
        fail_msg("bad test JSON %s: %s", json, err);
    size_t off = 0;
    assert_int_equal(msgpack_unpack_next(&o->u, o->buf.data, o->buf.len, &off), MSGPACK_UNPACK_SUCCESS);
}

static void obj_free(obj *o)
{
    msgpack_unpacked_destroy(&o->u);
    jd_buf_free(&o->buf);
}

/* An event normalised into a record and viewed. */
typedef struct rec {
    obj in;
    jd_buf out;
    msgpack_unpacked u;
    jd_event ev;
    char err[256];
} rec;

#define PREFIX_LEN 6 /* strlen("prefix") */

/* Returns jd_event_normalize's result; on success the record is unpacked and viewed. */
static int normalize(rec *r, const char *json, int64_t default_ts, const char *default_id)
{
    memset(r, 0, sizeof *r);
    obj_json(&r->in, json);
    jd_buf_init(&r->out);
    jd_buf_puts(&r->out, "prefix"); /* records are appended: the record starts at PREFIX_LEN */
    msgpack_unpacked_init(&r->u);
    int rc = jd_event_normalize(&r->in.u.data, default_ts, default_id, &r->out, r->err, sizeof r->err);
    if (rc == 0) {
        assert_true(r->out.len > PREFIX_LEN);
        assert_memory_equal(r->out.data, "prefix", PREFIX_LEN);
        size_t off = PREFIX_LEN;
        assert_int_equal(msgpack_unpack_next(&r->u, r->out.data, r->out.len, &off), MSGPACK_UNPACK_SUCCESS);
        assert_int_equal(off, r->out.len);
        if (jd_event_view(&r->u.data, &r->ev) != 0)
            fail_msg("record of %s does not view", json);
    } else {
        assert_int_equal(r->out.len, PREFIX_LEN); /* nothing left behind */
    }
    return rc;
}

static void rec_free(rec *r)
{
    msgpack_unpacked_destroy(&r->u);
    jd_buf_free(&r->out);
    obj_free(&r->in);
}

static void assert_str(jd_str s, const char *want)
{
    if (s.n != strlen(want) || memcmp(s.p, want, s.n) != 0)
        fail_msg("got \"%.*s\", want \"%s\"", (int)s.n, s.p, want);
}

/* The string at a dotted path of a map, or fails. */
static void assert_path_str(const msgpack_object *map, const char *path, const char *want)
{
    const msgpack_object *o = jd_mp_path(map, path, strlen(path));
    if (!o || o->type != MSGPACK_OBJECT_STR)
        fail_msg("%s: not a string", path);
    if (o->via.str.size != strlen(want) || memcmp(o->via.str.ptr, want, o->via.str.size) != 0)
        fail_msg("%s: \"%.*s\", want \"%s\"", path, (int)o->via.str.size, o->via.str.ptr, want);
}

/* ---------------------------------------------------------------- valid events */

static const struct {
    const char *json;
    jd_event_type type;
    const char *user_id, *anonymous_id, *name, *message_id, *group_id, *previous_id;
    int64_t ts;
    const char *prop_path, *prop_want;   /* a string in properties, or NULL */
    const char *trait_path, *trait_want; /* a string in traits, or NULL */
} valid[] = {
    {"{\"type\":\"track\",\"userId\":\"u1\",\"event\":\"Signed Up\",\"messageId\":\"m1\","
     "\"timestamp\":\"2026-11-01T10:00:00Z\",\"properties\":{\"plan\":\"pro\"}}",
     JD_EV_TRACK, "u1", "", "Signed Up", "m1", "", "", T0, "plan", "pro", NULL, NULL},
    {"{\"type\":\"identify\",\"userId\":\"u1\",\"messageId\":\"m2\",\"timestamp\":\"2026-11-01T12:00:00+02:00\","
     "\"traits\":{\"email\":\"a@b.c\",\"address\":{\"city\":\"Berlin\"}}}",
     JD_EV_IDENTIFY, "u1", "", "", "m2", "", "", T0, NULL, NULL, "address.city", "Berlin"},
    {"{\"type\":\"page\",\"anonymousId\":\"a1\",\"name\":\"Pricing\",\"messageId\":\"m3\","
     "\"timestamp\":\"2026-11-01T10:00:00.250Z\",\"properties\":{\"path\":\"/pricing\"}}",
     JD_EV_PAGE, "a1", "a1", "Pricing", "m3", "", "", T0 + 250, "path", "/pricing", NULL, NULL},
    {"{\"type\":\"page\",\"userId\":\"u1\",\"messageId\":\"m3b\",\"timestamp\":\"2026-11-01T10:00:00Z\"}", JD_EV_PAGE,
     "u1", "", "", "m3b", "", "", T0, NULL, NULL, NULL, NULL}, /* a page need not be named */
    {"{\"type\":\"page\",\"userId\":\"u1\",\"name\":null,\"messageId\":\"m3c\",\"timestamp\":\"2026-11-01T10:00:00Z\"}",
     JD_EV_PAGE, "u1", "", "", "m3c", "", "", T0, NULL, NULL, NULL, NULL},
    {"{\"type\":\"screen\",\"userId\":\"u1\",\"anonymousId\":\"a1\",\"name\":\"Home\",\"messageId\":\"m4\","
     "\"timestamp\":\"2026-11-01T10:00:00Z\"}",
     JD_EV_SCREEN, "u1", "a1", "Home", "m4", "", "", T0, NULL, NULL, NULL, NULL},
    {"{\"type\":\"group\",\"userId\":\"u1\",\"groupId\":\"g1\",\"messageId\":\"m5\",\"timestamp\":\"2026-11-01T10:00:"
     "00Z\","
     "\"traits\":{\"name\":\"Acme\"}}",
     JD_EV_GROUP, "u1", "", "", "m5", "g1", "", T0, NULL, NULL, "name", "Acme"},
    {"{\"type\":\"group\",\"userId\":\"u1\",\"groupId\":42,\"messageId\":\"m5b\",\"timestamp\":\"2026-11-01T10:00:"
     "00Z\"}",
     JD_EV_GROUP, "u1", "", "", "m5b", "42", "", T0, NULL, NULL, NULL, NULL},
    {"{\"type\":\"alias\",\"userId\":\"u1\",\"previousId\":\"anon-9\",\"messageId\":\"m6\","
     "\"timestamp\":\"2026-11-01T10:00:00Z\"}",
     JD_EV_ALIAS, "u1", "", "", "m6", "", "anon-9", T0, NULL, NULL, NULL, NULL},
    /* ids given as numbers become strings */
    {"{\"type\":\"track\",\"userId\":12345,\"event\":\"e\",\"messageId\":987,\"timestamp\":\"2026-11-01T10:00:00Z\"}",
     JD_EV_TRACK, "12345", "", "e", "987", "", "", T0, NULL, NULL, NULL, NULL},
    {"{\"type\":\"track\",\"userId\":-7,\"anonymousId\":18446744073709551615,\"event\":\"e\",\"messageId\":\"m\","
     "\"timestamp\":\"2026-11-01T10:00:00Z\"}",
     JD_EV_TRACK, "-7", "18446744073709551615", "e", "m", "", "", T0, NULL, NULL, NULL, NULL},
    {"{\"type\":\"track\",\"userId\":0,\"event\":\"e\",\"messageId\":\"m\",\"timestamp\":\"2026-11-01T10:00:00Z\"}",
     JD_EV_TRACK, "0", "", "e", "m", "", "", T0, NULL, NULL, NULL, NULL},
    /* an empty or null userId falls back to anonymousId */
    {"{\"type\":\"track\",\"userId\":\"\",\"anonymousId\":\"a2\",\"event\":\"e\",\"messageId\":\"m\","
     "\"timestamp\":\"2026-11-01T10:00:00Z\"}",
     JD_EV_TRACK, "a2", "a2", "e", "m", "", "", T0, NULL, NULL, NULL, NULL},
    {"{\"type\":\"track\",\"userId\":null,\"anonymousId\":\"a2\",\"event\":\"e\",\"messageId\":\"m\","
     "\"timestamp\":\"2026-11-01T10:00:00Z\"}",
     JD_EV_TRACK, "a2", "a2", "e", "m", "", "", T0, NULL, NULL, NULL, NULL},
    /* a groupId on a call other than group is not looked at */
    {"{\"type\":\"track\",\"userId\":\"u1\",\"event\":\"e\",\"messageId\":\"m\",\"groupId\":{\"x\":1},"
     "\"previousId\":false,\"timestamp\":\"2026-11-01T10:00:00Z\"}",
     JD_EV_TRACK, "u1", "", "e", "m", "", "", T0, NULL, NULL, NULL, NULL},
    /* no type, but an event: a track call */
    {"{\"userId\":\"u1\",\"event\":\"Clicked\",\"messageId\":\"m7\",\"timestamp\":\"2026-11-01T10:00:00Z\"}",
     JD_EV_TRACK, "u1", "", "Clicked", "m7", "", "", T0, NULL, NULL, NULL, NULL},
    {"{\"type\":null,\"userId\":\"u1\",\"event\":\"Clicked\",\"messageId\":\"m7\",\"timestamp\":\"2026-11-01T10:00:"
     "00Z\"}",
     JD_EV_TRACK, "u1", "", "Clicked", "m7", "", "", T0, NULL, NULL, NULL, NULL},
    /* a track call's traits come from context.traits when it has none of its own */
    {"{\"type\":\"track\",\"userId\":\"u1\",\"event\":\"e\",\"messageId\":\"m8\",\"timestamp\":\"2026-11-01T10:00:"
     "00Z\","
     "\"context\":{\"traits\":{\"plan\":\"trial\"},\"ip\":\"10.0.0.1\"}}",
     JD_EV_TRACK, "u1", "", "e", "m8", "", "", T0, NULL, NULL, "plan", "trial"},
    {"{\"type\":\"track\",\"userId\":\"u1\",\"event\":\"e\",\"messageId\":\"m8\",\"timestamp\":\"2026-11-01T10:00:"
     "00Z\","
     "\"traits\":null,\"context\":{\"traits\":{\"plan\":\"trial\"}}}",
     JD_EV_TRACK, "u1", "", "e", "m8", "", "", T0, NULL, NULL, "plan", "trial"},
    {"{\"type\":\"track\",\"userId\":\"u1\",\"event\":\"e\",\"messageId\":\"m8\",\"timestamp\":\"2026-11-01T10:00:"
     "00Z\","
     "\"traits\":{\"plan\":\"own\"},\"context\":{\"traits\":{\"plan\":\"trial\"}}}",
     JD_EV_TRACK, "u1", "", "e", "m8", "", "", T0, NULL, NULL, "plan", "own"},
    /* timestamp falls back to originalTimestamp, then to the default */
    {"{\"type\":\"track\",\"userId\":\"u1\",\"event\":\"e\",\"messageId\":\"m9\",\"originalTimestamp\":\"2026-11-01T10:"
     "00:00Z\"}",
     JD_EV_TRACK, "u1", "", "e", "m9", "", "", T0, NULL, NULL, NULL, NULL},
    {"{\"type\":\"track\",\"userId\":\"u1\",\"event\":\"e\",\"messageId\":\"m9\",\"timestamp\":null,"
     "\"originalTimestamp\":\"2026-11-01T10:00:00Z\"}",
     JD_EV_TRACK, "u1", "", "e", "m9", "", "", T0, NULL, NULL, NULL, NULL},
    {"{\"type\":\"track\",\"userId\":\"u1\",\"event\":\"e\",\"messageId\":\"m9\",\"timestamp\":\"2026-11-01T10:00:"
     "01Z\","
     "\"originalTimestamp\":\"2026-11-01T10:00:00Z\"}",
     JD_EV_TRACK, "u1", "", "e", "m9", "", "", T0 + 1000, NULL, NULL, NULL, NULL},
    {"{\"type\":\"track\",\"userId\":\"u1\",\"event\":\"e\",\"messageId\":\"m9\"}", JD_EV_TRACK, "u1", "", "e", "m9",
     "", "", DEFAULT_TS, NULL, NULL, NULL, NULL},
    {"{\"type\":\"track\",\"userId\":\"u1\",\"event\":\"e\",\"messageId\":\"m9\",\"timestamp\":\"\"}", JD_EV_TRACK,
     "u1", "", "e", "m9", "", "", DEFAULT_TS, NULL, NULL, NULL, NULL},
    {"{\"type\":\"track\",\"userId\":\"u1\",\"event\":\"e\",\"messageId\":\"m9\",\"timestamp\":\"1969-12-31T23:59:"
     "59Z\"}",
     JD_EV_TRACK, "u1", "", "e", "m9", "", "", -1000, NULL, NULL, NULL, NULL},
    /* properties: null is an empty object; duplicate keys: the last one */
    {"{\"type\":\"track\",\"userId\":\"u1\",\"event\":\"e\",\"messageId\":\"m\",\"timestamp\":\"2026-11-01T10:00:00Z\","
     "\"properties\":{\"k\":\"first\",\"k\":\"last\"}}",
     JD_EV_TRACK, "u1", "", "e", "m", "", "", T0, "k", "last", NULL, NULL},
    {"{\"type\":\"track\",\"userId\":\"u1\",\"event\":\"e\",\"messageId\":\"m\",\"timestamp\":\"2026-11-01T10:00:00Z\","
     "\"properties\":null,\"event\":\"e2\"}",
     JD_EV_TRACK, "u1", "", "e2", "m", "", "", T0, NULL, NULL, NULL, NULL},
};

/* valid[i] normalised; a rejection fails the test. */
static void normalize_valid(rec *r, size_t i)
{
    if (normalize(r, valid[i].json, DEFAULT_TS, NULL) != 0)
        fail_msg("case %zu rejected: %s\n  %s", i, r->err, valid[i].json);
}

static void test_normalize_valid(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof valid / sizeof valid[0]; i++) {
        rec r;
        normalize_valid(&r, i);
        const jd_event *ev = &r.ev;
        if (ev->type != valid[i].type)
            fail_msg("case %zu: type %s", i, jd_event_type_name(ev->type));
        assert_str(ev->user_id, valid[i].user_id);
        assert_str(ev->anonymous_id, valid[i].anonymous_id);
        assert_str(ev->name, valid[i].name);
        assert_str(ev->message_id, valid[i].message_id);
        assert_str(ev->group_id, valid[i].group_id);
        assert_str(ev->previous_id, valid[i].previous_id);
        if (ev->timestamp != valid[i].ts)
            fail_msg("case %zu: timestamp %lld, want %lld", i, (long long)ev->timestamp, (long long)valid[i].ts);
        assert_non_null(jd_event_properties(ev));
        assert_non_null(jd_event_traits(ev));
        assert_non_null(jd_event_context(ev));
        assert_int_equal(jd_event_properties(ev)->type, MSGPACK_OBJECT_MAP);
        assert_int_equal(jd_event_traits(ev)->type, MSGPACK_OBJECT_MAP);
        assert_int_equal(jd_event_context(ev)->type, MSGPACK_OBJECT_MAP);
        assert_ptr_equal(ev->root, &r.u.data);
        if (valid[i].prop_path)
            assert_path_str(jd_event_properties(ev), valid[i].prop_path, valid[i].prop_want);
        else
            assert_int_equal(jd_event_properties(ev)->via.map.size, 0);
        if (valid[i].trait_path)
            assert_path_str(jd_event_traits(ev), valid[i].trait_path, valid[i].trait_want);
        else
            assert_int_equal(jd_event_traits(ev)->via.map.size, 0);
        rec_free(&r);
    }
}

/* The record has every key, in a fixed order, and nothing else of the input. */
static void test_record_shape(void **state)
{
    (void)state;
    rec r;
    assert_int_equal(normalize(&r,
                               "{\"type\":\"group\",\"userId\":\"u1\",\"groupId\":\"g\",\"messageId\":\"m\","
                               "\"timestamp\":\"2026-11-01T10:00:00Z\",\"extra\":1,\"context\":{\"ip\":\"1.2.3.4\"}}",
                               DEFAULT_TS, NULL),
                     0);
    static const char *const keys[] = {"type",       "messageId",  "timestamp", "userId",  "anonymousId",
                                       "event",      "properties", "traits",    "context", "groupId",
                                       "previousId", "receivedAt", "v"};
    const msgpack_object *root = &r.u.data;
    assert_int_equal(root->type, MSGPACK_OBJECT_MAP);
    assert_int_equal(root->via.map.size, 13);
    for (uint32_t i = 0; i < 13; i++) {
        const msgpack_object *k = &root->via.map.ptr[i].key;
        assert_int_equal(k->type, MSGPACK_OBJECT_STR);
        if (k->via.str.size != strlen(keys[i]) || memcmp(k->via.str.ptr, keys[i], k->via.str.size) != 0)
            fail_msg("key %u is %.*s, want %s", i, (int)k->via.str.size, k->via.str.ptr, keys[i]);
    }
    assert_null(jd_mp_get(root, "extra", 5));
    assert_int_equal(jd_mp_get(root, "anonymousId", 11)->type, MSGPACK_OBJECT_NIL);
    assert_int_equal(jd_mp_get(root, "event", 5)->type, MSGPACK_OBJECT_NIL);
    assert_int_equal(jd_mp_get(root, "previousId", 10)->type, MSGPACK_OBJECT_NIL);
    const msgpack_object *ts = jd_mp_get(root, "timestamp", 9);
    assert_int_equal(ts->type, MSGPACK_OBJECT_POSITIVE_INTEGER);
    assert_int_equal(ts->via.u64, T0);
    const msgpack_object *v = jd_mp_get(root, "v", 1);
    assert_int_equal(v->type, MSGPACK_OBJECT_POSITIVE_INTEGER);
    assert_int_equal(v->via.u64, 1);
    assert_path_str(root, "context.ip", "1.2.3.4");
    assert_path_str(root, "type", "group");
    rec_free(&r);
}

/* The peek at a record's leading ids (a prefetch hint) finds in every record what
 * jd_event_read finds, at the same bytes; in a cut record or one not of this shape it
 * reads nothing past the end and finds no more than is there. */
static void test_peek_ids(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof valid / sizeof valid[0]; i++) {
        rec r;
        normalize_valid(&r, i);
        const char *data = r.out.data + PREFIX_LEN;
        size_t len = r.out.len - PREFIX_LEN;
        jd_event_peek pk;
        jd_event_peek_ids(data, len, &pk);
        msgpack_zone z;
        msgpack_zone_init(&z, 1024);
        jd_event ev;
        assert_int_equal(jd_event_read(data, len, &z, &ev), 0);
        assert_ptr_equal(pk.message_id.p, ev.message_id.p);
        assert_int_equal(pk.message_id.n, ev.message_id.n);
        assert_int_equal(pk.anonymous_id.n, ev.anonymous_id.n);
        if (ev.timestamp >= 0) {
            assert_int_equal(pk.has_timestamp, 1);
            assert_true(pk.timestamp == ev.timestamp);
        }
        if (ev.has_user_id) {
            assert_ptr_equal(pk.user_id.p, ev.user_id.p);
            assert_int_equal(pk.user_id.n, ev.user_id.n);
        } else {
            assert_int_equal(pk.user_id.n, 0);
        }
        msgpack_zone_destroy(&z);
        /* every cut of it, in a buffer of just that size (the sanitizers see a read past) */
        for (size_t cut = 0; cut < len; cut++) {
            char *c = malloc(cut ? cut : 1);
            memcpy(c, data, cut);
            jd_event_peek q;
            jd_event_peek_ids(c, cut, &q);
            const jd_str *f[] = {&q.message_id, &q.user_id, &q.anonymous_id};
            for (size_t k = 0; k < 3; k++)
                assert_true(f[k]->n == 0 || (f[k]->p >= c && f[k]->p + f[k]->n <= c + cut));
            free(c);
        }
        rec_free(&r);
    }
    jd_event_peek pk;
    jd_event_peek_ids("\x91\xa1x", 3, &pk); /* an array: no hint */
    assert_int_equal(pk.message_id.n + pk.user_id.n + pk.anonymous_id.n, 0);
}

/* ---------------------------------------------------------------- lazy maps */

/* The zone holds nothing yet: its first chunk is as msgpack_zone_init left it. */
static void assert_zone_empty(const msgpack_zone *z, size_t chunk)
{
    assert_int_equal(z->chunk_list.free, chunk);
}

/* jd_event_read's view and jd_mp_unpack + jd_event_view's of the same bytes: the same
 * verdict, and the same maps (built by the accessors, the first read's from bytes). */
static int read_agrees(const void *data, size_t len)
{
    msgpack_zone za, zb;
    msgpack_zone_init(&za, 1024);
    msgpack_zone_init(&zb, 1024);
    msgpack_object root;
    jd_event a, b;
    int ra = jd_mp_unpack(data, len, &za, &root) || jd_event_view(&root, &a) ? -1 : 0;
    int rb = jd_event_read(data, len, &zb, &b);
    assert_int_equal(ra, rb);
    for (int m = 0; rb == 0 && m < JD_NMAPS; m++) {
        const msgpack_object *ta = jd_event_map(&a, (jd_event_map_id)m), *tb = jd_event_map(&b, (jd_event_map_id)m);
        assert_int_equal(ta == NULL, tb == NULL);
        if (ta)
            assert_true(msgpack_object_equal(*ta, *tb));
        assert_ptr_equal(jd_event_map(&b, (jd_event_map_id)m), tb); /* built once */
    }
    msgpack_zone_destroy(&za);
    msgpack_zone_destroy(&zb);
    return rb;
}

/* A record {type, messageId, userId, event, properties} with the properties' bytes as
 * given (packed as they are, well-formed or not). */
static void record_with_props(jd_buf *out, const char *props, size_t n)
{
    msgpack_packer pk;
    jd_buf_init(out);
    msgpack_packer_init(&pk, out, jd_buf_msgpack_write);
    msgpack_pack_map(&pk, 5);
    jd_mp_pack_cstr(&pk, "type");
    jd_mp_pack_cstr(&pk, "track");
    jd_mp_pack_cstr(&pk, "messageId");
    jd_mp_pack_cstr(&pk, "m");
    jd_mp_pack_cstr(&pk, "userId");
    jd_mp_pack_cstr(&pk, "u");
    jd_mp_pack_cstr(&pk, "event");
    jd_mp_pack_cstr(&pk, "E");
    jd_mp_pack_cstr(&pk, "properties");
    jd_buf_append(out, props, n);
}

/* jd_event_read only checks properties, traits and context: each is built when first
 * asked for, into its zone, as jd_mp_unpack builds it; one never asked for is never
 * built. Malformed ones are still refused. */
static void test_read_lazy(void **state)
{
    (void)state;
    /* the maps of every record normalisation writes: as the eager view's */
    for (size_t i = 0; i < sizeof valid / sizeof valid[0]; i++) {
        rec r;
        normalize_valid(&r, i);
        assert_int_equal(read_agrees(r.out.data + PREFIX_LEN, r.out.len - PREFIX_LEN), 0);
        rec_free(&r);
    }

    /* nothing is built until asked for, and then only what is asked for */
    rec r;
    if (normalize(&r, valid[0].json, DEFAULT_TS, NULL) != 0) /* properties {plan = "pro"} */
        fail_msg("rejected: %s", r.err);
    msgpack_zone z;
    msgpack_zone_init(&z, 1024);
    jd_event ev;
    assert_int_equal(jd_event_read(r.out.data + PREFIX_LEN, r.out.len - PREFIX_LEN, &z, &ev), 0);
    assert_str(ev.name, "Signed Up");
    assert_int_equal(jd_event_traits(&ev)->via.map.size, 0); /* {}: the shared empty map */
    assert_int_equal(jd_event_context(&ev)->via.map.size, 0);
    assert_null(jd_event_fold(&ev));
    assert_zone_empty(&z, 1024);
    const msgpack_object *props = jd_event_properties(&ev);
    assert_true(z.chunk_list.free < 1024);
    assert_path_str(props, "plan", "pro");
    assert_ptr_equal(jd_event_properties(&ev), props);
    msgpack_zone_destroy(&z);
    rec_free(&r);

    static const struct {
        const char *props; /* the properties' bytes */
        size_t n;
        int rc;
    } cases[] = {
#define P(s, rc) {s, sizeof s - 1, rc}
        P("\x81\xa1"
          "a\xa3xyz",
          0), /* {a = "xyz"} */
        P("\x81\xa1"
          "a\xc1",
          -1), /* 0xc1 is never used */
        P("\x81\xa1"
          "a\xa5xyz",
          -1), /* a string past the end */
        P("\x82\xa1"
          "a\x01",
          -1), /* 2 entries, 1 there */
        P("\x81\xa1"
          "a\xdb\xff\xff\xff\xff",
          -1),
        P("\x81\xa1"
          "a\xd6\x01\x02\x03",
          -1), /* a fixext 4 cut short */
        P("\x81\xa1"
          "a\xd6\x01\x02\x03\x04\x05",
          0),
        P("\x81\xa1"
          "a\xdd\xff\xff\xff\xff\x01",
          -1), /* more items than bytes */
        P("\xde\x00\x01\xa1"
          "a\xcb\x40\x09\x21\xfb\x54\x44\x2d\x18",
          0),                  /* map 16, a double */
        P("\xa3xyz", 0),       /* not a map: read as {} */
        P("\x91\x80", 0),      /* an array: {} too */
        P("\x93\x01\x02", -1), /* an array cut short */
        P("\xc1", -1),
        P("", -1),
#undef P
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        jd_buf b;
        record_with_props(&b, cases[i].props, cases[i].n);
        if (read_agrees(b.data, b.len) != cases[i].rc)
            fail_msg("case %zu: not %d", i, cases[i].rc);
        jd_buf_free(&b);
    }

    /* msgpack-c's 32 levels of nesting: properties are a record's level 1, so the
     * containers in them may reach level 31, not 32 */
    for (int depth = 30; depth <= 33; depth++) {
        char deep[64];
        size_t n = 0;
        deep[n++] = (char)0x81;
        deep[n++] = (char)0xa1;
        deep[n++] = 'a';
        for (int d = 1; d < depth; d++)
            deep[n++] = (char)0x91; /* [ ... ] */
        deep[n++] = 0x07;
        jd_buf b;
        record_with_props(&b, deep, n);
        assert_int_equal(read_agrees(b.data, b.len), depth <= 31 ? 0 : -1);
        jd_buf_free(&b);
    }

    /* properties of every type, and every cut of their record (in a buffer of just
     * that size: the sanitizers see a read past it) refused alike */
    jd_buf pb;
    jd_buf_init(&pb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &pb, jd_buf_msgpack_write);
    static const int64_t ints[] = {-5, -100, -1000, -100000, -5000000000LL, 7, 200, 60000, 100000, 5000000000LL};
    msgpack_pack_map(&pk, 21);
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        msgpack_pack_uint64(&pk, i); /* keys need not be strings */
        msgpack_pack_int64(&pk, ints[i]);
    }
    jd_mp_pack_cstr(&pk, "f32");
    msgpack_pack_float(&pk, 1.5f);
    jd_mp_pack_cstr(&pk, "f64");
    msgpack_pack_double(&pk, 2.25);
    jd_mp_pack_cstr(&pk, "t");
    msgpack_pack_true(&pk);
    jd_mp_pack_cstr(&pk, "nil");
    msgpack_pack_nil(&pk);
    jd_mp_pack_cstr(&pk, "bin");
    msgpack_pack_bin(&pk, 3);
    msgpack_pack_bin_body(&pk, "abc", 3);
    jd_mp_pack_cstr(&pk, "ext");
    msgpack_pack_ext(&pk, 3, 1);
    msgpack_pack_ext_body(&pk, "abc", 3);
    jd_mp_pack_cstr(&pk, "fixext");
    msgpack_pack_ext(&pk, 4, 2);
    msgpack_pack_ext_body(&pk, "abcd", 4);
    char text[300];
    memset(text, 'x', sizeof text);
    jd_mp_pack_cstr(&pk, "str8");
    jd_mp_pack_str(&pk, text, 40);
    jd_mp_pack_cstr(&pk, "str16");
    jd_mp_pack_str(&pk, text, 300);
    jd_mp_pack_cstr(&pk, "nested");
    msgpack_pack_array(&pk, 16);
    for (int i = 0; i < 15; i++)
        msgpack_pack_int(&pk, i);
    msgpack_pack_map(&pk, 1);
    jd_mp_pack_cstr(&pk, "k");
    msgpack_pack_array(&pk, 0);
    jd_mp_pack_cstr(&pk, "last");
    msgpack_pack_false(&pk);
    jd_buf b;
    record_with_props(&b, pb.data, pb.len);
    assert_int_equal(read_agrees(b.data, b.len), 0);
    for (size_t cut = 0; cut < b.len; cut++) {
        char *c = malloc(cut ? cut : 1);
        memcpy(c, b.data, cut);
        assert_int_equal(read_agrees(c, cut), -1);
        free(c);
    }
    jd_buf_free(&b);
    jd_buf_free(&pb);
}

/* The default messageId is used only when the event has none. */
static void test_default_message_id(void **state)
{
    (void)state;
    static const struct {
        const char *json;
        const char *want;
    } cases[] = {
        {"{\"type\":\"track\",\"userId\":\"u\",\"event\":\"e\",\"messageId\":\"own\"}", "own"},
        {"{\"type\":\"track\",\"userId\":\"u\",\"event\":\"e\",\"messageId\":7}", "7"},
        {"{\"type\":\"track\",\"userId\":\"u\",\"event\":\"e\"}", "dflt"},
        {"{\"type\":\"track\",\"userId\":\"u\",\"event\":\"e\",\"messageId\":null}", "dflt"},
        {"{\"type\":\"track\",\"userId\":\"u\",\"event\":\"e\",\"messageId\":\"\"}", "dflt"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        rec r;
        if (normalize(&r, cases[i].json, DEFAULT_TS, "dflt") != 0)
            fail_msg("case %zu rejected: %s", i, r.err);
        assert_str(r.ev.message_id, cases[i].want);
        assert_int_equal(r.ev.timestamp, DEFAULT_TS);
        rec_free(&r);
    }
}

/* ---------------------------------------------------------------- errors */

static void test_normalize_errors(void **state)
{
    (void)state;
#define TR "\"type\":\"track\",\"event\":\"e\",\"messageId\":\"m\""
    static const struct {
        const char *json;
        const char *want; /* substring of the message */
    } cases[] = {
        {"[1,2]", "must be a JSON object"},
        {"\"track\"", "must be a JSON object"},
        {"null", "must be a JSON object"},
        {"{" TR "}", "missing \"userId\" or \"anonymousId\""},
        {"{" TR ",\"userId\":\"\",\"anonymousId\":null}", "missing \"userId\" or \"anonymousId\""},
        {"{\"type\":\"track\",\"userId\":\"u\",\"messageId\":\"m\"}",
         "a track event needs a non-empty string \"event\""},
        {"{\"type\":\"track\",\"userId\":\"u\",\"event\":\"\",\"messageId\":\"m\"}",
         "needs a non-empty string \"event\""},
        {"{\"type\":\"track\",\"userId\":\"u\",\"event\":5,\"messageId\":\"m\"}", "needs a non-empty string \"event\""},
        {"{\"userId\":\"u\",\"messageId\":\"m\"}", "missing \"type\""},
        {"{\"type\":\"click\",\"userId\":\"u\",\"messageId\":\"m\"}", "\"type\" must be one of"},
        {"{\"type\":\"Track\",\"userId\":\"u\",\"event\":\"e\",\"messageId\":\"m\"}", "\"type\" must be one of"},
        {"{\"type\":\"timer\",\"userId\":\"u\",\"event\":\"e\",\"messageId\":\"m\"}", "\"type\" must be one of"},
        {"{\"type\":7,\"userId\":\"u\",\"messageId\":\"m\"}", "\"type\" must be one of"},
        {"{" TR ",\"userId\":\"u\",\"timestamp\":\"yesterday\"}", "\"timestamp\" must be an ISO 8601"},
        {"{" TR ",\"userId\":\"u\",\"timestamp\":\"2026-11-01T10:00:00\"}", "\"timestamp\" must be an ISO 8601"},
        {"{" TR ",\"userId\":\"u\",\"timestamp\":1793527200000}", "\"timestamp\" must be an ISO 8601"},
        {"{" TR ",\"userId\":\"u\",\"originalTimestamp\":\"2026-02-30\"}", "\"timestamp\" must be an ISO 8601"},
        {"{" TR ",\"userId\":\"u\",\"timestamp\":\"bad\",\"originalTimestamp\":\"2026-11-01T10:00:00Z\"}",
         "\"timestamp\" must be an ISO 8601"},
        {"{" TR ",\"userId\":\"u\",\"properties\":[1]}", "\"properties\" must be an object"},
        {"{" TR ",\"userId\":\"u\",\"properties\":\"x\"}", "\"properties\" must be an object"},
        {"{" TR ",\"userId\":\"u\",\"properties\":0}", "\"properties\" must be an object"},
        {"{" TR ",\"userId\":\"u\",\"traits\":true}", "\"traits\" must be an object"},
        {"{" TR ",\"userId\":\"u\",\"context\":[]}", "\"context\" must be an object"},
        {"{\"type\":\"group\",\"userId\":\"u\",\"messageId\":\"m\"}", "a group event needs \"groupId\""},
        {"{\"type\":\"group\",\"userId\":\"u\",\"groupId\":\"\",\"messageId\":\"m\"}",
         "a group event needs \"groupId\""},
        {"{\"type\":\"group\",\"userId\":\"u\",\"groupId\":true,\"messageId\":\"m\"}", "\"groupId\" must be a string"},
        {"{\"type\":\"alias\",\"userId\":\"u\",\"messageId\":\"m\"}", "an alias event needs \"previousId\""},
        {"{\"type\":\"alias\",\"anonymousId\":\"a\",\"previousId\":\"p\",\"messageId\":\"m\"}",
         "an alias event needs \"previousId\" and \"userId\""},
        {"{\"type\":\"alias\",\"userId\":\"u\",\"previousId\":[],\"messageId\":\"m\"}",
         "\"previousId\" must be a string"},
        {"{\"type\":\"track\",\"userId\":\"u\",\"event\":\"e\"}", "missing \"messageId\""},
        {"{\"type\":\"track\",\"userId\":\"u\",\"event\":\"e\",\"messageId\":\"\"}", "missing \"messageId\""},
        {"{\"type\":\"track\",\"userId\":\"u\",\"event\":\"e\",\"messageId\":true}", "\"messageId\" must be a string"},
        {"{" TR ",\"userId\":true,\"anonymousId\":\"a\"}", "\"userId\" must be a string"},
        {"{" TR ",\"userId\":1.5}", "\"userId\" must be a string"},
        {"{" TR ",\"userId\":\"u\",\"anonymousId\":{}}", "\"anonymousId\" must be a string"},
        {"{\"type\":\"page\",\"userId\":\"u\",\"name\":5,\"messageId\":\"m\"}", "\"name\" must be a string"},
    };
#undef TR
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        rec r;
        if (normalize(&r, cases[i].json, DEFAULT_TS, NULL) != -1)
            fail_msg("case %zu accepted: %s", i, cases[i].json);
        if (!strstr(r.err, cases[i].want))
            fail_msg("case %zu: error \"%s\", want \"%s\"\n  %s", i, r.err, cases[i].want, cases[i].json);
        rec_free(&r);
    }
}

/* ---------------------------------------------------------------- view */

static void test_view(void **state)
{
    (void)state;
    static const struct {
        const char *json;
        int rc;
        jd_event_type type;
        const char *user_id;
        int64_t ts;
    } cases[] = {
        {"{\"type\":\"timer\",\"userId\":\"u\",\"messageId\":\"t1\",\"timestamp\":5,\"event\":\"j1.s2.0\"}", 0,
         JD_EV_TIMER, "u", 5},
        {"{\"type\":\"track\",\"anonymousId\":\"a\",\"messageId\":\"m\",\"timestamp\":-9223372036854775808}", 0,
         JD_EV_TRACK, "a", INT64_MIN},
        {"{\"type\":\"track\",\"userId\":\"u\",\"messageId\":\"m\"}", 0, JD_EV_TRACK, "u", 0},
        {"{\"type\":\"track\",\"userId\":\"u\",\"messageId\":\"m\",\"properties\":[1],\"traits\":\"x\"}", 0,
         JD_EV_TRACK, "u", 0},
        {"{\"userId\":\"u\",\"messageId\":\"m\"}", -1, 0, NULL, 0},                    /* no type */
        {"{\"type\":\"bogus\",\"userId\":\"u\",\"messageId\":\"m\"}", -1, 0, NULL, 0}, /* unknown type */
        {"{\"type\":1,\"userId\":\"u\",\"messageId\":\"m\"}", -1, 0, NULL, 0},
        {"{\"type\":\"track\",\"messageId\":\"m\"}", -1, 0, NULL, 0}, /* nobody */
        {"{\"type\":\"track\",\"userId\":\"\",\"anonymousId\":null,\"messageId\":\"m\"}", -1, 0, NULL, 0},
        {"{\"type\":\"track\",\"userId\":\"u\"}", -1, 0, NULL, 0},                 /* no messageId */
        {"{\"type\":\"track\",\"userId\":5,\"messageId\":\"m\"}", -1, 0, NULL, 0}, /* ids are strings in a record */
        {"[]", -1, 0, NULL, 0},
        {"\"track\"", -1, 0, NULL, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        obj o;
        obj_json(&o, cases[i].json);
        jd_event ev;
        int rc = jd_event_view(&o.u.data, &ev);
        if (rc != cases[i].rc)
            fail_msg("case %zu: rc %d\n  %s", i, rc, cases[i].json);
        assert_int_equal(read_agrees(o.buf.data, o.buf.len), rc);
        if (rc == 0) {
            assert_int_equal(ev.type, cases[i].type);
            assert_str(ev.user_id, cases[i].user_id);
            assert_true(ev.timestamp == cases[i].ts);
            /* maps that are absent or not maps read as empty maps */
            assert_int_equal(jd_event_properties(&ev)->type, MSGPACK_OBJECT_MAP);
            assert_int_equal(jd_event_traits(&ev)->type, MSGPACK_OBJECT_MAP);
            assert_int_equal(jd_event_context(&ev)->type, MSGPACK_OBJECT_MAP);
        }
        obj_free(&o);
    }
}

static void test_type_names(void **state)
{
    (void)state;
    static const char *const names[JD_EV_NTYPES] = {"track", "identify", "page",  "screen",
                                                    "group", "alias",    "timer", "tick"};
    for (int i = 0; i < JD_EV_NTYPES; i++) {
        assert_string_equal(jd_event_type_name((jd_event_type)i), names[i]);
        jd_event_type t = JD_EV_NTYPES;
        assert_int_equal(jd_event_type_parse(names[i], strlen(names[i]), &t), 0);
        assert_int_equal(t, i);
    }
    jd_event_type t;
    assert_int_equal(jd_event_type_parse("Track", 5, &t), -1);
    assert_int_equal(jd_event_type_parse("trac", 4, &t), -1);
    assert_int_equal(jd_event_type_parse("tracks", 6, &t), -1);
    assert_int_equal(jd_event_type_parse("", 0, &t), -1);
    assert_int_equal(jd_event_type_parse("trackX", 5, &t), 0); /* the length bounds the name */
    assert_int_equal(t, JD_EV_TRACK);
    assert_string_equal(jd_event_type_name(JD_EV_NTYPES), "?");
}

/* ---------------------------------------------------------------- map lookups */

static void test_mp_get(void **state)
{
    (void)state;
    obj o;
    obj_json(&o, "{\"a\":1,\"b\":2,\"a\":3,\"ab\":4,\"\":5,\"A\":6}");
    const msgpack_object *m = &o.u.data;
    static const struct {
        const char *key;
        int64_t want; /* -1: absent */
    } cases[] = {
        {"a", 3}, /* the last occurrence wins */
        {"b", 2}, {"ab", 4}, {"", 5}, {"A", 6}, {"c", -1}, {"abc", -1}, {"B", -1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const msgpack_object *v = jd_mp_get(m, cases[i].key, strlen(cases[i].key));
        if (cases[i].want < 0) {
            assert_null(v);
        } else {
            assert_non_null(v);
            assert_int_equal(v->via.u64, cases[i].want);
        }
    }
    assert_int_equal(jd_mp_get(m, "abc", 2)->via.u64, 4); /* the length bounds the key */
    assert_null(jd_mp_get(NULL, "a", 1));
    obj_free(&o);

    obj_json(&o, "[\"a\",1]");
    assert_null(jd_mp_get(&o.u.data, "a", 1)); /* not a map */
    obj_free(&o);

    /* keys that are not strings are never matched */
    jd_buf b;
    jd_buf_init(&b);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &b, jd_buf_msgpack_write);
    msgpack_pack_map(&pk, 2);
    msgpack_pack_int(&pk, 1);
    msgpack_pack_int(&pk, 10);
    msgpack_pack_bin(&pk, 1);
    msgpack_pack_bin_body(&pk, "x", 1);
    msgpack_pack_int(&pk, 20);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    assert_int_equal(msgpack_unpack_next(&u, b.data, b.len, &off), MSGPACK_UNPACK_SUCCESS);
    assert_null(jd_mp_get(&u.data, "1", 1));
    assert_null(jd_mp_get(&u.data, "x", 1));
    msgpack_unpacked_destroy(&u);
    jd_buf_free(&b);
}

static void test_mp_path(void **state)
{
    (void)state;
    obj o;
    obj_json(&o, "{\"a\":{\"b\":{\"c\":5,\"\":8}},\"x\":1,\"s\":\"str\",\"arr\":[{\"k\":1}],"
                 "\"d\":{\"p\":1},\"d\":{\"q\":2},\"\":{\"e\":9}}");
    const msgpack_object *m = &o.u.data;
    static const struct {
        const char *path;
        size_t len;   /* 0: strlen */
        int64_t want; /* -1: absent, -2: a map */
    } cases[] = {
        {"a.b.c", 0, 5},  {"a.b", 0, -2},      {"a", 0, -2},
        {"x", 0, 1},      {"a.x", 0, -1},      {"a.b.c.d", 0, -1}, /* through a number */
        {"x.y", 0, -1},   {"s.length", 0, -1},                     /* through a string */
        {"arr.0", 0, -1},                                          /* arrays are not indexed */
        {"arr.k", 0, -1}, {"d.p", 0, -1},                          /* the last "d" wins: no p */
        {"d.q", 0, 2},    {"a.b.", 0, 8},                          /* an empty last segment is the "" key */
        {".e", 0, 9},     {"a.b.cXYZ", 5, 5},                      /* the length bounds the path */
        {"a.b.c", 3, -2}, {"nope", 0, -1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n = cases[i].len ? cases[i].len : strlen(cases[i].path);
        const msgpack_object *v = jd_mp_path(m, cases[i].path, n);
        if (cases[i].want == -1) {
            if (v)
                fail_msg("%.*s: found, want absent", (int)n, cases[i].path);
        } else if (cases[i].want == -2) {
            if (!v || v->type != MSGPACK_OBJECT_MAP)
                fail_msg("%.*s: want a map", (int)n, cases[i].path);
        } else if (!v || v->type != MSGPACK_OBJECT_POSITIVE_INTEGER || v->via.u64 != (uint64_t)cases[i].want) {
            fail_msg("%.*s: want %lld", (int)n, cases[i].path, (long long)cases[i].want);
        }
    }
    assert_null(jd_mp_path(NULL, "a", 1));
    obj_free(&o);
}

/* jd_mp_unpack against msgpack_unpack: the same verdict on every input, and the same
 * tree when both succeed (strings pointing at the same bytes). */
static int mp_same(const msgpack_object *a, const msgpack_object *b)
{
    if (a->type != b->type)
        return 0;
    switch (a->type) {
    case MSGPACK_OBJECT_NIL: return 1;
    case MSGPACK_OBJECT_BOOLEAN: return a->via.boolean == b->via.boolean;
    case MSGPACK_OBJECT_POSITIVE_INTEGER: return a->via.u64 == b->via.u64;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return a->via.i64 == b->via.i64;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: return memcmp(&a->via.f64, &b->via.f64, sizeof a->via.f64) == 0;
    case MSGPACK_OBJECT_STR: /* msgpack-c leaves an empty string's pointer stale */
    case MSGPACK_OBJECT_BIN:
        return a->via.str.size == b->via.str.size && (!a->via.str.size || a->via.str.ptr == b->via.str.ptr);
    case MSGPACK_OBJECT_EXT:
        return a->via.ext.type == b->via.ext.type && a->via.ext.size == b->via.ext.size &&
               (!a->via.ext.size || a->via.ext.ptr == b->via.ext.ptr);
    case MSGPACK_OBJECT_ARRAY:
        if (a->via.array.size != b->via.array.size)
            return 0;
        for (uint32_t i = 0; i < a->via.array.size; i++)
            if (!mp_same(&a->via.array.ptr[i], &b->via.array.ptr[i]))
                return 0;
        return 1;
    case MSGPACK_OBJECT_MAP:
        if (a->via.map.size != b->via.map.size)
            return 0;
        for (uint32_t i = 0; i < a->via.map.size; i++)
            if (!mp_same(&a->via.map.ptr[i].key, &b->via.map.ptr[i].key) ||
                !mp_same(&a->via.map.ptr[i].val, &b->via.map.ptr[i].val))
                return 0;
        return 1;
    }
    return 0;
}

static int mp_checks;

static void mp_check(const char *data, size_t n)
{
    msgpack_zone za, zb;
    msgpack_zone_init(&za, 256);
    msgpack_zone_init(&zb, 256);
    msgpack_object a, b;
    size_t off = 0;
    int theirs = msgpack_unpack(data, n, &off, &za, &a) == MSGPACK_UNPACK_SUCCESS;
    int ours = jd_mp_unpack(data, n, &zb, &b) == 0;
    char hex[3 * 48 + 1] = "";
    for (size_t i = 0; i < n && i < 48; i++)
        snprintf(hex + 3 * i, 4, " %02x", (unsigned char)data[i]);
    if (theirs != ours || (ours && !mp_same(&a, &b)))
        fail_msg("msgpack_unpack %s, jd_mp_unpack %s:%s", theirs ? "ok" : "fails", ours ? "ok" : "fails", hex);
    /* a map's spans: the same verdict, the same keys, and spans that tile the entries */
    jd_mp_span sp[64];
    int ns = jd_mp_map_spans(data, n, sp, 64);
    if ((ns >= 0) != (ours && b.type == MSGPACK_OBJECT_MAP) || (ns >= 0 && (uint32_t)ns != b.via.map.size))
        fail_msg("jd_mp_map_spans %d:%s", ns, hex);
    for (int i = 0; ns > 0 && i < ns && i < 64; i++) {
        const msgpack_object *k = &b.via.map.ptr[i].key;
        if (k->type != sp[i].key.type || (k->type == MSGPACK_OBJECT_STR && !mp_same(k, &sp[i].key)))
            fail_msg("jd_mp_map_spans key %d:%s", i, hex);
        if (i + 1 < ns && i + 1 < 64 && sp[i].p + sp[i].n != sp[i + 1].p)
            fail_msg("jd_mp_map_spans span %d:%s", i, hex);
    }
    /* what jd_mp_pack_object writes is what msgpack_pack_object writes */
    if (theirs) {
        jd_buf x, y;
        jd_buf_init(&x);
        jd_buf_init(&y);
        msgpack_packer px, py;
        msgpack_packer_init(&px, &x, jd_buf_msgpack_write);
        msgpack_packer_init(&py, &y, jd_buf_msgpack_write);
        msgpack_pack_object(&px, a);
        jd_mp_pack_object(&py, &a);
        if (x.len != y.len || memcmp(x.data, y.data, x.len) != 0)
            fail_msg("jd_mp_pack_object differs:%s", hex);
        jd_buf_free(&x);
        jd_buf_free(&y);
    }
    mp_checks++;
    msgpack_zone_destroy(&za);
    msgpack_zone_destroy(&zb);
}

static void test_mp_unpack(void **state)
{
    (void)state;
    /* every value type in every width msgpack-c writes, nested */
    jd_buf b;
    jd_buf_init(&b);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &b, jd_buf_msgpack_write);
    static const char body[] = "0123456789abcdefghijklmnopqrstuvwxyz";
    msgpack_pack_map(&pk, 3);
    jd_mp_pack_cstr(&pk, "values");
    msgpack_pack_array(&pk, 40);
    msgpack_pack_nil(&pk);
    msgpack_pack_true(&pk);
    msgpack_pack_false(&pk);
    static const int64_t ints[] = {0,         1,  127, 128, 255,  256,  65535,  65536,  4294967295LL,  4294967296LL,
                                   INT64_MAX, -1, -32, -33, -128, -129, -32768, -32769, -2147483648LL, -2147483649LL,
                                   INT64_MIN};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        msgpack_pack_int64(&pk, ints[i]);
    msgpack_pack_uint64(&pk, UINT64_MAX);
    msgpack_pack_float(&pk, 1.5f);
    msgpack_pack_double(&pk, -2.25);
    static const size_t lens[] = {0, 1, 31, 32, 255, 256, 65536};
    char *big = calloc(1, 70000);
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        msgpack_pack_str(&pk, lens[i]);
        msgpack_pack_str_body(&pk, big, lens[i]);
    }
    msgpack_pack_bin(&pk, 5);
    msgpack_pack_bin_body(&pk, body, 5);
    static const size_t exts[] = {1, 2, 4, 8, 16, 3, 300};
    for (size_t i = 0; i < sizeof exts / sizeof exts[0]; i++) {
        msgpack_pack_ext(&pk, exts[i], 7);
        msgpack_pack_ext_body(&pk, big, exts[i]);
    }
    jd_mp_pack_cstr(&pk, "sizes");
    msgpack_pack_array(&pk, 2);
    msgpack_pack_array(&pk, 20);
    for (int i = 0; i < 20; i++)
        msgpack_pack_int(&pk, i);
    msgpack_pack_map(&pk, 17);
    for (int i = 0; i < 17; i++) {
        msgpack_pack_str(&pk, 1);
        msgpack_pack_str_body(&pk, body + i, 1);
        msgpack_pack_map(&pk, 0);
    }
    jd_mp_pack_cstr(&pk, "empty");
    msgpack_pack_array(&pk, 0);
    mp_check(b.data, b.len);
    /* every truncation and trailing byte; every byte changed to a few values */
    char *c = malloc(b.len + 1);
    for (size_t n = 0; n <= b.len; n++)
        mp_check(b.data, n);
    memcpy(c, b.data, b.len);
    c[b.len] = 0;
    mp_check(c, b.len + 1);
    for (size_t i = 0; i < b.len; i += i < 400 ? 1 : 97) {
        /* not 0xdd / 0xdf: msgpack-c allocates what a 32-bit count asks for (gigabytes) */
        static const unsigned char to[] = {0x00, 0x7f, 0x80, 0x8f, 0x90, 0xa0, 0xc0, 0xc1, 0xc4, 0xc7, 0xca,
                                           0xcb, 0xcf, 0xd3, 0xd4, 0xd8, 0xd9, 0xdb, 0xdc, 0xde, 0xe0, 0xff};
        for (size_t k = 0; k < sizeof to; k++) {
            memcpy(c, b.data, b.len);
            c[i] = (char)to[k];
            mp_check(c, b.len);
        }
    }
    free(c);
    free(big);
    /* all one- and two-byte inputs */
    for (int x = 0; x < 256; x++) {
        char two[2] = {(char)x, 0};
        mp_check(two, 1);
        for (int y = 0; y < 256; y++) {
            two[1] = (char)y;
            mp_check(two, 2);
        }
    }
    /* nesting: 32 containers deep unpack, 33 do not (msgpack-c's stack) */
    for (int depth = 30; depth <= 34; depth++) {
        jd_buf_reset(&b);
        for (int i = 0; i < depth - 1; i++)
            msgpack_pack_array(&pk, 1);
        msgpack_pack_map(&pk, 0);
        mp_check(b.data, b.len);
        msgpack_zone z;
        msgpack_zone_init(&z, 256);
        msgpack_object o;
        assert_int_equal(jd_mp_unpack(b.data, b.len, &z, &o), depth <= 32 ? 0 : -1);
        msgpack_zone_destroy(&z);
    }
    /* a count the input cannot hold fails without allocating for it */
    static const unsigned char huge[] = {0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0};
    msgpack_zone z;
    msgpack_zone_init(&z, 256);
    msgpack_object o;
    assert_int_equal(jd_mp_unpack(huge, sizeof huge, &z, &o), -1);
    msgpack_zone_destroy(&z);
    jd_buf_free(&b);
    assert_true(mp_checks > 70000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_normalize_valid),
        cmocka_unit_test(test_record_shape),
        cmocka_unit_test(test_peek_ids),
        cmocka_unit_test(test_read_lazy),
        cmocka_unit_test(test_default_message_id),
        cmocka_unit_test(test_normalize_errors),
        cmocka_unit_test(test_view),
        cmocka_unit_test(test_type_names),
        cmocka_unit_test(test_mp_get),
        cmocka_unit_test(test_mp_path),
        cmocka_unit_test(test_mp_unpack),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
