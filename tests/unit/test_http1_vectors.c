/* Runs every HTTP/1.1 protocol case in tests/data/http1/ (*.case files) against the
 * real server over a real TCP socket (format: tests/data/http1/README.md).
 * The server under test answers 200 to any well-formed request, with the
 * received body length as its body; max_body is 1 MiB, limits are the
 * defaults. Adding a case needs no C. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "core/http1_parse.h"
#include "support/test_server.h"

struct vector {
    char name[256];
    char description[512];
    int statuses[16];
    int nstatuses;
    bool expect_close;
    char *bytes;
    size_t nbytes;
};

static void echo_len(struct http1_exchange *x, void *arg)
{
    (void)arg;
    char body[64];
    int n = snprintf(body, sizeof body, "body=%zu", x->body.n);
    http1_respond(x, 200, NULL, 0, str_make(body, (size_t)n));
}

/* Decodes the raw part: newlines ignored, escapes \r \n \t \\ \0 \xHH. */
static int decode_bytes(const char *p, size_t n, struct vector *v)
{
    v->bytes = malloc(n + 1);
    v->nbytes = 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '\n')
            continue;
        if (c != '\\') {
            v->bytes[v->nbytes++] = c;
            continue;
        }
        if (++i >= n)
            return -1;
        switch (p[i]) {
        case 'r': v->bytes[v->nbytes++] = '\r'; break;
        case 'n': v->bytes[v->nbytes++] = '\n'; break;
        case 't': v->bytes[v->nbytes++] = '\t'; break;
        case '0': v->bytes[v->nbytes++] = '\0'; break;
        case '\\': v->bytes[v->nbytes++] = '\\'; break;
        case 'x': {
            if (i + 2 >= n + 0 || str_hex_digit(p[i + 1]) < 0 || str_hex_digit(p[i + 2]) < 0)
                return -1;
            v->bytes[v->nbytes++] = (char)(str_hex_digit(p[i + 1]) * 16 + str_hex_digit(p[i + 2]));
            i += 2;
            break;
        }
        default:
            return -1;
        }
    }
    return 0;
}

static int load_vector(const char *path, struct vector *v)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)size + 1);
    size_t got = fread(text, 1, (size_t)size, f);
    fclose(f);
    text[got] = '\0';
    memset(v, 0, sizeof *v);
    snprintf(v->name, sizeof v->name, "%s", strrchr(path, '/') + 1);
    char *line = text;
    int rc = -1;
    while (line && *line) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        if (!strcmp(line, "---")) {
            if (!nl)
                break;
            rc = decode_bytes(nl + 1, got - (size_t)(nl + 1 - text), v);
            break;
        }
        if (!strncmp(line, "description:", 12)) {
            snprintf(v->description, sizeof v->description, "%s", line + 13);
        } else if (!strncmp(line, "status:", 7)) {
            char *s = line + 7;
            char *end;
            long st;
            while ((st = strtol(s, &end, 10)) > 0 && v->nstatuses < 16) {
                v->statuses[v->nstatuses++] = (int)st;
                s = end;
            }
        } else if (!strncmp(line, "close:", 6)) {
            v->expect_close = strstr(line + 6, "yes") != NULL;
        }
        line = nl ? nl + 1 : NULL;
    }
    free(text);
    if (rc == 0 && v->nstatuses == 0)
        rc = -1;
    return rc;
}

/* Pops one complete response from the front of buf; returns its status, 0 if
 * incomplete, <0 if malformed. */
static int take_response(char *buf, size_t *len)
{
    struct http1_response r;
    struct http1_header h[64];
    int rc = http1_parse_response(buf, *len, NULL, false, &r, h, 64);
    if (rc <= 0)
        return rc;
    size_t total = (size_t)rc;
    if (r.body_kind == HTTP1_BODY_LENGTH)
        total += (size_t)r.content_length;
    else if (r.body_kind != HTTP1_BODY_NONE)
        return -1; /* our server always sends Content-Length */
    if (total > *len)
        return 0;
    memmove(buf, buf + total, *len - total);
    *len -= total;
    return r.status;
}

