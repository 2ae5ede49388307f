#!/bin/sh
# The `make bench` driver: named sections, run in this order; arguments select sections by
# name (`make bench BENCHES="trainer buckets"` or `sh tests/bench/run.sh trainer`).  Not part
# of `make test`.  The machine is shared: each section takes seconds, not minutes.
BUILD=${BUILD:-build}
sel="$*"
status=0
tmp=$(mktemp -d "${TMPDIR:-/tmp}/intentd-bench-XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM

want() {
    [ -z "$sel" ] && return 0
    for s in $sel; do [ "$s" = "$1" ] && return 0; done
    return 1
}

# The figure just before "examples/s" (wall clock) or "examples/cpu-s" (the process's CPU
# time, less disturbed by other work on a shared machine) in a benchmark's output file.
rate() { sed -n 's/.* \([0-9][0-9]*\) examples\/s.*/\1/p' "$1"; }
cpurate() { sed -n 's/.* \([0-9][0-9]*\) examples\/cpu-s.*/\1/p' "$1"; }

# trainer — intentd's training step (model_forward + model_step) against PyTorch 1.13 on the
# same model (hidden 64,32, relu, Adam), batch (128) and data (synthetic, 128 dense inputs, one
# pool both read), one thread each.  Three rounds of TRAINER_EXAMPLES (default 500000)
# examples, alternating, so both see the same load on this shared machine; medians reported.
# Acceptance (issue 3): ratio >= 4.
median3() { printf '%s\n' "$@" | sort -n | sed -n 2p; }
if want trainer; then
    echo "== trainer: $BUILD/bench/trainer_bench vs tests/bench/torch_trainer.py"
    n=${TRAINER_EXAMPLES:-500000}
    torch=1
    /usr/bin/python3 -c 'import torch' 2>/dev/null ||
        { torch=0; echo "torch not importable by /usr/bin/python3: PyTorch side skipped"; }
    for r in 1 2 3; do
        "$BUILD/bench/trainer_bench" --examples "$n" --inputs 128 --hidden 64,32 --batch 128 \
            --write-data "$tmp/pool.f32" > "$tmp/c.$r" ||
            { echo "trainer_bench failed"; status=1; }
        cat "$tmp/c.$r"
        [ $torch = 1 ] || continue
        /usr/bin/python3 tests/bench/torch_trainer.py "$tmp/pool.f32" 128 --examples "$n" \
            --batch 128 --hidden 64,32 > "$tmp/t.$r" ||
            { echo "torch_trainer.py failed"; status=1; }
        cat "$tmp/t.$r"
    done
    c=$(median3 $(rate "$tmp/c.1") $(rate "$tmp/c.2") $(rate "$tmp/c.3"))
    cc=$(median3 $(cpurate "$tmp/c.1") $(cpurate "$tmp/c.2") $(cpurate "$tmp/c.3"))
    echo "intentd median: $c examples/s, $cc examples/cpu-s"
    if [ $torch = 1 ]; then
        t=$(median3 $(rate "$tmp/t.1") $(rate "$tmp/t.2") $(rate "$tmp/t.3"))
        tc=$(median3 $(cpurate "$tmp/t.1") $(cpurate "$tmp/t.2") $(cpurate "$tmp/t.3"))
        echo "torch median: $t examples/s, $tc examples/cpu-s"
        [ -n "$c" ] && [ -n "$t" ] && [ -n "$cc" ] && [ -n "$tc" ] &&
            awk -v c="$c" -v t="$t" -v cc="$cc" -v tc="$tc" 'BEGIN {
                printf "ratio intentd/torch: %.2fx wall, %.2fx cpu (acceptance >= 4)\n",
                    c / t, cc / tc }'
    fi
fi

# buckets — how the training step and the parameter block grow with the categorical slots
# (nsparse 0 .. 2^20 over 6 columns, 128 dense inputs, hidden 64,32, batch 128).
if want buckets; then
    echo "== buckets: step time and sizes against nsparse"
    "$BUILD/bench/trainer_bench" --buckets-table --examples "${BUCKETS_EXAMPLES:-256000}" ||
        status=1
fi

