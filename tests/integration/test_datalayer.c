/* The data layer (control/datalayer.h) against the real Debian servers:
 * PostgreSQL, Redis, NATS JetStream, Prometheus and Alertmanager started in
 * a temporary state directory of its own, each URL used, per-service roles
 * with generated passwords (SCRAM over TCP, no superuser over TCP), a
 * graceful stop that leaves no process behind, a restart that keeps the
 * data and the credentials, and a start that fails naming the server.
 * Needs no servers from scripts/with-servers; about 10 s. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "control/datalayer.h"

static char state_dir[] = "/tmp/strata-datalayer.XXXXXX";
static char prom_yml[256], am_yml[256];
static char url_one[512], url_two[512];
static struct stat pg_version_first;

/* ---- helpers ------------------------------------------------------------- */

static int free_port(int *fd_out)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
        perror("free_port");
        exit(2);
    }
    if (fd_out)
        *fd_out = fd;
    else
        close(fd);
    return ntohs(a.sin_port);
}

static int port_of(const char *url)
{
    const char *colon = url ? strrchr(url, ':') : NULL;
    return colon ? atoi(colon + 1) : -1;
}

/* The reply's first line to req on 127.0.0.1:port, or "" when none. */
static const char *exchange(int port, const char *req)
{
    static char resp[256];
    resp[0] = '\0';
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct timeval tv = { .tv_sec = 3 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        (!req[0] || write(fd, req, strlen(req)) > 0)) {
        ssize_t n = read(fd, resp, sizeof resp - 1);
        resp[n > 0 ? n : 0] = '\0';
    }
    close(fd);
    char *eol = strstr(resp, "\r\n");
    if (eol)
        *eol = '\0';
    return resp;
}

static int http_status(int port, const char *path)
{
    char req[256];
    snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
    int status = -1;
    sscanf(exchange(port, req), "HTTP/1.%*d %d", &status);
    return status;
}

/* The first value of sql's result on url, or NULL (error printed unless quiet). */
static const char *pg_value(const char *url, const char *sql, int quiet)
{
    static char value[256];
    const char *out = NULL;
    PGconn *c = PQconnectdb(url);
    if (PQstatus(c) != CONNECTION_OK) {
        if (!quiet)
            fprintf(stderr, "connect %s: %s", url, PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0) {
        snprintf(value, sizeof value, "%s", PQgetvalue(r, 0, 0));
        out = value;
    } else if (PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK) {
        value[0] = '\0';
        out = value;
    } else if (!quiet) {
        fprintf(stderr, "'%s': %s", sql, PQresultErrorMessage(r));
    }
    PQclear(r);
    PQfinish(c);
    return out;
}

static int pg_can_connect(const char *url)
{
    PGconn *c = PQconnectdb(url);
    int ok = PQstatus(c) == CONNECTION_OK;
    PQfinish(c);
    return ok;
}

/* The password in postgresql://name:PASSWORD@host:port/db. */
static void password_of(const char *url, char *out, size_t n)
{
    const char *user = strstr(url, "://");
    const char *colon = user ? strchr(user + 3, ':') : NULL;
    const char *at = colon ? strchr(colon, '@') : NULL;
    snprintf(out, n, "%.*s", at ? (int)(at - colon - 1) : 0, at ? colon + 1 : "");
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0) {
        perror(path);
        exit(2);
    }
}

static int file_contains(const char *path, const char *needle)
{
    char line[2048];
    int found = 0;
    FILE *f = fopen(path, "r");
    while (f && !found && fgets(line, sizeof line, f))
        found = strstr(line, needle) != NULL;
    if (f)
        fclose(f);
    return found;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

/* Every pid is gone (kill fails with ESRCH) and was reaped by us. */
static void check_all_gone(const pid_t *pids, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        errno = 0;
        CHECK(kill(pids[i], 0) == -1 && errno == ESRCH);
    }
    CHECK(waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD);
}

