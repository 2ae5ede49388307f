#!/bin/sh
# The systemd unit as `make install` installs it: `systemd-analyze verify` passes on the unit
# inside a DESTDIR tree (ExecStart's program must exist there), ExecStart follows PREFIX and
# SYSCONFDIR, and `systemd-analyze security --offline=yes` rates its exposure 2.0 or less.
. tests/integration/lib.sh
command -v systemd-analyze > /dev/null || { echo "systemd-analyze not installed"; exit 77; }
if [ -n "${SAN:-}" ]; then echo "nothing sanitizer-specific, skipped under SAN=$SAN"; exit 77; fi
T=$(mktemp_state)

# install_tree DIR make-args...: `make install` into DIR, quietly unless it fails.
install_tree() {
    dir=$1; shift
    make --no-print-directory -s install DESTDIR="$dir" "$@" > "$T/install.log" 2>&1 \
        || { cat "$T/install.log"; fail "make install DESTDIR=$dir $* failed"; }
}

# verify_in_root ROOT UNIT: `systemd-analyze verify --root=ROOT UNIT` must exit 0 and print
# nothing (unknown keys and bad values are only warnings, with exit status 0).  systemd
# resolves ExecStart= and ExecReload= inside ROOT and needs the units the service depends on
# by default, so a scratch copy of the tree gets sysinit.target and kill from the host.
verify_in_root() {
    root=$1 unit=$2
    rm -rf "$root.verify" && cp -a "$root" "$root.verify" || fail "cannot copy $root"
    v=$root.verify
    mkdir -p "$v/lib/systemd/system" "$v/bin"
    for d in /lib/systemd/system /usr/lib/systemd/system; do
        [ -f "$d/sysinit.target" ] && { cp "$d/sysinit.target" "$v/lib/systemd/system/"; break; }
    done
    cp /bin/kill "$v/bin/kill" || fail "no /bin/kill on this host"
    out=$(systemd-analyze verify --root="$v" "$unit" 2>&1)
    rc=$?
    [ -n "$out" ] && echo "$out"
    [ $rc -eq 0 ] && [ -z "$out" ]
}

# 1. The default tree: PREFIX=/usr/local, SYSCONFDIR=/etc, UNITDIR=/lib/systemd/system.
note "make install DESTDIR=$T/root"
install_tree "$T/root"
UNIT=/lib/systemd/system/intentd.service
[ -f "$T/root$UNIT" ] || fail "the unit is not at $UNIT in the tree"
grep -qx 'ExecStart=/usr/local/bin/intentd -c /etc/intentd/intentd.yaml' "$T/root$UNIT" \
    || fail "ExecStart does not name PREFIX/bin/intentd: $(grep '^ExecStart=' "$T/root$UNIT")"
grep -qx 'Type=notify' "$T/root$UNIT" || fail "the unit is not Type=notify"
grep -qx 'WatchdogSec=30s' "$T/root$UNIT" || fail "no WatchdogSec"
note "systemd-analyze verify --root (default PREFIX)"
verify_in_root "$T/root" "$UNIT" || fail "systemd-analyze verify failed on the installed unit"

# The check can fail: without the program in the tree, verify must refuse the unit.
rm "$T/root.verify/usr/local/bin/intentd"
out=$(systemd-analyze verify --root="$T/root.verify" "$UNIT" 2>&1) \
    && fail "verify accepted a unit whose ExecStart program is missing"
echo "$out" | grep -q 'not executable' || fail "unexpected verify output: $out"
note "verify refuses a missing ExecStart program, as it should"

# 2. Another PREFIX and SYSCONFDIR: the install target rewrites both paths in the unit.
note "make install PREFIX=/opt/intentd SYSCONFDIR=/etc/opt"
install_tree "$T/opt" PREFIX=/opt/intentd SYSCONFDIR=/etc/opt
grep -qx 'ExecStart=/opt/intentd/bin/intentd -c /etc/opt/intentd/intentd.yaml' "$T/opt$UNIT" \
    || fail "ExecStart not rewritten for PREFIX: $(grep '^ExecStart=' "$T/opt$UNIT")"
grep -q '/usr/local/' "$T/opt$UNIT" && fail "a /usr/local/ path survived the rewrite"
[ -x "$T/opt/opt/intentd/bin/intentd" ] || fail "intentd not installed under PREFIX"
[ -f "$T/opt/etc/opt/intentd/intentd.yaml" ] || fail "configuration not under SYSCONFDIR"
verify_in_root "$T/opt" "$UNIT" || fail "systemd-analyze verify failed with PREFIX=/opt/intentd"

# 3. The sandbox: systemd's own exposure score (0 = locked down, 10 = unprotected).
note "systemd-analyze security --offline=yes"
systemd-analyze security --offline=yes "$T/root$UNIT" > "$T/security.txt" 2>&1
grep -E '✗|Overall' "$T/security.txt"
exposure=$(sed -n 's/.*Overall exposure level for intentd.service: \([0-9.]*\).*/\1/p' \
    "$T/security.txt")
[ -n "$exposure" ] || { cat "$T/security.txt"; fail "no exposure figure in the output"; }
awk -v e="$exposure" 'BEGIN { exit !(e <= 2.0) }' || fail "exposure $exposure is above 2.0"
# The same bound through systemd's own threshold (on its 0-100 scale).
systemd-analyze security --offline=yes --threshold=20 "$T/root$UNIT" > /dev/null 2>&1 \
    || fail "systemd-analyze security --threshold=20 failed"
note "exposure $exposure (at most 2.0)"
echo "systemd: ok"
