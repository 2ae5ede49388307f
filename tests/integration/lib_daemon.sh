# lib_daemon.sh — helpers for tests that run the daemon against a dev broker (durability,
# crash loops, faults).  POSIX sh; sources lib.sh itself.
#
#   . tests/integration/lib_daemon.sh
#   ld_init                               # T = this test's state folder (removed on success)
#   devbroker_start --partitions 1        # BROKER_PID, BROKER_BS, BROKER_FILE
#   daemon_config "$T/d.yaml" training.max_batch_wait=0 labels.idle_timeout=0
#   daemon_start d1 "$T/d.yaml"           # DAEMON_PID, DAEMON_PORT (also PORT), log $T/d1.log
#   daemon_wait_healthy 60
#   replay_run r1 --csv tests/data/online_shoppers_intention.csv --label Revenue --direct
#   daemon_wait_drained 120               # trained count stable and nothing pending
#   model_field fingerprint               # from GET /v1/model
#   daemon_kill9; daemon_start d2 "$T/d.yaml"; ...
#   daemon_stop 30 || fail "exit $DAEMON_RC"
#
# Run directly (as tests/run.sh does with every tests/integration/*.sh), it tests itself:
# the broker helpers, the config generator (checked by `intentd --check-config`) and the
# checkpoint-file helpers; it never needs a working daemon loop.
#
# Variables read by daemon_config (set before calling; defaults in brackets):
#   DAEMON_PORT [a free port]   DAEMON_STATE [$T/state]   DAEMON_BROKERS [$BROKER_BS, else
#   "embedded"]   DAEMON_GROUP [intentd-test]   DAEMON_SCHEMA [config/intentd.yaml]

LD_TOP=${INTENTD_TOP:-$(pwd)}
. "$LD_TOP/tests/integration/lib.sh"

DAEMON_PID=""
BROKER_PID=""
LD_MOUNTS=""

# ld_init: creates this test's state folder in the current shell (T and LIB_T), so lib.sh's
# exit trap removes it on success and prints its logs on failure.
ld_init() {
    mktemp_state > /dev/null
    T=$LIB_T
}

# The exit trap: lib.sh's cleanup, after the processes are gone and our tmpfs unmounted
# (a busy mount would survive otherwise).
ld_cleanup() {
    ld_rc=$?
    for ld_p in $DAEMON_PID $BROKER_PID; do kill -KILL "$ld_p" 2> /dev/null; done
    for ld_p in $DAEMON_PID $BROKER_PID; do wait "$ld_p" 2> /dev/null; done
    for ld_m in $LD_MOUNTS; do umount -l "$ld_m" 2> /dev/null; done
    (exit $ld_rc)
    lib_cleanup
}
trap ld_cleanup EXIT

# ld_wait_pid PID SECONDS: waits for PID to exit; returns 0 (and its status in LD_RC) or 1
# at the deadline.  Works for our own children only (wait), as every start_bg process is.
ld_wait_pid() {
    ld_deadline=$(( $(date +%s) + $2 ))
    while kill -0 "$1" 2> /dev/null; do
        [ "$(date +%s)" -ge "$ld_deadline" ] && return 1
        # a zombie still answers kill -0 until reaped; check /proc for its state
        [ "$(awk '{print $3}' "/proc/$1/stat" 2> /dev/null)" = Z ] && break
        sleep 0.1
    done
    wait "$1"
    LD_RC=$?
    return 0
}

# ---- the dev broker ----

# devbroker_start [intentd-devbroker options]: starts a dev broker (log $T/broker.log) and
# waits for its bootstrap line.  Sets BROKER_PID, BROKER_BS (HOST:PORT) and BROKER_FILE (the
# bootstrap file, for `intentd-replay --brokers @FILE`).
devbroker_start() {
    BROKER_FILE="$LIB_T/broker.bootstrap"
    rm -f "$BROKER_FILE"
    start_bg broker "$BIN/intentd-devbroker" --bootstrap-file "$BROKER_FILE" "$@"
    BROKER_PID=$LAST_PID
    wait_for 30 "[ -s '$BROKER_FILE' ]"
    BROKER_BS=$(cat "$BROKER_FILE")
    LD_DOWNS=0
    LD_UPS=0
}

