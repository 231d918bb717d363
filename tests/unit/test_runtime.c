/* The runtime (runtime.c) on real processes: log capture and rotation,
 * crash loops with a growing backoff and the CrashLoopBackOff phase, exit
 * statuses of signalled processes, graceful stop and SIGKILL after the
 * grace period, readiness and liveness probes against
 * strata-demo-service and against a closed port, a sidecar's exit, CPU
 * seconds from /proc, spawn failures, rt_free killing everything.
 *
 * Each test ends with rt_free, which kills and reaps whatever is left even
 * when a CHECK failed; a watchdog (SIGALRM) kills every process group seen
 * if the test hangs. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "control/runtime.h"
#include "core/log.h"
#include "core/net.h"

/* ---- fixture ------------------------------------------------------------- */

static char tmpdir[256];
static const char *build_dir;

#define MAX_SEEN 256
static volatile pid_t seen[MAX_SEEN];
static volatile int nseen;

static void remember(pid_t pid)
{
    if (pid <= 0)
        return;
    for (int i = 0; i < nseen; i++)
        if (seen[i] == pid)
            return;
    if (nseen < MAX_SEEN)
        seen[nseen++] = pid;
}

static void watchdog(int sig)
{
    (void)sig;
    static const char msg[] = "test_runtime: watchdog: killing every process group seen\n";
    if (write(2, msg, sizeof msg - 1) < 0) {
    }
    for (int i = 0; i < nseen; i++)
        kill(-seen[i], SIGKILL);
    _exit(2);
}

struct events {
    int ready_changes, unready_changes;
    bool ready;
    int nrestarts;
    char containers[32][16];
    int statuses[32];
    uint32_t delays[32];
    bool saw_crashloop;
    bool done;
    uint64_t done_ms;
};

static void on_ready(struct rt_replica *r, bool ready, void *arg)
{
    struct events *e = arg;
    e->ready = ready;
    if (ready)
        e->ready_changes++;
    else
        e->unready_changes++;
}

static void on_restart(struct rt_replica *r, const char *container, int status, uint32_t delay_ms, void *arg)
{
    struct events *e = arg;
    if (e->nrestarts < 32) {
        snprintf(e->containers[e->nrestarts], sizeof e->containers[0], "%s", container);
        e->statuses[e->nrestarts] = status;
        e->delays[e->nrestarts] = delay_ms;
    }
    e->nrestarts++;
}

static struct loop *L;
static struct http1_client *C;

static void on_done(void *arg)
{
    struct events *e = arg;
    e->done = true;
    e->done_ms = loop_now_ms(L);
}

struct fixture {
    struct rt *rt;
    struct rt_replica *r;
    struct events ev;
    char workdir[300];
};

static void fixture_start(struct fixture *f, const struct rt_config *cfg0)
{
    memset(f, 0, sizeof *f);
    struct rt_config cfg = { .backoff_base_ms = 100, .backoff_max_ms = 400 };
    if (cfg0)
        cfg = *cfg0;
    char logdir[300];
    snprintf(logdir, sizeof logdir, "%s/logs", tmpdir);
    cfg.log_dir = logdir;
    f->rt = rt_new(L, C, &cfg);
    CHECK(f->rt != NULL);
}

static const struct rt_replica_events *events_of(struct fixture *f)
{
    static struct rt_replica_events ev;
    ev = (struct rt_replica_events){ on_ready, on_restart, &f->ev };
    return &ev;
}

static void track(struct fixture *f)
{
    if (f->r && !f->ev.done) {
        remember(rt_replica_pid(f->r, "app"));
        remember(rt_replica_pid(f->r, "proxy"));
        if (!strcmp(rt_replica_phase(f->r), "CrashLoopBackOff"))
            f->ev.saw_crashloop = true;
    }
}

/* Runs the loop until cond(f) or ms pass. */
static bool run_until(struct fixture *f, bool (*cond)(struct fixture *), uint64_t ms)
{
    loop_update_time(L);
    uint64_t end = loop_now_ms(L) + ms;
    while (!cond(f)) {
        if (loop_now_ms(L) >= end)
            return false;
        loop_run_once(L, 20);
        track(f);
    }
    return true;
}

