# lib.sh — shared helpers for the shell integration tests (sourced, POSIX sh).
#
#   . tests/integration/lib.sh
#   T=$(mktemp_state)          # this test's own state folder, removed at exit on success
#   PORT=$(free_port)          # a loopback TCP port nobody listens on
#   start_bg NAME cmd args...  # starts a process, records its PID, logs to $T/NAME.log
#   wait_for 60 "curl -fs http://127.0.0.1:$PORT/healthz"   # polls until true or deadline
#   metric NAME{labels}        # reads one sample from /metrics of $PORT
#   fail "message"             # prints and exits 1 (the trap kills what the test started)
# Every process started with start_bg is killed by PID at exit, pass or fail.

set -u
BUILD=${BUILD:-build}
TOP=${INTENTD_TOP:-$(pwd)}
BIN="$TOP/$BUILD"
LIB_PIDS=""
LIB_T=""

lib_cleanup() {
    rc=$?
    for p in $LIB_PIDS; do kill -TERM "$p" 2>/dev/null; done
    for p in $LIB_PIDS; do
        i=0
        while kill -0 "$p" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
        kill -KILL "$p" 2>/dev/null
    done
    if [ $rc -ne 0 ] && [ -n "$LIB_T" ]; then
        for f in "$LIB_T"/*.log; do
            [ -f "$f" ] || continue
            echo "--- $f (last 30 lines)"; tail -30 "$f"
        done
    fi
    [ $rc -eq 0 ] && [ -n "$LIB_T" ] && rm -rf "$LIB_T"
    exit $rc
}
trap lib_cleanup EXIT
trap 'exit 130' INT TERM

fail() { echo "FAIL: $*" >&2; exit 1; }
note() { echo "== $*"; }

# Skip this test in sanitizer passes (the plain pass runs it).
slow_test() { if [ -n "${SAN:-}" ]; then echo "slow test, skipped under SAN=$SAN"; exit 77; fi; }

# Every test gets its own state folder as soon as it sources this file, so that
# `T=$(mktemp_state)` (a subshell) still names the folder the cleanup trap removes.
LIB_T=$(mktemp -d "${TMPDIR:-/tmp}/intentd-it-XXXXXX") || exit 1
mktemp_state() {
    echo "$LIB_T"
}

# A free loopback port: asks the kernel for one (bind to port 0), so tests never collide.
free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_bg NAME cmd...: runs cmd in the background with output in $LIB_T/NAME.log;
# its PID is in $LAST_PID and is killed at exit.
start_bg() {
    name=$1; shift
    "$@" > "$LIB_T/$name.log" 2>&1 &
    LAST_PID=$!
    LIB_PIDS="$LIB_PIDS $LAST_PID"
}

# wait_for SECONDS 'shell condition' — polls every 0.2 s; fails the test at the deadline.
wait_for() {
    deadline=$(( $(date +%s) + $1 )); shift
    while ! sh -c "$*" > /dev/null 2>&1; do
        [ "$(date +%s)" -ge "$deadline" ] && fail "timed out waiting for: $*"
        sleep 0.2
    done
}

# metric 'name{label="x"}' [PORT] — prints the sample's value (empty if absent).
metric() {
    curl -fs "http://127.0.0.1:${2:-$PORT}/metrics" | awk -v m="$1" '$1 == m { print $2; exit }'
}
