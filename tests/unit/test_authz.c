/* AuthorizationPolicy semantics (authz.c) on policies parsed from the
 * proxy config (proxy_config.c): the matrix of callers, DENY over ALLOW,
 * deny-by-default once an ALLOW policy exists, prefix/suffix/wildcard
 * matches, namespaces from SPIFFE IDs, no identity; and the parser's
 * errors for the sidecar's fields. */
#include <string.h>

#include "check.h"
#include "proxy/authz.h"
#include "proxy/proxy_config.h"

static struct proxy_config *parse(const char *json)
{
    struct proxy_config *c = NULL;
    char err[512];
    int rc = proxy_config_parse("t.json", str_from_cstr(json), &c, err, sizeof err);
    if (rc < 0)
        fprintf(stderr, "unexpected: %s\n", err);
    CHECK_INT(rc, 0);
    return c;
}

static void parse_fails(const char *json, const char *want)
{
    struct proxy_config *c = NULL;
    char err[512] = "";
    CHECK(proxy_config_parse("t.json", str_from_cstr(json), &c, err, sizeof err) < 0);
    if (!strstr(err, want))
        fprintf(stderr, "error \"%s\" lacks \"%s\"\n", err, want);
    CHECK(strstr(err, want) != NULL);
}

static struct authz_decision eval(const struct proxy_config *c, const char *principal, const char *method,
                                  const char *path)
{
    struct authz_input in = { principal, str_from_cstr(method), str_from_cstr(path) };
    struct authz_decision d;
    authz_evaluate(c->authz, c->nauthz, &in, &d);
    return d;
}

#define ORDER "spiffe://strata.local/ns/default/sa/order"
#define AUTH "spiffe://strata.local/ns/default/sa/auth"
#define EVIL "spiffe://strata.local/ns/other/sa/evil"

static void test_no_policy_allows(void)
{
    struct proxy_config *c = parse("{\"routes\": []}");
    CHECK(eval(c, NULL, "GET", "/x").allowed);
    CHECK(eval(c, ORDER, "DELETE", "/x").allowed);
    proxy_config_free(c);
}

static void test_matrix(void)
{
    struct proxy_config *c = parse(
        "{\"routes\": [], \"authorization\": ["
        " {\"name\": \"user-readers\", \"action\": \"ALLOW\", \"rules\": ["
        "   {\"from\": [{\"principals\": [\"strata.local/ns/default/sa/order\"]}], \"to\": [{\"methods\": [\"GET\"], \"paths\": [\"/v1/users/*\"]}]},"
        "   {\"from\": [{\"principals\": [\"" AUTH "\"]}], \"to\": [{\"paths\": [\"/internal/*\"]}]}]},"
        " {\"name\": \"health\", \"action\": \"ALLOW\", \"rules\": [{\"to\": [{\"paths\": [\"/healthz\", \"/readyz\"]}]}]},"
        " {\"name\": \"no-admin\", \"action\": \"DENY\", \"rules\": [{\"to\": [{\"paths\": [\"*/admin\"]}]}]}]}");
    struct authz_decision d = eval(c, ORDER, "GET", "/v1/users/42");
    CHECK(d.allowed);
    CHECK_STR(d.policy, "user-readers");
    CHECK_INT(d.rule, 0);
    CHECK(!eval(c, ORDER, "POST", "/v1/users/42").allowed);          /* method not allowed */
    CHECK(!eval(c, ORDER, "GET", "/internal/credentials").allowed);  /* other rule's caller */
    d = eval(c, AUTH, "POST", "/internal/credentials");
    CHECK(d.allowed);
    CHECK_INT(d.rule, 1);
    d = eval(c, EVIL, "GET", "/v1/users/42");                        /* another service */
    CHECK(!d.allowed);
    CHECK_STR(d.policy, "");
    CHECK_INT(d.rule, -1);
    CHECK(!eval(c, NULL, "GET", "/v1/users/42").allowed);            /* no identity */
    CHECK(eval(c, NULL, "GET", "/healthz").allowed);                 /* a rule without from */
    d = eval(c, ORDER, "GET", "/v1/users/admin");                    /* DENY wins over ALLOW */
    CHECK(!d.allowed);
    CHECK_STR(d.policy, "no-admin");
    proxy_config_free(c);
}

