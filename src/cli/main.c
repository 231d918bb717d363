/* strata — the command users type.
 *
 *   strata up | down | status | get | describe | events | apply | logs   the platform (docs/runtime.md)
 *   strata proxy ARGS...     → strata-proxy ARGS... (docs/gateway.md)
 *   strata control ARGS...   → strata-control ARGS... (what `up` runs)
 *
 * Engines are their own binaries next to this one (strata-<command>), so
 * that every component stays a small program of its own. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"

static int usage(FILE *f)
{
    fprintf(f, "usage: strata COMMAND [ARGS...]\n\n"
               "the platform (state: --state DIR, $STRATA_STATE, /var/lib/strata as root, or ~/.local/state/strata):\n"
               "  up [-f DIR] [--foreground] [--timeout S]   start everything from the manifests in DIR (default deploy/)\n"
               "  down                                       stop everything gracefully\n"
               "  status [-o json]                           workloads, replicas, endpoints\n"
               "  get workloads|pods [-o json]               list them\n"
               "  describe WORKLOAD                          one workload with its replicas and events\n"
               "  events [PREFIX]                            what the runtime did (starts, restarts, readiness)\n"
               "  apply -f DIR [--dry-run]                   validate (file:line:field errors), then apply: templates roll out\n"
               "  scale DEPLOYMENT --replicas N              set the desired replicas\n"
               "  rollout status|restart|undo DEPLOYMENT     follow, restart or roll back a rolling update\n"
               "  drain REPLICA|DEPLOYMENT                   evict replicas within the PodDisruptionBudgets\n"
               "  why REQUEST_ID                             what every proxy and app logged for one request\n"
               "  alerts [--all] [-o json]                   alerts firing now (--all: every notification received)\n"
               "  logs WORKLOAD [-f] [--level L] [--trace-id ID] [--since D] [--replica R] [--container app|proxy]\n\n"
               "engines:\n"
               "  proxy    the gateway / sidecar proxy (strata proxy --help)\n"
               "  control  the control plane (what up runs; strata control --help)\n");
    return f == stdout ? 0 : 2;
}

static int run_sibling(const char *name, char **argv)
{
    char self[PATH_MAX], path[PATH_MAX + 32];
    if (cli_self_dir(self, sizeof self) < 0) {
        fprintf(stderr, "strata: cannot find my own directory: %s\n", strerror(errno));
        return 1;
    }
    snprintf(path, sizeof path, "%s/strata-%s", self, name);
    argv[0] = path;
    execv(path, argv);
    fprintf(stderr, "strata: cannot run %s: %s\n", path, strerror(errno));
    return 1;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage(stderr);
    const char *cmd = argv[1];
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h"))
        return usage(stdout);
    static const struct {
        const char *name;
        int (*fn)(int argc, char **argv);
    } commands[] = {
        { "up", cmd_up },           { "down", cmd_down },   { "status", cmd_status }, { "get", cmd_get },
        { "describe", cmd_describe }, { "events", cmd_events }, { "apply", cmd_apply }, { "logs", cmd_logs },
        { "scale", cmd_scale },     { "rollout", cmd_rollout }, { "drain", cmd_drain }, { "why", cmd_why },
        { "alerts", cmd_alerts },
    };
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        if (!strcmp(cmd, commands[i].name))
            return commands[i].fn(argc - 1, argv + 1);
    if (!strcmp(cmd, "proxy") || !strcmp(cmd, "control"))
        return run_sibling(cmd, argv + 1);
    fprintf(stderr, "strata: unknown command \"%s\"\n", cmd);
    return usage(stderr);
}
