# intentd-replay against intentd-devbroker: CSV rows become typed click events plus a
# transaction per positive, --direct, --jsonl routing, --rate pacing, --shuffle, --loop with
# SIGTERM, a broker down/up cycle, and a dead broker address failing in bounded time.
. tests/integration/lib.sh
mktemp_state > /dev/null; T=$LIB_T  # not T=$(...): LIB_T must be set in this shell
# The failure again in a log that sorts last, so that it shows after the dumped logs.
fail() { echo "FAIL: $*" >&2; echo "FAIL: $*" > "$T/zz-failure.log"; exit 1; }
command -v kcat > /dev/null || { echo "kcat not installed"; exit 77; }
DB="$BIN/intentd-devbroker"
R="$BIN/intentd-replay"
CSV="$TOP/tests/data/online_shoppers_intention.csv"

# devbroker NAME [ARGS...]: starts a broker, sets $BS (bootstrap) and $DBPID.
devbroker() {
    n=$1; shift
    start_bg "$n" "$DB" --bootstrap-file "$T/$n.brokers" "$@"
    DBPID=$LAST_PID
    wait_for 30 "test -s '$T/$n.brokers'"
    BS=$(cat "$T/$n.brokers")
}
# count BROKERS TOPIC: messages on the topic.
count() { kcat -b "$1" -C -t "$2" -e -q -m 20 | wc -l; }
# summary LOG: the numbers of the last "replay: delivered" line, as "total clicks txns failed".
summary() {
    grep 'replay: delivered' "$1" | tail -1 |
        sed 's/.*delivered \([0-9]*\) events (\([0-9]*\) clicks, \([0-9]*\) transactions), \([0-9]*\) failed.*/\1 \2 \3 \4/'
}

# The full schema of the shipped data set (17 features).
cat > "$T/full.yaml" <<'EOF'
features:
  - {name: Administrative, type: numeric}
  - {name: Administrative_Duration, type: numeric, transform: log1p}
  - {name: Informational, type: numeric}
  - {name: Informational_Duration, type: numeric, transform: log1p}
  - {name: ProductRelated, type: numeric}
  - {name: ProductRelated_Duration, type: numeric, transform: log1p}
  - {name: BounceRates, type: numeric}
  - {name: ExitRates, type: numeric}
  - {name: PageValues, type: numeric, transform: log1p}
  - {name: SpecialDay, type: numeric}
  - {name: Month, type: categorical, buckets: 16}
  - {name: OperatingSystems, type: categorical, buckets: 16}
  - {name: Browser, type: categorical, buckets: 16}
  - {name: Region, type: categorical, buckets: 16}
  - {name: TrafficType, type: categorical, buckets: 32}
  - {name: VisitorType, type: categorical, buckets: 4}
  - {name: Weekend, type: boolean}
EOF

note "usage errors exit 2"
"$R" > /dev/null 2>&1; [ $? -eq 2 ] || fail "no input should exit 2"
"$R" --csv "$CSV" > /dev/null 2>&1; [ $? -eq 2 ] || fail "--csv without --label should exit 2"
"$R" --csv "$CSV" --label Revenue --rate -1 > /dev/null 2>&1; [ $? -eq 2 ] || fail "--rate -1"
"$R" --help | grep -q -- '--jsonl' || fail "--help does not describe --jsonl"
"$R" --csv "$CSV" --label Revenue -X linger.ms > /dev/null 2>&1; [ $? -eq 2 ] || fail "-X without ="
"$R" --brokers 127.0.0.1:1 --csv "$CSV" --label Revenue -X no.such.property=1 > "$T/x.log" 2>&1
[ $? -eq 1 ] && grep -q 'no.such.property' "$T/x.log" || fail "an unknown -X property: $(cat "$T/x.log")"
"$R" --brokers 127.0.0.1:1 --csv "$CSV" --label Nope > "$T/nolabel.log" 2>&1
[ $? -eq 1 ] || fail "an unknown --label column should exit 1"
grep -q 'no column "Nope"' "$T/nolabel.log" || fail "no message about the label column"

note "CSV, 500 rows: one click per row, one transaction per positive, same partition"
devbroker db1
POS=$(awk -F, 'NR > 1 && NR <= 501 { sub(/\r$/, ""); if ($NF == "TRUE") p++ } END { print p + 0 }' "$CSV")
[ "$POS" -gt 0 ] || fail "no positive row among the first 500 (data file changed?)"
"$R" --brokers "@$T/db1.brokers" --config "$T/full.yaml" --csv "$CSV" --label Revenue \
    --limit 500 > "$T/r1.log" 2>&1 || fail "replay exited $?: $(tail -3 "$T/r1.log")"
