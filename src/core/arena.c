#include "core/arena.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct arena_chunk {
    struct arena_chunk *next;
    size_t size;
    size_t used;
    _Alignas(16) unsigned char mem[];
};

void arena_init(struct arena *a, size_t chunk_size, size_t max_total)
{
    a->head = NULL;
    a->chunk_size = chunk_size ? chunk_size : 4096;
    a->used_total = 0;
    a->max_total = max_total;
    a->pool = NULL;
}

void arena_pool_init(struct arena_pool *p, size_t chunk_size, size_t max)
{
    p->free = NULL;
    p->n = 0;
    p->max = max;
    p->chunk_size = chunk_size;
}

void arena_pool_free(struct arena_pool *p)
{
    while (p->free) {
        struct arena_chunk *next = p->free->next;
        free(p->free);
        p->free = next;
    }
    p->n = 0;
}

static struct arena_chunk *chunk_new(struct arena *a, size_t size)
{
    struct arena_pool *p = a->pool;
    if (p && size == p->chunk_size && p->free) {
        struct arena_chunk *c = p->free;
        p->free = c->next;
        p->n--;
        return c;
    }
    struct arena_chunk *c = malloc(sizeof *c + size);
    if (c)
        c->size = size;
    return c;
}

static void chunk_release(struct arena *a, struct arena_chunk *c)
{
    struct arena_pool *p = a->pool;
    if (p && c->size == p->chunk_size && p->n < p->max) {
        c->next = p->free;
        p->free = c;
        p->n++;
        return;
    }
    free(c);
}

void *arena_alloc(struct arena *a, size_t n)
{
    size_t need = (n + 15) & ~(size_t)15;

    if (need < n)
        return NULL;
    if (a->max_total && a->used_total + need > a->max_total)
        return NULL;
    struct arena_chunk *c = a->head;
    if (!c || c->size - c->used < need) {
        size_t size = need > a->chunk_size ? need : a->chunk_size;
        c = chunk_new(a, size);
        if (!c)
            return NULL;
        c->used = 0;
        /* A big one-off chunk goes behind the head so the head's free space
         * stays usable for the small allocations that follow. */
        if (a->head && need > a->chunk_size) {
            c->next = a->head->next;
            a->head->next = c;
        } else {
            c->next = a->head;
            a->head = c;
        }
    }
    void *p = c->mem + c->used;
    c->used += need;
    a->used_total += need;
    return p;
}

char *arena_strdup(struct arena *a, struct str s)
{
    char *p = arena_alloc(a, s.n + 1);
    if (!p)
        return NULL;
    if (s.n)
        memcpy(p, s.p, s.n);
    p[s.n] = '\0';
    return p;
}

void arena_reset(struct arena *a)
{
    struct arena_chunk *c = a->head;
    if (!c)
        return;
    /* Keep the oldest chunk of the default size: it is what the next request needs. */
    struct arena_chunk *keep = NULL;
    while (c) {
        struct arena_chunk *next = c->next;
        if (!keep && c->size == a->chunk_size) {
            keep = c;
        } else {
            chunk_release(a, c);
        }
        c = next;
    }
    if (keep) {
        keep->next = NULL;
        keep->used = 0;
    }
    a->head = keep;
    a->used_total = 0;
}

void arena_free(struct arena *a)
{
    struct arena_chunk *c = a->head;
    while (c) {
        struct arena_chunk *next = c->next;
        chunk_release(a, c);
        c = next;
    }
    a->head = NULL;
    a->used_total = 0;
}
