#!/usr/bin/env bash
# user-svc end to end, on the harness' real PostgreSQL, Redis and NATS
# JetStream, with real clients (curl, psql, redis-cli, jq, openssl):
# registration and every bad input (database checked unchanged), bearer JWTs
# (valid, expired, wrong audience, bad signature, alg none), self/admin
# access, admin listing with keyset pagination, cache-aside and its
# invalidation, Redis unreachable, the internal endpoints, and the order-event
# consumer (idempotent on a repeated event id, poison messages acked).
#
# Tokens are minted here with openssl (ES256: DER signature → raw r||s), and
# their JWKS is served by nginx (a Debian package; master_process off, so it
# runs as the test's user): no dependency on auth-svc. Order events are
# published with NATS' text protocol over bash's /dev/tcp: no nats CLI.
set -euo pipefail
source "$STRATA_SOURCE_DIR/tests/integration/lib/stack.sh"
stack_init
command -v nginx >/dev/null || stack_fail "nginx is missing (scripts/install-deps installs it; it serves the test JWKS)"

pass=0
ok() { pass=$((pass + 1)); echo "ok   $*"; }
fail() { stack_fail "$@"; }

# ---- tokens --------------------------------------------------------------------------
b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }
key=$(stack_keys "$STACK_WORK/keys" signer)
other=$(stack_keys "$STACK_WORK/keys" other)
KID=test-key-1
pub=$(openssl ec -in "$key" -pubout -outform DER 2>/dev/null | tail -c 64 | xxd -p -c 64)
x=$(echo "${pub:0:64}" | xxd -r -p | b64url)
y=$(echo "${pub:64:64}" | xxd -r -p | b64url)
printf '{"keys":[{"kty":"EC","crv":"P-256","x":"%s","y":"%s","kid":"%s","use":"sig","alg":"ES256"}]}' \
  "$x" "$y" "$KID" >"$STACK_WORK/jwks.json"

# sign KEYFILE INPUT → base64url(r||s), each 32 bytes
sign() {
  printf '%s' "$2" | openssl dgst -sha256 -sign "$1" -binary >"$STACK_WORK/sig.der"
  local ints
  ints=$(openssl asn1parse -inform DER -in "$STACK_WORK/sig.der" | sed -n 's/.*INTEGER *://p')
  local r s
  r=$(echo "$ints" | sed -n 1p); s=$(echo "$ints" | sed -n 2p)
  r=$(printf '%064s' "${r: -64}" | tr ' ' 0); s=$(printf '%064s' "${s: -64}" | tr ' ' 0)
  echo -n "$r$s" | xxd -r -p | b64url
}
# token SUB ROLES_JSON [KEY] [AUD] [EXP_OFFSET] [ALG]
token() {
  local sub=$1 roles=$2 k=${3:-$key} aud=${4:-strata} off=${5:-600} alg=${6:-ES256}
  local now; now=$(date +%s)
  local h p
  h=$(printf '{"alg":"%s","typ":"JWT","kid":"%s"}' "$alg" "$KID" | b64url)
  p=$(printf '{"iss":"https://auth.strata.local","sub":"%s","aud":"%s","iat":%d,"nbf":%d,"exp":%d,"roles":%s}' \
      "$sub" "$aud" "$now" "$now" $((now + off)) "$roles" | b64url)
  if [ "$alg" = none ]; then echo "$h.$p."; return; fi
  echo "$h.$p.$(sign "$k" "$h.$p")"
}

