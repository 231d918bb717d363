/* ca.c — the mesh's certificate authority on OpenSSL 3 (EVP + X509).
 *
 * The root: ECDSA P-256, self-signed, 10 years, basicConstraints CA:TRUE
 * (critical), keyUsage keyCertSign+cRLSign, a subject key identifier.
 * Leaves: a random 128-bit serial, notBefore 60 s in the past (clock skew
 * between processes on one host is small, but a certificate that is "not
 * yet valid" for a second fails every handshake), the subject and SANs from
 * ca_names only (the CSR's subject and extensions are ignored), keyUsage
 * digitalSignature (+keyEncipherment for RSA keys), EKU serverAuth +
 * clientAuth (one certificate serves inbound and outbound mTLS). */
#include "control/ca.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "core/fileio.h"

#define CA_ROOT_DAYS 3650
#define CA_DEFAULT_TTL_S (24 * 3600)
/* 64 KiB: a PEM CSR with an RSA-8192 key is ~3 KiB; anything larger is not one. */
#define CA_MAX_CSR_BYTES (64 * 1024)
#define CA_MAX_RSA_BITS 8192
#define CA_MAX_NAME 2048

struct ca {
    char *cert_path, *key_path;
    X509 *cert;
    EVP_PKEY *key;
    char *pem;
};

static int fail(char *err, size_t errsz, int rc, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int fail(char *err, size_t errsz, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err, errsz, fmt, ap);
    va_end(ap);
    /* OpenSSL's reason, when there is one, says which step failed. */
    unsigned long e = ERR_peek_last_error();
    if (e && n >= 0 && (size_t)n < errsz) {
        char buf[256];
        ERR_error_string_n(e, buf, sizeof buf);
        snprintf(err + n, errsz - (size_t)n, " (%s)", buf);
    }
    ERR_clear_error();
    return rc;
}


/* file_write_atomic, with the error said in err. */
static int write_atomic(const char *path, const char *data, size_t len, mode_t mode, char *err, size_t errsz)
{
    int rc = file_write_atomic(path, data, len, mode);
    if (rc < 0)
        snprintf(err, errsz, "%s: cannot write: %s", path, strerror(-rc));
    return rc;
}

/* The PEM text of a key or certificate, malloc'd. */
static char *bio_to_string(BIO *b)
{
    char *p;
    long n = BIO_get_mem_data(b, &p);
    char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (s) {
        memcpy(s, p, (size_t)n);
        s[n] = '\0';
    }
    return s;
}
static char *cert_to_pem(X509 *x)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *s = b && PEM_write_bio_X509(b, x) == 1 ? bio_to_string(b) : NULL;
    BIO_free(b);
    return s;
}
static char *key_to_pem(EVP_PKEY *k)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *s = b && PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL) == 1 ? bio_to_string(b) : NULL;
    BIO_free(b);
    return s;
}

/* ---- building certificates ------------------------------------------------------ */

static int set_random_serial(X509 *x)
{
    unsigned char raw[16];
    if (RAND_bytes(raw, sizeof raw) != 1)
        return -EIO;
    raw[0] &= 0x7f; /* positive */
    raw[0] |= 0x40; /* and a full 16 bytes, so two serials never differ only in length */
    BIGNUM *bn = BN_bin2bn(raw, sizeof raw, NULL);
    ASN1_INTEGER *ai = bn ? BN_to_ASN1_INTEGER(bn, NULL) : NULL;
    int ok = ai && X509_set_serialNumber(x, ai) == 1;
    ASN1_INTEGER_free(ai);
    BN_free(bn);
    return ok ? 0 : -ENOMEM;
}

static int add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    int ok = e && X509_add_ext(x, e, -1) == 1;
    X509_EXTENSION_free(e);
    return ok ? 0 : -EINVAL;
}

static int add_name_entry(X509_NAME *n, const char *field, const char *value)
{
    return X509_NAME_add_entry_by_txt(n, field, MBSTRING_UTF8, (const unsigned char *)value, -1, -1, 0) == 1
               ? 0
               : -EINVAL;
}

