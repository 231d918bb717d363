/* arena.h — per-request memory: many small allocations, one free.
 *
 * A request's parsed views, decoded strings and response scratch live in its
 * arena and are released together when the request ends (arena_reset keeps
 * the first chunk for the next request on the same connection, so a
 * keep-alive connection allocates nothing per request in the common case).
 * Not thread-safe. */
#ifndef STRATA_ARENA_H
#define STRATA_ARENA_H

#include <stddef.h>

#include "core/str.h"

struct arena_chunk;

/* Chunks of the default size, kept for reuse by the arenas of one loop
 * (bounded; not thread-safe). */
struct arena_pool {
    struct arena_chunk *free;
    size_t n, max;
    size_t chunk_size;
};

void arena_pool_init(struct arena_pool *p, size_t chunk_size, size_t max);
void arena_pool_free(struct arena_pool *p);

struct arena {
    struct arena_chunk *head;
    size_t chunk_size; /* default size of new chunks */
    size_t used_total; /* bytes handed out since the last reset */
    size_t max_total;  /* 0 = unbounded; else arena_alloc fails past it */
    struct arena_pool *pool; /* optional: where default-size chunks come from and go back */
};

/* chunk_size: bytes per chunk (a larger request gets its own chunk);
 * max_total: bound on bytes handed out between resets, 0 for none. */
void arena_init(struct arena *a, size_t chunk_size, size_t max_total);
/* Returns 16-byte aligned memory, or NULL on allocation failure or bound. */
void *arena_alloc(struct arena *a, size_t n);
/* A NUL-terminated copy of s in the arena, or NULL. */
char *arena_strdup(struct arena *a, struct str s);
/* Frees every allocation; keeps the first chunk for reuse. */
void arena_reset(struct arena *a);
/* Frees everything (default-size chunks go back to the pool, if any). */
void arena_free(struct arena *a);
/* Takes chunks from and returns them to p (chunk_size must match). */
static inline void arena_set_pool(struct arena *a, struct arena_pool *p) { a->pool = p; }

#endif
