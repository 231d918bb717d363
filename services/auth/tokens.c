/* tokens.c — signing keys from a directory, the JWKS built from them, and
 * access tokens (ES256 JWT). */
#include <dirent.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "auth.h"
#include "core/jwt.h"

struct auth_key {
    struct jwt_signer *signer;
    struct timespec mtime;
    char name[256];
};

struct auth_keys {
    struct auth_key keys[AUTH_MAX_KEYS];
    size_t n;
    size_t signing; /* index of the newest */
    struct buf jwks;
};

/* Newer: later mtime, then the greater name (a stable choice for files
 * written in the same nanosecond, e.g. by one `cp`). */
static bool is_newer(const struct auth_key *a, const struct auth_key *b)
{
    if (a->mtime.tv_sec != b->mtime.tv_sec)
        return a->mtime.tv_sec > b->mtime.tv_sec;
    if (a->mtime.tv_nsec != b->mtime.tv_nsec)
        return a->mtime.tv_nsec > b->mtime.tv_nsec;
    return strcmp(a->name, b->name) > 0;
}

void auth_keys_free(struct auth_keys *k)
{
    if (!k)
        return;
    for (size_t i = 0; i < k->n; i++)
        jwt_signer_free(k->keys[i].signer);
    buf_free(&k->jwks);
    free(k);
}

int auth_keys_load(const char *dir, struct auth_keys **out, char *err, size_t errsz)
{
    int rc = 0;
    struct auth_keys *k = calloc(1, sizeof *k);
    DIR *d = NULL;
    if (!k) {
        snprintf(err, errsz, "out of memory");
        return -ENOMEM;
    }
    /* 64 KiB: 16 P-256 JWKs are ~3 KiB. */
    buf_init(&k->jwks, 64 * 1024);
    d = opendir(dir);
    if (!d) {
        rc = -errno;
        snprintf(err, errsz, "JWT_KEYS_DIR %s: %s", dir, strerror(errno));
        goto out;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(path, &st) < 0 || !S_ISREG(st.st_mode))
            continue;
        if (k->n == AUTH_MAX_KEYS) {
            rc = -E2BIG;
            snprintf(err, errsz, "JWT_KEYS_DIR %s: more than %d keys", dir, AUTH_MAX_KEYS);
            goto out;
        }
        struct auth_key *key = &k->keys[k->n];
        char kerr[200] = "";
        rc = jwt_signer_load_pem(path, &key->signer, kerr, sizeof kerr);
        if (rc < 0) {
            snprintf(err, errsz, "JWT_KEYS_DIR: %s: %s", path, kerr);
            goto out;
        }
        k->n++;
        if (jwt_signer_alg(key->signer) != JWT_ALG_ES256) {
            rc = -EINVAL;
            snprintf(err, errsz, "JWT_KEYS_DIR: %s: not an EC P-256 key (ES256 only)", path);
            goto out;
        }
        key->mtime = st.st_mtim;
        snprintf(key->name, sizeof key->name, "%s", e->d_name);
    }
    if (k->n == 0) {
        rc = -ENOENT;
        snprintf(err, errsz, "JWT_KEYS_DIR %s: no key files", dir);
        goto out;
    }
    for (size_t i = 1; i < k->n; i++)
        if (is_newer(&k->keys[i], &k->keys[k->signing]))
            k->signing = i;
    /* The signing key first: a client that only looks at keys[0] still works. */
    const struct jwt_signer *list[AUTH_MAX_KEYS];
    size_t n = 0;
    list[n++] = k->keys[k->signing].signer;
    for (size_t i = 0; i < k->n; i++)
        if (i != k->signing)
            list[n++] = k->keys[i].signer;
    rc = jwks_public_json(list, n, &k->jwks);
    if (rc < 0) {
        snprintf(err, errsz, "building the JWKS: %s", strerror(-rc));
        goto out;
    }
out:
    if (d)
        closedir(d);
    if (rc < 0) {
        auth_keys_free(k);
        return rc;
    }
    *out = k;
    return 0;
}

size_t auth_keys_count(const struct auth_keys *k) { return k ? k->n : 0; }

const char *auth_keys_signing_kid(const struct auth_keys *k)
{
    return k && k->n ? jwt_signer_kid(k->keys[k->signing].signer) : "";
}

struct str auth_keys_jwks(const struct auth_keys *k) { return buf_str(&k->jwks); }

int auth_random_b64url(size_t nbytes, char *out, size_t outsz)
{
    unsigned char raw[64];
    if (nbytes > sizeof raw)
        return -EINVAL;
    if (RAND_bytes(raw, (int)nbytes) != 1)
        return -EIO;
    struct buf b;
    buf_init(&b, 128);
    int rc = base64url_encode(raw, nbytes, &b);
    OPENSSL_cleanse(raw, sizeof raw);
    if (rc == 0)
        rc = str_copy_cstr(buf_str(&b), out, outsz);
    if (b.data)
        OPENSSL_cleanse(b.data, b.cap);
    buf_free(&b);
    return rc;
}

void auth_sha256_hex(struct str s, char out[65])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[32];
    unsigned int mdlen = 0;
    if (EVP_Digest(s.p, s.n, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32) {
        /* Only on a broken OpenSSL; an all-zero hash matches no stored token. */
        memset(md, 0, sizeof md);
    }
    for (int i = 0; i < 32; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[64] = '\0';
}

int auth_mint_access(const struct auth *a, const struct auth_identity *id, const char *sid, int64_t now,
                     struct buf *out)
{
    char jti[32];
    if (auth_random_b64url(16, jti, sizeof jti) < 0)
        return -EIO;
    json_t *roles = json_loads(id->roles_json ? id->roles_json : "[]", JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_array(roles)) {
        json_decref(roles);
        return -EINVAL;
    }
    size_t i;
    json_t *v;
    json_array_foreach(roles, i, v)
    {
        if (!json_is_string(v)) {
            json_decref(roles);
            return -EINVAL;
        }
    }
    json_t *claims = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:s, s:s, s:o, s:s}", "iss", a->cfg.issuer, "sub",
                               id->user_id, "aud", a->cfg.audience, "exp", (json_int_t)(now + a->cfg.access_ttl_s),
                               "iat", (json_int_t)now, "nbf", (json_int_t)now, "jti", jti, "sid", sid, "roles",
                               roles, "email", id->email ? id->email : "");
    if (!claims)
        return -ENOMEM;
    const struct auth_keys *k = a->keys;
    int rc = jwt_sign(k->keys[k->signing].signer, claims, out);
    json_decref(claims);
    return rc;
}
