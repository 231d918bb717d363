/* logsearch.c — GET /v1/logs: a bounded search through the runtime's log
 * files (see logsearch.h for the contract and the bounds).
 *
 * One request: list the candidate files (replica dirs × containers ×
 * rotations) with their size and mtime; hand the scan budget to the newest
 * files first (a file that only partly fits is read from the first line
 * after its cut); read each stream's files oldest first so that a line
 * without "ts" inherits the time of the line before it; keep the newest
 * `limit` matches in a min-heap ordered by (ts, order read); sort and
 * answer. */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "control/logsearch.h"
#include "core/json.h"
#include "core/log.h"

/* A logs dir with more entries than this is not one the runtime made. */
#define MAX_REPLICAS 4096
#define NUM_ROTATIONS 3 /* runtime: log_keep */

static struct {
    char logs_dir[PATH_MAX];
    struct admin_auth auth;
} g;

static const char *const containers[] = { "app", "proxy" };

struct query {
    char workload[256], replica[256], trace_id[128], q[1024];
    size_t qn;
    int container; /* -1 both, else index into containers */
    int min_level; /* -1 none */
    int64_t since_ms, until_ms;
    int limit;
};

/* ---- parsing the query ---------------------------------------------------------- */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decodes s into out (cap bytes with the NUL); '+' is a space. */
static int url_decode(struct str s, char *out, size_t cap, size_t *len)
{
    size_t n = 0;
    for (size_t i = 0; i < s.n; i++) {
        char c = s.p[i];
        if (c == '+')
            c = ' ';
        else if (c == '%') {
            int hi = i + 2 < s.n ? hexval(s.p[i + 1]) : -1, lo = i + 2 < s.n ? hexval(s.p[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                return -EINVAL;
            c = (char)(hi * 16 + lo);
            i += 2;
        }
        if (c == '\0' || n + 1 >= cap)
            return -EINVAL;
        out[n++] = c;
    }
    out[n] = '\0';
    if (len)
        *len = n;
    return 0;
}

static int level_rank(const char *l, size_t n)
{
    static const struct {
        const char *name;
        int rank;
    } names[] = { { "debug", 0 }, { "trace", 0 }, { "info", 1 }, { "warn", 2 }, { "warning", 2 },
                  { "error", 3 }, { "fatal", 3 }, { "critical", 3 }, { "panic", 3 } };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strlen(names[i].name) == n && !strncasecmp(l, names[i].name, n))
            return names[i].rank;
    return -1;
}

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static int digits(const char *p, size_t n, size_t at, size_t count, int *out)
{
    if (at + count > n)
        return -EINVAL;
    int v = 0;
    for (size_t i = 0; i < count; i++) {
        if (p[at + i] < '0' || p[at + i] > '9')
            return -EINVAL;
        v = v * 10 + (p[at + i] - '0');
    }
    *out = v;
    return 0;
}

int logsearch_parse_time(const char *p, size_t n, int64_t *ms_out)
{
    int Y, M, D, h, m, s;
    if (n < 20 || digits(p, n, 0, 4, &Y) || p[4] != '-' || digits(p, n, 5, 2, &M) || p[7] != '-' ||
        digits(p, n, 8, 2, &D) || (p[10] != 'T' && p[10] != 't' && p[10] != ' ') || digits(p, n, 11, 2, &h) ||
        p[13] != ':' || digits(p, n, 14, 2, &m) || p[16] != ':' || digits(p, n, 17, 2, &s))
        return -EINVAL;
    if (M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 || s > 60)
        return -EINVAL;
    size_t i = 19;
    int64_t frac_ms = 0;
    if (i < n && p[i] == '.') {
        i++;
        size_t start = i;
        int scale = 100;
        while (i < n && p[i] >= '0' && p[i] <= '9') {
            frac_ms += (p[i] - '0') * scale;
            scale /= 10;
            i++;
        }
        if (i == start)
            return -EINVAL;
    }
    int64_t off_s = 0;
    if (i < n && (p[i] == 'Z' || p[i] == 'z'))
        i++;
    else if (i < n && (p[i] == '+' || p[i] == '-')) {
        int oh, om;
        if (digits(p, n, i + 1, 2, &oh) || i + 3 >= n || p[i + 3] != ':' || digits(p, n, i + 4, 2, &om) || oh > 23 ||
            om > 59)
            return -EINVAL;
        off_s = (p[i] == '+' ? 1 : -1) * (oh * 3600 + om * 60);
        i += 6;
    } else
        return -EINVAL;
    if (i != n)
        return -EINVAL;
    int64_t secs = days_from_civil(Y, (unsigned)M, (unsigned)D) * 86400 + h * 3600 + m * 60 + s - off_s;
    *ms_out = secs * 1000 + frac_ms;
    return 0;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A duration back from now ("90s") or an RFC 3339 time. */
static int parse_when(const char *v, int64_t *ms)
{
    if (logsearch_parse_time(v, strlen(v), ms) == 0)
        return 0;
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (end == v || n < 0 || errno)
        return -EINVAL;
    int64_t mul = !strcmp(end, "ms") ? 1
                  : !strcmp(end, "s") ? 1000
                  : !strcmp(end, "m") ? 60000
                  : !strcmp(end, "h") ? 3600000
                  : !strcmp(end, "d") ? 86400000
                                      : -1;
    if (mul < 0 || n > INT64_MAX / mul / 2)
        return -EINVAL;
    *ms = now_ms() - n * mul;
    return 0;
}

static int parse_query(struct str qs, struct query *q, char *err, size_t errsz)
{
    memset(q, 0, sizeof *q);
    q->container = -1;
    q->min_level = -1;
    q->since_ms = INT64_MIN;
    q->until_ms = INT64_MAX;
    q->limit = LOGSEARCH_DEFAULT_LIMIT;
    while (qs.n) {
        const char *amp = memchr(qs.p, '&', qs.n);
        struct str kv = str_make(qs.p, amp ? (size_t)(amp - qs.p) : qs.n);
        qs = amp ? str_make(amp + 1, qs.n - kv.n - 1) : STR_NULL;
        if (!kv.n)
            continue;
        const char *eq = memchr(kv.p, '=', kv.n);
        struct str k = str_make(kv.p, eq ? (size_t)(eq - kv.p) : kv.n);
        struct str rawv = eq ? str_make(eq + 1, kv.n - k.n - 1) : STR_NULL;
        char v[1024];
        size_t vn;
        if (url_decode(rawv, v, sizeof v, &vn) < 0) {
            snprintf(err, errsz, "%.*s: bad percent-encoding, a NUL or longer than 1023 bytes", (int)(k.n > 64 ? 64 : k.n), k.p);
            return -EINVAL;
        }
#define KEY(lit) str_eq(k, STR_LIT(lit))
        if (KEY("workload") || KEY("replica")) {
            char *dst = KEY("workload") ? q->workload : q->replica;
            if (vn >= 256 || strchr(v, '/')) {
                snprintf(err, errsz, "%.*s: not a workload or replica name", STR_FMT(k));
                return -EINVAL;
            }
            memcpy(dst, v, vn + 1);
        } else if (KEY("container")) {
            q->container = !strcmp(v, "app") ? 0 : !strcmp(v, "proxy") ? 1 : -2;
            if (q->container == -2) {
                snprintf(err, errsz, "container: expected app or proxy");
                return -EINVAL;
            }
        } else if (KEY("level")) {
            if ((q->min_level = level_rank(v, vn)) < 0) {
                snprintf(err, errsz, "level: expected debug, info, warn or error");
                return -EINVAL;
            }
        } else if (KEY("since") || KEY("until")) {
            if (parse_when(v, KEY("since") ? &q->since_ms : &q->until_ms) < 0) {
                snprintf(err, errsz, "%.*s: expected a duration (500ms, 90s, 5m, 2h, 7d) or an RFC 3339 time",
                         STR_FMT(k));
                return -EINVAL;
            }
        } else if (KEY("trace_id")) {
            if (vn == 0 || vn >= sizeof q->trace_id) {
                snprintf(err, errsz, "trace_id: expected 1..127 characters");
                return -EINVAL;
            }
            memcpy(q->trace_id, v, vn + 1);
        } else if (KEY("q")) {
            memcpy(q->q, v, vn + 1);
            q->qn = vn;
        } else if (KEY("limit")) {
            char *end;
            long n = strtol(v, &end, 10);
            if (end == v || *end || n < 1 || n > LOGSEARCH_MAX_LIMIT) {
                snprintf(err, errsz, "limit: expected an integer from 1 to %d", LOGSEARCH_MAX_LIMIT);
                return -EINVAL;
            }
            q->limit = (int)n;
        } else {
            snprintf(err, errsz,
                     "unknown parameter \"%.*s\" (workload, replica, container, level, since, until, trace_id, q, limit)",
                     (int)(k.n > 64 ? 64 : k.n), k.p);
            return -EINVAL;
        }
#undef KEY
    }
    return 0;
}

/* ---- candidate files -------------------------------------------------------------- */

struct cand {
    char *path;
    const char *replica;
    int container;
    int rot;          /* 0 for .log, k for .log.k */
    int64_t mtime_ms;
    uint64_t size;
    uint64_t from;    /* first byte to read (size - the budget it got) */
    bool is_read;
};

size_t logsearch_workload_len(const char *name)
{
    const char *last = strrchr(name, '-');
    if (!last || last == name)
        return 0;
    const char *p = last - 1;
    while (p > name && *p != '-')
        p--;
    return p > name ? (size_t)(p - name) : 0;
}

static int by_newest(const void *a, const void *b)
{
    const struct cand *x = a, *y = b;
    if (x->mtime_ms != y->mtime_ms)
        return x->mtime_ms > y->mtime_ms ? -1 : 1;
    return x->rot - y->rot;
}

/* Stream by stream, oldest file first. */
static int by_stream(const void *a, const void *b)
{
    const struct cand *x = a, *y = b;
    int c = strcmp(x->replica, y->replica);
    if (c)
        return c;
    if (x->container != y->container)
        return x->container - y->container;
    return y->rot - x->rot;
}

/* ---- the kept matches: a min-heap on (ts, seq) ---------------------------------------- */

struct hit {
    int64_t ts_ms;
    uint64_t seq;
    const char *replica;
    int container;
    char *line;
    size_t n;
};

struct heap {
    struct hit *v;
    size_t n, cap;
    size_t bytes;
    bool dropped;
};

static bool hit_less(const struct hit *a, const struct hit *b)
{
    return a->ts_ms != b->ts_ms ? a->ts_ms < b->ts_ms : a->seq < b->seq;
}

static void sift_down(struct heap *h, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < h->n && hit_less(&h->v[l], &h->v[m]))
            m = l;
        if (r < h->n && hit_less(&h->v[r], &h->v[m]))
            m = r;
        if (m == i)
            return;
        struct hit t = h->v[i];
        h->v[i] = h->v[m];
        h->v[m] = t;
        i = m;
    }
}

