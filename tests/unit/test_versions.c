/* test_versions: journey versions (a hash of triggers, stages and stripped hook
 * bytecode), `migrate` on reload, versions in the store. */
#define _DEFAULT_SOURCE
#include "testutil.h"

#include "store.h"

#define JOURNEY(enter_body, delay, extra)                                                                           \
    HDR "j.journey \"trial\" {\n"                                                                                   \
        "  entry = j.on(\"Signed Up\"),\n" extra "  j.stage \"signed_up\" {\n"                                      \
        "    enter = function(ctx) " enter_body " end,\n"                                                           \
        "    j.on(\"Project Created\"):go \"activated\",\n"                                                         \
        "    j.after(\"" delay "\", function(ctx) ctx:send(\"email\", { template = \"nudge\" }) end),\n"            \
        "  },\n"                                                                                                    \
        "  j.stage \"activated\" { j.after(\"1d\", function(ctx) ctx:send(\"email\", { template = \"tip\" }) end) " \
        "},\n"                                                                                                      \
        "}\n"

static const char *const BASE = JOURNEY("ctx:send(\"email\", { template = \"welcome\" })", "2d", "");

static void rewrite(tu_run *r, const char *lua)
{
    FILE *f = fopen(r->path, "w");
    assert_non_null(f);
    fputs(lua, f);
    fclose(f);
}

static void reload(tu_run *r, const char *lua)
{
    rewrite(r, lua);
    jd_error err;
    if (jd_engine_reload(r->e, r->path, &err))
        fail_msg("reload: %s", err.text);
}

/* The version of journey trial as shown by /v1/journeys/trial. */
static void version_of(tu_run *r, char out[17])
{
    char *js = jd_engine_journey_json(r->e, "trial", 5);
    assert_non_null(js);
    const char *v = strstr(js, "\"version\":\"");
    assert_non_null(v);
    memcpy(out, v + 11, 16);
    out[16] = '\0';
    free(js);
}

static void test_version_stable_and_sensitive(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r, BASE);
    char v0[17], v[17];
    version_of(&r, v0);
    assert_int_equal(strlen(v0), 16);
    reload(&r, BASE); /* same text */
    version_of(&r, v);
    assert_string_equal(v, v0);
    /* comments, blank lines and spacing inside a hook body and above it */
    reload(&r,
           "-- a comment\n\n" JOURNEY("\n  -- say hello\n   ctx:send(\"email\",{template=\"welcome\"})\n", "2d", ""));
    version_of(&r, v);
    assert_string_equal(v, v0);
    reload(&r, JOURNEY("ctx:send(\"email\", { template = \"hello\" })", "2d", "")); /* a hook */
    version_of(&r, v);
    assert_string_not_equal(v, v0);
    reload(&r, JOURNEY("ctx:send(\"email\", { template = \"welcome\" })", "3d", "")); /* a trigger */
    version_of(&r, v);
    assert_string_not_equal(v, v0);
    reload(&r, BASE);
    version_of(&r, v);
    assert_string_equal(v, v0);
    tu_free(&r);
}

/* The new version renames signed_up to onboarding and drops activated. */
#define V2(migrate)                                                                                  \
    HDR "j.journey \"trial\" {\n"                                                                    \
        "  entry = j.on(\"Signed Up\"),\n" migrate "  j.stage \"onboarding\" {\n"                    \
        "    j.on(\"Project Created\"):go \"done\",\n"                                               \
        "    j.after(\"1d\", function(ctx) ctx:send(\"email\", { template = \"v2-nudge\" }) end),\n" \
        "  },\n"                                                                                     \
        "  j.stage \"done\" {},\n"                                                                   \
        "}\n"

static int in_stage(tu_run *r, const char *user, const char *want)
{
    char *js = jd_engine_user_json(r->e, user, strlen(user));
    assert_non_null(js);
    char pat[128];
    snprintf(pat, sizeof pat, "\"stage\":\"%s\"", want);
    int ok = strstr(js, pat) != NULL && strstr(js, "\"active\"") != NULL;
    free(js);
    return ok;
}

