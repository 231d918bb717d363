/* hasher.h — argon2id password hashing off the event loops.
 *
 * crypto_pwhash_str with OPSLIMIT/MEMLIMIT_INTERACTIVE costs ~100 ms of CPU
 * and 64 MiB per call: on a loop thread it would stall every connection of
 * that worker. A small pool of threads does it; the result comes back to
 * the submitting loop through loop_post. The queue is bounded: past it a
 * submission fails with -EBUSY, which callers answer with 503.
 *
 * One hasher per process, shared by every worker loop. */
#ifndef USER_HASHER_H
#define USER_HASHER_H

#include <sodium.h>
#include <stdbool.h>
#include <stddef.h>

#include "validate.h"

struct loop;
struct hasher;

enum hasher_kind {
    HASHER_HASH,   /* password → hash */
    HASHER_VERIFY, /* (hash, password) → rc 0 when they match */
};

struct hasher_job {
    enum hasher_kind kind;
    char password[PASSWORD_MAX * 4 + 1]; /* UTF-8: ≤ 4 bytes per character; wiped after use */
    char hash[crypto_pwhash_STRBYTES];   /* HASH: out; VERIFY: in */
    int rc;                              /* 0 ok/match; -1 mismatch or failure */
    /* Called on loop (the submitter's thread) when done. The job belongs to
     * the submitter, before and after. */
    struct loop *loop;
    void (*done)(struct hasher_job *j);
    void *arg;
    struct hasher_job *next; /* queue link, internal */
};

/* Starts `threads` threads (1..16) with room for `queue_max` waiting jobs.
 * NULL on failure. Call after sodium_init(). */
struct hasher *hasher_new(unsigned threads, unsigned queue_max);
/* Stops the threads after the jobs running now (queued jobs are dropped,
 * their done callbacks never run). */
void hasher_free(struct hasher *h);
/* Queues j. 0; -EBUSY when queue_max jobs are already waiting; -EINVAL. Any
 * thread. */
int hasher_submit(struct hasher *h, struct hasher_job *j);
/* Copies password into j (≤ sizeof j->password - 1 bytes). -EINVAL if too long. */
int hasher_job_set_password(struct hasher_job *j, const char *password);
/* Wipes the password and frees j (any thread). NULL-tolerant. */
void hasher_job_free(struct hasher_job *j);

#endif
