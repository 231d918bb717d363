#!/usr/bin/env bash
# order-svc end to end on the harness' real PostgreSQL, Redis and NATS
# JetStream, with the real auth-svc (tokens, JWKS) and user-svc (user check,
# order-event consumer), and real clients (curl, psql, jq):
# creation and every validation error (database checked unchanged),
# idempotent replay and key reuse, 20 concurrent identical requests → one
# order, get/list/cancel with owner/admin rules and the state machine,
# inactive users, user-svc down, the outbox relay (events reach user-svc
# exactly once), and kill -9 of order-svc between commit and publish.
#
# test_order_outage.sh sources this file with ORDER_LIB_ONLY=1 for the
# helpers below (it stops NATS, so it runs on its own: RUN_SERIAL).
set -euo pipefail
source "$STRATA_SOURCE_DIR/tests/integration/lib/stack.sh"

pass=0
ok() { pass=$((pass + 1)); echo "ok   $*"; }
fail() { stack_fail "$@"; }
code() { curl -s --max-time 10 -o "$STACK_WORK/body" -w '%{http_code}' "$@"; }
body() { cat "$STACK_WORK/body"; }
errcode() { jq -r '.error.code' "$STACK_WORK/body"; }
is_error_body() { jq -e '.error.code and .error.message and .error.request_id' "$STACK_WORK/body" >/dev/null; }
osql() { psql -tAq -v ON_ERROR_STOP=1 "$ODB" -c "$1"; }
usql() { psql -tAq -v ON_ERROR_STOP=1 "$UDB" -c "$1"; }
ocount() { osql "SELECT count(*) FROM orders"; }
create() { # TOKEN KEY BODY → status; body in $STACK_WORK/body
  code -X POST "$O/v1/orders" -H "Authorization: Bearer $1" -H 'Content-Type: application/json' \
    -H "Idempotency-Key: $2" --data-binary "$3"
}
item() { printf '{"sku":"%s","quantity":%s,"unit_price_cents":%s}' "$@"; }
ADDR='{"line1":"1 Main St","city":"Paris","postal_code":"75001","country":"FR"}'
order() { printf '{"items":[%s],"currency":"%s","shipping_address":%s}' "$1" "${2:-EUR}" "${3:-$ADDR}"; }

# Tokens come from auth-svc's login. If login is not usable (auth-svc still
# in progress), they are minted here with openssl (ES256: DER signature →
# raw r||s) with auth-svc's own signing key and kid, so that the JWKS
# order-svc and user-svc fetch is still auth-svc's real one; the test says so.
b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }
mint() { # SUB ROLES_JSON [AUD] [EXP_OFFSET_S]
  local now h p ints r s aud=${3:-strata} off=${4:-900}
  now=$(date +%s)
  h=$(printf '{"alg":"ES256","typ":"JWT","kid":"%s"}' "$SIGNING_KID" | b64url)
  p=$(printf '{"iss":"https://auth.strata.local","sub":"%s","aud":"%s","iat":%d,"nbf":%d,"exp":%d,"roles":%s}' \
      "$1" "$aud" "$now" "$now" $((now + off)) "$2" | b64url)
  printf '%s' "$h.$p" | openssl dgst -sha256 -sign "$SIGNING_KEY" -binary >"$STACK_WORK/sig.der"
  ints=$(openssl asn1parse -inform DER -in "$STACK_WORK/sig.der" | sed -n 's/.*INTEGER *://p')
  r=$(echo "$ints" | sed -n 1p); s=$(echo "$ints" | sed -n 2p)
  r=$(printf '%064s' "${r: -64}" | tr ' ' 0); s=$(printf '%064s' "${s: -64}" | tr ' ' 0)
  echo "$h.$p.$(echo -n "$r$s" | xxd -r -p | b64url)"
}

