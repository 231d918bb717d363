/* authn.c — JWT authentication for the gateway (see authn.h).
 *
 * A check: find the one Authorization field and its bearer token; refuse
 * it unparsed when too long; hash it (keyed BLAKE2b-256) and look it up in
 * the verified-token cache; on a miss, check its shape, then jwt_verify it
 * at once with the provider's current key set. Only an unknown kid (a
 * rotation, or no set fetched yet) goes to jwks_cache_verify, which waits
 * for a (rate-limited) refetch and answers later on the loop: everything
 * else is decided synchronously, and the header is checked (alg none, HS*,
 * allowlist) before any signature work in both paths.
 *
 * The cache is a fixed pool of 4096 entries in hash chains (8192 buckets,
 * so chains average half an entry) and one LRU list: a lookup is a hash
 * and a compare or two, memory is fixed, and eviction takes the least
 * recently used. Fully associative on purpose: with 4-way sets, a cyclic
 * working set of half the capacity still missed ~16% of the time. The hash
 * is keyed with random bytes drawn at start, so nobody can choose tokens
 * that share a chain, and 256 bits make a collision (a hit that would skip
 * verification for another token) infeasible. */
#include "proxy/authn.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <sodium.h>

#include "core/jwt.h"
#include "core/log.h"

/* 4096 tokens per worker: ~300 KiB of entries. A token is reused for its
 * lifetime (15 min at auth-svc), so this covers thousands of active users
 * per worker before anything is verified twice. */
#define CACHE_ENTRIES 4096u
#define CACHE_BUCKETS 8192u /* a power of two */
#define NONE UINT32_MAX
#define DIGEST_BYTES 32
/* 2 KiB of claim text per cached token at most (a sub, an email and a few
 * roles take ~150 bytes): the cache stays under 4096 × 2 KiB = 8 MiB per
 * worker. Tokens with more are verified each time. */
#define MAX_CACHED_TEXT 2048

/* A verified token's sub and forwarded claims, formatted: what a cache hit
 * needs to answer. Text (sub, then each value) follows v[nvalues]. */
struct cached_claims {
    size_t text_len;
    uint16_t sub_len;
    uint16_t nvalues;
    struct {
        uint16_t claim; /* index in the provider's claims_to_headers */
        uint16_t len;
    } v[];
};

struct cache_entry {
    uint8_t digest[DIGEST_BYTES];
    uint32_t provider;
    uint32_t next;              /* in its bucket's chain, or the free list */
    uint32_t lru_prev, lru_next; /* towards the most / least recently used */
    uint64_t generation;        /* of the provider's key set it was verified with */
    int64_t valid_until;        /* exp + leeway: the first second it is no longer valid */
    struct cached_claims *claims; /* NULL: free */
};

struct provider_rt {
    const struct proxy_jwt_provider *cfg;
    struct jwks_cache *jwks;
    const char **audiences; /* NULL-terminated copy of cfg's, or NULL: aud not checked */
    /* The key set last seen, with a reference held so that its address
     * cannot be reused by a later set: a new address is a new generation. */
    struct jwks *seen;
    uint64_t generation;
};

struct authn {
    struct loop *loop;
    struct cache_entry *entries; /* CACHE_ENTRIES */
    uint32_t *buckets;           /* CACHE_BUCKETS chain heads */
    uint32_t lru_head, lru_tail; /* most and least recently used */
    uint32_t free_head;
    unsigned char hash_key[crypto_generichash_KEYBYTES];
    int64_t now; /* 0: the real clock */
    struct authn_stats stats;
    int depth;        /* > 0 while one of our callbacks runs */
    bool is_closing;  /* authn_free was called inside a callback */
    struct loop_defer close;
    size_t nproviders;
    struct provider_rt providers[];
};

struct authn_pending {
    struct authn *a;
    struct provider_rt *pr;
    struct arena *ar;
    authn_cb cb;
    void *arg;
    bool is_done;
};

