/* datalayer.c — PostgreSQL, Redis, NATS JetStream, Prometheus and
 * Alertmanager as child processes with their data in STATE/data.
 *
 * Layout of STATE/data (0711: the postgres user must traverse it to reach
 * its own directory; nothing in it is listable by others):
 *   postgres/          the cluster, owned by the user that runs PostgreSQL
 *   redis/ nats/ prometheus/ alertmanager/   the other servers' data
 *   <server>.log       each server's stdout+stderr (previous run: .log.1)
 *   credentials.json   {"postgresql":{"NAME":"PASSWORD"}}, 0600
 *
 * Every server is our direct child (PostgreSQL too: we exec `postgres`
 * rather than `pg_ctl start`, which would leave the postmaster to init),
 * so stop can waitpid each one. Children get PR_SET_PDEATHSIG: a crash of
 * this process does not leave servers behind. */
#include "control/datalayer.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <limits.h>
#include <netinet/in.h>
#include <openssl/rand.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/fileio.h"
#include "core/log.h"

extern char **environ;

/* 20 ms: every server here is ready within 0.3-1.5 s (MACHINE.md); a
 * finer poll buys nothing and a coarser one adds to `strata up`. */
#define DL_POLL_MS 20
#define DL_DEFAULT_TIMEOUT_MS 30000
/* 10 s for a graceful stop, then SIGKILL; 3 s more for the kill to land. */
#define DL_STOP_MS 10000
#define DL_KILL_MS 3000
/* A port chosen by us can be taken before the server binds it; retries. */
#define DL_PORT_TRIES 3
#define DL_TAIL_LINES 8
#define DL_PASSWORD_BYTES 16 /* 32 hex digits: 128 bits */
#define DL_PG_BINDIR "/usr/lib/postgresql/15/bin"

enum dl_server { DL_PG, DL_REDIS, DL_NATS, DL_PROM, DL_AM, DL_COUNT };

struct dl_proc {
    const char *name;   /* also the log's and the data directory's name */
    char bin[PATH_MAX]; /* absolute path of the executable */
    pid_t pid;          /* 0: not running */
    int port;           /* its main port on 127.0.0.1 */
    bool is_wanted;
    bool is_port_ours;  /* chosen here (one of its ports): may move when lost to a race */
    bool port_was_ours; /* its main port was chosen here */
    bool is_ready;
    int tries;
    uint64_t deadline;
};

struct datalayer {
    char state[PATH_MAX];
    char data[PATH_MAX];
    char pgdir[PATH_MAX];
    char pg_bindir[PATH_MAX];
    char prom_config[PATH_MAX];
    char am_config[PATH_MAX];
    char creds_path[PATH_MAX];
    struct dl_proc proc[DL_COUNT];
    int nats_monitor_port;
    bool is_monitor_port_ours;
    int timeout_ms;
    pid_t initdb_pid;
    bool pg_drop;       /* we are root: PostgreSQL runs as pg_uid/pg_gid */
    uid_t pg_uid;
    gid_t pg_gid;
    json_t *creds;      /* {"postgresql":{name: password}} */
    char redis_url[64], nats_url[64], prom_url[64], am_url[64];
};

static const char *const dl_names[DL_COUNT] = { "postgres", "redis", "nats", "prometheus",
                                                "alertmanager" };

/* ------------------------------------------------------------------ helpers */

static int dl_err(char *err, size_t errsz, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int dl_err(char *err, size_t errsz, const char *fmt, ...)
{
    if (err && errsz) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errsz, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static int dl_path(char *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int dl_path(char *out, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, PATH_MAX, fmt, ap);
    va_end(ap);
    return n < 0 || n >= PATH_MAX ? -1 : 0;
}

static uint64_t dl_now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000;
}

static void dl_sleep_ms(int ms)
{
    struct timespec t = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000 };
    while (nanosleep(&t, &t) < 0 && errno == EINTR) {
    }
}

static void dl_log_path(const struct datalayer *dl, const char *name, char *out)
{
    if (dl_path(out, "%s/%s.log", dl->data, name) < 0)
        out[0] = '\0';
}

/* The last DL_TAIL_LINES lines of a file (at most 1.5 KiB), or "". */
static void dl_tail(const char *path, char *out, size_t outsz)
{
    char buf[1536];
    out[0] = '\0';
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    off_t size = lseek(fd, 0, SEEK_END);
    off_t from = size > (off_t)sizeof buf - 1 ? size - (off_t)sizeof buf + 1 : 0;
    ssize_t n = size > 0 ? pread(fd, buf, sizeof buf - 1, from) : 0;
    close(fd);
    if (n <= 0)
        return;
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    buf[n] = '\0';
    const char *start = buf;
    int lines = 0;
    for (ssize_t i = n - 1; i >= 0; i--) {
        if (buf[i] == '\n' && ++lines == DL_TAIL_LINES) {
            start = buf + i + 1;
            break;
        }
    }
    snprintf(out, outsz, "%s", start);
}

/* An error naming the server, then "; last lines of LOG:" and as many of
 * its last lines as fit in err (the last ones say why it failed). */
static int dl_fail_tail(const struct datalayer *dl, const char *name, char *err, size_t errsz,
                        const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static int dl_fail_tail(const struct datalayer *dl, const char *name, char *err, size_t errsz,
                        const char *fmt, ...)
{
    if (!err || !errsz)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errsz, fmt, ap);
    va_end(ap);
    char log[PATH_MAX], tail[1600];
    dl_log_path(dl, name, log);
    dl_tail(log, tail, sizeof tail);
    size_t used = strlen(err);
    int n = snprintf(err + used, errsz - used, tail[0] ? "; last lines of %s:\n" : "; %s is empty", log);
    if (n < 0 || used + (size_t)n >= errsz || !tail[0])
        return -1;
    used += (size_t)n;
    const char *t = tail;
    size_t len = strlen(tail), room = errsz - used - 1;
    if (len > room) {
        t = tail + len - room;
        const char *nl = strchr(t, '\n');
        if (nl)
            t = nl + 1;
    }
    snprintf(err + used, errsz - used, "%s", t);
    return -1;
}

/* True when the log says the server lost its port to someone else. */
static bool dl_log_says_port_taken(const struct datalayer *dl, const char *name)
{
    char log[PATH_MAX], tail[1600];
    dl_log_path(dl, name, log);
    dl_tail(log, tail, sizeof tail);
    return strcasestr(tail, "address already in use") != NULL;
}

