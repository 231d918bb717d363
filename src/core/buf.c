#include "core/buf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void buf_init(struct buf *b, size_t max)
{
    b->data = NULL;
    b->cap = b->rpos = b->wpos = 0;
    b->max = max;
}

void buf_free(struct buf *b)
{
    free(b->data);
    b->data = NULL;
    b->cap = b->rpos = b->wpos = 0;
}

int buf_reserve(struct buf *b, size_t n)
{
    size_t len = buf_len(b);

    if (b->cap - b->wpos >= n)
        return 0;
    if (len + n > b->max)
        return -ENOBUFS;
    /* Compacting is cheaper than growing when the head has room: pipelined
     * requests leave consumed bytes in front. */
    if (b->cap >= len + n) {
        memmove(b->data, b->data + b->rpos, len);
        b->rpos = 0;
        b->wpos = len;
        return 0;
    }
    size_t cap = b->cap ? b->cap : 512;
    while (cap < len + n)
        cap *= 2;
    if (cap > b->max)
        cap = b->max;
    char *p = malloc(cap);
    if (!p)
        return -ENOMEM;
    if (len)
        memcpy(p, b->data + b->rpos, len);
    free(b->data);
    b->data = p;
    b->cap = cap;
    b->rpos = 0;
    b->wpos = len;
    return 0;
}

void buf_consume(struct buf *b, size_t n)
{
    if (n >= buf_len(b)) {
        b->rpos = b->wpos = 0;
        return;
    }
    b->rpos += n;
}

int buf_append(struct buf *b, const void *p, size_t n)
{
    int rc = buf_reserve(b, n);
    if (rc)
        return rc;
    if (n)
        memcpy(b->data + b->wpos, p, n);
    b->wpos += n;
    return 0;
}

int buf_append_cstr(struct buf *b, const char *s)
{
    return buf_append(b, s, strlen(s));
}

int buf_vappendf(struct buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    char small[256];
    int n = vsnprintf(small, sizeof small, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return -EINVAL;
    if ((size_t)n < sizeof small)
        return buf_append(b, small, (size_t)n);
    int rc = buf_reserve(b, (size_t)n + 1);
    if (rc)
        return rc;
    vsnprintf(b->data + b->wpos, (size_t)n + 1, fmt, ap);
    b->wpos += (size_t)n;
    return 0;
}

int buf_appendf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = buf_vappendf(b, fmt, ap);
    va_end(ap);
    return rc;
}

int buf_append_u64(struct buf *b, unsigned long long v)
{
    char tmp[24];
    size_t i = sizeof tmp;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return buf_append(b, tmp + i, sizeof tmp - i);
}

void buf_pool_init(struct buf_pool *p, size_t size, size_t max)
{
    p->blocks = NULL;
    p->n = 0;
    p->max = max;
    p->size = size;
}

void buf_pool_free(struct buf_pool *p)
{
    for (size_t i = 0; i < p->n; i++)
        free(p->blocks[i]);
    free(p->blocks);
    p->blocks = NULL;
    p->n = 0;
}

int buf_take(struct buf *b, struct buf_pool *p)
{
    if (b->data)
        return 0;
    char *mem = p->n ? p->blocks[--p->n] : malloc(p->size);
    if (!mem)
        return -ENOMEM;
    b->data = mem;
    b->cap = p->size < b->max ? p->size : b->max;
    b->rpos = b->wpos = 0;
    return 0;
}

void buf_give(struct buf *b, struct buf_pool *p)
{
    if (!b->data)
        return;
    if (b->cap == p->size && p->n < p->max) {
        if (!p->blocks) {
            p->blocks = malloc(p->max * sizeof *p->blocks);
            if (!p->blocks)
                goto drop;
        }
        p->blocks[p->n++] = b->data;
        b->data = NULL;
        b->cap = b->rpos = b->wpos = 0;
        return;
    }
drop:
    buf_free(b);
}
