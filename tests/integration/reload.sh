# SIGHUP (issue 6): every key marked (live) is applied and listed in the log; a change that
# needs a restart (model.hidden, http.listen) is logged as such and the running value stays;
# an invalid file keeps the running configuration and logs its FILE:LINE:COL error; the
# daemon serves throughout.  Effects checked where visible from outside: checkpoint.interval
# and checkpoint.keep (files in state_dir), log_level (debug lines), labels.max_future (an
# event 30 min ahead is accepted under 1h and rejected under 10m).  Run it under
# `make SAN=thread` too: the reload must not race with the threads reading the settings.
. tests/integration/lib_daemon.sh
ld_init
CSV="$TOP/tests/data/online_shoppers_intention.csv"
DAEMON_BROKERS=embedded

# conf FILE [overrides]: the test's configuration with BASE and overrides.
conf() {
    f=$1; shift
    daemon_config "$f" kafka.dead_letter_topic="''" snapshot.min_examples=64 "$@"
}
conf "$T/d.yaml" checkpoint.interval=1h checkpoint.keep=3 labels.max_future=1h
daemon_start d "$T/d.yaml"
daemon_wait_healthy 60
wait_for 30 "[ -s '$DAEMON_STATE/embedded-brokers' ]"
replay_run r1 "$T/d.yaml" --csv "$CSV" --label Revenue --direct --limit 1000
daemon_wait_ready 60
daemon_wait_metric intentd_events_consumed_total 1000 60
sleep 2
n=$(checkpoints_in "$DAEMON_STATE" | wc -l)
[ "$n" -eq 0 ] || fail "$n checkpoints under checkpoint.interval 1h"

# future_event TS_OFFSET_MS: one click event that far ahead of now, as JSONL.
future_event() {
    ts=$(( $(date +%s%3N) + $1 ))
    printf '{"session_id": "future-%s", "ts": %s, "label": 1, "features": {}}\n' "$ts" "$ts" \
        > "$T/future.jsonl"
    replay_run fut "$T/d.yaml" --jsonl "$T/future.jsonl"
}
rej0=$(metric_sum intentd_events_rejected_total)
future_event 1800000
daemon_wait_metric intentd_events_consumed_total 1001 60
[ "$(metric_sum intentd_events_rejected_total)" = "$rej0" ] ||
    fail "an event 30 min ahead was rejected under labels.max_future 1h"

note "SIGHUP with every live key changed"
cp "$T/d.yaml" "$T/d0.yaml"
conf "$T/d.yaml" log_level=debug labels.max_future=10m optimizer.learning_rate=0.01 \
    training.max_batch_wait=50ms training.replay_ratio=1 training.positive_weight=2 \
    evaluation.threshold=0.3 snapshot.interval=300ms snapshot.max_regression=0.5 \
    snapshot.min_holdout=50 checkpoint.interval=1s checkpoint.keep=1
cp "$T/d.yaml" "$T/d1.yaml"
daemon_reload
wait_for 30 "grep -q 'reload: changed: ' '$DAEMON_LOG'"
line=$(grep 'reload: changed: ' "$DAEMON_LOG" | tail -1)
echo "$line"
for k in log_level labels.max_future optimizer.learning_rate training.max_batch_wait \
    training.replay_ratio training.positive_weight evaluation.threshold snapshot.interval \
    snapshot.max_regression snapshot.min_holdout checkpoint.interval checkpoint.keep; do
    echo "$line" | grep -q "[ ,]$k\(,\|$\)" || fail "the reload line does not list $k"
done
echo "$line" | grep -q 'need a restart' && fail "live keys said to need a restart"
grep -q 'not applied although marked live' "$DAEMON_LOG" && fail "a live key was not applied"

