/* authn: the gateway's JWT authentication against a real JWKS served over
 * HTTP on loopback (tests/support/test_server), with a real loop on this
 * thread. Keys are generated at run time; tokens are signed with
 * jwt_signer, or assembled by hand for the attacks (alg none, HS256 keyed
 * with the public key). The clock authn checks with is fixed at NOW. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include "check.h"
#include "core/arena.h"
#include "core/http1_client.h"
#include "core/http1_server.h"
#include "core/jwt.h"
#include "core/loop.h"
#include "proxy/authn.h"
#include "support/test_server.h"

#define NOW 1700000000LL
#define ISSUER "https://auth.strata.local"

static EVP_PKEY *ec_key, *rsa_key, *ed_key, *ec_key2, *ec_key3;
static struct jwt_signer *ec_signer, *rsa_signer, *ed_signer, *ec2_signer;
static struct loop *l;
static struct http1_client *client;
static struct test_server ts;
static char jwks_url[128];

/* ---- the JWKS server ------------------------------------------------------- */

static pthread_mutex_t srv_mu = PTHREAD_MUTEX_INITIALIZER;
static char srv_jwks[32768];
static int srv_hits;

static void serve_jwks(struct http1_exchange *x, void *arg)
{
    static const struct http1_header ct = { STR_LIT("Content-Type"), STR_LIT("application/json") };
    static char body[sizeof srv_jwks];
    pthread_mutex_lock(&srv_mu);
    srv_hits++;
    snprintf(body, sizeof body, "%s", srv_jwks);
    pthread_mutex_unlock(&srv_mu);
    int status = str_eq(x->req.path, STR_LIT("/.well-known/jwks.json")) ? 200 : 404;
    http1_respond(x, status, &ct, 1, str_from_cstr(body));
}

static int hits(void)
{
    pthread_mutex_lock(&srv_mu);
    int h = srv_hits;
    pthread_mutex_unlock(&srv_mu);
    return h;
}

static void publish(const struct jwt_signer *const *ss, size_t n)
{
    struct buf b;
    buf_init(&b, sizeof srv_jwks - 1);
    CHECK_INT(jwks_public_json(ss, n, &b), 0);
    pthread_mutex_lock(&srv_mu);
    str_copy_cstr(buf_str(&b), srv_jwks, sizeof srv_jwks);
    pthread_mutex_unlock(&srv_mu);
    buf_free(&b);
}

/* ---- providers --------------------------------------------------------------- */

static char *aud_list[] = { "strata-api", "other", NULL };
static struct proxy_claim_header claim_map[] = {
    { "sub", "x-jwt-sub" },     { "email", "x-jwt-email" }, { "roles", "x-jwt-roles" },
    { "n", "x-jwt-n" },         { "f", "x-jwt-f" },         { "b", "x-jwt-b" },
    { "obj", "x-jwt-obj" },     { "crlf", "x-jwt-crlf" },   { "ctl", "x-jwt-ctl" },
    { "long", "x-jwt-long" },   { "mixed", "x-jwt-mixed" }, { "nested", "x-jwt-nested" },
    { "absent", "x-jwt-absent" },
};

/* [0] the usual one: every algorithm, two audiences, claims forwarded.
 * [1] ES256 only, no audience check, no leeway, 1 KiB tokens. */
static struct proxy_jwt_provider prov[2];

static void providers_init(void)
{
    prov[0] = (struct proxy_jwt_provider){
        .name = "main", .issuer = ISSUER, .audiences = aud_list, .naudiences = 2, .jwks_uri = jwks_url,
        .algorithms = JWT_ALG_ES256 | JWT_ALG_RS256 | JWT_ALG_EDDSA, .leeway_s = 30, .jwks_refresh_s = 300,
        .max_token_bytes = 8192, .claims_to_headers = claim_map, .nclaims = sizeof claim_map / sizeof claim_map[0],
    };
    prov[1] = (struct proxy_jwt_provider){
        .name = "strict", .issuer = ISSUER, .jwks_uri = jwks_url, .algorithms = JWT_ALG_ES256, .leeway_s = 0,
        .jwks_refresh_s = 300, .max_token_bytes = 1024,
    };
}

/* ---- tokens ------------------------------------------------------------------------ */

static json_t *std_claims(void)
{
    json_t *c = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:s, s:s, s:[s,s]}", "iss", ISSUER, "sub", "user-42", "aud",
                          "strata-api", "exp", (json_int_t)(NOW + 900), "iat", (json_int_t)NOW, "nbf",
                          (json_int_t)NOW, "jti", "jti-1", "email", "a@example.com", "roles", "user", "admin");
    char big[2000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    json_object_set_new(c, "n", json_integer(42));
    json_object_set_new(c, "f", json_real(1.5));
    json_object_set_new(c, "b", json_true());
    json_object_set_new(c, "obj", json_pack("{s:s}", "k", "v"));
    json_object_set_new(c, "crlf", json_string("a\r\nX-Injected: 1"));
    json_object_set_new(c, "ctl", json_string("a\tb\x7f"));
    json_object_set_new(c, "long", json_string(big));
    json_object_set_new(c, "mixed", json_pack("[i,s,b]", 1, "a", 0));
    json_object_set_new(c, "nested", json_pack("[s,[s]]", "a", "b"));
    return c;
}

/* What the main provider forwards for std_claims, "name=value;" each. */
#define STD_HEADERS                                                                                             \
    "x-jwt-sub=user-42;x-jwt-email=a@example.com;x-jwt-roles=user,admin;x-jwt-n=42;x-jwt-f=1.5;x-jwt-b=true;" \
    "x-jwt-mixed=1,a,false;"

