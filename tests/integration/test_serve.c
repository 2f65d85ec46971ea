/* Black-box tests of `journeyd serve`: the real binary on a loopback port, driven by
 * libcurl. Covers auth, limits, malformed input, batches, the admin API, metrics,
 * timers on the real clock and a clean SIGTERM. */
#define _DEFAULT_SOURCE
#include <arpa/inet.h>
#include <curl/curl.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "itutil.h"
#include <openssl/evp.h>
#include <openssl/hmac.h>

static char bin[512];
static int port, stream_port;
static pid_t daemon_pid;
static char logpath[] = "/tmp/jd-serve-test-XXXXXX";
static char cfgdir[] = "/tmp/jd-serve-cfg-XXXXXX";
static char cfgpath[600];
static char original_cfg[16384];

static void write_config(const char *text)
{
    FILE *f = fopen(cfgpath, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static struct curl_slist *extra_headers; /* added to the next request only */

/* method "GET"/"POST"; auth is a full Authorization header value or NULL. */
static void http(resp *r, const char *method, const char *path, const char *auth, const char *body, size_t blen)
{
    it_http(r, port, method, path, auth, extra_headers, body, blen);
    curl_slist_free_all(extra_headers);
    extra_headers = NULL;
}

static void post(resp *r, const char *path, const char *auth, const char *body)
{
    http(r, "POST", path, auth, body, strlen(body));
}

#define SHARDS 2

/* Starts the daemon on the test's ports and data directory (appending to its log) and
 * waits until it answers. 0, or -1. */
static int spawn_daemon(void)
{
    char listen[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    daemon_pid = fork();
    if (daemon_pid == 0) {
        int lfd = open(logpath, O_WRONLY | O_APPEND);
        dup2(lfd, 1);
        dup2(lfd, 2);
        setenv("JOURNEYD_WRITE_KEYS", "wk1, wk2", 1);
        setenv("JOURNEYD_ADMIN_KEYS", "ak1", 1);
        char sl[64];
        snprintf(sl, sizeof sl, "127.0.0.1:%d", stream_port);
        setenv("JOURNEYD_STREAM_LISTEN", sl, 1);
        char ns[16];
        snprintf(ns, sizeof ns, "%d", SHARDS);
        setenv("JOURNEYD_SHARDS", ns, 1); /* more than one, whatever the machine's cores */
        char data[700];
        snprintf(data, sizeof data, "%s/data", cfgdir);
        execl(bin, bin, "serve", "-c", cfgpath, "--listen", listen, "--data-dir", data, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 100; i++) { /* up to 5 s for the daemon to listen */
        resp r;
        http(&r, "GET", "/livez", NULL, NULL, 0);
        if (r.status == 200)
            return 0;
        usleep(50000);
    }
    char cmd[700]; /* say why: the daemon's last words */
    snprintf(cmd, sizeof cmd, "tail -n 20 '%s' >&2", logpath);
    if (system(cmd) != 0)
        fprintf(stderr, "(no daemon log)\n");
    return -1;
}

static int count_in_log(const char *a, const char *b)
{
    FILE *f = fopen(logpath, "r");
    char line[8192];
    int n = 0;
    while (f && fgets(line, sizeof line, f))
        n += strstr(line, a) && (!b || strstr(line, b));
    if (f)
        fclose(f);
    return n;
}

static int start(void **state)
{
    (void)state;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    /* the daemon runs a copy of the config, so the reload test can rewrite it */
    if (!mkdtemp(cfgdir))
        return -1;
    snprintf(cfgpath, sizeof cfgpath, "%s/journeyd.lua", cfgdir);
    FILE *src = fopen("tests/integration/serve/journeyd.lua", "r");
    if (!src)
        return -1;
    size_t cn = fread(original_cfg, 1, sizeof original_cfg - 1, src);
    original_cfg[cn] = '\0';
    fclose(src);
    FILE *dst = fopen(cfgpath, "w");
    fputs(original_cfg, dst);
    fclose(dst);
    port = free_port();
    stream_port = free_port();
    int lfd = mkstemp(logpath);
    close(lfd);
    return spawn_daemon();
    return -1;
}

static int stop(void **state)
{
    (void)state;
    if (daemon_pid > 0) {
        kill(daemon_pid, SIGKILL);
        waitpid(daemon_pid, NULL, 0);
    }
    unlink(logpath);
    unlink(cfgpath);
    char cmd[800];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", cfgdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", cfgdir);
    curl_global_cleanup();
    return 0;
}

static const char *basic(const char *key)
{
    /* base64("wk1:") = d2sxOg== ; base64("nope:") = bm9wZTo= */
    if (strcmp(key, "wk1") == 0)
        return "Basic d2sxOg==";
    return "Basic bm9wZTo=";
}

static void test_health(void **state)
{
    (void)state;
    resp r;
    http(&r, "GET", "/livez", NULL, NULL, 0);
    assert_int_equal(r.status, 200);
    http(&r, "GET", "/readyz", NULL, NULL, 0);
    assert_int_equal(r.status, 200);
    http(&r, "GET", "/nope", NULL, NULL, 0);
    assert_int_equal(r.status, 404);
    assert_non_null(strstr(r.body, "\"success\":false"));
}

static void test_auth(void **state)
{
    (void)state;
    const char *ev = "{\"userId\":\"auth-1\",\"event\":\"Viewed\"}";
    resp r;
    post(&r, "/v1/track", NULL, ev);
    assert_int_equal(r.status, 401);
    post(&r, "/v1/track", basic("nope"), ev);
    assert_int_equal(r.status, 401);
    post(&r, "/v1/track", "Bearer wk3", ev);
    assert_int_equal(r.status, 401);
    post(&r, "/v1/track", basic("wk1"), ev);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"success\":true}");
    post(&r, "/v1/track", "Bearer wk2", ev);
    assert_int_equal(r.status, 200);
    post(&r, "/v1/track", NULL, "{\"writeKey\":\"wk2\",\"userId\":\"auth-1\",\"event\":\"Viewed\"}");
    assert_int_equal(r.status, 200);
    /* the environment replaced j.config's keys */
    post(&r, "/v1/track", "Bearer from-config", ev);
    assert_int_equal(r.status, 401);
    /* a write key never reads data; the admin key does */
    http(&r, "GET", "/v1/journeys", "Bearer wk1", NULL, 0);
    assert_int_equal(r.status, 401);
    http(&r, "GET", "/v1/journeys", NULL, NULL, 0);
    assert_int_equal(r.status, 401);
    http(&r, "GET", "/v1/journeys", "Bearer ak1", NULL, 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"name\":\"onboarding\""));
    /* metrics and probes need no key */
    http(&r, "GET", "/metrics", NULL, NULL, 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "journeyd_events_rejected_total{reason=\"unauthorized\"} 4"));
}

