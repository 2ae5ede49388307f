# Restarts that must not go wrong (issue 6, DESIGN.md §8):
#   1. kafka.brokers: embedded — its topics are memory only, so after a restart the
#      checkpoint's offsets are not on the broker: logged, counted in
#      intentd_offset_resets_total, the model kept and served at once (/readyz 200 before any
#      new event), model_version never back, and new events are learned from the earliest;
#   2. the newest checkpoint corrupted (one byte) or torn (cut in half): skipped with a
#      warning naming the file, the previous one loaded, model_version still not back;
#   3. a checkpoint of another model shape (model.hidden) or schema (a feature's buckets):
#      the daemon refuses to start, exit 1, the log names the difference;
#   4. state_dir is a file: a clear error, exit 1.
. tests/integration/lib_daemon.sh
ld_init
CSV="$TOP/tests/data/online_shoppers_intention.csv"

# start_ready_at_once NAME: starts the daemon and records the first HTTP answers: fails unless
# /readyz is 200 the first time the server answers at all (the checkpoint's model is served
# before the consumer has even joined).
start_ready_at_once() {
    daemon_start "$1" "$T/e.yaml"
    deadline=$(( $(date +%s) + 60 ))
    while :; do
        code=$(curl -s -o /dev/null -w '%{http_code}' "$(ld_url /readyz)")
        [ "$code" != 000 ] && break
        daemon_alive || fail "intentd exited at start (log $DAEMON_LOG)"
        [ "$(date +%s)" -ge "$deadline" ] && fail "no HTTP answer within 60 s"
        sleep 0.05
    done
    [ "$code" = 200 ] || fail "/readyz answered $code first after a restart with a checkpoint"
}
delivered() { sed -n 's/.*delivered \([0-9]*\) events (.*/\1/p' "$1" | tail -1; }

note "1. the embedded broker: learn, stop, restart"
DAEMON_BROKERS=embedded
daemon_config_deterministic "$T/e.yaml" snapshot.max_regression=100 checkpoint.keep=3 \
    kafka.dead_letter_topic="''"
daemon_start e1 "$T/e.yaml"
daemon_wait_healthy 60
wait_for 30 "[ -s '$DAEMON_STATE/embedded-brokers' ]"
replay_run r1 "$T/e.yaml" --csv "$CSV" --label Revenue --direct --limit 3000
daemon_wait_metric intentd_events_consumed_total 3000 120
daemon_wait_ready 60
trained=$(daemon_wait_drained 120)
sleep 3 # a checkpoint interval (1 s) past the last event, so one holds all of it
V1=$(model_field version)
F1=$(model_field fingerprint)
N1=$(model_field trained_examples)
[ "$N1" = "$trained" ] || fail "served model has $N1 examples, trained $trained"
daemon_kill9
[ -n "$(checkpoint_newest "$DAEMON_STATE")" ] || fail "no checkpoint in $DAEMON_STATE"
MARK=$(cat "$DAEMON_STATE/model-version")
echo "before the restart: version $V1 (mark $MARK), $N1 examples, fingerprint $F1"

start_ready_at_once e2
[ "$(model_field fingerprint)" = "$F1" ] || fail "the restored model is not the one served"
[ "$(model_field trained_examples)" = "$N1" ] || fail "restored $(model_field trained_examples)"
V2=$(model_field version)
[ "$V2" -ge "$MARK" ] || fail "model_version went back: $V2 after $MARK"
[ "$(metric_sum intentd_events_consumed_total)" = 3000 ] || fail "counters not restored"
wait_for 60 "grep -q 'intentd.clicks\[[0-9]*\]: offset [0-9]* is not on the broker' '$DAEMON_LOG'"
grep 'is not on the broker' "$DAEMON_LOG" | head -2
daemon_wait_metric intentd_offset_resets_total 1 60
resets=$(metric_sum intentd_offset_resets_total)
echo "offset resets counted: $resets"
curl -fs "$(ld_url /metrics)" |
    grep -q '^intentd_offset_resets_total{topic="intentd.clicks",partition="[0-9]*"} [1-9]' ||
    fail "no intentd_offset_resets_total{topic,partition} sample for the clicks topic"
[ "$(model_field fingerprint)" = "$F1" ] || fail "the model changed without new events"

note "1b. new events after the reset are learned (from the new topic's earliest offset)"
wait_for 30 "[ -s '$DAEMON_STATE/embedded-brokers' ]"
replay_run r2 "$T/e.yaml" --csv "$CSV" --label Revenue --direct --limit 1000 --shuffle 5
daemon_wait_metric intentd_events_consumed_total 4000 120
daemon_wait_drained 120 > /dev/null
[ "$(metric_sum intentd_events_consumed_total)" = 4000 ] ||
    fail "consumed $(metric_sum intentd_events_consumed_total), want 3000 + 1000"
