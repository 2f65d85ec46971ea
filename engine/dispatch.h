/* dispatch: sends formatted requests (jd_request) on a libevent loop through libcurl's
 * multi interface — never a blocking call on the loop — with per-channel concurrency
 * limits and timeouts, per-user order within a channel, retries on a schedule with
 * jitter and Retry-After, Standard Webhooks signatures made per attempt, and the SSRF
 * guard on every socket libcurl opens. Durability is the caller's: every outcome is
 * reported through on_result with the attempt count and the next attempt's time, and
 * jd_dispatch_submit takes both back after a restart.
 * Uses deliver (signing, address classes), buf, map, libcurl, libevent. */
#ifndef JD_DISPATCH_H
#define JD_DISPATCH_H

#include <stddef.h>
#include <stdint.h>

#include "deliver.h"

struct event_base;
typedef struct jd_dispatch jd_dispatch;

typedef enum jd_outcome {
    JD_DELIVERED,        /* 2xx (SMTP: accepted) */
    JD_RETRY_SCHEDULED,  /* 429, 5xx, 408, timeout, connection error: tried again at next_attempt_ms */
    JD_DEAD,             /* the schedule is exhausted, or a permanent failure (other 4xx, 3xx, SMTP 5xx,
                          * a refused address or host, a bad URL) */
    JD_CHANNEL_DISABLED, /* 410 Gone: this item is not retried and the channel stops sending */
} jd_outcome;

typedef struct jd_dispatch_result {
    const char *id;      /* the action id (webhook-id) */
    const char *channel; /* the channel's name */
    const char *user;
    jd_outcome outcome;
    int status;              /* HTTP status or SMTP reply code of the last attempt; 0: none */
    uint32_t attempts;       /* attempts made so far, this one included */
    int64_t next_attempt_ms; /* JD_RETRY_SCHEDULED: unix ms of the next attempt; else 0 */
    const char *error;       /* why it failed ("" on success); never contains a secret */
    int64_t latency_us;      /* this attempt's duration */
} jd_dispatch_result;

typedef struct jd_dispatch_hooks {
    /* Every attempt's outcome, on the loop. Pointers are valid during the call. The hook
     * may submit; it must not free the dispatcher. */
    void (*on_result)(void *ud, const jd_dispatch_result *r);
    /* A channel was disabled by a 410 (once per disable). Optional. */
    void (*on_channel_disabled)(void *ud, const char *channel, const char *id);
    /* Diagnostics, one line (no secrets). Optional. */
    void (*on_log)(void *ud, const char *level, const char *line);
    void *ud;
} jd_dispatch_hooks;

/* A dispatcher on base (not owned). NULL when libcurl cannot be set up. */
jd_dispatch *jd_dispatch_new(struct event_base *base, const jd_dispatch_hooks *hooks);
/* Stops everything in flight without calling hooks and frees the queues. */
void jd_dispatch_free(jd_dispatch *d);

/* Declares or updates a channel (opts are copied). Updating keeps the queues and
 * re-enables a disabled channel. 0, or -1 when the options are invalid. */
int jd_dispatch_channel(jd_dispatch *d, const char *name, const jd_channel_opts *opts);
/* Re-enables a channel a 410 disabled; what waited in its queues is sent. */
void jd_dispatch_enable(jd_dispatch *d, const char *name);

/* Queues one request (copied). attempts_done: attempts already made (0 for a new
 * action); not_before_ms: unix ms before which it is not sent (0: now). Order: within
 * a channel, one request per user is in flight at a time, in submission order; a
 * request whose attempt failed and was scheduled for a retry leaves its user's line,
 * so the user's later requests are not held back for hours — when its retry is due
 * it queues again behind whatever that user has in flight. On a disabled channel,
 * requests are accepted and wait (jd_dispatch_enable). 0, or -1 for an unknown
 * channel. */
int jd_dispatch_submit(jd_dispatch *d, const char *id, const char *channel, const char *user, const jd_request *req,
                       uint32_t attempts_done, int64_t not_before_ms);

typedef struct jd_dispatch_stats {
    const char *channel;
    uint64_t delivered, retried, dead, disabled_events;
    uint32_t in_flight;
    uint64_t queued; /* waiting: ready, behind a user's earlier request, or for a retry */
    int disabled;    /* 1 while disabled by a 410 */
} jd_dispatch_stats;

/* Per-channel counters: fills up to max entries, returns the number of channels. */
size_t jd_dispatch_stats_get(const jd_dispatch *d, jd_dispatch_stats *out, size_t max);
/* The same as Prometheus text (journeyd_deliveries_total{channel,outcome},
 * journeyd_deliveries_in_flight{channel}, ...), appended to a malloc'd string. */
char *jd_dispatch_metrics(const jd_dispatch *d);
/* Requests not yet finished (in flight or waiting), over all channels. */
size_t jd_dispatch_pending(const jd_dispatch *d);

#endif
