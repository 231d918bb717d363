/* pg_migrate.c — versioned schema migrations at start-up (blocking libpq).
 *
 * Runs before a service serves, on its main thread, so the synchronous API
 * is the right tool here and only here. Replicas starting together
 * serialise on a session-level advisory lock: the second one waits, then
 * finds the versions recorded and skips them. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/log.h"
#include "core/pg.h"

static void set_err(char *err, size_t errsz, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errsz, const char *fmt, ...)
{
    if (!err || !errsz)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errsz, fmt, ap);
    va_end(ap);
    size_t n = strlen(err);
    while (n && (err[n - 1] == '\n' || err[n - 1] == ' '))
        err[--n] = '\0';
}

/* Notices ("relation already exists, skipping") would go to stderr. */
static void quiet_notice(void *arg, const char *msg) {}

/* Runs sql (several statements allowed when nparams is 0); true when it
 * succeeded. On failure *res holds the failed result (or NULL). */
static bool run(PGconn *c, const char *sql, int nparams, const char *const *params, PGresult **res)
{
    *res = nparams ? PQexecParams(c, sql, nparams, NULL, params, NULL, NULL, 0) : PQexec(c, sql);
    ExecStatusType st = PQresultStatus(*res);
    return *res && (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY);
}

static const char *message(PGconn *c, const PGresult *res)
{
    const char *m = res ? PQresultErrorMessage(res) : NULL;
    return m && *m ? m : PQerrorMessage(c);
}

static int apply_one(PGconn *c, const struct pg_migration *m, char *err, size_t errsz)
{
    char version[16];
    const char *params[2] = { version, m->name ? m->name : "" };
    PGresult *res;
    snprintf(version, sizeof version, "%d", m->version);

    if (!run(c, "SELECT 1 FROM schema_migrations WHERE version = $1", 1, params, &res)) {
        set_err(err, errsz, "migration %d (%s): reading schema_migrations: %s", m->version,
                params[1], message(c, res));
        PQclear(res);
        return -EIO;
    }
    bool is_applied = PQntuples(res) > 0;
    PQclear(res);
    if (is_applied)
        return 0;

    const char *step = "BEGIN";
    if (!run(c, "BEGIN", 0, NULL, &res))
        goto fail;
    PQclear(res);
    step = NULL;
    if (!run(c, m->sql, 0, NULL, &res))
        goto fail;
    PQclear(res);
    step = "recording it";
    if (!run(c, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", 2, params, &res))
        goto fail;
    PQclear(res);
    step = "COMMIT";
    if (!run(c, "COMMIT", 0, NULL, &res) || strcmp(PQcmdStatus(res), "COMMIT") != 0)
        goto fail;
    PQclear(res);
    log_info("migration applied", LOG_INT("version", m->version), LOG_STR("name", params[1]));
    return 0;

fail:
    set_err(err, errsz, "migration %d (%s)%s%s: %s", m->version, params[1], step ? ": " : "",
            step ? step : "", message(c, res));
    PQclear(res);
    res = PQexec(c, "ROLLBACK");
    PQclear(res);
    return -EIO;
}

int pg_migrate(const char *conninfo, const char *lock_name, const struct pg_migration *m,
               size_t n, char *err, size_t errsz)
{
    if (err && errsz)
        err[0] = '\0';
    if (!conninfo || !lock_name || (n && !m)) {
        set_err(err, errsz, "pg_migrate: conninfo, lock_name and migrations are required");
        return -EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        if (m[i].version <= 0 || !m[i].sql || (i && m[i].version <= m[i - 1].version)) {
            set_err(err, errsz,
                    "pg_migrate: migration #%zu (version %d): versions must be > 0 and "
                    "strictly increasing, sql not NULL", i, m[i].version);
            return -EINVAL;
        }
    }

    int rc = 0;
    PGresult *res = NULL;
    const char *lock_param[1] = { lock_name };
    PGconn *c = PQconnectdb(conninfo);
    if (!c || PQstatus(c) != CONNECTION_OK) {
        set_err(err, errsz, "pg_migrate: cannot connect: %s",
                c ? PQerrorMessage(c) : "out of memory");
        rc = -ECONNREFUSED;
        goto out;
    }
    PQsetNoticeProcessor(c, quiet_notice, NULL);
    /* Session-level: held across the per-migration transactions, released
     * by PQfinish even if we fail half-way. */
    if (!run(c, "SELECT pg_advisory_lock(hashtext($1))", 1, lock_param, &res)) {
        set_err(err, errsz, "pg_migrate: advisory lock '%s': %s", lock_name, message(c, res));
        rc = -EIO;
        goto out;
    }
    PQclear(res);
    if (!run(c,
             "CREATE TABLE IF NOT EXISTS schema_migrations ("
             " version int PRIMARY KEY,"
             " name text NOT NULL,"
             " applied_at timestamptz NOT NULL DEFAULT now())",
             0, NULL, &res)) {
        set_err(err, errsz, "pg_migrate: creating schema_migrations: %s", message(c, res));
        rc = -EIO;
        goto out;
    }
    PQclear(res);
    res = NULL;
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = apply_one(c, &m[i], err, errsz);
    if (rc == 0) {
        res = PQexecParams(c, "SELECT pg_advisory_unlock(hashtext($1))", 1, NULL, lock_param,
                           NULL, NULL, 0);
    }
out:
    PQclear(res);
    if (rc != 0)
        log_error("migrations failed", LOG_STR("error", err ? err : ""));
    PQfinish(c);
    return rc;
}