static json_t *claims_with(const char *key, json_t *value)
{
    json_t *c = std_claims();
    if (value)
        json_object_set_new(c, key, value);
    else
        json_object_del(c, key);
    return c;
}

/* A small token (sub and exp only, for the 1 KiB provider and the cache). */
static json_t *small_claims(const char *jti, int64_t exp)
{
    return json_pack("{s:s, s:s, s:s, s:I, s:s}", "iss", ISSUER, "sub", "user-7", "aud", "strata-api", "exp",
                     (json_int_t)exp, "jti", jti);
}

/* Signs claims (consumed) with s; the caller frees the token. */
static char *sign(const struct jwt_signer *s, json_t *claims)
{
    struct buf b;
    buf_init(&b, 1 << 20);
    CHECK_INT(jwt_sign(s, claims, &b), 0);
    buf_append(&b, "", 1);
    json_decref(claims);
    char *t = strdup(buf_rptr(&b));
    buf_free(&b);
    return t;
}

/* Signs with pkey under an arbitrary kid. */
static char *sign_as(EVP_PKEY *pkey, const char *kid, json_t *claims)
{
    struct jwt_signer *s = NULL;
    CHECK_INT(jwt_signer_from_pkey(pkey, kid, &s, NULL, 0), 0);
    char *t = sign(s, claims);
    jwt_signer_free(s);
    return t;
}

/* b64(header).b64(payload).sig with sig given (already encoded), or an
 * HMAC-SHA256 over the signing input keyed with secret. */
static char *assemble(const char *header, const char *payload, const char *sig, const void *secret,
                      size_t secret_len)
{
    struct buf b;
    buf_init(&b, 1 << 16);
    base64url_encode(header, strlen(header), &b);
    buf_append_cstr(&b, ".");
    base64url_encode(payload, strlen(payload), &b);
    if (secret) {
        unsigned char mac[EVP_MAX_MD_SIZE];
        unsigned int n = 0;
        CHECK(HMAC(EVP_sha256(), secret, (int)secret_len, (const unsigned char *)buf_rptr(&b), buf_len(&b), mac,
                   &n) != NULL);
        buf_append_cstr(&b, ".");
        base64url_encode(mac, n, &b);
    } else {
        buf_append_cstr(&b, ".");
        buf_append_cstr(&b, sig);
    }
    buf_append(&b, "", 1);
    char *t = strdup(buf_rptr(&b));
    buf_free(&b);
    return t;
}

static char *std_payload(void)
{
    json_t *c = std_claims();
    char *s = json_dumps(c, JSON_COMPACT);
    json_decref(c);
    return s;
}

/* ---- running checks --------------------------------------------------------------- */

struct outcome {
    bool done;
    int calls;
    int rc;
    int status;
    enum authn_reason code;
    char reason[32];
    bool has_message;
    char sub[64];
    char headers[4096]; /* "name=value;" each */
};

static void record(struct outcome *o, const struct authn_result *r)
{
    o->status = r->status;
    o->code = r->code;
    snprintf(o->reason, sizeof o->reason, "%s", r->reason ? r->reason : "");
    o->has_message = r->message && r->message[0];
    snprintf(o->sub, sizeof o->sub, "%.*s", STR_FMT(r->sub));
    size_t off = 0;
    o->headers[0] = '\0';
    for (size_t i = 0; i < r->nheaders; i++)
        off += (size_t)snprintf(o->headers + off, sizeof o->headers - off, "%.*s=%.*s;", STR_FMT(r->headers[i].name),
                                STR_FMT(r->headers[i].value));
    /* The contract: a refusal has a reason and a message, a pass neither. */
    if (r->status == 0) {
        CHECK(r->code == AUTHN_OK && r->reason == NULL && r->message == NULL);
    } else {
        CHECK(r->reason && r->reason[0] && o->has_message);
        CHECK_STR(r->reason, authn_reason_name(r->code));
    }
}

static void on_done(const struct authn_result *r, void *arg)
{
    struct outcome *o = arg;
    o->calls++;
    o->done = true;
    record(o, r);
}

static void run_until(bool *flag, int ms)
{
    loop_update_time(l);
    uint64_t start = loop_now_ms(l);
    while (!*flag && loop_now_ms(l) - start < (uint64_t)ms)
        loop_run_once(l, 20);
}

static void run_for(int ms)
{
    loop_update_time(l);
    uint64_t start = loop_now_ms(l);
    while (loop_now_ms(l) - start < (uint64_t)ms)
        loop_run_once(l, 10);
}

/* Runs one check to its end (waiting on the loop when pending). */
static int check_h(struct authn *a, const struct proxy_jwt_provider *p, enum proxy_jwt_mode mode,
                   const struct http1_header *h, size_t nh, struct outcome *o)
{
    struct arena ar;
    arena_init(&ar, 4096, 0);
    memset(o, 0, sizeof *o);
    struct authn_result res;
    struct authn_pending *pd = (struct authn_pending *)&ar; /* must be overwritten */
    int rc = authn_check(a, p, mode, h, nh, &ar, &res, on_done, o, &pd);
    o->rc = rc;
    if (rc == 1) {
        CHECK(pd == NULL);
        record(o, &res);
        o->done = true;
    } else if (rc == 0) {
        CHECK(pd != NULL);
        CHECK(!o->done); /* never inside authn_check */
        run_until(&o->done, 5000);
        CHECK_INT(o->calls, 1);
        authn_cancel(pd); /* after the callback: a no-op */
        run_for(20);
        CHECK_INT(o->calls, 1); /* exactly once */
    }
    arena_free(&ar);
    return rc;
}

