#!/usr/bin/env bash
# The harness's STRATA_TEST_* variables point at live servers: checked with
# the real clients (psql, redis-cli, curl, and the NATS protocol by hand over
# bash's /dev/tcp, since the `nats` CLI has no Debian package).
# Run under scripts/with-servers; fails (never skips) without it.
set -u

fail() {
    echo "test_harness_servers: FAIL: $*" >&2
    exit 1
}
ok() { echo "ok   $*" >&2; }

for v in STRATA_TEST_DATABASE_URL STRATA_TEST_PG_DIR STRATA_TEST_PG_PORT \
    STRATA_TEST_REDIS_URL STRATA_TEST_REDIS_PORT \
    STRATA_TEST_NATS_URL STRATA_TEST_NATS_MONITOR_URL STRATA_TEST_NATS_DIR; do
    [[ -n ${!v:-} ]] || fail "$v is not set: run under scripts/with-servers (make test does), e.g.
  scripts/with-servers ctest --test-dir build -L integration"
done

# ---- PostgreSQL -----------------------------------------------------------

sql() { psql -X -q -A -t -v ON_ERROR_STOP=1 "$STRATA_TEST_DATABASE_URL" "$@" 2>&1; }

[[ $STRATA_TEST_DATABASE_URL == postgresql://*@127.0.0.1:"$STRATA_TEST_PG_PORT"/strata_test* ]] ||
    fail "STRATA_TEST_DATABASE_URL ($STRATA_TEST_DATABASE_URL) does not match STRATA_TEST_PG_PORT"
out=$(sql -c 'select 1') || fail "psql select 1: $out"
[[ $out == 1 ]] || fail "psql select 1 returned '$out'"
version=$(sql -c 'show server_version_num') || fail "psql: $version"
[[ $version == 15* ]] || fail "expected PostgreSQL 15, server_version_num is '$version'"
out=$(sql -c 'select current_database()') || fail "psql: $out"
[[ $out == strata_test ]] || fail "connected to database '$out', not strata_test"
[[ -f $STRATA_TEST_PG_DIR/PG_VERSION && -f $STRATA_TEST_PG_DIR/postmaster.pid ]] ||
    fail "STRATA_TEST_PG_DIR ($STRATA_TEST_PG_DIR) is not the running cluster's data dir"
ok "postgres: select 1 on $STRATA_TEST_DATABASE_URL (server_version_num $version)"

# A table name of our own: other tests may share the database concurrently.
t=harness_check_$$
out=$(sql <<EOF
create table $t (id int primary key, note text);
insert into $t values (1, 'one'), (2, 'two');
select string_agg(note, ',' order by id) from $t;
drop table $t;
select coalesce(to_regclass('$t')::text, 'gone');
EOF
) || fail "psql create/insert/drop: $out"
[[ $out == $'one,two\ngone' ]] || fail "create/insert/select/drop gave '$out'"
ok "postgres: create, insert, select, drop table $t"

# ---- Redis ------------------------------------------------------------------

[[ $STRATA_TEST_REDIS_URL == "redis://127.0.0.1:$STRATA_TEST_REDIS_PORT/0" ]] ||
    fail "STRATA_TEST_REDIS_URL ($STRATA_TEST_REDIS_URL) does not match STRATA_TEST_REDIS_PORT"
rc() { redis-cli -u "$STRATA_TEST_REDIS_URL" "$@" 2>&1; }
key=strata:harness-check:$$
val="v-$RANDOM-$(date +%s%N)"
out=$(rc SET "$key" "$val" EX 60) || fail "redis-cli SET: $out"
[[ $out == OK ]] || fail "redis-cli SET answered '$out'"
out=$(rc GET "$key") || fail "redis-cli GET: $out"
[[ $out == "$val" ]] || fail "redis GET returned '$out', want '$val'"
out=$(rc DEL "$key") || fail "redis-cli DEL: $out"
[[ $out == 1 ]] || fail "redis DEL answered '$out'"
out=$(rc INFO server | tr -d '\r' | grep '^redis_version:')
[[ ${out#redis_version:} == 7.* ]] || fail "expected Redis 7, got '$out'"
ok "redis: SET/GET/DEL round trip on $STRATA_TEST_REDIS_URL (${out#redis_version:})"

# ---- NATS JetStream ------------------------------------------------------------

out=$(curl -fsS --max-time 5 "$STRATA_TEST_NATS_MONITOR_URL/healthz?js-enabled-only=true" 2>&1) ||
    fail "NATS /healthz?js-enabled-only=true: $out"
jsz=$(curl -fsS --max-time 5 "$STRATA_TEST_NATS_MONITOR_URL/jsz" 2>&1) || fail "NATS /jsz: $jsz"
store=$(jq -r 'if .disabled then "disabled" else .config.store_dir // "none" end' <<<"$jsz" 2>&1) ||
    fail "NATS /jsz is not JSON: $jsz"
[[ $store == "$STRATA_TEST_NATS_DIR"/* ]] ||
    fail "JetStream not enabled with its store under $STRATA_TEST_NATS_DIR (/jsz says '$store')"
ok "nats: JetStream enabled per $STRATA_TEST_NATS_MONITOR_URL/jsz (store $store)"

# The client port, by hand: INFO must announce JetStream; then PING/PONG, a
# publish we receive on our own subscription, and a JetStream API request
# ($JS.API.INFO) answered by the server.
hostport=${STRATA_TEST_NATS_URL#nats://}
host=${hostport%:*} port=${hostport##*:}
exec 3<>"/dev/tcp/$host/$port" || fail "cannot connect to $STRATA_TEST_NATS_URL"
read_line() { IFS= read -r -t 5 line <&3 || fail "NATS: no reply within 5 s (${1})"; line=${line%$'\r'}; }
read_line INFO
[[ $line == "INFO {"* ]] || fail "NATS greeted with '$line', not INFO"
[[ $line == *'"jetstream":true'* ]] || fail "NATS INFO does not say \"jetstream\":true: $line"
printf 'CONNECT {"verbose":false,"pedantic":false,"name":"harness-check"}\r\nPING\r\n' >&3
read_line PONG
[[ $line == PONG ]] || fail "NATS answered PING with '$line'"
printf 'SUB harness.check.%s 1\r\nSUB _INBOX.harness.%s 2\r\nPUB harness.check.%s 5\r\nhello\r\nPUB $JS.API.INFO _INBOX.harness.%s 0\r\n\r\n' \
    $$ $$ $$ $$ >&3
got_msg='' got_js=''
for _ in 1 2 3 4 5 6; do
    read_line "MSG"
    case $line in
    "MSG harness.check.$$ 1 5")
        read_line payload
        [[ $line == hello ]] || fail "NATS delivered payload '$line', not hello"
        got_msg=1 ;;
    "MSG _INBOX.harness.$$ 2 "*)
        read_line "JetStream reply"
        [[ $line == *'"type":"io.nats.jetstream.api.v1.account_info_response"'* ]] ||
            fail "JetStream API answered: $line"
        [[ $line != *'"error"'* ]] || fail "JetStream API error: $line"
        got_js=1 ;;
    PING) printf 'PONG\r\n' >&3 ;;
    -ERR*) fail "NATS: $line" ;;
    esac
    [[ -n $got_msg && -n $got_js ]] && break
done
exec 3>&-
[[ -n $got_msg ]] || fail "NATS did not deliver our own publish"
[[ -n $got_js ]] || fail "NATS JetStream API did not answer \$JS.API.INFO"
ok "nats: INFO says jetstream:true; PING/PONG, pub/sub and \$JS.API.INFO on $STRATA_TEST_NATS_URL"
