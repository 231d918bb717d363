/* platform.c — strata up, down, status, get, describe, events. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"

#define API_TIMEOUT_MS 10000

void cli_state_dir(const char *flag, char *out, size_t n)
{
    const char *env = getenv("STRATA_STATE"), *xdg = getenv("XDG_STATE_HOME"), *home = getenv("HOME");
    if (flag)
        snprintf(out, n, "%s", flag);
    else if (env && *env)
        snprintf(out, n, "%s", env);
    else if (geteuid() == 0) /* PostgreSQL then runs as "postgres": ~root is out of its reach */
        snprintf(out, n, "/var/lib/strata");
    else if (xdg && *xdg)
        snprintf(out, n, "%s/strata", xdg);
    else
        snprintf(out, n, "%s/.local/state/strata", home && *home ? home : "/tmp");
}

int cli_self_dir(char *out, size_t n)
{
    char self[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len < 0)
        return -errno;
    self[len] = '\0';
    char *slash = strrchr(self, '/');
    if (slash)
        *slash = '\0';
    snprintf(out, n, "%s", self);
    return 0;
}

static bool pid_alive(int pid)
{
    if (pid <= 0 || (kill(pid, 0) < 0 && errno == ESRCH))
        return false;
    /* A zombie (our own child, not reaped yet) counts as gone. */
    char path[64], stat[256] = "";
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return false;
    size_t got = fread(stat, 1, sizeof stat - 1, f);
    fclose(f);
    stat[got] = '\0';
    const char *paren = strrchr(stat, ')');
    return !(paren && paren[1] == ' ' && paren[2] == 'Z');
}

int cli_control_find(const char *state, struct cli_control *out)
{
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/control.json", state);
    json_t *j = json_load_file(path, 0, NULL);
    if (!j)
        return -ENOENT;
    const char *admin = json_string_value(json_object_get(j, "admin"));
    out->pid = (int)json_integer_value(json_object_get(j, "pid"));
    snprintf(out->admin, sizeof out->admin, "%s", admin ? admin : "");
    json_decref(j);
    if (!*out->admin || !pid_alive(out->pid))
        return -ENOENT;
    snprintf(path, sizeof path, "%s/admin.token", state);
    FILE *f = fopen(path, "re");
    if (!f)
        return -errno;
    char *ok = fgets(out->token, sizeof out->token, f);
    fclose(f);
    if (!ok)
        return -EINVAL;
    out->token[strcspn(out->token, "\r\n")] = '\0';
    return 0;
}

json_t *cli_admin(const struct cli_control *c, const char *method, const char *path, const char *body, int *status)
{
    char url[512], *resp = NULL;
    snprintf(url, sizeof url, "%s%s", c->admin, path);
    int st = cli_http(method, url, c->token, body, &resp, API_TIMEOUT_MS);
    if (status)
        *status = st;
    if (st < 0) {
        fprintf(stderr, "strata: the control plane at %s does not answer: %s\n", c->admin, strerror(-st));
        return NULL;
    }
    json_t *j = json_loads(resp, 0, NULL);
    if (!j)
        fprintf(stderr, "strata: %s %s: HTTP %d, not JSON: %.200s\n", method, path, st, resp);
    else if (st >= 400) {
        const char *msg = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
        fprintf(stderr, "strata: %s %s: HTTP %d: %s\n", method, path, st, msg ? msg : resp);
        json_decref(j);
        j = NULL;
    }
    free(resp);
    return j;
}

/* ---- common flags -------------------------------------------------------- */

struct flags {
    const char *state, *manifests, *output, *admin, *gw_http, *gw_https, *prom, *am, *backoff, *hpa;
    bool foreground;
    int timeout_s;
    const char *positional[4];
    int npositional;
};