static void test_bad_input(void **state)
{
    (void)state;
    resp r;
    post(&r, "/v1/track", "Bearer wk1", "{\"userId\":\"x\",\"event\":");
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body, "malformed JSON at byte"));
    post(&r, "/v1/track", "Bearer wk1", "{\"userId\":\"x\"}");
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body, "needs a non-empty string \\\"event\\\""));
    post(&r, "/v1/identify", "Bearer wk1", "{\"traits\":{}}");
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body, "userId"));
    post(&r, "/v1/track", "Bearer wk1", "[1,2]");
    assert_int_equal(r.status, 400);
    http(&r, "GET", "/v1/track", "Bearer wk1", NULL, 0);
    assert_int_equal(r.status, 405);
    /* 32 KB per event, 500 KB per batch: 413 with a JSON body */
    size_t big = 40 * 1024;
    char *b = malloc(big + 128);
    int n = snprintf(b, 128, "{\"userId\":\"x\",\"event\":\"E\",\"properties\":{\"pad\":\"");
    memset(b + n, 'a', big);
    strcpy(b + n + big, "\"}}");
    post(&r, "/v1/track", "Bearer wk1", b);
    assert_int_equal(r.status, 413);
    assert_non_null(strstr(r.body, "\"code\":\"too_large\""));
    free(b);
    big = 600 * 1024;
    b = malloc(big + 128);
    n = snprintf(b, 128, "{\"batch\":[],\"pad\":\"");
    memset(b + n, 'a', big);
    strcpy(b + n + big, "\"}");
    post(&r, "/v1/batch", "Bearer wk1", b);
    assert_int_equal(r.status, 413);
    free(b);
}

static void test_batch(void **state)
{
    (void)state;
    resp r;
    post(&r, "/v1/batch", "Bearer wk1",
         "{\"batch\":[{\"type\":\"identify\",\"userId\":\"b-1\",\"traits\":{\"email\":\"b1@example.com\"}},"
         "{\"type\":\"nonsense\",\"userId\":\"b-1\"},"
         "{\"type\":\"track\",\"userId\":\"b-1\",\"event\":\"Signed Up\",\"messageId\":\"batch-m1\"},"
         "{\"type\":\"track\",\"userId\":\"b-1\",\"event\":\"Signed Up\",\"messageId\":\"batch-m1\"}],"
         "\"context\":{\"library\":{\"name\":\"analytics-node\"}}}");
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"accepted\":3"));
    assert_non_null(strstr(r.body, "{\"index\":1,\"error\":"));
    post(&r, "/v1/batch", "Bearer wk1", "{\"batch\":[{\"type\":\"nonsense\"}]}");
    assert_int_equal(r.status, 400);
    /* an item over 32 KB inside an allowed batch is refused alone */
    static char big[48 * 1024];
    int bn = snprintf(big, sizeof big,
                      "{\"batch\":[{\"type\":\"track\",\"userId\":\"b-2\",\"event\":\"E\","
                      "\"properties\":{\"pad\":\"");
    memset(big + bn, 'a', 40 * 1024);
    snprintf(big + bn + 40 * 1024, sizeof big - (size_t)bn - 40 * 1024,
             "\"}},{\"type\":\"track\",\"userId\":\"b-2\",\"event\":\"E\"}]}");
    post(&r, "/v1/batch", "Bearer wk1", big);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"accepted\":1"));
    assert_non_null(strstr(r.body, "{\"index\":0,\"error\":\"event of"));
    assert_non_null(strstr(r.body, "over the limit of 32768 bytes"));
    post(&r, "/v1/batch", "Bearer wk1", "{\"batch\":{}}");
    assert_int_equal(r.status, 400);
    /* the profile shows traits, the journey, pending timers and the decisions */
    http(&r, "GET", "/v1/users/b-1", "Bearer ak1", NULL, 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"email\":\"b1@example.com\""));
    assert_non_null(strstr(r.body, "\"journey\":\"onboarding\""));
    assert_non_null(strstr(r.body, "\"kind\":\"entered\""));
    assert_non_null(strstr(r.body, "\"kind\":\"action\""));
    http(&r, "GET", "/v1/users/nobody", "Bearer ak1", NULL, 0);
    assert_int_equal(r.status, 404);
    http(&r, "GET", "/v1/users/?x", "Bearer ak1", NULL, 0); /* no id (read past the path once) */
    assert_int_equal(r.status, 404);
    http(&r, "GET", "/metrics", NULL, NULL, 0);
    assert_non_null(strstr(r.body, "journeyd_events_duplicate_total 1"));
    assert_non_null(strstr(r.body, "journeyd_events_rejected_total{reason=\"invalid_event\"}"));
}

