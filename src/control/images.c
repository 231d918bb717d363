/* images.c — the local image store: refs/<name>/<tag> → blobs/sha256/<hex>. */
#include "control/images.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int split_ref(const char *ref, char *name, size_t namesz, char *tag, size_t tagsz)
{
    const char *colon = strrchr(ref, ':');
    if (!colon || colon == ref || !colon[1] || strchr(colon, '/'))
        return -EINVAL;
    size_t n = (size_t)(colon - ref);
    if (n >= namesz || strlen(colon + 1) >= tagsz || strstr(ref, ".."))
        return -EINVAL;
    memcpy(name, ref, n);
    name[n] = '\0';
    snprintf(tag, tagsz, "%s", colon + 1);
    return 0;
}

/* SHA-256 of the file at path, as 64 hex characters. */
static int file_sha256(const char *path, char hex[65])
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int rc = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) ? 0 : -ENOMEM;
    unsigned char chunk[65536];
    ssize_t got;
    while (rc == 0 && (got = read(fd, chunk, sizeof chunk)) != 0) {
        if (got < 0) {
            if (errno == EINTR)
                continue;
            rc = -errno;
        } else if (!EVP_DigestUpdate(ctx, chunk, (size_t)got)) {
            rc = -ENOMEM;
        }
    }
    unsigned char md[32];
    unsigned len = 0;
    if (rc == 0 && !EVP_DigestFinal_ex(ctx, md, &len))
        rc = -ENOMEM;
    EVP_MD_CTX_free(ctx);
    close(fd);
    for (unsigned i = 0; rc == 0 && i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    return rc;
}

int image_resolve(const char *store, const char *ref, char *path, size_t pathsz, char *digest, size_t digestsz,
                  char *err, size_t errsz)
{
    char name[256], tag[130], refpath[4096];
    if (split_ref(ref, name, sizeof name, tag, sizeof tag) < 0) {
        snprintf(err, errsz, "image %s: expected NAME:TAG", ref);
        return -EINVAL;
    }
    snprintf(refpath, sizeof refpath, "%s/refs/%s/%s", store, name, tag);
    FILE *f = fopen(refpath, "re");
    if (!f) {
        snprintf(err, errsz, "image %s: not in the image store %s (build it: make)", ref, store);
        return -ENOENT;
    }
    char line[128] = "";
    char *ok = fgets(line, sizeof line, f);
    fclose(f);
    line[strcspn(line, "\r\n")] = '\0';
    if (!ok || strncmp(line, "sha256:", 7) || strlen(line) != 7 + 64 || strspn(line + 7, "0123456789abcdef") != 64) {
        snprintf(err, errsz, "image %s: %s: not a sha256 digest", ref, refpath);
        return -EINVAL;
    }
    snprintf(path, pathsz, "%s/blobs/sha256/%s", store, line + 7);
    char hex[65];
    int rc = file_sha256(path, hex);
    if (rc < 0) {
        snprintf(err, errsz, "image %s: %s: %s", ref, path, strerror(-rc));
        return rc;
    }
    if (strcmp(hex, line + 7)) {
        snprintf(err, errsz, "image %s: %s does not match its digest %s (the store was modified)", ref, path, line);
        return -EINVAL;
    }
    snprintf(digest, digestsz, "%s", line);
    return 0;
}

size_t image_check_model(const struct model *m, const char *store, const char *extra,
                         void (*report)(const char *msg, void *arg), void *arg)
{
    size_t n = 0;
    char path[4096], digest[80], err[512], msg[1024];
    if (extra && image_resolve(store, extra, path, sizeof path, digest, sizeof digest, err, sizeof err) < 0) {
        snprintf(msg, sizeof msg, "the sidecar: %s", err);
        report(msg, arg);
        n++;
    }
    for (size_t i = 0; i < m->ndeployments; i++) {
        const struct model_deployment *d = &m->deployments[i];
        for (size_t k = 0; k < d->ncontainers; k++) {
            if (image_resolve(store, d->containers[k].image, path, sizeof path, digest, sizeof digest, err,
                              sizeof err) == 0)
                continue;
            snprintf(msg, sizeof msg, "%s:%d: spec.template.spec.containers[%zu].image: %s", d->loc.file, d->loc.line,
                     k, err);
            report(msg, arg);
            n++;
        }
    }
    return n;
}