static int parse_flags(const char *cmd, int argc, char **argv, struct flags *f)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **slot = !strcmp(a, "--state")               ? &f->state
                            : !strcmp(a, "-f") || !strcmp(a, "--filename") ? &f->manifests
                            : !strcmp(a, "-o") || !strcmp(a, "--output")   ? &f->output
                            : !strcmp(a, "--admin")              ? &f->admin
                            : !strcmp(a, "--gateway-http")       ? &f->gw_http
                            : !strcmp(a, "--gateway-https")      ? &f->gw_https
                            : !strcmp(a, "--prometheus-port")    ? &f->prom
                            : !strcmp(a, "--alertmanager-port")  ? &f->am
                            : !strcmp(a, "--backoff-base-ms")    ? &f->backoff
                            : !strcmp(a, "--hpa-interval-ms")    ? &f->hpa
                                                                 : NULL;
        if (slot) {
            if (i + 1 >= argc) {
                fprintf(stderr, "strata %s: %s needs a value\n", cmd, a);
                return -1;
            }
            *slot = argv[++i];
        } else if (!strcmp(a, "--foreground")) {
            f->foreground = true;
        } else if (!strcmp(a, "--timeout")) {
            char *end;
            long t = i + 1 < argc ? strtol(argv[i + 1], &end, 10) : -1;
            if (i + 1 >= argc || *end || t < 1 || t > 3600) {
                fprintf(stderr, "strata %s: --timeout: expected seconds 1-3600\n", cmd);
                return -1;
            }
            f->timeout_s = (int)t;
            i++;
        } else if (a[0] == '-') {
            fprintf(stderr, "strata %s: unknown flag %s\n", cmd, a);
            return -1;
        } else if (f->npositional < 4) {
            f->positional[f->npositional++] = a;
        } else {
            fprintf(stderr, "strata %s: too many arguments\n", cmd);
            return -1;
        }
    }
    if (f->output && strcmp(f->output, "json") && strcmp(f->output, "table")) {
        fprintf(stderr, "strata %s: --output: expected json or table, got \"%s\"\n", cmd, f->output);
        return -1;
    }
    return 0;
}

static int need_control(const char *cmd, const struct flags *f, char *state, size_t n, struct cli_control *c)
{
    cli_state_dir(f->state, state, n);
    if (cli_control_find(state, c) < 0) {
        fprintf(stderr, "strata %s: no platform runs with state %s (start it: strata up)\n", cmd, state);
        return -1;
    }
    return 0;
}

/* ---- up ------------------------------------------------------------------ */

static void print_endpoints(json_t *st)
{
    json_t *e = json_object_get(st, "endpoints");
    const char *v;
    printf("strata is up.\n");
    if ((v = json_string_value(json_object_get(e, "gateway_https"))))
        printf("  gateway      %s  (and %s)\n", v, json_string_value(json_object_get(e, "gateway_http")));
    if ((v = json_string_value(json_object_get(e, "console")))) {
        /* The console takes the admin token from the URL's fragment (never sent to the server). */
        char path[PATH_MAX + 32], token[128] = "";
        snprintf(path, sizeof path, "%s/admin.token", json_string_value(json_object_get(e, "state_dir")));
        FILE *tf = fopen(path, "re");
        if (tf) {
            if (!fgets(token, sizeof token, tf))
                token[0] = '\0';
            fclose(tf);
            token[strcspn(token, "\r\n")] = '\0';
        }
        printf("  console      %s/#token=%s\n", v, token);
        printf("  admin API    %s  (Authorization: Bearer $(cat %s))\n", v, path);
    }
    if ((v = json_string_value(json_object_get(e, "prometheus"))))
        printf("  prometheus   %s\n", v);
    if ((v = json_string_value(json_object_get(e, "alertmanager"))))
        printf("  alertmanager %s\n", v);
    if ((v = json_string_value(json_object_get(e, "ca_file"))))
        printf("  CA cert      %s  (curl --cacert %s ...)\n", v, v);
    if ((v = json_string_value(json_object_get(e, "logs"))))
        printf("  logs         %s  (strata logs WORKLOAD)\n", v);
}

