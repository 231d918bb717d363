/* JWT: base64url, JWKS parsing, signing, the verification matrix (every way
 * a token must be refused), interop with the openssl CLI, and the JWKS
 * cache against a real http1_server on loopback. Keys are generated at run
 * time with OpenSSL's C API. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include "check.h"
#include "core/http1_client.h"
#include "core/http1_server.h"
#include "core/jwt.h"
#include "core/loop.h"
#include "support/test_server.h"

#define NOW 1700000000LL

static EVP_PKEY *ec_key, *rsa_key, *ed_key, *ec_key2, *ec_key3;
static struct jwt_signer *ec_signer, *rsa_signer, *ed_signer;
static struct jwks *all_keys;
static char tmpdir[64];

static const char *const audiences[] = { "strata-api", "other", NULL };

static struct jwt_verify_opts opts_all(void)
{
    return (struct jwt_verify_opts){
        .algs = JWT_ALG_ES256 | JWT_ALG_RS256 | JWT_ALG_EDDSA,
        .issuer = "https://auth.strata.local",
        .audiences = audiences,
        .now = NOW,
    };
}

static json_t *std_claims(void)
{
    return json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:s, s:s, s:s, s:[s,s]}", "iss", "https://auth.strata.local",
                     "sub", "user-42", "aud", "strata-api", "exp", (json_int_t)(NOW + 900), "iat", (json_int_t)NOW,
                     "nbf", (json_int_t)NOW, "jti", "jti-1", "sid", "sess-1", "email", "a@example.com", "roles",
                     "user", "admin");
}

/* A token string (NUL-terminated, caller frees) for claims signed by s. */
static char *sign_claims(const struct jwt_signer *s, json_t *claims)
{
    struct buf b;
    buf_init(&b, 1 << 20);
    int rc = jwt_sign(s, claims, &b);
    CHECK_INT(rc, 0);
    buf_append(&b, "", 1);
    json_decref(claims);
    char *t = strdup(buf_rptr(&b));
    buf_free(&b);
    return t;
}

/* Builds b64(header).b64(payload) and signs it with pkey as alg would, all
 * in this file (ECDSA DER → raw r||s here, not in jwt.c). */
static char *sign_raw(EVP_PKEY *pkey, enum jwt_alg alg, const char *header, const char *payload)
{
    struct buf b;
    buf_init(&b, 1 << 20);
    base64url_encode(header, strlen(header), &b);
    buf_append_cstr(&b, ".");
    base64url_encode(payload, strlen(payload), &b);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char sig[1024];
    size_t n = sizeof sig;
    CHECK(EVP_DigestSignInit(ctx, NULL, alg == JWT_ALG_EDDSA ? NULL : EVP_sha256(), NULL, pkey) == 1);
    CHECK(EVP_DigestSign(ctx, sig, &n, (const unsigned char *)buf_rptr(&b), buf_len(&b)) == 1);
    EVP_MD_CTX_free(ctx);
    unsigned char raw[64];
    const unsigned char *final = sig;
    if (alg == JWT_ALG_ES256) {
        const unsigned char *p = sig;
        ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)n);
        const BIGNUM *r, *s;
        ECDSA_SIG_get0(es, &r, &s);
        BN_bn2binpad(r, raw, 32);
        BN_bn2binpad(s, raw + 32, 32);
        ECDSA_SIG_free(es);
        final = raw;
        n = 64;
    }
    buf_append_cstr(&b, ".");
    base64url_encode(final, n, &b);
    buf_append(&b, "", 1);
    char *t = strdup(buf_rptr(&b));
    buf_free(&b);
    return t;
}

static int verify(const char *token, const struct jwt_verify_opts *o, struct jwt_error *err)
{
    struct jwt_claims c;
    int rc = jwt_verify(str_from_cstr(token), all_keys, o, &c, err);
    if (rc == 0)
        CHECK(c.payload != NULL);
    else
        CHECK(c.payload == NULL);
    jwt_claims_free(&c);
    return rc;
}

/* The reason a token is refused for (0 when accepted). */
static int reason_of(const char *token, const struct jwt_verify_opts *o)
{
    struct jwt_error err;
    int rc = verify(token, o, &err);
    if (rc == 0)
        return 0;
    CHECK(err.message[0] != '\0');
    return (int)err.reason;
}

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
    const struct jwt_signer *ss[] = { ec_signer, rsa_signer, ed_signer };
    struct buf b;
    buf_init(&b, 1 << 16);
    CHECK_INT(jwks_public_json(ss, 3, &b), 0);
    char err[160] = "";
    CHECK_INT(jwks_parse(buf_str(&b), &all_keys, err, sizeof err), 0);
    buf_free(&b);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/strata-jwt-XXXXXX");
    CHECK(mkdtemp(tmpdir) != NULL);
}

static void teardown(void)
{
    jwks_unref(all_keys);
    jwt_signer_free(ec_signer);
    jwt_signer_free(rsa_signer);
    jwt_signer_free(ed_signer);
    EVP_PKEY_free(ec_key);
    EVP_PKEY_free(ec_key2);
    EVP_PKEY_free(ec_key3);
    EVP_PKEY_free(rsa_key);
    EVP_PKEY_free(ed_key);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    CHECK_INT(system(cmd), 0);
}

/* ---- base64url ---------------------------------------------------------- */

static int b64d(const char *in, char *out, size_t cap)
{
    struct buf b;
    buf_init(&b, 1024);
    int rc = base64url_decode(str_from_cstr(in), &b);
    if (rc == 0)
        str_copy_cstr(buf_str(&b), out, cap);
    buf_free(&b);
    return rc;
}

static void test_base64url(void)
{
    static const struct {
        const char *plain, *enc;
    } v[] = { { "", "" }, { "f", "Zg" }, { "fo", "Zm8" }, { "foo", "Zm9v" }, { "foob", "Zm9vYg" },
              { "fooba", "Zm9vYmE" }, { "foobar", "Zm9vYmFy" }, { "\xfb\xff", "-_8" } };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        struct buf b;
        char out[64];
        buf_init(&b, 64);
        CHECK_INT(base64url_encode(v[i].plain, strlen(v[i].plain), &b), 0);
        CHECK_STRV(buf_str(&b), v[i].enc);
        buf_free(&b);
        CHECK_INT(b64d(v[i].enc, out, sizeof out), 0);
        CHECK_STR(out, v[i].plain);
    }
    char out[64];
    CHECK_INT(b64d("Zg==", out, sizeof out), -EINVAL);  /* padding */
    CHECK_INT(b64d("Zm9v+A", out, sizeof out), -EINVAL); /* standard alphabet */
    CHECK_INT(b64d("Zm9v/A", out, sizeof out), -EINVAL);
    CHECK_INT(b64d("Zm 9v", out, sizeof out), -EINVAL); /* whitespace */
    CHECK_INT(b64d("Zm9vY", out, sizeof out), -EINVAL); /* length mod 4 == 1 */
    CHECK_INT(b64d("Zh", out, sizeof out), -EINVAL);    /* non-zero unused bits */
    CHECK_INT(b64d("Zm9", out, sizeof out), -EINVAL);
    /* The buffer bound holds. */
    struct buf small;
    buf_init(&small, 2);
    CHECK_INT(base64url_encode("abcdef", 6, &small), -ENOBUFS);
    buf_free(&small);
}

/* ---- sign/verify round trips ------------------------------------------- */

