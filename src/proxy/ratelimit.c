/* ratelimit.c — GCRA, locally in sharded hash tables and globally in a
 * Redis Lua script (see ratelimit.h).
 *
 * Local: each shard is a chained hash table over a fixed array of entries
 * (40 bytes each: the 128-bit key hash, the TAT, a chain link and LRU
 * links), allocated once. A full shard recycles an entry: the first expired
 * one among the RL_EVICT_SCAN least recently used, else the least recently
 * used one.
 *
 * Global: one EVALSHA per check on the worker's own Redis connection; a
 * NOSCRIPT answer (Redis restarted or SCRIPT FLUSH) re-sends the same check
 * as EVAL, which caches the script again. Every check has a struct
 * rl_pending, recycled through a free list, so the steady state allocates
 * nothing of ours; a cancelled check keeps its rl_pending until Redis
 * answers, with the callback cleared. */
#include "proxy/ratelimit.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <sodium.h>

#include "core/log.h"
#include "core/loop.h"
#include "core/metrics.h"
#include "core/redis.h"

/* 2^52 µs: every sum the script makes stays below 2^53, where Lua's doubles
 * are exact integers (now ≈ 2^50.6 µs in 2026, plus tau, plus T). */
#define RL_TAU_MAX_US (1ull << 52)
/* now_ms beyond this (2^52 / 1000, 142 years of a monotonic clock) is
 * clamped, so the µs arithmetic below cannot overflow. */
#define RL_NOW_MAX_MS (RL_TAU_MAX_US / 1000)

/* ---- metrics ---------------------------------------------------------------- */

static _Atomic uint64_t redis_failures;
static _Atomic uint64_t local_evictions;
static pthread_once_t metrics_once = PTHREAD_ONCE_INIT;

static double read_counter(void *arg)
{
    return (double)atomic_load_explicit((_Atomic uint64_t *)arg, memory_order_relaxed);
}

static void metrics_init(void)
{
    struct metrics_registry *r = metrics_default();
    if (!r)
        return;
    /* Best effort: without the families the counters still count. */
    metrics_counter_func(r, "strata_proxy_ratelimit_redis_failures_total",
                         "Global rate limit checks allowed without a Redis decision (fail open): "
                         "Redis unreachable, answering with an error, slower than the timeout, "
                         "or too many checks in flight.",
                         read_counter, &redis_failures);
    metrics_counter_func(r, "strata_proxy_ratelimit_local_evictions_total",
                         "Local rate limit entries with live state evicted because the limiter "
                         "was full (the key starts again with a full burst).",
                         read_counter, &local_evictions);
}

void rl_metrics_init(void)
{
    pthread_once(&metrics_once, metrics_init);
}

uint64_t rl_global_failures(void)
{
    return atomic_load_explicit(&redis_failures, memory_order_relaxed);
}

static void count_failure(void)
{
    atomic_fetch_add_explicit(&redis_failures, 1, memory_order_relaxed);
}

/* ---- GCRA ------------------------------------------------------------------- */

struct rl_params {
    uint64_t t_us;   /* emission interval */
    uint64_t tau_us; /* burst tolerance: burst * T */
    uint32_t burst;
};

static bool params_of(const struct proxy_rate_limit *cfg, struct rl_params *p)
{
    if (!cfg || cfg->requests == 0 || cfg->period_ms == 0)
        return false;
    p->burst = cfg->burst ? cfg->burst : cfg->requests;
    p->t_us = (uint64_t)cfg->period_ms * 1000 / cfg->requests;
    if (p->t_us == 0)
        p->t_us = 1;
    /* T ≤ 2^32 * 1000 < 2^42, so T ≤ RL_TAU_MAX_US and tau ≥ T holds. */
    p->tau_us = p->t_us > RL_TAU_MAX_US / p->burst ? RL_TAU_MAX_US : p->t_us * p->burst;
    return true;
}

/* One GCRA step on *tat (0: no state). Returns whether the request is
 * allowed; *reset_us = TAT afterwards - now, *retry_us = wait when denied. */
