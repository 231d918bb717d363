/* cfg.h — YAML configuration as a typed tree that remembers where
 * everything came from.
 *
 * Manifests and config files are parsed with libyaml's event API into nodes
 * that carry file, line and column (1-based, columns in characters), so that
 * every complaint about a value can point at it:
 *
 *   deploy/x.yaml:12:7: spec.replicas: expected an integer, got "three"
 *
 * Semantics (YAML 1.2 core schema, which is what Kubernetes and Istio use):
 *   - a plain (unquoted) scalar that is "", ~, null, Null or NULL is a
 *     CFG_NULL node; every other scalar is CFG_SCALAR and keeps its text and
 *     whether it was written plain or not (quoted, block |, folded >, or
 *     tagged !!str all count as quoted): `port: "8080"` is a string, `port:
 *     8080` an integer. Mapping keys are always CFG_SCALAR strings.
 *   - booleans are true/false (also True/TRUE/False/FALSE), never yes/no/on/off;
 *   - maps keep their entries in document order; a key repeated in one map is
 *     an error naming both places; only scalar keys are accepted;
 *   - multi-document streams (---) give one root per document; an empty
 *     document ("---" followed by nothing) has a CFG_NULL root, a stream with
 *     nothing but comments has no documents;
 *   - anchors (&a) are accepted and ignored; aliases (*a) are refused. With
 *     no aliases there is no expansion, so no "billion laughs", and a tree is
 *     never bigger than its file. Kubernetes manifests do not use them.
 *   - explicit tags other than !!str are refused (no custom types).
 * Bounds, each an error and never a crash: file 16 MiB, nesting 64 levels,
 * 1,000,000 nodes per stream, scalars 1 MiB.
 *
 * Memory: one arena per loaded stream; every node, string and location lives
 * in it until cfg_doc_free. Nothing here keeps global state: different docs
 * may be used from different threads; one doc is not safe to use from two
 * threads while cfg_apply_env modifies it (reading concurrently is fine).
 *
 * Errors: functions return 0 or a negative errno (-EINVAL for content,
 * -EFBIG for the size bound, -ENOMEM, or the -errno of open/read) and fill
 * the struct cfg_error passed in (which may be NULL). */
#ifndef STRATA_CFG_H
#define STRATA_CFG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/str.h"

/* 16 MiB: ten times the largest manifest bundle we ship; past it, something
 * other than configuration is being fed to us. */
#define CFG_MAX_FILE (16u << 20)
/* 64 levels: Kubernetes manifests nest about 12 deep (a Deployment's
 * container probe's httpGet's header list). */
#define CFG_MAX_DEPTH 64
/* ~100 bytes a node: the tree of a full-size stream stays under 100 MiB. */
#define CFG_MAX_NODES 1000000
/* 1 MiB: a ConfigMap value (Kubernetes caps a whole ConfigMap at 1 MiB). */
#define CFG_MAX_SCALAR (1u << 20)

enum cfg_kind {
    CFG_NULL,
    CFG_SCALAR,
    CFG_MAP,
    CFG_SEQ,
};

struct cfg_doc;
struct cfg_node;

struct cfg_error {
    char file[256];    /* file name, or "env NAME" for environment overrides */
    int line;          /* 1-based; 0 when there is no line (env, open errors) */
    int column;        /* 1-based characters; 0 when unknown */
    char field[256];   /* path such as spec.containers[0].image, "" when none */
    char message[256]; /* what is wrong */
};

/* Reads and parses the YAML stream in path (at most CFG_MAX_FILE bytes).
 * On success *out is a new doc to release with cfg_doc_free. On failure *out
 * is NULL, err names the file (and line, column, field when known) and the
 * return is -errno from open/read, -EFBIG, -EINVAL or -ENOMEM. */
int cfg_load_file(const char *path, struct cfg_doc **out, struct cfg_error *err);
/* The same for text[0..len) (need not be NUL-terminated), reported as file
 * `name` (NULL: "<string>"). The doc keeps copies of what it needs: text may
 * be freed once this returns. */
int cfg_load_string(const char *name, const char *text, size_t len, struct cfg_doc **out,
                    struct cfg_error *err);
/* Frees the doc, its nodes and strings. NULL is a no-op. */
void cfg_doc_free(struct cfg_doc *doc);

/* Number of documents in the stream. */
size_t cfg_doc_count(const struct cfg_doc *doc);
/* Root node of document i (0-based), or NULL when i is out of range. Owned by
 * the doc. Not const so that cfg_apply_env can be applied to it. */
struct cfg_node *cfg_doc_root(const struct cfg_doc *doc, size_t i);

/* ---- walking (all return values owned by the doc; NULL node → NULL/0) -- */

enum cfg_kind cfg_kind(const struct cfg_node *n);
/* "null", "scalar", "mapping", "sequence". */
const char *cfg_kind_name(enum cfg_kind kind);
/* Map entries or sequence items; 0 for scalars and nulls. */
size_t cfg_count(const struct cfg_node *n);
/* Key node of map entry i (a CFG_SCALAR), or NULL. */
const struct cfg_node *cfg_map_key(const struct cfg_node *n, size_t i);
/* Value node of map entry i, or NULL. */
const struct cfg_node *cfg_map_value(const struct cfg_node *n, size_t i);
/* Item i of a sequence, or NULL. */
const struct cfg_node *cfg_seq_item(const struct cfg_node *n, size_t i);
/* The text of a scalar or null node (NUL-terminated; may also contain NULs
 * from "\0" escapes, hence the length); STR_NULL for maps and sequences. */
