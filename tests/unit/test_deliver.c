/* test_deliver: channel formatters (every built-in type and a j.channel_type), channel
 * options from j.channel, Standard Webhooks signatures against the published vector,
 * SSRF address classes (IPv4, IPv6, mapped forms) and the host allow-list. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>

#include "testutil.h"

#include "deliver.h"

static const char *SCRIPT =
    "local j = require \"journey\"\n"
    "j.channel \"crm\" { type = \"webhook\", url = \"https://crm.example.com/hook\", secret = "
    "\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\",\n"
    "  headers = { ['x-team'] = 'growth' }, retry = { '100ms', '2s' }, timeout = '1s', concurrency = 4,\n"
    "  allow_hosts = { 'crm.example.com', '*.hooks.example.com' }, allow_loopback = true }\n"
    "j.channel \"team\" { type = \"slack\", url = \"https://hooks.slack.test/services/T/B/X\" }\n"
    "j.channel \"pm\" { type = \"postmark\", token = \"pm-token\", from = \"Acme <hi@acme.test>\",\n"
    "  base_url = \"http://127.0.0.1:9/\" }\n"
    "j.channel \"sg\" { type = \"sendgrid\", api_key = \"SG.key\", from = \"hi@acme.test\", from_name = \"Acme\",\n"
    "  base_url = \"http://127.0.0.1:9\" }\n"
    "j.channel \"mail\" { type = \"smtp\", url = \"smtp://127.0.0.1:2525\", from = \"hi@acme.test\", starttls = "
    "false }\n"
    "j.channel_type \"sms\" { format = function(spec, a)\n"
    "  return { url = spec.url .. '/' .. a.user, headers = { { 'x-id', a.id } }, body = 'hi ' .. a.payload.name }\n"
    "end }\n"
    "j.channel \"text\" { type = \"sms\", url = \"http://127.0.0.1:9/sms\" }\n"
    "j.channel_type \"broken\" { format = function(spec, a) return nil + 1 end }\n"
    "j.channel \"bad\" { type = \"broken\", url = \"http://x\" }\n"
    "j.channel_type \"slow\" { format = function(spec, a) while true do end end }\n"
    "j.channel \"loop\" { type = \"slow\", url = \"http://x\" }\n"
    "j.channel \"nope\" { type = \"carrier-pigeon\", url = \"http://x\" }\n"
    "j.channel \"badsecret\" { type = \"webhook\", url = \"http://x\", secrets = { 'whsec_!!!!' } }\n";

#define ACTION(channel, payload)                                                                            \
    "{\"time\":\"2026-11-01T09:00:01.000Z\",\"user\":\"u1\",\"journey\":\"trial\",\"stage\":\"signed_up\"," \
    "\"channel\":\"" channel "\",\"payload\":" payload ",\"id\":\"24e92941f4131a154a7beb20eb60c551\"}"

static tu_run R;

static int setup(void **state)
{
    (void)state;
    tu_start(&R, SCRIPT);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tu_free(&R);
    return 0;
}

static const char *header(const jd_request *r, const char *name)
{
    for (size_t i = 0; i < r->nheaders; i++)
        if (strcasecmp(r->headers[i].name, name) == 0)
            return r->headers[i].value;
    return NULL;
}

static void format_ok(const char *json, jd_request *r)
{
    jd_error err;
    if (jd_engine_format_action(R.e, json, strlen(json), r, &err))
        fail_msg("format failed: %s", err.text);
}

#define HAS(hay, needle)                                                                 \
    do {                                                                                 \
        if (!strstr((hay), (needle)))                                                    \
            fail_msg("%s:%d: expected %s in:\n%s", __FILE__, __LINE__, (needle), (hay)); \
    } while (0)

static void test_webhook_shape(void **state)
{
    (void)state;
    jd_request r;
    format_ok(ACTION("crm", "{\"template\":\"welcome\"}"), &r);
    assert_int_equal(r.smtp, 0);
    assert_string_equal(r.method, "POST");
    assert_string_equal(r.url, "https://crm.example.com/hook");
    assert_string_equal(header(&r, "content-type"), "application/json");
    assert_string_equal(header(&r, "x-team"), "growth");
    assert_null(header(&r, "webhook-signature")); /* signed at send time, in C */
    HAS(r.body, "\"id\":\"24e92941f4131a154a7beb20eb60c551\"");
    HAS(r.body, "\"payload\":{\"template\":\"welcome\"}");
    HAS(r.body, "\"user\":\"u1\"");
    HAS(r.body, "\"journey\":\"trial\"");
    assert_null(strstr(r.body, "whsec_")); /* the secret stays out of the request */
    jd_request copy;
    jd_request_copy(&copy, &r);
    assert_string_equal(copy.body, r.body);
    jd_request_free(&r);
    jd_request_free(&copy);
}