static void tail_file(const char *path, int lines)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return;
    char *ring[64] = { 0 };
    char buf[2048];
    int n = 0;
    if (lines > 64)
        lines = 64;
    while (fgets(buf, sizeof buf, f)) {
        free(ring[n % lines]);
        ring[n % lines] = strdup(buf);
        n++;
    }
    fclose(f);
    for (int i = n > lines ? n - lines : 0; i < n; i++) {
        fprintf(stderr, "  | %s", ring[i % lines] ? ring[i % lines] : "");
        free(ring[i % lines]);
        ring[i % lines] = NULL;
    }
}

static long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits until the control plane (pid) answers ready, dies or the deadline. */
static int wait_ready(const char *state, int pid, int timeout_s, json_t **status)
{
    long long deadline = mono_ms() + timeout_s * 1000LL;
    int last_ready = -1, last_total = -1;
    while (mono_ms() < deadline) {
        int wst;
        if (waitpid(pid, &wst, WNOHANG) == pid)
            return -ECHILD;
        struct cli_control c;
        if (cli_control_find(state, &c) == 0) {
            char url[256], *body = NULL;
            snprintf(url, sizeof url, "%s/v1/status", c.admin);
            if (cli_http("GET", url, c.token, NULL, &body, 2000) == 200) {
                json_t *j = json_loads(body, 0, NULL);
                free(body);
                body = NULL;
                if (json_is_true(json_object_get(j, "ready"))) {
                    *status = j;
                    return 0;
                }
                int ready = 0, total = 0;
                size_t i;
                json_t *w;
                json_array_foreach(json_object_get(j, "workloads"), i, w)
                {
                    total += (int)json_integer_value(json_object_get(w, "replicas"));
                    ready += (int)json_integer_value(json_object_get(w, "ready"));
                }
                if (ready != last_ready || total != last_total)
                    fprintf(stderr, "  %d/%d replicas ready\n", ready, total);
                last_ready = ready;
                last_total = total;
                json_decref(j);
            }
            free(body);
        }
        usleep(200 * 1000);
    }
    return -ETIMEDOUT;
}

