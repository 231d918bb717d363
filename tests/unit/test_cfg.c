/* YAML config: the tree and its locations, every loading error with its
 * exact text, typed getters, environment overrides. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "check.h"
#include "core/cfg.h"

static struct cfg_doc *load(const char *text)
{
    struct cfg_doc *doc = NULL;
    struct cfg_error err;
    char msg[600];
    int rc = cfg_load_string("t.yaml", text, strlen(text), &doc, &err);
    if (rc) {
        cfg_error_format(&err, msg, sizeof msg);
        fprintf(stderr, "unexpected load error: %s\n", msg);
    }
    CHECK_INT(rc, 0);
    return doc;
}

/* Loading text (n bytes) fails with exactly `want` as formatted error. */
static void load_fails_n(const char *text, size_t n, int want_rc, const char *want)
{
    struct cfg_doc *doc = (struct cfg_doc *)1;
    struct cfg_error err;
    char msg[600];
    CHECK_INT(cfg_load_string("t.yaml", text, n, &doc, &err), want_rc);
    CHECK(doc == NULL);
    cfg_error_format(&err, msg, sizeof msg);
    CHECK_STR(msg, want);
}

#define LOAD_FAILS(text, want) load_fails_n((text), strlen(text), -EINVAL, (want))

/* The formatted error of the last getter call. */
static char last[600];
static const char *fmt_err(const struct cfg_error *err)
{
    cfg_error_format(err, last, sizeof last);
    return last;
}

static const char deployment[] =
    "apiVersion: apps/v1\n"
    "kind: Deployment\n"
    "metadata:\n"
    "  name: order\n"
    "  labels: {app: order, tier: \"backend\"}\n"
    "spec:\n"
    "  replicas: three\n"
    "  paused: false\n"
    "  template:\n"
    "    spec:\n"
    "      containers:\n"
    "        - name: order\n"
    "          image: strata/order:1.0\n"
    "          ports:\n"
    "          - containerPort: 8080\n"
    "          - containerPort: \"9090\"\n"
    "          env:\n"
    "            - {name: LOG_LEVEL, value: debug}\n"
    "          args: |\n"
    "            --flag\n"
    "      empty:\n"
    "      tilde: ~\n";

static void test_tree_and_locations(void)
{
    struct cfg_doc *doc = load(deployment);
    if (!doc)
        return;
    CHECK_INT(cfg_doc_count(doc), 1);
    const struct cfg_node *root = cfg_doc_root(doc, 0), *n;
    CHECK(cfg_doc_root(doc, 1) == NULL);
    CHECK_INT(cfg_kind(root), CFG_MAP);
    CHECK_INT(cfg_count(root), 4);
    /* entries in document order */
    CHECK_STRV(cfg_scalar(cfg_map_key(root, 0)), "apiVersion");
    CHECK_STRV(cfg_scalar(cfg_map_key(root, 3)), "spec");
    CHECK_STR(cfg_file(root), "t.yaml");
    CHECK_INT(cfg_line(root), 1);
    CHECK_INT(cfg_column(root), 1);

    n = cfg_get(root, "spec.replicas");
    CHECK_INT(cfg_kind(n), CFG_SCALAR);
    CHECK_INT(cfg_line(n), 7);
    CHECK_INT(cfg_column(n), 13);
    n = cfg_get(root, "metadata.labels.tier");
    CHECK_INT(cfg_line(n), 5);
    CHECK_INT(cfg_column(n), 30);
    CHECK(cfg_is_quoted(n));
    CHECK(!cfg_is_quoted(cfg_get(root, "metadata.labels.app")));

    n = cfg_get(root, "spec.template.spec.containers");
    CHECK_INT(cfg_kind(n), CFG_SEQ);
    CHECK_INT(cfg_line(n), 12); /* the first "-" */
    CHECK_INT(cfg_column(n), 9);
    n = cfg_get(root, "spec.template.spec.containers[0]");
    CHECK_INT(cfg_kind(n), CFG_MAP);
    CHECK_INT(cfg_line(n), 12);
    CHECK_INT(cfg_column(n), 11);
    n = cfg_get(root, "spec.template.spec.containers[0].ports[1].containerPort");
    CHECK_INT(cfg_line(n), 16);
    CHECK_INT(cfg_column(n), 28);
    CHECK(cfg_is_quoted(n));
    char path[256];
    CHECK_INT(cfg_path(n, path, sizeof path),
              strlen("spec.template.spec.containers[0].ports[1].containerPort"));
    CHECK_STR(path, "spec.template.spec.containers[0].ports[1].containerPort");
    CHECK_INT(cfg_path(n, path, 10), strlen("spec.template.spec.containers[0].ports[1].containerPort"));
    CHECK_STR(path, "spec.temp");
    CHECK_INT(cfg_path(root, path, sizeof path), 0);
    CHECK_STR(path, "");

    n = cfg_get(root, "spec.template.spec.containers[0].env[0].value");
    CHECK_STRV(cfg_scalar(n), "debug");
    CHECK_INT(cfg_line(n), 18);
    CHECK_INT(cfg_column(n), 40);
    n = cfg_get(root, "spec.template.spec.containers[0].args");
    CHECK_STRV(cfg_scalar(n), "--flag\n");
    CHECK(cfg_is_quoted(n)); /* block scalars are strings */

    /* Empty values and ~ are nulls, with locations. */
    n = cfg_get(root, "spec.template.spec.empty");
    CHECK(n != NULL);
    CHECK_INT(cfg_kind(n), CFG_NULL);
    CHECK_INT(cfg_line(n), 21);
    CHECK_INT(cfg_kind(cfg_get(root, "spec.template.spec.tilde")), CFG_NULL);
    CHECK_STRV(cfg_scalar(cfg_get(root, "spec.template.spec.tilde")), "~");

    /* Lookups that miss. */
    CHECK(cfg_get(root, "spec.nope") == NULL);
    CHECK(cfg_get(root, "spec.template.spec.containers[1]") == NULL);
    CHECK(cfg_get(root, "spec.replicas.x") == NULL);
    CHECK(cfg_get(root, "spec[0]") == NULL);
    CHECK(cfg_get(root, "spec..replicas") == NULL);
    CHECK(cfg_get(root, "spec.") == NULL);
    CHECK(cfg_get(root, "spec.template.spec.containers[x]") == NULL);
    CHECK(cfg_get(root, "spec.template.spec.containers[0]x") == NULL);
    CHECK(cfg_get(NULL, "spec") == NULL);
    CHECK(cfg_get(root, "") == root);
    CHECK(cfg_map_get(root, "kind") != NULL);
    CHECK(cfg_map_get(root, "Kind") == NULL);
    CHECK(cfg_map_key(root, 4) == NULL);
    CHECK(cfg_seq_item(root, 0) == NULL);
    CHECK(cfg_scalar(root).p == NULL);
    cfg_doc_free(doc);
}