static int check_authz(struct authn *a, const struct proxy_jwt_provider *p, enum proxy_jwt_mode mode,
                       const char *authz, struct outcome *o)
{
    const struct http1_header h[] = {
        { STR_LIT("Host"), STR_LIT("api.example.test") },
        { STR_LIT("Authorization"), str_from_cstr(authz) },
    };
    return check_h(a, p, mode, h, authz ? 2 : 1, o);
}

/* "Bearer <token>" on a required route. */
static int check_tok(struct authn *a, const struct proxy_jwt_provider *p, const char *token, struct outcome *o)
{
    size_t n = strlen(token) + 8;
    char *v = malloc(n);
    snprintf(v, n, "Bearer %s", token);
    int rc = check_authz(a, p, PROXY_JWT_REQUIRED, v, o);
    free(v);
    return rc;
}

#define EXPECT(o, st, why)                                                                                         \
    do {                                                                                                          \
        CHECK_INT((o).status, (st));                                                                              \
        CHECK_STR((o).reason, (why));                                                                             \
    } while (0)

static struct authn *A; /* the authn most tests share: both providers */

/* ---- tests ---------------------------------------------------------------------------- */

static void test_first_check_waits_for_keys(void)
{
    /* A is brand new: its first fetch is in flight, so a token waits. */
    struct outcome o;
    char *t = sign(ec_signer, std_claims());
    CHECK_INT(check_tok(A, &prov[0], t, &o), 0);
    EXPECT(o, 0, "");
    CHECK_STR(o.sub, "user-42");
    CHECK_STR(o.headers, STD_HEADERS);
    CHECK(hits() >= 1);
    free(t);
}

static void test_valid_algorithms(void)
{
    const struct jwt_signer *ss[] = { ec_signer, rsa_signer, ed_signer };
    for (int i = 0; i < 3; i++) {
        struct outcome o;
        char *t = sign(ss[i], std_claims());
        CHECK_INT(check_tok(A, &prov[0], t, &o), 1); /* keys known: answered at once */
        EXPECT(o, 0, "");
        CHECK_STR(o.sub, "user-42");
        CHECK_STR(o.headers, STD_HEADERS);
        free(t);
    }
    /* The scheme is case-insensitive, surrounding spaces are not part of the token. */
    char *t = sign(ed_signer, std_claims());
    char v[4096];
    struct outcome o;
    snprintf(v, sizeof v, "bearer %s", t);
    check_authz(A, &prov[0], PROXY_JWT_REQUIRED, v, &o);
    EXPECT(o, 0, "");
    snprintf(v, sizeof v, "BEARER   %s  ", t);
    check_authz(A, &prov[0], PROXY_JWT_OPTIONAL, v, &o);
    EXPECT(o, 0, "");
    CHECK_STR(o.headers, STD_HEADERS);
    /* Mode OFF never looks. */
    CHECK_INT(check_authz(A, &prov[0], PROXY_JWT_OFF, "Bearer garbage", &o), 1);
    EXPECT(o, 0, "");
    free(t);
}

static void test_missing(void)
{
    struct outcome o;
    CHECK_INT(check_authz(A, &prov[0], PROXY_JWT_REQUIRED, NULL, &o), 1);
    EXPECT(o, 401, "jwt_missing");
    CHECK_INT(o.code, AUTHN_MISSING);
    CHECK_INT(check_authz(A, &prov[0], PROXY_JWT_OPTIONAL, NULL, &o), 1);
    EXPECT(o, 0, "");
    CHECK_STR(o.sub, "");
    CHECK_STR(o.headers, "");
    /* Credentials of another scheme are not a JWT: missing, or a pass. */
    check_authz(A, &prov[0], PROXY_JWT_REQUIRED, "Basic dXNlcjpwYXNz", &o);
    EXPECT(o, 401, "jwt_missing");
    check_authz(A, &prov[0], PROXY_JWT_OPTIONAL, "Basic dXNlcjpwYXNz", &o);
    EXPECT(o, 0, "");
    check_authz(A, &prov[0], PROXY_JWT_REQUIRED, "", &o);
    EXPECT(o, 401, "jwt_missing");
}

static void test_malformed(void)
{
    char *t = sign(ec_signer, std_claims());
    char *bad_b64 = strdup(t);
    bad_b64[strchr(bad_b64, '.') - bad_b64 + 3] = '+'; /* standard alphabet in the payload */
    char v[8][4096];
    snprintf(v[0], sizeof v[0], "Token %s", t);  /* another scheme, a JWT inside */
    snprintf(v[1], sizeof v[1], "%s", t);        /* no scheme */
    snprintf(v[2], sizeof v[2], "Bearer:%s", t); /* glued */
    snprintf(v[3], sizeof v[3], "Bearer %s", bad_b64);
    snprintf(v[4], sizeof v[4], "Bearer %s x", t);
    snprintf(v[5], sizeof v[5], "Bearer %s.AAAA", t); /* four segments */
    const char *cases[] = {
        v[0], v[1], v[2], v[3], v[4], v[5], "Bearer", "Bearer   ", "Bearer a.b", "Bearer abcd..efgh",
        "Bearer .abcd.efgh", "Bearer abcd.efgh.", "Bearer abcde.abcd.abcd", "Bearer ab!d.efgh.ijkl",
        "Bearer eyJhbGciOiJFUzI1NiJ9.e30.AAAA", /* header without kid */
        "Bearer e30.e30.AAAA",                  /* header without alg */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        /* An invalid token is refused even where a token is optional. */
        for (int mode = PROXY_JWT_OPTIONAL; mode <= PROXY_JWT_REQUIRED; mode++) {
            struct outcome o;
            CHECK_INT(check_authz(A, &prov[0], (enum proxy_jwt_mode)mode, cases[i], &o), 1);
            CHECK_INT(o.status, 401);
            if (i == 14) {
                CHECK_STR(o.reason, "jwt_unknown_kid"); /* no kid: nothing to fetch */
            } else if (strcmp(o.reason, "jwt_malformed") != 0) {
                fprintf(stderr, "case %zu: %s\n", i, o.reason);
                CHECK_STR(o.reason, "jwt_malformed");
            }
        }
    }
    /* Two Authorization fields, both valid: which would the upstream read? */
    snprintf(v[6], sizeof v[6], "Bearer %s", t);
    const struct http1_header two[] = {
        { STR_LIT("Authorization"), str_from_cstr(v[6]) },
        { STR_LIT("authorization"), str_from_cstr(v[6]) },
    };
    struct outcome o;
    CHECK_INT(check_h(A, &prov[0], PROXY_JWT_OPTIONAL, two, 2, &o), 1);
    EXPECT(o, 401, "jwt_malformed");
    /* The same token alone passes (the cases above failed for their shape). */
    check_h(A, &prov[0], PROXY_JWT_OPTIONAL, two, 1, &o);
    EXPECT(o, 0, "");
    free(t);
    free(bad_b64);
}

