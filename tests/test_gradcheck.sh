#!/usr/bin/env bash
# CLI tests for `bert_pretrain gradcheck`: a tiny model (config written here) with padded examples
# and unused prediction slots, dropout off, in both GELU forms, passes for every tensor; the table
# lists every tensor; usage errors exit 2. Run from the repository root with $BP_BIN set.
source "$(dirname "$0")/lib.sh"

cat >"$TMP/tiny.yaml" <<'YAML'
model:
  layers: 2
  hidden: 16
  heads: 2
  intermediate: 32
  max_position: 32
  vocab_size: 40
  dropout: 0.1
  attention_dropout: 0.1
phases:
  - {seq_len: 12, batch_size: 4, steps: 1, max_predictions_per_seq: 4}
training:
  micro_batch: 4
  seed: 7
YAML

for gelu in erf tanh; do
    run "$BP_BIN" gradcheck "$TMP/tiny.yaml" --set model.gelu=$gelu
    check "gradcheck $gelu exits 0 (rc $rc): $err" test "$rc" -eq 0
    check "gradcheck $gelu says gelu=$gelu" grep -q "gelu=$gelu" <<<"$out"
    check "gradcheck $gelu has padding" grep -Eq "\(([1-9][0-9]*) padded tokens, ([0-9]+) of ([0-9]+) prediction slots" <<<"$out"
    # every tensor has a PASS row: 5 embedding + 2 layers x 16 + 9 head tensors + the direction
    rows=$(grep -c "  PASS$" <<<"$out")
    check "gradcheck $gelu: $rows PASS rows, expected 47" test "$rows" -eq 47
    check "gradcheck $gelu: summary line" grep -q "^gradcheck: all tensors PASS$" <<<"$out"
    check "gradcheck $gelu: no FAIL" not grep -q FAIL <<<"$out"
    check "gradcheck $gelu lists the decoder bias" grep -q "^cls.predictions.bias " <<<"$out"
done
# the padding really is there: the batch line reports padded tokens and unused slots
padded=$(sed -n 's/.*(\([0-9]*\) padded tokens, \([0-9]*\) of \([0-9]*\) prediction slots.*/\1 \2 \3/p' <<<"$out")
read -r np used slots <<<"$padded"
check "padded tokens present ($np)" test "${np:-0}" -gt 0
check "unused prediction slots present ($used of $slots)" test "${used:-0}" -lt "${slots:-0}"

run "$BP_BIN" gradcheck --help
check "gradcheck --help exits 0" test "$rc" -eq 0
check "gradcheck --help prints usage" grep -q "usage: bert_pretrain gradcheck" <<<"$out"
run "$BP_BIN" gradcheck
check "gradcheck without a config exits 2 (rc $rc)" test "$rc" -eq 2
run "$BP_BIN" gradcheck "$TMP/tiny.yaml" --batch zero
check "gradcheck --batch zero exits 2 (rc $rc)" test "$rc" -eq 2
check "gradcheck --batch zero names the option, prefixed" grep -q "^bert_pretrain gradcheck: --batch 'zero'" <<<"$err"
run "$BP_BIN" gradcheck "$TMP/tiny.yaml" --seq 1
check "gradcheck --seq 1 exits 2 (rc $rc)" test "$rc" -eq 2
check "gradcheck --seq 1 says the sequence is too short" grep -q "^bert_pretrain gradcheck: sequence length 1 is too short" <<<"$err"
run "$BP_BIN" gradcheck "$TMP/missing.yaml"
check "gradcheck on a missing config exits 2 (rc $rc)" test "$rc" -eq 2
check "missing config named" grep -q "missing.yaml" <<<"$err"
run "$BP_BIN" gradcheck "$TMP/tiny.yaml" --set model.heads=3
check "gradcheck with heads not dividing hidden exits 2 (rc $rc)" test "$rc" -eq 2

finish
