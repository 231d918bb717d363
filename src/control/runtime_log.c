/* runtime_log.c — a container's stdout/stderr: the pipe's read end on the
 * loop, appended to LOGDIR/<replica>/<container>.log, rotated by size.
 *
 * Rotation keeps every file at or under log_max_bytes and cuts at a line
 * end when one fits, so that the app's JSON lines stay whole: a chunk that
 * would overflow the file is written up to its last newline that fits,
 * the file rotates, and the rest goes to the new one. Only a single line
 * longer than log_max_bytes is split. An unfinished line (a read that
 * ended inside it) waits in a small carry buffer for its newline. Rotation renames .log → .log.1 →
 * .log.2 … .log.<keep>; the file past keep is deleted and counted. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "control/runtime_internal.h"
#include "core/log.h"

int rt_mkdir_p(const char *path)
{
    char buf[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf)
        return -ENAMETOOLONG;
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        char c = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0755) < 0 && errno != EEXIST)
            return -errno;
        buf[i] = c;
    }
    struct stat st;
    if (stat(path, &st) < 0)
        return -errno;
    return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

static int open_current(struct rt_log *lg)
{
    int fd = open(lg->path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    struct stat st;
    lg->size = fstat(fd, &st) == 0 ? (uint64_t)st.st_size : 0;
    lg->fd = fd;
    return 0;
}

int rt_log_open(struct rt_log *lg, const char *dir, const char *container)
{
    lg->fd = -1;
    lg->size = 0;
    lg->carry = NULL;
    lg->ncarry = 0;
    if (asprintf(&lg->path, "%s/%s.log", dir, container) < 0) {
        lg->path = NULL;
        return -ENOMEM;
    }
    int rc = open_current(lg);
    if (rc < 0)
        log_error("runtime: cannot open log file", LOG_STR("path", lg->path), LOG_ERRNO("error", rc));
    return rc;
}

void rt_log_close(struct rt_log *lg)
{
    if (lg->fd >= 0)
        close(lg->fd);
    lg->fd = -1;
    free(lg->path);
    lg->path = NULL;
    free(lg->carry);
    lg->carry = NULL;
    lg->ncarry = 0;
}

static void rotate(struct rt *rt, struct rt_log *lg)
{
    size_t n = strlen(lg->path) + 24;
    char from[n], to[n];
    snprintf(to, n, "%s.%d", lg->path, rt->cfg.log_keep);
    if (unlink(to) == 0)
        rt->stats.log_files_dropped++;
    for (int i = rt->cfg.log_keep - 1; i >= 1; i--) {
        snprintf(from, n, "%s.%d", lg->path, i);
        snprintf(to, n, "%s.%d", lg->path, i + 1);
        if (rename(from, to) < 0 && errno != ENOENT)
            log_warn("runtime: log rotation: rename failed", LOG_STR("from", from), LOG_ERRNO("error", errno));
    }
    snprintf(to, n, "%s.1", lg->path);
    if (rename(lg->path, to) < 0)
        log_warn("runtime: log rotation: rename failed", LOG_STR("from", lg->path), LOG_ERRNO("error", errno));
    close(lg->fd);
    lg->fd = -1;
    rt->stats.log_rotations++;
    int rc = open_current(lg);
    if (rc < 0)
        log_error("runtime: cannot reopen log file after rotation", LOG_STR("path", lg->path),
                  LOG_ERRNO("error", rc));
}

static void write_all(struct rt *rt, struct rt_log *lg, const char *p, size_t n)
{
    while (n > 0 && lg->fd >= 0) {
        ssize_t w = write(lg->fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        lg->size += (uint64_t)w;
        p += w;
        n -= (size_t)w;
    }
    rt->stats.log_bytes_dropped += n;
}

/* How much of p[0..n) to write into a file with `room` bytes left: all if
 * it fits, else up to the last newline within room, else (no newline fits)
 * 0 when the file has content (rotate first), room when it is empty. */
static size_t fitting(const char *p, size_t n, uint64_t room, bool is_empty)
{
    if (n <= room)
        return n;
    const char *nl = room ? memrchr(p, '\n', (size_t)room) : NULL;
    if (nl)
        return (size_t)(nl - p) + 1;
    return is_empty ? (size_t)room : 0;
}

static void write_lines(struct rt *rt, struct rt_log *lg, const char *p, size_t n)
{
    uint64_t max = rt->cfg.log_max_bytes;
    while (n > 0) {
        if (lg->fd < 0) {
            rt->stats.log_bytes_dropped += n;
            return;
        }
        uint64_t room = lg->size < max ? max - lg->size : 0;
        size_t k = fitting(p, n, room, lg->size == 0);
        if (k > 0) {
            write_all(rt, lg, p, k);
            p += k;
            n -= k;
        }
        if (n > 0 || lg->size >= max)
            rotate(rt, lg);
    }
}

/* Keeps an unfinished line until its newline arrives (or it outgrows
 * RT_LINE_CARRY): a pipe read ends wherever the writer's write ended, and
 * a rotation must not fall inside a line. */
static void carry(struct rt *rt, struct rt_log *lg, const char *p, size_t n, bool is_line_end)
{
    if (!lg->carry && !(lg->carry = malloc(RT_LINE_CARRY))) {
        write_lines(rt, lg, p, n);
        return;
    }
    if (lg->ncarry + n > RT_LINE_CARRY) {
        write_lines(rt, lg, lg->carry, lg->ncarry);
        lg->ncarry = 0;
        if (n > RT_LINE_CARRY) {
            write_lines(rt, lg, p, n);
            return;
        }
    }
    memcpy(lg->carry + lg->ncarry, p, n);
    lg->ncarry += n;
    if (is_line_end) {
        write_lines(rt, lg, lg->carry, lg->ncarry);
        lg->ncarry = 0;
    }
}

void rt_log_append(struct rt *rt, struct rt_log *lg, const char *p, size_t n)
{
    while (n > 0) {
        const char *nl = memchr(p, '\n', n);
        if (nl && lg->ncarry == 0) { /* whole lines: all of them at once */
            size_t k = (size_t)((const char *)memrchr(p, '\n', n) - p) + 1;
            write_lines(rt, lg, p, k);
            p += k;
            n -= k;
            continue;
        }
        size_t k = nl ? (size_t)(nl - p) + 1 : n;
        carry(rt, lg, p, k, nl != NULL);
        p += k;
        n -= k;
    }
}

void rt_log_flush(struct rt *rt, struct rt_log *lg)
{
    if (lg->ncarry)
        write_lines(rt, lg, lg->carry, lg->ncarry);
    lg->ncarry = 0;
}

void rt_pipe_close(struct rt_proc *c)
{
    if (c->out_fd < 0)
        return;
    rt_log_flush(c->r->rt, &c->log);
    loop_io_close(&c->out_io);
    close(c->out_fd);
    c->out_fd = -1;
}

bool rt_pipe_drain(struct rt_proc *c, bool all)
{
    struct rt *rt = c->r->rt;
    for (int i = 0; c->out_fd >= 0 && (all || i < RT_READS_PER_WAKEUP); i++) {
        ssize_t got = read(c->out_fd, rt->readbuf, RT_READ_CHUNK);
        if (got > 0) {
            rt_log_append(rt, &c->log, rt->readbuf, (size_t)got);
            continue;
        }
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0 && errno == EAGAIN)
            return false;
        rt_pipe_close(c); /* EOF: every writer (the process group) is gone */
        return true;
    }
    return c->out_fd < 0;
}
