#include "core/rand.h"

#include <stdbool.h>
#include <sys/random.h>
#include <time.h>

static __thread uint64_t state[4];
static __thread bool is_seeded;

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static void seed(void)
{
    if (getrandom(state, sizeof state, 0) != (ssize_t)sizeof state) {
        /* No entropy source: still unique per thread and time, which is all ids need. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        state[0] = (uint64_t)ts.tv_nsec ^ 0x9e3779b97f4a7c15ull;
        state[1] = (uint64_t)ts.tv_sec ^ (uint64_t)(uintptr_t)&ts;
        state[2] = 0xbf58476d1ce4e5b9ull;
        state[3] = 0x94d049bb133111ebull;
    }
    if (!(state[0] | state[1] | state[2] | state[3]))
        state[0] = 1;
    is_seeded = true;
}

uint64_t rand_u64(void)
{
    if (!is_seeded)
        seed();
    uint64_t result = rotl(state[1] * 5, 7) * 9;
    uint64_t t = state[1] << 17;
    state[2] ^= state[0];
    state[3] ^= state[1];
    state[1] ^= state[2];
    state[0] ^= state[3];
    state[2] ^= t;
    state[3] = rotl(state[3], 45);
    return result;
}

uint64_t rand_below(uint64_t bound)
{
    if (bound == 0)
        return 0;
    uint64_t threshold = -bound % bound;
    for (;;) {
        uint64_t r = rand_u64();
        if (r >= threshold)
            return r % bound;
    }
}

void rand_hex(char *out, size_t nbytes)
{
    static const char hex[] = "0123456789abcdef";
    for (;;) {
        bool nonzero = false;
        for (size_t i = 0; i < nbytes; i += 8) {
            uint64_t r = rand_u64();
            for (size_t j = 0; j < 8 && i + j < nbytes; j++) {
                unsigned char b = (unsigned char)(r >> (8 * j));
                nonzero |= b != 0;
                out[2 * (i + j)] = hex[b >> 4];
                out[2 * (i + j) + 1] = hex[b & 15];
            }
        }
        out[2 * nbytes] = '\0';
        if (nonzero || nbytes == 0)
            return;
    }
}
