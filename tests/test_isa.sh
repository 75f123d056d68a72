#!/usr/bin/env bash
# The x86-64 levels (src/kernels_isa.h): the binary is built for baseline x86-64, and only the
# level builds of the elementwise math and the bf16 kernels (which carry target attributes) hold
# AVX or AVX-512 instructions; the level in use is the best the CPU runs, bench and the start-up
# summary name it, and BP_KERNEL_ISA picks another or is refused with a clear error. That every
# level gives the same numbers is tested in test_model.c, test_optim.c and test_train.sh.
source "$(dirname "$0")/lib.sh"
small=(--steps 1 --warmup 0 --no-sgemm --seq 16 --micro-batch 2 --set model.layers=1)
build="$REPO_ROOT/${BP_TEST_BUILD:-build}"

# --- no instruction beyond baseline x86-64 outside the level builds ---------------------------------
# An instruction counts as beyond baseline when it is VEX/EVEX-encoded (its mnemonic starts with v)
# or names a ymm, zmm or mask register. Allowed: kernels_math/optim_math built for v3 and v4, and
# the functions of gemm_bf16.c that carry its AVX512-BF16 target attribute.
beyond_baseline() { # OBJECT: prints "function count" for each function with such instructions
    objdump -d --no-show-raw-insn "$1" | awk '
        /^[0-9a-f]+ <.*>:$/ { fn = $2; next }
        NF >= 2 && ($2 ~ /^v/ || /%[yz]mm|%k[0-7]/) { n[fn]++ }
        END { for (f in n) print f, n[f] }'
}
if command -v objdump >/dev/null; then
    objects=("$build"/*.o)
    check "the build has objects to inspect (${#objects[@]} in $build)" test "${#objects[@]}" -gt 20
    bad=""
    for o in "${objects[@]}"; do
        case "$(basename "$o")" in
        kernels_math.x86_64_v3.o | kernels_math.x86_64_v4.o | optim_math.x86_64_v3.o | optim_math.x86_64_v4.o) continue ;;
        esac
        while read -r fn count; do
            [ -n "$fn" ] || continue
            if [ "$(basename "$o")" = gemm_bf16.o ] && grep -Eq '^<(micro_kernel|gemm_bf16_round|pack_row|pack_cols16)>:$' <<<"$fn"; then
                continue
            fi
            bad+=" $(basename "$o"):$fn($count)"
        done < <(beyond_baseline "$o")
    done
    check "no AVX/AVX-512 instruction outside the level builds and the bf16 kernels:${bad:- none}" test -z "$bad"
    n4=$(objdump -d --no-show-raw-insn "$build/kernels_math.x86_64_v4.o" | grep -c '%zmm')
    check "the x86-64-v4 build uses AVX-512 registers ($n4 instructions)" test "$n4" -gt 0
    n3=$(objdump -d --no-show-raw-insn "$build/kernels_math.x86_64_v3.o" | grep -c 'vfmadd')
    check "the x86-64-v3 build uses FMA ($n3 instructions)" test "$n3" -gt 0
else
    echo "SKIP the instruction check: no objdump"
fi

# --- the level in use ---------------------------------------------------------------------------------
flags=$(grep -m1 '^flags' /proc/cpuinfo)
has() { for f in "$@"; do grep -qw "$f" <<<"$flags" || return 1; done; }
expect=x86-64
# (LZCNT, also in v3, is left out: some hypervisors hide its "abm" flag from /proc/cpuinfo while
# CPUID has it, and every CPU with AVX2 has it)
has avx avx2 bmi1 bmi2 f16c fma movbe && expect=x86-64-v3
[ "$expect" = x86-64-v3 ] && has avx512f avx512bw avx512cd avx512dq avx512vl && expect=x86-64-v4
run "$BP_BIN" bench "${small[@]}"
check "bench runs (rc $rc)" test "$rc" -eq 0
check "bench names the level, the best this CPU runs ($expect)" grep -q "elementwise kernels $expect\$" <<<"$out"
check "bench JSON names it" grep -q "\"kernels_isa\": \"$expect\"" <<<"$out"

run env BP_KERNEL_ISA=x86-64 "$BP_BIN" bench "${small[@]}"
check "BP_KERNEL_ISA=x86-64 runs the baseline build (rc $rc)" grep -q '"kernels_isa": "x86-64"' <<<"$out"

run env BP_KERNEL_ISA=avx9 "$BP_BIN" bench "${small[@]}"
check "an unknown level exits 2 (rc $rc)" test "$rc" -eq 2
check "... naming the variable and the levels: $err" grep -q "BP_KERNEL_ISA=avx9: not a level; use x86-64-v4, x86-64-v3 or x86-64" <<<"$err"

if [ "$expect" != x86-64-v4 ]; then
    run env BP_KERNEL_ISA=x86-64-v4 "$BP_BIN" bench "${small[@]}"
    check "a level this CPU lacks exits 2 (rc $rc)" test "$rc" -eq 2
    check "... saying so: $err" grep -q "this CPU does not run x86-64-v4 (it runs $expect)" <<<"$err"
else
    echo "SKIP the refusal of a level the CPU lacks: this CPU runs every level"
fi
finish
