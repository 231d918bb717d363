/* libFuzzer target for http1_parse: the request parser, the response parser
 * and the chunked decoder, each run on the whole input and on a split of it.
 *
 * Input: byte 0 picks the split point (scaled over the rest), the rest is the
 * message. Invariants, checked with abort() so libFuzzer reports them:
 * - a result never exceeds the input; every view lies inside the input;
 * - restartability: a prefix gives INCOMPLETE while the head is not all
 *   there, the same result once it is, and fails only if the whole fails;
 *   reparsing exactly the head gives an identical result;
 * - the chunked decoder gives the same payload, result and consumed count
 *   whether fed at once, in two pieces, or one byte per call. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/http1_parse.h"

#define FUZZ_CHECK(cond)                                                                     \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);     \
            abort();                                                                         \
        }                                                                                    \
    } while (0)

enum { CAP = 128 };

/* Small bounds reach the limit paths (414, 431) with small inputs. */
static const struct http1_limits tight_limits = { 24, 200, 6 };

static bool is_inside(struct str v, const char *p, size_t n)
{
    return v.n == 0 || (v.p >= p && v.p + v.n <= p + n);
}

static bool is_same(struct str a, struct str b) { return a.n == b.n && (a.n == 0 || a.p == b.p); }

static bool same_headers(const struct http1_header *a, const struct http1_header *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!is_same(a[i].name, b[i].name) || !is_same(a[i].value, b[i].value))
            return false;
    return true;
}

static bool same_request(const struct http1_request *a, const struct http1_request *b)
{
    return is_same(a->method, b->method) && is_same(a->target, b->target) && str_eq(a->path, b->path) &&
           is_same(a->query, b->query) &&
           is_same(a->scheme, b->scheme) && is_same(a->authority, b->authority) && is_same(a->host, b->host) &&
           a->minor_version == b->minor_version && a->nheaders == b->nheaders &&
           same_headers(a->headers, b->headers, a->nheaders) && a->body_kind == b->body_kind &&
           a->content_length == b->content_length && a->keep_alive == b->keep_alive &&
           a->expect_continue == b->expect_continue && a->is_absolute_form == b->is_absolute_form;
}

static bool same_response(const struct http1_response *a, const struct http1_response *b)
{
    return a->status == b->status && is_same(a->reason, b->reason) && a->minor_version == b->minor_version &&
           a->nheaders == b->nheaders && same_headers(a->headers, b->headers, a->nheaders) &&
           a->body_kind == b->body_kind && a->content_length == b->content_length &&
           a->keep_alive == b->keep_alive;
}

static void check_error(int rc)
{
    int status = http1_error_status(rc);
    FUZZ_CHECK(rc >= HTTP1_E_BAD_STATUS);
    FUZZ_CHECK(status == 400 || status == 414 || status == 431 || status == 505 || status == 502);
    FUZZ_CHECK(http1_error_code(rc) != NULL);
}

static void check_headers_inside(const struct http1_header *h, size_t nh, const char *p, size_t n)
{
    for (size_t i = 0; i < nh; i++) {
        FUZZ_CHECK(h[i].name.n > 0);
        FUZZ_CHECK(is_inside(h[i].name, p, n));
        FUZZ_CHECK(is_inside(h[i].value, p, n));
    }
}

