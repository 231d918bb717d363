/* loop.h — the event loop: one per thread, on epoll.
 *
 * Handles are embedded in their owner's struct (no allocation per handle):
 *   - loop_io:     readiness of one fd (level-triggered; changes are batched
 *                  and applied once per iteration, before epoll_wait);
 *   - loop_timer:  one-shot timers in a binary heap (add/cancel O(log n),
 *                  tens of thousands cost nothing per tick);
 *   - loop_defer:  callbacks run after the current batch of events; this is
 *                  where handles are freed (never inside their own callback);
 *   - loop_signal: signals through signalfd, delivered as ordinary events.
 * One iteration: apply fd changes → epoll_wait → dispatch events (at most
 * LOOP_MAX_EVENTS) → expired timers → deferred callbacks.
 *
 * Every function here must be called from the loop's own thread, except
 * loop_post() and loop_stop_async(), which are safe from any thread.
 * Errors are negative errno values. */
#ifndef STRATA_LOOP_H
#define STRATA_LOOP_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct loop;

enum {
    LOOP_READ = 1,
    LOOP_WRITE = 2,
    LOOP_ERROR = 4, /* EPOLLERR/EPOLLHUP: delivered with READ|WRITE so the next I/O call sees it */
};

struct loop_io;
typedef void (*loop_io_cb)(struct loop_io *io, unsigned events);

struct loop_io {
    struct loop *loop;
    int fd;
    loop_io_cb cb;
    void *data;
    unsigned want;     /* events the owner asked for */
    unsigned active;   /* events registered with epoll */
    int change_idx;    /* slot in the pending-change list, -1 if none */
    bool is_closed;
};

struct loop_timer;
typedef void (*loop_timer_cb)(struct loop_timer *t);

struct loop_timer {
    struct loop *loop;
    uint64_t deadline_ms; /* monotonic */
    size_t heap_idx;      /* SIZE_MAX when not armed */
    loop_timer_cb cb;
    void *data;
};

struct loop_defer;
typedef void (*loop_defer_cb)(void *data);

struct loop_defer {
    struct loop_defer *next;
    loop_defer_cb cb;
    void *data;
    bool is_pending;
};

struct loop_signal;
typedef void (*loop_signal_cb)(struct loop_signal *s, int signo);

struct loop_signal {
    struct loop *loop;
    struct loop_signal *next;
    int signo;
    loop_signal_cb cb;
    void *data;
};

/* Creates a loop. Returns NULL on failure (errno set). */
struct loop *loop_new(void);
/* Frees the loop. Handles must have been closed/stopped first. */
void loop_free(struct loop *l);

/* Runs until loop_stop(). Returns 0. */
int loop_run(struct loop *l);
/* One iteration, waiting at most timeout_ms (-1: until an event or timer). */
int loop_run_once(struct loop *l, int timeout_ms);
/* Makes loop_run return after the current iteration. */
void loop_stop(struct loop *l);
/* loop_stop from another thread. */
void loop_stop_async(struct loop *l);
bool loop_is_stopping(const struct loop *l);

/* Monotonic milliseconds, cached once per iteration (no syscall per call). */
uint64_t loop_now_ms(const struct loop *l);
/* Refreshes the cached time (after long work inside a callback). */
void loop_update_time(struct loop *l);
/* Wall-clock nanoseconds since the epoch (for logs, spans); a syscall. */
uint64_t loop_wall_ns(void);

/* Watches fd (set non-blocking by the caller). No events until loop_io_set. */
void loop_io_init(struct loop *l, struct loop_io *io, int fd, loop_io_cb cb, void *data);
/* Sets the wanted events (LOOP_READ|LOOP_WRITE, or 0). Applied before the
 * next wait; cheap to call repeatedly. */
void loop_io_set(struct loop_io *io, unsigned events);
/* Stops watching now (before the owner closes fd). Pending events for this
 * handle in the current batch are dropped, so its memory may be freed as
 * soon as this returns, even from a callback of the same batch. Does not
 * close the fd. */
void loop_io_close(struct loop_io *io);

void loop_timer_init(struct loop *l, struct loop_timer *t, loop_timer_cb cb, void *data);
/* (Re)arms the timer to fire once after ms milliseconds. -ENOMEM if the
 * heap cannot grow. */
int loop_timer_start(struct loop_timer *t, uint64_t ms);
void loop_timer_stop(struct loop_timer *t);
static inline bool loop_timer_is_active(const struct loop_timer *t) { return t->heap_idx != SIZE_MAX; }

/* Runs cb(data) after the current batch of events. A pending defer is not
 * queued twice. */
void loop_defer(struct loop *l, struct loop_defer *d, loop_defer_cb cb, void *data);
/* Removes a pending defer (O(pending)); no-op if not pending. */
void loop_defer_cancel(struct loop *l, struct loop_defer *d);
/* Runs cb(data) on the loop's thread; safe from any thread. -ENOMEM. */
int loop_post(struct loop *l, loop_defer_cb cb, void *data);

/* Delivers signo to cb through signalfd. Blocks signo in the calling thread:
 * call before starting other threads (they inherit the mask). */
int loop_signal_start(struct loop *l, struct loop_signal *s, int signo, loop_signal_cb cb, void *data);
void loop_signal_stop(struct loop_signal *s);

/* A worker thread that runs a loop, as the main thread sees it. */
struct loop_thread {
    pthread_t id;
    bool is_joined; /* set by loop_run_until_joined; read it to skip ended workers */
};

/* Runs l (the main thread's loop: signals, posts) until each of the n
 * threads has ended, joining each exactly once (a joined thread's id means
 * nothing afterwards, so it is never asked again). Checks every 100 ms. */
void loop_run_until_joined(struct loop *l, struct loop_thread *threads, size_t n);

/* Counters for tests and metrics. */
size_t loop_timer_count(const struct loop *l);

#endif
