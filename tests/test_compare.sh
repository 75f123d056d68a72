#!/usr/bin/env bash
# End-to-end test of scripts/compare.py on a one-layer, 32-wide BERT and the tiny corpus in
# tests/fixtures/train: every optimizer at two batch sizes, a few steps each. Checks the run
# directories (names carry the square-root-scaled lr, step counts keep the examples fixed), the
# PNGs, the table (a row per run, a divergence recorded as one and the comparison going on), that a
# stopped comparison continues where it stopped, and that finished runs are not run again.
set -u
cd "$(dirname "$0")/.."
: "${BP_BIN:?set BP_BIN to the bert_pretrain binary}"
PY=/usr/bin/python3
T=$(mktemp -d /tmp/bp_compare.XXXXXX)
trap 'rm -rf "$T"' EXIT
fails=0
ok() { echo "ok   $1"; }
bad() { echo "FAIL $1"; fails=$((fails + 1)); }

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
if ! "$BP_BIN" prepare "$T/cfg.yaml" >"$T/prepare.log" 2>&1; then
    bad "prepare the fixture corpus: $(tail -n 3 "$T/prepare.log")"
    exit 1
fi

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

# --dry-run: checks every config, prints the commands, trains nothing
compare --dry-run >"$T/dry.log" 2>&1
rc=$?
n=$(grep -c -- "--resume auto" "$T/dry.log")
if [ $rc -eq 0 ] && [ "$n" -eq 8 ] && [ ! -e "$OUT" ]; then
    ok "--dry-run lists 8 commands and trains nothing"
else
    bad "--dry-run: exit $rc, $n commands, $(ls "$OUT" 2>&1 | head -3); $(tail -n 5 "$T/dry.log")"
fi

# a bad optimizer name and a config the trainer refuses are usage errors (exit 2)
compare --optimizers lamb,sgd >"$T/bad.log" 2>&1
rc=$?
if [ $rc -eq 2 ] && grep -q "unknown optimizer 'sgd'" "$T/bad.log"; then
    ok "unknown optimizer refused: $(tail -n 1 "$T/bad.log")"
else
    bad "unknown optimizer: exit $rc, $(tail -n 2 "$T/bad.log")"
fi
compare --set training.micro_batch=0 >"$T/bad2.log" 2>&1
rc=$?
if [ $rc -eq 2 ] && [ ! -e "$OUT" ]; then
    ok "a config the trainer refuses stops the comparison before any run: $(tail -n 1 "$T/bad2.log")"
else
    bad "refused config: exit $rc, $(tail -n 3 "$T/bad2.log")"
fi

# first call: stops at adamw_b4 (the wrapper's early exit 0) with status 130
compare >"$T/first.log" 2>&1
rc=$?
if [ $rc -eq 130 ] && grep -q "interrupted; the same command continues" "$T/first.log" &&
    [ -s "$OUT/lamb_b4_lr0.01/metrics.jsonl" ] && [ ! -e "$OUT/lamb_b8_lr0.0141" ]; then
    ok "an interrupted trainer stops the comparison (exit 130) after the runs before it"
else
    bad "first call: exit $rc; $(tail -n 5 "$T/first.log")"
fi

# second call: continues and finishes
compare >"$T/second.log" 2>&1
rc=$?
if [ $rc -eq 0 ]; then ok "the same command finishes the comparison"; else
    bad "second call: exit $rc; $(tail -n 20 "$T/second.log")"; fi
if grep -q "lamb_b4_lr0.01: finished before, not run again" "$T/second.log"; then
    ok "a run finished in the first call is not run again"
else
    bad "second call re-ran lamb_b4: $(grep lamb_b4 "$T/second.log" | head -3)"
fi

