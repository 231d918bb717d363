/* http1_parse.c — strict HTTP/1.1 head parsing and chunked decoding.
 *
 * One forward pass over the bytes, no allocation, no copies. Every error is
 * decided from bytes already seen, so a prefix of a message never fails where
 * the whole message would succeed: a caller can re-run the parser on a
 * growing buffer and get the same answer as with everything at once.
 *
 * Choices the contract leaves open, made here:
 * - Content-Length: 0 gives HTTP1_BODY_LENGTH with content_length 0, so a
 *   caller can still tell "POST with an explicit empty body" from "no body".
 * - Duplicate Content-Length fields are refused even when equal. RFC 9112
 *   §6.3 lets a recipient merge identical values, but an intermediary that
 *   forwards both copies hands the next hop a message it may frame
 *   differently; one copy is all a correct client ever sends.
 * - Transfer-Encoding must list exactly one coding, "chunked": we decode no
 *   other coding, and empty list elements ("chunked,") are refused rather
 *   than skipped because parsers disagree about them.
 * - For absolute-form, req->host stays the Host field value; RFC 9112 §3.2.2
 *   says the authority of the target wins, so routing code should prefer
 *   req->authority when req->is_absolute_form. Host is still required in
 *   HTTP/1.1 (RFC 9112 §3.2: 400 for any 1.1 request without it).
 * - Host and authorities accept only the RFC 3986 host/port characters
 *   (unreserved, pct-encoded, sub-delims, ':', '[', ']'): a '/' or '@' in a
 *   Host is a cache-poisoning tool, not a host name.
 * - The request target must be ASCII (RFC 3986 has no raw bytes >= 0x80).
 * - Chunk lines take no whitespace at all, not even the BWS RFC 9112 §7.1.1
 *   allows around ';': "1 ;x" is read differently by different parsers.
 * - Response heads get the same framing rules as requests (a proxy turns the
 *   error into 502): we cannot forward a coding we do not decode. */
#include "core/http1_parse.h"

#include <limits.h>
#include <string.h>

const struct http1_limits http1_default_limits = { 8192, 32768, 100 };

/* RFC 9112 §2.2 lets a server skip empty lines before a request-line (old
 * clients send CRLF after a POST body); 4 covers them without letting a
 * peer stream CRLFs for free. */
#define MAX_LEADING_EMPTY_LINES 4
/* A chunk-size line with extensions; HAProxy and NGINX keep it within one
 * buffer too. Nobody needs more than a few dozen bytes. */
#define CHUNK_LINE_MAX 4096
/* 16 hex digits fill 64 bits exactly; a 17th would overflow. */
#define CHUNK_SIZE_DIGITS_MAX 16
#define TRAILER_BYTES_DEFAULT 8192

/* tchar (RFC 9110 §5.6.2). */
static const unsigned char tchar_tab[256] = {
    ['0' ... '9'] = 1, ['A' ... 'Z'] = 1, ['a' ... 'z'] = 1,
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1,
    ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1, ['~'] = 1,
};

/* RFC 3986 uri-host [":" port]: unreserved, pct-encoded, sub-delims, ':'
 * and the IP-literal brackets. */
static const unsigned char host_tab[256] = {
    ['0' ... '9'] = 1, ['A' ... 'Z'] = 1, ['a' ... 'z'] = 1,
    ['-'] = 1, ['.'] = 1, ['_'] = 1, ['~'] = 1, ['%'] = 1,
    ['!'] = 1, ['$'] = 1, ['&'] = 1, ['\''] = 1, ['('] = 1, [')'] = 1, ['*'] = 1, ['+'] = 1,
    [','] = 1, [';'] = 1, ['='] = 1, [':'] = 1, ['['] = 1, [']'] = 1,
};

static inline bool is_tchar(unsigned char c) { return tchar_tab[c]; }

/* field-value bytes (RFC 9110 §5.5): HTAB, SP, VCHAR, obs-text. */
static inline bool is_value_byte(unsigned char c) { return c == '\t' || (c >= 0x20 && c != 0x7f); }

static inline bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

