# tests/integration/lib/stack.sh — start strata's services for an integration
# test, on free loopback ports, against the servers of scripts/with-servers.
# Source it from a test (bash, set -euo pipefail):
#
#   source "$STRATA_SOURCE_DIR/tests/integration/lib/stack.sh"
#   stack_init                          # work dir, cleanup trap, checks the harness env
#   db=$(stack_db users)                # a fresh database on the harness PostgreSQL → its URL
#   stack_keys "$STACK_WORK/keys"       # an ES256 signing key (PEM) for auth-svc
#   stack_start user strata-user-svc DATABASE_URL="$db" ...   # → $USER_URL, $USER_PID, log $STACK_WORK/user.log
#   stack_stop user [SIGNAL]            # SIGTERM by default; waits for the exit (deadline 15 s)
#
# Every process started here is stopped, by PID, when the test exits.
# Waits are polls with deadlines, never fixed sleeps.

STACK_PIDS=()

stack_fail() {
  echo "FAIL: $*" >&2
  for f in "$STACK_WORK"/*.log; do [ -f "$f" ] && { echo "--- $f (last 15 lines)" >&2; tail -15 "$f" >&2; }; done
  exit 1
}

stack_cleanup() {
  local p
  for p in "${STACK_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${STACK_PIDS[@]}"; do
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  [ -n "${STACK_KEEP:-}" ] || rm -rf "$STACK_WORK"
}

stack_init() {
  : "${STRATA_BUILD_DIR:?run through ctest (make test)}"
  : "${STRATA_TEST_DATABASE_URL:?run under scripts/with-servers (make test)}"
  STACK_WORK=$(mktemp -d /tmp/strata-stack.XXXXXX)
  trap stack_cleanup EXIT
}

# stack_db NAME → prints the URL of a new, empty database (unique per test run).
stack_db() {
  local name="t_$1_$$_$RANDOM"
  psql -q -v ON_ERROR_STOP=1 "$STRATA_TEST_DATABASE_URL" -c "CREATE DATABASE $name" >/dev/null \
    || stack_fail "cannot create database $name"
  echo "${STRATA_TEST_DATABASE_URL%/*}/$name?sslmode=disable"
}

# stack_keys DIR [NAME] → writes DIR/NAME.pem (ES256 private key, mode 0600).
stack_keys() {
  mkdir -p "$1"
  local f="$1/${2:-key-$(date +%s%N)}.pem"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$f" 2>/dev/null || stack_fail "openssl genpkey"
  chmod 600 "$f"
  echo "$f"
}

stack_port() { "$STRATA_BUILD_DIR/strata-test-freeport"; }

# stack_start NAME BINARY [VAR=VALUE ...] → NAME_URL, NAME_PID (NAME upper-cased).
# Ready when GET /readyz answers 200 (deadline STACK_START_TIMEOUT, 20 s).
stack_start() {
  local name=$1 bin=$2; shift 2
  local upper port pid deadline
  upper=$(echo "$name" | tr '[:lower:]-' '[:upper:]_')
  port=${STACK_PORT:-$(stack_port)}   # STACK_PORT: a port chosen earlier (a peer already points at it)
  : >"$STACK_WORK/$name.log"
  env LISTEN_ADDR="127.0.0.1:$port" "$@" "$STRATA_BUILD_DIR/$bin" >>"$STACK_WORK/$name.log" 2>&1 &
  pid=$!
  STACK_PIDS+=("$pid")
  deadline=$(( $(date +%s) + ${STACK_START_TIMEOUT:-20} ))
  until [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")" = 200 ]; do
    kill -0 "$pid" 2>/dev/null || stack_fail "$name exited during start"
    [ "$(date +%s)" -lt "$deadline" ] || stack_fail "$name not ready within ${STACK_START_TIMEOUT:-20} s"
    sleep 0.05
  done
  printf -v "${upper}_URL" '%s' "http://127.0.0.1:$port"
  printf -v "${upper}_PID" '%s' "$pid"
  printf -v "${upper}_PORT" '%s' "$port"
}

# stack_stop NAME [SIGNAL] → waits for the process to exit; sets STACK_STATUS.
stack_stop() {
  local upper pid
  upper=$(echo "$1" | tr '[:lower:]-' '[:upper:]_')
  eval "pid=\${${upper}_PID}"
  kill "-${2:-TERM}" "$pid" 2>/dev/null || true
  for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  STACK_STATUS=0
  wait "$pid" 2>/dev/null || STACK_STATUS=$?
}

# stack_logs NAME → the service's JSON log lines (non-JSON lines dropped).
stack_logs() { grep '^{' "$STACK_WORK/$1.log" || true; }

# stack_proxy NAME CONFIG ADMIN_PORT [ARGS...] → starts strata-proxy with
# CONFIG (whose "admin" listens on ADMIN_PORT); ready when the admin /readyz
# answers 200. Sets NAME_PID, NAME_ADMIN (URL); log $STACK_WORK/NAME.log.
stack_proxy() {
  local name=$1 cfg=$2 admin=$3; shift 3
  local upper pid deadline
  upper=$(echo "$name" | tr '[:lower:]-' '[:upper:]_')
  : >"$STACK_WORK/$name.log"
  "$STRATA_BUILD_DIR/strata-proxy" --config "$cfg" "$@" >>"$STACK_WORK/$name.log" 2>&1 &
  pid=$!
  STACK_PIDS+=("$pid")
  deadline=$(( $(date +%s) + ${STACK_START_TIMEOUT:-20} ))
  until [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$admin/readyz")" = 200 ]; do
    kill -0 "$pid" 2>/dev/null || stack_fail "$name exited during start"
    [ "$(date +%s)" -lt "$deadline" ] || stack_fail "$name not ready within ${STACK_START_TIMEOUT:-20} s"
    sleep 0.05
  done
  printf -v "${upper}_PID" '%s' "$pid"
  printf -v "${upper}_ADMIN" '%s' "http://127.0.0.1:$admin"
}

# stack_wait SECONDS CMD... → polls CMD every 50 ms until it succeeds; 1 on timeout.
stack_wait() {
  local deadline=$(( $(date +%s%N) / 1000000 + ${1%.*} * 1000 )); shift
  until "$@"; do
    [ $(( $(date +%s%N) / 1000000 )) -lt "$deadline" ] || return 1
    sleep 0.05
  done
}
