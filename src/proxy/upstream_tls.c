#include "proxy/upstream_tls.h"

#include <errno.h>
#include <stdlib.h>

#include "core/log.h"

static int wrap(struct sock *s, void *arg)
{
    struct upstream_tls *u = arg;
    struct tls_client_conn_opts o = { .expected_spiffe_id = u->cfg->spiffe_id };
    return tls_sock_client(u->ctx, s, u->cfg->sni, &o);
}

struct upstream_tls *upstream_tls_new(const struct proxy_config *c, const char *who)
{
    struct upstream_tls *t = calloc(c->nclusters + 1, sizeof *t);
    for (size_t i = 0; t && i < c->nclusters; i++) {
        const struct proxy_upstream_tls *u = c->clusters[i].tls;
        if (!u)
            continue;
        struct tls_client_config tc = { .ca_file = u->ca_file, .cert_file = u->cert_file, .key_file = u->key_file };
        struct tls_error terr;
        t[i].cfg = u;
        if (!(t[i].ctx = tls_client_ctx_new(&tc, &terr)))
            log_error("upstream TLS unavailable", LOG_STR("for", who), LOG_STR("cluster", c->clusters[i].name),
                      LOG_STR("error", terr.msg));
    }
    return t;
}

void upstream_tls_free(struct upstream_tls *t, size_t nclusters)
{
    for (size_t i = 0; t && i < nclusters; i++)
        if (t[i].ctx)
            tls_client_ctx_unref(t[i].ctx);
    free(t);
}

int upstream_tls_apply(struct upstream_tls *t, const struct proxy_config *c, size_t i,
                       struct http1_client_request *req)
{
    if (!c->clusters[i].tls)
        return 0;
    if (!t[i].ctx)
        return -ENOKEY;
    req->wrap = wrap;
    req->wrap_arg = &t[i];
    req->pool_key = c->clusters[i].name;
    return 0;
}
