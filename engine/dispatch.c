/* dispatch: libcurl multi on libevent (CURLMOPT_SOCKETFUNCTION / TIMERFUNCTION and one
 * event per socket), a channel per j.channel with its own limits, and per-user lines.
 *
 * An item moves: [wait for its time] -> its user's line -> the channel's ready queue
 * (only a line's head, and only while nothing else of that user is in flight) -> in
 * flight (at most `concurrency` per channel) -> finished (delivered, dead, disabled:
 * freed) or scheduled (back to waiting for its time, out of the line). */
#define _POSIX_C_SOURCE 200809L
#include "dispatch.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "buf.h"
#include "map.h"

#define DEFAULT_CONCURRENCY 16
#define DEFAULT_TIMEOUT_MS 15000
#define DEFAULT_JITTER 0.2
#define MAX_RETRY_AFTER_MS (24LL * 3600 * 1000)

static const int64_t default_schedule[] = {
    5000, 300000, 1800000, 7200000, 18000000, 36000000, 50400000, 72000000, 86400000,
};

typedef struct chan chan;
typedef struct uline uline;
typedef struct item item;

struct item {
    char id[64];
    char *user;
    chan *ch;
    uline *ln; /* while in a line, ready or in flight */
    jd_request req;
    uint32_t attempts; /* made so far */
    item *next;        /* line FIFO or ready FIFO */
    item *all_prev, *all_next;
    struct event wake;
    int waking;
    CURL *easy;
    struct curl_slist *hdrs, *rcpt;
    size_t readoff;
    int64_t started_us;
    char errbuf[CURL_ERROR_SIZE];
    char refused[160]; /* set by the socket guard */
    char resp[160];    /* the start of the response body, for errors */
    size_t resplen;
};

struct uline {
    char *user;
    item *head, *tail;
    int busy; /* its current item is ready or in flight */
};

struct chan {
    jd_dispatch *d;
    char *name;
    char *type;
    int webhook;
    uint32_t concurrency;
    int64_t timeout_ms;
    int64_t *retry;
    size_t nretry;
    double jitter;
    char **secrets;
    size_t nsecrets;
    char **hosts;
    size_t nhosts;
    unsigned allow;
    jd_map lines;
    item *ready, *ready_tail;
    item *all;
    uint32_t in_flight;
    uint64_t alive;
    int disabled, pumping;
    uint64_t delivered, retried, dead, disabled_events;
};

typedef struct sockctx {
    struct event ev;
    curl_socket_t fd;
    jd_dispatch *d;
    struct sockctx *prev, *next;
} sockctx;

struct jd_dispatch {
    struct event_base *base;
    CURLM *multi;
    struct event timer;
    jd_dispatch_hooks hooks;
    chan **chans;
    size_t nchans;
    sockctx *socks;
    CURL **pool;
    size_t npool, cappool;
    uint64_t rng;
    int checking;
};

static void pump(chan *ch);
static void check_done(jd_dispatch *d);

/* ---------------------------------------------------------------- helpers */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static double rand01(jd_dispatch *d)
{
    d->rng ^= d->rng << 13;
    d->rng ^= d->rng >> 7;
    d->rng ^= d->rng << 17;
    return (double)(d->rng >> 11) / 9007199254740992.0;
}