static void test_round_trip(void)
{
    struct jwt_signer *signers[] = { ec_signer, rsa_signer, ed_signer };
    enum jwt_alg algs[] = { JWT_ALG_ES256, JWT_ALG_RS256, JWT_ALG_EDDSA };
    for (int i = 0; i < 3; i++) {
        CHECK_INT(jwt_signer_alg(signers[i]), algs[i]);
        char *t = sign_claims(signers[i], std_claims());
        struct jwt_verify_opts o = opts_all();
        struct jwt_claims c;
        struct jwt_error err;
        int rc = jwt_verify(str_from_cstr(t), all_keys, &o, &c, &err);
        CHECK_INT(rc, 0);
        if (rc == 0) {
            CHECK_STR(c.sub, "user-42");
            CHECK_STR(c.iss, "https://auth.strata.local");
            CHECK_STR(c.jti, "jti-1");
            CHECK_STR(c.sid, "sess-1");
            CHECK_STR(c.email, "a@example.com");
            CHECK_INT(c.exp, NOW + 900);
            CHECK_INT(c.iat, NOW);
            CHECK_INT(c.nbf, NOW);
            CHECK_INT(c.alg, algs[i]);
            CHECK_STR(c.kid, jwt_signer_kid(signers[i]));
            CHECK(jwt_claims_has_role(&c, "admin"));
            CHECK(jwt_claims_has_role(&c, "user"));
            CHECK(!jwt_claims_has_role(&c, "root"));
        }
        jwt_claims_free(&c);
        jwt_claims_free(&c); /* idempotent */
        /* The header is exactly what services and the gateway expect. */
        char kid[JWT_MAX_KID_BYTES + 1];
        CHECK_INT(jwt_peek_kid(str_from_cstr(t), kid, sizeof kid), 0);
        CHECK_STR(kid, jwt_signer_kid(signers[i]));
        char hdr[256];
        *strchr(t, '.') = '\0';
        CHECK_INT(b64d(t, hdr, sizeof hdr), 0);
        char want[256];
        snprintf(want, sizeof want, "{\"alg\":\"%s\",\"typ\":\"JWT\",\"kid\":\"%s\"}", jwt_alg_name(algs[i]),
                 jwt_signer_kid(signers[i]));
        CHECK_STR(hdr, want);
        free(t);
    }
    /* ES256 signatures are 64 raw bytes: 86 base64url characters. */
    char *t = sign_claims(ec_signer, std_claims());
    CHECK_INT(strlen(strrchr(t, '.') + 1), 86);
    free(t);
    /* Only objects are signed. */
    struct buf b;
    buf_init(&b, 4096);
    json_t *arr = json_array();
    CHECK_INT(jwt_sign(ec_signer, arr, &b), -EINVAL);
    CHECK_INT(buf_len(&b), 0);
    json_decref(arr);
    buf_free(&b);
}

/* ---- the matrix --------------------------------------------------------- */

static json_t *claims_with(const char *key, json_t *value)
{
    json_t *c = std_claims();
    if (value)
        json_object_set_new(c, key, value);
    else
        json_object_del(c, key);
    return c;
}

static void test_time_claims(void)
{
    struct jwt_verify_opts o = opts_all();
    char *t;

    /* exp: valid strictly before exp + leeway (default 30 s). */
    t = sign_claims(ec_signer, claims_with("exp", json_integer(NOW - 29)));
    CHECK_INT(reason_of(t, &o), 0);
    free(t);
    t = sign_claims(ec_signer, claims_with("exp", json_integer(NOW - 30)));
    CHECK_INT(reason_of(t, &o), JWT_E_EXPIRED);
    free(t);
    t = sign_claims(ec_signer, claims_with("exp", json_integer(NOW - 3600)));
    CHECK_INT(reason_of(t, &o), JWT_E_EXPIRED);
    /* explicit leeway, and none */
    o.leeway_s = 5000;
    CHECK_INT(reason_of(t, &o), 0);
    free(t);
    o.leeway_s = JWT_LEEWAY_NONE;
    t = sign_claims(ec_signer, claims_with("exp", json_integer(NOW)));
    CHECK_INT(reason_of(t, &o), JWT_E_EXPIRED);
    free(t);
    t = sign_claims(ec_signer, claims_with("exp", json_integer(NOW + 1)));
    CHECK_INT(reason_of(t, &o), 0);
    free(t);
    /* fractional NumericDate */
    t = sign_claims(ec_signer, claims_with("exp", json_real((double)NOW + 1.5)));
    CHECK_INT(reason_of(t, &o), 0);
    free(t);
    t = sign_claims(ec_signer, claims_with("exp", json_real((double)NOW + 0.5))); /* truncated to NOW */
    CHECK_INT(reason_of(t, &o), JWT_E_EXPIRED);
    free(t);
    o = opts_all();

    /* nbf / iat: not before nbf - leeway. */
    t = sign_claims(ec_signer, claims_with("nbf", json_integer(NOW + 30)));
    CHECK_INT(reason_of(t, &o), 0);
    free(t);
    t = sign_claims(ec_signer, claims_with("nbf", json_integer(NOW + 31)));
    CHECK_INT(reason_of(t, &o), JWT_E_NOT_YET_VALID);
    free(t);
    t = sign_claims(ec_signer, claims_with("iat", json_integer(NOW + 31)));
    CHECK_INT(reason_of(t, &o), JWT_E_NOT_YET_VALID);
    free(t);
    /* extreme values do not overflow */
    t = sign_claims(ec_signer, claims_with("exp", json_integer(INT64_MIN)));
    CHECK_INT(reason_of(t, &o), JWT_E_EXPIRED);
    free(t);
    t = sign_claims(ec_signer, claims_with("nbf", json_integer(INT64_MAX)));
    CHECK_INT(reason_of(t, &o), JWT_E_NOT_YET_VALID);
    free(t);
    t = sign_claims(ec_signer, claims_with("exp", json_real(1e300)));
    CHECK_INT(reason_of(t, &o), JWT_E_MALFORMED);
    free(t);

    /* numeric only */
    t = sign_claims(ec_signer, claims_with("exp", json_string("1800000000")));
    CHECK_INT(reason_of(t, &o), JWT_E_MALFORMED);
    free(t);
    t = sign_claims(ec_signer, claims_with("nbf", json_true()));
    CHECK_INT(reason_of(t, &o), JWT_E_MALFORMED);
    free(t);

    /* exp required unless the caller says otherwise */
    t = sign_claims(ec_signer, claims_with("exp", NULL));
    CHECK_INT(reason_of(t, &o), JWT_E_EXPIRED);
    o.allow_missing_exp = true;
    CHECK_INT(reason_of(t, &o), 0);
    free(t);

    /* now 0 → the real clock: a token valid for the next 15 minutes passes. */
    o = opts_all();
    o.now = 0;
    json_t *c = std_claims();
    json_object_set_new(c, "exp", json_integer((json_int_t)time(NULL) + 900));
    json_object_set_new(c, "iat", json_integer((json_int_t)time(NULL)));
    json_object_set_new(c, "nbf", json_integer((json_int_t)time(NULL)));
    t = sign_claims(ec_signer, c);
    CHECK_INT(reason_of(t, &o), 0);
    free(t);
}

