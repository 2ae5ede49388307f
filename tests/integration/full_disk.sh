# A full disk while checkpointing (issue 6): state_dir on a small tmpfs, filled up while the
# daemon learns.  It keeps serving (/v1/predict 200, polled) and learning,
# intentd_checkpoint_failures_total rises, the log names the error, the previous checkpoint
# stays intact (same bytes, and a daemon started on a copy of it resumes from it); once space
# is freed, checkpoints succeed again without new events (the failed one is retried:
# intentd_checkpoint_last_success_timestamp_seconds advances).  The counts and the model's
# fingerprint equal those of a daemon (own group, state on the normal disk) started on the
# same topic afterwards.  Skipped (77) where mounting a tmpfs is not allowed.
. tests/integration/lib_daemon.sh
ld_init
CSV="$TOP/tests/data/online_shoppers_intention.csv"

small_tmpfs "$T/a" 32m || { echo "mount -t tmpfs is not allowed here: skipped"; exit 77; }
devbroker_start --partitions 1
DAEMON_PORT=$(free_port) DAEMON_STATE=$T/a DAEMON_GROUP=disk-a \
    daemon_config_deterministic "$T/a.yaml" snapshot.max_regression=100 \
    training.replay_capacity=4096
DAEMON_PORT=$(free_port) DAEMON_STATE=$T/b DAEMON_GROUP=disk-b \
    daemon_config_deterministic "$T/b.yaml" snapshot.max_regression=100 \
    training.replay_capacity=4096
PORT_A=$(sed -n 's/^  listen: 127.0.0.1://p' "$T/a.yaml")
PORT_B=$(sed -n 's/^  listen: 127.0.0.1://p' "$T/b.yaml")
PID_A=""
PID_B=""
use() {
    if [ "$1" = A ]; then DAEMON_PORT=$PORT_A; DAEMON_PID=$PID_A; DAEMON_STATE=$T/a
    else DAEMON_PORT=$PORT_B; DAEMON_PID=$PID_B; DAEMON_STATE=$T/b; fi
    PORT=$DAEMON_PORT
}
# predict_ok: one prediction must answer 200.
predict_ok() {
    code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -d '{"features": {"PageValues": 1}}' \
        "$(ld_url /v1/predict)")
    [ "$code" = 200 ] || fail "/v1/predict answered $code ($1)"
}
last_success() { metric intentd_checkpoint_last_success_timestamp_seconds; }

note "A learns with state_dir on a 32 MiB tmpfs"
use A
daemon_start a "$T/a.yaml"
PID_A=$DAEMON_PID
daemon_wait_healthy 60
replay_run r1 "$T/a.yaml" --csv "$CSV" --label Revenue --direct --limit 2000
daemon_wait_metric intentd_events_consumed_total 2000 120
daemon_wait_ready 60
daemon_wait_drained 120 > /dev/null
wait_for 30 "[ -n \"\$(ls '$T/a' | grep '^checkpoint-.*\.ck\$')\" ]"
sleep 2 # the checkpoint holding all 2000 events
PREV=$(checkpoint_newest "$T/a")
PREV_SUM=$(sha256sum < "$PREV")
S0=$(last_success)
F0=$(metric_sum intentd_checkpoint_failures_total)
echo "newest checkpoint before the disk fills: $PREV ($(stat -c %s "$PREV") bytes), at $S0"

note "the disk fills up; learning goes on"
fill_fs "$T/a"
echo "free on $T/a: $(df -k "$T/a" | awk 'NR == 2 { print $4 }') KiB"
trained0=$(metric_sum intentd_examples_trained_total)
replay_bg r2 "$T/a.yaml" --csv "$CSV" --label Revenue --direct --limit 3000 --shuffle 4 \
    --rate 500
deadline=$(( $(date +%s) + 120 ))
while :; do
    predict_ok "while the disk is full"
    f=$(metric_sum intentd_checkpoint_failures_total)
    [ "${f:-0}" -ge $((F0 + 2)) ] && break
    [ "$(date +%s)" -ge "$deadline" ] && fail "checkpoint failures stayed at '$f'"
    sleep 0.2