# http — /v1/predict under load (issue 5): wrk -t2 -c64 POSTing one UCI row
# (tests/bench/predict.lua) for HTTP_SECONDS (default 5) s per run, three runs per target,
# medians reported.  Every server uses libmicrohttpd's internal pool of 2 threads with epoll:
#   bare     bare_http: a constant JSON answer (the ceiling of the HTTP stack)
#   json     bare_http_json: also parses the body with jansson and reads its fields (the
#            ceiling of HTTP + JSON)
#   inproc   http_snapshot: intentd's http.c alone on one hand-built snapshot
#   swaps    intentd learning from a replay at 2,000 events/s, snapshot.interval 100ms
#   still    the same under the same replay with snapshot.interval 1h (one snapshot); both
#            with checkpoint.interval 1h, since a checkpoint also publishes a snapshot
# One dev broker and one replay feed both daemons (two consumer groups); all five targets run
# round-robin while both learn, so every target sees the same load.
# cpu/req is the server process's CPU time per answer (for the daemons it includes learning).
# Acceptance: swaps >= 0.85 x json with zero non-2xx; p99(swaps) <= 1.25 x p99(still).
if want http; then
    echo "== http: intentd /v1/predict vs bare libmicrohttpd servers (wrk -t2 -c64)"
    (
        . tests/integration/lib_daemon.sh
        ld_init
        D=${HTTP_SECONDS:-5}
        command -v wrk > /dev/null || { echo "wrk missing (Debian package wrk)"; exit 1; }
        ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
        # run NAME PORT ROUND PID: one wrk run into $T/NAME.ROUND, and the server's CPU time
        # per answered request (µs) into $T/NAME.ROUND.cpu.
        run() {
            c0=$(ticks "$4")
            wrk -t2 -c64 -d"${D}s" --latency -s tests/bench/predict.lua \
                "http://127.0.0.1:$2/v1/predict" > "$T/$1.$3" 2>&1 || fail "wrk on $1 failed"
            c1=$(ticks "$4")
            awk -v c=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" \
                '/ requests in / { printf "%.1f\n", c / hz * 1e6 / $1 }' "$T/$1.$3" > "$T/$1.$3.cpu"
        }
        rps() { awk '/^Requests\/sec:/ { print $2 }' "$1"; }
        p99() {
            awk '$1 == "99%" { v = $2
                if (v ~ /us$/) { sub(/us$/, "", v); v /= 1000 }
                else if (v ~ /ms$/) sub(/ms$/, "", v)
                else if (v ~ /s$/) { sub(/s$/, "", v); v *= 1000 }
                print v }' "$1"
        }
        bad() {  # non-2xx answers plus socket errors
            awk '/Non-2xx or 3xx responses:/ { n += $5 }
                 /Socket errors:/ { gsub(/,/, ""); n += $4 + $6 + $8 + $10 }
                 END { print n + 0 }' "$1"
        }
        median() { printf '%s\n' "$@" | sort -g | sed -n "$(( ($# + 1) / 2 ))p"; }
        # buckets PORT: the daemon's cumulative predict-latency buckets, "le count" lines.
        buckets() {
            curl -fs "http://127.0.0.1:$1/metrics" |
                sed -n 's/^intentd_predict_duration_seconds_bucket{le="\([^"]*\)"} /\1 /p'
        }
        # server_p99 BEFORE AFTER: the p99 (ms) of the requests between two bucket dumps,
        # interpolated within its bucket: the server's own view, without wrk's queueing.
        server_p99() {
            paste -d' ' "$1" "$2" | awk '{ le[NR] = $1; c[NR] = $4 - $2 } END {
                n = c[NR]; want = 0.99 * n; lo = 0; prev = 0
                for (i = 1; i <= NR; i++) {
                    if (c[i] >= want) {
                        hi = le[i] == "+Inf" ? lo : le[i]
                        f = c[i] > prev ? (want - prev) / (c[i] - prev) : 1
                        printf "%.3f\n", (lo + f * (hi - lo)) * 1000; exit
                    }
                    lo = le[i]; prev = c[i]
                } }'
        }
        # summary NAME: "NAME  req/s MED  p99 MED ms  non-2xx SUM" and sets MED_RPS, MED_P99, BAD.
        summary() {
            MED_RPS=$(median $(for r in 1 2 3; do rps "$T/$1.$r"; done))
            MED_P99=$(median $(for r in 1 2 3; do p99 "$T/$1.$r"; done))
            BAD=0; for r in 1 2 3; do BAD=$((BAD + $(bad "$T/$1.$r"))); done
            MED_CPU=$(median $(cat "$T/$1".[123].cpu))
            printf '%-7s req/s %7.0f (runs %s) p99 %6.2f ms (runs %s) cpu/req %5.1f us  bad %s\n' \
                "$1" "$MED_RPS" "$(for r in 1 2 3; do printf '%.0f ' "$(rps "$T/$1.$r")"; done)" \
                "$MED_P99" "$(for r in 1 2 3; do printf '%s ' "$(p99 "$T/$1.$r")"; done)" \
                "$MED_CPU" "$BAD"
        }
        # daemon NAME INTERVAL: a daemon (consumer group NAME) learning from the dev broker;
        # sets NAME_PID and NAME_PORT.
        daemon() {
            DAEMON_PORT=""; DAEMON_STATE="$T/$1-state"; DAEMON_GROUP="intentd-$1"
            # a checkpoint forces a snapshot: none during the runs, for either daemon
            daemon_config "$T/$1.yaml" "snapshot.interval=$2" checkpoint.interval=1h \
                log_level=warn
            daemon_start "$1" "$T/$1.yaml"
            daemon_wait_healthy 60
            eval "${1}_PID=$DAEMON_PID ${1}_PORT=$DAEMON_PORT"
        }
        BP=$(free_port); JP=$(free_port); IP=$(free_port)
        start_bg bare "$BIN/bench/bare_http" "$BP" 2; BPID=$LAST_PID
        start_bg json "$BIN/bench/bare_http_json" "$JP" 2; JPID=$LAST_PID
        start_bg inproc "$BIN/bench/http_snapshot" "$IP" 2; IPID=$LAST_PID
        for p in $BP $JP $IP; do
            wait_for 30 "curl -fs -o /dev/null -d '{\"features\": {}}' \
                http://127.0.0.1:$p/v1/predict"
        done
        # one broker and one replay at 2,000 events/s feed both daemons (two consumer groups)
        devbroker_start --partitions 4
        daemon swaps 100ms
        daemon still 1h
        replay_bg replay "$T/swaps.yaml" --csv tests/data/online_shoppers_intention.csv \
            --label Revenue --direct --rate 2000 --loop
        for d in swaps still; do
            eval "DAEMON_PID=\$${d}_PID DAEMON_PORT=\$${d}_PORT"
            daemon_wait_ready 120
        done
        sleep 2 # past the start-up burst
        v0=$(metric intentd_model_version "$swaps_PORT")
        sv0=$(metric intentd_model_version "$still_PORT")
        buckets "$swaps_PORT" > "$T/swaps.h0"; buckets "$still_PORT" > "$T/still.h0"
        t0=$(date +%s)
        for r in 1 2 3; do
            run bare "$BP" $r $BPID; run json "$JP" $r $JPID; run inproc "$IP" $r $IPID
            run swaps "$swaps_PORT" $r $swaps_PID; run still "$still_PORT" $r $still_PID
        done
        v1=$(metric intentd_model_version "$swaps_PORT")
        buckets "$swaps_PORT" > "$T/swaps.h1"; buckets "$still_PORT" > "$T/still.h1"
        sv=$(metric intentd_model_version "$still_PORT")
        swap_rate=$(awk -v a="$v0" -v b="$v1" -v s=$(( $(date +%s) - t0 )) \
            'BEGIN { printf "%.1f", (b - a) / s }')
        for d in swaps still; do
            eval "DAEMON_PID=\$${d}_PID"
            daemon_stop 30 || fail "intentd ($d) exit $DAEMON_RC"
        done
        summary bare; B_RPS=$MED_RPS
        summary json; J_RPS=$MED_RPS
        summary inproc; I_RPS=$MED_RPS
        summary swaps; S_RPS=$MED_RPS; S_P99=$MED_P99; S_BAD=$BAD
        summary still; T_P99=$MED_P99; T_BAD=$BAD
        echo "snapshots: swaps daemon $swap_rate per second, still daemon version $sv0 -> $sv"
        echo "server-side p99 (intentd_predict_duration_seconds, all runs): swaps" \
            "$(server_p99 "$T/swaps.h0" "$T/swaps.h1") ms, still" \
            "$(server_p99 "$T/still.h0" "$T/still.h1") ms"
        awk -v s="$S_RPS" -v j="$J_RPS" -v b="$B_RPS" -v i="$I_RPS" -v sp="$S_P99" -v tp="$T_P99" \
            -v bad=$((S_BAD + T_BAD)) 'BEGIN {
            printf "intentd/json %.3f (>= 0.85)  intentd/bare %.3f  inproc/json %.3f\n",
                s / j, s / b, i / j
            printf "p99 swaps/still %.3f (<= 1.25)\n", sp / tp
            ok = s / j >= 0.85 && sp / tp <= 1.25 && bad == 0
            print ok ? "http: acceptance met" : "http: acceptance NOT met"
            exit !ok }'
    ) || status=1
fi

# ingest — the end-to-end ingest rate (issue 4): a dev broker of 16 partitions pre-filled with
# as many events as it retains (each partition under the mock's 5 MiB), read from the start by
# kcat (raw) and by the daemon (consumed, joined and learned), side by side in events/s with
# the ratio.  The driver is tests/bench/ingest.sh (INGEST_FILL_MIB sets the fill per partition).
if want ingest; then
    echo "== ingest: 16 partitions pre-filled, kcat (raw) vs intentd (consumed, joined, learned)"
    BUILD=$BUILD sh tests/bench/ingest.sh || status=1
fi

exit $status
