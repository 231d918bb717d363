/* control_client.h — the proxy's side of the proxy protocol (src/control/xds.h):
 * its workload certificate by CSR and its config by long-poll.
 *
 *   POST /v1/proxies/{node}/certificate   a fresh EC P-256 key's CSR; the
 *        answer is written to DIR/key.pem (0600), DIR/cert.pem, DIR/ca.pem,
 *        each atomically (temp file + rename), and renewed at half its
 *        lifetime (a new key each time).
 *   GET  /v1/proxies/{node}/config?version=V&wait=30
 *        forever; every 200 is handed to the apply callback.
 *
 * Unreachable control plane (or 5xx): retried after 1 s, 2 s, 4 s … 30 s;
 * the proxy keeps serving with what it has. The client runs on one loop
 * (the proxy's main loop) and every function must be called on it. */
#ifndef STRATA_PROXY_CONTROL_CLIENT_H
#define STRATA_PROXY_CONTROL_CLIENT_H

#include <stddef.h>

#include "core/loop.h"
#include "core/str.h"

struct control_client;

struct control_client_config {
    const char *url;        /* http://HOST:PORT, numeric host */
    const char *node;       /* the proxy's id: [A-Za-z0-9._-], 1..128 */
    const char *token_file; /* the bearer token (whitespace around it is trimmed) */
    const char *cert_dir;   /* where key.pem, cert.pem and ca.pem go (created 0700 if missing) */
};

/* Applies a new config (json is valid during the call). 0 applied, <0
 * refused: the caller has logged why; the proxy keeps its config and the
 * client keeps polling (with version, so the same document is not sent
 * again until the control plane changes it). */
typedef int (*control_apply_fn)(const char *version, struct str json, void *arg);
/* The certificate files were rewritten and the config could not be
 * re-applied: reload the listeners' certificates at least. */
typedef void (*control_certs_fn)(void *arg);

/* Checks cfg and reads the token file. 0, or <0 with err ("--token-file
 * FILE: ...", "--control: ..."). */
int control_client_new(struct loop *l, const struct control_client_config *cfg, struct control_client **out,
                       char *err, size_t errsz);
void control_client_free(struct control_client *c);

/* First start: runs the loop until the certificate files are written and
 * the first config has arrived. 0 with *json (malloc'd, NUL-terminated,
 * the caller frees it) and *len; <0 with err when the control plane
 * refused us (401, 404, 400) or was unreachable for 30 s. */
int control_client_bootstrap(struct control_client *c, char **json, size_t *len, char *err, size_t errsz);

/* After the bootstrap: long-polls forever and renews the certificate.
 * apply gets each new config; on renewal the config in force is applied
 * again (listeners reload their certificate files, workers rebuild the
 * upstream TLS contexts), and certs runs if that fails. */
void control_client_start(struct control_client *c, control_apply_fn apply, control_certs_fn certs, void *arg);

/* The version of the last config received, or "" (for GET /config). */
const char *control_client_version(const struct control_client *c);

#endif
