# The daemon loop end to end (issue 4's first acceptance item): a dev broker with 4
# partitions, the daemon on config/intentd.yaml (only brokers, state_dir, http.listen and
# the group changed), the whole UCI CSV replayed into it.  Exactly 1,908 positives,
# negatives + pending == 10,422, consumed == what the replay delivered, no lag; the first
# snapshot is served once snapshot.min_examples were learned (the delay from the first
# event to /readyz 200 is measured and printed, not asserted); a second replay makes
# intentd_model_version rise and the counts add up again.
. tests/integration/lib_daemon.sh
ld_init
CSV="$TOP/tests/data/online_shoppers_intention.csv"

now_ms() { date +%s%3N; }
# delivered LOG: the total of the replay's last "delivered N events" line.
delivered() { sed -n 's/.*delivered \([0-9]*\) events (.*/\1/p' "$1" | tail -1; }
# positives N: positive rows among the first N rows of the CSV.
positives() {
    awk -F, -v n="$1" 'NR > 1 && NR <= n + 1 { sub(/\r$/, ""); if (toupper($NF) == "TRUE") p++ }
        END { print p + 0 }' "$CSV"
}

devbroker_start --partitions 4
DAEMON_PORT=$(free_port)
/usr/bin/python3 - "$TOP/config/intentd.yaml" "$T/d.yaml" "$BROKER_BS" "$T/state" \
    "127.0.0.1:$DAEMON_PORT" << 'EOF' || fail "cannot write the configuration"
import sys, yaml
src, out, brokers, state, listen = sys.argv[1:6]
cfg = yaml.safe_load(open(src))
cfg["state_dir"] = state
cfg["kafka"]["brokers"] = brokers
cfg["kafka"]["group_id"] = "intentd-daemon-replay"
cfg["http"]["listen"] = listen
yaml.safe_dump(cfg, open(out, "w"), default_flow_style=False, sort_keys=False)
EOF
PORT=$DAEMON_PORT
DAEMON_STATE=$T/state
mkdir -p "$T/state"
MIN_EXAMPLES=$("$BIN/intentd" --print-config -c "$T/d.yaml" | sed -n 's/^  min_examples: *//p')
[ -n "$MIN_EXAMPLES" ] || fail "no snapshot.min_examples in --print-config"

daemon_start d1 "$T/d.yaml"
daemon_wait_healthy 60
curl -s -o /dev/null -w '%{http_code}' "$(ld_url /readyz)" | grep -q 503 ||
    fail "/readyz is not 503 before any event"

note "replay of the whole CSV; the first event to /readyz 200"
t_replay=$(now_ms)
replay_bg r1 "$T/d.yaml" --csv "$CSV" --label Revenue
t_first=""
t_ready=""
deadline=$(( $(date +%s) + 180 ))
while [ -z "$t_ready" ]; do
    daemon_alive || fail "intentd exited during the replay"
    [ "$(date +%s)" -ge "$deadline" ] && fail "/readyz not 200 within 180 s of the replay"
    if [ -z "$t_first" ]; then
        c=$(metric_sum intentd_events_consumed_total)
        [ -n "$c" ] && [ "$c" != 0 ] && t_first=$(now_ms)
    fi
    if [ -n "$t_first" ] && curl -fs -o /dev/null "$(ld_url /readyz)"; then t_ready=$(now_ms); fi
    sleep 0.05
done
echo "first snapshot: /readyz 200 $((t_ready - t_first)) ms after the first event was" \
    "consumed ($((t_ready - t_replay)) ms after the replay started, the group join included)"