static void run_for(struct fixture *f, uint64_t ms)
{
    loop_update_time(L);
    uint64_t end = loop_now_ms(L) + ms;
    while (loop_now_ms(L) < end) {
        loop_run_once(L, 20);
        track(f);
    }
}

static void fixture_end(struct fixture *f)
{
    rt_free(f->rt); /* SIGKILL + waitpid: nothing survives a failed CHECK */
    f->rt = NULL;
    f->r = NULL;
}

static struct rt_replica_spec sh_spec(const char *id, const char *script, char **argv_buf, struct fixture *f)
{
    static char *envp[] = { "PATH=/usr/bin:/bin", NULL };
    argv_buf[0] = "/bin/sh";
    argv_buf[1] = "-c";
    argv_buf[2] = (char *)script;
    argv_buf[3] = NULL;
    snprintf(f->workdir, sizeof f->workdir, "%s/work/%s", tmpdir, id);
    return (struct rt_replica_spec){
        .id = id,
        .workdir = f->workdir,
        .app = { "app", argv_buf, envp },
        .probe_host = "127.0.0.1",
        .termination_grace_s = 5,
    };
}

static char *read_file(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "r");
    if (!fp)
        return NULL;
    char *buf = malloc(1 << 20);
    size_t n = buf ? fread(buf, 1, (1 << 20) - 1, fp) : 0;
    fclose(fp);
    if (buf)
        buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

static bool file_contains(const char *path, const char *needle)
{
    char *s = read_file(path, NULL);
    bool found = s && strstr(s, needle);
    free(s);
    return found;
}

/* True when a live (not zombie) process is in group pgid. Orphans of a
 * killed group are reaped by whoever adopts them, in their own time, so a
 * zombie member does not count. */
static bool group_has_live(pid_t pgid)
{
    DIR *d = opendir("/proc");
    bool live = false;
    struct dirent *e;
    while (d && !live && (e = readdir(d))) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        char path[300];
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        size_t n = 0;
        char *st = read_file(path, &n);
        char *p = st ? strrchr(st, ')') : NULL;
        char state = 0;
        int ppid = 0, pgrp = 0;
        if (p && sscanf(p + 1, " %c %d %d", &state, &ppid, &pgrp) == 3 && pgrp == pgid && state != 'Z')
            live = true;
        free(st);
    }
    if (d)
        closedir(d);
    return live;
}

static bool group_gone(pid_t pid)
{
    for (int i = 0; i < 100; i++) {
        if (!group_has_live(pid))
            return true;
        usleep(10000);
    }
    return false;
}

static int free_port(void)
{
    struct net_addr a;
    int fd = -1;
    if (net_addr_parse(str_from_cstr("127.0.0.1:0"), true, &a) < 0 || net_listen(&a, NULL, &fd) < 0)
        return 0;
    struct net_addr got;
    int port = net_local_addr(fd, &got) == 0 ? net_addr_port(&got) : 0;
    close(fd);
    return port;
}

/* ---- conditions ------------------------------------------------------------ */

static bool is_ready(struct fixture *f) { return f->ev.ready && rt_replica_ready(f->r); }
static bool is_unready(struct fixture *f) { return !f->ev.ready && !rt_replica_ready(f->r); }
static bool is_done(struct fixture *f) { return f->ev.done; }
static bool four_restarts(struct fixture *f) { return f->ev.nrestarts >= 4; }
static bool one_restart(struct fixture *f) { return f->ev.nrestarts >= 1; }
static bool two_restarts(struct fixture *f) { return f->ev.nrestarts >= 2; }
static bool app_running(struct fixture *f) { return rt_replica_pid(f->r, "app") > 0; }

static char log_path[512];
static bool log_has_hello(struct fixture *f) { return file_contains(log_path, "{\"msg\":\"second\"}"); }
static bool log_has_end(struct fixture *f) { return file_contains(log_path, "end\n"); }