static void dlog(jd_dispatch *d, const char *level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void dlog(jd_dispatch *d, const char *level, const char *fmt, ...)
{
    if (!d->hooks.on_log)
        return;
    char line[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    d->hooks.on_log(d->hooks.ud, level, line);
}

static char *dup_str(const char *s)
{
    return s ? jd_strndup(s, strlen(s)) : NULL;
}

static void free_strs(char **v, size_t n, int wipe)
{
    for (size_t i = 0; i < n; i++) {
        if (wipe)
            memset(v[i], 0, strlen(v[i])); /* secrets: best effort */
        free(v[i]);
    }
    free(v);
}

static char **copy_strs(const char *const *v, size_t n)
{
    char **out = jd_xcalloc(n ? n : 1, sizeof *out);
    for (size_t i = 0; i < n; i++)
        out[i] = dup_str(v[i]);
    return out;
}

static chan *find_chan(const jd_dispatch *d, const char *name)
{
    for (size_t i = 0; i < d->nchans; i++)
        if (strcmp(d->chans[i]->name, name) == 0)
            return d->chans[i];
    return NULL;
}

/* ---------------------------------------------------------------- libcurl on libevent */

static void on_socket_event(evutil_socket_t fd, short what, void *arg)
{
    jd_dispatch *d = arg;
    int flags = (what & EV_READ ? CURL_CSELECT_IN : 0) | (what & EV_WRITE ? CURL_CSELECT_OUT : 0);
    int running;
    curl_multi_socket_action(d->multi, fd, flags, &running);
    check_done(d);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    jd_dispatch *d = arg;
    int running;
    curl_multi_socket_action(d->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(d);
}

static int socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    (void)easy;
    jd_dispatch *d = userp;
    sockctx *c = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (c) {
            event_del(&c->ev);
            if (c->prev)
                c->prev->next = c->next;
            else
                d->socks = c->next;
            if (c->next)
                c->next->prev = c->prev;
            free(c);
            curl_multi_assign(d->multi, s, NULL);
        }
        return 0;
    }
    if (!c) {
        c = jd_xcalloc(1, sizeof *c);
        c->fd = s;
        c->d = d;
        c->next = d->socks;
        if (d->socks)
            d->socks->prev = c;
        d->socks = c;
        curl_multi_assign(d->multi, s, c);
    } else {
        event_del(&c->ev);
    }
    short ev = (short)((what & CURL_POLL_IN ? EV_READ : 0) | (what & CURL_POLL_OUT ? EV_WRITE : 0) | EV_PERSIST);
    event_assign(&c->ev, d->base, s, ev, on_socket_event, d);
    event_add(&c->ev, NULL);
    return 0;
}

static int timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    jd_dispatch *d = userp;
    if (timeout_ms < 0) {
        evtimer_del(&d->timer);
        return 0;
    }
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    evtimer_add(&d->timer, &tv);
    return 0;
}

static void set_refused(item *it, const char *host, jd_addr_class c)
{
    snprintf(it->refused, sizeof it->refused, "address refused: %s is %s (allow_%s to permit)", host,
             jd_addr_class_name(c),
             c == JD_ADDR_LOOPBACK                        ? "loopback"
             : c == JD_ADDR_LINK_LOCAL                    ? "link_local"
             : c == JD_ADDR_PRIVATE || c == JD_ADDR_CGNAT ? "private"
                                                          : "nothing");
}

/* Every socket libcurl opens goes through the address check, after DNS: a name that
 * resolves (or re-resolves) to a refused address never gets a connection. */
static curl_socket_t open_socket(void *clientp, curlsocktype purpose, struct curl_sockaddr *a)
{
    (void)purpose;
    item *it = clientp;
    jd_addr_class c = jd_addr_check(&a->addr, a->addrlen, it->ch->allow);
    if (c != JD_ADDR_PUBLIC) {
        char host[INET6_ADDRSTRLEN] = "?";
        if (a->family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)&a->addr)->sin_addr, host, sizeof host);
        else if (a->family == AF_INET6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&a->addr)->sin6_addr, host, sizeof host);
        set_refused(it, host, c);
        return CURL_SOCKET_BAD;
    }
    return socket(a->family, a->socktype, a->protocol);
}

/* A reused keep-alive connection opens no socket: this runs for every request, fresh or
 * reused, with the peer's address, so a connection another channel (with a looser
 * policy) opened to the same host is refused here too. */
