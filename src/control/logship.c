/* logship.c — the Loki shipper (see logship.h for the contract).
 *
 * State: a stream per LOGS/<replica>/<container>.log with the files it
 * holds open, oldest first (the last is always the newest one seen, kept
 * open so that its inode cannot be reused under us); a FIFO of lines read
 * and not yet acknowledged; at most one push in flight, its gzipped body
 * kept for retries. A poll (every poll_ms): find new streams and rotated
 * files, read what the buffer has room for, push, write the positions. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "control/logsearch.h"
#include "control/logship.h"
#include "core/json.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/rand.h"

#define PUSH_PATH "/loki/api/v1/push"
#define NUM_ROTATIONS 3     /* the runtime's log_keep */
#define MAX_HELD (NUM_ROTATIONS + 3)
#define MAX_STREAMS 4096
/* 1 MiB: the read size; a line with no newline in it is too long anyway. */
#define CHUNK (1u << 20)
/* 4 MiB read per poll (or per acknowledged push): a catch-up after an
 * outage costs the shared loop a few tens of milliseconds at a time. */
#define READ_PER_CALL (4u << 20)
/* A stream whose file has not grown for 5 minutes and is shipped whole
 * is closed (its position kept): replicas come and go, their dirs stay. */
#define IDLE_CLOSE_S 300

enum { LV_DEBUG, LV_INFO, LV_WARN, LV_ERROR, LV_UNKNOWN, NUM_LEVELS };
static const char *const level_names[NUM_LEVELS] = { "debug", "info", "warn", "error", "unknown" };

struct held {
    int fd;
    ino_t ino;
    uint64_t off;   /* next byte to read */
    bool skipping;  /* inside a line too long to ship: drop up to its newline */
};

struct stream {
    char *key;      /* "<replica>/<container>" (the state file's key) */
    char *path;     /* LOGS/<replica>/<container>.log */
    char *label_prefix[NUM_LEVELS]; /* {"stream":{…,"level":"L"},"values":[ */
    struct held files[MAX_HELD];
    size_t nfiles;
    size_t pending; /* lines in the FIFO */
    bool has_position; /* resume from pos_ino/pos_off (state file) at first sight */
    ino_t pos_ino;
    uint64_t pos_off;
};

struct entry {
    struct entry *next;
    struct stream *st;
    int64_t ns;
    ino_t ino;          /* where the line starts: the position to resume from */
    uint64_t off;
    uint8_t level;
    size_t n;
    char line[];
};

struct saved {
    char *key;
    ino_t ino;
    uint64_t off;
};

struct logship {
    struct loop *loop;
    struct http1_client *client;
    struct logship_config cfg;
    char *logs_dir, *state_file;
    struct net_addr addr;
    char *host, *target;

    struct stream **streams;
    size_t nstreams, next_read; /* next_read: round-robin start for fairness */
    struct saved *saved;        /* positions from the state file, for streams not seen yet */
    size_t nsaved;

    struct entry *head, *tail;
    size_t buffered;            /* bytes of lines in the FIFO */
    size_t inflight;            /* entries at the head that the current body carries */
    struct buf body;            /* gzipped push in flight or waiting to be retried */
    struct http1_client_call *call;
    bool in_backoff;
    unsigned attempts;

    char *scratch;
    char *last_state;           /* what the state file holds */
    struct loop_timer poll, retry;
    struct logship_stats stats;
};

/* ---- metrics -------------------------------------------------------------------- */

static struct {
    struct metrics_counter *lines, *drop_rejected, *drop_too_long, *drop_rotated;
    struct metrics_counter *batch_ok, *batch_retry, *batch_rejected;
} m;
static pthread_once_t metrics_once = PTHREAD_ONCE_INIT;

static void metrics_init(void)
{
    struct metrics_registry *r = metrics_default();
    struct metrics_family *lines = NULL, *dropped = NULL, *batches = NULL;
    metrics_register_counter(r, "strata_logship_lines_total", "Log lines pushed to Loki and acknowledged.", NULL,
                             &lines);
    metrics_register_counter(r, "strata_logship_dropped_lines_total",
                             "Log lines not shipped: rejected by Loki (4xx), too long, or rotated away unread.",
                             METRICS_LABELS("reason"), &dropped);
    metrics_register_counter(r, "strata_logship_batches_total",
                             "Pushes to Loki by result: ok, retry (failed, to be retried), rejected (dropped).",
                             METRICS_LABELS("result"), &batches);
    m.lines = metrics_counter_with(lines);
    m.drop_rejected = metrics_counter_with(dropped, "rejected");
    m.drop_too_long = metrics_counter_with(dropped, "too_long");
    m.drop_rotated = metrics_counter_with(dropped, "rotated");
    m.batch_ok = metrics_counter_with(batches, "ok");
    m.batch_retry = metrics_counter_with(batches, "retry");
    m.batch_rejected = metrics_counter_with(batches, "rejected");
}