static bool gcra(uint64_t *tat, uint64_t now, const struct rl_params *p, uint64_t *reset_us,
                 uint64_t *retry_us)
{
    uint64_t start = *tat > now ? *tat : now;
    uint64_t next = start + p->t_us;
    if (next - now > p->tau_us) {
        *reset_us = start - now;
        *retry_us = next - now - p->tau_us;
        return false;
    }
    *tat = next;
    *reset_us = next - now;
    *retry_us = 0;
    return true;
}

static uint32_t ceil_s(uint64_t us)
{
    uint64_t s = us / 1000000 + (us % 1000000 != 0);
    return s > UINT32_MAX ? UINT32_MAX : (uint32_t)s;
}

static void decide(struct rl_decision *d, bool allowed, uint64_t reset_us, uint64_t retry_us,
                   const struct rl_params *p)
{
    d->allowed = allowed;
    d->failed_open = false;
    d->limit = p->burst;
    d->remaining = allowed && reset_us <= p->tau_us
                       ? (uint32_t)((p->tau_us - reset_us) / p->t_us)
                       : 0;
    d->reset_s = ceil_s(reset_us);
    d->retry_after_s = 0;
    if (!allowed) {
        uint32_t s = ceil_s(retry_us);
        d->retry_after_s = s ? s : 1;
    }
}

static void decide_fail_open(struct rl_decision *d, uint32_t burst)
{
    *d = (struct rl_decision){ .allowed = true, .failed_open = true, .limit = burst };
}

static uint32_t burst_of(const struct proxy_rate_limit *cfg)
{
    return !cfg ? 0 : cfg->burst ? cfg->burst : cfg->requests;
}

/* ---- local ------------------------------------------------------------------ */

#define RL_NIL UINT32_MAX
/* 64 shards: far more than the worker threads of one process (one per core),
 * so two workers rarely want the same mutex at once. */
#define RL_MAX_SHARDS 64u
/* Least recently used entries looked at for an expired one before evicting
 * live state: bounded work per insert. */
#define RL_EVICT_SCAN 8
/* Composite keys up to this length are hashed with SipHash from the stack;
 * longer ones (a 1 KiB name, a long header value) with keyed BLAKE2b. */
#define RL_HASH_STACK 256

struct rl_entry {
    uint64_t h[2];   /* SipHash-128 of name '\0' key */
    uint64_t tat_us;
    uint32_t chain;  /* next in the bucket, RL_NIL */
    uint32_t newer, older; /* LRU list */
};

struct rl_shard {
    _Alignas(64) pthread_mutex_t mu; /* one cache line apart: no false sharing between shards */
    struct rl_entry *entries;
    uint32_t *buckets;
    uint32_t mask; /* buckets - 1 */
    uint32_t cap, used;
    uint32_t newest, oldest;
};

struct rl_local {
    struct rl_shard *shards;
    uint32_t nshards;
    unsigned char secret[crypto_shorthash_siphashx24_KEYBYTES];
};

static uint32_t pow2_at_least(uint32_t n)
{
    uint32_t p = 1;
    while (p < n)
        p <<= 1;
    return p;
}

struct rl_local *rl_local_new(size_t max_keys)
{
    if (max_keys == 0 || max_keys > (1u << 31)) {
        errno = EINVAL;
        return NULL;
    }
    if (sodium_init() < 0) {
        errno = ENOMEM;
        return NULL;
    }
    rl_metrics_init();
    struct rl_local *rl = calloc(1, sizeof *rl);
    if (!rl)
        goto nomem;
    uint32_t n = RL_MAX_SHARDS;
    while (n > max_keys)
        n >>= 1;
    rl->shards = aligned_alloc(_Alignof(struct rl_shard), n * sizeof *rl->shards);
    if (!rl->shards)
        goto nomem;
    memset(rl->shards, 0, n * sizeof *rl->shards);
    randombytes_buf(rl->secret, sizeof rl->secret);
    for (uint32_t i = 0; i < n; i++) {
        struct rl_shard *s = &rl->shards[i];
        s->cap = (uint32_t)(max_keys / n + (i < max_keys % n));
        uint32_t nb = pow2_at_least(s->cap);
        s->mask = nb - 1;
        s->newest = s->oldest = RL_NIL;
        s->entries = malloc(s->cap * sizeof *s->entries);
        s->buckets = malloc(nb * sizeof *s->buckets);
        pthread_mutex_init(&s->mu, NULL);
        rl->nshards = i + 1;
        if (!s->entries || !s->buckets)
            goto nomem;
        memset(s->buckets, 0xff, nb * sizeof *s->buckets); /* RL_NIL */
    }
    return rl;
nomem:
    rl_local_free(rl);
    errno = ENOMEM;
    return NULL;
}