static int check_peer(void *clientp, char *peer_ip, char *local_ip, int peer_port, int local_port)
{
    (void)local_ip;
    (void)local_port;
    item *it = clientp;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t len;
    if (inet_pton(AF_INET, peer_ip, &((struct sockaddr_in *)&ss)->sin_addr) == 1) {
        ss.ss_family = AF_INET;
        ((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)peer_port);
        len = sizeof(struct sockaddr_in);
    } else if (inet_pton(AF_INET6, peer_ip, &((struct sockaddr_in6 *)&ss)->sin6_addr) == 1) {
        ss.ss_family = AF_INET6;
        ((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)peer_port);
        len = sizeof(struct sockaddr_in6);
    } else {
        snprintf(it->refused, sizeof it->refused, "address refused: cannot read the peer address '%s'", peer_ip);
        return CURL_PREREQFUNC_ABORT;
    }
    jd_addr_class c = jd_addr_check((struct sockaddr *)&ss, len, it->ch->allow);
    if (c == JD_ADDR_PUBLIC)
        return CURL_PREREQFUNC_OK;
    set_refused(it, peer_ip, c);
    return CURL_PREREQFUNC_ABORT;
}

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    item *it = ud;
    size_t len = size * n;
    size_t room = sizeof it->resp - 1 - it->resplen;
    size_t take = len < room ? len : room;
    memcpy(it->resp + it->resplen, p, take);
    it->resplen += take;
    it->resp[it->resplen] = 0;
    return len;
}

static size_t on_read(char *buf, size_t size, size_t n, void *ud)
{
    item *it = ud;
    size_t left = it->req.body_len - it->readoff;
    size_t take = size * n < left ? size * n : left;
    memcpy(buf, it->req.body + it->readoff, take);
    it->readoff += take;
    return take;
}

/* "Name <a@b>" -> "<a@b>"; "a@b" -> "<a@b>" */
static void angle_addr(const char *s, char *out, size_t n)
{
    const char *lt = strrchr(s, '<'), *gt = lt ? strchr(lt, '>') : NULL;
    if (lt && gt)
        snprintf(out, n, "%.*s", (int)(gt - lt + 1), lt);
    else
        snprintf(out, n, "<%s>", s);
}

/* ---------------------------------------------------------------- items and lines */

static void item_free(item *it)
{
    chan *ch = it->ch;
    if (it->all_prev)
        it->all_prev->all_next = it->all_next;
    else
        ch->all = it->all_next;
    if (it->all_next)
        it->all_next->all_prev = it->all_prev;
    ch->alive--;
    if (it->waking)
        event_del(&it->wake);
    curl_slist_free_all(it->hdrs);
    curl_slist_free_all(it->rcpt);
    jd_request_free(&it->req);
    free(it->user);
    free(it);
}

static void line_push(chan *ch, item *it)
{
    uline *ln = jd_map_get(&ch->lines, it->user, strlen(it->user));
    if (!ln) {
        ln = jd_xcalloc(1, sizeof *ln);
        ln->user = dup_str(it->user);
        jd_map_put(&ch->lines, ln->user, strlen(ln->user), ln);
    }
    it->ln = ln;
    it->next = NULL;
    if (ln->tail)
        ln->tail->next = it;
    else
        ln->head = it;
    ln->tail = it;
}

/* Moves the line's head to the ready queue unless the line is busy; frees an empty
 * idle line. */
static void line_advance(chan *ch, uline *ln)
{
    if (ln->busy)
        return;
    item *it = ln->head;
    if (!it) {
        jd_map_del(&ch->lines, ln->user, strlen(ln->user));
        free(ln->user);
        free(ln);
        return;
    }
    ln->head = it->next;
    if (!ln->head)
        ln->tail = NULL;
    ln->busy = 1;
    it->next = NULL;
    if (ch->ready_tail)
        ch->ready_tail->next = it;
    else
        ch->ready = it;
    ch->ready_tail = it;
}

/* The item's turn is over (finished or scheduled): its line moves on. */
static void line_release(chan *ch, item *it)
{
    uline *ln = it->ln;
    it->ln = NULL;
    if (!ln)
        return;
    ln->busy = 0;
    line_advance(ch, ln);
}

static void enqueue(item *it)
{
    chan *ch = it->ch;
    line_push(ch, it);
    line_advance(ch, it->ln);
    pump(ch);
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    item *it = arg;
    it->waking = 0;
    enqueue(it);
}

static void wait_until(item *it, int64_t at_ms)
{
    int64_t delay = at_ms - now_ms();
    if (delay < 0)
        delay = 0;
    struct timeval tv = {.tv_sec = (time_t)(delay / 1000), .tv_usec = (suseconds_t)(delay % 1000) * 1000};
    evtimer_assign(&it->wake, it->ch->d->base, on_wake, it);
    evtimer_add(&it->wake, &tv);
    it->waking = 1;
}

