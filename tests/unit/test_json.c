/* JSON bodies: strict parsing with located errors, field validation with
 * client-facing messages, compact dumps, the strata error body. */
#include <errno.h>
#include <stdlib.h>

#include "check.h"
#include "core/json.h"

static json_t *parse_ok(const char *text)
{
    json_t *v = NULL;
    struct json_error err;
    int rc = json_parse_body(str_from_cstr(text), 0, &v, &err);
    if (rc)
        fprintf(stderr, "unexpected parse error: %s\n", err.message);
    CHECK_INT(rc, 0);
    CHECK_INT(err.reason, JSON_REASON_NONE);
    return v;
}

/* Parses text (n bytes) expecting failure; checks reason and message. */
static void parse_fails(const char *text, size_t n, size_t depth, enum json_reason reason,
                        const char *message)
{
    json_t *v = (json_t *)1;
    struct json_error err;
    CHECK_INT(json_parse_body(str_make(text, n), depth, &v, &err), -EINVAL);
    CHECK(v == NULL);
    CHECK_INT(err.reason, reason);
    CHECK_STR(err.message, message);
    CHECK_INT(json_reason_status(err.reason), 400);
    CHECK_STR(json_reason_code(err.reason), "invalid_json");
}

#define FAILS(lit, depth, reason, msg) parse_fails((lit), sizeof(lit) - 1, (depth), (reason), (msg))

static void test_parse_accepts(void)
{
    json_t *v = parse_ok("  {\"b\":1,\"a\":[true,null,\"x\\u00e9\"],\"n\":-9223372036854775808}\r\n");
    CHECK(json_is_object(v));
    CHECK(json_integer_value(json_object_get(v, "n")) == INT64_MIN);
    struct buf b;
    buf_init(&b, 1024);
    CHECK_INT(json_dump_to_buf(v, &b), 0);
    /* compact, keys in document order, UTF-8 not \u-escaped */
    CHECK_STRV(buf_str(&b), "{\"b\":1,\"a\":[true,null,\"xé\"],\"n\":-9223372036854775808}");
    buf_free(&b);
    json_decref(v);

    /* Scalars at the top are JSON too (RFC 8259). */
    v = parse_ok("\"just a string\"");
    CHECK(json_is_string(v));
    json_decref(v);
    v = parse_ok("1e-400"); /* underflow rounds to 0: not an error */
    CHECK(json_is_real(v));
    json_decref(v);
}

static void test_parse_errors(void)
{
    FAILS("{\"a\":1,\"a\":2}", 0, JSON_REASON_DUPLICATE_KEY,
          "duplicate object key \"a\" at line 1, column 10");
    FAILS("{\"a\":99999999999999999999}", 0, JSON_REASON_NUMBER_RANGE,
          "integer 99999999999999999999 does not fit in 64 bits at line 1, column 25");
    FAILS("[9223372036854775808]", 0, JSON_REASON_NUMBER_RANGE,
          "integer 9223372036854775808 does not fit in 64 bits at line 1, column 20");
    FAILS("{\"a\":1e400}", 0, JSON_REASON_NUMBER_RANGE,
          "number 1e400 is out of range at line 1, column 10");
    FAILS("{\"a\":\"\xff\"}", 0, JSON_REASON_SYNTAX,
          "invalid UTF-8 (unable to decode byte 0xff) at line 1, column 6");
    FAILS("{\"a\":\"\xc0\xaf\"}", 0, JSON_REASON_SYNTAX,
          "invalid UTF-8 (unable to decode byte 0xc0) at line 1, column 6");
    FAILS("{\"a\":\"\\u0000\"}", 0, JSON_REASON_SYNTAX,
          "\\u0000 is not allowed in strings at line 1, column 13");
    FAILS("{\"a\":\"x\0y\"}", 0, JSON_REASON_SYNTAX, "NUL byte in a string at line 1, column 7");
    FAILS("{\"a\":\"\\ud800\"}", 0, JSON_REASON_SYNTAX,
          "invalid Unicode '\\uD800' near '\"\\ud800\"' at line 1, column 13");
    FAILS("{\"a\":1} x", 0, JSON_REASON_SYNTAX,
          "unexpected data after the JSON value at line 1, column 9");
    FAILS("{\"a\":1}{}", 0, JSON_REASON_SYNTAX,
          "unexpected data after the JSON value at line 1, column 8");
    FAILS("{\"a\":\n  tru}", 0, JSON_REASON_SYNTAX, "invalid token near 'tru' at line 2, column 5");
    FAILS("{\"a\":[1,2", 0, JSON_REASON_SYNTAX, "unexpected end of input at line 1, column 9");
    FAILS("", 0, JSON_REASON_SYNTAX, "empty body");
    FAILS(" \r\n\t", 0, JSON_REASON_SYNTAX, "empty body");
    parse_fails(NULL, 0, 0, JSON_REASON_SYNTAX, "empty body");

    /* Without an err the return codes still tell. */
    json_t *v;
    CHECK_INT(json_parse_body(STR_LIT("nope"), 0, &v, NULL), -EINVAL);
    CHECK(v == NULL);
}

