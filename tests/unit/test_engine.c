/* test_engine: behaviour of the processor through real scripts on a virtual clock —
 * journeys and stages, goals and exits, reentry, keyed instances, timers, late events,
 * hook error isolation, `when` predicates, rules, identity, dedupe, action ids, every
 * ctx field and method and every `where` operator and root.
 * Sandbox and load-time (compile) errors are in test_script.c. */
#define _GNU_SOURCE
#include "testutil.h"

#include <ctype.h>

/* Two channels every script below declares (3 lines). */

/* ---------------------------------------------------------------- helpers */

/* action i contains every given substring */

/* A track event with an explicit messageId. */
static void track_mid(tu_run *r, const char *mid, const char *user, const char *event, const char *t, const char *props)
{
    tu_event(r, "{\"type\":\"track\",\"userId\":\"%s\",\"event\":\"%s\",\"timestamp\":\"%s\",\"messageId\":\"%s\"%s%s}",
             user, event, t, mid, props ? ",\"properties\":" : "", props ? props : "");
}

static int64_t ms_of(const char *iso)
{
    int64_t ms;
    assert_int_equal(jd_parse_time(iso, &ms), 0);
    return ms;
}

/* The journey line of the funnel must read exactly these counts. */
static void expect_journey(tu_run *r, const char *journey, int entered, int active, int converted, int exited)
{
    char want[256], *f = jd_engine_funnel_text(r->e);
    snprintf(want, sizeof want, "journey %s: entered %d, active %d, converted %d (", journey, entered, active,
             converted);
    char want2[64];
    snprintf(want2, sizeof want2, "), exited %d\n", exited);
    const char *p = strstr(f, want);
    int ok = p && strstr(p, want2) && strchr(p, '\n') == strstr(p, want2) + strlen(want2) - 1;
    if (!ok) {
        fprintf(stderr, "%s", f);
        free(f);
        fail_msg("funnel: expected '%s...%s'", want, want2);
    }
    free(f);
}

enum { C_ENTERED, C_NOW, C_MOVED_ON, C_TIMED_OUT, C_CONVERTED, C_EXITED };

/* A stage row of the funnel: entered, now, moved_on, timed_out, converted, exited. */
static void stage_counts(tu_run *r, const char *journey, const char *stage, unsigned long long c[6])
{
    char hdr[256], row[256], *f = jd_engine_funnel_text(r->e);
    snprintf(hdr, sizeof hdr, "journey %s: ", journey);
    snprintf(row, sizeof row, "\n  %s ", stage);
    const char *p = strstr(f, hdr);
    const char *q = p ? strstr(p, row) : NULL;
    const char *next = p ? strstr(p + 1, "\njourney ") : NULL;
    if (!q || (next && q > next) ||
        sscanf(q + strlen(row), "%llu %llu %llu %llu %llu %llu", &c[0], &c[1], &c[2], &c[3], &c[4], &c[5]) != 6) {
        fprintf(stderr, "%s", f);
        free(f);
        fail_msg("funnel: no row for %s/%s", journey, stage);
    }
    free(f);
}

static unsigned long long stage_count(tu_run *r, const char *journey, const char *stage, int col)
{
    unsigned long long c[6];
    stage_counts(r, journey, stage, c);
    return c[col];
}

/* The "id" of an action line (32 chars + NUL into out). */
static void action_id(const char *action, char out[33])
{
    const char *p = strstr(action, "\"id\":\"");
    assert_non_null(p);
    p += 6;
    size_t n = 0;
    while (p[n] && p[n] != '"')
        n++;
    assert_int_equal(n, 32);
    for (size_t i = 0; i < 32; i++)
        assert_true(isxdigit((unsigned char)p[i]) && !isupper((unsigned char)p[i]));
    memcpy(out, p, 32);
    out[32] = '\0';
}

/* ---------------------------------------------------------------- journeys and stages */

static const char *onboarding_src = HDR "j.journey \"onb\" {\n"
                                        "  entry = j.on(\"Signed Up\"),\n"
                                        "  j.stage \"new\" {\n"
                                        "    enter = function(ctx) ctx:send(\"email\", { tpl = \"welcome\" }) end,\n"
                                        "    j.on(\"Project Created\"):go \"active\",\n"
                                        "  },\n"
                                        "  j.stage \"active\" {\n"
                                        "    enter = function(ctx) ctx:send(\"email\", { tpl = \"congrats\" }) end,\n"
                                        "  },\n"
                                        "}\n"
                                        "j.on(\"Pricing Viewed\", function(ctx) ctx:send(\"team\", \"looked\") end)\n";

/* jd_engine_process hashes a record's person id once and its lookups reuse the hash
 * for the same bytes (engine.c id_hash), only while that record is processed: a later
 * lookup of other bytes at the same address (the caller's buffer, reused) is hashed
 * afresh. */
static void test_record_buffer_reused(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r, HDR "j.on(\"Pricing Viewed\", function(ctx) ctx:score(5) end)\n");
    const char *lines[] = {
        "{\"type\":\"track\",\"userId\":\"u2\",\"event\":\"Pricing Viewed\",\"messageId\":\"m1\","
        "\"timestamp\":\"2024-01-01T00:00:00Z\"}",
        "{\"type\":\"track\",\"userId\":\"u1\",\"event\":\"Pricing Viewed\",\"messageId\":\"m2\","
        "\"timestamp\":\"2024-01-01T00:01:00Z\"}",
    };
    char buf[512];
    size_t n = 0;
    jd_error err;
    for (int i = 0; i < 2; i++) {
        char *rec;
        assert_int_equal(jd_engine_normalize(r.e, lines[i], strlen(lines[i]), 0, "x", &rec, &n, &err), 0);
        assert_true(n <= sizeof buf);
        memcpy(buf, rec, n);
        free(rec);
        assert_int_equal(jd_engine_process(r.e, buf, n, &err), 0);
    }
    /* u1's id in the buffer becomes u2's: asked for by those bytes, u2 is found */
    char *id = memmem(buf, n, "\xa2u1", 3);
    assert_non_null(id);
    id[2] = '2';
    char *u2 = jd_engine_user_json(r.e, id + 1, 2);
    assert_non_null(u2);
    assert_non_null(strstr(u2, "\"id\":\"u2\""));
    free(u2);
    tu_free(&r);
}

static void test_action_json_shape(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r, onboarding_src);
    tu_track(&r, "u1", "Signed Up", "2024-01-01T00:00:00Z", NULL);
    tu_track(&r, "u1", "Project Created", "2024-01-01T05:00:00.250Z", NULL);
    tu_track(&r, "u1", "Pricing Viewed", "2024-01-01T06:00:00Z", NULL);
    EXPECT_NACTIONS(&r, 3);
    static const char *const prefix[] = {
        "{\"time\":\"2024-01-01T00:00:00.000Z\",\"user\":\"u1\",\"journey\":\"onb\",\"stage\":\"new\","
        "\"channel\":\"email\",\"payload\":{\"tpl\":\"welcome\"},\"id\":\"",
        "{\"time\":\"2024-01-01T05:00:00.250Z\",\"user\":\"u1\",\"journey\":\"onb\",\"stage\":\"active\","
        "\"channel\":\"email\",\"payload\":{\"tpl\":\"congrats\"},\"id\":\"",
        "{\"time\":\"2024-01-01T06:00:00.000Z\",\"user\":\"u1\",\"journey\":null,\"stage\":null,"
        "\"channel\":\"team\",\"payload\":\"looked\",\"id\":\"",
    };
    char ids[3][33];
    for (int i = 0; i < 3; i++) {
        if (strncmp(r.actions[i], prefix[i], strlen(prefix[i])) != 0) {
            tu_dump(&r);
            fail_msg("action %d: expected prefix %s", i, prefix[i]);
        }
        action_id(r.actions[i], ids[i]);
        /* nothing after the id */
        assert_string_equal(r.actions[i] + strlen(prefix[i]) + 32, "\"}");
    }
    assert_string_not_equal(ids[0], ids[1]);
    assert_string_not_equal(ids[1], ids[2]);
    assert_string_not_equal(ids[0], ids[2]);
    EXPECT_STAT(&r, "actions", 3);
    EXPECT_STAT(&r, "events", 3);
    expect_journey(&r, "onb", 1, 1, 0, 0);
    tu_free(&r);
}

/* Payload tables become JSON as the packer decides: maps with keys in byte order
 * (numbers as their text), sequences as arrays, j.array marks; small tables (one walk)
 * and big ones (the general path) alike. A key that is neither string nor number fails
 * the hook unless the table packs as an array. */
static void test_payload_shapes(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r, HDR "j.on(\"Shapes\", function(ctx)\n"
                     "  ctx:send(\"team\", { b = 1, a = \"x\", [2] = true, [1.5] = 0, [-3] = \"neg\" })\n"
                     "  ctx:send(\"team\", { 10, 20, 30 })\n"
                     "  ctx:send(\"team\", { list = { 1, 2 }, m = { z = 1, y = 2 }, e = j.array {}, o = {} })\n"
                     "  local big = {}\n"
                     "  for i = 1, 17 do big[\"k\" .. string.char(96 + (i * 7) % 26 + 1)] = i end\n"
                     "  ctx:send(\"team\", big)\n"
                     "  local seq = {}\n"
                     "  for i = 1, 20 do seq[i] = i end\n"
                     "  ctx:send(\"team\", seq)\n"
                     "end)\n"
                     "j.on(\"Bad\", function(ctx) ctx:send(\"team\", { a = 1, [true] = 2 }) end)\n"
                     "j.on(\"BadBig\", function(ctx)\n"
                     "  local t = { [true] = 0 }\n"
                     "  for i = 1, 20 do t[\"k\" .. i] = i end\n"
                     "  ctx:send(\"team\", t)\n"
                     "end)\n");
    tu_track(&r, "u1", "Shapes", "2024-01-01T00:00:00Z", NULL);
    tu_track(&r, "u1", "Bad", "2024-01-01T00:00:01Z", NULL);
    tu_track(&r, "u1", "BadBig", "2024-01-01T00:00:02Z", NULL);
    EXPECT_NACTIONS(&r, 5);
    static const char *const want[] = {
        "\"payload\":{\"-3\":\"neg\",\"1.5\":0,\"2\":true,\"a\":\"x\",\"b\":1}",  "\"payload\":[10,20,30]",
        "\"payload\":{\"e\":[],\"list\":[1,2],\"m\":{\"y\":2,\"z\":1},\"o\":{}}", "\"payload\":{\"kb\":15,\"kc\":4,",
        "\"payload\":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20]",
    };
    for (int i = 0; i < 5; i++)
        if (!strstr(r.actions[i], want[i])) {
            tu_dump(&r);
            fail_msg("action %d: expected %s", i, want[i]);
        }
    /* the big map's keys in order */
    const char *p = strstr(r.actions[3], "\"payload\":{");
    char prev[8] = "";
    int n = 0;
    for (p = strchr(p, '{'); (p = strstr(p, "\"k")); n++) {
        char k[8] = {0};
        memcpy(k, p + 1, 2);
        assert_true(strcmp(prev, k) < 0);
        memcpy(prev, k, sizeof k);
        p += 3;
    }
    assert_int_equal(n, 17);
    EXPECT_STAT(&r, "lua_errors", 2);
    tu_free(&r);
}

/* ctx.user.traits is a fresh table of every trait each call, however the names come
 * and go between profiles (the ctx keeps recent names as Lua strings). */
static void test_user_traits_each_call(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r, HDR "j.on(\"Check\", function(ctx)\n"
                     "  local t = ctx.user.traits\n"
                     "  local ks = {}\n"
                     "  for k, v in pairs(t) do ks[#ks + 1] = k .. \"=\" .. tostring(v) end\n"
                     "  table.sort(ks)\n"
                     "  t.email = \"changed\"\n"
                     "  ctx:send(\"team\", #ks .. \":\" .. table.concat(ks, \",\"))\n"
                     "end)\n");
    char big[3000];
    size_t n = (size_t)snprintf(big, sizeof big, "{\"email\":\"a@x\",\"plan\":\"trial\"");
    for (int i = 0; i < 150; i++)
        n += (size_t)snprintf(big + n, sizeof big - n, ",\"trait_%d\":%d", i, i);
    snprintf(big + n, sizeof big - n, "}");
    tu_event(&r,
             "{\"type\":\"identify\",\"userId\":\"u1\",\"traits\":%s,\"timestamp\":\"2024-01-01T00:00:00Z\","
             "\"messageId\":\"i1\"}",
             big);
    tu_event(&r, "{\"type\":\"identify\",\"userId\":\"u2\",\"traits\":{\"email\":\"b@y\",\"role\":\"cto\",\"a\":1,"
                 "\"x_long_trait_name_beyond_the_cache_limit\":true},\"timestamp\":\"2024-01-01T00:00:00Z\","
                 "\"messageId\":\"i2\"}");
    tu_track(&r, "u1", "Check", "2024-01-01T00:00:01Z", NULL);
    tu_track(&r, "u2", "Check", "2024-01-01T00:00:02Z", NULL);
    tu_track(&r, "u1", "Check", "2024-01-01T00:00:03Z", NULL);
    tu_track(&r, "u2", "Check", "2024-01-01T00:00:04Z", NULL);
    EXPECT_NACTIONS(&r, 4);
    for (int i = 0; i < 4; i += 2) {
        assert_non_null(strstr(r.actions[i], "\"payload\":\"152:email=a@x,plan=trial,trait_0=0,trait_100=100,"));
        assert_non_null(strstr(r.actions[i], ",trait_149=149,"));
        assert_non_null(strstr(r.actions[i], ",trait_99=99,trait_9=9\""));
        assert_non_null(strstr(r.actions[i + 1], "\"payload\":\"4:a=1,email=b@y,role=cto,"
                                                 "x_long_trait_name_beyond_the_cache_limit=true\""));
    }
    tu_free(&r);
}

/* ctx.user.traits, read from the packed traits: nested maps and arrays (marked as
 * arrays), integers and floats (2.0 stays a float), booleans, nil inside arrays, long
 * strings, traits a hook set (a later hook sees them), a trait removed with nil. */
