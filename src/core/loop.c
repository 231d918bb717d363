#include "core/loop.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

/* 256 events per wakeup: enough to amortise epoll_wait, small enough that
 * timers and deferred work are never starved by one busy batch. */
#define LOOP_MAX_EVENTS 256

struct post_node {
    struct post_node *next;
    loop_defer_cb cb;
    void *data;
};

struct loop {
    int epfd;
    bool is_stopping;
    uint64_t now_ms;

    struct loop_io **changes;
    int nchanges, changes_cap;

    struct loop_timer **heap;
    size_t nheap, heap_cap;

    struct loop_defer *defer_head, *defer_tail;
    size_t ndefer;

    /* The batch being dispatched: a handle closed meanwhile has its later
     * events in it removed, so that its owner may free it at once. */
    struct epoll_event *batch;
    int batch_n, batch_pos;

    /* cross-thread posts */
    int wakefd;
    struct loop_io wake_io;
    pthread_mutex_t post_lock;
    struct post_node *posts;

    /* signals */
    int sigfd;
    struct loop_io sig_io;
    sigset_t sigmask;
    struct loop_signal *signals;
};

static uint64_t monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t loop_wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t loop_now_ms(const struct loop *l) { return l->now_ms; }
void loop_update_time(struct loop *l) { l->now_ms = monotonic_ms(); }
size_t loop_timer_count(const struct loop *l) { return l->nheap; }
bool loop_is_stopping(const struct loop *l) { return l->is_stopping; }
void loop_stop(struct loop *l) { l->is_stopping = true; }

static void wake_cb(struct loop_io *io, unsigned events)
{
    struct loop *l = io->data;
    uint64_t v;
    (void)events;
    while (read(l->wakefd, &v, sizeof v) > 0) {
    }
    pthread_mutex_lock(&l->post_lock);
    struct post_node *n = l->posts;
    l->posts = NULL;
    pthread_mutex_unlock(&l->post_lock);
    /* The list is LIFO; reverse to run posts in the order they were made. */
    struct post_node *rev = NULL;
    while (n) {
        struct post_node *next = n->next;
        n->next = rev;
        rev = n;
        n = next;
    }
    while (rev) {
        struct post_node *next = rev->next;
        rev->cb(rev->data);
        free(rev);
        rev = next;
    }
}

struct loop *loop_new(void)
{
    struct loop *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    l->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    l->sigfd = -1;
    if (l->epfd < 0 || l->wakefd < 0) {
        int e = errno;
        if (l->epfd >= 0)
            close(l->epfd);
        if (l->wakefd >= 0)
            close(l->wakefd);
        free(l);
        errno = e;
        return NULL;
    }
    pthread_mutex_init(&l->post_lock, NULL);
    sigemptyset(&l->sigmask);
    l->now_ms = monotonic_ms();
    loop_io_init(l, &l->wake_io, l->wakefd, wake_cb, l);
    loop_io_set(&l->wake_io, LOOP_READ);
    return l;
}

void loop_free(struct loop *l)
{
    if (!l)
        return;
    loop_io_close(&l->wake_io);
    close(l->wakefd);
    if (l->sigfd >= 0) {
        loop_io_close(&l->sig_io);
        close(l->sigfd);
    }
    struct post_node *n = l->posts;
    while (n) {
        struct post_node *next = n->next;
        free(n);
        n = next;
    }
    pthread_mutex_destroy(&l->post_lock);
    close(l->epfd);
    free(l->changes);
    free(l->heap);
    free(l);
}

/* ---- fd readiness --------------------------------------------------- */

void loop_io_init(struct loop *l, struct loop_io *io, int fd, loop_io_cb cb, void *data)
{
    io->loop = l;
    io->fd = fd;
    io->cb = cb;
    io->data = data;
    io->want = 0;
    io->active = 0;
    io->change_idx = -1;
    io->is_closed = false;
}

