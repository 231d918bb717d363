# shellcheck shell=bash
# servers.sh — throwaway PostgreSQL 15, Redis 7 and NATS JetStream for tests.
#
# A bash library: source it, then
#   harness_init FREEPORT_BIN          per-run temp dir, exports STRATA_TEST_RUN_DIR
#   harness_start_servers NAME...      postgres redis nats, started in parallel
#   harness_start_postgres | harness_start_redis | harness_start_nats
#   harness_stop_all                   stops everything under the run dir, removes it
# and, to simulate outages (these work from the exported environment alone,
# so a test process that sources this file can call them):
#   harness_stop_postgres / harness_start_postgres_again   (same port and data)
#   harness_stop_redis    / harness_start_redis_again      (same port)
#   harness_stop_nats     / harness_start_nats_again       (same ports and store)
#
# Each server listens on 127.0.0.1 only, on ports from strata-test-freeport,
# in its own directory under the run dir, in its own session (setsid: a
# Ctrl-C meant for the test command does not reach it; teardown is ours).
# Readiness is polled every 50 ms up to STRATA_TEST_START_TIMEOUT seconds
# (default 20); a port taken between choosing and binding it is retried on a
# new port, 3 tries in all. The pid files in each directory are the truth
# about what runs, so whatever a test restarts is still stopped at the end.
# Functions return non-zero on failure after printing the server's log tail;
# they never exit the caller's shell, even one running with set -eu.
#
# Exports: STRATA_TEST_RUN_DIR;
#   STRATA_TEST_DATABASE_URL, STRATA_TEST_PG_DIR, STRATA_TEST_PG_PORT;
#   STRATA_TEST_REDIS_URL, STRATA_TEST_REDIS_PORT, STRATA_TEST_REDIS_DIR;
#   STRATA_TEST_NATS_URL, STRATA_TEST_NATS_MONITOR_URL, STRATA_TEST_NATS_DIR.

HARNESS_POLL_S=0.05
HARNESS_TRIES=3
declare -ga HARNESS_PIDS=()          # "name:pid" for every server process launched here
declare -gA _H_PID=() _H_T0=() _H_DEADLINE=() _H_TRY=()
_H_NOW=0

_harness_say() { printf 'harness: %s\n' "$*" >&2; }

