/* trace_cmd: `journeyd trace` — one person's decisions with their reasons, as a timeline.
 *   journeyd trace -c CONFIG.lua EVENTS.jsonl [--until T] USER_ID   (a dry run, as replay)
 *   journeyd trace --url http://HOST:PORT [--key ADMINKEY] USER_ID  (a running daemon)
 * Both read the same JSON (jd_engine_user_trace_json / GET /v1/users/ID/trace) and print
 * it the same way. Uses the public engine API, msgpack-c, libcurl. */
#define _POSIX_C_SOURCE 200809L
#include <curl/curl.h>
#include <getopt.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../include/journeyd.h"
#include "cli.h"

/* decisions kept per person in a dry run (the daemon keeps its own number) */
#define TRACE_KEEP 200

static void usage(FILE *f)
{
    fprintf(f, "usage: journeyd trace -c CONFIG.lua EVENTS.jsonl [--until ISO8601] [--json] USER_ID\n"
               "       journeyd trace --url http://127.0.0.1:PORT [--key ADMINKEY] [--json] USER_ID\n");
}

static const msgpack_object *get(const msgpack_object *map, const char *key)
{
    if (map->type != MSGPACK_OBJECT_MAP)
        return NULL;
    size_t kl = strlen(key);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object_kv *kv = &map->via.map.ptr[i];
        if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == kl &&
            memcmp(kv->key.via.str.ptr, key, kl) == 0)
            return &kv->val;
    }
    return NULL;
}

/* A string field as "%.*s" arguments; "-" when absent or not a string. */
static int slen(const msgpack_object *o)
{
    return o && o->type == MSGPACK_OBJECT_STR ? (int)o->via.str.size : 1;
}
static const char *sptr(const msgpack_object *o)
{
    return o && o->type == MSGPACK_OBJECT_STR ? o->via.str.ptr : "-";
}

/* Prints the trace JSON as a timeline. Returns 0, or -1 when it is not a trace. */
static int print_timeline(const char *json, size_t n, FILE *out)
{
    char *mp = NULL, err[256];
    size_t mplen = 0;
    if (jd_json_to_msgpack_alloc(json, n, &mp, &mplen, err, sizeof err))
        return -1;
    msgpack_zone zone;
    msgpack_zone_init(&zone, 4096);
    msgpack_object root;
    size_t off = 0;
    int rc = -1;
    if (msgpack_unpack(mp, mplen, &off, &zone, &root) != MSGPACK_UNPACK_SUCCESS)
        goto done;
    const msgpack_object *id = get(&root, "id"), *decs = get(&root, "decisions");
    if (!decs || decs->type != MSGPACK_OBJECT_ARRAY)
        goto done;
    fprintf(out, "user %.*s: %u decision%s, oldest first\n", slen(id), sptr(id), decs->via.array.size,
            decs->via.array.size == 1 ? "" : "s");
    for (uint32_t i = 0; i < decs->via.array.size; i++) {
        const msgpack_object *d = &decs->via.array.ptr[i];
        const msgpack_object *t = get(d, "time"), *k = get(d, "kind"), *j = get(d, "journey"), *s = get(d, "stage"),
                             *why = get(d, "detail");
        char where[300];
        if (j && j->type == MSGPACK_OBJECT_STR)
            snprintf(where, sizeof where, "%.*s%s%.*s", slen(j), sptr(j), s && s->type == MSGPACK_OBJECT_STR ? "/" : "",
                     s && s->type == MSGPACK_OBJECT_STR ? slen(s) : 0,
                     s && s->type == MSGPACK_OBJECT_STR ? sptr(s) : "");
        else
            snprintf(where, sizeof where, "-");
        fprintf(out, "  %.*s  %-9.*s  %-32s  %.*s\n", slen(t), sptr(t), slen(k), sptr(k), where, slen(why), sptr(why));
    }
    rc = 0;
done:
    msgpack_zone_destroy(&zone);
    free(mp);
    return rc;
}

/* ---------------------------------------------------------------- dry run */

static void quiet_log(const char *level, const char *line, void *ud)
{
    (void)level, (void)line, (void)ud;
}

/* Replays events on a virtual clock and returns the person's trace JSON (malloc'd), or
 * NULL with a message printed. */
