#!/usr/bin/env bash
# Crash consistency: a run killed by kill -9 at random moments (inside steps, evaluations and
# checkpoint writes, the writes slowed down by BERT_PRETRAIN_SLOW_CKPT_MS so that kills land in
# them, and right after a checkpoint through BERT_PRETRAIN_KILL_AFTER_STEP) and continued each time
# with --resume auto must end bit-identical to the uninterrupted run, with the same metrics and
# nothing else left in its directory (no temporaries, no lock). BP_CRASH_KILLS kills (default 10,
# a few seconds); `make soak` runs many more.
source "$(dirname "$0")/lib.sh"
BIN=$BP_BIN
REPO=$(pwd)
KILLS=${BP_CRASH_KILLS:-10}
# the run directories on tmpfs where there is one: fsync there is free, and a kill -9 loses nothing
# of what the page cache holds on any file system, so what is tested is the same
RUNS=$TMP
if [ -d /dev/shm ] && RUNS=$(mktemp -d /dev/shm/bp_crash_XXXXXX 2> /dev/null); then
    trap 'rm -rf "$TMP" "$RUNS"' EXIT
else
    RUNS=$TMP
fi
cd "$TMP"
cat > tiny.yaml <<YAML
model: {preset: bert-tiny, layers: 2, hidden: 32, heads: 2, intermediate: 64, max_position: 64}
data: {vocab: vocab.txt, vocab_size: 300, input: [$REPO/tests/fixtures/train/corpus.txt],
       train: shards/train, eval: shards/eval, eval_fraction: 0.15, eval_examples: 24}
optimizer: {name: lamb}
schedule: {lr: 2.0e-2, warmup_ratio: 0.1}
phases:
  - {seq_len: 32, batch_size: 16, steps: 48, max_predictions_per_seq: 5}
  - {seq_len: 64, batch_size: 8, steps: 16, max_predictions_per_seq: 10}
training: {micro_batch: 8, seed: 7, run_dir: $RUNS/run, checkpoint_every: 3, keep_checkpoints: 2,
           log_every: 1, eval_every: 6, trust_ratio_every: 4}
YAML
# the records without their wall-clock fields
steps_of() { grep '"type":"step"' "$1" | sed -E 's/,"tokens_per_s":[^,]*,"elapsed_s":[^}]*//'; }
evals_of() { grep '"type":"eval"' "$1" | sed -E 's/,"seconds":[^}]*//'; }

"$BIN" prepare tiny.yaml > prepare.log 2>&1
require "prepare builds vocab and shards" test -s shards/train -a -s shards/eval
"$BIN" tiny.yaml --set training.run_dir=$RUNS/ref > /dev/null 2>&1
require "the uninterrupted run finishes" test -s $RUNS/ref/ckpt-00000064.bin
"$BIN" export $RUNS/ref/ckpt-00000064.bin expRef > /dev/null 2>&1

kills=0 in_write=0 hooks=0 starts=0 bad_exits=0 finished=0
: > runs.log
while [ $finished -eq 0 ]; do
    starts=$((starts + 1))
    slow=$((RANDOM % 3 * 100)) # 0, 100 or 200 ms after each of a checkpoint's 5 sections
    hook=-1
    [ $kills -lt "$KILLS" ] && [ $((RANDOM % 4)) -eq 0 ] && hook=$((RANDOM % 65))
    BERT_PRETRAIN_SLOW_CKPT_MS=$slow BERT_PRETRAIN_KILL_AFTER_STEP=$hook \
        "$BIN" tiny.yaml --resume auto >> runs.log 2>&1 &
    pid=$!
    if [ $kills -lt "$KILLS" ] && [ "$hook" -lt 0 ]; then
        sleep "0.$(printf '%03d' $((RANDOM % 900 + 20)))"
        if kill -9 $pid 2> /dev/null; then
            kills=$((kills + 1))
            ls $RUNS/run/*.tmp.* > /dev/null 2>&1 && in_write=$((in_write + 1))
        fi
    fi
    wait $pid
    rc=$?
    if [ $rc -eq 137 ]; then
        [ "$hook" -ge 0 ] && { hooks=$((hooks + 1)); kills=$((kills + 1)); }
    elif [ $rc -eq 0 ]; then
        grep -q "^done: 64 steps" runs.log && finished=1
    else
        bad_exits=$((bad_exits + 1))
        echo "run $starts exited $rc:"; tail -n 5 runs.log
        [ $bad_exits -ge 3 ] && break
    fi
    [ $starts -ge $((KILLS * 3 + 20)) ] && break
done
echo "test_crash: $kills kill -9 ($in_write inside a checkpoint write, $hooks right after a checkpoint), $starts starts"
check "no start failed ($bad_exits did)" test $bad_exits -eq 0
check "the run finished after $kills kills" test $finished -eq 1
check "as many kills as asked ($kills of $KILLS)" test $kills -ge "$KILLS"
"$BIN" export $RUNS/run/ckpt-00000064.bin expRun > /dev/null 2>&1
check "final parameters bit-identical to the uninterrupted run" cmp -s expRef/model.safetensors expRun/model.safetensors
check "step records identical (1..64, none twice)" diff <(steps_of $RUNS/ref/metrics.jsonl) <(steps_of $RUNS/run/metrics.jsonl)
check "eval records identical" diff <(evals_of $RUNS/ref/metrics.jsonl) <(evals_of $RUNS/run/metrics.jsonl)
stray=$(ls -A $RUNS/run | grep -v -E '^(ckpt-000000(64|63)\.bin|metrics\.jsonl)$')
check "nothing else left in the run directory (${stray:-nothing})" test -z "$stray"
removed=$(grep -c "a temporary left by process" runs.log)
check "the temporaries of killed writes were removed and reported ($removed)" test $removed -ge $((in_write > 0 ? 1 : 0))
finish