static void test_multi_document(void)
{
    struct cfg_doc *doc = load("# leading comment\n"
                               "kind: Service\n"
                               "---\n"
                               "kind: Deployment\n"
                               "spec:\n"
                               "  - a\n"
                               "---\n"
                               "---\n"
                               "- 1\n"
                               "...\n");
    if (!doc)
        return;
    CHECK_INT(cfg_doc_count(doc), 4);
    CHECK_STRV(cfg_scalar(cfg_get(cfg_doc_root(doc, 0), "kind")), "Service");
    CHECK_INT(cfg_line(cfg_doc_root(doc, 1)), 4);
    CHECK_INT(cfg_line(cfg_get(cfg_doc_root(doc, 1), "spec[0]")), 6);
    CHECK_INT(cfg_column(cfg_get(cfg_doc_root(doc, 1), "spec[0]")), 5);
    CHECK_INT(cfg_kind(cfg_doc_root(doc, 2)), CFG_NULL); /* "---" with nothing after it */
    CHECK_INT(cfg_kind(cfg_doc_root(doc, 3)), CFG_SEQ);
    CHECK_INT(cfg_line(cfg_get(cfg_doc_root(doc, 3), "[0]")), 9);
    cfg_doc_free(doc);

    /* Nothing but comments (or nothing at all): no documents. */
    doc = load("# just a comment\n\n");
    CHECK_INT(cfg_doc_count(doc), 0);
    cfg_doc_free(doc);
    doc = load("");
    CHECK_INT(cfg_doc_count(doc), 0);
    cfg_doc_free(doc);
    cfg_doc_free(NULL);
}

static void test_load_errors(void)
{
    LOAD_FAILS("a: 1\nb:\n  c: 2\n  c: 3\n",
               "t.yaml:4:3: b.c: duplicate key \"c\" (first defined at line 3, column 3)");
    LOAD_FAILS("a:\n\tb: 1\n", "t.yaml:2:1: tab character where YAML expects spaces (indent with spaces only)");
    LOAD_FAILS("a:\n  b: 1\n c: 2\n",
               "t.yaml:3:2: did not find expected key (while parsing a block mapping at line 1, column 1)");
    LOAD_FAILS("a: 1\n b: 2\n", "t.yaml:2:3: mapping values are not allowed in this context");
    LOAD_FAILS("a: [1, 2\n",
               "t.yaml:2:1: did not find expected ',' or ']' (while parsing a flow sequence at line 1, column 4)");
    LOAD_FAILS("a: \"open\n",
               "t.yaml:2:1: found unexpected end of stream (while scanning a quoted scalar at line 1, column 4)");
    LOAD_FAILS("a: ok\nb: \"caf\xc3\"\n", "t.yaml:2:9: invalid trailing UTF-8 octet (byte 0x22)");
    LOAD_FAILS("a: \xff\n", "t.yaml:1:4: invalid leading UTF-8 octet (byte 0xff)");
    LOAD_FAILS("a: \x01\n", "t.yaml:1:4: control characters are not allowed (byte 0x01)");
    LOAD_FAILS("base: &b {x: 1}\nother: *b\n",
               "t.yaml:2:8: aliases (*b) are not supported; write the value out in full");
    LOAD_FAILS("a: !!int 5\n", "t.yaml:1:4: YAML tag !!int is not supported");
    LOAD_FAILS("a: !secret x\n", "t.yaml:1:4: YAML tag !secret is not supported");
    LOAD_FAILS("a: !!set {x}\n", "t.yaml:1:4: YAML tag !!set is not supported");
    LOAD_FAILS("m:\n  ? [a, b]\n  : 1\n",
               "t.yaml:2:5: m: a sequence as a mapping key is not supported; keys are strings");
    load_fails_n("a: 1\0b: 2\n", 10, -EINVAL, "t.yaml:1:5: control characters are not allowed (byte 0x00)");

    /* Anchors alone are harmless and accepted; !!str makes a string. */
    struct cfg_doc *doc = load("a: &anchor 1\nb: !!str 2\nc: !!map {x: 1}\n");
    CHECK(cfg_is_quoted(cfg_get(cfg_doc_root(doc, 0), "b")));
    CHECK(!cfg_is_quoted(cfg_get(cfg_doc_root(doc, 0), "a")));
    cfg_doc_free(doc);
}

