#!/usr/bin/env bash
# End-to-end test of scripts/compare.py on a one-layer, 32-wide BERT and the tiny corpus in
# tests/fixtures/train, split by document into train/valid/test. Checks: the split; that tuning
# needs a validation shard other than the evaluation set; the same warmup steps at every batch
# size (the paper's rule) and the ratio rule as an option; the lr grid extended past its edge; the
# tuning runs evaluated on the validation shard and the final runs (one per seed) on data.eval; a
# divergence recognised by the trainer's exit status 3 (a real injected NaN); the table's mean and
# spread; a stopped comparison continuing; the results in OUT (without the checkpoints) enough to
# continue without running anything again.
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."
PY=/usr/bin/python3
T=$TMP

# --- the split: every document in exactly one part ------------------------------------------------
"$PY" scripts/compare.py split tests/fixtures/train/corpus.txt "$T/text" --valid 0.25 --test 0.25 \
    --seed 2 >"$T/split.log" 2>&1
rc=$?
require "split exits 0 (exit $rc): $(cat "$T/split.log")" test $rc -eq 0
docs() { awk 'BEGIN{RS=""} END{print NR}' "$@"; }
n_all=$(docs tests/fixtures/train/corpus.txt)
n_parts=$(( $(docs "$T/text/train.txt") + $(docs "$T/text/valid.txt") + $(docs "$T/text/test.txt") ))
check "split: $n_parts documents in the three parts, wanted $n_all" test "$n_parts" -eq "$n_all"
check "split: no sentence in two parts" test -z "$(cat "$T"/text/*.txt | grep . | sort | uniq -d)"
check "split: parts non-empty: $(cat "$T/split.log")" test -s "$T/text/valid.txt" -a -s "$T/text/test.txt"

cat >"$T/cfg.yaml" <<EOF
model: {preset: bert-tiny, layers: 1, hidden: 32, heads: 2, intermediate: 64, max_position: 64}
data:
  vocab: vocab.txt
  vocab_size: 300
  input: [text/train.txt]
  train: shards/train
  eval: shards/test
  eval_fraction: 0
  eval_examples: 16
optimizer: {name: lamb}
schedule: {lr: 1.0e-2, warmup_ratio: 0.25}
phases:
  - {seq_len: 32, batch_size: 8, steps: 4, max_predictions_per_seq: 5}
training: {micro_batch: 4, seed: 3, run_dir: run, threads: 1}
EOF
ok=0
"$BP_BIN" prepare "$T/cfg.yaml" >"$T/prepare.log" 2>&1 || ok=1
for p in valid test; do
    "$BP_BIN" prepare "$T/cfg.yaml" --set "data.input=[$T/text/$p.txt]" --set "data.train=$T/shards/$p" \
        --set "data.eval=$T/shards/none" >>"$T/prepare.log" 2>&1 || ok=1
done
require "prepare the three shards: $(tail -n 3 "$T/prepare.log")" test $ok -eq 0

# The trainer behind a wrapper: LARS at batch 8 gets a NaN injected at its first step (the real
# trainer then stops with exit 3), and the first call for LAMB's final run at batch 8 stops early
# with exit 0, as a Ctrl-C'd trainer does after its checkpoint.
cat >"$T/bp" <<EOF
#!/usr/bin/env bash
args="\$*"
if [[ "\$args" != *--dry-run* ]]; then
    if [[ "\$args" == *optimizer.name=lars* && "\$args" == *phases.0.batch_size=8\ * ]]; then
        export BERT_PRETRAIN_INJECT_NAN=1
    fi
    if [[ "\$args" == *final/lamb_b8* && ! -e "$T/stopped" ]]; then
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
    "$PY" scripts/compare.py "$T/cfg.yaml" --bin "$T/bp" --optimizers lamb,lars --batch-sizes 4,8 \
        --base-batch 4 --epochs-steps 8 --evals 2 --lr lamb=0.01,lars=0.01 --grid 1,2 \
        --max-extend 1 --seeds 1,2 --valid "$T/shards/valid" --set training.trust_ratio_every=1 \
        --out "$OUT" "$@"
}
compare_to() { # LOG ARGS...: a comparison with ARGS, its output in $T/LOG.log; sets $rc and $log
    log=$T/$1.log
    shift
    compare "$@" >"$log" 2>&1
    rc=$?
}

