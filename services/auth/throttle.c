/* throttle.c — failed logins counted per account and per client IP.
 *
 * Fixed windows that start at the first failure (INCR, then EXPIRE when the
 * key has no TTL yet): LOGIN_MAX_FAILURES (5) per account and
 * LOGIN_MAX_FAILURES_IP (20) per address within LOGIN_FAILURE_WINDOW_S
 * (900 s). Five guesses per quarter hour caps an online attack on one
 * account at 480 a day; twenty per address lets a household or an office
 * NAT mistype without locking everyone out. The check runs before user-svc
 * is called, so a throttled attempt costs no argon2 hash, and it counts the
 * attempt at once (given back on success), so bursts cannot overshoot. The
 * account key is a hash of the normalised email: no address in clear in
 * Redis. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>

#include "auth.h"

/* Check and reserve in one step: → seconds to wait (0: allowed, and the
 * attempt is already counted against both keys as if it failed). Counting
 * before user-svc answers is what bounds a burst: with check-then-count,
 * a hundred parallel guesses would all pass the check before the first
 * failure was recorded. A success or an upstream error gives the attempt
 * back (RELEASE_LUA). A key over its limit without a TTL (a manual SET)
 * still says 1 s rather than 0, which would mean "go". */
static const char CHECK_LUA[] =
    "local function wait(k, max)\n"
    "  local n = tonumber(redis.call('GET', k) or '0') or 0\n"
    "  if n < tonumber(max) then return 0 end\n"
    "  local t = redis.call('TTL', k)\n"
    "  if t < 1 then t = 1 end\n"
    "  return t\n"
    "end\n"
    "local w = math.max(wait(KEYS[1], ARGV[1]), wait(KEYS[2], ARGV[2]))\n"
    "if w > 0 then return w end\n"
    "for i = 1, 2 do\n"
    "  redis.call('INCR', KEYS[i])\n"
    "  if redis.call('TTL', KEYS[i]) < 0 then redis.call('EXPIRE', KEYS[i], ARGV[3]) end\n"
    "end\n"
    "return 0\n";

/* Gives back a reserved attempt: ARGV[1] 1 deletes the account counter
 * (a successful login), 0 decrements it (user-svc failed, not the user).
 * Never below zero, and DECR keeps the TTL. */
static const char RELEASE_LUA[] =
    "if ARGV[1] == '1' then redis.call('DEL', KEYS[1])\n"
    "elseif tonumber(redis.call('GET', KEYS[1]) or '0') > 0 then redis.call('DECR', KEYS[1]) end\n"
    "if tonumber(redis.call('GET', KEYS[2]) or '0') > 0 then redis.call('DECR', KEYS[2]) end\n"
    "return 0\n";

static void keys(const char *acct, const char *ip, char *ka, size_t na, char *ki, size_t ni)
{
    snprintf(ka, na, "login:fail:acct:%s", acct);
    snprintf(ki, ni, "login:fail:ip:%s", ip);
}

int throttle_check(struct auth *a, int worker, const char *acct, const char *ip, redis_cb cb, void *arg)
{
    char ka[96], ki[96], ma[24], mi[24], win[24];
    keys(acct, ip, ka, sizeof ka, ki, sizeof ki);
    snprintf(ma, sizeof ma, "%" PRId64, a->cfg.max_failures_acct);
    snprintf(mi, sizeof mi, "%" PRId64, a->cfg.max_failures_ip);
    snprintf(win, sizeof win, "%" PRId64, a->cfg.failure_window_s);
    const char *argv[] = { ka, ki, ma, mi, win };
    return auth_eval(a, worker, CHECK_LUA, 2, 5, argv, cb, arg);
}

static void ignore_reply(int err, redisReply *reply, void *arg)
{
    (void)err;
    (void)reply;
    (void)arg;
}

void throttle_release(struct auth *a, int worker, const char *acct, const char *ip, bool succeeded)
{
    char ka[96], ki[96];
    keys(acct, ip, ka, sizeof ka, ki, sizeof ki);
    const char *argv[] = { ka, ki, succeeded ? "1" : "0" };
    auth_eval(a, worker, RELEASE_LUA, 2, 3, argv, ignore_reply, NULL);
}

int throttle_parse(const redisReply *rep, int64_t *out)
{
    if (!rep || rep->type != REDIS_REPLY_INTEGER)
        return -EPROTO;
    *out = rep->integer;
    return 0;
}