static void test_slack_shape(void **state)
{
    (void)state;
    jd_request r;
    format_ok(ACTION("team", "\"trial stalled: u1\""), &r);
    assert_string_equal(r.url, "https://hooks.slack.test/services/T/B/X");
    assert_string_equal(r.body, "{\"text\":\"trial stalled: u1\"}");
    jd_request_free(&r);
    format_ok(ACTION("team", "{\"text\":\"hi\",\"blocks\":[{\"type\":\"section\",\"text\":{\"type\":\"mrkdwn\","
                             "\"text\":\"*hi*\"}}]}"),
              &r);
    HAS(r.body, "\"blocks\":[{\"text\":{\"text\":\"*hi*\",\"type\":\"mrkdwn\"},\"type\":\"section\"}]");
    HAS(r.body, "\"text\":\"hi\"");
    jd_request_free(&r);
}

static void test_postmark_shape(void **state)
{
    (void)state;
    jd_request r;
    format_ok(ACTION("pm", "{\"to\":\"ada@example.com\",\"subject\":\"Welcome\",\"text\":\"Hi Ada\"}"), &r);
    assert_string_equal(r.url, "http://127.0.0.1:9/email");
    assert_string_equal(header(&r, "x-postmark-server-token"), "pm-token");
    assert_string_equal(header(&r, "accept"), "application/json");
    HAS(r.body, "\"From\":\"Acme <hi@acme.test>\"");
    HAS(r.body, "\"To\":\"ada@example.com\"");
    HAS(r.body, "\"Subject\":\"Welcome\"");
    HAS(r.body, "\"TextBody\":\"Hi Ada\"");
    HAS(r.body, "\"MessageStream\":\"outbound\"");
    HAS(r.body, "\"Metadata\":{\"journeyd_id\":\"24e92941f4131a154a7beb20eb60c551\"}");
    jd_request_free(&r);
    format_ok(ACTION("pm", "{\"to\":\"ada@example.com\",\"template\":\"welcome\",\"model\":{\"name\":\"Ada\"}}"), &r);
    assert_string_equal(r.url, "http://127.0.0.1:9/email/withTemplate");
    HAS(r.body, "\"TemplateAlias\":\"welcome\"");
    HAS(r.body, "\"TemplateModel\":{\"name\":\"Ada\"}");
    jd_request_free(&r);
}

static void test_sendgrid_shape(void **state)
{
    (void)state;
    jd_request r;
    format_ok(
        ACTION("sg", "{\"to\":\"ada@example.com\",\"subject\":\"Welcome\",\"text\":\"Hi\",\"html\":\"<b>Hi</b>\"}"),
        &r);
    assert_string_equal(r.url, "http://127.0.0.1:9/v3/mail/send");
    assert_string_equal(header(&r, "authorization"), "Bearer SG.key");
    HAS(r.body, "\"personalizations\":[{\"to\":[{\"email\":\"ada@example.com\"}]}]");
    HAS(r.body, "\"from\":{\"email\":\"hi@acme.test\",\"name\":\"Acme\"}");
    HAS(r.body,
        "\"content\":[{\"type\":\"text/plain\",\"value\":\"Hi\"},{\"type\":\"text/html\",\"value\":\"<b>Hi</b>\"}]");
    HAS(r.body, "\"subject\":\"Welcome\"");
    jd_request_free(&r);
    format_ok(ACTION("sg", "{\"to\":[\"a@x.test\",\"b@x.test\"],\"template\":\"d-123\",\"data\":{\"n\":1}}"), &r);
    HAS(r.body, "\"template_id\":\"d-123\"");
    HAS(r.body, "\"dynamic_template_data\":{\"n\":1}");
    HAS(r.body, "{\"email\":\"b@x.test\"}");
    jd_request_free(&r);
}

