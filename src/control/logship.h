/* logship.h — pushing the captured logs to Grafana Loki (LOKI_URL).
 *
 * The shipper tails every LOGS/<replica>/<container>.log (polled every
 * poll_ms: new replica dirs, growth, rotation) and pushes the lines through
 * Loki's push API:
 *
 *   POST {LOKI_URL}/loki/api/v1/push
 *   Content-Type: application/json, Content-Encoding: gzip
 *   {"streams":[{"stream":{"workload","replica","container","level"},
 *                "values":[["<unix ns>","<line>"], …]}]}
 *
 * Labels: workload (the replica name without its last two dash-separated
 * parts), replica, container (the file name without .log) and level (the
 * line's "level" as debug, info, warn or error; "unknown" when it has none
 * or is not JSON). The timestamp is the line's "ts" (RFC 3339) or the time
 * it was read; within a stream it never goes backwards (a line older than
 * the one before it takes that one's time), so every push is in order.
 *
 * Rotation: the runtime renames .log → .log.1 … .log.3. Every file of a
 * stream that is not finished is held open, so the rest of a file renamed
 * (or even deleted) under the shipper is read before the next one, oldest
 * first; a stream whose shipper fell so far behind that a second unread file
 * was deleted drops its oldest held file, counting its lines
 * (reason="rotated") — disk stays bounded by the runtime's rotation.
 *
 * Delivery: one push in flight, batches of at most max_batch_bytes of lines
 * (sent when that much is waiting or on every poll). Connect errors,
 * timeouts, 429 and 5xx are retried with exponential backoff and jitter
 * (backoff_min_ms doubling up to backoff_max_ms); any other status drops
 * the batch (reason="rejected"). Lines longer than max_line_bytes are
 * dropped (reason="too_long"). The lines read and not yet acknowledged are
 * held in memory up to max_buffer_bytes; at the bound the shipper stops
 * reading (the files are the rest of the buffer) instead of losing lines.
 *
 * Positions: the oldest unacknowledged byte of every stream (inode and
 * offset) is written to state_file (atomically, by rename; no fsync on the
 * loop) on every poll where it moved and at stop. A new shipper on the same
 * state file resumes from there: a restart loses nothing and resends at
 * most the batch that was in flight (Loki drops an entry identical in
 * stream, timestamp and line). Without state the shipper starts at the
 * beginning of every file it finds.
 *
 * Metrics (metrics_default()): strata_logship_lines_total,
 * strata_logship_dropped_lines_total{reason="rejected"|"too_long"|"rotated"},
 * strata_logship_batches_total{result="ok"|"retry"|"rejected"}.
 *
 * Thread: every function runs on the loop given to logship_start. */
#ifndef STRATA_CONTROL_LOGSHIP_H
#define STRATA_CONTROL_LOGSHIP_H

#include <stddef.h>
#include <stdint.h>

#include "core/http1_client.h"
#include "core/loop.h"

struct logship;

struct logship_config {
    const char *state_file;       /* positions (STATE/logship.json); NULL → not persisted */
    uint32_t poll_ms;             /* 0 → 1000 */
    size_t max_batch_bytes;       /* 0 → 1 MiB of lines per push */
    size_t max_buffer_bytes;      /* 0 → 16 MiB of lines read and not yet acknowledged */
    size_t max_line_bytes;        /* 0 → 256 KiB (Loki's default max_line_size) */
    uint32_t backoff_min_ms;      /* 0 → 1000 */
    uint32_t backoff_max_ms;      /* 0 → 30000 */
    uint32_t request_timeout_ms;  /* 0 → 10000 */
};

/* Checks LOKI_URL: http://<numeric IPv4 or [IPv6]>:<port>[/prefix] (the
 * push path is appended unless the URL already ends with it). 0, or
 * -EINVAL with a message naming the problem in err. */
int logship_check_url(const char *loki_url, char *err, size_t errsz);

/* Starts shipping logs_dir (STATE/logs) to loki_url on loop l through
 * client (borrowed: it must outlive the shipper). cfg may be NULL (all
 * defaults); it and the strings are copied. The first poll runs at once.
 * NULL (errno EINVAL, with an error logged naming the problem) for a URL
 * logship_check_url refuses, or ENOMEM. */
struct logship *logship_start(struct loop *l, struct http1_client *client, const char *logs_dir,
                              const char *loki_url, const struct logship_config *cfg);

/* Cancels the push in flight (its lines are resent by the next shipper),
 * writes the positions, closes every file and frees the shipper. NULL is a
 * no-op. Call before freeing the client. */
void logship_stop(struct logship *s);

/* For tests. */
struct logship_stats {
    uint64_t lines;          /* acknowledged by Loki */
    uint64_t dropped;        /* every reason */
    uint64_t batches_ok, retries, rejected;
    uint64_t buffered_bytes; /* read, not yet acknowledged */
    size_t streams;
};
void logship_stats(const struct logship *s, struct logship_stats *out);

#endif
