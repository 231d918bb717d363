/* datalayer.h — PostgreSQL, Redis, NATS JetStream, Prometheus and
 * Alertmanager from Debian's binaries, data in the state directory.
 *
 * Start is blocking (called before the control plane serves anything):
 * each server is spawned in its own session, polled for readiness with a
 * deadline, and its log kept in STATE/data/<server>.log. PostgreSQL runs as
 * the unprivileged `postgres` user when we are root (it refuses root), in
 * a directory that user owns; initdb runs once (first start). Stop is
 * blocking and graceful (pg_ctl stop -m fast, SIGTERM to the others, SIGKILL
 * after a deadline), and waits for every process.
 *
 * Credentials: datalayer_pg_database creates (once) a role and a database
 * for a name, with a random password kept in STATE/data/credentials.json
 * (0600), and returns its URL. Nothing is hard-coded.
 *
 * Details that callers see:
 * - Every server is a direct child of the calling process (PostgreSQL's
 *   postmaster too), spawned with all signals unblocked and at their
 *   defaults whatever the caller's mask, and with PR_SET_PDEATHSIG: if this
 *   process dies, they stop. The death signal follows the thread that
 *   called datalayer_start: call it from a thread that outlives the data
 *   layer (the main thread). Do not reap them with waitpid(-1) elsewhere.
 * - As root: PostgreSQL runs as `postgres`; STATE/data/postgres belongs to
 *   it, everything else stays root's. STATE/data is 0711 and STATE gets
 *   the others' search bit (o+x) so that user can reach its directory.
 * - PostgreSQL access: the superuser only over the unix socket in
 *   STATE/data/postgres (trust; the directory is 0700); every other role
 *   with SCRAM over 127.0.0.1; the superuser is refused over TCP. Each
 *   database is owned by its role and closed to the others (no CONNECT
 *   for PUBLIC). PostgreSQL's binaries: $STRATA_PG_BINDIR, else
 *   /usr/lib/postgresql/15/bin; the others from $PATH or /usr/sbin.
 * - A port we chose (0) that someone takes before the server binds it is
 *   replaced, up to 3 tries. Errors name the server and its port and end
 *   with the last lines of its log that fit in err.
 * - Blocking, single-threaded: not for a loop thread, and not from two
 *   threads on the same struct datalayer. */
#ifndef STRATA_CONTROL_DATALAYER_H
#define STRATA_CONTROL_DATALAYER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct datalayer;

struct datalayer_config {
    const char *state_dir;            /* data in STATE/data/ */
    /* 127.0.0.1 ports; 0 → a free port chosen at start */
    int pg_port, redis_port, nats_port, nats_monitor_port;
    int prometheus_port;              /* 0 → none started; <0 → a free port chosen at start */
    const char *prometheus_config;    /* path of its config file (required with prometheus_port) */
    int alertmanager_port;            /* 0 → none started; <0 → a free port chosen at start */
    const char *alertmanager_config;
    int start_timeout_ms;             /* per server; 0 → 30,000 */
};

int datalayer_start(const struct datalayer_config *cfg, struct datalayer **out, char *err, size_t errsz);
/* Stops every server it started; frees dl. */
void datalayer_stop(struct datalayer *dl);

/* postgresql://NAME:PASSWORD@127.0.0.1:PORT/NAME (role and database made
 * on first use). 0 or <0 with err. NAME: [a-z][a-z0-9_]{0,62}, not pg_*,
 * postgres, template0/1 or public. The password (32 hex digits, random)
 * is kept in credentials.json and set again on each call, so the same name
 * gives the same URL, across restarts too (the port may differ then if it
 * was chosen at start). */
int datalayer_pg_database(struct datalayer *dl, const char *name, char *url, size_t urlsz, char *err, size_t errsz);
/* redis://127.0.0.1:PORT/0, nats://127.0.0.1:PORT, http://127.0.0.1:PORT. */
const char *datalayer_redis_url(const struct datalayer *dl);
const char *datalayer_nats_url(const struct datalayer *dl);
const char *datalayer_prometheus_url(const struct datalayer *dl); /* NULL when not started */
const char *datalayer_alertmanager_url(const struct datalayer *dl);
/* Reloads Prometheus' configuration (SIGHUP). */
void datalayer_prometheus_reload(struct datalayer *dl);

/* The pids of the server processes it runs now (children of this process;
 * PostgreSQL's is the postmaster): up to n in out, returns how many there
 * are. For tests and `strata status`. */
size_t datalayer_pids(const struct datalayer *dl, pid_t *out, size_t n);

#endif