static const struct {
    const char *name;
    const char *message;
} reasons[AUTHN_REASON_COUNT] = {
    [AUTHN_OK] = { "", NULL },
    [AUTHN_MISSING] = { "jwt_missing", "a bearer token is required" },
    [AUTHN_MALFORMED] = { "jwt_malformed", "the bearer token is malformed" },
    [AUTHN_EXPIRED] = { "jwt_expired", "the token has expired" },
    [AUTHN_NOT_YET_VALID] = { "jwt_not_yet_valid", "the token is not valid yet" },
    [AUTHN_BAD_SIGNATURE] = { "jwt_bad_signature", "the token's signature does not verify" },
    [AUTHN_BAD_ISSUER] = { "jwt_bad_issuer", "the token's issuer is not accepted" },
    [AUTHN_BAD_AUDIENCE] = { "jwt_bad_audience", "the token's audience is not accepted" },
    [AUTHN_ALG_NOT_ALLOWED] = { "jwt_alg_not_allowed", "the token's algorithm is not allowed" },
    [AUTHN_TOO_LARGE] = { "jwt_too_large", "the token is too large" },
    [AUTHN_UNKNOWN_KID] = { "jwt_unknown_kid", "the token was signed with an unknown key" },
    [AUTHN_JWKS_UNAVAILABLE] = { "jwks_unavailable", "the signing keys are not available" },
    [AUTHN_UNAVAILABLE] = { "jwt_unavailable", "the token could not be checked" },
};

const char *authn_reason_name(enum authn_reason r)
{
    return (unsigned)r < AUTHN_REASON_COUNT ? reasons[r].name : "jwt_unavailable";
}

static enum authn_reason from_jwt(enum jwt_error_reason r)
{
    switch (r) {
    case JWT_E_MALFORMED: return AUTHN_MALFORMED;
    case JWT_E_TOO_LARGE: return AUTHN_TOO_LARGE;
    case JWT_E_ALG_NOT_ALLOWED: return AUTHN_ALG_NOT_ALLOWED;
    case JWT_E_UNKNOWN_KID: return AUTHN_UNKNOWN_KID;
    case JWT_E_BAD_SIGNATURE: return AUTHN_BAD_SIGNATURE;
    case JWT_E_EXPIRED: return AUTHN_EXPIRED;
    case JWT_E_NOT_YET_VALID: return AUTHN_NOT_YET_VALID;
    case JWT_E_BAD_ISSUER: return AUTHN_BAD_ISSUER;
    case JWT_E_BAD_AUDIENCE: return AUTHN_BAD_AUDIENCE;
    case JWT_E_KEYS_UNAVAILABLE:
    case JWT_E_BUSY: return AUTHN_JWKS_UNAVAILABLE;
    case JWT_E_NOMEM: return AUTHN_UNAVAILABLE;
    }
    return AUTHN_MALFORMED;
}

static void refuse(struct authn_result *r, enum authn_reason code, const char *message)
{
    *r = (struct authn_result){
        .status = code == AUTHN_JWKS_UNAVAILABLE || code == AUTHN_UNAVAILABLE ? 503 : 401,
        .code = code,
        .reason = reasons[code].name,
        .message = message ? message : reasons[code].message,
    };
}

/* jwt.c's message is more precise ("alg ES256 does not match the key type")
 * and carries no token bytes; the static one is the fallback. */
static void refuse_jwt(struct authn_result *r, const struct jwt_error *err, struct arena *ar)
{
    const char *msg = err->message[0] ? arena_strdup(ar, str_from_cstr(err->message)) : NULL;
    refuse(r, from_jwt(err->reason), msg);
}

static int64_t clock_now(const struct authn *a) { return a->now ? a->now : (int64_t)time(NULL); }

static int64_t sat_add(int64_t a, int64_t b) { return a > INT64_MAX - b ? INT64_MAX : a + b; }

/* ---- the token -------------------------------------------------------------- */

enum token_kind { TOKEN_NONE, TOKEN_FOUND, TOKEN_MALFORMED };

