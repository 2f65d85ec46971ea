/* test_script: load-time errors ("file:line: message" from jd_engine_new) and the
 * sandbox hooks run in — missing dangerous globals, the per-call time limit, the memory
 * limit, sealed globals — each followed by proof that the engine carries on. */
#define _GNU_SOURCE
#include "testutil.h"

#include <signal.h>
#include <sys/wait.h>

static int line_of(const char *src, const char *marker)
{
    const char *p = strstr(src, marker);
    assert_non_null(p);
    int line = 1;
    for (const char *q = src; q < p; q++)
        line += *q == '\n';
    return line;
}

/* tu_load with explicit options (limits). */
static jd_engine *load_opts(tu_run *r, const char *lua, const jd_options *o, jd_error *err)
{
    memset(r, 0, sizeof *r);
    snprintf(r->path, sizeof r->path, "/tmp/jdtest-%d-XXXXXX.lua", (int)getpid());
    int fd = mkstemps(r->path, 4);
    assert_true(fd >= 0);
    size_t n = strlen(lua);
    assert_int_equal(write(fd, lua, n), (ssize_t)n);
    close(fd);
    r->e = jd_engine_new(r->path, o, err);
    if (r->e) {
        jd_engine_on_action(r->e, tu_on_action, r);
        jd_engine_on_log(r->e, tu_on_log, r);
    }
    return r->e;
}

/* ---------------------------------------------------------------- load-time errors */

typedef struct load_case {
    const char *name;
    const char *src;    /* the failing line carries the marker "--@L" */
    const char *phrase; /* expected in the message */
} load_case;

static const load_case load_cases[] = {
    {"go to an unknown stage",
     HDR "j.journey \"x\" {\n"
         "  entry = j.on(\"A\"),\n"
         "  j.stage \"s\" {\n"
         "    j.on(\"B\"):go \"nowhere\", --@L\n"
         "  },\n"
         "}\n",
     "unknown stage 'nowhere'"},
    {"an entry going to an unknown stage",
     HDR "j.journey \"x\" {\n"
         "  entry = j.on(\"A\"):go \"zzz\", --@L\n"
         "  j.stage \"s\" { j.on(\"B\"):go \"s\" },\n"
         "}\n",
     "unknown stage 'zzz'"},
    {"a bad duration in j.after",
     HDR "j.journey \"x\" {\n"
         "  entry = j.on(\"A\"),\n"
         "  j.stage \"s\" {\n"
         "    j.after(\"soon\", function(ctx) end), --@L\n"
         "  },\n"
         "}\n",
     "bad duration 'soon'"},
    {"a duration without a unit",
     HDR "j.journey \"x\" {\n"
         "  entry = j.on(\"A\"),\n"
         "  j.stage \"s\" {\n"
         "    j.on(\"B\"):go \"s\",\n"
         "    j.after(\"10\"):go \"s\", --@L\n"
         "  },\n"
         "}\n",
     "bad duration '10'"},
    {"an alert on an unknown channel",
     HDR "j.journey \"x\" { --@L\n"
         "  entry = j.on(\"A\"),\n"
         "  j.stage \"s\" { j.on(\"B\"):go \"s\" },\n"
         "  alert = { stage = \"s\", dropoff_above = 0.5, window = \"24h\", min_sample = 10, channel = \"pager\" },\n"
         "}\n",
     "unknown channel 'pager'"},
    {"an unknown where operator", HDR "j.on(\"A\", { amount = { greater = 5 } }, function(ctx) end) --@L\n",
     "unknown operator 'greater'"},
    {"an unknown where path", HDR "j.on(\"A\", { [\"user.name\"] = \"x\" }, function(ctx) end) --@L\n",
     "bad path 'user.name'"},
    {"a syntax error", HDR "local ok = true\nlocal x = = 1 --@L\n", "near '='"},
    {"a runtime error while loading", HDR "local t = nil\nlocal y = t.x --@L\n", "attempt to index"},
    {"a trigger never used, without a function",
     HDR "j.on(\"Signed Up\", function(ctx) end)\nj.on(\"Lonely\") --@L\nj.on(\"Other\", function(ctx) end)\n",
     "never used"},
    {"j.after outside a stage", HDR "j.after(\"1d\", function(ctx) end) --@L\n", "inside a stage"},
    {"j.after as a goal",
     HDR "j.journey \"x\" {\n"
         "  entry = j.on(\"A\"),\n"
         "  goal = j.after(\"1d\"), --@L\n"
         "  j.stage \"s\" { j.on(\"B\"):go \"s\" },\n"
         "}\n",
     "inside a stage"},
    {"j.after as an entry",
     HDR "j.journey \"x\" {\n"
         "  entry = j.after(\"1d\"), --@L\n"
         "  j.stage \"s\" { j.on(\"B\"):go \"s\" },\n"
         "}\n",
     "inside a stage"},
    {"a stage trigger that does nothing",
     HDR "j.journey \"x\" {\n"
         "  entry = j.on(\"A\"),\n"
         "  j.stage \"s\" {\n"
         "    j.on(\"B\"), --@L\n"
         "  },\n"
         "}\n",
     "does nothing"},
    {"a bad reentry",
     HDR "j.journey \"x\" { --@L\n"
         "  entry = j.on(\"A\"),\n"
         "  reentry = \"sometimes\",\n"
         "  j.stage \"s\" { j.on(\"B\"):go \"s\" },\n"
         "}\n",
     "reentry"},
};

