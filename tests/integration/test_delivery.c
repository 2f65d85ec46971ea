/* test_delivery: delivery end to end through the daemon — `journeyd serve` with real
 * receivers on loopback (receiver.py verifies Standard Webhooks signatures with its own
 * code; smtp_sink.py). An event goes in over HTTP; the webhook or mail comes out with
 * the right shape; retries follow the (compressed) schedule; dead letters are listed and
 * retried; a kill -9 in the middle of a retry schedule still delivers the action once,
 * under the same webhook-id. Every wait is bounded. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <time.h>

#include <cmocka.h>

#include "itutil.h"

#define SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

static char bin[512], dir[] = "/tmp/jd-delivery-XXXXXX", cfg[600], logpath[600];
static int port;
static pid_t daemon_pid;
static proc recv_p, smtp_p;

static int spawn_daemon(void)
{
    char listen[64], data[700];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    snprintf(data, sizeof data, "%s/data", dir);
    daemon_pid = fork();
    if (daemon_pid == 0) {
        int fd = open(logpath, O_WRONLY | O_APPEND | O_CREAT, 0644);
        dup2(fd, 1);
        dup2(fd, 2);
        execl(bin, bin, "serve", "-c", cfg, "--listen", listen, "--data-dir", data, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 100; i++) {
        resp r;
        it_http(&r, port, "GET", "/livez", NULL, NULL, NULL, 0);
        if (r.status == 200)
            return 0;
        usleep(50000);
    }
    return -1;
}

static void stop_daemon(int sig)
{
    if (daemon_pid > 0) {
        kill(daemon_pid, sig);
        waitpid(daemon_pid, NULL, 0);
        daemon_pid = 0;
    }
}

static void track(const char *user, const char *channel, const char *id)
{
    char body[512];
    snprintf(body, sizeof body,
             "{\"userId\":\"%s\",\"event\":\"Notify\",\"messageId\":\"%s\",\"properties\":{\"channel\":\"%s\"}}", user,
             id, channel);
    resp r;
    it_http(&r, port, "POST", "/v1/track", NULL, NULL, body, strlen(body));
    assert_int_equal(r.status, 200);
}

/* Waits up to ms for count_lines(path, a, b) to reach n; returns the count. */
static size_t wait_lines(const char *path, size_t n, int ms, const char *a, const char *b)
{
    size_t got = 0;
    for (int waited = 0; waited <= ms; waited += 50) {
        got = count_lines(path, a, b, NULL);
        if (got >= n)
            return got;
        usleep(50000);
    }
    return got;
}

/* The webhook-id header of the first request on path. */
static void webhook_id(const char *path, char out[64])
{
    FILE *f = fopen(recv_p.out, "r");
    assert_non_null(f);
    char line[8192];
    out[0] = '\0';
    while (fgets(line, sizeof line, f)) {
        const char *h = strstr(line, "\"webhook-id\": \"");
        if (strstr(line, path) && h) {
            sscanf(h + 15, "%63[^\"]", out);
            break;
        }
    }
    fclose(f);
    assert_int_equal(strlen(out), 32);
}