static bool is_b64url(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

/* token68 (RFC 9110 §11.2) plus '.', the characters a JWT in some other
 * dress would be made of. */
static bool is_token_char(unsigned char c)
{
    return is_b64url(c) || c == '.' || c == '~' || c == '+' || c == '/' || c == '=';
}

/* Whether v holds something shaped like a JWT (a run of token characters
 * with two dots): a token sent without "Bearer ", under another scheme, or
 * glued to it ("Bearer:ey..") is refused as malformed, where credentials
 * of another scheme ("Basic dXNlcjpwYXNz") are not ours to judge. */
static bool looks_like_jwt(struct str v)
{
    size_t dots = 0;
    for (size_t i = 0; i < v.n; i++) {
        unsigned char c = (unsigned char)v.p[i];
        if (!is_token_char(c))
            dots = 0;
        else if (c == '.' && ++dots >= 2)
            return true;
    }
    return false;
}

static enum token_kind bearer_token(const struct http1_header *h, size_t n, struct str *out)
{
    const struct http1_header *auth = NULL;
    for (size_t i = 0; i < n; i++) {
        if (!str_eq_nocase(h[i].name, STR_LIT("Authorization")))
            continue;
        if (auth)
            return TOKEN_MALFORMED; /* which one would the upstream read? */
        auth = &h[i];
    }
    if (!auth)
        return TOKEN_NONE;
    struct str v = str_trim_ows(auth->value);
    if (v.n >= 6 && str_eq_nocase(str_make(v.p, 6), STR_LIT("Bearer")) &&
        (v.n == 6 || v.p[6] == ' ' || v.p[6] == '\t')) {
        struct str t = str_trim_ows(str_make(v.p + 6, v.n - 6));
        if (!t.n || memchr(t.p, ' ', t.n) || memchr(t.p, '\t', t.n))
            return TOKEN_MALFORMED;
        *out = t;
        return TOKEN_FOUND;
    }
    return looks_like_jwt(v) ? TOKEN_MALFORMED : TOKEN_NONE;
}

/* Three non-empty segments of the base64url alphabet, none of a length no
 * encoding has (mod 4 == 1). jwt_verify decodes strictly; this refuses the
 * payload's and signature's garbage before any signature work. */
static bool token_shape_ok(struct str t)
{
    size_t dots = 0, seg = 0;
    for (size_t i = 0; i < t.n; i++) {
        unsigned char c = (unsigned char)t.p[i];
        if (c == '.') {
            if (!seg || seg % 4 == 1 || ++dots > 2)
                return false;
            seg = 0;
        } else if (!is_b64url(c)) {
            return false;
        } else {
            seg++;
        }
    }
    return dots == 2 && seg && seg % 4 != 1;
}

/* ---- claims ------------------------------------------------------------------ */

/* Appends a string, number or boolean's text to out[*n..cap); false for
 * other types, control characters (CR, LF, NUL, ... would split or end a
 * header) or when it does not fit. */
static bool append_scalar(const json_t *v, char *out, size_t cap, size_t *n)
{
    char num[64];
    const char *s;
    size_t len;
    switch (json_typeof(v)) {
    case JSON_STRING:
        s = json_string_value(v);
        len = json_string_length(v);
        break;
    case JSON_INTEGER:
    case JSON_REAL:
        len = json_dumpb(v, num, sizeof num, JSON_ENCODE_ANY);
        if (!len || len >= sizeof num)
            return false;
        s = num;
        break;
    case JSON_TRUE:
        s = "true";
        len = 4;
        break;
    case JSON_FALSE:
        s = "false";
        len = 5;
        break;
    default:
        return false;
    }
    if (len > cap - *n)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            return false;
    }
    memcpy(out + *n, s, len);
    *n += len;
    return true;
}

/* The text of claim name, arrays joined with ",", in out (cap bytes);
 * false when it is absent or cannot be forwarded. */
static bool format_claim(const json_t *payload, const char *name, char *out, size_t cap, size_t *len)
{
    const json_t *v = json_object_get(payload, name);
    *len = 0;
    if (!v)
        return false;
    if (!json_is_array(v))
        return append_scalar(v, out, cap, len);
    size_t i;
    const json_t *e;
    json_array_foreach(v, i, e) {
        if (i && *len == cap)
            return false;
        if (i)
            out[(*len)++] = ',';
        if (!append_scalar(e, out, cap, len))
            return false;
    }
    return true;
}