static void count_dropped(struct logship *s, struct metrics_counter *c, uint64_t n)
{
    metrics_counter_add(c, n);
    s->stats.dropped += n;
}

/* ---- the URL ---------------------------------------------------------------------- */

static int parse_url(const char *url, struct net_addr *addr, char **host, char **target, char *err, size_t errsz)
{
    struct http1_url u;
    if (!url || http1_url_parse(str_from_cstr(url), &u) < 0) {
        snprintf(err, errsz, "LOKI_URL: \"%s\" is not an http:// URL", url ? url : "");
        return -EINVAL;
    }
    if (u.is_tls) {
        snprintf(err, errsz, "LOKI_URL: https is not supported; use http://<ip>:<port> (a local Loki or a TLS-terminating proxy)");
        return -EINVAL;
    }
    if (net_addr_from_host(u.host, u.port, addr) < 0) {
        snprintf(err, errsz, "LOKI_URL: the host \"%.*s\" must be a numeric IP address (no DNS on the control plane's loop)",
                 STR_FMT(u.host));
        return -EINVAL;
    }
    struct str path = u.path;
    if (memchr(path.p, '?', path.n)) {
        snprintf(err, errsz, "LOKI_URL: a query string is not supported");
        return -EINVAL;
    }
    while (path.n && path.p[path.n - 1] == '/')
        path.n--;
    bool has_push = str_has_suffix(path, STR_LIT(PUSH_PATH));
    if (host && target) {
        const char *hp = url + strlen("http://");
        const char *slash = strchr(hp, '/');
        *host = strndup(hp, slash ? (size_t)(slash - hp) : strlen(hp));
        if (asprintf(target, "%.*s%s", STR_FMT(path), has_push ? "" : PUSH_PATH) < 0)
            *target = NULL;
        if (!*host || !*target) {
            free(*host);
            free(*target);
            snprintf(err, errsz, "out of memory");
            return -ENOMEM;
        }
    }
    return 0;
}

int logship_check_url(const char *loki_url, char *err, size_t errsz)
{
    struct net_addr a;
    return parse_url(loki_url, &a, NULL, NULL, err, errsz);
}

/* ---- streams and their files ---------------------------------------------------------- */

static void held_close(struct held *h)
{
    if (h->fd >= 0)
        close(h->fd);
    h->fd = -1;
}

static void stream_free(struct stream *st)
{
    for (size_t i = 0; i < st->nfiles; i++)
        held_close(&st->files[i]);
    for (int i = 0; i < NUM_LEVELS; i++)
        free(st->label_prefix[i]);
    free(st->key);
    free(st->path);
    free(st);
}


static char *json_quoted(const char *s, size_t n)
{
    struct buf b;
    buf_init(&b, 4096);
    if (json_append_string(&b, str_make(s, n)) < 0 || buf_append(&b, "", 1) < 0) {
        buf_free(&b);
        return NULL;
    }
    return b.data; /* rpos is 0: the string starts the block */
}

static struct stream *stream_new(struct logship *s, const char *replica, const char *container)
{
    struct stream *st = calloc(1, sizeof *st);
    if (!st)
        return NULL;
    size_t wl = logsearch_workload_len(replica), cl = strlen(container) - 4; /* without ".log" */
    char *w = json_quoted(replica, wl), *r = json_quoted(replica, strlen(replica)), *c = json_quoted(container, cl);
    bool ok = w && r && c && asprintf(&st->key, "%s/%.*s", replica, (int)cl, container) >= 0 &&
              asprintf(&st->path, "%s/%s/%s", s->logs_dir, replica, container) >= 0;
    for (int i = 0; ok && i < NUM_LEVELS; i++)
        ok = asprintf(&st->label_prefix[i],
                      "{\"stream\":{\"workload\":%s,\"replica\":%s,\"container\":%s,\"level\":\"%s\"},\"values\":[", w,
                      r, c, level_names[i]) >= 0;
    free(w);
    free(r);
    free(c);
    if (!ok) {
        stream_free(st);
        return NULL;
    }
    for (size_t i = 0; i < s->nsaved; i++)
        if (s->saved[i].key && !strcmp(s->saved[i].key, st->key)) {
            st->has_position = true;
            st->pos_ino = s->saved[i].ino;
            st->pos_off = s->saved[i].off;
            free(s->saved[i].key);
            s->saved[i].key = NULL;
        }
    return st;
}

