/* ratepace: a tiny constant-rate HTTP/1.1 load generator (wrk2-style).
 *
 *   ratepace -r RATE [-c CONNS] [-d SECONDS] [-n COUNT] [-H HOST] [-p PATH]
 *            [-T DRAIN_SECONDS] HOST:PORT
 *
 * CONNS keep-alive connections (default 16) to a numeric IPv4 HOST:PORT
 * (loopback in bench/mesh). Request k is due at t0 + k/RATE; due requests
 * go out in order on the next free connection (one request in flight per
 * connection, no pipelining). Latency runs from the request's INTENDED send
 * time to its whole response, so a stalled server is charged for the queue
 * it causes (no coordinated omission). Scheduling stops after COUNT requests
 * (default RATE x SECONDS) or SECONDS (default 10), whichever comes first;
 * responses still outstanding then get DRAIN_SECONDS (default 5) to arrive.
 *
 * Prints one line on stdout:
 *   sent=.. ok=.. non2xx=.. errors=.. unsent=.. timeouts=.. elapsed_s=..
 *   achieved_rps=.. p50_us=.. p90_us=.. p99_us=.. p999_us=.. max_us=.. lag_p99_us=..
 * ok: 2xx responses; non2xx: other complete responses; errors: connection
 * failures/resets/unparsable responses (the connection is re-opened);
 * unsent: due by the end of the schedule but no connection was free;
 * timeouts: sent, no response within the drain time. Percentiles cover all
 * complete responses (ok + non2xx). achieved_rps: complete responses / time
 * from t0 to the last one. lag_p99_us: how late the generator itself put
 * requests on the wire (send time - intended time), a check of the
 * generator, included in the latencies. Exit 0, or 1 on usage/connect errors.
 *
 * Build: cc -O2 -o ratepace bench/ratepace.c   (Linux: epoll, timerfd)
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define RBUF 65536

struct conn {
    int fd;
    int busy;
    int queued; /* in the idle queue */
    uint64_t intended; /* ns, of the request in flight */
    size_t rlen;
    char rbuf[RBUF];
};

static struct sockaddr_in addr;
static char req[1024];
static size_t req_len;
static struct conn *conns;
static int nconns, *idleq, idle_head, idle_count;
static int ep;
static uint64_t *lat, *lag;
static uint64_t nlat, nlag, ok, non2xx, errors, sent, inflight, last_done;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void idle_push(int i)
{
    if (conns[i].queued)
        return;
    conns[i].queued = 1;
    idleq[(idle_head + idle_count) % nconns] = i;
    idle_count++;
}

static int idle_pop(void)
{
    int i = idleq[idle_head];
    idle_head = (idle_head + 1) % nconns;
    idle_count--;
    conns[i].queued = 0;
    return i;
}

static int open_conn(struct conn *c, int i)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t)i };
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
        close(fd);
        return -1;
    }
    c->fd = fd;
    c->busy = 0;
    c->rlen = 0;
    return 0;
}

/* the connection failed: count its request, re-open it, make it idle again */
static void conn_fail(int i)
{
    struct conn *c = &conns[i];
    if (c->busy) {
        errors++;
        inflight--;
    }
    close(c->fd);
    c->fd = -1;
    c->busy = 0;
    if (open_conn(c, i) == 0)
        idle_push(i);
    else
        fprintf(stderr, "ratepace: reconnect failed: %s\n", strerror(errno));
}

/* 1: a whole response is in rbuf (consumed, status in *status); 0: need more; -1: bad */
static int parse_response(struct conn *c, int *status)
{
    char *buf = c->rbuf;
    size_t n = c->rlen;
    char *end = memmem(buf, n, "\r\n\r\n", 4);
    if (!end)
        return n >= RBUF ? -1 : 0;
    size_t hdr = (size_t)(end - buf) + 4;
    if (n < 12 || memcmp(buf, "HTTP/1.", 7) != 0)
        return -1;
    *status = atoi(buf + 9);
    long cl = -1;
    int chunked = 0;
    for (char *p = memchr(buf, '\n', hdr); p && p < end; p = memchr(p, '\n', (size_t)(end - p))) {
        p++;
        if (!strncasecmp(p, "content-length:", 15))
            cl = strtol(p + 15, NULL, 10);
        else if (!strncasecmp(p, "transfer-encoding:", 18)) {
            char *eol = memchr(p, '\r', (size_t)(end + 2 - p));
            if (eol && memmem(p, (size_t)(eol - p), "chunked", 7))
                chunked = 1;
        }
    }
    size_t total;
    if (chunked) {
        char *z = memmem(buf + hdr, n - hdr, "0\r\n\r\n", 5);
        if (!z)
            return n >= RBUF ? -1 : 0;
        total = (size_t)(z - buf) + 5;
    } else if (*status == 204 || *status == 304 || (*status >= 100 && *status < 200)) {
        total = hdr;
    } else if (cl >= 0) {
        total = hdr + (size_t)cl;
        if (total > RBUF)
            return -1;
        if (n < total)
            return 0;
    } else {
        return -1; /* close-delimited bodies are not supported */
    }
    memmove(buf, buf + total, n - total);
    c->rlen = n - total;
    return 1;
}