[ "$(summary "$T/r1.log")" = "$((500 + POS)) 500 $POS 0" ] ||
    fail "summary '$(summary "$T/r1.log")', expected $((500 + POS)) 500 $POS 0"
[ "$(count "$BS" intentd.clicks)" -eq 500 ] || fail "clicks on the topic: $(count "$BS" intentd.clicks)"
[ "$(count "$BS" intentd.transactions)" -eq "$POS" ] || fail "transactions on the topic"
kcat -b "$BS" -C -t intentd.clicks -e -q -f '%k %p %T %s\n' > "$T/clicks1"
kcat -b "$BS" -C -t intentd.transactions -e -q -f '%k %p %T %s\n' > "$T/txns1"
/usr/bin/python3 - "$T/clicks1" "$T/txns1" <<'EOF' || fail "event check failed"
import json, sys
types = {"Month": str, "OperatingSystems": str, "Browser": str, "Region": str,
         "TrafficType": str, "VisitorType": str, "Weekend": bool}
def events(path):
    for line in open(path):
        key, part, kts, js = line.rstrip("\n").split(" ", 3)
        yield key, int(part), int(kts), json.loads(js)
clicks = {}
for key, part, kts, e in events(sys.argv[1]):
    assert e["session_id"] == key, (key, e)
    assert key not in clicks, "duplicate session " + key
    assert e["ts"] <= kts + 60000, "click ahead of the wall clock: %r" % e
    f = e["features"]
    assert len(f) == 17 and "Revenue" not in f, f
    for name, v in f.items():
        want = types.get(name, (int, float))
        assert isinstance(v, want) and not (want != bool and isinstance(v, bool)), (name, v)
    assert "label" not in e
    clicks[key] = (part, e["ts"])
n = 0
for key, part, kts, e in events(sys.argv[2]):
    assert set(e) == {"session_id", "ts", "order_id", "amount"}, e
    assert e["session_id"] == key and key in clicks, key
    cpart, cts = clicks[key]
    assert part == cpart, "click and transaction of %s in partitions %d, %d" % (key, cpart, part)
    assert 0 < e["ts"] - cts <= 60000, (cts, e)
    assert e["amount"] > 0
    n += 1
ts = sorted(t for _, t in clicks.values())
assert ts[-1] - ts[0] >= 400 * 1000, "event time does not advance through the file"
print("checked %d clicks, %d transactions" % (len(clicks), n))
EOF

note "the whole file: 12330 clicks, 1908 transactions, each partition well under 5 MiB"
devbroker dbfull
"$R" --brokers "$BS" --config "$T/full.yaml" --csv "$CSV" --label Revenue > "$T/rfull.log" 2>&1 ||
    fail "full replay exited $?"
[ "$(summary "$T/rfull.log")" = "14238 12330 1908 0" ] || fail "full summary '$(summary "$T/rfull.log")'"
[ "$(count "$BS" intentd.clicks)" -eq 12330 ] || fail "full: clicks on the topic"
[ "$(count "$BS" intentd.transactions)" -eq 1908 ] || fail "full: transactions on the topic"
kcat -b "$BS" -C -t intentd.clicks -e -q -f '%p %S\n' |
    awk '{ b[$1] += $2 } END { for (p in b) { print "partition " p ": " b[p] " bytes"; if (b[p] > 4 * 1048576) bad = 1 } exit bad }' ||
    fail "a partition holds more than 4 MiB of clicks from one pass"
kill -TERM "$DBPID"

note "typing: empty cells omitted, quoted fields, CRLF, --positive"
printf 'n,c,b,y\r\n1.5,"a,b",TRUE,yes\r\n,7,0,no\r\n2e3,,false,yes\r\n' > "$T/small.csv"
cat > "$T/small.yaml" <<'EOF'
features:
  - {name: n, type: numeric}
  - {name: c, type: categorical, buckets: 4}
  - {name: b, type: boolean}
EOF
devbroker db2 --partitions 1
"$R" --brokers "$BS" --config "$T/small.yaml" --csv "$T/small.csv" --label y --positive yes \
    --direct > "$T/r2.log" 2>&1 || fail "small replay exited $?"