/* ---------------------------------------------------------------- outcomes */

static void report(chan *ch, item *it, jd_outcome o, int status, int64_t next, const char *error)
{
    jd_dispatch *d = ch->d;
    if (!d->hooks.on_result)
        return;
    jd_dispatch_result r = {
        .id = it->id,
        .channel = ch->name,
        .user = it->user,
        .outcome = o,
        .status = status,
        .attempts = it->attempts,
        .next_attempt_ms = next,
        .error = error ? error : "",
        .latency_us = it->started_us ? mono_us() - it->started_us : 0,
    };
    d->hooks.on_result(d->hooks.ud, &r);
}

/* retry: a transient failure; retry_after_s: the server's Retry-After (0: none). */
static void finish(chan *ch, item *it, jd_outcome o, int status, int64_t retry_after_s, const char *error)
{
    jd_dispatch *d = ch->d;
    line_release(ch, it);
    if (o == JD_RETRY_SCHEDULED) {
        if (it->attempts > ch->nretry) {
            char why[400];
            snprintf(why, sizeof why, "gave up after %u attempts: %s", it->attempts, error);
            ch->dead++;
            report(ch, it, JD_DEAD, status, 0, why);
            item_free(it);
            pump(ch);
            return;
        }
        int64_t delay = ch->retry[it->attempts - 1];
        if (ch->jitter > 0)
            delay += (int64_t)((double)delay * ch->jitter * rand01(d));
        if (retry_after_s > 0) {
            int64_t ra = retry_after_s * 1000;
            if (ra > MAX_RETRY_AFTER_MS)
                ra = MAX_RETRY_AFTER_MS;
            if (ra > delay)
                delay = ra;
        }
        int64_t next = now_ms() + delay;
        ch->retried++;
        report(ch, it, JD_RETRY_SCHEDULED, status, next, error);
        it->started_us = 0;
        wait_until(it, next);
        pump(ch);
        return;
    }
    if (o == JD_DELIVERED)
        ch->delivered++;
    else if (o == JD_DEAD)
        ch->dead++;
    else if (o == JD_CHANNEL_DISABLED) {
        ch->disabled_events++;
        if (!ch->disabled) {
            ch->disabled = 1;
            dlog(d, "error", "channel %s disabled: the receiver answered 410 Gone (action %s); its queue waits",
                 ch->name, it->id);
            if (d->hooks.on_channel_disabled)
                d->hooks.on_channel_disabled(d->hooks.ud, ch->name, it->id);
        }
    }
    report(ch, it, o, status, 0, error);
    item_free(it);
    pump(ch);
}

static void pool_put(jd_dispatch *d, CURL *easy)
{
    if (d->npool == d->cappool) {
        d->cappool = d->cappool ? 2 * d->cappool : 16;
        d->pool = jd_xrealloc(d->pool, d->cappool * sizeof *d->pool);
    }
    d->pool[d->npool++] = easy;
}

