#!/usr/bin/env bash
# `make bench`: the speed table of docs/performance.md, every figure measured in this one run on
# this machine, the environment as it is set (OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE and the thread
# settings are read, never changed):
#   1. training-step tokens/s, ours in fp32 and (where the CPU has native bf16: avx512_bf16 in
#      /proc/cpuinfo, BP_CPU_NO_BF16 unset) in bf16 (training.precision=bf16) vs PyTorch
#      (scripts/torch_bert.py in fp32 and in bf16 autocast, the fastest of its runs at 1 .. nproc
#      threads each) at bert-mini (L4 H256 A4, T 128, B 32) and bert-base (T 128, B 16);
#      The bf16 runs also time each bf16 GEMM engine (ours, oneDNN) at the step's shapes: the
#      evidence for the rule that picks one (docs/performance.md);
#   2. bert-base achieved matmul GFLOP/s over forward+backward vs the cblas_sgemm rate measured at
#      the step's own product shapes in the same process;
#   3. bert-base time per token at T 512 vs T 128 (same micro-batch 16);
#   4. the optimizer step (LAMB and Adam at bert-base size): bytes moved / time vs a memcpy;
#   5. peak RSS at bert-base B 16, T 128 and T 512, and the RSS growth over the timed steps.
# PyTorch rows are skipped with a note when /usr/bin/python3 cannot import torch. The table goes to
# stdout and bench/latest.md; the full output of every run to bench/run.log.tmp.
#
# BENCH_QUICK=1 runs the same table at toy sizes in a few seconds (to test this script);
# BENCH_PYTHON, TORCH_BERT and BENCH_OUT override the interpreter, the PyTorch script and the table.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BP_BIN:-./bert_pretrain}
PY=${BENCH_PYTHON:-/usr/bin/python3}
TORCH_BERT=${TORCH_BERT:-scripts/torch_bert.py}
OUT=${BENCH_OUT:-bench/latest.md}
LOG=bench/run.log.tmp
mkdir -p bench
: > "$LOG"

# sizes: name preset seq batch steps warmup (bert-base at T 512 takes ~30 s a step on 2 cores)
if [ "${BENCH_QUICK:-0}" = 1 ]; then
    MINI=(--set model.preset=bert-tiny --seq 32 --micro-batch 4 --steps 3 --warmup 1)
    BASE=(--set model.preset=bert-tiny --seq 32 --micro-batch 4 --steps 3 --warmup 1)
    BASE512=(--set model.preset=bert-tiny --seq 128 --micro-batch 4 --steps 2 --warmup 1)
    TMINI=(--layers 2 --hidden 128 --heads 2 --seq 32 --batch 4 --seconds 1)
    TBASE=(--layers 2 --hidden 128 --heads 2 --seq 32 --batch 4 --seconds 1)
    OPTSET=(--set model.preset=bert-tiny)
else
    MINI=(--set model.preset=bert-mini --seq 128 --micro-batch 32 --steps 10 --warmup 2)
    BASE=(--set model.preset=bert-base --seq 128 --micro-batch 16 --steps 5 --warmup 2)
    BASE512=(--set model.preset=bert-base --seq 512 --micro-batch 16 --steps 3 --warmup 1)
    TMINI=(--layers 4 --hidden 256 --heads 4 --seq 128 --batch 32 --seconds 8)
    TBASE=(--layers 12 --hidden 768 --heads 12 --seq 128 --batch 16 --seconds 20)
    OPTSET=(--set model.preset=bert-base)
fi

# CPU seconds every process has used so far (/proc/stat: user nice system irq softirq steal)
busy_all() { awk -v hz="$(getconf CLK_TCK)" '/^cpu / { print ($2 + $3 + $4 + $7 + $8 + $9) / hz }' /proc/stat; }
NCPU=$(nproc)
OTHERS=""