/* Reads the rest of h counting its lines: they are dropped. */
static uint64_t count_rest(struct logship *s, struct held *h)
{
    uint64_t lines = 0;
    bool partial = false;
    ssize_t n;
    while ((n = pread(h->fd, s->scratch, CHUNK, (off_t)h->off)) > 0) {
        for (ssize_t i = 0; i < n; i++)
            lines += s->scratch[i] == '\n';
        partial = s->scratch[n - 1] != '\n';
        h->off += (uint64_t)n;
    }
    return lines + partial;
}

static void drop_oldest_file(struct logship *s, struct stream *st)
{
    uint64_t lost = count_rest(s, &st->files[0]);
    count_dropped(s, m.drop_rotated, lost);
    log_warn("logship: a log file was rotated away before it was shipped", LOG_STR("stream", st->key),
             LOG_UINT("lines", lost));
    held_close(&st->files[0]);
    memmove(&st->files[0], &st->files[1], (st->nfiles - 1) * sizeof st->files[0]);
    st->nfiles--;
}

static void push_file(struct logship *s, struct stream *st, int fd, ino_t ino, uint64_t off)
{
    for (size_t i = 0; i < st->nfiles; i++)
        if (st->files[i].ino == ino) { /* seen twice while a rotation ran */
            close(fd);
            return;
        }
    if (st->nfiles == MAX_HELD)
        drop_oldest_file(s, st);
    st->files[st->nfiles++] = (struct held){ .fd = fd, .ino = ino, .off = off };
}

/* Finds files of st that appeared since the last poll (rotations, or the
 * first sight of the stream) and holds them, oldest first. */
static void discover_files(struct logship *s, struct stream *st)
{
    /* The chain newest first: a rotation while we list it can make us see
     * a file twice (deduplicated by inode) but never skip one. */
    int fds[NUM_ROTATIONS + 1];
    ino_t inos[NUM_ROTATIONS + 1];
    size_t n = 0;
    char path[PATH_MAX + 16];
    for (int k = 0; k <= NUM_ROTATIONS; k++) {
        if (k == 0)
            snprintf(path, sizeof path, "%s", st->path);
        else
            snprintf(path, sizeof path, "%s.%d", st->path, k);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        struct stat sb;
        if (fd < 0)
            continue;
        if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
            close(fd);
            continue;
        }
        fds[n] = fd;
        inos[n] = sb.st_ino;
        n++;
    }
    /* newer: the chain files newer than what we know, i.e. before the
     * position of our newest (or of the saved position) in the chain. */
    size_t newer = n;
    uint64_t first_off = 0;
    if (st->nfiles > 0) {
        ino_t newest = st->files[st->nfiles - 1].ino;
        for (size_t i = 0; i < n; i++)
            if (inos[i] == newest) {
                newer = i;
                break;
            }
    } else if (st->has_position) {
        st->has_position = false;
        for (size_t i = 0; i < n; i++)
            if (inos[i] == st->pos_ino) {
                newer = i + 1; /* this one too, from the saved offset */
                first_off = st->pos_off;
                break;
            }
    }
    for (size_t i = n; i-- > 0;) {
        if (i < newer)
            push_file(s, st, fds[i], inos[i], i + 1 == newer ? first_off : 0);
        else
            close(fds[i]);
    }
    /* Disk stays bounded: at most one deleted file is held per stream. */
    for (;;) {
        size_t deleted = 0;
        for (size_t i = 0; i + 1 < st->nfiles; i++) {
            struct stat sb;
            if (fstat(st->files[i].fd, &sb) == 0 && sb.st_nlink == 0)
                deleted++;
        }
        if (deleted <= 1)
            break;
        drop_oldest_file(s, st);
    }
}

static int find_stream(struct logship *s, const char *replica, const char *container)
{
    size_t rl = strlen(replica), cl = strlen(container) - 4;
    for (size_t i = 0; i < s->nstreams; i++) {
        const char *k = s->streams[i]->key;
        if (!strncmp(k, replica, rl) && k[rl] == '/' && !strncmp(k + rl + 1, container, cl) && k[rl + 1 + cl] == '\0')
            return (int)i;
    }
    return -1;
}

static bool is_idle(struct logship *s, const char *replica, const char *container);