/* A weekday that is not today (UTC), for a window that must defer. */
static const char *tomorrow(void)
{
    static const char *const days[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    return days[(tm.tm_wday + 1) % 7];
}

static int group_setup(void **state)
{
    (void)state;
    if (!mkdtemp(dir))
        return -1;
    const char *b = getenv("JOURNEYD_BIN");
    snprintf(bin, sizeof bin, "%s", b ? b : "build/journeyd");
    snprintf(cfg, sizeof cfg, "%s/journeyd.lua", dir);
    snprintf(logpath, sizeof logpath, "%s/daemon.log", dir);
    snprintf(recv_p.out, sizeof recv_p.out, "%s/recv.jsonl", dir);
    snprintf(smtp_p.out, sizeof smtp_p.out, "%s/smtp.jsonl", dir);
    const char *rargv[] = {"python3",
                           "tests/integration/receiver.py",
                           "--out",
                           recv_p.out,
                           "--secret",
                           SECRET,
                           "--rule",
                           "/flaky=500x2",
                           "--rule",
                           "/dead=500x3",
                           "--rule",
                           "/restart=500x1",
                           "--max-seconds",
                           "110",
                           NULL};
    const char *sargv[] = {"python3", "tests/integration/smtp_sink.py", "--out", smtp_p.out, "--max-seconds", "110",
                           NULL};
    if (start_proc(&recv_p, rargv) || start_proc(&smtp_p, sargv)) {
        fprintf(stderr, "cannot start the receivers\n");
        stop_proc(&recv_p);
        return -1;
    }
    FILE *f = fopen(cfg, "w");
    if (!f)
        return -1;
    fprintf(f,
            "local j = require 'journey'\n"
            "j.config { checkpoint_interval = '100ms' }\n"
            "local R = 'http://127.0.0.1:%d'\n"
            "local function hook(name, path, retry)\n"
            "  j.channel(name) { type = 'webhook', url = R .. path, secret = '" SECRET "',\n"
            "                    allow_loopback = true, retry = retry }\n"
            "end\n"
            "hook('crm', '/crm', { '100ms' })\n"
            "hook('flaky', '/flaky', { '200ms', '200ms', '200ms' })\n"
            "hook('dead', '/dead', { '100ms', '100ms' })\n"
            "hook('restart', '/restart', { '3s' })\n"
            "j.channel 'guarded' { type = 'webhook', url = R .. '/guarded', secret = '" SECRET "' }\n"
            "j.channel 'team' { type = 'slack', url = R .. '/slack', allow_loopback = true }\n"
            "j.channel 'office' { type = 'webhook', url = R .. '/office', allow_loopback = true,\n"
            "                     window = { days = '%s', hours = '09-17', tz = 'UTC' } }\n"
            "j.channel 'capped' { type = 'webhook', url = R .. '/capped', allow_loopback = true,\n"
            "                     cap = { max = 1, per = '1h' } }\n"
            "j.channel 'mail' { type = 'smtp', url = 'smtp://127.0.0.1:%d', from = 'hi@acme.test',\n"
            "                   allow_loopback = true }\n"
            "j.on('Notify', function(ctx)\n"
            "  local ch = ctx.event.properties.channel\n"
            "  if ch == 'mail' then ctx:send('mail', { to = ctx.user.id .. '@example.com', subject = 'Hi',\n"
            "                                         text = 'Hello' })\n"
            "  elseif ch == 'team' then ctx:send('team', { text = 'stalled: ' .. ctx.user.id })\n"
            "  else ctx:send(ch, { user = ctx.user.id }) end\n"
            "end)\n",
            recv_p.port, tomorrow(), smtp_p.port);
    fclose(f);
    port = free_port();
    return spawn_daemon();
}

static int group_teardown(void **state)
{
    (void)state;
    stop_daemon(SIGTERM);
    stop_proc(&recv_p);
    stop_proc(&smtp_p);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) ? -1 : 0;
}

static void test_webhook_slack_and_mail(void **state)
{
    (void)state;
    track("ada", "crm", "d-1");
    track("ada", "team", "d-2");
    track("ada", "mail", "d-3");
    assert_int_equal(wait_lines(recv_p.out, 1, 5000, "\"path\": \"/crm\"", "\"signature_ok\": true"), 1);
    assert_int_equal(count_lines(recv_p.out, "\"path\": \"/crm\"", "\\\"user\\\":\\\"ada\\\"", NULL), 1);
    assert_int_equal(wait_lines(recv_p.out, 1, 5000, "\"path\": \"/slack\"", "stalled: ada"), 1);
    assert_int_equal(wait_lines(smtp_p.out, 1, 5000, "ada@example.com", "Subject: Hi"), 1);
    /* the webhook-id is the action's id in the outbox, now delivered */
    char id[64];
    webhook_id("/crm", id);
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "sleep 0.3; '%s' outbox '%s/data' --status delivered | grep -c '\"id\":\"%s\"'", bin, dir,
             id);
    FILE *p = popen(cmd, "r");
    int n = 0;
    assert_int_equal(fscanf(p, "%d", &n), 1);
    pclose(p);
    assert_int_equal(n, 1);
}

static void test_retries_then_delivered(void **state)
{
    (void)state;
    track("bob", "flaky", "d-4");
    /* 500, 500, then 200: three requests under one webhook-id */
    assert_int_equal(wait_lines(recv_p.out, 3, 8000, "\"path\": \"/flaky\"", "\"signature_ok\": true"), 3);
    assert_int_equal(count_lines(recv_p.out, "\"path\": \"/flaky\"", "\"status\": 200", NULL), 1);
    char id[64];
    webhook_id("/flaky", id);
    char want[80];
    snprintf(want, sizeof want, "\"webhook-id\": \"%s\"", id);
    assert_int_equal(count_lines(recv_p.out, "\"path\": \"/flaky\"", want, NULL), 3);
}

static void test_dead_letter_and_retry(void **state)
{
    (void)state;
    track("cy", "dead", "d-5");
    /* three attempts (the first and two retries), all 500: a dead letter */
    assert_int_equal(wait_lines(recv_p.out, 3, 8000, "\"path\": \"/dead\"", NULL), 3);
    resp r;
    int listed = 0;
    for (int i = 0; i < 60 && !listed; i++) {
        it_http(&r, port, "GET", "/v1/deadletters", NULL, NULL, NULL, 0);
        assert_int_equal(r.status, 200);
        listed = strstr(r.body, "\\\"user\\\":\\\"cy\\\"") != NULL || strstr(r.body, "\"user\":\"cy\"") != NULL;
        if (!listed)
            usleep(100000);
    }
    assert_true(listed);
    char id[64];
    webhook_id("/dead", id);
    char path[128];
    snprintf(path, sizeof path, "/v1/deadletters/%s/retry", id);
    it_http(&r, port, "POST", path, NULL, NULL, "", 0);
    assert_int_equal(r.status, 200);
    /* the receiver's three failures are used up: the fourth request is a 200 */
    assert_int_equal(wait_lines(recv_p.out, 1, 5000, "\"path\": \"/dead\"", "\"status\": 200"), 1);
    it_http(&r, port, "POST", "/v1/deadletters/0123456789abcdef0123456789abcdef/retry", NULL, NULL, "", 0);
    assert_int_equal(r.status, 404);
}