void rl_local_free(struct rl_local *rl)
{
    if (!rl)
        return;
    for (uint32_t i = 0; i < rl->nshards; i++) {
        pthread_mutex_destroy(&rl->shards[i].mu);
        free(rl->shards[i].entries);
        free(rl->shards[i].buckets);
    }
    free(rl->shards);
    free(rl);
}

static void local_hash(const struct rl_local *rl, const char *name, struct str key, uint64_t h[2])
{
    size_t nn = name ? strlen(name) + 1 : 1; /* with its NUL: "a"+"bc" ≠ "ab"+"c" */
    unsigned char out[16];
    if (nn + key.n <= RL_HASH_STACK) {
        unsigned char buf[RL_HASH_STACK];
        memcpy(buf, name ? name : "", nn);
        if (key.n)
            memcpy(buf + nn, key.p, key.n);
        crypto_shorthash_siphashx24(out, buf, nn + key.n, rl->secret);
    } else {
        crypto_generichash_state st;
        crypto_generichash_init(&st, rl->secret, sizeof rl->secret, sizeof out);
        crypto_generichash_update(&st, (const unsigned char *)(name ? name : ""), nn);
        if (key.n)
            crypto_generichash_update(&st, (const unsigned char *)key.p, key.n);
        crypto_generichash_final(&st, out, sizeof out);
    }
    memcpy(h, out, sizeof out);
}

static void lru_unlink(struct rl_shard *s, uint32_t i)
{
    struct rl_entry *e = &s->entries[i];
    if (e->newer != RL_NIL)
        s->entries[e->newer].older = e->older;
    else
        s->newest = e->older;
    if (e->older != RL_NIL)
        s->entries[e->older].newer = e->newer;
    else
        s->oldest = e->newer;
}

static void lru_push_newest(struct rl_shard *s, uint32_t i)
{
    struct rl_entry *e = &s->entries[i];
    e->newer = RL_NIL;
    e->older = s->newest;
    if (s->newest != RL_NIL)
        s->entries[s->newest].newer = i;
    else
        s->oldest = i;
    s->newest = i;
}

static void chain_unlink(struct rl_shard *s, uint32_t i)
{
    uint32_t *link = &s->buckets[s->entries[i].h[0] & s->mask];
    while (*link != i)
        link = &s->entries[*link].chain;
    *link = s->entries[i].chain;
}

/* An entry to reuse in a full shard. */
static uint32_t pick_victim(struct rl_shard *s, uint64_t now)
{
    uint32_t i = s->oldest;
    for (int k = 0; k < RL_EVICT_SCAN && i != RL_NIL; k++, i = s->entries[i].newer)
        if (s->entries[i].tat_us <= now)
            return i;
    atomic_fetch_add_explicit(&local_evictions, 1, memory_order_relaxed);
    return s->oldest;
}

/* The entry of h, made (TAT 0: no state) if absent, as the newest. Under s->mu. */
static struct rl_entry *shard_get(struct rl_shard *s, const uint64_t h[2], uint64_t now)
{
    uint32_t *head = &s->buckets[h[0] & s->mask];
    uint32_t i = *head;
    while (i != RL_NIL && (s->entries[i].h[0] != h[0] || s->entries[i].h[1] != h[1]))
        i = s->entries[i].chain;
    if (i != RL_NIL) {
        if (s->newest != i) {
            lru_unlink(s, i);
            lru_push_newest(s, i);
        }
        return &s->entries[i];
    }
    if (s->used < s->cap) {
        i = s->used++;
    } else {
        i = pick_victim(s, now);
        chain_unlink(s, i);
        lru_unlink(s, i);
    }
    struct rl_entry *e = &s->entries[i];
    e->h[0] = h[0];
    e->h[1] = h[1];
    e->tat_us = 0;
    e->chain = *head;
    *head = i;
    lru_push_newest(s, i);
    return e;
}