static void test_user_traits_values(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r, HDR
             "local tag = { integer = \"i\", float = \"f\", string = \"s\", boolean = \"b\", [\"nil\"] = \"nil\" }\n"
             "local function show(v)\n"
             "  if type(v) ~= \"table\" then\n"
             "    return tag[math.type(v) or type(v)] .. \":\" .. tostring(v)\n"
             "  end\n"
             "  local ks = {}\n"
             "  for k, x in pairs(v) do ks[#ks + 1] = show(k) .. \"=\" .. show(x) end\n"
             "  table.sort(ks)\n"
             "  local open = getmetatable(v) == j._array_mt and \"[\" or \"{\"\n"
             "  return open .. table.concat(ks, \",\") .. (open == \"[\" and \"]\" or \"}\")\n"
             "end\n"
             "j.on(\"Check\", function(ctx)\n"
             "  ctx:send(\"team\", show(ctx.user.traits))\n"
             "  ctx:set(\"seen\", (ctx.user.traits.seen or 0) + 1)\n"
             "  ctx:set{ ratio = 0.5, list = j.array { 1, 2.5, \"x\" }, plan = false }\n"
             "end)\n"
             "j.on(\"Check\", function(ctx) ctx:send(\"team\", show(ctx.user.traits)) end)\n");
    tu_event(&r, "{\"type\":\"identify\",\"userId\":\"u1\",\"timestamp\":\"2024-01-01T00:00:00Z\",\"messageId\":\"i1\","
                 "\"traits\":{\"n\":7,\"neg\":-3,\"f\":2.0,\"g\":1.5e300,\"big\":18446744073709551615,"
                 "\"t\":true,\"plan\":\"trial\",\"gone\":null,\"arr\":[1,null,{\"a\":[]},\"s\"],"
                 "\"m\":{\"x\":{\"y\":{\"z\":0.25}},\"e\":{}},"
                 "\"a_long_trait_name_beyond_the_cache_limit\":\"v\"}}");
    tu_track(&r, "u1", "Check", "2024-01-01T00:00:01Z", NULL);
    tu_event(&r, "{\"type\":\"identify\",\"userId\":\"u1\",\"timestamp\":\"2024-01-01T00:00:02Z\",\"messageId\":\"i2\","
                 "\"traits\":{\"n\":7,\"t\":null}}");
    tu_track(&r, "u1", "Check", "2024-01-01T00:00:03Z", NULL);
    EXPECT_NACTIONS(&r, 4);
    const char *traits = "{s:a_long_trait_name_beyond_the_cache_limit=s:v,"
                         "s:arr=[i:1=i:1,i:3={s:a=[]},i:4=s:s],s:big=f:1.844674407371e+19,s:f=f:2.0,s:g=f:1.5e+300,"
                         "%ss:m={s:e={},s:x={s:y={s:z=f:0.25}}},s:n=i:7,s:neg=i:-3,s:plan=%s%s}";
    const char *set = "s:list=[i:1=i:1,i:2=f:2.5,i:3=s:x],";
    const char *want[4][3] = {
        {"", "s:trial", ",s:t=b:true"},
        {set, "b:false,s:ratio=f:0.5,s:seen=i:1", ",s:t=b:true"},
        {set, "b:false,s:ratio=f:0.5,s:seen=i:1", ""},
        {set, "b:false,s:ratio=f:0.5,s:seen=i:2", ""},
    };
    for (int i = 0; i < 4; i++) {
        char w[1024];
        int n = snprintf(w, sizeof w, "\"payload\":\"");
        snprintf(w + n, sizeof w - (size_t)n, traits, want[i][0], want[i][1], want[i][2]);
        if (!strstr(r.actions[i], w))
            fail_msg("action %d: %s\nwanted %s", i, r.actions[i], w);
    }
    tu_free(&r);
}

/* Triggers are found by event type and name; an event name over the index's limit
 * (type, NUL and name within 512 bytes) matches no named trigger, as it always has. */
static void test_trigger_index_names(void **state)
{
    (void)state;
    char lua[2048], name[700];
    memset(name, 'n', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    name[505] = '\0'; /* "track" NUL and 505 bytes: 511, found */
    snprintf(lua, sizeof lua,
             HDR "j.on(\"%s\", function(ctx) ctx:send(\"team\", \"fits\") end)\n"
                 "j.on(\"%sxx\", function(ctx) ctx:send(\"team\", \"too long\") end)\n"
                 "j.on(\"Same\", function(ctx) ctx:send(\"team\", \"track\") end)\n"
                 "j.page(\"Same\", function(ctx) ctx:send(\"team\", \"page\") end)\n",
             name, name);
    tu_run r;
    tu_start(&r, lua);
    tu_track(&r, "u1", name, "2024-01-01T00:00:00Z", NULL);
    name[505] = 'n';
    name[507] = '\0';
    tu_track(&r, "u1", name, "2024-01-01T00:00:01Z", NULL);
    tu_track(&r, "u1", "Same", "2024-01-01T00:00:02Z", NULL);
    tu_event(&r, "{\"type\":\"page\",\"userId\":\"u1\",\"name\":\"Same\",\"timestamp\":\"2024-01-01T00:00:03Z\","
                 "\"messageId\":\"p1\"}");
    EXPECT_NACTIONS(&r, 3);
    assert_non_null(strstr(r.actions[0], "\"payload\":\"fits\""));
    assert_non_null(strstr(r.actions[1], "\"payload\":\"track\""));
    assert_non_null(strstr(r.actions[2], "\"payload\":\"page\""));
    tu_free(&r);
}

static void test_transitions_only_for_that_user(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r, onboarding_src);
    tu_track(&r, "u1", "Signed Up", "2024-01-01T00:00:00Z", NULL);
    tu_track(&r, "u2", "Signed Up", "2024-01-01T00:01:00Z", NULL);
    tu_track(&r, "u2", "Project Created", "2024-01-01T00:02:00Z", NULL);
    tu_track(&r, "u3", "Project Created", "2024-01-01T00:03:00Z", NULL); /* not in the journey */
    EXPECT_COUNT(&r, 2, "\"tpl\":\"welcome\"");
    EXPECT_COUNT(&r, 1, "\"user\":\"u2\"", "\"tpl\":\"congrats\"");
    EXPECT_COUNT(&r, 0, "\"user\":\"u1\"", "congrats");
    EXPECT_COUNT(&r, 0, "\"user\":\"u3\"");
    assert_int_equal(stage_count(&r, "onb", "new", C_NOW), 1);
    assert_int_equal(stage_count(&r, "onb", "active", C_NOW), 1);
    assert_int_equal(stage_count(&r, "onb", "new", C_MOVED_ON), 1);
    tu_free(&r);
}

static void test_enter_hook_go_chain(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r, HDR "j.journey \"chain\" {\n"
                     "  entry = j.on(\"Start\"),\n"
                     "  j.stage \"a\" {\n"
                     "    enter = function(ctx) ctx:send(\"email\", { at = \"a\" }); ctx:go \"b\" end,\n"
                     "    j.after(\"1h\", function(ctx) ctx:send(\"email\", { at = \"a-timer\" }) end),\n"
                     "    j.on(\"Poke\", function(ctx) ctx:send(\"email\", { poke = \"a\" }) end),\n"
                     "  },\n"
                     "  j.stage \"b\" {\n"
                     "    enter = function(ctx) ctx:send(\"email\", { at = \"b\" }); ctx:go \"c\" end,\n"
                     "    j.on(\"Poke\", function(ctx) ctx:send(\"email\", { poke = \"b\" }) end),\n"
                     "  },\n"
                     "  j.stage \"c\" {\n"
                     "    enter = function(ctx) ctx:send(\"email\", { at = \"c\" }) end,\n"
                     "    j.on(\"Poke\", function(ctx) ctx:send(\"email\", { poke = \"c\" }) end),\n"
                     "  },\n"
                     "}\n");
    tu_track(&r, "u1", "Start", "2024-01-01T00:00:00Z", NULL);
    EXPECT_NACTIONS(&r, 3);
    EXPECT_ACTION(&r, 0, "\"stage\":\"a\"", "\"at\":\"a\"");
    EXPECT_ACTION(&r, 1, "\"stage\":\"b\"", "\"at\":\"b\"");
    EXPECT_ACTION(&r, 2, "\"stage\":\"c\"", "\"at\":\"c\"");
    tu_track(&r, "u1", "Poke", "2024-01-01T00:10:00Z", NULL);
    EXPECT_NACTIONS(&r, 4);
    EXPECT_ACTION(&r, 3, "\"stage\":\"c\"", "\"poke\":\"c\"");
    /* stage a's timer belongs to an entry the person left: dropped, never fired */
    tu_advance(&r, "2024-01-02T00:00:00Z");
    EXPECT_COUNT(&r, 0, "a-timer");
    EXPECT_STAT(&r, "timers_fired", 0);
    EXPECT_STAT(&r, "timers_dropped", 1);
    assert_int_equal(stage_count(&r, "chain", "a", C_MOVED_ON), 1);
    assert_int_equal(stage_count(&r, "chain", "b", C_MOVED_ON), 1);
    assert_int_equal(stage_count(&r, "chain", "c", C_NOW), 1);
    assert_int_equal(stage_count(&r, "chain", "a", C_NOW), 0);
    tu_free(&r);
}

static void test_endless_go_chain_is_stopped(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r, HDR "j.journey \"loop\" {\n"
                     "  entry = j.on(\"Start\"),\n"
                     "  j.stage \"p\" { enter = function(ctx) ctx:go \"q\" end },\n"
                     "  j.stage \"q\" { enter = function(ctx) ctx:go \"p\" end },\n"
                     "}\n"
                     "j.on(\"Next\", function(ctx) ctx:send(\"email\", \"next\") end)\n");
    tu_track(&r, "u1", "Start", "2024-01-01T00:00:00Z", NULL);
    assert_true(r.nlogs >= 1);
    EXPECT_LOGS(&r, 1, "error: ", "loop");
    tu_track(&r, "u1", "Next", "2024-01-01T00:01:00Z", NULL);
    EXPECT_COUNT(&r, 1, "\"payload\":\"next\"");
    expect_journey(&r, "loop", 1, 1, 0, 0);
    tu_free(&r);
}

static const char *trial_src =
    HDR "j.journey \"trial\" {\n"
        "  entry = j.on(\"Signed Up\"),\n"
        "  goal = { j.on(\"Subscribed\", function(ctx) ctx:send(\"team\", { won = ctx.user.id, in_stage = ctx.stage }) "
        "end), j.on(\"Done\") },\n"
        "  exit = { j.on(\"Deleted\", function(ctx) ctx:send(\"team\", { bye = ctx.user.id }) end), j.on(\"Done\", { "
        "reason = \"cancel\" }) },\n"
        "  j.stage \"s1\" {\n"
        "    j.on(\"Next\"):go \"s2\",\n"
        "    j.on(\"Done\", function(ctx) ctx:send(\"email\", \"transition-ran\") end),\n"
        "  },\n"
        "  j.stage \"s2\" {\n"
        "    j.on(\"Subscribed\", function(ctx) ctx:send(\"email\", \"transition-ran\") end),\n"
        "  },\n"
        "}\n";

static void test_goals_and_exits(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r, trial_src);
    const char *users[] = {"u1", "u2", "u3", "u4", "u5"};
    for (int i = 0; i < 5; i++)
        tu_track(&r, users[i], "Signed Up", "2024-01-01T00:00:00Z", NULL);
    tu_track(&r, "u1", "Next", "2024-01-01T01:00:00Z", NULL);
    tu_track(&r, "u1", "Subscribed", "2024-01-01T02:00:00Z", NULL);                  /* goal (beats s2's transition) */
    tu_track(&r, "u2", "Deleted", "2024-01-01T02:00:00Z", NULL);                     /* exit */
    tu_track(&r, "u3", "Done", "2024-01-01T02:00:00Z", "{\"reason\":\"cancel\"}");   /* exit beats goal */
    tu_track(&r, "u4", "Done", "2024-01-01T02:00:00Z", "{\"reason\":\"finished\"}"); /* goal beats transition */
    EXPECT_COUNT(&r, 1, "\"won\":\"u1\"", "\"in_stage\":\"s2\"", "\"stage\":\"s2\"", "\"journey\":\"trial\"");
    EXPECT_COUNT(&r, 1, "\"bye\":\"u2\"");
    EXPECT_COUNT(&r, 0, "transition-ran");
    expect_journey(&r, "trial", 5, 1, 2, 2);
    unsigned long long s1[6], s2[6];
    stage_counts(&r, "trial", "s1", s1);
    stage_counts(&r, "trial", "s2", s2);
    assert_int_equal(s1[C_ENTERED], 5);
    assert_int_equal(s1[C_NOW], 1);
    assert_int_equal(s1[C_MOVED_ON], 1);
    assert_int_equal(s1[C_CONVERTED], 1);
    assert_int_equal(s1[C_EXITED], 2);
    assert_int_equal(s2[C_ENTERED], 1);
    assert_int_equal(s2[C_CONVERTED], 1);
    /* left people do nothing more; "never" keeps them out */
    size_t before = r.nactions;
    tu_track(&r, "u1", "Subscribed", "2024-01-01T03:00:00Z", NULL);
    tu_track(&r, "u2", "Signed Up", "2024-01-01T03:00:00Z", NULL);
    tu_track(&r, "u3", "Next", "2024-01-01T03:00:00Z", NULL);
    EXPECT_NACTIONS(&r, before);
    expect_journey(&r, "trial", 5, 1, 2, 2);
    /* the remaining person still moves */
    tu_track(&r, "u5", "Done", "2024-01-01T04:00:00Z", "{}");
    expect_journey(&r, "trial", 5, 0, 3, 2);
    tu_free(&r);
}

static void test_one_trigger_per_instance_per_event(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r,
             HDR "j.journey \"steps\" {\n"
                 "  entry = j.on(\"Start\"),\n"
                 "  j.stage \"a\" {\n"
                 "    j.on(\"Step\", { size = \"big\" }, function(ctx) ctx:send(\"email\", \"a-big\") end):go \"c\",\n"
                 "    j.on(\"Step\", function(ctx) ctx:send(\"email\", \"a-any\") end):go \"b\",\n"
                 "    j.on(\"Step\", function(ctx) ctx:send(\"email\", \"a-third\") end),\n"
                 "    j.on(\"Start\", function(ctx) ctx:send(\"email\", \"a-start\") end),\n"
                 "  },\n"
                 "  j.stage \"b\" { j.on(\"Step\", function(ctx) ctx:send(\"email\", \"b-step\") end):go \"c\" },\n"
                 "  j.stage \"c\" { enter = function(ctx) ctx:send(\"email\", \"in-c\") end },\n"
                 "}\n");
    /* the entering event does not also fire the new stage's transition */
    tu_track(&r, "u1", "Start", "2024-01-01T00:00:00Z", NULL);
    EXPECT_NACTIONS(&r, 0);
    tu_track(&r, "u1", "Start", "2024-01-01T00:01:00Z", NULL);
    EXPECT_COUNT(&r, 1, "a-start");
    /* first matching transition only, and only one step per event */
    tu_track(&r, "u1", "Step", "2024-01-01T00:02:00Z", "{\"size\":\"small\"}");
    EXPECT_COUNT(&r, 1, "a-any", "\"stage\":\"a\"");
    EXPECT_COUNT(&r, 0, "a-third");
    EXPECT_COUNT(&r, 0, "b-step");
    tu_track(&r, "u1", "Step", "2024-01-01T00:03:00Z", NULL);
    EXPECT_COUNT(&r, 1, "b-step");
    EXPECT_COUNT(&r, 1, "in-c");
    /* another person: the where on the first trigger picks it */
    tu_track(&r, "u2", "Start", "2024-01-01T00:04:00Z", NULL);
    tu_track(&r, "u2", "Step", "2024-01-01T00:05:00Z", "{\"size\":\"big\"}");
    EXPECT_COUNT(&r, 1, "\"user\":\"u2\"", "a-big");
    EXPECT_COUNT(&r, 0, "\"user\":\"u2\"", "a-any");
    EXPECT_COUNT(&r, 1, "\"user\":\"u2\"", "in-c");
    tu_free(&r);
}