static bool all_host_chars(struct str s)
{
    for (size_t i = 0; i < s.n; i++)
        if (!host_tab[(unsigned char)s.p[i]])
            return false;
    return true;
}

/* p[i] is CR or LF where the grammar wants something else. CRLF there is a
 * syntax error (err); a lone CR or LF is the bare line ending that lenient
 * parsers split differently. 0: one more byte is needed to tell. */
static int misplaced_eol(const char *p, size_t n, size_t i, int err)
{
    if (p[i] == '\n')
        return HTTP1_E_BARE_CR;
    if (i + 1 >= n)
        return HTTP1_INCOMPLETE;
    return p[i + 1] == '\n' ? err : HTTP1_E_BARE_CR;
}

/* CRLF at p[i]: 1 when there, 0 when more bytes are needed, else an error. */
static int expect_crlf(const char *p, size_t n, size_t i, int err)
{
    if (i >= n)
        return HTTP1_INCOMPLETE;
    if (p[i] != '\r' && p[i] != '\n')
        return err;
    if (p[i] == '\n')
        return HTTP1_E_BARE_CR;
    if (i + 1 >= n)
        return HTTP1_INCOMPLETE;
    return p[i + 1] == '\n' ? 1 : HTTP1_E_BARE_CR;
}

/* HTTP-version = "HTTP/" DIGIT "." DIGIT, case-sensitive (RFC 9112 §2.3).
 * 1 and *minor for 1.0 or 1.1; HTTP1_E_VERSION for another d.d; err when the
 * bytes are not shaped like a version; 0 when more are needed. */
static int parse_version(const char *p, size_t n, size_t i, int *minor, int err)
{
    static const char shape[] = "HTTP/";
    size_t avail = n - i;

    for (size_t k = 0; k < 8 && k < avail; k++) {
        unsigned char c = (unsigned char)p[i + k];
        bool ok = k < 5 ? c == (unsigned char)shape[k] : k == 6 ? c == '.' : is_digit(c);
        if (!ok)
            return err;
    }
    if (avail < 8)
        return HTTP1_INCOMPLETE;
    if (p[i + 5] != '1' || (p[i + 7] != '0' && p[i + 7] != '1'))
        return HTTP1_E_VERSION;
    *minor = p[i + 7] - '0';
    return 1;
}

/* Field lines from *pos through the empty line that ends the head. 1 and
 * *pos just past it, 0 for more bytes, or an error. */
static int parse_fields(const char *p, size_t n, size_t *pos, size_t max_fields, struct http1_header *headers,
                        size_t *nheaders)
{
    size_t i = *pos, count = 0;

    for (;;) {
        if (i >= n)
            return HTTP1_INCOMPLETE;
        unsigned char c = (unsigned char)p[i];
        if (c == '\r' || c == '\n') {
            int rc = expect_crlf(p, n, i, HTTP1_E_BAD_REQUEST);
            if (rc <= 0)
                return rc;
            *pos = i + 2;
            *nheaders = count;
            return 1;
        }
        /* obs-fold, or whitespace before the first field (RFC 9112 §2.2):
         * both let two parsers disagree on where a field starts. */
        if (c == ' ' || c == '\t')
            return HTTP1_E_OBS_FOLD;

        size_t name_start = i;
        while (i < n && is_tchar((unsigned char)p[i]))
            i++;
        if (i >= n)
            return HTTP1_INCOMPLETE;
        c = (unsigned char)p[i];
        if (c != ':') {
            if (c == ' ' || c == '\t') {
                size_t j = i;
                while (j < n && (p[j] == ' ' || p[j] == '\t'))
                    j++;
                if (j >= n)
                    return HTTP1_INCOMPLETE;
                return p[j] == ':' ? HTTP1_E_SPACE_BEFORE_COLON : HTTP1_E_BAD_TOKEN;
            }
            if (c == '\r' || c == '\n')
                return misplaced_eol(p, n, i, HTTP1_E_BAD_REQUEST);
            return HTTP1_E_BAD_TOKEN;
        }
        if (i == name_start)
            return HTTP1_E_BAD_TOKEN;
        if (count >= max_fields)
            return HTTP1_E_HEADERS_TOO_LARGE;
        struct str name = str_make(p + name_start, i - name_start);

        size_t value_start = ++i;
        while (i < n && is_value_byte((unsigned char)p[i]))
            i++;
        if (i >= n)
            return HTTP1_INCOMPLETE;
        c = (unsigned char)p[i];
        if (c != '\r' && c != '\n')
            return HTTP1_E_BAD_VALUE;
        int rc = expect_crlf(p, n, i, HTTP1_E_BAD_VALUE);
        if (rc <= 0)
            return rc;
        headers[count].name = name;
        headers[count].value = str_trim_ows(str_make(p + value_start, i - value_start));
        count++;
        i += 2;
    }
}

