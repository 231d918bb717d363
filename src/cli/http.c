/* http.c — the CLI's blocking HTTP client for the local admin API. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for fd to be ready for events before the deadline. */
static int wait_fd(int fd, short events, long long deadline)
{
    long long left = deadline - now_ms();
    if (left <= 0)
        return -ETIMEDOUT;
    struct pollfd p = { .fd = fd, .events = events };
    int rc = poll(&p, 1, (int)left);
    return rc > 0 ? 0 : rc == 0 ? -ETIMEDOUT : -errno;
}

int cli_http(const char *method, const char *url, const char *token, const char *body, char **out_body,
             int timeout_ms)
{
    char host[64];
    unsigned port;
    int off = 0;
    if (sscanf(url, "http://%63[^:/]:%u%n", host, &port, &off) != 2 || port == 0 || port > 65535)
        return -EINVAL;
    const char *path = url[off] ? url + off : "/";
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1)
        return -EINVAL;
    long long deadline = now_ms() + timeout_ms;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    int rc = 0;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        if (errno != EINPROGRESS)
            rc = -errno;
        else if ((rc = wait_fd(fd, POLLOUT, deadline)) == 0) {
            int e = 0;
            socklen_t len = sizeof e;
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len);
            rc = -e;
        }
    }
    char *req = NULL;
    size_t blen = body ? strlen(body) : 0;
    int n = rc < 0 ? -1
                   : asprintf(&req,
                              "%s %s HTTP/1.1\r\nHost: %s:%u\r\nConnection: close\r\nUser-Agent: strata-cli\r\n"
                              "%s%s%s%s%sContent-Length: %zu\r\n\r\n%s",
                              method, path, host, port, token ? "Authorization: Bearer " : "", token ? token : "",
                              token ? "\r\n" : "", body ? "Content-Type: application/json" : "", body ? "\r\n" : "",
                              blen, body ? body : "");
    for (int sent = 0; rc == 0 && n > 0 && sent < n;) {
        ssize_t w = send(fd, req + sent, (size_t)(n - sent), MSG_NOSIGNAL);
        if (w > 0)
            sent += (int)w;
        else if (w < 0 && errno == EAGAIN)
            rc = wait_fd(fd, POLLOUT, deadline);
        else
            rc = -errno;
    }
    free(req);
    size_t cap = 65536, len = 0;
    char *resp = rc == 0 ? malloc(cap) : NULL;
    if (rc == 0 && !resp)
        rc = -ENOMEM;
    while (rc == 0) {
        if (len + 1 >= cap) {
            char *bigger = cap < (64u << 20) ? realloc(resp, cap * 2) : NULL;
            if (!bigger) {
                rc = -EFBIG;
                break;
            }
            resp = bigger;
            cap *= 2;
        }
        ssize_t r = recv(fd, resp + len, cap - len - 1, 0);
        if (r > 0)
            len += (size_t)r;
        else if (r == 0)
            break;
        else if (errno == EAGAIN)
            rc = wait_fd(fd, POLLIN, deadline);
        else
            rc = -errno;
    }
    close(fd);
    if (rc < 0) {
        free(resp);
        return rc;
    }
    resp[len] = '\0';
    int status = 0;
    char *hend = strstr(resp, "\r\n\r\n");
    if (sscanf(resp, "HTTP/1.%*d %d", &status) != 1 || !hend) {
        free(resp);
        return -EPROTO;
    }
    if (out_body) {
        *out_body = strdup(hend + 4);
        if (!*out_body)
            status = -ENOMEM;
    }
    free(resp);
    return status;
}