static void test_load_errors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof load_cases / sizeof load_cases[0]; i++) {
        const load_case *c = &load_cases[i];
        tu_run r;
        jd_error err;
        memset(&err, 0, sizeof err);
        jd_engine *e = tu_load(&r, c->src, &err);
        if (e) {
            tu_free(&r);
            fail_msg("case '%s': loaded without an error", c->name);
        }
        char want[320];
        snprintf(want, sizeof want, "%s:%d:", r.path, line_of(c->src, "--@L"));
        int ok = strstr(err.text, want) == err.text && strstr(err.text, c->phrase) != NULL;
        tu_free(&r);
        if (!ok)
            fail_msg("case '%s': expected '%s ...%s...', got '%s'", c->name, want, c->phrase, err.text);
    }
}

static void test_valid_scripts_load(void **state)
{
    (void)state;
    /* the positive twins of the cases above, so the failures are about what they claim */
    static const char *const ok[] = {
        HDR "j.journey \"x\" { entry = j.on(\"A\"), j.stage \"s\" { j.on(\"B\"):go \"t\" }, j.stage \"t\" { "
            "j.after(\"90s\"):go \"s\", j.after(\"1w\"):exit() },\n"
            "  alert = { stage = \"s\", dropoff_above = 0.5, window = \"24h\", min_sample = 10, channel = \"team\" },\n"
            "  reentry = \"12h\" }\n"
            "j.on(\"A\", { amount = { gt = 5 }, [\"user.traits.x\"] = 1 }, function(ctx) end)\n",
        HDR "local helper = function() return 1 end\nj.on(\"Z\", function(ctx) helper() end)\n",
        "local j = require \"journey\"\n", /* no journeys at all */
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        tu_run r;
        jd_error err;
        if (!tu_load(&r, ok[i], &err))
            fail_msg("script %zu: %s", i, err.text);
        tu_free(&r);
    }
}

/* ---------------------------------------------------------------- sandbox */