# user NAME → NAME_ID, NAME_TOKEN (registered through user-svc, logged in through auth-svc)
user() {
  local upper email id tok
  upper=$(echo "$1" | tr '[:lower:]' '[:upper:]')
  email="$1-$$-$RANDOM@example.com"
  id=$(curl -s -X POST "$USER_URL/v1/users" -H 'Content-Type: application/json' \
       --data-binary "{\"email\":\"$email\",\"password\":\"correct horse battery\",\"name\":\"$1\"}" | jq -r '.id // empty')
  [ -n "$id" ] || fail "register $1"
  [ -z "${2:-}" ] || usql "UPDATE users SET roles = '{user,$2}' WHERE id = '$id'" >/dev/null
  tok=$(curl -s -X POST "$AUTH_URL/v1/auth/login" -H 'Content-Type: application/json' \
        --data-binary "{\"email\":\"$email\",\"password\":\"correct horse battery\"}" | jq -r '.access_token // empty')
  if [ -z "$tok" ]; then
    [ -n "${MINTED:-}" ] || echo "note: auth-svc login failed ($(tail -1 "$STACK_WORK/auth.log" | cut -c1-200)); minting tokens with its key"
    MINTED=1
    tok=$(mint "$id" "$( [ -n "${2:-}" ] && echo "[\"user\",\"$2\"]" || echo '["user"]')")
  fi
  printf -v "${upper}_ID" '%s' "$id"
  printf -v "${upper}_TOKEN" '%s' "$tok"
}

# Databases, auth-svc, user-svc (consumer of the events), order-svc, users.
order_stack_start() {
  UDB=$(stack_db users)
  ODB=$(stack_db orders)
  SIGNING_KEY=$(stack_keys "$STACK_WORK/keys" signer)
  local uport
  uport=$(stack_port)
  stack_start auth strata-auth-svc REDIS_URL="$STRATA_TEST_REDIS_URL" USER_SERVICE_URL="http://127.0.0.1:$uport" \
    JWT_KEYS_DIR="$STACK_WORK/keys"
  JWKS=$AUTH_URL/.well-known/jwks.json
  SIGNING_KID=$(curl -s "$JWKS" | jq -r '.keys[0].kid')
  # user-svc on the port auth-svc was told (it needs auth-svc's JWKS to be ready).
  STACK_PORT=$uport stack_start user strata-user-svc DATABASE_URL="$UDB" NATS_URL="$STRATA_TEST_NATS_URL" JWKS_URL="$JWKS" \
    HASH_THREADS=1
  stack_start order strata-order-svc DATABASE_URL="$ODB" NATS_URL="$STRATA_TEST_NATS_URL" USER_SERVICE_URL="$USER_URL" \
    JWKS_URL="$JWKS" WORKERS=2
  O=$ORDER_URL
  user alice; user bob; user admin admin; user dave
}

wait_sent() { # every outbox row acknowledged by JetStream (20 s)
  for _ in $(seq 200); do
    [ "$(osql "SELECT count(*) FROM outbox WHERE sent_at IS NULL")" = 0 ] && return 0
    sleep 0.1
  done
  return 1
}
user_order_count() { usql "SELECT order_count FROM users WHERE id = '$1'"; }
wait_order_count() { # ID N (20 s)
  for _ in $(seq 200); do [ "$(user_order_count "$1")" = "$2" ] && return 0; sleep 0.1; done
  return 1
}
# Messages stored in the stream ORDERS (NATS monitoring endpoint).
stream_msgs() {
  curl -s "$STRATA_TEST_NATS_MONITOR_URL/jsz?streams=true" \
    | jq '[.account_details[]?.stream_detail[]? | select(.name == "ORDERS") | .state.messages] | add // 0'
}

if [ -n "${ORDER_LIB_ONLY:-}" ]; then return 0; fi

stack_init
order_stack_start

# ---- create --------------------------------------------------------------------------------
BODY='{"items":[{"sku":"SKU-1","quantity":2,"unit_price_cents":1999},{"sku":"b_2","quantity":1,"unit_price_cents":500}],
"currency":"EUR","shipping_address":{"name":"Alice","line1":"1 Main St","city":"Paris","postal_code":"75001","country":"FR"}}'
[ "$(create "$ALICE_TOKEN" key-1 "$BODY")" = 201 ] || fail "create: $(body)"
jq -e --arg u "$ALICE_ID" '.status == "pending" and .user_id == $u and .total_cents == 4498 and .currency == "EUR"
  and (.items | length == 2) and .items[0].line_total_cents == 3998 and .items[1].line_total_cents == 500
  and .shipping_address.city == "Paris" and .shipping_address.country == "FR"
  and (.id | test("^[0-9a-f-]{36}$")) and (.created_at | test("^\\d{4}-\\d\\d-\\d\\dT.*Z$"))' "$STACK_WORK/body" >/dev/null \
  || fail "create body: $(body)"