/* ---- tests ----------------------------------------------------------------- */

static void test_log_capture_and_quick_stop(void)
{
    struct fixture f;
    fixture_start(&f, NULL);
    char *argv[4];
    struct rt_replica_spec s = sh_spec("cap-1", "echo hello; pwd; echo '{\"msg\":\"second\"}' >&2; exec sleep 100", argv, &f);
    f.r = rt_replica_start(f.rt, &s, events_of(&f));
    CHECK(f.r != NULL);
    if (!f.r)
        goto out;
    CHECK_STR(rt_replica_id(f.r), "cap-1");
    CHECK_INT(rt_replica_log_path(f.r, "app", log_path, sizeof log_path), 0);
    CHECK_INT(rt_replica_log_path(f.r, "nope", log_path + 0, 0), -ENOENT);
    char want[512];
    snprintf(want, sizeof want, "%s/logs/cap-1/app.log", tmpdir);
    CHECK_STR(log_path, want);
    CHECK(!f.ev.ready); /* reported after rt_replica_start returned, not inside it */
    CHECK(run_until(&f, log_has_hello, 5000));
    CHECK(run_until(&f, is_ready, 2000));
    CHECK_INT(f.ev.ready_changes, 1);
    CHECK_STR(rt_replica_phase(f.r), "Running");
    char *text = read_file(log_path, NULL);
    CHECK(text && strstr(text, "hello\n"));
    CHECK(text && strstr(text, f.workdir)); /* pwd: the working directory */
    free(text);
    pid_t pid = rt_replica_pid(f.r, "app");
    CHECK(pid > 0);
    CHECK(getpgid(pid) == pid); /* its own process group */
    rt_replica_stop(f.r, on_done, &f.ev);
    rt_replica_stop(f.r, on_done, &f.ev); /* idempotent */
    CHECK_STR(rt_replica_phase(f.r), "Terminating");
    CHECK(!f.ev.done); /* never inside stop */
    loop_update_time(L);
    uint64_t t0 = loop_now_ms(L);
    CHECK(run_until(&f, is_done, 3000));
    CHECK(f.ev.done_ms - t0 < 1000); /* SIGTERM was enough */
    CHECK_INT(f.ev.unready_changes, 1);
    CHECK(group_gone(pid));
    CHECK_INT(f.ev.nrestarts, 0);
out:
    fixture_end(&f);
}

static void test_crash_loop_backoff(void)
{
    struct fixture f;
    fixture_start(&f, NULL);
    char *argv[4];
    struct rt_replica_spec s = sh_spec("crash-1", "echo boom; exit 3", argv, &f);
    f.r = rt_replica_start(f.rt, &s, events_of(&f));
    CHECK(f.r != NULL);
    if (!f.r)
        goto out;
    CHECK(run_until(&f, four_restarts, 5000));
    CHECK(f.ev.nrestarts >= 4);
    for (int i = 0; i < 4; i++) {
        CHECK_STR(f.ev.containers[i], "app");
        CHECK_INT(f.ev.statuses[i], 3);
    }
    CHECK_INT(f.ev.delays[0], 100); /* base, ×2, capped at max */
    CHECK_INT(f.ev.delays[1], 200);
    CHECK_INT(f.ev.delays[2], 400);
    CHECK_INT(f.ev.delays[3], 400);
    CHECK(f.ev.saw_crashloop);
    CHECK(rt_replica_restarts(f.r) >= 4);
    CHECK_INT(rt_replica_container_restarts(f.r, "app"), rt_replica_restarts(f.r));
    CHECK(!f.ev.ready);
    CHECK_INT(f.ev.unready_changes, f.ev.ready_changes); /* ends unready */
    /* Every run wrote its line into the same file. */
    CHECK_INT(rt_replica_log_path(f.r, "app", log_path, sizeof log_path), 0);
    char *text = read_file(log_path, NULL);
    int lines = 0;
    for (char *p = text; p && (p = strstr(p, "boom\n")); p++)
        lines++;
    CHECK(lines >= 4);
    free(text);
    /* A stop while waiting to restart ends at once, with nothing to kill. */
    rt_replica_stop(f.r, on_done, &f.ev);
    CHECK(run_until(&f, is_done, 2000));
out:
    fixture_end(&f);
}

