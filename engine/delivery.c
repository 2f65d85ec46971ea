/* delivery: the daemon's side of delivering decided actions. Live actions are formatted
 * (the channel's Lua formatter) and handed to the dispatcher as they are decided; at
 * start, what the outbox still holds as pending or retrying is handed over again with
 * its attempt count and next attempt time, so a restart continues the schedule. Every
 * outcome goes back to the outbox row with the next checkpoint. Dead letters are the
 * outbox rows marked dead: listed and retried over the admin API and the CLI.
 * Uses dispatch, deliver, outbox, store, serve, libcurl (the CLI). */
#define _POSIX_C_SOURCE 200809L
#include "delivery.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dispatch.h"
#include "durable.h"
#include "outbox.h"
#include "serve.h"
#include "store.h"

static void on_result(void *ud, const jd_dispatch_result *r)
{
    jd_server *s = ud;
    const char *status = "pending";
    switch (r->outcome) {
    case JD_DELIVERED: status = "delivered"; break;
    case JD_RETRY_SCHEDULED: status = "retrying"; break;
    case JD_DEAD: status = "dead"; break;
    case JD_CHANNEL_DISABLED: status = "pending"; break; /* waits in the channel's queue */
    }
    jd_engine_outbox_result(s->engine, r->id, status, r->attempts, r->next_attempt_ms, r->error[0] ? r->error : NULL);
    jd_durable_changed(s);
    if (r->outcome == JD_DELIVERED)
        return;
    char extra[1024];
    jd_buf b;
    jd_buf_init(&b);
    jd_buf_printf(&b, "\"id\":\"%s\",\"channel\":", r->id);
    jd_serve_json_string(s, &b, r->channel);
    jd_buf_printf(&b, ",\"status\":%d,\"attempts\":%u,\"next_attempt_ms\":%lld,\"error\":", r->status, r->attempts,
                  (long long)r->next_attempt_ms);
    jd_serve_json_string(s, &b, r->error);
    snprintf(extra, sizeof extra, "%s", jd_buf_cstr(&b));
    jd_buf_free(&b);
    jd_serve_log(s, r->outcome == JD_RETRY_SCHEDULED ? "warn" : "error",
                 r->outcome == JD_RETRY_SCHEDULED ? "delivery failed; retry scheduled"
                 : r->outcome == JD_DEAD          ? "delivery failed for good; dead letter"
                                                  : "channel disabled by 410 Gone",
                 extra);
}

static void on_dispatch_log(void *ud, const char *level, const char *line)
{
    jd_serve_log(ud, level, line, NULL);
}

/* (Re)declares every channel of the loaded scripts with the dispatcher. */
static int declare_channels(jd_server *s, char *err, size_t errlen)
{
    for (size_t i = 0;; i++) {
        const char *name = jd_engine_channel_name(s->engine, i);
        if (!name)
            return 0;
        jd_error e;
        jd_channel_opts *o = jd_engine_channel_opts(s->engine, name, &e);
        int rc = o ? jd_dispatch_channel(s->dispatch, name, o) : -1;
        jd_channel_opts_free(o);
        if (rc) {
            snprintf(err, errlen, "channel %s: %s", name, o ? "invalid delivery options" : e.text);
            return -1;
        }
    }
}

/* Formats an action's JSON and queues it. A formatter error makes it a dead letter. */
static void submit(jd_server *s, const char *id, const char *json, size_t n, uint32_t attempts, int64_t not_before)
{
    jd_request req;
    jd_error err;
    if (jd_engine_format_action(s->engine, json, n, &req, &err)) {
        jd_engine_outbox_result(s->engine, id, "dead", attempts, 0, err.text);
        jd_durable_changed(s);
        jd_serve_log(s, "error", "delivery: the channel's formatter failed; dead letter", NULL);
        return;
    }
    /* the channel and user, read back from the action itself */
    char channel[256] = "", user[512] = "";
    const char *c = strstr(json, "\"channel\":\""), *u = strstr(json, "\"user\":\"");
    if (c)
        sscanf(c + 11, "%255[^\"]", channel);
    if (u)
        sscanf(u + 8, "%511[^\"]", user);
    if (jd_dispatch_submit(s->dispatch, id, channel, user, &req, attempts, not_before)) {
        jd_engine_outbox_result(s->engine, id, "dead", attempts, 0, "the channel is not declared");
        jd_durable_changed(s);
    }
    jd_request_free(&req);
}

static int off_by_config(jd_server *s)
{
    const char *v = getenv("JOURNEYD_DELIVERY");
    if (!v || !*v)
        v = jd_engine_config(s->engine, "delivery");
    return v && strcmp(v, "off") == 0;
}

int jd_delivery_open(jd_server *s, char *err, size_t errlen)
{
    if (off_by_config(s)) {
        jd_serve_log(s, "warn", "delivery is off (delivery = \"off\"): actions stay pending in the outbox", NULL);
        return 0;
    }
    jd_dispatch_hooks h = {.on_result = on_result, .on_log = on_dispatch_log, .ud = s};
    s->dispatch = jd_dispatch_new(s->base, &h);
    if (!s->dispatch) {
        snprintf(err, errlen, "delivery: cannot set up libcurl");
        return -1;
    }
    if (declare_channels(s, err, errlen))
        return -1;
    jd_store *st = jd_engine_store(s->engine);
    if (!st)
        return 0;
    /* what was decided and not yet delivered, in decision order */
    jd_buf rows, keep;
    jd_buf_init(&rows);
    jd_buf_init(&keep);
    long n = 0, total = 0;
    for (int pass = 0; pass < 2; pass++) {
        jd_buf_reset(&rows);
        jd_buf_reset(&keep);
        n = jd_outbox_list(st, pass ? "retrying" : "pending", &rows, &keep);
        for (long i = 0; i < n; i++) {
            const jd_outbox_row *r = (const jd_outbox_row *)rows.data + i;
            /* next: a retry's time, or a deferred action's deliver_at */
            submit(s, r->id, r->action, r->action_len, r->attempts, r->next);
        }
        total += n > 0 ? n : 0;
    }
    jd_buf_free(&rows);
    jd_buf_free(&keep);
    char extra[64];
    snprintf(extra, sizeof extra, "\"resubmitted\":%ld", total);
    jd_serve_log(s, "info", "delivery: started", extra);
    return 0;
}