FIRST=$(body); ORDER1=$(jq -r .id "$STACK_WORK/body")
[ "$(ocount)" = 1 ] || fail "one row after create"
[ "$(osql "SELECT count(*) FROM outbox WHERE payload->>'order_id' = '$ORDER1' AND subject = 'orders.created'")" = 1 ] \
  || fail "outbox row in the same transaction"
[ "$(osql "SELECT doc->>'total_cents' FROM orders WHERE id = '$ORDER1'")" = 4498 ] || fail "jsonb document stored"
ok "create: 201, totals computed server-side, document and outbox row stored"

# ---- validation: each refused, nothing written ---------------------------------------------------------
bad() { # STATUS CODE BODY [KEY] [CONTENT_TYPE]
  local want=$1 wcode=$2 data=$3 key=${4-k-bad} ct=${5:-application/json} before got
  before=$(ocount)
  local hdr=(-H "Authorization: Bearer $ALICE_TOKEN" -H "Content-Type: $ct")
  [ "$key" = NONE ] || hdr+=(-H "Idempotency-Key: $key")
  [ "$key" = EMPTY ] && hdr=(-H "Authorization: Bearer $ALICE_TOKEN" -H "Content-Type: $ct" -H "Idempotency-Key;")
  got=$(code -X POST "$O/v1/orders" "${hdr[@]}" --data-binary "$data")
  [ "$got" = "$want" ] || fail "expected $want for $data (key $key), got $got: $(body)"
  is_error_body || fail "not a JSON error body: $(body)"
  [ "$wcode" = - ] || [ "$(errcode)" = "$wcode" ] || fail "expected code $wcode for $data, got $(body)"
  [ "$(ocount)" = "$before" ] || fail "rows changed after a rejected request: $data"
}
OK_ITEM=$(item A 1 100)
bad 400 idempotency_key_required "$(order "$OK_ITEM")" NONE
bad 400 invalid_idempotency_key "$(order "$OK_ITEM")" EMPTY
bad 400 invalid_idempotency_key "$(order "$OK_ITEM")" "$(head -c 201 /dev/zero | tr '\0' k)"
bad 415 unsupported_media_type "$(order "$OK_ITEM")" k-bad text/plain
bad 400 invalid_json '{"items":['
bad 400 invalid_json '{"items":[],"items":[]}'
bad 400 invalid_json "$(order "$(item A 1 100000000000000000000000)")"
bad 422 validation_failed '[]'
bad 422 validation_failed "$(order "")"
many=$(for i in $(seq 101); do printf '%s,' "$(item "S$i" 1 1)"; done); many=${many%,}
bad 422 validation_failed "$(order "$many")"
bad 422 validation_failed "$(order "$(item A 0 100)")"
bad 422 validation_failed "$(order "$(item A 1001 100)")"
bad 422 validation_failed "$(order "$(item A 1.5 100)")"
bad 422 validation_failed "$(order "$(item A '"2"' 100)")"
bad 422 validation_failed "$(order "$(item A 1 -1)")"
bad 422 validation_failed "$(order "$(item A 1 1.25)")"
bad 422 validation_failed "$(order "$(item "a b" 1 100)")"
bad 422 validation_failed "$(order "$(item "x'; DROP TABLE orders;--" 1 100)")"
bad 422 validation_failed "$(order "$(item "$(head -c 65 /dev/zero | tr '\0' s)" 1 100)")"
bad 422 validation_failed "$(order '{"sku":"A","quantity":1}')"
bad 422 validation_failed "$(order '{"sku":"A","quantity":1,"unit_price_cents":1,"color":"red"}')"
bad 422 validation_failed "$(order "$OK_ITEM" usd)"
bad 422 validation_failed "$(order "$OK_ITEM" XXX)"
bad 422 validation_failed "$(order "$OK_ITEM" EURO)"
bad 422 validation_failed '{"items":[{"sku":"A","quantity":1,"unit_price_cents":1}],"shipping_address":{}}'
bad 422 validation_failed "$(order "$OK_ITEM" EUR '{"line1":"x","city":"y","postal_code":"1"}')"
bad 422 validation_failed "$(order "$OK_ITEM" EUR '{"line1":"x","city":"y","postal_code":"1","country":"fra"}')"
bad 422 validation_failed "$(order "$OK_ITEM" EUR '{"line1":"x","city":"y","postal_code":"1","country":"fr"}')"
bad 422 validation_failed "$(order "$OK_ITEM" EUR '{"line1":"x","city":"y","postal_code":"1","country":"FR","floor":3}')"
bad 422 validation_failed "$(order "$OK_ITEM" EUR '"Paris"')"
bad 422 validation_failed '{"items":[{"sku":"A","quantity":1,"unit_price_cents":1}],"currency":"EUR","shipping_address":'"$ADDR"',"coupon":"X"}'
bad 422 validation_failed "$(order "$(item A 1000 9223372036854775807)")"
bad 422 validation_failed "$(order "$(item A 1000 9223372036854775),$(item B 1000 9223372036854775)")"
jq -e '.error.message | test("too large")' "$STACK_WORK/body" >/dev/null || fail "overflow message: $(body)"
bad 400 invalid_json "$(printf '{"items":[],"currency":"\xff\xfe","shipping_address":{}}')"
head -c 1100000 /dev/zero | tr '\0' ' ' >"$STACK_WORK/big.json"
got=$(code -X POST "$O/v1/orders" -H "Authorization: Bearer $ALICE_TOKEN" -H 'Content-Type: application/json' \
  -H 'Idempotency-Key: big' --data-binary @"$STACK_WORK/big.json")