/* What the fields say about framing and the connection. */
struct framing {
    bool has_content_length;
    bool has_transfer_encoding;
    bool is_te_valid;      /* the combined Transfer-Encoding list is exactly "chunked" */
    bool has_close;
    bool has_keep_alive;
    bool has_expect_continue;
    uint64_t content_length;
    size_t nhost;
    struct str host;
};

/* Calls fn on each comma-separated element of a field value, OWS-trimmed
 * (RFC 9110 §5.6.1). Elements may be empty. */
static void for_each_element(struct str v, void (*fn)(struct str elem, struct framing *f), struct framing *f)
{
    size_t start = 0;
    for (size_t i = 0; i <= v.n; i++) {
        if (i == v.n || v.p[i] == ',') {
            fn(str_trim_ows(str_make(v.p + start, i - start)), f);
            start = i + 1;
        }
    }
}

static void te_element(struct str e, struct framing *f)
{
    /* Any element after the first — a second chunked, or chunked after
     * another coding — and anything but chunked makes the list invalid. */
    if (f->has_transfer_encoding || !str_eq_nocase(e, STR_LIT("chunked")))
        f->is_te_valid = false;
    else
        f->is_te_valid = true;
    f->has_transfer_encoding = true;
}

static void connection_element(struct str e, struct framing *f)
{
    if (str_eq_nocase(e, STR_LIT("close")))
        f->has_close = true;
    else if (str_eq_nocase(e, STR_LIT("keep-alive")))
        f->has_keep_alive = true;
}

static int scan_framing(const struct http1_header *h, size_t n, int minor, struct framing *f)
{
    memset(f, 0, sizeof *f);
    for (size_t i = 0; i < n; i++) {
        struct str name = h[i].name, value = h[i].value;
        if (str_eq_nocase(name, STR_LIT("content-length"))) {
            if (f->has_content_length || str_to_u64(value, &f->content_length) < 0)
                return HTTP1_E_BAD_CONTENT_LENGTH;
            f->has_content_length = true;
        } else if (str_eq_nocase(name, STR_LIT("transfer-encoding"))) {
            for_each_element(value, te_element, f);
        } else if (str_eq_nocase(name, STR_LIT("connection"))) {
            for_each_element(value, connection_element, f);
        } else if (str_eq_nocase(name, STR_LIT("host"))) {
            if (++f->nhost > 1 || !all_host_chars(value))
                return HTTP1_E_BAD_HOST;
            f->host = value;
        } else if (str_eq_nocase(name, STR_LIT("expect"))) {
            if (str_eq_nocase(value, STR_LIT("100-continue")))
                f->has_expect_continue = true;
        }
    }
    if (f->has_transfer_encoding) {
        /* RFC 9112 §6.1: both present is the classic smuggling vector; an
         * HTTP/1.0 message with Transfer-Encoding has faulty framing. */
        if (f->has_content_length)
            return HTTP1_E_CL_AND_TE;
        if (minor == 0 || !f->is_te_valid)
            return HTTP1_E_BAD_TRANSFER_ENCODING;
    }
    return 0;
}

static bool keep_alive_for(int minor, const struct framing *f)
{
    if (f->has_close)
        return false;
    return minor == 1 || f->has_keep_alive;
}

/* authority = host [":" port], without userinfo (RFC 9110 §4.2.4 says to
 * treat userinfo in an http(s) URI as an error). */
