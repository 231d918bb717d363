/* The mesh CA (control/ca.c): the root made once and reused, key file
 * permissions, leaves issued from CSRs that chain to the bundle with the
 * SPIFFE URI SAN the CA decides (never the CSR's), and CSRs refused:
 * garbage, a tampered signature, a weak key. */
#include <dirent.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "check.h"
#include "control/ca.h"

#define SPIFFE "spiffe://strata.local/ns/default/sa/order-svc"

static char tmpdir[256];

static void rm_rf(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char p[512];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
            rm_rf(p);
        else
            unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

/* A PEM CSR for key k with a subject and a SAN the CA must ignore. */
static char *make_csr(EVP_PKEY *k)
{
    X509_REQ *req = X509_REQ_new();
    X509_NAME *n = X509_NAME_new();
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"admin", -1, -1, 0);
    X509_REQ_set_subject_name(req, n);
    X509_NAME_free(n);
    X509_REQ_set_pubkey(req, k);
    STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
    X509_EXTENSION *san = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name,
                                              "URI:spiffe://strata.local/ns/kube-system/sa/admin");
    sk_X509_EXTENSION_push(exts, san);
    X509_REQ_add_extensions(req, exts);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    X509_REQ_sign(req, k, EVP_sha256());
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_X509_REQ(b, req);
    char *p;
    long len = BIO_get_mem_data(b, &p);
    char *s = strndup(p, (size_t)len);
    BIO_free(b);
    X509_REQ_free(req);
    return s;
}

static X509 *parse_cert(const char *pem)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
    BIO_free(b);
    return x;
}

/* X509_verify_cert of leaf against the bundle, for client and server use. */
static bool chains(const struct ca *ca, X509 *leaf)
{
    X509 *root = parse_cert(ca_bundle_pem(ca));
    X509_STORE *st = X509_STORE_new();
    X509_STORE_add_cert(st, root);
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    X509_STORE_CTX_init(ctx, st, leaf, NULL);
    X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT);
    bool ok = X509_verify_cert(ctx) == 1;
    if (!ok)
        fprintf(stderr, "verify: %s\n", X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx)));
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(st);
    X509_free(root);
    return ok;
}

/* The certificate's URI SANs, joined by spaces. */
static void uri_sans(X509 *x, char *out, size_t outsz)
{
    out[0] = '\0';
    GENERAL_NAMES *g = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; g && i < sk_GENERAL_NAME_num(g); i++) {
        GENERAL_NAME *gn = sk_GENERAL_NAME_value(g, i);
        if (gn->type == GEN_URI)
            snprintf(out + strlen(out), outsz - strlen(out), "%s%.*s", out[0] ? " " : "",
                     gn->d.uniformResourceIdentifier->length,
                     (const char *)gn->d.uniformResourceIdentifier->data);
    }
    GENERAL_NAMES_free(g);
}

static struct ca *open_ca(void)
{
    struct ca *ca = NULL;
    char err[512];
    int rc = ca_open(tmpdir, &ca, err, sizeof err);
    if (rc < 0)
        fprintf(stderr, "ca_open: %s\n", err);
    CHECK_INT(rc, 0);
    return ca;
}

static void test_root_files(void)
{
    struct ca *ca = open_ca();
    if (!ca)
        return;
    char p[512];
    struct stat st;
    snprintf(p, sizeof p, "%s/ca.key", tmpdir);
    CHECK_INT(stat(p, &st), 0);
    CHECK_INT(st.st_mode & 0777, 0600);
    snprintf(p, sizeof p, "%s/ca.pem", tmpdir);
    CHECK_STR(ca_bundle_path(ca), p);
    X509 *root = parse_cert(ca_bundle_pem(ca));
    CHECK(root != NULL);
    CHECK_INT(X509_check_ca(root), 1);
    BASIC_CONSTRAINTS *bc = X509_get_ext_d2i(root, NID_basic_constraints, NULL, NULL);
    CHECK(bc && bc->ca);
    CHECK_INT(X509_get_extension_flags(root) & EXFLAG_SS, EXFLAG_SS);
    CHECK(X509_get0_subject_key_id(root) != NULL);
    CHECK_INT(X509_get_key_usage(root), KU_KEY_CERT_SIGN | KU_CRL_SIGN);
    int crit = -1;
    BASIC_CONSTRAINTS_free(X509_get_ext_d2i(root, NID_basic_constraints, &crit, NULL));
    CHECK_INT(crit, 1);
    /* ten years */
    int days = 0, secs = 0;
    ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(root), X509_get0_notAfter(root));
    CHECK(days >= 3649 && days <= 3651);
    BASIC_CONSTRAINTS_free(bc);
    X509_free(root);
    /* Reopening reuses the same CA. */
    char *first = strdup(ca_bundle_pem(ca));
    ca_free(ca);
    ca = open_ca();
    CHECK(ca && !strcmp(first, ca_bundle_pem(ca)));
    free(first);
    ca_free(ca);
}

