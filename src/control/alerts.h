/* alerts.h — the Alertmanager webhook receiver: what fired, when, and what
 * resolved, for `strata alerts` and the console.
 *
 *   POST /v1/alerts/webhook   Alertmanager's webhook payload (version 4), token required
 *   GET  /v1/alerts           {"firing": [alert], "notifications": [recent, newest last]}
 *
 * Thread: the service's single worker loop. */
#ifndef STRATA_CONTROL_ALERTS_H
#define STRATA_CONTROL_ALERTS_H

#include "control/admin.h"

struct alerts;

/* Keeps the last max_notifications notifications (0: 500). */
struct alerts *alerts_new(size_t max_notifications);
void alerts_free(struct alerts *a);
int alerts_register(struct alerts *a, struct service *s, const struct admin_auth *auth);

#endif