static void test_duplicates_in_large_maps(void)
{
    /* More than 16 keys takes the sorting path; the first repeat in the
     * document is the one reported, whatever the sort order. */
    char text[4096];
    size_t n = 0;
    for (int i = 0; i < 100; i++)
        n += (size_t)snprintf(text + n, sizeof text - n, "k%d: %d\n", i, i);
    n += (size_t)snprintf(text + n, sizeof text - n, "k50: x\nk7: y\nk50: z\n");
    LOAD_FAILS(text, "t.yaml:101:1: k50: duplicate key \"k50\" (first defined at line 51, column 1)");
    /* Keys that differ only by length or by a later byte are distinct. */
    struct cfg_doc *doc = load("{a: 1, aa: 2, ab: 3, b: 4, a\\0: 5, \"a\\0\": 6, k1: 1, k2: 2, k3: 3, k4: 4,"
                               " k5: 5, k6: 6, k7: 7, k8: 8, k9: 9, k10: 10, k11: 11, k12: 12}");
    CHECK_INT(cfg_count(cfg_doc_root(doc, 0)), 18);
    cfg_doc_free(doc);
}

static void test_bounds(void)
{
    /* Depth: 64 levels load, 65 do not. */
    char deep[200];
    memset(deep, '[', 65);
    memset(deep + 65, ']', 65);
    deep[130] = '\0';
    load_fails_n(deep, 130, -EINVAL, "t.yaml:1:65: nesting deeper than 64 levels");
    /* 64 levels: the last '[' and the first ']' removed. */
    memmove(deep + 64, deep + 65, 65);
    struct cfg_doc *doc = NULL;
    CHECK_INT(cfg_load_string("t.yaml", deep, 128, &doc, NULL), 0);
    cfg_doc_free(doc);

    /* A "depth bomb" far past the bound is refused, not recursed into. */
    size_t big = 200000;
    char *bomb = malloc(big);
    memset(bomb, '[', big);
    load_fails_n(bomb, big, -EINVAL, "t.yaml:1:65: nesting deeper than 64 levels");

    /* Scalars: 1 MiB is fine, one byte more is not. */
    size_t sn = CFG_MAX_SCALAR + 4;
    char *s = malloc(sn + 1);
    memcpy(s, "a: ", 3);
    memset(s + 3, 'x', sn - 3);
    CHECK_INT(cfg_load_string("t.yaml", s, CFG_MAX_SCALAR + 3, &doc, NULL), 0);
    CHECK_INT(cfg_scalar(cfg_get(cfg_doc_root(doc, 0), "a")).n, CFG_MAX_SCALAR);
    cfg_doc_free(doc);
    load_fails_n(s, sn, -EINVAL, "t.yaml:1:4: scalar longer than 1048576 bytes");
    free(s);

    /* Nodes: a flow sequence of 1,000,000 items plus its own node. */
    size_t items = CFG_MAX_NODES;
    char *many = malloc(2 * items + 2);
    many[0] = '[';
    for (size_t i = 0; i < items; i++) {
        many[1 + 2 * i] = '1';
        many[2 + 2 * i] = ',';
    }
    many[2 * items] = ']';
    load_fails_n(many, 2 * items + 1, -EINVAL, "t.yaml:1:2000000: more than 1000000 nodes");
    free(many);

    /* Size: 16 MiB of input is the most we read. */
    size_t fn = CFG_MAX_FILE + 1;
    char *f = malloc(fn);
    memset(f, '\n', fn);
    load_fails_n(f, fn, -EFBIG, "t.yaml: file is larger than 16 MiB");
    CHECK_INT(cfg_load_string("t.yaml", f, fn - 1, &doc, NULL), 0);
    CHECK_INT(cfg_doc_count(doc), 0);
    cfg_doc_free(doc);
    free(f);
    free(bomb);
}

