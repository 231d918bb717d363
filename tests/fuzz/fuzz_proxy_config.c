/* The proxy's config document: arbitrary bytes → proxy_config_parse, and for
 * an accepted config, route matching with a few hosts, paths and methods. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "proxy/proxy_config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct proxy_config *c = NULL;
    char err[512];
    if (proxy_config_parse("fuzz", str_make((const char *)data, size), &c, err, sizeof err) < 0) {
        if (!memchr(err, '\0', sizeof err))
            __builtin_trap(); /* the message is always terminated */
        return 0;
    }
    static const char *const hosts[] = { "a.api.test", "api.test", "x:80", "", "[::1]:8080" };
    static const char *const paths[] = { "/", "/v1/users", "/v1/usersx", "/v1/users/1", "/healthz" };
    for (size_t h = 0; h < 5; h++)
        for (size_t p = 0; p < 5; p++) {
            const struct proxy_route *r =
                proxy_route_match(c, str_from_cstr(hosts[h]), str_from_cstr(paths[p]), STR_LIT("GET"));
            if (r && !r->cluster)
                __builtin_trap(); /* every route points at a cluster */
        }
    proxy_config_free(c);
    return 0;
}
