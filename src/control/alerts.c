/* alerts.c — Alertmanager webhook notifications, kept in memory (bounded). */
#include "control/alerts.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"

struct alerts {
    const struct admin_auth *auth;
    size_t max;
    json_t *notifications; /* array, oldest first */
    json_t *current;       /* fingerprint → the alert's last state */
    uint64_t received;
};

struct alerts *alerts_new(size_t max_notifications)
{
    struct alerts *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    a->max = max_notifications ? max_notifications : 500;
    a->notifications = json_array();
    a->current = json_object();
    if (!a->notifications || !a->current) {
        alerts_free(a);
        return NULL;
    }
    return a;
}

void alerts_free(struct alerts *a)
{
    if (!a)
        return;
    json_decref(a->notifications);
    json_decref(a->current);
    free(a);
}

/* The alert's identity: Alertmanager's fingerprint, else its labels. */
static char *alert_key(json_t *alert)
{
    const char *fp = json_string_value(json_object_get(alert, "fingerprint"));
    if (fp && *fp)
        return strdup(fp);
    return json_dumps(json_object_get(alert, "labels"), JSON_COMPACT | JSON_SORT_KEYS);
}

static void h_webhook(struct service_req *r, void *arg)
{
    struct alerts *a = arg;
    if (!admin_authorized(a->auth, r))
        return;
    json_t *body;
    if (service_req_json(r, 16, &body) < 0)
        return;
    json_t *list = json_object_get(body, "alerts");
    if (!json_is_object(body) || !json_is_array(list)) {
        json_decref(body);
        service_reply_error(r, 422, "invalid_request", "alerts: an array is required (Alertmanager webhook payload)");
        return;
    }
    time_t now = time(NULL);
    size_t i;
    json_t *al;
    json_array_foreach(list, i, al)
    {
        if (!json_is_object(al))
            continue;
        char *key = alert_key(al);
        if (!key)
            continue;
        json_t *copy = json_deep_copy(al);
        json_object_set_new(copy, "received_at", json_integer(now));
        json_object_set_new(a->current, key, copy);
        free(key);
    }
    json_t *note = json_pack("{s:I, s:O?, s:O?, s:O?, s:O}", "received_at", (json_int_t)now, "status",
                             json_object_get(body, "status"), "receiver", json_object_get(body, "receiver"),
                             "groupLabels", json_object_get(body, "groupLabels"), "alerts", list);
    json_array_append_new(a->notifications, note);
    while (json_array_size(a->notifications) > a->max)
        json_array_remove(a->notifications, 0);
    /* Resolved alerts stay known (for the console) until the bound. */
    while (json_object_size(a->current) > a->max) {
        void *it = json_object_iter(a->current);
        json_object_del(a->current, json_object_iter_key(it));
    }
    a->received++;
    log_info("alert notification", LOG_STR("status", json_string_value(json_object_get(body, "status"))),
             LOG_UINT("alerts", json_array_size(list)));
    json_decref(body);
    service_reply_json(r, 200, json_pack("{s:b}", "ok", 1));
}

static void h_list(struct service_req *r, void *arg)
{
    struct alerts *a = arg;
    if (!admin_authorized(a->auth, r))
        return;
    json_t *firing = json_array();
    const char *k;
    json_t *v;
    json_object_foreach(a->current, k, v)
    {
        const char *st = json_string_value(json_object_get(v, "status"));
        if (st && !strcmp(st, "firing"))
            json_array_append(firing, v);
    }
    service_reply_json(r, 200, json_pack("{s:o, s:O, s:I}", "firing", firing, "notifications", a->notifications,
                                         "received", (json_int_t)a->received));
}

int alerts_register(struct alerts *a, struct service *s, const struct admin_auth *auth)
{
    a->auth = auth;
    if (service_route(s, "POST", "/v1/alerts/webhook", h_webhook, a) < 0 ||
        service_route(s, "GET", "/v1/alerts", h_list, a) < 0)
        return -1;
    return 0;
}