static void done_one(jd_dispatch *d, CURL *easy, CURLcode res)
{
    item *it = NULL;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&it);
    chan *ch = it->ch;
    long code = 0;
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &code);
    curl_off_t retry_after = 0;
    curl_multi_remove_handle(d->multi, easy);
    ch->in_flight--;
    it->easy = NULL;
    char why[400];
    int status = (int)code;
    jd_outcome o;
    if (it->refused[0]) {
        o = JD_DEAD;
        snprintf(why, sizeof why, "%s", it->refused);
    } else if (res != CURLE_OK) {
        const char *msg = it->errbuf[0] ? it->errbuf : curl_easy_strerror(res);
        snprintf(why, sizeof why, "%s", msg);
        if (res == CURLE_URL_MALFORMAT || res == CURLE_UNSUPPORTED_PROTOCOL)
            o = JD_DEAD;
        else if (it->req.smtp && code >= 500 && code < 600)
            o = JD_DEAD; /* a permanent SMTP reply */
        else
            o = JD_RETRY_SCHEDULED;
    } else if (it->req.smtp || (code >= 200 && code < 300)) {
        o = JD_DELIVERED;
        why[0] = 0;
    } else {
        snprintf(why, sizeof why, "HTTP %ld%s%.120s", code, it->resplen ? ": " : "", it->resp);
        for (char *p = why; *p; p++)
            if (*p == '\n' || *p == '\r')
                *p = ' ';
        if (code == 410)
            o = JD_CHANNEL_DISABLED;
        else if (code == 429 || code == 408 || code >= 500) {
            o = JD_RETRY_SCHEDULED;
            curl_easy_getinfo(easy, CURLINFO_RETRY_AFTER, &retry_after);
        } else
            o = JD_DEAD;
    }
    /* the handle goes back to the pool; its connection stays in the multi's cache */
    pool_put(d, easy);
    curl_slist_free_all(it->hdrs);
    curl_slist_free_all(it->rcpt);
    it->hdrs = it->rcpt = NULL;
    finish(ch, it, o, status, (int64_t)retry_after, why);
}

static void check_done(jd_dispatch *d)
{
    if (d->checking)
        return;
    d->checking = 1;
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(d->multi, &left)))
        if (m->msg == CURLMSG_DONE)
            done_one(d, m->easy_handle, m->data.result);
    d->checking = 0;
}

/* ---------------------------------------------------------------- sending */

static CURL *take_easy(jd_dispatch *d)
{
    if (d->npool) {
        CURL *h = d->pool[--d->npool];
        curl_easy_reset(h);
        return h;
    }
    return curl_easy_init();
}

static int host_ok(chan *ch, item *it, char *why, size_t n)
{
    if (!ch->nhosts)
        return 1;
    CURLU *u = curl_url();
    char *host = NULL;
    int ok = u && curl_url_set(u, CURLUPART_URL, it->req.url, 0) == CURLUE_OK &&
             curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
             jd_host_allowed((const char *const *)ch->hosts, ch->nhosts, host);
    if (!ok)
        snprintf(why, n, "host %s is not in the channel's allow_hosts", host ? host : "(unparsable URL)");
    curl_free(host);
    curl_url_cleanup(u);
    return ok;
}