/* Returns the head length, or <= 0. */
static int check_request(const char *p, size_t n, size_t split, const struct http1_limits *lim)
{
    struct http1_header h1[CAP], h2[CAP];
    struct http1_request r1, r2;
    int rc = http1_parse_request(p, n, lim, &r1, h1, CAP);

    if (rc < 0) {
        check_error(rc);
        FUZZ_CHECK(rc != HTTP1_E_BAD_CHUNK && rc != HTTP1_E_BAD_STATUS);
    }
    if (rc > 0) {
        size_t len = (size_t)rc;
        FUZZ_CHECK(len <= n);
        FUZZ_CHECK(r1.nheaders <= CAP && r1.nheaders <= lim->max_headers);
        FUZZ_CHECK(r1.minor_version == 0 || r1.minor_version == 1);
        FUZZ_CHECK(r1.method.n > 0 && r1.target.n > 0 && r1.target.n <= lim->max_request_line);
        FUZZ_CHECK(is_inside(r1.method, p, len) && is_inside(r1.target, p, len));
        FUZZ_CHECK(is_inside(r1.query, p, len) && is_inside(r1.scheme, p, len));
        FUZZ_CHECK(is_inside(r1.authority, p, len) && is_inside(r1.host, p, len));
        /* The one view that may point elsewhere: the implied "/" of an
         * absolute-form target without a path. */
        FUZZ_CHECK(is_inside(r1.path, p, len) || (r1.is_absolute_form && r1.path.n == 1 && r1.path.p[0] == '/'));
        check_headers_inside(r1.headers, r1.nheaders, p, len);
        FUZZ_CHECK(r1.body_kind == HTTP1_BODY_NONE || r1.body_kind == HTTP1_BODY_LENGTH ||
                   r1.body_kind == HTTP1_BODY_CHUNKED);
        FUZZ_CHECK(r1.body_kind != HTTP1_BODY_CHUNKED || r1.minor_version == 1);
        FUZZ_CHECK(r1.minor_version == 1 || !r1.expect_continue);
        FUZZ_CHECK(p[len - 1] == '\n' && p[len - 2] == '\r');

        int again = http1_parse_request(p, len, lim, &r2, h2, CAP);
        FUZZ_CHECK(again == rc);
        FUZZ_CHECK(same_request(&r1, &r2));
    }

    int rs = http1_parse_request(p, split, lim, &r2, h2, CAP);
    if (rc > 0 && split < (size_t)rc)
        FUZZ_CHECK(rs == HTTP1_INCOMPLETE);
    if (rc > 0 && split >= (size_t)rc) {
        FUZZ_CHECK(rs == rc);
        FUZZ_CHECK(same_request(&r1, &r2));
    }
    if (rs < 0)
        FUZZ_CHECK(rc < 0);
    if (rc == HTTP1_INCOMPLETE)
        FUZZ_CHECK(rs == HTTP1_INCOMPLETE);
    return rc > 0 && r1.body_kind == HTTP1_BODY_CHUNKED ? rc : 0;
}

static void check_response(const char *p, size_t n, size_t split, const struct http1_limits *lim, bool is_head)
{
    struct http1_header h1[CAP], h2[CAP];
    struct http1_response r1, r2;
    int rc = http1_parse_response(p, n, lim, is_head, &r1, h1, CAP);

    if (rc < 0) {
        check_error(rc);
        FUZZ_CHECK(rc != HTTP1_E_BAD_CHUNK && rc != HTTP1_E_URI_TOO_LONG);
    }
    if (rc > 0) {
        size_t len = (size_t)rc;
        FUZZ_CHECK(len <= n);
        FUZZ_CHECK(r1.status >= 100 && r1.status <= 599);
        FUZZ_CHECK(r1.nheaders <= CAP && r1.nheaders <= lim->max_headers);
        FUZZ_CHECK(is_inside(r1.reason, p, len));
        check_headers_inside(r1.headers, r1.nheaders, p, len);
        if (is_head || r1.status < 200 || r1.status == 204 || r1.status == 304)
            FUZZ_CHECK(r1.body_kind == HTTP1_BODY_NONE);
        if (r1.body_kind == HTTP1_BODY_UNTIL_CLOSE)
            FUZZ_CHECK(!r1.keep_alive);

        int again = http1_parse_response(p, len, lim, is_head, &r2, h2, CAP);
        FUZZ_CHECK(again == rc);
        FUZZ_CHECK(same_response(&r1, &r2));
    }

    int rs = http1_parse_response(p, split, lim, is_head, &r2, h2, CAP);
    if (rc > 0 && split < (size_t)rc)
        FUZZ_CHECK(rs == HTTP1_INCOMPLETE);
    if (rc > 0 && split >= (size_t)rc) {
        FUZZ_CHECK(rs == rc);
        FUZZ_CHECK(same_response(&r1, &r2));
    }
    if (rs < 0)
        FUZZ_CHECK(rc < 0);
}