static void test_sign_csr(void)
{
    struct ca *ca = open_ca();
    EVP_PKEY *k = EVP_EC_gen("P-256");
    char *csr = make_csr(k);
    const char *dns[] = { "localhost" }, *ips[] = { "127.0.0.1" };
    struct ca_names names = { .spiffe_id = SPIFFE, .dns = dns, .ndns = 1, .ips = ips, .nips = 1, .ttl_s = 3600 };
    char *pem = NULL, err[512] = "";
    int rc = ca_sign_csr(ca, csr, strlen(csr), &names, &pem, err, sizeof err);
    if (rc < 0)
        fprintf(stderr, "sign: %s\n", err);
    CHECK_INT(rc, 0);
    X509 *x = pem ? parse_cert(pem) : NULL;
    CHECK(x != NULL);
    if (x) {
        CHECK(chains(ca, x));
        char uris[512];
        uri_sans(x, uris, sizeof uris);
        CHECK_STR(uris, SPIFFE); /* the CA's name, not the CSR's */
        char cn[128] = "";
        X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof cn);
        CHECK_STR(cn, "order-svc");
        CHECK_INT(X509_check_host(x, "localhost", 0, 0, NULL), 1);
        CHECK_INT(X509_check_ip_asc(x, "127.0.0.1", 0), 1);
        CHECK_INT(X509_get_extended_key_usage(x), XKU_SSL_SERVER | XKU_SSL_CLIENT);
        CHECK_INT(X509_get_key_usage(x), KU_DIGITAL_SIGNATURE);
        CHECK(X509_get0_authority_key_id(x) != NULL);
        CHECK_INT(X509_check_ca(x), 0);
        EVP_PKEY *pub = X509_get0_pubkey(x);
        CHECK(pub && EVP_PKEY_eq(pub, k) == 1);
        int days = 0, secs = 0;
        ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(x), X509_get0_notAfter(x));
        CHECK_INT(days * 86400 + secs, 3600 + 60);
        const ASN1_INTEGER *serial = X509_get0_serialNumber(x);
        CHECK_INT(serial->length, 16);
        X509_free(x);
    }
    /* Two leaves never share a serial. */
    char *pem2 = NULL;
    CHECK_INT(ca_sign_csr(ca, csr, strlen(csr), &names, &pem2, err, sizeof err), 0);
    X509 *x1 = pem ? parse_cert(pem) : NULL, *x2 = pem2 ? parse_cert(pem2) : NULL;
    CHECK(x1 && x2 && ASN1_INTEGER_cmp(X509_get0_serialNumber(x1), X509_get0_serialNumber(x2)) != 0);
    X509_free(x1);
    X509_free(x2);
    free(pem2);
    free(pem);
    free(csr);
    EVP_PKEY_free(k);
    ca_free(ca);
}

static void test_rsa_csr(void)
{
    struct ca *ca = open_ca();
    EVP_PKEY *k = EVP_RSA_gen(2048);
    char *csr = make_csr(k);
    struct ca_names names = { .spiffe_id = SPIFFE };
    char *pem = NULL, err[512] = "";
    CHECK_INT(ca_sign_csr(ca, csr, strlen(csr), &names, &pem, err, sizeof err), 0);
    X509 *x = pem ? parse_cert(pem) : NULL;
    CHECK(x && chains(ca, x));
    if (x) {
        CHECK_INT(X509_get_key_usage(x), KU_DIGITAL_SIGNATURE | KU_KEY_ENCIPHERMENT);
        int days = 0, secs = 0;
        ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(x), X509_get0_notAfter(x));
        CHECK_INT(days * 86400 + secs, 24 * 3600 + 60); /* the default TTL */
    }
    X509_free(x);
    free(pem);
    free(csr);
    EVP_PKEY_free(k);
    ca_free(ca);
}

static void sign_fails(struct ca *ca, const char *csr, size_t len, const struct ca_names *names, const char *want)
{
    char *pem = (char *)"untouched", err[512] = "";
    CHECK(ca_sign_csr(ca, csr, len, names, &pem, err, sizeof err) < 0);
    CHECK(pem == NULL);
    if (!strstr(err, want))
        fprintf(stderr, "error \"%s\" lacks \"%s\"\n", err, want);
    CHECK(strstr(err, want) != NULL);
}

/* The CSR with the last byte of its signature flipped. */
static char *tamper(const char *csr)
{
    BIO *b = BIO_new_mem_buf(csr, -1);
    X509_REQ *req = PEM_read_bio_X509_REQ(b, NULL, NULL, NULL);
    BIO_free(b);
    unsigned char *der = NULL;
    int n = i2d_X509_REQ(req, &der);
    X509_REQ_free(req);
    der[n - 1] ^= 0x01;
    const unsigned char *p = der;
    req = d2i_X509_REQ(NULL, &p, n);
    OPENSSL_free(der);
    if (!req)
        return NULL;
    b = BIO_new(BIO_s_mem());
    PEM_write_bio_X509_REQ(b, req);
    char *s;
    long len = BIO_get_mem_data(b, &s);
    char *out = strndup(s, (size_t)len);
    BIO_free(b);
    X509_REQ_free(req);
    return out;
}