# devbroker_down / devbroker_up: takes the broker down (connections dropped and refused, data
# kept) or brings it back, and waits until it says so in its log.
devbroker_down() {
    LD_DOWNS=$((LD_DOWNS + 1))
    kill -USR1 "$BROKER_PID"
    wait_for 30 "[ \$(grep -c 'SIGUSR1: broker down' '$LIB_T/broker.log') -ge $LD_DOWNS ]"
}
devbroker_up() {
    LD_UPS=$((LD_UPS + 1))
    kill -USR2 "$BROKER_PID"
    wait_for 30 "[ \$(grep -c 'SIGUSR2: broker up' '$LIB_T/broker.log') -ge $LD_UPS ]"
}

# devbroker_stop: SIGTERM, and fails the test unless it exits 0 within 30 s.
devbroker_stop() {
    kill -TERM "$BROKER_PID"
    ld_wait_pid "$BROKER_PID" 30 || fail "devbroker $BROKER_PID did not stop within 30 s"
    [ "$LD_RC" -eq 0 ] || fail "devbroker exited $LD_RC"
    BROKER_PID=""
}

# ---- configuration ----

# daemon_config FILE [dotted.key=value ...]: writes a daemon configuration: the feature
# schema of $DAEMON_SCHEMA, state_dir, brokers, group and listen address from the variables
# above, then each override (the value is YAML: 0, 10s, [8, 4], '' ...).  Sets DAEMON_PORT
# (and PORT, for lib.sh's metric) when unset, and DAEMON_STATE.
daemon_config() {
    ld_file=$1; shift
    [ -n "${DAEMON_PORT:-}" ] || DAEMON_PORT=$(free_port)
    PORT=$DAEMON_PORT
    DAEMON_STATE=${DAEMON_STATE:-$LIB_T/state}
    /usr/bin/python3 - "$ld_file" "${DAEMON_SCHEMA:-$LD_TOP/config/intentd.yaml}" \
        "$DAEMON_STATE" "${DAEMON_BROKERS:-${BROKER_BS:-embedded}}" \
        "${DAEMON_GROUP:-intentd-test}" "127.0.0.1:$DAEMON_PORT" "$@" << 'EOF' ||
import sys, yaml
out, schema, state, brokers, group, listen = sys.argv[1:7]
with open(schema) as f:
    features = yaml.safe_load(f)["features"]
cfg = {"state_dir": state, "log_level": "info",
       "kafka": {"brokers": brokers, "group_id": group},
       "features": features,
       "http": {"listen": listen}}
for ov in sys.argv[7:]:
    key, eq, value = ov.partition("=")
    if not eq or not key:
        sys.exit("daemon_config: override %r is not dotted.key=value" % ov)
    node, parts = cfg, key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            sys.exit("daemon_config: %s is not a section" % p)
    v = yaml.safe_load(value) if value != "" else ""
    node[parts[-1]] = v
with open(out, "w") as f:
    f.write("# generated by tests/integration/lib_daemon.sh daemon_config\n")
    yaml.safe_dump(cfg, f, default_flow_style=False, sort_keys=False)
EOF
        fail "daemon_config $ld_file failed"
}

# daemon_config_deterministic FILE [overrides]: daemon_config with the settings under which
# a run is reproducible bit for bit (only full batches, no idle-timeout watermark moves,
# fixed seed, one partition's order) plus frequent checkpoints; overrides come last.
daemon_config_deterministic() {
    ld_file=$1; shift
    daemon_config "$ld_file" training.max_batch_wait=0 labels.idle_timeout=0 model.seed=7 \
        checkpoint.interval=1s snapshot.interval=200ms "$@"
}

# ---- the daemon ----