static void test_time_claims(void)
{
    struct outcome o;
    char *t;
    /* exp: valid strictly before exp + leeway (30 s on the main provider). */
    t = sign(ec_signer, claims_with("exp", json_integer(NOW - 29)));
    check_tok(A, &prov[0], t, &o);
    EXPECT(o, 0, "");
    free(t);
    t = sign(ec_signer, claims_with("exp", json_integer(NOW - 30)));
    check_tok(A, &prov[0], t, &o);
    EXPECT(o, 401, "jwt_expired");
    free(t);
    t = sign(ec_signer, claims_with("exp", NULL));
    check_tok(A, &prov[0], t, &o);
    EXPECT(o, 401, "jwt_expired"); /* exp is required */
    free(t);
    /* nbf and iat: not before them - leeway. */
    t = sign(ec_signer, claims_with("nbf", json_integer(NOW + 30)));
    check_tok(A, &prov[0], t, &o);
    EXPECT(o, 0, "");
    free(t);
    t = sign(ec_signer, claims_with("nbf", json_integer(NOW + 31)));
    check_tok(A, &prov[0], t, &o);
    EXPECT(o, 401, "jwt_not_yet_valid");
    free(t);
    t = sign(ec_signer, claims_with("iat", json_integer(NOW + 31)));
    check_tok(A, &prov[0], t, &o);
    EXPECT(o, 401, "jwt_not_yet_valid");
    free(t);
    /* leeway_s 0 means none. */
    t = sign(ec_signer, small_claims("t0", NOW));
    check_tok(A, &prov[1], t, &o);
    EXPECT(o, 401, "jwt_expired");
    free(t);
    t = sign(ec_signer, small_claims("t1", NOW + 1));
    check_tok(A, &prov[1], t, &o);
    EXPECT(o, 0, "");
    CHECK_STR(o.sub, "user-7");
    CHECK_STR(o.headers, ""); /* this provider forwards no claims */
    free(t);
}

static void test_issuer_audience(void)
{
    struct outcome o;
    char *t;
    t = sign(ec_signer, claims_with("iss", json_string("https://evil.example")));
    check_tok(A, &prov[0], t, &o);
    EXPECT(o, 401, "jwt_bad_issuer");
    free(t);
    t = sign(ec_signer, claims_with("iss", NULL));
    check_tok(A, &prov[0], t, &o);
    EXPECT(o, 401, "jwt_bad_issuer");
    free(t);
    t = sign(ec_signer, claims_with("aud", json_string("someone-else")));
    check_tok(A, &prov[0], t, &o);
    EXPECT(o, 401, "jwt_bad_audience");
    /* Not checked when the provider names no audience. */
    json_t *c = small_claims("aud", NOW + 60);
    json_object_set_new(c, "aud", json_string("someone-else"));
    free(t);
    t = sign(ec_signer, c);
    check_tok(A, &prov[1], t, &o);
    EXPECT(o, 0, "");
    free(t);
    t = sign(ec_signer, claims_with("aud", json_string("other")));
    check_tok(A, &prov[0], t, &o);
    EXPECT(o, 0, "");
    free(t);
    t = sign(ec_signer, claims_with("aud", json_pack("[s,s]", "x", "strata-api")));
    check_tok(A, &prov[0], t, &o);
    EXPECT(o, 0, "");
    free(t);
    t = sign(ec_signer, claims_with("aud", NULL));
    check_tok(A, &prov[0], t, &o);
    EXPECT(o, 401, "jwt_bad_audience");
    free(t);
}

static void test_bad_signature(void)
{
    struct outcome o;
    /* Another key claiming the published kid. */
    char *t = sign_as(ec_key3, jwt_signer_kid(ec_signer), std_claims());
    check_tok(A, &prov[0], t, &o);
    EXPECT(o, 401, "jwt_bad_signature");
    free(t);
    /* One signature character changed (a middle one: all its bits count). */
    t = sign(ec_signer, std_claims());
    char *sig = strrchr(t, '.') + 1;
    sig[20] = sig[20] == 'A' ? 'B' : 'A';
    check_tok(A, &prov[0], t, &o);
    EXPECT(o, 401, "jwt_bad_signature");
    free(t);
    /* The payload swapped for another (sub: admin), signature kept. */
    t = sign(rsa_signer, std_claims());
    char *forged = sign(rsa_signer, claims_with("sub", json_string("admin")));
    char *dot1 = strchr(t, '.'), *dot2 = strrchr(t, '.');
    char *fdot1 = strchr(forged, '.'), *fdot2 = strrchr(forged, '.');
    char buf[8192];
    snprintf(buf, sizeof buf, "%.*s%.*s%s", (int)(dot1 - t), t, (int)(fdot2 - fdot1), fdot1, dot2);
    check_tok(A, &prov[0], buf, &o);
    EXPECT(o, 401, "jwt_bad_signature");
    free(t);
    free(forged);
}

