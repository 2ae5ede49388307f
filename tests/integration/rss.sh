# Memory stays bounded (issue 4's acceptance): ten loops of the CSV replayed at a rate the
# daemon keeps up with (RSS_RATE, 3,000 events/s) into a dev broker of 16 partitions (so
# each partition holds under the mock's 5 MiB); the daemon's RSS at the end is at most 1.2x
# its RSS after the first loop.  What is measured is whether the daemon's memory is bounded,
# so the structures whose size the configuration fixes are made to reach that size within
# the first loop: the reservoirs take their whole capacity at start (reservoir.c), the
# daemon returns large buffers to the system (mallopt and malloc_trim in main.c), and the
# pending-label table is kept small (labels.window 200ms: with --loop the
# replay's event time follows the wall clock, so a 30-minute window would grow the table for
# 30 minutes).  The buffers whose fill follows a momentary backlog on a loaded machine are
# kept small too (training.queue_capacity 4096, librdkafka's queued.max.messages.kbytes
# 4096): a trainer that falls a few seconds behind must not pass for growth.  A slow test
# (about a minute): skipped in sanitizer passes.
. tests/integration/lib_daemon.sh
slow_test
ld_init
CSV="$TOP/tests/data/online_shoppers_intention.csv"
RATE=${RSS_RATE:-3000}
LOOP=14238 # events of one pass: 12,330 clicks and 1,908 transactions
LOOPS=10

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$DAEMON_PID/status"; }

devbroker_start --partitions 16
daemon_config "$T/d.yaml" labels.window=200ms labels.allowed_lateness=100ms \
    checkpoint.interval=2s training.queue_capacity=4096 \
    "kafka.properties={queued.max.messages.kbytes: '4096'}"
daemon_start d1 "$T/d.yaml"
daemon_wait_healthy 60
wait_for 60 "[ \$(grep -c 'ingest: assigned ' '$DAEMON_LOG') -ge 32 ]"

note "$LOOPS loops of the CSV at $RATE events/s"
replay_bg r1 "$T/d.yaml" --csv "$CSV" --label Revenue --loop --shuffle 1 --rate "$RATE" \
    --step 1ms --txn-delay 100ms
daemon_wait_metric intentd_events_consumed_total $LOOP 120
rss1=$(rss_kb)
echo "after the first loop: RSS $rss1 kB"
max_rss=$rss1 max_lag=0
deadline=$(( $(date +%s) + 600 ))
while :; do
    daemon_alive || fail "intentd exited"
    c=$(metric_sum intentd_events_consumed_total)
    r=$(rss_kb)
    lag=$(metric_sum intentd_kafka_consumer_lag)
    [ "$r" -gt "$max_rss" ] && max_rss=$r
    [ "${lag%.*}" -gt "$max_lag" ] && max_lag=${lag%.*}
    [ "$c" -ge $((LOOP * LOOPS)) ] && break
    [ "$(date +%s)" -ge "$deadline" ] && fail "only $c events consumed in 600 s"
    sleep 1
done
kill -TERM "$REPLAY_PID"
wait "$REPLAY_PID" || fail "the replay failed (log $T/r1.log)"
D=$(sed -n 's/.*delivered \([0-9]*\) events (.*/\1/p' "$T/r1.log" | tail -1)
daemon_wait_metric intentd_events_consumed_total "$D" 120
daemon_wait_drained 120 > /dev/null
rss_end=$(rss_kb)
echo "after $D events ($(awk -v d="$D" -v l=$LOOP 'BEGIN { printf "%.1f", d / l }') loops):" \
    "RSS $rss_end kB, max $max_rss kB, ratio end/first" \
    "$(awk -v a="$rss_end" -v b="$rss1" 'BEGIN { printf "%.3f", a / b }'); max lag $max_lag"
[ "$(metric_sum intentd_events_consumed_total)" = "$D" ] || fail "consumed != delivered $D"
[ "$(metric_sum intentd_offset_resets_total)" = 0 ] ||
    fail "offsets were reset: the daemon fell behind the broker's retention"
[ "$(metric_sum intentd_events_rejected_total)" = 0 ] || fail "events rejected"
awk -v a="$rss_end" -v b="$rss1" 'BEGIN { exit !(a <= 1.2 * b) }' ||
    fail "RSS grew from $rss1 kB after the first loop to $rss_end kB (> 1.2x)"

daemon_stop 30 || fail "intentd did not stop cleanly: $DAEMON_RC"
devbroker_stop
echo ok
