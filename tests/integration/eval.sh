#!/bin/sh
# intentd-eval: the JSON it prints (DESIGN.md §4), --holdout-fraction, --passes, --folds,
# --synthetic, error exits, and a sanity bound on the UCI file (the tight acceptance figures
# are checked by hand; see issue 3).
. tests/integration/lib.sh
T=$(mktemp_state)
EVAL="$BIN/intentd-eval"
CSV="$TOP/tests/data/online_shoppers_intention.csv"
CFG="$TOP/config/intentd.yaml"
[ -x "$EVAL" ] || fail "$EVAL is not built"

# py EXPR FILE: evaluates a Python expression over the JSON object d read from FILE.
py() {
    /usr/bin/python3 -c 'import json,sys,math; d=json.load(open(sys.argv[2])); r=eval(sys.argv[1]); print(r); sys.exit(0 if r is not False else 1)' "$1" "$2"
}
check() { py "$1" "$2" > /dev/null || fail "$3: $(cat "$2")"; }

note "one pass in file order, 20% stratified holdout"
"$EVAL" --config "$CFG" --csv "$CSV" --label Revenue --positive TRUE \
    --holdout-fraction 0.2 --seed 42 > "$T/one.json" 2> "$T/one.err" || fail "eval failed: $(cat "$T/one.err")"
cat "$T/one.json"
check 'sorted(d) == ["examples", "examples_per_second", "holdout", "progressive"]' "$T/one.json" "keys"
check 'sorted(d["progressive"]) == ["auc", "logloss"] and sorted(d["holdout"]) == ["auc", "logloss", "n"]' \
    "$T/one.json" "nested keys"
# 12330 rows, 1908 positive: round(0.2 * 1908) + round(0.2 * 10422) = 382 + 2084 held out.
check 'd["holdout"]["n"] == 2466 and d["examples"] == 12330 - 2466' "$T/one.json" "holdout split"
check 'd["progressive"]["auc"] > 0.85 and d["holdout"]["auc"] > 0.85' "$T/one.json" "AUC sanity bound"
check '0 < d["progressive"]["logloss"] < 0.45 and 0 < d["holdout"]["logloss"] < 0.45' "$T/one.json" "log loss"
check 'd["examples_per_second"] > 0' "$T/one.json" "speed"

note "same seed, same figures; another seed, another split"
"$EVAL" --config "$CFG" --csv "$CSV" --label Revenue --positive TRUE \
    --holdout-fraction 0.2 --seed 42 > "$T/again.json" || fail "second run failed"
py 'd["progressive"], d["holdout"]' "$T/one.json" > "$T/a"
py 'd["progressive"], d["holdout"]' "$T/again.json" > "$T/b"
cmp -s "$T/a" "$T/b" || fail "not deterministic: $(cat "$T/a") vs $(cat "$T/b")"
"$EVAL" --config "$CFG" --csv "$CSV" --label Revenue --positive TRUE \
    --holdout-fraction 0.2 --seed 7 > "$T/seed7.json" || fail "seed 7 failed"
py 'd["holdout"]' "$T/seed7.json" > "$T/c"
cmp -s "$T/a" "$T/c" && fail "seed 7 gave seed 42's figures"

note "no holdout: holdout is null, every row is trained"
"$EVAL" --config "$CFG" --csv "$CSV" --label Revenue --positive TRUE > "$T/all.json" || fail "eval failed"
check 'd["holdout"] is None and d["examples"] == 12330' "$T/all.json" "no holdout"

note "--passes 2 trains every row twice"
"$EVAL" --config "$CFG" --csv "$CSV" --label Revenue --positive TRUE --passes 2 \
    --holdout-fraction 0.2 --seed 42 > "$T/two.json" || fail "--passes 2 failed"
cat "$T/two.json"
check 'd["examples"] == 2 * (12330 - 2466) and d["holdout"]["n"] == 2466' "$T/two.json" "--passes 2 counts"

note "--folds 3"
"$EVAL" --config "$CFG" --csv "$CSV" --label Revenue --positive TRUE --folds 3 --seed 1 \
    > "$T/folds.json" || fail "--folds failed"
