#!/bin/sh
# `make run`: the daemon on config/dev.yaml with its embedded broker, and the shipped UCI
# data replayed into it in a loop at a modest rate, so the model visibly keeps learning.
# Ctrl-C stops both (the daemon checkpoints and exits 0).
BUILD=${BUILD:-build}
CONFIG=${CONFIG:-config/dev.yaml}
RATE=${RATE:-200}
state=$("$BUILD/intentd" --print-config -c "$CONFIG" | sed -n 's/^state_dir: *//p' | tr -d '"')
listen=$("$BUILD/intentd" --print-config -c "$CONFIG" | sed -n 's/^  listen: *//p' | tr -d '"')
mkdir -p "$state"
rm -f "$state/embedded-brokers"

"$BUILD/intentd" -c "$CONFIG" &
daemon=$!
replay=""
stop() {
    trap - INT TERM EXIT
    [ -n "$replay" ] && kill -TERM "$replay" 2>/dev/null
    kill -TERM "$daemon" 2>/dev/null
    wait "$daemon" 2>/dev/null
    echo "intentd stopped."
    exit 0
}
trap stop INT TERM EXIT

i=0
while [ ! -s "$state/embedded-brokers" ]; do
    kill -0 "$daemon" 2>/dev/null || { echo "intentd exited; see the log above"; exit 1; }
    i=$((i + 1)); [ $i -gt 300 ] && { echo "the embedded broker did not start"; exit 1; }
    sleep 0.1
done
"$BUILD/intentd-replay" --brokers "@$state/embedded-brokers" --config "$CONFIG" \
    --csv tests/data/online_shoppers_intention.csv --label Revenue --positive TRUE \
    --rate "$RATE" --loop --shuffle 1 2>"$state/replay.log" &
replay=$!

cat <<MSG

  intentd is learning from the UCI data replayed at $RATE events/s (replay log: $state/replay.log).
  Readiness:  curl -s http://$listen/readyz
  Score:      curl -s -X POST http://$listen/v1/predict -H 'Content-Type: application/json' \\
                -d '{"features": {"PageValues": 12.5, "Month": "Nov", "Weekend": true}}'
  Model:      curl -s http://$listen/v1/model
  Metrics:    curl -s http://$listen/metrics
  Ctrl-C stops both.

MSG
wait "$daemon"