static void test_migrate_moves_mapped_people(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r, BASE);
    tu_track(&r, "a", "Signed Up", "2026-01-01T00:00:00Z", NULL);
    tu_track(&r, "b", "Signed Up", "2026-01-01T00:00:00Z", NULL);
    tu_track(&r, "b", "Project Created", "2026-01-01T01:00:00Z", NULL);
    EXPECT_COUNT(&r, 2, "welcome", NULL);
    size_t before = r.nactions;
    reload(&r, V2("  migrate = { signed_up = \"onboarding\", [\"*\"] = \"exit\" },\n"));
    assert_int_equal(r.nactions, before); /* nothing re-sent by the edit */
    assert_true(in_stage(&r, "a", "onboarding"));
    assert_false(in_stage(&r, "b", "done")); /* activated was removed: * = exit */
    char *js = jd_engine_journey_json(r.e, "trial", 5);
    assert_non_null(strstr(js, "\"exited\":1"));
    free(js);
    /* a's old 2d nudge is gone; the new stage's 1d timer counts from the reload */
    tu_advance(&r, "2026-01-05T00:00:00Z");
    EXPECT_COUNT(&r, 0, "\"nudge\"", NULL);
    EXPECT_COUNT(&r, 1, "v2-nudge", NULL);
    EXPECT_COUNT(&r, 0, "tip", NULL);
    /* no re-entry of b, who left */
    tu_track(&r, "b", "Signed Up", "2026-01-06T00:00:00Z", NULL);
    assert_false(in_stage(&r, "b", "onboarding"));
    tu_free(&r);
}

static void test_kept_stage_keeps_timers(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r, BASE);
    tu_track(&r, "a", "Signed Up", "2026-01-01T00:00:00Z", NULL);
    /* a hook changes, the stage keeps its name: the pending 2d nudge still fires once */
    reload(&r, JOURNEY("ctx:send(\"email\", { template = \"hi\" })", "2d", "  migrate = {},\n"));
    tu_advance(&r, "2026-01-02T12:00:00Z");
    EXPECT_COUNT(&r, 0, "\"nudge\"", NULL);
    tu_advance(&r, "2026-01-04T00:00:00Z");
    EXPECT_COUNT(&r, 1, "\"nudge\"", NULL);
    EXPECT_COUNT(&r, 1, "welcome", NULL);
    EXPECT_COUNT(&r, 0, "\"hi\"", NULL);
    tu_free(&r);
}

/* The id of the first action whose JSON contains needle (copied), or fails. */
static void action_id_of(tu_run *r, const char *needle, char out[33])
{
    for (size_t i = 0; i < r->nactions; i++)
        if (strstr(r->actions[i], needle)) {
            const char *p = strstr(r->actions[i], "\"id\":\"");
            assert_non_null(p);
            memcpy(out, p + 6, 32);
            out[32] = '\0';
            return;
        }
    fail_msg("no action with %s", needle);
}

/* An edit does not change the ids of actions it does not touch: the nudge pending across a
 * hook-only edit fires with the id it would have had without the edit. */
static void test_action_ids_unchanged(void **state)
{
    (void)state;
    char plain[33], edited[33];
    tu_run r;
    tu_start(&r, BASE);
    tu_track(&r, "a", "Signed Up", "2026-01-01T00:00:00Z", NULL);
    tu_advance(&r, "2026-01-04T00:00:00Z");
    action_id_of(&r, "\"nudge\"", plain);
    tu_free(&r);
    tu_start(&r, BASE);
    tu_track(&r, "a", "Signed Up", "2026-01-01T00:00:00Z", NULL);
    reload(&r, JOURNEY("ctx:send(\"email\", { template = \"hi\" })", "2d", "  migrate = { [\"*\"] = \"exit\" },\n"));
    tu_advance(&r, "2026-01-04T00:00:00Z");
    action_id_of(&r, "\"nudge\"", edited);
    assert_string_equal(plain, edited);
    EXPECT_COUNT(&r, 1, "\"nudge\"", NULL);
    tu_free(&r);
}