static void test_load_file(void)
{
    char dir[] = "/tmp/strata-test-cfg-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[256], msg[600];
    struct cfg_doc *doc = NULL;
    struct cfg_error err;

    snprintf(path, sizeof path, "%s/ok.yaml", dir);
    FILE *fp = fopen(path, "w");
    fputs("server:\n  port: 8080\n", fp);
    fclose(fp);
    CHECK_INT(cfg_load_file(path, &doc, &err), 0);
    const struct cfg_node *port = cfg_get(cfg_doc_root(doc, 0), "server.port");
    CHECK_STR(cfg_file(port), path);
    CHECK_INT(cfg_line(port), 2);
    cfg_doc_free(doc);

    snprintf(path, sizeof path, "%s/bad.yaml", dir);
    fp = fopen(path, "w");
    fputs("server:\n  port: 8080\n  port: 9090\n", fp);
    fclose(fp);
    CHECK_INT(cfg_load_file(path, &doc, &err), -EINVAL);
    cfg_error_format(&err, msg, sizeof msg);
    char want[600];
    snprintf(want, sizeof want, "%s:3:3: server.port: duplicate key \"port\" (first defined at line 2, column 3)", path);
    CHECK_STR(msg, want);
    unlink(path);

    snprintf(path, sizeof path, "%s/missing.yaml", dir);
    CHECK_INT(cfg_load_file(path, &doc, &err), -ENOENT);
    CHECK(doc == NULL);
    cfg_error_format(&err, msg, sizeof msg);
    snprintf(want, sizeof want, "%s: cannot open: No such file or directory", path);
    CHECK_STR(msg, want);

    /* A sparse 17 MiB file is refused before it is read. */
    snprintf(path, sizeof path, "%s/big.yaml", dir);
    int fd = open(path, O_CREAT | O_WRONLY, 0600);
    CHECK(ftruncate(fd, 17 << 20) == 0);
    close(fd);
    CHECK_INT(cfg_load_file(path, &doc, &err), -EFBIG);
    CHECK_STR(err.message, "file is larger than 16 MiB");
    unlink(path);
    snprintf(path, sizeof path, "%s/ok.yaml", dir);
    unlink(path);
    rmdir(dir);

    /* A directory is not a file. */
    CHECK_INT(cfg_load_file("/", &doc, &err), -EISDIR);
    CHECK_STR(err.message, "cannot read: Is a directory");
}

static void test_ints(void)
{
    struct cfg_doc *doc = load(deployment);
    const struct cfg_node *root = cfg_doc_root(doc, 0);
    struct cfg_error err;
    int64_t v = -1;

    CHECK_INT(cfg_as_int(cfg_get(root, "spec.replicas"), 0, 100, &v, &err), -EINVAL);
    CHECK_STR(fmt_err(&err), "t.yaml:7:13: spec.replicas: expected an integer, got \"three\"");
    CHECK_STR(err.field, "spec.replicas");
    CHECK_INT(err.line, 7);
    CHECK_INT(err.column, 13);
    const struct cfg_node *p0 = cfg_get(root, "spec.template.spec.containers[0].ports[0].containerPort");
    const struct cfg_node *p1 = cfg_get(root, "spec.template.spec.containers[0].ports[1].containerPort");
    CHECK_INT(cfg_as_int(p0, 1, 65535, &v, &err), 0);
    CHECK_INT(v, 8080);
    CHECK_INT(cfg_as_int(p0, 1, 1024, &v, &err), -EINVAL);
    CHECK_STR(fmt_err(&err), "t.yaml:15:28: spec.template.spec.containers[0].ports[0].containerPort: "
                             "must be between 1 and 1024, got 8080");
    CHECK_INT(cfg_as_int(p1, 1, 65535, &v, &err), -EINVAL);
    CHECK_STR(err.message, "expected an integer, got the quoted string \"9090\"");
    CHECK_INT(cfg_as_int(cfg_get(root, "metadata"), 0, 1, &v, &err), -EINVAL);
    CHECK_STR(fmt_err(&err), "t.yaml:4:3: metadata: expected an integer, got a mapping");
    CHECK_INT(cfg_as_int(cfg_get(root, "spec.template.spec.empty"), 0, 1, &v, &err), -EINVAL);
    CHECK_STR(err.message, "expected an integer, got null");
    CHECK_INT(cfg_as_int(cfg_get(root, "nope"), 0, 1, &v, &err), -ENOENT);
    CHECK_STR(err.message, "required field is missing");
    cfg_doc_free(doc);

    doc = load("[0x1F, 0o17, -12, +7, 9223372036854775807, -9223372036854775808, 9223372036854775808,"
               " 1_000, 0x, 1.0, '', 0b101]");
    root = cfg_doc_root(doc, 0);
    CHECK_INT(cfg_as_int(cfg_seq_item(root, 0), INT64_MIN, INT64_MAX, &v, &err), 0);
    CHECK_INT(v, 31);
    CHECK_INT(cfg_as_int(cfg_seq_item(root, 1), INT64_MIN, INT64_MAX, &v, &err), 0);
    CHECK_INT(v, 15);
    CHECK_INT(cfg_as_int(cfg_seq_item(root, 2), INT64_MIN, INT64_MAX, &v, &err), 0);
    CHECK_INT(v, -12);
    CHECK_INT(cfg_as_int(cfg_seq_item(root, 3), INT64_MIN, INT64_MAX, &v, &err), 0);
    CHECK_INT(v, 7);
    CHECK_INT(cfg_as_int(cfg_seq_item(root, 4), INT64_MIN, INT64_MAX, &v, &err), 0);
    CHECK(v == INT64_MAX);
    CHECK_INT(cfg_as_int(cfg_seq_item(root, 5), INT64_MIN, INT64_MAX, &v, &err), 0);
    CHECK(v == INT64_MIN);
    CHECK_INT(cfg_as_int(cfg_seq_item(root, 6), INT64_MIN, INT64_MAX, &v, &err), -EINVAL);
    CHECK_STR(fmt_err(&err), "t.yaml:1:66: [6]: must be between -9223372036854775808 and "
                             "9223372036854775807, got 9223372036854775808");
    for (size_t i = 7; i < 12; i++) {
        CHECK_INT(cfg_as_int(cfg_seq_item(root, i), INT64_MIN, INT64_MAX, &v, &err), -EINVAL);
        CHECK(strncmp(err.message, "expected an integer, got ", 25) == 0);
    }
    cfg_doc_free(doc);
}