# --- usage ----------------------------------------------------------------------------------------
"$PY" scripts/compare.py "$T/cfg.yaml" --bin "$T/bp" --grid 1,2 --out "$OUT" >"$T/nv.log" 2>&1
rc=$?
check "tuning without --valid: exit 2 (exit $rc)" test $rc -eq 2
check "... saying why: $(tail -n 1 "$T/nv.log")" grep -q "validation shard that is not the evaluation set" "$T/nv.log"
compare_to same --valid "$T/shards/test"
check "--valid that is data.eval: exit 2 (exit $rc)" test $rc -eq 2
check "... refused as the evaluation set: $(tail -n 1 "$log")" grep -q "is the config's data.eval" "$log"
compare_to bad --optimizers lamb,sgd
check "unknown optimizer: exit 2 (exit $rc), named: $(tail -n 1 "$log")" grep -q "unknown optimizer 'sgd'" "$log"
compare_to long --warmup-steps 4
check "a warmup as long as batch 8's run (4 steps) refused (exit $rc): $(tail -n 1 "$log")" \
    grep -q "leave batch 8 (4 steps) no decay" "$log"
check "nothing trained by the refusals" test ! -e "$OUT"

# --- --dry-run: the first grids and one final run per (optimizer, batch); the paper's warmup ------
compare_to dry --dry-run
n=$(grep -c -- "--resume auto" "$log")
check "--dry-run exits 0 (exit $rc): $(tail -n 3 "$log")" test $rc -eq 0
check "--dry-run: 2 optimizers x 2 batches x (2 grid points + 1 final) = 12 commands (got $n)" test "$n" -eq 12
# the config's warmup_ratio 0.25 of the 8 base-batch steps = 2 steps, at batch 8 too
w=$(grep -- "--resume auto" "$log" | grep -o 'schedule.warmup_steps=[0-9]*' | sort -u | tr '\n' ' ')
check "--dry-run: the same warmup steps at every batch size: '$w'" test "$w" = "schedule.warmup_steps=2 "
check "--dry-run: tuning runs evaluate on the validation shard" \
    test "$(grep -- "--resume auto" "$log" | grep /tune/ | grep -vc "data.eval=.*shards/valid")" -eq 0
check "--dry-run: final runs evaluate on data.eval" \
    test "$(grep -- "--resume auto" "$log" | grep /final/ | grep -c "data.eval=")" -eq 0
check "--dry-run: BERT's AdamW has no bias correction (the default set)" \
    grep -q "bias_correction=false" <("$PY" scripts/compare.py "$T/cfg.yaml" --bin "$T/bp" \
        --optimizers adamw --batch-sizes 4 --base-batch 4 --grid 1 --out "$OUT" --dry-run 2>&1)
compare_to ratio --dry-run --warmup ratio
check "--warmup ratio: no fixed warmup steps" not grep -q "schedule.warmup_steps" "$log"
check "--dry-run trains nothing" test ! -e "$OUT"

# --- first call: stops at LAMB's first final run at batch 8 (the wrapper's early exit 0) ---------
compare_to first
check "an interrupted trainer stops the comparison with exit 130 (exit $rc): $(tail -n 5 "$log")" \
    test $rc -eq 130
check "... saying the same command continues" grep -q "interrupted; the same command continues" "$log"

# --- second call: continues and finishes ----------------------------------------------------------
compare_to second
check "the same command finishes the comparison (exit $rc): $(tail -n 20 "$log")" test $rc -eq 0
check "a run finished in the first call is not run again" \
    grep -q "lamb_b4_lr0.01: finished before, not run again" "$log"
verdict=$("$PY" - "$OUT/results.json" "$OUT" <<'PYEOF'
import json, os, sys
res = json.load(open(sys.argv[1]))
runs, out = res["runs"], sys.argv[2]
problems = []
for opt in ("lamb", "lars"):
    for b in (4, 8):
        tune = sorted([r for r in runs if r["stage"] == "tune" and r["optimizer"] == opt
                       and r["batch"] == b], key=lambda r: r["lr"])
        final = [r for r in runs if r["stage"] == "final" and r["optimizer"] == opt and r["batch"] == b]
        # a 2-point grid always has its best at an edge: one point added, a factor 2 beyond it
        centre = 0.01 * (b / 4) ** 0.5
        mults = [round(r["lr"] / centre, 4) for r in tune]
        if mults not in ([0.5, 1, 2], [1, 2, 4]):
            problems.append("%s b%d: tuning lr multipliers %s" % (opt, b, mults))
        if opt == "lars" and b == 8:
            if any(r["state"] != "diverged" for r in tune) or final:
                problems.append("lars b8: states %s, %d final runs" % ([r["state"] for r in tune], len(final)))
            st = json.load(open(os.path.join(out, "tune", tune[0]["name"], "compare.json")))
            if st.get("rc") != 3:
                problems.append("lars b8: trainer exit %s, wanted 3" % st.get("rc"))
            continue
        best = [r for r in tune if r["best"]]
        if len(best) != 1 or sorted(r["seed"] for r in final) != [1, 2]:
            problems.append("%s b%d: %d chosen, final seeds %s" % (opt, b, len(best), [r["seed"] for r in final]))
        elif any(r["lr"] != best[0]["lr"] or r["state"] != "finished" for r in final):
            problems.append("%s b%d: final runs %s at lr %s, chosen %s"
                            % (opt, b, [r["state"] for r in final], final[0]["lr"], best[0]["lr"]))
        elif min(r["final"]["eval_mlm_loss"] for r in final) <= 0:
            problems.append("%s b%d: no eval loss" % (opt, b))
print("; ".join(problems) if problems else "ok")
PYEOF
)
check "tuning grids extended past their edge, finals at the chosen lr per seed, LARS b8 diverged with exit 3: $verdict" \
    test "$verdict" = ok