int cmd_up(int argc, char **argv)
{
    struct flags f = { .manifests = "deploy", .timeout_s = 180 };
    if (parse_flags("up", argc, argv, &f) < 0)
        return 2;
    char state[PATH_MAX], dir[PATH_MAX], self[PATH_MAX], control[PATH_MAX + 32], logpath[PATH_MAX + 32];
    cli_state_dir(f.state, state, sizeof state);
    struct cli_control running;
    if (mkdir(state, 0700) < 0 && errno != EEXIST) {
        fprintf(stderr, "strata up: --state %s: %s\n", state, strerror(errno));
        return 1;
    }
    if (cli_control_find(state, &running) == 0) {
        json_t *st = cli_admin(&running, "GET", "/v1/status", NULL, NULL);
        if (!st)
            return 1;
        printf("already running (pid %d, state %s)\n", running.pid, state);
        print_endpoints(st);
        json_decref(st);
        return 0;
    }
    if (!realpath(f.manifests, dir)) {
        fprintf(stderr, "strata up: -f %s: %s\n", f.manifests, strerror(errno));
        return 1;
    }
    if (cli_self_dir(self, sizeof self) < 0)
        return 1;
    snprintf(control, sizeof control, "%s/strata-control", self);
    snprintf(logpath, sizeof logpath, "%s/control.log", state);
    const char *args[32] = { control, "-f", dir, "--state", state };
    int na = 5;
#define ADD(flag, v)                                                                                                  \
    do {                                                                                                              \
        if (v) {                                                                                                      \
            args[na++] = flag;                                                                                        \
            args[na++] = v;                                                                                           \
        }                                                                                                             \
    } while (0)
    ADD("--admin", f.admin);
    ADD("--gateway-http", f.gw_http);
    ADD("--gateway-https", f.gw_https);
    ADD("--prometheus-port", f.prom);
    ADD("--alertmanager-port", f.am);
    ADD("--backoff-base-ms", f.backoff);
    ADD("--hpa-interval-ms", f.hpa);
#undef ADD
    args[na] = NULL;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "strata up: fork: %s\n", strerror(errno));
        return 1;
    }
    if (pid == 0) {
        if (!f.foreground)
            setsid();
        int in = open("/dev/null", O_RDONLY | O_CLOEXEC);
        int out = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (in < 0 || out < 0 || dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0)
            _exit(127);
        execv(control, (char *const *)args);
        dprintf(2, "strata up: cannot run %s: %s\n", control, strerror(errno));
        _exit(127);
    }
    if (f.foreground) {
        /* Ctrl-C reaches the control plane too (same process group): it
         * stops everything; we wait for it. */
        signal(SIGINT, SIG_IGN);
        signal(SIGTERM, SIG_IGN);
    }
    fprintf(stderr, "starting strata from %s (state %s, log %s)\n", dir, state, logpath);
    json_t *st = NULL;
    int rc = wait_ready(state, pid, f.timeout_s, &st);
    if (rc == -ECHILD) {
        fprintf(stderr, "strata up: the control plane exited; the end of %s:\n", logpath);
        tail_file(logpath, 25);
        return 1;
    }
    if (rc < 0) {
        fprintf(stderr, "strata up: not ready after %d s; it keeps starting in the background "
                        "(strata status; strata down to stop it)\n", f.timeout_s);
        return 1;
    }
    print_endpoints(st);
    json_decref(st);
    if (!f.foreground)
        return 0;
    printf("attached: Ctrl-C stops everything\n");
    fflush(stdout);
    int wst;
    while (waitpid(pid, &wst, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(wst) ? WEXITSTATUS(wst) : 1;
}

/* ---- down ---------------------------------------------------------------- */

int cmd_down(int argc, char **argv)
{
    struct flags f = { .timeout_s = 120 };
    if (parse_flags("down", argc, argv, &f) < 0)
        return 2;
    char state[PATH_MAX];
    cli_state_dir(f.state, state, sizeof state);
    struct cli_control c;
    if (cli_control_find(state, &c) < 0) {
        printf("nothing runs with state %s\n", state);
        return 0;
    }
    int status;
    json_t *j = cli_admin(&c, "POST", "/v1/shutdown", "{}", &status);
    json_decref(j);
    if (!j && kill(c.pid, SIGTERM) < 0 && errno != ESRCH) {
        fprintf(stderr, "strata down: cannot stop pid %d: %s\n", c.pid, strerror(errno));
        return 1;
    }
    fprintf(stderr, "stopping (pid %d) ...\n", c.pid);
    long long deadline = mono_ms() + f.timeout_s * 1000LL;
    while (pid_alive(c.pid)) {
        if (mono_ms() > deadline) {
            fprintf(stderr, "strata down: still running after %d s (pid %d; its log: %s/control.log)\n",
                    f.timeout_s, c.pid, state);
            return 1;
        }
        usleep(100 * 1000);
    }
    printf("stopped\n");
    return 0;
}

/* ---- status, get, describe, events ------------------------------------------ */

static void print_workloads(json_t *st)
{
    printf("%-24s %-6s %-6s %-9s %-17s %s\n", "NAME", "READY", "WANT", "RESTARTS", "VERSION", "KIND");
    size_t i;
    json_t *w;
    json_array_foreach(json_object_get(st, "workloads"), i, w)
    {
        printf("%-24s %-6lld %-6lld %-9lld %-17s %s%s\n", json_string_value(json_object_get(w, "name")),
               json_integer_value(json_object_get(w, "ready")), json_integer_value(json_object_get(w, "replicas")),
               json_integer_value(json_object_get(w, "restarts")), json_string_value(json_object_get(w, "version")),
               json_string_value(json_object_get(w, "kind")),
               json_is_true(json_object_get(w, "gateway")) ? " (gateway)" : "");
    }
}

static int print_json(json_t *j)
{
    char *s = json_dumps(j, JSON_INDENT(2));
    printf("%s\n", s ? s : "null");
    free(s);
    json_decref(j);
    return 0;
}

int cmd_status(int argc, char **argv)
{
    struct flags f = { 0 };
    if (parse_flags("status", argc, argv, &f) < 0)
        return 2;
    char state[PATH_MAX];
    struct cli_control c;
    if (need_control("status", &f, state, sizeof state, &c) < 0)
        return 1;
    json_t *st = cli_admin(&c, "GET", "/v1/status", NULL, NULL);
    if (!st)
        return 1;
    if (f.output && !strcmp(f.output, "json"))
        return print_json(st);
    printf("platform %s (pid %d, state %s)\n\n", json_is_true(json_object_get(st, "ready")) ? "ready" : "NOT READY",
           c.pid, state);
    print_workloads(st);
    printf("\n");
    json_t *e = json_object_get(st, "endpoints");
    const char *k;
    json_t *v;
    json_object_foreach(e, k, v) if (json_is_string(v)) printf("%-14s %s\n", k, json_string_value(v));
    json_decref(st);
    return 0;
}

int cmd_get(int argc, char **argv)
{
    struct flags f = { 0 };
    if (parse_flags("get", argc, argv, &f) < 0)
        return 2;
    const char *what = f.npositional ? f.positional[0] : "workloads";
    bool pods = !strcmp(what, "pods") || !strcmp(what, "replicas");
    if (!pods && strcmp(what, "workloads") && strcmp(what, "deployments")) {
        fprintf(stderr, "strata get: expected workloads or pods, got \"%s\"\n", what);
        return 2;
    }
    char state[PATH_MAX];
    struct cli_control c;
    if (need_control("get", &f, state, sizeof state, &c) < 0)
        return 1;
    json_t *st = cli_admin(&c, "GET", "/v1/status", NULL, NULL);
    if (!st)
        return 1;
    if (f.output && !strcmp(f.output, "json"))
        return print_json(json_incref(json_object_get(st, "workloads"))) + (json_decref(st), 0);
    if (!pods) {
        print_workloads(st);
    } else {
        printf("%-40s %-6s %-17s %-9s %s\n", "NAME", "READY", "PHASE", "RESTARTS", "ADDRESS");
        size_t i, j;
        json_t *w, *p;
        json_array_foreach(json_object_get(st, "workloads"), i, w) json_array_foreach(json_object_get(w, "pods"), j, p)
            printf("%-40s %-6s %-17s %-9lld %s\n", json_string_value(json_object_get(p, "name")),
                   json_is_true(json_object_get(p, "ready")) ? "1/1" : "0/1",
                   json_string_value(json_object_get(p, "phase")), json_integer_value(json_object_get(p, "restarts")),
                   json_string_value(json_object_get(p, "address")));
    }
    json_decref(st);
    return 0;
}

static void print_events(json_t *events, const char *prefix)
{
    size_t i;
    json_t *e;
    json_array_foreach(events, i, e)
    {
        const char *obj = json_string_value(json_object_get(e, "object"));
        if (prefix && (!obj || strncmp(obj, prefix, strlen(prefix))))
            continue;
        time_t t = (time_t)json_integer_value(json_object_get(e, "time"));
        struct tm tm;
        char ts[32];
        gmtime_r(&t, &tm);
        strftime(ts, sizeof ts, "%H:%M:%S", &tm);
        printf("%s  %-40s %-20s %s\n", ts, obj, json_string_value(json_object_get(e, "reason")),
               json_string_value(json_object_get(e, "message")));
    }
}

int cmd_events(int argc, char **argv)
{
    struct flags f = { 0 };
    if (parse_flags("events", argc, argv, &f) < 0)
        return 2;
    char state[PATH_MAX];
    struct cli_control c;
    if (need_control("events", &f, state, sizeof state, &c) < 0)
        return 1;
    json_t *ev = cli_admin(&c, "GET", "/v1/events", NULL, NULL);
    if (!ev)
        return 1;
    if (f.output && !strcmp(f.output, "json"))
        return print_json(ev);
    print_events(json_object_get(ev, "events"), f.npositional ? f.positional[0] : NULL);
    json_decref(ev);
    return 0;
}

int cmd_describe(int argc, char **argv)
{
    struct flags f = { 0 };
    if (parse_flags("describe", argc, argv, &f) < 0)
        return 2;
    if (f.npositional != 1) {
        fprintf(stderr, "usage: strata describe WORKLOAD\n");
        return 2;
    }
    const char *name = f.positional[0];
    char state[PATH_MAX];
    struct cli_control c;
    if (need_control("describe", &f, state, sizeof state, &c) < 0)
        return 1;
    json_t *st = cli_admin(&c, "GET", "/v1/status", NULL, NULL);
    json_t *ev = st ? cli_admin(&c, "GET", "/v1/events", NULL, NULL) : NULL;
    if (!ev) {
        json_decref(st);
        return 1;
    }
    size_t i;
    json_t *w, *found = NULL;
    json_array_foreach(json_object_get(st, "workloads"), i, w) if (!strcmp(
        json_string_value(json_object_get(w, "name")), name)) found = w;
    if (!found) {
        fprintf(stderr, "strata describe: no workload named \"%s\" (strata get workloads)\n", name);
        json_decref(st);
        json_decref(ev);
        return 1;
    }
    char *s = json_dumps(found, JSON_INDENT(2));
    printf("%s\n\nEvents:\n", s);
    free(s);
    char prefix[256];
    snprintf(prefix, sizeof prefix, "%s-", name);
    print_events(json_object_get(ev, "events"), prefix);
    json_decref(st);
    json_decref(ev);
    return 0;
}

/* ---- alerts ------------------------------------------------------------------ */

static void print_alert(json_t *al)
{
    json_t *lb = json_object_get(al, "labels"), *an = json_object_get(al, "annotations");
    const char *summary = json_string_value(json_object_get(an, "summary"));
    printf("%-9s %-32s %-8s %-14s since %s%s%s\n", json_string_value(json_object_get(al, "status")),
           json_string_value(json_object_get(lb, "alertname")) ?: "?",
           json_string_value(json_object_get(lb, "severity")) ?: "",
           json_string_value(json_object_get(lb, "service")) ?: "",
           json_string_value(json_object_get(al, "startsAt")) ?: "?", summary ? "  " : "", summary ? summary : "");
}

int cmd_alerts(int argc, char **argv)
{
    struct flags f = { 0 };
    bool all = false;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--all")) {
            all = true;
            memmove(&argv[i], &argv[i + 1], (size_t)(argc - i) * sizeof *argv);
            argc--;
            i--;
        }
    if (parse_flags("alerts", argc, argv, &f) < 0)
        return 2;
    char state[PATH_MAX];
    struct cli_control c;
    if (need_control("alerts", &f, state, sizeof state, &c) < 0)
        return 1;
    json_t *j = cli_admin(&c, "GET", "/v1/alerts", NULL, NULL);
    if (!j)
        return 1;
    if (f.output && !strcmp(f.output, "json"))
        return print_json(j);
    size_t i, k;
    json_t *al, *n;
    if (!all) {
        if (!json_array_size(json_object_get(j, "firing")))
            printf("no alert firing\n");
        json_array_foreach(json_object_get(j, "firing"), i, al) print_alert(al);
    } else {
        json_array_foreach(json_object_get(j, "notifications"), i, n)
        {
            time_t t = (time_t)json_integer_value(json_object_get(n, "received_at"));
            struct tm tm;
            char ts[32];
            gmtime_r(&t, &tm);
            strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
            printf("notification %s (%s)\n", ts, json_string_value(json_object_get(n, "status")) ?: "?");
            json_array_foreach(json_object_get(n, "alerts"), k, al)
            {
                printf("  ");
                print_alert(al);
            }
        }
    }
    json_decref(j);
    return 0;
}