static void test_alg_attacks(void)
{
    struct outcome o;
    int before = hits();
    char *payload = std_payload();
    char hdr[512];

    /* alg none, with the kid of a real key, an unknown kid, or none at all:
     * refused from the header, at once, without a fetch. */
    const char *kids[] = { jwt_signer_kid(ec_signer), "bogus-kid" };
    for (int i = 0; i < 2; i++) {
        snprintf(hdr, sizeof hdr, "{\"alg\":\"none\",\"typ\":\"JWT\",\"kid\":\"%s\"}", kids[i]);
        char *t = assemble(hdr, payload, "", NULL, 0);
        CHECK_INT(check_tok(A, &prov[0], t, &o), 1);
        EXPECT(o, 401, "jwt_malformed"); /* "a.b." has an empty signature segment */
        free(t);
        t = assemble(hdr, payload, "AAAA", NULL, 0);
        CHECK_INT(check_tok(A, &prov[0], t, &o), 1);
        EXPECT(o, 401, "jwt_alg_not_allowed");
        free(t);
        snprintf(hdr, sizeof hdr, "{\"alg\":\"None\",\"kid\":\"%s\"}", kids[i]);
        t = assemble(hdr, payload, "AAAA", NULL, 0);
        CHECK_INT(check_tok(A, &prov[0], t, &o), 1);
        EXPECT(o, 401, "jwt_alg_not_allowed");
        free(t);
    }

    /* HS256 keyed with the public key (PEM, and its JWK JSON): the "HMAC
     * with a public key" confusion. */
    BIO *bio = BIO_new(BIO_s_mem());
    PEM_write_bio_PUBKEY(bio, ec_key);
    char *pem;
    long pem_len = BIO_get_mem_data(bio, &pem);
    struct buf jwk;
    buf_init(&jwk, 1 << 16);
    const struct jwt_signer *one[] = { ec_signer };
    CHECK_INT(jwks_public_json(one, 1, &jwk), 0);
    const char *algs[] = { "HS256", "HS384", "HS512" };
    for (int i = 0; i < 3; i++) {
        snprintf(hdr, sizeof hdr, "{\"alg\":\"%s\",\"typ\":\"JWT\",\"kid\":\"%s\"}", algs[i],
                 jwt_signer_kid(ec_signer));
        char *t = assemble(hdr, payload, NULL, pem, (size_t)pem_len);
        CHECK_INT(check_tok(A, &prov[0], t, &o), 1);
        EXPECT(o, 401, "jwt_alg_not_allowed");
        free(t);
        t = assemble(hdr, payload, NULL, buf_rptr(&jwk), buf_len(&jwk));
        CHECK_INT(check_tok(A, &prov[0], t, &o), 1);
        EXPECT(o, 401, "jwt_alg_not_allowed");
        free(t);
    }
    buf_free(&jwk);
    BIO_free(bio);

    /* Algorithms outside the provider's allowlist (ES256 only), with
     * perfectly good signatures and published kids. */
    char *t = sign(rsa_signer, small_claims("rs", NOW + 60));
    CHECK_INT(check_tok(A, &prov[1], t, &o), 1);
    EXPECT(o, 401, "jwt_alg_not_allowed");
    CHECK_INT(check_tok(A, &prov[0], t, &o), 1); /* allowed there */
    EXPECT(o, 0, "");
    free(t);
    t = sign(ed_signer, small_claims("ed", NOW + 60));
    CHECK_INT(check_tok(A, &prov[1], t, &o), 1);
    EXPECT(o, 401, "jwt_alg_not_allowed");
    free(t);
    /* An ES256 header on an RSA key's kid: the alg must fit the key. */
    t = sign(rsa_signer, std_claims());
    snprintf(hdr, sizeof hdr, "{\"alg\":\"ES256\",\"typ\":\"JWT\",\"kid\":\"%s\"}", jwt_signer_kid(rsa_signer));
    char *mixed = assemble(hdr, payload, strrchr(t, '.') + 1, NULL, 0);
    CHECK_INT(check_tok(A, &prov[0], mixed, &o), 1);
    EXPECT(o, 401, "jwt_alg_not_allowed");
    free(mixed);
    free(t);

    CHECK_INT(hits(), before); /* nothing above made the gateway fetch keys */
    free(payload);
}

static void test_oversized(void)
{
    struct outcome o;
    const struct authn_stats *st = authn_stats(A);
    /* 1 KiB on the strict provider: refused unparsed (not even hashed). */
    json_t *c = small_claims("big", NOW + 60);
    char pad[1200];
    memset(pad, 'p', sizeof pad - 1);
    pad[sizeof pad - 1] = '\0';
    json_object_set_new(c, "pad", json_string(pad));
    char *t = sign(ec_signer, c);
    CHECK(strlen(t) > 1024);
    uint64_t misses = st->misses, hits_before = st->hits;
    CHECK_INT(check_tok(A, &prov[1], t, &o), 1);
    EXPECT(o, 401, "jwt_too_large");
    CHECK_INT(o.code, AUTHN_TOO_LARGE);
    CHECK_INT(st->misses, misses);
    CHECK_INT(st->hits, hits_before);
    /* The same token is fine under the 8 KiB limit. */
    check_tok(A, &prov[0], t, &o);
    EXPECT(o, 0, "");
    free(t);
    /* 70,000 bytes of anything. */
    char *big = malloc(70001);
    memset(big, 'a', 70000);
    big[70000] = '\0';
    CHECK_INT(check_tok(A, &prov[0], big, &o), 1);
    EXPECT(o, 401, "jwt_too_large");
    free(big);
}