static void test_no_migrate_keeps_people(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r, BASE);
    tu_track(&r, "a", "Signed Up", "2026-01-01T00:00:00Z", NULL);
    reload(&r, JOURNEY("ctx:send(\"email\", { template = \"hi\" })", "2d", ""));
    assert_true(in_stage(&r, "a", "signed_up"));
    tu_advance(&r, "2026-01-04T00:00:00Z");
    EXPECT_COUNT(&r, 1, "\"nudge\"", NULL);
    tu_free(&r);
}

static void test_bad_migrate(void **state)
{
    (void)state;
    tu_run r;
    jd_error err;
    assert_null(tu_load(&r, V2("  migrate = { signed_up = \"nowhere\" },\n"), &err));
    assert_non_null(strstr(err.text, "unknown stage 'nowhere'"));
    tu_free(&r);
}

static void test_version_in_store(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r, BASE);
    tu_open_store(&r, "v", NULL);
    tu_track(&r, "a", "Signed Up", "2026-01-01T00:00:00Z", NULL);
    char v0[17];
    version_of(&r, v0);
    tu_checkpoint(&r, 1);
    jd_engine_free(r.e);
    /* reopen with a migrating edit: a is read from the store and migrated then */
    rewrite(&r, V2("  migrate = { signed_up = \"onboarding\" },\n"));
    jd_options o = {.virtual_clock = 1};
    jd_error err;
    r.e = jd_engine_new(r.path, &o, &err);
    assert_non_null(r.e);
    jd_engine_on_action(r.e, tu_on_action, &r);
    tu_open_store(&r, "v", NULL);
    assert_true(in_stage(&r, "a", "onboarding"));
    char *js = jd_engine_user_json(r.e, "a", 1);
    char want[64];
    snprintf(want, sizeof want, "\"version\":\"%s\"", v0);
    assert_null(strstr(js, want)); /* migrated: the new version */
    free(js);
    /* the stored 2d nudge of the old stage is dropped; the new stage's timer fires once */
    tu_advance(&r, "2026-01-06T00:00:00Z");
    EXPECT_COUNT(&r, 0, "\"nudge\"", NULL);
    EXPECT_COUNT(&r, 1, "v2-nudge", NULL);
    tu_free(&r);
    /* the same scripts: the stored version matches, a stays */
    tu_start(&r, BASE);
    tu_open_store(&r, "v2", NULL);
    tu_track(&r, "b", "Signed Up", "2026-01-01T00:00:00Z", NULL);
    tu_checkpoint(&r, 1);
    jd_engine_free(r.e);
    r.e = jd_engine_new(r.path, &o, &err);
    assert_non_null(r.e);
    tu_open_store(&r, "v2", NULL);
    assert_true(in_stage(&r, "b", "signed_up"));
    js = jd_engine_user_json(r.e, "b", 1);
    assert_non_null(strstr(js, want)); /* the version it entered with, from the store */
    free(js);
    tu_free(&r);
}

/* v1 and v2 of a journey with a goal: hooks send their version's templates. */
#define PINNED(v, extra)                                                                                \
    HDR "j.journey \"trial\" {\n"                                                                       \
        "  entry = j.on(\"Signed Up\"),\n"                                                              \
        "  goal = j.on(\"Paid\"),\n" extra "  j.stage \"signed_up\" {\n"                                \
        "    enter = function(ctx) ctx:send(\"email\", { template = \"welcome-" v "\" }) end,\n"        \
        "    j.on(\"Project Created\"):go \"activated\",\n"                                             \
        "    j.after(\"2d\", function(ctx) ctx:send(\"email\", { template = \"nudge-" v "\" }) end),\n" \
        "  },\n"                                                                                        \
        "  j.stage \"activated\" {\n"                                                                   \
        "    j.after(\"1d\", function(ctx) ctx:send(\"email\", { template = \"tip-" v "\" }) end),\n"   \
        "  },\n"                                                                                        \
        "}\n"