/* New replica dirs and containers. */
static void discover_streams(struct logship *s)
{
    DIR *d = opendir(s->logs_dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || !logsearch_workload_len(e->d_name))
            continue;
        char dir[PATH_MAX];
        if ((size_t)snprintf(dir, sizeof dir, "%s/%s", s->logs_dir, e->d_name) >= sizeof dir)
            continue;
        DIR *rd = opendir(dir);
        if (!rd)
            continue;
        struct dirent *f;
        while ((f = readdir(rd))) {
            size_t fl = strlen(f->d_name);
            if (fl <= 4 || f->d_name[0] == '.' || strcmp(f->d_name + fl - 4, ".log") ||
                find_stream(s, e->d_name, f->d_name) >= 0 || is_idle(s, e->d_name, f->d_name))
                continue;
            if (s->nstreams == MAX_STREAMS)
                break;
            struct stream **v = realloc(s->streams, (s->nstreams + 1) * sizeof *v);
            if (!v)
                break;
            s->streams = v;
            struct stream *st = stream_new(s, e->d_name, f->d_name);
            if (!st)
                break;
            s->streams[s->nstreams++] = st;
        }
        closedir(rd);
    }
    closedir(d);
}

/* ---- reading lines into the FIFO --------------------------------------------------------- */

static int64_t wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int level_of(const char *p, size_t n)
{
    static const struct {
        const char *name;
        int level;
    } names[] = { { "debug", LV_DEBUG }, { "trace", LV_DEBUG }, { "info", LV_INFO },   { "warn", LV_WARN },
                  { "warning", LV_WARN }, { "error", LV_ERROR }, { "fatal", LV_ERROR }, { "critical", LV_ERROR },
                  { "panic", LV_ERROR } };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strlen(names[i].name) == n && !strncasecmp(p, names[i].name, n))
            return names[i].level;
    return LV_UNKNOWN;
}

static int enqueue(struct logship *s, struct stream *st, struct held *h, const char *p, size_t n, int64_t read_ns)
{
    if (n && p[n - 1] == '\r')
        n--;
    if (n == 0)
        return 0;
    if (n > s->cfg.max_line_bytes) {
        count_dropped(s, m.drop_too_long, 1);
        return 0;
    }
    int level = LV_UNKNOWN;
    int64_t ns = read_ns;
    json_t *j = p[0] == '{' ? json_loadb(p, n, 0, NULL) : NULL;
    if (json_is_object(j)) {
        json_t *ts = json_object_get(j, "ts"), *lv = json_object_get(j, "level");
        int64_t ms;
        if (json_is_string(ts) && logsearch_parse_time(json_string_value(ts), json_string_length(ts), &ms) == 0 &&
            ms > 0)
            ns = ms * 1000000;
        if (json_is_string(lv))
            level = level_of(json_string_value(lv), json_string_length(lv));
    }
    json_decref(j);
    struct entry *e = malloc(sizeof *e + n);
    if (!e)
        return -ENOMEM;
    /* The line's own time, unchanged: Loki takes entries out of order
     * (within an hour) and drops an exact duplicate (same stream, time and
     * line), so a batch resent after a restart is harmless only if its
     * timestamps are the ones first sent. */
    *e = (struct entry){ .st = st, .ns = ns, .ino = h->ino, .off = h->off, .level = (uint8_t)level, .n = n };
    memcpy(e->line, p, n);
    if (s->tail)
        s->tail->next = e;
    else
        s->head = e;
    s->tail = e;
    s->buffered += n;
    st->pending++;
    return 0;
}

/* Reads from st's oldest unfinished file while the buffer has room and
 * at most `budget` bytes; returns the bytes read. */
static size_t read_stream(struct logship *s, struct stream *st, size_t budget)
{
    size_t total = 0;
    int64_t read_ns = wall_ns();
    while (st->nfiles > 0 && total < budget && s->buffered < s->cfg.max_buffer_bytes) {
        struct held *h = &st->files[0];
        bool is_newest = st->nfiles == 1;
        struct stat sb;
        if (is_newest && fstat(h->fd, &sb) == 0 && (uint64_t)sb.st_size < h->off)
            h->off = 0; /* truncated in place */
        ssize_t n = pread(h->fd, s->scratch, CHUNK, (off_t)h->off);
        if (n <= 0) {
            if (is_newest)
                return total;
            held_close(h); /* finished: the next file is newer */
            memmove(&st->files[0], &st->files[1], (st->nfiles - 1) * sizeof st->files[0]);
            st->nfiles--;
            continue;
        }
        total += (size_t)n;
        const char *p = s->scratch, *end = p + n;
        while (p < end) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            if (!nl)
                break;
            size_t len = (size_t)(nl - p);
            if (h->skipping)
                h->skipping = false;
            else if (enqueue(s, st, h, p, len, read_ns) < 0)
                return total; /* out of memory: this line again next poll */
            h->off += len + 1;
            p = nl + 1;
        }
        size_t rest = (size_t)(end - p);
        if (rest == CHUNK) {
            /* a whole chunk without a newline: too long, dropped to its end */
            if (!h->skipping)
                count_dropped(s, m.drop_too_long, 1);
            h->skipping = true;
            h->off += rest;
        } else if ((size_t)n < CHUNK && rest) {
            /* the end of the file inside a line: the newest file is still
             * being written (wait for the rest); a rotated one is whole */
            if (is_newest)
                return total;
            if (!h->skipping)
                enqueue(s, st, h, p, rest, read_ns);
            h->skipping = false;
            h->off += rest;
        } else if ((size_t)n < CHUNK && is_newest)
            return total;
    }
    return total;
}

