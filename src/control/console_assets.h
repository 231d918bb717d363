/* console_assets.h — the console's files (src/control/console/), compiled
 * in by cmake/embed.cmake. */
#ifndef STRATA_CONTROL_CONSOLE_ASSETS_H
#define STRATA_CONTROL_CONSOLE_ASSETS_H

#include <stddef.h>

struct console_asset {
    const char *path;          /* "/index.html" */
    const char *content_type;
    const unsigned char *data; /* NUL-terminated too */
    size_t len;
};

/* Terminated by an entry with path NULL. */
extern const struct console_asset console_assets[];

#endif