check "the results keep no checkpoint" test -z "$(find "$OUT" -name '*.bin' | head -1)"
check "... and their recorded settings name no absolute path (relative to the working directory)" \
    not grep -rqE '"(training.run_dir|data.eval)=/' "$OUT" --include=compare.json
row=$(grep -E '^\| LAMB \| 4 \|' "$OUT/results.md")
check "the final table: mean ± sd [min, max] over 2 seeds: $row" \
    grep -qE '\| 2 \(2 / 0\) \| [0-9.]+ ± [0-9.]+ \[[0-9.]+, [0-9.]+\] \|' <<<"$row"
check "the final table: LARS at batch 8 diverged at every lr: $(grep -E '^\| LARS.* \| 8 \|' "$OUT/results.md")" \
    grep -qE '^\| LARS.* \| 8 \| .*every lr tried diverged' "$OUT/results.md"
for png in loss.png trust_ratios.png; do
    magic=$(head -c 8 "$OUT/$png" 2>/dev/null | od -An -tx1 | tr -d ' \n')
    check "$png is a PNG (magic '$magic')" test "$magic" = 89504e470d0a1a0a
done

# --- the results alone (no work dir, as from a commit) continue without running anything ---------
cp "$OUT/results.md" "$T/results.before"
rm -rf "$OUT-work"
compare_to third
check "from the results alone: exit 0 (exit $rc): $(tail -n 3 "$log")" test $rc -eq 0
check "... runs nothing again ($(grep -c '^+ ' "$log") commands run)" not grep -q '^+ ' "$log"
check "... and writes the same table" cmp -s "$OUT/results.md" "$T/results.before"
compare_to plot --plot-only
check "--plot-only redraws the same table (exit $rc)" cmp -s "$OUT/results.md" "$T/results.before"

# --- --jobs 2: the same runs in two processes, the same results ---------------------------------
OUT2=$T/cmp2
"$PY" scripts/compare.py "$T/cfg.yaml" --bin "$T/bp" --optimizers lamb,lars --batch-sizes 4,8 \
    --base-batch 4 --epochs-steps 8 --evals 2 --lr lamb=0.01,lars=0.01 --grid 1,2 --max-extend 1 \
    --seeds 1,2 --valid "$T/shards/valid" --set training.trust_ratio_every=1 --out "$OUT2" --jobs 2 \
    >"$T/jobs.log" 2>&1
rc=$?
check "--jobs 2 finishes (exit $rc): $(tail -n 3 "$T/jobs.log")" test $rc -eq 0
check "... in two workers, each with its log" test -s "$OUT2-work/worker-0.log" -a -s "$OUT2-work/worker-1.log"
same_runs=$("$PY" - "$OUT/results.json" "$OUT2/results.json" <<'PYEOF'
import json, sys
def runs(path):
    return {r["name"]: (r["state"], (r.get("final") or {}).get("eval_mlm_loss")) for r in json.load(open(path))["runs"]}
a, b = runs(sys.argv[1]), runs(sys.argv[2])
print("ok" if a == b and len(a) > 0 else "differ: %s vs %s" % (a, b))
PYEOF
)
check "... every run with the state and final eval loss of the one-process comparison: $same_runs" test "$same_runs" = ok

# --- the same OUT with other settings (more steps): refused, nothing trained ---------------------
compare_to other --epochs-steps 12
check "a run trained with other settings is refused with exit 2 (exit $rc)" test $rc -eq 2
check "... naming the run and the setting: $(tail -n 2 "$log")" \
    grep -q "lamb_b4_lr0.01 was trained with other settings (.*phases.0.steps=8" "$log"
check "... and trains nothing" not grep -q '^+ ' "$log"

finish
