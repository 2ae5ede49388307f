#!/bin/sh
# The HTTP API on a live daemon that learns from a replay of the UCI data: 503 before the
# first snapshot, then scores (single and batch agree), /v1/model, the error codes, and a
# /metrics scrape taken while the model learns that `promtool check metrics` passes with no
# output at all.
. tests/integration/lib_daemon.sh
ld_init
command -v curl > /dev/null || { echo "curl missing"; exit 77; }

# code METHOD PATH [BODY_FILE]: prints the status; the answer is in $T/body, headers $T/head.
code() {
    if [ -n "${3:-}" ]; then
        curl -s -X "$1" -D "$T/head" -o "$T/body" -w '%{http_code}' -H 'Expect:' \
            -H 'Content-Type: application/json' --data-binary "@$3" "$(ld_url "$2")"
    else
        curl -s -X "$1" -D "$T/head" -o "$T/body" -w '%{http_code}' "$(ld_url "$2")"
    fi
}
# want STATUS METHOD PATH [BODY_FILE]: the status, and a JSON answer.
want() {
    st=$1; shift
    got=$(code "$@")
    [ "$got" = "$st" ] || fail "$1 $2: status $got, want $st: $(cat "$T/body")"
    grep -qi '^content-type: application/json' "$T/head" || fail "$1 $2: not JSON: $(cat "$T/head")"
}
# json_get EXPR: evaluates a Python expression over the last answer (j).
json_get() {
    /usr/bin/python3 -c \
        'import json, sys; j = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' \
        "$T/body" "$1"
}

daemon_config "$T/d.yaml" snapshot.interval=200ms snapshot.min_examples=256 \
    training.max_batch_wait=50ms http.max_body=4096 http.max_batch=16
daemon_start d1 "$T/d.yaml"
daemon_wait_healthy 60

ROW='{"Administrative": 10, "Administrative_Duration": 1005.666667, "Informational": 0,
 "Informational_Duration": 0, "ProductRelated": 36, "ProductRelated_Duration": 2111.341667,
 "BounceRates": 0.004347826, "ExitRates": 0.014492754, "PageValues": 11.43941195,
 "SpecialDay": 0, "Month": "Feb", "OperatingSystems": 2, "Browser": 6, "Region": 1,
 "TrafficType": 2, "VisitorType": "Returning_Visitor", "Weekend": false}'
ROW2='{"PageValues": 0, "Month": "May", "Weekend": true, "VisitorType": "New_Visitor"}'
printf '{"features": %s}' "$ROW" > "$T/one.json"
printf '{"instances": [%s, %s]}' "$ROW" "$ROW2" > "$T/two.json"
printf '{"features": %s}' "$ROW2" > "$T/second.json"

note "before the first snapshot"
want 503 GET /readyz
want 503 GET /v1/model
want 503 POST /v1/predict "$T/one.json"
[ -n "$(json_get 'j["error"]')" ] || fail "503 without an error message"
want 200 GET /healthz

note "learning from a replay"
wait_for 60 "[ -s '$DAEMON_STATE/embedded-brokers' ]"
replay_bg r1 "$T/d.yaml" --csv tests/data/online_shoppers_intention.csv --label Revenue \
    --direct --rate 2000
daemon_wait_ready 120
want 200 POST /v1/predict "$T/one.json"
v1=$(json_get 'j["model_version"]')
s1=$(json_get 'j["score"]')
/usr/bin/python3 -c "import sys; s = float(sys.argv[1]); sys.exit(not 0 < s < 1)" "$s1" ||
    fail "score $s1 not in (0, 1)"
want 200 GET /v1/model
json_get 'j["fingerprint"]' | grep -Eq '^[0-9a-f]{32}$' || fail "fingerprint: $(cat "$T/body")"
[ "$(json_get 'j["layers"][-1]')" = 1 ] || fail "layers: $(cat "$T/body")"
[ "$(json_get 'len(j["features"])')" = 17 ] || fail "features: $(cat "$T/body")"
json_get 'j["created_at"]' | grep -Eq '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z$' ||
    fail "created_at: $(cat "$T/body")"