static void test_smtp_shape(void **state)
{
    (void)state;
    jd_request r;
    format_ok(ACTION("mail", "{\"to\":\"ada@example.com\",\"subject\":\"Grüße\",\"text\":\"line 1\\nline 2\"}"), &r);
    assert_int_equal(r.smtp, 1);
    assert_string_equal(r.url, "smtp://127.0.0.1:2525");
    assert_string_equal(r.mail_from, "hi@acme.test");
    assert_int_equal(r.nrcpt, 1);
    assert_string_equal(r.rcpt[0], "ada@example.com");
    assert_int_equal(r.starttls, JD_STARTTLS_NONE);
    HAS(r.body, "From: hi@acme.test\r\n");
    HAS(r.body, "To: ada@example.com\r\n");
    HAS(r.body, "Subject: =?UTF-8?B?R3LDvMOfZQ==?=\r\n");
    HAS(r.body, "Date: Sun, 01 Nov 2026 09:00:01 +0000\r\n");
    HAS(r.body, "Message-ID: <24e92941f4131a154a7beb20eb60c551@journeyd>\r\n");
    HAS(r.body, "\r\n\r\nline 1\r\nline 2\r\n");
    jd_request_free(&r);
}

static void test_user_type(void **state)
{
    (void)state;
    jd_request r;
    format_ok(ACTION("text", "{\"name\":\"Ada\"}"), &r);
    assert_string_equal(r.url, "http://127.0.0.1:9/sms/u1");
    assert_string_equal(r.method, "POST");
    assert_string_equal(header(&r, "x-id"), "24e92941f4131a154a7beb20eb60c551");
    assert_string_equal(r.body, "hi Ada");
    jd_request_free(&r);
}

static void test_broken_formatters(void **state)
{
    (void)state;
    jd_request r;
    jd_error err;
    const char *a = ACTION("bad", "{}");
    assert_int_equal(jd_engine_format_action(R.e, a, strlen(a), &r, &err), -1);
    HAS(err.text, "arithmetic on a nil value");
    assert_null(r.url);
    a = ACTION("loop", "{}");
    assert_int_equal(jd_engine_format_action(R.e, a, strlen(a), &r, &err), -1);
    HAS(err.text, "time limit");
    a = ACTION("nope", "{}");
    assert_int_equal(jd_engine_format_action(R.e, a, strlen(a), &r, &err), -1);
    HAS(err.text, "unknown type 'carrier-pigeon'");
    a = ACTION("missing", "{}");
    assert_int_equal(jd_engine_format_action(R.e, a, strlen(a), &r, &err), -1);
    HAS(err.text, "no channel named 'missing'");
    a = ACTION("pm", "\"not a table\"");
    assert_int_equal(jd_engine_format_action(R.e, a, strlen(a), &r, &err), -1);
    HAS(err.text, "must be a table");
    assert_int_equal(jd_engine_format_action(R.e, "{nope", 5, &r, &err), -1);
    assert_true(jd_engine_stat(R.e, "lua_errors") >= 4);
    /* the engine still formats after the failures */
    format_ok(ACTION("team", "\"still here\""), &r);
    jd_request_free(&r);
}