void loop_io_set(struct loop_io *io, unsigned events)
{
    struct loop *l = io->loop;

    events &= LOOP_READ | LOOP_WRITE;
    io->want = events;
    if (io->change_idx >= 0 || io->is_closed)
        return;
    if (events == io->active)
        return;
    if (l->nchanges == l->changes_cap) {
        int cap = l->changes_cap ? l->changes_cap * 2 : 64;
        struct loop_io **p = realloc(l->changes, (size_t)cap * sizeof *p);
        if (!p) {
            /* No room to batch: apply now. */
            struct epoll_event ev = { .events = (events & LOOP_READ ? EPOLLIN : 0u) |
                                                (events & LOOP_WRITE ? EPOLLOUT : 0u),
                                      .data.ptr = io };
            int op = !io->active ? EPOLL_CTL_ADD : events ? EPOLL_CTL_MOD : EPOLL_CTL_DEL;
            if (epoll_ctl(l->epfd, op, io->fd, &ev) == 0)
                io->active = events;
            return;
        }
        l->changes = p;
        l->changes_cap = cap;
    }
    io->change_idx = l->nchanges;
    l->changes[l->nchanges++] = io;
}

static void apply_changes(struct loop *l)
{
    for (int i = 0; i < l->nchanges; i++) {
        struct loop_io *io = l->changes[i];
        if (!io)
            continue;
        io->change_idx = -1;
        if (io->want == io->active)
            continue;
        struct epoll_event ev = { .events = (io->want & LOOP_READ ? EPOLLIN : 0u) |
                                            (io->want & LOOP_WRITE ? EPOLLOUT : 0u),
                                  .data.ptr = io };
        int op = !io->active ? EPOLL_CTL_ADD : io->want ? EPOLL_CTL_MOD : EPOLL_CTL_DEL;
        if (epoll_ctl(l->epfd, op, io->fd, &ev) == 0) {
            io->active = io->want;
        } else if (op == EPOLL_CTL_ADD && errno == EEXIST) {
            if (epoll_ctl(l->epfd, EPOLL_CTL_MOD, io->fd, &ev) == 0)
                io->active = io->want;
        } else {
            /* The fd is broken (closed under us, or EPERM on a regular file):
             * tell the owner through an error event on the next iteration. */
            io->active = 0;
            io->cb(io, LOOP_READ | LOOP_WRITE | LOOP_ERROR);
        }
    }
    l->nchanges = 0;
}

void loop_io_close(struct loop_io *io)
{
    struct loop *l = io->loop;
    if (io->is_closed)
        return;
    if (io->change_idx >= 0) {
        l->changes[io->change_idx] = NULL;
        io->change_idx = -1;
    }
    if (io->active)
        epoll_ctl(l->epfd, EPOLL_CTL_DEL, io->fd, NULL);
    io->active = 0;
    io->want = 0;
    io->is_closed = true;
    /* Events still queued for it in this batch must not reach it: the
     * owner may free it (and the memory be reused) before they would. */
    for (int i = l->batch_pos + 1; i < l->batch_n; i++)
        if (l->batch[i].data.ptr == io)
            l->batch[i].data.ptr = NULL;
}

/* ---- timers: binary min-heap on deadline ----------------------------- */

static void heap_swap(struct loop *l, size_t a, size_t b)
{
    struct loop_timer *t = l->heap[a];
    l->heap[a] = l->heap[b];
    l->heap[b] = t;
    l->heap[a]->heap_idx = a;
    l->heap[b]->heap_idx = b;
}

static void heap_up(struct loop *l, size_t i)
{
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (l->heap[parent]->deadline_ms <= l->heap[i]->deadline_ms)
            break;
        heap_swap(l, i, parent);
        i = parent;
    }
}

static void heap_down(struct loop *l, size_t i)
{
    for (;;) {
        size_t left = 2 * i + 1, right = left + 1, min = i;
        if (left < l->nheap && l->heap[left]->deadline_ms < l->heap[min]->deadline_ms)
            min = left;
        if (right < l->nheap && l->heap[right]->deadline_ms < l->heap[min]->deadline_ms)
            min = right;
        if (min == i)
            return;
        heap_swap(l, i, min);
        i = min;
    }
}

void loop_timer_init(struct loop *l, struct loop_timer *t, loop_timer_cb cb, void *data)
{
    t->loop = l;
    t->deadline_ms = 0;
    t->heap_idx = SIZE_MAX;
    t->cb = cb;
    t->data = data;
}

