/* json.h — request and response bodies on top of jansson.
 *
 * Three jobs:
 *   - parse a request body strictly (json_parse_body): valid UTF-8 only, no
 *     duplicate keys, no NUL in strings, nothing after the value, a nesting
 *     bound of our own, numbers that fit (int64 for integers, double for
 *     reals); every failure says what and where (line, column, byte offset);
 *   - validate fields with messages a client can act on (json_get_*,
 *     json_check_only_keys), each failure carrying a reason that maps to an
 *     HTTP status (400 for bodies that are not JSON, 422 for JSON that breaks
 *     the schema) and a strata error code;
 *   - write JSON out: compact dumps into a struct buf, the standard error
 *     body, and a JSON string escaper that the logger shares.
 *
 * jansson owns the json_t values: json_parse_body hands out a new reference
 * (json_decref it); getters hand out borrowed pointers valid as long as the
 * parent value. Every function is thread-safe in the sense that it keeps no
 * global state; a json_t is not safe to mutate from two threads at once. */
#ifndef STRATA_JSON_H
#define STRATA_JSON_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"
#include "core/str.h"

/* Nesting used when json_parse_body gets max_depth 0. 32: the deepest body
 * our APIs accept is an order with items with attributes (depth 3); 32 leaves
 * room for opaque client metadata without letting a body cost stack. */
#define JSON_BODY_DEFAULT_DEPTH 32
/* jansson refuses deeper input on its own (JSON_PARSER_MAX_DEPTH). */
#define JSON_BODY_MAX_DEPTH 2048

enum json_reason {
    JSON_REASON_NONE = 0,
    JSON_REASON_SYNTAX,        /* 400: not JSON (bad token, bad UTF-8, NUL, trailing data, empty) */
    JSON_REASON_DUPLICATE_KEY, /* 400: an object repeats a key */
    JSON_REASON_TOO_DEEP,      /* 400: nesting past max_depth */
    JSON_REASON_NUMBER_RANGE,  /* 400: integer outside int64 or real outside double */
    JSON_REASON_NOT_OBJECT,    /* 422: getters called on something that is not an object */
    JSON_REASON_MISSING,       /* 422: a required field is absent or null */
    JSON_REASON_TYPE,          /* 422: a field has the wrong JSON type */
    JSON_REASON_RANGE,         /* 422: a value, length or item count is out of bounds */
    JSON_REASON_UNKNOWN_FIELD, /* 422: a field the schema does not know */
    JSON_REASON_NOMEM,         /* 503: allocation failed */
};

struct json_error {
    enum json_reason reason;
    int line;          /* 1-based, 0 when not a parse error */
    int column;        /* 1-based character column, 0 when not a parse error */
    size_t position;   /* byte offset into the body where the error was detected */
    char field[128];   /* the field a validation error is about, "" otherwise */
    char message[256]; /* human-readable, names the field; safe to send to clients */
};

/* The HTTP status for a reason: 400, 422 or 503 (0 for JSON_REASON_NONE). */
int json_reason_status(enum json_reason reason);
/* The strata error code for a reason, for json_error_body: "invalid_json",
 * "validation_failed" or "unavailable" (static strings; "" for NONE). */
const char *json_reason_code(enum json_reason reason);

/* Parses body as one JSON value (any type: RFC 8259 allows scalars at the top;
 * the getters reject non-objects). max_depth bounds array/object nesting
 * ({} is depth 1, [[1]] depth 2): 0 means JSON_BODY_DEFAULT_DEPTH, values
 * above JSON_BODY_MAX_DEPTH are clamped to it. Whitespace around the value is
 * allowed, anything else after it is not.
 * On success returns 0 and *out is a new reference the caller json_decref()s.
 * On failure returns -EINVAL (or -ENOMEM), *out is NULL and err (if not NULL)
 * has reason, line, column, position and a message such as
 * "duplicate object key \"a\" at line 1, column 10". Thread-safe. */
int json_parse_body(struct str body, size_t max_depth, json_t **out, struct json_error *err);