# ---- JWKS server (nginx) ------------------------------------------------------------
jwks_port=$(stack_port)
mkdir -p "$STACK_WORK/nginx"
cat >"$STACK_WORK/nginx.conf" <<EOF
daemon off;
master_process off;
pid $STACK_WORK/nginx/nginx.pid;
error_log $STACK_WORK/nginx/error.log;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path $STACK_WORK/nginx; proxy_temp_path $STACK_WORK/nginx;
  fastcgi_temp_path $STACK_WORK/nginx; uwsgi_temp_path $STACK_WORK/nginx; scgi_temp_path $STACK_WORK/nginx;
  server {
    listen 127.0.0.1:$jwks_port;
    location = /jwks.json { default_type application/json; alias $STACK_WORK/jwks.json; }
  }
}
EOF
nginx -c "$STACK_WORK/nginx.conf" -p "$STACK_WORK/nginx" >"$STACK_WORK/nginx.log" 2>&1 &
STACK_PIDS+=("$!")
for _ in $(seq 100); do curl -fs -o /dev/null "http://127.0.0.1:$jwks_port/jwks.json" && break; sleep 0.05; done
curl -fs "http://127.0.0.1:$jwks_port/jwks.json" | jq -e '.keys[0].kid' >/dev/null || fail "nginx does not serve the JWKS"

# ---- start ------------------------------------------------------------------------------
db=$(stack_db users)
JWKS=http://127.0.0.1:$jwks_port/jwks.json
stack_start user strata-user-svc DATABASE_URL="$db" REDIS_URL="$STRATA_TEST_REDIS_URL" \
  NATS_URL="$STRATA_TEST_NATS_URL" JWKS_URL="$JWKS" HASH_THREADS=2 LOG_LEVEL=debug
U=$USER_URL
ok "user-svc ready (database, JWKS, bus)"
psql -tAq "$db" -c "SELECT max(version) FROM schema_migrations" | grep -qx 2 || fail "migrations not applied"

count() { psql -tAq "$db" -c "SELECT count(*) FROM users"; }
code() { curl -s -o "$STACK_WORK/body" -w '%{http_code}' "$@"; }
body() { cat "$STACK_WORK/body"; }
post() { code -X POST "$U$1" -H 'Content-Type: application/json' --data-binary "$2"; }
errcode() { jq -r '.error.code' "$STACK_WORK/body"; }
is_error_body() { jq -e '.error.code and .error.message and .error.request_id' "$STACK_WORK/body" >/dev/null; }

# ---- registration -------------------------------------------------------------------------
[ "$(code -D "$STACK_WORK/headers" -X POST "$U/v1/users" -H 'Content-Type: application/json' \
     -d '{"email":"  Alice@Example.COM ","password":"correct horse battery","name":"Alice"}')" = 201 ] \
  || fail "register: $(body)"
jq -e '.email == "alice@example.com" and .name == "Alice" and .roles == ["user"] and (.id|test("^[0-9a-f-]{36}$"))
       and (.created_at|test("Z$")) and (has("password_hash")|not) and (has("password")|not)' "$STACK_WORK/body" \
  >/dev/null || fail "register body: $(body)"
ALICE=$(jq -r .id "$STACK_WORK/body")
grep -qi "^Location: /v1/users/$ALICE" "$STACK_WORK/headers" || fail "Location header: $(cat "$STACK_WORK/headers")"
psql -tAq "$db" -c "SELECT password_hash FROM users WHERE id='$ALICE'" | grep -q '^\$argon2id\$' || fail "not argon2id"
[ "$(count)" = 1 ] || fail "count after register"
ok "register: 201 with Location, email normalised, argon2id hash stored and never returned"