static char *cc_text(const struct cached_claims *cc) { return (char *)&cc->v[cc->nvalues]; }

/* Formats what a pass forwards: two passes over the claims (sizes, then
 * copies) so that the result is one allocation. NULL on ENOMEM. */
static struct cached_claims *claims_capture(const struct provider_rt *pr, const json_t *payload)
{
    const struct proxy_jwt_provider *p = pr->cfg;
    char tmp[AUTHN_MAX_CLAIM_VALUE];
    size_t len, text = 0, nv = 0, sub_len = 0;
    const json_t *sub = json_object_get(payload, "sub");
    if (json_is_string(sub) && format_claim(payload, "sub", tmp, sizeof tmp, &len))
        text += sub_len = len;
    for (size_t i = 0; i < p->nclaims && i <= UINT16_MAX; i++)
        if (format_claim(payload, p->claims_to_headers[i].claim, tmp, sizeof tmp, &len)) {
            text += len;
            nv++;
        }
    struct cached_claims *cc = malloc(sizeof *cc + nv * sizeof cc->v[0] + text);
    if (!cc)
        return NULL;
    cc->text_len = text;
    cc->sub_len = (uint16_t)sub_len;
    cc->nvalues = (uint16_t)nv;
    char *t = cc_text(cc);
    if (sub_len)
        format_claim(payload, "sub", t, sub_len, &len);
    size_t off = sub_len, k = 0;
    for (size_t i = 0; i < p->nclaims && i <= UINT16_MAX && k < nv; i++)
        if (format_claim(payload, p->claims_to_headers[i].claim, tmp, sizeof tmp, &len)) {
            memcpy(t + off, tmp, len);
            cc->v[k].claim = (uint16_t)i;
            cc->v[k++].len = (uint16_t)len;
            off += len;
        }
    return cc;
}

/* A pass with cc's sub and headers, copied into ar. 0 or -ENOMEM. */
static int pass_with(const struct provider_rt *pr, const struct cached_claims *cc, struct arena *ar,
                     struct authn_result *r)
{
    *r = (struct authn_result){ .status = 0, .code = AUTHN_OK };
    char *t = arena_alloc(ar, cc->text_len + 1);
    struct http1_header *h = cc->nvalues ? arena_alloc(ar, cc->nvalues * sizeof *h) : NULL;
    if (!t || (cc->nvalues && !h))
        return -ENOMEM;
    memcpy(t, cc_text(cc), cc->text_len);
    r->sub = str_make(t, cc->sub_len);
    size_t off = cc->sub_len;
    for (size_t i = 0; i < cc->nvalues; i++) {
        h[i].name = str_from_cstr(pr->cfg->claims_to_headers[cc->v[i].claim].header);
        h[i].value = str_make(t + off, cc->v[i].len);
        off += cc->v[i].len;
    }
    r->headers = h;
    r->nheaders = cc->nvalues;
    return 0;
}

/* ---- the verified-token cache --------------------------------------------------- */

static uint64_t key_generation(struct provider_rt *pr, struct jwks *k)
{
    if (k != pr->seen) {
        jwks_unref(pr->seen);
        pr->seen = jwks_ref(k);
        pr->generation++;
    }
    return pr->generation;
}

static uint32_t *bucket_of(struct authn *a, const uint8_t *digest)
{
    uint64_t h;
    memcpy(&h, digest, sizeof h);
    return &a->buckets[h & (CACHE_BUCKETS - 1)];
}

static void lru_unlink(struct authn *a, uint32_t i)
{
    struct cache_entry *e = &a->entries[i];
    if (e->lru_prev != NONE)
        a->entries[e->lru_prev].lru_next = e->lru_next;
    else
        a->lru_head = e->lru_next;
    if (e->lru_next != NONE)
        a->entries[e->lru_next].lru_prev = e->lru_prev;
    else
        a->lru_tail = e->lru_prev;
}

