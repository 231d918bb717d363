/* tls_sniff.c — one inbound port for mTLS and plaintext (the mesh sidecar's
 * PERMISSIVE mode, as Istio's PeerAuthentication): the first byte of the
 * connection says which.
 *
 * A TLS connection opens with a record whose content type is handshake,
 * 0x16; no HTTP/1.x method starts with it (methods are tokens, 0x16 is a
 * control character). One byte is therefore enough, and it is only peeked
 * (MSG_PEEK), so whichever transport takes over reads the stream from its
 * start: OpenSSL sees the whole ClientHello, the HTTP parser the whole
 * request line.
 *
 * Until the decision the sock's state is the server ctx pointer itself, with
 * the reference it holds: an undecided connection allocates nothing, so
 * thousands of silent connections cost no more than plain ones. */
#include "core/tls.h"

#include <errno.h>
#include <stdatomic.h>
#include <sys/socket.h>

#include "core/loop.h"

/* The first byte of a TLS record carrying a handshake message (RFC 8446
 * §5.1, ContentType handshake(22)), i.e. of every ClientHello. */
#define TLS_RECORD_HANDSHAKE 0x16

static _Atomic uint64_t n_plain, n_tls, n_abandoned;

static const struct sock_ops sniff_ops;

/* Peeks at the first byte and, once there is one, hands s over to the TLS
 * or the plain transport. 1: decided (s->ops changed); 0: EOF before any
 * byte; -EAGAIN (want LOOP_READ); other -errno. */
static int sniff_decide(struct sock *s)
{
    struct tls_server_ctx *c = s->tls;
    unsigned char first;
    ssize_t n;

    do
        n = recv(s->fd, &first, 1, MSG_PEEK | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            s->want = LOOP_READ;
            return -EAGAIN;
        }
        return -errno;
    }
    if (n == 0)
        return 0;
    /* tls_sock_server wants a plain sock; on failure s goes back to
     * sniffing, unchanged, and still holds its reference. */
    s->ops = &sock_plain_ops;
    s->tls = NULL;
    s->want = 0;
    if (first == TLS_RECORD_HANDSHAKE) {
        int rc = tls_sock_server(c, s);
        if (rc < 0) {
            s->ops = &sniff_ops;
            s->tls = c;
            return rc;
        }
        atomic_fetch_add_explicit(&n_tls, 1, memory_order_relaxed);
    } else {
        atomic_fetch_add_explicit(&n_plain, 1, memory_order_relaxed);
    }
    tls_server_ctx_unref(c); /* TLS took its own reference */
    return 1;
}

static int sniff_handshake(struct sock *s)
{
    int rc = sniff_decide(s);
    if (rc == 0)
        return -ECONNRESET;
    if (rc < 0)
        return rc;
    return sock_handshake(s); /* TLS: go on with the ClientHello now; plain: 0 */
}

/* Not called by http1_server (it reads only after the handshake), but a
 * read or write before the decision behaves as TLS's does: it first drives
 * the handshake. */
static ssize_t sniff_read(struct sock *s, void *buf, size_t n)
{
    int rc = sniff_decide(s);
    if (rc <= 0)
        return rc; /* EOF before any byte is an orderly, empty stream */
    return sock_read(s, buf, n);
}

static ssize_t sniff_writev(struct sock *s, const struct iovec *iov, int iovcnt)
{
    int rc = sniff_decide(s);
    if (rc == 0)
        return -EPIPE;
    if (rc < 0)
        return rc;
    return sock_writev(s, iov, iovcnt);
}

static void sniff_destroy(struct sock *s)
{
    if (!s->tls)
        return;
    atomic_fetch_add_explicit(&n_abandoned, 1, memory_order_relaxed);
    tls_server_ctx_unref(s->tls);
    s->tls = NULL;
}

/* No shutdown: nothing has been said in either protocol, so there is no
 * close_notify to send; sock_close's close(2) is all. */
static const struct sock_ops sniff_ops = {
    .name = "sniff",
    .read = sniff_read,
    .writev = sniff_writev,
    .handshake = sniff_handshake,
    .destroy = sniff_destroy,
};

int tls_sock_server_sniff(struct tls_server_ctx *c, struct sock *s)
{
    if (!c || s->fd < 0 || s->ops != &sock_plain_ops)
        return -EINVAL;
    tls_server_ctx_ref(c);
    s->ops = &sniff_ops;
    s->tls = c;
    s->want = 0;
    return 0;
}

void tls_sniff_stats(struct tls_sniff_stats *out)
{
    out->plain = atomic_load_explicit(&n_plain, memory_order_relaxed);
    out->tls = atomic_load_explicit(&n_tls, memory_order_relaxed);
    out->abandoned = atomic_load_explicit(&n_abandoned, memory_order_relaxed);
}