static void test_signal_exit_status(void)
{
    struct fixture f;
    fixture_start(&f, NULL);
    char *argv[4];
    struct rt_replica_spec s = sh_spec("sig-1", "kill -KILL $$", argv, &f);
    f.r = rt_replica_start(f.rt, &s, events_of(&f));
    CHECK(f.r != NULL);
    if (f.r) {
        CHECK(run_until(&f, one_restart, 3000));
        CHECK_INT(f.ev.statuses[0], 128 + SIGKILL);
        CHECK_STR(rt_replica_phase(f.r), "Starting"); /* one failure: not yet a crash loop */
    }
    fixture_end(&f);
}

static void test_rotation(void)
{
    struct fixture f;
    struct rt_config cfg = { .log_max_bytes = 1000, .log_keep = 2, .backoff_base_ms = 100 };
    fixture_start(&f, &cfg);
    char *argv[4];
    /* 100 lines of 48 bytes: 4,800 bytes through 1,000-byte files. */
    struct rt_replica_spec s = sh_spec("rot-1",
                                       "i=100; while [ $i -lt 200 ]; do "
                                       "echo \"line $i ......................................\"; i=$((i+1)); "
                                       "done; echo end; exec sleep 100",
                                       argv, &f);
    f.r = rt_replica_start(f.rt, &s, events_of(&f));
    CHECK(f.r != NULL);
    if (!f.r)
        goto out;
    CHECK_INT(rt_replica_log_path(f.r, "app", log_path, sizeof log_path), 0);
    CHECK(run_until(&f, log_has_end, 5000));
    const struct rt_stats *st = rt_get_stats(f.rt);
    CHECK(st->log_rotations >= 4);
    CHECK(st->log_files_dropped >= 2);
    CHECK_INT(st->log_bytes_dropped, 0);
    char p[600];
    for (int i = 0; i <= 2; i++) {
        if (i)
            snprintf(p, sizeof p, "%s.%d", log_path, i);
        else
            snprintf(p, sizeof p, "%s", log_path);
        size_t n = 0;
        char *text = read_file(p, &n);
        CHECK(text != NULL);
        CHECK(n <= 1000);
        if (i > 0)
            CHECK_INT(n, 960); /* 20 whole lines of 48 bytes: a 21st would pass 1,000 */
        CHECK(n == 0 || (text && text[n - 1] == '\n')); /* cut at line ends */
        free(text);
    }
    snprintf(p, sizeof p, "%s.3", log_path);
    CHECK(access(p, F_OK) < 0); /* log_keep = 2 */
    CHECK(file_contains(log_path, "line 199 ")); /* lines 180..199 and "end" */
    CHECK(file_contains(log_path, "line 180 "));
    snprintf(p, sizeof p, "%s.1", log_path);
    CHECK(file_contains(p, "line 160 ")); /* the newest rotated file: 160..179 */
    CHECK(file_contains(p, "line 179 "));
    snprintf(p, sizeof p, "%s.2", log_path);
    CHECK(file_contains(p, "line 140 ")); /* 100..139 dropped with the two oldest files */
    CHECK(!file_contains(p, "line 139 "));
out:
    fixture_end(&f);
}

