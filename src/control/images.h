/* images.h — resolving `image: name:tag` in the local image store
 * (layout: scripts/image-store). */
#ifndef STRATA_CONTROL_IMAGES_H
#define STRATA_CONTROL_IMAGES_H

#include <stddef.h>

#include "control/model.h"

/* Resolves ref ("strata/order-svc:dev") in store to the path of its blob,
 * after checking the blob's SHA-256 against the digest the ref names (a
 * changed or truncated blob is refused). digest gets "sha256:<hex>".
 * 0, or <0 with err: "image strata/x:dev: not in the image store /p (build it: make)". */
int image_resolve(const char *store, const char *ref, char *path, size_t pathsz, char *digest, size_t digestsz,
                  char *err, size_t errsz);

/* Resolves every container image of m (and extra, e.g. the sidecar's
 * image; may be NULL); each one missing is reported as
 * "FILE:LINE: spec.template.spec.containers[I].image: image X: not in the
 * image store S (build it: make)". Returns the number of errors. */
size_t image_check_model(const struct model *m, const char *store, const char *extra,
                         void (*report)(const char *msg, void *arg), void *arg);

#endif
