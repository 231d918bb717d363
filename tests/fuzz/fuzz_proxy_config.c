/* The proxy's config document: arbitrary bytes → proxy_config_parse, and for
 * an accepted config, route matching with a few hosts, paths and methods. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "core/http1_parse.h"
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
            const struct http1_header hs[] = { { STR_LIT("X-Canary"), STR_LIT("1") } };
            struct proxy_match_input in = { str_from_cstr(hosts[h]), str_from_cstr(paths[p]), STR_LIT("GET"), hs, 1, "http" };
            const struct proxy_route *r = proxy_route_match(c, &in);
            /* every route does exactly one thing; a weighted pick lands on a destination */
            if (r && (!!r->ndestinations + !!r->redirect + !!r->direct) != 1)
                __builtin_trap();
            if (r && r->ndestinations && !proxy_route_pick(r, (uint32_t)(h * 7919 + p))->cluster)
                __builtin_trap();
        }
    proxy_config_free(c);
    return 0;
}