kcat -b "$BS" -C -t intentd.clicks -e -q | sed 's/.*"features"://' > "$T/small.out"
printf '%s\n' '{"n":1.5,"c":"a,b","b":true},"label":1}' '{"c":"7","b":false},"label":0}' \
    '{"n":2e3,"b":false},"label":1}' > "$T/small.want"
cmp "$T/small.out" "$T/small.want" || fail "typed events: $(cat "$T/small.out")"
# The mock auto-creates an unknown topic with 4 partitions, whatever --partitions says.
printf 'kafka:\n  clicks_topic: other.clicks\n' | cat - "$T/small.yaml" > "$T/other.yaml"
"$R" --brokers "$BS" --config "$T/other.yaml" --csv "$T/small.csv" --label y --positive yes \
    > "$T/r2b.log" 2>&1 || fail "replay to an auto-created topic exited $?"
grep -q 'other.clicks has 4 partitions but intentd.transactions has 1' "$T/r2b.log" ||
    fail "no warning about unequal partition counts: $(cat "$T/r2b.log")"
printf 'n,c,b,y\nabc,x,true,yes\n' > "$T/bad.csv"
"$R" --brokers "$BS" --config "$T/small.yaml" --csv "$T/bad.csv" --label y > "$T/r3.log" 2>&1
[ $? -eq 1 ] || fail "a non-numeric cell should exit 1"
grep -q 'row 1, column n' "$T/r3.log" || fail "no message naming the bad cell: $(cat "$T/r3.log")"

note "--direct: labels in the clicks, no transactions"
devbroker db3
"$R" --brokers "$BS" --csv "$CSV" --label Revenue --limit 500 --direct > "$T/r4.log" 2>&1 ||
    fail "direct replay exited $?"
[ "$(summary "$T/r4.log")" = "500 500 0 0" ] || fail "direct summary '$(summary "$T/r4.log")'"
n1=$(kcat -b "$BS" -C -t intentd.clicks -e -q | grep -c '"label":1}$')
n0=$(kcat -b "$BS" -C -t intentd.clicks -e -q | grep -c '"label":0}$')
[ "$n1" -eq "$POS" ] && [ "$n0" -eq $((500 - POS)) ] || fail "labels: $n1 positive, $n0 negative"
[ "$(count "$BS" intentd.transactions)" -eq 0 ] || fail "--direct sent transactions"

note "--jsonl: lines unchanged, routed by order_id"
printf '%s\r\n' '{"session_id":"j-1","features":{"Month":"May"}}' > "$T/ev.jsonl"
printf '%s\n' '' '{"session_id":"j-1","ts":5,"order_id":"o-1","amount":3}' 'not json' \
    '{"session_id":"j-2","features":{}}' '[1,2]' '{"order_id":"o-2"}' >> "$T/ev.jsonl"
"$R" --brokers "$BS" --jsonl "$T/ev.jsonl" > "$T/r5.log" 2>&1 || fail "jsonl replay exited $?"
[ "$(summary "$T/r5.log")" = "6 4 2 0" ] || fail "jsonl summary '$(summary "$T/r5.log")'"
kcat -b "$BS" -C -t intentd.transactions -e -q | sort > "$T/jt"
printf '%s\n' '{"order_id":"o-2"}' '{"session_id":"j-1","ts":5,"order_id":"o-1","amount":3}' |
    sort | cmp - "$T/jt" || fail "transactions: $(cat "$T/jt")"
kcat -b "$BS" -C -t intentd.clicks -e -q -f '%k|%s\n' | grep -c '^j-1|{"session_id":"j-1","features":{"Month":"May"}}$' |
    grep -q '^1$' || fail "the first line was not sent unchanged with its key"
[ "$(count "$BS" intentd.clicks)" -eq $((500 + 4)) ] || fail "jsonl clicks"
# A line over message.max.bytes (1 MB) is refused by the producer: counted as failed (exit 1),
# and the lines after it are still sent.
{ echo '{"session_id":"big-0","features":{}}'
  printf '{"session_id":"big-1","junk":"%s"}\n' "$(head -c 1200000 /dev/zero | tr '\0' x)"
  echo '{"session_id":"big-2","features":{}}'; } > "$T/big.jsonl"
