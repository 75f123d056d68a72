#!/usr/bin/env bash
# CLI tests for training.precision: bf16 on a CPU without native bf16 (BP_CPU_NO_BF16=1 hides it)
# is a usage error naming what is missing, auto falls back to fp32 there, bench says which engine
# ran and which OpenBLAS core, and with OPENBLAS_CORETYPE unset the core is not a generic fallback.
source "$(dirname "$0")/lib.sh"
small=(--steps 1 --warmup 0 --no-sgemm --seq 16 --micro-batch 2 --set model.layers=1)

run env BP_CPU_NO_BF16=1 "$BP_BIN" bench "${small[@]}" --set training.precision=bf16
check "bf16 without native bf16 exits 2 (rc $rc)" test "$rc" -eq 2
check "bf16 without native bf16 names what is missing: $err" grep -q "needs native bf16 dot products" <<<"$err"
run env BP_CPU_NO_BF16=1 "$BP_BIN" bench "${small[@]}" --set training.precision=auto
check "auto without native bf16 runs fp32 (rc $rc)" grep -q "products in fp32 .*auto: no AVX512-BF16" <<<"$out"
check "bench JSON names the precision" grep -q '"precision": "fp32"' <<<"$out"
run env -u OPENBLAS_CORETYPE "$BP_BIN" bench "${small[@]}"
check "unset OPENBLAS_CORETYPE: rc 0 ($rc)" test "$rc" -eq 0
check "unset OPENBLAS_CORETYPE: no generic core" not grep -Eq "OpenBLAS core (Prescott|Core2|Nehalem|Katmai|Unknown)" <<<"$out"
if grep -q avx512_bf16 /proc/cpuinfo; then
    run "$BP_BIN" bench "${small[@]}" --set training.precision=auto
    check "auto on AVX512-BF16 runs bf16" grep -Eq "products in bf16 on (avx512-bf16|oneDNN)" <<<"$out"
else
    echo "SKIP bf16 bench: this CPU has no AVX512-BF16"
fi
finish