static void test_bools_and_strings(void)
{
    struct cfg_doc *doc = load("a: true\nb: False\nc: TRUE\nd: yes\ne: \"true\"\nf: 1\ng: off\n"
                               "s1: hello\ns2: \"8080\"\ns3: 8080\ns4: 1.5\ns5: true\ns6: ~\ns7: .inf\n"
                               "s8: \"a\\0b\"\ns9: 1e3\ns10: 1.2.3\ns11: ''\ns12: -.5\ns13: 0x1G\n");
    const struct cfg_node *root = cfg_doc_root(doc, 0);
    struct cfg_error err;
    bool b = false;
    const char *s = NULL;

    CHECK_INT(cfg_as_bool(cfg_get(root, "a"), &b, &err), 0);
    CHECK(b);
    CHECK_INT(cfg_as_bool(cfg_get(root, "b"), &b, &err), 0);
    CHECK(!b);
    CHECK_INT(cfg_as_bool(cfg_get(root, "c"), &b, &err), 0);
    CHECK(b);
    CHECK_INT(cfg_as_bool(cfg_get(root, "d"), &b, &err), -EINVAL);
    CHECK_STR(fmt_err(&err), "t.yaml:4:4: d: expected true or false, got \"yes\" (yes/no/on/off "
                             "are strings in YAML 1.2, not booleans)");
    CHECK_INT(cfg_as_bool(cfg_get(root, "e"), &b, &err), -EINVAL);
    CHECK_STR(err.message, "expected true or false, got the quoted string \"true\"");
    CHECK_INT(cfg_as_bool(cfg_get(root, "f"), &b, &err), -EINVAL);
    CHECK_STR(err.message, "expected true or false, got \"1\"");
    CHECK_INT(cfg_as_bool(cfg_get(root, "g"), &b, &err), -EINVAL);

    CHECK_INT(cfg_as_string(cfg_get(root, "s1"), &s, &err), 0);
    CHECK_STR(s, "hello");
    CHECK_INT(cfg_as_string(cfg_get(root, "s2"), &s, &err), 0);
    CHECK_STR(s, "8080");
    CHECK_INT(cfg_as_string(cfg_get(root, "s11"), &s, &err), 0);
    CHECK_STR(s, "");
    CHECK_INT(cfg_as_string(cfg_get(root, "s10"), &s, &err), 0); /* not a number */
    CHECK_INT(cfg_as_string(cfg_get(root, "s13"), &s, &err), 0);
    CHECK_INT(cfg_as_string(cfg_get(root, "s3"), &s, &err), -EINVAL);
    CHECK_STR(fmt_err(&err), "t.yaml:10:5: s3: expected a string, got integer 8080 (quote it: \"8080\")");
    CHECK_INT(cfg_as_string(cfg_get(root, "s4"), &s, &err), -EINVAL);
    CHECK_STR(err.message, "expected a string, got number 1.5 (quote it: \"1.5\")");
    CHECK_INT(cfg_as_string(cfg_get(root, "s5"), &s, &err), -EINVAL);
    CHECK_STR(err.message, "expected a string, got boolean true (quote it: \"true\")");
    CHECK_INT(cfg_as_string(cfg_get(root, "s6"), &s, &err), -EINVAL);
    CHECK_STR(err.message, "expected a string, got null");
    CHECK_INT(cfg_as_string(cfg_get(root, "s7"), &s, &err), -EINVAL);
    CHECK_INT(cfg_as_string(cfg_get(root, "s9"), &s, &err), -EINVAL);
    CHECK_INT(cfg_as_string(cfg_get(root, "s12"), &s, &err), -EINVAL);
    CHECK_INT(cfg_as_string(cfg_get(root, "s8"), &s, &err), -EINVAL);
    CHECK_STR(err.message, "expected a string without NUL characters");
    CHECK_INT(cfg_scalar(cfg_get(root, "s8")).n, 3);
    CHECK_INT(cfg_as_string(root, &s, &err), -EINVAL);
    CHECK_STR(fmt_err(&err), "t.yaml:1:1: expected a string, got a mapping");
    cfg_doc_free(doc);

    /* What a message quotes is escaped and cut. */
    doc = load("k: \"line\\nbreak and a very long value that goes on and on and on\"\n");
    int64_t v;
    CHECK_INT(cfg_as_int(cfg_get(cfg_doc_root(doc, 0), "k"), 0, 1, &v, &err), -EINVAL);
    CHECK_STR(err.message, "expected an integer, got the quoted string "
                           "\"line\\nbreak and a very long value that go...\"");
    cfg_doc_free(doc);
}