static int pinned(tu_run *r, const char *user)
{
    char *js = jd_engine_user_json(r->e, user, strlen(user));
    assert_non_null(js);
    int p = strstr(js, "\"pinned\":true") != NULL;
    free(js);
    return p;
}

/* Edited without migrate: people inside keep running the version they entered with (its
 * hooks, stages and timers) until they leave; new people get the new version. */
static void test_pinned_keep_their_version(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r, PINNED("v1", ""));
    tu_track(&r, "a", "Signed Up", "2026-01-01T00:00:00Z", NULL);
    reload(&r, PINNED("v2", ""));
    assert_true(pinned(&r, "a"));
    tu_track(&r, "b", "Signed Up", "2026-01-01T01:00:00Z", NULL);
    assert_false(pinned(&r, "b"));
    EXPECT_COUNT(&r, 1, "welcome-v1", NULL);
    EXPECT_COUNT(&r, 1, "welcome-v2", NULL);
    tu_advance(&r, "2026-01-03T12:00:00Z");
    EXPECT_COUNT(&r, 1, "nudge-v1", "\"a\"", NULL);
    EXPECT_COUNT(&r, 1, "nudge-v2", "\"b\"", NULL);
    EXPECT_COUNT(&r, 2, "nudge-", NULL);
    /* a moves on under v1 and gets v1's timer there */
    tu_track(&r, "a", "Project Created", "2026-01-04T00:00:00Z", NULL);
    tu_track(&r, "b", "Project Created", "2026-01-04T00:00:00Z", NULL);
    assert_true(in_stage(&r, "a", "activated"));
    tu_advance(&r, "2026-01-05T12:00:00Z");
    EXPECT_COUNT(&r, 1, "tip-v1", "\"a\"", NULL);
    EXPECT_COUNT(&r, 1, "tip-v2", "\"b\"", NULL);
    /* a's goal: a leaves, unpinned, and is not entered again */
    tu_track(&r, "a", "Paid", "2026-01-06T00:00:00Z", NULL);
    assert_false(pinned(&r, "a"));
    tu_track(&r, "a", "Signed Up", "2026-01-07T00:00:00Z", NULL);
    EXPECT_COUNT(&r, 0, "welcome-v2", "\"a\"", NULL);
    char *js = jd_engine_journey_json(r.e, "trial", 5);
    assert_non_null(strstr(js, "\"entered\":2"));
    assert_non_null(strstr(js, "\"active\":1"));
    assert_non_null(strstr(js, "\"converted\":1"));
    free(js);
    EXPECT_NACTIONS(&r, 6);
    assert_int_equal(jd_engine_stat(r.e, "actions"), 6); /* pinned sends counted too */
    tu_free(&r);
}

/* Two edits: each person keeps the version they entered with; a stage v3 removes still
 * holds the people pinned in it; the store keeps pinned people in the journey. */