# run LABEL CMD...: shows and logs the output, leaves its last JSON line in $JSON and appends
# "LABEL X%" to $OTHERS: the share of the machine's CPU time that other processes took meanwhile
# (all processes' CPU time from /proc/stat minus the command's own, over wall time x cores)
run() {
    local label=$1
    shift
    echo "== $label: $*" | tee -a "$LOG" >&2
    local tmp rc=0
    tmp=$(mktemp)
    local t0=$SECONDS b0 w0 b1 w1 child
    b0=$(busy_all)
    w0=$(date +%s.%N)
    # `times` in the subshell: its second line is the CPU time of the command (the children)
    ( "$@" > "$tmp" 2>&1 || exit $?; times > "$tmp.times" ) || rc=$?
    w1=$(date +%s.%N)
    b1=$(busy_all)
    if [ $rc != 0 ]; then
        tee -a "$LOG" < "$tmp" >&2
        rm -f "$tmp" "$tmp.times"
        echo "bench.sh: '$label' failed (exit $rc; output above and in $LOG)" >&2
        exit 1
    fi
    child=$(awk 'NR == 2 { n = 0; for (i = 1; i <= 2; i++) { split($i, p, "m"); n += p[1] * 60 + p[2] } print n }' "$tmp.times")
    local others
    others=$(awk "BEGIN { o = (($b1 - $b0) - $child) / (($w1 - $w0) * $NCPU); if (o < 0) o = 0; printf \"%.0f\", 100 * o }")
    OTHERS="${OTHERS:+$OTHERS, }$label ${others}%"
    tee -a "$LOG" < "$tmp" >&2
    echo "== $label took $((SECONDS - t0)) s; other processes used ${others}% of the CPU meanwhile" | tee -a "$LOG" >&2
    JSON=$(grep '^{' "$tmp" | tail -n 1)
    rm -f "$tmp" "$tmp.times"
}

# field KEY: the value of "KEY" in $JSON (flat JSON written by bert_pretrain / torch_bert.py)
field() { sed -n 's/.*"'"$1"'": *"\{0,1\}\([^",}]*\).*/\1/p' <<< "$JSON"; }
# calc EXPR: awk arithmetic, printed with the format in $2 (default %.2f)
calc() { awk "BEGIN { printf \"${2:-%.2f}\", $1 }"; }
# tok X / gf X: a tokens/s or GFLOP/s cell, "-" when not measured
tok() { if [ "$1" = - ]; then echo -; else calc "$1" %.0f; fi; }
gf() { if [ "$1" = - ]; then echo -; else calc "$1" %.1f; fi; }
# verdict VALUE OP TARGET
verdict() { awk "BEGIN { print (($1) $2 ($3)) ? \"yes\" : \"NO\" }"; }

have_bf16=0
if [ -z "${BP_CPU_NO_BF16:-}" ] && grep -qw avx512_bf16 /proc/cpuinfo; then
    have_bf16=1
else
    echo "bench.sh: no native bf16 on this CPU (or BP_CPU_NO_BF16 is set): our bf16 column is skipped" >&2
fi
# run_bf16 LABEL ARGS...: our bench in bf16, checked to have run in bf16
run_bf16() {
    local label=$1
    shift
    run "$label" "$BIN" bench "$@" --set training.precision=bf16
    if [ "$(field precision)" != bf16 ]; then
        echo "bench.sh: '$label' ran in '$(field precision)', not bf16" >&2
        exit 1
    fi
}
bf_mini_tok=-; bf_base_tok=-; bf_mini_gf=-; bf_base_gf=-
# amx_verdict VALUE MIN: issue 13's AMX targets are judged on CPUs with AMX-BF16 only
amx_verdict() {
    if grep -qw amx_bf16 /proc/cpuinfo; then verdict "$1" '>=' "$2"; else echo "no AMX here (measured, not judged)"; fi
}