static void test_loopback_refused_without_option(void **state)
{
    (void)state;
    track("dee", "guarded", "d-6");
    resp r;
    int dead = 0;
    for (int i = 0; i < 60 && !dead; i++) {
        it_http(&r, port, "GET", "/v1/deadletters", NULL, NULL, NULL, 0);
        dead = strstr(r.body, "loopback") != NULL;
        if (!dead)
            usleep(100000);
    }
    if (!dead) {
        char cmd[700];
        snprintf(cmd, sizeof cmd, "grep -E 'dee|guarded|error' '%s' | tail -n 8 | cut -c1-400 >&2", logpath);
        if (system(cmd) != 0)
            fprintf(stderr, "(no log)\n");
        fail_msg("no dead letter for the guarded channel: %s", r.body);
    }
    assert_int_equal(count_lines(recv_p.out, "\"path\": \"/guarded\"", NULL), 0);
}

/* 500 once, the retry 3 s out; kill -9 before it; after the restart the action is
 * delivered once more — under the same webhook-id — and not again. */
static void test_restart_mid_retry(void **state)
{
    (void)state;
    track("eve", "restart", "d-7");
    assert_int_equal(wait_lines(recv_p.out, 1, 5000, "\"path\": \"/restart\"", NULL), 1);
    usleep(400000); /* the retrying status reaches a checkpoint (100 ms) */
    stop_daemon(SIGKILL);
    assert_int_equal(spawn_daemon(), 0);
    assert_int_equal(wait_lines(recv_p.out, 1, 8000, "\"path\": \"/restart\"", "\"status\": 200"), 1);
    usleep(1500000);
    char id[64];
    webhook_id("/restart", id);
    char want[80];
    snprintf(want, sizeof want, "\"webhook-id\": \"%s\"", id);
    assert_int_equal(count_lines(recv_p.out, "\"path\": \"/restart\"", NULL), 2);
    assert_int_equal(count_lines(recv_p.out, "\"path\": \"/restart\"", want, NULL), 2);
    /* and it did not start the schedule over: the second attempt waited for its time */
    resp r;
    it_http(&r, port, "GET", "/metrics", NULL, NULL, NULL, 0);
    assert_non_null(strstr(r.body, "journeyd_deliveries_total"));
}

/* On the daemon's real clock: a send outside its channel's window waits (its outbox row
 * is pending with a later time, the trace says deferred); a send over the cap is dropped
 * (the trace says suppressed). */
static void test_window_and_cap(void **state)
{
    (void)state;
    track("fay", "office", "d-8");
    track("gus", "capped", "d-9");
    track("gus", "capped", "d-10");
    assert_int_equal(wait_lines(recv_p.out, 1, 5000, "\"path\": \"/capped\"", NULL), 1);
    usleep(500000);
    assert_int_equal(count_lines(recv_p.out, "\"path\": \"/office\"", NULL), 0);
    assert_int_equal(count_lines(recv_p.out, "\"path\": \"/capped\"", NULL), 1);
    resp r;
    it_http(&r, port, "GET", "/v1/users/fay/trace", NULL, NULL, NULL, 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "deferred"));
    it_http(&r, port, "GET", "/v1/users/gus/trace", NULL, NULL, NULL, 0);
    assert_non_null(strstr(r.body, "suppressed"));
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "'%s' outbox '%s/data' --status pending | grep -c '\"user\":\"fay\"'", bin, dir);
    int n = 0;
    for (int i = 0; i < 20 && n != 1; i++) {
        FILE *p = popen(cmd, "r");
        if (fscanf(p, "%d", &n) != 1)
            n = 0;
        pclose(p);
        if (n != 1)
            usleep(100000);
    }
    assert_int_equal(n, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_webhook_slack_and_mail), cmocka_unit_test(test_retries_then_delivered),
        cmocka_unit_test(test_dead_letter_and_retry),  cmocka_unit_test(test_loopback_refused_without_option),
        cmocka_unit_test(test_restart_mid_retry),      cmocka_unit_test(test_window_and_cap),
    };
    return cmocka_run_group_tests_name("delivery", tests, group_setup, group_teardown);
}