static void test_cache(void)
{
    struct outcome o, o2;
    const struct authn_stats *st = authn_stats(A);
    char *t = sign(ec_signer, std_claims());
    struct authn_stats s0 = *st;
    CHECK_INT(check_tok(A, &prov[0], t, &o), 1);
    EXPECT(o, 0, "");
    CHECK_INT(st->misses, s0.misses + 1);
    CHECK_INT(st->inserts, s0.inserts + 1);
    CHECK_INT(st->hits, s0.hits);
    /* Second time: from the cache, with the same answer. */
    CHECK_INT(check_tok(A, &prov[0], t, &o2), 1);
    EXPECT(o2, 0, "");
    CHECK_INT(st->hits, s0.hits + 1);
    CHECK_INT(st->misses, s0.misses + 1);
    CHECK_STR(o2.headers, STD_HEADERS);
    CHECK_STR(o2.sub, "user-42");
    /* Keyed by provider too: a token cached for one is verified by the
     * other itself, and answered with that one's claim headers (none). */
    char *small = sign(ec_signer, small_claims("keyed", NOW + 60));
    check_tok(A, &prov[0], small, &o2);
    CHECK_STR(o2.headers, "x-jwt-sub=user-7;");
    struct authn_stats sk = *st;
    check_tok(A, &prov[1], small, &o2);
    EXPECT(o2, 0, "");
    CHECK_STR(o2.headers, "");
    CHECK_INT(st->hits, sk.hits);
    CHECK_INT(st->misses, sk.misses + 1);
    free(small);
    uint64_t h1 = st->hits;

    /* The entry lives until exp + leeway, then goes with the token. */
    authn_set_now(A, NOW + 900 + 29);
    check_tok(A, &prov[0], t, &o);
    EXPECT(o, 0, "");
    CHECK_INT(st->hits, h1 + 1);
    struct authn_stats s1 = *st;
    authn_set_now(A, NOW + 900 + 30);
    check_tok(A, &prov[0], t, &o);
    EXPECT(o, 401, "jwt_expired");
    CHECK_INT(st->hits, s1.hits);
    CHECK_INT(st->misses, s1.misses + 1);
    CHECK_INT(st->dropped, s1.dropped + 1);
    CHECK_INT(st->entries, s1.entries - 1);
    authn_set_now(A, NOW);
    /* Refusals are not cached. */
    char *bad = sign(ec_signer, claims_with("aud", json_string("nobody")));
    s1 = *st;
    check_tok(A, &prov[0], bad, &o);
    check_tok(A, &prov[0], bad, &o);
    EXPECT(o, 401, "jwt_bad_audience");
    CHECK_INT(st->hits, s1.hits);
    CHECK_INT(st->inserts, s1.inserts);
    free(bad);
    free(t);
}

static void test_cache_bound(void)
{
    /* 5000 distinct valid tokens through a 4096-entry cache, while one
     * token stays in use: the least recently used go, the hot one stays. */
    const struct authn_stats *st = authn_stats(A);
    struct authn_stats s0 = *st;
    struct outcome o;
    char *hot = sign(ec_signer, small_claims("hot", NOW + 600));
    char *first = NULL;
    check_tok(A, &prov[0], hot, &o);
    char jti[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(jti, sizeof jti, "bulk-%d", i);
        char *t = sign(ed_signer, small_claims(jti, NOW + 600));
        check_tok(A, &prov[0], t, &o);
        if (o.status != 0)
            EXPECT(o, 0, "");
        if (i == 0)
            first = t;
        else
            free(t);
        if (i % 500 == 250)
            check_tok(A, &prov[0], hot, &o);
    }
    CHECK_INT(st->inserts, s0.inserts + 5001);
    CHECK_INT(st->entries, 4096);
    CHECK(st->evictions > 0);
    CHECK_INT(st->inserts - st->evictions - st->dropped, st->entries);
    uint64_t h0 = st->hits, m0 = st->misses;
    check_tok(A, &prov[0], hot, &o);
    EXPECT(o, 0, "");
    CHECK_INT(st->hits, h0 + 1);
    check_tok(A, &prov[0], first, &o); /* long unused: evicted, verified again */
    EXPECT(o, 0, "");
    CHECK_INT(st->hits, h0 + 1);
    CHECK_INT(st->misses, m0 + 1);
    free(hot);
    free(first);
}