# engines LABEL: the bf16 engine that ran and each engine's GEMM rate at the step's shapes, from $JSON
engines() { printf '%s %s %s' "$(field bf16_engine)" "$(field bf16_gemm_ours_gflops)" "$(field bf16_gemm_onednn_gflops)"; }
# faster ENGINE OURS ONEDNN: yes when ENGINE is the faster of the two (or oneDNN is not there)
faster() { awk -v e="$1" -v o="$2" -v d="$3" 'BEGIN { print ((e == "oneDNN" && d >= o) || (e == "ours" && (d == 0 || o >= d))) ? "yes" : "NO" }'; }

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
start=$SECONDS
have_torch=0
torch_note=""
if [ -x "$PY" ] && "$PY" -c 'import torch' 2> /dev/null && [ -f "$TORCH_BERT" ]; then
    have_torch=1
    torch_version=$("$PY" -c 'import torch; print(torch.__version__)')
else
    torch_note="PyTorch rows skipped: $PY cannot import torch (apt-get install python3-torch) or $TORCH_BERT is missing."
    echo "bench.sh: $torch_note" >&2
fi

run "ours bert-mini" "$BIN" bench "${MINI[@]}"
mini_tok=$(field tokens_per_s); mini_gf=$(field gflops_fwd_bwd); mini_sg=$(field sgemm_gflops)
mini_ratio=$(field ratio); threads=$(field threads)
if [ $have_bf16 = 1 ]; then
    run_bf16 "ours bert-mini bf16" "${MINI[@]}"
    bf_mini_tok=$(field tokens_per_s); bf_mini_gf=$(field gflops_fwd_bwd)
    read -r bf_mini_eng bf_mini_own bf_mini_dn <<< "$(engines)"
fi
if [ $have_torch = 1 ]; then
    run "pytorch bert-mini" "$PY" "$TORCH_BERT" "${TMINI[@]}"
    tmini_tok=$(field tokens_per_s); tmini_th=$(field threads)
    tmini_bf=$(field bf16_tokens_per_s); tmini_bfth=$(field bf16_threads)
fi

run "ours bert-base T128" "$BIN" bench "${BASE[@]}"
base_tok=$(field tokens_per_s); base_gf=$(field gflops_fwd_bwd); base_sg=$(field sgemm_gflops)
base_kg=$(field kern_gemm_gflops); base_ratio=$(field ratio); base_step=$(field step_s)
base_T=$(field seq); base_B=$(field batch)
base_peak=$(field peak_rss_mib); base_growth=$(field rss_growth_mib)
if [ $have_bf16 = 1 ]; then
    run_bf16 "ours bert-base T128 bf16" "${BASE[@]}"
    bf_base_tok=$(field tokens_per_s); bf_base_gf=$(field gflops_fwd_bwd)
    read -r bf_base_eng bf_base_own bf_base_dn <<< "$(engines)"
fi
if [ $have_torch = 1 ]; then
    run "pytorch bert-base T128" "$PY" "$TORCH_BERT" "${TBASE[@]}"
    tbase_tok=$(field tokens_per_s); tbase_th=$(field threads)
    tbase_bf=$(field bf16_tokens_per_s); tbase_bfth=$(field bf16_threads)
fi

run "ours bert-base T512" "$BIN" bench "${BASE512[@]}"
b512_tok=$(field tokens_per_s); b512_step=$(field step_s); b512_T=$(field seq)
b512_gf=$(field gflops_fwd_bwd); b512_sg=$(field sgemm_gflops)
b512_peak=$(field peak_rss_mib); b512_growth=$(field rss_growth_mib)

run "optimizer step" "$BIN" bench --optimizer-only "${OPTSET[@]}"
opt_floats=$(field floats); memcpy_ms=$(field memcpy_ms)
lamb_ms=$(field lamb_ms); lamb_share=$(field lamb_share)
adam_ms=$(field adam_ms); adam_share=$(field adam_share)

load_end=$(cut -d' ' -f1-3 /proc/loadavg)
elapsed=$((SECONDS - start))
per_tok_ratio=$(calc "($b512_step / ($b512_T * $base_B)) / ($base_step / ($base_T * $base_B))")

