/* logs.c — strata logs WORKLOAD [-f] [--level L] [--trace-id ID] [--since D] [--replica R] [--container C]:
 * the captured JSON lines of every replica of a workload, from the state
 * directory (STATE/logs/<replica>/<container>.log and its rotations). */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"

struct filter {
    int min_level; /* 0 debug, 1 info, 2 warn, 3 error */
    const char *trace_id;
    char since[32]; /* RFC 3339 UTC lower bound on "ts", "" for none */
};

static int level_rank(const char *l)
{
    static const char *const names[] = { "debug", "info", "warn", "error" };
    for (int i = 0; i < 4; i++)
        if (l && !strcmp(l, names[i]))
            return i;
    if (l && !strcmp(l, "warning"))
        return 2;
    return -1;
}

/* "90s", "5m", "2h", "1d" → seconds. */
static long parse_since(const char *s)
{
    char *end;
    long n = strtol(s, &end, 10);
    if (end == s || n < 0)
        return -1;
    long mul = !strcmp(end, "s") ? 1 : !strcmp(end, "m") ? 60 : !strcmp(end, "h") ? 3600 : !strcmp(end, "d") ? 86400 : -1;
    return mul < 0 ? -1 : n * mul;
}

static bool keep(const char *line, const struct filter *f)
{
    if (f->min_level <= 0 && !f->trace_id && !*f->since)
        return true;
    json_t *j = json_loads(line, 0, NULL);
    if (!j) /* not JSON (a crash message): keep unless filtering by trace */
        return !f->trace_id && f->min_level <= 0;
    bool ok = true;
    int rank = level_rank(json_string_value(json_object_get(j, "level")));
    if (f->min_level > 0 && rank >= 0 && rank < f->min_level)
        ok = false;
    const char *t = json_string_value(json_object_get(j, "trace_id"));
    if (f->trace_id && (!t || strcmp(t, f->trace_id)))
        ok = false;
    const char *ts = json_string_value(json_object_get(j, "ts"));
    if (*f->since && ts && strcmp(ts, f->since) < 0)
        ok = false;
    json_decref(j);
    return ok;
}

static void print_file(const char *path, const char *replica, const struct filter *f, long *offset)
{
    FILE *fp = fopen(path, "re");
    if (!fp)
        return;
    if (offset && *offset > 0)
        fseek(fp, *offset, SEEK_SET);
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, fp)) > 0) {
        if (line[n - 1] != '\n' && offset) /* a partial last line: next time */
            break;
        if (offset)
            *offset = ftell(fp);
        if (keep(line, f))
            printf("%s %s%s", replica, line, line[n - 1] == '\n' ? "" : "\n");
    }
    free(line);
    fclose(fp);
}

int cmd_logs(int argc, char **argv)
{
    const char *workload = NULL, *state = NULL, *container = "app", *replica = NULL;
    struct filter f = { 0 };
    bool follow = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has = i + 1 < argc;
        if (!strcmp(a, "-f") || !strcmp(a, "--follow"))
            follow = true;
        else if (!strcmp(a, "--level") && has) {
            if ((f.min_level = level_rank(argv[++i])) < 0) {
                fprintf(stderr, "strata logs: --level: expected debug, info, warn or error\n");
                return 2;
            }
        } else if (!strcmp(a, "--trace-id") && has)
            f.trace_id = argv[++i];
        else if (!strcmp(a, "--container") && has)
            container = argv[++i];
        else if (!strcmp(a, "--replica") && has)
            replica = argv[++i];
        else if (!strcmp(a, "--state") && has)
            state = argv[++i];
        else if (!strcmp(a, "--since") && has) {
            long s = parse_since(argv[++i]);
            if (s < 0) {
                fprintf(stderr, "strata logs: --since: expected a duration like 90s, 5m, 2h, 1d\n");
                return 2;
            }
            time_t t = time(NULL) - s;
            struct tm tm;
            gmtime_r(&t, &tm);
            strftime(f.since, sizeof f.since, "%Y-%m-%dT%H:%M:%S", &tm);
        } else if (a[0] != '-' && !workload)
            workload = a;
        else {
            fprintf(stderr, "strata logs: unexpected argument %s\n"
                            "usage: strata logs WORKLOAD [-f] [--level L] [--trace-id ID] [--since D] [--replica R] [--container app|proxy]\n",
                    a);
            return 2;
        }
    }
    if (!workload) {
        fprintf(stderr, "usage: strata logs WORKLOAD [-f] [--level L] [--trace-id ID] [--since D]\n");
        return 2;
    }
    char sd[PATH_MAX], logs[PATH_MAX + 8];
    cli_state_dir(state, sd, sizeof sd);
    snprintf(logs, sizeof logs, "%s/logs", sd);
    size_t wl = strlen(workload);
    long offsets[256] = { 0 };
    char names[256][256];
    int nrep = 0;
    for (bool first = true;; first = false) {
        DIR *d = opendir(logs);
        if (!d) {
            fprintf(stderr, "strata logs: %s: %s\n", logs, strerror(errno));
            return 1;
        }
        struct dirent *e;
        while ((e = readdir(d))) {
            /* Replicas are named WORKLOAD-<template hash>-<suffix>. */
            if (strncmp(e->d_name, workload, wl) || e->d_name[wl] != '-' || strchr(e->d_name + wl + 1, '-') == NULL ||
                strchr(strchr(e->d_name + wl + 1, '-') + 1, '-') || (replica && strcmp(e->d_name, replica)))
                continue;
            int k = 0;
            while (k < nrep && strcmp(names[k], e->d_name))
                k++;
            if (k == nrep) {
                if (nrep == 256)
                    continue;
                snprintf(names[nrep++], sizeof names[0], "%s", e->d_name);
            }
            char path[PATH_MAX + 600];
            if (first) { /* the rotated files first, oldest first */
                for (int r = 9; r >= 1; r--) {
                    snprintf(path, sizeof path, "%s/%s/%s.log.%d", logs, e->d_name, container, r);
                    if (access(path, R_OK) == 0)
                        print_file(path, e->d_name, &f, NULL);
                }
            }
            snprintf(path, sizeof path, "%s/%s/%s.log", logs, e->d_name, container);
            print_file(path, e->d_name, &f, &offsets[k]);
        }
        closedir(d);
        fflush(stdout);
        if (!follow)
            break;
        usleep(500 * 1000);
    }
    if (nrep == 0) {
        fprintf(stderr, "strata logs: no replica of \"%s\" has logs in %s\n", workload, logs);
        return 1;
    }
    return 0;
}
