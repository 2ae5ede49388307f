# Poison messages (issue 4's second acceptance item): eleven malformed messages produced
# raw with kcat — not JSON, not an object, no session_id, a wrong type, a bare NaN, 900 kB
# of junk (over kafka.max_event_bytes: too_large), a bad label, ts out of range, bad
# features, a bad session id on each topic — are all counted in
# intentd_events_rejected_total by reason and all copied, payload unchanged, to the
# dead-letter topic with the reason and the source topic/partition/offset headers; the
# rejection log lines are rate limited; the partitions they sat on keep flowing and the
# daemon learns the valid events produced after them.
. tests/integration/lib_daemon.sh
ld_init
command -v kcat > /dev/null || { echo "kcat not installed"; exit 77; }
CLICKS=intentd.clicks
TXNS=intentd.transactions
DLQ=intentd.dead-letter

devbroker_start --partitions 4
daemon_config "$T/d.yaml" snapshot.holdout_fraction=0 training.max_batch_wait=50ms \
    snapshot.min_examples=50 checkpoint.interval=1s
daemon_start d1 "$T/d.yaml"
daemon_wait_healthy 60

note "eleven malformed messages with kcat"
now=$(date +%s%3N)
# One message per line, in this order, to partition 1 of the clicks topic (offsets 0..8).
cat > "$T/bad.txt" << EOF
this is not JSON at all
[1, 2, 3]
{"ts": $now, "features": {"PageValues": 1.0}}
{"session_id": "s-type", "ts": $now, "features": {"PageValues": "high"}}
{"session_id": "s-nan", "ts": $now, "features": {"PageValues": NaN}}
{"session_id": "s-label", "ts": $now, "features": {"PageValues": 1.0}, "label": 2}
{"session_id": "s-ts", "ts": $((now + 86400000)), "features": {"PageValues": 1.0}}
{"session_id": "s-feat", "ts": $now, "features": [1, 2]}
{"session_id": 42, "ts": $now, "features": {"PageValues": 1.0}}
EOF
expect_reasons="invalid_json not_object missing_session_id bad_value invalid_json bad_label
    ts_out_of_range bad_features bad_session_id"
kcat -b "$BROKER_BS" -P -t "$CLICKS" -p 1 -l "$T/bad.txt" || fail "kcat -P of the bad lines"
# 900 kB of junk, one message (offset 9), beyond the producer's default message.max.bytes.
head -c 900000 /dev/urandom | base64 -w 0 | head -c 900000 > "$T/junk.bin"
kcat -b "$BROKER_BS" -P -t "$CLICKS" -p 1 -X message.max.bytes=2000000 "$T/junk.bin" ||
    fail "kcat -P of 900 kB"
# a transaction with an empty session id, partition 2 of the transactions topic (offset 0)
printf '{"session_id": "", "order_id": "o-1", "amount": 5}\n' |
    kcat -b "$BROKER_BS" -P -t "$TXNS" -p 2 || fail "kcat -P transaction"

daemon_wait_metric intentd_events_rejected_total 11 60
for r in not_object missing_session_id bad_value bad_label ts_out_of_range bad_features \
    too_large; do
    v=$(metric "intentd_events_rejected_total{reason=\"$r\"}")
    [ "$v" = 1 ] || fail "rejected{reason=$r} = '$v', want 1"
done
[ "$(metric 'intentd_events_rejected_total{reason="invalid_json"}')" = 2 ] ||
    fail "invalid_json: $(metric 'intentd_events_rejected_total{reason="invalid_json"}')"
[ "$(metric 'intentd_events_rejected_total{reason="bad_session_id"}')" = 2 ] ||
    fail "bad_session_id: $(metric 'intentd_events_rejected_total{reason="bad_session_id"}')"
[ "$(metric_sum intentd_events_rejected_total)" = 11 ] || fail "rejected total != 11"
[ "$(metric_sum intentd_events_consumed_total)" = 11 ] || fail "consumed != 11"
[ "$(metric intentd_dead_letter_errors_total)" = 0 ] || fail "dead-letter errors"
daemon_alive || fail "the daemon died on poison"

note "all eleven on the dead-letter topic, payload unchanged, with their headers"
deadline=$(( $(date +%s) + 60 ))
while :; do
    kcat -b "$BROKER_BS" -C -t "$DLQ" -o beginning -e -q -J -X fetch.message.max.bytes=2000000 \
        > "$T/dlq.json" 2> "$T/dlq.err"
    [ "$(wc -l < "$T/dlq.json")" -ge 11 ] && break
    [ "$(date +%s)" -ge "$deadline" ] &&
        fail "dead-letter topic: $(wc -l < "$T/dlq.json") messages"
    sleep 0.5
