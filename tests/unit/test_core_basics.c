/* str, buf and arena. */
#include <errno.h>
#include <stdlib.h>

#include "check.h"
#include "core/arena.h"
#include "core/buf.h"
#include "core/rand.h"
#include "core/str.h"

static void test_str(void)
{
    uint64_t v;
    CHECK(str_eq_nocase(STR_LIT("Content-Length"), STR_LIT("content-length")));
    CHECK(!str_eq_nocase(STR_LIT("Content-Length"), STR_LIT("content-lengt")));
    CHECK_INT(str_to_u64(STR_LIT("18446744073709551615"), &v), 0);
    CHECK(v == UINT64_MAX);
    CHECK_INT(str_to_u64(STR_LIT("18446744073709551616"), &v), -ERANGE);
    CHECK_INT(str_to_u64(STR_LIT(""), &v), -EINVAL);
    CHECK_INT(str_to_u64(STR_LIT("+1"), &v), -EINVAL);
    CHECK_INT(str_to_u64(STR_LIT("1 "), &v), -EINVAL);
    CHECK_STRV(str_trim_ows(STR_LIT(" \t abc\t ")), "abc");
    CHECK(str_has_prefix(STR_LIT("/v1/users"), STR_LIT("/v1/")));
    CHECK(str_has_suffix(STR_LIT("a.example.com"), STR_LIT(".example.com")));
    char small[4];
    CHECK_INT(str_copy_cstr(STR_LIT("abcd"), small, sizeof small), -ENOSPC);
    CHECK_INT(str_copy_cstr(STR_LIT("abc"), small, sizeof small), 0);
    CHECK_STR(small, "abc");
}

static void test_buf(void)
{
    struct buf b;
    buf_init(&b, 1024);
    CHECK_INT(buf_append_cstr(&b, "hello "), 0);
    CHECK_INT(buf_appendf(&b, "%s %d", "world", 42), 0);
    CHECK_STRV(buf_str(&b), "hello world 42");
    buf_consume(&b, 6);
    CHECK_STRV(buf_str(&b), "world 42");
    CHECK_INT(buf_append_u64(&b, 18446744073709551615ull), 0);
    CHECK_STRV(buf_str(&b), "world 4218446744073709551615");
    /* The bound holds: growth past max fails and leaves the data intact. */
    char big[2000];
    memset(big, 'x', sizeof big);
    CHECK_INT(buf_append(&b, big, sizeof big), -ENOBUFS);
    CHECK_STRV(buf_str(&b), "world 4218446744073709551615");
    buf_consume(&b, buf_len(&b));
    CHECK_INT(buf_len(&b), 0);
    CHECK_INT(buf_append(&b, big, 1024), 0);
    CHECK_INT(buf_len(&b), 1024);
    /* A long formatted line takes the slow path. */
    buf_reset(&b);
    CHECK_INT(buf_appendf(&b, "%.*s", 600, big), 0);
    CHECK_INT(buf_len(&b), 600);
    buf_free(&b);
}

static void test_buf_compacts(void)
{
    struct buf b;
    buf_init(&b, 64);
    char x[48];
    memset(x, 'a', sizeof x);
    CHECK_INT(buf_append(&b, x, 48), 0);
    buf_consume(&b, 40);
    /* 8 left + 40 more fits in 64 only by compacting. */
    CHECK_INT(buf_append(&b, x, 40), 0);
    CHECK_INT(buf_len(&b), 48);
    CHECK(b.cap <= 64);
    buf_free(&b);
}

static void test_arena(void)
{
    struct arena a;
    arena_init(&a, 256, 4096);
    char *p = arena_strdup(&a, STR_LIT("abc"));
    CHECK_STR(p, "abc");
    void *q = arena_alloc(&a, 10);
    CHECK(((uintptr_t)q & 15) == 0);
    void *big = arena_alloc(&a, 1000); /* larger than a chunk: its own */
    CHECK(big != NULL);
    void *after = arena_alloc(&a, 16);  /* still served from the head chunk */
    CHECK(after != NULL);
    CHECK(arena_alloc(&a, 5000) == NULL); /* over max_total */
    arena_reset(&a);
    CHECK_INT(a.used_total, 0);
    CHECK(a.head != NULL);
    CHECK(arena_alloc(&a, 100) != NULL);
    arena_free(&a);
}

static void test_rand(void)
{
    char a[33], b[33];
    rand_hex(a, 16);
    rand_hex(b, 16);
    CHECK_INT(strlen(a), 32);
    CHECK(strspn(a, "0123456789abcdef") == 32);
    CHECK(strcmp(a, b) != 0);
    /* rand_below stays in range and reaches every value of a small range. */
    int seen[7] = { 0 };
    for (int i = 0; i < 7000; i++) {
        uint64_t v = rand_below(7);
        CHECK(v < 7);
        if (v < 7)
            seen[v]++;
    }
    for (int i = 0; i < 7; i++)
        CHECK(seen[i] > 700 && seen[i] < 1300);
    CHECK_INT(rand_below(0), 0);
}

static void test_pools(void)
{
    struct buf_pool bp;
    buf_pool_init(&bp, 1024, 2);
    struct buf a, b, c;
    buf_init(&a, 4096);
    buf_init(&b, 4096);
    buf_init(&c, 4096);
    CHECK_INT(buf_take(&a, &bp), 0);
    CHECK_INT(a.cap, 1024);
    char *mem = a.data;
    buf_append_cstr(&a, "x");
    buf_give(&a, &bp);
    CHECK(a.data == NULL && buf_len(&a) == 0);
    CHECK_INT(buf_take(&b, &bp), 0);
    CHECK(b.data == mem); /* reused, not reallocated */
    CHECK_INT(buf_len(&b), 0);
    CHECK_INT(buf_append(&b, mem, 0), 0);
    /* A grown buffer is not the pool's size: freed, not pooled. */
    char big[2000] = { 0 };
    CHECK_INT(buf_append(&b, big, sizeof big), 0);
    buf_give(&b, &bp);
    CHECK_INT(bp.n, 0);
    /* The bound holds. */
    buf_take(&a, &bp);
    buf_take(&b, &bp);
    buf_take(&c, &bp);
    buf_give(&a, &bp);
    buf_give(&b, &bp);
    buf_give(&c, &bp);
    CHECK_INT(bp.n, 2);
    buf_pool_free(&bp);

    struct arena_pool ap;
    arena_pool_init(&ap, 512, 4);
    struct arena ar;
    arena_init(&ar, 512, 0);
    arena_set_pool(&ar, &ap);
    CHECK(arena_alloc(&ar, 100) != NULL);
    CHECK(arena_alloc(&ar, 2000) != NULL); /* oversized: own chunk, freed not pooled */
    arena_free(&ar);
    CHECK_INT(ap.n, 1);
    CHECK(arena_alloc(&ar, 100) != NULL);
    CHECK_INT(ap.n, 0); /* taken back from the pool */
    arena_free(&ar);
    arena_pool_free(&ap);
    CHECK_INT(ap.n, 0);
}

int main(void)
{
    RUN(test_pools);
    RUN(test_rand);
    RUN(test_str);
    RUN(test_buf);
    RUN(test_buf_compacts);
    RUN(test_arena);
    return check_done();
}