[ "$got" = 413 ] || fail "oversized body → 413, got $got"
got=$(code -X POST "$O/v1/orders" -H 'Content-Type: application/json' -H 'Idempotency-Key: k' --data-binary "$BODY")
[ "$got" = 401 ] || fail "no token → 401, got $got"
got=$(code -X POST "$O/v1/orders" -H 'Authorization: Bearer abc.def.ghi' -H 'Content-Type: application/json' \
  -H 'Idempotency-Key: k' --data-binary "$BODY")
[ "$got" = 401 ] || fail "bad token → 401, got $got"
[ "$(create "$(mint "$ALICE_ID" '["user"]' strata -120)" k-exp "$BODY")" = 401 ] || fail "expired token → 401: $(body)"
[ "$(create "$(mint "$ALICE_ID" '["user"]' other-audience)" k-aud "$BODY")" = 401 ] || fail "wrong audience → 401: $(body)"
[ "$(code "$O/v1/orders" -H "Authorization: Bearer $(mint "$ALICE_ID" '["user"]')")" = 200 ] \
  || fail "control: the same token, well-formed, is accepted: $(body)"
[ "$(ocount)" = 1 ] || fail "rows after the rejected requests"
ok "validation: 400/401/415/422 with the field named, nothing written"

# SQL metacharacters are data where text is allowed
SQLI=$(order "$OK_ITEM" EUR '{"line1":"O'"'"'Brien; DROP TABLE orders;--","city":"Dublin","postal_code":"D01","country":"IE"}')
[ "$(create "$ALICE_TOKEN" key-sqli "$SQLI")" = 201 ] || fail "sqli text: $(body)"
[ "$(osql "SELECT doc->'shipping_address'->>'line1' FROM orders WHERE id = '$(jq -r .id "$STACK_WORK/body")'")" \
  = "O'Brien; DROP TABLE orders;--" ] || fail "text stored verbatim"
