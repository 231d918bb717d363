#include "support/test_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/net.h"

static void *run(void *arg)
{
    struct test_server *ts = arg;
    loop_run(ts->loop);
    return NULL;
}

int test_server_start(struct test_server *ts, const struct http1_server_config *cfg)
{
    struct net_addr a;
    int lfd;
    memset(ts, 0, sizeof *ts);
    net_addr_parse(STR_LIT("127.0.0.1:0"), true, &a);
    int rc = net_listen(&a, NULL, &lfd);
    if (rc < 0)
        return rc;
    net_local_addr(lfd, &a);
    ts->port = net_addr_port(&a);
    ts->loop = loop_new();
    ts->server = http1_server_new(ts->loop, cfg);
    http1_server_listen_fd(ts->server, lfd);
    return -pthread_create(&ts->thread, NULL, run, ts);
}

static void stop_cb(void *arg)
{
    struct test_server *ts = arg;
    http1_server_close_all(ts->server);
    loop_stop(ts->loop);
}

void test_server_stop(struct test_server *ts)
{
    loop_post(ts->loop, stop_cb, ts);
    pthread_join(ts->thread, NULL);
    loop_run_once(ts->loop, 0); /* deferred frees */
    http1_server_free(ts->server);
    loop_free(ts->loop);
}

int test_connect(uint16_t port)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

int test_send_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        struct pollfd pfd = { .fd = fd, .events = POLLOUT };
        if (poll(&pfd, 1, 5000) <= 0)
            return -ETIMEDOUT;
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR)
                continue;
            return -errno;
        }
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

size_t test_recv(int fd, char *out, size_t cap, int timeout_ms, bool *eof,
                 bool (*complete)(const char *p, size_t n))
{
    size_t len = 0;
    *eof = false;
    while (len + 1 < cap) {
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        int pr = poll(&pfd, 1, timeout_ms);
        if (pr <= 0)
            break;
        ssize_t r = recv(fd, out + len, cap - 1 - len, 0);
        if (r <= 0) {
            *eof = true; /* orderly close or reset: either way the server closed */
            break;
        }
        len += (size_t)r;
        out[len] = '\0';
        if (complete && complete(out, len))
            break;
    }
    out[len] = '\0';
    return len;
}