/* A certificate skeleton: v3, random serial, validity, subject, issuer, key. */
static X509 *cert_new(EVP_PKEY *pub, const X509_NAME *subject, X509 *issuer, int64_t not_before_s,
                      int64_t lifetime_s)
{
    X509 *x = X509_new();
    if (!x || X509_set_version(x, X509_VERSION_3) != 1 || set_random_serial(x) < 0 ||
        !X509_time_adj_ex(X509_getm_notBefore(x), 0, (long)not_before_s, NULL) ||
        !X509_time_adj_ex(X509_getm_notAfter(x), (int)(lifetime_s / 86400), (long)(lifetime_s % 86400), NULL) ||
        X509_set_subject_name(x, subject) != 1 ||
        X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : subject) != 1 ||
        X509_set_pubkey(x, pub) != 1) {
        X509_free(x);
        return NULL;
    }
    return x;
}

static int make_root(struct ca *ca, char *err, size_t errsz)
{
    ca->key = EVP_EC_gen("P-256");
    X509_NAME *name = X509_NAME_new();
    if (!ca->key || !name || add_name_entry(name, "O", "strata") < 0 ||
        add_name_entry(name, "CN", "strata root CA") < 0) {
        X509_NAME_free(name);
        return fail(err, errsz, -ENOMEM, "ca: cannot make the root key");
    }
    ca->cert = cert_new(ca->key, name, NULL, -60, (int64_t)CA_ROOT_DAYS * 86400);
    X509_NAME_free(name);
    if (!ca->cert)
        return fail(err, errsz, -ENOMEM, "ca: cannot make the root certificate");
    X509 *x = ca->cert;
    if (add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE") < 0 ||
        add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign") < 0 ||
        add_ext(x, x, NID_subject_key_identifier, "hash") < 0 || X509_sign(x, ca->key, EVP_sha256()) <= 0)
        return fail(err, errsz, -EINVAL, "ca: cannot sign the root certificate");
    return 0;
}

/* ---- names ------------------------------------------------------------------ */

static bool is_printable(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
            return false;
    return true;
}

static int check_names(const struct ca_names *n, char *err, size_t errsz)
{
    if (!n || !n->spiffe_id || strncmp(n->spiffe_id, "spiffe://", 9) || strlen(n->spiffe_id) <= 9 ||
        strlen(n->spiffe_id) > CA_MAX_NAME || !is_printable(n->spiffe_id))
        return fail(err, errsz, -EINVAL, "spiffe_id: expected spiffe://TRUST_DOMAIN/PATH, got \"%s\"",
                    n && n->spiffe_id ? n->spiffe_id : "(none)");
    for (size_t i = 0; i < n->ndns; i++)
        if (!n->dns[i] || !n->dns[i][0] || strlen(n->dns[i]) > 253 || !is_printable(n->dns[i]))
            return fail(err, errsz, -EINVAL, "dns[%zu]: not a DNS name", i);
    for (size_t i = 0; i < n->nips; i++) {
        ASN1_OCTET_STRING *ip = n->ips[i] ? a2i_IPADDRESS(n->ips[i]) : NULL;
        ASN1_OCTET_STRING_free(ip);
        if (!ip)
            return fail(err, errsz, -EINVAL, "ips[%zu]: not an IP address: \"%s\"", i,
                        n->ips[i] ? n->ips[i] : "(null)");
    }
    if (n->ttl_s < 0 || n->ttl_s > (int64_t)366 * 86400)
        return fail(err, errsz, -EINVAL, "ttl_s: expected 0..366 days, got %lld", (long long)n->ttl_s);
    return 0;
}

static int push_ia5(GENERAL_NAMES *g, int type, const char *v)
{
    GENERAL_NAME *gn = GENERAL_NAME_new();
    ASN1_IA5STRING *s = ASN1_IA5STRING_new();
    if (!gn || !s || ASN1_STRING_set(s, v, (int)strlen(v)) != 1) {
        GENERAL_NAME_free(gn);
        ASN1_IA5STRING_free(s);
        return -ENOMEM;
    }
    GENERAL_NAME_set0_value(gn, type, s);
    if (!sk_GENERAL_NAME_push(g, gn)) {
        GENERAL_NAME_free(gn);
        return -ENOMEM;
    }
    return 0;
}

