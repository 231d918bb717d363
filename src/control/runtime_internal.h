/* runtime_internal.h — what runtime.c, runtime_log.c and runtime_probe.c
 * share. Not a contract for anyone else: include runtime.h. */
#ifndef STRATA_CONTROL_RUNTIME_INTERNAL_H
#define STRATA_CONTROL_RUNTIME_INTERNAL_H

#include "control/runtime.h"

/* 10 minutes without exiting resets the backoff (Kubernetes' value). */
#define RT_BACKOFF_RESET_MS (10u * 60u * 1000u)
/* 64 KiB per read: the pipe's default capacity, so one read empties it. */
#define RT_READ_CHUNK 65536
/* Reads per wakeup per pipe: a chatty process cannot starve the loop. */
#define RT_READS_PER_WAKEUP 4
/* 16 KiB: LOG_LINE_MAX, the longest line our own services write. A longer
 * unfinished line is written as it comes. */
#define RT_LINE_CARRY 16384
/* After every process of a stopping replica is reaped, how long its pipes
 * may stay open (a grandchild that left the process group holds them). */
#define RT_DRAIN_WAIT_MS 1000

struct rt {
    struct loop *loop;
    struct http1_client *client;
    struct rt_config cfg;       /* defaults applied; log_dir points to log_dir_buf */
    char *log_dir_buf;
    struct rt_replica *replicas; /* doubly linked */
    struct rt_stats stats;
    char *readbuf;              /* RT_READ_CHUNK: one loop, one buffer */
};

/* One container's log file, rotated by size. */
struct rt_log {
    char *path;                 /* LOGDIR/<replica>/<container>.log */
    int fd;                     /* -1 when closed */
    uint64_t size;
    char *carry;                /* an unfinished line, RT_LINE_CARRY bytes at most */
    size_t ncarry;
};

/* One container: a process, its pipe, its log, its restart state. */
struct rt_proc {
    struct rt_replica *r;
    char *name;
    char **argv, **envp;        /* deep copies; argv NULL: container absent */
    pid_t pid;                  /* 0: not running */
    int pidfd;
    struct loop_io pid_io;
    int out_fd;                 /* read end of the stdout/stderr pipe, -1 when closed */
    struct loop_io out_io;
    struct rt_log log;
    uint64_t started_ms;
    int consecutive;            /* exits since the last reset: the backoff exponent */
    int restarts;
    int last_exit;              /* exit code, or 128 + signal */
    bool is_killing;            /* liveness/startup kill in progress */
    bool is_waiting;            /* restart timer armed */
    double cpu_prev;            /* CPU seconds of earlier incarnations */
    struct loop_timer restart_timer;
    struct loop_timer kill_timer;
};

enum rt_probe_kind { RT_PROBE_STARTUP, RT_PROBE_READINESS, RT_PROBE_LIVENESS };

struct rt_probe {
    struct rt_replica *r;
    enum rt_probe_kind kind;
    struct model_probe p;       /* path owned */
    bool is_active;
    int successes, failures;    /* consecutive */
    struct loop_timer timer;
    struct http1_client_call *call;
};

struct rt_replica {
    int sidecar_port;           /* gate of the app's first start, 0: none */
    uint64_t gate_deadline_ms;
    struct rt *rt;
    struct rt_replica *prev, *next;
    char *id, *workdir, *probe_host;
    int probe_port;
    int grace_s;
    struct rt_replica_events ev;
    struct rt_proc app, sidecar;
    struct rt_probe probes[3];  /* by enum rt_probe_kind */
    bool is_started;            /* the startup probe passed (or there is none) */
    bool is_probe_ready;        /* the readiness probe's verdict */
    bool is_ready;              /* as last reported */
    bool is_stopping;
    void (*done)(void *arg);
    void *done_arg;
    struct loop_timer grace_timer;
    struct loop_timer drain_timer;
    struct loop_defer finish_defer;
    struct loop_defer ready_defer;
};

/* runtime_log.c */
int rt_log_open(struct rt_log *lg, const char *dir, const char *container);
void rt_log_close(struct rt_log *lg);
/* Writes the unfinished line kept back, if any. */
void rt_log_flush(struct rt *rt, struct rt_log *lg);
/* Appends bytes, rotating at cfg.log_max_bytes. */
void rt_log_append(struct rt *rt, struct rt_log *lg, const char *p, size_t n);
/* Reads what the pipe holds (at most RT_READS_PER_WAKEUP chunks unless
 * all), appends it; closes the pipe on EOF or error. Returns true if closed. */
bool rt_pipe_drain(struct rt_proc *c, bool all);
void rt_pipe_close(struct rt_proc *c);
int rt_mkdir_p(const char *path);

/* runtime_probe.c */
void rt_probe_init(struct rt_replica *r, enum rt_probe_kind kind, const struct model_probe *p);
void rt_probe_free(struct rt_probe *p);
/* Arms the probe for an app that started at started_ms (initialDelay counts from there). */
void rt_probe_start(struct rt_probe *p, uint64_t started_ms);
void rt_probe_stop(struct rt_probe *p);
const char *rt_probe_kind_name(enum rt_probe_kind kind);

/* runtime.c, called by the probes */
void rt_replica_update_ready(struct rt_replica *r);
void rt_replica_startup_passed(struct rt_replica *r);
/* Kills the app (SIGTERM, SIGKILL after the grace): it restarts under the backoff. */
void rt_replica_kill_app(struct rt_replica *r, const char *why);

#endif