int loop_timer_start(struct loop_timer *t, uint64_t ms)
{
    struct loop *l = t->loop;
    uint64_t old = t->deadline_ms;

    t->deadline_ms = l->now_ms + ms;
    if (t->heap_idx != SIZE_MAX) {
        if (t->deadline_ms < old)
            heap_up(l, t->heap_idx);
        else if (t->deadline_ms > old)
            heap_down(l, t->heap_idx);
        return 0;
    }
    if (l->nheap == l->heap_cap) {
        size_t cap = l->heap_cap ? l->heap_cap * 2 : 256;
        struct loop_timer **p = realloc(l->heap, cap * sizeof *p);
        if (!p)
            return -ENOMEM;
        l->heap = p;
        l->heap_cap = cap;
    }
    t->heap_idx = l->nheap;
    l->heap[l->nheap++] = t;
    heap_up(l, t->heap_idx);
    return 0;
}

void loop_timer_stop(struct loop_timer *t)
{
    struct loop *l = t->loop;
    size_t i = t->heap_idx;

    if (i == SIZE_MAX)
        return;
    t->heap_idx = SIZE_MAX;
    l->nheap--;
    if (i == l->nheap)
        return;
    l->heap[i] = l->heap[l->nheap];
    l->heap[i]->heap_idx = i;
    heap_down(l, i);
    heap_up(l, i);
}

static void run_timers(struct loop *l)
{
    /* Bounded: a callback that re-arms its timer with 0 ms runs next iteration. */
    size_t budget = l->nheap;
    while (budget-- && l->nheap && l->heap[0]->deadline_ms <= l->now_ms) {
        struct loop_timer *t = l->heap[0];
        loop_timer_stop(t);
        t->cb(t);
    }
}

/* ---- deferred callbacks ------------------------------------------------ */

void loop_defer(struct loop *l, struct loop_defer *d, loop_defer_cb cb, void *data)
{
    if (d->is_pending)
        return;
    d->cb = cb;
    d->data = data;
    d->next = NULL;
    d->is_pending = true;
    l->ndefer++;
    if (l->defer_tail)
        l->defer_tail->next = d;
    else
        l->defer_head = d;
    l->defer_tail = d;
}

void loop_defer_cancel(struct loop *l, struct loop_defer *d)
{
    if (!d->is_pending)
        return;
    struct loop_defer *prev = NULL;
    for (struct loop_defer *it = l->defer_head; it; prev = it, it = it->next) {
        if (it != d)
            continue;
        if (prev)
            prev->next = d->next;
        else
            l->defer_head = d->next;
        if (l->defer_tail == d)
            l->defer_tail = prev;
        l->ndefer--;
        break;
    }
    d->is_pending = false;
}

static void run_deferred(struct loop *l)
{
    /* Pop from the head, at most as many as were queued when we started:
     * defers queued by these callbacks run next round, and a defer can be
     * cancelled or re-queued from inside any callback. */
    size_t budget = l->ndefer;
    while (budget-- && l->defer_head) {
        struct loop_defer *d = l->defer_head;
        l->defer_head = d->next;
        if (!l->defer_head)
            l->defer_tail = NULL;
        l->ndefer--;
        d->is_pending = false;
        d->cb(d->data);
    }
}

int loop_post(struct loop *l, loop_defer_cb cb, void *data)
{
    struct post_node *n = malloc(sizeof *n);
    if (!n)
        return -ENOMEM;
    n->cb = cb;
    n->data = data;
    pthread_mutex_lock(&l->post_lock);
    n->next = l->posts;
    l->posts = n;
    pthread_mutex_unlock(&l->post_lock);
    uint64_t one = 1;
    ssize_t w = write(l->wakefd, &one, sizeof one);
    (void)w; /* EAGAIN means the counter is already non-zero: a wakeup is pending */
    return 0;
}

static void stop_cb(void *data) { loop_stop(data); }