# eight run directories, named with the square-root-scaled lr; steps keep the examples fixed
want="adam_b4_lr0.001 adam_b8_lr0.00141 adamw_b4_lr0.001 adamw_b8_lr0.00141 lamb_b4_lr0.01
lamb_b8_lr0.0141 lars_b4_lr0.01 lars_b8_lr0.0141"
got=$(cd "$OUT" && ls -d ./*_b* | sed 's|^\./||' | sort | tr '\n' ' ')
if [ "$got" = "$(echo $want | tr ' ' '\n' | sort | tr '\n' ' ')" ]; then
    ok "run directories: $got"
else
    bad "run directories: got '$got', wanted '$want'"
fi
for d in lamb_b4_lr0.01:4 lamb_b8_lr0.0141:2 adam_b8_lr0.00141:2 adamw_b4_lr0.001:4; do
    run=${d%%:*}
    n=${d##*:}
    last=$(grep -E '"type": ?"step"' "$OUT/$run/metrics.jsonl" | tail -n 1 | sed 's/.*"step": \?\([0-9]*\).*/\1/')
    evals=$(grep -cE '"type": ?"eval"' "$OUT/$run/metrics.jsonl")
    if [ "$last" = "$n" ] && [ "$evals" -ge 1 ]; then
        ok "$run: $n steps, $evals eval records"
    else
        bad "$run: last step '$last' (wanted $n), $evals eval records"
    fi
done
if grep -qE '"type": ?"trust"' "$OUT/lamb_b8_lr0.0141/metrics.jsonl" &&
    ! grep -qE '"type": ?"trust"' "$OUT/adam_b8_lr0.00141/metrics.jsonl"; then
    ok "trust ratios logged for LAMB, not for Adam"
else
    bad "trust ratio records in the wrong runs"
fi

# the pictures and the table
for png in loss.png trust_ratios.png; do
    if [ "$(head -c 8 "$OUT/$png" 2>/dev/null | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] &&
        [ "$(stat -c %s "$OUT/$png")" -gt 20000 ]; then
        ok "$png is a PNG of $(stat -c %s "$OUT/$png") bytes"
    else
        bad "$png missing or not a PNG"
    fi
done
rows=$(grep -cE '^\| (lamb|lars|adam|adamw)_b[0-9]+_lr' "$OUT/results.md")
if [ "$rows" -eq 8 ]; then ok "results.md has a row per run"; else
    bad "results.md has $rows run rows, wanted 8: $(cat "$OUT/results.md")"; fi
row() { grep -E "^\| $1 \|" "$OUT/results.md"; }
if row lars_b8_lr0.0141 | grep -q '| yes (step 1) |' && row lamb_b8_lr0.0141 | grep -q '| no |' &&
    row lamb_b8_lr0.0141 | grep -qE '\| [0-9]+\.[0-9]{3} \| [0-9.]+% \| [0-9.]+% \|'; then
    ok "the table: $(row lamb_b8_lr0.0141)"
    ok "the table: $(row lars_b8_lr0.0141)"
else
    bad "table rows: $(row lamb_b8_lr0.0141); $(row lars_b8_lr0.0141)"
fi
if [ "$(grep -c '\*\*best\*\*' "$OUT/results.md")" -eq 7 ]; then
    ok "the best lr is marked for each optimizer and batch that finished (7 of 8)"
else
    bad "best marks: $(grep -c '\*\*best\*\*' "$OUT/results.md"), wanted 7"
fi
if grep -qE '^\| lars \| [0-9.]+ / [0-9.]+% \(0.01\) \| diverged \|' "$OUT/results.md"; then
    ok "summary row: $(grep -E '^\| lars \|' "$OUT/results.md")"
else
    bad "summary row for lars: $(grep -E '^\| lars \|' "$OUT/results.md")"
fi

# a third call trains nothing and redraws the same table
cp "$OUT/results.md" "$T/results.before"
compare >"$T/third.log" 2>&1
rc=$?
if [ $rc -eq 0 ] && ! grep -q '^+ ' "$T/third.log" && cmp -s "$OUT/results.md" "$T/results.before"; then
    ok "a finished comparison runs nothing again and writes the same table"
else
    bad "third call: exit $rc, $(grep -c '^+ ' "$T/third.log") commands run"
fi

# the same OUT with other settings (more steps): refused, nothing trained
compare --epochs-steps 6 >"$T/other.log" 2>&1
rc=$?
if [ $rc -eq 2 ] && grep -q "lamb_b4_lr0.01 was trained with other settings (.*phases.0.steps=4" "$T/other.log" &&
    ! grep -q '^+ ' "$T/other.log"; then
    ok "a run dir trained with other settings is refused: $(tail -n 1 "$T/other.log")"
else
    bad "other settings: exit $rc, $(tail -n 2 "$T/other.log")"
fi

# --sweep-at base: the sweep (x1 reused from above, x2 new) runs at batch 4 only, and batch 8 takes
# each optimizer's best multiplier there, times sqrt(8/4)
compare --sweep-at base --lr-sweep 1,2 --dry-run >"$T/sb_dry.log" 2>&1
rc=$?
n=$(grep -c -- "--resume auto" "$T/sb_dry.log")
if [ $rc -eq 0 ] && [ "$n" -eq 12 ]; then
    ok "--sweep-at base --dry-run: 8 sweep runs at batch 4, 4 runs at batch 8"
else
    bad "--sweep-at base --dry-run: exit $rc, $n commands"
fi
compare --sweep-at base --lr-sweep 1,2 --batch-sizes 8 >"$T/sb_bad.log" 2>&1
rc=$?
if [ $rc -eq 2 ] && grep -q "base batch 4 must be one of --batch-sizes" "$T/sb_bad.log"; then
    ok "--sweep-at base without the base batch refused"
else
    bad "--sweep-at base without the base batch: exit $rc, $(tail -n 1 "$T/sb_bad.log")"
fi
compare --sweep-at base --lr-sweep 1,2 >"$T/sb.log" 2>&1
rc=$?
check=$("$PY" - "$OUT/results.json" <<'PYEOF'
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
if [ $rc -eq 0 ] && [ "$check" = ok ] && grep -q "lamb_b4_lr0.01: finished before" "$T/sb.log"; then
    ok "--sweep-at base: batch 8 runs at the best batch-4 lr x sqrt(2); finished runs reused"
else
    bad "--sweep-at base: exit $rc, $check; $(tail -n 3 "$T/sb.log")"
fi

[ $fails -eq 0 ] && echo "test_compare: all passed" && exit 0
echo "test_compare: $fails failed"
exit 1
