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

# Field N of the line holding "examples/s": the figure just before it.
rate() { sed -n 's/.* \([0-9][0-9]*\) examples\/s.*/\1/p' "$1"; }

# trainer — intentd's training step (model_forward + model_step) against PyTorch 1.13 on the
# same model (hidden 64,32, relu, Adam), batch (128), data (TRAINER_EXAMPLES synthetic examples
# of 128 dense inputs, from one pool both read), one thread each.  Acceptance: ratio >= 4.
if want trainer; then
    echo "== trainer: $BUILD/bench/trainer_bench vs tests/bench/torch_trainer.py"
    n=${TRAINER_EXAMPLES:-2000000}
    if "$BUILD/bench/trainer_bench" --examples "$n" --inputs 128 --hidden 64,32 --batch 128 \
        --write-data "$tmp/pool.f32" > "$tmp/c.out"; then
        cat "$tmp/c.out"
    else
        echo "trainer_bench failed"; status=1
    fi
    if /usr/bin/python3 -c 'import torch' 2>/dev/null; then
        if /usr/bin/python3 tests/bench/torch_trainer.py "$tmp/pool.f32" 128 --examples "$n" \
            --batch 128 --hidden 64,32 > "$tmp/t.out"; then
            cat "$tmp/t.out"
            c=$(rate "$tmp/c.out"); t=$(rate "$tmp/t.out")
            [ -n "$c" ] && [ -n "$t" ] &&
                awk -v c="$c" -v t="$t" 'BEGIN { printf "ratio intentd/torch: %.2fx\n", c / t }'
        else
            echo "torch_trainer.py failed"; status=1
        fi
    else
        echo "torch not importable by /usr/bin/python3: PyTorch side skipped"
    fi
fi

# buckets — how the training step and the parameter block grow with the categorical slots
# (nsparse 0 .. 2^20 over 6 columns, 128 dense inputs, hidden 64,32, batch 128).
if want buckets; then
    echo "== buckets: step time and sizes against nsparse"
    "$BUILD/bench/trainer_bench" --buckets-table --examples "${BUCKETS_EXAMPLES:-256000}" ||
        status=1
fi

exit $status