static bool is_valid_authority(struct str a)
{
    return a.n > 0 && all_host_chars(a);
}

static int parse_target(struct http1_request *req)
{
    struct str t = req->target;
    static const char root[] = "/";

    if (memchr(t.p, '#', t.n))
        return HTTP1_E_BAD_TARGET;
    bool is_connect = str_eq(req->method, STR_LIT("CONNECT"));

    if (is_connect) {
        /* authority-form: uri-host ":" port, port non-empty digits. */
        const char *colon = NULL;
        for (size_t i = t.n; i-- > 0;)
            if (t.p[i] == ':') {
                colon = t.p + i;
                break;
            }
        if (!colon || colon == t.p || !is_valid_authority(t))
            return HTTP1_E_BAD_TARGET;
        size_t port_len = (size_t)(t.p + t.n - colon - 1);
        if (port_len == 0 || port_len > 5)
            return HTTP1_E_BAD_TARGET;
        for (size_t i = 0; i < port_len; i++)
            if (!is_digit((unsigned char)colon[1 + i]))
                return HTTP1_E_BAD_TARGET;
        req->authority = t;
        return 0;
    }
    if (t.p[0] == '*') {
        if (t.n != 1 || !str_eq(req->method, STR_LIT("OPTIONS")))
            return HTTP1_E_BAD_TARGET;
        req->path = t;
        return 0;
    }
    struct str rest = t;
    if (t.p[0] != '/') {
        size_t scheme_len;
        if (t.n >= 7 && str_eq_nocase(str_make(t.p, 7), STR_LIT("http://")))
            scheme_len = 4;
        else if (t.n >= 8 && str_eq_nocase(str_make(t.p, 8), STR_LIT("https://")))
            scheme_len = 5;
        else
            return HTTP1_E_BAD_TARGET;
        req->scheme = str_make(t.p, scheme_len);
        size_t a = scheme_len + 3, e = a;
        while (e < t.n && t.p[e] != '/' && t.p[e] != '?')
            e++;
        req->authority = str_make(t.p + a, e - a);
        if (!is_valid_authority(req->authority))
            return HTTP1_E_BAD_TARGET;
        req->is_absolute_form = true;
        rest = str_make(t.p + e, t.n - e);
    }
    const char *q = memchr(rest.p, '?', rest.n);
    size_t path_len = q ? (size_t)(q - rest.p) : rest.n;
    req->path = path_len ? str_make(rest.p, path_len) : str_make(root, 1);
    if (q)
        req->query = str_make(q + 1, rest.n - path_len - 1);
    return 0;
}

/* Bytes ran out before the end of the head: fine unless the head already
 * exceeds its bound, in which case waiting for more would only buffer it. */
static int need_more(size_t have, const struct http1_limits *lim)
{
    return have > lim->max_header_bytes ? HTTP1_E_HEADERS_TOO_LARGE : HTTP1_INCOMPLETE;
}

static size_t min_size(size_t a, size_t b) { return a < b ? a : b; }

int http1_parse_request(const char *p, size_t n, const struct http1_limits *lim, struct http1_request *req,
                        struct http1_header *headers, size_t cap)
{
    size_t i = 0, start;
    int rc, minor = 0;

    if (!lim)
        lim = &http1_default_limits;
    memset(req, 0, sizeof *req);

    for (unsigned skipped = 0;; skipped++) {
        if (i >= n)
            return HTTP1_INCOMPLETE;
        if (p[i] != '\r' && p[i] != '\n')
            break;
        rc = expect_crlf(p, n, i, HTTP1_E_BAD_REQUEST);
        if (rc <= 0)
            return rc;
        if (skipped == MAX_LEADING_EMPTY_LINES)
            return HTTP1_E_BAD_REQUEST;
        i += 2;
    }
    start = i;

    /* method SP */
    while (i < n && is_tchar((unsigned char)p[i]))
        i++;
    if (i >= n)
        return need_more(n - start, lim);
    if (p[i] != ' ') {
        if (p[i] == '\r' || p[i] == '\n') {
            rc = misplaced_eol(p, n, i, HTTP1_E_BAD_REQUEST);
            return rc ? rc : need_more(n - start, lim);
        }
        return HTTP1_E_BAD_TOKEN;
    }
    if (i == start)
        return HTTP1_E_BAD_TOKEN;
    req->method = str_make(p + start, i - start);

