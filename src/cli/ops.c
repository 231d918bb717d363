/* ops.c — strata scale, rollout, drain, why. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"

static int find(const char *cmd, const char *state_flag, char *state, size_t n, struct cli_control *c)
{
    cli_state_dir(state_flag, state, n);
    if (cli_control_find(state, c) < 0) {
        fprintf(stderr, "strata %s: no platform runs with state %s (start it: strata up)\n", cmd, state);
        return -1;
    }
    return 0;
}

/* Takes --state S out of argv (in place); returns the new argc. */
static int take_state(int argc, char **argv, const char **state)
{
    int j = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--state") && i + 1 < argc)
            *state = argv[++i];
        else
            argv[j++] = argv[i];
    }
    argv[j] = NULL;
    return j;
}

int cmd_scale(int argc, char **argv)
{
    const char *sf = NULL, *name = NULL, *replicas = NULL;
    argc = take_state(argc, argv, &sf);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--replicas") && i + 1 < argc)
            replicas = argv[++i];
        else if (!strncmp(argv[i], "--replicas=", 11))
            replicas = argv[i] + 11;
        else if (!name)
            name = argv[i];
        else if (!replicas)
            replicas = argv[i];
        else
            name = NULL, i = argc;
    }
    char *end;
    long n = replicas ? strtol(replicas, &end, 10) : -1;
    if (!name || !replicas || *end || n < 0 || n > 1000) {
        fprintf(stderr, "usage: strata scale DEPLOYMENT --replicas N   (N: 0-1000)\n");
        return 2;
    }
    char state[PATH_MAX], path[512], body[64];
    struct cli_control c;
    if (find("scale", sf, state, sizeof state, &c) < 0)
        return 1;
    snprintf(path, sizeof path, "/v1/workloads/%s/scale", name);
    snprintf(body, sizeof body, "{\"replicas\":%ld}", n);
    json_t *r = cli_admin(&c, "POST", path, body, NULL);
    if (!r)
        return 1;
    json_decref(r);
    printf("%s scaled to %ld\n", name, n);
    return 0;
}

static json_t *workload(json_t *st, const char *name)
{
    size_t i;
    json_t *w;
    json_array_foreach(json_object_get(st, "workloads"), i, w) if (!strcmp(json_string_value(json_object_get(w, "name")),
                                                                            name)) return w;
    return NULL;
}

static int rollout_status(const struct cli_control *c, const char *name, int timeout_s)
{
    time_t deadline = time(NULL) + timeout_s;
    char last[256] = "";
    for (;;) {
        json_t *st = cli_admin(c, "GET", "/v1/status", NULL, NULL);
        if (!st)
            return 1;
        json_t *w = workload(st, name);
        if (!w) {
            fprintf(stderr, "strata rollout: no Deployment named \"%s\"\n", name);
            json_decref(st);
            return 1;
        }
        json_t *ro = json_object_get(w, "rollout");
        long long want = json_integer_value(json_object_get(w, "replicas")),
                  ready = json_integer_value(json_object_get(w, "ready")),
                  updated = json_integer_value(json_object_get(ro, "updated")),
                  old = json_integer_value(json_object_get(ro, "old"));
        bool done = json_is_true(json_object_get(ro, "complete")) && ready >= want;
        char line[256];
        snprintf(line, sizeof line, "%s: %lld of %lld updated, %lld old, %lld ready", name, updated, want, old, ready);
        if (strcmp(line, last))
            printf("%s\n", line);
        snprintf(last, sizeof last, "%s", line);
        fflush(stdout);
        json_decref(st);
        if (done) {
            printf("%s: rollout complete\n", name);
            return 0;
        }
        if (time(NULL) > deadline) {
            fprintf(stderr, "strata rollout status: %s not complete after %d s\n", name, timeout_s);
            return 1;
        }
        usleep(250 * 1000);
    }
}

int cmd_rollout(int argc, char **argv)
{
    const char *sf = NULL;
    argc = take_state(argc, argv, &sf);
    int timeout_s = 300;
    const char *action = argc > 1 ? argv[1] : NULL, *name = argc > 2 ? argv[2] : NULL;
    if (argc > 4 && !strcmp(argv[3], "--timeout"))
        timeout_s = atoi(argv[4]);
    if (!action || !name || (strcmp(action, "status") && strcmp(action, "restart") && strcmp(action, "undo")) ||
        timeout_s < 1 || (argc != 3 && argc != 5)) {
        fprintf(stderr, "usage: strata rollout status|restart|undo DEPLOYMENT [--timeout S]\n");
        return 2;
    }
    char state[PATH_MAX], path[512];
    struct cli_control c;
    if (find("rollout", sf, state, sizeof state, &c) < 0)
        return 1;
    if (!strcmp(action, "status"))
        return rollout_status(&c, name, timeout_s);
    snprintf(path, sizeof path, "/v1/workloads/%s/rollout/%s", name, action);
    json_t *r = cli_admin(&c, "POST", path, "{}", NULL);
    if (!r)
        return 1;
    json_decref(r);
    printf("%s: %s started (strata rollout status %s)\n", name, action, name);
    return 0;
}

