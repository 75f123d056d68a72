#!/usr/bin/env bash
# A model bert_pretrain writes (safetensors, Hugging Face BertForPreTraining names, config.json)
# loads into a PyTorch module with those names (load_state_dict strict) and gives the same loss and
# gradients there. The C side (write, read back, same loss; errors naming the tensor and file; exit
# statuses) runs always; the PyTorch side is skipped with a visible message when python3-torch is
# absent. Run from the repository root with $BP_BIN set.
source "$(dirname "$0")/lib.sh"
FIX=tests/fixtures/model

# a tiny model with weights large enough (std 0.2) that the comparison means something
cat >"$TMP/tiny.yaml" <<'YAML'
model:
  layers: 2
  hidden: 32
  heads: 2
  intermediate: 64
  max_position: 32
  vocab_size: 100
  initializer_range: 0.2
phases:
  - {seq_len: 16, batch_size: 3, steps: 1, max_predictions_per_seq: 4}
training:
  micro_batch: 3
  seed: 99
YAML

for gelu in erf tanh; do
    run "$BP_BIN" forward --config "$TMP/tiny.yaml" --set model.gelu=$gelu --batch $FIX/batch.safetensors \
        --save-weights "$TMP/model_$gelu.safetensors" --save-hf-config "$TMP/config_$gelu.json" \
        --grads "$TMP/grads_$gelu.safetensors"
    check "forward --config ($gelu) exits 0 (rc $rc): $err" test "$rc" -eq 0
    loss=$(sed -n 's/^loss //p' <<<"$out")
    check "forward prints a loss ($gelu)" test -n "$loss"
    for k in mlm_loss nsp_loss mlm_acc nsp_acc; do
        check "forward prints $k" grep -q "^$k " <<<"$out"
    done
    check "forward's last line is JSON" grep -q '^{.*}$' <<<"$(tail -n 1 <<<"$out")"
    check "config.json names BertForPreTraining" grep -q '"architectures": \["BertForPreTraining"\]' "$TMP/config_$gelu.json"
    act=gelu
    [ $gelu = tanh ] && act=gelu_new
    check "config.json hidden_act $act" grep -q "\"hidden_act\": \"$act\"" "$TMP/config_$gelu.json"
    # read back by the C side: the shape from the weights, the same loss
    run "$BP_BIN" forward --weights "$TMP/model_$gelu.safetensors" --batch $FIX/batch.safetensors --heads 2 --gelu $gelu
    check "forward --weights (written) exits 0 (rc $rc): $err" test "$rc" -eq 0
    check "the written model gives the same loss ($gelu)" test "$(sed -n 's/^loss //p' <<<"$out")" = "$loss"
    eval "loss_$gelu=\$loss"
done

# errors: a model of another shape names the tensor and the file (exit 1); usage errors exit 2
run "$BP_BIN" forward --config "$TMP/tiny.yaml" --set model.hidden=16 --weights "$TMP/model_erf.safetensors" \
    --batch $FIX/batch.safetensors
check "shape mismatch exits 1 (rc $rc)" test "$rc" -eq 1
check "shape mismatch names the tensor" grep -q "word_embeddings.weight" <<<"$err"
check "... and the file" grep -q "model_erf.safetensors" <<<"$err"
run "$BP_BIN" forward --weights "$TMP/model_erf.safetensors" --batch "$TMP/none.safetensors" --heads 2
check "missing batch file exits 1 (rc $rc)" test "$rc" -eq 1
check "missing batch file is named" grep -q "none.safetensors" <<<"$err"
run "$BP_BIN" forward --batch $FIX/batch.safetensors
check "forward without weights or config exits 2 (rc $rc)" test "$rc" -eq 2
run "$BP_BIN" forward --weights "$TMP/model_erf.safetensors" --batch $FIX/batch.safetensors --gelu relu
check "forward --gelu relu exits 2 (rc $rc)" test "$rc" -eq 2
run "$BP_BIN" forward --weights "$TMP/model_erf.safetensors" --batch $FIX/batch.safetensors --set training.seed=3
check "forward without a config refuses a non-model --set (rc $rc)" test "$rc" -eq 2
check "the refused --set is named" grep -q "^bert_pretrain forward: --set training.seed=3: .*only model" <<<"$err"
run "$BP_BIN" forward --help
check "forward --help exits 0" test "$rc" -eq 0

if ! /usr/bin/python3 -c "import torch, numpy" >/dev/null 2>&1; then
    echo "SKIP: python3-torch not found: the PyTorch load of the written model is not checked"
    finish
    exit
fi
for gelu in erf tanh; do
    eval "loss=\$loss_$gelu"
    run /usr/bin/python3 scripts/torch_reference.py check --weights "$TMP/model_$gelu.safetensors" \
        --config "$TMP/config_$gelu.json" --batch $FIX/batch.safetensors --loss "$loss" --grads "$TMP/grads_$gelu.safetensors"
    check "PyTorch loads the written model strictly and agrees ($gelu, rc $rc): $out $err" test "$rc" -eq 0
    check "PyTorch check says OK ($gelu)" grep -q "^check: OK" <<<"$out"
done

finish