static void test_issuer_audience(void)
{
    struct jwt_verify_opts o = opts_all();
    char *t;

    t = sign_claims(ec_signer, claims_with("iss", json_string("https://evil.example")));
    CHECK_INT(reason_of(t, &o), JWT_E_BAD_ISSUER);
    free(t);
    t = sign_claims(ec_signer, claims_with("iss", NULL));
    CHECK_INT(reason_of(t, &o), JWT_E_BAD_ISSUER);
    o.issuer = NULL; /* not checked */
    CHECK_INT(reason_of(t, &o), 0);
    free(t);
    o = opts_all();
    t = sign_claims(ec_signer, claims_with("iss", json_integer(7)));
    CHECK_INT(reason_of(t, &o), JWT_E_MALFORMED);
    free(t);

    t = sign_claims(ec_signer, claims_with("aud", json_string("someone-else")));
    CHECK_INT(reason_of(t, &o), JWT_E_BAD_AUDIENCE);
    free(t);
    t = sign_claims(ec_signer, claims_with("aud", json_string("other"))); /* second accepted audience */
    CHECK_INT(reason_of(t, &o), 0);
    free(t);
    t = sign_claims(ec_signer, claims_with("aud", json_pack("[s,s]", "x", "strata-api")));
    CHECK_INT(reason_of(t, &o), 0);
    free(t);
    t = sign_claims(ec_signer, claims_with("aud", json_pack("[s,s]", "x", "y")));
    CHECK_INT(reason_of(t, &o), JWT_E_BAD_AUDIENCE);
    free(t);
    t = sign_claims(ec_signer, claims_with("aud", json_array()));
    CHECK_INT(reason_of(t, &o), JWT_E_BAD_AUDIENCE);
    free(t);
    t = sign_claims(ec_signer, claims_with("aud", json_pack("[s,i]", "strata-api", 1)));
    CHECK_INT(reason_of(t, &o), JWT_E_MALFORMED);
    free(t);
    t = sign_claims(ec_signer, claims_with("aud", NULL));
    CHECK_INT(reason_of(t, &o), JWT_E_BAD_AUDIENCE);
    o.audiences = NULL;
    CHECK_INT(reason_of(t, &o), 0);
    free(t);

    o = opts_all();
    t = sign_claims(ec_signer, claims_with("roles", json_string("admin")));
    CHECK_INT(reason_of(t, &o), JWT_E_MALFORMED);
    free(t);
}

static void test_signature_and_alg(void)
{
    struct jwt_verify_opts o = opts_all();
    char *t = sign_claims(ec_signer, std_claims());
    char *dot = strrchr(t, '.');

    /* Flip one bit of the signature (decode, flip, re-encode). */
    {
        struct buf raw, enc;
        buf_init(&raw, 128);
        buf_init(&enc, 1024);
        CHECK_INT(base64url_decode(str_from_cstr(dot + 1), &raw), 0);
        raw.data[raw.rpos + 10] ^= 0x01;
        buf_append(&enc, t, (size_t)(dot + 1 - t));
        base64url_encode(buf_rptr(&raw), buf_len(&raw), &enc);
        buf_append(&enc, "", 1);
        CHECK_INT(reason_of(buf_rptr(&enc), &o), JWT_E_BAD_SIGNATURE);
        /* ... and an ES256 signature in DER form (wrong length). */
        buf_reset(&enc);
        buf_append(&enc, t, (size_t)(dot + 1 - t));
        unsigned char der[80] = { 0x30 };
        base64url_encode(der, 72, &enc);
        buf_append(&enc, "", 1);
        CHECK_INT(reason_of(buf_rptr(&enc), &o), JWT_E_BAD_SIGNATURE);
        /* r = s = 0 */
        buf_reset(&enc);
        buf_append(&enc, t, (size_t)(dot + 1 - t));
        base64url_encode(der + 8, 64, &enc);
        buf_append(&enc, "", 1);
        CHECK_INT(reason_of(buf_rptr(&enc), &o), JWT_E_BAD_SIGNATURE);
        buf_free(&raw);
        buf_free(&enc);
    }
    /* A changed payload with the old signature. */
    {
        char *t2 = sign_claims(ec_signer, claims_with("sub", json_string("admin")));
        char *d2 = strrchr(t2, '.');
        struct buf b;
        buf_init(&b, 4096);
        buf_append(&b, t2, (size_t)(d2 - t2));
        buf_append_cstr(&b, dot);
        buf_append(&b, "", 1);
        CHECK_INT(reason_of(buf_rptr(&b), &o), JWT_E_BAD_SIGNATURE);
        buf_free(&b);
        free(t2);
    }

    /* The allowlist: ES256 only refuses RS256 and EdDSA tokens. */
    struct jwt_verify_opts es_only = o;
    es_only.algs = JWT_ALG_ES256;
    char *rt = sign_claims(rsa_signer, std_claims()), *et = sign_claims(ed_signer, std_claims());
    CHECK_INT(reason_of(rt, &es_only), JWT_E_ALG_NOT_ALLOWED);
    CHECK_INT(reason_of(et, &es_only), JWT_E_ALG_NOT_ALLOWED);
    CHECK_INT(reason_of(t, &es_only), 0);
    es_only.algs = 0; /* default: ES256 only */
    CHECK_INT(reason_of(rt, &es_only), JWT_E_ALG_NOT_ALLOWED);
    CHECK_INT(reason_of(t, &es_only), 0);
    free(rt);
    free(et);

    char hdr[512], payload[512];
    snprintf(payload, sizeof payload,
             "{\"iss\":\"https://auth.strata.local\",\"aud\":\"strata-api\",\"sub\":\"x\",\"exp\":%lld}", NOW + 60);

    /* alg/key-type mismatch: the EC key's kid with an RS256 header, signed
     * by the RSA key; EdDSA header with the RSA kid. */
    snprintf(hdr, sizeof hdr, "{\"alg\":\"RS256\",\"kid\":\"%s\"}", jwt_signer_kid(ec_signer));
    char *m = sign_raw(rsa_key, JWT_ALG_RS256, hdr, payload);
    CHECK_INT(reason_of(m, &o), JWT_E_ALG_NOT_ALLOWED);
    free(m);
    snprintf(hdr, sizeof hdr, "{\"alg\":\"EdDSA\",\"kid\":\"%s\"}", jwt_signer_kid(rsa_signer));
    m = sign_raw(ed_key, JWT_ALG_EDDSA, hdr, payload);
    CHECK_INT(reason_of(m, &o), JWT_E_ALG_NOT_ALLOWED);
    free(m);
    /* sign_raw itself is right: the matching header passes. */
    snprintf(hdr, sizeof hdr, "{\"alg\":\"ES256\",\"kid\":\"%s\"}", jwt_signer_kid(ec_signer));
    m = sign_raw(ec_key, JWT_ALG_ES256, hdr, payload);
    CHECK_INT(reason_of(m, &o), 0);
    free(m);

    /* alg "none": with an empty signature (the classic) and with one. */
    snprintf(hdr, sizeof hdr, "{\"alg\":\"none\",\"kid\":\"%s\"}", jwt_signer_kid(ec_signer));
    struct buf b;
    buf_init(&b, 4096);
    base64url_encode(hdr, strlen(hdr), &b);
    buf_append_cstr(&b, ".");
    base64url_encode(payload, strlen(payload), &b);
    buf_append_cstr(&b, ".");
    buf_append(&b, "", 1);
    CHECK(reason_of(buf_rptr(&b), &o) != 0);
    b.wpos--;
    buf_append_cstr(&b, "AAAA");
    buf_append(&b, "", 1);
    CHECK_INT(reason_of(buf_rptr(&b), &o), JWT_E_ALG_NOT_ALLOWED);
    buf_free(&b);

    /* HS256 with the public key PEM as the HMAC secret (key confusion). */
    {
        BIO *bio = BIO_new(BIO_s_mem());
        CHECK(PEM_write_bio_PUBKEY(bio, ec_key) == 1);
        char *pem;
        long pemlen = BIO_get_mem_data(bio, &pem);
        snprintf(hdr, sizeof hdr, "{\"alg\":\"HS256\",\"typ\":\"JWT\",\"kid\":\"%s\"}", jwt_signer_kid(ec_signer));
        buf_init(&b, 4096);
        base64url_encode(hdr, strlen(hdr), &b);
        buf_append_cstr(&b, ".");
        base64url_encode(payload, strlen(payload), &b);
        unsigned char mac[32];
        unsigned maclen = 0;
        HMAC(EVP_sha256(), pem, (int)pemlen, (const unsigned char *)buf_rptr(&b), buf_len(&b), mac, &maclen);
        buf_append_cstr(&b, ".");
        base64url_encode(mac, maclen, &b);
        buf_append(&b, "", 1);
        CHECK_INT(reason_of(buf_rptr(&b), &o), JWT_E_ALG_NOT_ALLOWED);
        struct jwt_verify_opts every = o;
        every.algs = ~0u;
        CHECK_INT(reason_of(buf_rptr(&b), &every), JWT_E_ALG_NOT_ALLOWED);
        buf_free(&b);
        BIO_free(bio);
    }

    /* Unknown kid, missing kid, non-string kid. */
    snprintf(hdr, sizeof hdr, "{\"alg\":\"ES256\",\"kid\":\"no-such-key\"}");
    m = sign_raw(ec_key, JWT_ALG_ES256, hdr, payload);
    CHECK_INT(reason_of(m, &o), JWT_E_UNKNOWN_KID);
    free(m);
    m = sign_raw(ec_key, JWT_ALG_ES256, "{\"alg\":\"ES256\"}", payload);
    CHECK_INT(reason_of(m, &o), JWT_E_UNKNOWN_KID);
    free(m);
    m = sign_raw(ec_key, JWT_ALG_ES256, "{\"alg\":\"ES256\",\"kid\":5}", payload);
    CHECK_INT(reason_of(m, &o), JWT_E_MALFORMED);
    free(m);
    /* A key we do not have, under a kid we do: a bad signature. */
    m = sign_raw(ec_key2, JWT_ALG_ES256, (snprintf(hdr, sizeof hdr, "{\"alg\":\"ES256\",\"kid\":\"%s\"}",
                                                   jwt_signer_kid(ec_signer)),
                                          hdr),
                 payload);
    CHECK_INT(reason_of(m, &o), JWT_E_BAD_SIGNATURE);
    free(m);

    /* crit → refused, even when correctly signed. */
    snprintf(hdr, sizeof hdr, "{\"alg\":\"ES256\",\"kid\":\"%s\",\"crit\":[\"exp\"],\"exp\":1}",
             jwt_signer_kid(ec_signer));
    m = sign_raw(ec_key, JWT_ALG_ES256, hdr, payload);
    CHECK_INT(reason_of(m, &o), JWT_E_MALFORMED);
    free(m);

    /* Header and payload must be JSON objects (signed correctly). */
    snprintf(hdr, sizeof hdr, "{\"alg\":\"ES256\",\"kid\":\"%s\"}", jwt_signer_kid(ec_signer));
    m = sign_raw(ec_key, JWT_ALG_ES256, hdr, "[1,2]");
    CHECK_INT(reason_of(m, &o), JWT_E_MALFORMED);
    free(m);
    m = sign_raw(ec_key, JWT_ALG_ES256, hdr, "{\"exp\":1,\"exp\":2}"); /* duplicate key */
    CHECK_INT(reason_of(m, &o), JWT_E_MALFORMED);
    free(m);
    m = sign_raw(ec_key, JWT_ALG_ES256, "[\"ES256\"]", payload);
    CHECK_INT(reason_of(m, &o), JWT_E_MALFORMED);
    free(m);
    m = sign_raw(ec_key, JWT_ALG_ES256, "not json", payload);
    CHECK_INT(reason_of(m, &o), JWT_E_MALFORMED);
    free(m);
    free(t);
}