static int start(struct datalayer **dl, int with_monitoring, int nats_monitor_port, int am_port,
                 char *err, size_t errsz)
{
    struct datalayer_config cfg = {
        .state_dir = state_dir,
        .nats_monitor_port = nats_monitor_port,
        .start_timeout_ms = 30000,
    };
    if (with_monitoring) {
        cfg.prometheus_port = -1; /* a free one */
        cfg.prometheus_config = prom_yml;
        cfg.alertmanager_port = am_port;
        cfg.alertmanager_config = am_yml;
    }
    return datalayer_start(&cfg, dl, err, errsz);
}

/* ---- tests --------------------------------------------------------------- */

static void test_start_use_stop(void)
{
    struct datalayer *dl = NULL;
    char err[4096] = "", url[512], path[512];
    int mon = free_port(NULL), am = free_port(NULL);
    int rc = start(&dl, 1, mon, am, err, sizeof err);
    CHECK_INT(rc, 0);
    if (rc != 0) {
        fprintf(stderr, "datalayer_start: %s\n", err);
        return;
    }

    /* Redis, NATS (monitor on the port we gave), Prometheus, Alertmanager. */
    CHECK(strncmp(datalayer_redis_url(dl), "redis://127.0.0.1:", 18) == 0);
    CHECK_STR(exchange(port_of(datalayer_redis_url(dl)), "PING\r\n"), "+PONG");
    CHECK(strncmp(datalayer_nats_url(dl), "nats://127.0.0.1:", 17) == 0);
    CHECK_INT(http_status(mon, "/healthz?js-enabled-only=true"), 200);
    CHECK(strncmp(exchange(port_of(datalayer_nats_url(dl)), ""), "INFO ", 5) == 0);
    CHECK(datalayer_prometheus_url(dl) != NULL);
    CHECK_INT(http_status(port_of(datalayer_prometheus_url(dl)), "/-/ready"), 200);
    snprintf(url, sizeof url, "http://127.0.0.1:%d", am);
    CHECK_STR(datalayer_alertmanager_url(dl), url);
    CHECK_INT(http_status(am, "/-/ready"), 200);
    datalayer_prometheus_reload(dl);

    /* A database with its own role; the URL works and the data stays. */
    rc = datalayer_pg_database(dl, "app_one", url_one, sizeof url_one, err, sizeof err);
    CHECK_INT(rc, 0);
    if (rc)
        fprintf(stderr, "pg_database: %s\n", err);
    CHECK(strncmp(url_one, "postgresql://app_one:", 21) == 0);
    CHECK(strstr(url_one, "@127.0.0.1:") != NULL);
    CHECK(strstr(url_one, "/app_one") != NULL);
    CHECK_STR(pg_value(url_one, "SELECT 1", 0), "1");
    CHECK_STR(pg_value(url_one, "SELECT current_user || ' ' || current_database()", 0), "app_one app_one");
    CHECK(pg_value(url_one, "CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)", 0) != NULL);
    CHECK_STR(pg_value(url_one, "SELECT rolsuper::text FROM pg_roles WHERE rolname = current_user", 0),
              "false");

    /* Another name: other credentials; the same name: the same URL. */
    CHECK_INT(datalayer_pg_database(dl, "app_two", url_two, sizeof url_two, err, sizeof err), 0);
    char p1[128], p2[128];
    password_of(url_one, p1, sizeof p1);
    password_of(url_two, p2, sizeof p2);
    CHECK_INT(strlen(p1), 32);
    CHECK_INT(strlen(p2), 32);
    CHECK(strcmp(p1, p2) != 0);
    CHECK_STR(pg_value(url_two, "SELECT current_user", 0), "app_two");
    CHECK_INT(datalayer_pg_database(dl, "app_one", url, sizeof url, err, sizeof err), 0);
    CHECK_STR(url, url_one);
    CHECK_STR(pg_value(url_one, "SELECT count(*) FROM kept", 0), "1");

    /* SCRAM is required over TCP; the superuser may not use TCP at all; a
     * role cannot enter another's database. */
    int port = port_of(strrchr(url_one, '@'));
    snprintf(url, sizeof url, "postgresql://postgres@127.0.0.1:%d/postgres", port);
    CHECK(!pg_can_connect(url));
    snprintf(url, sizeof url, "postgresql://app_one:%s@127.0.0.1:%d/app_one", p2, port);
    CHECK(!pg_can_connect(url));
    snprintf(url, sizeof url, "postgresql://app_one@127.0.0.1:%d/app_one", port);
    CHECK(!pg_can_connect(url));
    snprintf(url, sizeof url, "postgresql://app_two:%s@127.0.0.1:%d/app_one", p2, port);
    CHECK(!pg_can_connect(url));

    /* Names outside [a-z][a-z0-9_]{0,62} and reserved ones are refused. */
    const char *bad[] = { "", "App", "1abc", "a-b", "a\"b", "a'b", "pg_x", "postgres", "template1",
                          "a234567890123456789012345678901234567890123456789012345678901234" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        CHECK(datalayer_pg_database(dl, bad[i], url, sizeof url, err, sizeof err) < 0);
        CHECK(strstr(err, "database name") != NULL);
    }
    CHECK(datalayer_pg_database(dl, NULL, url, sizeof url, err, sizeof err) < 0);
    CHECK(datalayer_pg_database(dl, "short_buf", url, 10, err, sizeof err) < 0);

    /* credentials.json: 0600, both names; the cluster belongs to postgres
     * when we are root, the rest stays ours. */
    struct stat st;
    snprintf(path, sizeof path, "%s/data/credentials.json", state_dir);
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600 && st.st_uid == geteuid());
    snprintf(path, sizeof path, "%s/data/postgres", state_dir);
    struct passwd *pw = getpwnam("postgres");
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0700);
    CHECK(st.st_uid == (geteuid() == 0 && pw ? pw->pw_uid : geteuid()));
    snprintf(path, sizeof path, "%s/data", state_dir);
    CHECK(stat(path, &st) == 0 && st.st_uid == geteuid());
    snprintf(path, sizeof path, "%s/data/postgres/PG_VERSION", state_dir);
    CHECK(stat(path, &pg_version_first) == 0);
    snprintf(path, sizeof path, "%s/data/redis.log", state_dir);
    CHECK(stat(path, &st) == 0 && st.st_size > 0);

    pid_t pids[8];
    size_t n = datalayer_pids(dl, pids, 8);
    CHECK_INT(n, 5);
    datalayer_stop(dl);
    check_all_gone(pids, n < 8 ? n : 8);
    CHECK(http_status(mon, "/healthz") < 0);
}

