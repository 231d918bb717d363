/* validate.c — email normalisation, password policy, uuid syntax. */
#include "validate.h"

#include <errno.h>
#include <string.h>

static bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v'; }

static struct str trim(struct str s)
{
    while (s.n && is_space(s.p[0])) {
        s.p++;
        s.n--;
    }
    while (s.n && is_space(s.p[s.n - 1]))
        s.n--;
    return s;
}

/* RFC 5322 atext plus '.', which is checked separately (no leading,
 * trailing or doubled dots). Quoted local parts are refused: nobody needs
 * them to sign up, and they make "the same address" ambiguous. */
static bool is_local_char(char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
        return true;
    return c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~.", c) != NULL;
}

static int check_local(const char *p, size_t n, const char **why)
{
    if (n == 0 || n > EMAIL_LOCAL_MAX) {
        *why = "\"email\" must have 1 to 64 characters before the @";
        return -EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        if (!is_local_char(p[i]) || (p[i] == '.' && (i == 0 || i == n - 1 || p[i - 1] == '.'))) {
            *why = "\"email\" has a character that is not allowed before the @";
            return -EINVAL;
        }
    }
    return 0;
}

static int check_domain(const char *p, size_t n, const char **why)
{
    size_t labels = 0, start = 0;
    *why = "\"email\" must have a domain such as example.com after the @";
    if (n == 0)
        return -EINVAL;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && p[i] != '.') {
            char c = p[i];
            if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
                return -EINVAL;
            continue;
        }
        size_t len = i - start;
        if (len == 0 || len > 63 || p[start] == '-' || p[i - 1] == '-')
            return -EINVAL;
        labels++;
        start = i + 1;
    }
    return labels >= 2 ? 0 : -EINVAL;
}

int email_normalize(const char *in, char *out, size_t outsz, const char **why)
{
    struct str s = trim(str_from_cstr(in));
    if (s.n == 0 || s.n > EMAIL_MAX || outsz < s.n + 1) {
        *why = "\"email\" must have 3 to 254 characters";
        return -EINVAL;
    }
    size_t at = SIZE_MAX;
    for (size_t i = 0; i < s.n; i++) {
        unsigned char c = (unsigned char)s.p[i];
        if (c < 0x21 || c > 0x7e) {
            *why = "\"email\" must be printable ASCII without spaces";
            return -EINVAL;
        }
        out[i] = str_lower_ascii((char)c);
        if (c == '@') {
            if (at != SIZE_MAX) {
                *why = "\"email\" must contain exactly one @";
                return -EINVAL;
            }
            at = i;
        }
    }
    out[s.n] = '\0';
    if (at == SIZE_MAX) {
        *why = "\"email\" must contain exactly one @";
        return -EINVAL;
    }
    if (check_local(out, at, why) < 0 || check_domain(out + at + 1, s.n - at - 1, why) < 0)
        return -EINVAL;
    return 0;
}

int password_check(const char *password, const char *email_norm, const char **why)
{
    struct str p = trim(str_from_cstr(password));
    if (str_eq_nocase(p, str_from_cstr(email_norm))) {
        *why = "\"password\" must not be the email address";
        return -EINVAL;
    }
    return 0;
}

static bool is_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

bool uuid_parse(struct str s, char *out)
{
    if (s.n != UUID_LEN)
        return false;
    for (size_t i = 0; i < UUID_LEN; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s.p[i] != '-' : !is_hex(s.p[i]))
            return false;
    }
    if (out) {
        for (size_t i = 0; i < UUID_LEN; i++)
            out[i] = str_lower_ascii(s.p[i]);
        out[UUID_LEN] = '\0';
    }
    return true;
}