void rl_local_check(struct rl_local *rl, const struct proxy_rate_limit *cfg, struct str key,
                    uint64_t now_ms, struct rl_decision *out)
{
    struct rl_params p;
    if (!rl || !params_of(cfg, &p)) {
        decide_fail_open(out, burst_of(cfg));
        return;
    }
    uint64_t h[2];
    local_hash(rl, cfg->name, key, h);
    uint64_t now = (now_ms > RL_NOW_MAX_MS ? RL_NOW_MAX_MS : now_ms) * 1000;
    /* Buckets take the low bits of h[0], shards the top ones. */
    struct rl_shard *s = &rl->shards[(h[0] >> 58) & (rl->nshards - 1)];
    uint64_t reset_us, retry_us;
    pthread_mutex_lock(&s->mu);
    struct rl_entry *e = shard_get(s, h, now);
    bool allowed = gcra(&e->tat_us, now, &p, &reset_us, &retry_us);
    pthread_mutex_unlock(&s->mu);
    decide(out, allowed, reset_us, retry_us, &p);
}

size_t rl_local_count(struct rl_local *rl)
{
    size_t n = 0;
    for (uint32_t i = 0; rl && i < rl->nshards; i++) {
        pthread_mutex_lock(&rl->shards[i].mu);
        n += rl->shards[i].used;
        pthread_mutex_unlock(&rl->shards[i].mu);
    }
    return n;
}

/* ---- global ----------------------------------------------------------------- */

/* KEYS[1] the state; ARGV[1] T, ARGV[2] tau, in µs. Returns {allowed,
 * TAT - now, retry} in µs. TIME is Redis' clock, the same for every
 * gateway. replicate_commands: Redis < 5 refuses writes after TIME without
 * it (later versions replicate effects anyway). The state expires when its
 * TAT passes, i.e. when it would read as "no state". */
static const char rl_script[] =
    "if redis.replicate_commands then redis.replicate_commands() end\n"
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local T = tonumber(ARGV[1])\n"
    "local tau = tonumber(ARGV[2])\n"
    "local tat = tonumber(redis.call('GET', KEYS[1])) or now\n"
    "if tat < now then tat = now end\n"
    "local nxt = tat + T\n"
    "if nxt - now > tau then return {0, tat - now, nxt - now - tau} end\n"
    "redis.call('SET', KEYS[1], string.format('%d', nxt), 'PX', math.ceil((nxt - now) / 1000))\n"
    "return {1, nxt - now, 0}\n";

static char rl_script_sha[41];
static bool rl_init_ok;
static pthread_once_t global_once = PTHREAD_ONCE_INIT;

static void global_init(void)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (sodium_init() < 0 ||
        EVP_Digest(rl_script, sizeof rl_script - 1, md, &n, EVP_sha1(), NULL) != 1 || n != 20)
        return;
    for (unsigned i = 0; i < n; i++)
        snprintf(rl_script_sha + 2 * i, 3, "%02x", md[i]);
    rl_init_ok = true;
}

/* "strata:rl:" NAME ":" KEY, each part at most 128 bytes (else '#' + 32 hex). */
#define RL_PART_MAX 128
#define RL_REDIS_KEY_MAX (sizeof "strata:rl:" - 1 + RL_PART_MAX + 1 + RL_PART_MAX)

struct rl_pending {
    struct rl_pending *prev, *next; /* sent list; next alone in the failed and free lists */
    struct rl_global *g;
    rl_cb cb; /* NULL once cancelled */
    void *arg;
    uint64_t t_us, tau_us;
    uint32_t burst;
    bool is_eval; /* sent as EVAL (after NOSCRIPT): no second retry */
    uint16_t key_n;
    char key[RL_REDIS_KEY_MAX];
};

struct rl_global {
    struct loop *loop;
    struct redis_client *redis;
    struct rl_pending sent;                      /* sentinel: checks Redis owes an answer */
    struct rl_pending *failed_head, *failed_tail; /* failed before sending: answered on defer */
    struct rl_pending *running;                  /* the failed batch being answered */
    struct rl_pending *free_list;
    uint32_t nlive; /* rl_pending not on the free list */
    struct loop_defer fail_defer;
    int depth;      /* >0 while inside a user callback */
    bool is_freeing;
    bool is_erroring; /* an error answer was logged; reset by the next good one */
};

