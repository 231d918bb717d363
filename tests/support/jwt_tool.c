/* strata-test-jwt — tokens and key sets for the gateway's end-to-end tests.
 *
 *   strata-test-jwt sign KEY.pem 'CLAIMS-JSON'   → a compact JWS (ES256 / RS256 / EdDSA by key type)
 *   strata-test-jwt jwks KEY.pem...              → {"keys":[...]} with their public keys
 *
 * Keys are PEM private keys (openssl genpkey); kid = RFC 7638 thumbprint. */
#include <stdio.h>
#include <string.h>

#include "core/buf.h"
#include "core/json.h"
#include "core/jwt.h"

int main(int argc, char **argv)
{
    char err[256];
    struct buf out;
    buf_init(&out, 1u << 20);
    if (argc == 4 && !strcmp(argv[1], "sign")) {
        struct jwt_signer *s;
        if (jwt_signer_load_pem(argv[2], &s, err, sizeof err) < 0) {
            fprintf(stderr, "strata-test-jwt: %s: %s\n", argv[2], err);
            return 1;
        }
        json_error_t je;
        json_t *claims = json_loads(argv[3], 0, &je);
        if (!claims || jwt_sign(s, claims, &out) < 0) {
            fprintf(stderr, "strata-test-jwt: claims: %s\n", claims ? "cannot sign" : je.text);
            return 1;
        }
        json_decref(claims);
        jwt_signer_free(s);
    } else if (argc >= 3 && !strcmp(argv[1], "jwks")) {
        struct jwt_signer *s[16];
        int n = 0;
        for (int i = 2; i < argc && n < 16; i++, n++)
            if (jwt_signer_load_pem(argv[i], &s[n], err, sizeof err) < 0) {
                fprintf(stderr, "strata-test-jwt: %s: %s\n", argv[i], err);
                return 1;
            }
        if (jwks_public_json((const struct jwt_signer *const *)s, (size_t)n, &out) < 0)
            return 1;
        for (int i = 0; i < n; i++)
            jwt_signer_free(s[i]);
    } else {
        fprintf(stderr, "usage: strata-test-jwt sign KEY.pem CLAIMS-JSON | jwks KEY.pem...\n");
        return 2;
    }
    fwrite(buf_rptr(&out), 1, buf_len(&out), stdout);
    putchar('\n');
    buf_free(&out);
    return 0;
}
