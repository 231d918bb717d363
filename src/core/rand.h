/* rand.h — fast non-cryptographic randomness for ids and load balancing.
 *
 * xoshiro256** per thread, seeded from getrandom(2) on first use: request
 * ids, trace/span ids, jitter and balancer choices need uniqueness and
 * speed, not secrecy (tokens and keys use OpenSSL's RAND_bytes instead).
 * Thread-safe: the state is thread-local. */
#ifndef STRATA_RAND_H
#define STRATA_RAND_H

#include <stddef.h>
#include <stdint.h>

uint64_t rand_u64(void);
/* Uniform in [0, bound) without modulo bias; bound 0 → 0. */
uint64_t rand_below(uint64_t bound);
/* Fills out with 2*nbytes lowercase hex digits and a NUL (out ≥ 2*nbytes+1).
 * Never all zeros (W3C trace ids forbid it). */
void rand_hex(char *out, size_t nbytes);

#endif