/* Field getters. obj must be a JSON object (else JSON_REASON_NOT_OBJECT,
 * "request body must be a JSON object"). A field that is absent or JSON null
 * counts as missing: if required, that is JSON_REASON_MISSING ("\"email\" is
 * required"); if optional, the getter returns 0 and leaves *out unchanged, so
 * set the default first. Errors return -EINVAL and fill err (reason, field,
 * message naming the field in double quotes). Returned pointers are borrowed
 * from obj. Thread-safe for concurrent readers of the same obj. */

/* A string of min_len..max_len characters (Unicode code points, not bytes).
 * Messages: "must be a string", "must be at least N characters", "must be at
 * most N characters". */
int json_get_string(const json_t *obj, const char *key, bool required, size_t min_len,
                    size_t max_len, const char **out, struct json_error *err);
/* A JSON integer (not a real: 5.0 is refused) in [min, max].
 * Messages: "must be an integer", "must be between MIN and MAX" (or "at
 * least MIN" / "at most MAX" when the other bound is the type's limit). */
int json_get_int(const json_t *obj, const char *key, bool required, json_int_t min,
                 json_int_t max, json_int_t *out, struct json_error *err);
/* true or false (not 0/1, not "true"). Message: "must be true or false". */
int json_get_bool(const json_t *obj, const char *key, bool required, bool *out,
                  struct json_error *err);
/* An object. Message: "must be an object". */
int json_get_object(const json_t *obj, const char *key, bool required, json_t **out,
                    struct json_error *err);
/* An array of min_items..max_items elements. Messages: "must be an array",
 * "must have at least N items", "must have at most N items". */
int json_get_array(const json_t *obj, const char *key, bool required, size_t min_items,
                   size_t max_items, json_t **out, struct json_error *err);

/* Refuses any key of obj not in the NULL-terminated list allowed, reporting
 * the first such key in document order: JSON_REASON_UNKNOWN_FIELD,
 * "unknown field \"foo\"" (a client's key is cut to 64 bytes and escaped in
 * the message). 0 when every key is allowed; -EINVAL otherwise. */
int json_check_only_keys(const json_t *obj, const char *const *allowed, struct json_error *err);

/* Appends v in compact form (no spaces, keys in insertion order, non-ASCII
 * as UTF-8, any value type allowed at the top). Either the whole text is
 * appended or nothing: -ENOBUFS past the buffer's bound, -ENOMEM, -EINVAL if
 * jansson cannot encode v. Not thread-safe for b. */
int json_dump_to_buf(const json_t *v, struct buf *b);

/* Appends {"error":{"code":"...","message":"...","request_id":"..."}} with
 * each string escaped (a NULL argument is written as ""). No jansson
 * allocation. All or nothing: -ENOBUFS / -ENOMEM as buf_reserve. */
int json_error_body(struct buf *b, const char *code, const char *message, const char *request_id);

/* Appends s as a quoted JSON string (see json_escape). All or nothing. */
int json_append_string(struct buf *b, struct str s);

/* Writes the escaped inside of a JSON string for s (no quotes) into dst,
 * which has room for cap bytes (dst may be NULL with any cap to measure).
 * Escapes '"', '\\' and control characters (\n \r \t \b \f, others as
 * \u00XX); copies valid UTF-8 as is; writes \ufffd for each byte that is not
 * part of a valid UTF-8 sequence (overlongs, surrogates, > U+10FFFF). Stops
 * before an escape or a multi-byte sequence that would not fit, so the output
 * is always a valid prefix. Returns the bytes written; *consumed (if not NULL)
 * gets the input bytes it covers (s.n when everything fit). Thread-safe. */
size_t json_escape(char *dst, size_t cap, struct str s, size_t *consumed);

/* Length of the valid UTF-8 sequence at p[0..n), 1..4, or 0 when the bytes
 * there do not start a valid sequence. Thread-safe. */
size_t json_utf8_seq_len(const unsigned char *p, size_t n);

#endif
