#!/usr/bin/env bash
# Crash consistency: a run killed by kill -9 at random moments (inside steps, evaluations and
# checkpoint writes, the writes slowed down by BERT_PRETRAIN_SLOW_CKPT_MS so that kills land in
# them, and right after a checkpoint through BERT_PRETRAIN_KILL_AFTER_STEP) and continued each time
# with --resume auto must end bit-identical to the uninterrupted run, with the same metrics and
# nothing else left in its directory (no temporaries, no lock). BP_CRASH_KILLS kills (default 6,
# a few seconds); `make soak` runs many more.
source "$(dirname "$0")/lib.sh"
BIN=$BP_BIN
KILLS=${BP_CRASH_KILLS:-6}
# the run directories on tmpfs where there is one: fsync there is free, and a kill -9 loses nothing
# of what the page cache holds on any file system, so what is tested is the same
RUNS=$TMP
if [ -d /dev/shm ] && RUNS=$(mktemp -d /dev/shm/bp_crash_XXXXXX 2> /dev/null); then
    trap 'rm -rf "$TMP" "$RUNS"' EXIT
else
    RUNS=$TMP
fi
cd "$TMP"
tiny_config tiny.yaml "  - {seq_len: 32, batch_size: 16, steps: 48, max_predictions_per_seq: 5}
  - {seq_len: 64, batch_size: 8, steps: 16, max_predictions_per_seq: 10}" \
    "{micro_batch: 8, seed: 7, run_dir: $RUNS/run, checkpoint_every: 3, keep_checkpoints: 2,
           log_every: 1, eval_every: 6, trust_ratio_every: 4}"
# the records without their wall-clock fields
steps_of() { grep '"type":"step"' "$1" | sed -E 's/,"tokens_per_s":[^,]*,"elapsed_s":[^}]*//'; }
evals_of() { grep '"type":"eval"' "$1" | sed -E 's/,"seconds":[^}]*//'; }

"$BIN" prepare tiny.yaml > prepare.log 2>&1
require "prepare builds vocab and shards" test -s shards/train -a -s shards/eval
"$BIN" tiny.yaml --set training.run_dir=$RUNS/ref > /dev/null 2>&1
require "the uninterrupted run finishes" test -s $RUNS/ref/ckpt-00000064.bin
"$BIN" export $RUNS/ref/ckpt-00000064.bin expRef > /dev/null 2>&1

# episode: one run from an empty directory, killed and resumed until it finishes; its end is
# compared with the reference. Episodes repeat until KILLS kills have landed (a run may finish
# before a kill reaches it).
kills=0 in_write=0 hooks=0 starts=0 bad_exits=0 episodes=0 bad_ends=0 removed=0
episode() {
    rm -rf "$RUNS/run"
    : > runs.log
    local finished=0 pid rc hook slow
    while [ $finished -eq 0 ]; do
        starts=$((starts + 1))
        slow=$((RANDOM % 3 * 50)) # 0, 50 or 100 ms after each of a checkpoint's 5 sections
        hook=-1
        [ $((RANDOM % 4)) -eq 0 ] && hook=$((RANDOM % 65))
        BERT_PRETRAIN_SLOW_CKPT_MS=$slow BERT_PRETRAIN_KILL_AFTER_STEP=$hook \
            "$BIN" tiny.yaml --resume auto >> runs.log 2>&1 &
        pid=$!
        if [ "$hook" -lt 0 ] && [ $((RANDOM % 5)) -ne 0 ]; then
            sleep "0.$(printf '%03d' $((RANDOM % 900 + 20)))"
            if kill -9 $pid 2> /dev/null; then
                kills=$((kills + 1))
                ls "$RUNS"/run/*.tmp.* > /dev/null 2>&1 && in_write=$((in_write + 1))
            fi
        fi
        wait $pid 2> /dev/null
        rc=$?
        if [ $rc -eq 137 ]; then
            [ "$hook" -ge 0 ] && { hooks=$((hooks + 1)); kills=$((kills + 1)); }
        elif [ $rc -eq 0 ]; then
            grep -q "^done: 64 steps" runs.log && finished=1
        else
            bad_exits=$((bad_exits + 1))
            echo "start $starts exited $rc:"; tail -n 5 runs.log
            return
        fi
    done
    episodes=$((episodes + 1))
    removed=$((removed + $(grep -c "a temporary left by process" runs.log)))
    rm -rf expRun
    "$BIN" export "$RUNS/run/ckpt-00000064.bin" expRun > /dev/null 2>&1
    local stray
    stray=$(ls -A "$RUNS/run" | grep -v -E '^(ckpt-000000(64|63)\.bin|metrics\.jsonl)$')
    if ! cmp -s expRef/model.safetensors expRun/model.safetensors ||
        ! diff <(steps_of "$RUNS/ref/metrics.jsonl") <(steps_of "$RUNS/run/metrics.jsonl") > /dev/null ||
        ! diff <(evals_of "$RUNS/ref/metrics.jsonl") <(evals_of "$RUNS/run/metrics.jsonl") > /dev/null ||
        [ -n "$stray" ]; then
        bad_ends=$((bad_ends + 1))
        echo "episode $episodes ended differently from the uninterrupted run; left over: ${stray:-nothing}"
    fi
}
while [ $kills -lt "$KILLS" ] && [ $bad_exits -eq 0 ] && [ $starts -lt $((KILLS * 4 + 20)) ]; do episode; done
echo "test_crash: $kills kill -9 ($in_write inside a checkpoint write, $hooks right after a checkpoint)," \
     "$starts starts, $episodes runs finished"
check "no start failed ($bad_exits did)" test $bad_exits -eq 0
check "as many kills as asked ($kills of $KILLS)" test $kills -ge "$KILLS"
check "every finished run ($episodes) bit-identical to the uninterrupted one: parameters, step and eval records, nothing else left in its directory ($bad_ends differed)" \
    test $episodes -ge 1 -a $bad_ends -eq 0
check "the temporaries of killed writes were removed and reported ($removed for $in_write)" \
    test $removed -ge $((in_write > 0 ? 1 : 0))
finish