int cmd_drain(int argc, char **argv)
{
    const char *sf = NULL;
    argc = take_state(argc, argv, &sf);
    if (argc != 2) {
        fprintf(stderr, "usage: strata drain REPLICA|DEPLOYMENT   (evicts, within the PodDisruptionBudgets)\n");
        return 2;
    }
    char state[PATH_MAX], path[512], url[640], *resp = NULL;
    struct cli_control c;
    if (find("drain", sf, state, sizeof state, &c) < 0)
        return 1;
    snprintf(path, sizeof path, "/v1/drain/%s", argv[1]);
    snprintf(url, sizeof url, "%s%s", c.admin, path);
    int st = cli_http("POST", url, c.token, "{}", &resp, 10000);
    json_t *j = resp ? json_loads(resp, 0, NULL) : NULL;
    free(resp);
    if (st < 0 || !j) {
        fprintf(stderr, "strata drain: the control plane at %s does not answer properly (%d)\n", c.admin, st);
        json_decref(j);
        return 1;
    }
    long long ev = json_integer_value(json_object_get(j, "evicted")), bl = json_integer_value(json_object_get(j, "blocked"));
    const char *msg = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
    int rc = 0;
    if (st == 200) {
        printf("%s: %lld evicted (their Deployment replaces them)\n", argv[1], ev);
    } else if (st == 429) {
        fprintf(stderr, "strata drain: refused: %s (%lld evicted, %lld blocked)\n", msg ? msg : "", ev, bl);
        rc = 1;
    } else {
        fprintf(stderr, "strata drain: %s\n", msg ? msg : "failed");
        rc = 1;
    }
    json_decref(j);
    return rc;
}

/* strata why REQUEST_ID: every log line of every replica (proxies and
 * apps) that names the request, in time order, with what each proxy
 * decided: route, status, reason code, attempts, upstream, caller. */
struct hit {
    char ts[40];
    char *line;
    char replica[256], container[16];
};

static int hit_cmp(const void *a, const void *b)
{
    return strcmp(((const struct hit *)a)->ts, ((const struct hit *)b)->ts);
}

int cmd_why(int argc, char **argv)
{
    const char *sf = NULL;
    argc = take_state(argc, argv, &sf);
    if (argc != 2 || strlen(argv[1]) < 8) {
        fprintf(stderr, "usage: strata why REQUEST_ID   (the x-request-id of a response)\n");
        return 2;
    }
    const char *id = argv[1];
    char state[PATH_MAX], logs[PATH_MAX + 8];
    cli_state_dir(sf, state, sizeof state);
    snprintf(logs, sizeof logs, "%s/logs", state);
    DIR *d = opendir(logs);
    if (!d) {
        fprintf(stderr, "strata why: %s: %s\n", logs, strerror(errno));
        return 1;
    }
    struct hit *hits = NULL;
    size_t nhits = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        static const char *const files[] = { "proxy.log.1", "proxy.log", "app.log.1", "app.log" };
        for (size_t f = 0; f < 4; f++) {
            char path[PATH_MAX + 600];
            snprintf(path, sizeof path, "%s/%s/%s", logs, e->d_name, files[f]);
            FILE *fp = fopen(path, "re");
            if (!fp)
                continue;
            char *line = NULL;
            size_t lcap = 0;
            while (getline(&line, &lcap, fp) > 0) {
                if (!strstr(line, id))
                    continue;
                if (nhits == cap) {
                    cap = cap ? cap * 2 : 64;
                    struct hit *h = realloc(hits, cap * sizeof *h);
                    if (!h)
                        break;
                    hits = h;
                }
                struct hit *h = &hits[nhits++];
                json_t *j = json_loads(line, 0, NULL);
                snprintf(h->ts, sizeof h->ts, "%s", j ? json_string_value(json_object_get(j, "ts")) ?: "" : "");
                json_decref(j);
                h->line = strdup(line);
                snprintf(h->replica, sizeof h->replica, "%s", e->d_name);
                snprintf(h->container, sizeof h->container, "%s", files[f][0] == 'p' ? "proxy" : "app");
            }
            free(line);
            fclose(fp);
        }
    }
    closedir(d);
    if (!nhits) {
        fprintf(stderr, "strata why: no log line mentions %s (logs in %s)\n", id, logs);
        free(hits);
        return 1;
    }
    qsort(hits, nhits, sizeof *hits, hit_cmp);
    static const char *const keys[] = { "method", "path", "route", "status", "reason", "attempts", "upstream",
                                        "cluster", "peer_id", "duration_ms", "policy", "msg", NULL };
    for (size_t i = 0; i < nhits; i++) {
        json_t *j = json_loads(hits[i].line, 0, NULL);
        printf("%s  %-40s %-5s", hits[i].ts, hits[i].replica, hits[i].container);
        for (const char *const *k = keys; *k && j; k++) {
            json_t *v = json_object_get(j, *k);
            if (json_is_string(v) && *json_string_value(v))
                printf(" %s=%s", *k, json_string_value(v));
            else if (json_is_integer(v))
                printf(" %s=%lld", *k, json_integer_value(v));
        }
        if (!j)
            printf(" %s", hits[i].line);
        printf("\n");
        json_decref(j);
        free(hits[i].line);
    }
    free(hits);
    return 0;
}
