/* runtime.c — replicas as processes: spawn, watch, restart, stop.
 *
 * Spawning uses posix_spawn: glibc runs it as clone(CLONE_VM|CLONE_VFORK)
 * + execve, which is safe from a multi-threaded process (nothing but
 * async-signal-safe work happens in the child) and reports an execve
 * failure as its return value. The attributes give the child its own
 * process group, an empty signal mask (the parent blocks signals for
 * signalfd, and masks are inherited across execve) and default dispositions
 * for every signal (SIG_IGN is inherited too: SIGPIPE ignored by the parent
 * must not stay ignored in the app); the file actions put /dev/null on
 * stdin and the log pipe on stdout and stderr, change to the working
 * directory and close every other descriptor.
 *
 * Exits are watched through a pidfd on the loop. When it turns readable
 * the process is a zombie: its CPU time is read from /proc, whatever else
 * is left in its process group is killed (a container's processes end with
 * it), and waitid(P_PIDFD) reaps it. */
#include <errno.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "control/runtime_internal.h"
#include "core/log.h"

/* ---- small helpers ------------------------------------------------------ */

static void free_strv(char **v)
{
    for (size_t i = 0; v && v[i]; i++)
        free(v[i]);
    free(v);
}

static char **dup_strv(char *const *v)
{
    size_t n = 0;
    while (v && v[n])
        n++;
    char **out = calloc(n + 1, sizeof *out);
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        out[i] = strdup(v[i]);
        if (!out[i]) {
            free_strv(out);
            return NULL;
        }
    }
    return out;
}

static uint32_t backoff_delay(const struct rt *rt, int consecutive)
{
    uint64_t d = rt->cfg.backoff_base_ms;
    for (int i = 1; i < consecutive && d < rt->cfg.backoff_max_ms; i++)
        d *= 2;
    return d > rt->cfg.backoff_max_ms ? rt->cfg.backoff_max_ms : (uint32_t)d;
}

/* utime + stime of pid from /proc/<pid>/stat (fields 14 and 15), in seconds. */
static double proc_cpu_seconds(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* comm may hold spaces and parentheses */
    if (!p)
        return 0;
    unsigned long long utime = 0, stime = 0;
    /* after ")": state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime(14) stime(15) */
    if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2)
        return 0;
    long hz = sysconf(_SC_CLK_TCK);
    return hz > 0 ? (double)(utime + stime) / (double)hz : 0;
}

static bool proc_is_running(const struct rt_proc *c)
{
    return c->pid > 0;
}

static bool proc_is_present(const struct rt_proc *c)
{
    return c->argv != NULL;
}

/* ---- readiness and phase ------------------------------------------------ */

void rt_replica_update_ready(struct rt_replica *r)
{
    bool ready = !r->is_stopping && proc_is_running(&r->app) && !r->app.is_killing && r->is_started &&
                 (!r->probes[RT_PROBE_READINESS].p.set || r->is_probe_ready) &&
                 (!proc_is_present(&r->sidecar) || proc_is_running(&r->sidecar));
    if (ready == r->is_ready)
        return;
    r->is_ready = ready;
    log_info(ready ? "runtime: replica ready" : "runtime: replica not ready", LOG_STR("replica", r->id));
    if (r->ev.on_ready)
        r->ev.on_ready(r, ready, r->ev.arg);
}

static void start_main_probes(struct rt_replica *r)
{
    rt_probe_start(&r->probes[RT_PROBE_READINESS], r->app.started_ms);
    rt_probe_start(&r->probes[RT_PROBE_LIVENESS], r->app.started_ms);
}

void rt_replica_startup_passed(struct rt_replica *r)
{
    r->is_started = true;
    log_info("runtime: startup probe passed", LOG_STR("replica", r->id));
    start_main_probes(r);
    rt_replica_update_ready(r);
}

static void stop_probes(struct rt_replica *r)
{
    for (int i = 0; i < 3; i++)
        rt_probe_stop(&r->probes[i]);
}

/* ---- spawning ----------------------------------------------------------- */

