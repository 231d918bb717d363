/* cli.h — the `strata` command's pieces (one file per group of commands). */
#ifndef STRATA_CLI_H
#define STRATA_CLI_H

#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>

/* Where the platform keeps its state: --state, else $STRATA_STATE, else
 * /var/lib/strata for root (PostgreSQL runs as the postgres user, which
 * cannot reach into ~root), else ${XDG_STATE_HOME:-~/.local/state}/strata. */
void cli_state_dir(const char *flag, char *out, size_t n);
/* The directory of this executable (its siblings: strata-control, ...). */
int cli_self_dir(char *out, size_t n);

/* A blocking HTTP/1.1 exchange with 127.0.0.1 (Connection: close):
 * method url ("http://127.0.0.1:9900/v1/status"), optional bearer token and
 * JSON body. Returns the status (and *body, malloc'd, NUL-terminated) or
 * <0 (-errno) when there is no answer. timeout_ms bounds the whole exchange. */
int cli_http(const char *method, const char *url, const char *token, const char *body, char **out_body,
             int timeout_ms);

/* The running control plane of a state dir: its admin URL and token, and
 * pid. 0, or -ENOENT when none runs there. */
struct cli_control {
    char admin[128];
    char token[128];
    int pid;
};
int cli_control_find(const char *state, struct cli_control *out);
/* GET/POST on the admin API, parsed; NULL with a message on stderr. */
json_t *cli_admin(const struct cli_control *c, const char *method, const char *path, const char *body, int *status);

int cmd_up(int argc, char **argv);
int cmd_down(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_get(int argc, char **argv);
int cmd_describe(int argc, char **argv);
int cmd_events(int argc, char **argv);
int cmd_apply(int argc, char **argv);
int cmd_logs(int argc, char **argv);
int cmd_scale(int argc, char **argv);
int cmd_rollout(int argc, char **argv);
int cmd_drain(int argc, char **argv);
int cmd_why(int argc, char **argv);
int cmd_alerts(int argc, char **argv);

#endif
