#!/bin/sh
# The daemon inside the sandbox of systemd/intentd.service, as far as it can be rebuilt
# without systemd as PID 1: an unprivileged user with no capabilities and no_new_privs
# (DynamicUser=, CapabilityBoundingSet=, NoNewPrivileges=), and a seccomp filter built from
# the unit's own SystemCallFilter= lines, with SystemCallErrorNumber=EPERM and
# RestrictAddressFamilies= (socket() of another family fails with EAFNOSUPPORT, as systemd
# does it).  The daemon must start, learn, serve, reload and stop cleanly under it; and the
# filter must really refuse what the unit refuses (controls below).
. tests/integration/lib_daemon.sh
command -v systemd-analyze > /dev/null || { echo "systemd-analyze not installed"; exit 77; }
command -v setpriv > /dev/null || { echo "setpriv not installed"; exit 77; }
[ "$(id -u)" = 0 ] || { echo "needs root to switch to an unprivileged user"; exit 77; }
slow_test
ld_init
UNIT=systemd/intentd.service

# --- the allow-list: the unit's SystemCallFilter= lines, expanded by systemd itself ---
expand_set() { # expand_set NAME...: syscall names of the sets (and names) given, recursively
    for e in "$@"; do
        case $e in
        @*) systemd-analyze syscall-filter "$e" < /dev/null | sed -n 's/^    \([@a-z0-9_-]*\)$/\1/p' |
                while read -r x; do expand_set "$x"; done ;;
        *) echo "$e" ;;
        esac
    done
}
: > "$T/allow"
grep '^SystemCallFilter=' "$UNIT" | sed 's/^SystemCallFilter=//' > "$T/filter-lines"
while read -r line; do
    case $line in
    "~"*) expand_set ${line#\~} | sort -u > "$T/deny"
          sort -u "$T/allow" | comm -23 - "$T/deny" > "$T/allow.new"; mv "$T/allow.new" "$T/allow" ;;
    *) expand_set $line >> "$T/allow" ;;
    esac
done < "$T/filter-lines"
sort -u "$T/allow" -o "$T/allow"
[ "$(wc -l < "$T/allow")" -gt 200 ] || fail "the allow-list is suspiciously short"
grep -qx read "$T/allow" && ! grep -qx setpriority "$T/allow" && ! grep -qx mount "$T/allow" \
    || fail "the allow-list does not look like @system-service without @privileged @resources"
grep -qx 'SystemCallErrorNumber=EPERM' "$UNIT" || fail "the unit's error number is not EPERM"
grep -qx 'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6' "$UNIT" \
    || fail "the unit's address families changed; update this test"

# --- a tiny exec wrapper that installs the filter (classic BPF, no libseccomp) ---
for n in $(cat "$T/allow"); do printf '#ifdef __NR_%s\n__NR_%s,\n#endif\n' "$n" "$n"; done \
    > "$T/allowed.inc"