/* Fills the buffer from every stream, round robin. */
static void read_all(struct logship *s)
{
    if (!s->nstreams)
        return;
    size_t start = s->next_read % s->nstreams, left = READ_PER_CALL;
    for (size_t k = 0; k < s->nstreams && left > 0 && s->buffered < s->cfg.max_buffer_bytes; k++) {
        struct stream *st = s->streams[(start + k) % s->nstreams];
        size_t n = read_stream(s, st, left);
        left = n < left ? left - n : 0;
    }
    s->next_read = start + 1;
}

static struct saved *find_saved(struct logship *s, const char *key)
{
    for (size_t i = 0; i < s->nsaved; i++)
        if (s->saved[i].key && !strcmp(s->saved[i].key, key))
            return &s->saved[i];
    return NULL;
}

static void close_idle(struct logship *s)
{
    time_t now = time(NULL);
    for (size_t i = 0; i < s->nstreams;) {
        struct stream *st = s->streams[i];
        struct held *h = &st->files[0];
        struct stat sb;
        struct saved *v;
        if (st->nfiles != 1 || st->pending || fstat(h->fd, &sb) < 0 || (uint64_t)sb.st_size != h->off ||
            now - sb.st_mtime < IDLE_CLOSE_S || !(v = realloc(s->saved, (s->nsaved + 1) * sizeof *v))) {
            i++;
            continue;
        }
        s->saved = v;
        s->saved[s->nsaved++] = (struct saved){ st->key, h->ino, h->off };
        st->key = NULL;
        stream_free(st);
        s->streams[i] = s->streams[--s->nstreams];
    }
}

/* A closed idle stream whose file has not changed: not reopened. */
static bool is_idle(struct logship *s, const char *replica, const char *container)
{
    char key[600];
    snprintf(key, sizeof key, "%s/%.*s", replica, (int)(strlen(container) - 4), container);
    struct saved *v = find_saved(s, key);
    if (!v)
        return false;
    char path[PATH_MAX + 600];
    snprintf(path, sizeof path, "%s/%s/%s", s->logs_dir, replica, container);
    struct stat sb;
    return stat(path, &sb) == 0 && sb.st_ino == v->ino && (uint64_t)sb.st_size == v->off &&
           time(NULL) - sb.st_mtime >= IDLE_CLOSE_S;
}

/* ---- positions ------------------------------------------------------------------------------- */

