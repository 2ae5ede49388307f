#!/bin/sh
# The "ingest" section of tests/bench/run.sh: the end-to-end ingest rate (issue 4).
#
# A dev broker of 16 partitions is pre-filled with as many events as it retains (the mock
# keeps 5 MiB per partition; the fill stops at INGEST_FILL_MIB, default 4.4, per click
# partition): the UCI CSV rendered as click events (every feature of config/intentd.yaml's
# schema) plus a transaction per positive row, looped with fresh session ids, event times
# 5 s apart ending now.  Then, from the start:
#   kcat     raw: both topics read to their end (-C -e -o beginning), nothing parsed;
#   intentd  the daemon on config/intentd.yaml's defaults: consumed, validated, joined and
#            learned (replay_ratio and all) — timed from its partition assignment until
#            intentd_examples_trained_total stops rising.
# Printed side by side in events/s, with the ratio.  Takes about a minute.
INTENTD_TOP=${INTENTD_TOP:-$(pwd)}
export INTENTD_TOP
. "$INTENTD_TOP/tests/integration/lib_daemon.sh"
ld_init
command -v kcat > /dev/null || { echo "ingest: kcat not installed, skipped"; exit 0; }
FILL_MIB=${INGEST_FILL_MIB:-4.4}
PARTS=16
CLICKS=intentd.clicks
TXNS=intentd.transactions

now_ms() { date +%s%3N; }
# log_ms LINE: the wall-clock ms of a log line's ISO timestamp.
log_ms() {
    ts=$(echo "$1" | cut -c1-23)
    echo $(( $(date -u -d "${ts%.*}" +%s) * 1000 + 1${ts#*.} - 1000 ))
}

devbroker_start --partitions $PARTS
daemon_config "$T/d.yaml"

note "filling $PARTS partitions to ${FILL_MIB} MiB of click events each"
/usr/bin/python3 - "$TOP/tests/data/online_shoppers_intention.csv" "$T/d.yaml" \
    "$FILL_MIB" "$PARTS" "$T/events.jsonl" << 'EOF' || fail "generating the events"
import csv, json, sys, time, yaml
src, cfgp, out = sys.argv[1], sys.argv[2], sys.argv[5]
fill_mib, parts = float(sys.argv[3]), int(sys.argv[4])
schema = yaml.safe_load(open(cfgp))["features"]
rows = list(csv.DictReader(open(src)))
def typed(col, v):
    if v == "":
        return None
    if col["type"] == "numeric":
        return float(v)
    if col["type"] == "boolean":
        return v.strip().upper() in ("TRUE", "1")
    try:
        return int(v)
    except ValueError:
        return v
def click(loop, i, r, ts):
    f = {}
    for c in schema:
        v = typed(c, r[c["name"]])
        if v is not None:
            f[c["name"]] = v
    return json.dumps({"session_id": "b-%d-%d" % (loop, i), "ts": ts, "features": f},
                      separators=(",", ":"))
# the average click size sets the number of loops that fill the partitions
sample = sum(len(click(0, i, r, 0)) + 12 for i, r in enumerate(rows[:1000])) / 1000.0
nclicks = int(fill_mib * 1048576 * parts / sample)
step = 5000
t0 = int(time.time() * 1000) - nclicks * step - 60000
n = c = t = 0
with open(out, "w") as f:
    while c < nclicks:
        loop = c // len(rows)
        for i, r in enumerate(rows):
            if c >= nclicks:
                break
            ts = t0 + c * step
            f.write(click(loop, i, r, ts) + "\n")
            c += 1
            if r["Revenue"].strip().upper() == "TRUE":
                f.write(json.dumps({"session_id": "b-%d-%d" % (loop, i), "ts": ts + 5000,
                                    "order_id": "o-%d-%d" % (loop, i), "amount": 10.0},
                                   separators=(",", ":")) + "\n")
                t += 1
print("%d clicks (%.0f bytes each) and %d transactions" % (c, sample, t))
EOF
replay_run fill "$T/d.yaml" --jsonl "$T/events.jsonl"
TOTAL=$(sed -n 's/.*delivered \([0-9]*\) events (.*/\1/p' "$T/fill.log" | tail -1)
LINES=$(wc -l < "$T/events.jsonl")
[ "$TOTAL" -eq "$LINES" ] || fail "delivered $TOTAL of $LINES"
rm -f "$T/events.jsonl"

note "kcat: both topics from the beginning to the end, raw"
t0=$(now_ms)
kcat -b "$BROKER_BS" -C -t $CLICKS -o beginning -e -q -f '%p %S\n' > "$T/kc.clicks" &
k1=$!
kcat -b "$BROKER_BS" -C -t $TXNS -o beginning -e -q -f '%p %S\n' > "$T/kc.txns" &
k2=$!
wait $k1 || fail "kcat $CLICKS"
wait $k2 || fail "kcat $TXNS"
t1=$(now_ms)
KCAT_N=$(cat "$T/kc.clicks" "$T/kc.txns" | wc -l)
[ "$KCAT_N" -eq "$TOTAL" ] || fail "kcat read $KCAT_N of $TOTAL (retention dropped some?)"
MAXP=$(awk '{ b[$1] += $2 }
    END { for (p in b) if (b[p] > m) m = b[p]; printf "%.2f", m / 1048576 }' "$T/kc.clicks")
KCAT_MS=$((t1 - t0))

note "intentd: the same from the start, consumed, joined and learned"
daemon_start d1 "$T/d.yaml"
daemon_wait_healthy 60
wait_for 60 "[ \$(grep -c 'ingest: assigned ' '$DAEMON_LOG') -ge $((2 * PARTS)) ]"
t_assigned=$(log_ms "$(grep -m1 'ingest: assigned ' "$DAEMON_LOG")")
last="" t_last=0 t_consumed=0 same=0
deadline=$(( $(date +%s) + 600 ))
while :; do
    daemon_alive || fail "intentd exited"
    tr=$(metric_sum intentd_examples_trained_total)
    c=$(metric_sum intentd_events_consumed_total)
    now=$(now_ms)
    [ "$t_consumed" = 0 ] && [ "${c:-0}" -ge "$TOTAL" ] && t_consumed=$now
    if [ "$tr" != "$last" ]; then last=$tr; t_last=$now; same=0; else same=$((same + 1)); fi
    [ "$t_consumed" != 0 ] && [ $same -ge 15 ] && break
    [ "$(date +%s)" -ge "$deadline" ] && fail "not done in 600 s: consumed $c, trained $tr"
    sleep 0.2
done
# CPU seconds per thread (utime + stime, clock ticks): who was busy.
THREADS=$(for t in /proc/"$DAEMON_PID"/task/*; do
    awk '{ sub(/^[0-9]+ \(/, ""); n = $0; sub(/\).*/, "", n); sub(/^[^)]*\) /, "");
           print n, $12 + $13 }' "$t/stat"
done | awk -v hz="$(getconf CLK_TCK)" '{ c[$1] += $2 } END {
    for (n in c) if (c[n] / hz >= 0.1) printf "%s %.1fs, ", n, c[n] / hz }')