/* subjectAltName built as values (not a config string), so a name with a
 * comma in it stays one name. */
static int add_san(X509 *x, const struct ca_names *n)
{
    GENERAL_NAMES *g = sk_GENERAL_NAME_new_null();
    int rc = g ? push_ia5(g, GEN_URI, n->spiffe_id) : -ENOMEM;
    for (size_t i = 0; rc == 0 && i < n->ndns; i++)
        rc = push_ia5(g, GEN_DNS, n->dns[i]);
    for (size_t i = 0; rc == 0 && i < n->nips; i++) {
        GENERAL_NAME *gn = GENERAL_NAME_new();
        ASN1_OCTET_STRING *ip = a2i_IPADDRESS(n->ips[i]);
        if (!gn || !ip) {
            GENERAL_NAME_free(gn);
            ASN1_OCTET_STRING_free(ip);
            rc = -ENOMEM;
            break;
        }
        GENERAL_NAME_set0_value(gn, GEN_IPADD, ip);
        if (!sk_GENERAL_NAME_push(g, gn)) {
            GENERAL_NAME_free(gn);
            rc = -ENOMEM;
        }
    }
    if (rc == 0 && X509_add1_ext_i2d(x, NID_subject_alt_name, g, 0, 0) != 1)
        rc = -ENOMEM;
    GENERAL_NAMES_free(g);
    return rc;
}

/* The leaf's subject: O=strata, CN = the SPIFFE ID's last path segment
 * ("order-svc" for .../sa/order-svc) when it has one. */
static X509_NAME *leaf_subject(const char *spiffe_id)
{
    X509_NAME *name = X509_NAME_new();
    if (!name || add_name_entry(name, "O", "strata") < 0)
        goto fail;
    const char *path = strchr(spiffe_id + 9, '/');
    const char *last = path ? strrchr(path, '/') + 1 : "";
    /* 64: the CN's upper bound in RFC 5280 (ub-common-name) */
    if (*last && strlen(last) <= 64 && add_name_entry(name, "CN", last) < 0)
        goto fail;
    return name;
fail:
    X509_NAME_free(name);
    return NULL;
}

/* Issues a leaf for pub under names. *out is the new certificate. */
static int issue(struct ca *ca, EVP_PKEY *pub, const struct ca_names *names, X509 **out, char *err, size_t errsz)
{
    int64_t ttl = names->ttl_s ? names->ttl_s : CA_DEFAULT_TTL_S;
    X509_NAME *subject = leaf_subject(names->spiffe_id);
    X509 *x = subject ? cert_new(pub, subject, ca->cert, -60, ttl) : NULL;
    X509_NAME_free(subject);
    if (!x)
        return fail(err, errsz, -ENOMEM, "ca: cannot make the certificate");
    bool is_rsa = EVP_PKEY_get_base_id(pub) == EVP_PKEY_RSA;
    if (add_ext(x, ca->cert, NID_basic_constraints, "critical,CA:FALSE") < 0 ||
        add_ext(x, ca->cert, NID_key_usage,
                is_rsa ? "critical,digitalSignature,keyEncipherment" : "critical,digitalSignature") < 0 ||
        add_ext(x, ca->cert, NID_ext_key_usage, "serverAuth,clientAuth") < 0 ||
        add_ext(x, ca->cert, NID_subject_key_identifier, "hash") < 0 ||
        add_ext(x, ca->cert, NID_authority_key_identifier, "keyid:always") < 0 || add_san(x, names) < 0 ||
        X509_sign(x, ca->key, EVP_sha256()) <= 0) {
        X509_free(x);
        return fail(err, errsz, -EINVAL, "ca: cannot sign the certificate");
    }
    *out = x;
    return 0;
}

