#!/bin/sh
# The daemon's sd_notify messages as systemd would receive them, on a datagram socket this
# test binds: READY=1 (and /healthz answers by then, with no events at all), WATCHDOG=1
# repeatedly, the pings stopping while the trainer is stalled (SIGUSR1, the test seam) and
# resuming after (SIGUSR2), RELOADING=1 then READY=1 around SIGHUP, STOPPING=1 on SIGTERM,
# then exit 0.  Every message must come from the daemon's own PID (NotifyAccess=main).
. tests/integration/lib_daemon.sh
ld_init
SOCK=$T/notify.sock
MSGS=$T/notify.msgs
DAEMON_PORT=$(free_port)
daemon_config "$T/d.yaml"

# The receiver: one line per datagram, "SECONDS PID MESSAGE" (newlines in a message as '|');
# on READY=1 it asks /healthz at once and appends "healthz=CODE".
cat > "$T/receiver.py" << 'EOF'
import socket, struct, sys, time, urllib.request
path, out, port = sys.argv[1], sys.argv[2], sys.argv[3]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
with open(out, "a") as f:
    while True:
        data, anc, _, _ = s.recvmsg(4096, socket.CMSG_SPACE(12))
        pid = 0
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("iII", payload[:12])[0]
        msg = data.decode().replace("\n", "|")
        line = "%.3f %d %s" % (time.monotonic(), pid, msg)
        if msg == "READY=1":
            try:
                code = urllib.request.urlopen("http://127.0.0.1:%s/healthz" % port,
                                              timeout=5).status
            except Exception as e:
                code = getattr(e, "code", "none")
            line += " healthz=%s" % code
        f.write(line + "\n")
        f.flush()
EOF
start_bg receiver /usr/bin/python3 "$T/receiver.py" "$SOCK" "$MSGS" "$DAEMON_PORT"
wait_for 30 "[ -S '$SOCK' ]"

# count MESSAGE: how many times MESSAGE was received so far.
count() {
    n=$(grep -c " $1\( \|$\)" "$MSGS" 2> /dev/null)
    echo "${n:-0}"
}
# wait_count SECONDS MESSAGE N: until MESSAGE was received N times (fails at the deadline).
wait_count() {
    wc_deadline=$(( $(date +%s) + $1 ))
    until [ "$(count "$2")" -ge "$3" ]; do
        daemon_alive || fail "intentd exited while waiting for $2"
        [ "$(date +%s)" -ge "$wc_deadline" ] &&
            fail "timed out waiting for $3 x $2 (got $(count "$2"))"
        sleep 0.2
    done
}

# WATCHDOG_USEC=2s: pings every second.  WATCHDOG_PID must be the daemon's own PID, so the
# shell sets it to its $$ and then execs the daemon in place.
note "start with NOTIFY_SOCKET and WATCHDOG_USEC=2000000, no events"
DAEMON_LOG=$T/d.log
start_bg d env NOTIFY_SOCKET="$SOCK" WATCHDOG_USEC=2000000 \
    sh -c 'export WATCHDOG_PID=$$; exec "$@"' sh "$BIN/intentd" -c "$T/d.yaml"
DAEMON_PID=$LAST_PID
wait_count 60 READY=1 1
grep ' READY=1 ' "$MSGS" | head -1 | grep -q 'healthz=200' \
    || fail "READY=1 came before /healthz answered: $(grep READY "$MSGS")"
curl -s -o /dev/null -w '%{http_code}' "$(ld_url /readyz)" | grep -qx 503 \
    || fail "/readyz is not 503 with no events (no model yet)"
note "READY=1 with /healthz 200 and /readyz 503 (no model yet, as expected)"

wait_count 60 WATCHDOG=1 3
note "WATCHDOG=1 repeatedly ($(count WATCHDOG=1) so far)"

# A stalled trainer: the alive check fails (the trainer's heartbeat ages past its limit) and
# the pings stop; systemd would restart the service after WatchdogSec.
note "stall the trainer (SIGUSR1): the pings must stop"
kill -USR1 "$DAEMON_PID"
wait_for 60 "grep -q 'SIGUSR1' '$DAEMON_LOG'"
# Wait until no ping has arrived for 4 s (4 intervals): the heartbeat limit has passed.
quiet_for() { # quiet_for SECONDS: the last WATCHDOG=1 is older than SECONDS
    last=$(grep ' WATCHDOG=1$' "$MSGS" | tail -1 | cut -d' ' -f1)
    now=$(/usr/bin/python3 -c 'import time; print("%.3f" % time.monotonic())')
    awk -v l="$last" -v n="$now" -v s="$1" 'BEGIN { exit !(n - l >= s) }'
}
deadline=$(( $(date +%s) + 90 ))
until quiet_for 4; do
    daemon_alive || fail "intentd exited while stalled"
    [ "$(date +%s)" -ge "$deadline" ] && fail "WATCHDOG=1 kept coming while the trainer stalled"
    sleep 0.5
done
stalled=$(count WATCHDOG=1)
sleep 3
[ "$(count WATCHDOG=1)" -eq "$stalled" ] || fail "a WATCHDOG=1 arrived while stalled"
note "no WATCHDOG=1 while stalled"

note "resume (SIGUSR2): the pings come back"
kill -USR2 "$DAEMON_PID"
wait_count 60 WATCHDOG=1 $((stalled + 2))

note "SIGHUP: RELOADING=1 then READY=1"
kill -HUP "$DAEMON_PID"
wait_count 60 READY=1 2
grep -E ' (RELOADING=1|READY=1)' "$MSGS" | tail -2 | head -1 | grep -q 'RELOADING=1|MONOTONIC_USEC=' \
    || fail "no RELOADING=1 (with MONOTONIC_USEC) before the second READY=1"

note "SIGTERM: STOPPING=1, then exit 0"
daemon_stop 60 || fail "intentd did not stop cleanly: $DAEMON_RC"
wait_for 30 "grep -q ' STOPPING=1' '$MSGS'"

# The whole conversation: order, and every message from the daemon's PID.
/usr/bin/python3 - "$MSGS" << 'EOF' || { cat "$MSGS"; fail "wrong sd_notify sequence"; }
import sys
lines = [l.split(" ", 2) for l in open(sys.argv[1]).read().splitlines()]
pids = {int(pid) for _, pid, _ in lines}
assert len(pids) == 1 and 0 not in pids, "messages from several PIDs: %s" % pids
msgs = [m.split(" healthz=")[0] for _, _, m in lines]
kinds = [m.split("|")[0] for m in msgs]
assert kinds[0] == "READY=1", kinds[:3]
stop = kinds.index("STOPPING=1")
# A ping decided just before STOPPING=1 may still arrive after it; nothing else may.
assert all(k == "WATCHDOG=1" for k in kinds[stop + 1:]), kinds[stop:]
assert kinds.count("READY=1") == 2 and kinds.count("RELOADING=1") == 1, kinds
r = kinds.index("RELOADING=1")
assert kinds.index("READY=1", 1) > r
print("%d messages from PID %d: READY, %d WATCHDOG, RELOADING, READY, STOPPING"
      % (len(kinds), pids.pop(), kinds.count("WATCHDOG=1")))
EOF
echo "sd_notify: ok"