static void on_readable(int i)
{
    struct conn *c = &conns[i];
    int eof = 0;
    for (;;) {
        ssize_t r = read(c->fd, c->rbuf + c->rlen, RBUF - c->rlen);
        if (r > 0) {
            c->rlen += (size_t)r;
            if (c->rlen < RBUF)
                continue;
        } else if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            break;
        } else if (r < 0 && errno == EINTR) {
            continue;
        } else {
            eof = 1; /* closed or reset: a complete response before it still counts */
        }
        break;
    }
    int status;
    int pr = c->rlen ? parse_response(c, &status) : 0;
    if (pr < 0 || (pr == 1 && !c->busy)) {
        conn_fail(i);
        return;
    }
    if (pr == 1) {
        uint64_t t = now_ns();
        lat[nlat++] = t - c->intended;
        last_done = t;
        if (status >= 200 && status < 300)
            ok++;
        else
            non2xx++;
        c->busy = 0;
        inflight--;
        if (c->rlen) { /* bytes nobody asked for */
            conn_fail(i);
            return;
        }
    }
    if (eof) {
        conn_fail(i); /* counts the request in flight, if any, as an error */
        return;
    }
    if (pr == 1)
        idle_push(i);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct_us(uint64_t *v, uint64_t n, double p)
{
    if (n == 0)
        return 0;
    uint64_t k = (uint64_t)(p * (double)n + 0.999999);
    if (k < 1)
        k = 1;
    if (k > n)
        k = n;
    return (double)v[k - 1] / 1000.0;
}

static void usage(void)
{
    fprintf(stderr, "usage: ratepace -r RATE [-c CONNS] [-d SECONDS] [-n COUNT] [-H HOST] [-p PATH] [-T DRAIN_SECONDS] IP:PORT\n");
    exit(1);
}