static bool has_response(const char *p, size_t n)
{
    char tmp[65536];
    size_t len = n < sizeof tmp ? n : sizeof tmp;
    memcpy(tmp, p, len);
    return take_response(tmp, &len) > 0;
}

static bool run_vector(uint16_t port, const struct vector *v)
{
    int fd = test_connect(port);
    if (fd < 0) {
        fprintf(stderr, "%s: connect failed\n", v->name);
        return false;
    }
    static char in[1 << 20];
    size_t inlen = 0;
    bool eof = false, ok = true;
    size_t sent_upto = v->nbytes;
    if (v->statuses[0] == 100) {
        /* Send the head alone, wait for the interim response, then the body. */
        char *end = memmem(v->bytes, v->nbytes, "\r\n\r\n", 4);
        sent_upto = end ? (size_t)(end - v->bytes) + 4 : v->nbytes;
    }
    test_send_all(fd, v->bytes, sent_upto);
    for (int i = 0; i < v->nstatuses && ok; i++) {
        int status = 0;
        for (;;) {
            status = take_response(in, &inlen);
            if (status != 0 || eof)
                break;
            inlen += test_recv(fd, in + inlen, sizeof in - inlen, 5000, &eof, has_response);
            if (!eof && inlen == 0)
                break;
        }
        if (status != v->statuses[i]) {
            fprintf(stderr, "%s (%s): response %d: expected %d, got %d\n", v->name, v->description, i + 1,
                    v->statuses[i], status);
            ok = false;
        }
        if (i == 0 && sent_upto < v->nbytes)
            test_send_all(fd, v->bytes + sent_upto, v->nbytes - sent_upto);
    }
    if (ok && v->expect_close) {
        while (!eof) {
            size_t n = test_recv(fd, in + inlen, sizeof in - inlen, 5000, &eof, NULL);
            if (n == 0 && !eof)
                break;
            inlen += n;
        }
        if (!eof || inlen) {
            fprintf(stderr, "%s (%s): expected the server to close (eof=%d, %zu extra bytes)\n", v->name,
                    v->description, eof, inlen);
            ok = false;
        }
    } else if (ok) {
        /* Still open and usable: one more request must be answered. */
        static const char probe[] = "GET /probe HTTP/1.1\r\nHost: t\r\n\r\n";
        test_send_all(fd, probe, sizeof probe - 1);
        int status = 0;
        while (!eof && (status = take_response(in, &inlen)) == 0) {
            size_t n = test_recv(fd, in + inlen, sizeof in - inlen, 5000, &eof, has_response);
            if (n == 0 && !eof)
                break;
            inlen += n;
        }
        if (status != 200) {
            fprintf(stderr, "%s (%s): connection not reusable after the case (probe got %d)\n", v->name,
                    v->description, status);
            ok = false;
        }
    }
    close(fd);
    return ok;
}

static int cmp_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void test_vectors(void)
{
    const char *src = getenv("STRATA_SOURCE_DIR");
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/tests/data/http1", src ? src : ".");
    DIR *d = opendir(dir);
    CHECK(d != NULL);
    if (!d)
        return;
    char *names[1024];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 1024) {
        size_t len = strlen(e->d_name);
        if (len > 5 && !strcmp(e->d_name + len - 5, ".case"))
            names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, cmp_names);
    CHECK(n >= 10); /* a runner that runs nothing proves nothing */

    struct http1_server_config cfg = { .handler = echo_len, .max_body = 1024 * 1024 };
    struct test_server ts;
    CHECK_INT(test_server_start(&ts, &cfg), 0);
    int passed = 0;
    for (int i = 0; i < n; i++) {
        char path[2048];
        struct vector v;
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        if (load_vector(path, &v) < 0) {
            fprintf(stderr, "%s: cannot parse the case file\n", names[i]);
            CHECK(!"case file parses");
        } else {
            bool ok = run_vector(ts.port, &v);
            CHECK(ok);
            passed += ok;
        }
        free(v.bytes);
        free(names[i]);
    }
    fprintf(stderr, "%d/%d HTTP/1.1 cases passed\n", passed, n);
    test_server_stop(&ts);
}

int main(void)
{
    RUN(test_vectors);
    return check_done();
}