static void save_positions(struct logship *s)
{
    if (!s->state_file)
        return;
    json_t *pos = json_object();
    /* The oldest pending line of a stream, else its read position. */
    for (struct entry *e = s->head; e; e = e->next)
        if (!json_object_get(pos, e->st->key))
            json_object_set_new(pos, e->st->key, json_pack("{s:I, s:I}", "inode", (json_int_t)e->ino, "offset",
                                                           (json_int_t)e->off));
    for (size_t i = 0; i < s->nstreams; i++) {
        struct stream *st = s->streams[i];
        if (json_object_get(pos, st->key))
            continue;
        if (st->nfiles)
            json_object_set_new(pos, st->key, json_pack("{s:I, s:I}", "inode", (json_int_t)st->files[0].ino,
                                                        "offset", (json_int_t)st->files[0].off));
        else if (st->has_position)
            json_object_set_new(pos, st->key, json_pack("{s:I, s:I}", "inode", (json_int_t)st->pos_ino, "offset",
                                                        (json_int_t)st->pos_off));
    }
    for (size_t i = 0; i < s->nsaved; i++) /* not seen yet: kept as they were */
        if (s->saved[i].key)
            json_object_set_new(pos, s->saved[i].key, json_pack("{s:I, s:I}", "inode", (json_int_t)s->saved[i].ino,
                                                                "offset", (json_int_t)s->saved[i].off));
    json_t *doc = json_pack("{s:i, s:o}", "version", 1, "positions", pos);
    char *text = json_dumps(doc, JSON_SORT_KEYS | JSON_INDENT(1));
    json_decref(doc);
    if (!text)
        return;
    if (s->last_state && !strcmp(s->last_state, text)) {
        free(text);
        return;
    }
    /* tmp + rename: a reader sees the old positions or the new. No fsync
     * (the loop must not block on the disk): after a power cut the worst
     * is a batch sent twice, which Loki deduplicates. */
    char tmp[PATH_MAX + 8];
    snprintf(tmp, sizeof tmp, "%s.tmp", s->state_file);
    FILE *f = fopen(tmp, "we");
    bool ok = f && fputs(text, f) >= 0;
    if (f && fclose(f) != 0)
        ok = false;
    if (ok && rename(tmp, s->state_file) == 0) {
        free(s->last_state);
        s->last_state = text;
        return;
    }
    log_warn("logship: cannot write the positions", LOG_STR("path", s->state_file), LOG_ERRNO("error", errno));
    unlink(tmp);
    free(text);
}

static void load_positions(struct logship *s)
{
    if (!s->state_file)
        return;
    json_error_t jerr;
    json_t *doc = json_load_file(s->state_file, 0, &jerr);
    if (!doc) {
        if (access(s->state_file, F_OK) == 0)
            log_warn("logship: unreadable positions file, starting from the beginning of every file",
                     LOG_STR("path", s->state_file), LOG_STR("error", jerr.text));
        return;
    }
    json_t *pos = json_object_get(doc, "positions");
    size_t n = json_is_object(pos) ? json_object_size(pos) : 0;
    s->saved = n ? calloc(n, sizeof *s->saved) : NULL;
    const char *key;
    json_t *v;
    if (s->saved)
        json_object_foreach(pos, key, v)
        {
            json_t *ino = json_object_get(v, "inode"), *off = json_object_get(v, "offset");
            if (!json_is_integer(ino) || !json_is_integer(off) || json_integer_value(off) < 0)
                continue;
            char *k = strdup(key);
            if (!k)
                break;
            s->saved[s->nsaved++] = (struct saved){ k, (ino_t)json_integer_value(ino),
                                                    (uint64_t)json_integer_value(off) };
        }
    json_decref(doc);
}

/* ---- pushing ---------------------------------------------------------------------------------- */

static void send_batch(struct logship *s);