cat > "$T/sandbox-exec.c" << 'EOF'
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>
static const unsigned allowed[] = {
#include "allowed.inc"
};
#define N (sizeof allowed / sizeof allowed[0])
int main(int argc, char **argv)
{
    static struct sock_filter f[2 * N + 32];
    unsigned k = 0;
    f[k++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
                                          offsetof(struct seccomp_data, arch));
    f[k++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0);
    f[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS);
    f[k++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
                                          offsetof(struct seccomp_data, nr));
    /* socket(): only AF_UNIX, AF_INET, AF_INET6, else EAFNOSUPPORT */
    f[k++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_socket, 0, 6);
    f[k++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
                                          offsetof(struct seccomp_data, args[0]));
    f[k++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AF_UNIX, 3, 0);
    f[k++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AF_INET, 2, 0);
    f[k++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AF_INET6, 1, 0);
    f[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EAFNOSUPPORT);
    f[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    for (unsigned i = 0; i < N; i++) {
        f[k++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, allowed[i], 0, 1);
        f[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    }
    f[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM);
    struct sock_fprog prog = {.len = (unsigned short)k, .filter = f};
    if (argc < 2) return 2;
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
        perror("sandbox-exec: seccomp");
        return 2;
    }
    execv(argv[1], argv + 1);
    perror("sandbox-exec: exec");
    return 127;
}
EOF
cc -O2 -Wall -Werror -I"$T" -o "$T/sandbox-exec" "$T/sandbox-exec.c" || fail "cannot build the wrapper"
chmod 0755 "$T" "$T/sandbox-exec"
note "filter: $(wc -l < "$T/allow") allowed system calls from $(tr '\n' ' ' < "$T/filter-lines")"

# run_sandboxed CMD...: as nobody, no capabilities, no_new_privs, the filter.
run_sandboxed() {
    setpriv --reuid=nobody --regid=nogroup --clear-groups --inh-caps=-all --bounding-set=-all \
        --no-new-privs -- "$T/sandbox-exec" "$@"
}

# --- controls: the filter refuses what the unit refuses, and allows an ordinary program ---
run_sandboxed /bin/true || fail "the sandbox cannot even run /bin/true"
run_sandboxed /usr/bin/python3 -c '
import errno, os, socket
try:
    socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0); raise SystemExit("netlink allowed")
except OSError as e:
    assert e.errno == errno.EAFNOSUPPORT, e
try:
    os.setpriority(os.PRIO_PROCESS, 0, 5); raise SystemExit("setpriority (@resources) allowed")
except OSError as e:
    assert e.errno == errno.EPERM, e
try:
    os.setuid(65534); raise SystemExit("setuid (@privileged) allowed")
except OSError as e:
    assert e.errno == errno.EPERM, e
socket.socket(socket.AF_INET6, socket.SOCK_STREAM).close()
' || fail "the filter does not refuse what the unit refuses"
note "controls: AF_NETLINK -> EAFNOSUPPORT, setpriority and setuid -> EPERM, AF_INET6 allowed"

# --- the daemon in the sandbox: start, learn, serve, reload, stop ---
mkdir -p "$T/state" && chown nobody:nogroup "$T/state" && chmod 0700 "$T/state"
DAEMON_STATE=$T/state
DAEMON_PORT=$(free_port)
daemon_config "$T/d.yaml"
chmod 0644 "$T/d.yaml"
DAEMON_LOG=$T/d.log
start_bg d setpriv --reuid=nobody --regid=nogroup --clear-groups --inh-caps=-all \
    --bounding-set=-all --no-new-privs -- "$T/sandbox-exec" "$BIN/intentd" -c "$T/d.yaml"
DAEMON_PID=$LAST_PID
daemon_wait_healthy 60
grep "Operation not permitted\|not supported" "$DAEMON_LOG" && fail "a refused call surfaced"
note "replay 2000 labelled rows into the sandboxed daemon"
replay_run r "$T/d.yaml" --csv tests/data/online_shoppers_intention.csv --label Revenue \
    --positive TRUE --direct --limit 2000
daemon_wait_ready 120
curl -fs -X POST -d '{"features": {"PageValues": 12.5, "Month": "Nov"}}' "$(ld_url /v1/predict)" \
    | grep -q '"score"' || fail "predict failed in the sandbox"
curl -fs "$(ld_url /metrics)" | grep -q '^process_resident_memory_bytes [1-9]' \
    || fail "process metrics unreadable in the sandbox"
daemon_wait_metric intentd_checkpoint_last_success_timestamp_seconds 1 60
daemon_reload
wait_for 30 "grep -q 'reload' '$DAEMON_LOG'"
daemon_stop 60 || fail "the sandboxed daemon did not stop cleanly: $DAEMON_RC"
checkpoint_newest "$T/state" | grep -q . || fail "no checkpoint written in the sandbox"
[ "$(stat -c %U "$(checkpoint_newest "$T/state")")" = nobody ] || fail "checkpoint not owned by the user"
note "learned, served, checkpointed, reloaded and stopped (exit 0) inside the sandbox"
echo "systemd_sandbox: ok"