cat "$T/folds.json"
check 'sorted(d) == ["folds", "mean", "std"] and len(d["folds"]) == 3' "$T/folds.json" "folds shape"
check 'all(sorted(f) == ["auc", "logloss", "n"] for f in d["folds"])' "$T/folds.json" "fold keys"
check 'sum(f["n"] for f in d["folds"]) == 12330 and max(f["n"] for f in d["folds"]) - min(f["n"] for f in d["folds"]) <= 2' \
    "$T/folds.json" "folds partition the rows"
check 'abs(d["mean"]["auc"] - sum(f["auc"] for f in d["folds"]) / 3) < 1e-5 and d["mean"]["auc"] > 0.85' \
    "$T/folds.json" "fold mean"
check '0 <= d["std"]["auc"] < 0.05 and d["std"]["logloss"] >= 0' "$T/folds.json" "fold std"

note "--synthetic"
"$EVAL" --config "$CFG" --synthetic 20000 --inputs 16 > "$T/syn.json" || fail "--synthetic failed"
cat "$T/syn.json"
check 'd["examples"] == 20000 and d["holdout"] is None and d["progressive"]["auc"] > 0.7 and d["examples_per_second"] > 0' \
    "$T/syn.json" "synthetic"

note "without --positive a TRUE/FALSE label column is read as a boolean; a 0/1 file works"
"$EVAL" --config "$CFG" --csv "$CSV" --label Revenue > "$T/bool.json" || fail "boolean label failed"
check 'd["examples"] == 12330' "$T/bool.json" "boolean label"
head -201 "$CSV" | sed 's/,TRUE\r$/,1\r/; s/,FALSE\r$/,0\r/' > "$T/small.csv"
"$EVAL" --config "$CFG" --csv "$T/small.csv" --label Revenue > "$T/small.json" || fail "0/1 labels failed"
check 'd["examples"] == 200' "$T/small.json" "0/1 labels"

note "errors: exit 2 for usage, 1 for data, message on stderr, nothing on stdout"
expect_exit() {
    want=$1; shift
    "$@" > "$T/out" 2> "$T/err"
    rc=$?
    [ $rc -eq "$want" ] || fail "exit $rc (want $want) from: $* ($(cat "$T/err"))"
    [ -s "$T/out" ] && fail "stdout not empty for: $*"
    [ -s "$T/err" ] || fail "no message on stderr for: $*"
    return 0
}
expect_exit 2 "$EVAL" --config "$CFG"
expect_exit 2 "$EVAL" --config "$CFG" --csv "$CSV" --label Revenue --holdout-fraction 1.5
expect_exit 2 "$EVAL" --config "$CFG" --csv "$CSV" --label Revenue --passes 0
expect_exit 2 "$EVAL" --config "$CFG" --synthetic 10
expect_exit 2 "$EVAL" --bogus
expect_exit 1 "$EVAL" --config "$T/missing.yaml" --csv "$CSV" --label Revenue
expect_exit 1 "$EVAL" --config "$CFG" --csv "$T/missing.csv" --label Revenue
expect_exit 1 "$EVAL" --config "$CFG" --csv "$CSV" --label NoSuchColumn
grep -q NoSuchColumn "$T/err" || fail "the missing label column is not named"
cut -d, -f1-8,10- "$CSV" > "$T/nopv.csv"
expect_exit 1 "$EVAL" --config "$CFG" --csv "$T/nopv.csv" --label Revenue --positive TRUE
grep -q PageValues "$T/err" || fail "the missing feature column is not named: $(cat "$T/err")"
{ head -3 "$CSV"; echo "x,0,0,0,1,0,0.2,0.2,0,0,Feb,1,1,1,1,Returning_Visitor,FALSE,FALSE"; } > "$T/bad.csv"
expect_exit 1 "$EVAL" --config "$CFG" --csv "$T/bad.csv" --label Revenue --positive TRUE
grep -q 'bad.csv:4:.*Administrative' "$T/err" || fail "a bad cell is not located: $(cat "$T/err")"
note "ok"