done
# And the headers, as kcat's own %h format prints them (name=value,...).
kcat -b "$BROKER_BS" -C -t "$DLQ" -o beginning -e -q -f '%h\n' > "$T/dlq.h" ||
    fail "kcat -f %h"
H='intentd-reason=too_large,intentd-source-topic=intentd.clicks'
H="$H,intentd-source-partition=1,intentd-source-offset=9"
grep -c "$H" "$T/dlq.h" | grep -qx 1 ||
    fail "no %h line for the too_large copy: $(cut -c1-200 "$T/dlq.h")"
/usr/bin/python3 - "$T/dlq.json" "$T/bad.txt" "$T/junk.bin" "$expect_reasons" \
    << 'EOF' || fail "dead-letter contents"
import json, sys
msgs = [json.loads(l) for l in open(sys.argv[1])]
bad = open(sys.argv[2]).read().split("\n")[:-1]
junk = open(sys.argv[3]).read()
reasons = sys.argv[4].split()
want = {("intentd.clicks", 1, i): (bad[i], reasons[i]) for i in range(len(bad))}
want[("intentd.clicks", 1, 9)] = (junk, "too_large")
want[("intentd.transactions", 2, 0)] = ('{"session_id": "", "order_id": "o-1", "amount": 5}',
                                         "bad_session_id")
assert len(msgs) == len(want) == 11, (len(msgs), len(want))
seen = set()
for m in msgs:
    h = m.get("headers") or []
    hd = dict(zip(h[0::2], h[1::2]))
    key = (hd["intentd-source-topic"], int(hd["intentd-source-partition"]),
           int(hd["intentd-source-offset"]))
    assert key in want, ("unexpected source", key, hd)
    payload, reason = want[key]
    assert hd["intentd-reason"] == reason, (key, hd["intentd-reason"], reason)
    assert m["payload"] == payload, (key, len(m["payload"]), len(payload), m["payload"][:80])
    seen.add(key)
assert seen == set(want), set(want) - seen
print("dead-letter: 11 copies, reasons and sources match, payloads identical")
EOF

note "the poisoned partitions keep flowing: valid events after them are learned"
replay_run r1 "$T/d.yaml" --csv "$TOP/tests/data/online_shoppers_intention.csv" --label Revenue \
    --direct --limit 600 --step 10ms
daemon_wait_metric intentd_events_consumed_total 611 60
daemon_wait_metric intentd_examples_trained_total 600 60
tr=$(daemon_wait_drained 60)
[ "$tr" = 600 ] || fail "trained $tr, want 600 (every valid event)"
[ "$(metric_sum intentd_events_rejected_total)" = 11 ] || fail "valid events rejected"
p1=$(metric 'intentd_kafka_consumer_lag{topic="intentd.clicks",partition="1"}')
[ "$p1" = 0 ] || fail "lag on the poisoned partition 1: '$p1'"
daemon_wait_ready 60

note "rejection log lines are rate limited, and say how many were left out"
: > "$T/many.txt"
i=0
while [ $i -lt 100 ]; do echo "junk $i" >> "$T/many.txt"; i=$((i + 1)); done
kcat -b "$BROKER_BS" -P -t "$CLICKS" -p 3 -l "$T/many.txt" || fail "kcat -P many"
daemon_wait_metric intentd_events_rejected_total 111 60
lines=$(grep -c 'ingest: rejected ' "$DAEMON_LOG")
[ "$lines" -le 31 ] || fail "$lines rejection lines for 111 rejections: not rate limited"
wait_for 30 "grep -q 'more rejections were not logged' '$DAEMON_LOG'"
daemon_wait_metric intentd_examples_trained_total 600 5
[ "$(wc -l < "$T/dlq.json")" -eq 11 ] || fail "dlq count"
deadline=$(( $(date +%s) + 60 ))
until [ "$(kcat -b "$BROKER_BS" -C -t "$DLQ" -o beginning -e -q -f 'x\n' | wc -l)" -eq 111 ]; do
    [ "$(date +%s)" -ge "$deadline" ] && fail "dead-letter topic does not hold 111 copies"
    sleep 0.5
done

daemon_stop 30 || fail "intentd did not stop cleanly: $DAEMON_RC"
devbroker_stop
echo ok
