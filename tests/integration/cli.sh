#!/bin/sh
# cli.sh — intentd's command line: --check-config, --print-config (and its round trip),
# FILE:LINE:COL errors with exit 1, --version, --help, and exit 2 for a bad command line.
# It never starts the daemon proper.
. tests/integration/lib.sh
T=$(mktemp_state)
D="$BIN/intentd"
[ -x "$D" ] || fail "$D not built"

# expect_error WANT_RC FILE-ARGS... ; then the fragments to find on stderr are in $WANT
run() {
    "$D" "$@" > "$T/out" 2> "$T/err"
    echo $?
}
has() { grep -qF -- "$1" "$T/$2" || fail "$2 of intentd lacks '$1': $(cat "$T/$2")"; }

note "the reference and dev configurations are valid, and --check-config is silent"
for f in config/intentd.yaml config/dev.yaml; do
    rc=$(run --check-config -c "$f")
    [ "$rc" = 0 ] || fail "--check-config -c $f exited $rc: $(cat "$T/err")"
    [ -s "$T/out" ] && fail "--check-config printed on stdout: $(cat "$T/out")"
    [ -s "$T/err" ] && fail "--check-config printed on stderr: $(cat "$T/err")"
done
rc=$(run --check-config --config=config/intentd.yaml)
[ "$rc" = 0 ] || fail "--config=FILE form exited $rc"

note "--print-config round trip: print, check, print again, identical"
"$D" --print-config -c config/intentd.yaml > "$T/p1.yaml" || fail "--print-config failed"
grep -q '^  - {name: PageValues, type: numeric, transform: log1p}' "$T/p1.yaml" ||
    fail "features not printed in flow style"
grep -q '^  ema_decay: ' "$T/p1.yaml" || fail "model.ema_decay missing from --print-config"
rc=$(run --check-config -c "$T/p1.yaml")
[ "$rc" = 0 ] || fail "the printed configuration does not check: $(cat "$T/err")"
"$D" --print-config -c "$T/p1.yaml" > "$T/p2.yaml" || fail "second --print-config failed"
cmp "$T/p1.yaml" "$T/p2.yaml" || fail "print-config does not round-trip: $(diff "$T/p1.yaml" "$T/p2.yaml")"
# and the keys are all there: 17 features, every section
[ "$(grep -c '^  - {name: ' "$T/p1.yaml")" = 17 ] || fail "expected 17 features printed"
for s in kafka features labels model optimizer training evaluation snapshot checkpoint http; do
    grep -q "^$s:" "$T/p1.yaml" || fail "section $s missing from --print-config"
done

note "secrets in kafka.properties print as <redacted>"
cat > "$T/secret.yaml" <<EOF
kafka:
  properties:
    sasl.username: alice
    sasl.password: hunter2
EOF
"$D" --print-config -c "$T/secret.yaml" > "$T/ps.yaml" || fail "--print-config secret.yaml failed"
grep -q hunter2 "$T/ps.yaml" && fail "the password was printed"
grep -qF 'sasl.password: <redacted>' "$T/ps.yaml" || fail "no <redacted> in: $(cat "$T/ps.yaml")"
grep -qF 'sasl.username: alice' "$T/ps.yaml" || fail "a non-secret was hidden"

# bad_line7 NAME LINE7 KEY: a file whose 7th line is LINE7 fails with exit 1, FILE:7:COL and KEY
bad_line7() {
    cat > "$T/$1.yaml" <<EOF
state_dir: $T/state
log_level: info
kafka:
  brokers: embedded
  group_id: intentd
training:
$2
EOF
    rc=$(run --check-config -c "$T/$1.yaml")
    [ "$rc" = 1 ] || fail "$1: --check-config exited $rc, expected 1"
    has "$T/$1.yaml:7:" err
    has "$3" err
    [ "$(wc -l < "$T/err")" = 1 ] || fail "$1: expected one line on stderr: $(cat "$T/err")"
    [ -s "$T/out" ] && fail "$1: printed on stdout"
    return 0
}
note "an unknown key, a wrong type and an out-of-range value on line 7"
bad_line7 unknown "  batch_sizee: 64" "training.batch_sizee"
has "unknown key" err
bad_line7 type "  batch_size: lots" "training.batch_size"
has "expected an integer" err
bad_line7 range "  batch_size: 0" "training.batch_size"
has "out of range" err
bad_line7 duration "  max_batch_wait: 200" "training.max_batch_wait"
has "invalid duration" err
# --print-config validates too
rc=$(run --print-config -c "$T/range.yaml")
[ "$rc" = 1 ] || fail "--print-config on an invalid file exited $rc"

note "missing file, a folder instead of a file, malformed YAML"
rc=$(run --check-config -c "$T/nope.yaml")
[ "$rc" = 1 ] || fail "missing file: exit $rc"
has "$T/nope.yaml:1:1: " err
has "No such file" err
mkdir "$T/dir.yaml"
rc=$(run --check-config -c "$T/dir.yaml")
[ "$rc" = 1 ] || fail "directory: exit $rc"
has "$T/dir.yaml:1:1: " err
printf 'kafka:\n  brokers: [a, b\n' > "$T/broken.yaml"
rc=$(run --check-config -c "$T/broken.yaml")
[ "$rc" = 1 ] || fail "malformed YAML: exit $rc"
has "$T/broken.yaml:" err
has "malformed YAML" err

note "--version and --help"
version=$(sed -n 's/^VERSION *:= *//p' Makefile)
rc=$(run --version)
[ "$rc" = 0 ] || fail "--version exited $rc"
[ "$(cat "$T/out")" = "intentd $version" ] || fail "--version printed '$(cat "$T/out")'"
rc=$(run -V)
[ "$rc" = 0 ] && [ "$(cat "$T/out")" = "intentd $version" ] || fail "-V"
for h in --help -h; do
    rc=$(run $h)
    [ "$rc" = 0 ] || fail "$h exited $rc"
    has "Usage: intentd" out
    has "--check-config" out
    has "--print-config" out
    has "/etc/intentd/intentd.yaml" out
done

note "a bad command line exits 2 with a message and a hint"
for args in "--bogus" "-x" "--check-config stray" "-c" "--config" "--version=1"; do
    # shellcheck disable=SC2086 # split on purpose
    rc=$(run $args)
    [ "$rc" = 2 ] || fail "'intentd $args' exited $rc, expected 2"
    has "intentd: " err
    has "Try 'intentd --help'" err
    [ -s "$T/out" ] && fail "'intentd $args' printed on stdout"
done
run --bogus > /dev/null
has "'--bogus'" err
run -x > /dev/null
has "'-x'" err
run -c > /dev/null
has "needs an argument" err
exit 0