static void test_channel_opts(void **state)
{
    (void)state;
    jd_error err;
    jd_channel_opts *o = jd_engine_channel_opts(R.e, "crm", &err);
    if (!o)
        fail_msg("%s", err.text);
    assert_string_equal(o->type, "webhook");
    assert_int_equal(o->concurrency, 4);
    assert_int_equal(o->timeout_ms, 1000);
    assert_int_equal(o->nretry, 2);
    assert_int_equal(o->retry_ms[0], 100);
    assert_int_equal(o->retry_ms[1], 2000);
    assert_int_equal(o->nsecrets, 1);
    assert_int_equal(o->nallow_hosts, 2);
    assert_int_equal(o->allow, JD_ALLOW_LOOPBACK);
    jd_channel_opts_free(o);
    assert_null(jd_engine_channel_opts(R.e, "badsecret", &err));
    HAS(err.text, "secret #1");
    assert_null(strstr(err.text, "!!!!")); /* never echoes a secret */
    assert_null(jd_engine_channel_opts(R.e, "missing", &err));
    size_t n = 0;
    while (jd_engine_channel_name(R.e, n))
        n++;
    assert_int_equal(n, 10);
    assert_string_equal(jd_engine_channel_name(R.e, 0), "crm");
}

/* The Standard Webhooks test vector (the spec and its reference libraries). */
static void test_signature_vector(void **state)
{
    (void)state;
    const char *secret[] = {"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"};
    const char *body = "{\"test\": 2432232314}";
    char out[256];
    int n = jd_webhook_sign(secret, 1, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body, strlen(body), out, sizeof out);
    assert_true(n > 0);
    assert_string_equal(out, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    /* without the prefix: the same key */
    const char *bare[] = {"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"};
    jd_webhook_sign(bare, 1, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body, strlen(body), out, sizeof out);
    assert_string_equal(out, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    /* rotation: one signature per secret, space separated */
    const char *two[] = {"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_c2Vjb25kLXNlY3JldC1rZXk="};
    n = jd_webhook_sign(two, 2, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body, strlen(body), out, sizeof out);
    assert_true(n > 0);
    assert_true(strncmp(out, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE= v1,", 51) == 0);
    assert_int_equal(strlen(out), 2 * 47 + 1);
    const char *bad[] = {"whsec_***"};
    assert_int_equal(jd_webhook_sign(bad, 1, "x", 1, "", 0, out, sizeof out), -1);
    assert_int_equal(jd_webhook_sign(secret, 1, "x", 1, "", 0, out, 10), -1);
}

static jd_addr_class v4(const char *s)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    assert_int_equal(inet_pton(AF_INET, s, &a.sin_addr), 1);
    return jd_addr_classify((struct sockaddr *)&a, sizeof a);
}

static jd_addr_class v6(const char *s)
{
    struct sockaddr_in6 a = {.sin6_family = AF_INET6};
    assert_int_equal(inet_pton(AF_INET6, s, &a.sin6_addr), 1);
    return jd_addr_classify((struct sockaddr *)&a, sizeof a);
}

static void test_address_classes(void **state)
{
    (void)state;
    static const struct {
        const char *a;
        jd_addr_class c;
    } cases[] = {
        {"8.8.8.8", JD_ADDR_PUBLIC},
        {"93.184.216.34", JD_ADDR_PUBLIC},
        {"10.1.2.3", JD_ADDR_PRIVATE},
        {"172.16.0.1", JD_ADDR_PRIVATE},
        {"172.31.255.255", JD_ADDR_PRIVATE},
        {"172.32.0.1", JD_ADDR_PUBLIC},
        {"192.168.1.1", JD_ADDR_PRIVATE},
        {"100.64.0.1", JD_ADDR_CGNAT},
        {"100.127.255.254", JD_ADDR_CGNAT},
        {"100.128.0.1", JD_ADDR_PUBLIC},
        {"127.0.0.1", JD_ADDR_LOOPBACK},
        {"127.255.0.9", JD_ADDR_LOOPBACK},
        {"169.254.169.254", JD_ADDR_LINK_LOCAL},
        {"0.0.0.0", JD_ADDR_UNSPECIFIED},
        {"224.0.0.1", JD_ADDR_RESERVED},
        {"255.255.255.255", JD_ADDR_RESERVED},
        {"2606:4700::1111", JD_ADDR_PUBLIC},
        {"::1", JD_ADDR_LOOPBACK},
        {"::", JD_ADDR_UNSPECIFIED},
        {"fc00::1", JD_ADDR_PRIVATE},
        {"fd12:3456::1", JD_ADDR_PRIVATE},
        {"fe80::1", JD_ADDR_LINK_LOCAL},
        {"ff02::1", JD_ADDR_RESERVED},
        {"::ffff:127.0.0.1", JD_ADDR_LOOPBACK},
        {"::ffff:10.0.0.1", JD_ADDR_PRIVATE},
        {"::ffff:169.254.169.254", JD_ADDR_LINK_LOCAL},
        {"::ffff:8.8.8.8", JD_ADDR_PUBLIC},
        {"::127.0.0.1", JD_ADDR_LOOPBACK},
        {"64:ff9b::a00:1", JD_ADDR_PRIVATE},
        {"2002:7f00:1::", JD_ADDR_LOOPBACK},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        jd_addr_class got = strchr(cases[i].a, ':') ? v6(cases[i].a) : v4(cases[i].a);
        if (got != cases[i].c)
            fail_msg("%s: expected %s, got %s", cases[i].a, jd_addr_class_name(cases[i].c), jd_addr_class_name(got));
    }
    struct sockaddr_in lo = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &lo.sin_addr);
    assert_int_equal(jd_addr_check((struct sockaddr *)&lo, sizeof lo, 0), JD_ADDR_LOOPBACK);
    assert_int_equal(jd_addr_check((struct sockaddr *)&lo, sizeof lo, JD_ALLOW_PRIVATE), JD_ADDR_LOOPBACK);
    assert_int_equal(jd_addr_check((struct sockaddr *)&lo, sizeof lo, JD_ALLOW_LOOPBACK), JD_ADDR_PUBLIC);
    struct sockaddr_in6 m = {.sin6_family = AF_INET6};
    inet_pton(AF_INET6, "::ffff:192.168.0.1", &m.sin6_addr);
    assert_int_equal(jd_addr_check((struct sockaddr *)&m, sizeof m, JD_ALLOW_LOOPBACK), JD_ADDR_PRIVATE);
    assert_int_equal(jd_addr_check((struct sockaddr *)&m, sizeof m, JD_ALLOW_PRIVATE), JD_ADDR_PUBLIC);
    inet_pton(AF_INET6, "::", &m.sin6_addr);
    assert_int_equal(jd_addr_check((struct sockaddr *)&m, sizeof m, 7), JD_ADDR_UNSPECIFIED);
}

static void test_host_allow_list(void **state)
{
    (void)state;
    const char *allow[] = {"crm.example.com", "*.hooks.example.com"};
    assert_true(jd_host_allowed(allow, 0, "anything.test"));
    assert_true(jd_host_allowed(allow, 2, "crm.example.com"));
    assert_true(jd_host_allowed(allow, 2, "CRM.Example.com."));
    assert_true(jd_host_allowed(allow, 2, "a.hooks.example.com"));
    assert_false(jd_host_allowed(allow, 2, "hooks.example.com"));
    assert_false(jd_host_allowed(allow, 2, "evilhooks.example.com"));
    assert_false(jd_host_allowed(allow, 2, "crm.example.com.evil.test"));
    assert_false(jd_host_allowed(allow, 2, NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_webhook_shape),     cmocka_unit_test(test_slack_shape),
        cmocka_unit_test(test_postmark_shape),    cmocka_unit_test(test_sendgrid_shape),
        cmocka_unit_test(test_smtp_shape),        cmocka_unit_test(test_user_type),
        cmocka_unit_test(test_broken_formatters), cmocka_unit_test(test_channel_opts),
        cmocka_unit_test(test_signature_vector),  cmocka_unit_test(test_address_classes),
        cmocka_unit_test(test_host_allow_list),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