static bool dl_log_contains(const struct datalayer *dl, const char *name, const char *needle)
{
    char log[PATH_MAX];
    dl_log_path(dl, name, log);
    FILE *f = fopen(log, "re");
    if (!f)
        return false;
    char line[1024];
    bool found = false;
    while (!found && fgets(line, sizeof line, f))
        found = strstr(line, needle) != NULL;
    fclose(f);
    return found;
}

static int dl_mkdir(const char *path, mode_t mode, char *err, size_t errsz)
{
    if (mkdir(path, mode) < 0 && errno != EEXIST)
        return dl_err(err, errsz, "mkdir %s: %s", path, strerror(errno));
    struct stat st;
    if (stat(path, &st) < 0 || !S_ISDIR(st.st_mode))
        return dl_err(err, errsz, "%s: not a directory", path);
    return 0;
}

/* Writes a file atomically (temp file, fsync, rename, fsync of the dir). */
static int dl_write_file(const char *path, const char *text, mode_t mode, bool chown_pg,
                         const struct datalayer *dl, char *err, size_t errsz)
{
    bool as_pg = chown_pg && dl->pg_drop;
    int rc = file_write_atomic_as(path, text, strlen(text), mode, as_pg ? dl->pg_uid : (uid_t)-1,
                                  as_pg ? dl->pg_gid : (gid_t)-1);
    if (rc < 0)
        return dl_err(err, errsz, "write %s: %s", path, strerror(-rc));
    return 0;
}

/* An executable by name: $PATH, then the sbin directories a non-root PATH
 * lacks (nats-server is in /usr/sbin on Debian). */
static int dl_find_bin(const char *name, char *out, char *err, size_t errsz)
{
    const char *path = getenv("PATH");
    char dirs[4096];
    snprintf(dirs, sizeof dirs, "%s:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
             path ? path : "");
    char *save = NULL;
    for (char *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        if (d[0] != '/' || dl_path(out, "%s/%s", d, name) < 0)
            continue;
        if (access(out, X_OK) == 0)
            return 0;
    }
    return dl_err(err, errsz, "%s not found in PATH or /usr/sbin (install its Debian package)", name);
}

/* Chooses n distinct free ports: all are bound at once, then released. */
static int dl_free_ports(int **ports, int n, char *err, size_t errsz)
{
    int fds[DL_COUNT + 1];
    int rc = 0, opened = 0;
    for (; opened < n; opened++) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof a;
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
            getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
            rc = dl_err(err, errsz, "choosing a free port on 127.0.0.1: %s", strerror(errno));
            if (fd >= 0)
                close(fd);
            break;
        }
        fds[opened] = fd;
        *ports[opened] = ntohs(a.sin_port);
    }
    for (int i = 0; i < opened; i++)
        close(fds[i]);
    return rc;
}

static int dl_connect_local(int port)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    /* 1 s: loopback answers in microseconds; a server that takes longer is
     * not ready, and the poll tries again. */
    struct timeval tv = { .tv_sec = 1 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Sends req, reads until want bytes or a CRLF came back; the reply in out. */
static int dl_exchange(int port, const char *req, char *out, size_t outsz)
{
    int fd = dl_connect_local(port);
    if (fd < 0)
        return -1;
    size_t len = strlen(req), got = 0;
    int rc = send(fd, req, len, MSG_NOSIGNAL) == (ssize_t)len ? 0 : -1;
    while (rc == 0 && got + 1 < outsz) {
        ssize_t r = recv(fd, out + got, outsz - 1 - got, 0);
        if (r <= 0)
            break;
        got += (size_t)r;
        out[got] = '\0';
        if (strstr(out, "\r\n"))
            break;
    }
    close(fd);
    out[got] = '\0';
    return rc == 0 && got > 0 ? 0 : -1;
}

/* The status of GET path on 127.0.0.1:port, or -1 when nothing answered. */
static int dl_http_status(int port, const char *path)
{
    char req[256], resp[128];
    snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n",
             path, port);
    if (dl_exchange(port, req, resp, sizeof resp) < 0)
        return -1;
    int status = -1;
    if (sscanf(resp, "HTTP/1.%*d %d", &status) != 1)
        return -1;
    return status;
}

/* ------------------------------------------------------------------ processes */

struct dl_spawn {
    const char *bin;
    char *const *argv;
    const char *log;      /* stdout and stderr, appended */
    const char *cwd;
    bool as_pg;           /* as the PostgreSQL user */
    int death_signal;     /* sent to it if this process dies */
};

/* Runs in the child between fork and exec: async-signal-safe calls only. */
static void dl_child(const struct datalayer *dl, const struct dl_spawn *s, int logfd, pid_t parent)
{
    struct sigaction dfl = { .sa_handler = SIG_DFL };
    for (int sig = 1; sig < NSIG; sig++)
        sigaction(sig, &dfl, NULL); /* an ignored signal would stay ignored past exec */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    setsid();
    int null = open("/dev/null", O_RDONLY);
    if (null < 0 || dup2(null, 0) < 0 || dup2(logfd, 1) < 0 || dup2(logfd, 2) < 0)
        _exit(126);
    if (close_range(3, ~0U, 0) < 0) /* before Linux 5.9 */
        for (int fd = 3; fd < 4096; fd++)
            close(fd);
    const char *what = "setuid to the postgres user", *subject = "";
    if (s->as_pg && dl->pg_drop &&
        (setgroups(1, &dl->pg_gid) < 0 || setgid(dl->pg_gid) < 0 || setuid(dl->pg_uid) < 0))
        goto fail;
    what = "chdir ", subject = s->cwd;
    if (chdir(s->cwd) < 0)
        goto fail;
    prctl(PR_SET_PDEATHSIG, s->death_signal);
    if (getppid() != parent) /* it died before prctl */
        _exit(1);
    what = "exec ", subject = s->bin;
    execve(s->bin, s->argv, environ);
fail:;
    /* strerror is not on the async-signal-safe list; glibc's is safe for
     * known errno values, which these are. */
    const char *parts[] = { "strata: ", what, subject, ": ", strerror(errno), "\n" };
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
        if (write(2, parts[i], strlen(parts[i])) < 0)
            break;
    _exit(127);
}