static void test_timer_fires_on_real_clock(void **state)
{
    (void)state;
    resp r;
    post(&r, "/v1/track", "Bearer wk1", "{\"userId\":\"t-1\",\"event\":\"Signed Up\"}");
    assert_int_equal(r.status, 200);
    /* the 1 s timer moves t-1 to "nudged"; poll for up to 10 s (behaviour, not timing) */
    int moved = 0;
    for (int i = 0; i < 100 && !moved; i++) {
        http(&r, "GET", "/v1/users/t-1", "Bearer ak1", NULL, 0);
        moved = strstr(r.body, "\"stage\":\"nudged\"") != NULL;
        if (!moved)
            usleep(100000);
    }
    assert_true(moved);
    assert_non_null(strstr(r.body, "\"kind\":\"timer\""));
    http(&r, "GET", "/v1/journeys/onboarding", "Bearer ak1", NULL, 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"timed_out\":"));
    http(&r, "GET", "/v1/journeys/none", "Bearer ak1", NULL, 0);
    assert_int_equal(r.status, 404);
}

/* HubSpot v3: base64(HMAC-SHA256(secret, method + uri + body + timestamp)), computed
 * here with OpenSSL directly, independently of the Lua mapper. */
static void hubspot_sign(char *out, const char *secret, const char *uri, const char *body, const char *ts)
{
    char msg[8192];
    snprintf(msg, sizeof msg, "POST%s%s%s", uri, body, ts);
    unsigned char mac[32];
    unsigned int n = 0;
    HMAC(EVP_sha256(), secret, (int)strlen(secret), (unsigned char *)msg, strlen(msg), mac, &n);
    EVP_EncodeBlock((unsigned char *)out, mac, (int)n);
}

static void send_hubspot(resp *r, const char *body, long long ts_ms, const char *secret)
{
    char ts[32], sig[128], h1[200], h2[200];
    snprintf(ts, sizeof ts, "%lld", ts_ms);
    hubspot_sign(sig, secret, "https://hooks.example.com/v1/sources/hubspot", body, ts);
    snprintf(h1, sizeof h1, "X-HubSpot-Signature-v3: %s", sig);
    snprintf(h2, sizeof h2, "X-HubSpot-Request-Timestamp: %s", ts);
    extra_headers = curl_slist_append(curl_slist_append(NULL, h1), h2);
    post(r, "/v1/sources/hubspot", NULL, body);
}

static long long now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void test_hubspot_source(void **state)
{
    (void)state;
    FILE *f = fopen("examples/crm-sidecar/hubspot-sample.json", "r");
    assert_non_null(f);
    char body[8192];
    size_t n = fread(body, 1, sizeof body - 1, f);
    fclose(f);
    while (n && (body[n - 1] == '\n' || body[n - 1] == '\r'))
        n--;
    body[n] = '\0';
    resp r;
    send_hubspot(&r, body, now_ms() - 1000, "wrong-secret");
    assert_int_equal(r.status, 401);
    if (!strstr(r.body, "signature mismatch"))
        fail_msg("body: %s", r.body);
    send_hubspot(&r, body, now_ms() - 6 * 60 * 1000, "hs-secret");
    assert_int_equal(r.status, 401);
    assert_non_null(strstr(r.body, "older than 5 minutes"));
    post(&r, "/v1/sources/hubspot", "Bearer wk1", body); /* a write key is no HubSpot signature */
    assert_int_equal(r.status, 401);
    send_hubspot(&r, body, now_ms() - 1000, "hs-secret");
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"accepted\":5"));
    /* HubSpot retries the same delivery: its event ids make it a duplicate */
    send_hubspot(&r, body, now_ms() - 500, "hs-secret");
    assert_int_equal(r.status, 200);
    http(&r, "GET", "/v1/users/hubspot-contact-101", "Bearer ak1", NULL, 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"email\":\"lin@example.com\""));
    if (!strstr(r.body, "\"score\":1.0"))
        fail_msg("%s", r.body); /* once, not twice */
    http(&r, "GET", "/v1/users/hubspot-deal-501", "Bearer ak1", NULL, 0);
    assert_int_equal(r.status, 200);
}

