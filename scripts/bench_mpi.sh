#!/usr/bin/env bash
# Data-parallel speed on this machine (issue 12's benchmark, docs/scaling.md): bert-mini training
# (vocab 300 from tests/fixtures/train, seq 128, global batch 64, micro 16) as
#   1 rank x C threads, C ranks x 1 thread, and C ranks x 1 thread with the sharded optimizer,
# C = the number of cores, the three alternated ROUNDS times (default 3) so that the machine's
# drift falls on all of them. Per run: the median tokens/s over the steps after the first two, the
# median exposed communication per step (comm_exposed_s) and its share of the step time, and the
# other processes' share of the CPU meanwhile (from /proc/stat: 0% = a quiet machine).
#
#   scripts/bench_mpi.sh [ROUNDS]        (make bench-mpi)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
BIN=$PWD/bert_pretrain
CORES=$(nproc)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
[ -n "${BENCH_MPI_KEEP:-}" ] && trap - EXIT && echo "bench_mpi: keeping $W"
cat > "$W/mini.yaml" <<YAML
model: {preset: bert-mini}
data: {vocab: vocab.txt, vocab_size: 300, input: [$PWD/tests/fixtures/train/corpus.txt],
       train: shards/train, eval: shards/eval, eval_fraction: 0.1, eval_examples: 16}
optimizer: {name: lamb}
schedule: {lr: 1.0e-3, warmup_ratio: 0.1}
phases:
  - {seq_len: 128, batch_size: 64, steps: 12, max_predictions_per_seq: 20}
training: {micro_batch: 16, seed: 1, run_dir: run, checkpoint_every: 0, eval_every: 0, log_every: 4,
           trust_ratio_every: 0}
YAML
cd "$W"
"$BIN" prepare mini.yaml > prepare.log 2>&1

# the machine's busy CPU time (user nice system irq softirq), in clock ticks
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat; }
# run NAME LAUNCH...: one training run; prints "tokens/s exposed_ms step_ms" (medians over the
# steps after the first two)
run() {
    local name=$1
    shift
    rm -rf "run-$name"
    "$@" --set "training.run_dir=run-$name" > /dev/null 2> "$name.err"
    python3 - "run-$name/metrics.jsonl" <<'PY'
import json, statistics, sys
steps = [json.loads(l) for l in open(sys.argv[1]) if '"type":"step"' in l][2:]
tps = statistics.median(s["tokens_per_s"] for s in steps)
exp = statistics.median(s.get("comm_exposed_s", 0.0) for s in steps)
print("%.0f %.1f %.0f" % (tps, exp * 1e3, 64 * 128 / tps * 1e3))
PY
}
# measure NAME LAUNCH...: a run's figures and the other processes' share of the CPU meanwhile: the
# machine's busy time minus the run's own (the CPU time of this subshell's children), over wall x cores
measure() {
    local name=$1
    shift
    local b0 b1 c0 w0 c1 w1 me=$BASHPID # this subshell: the runs' CPU time adds to its children's
    b0=$(busy)
    c0=$(awk '{print $14+$15+$16+$17}' /proc/$me/stat)
    w0=$(date +%s.%N)
    local line; line=$(run "$name" "$@")
    w1=$(date +%s.%N)
    c1=$(awk '{print $14+$15+$16+$17}' /proc/$me/stat)
    b1=$(busy)
    echo "$line $(awk -v b0="$b0" -v b1="$b1" -v c0="$c0" -v c1="$c1" -v w0="$w0" -v w1="$w1" \
        -v hz="$(getconf CLK_TCK)" -v c="$CORES" \
        'BEGIN {o = ((b1 - b0) - (c1 - c0)) / hz / ((w1 - w0) * c); if (o < 0) o = 0; printf "%.0f%%", 100 * o}')"
}

echo "bench_mpi: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $CORES cores;" \
     "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}; bert-mini T128 global batch 64 micro 16, LAMB"
printf '%-28s %10s %14s %10s %8s\n' "setting" "tokens/s" "exposed ms" "step ms" "others"
declare -A all
for r in $(seq "$ROUNDS"); do
    for cfg in one many sharded; do
        case $cfg in
        one) line=$(measure "one$r" "$BIN" mini.yaml --set "training.threads=$CORES") ;;
        many) line=$(measure "many$r" mpirun --oversubscribe --bind-to none -np "$CORES" "$BIN" mini.yaml --set training.threads=1) ;;
        sharded) line=$(measure "sh$r" mpirun --oversubscribe --bind-to none -np "$CORES" "$BIN" mini.yaml --set training.threads=1 \
            --set training.shard_optimizer=true) ;;
        esac
        read -r tps exp step oth <<< "$line"
        label="1 rank x $CORES threads"
        [ $cfg = many ] && label="$CORES ranks x 1 thread"
        [ $cfg = sharded ] && label="$CORES ranks x 1, sharded"
        printf '%-28s %10s %14s %10s %8s   (round %d)\n' "$label" "$tps" "$exp" "$step" "$oth" "$r"
        all[$cfg]="${all[$cfg]:-} $tps"
    done
done
med() { tr ' ' '\n' <<< "$1" | grep . | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
one=$(med "${all[one]}") many=$(med "${all[many]}") sh=$(med "${all[sharded]}")
echo "medians: 1 rank x $CORES threads $one, $CORES ranks x 1 thread $many ($(awk -v a="$many" -v b="$one" 'BEGIN {printf "%.2f", a / b}')x)," \
     "sharded $sh ($(awk -v a="$sh" -v b="$many" 'BEGIN {printf "%.2f", a / b}')x of unsharded) tokens/s"