static void on_pidfd(struct loop_io *io, unsigned events);
static void on_output(struct loop_io *io, unsigned events);

static int spawn_attrs(posix_spawnattr_t *attr, posix_spawn_file_actions_t *fa, int out_w, const char *workdir)
{
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    int rc = posix_spawnattr_setflags(attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                                POSIX_SPAWN_SETSIGDEF);
    if (!rc)
        rc = posix_spawnattr_setpgroup(attr, 0);
    if (!rc)
        rc = posix_spawnattr_setsigmask(attr, &none);
    if (!rc)
        rc = posix_spawnattr_setsigdefault(attr, &all);
    if (!rc)
        rc = posix_spawn_file_actions_addopen(fa, 0, "/dev/null", O_RDONLY, 0);
    if (!rc)
        rc = posix_spawn_file_actions_adddup2(fa, out_w, 1);
    if (!rc)
        rc = posix_spawn_file_actions_adddup2(fa, out_w, 2);
    if (!rc)
        rc = posix_spawn_file_actions_addchdir_np(fa, workdir);
    if (!rc)
        rc = posix_spawn_file_actions_addclosefrom_np(fa, 3);
    return -rc;
}

/* Starts c's process. 0, or a negative errno (logged; nothing left open). */
static int proc_spawn(struct rt_proc *c)
{
    struct rt_replica *r = c->r;
    struct rt *rt = r->rt;
    if (c->out_fd >= 0) { /* the previous incarnation's pipe: take what is left */
        rt_pipe_drain(c, true);
        rt_pipe_close(c);
    }
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return -errno;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_init(&attr);
    posix_spawn_file_actions_init(&fa);
    pid_t pid = 0;
    int rc = spawn_attrs(&attr, &fa, p[1], r->workdir);
    if (rc == 0)
        rc = -posix_spawn(&pid, c->argv[0], &fa, &attr, c->argv, c->envp);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    close(p[1]);
    int pidfd = -1;
    if (rc == 0) {
        pidfd = pidfd_open(pid, 0);
        if (pidfd < 0) {
            rc = -errno;
            kill(-pid, SIGKILL);
            kill(pid, SIGKILL);
            while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
            }
        }
    }
    if (rc < 0) {
        close(p[0]);
        rt->stats.spawn_failures++;
        log_error("runtime: cannot start process", LOG_STR("replica", r->id), LOG_STR("container", c->name),
                  LOG_STR("path", c->argv[0]), LOG_ERRNO("error", rc));
        return rc;
    }
    fcntl(p[0], F_SETFL, fcntl(p[0], F_GETFL) | O_NONBLOCK);
    c->out_fd = p[0];
    loop_io_init(rt->loop, &c->out_io, c->out_fd, on_output, c);
    loop_io_set(&c->out_io, LOOP_READ);
    c->pid = pid;
    c->pidfd = pidfd;
    loop_io_init(rt->loop, &c->pid_io, pidfd, on_pidfd, c);
    loop_io_set(&c->pid_io, LOOP_READ);
    c->started_ms = loop_now_ms(rt->loop);
    c->is_killing = false;
    rt->stats.spawned++;
    log_info("runtime: process started", LOG_STR("replica", r->id), LOG_STR("container", c->name),
             LOG_INT("pid", pid), LOG_STR("path", c->argv[0]));
    return 0;
}

/* The app (re)started: probes from the beginning. */
static void app_started(struct rt_replica *r, bool report)
{
    r->is_started = !r->probes[RT_PROBE_STARTUP].p.set;
    r->is_probe_ready = false;
    if (r->is_started)
        start_main_probes(r);
    else
        rt_probe_start(&r->probes[RT_PROBE_STARTUP], r->app.started_ms);
    if (report)
        rt_replica_update_ready(r);
}

static void ready_deferred(void *arg)
{
    rt_replica_update_ready(arg);
}

/* ---- exits and restarts ------------------------------------------------- */

static void check_stopped(struct rt_replica *r);
static void schedule_restart(struct rt_proc *c, int status);