static void test_other_sources(void **state)
{
    (void)state;
    resp r;
    FILE *f = fopen("examples/crm-sidecar/pipedrive-sample.json", "r");
    assert_non_null(f);
    char body[8192];
    size_t n = fread(body, 1, sizeof body - 1, f);
    fclose(f);
    body[n] = '\0';
    post(&r, "/v1/sources/pipedrive", "Basic cGQ6bm9wZQ==", body); /* pd:nope */
    assert_int_equal(r.status, 401);
    post(&r, "/v1/sources/pipedrive", "Basic cGQ6cGQtcGFzcw==", body); /* pd:pd-pass */
    assert_int_equal(r.status, 200);
    http(&r, "GET", "/v1/users/pipedrive-person-7", "Bearer ak1", NULL, 0);
    assert_int_equal(r.status, 200);

    /* generic JSON with a hex HMAC of the body */
    const char *ev = "{\"type\":\"track\",\"userId\":\"app-1\",\"event\":\"Hook\"}";
    unsigned char mac[32];
    unsigned int ml = 0;
    HMAC(EVP_sha256(), "app-secret", 10, (const unsigned char *)ev, strlen(ev), mac, &ml);
    char hdr[128] = "X-Signature: sha256=";
    for (unsigned i = 0; i < ml; i++)
        snprintf(hdr + strlen(hdr), 3, "%02x", mac[i]);
    extra_headers = curl_slist_append(NULL, hdr);
    post(&r, "/v1/sources/app", NULL, ev);
    assert_int_equal(r.status, 200);
    extra_headers = curl_slist_append(NULL, "X-Signature: sha256=00");
    post(&r, "/v1/sources/app", NULL, ev);
    assert_int_equal(r.status, 401);
    /* a source without verify needs a write key */
    post(&r, "/v1/sources/open", NULL, ev);
    assert_int_equal(r.status, 401);
    post(&r, "/v1/sources/open", "Bearer wk1", "[{\"type\":\"track\",\"userId\":\"o\",\"event\":\"A\"},{\"x\":1}]");
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"accepted\":1,\"rejected\":1"));
    post(&r, "/v1/sources/broken", "Bearer wk1", "{}");
    assert_int_equal(r.status, 500);
    assert_non_null(strstr(r.body, "mapper bug"));
    http(&r, "GET", "/metrics", NULL, NULL, 0);
    assert_non_null(strstr(r.body, "journeyd_lua_errors_total{rule=\"source/broken/map\"} 1"));
    post(&r, "/v1/sources/nosuch", "Bearer wk1", "{}");
    assert_int_equal(r.status, 404);
}