done
wait "$REPLAY_PID" || fail "replay r2 failed"
daemon_wait_metric intentd_events_consumed_total 5000 120
daemon_wait_drained 120 > /dev/null
predict_ok "after learning on a full disk"
trained1=$(metric_sum intentd_examples_trained_total)
[ "$trained1" -gt "$trained0" ] || fail "not learning on a full disk: $trained0 -> $trained1"
grep 'checkpoint failed' "$DAEMON_LOG" | head -1
grep -q 'checkpoint failed (.*No space left on device' "$DAEMON_LOG" ||
    fail "the log does not name the error"
[ "$(last_success)" = "$S0" ] || fail "a checkpoint succeeded on a full disk?"
[ "$(checkpoint_newest "$T/a")" = "$PREV" ] || fail "the newest checkpoint changed"
[ "$(sha256sum < "$PREV")" = "$PREV_SUM" ] || fail "the previous checkpoint changed"
ls "$T/a" | grep -q '\.tmp$' && fail "a partial .tmp was left: $(ls "$T/a")"

note "the previous checkpoint is loadable (a daemon on a copy resumes from it)"
mkdir -p "$T/copy"
cp "$PREV" "$T/copy/"
seq=$(basename "$PREV" .ck | sed 's/^checkpoint-0*//')
DAEMON_PORT=$(free_port) DAEMON_STATE=$T/copy DAEMON_BROKERS=embedded \
    daemon_config_deterministic "$T/copy.yaml" kafka.dead_letter_topic="''"
"$BIN/intentd" -c "$T/copy.yaml" > "$T/copy.log" 2>&1 &
CP_PID=$!
wait_for 30 "grep -q 'resumed from checkpoint $seq: ' '$T/copy.log'"
grep 'resumed from checkpoint' "$T/copy.log"
kill -TERM "$CP_PID"
ld_wait_pid "$CP_PID" 30 || fail "the copy's daemon did not stop"
use A # daemon_config pointed PORT at the copy's daemon

note "space freed: the failed checkpoint is retried and succeeds"
free_fs "$T/a"
deadline=$(( $(date +%s) + 60 ))
until awk -v a="$(last_success)" -v b="$S0" 'BEGIN { exit !(a != "" && a + 0 > b + 0) }'; do
    predict_ok "after freeing space"
    [ "$(date +%s)" -ge "$deadline" ] && fail "no checkpoint succeeded after freeing space"
    sleep 0.2
done
NEW=$(checkpoint_newest "$T/a")
[ "$NEW" != "$PREV" ] || fail "no new checkpoint file"
echo "checkpoints again: $NEW, last success $S0 -> $(last_success)," \
    "failures $(metric_sum intentd_checkpoint_failures_total)"

note "counts and model equal an undisturbed run's"
use B
daemon_start b "$T/b.yaml"
PID_B=$DAEMON_PID
daemon_wait_metric intentd_events_consumed_total 5000 120
daemon_wait_drained 120 > /dev/null
# state NAME: counts, then the served model once it holds every trained example.
state() {
    want=$(metric_sum intentd_examples_trained_total)
    deadline=$(( $(date +%s) + 60 ))
    until [ "$(model_field trained_examples)" = "$want" ]; do
        [ "$(date +%s)" -ge "$deadline" ] && fail "$1 serves an older model"
        sleep 0.2
    done
    printf 'consumed=%s pos=%s neg=%s trained=%s fingerprint=%s\n' \
        "$(metric_sum intentd_events_consumed_total)" \
        "$(metric 'intentd_examples_total{label="positive"}')" \
        "$(metric 'intentd_examples_total{label="negative"}')" "$want" \
        "$(model_field fingerprint)"
}
SB=$(state B)
use A
SA=$(state A)
echo "A (full disk): $SA"
echo "B (no fault):  $SB"
[ "$SA" = "$SB" ] || fail "A and B differ"
daemon_stop 60 || fail "A's stop: $DAEMON_RC"
use B
daemon_stop 60 || fail "B's stop: $DAEMON_RC"
devbroker_stop
echo ok
