/* http1_parse: request and response heads, limits, smuggling vectors, and the
 * chunked decoder. Every request parsed here is also parsed at every prefix
 * length, so restartability is checked on each case, not only in one test. */
#include <stdlib.h>

#include "check.h"
#include "core/http1_parse.h"

static struct http1_header hdrs[128];
static struct http1_request req;
static struct http1_response resp;

/* Parses s[0..n) and every prefix of it. A prefix must never fail where the
 * whole succeeds, and once the head is complete extra bytes change nothing. */
static int parse_req_lim(const char *s, size_t n, const struct http1_limits *lim, size_t cap)
{
    int full = http1_parse_request(s, n, lim, &req, hdrs, cap);
    for (size_t k = 0; k < n; k++) {
        struct http1_request r;
        struct http1_header h[128];
        int rc = http1_parse_request(s, k, lim, &r, h, cap);
        if (full > 0 && k < (size_t)full && rc != HTTP1_INCOMPLETE) {
            CHECK_INT(rc, HTTP1_INCOMPLETE);
            break;
        }
        if (full > 0 && k >= (size_t)full && rc != full) {
            CHECK_INT(rc, full);
            break;
        }
        if (rc < 0 && full >= 0) {
            fprintf(stderr, "prefix %zu fails with %d, whole gives %d\n", k, rc, full);
            CHECK(full < 0);
            break;
        }
    }
    return http1_parse_request(s, n, lim, &req, hdrs, cap);
}

#define PREQ(lit) parse_req_lim(lit, sizeof(lit) - 1, NULL, 128)
#define PREQ_LIM(lit, lim) parse_req_lim(lit, sizeof(lit) - 1, lim, 128)
#define PRESP(lit, is_head) http1_parse_response(lit, sizeof(lit) - 1, NULL, is_head, &resp, hdrs, 128)
#define LEN(lit) ((int)(sizeof(lit) - 1))

static void test_simple_get(void)
{
    static const char m[] = "GET /index.html?a=1&b=2 HTTP/1.1\r\n"
                            "Host: example.com\r\n"
                            "User-Agent:  curl/8.0 \t\r\n"
                            "X-Empty:\r\n"
                            "Accept: */*\r\n\r\n";
    CHECK_INT(PREQ(m), LEN(m));
    CHECK_STRV(req.method, "GET");
    CHECK_STRV(req.target, "/index.html?a=1&b=2");
    CHECK_STRV(req.path, "/index.html");
    CHECK_STRV(req.query, "a=1&b=2");
    CHECK_STRV(req.host, "example.com");
    CHECK_INT(req.scheme.n, 0);
    CHECK_INT(req.authority.n, 0);
    CHECK_INT(req.minor_version, 1);
    CHECK_INT(req.nheaders, 4);
    CHECK(req.headers == hdrs);
    CHECK_STRV(req.headers[1].name, "User-Agent");
    CHECK_STRV(req.headers[1].value, "curl/8.0");
    CHECK_STRV(req.headers[2].value, "");
    CHECK_INT(req.body_kind, HTTP1_BODY_NONE);
    CHECK(req.keep_alive);
    CHECK(!req.expect_continue);
    CHECK(!req.is_absolute_form);

    const struct http1_header *h = http1_find_header(req.headers, req.nheaders, STR_LIT("user-agent"));
    CHECK(h == &req.headers[1]);
    CHECK(http1_find_header(req.headers, req.nheaders, STR_LIT("Cookie")) == NULL);
    CHECK(http1_find_header(req.headers, req.nheaders, STR_LIT("X-Empt")) == NULL);

    /* Views point into the input, not into copies. */
    CHECK(req.method.p == m);
    CHECK(req.host.p > m && req.host.p < m + sizeof m);
}

static void test_paths_and_queries(void)
{
    CHECK(PREQ("GET /a/b? HTTP/1.1\r\nHost: h\r\n\r\n") > 0);
    CHECK_STRV(req.path, "/a/b");
    CHECK_STRV(req.query, "");
    CHECK(req.query.p != NULL);
    CHECK(PREQ("GET /?a?b=/c HTTP/1.1\r\nHost: h\r\n\r\n") > 0);
    CHECK_STRV(req.path, "/");
    CHECK_STRV(req.query, "a?b=/c");
    CHECK(PREQ("GET /%20x HTTP/1.1\r\nHost: h\r\n\r\n") > 0);
    CHECK_STRV(req.path, "/%20x");
    CHECK_INT(req.query.n, 0);
}