/* Raw stream protocol: send frames, read one answer frame. */
static int stream_connect(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {
        .sin_family = AF_INET, .sin_port = htons((uint16_t)stream_port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

static void stream_send(int fd, const void *p, uint32_t n)
{
    unsigned char h[4] = {(unsigned char)(n >> 24), (unsigned char)(n >> 16), (unsigned char)(n >> 8),
                          (unsigned char)n};
    assert_int_equal(write(fd, h, 4), 4);
    if (n)
        assert_int_equal(write(fd, p, n), (ssize_t)n);
}

/* Reads one answer; returns its bytes (msgpack) as text-searchable memory. */
static size_t stream_answer(int fd, char *out, size_t cap)
{
    unsigned char h[4];
    size_t got = 0;
    while (got < 4) {
        ssize_t r = read(fd, h + got, 4 - got);
        if (r <= 0)
            return 0;
        got += (size_t)r;
    }
    size_t n = (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
    assert_true(n < cap);
    got = 0;
    while (got < n) {
        ssize_t r = read(fd, out + got, n - got);
        if (r <= 0)
            return 0;
        got += (size_t)r;
    }
    out[n] = '\0';
    return n;
}

static int mem_has(const char *hay, size_t n, const char *needle)
{
    size_t k = strlen(needle);
    for (size_t i = 0; i + k <= n; i++)
        if (memcmp(hay + i, needle, k) == 0)
            return 1;
    return 0;
}

static void test_stream(void **state)
{
    (void)state;
    /* the example client: JSON lines in, acknowledged batches out */
    char cmd[1024], client[600];
    snprintf(client, sizeof client, "%s", bin);
    char *slash = strrchr(client, '/');
    strcpy(slash + 1, "jd-stream-send");
    snprintf(cmd, sizeof cmd, "%s 127.0.0.1:%d --key wk1 --batch 2 2>&1", client, stream_port);
    FILE *p = popen(cmd, "w");
    /* reopen reading isn't possible with popen "w": write events, then check effects */
    fputs("{\"type\":\"track\",\"userId\":\"s-1\",\"event\":\"Signed Up\",\"messageId\":\"st-1\"}\n", p);
    fputs("{\"type\":\"identify\",\"userId\":\"s-1\",\"traits\":{\"email\":\"s1@example.com\"}}\n", p);
    fputs("{\"type\":\"track\",\"userId\":\"s-1\"}\n", p);
    fputs("{\"type\":\"track\",\"userId\":\"s-1\",\"event\":\"Signed Up\",\"messageId\":\"st-1\"}\n", p);
    assert_int_equal(pclose(p), 0);
    resp r;
    http(&r, "GET", "/v1/users/s-1", "Bearer ak1", NULL, 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"email\":\"s1@example.com\""));
    assert_non_null(strstr(r.body, "\"entries\":1"));

    /* batches kept in flight (--inflight): every answer is read and counted, in order */
    char evs[300], out[300], cmd2[1400];
    snprintf(evs, sizeof evs, "%s/inflight.jsonl", cfgdir);
    snprintf(out, sizeof out, "%s/inflight.err", cfgdir);
    FILE *f = fopen(evs, "w");
    assert_non_null(f);
    for (int i = 0; i < 7; i++)
        fprintf(f, "{\"type\":\"track\",\"userId\":\"s-3\",\"event\":\"Seen %d\"}\n", i);
    fputs("{\"type\":\"track\",\"userId\":\"s-3\"}\n", f); /* no event name: rejected */
    fclose(f);
    snprintf(cmd2, sizeof cmd2, "%s 127.0.0.1:%d --key wk1 --batch 2 --inflight 3 < %s 2> %s", client, stream_port, evs,
             out);
    assert_int_equal(system(cmd2), 0);
    f = fopen(out, "r");
    assert_non_null(f);
    char said[1024] = "";
    size_t sn = fread(said, 1, sizeof said - 1, f);
    said[sn] = '\0';
    fclose(f);
    assert_non_null(strstr(said, "sent 8, accepted 7, rejected 1"));
    assert_non_null(strstr(said, "rejected (batch index 1)"));

    char ans[4096];
    size_t n;
    /* a wrong key: a fatal answer, then the connection closes */
    int fd = stream_connect();
    const unsigned char badkey[] = {0x81, 0xa8, 'w', 'r', 'i', 't', 'e', 'K', 'e', 'y', 0xa3, 'n', 'o', 'p'};
    stream_send(fd, badkey, sizeof badkey);
    n = stream_answer(fd, ans, sizeof ans);
    assert_true(mem_has(ans, n, "fatal"));
    assert_int_equal(stream_answer(fd, ans, sizeof ans), 0);
    close(fd);
    /* the right key, then a batch with one good and one bad event */
    fd = stream_connect();
    const unsigned char key[] = {0x81, 0xa8, 'w', 'r', 'i', 't', 'e', 'K', 'e', 'y', 0xa3, 'w', 'k', '2'};
    stream_send(fd, key, sizeof key);
    n = stream_answer(fd, ans, sizeof ans);
    assert_true(mem_has(ans, n, "ok"));
    /* [{"userId":"s-2","event":"E"}, 7] */
    const unsigned char b1[] = {0x92, 0x82, 0xa6, 'u', 's', 'e', 'r', 'I', 'd',  0xa3, 's',
                                '-',  '2',  0xa5, 'e', 'v', 'e', 'n', 't', 0xa1, 'E',  0x07};
    stream_send(fd, b1, sizeof b1);
    n = stream_answer(fd, ans, sizeof ans);
    assert_true(mem_has(ans, n, "accepted"));
    assert_true(mem_has(ans, n, "an event must be a JSON object"));
    /* garbage: not one msgpack value */
    stream_send(fd, "\xc1\xc1", 2);
    n = stream_answer(fd, ans, sizeof ans);
    assert_true(mem_has(ans, n, "exactly one msgpack value"));
    close(fd);
    /* a frame announced over 1 MiB is refused before it is read */
    fd = stream_connect();
    stream_send(fd, key, sizeof key);
    stream_answer(fd, ans, sizeof ans);
    unsigned char huge[4] = {0x7f, 0xff, 0xff, 0xff};
    assert_int_equal(write(fd, huge, 4), 4);
    n = stream_answer(fd, ans, sizeof ans);
    assert_true(mem_has(ans, n, "over 1 MiB"));
    close(fd);
}

/* Every n_ file of the JSON conformance suite is a 400, and the daemon stays up. */
static void test_conformance_bodies(void **state)
{
    (void)state;
    const char *dir = getenv("JD_SHARED") ? getenv("JD_SHARED") : "../shared";
    char path[1024];
    snprintf(path, sizeof path, "%s/testdata/json-conformance", dir);
    DIR *d = opendir(path);
    if (!d)
        fail_msg("cannot open %s (set JD_SHARED)", path);
    struct dirent *de;
    int n = 0;
    static char body[600 * 1024];
    while ((de = readdir(d))) {
        if (strncmp(de->d_name, "n_", 2) != 0)
            continue;
        char f[2048];
        snprintf(f, sizeof f, "%s/%s", path, de->d_name);
        FILE *fp = fopen(f, "rb");
        assert_non_null(fp);
        size_t len = fread(body, 1, sizeof body, fp);
        fclose(fp);
        resp r;
        http(&r, "POST", "/v1/batch", "Bearer wk1", body, len);
        if (r.status != 400)
            fail_msg("%s: status %ld, body %s", de->d_name, r.status, r.body);
        n++;
    }
    closedir(d);
    assert_true(n > 100);
    resp r;
    http(&r, "GET", "/livez", NULL, NULL, 0);
    assert_int_equal(r.status, 200);
}

static void test_reload(void **state)
{
    (void)state;
    resp r;
    /* a broken script: the reload fails, the old rules stay */
    write_config("local j = require \"journey\"\nj.journey \"x\" {\n  entry = j.on(\"A\"),\n  j.stage \"s\" { "
                 "j.on(\"B\"):go \"nowhere\" },\n}\n");
    http(&r, "POST", "/v1/admin/reload", "Bearer ak1", "", 0);
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body, "journeyd.lua:4:"));
    assert_non_null(strstr(r.body, "nowhere"));
    kill(daemon_pid, SIGHUP);
    usleep(300000);
    post(&r, "/v1/track", "Bearer wk1", "{\"userId\":\"r-1\",\"event\":\"Signed Up\"}");
    assert_int_equal(r.status, 200);
    http(&r, "GET", "/v1/users/r-1", "Bearer ak1", NULL, 0);
    assert_non_null(strstr(r.body, "\"journey\":\"onboarding\""));
    FILE *f = fopen(logpath, "r");
    char line[4096];
    int failed_logged = 0;
    while (fgets(line, sizeof line, f))
        failed_logged |= strstr(line, "reload failed") != NULL && strstr(line, "nowhere") != NULL;
    fclose(f);
    assert_true(failed_logged);
    /* a good script with a new rule: it takes effect; people keep their journeys */
    char cfg[20000];
    snprintf(cfg, sizeof cfg, "%s\nj.on(\"Reloaded\", function(ctx) ctx:score(100) end)\n", original_cfg);
    write_config(cfg);
    kill(daemon_pid, SIGHUP);
    int done = 0;
    for (int i = 0; i < 50 && !done; i++) {
        usleep(100000);
        post(&r, "/v1/track", "Bearer wk1", "{\"userId\":\"r-1\",\"event\":\"Reloaded\"}");
        http(&r, "GET", "/v1/users/r-1", "Bearer ak1", NULL, 0);
        done = strstr(r.body, "\"score\":100.0") != NULL;
    }
    assert_true(done);
    assert_non_null(strstr(r.body, "\"journey\":\"onboarding\""));
    http(&r, "POST", "/v1/admin/reload", "Bearer ak1", "", 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"success\":true"));
    http(&r, "POST", "/v1/admin/reload", "Bearer wk1", "", 0);
    assert_int_equal(r.status, 401);
}