bad() { # STATUS BODY [CONTENT_TYPE] — rejected, nothing written
  local want=$1 data=$2 ct=${3:-application/json} before got
  before=$(count)
  got=$(code -X POST "$U/v1/users" -H "Content-Type: $ct" --data-binary "$data")
  [ "$got" = "$want" ] || fail "want $want, got $got for $data: $(body)"
  is_error_body || fail "not a JSON error body for $data: $(body)"
  [ "$(count)" = "$before" ] || fail "database changed by a rejected request: $data"
}
bad 415 '{"email":"b@example.com","password":"correct horse battery","name":"B"}' text/plain
bad 400 '{"email":'
bad 400 $'{"email":"b@example.com","password":"correct horse battery","name":"\xff"}'
bad 400 '{"email":"b@example.com","email":"c@example.com","password":"correct horse battery","name":"B"}'
bad 422 '[]'
bad 422 '{"email":"b@example.com","password":"correct horse battery","name":"B","role":"admin"}'
bad 422 '{"password":"correct horse battery","name":"B"}'
bad 422 '{"email":42,"password":"correct horse battery","name":"B"}'
bad 422 '{"email":"b.example.com","password":"correct horse battery","name":"B"}'
bad 422 '{"email":"b@@example.com","password":"correct horse battery","name":"B"}'
bad 422 '{"email":"b@c@example.com","password":"correct horse battery","name":"B"}'
bad 422 '{"email":"b@localhost","password":"correct horse battery","name":"B"}'
bad 422 '{"email":"b c@example.com","password":"correct horse battery","name":"B"}'
bad 422 "{\"email\":\"$(printf 'a%.0s' $(seq 65))@example.com\",\"password\":\"correct horse battery\",\"name\":\"B\"}"
bad 422 '{"email":"b@example.com","password":"short","name":"B"}'
bad 422 '{"email":"bob-long-address@example.com","password":"BOB-long-address@example.com","name":"B"}'
bad 422 '{"email":"b@example.com","password":12345678901234,"name":"B"}'
bad 422 '{"email":"b@example.com","password":"correct horse battery","name":""}'
bad 422 "{\"email\":\"b@example.com\",\"password\":\"correct horse battery\",\"name\":\"$(printf 'n%.0s' $(seq 101))\"}"
bad 409 '{"email":"ALICE@example.com","password":"another password!","name":"Alice 2"}'
[ "$(errcode)" = email_taken ] || fail "409 code: $(body)"
ok "registration: 19 bad inputs → 400/409/415/422 JSON errors, nothing written"