note "a /metrics scrape while learning passes promtool"
daemon_wait_metric intentd_examples_trained_total 1000 120
curl -fs "$(ld_url /metrics)" > "$T/scrape.txt" || fail "no /metrics"
if command -v promtool > /dev/null; then
    out=$(promtool check metrics < "$T/scrape.txt" 2>&1) || fail "promtool failed: $out"
    [ -z "$out" ] || fail "promtool complained: $out"
else
    echo "promtool missing (Debian package prometheus): check skipped"
fi
grep -q '^intentd_build_info{version="' "$T/scrape.txt" || fail "no build info"
awk '$1 == "intentd_model_version" { exit !($2 >= 1) }' "$T/scrape.txt" || fail "no version"

note "batch and single answers agree on one snapshot"
# snapshots keep coming while the replay runs; retry until both answers name one version
i=0
while :; do
    want 200 POST /v1/predict "$T/two.json"
    bv=$(json_get 'j["model_version"]')
    b0=$(json_get 'repr(j["predictions"][0])')
    b1=$(json_get 'repr(j["predictions"][1])')
    want 200 POST /v1/predict "$T/one.json"
    sv=$(json_get 'j["model_version"]'); s0=$(json_get 'repr(j["score"])')
    want 200 POST /v1/predict "$T/second.json"
    tv=$(json_get 'j["model_version"]'); s2=$(json_get 'repr(j["score"])')
    [ "$bv" = "$sv" ] && [ "$sv" = "$tv" ] && break
    i=$((i + 1)); [ $i -lt 50 ] || fail "never two answers from one snapshot"
done
[ "$b0" = "$s0" ] && [ "$b1" = "$s2" ] || fail "batch [$b0, $b1] != single [$s0, $s2]"
[ "$sv" -ge "$v1" ] || fail "model_version went back: $v1 -> $sv"

note "errors"
printf '{"features": {"PageValues": "lots"}}' > "$T/bad.json"
want 400 POST /v1/predict "$T/bad.json"
[ "$(json_get 'j["field"]')" = PageValues ] || fail "400 field: $(cat "$T/body")"
printf '{"instances": [{}, {"Weekend": 7}]}' > "$T/badrow.json"
want 400 POST /v1/predict "$T/badrow.json"
[ "$(json_get 'j["index"]')" = 1 ] || fail "400 index: $(cat "$T/body")"
printf '{"features": ' > "$T/broken.json"
want 400 POST /v1/predict "$T/broken.json"
want 404 GET /no/such/path
want 405 GET /v1/predict
grep -qi '^allow: POST' "$T/head" || fail "405 without Allow: $(cat "$T/head")"
/usr/bin/python3 -c 'import sys; sys.stdout.write("{\"features\": {}" + " " * (4096 - 16) + "}")' \
    > "$T/exact.json"
[ "$(wc -c < "$T/exact.json")" = 4096 ] || fail "exact.json is not 4096 bytes"
want 200 POST /v1/predict "$T/exact.json"
printf ' ' >> "$T/exact.json"
want 413 POST /v1/predict "$T/exact.json"
/usr/bin/python3 -c \
    'import sys; sys.stdout.write("{\"instances\": [" + ", ".join(["{}"] * 17) + "]}")' \
    > "$T/many.json"
want 413 POST /v1/predict "$T/many.json"
[ "$(metric 'intentd_http_requests_total{path="other",code="404"}')" = 1 ] ||
    fail "404 not counted under path=\"other\""
[ "$(metric 'intentd_http_requests_total{path="/v1/predict",code="413"}')" = 2 ] ||
    fail "413s not counted"

wait "$REPLAY_PID" || fail "replay failed"
daemon_stop 30 || fail "intentd exit $DAEMON_RC"
