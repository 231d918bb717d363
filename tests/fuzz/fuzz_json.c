/* json_parse_body on arbitrary bytes, then everything a service does with
 * the result: field getters, the unknown-field check, a compact dump that
 * must parse back to an equal value, and error bodies that must be JSON. */
#include <stdint.h>
#include <stdlib.h>

#include "core/json.h"

/* The invariant broke: crash loudly so that libFuzzer keeps the input. */
#define MUST(cond)                                                           \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__,       \
                    __LINE__, #cond);                                        \
            abort();                                                         \
        }                                                                    \
    } while (0)

/* b must hold one JSON value that jansson accepts. */
static json_t *must_parse(const struct buf *b)
{
    json_error_t je;
    json_t *v = json_loadb(buf_rptr(b), buf_len(b), JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    if (!v)
        fprintf(stderr, "not JSON (%s): %.*s\n", je.text, (int)buf_len(b), buf_rptr(b));
    MUST(v != NULL);
    return v;
}

static void check_error_body(const char *code, const char *message)
{
    struct buf b;
    buf_init(&b, 1 << 16);
    MUST(json_error_body(&b, code, message, "req-1") == 0);
    json_t *v = must_parse(&b);
    const char *m = json_string_value(json_object_get(json_object_get(v, "error"), "message"));
    MUST(m != NULL);
    json_decref(v);
    buf_free(&b);
}

static void exercise_object(json_t *obj)
{
    static const char *const allowed[] = { "email", "password", "name", "items", NULL };
    struct json_error err;
    const char *key;
    json_t *value;

    if (json_check_only_keys(obj, allowed, &err) < 0) {
        MUST(err.reason == JSON_REASON_UNKNOWN_FIELD || err.reason == JSON_REASON_NOT_OBJECT);
        check_error_body(json_reason_code(err.reason), err.message);
    }
    json_object_foreach(obj, key, value) {
        /* Optional getters leave outputs alone when the field is absent. */
        const char *s = NULL;
        json_int_t i = 0;
        bool b = false;
        json_t *sub = NULL;
        (void)value;
        if (json_get_string(obj, key, true, 1, 64, &s, &err) < 0)
            MUST(json_reason_status(err.reason) == 422 && err.message[0]);
        if (json_get_int(obj, key, true, -1000, 1000, &i, &err) < 0)
            MUST(json_reason_status(err.reason) == 422 && err.message[0]);
        if (json_get_bool(obj, key, false, &b, &err) < 0)
            MUST(json_reason_status(err.reason) == 422);
        if (json_get_object(obj, key, false, &sub, &err) == 0 && json_is_object(sub))
            exercise_object(sub);
        sub = NULL;
        if (json_get_array(obj, key, false, 1, 3, &sub, &err) == 0 && sub)
            MUST(json_is_array(sub) && json_array_size(sub) >= 1 && json_array_size(sub) <= 3);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct str in = str_make((const char *)data, size);
    struct json_error err;
    json_t *v = NULL;
    struct buf b;

    /* Escaping any bytes gives a JSON string, and measured == written. */
    buf_init(&b, 8 * size + 16);
    MUST(json_append_string(&b, in) == 0);
    json_decref(must_parse(&b));
    MUST(buf_len(&b) == json_escape(NULL, SIZE_MAX, in, NULL) + 2);
    char small[7];
    size_t used, w = json_escape(small, sizeof small, in, &used);
    MUST(w <= sizeof small && used <= size);
    buf_free(&b);

    int rc = json_parse_body(in, 16, &v, &err);
    if (rc) {
        MUST(v == NULL);
        MUST(err.message[0] != '\0');
        MUST(json_reason_status(err.reason) == 400 || json_reason_status(err.reason) == 503);
        check_error_body(json_reason_code(err.reason), err.message);
        return 0;
    }
    MUST(v != NULL);

    /* A dump parses back (strictly) to an equal value. */
    buf_init(&b, 4 * size + 64);
    MUST(json_dump_to_buf(v, &b) == 0);
    json_t *again = NULL;
    rc = json_parse_body(buf_str(&b), 16, &again, &err);
    if (rc)
        fprintf(stderr, "dump does not parse back: %s\n", err.message);
    MUST(rc == 0);
    MUST(json_equal(v, again));
    json_decref(again);
    buf_free(&b);

    if (json_is_object(v))
        exercise_object(v);
    json_decref(v);
    return 0;
}
