/* apply.c — strata apply -f DIR [--dry-run]: validate (and apply) manifests. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "control/images.h"
#include "control/model.h"

static size_t count_resources(const struct model *m)
{
    return m->ndeployments + m->nservices + m->nconfigmaps + m->nsecrets + m->ningresses + m->nvirtualservices +
           m->ndestinationrules + m->npeerauths + m->nauthzpolicies + m->nrequestauths + m->npdbs + m->nhpas +
           m->nratelimits + m->nwafs + m->ndatabases + m->ngenerated_secrets;
}

static void print_error(const char *msg, void *arg)
{
    (void)arg;
    fprintf(stderr, "error: %s\n", msg);
}

int cmd_apply(int argc, char **argv)
{
    const char *dir = NULL, *state = NULL;
    bool dry_run = false;
    for (int i = 1; i < argc; i++) {
        if ((!strcmp(argv[i], "-f") || !strcmp(argv[i], "--filename")) && i + 1 < argc)
            dir = argv[++i];
        else if (!strcmp(argv[i], "--state") && i + 1 < argc)
            state = argv[++i];
        else if (!strcmp(argv[i], "--dry-run"))
            dry_run = true;
        else {
            fprintf(stderr, "strata apply: unexpected argument %s (usage: strata apply -f DIR|FILE [--dry-run])\n",
                    argv[i]);
            return 2;
        }
    }
    if (!dir) {
        fprintf(stderr, "strata apply: -f DIR|FILE is required\n");
        return 2;
    }
    struct model *m = NULL;
    struct model_diag d = { 0 };
    struct stat st;
    int rc;
    if (stat(dir, &st) == 0 && S_ISREG(st.st_mode)) {
        const char *one[] = { dir };
        rc = model_load_files(one, 1, &m, &d);
    } else {
        rc = model_load_dir(dir, &m, &d);
    }
    for (size_t i = 0; i < d.nwarnings; i++)
        fprintf(stderr, "warning: %s\n", d.warnings[i]);
    for (size_t i = 0; i < d.nerrors; i++)
        fprintf(stderr, "error: %s\n", d.errors[i]);
    if (rc < 0) {
        if (!d.nerrors)
            fprintf(stderr, "strata apply: -f %s: %s\n", dir, strerror(-rc));
        fprintf(stderr, "strata apply: %zu error%s; nothing applied\n", d.nerrors, d.nerrors == 1 ? "" : "s");
        model_diag_free(&d);
        return 1;
    }
    size_t n = count_resources(m), nw = d.nwarnings;
    model_diag_free(&d);
    /* Images resolve in the store beside this binary (build/images). */
    char store[PATH_MAX + 16], self[PATH_MAX];
    size_t nimg = 0;
    if (cli_self_dir(self, sizeof self) == 0) {
        snprintf(store, sizeof store, "%s/images", self);
        nimg = image_check_model(m, store, NULL, print_error, NULL);
    }
    model_free(m);
    if (nimg) {
        fprintf(stderr, "strata apply: %zu error%s; nothing applied\n", nimg, nimg == 1 ? "" : "s");
        return 1;
    }
    if (dry_run) {
        printf("%zu resources valid (%zu warning%s); nothing applied (--dry-run)\n", n, nw, nw == 1 ? "" : "s");
        return 0;
    }
    char sd[PATH_MAX];
    cli_state_dir(state, sd, sizeof sd);
    struct cli_control c;
    if (cli_control_find(sd, &c) < 0) {
        fprintf(stderr, "strata apply: no platform runs with state %s (strata up -f %s starts one)\n", sd, dir);
        return 1;
    }
    char abs[PATH_MAX];
    if (!realpath(dir, abs) || S_ISREG(st.st_mode)) {
        fprintf(stderr, "strata apply: -f %s: a running platform applies a whole directory\n", dir);
        return 1;
    }
    json_t *req = json_pack("{s:s}", "dir", abs);
    char *body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    int status;
    json_t *resp = cli_admin(&c, "POST", "/v1/apply", body, &status);
    free(body);
    if (!resp)
        return 1;
    json_decref(resp);
    printf("%zu resources applied: changed templates roll out (strata rollout status NAME)\n", n);
    return 0;
}