static int gzip_into(struct buf *out, const char *p, size_t n)
{
    z_stream z = { 0 };
    /* windowBits 15 + 16: a gzip wrapper; level 1: the loop's time over the last few percent of ratio */
    if (deflateInit2(&z, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return -ENOMEM;
    buf_reset(out);
    size_t bound = deflateBound(&z, (uLong)n);
    int rc = buf_reserve(out, bound);
    if (rc == 0) {
        z.next_in = (Bytef *)p;
        z.avail_in = (uInt)n;
        z.next_out = (Bytef *)buf_wptr(out);
        z.avail_out = (uInt)bound;
        if (deflate(&z, Z_FINISH) == Z_STREAM_END)
            buf_commit(out, z.total_out);
        else
            rc = -EIO;
    }
    deflateEnd(&z);
    return rc;
}

/* The JSON of the first entries (up to max_batch_bytes of lines), grouped
 * by label set in order of first appearance. */
static int build_body(struct logship *s, struct buf *json, size_t *count)
{
    size_t n = 0, bytes = 0;
    for (struct entry *e = s->head; e && (n == 0 || bytes + e->n <= s->cfg.max_batch_bytes); e = e->next) {
        bytes += e->n;
        n++;
    }
    struct group {
        struct stream *st;
        int level;
    } *groups = malloc(n * sizeof *groups);
    if (!groups)
        return -ENOMEM;
    size_t ng = 0;
    size_t i = 0;
    for (struct entry *e = s->head; i < n; e = e->next, i++) {
        size_t g = 0;
        while (g < ng && !(groups[g].st == e->st && groups[g].level == e->level))
            g++;
        if (g == ng)
            groups[ng++] = (struct group){ e->st, e->level };
    }
    int rc = buf_append_cstr(json, "{\"streams\":[");
    for (size_t g = 0; g < ng && rc == 0; g++) {
        rc = buf_append_cstr(json, g ? "," : "");
        rc = rc ? rc : buf_append_cstr(json, groups[g].st->label_prefix[groups[g].level]);
        bool first = true;
        i = 0;
        for (struct entry *e = s->head; i < n && rc == 0; e = e->next, i++) {
            if (e->st != groups[g].st || e->level != groups[g].level)
                continue;
            rc = buf_appendf(json, "%s[\"%lld\",", first ? "" : ",", (long long)e->ns);
            rc = rc ? rc : json_append_string(json, str_make(e->line, e->n));
            rc = rc ? rc : buf_append(json, "]", 1);
            first = false;
        }
        rc = rc ? rc : buf_append_cstr(json, "]}");
    }
    rc = rc ? rc : buf_append_cstr(json, "]}");
    free(groups);
    *count = n;
    return rc;
}

/* Drops the first n entries of the FIFO (acknowledged or rejected). */
static void pop_entries(struct logship *s, size_t n)
{
    while (n-- && s->head) {
        struct entry *e = s->head;
        s->head = e->next;
        if (!s->head)
            s->tail = NULL;
        s->buffered -= e->n;
        e->st->pending--;
        free(e);
    }
}

static void retry_cb(struct loop_timer *t)
{
    struct logship *s = t->data;
    s->in_backoff = false;
    send_batch(s);
}

static void schedule_retry(struct logship *s)
{
    uint64_t d = s->cfg.backoff_min_ms;
    for (unsigned i = 0; i < s->attempts && d < s->cfg.backoff_max_ms; i++)
        d *= 2;
    if (d > s->cfg.backoff_max_ms)
        d = s->cfg.backoff_max_ms;
    /* jitter: [d/2, d], never under the minimum, so that shippers (and
     * retries) that failed together do not come back together */
    d = d / 2 + rand_below(d / 2 + 1);
    if (d < s->cfg.backoff_min_ms)
        d = s->cfg.backoff_min_ms;
    s->attempts++;
    s->in_backoff = true;
    loop_timer_start(&s->retry, d);
}

static void on_response(int err, const struct http1_client_response *resp, void *arg)
{
    struct logship *s = arg;
    s->call = NULL;
    int status = err ? 0 : resp->status;
    if (status >= 200 && status < 300) {
        metrics_counter_add(m.lines, s->inflight);
        metrics_counter_add(m.batch_ok, 1);
        s->stats.lines += s->inflight;
        s->stats.batches_ok++;
        pop_entries(s, s->inflight);
        s->inflight = 0;
        s->attempts = 0;
        buf_reset(&s->body);
        read_all(s); /* room again: catch up without waiting for the poll */
        if (s->head)
            send_batch(s);
        return;
    }
    if (err || status == 429 || status >= 500) {
        metrics_counter_add(m.batch_retry, 1);
        s->stats.retries++;
        if (s->attempts == 0 || s->attempts % 10 == 0) {
            if (err)
                log_warn("logship: push failed, will retry", LOG_ERRNO("error", err), LOG_UINT("lines", s->inflight));
            else
                log_warn("logship: push failed, will retry", LOG_INT("status", status), LOG_UINT("lines", s->inflight));
        }
        schedule_retry(s);
        return;
    }
    log_warn("logship: Loki rejected a batch; its lines are dropped", LOG_INT("status", status),
             LOG_UINT("lines", s->inflight),
             LOG_STRV("body", str_make(resp->body.p, resp->body.n > 300 ? 300 : resp->body.n)));
    metrics_counter_add(m.batch_rejected, 1);
    count_dropped(s, m.drop_rejected, s->inflight);
    s->stats.rejected++;
    pop_entries(s, s->inflight);
    s->inflight = 0;
    s->attempts = 0;
    buf_reset(&s->body);
    if (s->head)
        send_batch(s);
}

static void send_batch(struct logship *s)
{
    if (s->call || s->in_backoff)
        return;
    if (!s->inflight) {
        if (!s->head)
            return;
        struct buf json;
        buf_init(&json, s->cfg.max_batch_bytes * 7 + (1u << 20)); /* worst case: every byte escaped as \u00XX */
        size_t n = 0;
        int rc = build_body(s, &json, &n);
        if (rc == 0)
            rc = gzip_into(&s->body, buf_rptr(&json), buf_len(&json));
        buf_free(&json);
        if (rc < 0) {
            log_error("logship: cannot build a push", LOG_ERRNO("error", rc));
            return; /* the next poll tries again */
        }
        s->inflight = n;
    }
    const struct http1_header hdrs[] = {
        { STR_LIT("Content-Type"), STR_LIT("application/json") },
        { STR_LIT("Content-Encoding"), STR_LIT("gzip") },
    };
    struct http1_client_request req = {
        .addr = s->addr,
        .method = STR_LIT("POST"),
        .target = str_from_cstr(s->target),
        .host = str_from_cstr(s->host),
        .headers = hdrs,
        .nheaders = 2,
        .body = buf_str(&s->body),
        .timeout_ms = s->cfg.request_timeout_ms,
    };
    if (http1_client_send(s->client, &req, on_response, s, &s->call) < 0) {
        s->call = NULL;
        schedule_retry(s);
    }
}

/* ---- the poll ----------------------------------------------------------------------------------- */

static void poll_cb(struct loop_timer *t)
{
    struct logship *s = t->data;
    discover_streams(s);
    for (size_t i = 0; i < s->nstreams; i++)
        discover_files(s, s->streams[i]);
    read_all(s);
    send_batch(s);
    close_idle(s);
    save_positions(s);
    loop_timer_start(&s->poll, s->cfg.poll_ms);
}

struct logship *logship_start(struct loop *l, struct http1_client *client, const char *logs_dir,
                              const char *loki_url, const struct logship_config *cfg)
{
    pthread_once(&metrics_once, metrics_init);
    struct logship *s = calloc(1, sizeof *s);
    if (!s) {
        errno = ENOMEM;
        return NULL;
    }
    char err[256];
    int rc = parse_url(loki_url, &s->addr, &s->host, &s->target, err, sizeof err);
    if (rc < 0) {
        log_error("logship: cannot ship logs", LOG_STR("error", err));
        free(s);
        errno = -rc;
        return NULL;
    }
    if (cfg)
        s->cfg = *cfg;
    s->cfg.state_file = NULL;
    if (!s->cfg.poll_ms)
        s->cfg.poll_ms = 1000;
    if (!s->cfg.max_batch_bytes)
        s->cfg.max_batch_bytes = 1u << 20;
    if (!s->cfg.max_buffer_bytes)
        s->cfg.max_buffer_bytes = 16u << 20;
    if (!s->cfg.max_line_bytes)
        s->cfg.max_line_bytes = 256u << 10;
    if (s->cfg.max_line_bytes > CHUNK - 1)
        s->cfg.max_line_bytes = CHUNK - 1;
    if (!s->cfg.backoff_min_ms)
        s->cfg.backoff_min_ms = 1000;
    if (!s->cfg.backoff_max_ms)
        s->cfg.backoff_max_ms = 30000;
    if (s->cfg.backoff_max_ms < s->cfg.backoff_min_ms)
        s->cfg.backoff_max_ms = s->cfg.backoff_min_ms;
    if (!s->cfg.request_timeout_ms)
        s->cfg.request_timeout_ms = 10000;
    s->loop = l;
    s->client = client;
    s->logs_dir = strdup(logs_dir);
    s->state_file = cfg && cfg->state_file ? strdup(cfg->state_file) : NULL;
    s->scratch = malloc(CHUNK);
    buf_init(&s->body, (size_t)-1);
    if (!s->logs_dir || !s->scratch || (cfg && cfg->state_file && !s->state_file)) {
        logship_stop(s);
        errno = ENOMEM;
        return NULL;
    }
    load_positions(s);
    loop_timer_init(l, &s->poll, poll_cb, s);
    loop_timer_init(l, &s->retry, retry_cb, s);
    loop_timer_start(&s->poll, 0);
    log_info("logship: shipping logs to Loki", LOG_STR("loki_url", loki_url), LOG_STR("logs", logs_dir));
    return s;
}

void logship_stop(struct logship *s)
{
    if (!s)
        return;
    if (s->call)
        http1_client_cancel(s->call);
    s->call = NULL;
    if (s->loop) {
        loop_timer_stop(&s->poll);
        loop_timer_stop(&s->retry);
        save_positions(s);
    }
    pop_entries(s, SIZE_MAX);
    for (size_t i = 0; i < s->nstreams; i++)
        stream_free(s->streams[i]);
    free(s->streams);
    for (size_t i = 0; i < s->nsaved; i++)
        free(s->saved[i].key);
    free(s->saved);
    buf_free(&s->body);
    free(s->scratch);
    free(s->last_state);
    free(s->logs_dir);
    free(s->state_file);
    free(s->host);
    free(s->target);
    free(s);
}

void logship_stats(const struct logship *s, struct logship_stats *out)
{
    *out = s->stats;
    out->buffered_bytes = s->buffered;
    out->streams = s->nstreams;
}
