/* validate.c — what a valid order is: the body's schema, totals computed
 * with overflow checks, the canonical hash behind idempotent replays, ids
 * and timestamps. No I/O. */
#include <errno.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "order.h"

/* ISO 4217 active codes (2025 list: SLE, VES, XCG, ZWG; no funds or metals). */
static const char currencies[][4] = {
    "AED", "AFN", "ALL", "AMD", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT", "BGN", "BHD", "BIF",
    "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD", "CDF", "CHF", "CLP", "CNY", "COP",
    "CRC", "CUP", "CVE", "CZK", "DJF", "DKK", "DOP", "DZD", "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP",
    "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ", "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IQD",
    "IRR", "ISK", "JMD", "JOD", "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT", "LAK",
    "LBP", "LKR", "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR",
    "MWK", "MXN", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN", "PGK", "PHP",
    "PKR", "PLN", "PYG", "QAR", "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD", "SHP",
    "SLE", "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB", "TJS", "TMT", "TND", "TOP", "TRY", "TTD",
    "TWD", "TZS", "UAH", "UGX", "USD", "UYU", "UZS", "VES", "VND", "VUV", "WST", "XAF", "XCD", "XCG", "XOF",
    "XPF", "YER", "ZAR", "ZMW", "ZWG",
};

static bool currency_is_known(const char *c)
{
    for (size_t i = 0; i < sizeof currencies / sizeof currencies[0]; i++)
        if (memcmp(currencies[i], c, 4) == 0)
            return true;
    return false;
}

static int fail(struct json_error *err, enum json_reason reason, const char *field, const char *fmt, const char *a)
{
    memset(err, 0, sizeof *err);
    err->reason = reason;
    snprintf(err->field, sizeof err->field, "%s", field);
    snprintf(err->message, sizeof err->message, fmt, a);
    return -EINVAL;
}

/* Copies src into dst (cap bytes), cut on overflow; always NUL-terminated. */
static void copy_cut(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* Prefixes a getter's message with where the object sits ("items[3]"). */
static int prefixed(struct json_error *err, const char *where)
{
    char tmp[sizeof err->message + 64];
    snprintf(tmp, sizeof tmp, "%s: ", where);
    copy_cut(tmp + strlen(tmp), sizeof tmp - strlen(tmp), err->message);
    copy_cut(err->message, sizeof err->message, tmp);
    snprintf(tmp, sizeof tmp, "%s.", where);
    copy_cut(tmp + strlen(tmp), sizeof tmp - strlen(tmp), err->field);
    copy_cut(err->field, sizeof err->field, tmp);
    return -EINVAL;
}

static bool sku_is_valid(const char *s)
{
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '-' ||
              *s == '_'))
            return false;
    return true;
}

static int validate_item(const json_t *it, size_t i, struct order_item *out, struct json_error *err)
{
    static const char *const allowed[] = { "sku", "quantity", "unit_price_cents", NULL };
    char where[32];
    snprintf(where, sizeof where, "items[%zu]", i);
    const char *sku;
    json_int_t qty, price;
    if (!json_is_object(it))
        return fail(err, JSON_REASON_TYPE, where, "%s: must be an object", where);
    if (json_check_only_keys(it, allowed, err) < 0 || json_get_string(it, "sku", true, 1, ORDER_SKU_MAX, &sku, err) < 0 ||
        json_get_int(it, "quantity", true, 1, ORDER_QTY_MAX, &qty, err) < 0 ||
        json_get_int(it, "unit_price_cents", true, 0, INT64_MAX, &price, err) < 0)
        return prefixed(err, where);
    if (!sku_is_valid(sku)) {
        snprintf(where + strlen(where), sizeof where - strlen(where), ".sku");
        return fail(err, JSON_REASON_RANGE, where, "%s: may contain only letters, digits, '-' and '_'", where);
    }
    snprintf(out->sku, sizeof out->sku, "%s", sku);
    out->quantity = qty;
    out->unit_price_cents = price;
    if (__builtin_mul_overflow(out->quantity, out->unit_price_cents, &out->line_total_cents))
        return fail(err, JSON_REASON_RANGE, where, "%s: quantity × unit_price_cents is too large", where);
    return 0;
}

static int validate_address(const json_t *addr, json_t **out, struct json_error *err)
{
    static const char *const allowed[] = { "name", "line1", "line2", "city", "region", "postal_code", "country",
                                           NULL };
    /* Bounds: the longest lines carriers print (UPS: 35 per line, we allow more). */
    static const struct {
        const char *key;
        bool required;
        size_t max;
    } fields[] = { { "name", false, 200 }, { "line1", true, 200 },       { "line2", false, 200 },
                   { "city", true, 100 },  { "region", false, 100 },     { "postal_code", true, 20 },
                   { "country", true, 2 } };
    if (json_check_only_keys(addr, allowed, err) < 0)
        return prefixed(err, "shipping_address");
    json_t *o = json_object();
    if (!o)
        return fail(err, JSON_REASON_NOMEM, "", "%sout of memory", "");
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        const char *v = NULL;
        size_t min = strcmp(fields[i].key, "country") == 0 ? 2 : 1;
        if (json_get_string(addr, fields[i].key, fields[i].required, min, fields[i].max, &v, err) < 0) {
            json_decref(o);
            return prefixed(err, "shipping_address");
        }
        if (v && strcmp(fields[i].key, "country") == 0 &&
            !(v[0] >= 'A' && v[0] <= 'Z' && v[1] >= 'A' && v[1] <= 'Z')) {
            json_decref(o);
            return fail(err, JSON_REASON_RANGE, "shipping_address.country",
                        "shipping_address.country: must be an ISO 3166-1 alpha-2 code (2 upper-case letters)%s", "");
        }
        if (v)
            json_object_set_new(o, fields[i].key, json_string(v));
    }
    *out = o;
    return 0;
}