"$R" --brokers "$BS" --jsonl "$T/big.jsonl" > "$T/r5b.log" 2>&1
[ $? -eq 1 ] || fail "a refused event should make replay exit 1"
[ "$(summary "$T/r5b.log")" = "2 2 0 1" ] || fail "oversized-line summary '$(summary "$T/r5b.log")'"
[ "$(kcat -b "$BS" -C -t intentd.clicks -e -q -f '%k\n' | grep -c '^big-[02]$')" -eq 2 ] ||
    fail "the lines around the oversized one were not sent"

note "--rate paces (a loose lower bound only)"
start=$(date +%s)
"$R" --brokers "$BS" --csv "$CSV" --label Revenue --limit 200 --direct --rate 100 \
    > "$T/r6.log" 2>&1 || fail "paced replay exited $?"
secs=$(( $(date +%s) - start ))
[ "$secs" -ge 1 ] || fail "200 events at --rate 100 took ${secs}s"

note "--shuffle: a permutation of the rows"
devbroker db4 --partitions 1
"$R" --brokers "$BS" --csv "$CSV" --label Revenue --limit 50 --direct --shuffle 42 \
    > "$T/r7.log" 2>&1 || fail "shuffled replay exited $?"
kcat -b "$BS" -C -t intentd.clicks -e -q -f '%k\n' | sed 's/.*-//' > "$T/rows"
seq 0 49 > "$T/seq"
sort -n "$T/rows" | cmp - "$T/seq" > /dev/null || fail "shuffled rows are not 0..49"
cmp "$T/rows" "$T/seq" > /dev/null && fail "--shuffle kept the file order"

note "--loop until SIGTERM: unique sessions, exit 0"
start_bg loop "$R" --brokers "$BS" --csv "$CSV" --label Revenue --limit 20 --loop --rate 400
LP=$LAST_PID
wait_for 60 "grep -q 'replay: sent' '$T/loop.log'"
kill -TERM "$LP"
wait "$LP"; rc=$?
[ $rc -eq 0 ] || fail "looping replay exited $rc on SIGTERM"
set -- $(summary "$T/loop.log")
[ "${4:-1}" -eq 0 ] && [ "${2:-0}" -gt 20 ] || fail "loop summary '$*'"
dups=$(kcat -b "$BS" -C -t intentd.clicks -e -q -f '%k\n' | sort | uniq -d | wc -l)
[ "$dups" -eq 0 ] || fail "$dups session ids repeat across loops"

note "broker down (SIGUSR1) during a replay, up again (SIGUSR2): everything delivered"
devbroker db5
kill -USR1 "$DBPID"
wait_for 30 "grep -q 'broker down' '$T/db5.log'"
start_bg down "$R" --brokers "$BS" --csv "$CSV" --label Revenue --limit 300 --timeout 120s
RP=$LAST_PID
sleep 2
kill -USR2 "$DBPID"
wait_for 30 "grep -q 'broker up' '$T/db5.log'"
wait "$RP"; rc=$?
[ $rc -eq 0 ] || fail "replay across a down/up cycle exited $rc"
P300=$(awk -F, 'NR > 1 && NR <= 301 { sub(/\r$/, ""); if ($NF == "TRUE") p++ } END { print p + 0 }' "$CSV")
[ "$(summary "$T/down.log")" = "$((300 + P300)) 300 $P300 0" ] || fail "summary '$(summary "$T/down.log")'"
[ "$(count "$BS" intentd.clicks)" -eq 300 ] || fail "clicks after down/up (duplicates or losses)"
"$R" --brokers "$BS" --csv "$CSV" --label Revenue --limit 100 -X linger.ms=0 > "$T/r8.log" 2>&1 ||
    fail "replay after the cycle exited $?"

note "a dead broker address: non-zero exit within a bounded time"
DEAD=$(free_port)
start=$(date +%s)
timeout -k 5 90 "$R" --brokers "127.0.0.1:$DEAD" --csv "$CSV" --label Revenue --limit 10 \
    --timeout 2s > "$T/r9.log" 2>&1
rc=$?
[ $rc -ne 0 ] && [ $rc -ne 124 ] && [ $rc -ne 137 ] || fail "dead broker: exit $rc"
grep -q 'failed' "$T/r9.log" || fail "no failure summary"
[ "$(summary "$T/r9.log" | cut -d' ' -f4)" -eq 10 ] || fail "summary '$(summary "$T/r9.log")'"
echo "ok ($(( $(date +%s) - start ))s for the dead broker)"