ok "SQL metacharacters stored as data"

# ---- idempotency --------------------------------------------------------------------------------
SAME=$(echo "$BODY" | jq -c '{shipping_address, currency, items}') # same value: other key order, no spaces
code -X POST "$O/v1/orders" -D "$STACK_WORK/headers" -H "Authorization: Bearer $ALICE_TOKEN" \
  -H 'Content-Type: application/json' -H 'Idempotency-Key: key-1' --data-binary "$SAME" >"$STACK_WORK/code"
[ "$(cat "$STACK_WORK/code")" = 201 ] || fail "replay status: $(cat "$STACK_WORK/code") $(body)"
[ "$(body)" = "$FIRST" ] || fail "replay body differs: $(body) vs $FIRST"
grep -qi '^Idempotent-Replayed: true' "$STACK_WORK/headers" || fail "replay header"
[ "$(ocount)" = 2 ] || fail "replay created a row"
[ "$(create "$ALICE_TOKEN" key-1 "$(order "$(item A 3 100)")")" = 422 ] || fail "key reuse: $(body)"
[ "$(errcode)" = idempotency_key_reused ] || fail "key reuse code: $(body)"
[ "$(create "$BOB_TOKEN" key-1 "$BODY")" = 201 ] || fail "keys are per user: $(body)"
BOB_ORDER=$(jq -r .id "$STACK_WORK/body")
[ "$(ocount)" = 3 ] || fail "rows after idempotency checks"
ok "idempotency: same key+body replays the first 201 byte for byte, other body → 422, keys scoped per user"

CONC=$(order "$(item C 5 250)")
conc=()
for i in $(seq 20); do
  curl -s --max-time 10 -o "$STACK_WORK/conc.$i" -w '%{http_code}' -X POST "$O/v1/orders" -H "Authorization: Bearer $ALICE_TOKEN" \
    -H 'Content-Type: application/json' -H 'Idempotency-Key: conc-1' --data-binary "$CONC" >"$STACK_WORK/conc.$i.code" &
  conc+=("$!")
done
wait "${conc[@]}"
for i in $(seq 20); do
  [ "$(cat "$STACK_WORK/conc.$i.code")" = 201 ] || fail "concurrent $i: $(cat "$STACK_WORK/conc.$i.code") $(cat "$STACK_WORK/conc.$i")"
  cmp -s "$STACK_WORK/conc.1" "$STACK_WORK/conc.$i" || fail "concurrent bodies differ"
done
[ "$(osql "SELECT count(*) FROM orders WHERE idempotency_key = 'conc-1'")" = 1 ] || fail "concurrent: not exactly one order"
CONC_ID=$(jq -r .id "$STACK_WORK/conc.1")
[ "$(osql "SELECT count(*) FROM outbox WHERE payload->>'order_id' = '$CONC_ID'")" = 1 ] || fail "concurrent: one event"
ok "20 concurrent identical POSTs: all 201 with one body, exactly one order and one event"

# ---- get ---------------------------------------------------------------------------------------------
[ "$(code "$O/v1/orders/$ORDER1" -H "Authorization: Bearer $ALICE_TOKEN")" = 200 ] || fail "get own: $(body)"
jq -e --arg id "$ORDER1" '.id == $id and .total_cents == 4498' "$STACK_WORK/body" >/dev/null || fail "get body: $(body)"
[ "$(code "$O/v1/orders/$ORDER1" -H "Authorization: Bearer $BOB_TOKEN")" = 404 ] || fail "other's order must be 404"
[ "$(errcode)" = not_found ] || fail "404 body: $(body)"
[ "$(code "$O/v1/orders/00000000-0000-4000-8000-000000000000" -H "Authorization: Bearer $ALICE_TOKEN")" = 404 ] || fail "unknown id"
[ "$(code "$O/v1/orders/not-a-uuid" -H "Authorization: Bearer $ALICE_TOKEN")" = 404 ] || fail "malformed id"
[ "$(code "$O/v1/orders/$ORDER1" -H "Authorization: Bearer $ADMIN_TOKEN")" = 200 ] || fail "admin get: $(body)"
[ "$(code "$O/v1/orders/$ORDER1")" = 401 ] || fail "get without token"
ok "get: owner and admin 200; anybody else, unknown and malformed ids 404"