/* ---- the CA's files ------------------------------------------------------------- */

static int load_existing(struct ca *ca, const struct stat *kst, char *err, size_t errsz)
{
    if (!S_ISREG(kst->st_mode))
        return fail(err, errsz, -EINVAL, "%s: not a regular file", ca->key_path);
    if (kst->st_mode & 077)
        return fail(err, errsz, -EPERM, "%s: mode %04o, must be 0600 (the CA key must not be readable by "
                                        "group or others; chmod 600 it)",
                    ca->key_path, (unsigned)(kst->st_mode & 07777));
    FILE *f = fopen(ca->key_path, "r");
    if (!f)
        return fail(err, errsz, -errno, "%s: %s", ca->key_path, strerror(errno));
    ca->key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    if (!ca->key)
        return fail(err, errsz, -EINVAL, "%s: not a PEM private key", ca->key_path);
    f = fopen(ca->cert_path, "r");
    if (!f)
        return fail(err, errsz, -errno, "%s: %s (the key exists without its certificate)", ca->cert_path,
                    strerror(errno));
    ca->cert = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    if (!ca->cert)
        return fail(err, errsz, -EINVAL, "%s: not a PEM certificate", ca->cert_path);
    if (X509_check_private_key(ca->cert, ca->key) != 1)
        return fail(err, errsz, -EINVAL, "%s: does not match %s", ca->cert_path, ca->key_path);
    if (X509_check_ca(ca->cert) != 1)
        return fail(err, errsz, -EINVAL, "%s: not a CA certificate", ca->cert_path);
    return 0;
}

static int create_new(struct ca *ca, char *err, size_t errsz)
{
    int rc = make_root(ca, err, errsz);
    if (rc < 0)
        return rc;
    char *kp = key_to_pem(ca->key);
    char *cp = cert_to_pem(ca->cert);
    if (!kp || !cp)
        rc = fail(err, errsz, -ENOMEM, "ca: out of memory");
    /* The certificate first: a key file is what says "a CA exists here". */
    if (rc == 0)
        rc = write_atomic(ca->cert_path, cp, strlen(cp), 0644, err, errsz);
    if (rc == 0)
        rc = write_atomic(ca->key_path, kp, strlen(kp), 0600, err, errsz);
    if (kp)
        OPENSSL_cleanse(kp, strlen(kp));
    free(kp);
    free(cp);
    return rc;
}

int ca_open(const char *dir, struct ca **out, char *err, size_t errsz)
{
    *out = NULL;
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        return fail(err, errsz, -errno, "%s: cannot create the CA directory: %s", dir, strerror(errno));
    struct ca *ca = calloc(1, sizeof *ca);
    if (!ca || !(ca->cert_path = file_path_join(dir, "ca.pem")) || !(ca->key_path = file_path_join(dir, "ca.key"))) {
        ca_free(ca);
        return fail(err, errsz, -ENOMEM, "ca: out of memory");
    }
    struct stat st;
    int rc;
    if (stat(ca->key_path, &st) == 0)
        rc = load_existing(ca, &st, err, errsz);
    else if (errno == ENOENT)
        rc = create_new(ca, err, errsz);
    else
        rc = fail(err, errsz, -errno, "%s: %s", ca->key_path, strerror(errno));
    if (rc == 0 && !(ca->pem = cert_to_pem(ca->cert)))
        rc = fail(err, errsz, -ENOMEM, "ca: out of memory");
    if (rc < 0) {
        ca_free(ca);
        return rc;
    }
    *out = ca;
    return 0;
}

void ca_free(struct ca *ca)
{
    if (!ca)
        return;
    X509_free(ca->cert);
    EVP_PKEY_free(ca->key);
    free(ca->cert_path);
    free(ca->key_path);
    free(ca->pem);
    free(ca);
}

const char *ca_bundle_pem(const struct ca *ca) { return ca->pem; }
const char *ca_bundle_path(const struct ca *ca) { return ca->cert_path; }

/* ---- signing ------------------------------------------------------------------- */