static long long now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Runs with the signals a signalfd user blocks: the servers must not
 * inherit the mask, or they would ignore the SIGTERM of the stop (which
 * would then take the 10 s deadline and a SIGKILL). */
static void test_restart_keeps_data(void)
{
    struct datalayer *dl = NULL;
    char err[4096] = "", url[512], path[512];
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGHUP);
    sigaddset(&block, SIGCHLD);
    sigprocmask(SIG_BLOCK, &block, &old);
    int rc = start(&dl, 0, 0, 0, err, sizeof err);
    CHECK_INT(rc, 0);
    if (rc != 0) {
        fprintf(stderr, "datalayer_start again: %s\n", err);
        return;
    }
    CHECK(datalayer_prometheus_url(dl) == NULL);
    CHECK(datalayer_alertmanager_url(dl) == NULL);

    /* No second initdb: PG_VERSION is the same file. */
    struct stat st;
    snprintf(path, sizeof path, "%s/data/postgres/PG_VERSION", state_dir);
    CHECK(stat(path, &st) == 0 && st.st_ino == pg_version_first.st_ino &&
          st.st_mtim.tv_sec == pg_version_first.st_mtim.tv_sec &&
          st.st_mtim.tv_nsec == pg_version_first.st_mtim.tv_nsec);

    /* The same credentials (the port may be a new one) and the table. */
    CHECK_INT(datalayer_pg_database(dl, "app_one", url, sizeof url, err, sizeof err), 0);
    char before[128], after[128];
    password_of(url_one, before, sizeof before);
    password_of(url, after, sizeof after);
    CHECK_STR(after, before);
    CHECK_STR(pg_value(url, "SELECT v FROM kept", 0), "42");
    CHECK_INT(datalayer_pg_database(dl, "app_two", url, sizeof url, err, sizeof err), 0);
    password_of(url_two, before, sizeof before);
    password_of(url, after, sizeof after);
    CHECK_STR(after, before);
    CHECK_STR(pg_value(url, "SELECT 1", 0), "1");
    CHECK(strncmp(exchange(port_of(datalayer_redis_url(dl)), "PING\r\n"), "+PONG", 5) == 0);

    pid_t pids[8];
    size_t n = datalayer_pids(dl, pids, 8);
    CHECK_INT(n, 3);
    long long t0 = now_ms();
    datalayer_stop(dl);
    CHECK(now_ms() - t0 < 5000);
    check_all_gone(pids, n < 8 ? n : 8);
    sigprocmask(SIG_SETMASK, &old, NULL);

    /* Each stopped gracefully (its own goodbye in its log). */
    snprintf(path, sizeof path, "%s/data/postgres.log", state_dir);
    CHECK(file_contains(path, "database system is shut down"));
    snprintf(path, sizeof path, "%s/data/redis.log", state_dir);
    CHECK(file_contains(path, "ready to exit, bye bye"));
    snprintf(path, sizeof path, "%s/data/nats.log", state_dir);
    CHECK(file_contains(path, "Server Exiting"));
}