/* A line written in two parts must not be cut by a rotation. */
static void test_rotation_whole_lines(void)
{
    struct fixture f;
    struct rt_config cfg = { .log_max_bytes = 100, .log_keep = 1, .backoff_base_ms = 100 };
    fixture_start(&f, &cfg);
    char *argv[4];
    struct rt_replica_spec s = sh_spec("rot-2",
                                       "echo AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA; "
                                       "printf BBBBBBBBBBBBBBBBBBBBBBBBBBBBBB; sleep 0.3; "
                                       "echo bbbbbbbbbbbbbbbbbbbbbbbbbbbbbb; echo end; exec sleep 100",
                                       argv, &f);
    f.r = rt_replica_start(f.rt, &s, events_of(&f));
    CHECK(f.r != NULL);
    if (!f.r)
        goto out;
    CHECK_INT(rt_replica_log_path(f.r, "app", log_path, sizeof log_path), 0);
    CHECK(run_until(&f, log_has_end, 5000));
    char *cur = read_file(log_path, NULL);
    CHECK_STR(cur, "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\nend\n");
    free(cur);
    char p[600];
    snprintf(p, sizeof p, "%s.1", log_path);
    cur = read_file(p, NULL);
    CHECK_STR(cur, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n");
    free(cur);
out:
    fixture_end(&f);
}

static void test_stop_after_grace(void)
{
    struct fixture f;
    fixture_start(&f, NULL);
    char *argv[4];
    struct rt_replica_spec s = sh_spec("term-1", "trap '' TERM; echo up; sleep 100; echo never", argv, &f);
    s.termination_grace_s = 1;
    f.r = rt_replica_start(f.rt, &s, events_of(&f));
    CHECK(f.r != NULL);
    if (!f.r)
        goto out;
    CHECK_INT(rt_replica_log_path(f.r, "app", log_path, sizeof log_path), 0);
    CHECK(run_until(&f, is_ready, 2000));
    run_for(&f, 200); /* the trap is set */
    pid_t pid = rt_replica_pid(f.r, "app");
    loop_update_time(L);
    uint64_t t0 = loop_now_ms(L);
    rt_replica_stop(f.r, on_done, &f.ev);
    CHECK(run_until(&f, is_done, 4000));
    CHECK(f.ev.done_ms - t0 >= 900);  /* SIGTERM ignored: waited the grace */
    CHECK(f.ev.done_ms - t0 < 2500);  /* then SIGKILL */
    CHECK(group_gone(pid));           /* sleep too (same group) */
    CHECK_INT(f.ev.nrestarts, 0);
out:
    fixture_end(&f);
}

static void test_liveness_restart(void)
{
    struct fixture f;
    fixture_start(&f, NULL);
    char *argv[4];
    struct rt_replica_spec s = sh_spec("live-1", "exec sleep 100", argv, &f);
    s.probe_port = free_port(); /* nothing listens there: every probe fails */
    s.termination_grace_s = 1;
    s.liveness = (struct model_probe){ .set = true, .path = "/healthz", .period_s = 1, .timeout_s = 1,
                                       .success_threshold = 1, .failure_threshold = 2 };
    f.r = rt_replica_start(f.rt, &s, events_of(&f));
    CHECK(f.r != NULL);
    if (!f.r)
        goto out;
    CHECK(run_until(&f, is_ready, 1000)); /* no readiness probe: ready once started */
    pid_t first = rt_replica_pid(f.r, "app");
    CHECK(run_until(&f, one_restart, 5000));
    CHECK_STR(f.ev.containers[0], "app");
    CHECK_INT(f.ev.statuses[0], 128 + SIGTERM); /* sleep dies of the SIGTERM */
    CHECK(!rt_replica_ready(f.r));
    CHECK(run_until(&f, app_running, 2000));
    CHECK(rt_replica_pid(f.r, "app") != first);
    CHECK(group_gone(first));
out:
    fixture_end(&f);
}

static bool flag_path_set;
static char flag_path[400];

static void test_probes_demo_service(void)
{
    struct fixture f;
    fixture_start(&f, NULL);
    char demo[600], listen[64], flag[450], sleeper[] = "/bin/sleep", hundred[] = "100";
    snprintf(demo, sizeof demo, "%s/strata-demo-service", build_dir);
    if (access(demo, X_OK) < 0) {
        fprintf(stderr, "skip: %s not built\n", demo);
        CHECK(access(demo, X_OK) == 0);
        goto out;
    }
    int port = free_port();
    snprintf(listen, sizeof listen, "LISTEN_ADDR=127.0.0.1:%d", port);
    snprintf(flag_path, sizeof flag_path, "%s/not-ready", tmpdir);
    flag_path_set = true;
    snprintf(flag, sizeof flag, "READY_FLAG_FILE=%s", flag_path);
    char *envp[] = { listen, flag, "OTEL_SERVICE_NAME=demo-rt", NULL };
    char *argv[] = { demo, NULL };
    char *side_argv[] = { sleeper, hundred, NULL };
    snprintf(f.workdir, sizeof f.workdir, "%s/work/demo-1", tmpdir);
    struct model_probe pr = { .set = true, .period_s = 1, .timeout_s = 1, .success_threshold = 1,
                              .failure_threshold = 1 };
    struct rt_replica_spec s = {
        .id = "demo-1",
        .workdir = f.workdir,
        .app = { "app", argv, envp },
        .sidecar = { "proxy", side_argv, envp },
        .probe_host = "127.0.0.1",
        .probe_port = port,
        .termination_grace_s = 5,
    };
    s.startup = pr;
    s.startup.path = "/healthz";
    s.startup.failure_threshold = 10;
    s.readiness = pr;
    s.readiness.path = "/readyz";
    s.liveness = pr;
    s.liveness.path = "/healthz";
    s.liveness.failure_threshold = 3;
    f.r = rt_replica_start(f.rt, &s, events_of(&f));
    CHECK(f.r != NULL);
    if (!f.r)
        goto out;
    CHECK(rt_replica_pid(f.r, "proxy") > 0);
    CHECK(rt_replica_pid(f.r, "app") > 0);
    CHECK(run_until(&f, is_ready, 6000));
    CHECK_STR(rt_replica_phase(f.r), "Running");
    char lp[512];
    CHECK_INT(rt_replica_log_path(f.r, "app", lp, sizeof lp), 0);
    CHECK(file_contains(lp, "port=")); /* the demo's stdout */

    /* Readiness follows /readyz. */
    int fd = open(flag_path, O_CREAT | O_WRONLY, 0644);
    CHECK(fd >= 0);
    if (fd >= 0)
        close(fd);
    CHECK(run_until(&f, is_unready, 4000));
    CHECK_STR(rt_replica_phase(f.r), "Running"); /* unready is not a phase */
    unlink(flag_path);
    CHECK(run_until(&f, is_ready, 4000));

    /* The app dies: unready at once, restarted, ready again. */
    pid_t app = rt_replica_pid(f.r, "app");
    double cpu = rt_replica_cpu_seconds(f.r);
    CHECK(cpu >= 0);
    kill(app, SIGKILL);
    CHECK(run_until(&f, is_unready, 1000));
    CHECK(run_until(&f, one_restart, 1000));
    CHECK_INT(f.ev.statuses[0], 128 + SIGKILL);
    CHECK(run_until(&f, is_ready, 6000));
    CHECK(rt_replica_pid(f.r, "app") != app);
    CHECK(rt_replica_cpu_seconds(f.r) >= cpu); /* monotonic across restarts */

    /* The sidecar dies: unready until it runs again. */
    kill(rt_replica_pid(f.r, "proxy"), SIGKILL);
    CHECK(run_until(&f, is_unready, 1000));
    CHECK(run_until(&f, two_restarts, 1000));
    CHECK_STR(f.ev.containers[1], "proxy");
    CHECK(run_until(&f, is_ready, 2000));
    CHECK_INT(rt_replica_container_restarts(f.r, "proxy"), 1);
    CHECK_INT(rt_replica_restarts(f.r), 2);

    /* The demo service drains on SIGTERM and exits: a quick stop. */
    pid_t side = rt_replica_pid(f.r, "proxy");
    app = rt_replica_pid(f.r, "app");
    loop_update_time(L);
    uint64_t t0 = loop_now_ms(L);
    rt_replica_stop(f.r, on_done, &f.ev);
    CHECK(run_until(&f, is_done, 6000));
    CHECK(f.ev.done_ms - t0 < 4000);
    CHECK(group_gone(app));
    CHECK(group_gone(side));
out:
    if (flag_path_set)
        unlink(flag_path);
    fixture_end(&f);
}

static void test_cpu_seconds(void)
{
    struct fixture f;
    fixture_start(&f, NULL);
    char *argv[4];
    struct rt_replica_spec s = sh_spec("cpu-1", "while :; do :; done", argv, &f);
    f.r = rt_replica_start(f.rt, &s, events_of(&f));
    CHECK(f.r != NULL);
    if (f.r) {
        run_for(&f, 700);
        double cpu = rt_replica_cpu_seconds(f.r);
        CHECK(cpu > 0.1);
        CHECK(cpu < 2.0);
    }
    fixture_end(&f);
}

static void test_spawn_failures(void)
{
    struct fixture f;
    fixture_start(&f, NULL);
    char *missing[] = { "/nonexistent/strata-no-such-binary", NULL };
    char *relative[] = { "sh", NULL };
    snprintf(f.workdir, sizeof f.workdir, "%s/work/bad", tmpdir);
    struct rt_replica_spec s = { .id = "bad-1", .workdir = f.workdir, .app = { "app", missing, NULL } };
    CHECK(rt_replica_start(f.rt, &s, NULL) == NULL);
    CHECK_INT(rt_get_stats(f.rt)->spawn_failures, 1);
    s.app.argv = relative;
    CHECK(rt_replica_start(f.rt, &s, NULL) == NULL);
    s.app.argv = missing;
    s.id = "../escape";
    CHECK(rt_replica_start(f.rt, &s, NULL) == NULL);
    /* A sidecar that starts but an app that cannot: the sidecar is reaped. */
    char *sleeper[] = { "/bin/sleep", "100", NULL };
    s.id = "bad-2";
    s.sidecar = (struct rt_container_spec){ "proxy", sleeper, NULL };
    CHECK(rt_replica_start(f.rt, &s, NULL) == NULL);
    CHECK_INT(rt_get_stats(f.rt)->spawned, 1);
    fixture_end(&f);
}

static void test_free_kills_everything(void)
{
    struct fixture f;
    fixture_start(&f, NULL);
    char *argv[4];
    struct rt_replica_spec s = sh_spec("free-1", "trap '' TERM; sleep 100 & sleep 100", argv, &f);
    f.r = rt_replica_start(f.rt, &s, events_of(&f));
    CHECK(f.r != NULL);
    pid_t pid = f.r ? rt_replica_pid(f.r, "app") : 0;
    run_for(&f, 100);
    fixture_end(&f);
    CHECK(pid > 0 && kill(pid, 0) < 0 && errno == ESRCH); /* reaped */
    CHECK(pid > 0 && group_gone(pid));
}

static void rm_rf(const char *path)
{
    DIR *d = opendir(path);
    if (!d) {
        unlink(path);
        return;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", path, e->d_name);
        rm_rf(p);
    }
    closedir(d);
    rmdir(path);
}

int main(void)
{
    build_dir = getenv("STRATA_BUILD_DIR");
    if (!build_dir || !*build_dir)
        build_dir = ".";
    snprintf(tmpdir, sizeof tmpdir, "/tmp/strata-test-runtime-XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    signal(SIGALRM, watchdog);
    alarm(100);
    log_init("test-runtime");
    log_set_level(LOG_LEVEL_WARN);
    L = loop_new();
    C = http1_client_new(L, &(struct http1_client_config){ 0 });
    if (!L || !C)
        return 1;
    RUN(test_log_capture_and_quick_stop);
    RUN(test_crash_loop_backoff);
    RUN(test_signal_exit_status);
    RUN(test_rotation);
    RUN(test_rotation_whole_lines);
    RUN(test_stop_after_grace);
    RUN(test_liveness_restart);
    RUN(test_probes_demo_service);
    RUN(test_cpu_seconds);
    RUN(test_spawn_failures);
    RUN(test_free_kills_everything);
    http1_client_free(C);
    for (int i = 0; i < 5; i++) /* the client frees its connections after a callback turn */
        loop_run_once(L, 0);
    loop_free(L);
    rm_rf(tmpdir);
    return check_done();
}