static void test_bad_csrs(void)
{
    struct ca *ca = open_ca();
    struct ca_names names = { .spiffe_id = SPIFFE };
    sign_fails(ca, "hello", 5, &names, "not a PEM CERTIFICATE REQUEST");
    sign_fails(ca, "", 0, &names, "csr:");
    const char *junk = "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n";
    sign_fails(ca, junk, strlen(junk), &names, "not a PEM CERTIFICATE REQUEST");

    EVP_PKEY *k = EVP_EC_gen("P-256");
    char *csr = make_csr(k);
    char *bad = tamper(csr);
    CHECK(bad != NULL);
    if (bad)
        sign_fails(ca, bad, strlen(bad), &names, "signature does not verify");
    free(bad);
    /* Truncated in the middle. */
    sign_fails(ca, csr, strlen(csr) / 2, &names, "not a PEM");

    EVP_PKEY *weak = EVP_RSA_gen(1024);
    char *wcsr = make_csr(weak);
    sign_fails(ca, wcsr, strlen(wcsr), &names, "RSA key of 1024 bits");
    EVP_PKEY *k521 = EVP_EC_gen("P-521");
    char *c521 = make_csr(k521);
    sign_fails(ca, c521, strlen(c521), &names, "curve");

    /* Names the CA refuses to write. */
    struct ca_names bad_id = { .spiffe_id = "https://strata.local/x" };
    sign_fails(ca, csr, strlen(csr), &bad_id, "spiffe_id");
    const char *ips[] = { "not-an-ip" };
    struct ca_names bad_ip = { .spiffe_id = SPIFFE, .ips = ips, .nips = 1 };
    sign_fails(ca, csr, strlen(csr), &bad_ip, "ips[0]");
    free(c521);
    free(wcsr);
    free(csr);
    EVP_PKEY_free(k521);
    EVP_PKEY_free(weak);
    EVP_PKEY_free(k);
    ca_free(ca);
}

static void test_issue_files(void)
{
    struct ca *ca = open_ca();
    char cert[512], key[512], err[512] = "";
    snprintf(cert, sizeof cert, "%s/control.pem", tmpdir);
    snprintf(key, sizeof key, "%s/control.key", tmpdir);
    const char *dns[] = { "localhost" };
    struct ca_names names = { .spiffe_id = "spiffe://strata.local/ns/strata-system/sa/control", .dns = dns, .ndns = 1 };
    int rc = ca_issue_files(ca, &names, cert, key, err, sizeof err);
    if (rc < 0)
        fprintf(stderr, "issue: %s\n", err);
    CHECK_INT(rc, 0);
    struct stat st;
    CHECK_INT(stat(key, &st), 0);
    CHECK_INT(st.st_mode & 0777, 0600);
    FILE *f = fopen(cert, "r");
    X509 *x = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
    if (f)
        fclose(f);
    f = fopen(key, "r");
    EVP_PKEY *k = f ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
    if (f)
        fclose(f);
    CHECK(x && k && X509_check_private_key(x, k) == 1);
    CHECK(x && chains(ca, x));
    char uris[512] = "";
    if (x)
        uri_sans(x, uris, sizeof uris);
    CHECK_STR(uris, "spiffe://strata.local/ns/strata-system/sa/control");
    X509_free(x);
    EVP_PKEY_free(k);
    ca_free(ca);
}

static void test_key_mode_refused(void)
{
    char p[512];
    snprintf(p, sizeof p, "%s/ca.key", tmpdir);
    CHECK_INT(chmod(p, 0644), 0);
    struct ca *ca = (struct ca *)1;
    char err[512] = "";
    CHECK(ca_open(tmpdir, &ca, err, sizeof err) < 0);
    CHECK(ca == NULL);
    if (!strstr(err, "mode 0644, must be 0600"))
        fprintf(stderr, "error: %s\n", err);
    CHECK(strstr(err, "ca.key: mode 0644, must be 0600") != NULL);
    CHECK_INT(chmod(p, 0600), 0);
    ca = open_ca();
    ca_free(ca);
    /* A key without its certificate. */
    char c[512];
    snprintf(c, sizeof c, "%s/ca.pem", tmpdir);
    unlink(c);
    CHECK(ca_open(tmpdir, &ca, err, sizeof err) < 0);
    CHECK(strstr(err, "ca.pem") != NULL);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/strata-test-ca-XXXXXX");
    if (!mkdtemp(tmpdir))
        return 1;
    rmdir(tmpdir); /* ca_open creates it */
    RUN(test_root_files);
    RUN(test_sign_csr);
    RUN(test_rsa_csr);
    RUN(test_bad_csrs);
    RUN(test_issue_files);
    RUN(test_key_mode_refused);
    rm_rf(tmpdir);
    return check_done();
}
