/* The manifest loader (control/model.h) on arbitrary bytes as one file:
 * decoding, the unused-field walk and the cross-resource checks must never
 * crash, hang or leak; a load either returns a model and no error, or no
 * model and at least one error, each a located one-line message. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control/model.h"

#define MUST(cond)                                                           \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__,       \
                    __LINE__, #cond);                                        \
            abort();                                                         \
        }                                                                    \
    } while (0)

static void check_lines(char **lines, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        MUST(lines[i] != NULL);
        MUST(lines[i][0] != '\0');
        MUST(strchr(lines[i], '\n') == NULL);
    }
}

/* Reads everything a consumer would read. */
static void visit(const struct model *m)
{
    for (size_t i = 0; i < m->ndeployments; i++) {
        const struct model_deployment *d = &m->deployments[i];
        MUST(d->name && model_deployment(m, d->name));
        MUST(strlen(d->template_hash) == 16);
        MUST(d->ncontainers >= 1);
        for (size_t c = 0; c < d->ncontainers; c++)
            MUST(d->containers[c].image != NULL);
    }
    for (size_t i = 0; i < m->nservices; i++) {
        MUST(model_service(m, m->services[i].name) != NULL);
        for (size_t p = 0; p < m->services[i].nports; p++)
            MUST(m->services[i].ports[p].target_port > 0);
    }
    for (size_t i = 0; i < m->nsecrets; i++)
        MUST(model_secret(m, m->secrets[i].name) != NULL);
    for (size_t i = 0; i < m->nvirtualservices; i++)
        for (size_t h = 0; h < m->virtualservices[i].nhttp; h++)
            for (size_t r = 0; r < m->virtualservices[i].http[h].nroute; r++)
                MUST(model_service(m, m->virtualservices[i].http[h].route[r].host) != NULL);
    MUST(strlen(m->digest) == 64);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *names[] = { "fuzz.yaml" };
    const char *texts[] = { (const char *)data };
    size_t lens[] = { size };
    struct model *m = NULL;
    struct model_diag d;
    int rc = model_load_buffers(names, texts, lens, 1, &m, &d);
    check_lines(d.errors, d.nerrors);
    check_lines(d.warnings, d.nwarnings);
    if (rc == 0) {
        MUST(m != NULL);
        MUST(d.nerrors == 0);
        visit(m);
    } else {
        MUST(m == NULL);
        MUST(rc == -ENOMEM || d.nerrors > 0);
    }
    model_free(m);
    model_diag_free(&d);
    return 0;
}