static void test_ctx_go_and_exit_override_trigger(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r, HDR "j.journey \"g\" {\n"
                     "  entry = j.on(\"Start\"),\n"
                     "  j.stage \"a\" {\n"
                     "    j.on(\"Jump\", function(ctx) ctx:go \"c\" end):go \"b\",\n"
                     "    j.on(\"Quit\", function(ctx) ctx:exit() end):go \"b\",\n"
                     "    j.on(\"Hop\", function(ctx) ctx:send(\"email\", \"hop\") end):go \"b\",\n"
                     "    j.on(\"Move\", function(ctx) ctx:go \"c\" end),\n"
                     "    j.after(\"1h\", function(ctx) ctx:exit() end):go \"b\",\n"
                     "    j.on(\"Bail\"):go \"d\",\n"
                     "  },\n"
                     "  j.stage \"b\" { enter = function(ctx) ctx:send(\"email\", \"in-b\") end },\n"
                     "  j.stage \"c\" { enter = function(ctx) ctx:send(\"email\", \"in-c\") end },\n"
                     "  j.stage \"d\" { enter = function(ctx) ctx:send(\"email\", \"in-d\"); ctx:exit() end,\n"
                     "    j.after(\"1m\", function(ctx) ctx:send(\"email\", \"d-timer\") end) },\n"
                     "}\n"
                     "j.journey \"g2\" {\n"
                     "  entry = j.on(\"Start2\", function(ctx) ctx:go \"y\" end),\n"
                     "  j.stage \"x\" { enter = function(ctx) ctx:send(\"email\", \"in-x\") end },\n"
                     "  j.stage \"y\" { enter = function(ctx) ctx:send(\"email\", { y = ctx.stage }) end },\n"
                     "}\n"
                     "j.journey \"g3\" {\n"
                     "  entry = j.on(\"Start3\"):go \"late\",\n"
                     "  j.stage \"first\" { enter = function(ctx) ctx:send(\"email\", \"in-first\") end },\n"
                     "  j.stage \"late\" { enter = function(ctx) ctx:send(\"email\", { g3 = ctx.stage }) end },\n"
                     "}\n");
    const char *users[] = {"u1", "u2", "u3", "u4", "u5"};
    for (int i = 0; i < 5; i++)
        tu_track(&r, users[i], "Start", "2024-01-01T00:00:00Z", NULL);
    tu_track(&r, "u1", "Jump", "2024-01-01T00:10:00Z", NULL);
    tu_track(&r, "u2", "Quit", "2024-01-01T00:10:00Z", NULL);
    tu_track(&r, "u3", "Hop", "2024-01-01T00:10:00Z", NULL);
    tu_track(&r, "u4", "Move", "2024-01-01T00:10:00Z", NULL);
    tu_track(&r, "u6", "Start", "2024-01-01T00:11:00Z", NULL);
    tu_track(&r, "u6", "Bail", "2024-01-01T00:12:00Z", NULL); /* d's enter hook exits */
    tu_advance(&r, "2024-01-01T02:00:00Z");                   /* u5: the timer's ctx:exit beats its :go */
    EXPECT_COUNT(&r, 1, "\"user\":\"u1\"", "in-c");
    EXPECT_COUNT(&r, 0, "\"user\":\"u1\"", "in-b");
    EXPECT_COUNT(&r, 0, "\"user\":\"u2\"");
    EXPECT_COUNT(&r, 1, "\"user\":\"u3\"", "hop");
    EXPECT_COUNT(&r, 1, "\"user\":\"u3\"", "in-b");
    EXPECT_COUNT(&r, 1, "\"user\":\"u4\"", "in-c");
    EXPECT_COUNT(&r, 0, "\"user\":\"u5\"");
    EXPECT_COUNT(&r, 1, "\"user\":\"u6\"", "in-d", "\"stage\":\"d\"");
    EXPECT_COUNT(&r, 0, "d-timer");
    expect_journey(&r, "g", 6, 3, 0, 3);
    assert_int_equal(stage_count(&r, "g", "b", C_ENTERED), 1);
    assert_int_equal(stage_count(&r, "g", "c", C_ENTERED), 2);
    assert_int_equal(stage_count(&r, "g", "d", C_EXITED), 1);
    /* an entry hook's ctx:go and an entry's :go pick the first stage */
    tu_track(&r, "u7", "Start2", "2024-01-01T03:00:00Z", NULL);
    tu_track(&r, "u7", "Start3", "2024-01-01T03:00:00Z", NULL);
    EXPECT_COUNT(&r, 1, "\"user\":\"u7\"", "\"y\":\"y\"", "\"stage\":\"y\"");
    EXPECT_COUNT(&r, 1, "\"user\":\"u7\"", "\"g3\":\"late\"");
    EXPECT_COUNT(&r, 0, "in-x");
    EXPECT_COUNT(&r, 0, "in-first");
    assert_int_equal(stage_count(&r, "g2", "x", C_ENTERED), 0);
    assert_int_equal(stage_count(&r, "g2", "y", C_NOW), 1);
    tu_free(&r);
}

/* ---------------------------------------------------------------- reentry */

typedef struct reentry_case {
    const char *reentry;   /* Lua expression */
    const char *events[8]; /* "Start|2024-..." or "Stop|..." */
    int entered;
    int active;
} reentry_case;

static void test_reentry(void **state)
{
    (void)state;
    static const reentry_case cases[] = {
        {"nil", {"Start|2024-01-01T00:00:00Z", "Stop|2024-01-02T00:00:00Z", "Start|2024-03-01T00:00:00Z"}, 1, 0},
        {"\"never\"", {"Start|2024-01-01T00:00:00Z", "Stop|2024-01-02T00:00:00Z", "Start|2025-01-01T00:00:00Z"}, 1, 0},
        {"\"always\"",
         {"Start|2024-01-01T00:00:00Z", "Start|2024-01-01T01:00:00Z", "Stop|2024-01-02T00:00:00Z",
          "Start|2024-01-02T00:00:01Z"},
         2,
         1},
        {"\"always\"",
         {"Start|2024-01-01T00:00:00Z", "Stop|2024-01-02T00:00:00Z", "Start|2024-01-03T00:00:00Z",
          "Stop|2024-01-04T00:00:00Z", "Start|2024-01-05T00:00:00Z"},
         3,
         1},
        /* cooldown from the previous entry (not from leaving) */
        {"\"30d\"", {"Start|2024-01-01T00:00:00Z", "Stop|2024-01-21T00:00:00Z", "Start|2024-01-30T00:00:00Z"}, 1, 0},
        {"\"30d\"",
         {"Start|2024-01-01T00:00:00Z", "Stop|2024-01-21T00:00:00Z", "Start|2024-01-30T00:00:00Z",
          "Start|2024-02-01T00:00:00Z"},
         2,
         1},
        {"\"30d\"",
         {"Start|2024-01-01T00:00:00Z", "Stop|2024-01-21T00:00:00Z", "Start|2024-02-01T00:00:00Z",
          "Stop|2024-02-02T00:00:00Z", "Start|2024-02-10T00:00:00Z", "Start|2024-03-03T00:00:00Z"},
         3,
         1},
        /* a cooldown does not start a second instance while one is active */
        {"\"1h\"", {"Start|2024-01-01T00:00:00Z", "Start|2024-01-02T00:00:00Z"}, 1, 1},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char src[2048];
        snprintf(src, sizeof src,
                 HDR "j.journey \"r\" {\n"
                     "  entry = j.on(\"Start\"),\n"
                     "  exit = j.on(\"Stop\"),\n"
                     "  reentry = %s,\n"
                     "  j.stage \"in\" { enter = function(ctx) ctx:send(\"email\", { entered = ctx.now }) end },\n"
                     "}\n",
                 cases[c].reentry);
        tu_run r;
        tu_start(&r, src);
        for (int i = 0; i < 8 && cases[c].events[i]; i++) {
            char name[16];
            const char *bar = strchr(cases[c].events[i], '|');
            snprintf(name, sizeof name, "%.*s", (int)(bar - cases[c].events[i]), cases[c].events[i]);
            tu_track(&r, "u1", name, bar + 1, NULL);
        }
        if (r.nactions != (size_t)cases[c].entered) {
            tu_dump(&r);
            fail_msg("case %zu (reentry %s): expected %d entries, got %zu", c, cases[c].reentry, cases[c].entered,
                     r.nactions);
        }
        expect_journey(&r, "r", cases[c].entered, cases[c].active, 0, cases[c].entered - cases[c].active);
        tu_free(&r);
    }
}

static void test_reentry_not_on_the_leaving_event(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r, HDR "j.journey \"p\" {\n"
                     "  entry = j.on(\"Ping\"),\n"
                     "  exit = j.on(\"Ping\", { last = true }),\n"
                     "  reentry = \"always\",\n"
                     "  j.stage \"in\" { enter = function(ctx) ctx:send(\"email\", \"entered\") end },\n"
                     "}\n"
                     "j.journey \"q\" {\n"
                     "  entry = j.on(\"Pong\"),\n"
                     "  goal = j.on(\"Pong\", { win = true }),\n"
                     "  reentry = \"1s\",\n"
                     "  j.stage \"in\" { enter = function(ctx) ctx:send(\"email\", \"q-entered\") end },\n"
                     "}\n");
    tu_track(&r, "u1", "Ping", "2024-01-01T00:00:00Z", NULL);
    tu_track(&r, "u1", "Ping", "2024-01-01T01:00:00Z", "{\"last\":true}");
    EXPECT_COUNT(&r, 1, "entered");
    expect_journey(&r, "p", 1, 0, 0, 1);
    tu_track(&r, "u1", "Ping", "2024-01-01T02:00:00Z", "{\"last\":false}");
    EXPECT_COUNT(&r, 2, "\"payload\":\"entered\"");
    expect_journey(&r, "p", 2, 1, 0, 1);

    tu_track(&r, "u1", "Pong", "2024-01-01T03:00:00Z", NULL);
    tu_track(&r, "u1", "Pong", "2024-01-01T04:00:00Z", "{\"win\":true}");
    expect_journey(&r, "q", 1, 0, 1, 0);
    tu_track(&r, "u1", "Pong", "2024-01-01T05:00:00Z", NULL);
    expect_journey(&r, "q", 2, 1, 1, 0);
    tu_free(&r);
}

/* ---------------------------------------------------------------- keyed journeys */

static const char *cart_src =
    HDR "j.journey \"cart\" {\n"
        "  key = \"cart_id\",\n"
        "  entry = j.on(\"Cart Created\"),\n"
        "  goal = j.on(\"Checkout\"),\n"
        "  exit = j.on(\"Account Deleted\"),\n"
        "  j.stage \"open\" {\n"
        "    enter = function(ctx) ctx:send(\"email\", { open = ctx.instance }) end,\n"
        "    j.on(\"Item Added\", function(ctx) ctx:send(\"email\", { item = ctx.instance, sku = "
        "ctx.event.properties.sku }) end),\n"
        "    j.after(\"1h\", function(ctx) ctx:send(\"email\", { remind = ctx.instance }) end):go \"reminded\",\n"
        "  },\n"
        "  j.stage \"reminded\" {\n"
        "    j.after(\"1d\", function(ctx) ctx:send(\"email\", { last = ctx.instance }) end),\n"
        "  },\n"
        "}\n";

static void test_keyed_instances_are_independent(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r, cart_src);
    tu_track(&r, "u1", "Cart Created", "2024-01-01T00:00:00Z", "{\"cart_id\":\"c1\"}");
    tu_track(&r, "u1", "Cart Created", "2024-01-01T00:30:00Z", "{\"cart_id\":\"c2\"}");
    tu_track(&r, "u1", "Cart Created", "2024-01-01T00:31:00Z", "{\"cart_id\":\"c2\"}"); /* already open */
    EXPECT_COUNT(&r, 1, "\"open\":\"c1\"");
    EXPECT_COUNT(&r, 1, "\"open\":\"c2\"");
    /* with the key: that cart only */
    tu_track(&r, "u1", "Item Added", "2024-01-01T00:40:00Z", "{\"cart_id\":\"c1\",\"sku\":\"B\"}");
    EXPECT_COUNT(&r, 1, "\"item\":\"c1\"", "\"sku\":\"B\"");
    EXPECT_COUNT(&r, 0, "\"item\":\"c2\"");
    /* without the key: every cart of the person */
    tu_track(&r, "u1", "Item Added", "2024-01-01T00:45:00Z", "{\"sku\":\"A\"}");
    EXPECT_COUNT(&r, 1, "\"item\":\"c1\"", "\"sku\":\"A\"");
    EXPECT_COUNT(&r, 1, "\"item\":\"c2\"", "\"sku\":\"A\"");
    tu_track(&r, "u1", "Checkout", "2024-01-01T00:50:00Z", "{\"cart_id\":\"c1\"}");
    expect_journey(&r, "cart", 2, 1, 1, 0);
    /* c1's reminder is dropped; c2's fires 1h after its own entry */
    tu_advance(&r, "2024-01-01T02:00:00Z");
    EXPECT_COUNT(&r, 0, "\"remind\":\"c1\"");
    EXPECT_COUNT(&r, 1, "\"remind\":\"c2\"", "\"time\":\"2024-01-01T01:30:00.000Z\"", "\"stage\":\"open\"");
    /* another person's cart with the same id is another instance */
    tu_track(&r, "u2", "Cart Created", "2024-01-01T02:10:00Z", "{\"cart_id\":\"c1\"}");
    EXPECT_COUNT(&r, 1, "\"user\":\"u2\"", "\"open\":\"c1\"");
    expect_journey(&r, "cart", 3, 2, 1, 0);
    tu_free(&r);
}

static void test_keyed_event_without_key_exits_all(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r, cart_src);
    tu_track(&r, "u1", "Cart Created", "2024-01-01T00:00:00Z", "{\"cart_id\":\"c1\"}");
    tu_track(&r, "u1", "Cart Created", "2024-01-01T00:10:00Z", "{\"cart_id\":\"c2\"}");
    tu_track(&r, "u1", "Cart Created", "2024-01-01T00:20:00Z", "{\"cart_id\":\"c3\"}");
    tu_track(&r, "u2", "Cart Created", "2024-01-01T00:20:00Z", "{\"cart_id\":\"c9\"}");
    tu_track(&r, "u1", "Checkout", "2024-01-01T00:30:00Z", "{\"cart_id\":\"c3\"}");
    tu_track(&r, "u1", "Account Deleted", "2024-01-01T00:40:00Z", NULL);
    expect_journey(&r, "cart", 4, 1, 1, 2);
    /* an event without the key starts nothing */
    tu_track(&r, "u1", "Cart Created", "2024-01-01T00:41:00Z", "{\"sku\":\"x\"}");
    expect_journey(&r, "cart", 4, 1, 1, 2);
    tu_advance(&r, "2024-01-03T00:00:00Z");
    EXPECT_COUNT(&r, 0, "\"user\":\"u1\"", "remind");
    EXPECT_COUNT(&r, 1, "\"user\":\"u2\"", "\"remind\":\"c9\"");
    EXPECT_COUNT(&r, 1, "\"user\":\"u2\"", "\"last\":\"c9\"", "\"time\":\"2024-01-02T01:20:00.000Z\"");
    EXPECT_STAT(&r, "timers_dropped", 3);
    tu_free(&r);
}

static void test_keyed_reentry_is_per_key(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r, cart_src);
    tu_track(&r, "u1", "Cart Created", "2024-01-01T00:00:00Z", "{\"cart_id\":\"c1\"}");
    tu_track(&r, "u1", "Checkout", "2024-01-01T00:10:00Z", "{\"cart_id\":\"c1\"}");
    tu_track(&r, "u1", "Cart Created", "2024-01-01T00:20:00Z", "{\"cart_id\":\"c1\"}"); /* never, for c1 */
    tu_track(&r, "u1", "Cart Created", "2024-01-01T00:30:00Z", "{\"cart_id\":\"c2\"}");
    tu_track(&r, "u1", "Cart Created", "2024-01-01T00:40:00Z", "{\"cart_id\":42}"); /* a number key */
    EXPECT_COUNT(&r, 1, "\"open\":\"c1\"");
    EXPECT_COUNT(&r, 1, "\"open\":\"c2\"");
    EXPECT_COUNT(&r, 1, "\"open\":\"42\"");
    tu_track(&r, "u1", "Item Added", "2024-01-01T00:45:00Z", "{\"cart_id\":42,\"sku\":\"n\"}");
    EXPECT_COUNT(&r, 1, "\"item\":\"42\"");
    EXPECT_COUNT(&r, 0, "\"item\":\"c2\"");
    expect_journey(&r, "cart", 3, 2, 1, 0);
    tu_free(&r);
}