static size_t put_part(char *dst, const char *p, size_t n)
{
    if (n <= RL_PART_MAX && (n == 0 || p[0] != '#')) {
        if (n)
            memcpy(dst, p, n);
        return n;
    }
    /* Unkeyed: every gateway must name the same key. */
    unsigned char md[16];
    crypto_generichash(md, sizeof md, (const unsigned char *)p, n, NULL, 0);
    static const char hex[] = "0123456789abcdef";
    dst[0] = '#';
    for (size_t i = 0; i < sizeof md; i++) {
        dst[1 + 2 * i] = hex[md[i] >> 4];
        dst[2 + 2 * i] = hex[md[i] & 15];
    }
    return 1 + 2 * sizeof md;
}

static size_t u64_dec(char *out, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    return n;
}

struct rl_global *rl_global_new(struct loop *l, const char *redis_url)
{
    rl_metrics_init();
    pthread_once(&global_once, global_init);
    if (!rl_init_ok || !l)
        return NULL;
    struct rl_global *g = calloc(1, sizeof *g);
    if (!g)
        return NULL;
    g->loop = l;
    g->sent.next = g->sent.prev = &g->sent;
    g->redis = redis_client_new(l, &(struct redis_config){
                                       .url = redis_url,
                                       .command_timeout_ms = RL_GLOBAL_TIMEOUT_MS,
                                       .max_pending = RL_GLOBAL_MAX_PENDING,
                                   });
    if (!g->redis) {
        free(g);
        return NULL;
    }
    return g;
}

static void free_chain(struct rl_pending *p)
{
    while (p) {
        struct rl_pending *next = p->next;
        free(p);
        p = next;
    }
}

static void finish_free(struct rl_global *g)
{
    for (struct rl_pending *p = g->sent.next, *next; p != &g->sent; p = next) {
        next = p->next;
        free(p);
    }
    free_chain(g->failed_head);
    free_chain(g->running);
    free_chain(g->free_list);
    free(g);
}

static void maybe_finish_free(struct rl_global *g)
{
    if (g->is_freeing && g->depth == 0)
        finish_free(g);
}

void rl_global_free(struct rl_global *g)
{
    if (!g || g->is_freeing)
        return;
    g->is_freeing = true;
    /* Drops the commands in flight without calling on_reply. */
    redis_client_free(g->redis);
    g->redis = NULL;
    loop_defer_cancel(g->loop, &g->fail_defer);
    maybe_finish_free(g); /* else when the outermost callback returns */
}

bool rl_global_is_connected(const struct rl_global *g)
{
    return g && redis_is_connected(g->redis);
}

static void recycle(struct rl_global *g, struct rl_pending *p)
{
    p->cb = NULL;
    p->arg = NULL;
    p->next = g->free_list;
    g->free_list = p;
    g->nlive--;
}

/* Runs p's callback with d after recycling p (the callback may start new
 * checks, cancel others or free g). */
static void deliver(struct rl_global *g, struct rl_pending *p, const struct rl_decision *d)
{
    rl_cb cb = p->cb;
    void *arg = p->arg;
    recycle(g, p);
    if (!cb)
        return;
    g->depth++;
    cb(d, arg);
    g->depth--;
    maybe_finish_free(g);
}

static void on_reply(int err, redisReply *r, void *arg);

static int send_check(struct rl_global *g, struct rl_pending *p)
{
    char t[24], tau[24];
    const char *argv[6] = { p->is_eval ? "EVAL" : "EVALSHA", p->is_eval ? rl_script : rl_script_sha,
                            "1", p->key, t, tau };
    size_t len[6] = { strlen(argv[0]), p->is_eval ? sizeof rl_script - 1 : 40, 1, p->key_n,
                      u64_dec(t, p->t_us), u64_dec(tau, p->tau_us) };
    int rc = redis_command_argv(g->redis, on_reply, p, 6, argv, len);
    if (rc == 0) {
        p->next = &g->sent;
        p->prev = g->sent.prev;
        g->sent.prev->next = p;
        g->sent.prev = p;
    }
    return rc;
}

static bool is_noscript(const redisReply *r)
{
    return r && r->type == REDIS_REPLY_ERROR && r->len >= 8 && !memcmp(r->str, "NOSCRIPT", 8);
}