POS=$(metric 'intentd_examples_total{label="positive"}')
NEG=$(metric 'intentd_examples_total{label="negative"}')
RR=$("$BIN/intentd" --print-config -c "$T/d.yaml" | sed -n 's/^  replay_ratio: *//p')
daemon_stop 60 || fail "intentd stop: $DAEMON_RC"
devbroker_stop
LEARN_MS=$((t_last - t_assigned))
CONS_MS=$((t_consumed - t_assigned))

awk -v n="$TOTAL" -v km="$KCAT_MS" -v lm="$LEARN_MS" -v cm="$CONS_MS" -v tr="$last" \
    -v pos="$POS" -v neg="$NEG" -v maxp="$MAXP" -v parts=$PARTS -v rr="$RR" 'BEGIN {
    printf "events: %d over %d partitions per topic (largest click partition %s MiB)\n",
        n, parts, maxp
    printf "%-34s %10.0f events/s  (%.2f s)\n", "kcat, raw read:", n / (km / 1000), km / 1000
    printf "%-34s %10.0f events/s  (%.2f s)\n", "intentd, consumed and joined:",
        n / (cm / 1000), cm / 1000
    printf "%-34s %10.0f events/s  (%.2f s; %d examples learned, %.0f/s, %d+ %d-, " \
        "replay_ratio %s)\n",
        "intentd, consumed/joined/learned:", n / (lm / 1000), lm / 1000, tr, tr / (lm / 1000),
        pos, neg, rr
    printf "ratio intentd (learned) / kcat: %.3f; intentd (consumed) / kcat: %.3f\n",
        km / lm, km / cm
}'
echo "intentd CPU by thread: ${THREADS%, }"