static int dl_spawn(const struct datalayer *dl, const struct dl_spawn *s, pid_t *out, char *err,
                    size_t errsz)
{
    int logfd = open(s->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (logfd < 0)
        return dl_err(err, errsz, "open %s: %s", s->log, strerror(errno));
    if (logfd <= 2) { /* our stdio is closed: keep the child's dup2 from clobbering it */
        int high = fcntl(logfd, F_DUPFD_CLOEXEC, 3);
        close(logfd);
        if (high < 0)
            return dl_err(err, errsz, "dup %s: %s", s->log, strerror(errno));
        logfd = high;
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0)
        dl_child(dl, s, logfd, parent);
    int saved = errno;
    close(logfd);
    if (pid < 0)
        return dl_err(err, errsz, "fork for %s: %s", s->bin, strerror(saved));
    *out = pid;
    return 0;
}

/* Reaps pid if it exited: true (and *status) when gone. ECHILD (someone
 * else reaped it, or SIGCHLD is ignored) counts as gone. */
static bool dl_reaped(pid_t pid, int *status)
{
    int st = 0;
    pid_t r;
    if (pid <= 0) /* waitpid(0) would mean any child of our group */
        return true;
    do
        r = waitpid(pid, &st, WNOHANG);
    while (r < 0 && errno == EINTR);
    if (r == 0)
        return false;
    if (status)
        *status = r == pid ? st : 0;
    return true;
}

/* Waits for pid up to ms; true when it is gone (reaped). */
static bool dl_wait_gone(pid_t pid, int ms, int *status)
{
    uint64_t end = dl_now_ms() + (uint64_t)ms;
    for (;;) {
        if (dl_reaped(pid, status))
            return true;
        if (dl_now_ms() >= end)
            return false;
        dl_sleep_ms(DL_POLL_MS);
    }
}

static void dl_describe_status(int status, char *out, size_t outsz)
{
    if (WIFEXITED(status))
        snprintf(out, outsz, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(out, outsz, "was killed by signal %d", WTERMSIG(status));
    else
        snprintf(out, outsz, "ended");
}

/* ------------------------------------------------------------------ PostgreSQL */

static int dl_pg_prepare_dir(struct datalayer *dl, char *err, size_t errsz)
{
    if (dl_mkdir(dl->pgdir, 0700, err, errsz) < 0)
        return -1;
    /* The socket lives in the data dir: sun_path is 108 bytes. */
    if (strlen(dl->pgdir) + sizeof "/.s.PGSQL.65535.lock" > sizeof(((struct sockaddr_un *)0)->sun_path))
        return dl_err(err, errsz, "%s: path too long for PostgreSQL's unix socket (max ~85 bytes)",
                      dl->pgdir);
    if (!dl->pg_drop)
        return 0;
    struct stat st;
    if (stat(dl->pgdir, &st) < 0)
        return dl_err(err, errsz, "stat %s: %s", dl->pgdir, strerror(errno));
    if (st.st_uid != dl->pg_uid && chown(dl->pgdir, dl->pg_uid, dl->pg_gid) < 0)
        return dl_err(err, errsz, "chown postgres %s: %s", dl->pgdir, strerror(errno));
    /* The postgres user must traverse STATE and STATE/data (search only). */
    if (stat(dl->state, &st) == 0 && !(st.st_mode & S_IXOTH))
        chmod(dl->state, (st.st_mode & 07777) | S_IXOTH);
    return 0;
}

static bool dl_pg_initialized(const struct datalayer *dl)
{
    char p[PATH_MAX];
    return dl_path(p, "%s/PG_VERSION", dl->pgdir) == 0 && access(p, F_OK) == 0;
}

static int dl_pg_launch_initdb(struct datalayer *dl, char *err, size_t errsz)
{
    char bin[PATH_MAX], log[PATH_MAX];
    if (dl_path(bin, "%s/initdb", dl->pg_bindir) < 0)
        return dl_err(err, errsz, "initdb: path too long");
    dl_log_path(dl, "initdb", log);
    char *argv[] = { "initdb", "-D", dl->pgdir, "-A", "trust", "-U", "postgres", "-E", "UTF8",
                     "--locale=C", "--no-instructions", NULL };
    struct dl_spawn s = { .bin = bin, .argv = argv, .log = log, .cwd = dl->pgdir, .as_pg = true,
                          .death_signal = SIGKILL };
    return dl_spawn(dl, &s, &dl->initdb_pid, err, errsz);
}

static int dl_pg_wait_initdb(struct datalayer *dl, char *err, size_t errsz)
{
    int status = 0;
    bool gone = dl_wait_gone(dl->initdb_pid, dl->timeout_ms, &status);
    if (!gone) {
        kill(dl->initdb_pid, SIGKILL);
        dl_wait_gone(dl->initdb_pid, DL_KILL_MS, NULL);
        dl->initdb_pid = 0;
        return dl_fail_tail(dl, "initdb", err, errsz, "postgres: initdb of %s took more than %d ms",
                            dl->pgdir, dl->timeout_ms);
    }
    dl->initdb_pid = 0;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        char how[64];
        dl_describe_status(status, how, sizeof how);
        return dl_fail_tail(dl, "initdb", err, errsz, "postgres: initdb of %s %s", dl->pgdir, how);
    }
    return 0;
}

/* Appends the include of strata.conf to postgresql.conf once. */
static int dl_pg_include_conf(const struct datalayer *dl, char *err, size_t errsz)
{
    static const char line[] = "include_if_exists 'strata.conf'  # added by strata\n";
    char p[PATH_MAX];
    if (dl_path(p, "%s/postgresql.conf", dl->pgdir) < 0)
        return dl_err(err, errsz, "postgresql.conf: path too long");
    FILE *f = fopen(p, "a+e");
    if (!f)
        return dl_err(err, errsz, "open %s: %s", p, strerror(errno));
    char buf[512];
    bool has = false;
    while (!has && fgets(buf, sizeof buf, f))
        has = strncmp(buf, line, 30) == 0;
    int rc = 0;
    if (!has && (fputs(line, f) < 0 || fflush(f) != 0))
        rc = dl_err(err, errsz, "write %s: %s", p, strerror(errno));
    fclose(f);
    return rc;
}

/* strata.conf (port, addresses, socket) and pg_hba.conf, rewritten at every
 * start: the port may change, and the access rules are ours. */
static int dl_pg_write_conf(const struct datalayer *dl, char *err, size_t errsz)
{
    if (strchr(dl->pgdir, '\'') || strchr(dl->pgdir, '\\'))
        return dl_err(err, errsz, "%s: quotes or backslashes in the state directory's path", dl->pgdir);
    char text[PATH_MAX + 512], p[PATH_MAX];
    snprintf(text, sizeof text,
             "# written by strata at every start\n"
             "port = %d\n"
             "listen_addresses = '127.0.0.1'\n"
             "unix_socket_directories = '%s'\n"
             "password_encryption = scram-sha-256\n",
             dl->proc[DL_PG].port, dl->pgdir);
    if (dl_path(p, "%s/strata.conf", dl->pgdir) < 0 ||
        dl_write_file(p, text, 0600, true, dl, err, errsz) < 0)
        return -1;
    /* The superuser only over the unix socket, whose directory (the data
     * dir, 0700) only its owner and root can reach; every other role with a
     * SCRAM password, over TCP too. */
    static const char hba[] =
        "# written by strata at every start\n"
        "# TYPE  DATABASE  USER      ADDRESS        METHOD\n"
        "local   all       postgres                 trust\n"
        "local   all       all                      scram-sha-256\n"
        "host    all       postgres  127.0.0.1/32   reject\n"
        "host    all       all       127.0.0.1/32   scram-sha-256\n";
    if (dl_path(p, "%s/pg_hba.conf", dl->pgdir) < 0 ||
        dl_write_file(p, hba, 0600, true, dl, err, errsz) < 0)
        return -1;
    return dl_pg_include_conf(dl, err, errsz);
}

static int dl_pg_launch(struct datalayer *dl, char *err, size_t errsz)
{
    if (dl_pg_write_conf(dl, err, errsz) < 0)
        return -1;
    char log[PATH_MAX];
    dl_log_path(dl, "postgres", log);
    char *argv[] = { "postgres", "-D", dl->pgdir, NULL };
    /* SIGINT is PostgreSQL's fast shutdown (what pg_ctl -m fast sends). */
    struct dl_spawn s = { .bin = dl->proc[DL_PG].bin, .argv = argv, .log = log, .cwd = dl->pgdir,
                          .as_pg = true, .death_signal = SIGINT };
    return dl_spawn(dl, &s, &dl->proc[DL_PG].pid, err, errsz);
}

static PGconn *dl_pg_connect_super(const struct datalayer *dl)
{
    char port[16];
    snprintf(port, sizeof port, "%d", dl->proc[DL_PG].port);
    const char *keys[] = { "host", "port", "user", "dbname", "connect_timeout", NULL };
    const char *vals[] = { dl->pgdir, port, "postgres", "postgres", "10", NULL };
    return PQconnectdbParams(keys, vals, 0);
}

static int dl_pg_check(struct datalayer *dl)
{
    char port[16];
    snprintf(port, sizeof port, "%d", dl->proc[DL_PG].port);
    const char *keys[] = { "host", "port", "user", "dbname", "connect_timeout", NULL };
    const char *vals[] = { dl->pgdir, port, "postgres", "postgres", "2", NULL };
    return PQpingParams(keys, vals, 0) == PQPING_OK ? 0 : 1;
}

/* pg_ctl stop -m fast as the cluster's owner; SIGINT when pg_ctl fails. */
static void dl_pg_stop(struct datalayer *dl)
{
    char bin[PATH_MAX], log[PATH_MAX];
    pid_t pid = 0;
    dl_log_path(dl, "postgres", log);
    char *argv[] = { "pg_ctl", "-D", dl->pgdir, "-m", "fast", "-w", "-t", "10", "stop", NULL };
    struct dl_spawn s = { .bin = bin, .argv = argv, .log = log, .cwd = dl->pgdir, .as_pg = true,
                          .death_signal = SIGKILL };
    int status = 0;
    bool stopped = false;
    if (dl_path(bin, "%s/pg_ctl", dl->pg_bindir) == 0 && dl_spawn(dl, &s, &pid, NULL, 0) == 0) {
        stopped = dl_wait_gone(pid, DL_STOP_MS + 2000, &status) && WIFEXITED(status) &&
                  WEXITSTATUS(status) == 0;
        if (!stopped && dl_reaped(pid, NULL) == false) {
            kill(pid, SIGKILL);
            dl_wait_gone(pid, DL_KILL_MS, NULL);
        }
    }
    if (!stopped)
        kill(dl->proc[DL_PG].pid, SIGINT);
}

/* ------------------------------------------------------------------ the others */

static int dl_simple_launch(struct datalayer *dl, enum dl_server which, char **argv, char *err,
                            size_t errsz)
{
    char log[PATH_MAX];
    dl_log_path(dl, dl->proc[which].name, log);
    struct dl_spawn s = { .bin = dl->proc[which].bin, .argv = argv, .log = log, .cwd = dl->data,
                          .death_signal = SIGTERM };
    return dl_spawn(dl, &s, &dl->proc[which].pid, err, errsz);
}

static int dl_redis_launch(struct datalayer *dl, char *err, size_t errsz)
{
    char port[16], dir[PATH_MAX];
    snprintf(port, sizeof port, "%d", dl->proc[DL_REDIS].port);
    if (dl_path(dir, "%s/redis", dl->data) < 0 || dl_mkdir(dir, 0700, err, errsz) < 0)
        return dl_err(err, errsz, "redis: cannot make its directory under %s", dl->data);
    /* No snapshots: Redis holds rate-limit counters and caches here, which
     * are rebuilt on their own; an RDB file would only cost disk writes. */
    char *argv[] = { "redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "",
                     "--appendonly", "no", "--daemonize", "no", "--dir", dir, "--logfile", "",
                     NULL };
    return dl_simple_launch(dl, DL_REDIS, argv, err, errsz);
}

/* "Ready to accept connections" is logged once the port is bound, so the
 * PONG comes from our server and not from one that holds the port. */
static int dl_redis_check(struct datalayer *dl)
{
    char resp[64];
    if (!dl_log_contains(dl, "redis", "Ready to accept connections"))
        return 1;
    if (dl_exchange(dl->proc[DL_REDIS].port, "PING\r\n", resp, sizeof resp) < 0)
        return 1;
    return strncmp(resp, "+PONG", 5) == 0 ? 0 : 1;
}

static int dl_nats_launch(struct datalayer *dl, char *err, size_t errsz)
{
    char port[16], mon[16], dir[PATH_MAX];
    snprintf(port, sizeof port, "%d", dl->proc[DL_NATS].port);
    snprintf(mon, sizeof mon, "%d", dl->nats_monitor_port);
    if (dl_path(dir, "%s/nats", dl->data) < 0 || dl_mkdir(dir, 0700, err, errsz) < 0)
        return dl_err(err, errsz, "nats: cannot make its directory under %s", dl->data);
    char *argv[] = { "nats-server", "-js", "-a", "127.0.0.1", "-p", port, "-m", mon, "-sd", dir, NULL };
    return dl_simple_launch(dl, DL_NATS, argv, err, errsz);
}

/* "Server is ready" comes after both listeners are bound. */
static int dl_nats_check(struct datalayer *dl)
{
    if (!dl_log_contains(dl, "nats", "Server is ready"))
        return 1;
    return dl_http_status(dl->nats_monitor_port, "/healthz?js-enabled-only=true") == 200 ? 0 : 1;
}

static int dl_prom_launch(struct datalayer *dl, char *err, size_t errsz)
{
    char cfg[PATH_MAX + 16], tsdb[PATH_MAX + 32], listen[64];
    snprintf(cfg, sizeof cfg, "--config.file=%s", dl->prom_config);
    snprintf(tsdb, sizeof tsdb, "--storage.tsdb.path=%s/prometheus", dl->data);
    snprintf(listen, sizeof listen, "--web.listen-address=127.0.0.1:%d", dl->proc[DL_PROM].port);
    char *argv[] = { "prometheus", cfg, tsdb, listen, NULL };
    return dl_simple_launch(dl, DL_PROM, argv, err, errsz);
}

static int dl_am_launch(struct datalayer *dl, char *err, size_t errsz)
{
    char cfg[PATH_MAX + 16], store[PATH_MAX + 32], listen[64];
    snprintf(cfg, sizeof cfg, "--config.file=%s", dl->am_config);
    snprintf(store, sizeof store, "--storage.path=%s/alertmanager", dl->data);
    snprintf(listen, sizeof listen, "--web.listen-address=127.0.0.1:%d", dl->proc[DL_AM].port);
    /* An empty cluster address: no gossip port, a single local instance. */
    char *argv[] = { "prometheus-alertmanager", cfg, store, listen, "--cluster.listen-address=", NULL };
    return dl_simple_launch(dl, DL_AM, argv, err, errsz);
}

/* The log lines: the port is bound (ours, not someone else's answering). */
static int dl_prom_check(struct datalayer *dl)
{
    if (!dl_log_contains(dl, "prometheus", "Server is ready to receive web requests"))
        return 1;
    return dl_http_status(dl->proc[DL_PROM].port, "/-/ready") == 200 ? 0 : 1;
}

static int dl_am_check(struct datalayer *dl)
{
    if (!dl_log_contains(dl, "alertmanager", "msg=\"Listening on\""))
        return 1;
    return dl_http_status(dl->proc[DL_AM].port, "/-/ready") == 200 ? 0 : 1;
}

struct dl_ops {
    int (*launch)(struct datalayer *dl, char *err, size_t errsz);
    int (*check)(struct datalayer *dl); /* 0 ready, 1 not yet */
};

static const struct dl_ops dl_ops[DL_COUNT] = {
    [DL_PG] = { dl_pg_launch, dl_pg_check },
    [DL_REDIS] = { dl_redis_launch, dl_redis_check },
    [DL_NATS] = { dl_nats_launch, dl_nats_check },
    [DL_PROM] = { dl_prom_launch, dl_prom_check },
    [DL_AM] = { dl_am_launch, dl_am_check },
};

/* ------------------------------------------------------------------ start / wait */

/* Keeps the previous run's log beside the new one (<server>.log.1). */
static void dl_rotate_log(const struct datalayer *dl, const char *name)
{
    char log[PATH_MAX], old[PATH_MAX];
    dl_log_path(dl, name, log);
    if (log[0] && dl_path(old, "%s.1", log) == 0)
        rename(log, old);
}

static int dl_launch(struct datalayer *dl, enum dl_server which, char *err, size_t errsz)
{
    struct dl_proc *p = &dl->proc[which];
    dl_rotate_log(dl, p->name);
    p->tries++;
    p->deadline = dl_now_ms() + (uint64_t)dl->timeout_ms;
    return dl_ops[which].launch(dl, err, errsz);
}

/* The server exited before it was ready: relaunch on new ports when it lost
 * ports we chose to a race, else fail naming it. */
static int dl_on_exit(struct datalayer *dl, enum dl_server which, int status, char *err, size_t errsz)
{
    struct dl_proc *p = &dl->proc[which];
    p->pid = 0;
    if (p->is_port_ours && p->tries < DL_PORT_TRIES && dl_log_says_port_taken(dl, p->name)) {
        int *ports[2], n = 0;
        log_warn("port taken meanwhile; retrying on a new one", LOG_STR("server", p->name),
                 LOG_INT("port", p->port));
        if (which != DL_NATS || p->port_was_ours)
            ports[n++] = &p->port;
        if (which == DL_NATS && dl->is_monitor_port_ours)
            ports[n++] = &dl->nats_monitor_port;
        if (dl_free_ports(ports, n, err, errsz) < 0)
            return -1;
        return dl_launch(dl, which, err, errsz);
    }
    char how[64];
    dl_describe_status(status, how, sizeof how);
    return dl_fail_tail(dl, p->name, err, errsz, "%s %s before it was ready on 127.0.0.1:%d", p->name,
                        how, p->port);
}

static int dl_poll_one(struct datalayer *dl, enum dl_server which, char *err, size_t errsz)
{
    struct dl_proc *p = &dl->proc[which];
    int status = 0;
    if (dl_reaped(p->pid, &status))
        return dl_on_exit(dl, which, status, err, errsz);
    if (dl_ops[which].check(dl) == 0) {
        p->is_ready = true;
        log_info("data layer server ready", LOG_STR("server", p->name), LOG_INT("port", p->port),
                 LOG_INT("pid", p->pid));
        return 0;
    }
    if (dl_now_ms() >= p->deadline)
        return dl_fail_tail(dl, p->name, err, errsz, "%s not ready on 127.0.0.1:%d after %d ms",
                            p->name, p->port, dl->timeout_ms);
    return 0;
}

static int dl_wait_ready(struct datalayer *dl, char *err, size_t errsz)
{
    for (;;) {
        bool all = true;
        for (int i = 0; i < DL_COUNT; i++) {
            struct dl_proc *p = &dl->proc[i];
            if (!p->is_wanted || p->is_ready)
                continue;
            if (dl_poll_one(dl, (enum dl_server)i, err, errsz) < 0)
                return -1;
            all = all && p->is_ready;
        }
        if (all)
            return 0;
        dl_sleep_ms(DL_POLL_MS);
    }
}

static int dl_set_paths(struct datalayer *dl, const struct datalayer_config *cfg, char *err, size_t errsz)
{
    if (!cfg->state_dir || !cfg->state_dir[0])
        return dl_err(err, errsz, "datalayer: state_dir is required");
    if (mkdir(cfg->state_dir, 0700) < 0 && errno != EEXIST)
        return dl_err(err, errsz, "mkdir %s: %s", cfg->state_dir, strerror(errno));
    if (!realpath(cfg->state_dir, dl->state))
        return dl_err(err, errsz, "state dir %s: %s", cfg->state_dir, strerror(errno));
    if (dl_path(dl->data, "%s/data", dl->state) < 0 || dl_path(dl->pgdir, "%s/postgres", dl->data) < 0 ||
        dl_path(dl->creds_path, "%s/credentials.json", dl->data) < 0)
        return dl_err(err, errsz, "state dir %s: path too long", dl->state);
    if (dl_mkdir(dl->data, 0711, err, errsz) < 0)
        return -1;
    chmod(dl->data, 0711); /* search only, for the postgres user */
    const char *bindir = getenv("STRATA_PG_BINDIR");
    snprintf(dl->pg_bindir, sizeof dl->pg_bindir, "%s", bindir && bindir[0] ? bindir : DL_PG_BINDIR);
    if (cfg->prometheus_port && (!cfg->prometheus_config || !realpath(cfg->prometheus_config, dl->prom_config)))
        return dl_err(err, errsz, "prometheus_config %s: %s",
                      cfg->prometheus_config ? cfg->prometheus_config : "(none)",
                      cfg->prometheus_config ? strerror(errno) : "required with prometheus_port");
    if (cfg->alertmanager_port &&
        (!cfg->alertmanager_config || !realpath(cfg->alertmanager_config, dl->am_config)))
        return dl_err(err, errsz, "alertmanager_config %s: %s",
                      cfg->alertmanager_config ? cfg->alertmanager_config : "(none)",
                      cfg->alertmanager_config ? strerror(errno) : "required with alertmanager_port");
    return 0;
}

static int dl_set_runner(struct datalayer *dl, char *err, size_t errsz)
{
    if (geteuid() != 0)
        return 0;
    struct passwd *pw = getpwnam("postgres");
    if (!pw)
        return dl_err(err, errsz, "postgres: running as root needs the 'postgres' user "
                                  "(PostgreSQL refuses root; install postgresql-15)");
    dl->pg_drop = true;
    dl->pg_uid = pw->pw_uid;
    dl->pg_gid = pw->pw_gid;
    return 0;
}

static int dl_port_arg(const char *name, int port, char *err, size_t errsz)
{
    if (port > 65535)
        return dl_err(err, errsz, "%s port %d: out of range", name, port);
    return 0;
}

static int dl_set_ports(struct datalayer *dl, const struct datalayer_config *cfg, char *err, size_t errsz)
{
    int given[DL_COUNT] = { cfg->pg_port, cfg->redis_port, cfg->nats_port, cfg->prometheus_port,
                            cfg->alertmanager_port };
    int *pick[DL_COUNT + 1];
    int n = 0;
    for (int i = 0; i < DL_COUNT; i++) {
        struct dl_proc *p = &dl->proc[i];
        p->name = dl_names[i];
        p->is_wanted = i < DL_PROM || given[i] != 0;
        if (dl_port_arg(p->name, given[i], err, errsz) < 0)
            return -1;
        if (i < DL_PROM && given[i] < 0)
            return dl_err(err, errsz, "%s port %d: out of range", p->name, given[i]);
        p->port = given[i] > 0 ? given[i] : 0;
        p->is_port_ours = p->port_was_ours = p->is_wanted && p->port == 0;
        if (p->is_port_ours)
            pick[n++] = &p->port;
    }
    if (dl_port_arg("nats monitor", cfg->nats_monitor_port, err, errsz) < 0)
        return -1;
    if (cfg->nats_monitor_port < 0)
        return dl_err(err, errsz, "nats monitor port %d: out of range", cfg->nats_monitor_port);
    dl->nats_monitor_port = cfg->nats_monitor_port;
    if (dl->nats_monitor_port == 0) {
        dl->is_monitor_port_ours = dl->proc[DL_NATS].is_port_ours = true;
        pick[n++] = &dl->nats_monitor_port;
    }
    return n ? dl_free_ports(pick, n, err, errsz) : 0;
}

static int dl_find_bins(struct datalayer *dl, char *err, size_t errsz)
{
    static const char *const bins[DL_COUNT] = { NULL, "redis-server", "nats-server", "prometheus",
                                                "prometheus-alertmanager" };
    for (int i = 0; i < DL_COUNT; i++) {
        struct dl_proc *p = &dl->proc[i];
        if (!p->is_wanted)
            continue;
        if (i == DL_PG) {
            if (dl_path(p->bin, "%s/postgres", dl->pg_bindir) < 0 || access(p->bin, X_OK) < 0)
                return dl_err(err, errsz, "postgres: %s/postgres not found (install postgresql-15 "
                                          "or set STRATA_PG_BINDIR)", dl->pg_bindir);
        } else if (dl_find_bin(bins[i], p->bin, err, errsz) < 0) {
            return -1;
        }
    }
    return 0;
}

static void dl_set_urls(struct datalayer *dl)
{
    snprintf(dl->redis_url, sizeof dl->redis_url, "redis://127.0.0.1:%d/0", dl->proc[DL_REDIS].port);
    snprintf(dl->nats_url, sizeof dl->nats_url, "nats://127.0.0.1:%d", dl->proc[DL_NATS].port);
    snprintf(dl->prom_url, sizeof dl->prom_url, "http://127.0.0.1:%d", dl->proc[DL_PROM].port);
    snprintf(dl->am_url, sizeof dl->am_url, "http://127.0.0.1:%d", dl->proc[DL_AM].port);
}

/* ------------------------------------------------------------------ credentials */

static int dl_creds_load(struct datalayer *dl, char *err, size_t errsz)
{
    if (access(dl->creds_path, F_OK) < 0) {
        dl->creds = json_pack("{s:{}}", "postgresql");
        return dl->creds ? 0 : dl_err(err, errsz, "credentials: out of memory");
    }
    json_error_t je;
    dl->creds = json_load_file(dl->creds_path, JSON_REJECT_DUPLICATES, &je);
    if (!dl->creds)
        return dl_err(err, errsz, "%s:%d:%d: %s", dl->creds_path, je.line, je.column, je.text);
    json_t *pg = json_object_get(dl->creds, "postgresql");
    if (!json_is_object(dl->creds) || !json_is_object(pg))
        return dl_err(err, errsz, "%s: \"postgresql\" must be an object", dl->creds_path);
    const char *key;
    json_t *v;
    json_object_foreach(pg, key, v) {
        if (!json_is_string(v) || json_string_length(v) < 16)
            return dl_err(err, errsz, "%s: postgresql.%s must be a password string", dl->creds_path, key);
    }
    return 0;
}

static int dl_creds_save(const struct datalayer *dl, char *err, size_t errsz)
{
    char *text = json_dumps(dl->creds, JSON_INDENT(2) | JSON_SORT_KEYS);
    if (!text)
        return dl_err(err, errsz, "credentials: out of memory");
    size_t n = strlen(text);
    char *line = realloc(text, n + 2);
    if (!line) {
        free(text);
        return dl_err(err, errsz, "credentials: out of memory");
    }
    memcpy(line + n, "\n", 2);
    int rc = dl_write_file(dl->creds_path, line, 0600, false, dl, err, errsz);
    free(line);
    return rc;
}

/* The stored password for name, or a new one (stored at once, so a retry
 * after a failure below uses the same). */
static const char *dl_creds_password(struct datalayer *dl, const char *name, char *err, size_t errsz)
{
    json_t *pg = json_object_get(dl->creds, "postgresql");
    json_t *v = json_object_get(pg, name);
    if (v)
        return json_string_value(v);
    unsigned char raw[DL_PASSWORD_BYTES];
    char hex[2 * DL_PASSWORD_BYTES + 1];
    if (RAND_bytes(raw, sizeof raw) != 1) {
        dl_err(err, errsz, "postgres: no randomness for a password (RAND_bytes)");
        return NULL;
    }
    for (size_t i = 0; i < sizeof raw; i++)
        snprintf(hex + 2 * i, 3, "%02x", raw[i]);
    if (json_object_set_new(pg, name, json_string(hex)) < 0) {
        dl_err(err, errsz, "credentials: out of memory");
        return NULL;
    }
    if (dl_creds_save(dl, err, errsz) < 0) {
        json_object_del(pg, name);
        return NULL;
    }
    return json_string_value(json_object_get(pg, name));
}

/* ------------------------------------------------------------------ databases */

static int dl_check_name(const char *name, char *err, size_t errsz)
{
    size_t n = name ? strlen(name) : 0;
    bool ok = n >= 1 && n <= 63 && name[0] >= 'a' && name[0] <= 'z';
    for (size_t i = 1; ok && i < n; i++)
        ok = (name[i] >= 'a' && name[i] <= 'z') || (name[i] >= '0' && name[i] <= '9') || name[i] == '_';
    if (!ok)
        return dl_err(err, errsz, "database name \"%.80s\": must match [a-z][a-z0-9_]{0,62}",
                      name ? name : "");
    /* pg_*: reserved by PostgreSQL; the others are the cluster's own. */
    if (strncmp(name, "pg_", 3) == 0 || !strcmp(name, "postgres") || !strcmp(name, "template0") ||
        !strcmp(name, "template1") || !strcmp(name, "public"))
        return dl_err(err, errsz, "database name \"%s\": reserved", name);
    return 0;
}

/* 1 when `SELECT 1 FROM catalog WHERE column = name` finds a row. */
static int dl_pg_exists(PGconn *c, const char *sql, const char *name, char *err, size_t errsz)
{
    const char *params[] = { name };
    PGresult *r = PQexecParams(c, sql, 1, NULL, params, NULL, NULL, 0);
    int rc = PQresultStatus(r) == PGRES_TUPLES_OK ? PQntuples(r) > 0
                                                  : dl_err(err, errsz, "postgres: %s: %s", sql,
                                                           PQresultErrorMessage(r));
    PQclear(r);
    return rc;
}

static int dl_pg_exec(PGconn *c, const char *sql, const char *what, char *err, size_t errsz)
{
    PGresult *r = PQexec(c, sql);
    int rc = PQresultStatus(r) == PGRES_COMMAND_OK
                 ? 0
                 : dl_err(err, errsz, "postgres: %s: %s", what, PQresultErrorMessage(r));
    PQclear(r);
    return rc;
}

/* Role NAME with the password (sent hashed: the plain text never reaches
 * the server or its logs), set again when the role exists so the stored
 * password is always the one that works. */
static int dl_pg_role(PGconn *c, const char *name, const char *ident, const char *password, char *err,
                      size_t errsz)
{
    int exists = dl_pg_exists(c, "SELECT 1 FROM pg_roles WHERE rolname = $1", name, err, errsz);
    if (exists < 0)
        return -1;
    char *hash = PQencryptPasswordConn(c, password, name, "scram-sha-256");
    char *lit = hash ? PQescapeLiteral(c, hash, strlen(hash)) : NULL;
    int rc = -1;
    if (lit) {
        char sql[512];
        snprintf(sql, sizeof sql, "%s ROLE %s WITH LOGIN PASSWORD %s", exists ? "ALTER" : "CREATE",
                 ident, lit);
        rc = dl_pg_exec(c, sql, exists ? "ALTER ROLE" : "CREATE ROLE", err, errsz);
    } else {
        dl_err(err, errsz, "postgres: hashing the password of %s: %s", name, PQerrorMessage(c));
    }
    PQfreemem(lit);
    PQfreemem(hash);
    return rc;
}

/* Database NAME owned by NAME; other roles may not connect to it. */
static int dl_pg_db(PGconn *c, const char *name, const char *ident, char *err, size_t errsz)
{
    int exists = dl_pg_exists(c, "SELECT 1 FROM pg_database WHERE datname = $1", name, err, errsz);
    if (exists != 0)
        return exists < 0 ? -1 : 0;
    char sql[256];
    snprintf(sql, sizeof sql, "CREATE DATABASE %s OWNER %s", ident, ident);
    if (dl_pg_exec(c, sql, "CREATE DATABASE", err, errsz) < 0)
        return -1;
    snprintf(sql, sizeof sql, "REVOKE ALL ON DATABASE %s FROM PUBLIC", ident);
    return dl_pg_exec(c, sql, "REVOKE ALL ON DATABASE", err, errsz);
}

int datalayer_pg_database(struct datalayer *dl, const char *name, char *url, size_t urlsz, char *err,
                          size_t errsz)
{
    if (!dl || !dl->proc[DL_PG].pid)
        return dl_err(err, errsz, "postgres: not running");
    if (dl_check_name(name, err, errsz) < 0)
        return -1;
    const char *password = dl_creds_password(dl, name, err, errsz);
    if (!password)
        return -1;
    PGconn *c = dl_pg_connect_super(dl);
    char *ident = NULL;
    int rc = -1;
    if (PQstatus(c) != CONNECTION_OK) {
        dl_err(err, errsz, "postgres: connecting as postgres over %s: %s", dl->pgdir, PQerrorMessage(c));
        goto out;
    }
    ident = PQescapeIdentifier(c, name, strlen(name));
    if (!ident) {
        dl_err(err, errsz, "postgres: quoting %s: %s", name, PQerrorMessage(c));
        goto out;
    }
    if (dl_pg_role(c, name, ident, password, err, errsz) < 0 || dl_pg_db(c, name, ident, err, errsz) < 0)
        goto out;
    int n = snprintf(url, urlsz, "postgresql://%s:%s@127.0.0.1:%d/%s", name, password,
                     dl->proc[DL_PG].port, name);
    rc = n < 0 || (size_t)n >= urlsz ? dl_err(err, errsz, "postgres: url buffer too small") : 0;
out:
    PQfreemem(ident);
    PQfinish(c);
    return rc;
}

/* ------------------------------------------------------------------ start / stop */

static void dl_free(struct datalayer *dl)
{
    json_decref(dl->creds);
    free(dl);
}

static void dl_kill_group(pid_t pid)
{
    if (kill(-pid, SIGKILL) < 0)
        kill(pid, SIGKILL);
}

/* SIGTERM (pg_ctl for PostgreSQL), wait up to 10 s for all, SIGKILL the
 * process group of whoever is left, reap everything. */
static void dl_shutdown(struct datalayer *dl)
{
    uint64_t end = dl_now_ms() + DL_STOP_MS;
    if (dl->initdb_pid) {
        dl_kill_group(dl->initdb_pid);
        dl_wait_gone(dl->initdb_pid, DL_KILL_MS, NULL);
        dl->initdb_pid = 0;
    }
    for (int i = DL_REDIS; i < DL_COUNT; i++)
        if (dl->proc[i].pid)
            kill(dl->proc[i].pid, SIGTERM);
    if (dl->proc[DL_PG].pid && !dl_reaped(dl->proc[DL_PG].pid, NULL))
        dl_pg_stop(dl);
    for (int i = 0; i < DL_COUNT; i++) {
        struct dl_proc *p = &dl->proc[i];
        if (!p->pid)
            continue;
        uint64_t now = dl_now_ms();
        if (!dl_wait_gone(p->pid, now < end ? (int)(end - now) : 0, NULL)) {
            log_warn("data layer server ignored the stop for 10 s; sending SIGKILL",
                     LOG_STR("server", p->name), LOG_INT("pid", p->pid));
            dl_kill_group(p->pid);
            if (!dl_wait_gone(p->pid, DL_KILL_MS, NULL))
                log_error("data layer server survived SIGKILL", LOG_STR("server", p->name),
                          LOG_INT("pid", p->pid));
        }
        p->pid = 0;
        p->is_ready = false;
    }
}

static int dl_start(struct datalayer *dl, const struct datalayer_config *cfg, char *err, size_t errsz)
{
    dl->timeout_ms = cfg->start_timeout_ms > 0 ? cfg->start_timeout_ms : DL_DEFAULT_TIMEOUT_MS;
    if (dl_set_paths(dl, cfg, err, errsz) < 0 || dl_set_runner(dl, err, errsz) < 0 ||
        dl_set_ports(dl, cfg, err, errsz) < 0 || dl_find_bins(dl, err, errsz) < 0 ||
        dl_creds_load(dl, err, errsz) < 0 || dl_pg_prepare_dir(dl, err, errsz) < 0)
        return -1;
    dl_set_urls(dl);
    /* initdb (1.5 s) runs while the others come up. */
    bool fresh = !dl_pg_initialized(dl);
    if (fresh) {
        dl_rotate_log(dl, "initdb");
        if (dl_pg_launch_initdb(dl, err, errsz) < 0)
            return -1;
    }
    for (int i = DL_REDIS; i < DL_COUNT; i++)
        if (dl->proc[i].is_wanted && dl_launch(dl, (enum dl_server)i, err, errsz) < 0)
            return -1;
    if (fresh && dl_pg_wait_initdb(dl, err, errsz) < 0)
        return -1;
    if (dl_launch(dl, DL_PG, err, errsz) < 0)
        return -1;
    return dl_wait_ready(dl, err, errsz);
}

int datalayer_start(const struct datalayer_config *cfg, struct datalayer **out, char *err, size_t errsz)
{
    *out = NULL;
    if (!cfg)
        return dl_err(err, errsz, "datalayer: no config");
    struct datalayer *dl = calloc(1, sizeof *dl);
    if (!dl)
        return dl_err(err, errsz, "datalayer: out of memory");
    if (dl_start(dl, cfg, err, errsz) < 0) {
        dl_shutdown(dl);
        dl_free(dl);
        return -1;
    }
    *out = dl;
    return 0;
}

void datalayer_stop(struct datalayer *dl)
{
    if (!dl)
        return;
    dl_shutdown(dl);
    dl_free(dl);
}

const char *datalayer_redis_url(const struct datalayer *dl) { return dl->redis_url; }
const char *datalayer_nats_url(const struct datalayer *dl) { return dl->nats_url; }

const char *datalayer_prometheus_url(const struct datalayer *dl)
{
    return dl->proc[DL_PROM].pid ? dl->prom_url : NULL;
}

const char *datalayer_alertmanager_url(const struct datalayer *dl)
{
    return dl->proc[DL_AM].pid ? dl->am_url : NULL;
}

void datalayer_prometheus_reload(struct datalayer *dl)
{
    if (dl && dl->proc[DL_PROM].pid)
        kill(dl->proc[DL_PROM].pid, SIGHUP);
}

size_t datalayer_pids(const struct datalayer *dl, pid_t *out, size_t n)
{
    size_t count = 0;
    for (int i = 0; dl && i < DL_COUNT; i++) {
        if (!dl->proc[i].pid)
            continue;
        if (count < n)
            out[count] = dl->proc[i].pid;
        count++;
    }
    return count;
}
