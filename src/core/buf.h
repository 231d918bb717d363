/* buf.h — byte buffers with a read and a write position.
 *
 * Data is read from a socket straight into the free tail (buf_wptr/buf_commit),
 * parsed in place through string views, and consumed from the head
 * (buf_consume). Nothing is copied unless the buffer must grow or compact.
 * Every buffer has a hard maximum from config: growth past it fails with
 * -ENOBUFS so that outside input can never make us allocate without bound.
 * Not thread-safe: a buffer belongs to one connection on one loop. */
#ifndef STRATA_BUF_H
#define STRATA_BUF_H

#include <stdarg.h>
#include <stddef.h>

#include "core/str.h"

struct buf {
    char *data;
    size_t cap;
    size_t rpos; /* first unread byte */
    size_t wpos; /* one past the last written byte */
    size_t max;  /* capacity never grows beyond this */
};

/* An empty buffer that may grow up to max bytes. Allocates nothing yet. */
void buf_init(struct buf *b, size_t max);
/* Releases the memory; the buffer is empty and reusable afterwards. */
void buf_free(struct buf *b);

static inline size_t buf_len(const struct buf *b) { return b->wpos - b->rpos; }
static inline const char *buf_rptr(const struct buf *b) { return b->data + b->rpos; }
static inline char *buf_wptr(struct buf *b) { return b->data + b->wpos; }
static inline size_t buf_writable(const struct buf *b) { return b->cap - b->wpos; }
static inline struct str buf_str(const struct buf *b) { return str_make(b->data + b->rpos, buf_len(b)); }

/* Ensures at least n writable bytes after wpos, compacting or growing.
 * 0 on success; -ENOBUFS if that would exceed max; -ENOMEM on allocation
 * failure. Pointers into the buffer are invalid after a successful call. */
int buf_reserve(struct buf *b, size_t n);
/* Marks n bytes written at buf_wptr() as data. */
static inline void buf_commit(struct buf *b, size_t n) { b->wpos += n; }
/* Drops n bytes from the head; resets positions when empty (no memmove). */
void buf_consume(struct buf *b, size_t n);
/* Empties the buffer, keeping its memory. */
static inline void buf_reset(struct buf *b) { b->rpos = b->wpos = 0; }

int buf_append(struct buf *b, const void *p, size_t n);
static inline int buf_append_str(struct buf *b, struct str s) { return buf_append(b, s.p, s.n); }
int buf_append_cstr(struct buf *b, const char *s);
/* printf into the tail; -ENOBUFS / -ENOMEM as buf_reserve. */
int buf_appendf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int buf_vappendf(struct buf *b, const char *fmt, va_list ap);
/* Appends the decimal form of v (no printf on the hot path). */
int buf_append_u64(struct buf *b, unsigned long long v);

/* ---- pools: reuse blocks of one size instead of malloc/free per request --
 * A connection returns its buffers to its loop's pool when it goes idle and
 * takes them back on the next request, so a keep-alive connection costs no
 * allocation per request and an idle one holds no buffer. Bounded: past max
 * blocks, returned memory is freed. One pool per loop: not thread-safe. */
struct buf_pool {
    char **blocks;
    size_t n, max;
    size_t size; /* bytes per block */
};

void buf_pool_init(struct buf_pool *p, size_t size, size_t max);
/* Frees the pooled blocks. */
void buf_pool_free(struct buf_pool *p);
/* Gives an empty, memoryless b a block of p->size bytes (pooled or new).
 * 0 or -ENOMEM. No-op when b already has memory. */
int buf_take(struct buf *b, struct buf_pool *p);
/* Takes b's memory away (b is empty and memoryless after): into the pool
 * when it is a p->size block and there is room, else freed. */
void buf_give(struct buf *b, struct buf_pool *p);

#endif