static void test_pinned_across_reloads(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r, PINNED("v1", ""));
    tu_open_store(&r, "pin", NULL);
    tu_track(&r, "a", "Signed Up", "2026-01-01T00:00:00Z", NULL);
    reload(&r, PINNED("v2", ""));
    tu_track(&r, "b", "Signed Up", "2026-01-01T00:00:00Z", NULL);
    reload(&r,
           HDR "j.journey \"trial\" {\n"
               "  entry = j.on(\"Signed Up\"),\n"
               "  goal = j.on(\"Paid\"),\n"
               "  j.stage \"only\" { j.after(\"2d\", function(ctx) ctx:send(\"email\", { template = \"v3\" }) end) },\n"
               "}\n");
    tu_track(&r, "c", "Signed Up", "2026-01-01T00:00:00Z", NULL);
    assert_true(pinned(&r, "a"));
    assert_true(pinned(&r, "b"));
    assert_true(in_stage(&r, "a", "signed_up"));
    tu_checkpoint(&r, 1);
    tu_advance(&r, "2026-01-03T12:00:00Z");
    EXPECT_COUNT(&r, 1, "nudge-v1", "\"a\"", NULL);
    EXPECT_COUNT(&r, 1, "nudge-v2", "\"b\"", NULL);
    EXPECT_COUNT(&r, 1, "\"v3\"", "\"c\"", NULL);
    tu_track(&r, "a", "Paid", "2026-01-04T00:00:00Z", NULL);
    tu_track(&r, "b", "Paid", "2026-01-04T00:00:00Z", NULL);
    assert_false(pinned(&r, "a"));
    assert_false(pinned(&r, "b"));
    char *js = jd_engine_journey_json(r.e, "trial", 5);
    assert_non_null(strstr(js, "\"converted\":2"));
    free(js);
    tu_free(&r);
}

/* A person only in the store at the reload is read in and pinned like the others. */
static void test_pinned_from_store(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r, PINNED("v1", ""));
    tu_open_store(&r, "pinstore", NULL);
    tu_track(&r, "a", "Signed Up", "2026-01-01T00:00:00Z", NULL);
    tu_checkpoint(&r, 1);
    jd_engine_free(r.e);
    jd_options o = {.virtual_clock = 1};
    jd_error err;
    r.e = jd_engine_new(r.path, &o, &err); /* the same v1 scripts, a not in memory */
    assert_non_null(r.e);
    jd_engine_on_action(r.e, tu_on_action, &r);
    tu_open_store(&r, "pinstore", NULL);
    reload(&r, PINNED("v2", ""));
    assert_true(pinned(&r, "a"));
    tu_track(&r, "a", "Signed Up", "2026-01-01T02:00:00Z", NULL); /* no second instance */
    EXPECT_COUNT(&r, 0, "welcome-v2", NULL);
    tu_advance(&r, "2026-01-03T12:00:00Z");
    EXPECT_COUNT(&r, 1, "nudge-v1", "\"a\"", NULL);
    EXPECT_COUNT(&r, 0, "nudge-v2", NULL);
    tu_free(&r);
}

/* A later edit that declares migrate moves the pinned people too; a pinned person whose
 * journey a later edit removes is forgotten with their timers. */
static void test_pinned_then_migrated(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r, PINNED("v1", ""));
    tu_track(&r, "a", "Signed Up", "2026-01-01T00:00:00Z", NULL);
    tu_track(&r, "b", "Signed Up", "2026-01-01T00:00:00Z", NULL);
    tu_track(&r, "b", "Paid", "2026-01-01T00:30:00Z", NULL); /* b left under v1 */
    reload(&r, PINNED("v2", ""));
    assert_true(pinned(&r, "a"));
    reload(&r, V2("  migrate = { signed_up = \"onboarding\" },\n"));
    assert_false(pinned(&r, "a"));
    assert_true(in_stage(&r, "a", "onboarding"));
    tu_advance(&r, "2026-01-04T00:00:00Z");
    EXPECT_COUNT(&r, 0, "nudge-v1", NULL);
    EXPECT_COUNT(&r, 1, "v2-nudge", "\"a\"", NULL);
    tu_track(&r, "b", "Signed Up", "2026-01-04T01:00:00Z", NULL); /* left: never again */
    assert_false(in_stage(&r, "b", "onboarding"));
    tu_free(&r);

    tu_start(&r, PINNED("v1", ""));
    tu_track(&r, "a", "Signed Up", "2026-01-01T00:00:00Z", NULL);
    reload(&r, PINNED("v2", ""));
    tu_track(&r, "a", "Paid", "2026-01-01T01:00:00Z", NULL); /* leaves: unpinned, its v1 timer stale */
    reload(&r, HDR "j.journey \"other\" { entry = j.on(\"X\"), j.stage \"s\" {} }\n");
    tu_advance(&r, "2026-01-04T00:00:00Z");
    EXPECT_COUNT(&r, 0, "nudge-", NULL);
    tu_free(&r);
}

