#!/bin/sh
# The test runner behind `make test`: the unit tests (each in its own process), then every
# tests/integration/*.sh (each with its own ports and state folder), summed up in one last
# line "N passed, N failed".  Arguments select: "unit", or integration test names.
# An integration test that exits 77 is skipped (for instance a slow one in a sanitizer pass).
BUILD=${BUILD:-build}
export BUILD SAN
export INTENTD_TOP=$(pwd)
passed=0 failed=0 skipped=0
failures=""
log=$(mktemp -d "${TMPDIR:-/tmp}/intentd-test-XXXXXX")
sel="$*"

want() { [ -z "$sel" ] && return 0; for s in $sel; do [ "$s" = "$1" ] && return 0; done; return 1; }

if want unit; then
    "$BUILD/unit-tests" > "$log/unit.out" 2> "$log/unit.err"
    grep -E '^(PASS|FAIL) ' "$log/unit.out" | sed 's/^/unit: /'
    p=$(grep -c '^PASS ' "$log/unit.out"); f=$(grep -c '^FAIL ' "$log/unit.out")
    if ! tail -1 "$log/unit.out" | grep -q ' passed, '; then
        f=$((f + 1)); echo "unit: the runner did not finish"
    fi
    [ -s "$log/unit.err" ] && [ "$f" -gt 0 ] && sed 's/^/    /' "$log/unit.err"
    passed=$((passed + p)); failed=$((failed + f))
    [ "$f" -gt 0 ] && failures="$failures unit"
fi

for t in tests/integration/*.sh; do
    [ -e "$t" ] || continue
    name=$(basename "$t" .sh)
    [ "$name" = lib ] && continue
    if [ -n "$sel" ] && ! want "$name"; then continue; fi
    start=$(date +%s)
    timeout -k 10 900 sh "$t" > "$log/$name.log" 2>&1
    rc=$?
    secs=$(( $(date +%s) - start ))
    if [ $rc -eq 0 ]; then
        echo "PASS $name (${secs}s)"; passed=$((passed + 1))
    elif [ $rc -eq 77 ]; then
        echo "SKIP $name ($(tail -1 "$log/$name.log"))"; skipped=$((skipped + 1))
    else
        echo "FAIL $name (exit $rc, ${secs}s); last lines of its log:"
        tail -40 "$log/$name.log" | sed 's/^/    /'
        failed=$((failed + 1)); failures="$failures $name"
    fi
done

[ $skipped -gt 0 ] && echo "($skipped skipped)"
[ -n "$failures" ] && echo "failed:$failures (logs in $log)"
[ -z "$failures" ] && rm -rf "$log"
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