[ "$(post /v1/users "{\"email\":\"bob@example.com\",\"password\":\"bob's password 1\",\"name\":\"x'); DROP TABLE users;--\"}")" = 201 ] \
  || fail "register bob: $(body)"
BOB=$(jq -r .id "$STACK_WORK/body")
[ "$(psql -tAq "$db" -c "SELECT name FROM users WHERE id='$BOB'")" = "x'); DROP TABLE users;--" ] || fail "name not stored verbatim"
ok "SQL metacharacters are data"

# ---- JWTs ---------------------------------------------------------------------------------
T_ALICE=$(token "$ALICE" '["user"]')
T_ADMIN=$(token "00000000-0000-4000-8000-000000000000" '["user","admin"]')
auth() { code -H "Authorization: Bearer $1" "${@:2}"; }
[ "$(auth "$T_ALICE" "$U/v1/users/me")" = 200 ] || fail "me: $(body)"
jq -e --arg id "$ALICE" '.id == $id and .email == "alice@example.com" and .order_count == 0 and (has("password_hash")|not)' \
  "$STACK_WORK/body" >/dev/null || fail "me body: $(body)"
[ "$(code "$U/v1/users/me")" = 401 ] || fail "no token"
is_error_body || fail "401 body"
[ "$(auth "$(token "$ALICE" '["user"]' "$key" strata -3600)" "$U/v1/users/me")" = 401 ] || fail "expired accepted"
[ "$(auth "$(token "$ALICE" '["user"]' "$key" other-audience)" "$U/v1/users/me")" = 401 ] || fail "wrong audience accepted"
[ "$(auth "$(token "$ALICE" '["user"]' "$other")" "$U/v1/users/me")" = 401 ] || fail "bad signature accepted"
[ "$(auth "$(token "$ALICE" '["user"]' "$key" strata 600 none)" "$U/v1/users/me")" = 401 ] || fail "alg none accepted"
[ "$(auth "garbage" "$U/v1/users/me")" = 401 ] || fail "garbage token accepted"
ok "JWT: valid 200; missing, expired, wrong audience, bad signature, alg none, garbage → 401"

# ---- access by id ---------------------------------------------------------------------------
[ "$(auth "$T_ALICE" "$U/v1/users/$ALICE")" = 200 ] || fail "self by id: $(body)"
[ "$(auth "$T_ALICE" "$U/v1/users/$BOB")" = 403 ] || fail "other user: $(body)"
[ "$(errcode)" = forbidden ] || fail "403 code"
[ "$(auth "$T_ADMIN" "$U/v1/users/$BOB")" = 200 ] || fail "admin by id: $(body)"
jq -e --arg id "$BOB" '.id == $id' "$STACK_WORK/body" >/dev/null || fail "admin got the wrong user"
[ "$(auth "$T_ADMIN" "$U/v1/users/not-a-uuid")" = 404 ] || fail "invalid uuid: $(body)"
[ "$(auth "$T_ADMIN" "$U/v1/users/0b9a4f6e-1111-4222-8333-444455556666")" = 404 ] || fail "unknown id"
[ "$(errcode)" = not_found ] || fail "404 code"
ok "by id: self 200, other 403, admin 200, invalid uuid 404, unknown 404"

# ---- admin listing with keyset pagination ----------------------------------------------------
for i in 1 2 3 4 5; do
  [ "$(post /v1/users "{\"email\":\"user$i@example.com\",\"password\":\"password number $i\",\"name\":\"User $i\"}")" = 201 ] \
    || fail "register user$i: $(body)"
done
total=$(count)
seen=()
cursor=""
pages=0
while :; do
  [ "$(auth "$T_ADMIN" "$U/v1/users?limit=2${cursor:+&cursor=$cursor}")" = 200 ] || fail "list: $(body)"
  n=$(jq '.items | length' "$STACK_WORK/body"); [ "$n" -le 2 ] || fail "page larger than limit"
  mapfile -t ids < <(jq -r '.items[].id' "$STACK_WORK/body")
  seen+=("${ids[@]}")
  pages=$((pages + 1))
  cursor=$(jq -r '.next_cursor // empty' "$STACK_WORK/body")
  [ -n "$cursor" ] || break
  [ $pages -lt 20 ] || fail "pagination does not end"
done
[ "${#seen[@]}" = "$total" ] || fail "listed ${#seen[@]} of $total"
[ "$(printf '%s\n' "${seen[@]}" | sort -u | wc -l)" = "$total" ] || fail "duplicates across pages"
[ "$pages" = $(((total + 1) / 2)) ] || fail "$pages pages for $total users"
[ "$(auth "$T_ALICE" "$U/v1/users")" = 403 ] || fail "non-admin list"
[ "$(auth "$T_ADMIN" "$U/v1/users?limit=0")" = 400 ] || fail "limit 0"
[ "$(auth "$T_ADMIN" "$U/v1/users?limit=101")" = 400 ] || fail "limit 101"
[ "$(auth "$T_ADMIN" "$U/v1/users?limit=abc")" = 400 ] || fail "limit abc"
[ "$(auth "$T_ADMIN" "$U/v1/users?cursor=!!!")" = 400 ] || fail "bad cursor"
[ "$(auth "$T_ADMIN" "$U/v1/users?cursor=$(printf '1:zz' | b64url)")" = 400 ] || fail "forged cursor"
[ "$(auth "$T_ADMIN" "$U/v1/users?sort=email")" = 400 ] || fail "unknown parameter"
[ "$(errcode)" = invalid_parameter ] || fail "400 code: $(body)"
ok "admin list: $total users in $pages pages of 2, no duplicates; 403 for non-admin; bad limit/cursor/parameter → 400"

# ---- cache-aside and invalidation --------------------------------------------------------------
rhost=${STRATA_TEST_REDIS_URL#redis://}; rhost=${rhost%%/*}; rport=${rhost##*:}
rcli() { redis-cli -p "$rport" "$@"; }
[ "$(auth "$T_ALICE" "$U/v1/users/me")" = 200 ] || fail "me again"
rcli GET "user:$ALICE" | jq -e '.email == "alice@example.com"' >/dev/null || fail "not cached: $(rcli GET "user:$ALICE")"
ttl=$(rcli TTL "user:$ALICE"); [ "$ttl" -gt 0 ] && [ "$ttl" -le 300 ] || fail "TTL $ttl"
[ "$(code -X PATCH "$U/v1/users/me" -H "Authorization: Bearer $T_ALICE" -H 'Content-Type: application/json' \
   -d '{"name":"Alice Liddell"}')" = 200 ] || fail "patch: $(body)"
jq -e '.name == "Alice Liddell"' "$STACK_WORK/body" >/dev/null || fail "patch body"
[ -z "$(rcli GET "user:$ALICE")" ] || fail "cache not invalidated"
[ "$(auth "$T_ALICE" "$U/v1/users/me")" = 200 ] && jq -e '.name == "Alice Liddell"' "$STACK_WORK/body" >/dev/null \
  || fail "stale read after patch: $(body)"
for d in '{"name":""}' '{"name":"x","email":"e@example.com"}' '{}' '{"name":7}'; do
  [ "$(code -X PATCH "$U/v1/users/me" -H "Authorization: Bearer $T_ALICE" -H 'Content-Type: application/json' -d "$d")" = 422 ] \
    || fail "patch $d: $(body)"
done
[ "$(psql -tAq "$db" -c "SELECT name FROM users WHERE id='$ALICE'")" = "Alice Liddell" ] || fail "bad patch changed the name"
[ "$(code -X PATCH "$U/v1/users/me" -H 'Content-Type: application/json' -d '{"name":"x"}')" = 401 ] || fail "patch without token"
ok "cache: filled on read (TTL ≤ 300 s), cleared by PATCH; bad PATCH bodies 422 and nothing changed"

# ---- internal endpoints ---------------------------------------------------------------------------
[ "$(post /internal/v1/credentials/verify '{"email":"Alice@example.com","password":"correct horse battery"}')" = 200 ] \
  || fail "verify: $(body)"
jq -e --arg id "$ALICE" '.user_id == $id and .roles == ["user"]' "$STACK_WORK/body" >/dev/null || fail "verify body: $(body)"
t_wrong=$(curl -s -o "$STACK_WORK/wrong" -w '%{time_total} %{http_code}' -X POST "$U/internal/v1/credentials/verify" \
  -H 'Content-Type: application/json' -d '{"email":"alice@example.com","password":"wrong password!!"}')
t_unknown=$(curl -s -o "$STACK_WORK/unknown" -w '%{time_total} %{http_code}' -X POST "$U/internal/v1/credentials/verify" \
  -H 'Content-Type: application/json' -d '{"email":"nobody@example.com","password":"wrong password!!"}')
[ "${t_wrong#* }" = 401 ] && [ "${t_unknown#* }" = 401 ] || fail "verify wrong/unknown: $t_wrong / $t_unknown"
[ "$(jq -c 'del(.error.request_id)' "$STACK_WORK/wrong")" = "$(jq -c 'del(.error.request_id)' "$STACK_WORK/unknown")" ] \
  || fail "wrong and unknown differ: $(cat "$STACK_WORK/wrong") vs $(cat "$STACK_WORK/unknown")"
# Both ran argon2 (tens of ms); an unknown email must not answer in a fraction of that.
awk -v a="${t_wrong% *}" -v b="${t_unknown% *}" 'BEGIN { exit !(b > a / 3 && b > 0.02) }' \
  || fail "unknown email answered too fast: wrong ${t_wrong% *} s, unknown ${t_unknown% *} s"
[ "$(post /internal/v1/credentials/verify '{"email":"alice@example.com"}')" = 422 ] || fail "verify missing password"
[ "$(code "$U/internal/v1/users/$BOB")" = 200 ] || fail "internal user: $(body)"
jq -e --arg id "$BOB" '.id == $id and .status == "active" and .roles == ["user"] and (keys|length) == 3' \
  "$STACK_WORK/body" >/dev/null || fail "internal body: $(body)"
[ "$(code "$U/internal/v1/users/0b9a4f6e-1111-4222-8333-444455556666")" = 404 ] || fail "internal unknown"
[ "$(code "$U/internal/v1/users/42")" = 404 ] || fail "internal bad uuid"
ok "internal: verify right 200 / wrong 401 / unknown 401 (same body, similar time: ${t_wrong% *} s vs ${t_unknown% *} s); users/{id} 200/404"

# ---- Redis unreachable: reads still work, the error counter rises -------------------------------
closed=$(stack_port)
stack_start user2 strata-user-svc DATABASE_URL="$db" REDIS_URL="redis://127.0.0.1:$closed" JWKS_URL="$JWKS" \
  HASH_THREADS=1 HASH_QUEUE=1 WORKERS=2
[ "$(auth "$T_ALICE" "$USER2_URL/v1/users/me")" = 200 ] || fail "read without Redis: $(body)"
[ "$(auth "$T_ALICE" "$USER2_URL/v1/users/me")" = 200 ] || fail "read without Redis (2)"
errors=$(curl -s "$USER2_URL/metrics" | sed -n 's/^strata_user_cache_total{result="error"} //p')
[ "${errors:-0}" -ge 2 ] || fail "cache error counter: ${errors:-none}"
ok "Redis unreachable (2 workers): reads from PostgreSQL, strata_user_cache_total{result=\"error\"} = $errors"

# ---- argon2 off the loop: a bounded queue (503 when full), clients that leave early ------------
before=$(count)
for i in 1 2 3 4 5 6; do
  curl -s -o "$STACK_WORK/burst$i" -w '%{http_code}' -X POST "$USER2_URL/v1/users" -H 'Content-Type: application/json' \
    -d "{\"email\":\"burst$i@example.com\",\"password\":\"burst password $i\",\"name\":\"B\"}" >"$STACK_WORK/burst$i.code" &
done
for _ in $(seq 200); do [ "$(cat "$STACK_WORK"/burst?.code 2>/dev/null | wc -c)" -ge 18 ] && break; sleep 0.05; done
codes=$(for f in "$STACK_WORK"/burst?.code; do cat "$f"; echo; done)
n201=$(echo "$codes" | grep -c 201 || true); n503=$(echo "$codes" | grep -c 503 || true)
[ "$n503" -ge 1 ] && [ $((n201 + n503)) = 6 ] || fail "6 concurrent registrations on 1 thread + queue 1: $(echo $codes)"
grep -l 503 "$STACK_WORK"/burst?.code | head -1 | sed 's/\.code$//' | xargs jq -e '.error.code == "overloaded"' >/dev/null \
  || fail "503 body"
[ "$(count)" = $((before + n201)) ] || fail "rows: $(count), expected $((before + n201))"
curl -s -m 0.02 -o /dev/null -X POST "$USER2_URL/v1/users" -H 'Content-Type: application/json' \
  -d '{"email":"gone@example.com","password":"client left early","name":"G"}' || true
curl -s -m 0.02 -o /dev/null -X POST "$USER2_URL/internal/v1/credentials/verify" -H 'Content-Type: application/json' \
  -d '{"email":"alice@example.com","password":"client left early"}' || true
sleep 0.3
[ "$(curl -s -o /dev/null -w '%{http_code}' "$USER2_URL/healthz")" = 200 ] || fail "service died after clients left early"
[ "$(auth "$T_ALICE" "$USER2_URL/v1/users/me")" = 200 ] || fail "service unusable after clients left early"
ok "argon2 queue bounded: 6 concurrent registrations → $n201 × 201, $n503 × 503 overloaded; clients leaving mid-hash are harmless"
stack_stop user2
[ "$STACK_STATUS" = 0 ] || fail "user2 exit status after SIGTERM: $STACK_STATUS"

# ---- order events --------------------------------------------------------------------------------
nhost=${STRATA_TEST_NATS_URL#nats://}; nport=${nhost##*:}
publish() { # SUBJECT PAYLOAD... — core NATS publishes, confirmed by PING/PONG
  local subj=$1; shift
  exec 3<>"/dev/tcp/127.0.0.1/$nport"
  local line; IFS= read -r -t 5 line <&3 || fail "no INFO from NATS"
  printf 'CONNECT {"verbose":false,"pedantic":false,"protocol":1}\r\n' >&3
  for p in "$@"; do printf 'PUB %s %d\r\n%s\r\n' "$subj" "${#p}" "$p" >&3; done
  printf 'PING\r\n' >&3
  while IFS= read -r -t 5 line <&3; do [[ $line == PONG* ]] && break; done
  exec 3<&- 3>&-
}
now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
e1="{\"event_id\":\"evt-$$-1\",\"type\":\"order.created\",\"order_id\":\"o-1\",\"user_id\":\"$BOB\",\"occurred_at\":\"$now\",\"total_cents\":100}"
e2="{\"event_id\":\"evt-$$-2\",\"type\":\"order.cancelled\",\"order_id\":\"o-1\",\"user_id\":\"$BOB\",\"occurred_at\":\"$now\"}"
publish orders.created "$e1" "$e1"
publish orders.created 'this is not json' '{"event_id":"x","type":"order.created"}'
e3="{\"event_id\":\"bad-time-$$\",\"type\":\"order.created\",\"order_id\":\"o-2\",\"user_id\":\"$BOB\",\"occurred_at\":\"yesterday-ish\"}"
publish orders.created "$e3"
publish orders.cancelled "$e2"
for _ in $(seq 200); do
  [ "$(psql -tAq "$db" -c "SELECT count(*) FROM processed_events WHERE event_id LIKE 'evt-$$-%'")" = 2 ] && break
  sleep 0.05
done
[ "$(psql -tAq "$db" -c "SELECT count(*) FROM processed_events WHERE event_id LIKE 'evt-$$-%'")" = 2 ] \
  || fail "events not processed: $(psql -tAq "$db" -c 'SELECT * FROM processed_events')"
sleep 0.3 # the duplicate is behind the first in the stream; give it time to (not) count twice
[ "$(psql -tAq "$db" -c "SELECT order_count FROM users WHERE id='$BOB'")" = 1 ] \
  || fail "order_count: $(psql -tAq "$db" -c "SELECT order_count FROM users WHERE id='$BOB'")"
psql -tAq "$db" -c "SELECT last_order_at IS NOT NULL FROM users WHERE id='$BOB'" | grep -qx t || fail "last_order_at"
m=$(curl -s "$U/metrics")
dup=$(echo "$m" | sed -n 's/^strata_user_order_events_total{result="duplicate"} //p')
poison=$(echo "$m" | sed -n 's/^strata_user_order_events_total{result="poison"} //p')
[ "${dup:-0}" -ge 1 ] || fail "duplicate counter: ${dup:-none}"
[ "${poison:-0}" -ge 3 ] || fail "poison counter: ${poison:-none}"
[ "$(psql -tAq "$db" -c "SELECT count(*) FROM processed_events WHERE event_id = 'bad-time-$$'")" = 0 ] \
  || fail "a poison event's transaction was not rolled back"
ok "order events: same event id twice → order_count 1; cancellation recorded; 3 poison messages (not JSON, missing fields, bad time → rolled back) acked"

# ---- metrics lint, JSON logs ----------------------------------------------------------------------
if command -v promtool >/dev/null; then
  curl -s "$U/metrics" | promtool check metrics >"$STACK_WORK/promtool.out" 2>&1 || fail "promtool: $(cat "$STACK_WORK/promtool.out")"
fi
stack_logs user | jq -e -s 'length > 0 and all(.[]; has("ts") and has("level") and has("msg"))' >/dev/null || fail "logs"
! grep -q 'correct horse battery' "$STACK_WORK/user.log" || fail "a password reached the logs"
ok "metrics lint-clean, JSON logs, no password in logs"

stack_stop user
[ "$STACK_STATUS" = 0 ] || fail "exit status after SIGTERM: $STACK_STATUS"
ok "graceful shutdown"
echo "$pass checks passed"
