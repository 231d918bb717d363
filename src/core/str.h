/* str.h — string views: a pointer and a length, never owning, never NUL-terminated.
 *
 * Parsers hand out views into the buffer they parsed, so the hot path copies
 * nothing; a view is valid as long as the bytes it points into. */
#ifndef STRATA_STR_H
#define STRATA_STR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct str {
    const char *p;
    size_t n;
};

#define STR_LIT(s) ((struct str){ (s), sizeof(s) - 1 })
#define STR_NULL ((struct str){ NULL, 0 })
/* printf("%.*s", STR_FMT(s)) */
#define STR_FMT(s) (int)(s).n, (s).p

static inline struct str str_make(const char *p, size_t n) { return (struct str){ p, n }; }
static inline struct str str_from_cstr(const char *s) { return (struct str){ s, s ? strlen(s) : 0 }; }

static inline bool str_eq(struct str a, struct str b)
{
    return a.n == b.n && (a.n == 0 || memcmp(a.p, b.p, a.n) == 0);
}

static inline char str_lower_ascii(char c) { return (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c; }

/* ASCII case-insensitive equality (header names, schemes, hosts). */
static inline bool str_eq_nocase(struct str a, struct str b)
{
    if (a.n != b.n)
        return false;
    for (size_t i = 0; i < a.n; i++)
        if (str_lower_ascii(a.p[i]) != str_lower_ascii(b.p[i]))
            return false;
    return true;
}

static inline bool str_has_prefix(struct str s, struct str prefix)
{
    return s.n >= prefix.n && memcmp(s.p, prefix.p, prefix.n) == 0;
}

static inline bool str_has_suffix(struct str s, struct str suffix)
{
    return s.n >= suffix.n && memcmp(s.p + s.n - suffix.n, suffix.p, suffix.n) == 0;
}

/* Trim spaces and horizontal tabs (HTTP's OWS) from both ends. */
static inline struct str str_trim_ows(struct str s)
{
    while (s.n && (s.p[0] == ' ' || s.p[0] == '\t')) { s.p++; s.n--; }
    while (s.n && (s.p[s.n - 1] == ' ' || s.p[s.n - 1] == '\t')) s.n--;
    return s;
}

/* The value of one hex digit, or -1. */
static inline int str_hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Strict unsigned decimal: digits only, no sign, no spaces, no overflow.
 * Returns 0 and sets *out, or -EINVAL (empty/non-digit) / -ERANGE (overflow). */
int str_to_u64(struct str s, uint64_t *out);

/* Copies s into dst (size dstsz) with a terminating NUL. Returns -ENOSPC if it
 * does not fit (dst is then the empty string). */
int str_copy_cstr(struct str s, char *dst, size_t dstsz);

/* The value of key in an urlencoded query ("a=1&b=x%20y"), percent- and
 * '+'-decoded into out (NUL-terminated): 1 found, 0 absent, -EINVAL
 * malformed, too long for out, or decoding to a NUL. */
int str_query_get(struct str query, const char *key, char *out, size_t outsz);

#endif