/* ---------------------------------------------------------------- timers */

static const char *timer_src = HDR
    "j.journey \"trial\" {\n"
    "  entry = j.on(\"Signed Up\"),\n"
    "  j.stage \"signed_up\" {\n"
    "    j.on(\"Project Created\"):go \"activated\",\n"
    "    j.after(\"2d\", function(ctx) ctx:send(\"email\", { tpl = \"nudge\", now = ctx.now, t = ctx.time }) end),\n"
    "    j.after(\"5d\", function(ctx) ctx:send(\"team\", { tpl = \"stalled\" }) end):go \"dormant\",\n"
    "  },\n"
    "  j.stage \"activated\" {\n"
    "    j.after(\"7d\", function(ctx) ctx:send(\"email\", { tpl = \"upgrade\" }) end),\n"
    "  },\n"
    "  j.stage \"dormant\" {\n"
    "    enter = function(ctx) ctx:send(\"email\", { tpl = \"dormant\" }) end,\n"
    "    j.after(\"9d\"):exit(),\n"
    "  },\n"
    "}\n";

static void test_timers_fire_at_exact_times(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r, timer_src);
    tu_track(&r, "u1", "Signed Up", "2024-01-01T10:00:00Z", NULL);
    tu_track(&r, "u2", "Signed Up", "2024-01-01T12:00:00Z", NULL);
    tu_track(&r, "u2", "Project Created", "2024-01-02T00:00:00Z", NULL);
    EXPECT_NACTIONS(&r, 0);
    tu_advance(&r, "2024-02-01T00:00:00Z");
    assert_int_equal(jd_engine_now(r.e), ms_of("2024-02-01T00:00:00Z"));
    EXPECT_NACTIONS(&r, 4);
    char t[64];
    snprintf(t, sizeof t, "\"t\":%lld", (long long)ms_of("2024-01-03T10:00:00Z"));
    EXPECT_ACTION(&r, 0, "\"user\":\"u1\"", "\"time\":\"2024-01-03T10:00:00.000Z\"", "\"stage\":\"signed_up\"",
                  "\"tpl\":\"nudge\"", "\"now\":\"2024-01-03T10:00:00.000Z\"", t);
    EXPECT_ACTION(&r, 1, "\"user\":\"u1\"", "\"time\":\"2024-01-06T10:00:00.000Z\"", "\"stage\":\"signed_up\"",
                  "\"channel\":\"team\"", "stalled");
    EXPECT_ACTION(&r, 2, "\"user\":\"u1\"", "\"time\":\"2024-01-06T10:00:00.000Z\"", "\"stage\":\"dormant\"",
                  "\"tpl\":\"dormant\"");
    EXPECT_ACTION(&r, 3, "\"user\":\"u2\"", "\"time\":\"2024-01-09T00:00:00.000Z\"", "\"stage\":\"activated\"",
                  "upgrade");
    EXPECT_STAT(&r, "timers_fired", 4);   /* u1: 2d, 5d, 9d; u2: 7d */
    EXPECT_STAT(&r, "timers_dropped", 2); /* u2's 2d and 5d */
    expect_journey(&r, "trial", 2, 1, 0, 1);
    assert_int_equal(stage_count(&r, "trial", "signed_up", C_TIMED_OUT), 1);
    assert_int_equal(stage_count(&r, "trial", "signed_up", C_MOVED_ON), 1);
    assert_int_equal(stage_count(&r, "trial", "dormant", C_EXITED), 1);
    tu_free(&r);
}

static void test_advance_fires_due_at_or_before(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r, timer_src);
    tu_track(&r, "u1", "Signed Up", "2024-01-01T10:00:00Z", NULL);
    tu_advance(&r, "2024-01-03T09:59:59.999Z");
    EXPECT_NACTIONS(&r, 0);
    EXPECT_STAT(&r, "timers_fired", 0);
    tu_advance(&r, "2024-01-03T10:00:00Z");
    EXPECT_NACTIONS(&r, 1);
    EXPECT_ACTION(&r, 0, "nudge");
    /* advancing backwards does nothing */
    tu_advance(&r, "2024-01-02T00:00:00Z");
    assert_int_equal(jd_engine_now(r.e), ms_of("2024-01-03T10:00:00Z"));
    EXPECT_NACTIONS(&r, 1);
    tu_free(&r);
}

static void test_timers_fire_before_a_later_event(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r, HDR "j.journey \"t\" {\n"
                     "  entry = j.on(\"Start\"),\n"
                     "  j.stage \"s\" {\n"
                     "    j.after(\"1h\", function(ctx) ctx:send(\"email\", \"timeout\") end):go \"late\",\n"
                     "    j.on(\"Click\"):go \"clicked\",\n"
                     "  },\n"
                     "  j.stage \"clicked\" { enter = function(ctx) ctx:send(\"email\", \"clicked\") end },\n"
                     "  j.stage \"late\" {\n"
                     "    j.on(\"Click\", function(ctx) ctx:send(\"email\", \"click-while-late\") end),\n"
                     "  },\n"
                     "}\n"
                     "j.on(\"Other\", function(ctx) ctx:send(\"team\", \"other\") end)\n");
    tu_track(&r, "u1", "Start", "2024-01-01T00:00:00Z", NULL);
    tu_track(&r, "u2", "Start", "2024-01-01T00:00:00Z", NULL);
    /* another person's event at 03:00 fires u1's and u2's timers (01:00) first */
    tu_track(&r, "u3", "Other", "2024-01-01T03:00:00Z", NULL);
    EXPECT_NACTIONS(&r, 3);
    EXPECT_ACTION(&r, 0, "\"user\":\"u1\"", "timeout", "\"time\":\"2024-01-01T01:00:00.000Z\"");
    EXPECT_ACTION(&r, 1, "\"user\":\"u2\"", "timeout", "\"time\":\"2024-01-01T01:00:00.000Z\"");
    EXPECT_ACTION(&r, 2, "\"user\":\"u3\"", "other", "\"time\":\"2024-01-01T03:00:00.000Z\"");

    /* a timer due exactly at an event's time fires before the event */
    tu_track(&r, "u4", "Start", "2024-01-01T04:00:00Z", NULL);
    tu_track(&r, "u4", "Click", "2024-01-01T05:00:00Z", NULL);
    EXPECT_NACTIONS(&r, 5);
    EXPECT_ACTION(&r, 3, "\"user\":\"u4\"", "timeout", "\"time\":\"2024-01-01T05:00:00.000Z\"");
    EXPECT_ACTION(&r, 4, "\"user\":\"u4\"", "click-while-late");
    EXPECT_COUNT(&r, 0, "\"payload\":\"clicked\"");
    /* a click a millisecond earlier wins */
    tu_track(&r, "u5", "Start", "2024-01-01T06:00:00Z", NULL);
    tu_track(&r, "u5", "Click", "2024-01-01T06:59:59.999Z", NULL);
    tu_advance(&r, "2024-01-02T00:00:00Z");
    EXPECT_COUNT(&r, 1, "\"user\":\"u5\"", "\"payload\":\"clicked\"");
    EXPECT_COUNT(&r, 0, "\"user\":\"u5\"", "timeout");
    tu_free(&r);
}

static void test_timer_ties_fire_in_scheduling_order(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r, HDR "j.journey \"tie\" {\n"
                     "  entry = j.on(\"Start\"),\n"
                     "  j.stage \"s\" {\n"
                     "    j.after(\"1h\", function(ctx) ctx:send(\"email\", { n = 1 }) end),\n"
                     "    j.after(\"60m\", function(ctx) ctx:send(\"email\", { n = 2 }) end),\n"
                     "    j.after(\"3600s\", function(ctx) ctx:send(\"email\", { n = 3 }) end),\n"
                     "  },\n"
                     "}\n"
                     "j.journey \"cut\" {\n"
                     "  entry = j.on(\"Start\"),\n"
                     "  j.stage \"s\" {\n"
                     "    j.after(\"2h\"):go \"t\",\n"
                     "    j.after(\"2h\", function(ctx) ctx:send(\"email\", \"cut-never\") end),\n"
                     "  },\n"
                     "  j.stage \"t\" { enter = function(ctx) ctx:send(\"email\", \"cut-t\") end },\n"
                     "}\n");
    tu_track(&r, "ua", "Start", "2024-01-01T00:00:00Z", NULL);
    tu_track(&r, "zb", "Start", "2024-01-01T00:00:00Z", NULL);
    tu_track(&r, "mc", "Start", "2024-01-01T00:00:00Z", NULL);
    tu_advance(&r, "2024-01-01T01:00:00Z");
    EXPECT_NACTIONS(&r, 9);
    const char *users[] = {"\"user\":\"ua\"", "\"user\":\"zb\"", "\"user\":\"mc\""};
    const char *ns[] = {"\"n\":1", "\"n\":2", "\"n\":3"};
    for (int u = 0; u < 3; u++)
        for (int n = 0; n < 3; n++)
            EXPECT_ACTION(&r, (size_t)(u * 3 + n), users[u], ns[n], "\"time\":\"2024-01-01T01:00:00.000Z\"");
    /* the second tied timer is dropped once the first moved the person on */
    tu_advance(&r, "2024-01-01T03:00:00Z");
    EXPECT_COUNT(&r, 3, "cut-t");
    EXPECT_COUNT(&r, 0, "cut-never");
    EXPECT_STAT(&r, "timers_dropped", 3);
    tu_free(&r);
}

static void test_timer_of_left_stage_never_fires(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r, HDR "j.journey \"lz\" {\n"
                     "  entry = j.on(\"Start\"),\n"
                     "  exit = j.on(\"Quit\"),\n"
                     "  reentry = \"always\",\n"
                     "  j.stage \"a\" {\n"
                     "    j.after(\"1d\", function(ctx) ctx:send(\"email\", { a1d = ctx.now }) end),\n"
                     "    j.on(\"Go\"):go \"b\",\n"
                     "  },\n"
                     "  j.stage \"b\" {\n"
                     "    j.on(\"Back\"):go \"a\",\n"
                     "  },\n"
                     "}\n");
    /* left the stage and came back: only the new entry's timer fires */
    tu_track(&r, "u1", "Start", "2024-01-01T00:00:00Z", NULL);
    tu_track(&r, "u1", "Go", "2024-01-01T01:00:00Z", NULL);
    tu_track(&r, "u1", "Back", "2024-01-01T02:00:00Z", NULL);
    /* left the journey and re-entered */
    tu_track(&r, "u2", "Start", "2024-01-01T00:00:00Z", NULL);
    tu_track(&r, "u2", "Quit", "2024-01-01T01:00:00Z", NULL);
    tu_track(&r, "u2", "Start", "2024-01-01T03:00:00Z", NULL);
    /* left for good */
    tu_track(&r, "u3", "Start", "2024-01-01T00:00:00Z", NULL);
    tu_track(&r, "u3", "Quit", "2024-01-01T01:00:00Z", NULL);
    tu_advance(&r, "2024-01-05T00:00:00Z");
    EXPECT_NACTIONS(&r, 2);
    EXPECT_COUNT(&r, 1, "\"user\":\"u1\"", "\"time\":\"2024-01-02T02:00:00.000Z\"");
    EXPECT_COUNT(&r, 1, "\"user\":\"u2\"", "\"time\":\"2024-01-02T03:00:00.000Z\"");
    EXPECT_STAT(&r, "timers_fired", 2);
    EXPECT_STAT(&r, "timers_dropped", 3);
    tu_free(&r);
}

static void test_after_with_function_stays(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r, HDR "j.journey \"st\" {\n"
                     "  entry = j.on(\"Start\"),\n"
                     "  j.stage \"a\" {\n"
                     "    j.after(\"1h\", function(ctx) ctx:send(\"email\", { stage = ctx.stage }) end),\n"
                     "    j.after(\"2h\", function(ctx) ctx:send(\"email\", \"second\") end),\n"
                     "    j.on(\"Poke\", function(ctx) ctx:send(\"email\", \"still-a\") end),\n"
                     "  },\n"
                     "}\n");
    tu_track(&r, "u1", "Start", "2024-01-01T00:00:00Z", NULL);
    tu_advance(&r, "2024-01-01T03:00:00Z");
    tu_track(&r, "u1", "Poke", "2024-01-01T04:00:00Z", NULL);
    EXPECT_NACTIONS(&r, 3);
    EXPECT_ACTION(&r, 0, "\"stage\":\"a\"", "\"time\":\"2024-01-01T01:00:00.000Z\"");
    EXPECT_ACTION(&r, 1, "second", "\"time\":\"2024-01-01T02:00:00.000Z\"");
    EXPECT_ACTION(&r, 2, "still-a");
    assert_int_equal(stage_count(&r, "st", "a", C_NOW), 1);
    assert_int_equal(stage_count(&r, "st", "a", C_TIMED_OUT), 0);
    tu_free(&r);
}

/* ---------------------------------------------------------------- late events */

static const char *late_src = HDR
    "j.journey \"late\" {\n"
    "  entry = j.on(\"Start\"),\n"
    "  j.stage \"a\" {\n"
    "    enter = function(ctx) ctx:send(\"email\", { stage = \"a\", now = ctx.now, ts = ctx.event.timestamp }) end,\n"
    "    j.after(\"1h\", function(ctx) ctx:send(\"email\", { timer = \"a1h\", now = ctx.now }) end),\n"
    "    j.after(\"2h\"):go \"b\",\n"
    "    j.on(\"Go\"):go \"b\",\n"
    "  },\n"
    "  j.stage \"b\" {\n"
    "    enter = function(ctx) ctx:send(\"email\", { stage = \"b\" }) end,\n"
    "    j.after(\"30m\", function(ctx) ctx:send(\"email\", { timer = \"b30m\" }) end),\n"
    "    j.after(\"3h\", function(ctx) ctx:send(\"email\", { timer = \"b3h\" }) end),\n"
    "  },\n"
    "}\n"
    "j.on(\"Tick\", function(ctx) ctx:send(\"team\", { tick = ctx.event.timestamp }) end)\n";

static void test_late_event_uses_its_own_timestamp(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r, late_src);
    tu_track(&r, "u9", "Tick", "2024-01-01T10:00:00Z", NULL);
    EXPECT_STAT(&r, "late", 0);
    tu_track(&r, "u1", "Start", "2024-01-01T07:00:00Z", NULL); /* late */
    EXPECT_STAT(&r, "late", 1);
    assert_int_equal(jd_engine_now(r.e), ms_of("2024-01-01T10:00:00Z"));
    /* entered a at 07:00: a1h (08:00), a2h -> b (09:00) and b30m (09:30) are due */
    EXPECT_NACTIONS(&r, 5);
    EXPECT_ACTION(&r, 1, "\"stage\":\"a\"", "\"ts\":\"2024-01-01T07:00:00.000Z\"",
                  "\"now\":\"2024-01-01T10:00:00.000Z\"", "\"time\":\"2024-01-01T10:00:00.000Z\"");
    EXPECT_ACTION(&r, 2, "\"timer\":\"a1h\"", "\"time\":\"2024-01-01T10:00:00.000Z\"");
    EXPECT_ACTION(&r, 3, "\"stage\":\"b\"", "\"time\":\"2024-01-01T10:00:00.000Z\"");
    EXPECT_ACTION(&r, 4, "\"timer\":\"b30m\"", "\"time\":\"2024-01-01T10:00:00.000Z\"");
    /* b was entered at 09:00 (the due time), so b3h is due at 12:00 */
    tu_advance(&r, "2024-01-01T11:59:59Z");
    EXPECT_NACTIONS(&r, 5);
    tu_advance(&r, "2024-01-01T12:00:00Z");
    EXPECT_NACTIONS(&r, 6);
    EXPECT_ACTION(&r, 5, "\"timer\":\"b3h\"", "\"time\":\"2024-01-01T12:00:00.000Z\"");
    EXPECT_STAT(&r, "late", 1);
    tu_free(&r);
}

