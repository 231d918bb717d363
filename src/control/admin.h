/* admin.h — what modules of the control plane need to add routes to its
 * admin API (core/service.h): the token check. */
#ifndef STRATA_CONTROL_ADMIN_H
#define STRATA_CONTROL_ADMIN_H

#include <stdbool.h>

#include "core/service.h"

/* true when r carries the admin token (Authorization: Bearer …); otherwise
 * it has already answered 401 and the handler just returns. */
struct admin_auth {
    bool (*check)(struct service_req *r, void *arg);
    void *arg;
};

static inline bool admin_authorized(const struct admin_auth *a, struct service_req *r)
{
    return a->check(r, a->arg);
}

#endif