/* Acknowledged means durable: kill -9 right after the acknowledgements, damage the log's
 * tail, restart. The people come back from the event log, the damage is reported, and a
 * timer that was pending when the daemon died fires once after the restart. */
/* SIGHUP ten times while a client sends: every acknowledged event counted exactly once
 * (the rule adds 1 to the score per event) — a reload loses and duplicates nothing. */
static void test_reload_under_load(void **state)
{
    (void)state;
    char counted[] = "/tmp/jd-reload-acked-XXXXXX";
    int cfd = mkstemp(counted);
    assert_true(cfd >= 0);
    close(cfd);
    pid_t child = fork();
    if (child == 0) {
        int ok = 0;
        for (int i = 0; i < 1500; i++) {
            char body[256];
            resp r;
            snprintf(body, sizeof body,
                     "{\"userId\":\"rl-pinger\",\"event\":\"CRM Contact Property Changed\","
                     "\"messageId\":\"rl-%d\"}",
                     i);
            post(&r, "/v1/track", "Bearer wk1", body);
            ok += r.status == 200;
        }
        FILE *out = fopen(counted, "w");
        fprintf(out, "%d\n", ok);
        fclose(out);
        _exit(0);
    }
    for (int k = 0; k < 10; k++) {
        usleep(50000);
        kill(daemon_pid, SIGHUP);
    }
    waitpid(child, NULL, 0);
    FILE *f = fopen(counted, "r");
    int acked = 0;
    assert_int_equal(fscanf(f, "%d", &acked), 1);
    fclose(f);
    unlink(counted);
    assert_int_equal(acked, 1500);
    resp r;
    http(&r, "GET", "/v1/users/rl-pinger", "Bearer ak1", NULL, 0);
    const char *sc = strstr(r.body, "\"score\":");
    assert_non_null(sc);
    assert_int_equal((int)atof(sc + 8), 1500);
    assert_true(count_in_log("scripts reloaded", NULL) >= 6); /* (close signals may coalesce) */
}

static void test_restart_after_kill(void **state)
{
    (void)state;
    resp r;
    post(&r, "/v1/identify", "Bearer wk1", "{\"userId\":\"k-1\",\"traits\":{\"email\":\"k1@example.com\"}}");
    assert_int_equal(r.status, 200);
    post(&r, "/v1/track", "Bearer wk1", "{\"userId\":\"k-1\",\"event\":\"Signed Up\",\"messageId\":\"k-signup\"}");
    assert_int_equal(r.status, 200);
    kill(daemon_pid, SIGKILL); /* before the 1 s timer fires */
    waitpid(daemon_pid, NULL, 0);
    int nudges_before = count_in_log("\"user\":\"k-1\"", "\"nudge\"");
    assert_int_equal(nudges_before, 0);
    /* a torn tail: half a record header at the end of every shard's newest segment */
    char cmd[1024];
    snprintf(
        cmd, sizeof cmd,
        "for d in '%s'/data/shard-*/log; do f=$(ls \"$d\"/*.log | tail -n 1); printf '\\027\\000\\000' >> \"$f\"; done",
        cfgdir);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(spawn_daemon(), 0);
    assert_true(count_in_log("damaged tail cut", NULL) >= 1);
    http(&r, "GET", "/v1/users/k-1", "Bearer ak1", NULL, 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"email\":\"k1@example.com\""));
    assert_non_null(strstr(r.body, "\"journey\":\"onboarding\""));
    /* the pending timer fires after the restart, once */
    int moved = 0;
    for (int i = 0; i < 100 && !moved; i++) {
        http(&r, "GET", "/v1/users/k-1", "Bearer ak1", NULL, 0);
        moved = strstr(r.body, "\"stage\":\"nudged\"") != NULL;
        if (!moved)
            usleep(100000);
    }
    assert_true(moved);
    usleep(300000);
    assert_int_equal(count_in_log("\"user\":\"k-1\"", "\"nudge\""), 1);
    /* an event acknowledged before the kill is a duplicate now */
    http(&r, "GET", "/metrics", NULL, NULL, 0);
    const char *m = strstr(r.body, "\njourneyd_events_duplicate_total ");
    assert_non_null(m);
    long dups = atol(m + strlen("\njourneyd_events_duplicate_total "));
    post(&r, "/v1/track", "Bearer wk1", "{\"userId\":\"k-1\",\"event\":\"Signed Up\",\"messageId\":\"k-signup\"}");
    assert_int_equal(r.status, 200);
    http(&r, "GET", "/metrics", NULL, NULL, 0);
    m = strstr(r.body, "\njourneyd_events_duplicate_total ");
    assert_non_null(m);
    assert_int_equal(atol(m + strlen("\njourneyd_events_duplicate_total ")), dups + 1);
}