static void lru_push_front(struct authn *a, uint32_t i)
{
    struct cache_entry *e = &a->entries[i];
    e->lru_prev = NONE;
    e->lru_next = a->lru_head;
    if (a->lru_head != NONE)
        a->entries[a->lru_head].lru_prev = i;
    else
        a->lru_tail = i;
    a->lru_head = i;
}

/* Unlinks entry i from its chain and the LRU list and frees it. */
static void entry_remove(struct authn *a, uint32_t i)
{
    struct cache_entry *e = &a->entries[i];
    uint32_t *link = bucket_of(a, e->digest);
    while (*link != i)
        link = &a->entries[*link].next;
    *link = e->next;
    lru_unlink(a, i);
    free(e->claims);
    e->claims = NULL;
    e->next = a->free_head;
    a->free_head = i;
    a->stats.entries--;
}

static bool entry_is_stale(const struct authn *a, const struct cache_entry *e, int64_t now)
{
    return now >= e->valid_until || e->generation != a->providers[e->provider].generation;
}

static struct cache_entry *cache_find(struct authn *a, uint32_t prov, const uint8_t *digest, int64_t now)
{
    for (uint32_t i = *bucket_of(a, digest); i != NONE; i = a->entries[i].next) {
        struct cache_entry *e = &a->entries[i];
        /* Not constant time, and need not be: the digests are keyed, so
         * timing tells an attacker nothing about anyone's token. */
        if (e->provider != prov || memcmp(e->digest, digest, DIGEST_BYTES) != 0)
            continue;
        if (entry_is_stale(a, e, now)) {
            entry_remove(a, i);
            a->stats.dropped++;
            return NULL;
        }
        lru_unlink(a, i);
        lru_push_front(a, i);
        return e;
    }
    return NULL;
}

/* Takes cc. There is no live entry for (prov, digest): cache_find has just
 * missed it. */
static void cache_insert(struct authn *a, uint32_t prov, const uint8_t *digest, uint64_t gen, int64_t valid_until,
                         int64_t now, struct cached_claims *cc)
{
    if (a->free_head == NONE) {
        uint32_t victim = a->lru_tail;
        if (entry_is_stale(a, &a->entries[victim], now))
            a->stats.dropped++;
        else
            a->stats.evictions++;
        entry_remove(a, victim);
    }
    uint32_t i = a->free_head;
    struct cache_entry *e = &a->entries[i];
    a->free_head = e->next;
    memcpy(e->digest, digest, DIGEST_BYTES);
    e->provider = prov;
    e->generation = gen;
    e->valid_until = valid_until;
    e->claims = cc;
    uint32_t *bucket = bucket_of(a, digest);
    e->next = *bucket;
    *bucket = i;
    lru_push_front(a, i);
    a->stats.entries++;
    a->stats.inserts++;
}

/* ---- checks ----------------------------------------------------------------------- */

static struct jwt_verify_opts verify_opts(const struct provider_rt *pr, int64_t now)
{
    const struct proxy_jwt_provider *p = pr->cfg;
    return (struct jwt_verify_opts){
        .algs = p->algorithms,
        .issuer = p->issuer,
        .audiences = pr->audiences,
        .leeway_s = p->leeway_s ? (int64_t)p->leeway_s : JWT_LEEWAY_NONE,
        .now = now,
        .max_token_bytes = p->max_token_bytes,
    };
}

static size_t max_token_bytes(const struct proxy_jwt_provider *p)
{
    return p->max_token_bytes ? p->max_token_bytes : JWT_DEFAULT_MAX_TOKEN_BYTES;
}

static void destroy(struct authn *a)
{
    for (size_t i = 0; i < a->nproviders; i++) {
        struct provider_rt *pr = &a->providers[i];
        jwks_cache_free(pr->jwks);
        jwks_unref(pr->seen);
        free(pr->audiences);
    }
    if (a->entries)
        for (size_t i = 0; i < CACHE_ENTRIES; i++)
            free(a->entries[i].claims);
    free(a->entries);
    free(a->buckets);
    free(a);
}