static int exit_status(const siginfo_t *si)
{
    if (si->si_code == CLD_EXITED)
        return si->si_status;
    return 128 + si->si_status;
}

static void proc_reaped(struct rt_proc *c, int status)
{
    struct rt_replica *r = c->r;
    c->pid = 0;
    c->last_exit = status;
    loop_timer_stop(&c->kill_timer);
    bool was_killing = c->is_killing;
    c->is_killing = false;
    uint64_t ran = loop_now_ms(r->rt->loop) - c->started_ms;
    log_info("runtime: process exited", LOG_STR("replica", r->id), LOG_STR("container", c->name),
             LOG_INT("exit_status", status), LOG_UINT("ran_ms", ran), LOG_BOOL("killed_by_probe", was_killing),
             LOG_BOOL("stopping", r->is_stopping));
    if (c == &r->app) {
        stop_probes(r);
        r->is_started = false;
        r->is_probe_ready = false;
    }
    rt_replica_update_ready(r);
    if (r->is_stopping) {
        check_stopped(r);
        return;
    }
    if (ran >= RT_BACKOFF_RESET_MS)
        c->consecutive = 0;
    schedule_restart(c, status);
}

/* Does 127.0.0.1:port accept a connection? (loopback: answered at once) */
static bool port_open(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    bool ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

static void on_restart_timer(struct loop_timer *t)
{
    struct rt_proc *c = t->data;
    struct rt_replica *r = c->r;
    if (r->is_stopping) {
        c->is_waiting = false;
        return;
    }
    /* The app's first start waits for its sidecar's listener. */
    if (c == &r->app && r->sidecar_port > 0) {
        if (!port_open(r->sidecar_port) && loop_now_ms(r->rt->loop) < r->gate_deadline_ms) {
            loop_timer_start(&c->restart_timer, 10);
            return;
        }
        r->sidecar_port = 0;
    }
    c->is_waiting = false;
    if (proc_spawn(c) < 0) {
        schedule_restart(c, 127); /* execve failed: as a shell reports it */
        return;
    }
    if (c == &r->app)
        app_started(r, true);
    else
        rt_replica_update_ready(r);
}

static void schedule_restart(struct rt_proc *c, int status)
{
    struct rt_replica *r = c->r;
    c->consecutive++;
    c->restarts++;
    uint32_t delay = backoff_delay(r->rt, c->consecutive);
    c->is_waiting = true;
    if (loop_timer_start(&c->restart_timer, delay) < 0)
        log_error("runtime: cannot arm the restart timer", LOG_STR("replica", r->id), LOG_STR("container", c->name));
    log_warn("runtime: restarting container", LOG_STR("replica", r->id), LOG_STR("container", c->name),
             LOG_INT("exit_status", status), LOG_UINT("delay_ms", delay), LOG_INT("restarts", c->restarts),
             LOG_STR("phase", rt_replica_phase(r)));
    if (r->ev.on_restart)
        r->ev.on_restart(r, c->name, status, delay, r->ev.arg);
}

static void on_pidfd(struct loop_io *io, unsigned events)
{
    struct rt_proc *c = io->data;
    pid_t pid = c->pid;
    /* A zombie until waitid: its pid cannot be reused, so the CPU time and
     * the process group are still its own. */
    double cpu = proc_cpu_seconds(pid);
    kill(-pid, SIGKILL);
    siginfo_t si;
    memset(&si, 0, sizeof si);
    if (waitid((idtype_t)P_PIDFD, (id_t)c->pidfd, &si, WEXITED | WNOHANG) < 0) {
        if (errno == EINTR || errno == EAGAIN)
            return;
        log_error("runtime: waitid failed", LOG_STR("replica", c->r->id), LOG_STR("container", c->name),
                  LOG_ERRNO("error", errno));
        si.si_code = CLD_KILLED;
        si.si_status = SIGKILL;
    } else if (si.si_pid == 0) {
        return; /* not yet */
    }
    c->cpu_prev += cpu;
    loop_io_close(&c->pid_io);
    close(c->pidfd);
    c->pidfd = -1;
    proc_reaped(c, exit_status(&si));
}

static void on_output(struct loop_io *io, unsigned events)
{
    struct rt_proc *c = io->data;
    if (rt_pipe_drain(c, false) && c->r->is_stopping)
        check_stopped(c->r);
}

/* ---- kills -------------------------------------------------------------- */

static void on_kill_timer(struct loop_timer *t)
{
    struct rt_proc *c = t->data;
    if (proc_is_running(c)) {
        log_warn("runtime: grace period over, sending SIGKILL", LOG_STR("replica", c->r->id),
                 LOG_STR("container", c->name), LOG_INT("pid", c->pid));
        kill(-c->pid, SIGKILL);
    }
}

static uint64_t grace_ms(const struct rt_replica *r)
{
    return (uint64_t)r->grace_s * 1000;
}

void rt_replica_kill_app(struct rt_replica *r, const char *why)
{
    struct rt_proc *c = &r->app;
    stop_probes(r);
    if (!proc_is_running(c) || c->is_killing)
        return;
    log_warn("runtime: killing the app", LOG_STR("replica", r->id), LOG_STR("reason", why), LOG_INT("pid", c->pid),
             LOG_INT("grace_s", r->grace_s));
    c->is_killing = true;
    rt_replica_update_ready(r);
    kill(-c->pid, r->grace_s > 0 ? SIGTERM : SIGKILL);
    if (r->grace_s > 0)
        loop_timer_start(&c->kill_timer, grace_ms(r));
}

/* ---- stop and free ------------------------------------------------------ */

static void proc_release(struct rt_proc *c)
{
    loop_timer_stop(&c->restart_timer);
    loop_timer_stop(&c->kill_timer);
    rt_pipe_close(c);
    if (c->pidfd >= 0) {
        loop_io_close(&c->pid_io);
        close(c->pidfd);
        c->pidfd = -1;
    }
    rt_log_close(&c->log);
    free(c->name);
    free_strv(c->argv);
    free_strv(c->envp);
    c->name = NULL;
    c->argv = c->envp = NULL;
}

static void replica_free(struct rt_replica *r)
{
    struct rt *rt = r->rt;
    if (r->prev)
        r->prev->next = r->next;
    else if (rt->replicas == r)
        rt->replicas = r->next;
    if (r->next)
        r->next->prev = r->prev;
    for (int i = 0; i < 3; i++)
        rt_probe_free(&r->probes[i]);
    proc_release(&r->app);
    proc_release(&r->sidecar);
    loop_timer_stop(&r->grace_timer);
    loop_timer_stop(&r->drain_timer);
    loop_defer_cancel(rt->loop, &r->finish_defer);
    loop_defer_cancel(rt->loop, &r->ready_defer);
    free(r->id);
    free(r->workdir);
    free(r->probe_host);
    free(r);
}

static void finish(void *arg)
{
    struct rt_replica *r = arg;
    log_info("runtime: replica stopped", LOG_STR("replica", r->id));
    void (*done)(void *) = r->done;
    void *done_arg = r->done_arg;
    replica_free(r);
    if (done)
        done(done_arg);
}

static void check_stopped(struct rt_replica *r)
{
    struct rt_proc *cs[2] = { &r->app, &r->sidecar };
    bool reaped = true, drained = true;
    for (int i = 0; i < 2; i++) {
        reaped = reaped && !proc_is_running(cs[i]);
        drained = drained && cs[i]->out_fd < 0;
    }
    if (!reaped)
        return;
    loop_timer_stop(&r->grace_timer);
    if (!drained) {
        if (!loop_timer_is_active(&r->drain_timer))
            loop_timer_start(&r->drain_timer, RT_DRAIN_WAIT_MS);
        return;
    }
    loop_timer_stop(&r->drain_timer);
    loop_defer(r->rt->loop, &r->finish_defer, finish, r);
}

static void on_grace_timer(struct loop_timer *t)
{
    struct rt_replica *r = t->data;
    struct rt_proc *cs[2] = { &r->app, &r->sidecar };
    for (int i = 0; i < 2; i++)
        if (proc_is_running(cs[i])) {
            log_warn("runtime: grace period over, sending SIGKILL", LOG_STR("replica", r->id),
                     LOG_STR("container", cs[i]->name), LOG_INT("pid", cs[i]->pid));
            kill(-cs[i]->pid, SIGKILL);
        }
}

static void on_drain_timer(struct loop_timer *t)
{
    struct rt_replica *r = t->data;
    struct rt_proc *cs[2] = { &r->app, &r->sidecar };
    for (int i = 0; i < 2; i++)
        if (cs[i]->out_fd >= 0) {
            log_warn("runtime: output pipe still open after the process exited; closing it",
                     LOG_STR("replica", r->id), LOG_STR("container", cs[i]->name));
            rt_pipe_drain(cs[i], false);
            rt_pipe_close(cs[i]);
        }
    check_stopped(r);
}

void rt_replica_stop(struct rt_replica *r, void (*done)(void *arg), void *arg)
{
    if (r->is_stopping)
        return;
    r->is_stopping = true;
    r->done = done;
    r->done_arg = arg;
    log_info("runtime: stopping replica", LOG_STR("replica", r->id), LOG_INT("grace_s", r->grace_s));
    stop_probes(r);
    rt_replica_update_ready(r);
    struct rt_proc *cs[2] = { &r->app, &r->sidecar };
    for (int i = 0; i < 2; i++) {
        loop_timer_stop(&cs[i]->restart_timer);
        loop_timer_stop(&cs[i]->kill_timer);
        cs[i]->is_waiting = false;
    }
    /* Both at once: the sidecar keeps serving the app's outbound calls
     * until the app exits (docs/mesh.md), so no ordering is needed here. */
    int sig = r->grace_s > 0 ? SIGTERM : SIGKILL;
    for (int i = 0; i < 2; i++)
        if (proc_is_running(cs[i]))
            kill(-cs[i]->pid, sig);
    if (r->grace_s > 0)
        loop_timer_start(&r->grace_timer, grace_ms(r));
    check_stopped(r); /* done runs from a deferred callback, never in here */
}

/* Kills and reaps synchronously: rt_free's path. */
static void proc_kill_now(struct rt_proc *c)
{
    if (!proc_is_running(c))
        return;
    kill(-c->pid, SIGKILL);
    kill(c->pid, SIGKILL);
    while (waitpid(c->pid, NULL, 0) < 0 && errno == EINTR) {
    }
    c->pid = 0;
}

/* ---- public API --------------------------------------------------------- */

struct rt *rt_new(struct loop *l, struct http1_client *client, const struct rt_config *cfg)
{
    struct rt *rt = calloc(1, sizeof *rt);
    if (!rt)
        return NULL;
    rt->loop = l;
    rt->client = client;
    rt->cfg = *cfg;
    rt->log_dir_buf = strdup(cfg->log_dir ? cfg->log_dir : "logs");
    rt->readbuf = malloc(RT_READ_CHUNK);
    if (!rt->log_dir_buf || !rt->readbuf) {
        free(rt->log_dir_buf);
        free(rt->readbuf);
        free(rt);
        return NULL;
    }
    rt->cfg.log_dir = rt->log_dir_buf;
    if (!rt->cfg.log_max_bytes)
        rt->cfg.log_max_bytes = 10u << 20;
    if (rt->cfg.log_keep <= 0)
        rt->cfg.log_keep = 3;
    if (!rt->cfg.backoff_base_ms)
        rt->cfg.backoff_base_ms = 10000;
    if (!rt->cfg.backoff_max_ms)
        rt->cfg.backoff_max_ms = 300000;
    if (rt->cfg.backoff_max_ms < rt->cfg.backoff_base_ms)
        rt->cfg.backoff_max_ms = rt->cfg.backoff_base_ms;
    return rt;
}

void rt_free(struct rt *rt)
{
    if (!rt)
        return;
    while (rt->replicas) {
        struct rt_replica *r = rt->replicas;
        proc_kill_now(&r->app);
        proc_kill_now(&r->sidecar);
        log_info("runtime: replica killed", LOG_STR("replica", r->id));
        replica_free(r);
    }
    free(rt->readbuf);
    free(rt->log_dir_buf);
    free(rt);
}

const struct rt_stats *rt_get_stats(const struct rt *rt)
{
    return &rt->stats;
}

/* Makes c safe to release whatever happens next. */
static void proc_reset(struct rt_replica *r, struct rt_proc *c)
{
    c->r = r;
    c->pidfd = -1;
    c->out_fd = -1;
    c->log.fd = -1;
    loop_timer_init(r->rt->loop, &c->restart_timer, on_restart_timer, c);
    loop_timer_init(r->rt->loop, &c->kill_timer, on_kill_timer, c);
}

static int proc_init(struct rt_replica *r, struct rt_proc *c, const struct rt_container_spec *s,
                     const char *logdir, const char *default_name)
{
    if (!s->argv || !s->argv[0])
        return 0;
    if (s->argv[0][0] != '/') {
        log_error("runtime: argv[0] must be an absolute path", LOG_STR("replica", r->id),
                  LOG_STR("container", s->name), LOG_STR("path", s->argv[0]));
        return -EINVAL;
    }
    char *const empty[] = { NULL };
    const char *name = s->name && *s->name ? s->name : default_name;
    if (strchr(name, '/')) {
        log_error("runtime: a container name cannot hold '/'", LOG_STR("replica", r->id), LOG_STR("container", name));
        return -EINVAL;
    }
    c->name = strdup(name);
    c->argv = dup_strv(s->argv);
    c->envp = dup_strv(s->envp ? s->envp : empty);
    if (!c->name || !c->argv || !c->envp)
        return -ENOMEM;
    return rt_log_open(&c->log, logdir, c->name);
}

static bool valid_id(const char *id)
{
    if (!id || !*id || strlen(id) > 200 || !strcmp(id, ".") || !strcmp(id, ".."))
        return false;
    return strchr(id, '/') == NULL;
}

struct rt_replica *rt_replica_start(struct rt *rt, const struct rt_replica_spec *spec,
                                    const struct rt_replica_events *ev)
{
    if (!valid_id(spec->id) || !spec->workdir || !spec->app.argv || !spec->app.argv[0]) {
        log_error("runtime: invalid replica spec (id without '/', workdir and app.argv required)",
                  LOG_STR("replica", spec->id));
        return NULL;
    }
    struct rt_replica *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->rt = rt;
    r->id = strdup(spec->id);
    r->workdir = strdup(spec->workdir);
    r->probe_host = strdup(spec->probe_host ? spec->probe_host : "127.0.0.1");
    r->probe_port = spec->probe_port;
    r->grace_s = spec->termination_grace_s < 0 ? 30 : spec->termination_grace_s;
    if (ev)
        r->ev = *ev;
    loop_timer_init(rt->loop, &r->grace_timer, on_grace_timer, r);
    loop_timer_init(rt->loop, &r->drain_timer, on_drain_timer, r);
    rt_probe_init(r, RT_PROBE_STARTUP, &spec->startup);
    rt_probe_init(r, RT_PROBE_READINESS, &spec->readiness);
    rt_probe_init(r, RT_PROBE_LIVENESS, &spec->liveness);
    char *logdir = NULL;
    int rc = -ENOMEM;
    /* Linked first: replica_free unlinks, whatever fails below. */
    r->next = rt->replicas;
    if (rt->replicas)
        rt->replicas->prev = r;
    rt->replicas = r;
    proc_reset(r, &r->app);
    proc_reset(r, &r->sidecar);
    if (!r->id || !r->workdir || !r->probe_host || asprintf(&logdir, "%s/%s", rt->cfg.log_dir, r->id) < 0) {
        logdir = NULL;
        goto fail;
    }
    if ((rc = rt_mkdir_p(r->workdir)) < 0 || (rc = rt_mkdir_p(logdir)) < 0) {
        log_error("runtime: cannot create directory", LOG_STR("replica", r->id), LOG_STR("workdir", r->workdir),
                  LOG_STR("log_dir", logdir), LOG_ERRNO("error", rc));
        goto fail;
    }
    if ((rc = proc_init(r, &r->app, &spec->app, logdir, "app")) < 0 ||
        (rc = proc_init(r, &r->sidecar, &spec->sidecar, logdir, "proxy")) < 0)
        goto fail;
    if (proc_is_present(&r->sidecar) && !strcmp(r->sidecar.name, r->app.name)) {
        log_error("runtime: the app and the sidecar need different names", LOG_STR("replica", r->id));
        goto fail;
    }
    /* The sidecar first: the app's first outbound call must find its proxy
     * (with sidecar_port, the app waits until the proxy listens). */
    if (proc_is_present(&r->sidecar) && proc_spawn(&r->sidecar) < 0)
        goto fail;
    if (proc_is_present(&r->sidecar) && spec->sidecar_port > 0) {
        r->sidecar_port = spec->sidecar_port;
        r->gate_deadline_ms = loop_now_ms(rt->loop) + RT_SIDECAR_WAIT_MS;
        r->app.is_waiting = true;
        loop_timer_start(&r->app.restart_timer, 5);
    } else {
        if (proc_spawn(&r->app) < 0)
            goto fail;
        app_started(r, false);
    }
    free(logdir);
    /* The first readiness verdict is reported after this returns, never
     * inside it: the caller has not stored r yet. */
    loop_defer(rt->loop, &r->ready_defer, ready_deferred, r);
    return r;
fail:
    free(logdir);
    proc_kill_now(&r->sidecar);
    replica_free(r);
    return NULL;
}

const char *rt_replica_id(const struct rt_replica *r)
{
    return r->id;
}

bool rt_replica_ready(const struct rt_replica *r)
{
    return r->is_ready;
}

int rt_replica_restarts(const struct rt_replica *r)
{
    return r->app.restarts + r->sidecar.restarts;
}

static const struct rt_proc *find_proc(const struct rt_replica *r, const char *container)
{
    if (!container)
        return NULL;
    if (r->app.name && !strcmp(r->app.name, container))
        return &r->app;
    if (r->sidecar.name && !strcmp(r->sidecar.name, container))
        return &r->sidecar;
    return NULL;
}

int rt_replica_container_restarts(const struct rt_replica *r, const char *container)
{
    const struct rt_proc *c = find_proc(r, container);
    return c ? c->restarts : -1;
}

const char *rt_replica_phase(const struct rt_replica *r)
{
    if (r->is_stopping)
        return "Terminating";
    const struct rt_proc *cs[2] = { &r->app, &r->sidecar };
    for (int i = 0; i < 2; i++)
        if (cs[i]->is_waiting && cs[i]->consecutive >= 2)
            return "CrashLoopBackOff";
    bool sidecar_ok = !proc_is_present(&r->sidecar) || proc_is_running(&r->sidecar);
    if (proc_is_running(&r->app) && r->is_started && sidecar_ok)
        return "Running";
    return "Starting";
}

pid_t rt_replica_pid(const struct rt_replica *r, const char *container)
{
    const struct rt_proc *c = find_proc(r, container);
    return c ? c->pid : 0;
}

double rt_replica_cpu_seconds(const struct rt_replica *r)
{
    double s = r->app.cpu_prev;
    if (proc_is_running(&r->app))
        s += proc_cpu_seconds(r->app.pid);
    return s;
}

int rt_replica_log_path(const struct rt_replica *r, const char *container, char *dst, size_t n)
{
    const struct rt_proc *c = find_proc(r, container);
    if (!c || !c->log.path)
        return -ENOENT;
    size_t len = strlen(c->log.path);
    if (len >= n)
        return -ENAMETOOLONG;
    memcpy(dst, c->log.path, len + 1);
    return 0;
}
