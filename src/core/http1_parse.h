/* http1_parse.h — strict HTTP/1.1 message parsing (RFC 9110, RFC 9112).
 *
 * Parses in place: every field is a view into the caller's bytes, nothing is
 * copied or allocated. The parsers are restartable from the beginning: call
 * again with more bytes after HTTP1_INCOMPLETE (the head is bounded by
 * limits.max_header_bytes, so re-scanning costs at most that).
 *
 * Strictness is deliberate: what a lenient peer would interpret differently
 * is request smuggling, so it is refused (400, connection closed):
 * Content-Length with Transfer-Encoding, duplicate or conflicting or invalid
 * Content-Length, a Transfer-Encoding whose final coding is not chunked or
 * that names any coding other than chunked, obs-fold, whitespace between a
 * field name and its colon, bare CR or LF line endings, NUL and other control
 * characters in values, invalid token characters in methods and field names,
 * missing or duplicate Host in HTTP/1.1, and invalid chunk sizes.
 *
 * Pure functions, no global state: safe from any thread. */
#ifndef STRATA_HTTP1_PARSE_H
#define STRATA_HTTP1_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/str.h"

/* Returned for "need more bytes". */
#define HTTP1_INCOMPLETE 0

/* Errors (negative). http1_error_status() maps each to its HTTP status and
 * http1_error_code() to the reason code used in JSON error bodies. */
enum http1_error {
    HTTP1_E_BAD_REQUEST = -1,        /* 400 malformed syntax */
    HTTP1_E_URI_TOO_LONG = -2,       /* 414 request target over max_request_line */
    HTTP1_E_HEADERS_TOO_LARGE = -3,  /* 431 head over max_header_bytes or max_headers */
    HTTP1_E_VERSION = -4,            /* 505 not HTTP/1.0 or HTTP/1.1 */
    HTTP1_E_CL_AND_TE = -5,          /* 400 Content-Length and Transfer-Encoding together */
    HTTP1_E_BAD_CONTENT_LENGTH = -6, /* 400 invalid, duplicate or conflicting Content-Length */
    HTTP1_E_BAD_TRANSFER_ENCODING = -7, /* 400 unsupported coding, or chunked not final */
    HTTP1_E_OBS_FOLD = -8,           /* 400 obsolete line folding */
    HTTP1_E_SPACE_BEFORE_COLON = -9, /* 400 whitespace between field name and ':' */
    HTTP1_E_BARE_CR = -10,           /* 400 CR not followed by LF, or LF without CR */
    HTTP1_E_BAD_TOKEN = -11,         /* 400 invalid character in method or field name */
    HTTP1_E_BAD_VALUE = -12,         /* 400 control character in a field value */
    HTTP1_E_BAD_HOST = -13,          /* 400 missing (HTTP/1.1) or duplicate Host */
    HTTP1_E_BAD_TARGET = -14,        /* 400 invalid request target */
    HTTP1_E_BAD_CHUNK = -15,         /* 400 invalid chunk size line, extension or CRLF */
    HTTP1_E_BAD_STATUS = -16,        /* response: invalid status line */
};

enum http1_body_kind {
    HTTP1_BODY_NONE,        /* no body */
    HTTP1_BODY_LENGTH,      /* content_length bytes */
    HTTP1_BODY_CHUNKED,     /* chunked; decode with http1_chunked_feed */
    HTTP1_BODY_UNTIL_CLOSE, /* responses only: read until EOF */
};

struct http1_header {
    struct str name;  /* as sent; compare with str_eq_nocase */
    struct str value; /* leading/trailing OWS removed */
};

struct http1_limits {
    size_t max_request_line; /* request target bytes; longer → 414. 8192 as NGINX's buffer */
    size_t max_header_bytes; /* whole head incl. request line; larger → 431 */
    size_t max_headers;      /* number of fields; more → 431 */
};

/* Defaults: 8 KiB request target, 32 KiB head, 100 fields (NGINX accepts
 * 4 × 8 KiB of header lines; 100 fields is what Envoy allows). */
extern const struct http1_limits http1_default_limits;