static void test_malformed(void)
{
    struct jwt_verify_opts o = opts_all();
    char *t = sign_claims(ec_signer, std_claims());
    char buf[4096];
    CHECK_INT(reason_of(t, &o), 0);

    CHECK_INT(reason_of("", &o), JWT_E_MALFORMED);
    CHECK_INT(reason_of("abc", &o), JWT_E_MALFORMED);
    CHECK_INT(reason_of("a.b", &o), JWT_E_MALFORMED);    /* 2 parts */
    CHECK_INT(reason_of("a.b.c.d", &o), JWT_E_MALFORMED); /* 4 parts */
    CHECK_INT(reason_of("..", &o), JWT_E_MALFORMED);
    snprintf(buf, sizeof buf, "%s.", t); /* trailing dot: 4 parts */
    CHECK_INT(reason_of(buf, &o), JWT_E_MALFORMED);
    snprintf(buf, sizeof buf, "%s.%s", "eyJhbGciOiJFUzI1NiJ9", strchr(t, '.') + 1);
    CHECK(reason_of(buf, &o) != 0);
    /* bad base64url in the header: '+' and padding */
    snprintf(buf, sizeof buf, "+%s", t + 1);
    CHECK_INT(reason_of(buf, &o), JWT_E_MALFORMED);
    char *d1 = strchr(t, '.');
    snprintf(buf, sizeof buf, "%.*s=%s", (int)(d1 - t), t, d1);
    CHECK_INT(reason_of(buf, &o), JWT_E_MALFORMED);
    /* bad base64url in the signature: padding, invalid byte */
    snprintf(buf, sizeof buf, "%s==", t);
    CHECK(reason_of(buf, &o) != 0);
    strcpy(buf, t);
    buf[strlen(buf) - 3] = '*';
    CHECK_INT(reason_of(buf, &o), JWT_E_MALFORMED);
    /* NUL inside the token */
    struct jwt_claims c;
    struct jwt_error err;
    strcpy(buf, t);
    buf[5] = '\0';
    CHECK(jwt_verify(str_make(buf, strlen(t)), all_keys, &o, &c, &err) < 0);
    CHECK_INT(err.reason, JWT_E_MALFORMED);
    /* NULL options are the defaults (ES256, leeway 30, now = time()): this
     * token expired in 2023. */
    CHECK_INT(jwt_verify(str_from_cstr(t), all_keys, NULL, &c, &err), -EINVAL);
    CHECK_INT(err.reason, JWT_E_EXPIRED);
    /* NULL key set: unknown kid. */
    CHECK_INT(jwt_verify(str_from_cstr(t), NULL, &o, &c, &err), -EINVAL);
    CHECK_INT(err.reason, JWT_E_UNKNOWN_KID);
    CHECK_INT(jwt_peek_kid(STR_LIT("a.b"), buf, sizeof buf), -EINVAL);
    free(t);

    /* Oversized: refused before anything is decoded. */
    json_t *claims = std_claims();
    char *big = malloc(9000);
    memset(big, 'x', 8999);
    big[8999] = '\0';
    json_object_set_new(claims, "pad", json_string(big));
    t = sign_claims(ec_signer, claims);
    CHECK_INT(reason_of(t, &o), JWT_E_TOO_LARGE);
    o.max_token_bytes = 64 * 1024;
    CHECK_INT(reason_of(t, &o), 0);
    o.max_token_bytes = 100;
    CHECK_INT(reason_of("a.b.c", &o), JWT_E_MALFORMED);
    memset(big, 'a', 200);
    big[101] = '\0';
    CHECK_INT(reason_of(big, &o), JWT_E_TOO_LARGE);
    free(big);
    free(t);
}