/* Rows of stored script versions ("gen/..." in the meta database): the current scripts'
 * and one per earlier version people are pinned to. */
static int count_gen(const void *k, size_t kn, const void *v, size_t vn, void *ud)
{
    (void)v;
    (void)vn;
    if (kn < 4 || memcmp(k, "gen/", 4) != 0)
        return 1;
    ++*(int *)ud;
    return 0;
}

static int stored_versions(tu_run *r)
{
    int n = 0;
    assert_true(jd_store_scan(jd_engine_store(r->e), JD_DB_META, "gen/", 4, count_gen, &n) >= 0);
    return n;
}

/* A new engine from the scripts now in r->path on the store name (the old one is freed). */
static void restart(tu_run *r, const char *name, const jd_store_opts *so)
{
    jd_engine_free(r->e);
    jd_options o = {.virtual_clock = 1};
    jd_error err;
    r->e = jd_engine_new(r->path, &o, &err);
    if (!r->e)
        fail_msg("restart: %s", err.text);
    jd_engine_on_action(r->e, tu_on_action, r);
    jd_engine_on_log(r->e, tu_on_log, r);
    tu_open_store(r, name, so);
}

static uint64_t metric(tu_run *r, const char *name)
{
    char *m = jd_engine_metrics(r->e);
    assert_non_null(m);
    char pat[128];
    snprintf(pat, sizeof pat, "\n%s ", name);
    const char *p = strstr(m, pat);
    uint64_t v = p ? strtoull(p + strlen(pat), NULL, 10) : UINT64_MAX;
    free(m);
    return v;
}

/* The earlier scripts of pinned people are kept in the store: after a restart with the new
 * scripts they still run the version they entered with — its timers, triggers and hooks —
 * and the stored version goes once the last of them left. */
static void test_pinned_survive_restart(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r, PINNED("v1", ""));
    tu_open_store(&r, "restart", NULL);
    tu_track(&r, "a", "Signed Up", "2026-01-01T00:00:00Z", NULL);
    tu_track(&r, "c", "Signed Up", "2026-01-01T00:00:00Z", NULL);
    reload(&r, PINNED("v2", ""));
    tu_track(&r, "b", "Signed Up", "2026-01-01T01:00:00Z", NULL);
    assert_true(pinned(&r, "a"));
    tu_checkpoint(&r, 1);
    assert_int_equal(stored_versions(&r), 2); /* v2 (current) and v1 */

    restart(&r, "restart", NULL); /* r.path holds v2 */
    assert_int_equal(metric(&r, "journeyd_pinned_versions"), 1);
    assert_int_equal(metric(&r, "journeyd_pinned_people"), 2);
    assert_true(pinned(&r, "a"));
    assert_true(pinned(&r, "c"));
    assert_false(pinned(&r, "b"));
    /* the v1 nudges stored before the restart fire with v1's hook */
    tu_advance(&r, "2026-01-03T12:00:00Z");
    EXPECT_COUNT(&r, 1, "nudge-v1", "\"a\"", NULL);
    EXPECT_COUNT(&r, 1, "nudge-v1", "\"c\"", NULL);
    EXPECT_COUNT(&r, 1, "nudge-v2", "\"b\"", NULL);
    EXPECT_COUNT(&r, 0, "nudge-v2", "\"a\"", NULL);
    /* a's next event moves it on under v1, and v1's stage timer follows */
    tu_track(&r, "a", "Project Created", "2026-01-04T00:00:00Z", NULL);
    assert_true(in_stage(&r, "a", "activated"));
    tu_advance(&r, "2026-01-05T12:00:00Z");
    EXPECT_COUNT(&r, 1, "tip-v1", "\"a\"", NULL);
    EXPECT_COUNT(&r, 0, "tip-v2", NULL);
    tu_checkpoint(&r, 2);
    assert_int_equal(stored_versions(&r), 2);

    /* once restarted again, a leaves: v1 stays for c */
    restart(&r, "restart", NULL);
    assert_true(pinned(&r, "a"));
    tu_track(&r, "a", "Paid", "2026-01-06T00:00:00Z", NULL);
    assert_false(pinned(&r, "a"));
    tu_checkpoint(&r, 3);
    assert_int_equal(stored_versions(&r), 2);
    tu_track(&r, "c", "Paid", "2026-01-06T01:00:00Z", NULL);
    assert_false(pinned(&r, "c"));
    tu_checkpoint(&r, 4);
    assert_int_equal(stored_versions(&r), 1); /* nobody on v1: its row left with them */
    assert_int_equal(metric(&r, "journeyd_pinned_versions"), 0);

    restart(&r, "restart", NULL);
    assert_int_equal(metric(&r, "journeyd_pinned_versions"), 0);
    assert_int_equal(stored_versions(&r), 1);
    tu_track(&r, "a", "Signed Up", "2026-01-07T00:00:00Z", NULL); /* left: never again */
    EXPECT_COUNT(&r, 0, "welcome-v2", "\"a\"", NULL);
    char *js = jd_engine_journey_json(r.e, "trial", 5);
    assert_non_null(strstr(js, "\"converted\":2"));
    assert_non_null(strstr(js, "\"active\":1"));
    free(js);
    tu_free(&r);
}