/* EC P-256/P-384 or RSA 2048..8192; anything else is refused. */
static int check_key(EVP_PKEY *k, char *err, size_t errsz)
{
    int id = EVP_PKEY_get_base_id(k);
    if (id == EVP_PKEY_EC) {
        char group[64] = "";
        size_t glen = 0;
        if (EVP_PKEY_get_utf8_string_param(k, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, &glen) != 1)
            return fail(err, errsz, -EINVAL, "csr: EC key without a named curve");
        if (strcmp(group, "prime256v1") && strcmp(group, "P-256") && strcmp(group, "secp384r1") &&
            strcmp(group, "P-384"))
            return fail(err, errsz, -EINVAL, "csr: EC curve %s not accepted (P-256 or P-384)", group);
        return 0;
    }
    if (id == EVP_PKEY_RSA) {
        int bits = EVP_PKEY_get_bits(k);
        if (bits < 2048 || bits > CA_MAX_RSA_BITS)
            return fail(err, errsz, -EINVAL, "csr: RSA key of %d bits not accepted (2048..%d)", bits,
                        CA_MAX_RSA_BITS);
        return 0;
    }
    return fail(err, errsz, -EINVAL, "csr: key type %s not accepted (EC P-256/P-384 or RSA >= 2048)",
                OBJ_nid2sn(id));
}

int ca_sign_csr(struct ca *ca, const char *csr_pem, size_t len, const struct ca_names *names, char **cert_pem,
                char *err, size_t errsz)
{
    *cert_pem = NULL;
    int rc = check_names(names, err, errsz);
    if (rc < 0)
        return rc;
    if (!csr_pem || len == 0 || len > CA_MAX_CSR_BYTES)
        return fail(err, errsz, -EINVAL, "csr: expected a PEM CERTIFICATE REQUEST of 1..%d bytes, got %zu",
                    CA_MAX_CSR_BYTES, len);
    BIO *b = BIO_new_mem_buf(csr_pem, (int)len);
    X509_REQ *req = b ? PEM_read_bio_X509_REQ(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    if (!req)
        return fail(err, errsz, -EINVAL, "csr: not a PEM CERTIFICATE REQUEST");
    EVP_PKEY *pub = X509_REQ_get0_pubkey(req);
    X509 *x = NULL;
    if (!pub)
        rc = fail(err, errsz, -EINVAL, "csr: no usable public key");
    else if ((rc = check_key(pub, err, errsz)) < 0)
        ;
    else if (X509_REQ_verify(req, pub) != 1)
        rc = fail(err, errsz, -EINVAL, "csr: the signature does not verify (the CSR was altered, or not signed "
                                       "by its key)");
    else
        rc = issue(ca, pub, names, &x, err, errsz);
    if (rc == 0 && !(*cert_pem = cert_to_pem(x)))
        rc = fail(err, errsz, -ENOMEM, "ca: out of memory");
    X509_free(x);
    X509_REQ_free(req);
    return rc;
}

int ca_issue_files(struct ca *ca, const struct ca_names *names, const char *cert_path, const char *key_path,
                   char *err, size_t errsz)
{
    int rc = check_names(names, err, errsz);
    if (rc < 0)
        return rc;
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509 *x = NULL;
    if (!k)
        return fail(err, errsz, -ENOMEM, "ca: cannot make a key");
    rc = issue(ca, k, names, &x, err, errsz);
    char *kp = rc == 0 ? key_to_pem(k) : NULL;
    char *cp = rc == 0 ? cert_to_pem(x) : NULL;
    if (rc == 0 && (!kp || !cp))
        rc = fail(err, errsz, -ENOMEM, "ca: out of memory");
    if (rc == 0)
        rc = write_atomic(key_path, kp, strlen(kp), 0600, err, errsz);
    if (rc == 0)
        rc = write_atomic(cert_path, cp, strlen(cp), 0644, err, errsz);
    if (kp)
        OPENSSL_cleanse(kp, strlen(kp));
    free(kp);
    free(cp);
    X509_free(x);
    EVP_PKEY_free(k);
    return rc;
}