{
    echo "# bert_pretrain speed (make bench)"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2> /dev/null || echo unknown)$(git diff --quiet HEAD -- src 2> /dev/null || echo ' + uncommitted src changes'); $(nproc) cores, $(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -n 1);"
    echo "$threads OpenMP thread(s); OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}, OPENBLAS_L2_SIZE=${OPENBLAS_L2_SIZE:-unset}, OMP_NUM_THREADS=${OMP_NUM_THREADS:-unset};"
    echo "load average (1/5/15 min) $load_start at the start, $load_end at the end; the whole run took $elapsed s."
    [ "${BENCH_QUICK:-0}" = 1 ] && echo "BENCH_QUICK=1: toy sizes (bert-tiny), the row names and targets do not apply."
    if [ $have_torch = 1 ]; then
        echo "PyTorch $torch_version (scripts/torch_bert.py: AdamW, fp32 and bf16 autocast, each the fastest of 1 to $(nproc) threads); ours: LAMB, $threads threads. The ratio column compares fp32 with fp32."
    else
        echo "$torch_note"
    fi
    echo
    echo "| figure | ours fp32 | ours bf16 | reference | ratio | target | met |"
    echo "|---|---|---|---|---|---|---|"
    if [ $have_torch = 1 ]; then
        r=$(calc "$mini_tok / $tmini_tok")
        echo "| bert-mini T128 B32 training tokens/s | $(calc "$mini_tok" %.0f) | $(tok "$bf_mini_tok") | PyTorch fp32 $(calc "$tmini_tok" %.0f) ($tmini_th thr), bf16 autocast $(calc "$tmini_bf" %.0f) ($tmini_bfth thr) | ${r}x | >= 1.5x | $(verdict "$r" '>=' 1.5) |"
        r=$(calc "$base_tok / $tbase_tok")
        echo "| bert-base T128 B16 training tokens/s | $(calc "$base_tok" %.0f) | $(tok "$bf_base_tok") | PyTorch fp32 $(calc "$tbase_tok" %.0f) ($tbase_th thr), bf16 autocast $(calc "$tbase_bf" %.0f) ($tbase_bfth thr) | ${r}x | >= 1.25x | $(verdict "$r" '>=' 1.25) |"
    else
        echo "| bert-mini T128 B32 training tokens/s | $(calc "$mini_tok" %.0f) | $(tok "$bf_mini_tok") | (no PyTorch) | - | >= 1.5x | skipped |"
        echo "| bert-base T128 B16 training tokens/s | $(calc "$base_tok" %.0f) | $(tok "$bf_base_tok") | (no PyTorch) | - | >= 1.25x | skipped |"
    fi
    if [ $have_bf16 = 1 ]; then
        r=$(calc "$bf_mini_tok / $mini_tok"); r2=$(calc "$bf_base_tok / $base_tok")
        echo "| our bf16 vs our fp32 tokens/s, bert-mini; bert-base T128 | | | | ${r}x; ${r2}x | >= 1.3x | $(verdict "$(calc "$r < $r2 ? $r : $r2")" '>=' 1.3) |"
        m1=$(faster "$bf_mini_eng" "$bf_mini_own" "$bf_mini_dn"); m2=$(faster "$bf_base_eng" "$bf_base_own" "$bf_base_dn")
        echo "| bf16 GEMM GFLOP/s at the step's shapes, ours / oneDNN (0: none), bert-mini; bert-base T128 | | ran on $bf_base_eng | $(gf "$bf_mini_own") / $(gf "$bf_mini_dn"); $(gf "$bf_base_own") / $(gf "$bf_base_dn") | | the rule's engine is the faster | $m1; $m2 |"
        # issue 13's targets for CPUs with AMX, measured everywhere and judged only there
        s1=$(calc "$bf_mini_gf / ($bf_mini_own > $bf_mini_dn ? $bf_mini_own : $bf_mini_dn)")
        s2=$(calc "$bf_base_gf / ($bf_base_own > $bf_base_dn ? $bf_base_own : $bf_base_dn)")
        echo "| bf16 step matmul GFLOP/s (fwd+bwd) vs the best bf16 GEMM rate at its shapes, bert-mini; bert-base T128 | | $(gf "$bf_mini_gf"); $(gf "$bf_base_gf") | best GEMM as above | $s1; $s2 | >= 0.60 on AMX | $(amx_verdict "$(calc "$s1 < $s2 ? $s1 : $s2")" 0.60) |"
        if [ $have_torch = 1 ]; then
            b1=$(calc "($bf_mini_tok > $mini_tok ? $bf_mini_tok : $mini_tok) / ($tmini_bf > $tmini_tok ? $tmini_bf : $tmini_tok)")
            b2=$(calc "($bf_base_tok > $base_tok ? $bf_base_tok : $base_tok) / ($tbase_bf > $tbase_tok ? $tbase_bf : $tbase_tok)")
            echo "| our better precision vs PyTorch's better (fp32 or bf16 autocast) tokens/s, bert-mini; bert-base T128 | | | as above | ${b1}x; ${b2}x | >= 1.5x on AMX | $(amx_verdict "$(calc "$b1 < $b2 ? $b1 : $b2")" 1.5) |"
        fi
    else
        echo "| our bf16 vs our fp32 tokens/s | | - | | - | >= 1.3x | skipped (no native bf16) |"
    fi
    echo "| bert-base T128 matmul GFLOP/s (fwd+bwd) vs cblas_sgemm at the same shapes | $(calc "$base_gf" %.1f) | $(gf "$bf_base_gf") | sgemm $(calc "$base_sg" %.1f) | $(calc "$base_ratio") | >= 0.80 | $(verdict "$base_ratio" '>=' 0.80) |"
    echo "| bert-base time per token, T512 vs T128 (B16) | $(calc "1e6 * $b512_step / ($b512_T * $base_B)" %.0f) us | - | $(calc "1e6 * $base_step / ($base_T * $base_B)" %.0f) us | ${per_tok_ratio}x | <= 1.6x | $(verdict "$per_tok_ratio" '<=' 1.6) |"
    echo "| LAMB step, $(calc "$opt_floats / 1e6" %.1f)M floats (40 B/param) | $(calc "$lamb_ms" %.1f) ms | - | memcpy $(calc "$memcpy_ms" %.1f) ms (8 B/param) | $(calc "$lamb_share") of copy rate | >= 0.60 | $(verdict "$lamb_share" '>=' 0.60) |"
    echo "| Adam step, same size (28 B/param) | $(calc "$adam_ms" %.1f) ms | - | memcpy $(calc "$memcpy_ms" %.1f) ms | $(calc "$adam_share") of copy rate | >= 0.60 | $(verdict "$adam_share" '>=' 0.60) |"
    echo "| peak RSS bert-base B16 T128; growth over the timed steps | $(calc "$base_peak" %.0f) MiB; $(calc "$base_growth" %+.1f) MiB | - | | | no growth | $(verdict "$base_growth" '<=' 1.0) |"
    echo "| peak RSS bert-base B16 T512; growth over the timed steps | $(calc "$b512_peak" %.0f) MiB; $(calc "$b512_growth" %+.1f) MiB | - | | | no growth | $(verdict "$b512_growth" '<=' 1.0) |"
    echo
    echo "Other processes' share of the CPU during each run (0% = a quiet machine): $OTHERS."
    echo
    echo "Also measured: bert-mini $(calc "$mini_gf" %.1f) matmul GFLOP/s over forward+backward vs sgemm $(calc "$mini_sg" %.1f) at its shapes ($(calc "$mini_ratio")); bert-base T512 $(calc "$b512_gf" %.1f) vs $(calc "$b512_sg" %.1f) ($(calc "$b512_gf / $b512_sg")), $(calc "$b512_tok" %.0f) tokens/s; kern_gemm alone at the bert-base T128 shapes $(calc "$base_kg" %.1f) GFLOP/s."
    echo "bf16: ours with training.precision=bf16 (products' inputs rounded to bf16, fp32 sums; docs/mixed_precision.md); PyTorch with torch.autocast(\"cpu\", dtype=torch.bfloat16), fp32 master weights. Our bf16 bert-mini: $(gf "$bf_mini_gf") matmul GFLOP/s over forward+backward."
    echo "Method: docs/performance.md. Full output: $LOG."
} > "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
cat "$OUT"