static void test_parse_depth(void)
{
    FAILS("[[[[1]]]]", 3, JSON_REASON_TOO_DEEP, "nesting deeper than 3 levels at line 1, column 4");
    FAILS("{\"a\":\n {\"é\":{\"b\":[]}}}", 3, JSON_REASON_TOO_DEEP,
          "nesting deeper than 3 levels at line 2, column 12");
    struct json_error err;
    json_t *v;
    CHECK_INT(json_parse_body(STR_LIT("[[[[1]]]]"), 3, &v, &err), -EINVAL);
    CHECK_INT(err.position, 3);
    /* Exactly at the bound is fine, and brackets inside strings do not count. */
    v = NULL;
    CHECK_INT(json_parse_body(STR_LIT("[[[\"[[[[\\\"{{{{\"]]]"), 3, &v, &err), 0);
    json_decref(v);

    /* The default bound is JSON_BODY_DEFAULT_DEPTH; jansson's own 2048 is the
     * ceiling for any requested depth. */
    enum { N = 3000 };
    char *deep = malloc(2 * N);
    for (int i = 0; i < N; i++) {
        deep[i] = '[';
        deep[2 * N - 1 - i] = ']';
    }
    struct str at_bound = str_make(deep + N - JSON_BODY_DEFAULT_DEPTH, 2 * JSON_BODY_DEFAULT_DEPTH);
    CHECK_INT(json_parse_body(at_bound, 0, &v, &err), 0);
    json_decref(v);
    CHECK_INT(json_parse_body(str_make(deep + N - 33, 66), 0, &v, &err), -EINVAL);
    CHECK_INT(err.reason, JSON_REASON_TOO_DEEP);
    CHECK_INT(json_parse_body(str_make(deep, 2 * N), 100000, &v, &err), -EINVAL);
    CHECK_STR(err.message, "nesting deeper than 2048 levels at line 1, column 2049");
    free(deep);
}

