# `make run` (issue 4's acceptance): the daemon on the dev configuration with its embedded
# broker and the shipped CSV replayed into it.  Here CONFIG (read by tests/run-dev.sh) points
# at a copy of config/dev.yaml with a free port and this test's own state folder.  /readyz
# answers 200 within 30 s of the daemon's start, the README's own curl example (its port
# swapped) returns a JSON score, and a Ctrl-C — SIGINT to make's whole process group, as a
# terminal sends it — stops the replay and the daemon cleanly (final checkpoint, "stopped").
. tests/integration/lib.sh
mktemp_state > /dev/null
T=$LIB_T
PORT=$(free_port)
GROUP=""

# group_procs: "PID COMM" of every process in make's process group.
group_procs() { ps -e -o pid=,pgid=,comm= | awk -v g="$GROUP" '$2 == g { print $1, $3 }'; }

# Whatever is left of make's process group is killed by PID at exit (before lib.sh's cleanup).
mr_cleanup() {
    mr_rc=$?
    if [ -n "$GROUP" ]; then
        for p in $(group_procs | awk '{ print $1 }'); do kill -KILL "$p" 2> /dev/null; done
    fi
    (exit $mr_rc)
    lib_cleanup
}
trap mr_cleanup EXIT

sed -e "s|^state_dir: .*|state_dir: $T/state|" -e "s|^  listen: .*|  listen: 127.0.0.1:$PORT|" \
    "$TOP/config/dev.yaml" > "$T/dev.yaml"
grep -q "^state_dir: $T/state" "$T/dev.yaml" && grep -q "listen: 127.0.0.1:$PORT" "$T/dev.yaml" ||
    fail "could not rewrite config/dev.yaml (state_dir / http.listen lines changed?)"
"$BIN/intentd" --check-config -c "$T/dev.yaml" || fail "the rewritten dev.yaml is invalid"

note "make run (CONFIG=$T/dev.yaml) in a process group of its own"
# A background job of a non-interactive shell ignores SIGINT (POSIX), and so would make and
# everything under it: start make as a terminal would, as a group leader with SIGINT default.
# SAN (not BUILD) is passed on, so the Makefile picks the build folder with matching flags.
t0=$(date +%s)
CONFIG="$T/dev.yaml" /usr/bin/python3 -c '
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)
signal.signal(signal.SIGQUIT, signal.SIG_DFL)
os.setpgid(0, 0)
os.execvp("make", ["make", "--no-print-directory", "-C", sys.argv[1], "run",
                   "SAN=" + sys.argv[2]])' "$TOP" "${SAN:-}" > "$T/make.log" 2>&1 &
MAKE_PID=$!
GROUP=$MAKE_PID
LIB_PIDS="$LIB_PIDS $MAKE_PID"

# make first runs `make all` (a no-op after `make test` built everything, a build otherwise).
wait_for 600 "grep -q 'main: intentd .* serving on http://127.0.0.1:$PORT' '$T/make.log'"
t_daemon=$(date +%s)
deadline=$((t_daemon + 30))
until curl -fs -o /dev/null "http://127.0.0.1:$PORT/readyz"; do
    kill -0 "$MAKE_PID" 2> /dev/null || fail "make run exited before /readyz 200"
    [ "$(date +%s)" -ge "$deadline" ] && fail "/readyz not 200 within 30 s of the daemon's start"
    sleep 0.2
done
t_ready=$(date +%s)
echo "/readyz 200 $((t_ready - t_daemon)) s after the daemon started" \
    "($((t_ready - t0)) s after make run)"
grep -q 'Score: *curl' "$T/make.log" || fail "make run did not print the curl example"

note "the README's curl example returns a score"
# The README's example, exactly as written there, with only its port swapped for ours.
/usr/bin/python3 - "$TOP/README.md" "$PORT" > "$T/readme-curl.sh" << 'EOF' ||
import re, sys
text = open(sys.argv[1]).read()
for block in re.findall(r"```sh\n(.*?)```", text, re.S):
    if "/v1/predict" in block and block.lstrip().startswith("curl"):
        print(block.replace("127.0.0.1:8080", "127.0.0.1:" + sys.argv[2]).strip())
        sys.exit(0)
sys.exit("no curl example for /v1/predict in README.md")
EOF
    fail "README.md has no curl example"
sh "$T/readme-curl.sh" > "$T/score.json" ||
    fail "the README's curl failed: $(cat "$T/readme-curl.sh")"
/usr/bin/python3 - "$T/score.json" << 'EOF' || fail "not a score: $(cat "$T/score.json")"
import json, sys
r = json.load(open(sys.argv[1]))
assert 0.0 <= r["score"] <= 1.0 and r["model_version"] >= 1, r
print("README example:", json.dumps(r))
EOF

note "Ctrl-C: SIGINT to make's process group stops the replay and the daemon"
daemon=$(group_procs | awk '$2 == "intentd" { print $1 }')
replay=$(group_procs | awk '$2 == "intentd-replay" { print $1 }')
[ -n "$daemon" ] && [ -n "$replay" ] || fail "no intentd ($daemon) or replay ($replay) under make"
kill -INT "-$GROUP"
deadline=$(( $(date +%s) + 60 ))
while [ -n "$(group_procs)" ]; do
    [ "$(date +%s)" -ge "$deadline" ] &&
        fail "still running 60 s after Ctrl-C: $(group_procs | tr '\n' ' ')"
    sleep 0.2
done
wait "$MAKE_PID" 2> /dev/null
grep -q 'main: SIG\(TERM\|INT\): stopping' "$T/make.log" || fail "the daemon was not asked to stop"
grep -q 'main: stopped in ' "$T/make.log" || fail "the daemon did not stop cleanly"
grep -q 'did not become durable' "$T/make.log" && fail "the final checkpoint was not durable"
grep -q '^intentd stopped\.' "$T/make.log" || fail "run-dev.sh did not finish its stop"
grep -q 'replay: interrupted' "$T/state/replay.log" || fail "the replay was not stopped"
ls "$T/state" | grep -q '^checkpoint-.*\.ck$' || fail "no checkpoint written at the stop"
echo ok