static void start(chan *ch, item *it)
{
    jd_dispatch *d = ch->d;
    char why[300];
    if (!host_ok(ch, it, why, sizeof why)) {
        it->attempts++;
        finish(ch, it, JD_DEAD, 0, 0, why);
        return;
    }
    CURL *h = take_easy(d);
    if (!h) {
        it->attempts++;
        finish(ch, it, JD_RETRY_SCHEDULED, 0, 0, "cannot create a libcurl handle");
        return;
    }
    it->easy = h;
    it->errbuf[0] = it->refused[0] = it->resp[0] = 0;
    it->resplen = it->readoff = 0;
    curl_easy_setopt(h, CURLOPT_URL, it->req.url);
    curl_easy_setopt(h, CURLOPT_PRIVATE, (char *)it);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, it->errbuf);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)ch->timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)(ch->timeout_ms < 10000 ? ch->timeout_ms : 10000));
    curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, open_socket);
    curl_easy_setopt(h, CURLOPT_OPENSOCKETDATA, it);
    curl_easy_setopt(h, CURLOPT_PREREQFUNCTION, check_peer);
    curl_easy_setopt(h, CURLOPT_PREREQDATA, it);
    curl_easy_setopt(h, CURLOPT_PROXY, ""); /* no proxy from the environment: the guard sees the real peer */
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, it);
    if (it->req.smtp) {
        char addr[512];
        curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
        angle_addr(it->req.mail_from ? it->req.mail_from : "", addr, sizeof addr);
        curl_easy_setopt(h, CURLOPT_MAIL_FROM, addr);
        for (size_t i = 0; i < it->req.nrcpt; i++) {
            angle_addr(it->req.rcpt[i], addr, sizeof addr);
            it->rcpt = curl_slist_append(it->rcpt, addr);
        }
        curl_easy_setopt(h, CURLOPT_MAIL_RCPT, it->rcpt);
        curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(h, CURLOPT_READDATA, it);
        curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)it->req.body_len);
        curl_easy_setopt(h, CURLOPT_USE_SSL,
                         (long)(it->req.starttls == JD_STARTTLS_REQUIRED ? CURLUSESSL_ALL
                                : it->req.starttls == JD_STARTTLS_TRY    ? CURLUSESSL_TRY
                                                                         : CURLUSESSL_NONE));
        if (it->req.user)
            curl_easy_setopt(h, CURLOPT_USERNAME, it->req.user);
        if (it->req.password)
            curl_easy_setopt(h, CURLOPT_PASSWORD, it->req.password);
    } else {
        curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
        for (size_t i = 0; i < it->req.nheaders; i++) {
            jd_buf hb;
            jd_buf_init(&hb);
            jd_buf_printf(&hb, "%s: %s", it->req.headers[i].name, it->req.headers[i].value);
            it->hdrs = curl_slist_append(it->hdrs, jd_buf_cstr(&hb));
            memset(hb.data, 0, hb.len); /* may hold a token */
            jd_buf_free(&hb);
        }
        it->hdrs = curl_slist_append(it->hdrs, "Expect:");
        if (ch->webhook || ch->nsecrets) {
            /* signed per attempt with a fresh timestamp (Standard Webhooks) */
            char line[64 + 1024];
            long long ts = (long long)(now_ms() / 1000);
            snprintf(line, sizeof line, "webhook-id: %s", it->id);
            it->hdrs = curl_slist_append(it->hdrs, line);
            snprintf(line, sizeof line, "webhook-timestamp: %lld", ts);
            it->hdrs = curl_slist_append(it->hdrs, line);
            if (ch->nsecrets) {
                char sig[1024];
                if (jd_webhook_sign((const char *const *)ch->secrets, ch->nsecrets, it->id, ts,
                                    it->req.body ? it->req.body : "", it->req.body_len, sig, sizeof sig) < 0) {
                    curl_slist_free_all(it->hdrs);
                    it->hdrs = NULL;
                    it->easy = NULL;
                    pool_put(d, h);
                    it->attempts++;
                    finish(ch, it, JD_DEAD, 0, 0, "cannot sign: a secret is not \"whsec_<base64>\"");
                    return;
                }
                snprintf(line, sizeof line, "webhook-signature: %s", sig);
                it->hdrs = curl_slist_append(it->hdrs, line);
            }
        }
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, it->hdrs);
        if (strcmp(it->req.method ? it->req.method : "POST", "POST") == 0) {
            curl_easy_setopt(h, CURLOPT_POST, 1L);
        } else {
            curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, it->req.method);
        }
        if (it->req.body || strcmp(it->req.method ? it->req.method : "POST", "GET") != 0) {
            curl_easy_setopt(h, CURLOPT_POSTFIELDS, it->req.body ? it->req.body : "");
            curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)it->req.body_len);
        }
    }
    it->started_us = mono_us();
    ch->in_flight++;
    if (curl_multi_add_handle(d->multi, h) != CURLM_OK) {
        ch->in_flight--;
        it->easy = NULL;
        curl_easy_cleanup(h);
        it->attempts++;
        finish(ch, it, JD_RETRY_SCHEDULED, 0, 0, "libcurl refused the handle");
        return;
    }
    it->attempts++;
}

/* Starts what the channel's limit allows. Not reentrant: a finish() inside start()
 * (a refused host, say) only queues, and the outer loop carries on. */
static void pump(chan *ch)
{
    if (ch->pumping)
        return;
    ch->pumping = 1;
    while (!ch->disabled && ch->ready && ch->in_flight < ch->concurrency) {
        item *it = ch->ready;
        ch->ready = it->next;
        if (!ch->ready)
            ch->ready_tail = NULL;
        it->next = NULL;
        start(ch, it);
    }
    ch->pumping = 0;
}

/* ---------------------------------------------------------------- API */

