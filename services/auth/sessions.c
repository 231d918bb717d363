/* sessions.c — sessions and refresh tokens in Redis.
 *
 * Each operation is one Lua script, so that a check and the change it
 * decides are atomic: two concurrent refreshes with the same token cannot
 * both rotate it (the second one sees it used and revokes the session).
 * The scripts touch session:<sid> keys they compute from a refresh token's
 * record, which a Redis Cluster would refuse (keys must be declared); this
 * service targets one Redis primary (with replicas), as in deploy/.
 *
 * EVAL sends the script text (< 1 KiB) with every call; Redis caches the
 * compiled function by its SHA-1, so the cost is the bytes on the wire, not
 * a compilation, and there is no NOSCRIPT path to handle after a restart. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "auth.h"

int auth_eval(struct auth *a, int worker, const char *script, int nkeys, int argc, const char **argv, redis_cb cb,
              void *arg)
{
    /* EVAL script nkeys args...: 12 is more than any script here takes. */
    const char *v[3 + 12];
    char nk[8];
    if (argc > 12 || worker < 0 || worker >= a->nworkers || !a->redis[worker])
        return -EINVAL;
    snprintf(nk, sizeof nk, "%d", nkeys);
    v[0] = "EVAL";
    v[1] = script;
    v[2] = nk;
    for (int i = 0; i < argc; i++)
        v[3 + i] = argv[i];
    return redis_command_argv(a->redis[worker], cb, arg, 3 + argc, v, NULL);
}

/* KEYS: session:<sid>, refresh:<hash>. ARGV: sid user_id email roles hash ttl now. */
static const char CREATE_LUA[] =
    "redis.call('HSET', KEYS[1], 'user_id', ARGV[2], 'email', ARGV[3], 'roles', ARGV[4],\n"
    "           'current', ARGV[5], 'revoked', '0', 'created_at', ARGV[7])\n"
    "redis.call('EXPIRE', KEYS[1], ARGV[6])\n"
    "redis.call('HSET', KEYS[2], 'sid', ARGV[1], 'user_id', ARGV[2], 'used', '0')\n"
    "redis.call('EXPIRE', KEYS[2], ARGV[6])\n"
    "return 1\n";

/* KEYS: refresh:<old>, refresh:<new>. ARGV: old hash, new hash, ttl.
 * → {0} invalid | {2, sid, user_id} reuse (session revoked) |
 *   {1, sid, user_id, email, roles} rotated.
 * The session's TTL is pushed forward at each rotation, so it always
 * outlives every token issued for it and a late reuse is still detected. */
static const char ROTATE_LUA[] =
    "local t = redis.call('HMGET', KEYS[1], 'sid', 'used')\n"
    "if not t[1] then return {0} end\n"
    "local skey = 'session:' .. t[1]\n"
    "local s = redis.call('HMGET', skey, 'revoked', 'current', 'user_id', 'email', 'roles')\n"
    "if not s[2] or s[1] ~= '0' then return {0} end\n"
    "if t[2] ~= '0' or s[2] ~= ARGV[1] then\n"
    "  redis.call('HSET', skey, 'revoked', '1')\n"
    "  redis.call('DEL', 'refresh:' .. s[2])\n"
    "  return {2, t[1], s[3]}\n"
    "end\n"
    "redis.call('HSET', KEYS[1], 'used', '1')\n"
    "redis.call('HSET', skey, 'current', ARGV[2])\n"
    "redis.call('EXPIRE', skey, ARGV[3])\n"
    "redis.call('HSET', KEYS[2], 'sid', t[1], 'user_id', s[3], 'used', '0')\n"
    "redis.call('EXPIRE', KEYS[2], ARGV[3])\n"
    "return {1, t[1], s[3], s[4], s[5]}\n";

/* KEYS: refresh:<hash>. → {0} nothing found | {1, sid, user_id} revoked. */
static const char REVOKE_LUA[] =
    "local t = redis.call('HMGET', KEYS[1], 'sid', 'user_id')\n"
    "if not t[1] then return {0} end\n"
    "local skey = 'session:' .. t[1]\n"
    "local cur = redis.call('HGET', skey, 'current')\n"
    "if not cur then return {0} end\n"
    "redis.call('HSET', skey, 'revoked', '1')\n"
    "redis.call('DEL', 'refresh:' .. cur)\n"
    "return {1, t[1], t[2]}\n";

int session_create(struct auth *a, int worker, const char *sid, const struct auth_identity *id,
                   const char *refresh_hash, redis_cb cb, void *arg)
{
    char skey[96], rkey[96], ttl[24], now[24];
    snprintf(skey, sizeof skey, "session:%s", sid);
    snprintf(rkey, sizeof rkey, "refresh:%s", refresh_hash);
    snprintf(ttl, sizeof ttl, "%" PRId64, a->cfg.refresh_ttl_s);
    snprintf(now, sizeof now, "%lld", (long long)time(NULL));
    const char *argv[] = { skey, rkey, sid, id->user_id, id->email, id->roles_json, refresh_hash, ttl, now };
    return auth_eval(a, worker, CREATE_LUA, 2, 9, argv, cb, arg);
}

int session_rotate(struct auth *a, int worker, const char *old_hash, const char *new_hash, redis_cb cb, void *arg)
{
    char okey[96], nkey[96], ttl[24];
    snprintf(okey, sizeof okey, "refresh:%s", old_hash);
    snprintf(nkey, sizeof nkey, "refresh:%s", new_hash);
    snprintf(ttl, sizeof ttl, "%" PRId64, a->cfg.refresh_ttl_s);
    const char *argv[] = { okey, nkey, old_hash, new_hash, ttl };
    return auth_eval(a, worker, ROTATE_LUA, 2, 5, argv, cb, arg);
}

int session_revoke(struct auth *a, int worker, const char *hash, redis_cb cb, void *arg)
{
    char key[96];
    snprintf(key, sizeof key, "refresh:%s", hash);
    const char *argv[] = { key };
    return auth_eval(a, worker, REVOKE_LUA, 1, 1, argv, cb, arg);
}

static const char *elem_str(const redisReply *rep, size_t i)
{
    if (i >= rep->elements || rep->element[i]->type != REDIS_REPLY_STRING)
        return NULL;
    return rep->element[i]->str;
}

int session_parse(const redisReply *rep, struct session_info *out)
{
    memset(out, 0, sizeof *out);
    if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements < 1 || rep->element[0]->type != REDIS_REPLY_INTEGER)
        return -EPROTO;
    switch (rep->element[0]->integer) {
    case 0:
        out->result = SESSION_INVALID;
        return 0;
    case 1:
        out->result = SESSION_OK;
        break;
    case 2:
        out->result = SESSION_REUSE;
        break;
    default:
        return -EPROTO;
    }
    out->sid = elem_str(rep, 1);
    out->id.user_id = elem_str(rep, 2);
    out->id.email = elem_str(rep, 3);
    out->id.roles_json = elem_str(rep, 4);
    if (!out->sid || !out->id.user_id)
        return -EPROTO;
    return 0;
}