static void test_late_events_in_arrival_order(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r, late_src);
    tu_track(&r, "u9", "Tick", "2024-01-01T10:00:00Z", NULL);
    /* Go arrives before Start although it happened later: it finds no instance */
    tu_track(&r, "u2", "Go", "2024-01-01T09:50:00Z", NULL);
    tu_track(&r, "u2", "Start", "2024-01-01T09:40:00Z", NULL);
    EXPECT_STAT(&r, "late", 2);
    EXPECT_COUNT(&r, 1, "\"user\":\"u2\"", "\"stage\":\"a\"");
    EXPECT_COUNT(&r, 0, "\"user\":\"u2\"", "\"stage\":\"b\"");
    assert_int_equal(stage_count(&r, "late", "a", C_NOW), 1);
    /* a later (not late) Go still moves */
    tu_track(&r, "u2", "Go", "2024-01-01T10:01:00Z", NULL);
    EXPECT_STAT(&r, "late", 2);
    EXPECT_COUNT(&r, 1, "\"user\":\"u2\"", "\"stage\":\"b\"", "\"time\":\"2024-01-01T10:01:00.000Z\"");
    /* the late entry's a1h (10:40) is dropped; b30m runs from 10:01 */
    tu_advance(&r, "2024-01-01T10:45:00Z");
    EXPECT_COUNT(&r, 0, "a1h");
    EXPECT_COUNT(&r, 1, "b30m", "\"time\":\"2024-01-01T10:31:00.000Z\"");
    EXPECT_STAT(&r, "timers_dropped", 1);
    /* the rule sees the late event's own timestamp, the action carries the clock */
    tu_track(&r, "u9", "Tick", "2024-01-01T01:00:00Z", NULL);
    EXPECT_COUNT(&r, 1, "\"tick\":\"2024-01-01T01:00:00.000Z\"", "\"time\":\"2024-01-01T10:45:00.000Z\"");
    tu_free(&r);
}

/* ---------------------------------------------------------------- hook errors */

static int line_of(const char *src, const char *marker)
{
    const char *p = strstr(src, marker);
    assert_non_null(p);
    int line = 1;
    for (const char *q = src; q < p; q++)
        line += *q == '\n';
    return line;
}

static const char *err_src =
    HDR "j.journey \"err\" {\n"
        "  entry = j.on(\"Start\"),\n"
        "  j.stage \"a\" {\n"
        "    enter = function(ctx)\n"
        "      ctx:send(\"email\", { before = \"error\" }); ctx:set(\"tainted\", true); ctx:score(100)\n"
        "      ctx:segment_add(\"bad\"); ctx:log(\"never logged\"); ctx:exit()\n"
        "      local x = nil\n"
        "      return x.field --@E1\n"
        "    end,\n"
        "    j.on(\"Go\", function(ctx) ctx:send(\"email\", \"go-hook\"); ctx:go \"c\"; error(\"go failed\") end):go "
        "\"b\", --@E2\n"
        "  },\n"
        "  j.stage \"b\" {\n"
        "    enter = function(ctx)\n"
        "      ctx:send(\"email\", { stage = \"b\", clean = ctx.user.traits.tainted == nil, score = ctx.user.score,\n"
        "        bad = ctx.user.segments.bad == true })\n"
        "    end,\n"
        "    j.after(\"1h\", function(ctx) ctx:send(\"email\", \"b-timer\"); ctx:send(\"nowhere\", {}) end):go \"c\", "
        "--@E3\n"
        "  },\n"
        "  j.stage \"c\" { enter = function(ctx) ctx:send(\"email\", \"in-c\") end },\n"
        "}\n"
        "j.on(\"Other\", function(ctx) ctx:send(\"team\", \"fine\") end)\n";

static void test_failing_hook_is_isolated(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r, err_src);
    char l1[32], l2[32], l3[32];
    snprintf(l1, sizeof l1, ":%d:", line_of(err_src, "--@E1"));
    snprintf(l2, sizeof l2, ":%d:", line_of(err_src, "--@E2"));
    snprintf(l3, sizeof l3, ":%d:", line_of(err_src, "--@E3"));

    tu_track(&r, "u1", "Start", "2024-01-01T00:00:00Z", NULL);
    EXPECT_NACTIONS(&r, 0);
    EXPECT_STAT(&r, "lua_errors", 1);
    EXPECT_LOGS(&r, 1, "error: lua error in err/a/enter", "u1", r.path, l1, "stack traceback");
    EXPECT_LOGS(&r, 0, "never logged");
    expect_journey(&r, "err", 1, 1, 0, 0);

    /* the Go hook fails: its ctx:go is ignored, the trigger's :go still happens; b's
     * hook sees no effect of a's */
    tu_track(&r, "u1", "Go", "2024-01-01T00:10:00Z", NULL);
    EXPECT_STAT(&r, "lua_errors", 2);
    EXPECT_LOGS(&r, 1, "error: lua error in err/a/", "Go", r.path, l2, "go failed", "stack traceback");
    EXPECT_COUNT(&r, 0, "go-hook");
    EXPECT_NACTIONS(&r, 1);
    EXPECT_ACTION(&r, 0, "\"stage\":\"b\"", "\"clean\":true", "\"score\":0", "\"bad\":false");

    /* a timer hook with an unknown channel: no action at all, but it still moves */
    tu_advance(&r, "2024-01-01T02:00:00Z");
    EXPECT_STAT(&r, "lua_errors", 3);
    EXPECT_LOGS(&r, 1, "error: lua error in err/b/", r.path, l3, "nowhere");
    EXPECT_COUNT(&r, 0, "b-timer");
    EXPECT_COUNT(&r, 1, "in-c", "\"time\":\"2024-01-01T01:10:00.000Z\"");

    /* the next event goes on normally */
    tu_track(&r, "u2", "Other", "2024-01-01T03:00:00Z", NULL);
    EXPECT_COUNT(&r, 1, "fine");
    EXPECT_STAT(&r, "lua_errors", 3);
    tu_free(&r);
}

static void test_failing_rule_and_entry_hook(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r,
             HDR "j.journey \"e\" {\n"
                 "  entry = j.on(\"Start\", function(ctx) ctx:send(\"email\", \"entry\"); error({}) end),\n"
                 "  j.stage \"s\" { enter = function(ctx) ctx:send(\"email\", \"entered-s\") end },\n"
                 "}\n"
                 "j.on(\"Start\", function(ctx) ctx:score(1); ctx:send(\"team\", \"rule-a\"); error(\"rule a\") end)\n"
                 "j.on(\"Start\", function(ctx) ctx:send(\"team\", { score = ctx.user.score }) end)\n");
    tu_track(&r, "u1", "Start", "2024-01-01T00:00:00Z", NULL);
    EXPECT_STAT(&r, "lua_errors", 2);
    EXPECT_COUNT(&r, 0, "\"payload\":\"entry\"");
    EXPECT_COUNT(&r, 1, "entered-s");
    EXPECT_COUNT(&r, 0, "rule-a");
    EXPECT_COUNT(&r, 1, "\"score\":0");
    EXPECT_LOGS(&r, 1, "error: lua error in e/entry", "u1");
    EXPECT_LOGS(&r, 1, "error: lua error in rule/", "rule a");
    expect_journey(&r, "e", 1, 1, 0, 0);
    tu_free(&r);
}

/* ---------------------------------------------------------------- when predicates */

static void test_when_predicates(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r, HDR "local calls = 0\n"
                     "j.on(\"Buy\", { when = function(ctx) return ctx.event.properties.amount > 100 end },\n"
                     "  function(ctx) ctx:send(\"email\", \"big\") end)\n"
                     "j.on(\"Buy\", function(ctx) ctx:send(\"email\", \"vip\") end):when(function(ctx)\n"
                     "  return ctx.user.traits.vip == true end)\n"
                     "j.on(\"Buy\", { currency = \"EUR\", when = function(ctx) calls = calls + 1; return true end },\n"
                     "  function(ctx) ctx:send(\"email\", \"eur\") end)\n"
                     "j.on(\"Report\", function(ctx) ctx:send(\"team\", { when_calls = calls }) end)\n"
                     "j.on(\"Sneaky\", { when = function(ctx) ctx:send(\"email\", \"from-when\"); return true end },\n"
                     "  function(ctx) ctx:send(\"email\", \"sneaky-ran\") end)\n"
                     "j.on(\"Sneaky\", function(ctx) ctx:send(\"email\", \"exit-ran\") end):when(function(ctx)\n"
                     "  ctx:exit(); return true end)\n"
                     "j.journey \"w\" {\n"
                     "  entry = j.on(\"Signed Up\"):when(function(ctx) return ctx.event.properties.plan == \"trial\" "
                     "end),\n"
                     "  j.stage \"s\" {\n"
                     "    j.on(\"Poke\", { when = function(ctx) return ctx.stage == \"s\" and ctx.journey == \"w\" "
                     "end },\n"
                     "      function(ctx) ctx:send(\"email\", \"poked\") end),\n"
                     "  },\n"
                     "}\n");
    tu_event(&r, "{\"type\":\"identify\",\"userId\":\"v\",\"traits\":{\"vip\":true},\"messageId\":\"id-v\","
                 "\"timestamp\":\"2024-01-01T00:00:00Z\"}");
    tu_track(&r, "u1", "Buy", "2024-01-01T01:00:00Z", "{\"amount\":150,\"currency\":\"USD\"}");
    tu_track(&r, "u1", "Buy", "2024-01-01T01:01:00Z", "{\"amount\":50,\"currency\":\"EUR\"}");
    tu_track(&r, "v", "Buy", "2024-01-01T01:02:00Z", "{\"amount\":5,\"currency\":\"GBP\"}");
    EXPECT_COUNT(&r, 1, "big");
    EXPECT_COUNT(&r, 1, "\"user\":\"u1\"", "big");
    EXPECT_COUNT(&r, 1, "vip");
    EXPECT_COUNT(&r, 1, "\"user\":\"v\"", "vip");
    EXPECT_COUNT(&r, 1, "eur");
    /* the Lua predicate runs only when the C predicates matched */
    tu_track(&r, "u1", "Report", "2024-01-01T01:03:00Z", NULL);
    EXPECT_COUNT(&r, 1, "\"when_calls\":1");
    /* a when predicate cannot take actions: an error, and no match */
    tu_track(&r, "u1", "Sneaky", "2024-01-01T01:04:00Z", NULL);
    EXPECT_COUNT(&r, 0, "from-when");
    EXPECT_COUNT(&r, 0, "sneaky-ran");
    EXPECT_COUNT(&r, 0, "exit-ran");
    EXPECT_STAT(&r, "lua_errors", 2);
    /* on a journey's entry and a stage transition */
    tu_track(&r, "u2", "Signed Up", "2024-01-01T02:00:00Z", "{\"plan\":\"pro\"}");
    tu_track(&r, "u3", "Signed Up", "2024-01-01T02:00:00Z", "{\"plan\":\"trial\"}");
    expect_journey(&r, "w", 1, 1, 0, 0);
    tu_track(&r, "u3", "Poke", "2024-01-01T02:01:00Z", NULL);
    EXPECT_COUNT(&r, 1, "\"user\":\"u3\"", "poked", "\"stage\":\"s\"");
    tu_free(&r);
}

/* ---------------------------------------------------------------- rules */

static void test_rules_interleave_in_definition_order(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r,
             HDR "j.on(\"Go\", function(ctx) ctx:set(\"step\", 1); ctx:send(\"team\", { r = \"R1\", seg = "
                 "ctx.user.segments.j1 == true }) end)\n"
                 "j.journey \"J1\" {\n"
                 "  entry = j.on(\"Go\", { [\"user.traits.step\"] = 1 }),\n"
                 "  j.stage \"s\" { enter = function(ctx) ctx:segment_add \"j1\"; ctx:send(\"team\", { r = \"J1\" }) "
                 "end },\n"
                 "}\n"
                 "j.on(\"Go\", { [\"user.segments\"] = \"j1\" }, function(ctx) ctx:send(\"team\", { r = \"R2\" }) "
                 "end)\n"
                 "j.journey \"J2\" {\n"
                 "  entry = j.on(\"Go\", { [\"user.segments\"] = \"j1\" }),\n"
                 "  j.stage \"s\" { enter = function(ctx) ctx:send(\"team\", { r = \"J2\" }) end },\n"
                 "}\n"
                 "j.on(\"Go\", function(ctx) ctx:send(\"team\", { r = \"R3\" }) end)\n");
    tu_track(&r, "u1", "Go", "2024-01-01T00:00:00Z", NULL);
    EXPECT_NACTIONS(&r, 5);
    EXPECT_ACTION(&r, 0, "\"r\":\"R1\"", "\"seg\":false", "\"journey\":null");
    EXPECT_ACTION(&r, 1, "\"r\":\"J1\"", "\"journey\":\"J1\"");
    EXPECT_ACTION(&r, 2, "\"r\":\"R2\"", "\"journey\":null");
    EXPECT_ACTION(&r, 3, "\"r\":\"J2\"", "\"journey\":\"J2\"");
    EXPECT_ACTION(&r, 4, "\"r\":\"R3\"");
    tu_free(&r);
}

static void test_event_types_route_to_their_triggers(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r, HDR "j.page(\"Pricing\", function(ctx) ctx:send(\"team\", { page = ctx.event.name, t = "
                     "ctx.event.type }) end)\n"
                     "j.page(function(ctx) ctx:send(\"team\", { any_page = ctx.event.name or \"-\" }) end)\n"
                     "j.screen(\"Home\", function(ctx) ctx:send(\"team\", { screen = ctx.event.name, t = "
                     "ctx.event.type }) end)\n"
                     "j.group(function(ctx) ctx:send(\"team\", { group = ctx.event.traits.name, t = ctx.event.type }) "
                     "end)\n"
                     "j.identify(function(ctx) ctx:send(\"team\", { t = ctx.event.type }) end)\n"
                     "j.on(\"Pricing\", function(ctx) ctx:send(\"team\", \"track-pricing\") end)\n");
    tu_event(&r, "{\"type\":\"page\",\"userId\":\"u1\",\"name\":\"Pricing\",\"messageId\":\"p1\","
                 "\"timestamp\":\"2024-01-01T00:00:00Z\"}");
    EXPECT_NACTIONS(&r, 2);
    EXPECT_ACTION(&r, 0, "\"page\":\"Pricing\"", "\"t\":\"page\"");
    EXPECT_ACTION(&r, 1, "\"any_page\":\"Pricing\"");
    tu_event(&r, "{\"type\":\"page\",\"userId\":\"u1\",\"name\":\"Docs\",\"messageId\":\"p2\","
                 "\"timestamp\":\"2024-01-01T00:01:00Z\"}");
    EXPECT_NACTIONS(&r, 3);
    EXPECT_ACTION(&r, 2, "\"any_page\":\"Docs\"");
    tu_event(&r, "{\"type\":\"screen\",\"userId\":\"u1\",\"name\":\"Home\",\"messageId\":\"s1\","
                 "\"timestamp\":\"2024-01-01T00:02:00Z\"}");
    EXPECT_NACTIONS(&r, 4);
    EXPECT_ACTION(&r, 3, "\"screen\":\"Home\"", "\"t\":\"screen\"");
    tu_event(&r, "{\"type\":\"group\",\"userId\":\"u1\",\"groupId\":\"g1\",\"traits\":{\"name\":\"Acme\"},"
                 "\"messageId\":\"g1\",\"timestamp\":\"2024-01-01T00:03:00Z\"}");
    EXPECT_NACTIONS(&r, 5);
    EXPECT_ACTION(&r, 4, "\"group\":\"Acme\"", "\"t\":\"group\"");
    tu_event(&r, "{\"type\":\"identify\",\"userId\":\"u1\",\"messageId\":\"i1\","
                 "\"timestamp\":\"2024-01-01T00:04:00Z\"}");
    EXPECT_NACTIONS(&r, 6);
    EXPECT_ACTION(&r, 5, "\"t\":\"identify\"");
    tu_track(&r, "u1", "Pricing", "2024-01-01T00:05:00Z", NULL);
    EXPECT_NACTIONS(&r, 7);
    EXPECT_ACTION(&r, 6, "track-pricing");
    tu_track(&r, "u1", "Nothing Listens", "2024-01-01T00:06:00Z", NULL);
    EXPECT_NACTIONS(&r, 7);
    EXPECT_STAT(&r, "unmatched", 1);
    tu_free(&r);
}