static void destroy_deferred(void *arg) { destroy(arg); }

static void on_verified(int rc, const struct jwt_claims *claims, const struct jwt_error *err, void *arg)
{
    struct authn_pending *pd = arg;
    struct authn *a = pd->a;
    struct authn_result r;
    pd->is_done = true;
    if (a->is_closing)
        return; /* authn_free was called: no more callbacks */
    if (rc == 0) {
        /* Not cached: the key set may have been replaced since this token
         * was verified. The next check verifies it again, and caches it. */
        struct cached_claims *cc = claims_capture(pd->pr, claims->payload);
        if (!cc || pass_with(pd->pr, cc, pd->ar, &r) < 0)
            refuse(&r, AUTHN_UNAVAILABLE, "out of memory");
        free(cc);
    } else {
        refuse_jwt(&r, err, pd->ar);
    }
    a->depth++;
    pd->cb(&r, pd->arg);
    a->depth--;
    if (a->is_closing && !a->depth)
        loop_defer(a->loop, &a->close, destroy_deferred, a);
}

struct authn *authn_new(struct loop *l, struct http1_client *client, const struct proxy_jwt_provider *providers,
                        size_t n)
{
    if (n > UINT32_MAX || sodium_init() < 0)
        return NULL;
    struct authn *a = calloc(1, sizeof *a + n * sizeof a->providers[0]);
    if (!a)
        return NULL;
    a->loop = l;
    a->nproviders = n;
    if (!(a->entries = calloc(CACHE_ENTRIES, sizeof *a->entries)) ||
        !(a->buckets = malloc(CACHE_BUCKETS * sizeof *a->buckets)))
        goto fail;
    for (uint32_t i = 0; i < CACHE_BUCKETS; i++)
        a->buckets[i] = NONE;
    for (uint32_t i = 0; i < CACHE_ENTRIES; i++)
        a->entries[i].next = i + 1 < CACHE_ENTRIES ? i + 1 : NONE;
    a->free_head = 0;
    a->lru_head = a->lru_tail = NONE;
    randombytes_buf(a->hash_key, sizeof a->hash_key);
    for (size_t i = 0; i < n; i++) {
        const struct proxy_jwt_provider *p = &providers[i];
        struct provider_rt *pr = &a->providers[i];
        pr->cfg = p;
        if (p->naudiences) {
            if (!(pr->audiences = calloc(p->naudiences + 1, sizeof *pr->audiences)))
                goto fail;
            for (size_t j = 0; j < p->naudiences; j++)
                pr->audiences[j] = p->audiences[j];
        }
        /* min_refetch 0 → 30 s between kid-triggered fetches. */
        if (!(pr->jwks = jwks_cache_new(l, client, p->jwks_uri, p->jwks_refresh_s, 0))) {
            log_error("cannot use the JWT provider's jwks_uri", LOG_STR("provider", p->name ? p->name : ""),
                      LOG_STR("jwks_uri", p->jwks_uri ? p->jwks_uri : ""));
            goto fail;
        }
    }
    return a;
fail:
    destroy(a);
    return NULL;
}

void authn_free(struct authn *a)
{
    if (!a)
        return;
    if (a->depth) {
        /* Inside our callback, itself inside jwks_cache's delivery: free
         * once that has unwound. */
        a->is_closing = true;
        return;
    }
    loop_defer_cancel(a->loop, &a->close);
    destroy(a);
}

static struct provider_rt *provider_of(struct authn *a, const struct proxy_jwt_provider *p)
{
    for (size_t i = 0; i < a->nproviders; i++)
        if (a->providers[i].cfg == p)
            return &a->providers[i];
    return NULL;
}

/* The kid is not in the current set: let jwks_cache fetch (or say it may
 * not yet) and answer later. */