/* The outbox in the store (read with `journeyd outbox` while the daemon runs, after a
 * checkpoint): every acknowledged sign-up has exactly one welcome and one nudge, nobody
 * has two, and ids are unique. Polls: the last checkpoint may be up to checkpoint_interval (3 s) old. */
static void check_outbox(const int *signups, int nsignups)
{
    static unsigned char welcome[15000], nudge[15000];
    char cmd[1200], line[8192];
    int ok = 0, nrows = 0, bad = 0;
    for (int tries = 0; tries < 40 && !ok; tries++) {
        memset(welcome, 0, sizeof welcome);
        memset(nudge, 0, sizeof nudge);
        nrows = bad = 0;
        snprintf(cmd, sizeof cmd, "'%s' outbox '%s/data'", bin, cfgdir);
        FILE *p = popen(cmd, "r");
        assert_non_null(p);
        while (fgets(line, sizeof line, p)) {
            const char *u = strstr(line, "\"user\":\"c-");
            if (!u)
                continue; /* the other tests' people share the data directory */
            nrows++;      /* any status: the test channel's receiver refuses (loopback), so most are dead */
            int n = atoi(u + 10);
            if (n < 0 || n >= 15000) {
                bad++;
                continue;
            }
            if (strstr(line, "\"template\":\"welcome\""))
                welcome[n]++;
            else if (strstr(line, "\"template\":\"nudge\""))
                nudge[n]++;
            else
                bad++;
        }
        pclose(p);
        ok = 1;
        for (int k = 0; k < nsignups && ok; k++)
            ok = welcome[signups[k]] == 1 && nudge[signups[k]] == 1;
        if (!ok)
            usleep(250000);
    }
    assert_int_equal(bad, 0);
    for (int k = 0; k < nsignups; k++)
        if (welcome[signups[k]] != 1 || nudge[signups[k]] != 1)
            fail_msg("outbox: sign-up c-%d has %d welcome and %d nudge actions (want 1 and 1)", signups[k],
                     welcome[signups[k]], nudge[signups[k]]);
    for (int n = 0; n < 15000; n++) /* unacknowledged sign-ups may be in, but only once */
        if (welcome[n] > 1 || nudge[n] > 1)
            fail_msg("outbox: c-%d has %d welcome and %d nudge actions", n, welcome[n], nudge[n]);
    assert_true(nrows >= 2 * nsignups);
}

/* kill -9 at random moments while a client sends: after every restart, everything
 * acknowledged is there, each stage timer fired once (the person moved on exactly once),
 * and no action id was decided twice across all the runs' logs. */
static void test_crash_rounds(void **state)
{
    (void)state;
    char acked_path[] = "/tmp/jd-crash-acked-XXXXXX";
    int afd = mkstemp(acked_path);
    assert_true(afd >= 0);
    close(afd);
    srand((unsigned)getpid());
    int sent_pings = 0, next = 0;
    for (int round = 0; round < 3; round++) {
        int base = next;
        pid_t child = fork();
        if (child == 0) { /* the client: sends until killed, writes each acknowledged id */
            FILE *out = fopen(acked_path, "a");
            for (int i = base; i < base + 5000; i++) {
                char body[256];
                resp r;
                if (i % 2)
                    snprintf(body, sizeof body,
                             "{\"userId\":\"c-%d\",\"event\":\"Signed Up\",\"messageId\":\"crash-%d\"}", i, i);
                else
                    snprintf(body, sizeof body,
                             "{\"userId\":\"c-pinger\",\"event\":\"CRM Contact Property Changed\","
                             "\"messageId\":\"crash-%d\"}",
                             i);
                post(&r, "/v1/track", "Bearer wk1", body);
                if (r.status == 200) {
                    fprintf(out, "%d\n", i);
                    fflush(out);
                }
            }
            fclose(out);
            _exit(0);
        }
        usleep(150000 + (useconds_t)(rand() % 350000));
        kill(daemon_pid, SIGKILL);
        waitpid(daemon_pid, NULL, 0);
        kill(child, SIGKILL);
        waitpid(child, NULL, 0);
        next = base + 5000;
        sent_pings += 2500; /* an upper bound: at most half of what the client could send */
        assert_int_equal(spawn_daemon(), 0);
    }
    /* what the clients saw acknowledged */
    FILE *f = fopen(acked_path, "r");
    assert_non_null(f);
    int id, acked_pings = 0, acked_signups = 0;
    static int signups[15000];
    while (fscanf(f, "%d", &id) == 1) {
        if (id % 2)
            signups[acked_signups++] = id;
        else
            acked_pings++;
    }
    fclose(f);
    unlink(acked_path);
    assert_true(acked_signups > 0 && acked_pings > 0);
    resp r;
    /* every acknowledged sign-up is back; once its 1 s timer has fired, the person is in
     * "nudged" */
    usleep(1500000);
    for (int k = 0; k < acked_signups; k++) {
        char path[64];
        snprintf(path, sizeof path, "/v1/users/c-%d", signups[k]);
        int ok = 0;
        for (int tries = 0; tries < 30 && !ok; tries++) {
            http(&r, "GET", path, "Bearer ak1", NULL, 0);
            ok = r.status == 200 && strstr(r.body, "\"stage\":\"nudged\"");
            if (!ok)
                usleep(100000);
        }
        if (!ok)
            fail_msg("acknowledged sign-up c-%d: %ld %s", signups[k], r.status, r.body);
    }
    /* each acknowledged ping counted once: acked <= score <= sent */
    http(&r, "GET", "/v1/users/c-pinger", "Bearer ak1", NULL, 0);
    const char *sc = strstr(r.body, "\"score\":");
    assert_non_null(sc);
    double score = atof(sc + 8);
    if (score < acked_pings || score > sent_pings)
        fail_msg("score %.0f outside [%d, %d]", score, acked_pings, sent_pings);
    /* no action id decided twice across all runs */
    FILE *lf = fopen(logpath, "r");
    assert_non_null(lf);
    static char ids[20000][33];
    int nids = 0;
    char line[8192];
    while (fgets(line, sizeof line, lf) && nids < 20000) {
        const char *a = strstr(line, "\"msg\":\"action decided\"");
        const char *p = a ? strstr(a, "\"id\":\"") : NULL;
        if (p && strlen(p + 6) >= 32) {
            memcpy(ids[nids], p + 6, 32);
            ids[nids][32] = '\0';
            nids++;
        }
    }
    fclose(lf);
    qsort(ids, (size_t)nids, sizeof ids[0], (int (*)(const void *, const void *))strcmp);
    for (int k = 1; k < nids; k++)
        if (strcmp(ids[k], ids[k - 1]) == 0)
            fail_msg("action id %s decided twice", ids[k]);
    assert_true(nids > acked_signups); /* welcome + nudge per sign-up, at least */
    check_outbox(signups, acked_signups);
    /* some megabytes went through 64 KB segments; checkpoints removed the ones covered */
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "ls '%s'/data/shard-*/log | grep -c '\\.log$'", cfgdir);
    FILE *p = popen(cmd, "r");
    int segs = 0;
    assert_int_equal(fscanf(p, "%d", &segs), 1);
    pclose(p);
    if (segs < SHARDS || segs > 4 * SHARDS)
        fail_msg("%d log segments left after checkpoints (want 1 to 4 per shard)", segs);
}

