/* health.h — active HTTP health checks of cluster endpoints.
 *
 * One checker per config, on the main loop: every endpoint of a cluster
 * with a health_check gets GET <path> every interval (Host: the endpoint);
 * a 2xx within timeout is a success. unhealthy_threshold failures in a row
 * take the endpoint out of balancing (proxy_endpoint.healthy = 0, read by
 * every worker); healthy_threshold successes bring it back. Transitions are
 * logged and exported as strata_proxy_endpoint_healthy{cluster,endpoint}.
 *
 * A new config's checker starts from the previous config's verdicts for
 * the same cluster and endpoint, so a reload neither re-admits a dead
 * endpoint nor ejects a live one. */
#ifndef STRATA_PROXY_HEALTH_H
#define STRATA_PROXY_HEALTH_H

#include "core/loop.h"
#include "proxy/proxy_config.h"

struct health;

/* Starts checking c's clusters (holds a reference to c). prev may be NULL. */
struct health *health_start(struct loop *l, struct proxy_config *c, const struct proxy_config *prev);
/* Stops every check and drops the reference. NULL: no-op. */
void health_stop(struct health *h);

#endif
