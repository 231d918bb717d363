/* proxy_config.h — the compiled proxy config document (JSON), as the
 * control plane will serve it (DESIGN.md: listeners, routes, clusters).
 * This first version carries what the engine implements today:
 *
 *   {"listeners": [{"name": "http", "address": "127.0.0.1:8080"},
 *                  {"name": "https", "address": "127.0.0.1:8443",
 *                   "tls": {"certificates": [{"cert_file": "a.pem", "key_file": "a.key"}, ...]}}],
 *    "routes":    [{"name": "users", "host": "api.example.test" | "*.example.test" | "*",
 *                   "prefix": "/v1/users" | "exact": "/healthz", "methods": ["GET", ...],
 *                   "cluster": "user", "timeout_ms": 5000, "rewrite_prefix": "/internal"}],
 *    "clusters":  [{"name": "user", "endpoints": ["127.0.0.1:8081", ...]}]}
 *
 * Routes match in order (host, then path, then method). Unknown fields are
 * errors, as are references to clusters that do not exist: every message
 * names the file and the JSON path of the field. */
#ifndef STRATA_PROXY_CONFIG_H
#define STRATA_PROXY_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/net.h"

#define PROXY_MAX_METHODS 8

struct proxy_cluster {
    char *name;
    struct net_addr *endpoints;
    size_t nendpoints;
};

struct proxy_route {
    char *name;
    char *host;           /* "*" any, "*.example.test" suffix, else exact (case-insensitive) */
    char *prefix;         /* path prefix, or NULL */
    char *exact;          /* exact path, or NULL */
    char *methods[PROXY_MAX_METHODS];
    size_t nmethods;      /* 0: any */
    char *rewrite_prefix; /* replaces the matched prefix, or NULL */
    uint32_t timeout_ms;  /* 0 → 15 s */
    struct proxy_cluster *cluster;
};

struct proxy_listener {
    char *name;
    struct net_addr addr;
    /* TLS: certificates chosen by SNI, the first is the default; 0 = plain */
    char **cert_files, **key_files;
    size_t ncerts;
};

struct proxy_config {
    struct proxy_listener *listeners;
    size_t nlisteners;
    struct proxy_route *routes;
    size_t nroutes;
    struct proxy_cluster *clusters;
    size_t nclusters;
};

/* Loads and validates path. 0, or <0 with err "FILE: $.routes[2].cluster: ...". */
int proxy_config_load(const char *path, struct proxy_config **out, char *err, size_t errsz);
/* The same from text in memory; name is used in messages (fuzzed). */
int proxy_config_parse(const char *name, struct str text, struct proxy_config **out, char *err, size_t errsz);
void proxy_config_free(struct proxy_config *c);
/* The first route matching host, path and method, or NULL. */
const struct proxy_route *proxy_route_match(const struct proxy_config *c, struct str host, struct str path,
                                            struct str method);

#endif
