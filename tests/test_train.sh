#!/usr/bin/env bash
# Integration tests of the training run on a tiny model and the tiny corpus in tests/fixtures/train:
# loss falls; kill -9 + --resume auto gives bit-identical parameters and metrics; SIGINT writes a
# checkpoint and exits 0; corrupt checkpoints are refused and --resume auto falls back; a shape change
# is refused on resume; a forced NaN stops the run naming the step and tensor; eval and export work.
source "$(dirname "$0")/lib.sh"
BIN=$BP_BIN
REPO=$(pwd)
T=$TMP
# step records without the wall-clock fields, for exact comparison
steps_of() { grep '"type":"step"' "$1" | sed -E 's/,"tokens_per_s":[^,]*,"elapsed_s":[^}]*//'; }

cat > "$T/tiny.yaml" <<YAML
model: {preset: bert-tiny, layers: 2, hidden: 32, heads: 2, intermediate: 64, max_position: 64}
data: {vocab: vocab.txt, vocab_size: 300, input: [$REPO/tests/fixtures/train/corpus.txt],
       train: shards/train, eval: shards/eval, eval_fraction: 0.15, eval_examples: 24}
optimizer: {name: lamb}
schedule: {lr: 2.0e-2, warmup_ratio: 0.1}
phases:
  - {seq_len: 32, batch_size: 16, steps: 12, max_predictions_per_seq: 5}
  - {seq_len: 64, batch_size: 8, steps: 4, max_predictions_per_seq: 10}
training: {micro_batch: 8, seed: 7, run_dir: run, checkpoint_every: 4, keep_checkpoints: 10,
           log_every: 1, eval_every: 8, trust_ratio_every: 4}
YAML
cd "$T"

"$BIN" prepare tiny.yaml > prepare.log 2>&1
require "prepare builds vocab and shards ($(tail -n 3 prepare.log))" test -s vocab.txt -a -s shards/train -a -s shards/eval

# --- a whole run ------------------------------------------------------------------------------------
"$BIN" tiny.yaml --set training.run_dir=runA > a.out 2> a.err
rc=$?
check "full run exits 0 (rc=$rc)" test $rc -eq 0
check "16 step records" test "$(grep -c '"type":"step"' runA/metrics.jsonl)" -eq 16
check "eval records at 8 and 16" test "$(grep -c '"type":"eval"' runA/metrics.jsonl)" -eq 2
check "trust-ratio records for LAMB" grep -q '"type":"trust".*"trust_ratio":{"bert.embeddings' runA/metrics.jsonl
check "checkpoint at each phase end" test -s runA/ckpt-00000012.bin -a -s runA/ckpt-00000016.bin
check "start-up summary names the phases" grep -q "phase 2: 4 steps, global batch 8 = micro 8 x accumulation 1" a.err

# --- a micro-batch per phase: 16 at seq 32, 4 at seq 64 ------------------------------------------
"$BIN" tiny.yaml --set training.run_dir=runM --set phases.0.micro_batch=16 --set phases.1.micro_batch=4 \
    > /dev/null 2> m.err
rc=$?
check "per-phase micro-batches train (rc=$rc)" test $rc -eq 0
check "... phase 1 as 16 x 1, phase 2 as 4 x 2" grep -q "global batch 16 = micro 16 x accumulation 1" m.err
check "... phase 2 as 4 x 2" grep -q "global batch 8 = micro 4 x accumulation 2" m.err

# --- starting over an existing run is refused ------------------------------------------------------
"$BIN" tiny.yaml --set training.run_dir=runA > /dev/null 2> again.err
rc=$?
check "existing run dir without --resume refused with exit 2 (rc=$rc)" test $rc -eq 2
check "... and the message says --resume auto" grep -q "resume auto" again.err

