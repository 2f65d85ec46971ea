/* test_dispatch: the dispatcher against real receivers on loopback — receiver.py (HTTP,
 * verifies Standard Webhooks signatures with its own code) and smtp_sink.py — on a
 * libevent loop. Requests are made by the engine's formatters from a journey script,
 * so this is formatter -> signing -> libcurl -> receiver end to end. Retry schedules
 * are compressed to milliseconds; every wait is bounded. */
#define _GNU_SOURCE
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>

#include "../unit/testutil.h"
#include "itutil.h"

#include "deliver.h"
#include "dispatch.h"

#define SECRET1 "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define SECRET2 "whsec_c2Vjb25kLXNlY3JldC1rZXk="

static proc recv_p, smtp_p;
static tu_run R;

/* The value of "t" of each line containing s, in file order (up to max). */
static size_t times_of(const char *path, const char *s, double *t, size_t max)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char *line = NULL;
    size_t cap = 0, n = 0;
    while (getline(&line, &cap, f) > 0 && n < max)
        if (strstr(line, s))
            t[n++] = strtod(strstr(line, "\"t\": ") + 5, NULL);
    free(line);
    fclose(f);
    return n;
}

/* ---------------------------------------------------------------- the loop and results */

typedef struct result {
    char id[64];
    jd_outcome outcome;
    int status;
    uint32_t attempts;
    int64_t next_ms;
    int64_t at_ms;
    char error[300];
} result;

static struct event_base *base;
static jd_dispatch *D;
static result results[256];
static size_t nresults;

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void on_result(void *ud, const jd_dispatch_result *r)
{
    (void)ud;
    assert_true(nresults < 256);
    result *x = &results[nresults++];
    snprintf(x->id, sizeof x->id, "%s", r->id);
    x->outcome = r->outcome;
    x->status = r->status;
    x->attempts = r->attempts;
    x->next_ms = r->next_attempt_ms;
    x->at_ms = wall_ms();
    snprintf(x->error, sizeof x->error, "%s", r->error);
}

static void tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

/* Runs the loop until n results whose id starts with prefix arrived with a final
 * outcome (or any outcome when final is 0), or timeout_ms passed. */
static size_t results_for(const char *prefix, int final)
{
    size_t n = 0;
    for (size_t i = 0; i < nresults; i++)
        if (strncmp(results[i].id, prefix, strlen(prefix)) == 0 && (!final || results[i].outcome != JD_RETRY_SCHEDULED))
            n++;
    return n;
}

static void run_until(const char *prefix, int final, size_t n, int64_t timeout_ms)
{
    struct event *t = event_new(base, -1, EV_PERSIST, tick, NULL);
    struct timeval tv = {0, 10000};
    event_add(t, &tv);
    int64_t end = wall_ms() + timeout_ms;
    while (results_for(prefix, final) < n && wall_ms() < end)
        event_base_loop(base, EVLOOP_ONCE);
    event_free(t);
}

static void dump(void)
{
    for (size_t i = 0; i < nresults; i++)
        fprintf(stderr, "  result %zu: %s outcome %d status %d attempts %u error %s\n", i, results[i].id,
                results[i].outcome, results[i].status, results[i].attempts, results[i].error);
}

static const result *nth_result(const char *id, size_t k)
{
    for (size_t i = 0; i < nresults; i++)
        if (strcmp(results[i].id, id) == 0 && k-- == 0)
            return &results[i];
    dump();
    fail_msg("no result %zu for %s", k, id);
    return NULL;
}

/* ---------------------------------------------------------------- channels and submits */

static void declare(const char *channel, const char *const *retry_text, uint32_t concurrency, int64_t timeout_ms)
{
    jd_error err;
    jd_channel_opts *o = jd_engine_channel_opts(R.e, channel, &err);
    if (!o)
        fail_msg("%s", err.text);
    int64_t retry[8];
    size_t nr = 0;
    for (; retry_text && retry_text[nr]; nr++)
        assert_int_equal(jd_parse_duration(retry_text[nr], &retry[nr]), 0);
    jd_channel_opts c = *o;
    if (retry_text) {
        c.retry_ms = retry;
        c.nretry = nr;
        c.no_retry = nr == 0;
    }
    c.jitter = -1;
    if (concurrency)
        c.concurrency = concurrency;
    if (timeout_ms)
        c.timeout_ms = timeout_ms;
    assert_int_equal(jd_dispatch_channel(D, channel, &c), 0);
    jd_channel_opts_free(o);
}

