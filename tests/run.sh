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

# Integration tests run TEST_JOBS at a time (default 2): each has its own ports, state
# folder and processes, and waits for conditions with generous deadlines, so they hold on a
# loaded machine.  The longest ones start first.
JOBS=${TEST_JOBS:-2}
SLOW_FIRST="crash_loop crash_joined rss broker_outage full_disk"
names=""
for n in $SLOW_FIRST; do [ -e "tests/integration/$n.sh" ] && names="$names $n"; done
for t in tests/integration/*.sh; do
    [ -e "$t" ] || continue
    n=$(basename "$t" .sh)
    case " $SLOW_FIRST lib " in *" $n "*) continue ;; esac
    names="$names $n"
done

run_one() { # NAME: runs one test in the background; its exit code lands in $log/NAME.rc
    (
        start=$(date +%s)
        timeout -k 10 900 sh "tests/integration/$1.sh" > "$log/$1.log" 2>&1
        rc=$?
        echo "$rc $(( $(date +%s) - start ))" > "$log/$1.rc.tmp" && mv "$log/$1.rc.tmp" "$log/$1.rc"
    ) &
}

report() { # NAME: prints the result of a finished test and counts it
    read rc secs < "$log/$1.rc"
    if [ "$rc" -eq 0 ]; then
        echo "PASS $1 (${secs}s)"; passed=$((passed + 1))
    elif [ "$rc" -eq 77 ]; then
        echo "SKIP $1 ($(tail -1 "$log/$1.log"))"; skipped=$((skipped + 1))
    else
        echo "FAIL $1 (exit $rc, ${secs}s); last lines of its log:"
        tail -40 "$log/$1.log" | sed 's/^/    /'
        failed=$((failed + 1)); failures="$failures $1"
    fi
}

running=""
reap() { # reports the finished tests; leaves the others in $running
    still=""
    for r in $running; do
        if [ -e "$log/$r.rc" ]; then report "$r"; else still="$still $r"; fi
    done
    running=$still
}
count() { echo $#; }

for name in $names; do
    if [ -n "$sel" ] && ! want "$name"; then continue; fi
    while [ "$(count $running)" -ge "$JOBS" ]; do sleep 0.5; reap; done
    run_one "$name"
    running="$running $name"
done
while [ -n "$running" ]; do sleep 0.5; reap; done
wait

[ $skipped -gt 0 ] && echo "($skipped skipped)"
[ -n "$failures" ] && echo "failed:$failures (logs in $log)"
[ -z "$failures" ] && rm -rf "$log"
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