/* ---- JWKS ---------------------------------------------------------------- */

static void test_jwks_parse(void)
{
    struct jwks *k = NULL;
    char err[160];
    struct buf b;
    buf_init(&b, 1 << 16);
    const struct jwt_signer *ss[] = { ec_signer };
    CHECK_INT(jwks_public_json(ss, 1, &b), 0);
    /* Take the EC key's members to build variants. */
    json_t *doc = json_loadb(buf_rptr(&b), buf_len(&b), 0, NULL);
    json_t *ec = json_array_get(json_object_get(doc, "keys"), 0);
    CHECK_STR(json_string_value(json_object_get(ec, "kty")), "EC");
    CHECK_STR(json_string_value(json_object_get(ec, "use")), "sig");
    CHECK_STR(json_string_value(json_object_get(ec, "alg")), "ES256");

    json_t *keys = json_array();
    json_t *v;
#define VARIANT(kid, key, val)                                                                               \
    do {                                                                                                    \
        v = json_deep_copy(ec);                                                                             \
        json_object_set_new(v, "kid", json_string(kid));                                                   \
        if (key)                                                                                            \
            json_object_set_new(v, key, val);                                                               \
        json_array_append_new(keys, v);                                                                     \
    } while (0)
    VARIANT("good", NULL, NULL);
    VARIANT("enc", "use", json_string("enc"));
    VARIANT("wrong-alg", "alg", json_string("RS256"));
    VARIANT("hs", "alg", json_string("HS256"));
    VARIANT("p384", "crv", json_string("P-384"));
    VARIANT("short-x", "x", json_string("AAAA"));
    VARIANT("off-curve", "y", json_string("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"));
    VARIANT("ops-sign-only", "key_ops", json_pack("[s]", "sign"));
    VARIANT("ops-verify", "key_ops", json_pack("[s]", "verify"));
    VARIANT("good", NULL, NULL); /* duplicate kid */
    v = json_deep_copy(ec);
    json_object_del(v, "kid");
    json_array_append_new(keys, v);
    json_array_append_new(keys, json_pack("{s:s,s:s,s:s}", "kty", "oct", "kid", "hmac", "k", "c2VjcmV0"));
    json_array_append_new(keys, json_pack("{s:s,s:s,s:s,s:s}", "kty", "OKP", "crv", "X25519", "kid", "x25519",
                                          "x", "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"));
    /* RSA 1024 bits: too small. */
    EVP_PKEY *small = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
    {
        BIGNUM *n = NULL, *e = NULL;
        EVP_PKEY_get_bn_param(small, "n", &n);
        EVP_PKEY_get_bn_param(small, "e", &e);
        unsigned char nb[512], eb[8];
        int nn = BN_bn2bin(n, nb), ne = BN_bn2bin(e, eb);
        struct buf nbuf, ebuf;
        buf_init(&nbuf, 1024);
        buf_init(&ebuf, 64);
        base64url_encode(nb, (size_t)nn, &nbuf);
        base64url_encode(eb, (size_t)ne, &ebuf);
        buf_append(&nbuf, "", 1);
        buf_append(&ebuf, "", 1);
        json_array_append_new(keys, json_pack("{s:s,s:s,s:s,s:s}", "kty", "RSA", "kid", "rsa1024", "n",
                                              buf_rptr(&nbuf), "e", buf_rptr(&ebuf)));
        buf_free(&nbuf);
        buf_free(&ebuf);
        BN_free(n);
        BN_free(e);
    }
    EVP_PKEY_free(small);
    json_array_append_new(keys, json_string("not an object"));
    json_t *set = json_pack("{s:o}", "keys", keys);
    char *text = json_dumps(set, JSON_COMPACT);
    CHECK_INT(jwks_parse(str_from_cstr(text), &k, err, sizeof err), 0);
    CHECK_INT(jwks_count(k), 2);
    CHECK(jwks_has_kid(k, "good"));
    CHECK(jwks_has_kid(k, "ops-verify"));
    static const char *const skipped[] = { "enc", "wrong-alg", "hs", "p384", "short-x", "off-curve",
                                           "ops-sign-only", "hmac", "x25519", "rsa1024" };
    for (size_t i = 0; i < sizeof skipped / sizeof skipped[0]; i++)
        CHECK(!jwks_has_kid(k, skipped[i]));
    CHECK(jwks_ref(k) == k);
    jwks_unref(k);
    jwks_unref(k);
    free(text);

    /* Nothing usable → error naming why. */
    for (size_t i = json_array_size(keys); i-- > 0;) {
        const char *kid = json_string_value(json_object_get(json_array_get(keys, i), "kid"));
        if (kid && (strcmp(kid, "good") == 0 || strcmp(kid, "ops-verify") == 0))
            json_array_remove(keys, i);
    }
    text = json_dumps(set, JSON_COMPACT);
    k = (struct jwks *)1;
    CHECK_INT(jwks_parse(str_from_cstr(text), &k, err, sizeof err), -EINVAL);
    CHECK(k == NULL);
    CHECK(strstr(err, "no usable key") != NULL);
    free(text);
    json_decref(set);

    CHECK_INT(jwks_parse(STR_LIT("{\"keys\":[]}"), &k, err, sizeof err), -EINVAL);
    CHECK_INT(jwks_parse(STR_LIT("[]"), &k, err, sizeof err), -EINVAL);
    CHECK_INT(jwks_parse(STR_LIT("{\"keys\":{}}"), &k, err, sizeof err), -EINVAL);
    CHECK_INT(jwks_parse(STR_LIT("{\"keys\":"), &k, err, sizeof err), -EINVAL);
    CHECK(strstr(err, "not JSON") != NULL);
    char *huge = malloc(JWKS_MAX_DOCUMENT_BYTES + 2);
    memset(huge, ' ', JWKS_MAX_DOCUMENT_BYTES + 1);
    memcpy(huge, "{\"keys\":[]}", 11);
    CHECK_INT(jwks_parse(str_make(huge, JWKS_MAX_DOCUMENT_BYTES + 1), &k, err, sizeof err), -EINVAL);
    free(huge);
    json_decref(doc);
    buf_free(&b);
}