static void test_rotation(void)
{
    struct outcome o;
    const struct authn_stats *st = authn_stats(A);
    char *t1 = sign(ec_signer, std_claims());
    check_tok(A, &prov[0], t1, &o);
    check_tok(A, &prov[0], t1, &o);
    uint64_t h0 = st->hits;
    CHECK_INT(check_tok(A, &prov[0], t1, &o), 1);
    CHECK_INT(st->hits, h0 + 1); /* cached */

    /* The issuer starts signing with a new key: the first token with its
     * kid makes the gateway refetch, and passes. */
    const struct jwt_signer *four[] = { ec2_signer, ec_signer, rsa_signer, ed_signer };
    publish(four, 4);
    int before = hits();
    char *t2 = sign(ec2_signer, std_claims());
    CHECK_INT(check_tok(A, &prov[0], t2, &o), 0);
    EXPECT(o, 0, "");
    CHECK_STR(o.sub, "user-42");
    CHECK_INT(hits(), before + 1);
    /* Now known: at once, then from the cache. */
    CHECK_INT(check_tok(A, &prov[0], t2, &o), 1);
    EXPECT(o, 0, "");
    h0 = st->hits;
    CHECK_INT(check_tok(A, &prov[0], t2, &o), 1);
    CHECK_INT(st->hits, h0 + 1);

    /* The key set changed: t1's entry is dropped, t1 verified again. */
    uint64_t d0 = st->dropped, m0 = st->misses;
    h0 = st->hits;
    CHECK_INT(check_tok(A, &prov[0], t1, &o), 1);
    EXPECT(o, 0, "");
    CHECK(st->dropped >= d0 + 1); /* its own, and maybe a stale neighbour the insert reused */
    CHECK_INT(st->misses, m0 + 1);
    CHECK_INT(st->hits, h0);

    /* Another unknown kid within 30 s: no fetch (rate limit), refused. */
    char *t3 = sign_as(ec_key3, "bogus-kid", std_claims());
    CHECK_INT(check_tok(A, &prov[0], t3, &o), 0);
    EXPECT(o, 401, "jwt_unknown_kid");
    for (int i = 0; i < 10; i++) { /* a flood costs the issuer nothing */
        check_tok(A, &prov[0], t3, &o);
        EXPECT(o, 401, "jwt_unknown_kid");
    }
    CHECK_INT(hits(), before + 1);
    /* Even a real new key waits for the window (or the periodic refresh). */
    struct jwt_signer *s3 = NULL;
    CHECK_INT(jwt_signer_from_pkey(ec_key3, NULL, &s3, NULL, 0), 0);
    const struct jwt_signer *five[] = { s3, ec2_signer, ec_signer, rsa_signer, ed_signer };
    publish(five, 5);
    char *t4 = sign(s3, std_claims());
    check_tok(A, &prov[0], t4, &o);
    EXPECT(o, 401, "jwt_unknown_kid");
    CHECK_INT(hits(), before + 1);
    /* The old key still works. */
    check_tok(A, &prov[0], t1, &o);
    EXPECT(o, 0, "");
    jwt_signer_free(s3);
    free(t1);
    free(t2);
    free(t3);
    free(t4);
}

/* ---- cancellation and teardown ---------------------------------------------- */

static void test_cancel(void)
{
    struct arena ar;
    arena_init(&ar, 4096, 0);
    char *t = sign_as(ec_key3, "another-bogus-kid", std_claims());
    char v[4096];
    snprintf(v, sizeof v, "Bearer %s", t);
    const struct http1_header h[] = { { STR_LIT("Authorization"), str_from_cstr(v) } };
    struct outcome o1 = { 0 }, o2 = { 0 };
    struct authn_result res;
    struct authn_pending *p1 = NULL, *p2 = NULL;
    CHECK_INT(authn_check(A, &prov[0], PROXY_JWT_REQUIRED, h, 1, &ar, &res, on_done, &o1, &p1), 0);
    CHECK_INT(authn_check(A, &prov[0], PROXY_JWT_REQUIRED, h, 1, &ar, &res, on_done, &o2, &p2), 0);
    CHECK(p1 && p2 && p1 != p2);
    authn_cancel(p1);
    authn_cancel(p1); /* twice: harmless */
    run_until(&o2.done, 3000);
    run_for(50);
    CHECK(!o1.done);
    CHECK_INT(o1.calls, 0);
    CHECK_INT(o2.calls, 1);
    CHECK_STR(o2.reason, "jwt_unknown_kid");
    authn_cancel(NULL);
    arena_free(&ar);
    free(t);
}

struct freer {
    struct authn *a;
    int calls;
};

static void free_in_callback(const struct authn_result *r, void *arg)
{
    struct freer *f = arg;
    f->calls++;
    authn_free(f->a); /* the engine may drop the last reference here */
}

static void test_free_with_pending(void)
{
    struct arena ar;
    arena_init(&ar, 4096, 0);
    char *t = sign(ec_signer, std_claims());
    char v[4096];
    snprintf(v, sizeof v, "Bearer %s", t);
    const struct http1_header h[] = { { STR_LIT("Authorization"), str_from_cstr(v) } };
    struct authn_result res;
    struct authn_pending *pd;

    /* Freed while its first fetch (and a check) is pending: no callback. */
    struct authn *b = authn_new(l, client, prov, 2);
    CHECK(b != NULL);
    authn_set_now(b, NOW);
    struct outcome o = { 0 };
    CHECK_INT(authn_check(b, &prov[0], PROXY_JWT_REQUIRED, h, 1, &ar, &res, on_done, &o, &pd), 0);
    authn_free(b);
    run_for(100);
    CHECK_INT(o.calls, 0);

    /* Freed from inside a callback, with a second check still waiting: the
     * teardown waits for the delivery to unwind; the second never runs. */
    b = authn_new(l, client, prov, 2);
    authn_set_now(b, NOW);
    struct freer f1 = { b, 0 }, f2 = { b, 0 };
    CHECK_INT(authn_check(b, &prov[0], PROXY_JWT_REQUIRED, h, 1, &ar, &res, free_in_callback, &f1, &pd), 0);
    CHECK_INT(authn_check(b, &prov[0], PROXY_JWT_REQUIRED, h, 1, &ar, &res, free_in_callback, &f2, &pd), 0);
    bool done = false;
    loop_update_time(l);
    uint64_t start = loop_now_ms(l);
    while (!(done = f1.calls > 0) && loop_now_ms(l) - start < 3000)
        loop_run_once(l, 20);
    CHECK(done);
    run_for(100);
    CHECK_INT(f1.calls, 1);
    CHECK_INT(f2.calls, 0);

    /* A provider that is not b's. */
    b = authn_new(l, client, prov, 1);
    struct proxy_jwt_provider other = prov[1];
    CHECK_INT(authn_check(b, &other, PROXY_JWT_REQUIRED, h, 1, &ar, &res, on_done, &o, &pd), -EINVAL);
    CHECK_INT(authn_check(b, &prov[1], PROXY_JWT_REQUIRED, h, 1, &ar, &res, on_done, &o, &pd), -EINVAL);
    authn_free(b);
    authn_free(NULL);

    /* A jwks_uri jwks_cache cannot use. */
    struct proxy_jwt_provider bad = prov[0];
    bad.jwks_uri = "http://jwks.example.test/keys";
    CHECK(authn_new(l, client, &bad, 1) == NULL);
    arena_free(&ar);
    free(t);
}