static void test_namespaces_and_negations(void)
{
    struct proxy_config *c = parse(
        "{\"routes\": [], \"authorization\": ["
        " {\"name\": \"same-ns\", \"rules\": [{\"from\": [{\"namespaces\": [\"default\"], \"not_principals\": [\"*/sa/auth\"]}]}]},"
        " {\"name\": \"deny-delete\", \"action\": \"DENY\", \"rules\": [{\"to\": [{\"methods\": [\"DELETE\"], \"not_paths\": [\"/tmp/*\"]}]}]}]}");
    CHECK(eval(c, ORDER, "GET", "/a").allowed);
    CHECK(!eval(c, AUTH, "GET", "/a").allowed);     /* suffix match in not_principals */
    CHECK(!eval(c, EVIL, "GET", "/a").allowed);     /* other namespace */
    CHECK(!eval(c, NULL, "GET", "/a").allowed);     /* no identity: no namespace */
    CHECK(!eval(c, ORDER, "DELETE", "/a").allowed);
    CHECK(eval(c, ORDER, "DELETE", "/tmp/x").allowed);
    proxy_config_free(c);
}

static void test_allow_nothing_deny_nothing(void)
{
    /* ALLOW without rules allows nothing (everything is denied); DENY without rules denies nothing. */
    struct proxy_config *c = parse("{\"routes\": [], \"authorization\": [{\"name\": \"lockdown\"}]}");
    CHECK(!eval(c, ORDER, "GET", "/").allowed);
    proxy_config_free(c);
    c = parse("{\"routes\": [], \"authorization\": [{\"name\": \"nothing\", \"action\": \"DENY\"}]}");
    CHECK(eval(c, ORDER, "GET", "/").allowed);
    proxy_config_free(c);
}

static void test_sidecar_config_errors(void)
{
    parse_fails("{\"routes\": [], \"authorization\": [{\"name\": \"p\", \"action\": \"AUDIT\"}]}",
                "$.authorization[0]: action: expected one of \"ALLOW\", \"DENY\"");
    parse_fails("{\"routes\": [], \"authorization\": [{\"name\": \"p\", \"rules\": [{\"from\": [{\"principal\": [\"x\"]}]}]}]}",
                "$.authorization[0].rules[0].from[0]: unknown field \"principal\"");
    parse_fails("{\"clusters\": [{\"name\": \"u\", \"endpoints\": [{\"address\": \"127.0.0.1:1\", \"labels\": {\"version\": \"v1\"}}],"
                " \"subsets\": [{\"name\": \"v1\", \"labels\": {\"version\": \"v1\"}}]}],"
                " \"routes\": [{\"name\": \"r\", \"prefix\": \"/\", \"destinations\": [{\"cluster\": \"u\", \"subset\": \"v3\"}]}]}",
                "$.routes[0].destinations[0]: subset: cluster \"u\" has no subset named \"v3\"");
    parse_fails("{\"clusters\": [{\"name\": \"u\", \"endpoints\": [], \"tls\": {\"ca_file\": \"ca.pem\"}}], \"routes\": []}",
                "$.clusters[0].tls: exactly one of \"spiffe_id\" (mesh) and \"sni\" (hostname) is required");
    parse_fails("{\"listeners\": [{\"name\": \"in\", \"address\": \"127.0.0.1:0\", \"role\": \"inbound\"}], \"routes\": []}",
                "$.listeners[0]: an inbound listener needs tls.certificates");
    parse_fails("{\"clusters\": [{\"name\": \"u\", \"endpoints\": []}], \"routes\": [{\"name\": \"r\", \"prefix\": \"/\", \"cluster\": \"u\","
                " \"retries\": {\"retry_on\": [\"sometimes\"]}}]}",
                "$.routes[0].retries: retry_on[0]: expected");
    parse_fails("{\"clusters\": [{\"name\": \"u\", \"endpoints\": []}], \"routes\": [{\"name\": \"r\", \"prefix\": \"/\", \"cluster\": \"u\","
                " \"fault\": {\"abort_status\": 503, \"abort_percent\": 120}}]}",
                "$.routes[0].fault: abort_percent: expected a percentage 0..100");
    parse_fails("{\"clusters\": [{\"name\": \"u\", \"endpoints\": []}], \"routes\": [{\"name\": \"r\", \"prefix\": \"/\", \"cluster\": \"u\","
                " \"listeners\": [\"nope\"]}]}",
                "$.routes[0]: listeners[0]: no listener named \"nope\"");
}

