/* observability_install (control/observability.c): the rules and the
 * Alertmanager config of the real deploy/observability installed into a
 * temp dir and checked by Prometheus' own tools (promtool check rules,
 * amtool check-config); YAML typing in the JSON it writes; errors that name
 * file, line and field, with nothing written.
 *
 * `test_observability --install-only OUTDIR` installs $STRATA_SOURCE_DIR/
 * deploy into OUTDIR/rules/NAME.yml and OUTDIR/alertmanager.yml (token file
 * OUTDIR/admin.token) and exits: tests/integration/test_observability_rules.sh
 * runs promtool's rule unit tests on those files. */
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "control/observability.h"

extern char **environ;

static char tmp[64];

static void put(const char *dir, const char *name, const char *text)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    CHECK(f != NULL);
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static bool exists(const char *dir, const char *name)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return access(p, F_OK) == 0;
}

static json_t *load(const char *dir, const char *name)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    json_error_t e;
    json_t *j = json_load_file(p, 0, &e);
    if (!j)
        fprintf(stderr, "%s: not JSON: %s (line %d)\n", p, e.text, e.line);
    return j;
}

/* Runs argv (from $PATH) and returns its exit status, -1 when it could not
 * run or died of a signal. */
static int run(char *const argv[])
{
    pid_t pid;
    int rc = posix_spawnp(&pid, argv[0], NULL, NULL, argv, environ);
    if (rc != 0) {
        fprintf(stderr, "cannot run %s: %s\n", argv[0], strerror(rc));
        return -1;
    }
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* A fresh directory under tmp with observability/ holding the given files
 * (name, text, name, text, ..., NULL), and rules/ for the output. */
static void fixture(char *deploy, size_t n, const char *tag, ...)
{
    snprintf(deploy, n, "%s/%s", tmp, tag);
    char p[PATH_MAX + 32];
    CHECK(mkdir(deploy, 0755) == 0);
    snprintf(p, sizeof p, "%s/observability", deploy);
    CHECK(mkdir(p, 0755) == 0);
    char rules[PATH_MAX + 32];
    snprintf(rules, sizeof rules, "%s/rules", deploy);
    CHECK(mkdir(rules, 0755) == 0);
    va_list ap;
    va_start(ap, tag);
    const char *name;
    while ((name = va_arg(ap, const char *))) {
        const char *text = va_arg(ap, const char *);
        put(p, name, text);
    }
    va_end(ap);
}

static int install(const char *deploy, char *err, size_t errsz)
{
    char rules[PATH_MAX + 32], am[PATH_MAX + 32], tok[PATH_MAX + 32];
    snprintf(rules, sizeof rules, "%s/rules", deploy);
    snprintf(am, sizeof am, "%s/alertmanager.yml", deploy);
    snprintf(tok, sizeof tok, "%s/admin.token", deploy);
    return observability_install(deploy, rules, am, "127.0.0.1:19999", tok, err, errsz);
}

static void fails_with(int rc, const char *err, const char *want)
{
    CHECK(rc < 0);
    if (!strstr(err, want))
        fprintf(stderr, "error \"%s\" lacks \"%s\"\n", err, want);
    CHECK(strstr(err, want) != NULL);
}

/* ---- the real deploy/ ---------------------------------------------------- */

static void test_real_deploy(void)
{
    const char *src = getenv("STRATA_SOURCE_DIR");
    CHECK(src != NULL);
    if (!src)
        return;
    char deploy[PATH_MAX], out[PATH_MAX], rules[PATH_MAX + 8], am[PATH_MAX + 32], tok[PATH_MAX + 32];
    snprintf(deploy, sizeof deploy, "%s/deploy", src);
    snprintf(out, sizeof out, "%s/real", tmp);
    snprintf(rules, sizeof rules, "%s/rules", out);
    snprintf(am, sizeof am, "%s/alertmanager.yml", out);
    snprintf(tok, sizeof tok, "%s/admin.token", out);
    CHECK(mkdir(out, 0755) == 0);
    CHECK(mkdir(rules, 0755) == 0);
    put(out, "admin.token", "t0ken\n");
    char err[512] = "";
    int rc = observability_install(deploy, rules, am, "127.0.0.1:19999", tok, err, sizeof err);
    if (rc < 0)
        fprintf(stderr, "install: %s\n", err);
    CHECK_INT(rc, 0);

    static const char *const files[] = { "strata-red.yml", "strata-slo.yml", "strata-platform.yml" };
    for (size_t i = 0; i < 3; i++) {
        json_t *j = load(rules, files[i]);
        CHECK(j != NULL);
        CHECK(json_array_size(json_object_get(j, "groups")) > 0);
        json_decref(j);
    }
    json_t *slo = load(rules, "strata-slo.yml");
    json_t *r0 = json_array_get(json_object_get(json_array_get(json_object_get(slo, "groups"), 0), "rules"), 0);
    CHECK_STR(json_string_value(json_object_get(r0, "alert")), "StrataAvailabilityBurnRate");
    CHECK_STR(json_string_value(json_object_get(json_object_get(r0, "labels"), "severity")), "page");
    CHECK_STR(json_string_value(json_object_get(r0, "for")), "1m");
    json_decref(slo);

    json_t *amj = load(out, "alertmanager.yml");
    json_t *wc = json_array_get(json_object_get(json_array_get(json_object_get(amj, "receivers"), 0), "webhook_configs"), 0);
    CHECK_STR(json_string_value(json_object_get(wc, "url")), "http://127.0.0.1:19999/v1/alerts/webhook");
    json_t *auth = json_object_get(json_object_get(wc, "http_config"), "authorization");
    CHECK_STR(json_string_value(json_object_get(auth, "type")), "Bearer");
    CHECK_STR(json_string_value(json_object_get(auth, "credentials_file")), tok);
    CHECK(json_is_true(json_object_get(wc, "send_resolved")));
    CHECK(json_is_integer(json_object_get(wc, "max_alerts")));
    CHECK(json_is_array(json_object_get(amj, "inhibit_rules")));
    json_decref(amj);

    /* Prometheus' and Alertmanager's own checks on what was written. */
    char p1[PATH_MAX + 32], p2[PATH_MAX + 32], p3[PATH_MAX + 32], cf[PATH_MAX + 64];
    snprintf(p1, sizeof p1, "%s/%s", rules, files[0]);
    snprintf(p2, sizeof p2, "%s/%s", rules, files[1]);
    snprintf(p3, sizeof p3, "%s/%s", rules, files[2]);
    snprintf(cf, sizeof cf, "--config.file=%s", am);
    char *promtool[] = { "promtool", "check", "rules", p1, p2, p3, NULL };
    CHECK_INT(run(promtool), 0);
    char *amtool[] = { "amtool", "check-config", am, NULL };
    CHECK_INT(run(amtool), 0);
    char *route[] = { "amtool", "config", "routes", "test", cf, "--verify.receivers=strata-control", "severity=page",
                      NULL };
    CHECK_INT(run(route), 0);

    /* Installing again replaces the files (a restart with the same state). */
    rc = observability_install(deploy, rules, am, "127.0.0.1:20000", tok, err, sizeof err);
    CHECK_INT(rc, 0);
    amj = load(out, "alertmanager.yml");
    wc = json_array_get(json_object_get(json_array_get(json_object_get(amj, "receivers"), 0), "webhook_configs"), 0);
    CHECK_STR(json_string_value(json_object_get(wc, "url")), "http://127.0.0.1:20000/v1/alerts/webhook");
    json_decref(amj);
}

/* ---- edge cases ------------------------------------------------------------ */

static void test_no_observability_dir(void)
{
    char deploy[PATH_MAX], rules[PATH_MAX + 8], err[256] = "x";
    snprintf(deploy, sizeof deploy, "%s/empty", tmp);
    snprintf(rules, sizeof rules, "%s/rules", deploy);
    CHECK(mkdir(deploy, 0755) == 0);
    CHECK(mkdir(rules, 0755) == 0);
    CHECK_INT(install(deploy, err, sizeof err), 0);
    CHECK(!exists(deploy, "alertmanager.yml"));
    CHECK(!exists(rules, "strata-red.yml"));
}

#define RULE_HEAD "apiVersion: monitoring.coreos.com/v1\nkind: PrometheusRule\nmetadata:\n  name: "

static void test_yaml_typing(void)
{
    char deploy[PATH_MAX], err[512] = "";
    fixture(deploy, sizeof deploy, "typing", "r.yaml",
            RULE_HEAD "typed\n"
                      "spec:\n  groups:\n    - name: g\n      interval: 30s\n      rules:\n"
                      "        - record: x:y:z\n          expr: vector(1)\n"
                      "          labels:\n            quoted: \"5\"\n            plain: 5\n            hex: 0x10\n"
                      "            flag: true\n            nothing: ~\n            real: 1.5\n            text: abc\n"
                      "            single: 'true'\n            block: |\n              two\n              lines\n",
            "other.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: unrelated\ndata:\n  a: b\n",
            (const char *)NULL);
    int rc = install(deploy, err, sizeof err);
    if (rc < 0)
        fprintf(stderr, "install: %s\n", err);
    CHECK_INT(rc, 0);
    char rules[PATH_MAX + 8];
    snprintf(rules, sizeof rules, "%s/rules", deploy);
    json_t *j = load(rules, "typed.yml");
    json_t *g = json_array_get(json_object_get(j, "groups"), 0);
    CHECK_STR(json_string_value(json_object_get(g, "interval")), "30s");
    json_t *l = json_object_get(json_array_get(json_object_get(g, "rules"), 0), "labels");
    CHECK_STR(json_string_value(json_object_get(l, "quoted")), "5");
    CHECK_INT(json_integer_value(json_object_get(l, "plain")), 5);
    CHECK(json_is_integer(json_object_get(l, "plain")));
    CHECK_INT(json_integer_value(json_object_get(l, "hex")), 16);
    CHECK(json_is_true(json_object_get(l, "flag")));
    CHECK(json_is_null(json_object_get(l, "nothing")));
    CHECK(json_is_real(json_object_get(l, "real")) && json_real_value(json_object_get(l, "real")) == 1.5);
    CHECK_STR(json_string_value(json_object_get(l, "text")), "abc");
    CHECK_STR(json_string_value(json_object_get(l, "single")), "true");
    CHECK_STR(json_string_value(json_object_get(l, "block")), "two\nlines\n");
    json_decref(j);
    /* Other kinds and ConfigMaps are for the cluster: no alertmanager.yml. */
    CHECK(!exists(deploy, "alertmanager.yml"));
}

static void test_rule_errors(void)
{
    char deploy[PATH_MAX], rules[PATH_MAX + 8], err[512] = "";
    /* a.yaml is fine, b.yaml lacks spec.groups: nothing at all is written. */
    fixture(deploy, sizeof deploy, "nogroups", "a.yaml",
            RULE_HEAD "fine\nspec:\n  groups:\n    - name: g\n      rules: []\n", "b.yaml",
            "# a comment\n" RULE_HEAD "broken\nspec:\n  notgroups: []\n", (const char *)NULL);
    snprintf(rules, sizeof rules, "%s/rules", deploy);
    int rc = install(deploy, err, sizeof err);
    fails_with(rc, err, "/observability/b.yaml:7:");
    fails_with(rc, err, "spec.groups");
    CHECK(!exists(rules, "fine.yml"));

    fixture(deploy, sizeof deploy, "nospec", "r.yml", RULE_HEAD "x\n", (const char *)NULL);
    fails_with(install(deploy, err, sizeof err), err, "r.yml:1:1: spec.groups: required field is missing");

    fixture(deploy, sizeof deploy, "groupnoname", "r.yaml",
            RULE_HEAD "x\nspec:\n  groups:\n    - rules: []\n", (const char *)NULL);
    fails_with(install(deploy, err, sizeof err), err, "r.yaml:7:7: spec.groups[0].name: required field is missing");

    fixture(deploy, sizeof deploy, "emptygroups", "r.yaml", RULE_HEAD "x\nspec:\n  groups: []\n",
            (const char *)NULL);
    fails_with(install(deploy, err, sizeof err), err, "r.yaml:6:11: spec.groups: no rule groups");

    fixture(deploy, sizeof deploy, "badname", "r.yaml",
            RULE_HEAD "../../etc/x\nspec:\n  groups:\n    - name: g\n      rules: []\n", (const char *)NULL);
    fails_with(install(deploy, err, sizeof err), err, "r.yaml:4:9: metadata.name: \"../../etc/x\" is not an object name");

    fixture(deploy, sizeof deploy, "dup", "a.yaml",
            RULE_HEAD "same\nspec:\n  groups:\n    - name: g\n      rules: []\n---\n" RULE_HEAD
                      "same\nspec:\n  groups:\n    - name: h\n      rules: []\n",
            (const char *)NULL);
    fails_with(install(deploy, err, sizeof err), err, "a.yaml:10:1: installs");

    fixture(deploy, sizeof deploy, "inf", "r.yaml",
            RULE_HEAD "x\nspec:\n  groups:\n    - name: g\n      rules:\n        - record: a:b:c\n"
                      "          expr: .inf\n",
            (const char *)NULL);
    fails_with(install(deploy, err, sizeof err), err, "r.yaml:10:17: spec.groups[0].rules[0].expr: .inf has no JSON form");

    fixture(deploy, sizeof deploy, "syntax", "r.yaml", RULE_HEAD "x\nspec: [\n", (const char *)NULL);
    fails_with(install(deploy, err, sizeof err), err, "r.yaml:");
}

#define AM_HEAD "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: alertmanager-config\ndata:\n"

static void test_alertmanager_errors(void)
{
    char deploy[PATH_MAX], err[512] = "";
    fixture(deploy, sizeof deploy, "am-nowebhook", "am.yaml",
            AM_HEAD "  alertmanager.yml: |\n    route:\n      receiver: x\n    receivers:\n      - name: x\n",
            (const char *)NULL);
    fails_with(install(deploy, err, sizeof err), err, "am.yaml:6:21: data.alertmanager.yml: no receiver has a webhook");
    CHECK(!exists(deploy, "alertmanager.yml"));

    /* An error inside the embedded YAML carries the manifest's line and
     * column, and its path below the ConfigMap key. */
    fixture(deploy, sizeof deploy, "am-inf", "am.yaml",
            AM_HEAD "  alertmanager.yml: |\n    global:\n      resolve_timeout: .inf\n", (const char *)NULL);
    fails_with(install(deploy, err, sizeof err), err,
               "am.yaml:8:24: data[alertmanager.yml].global.resolve_timeout: .inf has no JSON form");

    fixture(deploy, sizeof deploy, "am-syntax", "am.yaml",
            AM_HEAD "  alertmanager.yml: |\n    route:\n      receiver: [x\n    receivers: []\n", (const char *)NULL);
    int rc = install(deploy, err, sizeof err);
    fails_with(rc, err, "am.yaml:");
    fails_with(rc, err, "data[alertmanager.yml]");

    fixture(deploy, sizeof deploy, "am-list", "am.yaml", AM_HEAD "  alertmanager.yml: \"[1, 2]\"\n",
            (const char *)NULL);
    fails_with(install(deploy, err, sizeof err), err, "am.yaml:6:21: data.alertmanager.yml: expected one YAML mapping");

    fixture(deploy, sizeof deploy, "am-nokey", "am.yaml", AM_HEAD "  other: x\n", (const char *)NULL);
    fails_with(install(deploy, err, sizeof err), err, "am.yaml:6:3: data: no key alertmanager.yml");

    /* Credentials written for another client give way to the token file;
     * webhooks elsewhere are left alone. */
    fixture(deploy, sizeof deploy, "am-creds", "am.yaml",
            AM_HEAD "  alertmanager.yml: |\n    route: {receiver: x}\n    receivers:\n      - name: x\n"
                    "        webhook_configs:\n"
                    "          - url: https://example.com:1/v1/alerts/webhook?x=1\n"
                    "            http_config: {bearer_token: s3cret, follow_redirects: false}\n"
                    "          - url: https://pager.example.com/hook\n",
            (const char *)NULL);
    CHECK_INT(install(deploy, err, sizeof err), 0);
    json_t *j = load(deploy, "alertmanager.yml");
    json_t *wcs = json_object_get(json_array_get(json_object_get(j, "receivers"), 0), "webhook_configs");
    json_t *hc = json_object_get(json_array_get(wcs, 0), "http_config");
    CHECK_STR(json_string_value(json_object_get(json_array_get(wcs, 0), "url")),
              "http://127.0.0.1:19999/v1/alerts/webhook?x=1");
    CHECK(json_object_get(hc, "bearer_token") == NULL);
    CHECK(json_is_false(json_object_get(hc, "follow_redirects")));
    CHECK(json_object_get(hc, "authorization") != NULL);
    CHECK_STR(json_string_value(json_object_get(json_array_get(wcs, 1), "url")), "https://pager.example.com/hook");
    CHECK(json_object_get(json_array_get(wcs, 1), "http_config") == NULL);
    json_decref(j);

    fixture(deploy, sizeof deploy, "am-twice", "a.yaml", AM_HEAD "  alertmanager.yml: \"{}\"\n", "b.yaml",
            AM_HEAD "  alertmanager.yml: \"{}\"\n", (const char *)NULL);
    fails_with(install(deploy, err, sizeof err), err, "a.yaml:6:21");
}

/* ---- --install-only -------------------------------------------------------- */

static int install_only(const char *out)
{
    const char *src = getenv("STRATA_SOURCE_DIR");
    if (!src) {
        fprintf(stderr, "STRATA_SOURCE_DIR is not set\n");
        return 2;
    }
    char deploy[PATH_MAX], rules[PATH_MAX + 8], am[PATH_MAX + 32], tok[PATH_MAX + 32], err[1024];
    snprintf(deploy, sizeof deploy, "%s/deploy", src);
    snprintf(rules, sizeof rules, "%s/rules", out);
    snprintf(am, sizeof am, "%s/alertmanager.yml", out);
    snprintf(tok, sizeof tok, "%s/admin.token", out);
    if ((mkdir(out, 0755) < 0 && errno != EEXIST) || (mkdir(rules, 0755) < 0 && errno != EEXIST)) {
        fprintf(stderr, "%s: %s\n", rules, strerror(errno));
        return 2;
    }
    put(out, "admin.token", "test-token\n");
    if (observability_install(deploy, rules, am, "127.0.0.1:9900", tok, err, sizeof err) < 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "--install-only"))
        return install_only(argv[2]);
    snprintf(tmp, sizeof tmp, "/tmp/strata-obs.XXXXXX");
    if (!mkdtemp(tmp)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(test_real_deploy);
    RUN(test_no_observability_dir);
    RUN(test_yaml_typing);
    RUN(test_rule_errors);
    RUN(test_alertmanager_errors);
    char *rm[] = { "rm", "-rf", tmp, NULL };
    run(rm);
    return check_done();
}
