# The durability guarantee on one partition (issue 6, DESIGN.md §8): directly labelled events
# (intentd-replay --direct) into a dev broker with one partition, a daemon SIGKILLed at random
# moments at least 10 times (3 in sanitizer passes) and restarted while the replay runs, and a
# second daemon (own group, own state) on the same topic that never crashes.  Once both have
# drained, /v1/model's trained_examples and fingerprint are identical, and so are the counts:
# nothing lost, nothing learned twice, bit for bit.
#
# Deterministic settings: training.max_batch_wait 0 (full batches only), labels.idle_timeout 0,
# model.seed fixed, snapshot.max_regression 100 (the gate never refuses, so both serve their
# final model), a short snapshot.interval (the drained model is published).
#
# Rejoining after SIGKILL: the mock broker keeps the dead member until session.timeout.ms
# expires (no static membership), and each join round waits 3 s (its
# group.initial.rebalance.delay).  A session.timeout.ms of 4 s (the mock drops members that
# wait longer than it in a join round, so it must exceed 3 s) gives a resume in ~3-8 s
# instead of ~6-11 s with ingest's default 6 s (Kafka's minimum, kept for real brokers).
. tests/integration/lib_daemon.sh
ld_init
CSV="$TOP/tests/data/online_shoppers_intention.csv"
KILLS=${CRASH_KILLS:-12}
[ -n "${SAN:-}" ] && KILLS=3
# The replay outlasts the kills: a restart takes ~3-8 s to get the partition back (below).
ROWS=${CRASH_ROWS:-4000}
RATE=${CRASH_RATE:-40}
[ -n "${SAN:-}" ] && ROWS=1200
PROPS='kafka.properties={"session.timeout.ms":"4000","heartbeat.interval.ms":"500"}'

devbroker_start --partitions 1

note "configurations: A crashes, B never does"
crash_pair crash snapshot.max_regression=100 "$PROPS"

note "B: the uninterrupted run"
use B
daemon_start b "$T/b.yaml"
PID_B=$DAEMON_PID

note "replay of $ROWS rows at $RATE events/s while A is killed $KILLS times"
replay_bg r "$T/a.yaml" --csv "$CSV" --label Revenue --direct --limit "$ROWS" --rate "$RATE"
use A
kills=0
resume_ms_max=0
resume_ms_sum=0
while [ $kills -lt $KILLS ]; do
    daemon_start "a$kills" "$T/a.yaml"
    PID_A=$DAEMON_PID
    t0=$(date +%s%3N)
    daemon_wait_healthy 60
    c0=$(metric_sum intentd_events_consumed_total)
    # Wait until this incarnation consumes again (the partition is back), unless the replay
    # has ended and there is nothing left for it; then kill it at a random moment.
    deadline=$(( $(date +%s) + 60 ))
    while :; do
        c=$(metric_sum intentd_events_consumed_total)
        [ -n "$c" ] && [ -n "$c0" ] && [ "$c" -gt "$c0" ] && break
        kill -0 "$REPLAY_PID" 2> /dev/null || break
        daemon_alive || fail "intentd (A) exited after restart $kills (log $DAEMON_LOG)"
        [ "$(date +%s)" -ge "$deadline" ] && fail "A did not resume consuming within 60 s"
        sleep 0.05
    done
    dt=$(( $(date +%s%3N) - t0 ))
    [ $dt -gt $resume_ms_max ] && resume_ms_max=$dt
    resume_ms_sum=$((resume_ms_sum + dt))
    daemon_crash_after 2500 > "$T/crash.ms" # not in $(...): it advances LD_SEED
    ms=$(cat "$T/crash.ms")
    PID_A=""
    kills=$((kills + 1))
    echo "kill $kills: consumed $c0 at start, resumed in $dt ms, SIGKILL $ms ms later"
done
echo "restart to resumed consumption: max $resume_ms_max ms, mean $((resume_ms_sum / kills)) ms"
wait "$REPLAY_PID" || fail "the replay failed (log $T/r.log)"
D=$(sed -n 's/.*delivered \([0-9]*\) events (.*/\1/p' "$T/r.log" | tail -1)
[ "$D" = "$ROWS" ] || fail "the replay delivered '$D' events, not $ROWS"

note "A restarted for good; both drain"
daemon_start a-final "$T/a.yaml"
PID_A=$DAEMON_PID
daemon_wait_ready 60
daemon_wait_metric intentd_events_consumed_total "$D" 120
daemon_wait_drained 120 > /dev/null
use B
daemon_wait_metric intentd_events_consumed_total "$D" 120
daemon_wait_drained 120 > /dev/null

# snap NAME: the served model's trained_examples and fingerprint, once it is the drained
# model (the trainer publishes within snapshot.interval of the last batch).
snap() {
    want=$(metric_sum intentd_examples_trained_total)
    deadline=$(( $(date +%s) + 60 ))
    until [ "$(model_field trained_examples)" = "$want" ]; do
        [ "$(date +%s)" -ge "$deadline" ] &&
            fail "$1 serves $(model_field trained_examples) examples, trained $want"
        sleep 0.2
    done
    echo "$(model_field trained_examples) $(model_field fingerprint)"
}
counts() {
    printf 'consumed=%s positive=%s negative=%s trained=%s batches=%s rejected=%s\n' \
        "$(metric_sum intentd_events_consumed_total)" \
        "$(metric 'intentd_examples_total{label="positive"}')" \
        "$(metric 'intentd_examples_total{label="negative"}')" \
        "$(metric_sum intentd_examples_trained_total)" \
        "$(metric_sum intentd_train_batches_total)" \
        "$(metric_sum intentd_events_rejected_total)"
}
SB=$(snap B)
CB=$(counts)
V_B=$(model_field version)
use A
SA=$(snap A)
CA=$(counts)
echo "A (killed $kills times): $SA"
echo "B (never killed):        $SB"
echo "A: $CA"
echo "B: $CB"
[ "$SA" = "$SB" ] || fail "trained_examples/fingerprint differ: A '$SA', B '$SB'"
[ "$CA" = "$CB" ] || fail "counts differ: A '$CA', B '$CB'"
consumed=$(metric_sum intentd_events_consumed_total)
[ "$consumed" = "$D" ] || fail "A consumed $consumed, delivered $D"
# restarts that found a checkpoint (a kill before the first one finds none)
resumes=$(cat "$T"/a[0-9]*.log "$T/a-final.log" | grep -c 'resumed from checkpoint')
[ "$resumes" -ge $((kills / 2)) ] || fail "only $resumes of $kills restarts had a checkpoint"
# the served version of A never went back across the restarts (each log's resume line)
prev=0
i=0
while [ $i -le $kills ]; do
    f=$T/a$i.log
    [ $i -eq $kills ] && f=$T/a-final.log
    i=$((i + 1))
    v=$(sed -n 's/.*model version \([0-9]*\), .*/\1/p' "$f" | head -1)
    [ -z "$v" ] && continue
    [ "$v" -ge "$prev" ] || fail "model version went back from $prev to $v ($f)"
    prev=$v
done
echo "$resumes of $kills restarts resumed from a checkpoint"
echo "A's model version at the last restart $prev, B's $V_B"

daemon_stop 60 || fail "A did not stop cleanly: $DAEMON_RC"
use B
daemon_stop 60 || fail "B did not stop cleanly: $DAEMON_RC"
devbroker_stop
echo ok