int main(int argc, char **argv)
{
    double rate = 0, dur = 10, drain = 5;
    long count = 0;
    const char *host = NULL, *path = "/";
    nconns = 16;
    int opt;
    while ((opt = getopt(argc, argv, "r:c:d:n:H:p:T:")) != -1) {
        switch (opt) {
        case 'r': rate = atof(optarg); break;
        case 'c': nconns = atoi(optarg); break;
        case 'd': dur = atof(optarg); break;
        case 'n': count = atol(optarg); break;
        case 'H': host = optarg; break;
        case 'p': path = optarg; break;
        case 'T': drain = atof(optarg); break;
        default: usage();
        }
    }
    if (optind + 1 != argc || rate <= 0 || nconns < 1 || nconns > 10000 || dur <= 0)
        usage();
    char target[256];
    snprintf(target, sizeof target, "%s", argv[optind]);
    char *colon = strrchr(target, ':');
    if (!colon)
        usage();
    *colon = 0;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)atoi(colon + 1));
    if (inet_pton(AF_INET, target, &addr.sin_addr) != 1)
        usage();
    int rl = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: ratepace\r\n\r\n", path,
                      host ? host : argv[optind]);
    if (rl <= 0 || (size_t)rl >= sizeof req)
        usage();
    req_len = (size_t)rl;

    uint64_t total = (uint64_t)(rate * dur + 0.5);
    if (count > 0 && (uint64_t)count < total)
        total = (uint64_t)count;
    if (total == 0)
        total = 1;
    lat = malloc(total * sizeof *lat);
    lag = malloc(total * sizeof *lag);
    conns = calloc((size_t)nconns, sizeof *conns);
    idleq = calloc((size_t)nconns, sizeof *idleq);
    if (!lat || !lag || !conns || !idleq) {
        fprintf(stderr, "ratepace: out of memory\n");
        return 1;
    }
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0); /* wake up on time, not up to 50 us late */
    ep = epoll_create1(EPOLL_CLOEXEC);
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    struct epoll_event tev = { .events = EPOLLIN, .data.u32 = UINT32_MAX };
    epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &tev);
    for (int i = 0; i < nconns; i++) {
        if (open_conn(&conns[i], i) < 0) {
            fprintf(stderr, "ratepace: connect to %s: %s\n", argv[optind], strerror(errno));
            return 1;
        }
        idle_push(i);
    }

    double interval = 1e9 / rate;
    uint64_t t0 = now_ns() + 1000000; /* start 1 ms from now */
    uint64_t t_stop = t0 + (uint64_t)(dur * 1e9);
    uint64_t unsent = 0, drain_deadline = 0;
    uint64_t ns = 0; /* next request to send */
    int scheduling = 1;
    struct epoll_event evs[128];
    for (;;) {
        uint64_t now = now_ns();
        if (scheduling) {
            while (ns < total && idle_count > 0) {
                uint64_t due = t0 + (uint64_t)((double)ns * interval);
                if (due > now || due >= t_stop)
                    break;
                int i = idle_pop();
                struct conn *c = &conns[i];
                if (c->fd < 0)
                    continue; /* its reconnect failed */
                ssize_t w = write(c->fd, req, req_len);
                if (w != (ssize_t)req_len) {
                    c->busy = 0;
                    errors++;
                    ns++;
                    sent++;
                    conn_fail(i);
                    continue;
                }
                c->busy = 1;
                c->intended = due;
                lag[nlag++] = now - due;
                inflight++;
                ns++;
                sent++;
            }
            uint64_t due_next = t0 + (uint64_t)((double)ns * interval);
            if (ns >= total || due_next >= t_stop || now >= t_stop) {
                scheduling = 0;
                /* due by now but never sent for want of a free connection */
                uint64_t due_cnt = now >= t_stop ? (uint64_t)((double)(t_stop - t0) / interval) + 1
                                                 : (now >= t0 ? (uint64_t)((double)(now - t0) / interval) + 1 : 0);
                if (due_cnt > total)
                    due_cnt = total;
                unsent = due_cnt > ns ? due_cnt - ns : 0;
                drain_deadline = now + (uint64_t)(drain * 1e9);
            }
        }
        if (!scheduling && (inflight == 0 || now >= drain_deadline))
            break;
        int timeout = -1;
        if (scheduling) {
            if (idle_count > 0) {
                uint64_t due = t0 + (uint64_t)((double)ns * interval);
                struct itimerspec its = { 0 };
                its.it_value.tv_sec = (time_t)(due / 1000000000ull);
                its.it_value.tv_nsec = (long)(due % 1000000000ull);
                timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
            }
            /* else: a response frees a connection; the backlog goes out then */
            if (now < t_stop) {
                uint64_t ms = (t_stop - now) / 1000000 + 1;
                timeout = ms > 1000 ? 1000 : (int)ms;
            } else {
                timeout = 0;
            }
        } else {
            uint64_t ms = (drain_deadline - now) / 1000000 + 1;
            timeout = ms > 1000 ? 1000 : (int)ms;
        }
        int n = epoll_wait(ep, evs, 128, timeout);
        if (n < 0 && errno != EINTR) {
            perror("ratepace: epoll_wait");
            return 1;
        }
        for (int k = 0; k < n; k++) {
            if (evs[k].data.u32 == UINT32_MAX) {
                uint64_t x;
                if (read(tfd, &x, sizeof x) < 0) { /* nothing: spurious */ }
                continue;
            }
            on_readable((int)evs[k].data.u32);
        }
    }
    uint64_t timeouts = inflight;
    double elapsed = last_done > t0 ? (double)(last_done - t0) / 1e9 : 0;
    qsort(lat, nlat, sizeof *lat, cmp_u64);
    qsort(lag, nlag, sizeof *lag, cmp_u64);
    printf("sent=%llu ok=%llu non2xx=%llu errors=%llu unsent=%llu timeouts=%llu elapsed_s=%.3f achieved_rps=%.1f "
           "p50_us=%.1f p90_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f lag_p99_us=%.1f\n",
           (unsigned long long)sent, (unsigned long long)ok, (unsigned long long)non2xx,
           (unsigned long long)errors, (unsigned long long)unsent, (unsigned long long)timeouts, elapsed,
           elapsed > 0 ? (double)nlat / elapsed : 0, pct_us(lat, nlat, 0.50), pct_us(lat, nlat, 0.90),
           pct_us(lat, nlat, 0.99), pct_us(lat, nlat, 0.999), nlat ? (double)lat[nlat - 1] / 1000.0 : 0,
           pct_us(lag, nlag, 0.99));
    return 0;
}