static int check_later(struct authn *a, struct provider_rt *pr, struct str token, struct arena *ar,
                       struct authn_result *res, authn_cb cb, void *arg, struct authn_pending **pending)
{
    struct authn_pending *pd = arena_alloc(ar, sizeof *pd);
    if (!pd)
        return -ENOMEM;
    *pd = (struct authn_pending){ .a = a, .pr = pr, .ar = ar, .cb = cb, .arg = arg };
    struct jwt_verify_opts o = verify_opts(pr, a->now);
    int rc = jwks_cache_verify(pr->jwks, token, &o, on_verified, pd);
    if (rc == -EBUSY) {
        refuse(res, AUTHN_JWKS_UNAVAILABLE, "too many requests are waiting for signing keys");
        return 1;
    }
    if (rc < 0)
        return rc;
    if (pending)
        *pending = pd;
    return 0;
}

int authn_check(struct authn *a, const struct proxy_jwt_provider *p, enum proxy_jwt_mode mode,
                const struct http1_header *headers, size_t nheaders, struct arena *ar, struct authn_result *res,
                authn_cb cb, void *arg, struct authn_pending **pending)
{
    if (pending)
        *pending = NULL;
    *res = (struct authn_result){ .status = 0, .code = AUTHN_OK };
    if (mode == PROXY_JWT_OFF)
        return 1;
    struct provider_rt *pr = provider_of(a, p);
    if (!pr)
        return -EINVAL;

    struct str token;
    switch (bearer_token(headers, nheaders, &token)) {
    case TOKEN_NONE:
        if (mode == PROXY_JWT_REQUIRED)
            refuse(res, AUTHN_MISSING, NULL);
        return 1;
    case TOKEN_MALFORMED:
        refuse(res, AUTHN_MALFORMED, "the Authorization field must be one \"Bearer <token>\"");
        return 1;
    case TOKEN_FOUND:
        break;
    }
    if (token.n > max_token_bytes(p)) {
        refuse(res, AUTHN_TOO_LARGE, NULL);
        return 1;
    }

    int64_t now = clock_now(a);
    uint32_t idx = (uint32_t)(pr - a->providers);
    struct jwks *keys = jwks_cache_keys(pr->jwks);
    uint64_t gen = keys ? key_generation(pr, keys) : 0;
    uint8_t digest[DIGEST_BYTES];
    crypto_generichash(digest, sizeof digest, (const unsigned char *)token.p, token.n, a->hash_key,
                       sizeof a->hash_key);
    int rc = 1;
    struct cache_entry *e = keys ? cache_find(a, idx, digest, now) : NULL;
    if (e) {
        a->stats.hits++;
        if (pass_with(pr, e->claims, ar, res) < 0)
            rc = -ENOMEM;
        goto out;
    }
    a->stats.misses++;
    if (!token_shape_ok(token)) {
        refuse(res, AUTHN_MALFORMED, "the token is not three base64url segments");
        goto out;
    }

    struct jwt_verify_opts o = verify_opts(pr, now);
    struct jwt_claims c;
    struct jwt_error err;
    if (jwt_verify(token, keys, &o, &c, &err) == 0) {
        struct cached_claims *cc = claims_capture(pr, c.payload);
        if (!cc || pass_with(pr, cc, ar, res) < 0) {
            rc = -ENOMEM;
            free(cc);
        } else if (cc->text_len <= MAX_CACHED_TEXT) {
            int64_t leeway = p->leeway_s;
            cache_insert(a, idx, digest, gen, sat_add(c.exp, leeway), now, cc);
        } else {
            free(cc);
        }
        jwt_claims_free(&c);
        goto out;
    }
    char kid[JWT_MAX_KID_BYTES + 1];
    if (err.reason == JWT_E_UNKNOWN_KID && jwt_peek_kid(token, kid, sizeof kid) == 0)
        rc = check_later(a, pr, token, ar, res, cb, arg, pending);
    else
        refuse_jwt(res, &err, ar);
out:
    jwks_unref(keys);
    return rc;
}

void authn_cancel(struct authn_pending *p)
{
    if (!p || p->is_done)
        return;
    p->is_done = true;
    jwks_cache_cancel(p->pr->jwks, on_verified, p);
}

const struct authn_stats *authn_stats(const struct authn *a) { return &a->stats; }

void authn_set_now(struct authn *a, int64_t now) { a->now = now; }