deadline=$(( $(date +%s) + 30 ))
until [ "$(model_field version)" -gt "$V2" ]; do
    [ "$(date +%s)" -ge "$deadline" ] && fail "no new model version after new events"
    sleep 0.2
done
[ "$(model_field trained_examples)" -gt "$N1" ] || fail "nothing learned from new events"
sleep 3
daemon_stop 60 || fail "stop: $DAEMON_RC"

note "2. a corrupted newest checkpoint is skipped, the previous one loaded"
set -- $(checkpoints_in "$DAEMON_STATE")
[ $# -ge 2 ] || fail "want 2 checkpoints, have $#"
NEWEST=$1
PREV=$2
MARK=$(cat "$DAEMON_STATE/model-version")
corrupt_byte "$NEWEST"
start_ready_at_once e3
grep -q "skipping checkpoint $NEWEST: " "$DAEMON_LOG" ||
    fail "no warning naming $NEWEST (log $DAEMON_LOG)"
grep "skipping checkpoint" "$DAEMON_LOG" | head -1
pseq=$(basename "$PREV" .ck | sed 's/^checkpoint-0*//')
grep -q "resumed from checkpoint $pseq:" "$DAEMON_LOG" ||
    fail "checkpoint $pseq ($PREV) was not the one loaded: $(grep resumed "$DAEMON_LOG")"
V3=$(model_field version)
[ "$V3" -ge "$MARK" ] || fail "model_version went back: $V3 after $MARK"
daemon_kill9

note "2b. a torn (half) newest checkpoint is skipped as well"
set -- $(checkpoints_in "$DAEMON_STATE")
NEWEST=$1
truncate_half "$NEWEST"
start_ready_at_once e4
grep -q "skipping checkpoint $NEWEST: " "$DAEMON_LOG" || fail "no warning naming torn $NEWEST"
grep -q "resumed from checkpoint" "$DAEMON_LOG" || fail "nothing loaded after a torn newest"
daemon_kill9

note "3. another model shape or schema: refused, exit 1, the difference named"
cp "$T/e.yaml" "$T/e-keep.yaml"
daemon_config_deterministic "$T/e.yaml" snapshot.max_regression=100 kafka.dead_letter_topic="''" \
    model.hidden='[16, 8]'
"$BIN/intentd" -c "$T/e.yaml" > "$T/shape.log" 2>&1
rc=$?
[ $rc -eq 1 ] || fail "a checkpoint of another model shape: exit $rc, want 1"
grep -q "refusing to start: checkpoint .*hidden layer 1 has width 64, not 16" "$T/shape.log" ||
    fail "the difference is not named: $(cat "$T/shape.log")"
grep 'refusing to start' "$T/shape.log" | head -1
/usr/bin/python3 - "$T/e-keep.yaml" "$T/e.yaml" << 'EOF' || fail "cannot change the schema"
import sys, yaml
c = yaml.safe_load(open(sys.argv[1]))
for f in c["features"]:
    if f.get("type") == "categorical":
        f["buckets"] = int(f["buckets"]) * 2
        break
yaml.safe_dump(c, open(sys.argv[2], "w"), default_flow_style=False, sort_keys=False)
EOF
"$BIN/intentd" -c "$T/e.yaml" > "$T/schema.log" 2>&1
rc=$?
[ $rc -eq 1 ] || fail "a checkpoint of another schema: exit $rc, want 1"
grep -q 'refusing to start: .*feature "[A-Za-z]*" has [0-9]* buckets, not' "$T/schema.log" ||
    fail "the schema difference is not named: $(cat "$T/schema.log")"
grep 'refusing to start' "$T/schema.log" | head -1
cp "$T/e-keep.yaml" "$T/e.yaml"

note "4. state_dir is a file: clear error, exit 1"
: > "$T/not-a-dir"
DAEMON_STATE=$T/not-a-dir daemon_config "$T/f.yaml"
"$BIN/intentd" -c "$T/f.yaml" > "$T/file.log" 2>&1
rc=$?
[ $rc -eq 1 ] || fail "state_dir a file: exit $rc, want 1"
grep -q "state_dir $T/not-a-dir .*not a directory" "$T/file.log" ||
    fail "no clear error: $(cat "$T/file.log")"
grep 'state_dir' "$T/file.log" | head -1
DAEMON_STATE=$T/not-a-dir/sub daemon_config "$T/g.yaml"
"$BIN/intentd" -c "$T/g.yaml" > "$T/sub.log" 2>&1
rc=$?
[ $rc -eq 1 ] || fail "state_dir under a file: exit $rc, want 1"
grep -q "state_dir" "$T/sub.log" || fail "no clear error: $(cat "$T/sub.log")"
grep 'state_dir' "$T/sub.log" | head -1
echo ok
