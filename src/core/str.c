#include "core/str.h"

#include <errno.h>

int str_to_u64(struct str s, uint64_t *out)
{
    uint64_t v = 0;

    if (s.n == 0)
        return -EINVAL;
    for (size_t i = 0; i < s.n; i++) {
        unsigned d = (unsigned char)s.p[i] - '0';
        if (d > 9)
            return -EINVAL;
        if (v > (UINT64_MAX - d) / 10)
            return -ERANGE;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

int str_copy_cstr(struct str s, char *dst, size_t dstsz)
{
    if (dstsz == 0)
        return -ENOSPC;
    if (s.n >= dstsz) {
        dst[0] = '\0';
        return -ENOSPC;
    }
    if (s.n)
        memcpy(dst, s.p, s.n);
    dst[s.n] = '\0';
    return 0;
}

int str_query_get(struct str q, const char *key, char *out, size_t outsz)
{
    size_t klen = strlen(key);
    while (q.n) {
        const char *amp = memchr(q.p, '&', q.n);
        struct str part = str_make(q.p, amp ? (size_t)(amp - q.p) : q.n);
        q = amp ? str_make(amp + 1, q.n - part.n - 1) : STR_NULL;
        if (part.n < klen + 1 || memcmp(part.p, key, klen) || part.p[klen] != '=')
            continue;
        size_t o = 0;
        for (size_t i = klen + 1; i < part.n; i++) {
            char c = part.p[i];
            if (c == '%') {
                int hi = i + 2 < part.n ? str_hex_digit(part.p[i + 1]) : -1;
                int lo = hi >= 0 ? str_hex_digit(part.p[i + 2]) : -1;
                if (lo < 0)
                    return -EINVAL;
                c = (char)(hi * 16 + lo);
                i += 2;
            } else if (c == '+') {
                c = ' ';
            }
            if (o + 1 >= outsz || c == '\0')
                return -EINVAL;
            out[o++] = c;
        }
        out[o] = '\0';
        return 1;
    }
    return 0;
}