# ---- list (keyset pages) -------------------------------------------------------------------------------
for i in 1 2 3; do [ "$(create "$ALICE_TOKEN" "page-$i" "$(order "$(item P "$i" 10)")")" = 201 ] || fail "create page-$i"; done
MINE=$(osql "SELECT count(*) FROM orders WHERE owner_id = '$ALICE_ID'")
seen=(); cursor=""
for _ in $(seq 20); do
  [ "$(code "$O/v1/orders?limit=2${cursor:+&cursor=$cursor}" -H "Authorization: Bearer $ALICE_TOKEN")" = 200 ] || fail "list: $(body)"
  jq -e '(.items | length) <= 2' "$STACK_WORK/body" >/dev/null || fail "page size"
  while read -r id; do seen+=("$id"); done < <(jq -r '.items[].id' "$STACK_WORK/body")
  cursor=$(jq -r '.next_cursor // empty' "$STACK_WORK/body")
  [ -n "$cursor" ] || break
done
[ "${#seen[@]}" = "$MINE" ] || fail "pages gave ${#seen[@]} orders, expected $MINE"
[ "$(printf '%s\n' "${seen[@]}" | sort -u | wc -l)" = "$MINE" ] || fail "duplicates across pages"
printf '%s\n' "${seen[@]}" | grep -qx "$BOB_ORDER" && fail "bob's order in alice's list"
[ "$(code "$O/v1/orders" -H "Authorization: Bearer $BOB_TOKEN")" = 200 ] || fail "bob list"
jq -e --arg id "$BOB_ORDER" '[.items[].id] == [$id] and .next_cursor == null' "$STACK_WORK/body" >/dev/null || fail "bob list: $(body)"
for q in limit=0 limit=101 limit=x status=bogus cursor=@@@ cursor=Zm9v 'foo=1' 'limit=1&limit=2'; do
  [ "$(code "$O/v1/orders?$q" -H "Authorization: Bearer $ALICE_TOKEN")" = 400 ] || fail "list ?$q must be 400: $(body)"
  [ "$(errcode)" = invalid_parameter ] || fail "list ?$q code: $(body)"
done
ok "list: own orders only, newest first in keyset pages without duplicates; bad parameters 400"

# ---- cancel (state machine) -------------------------------------------------------------------------
[ "$(code -X POST "$O/v1/orders/$ORDER1/cancel" -H "Authorization: Bearer $BOB_TOKEN")" = 404 ] || fail "bob cancels alice's"
[ "$(code -X POST "$O/v1/orders/$ORDER1/cancel" -H "Authorization: Bearer $ALICE_TOKEN")" = 200 ] || fail "cancel: $(body)"
jq -e '.status == "cancelled" and (.updated_at | test("Z$"))' "$STACK_WORK/body" >/dev/null || fail "cancel body: $(body)"
[ "$(osql "SELECT status FROM orders WHERE id = '$ORDER1'")" = cancelled ] || fail "status column"
[ "$(osql "SELECT count(*) FROM outbox WHERE subject = 'orders.cancelled' AND payload->>'order_id' = '$ORDER1'")" = 1 ] \
  || fail "order.cancelled in the outbox"