/* Prometheus on a port someone holds: the start fails naming the server,
 * its port and the end of its log, and leaves no process behind. */
static void test_failure_names_server(void)
{
    struct datalayer *dl = NULL;
    char err[700] = "", want[64]; /* small: the log's last line must still fit */
    int holder = -1;
    int port = free_port(&holder);
    CHECK(listen(holder, 1) == 0);
    struct datalayer_config cfg = {
        .state_dir = state_dir,
        .prometheus_port = port,
        .prometheus_config = prom_yml,
        .start_timeout_ms = 20000,
    };
    int rc = datalayer_start(&cfg, &dl, err, sizeof err);
    close(holder);
    CHECK(rc < 0);
    CHECK(dl == NULL);
    fprintf(stderr, "expected failure: %s\n", err);
    snprintf(want, sizeof want, "127.0.0.1:%d", port);
    CHECK(strncmp(err, "prometheus ", 11) == 0);
    CHECK(strstr(err, want) != NULL);
    CHECK(strstr(err, "prometheus.log") != NULL);
    CHECK(strcasestr(err, "address already in use") != NULL);
    if (rc == 0)
        datalayer_stop(dl);
    CHECK(waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD);

    /* A deadline too short for anything: the first server polled
     * (PostgreSQL) is named, with its port; everything is reaped. */
    cfg.prometheus_port = 0;
    cfg.start_timeout_ms = 1;
    CHECK(datalayer_start(&cfg, &dl, err, sizeof err) < 0);
    CHECK(strncmp(err, "postgres not ready on 127.0.0.1:", 32) == 0);
    CHECK(strstr(err, "after 1 ms") != NULL);
    CHECK(waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD);

    /* A missing config file is refused before anything starts. */
    cfg.prometheus_port = -1;
    cfg.prometheus_config = "/nonexistent/prometheus.yml";
    CHECK(datalayer_start(&cfg, &dl, err, sizeof err) < 0);
    CHECK(strstr(err, "prometheus_config") != NULL);
    CHECK(waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    if (!mkdtemp(state_dir)) {
        perror("mkdtemp");
        return 2;
    }
    snprintf(prom_yml, sizeof prom_yml, "%s/prometheus.yml", state_dir);
    snprintf(am_yml, sizeof am_yml, "%s/alertmanager.yml", state_dir);
    write_file(prom_yml, "global:\n  scrape_interval: 1s\nscrape_configs: []\n");
    write_file(am_yml, "route: {receiver: n}\nreceivers: [{name: n}]\n");

    RUN(test_start_use_stop);
    RUN(test_restart_keeps_data);
    RUN(test_failure_names_server);

    if (getenv("STRATA_TEST_KEEP_DIR"))
        fprintf(stderr, "kept %s\n", state_dir);
    else
        nftw(state_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return check_done();
}