static void test_sandbox_has_no_dangerous_globals(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r, HDR "local function probe()\n"
                     "  local ok, m = pcall(require, \"io\")\n"
                     "  local real_io = ok and type(m) == \"table\" and m.open ~= nil\n"
                     "  return (\"io=%s debug=%s execute=%s load=%s loadfile=%s dofile=%s exit=%s remove=%s "
                     "require_io=%s time=%s\"):format(\n"
                     "    type(io), type(debug), type(os.execute), type(load), type(loadfile), type(dofile),\n"
                     "    type(os.exit), type(os.remove), tostring(real_io), type(os.time))\n"
                     "end\n"
                     "local at_load = probe()\n"
                     "j.on(\"Probe\", function(ctx) ctx:send(\"email\", { load = at_load, hook = probe() }) end)\n");
    tu_track(&r, "u1", "Probe", "2024-01-01T00:00:00Z", NULL);
    const char *want = "io=nil debug=nil execute=nil load=nil loadfile=nil dofile=nil exit=nil remove=nil "
                       "require_io=false time=function";
    char a[512], b[512];
    snprintf(a, sizeof a, "\"load\":\"%s\"", want);
    snprintf(b, sizeof b, "\"hook\":\"%s\"", want);
    EXPECT_COUNT(&r, 1, a, b);
    tu_free(&r);
}

static const char *spin_src =
    HDR "j.on(\"Spin\", function(ctx) ctx:send(\"email\", \"before-spin\"); while true do end end)\n"
        "j.on(\"Sneak\", function(ctx)\n"
        "  local ok, err = pcall(function() while true do end end)\n"
        "  ctx:send(\"email\", { swallowed = tostring(err) })\n"
        "end)\n"
        "j.on(\"Sneak2\", function(ctx)\n"
        "  for i = 1, 3 do pcall(function() while true do end end) end\n"
        "  ctx:send(\"email\", \"swallowed-twice\")\n"
        "end)\n"
        "j.on(\"Sneak3\", function(ctx)\n"
        "  local ok = xpcall(function() while true do end end, function(m) return m end)\n"
        "  ctx:send(\"email\", \"swallowed-xpcall\")\n"
        "end)\n"
        "j.on(\"Next\", function(ctx) ctx:send(\"email\", \"next\") end)\n"
        "j.journey \"spin\" {\n"
        "  entry = j.on(\"Start\"),\n"
        "  j.stage \"s\" { enter = function(ctx) ctx:send(\"email\", \"enter-s\"); while true do end end,\n"
        "    j.on(\"Next\"):go \"t\" },\n"
        "  j.stage \"t\" { enter = function(ctx) ctx:send(\"email\", \"in-t\") end },\n"
        "}\n";

static void test_endless_loop_is_stopped(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r, spin_src);
    tu_track(&r, "u1", "Spin", "2024-01-01T00:00:00Z", NULL);
    EXPECT_COUNT(&r, 0, "before-spin");
    EXPECT_STAT(&r, "lua_errors", 1);
    EXPECT_LOGS(&r, 1, "error: lua error in rule/", "Spin", "time limit");
    tu_track(&r, "u1", "Next", "2024-01-01T00:01:00Z", NULL);
    EXPECT_COUNT(&r, 1, "\"payload\":\"next\"");
    EXPECT_STAT(&r, "lua_errors", 1);
    /* the stage is entered although its enter hook never returns */
    tu_track(&r, "u2", "Start", "2024-01-01T00:02:00Z", NULL);
    EXPECT_STAT(&r, "lua_errors", 2);
    EXPECT_COUNT(&r, 0, "enter-s");
    tu_track(&r, "u2", "Next", "2024-01-01T00:03:00Z", NULL);
    EXPECT_COUNT(&r, 1, "\"user\":\"u2\"", "in-t");
    EXPECT_COUNT(&r, 1, "\"user\":\"u2\"", "\"payload\":\"next\"");
    tu_free(&r);
}

static void test_pcall_cannot_swallow_the_time_limit(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r, spin_src);
    const char *names[] = {"Sneak", "Sneak2", "Sneak3"};
    for (int i = 0; i < 3; i++) {
        tu_track(&r, "u1", names[i], "2024-01-01T00:00:00Z", NULL);
        EXPECT_STAT(&r, "lua_errors", (uint64_t)i + 1);
        EXPECT_LOGS(&r, 1, names[i], "time limit");
    }
    EXPECT_COUNT(&r, 0, "swallowed");
    tu_track(&r, "u1", "Next", "2024-01-01T00:01:00Z", NULL);
    EXPECT_COUNT(&r, 1, "\"payload\":\"next\"");
    tu_free(&r);
}

