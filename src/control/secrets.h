/* secrets.h — values of strata.dev GeneratedSecrets, made on first start
 * and kept in STATE/secrets/<name>.json (0600), so that every replica and
 * every restart sees the same values. */
#ifndef STRATA_CONTROL_SECRETS_H
#define STRATA_CONTROL_SECRETS_H

#include <jansson.h>
#include <stddef.h>

#include "control/model.h"

/* Generators: "ec-p256-private-key" (PKCS#8 PEM), "random-32" (64 hex). */
int secrets_generator_known(const char *generator);

/* *out: a new object key → value for g, loaded from the state directory,
 * with any missing key generated and saved. 0 or <0 with err. */
int secrets_generated(const char *state_dir, const struct model_generated_secret *g, json_t **out, char *err,
                      size_t errsz);

/* Writes text to path atomically (temp file + rename) with mode. */
int secrets_write_file(const char *path, const char *text, size_t len, int mode);

#endif
