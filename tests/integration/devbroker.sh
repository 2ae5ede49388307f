# intentd-devbroker: bootstrap line and file, topics and partitions, produce/consume, the
# SIGUSR1/SIGUSR2 down/up cycle, a clean stop on SIGTERM, and its option errors.
. tests/integration/lib.sh
mktemp_state > /dev/null; T=$LIB_T  # not T=$(...): LIB_T must be set in this shell
# The failure again in a log that sorts last, so that it shows after the dumped logs.
fail() { echo "FAIL: $*" >&2; echo "FAIL: $*" > "$T/zz-failure.log"; exit 1; }
command -v kcat > /dev/null || { echo "kcat not installed"; exit 77; }
DB="$BIN/intentd-devbroker"

# Option errors exit 2; --help exits 0 and documents the fault signals.
"$DB" --bogus > /dev/null 2>&1; [ $? -eq 2 ] || fail "a bad option should exit 2"
"$DB" --partitions 0 > /dev/null 2>&1; [ $? -eq 2 ] || fail "--partitions 0 should exit 2"
"$DB" --topics a,,b > /dev/null 2>&1; [ $? -eq 2 ] || fail "--topics a,,b should exit 2"
"$DB" --help | grep -q SIGUSR1 || fail "--help does not mention SIGUSR1"

note "defaults: three topics of 4 partitions"
start_bg db1 "$DB" --bootstrap-file "$T/brokers"
DB1=$LAST_PID
wait_for 30 "head -1 '$T/db1.log' | grep -q '^bootstrap: 127.0.0.1:[0-9]*$'"
BS=$(head -1 "$T/db1.log" | sed 's/^bootstrap: //')
[ "$(cat "$T/brokers")" = "$BS" ] || fail "bootstrap file '$(cat "$T/brokers")' != '$BS'"
ls "$T" | grep -q 'brokers\.tmp' && fail "temporary bootstrap file left behind"
kcat -b "$BS" -L -m 20 > "$T/meta1" 2>&1 || fail "kcat -L failed: $(cat "$T/meta1")"
for t in intentd.clicks intentd.transactions intentd.dead-letter; do
    grep -q "topic \"$t\" with 4 partitions" "$T/meta1" || fail "topic $t missing: $(cat "$T/meta1")"
done

note "produce and consume a keyed message"
echo 's-1:{"session_id":"s-1"}' | kcat -b "$BS" -P -t intentd.clicks -K: -m 20 ||
    fail "kcat -P failed"
got=$(kcat -b "$BS" -C -t intentd.clicks -e -q -m 20 -f '%k %s\n')
[ "$got" = 's-1 {"session_id":"s-1"}' ] || fail "consumed '$got'"

note "SIGUSR1 takes it down, SIGUSR2 brings it back with the data"
kill -USR1 "$DB1"
wait_for 30 "grep -q 'SIGUSR1: broker down' '$T/db1.log'"
kcat -b "$BS" -L -m 2 > "$T/meta-down" 2>&1 && fail "metadata answered while down"
kill -USR2 "$DB1"
wait_for 30 "grep -q 'SIGUSR2: broker up' '$T/db1.log'"
wait_for 30 "kcat -b '$BS' -L -m 5"
n=$(kcat -b "$BS" -C -t intentd.clicks -e -q -m 20 | wc -l)
[ "$n" -eq 1 ] || fail "after down/up the topic holds $n messages, not 1"

note "SIGTERM stops it with exit 0"
kill -TERM "$DB1"
wait "$DB1"; rc=$?
[ $rc -eq 0 ] || fail "devbroker exited $rc on SIGTERM"
grep -q 'SIGTERM: stopping' "$T/db1.log" || fail "no stop line"

note "--partitions and --topics"
start_bg db2 "$DB" --partitions 7 --topics x.one,x.two
DB2=$LAST_PID
wait_for 30 "head -1 '$T/db2.log' | grep -q '^bootstrap: '"
BS2=$(head -1 "$T/db2.log" | sed 's/^bootstrap: //')
kcat -b "$BS2" -L -m 20 > "$T/meta2" 2>&1 || fail "kcat -L failed"
grep -q 'topic "x.one" with 7 partitions' "$T/meta2" || fail "x.one: $(cat "$T/meta2")"
grep -q 'topic "x.two" with 7 partitions' "$T/meta2" || fail "x.two: $(cat "$T/meta2")"
grep -q 'intentd.clicks' "$T/meta2" && fail "default topics created despite --topics"
kill -INT "$DB2"
wait "$DB2"; rc=$?
[ $rc -eq 0 ] || fail "devbroker exited $rc on SIGINT"
echo "ok"