static void test_sigterm_exits_cleanly(void **state)
{
    (void)state;
    /* a request in flight: headers and half the body sent before SIGTERM */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {
        .sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    const char *ev = "{\"userId\":\"late-1\",\"event\":\"Signed Up\"}";
    char req[512];
    int n =
        snprintf(req, sizeof req,
                 "POST /v1/track HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wk1\r\nContent-Length: %zu\r\n\r\n%.10s",
                 strlen(ev), ev);
    assert_int_equal(write(fd, req, (size_t)n), n);
    usleep(100000);
    assert_int_equal(kill(daemon_pid, SIGTERM), 0);
    usleep(200000);
    /* no new connections once stopping */
    resp r;
    http(&r, "GET", "/livez", NULL, NULL, 0);
    assert_int_equal(r.status, -1);
    assert_int_equal(write(fd, ev + 10, strlen(ev) - 10), (ssize_t)(strlen(ev) - 10));
    char ans[1024];
    ssize_t got = read(fd, ans, sizeof ans - 1);
    assert_true(got > 0);
    ans[got] = '\0';
    assert_non_null(strstr(ans, "200 OK"));
    assert_non_null(strstr(ans, "{\"success\":true}"));
    close(fd);
    int status = 0;
    pid_t w = 0;
    for (int i = 0; i < 100 && w == 0; i++) {
        w = waitpid(daemon_pid, &status, WNOHANG);
        if (w == 0)
            usleep(50000);
    }
    assert_int_equal(w, daemon_pid);
    daemon_pid = 0;
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    FILE *f = fopen(logpath, "r");
    assert_non_null(f);
    char line[4096];
    int listening = 0, stopped = 0, actions = 0;
    while (fgets(line, sizeof line, f)) {
        assert_true(line[0] == '{'); /* every log line is a JSON object */
        listening |= strstr(line, "\"msg\":\"listening\"") != NULL;
        stopped |= strstr(line, "\"msg\":\"stopped\"") != NULL;
        actions += strstr(line, "\"msg\":\"action decided\"") != NULL;
    }
    fclose(f);
    assert_true(listening);
    assert_true(stopped);
    assert_true(actions >= 3);
}

int main(int argc, char **argv)
{
    (void)argc;
    /* build/tests/test_serve -> build/journeyd */
    snprintf(bin, sizeof bin, "%s", argv[0]);
    char *slash = strrchr(bin, '/');
    if (slash)
        *slash = '\0';
    slash = strrchr(bin, '/');
    if (slash)
        *slash = '\0';
    strncat(bin, "/journeyd", sizeof bin - strlen(bin) - 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_health),
        cmocka_unit_test(test_auth),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_batch),
        cmocka_unit_test(test_timer_fires_on_real_clock),
        cmocka_unit_test(test_hubspot_source),
        cmocka_unit_test(test_other_sources),
        cmocka_unit_test(test_stream),
        cmocka_unit_test(test_conformance_bodies),
        cmocka_unit_test(test_reload),
        cmocka_unit_test(test_reload_under_load),
        cmocka_unit_test(test_restart_after_kill),
        cmocka_unit_test(test_crash_rounds),
        cmocka_unit_test(test_sigterm_exits_cleanly),
    };
    return cmocka_run_group_tests_name("serve", tests, start, stop);
}
