#include "core/net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int net_addr_from_host(struct str host, uint16_t port, struct net_addr *out)
{
    char tmp[64];

    memset(out, 0, sizeof *out);
    if (host.n == 0 || str_eq_nocase(host, STR_LIT("localhost"))) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&out->ss;
        sin->sin_family = AF_INET;
        sin->sin_port = htons(port);
        sin->sin_addr.s_addr = htonl(host.n ? INADDR_LOOPBACK : INADDR_ANY);
        out->len = sizeof *sin;
        return 0;
    }
    if (str_copy_cstr(host, tmp, sizeof tmp))
        return -EINVAL;
    struct sockaddr_in *sin = (struct sockaddr_in *)&out->ss;
    if (inet_pton(AF_INET, tmp, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons(port);
        out->len = sizeof *sin;
        return 0;
    }
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&out->ss;
    if (inet_pton(AF_INET6, tmp, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(port);
        out->len = sizeof *sin6;
        return 0;
    }
    return -EINVAL;
}

int net_addr_parse(struct str s, bool allow_port0, struct net_addr *out)
{
    struct str host, port;
    const char *colon = NULL;

    if (s.n && s.p[0] == '[') {
        const char *close = memchr(s.p, ']', s.n);
        if (!close || close + 1 >= s.p + s.n || close[1] != ':')
            return -EINVAL;
        host = str_make(s.p + 1, (size_t)(close - s.p - 1));
        colon = close + 1;
        if (host.n == 0)
            return -EINVAL;
    } else {
        for (size_t i = s.n; i > 0; i--)
            if (s.p[i - 1] == ':') {
                colon = s.p + i - 1;
                break;
            }
        if (!colon)
            return -EINVAL;
        host = str_make(s.p, (size_t)(colon - s.p));
        if (memchr(host.p, ':', host.n))
            return -EINVAL; /* bare IPv6 needs brackets */
    }
    port = str_make(colon + 1, (size_t)(s.p + s.n - colon - 1));
    uint64_t p;
    if (port.n > 5 || str_to_u64(port, &p) || p > 65535 || (p == 0 && !allow_port0))
        return -EINVAL;
    return net_addr_from_host(host, (uint16_t)p, out);
}

const char *net_addr_ip(const struct net_addr *a, char *dst, size_t dstsz)
{
    if (a->ss.sa.sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)&a->ss)->sin6_addr, dst, (socklen_t)dstsz);
    else if (a->ss.sa.sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)&a->ss)->sin_addr, dst, (socklen_t)dstsz);
    else
        snprintf(dst, dstsz, "unknown");
    return dst;
}

uint16_t net_addr_port(const struct net_addr *a)
{
    if (a->ss.sa.sa_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)&a->ss)->sin6_port);
    return ntohs(((const struct sockaddr_in *)&a->ss)->sin_port);
}

const char *net_addr_format(const struct net_addr *a, char *dst, size_t dstsz)
{
    char ip[INET6_ADDRSTRLEN];
    net_addr_ip(a, ip, sizeof ip);
    if (a->ss.sa.sa_family == AF_INET6)
        snprintf(dst, dstsz, "[%s]:%u", ip, net_addr_port(a));
    else
        snprintf(dst, dstsz, "%s:%u", ip, net_addr_port(a));
    return dst;
}

int net_listen(const struct net_addr *a, const struct net_listen_opts *opts, int *out_fd)
{
    int one = 1;
    int backlog = opts && opts->backlog > 0 ? opts->backlog : 511;
    int fd = socket(a->ss.sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
        goto fail;
    if (opts && opts->reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0)
        goto fail;
    if (bind(fd, (const struct sockaddr *)&a->ss, a->len) < 0)
        goto fail;
    if (listen(fd, backlog) < 0)
        goto fail;
    *out_fd = fd;
    return 0;
fail:;
    int e = errno;
    close(fd);
    return -e;
}

int net_local_addr(int fd, struct net_addr *out)
{
    out->len = sizeof out->ss;
    if (getsockname(fd, (struct sockaddr *)&out->ss, &out->len) < 0)
        return -errno;
    return 0;
}

int net_set_nodelay(int fd)
{
    int one = 1;
    return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0 ? -errno : 0;
}

int net_connect(const struct net_addr *a, int *out_fd)
{
    int fd = socket(a->ss.sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    net_set_nodelay(fd);
    *out_fd = fd;
    if (connect(fd, (const struct sockaddr *)&a->ss, a->len) == 0)
        return 0;
    if (errno == EINPROGRESS)
        return -EINPROGRESS;
    int e = errno;
    close(fd);
    *out_fd = -1;
    return -e;
}

int net_connect_result(int fd)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        return -errno;
    return -err;
}

int net_accept(int lfd, struct net_addr *peer, int *out_fd)
{
    struct net_addr tmp;
    struct net_addr *p = peer ? peer : &tmp;
    p->len = sizeof p->ss;
    int fd = accept4(lfd, (struct sockaddr *)&p->ss, &p->len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0)
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    if (p->ss.sa.sa_family == AF_INET || p->ss.sa.sa_family == AF_INET6)
        net_set_nodelay(fd);
    *out_fd = fd;
    return 0;
}