struct http1_request {
    struct str method;
    struct str target;    /* the request target exactly as sent */
    struct str path;      /* path part (origin-form, or of an absolute-form URI); "*" for asterisk-form */
    struct str query;     /* after '?', without it; empty if none */
    struct str scheme;    /* absolute-form only ("http"/"https"), else empty */
    struct str authority; /* absolute-form or authority-form (CONNECT) only */
    struct str host;      /* the Host field value (empty for HTTP/1.0 without Host) */
    int minor_version;    /* 0 or 1 */
    struct http1_header *headers; /* caller's array */
    size_t nheaders;
    enum http1_body_kind body_kind;
    uint64_t content_length;      /* when body_kind == HTTP1_BODY_LENGTH */
    bool keep_alive;              /* version default adjusted by Connection */
    bool expect_continue;         /* Expect: 100-continue */
    bool is_absolute_form;
};

struct http1_response {
    int status;
    struct str reason;
    int minor_version;
    struct http1_header *headers;
    size_t nheaders;
    enum http1_body_kind body_kind;
    uint64_t content_length;
    bool keep_alive;
};

/* Parses a request head from p[0..n). Returns the head's length (> 0,
 * through the blank line; leading empty lines are skipped and counted),
 * HTTP1_INCOMPLETE, or a negative enum http1_error. headers/cap is the
 * caller's array for the fields; more than min(cap, lim->max_headers) fields
 * → HTTP1_E_HEADERS_TOO_LARGE. lim NULL means http1_default_limits. */
int http1_parse_request(const char *p, size_t n, const struct http1_limits *lim,
                        struct http1_request *req, struct http1_header *headers, size_t cap);

/* Parses a response head. is_head_request: the request was HEAD (no body
 * whatever the fields say). 1xx, 204 and 304 have no body. */
int http1_parse_response(const char *p, size_t n, const struct http1_limits *lim, bool is_head_request,
                         struct http1_response *resp, struct http1_header *headers, size_t cap);

/* The first field named name (case-insensitive), or NULL. */
const struct http1_header *http1_find_header(const struct http1_header *headers, size_t n, struct str name);

/* ---- chunked transfer coding: a streaming, zero-copy decoder ------------ */

struct http1_chunked {
    int state;
    uint64_t chunk_left;  /* data bytes left in the current chunk */
    size_t line_bytes;    /* bytes of the current size line / trailer section seen */
    size_t max_trailer_bytes; /* 0 → 8 KiB */
    uint64_t total;       /* decoded bytes so far */
};

enum http1_chunk_result {
    HTTP1_CHUNK_NEED_MORE = 0, /* every input byte consumed; feed more */
    HTTP1_CHUNK_DATA = 1,      /* *data is a slice of payload inside the input */
    HTTP1_CHUNK_DONE = 2,      /* last chunk and trailers consumed; message complete */
};

void http1_chunked_init(struct http1_chunked *c);
/* Consumes input from in[0..n): sets *consumed to the bytes used. Returns
 * HTTP1_CHUNK_DATA with *data pointing into `in` (call again with the rest),
 * HTTP1_CHUNK_NEED_MORE, HTTP1_CHUNK_DONE (bytes after the message are not
 * consumed: they are the next pipelined message), or HTTP1_E_BAD_CHUNK /
 * HTTP1_E_HEADERS_TOO_LARGE (trailers over the bound). Trailer fields are
 * validated like header fields and then discarded (RFC 9110 §6.5.1 lets a
 * recipient discard them). */
int http1_chunked_feed(struct http1_chunked *c, const char *in, size_t n, struct str *data, size_t *consumed);

/* Whether a client's X-Request-Id may be kept (and logged, and forwarded):
 * 1..128 bytes of [A-Za-z0-9._:-]. Anything else is replaced by a new id,
 * so that ids can never inject into logs or headers. */
bool http1_request_id_is_valid(struct str v);

int http1_error_status(int err);
/* Stable snake_case reason code: "bad_request", "uri_too_long",
 * "header_too_large", "http_version_not_supported", "cl_and_te",
 * "bad_content_length", "bad_transfer_encoding", "obs_fold",
 * "space_before_colon", "bare_cr", "bad_token", "bad_header_value",
 * "bad_host", "bad_target", "bad_chunk", "bad_status". */
const char *http1_error_code(int err);
/* "Not Found" for 404 etc.; "Unknown" for codes it does not know. */
const char *http1_reason_phrase(int status);

#endif