jd_dispatch *jd_dispatch_new(struct event_base *base, const jd_dispatch_hooks *hooks)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return NULL;
    jd_dispatch *d = jd_xcalloc(1, sizeof *d);
    d->base = base;
    if (hooks)
        d->hooks = *hooks;
    d->multi = curl_multi_init();
    if (!d->multi) {
        free(d);
        return NULL;
    }
    d->rng = (uint64_t)mono_us() * 0x9E3779B97F4A7C15ULL | 1;
    curl_multi_setopt(d->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
    curl_multi_setopt(d->multi, CURLMOPT_SOCKETDATA, d);
    curl_multi_setopt(d->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(d->multi, CURLMOPT_TIMERDATA, d);
    curl_multi_setopt(d->multi, CURLMOPT_MAXCONNECTS, 256L);
    evtimer_assign(&d->timer, base, on_timer, d);
    return d;
}

static void chan_free(chan *ch)
{
    jd_dispatch *d = ch->d;
    while (ch->all) {
        item *it = ch->all;
        if (it->easy) {
            curl_multi_remove_handle(d->multi, it->easy);
            curl_easy_cleanup(it->easy);
        }
        item_free(it);
    }
    for (size_t i = 0; ch->lines.cap && i < ch->lines.cap; i++) {
        uline *ln = ch->lines.slots[i].key ? ch->lines.slots[i].value : NULL;
        if (ln) {
            free(ln->user);
            free(ln);
        }
    }
    jd_map_free(&ch->lines, NULL);
    free(ch->name);
    free(ch->type);
    free(ch->retry);
    free_strs(ch->secrets, ch->nsecrets, 1);
    free_strs(ch->hosts, ch->nhosts, 0);
    free(ch);
}

void jd_dispatch_free(jd_dispatch *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->nchans; i++)
        chan_free(d->chans[i]);
    free(d->chans);
    for (size_t i = 0; i < d->npool; i++)
        curl_easy_cleanup(d->pool[i]);
    free(d->pool);
    curl_multi_cleanup(d->multi);
    while (d->socks) {
        sockctx *c = d->socks;
        d->socks = c->next;
        event_del(&c->ev);
        free(c);
    }
    evtimer_del(&d->timer);
    free(d);
    curl_global_cleanup();
}

int jd_dispatch_channel(jd_dispatch *d, const char *name, const jd_channel_opts *o)
{
    if (!name || !o)
        return -1;
    for (size_t i = 0; i < o->nretry; i++)
        if (o->retry_ms[i] < 0)
            return -1;
    chan *ch = find_chan(d, name);
    if (!ch) {
        ch = jd_xcalloc(1, sizeof *ch);
        ch->d = d;
        ch->name = dup_str(name);
        jd_map_init(&ch->lines);
        d->chans = jd_xrealloc(d->chans, (d->nchans + 1) * sizeof *d->chans);
        d->chans[d->nchans++] = ch;
    } else {
        free(ch->type);
        free(ch->retry);
        free_strs(ch->secrets, ch->nsecrets, 1);
        free_strs(ch->hosts, ch->nhosts, 0);
    }
    ch->type = dup_str(o->type ? o->type : "webhook");
    ch->webhook = strcmp(ch->type, "webhook") == 0;
    ch->concurrency = o->concurrency ? o->concurrency : DEFAULT_CONCURRENCY;
    ch->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : DEFAULT_TIMEOUT_MS;
    const int64_t *sched = o->nretry ? o->retry_ms : default_schedule;
    size_t n = o->nretry ? o->nretry : (o->no_retry ? 0 : sizeof default_schedule / sizeof default_schedule[0]);
    ch->retry = jd_xcalloc(n ? n : 1, sizeof *ch->retry);
    memcpy(ch->retry, sched, n * sizeof *ch->retry);
    ch->nretry = n;
    ch->jitter = o->jitter < 0 ? 0 : o->jitter > 0 ? o->jitter : DEFAULT_JITTER;
    ch->secrets = copy_strs(o->secrets, o->nsecrets);
    ch->nsecrets = o->nsecrets;
    ch->hosts = copy_strs(o->allow_hosts, o->nallow_hosts);
    ch->nhosts = o->nallow_hosts;
    ch->allow = o->allow;
    ch->disabled = 0;
    pump(ch);
    return 0;
}