static void test_leading_empty_lines(void)
{
    static const char two[] = "\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n";
    CHECK_INT(PREQ(two), LEN(two));
    CHECK_STRV(req.method, "GET");
    static const char four[] = "\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n";
    CHECK_INT(PREQ(four), LEN(four));
    CHECK_INT(PREQ("\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP1_E_BAD_REQUEST);
    CHECK_INT(PREQ("\nGET / HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP1_E_BARE_CR);
    CHECK_INT(PREQ("\rGET / HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP1_E_BARE_CR);
    CHECK_INT(PREQ("\r\n\r\n"), HTTP1_INCOMPLETE);
    CHECK_INT(PREQ(""), HTTP1_INCOMPLETE);
}

static void test_request_line_errors(void)
{
    CHECK_INT(PREQ("GET  / HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP1_E_BAD_REQUEST);
    CHECK_INT(PREQ("GET /  HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP1_E_BAD_REQUEST);
    CHECK_INT(PREQ("GET / HTTP/1.1 \r\nHost: h\r\n\r\n"), HTTP1_E_BAD_REQUEST);
    CHECK_INT(PREQ("GET\t/ HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP1_E_BAD_TOKEN);
    CHECK_INT(PREQ(" GET / HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP1_E_BAD_TOKEN);
    CHECK_INT(PREQ("G(T / HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP1_E_BAD_TOKEN);
    CHECK_INT(PREQ("G\x80T / HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP1_E_BAD_TOKEN);
    CHECK_INT(PREQ("GET / http/1.1\r\nHost: h\r\n\r\n"), HTTP1_E_BAD_REQUEST);
    CHECK_INT(PREQ("GET / HTTP/1.10\r\nHost: h\r\n\r\n"), HTTP1_E_BAD_REQUEST);
    CHECK_INT(PREQ("GET / HTTP/11\r\nHost: h\r\n\r\n"), HTTP1_E_BAD_REQUEST);
    CHECK_INT(PREQ("GET / HTTP/1.x\r\nHost: h\r\n\r\n"), HTTP1_E_BAD_REQUEST);
    CHECK_INT(PREQ("GET / HTTP/2.0\r\nHost: h\r\n\r\n"), HTTP1_E_VERSION);
    CHECK_INT(PREQ("GET / HTTP/1.2\r\nHost: h\r\n\r\n"), HTTP1_E_VERSION);
    CHECK_INT(PREQ("GET / HTTP/0.9\r\n\r\n"), HTTP1_E_VERSION);
    CHECK_INT(PREQ("GET / HTTP/3.0\r\n"), HTTP1_E_VERSION);
    /* HTTP/0.9 had no version at all. */
    CHECK_INT(PREQ("GET /\r\n\r\n"), HTTP1_E_BAD_REQUEST);
    CHECK_INT(PREQ("GET\r\n\r\n"), HTTP1_E_BAD_REQUEST);
    CHECK_INT(PREQ("hello world\r\n\r\n"), HTTP1_E_BAD_REQUEST);
    CHECK_INT(PREQ("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"), HTTP1_E_BAD_TOKEN); /* TLS hello */
    CHECK_INT(PREQ("GET / HTTP/1.1\rHost: h\r\n\r\n"), HTTP1_E_BARE_CR);
    CHECK_INT(PREQ("GET / HTTP/1.1\nHost: h\r\n\r\n"), HTTP1_E_BARE_CR);
    CHECK_INT(PREQ("GET /\rHTTP/1.1\r\nHost: h\r\n\r\n"), HTTP1_E_BARE_CR);
    CHECK_INT(PREQ("GET\r / HTTP/1.1\r\n"), HTTP1_E_BARE_CR);
    CHECK_INT(PREQ("GET\n / HTTP/1.1\r\n"), HTTP1_E_BARE_CR);
    CHECK_INT(PREQ("GET /\nHost: h\r\n\r\n"), HTTP1_E_BARE_CR);
    CHECK_INT(PREQ("GET /\x01 HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP1_E_BAD_TARGET);
    CHECK_INT(PREQ("GET /\x7f HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP1_E_BAD_TARGET);
    CHECK_INT(PREQ("GET /\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP1_E_BAD_TARGET);
    CHECK_INT(PREQ("GET /a\tb HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP1_E_BAD_TARGET);
    CHECK_INT(PREQ("GET /\0 HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP1_E_BAD_TARGET);
    /* Errors come as soon as the bytes show them, before the head is complete. */
    CHECK_INT(PREQ("G@T"), HTTP1_E_BAD_TOKEN);
    CHECK_INT(PREQ("GET / HTTP/2.0"), HTTP1_E_VERSION);
    CHECK_INT(PREQ("GET / HTTP/1.1\r\nHost: h\r\n"), HTTP1_INCOMPLETE);
}

static void test_targets(void)
{
    CHECK(PREQ("GET http://Example.com:8080/p/q?x=1 HTTP/1.1\r\nHost: other\r\n\r\n") > 0);
    CHECK(req.is_absolute_form);
    CHECK_STRV(req.scheme, "http");
    CHECK_STRV(req.authority, "Example.com:8080");
    CHECK_STRV(req.path, "/p/q");
    CHECK_STRV(req.query, "x=1");
    CHECK_STRV(req.host, "other"); /* the Host field; callers prefer authority */

    CHECK(PREQ("GET HTTPS://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n") > 0);
    CHECK(req.is_absolute_form);
    CHECK_STRV(req.scheme, "HTTPS");
    CHECK_STRV(req.authority, "example.com");
    CHECK_STRV(req.path, "/");
    CHECK_INT(req.query.n, 0);

    CHECK(PREQ("GET http://[::1]:80?q HTTP/1.1\r\nHost: x\r\n\r\n") > 0);
    CHECK_STRV(req.authority, "[::1]:80");
    CHECK_STRV(req.path, "/");
    CHECK_STRV(req.query, "q");

    CHECK_INT(PREQ("GET http:///p HTTP/1.1\r\nHost: x\r\n\r\n"), HTTP1_E_BAD_TARGET);
    CHECK_INT(PREQ("GET http://user@host/ HTTP/1.1\r\nHost: x\r\n\r\n"), HTTP1_E_BAD_TARGET);
    CHECK_INT(PREQ("GET ftp://host/ HTTP/1.1\r\nHost: x\r\n\r\n"), HTTP1_E_BAD_TARGET);
    CHECK_INT(PREQ("GET http:/host/ HTTP/1.1\r\nHost: x\r\n\r\n"), HTTP1_E_BAD_TARGET);
    CHECK_INT(PREQ("GET index.html HTTP/1.1\r\nHost: x\r\n\r\n"), HTTP1_E_BAD_TARGET);
    CHECK_INT(PREQ("GET /a#frag HTTP/1.1\r\nHost: x\r\n\r\n"), HTTP1_E_BAD_TARGET);
    CHECK_INT(PREQ("GET http://h/#f HTTP/1.1\r\nHost: x\r\n\r\n"), HTTP1_E_BAD_TARGET);

    CHECK(PREQ("OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n") > 0);
    CHECK_STRV(req.path, "*");
    CHECK_INT(PREQ("GET * HTTP/1.1\r\nHost: x\r\n\r\n"), HTTP1_E_BAD_TARGET);
    CHECK_INT(PREQ("OPTIONS *x HTTP/1.1\r\nHost: x\r\n\r\n"), HTTP1_E_BAD_TARGET);
    CHECK(PREQ("OPTIONS /a HTTP/1.1\r\nHost: x\r\n\r\n") > 0);

    CHECK(PREQ("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n") > 0);
    CHECK_STRV(req.authority, "example.com:443");
    CHECK_INT(req.path.n, 0);
    CHECK(!req.is_absolute_form);
    CHECK(PREQ("CONNECT [::1]:8443 HTTP/1.1\r\nHost: x\r\n\r\n") > 0);
    CHECK_STRV(req.authority, "[::1]:8443");
    CHECK_INT(PREQ("CONNECT / HTTP/1.1\r\nHost: x\r\n\r\n"), HTTP1_E_BAD_TARGET);
    CHECK_INT(PREQ("CONNECT example.com HTTP/1.1\r\nHost: x\r\n\r\n"), HTTP1_E_BAD_TARGET);
    CHECK_INT(PREQ("CONNECT example.com: HTTP/1.1\r\nHost: x\r\n\r\n"), HTTP1_E_BAD_TARGET);
    CHECK_INT(PREQ("CONNECT :443 HTTP/1.1\r\nHost: x\r\n\r\n"), HTTP1_E_BAD_TARGET);
    CHECK_INT(PREQ("CONNECT h:44x HTTP/1.1\r\nHost: x\r\n\r\n"), HTTP1_E_BAD_TARGET);
    CHECK_INT(PREQ("CONNECT u@h:443 HTTP/1.1\r\nHost: x\r\n\r\n"), HTTP1_E_BAD_TARGET);
    CHECK_INT(PREQ("CONNECT http://h:443/ HTTP/1.1\r\nHost: x\r\n\r\n"), HTTP1_E_BAD_TARGET);
}

static void test_fields(void)
{
    CHECK(PREQ("GET / HTTP/1.1\r\nHost: h\r\nX-A: \t a  b \t\r\nX-Obs: caf\xc3\xa9\r\n\r\n") > 0);
    CHECK_STRV(req.headers[1].value, "a  b");
    CHECK_STRV(req.headers[2].value, "caf\xc3\xa9");
    CHECK(PREQ("GET / HTTP/1.1\r\nHost: h\r\n!#$%&'*+-.^_`|~09azAZ: v\r\n\r\n") > 0);
    CHECK_STRV(req.headers[1].name, "!#$%&'*+-.^_`|~09azAZ");

    CHECK_INT(PREQ("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n b\r\n\r\n"), HTTP1_E_OBS_FOLD);
    CHECK_INT(PREQ("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n\tb\r\n\r\n"), HTTP1_E_OBS_FOLD);
    CHECK_INT(PREQ("GET / HTTP/1.1\r\n Host: h\r\n\r\n"), HTTP1_E_OBS_FOLD);
    CHECK_INT(PREQ("GET / HTTP/1.1\r\nHost : h\r\n\r\n"), HTTP1_E_SPACE_BEFORE_COLON);
    CHECK_INT(PREQ("GET / HTTP/1.1\r\nHost\t: h\r\n\r\n"), HTTP1_E_SPACE_BEFORE_COLON);
    CHECK_INT(PREQ("GET / HTTP/1.1\r\nHost: h\r\nContent-Length \t : 5\r\n\r\n"), HTTP1_E_SPACE_BEFORE_COLON);
    CHECK_INT(PREQ("GET / HTTP/1.1\r\nHost: h\r\nX A: b\r\n\r\n"), HTTP1_E_BAD_TOKEN);
    CHECK_INT(PREQ("GET / HTTP/1.1\r\nHost: h\r\n: b\r\n\r\n"), HTTP1_E_BAD_TOKEN);
    CHECK_INT(PREQ("GET / HTTP/1.1\r\nHost: h\r\nX(A): b\r\n\r\n"), HTTP1_E_BAD_TOKEN);
    CHECK_INT(PREQ("GET / HTTP/1.1\r\nHost: h\r\nX\x7f: b\r\n\r\n"), HTTP1_E_BAD_TOKEN);
    CHECK_INT(PREQ("GET / HTTP/1.1\r\nHost: h\r\nX\xc3\xa9: b\r\n\r\n"), HTTP1_E_BAD_TOKEN);
    CHECK_INT(PREQ("GET / HTTP/1.1\r\nHost: h\r\nX\0A: b\r\n\r\n"), HTTP1_E_BAD_TOKEN);
    CHECK_INT(PREQ("GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n"), HTTP1_E_BAD_REQUEST);
    CHECK_INT(PREQ("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\0b\r\n\r\n"), HTTP1_E_BAD_VALUE);
    CHECK_INT(PREQ("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\x01\r\n\r\n"), HTTP1_E_BAD_VALUE);
    CHECK_INT(PREQ("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\x7f\r\n\r\n"), HTTP1_E_BAD_VALUE);
    CHECK_INT(PREQ("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\x1b[31m\r\n\r\n"), HTTP1_E_BAD_VALUE);
    CHECK_INT(PREQ("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\rb\r\n\r\n"), HTTP1_E_BARE_CR);
    CHECK_INT(PREQ("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\nX-B: b\r\n\r\n"), HTTP1_E_BARE_CR);
    CHECK_INT(PREQ("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n\n"), HTTP1_E_BARE_CR);
    CHECK_INT(PREQ("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n\rX"), HTTP1_E_BARE_CR);
    CHECK_INT(PREQ("GET / HTTP/1.1\r\nHost: h\r\nX-A\r: a\r\n\r\n"), HTTP1_E_BARE_CR);
    CHECK_INT(PREQ("GET / HTTP/1.1\nHost: h\n\n"), HTTP1_E_BARE_CR);
}

static void test_host(void)
{
    CHECK_INT(PREQ("GET / HTTP/1.1\r\n\r\n"), HTTP1_E_BAD_HOST);
    CHECK_INT(PREQ("GET / HTTP/1.1\r\nX-Host: h\r\n\r\n"), HTTP1_E_BAD_HOST);
    CHECK_INT(PREQ("GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n"), HTTP1_E_BAD_HOST);
    CHECK_INT(PREQ("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n"), HTTP1_E_BAD_HOST);
    CHECK_INT(PREQ("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), HTTP1_E_BAD_HOST);
    CHECK_INT(PREQ("GET / HTTP/1.1\r\nHost: a\tb\r\n\r\n"), HTTP1_E_BAD_HOST);
    CHECK_INT(PREQ("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"), HTTP1_E_BAD_HOST);
    CHECK_INT(PREQ("GET / HTTP/1.1\r\nHost: u@a\r\n\r\n"), HTTP1_E_BAD_HOST);
    CHECK_INT(PREQ("GET / HTTP/1.1\r\nHost: caf\xc3\xa9\r\n\r\n"), HTTP1_E_BAD_HOST);
    CHECK(PREQ("GET / HTTP/1.1\r\nHost: \r\n\r\n") > 0); /* RFC 9112 §3.2: empty when no authority */
    CHECK_INT(req.host.n, 0);
    CHECK(PREQ("GET / HTTP/1.1\r\nHOST: [::1]:8080\r\n\r\n") > 0);
    CHECK_STRV(req.host, "[::1]:8080");
    CHECK(PREQ("GET / HTTP/1.1\r\nHost:  xn--caf-dma.example:80 \r\n\r\n") > 0);
    CHECK_STRV(req.host, "xn--caf-dma.example:80");
    CHECK(PREQ("GET / HTTP/1.0\r\n\r\n") > 0);
    CHECK_INT(req.host.n, 0);
    CHECK_INT(req.minor_version, 0);
}

static void test_content_length(void)
{
    CHECK(PREQ("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello") > 0);
    CHECK_INT(req.body_kind, HTTP1_BODY_LENGTH);
    CHECK_INT(req.content_length, 5);
    CHECK(PREQ("POST / HTTP/1.1\r\nHost: h\r\ncontent-length:  0 \r\n\r\n") > 0);
    CHECK_INT(req.body_kind, HTTP1_BODY_LENGTH);
    CHECK_INT(req.content_length, 0);
    CHECK(PREQ("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 18446744073709551615\r\n\r\n") > 0);
    CHECK(req.content_length == UINT64_MAX);
    CHECK(PREQ("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 007\r\n\r\n") > 0);
    CHECK_INT(req.content_length, 7);

    static const char *const bad[] = {
        "Content-Length: 5\r\nContent-Length: 5\r\n", /* equal duplicate: still refused */
        "Content-Length: 5\r\nContent-Length: 6\r\n",
        "Content-Length: 5, 5\r\n",
        "Content-Length: +5\r\n",
        "Content-Length: -5\r\n",
        "Content-Length: 5 5\r\n",
        "Content-Length: 0x5\r\n",
        "Content-Length: 5a\r\n",
        "Content-Length: 5.0\r\n",
        "Content-Length:\r\n",
        "Content-Length: 18446744073709551616\r\n",
        "Content-Length: 99999999999999999999999\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char m[256];
        int n = snprintf(m, sizeof m, "POST / HTTP/1.1\r\nHost: h\r\n%s\r\n", bad[i]);
        int rc = parse_req_lim(m, (size_t)n, NULL, 128);
        if (rc != HTTP1_E_BAD_CONTENT_LENGTH)
            fprintf(stderr, "case %zu: %s", i, bad[i]);
        CHECK_INT(rc, HTTP1_E_BAD_CONTENT_LENGTH);
    }
}

static void test_transfer_encoding(void)
{
    CHECK(PREQ("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n") > 0);
    CHECK_INT(req.body_kind, HTTP1_BODY_CHUNKED);
    CHECK(PREQ("POST / HTTP/1.1\r\nHost: h\r\ntransfer-encoding:  ChUnKeD \r\n\r\n") > 0);
    CHECK_INT(req.body_kind, HTTP1_BODY_CHUNKED);

    static const char *const bad[] = {
        "Transfer-Encoding: gzip, chunked\r\n",
        "Transfer-Encoding: chunked, chunked\r\n",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n",
        "Transfer-Encoding: chunked, gzip\r\n",
        "Transfer-Encoding: gzip\r\n",
        "Transfer-Encoding: identity\r\n",
        "Transfer-Encoding: xchunked\r\n",
        "Transfer-Encoding: chunkedx\r\n",
        "Transfer-Encoding: chunked;foo\r\n",
        "Transfer-Encoding: chunked;q=1\r\n",
        "Transfer-Encoding: \"chunked\"\r\n",
        "Transfer-Encoding:\r\n",
        "Transfer-Encoding: chunked,\r\n",
        "Transfer-Encoding: , chunked\r\n",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding:\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char m[256];
        int n = snprintf(m, sizeof m, "POST / HTTP/1.1\r\nHost: h\r\n%s\r\n", bad[i]);
        int rc = parse_req_lim(m, (size_t)n, NULL, 128);
        if (rc != HTTP1_E_BAD_TRANSFER_ENCODING)
            fprintf(stderr, "case %zu: %s", i, bad[i]);
        CHECK_INT(rc, HTTP1_E_BAD_TRANSFER_ENCODING);
    }

    /* The smuggling pairs. */
    CHECK_INT(PREQ("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
              HTTP1_E_CL_AND_TE);
    CHECK_INT(PREQ("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n"),
              HTTP1_E_CL_AND_TE);
    CHECK_INT(PREQ("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\nContent-Length: 5\r\n\r\n"),
              HTTP1_E_CL_AND_TE);
    CHECK_INT(PREQ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), HTTP1_E_BAD_TRANSFER_ENCODING);
    CHECK_INT(PREQ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"),
              HTTP1_E_CL_AND_TE);
}

static void test_keep_alive_matrix(void)
{
    static const struct {
        const char *version, *connection;
        bool keep_alive;
    } cases[] = {
        { "1.1", NULL, true },
        { "1.1", "close", false },
        { "1.1", "Close", false },
        { "1.1", "keep-alive", true },
        { "1.1", "Upgrade, close", false },
        { "1.1", "te, Keep-Alive", true },
        { "1.1", "closed", true },
        { "1.0", NULL, false },
        { "1.0", "keep-alive", true },
        { "1.0", "KEEP-ALIVE", true },
        { "1.0", "close", false },
        { "1.0", "keep-alive, close", false },
        { "1.0", "keep-alive\r\nConnection: close", false },
        { "1.0", "keepalive", false },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char m[256];
        int n;
        if (cases[i].connection)
            n = snprintf(m, sizeof m, "GET / HTTP/%s\r\nHost: h\r\nConnection: %s\r\n\r\n", cases[i].version,
                         cases[i].connection);
        else
            n = snprintf(m, sizeof m, "GET / HTTP/%s\r\nHost: h\r\n\r\n", cases[i].version);
        CHECK_INT(parse_req_lim(m, (size_t)n, NULL, 128), n);
        if (req.keep_alive != cases[i].keep_alive)
            fprintf(stderr, "case %zu: HTTP/%s Connection: %s\n", i, cases[i].version,
                    cases[i].connection ? cases[i].connection : "(none)");
        CHECK(req.keep_alive == cases[i].keep_alive);
    }
}

static void test_expect(void)
{
    CHECK(PREQ("POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n") > 0);
    CHECK(req.expect_continue);
    CHECK(PREQ("POST / HTTP/1.1\r\nHost: h\r\nexpect:  100-Continue \r\nContent-Length: 3\r\n\r\n") > 0);
    CHECK(req.expect_continue);
    CHECK(PREQ("POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n") > 0);
    CHECK(!req.expect_continue);
    /* Other expectations are the caller's to refuse (417). */
    CHECK(PREQ("POST / HTTP/1.1\r\nHost: h\r\nExpect: 200-ok\r\nContent-Length: 3\r\n\r\n") > 0);
    CHECK(!req.expect_continue);
}

static char *make_target_request(size_t target_len, bool complete)
{
    char *m = malloc(target_len + 64);
    size_t n = 0;
    memcpy(m, "GET /", 5);
    n = 5;
    memset(m + n, 'a', target_len - 1);
    n += target_len - 1;
    if (complete) {
        memcpy(m + n, " HTTP/1.1\r\nHost: h\r\n\r\n", 22);
        n += 22;
    }
    m[n] = '\0';
    return m;
}

static void test_uri_limit(void)
{
    char *m = make_target_request(8192, true);
    CHECK_INT(http1_parse_request(m, strlen(m), NULL, &req, hdrs, 128), (int)strlen(m));
    CHECK_INT(req.target.n, 8192);
    free(m);
    m = make_target_request(8193, true);
    CHECK_INT(http1_parse_request(m, strlen(m), NULL, &req, hdrs, 128), HTTP1_E_URI_TOO_LONG);
    free(m);
    /* A huge URI still arriving: 414 as soon as it passes the bound. */
    m = make_target_request(9000, false);
    CHECK_INT(http1_parse_request(m, strlen(m), NULL, &req, hdrs, 128), HTTP1_E_URI_TOO_LONG);
    CHECK_INT(http1_parse_request(m, 5 + 8192, NULL, &req, hdrs, 128), HTTP1_E_URI_TOO_LONG);
    CHECK_INT(http1_parse_request(m, 5 + 8191, NULL, &req, hdrs, 128), HTTP1_INCOMPLETE);
    free(m);

    struct http1_limits lim = { 8, 1024, 10 };
    CHECK_INT(PREQ_LIM("GET /1234567 HTTP/1.1\r\nHost: h\r\n\r\n", &lim), 34);
    CHECK_INT(PREQ_LIM("GET /12345678 HTTP/1.1\r\nHost: h\r\n\r\n", &lim), HTTP1_E_URI_TOO_LONG);
    CHECK_INT(http1_parse_request("GET /12345678", 13, &lim, &req, hdrs, 128), HTTP1_E_URI_TOO_LONG);
}

static void test_header_limits(void)
{
    enum { BIG = 40000 };
    char *m = malloc(BIG + 100);
    size_t n = (size_t)sprintf(m, "GET / HTTP/1.1\r\nHost: h\r\nX-Pad: ");
    memset(m + n, 'x', BIG);
    n += BIG;
    /* Incomplete but already over the bound: refuse instead of buffering. */
    CHECK_INT(http1_parse_request(m, n, NULL, &req, hdrs, 128), HTTP1_E_HEADERS_TOO_LARGE);
    CHECK_INT(http1_parse_request(m, 32768, NULL, &req, hdrs, 128), HTTP1_INCOMPLETE);
    CHECK_INT(http1_parse_request(m, 32769, NULL, &req, hdrs, 128), HTTP1_E_HEADERS_TOO_LARGE);
    memcpy(m + n, "\r\n\r\n", 4);
    n += 4;
    CHECK_INT(http1_parse_request(m, n, NULL, &req, hdrs, 128), HTTP1_E_HEADERS_TOO_LARGE);
    free(m);

    /* Exactly at the bound is fine; one more byte is not. */
    struct http1_limits lim = { 64, 40, 10 };
    static const char fit[] = "GET / HTTP/1.1\r\nHost: h\r\nX: 12345678\r\n\r\n";
    CHECK_INT(LEN(fit), 40);
    CHECK_INT(PREQ_LIM(fit, &lim), 40);
    CHECK_INT(PREQ_LIM("GET / HTTP/1.1\r\nHost: h\r\nX: 123456789\r\n\r\n", &lim), HTTP1_E_HEADERS_TOO_LARGE);
    /* Leading empty lines do not count against the head. */
    CHECK_INT(PREQ_LIM("\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\nX: 12345678\r\n\r\n", &lim), 44);
}

static size_t make_fields_request(char *m, size_t nfields)
{
    size_t n = (size_t)sprintf(m, "GET / HTTP/1.1\r\nHost: h\r\n");
    for (size_t i = 1; i < nfields; i++)
        n += (size_t)sprintf(m + n, "X-F%zu: %zu\r\n", i, i);
    n += (size_t)sprintf(m + n, "\r\n");
    return n;
}

static void test_field_count_limits(void)
{
    char m[4096];
    struct http1_header many[200];
    size_t n = make_fields_request(m, 100);
    CHECK_INT(http1_parse_request(m, n, NULL, &req, many, 200), (int)n);
    CHECK_INT(req.nheaders, 100);
    n = make_fields_request(m, 101);
    CHECK_INT(http1_parse_request(m, n, NULL, &req, many, 200), HTTP1_E_HEADERS_TOO_LARGE);
    /* The caller's array is the bound when smaller. */
    n = make_fields_request(m, 11);
    CHECK_INT(http1_parse_request(m, n, NULL, &req, many, 10), HTTP1_E_HEADERS_TOO_LARGE);
    CHECK_INT(http1_parse_request(m, n, NULL, &req, many, 11), (int)n);
    CHECK_INT(http1_parse_request("GET / HTTP/1.0\r\n\r\n", 18, NULL, &req, NULL, 0), 18);
    CHECK_INT(http1_parse_request("GET / HTTP/1.0\r\nA: b\r\n\r\n", 24, NULL, &req, NULL, 0),
              HTTP1_E_HEADERS_TOO_LARGE);
    struct http1_limits lim = { 8192, 32768, 2 };
    CHECK_INT(PREQ_LIM("GET / HTTP/1.1\r\nHost: h\r\nA: b\r\n\r\n", &lim), 33);
    CHECK_INT(PREQ_LIM("GET / HTTP/1.1\r\nHost: h\r\nA: b\r\nC: d\r\n\r\n", &lim), HTTP1_E_HEADERS_TOO_LARGE);
}

static void test_pipelining(void)
{
    static const char m[] = "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
                            "GET /b HTTP/1.1\r\nHost: h\r\n\r\n"
                            "GET /c HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
    size_t n = sizeof m - 1, off = 0;
    int rc = http1_parse_request(m, n, NULL, &req, hdrs, 128);
    CHECK_INT(rc, 48);
    CHECK_STRV(req.path, "/a");
    CHECK_INT(req.content_length, 5);
    CHECK(memcmp(m + rc, "hello", 5) == 0);
    off = (size_t)rc + 5;
    rc = http1_parse_request(m + off, n - off, NULL, &req, hdrs, 128);
    CHECK_INT(rc, 28);
    CHECK_STRV(req.path, "/b");
    CHECK(req.keep_alive);
    off += (size_t)rc;
    rc = http1_parse_request(m + off, n - off, NULL, &req, hdrs, 128);
    CHECK_INT((size_t)rc, n - off);
    CHECK_STRV(req.path, "/c");
    CHECK(!req.keep_alive);
    /* A smuggled second request behind a valid one is the caller's next parse. */
    static const char s[] = "GET / HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\nHost: evil\r\n\r\n";
    rc = http1_parse_request(s, sizeof s - 1, NULL, &req, hdrs, 128);
    CHECK_INT(rc, 27);
    CHECK_INT(http1_parse_request(s + rc, sizeof s - 1 - (size_t)rc, NULL, &req, hdrs, 128), HTTP1_E_BAD_HOST);
}

/* ---- responses ---- */

static void test_responses(void)
{
    static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 12\r\nServer: x\r\n\r\nhello world!";
    CHECK_INT(PRESP(ok, false), LEN(ok) - 12);
    CHECK_INT(resp.status, 200);
    CHECK_STRV(resp.reason, "OK");
    CHECK_INT(resp.minor_version, 1);
    CHECK_INT(resp.nheaders, 2);
    CHECK_INT(resp.body_kind, HTTP1_BODY_LENGTH);
    CHECK_INT(resp.content_length, 12);
    CHECK(resp.keep_alive);

    CHECK_INT(PRESP(ok, true), LEN(ok) - 12);
    CHECK_INT(resp.body_kind, HTTP1_BODY_NONE);
    CHECK(resp.keep_alive);

    CHECK(PRESP("HTTP/1.1 404 Not  Found \r\nContent-Length: 0\r\n\r\n", false) > 0);
    CHECK_STRV(resp.reason, "Not  Found ");
    CHECK(PRESP("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", false) > 0);
    CHECK_INT(resp.status, 200);
    CHECK_INT(resp.reason.n, 0);
    CHECK(PRESP("HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n", false) > 0);
    CHECK_INT(resp.reason.n, 0);

    CHECK(PRESP("HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n", false) > 0);
    CHECK_INT(resp.body_kind, HTTP1_BODY_NONE);
    CHECK(PRESP("HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", false) > 0);
    CHECK_INT(resp.body_kind, HTTP1_BODY_NONE);
    CHECK(PRESP("HTTP/1.1 100 Continue\r\n\r\n", false) > 0);
    CHECK_INT(resp.body_kind, HTTP1_BODY_NONE);
    CHECK(resp.keep_alive);
    CHECK(PRESP("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", false) > 0);
    CHECK_INT(resp.body_kind, HTTP1_BODY_NONE);
    CHECK(PRESP("HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n", false) > 0);
    CHECK_INT(resp.status, 103);

    CHECK(PRESP("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false) > 0);
    CHECK_INT(resp.body_kind, HTTP1_BODY_CHUNKED);
    CHECK(resp.keep_alive);
    CHECK(PRESP("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", true) > 0);
    CHECK_INT(resp.body_kind, HTTP1_BODY_NONE);

    CHECK(PRESP("HTTP/1.1 200 OK\r\nServer: x\r\n\r\n", false) > 0);
    CHECK_INT(resp.body_kind, HTTP1_BODY_UNTIL_CLOSE);
    CHECK(!resp.keep_alive);
    CHECK(PRESP("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false) > 0);
    CHECK_INT(resp.minor_version, 0);
    CHECK(!resp.keep_alive);
    CHECK(PRESP("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n", false) > 0);
    CHECK(resp.keep_alive);
    CHECK(PRESP("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n", false) > 0);
    CHECK(!resp.keep_alive);
    CHECK(PRESP("HTTP/1.1 599 Whatever\r\nContent-Length: 0\r\n\r\n", false) > 0);
    CHECK_INT(resp.status, 599);

    CHECK_INT(PRESP("HTTP/1.1 099 X\r\n\r\n", false), HTTP1_E_BAD_STATUS);
    CHECK_INT(PRESP("HTTP/1.1 600 X\r\n\r\n", false), HTTP1_E_BAD_STATUS);
    CHECK_INT(PRESP("HTTP/1.1 20 X\r\n\r\n", false), HTTP1_E_BAD_STATUS);
    CHECK_INT(PRESP("HTTP/1.1 2000 X\r\n\r\n", false), HTTP1_E_BAD_STATUS);
    CHECK_INT(PRESP("HTTP/1.1  200 X\r\n\r\n", false), HTTP1_E_BAD_STATUS);
    CHECK_INT(PRESP("HTTP/1.1 2x0 X\r\n\r\n", false), HTTP1_E_BAD_STATUS);
    CHECK_INT(PRESP("http/1.1 200 OK\r\n\r\n", false), HTTP1_E_BAD_STATUS);
    CHECK_INT(PRESP("ICY 200 OK\r\n\r\n", false), HTTP1_E_BAD_STATUS);
    CHECK_INT(PRESP("HTTP/1.1 200 O\x01K\r\n\r\n", false), HTTP1_E_BAD_STATUS);
    CHECK_INT(PRESP("HTTP/2.0 200 OK\r\n\r\n", false), HTTP1_E_VERSION);
    CHECK_INT(PRESP("HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n", false), HTTP1_E_BARE_CR);
    CHECK_INT(PRESP("HTTP/1.1 200 OK\rContent-Length: 0\r\n\r\n", false), HTTP1_E_BARE_CR);
    CHECK_INT(PRESP("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", false),
              HTTP1_E_CL_AND_TE);
    CHECK_INT(PRESP("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", false),
              HTTP1_E_BAD_TRANSFER_ENCODING);
    CHECK_INT(PRESP("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false), HTTP1_E_BAD_TRANSFER_ENCODING);
    CHECK_INT(PRESP("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", false),
              HTTP1_E_BAD_CONTENT_LENGTH);
    CHECK_INT(PRESP("HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n", false), HTTP1_E_OBS_FOLD);
    CHECK_INT(PRESP("HTTP/1.1 200 OK\r\nX : a\r\n\r\n", false), HTTP1_E_SPACE_BEFORE_COLON);
    CHECK_INT(PRESP("HTTP/1.1 200 OK\r\nX: a\0\r\n\r\n", false), HTTP1_E_BAD_VALUE);

    CHECK_INT(PRESP("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n", false), HTTP1_INCOMPLETE);
    CHECK_INT(PRESP("HTTP/1.1 20", false), HTTP1_INCOMPLETE);
    CHECK_INT(PRESP("HTTP/1.1 200", false), HTTP1_INCOMPLETE);
    CHECK_INT(PRESP("HTTP/1.1 200 O", false), HTTP1_INCOMPLETE);
    CHECK_INT(PRESP("HTTP/1.1 200 OK\r", false), HTTP1_INCOMPLETE);
    CHECK_INT(PRESP("HTTP/1", false), HTTP1_INCOMPLETE);
    CHECK_INT(PRESP("", false), HTTP1_INCOMPLETE);

    /* A response head that never ends: 431 once it passes the bound. */
    struct http1_limits lim = { 64, 64, 10 };
    char big[100];
    memcpy(big, "HTTP/1.1 200 OK\r\nX: ", 20);
    memset(big + 20, 'a', sizeof big - 20);
    CHECK_INT(http1_parse_response(big, 64, &lim, false, &resp, hdrs, 128), HTTP1_INCOMPLETE);
    CHECK_INT(http1_parse_response(big, 65, &lim, false, &resp, hdrs, 128), HTTP1_E_HEADERS_TOO_LARGE);
    memcpy(big + 60, "\r\n\r\n", 4);
    CHECK_INT(http1_parse_response(big, 64, &lim, false, &resp, hdrs, 128), 64);
    memcpy(big + 60, "aa\r\n\r\n", 6);
    CHECK_INT(http1_parse_response(big, 66, &lim, false, &resp, hdrs, 128), HTTP1_E_HEADERS_TOO_LARGE);
    CHECK_INT(http1_parse_response("HTTP/1.1 200 OK\r\nA: b\r\nC: d\r\n\r\n", 31, &lim, false, &resp, hdrs, 1),
              HTTP1_E_HEADERS_TOO_LARGE);
}

/* ---- chunked ---- */

struct decoded {
    int result;
    size_t consumed;
    size_t n;
    uint64_t total;
    char data[4096];
};

/* Feeds s[0..n) in pieces of step bytes (0: all at once) until DONE or an
 * error, collecting the payload. */
static void decode(const char *s, size_t n, size_t step, size_t max_trailer, struct decoded *d)
{
    struct http1_chunked c;
    http1_chunked_init(&c);
    c.max_trailer_bytes = max_trailer;
    memset(d, 0, sizeof *d);
    size_t pos = 0;
    d->result = HTTP1_CHUNK_NEED_MORE;
    while (pos < n) {
        size_t end = step ? pos + step : n;
        if (end > n)
            end = n;
        /* Within one piece, call again while the decoder hands out data. */
        while (pos < end) {
            struct str data;
            size_t used = 99;
            int rc = http1_chunked_feed(&c, s + pos, end - pos, &data, &used);
            CHECK(used <= end - pos);
            pos += used;
            d->result = rc;
            if (rc == HTTP1_CHUNK_DATA) {
                CHECK(data.n > 0);
                CHECK(data.p >= s && data.p + data.n <= s + pos);
                memcpy(d->data + d->n, data.p, data.n);
                d->n += data.n;
                /* Data that used up the input is the same as "need more". */
                d->result = HTTP1_CHUNK_NEED_MORE;
                continue;
            }
            if (rc == HTTP1_CHUNK_NEED_MORE) {
                CHECK(pos == end);
                break;
            }
            d->consumed = pos;
            d->total = c.total;
            return;
        }
    }
    d->consumed = pos;
    d->total = c.total;
}

/* All at once, one byte at a time and 3 bytes at a time agree. */
static int decode_all_ways(const char *s, size_t n, struct decoded *d)
{
    struct decoded one, three;
    decode(s, n, 0, 0, d);
    decode(s, n, 1, 0, &one);
    decode(s, n, 3, 0, &three);
    CHECK_INT(one.result, d->result);
    CHECK_INT(three.result, d->result);
    CHECK_INT(one.n, d->n);
    CHECK_INT(three.n, d->n);
    CHECK(memcmp(one.data, d->data, d->n) == 0);
    CHECK(memcmp(three.data, d->data, d->n) == 0);
    if (d->result == HTTP1_CHUNK_DONE) {
        CHECK_INT(one.consumed, d->consumed);
        CHECK_INT(three.consumed, d->consumed);
    }
    CHECK(d->total == d->n);
    return d->result;
}

#define DECODE(lit, d) decode_all_ways(lit, sizeof(lit) - 1, d)

static void test_chunked_valid(void)
{
    struct decoded d;
    CHECK_INT(DECODE("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", &d), HTTP1_CHUNK_DONE);
    CHECK_INT(d.n, 11);
    CHECK(memcmp(d.data, "hello world", 11) == 0);
    CHECK_INT(d.consumed, 26);

    CHECK_INT(DECODE("0\r\n\r\n", &d), HTTP1_CHUNK_DONE);
    CHECK_INT(d.n, 0);
    CHECK_INT(DECODE("A\r\n0123456789\r\na\r\nabcdefghij\r\n00\r\n\r\n", &d), HTTP1_CHUNK_DONE);
    CHECK_INT(d.n, 20);
    CHECK_INT(DECODE("000000000000000F\r\n0123456789abcde\r\n0\r\n\r\n", &d), HTTP1_CHUNK_DONE);
    CHECK_INT(d.n, 15);

    /* Extensions: token and quoted values, several, and bare names. */
    CHECK_INT(DECODE("5;name=value\r\nhello\r\n0;last\r\n\r\n", &d), HTTP1_CHUNK_DONE);
    CHECK_INT(DECODE("5;a=b;c=d\r\nhello\r\n0\r\n\r\n", &d), HTTP1_CHUNK_DONE);
    CHECK_INT(DECODE("5;a=\"x\";b\r\nhello\r\n0\r\n\r\n", &d), HTTP1_CHUNK_DONE);
    CHECK_INT(DECODE("5;a;b=c;d=\"q \\\" ;=\\\\ x\"\r\nhello\r\n0\r\n\r\n", &d), HTTP1_CHUNK_DONE);
    CHECK_INT(d.n, 5);
    CHECK_INT(DECODE("5;a=\"\"\r\nhello\r\n0\r\n\r\n", &d), HTTP1_CHUNK_DONE);

    /* Trailers are validated and dropped. */
    CHECK_INT(DECODE("5\r\nhello\r\n0\r\nExpires: never\r\nX-Sum:  abc \r\nX-Empty:\r\n\r\n", &d),
              HTTP1_CHUNK_DONE);
    CHECK_INT(d.n, 5);
    CHECK_INT(d.consumed, 55);

    /* The next pipelined message is not consumed. */
    static const char pipe[] = "3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
    CHECK_INT(DECODE(pipe, &d), HTTP1_CHUNK_DONE);
    CHECK_INT(d.consumed, 13);

    /* Incomplete input: need more, with all of it consumed. */
    CHECK_INT(DECODE("5\r\nhel", &d), HTTP1_CHUNK_NEED_MORE);
    CHECK_INT(d.n, 3);
    CHECK_INT(DECODE("5\r\nhello\r\n0\r\nX: y\r\n", &d), HTTP1_CHUNK_NEED_MORE);
    CHECK_INT(DECODE("ffffffffffffffff\r\nab", &d), HTTP1_CHUNK_NEED_MORE);
    CHECK_INT(d.n, 2);
}

static void test_chunked_api(void)
{
    struct http1_chunked c;
    struct str data;
    size_t used;
    static const char m[] = "5\r\nhello\r\n0\r\n\r\nNEXT";
    http1_chunked_init(&c);
    CHECK_INT(http1_chunked_feed(&c, m, sizeof m - 1, &data, &used), HTTP1_CHUNK_DATA);
    CHECK_INT(used, 8);
    CHECK(data.p == m + 3);
    CHECK_INT(data.n, 5);
    CHECK_INT(http1_chunked_feed(&c, m + 8, sizeof m - 9, &data, &used), HTTP1_CHUNK_DONE);
    CHECK_INT(used, 7);
    CHECK_INT(c.total, 5);
    /* Done stays done, consuming nothing. */
    CHECK_INT(http1_chunked_feed(&c, "NEXT", 4, &data, &used), HTTP1_CHUNK_DONE);
    CHECK_INT(used, 0);
    CHECK_INT(http1_chunked_feed(&c, "", 0, &data, &used), HTTP1_CHUNK_DONE);

    /* Errors are sticky. */
    http1_chunked_init(&c);
    CHECK_INT(http1_chunked_feed(&c, "5 \r\n", 4, &data, &used), HTTP1_E_BAD_CHUNK);
    CHECK_INT(used, 1);
    CHECK_INT(http1_chunked_feed(&c, "5\r\nhello", 8, &data, &used), HTTP1_E_BAD_CHUNK);
    CHECK_INT(used, 0);
    http1_chunked_init(&c);
    CHECK_INT(http1_chunked_feed(&c, "", 0, &data, &used), HTTP1_CHUNK_NEED_MORE);
    CHECK_INT(used, 0);
}

static void test_chunked_errors(void)
{
    static const char *const bad[] = {
        "1 \r\na\r\n0\r\n\r\n",               /* space after size */
        " 1\r\na\r\n0\r\n\r\n",               /* space before */
        "1\t\r\na\r\n0\r\n\r\n",
        "1 ;a\r\na\r\n0\r\n\r\n",             /* BWS before ';' */
        "1; a\r\na\r\n0\r\n\r\n",
        "0x1\r\na\r\n0\r\n\r\n",
        "-1\r\na\r\n0\r\n\r\n",
        "+1\r\na\r\n0\r\n\r\n",
        "\r\na\r\n0\r\n\r\n",                 /* empty size */
        ";a\r\n",
        "10000000000000000\r\n",              /* 17 hex digits: overflow */
        "00000000000000001\r\n",
        "1g\r\n",
        "1\na\r\n0\r\n\r\n",                   /* bare LF */
        "1\r\ra\r\n",
        "5\r\nhelloX\r\n0\r\n\r\n",            /* no CRLF after data */
        "5\r\nhello\n0\r\n\r\n",
        "5\r\nhello\r0\r\n\r\n",
        "5\r\nhello\r\n0\r\n\n",
        "5\r\nhello\r\n0\r\n\rX",
        "5;\r\nhello\r\n0\r\n\r\n",             /* extension without name */
        "5;=x\r\nhello\r\n0\r\n\r\n",
        "5;a=\r\nhello\r\n0\r\n\r\n",
        "5;a=b=c\r\nhello\r\n0\r\n\r\n",
        "5;a=\"x\"y\r\nhello\r\n0\r\n\r\n",
        "5;a@b\r\nhello\r\n0\r\n\r\n",
        "0\r\nX: a\r\n b\r\n\r\n",             /* obs-fold in trailers */
        "0\r\n X: a\r\n\r\n",
        "0\r\nX : a\r\n\r\n",
        "0\r\n: a\r\n\r\n",
        "0\r\nNoColon\r\n\r\n",
        "0\r\nX: a\nY: b\r\n\r\n",
        "0\r\nX: a\rb\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct decoded d;
        int rc = decode_all_ways(bad[i], strlen(bad[i]), &d);
        if (rc != HTTP1_E_BAD_CHUNK)
            fprintf(stderr, "case %zu\n", i);
        CHECK_INT(rc, HTTP1_E_BAD_CHUNK);
    }
    /* NUL inside: DECODE takes the literal's size, not strlen. */
    struct decoded d;
    CHECK_INT(DECODE("5;a=\"x\0\"\r\nhello\r\n0\r\n\r\n", &d), HTTP1_E_BAD_CHUNK);
    CHECK_INT(DECODE("5;a=\"x\\\0\"\r\nhello\r\n0\r\n\r\n", &d), HTTP1_E_BAD_CHUNK);
    CHECK_INT(DECODE("0\r\nX: a\0b\r\n\r\n", &d), HTTP1_E_BAD_CHUNK);
    CHECK_INT(DECODE("5\0\r\nhello\r\n0\r\n\r\n", &d), HTTP1_E_BAD_CHUNK);

    /* A size line with extensions is bounded. */
    char line[5000];
    size_t n = (size_t)sprintf(line, "1;a=");
    memset(line + n, 'x', 4091); /* with "1;a=" and CRLF: 4097 bytes */
    n += 4091;
    memcpy(line + n, "\r\nz\r\n0\r\n\r\n", 10);
    n += 10;
    CHECK_INT(decode_all_ways(line, n, &d), HTTP1_E_BAD_CHUNK);
    n = (size_t)sprintf(line, "1;a=");
    memset(line + n, 'x', 4090); /* exactly 4096 bytes with CRLF */
    n += 4090;
    memcpy(line + n, "\r\nz\r\n0\r\n\r\n", 10);
    n += 10;
    CHECK_INT(decode_all_ways(line, n, &d), HTTP1_CHUNK_DONE);
    CHECK_INT(d.n, 1);
}

static void test_chunked_trailer_limit(void)
{
    char m[10000];
    size_t n = (size_t)sprintf(m, "1\r\na\r\n0\r\nX-Big: ");
    memset(m + n, 'b', 8200);
    n += 8200;
    memcpy(m + n, "\r\n\r\n", 4);
    n += 4;
    struct decoded d;
    CHECK_INT(decode_all_ways(m, n, &d), HTTP1_E_HEADERS_TOO_LARGE);
    CHECK_INT(d.n, 1);

    /* max_trailer_bytes counts the trailer lines; the final CRLF is free. */
    static const char t[] = "0\r\nA: b\r\n\r\n"; /* 6 bytes of trailer lines */
    decode(t, sizeof t - 1, 0, 6, &d);
    CHECK_INT(d.result, HTTP1_CHUNK_DONE);
    decode(t, sizeof t - 1, 1, 5, &d);
    CHECK_INT(d.result, HTTP1_E_HEADERS_TOO_LARGE);
    decode(t, sizeof t - 1, 0, 5, &d);
    CHECK_INT(d.result, HTTP1_E_HEADERS_TOO_LARGE);
    /* That error is sticky too. */
    struct http1_chunked c;
    struct str data;
    size_t used;
    http1_chunked_init(&c);
    c.max_trailer_bytes = 5;
    CHECK_INT(http1_chunked_feed(&c, t, sizeof t - 1, &data, &used), HTTP1_E_HEADERS_TOO_LARGE);
    CHECK_INT(used, 8);
    CHECK_INT(http1_chunked_feed(&c, "\r\n", 2, &data, &used), HTTP1_E_HEADERS_TOO_LARGE);
    CHECK_INT(used, 0);
}

static void test_chunked_one_byte_matches_whole(void)
{
    /* A mixed body of many chunk sizes: one byte per call, whole, and every
     * split point into two calls all decode the same. */
    char m[2048], expect[1024];
    size_t n = 0, ne = 0;
    for (int i = 1; i <= 20; i++) {
        n += (size_t)sprintf(m + n, i % 3 ? "%x\r\n" : "%X;i=%d;q=\"a\\\"b\"\r\n", i * 3, i);
        for (int k = 0; k < i * 3; k++) {
            m[n++] = (char)('a' + (k + i) % 26);
            expect[ne++] = (char)('a' + (k + i) % 26);
        }
        m[n++] = '\r';
        m[n++] = '\n';
    }
    n += (size_t)sprintf(m + n, "0;end\r\nT1: v1\r\nT2: v2\r\n\r\n");
    struct decoded whole, d;
    CHECK_INT(decode_all_ways(m, n, &whole), HTTP1_CHUNK_DONE);
    CHECK_INT(whole.n, ne);
    CHECK(memcmp(whole.data, expect, ne) == 0);
    CHECK_INT(whole.consumed, n);

    int mismatches = 0;
    for (size_t k = 1; k < n; k++) {
        struct http1_chunked c;
        size_t pos = 0, out = 0;
        int rc = 0;
        http1_chunked_init(&c);
        for (int part = 0; part < 2; part++) {
            size_t end = part ? n : k;
            while (pos < end) {
                struct str data;
                size_t used;
                rc = http1_chunked_feed(&c, m + pos, end - pos, &data, &used);
                pos += used;
                if (rc == HTTP1_CHUNK_DATA) {
                    memcpy(d.data + out, data.p, data.n);
                    out += data.n;
                } else {
                    break;
                }
            }
        }
        if (rc != HTTP1_CHUNK_DONE || out != ne || memcmp(d.data, expect, ne) != 0 || pos != n)
            mismatches++;
    }
    CHECK_INT(mismatches, 0);
}

static void test_errors_and_reasons(void)
{
    static const struct {
        int err, status;
        const char *code;
    } map[] = {
        { HTTP1_E_BAD_REQUEST, 400, "bad_request" },
        { HTTP1_E_URI_TOO_LONG, 414, "uri_too_long" },
        { HTTP1_E_HEADERS_TOO_LARGE, 431, "header_too_large" },
        { HTTP1_E_VERSION, 505, "http_version_not_supported" },
        { HTTP1_E_CL_AND_TE, 400, "cl_and_te" },
        { HTTP1_E_BAD_CONTENT_LENGTH, 400, "bad_content_length" },
        { HTTP1_E_BAD_TRANSFER_ENCODING, 400, "bad_transfer_encoding" },
        { HTTP1_E_OBS_FOLD, 400, "obs_fold" },
        { HTTP1_E_SPACE_BEFORE_COLON, 400, "space_before_colon" },
        { HTTP1_E_BARE_CR, 400, "bare_cr" },
        { HTTP1_E_BAD_TOKEN, 400, "bad_token" },
        { HTTP1_E_BAD_VALUE, 400, "bad_header_value" },
        { HTTP1_E_BAD_HOST, 400, "bad_host" },
        { HTTP1_E_BAD_TARGET, 400, "bad_target" },
        { HTTP1_E_BAD_CHUNK, 400, "bad_chunk" },
        { HTTP1_E_BAD_STATUS, 502, "bad_status" },
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        CHECK_INT(http1_error_status(map[i].err), map[i].status);
        CHECK_STR(http1_error_code(map[i].err), map[i].code);
    }
    CHECK_INT(http1_error_status(-999), 400);
    CHECK_STR(http1_error_code(-999), "bad_request");

    CHECK_STR(http1_reason_phrase(200), "OK");
    CHECK_STR(http1_reason_phrase(404), "Not Found");
    CHECK_STR(http1_reason_phrase(413), "Content Too Large");
    CHECK_STR(http1_reason_phrase(431), "Request Header Fields Too Large");
    CHECK_STR(http1_reason_phrase(505), "HTTP Version Not Supported");
    CHECK_STR(http1_reason_phrase(299), "Unknown");
    CHECK_STR(http1_reason_phrase(-1), "Unknown");

    CHECK_INT(http1_default_limits.max_request_line, 8192);
    CHECK_INT(http1_default_limits.max_header_bytes, 32768);
    CHECK_INT(http1_default_limits.max_headers, 100);
}

int main(void)
{
    RUN(test_simple_get);
    RUN(test_paths_and_queries);
    RUN(test_leading_empty_lines);
    RUN(test_request_line_errors);
    RUN(test_targets);
    RUN(test_fields);
    RUN(test_host);
    RUN(test_content_length);
    RUN(test_transfer_encoding);
    RUN(test_keep_alive_matrix);
    RUN(test_expect);
    RUN(test_uri_limit);
    RUN(test_header_limits);
    RUN(test_field_count_limits);
    RUN(test_pipelining);
    RUN(test_responses);
    RUN(test_chunked_valid);
    RUN(test_chunked_api);
    RUN(test_chunked_errors);
    RUN(test_chunked_trailer_limit);
    RUN(test_chunked_one_byte_matches_whole);
    RUN(test_errors_and_reasons);
    return check_done();
}
