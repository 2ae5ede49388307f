#!/bin/sh
# A real Prometheus server (the Debian package, on loopback) scrapes a live daemon that has
# learned from the UCI data: its query API must return intentd_model_version >= 1 and
# intentd_examples_trained_total > 0 for the target, the target must be up, and the alert
# rules of docker/prometheus/alerts.yml must load into the server.
. tests/integration/lib_daemon.sh
command -v prometheus > /dev/null || { echo "prometheus not installed"; exit 77; }
slow_test
ld_init
DAEMON_PORT=$(free_port)
daemon_config "$T/d.yaml"
daemon_start d "$T/d.yaml"
daemon_wait_healthy 60

note "replay 2000 directly labelled rows; wait for a served model"
replay_run r "$T/d.yaml" --csv tests/data/online_shoppers_intention.csv --label Revenue \
    --positive TRUE --direct --limit 2000
daemon_wait_ready 120

PPORT=$(free_port)
cat > "$T/prometheus.yml" << EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $TOP/docker/prometheus/alerts.yml
scrape_configs:
  - job_name: intentd
    static_configs:
      - targets: ["127.0.0.1:$DAEMON_PORT"]
EOF
promtool check config "$T/prometheus.yml" > /dev/null || fail "promtool rejects the test config"
note "prometheus on 127.0.0.1:$PPORT scraping 127.0.0.1:$DAEMON_PORT"
start_bg prometheus prometheus --config.file="$T/prometheus.yml" \
    --storage.tsdb.path="$T/tsdb" --web.listen-address="127.0.0.1:$PPORT"
PROM_PID=$LAST_PID

# query EXPR: the value of the first sample of an instant query (empty if none yet).
query() {
    curl -fs --get "http://127.0.0.1:$PPORT/api/v1/query" --data-urlencode "query=$1" \
        2> /dev/null | /usr/bin/python3 -c '
import json, sys
try:
    r = json.load(sys.stdin)["data"]["result"]
    print(r[0]["value"][1] if r else "")
except Exception:
    pass'
}
# wait_query SECONDS EXPR AWK-CONDITION-ON-v
wait_query() {
    deadline=$(( $(date +%s) + $1 ))
    while :; do
        v=$(query "$2")
        [ -n "$v" ] && awk -v v="$v" "BEGIN { exit !($3) }" && { echo "$v"; return 0; }
        kill -0 "$PROM_PID" 2> /dev/null || fail "prometheus exited"
        daemon_alive || fail "intentd exited"
        [ "$(date +%s)" -ge "$deadline" ] && fail "timed out: $2 = '$v', wanted $3"
        sleep 0.5
    done
}

up=$(wait_query 90 'up{job="intentd"}' 'v == 1')
version=$(wait_query 90 'intentd_model_version{job="intentd"}' 'v >= 1')
trained=$(wait_query 90 'intentd_examples_trained_total{job="intentd"}' 'v > 0')
note "Prometheus sees up=$up, intentd_model_version=$version, examples trained=$trained"

# The scraped exposition parses cleanly (no sample dropped) and the alert rules loaded.
curl -fs "http://127.0.0.1:$PPORT/api/v1/targets" | /usr/bin/python3 -c '
import json, sys
t = [t for t in json.load(sys.stdin)["data"]["activeTargets"] if t["labels"]["job"] == "intentd"]
assert len(t) == 1 and t[0]["health"] == "up" and not t[0]["lastError"], t' \
    || fail "the intentd target is not healthy in Prometheus"
rules=$(curl -fs "http://127.0.0.1:$PPORT/api/v1/rules" | /usr/bin/python3 -c '
import json, sys
print(sum(len(g["rules"]) for g in json.load(sys.stdin)["data"]["groups"]))')
want=$(grep -c '^ *- alert:' docker/prometheus/alerts.yml)
[ "$rules" = "$want" ] || fail "Prometheus loaded $rules alert rules, alerts.yml has $want"
# A dashboard expression over real data: the predict latency histogram is well-formed.
curl -fs -o /dev/null -X POST -d '{"features": {"PageValues": 12.5}}' "$(ld_url /v1/predict)" \
    || fail "predict failed"
wait_query 60 'sum(intentd_predict_duration_seconds_count{job="intentd"})' 'v >= 1' > /dev/null
note "target healthy, $rules alert rules loaded, predict histogram scraped"

daemon_stop 60 || fail "intentd did not stop cleanly: $DAEMON_RC"
echo "prometheus_scrape: ok"