static void sift_up(struct heap *h, size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!hit_less(&h->v[i], &h->v[p]))
            return;
        struct hit t = h->v[i];
        h->v[i] = h->v[p];
        h->v[p] = t;
        i = p;
    }
}

static void pop_min(struct heap *h)
{
    h->bytes -= h->v[0].n;
    free(h->v[0].line);
    h->v[0] = h->v[--h->n];
    sift_down(h, 0);
    h->dropped = true;
}

static int heap_add(struct heap *h, const struct hit *in)
{
    if (h->n == h->cap) {
        if (!hit_less(&h->v[0], in)) { /* older than everything kept */
            h->dropped = true;
            return 0;
        }
        pop_min(h);
    }
    struct hit x = *in;
    if (!(x.line = malloc(in->n + 1)))
        return -ENOMEM;
    memcpy(x.line, in->line, in->n);
    x.line[in->n] = '\0';
    h->v[h->n] = x;
    sift_up(h, h->n++);
    h->bytes += in->n;
    while (h->bytes > LOGSEARCH_MAX_RESULT && h->n > 1)
        pop_min(h);
    return 0;
}

static int by_time(const void *a, const void *b)
{
    const struct hit *x = a, *y = b;
    return hit_less(x, y) ? -1 : hit_less(y, x) ? 1 : 0;
}

