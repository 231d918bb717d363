/* redis.h — a Redis client on strata's event loop (hiredis 0.14's async API).
 *
 * One client per loop (per worker thread), one TCP connection per client,
 * commands pipelined on it. The client connects in the background, sends
 * AUTH (when the URL has a password) and SELECT db, and reconnects after a
 * loss with backoff: 100 ms doubling to 5 s, reset once a connection is up.
 * Nothing here blocks the loop thread: hosts are numeric (or "localhost",
 * mapped to 127.0.0.1), since name resolution blocks.
 *
 *   struct redis_client *rc = redis_client_new(loop, &(struct redis_config){
 *       .url = getenv("REDIS_URL") });
 *   redis_command(rc, on_get, req, "GET user:%s", id);
 *   ...
 *   static void on_get(int err, redisReply *r, void *arg)
 *   {
 *       if (err) { fall back to PostgreSQL; return; }
 *       if (r->type == REDIS_REPLY_STRING) use r->str, r->len;
 *   }
 *
 * Delivery contract — once redis_command*() returned 0, its callback runs
 * exactly once, on the loop thread, never inside the redis_command*() call:
 *   err 0            the server answered; reply is non-NULL (it may be a
 *                    REDIS_REPLY_ERROR, e.g. WRONGTYPE: that is the
 *                    server's answer, not a transport failure);
 *   err -ETIMEDOUT   no answer within command_timeout_ms; the connection is
 *                    dropped and re-made (a late answer would be
 *                    attributed to the wrong command otherwise). The
 *                    command may or may not have run;
 *   err -ENOTCONN    the client is down (connecting, backing off, or the
 *                    connection was lost with the command in flight —
 *                    then it may or may not have run). Commands are never
 *                    queued while down: they fail fast, on the next loop
 *                    iteration;
 *   err -ENOBUFS     max_pending commands are already in flight;
 *   err -EPROTO      the connection broke on a protocol error.
 * reply is NULL whenever err != 0, and is valid only during the callback
 * (hiredis frees it afterwards). The only exception to "exactly once":
 * redis_client_free() drops every pending command WITHOUT calling its
 * callback (the callers are going away too).
 *
 * A callback may issue new commands and may call redis_client_free().
 *
 * Metrics (process registry, shared by all clients):
 *   strata_redis_commands_total{result="ok|error|timeout|unavailable"}
 *   ("error": a REDIS_REPLY_ERROR answer or -EPROTO; "unavailable":
 *   -ENOTCONN or -ENOBUFS). Logs: one warning when the connection is lost
 *   (or the first connect fails), one info line when it is (re)established.
 *
 * Every function must be called on the loop's thread. */
#ifndef STRATA_REDIS_H
#define STRATA_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

struct loop;
struct redis_client;

struct redis_config {
    /* redis://[[user]:password@]host[:port][/db]; host numeric
     * ("127.0.0.1", "[::1]") or "localhost"; port 6379 and db 0 by default. */
    const char *url;
    uint32_t connect_timeout_ms; /* 0 → 1000 */
    uint32_t command_timeout_ms; /* 0 → 1000 */
    /* Commands in flight at most; past it → cb(-ENOBUFS). 0 → 10000. */
    uint32_t max_pending;
};

/* Creates the client and starts connecting in the background (it returns
 * before the connection is up: redis_is_connected() is false until then).
 * The config is copied. Returns NULL on an invalid URL (logged, naming the
 * problem) or allocation failure. */
struct redis_client *redis_client_new(struct loop *l, const struct redis_config *cfg);

/* Closes the connection and frees the client. Pending commands are dropped
 * without their callbacks being called. May be called from inside one of
 * this client's callbacks (the memory is then released after it returns).
 * NULL is a no-op. */
void redis_client_free(struct redis_client *c);

/* True while a connection is up (commands are being sent). */
bool redis_is_connected(const struct redis_client *c);

typedef void (*redis_cb)(int err, redisReply *reply, void *arg);

/* Sends a command built from a hiredis format ("SET %s %b", key, val, len).
 * (No printf format attribute: hiredis adds %b, which the compiler rejects.)
 * Returns 0 when cb will be called (see the delivery contract above, which
 * includes -ENOTCONN while down), or <0 without calling cb: -EINVAL (NULL
 * client/cb, bad format), -ENOMEM. */
int redis_command(struct redis_client *c, redis_cb cb, void *arg, const char *fmt, ...);

/* As redis_command with the arguments as binary-safe strings (argvlen NULL:
 * strlen of each). The arguments are copied before the call returns. */
int redis_command_argv(struct redis_client *c, redis_cb cb, void *arg, int argc,
                       const char **argv, const size_t *argvlen);

#endif