/* ---------------------------------------------------------------- identity */

static void test_identify_merges_traits(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r, HDR "j.on(\"Check\", function(ctx) local t = ctx.user.traits\n"
                     "  ctx:send(\"email\", { email = t.email, plan = t.plan, name = t.name or \"none\" }) end)\n"
                     "j.identify({ plan = \"pro\" }, function(ctx)\n"
                     "  ctx:send(\"team\", { upgraded = ctx.user.id, plan = ctx.user.traits.plan, email = "
                     "ctx.user.traits.email }) end)\n");
    tu_event(&r, "{\"type\":\"identify\",\"userId\":\"u1\",\"traits\":{\"email\":\"a@x.io\",\"plan\":\"trial\","
                 "\"name\":\"Ann\"},\"messageId\":\"i1\",\"timestamp\":\"2024-01-01T00:00:00Z\"}");
    EXPECT_NACTIONS(&r, 0);
    tu_event(&r, "{\"type\":\"identify\",\"userId\":\"u1\",\"traits\":{\"plan\":\"pro\",\"name\":null},"
                 "\"messageId\":\"i2\",\"timestamp\":\"2024-01-01T00:01:00Z\"}");
    /* the hook sees the merged profile */
    EXPECT_COUNT(&r, 1, "\"upgraded\":\"u1\"", "\"plan\":\"pro\"", "\"email\":\"a@x.io\"");
    tu_track(&r, "u1", "Check", "2024-01-01T00:02:00Z", NULL);
    EXPECT_COUNT(&r, 1, "\"channel\":\"email\"", "\"email\":\"a@x.io\"", "\"plan\":\"pro\"", "\"name\":\"none\"");
    /* another person's profile is separate */
    tu_track(&r, "u2", "Check", "2024-01-01T00:03:00Z", NULL);
    EXPECT_COUNT(&r, 1, "\"user\":\"u2\"", "\"payload\":{\"name\":\"none\"}");
    tu_free(&r);
}

static const char *identity_src =
    HDR "j.on(\"Pricing Viewed\", function(ctx) ctx:score(5); ctx:segment_add(\"curious\") end)\n"
        "j.on(\"Check\", function(ctx) local u = ctx.user\n"
        "  ctx:send(\"email\", { who = u.id, email = u.traits.email or \"-\", name = u.traits.name or \"-\",\n"
        "    score = u.score, curious = u.segments.curious == true }) end)\n";

static void test_identify_links_anonymous_id(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r, identity_src);
    tu_event(&r, "{\"type\":\"track\",\"anonymousId\":\"anon-1\",\"event\":\"Pricing Viewed\",\"messageId\":\"a1\","
                 "\"timestamp\":\"2024-01-01T00:00:00Z\"}");
    tu_event(&r, "{\"type\":\"identify\",\"anonymousId\":\"anon-1\",\"traits\":{\"email\":\"b@x.io\"},"
                 "\"messageId\":\"a2\",\"timestamp\":\"2024-01-01T00:01:00Z\"}");
    tu_event(&r, "{\"type\":\"track\",\"anonymousId\":\"anon-1\",\"event\":\"Check\",\"messageId\":\"a3\","
                 "\"timestamp\":\"2024-01-01T00:02:00Z\"}");
    EXPECT_COUNT(&r, 1, "\"user\":\"anon-1\"", "\"who\":\"anon-1\"", "\"email\":\"b@x.io\"");
    tu_event(&r, "{\"type\":\"identify\",\"userId\":\"u1\",\"anonymousId\":\"anon-1\",\"traits\":{\"name\":\"Bo\"},"
                 "\"messageId\":\"a4\",\"timestamp\":\"2024-01-01T00:03:00Z\"}");
    tu_event(&r, "{\"type\":\"track\",\"anonymousId\":\"anon-1\",\"event\":\"Check\",\"messageId\":\"a5\","
                 "\"timestamp\":\"2024-01-01T00:04:00Z\"}");
    EXPECT_NACTIONS(&r, 2);
    EXPECT_ACTION(&r, 1, "\"user\":\"u1\"", "\"who\":\"u1\"", "\"name\":\"Bo\"", "\"email\":\"b@x.io\"", "\"score\":5",
                  "\"curious\":true");
    tu_track(&r, "u1", "Check", "2024-01-01T00:05:00Z", NULL);
    EXPECT_ACTION(&r, 2, "\"user\":\"u1\"", "\"name\":\"Bo\"", "\"email\":\"b@x.io\"");
    tu_free(&r);
}

static void test_alias_links_previous_id(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r, identity_src);
    tu_event(&r, "{\"type\":\"identify\",\"anonymousId\":\"anon-2\",\"traits\":{\"email\":\"c@x.io\"},"
                 "\"messageId\":\"b1\",\"timestamp\":\"2024-01-01T00:00:00Z\"}");
    tu_event(&r, "{\"type\":\"identify\",\"userId\":\"u2\",\"traits\":{\"name\":\"Cy\"},"
                 "\"messageId\":\"b2\",\"timestamp\":\"2024-01-01T00:00:30Z\"}");
    tu_event(&r, "{\"type\":\"alias\",\"previousId\":\"anon-2\",\"userId\":\"u2\",\"messageId\":\"b3\","
                 "\"timestamp\":\"2024-01-01T00:01:00Z\"}");
    tu_event(&r, "{\"type\":\"track\",\"anonymousId\":\"anon-2\",\"event\":\"Check\",\"messageId\":\"b4\","
                 "\"timestamp\":\"2024-01-01T00:02:00Z\"}");
    EXPECT_NACTIONS(&r, 1);
    EXPECT_ACTION(&r, 0, "\"user\":\"u2\"", "\"who\":\"u2\"", "\"name\":\"Cy\"", "\"email\":\"c@x.io\"");
    /* an unrelated anonymous id stays its own person */
    tu_event(&r, "{\"type\":\"track\",\"anonymousId\":\"anon-3\",\"event\":\"Check\",\"messageId\":\"b5\","
                 "\"timestamp\":\"2024-01-01T00:03:00Z\"}");
    EXPECT_ACTION(&r, 1, "\"user\":\"anon-3\"", "\"email\":\"-\"");
    tu_free(&r);
}

/* An anonymous person's journey timers after identify links them to a userId that has
 * its own instance of the same journey. */
static const char *anon_journey_src =
    HDR "j.journey \"J\" {\n"
        "  entry = j.on(\"Signed Up\"),\n"
        "  j.stage \"a\" {\n"
        "    j.after(\"2d\", function(ctx) ctx:send(\"email\", { nudge = ctx.user.id }) end),\n"
        "  },\n"
        "}\n";

/* Regression (was an engine bug; engine.c resolve_user/timer_event): a timer's record carries the id of the
 * profile that scheduled it; resolve_user maps it through the alias table, so after
 * identify links anon-1 -> u1, anon-1's stage timer is looked up in u1's instances and,
 * because iid/gen are per-user counters (both 1), fires u1's j.after at anon-1's due
 * time. u1 then gets the nudge twice (01-03T00:00 and again at its own 01-03T01:00). */
static void test_alias_timer_fires_other_profiles_instance(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r, anon_journey_src);
    tu_event(&r, "{\"type\":\"track\",\"anonymousId\":\"anon-1\",\"event\":\"Signed Up\",\"messageId\":\"m1\","
                 "\"timestamp\":\"2024-01-01T00:00:00Z\"}");
    tu_track(&r, "u1", "Signed Up", "2024-01-01T01:00:00Z", NULL);
    tu_event(&r, "{\"type\":\"identify\",\"userId\":\"u1\",\"anonymousId\":\"anon-1\",\"messageId\":\"m3\","
                 "\"timestamp\":\"2024-01-01T02:00:00Z\"}");
    tu_advance(&r, "2024-01-10T00:00:00Z");
    /* u1's own instance nudges once, 2d after u1's own entry */
    EXPECT_COUNT(&r, 1, "\"user\":\"u1\"", "\"time\":\"2024-01-03T01:00:00.000Z\"");
    EXPECT_COUNT(&r, 0, "\"user\":\"u1\"", "\"time\":\"2024-01-03T00:00:00.000Z\"");
    tu_free(&r);
}

/* Regression (was an engine bug; same cause): the anonymous person's instance is still active (funnel:
 * active 1) but its j.after is dropped (timers_dropped 1) at its due time because the
 * timer is looked up in u1's profile, which has no instance. Expected: the 2d timer
 * fires (timers_fired 1) — the person never left the stage. */
static void test_identify_drops_anonymous_instance_timers(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r, anon_journey_src);
    tu_event(&r, "{\"type\":\"track\",\"anonymousId\":\"anon-1\",\"event\":\"Signed Up\",\"messageId\":\"m1\","
                 "\"timestamp\":\"2024-01-01T00:00:00Z\"}");
    tu_event(&r, "{\"type\":\"identify\",\"userId\":\"u1\",\"anonymousId\":\"anon-1\",\"messageId\":\"m3\","
                 "\"timestamp\":\"2024-01-01T02:00:00Z\"}");
    tu_advance(&r, "2024-01-10T00:00:00Z");
    EXPECT_STAT(&r, "timers_dropped", 0);
    EXPECT_STAT(&r, "timers_fired", 1);
    EXPECT_NACTIONS(&r, 1);
    tu_free(&r);
}

static void test_anonymous_journey_before_identify(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r, anon_journey_src);
    /* without any link, an anonymous person's timers fire for that person */
    tu_event(&r, "{\"type\":\"track\",\"anonymousId\":\"anon-7\",\"event\":\"Signed Up\",\"messageId\":\"m1\","
                 "\"timestamp\":\"2024-01-01T00:00:00Z\"}");
    tu_advance(&r, "2024-01-10T00:00:00Z");
    EXPECT_NACTIONS(&r, 1);
    EXPECT_ACTION(&r, 0, "\"user\":\"anon-7\"", "\"nudge\":\"anon-7\"", "\"time\":\"2024-01-03T00:00:00.000Z\"");
    tu_free(&r);
}

/* ---------------------------------------------------------------- dedupe */

static void test_duplicate_message_ids_are_dropped(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r, onboarding_src);
    track_mid(&r, "m-1", "u1", "Signed Up", "2024-01-01T00:00:00Z", NULL);
    track_mid(&r, "m-1", "u1", "Signed Up", "2024-01-01T00:00:00Z", NULL);
    track_mid(&r, "m-2", "u1", "Pricing Viewed", "2024-01-01T00:01:00Z", NULL);
    track_mid(&r, "m-2", "u2", "Pricing Viewed", "2024-01-01T00:01:00Z", NULL); /* same id, other content */
    track_mid(&r, "m-1", "u1", "Project Created", "2024-01-01T00:00:00Z", NULL);
    EXPECT_STAT(&r, "duplicates", 3);
    EXPECT_NACTIONS(&r, 2);
    EXPECT_COUNT(&r, 1, "welcome");
    EXPECT_COUNT(&r, 1, "looked", "\"user\":\"u1\"");
    EXPECT_COUNT(&r, 0, "congrats");
    expect_journey(&r, "onb", 1, 1, 0, 0);
    /* a number messageId is an id like any other */
    tu_event(&r, "{\"type\":\"track\",\"userId\":\"u3\",\"event\":\"Pricing Viewed\",\"messageId\":77,"
                 "\"timestamp\":\"2024-01-01T00:02:00Z\"}");
    tu_event(&r, "{\"type\":\"track\",\"userId\":\"u3\",\"event\":\"Pricing Viewed\",\"messageId\":\"77\","
                 "\"timestamp\":\"2024-01-01T00:02:00Z\"}");
    EXPECT_STAT(&r, "duplicates", 4);
    EXPECT_COUNT(&r, 1, "\"user\":\"u3\"");
    tu_free(&r);
}

/* ---------------------------------------------------------------- action ids */

static const char *ids_src =
    HDR "j.journey \"k\" {\n"
        "  key = \"cart_id\",\n"
        "  entry = j.on(\"Cart Created\", function(ctx) ctx:send(\"email\", \"entry\") end),\n"
        "  goal = j.on(\"Checkout\", function(ctx) ctx:send(\"team\", \"won\") end),\n"
        "  j.stage \"open\" {\n"
        "    enter = function(ctx) ctx:send(\"email\", \"open\"); ctx:send(\"email\", \"open\"); ctx:send(\"team\", "
        "\"open\") end,\n"
        "    j.on(\"Item Added\", function(ctx) ctx:send(\"email\", \"item\") end),\n"
        "    j.after(\"1h\", function(ctx) ctx:send(\"email\", \"remind\") end),\n"
        "    j.after(\"1h\", function(ctx) ctx:send(\"email\", \"remind\") end):go \"again\",\n"
        "  },\n"
        "  j.stage \"again\" {\n"
        "    enter = function(ctx) ctx:send(\"email\", \"open\") end,\n"
        "    j.on(\"Item Added\"):go \"open\",\n"
        "  },\n"
        "}\n"
        "j.on(\"Item Added\", function(ctx) ctx:send(\"email\", \"item\") end)\n"
        "j.on(\"Item Added\", function(ctx) ctx:send(\"email\", \"item\") end)\n";

static size_t run_for_ids(char ids[][33], size_t cap, char **lines)
{
    tu_run r;
    tu_start(&r, ids_src);
    tu_event(&r, "{\"type\":\"track\",\"userId\":\"u1\",\"event\":\"Cart Created\",\"properties\":{\"cart_id\":\"c1\"},"
                 "\"messageId\":\"x1\",\"timestamp\":\"2024-01-01T00:00:00Z\"}");
    tu_event(&r, "{\"type\":\"track\",\"userId\":\"u1\",\"event\":\"Cart Created\",\"properties\":{\"cart_id\":\"c2\"},"
                 "\"messageId\":\"x2\",\"timestamp\":\"2024-01-01T00:10:00Z\"}");
    tu_event(&r, "{\"type\":\"track\",\"userId\":\"u2\",\"event\":\"Cart Created\",\"properties\":{\"cart_id\":\"c1\"},"
                 "\"messageId\":\"x3\",\"timestamp\":\"2024-01-01T00:20:00Z\"}");
    tu_event(&r, "{\"type\":\"track\",\"userId\":\"u1\",\"event\":\"Item Added\",\"messageId\":\"x4\","
                 "\"timestamp\":\"2024-01-01T00:30:00Z\"}");
    tu_event(&r, "{\"type\":\"track\",\"userId\":\"u1\",\"event\":\"Checkout\",\"properties\":{\"cart_id\":\"c2\"},"
                 "\"messageId\":\"x5\",\"timestamp\":\"2024-01-01T00:40:00Z\"}");
    tu_advance(&r, "2024-01-01T03:00:00Z");
    tu_event(&r, "{\"type\":\"track\",\"userId\":\"u1\",\"event\":\"Item Added\",\"properties\":{\"cart_id\":\"c1\"},"
                 "\"messageId\":\"x6\",\"timestamp\":\"2024-01-01T04:00:00Z\"}");
    assert_true(r.nactions <= cap);
    size_t n = r.nactions;
    for (size_t i = 0; i < n; i++) {
        action_id(r.actions[i], ids[i]);
        if (lines) {
            /* the line without its id */
            lines[i] = strndup(r.actions[i], (size_t)(strstr(r.actions[i], "\"id\":") - r.actions[i]));
        }
    }
    tu_free(&r);
    return n;
}

