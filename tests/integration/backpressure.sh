# Backpressure (issue 4): a tiny example queue (training.queue_capacity 64) and the trainer
# held back with the SIGUSR1 test seam while the whole CSV is replayed as fast as possible.
# While held: intentd_ingest_paused is 1, intentd_queue_examples rises to the capacity (and
# stays bounded), intentd_kafka_consumer_lag > 0 and ingest stops reading (consumed stays
# far below delivered).  After SIGUSR2: ingest resumes (pausing and resuming again as the
# queue fills and drains), every example made is learned (holdout_fraction 0 and a short
# max_batch_wait make the count exact: trained == positives + negatives), the join is
# intact (1,908 positives, negatives + pending == 10,422), consumed == delivered, and the
# gauges fall back: queue 0, lag 0, paused 0.
. tests/integration/lib_daemon.sh
ld_init
CSV="$TOP/tests/data/online_shoppers_intention.csv"
CAP=64

devbroker_start --partitions 4
daemon_config "$T/d.yaml" training.queue_capacity=$CAP training.batch_size=32 \
    training.max_batch_wait=20ms snapshot.holdout_fraction=0 checkpoint.interval=1s \
    log_level=debug
daemon_start d1 "$T/d.yaml"
daemon_wait_healthy 60
wait_for 60 "[ \$(grep -c 'ingest: assigned ' '$DAEMON_LOG') -ge 8 ]"

note "trainer held back (SIGUSR1), the whole CSV replayed as fast as possible"
kill -USR1 "$DAEMON_PID"
wait_for 30 "grep -q 'SIGUSR1: trainer stalled' '$DAEMON_LOG'"
replay_run r1 "$T/d.yaml" --csv "$CSV" --label Revenue
D=$(sed -n 's/.*delivered \([0-9]*\) events (.*/\1/p' "$T/r1.log" | tail -1)
[ "$D" = 14238 ] || fail "replay delivered '$D'"