    /* request-target SP: refused as soon as it outgrows the bound, so a
     * client trickling a huge URI gets 414 before we buffer it. */
    size_t target_start = ++i;
    for (;;) {
        if (i - target_start > lim->max_request_line)
            return HTTP1_E_URI_TOO_LONG;
        if (i >= n)
            return need_more(n - start, lim);
        unsigned char c = (unsigned char)p[i];
        if (c <= 0x20 || c >= 0x7f)
            break;
        i++;
    }
    if (p[i] != ' ') {
        if (p[i] == '\r' || p[i] == '\n') {
            /* "GET /" alone is HTTP/0.9, which we do not speak. */
            rc = misplaced_eol(p, n, i, HTTP1_E_BAD_REQUEST);
            return rc ? rc : need_more(n - start, lim);
        }
        return HTTP1_E_BAD_TARGET;
    }
    if (i == target_start)
        return HTTP1_E_BAD_REQUEST;
    req->target = str_make(p + target_start, i - target_start);

    /* HTTP-version CRLF */
    i++;
    rc = parse_version(p, n, i, &minor, HTTP1_E_BAD_REQUEST);
    if (rc <= 0)
        return rc ? rc : need_more(n - start, lim);
    i += 8;
    rc = expect_crlf(p, n, i, HTTP1_E_BAD_REQUEST);
    if (rc <= 0)
        return rc ? rc : need_more(n - start, lim);
    i += 2;
    req->minor_version = minor;
    rc = parse_target(req);
    if (rc < 0)
        return rc;

    rc = parse_fields(p, n, &i, min_size(cap, lim->max_headers), headers, &req->nheaders);
    if (rc <= 0)
        return rc ? rc : need_more(n - start, lim);
    if (i - start > lim->max_header_bytes || i > INT_MAX)
        return HTTP1_E_HEADERS_TOO_LARGE;
    req->headers = headers;

    struct framing f;
    rc = scan_framing(headers, req->nheaders, minor, &f);
    if (rc < 0)
        return rc;
    if (minor == 1 && f.nhost == 0)
        return HTTP1_E_BAD_HOST;
    req->host = f.host;
    req->keep_alive = keep_alive_for(minor, &f);
    req->expect_continue = minor == 1 && f.has_expect_continue;
    if (f.has_transfer_encoding) {
        req->body_kind = HTTP1_BODY_CHUNKED;
    } else if (f.has_content_length) {
        req->body_kind = HTTP1_BODY_LENGTH;
        req->content_length = f.content_length;
    } else {
        req->body_kind = HTTP1_BODY_NONE;
    }
    return (int)i;
}

int http1_parse_response(const char *p, size_t n, const struct http1_limits *lim, bool is_head_request,
                         struct http1_response *resp, struct http1_header *headers, size_t cap)
{
    size_t i = 0;
    int rc, minor = 0;

    if (!lim)
        lim = &http1_default_limits;
    memset(resp, 0, sizeof *resp);

    /* HTTP-version SP 3DIGIT [SP reason] CRLF. The reason is optional
     * because servers send "HTTP/1.1 200\r\n" in the wild. */
    rc = parse_version(p, n, 0, &minor, HTTP1_E_BAD_STATUS);
    if (rc <= 0)
        return rc ? rc : need_more(n, lim);
    for (i = 8; i < 12; i++) {
        if (i >= n)
            return need_more(n, lim);
        unsigned char c = (unsigned char)p[i];
        bool ok = i == 8 ? c == ' ' : i == 9 ? c >= '1' && c <= '5' : is_digit(c);
        if (!ok)
            return HTTP1_E_BAD_STATUS;
    }
    resp->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    if (i >= n)
        return need_more(n, lim);
    size_t reason_start = i;
    if (p[i] == ' ') {
        reason_start = ++i;
        while (i < n && is_value_byte((unsigned char)p[i]))
            i++;
        if (i >= n)
            return need_more(n, lim);
    }
    rc = expect_crlf(p, n, i, HTTP1_E_BAD_STATUS);
    if (rc <= 0)
        return rc ? rc : need_more(n, lim);
    resp->reason = str_make(p + reason_start, i - reason_start);
    i += 2;
    resp->minor_version = minor;

