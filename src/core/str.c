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
