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
# the environment's OPENBLAS_CORETYPE is never changed (some machines set it because OpenBLAS
# misbehaves there): the check of OpenBLAS's own choice runs only where it is not set
if [ -z "${OPENBLAS_CORETYPE:-}" ]; then
    run "$BP_BIN" bench "${small[@]}"
    check "OPENBLAS_CORETYPE unset: rc 0 ($rc)" test "$rc" -eq 0
    check "OPENBLAS_CORETYPE unset: no generic core" not grep -Eq "OpenBLAS core (Prescott|Core2|Nehalem|Katmai|Unknown)" <<<"$out"
else
    echo "SKIP the generic-core check: OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE is set by the environment (never changed)"
fi
if grep -q avx512_bf16 /proc/cpuinfo && [ -z "${BP_CPU_NO_BF16:-}" ]; then
    run "$BP_BIN" bench "${small[@]}" --set training.precision=auto
    check "auto on AVX512-BF16 runs bf16" grep -Eq "products in bf16 on (avx512-bf16|oneDNN)" <<<"$out"
else
    echo "SKIP bf16 bench: this CPU has no AVX512-BF16 (or BP_CPU_NO_BF16 hides it)"
fi
finish