static void test_getters(void)
{
    json_t *o = parse_ok("{\"email\":\"a@b.c\",\"name\":\"Zoë\",\"qty\":5,\"real\":5.0,\"ok\":true,"
                         "\"nil\":null,\"addr\":{},\"items\":[1,2,3],\"s\":\"5\"}");
    struct json_error err;
    const char *s = "default";
    json_int_t i = -1;
    bool b = false;
    json_t *sub = NULL;

    CHECK_INT(json_get_string(o, "email", true, 3, 254, &s, &err), 0);
    CHECK_STR(s, "a@b.c");
    /* Lengths are characters: "Zoë" is 3 characters, 4 bytes. */
    CHECK_INT(json_get_string(o, "name", true, 3, 3, &s, &err), 0);
    CHECK_STR(s, "Zoë");
    CHECK_INT(json_get_int(o, "qty", true, 1, 10, &i, &err), 0);
    CHECK_INT(i, 5);
    CHECK_INT(json_get_bool(o, "ok", true, &b, &err), 0);
    CHECK(b);
    CHECK_INT(json_get_object(o, "addr", true, &sub, &err), 0);
    CHECK(json_is_object(sub));
    CHECK_INT(json_get_array(o, "items", true, 1, 3, &sub, &err), 0);
    CHECK_INT(json_array_size(sub), 3);

    /* Optional and absent (or null): 0, out untouched. */
    s = "default";
    CHECK_INT(json_get_string(o, "nickname", false, 1, 10, &s, &err), 0);
    CHECK_STR(s, "default");
    CHECK_INT(json_get_string(o, "nil", false, 1, 10, &s, &err), 0);
    CHECK_STR(s, "default");

#define GET_FAILS(call, want_reason, want_field, want_msg)            \
    do {                                                              \
        CHECK_INT(call, -EINVAL);                                     \
        CHECK_INT(err.reason, want_reason);                           \
        CHECK_STR(err.field, want_field);                             \
        CHECK_STR(err.message, want_msg);                             \
        CHECK_INT(json_reason_status(err.reason), 422);               \
        CHECK_STR(json_reason_code(err.reason), "validation_failed"); \
    } while (0)

    GET_FAILS(json_get_string(o, "password", true, 8, 64, &s, &err), JSON_REASON_MISSING, "password",
              "\"password\" is required");
    GET_FAILS(json_get_string(o, "nil", true, 0, 64, &s, &err), JSON_REASON_MISSING, "nil",
              "\"nil\" is required");
    GET_FAILS(json_get_string(o, "qty", true, 0, 64, &s, &err), JSON_REASON_TYPE, "qty",
              "\"qty\" must be a string");
    GET_FAILS(json_get_string(o, "email", true, 8, 64, &s, &err), JSON_REASON_RANGE, "email",
              "\"email\" must be at least 8 characters");
    GET_FAILS(json_get_string(o, "email", true, 0, 4, &s, &err), JSON_REASON_RANGE, "email",
              "\"email\" must be at most 4 characters");
    GET_FAILS(json_get_string(o, "name", true, 0, 1, &s, &err), JSON_REASON_RANGE, "name",
              "\"name\" must be at most 1 character");
    GET_FAILS(json_get_int(o, "real", true, 0, 10, &i, &err), JSON_REASON_TYPE, "real",
              "\"real\" must be an integer");
    GET_FAILS(json_get_int(o, "s", true, 0, 10, &i, &err), JSON_REASON_TYPE, "s",
              "\"s\" must be an integer");
    GET_FAILS(json_get_int(o, "qty", true, 6, 10, &i, &err), JSON_REASON_RANGE, "qty",
              "\"qty\" must be between 6 and 10");
    GET_FAILS(json_get_int(o, "qty", true, 6, INT64_MAX, &i, &err), JSON_REASON_RANGE, "qty",
              "\"qty\" must be at least 6");
    GET_FAILS(json_get_int(o, "qty", true, INT64_MIN, -1, &i, &err), JSON_REASON_RANGE, "qty",
              "\"qty\" must be at most -1");
    GET_FAILS(json_get_bool(o, "qty", true, &b, &err), JSON_REASON_TYPE, "qty",
              "\"qty\" must be true or false");
    GET_FAILS(json_get_object(o, "items", true, &sub, &err), JSON_REASON_TYPE, "items",
              "\"items\" must be an object");
    GET_FAILS(json_get_array(o, "addr", true, 0, 9, &sub, &err), JSON_REASON_TYPE, "addr",
              "\"addr\" must be an array");
    GET_FAILS(json_get_array(o, "items", true, 4, 9, &sub, &err), JSON_REASON_RANGE, "items",
              "\"items\" must have at least 4 items");
    GET_FAILS(json_get_array(o, "items", true, 0, 1, &sub, &err), JSON_REASON_RANGE, "items",
              "\"items\" must have at most 1 item");
    CHECK_INT(i, 5); /* failures leave outputs alone */

    json_t *arr = parse_ok("[1]");
    GET_FAILS(json_get_int(arr, "qty", true, 0, 1, &i, &err), JSON_REASON_NOT_OBJECT, "",
              "request body must be a JSON object");
    json_decref(arr);

    /* A string built by the caller (not parsed) with a NUL inside. */
    json_object_set_new(o, "nul", json_stringn("a\0b", 3));
    GET_FAILS(json_get_string(o, "nul", true, 0, 10, &s, &err), JSON_REASON_TYPE, "nul",
              "\"nul\" must not contain NUL characters");
    json_decref(o);
}

