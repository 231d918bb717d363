/* xds.h — the control plane's side of the proxy protocol: compiled configs
 * served by long-poll, and workload certificates from CSRs.
 *
 *   GET  /v1/proxies/{id}/config?version=V     (Authorization: Bearer TOKEN)
 *        200 + the config JSON (header x-strata-config-version: its version)
 *        as soon as the proxy's version differs from V (at once when V is
 *        absent or stale); otherwise held up to ?wait=S seconds (default 30,
 *        max 300) then 304. 401 bad token, 404 unknown proxy.
 *   POST /v1/proxies/{id}/certificate          (Authorization: Bearer TOKEN)
 *        body: a PEM CSR. 200 {"certificate": PEM, "ca": PEM, "not_after": unix_s}
 *        for the identity the control plane registered for id, never the
 *        CSR's. 400 bad CSR, 401 bad token, 404 unknown proxy.
 * Errors are JSON in DESIGN.md's format.
 *
 * Thread: everything runs on the service's single worker loop (the control
 * plane runs its service with WORKERS=1); xds_* calls must be made on it. */
#ifndef STRATA_CONTROL_XDS_H
#define STRATA_CONTROL_XDS_H

#include <stddef.h>
#include <stdint.h>

#include "control/ca.h"
#include "core/service.h"

struct xds;

/* ca is borrowed; cert_ttl_s 0 → 24 h. */
struct xds *xds_new(struct ca *ca, int64_t cert_ttl_s);
void xds_free(struct xds *x);
/* Adds the two routes to s (before service_run). */
int xds_register(struct xds *x, struct service *s);

/* Registers proxy id (token: its bearer secret, compared in constant time;
 * names: what its certificates will say; copied). Replaces an existing one. */
int xds_add_proxy(struct xds *x, const char *id, const char *token, const struct ca_names *names);
/* Forgets id: its pending long-polls get 404, its token stops working. */
void xds_remove_proxy(struct xds *x, const char *id);
/* Sets id's config (copied) under version; answers its waiting long-polls
 * when the version changed. -ENOENT for an unknown id. */
int xds_set_config(struct xds *x, const char *id, const char *version, const char *json, size_t len);
/* The version id last fetched (acknowledged by asking with it), or NULL. */
const char *xds_acked_version(const struct xds *x, const char *id);

#endif
