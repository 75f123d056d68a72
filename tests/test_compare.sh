#!/usr/bin/env bash
# End-to-end test of scripts/compare.py on a one-layer, 32-wide BERT and the tiny corpus in
# tests/fixtures/train: every optimizer at two batch sizes, a few steps each. Checks the run
# directories (names carry the square-root-scaled lr, step counts keep the examples fixed), the
# PNGs, the table (a row per run, a divergence recorded as one and the comparison going on), that a
# stopped comparison continues where it stopped, and that finished runs are not run again.
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."
PY=/usr/bin/python3
T=$TMP

cat >"$T/cfg.yaml" <<EOF
model: {preset: bert-tiny, layers: 1, hidden: 32, heads: 2, intermediate: 64, max_position: 64}
data:
  vocab: vocab.txt
  vocab_size: 300
  input: [$PWD/tests/fixtures/train/corpus.txt]
  train: shards/train
  eval: shards/eval
  eval_fraction: 0.25
  eval_examples: 16
optimizer: {name: lamb}
schedule: {lr: 1.0e-2, warmup_ratio: 0.25}
phases:
  - {seq_len: 32, batch_size: 8, steps: 4, max_predictions_per_seq: 5}
training: {micro_batch: 4, seed: 3, run_dir: run, threads: 1}
EOF
"$BP_BIN" prepare "$T/cfg.yaml" >"$T/prepare.log" 2>&1
rc=$?
require "prepare the fixture corpus (exit $rc): $(tail -n 3 "$T/prepare.log")" test $rc -eq 0

# The trainer behind a wrapper that plays two parts: LARS at batch 8 "diverges" (exit 1 with the
# trainer's non-finite message), and the first call for AdamW at batch 4 stops early with exit 0, as
# a Ctrl-C'd trainer does after its checkpoint.
cat >"$T/bp" <<EOF
#!/usr/bin/env bash
args="\$*"
if [[ "\$args" != *--dry-run* ]]; then
    if [[ "\$args" == *optimizer.name=lars* && "\$args" == *phases.0.batch_size=8\ * ]]; then
        echo "bert_pretrain: step 1: non-finite loss (nan) in bert.encoder.layer.0.output.dense.weight" >&2
        exit 1
    fi
    if [[ "\$args" == *optimizer.name=adamw* && "\$args" == *phases.0.batch_size=4\ * && ! -e "$T/stopped" ]]; then
        touch "$T/stopped"
        echo "bert_pretrain: interrupted; checkpoint written" >&2
        exit 0
    fi
fi
exec "$BP_BIN" "\$@"
EOF
chmod +x "$T/bp"

OUT=$T/cmp
compare() {
    "$PY" scripts/compare.py "$T/cfg.yaml" --bin "$T/bp" --batch-sizes 4,8 --base-batch 4 \
        --epochs-steps 4 --evals 2 --lr lamb=0.01,lars=0.01,adam=0.001,adamw=0.001 \
        --set training.trust_ratio_every=1 --out "$OUT" "$@"
}
# compare_to LOG ARGS...: a comparison with ARGS, its output in $T/LOG.log; sets $rc and $log
compare_to() {
    log=$T/$1.log
    shift
    compare "$@" >"$log" 2>&1
    rc=$?
}

# --dry-run: checks every config, prints the commands, trains nothing
compare_to dry --dry-run
n=$(grep -c -- "--resume auto" "$log")
check "--dry-run exits 0 (exit $rc): $(tail -n 5 "$log")" test $rc -eq 0
check "--dry-run lists 8 commands (got $n)" test "$n" -eq 8
check "--dry-run trains nothing: $(ls "$OUT" 2>&1 | head -3)" test ! -e "$OUT"