/* ---- scanning ------------------------------------------------------------------------- */

struct scan {
    const struct query *q;
    struct heap heap;
    uint64_t seq;
    int64_t prev_ts; /* the stream's last "ts", INT64_MIN before one */
};

static int match_line(struct scan *sc, const struct cand *c, char *line, size_t n)
{
    const struct query *q = sc->q;
    if (n && line[n - 1] == '\r')
        n--;
    if (!n)
        return 0;
    if (q->qn && !memmem(line, n, q->q, q->qn))
        return 0;
    size_t tn = strlen(q->trace_id);
    if (tn && !memmem(line, n, q->trace_id, tn))
        return 0;
    int rank = -1;
    bool trace_ok = tn == 0;
    json_t *j = line[0] == '{' ? json_loadb(line, n, 0, NULL) : NULL;
    if (j && json_is_object(j)) {
        json_t *ts = json_object_get(j, "ts"), *lv = json_object_get(j, "level");
        int64_t ms;
        if (json_is_string(ts) && logsearch_parse_time(json_string_value(ts), json_string_length(ts), &ms) == 0)
            sc->prev_ts = ms;
        if (json_is_string(lv))
            rank = level_rank(json_string_value(lv), json_string_length(lv));
        json_t *tr = json_object_get(j, "trace_id");
        if (tn && json_is_string(tr) && !strcmp(json_string_value(tr), q->trace_id))
            trace_ok = true;
    }
    json_decref(j);
    if (!trace_ok)
        return 0;
    if (q->min_level >= 0 && rank >= 0 && rank < q->min_level)
        return 0;
    if ((q->since_ms != INT64_MIN || q->until_ms != INT64_MAX) &&
        (sc->prev_ts == INT64_MIN || sc->prev_ts < q->since_ms || sc->prev_ts > q->until_ms))
        return 0;
    struct hit h = { .ts_ms = sc->prev_ts, .seq = sc->seq++, .replica = c->replica, .container = c->container,
                     .line = line, .n = n };
    return heap_add(&sc->heap, &h);
}