struct str cfg_scalar(const struct cfg_node *n);
/* True when the scalar was not plain: quoted, block or !!str. */
bool cfg_is_quoted(const struct cfg_node *n);
/* Where the node starts: for a map, its first key; for a block sequence, its
 * first "-"; for a quoted scalar, the quote. */
const char *cfg_file(const struct cfg_node *n);
int cfg_line(const struct cfg_node *n);
int cfg_column(const struct cfg_node *n);
/* Writes the node's path from its document root ("spec.containers[0].image",
 * "" for the root) into buf, cut to fit; returns the full length, as
 * snprintf does. */
size_t cfg_path(const struct cfg_node *n, char *buf, size_t size);

/* The value for exactly `key` in map n, or NULL (not a map, or no such key). */
const struct cfg_node *cfg_map_get(const struct cfg_node *n, const char *key);
/* Follows a path of map keys and sequence indexes from n:
 * "spec.template.spec.containers[0].image", "[2].name". NULL when any step
 * is missing or of the wrong kind, or the path is malformed. Keys containing
 * '.' or '[' cannot be addressed this way: use cfg_map_get. */
const struct cfg_node *cfg_get(const struct cfg_node *n, const char *path);
/* cfg_get for a required field: 0 and *out set, or -ENOENT with err at the
 * deepest node reached: "x.yaml:3:3: spec.replicas: required field is
 * missing", or "expected a mapping, got a sequence" when the path runs
 * through something that is not a map. */
int cfg_need(const struct cfg_node *n, const char *path, const struct cfg_node **out,
             struct cfg_error *err);

/* ---- typed values ------------------------------------------------------ */
/* Each returns 0 and sets *out, or -EINVAL (and, for a NULL node, -ENOENT)
 * with err located at the node, its path as the field, and a message that
 * quotes what was found. Values set by cfg_apply_env are untyped text and
 * parse the same way whatever their form. */

/* A plain integer (decimal, 0x hex or 0o octal, optional sign) in
 * [min, max]. Messages: expected an integer, got "three" / got the quoted
 * string "8080" / must be between 1 and 10, got 50. */
int cfg_as_int(const struct cfg_node *n, int64_t min, int64_t max, int64_t *out,
               struct cfg_error *err);
/* Plain true or false (True/TRUE/False/FALSE too). yes/no/on/off are
 * strings in YAML 1.2 and the message says so. */
int cfg_as_bool(const struct cfg_node *n, bool *out, struct cfg_error *err);
/* Any quoted scalar, or a plain one that is not a null, boolean, integer or
 * float (Kubernetes refuses `image: 1.0` for a string too); the message
 * suggests quoting. Strings containing NUL are refused. *out is the doc's. */
int cfg_as_string(const struct cfg_node *n, const char **out, struct cfg_error *err);
/* A duration: one or more <number><unit> with units ms, s, m, h and
 * optional decimals ("250ms", "5s", "1m30s", "1.5h"); "0" alone is zero. A
 * bare number is refused (is 5 seconds or milliseconds?), as is anything
 * finer than 1ms. Result in milliseconds, in [min_ms, max_ms]. */
int cfg_as_duration_ms(const struct cfg_node *n, int64_t min_ms, int64_t max_ms, int64_t *out,
                       struct cfg_error *err);
/* A size in bytes: a plain integer, or an integer with a unit: B; binary
 * KiB MiB GiB TiB (also Ki Mi Gi Ti, as in Kubernetes quantities); decimal
 * kB/KB MB GB TB (also k M G T). No fractions, no spaces. In [min, max]. */
int cfg_as_size(const struct cfg_node *n, uint64_t min, uint64_t max, uint64_t *out,
                struct cfg_error *err);

/* ---- environment overrides (12-factor) --------------------------------- */

/* For each NAME=VALUE in envp (NULL: environ) where NAME starts with prefix
 * (case-sensitive, e.g. "STRATA_"): the rest of NAME, split on "__" and
 * lower-cased, is a path of keys from root ("SERVER__MAX_CONNS" →
 * server.max_conns). Keys match existing keys ASCII case-insensitively (the
 * first match in document order wins); missing maps and keys are created;
 * a segment of digits indexes an existing sequence item. The value replaces
 * a scalar or null (or fills a new key) as untyped text whose location is
 * file "env NAME", line 0. root must be a map or null (null becomes a map).
 * Errors (-EINVAL, err->file "env NAME"): an empty segment, replacing or
 * descending into something of the wrong kind ("server is a mapping at
 * x.yaml:3:1; cannot set it from the environment"), a sequence index out of
 * range, the depth/node/scalar bounds. Variables are applied in envp order;
 * an error stops at that variable, with earlier ones applied. */
int cfg_apply_env(struct cfg_node *root, const char *prefix, char *const *envp,
                  struct cfg_error *err);

/* ---- errors ------------------------------------------------------------ */

/* Formats "file:line:column: field: message" (parts that are unknown are
 * left out: "env STRATA_X: server.port: ..." has no line) into buf, NUL-
 * terminated and cut to fit. Returns the full length, as snprintf does. */
int cfg_error_format(const struct cfg_error *err, char *buf, size_t size);

#endif