# a bad optimizer name and a config the trainer refuses are usage errors (exit 2)
compare_to bad --optimizers lamb,sgd
check "unknown optimizer: exit 2 (exit $rc)" test $rc -eq 2
check "unknown optimizer named: $(tail -n 2 "$log")" grep -q "unknown optimizer 'sgd'" "$log"
compare_to bad2 --set training.micro_batch=0
check "a config the trainer refuses: exit 2 (exit $rc): $(tail -n 3 "$log")" test $rc -eq 2
check "a config the trainer refuses stops the comparison before any run" test ! -e "$OUT"

# first call: stops at adamw_b4 (the wrapper's early exit 0) with status 130
compare_to first
check "an interrupted trainer stops the comparison with exit 130 (exit $rc): $(tail -n 5 "$log")" \
    test $rc -eq 130
check "... saying the same command continues" \
    grep -q "interrupted; the same command continues" "$log"
check "... after the runs before it" test -s "$OUT/lamb_b4_lr0.01/metrics.jsonl"
check "... and none after it" test ! -e "$OUT/lamb_b8_lr0.0141"

# second call: continues and finishes
compare_to second
check "the same command finishes the comparison (exit $rc): $(tail -n 20 "$log")" test $rc -eq 0
check "a run finished in the first call is not run again: $(grep lamb_b4 "$log" | head -3)" \
    grep -q "lamb_b4_lr0.01: finished before, not run again" "$log"