    rc = parse_fields(p, n, &i, min_size(cap, lim->max_headers), headers, &resp->nheaders);
    if (rc <= 0)
        return rc ? rc : need_more(n, lim);
    if (i > lim->max_header_bytes || i > INT_MAX)
        return HTTP1_E_HEADERS_TOO_LARGE;
    resp->headers = headers;

    struct framing f;
    rc = scan_framing(headers, resp->nheaders, minor, &f);
    if (rc < 0)
        return rc;
    resp->keep_alive = keep_alive_for(minor, &f);
    /* RFC 9112 §6.3, in its order. */
    if (is_head_request || resp->status < 200 || resp->status == 204 || resp->status == 304) {
        resp->body_kind = HTTP1_BODY_NONE;
    } else if (f.has_transfer_encoding) {
        resp->body_kind = HTTP1_BODY_CHUNKED;
    } else if (f.has_content_length) {
        resp->body_kind = HTTP1_BODY_LENGTH;
        resp->content_length = f.content_length;
    } else {
        resp->body_kind = HTTP1_BODY_UNTIL_CLOSE;
        resp->keep_alive = false;
    }
    return (int)i;
}

const struct http1_header *http1_find_header(const struct http1_header *headers, size_t n, struct str name)
{
    for (size_t i = 0; i < n; i++)
        if (str_eq_nocase(headers[i].name, name))
            return &headers[i];
    return NULL;
}

/* ---- chunked ------------------------------------------------------------ */

enum chunk_state {
    CS_SIZE,              /* chunk-size hex digits; line_bytes counts the line */
    CS_EXT_NAME_START,    /* after ';' */
    CS_EXT_NAME,
    CS_EXT_VALUE_START,   /* after '=' */
    CS_EXT_TOKEN,
    CS_EXT_QUOTED,
    CS_EXT_QUOTED_PAIR,   /* after '\' inside quotes */
    CS_EXT_QUOTED_END,    /* after the closing quote */
    CS_SIZE_LF,           /* CR of the size line seen */
    CS_DATA,
    CS_DATA_CR,
    CS_DATA_LF,
    CS_TRAILER_LINE,      /* start of a trailer line (or of the final CRLF) */
    CS_TRAILER_NAME,
    CS_TRAILER_VALUE,
    CS_TRAILER_LF,
    CS_FINAL_LF,
    CS_DONE,
    CS_ERR_CHUNK,
    CS_ERR_TRAILERS,
};

void http1_chunked_init(struct http1_chunked *c) { memset(c, 0, sizeof *c); }

/* qdtext (RFC 9110 §5.6.4): HTAB, SP, VCHAR except '"' and '\', obs-text. */
static inline bool is_qdtext(unsigned char c) { return is_value_byte(c) && c != '"' && c != '\\'; }