struct chunk_run {
    int result;
    size_t consumed;
    size_t out_n;
    uint64_t total;
};

/* Feeds p[0..n) in pieces: the first `first` bytes, then `step` bytes at a
 * time (0: the rest at once). */
static void run_chunked(const char *p, size_t n, size_t first, size_t step, size_t max_trailer, char *out,
                        struct chunk_run *run)
{
    struct http1_chunked c;
    size_t pos = 0;

    http1_chunked_init(&c);
    c.max_trailer_bytes = max_trailer;
    run->result = HTTP1_CHUNK_NEED_MORE;
    run->out_n = 0;
    while (pos < n) {
        size_t end = pos == 0 && first ? first : step ? pos + step : n;
        if (end > n)
            end = n;
        while (pos < end) {
            struct str data;
            size_t used = (size_t)-1;
            int rc = http1_chunked_feed(&c, p + pos, end - pos, &data, &used);
            FUZZ_CHECK(used <= end - pos);
            pos += used;
            if (rc == HTTP1_CHUNK_DATA) {
                FUZZ_CHECK(data.n > 0 && data.p >= p && data.p + data.n <= p + pos);
                memcpy(out + run->out_n, data.p, data.n);
                run->out_n += data.n;
                run->result = HTTP1_CHUNK_NEED_MORE;
                continue;
            }
            run->result = rc;
            if (rc == HTTP1_CHUNK_NEED_MORE) {
                FUZZ_CHECK(pos == end);
                break;
            }
            FUZZ_CHECK(rc == HTTP1_CHUNK_DONE || rc == HTTP1_E_BAD_CHUNK || rc == HTTP1_E_HEADERS_TOO_LARGE);
            /* Finished or failed: it stays that way and consumes nothing. */
            int again = http1_chunked_feed(&c, p + pos, n - pos, &data, &used);
            FUZZ_CHECK(again == rc && used == 0);
            goto out;
        }
    }
out:
    run->consumed = pos;
    run->total = c.total;
    FUZZ_CHECK(run->total == run->out_n);
}

static void check_chunked(const char *p, size_t n, size_t split, size_t max_trailer)
{
    char *out = malloc(n ? 3 * n : 1);
    struct chunk_run whole, two, bytes;

    if (!out)
        return;
    run_chunked(p, n, 0, 0, max_trailer, out, &whole);
    run_chunked(p, n, split, 0, max_trailer, out + n, &two);
    run_chunked(p, n, 0, 1, max_trailer, out + 2 * n, &bytes);
    FUZZ_CHECK(whole.consumed <= n);
    FUZZ_CHECK(two.result == whole.result && bytes.result == whole.result);
    FUZZ_CHECK(two.consumed == whole.consumed && bytes.consumed == whole.consumed);
    FUZZ_CHECK(two.out_n == whole.out_n && bytes.out_n == whole.out_n);
    FUZZ_CHECK(memcmp(out, out + n, whole.out_n) == 0 && memcmp(out, out + 2 * n, whole.out_n) == 0);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    /* A private copy, so that ASan catches any read past the end. */
    size_t n = size - 1;
    char *p = malloc(n ? n : 1);
    if (!p)
        return 0;
    memcpy(p, data + 1, n);
    size_t split = (size_t)data[0] * n / 255;

    int body_at = check_request(p, n, split, &http1_default_limits);
    check_request(p, n, split, &tight_limits);
    check_response(p, n, split, &http1_default_limits, false);
    check_response(p, n, split, &tight_limits, data[0] & 1);

    check_chunked(p, n, split, 0);
    check_chunked(p, n, split, 16);
    if (body_at > 0) {
        size_t rest = n - (size_t)body_at;
        check_chunked(p + body_at, rest, split < rest ? split : rest / 2, 0);
    }
    free(p);
    return 0;
}