static void test_durations_and_sizes(void)
{
    struct cfg_doc *doc = load("[250ms, 5s, 1m, 1h, 1m30s, 1.5s, 0, \"2h\", 0.5ms, 5, 5x, s, 1.s, "
                               "2562047788016h, 1h1h1h, 10ms5s]");
    const struct cfg_node *r = cfg_doc_root(doc, 0);
    struct cfg_error err;
    int64_t ms = -1;
    const int64_t want[] = { 250, 5000, 60000, 3600000, 90000, 1500, 0, 7200000 };
    for (size_t i = 0; i < 8; i++) {
        CHECK_INT(cfg_as_duration_ms(cfg_seq_item(r, i), 0, INT64_MAX, &ms, &err), 0);
        CHECK_INT(ms, want[i]);
    }
    CHECK_INT(cfg_as_duration_ms(cfg_seq_item(r, 8), 0, INT64_MAX, &ms, &err), -EINVAL);
    CHECK_STR(err.message, "duration 0.5ms is finer than a millisecond");
    CHECK_INT(cfg_as_duration_ms(cfg_seq_item(r, 9), 0, INT64_MAX, &ms, &err), -EINVAL);
    CHECK_STR(err.message, "expected a duration such as \"250ms\", \"5s\", \"1m\" or \"1h\", got \"5\" "
                           "(a number needs a unit)");
    CHECK_INT(cfg_as_duration_ms(cfg_seq_item(r, 10), 0, INT64_MAX, &ms, &err), -EINVAL);
    CHECK_STR(err.message, "expected a duration such as \"250ms\", \"5s\", \"1m\" or \"1h\", got \"5x\"");
    CHECK_INT(cfg_as_duration_ms(cfg_seq_item(r, 11), 0, INT64_MAX, &ms, &err), -EINVAL);
    CHECK_INT(cfg_as_duration_ms(cfg_seq_item(r, 12), 0, INT64_MAX, &ms, &err), 0); /* "1." is 1 */
    CHECK_INT(ms, 1000);
    CHECK_INT(cfg_as_duration_ms(cfg_seq_item(r, 13), 0, INT64_MAX, &ms, &err), -EINVAL);
    CHECK_STR(err.message, "must be between 0ms and 9223372036854775807ms, got 2562047788016h");
    CHECK_INT(cfg_as_duration_ms(cfg_seq_item(r, 14), 0, INT64_MAX, &ms, &err), 0);
    CHECK_INT(ms, 3 * 3600000);
    CHECK_INT(cfg_as_duration_ms(cfg_seq_item(r, 15), 0, INT64_MAX, &ms, &err), 0);
    CHECK_INT(ms, 5010);
    CHECK_INT(cfg_as_duration_ms(cfg_seq_item(r, 2), 1, 30000, &ms, &err), -EINVAL);
    CHECK_STR(fmt_err(&err), "t.yaml:1:13: [2]: must be between 1ms and 30s, got 1m");
    CHECK_INT(cfg_as_duration_ms(r, 1, 30000, &ms, &err), -EINVAL);
    CHECK_STR(err.message, "expected a duration such as \"250ms\", \"5s\", \"1m\" or \"1h\", got a sequence");
    cfg_doc_free(doc);

    doc = load("[512, 16KiB, 1MiB, 2Gi, 1kB, 3M, \"64KiB\", 0, 1.5MiB, 16 KiB, 16kib, KiB, "
               "16777216TiB, 1B]");
    r = cfg_doc_root(doc, 0);
    uint64_t sz = 0;
    const uint64_t wants[] = { 512, 16384, 1048576, 2147483648ull, 1000, 3000000, 65536, 0 };
    for (size_t i = 0; i < 8; i++) {
        CHECK_INT(cfg_as_size(cfg_seq_item(r, i), 0, UINT64_MAX, &sz, &err), 0);
        CHECK(sz == wants[i]);
    }
    for (size_t i = 8; i < 12; i++) {
        CHECK_INT(cfg_as_size(cfg_seq_item(r, i), 0, UINT64_MAX, &sz, &err), -EINVAL);
        CHECK(strncmp(err.message, "expected a size such as \"512\", \"16KiB\" or \"1MiB\", got \"",
                      55) == 0);
    }
    CHECK_INT(cfg_as_size(cfg_seq_item(r, 12), 0, UINT64_MAX, &sz, &err), -EINVAL);
    CHECK_STR(err.message, "must be between 0 and 18446744073709551615, got 16777216TiB");
    CHECK_INT(cfg_as_size(cfg_seq_item(r, 13), 0, UINT64_MAX, &sz, &err), 0);
    CHECK(sz == 1);
    CHECK_INT(cfg_as_size(cfg_seq_item(r, 2), 1024, 65536, &sz, &err), -EINVAL);
    CHECK_STR(fmt_err(&err), "t.yaml:1:14: [2]: must be between 1KiB and 64KiB, got 1MiB");
    cfg_doc_free(doc);
}