static void test_action_ids_are_stable_and_distinct(void **state)
{
    (void)state;
    char a[64][33], b[64][33];
    char *la[64], *lb[64];
    size_t na = run_for_ids(a, 64, la);
    size_t nb = run_for_ids(b, 64, lb);
    assert_int_equal(na, nb);
    assert_true(na >= 25);
    for (size_t i = 0; i < na; i++) {
        assert_string_equal(la[i], lb[i]);
        assert_string_equal(a[i], b[i]);
        for (size_t k = 0; k < i; k++)
            if (strcmp(a[i], a[k]) == 0)
                fail_msg("actions %zu and %zu share id %s:\n  %s\n  %s", k, i, a[i], la[k], la[i]);
    }
    for (size_t i = 0; i < na; i++) {
        free(la[i]);
        free(lb[i]);
    }
}

/* Regression (was an engine bug; engine.c action_id): the id hashes the rule id "<journey>/<stage>/enter"
 * as one string, so journey "a/b" stage "c" and journey "a" stage "b/c" give the same
 * rule text; two different actions decided for the same input and person then share an
 * id (observed: both 2d0d742d...). Expected: different ids. */
/* On the daemon's (live) clock, timers overdue by more than j.config overdue_limit are
 * skipped (counted and logged) and those within it fire late; on replay's virtual clock
 * nothing is "overdue"; a bad limit is a load error. */
static void test_overdue_limit(void **state)
{
    (void)state;
    static const char *src =
        HDR "j.config { overdue_limit = \"2h\" }\n"
            "j.journey \"J\" {\n"
            "  entry = j.on(\"Start\"),\n"
            "  j.stage \"a\" { j.after(\"1h\", function(ctx) ctx:send(\"email\", \"nudge\") end) },\n"
            "}\n";
    jd_options live = {.live = 1};
    for (int mode = 0; mode < 2; mode++) {
        tu_run r;
        jd_error err;
        if (!(mode ? tu_load_opts(&r, src, &live, &err) : tu_load(&r, src, &err)))
            fail_msg("%s", err.text);
        jd_engine_on_action(r.e, tu_on_action, &r);
        jd_engine_on_log(r.e, tu_on_log, &r);
        tu_advance(&r, "2024-01-01T00:00:00Z"); /* live: the clock is the daemon's, not the event's */
        tu_track(&r, "u1", "Start", "2024-01-01T00:00:00Z", NULL);
        tu_advance(&r, "2024-01-01T08:00:00Z"); /* u1's timer: 7 h overdue on a live clock */
        tu_track(&r, "u2", "Start", "2024-01-01T08:00:00Z", NULL);
        tu_advance(&r, "2024-01-01T10:00:00Z"); /* u2's: 1 h overdue, within the limit */
        EXPECT_COUNT(&r, 1, "\"user\":\"u2\"", "nudge");
        if (mode) {
            EXPECT_COUNT(&r, 0, "\"user\":\"u1\"");
            EXPECT_STAT(&r, "timers_skipped", 1);
            EXPECT_LOGS(&r, 1, "overdue", "1 skipped");
            EXPECT_LOGS(&r, 2, "overdue");
            /* a catch-up is noticed at once, then once a minute with what fired since */
            tu_track(&r, "u3", "Start", "2024-01-01T10:00:00Z", NULL);
            tu_advance(&r, "2024-01-01T12:30:00Z"); /* u3's: 1.5 h late, noticed */
            EXPECT_LOGS(&r, 3, "overdue");
            tu_track(&r, "u4", "Start", "2024-01-01T10:00:10Z", NULL); /* an old event */
            tu_advance(&r, "2024-01-01T12:30:20Z");                    /* u4's: late too, within the minute */
            EXPECT_COUNT(&r, 1, "\"user\":\"u4\"", "nudge");
            EXPECT_LOGS(&r, 3, "overdue");
            tu_advance(&r, "2024-01-01T12:31:30Z");
            EXPECT_LOGS(&r, 4, "overdue");
            EXPECT_LOGS(&r, 1, "overdue at 2024-01-01T12:31:30", "1 fired late, 0 skipped");
        } else {
            EXPECT_COUNT(&r, 1, "\"user\":\"u1\"", "\"time\":\"2024-01-01T01:00:00.000Z\"");
            EXPECT_STAT(&r, "timers_skipped", 0);
        }
        tu_free(&r);
    }
    tu_run r;
    jd_error err;
    assert_null(tu_load(&r, HDR "j.config { overdue_limit = \"soon\" }\n", &err));
    assert_non_null(strstr(err.text, "overdue_limit"));
    unlink(r.path);
}

/* A rule that keeps failing is quarantined: it stops running (its hook is not called,
 * its actions are not taken), the quarantine is logged and counted, other rules go on. */
static void test_quarantine(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r, HDR "j.config { quarantine = { errors = 3, window = \"1h\" } }\n"
                     "j.on(\"Bad\", function(ctx) error(\"always broken\") end)\n"
                     "j.on(\"Good\", function(ctx) ctx:send(\"email\", \"fine\") end)\n");
    char t[40];
    for (int i = 0; i < 6; i++) {
        snprintf(t, sizeof t, "2024-01-01T00:0%d:00Z", i);
        tu_track(&r, "u1", "Bad", t, NULL);
    }
    tu_track(&r, "u1", "Good", "2024-01-01T00:09:00Z", NULL);
    EXPECT_STAT(&r, "lua_errors", 3);
    EXPECT_STAT(&r, "rules_quarantined", 1);
    EXPECT_STAT(&r, "quarantine_skips", 3);
    EXPECT_LOGS(&r, 1, "quarantined", "after 3 errors");
    EXPECT_COUNT(&r, 1, "fine");
    char *m = jd_engine_metrics(r.e);
    assert_non_null(strstr(m, "journeyd_rule_quarantined{rule=\"rule/on Bad#1\"} 1"));
    free(m);
    tu_free(&r);
    /* errors spread wider than the window never quarantine */
    tu_start(&r, HDR "j.config { quarantine = { errors = 2, window = \"1m\" } }\n"
                     "j.on(\"Bad\", function(ctx) error(\"sometimes\") end)\n");
    tu_track(&r, "u1", "Bad", "2024-01-01T00:00:00Z", NULL);
    tu_track(&r, "u1", "Bad", "2024-01-01T01:00:00Z", NULL);
    tu_track(&r, "u1", "Bad", "2024-01-01T02:00:00Z", NULL);
    EXPECT_STAT(&r, "lua_errors", 3);
    EXPECT_STAT(&r, "rules_quarantined", 0);
    tu_free(&r);
}

static void test_action_ids_collide_across_journeys(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r, HDR "j.journey \"a/b\" { entry = j.on(\"Go\"), j.stage \"c\" { enter = function(ctx) "
                     "ctx:send(\"email\", \"one\") end } }\n"
                     "j.journey \"a\" { entry = j.on(\"Go\"), j.stage \"b/c\" { enter = function(ctx) "
                     "ctx:send(\"email\", \"two\") end } }\n");
    track_mid(&r, "m1", "u1", "Go", "2024-01-01T00:00:00Z", NULL);
    EXPECT_NACTIONS(&r, 2);
    char a[33], b[33];
    action_id(r.actions[0], a);
    action_id(r.actions[1], b);
    assert_string_not_equal(a, b);
    tu_free(&r);
}

/* ---------------------------------------------------------------- ctx */

static void test_ctx_fields(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r, HDR "j.on(\"Prep\", function(ctx) ctx:score(7); ctx:segment_add(\"vip\") end)\n"
                     "local function view(ctx)\n"
                     "  local u, e = ctx.user, ctx.event\n"
                     "  return {\n"
                     "    uid = u.id, email = u.traits.email, vip = u.segments.vip == true, score = u.score,\n"
                     "    nseg = (function() local n = 0 for _ in pairs(u.segments) do n = n + 1 end return n end)(),\n"
                     "    type = e.type, event = e.event, name = e.name, total = e.properties.order and "
                     "e.properties.order.total,\n"
                     "    locale = e.context.locale, tier = e.traits.tier, ts = e.timestamp, mid = e.messageId,\n"
                     "    userId = e.userId, journey = ctx.journey or \"nil\", stage = ctx.stage or \"nil\",\n"
                     "    instance = ctx.instance or \"nil\", now = ctx.now, time = ctx.time,\n"
                     "    rule = type(ctx.rule) == \"string\" and #ctx.rule > 0,\n"
                     "  }\n"
                     "end\n"
                     "j.journey \"cj\" {\n"
                     "  key = \"order.id\",\n"
                     "  entry = j.on(\"Ordered\"),\n"
                     "  j.stage \"placed\" { enter = function(ctx) ctx:send(\"email\", view(ctx)) end },\n"
                     "}\n"
                     "j.page(\"Docs\", function(ctx) ctx:send(\"team\", view(ctx)) end)\n");
    tu_event(&r, "{\"type\":\"identify\",\"userId\":\"u1\",\"traits\":{\"email\":\"d@x.io\"},\"messageId\":\"f0\","
                 "\"timestamp\":\"2024-03-01T11:00:00Z\"}");
    tu_track(&r, "u1", "Prep", "2024-03-01T11:30:00Z", NULL);
    tu_event(&r, "{\"type\":\"track\",\"userId\":\"u1\",\"event\":\"Ordered\",\"messageId\":\"mid-1\","
                 "\"timestamp\":\"2024-03-01T12:00:00Z\",\"properties\":{\"order\":{\"id\":\"o-9\",\"total\":12.5}},"
                 "\"context\":{\"locale\":\"de-DE\",\"traits\":{\"tier\":\"gold\"}}}");
    EXPECT_NACTIONS(&r, 1);
    char t[64];
    snprintf(t, sizeof t, "\"time\":%lld", (long long)ms_of("2024-03-01T12:00:00Z"));
    EXPECT_ACTION(&r, 0, "\"uid\":\"u1\"", "\"email\":\"d@x.io\"", "\"vip\":true", "\"score\":7", "\"nseg\":1",
                  "\"type\":\"track\"", "\"event\":\"Ordered\"", "\"total\":12.5", "\"locale\":\"de-DE\"",
                  "\"tier\":\"gold\"", "\"ts\":\"2024-03-01T12:00:00.000Z\"", "\"mid\":\"mid-1\"", "\"userId\":\"u1\"",
                  "\"journey\":\"cj\"", "\"stage\":\"placed\"", "\"instance\":\"o-9\"",
                  "\"now\":\"2024-03-01T12:00:00.000Z\"", t, "\"rule\":true");
    /* outside journeys: no journey, stage or instance; a page has a name */
    tu_event(&r, "{\"type\":\"page\",\"userId\":\"u1\",\"name\":\"Docs\",\"messageId\":\"mid-2\","
                 "\"timestamp\":\"2024-03-01T12:30:00Z\",\"properties\":{\"path\":\"/docs\"}}");
    EXPECT_NACTIONS(&r, 2);
    EXPECT_ACTION(&r, 1, "\"type\":\"page\"", "\"name\":\"Docs\"", "\"journey\":\"nil\"", "\"stage\":\"nil\"",
                  "\"instance\":\"nil\"", "\"mid\":\"mid-2\"", "\"now\":\"2024-03-01T12:30:00.000Z\"", "\"rule\":true");
    tu_free(&r);
}

static void test_ctx_methods(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r, HDR "j.on(\"M send\", function(ctx) ctx:send(\"email\", { a = 1, list = j.array { 1, 2 } }); "
                     "ctx:send(\"team\", \"text\"); ctx:send(\"email\") end)\n"
                     "j.on(\"M set\", function(ctx) ctx:set(\"a\", 1); ctx:set { b = \"two\", c = true }; "
                     "ctx:set(\"gone\", nil)\n"
                     "  ctx:send(\"email\", { deferred = ctx.user.traits.a == nil }) end)\n"
                     "j.on(\"M score\", function(ctx) ctx:score(2.5); ctx:score(-1) end)\n"
                     "j.on(\"M seg\", function(ctx) ctx:segment_add(\"x\"); ctx:segment_add(\"y\"); "
                     "ctx:segment_add(\"z\"); ctx:segment_remove(\"x\") end)\n"
                     "j.on(\"M unseg\", function(ctx) ctx:segment_remove(\"z\"); ctx:segment_remove(\"never\") end)\n"
                     "j.on(\"M log\", function(ctx) ctx:log(\"hello\", 42, true) end)\n"
                     "j.on(\"Show\", function(ctx) local t, u = ctx.user.traits, ctx.user\n"
                     "  ctx:send(\"team\", { a = t.a, b = t.b, c = t.c, gone = t.gone == nil, kept = t.kept, score = "
                     "u.score,\n"
                     "    x = u.segments.x == true, y = u.segments.y == true, z = u.segments.z == true }) end)\n");
    tu_event(&r, "{\"type\":\"identify\",\"userId\":\"u1\",\"traits\":{\"gone\":\"here\",\"kept\":\"yes\"},"
                 "\"messageId\":\"i1\",\"timestamp\":\"2024-01-01T00:00:00Z\"}");
    tu_track(&r, "u1", "M send", "2024-01-01T00:01:00Z", NULL);
    EXPECT_NACTIONS(&r, 3);
    EXPECT_ACTION(&r, 0, "\"channel\":\"email\"", "\"payload\":{\"a\":1,\"list\":[1,2]}");
    EXPECT_ACTION(&r, 1, "\"channel\":\"team\"", "\"payload\":\"text\"");
    EXPECT_ACTION(&r, 2, "\"channel\":\"email\"", "\"payload\":{}");
    tu_track(&r, "u1", "M set", "2024-01-01T00:02:00Z", NULL);
    EXPECT_ACTION(&r, 3, "\"deferred\":true");
    tu_track(&r, "u1", "M score", "2024-01-01T00:03:00Z", NULL);
    tu_track(&r, "u1", "M seg", "2024-01-01T00:04:00Z", NULL);
    tu_track(&r, "u1", "M log", "2024-01-01T00:05:00Z", NULL);
    EXPECT_LOGS(&r, 1, "info: ", "(user u1)", "hello 42 true");
    tu_track(&r, "u1", "Show", "2024-01-01T00:06:00Z", NULL);
    EXPECT_NACTIONS(&r, 5);
    EXPECT_ACTION(&r, 4, "\"a\":1", "\"b\":\"two\"", "\"c\":true", "\"gone\":true", "\"kept\":\"yes\"", "\"score\":1.5",
                  "\"x\":false", "\"y\":true", "\"z\":true");
    tu_track(&r, "u1", "M unseg", "2024-01-01T00:07:00Z", NULL);
    tu_track(&r, "u1", "M score", "2024-01-01T00:08:00Z", NULL);
    tu_track(&r, "u1", "Show", "2024-01-01T00:09:00Z", NULL);
    EXPECT_ACTION(&r, 5, "\"score\":3", "\"y\":true", "\"z\":false");
    EXPECT_STAT(&r, "lua_errors", 0);
    tu_free(&r);
}

