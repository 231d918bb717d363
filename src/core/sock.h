/* sock.h — a connected stream socket and its transport (plain or TLS).
 *
 * HTTP code reads and writes through sock_read/sock_writev and never knows
 * whether TLS is underneath: the transport is a small vtable. On -EAGAIN the
 * transport records in `want` which readiness it needs (TLS may need to
 * write in order to read, and the reverse); the owner waits for that.
 * Not thread-safe: a sock belongs to one loop. */
#ifndef STRATA_SOCK_H
#define STRATA_SOCK_H

#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

struct sock;

struct sock_ops {
    const char *name;
    /* >0 bytes read, 0 orderly EOF, -EAGAIN (see want), other -errno. */
    ssize_t (*read)(struct sock *s, void *buf, size_t n);
    /* >0 bytes written (possibly short), -EAGAIN (see want), other -errno. */
    ssize_t (*writev)(struct sock *s, const struct iovec *iov, int iovcnt);
    /* Drives a handshake: 0 done, -EAGAIN (see want), other <0 failure. */
    int (*handshake)(struct sock *s);
    /* Sends a close notification if the transport has one; best effort. */
    void (*shutdown)(struct sock *s);
    /* Frees transport state. Does not close the fd. */
    void (*destroy)(struct sock *s);
};

struct sock {
    int fd;
    const struct sock_ops *ops;
    void *tls;      /* transport state (SSL *) */
    unsigned want;  /* LOOP_READ / LOOP_WRITE after -EAGAIN */
};

extern const struct sock_ops sock_plain_ops;

/* A plain TCP transport over fd (owned by the caller). */
void sock_init_plain(struct sock *s, int fd);

static inline ssize_t sock_read(struct sock *s, void *buf, size_t n) { return s->ops->read(s, buf, n); }
static inline ssize_t sock_writev(struct sock *s, const struct iovec *iov, int n) { return s->ops->writev(s, iov, n); }
static inline int sock_handshake(struct sock *s) { return s->ops->handshake ? s->ops->handshake(s) : 0; }
/* Shuts the transport down, frees its state, closes the fd. */
void sock_close(struct sock *s);

#endif