static void test_call_limit_option(void **state)
{
    (void)state;
    tu_run r;
    jd_error err;
    jd_options o = {.virtual_clock = 1, .call_limit_ms = 7};
    if (!load_opts(&r, spin_src, &o, &err))
        fail_msg("%s", err.text);
    tu_track(&r, "u1", "Spin", "2024-01-01T00:00:00Z", NULL);
    EXPECT_LOGS(&r, 1, "Spin", "time limit of 7 ms");
    tu_track(&r, "u1", "Next", "2024-01-01T00:01:00Z", NULL);
    EXPECT_COUNT(&r, 1, "next");
    tu_free(&r);
}

static const char *mem_src =
    HDR "j.on(\"Rep\", function(ctx) local s = string.rep(\"x\", 2^30); ctx:send(\"email\", \"rep-done\") end)\n"
        "j.on(\"Rep31\", function(ctx) local s = string.rep(\"x\", 2^31); ctx:send(\"email\", \"rep31-done\") end)\n"
        "j.on(\"Cat\", function(ctx) local s = \"x\"; while true do s = s .. s end end)\n"
        "j.on(\"Next\", function(ctx) local s = string.rep(\"z\", 4096); ctx:send(\"email\", { n = #s }) end)\n";

static void test_memory_bomb_is_stopped(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r, mem_src);
    tu_track(&r, "u1", "Rep", "2024-01-01T00:00:00Z", NULL);
    EXPECT_COUNT(&r, 0, "rep-done");
    EXPECT_STAT(&r, "lua_errors", 1);
    EXPECT_LOGS(&r, 1, "error: lua error in rule/", "Rep", "memory");
    tu_track(&r, "u1", "Next", "2024-01-01T00:01:00Z", NULL);
    EXPECT_COUNT(&r, 1, "\"n\":4096");
    /* 2^31 is refused too (Lua's own string size check or the memory limit) */
    tu_track(&r, "u1", "Rep31", "2024-01-01T00:02:00Z", NULL);
    EXPECT_COUNT(&r, 0, "rep31-done");
    EXPECT_STAT(&r, "lua_errors", 2);
    EXPECT_LOGS(&r, 1, "error: lua error in rule/", "Rep31");
    tu_track(&r, "u1", "Next", "2024-01-01T00:03:00Z", NULL);
    EXPECT_COUNT(&r, 2, "\"n\":4096");
    assert_true(jd_engine_stat(r.e, "lua_memory") < (64u << 20));
    tu_free(&r);
}

static void test_growing_concatenation_is_stopped(void **state)
{
    (void)state;
    tu_run r;
    jd_error err;
    /* a small limit keeps this fast; the default (256 MiB) takes the same path */
    jd_options o = {.virtual_clock = 1, .memory_limit = 32u << 20};
    if (!load_opts(&r, mem_src, &o, &err))
        fail_msg("%s", err.text);
    tu_track(&r, "u1", "Cat", "2024-01-01T00:00:00Z", NULL);
    EXPECT_STAT(&r, "lua_errors", 1);
    EXPECT_LOGS(&r, 1, "error: lua error in rule/", "Cat", "memory");
    for (int i = 0; i < 3; i++) {
        char t[32];
        snprintf(t, sizeof t, "2024-01-01T00:0%d:00Z", i + 1);
        tu_track(&r, "u1", "Next", t, NULL);
    }
    EXPECT_COUNT(&r, 3, "\"n\":4096");
    EXPECT_STAT(&r, "lua_errors", 1);
    tu_free(&r);
}

