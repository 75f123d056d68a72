#!/usr/bin/env bash
# CLI tests for the one argument parser (src/cli.c) as every command sees it: --help answers 0 for
# each command, the message prefix "bert_pretrain CMD: " on every usage error, "--set k=v" and
# "--set=k=v" both accepted, "--name=value" like "--name value", one limit on --set, exit 2 on a
# usage error. Run from the repository root with $BP_BIN set (tests/run_tests.sh does both).
source "$(dirname "$0")/lib.sh"

for cmd in train prepare vocab tokenize show-batch eval export gradcheck forward bench; do
    run "$BP_BIN" "$cmd" --help
    check "$cmd --help exits 0" [ "$rc" -eq 0 ]
    check "$cmd --help prints its usage" grep -q "^usage: bert_pretrain" "$TMP/out"
    run "$BP_BIN" "$cmd" --no-such-option
    check "$cmd: an unknown option exits 2" [ "$rc" -eq 2 ]
    check "$cmd: the message has the command's prefix" grep -q "^bert_pretrain $cmd: unknown option '--no-such-option'" "$TMP/err"
done

# a config to parse: --dry-run resolves it and prints JSON, so the --set forms can be compared
cat >"$TMP/c.yaml" <<'YAML'
model: {preset: bert-tiny, vocab_size: 64}
phases:
  - {seq_len: 16, batch_size: 4, steps: 2, max_predictions_per_seq: 2}
training: {micro_batch: 4, run_dir: runs/x}
YAML
run "$BP_BIN" "$TMP/c.yaml" --dry-run --set training.seed=7 --set=optimizer.beta1=0.8
check "--set k=v and --set=k=v both accepted" [ "$rc" -eq 0 ]
check "--set k=v applied" grep -q '"seed": *7' "$TMP/out"
check "--set=k=v applied" grep -q '"beta1": *0.8' "$TMP/out"
run "$BP_BIN" "$TMP/c.yaml" --dry-run --set training.seed=7
cp "$TMP/out" "$TMP/a.json"
run "$BP_BIN" "$TMP/c.yaml" --dry-run --set=training.seed=7
check "--set k=v and --set=k=v resolve to the same config" cmp -s "$TMP/out" "$TMP/a.json"

sets=()
for i in $(seq 65); do sets+=(--set training.seed=$i); done
run "$BP_BIN" "$TMP/c.yaml" --dry-run "${sets[@]}"
check "65 --set options: exit 2" [ "$rc" -eq 2 ]
check "65 --set options: the limit is named" grep -q "more than 64 --set options" "$TMP/err"
run "$BP_BIN" "$TMP/c.yaml" --dry-run "${sets[@]:0:128}"
check "64 --set options are accepted" [ "$rc" -eq 0 ]

run "$BP_BIN" "$TMP/c.yaml" --dry-run --set
check "--set without a value: exit 2" [ "$rc" -eq 2 ]
run "$BP_BIN" "$TMP/c.yaml" --dry-run --set=
check "--set= without a value: exit 2" [ "$rc" -eq 2 ]
run "$BP_BIN" "$TMP/c.yaml" --dry-run --set nosection=1
check "a bad key in --set is a configuration error (exit 2)" [ "$rc" -eq 2 ]
check "the bad key is named with the prefix" grep -q "^bert_pretrain train: .*nosection" "$TMP/err"

# --dry-run --ranks N: the plan of an N-rank job without starting it (accumulation, memory per rank)
run "$BP_BIN" "$REPO_ROOT/configs/32k.yaml" --dry-run --ranks 64 --set training.shard_optimizer=true
check "--dry-run --ranks 64: exit 0 (rc=$rc)" [ "$rc" -eq 0 ]
check "... phase 1 split over 64 ranks" grep -q "32768 = 32 x 16 x 64" "$TMP/err"
check "... BERT-Large's optimizer state per rank: 1/64 of 2.51 GiB" grep -q "(1/64 of 2.51, training.shard_optimizer)" "$TMP/err"
# two gradient sums in flight at most, the largest bucket being the embeddings' gradients (the word
# embeddings 30522 x 1024 + positions 512 x 1024 + types and LayerNorm 4 x 1024): 2 x 4 bytes x 31.78M
check "... Open MPI's temporaries for two of the largest gradient sums: 0.24 GiB" \
    grep -q "+ gradient sums in flight 0.24 GiB" "$TMP/err"
# the memory plan follows how activations are kept: BERT-Large at micro 8 x seq 512 (configs/32k.yaml)
activations_gib() { sed -n 's/.* + activations \([0-9.]*\) (\([^)]*\)).*/\1 \2/p' "$TMP/err"; }
run "$BP_BIN" "$REPO_ROOT/configs/32k.yaml" --dry-run --set training.threads=2 --set training.recompute_attention=false
kept=$(activations_gib)
run "$BP_BIN" "$REPO_ROOT/configs/32k.yaml" --dry-run --set training.threads=2
recomputed=$(activations_gib)
check "one process: no gradient sums in the plan" not grep -q "gradient sums in flight" "$TMP/err"
check "memory plan: probabilities kept ($kept) above recomputed ($recomputed) by >= 35%" \
    awk -v a="${kept%% *}" -v b="${recomputed%% *}" 'BEGIN { exit !(b > 0 && b <= 0.65 * a) }'
check "... the plan says they are all kept in fp32 ($kept)" [ "${kept#* }" = "all kept in fp32" ]
check "... or recomputed ($recomputed)" [ "${recomputed#* }" = "attention recomputed" ]
if grep -q avx512_bf16 /proc/cpuinfo && [ -z "${BP_CPU_NO_BF16:-}" ]; then
    run "$BP_BIN" "$REPO_ROOT/configs/32k.yaml" --dry-run --set training.threads=2 --set training.precision=bf16
    half=$(activations_gib)
    check "memory plan in bf16 ($half): at most half of all kept in fp32 ($kept)" \
        awk -v a="${kept%% *}" -v b="${half%% *}" 'BEGIN { exit !(b > 0 && b <= 0.5 * a) }'
else
    echo "SKIP memory plan in bf16: this CPU has no AVX512-BF16 (or BP_CPU_NO_BF16 is set)"
fi
run "$BP_BIN" "$TMP/c.yaml" --ranks 2
check "--ranks without --dry-run: exit 2 (rc=$rc)" [ "$rc" -eq 2 ]
check "... saying why" grep -q "ranks N plans a run with --dry-run" "$TMP/err"
run "$BP_BIN" "$TMP/c.yaml" --dry-run --ranks 3
check "--ranks 3 where batch 4 does not split over 3 ranks: exit 2 (rc=$rc)" [ "$rc" -eq 2 ]

run "$BP_BIN" show-batch "$TMP/c.yaml" --step=x
check "--name=value is parsed like --name value (bad integer: exit 2)" [ "$rc" -eq 2 ]
check "the bad value is named" grep -q -- "--step 'x' must be an integer" "$TMP/err"
run "$BP_BIN" "$TMP/c.yaml" "$TMP/c.yaml" --dry-run
check "a second positional argument: exit 2" [ "$rc" -eq 2 ]
run "$BP_BIN" eval
check "a missing positional argument: exit 2" [ "$rc" -eq 2 ]
check "the missing argument is named" grep -q "^bert_pretrain eval: missing CONFIG.yaml" "$TMP/err"
run "$BP_BIN" "$TMP/missing.yaml"
check "a config that does not exist: exit 2 with the prefix" [ "$rc" -eq 2 ]
check "the missing config is named" grep -q "^bert_pretrain train: .*missing.yaml" "$TMP/err"

finish
