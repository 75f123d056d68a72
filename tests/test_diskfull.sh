#!/usr/bin/env bash
# A full disk, on small tmpfs mounts (needs root; skipped, visibly, where mounting fails): a
# checkpoint that does not fit stops the run naming the last good checkpoint, which stays intact,
# and leaves no temporary; metrics records refused for a while are held and written once there is
# room again (none lost, none torn); export and prepare fail with the reason and leave nothing
# half-written behind (prepare: not the vocab it built either).
source "$(dirname "$0")/lib.sh"
BIN=$BP_BIN
cd "$TMP"
MOUNTS=()
trap 'for m in "${MOUNTS[@]}"; do umount "$m" 2> /dev/null; done; rm -rf "$TMP"' EXIT
# mount_small DIR SIZE: a tmpfs of SIZE at DIR; fails when this machine does not let us
mount_small() {
    mkdir -p "$1" && mount -t tmpfs -o "size=$2" tmpfs "$1" 2> /dev/null && MOUNTS+=("$1")
}
if ! mount_small probe 64k; then
    echo "SKIP: cannot mount a tmpfs here (root needed): the disk-full tests did not run"
    finish
    exit
fi
tiny_config tiny.yaml "  - {seq_len: 32, batch_size: 16, steps: 12, max_predictions_per_seq: 5}
  - {seq_len: 64, batch_size: 8, steps: 4, max_predictions_per_seq: 10}" \
    "{micro_batch: 8, seed: 7, run_dir: run, checkpoint_every: 4, keep_checkpoints: 10,
           log_every: 1, eval_every: 8}"
"$BIN" prepare tiny.yaml > prepare.log 2>&1
require "prepare builds vocab and shards" test -s shards/train -a -s shards/eval
"$BIN" tiny.yaml --set training.run_dir=ref > /dev/null 2>&1
require "a reference run on a roomy disk" test -s ref/ckpt-00000016.bin
ck_bytes=$(stat -c %s ref/ckpt-00000004.bin)

# --- a checkpoint that does not fit: one fits, the next (written beside it) does not -------------
mount_small full1 $((ck_bytes * 3 / 2))
run "$BIN" tiny.yaml --set training.run_dir=full1/run
check "a checkpoint write on a full disk stops the run with exit 1 (rc=$rc)" test $rc -eq 1
check "... saying which step, the last good checkpoint and why" \
    grep -q "checkpoint of step 8 not written (the last good one is full1/run/ckpt-00000004.bin): .*No space left on device" "$TMP/err"
check "... no temporary left" test -z "$(ls full1/run | grep '\.tmp\.')"
check "... no lock left" not test -e full1/run/bert_pretrain.lock
check "... the last good checkpoint intact" "$BIN" eval tiny.yaml --checkpoint full1/run/ckpt-00000004.bin > /dev/null 2>&1
check "... metrics complete up to the failure (8 steps)" test "$(grep -c '"type":"step"' full1/run/metrics.jsonl)" -eq 8

# --- metrics refused for a while: held, then written; the run finishes ----------------------------
mount_small full2 4m
"$BIN" tiny.yaml --set training.run_dir=full2/run --set phases.0.steps=100000 --set training.checkpoint_every=0 \
    > /dev/null 2> m.err &
pid=$!
for _ in $(seq 1 300); do [ "$(grep -c step full2/run/metrics.jsonl 2> /dev/null)" -ge 3 ] 2> /dev/null && break
    sleep 0.1; done
dd if=/dev/zero of=full2/filler bs=4k > /dev/null 2>&1 # until the disk is full
# (an append that fits in the file's last page needs no room: wait for the first refused write)
for _ in $(seq 1 300); do grep -q "write failed" m.err && break; sleep 0.1; done
sleep 1
rm -f full2/filler
for _ in $(seq 1 300); do grep -q "writing again" m.err && break; sleep 0.1; done
kill -TERM $pid
wait $pid
rc=$?
check "a run whose metrics were refused for a while finishes (rc=$rc)" test $rc -eq 0
check "... warning when the writes failed" grep -q "warning: full2/run/metrics.jsonl: write failed at step [0-9]*: No space left on device" m.err
check "... and saying when they were in again" grep -q "full2/run/metrics.jsonl: writing again: the records held since step" m.err
last=$(sed -n 's/^stopped by SIGTERM after step \([0-9]*\);.*/\1/p' m.err)
steps=$(grep -o '"type":"step","step":[0-9]*' full2/run/metrics.jsonl | sed 's/.*://' | tr '\n' ' ')
check "... every step record 1..$last is there once, in order" test "$steps" = "$(seq -s ' ' 1 "${last:-0}") "
check "... every line whole" test "$(grep -c '}$' full2/run/metrics.jsonl)" -eq "$(wc -l < full2/run/metrics.jsonl)"

# --- export onto a full disk ---------------------------------------------------------------------
mount_small full3 64k
run "$BIN" export ref/ckpt-00000016.bin full3/exp
check "export onto a full disk fails with exit 1 (rc=$rc)" test $rc -eq 1
check "... with the reason" grep -q "No space left on device" "$TMP/err"
check "... leaving nothing behind" test -z "$(ls -A full3/exp)"

# --- prepare onto a full disk: no shard temporaries, and not the vocab it built ------------------
mount_small full4 4k
run "$BIN" prepare tiny.yaml --set data.vocab=full4/vocab.txt --set data.train=full4/train --set data.eval=full4/eval
check "prepare onto a full disk fails with exit 1 (rc=$rc)" test $rc -eq 1
check "... with the reason" grep -q "No space left on device" "$TMP/err"
check "... leaving nothing behind, the vocab it built included ($(ls -A full4 | tr '\n' ' '))" test -z "$(ls -A full4)"
finish