# daemon_start NAME CONFIG [intentd options]: starts intentd -c CONFIG (log $T/NAME.log);
# DAEMON_PID is its PID.  The HTTP port is DAEMON_PORT (from daemon_config).
daemon_start() {
    ld_name=$1; ld_conf=$2; shift 2
    DAEMON_LOG="$LIB_T/$ld_name.log"
    start_bg "$ld_name" "$BIN/intentd" -c "$ld_conf" "$@"
    DAEMON_PID=$LAST_PID
}

ld_url() { echo "http://127.0.0.1:$DAEMON_PORT$1"; }

# daemon_alive: true while the daemon process runs (not a zombie).
daemon_alive() {
    [ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2> /dev/null &&
        [ "$(awk '{print $3}' "/proc/$DAEMON_PID/stat" 2> /dev/null)" != Z ]
}

# daemon_wait_healthy [SECONDS=60] / daemon_wait_ready [SECONDS=60]: until /healthz (the
# process serves HTTP) or /readyz (a model is served) answers 200; fails the test at the
# deadline or as soon as the daemon has exited.
daemon_wait_healthy() { ld_wait_http /healthz "${1:-60}"; }
daemon_wait_ready() { ld_wait_http /readyz "${1:-60}"; }
ld_wait_http() {
    ld_deadline=$(( $(date +%s) + $2 ))
    until curl -fs -o /dev/null "$(ld_url "$1")"; do
        daemon_alive || fail "intentd exited while waiting for $1 (log $DAEMON_LOG)"
        [ "$(date +%s)" -ge "$ld_deadline" ] && fail "timed out waiting for $1"
        sleep 0.2
    done
}

# daemon_kill9: SIGKILL and reap, so the state_dir lock and the port are free for the next.
daemon_kill9() {
    kill -KILL "$DAEMON_PID" 2> /dev/null
    ld_wait_pid "$DAEMON_PID" 30 || fail "intentd $DAEMON_PID survived SIGKILL for 30 s"
    DAEMON_PID=""
}

# daemon_stop [SECONDS=30] [SIGNAL=TERM]: a graceful stop; returns 0 when it exited 0 within
# the bound, else 1.  DAEMON_RC is its exit status (or "timeout"), DAEMON_STOP_SECS the time.
daemon_stop() {
    ld_t0=$(date +%s)
    kill "-${2:-TERM}" "$DAEMON_PID"
    if ! ld_wait_pid "$DAEMON_PID" "${1:-30}"; then
        DAEMON_RC=timeout
        return 1
    fi
    DAEMON_RC=$LD_RC
    DAEMON_STOP_SECS=$(( $(date +%s) - ld_t0 ))
    DAEMON_PID=""
    [ "$DAEMON_RC" -eq 0 ]
}

# daemon_reload: SIGHUP (the caller then greps $DAEMON_LOG for what changed).
daemon_reload() { kill -HUP "$DAEMON_PID"; }

# daemon_crash_after MAX_MS: sleeps a pseudo-random 0..MAX_MS ms (LD_SEED, advanced each
# call, makes a failing loop reproducible) and SIGKILLs the daemon.
LD_SEED=${LD_SEED:-12345}
daemon_crash_after() {
    LD_SEED=$(( (LD_SEED * 1103515245 + 12345) % 2147483648 ))
    ld_ms=$(( LD_SEED % ($1 + 1) ))
    sleep "$(awk -v ms="$ld_ms" 'BEGIN { printf "%.3f", ms / 1000 }')"
    daemon_kill9
    echo "$ld_ms"
}

# ---- reading the daemon ----

# model_field NAME: one top-level field of GET /v1/model (empty when 503 or absent).
model_field() {
    curl -fs "$(ld_url /v1/model)" 2> /dev/null | /usr/bin/python3 -c '
import json, sys
try:
    v = json.load(sys.stdin).get(sys.argv[1])
except Exception:
    sys.exit(0)
if v is not None:
    print(json.dumps(v) if isinstance(v, (dict, list)) else v)' "$1"
}

# metric_sum NAME: the sum of every sample of metric NAME (all label sets); empty if none.
metric_sum() {
    curl -fs "$(ld_url /metrics)" 2> /dev/null | awk -v m="$1" '
        { n = $1; sub(/\{.*/, "", n) }
        n == m { s += $2; found = 1 }
        END { if (found) printf "%.17g\n", s }'
}

# daemon_wait_metric NAME VALUE [SECONDS=120]: until metric_sum NAME >= VALUE.
daemon_wait_metric() {
    ld_deadline=$(( $(date +%s) + ${3:-120} ))
    while :; do
        ld_v=$(metric_sum "$1")
        [ -n "$ld_v" ] && awk -v a="$ld_v" -v b="$2" 'BEGIN { exit !(a >= b) }' && return 0
        daemon_alive || fail "intentd exited while waiting for $1 >= $2"
        [ "$(date +%s)" -ge "$ld_deadline" ] && fail "timed out waiting for $1 >= $2 (at '$ld_v')"
        sleep 0.2
    done
}

# daemon_wait_drained [SECONDS=120]: until the daemon has caught up: consumer lag 0 on every
# partition, an empty queue, and intentd_examples_trained_total unchanged over 3 s.
# Prints the trained count.
daemon_wait_drained() {
    ld_deadline=$(( $(date +%s) + ${1:-120} ))
    ld_last=""; ld_same=0
    while :; do
        daemon_alive || fail "intentd exited while draining"
        ld_tr=$(metric_sum intentd_examples_trained_total)
        ld_lag=$(metric_sum intentd_kafka_consumer_lag)
        ld_q=$(metric_sum intentd_queue_examples)
        if [ -n "$ld_tr" ] && [ "$ld_tr" = "$ld_last" ] && [ "${ld_lag:-0}" = 0 ] &&
            [ "${ld_q:-0}" = 0 ]; then
            ld_same=$((ld_same + 1))
            [ $ld_same -ge 6 ] && { echo "$ld_tr"; return 0; }
        else
            ld_same=0
        fi
        ld_last=$ld_tr
        [ "$(date +%s)" -ge "$ld_deadline" ] &&
            fail "not drained after ${1:-120}s: trained=$ld_tr lag=$ld_lag queue=$ld_q"
        sleep 0.5
    done
}

# ---- producing events ----

# replay_run NAME CONFIG [intentd-replay options]: replays into the broker of CONFIG's daemon
# ($BROKER_FILE when a dev broker runs, else the daemon's embedded-brokers file) and fails the
# test unless every event was delivered.  Runs in the foreground (log $T/NAME.log).
replay_run() {
    ld_name=$1; ld_conf=$2; shift 2
    if [ -n "$BROKER_PID" ]; then ld_b="@$BROKER_FILE"; else ld_b="@${DAEMON_STATE:-$LIB_T/state}/embedded-brokers"; fi
    "$BIN/intentd-replay" --brokers "$ld_b" --config "$ld_conf" "$@" \
        > "$LIB_T/$ld_name.log" 2>&1 || fail "intentd-replay $* failed (log $LIB_T/$ld_name.log)"
}

# replay_bg NAME CONFIG [options]: the same in the background; its PID is REPLAY_PID (killed at
# exit; `wait $REPLAY_PID` for its status).
replay_bg() {
    ld_name=$1; ld_conf=$2; shift 2
    if [ -n "$BROKER_PID" ]; then ld_b="@$BROKER_FILE"; else ld_b="@${DAEMON_STATE:-$LIB_T/state}/embedded-brokers"; fi
    start_bg "$ld_name" "$BIN/intentd-replay" --brokers "$ld_b" --config "$ld_conf" "$@"
    REPLAY_PID=$LAST_PID
}

# ---- checkpoint files ----

# checkpoints_in DIR: the complete checkpoint files in DIR, newest first, one path a line.
checkpoints_in() {
    ls "$1" 2> /dev/null | grep -E '^checkpoint-[0-9]{20}\.ck$' | sort -r | sed "s|^|$1/|"
}

# checkpoint_newest DIR: the newest complete checkpoint file (empty if none).
checkpoint_newest() { checkpoints_in "$1" | head -1; }

# corrupt_byte FILE [OFFSET=middle]: flips one byte in place (a checksum failure to come).
corrupt_byte() {
    /usr/bin/python3 - "$1" "${2:-}" << 'EOF' || fail "corrupt_byte $1 failed"
import os, sys
path = sys.argv[1]
size = os.path.getsize(path)
at = int(sys.argv[2]) if sys.argv[2] else size // 2
with open(path, "r+b") as f:
    f.seek(at); b = f.read(1); f.seek(at); f.write(bytes([b[0] ^ 0x5a]))
EOF
}

# truncate_half FILE: cuts FILE to half its size (a torn write).
truncate_half() {
    ld_sz=$(stat -c %s "$1")
    truncate -s $((ld_sz / 2)) "$1" || fail "truncate $1 failed"
}

# small_tmpfs DIR SIZE: mounts a tmpfs of SIZE (e.g. 256k) on DIR (created), unmounted at
# exit; returns 1 when mounting is not allowed here (then the caller skips: exit 77).
small_tmpfs() {
    mkdir -p "$1"
    mount -t tmpfs -o "size=$2,mode=0755" tmpfs "$1" 2> /dev/null || return 1
    LD_MOUNTS="$LD_MOUNTS $1"
}

# fill_fs DIR: fills the filesystem of DIR (a small tmpfs) with a file DIR/.filler until
# ENOSPC; free_fs DIR removes it.
fill_fs() { dd if=/dev/zero of="$1/.filler" bs=4k > /dev/null 2>&1; sync; return 0; }
free_fs() { rm -f "$1/.filler"; }

# ---- two daemons on one broker: A (the one a test crashes) and B (never crashed) ----

# crash_pair GROUP_PREFIX [key=value...]: writes $T/a.yaml and $T/b.yaml with
# daemon_config_deterministic (state $T/a and $T/b, groups PREFIX-a and PREFIX-b, own ports,
# the extra settings for both), sets PORT_A and PORT_B, and clears PID_A and PID_B.
crash_pair() {
    cp_prefix=$1; shift
    DAEMON_PORT=$(free_port) DAEMON_STATE=$T/a DAEMON_GROUP=$cp_prefix-a \
        daemon_config_deterministic "$T/a.yaml" "$@"
    PORT_A=$(sed -n 's/^  listen: 127.0.0.1://p' "$T/a.yaml")
    DAEMON_PORT=$(free_port) DAEMON_STATE=$T/b DAEMON_GROUP=$cp_prefix-b \
        daemon_config_deterministic "$T/b.yaml" "$@"
    PORT_B=$(sed -n 's/^  listen: 127.0.0.1://p' "$T/b.yaml")
    [ -n "$PORT_A" ] && [ -n "$PORT_B" ] && [ "$PORT_A" != "$PORT_B" ] || fail "ports $PORT_A $PORT_B"
    PID_A=""
    PID_B=""
}

# use A|B: points the lib_daemon helpers at that daemon of crash_pair.
use() {
    if [ "$1" = A ]; then DAEMON_PORT=$PORT_A; DAEMON_PID=$PID_A; DAEMON_STATE=$T/a
    else DAEMON_PORT=$PORT_B; DAEMON_PID=$PID_B; DAEMON_STATE=$T/b; fi
    PORT=$DAEMON_PORT
}

# ---- self-test, when run directly rather than sourced ----

ld_selftest() {
    ld_init
    [ -x "$BIN/intentd-devbroker" ] || { echo "intentd-devbroker not built"; exit 77; }

    note "devbroker_start / down / up / stop"
    devbroker_start --partitions 2
    echo "$BROKER_BS" | grep -qE '^127\.0\.0\.1:[0-9]+$' || fail "bootstrap '$BROKER_BS'"
    kill -0 "$BROKER_PID" || fail "broker not running"
    devbroker_down
    devbroker_up
    devbroker_down
    devbroker_up
    [ "$(grep -c 'SIGUSR2: broker up' "$LIB_T/broker.log")" -eq 2 ] || fail "two up cycles"

    note "daemon_config writes what was asked, and intentd accepts it"
    DAEMON_PORT=$(free_port)
    daemon_config_deterministic "$T/d.yaml" model.hidden='[8, 4]' kafka.dead_letter_topic="''" \
        checkpoint.keep=2
    /usr/bin/python3 - "$T/d.yaml" "$BROKER_BS" "$LIB_T/state" "$DAEMON_PORT" \
        << 'EOF' || fail "config: $(cat "$T/d.yaml")"
import sys, yaml
c = yaml.safe_load(open(sys.argv[1]))
assert c["kafka"]["brokers"] == sys.argv[2], c["kafka"]
assert c["state_dir"] == sys.argv[3]
assert c["http"]["listen"] == "127.0.0.1:" + sys.argv[4]
assert c["model"]["hidden"] == [8, 4]
assert c["training"]["max_batch_wait"] == 0 and c["labels"]["idle_timeout"] == 0
assert c["checkpoint"] == {"interval": "1s", "keep": 2}
assert c["kafka"]["dead_letter_topic"] == ""
assert len(c["features"]) == 17 and c["features"][0]["name"] == "Administrative"
EOF
    if [ -x "$BIN/intentd" ]; then
        "$BIN/intentd" --check-config -c "$T/d.yaml" > "$T/check.out" 2>&1 ||
            fail "intentd --check-config rejects the generated file: $(cat "$T/check.out")"
    fi
    ( daemon_config "$T/bad.yaml" novalue ) 2> /dev/null && fail "a bad override was accepted"

    note "checkpoint helpers"
    mkdir -p "$T/ck"
    for s in 00000000000000000002 00000000000000000010 00000000000000000003; do
        printf 'abcdefgh' > "$T/ck/checkpoint-$s.ck"
    done
    : > "$T/ck/checkpoint-00000000000000000011.ck.tmp"
    [ "$(checkpoint_newest "$T/ck")" = "$T/ck/checkpoint-00000000000000000010.ck" ] ||
        fail "newest: $(checkpoint_newest "$T/ck")"
    [ "$(checkpoints_in "$T/ck" | wc -l)" -eq 3 ] || fail "checkpoints_in: $(checkpoints_in "$T/ck")"
    corrupt_byte "$T/ck/checkpoint-00000000000000000002.ck" 1
    [ "$(cat "$T/ck/checkpoint-00000000000000000002.ck")" != abcdefgh ] || fail "not corrupted"
    truncate_half "$T/ck/checkpoint-00000000000000000003.ck"
    [ "$(stat -c %s "$T/ck/checkpoint-00000000000000000003.ck")" -eq 4 ] || fail "not truncated"

    note "small_tmpfs fills up (or is not allowed here)"
    if small_tmpfs "$T/small" 64k; then
        fill_fs "$T/small"
        dd if=/dev/zero of="$T/small/more" bs=4k count=1 2> /dev/null && fail "tmpfs not full"
        free_fs "$T/small"
        dd if=/dev/zero of="$T/small/more" bs=4k count=1 2> /dev/null || fail "tmpfs still full"
    else
        echo "mount -t tmpfs not permitted; skipped that part"
    fi

    note "daemon_crash_after is reproducible"
    LD_SEED=1; DAEMON_PID=""
    a=$( (sleep 30 & DAEMON_PID=$!; daemon_crash_after 50) )
    LD_SEED=1
    b=$( (sleep 30 & DAEMON_PID=$!; daemon_crash_after 50) )
    [ -n "$a" ] && [ "$a" = "$b" ] || fail "crash delays '$a' and '$b' differ"

    devbroker_stop
    echo "ok"
}

case "$0" in
*lib_daemon.sh) ld_selftest ;;
esac