static char *dry_run(const char *config, const char *events, const char *until, const char *user)
{
    int64_t until_ms = 0;
    if (until && jd_parse_time(until, &until_ms)) {
        fprintf(stderr, "journeyd: --until: not an ISO 8601 time: %s\n", until);
        return NULL;
    }
    FILE *in = strcmp(events, "-") == 0 ? stdin : fopen(events, "rb");
    if (!in) {
        fprintf(stderr, "journeyd: %s: cannot open\n", events);
        return NULL;
    }
    jd_options o = {.virtual_clock = 1, .decisions_per_user = TRACE_KEEP};
    jd_error err;
    jd_engine *e = jd_engine_new(config, &o, &err);
    if (!e) {
        fprintf(stderr, "%s\n", err.text);
        if (in != stdin)
            fclose(in);
        return NULL;
    }
    jd_engine_on_log(e, quiet_log, NULL);
    char *line = NULL, id[64];
    size_t cap = 0;
    ssize_t n;
    unsigned long lineno = 0, invalid = 0;
    while ((n = getline(&line, &cap, in)) > 0) {
        lineno++;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            n--;
        ssize_t k = 0;
        while (k < n && (line[k] == ' ' || line[k] == '\t'))
            k++;
        if (k == n)
            continue;
        snprintf(id, sizeof id, "replay-line-%lu", lineno); /* as replay names them */
        invalid += jd_engine_ingest_json(e, line, (size_t)n, id, &err) != 0;
    }
    free(line);
    if (in != stdin)
        fclose(in);
    if (until)
        jd_engine_advance(e, until_ms);
    if (invalid)
        fprintf(stderr, "journeyd: %lu invalid line%s skipped (journeyd replay reports them)\n", invalid,
                invalid == 1 ? "" : "s");
    char *json = jd_engine_user_trace_json(e, user, strlen(user));
    if (!json)
        fprintf(stderr, "journeyd: no such user '%s' in %s\n", user, events);
    jd_engine_free(e);
    return json;
}

/* ---------------------------------------------------------------- a running daemon */

typedef struct body {
    char *p;
    size_t n;
} body;

static size_t on_data(char *p, size_t size, size_t nmemb, void *ud)
{
    body *b = ud;
    size_t n = size * nmemb;
    char *q = realloc(b->p, b->n + n + 1);
    if (!q)
        return 0;
    memcpy(q + b->n, p, n);
    b->p = q;
    b->n += n;
    b->p[b->n] = '\0';
    return n;
}

static char *fetch(const char *url, const char *key, const char *user)
{
    CURL *c = curl_easy_init();
    if (!c)
        return NULL;
    char *esc = curl_easy_escape(c, user, 0);
    size_t ul = strlen(url);
    while (ul && url[ul - 1] == '/')
        ul--;
    size_t cap = ul + strlen(esc) + 32;
    char *full = malloc(cap);
    snprintf(full, cap, "%.*s/v1/users/%s/trace", (int)ul, url, esc);
    curl_free(esc);
    struct curl_slist *hdr = NULL;
    char auth[600];
    if (key) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", key);
        hdr = curl_slist_append(hdr, auth);
    }
    body b = {0};
    curl_easy_setopt(c, CURLOPT_URL, full);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    char *out = NULL;
    if (rc != CURLE_OK)
        fprintf(stderr, "journeyd: %s: %s\n", full, curl_easy_strerror(rc));
    else if (status == 200 && b.p)
        out = b.p, b.p = NULL;
    else if (status == 404)
        fprintf(stderr, "journeyd: no such user '%s'\n", user);
    else if (status == 401)
        fprintf(stderr, "journeyd: %s: an admin key is required (--key)\n", full);
    else
        fprintf(stderr, "journeyd: %s: HTTP %ld %s\n", full, status, b.p ? b.p : "");
    free(b.p);
    curl_slist_free_all(hdr);
    free(full);
    curl_easy_cleanup(c);
    return out;
}

int jd_cmd_trace(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, 0, 'c'},
        {"until", required_argument, 0, 'u'},
        {"url", required_argument, 0, 'U'},
        {"key", required_argument, 0, 'k'},
        {"json", no_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *config = NULL, *until = NULL, *url = NULL, *key = getenv("JOURNEYD_ADMIN_KEY");
    int raw = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "c:u:U:k:jh", opts, NULL)) != -1) {
        switch (c) {
        case 'c': config = optarg; break;
        case 'u': until = optarg; break;
        case 'U': url = optarg; break;
        case 'k': key = optarg; break;
        case 'j': raw = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    char *json = NULL;
    if (url && !config && optind == argc - 1) {
        json = fetch(url, key, argv[optind]);
    } else if (config && !url && optind == argc - 2) {
        json = dry_run(config, argv[optind], until, argv[optind + 1]);
    } else {
        usage(stderr);
        return 2;
    }
    if (!json)
        return 1;
    int rc = 0;
    if (raw)
        printf("%s\n", json);
    else if (print_timeline(json, strlen(json), stdout)) {
        fprintf(stderr, "journeyd: not a trace: %.200s\n", json);
        rc = 1;
    }
    free(json);
    return rc;
}
