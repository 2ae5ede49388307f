# The durability guarantee with joined events (issue 6, DESIGN.md §8): clicks and
# transactions (plain intentd-replay) over 4 partitions of each topic, a daemon SIGKILLed at
# random moments at least 10 times (3 in sanitizer passes) and restarted while the replay
# runs, and a second daemon (own group, own state) on the same topics that never crashes.
# The interleaving of partitions is not deterministic, so the model is not compared; every
# count is: events consumed per topic, positive and negative examples, pending labels and
# transactions, unmatched and evicted, examples trained (every example learned exactly once).
# Settings as crash_loop.sh (max_batch_wait 0, idle_timeout 0, session.timeout.ms 4 s).
. tests/integration/lib_daemon.sh
ld_init
CSV="$TOP/tests/data/online_shoppers_intention.csv"
KILLS=${CRASH_KILLS:-12}
[ -n "${SAN:-}" ] && KILLS=3
# The replay outlasts the kills: a restart takes ~3-8 s to get the partition back (below).
ROWS=${CRASH_ROWS:-4000}
RATE=${CRASH_RATE:-45}
[ -n "${SAN:-}" ] && ROWS=1200
PROPS='kafka.properties={"session.timeout.ms":"4000","heartbeat.interval.ms":"500"}'

devbroker_start --partitions 4

note "configurations: A crashes, B never does"
crash_pair joined snapshot.max_regression=100 "$PROPS"

note "B: the uninterrupted run"
use B
daemon_start b "$T/b.yaml"
PID_B=$DAEMON_PID

note "replay of $ROWS rows at $RATE events/s while A is killed $KILLS times"
replay_bg r "$T/a.yaml" --csv "$CSV" --label Revenue --limit "$ROWS" --rate "$RATE"
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
P=$(awk -F, -v n="$ROWS" 'NR > 1 && NR <= n + 1 { sub(/\r$/, ""); if (toupper($NF) == "TRUE") p++ }
    END { print p + 0 }' "$CSV")
[ "$D" = $((ROWS + P)) ] || fail "the replay delivered '$D' events, not $ROWS clicks + $P"

note "A restarted for good; both drain"
daemon_start a-final "$T/a.yaml"
PID_A=$DAEMON_PID
daemon_wait_ready 60
daemon_wait_metric intentd_events_consumed_total "$D" 120
daemon_wait_drained 120 > /dev/null
use B
daemon_wait_metric intentd_events_consumed_total "$D" 120
daemon_wait_drained 120 > /dev/null

counts() {
    curl -fs "$(ld_url /metrics)" | awk -v names="events_consumed_total examples_total \
        pending_labels pending_transactions unmatched_transactions_total pending_evicted_total \
        examples_trained_total" '
        BEGIN { n = split(names, a, " "); for (i = 1; i <= n; i++) want["intentd_" a[i]] = 1 }
        { m = $1; sub(/\{.*/, "", m) }
        m in want { printf "%s=%s ", $1, $2 }
        END { printf "rejected=" }'
    metric_sum intentd_events_rejected_total
}
CB=$(counts)
use A
CA=$(counts)
echo "A (killed $kills times): $CA"
echo "B (never killed):        $CB"
echo "$CA" | grep -q 'intentd_examples_total{label="positive"}='"$P"' ' ||
    fail "A has not $P positive examples"
echo "$CA" | grep -q 'intentd_pending_labels=[1-9]' ||
    fail "no pending labels: the window test is vacuous"
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
echo "A's model version at the last restart $prev"

daemon_stop 60 || fail "A did not stop cleanly: $DAEMON_RC"
use B
daemon_stop 60 || fail "B did not stop cleanly: $DAEMON_RC"
devbroker_stop
echo ok