# eight run directories, named with the square-root-scaled lr; steps keep the examples fixed
want="adam_b4_lr0.001 adam_b8_lr0.00141 adamw_b4_lr0.001 adamw_b8_lr0.00141 lamb_b4_lr0.01
lamb_b8_lr0.0141 lars_b4_lr0.01 lars_b8_lr0.0141"
want=$(echo $want | tr ' ' '\n' | sort | tr '\n' ' ')
got=$(cd "$OUT" && ls -d ./*_b* | sed 's|^\./||' | sort | tr '\n' ' ')
check "run directories: got '$got', wanted '$want'" test "$got" = "$want"
for d in lamb_b4_lr0.01:4 lamb_b8_lr0.0141:2 adam_b8_lr0.00141:2 adamw_b4_lr0.001:4; do
    rd=${d%%:*}
    n=${d##*:}
    last=$(grep -E '"type": ?"step"' "$OUT/$rd/metrics.jsonl" | tail -n 1 |
        sed 's/.*"step": \?\([0-9]*\).*/\1/')
    evals=$(grep -cE '"type": ?"eval"' "$OUT/$rd/metrics.jsonl")
    check "$rd: last step '$last', wanted $n" test "$last" = "$n"
    check "$rd: $evals eval records, wanted some" test "$evals" -ge 1
done
check "trust ratios logged for LAMB" \
    grep -qE '"type": ?"trust"' "$OUT/lamb_b8_lr0.0141/metrics.jsonl"
check "no trust ratios for Adam" \
    not grep -qE '"type": ?"trust"' "$OUT/adam_b8_lr0.00141/metrics.jsonl"

# the pictures and the table
for png in loss.png trust_ratios.png; do
    magic=$(head -c 8 "$OUT/$png" 2>/dev/null | od -An -tx1 | tr -d ' \n')
    size=$(stat -c %s "$OUT/$png" 2>/dev/null)
    check "$png is a PNG (magic '$magic')" test "$magic" = 89504e470d0a1a0a
    check "$png holds a picture ($size bytes)" test "${size:-0}" -gt 20000
done
rows=$(grep -cE '^\| (lamb|lars|adam|adamw)_b[0-9]+_lr' "$OUT/results.md")
check "results.md has $rows run rows, wanted 8: $(cat "$OUT/results.md")" test "$rows" -eq 8
row() { grep -E "^\| $1 \|" "$OUT/results.md"; }
check "the table records the divergence: $(row lars_b8_lr0.0141)" \
    grep -q '| yes (step 1) |' <<<"$(row lars_b8_lr0.0141)"
check "the table: a run that did not diverge: $(row lamb_b8_lr0.0141)" \
    grep -q '| no |' <<<"$(row lamb_b8_lr0.0141)"
check "the table: loss and accuracies of a run: $(row lamb_b8_lr0.0141)" \
    grep -qE '\| [0-9]+\.[0-9]{3} \| [0-9.]+% \| [0-9.]+% \|' <<<"$(row lamb_b8_lr0.0141)"
best=$(grep -c '\*\*best\*\*' "$OUT/results.md")
check "the best lr is marked for each optimizer and batch that finished: $best, wanted 7" \
    test "$best" -eq 7
check "summary row for lars: $(grep -E '^\| lars \|' "$OUT/results.md")" \
    grep -qE '^\| lars \| [0-9.]+ / [0-9.]+% \(0.01\) \| diverged \|' "$OUT/results.md"

# a third call trains nothing and redraws the same table
cp "$OUT/results.md" "$T/results.before"
compare_to third
check "a finished comparison exits 0 (exit $rc)" test $rc -eq 0
check "... runs nothing again ($(grep -c '^+ ' "$log") commands run)" not grep -q '^+ ' "$log"
check "... and writes the same table" cmp -s "$OUT/results.md" "$T/results.before"

# the same OUT with other settings (more steps): refused, nothing trained
compare_to other --epochs-steps 6
check "a run dir trained with other settings is refused with exit 2 (exit $rc)" test $rc -eq 2
check "... naming the run and the setting: $(tail -n 2 "$log")" \
    grep -q "lamb_b4_lr0.01 was trained with other settings (.*phases.0.steps=4" "$log"
check "... and trains nothing" not grep -q '^+ ' "$log"

# --sweep-at base: the sweep (x1 reused from above, x2 new) runs at batch 4 only, and batch 8 takes
# each optimizer's best multiplier there, times sqrt(8/4)
compare_to sb_dry --sweep-at base --lr-sweep 1,2 --dry-run
n=$(grep -c -- "--resume auto" "$log")
check "--sweep-at base --dry-run exits 0 (exit $rc)" test $rc -eq 0
check "--sweep-at base --dry-run: 8 sweep runs at batch 4, 4 runs at batch 8 ($n commands)" \
    test "$n" -eq 12
compare_to sb_bad --sweep-at base --lr-sweep 1,2 --batch-sizes 8
check "--sweep-at base without the base batch: exit 2 (exit $rc)" test $rc -eq 2
check "... refused: $(tail -n 1 "$log")" grep -q "base batch 4 must be one of --batch-sizes" "$log"
compare_to sb --sweep-at base --lr-sweep 1,2
verdict=$("$PY" - "$OUT/results.json" <<'PYEOF'
import json, math, sys
runs = json.load(open(sys.argv[1]))
problems = []
if len(runs) != 12:
    problems.append("%d runs, wanted 12" % len(runs))
for opt in ("lamb", "lars", "adam", "adamw"):
    base = [r for r in runs if r["optimizer"] == opt and r["batch"] == 4]
    big = [r for r in runs if r["optimizer"] == opt and r["batch"] == 8]
    best = [r for r in base if r["best"]]
    if len(base) != 2 or len(big) != 1 or len(best) != 1:
        problems.append("%s: %d/%d/%d runs" % (opt, len(base), len(big), len(best)))
        continue
    b, g = best[0], big[0]
    if g["mult"] != b["mult"] or abs(g["lr"] - b["lr"] * math.sqrt(2)) > 1e-9 * g["lr"]:
        problems.append("%s: batch 8 lr %g (x%g), best at 4 is %g (x%g)"
                        % (opt, g["lr"], g["mult"], b["lr"], b["mult"]))
print("; ".join(problems) if problems else "ok")
PYEOF
)
check "--sweep-at base exits 0 (exit $rc): $(tail -n 3 "$log")" test $rc -eq 0
check "--sweep-at base: batch 8 runs at the best batch-4 lr x sqrt(2): $verdict" \
    test "$verdict" = ok
check "--sweep-at base: finished runs reused" grep -q "lamb_b4_lr0.01: finished before" "$log"

finish