/* One byte of the size line (state CS_SIZE .. CS_SIZE_LF). false: invalid. */
static bool size_line_byte(struct http1_chunked *c, unsigned char ch)
{
    if (++c->line_bytes > CHUNK_LINE_MAX)
        return false;
    switch (c->state) {
    case CS_SIZE: {
        int v = str_hex_digit((char)ch);
        if (v >= 0) {
            /* In this state every byte of the line so far was a digit. */
            if (c->line_bytes > CHUNK_SIZE_DIGITS_MAX)
                return false;
            c->chunk_left = (c->chunk_left << 4) | (uint64_t)v;
            return true;
        }
        if (c->line_bytes == 1)
            return false; /* no digits */
        if (ch == ';')
            c->state = CS_EXT_NAME_START;
        else if (ch == '\r')
            c->state = CS_SIZE_LF;
        else
            return false;
        return true;
    }
    case CS_EXT_NAME_START:
        if (!is_tchar(ch))
            return false;
        c->state = CS_EXT_NAME;
        return true;
    case CS_EXT_NAME:
    case CS_EXT_TOKEN:
        if (is_tchar(ch))
            return true;
        if (ch == '=' && c->state == CS_EXT_NAME)
            c->state = CS_EXT_VALUE_START;
        else if (ch == ';')
            c->state = CS_EXT_NAME_START;
        else if (ch == '\r')
            c->state = CS_SIZE_LF;
        else
            return false;
        return true;
    case CS_EXT_VALUE_START:
        if (ch == '"')
            c->state = CS_EXT_QUOTED;
        else if (is_tchar(ch))
            c->state = CS_EXT_TOKEN;
        else
            return false;
        return true;
    case CS_EXT_QUOTED:
        if (ch == '"')
            c->state = CS_EXT_QUOTED_END;
        else if (ch == '\\')
            c->state = CS_EXT_QUOTED_PAIR;
        else if (!is_qdtext(ch))
            return false;
        return true;
    case CS_EXT_QUOTED_PAIR:
        if (!is_value_byte(ch))
            return false;
        c->state = CS_EXT_QUOTED;
        return true;
    case CS_EXT_QUOTED_END:
        if (ch == ';')
            c->state = CS_EXT_NAME_START;
        else if (ch == '\r')
            c->state = CS_SIZE_LF;
        else
            return false;
        return true;
    case CS_SIZE_LF:
        if (ch != '\n')
            return false;
        c->line_bytes = 0;
        c->state = c->chunk_left ? CS_DATA : CS_TRAILER_LINE;
        return true;
    default:
        return false;
    }
}

/* One byte of the trailer section. 0 ok, 1 message done, <0 error. */
static int trailer_byte(struct http1_chunked *c, unsigned char ch)
{
    size_t max = c->max_trailer_bytes ? c->max_trailer_bytes : TRAILER_BYTES_DEFAULT;

    /* The final empty line does not count against the bound. */
    if (!(c->state == CS_TRAILER_LINE && ch == '\r') && c->state != CS_FINAL_LF && ++c->line_bytes > max)
        return HTTP1_E_HEADERS_TOO_LARGE;
    switch (c->state) {
    case CS_TRAILER_LINE:
        if (ch == '\r')
            c->state = CS_FINAL_LF;
        else if (is_tchar(ch))
            c->state = CS_TRAILER_NAME;
        else
            return HTTP1_E_BAD_CHUNK; /* obs-fold, bare LF, empty name */
        return 0;
    case CS_TRAILER_NAME:
        if (ch == ':')
            c->state = CS_TRAILER_VALUE;
        else if (!is_tchar(ch))
            return HTTP1_E_BAD_CHUNK;
        return 0;
    case CS_TRAILER_VALUE:
        if (ch == '\r')
            c->state = CS_TRAILER_LF;
        else if (!is_value_byte(ch))
            return HTTP1_E_BAD_CHUNK;
        return 0;
    case CS_TRAILER_LF:
        if (ch != '\n')
            return HTTP1_E_BAD_CHUNK;
        c->state = CS_TRAILER_LINE;
        return 0;
    case CS_FINAL_LF:
        if (ch != '\n')
            return HTTP1_E_BAD_CHUNK;
        c->state = CS_DONE;
        return 1;
    default:
        return HTTP1_E_BAD_CHUNK;
    }
}