static void test_need(void)
{
    struct cfg_doc *doc = load("spec:\n  template:\n    x: 1\n  list: [a]\n");
    const struct cfg_node *root = cfg_doc_root(doc, 0), *n = NULL;
    struct cfg_error err;
    CHECK_INT(cfg_need(root, "spec.template.x", &n, &err), 0);
    CHECK_STRV(cfg_scalar(n), "1");
    CHECK_INT(cfg_need(root, "spec.replicas", &n, &err), -ENOENT);
    CHECK(n == NULL);
    CHECK_STR(fmt_err(&err), "t.yaml:2:3: spec.replicas: required field is missing");
    CHECK_INT(cfg_need(root, "spec.template.x.y", &n, &err), -ENOENT);
    CHECK_STR(fmt_err(&err), "t.yaml:3:8: spec.template.x.y: expected a mapping, got a scalar");
    CHECK_INT(cfg_need(root, "spec.template[0]", &n, &err), -ENOENT);
    CHECK_STR(fmt_err(&err), "t.yaml:3:5: spec.template[0]: expected a sequence, got a mapping");
    CHECK_INT(cfg_need(root, "spec.list[3]", &n, &err), -ENOENT);
    CHECK_STR(fmt_err(&err), "t.yaml:4:9: spec.list[3]: required field is missing");
    /* Relative to an inner node, the field is still the full path. */
    CHECK_INT(cfg_need(cfg_get(root, "spec"), "template.z", &n, &err), -ENOENT);
    CHECK_STR(fmt_err(&err), "t.yaml:3:5: spec.template.z: required field is missing");
    CHECK_INT(cfg_need(root, "spec..x", &n, &err), -EINVAL);
    CHECK_STR(err.message, "malformed field path \"spec..x\"");
    cfg_doc_free(doc);
}

static void test_env_overrides(void)
{
    struct cfg_doc *doc = load("server:\n"
                               "  listen: 127.0.0.1:8080\n"
                               "  maxConns: 100\n"
                               "  tls:\n"
                               "routes:\n"
                               "  - path: /a\n"
                               "  - path: /b\n"
                               "name: \"x\"\n");
    struct cfg_node *root = cfg_doc_root(doc, 0);
    struct cfg_error err;
    char *env[] = {
        "PATH=/usr/bin",
        "STRATA_SERVER__LISTEN=0.0.0.0:9000",
        "STRATA_SERVER__MAXCONNS=500",          /* matches maxConns case-insensitively */
        "STRATA_SERVER__TLS__CERT=/etc/c.pem",  /* tls was null: becomes a map */
        "STRATA_LOG__LEVEL=debug",              /* created */
        "STRATA_ROUTES__1__PATH=/b2",           /* sequence index */
        "STRATA_NAME=8080",                     /* untyped text: a string and an int */
        "STRATAX=ignored",
        "STRATA_=ignored too",
        "OTHER_STRATA_SERVER__LISTEN=ignored",
        NULL,
    };
    CHECK_INT(cfg_apply_env(root, "STRATA_", env, &err), 0);
    const struct cfg_node *n = cfg_get(root, "server.listen");
    CHECK_STRV(cfg_scalar(n), "0.0.0.0:9000");
    CHECK_STR(cfg_file(n), "env STRATA_SERVER__LISTEN");
    CHECK_INT(cfg_line(n), 0);
    int64_t v = 0;
    CHECK_INT(cfg_as_int(cfg_get(root, "server.maxConns"), 1, 1000, &v, &err), 0);
    CHECK_INT(v, 500);
    CHECK(cfg_get(root, "server.maxconns") == NULL); /* the file's spelling stays */
    CHECK_STRV(cfg_scalar(cfg_get(root, "server.tls.cert")), "/etc/c.pem");
    CHECK_STRV(cfg_scalar(cfg_get(root, "log.level")), "debug");
    CHECK_STRV(cfg_scalar(cfg_get(root, "routes[1].path")), "/b2");
    CHECK_STRV(cfg_scalar(cfg_get(root, "routes[0].path")), "/a");
    const char *s = NULL;
    CHECK_INT(cfg_as_string(cfg_get(root, "name"), &s, &err), 0);
    CHECK_STR(s, "8080");
    CHECK_INT(cfg_as_int(cfg_get(root, "name"), 0, 65535, &v, &err), 0);
    CHECK_INT(v, 8080);
    CHECK_INT(cfg_count(root), 4);
    CHECK_STRV(cfg_scalar(cfg_map_key(root, 3)), "log"); /* appended, lower-cased */

    /* Errors name the variable as the file and the target as the field. */
    CHECK_INT(cfg_as_int(cfg_get(root, "server.listen"), 1, 2, &v, &err), -EINVAL);
    CHECK_STR(fmt_err(&err), "env STRATA_SERVER__LISTEN: server.listen: expected an integer, got "
                             "\"0.0.0.0:9000\"");

#define ENV_FAILS(var, want)                                                  \
    do {                                                                      \
        char *one[] = { var, NULL };                                          \
        CHECK_INT(cfg_apply_env(root, "STRATA_", one, &err), -EINVAL);        \
        CHECK_STR(fmt_err(&err), want);                                       \
    } while (0)

    ENV_FAILS("STRATA_SERVER=x", "env STRATA_SERVER: server: server is a mapping at t.yaml:2:3; "
                                 "cannot replace it from the environment");
    ENV_FAILS("STRATA_SERVER__LISTEN__HOST=x",
              "env STRATA_SERVER__LISTEN__HOST: server.listen.host: server.listen is a scalar at "
              "env STRATA_SERVER__LISTEN:0:0; cannot set keys under it from the environment");
    ENV_FAILS("STRATA_ROUTES__5__PATH=x",
              "env STRATA_ROUTES__5__PATH: routes.5.path: routes has 2 items; there is no item 5");
    ENV_FAILS("STRATA_ROUTES__FIRST=x", "env STRATA_ROUTES__FIRST: routes.first: routes is a sequence: "
                                        "expected an item number, got \"FIRST\"");
    ENV_FAILS("STRATA_SERVER____X=x", "env STRATA_SERVER____X: server..x: empty key in the variable "
                                      "name (\"__\" at the start or end, or doubled)");
    ENV_FAILS("STRATA_SERVER__=x", "env STRATA_SERVER__: server.: empty key in the variable name "
                                   "(\"__\" at the start or end, or doubled)");
    cfg_doc_free(doc);

    /* An empty document becomes a map; a sequence root cannot take keys. */
    doc = load("---\n---\n- 1\n");
    char *env2[] = { "APP_PORT=1", NULL };
    CHECK_INT(cfg_apply_env(cfg_doc_root(doc, 0), "APP_", env2, &err), 0);
    CHECK_STRV(cfg_scalar(cfg_get(cfg_doc_root(doc, 0), "port")), "1");
    CHECK_INT(cfg_apply_env(cfg_doc_root(doc, 1), "APP_", env2, &err), -EINVAL);
    CHECK_STR(fmt_err(&err), "env APP_PORT: port: the document root is a sequence; environment "
                             "overrides need a mapping");
    cfg_doc_free(doc);

    /* envp NULL reads the process environment. */
    doc = load("a: 1\n");
    setenv("STRATA_TEST_CFG__X", "42", 1);
    CHECK_INT(cfg_apply_env(cfg_doc_root(doc, 0), "STRATA_TEST_CFG__", NULL, &err), 0);
    CHECK_STRV(cfg_scalar(cfg_get(cfg_doc_root(doc, 0), "x")), "42");
    unsetenv("STRATA_TEST_CFG__X");
    cfg_doc_free(doc);
}