int order_validate(const json_t *body, struct order_input *in, struct json_error *err)
{
    static const char *const allowed[] = { "items", "currency", "shipping_address", NULL };
    json_t *items, *addr;
    const char *currency;
    in->nitems = 0;
    in->total_cents = 0;
    in->shipping_address = NULL;
    if (json_check_only_keys(body, allowed, err) < 0 ||
        json_get_array(body, "items", true, 1, ORDER_MAX_ITEMS, &items, err) < 0 ||
        json_get_string(body, "currency", true, 3, 3, &currency, err) < 0 ||
        json_get_object(body, "shipping_address", true, &addr, err) < 0)
        return -EINVAL;
    if (!(currency[0] >= 'A' && currency[0] <= 'Z') || !(currency[1] >= 'A' && currency[1] <= 'Z') ||
        !(currency[2] >= 'A' && currency[2] <= 'Z') || !currency_is_known(currency))
        return fail(err, JSON_REASON_RANGE, "currency", "\"currency\" must be an ISO 4217 code such as \"EUR\", not \"%s\"",
                    currency);
    memcpy(in->currency, currency, 4);
    size_t i;
    json_t *it;
    json_array_foreach(items, i, it)
    {
        if (validate_item(it, i, &in->items[i], err) < 0)
            return -EINVAL;
        if (__builtin_add_overflow(in->total_cents, in->items[i].line_total_cents, &in->total_cents))
            return fail(err, JSON_REASON_RANGE, "items", "\"items\": the order total is too large%s", "");
        in->nitems = i + 1;
    }
    return validate_address(addr, &in->shipping_address, err);
}

void order_input_clear(struct order_input *in)
{
    json_decref(in->shipping_address);
    in->shipping_address = NULL;
}

bool order_idempotency_key_is_valid(struct str key)
{
    if (key.n < 1 || key.n > ORDER_IDEMPOTENCY_KEY_MAX)
        return false;
    for (size_t i = 0; i < key.n; i++)
        if ((unsigned char)key.p[i] < 0x20 || (unsigned char)key.p[i] > 0x7e)
            return false;
    return true;
}

int order_request_hash(const json_t *body, char out[65])
{
    char *canon = json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    if (!canon)
        return -ENOMEM;
    unsigned char md[32];
    unsigned int mdlen = 0;
    int ok = EVP_Digest(canon, strlen(canon), md, &mdlen, EVP_sha256(), NULL);
    free(canon);
    if (!ok || mdlen != 32)
        return -ENOMEM;
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    return 0;
}

int order_uuid_new(char out[ORDER_UUID_LEN + 1])
{
    unsigned char b[16];
    if (RAND_bytes(b, sizeof b) != 1)
        return -EIO;
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(out, ORDER_UUID_LEN + 1, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
    return 0;
}

bool order_uuid_is_valid(struct str s)
{
    if (s.n != ORDER_UUID_LEN)
        return false;
    for (size_t i = 0; i < s.n; i++) {
        char c = s.p[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-')
                return false;
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) {
            return false;
        }
    }
    return true;
}

void order_time_format(uint64_t wall_ns, char out[ORDER_TIME_LEN + 1])
{
    time_t secs = (time_t)(wall_ns / 1000000000ull);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char date[ORDER_TIME_LEN + 1];
    if (strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm) != 19) {
        copy_cut(out, ORDER_TIME_LEN + 1, "1970-01-01T00:00:00.000Z");
        return;
    }
    unsigned ms = (unsigned)((wall_ns / 1000000ull) % 1000);
    memcpy(out, date, 19);
    out[19] = '.';
    out[20] = (char)('0' + ms / 100);
    out[21] = (char)('0' + ms / 10 % 10);
    out[22] = (char)('0' + ms % 10);
    out[23] = 'Z';
    out[24] = '\0';
}

json_t *order_doc_new(const char *id, const char *user_id, const struct order_input *in, const char *created_at)
{
    json_t *items = json_array();
    for (size_t i = 0; items && i < in->nitems; i++)
        json_array_append_new(items, json_pack("{s:s, s:I, s:I, s:I}", "sku", in->items[i].sku, "quantity",
                                               (json_int_t)in->items[i].quantity, "unit_price_cents",
                                               (json_int_t)in->items[i].unit_price_cents, "line_total_cents",
                                               (json_int_t)in->items[i].line_total_cents));
    if (!items)
        return NULL;
    return json_pack("{s:s, s:s, s:s, s:o, s:I, s:s, s:O, s:s}", "id", id, "user_id", user_id, "status", "pending",
                     "items", items, "total_cents", (json_int_t)in->total_cents, "currency", in->currency,
                     "shipping_address", in->shipping_address, "created_at", created_at);
}

bool order_status_is_valid(struct str s)
{
    return str_eq(s, STR_LIT("pending")) || str_eq(s, STR_LIT("confirmed")) || str_eq(s, STR_LIT("shipped")) ||
           str_eq(s, STR_LIT("cancelled"));
}
