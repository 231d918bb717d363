/* authz.h — Istio AuthorizationPolicy semantics for the sidecar's inbound
 * requests.
 *
 * Order: a matching DENY policy denies; otherwise, when no ALLOW policy
 * exists the request is allowed; otherwise it is allowed only when some
 * ALLOW policy matches ("deny by default once a policy selects the
 * workload"). A policy matches when any of its rules matches; a rule when
 * its sources (any of `from`, all fields of one) and its operations (any
 * of `to`) match; absent parts match everything.
 *
 * Principals are SPIFFE IDs compared without the "spiffe://" scheme
 * ("cluster.local/ns/default/sa/order", as Istio writes them; patterns may
 * carry the scheme too); the namespace is the ID's /ns/<ns>/ segment. A
 * request without a verified identity matches no `principals` or
 * `namespaces` entry (and so matches every `not_` list). Strings: "*"
 * matches any present value, "abc*" is a prefix, "*abc" a suffix, else
 * exact. Paths are compared without the query. Pure functions: thread-safe. */
#ifndef STRATA_PROXY_AUTHZ_H
#define STRATA_PROXY_AUTHZ_H

#include <stdbool.h>

#include "core/str.h"
#include "proxy/proxy_config.h"

struct authz_input {
    const char *principal; /* "spiffe://…" of the verified peer, or NULL */
    struct str method, path;
};

struct authz_decision {
    bool allowed;
    const char *policy; /* the deciding policy's name; "" when no ALLOW policy matched */
    int rule;           /* the deciding rule's index, or -1 */
};

/* RFC 3986 normalization of a request path, as Istio's normalize_path
 * (and merge_slashes) do before authorization and routing: percent-encoded
 * unreserved characters decoded, other escapes upper-cased, runs of '/'
 * merged, "." and ".." segments removed (never above the root). Writes at
 * most in.n + 1 bytes (the result is never longer) into out and returns
 * its length. */
size_t authz_normalize_path(struct str in, char *out);

void authz_evaluate(const struct proxy_authz_policy *policies, size_t n, const struct authz_input *in,
                    struct authz_decision *out);

#endif