void loop_stop_async(struct loop *l)
{
    if (loop_post(l, stop_cb, l) != 0) {
        /* Out of memory: a plain store is still seen by the next iteration. */
        __atomic_store_n(&l->is_stopping, true, __ATOMIC_RELEASE);
        uint64_t one = 1;
        ssize_t w = write(l->wakefd, &one, sizeof one);
        (void)w;
    }
}

/* ---- signals ------------------------------------------------------------ */

static void sig_cb(struct loop_io *io, unsigned events)
{
    struct loop *l = io->data;
    struct signalfd_siginfo si;
    (void)events;
    while (read(l->sigfd, &si, sizeof si) == (ssize_t)sizeof si) {
        for (struct loop_signal *s = l->signals; s; s = s->next)
            if (s->signo == (int)si.ssi_signo)
                s->cb(s, s->signo);
    }
}

int loop_signal_start(struct loop *l, struct loop_signal *s, int signo, loop_signal_cb cb, void *data)
{
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, signo);
    int rc = pthread_sigmask(SIG_BLOCK, &one, NULL);
    if (rc)
        return -rc;
    sigaddset(&l->sigmask, signo);
    int fd = signalfd(l->sigfd, &l->sigmask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (l->sigfd < 0) {
        l->sigfd = fd;
        loop_io_init(l, &l->sig_io, fd, sig_cb, l);
        loop_io_set(&l->sig_io, LOOP_READ);
    }
    s->loop = l;
    s->signo = signo;
    s->cb = cb;
    s->data = data;
    s->next = l->signals;
    l->signals = s;
    return 0;
}

void loop_signal_stop(struct loop_signal *s)
{
    struct loop *l = s->loop;
    for (struct loop_signal **pp = &l->signals; *pp; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    }
}

/* ---- the loop ------------------------------------------------------------- */

int loop_run_once(struct loop *l, int timeout_ms)
{
    struct epoll_event events[LOOP_MAX_EVENTS];

    apply_changes(l);
    loop_update_time(l);
    if (l->defer_head || l->is_stopping) {
        timeout_ms = 0;
    } else if (l->nheap) {
        uint64_t next = l->heap[0]->deadline_ms;
        int until = next <= l->now_ms ? 0 : (int)(next - l->now_ms > 86400000u ? 86400000u : next - l->now_ms);
        if (timeout_ms < 0 || until < timeout_ms)
            timeout_ms = until;
    }
    int n = epoll_wait(l->epfd, events, LOOP_MAX_EVENTS, timeout_ms);
    if (n < 0 && errno != EINTR)
        return -errno;
    loop_update_time(l);
    l->batch = events;
    l->batch_n = n;
    for (int i = 0; i < n; i++) {
        l->batch_pos = i;
        struct loop_io *io = events[i].data.ptr;
        if (!io || io->is_closed)
            continue;
        unsigned ev = 0;
        if (events[i].events & (EPOLLIN | EPOLLRDHUP))
            ev |= LOOP_READ;
        if (events[i].events & EPOLLOUT)
            ev |= LOOP_WRITE;
        if (events[i].events & (EPOLLERR | EPOLLHUP))
            ev |= LOOP_READ | LOOP_WRITE | LOOP_ERROR;
        io->cb(io, ev);
    }
    l->batch = NULL;
    l->batch_n = l->batch_pos = 0;
    run_timers(l);
    run_deferred(l);
    return 0;
}

void loop_run_until_joined(struct loop *l, struct loop_thread *threads, size_t n)
{
    for (size_t alive = n; alive;) {
        loop_run_once(l, 100);
        alive = 0;
        for (size_t i = 0; i < n; i++) {
            if (!threads[i].is_joined && pthread_tryjoin_np(threads[i].id, NULL) == 0)
                threads[i].is_joined = true;
            alive += !threads[i].is_joined;
        }
    }
}

int loop_run(struct loop *l)
{
    while (!__atomic_load_n(&l->is_stopping, __ATOMIC_ACQUIRE)) {
        int rc = loop_run_once(l, -1);
        if (rc < 0)
            return rc;
    }
    /* Let deferred frees of the last iteration happen. */
    run_deferred(l);
    l->is_stopping = false;
    return 0;
}