/* ---------------------------------------------------------------- where */

typedef struct where_case {
    const char *event; /* rule name = event name */
    const char *props; /* JSON object */
    int match;
} where_case;

static void test_where_operators(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r, HDR "local function rule(name, where)\n"
                     "  j.on(name, where, function(ctx) ctx:send(\"email\", name) end)\n"
                     "end\n"
                     "rule(\"scalar num\", { x = 5 })\n"
                     "rule(\"scalar str\", { x = \"a\" })\n"
                     "rule(\"scalar bool\", { x = true })\n"
                     "rule(\"eq\", { x = { eq = 5 } })\n"
                     "rule(\"ne\", { x = { ne = 5 } })\n"
                     "rule(\"gt\", { x = { gt = 5 } })\n"
                     "rule(\"gte\", { x = { gte = 5 } })\n"
                     "rule(\"lt\", { x = { lt = 2.5 } })\n"
                     "rule(\"lte\", { x = { lte = 5 } })\n"
                     "rule(\"gt neg\", { x = { gt = -1 } })\n"
                     "rule(\"gt str\", { x = { gt = \"m\" } })\n"
                     "rule(\"range\", { x = { gt = 1, lt = 10 } })\n"
                     "rule(\"in_\", { x = { in_ = { \"a\", \"b\", 3 } } })\n"
                     "rule(\"list\", { x = { \"a\", \"b\" } })\n"
                     "rule(\"not_in\", { x = { not_in = { \"a\", \"b\" } } })\n"
                     "rule(\"exists\", { x = { exists = true } })\n"
                     "rule(\"missing\", { x = { exists = false } })\n"
                     "rule(\"contains\", { x = { contains = \"ell\" } })\n"
                     "rule(\"prefix\", { x = { prefix = \"he\" } })\n"
                     "rule(\"nested\", { [\"a.b\"] = 1 })\n"
                     "rule(\"two keys\", { x = 1, y = \"b\" })\n"
                     "rule(\"no where\")\n");
    static const where_case cases[] = {
        {"scalar num", "{\"x\":5}", 1},
        {"scalar num", "{\"x\":5.0}", 1},
        {"scalar num", "{\"x\":6}", 0},
        {"scalar num", "{\"x\":\"5\"}", 0},
        {"scalar num", "{}", 0},
        {"scalar str", "{\"x\":\"a\"}", 1},
        {"scalar str", "{\"x\":\"ab\"}", 0},
        {"scalar str", "{\"x\":\"A\"}", 0},
        {"scalar bool", "{\"x\":true}", 1},
        {"scalar bool", "{\"x\":false}", 0},
        {"scalar bool", "{\"x\":1}", 0},
        {"eq", "{\"x\":5}", 1},
        {"eq", "{\"x\":4}", 0},
        {"ne", "{\"x\":4}", 1},
        {"ne", "{\"x\":\"5\"}", 1},
        {"ne", "{\"x\":5}", 0},
        {"gt", "{\"x\":6}", 1},
        {"gt", "{\"x\":5.5}", 1},
        {"gt", "{\"x\":5}", 0},
        {"gt", "{\"x\":-7}", 0},
        {"gt", "{\"x\":\"9\"}", 0},
        {"gt", "{}", 0},
        {"gte", "{\"x\":5}", 1},
        {"gte", "{\"x\":4.99}", 0},
        {"lt", "{\"x\":2}", 1},
        {"lt", "{\"x\":2.5}", 0},
        {"lt", "{\"x\":-3}", 1},
        {"lt", "{}", 0},
        {"lte", "{\"x\":5}", 1},
        {"lte", "{\"x\":6}", 0},
        {"gt neg", "{\"x\":0}", 1},
        {"gt neg", "{\"x\":-2}", 0},
        {"gt str", "{\"x\":\"n\"}", 1},
        {"gt str", "{\"x\":\"a\"}", 0},
        {"gt str", "{\"x\":5}", 0},
        {"range", "{\"x\":5}", 1},
        {"range", "{\"x\":10}", 0},
        {"range", "{\"x\":1}", 0},
        {"in_", "{\"x\":\"a\"}", 1},
        {"in_", "{\"x\":3}", 1},
        {"in_", "{\"x\":\"c\"}", 0},
        {"in_", "{}", 0},
        {"list", "{\"x\":\"b\"}", 1},
        {"list", "{\"x\":\"z\"}", 0},
        {"not_in", "{\"x\":\"c\"}", 1},
        {"not_in", "{\"x\":\"a\"}", 0},
        {"exists", "{\"x\":0}", 1},
        {"exists", "{\"x\":false}", 1},
        {"exists", "{\"y\":1}", 0},
        {"missing", "{\"y\":1}", 1},
        {"missing", "{\"x\":1}", 0},
        {"contains", "{\"x\":\"hello\"}", 1},
        {"contains", "{\"x\":\"help\"}", 0},
        {"contains", "{\"x\":[\"a\",\"ell\"]}", 1},
        {"contains", "{\"x\":[\"hello\"]}", 0},
        {"prefix", "{\"x\":\"hello\"}", 1},
        {"prefix", "{\"x\":\"he\"}", 1},
        {"prefix", "{\"x\":\"ohe\"}", 0},
        {"prefix", "{\"x\":5}", 0},
        {"nested", "{\"a\":{\"b\":1}}", 1},
        {"nested", "{\"a\":{\"b\":2}}", 0},
        {"nested", "{\"a\":1}", 0},
        {"two keys", "{\"x\":1,\"y\":\"b\"}", 1},
        {"two keys", "{\"x\":1,\"y\":\"c\"}", 0},
        {"two keys", "{\"x\":1}", 0},
        {"no where", "{}", 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t before = r.nactions;
        tu_track(&r, "u1", cases[i].event, "2024-01-01T00:00:00Z", cases[i].props);
        int got = (int)(r.nactions - before);
        if (got != cases[i].match) {
            tu_dump(&r);
            fail_msg("where case %zu: %s %s: expected %d, got %d", i, cases[i].event, cases[i].props, cases[i].match,
                     got);
        }
        if (got) {
            char want[80];
            snprintf(want, sizeof want, "\"payload\":\"%s\"", cases[i].event);
            EXPECT_ACTION(&r, before, want);
        }
    }
    tu_free(&r);
}

typedef struct root_case {
    const char *json;  /* an event; %s is a fresh messageId */
    const char *fired; /* comma-separated rule names expected to fire, in order ("" none) */
} root_case;

static void test_where_roots(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r, HDR "local function rule(kind, name, label, where)\n"
                     "  local t = j[kind]\n"
                     "  local fn = function(ctx) ctx:send(\"email\", label) end\n"
                     "  if name then t(name, where, fn) else t(where, fn) end\n"
                     "end\n"
                     "rule(\"on\", \"R\", \"bare\", { plan = \"pro\" })\n"
                     "rule(\"on\", \"R\", \"properties\", { [\"properties.plan\"] = \"pro\" })\n"
                     "rule(\"on\", \"R\", \"traits\", { [\"traits.plan\"] = \"pro\" })\n"
                     "rule(\"on\", \"R\", \"context\", { [\"context.locale\"] = \"fr\" })\n"
                     "rule(\"on\", \"R\", \"event\", { [\"event.anonymousId\"] = \"anon-r\" })\n"
                     "rule(\"on\", \"U\", \"user.traits\", { [\"user.traits.tier\"] = \"gold\" })\n"
                     "rule(\"on\", \"U\", \"user.score\", { [\"user.score\"] = { gte = 10 } })\n"
                     "rule(\"on\", \"U\", \"user.segments\", { [\"user.segments\"] = \"vip\" })\n"
                     "rule(\"on\", \"U\", \"not-segment\", { [\"user.segments\"] = { ne = \"vip\" } })\n"
                     "rule(\"on\", \"U\", \"any-segment\", { [\"user.segments\"] = { in_ = { \"vip\", \"x\" } } })\n"
                     "rule(\"identify\", nil, \"identify-bare\", { plan = \"pro\" })\n"
                     "rule(\"identify\", nil, \"identify-props\", { [\"properties.plan\"] = \"pro\" })\n"
                     "rule(\"group\", nil, \"group-bare\", { industry = \"retail\" })\n"
                     "rule(\"group\", nil, \"group-id\", { [\"event.groupId\"] = \"g1\" })\n"
                     "rule(\"page\", \"Docs\", \"page-bare\", { section = \"api\" })\n"
                     "rule(\"screen\", \"Home\", \"screen-bare\", { tab = 2 })\n"
                     "j.on(\"Make VIP\", function(ctx) ctx:segment_add(\"vip\"); ctx:score(10) end)\n");
    static const root_case cases[] = {
        {"{\"type\":\"track\",\"userId\":\"u1\",\"event\":\"R\",\"properties\":{\"plan\":\"pro\"},\"messageId\":\"%"
         "s\"}",
         "bare,properties"},
        {"{\"type\":\"track\",\"userId\":\"u1\",\"event\":\"R\",\"context\":{\"traits\":{\"plan\":\"pro\"}},"
         "\"messageId\":\"%s\"}",
         "traits"},
        {"{\"type\":\"track\",\"userId\":\"u1\",\"event\":\"R\",\"traits\":{\"plan\":\"pro\"},\"messageId\":\"%s\"}",
         "traits"},
        {"{\"type\":\"track\",\"userId\":\"u1\",\"event\":\"R\",\"context\":{\"locale\":\"fr\"},\"messageId\":\"%s\"}",
         "context"},
        {"{\"type\":\"track\",\"userId\":\"u1\",\"anonymousId\":\"anon-r\",\"event\":\"R\",\"messageId\":\"%s\"}",
         "event"},
        {"{\"type\":\"track\",\"userId\":\"u1\",\"event\":\"R\",\"properties\":{\"locale\":\"fr\"},\"messageId\":\"%"
         "s\"}",
         ""},
        {"{\"type\":\"track\",\"userId\":\"u2\",\"event\":\"U\",\"messageId\":\"%s\"}", "not-segment"},
        {"{\"type\":\"identify\",\"userId\":\"u2\",\"traits\":{\"tier\":\"gold\",\"plan\":\"basic\"},"
         "\"properties\":{\"plan\":\"pro\"},\"messageId\":\"%s\"}",
         "identify-props"},
        {"{\"type\":\"track\",\"userId\":\"u2\",\"event\":\"U\",\"messageId\":\"%s\"}", "user.traits,not-segment"},
        {"{\"type\":\"track\",\"userId\":\"u2\",\"event\":\"Make VIP\",\"messageId\":\"%s\"}", ""},
        {"{\"type\":\"track\",\"userId\":\"u2\",\"event\":\"U\",\"messageId\":\"%s\"}",
         "user.traits,user.score,user.segments,any-segment"},
        {"{\"type\":\"track\",\"userId\":\"u3\",\"event\":\"U\",\"properties\":{\"tier\":\"gold\"},"
         "\"messageId\":\"%s\"}",
         "not-segment"},
        {"{\"type\":\"identify\",\"userId\":\"u3\",\"traits\":{\"plan\":\"pro\"},\"messageId\":\"%s\"}",
         "identify-bare"},
        {"{\"type\":\"group\",\"userId\":\"u3\",\"groupId\":\"g1\",\"traits\":{\"industry\":\"retail\"},"
         "\"messageId\":\"%s\"}",
         "group-bare,group-id"},
        {"{\"type\":\"group\",\"userId\":\"u3\",\"groupId\":\"g2\",\"properties\":{\"industry\":\"retail\"},"
         "\"messageId\":\"%s\"}",
         ""},
        {"{\"type\":\"page\",\"userId\":\"u3\",\"name\":\"Docs\",\"properties\":{\"section\":\"api\"},"
         "\"messageId\":\"%s\"}",
         "page-bare"},
        {"{\"type\":\"page\",\"userId\":\"u3\",\"name\":\"Docs\",\"traits\":{\"section\":\"api\"},"
         "\"messageId\":\"%s\"}",
         ""},
        {"{\"type\":\"screen\",\"userId\":\"u3\",\"name\":\"Home\",\"properties\":{\"tab\":2},\"messageId\":\"%s\"}",
         "screen-bare"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char mid[32];
        snprintf(mid, sizeof mid, "root-%zu", i);
        size_t before = r.nactions;
        tu_event(&r, cases[i].json, mid);
        /* compare the fired labels, in order */
        char got[512] = "";
        for (size_t k = before; k < r.nactions; k++) {
            const char *p = strstr(r.actions[k], "\"payload\":\"");
            assert_non_null(p);
            p += 11;
            size_t n = strcspn(p, "\"");
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%.*s", k > before ? "," : "", (int)n, p);
        }
        if (strcmp(got, cases[i].fired) != 0) {
            tu_dump(&r);
            fail_msg("root case %zu: expected [%s], got [%s]", i, cases[i].fired, got);
        }
    }
    tu_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_action_json_shape),
        cmocka_unit_test(test_payload_shapes),
        cmocka_unit_test(test_user_traits_each_call),
        cmocka_unit_test(test_user_traits_values),
        cmocka_unit_test(test_trigger_index_names),
        cmocka_unit_test(test_transitions_only_for_that_user),
        cmocka_unit_test(test_enter_hook_go_chain),
        cmocka_unit_test(test_endless_go_chain_is_stopped),
        cmocka_unit_test(test_goals_and_exits),
        cmocka_unit_test(test_one_trigger_per_instance_per_event),
        cmocka_unit_test(test_ctx_go_and_exit_override_trigger),
        cmocka_unit_test(test_reentry),
        cmocka_unit_test(test_reentry_not_on_the_leaving_event),
        cmocka_unit_test(test_keyed_instances_are_independent),
        cmocka_unit_test(test_keyed_event_without_key_exits_all),
        cmocka_unit_test(test_keyed_reentry_is_per_key),
        cmocka_unit_test(test_timers_fire_at_exact_times),
        cmocka_unit_test(test_advance_fires_due_at_or_before),
        cmocka_unit_test(test_timers_fire_before_a_later_event),
        cmocka_unit_test(test_timer_ties_fire_in_scheduling_order),
        cmocka_unit_test(test_timer_of_left_stage_never_fires),
        cmocka_unit_test(test_after_with_function_stays),
        cmocka_unit_test(test_late_event_uses_its_own_timestamp),
        cmocka_unit_test(test_late_events_in_arrival_order),
        cmocka_unit_test(test_failing_hook_is_isolated),
        cmocka_unit_test(test_failing_rule_and_entry_hook),
        cmocka_unit_test(test_when_predicates),
        cmocka_unit_test(test_rules_interleave_in_definition_order),
        cmocka_unit_test(test_event_types_route_to_their_triggers),
        cmocka_unit_test(test_identify_merges_traits),
        cmocka_unit_test(test_identify_links_anonymous_id),
        cmocka_unit_test(test_alias_links_previous_id),
        cmocka_unit_test(test_anonymous_journey_before_identify),
        cmocka_unit_test(test_duplicate_message_ids_are_dropped),
        cmocka_unit_test(test_action_ids_are_stable_and_distinct),
        cmocka_unit_test(test_ctx_fields),
        cmocka_unit_test(test_ctx_methods),
        cmocka_unit_test(test_where_operators),
        cmocka_unit_test(test_where_roots),
        cmocka_unit_test(test_alias_timer_fires_other_profiles_instance),
        cmocka_unit_test(test_identify_drops_anonymous_instance_timers),
        cmocka_unit_test(test_action_ids_collide_across_journeys),
        cmocka_unit_test(test_overdue_limit),
        cmocka_unit_test(test_quarantine),
        cmocka_unit_test(test_record_buffer_reused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