static void test_new_globals_in_hooks_are_errors(void **state)
{
    (void)state;
    tu_run r;
    const char *src = HDR "shared_at_load = 1\n"
                          "j.on(\"Leak\", function(ctx) ctx:send(\"email\", \"leak\"); counter_xyz = 1 end)\n"
                          "j.on(\"Update\", function(ctx) shared_at_load = shared_at_load + 1; ctx:send(\"email\", { "
                          "shared = shared_at_load, undeclared = tostring(never_set_abc) }) end)\n"
                          "j.on(\"Env\", function(ctx) _ENV.via_env_q = 2 end)\n";
    tu_start(&r, src);
    tu_track(&r, "u1", "Leak", "2024-01-01T00:00:00Z", NULL);
    EXPECT_COUNT(&r, 0, "leak");
    EXPECT_STAT(&r, "lua_errors", 1);
    EXPECT_LOGS(&r, 1, "error: lua error in rule/", "Leak", "counter_xyz");
    tu_track(&r, "u1", "Env", "2024-01-01T00:00:30Z", NULL);
    EXPECT_STAT(&r, "lua_errors", 2);
    EXPECT_LOGS(&r, 1, "Env", "via_env_q");
    /* globals made while loading stay usable; reading an unknown one is nil */
    tu_track(&r, "u1", "Update", "2024-01-01T00:01:00Z", NULL);
    EXPECT_COUNT(&r, 1, "\"shared\":2", "\"undeclared\":\"nil\"");
    EXPECT_STAT(&r, "lua_errors", 2);
    tu_free(&r);
}

static void test_ctx_is_read_only(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r, HDR "j.on(\"Write\", function(ctx) ctx:send(\"email\", \"wrote\"); ctx.user = 1 end)\n"
                     "j.on(\"Next\", function(ctx) ctx:send(\"email\", \"next\") end)\n");
    tu_track(&r, "u1", "Write", "2024-01-01T00:02:00Z", NULL);
    EXPECT_STAT(&r, "lua_errors", 1);
    EXPECT_LOGS(&r, 1, "Write", "read-only");
    EXPECT_COUNT(&r, 0, "wrote");
    tu_track(&r, "u1", "Next", "2024-01-01T00:03:00Z", NULL);
    EXPECT_COUNT(&r, 1, "next");
    tu_free(&r);
}

/* Regression (was an engine bug; script.c count_hook): on a timeout the hook is re-armed (count 1) only on
 * the thread that was running — inside a coroutine, that is the coroutine. The error
 * then ends the coroutine, coroutine.resume (or pcall(coroutine.wrap(f))) returns it
 * as a value, and the hook's own thread keeps its count-1000 hook: the hook finishes
 * normally and its actions are taken. Observed: action {"swallowed":"script exceeded
 * its time limit of 50 ms"}, lua_errors 0. Expected: the hook fails (no action,
 * lua_errors 1), as with pcall. */
static void test_coroutine_swallows_the_time_limit(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r, HDR "j.on(\"Co\", function(ctx)\n"
                     "  local co = coroutine.create(function() while true do end end)\n"
                     "  local ok, err = coroutine.resume(co)\n"
                     "  ctx:send(\"email\", { swallowed = tostring(err) })\n"
                     "end)\n"
                     "j.on(\"Wrap\", function(ctx)\n"
                     "  local ok, err = pcall(coroutine.wrap(function() while true do end end))\n"
                     "  ctx:send(\"email\", { swallowed = tostring(err) })\n"
                     "end)\n");
    tu_track(&r, "u1", "Co", "2024-01-01T00:00:00Z", NULL);
    tu_track(&r, "u1", "Wrap", "2024-01-01T00:01:00Z", NULL);
    EXPECT_COUNT(&r, 0, "swallowed");
    EXPECT_STAT(&r, "lua_errors", 2);
    tu_free(&r);
}