/* A restart with edited scripts (no reload in between) pins the people of a journey the
 * edit changes without migrate to the scripts of the last checkpoint, as a reload would. */
static void test_restart_with_edited_scripts(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r, PINNED("v1", ""));
    tu_open_store(&r, "edited", NULL);
    tu_track(&r, "a", "Signed Up", "2026-01-01T00:00:00Z", NULL);
    tu_checkpoint(&r, 1);
    rewrite(&r, PINNED("v2", ""));
    restart(&r, "edited", NULL);
    assert_true(pinned(&r, "a"));
    tu_track(&r, "b", "Signed Up", "2026-01-01T01:00:00Z", NULL);
    tu_advance(&r, "2026-01-03T12:00:00Z");
    EXPECT_COUNT(&r, 1, "nudge-v1", "\"a\"", NULL);
    EXPECT_COUNT(&r, 1, "nudge-v2", "\"b\"", NULL);
    tu_checkpoint(&r, 2);
    assert_int_equal(stored_versions(&r), 2);
    /* the same scripts again: nothing changes */
    restart(&r, "edited", NULL);
    assert_true(pinned(&r, "a"));
    assert_false(pinned(&r, "b"));
    tu_track(&r, "a", "Paid", "2026-01-04T00:00:00Z", NULL);
    tu_checkpoint(&r, 3);
    assert_int_equal(stored_versions(&r), 1);
    tu_free(&r);
}