void jd_delivery_action(jd_server *s, const jd_action *a)
{
    if (!s->dispatch)
        return;
    size_t n;
    const char *json = jd_action_json(a, &n);
    char id[33];
    snprintf(id, sizeof id, "%s", jd_action_id(a));
    submit(s, id, json, n, 0, jd_action_deliver_at(a)); /* a send window may defer it */
}

void jd_delivery_reload(jd_server *s)
{
    char err[512];
    if (s->dispatch && declare_channels(s, err, sizeof err))
        jd_serve_log(s, "error", "delivery: a channel's options are invalid after the reload", NULL);
}

void jd_delivery_close(jd_server *s)
{
    jd_dispatch_free(s->dispatch);
    s->dispatch = NULL;
}

char *jd_delivery_metrics(jd_server *s)
{
    return s->dispatch ? jd_dispatch_metrics(s->dispatch) : NULL;
}

char *jd_delivery_dead_json(jd_server *s)
{
    jd_store *st = jd_engine_store(s->engine);
    jd_buf out;
    jd_buf_init(&out);
    jd_buf_puts(&out, "{\"deadletters\":[");
    if (st) {
        jd_buf rows, keep;
        jd_buf_init(&rows);
        jd_buf_init(&keep);
        long n = jd_outbox_list(st, "dead", &rows, &keep);
        for (long i = 0; i < n; i++) {
            const jd_outbox_row *r = (const jd_outbox_row *)rows.data + i;
            jd_buf_printf(&out, "%s{\"id\":\"%s\",\"attempts\":%u,\"error\":", i ? "," : "", r->id, r->attempts);
            jd_buf b;
            jd_buf_init(&b);
            jd_buf_append(&b, r->error ? r->error : "", r->error ? r->error_len : 0);
            jd_serve_json_string(s, &out, jd_buf_cstr(&b));
            jd_buf_free(&b);
            jd_buf_puts(&out, ",\"action\":");
            jd_buf_append(&out, r->action, r->action_len);
            jd_buf_putc(&out, '}');
        }
        jd_buf_free(&rows);
        jd_buf_free(&keep);
    }
    jd_buf_puts(&out, "]}");
    char *json = jd_strndup(out.data, out.len);
    jd_buf_free(&out);
    return json;
}

int jd_delivery_retry(jd_server *s, const char *id)
{
    jd_store *st = jd_engine_store(s->engine);
    if (!st || !s->dispatch || strlen(id) != 32 || strspn(id, "0123456789abcdef") != 32)
        return 404;
    jd_outbox_row r;
    if (jd_outbox_get(st, id, &r))
        return 404;
    if (r.status_len != 4 || memcmp(r.status, "dead", 4) != 0)
        return 409;
    jd_buf action;
    jd_buf_init(&action);
    jd_buf_append(&action, r.action, r.action_len); /* v is valid until the next store call */
    jd_engine_outbox_result(s->engine, id, "pending", 0, 0, NULL);
    jd_durable_changed(s);
    submit(s, id, action.data, action.len, 0, 0);
    jd_buf_free(&action);
    return 200;
}

/* ---------------------------------------------------------------- CLI */

static size_t to_stdout(char *p, size_t sz, size_t nm, void *ud)
{
    (void)ud;
    return fwrite(p, sz, nm, stdout);
}

int jd_cmd_deadletters(int argc, char **argv)
{
    const char *url = NULL, *key = NULL, *retry = NULL, *dir = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--url") == 0 && i + 1 < argc)
            url = argv[++i];
        else if (strcmp(argv[i], "--key") == 0 && i + 1 < argc)
            key = argv[++i];
        else if (strcmp(argv[i], "retry") == 0 && i + 1 < argc)
            retry = argv[++i];
        else if (argv[i][0] != '-' && !dir)
            dir = argv[i];
        else {
            url = dir = NULL;
            break;
        }
    }
    if (dir && !url && !retry) { /* the store directly: the same as `journeyd outbox DIR --status dead` */
        char a0[] = "outbox", a2[] = "--status", a3[] = "dead";
        char *args[] = {a0, (char *)dir, a2, a3, NULL};
        return jd_cmd_outbox(4, args);
    }
    if (!url || dir) {
        fprintf(stderr, "usage: journeyd deadletters DATA_DIR\n"
                        "       journeyd deadletters --url http://127.0.0.1:PORT [--key ADMINKEY] [retry ID]\n");
        return 2;
    }
    CURL *c = curl_easy_init();
    if (!c)
        return 1;
    char full[2048], auth[600];
    if (retry)
        snprintf(full, sizeof full, "%s/v1/deadletters/%s/retry", url, retry);
    else
        snprintf(full, sizeof full, "%s/v1/deadletters", url);
    struct curl_slist *h = NULL;
    if (key) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", key);
        h = curl_slist_append(h, auth);
    }
    curl_easy_setopt(c, CURLOPT_URL, full);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, to_stdout);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    if (retry)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    printf("\n");
    if (rc != CURLE_OK) {
        fprintf(stderr, "journeyd: %s: %s\n", full, curl_easy_strerror(rc));
        return 1;
    }
    return status == 200 ? 0 : 1;
}
