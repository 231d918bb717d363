/* runtime.h — what kubelet does, for one machine: processes, logs, probes,
 * restarts, termination.
 *
 * A *replica* is one pod: the app process and (optionally) its sidecar
 * proxy, with a working directory and log files in the state directory.
 *   - start: the sidecar first, then the app (the app's first outbound call
 *     must find its proxy);
 *   - probes (httpGet, as Kubernetes: initialDelaySeconds, periodSeconds,
 *     timeoutSeconds, successThreshold, failureThreshold) against the app's
 *     loopback address; startup gates liveness and readiness; readiness
 *     changes are reported; liveness failure restarts the app;
 *   - restarts: the app (or sidecar) exiting is restarted after an
 *     exponential backoff (base, ×2 per restart, capped; reset after the
 *     process ran 10 min without exiting), as CrashLoopBackOff; each restart
 *     counted;
 *   - stop: SIGTERM to the app and the sidecar together (the sidecar keeps
 *     serving the app's outbound calls until the app exits, then drains: see
 *     docs/mesh.md), SIGKILL to whatever is left after the grace period;
 *     done is called when both have exited.
 * Processes are watched through pidfds on the loop (no SIGCHLD handling);
 * children start with an empty signal mask and in their own process group.
 * stdout and stderr of each process go through a pipe into
 * LOGDIR/<replica>/<container>.log, rotated at log_max_bytes (kept:
 * .1 … .log_keep, oldest dropped, drops counted).
 * Thread: one loop; every call on it. */
#ifndef STRATA_CONTROL_RUNTIME_H
#define STRATA_CONTROL_RUNTIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "control/model.h"
#include "core/http1_client.h"
#include "core/loop.h"

struct rt;
struct rt_replica;

#define RT_SIDECAR_WAIT_MS 5000

struct rt_config {
    const char *log_dir;           /* STATE/logs */
    uint64_t log_max_bytes;        /* 0 → 10 MiB */
    int log_keep;                  /* rotated files kept; 0 → 3 */
    uint32_t backoff_base_ms;      /* 0 → 10,000 (Kubernetes); tests use less */
    uint32_t backoff_max_ms;       /* 0 → 300,000 */
};

struct rt *rt_new(struct loop *l, struct http1_client *client, const struct rt_config *cfg);
/* Kills (SIGKILL) every process still running and waits for them. */
void rt_free(struct rt *rt);

struct rt_container_spec {
    const char *name;               /* "app", "proxy" */
    char *const *argv;              /* argv[0]: absolute path */
    char *const *envp;              /* the whole environment */
};

struct rt_replica_spec {
    const char *id;                 /* "order-3f2a9c-1": unique, names the log dir */
    const char *workdir;            /* created if missing; the processes' cwd */
    struct rt_container_spec app;
    struct rt_container_spec sidecar; /* argv NULL: no sidecar */
    int sidecar_port;               /* > 0: the app starts once 127.0.0.1:sidecar_port accepts connections
                                       (the sidecar's outbound listener: the app's first call finds it),
                                       or after RT_SIDECAR_WAIT_MS anyway */
    const char *probe_host;         /* "127.0.0.1" */
    int probe_port;                 /* the app's real port (manifest ports are remapped) */
    struct model_probe startup, readiness, liveness; /* .set false: none. No readiness probe: ready once started */
    int termination_grace_s;
};

struct rt_replica_events {
    /* The replica's readiness changed (readiness probe, or process exit). */
    void (*on_ready)(struct rt_replica *r, bool ready, void *arg);
    /* A container exited and will be restarted after delay_ms. exit_status:
     * the exit code, or 128 + the signal number when a signal killed it
     * (the shell's convention: 137 = SIGKILL); 127 when it could not be
     * started again (execve failed). Not called for exits during stop. */
    void (*on_restart)(struct rt_replica *r, const char *container, int exit_status, uint32_t delay_ms, void *arg);
    void *arg;
};

/* Starts a replica (spec is copied). NULL on failure (logged). */
struct rt_replica *rt_replica_start(struct rt *rt, const struct rt_replica_spec *spec,
                                    const struct rt_replica_events *ev);
/* Graceful stop; done runs once every process has exited, then the replica
 * is freed. Idempotent. */
void rt_replica_stop(struct rt_replica *r, void (*done)(void *arg), void *arg);

const char *rt_replica_id(const struct rt_replica *r);
bool rt_replica_ready(const struct rt_replica *r);
int rt_replica_restarts(const struct rt_replica *r);
/* "Starting", "Running", "CrashLoopBackOff", "Terminating" */
const char *rt_replica_phase(const struct rt_replica *r);
pid_t rt_replica_pid(const struct rt_replica *r, const char *container);
/* CPU seconds used by the app process so far (from /proc), for the HPA. */
double rt_replica_cpu_seconds(const struct rt_replica *r);

/* --- additions (runtime.c) --- */

/* Counters over every replica of the runtime, for metrics and tests. */
struct rt_stats {
    uint64_t spawned;            /* processes started */
    uint64_t spawn_failures;     /* posix_spawn/pidfd_open failures */
    uint64_t log_rotations;
    uint64_t log_files_dropped;  /* rotated files deleted past log_keep */
    uint64_t log_bytes_dropped;  /* bytes that could not be written (disk full…) */
};
const struct rt_stats *rt_get_stats(const struct rt *rt);

/* The current log file of a container: LOGDIR/<replica>/<container>.log;
 * rotated ones are that path + ".1" (newest) … "." log_keep (oldest).
 * Writes it into dst (NUL-terminated); -ENOENT for an unknown container,
 * -ENAMETOOLONG when dst is too small. */
int rt_replica_log_path(const struct rt_replica *r, const char *container, char *dst, size_t n);
/* Restarts of one container ("app" or the sidecar's name); -1 if unknown. */
int rt_replica_container_restarts(const struct rt_replica *r, const char *container);

#endif