static void submit(const char *id, const char *channel, const char *user, const char *payload)
{
    char json[2048];
    snprintf(json, sizeof json,
             "{\"time\":\"2026-11-01T09:00:01.000Z\",\"user\":\"%s\",\"journey\":\"trial\",\"stage\":\"s\","
             "\"channel\":\"%s\",\"payload\":%s,\"id\":\"%s\"}",
             user, channel, payload, id);
    jd_request req;
    jd_error err;
    if (jd_engine_format_action(R.e, json, strlen(json), &req, &err))
        fail_msg("format: %s", err.text);
    assert_int_equal(jd_dispatch_submit(D, id, channel, user, &req, 0, 0), 0);
    jd_request_free(&req);
}

/* ---------------------------------------------------------------- setup */

static int group_setup(void **state)
{
    (void)state;
    snprintf(recv_p.out, sizeof recv_p.out, "/tmp/jd-recv-%d.jsonl", (int)getpid());
    snprintf(smtp_p.out, sizeof smtp_p.out, "/tmp/jd-smtp-%d.jsonl", (int)getpid());
    unlink(recv_p.out);
    unlink(smtp_p.out);
    const char *rargv[] = {"python3",
                           "tests/integration/receiver.py",
                           "--out",
                           recv_p.out,
                           "--secret",
                           SECRET1,
                           "--rule",
                           "/flaky=500x2",
                           "--rule",
                           "/busy=429x1,ra=1",
                           "--rule",
                           "/gone=410x1",
                           "--rule",
                           "/hang=hangx1",
                           "--rule",
                           "/down=503",
                           "--rule",
                           "/bad=400",
                           "--rule",
                           "/slow=sleep:0.15",
                           "--max-seconds",
                           "55",
                           NULL};
    const char *sargv[] = {"python3", "tests/integration/smtp_sink.py", "--out", smtp_p.out, "--max-seconds", "55",
                           NULL};
    if (start_proc(&recv_p, rargv) || start_proc(&smtp_p, sargv)) {
        fprintf(stderr, "cannot start the receivers (python3 tests/integration/receiver.py, smtp_sink.py)\n");
        stop_proc(&recv_p);
        return -1;
    }
    char url[64], smtp[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", recv_p.port);
    snprintf(smtp, sizeof smtp, "smtp://127.0.0.1:%d", smtp_p.port);
    setenv("RECV", url, 1);
    setenv("SMTP", smtp, 1);
    jd_error err;
    jd_options o = {.virtual_clock = 1};
    static const char *lua =
        "local j = require \"journey\"\n"
        "local R = j.env 'RECV'\n"
        "local function hook(name, path, extra)\n"
        "  local spec = { type = 'webhook', url = R .. path, secrets = { '" SECRET2 "', '" SECRET1 "' },\n"
        "                 allow_loopback = true }\n"
        "  for k, v in pairs(extra or {}) do spec[k] = v end\n"
        "  j.channel(name)(spec)\n"
        "end\n"
        "hook('crm', '/crm')\n"
        "hook('flaky', '/flaky')\n"
        "hook('busy', '/busy')\n"
        "hook('gone', '/gone')\n"
        "hook('hang', '/hang')\n"
        "hook('down', '/down')\n"
        "hook('bad', '/bad')\n"
        "hook('slow', '/slow')\n"
        "hook('guarded', '/guarded', { allow_loopback = false })\n"
        "hook('listed', '/listed', { allow_hosts = { 'crm.example.com' } })\n"
        "j.channel 'team' { type = 'slack', url = R .. '/slack', allow_loopback = true }\n"
        "j.channel 'pm' { type = 'postmark', token = 'pm-token', from = 'hi@acme.test', base_url = R .. '/pm',\n"
        "                 allow_loopback = true }\n"
        "j.channel 'sg' { type = 'sendgrid', api_key = 'SG.key', from = 'hi@acme.test', base_url = R .. '/sg',\n"
        "                 allow_loopback = true }\n"
        "j.channel 'mail' { type = 'smtp', url = j.env 'SMTP', from = 'Acme <hi@acme.test>', starttls = 'try',\n"
        "                   allow_loopback = true }\n";
    if (!tu_load_opts(&R, lua, &o, &err)) {
        fprintf(stderr, "load: %s\n", err.text);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    stop_proc(&recv_p);
    stop_proc(&smtp_p);
    tu_free(&R);
    return 0;
}

static int setup(void **state)
{
    (void)state;
    base = event_base_new();
    jd_dispatch_hooks h = {.on_result = on_result};
    D = jd_dispatch_new(base, &h);
    nresults = 0;
    return D ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    jd_dispatch_free(D);
    event_base_free(base);
    return 0;
}

/* ---------------------------------------------------------------- tests */

static void test_webhook_signed(void **state)
{
    (void)state;
    declare("crm", NULL, 0, 0);
    submit("wh-0001", "crm", "u1", "{\"template\":\"welcome\"}");
    run_until("wh-", 1, 1, 10000);
    const result *r = nth_result("wh-0001", 0);
    assert_int_equal(r->outcome, JD_DELIVERED);
    assert_int_equal(r->status, 200);
    assert_int_equal(r->attempts, 1);
    /* the receiver's own verification, with only SECRET1 of the two: rotation works */
    assert_int_equal(count_lines(recv_p.out, "\"path\": \"/crm\"", "\"signature_ok\": true",
                                 "\"webhook-id\": \"wh-0001\"", "\"content-type\": \"application/json\"",
                                 "\"user-agent\": \"journeyd\"", "\\\"payload\\\":{\\\"template\\\":\\\"welcome\\\"}",
                                 NULL),
                     1);
    assert_int_equal(count_lines(recv_p.out, "\"path\": \"/crm\"", "\"webhook-signature\": \"v1,", "= v1,", NULL), 1);
    assert_int_equal(count_lines(recv_p.out, SECRET1 + 6, NULL), 0);
}

static void test_provider_shapes(void **state)
{
    (void)state;
    declare("team", NULL, 0, 0);
    declare("pm", NULL, 0, 0);
    declare("sg", NULL, 0, 0);
    submit("shape-slack", "team", "u1", "{\"text\":\"trial stalled: u1\"}");
    submit("shape-pm", "pm", "u1", "{\"to\":\"ada@example.com\",\"subject\":\"Hi\",\"html\":\"<b>Hi</b>\"}");
    submit("shape-sg", "sg", "u1", "{\"to\":\"ada@example.com\",\"template\":\"d-1\",\"data\":{\"name\":\"Ada\"}}");
    run_until("shape-", 1, 3, 10000);
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(results[i].outcome, JD_DELIVERED);
    assert_int_equal(count_lines(recv_p.out, "\"path\": \"/slack\"", "{\\\"text\\\":\\\"trial stalled: u1\\\"}", NULL),
                     1);
    assert_int_equal(count_lines(recv_p.out, "\"path\": \"/pm/email\"", "\"x-postmark-server-token\": \"pm-token\"",
                                 "\\\"HtmlBody\\\":\\\"<b>Hi</b>\\\"", "\\\"From\\\":\\\"hi@acme.test\\\"", NULL),
                     1);
    assert_int_equal(count_lines(recv_p.out, "\"path\": \"/sg/v3/mail/send\"", "\"authorization\": \"Bearer SG.key\"",
                                 "\\\"template_id\\\":\\\"d-1\\\"",
                                 "\\\"dynamic_template_data\\\":{\\\"name\\\":\\\"Ada\\\"}", NULL),
                     1);
    /* only webhook channels carry the webhook headers */
    assert_int_equal(count_lines(recv_p.out, "\"path\": \"/slack\"", "webhook-id", NULL), 0);
}

static void test_smtp(void **state)
{
    (void)state;
    declare("mail", NULL, 0, 0);
    submit("mail-0001", "mail", "u1",
           "{\"to\":\"ada@example.com\",\"subject\":\"Welcome\",\"text\":\".dot line\\nbye\"}");
    run_until("mail-", 1, 1, 10000);
    const result *r = nth_result("mail-0001", 0);
    if (r->outcome != JD_DELIVERED)
        dump();
    assert_int_equal(r->outcome, JD_DELIVERED);
    assert_int_equal(count_lines(smtp_p.out, "\"from\": \"hi@acme.test\"", "\"to\": [\"ada@example.com\"]",
                                 "Subject: Welcome\\r\\n", "Message-ID: <mail-0001@journeyd>",
                                 "\\r\\n.dot line\\r\\nbye", NULL),
                     1);
}

static void test_retry_then_delivered(void **state)
{
    (void)state;
    static const char *const sched[] = {"100ms", "200ms", NULL};
    declare("flaky", sched, 0, 0);
    submit("flaky-1", "flaky", "u1", "{}");
    run_until("flaky-", 1, 1, 10000);
    const result *a = nth_result("flaky-1", 0), *b = nth_result("flaky-1", 1), *c = nth_result("flaky-1", 2);
    assert_int_equal(a->outcome, JD_RETRY_SCHEDULED);
    assert_int_equal(a->status, 500);
    assert_int_equal(a->attempts, 1);
    assert_true(a->next_ms >= a->at_ms + 95);
    assert_int_equal(b->outcome, JD_RETRY_SCHEDULED);
    assert_int_equal(b->attempts, 2);
    assert_true(b->next_ms >= b->at_ms + 195);
    assert_int_equal(c->outcome, JD_DELIVERED);
    assert_int_equal(c->attempts, 3);
    double t[3];
    assert_int_equal(times_of(recv_p.out, "\"path\": \"/flaky\"", t, 3), 3);
    assert_true(t[1] - t[0] >= 0.095 && t[2] - t[1] >= 0.195);
    /* the same webhook-id on every attempt, each signed */
    assert_int_equal(
        count_lines(recv_p.out, "\"path\": \"/flaky\"", "\"webhook-id\": \"flaky-1\"", "\"signature_ok\": true", NULL),
        3);
    jd_dispatch_stats st[16];
    size_t n = jd_dispatch_stats_get(D, st, 16);
    assert_int_equal(n, 1);
    assert_int_equal(st[0].delivered, 1);
    assert_int_equal(st[0].retried, 2);
    assert_int_equal(st[0].queued, 0);
    char *m = jd_dispatch_metrics(D);
    assert_non_null(strstr(m, "journeyd_deliveries_total{channel=\"flaky\",outcome=\"retry_scheduled\"} 2"));
    free(m);
}

static void test_retry_after(void **state)
{
    (void)state;
    static const char *const sched[] = {"100ms", NULL};
    declare("busy", sched, 0, 0);
    submit("busy-1", "busy", "u1", "{}");
    run_until("busy-", 1, 1, 10000);
    const result *a = nth_result("busy-1", 0), *b = nth_result("busy-1", 1);
    assert_int_equal(a->status, 429);
    assert_int_equal(a->outcome, JD_RETRY_SCHEDULED);
    assert_true(a->next_ms - a->at_ms >= 900); /* Retry-After: 1 beats the 100 ms step */
    assert_int_equal(b->outcome, JD_DELIVERED);
    double t[2];
    assert_int_equal(times_of(recv_p.out, "\"path\": \"/busy\"", t, 2), 2);
    assert_true(t[1] - t[0] >= 0.9);
}

static void test_gone_disables(void **state)
{
    (void)state;
    declare("gone", NULL, 0, 0);
    submit("gone-1", "gone", "u1", "{}");
    run_until("gone-1", 1, 1, 10000);
    assert_int_equal(nth_result("gone-1", 0)->outcome, JD_CHANNEL_DISABLED);
    assert_int_equal(nth_result("gone-1", 0)->status, 410);
    submit("gone-2", "gone", "u2", "{}");
    run_until("gone-2", 0, 1, 300); /* nothing happens: the channel is disabled */
    assert_int_equal(results_for("gone-2", 0), 0);
    jd_dispatch_stats st[4];
    jd_dispatch_stats_get(D, st, 4);
    assert_int_equal(st[0].disabled, 1);
    assert_int_equal(st[0].queued, 1);
    assert_int_equal(count_lines(recv_p.out, "\"path\": \"/gone\"", NULL), 1);
    jd_dispatch_enable(D, "gone");
    run_until("gone-2", 1, 1, 10000);
    assert_int_equal(nth_result("gone-2", 0)->outcome, JD_DELIVERED);
}

static void test_timeout_retries(void **state)
{
    (void)state;
    static const char *const sched[] = {"100ms", NULL};
    declare("hang", sched, 0, 1000);
    submit("hang-1", "hang", "u1", "{}");
    run_until("hang-", 1, 1, 10000);
    const result *a = nth_result("hang-1", 0), *b = nth_result("hang-1", 1);
    assert_int_equal(a->outcome, JD_RETRY_SCHEDULED);
    assert_int_equal(a->status, 0);
    assert_non_null(strstr(a->error, "imed out"));
    assert_int_equal(b->outcome, JD_DELIVERED);
    assert_int_equal(b->attempts, 2);
}

static void test_exhausted_and_permanent(void **state)
{
    (void)state;
    static const char *const sched[] = {"50ms", "50ms", NULL};
    declare("down", sched, 0, 0);
    declare("bad", sched, 0, 0);
    submit("dead-down", "down", "u1", "{}");
    submit("dead-bad", "bad", "u1", "{}");
    run_until("dead-", 1, 2, 10000);
    const result *r = nth_result("dead-down", 2);
    assert_int_equal(r->outcome, JD_DEAD);
    assert_int_equal(r->attempts, 3);
    assert_int_equal(r->status, 503);
    assert_non_null(strstr(r->error, "gave up after 3 attempts"));
    r = nth_result("dead-bad", 0);
    assert_int_equal(r->outcome, JD_DEAD); /* a 400 is not retried */
    assert_int_equal(r->attempts, 1);
    assert_int_equal(count_lines(recv_p.out, "\"path\": \"/bad\"", NULL), 1);
}

static void test_ssrf_guard(void **state)
{
    (void)state;
    declare("guarded", NULL, 0, 0);
    declare("listed", NULL, 0, 0);
    submit("ssrf-loop", "guarded", "u1", "{}");
    submit("ssrf-host", "listed", "u1", "{}");
    run_until("ssrf-", 1, 2, 10000);
    const result *r = nth_result("ssrf-loop", 0);
    assert_int_equal(r->outcome, JD_DEAD);
    assert_non_null(strstr(r->error, "127.0.0.1 is loopback"));
    r = nth_result("ssrf-host", 0);
    assert_int_equal(r->outcome, JD_DEAD);
    assert_non_null(strstr(r->error, "allow_hosts"));
    assert_int_equal(count_lines(recv_p.out, "\"path\": \"/guarded\"", NULL), 0);
    assert_int_equal(count_lines(recv_p.out, "\"path\": \"/listed\"", NULL), 0);
}

/* Each request to /slow takes 150 ms. A's four go one after another in order; B's run
 * beside them; a limit of 2 caps what is in flight. */
static void test_user_order_and_limit(void **state)
{
    (void)state;
    declare("slow", NULL, 2, 0);
    char id[32];
    for (int i = 0; i < 4; i++) {
        snprintf(id, sizeof id, "ord-a%d", i);
        submit(id, "slow", "userA", "{}");
        snprintf(id, sizeof id, "ord-b%d", i);
        submit(id, "slow", "userB", "{}");
    }
    submit("ord-c0", "slow", "userC", "{}");
    jd_dispatch_stats st[2];
    jd_dispatch_stats_get(D, st, 2);
    assert_true(st[0].in_flight <= 2);
    run_until("ord-", 1, 9, 15000);
    assert_int_equal(results_for("ord-", 1), 9);
    /* userA's results arrive in submission order */
    int next = 0;
    for (size_t i = 0; i < nresults; i++)
        if (strncmp(results[i].id, "ord-a", 5) == 0) {
            assert_int_equal(results[i].id[5] - '0', next);
            next++;
        }
    assert_int_equal(next, 4);
    double t[4];
    assert_int_equal(times_of(recv_p.out, "\"webhook-id\": \"ord-a", t, 4), 4);
    for (int i = 1; i < 4; i++)
        assert_true(t[i] - t[i - 1] >= 0.14); /* never two of userA's in flight */
    /* the receiver's order for userA is the submission order too */
    FILE *f = fopen(recv_p.out, "r");
    char *line = NULL;
    size_t cap = 0;
    next = 0;
    while (getline(&line, &cap, f) > 0) {
        char *p = strstr(line, "\"webhook-id\": \"ord-a");
        if (p) {
            assert_int_equal(p[20] - '0', next);
            next++;
        }
    }
    free(line);
    fclose(f);
    assert_int_equal(next, 4);
    assert_int_equal(jd_dispatch_pending(D), 0);
}

static void test_resume_schedule(void **state)
{
    (void)state;
    /* after a restart the daemon resubmits with the attempts made and the next time */
    declare("crm", NULL, 0, 0);
    jd_request req;
    jd_error err;
    const char *json = "{\"time\":\"2026-11-01T09:00:01.000Z\",\"user\":\"u9\",\"journey\":\"t\",\"stage\":\"s\","
                       "\"channel\":\"crm\",\"payload\":{},\"id\":\"resume-1\"}";
    assert_int_equal(jd_engine_format_action(R.e, json, strlen(json), &req, &err), 0);
    int64_t t0 = wall_ms();
    assert_int_equal(jd_dispatch_submit(D, "resume-1", "crm", "u9", &req, 3, t0 + 300), 0);
    jd_request_free(&req);
    assert_int_equal(jd_dispatch_submit(D, "x", "no-such-channel", "u9", &req, 0, 0), -1);
    run_until("resume-", 1, 1, 10000);
    const result *r = nth_result("resume-1", 0);
    assert_int_equal(r->outcome, JD_DELIVERED);
    assert_int_equal(r->attempts, 4);
    assert_true(r->at_ms >= t0 + 290);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_webhook_signed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_provider_shapes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_smtp, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_then_delivered, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_after, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gone_disables, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout_retries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exhausted_and_permanent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ssrf_guard, setup, teardown),
        cmocka_unit_test_setup_teardown(test_user_order_and_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resume_schedule, setup, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