/* RFC 7638 thumbprint recomputed here from the published JWK. */
static void thumb_of(json_t *jwk, char *out, size_t cap)
{
    const char *kty = json_string_value(json_object_get(jwk, "kty"));
    char canon[2048];
    if (strcmp(kty, "EC") == 0)
        snprintf(canon, sizeof canon, "{\"crv\":\"%s\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}",
                 json_string_value(json_object_get(jwk, "crv")), json_string_value(json_object_get(jwk, "x")),
                 json_string_value(json_object_get(jwk, "y")));
    else if (strcmp(kty, "RSA") == 0)
        snprintf(canon, sizeof canon, "{\"e\":\"%s\",\"kty\":\"RSA\",\"n\":\"%s\"}",
                 json_string_value(json_object_get(jwk, "e")), json_string_value(json_object_get(jwk, "n")));
    else
        snprintf(canon, sizeof canon, "{\"crv\":\"%s\",\"kty\":\"OKP\",\"x\":\"%s\"}",
                 json_string_value(json_object_get(jwk, "crv")), json_string_value(json_object_get(jwk, "x")));
    unsigned char md[32];
    EVP_Digest(canon, strlen(canon), md, NULL, EVP_sha256(), NULL);
    struct buf b;
    buf_init(&b, 64);
    base64url_encode(md, 32, &b);
    str_copy_cstr(buf_str(&b), out, cap);
    buf_free(&b);
}