int http1_chunked_feed(struct http1_chunked *c, const char *in, size_t n, struct str *data, size_t *consumed)
{
    size_t i = 0;
    int rc;

    *data = STR_NULL;
    *consumed = 0;
    switch (c->state) {
    case CS_DONE:
        return HTTP1_CHUNK_DONE;
    case CS_ERR_CHUNK:
        return HTTP1_E_BAD_CHUNK;
    case CS_ERR_TRAILERS:
        return HTTP1_E_HEADERS_TOO_LARGE;
    }
    while (i < n) {
        unsigned char ch = (unsigned char)in[i];
        switch (c->state) {
        case CS_DATA: {
            size_t take = n - i;
            if ((uint64_t)take > c->chunk_left)
                take = (size_t)c->chunk_left;
            *data = str_make(in + i, take);
            c->chunk_left -= take;
            c->total += take;
            if (c->chunk_left == 0)
                c->state = CS_DATA_CR;
            *consumed = i + take;
            return HTTP1_CHUNK_DATA;
        }
        case CS_DATA_CR:
            if (ch != '\r')
                goto bad_chunk;
            c->state = CS_DATA_LF;
            break;
        case CS_DATA_LF:
            if (ch != '\n')
                goto bad_chunk;
            c->state = CS_SIZE;
            c->chunk_left = 0;
            c->line_bytes = 0;
            break;
        case CS_TRAILER_LINE:
        case CS_TRAILER_NAME:
        case CS_TRAILER_VALUE:
        case CS_TRAILER_LF:
        case CS_FINAL_LF:
            rc = trailer_byte(c, ch);
            if (rc == 1) {
                *consumed = i + 1;
                return HTTP1_CHUNK_DONE;
            }
            if (rc == HTTP1_E_HEADERS_TOO_LARGE) {
                c->state = CS_ERR_TRAILERS;
                *consumed = i;
                return rc;
            }
            if (rc < 0)
                goto bad_chunk;
            break;
        default:
            if (!size_line_byte(c, ch))
                goto bad_chunk;
            break;
        }
        i++;
    }
    *consumed = n;
    return HTTP1_CHUNK_NEED_MORE;

bad_chunk:
    c->state = CS_ERR_CHUNK;
    *consumed = i;
    return HTTP1_E_BAD_CHUNK;
}

/* ---- errors and reasons ------------------------------------------------- */

bool http1_request_id_is_valid(struct str v)
{
    if (v.n == 0 || v.n > 128)
        return false;
    for (size_t i = 0; i < v.n; i++) {
        char c = v.p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
              c == '.' || c == ':'))
            return false;
    }
    return true;
}

int http1_error_status(int err)
{
    switch (err) {
    case HTTP1_E_URI_TOO_LONG:
        return 414;
    case HTTP1_E_HEADERS_TOO_LARGE:
        return 431;
    case HTTP1_E_VERSION:
        return 505;
    case HTTP1_E_BAD_STATUS:
        return 502; /* only a peer's response has a status line: bad gateway */
    default:
        return 400;
    }
}

const char *http1_error_code(int err)
{
    switch (err) {
    case HTTP1_E_URI_TOO_LONG: return "uri_too_long";
    case HTTP1_E_HEADERS_TOO_LARGE: return "header_too_large";
    case HTTP1_E_VERSION: return "http_version_not_supported";
    case HTTP1_E_CL_AND_TE: return "cl_and_te";
    case HTTP1_E_BAD_CONTENT_LENGTH: return "bad_content_length";
    case HTTP1_E_BAD_TRANSFER_ENCODING: return "bad_transfer_encoding";
    case HTTP1_E_OBS_FOLD: return "obs_fold";
    case HTTP1_E_SPACE_BEFORE_COLON: return "space_before_colon";
    case HTTP1_E_BARE_CR: return "bare_cr";
    case HTTP1_E_BAD_TOKEN: return "bad_token";
    case HTTP1_E_BAD_VALUE: return "bad_header_value";
    case HTTP1_E_BAD_HOST: return "bad_host";
    case HTTP1_E_BAD_TARGET: return "bad_target";
    case HTTP1_E_BAD_CHUNK: return "bad_chunk";
    case HTTP1_E_BAD_STATUS: return "bad_status";
    default: return "bad_request";
    }
}

const char *http1_reason_phrase(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 103: return "Early Hints";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 203: return "Non-Authoritative Information";
    case 204: return "No Content";
    case 205: return "Reset Content";
    case 206: return "Partial Content";
    case 300: return "Multiple Choices";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 407: return "Proxy Authentication Required";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 421: return "Misdirected Request";
    case 422: return "Unprocessable Content";
    case 425: return "Too Early";
    case 426: return "Upgrade Required";
    case 428: return "Precondition Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 451: return "Unavailable For Legal Reasons";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    case 511: return "Network Authentication Required";
    default: return "Unknown";
    }
}