# held_back DELIVERED: polls fast, remembering the extremes (paused seen 1, the largest queue
# and lag) until all three showed; then checks that ingest does not read on while held.
held_back() {
    seen_paused=0 max_q=0 max_lag=0
    deadline=$(( $(date +%s) + 60 ))
    while :; do
        daemon_alive || fail "intentd exited while held back"
        curl -fs "$(ld_url /metrics)" > "$T/m.txt" || fail "scrape"
        p=$(awk '$1 == "intentd_ingest_paused" { print $2 }' "$T/m.txt")
        q=$(awk '$1 == "intentd_queue_examples" { print $2 }' "$T/m.txt")
        lag=$(awk '$1 ~ /^intentd_kafka_consumer_lag\{/ && $2 > 0 { s += $2 }
            END { print s + 0 }' "$T/m.txt")
        [ "$p" = 1 ] && seen_paused=1
        [ "$q" -gt "$max_q" ] && max_q=$q
        [ "$lag" -gt "$max_lag" ] && max_lag=$lag
        [ $seen_paused = 1 ] && [ "$max_q" -ge $CAP ] && [ "$max_lag" -gt 0 ] && break
        [ "$(date +%s)" -ge "$deadline" ] &&
            fail "while held: paused seen $seen_paused, max queue $max_q (cap $CAP)," \
                "max lag $max_lag"
        sleep 0.1
    done
    sleep 2 # held for a while longer: ingest must not read on
    curl -fs "$(ld_url /metrics)" > "$T/m.txt"
    consumed=$(awk '$1 ~ /^intentd_events_consumed_total\{/ { s += $2 } END { print s + 0 }' \
        "$T/m.txt")
    trained=$(awk '$1 == "intentd_examples_trained_total" { print $2 }' "$T/m.txt")
    q=$(awk '$1 == "intentd_queue_examples" { print $2 }' "$T/m.txt")
    lag=$(awk '$1 ~ /^intentd_kafka_consumer_lag\{/ { s += $2 } END { print s + 0 }' "$T/m.txt")
    echo "held back: paused 1, queue $q (max $max_q, capacity $CAP), lag $lag," \
        "consumed $consumed of $1, trained $trained"
    [ "$(awk '$1 == "intentd_ingest_paused" { print $2 }' "$T/m.txt")" = 1 ] || fail "not paused"
    [ "$consumed" -lt "$1" ] || fail "ingest read all $consumed of $1 with a full queue"
    [ "$lag" -gt 0 ] && [ $((consumed + lag)) -eq "$1" ] ||
        fail "lag $lag + consumed $consumed != delivered $1 while paused"
    # Bounded: capacity, plus at most the examples one event's watermark move emits at once.
    [ "$q" -le $((CAP + 1000)) ] || fail "queue $q far beyond its capacity $CAP"
}
held_back "$D"

# wait_paused_0: until intentd_ingest_paused reads 0 (within 10 s).
wait_paused_0() {
    deadline=$(( $(date +%s) + 10 ))
    until [ "$(metric intentd_ingest_paused)" = 0 ]; do
        [ "$(date +%s)" -ge "$deadline" ] &&
            fail "intentd_ingest_paused still $(metric intentd_ingest_paused)"
        sleep 0.2
    done
}

note "trainer resumed (SIGUSR2): every example is learned, the gauges fall back"
kill -USR2 "$DAEMON_PID"
daemon_wait_metric intentd_events_consumed_total "$D" 180
tr=$(daemon_wait_drained 180)
pos=$(metric 'intentd_examples_total{label="positive"}')
neg=$(metric 'intentd_examples_total{label="negative"}')
pend=$(metric intentd_pending_labels)
echo "trained $tr, positive $pos, negative $neg, pending $pend"
[ "$pos" = 1908 ] || fail "positives $pos, want 1908"
[ $((neg + pend)) -eq 10422 ] || fail "negatives $neg + pending $pend != 10422"
[ "$tr" -eq $((pos + neg)) ] || fail "trained $tr != examples made $((pos + neg))"
[ "$(metric_sum intentd_events_consumed_total)" = "$D" ] || fail "consumed != delivered"
[ "$(metric intentd_queue_examples)" = 0 ] || fail "queue not empty"
[ "$(metric_sum intentd_kafka_consumer_lag)" = 0 ] || fail "lag after draining"
wait_paused_0

note "held back again: directly labelled events (straight into the queue) pause it again"
kill -USR1 "$DAEMON_PID"
wait_for 30 "[ \$(grep -c 'SIGUSR1: trainer stalled' '$DAEMON_LOG') -ge 2 ]"
# --step 10ms: event times after the first replay's watermark (a fresh run stamps back from
# now), so no click of it is late.
replay_run r2 "$T/d.yaml" --csv "$CSV" --label Revenue --direct --limit 3000 --step 10ms
held_back $((D + 3000))
kill -USR2 "$DAEMON_PID"
daemon_wait_metric intentd_events_consumed_total $((D + 3000)) 180
tr2=$(daemon_wait_drained 180)
[ "$tr2" -eq $((tr + 3000)) ] || fail "trained $tr2 after the direct replay, want $((tr + 3000))"
[ "$(metric_sum intentd_events_consumed_total)" = $((D + 3000)) ] || fail "consumed != delivered"
[ "$(metric intentd_queue_examples)" = 0 ] || fail "queue not empty"
[ "$(metric_sum intentd_kafka_consumer_lag)" = 0 ] || fail "lag after draining"
wait_paused_0
pauses=$(grep -c 'ingest: paused partitions' "$DAEMON_LOG")
resumes=$(grep -c 'ingest: resumed partitions' "$DAEMON_LOG")
echo "ingest paused $pauses times, resumed $resumes times"
[ "$pauses" -ge 2 ] && [ "$resumes" -eq "$pauses" ] ||
    fail "paused $pauses / resumed $resumes times: want one per hold at least, each resumed"

daemon_stop 30 || fail "intentd did not stop cleanly: $DAEMON_RC"
devbroker_stop
echo ok