[ "$(code -X POST "$O/v1/orders/$ORDER1/cancel" -H "Authorization: Bearer $ALICE_TOKEN")" = 409 ] || fail "cancel twice"
[ "$(errcode)" = invalid_state ] || fail "409 code: $(body)"
SHIP=$(osql "SELECT id FROM orders WHERE idempotency_key = 'page-1'")
osql "UPDATE orders SET status = 'shipped', doc = jsonb_set(doc, '{status}', '\"shipped\"') WHERE id = '$SHIP'" >/dev/null
[ "$(code -X POST "$O/v1/orders/$SHIP/cancel" -H "Authorization: Bearer $ALICE_TOKEN")" = 409 ] || fail "cancel shipped"
jq -e '.error.message | test("shipped")' "$STACK_WORK/body" >/dev/null || fail "409 names the state: $(body)"
CONF=$(osql "SELECT id FROM orders WHERE idempotency_key = 'page-2'")
osql "UPDATE orders SET status = 'confirmed' WHERE id = '$CONF'" >/dev/null
[ "$(code -X POST "$O/v1/orders/$CONF/cancel" -H "Authorization: Bearer $ADMIN_TOKEN")" = 200 ] || fail "admin cancels confirmed"
[ "$(code "$O/v1/orders?status=cancelled" -H "Authorization: Bearer $ALICE_TOKEN")" = 200 ] || fail "list cancelled"
jq -e '(.items | length) == 2 and all(.items[]; .status == "cancelled")' "$STACK_WORK/body" >/dev/null || fail "status filter: $(body)"
[ "$(osql "SELECT count(*) FROM outbox WHERE subject = 'orders.cancelled'")" = 2 ] || fail "two cancel events"
ok "cancel: pending/confirmed → cancelled with an event; twice or shipped → 409; others 404"

# ---- the user must exist and be active ---------------------------------------------------------------
usql "UPDATE users SET status = 'disabled' WHERE id = '$DAVE_ID'" >/dev/null
before=$(ocount)
[ "$(create "$DAVE_TOKEN" dave-1 "$BODY")" = 403 ] || fail "disabled user: $(body)"
[ "$(errcode)" = user_not_active ] || fail "disabled code: $(body)"
[ "$(ocount)" = "$before" ] || fail "disabled user wrote a row"
user eve
usql "DELETE FROM users WHERE id = '$EVE_ID'" >/dev/null
[ "$(create "$EVE_TOKEN" eve-1 "$BODY")" = 403 ] || fail "deleted user: $(body)"
[ "$(errcode)" = user_not_active ] || fail "deleted user code: $(body)"
[ "$(ocount)" = "$before" ] || fail "deleted user wrote a row"
ok "inactive or unknown user (valid token) → 403 user_not_active, nothing written"

# ---- events: the relay publishes every outbox row; user-svc counts each order once -------------------------
wait_sent || fail "outbox not drained: $(osql "SELECT count(*) FROM outbox WHERE sent_at IS NULL") unsent"
ALICE_CREATED=$(osql "SELECT count(*) FROM orders WHERE owner_id = '$ALICE_ID'")
wait_order_count "$ALICE_ID" "$ALICE_CREATED" || fail "user-svc order_count $(user_order_count "$ALICE_ID") != $ALICE_CREATED"
[ "$(user_order_count "$BOB_ID")" = 1 ] || fail "bob order_count"
EVENTS=$(osql "SELECT count(*) FROM outbox")
[ "$(usql "SELECT count(*) FROM processed_events WHERE event_id IN ($(osql "SELECT string_agg(quote_literal(event_id::text), ',') FROM outbox"))")" = "$EVENTS" ] \
  || fail "user-svc did not process every event"
ok "events: every outbox row published and marked sent; user-svc counted each order exactly once"

# ---- kill -9 between commit and publish ---------------------------------------------------------------
stack_stop order
dead=$(stack_port)
stack_start order strata-order-svc DATABASE_URL="$ODB" NATS_URL="nats://127.0.0.1:$dead" USER_SERVICE_URL="$USER_URL" \
  JWKS_URL="$JWKS" WORKERS=2
O=$ORDER_URL
stream0=$(stream_msgs)
for i in 1 2 3; do [ "$(create "$ALICE_TOKEN" "kill-$i" "$(order "$(item K "$i" 10)")")" = 201 ] || fail "create kill-$i: $(body)"; done
sleep 0.5
[ "$(osql "SELECT count(*) FROM outbox WHERE sent_at IS NULL")" = 3 ] || fail "events should wait in the outbox"
stack_stop order KILL
stack_start order strata-order-svc DATABASE_URL="$ODB" NATS_URL="$STRATA_TEST_NATS_URL" USER_SERVICE_URL="$USER_URL" \
  JWKS_URL="$JWKS" WORKERS=2