# Monotonic enough for deadlines, without a fork: EPOCHREALTIME in ms
# (its decimal separator follows the locale, so keep digits only).
_harness_now() { local t=${EPOCHREALTIME//[!0-9]/}; _H_NOW=$((10#$t / 1000)); }

_harness_timeout_ms() { echo $(( ${STRATA_TEST_START_TIMEOUT:-20} * 1000 )); }

# True while pid runs (a zombie counts as gone).
_harness_alive() {
    local pid=$1 stat
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    { read -r stat < "/proc/$pid/stat"; } 2>/dev/null || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
}

# True when pid runs and is the program named (guards against a reused pid).
_harness_is() {
    local pid=$1 comm
    _harness_alive "$pid" || return 1
    { read -r comm < "/proc/$pid/comm"; } 2>/dev/null || return 1
    [[ $comm == "$2"* ]]
}

_harness_tail() {
    local f
    for f in "$@"; do
        [[ -s $f ]] || continue
        printf -- '--- last lines of %s ---\n' "$f" >&2
        tail -n 25 "$f" >&2
    done
}

# Keeps a previous attempt's log beside the new one instead of mixing them.
_harness_rotate() { [[ -e $1 ]] && mv -f "$1" "$1.${EPOCHREALTIME//[!0-9]/}"; return 0; }

# Runs "$@" in the background like a script would: without job control, so
# the child is no process group leader and `setsid` inside it need not fork
# (the pid in $! stays the server's), even when this file is sourced into an
# interactive shell.
_harness_bg() {
    local had_m=0
    [[ $- == *m* ]] && had_m=1 && set +m
    "$@" &
    _H_BG=$!
    ((had_m)) && set -m
    return 0
}

_harness_ports() {
    local n=$1 out
    if [[ -z ${HARNESS_FREEPORT:-} || ! -x $HARNESS_FREEPORT ]]; then
        _harness_say "strata-test-freeport not found (${HARNESS_FREEPORT:-unset}); build the tree first"
        return 1
    fi
    out=$("$HARNESS_FREEPORT" "$n") || return 1
    echo $out
}

# Waits until pid is gone, up to ms milliseconds.
_harness_wait_gone() {
    local pid=$1 ms=$2 end
    _harness_now; end=$((_H_NOW + ms))
    while _harness_alive "$pid"; do
        _harness_now
        (( _H_NOW >= end )) && return 1
        sleep "$HARNESS_POLL_S"
    done
}

# SIGTERM, wait up to 10 s, then SIGKILL to its process group (each server
# leads its own session), and verify it is gone.
_harness_terminate() {
    local name=$1 pid=$2
    _harness_alive "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null
    _harness_wait_gone "$pid" 10000 && return 0
    _harness_say "$name (pid $pid) ignored SIGTERM for 10 s; sending SIGKILL"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
    _harness_wait_gone "$pid" 3000 && return 0
    _harness_say "$name (pid $pid) is still running"
    return 1
}

# Fails, saying so, when the environment lacks the variable named.
_harness_need() {
    [[ -n ${!1:-} ]] && return 0
    _harness_say "$1 is not set: run under scripts/with-servers"
    return 1
}

_harness_pidfile_pid() { local p=; { read -r p < "$1"; } 2>/dev/null; echo "$p"; }

# ---------------------------------------------------------------- setup

# harness_init FREEPORT_BIN: creates the run dir (traversable by the postgres
# user, which cannot write to it) and exports STRATA_TEST_RUN_DIR.
harness_init() {
    local -
    set +eu # callable from scripts running with set -eu
    HARNESS_FREEPORT=${1:-${HARNESS_FREEPORT:-}}
    local base=${STRATA_TEST_TMPDIR:-${TMPDIR:-/tmp}}
    STRATA_TEST_RUN_DIR=$(mktemp -d "$base/strata-test.XXXXXX") || return 1
    chmod 711 "$STRATA_TEST_RUN_DIR"
    export STRATA_TEST_RUN_DIR
    HARNESS_PIDS=()
    _H_STOPPED=
}

# ---------------------------------------------------------------- PostgreSQL

_harness_pg_bindir() {
    local d
    if [[ -n ${STRATA_PG_BINDIR:-} ]]; then echo "$STRATA_PG_BINDIR"; return; fi
    for d in /usr/lib/postgresql/15/bin /usr/lib/postgresql/*/bin; do
        [[ -x $d/initdb ]] && { echo "$d"; return; }
    done
    d=$(command -v initdb) && dirname "$d"
}

# The user that owns the data dir runs every postgres command: PostgreSQL
# refuses root, so as root that is `postgres`; otherwise it is ourselves.
_harness_pg_runner() {
    local owner
    _H_PGRUN=()
    (( EUID == 0 )) || return 0
    owner=$(stat -c %U "$1") || return 1
    [[ $owner == root ]] && owner=postgres
    _H_PGRUN=(setpriv "--reuid=$owner" "--regid=$owner" --init-groups --)
}

# Everything the server needs is in the data dir's config, so
# `pg_ctl -D $STRATA_TEST_PG_DIR start` by hand starts the same server.
_harness_pg_write_conf() {
    local d=$1 port=$2
    cat > "$d/strata_harness.conf" <<EOF
# written by tests/harness/servers.sh; fsync=off is for throwaway test data only
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$d'
fsync = off
full_page_writes = off
synchronous_commit = off
EOF
    (( EUID == 0 )) && chown --reference="$d" "$d/strata_harness.conf"
    return 0
}

_harness_postgres_launch() {
    local d=$STRATA_TEST_PG_DIR bin
    [[ -n ${_H_INITDB:-} ]] && return 0 # _harness_postgres_check launches it after initdb
    bin=$(_harness_pg_bindir)
    _harness_pg_runner "$d" || return 1
    _harness_pg_write_conf "$d" "$STRATA_TEST_PG_PORT"
    _harness_rotate "$d/server.log"
    _harness_bg _harness_pg_exec "$d" "$bin"
    _H_PID[postgres]=$_H_BG
    HARNESS_PIDS+=("postgres:$_H_BG")
}

_harness_pg_exec() {
    cd "$1" && exec setsid "${_H_PGRUN[@]}" env HOME="$1" "$2/postgres" -D "$1" \
        </dev/null >"$1/server.log" 2>&1
}

# 0 ready, 1 not yet, 2 port taken, 3 failed. Ready is what pg_ctl -w waits
# for: postmaster.pid names our pid and says "ready".
_harness_postgres_check() {
    local d=$STRATA_TEST_PG_DIR pid lines log rc
    if [[ -n ${_H_INITDB:-} ]]; then
        _harness_alive "$_H_INITDB" && return 1
        wait "$_H_INITDB"; rc=$?
        _H_INITDB=
        if ((rc)); then
            _H_WHY="initdb failed (exit $rc)"
            return 3
        fi
        echo "include 'strata_harness.conf'" >> "$d/postgresql.conf"
        _harness_postgres_launch || return 3
        return 1
    fi
    pid=${_H_PID[postgres]}
    if ! _harness_alive "$pid"; then
        log=$(<"$d/server.log")
        [[ $log == *"Address already in use"* ]] && return 2
        return 3
    fi
    [[ -r $d/postmaster.pid ]] || return 1
    mapfile -t lines < "$d/postmaster.pid"
    [[ ${lines[0]:-} == "$pid" && ${lines[7]:-} == ready* ]] || return 1
    return 0
}

_harness_pg_set_port() {
    STRATA_TEST_PG_PORT=$1
    STRATA_TEST_DATABASE_URL="postgresql://postgres@127.0.0.1:$1/strata_test?sslmode=disable"
    export STRATA_TEST_PG_PORT STRATA_TEST_DATABASE_URL
}

_harness_pg_initdb() {
    cd "$1" && exec setsid "${_H_PGRUN[@]}" env HOME="$1" "$2/initdb" -D "$1" -A trust -U postgres \
        -E UTF8 --locale=C --no-sync --no-instructions >"$3" 2>&1
}

_harness_postgres_prepare() {
    local d=$STRATA_TEST_RUN_DIR/postgres bin port
    bin=$(_harness_pg_bindir)
    if [[ ! -x $bin/initdb ]]; then
        _harness_say "postgres: initdb not found (install postgresql-15 or set STRATA_PG_BINDIR)"
        return 1
    fi
    mkdir -m 700 "$d" || return 1
    (( EUID == 0 )) && chown postgres: "$d"
    _harness_pg_runner "$d" || return 1
    export STRATA_TEST_PG_DIR=$d
    port=$(_harness_ports 1) || return 1
    _harness_pg_set_port "$port"
    # In the background: Redis and NATS come up meanwhile. --no-sync: a
    # throwaway cluster needs no fsync at the end (1.5 s → 0.7 s here).
    _harness_bg _harness_pg_initdb "$d" "$bin" "$STRATA_TEST_RUN_DIR/initdb.log"
    _H_INITDB=$_H_BG
    HARNESS_PIDS+=("initdb:$_H_BG")
}

_harness_postgres_ready() {
    local out
    _H_VERSION=$(<"$STRATA_TEST_PG_DIR/PG_VERSION")
    _H_EXTRA=
    [[ -n ${_H_PG_AGAIN:-} ]] && return 0 # a restart: the database is there
    if ! out=$("$(_harness_pg_bindir)/psql" -X -q -v ON_ERROR_STOP=1 \
            "postgresql://postgres@127.0.0.1:$STRATA_TEST_PG_PORT/postgres?sslmode=disable" \
            -c 'CREATE DATABASE strata_test' 2>&1); then
        _harness_say "postgres: CREATE DATABASE strata_test failed: $out"
        return 1
    fi
}

# ---------------------------------------------------------------- Redis

_harness_redis_launch() {
    local d=$STRATA_TEST_REDIS_DIR port=$STRATA_TEST_REDIS_PORT
    _harness_rotate "$d/redis.log"
    _harness_bg _harness_redis_exec "$d" "$port"
    _H_PID[redis]=$_H_BG
    HARNESS_PIDS+=("redis:$_H_BG")
}

_harness_redis_exec() {
    cd "$1" && exec setsid redis-server --port "$2" --bind 127.0.0.1 --save '' \
        --appendonly no --daemonize no --dir "$1" --logfile "$1/redis.log" \
        --pidfile "$1/redis.pid" </dev/null >"$1/redis.out" 2>&1
}

# "Ready to accept connections" is logged after the listen socket is bound,
# so a PONG cannot come from someone else's server on a port we lost.
_harness_redis_check() {
    local d=$STRATA_TEST_REDIS_DIR pid=${_H_PID[redis]} log=
    { log=$(<"$d/redis.log"); } 2>/dev/null
    if ! _harness_alive "$pid"; then
        [[ $log == *"Address already in use"* ]] && return 2
        return 3
    fi
    [[ $log == *"Ready to accept connections"* ]] || return 1
    [[ $(redis-cli -p "$STRATA_TEST_REDIS_PORT" ping 2>/dev/null) == PONG ]] || return 1
}

_harness_redis_set_port() {
    STRATA_TEST_REDIS_PORT=$1
    STRATA_TEST_REDIS_URL="redis://127.0.0.1:$1/0"
    export STRATA_TEST_REDIS_PORT STRATA_TEST_REDIS_URL
}

_harness_redis_prepare() {
    local port
    if ! command -v redis-server >/dev/null; then
        _harness_say "redis: redis-server not found (install redis-server)"
        return 1
    fi
    export STRATA_TEST_REDIS_DIR=$STRATA_TEST_RUN_DIR/redis
    mkdir "$STRATA_TEST_REDIS_DIR" || return 1
    port=$(_harness_ports 1) || return 1
    _harness_redis_set_port "$port"
}

_harness_redis_ready() {
    local v
    v=$(redis-cli -p "$STRATA_TEST_REDIS_PORT" info server 2>/dev/null | grep -m1 '^redis_version:')
    v=${v#redis_version:}
    _H_VERSION=${v%$'\r'}
    _H_EXTRA=
}

# ---------------------------------------------------------------- NATS

_harness_nats_port_of() { local u=${1%/}; u=${u##*:}; echo "${u%%/*}"; }

_harness_nats_launch() {
    local d=$STRATA_TEST_NATS_DIR port mon
    port=$(_harness_nats_port_of "$STRATA_TEST_NATS_URL")
    mon=$(_harness_nats_port_of "$STRATA_TEST_NATS_MONITOR_URL")
    _harness_rotate "$d/nats.log"
    _harness_bg _harness_nats_exec "$d" "$port" "$mon"
    _H_PID[nats]=$_H_BG
    HARNESS_PIDS+=("nats:$_H_BG")
}

_harness_nats_exec() {
    cd "$1" && exec setsid nats-server -js -a 127.0.0.1 -p "$2" -m "$3" -sd "$1/store" \
        -l "$1/nats.log" -P "$1/nats.pid" </dev/null >"$1/nats.out" 2>&1
}

# "Server is ready" is logged once both listeners (client and monitor) are
# bound, so the health check below talks to our server.
_harness_nats_check() {
    local d=$STRATA_TEST_NATS_DIR pid=${_H_PID[nats]} log=
    { log=$(<"$d/nats.log"); } 2>/dev/null
    if ! _harness_alive "$pid"; then
        [[ $log == *"address already in use"* ]] && return 2
        return 3
    fi
    [[ $log == *"Server is ready"* ]] || return 1
    curl -fsS -o /dev/null --max-time 2 "$STRATA_TEST_NATS_MONITOR_URL/healthz?js-enabled-only=true" \
        2>/dev/null || return 1
}

_harness_nats_set_ports() {
    STRATA_TEST_NATS_URL="nats://127.0.0.1:$1"
    STRATA_TEST_NATS_MONITOR_URL="http://127.0.0.1:$2"
    export STRATA_TEST_NATS_URL STRATA_TEST_NATS_MONITOR_URL
}

_harness_nats_prepare() {
    local ports
    if ! command -v nats-server >/dev/null; then
        _harness_say "nats: nats-server not found (install nats-server)"
        return 1
    fi
    export STRATA_TEST_NATS_DIR=$STRATA_TEST_RUN_DIR/nats
    mkdir -p "$STRATA_TEST_NATS_DIR/store" || return 1
    ports=$(_harness_ports 2) || return 1
    _harness_nats_set_ports $ports
}

_harness_nats_ready() {
    local v
    v=$(grep -m1 -o 'Version: *[0-9][^ ]*' "$STRATA_TEST_NATS_DIR/nats.log" 2>/dev/null)
    _H_VERSION=${v##* }
    _H_EXTRA="; JetStream, monitor :$(_harness_nats_port_of "$STRATA_TEST_NATS_MONITOR_URL")"
}

# ---------------------------------------------------------------- start / wait

_harness_addr() {
    case $1 in
    postgres) echo "127.0.0.1:$STRATA_TEST_PG_PORT" ;;
    redis) echo "127.0.0.1:$STRATA_TEST_REDIS_PORT" ;;
    nats) echo "127.0.0.1:$(_harness_nats_port_of "$STRATA_TEST_NATS_URL")" ;;
    esac
}

_harness_logs() {
    case $1 in
    postgres)
        if [[ -e ${STRATA_TEST_PG_DIR:-}/server.log ]]; then echo "$STRATA_TEST_PG_DIR/server.log"
        else echo "${STRATA_TEST_RUN_DIR:-}/initdb.log"; fi ;;
    redis) echo "${STRATA_TEST_REDIS_DIR:-}/redis.log ${STRATA_TEST_REDIS_DIR:-}/redis.out" ;;
    nats) echo "${STRATA_TEST_NATS_DIR:-}/nats.log ${STRATA_TEST_NATS_DIR:-}/nats.out" ;;
    esac
}

_harness_launch() {
    _H_WHY=
    _harness_now
    _H_DEADLINE[$1]=$((_H_NOW + $(_harness_timeout_ms)))
    "_harness_$1_launch"
}

# New ports after losing a race for one; only on the first start (an outage
# test restarts on the same port by design).
_harness_new_port() {
    local ports
    case $1 in
    postgres) ports=$(_harness_ports 1) && _harness_pg_set_port $ports ;;
    redis) ports=$(_harness_ports 1) && _harness_redis_set_port $ports ;;
    nats) ports=$(_harness_ports 2) && _harness_nats_set_ports $ports ;;
    esac
}

_harness_fail() {
    local name=$1 why=$2
    _harness_say "$name failed to start: $why"
    # shellcheck disable=SC2046
    _harness_tail $(_harness_logs "$name")
    [[ -n ${_H_PID[$name]:-} ]] && _harness_terminate "$name" "${_H_PID[$name]}"
    return 1
}

# Polls every launched server until all are ready; relaunches on a new port
# when one lost its port (if may_move); fails on a death or the deadline.
_harness_wait() {
    local may_move=$1; shift
    local pending=("$@") left name rc ms
    while ((${#pending[@]})); do
        left=()
        for name in "${pending[@]}"; do
            "_harness_${name}_check"; rc=$?
            _harness_now
            case $rc in
            0)
                "_harness_${name}_ready" || { _harness_fail "$name" "not usable"; return 1; }
                ms=$((_H_NOW - _H_T0[$name]))
                printf '%s %s ready on %s (%d.%02d s, pid %s%s)\n' "$name" "$_H_VERSION" \
                    "$(_harness_addr "$name")" $((ms / 1000)) $((ms % 1000 / 10)) "${_H_PID[$name]}" \
                    "$_H_EXTRA" >&2
                ;;
            1)
                if ((_H_NOW >= _H_DEADLINE[$name])); then
                    _harness_fail "$name" "not ready after ${STRATA_TEST_START_TIMEOUT:-20} s"
                    return 1
                fi
                left+=("$name")
                ;;
            2)
                _H_TRY[$name]=$((${_H_TRY[$name]:-1} + 1))
                if [[ $may_move != move ]]; then
                    _harness_fail "$name" "its port $(_harness_addr "$name") is taken"
                    return 1
                fi
                if ((_H_TRY[$name] > HARNESS_TRIES)); then
                    _harness_fail "$name" "ports taken $HARNESS_TRIES times in a row"
                    return 1
                fi
                _harness_say "$name: port $(_harness_addr "$name") was taken meanwhile; retrying on a new port"
                _harness_new_port "$name" && _harness_launch "$name" || return 1
                left+=("$name")
                ;;
            *)
                _harness_fail "$name" "${_H_WHY:-it exited}"
                return 1
                ;;
            esac
        done
        pending=("${left[@]}")
        ((${#pending[@]})) && sleep "$HARNESS_POLL_S"
    done
    return 0
}

# harness_start_servers [postgres] [redis] [nats]: the ones named (default
# all), in parallel: Redis and NATS launch first and come up while initdb runs.
harness_start_servers() {
    local -
    set +eu # callable from scripts running with set -eu
    local names=("$@") name order=()
    ((${#names[@]})) || names=(postgres redis nats)
    for name in "${names[@]}"; do
        case $name in
        postgres | redis | nats) ;;
        *) _harness_say "unknown server '$name' (known: postgres redis nats)"; return 1 ;;
        esac
    done
    if [[ -z ${STRATA_TEST_RUN_DIR:-} || ! -d $STRATA_TEST_RUN_DIR ]]; then
        _harness_say "call harness_init first"
        return 1
    fi
    for name in redis nats postgres; do
        [[ " ${names[*]} " == *" $name "* ]] || continue
        _harness_now
        _H_T0[$name]=$_H_NOW
        _H_TRY[$name]=1
        "_harness_${name}_prepare" || return 1
        _harness_launch "$name" || return 1
        order+=("$name")
    done
    _harness_wait move "${order[@]}"
}

harness_start_postgres() { harness_start_servers postgres; }
harness_start_redis() { harness_start_servers redis; }
harness_start_nats() { harness_start_servers nats; }

# ---------------------------------------------------------------- outages

harness_stop_postgres() {
    local -
    set +eu # callable from scripts running with set -eu
    _harness_need STRATA_TEST_PG_DIR || return 1
    local d=$STRATA_TEST_PG_DIR pid bin
    pid=$(_harness_pidfile_pid "$d/postmaster.pid")
    _harness_is "$pid" postgres || return 0
    bin=$(_harness_pg_bindir)
    _harness_pg_runner "$d" || return 1
    (cd "$d" && "${_H_PGRUN[@]}" "$bin/pg_ctl" -D "$d" -m fast -w -t 20 stop) >/dev/null 2>&1
    _harness_wait_gone "$pid" 5000 && return 0
    _harness_terminate postgres "$pid"
}

harness_start_postgres_again() {
    local -
    set +eu # callable from scripts running with set -eu
    _harness_need STRATA_TEST_PG_DIR || return 1
    _harness_now
    _H_T0[postgres]=$_H_NOW
    _H_TRY[postgres]=1
    _H_PG_AGAIN=1
    _harness_launch postgres && _harness_wait stay postgres
}

harness_stop_redis() {
    local -
    set +eu # callable from scripts running with set -eu
    _harness_need STRATA_TEST_REDIS_DIR || return 1
    local d=$STRATA_TEST_REDIS_DIR pid
    pid=$(_harness_pidfile_pid "$d/redis.pid")
    _harness_is "$pid" redis-server || return 0
    _harness_terminate redis "$pid"
}

harness_start_redis_again() {
    local -
    set +eu # callable from scripts running with set -eu
    _harness_need STRATA_TEST_REDIS_DIR || return 1
    _harness_now
    _H_T0[redis]=$_H_NOW
    _H_TRY[redis]=1
    _harness_launch redis && _harness_wait stay redis
}

harness_stop_nats() {
    local -
    set +eu # callable from scripts running with set -eu
    _harness_need STRATA_TEST_NATS_DIR || return 1
    local d=$STRATA_TEST_NATS_DIR pid
    pid=$(_harness_pidfile_pid "$d/nats.pid")
    _harness_is "$pid" nats-server || return 0
    _harness_terminate nats "$pid"
}

harness_start_nats_again() {
    local -
    set +eu # callable from scripts running with set -eu
    _harness_need STRATA_TEST_NATS_DIR || return 1
    _harness_now
    _H_T0[nats]=$_H_NOW
    _H_TRY[nats]=1
    _harness_launch nats && _harness_wait stay nats
}

# ---------------------------------------------------------------- teardown

# Stops every server under the run dir (whoever restarted it), then any
# process launched here that is somehow still alive, verifies each is gone
# and removes the run dir (kept when STRATA_TEST_KEEP_DIR=1, for its logs).
harness_stop_all() {
    local -
    set +eu # callable from scripts running with set -eu
    local run=${STRATA_TEST_RUN_DIR:-} rc=0 entry pid
    [[ -n ${_H_STOPPED:-} ]] && return 0
    _H_STOPPED=1
    [[ -n $run && -d $run ]] || return 0
    # SIGTERM Redis and NATS first so they exit while pg_ctl stops PostgreSQL.
    pid=$(_harness_pidfile_pid "$run/nats/nats.pid")
    _harness_is "$pid" nats-server && kill -TERM "$pid" 2>/dev/null
    pid=$(_harness_pidfile_pid "$run/redis/redis.pid")
    _harness_is "$pid" redis-server && kill -TERM "$pid" 2>/dev/null
    [[ -d $run/postgres ]] && { STRATA_TEST_PG_DIR=$run/postgres harness_stop_postgres || rc=1; }
    [[ -d $run/nats ]] && { STRATA_TEST_NATS_DIR=$run/nats harness_stop_nats || rc=1; }
    [[ -d $run/redis ]] && { STRATA_TEST_REDIS_DIR=$run/redis harness_stop_redis || rc=1; }
    for entry in "${HARNESS_PIDS[@]}"; do
        pid=${entry#*:}
        _harness_alive "$pid" || continue
        _harness_terminate "${entry%%:*}" "$pid" || rc=1
    done
    if ((rc)); then
        _harness_say "some servers would not stop; leaving $run"
        return 1
    fi
    if [[ ${STRATA_TEST_KEEP_DIR:-} == 1 ]]; then
        _harness_say "kept $run"
    else
        rm -rf "$run"
    fi
    return 0
}