/* Reads c from c->from to what its budget allowed. */
static int scan_file(struct scan *sc, const struct cand *c)
{
    FILE *f = fopen(c->path, "re");
    if (!f)
        return 0; /* rotated away since the listing */
    uint64_t budget = c->size - c->from, used = 0;
    bool skip_first = false;
    if (c->from > 0) {
        /* Starting mid-file: the line the cut falls in is incomplete. */
        if (fseeko(f, (off_t)c->from - 1, SEEK_SET) == 0) {
            int ch = fgetc(f);
            skip_first = ch != '\n';
            budget++;
            used++;
        }
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int rc = 0;
    while (used < budget && (n = getline(&line, &cap, f)) > 0) {
        used += (uint64_t)n;
        if (skip_first) {
            skip_first = false;
            continue;
        }
        if (line[n - 1] == '\n')
            n--;
        if ((rc = match_line(sc, c, line, (size_t)n)) < 0)
            break;
    }
    free(line);
    fclose(f);
    return rc;
}

static int list_candidates(const struct query *q, struct cand **out, size_t *nout, char ***names_out, size_t *nnames)
{
    DIR *d = opendir(g.logs_dir);
    *out = NULL;
    *nout = 0;
    *names_out = NULL;
    *nnames = 0;
    if (!d)
        return errno == ENOENT ? 0 : -errno;
    size_t cap = 64, n = 0, nn = 0;
    struct cand *v = malloc(cap * sizeof *v);
    char **names = calloc(MAX_REPLICAS, sizeof *names);
    int rc = 0;
    if (!v || !names) {
        rc = -ENOMEM;
        goto out;
    }
    struct dirent *e;
    while ((e = readdir(d)) && nn < MAX_REPLICAS) {
        if (e->d_name[0] == '.')
            continue;
        size_t wl = logsearch_workload_len(e->d_name);
        if (!wl)
            continue;
        if (*q->workload && (strlen(q->workload) != wl || strncmp(q->workload, e->d_name, wl)))
            continue;
        if (*q->replica && strcmp(q->replica, e->d_name))
            continue;
        if (!(names[nn] = strdup(e->d_name))) {
            rc = -ENOMEM;
            goto out;
        }
        const char *rep = names[nn++];
        for (int ci = 0; ci < 2; ci++) {
            if (q->container >= 0 && q->container != ci)
                continue;
            for (int rot = 0; rot <= NUM_ROTATIONS; rot++) {
                char path[PATH_MAX];
                int pn = rot ? snprintf(path, sizeof path, "%s/%s/%s.log.%d", g.logs_dir, rep, containers[ci], rot)
                             : snprintf(path, sizeof path, "%s/%s/%s.log", g.logs_dir, rep, containers[ci]);
                struct stat st;
                if (pn < 0 || (size_t)pn >= sizeof path || stat(path, &st) < 0 || !S_ISREG(st.st_mode))
                    continue;
                int64_t mtime = (int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000;
                if (mtime < q->since_ms) /* every line in it is older */
                    continue;
                if (n == cap) {
                    struct cand *nv = realloc(v, 2 * cap * sizeof *v);
                    if (!nv) {
                        rc = -ENOMEM;
                        goto out;
                    }
                    v = nv;
                    cap *= 2;
                }
                if (!(v[n].path = strdup(path))) {
                    rc = -ENOMEM;
                    goto out;
                }
                v[n].replica = rep;
                v[n].container = ci;
                v[n].rot = rot;
                v[n].mtime_ms = mtime;
                v[n].size = (uint64_t)st.st_size;
                v[n].from = 0;
                v[n].is_read = false;
                n++;
            }
        }
    }
out:
    closedir(d);
    *out = v;
    *nout = n;
    *names_out = names;
    *nnames = nn;
    return rc;
}

/* Raw text as a JSON string: bytes that are not UTF-8 become U+FFFD. */
static json_t *raw_string(const char *p, size_t n)
{
    json_t *s = json_stringn(p, n);
    if (s)
        return s;
    char *out = malloc(n * 3 + 1);
    if (!out)
        return json_null();
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t k = json_utf8_seq_len((const unsigned char *)p + i, n - i);
        if (k && !(k == 1 && p[i] == '\0')) {
            memcpy(out + o, p + i, k);
            o += k;
            i += k;
        } else {
            memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        }
    }
    s = json_stringn(out, o);
    free(out);
    return s ? s : json_null();
}

static void reply_lines(struct service_req *r, struct heap *h, bool truncated)
{
    qsort(h->v, h->n, sizeof *h->v, by_time);
    json_t *lines = json_array();
    for (size_t i = 0; i < h->n; i++) {
        struct hit *x = &h->v[i];
        json_t *j = x->line[0] == '{' ? json_loadb(x->line, x->n, 0, NULL) : NULL;
        if (j && !json_is_object(j)) {
            json_decref(j);
            j = NULL;
        }
        json_t *ts = j ? json_object_get(j, "ts") : NULL, *lv = j ? json_object_get(j, "level") : NULL;
        json_t *o = json_object();
        json_object_set_new(o, "replica", json_string(x->replica));
        json_object_set_new(o, "container", json_string(containers[x->container]));
        json_object_set_new(o, "ts", json_is_string(ts) ? json_copy(ts) : json_null());
        json_object_set_new(o, "level", json_is_string(lv) ? json_copy(lv) : json_null());
        json_object_set_new(o, "line", j ? j : raw_string(x->line, x->n));
        json_array_append_new(lines, o);
    }
    json_t *body = json_object();
    json_object_set_new(body, "lines", lines);
    json_object_set_new(body, "truncated", json_boolean(truncated));
    service_reply_json(r, 200, body);
}

static void h_logs(struct service_req *r, void *arg)
{
    (void)arg;
    if (!admin_authorized(&g.auth, r))
        return;
    struct query q;
    char err[256];
    if (parse_query(service_req_request(r)->query, &q, err, sizeof err) < 0) {
        service_reply_error(r, 400, "invalid_query", err);
        return;
    }
    struct cand *c;
    char **names;
    size_t n, nn;
    struct scan sc = { .q = &q, .prev_ts = INT64_MIN };
    int rc = list_candidates(&q, &c, &n, &names, &nn);
    if (rc == 0) {
        sc.heap.cap = (size_t)q.limit;
        if (!(sc.heap.v = calloc(sc.heap.cap, sizeof *sc.heap.v)))
            rc = -ENOMEM;
    }
    bool truncated = false;
    if (rc == 0) {
        /* The budget goes to the newest files first. */
        qsort(c, n, sizeof *c, by_newest);
        uint64_t left = LOGSEARCH_MAX_SCAN;
        for (size_t i = 0; i < n; i++) {
            uint64_t take = c[i].size < left ? c[i].size : left;
            c[i].from = c[i].size - take;
            c[i].is_read = take > 0;
            truncated |= take < c[i].size;
            left -= take;
        }
        qsort(c, n, sizeof *c, by_stream);
        for (size_t i = 0; i < n && rc == 0; i++) {
            if (i == 0 || c[i].container != c[i - 1].container || strcmp(c[i].replica, c[i - 1].replica))
                sc.prev_ts = INT64_MIN;
            if (c[i].is_read)
                rc = scan_file(&sc, &c[i]);
        }
    }
    if (rc < 0) {
        log_error("logs: search failed", LOG_STR("logs_dir", g.logs_dir), LOG_ERRNO("error", rc));
        service_reply_error(r, 503, "unavailable", "the log search failed for lack of memory or a read error");
    } else
        reply_lines(r, &sc.heap, truncated || sc.heap.dropped);
    for (size_t i = 0; i < sc.heap.n; i++)
        free(sc.heap.v[i].line);
    free(sc.heap.v);
    for (size_t i = 0; i < n; i++)
        free(c[i].path);
    free(c);
    for (size_t i = 0; i < nn; i++)
        free(names[i]);
    free(names);
}

int logsearch_register(struct service *s, const char *logs_dir, const struct admin_auth *auth)
{
    if (strlen(logs_dir) >= sizeof g.logs_dir)
        return -ENAMETOOLONG;
    snprintf(g.logs_dir, sizeof g.logs_dir, "%s", logs_dir);
    g.auth = *auth;
    return service_route(s, "GET", "/v1/logs", h_logs, NULL);
}