static void test_only_keys(void)
{
    struct json_error err;
    const char *const allowed[] = { "email", "password", "name", NULL };
    json_t *o = parse_ok("{\"email\":\"x\",\"name\":\"y\"}");
    CHECK_INT(json_check_only_keys(o, allowed, &err), 0);
    json_decref(o);

    o = parse_ok("{\"email\":\"x\",\"admin\":true,\"zzz\":1}");
    CHECK_INT(json_check_only_keys(o, allowed, &err), -EINVAL);
    CHECK_INT(err.reason, JSON_REASON_UNKNOWN_FIELD);
    CHECK_STR(err.field, "admin");
    CHECK_STR(err.message, "unknown field \"admin\"");
    CHECK_INT(json_reason_status(err.reason), 422);
    json_decref(o);

    /* A prefix of an allowed key is not the key. */
    o = parse_ok("{\"pass\":\"x\"}");
    CHECK_INT(json_check_only_keys(o, allowed, &err), -EINVAL);
    CHECK_STR(err.message, "unknown field \"pass\"");
    json_decref(o);

    /* Client keys are escaped and cut before they reach the message. */
    o = parse_ok("{\"a\\\"b\\n\":1}");
    CHECK_INT(json_check_only_keys(o, allowed, &err), -EINVAL);
    CHECK_STR(err.message, "unknown field \"a\\\"b\\n\"");
    json_decref(o);
    char long_key[300];
    memset(long_key, 'k', sizeof long_key);
    o = json_object();
    json_object_setn_new(o, long_key, sizeof long_key, json_true());
    CHECK_INT(json_check_only_keys(o, allowed, &err), -EINVAL);
    CHECK(strlen(err.message) == strlen("unknown field \"\"") + 64 + 3);
    CHECK(strstr(err.message, "kkk...\"") != NULL);
    json_decref(o);

    /* The cut never splits a character: 40 x "é" is 80 bytes, cut at 64. */
    o = json_object();
    char accents[81] = "";
    for (int i = 0; i < 40; i++)
        strcat(accents, "é");
    json_object_set_new(o, accents, json_true());
    CHECK_INT(json_check_only_keys(o, allowed, &err), -EINVAL);
    CHECK_STR(err.message, "unknown field \"éééééééééééééééééééééééééééééééé...\"");
    json_decref(o);

    CHECK_INT(json_check_only_keys(json_null(), allowed, &err), -EINVAL);
    CHECK_INT(err.reason, JSON_REASON_NOT_OBJECT);
}

static void test_dump_to_buf(void)
{
    struct buf b;
    buf_init(&b, 16);
    json_t *v = json_pack("{s:s,s:i}", "k", "value", "n", 12345);
    CHECK_INT(buf_append_cstr(&b, "pre:"), 0);
    /* {"k":"value","n":12345} is 23 bytes: over the bound, nothing appended. */
    CHECK_INT(json_dump_to_buf(v, &b), -ENOBUFS);
    CHECK_STRV(buf_str(&b), "pre:");
    buf_free(&b);
    buf_init(&b, 64);
    CHECK_INT(json_dump_to_buf(v, &b), 0);
    CHECK_STRV(buf_str(&b), "{\"k\":\"value\",\"n\":12345}");
    json_decref(v);
    buf_reset(&b);
    v = json_real(0.1);
    CHECK_INT(json_dump_to_buf(v, &b), 0);
    CHECK_STRV(buf_str(&b), "0.10000000000000001");
    json_decref(v);
    CHECK_INT(json_dump_to_buf(NULL, &b), -EINVAL);
    buf_free(&b);
}