void jd_dispatch_enable(jd_dispatch *d, const char *name)
{
    chan *ch = find_chan(d, name);
    if (ch && ch->disabled) {
        ch->disabled = 0;
        dlog(d, "info", "channel %s enabled again", name);
        pump(ch);
    }
}

int jd_dispatch_submit(jd_dispatch *d, const char *id, const char *channel, const char *user, const jd_request *req,
                       uint32_t attempts_done, int64_t not_before_ms)
{
    chan *ch = find_chan(d, channel);
    if (!ch || !req || !req->url)
        return -1;
    item *it = jd_xcalloc(1, sizeof *it);
    snprintf(it->id, sizeof it->id, "%s", id ? id : "");
    it->user = dup_str(user ? user : "");
    it->ch = ch;
    it->attempts = attempts_done;
    jd_request_copy(&it->req, req);
    it->all_next = ch->all;
    if (ch->all)
        ch->all->all_prev = it;
    ch->all = it;
    ch->alive++;
    if (not_before_ms > now_ms())
        wait_until(it, not_before_ms);
    else
        enqueue(it);
    return 0;
}

size_t jd_dispatch_stats_get(const jd_dispatch *d, jd_dispatch_stats *out, size_t max)
{
    for (size_t i = 0; i < d->nchans && i < max; i++) {
        const chan *ch = d->chans[i];
        out[i] = (jd_dispatch_stats){
            .channel = ch->name,
            .delivered = ch->delivered,
            .retried = ch->retried,
            .dead = ch->dead,
            .disabled_events = ch->disabled_events,
            .in_flight = ch->in_flight,
            .queued = ch->alive - ch->in_flight,
            .disabled = ch->disabled,
        };
    }
    return d->nchans;
}

char *jd_dispatch_metrics(const jd_dispatch *d)
{
    jd_buf b;
    jd_buf_init(&b);
    jd_buf_puts(&b, "# TYPE journeyd_deliveries_total counter\n");
    for (size_t i = 0; i < d->nchans; i++) {
        const chan *ch = d->chans[i];
        jd_buf_printf(&b,
                      "journeyd_deliveries_total{channel=\"%s\",outcome=\"delivered\"} %llu\n"
                      "journeyd_deliveries_total{channel=\"%s\",outcome=\"retry_scheduled\"} %llu\n"
                      "journeyd_deliveries_total{channel=\"%s\",outcome=\"dead\"} %llu\n"
                      "journeyd_deliveries_total{channel=\"%s\",outcome=\"channel_disabled\"} %llu\n",
                      ch->name, (unsigned long long)ch->delivered, ch->name, (unsigned long long)ch->retried, ch->name,
                      (unsigned long long)ch->dead, ch->name, (unsigned long long)ch->disabled_events);
    }
    jd_buf_puts(&b, "# TYPE journeyd_deliveries_in_flight gauge\n");
    for (size_t i = 0; i < d->nchans; i++)
        jd_buf_printf(&b, "journeyd_deliveries_in_flight{channel=\"%s\"} %u\n", d->chans[i]->name,
                      d->chans[i]->in_flight);
    jd_buf_puts(&b, "# TYPE journeyd_deliveries_queued gauge\n");
    for (size_t i = 0; i < d->nchans; i++)
        jd_buf_printf(&b, "journeyd_deliveries_queued{channel=\"%s\"} %llu\n", d->chans[i]->name,
                      (unsigned long long)(d->chans[i]->alive - d->chans[i]->in_flight));
    jd_buf_puts(&b, "# TYPE journeyd_channel_disabled gauge\n");
    for (size_t i = 0; i < d->nchans; i++)
        jd_buf_printf(&b, "journeyd_channel_disabled{channel=\"%s\"} %d\n", d->chans[i]->name, d->chans[i]->disabled);
    jd_buf_cstr(&b);
    return b.data;
}

size_t jd_dispatch_pending(const jd_dispatch *d)
{
    size_t n = 0;
    for (size_t i = 0; i < d->nchans; i++)
        n += d->chans[i]->alive;
    return n;
}
