/* console.h — the web console of the control plane (docs/observability-console.md).
 *
 * Routes added to the admin API:
 *   GET /                  the page (src/control/console/index.html)
 *   GET /console/{file}    its script, style sheet and images
 *     Static files, compiled in (console_assets.h), served without a token:
 *     they hold no data. The page reads the admin token from its URL
 *     fragment (#token=..., which browsers never send) and calls the admin
 *     API with it.
 *   GET /v1/prom/query?...        → Prometheus GET /api/v1/query?...
 *   GET /v1/prom/query_range?...  → Prometheus GET /api/v1/query_range?...
 *     Token-protected. The query string is forwarded as is; a 2xx answer
 *     is returned unchanged (Prometheus' JSON), anything else becomes the
 *     strata error JSON: Prometheus' 4xx (a bad query) keeps its status
 *     with code "bad_query", its 5xx becomes 502 "prometheus_error", no
 *     answer becomes 503 upstream_unavailable or 504 upstream_timeout,
 *     and no Prometheus at all is 503 "prometheus_unavailable".
 *
 * The page carries Content-Security-Policy default-src 'self' (no inline
 * script or style, nothing from elsewhere) and X-Content-Type-Options
 * nosniff. */
#ifndef STRATA_CONTROL_CONSOLE_H
#define STRATA_CONTROL_CONSOLE_H

#include "control/admin.h"
#include "core/service.h"

/* Adds the routes above to s (before service_run). auth is copied.
 * prometheus_url: "http://127.0.0.1:9090" (a numeric host or localhost,
 * plain HTTP; a path prefix is kept), copied; NULL when Prometheus is not
 * running. One console per process: a second call replaces the first's
 * settings. 0, -EINVAL for a URL it cannot use, -ENOMEM. */
int console_register(struct service *s, const struct admin_auth *auth, const char *prometheus_url);

#endif
