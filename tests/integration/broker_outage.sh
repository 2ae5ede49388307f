# The broker down for 10 seconds during a replay (issue 6): intentd-devbroker takes its
# broker down (SIGUSR1: rd_kafka_mock_broker_set_down, data kept) and up again (SIGUSR2).
# /v1/predict answers 200 throughout (polled every 200 ms during the outage), no example is
# lost or doubled: once drained, consumed == delivered, 1,908 positives for the whole UCI
# file, and every count equals that of a daemon (own group, own state) started after the
# outage on the same topics, which never saw it.  Deterministic settings (max_batch_wait 0,
# idle_timeout 0) so that examples trained compare exactly too.
. tests/integration/lib_daemon.sh
ld_init
CSV="$TOP/tests/data/online_shoppers_intention.csv"
OUTAGE=10

devbroker_start --partitions 4
DAEMON_PORT=$(free_port) DAEMON_STATE=$T/a DAEMON_GROUP=outage-a \
    daemon_config_deterministic "$T/a.yaml"
DAEMON_PORT=$(free_port) DAEMON_STATE=$T/b DAEMON_GROUP=outage-b \
    daemon_config_deterministic "$T/b.yaml"
PORT_B=$(sed -n 's/^  listen: 127.0.0.1://p' "$T/b.yaml")
PORT_A=$(sed -n 's/^  listen: 127.0.0.1://p' "$T/a.yaml")
PID_A=""
PID_B=""
use() {
    if [ "$1" = A ]; then DAEMON_PORT=$PORT_A; DAEMON_PID=$PID_A; DAEMON_STATE=$T/a
    else DAEMON_PORT=$PORT_B; DAEMON_PID=$PID_B; DAEMON_STATE=$T/b; fi
    PORT=$DAEMON_PORT
}
use A
daemon_start a "$T/a.yaml"
PID_A=$DAEMON_PID
daemon_wait_healthy 60

note "replay at 700 events/s; the broker goes down once a model is served"
replay_bg r "$T/a.yaml" --csv "$CSV" --label Revenue --rate 700
daemon_wait_ready 120
devbroker_down
c_down=$(metric_sum intentd_events_consumed_total)
t_end=$(( $(date +%s) + OUTAGE ))
polls=0
while [ "$(date +%s)" -lt "$t_end" ]; do
    code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -d '{"features": {"PageValues": 3}}' \
        "$(ld_url /v1/predict)")
    [ "$code" = 200 ] || fail "/v1/predict answered $code during the outage (poll $polls)"
    polls=$((polls + 1))
    sleep 0.2
done
c_up=$(metric_sum intentd_events_consumed_total)
devbroker_up
echo "broker down ${OUTAGE} s: $polls predictions, all 200; consumed $c_down -> $c_up meanwhile"
kill -0 "$REPLAY_PID" 2> /dev/null || echo "(the replay ended during the outage)"
wait "$REPLAY_PID" || fail "the replay failed (log $T/r.log)"
D=$(sed -n 's/.*delivered \([0-9]*\) events (.*/\1/p' "$T/r.log" | tail -1)
[ "$D" = 14238 ] || fail "the replay delivered '$D', want 14238"

note "A catches up; B, started now, reads the same topics undisturbed"
daemon_wait_metric intentd_events_consumed_total "$D" 180
daemon_wait_drained 120 > /dev/null
curl -fs -o /dev/null -X POST -d '{"features": {}}' "$(ld_url /v1/predict)" || fail "predict"
use B
daemon_start b "$T/b.yaml"
PID_B=$DAEMON_PID
daemon_wait_metric intentd_events_consumed_total "$D" 180
daemon_wait_drained 120 > /dev/null
counts() {
    curl -fs "$(ld_url /metrics)" | awk -v names="events_consumed_total examples_total \
        pending_labels pending_transactions unmatched_transactions_total pending_evicted_total \
        examples_trained_total train_batches_total" '
        BEGIN { n = split(names, a, " "); for (i = 1; i <= n; i++) want["intentd_" a[i]] = 1 }
        { m = $1; sub(/\{.*/, "", m) }
        m in want { printf "%s=%s ", $1, $2 }
        END { print "" }'
}
CB=$(counts)
use A
CA=$(counts)
echo "A (outage): $CA"
echo "B (none):   $CB"
[ "$(metric_sum intentd_events_consumed_total)" = "$D" ] || fail "A consumed != delivered $D"
[ "$(metric 'intentd_examples_total{label="positive"}')" = 1908 ] || fail "positives != 1908"
[ "$CA" = "$CB" ] || fail "counts differ from the undisturbed run"
daemon_stop 60 || fail "A's stop: $DAEMON_RC"
use B
daemon_stop 60 || fail "B's stop: $DAEMON_RC"
devbroker_stop
echo ok