/* Redis' answer {allowed, TAT - now, retry} → d. */
static bool parse_reply(const redisReply *r, const struct rl_pending *p, struct rl_decision *d)
{
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 3)
        return false;
    for (size_t i = 0; i < 3; i++)
        if (r->element[i]->type != REDIS_REPLY_INTEGER || r->element[i]->integer < 0)
            return false;
    struct rl_params par = { .t_us = p->t_us, .tau_us = p->tau_us, .burst = p->burst };
    decide(d, r->element[0]->integer == 1, (uint64_t)r->element[1]->integer,
           (uint64_t)r->element[2]->integer, &par);
    return true;
}

static void on_reply(int err, redisReply *r, void *arg)
{
    struct rl_pending *p = arg;
    struct rl_global *g = p->g;
    p->prev->next = p->next;
    p->next->prev = p->prev;
    if (!p->cb) { /* cancelled: nobody to answer, nothing to count */
        recycle(g, p);
        return;
    }
    if (err == 0 && !p->is_eval && is_noscript(r)) {
        p->is_eval = true;
        if (send_check(g, p) == 0)
            return;
    }
    struct rl_decision d;
    if (err == 0 && parse_reply(r, p, &d)) {
        g->is_erroring = false;
    } else {
        count_failure();
        /* Transport failures are logged by redis.c; log error answers once. */
        if (err == 0 && !g->is_erroring) {
            g->is_erroring = true;
            log_warn("rate limit script failed; allowing requests",
                     LOG_STRV("reply", r && r->type == REDIS_REPLY_ERROR
                                           ? str_make(r->str, r->len)
                                           : STR_LIT("unexpected reply")));
        }
        decide_fail_open(&d, p->burst);
    }
    deliver(g, p, &d);
}

static void fail_run(void *data)
{
    struct rl_global *g = data;
    /* A batch of its own: checks failed by these callbacks go to the next defer. */
    g->running = g->failed_head;
    g->failed_head = g->failed_tail = NULL;
    g->depth++;
    while (g->running && !g->is_freeing) {
        struct rl_pending *p = g->running;
        g->running = p->next;
        struct rl_decision d;
        decide_fail_open(&d, p->burst);
        if (p->cb)
            count_failure();
        deliver(g, p, &d);
    }
    g->depth--;
    maybe_finish_free(g);
}

int rl_global_check(struct rl_global *g, const struct proxy_rate_limit *cfg, struct str key,
                    rl_cb cb, void *arg, struct rl_pending **out)
{
    struct rl_params par;
    if (!g || !cb || g->is_freeing || !params_of(cfg, &par) || (key.n && !key.p))
        return -EINVAL;
    if (g->nlive >= RL_GLOBAL_MAX_PENDING) {
        count_failure();
        return -ENOBUFS;
    }
    struct rl_pending *p = g->free_list;
    if (p) {
        g->free_list = p->next;
    } else if (!(p = malloc(sizeof *p))) {
        count_failure();
        return -ENOMEM;
    }
    g->nlive++;
    p->g = g;
    p->cb = cb;
    p->arg = arg;
    p->t_us = par.t_us;
    p->tau_us = par.tau_us;
    p->burst = par.burst;
    p->is_eval = false;
    static const char prefix[] = "strata:rl:";
    size_t n = sizeof prefix - 1;
    memcpy(p->key, prefix, n);
    const char *name = cfg->name ? cfg->name : "";
    n += put_part(p->key + n, name, strlen(name));
    p->key[n++] = ':';
    n += put_part(p->key + n, key.p, key.n);
    p->key_n = (uint16_t)n;
    int rc = send_check(g, p);
    if (rc < 0) {
        /* Not sent (out of memory): fail open all the same, but later. */
        p->next = NULL;
        if (g->failed_tail)
            g->failed_tail->next = p;
        else
            g->failed_head = p;
        g->failed_tail = p;
        loop_defer(g->loop, &g->fail_defer, fail_run, g);
    }
    if (out)
        *out = p;
    return 0;
}

void rl_global_cancel(struct rl_pending *p)
{
    if (!p)
        return;
    /* It stays where it is (sent or failed list) and is recycled there. */
    p->cb = NULL;
    p->arg = NULL;
}
