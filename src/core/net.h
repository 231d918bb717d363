/* net.h — sockets: listeners, non-blocking connects, addresses.
 *
 * Only numeric addresses are resolved here ("127.0.0.1", "[::1]", and the
 * name "localhost"): name resolution blocks, and nothing on a loop thread may
 * block. Names come resolved from the control plane's config.
 * Errors are negative errno values. */
#ifndef STRATA_NET_H
#define STRATA_NET_H

#include <stdbool.h>
#include <stdint.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "core/str.h"

/* IPv4 or IPv6 only: 28 bytes rather than sockaddr_storage's 128, since
 * every connection carries its peer's address. */
struct net_addr {
    union {
        struct sockaddr sa;
        struct sockaddr_in in;
        struct sockaddr_in6 in6;
    } ss;
    socklen_t len;
};

/* Parses "host:port", "[v6]:port" or ":port" (all interfaces, IPv4).
 * -EINVAL on anything else, including a port outside 1..65535 (0 allowed
 * only when allow_port0, for "any free port"). */
int net_addr_parse(struct str hostport, bool allow_port0, struct net_addr *out);
/* Builds an address from a numeric host (or "localhost") and a port. */
int net_addr_from_host(struct str host, uint16_t port, struct net_addr *out);
/* "1.2.3.4:80" / "[::1]:80" into dst; returns dst. */
const char *net_addr_format(const struct net_addr *a, char *dst, size_t dstsz);
/* The IP alone (no port) into dst; returns dst. */
const char *net_addr_ip(const struct net_addr *a, char *dst, size_t dstsz);
uint16_t net_addr_port(const struct net_addr *a);

struct net_listen_opts {
    int backlog;       /* default 511, as NGINX */
    bool reuseport;    /* SO_REUSEPORT: one listener per worker loop */
};

/* A non-blocking, close-on-exec listening TCP socket. */
int net_listen(const struct net_addr *a, const struct net_listen_opts *opts, int *out_fd);
/* The bound address of fd (learn the port chosen for port 0). */
int net_local_addr(int fd, struct net_addr *out);
/* Starts a non-blocking connect. 0 if connected at once, -EINPROGRESS while
 * under way (wait for LOOP_WRITE, then net_connect_result), other <0 on error. */
int net_connect(const struct net_addr *a, int *out_fd);
/* After LOOP_WRITE on a connecting socket: 0 connected, or -errno. */
int net_connect_result(int fd);
/* accept4 with NONBLOCK|CLOEXEC; TCP_NODELAY set. -EAGAIN when none pending. */
int net_accept(int lfd, struct net_addr *peer, int *out_fd);
int net_set_nodelay(int fd);

#endif