# --- kill -9 after step 6 and resume: bit-identical to the uninterrupted run -------------------------
BERT_PRETRAIN_KILL_AFTER_STEP=6 "$BIN" tiny.yaml --set training.run_dir=runB > /dev/null 2>&1
rc=$?
check "the run died by SIGKILL (rc=$rc)" test $rc -eq 137
check "metrics of the killed run reach step 6" test "$(grep -c '"type":"step"' runB/metrics.jsonl)" -eq 6
"$BIN" tiny.yaml --set training.run_dir=runB --resume auto > /dev/null 2> b.err
rc=$?
check "resume exits 0 (rc=$rc)" test $rc -eq 0
check "resumed from step 4" grep -q "resumed from runB/ckpt-00000004.bin (step 4)" b.err
"$BIN" export runA/ckpt-00000016.bin expA > /dev/null 2> expA.err
check "export says what it wrote" \
    grep -q "^bert_pretrain export: exported step 16 of runA/ckpt-00000016.bin to expA/ (model.safetensors, config.json, vocab.txt)" expA.err
"$BIN" export runB/ckpt-00000016.bin expB > /dev/null 2>&1
check "export writes model, config and vocab" test -s expA/model.safetensors -a -s expA/config.json -a -s expA/vocab.txt
check "resumed parameters bit-identical to the uninterrupted run" cmp -s expA/model.safetensors expB/model.safetensors
check "resumed metrics identical (steps 1..16, no duplicates)" diff <(steps_of runA/metrics.jsonl) <(steps_of runB/metrics.jsonl)

# --- a thread count of 1 gives the same bits as the default ---------------------------------------
"$BIN" tiny.yaml --set training.run_dir=runT --set training.threads=1 > /dev/null 2>&1
"$BIN" export runT/ckpt-00000016.bin expT > /dev/null 2>&1
check "threads=1 run bit-identical to the default thread count" cmp -s expA/model.safetensors expT/model.safetensors

# --- SIGINT: finish the step, checkpoint, exit 0 -----------------------------------------------------
"$BIN" tiny.yaml --set training.run_dir=runC --set phases.0.steps=100000 --set training.checkpoint_every=0 \
    > /dev/null 2> c.err &
pid=$!
for _ in $(seq 1 300); do
    n=$(grep -c '"type":"step"' runC/metrics.jsonl 2>/dev/null)
    [ "${n:-0}" -ge 3 ] && break
    sleep 0.1
done
kill -INT $pid
wait $pid
rc=$?
check "SIGINT exits 0 (rc=$rc)" test $rc -eq 0
check "SIGINT names the checkpoint" grep -q "stopped by SIGINT after step [0-9]*; checkpoint runC/ckpt-" c.err
check "... and the command that resumes it, overrides included" \
    grep -q "resume with: bert_pretrain 'tiny.yaml' --set 'training.run_dir=runC' --set 'phases.0.steps=100000' --set 'training.checkpoint_every=0' --resume auto" c.err
ck=$(ls runC/ckpt-*.bin 2>/dev/null | tail -n 1)
check "SIGINT checkpoint exists" test -n "$ck"
"$BIN" eval tiny.yaml --checkpoint "$ck" > eval.out 2> eval.err
check "eval of that checkpoint prints JSON" grep -q '"eval_mlm_acc":' eval.out
check "... naming the checkpoint and its step" grep -q "^{\"checkpoint\":\"$ck\",\"step\":[1-9]" eval.out
check "... and the human line on stderr" grep -q "^eval @ step [1-9][0-9]*: mlm_loss .*predictions" eval.err