static void test_subsets_and_locality(void)
{
    struct proxy_config *c = parse(
        "{\"identity\": {\"workload\": \"order\", \"spiffe_id\": \"" ORDER "\", \"region\": \"eu\", \"zone\": \"eu-1a\"},"
        " \"clusters\": [{\"name\": \"user\", \"endpoints\": ["
        "   {\"address\": \"127.0.0.1:1\", \"labels\": {\"version\": \"v1\", \"zone\": \"eu-1a\", \"region\": \"eu\"}},"
        "   {\"address\": \"127.0.0.1:2\", \"labels\": {\"version\": \"v2\", \"topology.kubernetes.io/zone\": \"eu-1b\"}},"
        "   \"127.0.0.1:3\"],"
        "  \"subsets\": [{\"name\": \"v1\", \"labels\": {\"version\": \"v1\"}}, {\"name\": \"v2\", \"labels\": {\"version\": \"v2\"}}],"
        "  \"circuit_breaker\": {\"max_requests\": 10}, \"outlier_detection\": {\"consecutive_5xx\": 3}}],"
        " \"routes\": [{\"name\": \"r\", \"prefix\": \"/\", \"destinations\": [{\"cluster\": \"user\", \"subset\": \"v1\", \"weight\": 80},"
        "   {\"cluster\": \"user\", \"subset\": \"v2\", \"weight\": 20}], \"mirror\": {\"cluster\": \"user\", \"subset\": \"v2\", \"percent\": 12.5},"
        "   \"fault\": {\"delay_ms\": 5}, \"retries\": {\"attempts\": 3, \"retry_on\": [\"5xx\"], \"retriable_status_codes\": [409]}}]}");
    const struct proxy_cluster *u = &c->clusters[0];
    CHECK_INT(u->nsubsets, 2);
    CHECK_INT(u->subsets[0].nmembers, 1);
    CHECK_INT(u->subsets[0].members[0], 0);
    CHECK_INT(u->subsets[1].members[0], 1);
    CHECK_STR(u->endpoints[0].zone, "eu-1a");
    CHECK_STR(u->endpoints[1].zone, "eu-1b");
    CHECK(u->endpoints[2].zone == NULL);
    CHECK_INT(u->breaker.max_requests, 10);
    CHECK(u->outlier.enabled);
    CHECK_INT(u->outlier.consecutive_5xx, 3);
    CHECK_INT(u->outlier.base_ejection_ms, 30000);
    const struct proxy_route *r = &c->routes[0];
    CHECK_INT(r->total_weight, 100);
    CHECK(r->destinations[1].subset == &u->subsets[1]);
    CHECK_INT(r->mirror->percent_x100, 1250);
    CHECK_INT(r->fault->delay_percent_x100, 10000);
    CHECK_INT(r->retry.attempts, 3);
    CHECK_INT(r->retry.retry_on, PROXY_RETRY_5XX | PROXY_RETRY_STATUS_CODES);
    CHECK_INT(r->retry.status_codes[0], 409);
    CHECK_INT(r->retry.budget_percent, 20);
    CHECK_STR(c->workload, "order");
    CHECK_STR(c->zone, "eu-1a");
    proxy_config_free(c);
}

static void norm(const char *in, const char *want)
{
    char out[256];
    size_t n = authz_normalize_path(str_from_cstr(in), out);
    CHECK_INT(n, strlen(want));
    CHECK_STR(out, want);
}

static void test_normalize_path(void)
{
    norm("/", "/");
    norm("/v1/users", "/v1/users");
    norm("//admin", "/admin");
    norm("/a//b///c", "/a/b/c");
    norm("/x/../admin", "/admin");
    norm("/x/./y/../../admin/", "/admin/");
    norm("/../../etc/passwd", "/etc/passwd");       /* never above the root */
    norm("/%61dmin", "/admin");                     /* unreserved escapes decoded */
    norm("/a%2fb", "/a%2Fb");                       /* reserved ones kept, upper-cased */
    norm("/a/%2e%2e/admin", "/admin");              /* encoded dot segments */
    norm("/a/..", "/");
    norm("/a/.", "/a/");
    norm("/%zz", "/%zz");                           /* not an escape: left alone */
    norm("/a%", "/a%");
    norm("*", "*");
}

int main(void)
{
    RUN(test_normalize_path);
    RUN(test_no_policy_allows);
    RUN(test_matrix);
    RUN(test_namespaces_and_negations);
    RUN(test_allow_nothing_deny_nothing);
    RUN(test_sidecar_config_errors);
    RUN(test_subsets_and_locality);
    return check_done();
}
