/* delivery: decided actions to the dispatcher in the daemon — live ones as decided, and
 * at start what the outbox still holds (pending, or retrying with its schedule);
 * outcomes back to the outbox with the next checkpoint; dead letters over the admin API
 * and the CLI. Uses dispatch, deliver, outbox, serve. */
#ifndef JD_DELIVERY_H
#define JD_DELIVERY_H

#include "../include/journeyd.h"

struct jd_server;

/* After the store and log are open: declares the channels and resubmits the outbox.
 * j.config { delivery = "off" } (or JOURNEYD_DELIVERY=off) leaves actions pending.
 * 0, or -1 with err. */
int jd_delivery_open(struct jd_server *s, char *err, size_t errlen);
void jd_delivery_action(struct jd_server *s, const jd_action *a);
void jd_delivery_reload(struct jd_server *s);
void jd_delivery_close(struct jd_server *s);
/* Prometheus text of the deliveries (malloc'd), or NULL when delivery is off. */
char *jd_delivery_metrics(struct jd_server *s);
/* {"deadletters":[{id, attempts, error, action}]} as of the last checkpoint (malloc'd). */
char *jd_delivery_dead_json(struct jd_server *s);
/* Sends a dead letter again from its first attempt: 200, 404 (no such row), 409 (not
 * dead). */
int jd_delivery_retry(struct jd_server *s, const char *id);

/* `journeyd deadletters DATA_DIR` or `--url URL [--key K] [retry ID]`. */
int jd_cmd_deadletters(int argc, char **argv);

#endif