/* Waits up to ms for a child; kills it when it has not ended (a hang). 1 when it ended. */
static int wait_child(pid_t pid, int ms, int *status)
{
    for (int i = 0; i < ms / 10; i++) {
        if (waitpid(pid, status, WNOHANG) == pid)
            return 1;
        usleep(10000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, status, 0);
    return 0;
}

/* Calls start without the instruction hook; the watch thread's signal arms it on the
 * state the call began in (script.c). A coroutine is another state: one made while the
 * script loaded, whose body loops forever when a hook resumes it, must be stopped all
 * the same (coroutine.create and .wrap give it the hook). Run in a child, so that a
 * loop nothing stops fails the test instead of hanging it. */
static void test_coroutine_made_at_load_is_stopped(void **state)
{
    (void)state;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        tu_run r;
        tu_start(&r, HDR "local co = coroutine.create(function() coroutine.yield(); while true do end end)\n"
                         "coroutine.resume(co)\n"
                         "local wr = coroutine.wrap(function() coroutine.yield(); while true do end end)\n"
                         "wr()\n"
                         "j.on(\"Co\", function(ctx) coroutine.resume(co); ctx:send(\"email\", \"co-done\") end)\n"
                         "j.on(\"Wrap\", function(ctx) wr(); ctx:send(\"email\", \"wrap-done\") end)\n");
        tu_track(&r, "u1", "Co", "2024-01-01T00:00:00Z", NULL);
        tu_track(&r, "u1", "Wrap", "2024-01-01T00:01:00Z", NULL);
        int ok = jd_engine_stat(r.e, "lua_errors") == 2 && tu_count(&r, "done", NULL) == 0;
        tu_free(&r);
        _exit(ok ? 0 : 1);
    }
    int status = 0;
    assert_true(wait_child(pid, 10000, &status));
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

/* Regression (was an engine bug; script.c jd_script_free / the per-call limit): a hook can register a __gc
 * finalizer; finalizers left at shutdown run in lua_close() with no time limit, so a
 * `while true do end` finalizer makes jd_engine_free hang forever (observed with
 * `journeyd replay`: never exits). Expected: the loop is stopped like any hook code.
 * The free runs in a child so this test fails instead of hanging. */
static void test_gc_finalizer_hangs_engine_free(void **state)
{
    (void)state;
    tu_run r;
    tu_start(&r, HDR "j.on(\"Trap\", function(ctx)\n"
                     "  setmetatable({}, { __gc = function() while true do end end })\n"
                     "  ctx:send(\"email\", \"armed\")\n"
                     "end)\n");
    tu_track(&r, "u1", "Trap", "2024-01-01T00:00:00Z", NULL);
    /* finalizers are refused: the hook fails, saying why */
    EXPECT_COUNT(&r, 0, "armed");
    EXPECT_STAT(&r, "lua_errors", 1);
    EXPECT_LOGS(&r, 1, "Trap", "__gc");
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        jd_engine_free(r.e);
        _exit(0);
    }
    int status = 0, done = wait_child(pid, 3000, &status);
    if (!done)
        r.e = NULL; /* freeing it here would hang too: leak it */
    tu_free(&r);
    assert_true(done);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_valid_scripts_load),
        cmocka_unit_test(test_sandbox_has_no_dangerous_globals),
        cmocka_unit_test(test_endless_loop_is_stopped),
        cmocka_unit_test(test_pcall_cannot_swallow_the_time_limit),
        cmocka_unit_test(test_call_limit_option),
        cmocka_unit_test(test_memory_bomb_is_stopped),
        cmocka_unit_test(test_growing_concatenation_is_stopped),
        cmocka_unit_test(test_new_globals_in_hooks_are_errors),
        cmocka_unit_test(test_ctx_is_read_only),
        cmocka_unit_test(test_coroutine_swallows_the_time_limit),
        cmocka_unit_test(test_coroutine_made_at_load_is_stopped),
        cmocka_unit_test(test_gc_finalizer_hangs_engine_free),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