note "their effects: checkpoints every second keeping 1, debug lines, max_future 10m"
replay_run r2 "$T/d.yaml" --csv "$CSV" --label Revenue --direct --limit 500 --shuffle 2
daemon_wait_metric intentd_events_consumed_total 1501 60
wait_for 30 "[ \$(ls '$DAEMON_STATE' | grep -c '^checkpoint-.*\.ck\$') -ge 1 ]"
replay_run r3 "$T/d.yaml" --csv "$CSV" --label Revenue --direct --limit 500 --shuffle 3
daemon_wait_metric intentd_events_consumed_total 2001 60
sleep 3
seq=$(basename "$(checkpoint_newest "$DAEMON_STATE")" .ck | sed 's/^checkpoint-0*//')
n=$(checkpoints_in "$DAEMON_STATE" | wc -l)
echo "newest checkpoint $seq, $n kept"
[ "${seq:-0}" -ge 2 ] || fail "checkpoint.interval 1s: only checkpoint '$seq' written"
[ "$n" -eq 1 ] || fail "checkpoint.keep 1: $n checkpoints kept"
grep -q ' debug ' "$DAEMON_LOG" || fail "log_level debug: no debug line"
rej1=$(metric_sum intentd_events_rejected_total)
future_event 1800000
daemon_wait_metric intentd_events_consumed_total 2002 60
sleep 1
[ "$(metric_sum intentd_events_rejected_total)" = $((rej1 + 1)) ] ||
    fail "labels.max_future 10m did not reject an event 30 min ahead"
curl -fs -o /dev/null "$(ld_url /readyz)" || fail "not serving after the reload"

note "SIGHUP with changes that need a restart"
conf "$T/d.yaml" log_level=debug labels.max_future=10m optimizer.learning_rate=0.01 \
    training.max_batch_wait=50ms training.replay_ratio=1 training.positive_weight=2 \
    evaluation.threshold=0.3 snapshot.interval=300ms snapshot.max_regression=0.5 \
    snapshot.min_holdout=50 checkpoint.interval=1s checkpoint.keep=1 model.hidden='[8]'
sed -i "s/^  listen: 127.0.0.1:$DAEMON_PORT/  listen: 127.0.0.1:1/" "$T/d.yaml"
before=$(grep -c 'reload: ' "$DAEMON_LOG")
daemon_reload
wait_for 30 "[ \$(grep -c 'reload: ' '$DAEMON_LOG') -gt $before ]"
sleep 0.5
grep 'reload: ' "$DAEMON_LOG" | tail -2
grep 'reload: need a restart: ' "$DAEMON_LOG" | tail -1 | grep -q 'model.hidden' ||
    fail "model.hidden not logged as needing a restart"
grep 'reload: need a restart: ' "$DAEMON_LOG" | tail -1 | grep -q 'http.listen' ||
    fail "http.listen not logged as needing a restart"
grep -q 'take effect only after a restart; the running values stay' "$DAEMON_LOG" ||
    fail "no warning that a restart is needed"
curl -fs -o /dev/null "$(ld_url /readyz)" || fail "not serving on the running port"
model_field layers | grep -q ', 8, 1]$' && fail "model.hidden applied live: $(model_field layers)"

note "SIGHUP with an invalid file keeps the running configuration"
printf 'state_dir: %s\nlog_level: [\n' "$DAEMON_STATE" > "$T/d.yaml"
before=$(grep -c 'reload' "$DAEMON_LOG")
daemon_reload
wait_for 30 "grep -q 'reload refused, keeping the running configuration: ' '$DAEMON_LOG'"
grep 'reload refused' "$DAEMON_LOG" | tail -1
grep 'reload refused' "$DAEMON_LOG" | tail -1 | grep -q "$T/d.yaml:[0-9]*:[0-9]*: " ||
    fail "the error has no FILE:LINE:COL"
curl -fs -o /dev/null "$(ld_url /readyz)" || fail "not serving after an invalid reload"
p=$(curl -fs -X POST -d '{"features": {}}' "$(ld_url /v1/predict)") || fail "predict failed"
echo "predict after the invalid reload: $p"

note "the running configuration is still the applied one: reloading it changes nothing"
cp "$T/d1.yaml" "$T/d.yaml"
before=$(grep -c 'reload: nothing changed' "$DAEMON_LOG")
daemon_reload
wait_for 30 "[ \$(grep -c 'reload: nothing changed' '$DAEMON_LOG') -gt $before ]"
daemon_stop 60 || fail "stop after the reloads: $DAEMON_RC"
grep -q 'ThreadSanitizer' "$DAEMON_LOG" && fail "ThreadSanitizer reports (log $DAEMON_LOG)"
echo ok