static void test_error_body(void)
{
    struct buf b;
    buf_init(&b, 4096);
    CHECK_INT(json_error_body(&b, "rate_limited", "too many requests", "req-1"), 0);
    CHECK_STRV(buf_str(&b),
               "{\"error\":{\"code\":\"rate_limited\",\"message\":\"too many requests\",\"request_id\":\"req-1\"}}");
    buf_reset(&b);
    CHECK_INT(json_error_body(&b, "validation_failed", "\"email\" is \\ required\n\x01\xff", NULL), 0);
    CHECK_STRV(buf_str(&b), "{\"error\":{\"code\":\"validation_failed\",\"message\":\"\\\"email\\\" is "
                            "\\\\ required\\n\\u0001\\ufffd\",\"request_id\":\"\"}}");
    /* It is JSON, and it says what we meant. */
    json_t *v = json_loadb(buf_rptr(&b), buf_len(&b), JSON_REJECT_DUPLICATES, NULL);
    CHECK(v != NULL);
    CHECK_STR(json_string_value(json_object_get(json_object_get(v, "error"), "message")),
              "\"email\" is \\ required\n\x01\xef\xbf\xbd");
    json_decref(v);
    buf_free(&b);

    /* All or nothing at the bound. */
    buf_init(&b, 70);
    CHECK_INT(buf_append_cstr(&b, "x"), 0);
    CHECK_INT(json_error_body(&b, "c", "a message that is long enough to overflow", "r"), -ENOBUFS);
    CHECK_STRV(buf_str(&b), "x");
    buf_free(&b);
}

static void test_escape(void)
{
    char out[32];
    size_t used;
    /* Stops before an escape that does not fit, never inside it. */
    CHECK_INT(json_escape(out, 5, STR_LIT("ab\x01"), &used), 2);
    CHECK_INT(used, 2);
    CHECK_INT(json_escape(out, 8, STR_LIT("ab\x01"), &used), 8);
    CHECK_INT(used, 3);
    CHECK(memcmp(out, "ab\\u0001", 8) == 0);
    /* ... and before a multi-byte character. */
    CHECK_INT(json_escape(out, 4, STR_LIT("ab😀"), &used), 2);
    CHECK_INT(used, 2);
    /* Measuring: dst NULL. */
    CHECK_INT(json_escape(NULL, SIZE_MAX, STR_LIT("\"\\\n\xff"), &used), 2 + 2 + 2 + 6);
    CHECK_INT(used, 4);
    /* A truncated sequence at the very end is invalid, byte by byte. */
    CHECK_INT(json_escape(out, sizeof out, STR_LIT("\xe2\x82"), &used), 12);
    CHECK(memcmp(out, "\\ufffd\\ufffd", 12) == 0);

    CHECK_INT(json_utf8_seq_len((const unsigned char *)"\xf4\x8f\xbf\xbf", 4), 4); /* U+10FFFF */
    CHECK_INT(json_utf8_seq_len((const unsigned char *)"\xf4\x90\x80\x80", 4), 0);
    CHECK_INT(json_utf8_seq_len((const unsigned char *)"\xed\x9f\xbf", 3), 3); /* U+D7FF */
    CHECK_INT(json_utf8_seq_len((const unsigned char *)"\xed\xa0\x80", 3), 0); /* U+D800 */
    CHECK_INT(json_utf8_seq_len((const unsigned char *)"\xe0\x9f\xbf", 3), 0); /* overlong */
    CHECK_INT(json_utf8_seq_len((const unsigned char *)"\xc2\x80", 2), 2);
    CHECK_INT(json_utf8_seq_len((const unsigned char *)"\xc1\xbf", 2), 0);
    CHECK_INT(json_utf8_seq_len((const unsigned char *)"\x80", 1), 0);

    struct buf b;
    buf_init(&b, 64);
    CHECK_INT(json_append_string(&b, STR_LIT("tab\there")), 0);
    CHECK_STRV(buf_str(&b), "\"tab\\there\"");
    buf_free(&b);
}

static void test_reasons(void)
{
    CHECK_INT(json_reason_status(JSON_REASON_NONE), 0);
    CHECK_INT(json_reason_status(JSON_REASON_TOO_DEEP), 400);
    CHECK_INT(json_reason_status(JSON_REASON_UNKNOWN_FIELD), 422);
    CHECK_INT(json_reason_status(JSON_REASON_NOMEM), 503);
    CHECK_STR(json_reason_code(JSON_REASON_NOMEM), "unavailable");
    CHECK_STR(json_reason_code(JSON_REASON_NONE), "");
}

int main(void)
{
    RUN(test_parse_accepts);
    RUN(test_parse_errors);
    RUN(test_parse_depth);
    RUN(test_getters);
    RUN(test_only_keys);
    RUN(test_dump_to_buf);
    RUN(test_error_body);
    RUN(test_escape);
    RUN(test_reasons);
    return check_done();
}
