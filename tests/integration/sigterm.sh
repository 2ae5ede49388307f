# A graceful stop in the middle of the stream (issue 4, DESIGN.md §4): SIGTERM while a replay
# is producing makes the daemon finish the batch in hand, write a final checkpoint, commit
# the offsets and exit 0 within STOP_BOUND seconds, saying "stopped" in its log.  Restarted
# on the same state_dir while the replay goes on, it resumes exactly where it stopped: at the
# end consumed == delivered (no gap, no duplicate: the counters are restored with the
# offsets they cover), 1,908 positives and negatives + pending == 10,422.
. tests/integration/lib_daemon.sh
ld_init
CSV="$TOP/tests/data/online_shoppers_intention.csv"
STOP_BOUND=30

devbroker_start --partitions 4
daemon_config "$T/d.yaml" checkpoint.interval=1s
daemon_start d1 "$T/d.yaml"
daemon_wait_healthy 60

note "SIGTERM while the replay runs"
replay_bg r1 "$T/d.yaml" --csv "$CSV" --label Revenue --rate 800
daemon_wait_metric intentd_events_consumed_total 3000 120
kill -0 "$REPLAY_PID" 2> /dev/null || fail "the replay ended before the SIGTERM; test is moot"
before=$(metric_sum intentd_events_consumed_total)
daemon_stop $STOP_BOUND ||
    fail "intentd did not exit 0 within $STOP_BOUND s of SIGTERM: $DAEMON_RC"
stopped=$(sed -n 's/.*main: \(stopped in .*\)/\1/p' "$DAEMON_LOG")
echo "exit 0 after ${DAEMON_STOP_SECS}s (bound ${STOP_BOUND}s; the log: $stopped)," \
    "having consumed >= $before events"
grep -q 'main: SIGTERM: stopping' "$DAEMON_LOG" || fail "no SIGTERM line in the log"
grep -q 'main: stopped in ' "$DAEMON_LOG" || fail "the log does not say it stopped"
grep -q 'did not become durable' "$DAEMON_LOG" && fail "the final checkpoint was not durable"
[ -n "$(checkpoint_newest "$T/state")" ] || fail "no checkpoint in the state folder"
kill -0 "$REPLAY_PID" 2> /dev/null ||
    fail "the replay ended while the daemon stopped; test is moot"

note "restart on the same state while the replay goes on"
daemon_start d2 "$T/d.yaml"
daemon_wait_healthy 60
wait_for 30 "grep -q 'main: resumed from checkpoint' '$DAEMON_LOG'"
grep -q 'assigned intentd.clicks\[0\] at offset ' "$DAEMON_LOG" ||
    wait_for 60 "grep -q 'assigned intentd.clicks\[0\] at offset ' '$DAEMON_LOG'"
restored=$(metric_sum intentd_events_consumed_total)
[ "$restored" -ge "$before" ] || fail "restored consumed count $restored < $before before the stop"
wait "$REPLAY_PID" || fail "the replay failed (log $T/r1.log)"
D=$(sed -n 's/.*delivered \([0-9]*\) events (.*/\1/p' "$T/r1.log" | tail -1)
[ "$D" = 14238 ] || fail "the replay delivered '$D'"
daemon_wait_metric intentd_events_consumed_total "$D" 120
daemon_wait_drained 120 > /dev/null
c=$(metric_sum intentd_events_consumed_total)
[ "$c" = "$D" ] || fail "consumed $c over both runs, delivered $D (gap or duplicate)"
pos=$(metric 'intentd_examples_total{label="positive"}')
neg=$(metric 'intentd_examples_total{label="negative"}')
pend=$(metric intentd_pending_labels)
echo "after the restart: consumed $c == delivered $D; positive $pos, negative $neg + pending $pend"
[ "$pos" = 1908 ] || fail "positives $pos, want 1908"
[ $((neg + pend)) -eq 10422 ] || fail "negatives $neg + pending $pend != 10422"
[ "$(metric intentd_unmatched_transactions_total)" = 0 ] || fail "unmatched transactions"
[ "$(metric_sum intentd_offset_resets_total)" = 0 ] || fail "offsets were reset"

note "SIGTERM repeated during the stop (an impatient operator, a script after a Ctrl-C)"
# A repeat must not kill the daemon mid-stop: every thread a library started before main()
# (OpenBLAS's) would take it with the default action if nothing caught it.
replay_bg r2 "$T/d.yaml" --csv "$CSV" --label Revenue --direct --limit 3000 --rate 1000 \
    --step 10ms
daemon_wait_metric intentd_events_consumed_total $((D + 500)) 120
kill -TERM "$DAEMON_PID"; kill -TERM "$DAEMON_PID"; kill -INT "$DAEMON_PID"
daemon_stop $STOP_BOUND || fail "repeated SIGTERM: exit $DAEMON_RC (143: killed by the repeat)"
grep -q 'main: stopped in ' "$DAEMON_LOG" || fail "no 'stopped' after a repeated SIGTERM"
grep -q 'did not become durable' "$DAEMON_LOG" && fail "the final checkpoint was not durable"
wait "$REPLAY_PID" || fail "the second replay failed"
devbroker_stop
echo ok
