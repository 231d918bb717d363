/* logsearch.h — searching the captured logs through the admin API.
 *
 *   GET /v1/logs?workload=W&replica=R&container=app|proxy&level=L
 *               &since=D|T&until=D|T&trace_id=T&q=SUBSTRING&limit=N
 *       (Authorization: Bearer <admin token>)
 *   200 {"lines":[{"replica","container","ts","level","line"}], "truncated": bool}
 *
 * The files are the runtime's (runtime_log.c): LOGS/<replica>/<container>.log
 * and its rotations .log.1 (newest) … .log.3 (oldest), one JSON object per
 * line. A replica is named <workload>-<template hash>-<suffix>, so the
 * workload is the name without its last two dash-separated parts.
 *
 * Filters (all optional, combined with AND):
 *   workload, replica   exact names;
 *   container           app or proxy (default both);
 *   level               a minimum: debug < info < warn < error ("warning"
 *                       counts as warn, "fatal"/"critical"/"panic" as
 *                       error); a line without a level (a crash message on
 *                       stderr) is never hidden by it;
 *   since, until        a duration back from now (500ms, 90s, 5m, 2h, 7d)
 *                       or an RFC 3339 time; compared with the line's "ts"
 *                       (a line without one takes the ts of the line before
 *                       it in its file);
 *   trace_id            the line's "trace_id" equals T;
 *   q                   the raw line contains SUBSTRING (case-sensitive);
 *   limit               1..5000, default 500.
 * "line" is the JSON object as written, or the raw text when the line is
 * not a JSON object; "ts" and "level" are null when the line has none.
 * Lines come in time order, newest last; when more lines match than limit,
 * the newest limit are returned and "truncated" is true.
 *
 * Bounds (the handler runs on the control plane's single worker loop and
 * blocks it while it reads): at most LOGSEARCH_MAX_SCAN bytes of files are
 * read per request, newest files first (so a search over a large history
 * returns the newest part, with "truncated": true); files last written
 * before `since` are skipped unread; at most LOGSEARCH_MAX_RESULT bytes of
 * matching lines are kept. Scanning the whole budget costs a few hundred
 * milliseconds of that loop. Bad parameters → 400 invalid_query.
 *
 * Thread: the route runs on the service's worker (WORKERS=1). */
#ifndef STRATA_CONTROL_LOGSEARCH_H
#define STRATA_CONTROL_LOGSEARCH_H

#include "control/admin.h"
#include "core/service.h"

/* 64 MiB: two full rotation sets of one busy replica (4 files × 10 MiB),
 * parsed in well under a second; more would stall the admin API and the
 * runtime that share the loop. */
#define LOGSEARCH_MAX_SCAN (64u << 20)
/* 16 MiB of matched lines kept for the answer (5000 lines of 3 KiB). */
#define LOGSEARCH_MAX_RESULT (16u << 20)
#define LOGSEARCH_DEFAULT_LIMIT 500
#define LOGSEARCH_MAX_LIMIT 5000

/* Adds GET /v1/logs to s (before service_run). logs_dir (STATE/logs) and
 * *auth are copied. One registration per process. 0, -ENAMETOOLONG, or
 * service_route's error. */
int logsearch_register(struct service *s, const char *logs_dir, const struct admin_auth *auth);

/* RFC 3339 ("2026-11-25T20:02:57.693Z", "…+02:00", fraction optional) →
 * milliseconds since the epoch. 0 or -EINVAL. Shared with logship. */
int logsearch_parse_time(const char *p, size_t n, int64_t *ms_out);

/* A replica's name ("order-svc-1a2b3c4d-x7k2p") → the length of its
 * workload's ("order-svc"), or 0 when it is not of that form. */
size_t logsearch_workload_len(const char *replica);

#endif
