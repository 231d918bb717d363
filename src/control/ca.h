/* ca.h — the mesh's certificate authority.
 *
 * A root CA (ECDSA P-256, 10 years) made on first start in a directory
 * (ca.pem 0644, ca.key 0600) and reused after. It signs workload
 * certificates from CSRs: the CA decides the subject and SANs (the SPIFFE
 * URI it was told the caller runs as, plus allowed DNS names / IPs), never
 * the CSR; the CSR only proves possession of the key (its signature is
 * verified). Certificates are short-lived (24 h by default).
 * Thread: one struct ca is used from one thread at a time. */
#ifndef STRATA_CONTROL_CA_H
#define STRATA_CONTROL_CA_H

#include <stddef.h>
#include <stdint.h>

struct ca;

/* Loads dir/ca.pem + dir/ca.key, or makes them (dir is created 0700 if
 * missing). 0, or <0 with err ("ca.key: mode 0644, must be 0600", ...). */
int ca_open(const char *dir, struct ca **out, char *err, size_t errsz);
void ca_free(struct ca *ca);
/* The root certificate, PEM (the trust bundle), and its path. */
const char *ca_bundle_pem(const struct ca *ca);
const char *ca_bundle_path(const struct ca *ca);

struct ca_names {
    const char *spiffe_id;       /* URI SAN, required: spiffe://TD/ns/NS/sa/SA */
    const char *const *dns;      /* extra DNS SANs ("localhost") */
    size_t ndns;
    const char *const *ips;      /* extra IP SANs ("127.0.0.1") */
    size_t nips;
    int64_t ttl_s;               /* 0: 24 h */
};

/* Verifies csr_pem (PEM "CERTIFICATE REQUEST", EC P-256/P-384 or RSA ≥ 2048,
 * self-signature valid) and issues a leaf for names: *cert_pem is a new
 * malloc'd PEM (leaf only; the bundle is ca_bundle_pem). 0, or <0 with err. */
int ca_sign_csr(struct ca *ca, const char *csr_pem, size_t len, const struct ca_names *names, char **cert_pem,
                char *err, size_t errsz);
/* Makes a fresh P-256 key and a certificate for names and writes them to
 * cert_path / key_path (0600), atomically (temp + rename). For the control
 * plane's own use. */
int ca_issue_files(struct ca *ca, const struct ca_names *names, const char *cert_path, const char *key_path,
                   char *err, size_t errsz);

#endif
