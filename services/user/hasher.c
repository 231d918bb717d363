/* hasher.c — a fixed pool of threads running argon2id, a bounded FIFO. */
#include "hasher.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/loop.h"

struct hasher {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct hasher_job *head, *tail;
    unsigned queued, queue_max;
    bool is_stopping;
    unsigned nthreads;
    pthread_t threads[16];
};

static void run_job(struct hasher_job *j)
{
    size_t n = strlen(j->password);
    if (j->kind == HASHER_HASH)
        j->rc = crypto_pwhash_str(j->hash, j->password, n, crypto_pwhash_OPSLIMIT_INTERACTIVE,
                                  crypto_pwhash_MEMLIMIT_INTERACTIVE) == 0 ? 0 : -1;
    else
        j->rc = crypto_pwhash_str_verify(j->hash, j->password, n) == 0 ? 0 : -1;
    sodium_memzero(j->password, sizeof j->password);
}

static void deliver(void *arg)
{
    struct hasher_job *j = arg;
    j->done(j);
}

static void *worker(void *arg)
{
    struct hasher *h = arg;
    for (;;) {
        pthread_mutex_lock(&h->mu);
        while (!h->head && !h->is_stopping)
            pthread_cond_wait(&h->cv, &h->mu);
        if (h->is_stopping) {
            pthread_mutex_unlock(&h->mu);
            return NULL;
        }
        struct hasher_job *j = h->head;
        h->head = j->next;
        if (!h->head)
            h->tail = NULL;
        h->queued--;
        pthread_mutex_unlock(&h->mu);
        run_job(j);
        if (loop_post(j->loop, deliver, j) < 0) {
            /* The loop could not take it (out of memory): the submitter
             * never hears back; leaking the job is the lesser harm than
             * running its callback on the wrong thread. */
            log_error("hasher: cannot post a result back to its loop");
        }
    }
}

struct hasher *hasher_new(unsigned threads, unsigned queue_max)
{
    if (threads == 0 || threads > 16)
        return NULL;
    struct hasher *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->cv, NULL);
    h->queue_max = queue_max;
    /* Our threads take no signals: SIGTERM must reach the service's
     * signalfd, not kill the process from a thread that never blocked it. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    for (unsigned i = 0; i < threads; i++) {
        if (pthread_create(&h->threads[i], NULL, worker, h) != 0)
            break;
        h->nthreads++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (h->nthreads != threads) {
        hasher_free(h);
        return NULL;
    }
    return h;
}

void hasher_free(struct hasher *h)
{
    if (!h)
        return;
    pthread_mutex_lock(&h->mu);
    h->is_stopping = true;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
    for (unsigned i = 0; i < h->nthreads; i++)
        pthread_join(h->threads[i], NULL);
    pthread_mutex_destroy(&h->mu);
    pthread_cond_destroy(&h->cv);
    free(h);
}

int hasher_submit(struct hasher *h, struct hasher_job *j)
{
    if (!h || !j || !j->loop || !j->done)
        return -EINVAL;
    pthread_mutex_lock(&h->mu);
    if (h->queued >= h->queue_max || h->is_stopping) {
        pthread_mutex_unlock(&h->mu);
        return -EBUSY;
    }
    j->next = NULL;
    if (h->tail)
        h->tail->next = j;
    else
        h->head = j;
    h->tail = j;
    h->queued++;
    pthread_cond_signal(&h->cv);
    pthread_mutex_unlock(&h->mu);
    return 0;
}

int hasher_job_set_password(struct hasher_job *j, const char *password)
{
    size_t n = strlen(password);
    if (n >= sizeof j->password)
        return -EINVAL;
    memcpy(j->password, password, n + 1);
    return 0;
}

void hasher_job_free(struct hasher_job *j)
{
    if (!j)
        return;
    sodium_memzero(j->password, sizeof j->password);
    free(j);
}