/* A port nothing listens on. */
static uint16_t dead_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t n = sizeof a;
    CHECK_INT(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    CHECK_INT(getsockname(fd, (struct sockaddr *)&a, &n), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static void test_jwks_down(void)
{
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%u/.well-known/jwks.json", dead_port());
    struct proxy_jwt_provider p = prov[0];
    p.jwks_uri = url;
    struct authn *d = authn_new(l, client, &p, 1);
    CHECK(d != NULL);
    authn_set_now(d, NOW);
    struct outcome o;
    char *t = sign(ec_signer, std_claims());
    /* Waits for the first fetch, which fails: 503, not 401. */
    CHECK_INT(check_tok(d, &p, t, &o), 0);
    EXPECT(o, 503, "jwks_unavailable");
    CHECK_INT(o.code, AUTHN_JWKS_UNAVAILABLE);
    check_tok(d, &p, t, &o);
    EXPECT(o, 503, "jwks_unavailable");
    /* What needs no key is still decided: no token, or a bad header. */
    CHECK_INT(check_authz(d, &p, PROXY_JWT_OPTIONAL, NULL, &o), 1);
    EXPECT(o, 0, "");
    CHECK_INT(check_authz(d, &p, PROXY_JWT_REQUIRED, NULL, &o), 1);
    EXPECT(o, 401, "jwt_missing");
    char *payload = std_payload();
    char *none = assemble("{\"alg\":\"none\",\"kid\":\"k\"}", payload, "AAAA", NULL, 0);
    CHECK_INT(check_tok(d, &p, none, &o), 1);
    EXPECT(o, 401, "jwt_alg_not_allowed");
    free(none);
    free(payload);
    CHECK_INT(authn_stats(d)->inserts, 0);
    authn_free(d);
    free(t);
}

static void test_reason_names(void)
{
    static const char *const want[] = {
        "", "jwt_missing", "jwt_malformed", "jwt_expired", "jwt_not_yet_valid", "jwt_bad_signature",
        "jwt_bad_issuer", "jwt_bad_audience", "jwt_alg_not_allowed", "jwt_too_large", "jwt_unknown_kid",
        "jwks_unavailable", "jwt_unavailable",
    };
    CHECK_INT(sizeof want / sizeof want[0], AUTHN_REASON_COUNT);
    for (int i = 0; i < AUTHN_REASON_COUNT; i++)
        CHECK_STR(authn_reason_name((enum authn_reason)i), want[i]);
}

/* ---- setup ---------------------------------------------------------------------------- */

static void setup(void)
{
    ec_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    ec_key2 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    ec_key3 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    rsa_key = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    ed_key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    CHECK(ec_key && ec_key2 && ec_key3 && rsa_key && ed_key);
    CHECK_INT(jwt_signer_from_pkey(ec_key, NULL, &ec_signer, NULL, 0), 0);
    CHECK_INT(jwt_signer_from_pkey(rsa_key, NULL, &rsa_signer, NULL, 0), 0);
    CHECK_INT(jwt_signer_from_pkey(ed_key, NULL, &ed_signer, NULL, 0), 0);
    CHECK_INT(jwt_signer_from_pkey(ec_key2, NULL, &ec2_signer, NULL, 0), 0);
    const struct jwt_signer *three[] = { ec_signer, rsa_signer, ed_signer };
    publish(three, 3);
    struct http1_server_config cfg = { .handler = serve_jwks };
    CHECK_INT(test_server_start(&ts, &cfg), 0);
    snprintf(jwks_url, sizeof jwks_url, "http://127.0.0.1:%u/.well-known/jwks.json", ts.port);
    l = loop_new();
    client = http1_client_new(l, NULL);
    CHECK(l && client);
    providers_init();
    A = authn_new(l, client, prov, 2);
    CHECK(A != NULL);
    authn_set_now(A, NOW);
}

static void teardown(void)
{
    authn_free(A);
    http1_client_free(client);
    loop_run_once(l, 10);
    loop_free(l);
    test_server_stop(&ts);
    jwt_signer_free(ec_signer);
    jwt_signer_free(rsa_signer);
    jwt_signer_free(ed_signer);
    jwt_signer_free(ec2_signer);
    EVP_PKEY_free(ec_key);
    EVP_PKEY_free(ec_key2);
    EVP_PKEY_free(ec_key3);
    EVP_PKEY_free(rsa_key);
    EVP_PKEY_free(ed_key);
}

int main(void)
{
    setup();
    RUN(test_first_check_waits_for_keys);
    RUN(test_valid_algorithms);
    RUN(test_missing);
    RUN(test_malformed);
    RUN(test_time_claims);
    RUN(test_issuer_audience);
    RUN(test_bad_signature);
    RUN(test_alg_attacks);
    RUN(test_oversized);
    RUN(test_cache);
    RUN(test_cache_bound);
    RUN(test_rotation);
    RUN(test_cancel);
    RUN(test_free_with_pending);
    RUN(test_jwks_down);
    RUN(test_reason_names);
    teardown();
    return check_done();
}