wait_sent || fail "unsent after restart"
wait_order_count "$ALICE_ID" $((ALICE_CREATED + 3)) || fail "order_count after restart: $(user_order_count "$ALICE_ID")"
[ "$(stream_msgs)" = $((stream0 + 3)) ] || fail "stream has $(stream_msgs) messages, expected $((stream0 + 3))"
sleep 1
[ "$(user_order_count "$ALICE_ID")" = $((ALICE_CREATED + 3)) ] || fail "counted twice"
ok "kill -9 before publish: after restart every event arrives exactly once"

# ---- user-svc not answering → 504 (a listener that accepts and never replies: perl, in Debian's base) -----
bh=$(stack_port)
perl -MIO::Socket::INET -e '$s = IO::Socket::INET->new(LocalAddr => "127.0.0.1:$ARGV[0]", Listen => 64, ReuseAddr => 1)
  or die "listen: $!"; my @held; while (my $c = $s->accept) { push @held, $c }' "$bh" &
STACK_PIDS+=("$!")
stack_start slowuser strata-order-svc DATABASE_URL="$ODB" NATS_URL="$STRATA_TEST_NATS_URL" \
  USER_SERVICE_URL="http://127.0.0.1:$bh" JWKS_URL="$JWKS"
before=$(ocount)
O=$SLOWUSER_URL
t0=$(date +%s%N)
[ "$(create "$ALICE_TOKEN" slow-1 "$BODY")" = 504 ] || fail "user-svc silent: $(body)"
[ "$(errcode)" = upstream_timeout ] || fail "504 code: $(body)"
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ "$ms" -ge 1900 ] && [ "$ms" -lt 5000 ] || fail "504 after $ms ms, expected ~2000"
[ "$(ocount)" = "$before" ] || fail "row written on a user-svc timeout"
for i in 1 2 3; do # clients that give up while the user-svc call is in flight
  curl -s --max-time 0.3 -o /dev/null -X POST "$O/v1/orders" -H "Authorization: Bearer $ALICE_TOKEN" \
    -H 'Content-Type: application/json' -H "Idempotency-Key: gone-$i" --data-binary "$BODY" || true
done
[ "$(code "$O/v1/orders/$ORDER1" -H "Authorization: Bearer $ALICE_TOKEN")" = 200 ] || fail "after clients went away: $(body)"
[ "$(ocount)" = "$before" ] || fail "row written for a client that went away during the user check"
stack_stop slowuser
[ "$STACK_STATUS" = 0 ] || fail "order-svc exit status $STACK_STATUS after SIGTERM"
ok "user-svc silent → 504 after its 2 s deadline; clients leaving mid-call are cleaned up; nothing written"

# ---- user-svc down → 503 ----------------------------------------------------------------------------------
O=$ORDER_URL
stack_stop user
before=$(ocount)
[ "$(create "$ALICE_TOKEN" down-1 "$BODY")" = 503 ] || fail "user-svc down: $(body)"
[ "$(errcode)" = upstream_unavailable ] || fail "503 code: $(body)"
[ "$(ocount)" = "$before" ] || fail "row written while user-svc was down"
ok "user-svc down → 503, nothing written"

curl -s "$O/metrics" >"$STACK_WORK/metrics"
grep -q '^strata_orders_created_total 0$' "$STACK_WORK/metrics" || fail "created counter: $(grep orders_ "$STACK_WORK/metrics")"
grep -q '^strata_outbox_published_total 3$' "$STACK_WORK/metrics" \
  || fail "the restarted relay published the 3 waiting events: $(grep outbox "$STACK_WORK/metrics")"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$O/readyz")" = 200 ] || fail "readyz"
ok "metrics and readiness"
echo "$pass checks passed"