static void test_jwks_public_json_and_kid(void)
{
    const struct jwt_signer *ss[] = { ec_signer, rsa_signer, ed_signer };
    struct buf b;
    buf_init(&b, 1 << 16);
    CHECK_INT(jwks_public_json(ss, 3, &b), 0);
    json_t *doc = json_loadb(buf_rptr(&b), buf_len(&b), 0, NULL);
    CHECK(doc != NULL);
    json_t *keys = json_object_get(doc, "keys");
    CHECK_INT(json_array_size(keys), 3);
    for (size_t i = 0; i < 3 && i < json_array_size(keys); i++) {
        json_t *k = json_array_get(keys, i);
        char tp[64];
        thumb_of(k, tp, sizeof tp);
        CHECK_STR(json_string_value(json_object_get(k, "kid")), jwt_signer_kid(ss[i]));
        CHECK_STR(tp, jwt_signer_kid(ss[i]));
        CHECK(json_object_get(k, "d") == NULL); /* never the private part */
        CHECK(json_object_get(k, "p") == NULL);
    }
    CHECK_INT(jwks_count(all_keys), 3);
    for (int i = 0; i < 3; i++)
        CHECK(jwks_has_kid(all_keys, jwt_signer_kid(ss[i])));
    json_decref(doc);
    buf_free(&b);

    /* RFC 8037 A.3: the Ed25519 example key's thumbprint. */
    static const unsigned char d[32] = { 0x9d, 0x61, 0xb1, 0x9d, 0xef, 0xfd, 0x5a, 0x60, 0xba, 0x84, 0x4a,
                                         0xf4, 0x92, 0xec, 0x2c, 0xc4, 0x44, 0x49, 0xc5, 0x69, 0x7b, 0x32,
                                         0x69, 0x19, 0x70, 0x3b, 0xac, 0x03, 0x1c, 0xae, 0x7f, 0x60 };
    EVP_PKEY *rfc = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, d, sizeof d);
    struct jwt_signer *s = NULL;
    CHECK_INT(jwt_signer_from_pkey(rfc, NULL, &s, NULL, 0), 0);
    CHECK_STR(jwt_signer_kid(s), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    jwt_signer_free(s);
    CHECK_INT(jwt_signer_from_pkey(rfc, "my-kid", &s, NULL, 0), 0);
    CHECK_STR(jwt_signer_kid(s), "my-kid");
    jwt_signer_free(s);
    EVP_PKEY_free(rfc);

    /* PEM files: the kid is the same from the file, every time. */
    char path[128], err[160];
    snprintf(path, sizeof path, "%s/es256.pem", tmpdir);
    FILE *f = fopen(path, "w");
    PEM_write_PrivateKey(f, ec_key, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    struct jwt_signer *a = NULL, *b2 = NULL;
    CHECK_INT(jwt_signer_load_pem(path, &a, err, sizeof err), 0);
    CHECK_INT(jwt_signer_load_pem(path, &b2, err, sizeof err), 0);
    if (a && b2) {
        CHECK_STR(jwt_signer_kid(a), jwt_signer_kid(ec_signer));
        CHECK_STR(jwt_signer_kid(a), jwt_signer_kid(b2));
        char *t = sign_claims(a, std_claims());
        struct jwt_verify_opts o = opts_all();
        CHECK_INT(reason_of(t, &o), 0);
        free(t);
    }
    jwt_signer_free(a);
    jwt_signer_free(b2);
    /* Refusals name the file. */
    snprintf(path, sizeof path, "%s/missing.pem", tmpdir);
    CHECK_INT(jwt_signer_load_pem(path, &a, err, sizeof err), -ENOENT);
    CHECK(strstr(err, "missing.pem") != NULL);
    snprintf(path, sizeof path, "%s/garbage.pem", tmpdir);
    f = fopen(path, "w");
    fputs("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n", f);
    fclose(f);
    CHECK_INT(jwt_signer_load_pem(path, &a, err, sizeof err), -EINVAL);
    EVP_PKEY *p384 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    snprintf(path, sizeof path, "%s/p384.pem", tmpdir);
    f = fopen(path, "w");
    PEM_write_PrivateKey(f, p384, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    CHECK_INT(jwt_signer_load_pem(path, &a, err, sizeof err), -EINVAL);
    CHECK(strstr(err, "P-256") != NULL);
    EVP_PKEY_free(p384);
}

/* ---- interop with the openssl CLI --------------------------------------- */

static int write_file(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    size_t w = fwrite(p, 1, n, f);
    fclose(f);
    return w == n ? 0 : -1;
}

static long read_file(const char *path, unsigned char *out, size_t cap)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(out, 1, cap, f);
    fclose(f);
    return (long)n;
}

/* Minimal DER: SEQUENCE { INTEGER r, INTEGER s } ↔ raw r||s, written here
 * independently of jwt.c. */
static int der_int(const unsigned char **p, const unsigned char *end, unsigned char out[32])
{
    if (end - *p < 2 || (*p)[0] != 0x02)
        return -1;
    size_t len = (*p)[1];
    const unsigned char *v = *p + 2;
    if ((size_t)(end - v) < len)
        return -1;
    *p = v + len;
    while (len > 32 && *v == 0) {
        v++;
        len--;
    }
    if (len > 32)
        return -1;
    memset(out, 0, 32);
    memcpy(out + 32 - len, v, len);
    return 0;
}

static int der_to_raw(const unsigned char *der, size_t n, unsigned char raw[64])
{
    if (n < 8 || der[0] != 0x30 || der[1] != n - 2)
        return -1;
    const unsigned char *p = der + 2, *end = der + n;
    return der_int(&p, end, raw) || der_int(&p, end, raw + 32) || p != end ? -1 : 0;
}

static size_t raw_to_der(const unsigned char raw[64], unsigned char *der)
{
    size_t off = 2;
    for (int i = 0; i < 2; i++) {
        const unsigned char *v = raw + 32 * i;
        size_t len = 32;
        while (len > 1 && *v == 0) {
            v++;
            len--;
        }
        bool pad = *v & 0x80;
        der[off++] = 0x02;
        der[off++] = (unsigned char)(len + pad);
        if (pad)
            der[off++] = 0;
        memcpy(der + off, v, len);
        off += len;
    }
    der[0] = 0x30;
    der[1] = (unsigned char)(off - 2);
    return off;
}

static int run(const char *cmd)
{
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_openssl_cli_interop(void)
{
    char key[128], pub[128], rkey[128], in[128], sig[128], cmd[1024];
    snprintf(key, sizeof key, "%s/cli-ec.pem", tmpdir);
    snprintf(rkey, sizeof rkey, "%s/cli-rsa.pem", tmpdir);
    snprintf(pub, sizeof pub, "%s/cli-ec.pub", tmpdir);
    snprintf(in, sizeof in, "%s/input", tmpdir);
    snprintf(sig, sizeof sig, "%s/sig", tmpdir);
    FILE *f = fopen(key, "w");
    PEM_write_PrivateKey(f, ec_key, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    f = fopen(rkey, "w");
    PEM_write_PrivateKey(f, rsa_key, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    f = fopen(pub, "w");
    PEM_write_PUBKEY(f, ec_key);
    fclose(f);

    char payload[256];
    snprintf(payload, sizeof payload,
             "{\"iss\":\"https://auth.strata.local\",\"aud\":\"strata-api\",\"sub\":\"cli\",\"exp\":%lld}",
             NOW + 60);
    struct jwt_verify_opts o = opts_all();
    unsigned char der[512], raw[64];

    /* 1. openssl signs ES256 (DER), we convert to raw and verify. */
    for (int alg = 0; alg < 2; alg++) {
        const struct jwt_signer *s = alg ? rsa_signer : ec_signer;
        char hdr[256];
        snprintf(hdr, sizeof hdr, "{\"alg\":\"%s\",\"typ\":\"JWT\",\"kid\":\"%s\"}", alg ? "RS256" : "ES256",
                 jwt_signer_kid(s));
        struct buf b;
        buf_init(&b, 8192);
        base64url_encode(hdr, strlen(hdr), &b);
        buf_append_cstr(&b, ".");
        base64url_encode(payload, strlen(payload), &b);
        CHECK_INT(write_file(in, buf_rptr(&b), buf_len(&b)), 0);
        snprintf(cmd, sizeof cmd, "openssl dgst -sha256 -sign %s -out %s %s", alg ? rkey : key, sig, in);
        CHECK_INT(run(cmd), 0);
        long n = read_file(sig, der, sizeof der);
        CHECK(n > 0);
        buf_append_cstr(&b, ".");
        if (alg == 0) {
            CHECK_INT(der_to_raw(der, (size_t)n, raw), 0);
            base64url_encode(raw, 64, &b);
        } else {
            CHECK_INT(n, 256);
            base64url_encode(der, (size_t)n, &b);
        }
        buf_append(&b, "", 1);
        CHECK_INT(reason_of(buf_rptr(&b), &o), 0);
        buf_free(&b);
    }

    /* 2. We sign, openssl verifies (raw → DER here). */
    char *t = sign_claims(ec_signer, std_claims());
    char *dot = strrchr(t, '.');
    CHECK_INT(write_file(in, t, (size_t)(dot - t)), 0);
    struct buf rb;
    buf_init(&rb, 128);
    CHECK_INT(base64url_decode(str_from_cstr(dot + 1), &rb), 0);
    CHECK_INT(buf_len(&rb), 64);
    size_t dn = raw_to_der((const unsigned char *)buf_rptr(&rb), der);
    CHECK_INT(write_file(sig, der, dn), 0);
    snprintf(cmd, sizeof cmd, "openssl dgst -sha256 -verify %s -signature %s %s >/dev/null", pub, sig, in);
    CHECK_INT(run(cmd), 0);
    /* ... and openssl refuses a tampered input, so the check can fail. */
    t[3] ^= 1;
    CHECK_INT(write_file(in, t, (size_t)(dot - t)), 0);
    CHECK(run(cmd) != 0);
    buf_free(&rb);
    free(t);
}

/* ---- one key set, many threads ------------------------------------------ */

struct thread_arg {
    const char *token;
    struct jwks *keys;
    int ok;
};

static void *verify_thread(void *p)
{
    struct thread_arg *a = p;
    struct jwt_verify_opts o = opts_all();
    for (int i = 0; i < 200; i++) {
        struct jwt_claims c;
        if (jwt_verify(str_from_cstr(a->token), a->keys, &o, &c, NULL) == 0)
            a->ok++;
        jwt_claims_free(&c);
    }
    jwks_unref(a->keys);
    return NULL;
}

static void test_threads_share_keys(void)
{
    /* Each thread holds its own reference and drops it when done; the set
     * outlives the last one (refcount is atomic, EVP keys are read-only). */
    char *t[2] = { sign_claims(ec_signer, std_claims()), sign_claims(ed_signer, std_claims()) };
    pthread_t th[4];
    struct thread_arg a[4];
    for (int i = 0; i < 4; i++) {
        a[i] = (struct thread_arg){ .token = t[i % 2], .keys = jwks_ref(all_keys) };
        CHECK_INT(pthread_create(&th[i], NULL, verify_thread, &a[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK_INT(a[i].ok, 200);
    }
    free(t[0]);
    free(t[1]);
}

/* ---- JWKS cache against a real server ----------------------------------- */

static pthread_mutex_t srv_mu = PTHREAD_MUTEX_INITIALIZER;
static char srv_jwks[16384];
static int srv_hits;
static int srv_status = 200;

static void serve_jwks(struct http1_exchange *x, void *arg)
{
    static const struct http1_header ct = { STR_LIT("Content-Type"), STR_LIT("application/json") };
    char body[16384];
    int status;
    pthread_mutex_lock(&srv_mu);
    srv_hits++;
    snprintf(body, sizeof body, "%s", srv_jwks);
    status = srv_status;
    pthread_mutex_unlock(&srv_mu);
    if (!str_eq(x->req.path, STR_LIT("/.well-known/jwks.json")))
        status = 404;
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

struct result {
    bool done;
    int rc;
    enum jwt_error_reason reason;
    char sub[64];
};

static void on_verified(int rc, const struct jwt_claims *c, const struct jwt_error *err, void *arg)
{
    struct result *r = arg;
    r->done = true;
    r->rc = rc;
    if (rc == 0) {
        CHECK(c != NULL && err == NULL);
        snprintf(r->sub, sizeof r->sub, "%s", c->sub ? c->sub : "");
    } else {
        CHECK(c == NULL && err != NULL);
        r->reason = err->reason;
    }
}

struct chain {
    struct loop *loop;
    struct jwks_cache *cache;
    const char *token;
    int calls;
    struct result last;
};

static void on_chain(int rc, const struct jwt_claims *c, const struct jwt_error *err, void *arg)
{
    struct chain *ch = arg;
    ch->calls++;
    ch->last.rc = rc;
    if (ch->calls < 3) {
        /* From inside a callback: allowed, and still never synchronous. */
        struct jwt_verify_opts o = opts_all();
        o.now = 0;
        int before = ch->calls;
        CHECK_INT(jwks_cache_verify(ch->cache, str_from_cstr(ch->token), &o, on_chain, ch), 0);
        CHECK_INT(ch->calls, before);
    } else {
        ch->last.done = true;
    }
}

static void run_until(struct loop *l, bool *flag, int ms)
{
    uint64_t start = loop_now_ms(l);
    while (!*flag && loop_now_ms(l) - start < (uint64_t)ms)
        loop_run_once(l, 20);
}

static void cache_verify(struct loop *l, struct jwks_cache *c, const char *token, struct result *r)
{
    struct jwt_verify_opts o = opts_all();
    o.now = 0;
    memset(r, 0, sizeof *r);
    CHECK_INT(jwks_cache_verify(c, str_from_cstr(token), &o, on_verified, r), 0);
    CHECK(!r->done); /* never inside the call */
    run_until(l, &r->done, 3000);
    CHECK(r->done);
}

static char *live_token(const struct jwt_signer *s, EVP_PKEY *pkey, const char *kid)
{
    json_t *c = std_claims();
    json_int_t now = (json_int_t)time(NULL);
    json_object_set_new(c, "exp", json_integer(now + 900));
    json_object_set_new(c, "iat", json_integer(now));
    json_object_set_new(c, "nbf", json_integer(now));
    if (s)
        return sign_claims(s, c);
    struct jwt_signer *tmp = NULL;
    CHECK_INT(jwt_signer_from_pkey(pkey, kid, &tmp, NULL, 0), 0);
    char *t = sign_claims(tmp, c);
    jwt_signer_free(tmp);
    return t;
}

static void test_jwks_cache(void)
{
    struct test_server ts;
    struct http1_server_config cfg = { .handler = serve_jwks };
    const struct jwt_signer *one[] = { ec_signer };
    publish(one, 1);
    CHECK_INT(test_server_start(&ts, &cfg), 0);

    struct loop *l = loop_new();
    struct http1_client *client = http1_client_new(l, NULL);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%u/.well-known/jwks.json", ts.port);
    CHECK(jwks_cache_new(l, client, "ftp://x/", 0, 0) == NULL);
    struct jwks_cache *c = jwks_cache_new(l, client, url, 300, 30);
    CHECK(c != NULL);
    CHECK(!jwks_cache_is_ready(c));
    CHECK(jwks_cache_keys(c) == NULL);

    /* A token that arrives before the first fetch finishes waits for it. */
    struct result r;
    char *t1 = live_token(ec_signer, NULL, NULL);
    cache_verify(l, c, t1, &r);
    CHECK_INT(r.rc, 0);
    CHECK_STR(r.sub, "user-42");
    CHECK(jwks_cache_is_ready(c));
    CHECK_INT(hits(), 1);
    struct jwks *k = jwks_cache_keys(c);
    CHECK_INT(jwks_count(k), 1);
    jwks_unref(k);

    /* Known kid: verified without a fetch. */
    cache_verify(l, c, t1, &r);
    CHECK_INT(r.rc, 0);
    CHECK_INT(hits(), 1);

    /* Rotation: the server now publishes a second key; a token with the new
     * kid makes exactly one refetch. */
    struct jwt_signer *s2 = NULL;
    CHECK_INT(jwt_signer_from_pkey(ec_key2, NULL, &s2, NULL, 0), 0);
    const struct jwt_signer *two[] = { s2, ec_signer };
    publish(two, 2);
    char *t2 = live_token(s2, NULL, NULL);
    cache_verify(l, c, t2, &r);
    CHECK_INT(r.rc, 0);
    CHECK_INT(hits(), 2);
    CHECK_INT(jwks_cache_stats(c)->fetches, 2);
    cache_verify(l, c, t1, &r); /* the old key still verifies */
    CHECK_INT(r.rc, 0);

    /* A second unknown kid within min_refetch_s: no fetch, UNKNOWN_KID. */
    char *t3 = live_token(NULL, ec_key3, "bogus-kid");
    cache_verify(l, c, t3, &r);
    CHECK_INT(r.rc, -EINVAL);
    CHECK_INT(r.reason, JWT_E_UNKNOWN_KID);
    CHECK_INT(hits(), 2);
    CHECK_INT(jwks_cache_stats(c)->refetch_limited, 1);
    for (int i = 0; i < 20; i++) { /* a flood costs nothing upstream */
        cache_verify(l, c, t3, &r);
        CHECK_INT(r.reason, JWT_E_UNKNOWN_KID);
    }
    CHECK_INT(hits(), 2);

    /* Errors other than the kid come through as they are. */
    cache_verify(l, c, "a.b", &r);
    CHECK_INT(r.reason, JWT_E_MALFORMED);
    char *big = malloc(20000);
    memset(big, 'a', 19999);
    big[19999] = '\0';
    cache_verify(l, c, big, &r);
    CHECK_INT(r.reason, JWT_E_TOO_LARGE);
    free(big);

    /* Cancelled verifications never call back. */
    struct result rc1 = { 0 }, rc2 = { 0 };
    struct jwt_verify_opts o = opts_all();
    o.now = 0;
    CHECK_INT(jwks_cache_verify(c, str_from_cstr(t1), &o, on_verified, &rc1), 0);
    CHECK_INT(jwks_cache_verify(c, str_from_cstr(t1), &o, on_verified, &rc2), 0);
    jwks_cache_cancel(c, on_verified, &rc1);
    run_until(l, &rc2.done, 2000);
    CHECK(rc2.done);
    CHECK(!rc1.done);
    CHECK_INT(jwks_cache_stats(c)->verified, 5);

    struct chain ch = { .loop = l, .cache = c, .token = t1 };
    CHECK_INT(jwks_cache_verify(c, str_from_cstr(t1), &o, on_chain, &ch), 0);
    run_until(l, &ch.last.done, 2000);
    CHECK_INT(ch.calls, 3);
    CHECK_INT(ch.last.rc, 0);

    jwks_cache_free(c);

    /* An issuer that does not answer: verifications wait for the first
     * fetch and then fail with KEYS_UNAVAILABLE (503), not UNKNOWN_KID. */
    pthread_mutex_lock(&srv_mu);
    srv_status = 500;
    pthread_mutex_unlock(&srv_mu);
    c = jwks_cache_new(l, client, url, 300, 30);
    cache_verify(l, c, t1, &r);
    CHECK_INT(r.reason, JWT_E_KEYS_UNAVAILABLE);
    CHECK_INT(jwt_error_status(r.reason), 503);
    CHECK(!jwks_cache_is_ready(c));
    CHECK_INT(jwks_cache_stats(c)->fetch_errors, 1);
    /* It retries after 1 s on its own and recovers. */
    pthread_mutex_lock(&srv_mu);
    srv_status = 200;
    pthread_mutex_unlock(&srv_mu);
    bool ready = false;
    uint64_t start = loop_now_ms(l);
    while (!(ready = jwks_cache_is_ready(c)) && loop_now_ms(l) - start < 3000)
        loop_run_once(l, 50);
    CHECK(ready);
    cache_verify(l, c, t2, &r);
    CHECK_INT(r.rc, 0);
    /* Free with a verification pending: no callback, no leak. */
    struct result rp = { 0 };
    CHECK_INT(jwks_cache_verify(c, str_from_cstr(t1), &o, on_verified, &rp), 0);
    jwks_cache_free(c);
    loop_run_once(l, 10);
    CHECK(!rp.done);

    free(t1);
    free(t2);
    free(t3);
    jwt_signer_free(s2);
    http1_client_free(client);
    loop_run_once(l, 10);
    loop_free(l);
    test_server_stop(&ts);
}

int main(void)
{
    setup();
    RUN(test_base64url);
    RUN(test_round_trip);
    RUN(test_time_claims);
    RUN(test_issuer_audience);
    RUN(test_signature_and_alg);
    RUN(test_malformed);
    RUN(test_jwks_parse);
    RUN(test_jwks_public_json_and_kid);
    RUN(test_openssl_cli_interop);
    RUN(test_threads_share_keys);
    RUN(test_jwks_cache);
    teardown();
    return check_done();
}