static void test_error_format(void)
{
    struct cfg_error e = { .file = "deploy/x.yaml", .line = 12, .column = 7,
                           .field = "spec.replicas", .message = "expected an integer, got \"three\"" };
    char buf[300];
    CHECK_INT(cfg_error_format(&e, buf, sizeof buf),
              strlen("deploy/x.yaml:12:7: spec.replicas: expected an integer, got \"three\""));
    CHECK_STR(buf, "deploy/x.yaml:12:7: spec.replicas: expected an integer, got \"three\"");
    e.column = 0;
    e.field[0] = '\0';
    cfg_error_format(&e, buf, sizeof buf);
    CHECK_STR(buf, "deploy/x.yaml:12: expected an integer, got \"three\"");
    e.line = 0;
    e.file[0] = '\0';
    cfg_error_format(&e, buf, sizeof buf);
    CHECK_STR(buf, "<input>: expected an integer, got \"three\"");
    CHECK_INT(cfg_error_format(&e, buf, 4), (int)strlen("<input>: expected an integer, got \"three\""));
    CHECK_STR(buf, "<in");
}

static void test_keys_are_strings_and_quotes_are_cut_cleanly(void)
{
    struct cfg_doc *doc = load("null: 1\n8080: 2\nk: ééééééééééééééééééééééééé\n");
    const struct cfg_node *root = cfg_doc_root(doc, 0);
    struct cfg_error err;
    const char *s = NULL;
    int64_t v;
    CHECK_INT(cfg_as_string(cfg_map_key(root, 0), &s, &err), 0);
    CHECK_STR(s, "null");
    CHECK_INT(cfg_as_string(cfg_map_key(root, 1), &s, &err), 0);
    CHECK_STR(s, "8080");
    /* 25 two-byte characters: cut at 40 bytes, between characters. */
    CHECK_INT(cfg_as_int(cfg_map_get(root, "k"), 0, 1, &v, &err), -EINVAL);
    CHECK_STR(err.message, "expected an integer, got \"éééééééééééééééééééé...\"");
    cfg_doc_free(doc);
}

static void test_key_path_escaping(void)
{
    /* A key with a newline cannot forge a second line in an error. */
    struct cfg_doc *doc = load("\"a\\nb\": {c: x}\n");
    struct cfg_error err;
    int64_t v;
    const struct cfg_node *m = cfg_map_value(cfg_doc_root(doc, 0), 0);
    CHECK_INT(cfg_as_int(cfg_map_get(m, "c"), 0, 1, &v, &err), -EINVAL);
    CHECK_STR(err.field, "a\\nb.c");
    cfg_doc_free(doc);
}

int main(void)
{
    RUN(test_tree_and_locations);
    RUN(test_multi_document);
    RUN(test_load_errors);
    RUN(test_duplicates_in_large_maps);
    RUN(test_bounds);
    RUN(test_load_file);
    RUN(test_ints);
    RUN(test_bools_and_strings);
    RUN(test_durations_and_sizes);
    RUN(test_need);
    RUN(test_env_overrides);
    RUN(test_error_format);
    RUN(test_keys_are_strings_and_quotes_are_cut_cleanly);
    RUN(test_key_path_escaping);
    return check_done();
}