/* Pinned people leave memory like the others; read back, they are pinned again. */
static void test_pinned_evicted(void **state)
{
    (void)state;
    tu_run r;
    jd_store_opts so = {.cache_users = 1};
    tu_start(&r, PINNED("v1", ""));
    tu_open_store(&r, "evict", &so);
    tu_track(&r, "a", "Signed Up", "2026-01-01T00:00:00Z", NULL);
    tu_track(&r, "b", "Signed Up", "2026-01-01T00:00:00Z", NULL);
    reload(&r, PINNED("v2", ""));
    tu_track(&r, "c", "Signed Up", "2026-01-01T01:00:00Z", NULL);
    tu_checkpoint(&r, 1);
    assert_int_equal(jd_engine_stat(r.e, "users"), 1); /* a and b left memory (c was last) */
    assert_int_equal(metric(&r, "journeyd_pinned_people"), 2);
    assert_true(pinned(&r, "a"));
    assert_int_equal(jd_engine_stat(r.e, "users"), 2);
    tu_track(&r, "a", "Project Created", "2026-01-02T00:00:00Z", NULL);
    assert_true(in_stage(&r, "a", "activated"));
    tu_advance(&r, "2026-01-03T12:00:00Z");
    EXPECT_COUNT(&r, 1, "tip-v1", "\"a\"", NULL);
    EXPECT_COUNT(&r, 1, "nudge-v1", "\"b\"", NULL); /* b's stored timer read b back, pinned */
    EXPECT_COUNT(&r, 1, "nudge-v2", "\"c\"", NULL);
    EXPECT_COUNT(&r, 0, "nudge-v2", "\"b\"", NULL);
    assert_true(pinned(&r, "b"));
    assert_int_equal(metric(&r, "journeyd_pinned_people"), 2);
    tu_free(&r);
}

/* The windowed funnel counts pinned people under the current journey and the stages of
 * the same name (v2 adds a first stage: the indexes differ). */
static void test_pinned_in_analytics(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r, PINNED("v1", ""));
    tu_track(&r, "a", "Signed Up", "2026-01-01T00:00:00Z", NULL);
    tu_track(&r, "b", "Signed Up", "2026-01-01T00:00:00Z", NULL);
    reload(&r, HDR "j.journey \"trial\" {\n"
                   "  entry = j.on(\"Signed Up\"),\n"
                   "  goal = j.on(\"Paid\"),\n"
                   "  j.stage \"intro\" { j.on(\"Ready\"):go \"signed_up\" },\n"
                   "  j.stage \"signed_up\" { j.on(\"Project Created\"):go \"activated\" },\n"
                   "  j.stage \"activated\" {},\n"
                   "}\n");
    assert_true(pinned(&r, "a"));
    tu_track(&r, "a", "Project Created", "2026-01-01T00:10:00Z", NULL);
    tu_track(&r, "b", "Paid", "2026-01-01T00:20:00Z", NULL);
    EXPECT_COUNT(&r, 2, "welcome-v1", NULL);
    char *f = jd_engine_funnel_json(r.e, "trial", 5, "1h");
    assert_non_null(f);
    assert_non_null(strstr(f, "\"converted\":1,"));
    assert_non_null(strstr(f, "{\"name\":\"intro\",\"entered\":0,\"now\":0,\"moved_on\":0,"));
    assert_non_null(
        strstr(f, "{\"name\":\"signed_up\",\"entered\":2,\"now\":0,\"moved_on\":1,\"timed_out\":0,\"exited\":0,"
                  "\"converted\":1,"));
    assert_non_null(strstr(f, "\"moved_to_all_time\":{\"activated\":1}"));
    assert_non_null(strstr(f, "{\"name\":\"activated\",\"entered\":1,\"now\":1,"));
    free(f);
    tu_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_version_stable_and_sensitive),
        cmocka_unit_test(test_migrate_moves_mapped_people),
        cmocka_unit_test(test_kept_stage_keeps_timers),
        cmocka_unit_test(test_no_migrate_keeps_people),
        cmocka_unit_test(test_action_ids_unchanged),
        cmocka_unit_test(test_pinned_keep_their_version),
        cmocka_unit_test(test_pinned_across_reloads),
        cmocka_unit_test(test_pinned_from_store),
        cmocka_unit_test(test_pinned_then_migrated),
        cmocka_unit_test(test_pinned_survive_restart),
        cmocka_unit_test(test_restart_with_edited_scripts),
        cmocka_unit_test(test_pinned_evicted),
        cmocka_unit_test(test_pinned_in_analytics),
        cmocka_unit_test(test_bad_migrate),
        cmocka_unit_test(test_version_in_store),
    };
    return cmocka_run_group_tests(tests, tu_group_setup, tu_group_teardown);
}