# --- corrupt checkpoints: refused; --resume auto falls back to the previous one --------------------
cp -r runA runD
printf '\x55' | dd of=runD/ckpt-00000016.bin bs=1 seek=5000 conv=notrunc 2> /dev/null
"$BIN" tiny.yaml --set training.run_dir=runD --resume runD/ckpt-00000016.bin > /dev/null 2> d1.err
rc=$?
check "bit-flipped checkpoint refused with exit 1 (rc=$rc)" test $rc -eq 1
check "... with a CRC message naming the file" grep -q "runD/ckpt-00000016.bin: .*CRC mismatch" d1.err
"$BIN" tiny.yaml --set training.run_dir=runD --resume auto > /dev/null 2> d2.err
rc=$?
check "--resume auto skips it and finishes (rc=$rc)" test $rc -eq 0
check "... warning about the corrupt one, naming it" grep -q "warning: skipping checkpoint runD/ckpt-00000016.bin: section .* CRC mismatch" d2.err
check "... resuming from step 12" grep -q "resumed from runD/ckpt-00000012.bin (step 12)" d2.err
"$BIN" export runD/ckpt-00000016.bin expD > /dev/null 2>&1
check "... and ends bit-identical to the uninterrupted run" cmp -s expA/model.safetensors expD/model.safetensors
cp -r runA runE
truncate -s 3000 runE/ckpt-00000016.bin
"$BIN" tiny.yaml --set training.run_dir=runE --resume runE/ckpt-00000016.bin > /dev/null 2> e.err
rc=$?
check "truncated checkpoint refused with exit 1 (rc=$rc)" test $rc -eq 1
check "... saying truncated" grep -q "runE/ckpt-00000016.bin: truncated" e.err

# --- a shape-changing config is refused on resume, a safe change is reported -----------------------
"$BIN" tiny.yaml --set training.run_dir=runA --set model.hidden=64 --resume auto > /dev/null 2> f.err
rc=$?
check "model.hidden change refused on resume with exit 2 (rc=$rc)" test $rc -eq 2
check "... naming the key" grep -q "model.hidden (32 -> 64)" f.err
"$BIN" tiny.yaml --set training.run_dir=runA --set training.log_every=5 --resume auto > /dev/null 2> g.err
rc=$?
check "log_every change allowed on resume (rc=$rc)" test $rc -eq 0
check "... and reported" grep -q "training.log_every changed: 1 -> 5 (allowed)" g.err

# --- a forced NaN stops the run, names step and tensor, keeps the last good checkpoint -------------
BERT_PRETRAIN_INJECT_NAN=6 "$BIN" tiny.yaml --set training.run_dir=runN > /dev/null 2> n.err
rc=$?
check "NaN stops the run with exit 1 (rc=$rc)" test $rc -eq 1
check "... naming the step and the first offending tensor" grep -q "step 6: non-finite gradient .*first offending tensor: bert\." n.err
check "... and the last good checkpoint" grep -q "last good checkpoint is runN/ckpt-00000004.bin" n.err
check "... which is intact" "$BIN" eval tiny.yaml --checkpoint runN/ckpt-00000004.bin > /dev/null 2>&1
BERT_PRETRAIN_INJECT_NAN=6 "$BIN" tiny.yaml --set training.run_dir=runS --set training.skip_nonfinite=true > /dev/null 2> s.err
rc=$?
check "skip_nonfinite skips the step and finishes (rc=$rc)" test $rc -eq 0
check "... with a warning" grep -q "skipping the update" s.err

# --- loss falls: 150 steps on one phase, dropout off -----------------------------------------------
# (initial loss = ln(300) + ln(2) = 6.39; the tiny model learns the token statistics quickly)
"$BIN" tiny.yaml --set training.run_dir=runL --set phases.0.steps=150 --set schedule.lr=5e-2 \
    --set model.dropout=0 --set model.attention_dropout=0 --set training.eval_every=0 > /dev/null 2>&1
first=$(grep '"type":"step"' runL/metrics.jsonl | head -n 5 | sed -E 's/.*"loss":([^,]*),.*/\1/' | awk '{s+=$1} END {print s/NR}')
last=$(grep '"type":"step","step":14[6-9],\|"type":"step","step":150,' runL/metrics.jsonl | sed -E 's/.*"loss":([^,]*),.*/\1/' | awk '{s+=$1} END {print s/NR}')
check "loss falls (first 5 steps $first -> steps 146-150 $last)" awk -v a="$first" -v b="$last" 'BEGIN {exit !(b < a - 0.8)}'

finish