# The daemon's own view: from its partition assignment (the events were already waiting in
# the broker) to its "first snapshot published" line.
log_ms() {
    ts=$(echo "$1" | cut -c1-23)
    echo $(( $(date -u -d "${ts%.*}" +%s) * 1000 + 1${ts#*.} - 1000 ))
}
a_ms=$(log_ms "$(grep -m1 'ingest: assigned ' "$DAEMON_LOG")")
s_ms=$(log_ms "$(grep -m1 'trainer: first snapshot published' "$DAEMON_LOG")")
echo "first snapshot: published $((s_ms - a_ms)) ms after the partition assignment (log times)"
trained=$(model_field trained_examples)
[ -n "$trained" ] && [ "$trained" -ge "$MIN_EXAMPLES" ] ||
    fail "the first snapshot has $trained trained examples, fewer than min_examples $MIN_EXAMPLES"
v1=$(model_field version)
[ -n "$v1" ] && [ "$v1" -ge 1 ] || fail "model version '$v1' after /readyz 200"

wait "$REPLAY_PID" || fail "the replay failed (log $T/r1.log)"
D1=$(delivered "$T/r1.log")
[ -n "$D1" ] && [ "$D1" -eq $((12330 + 1908)) ] || fail "replay delivered '$D1', not 14238"

note "the counts: consumed == delivered, 1908 positives, negatives + pending == 10422"
daemon_wait_metric intentd_events_consumed_total "$D1" 120
daemon_wait_metric intentd_examples_total 1 60
deadline=$(( $(date +%s) + 120 ))
while :; do
    pos=$(metric 'intentd_examples_total{label="positive"}')
    neg=$(metric 'intentd_examples_total{label="negative"}')
    pend=$(metric intentd_pending_labels)
    [ "$pos" = 1908 ] && [ $((neg + pend)) -eq 10422 ] && break
    [ "$(date +%s)" -ge "$deadline" ] &&
        fail "positive $pos (want 1908), negative $neg + pending $pend (want 10422)"
    sleep 0.5
done
echo "positive $pos, negative $neg + pending $pend = $((neg + pend))"
daemon_wait_drained 120 > /dev/null
c=$(metric_sum intentd_events_consumed_total)
[ "$c" = "$D1" ] || fail "consumed $c after draining, the replay delivered $D1"
[ "$(metric 'intentd_events_consumed_total{topic="intentd.clicks"}')" = 12330 ] ||
    fail "clicks consumed: $(metric 'intentd_events_consumed_total{topic="intentd.clicks"}')"
[ "$(metric_sum intentd_events_rejected_total)" = 0 ] || fail "valid events were rejected"
[ "$(metric intentd_unmatched_transactions_total)" = 0 ] || fail "unmatched transactions"
[ "$(metric intentd_pending_evicted_total)" = 0 ] || fail "evictions under max_pending 1e6"
lag=$(metric_sum intentd_kafka_consumer_lag)
[ "$lag" = 0 ] || fail "consumer lag $lag after draining"
nlag=$(curl -fs "$(ld_url /metrics)" | grep -c '^intentd_kafka_consumer_lag{')
[ "$nlag" -eq 8 ] || fail "$nlag lag series, want 8 (2 topics x 4 partitions)"

note "a second replay: the model version rises while events flow"
v_before=$(metric intentd_model_version)
# A fresh replay run stamps its rows back from now (--help); with the default 5 s step its
# clicks would lie behind the first run's watermark (late: negatives at once), so it steps
# 10 ms: all of its 30 s of event time is ahead of the watermark.
replay_run r2 "$T/d.yaml" --csv "$CSV" --label Revenue --limit 3000 --shuffle 3 --step 10ms
D2=$(delivered "$T/r2.log")
P2=$(positives 3000)
[ "$D2" -eq $((3000 + P2)) ] || fail "second replay delivered $D2, want $((3000 + P2))"
daemon_wait_metric intentd_events_consumed_total $((D1 + D2)) 120
daemon_wait_metric 'intentd_examples_total' $((1908 + P2 + 1)) 120
deadline=$(( $(date +%s) + 120 ))
while :; do
    pos=$(metric 'intentd_examples_total{label="positive"}')
    neg=$(metric 'intentd_examples_total{label="negative"}')
    pend=$(metric intentd_pending_labels)
    v_after=$(metric intentd_model_version)
    [ "$pos" = $((1908 + P2)) ] && [ $((neg + pend)) -eq $((10422 + 3000 - P2)) ] &&
        [ "$v_after" -gt "$v_before" ] && break
    [ "$(date +%s)" -ge "$deadline" ] &&
        fail "after the second replay: positive $pos, negative $neg + pending $pend," \
            "version $v_before -> $v_after"
    sleep 0.5
done
[ "$(metric intentd_unmatched_transactions_total)" = 0 ] || fail "unmatched transactions"
echo "model version $v1 at /readyz, $v_before after the first replay, $v_after after the second"
daemon_wait_drained 120 > /dev/null
[ "$(metric_sum intentd_events_consumed_total)" = $((D1 + D2)) ] ||
    fail "consumed $(metric_sum intentd_events_consumed_total), delivered $((D1 + D2))"
grep -q 'status: events/s' "$DAEMON_LOG" || fail "no periodic status line in the log"

daemon_stop 30 || fail "intentd did not stop cleanly: $DAEMON_RC"
devbroker_stop
echo ok
