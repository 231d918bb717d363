/* strata — the command users type. Each subcommand is its own binary next
 * to this one (strata-<command>), so that every component stays a small
 * program of its own:
 *
 *   strata proxy ARGS...     → strata-proxy ARGS... (docs/gateway.md)
 *
 * The control plane's commands (up, logs, drain, alerts …) arrive with
 * issue 7. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int usage(FILE *f)
{
    fprintf(f, "usage: strata COMMAND [ARGS...]\n\n"
               "commands:\n"
               "  proxy    the gateway / proxy engine (strata proxy --help)\n");
    return f == stdout ? 0 : 2;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage(stderr);
    if (!strcmp(argv[1], "help") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))
        return usage(stdout);
    static const char *const commands[] = { "proxy", NULL };
    const char *const *c = commands;
    while (*c && strcmp(*c, argv[1]))
        c++;
    if (!*c) {
        fprintf(stderr, "strata: unknown command \"%s\"\n", argv[1]);
        return usage(stderr);
    }
    /* The subcommand's binary lives beside this one. */
    char self[PATH_MAX], path[PATH_MAX + 32];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n < 0) {
        fprintf(stderr, "strata: cannot find my own directory: %s\n", strerror(errno));
        return 1;
    }
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    if (slash)
        *slash = '\0';
    snprintf(path, sizeof path, "%s/strata-%s", self, argv[1]);
    argv[1] = path;
    execv(path, argv + 1);
    fprintf(stderr, "strata: cannot run %s: %s\n", path, strerror(errno));
    return 1;
}
