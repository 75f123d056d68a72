#!/usr/bin/env bash
# Data-parallel training under Open MPI on a tiny model: 2 and 3 ranks give the parameters of one
# process with the same global batch (to rounding), two runs with the same ranks are bit-identical,
# a batch that does not split is refused once, a rank killed by SIGKILL ends the job naming it and
# --resume auto continues with another number of ranks, the sharded optimizer (ZeRO-1) trains bit
# for bit like the unsharded one with less memory per rank, a signal to one rank stops them all at
# one step, and a hung rank is cut off by the timeout every mpirun here runs under (a failed test,
# never a hung CI).
source "$(dirname "$0")/lib.sh"
BIN=$BP_BIN
T=$TMP
if ! command -v mpirun > /dev/null; then
    echo "SKIP: mpirun not found (make installs openmpi-bin); no MPI test ran"
    finish
    exit
fi
# CI runs as root, which Open MPI refuses unless told
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Open MPI's own allocations are not ours to check under the sanitizer build
export ASAN_OPTIONS=${ASAN_OPTIONS:-}:detect_leaks=0
# mpi N ARGS...: N ranks (more than the cores here: --oversubscribe), cut off after 60 s
mpi() {
    local n=$1
    shift
    timeout -k 5 60 mpirun --oversubscribe -np "$n" "$@"
}
steps_of() { grep '"type":"step"' "$1" | sed -E 's/,"tokens_per_s":[^,]*,//; s/,"comm_exposed_s":[^,]*//; s/"elapsed_s":[^}]*//'; }

tiny_config "$T/tiny.yaml" "  - {seq_len: 32, batch_size: 12, steps: 8, max_predictions_per_seq: 5}
  - {seq_len: 64, batch_size: 6, steps: 2, max_predictions_per_seq: 10, micro_batch: 1}" \
    "{micro_batch: 2, seed: 7, run_dir: run, checkpoint_every: 4, keep_checkpoints: 10,
           log_every: 1, eval_every: 8, threads: 1}"
# tensors of two safetensors files element by element: |a - b| <= atol + rtol |a|, worst element named
cat > "$T/same.py" <<'PY'
import json, struct, sys
from array import array
def load(path):
    with open(path, 'rb') as f:
        n = struct.unpack('<Q', f.read(8))[0]
        head, data = json.loads(f.read(n)), f.read()
    out = {}
    for k, v in head.items():
        if k != '__metadata__':
            out[k] = array('f', data[v['data_offsets'][0]:v['data_offsets'][1]])
    return out
a, b = load(sys.argv[1]), load(sys.argv[2])
atol, rtol = float(sys.argv[3]), float(sys.argv[4])
if a.keys() != b.keys(): sys.exit("different tensors")
bad = n = 0
worst = (-1.0, '', 0, 0.0, 0.0)
for k in a:
    for i, (x, y) in enumerate(zip(a[k], b[k])):
        n += 1
        over = abs(x - y) - (atol + rtol * abs(x))
        bad += over > 0
        if abs(x - y) > worst[0]: worst = (abs(x - y), k, i, x, y)
print("%d of %d elements outside |a-b| <= %g + %g|a|; largest difference %s[%d]: %.9g vs %.9g" %
      (bad, n, atol, rtol, worst[1], worst[2], worst[3], worst[4]))
sys.exit(1 if bad else 0)
PY
cd "$T"
"$BIN" prepare tiny.yaml > prepare.log 2>&1
require "prepare builds vocab and shards ($(tail -n 3 prepare.log))" test -s shards/train -a -s vocab.txt
# export RUN: the final parameters as RUN.st/model.safetensors
export_run() { "$BIN" export "$1/ckpt-00000010.bin" "$1.st" > /dev/null 2>&1; }
same() { # NAME A B ATOL RTOL
    local msg
    msg=$(python3 same.py "$2.st/model.safetensors" "$3.st/model.safetensors" "$4" "$5" 2>&1)
    check "$1: $msg" test $? -eq 0
}

# --- 1, 2 and 3 ranks, global batch 12 (micro 2 x accumulation 6 / 3 / 2) --------------------------
"$BIN" tiny.yaml --set training.run_dir=r1 > /dev/null 2> r1.err
check "one process without mpirun trains (rc=$?)" test -s r1/ckpt-00000010.bin
not grep -q '"ranks"' r1/metrics.jsonl
check "... and logs no ranks or communication" test $? -eq 0
mpi 2 "$BIN" tiny.yaml --set training.run_dir=r2 > /dev/null 2> r2.err
check "2 ranks train (rc=$?)" test -s r2/ckpt-00000010.bin
check "... the plan says micro 2 x accumulation 3 x 2 rank(s)" \
    grep -q "global batch 12 = micro 2 x accumulation 3 x 2 rank(s)" r2.err
check "... one writer: one start-up summary, one final line" \
    test "$(grep -c '^bert_pretrain: bert-tiny' r2.err)" -eq 1 -a "$(grep -c '^done: 10 steps' r2.err)" -eq 1
check "... metrics carry ranks and the exposed communication time" \
    test "$(grep -c '"ranks":2,"comm_exposed_s":' r2/metrics.jsonl)" -eq 10
mpi 3 "$BIN" tiny.yaml --set training.run_dir=r3 > /dev/null 2> r3.err
check "3 ranks train (rc=$?), micro 2 x accumulation 2 x 3" \
    grep -q "global batch 12 = micro 2 x accumulation 2 x 3 rank(s)" r3.err
mpi 2 "$BIN" tiny.yaml --set training.run_dir=r2b > /dev/null 2>&1
for r in r1 r2 r3 r2b; do export_run $r; done
# 10 LAMB steps at lr 2e-2 move weights by ~1e-2; a rank missing or doubling examples moves them
# by as much, while reordered float sums differ by a few ulps (worst seen: 3e-8)
same "2 ranks = 1 rank to rounding" r1 r2 1e-6 1e-5
same "3 ranks = 1 rank to rounding" r1 r3 1e-6 1e-5
check "two 2-rank runs: bit-identical parameters" cmp -s r2.st/model.safetensors r2b.st/model.safetensors
check "... and identical step metrics" cmp -s <(steps_of r2/metrics.jsonl) <(steps_of r2b/metrics.jsonl)
# bf16 products under MPI (where the CPU has them): the same determinism; against one process the
# fp32 sums in another order can flip an operand's bf16 rounding (2^-9 relative) in the next step's
# products, so agreement is to bf16's precision, not fp32's (worst seen: 1.3e-5 of ~2e-2)
if grep -q avx512_bf16 /proc/cpuinfo && [ -z "${BP_CPU_NO_BF16:-}" ]; then
    "$BIN" tiny.yaml --set training.run_dir=h1 --set training.precision=bf16 > /dev/null 2>&1
    mpi 2 "$BIN" tiny.yaml --set training.run_dir=h2 --set training.precision=bf16 > /dev/null 2> h2.err
    mpi 2 "$BIN" tiny.yaml --set training.run_dir=h2b --set training.precision=bf16 > /dev/null 2>&1
    for r in h1 h2 h2b; do export_run $r; done
    check "bf16 on 2 ranks: the plan says bf16 products" grep -q "matrix products in bf16" h2.err
    check "... two 2-rank bf16 runs: bit-identical parameters" cmp -s h2.st/model.safetensors h2b.st/model.safetensors
    same "... bf16 on 2 ranks = 1 process to bf16 rounding" h1 h2 1e-4 1e-3
    # machines of different kinds in one run: auto would give bf16 on one rank and fp32 on the
    # other (BP_CPU_NO_BF16 hides the bf16 instructions from rank 0 only); refused before a step
    mpi 1 -x BP_CPU_NO_BF16=1 "$BIN" tiny.yaml --set training.run_dir=hx --set training.precision=auto : \
        -np 1 "$BIN" tiny.yaml --set training.run_dir=hx --set training.precision=auto > /dev/null 2> hx.err
    rc=$?
    check "auto resolving to bf16 on one rank and fp32 on another is refused (rc $rc)" test "$rc" -ne 0
    check "... saying why and what to set" grep -q "training.precision auto: the ranks' machines differ.*set training.precision: fp32" hx.err
    check "... before any step" test ! -e hx/metrics.jsonl
else
    echo "SKIP bf16 under MPI: this CPU has no AVX512-BF16 (or BP_CPU_NO_BF16 is set)"
fi

# --- a batch that does not split over the ranks -----------------------------------------------------
mpi 4 "$BIN" tiny.yaml --set training.run_dir=r4 > /dev/null 2> r4.err
rc=$?
check "batch 12 on 4 ranks x micro 2 refused (rc=$rc)" test $rc -ne 0 -a $rc -ne 124
check "... said once, naming the split" \
    test "$(grep -c 'batch_size 12 is not divisible by training.micro_batch 2 x 4 rank(s)' r4.err)" -eq 1
mpi 2 "$BIN" tiny.yaml --set training.run_dir=r2 > /dev/null 2> again.err
rc=$?
check "an existing run dir on 2 ranks refused (rc=$rc), said once" \
    test $rc -ne 0 -a $rc -ne 124 -a "$(grep -c 'already holds checkpoints' again.err)" -eq 1

# --- kill -9 of rank 1 after step 5, then --resume auto on 3 ranks ---------------------------------
cat > kill_rank1.sh <<'SH'
#!/usr/bin/env bash
[ "${OMPI_COMM_WORLD_RANK:-}" = 1 ] && export BERT_PRETRAIN_KILL_AFTER_STEP=5
exec "$@"
SH
chmod +x kill_rank1.sh
mpi 2 ./kill_rank1.sh "$BIN" tiny.yaml --set training.run_dir=rk > /dev/null 2> rk.err
rc=$?
check "rank 1 killed: the job ends, not hangs (rc=$rc)" test $rc -ne 0 -a $rc -ne 124
check "... with a message naming rank 1" grep -q "process rank 1 .*signal 9" rk.err
check "... after checkpoint 4" test -s rk/ckpt-00000004.bin
mpi 3 "$BIN" tiny.yaml --set training.run_dir=rk --resume auto > /dev/null 2> rk2.err
check "--resume auto on 3 ranks finishes (rc=$?)" test -s rk/ckpt-00000010.bin
check "... saying the rank count changed" grep -q "world_size changed: 2 -> 3 (allowed)" rk2.err
export_run rk
same "killed on 2 + resumed on 3 = 1 rank to rounding" r1 rk 1e-6 1e-5

# --- ZeRO stage 1 (training.shard_optimizer): the same training bit for bit, less memory per rank ---
# The shards' partial sums of squares are summed exactly (each chunk's from one rank, zeros elsewhere),
# so the trust ratios, the update and the metrics are those of the unsharded run with the same ranks.
for o in lamb lars adamw; do
    base=u2$o
    mpi 2 "$BIN" tiny.yaml --set training.run_dir=$base --set optimizer.name=$o --set training.trust_ratio_every=2 \
        > /dev/null 2>&1
    export_run $base
    mpi 2 "$BIN" tiny.yaml --set training.run_dir=z2$o --set optimizer.name=$o --set training.shard_optimizer=true \
        --set training.trust_ratio_every=2 > /dev/null 2> z2$o.err
    export_run z2$o
    check "$o sharded over 2 ranks: bit-identical parameters to unsharded" \
        cmp -s $base.st/model.safetensors z2$o.st/model.safetensors
    check "... and identical step metrics (losses, gradient norms)" \
        cmp -s <(steps_of $base/metrics.jsonl) <(steps_of z2$o/metrics.jsonl)
done
check "the plan shows each rank's share of the optimizer state" \
    grep -q "optimizer state [0-9.]* (1/2 of [0-9.]*, training.shard_optimizer)" z2lamb.err
cmp -s <(grep '"type":"trust"' u2lamb/metrics.jsonl) <(grep '"type":"trust"' z2lamb/metrics.jsonl)
check "... LAMB's per-layer trust ratios identical (completed across the shards)" test $? -eq 0 -a \
    "$(grep -c '"type":"trust"' u2lamb/metrics.jsonl)" -eq 5
mpi 3 "$BIN" tiny.yaml --set training.run_dir=z3 --set training.shard_optimizer=true > /dev/null 2>&1
export_run z3
check "lamb sharded over 3 ranks: bit-identical to unsharded on 3" cmp -s r3.st/model.safetensors z3.st/model.safetensors

# the checkpoint holds the whole state (gathered from the shards), so a kill -9 + resume is exact on the
# same ranks and, resharded, continues on another count
mpi 2 ./kill_rank1.sh "$BIN" tiny.yaml --set training.run_dir=zk --set training.shard_optimizer=true > /dev/null 2>&1
cp -r zk zk3
mpi 2 "$BIN" tiny.yaml --set training.run_dir=zk --set training.shard_optimizer=true --resume auto > /dev/null 2> zk.err
export_run zk
check "sharded, rank 1 killed, resumed sharded on 2: bit-identical to the uninterrupted run" \
    cmp -s r2.st/model.safetensors zk.st/model.safetensors
rm -f zk3/ckpt-0000000[5-9].bin zk3/ckpt-00000010.bin
mpi 3 "$BIN" tiny.yaml --set training.run_dir=zk3 --set training.shard_optimizer=true --resume auto > /dev/null 2>&1
export_run zk3
same "... resumed sharded on 3 instead = 1 rank to rounding" r1 zk3 1e-6 1e-5
cp -r rk zu && rm -f zu/ckpt-0000000[5-9].bin zu/ckpt-00000010.bin
mpi 2 "$BIN" tiny.yaml --set training.run_dir=zu --set training.shard_optimizer=true --resume auto > /dev/null 2> zu.err
check "an unsharded checkpoint resumes sharded (rc=$?)" grep -q "training.shard_optimizer changed: false -> true (allowed)" zu.err
export_run zu
check "... bit-identical to the unsharded run on 2 ranks" cmp -s r2.st/model.safetensors zu.st/model.safetensors

# memory: a model whose optimizer state (2 x 100 MB) dominates; each rank's peak RSS from the run's end line.
# 8 layers, so that what the gradient sums in flight may add (Open MPI's temporaries: at most two
# layers' gradients, 25 MB, when they happen to meet the peak) stays well inside the margin
big="--set model.hidden=512 --set model.heads=4 --set model.intermediate=2048 --set model.layers=8 --set phases.0.steps=2
     --set phases.1.steps=1 --set data.eval_examples=8 --set training.checkpoint_every=0"
peak_of() { sed -n "s/^peak memory by rank (GiB):.* $2:\([0-9.]*\) .*/\1/p" "$1"; }
mpi 2 "$BIN" tiny.yaml --set training.run_dir=mu $big > /dev/null 2> mu.err
mpi 2 "$BIN" tiny.yaml --set training.run_dir=ms $big --set training.shard_optimizer=true > /dev/null 2> ms.err
# LAMB's m and v, GiB, from the start-up line's parameter count ("25.94M parameters")
moments=$(sed -n 's/.* \([0-9.]*\)M parameters.*/\1/p' mu.err | awk '{print 2 * 4 * $1 * 1e6 / 1073741824}')
# the sharded checkpoint streams each rank's part (several 4 MiB messages here) into the file: the same
# optimizer and parameter sections as the unsharded one
cat > section.py <<'PY'
import struct, sys
def section(path, want):
    with open(path, 'rb') as f:
        data = f.read()
    for i in range(struct.unpack_from('<I', data, 12)[0]):
        e = 16 + 52 * i
        if data[e:e + 32].rstrip(b'\0').decode() == want:
            off, n = struct.unpack_from('<QQ', data, e + 32)
            return data[off:off + n]
    sys.exit("%s: no section %s" % (path, want))
sys.exit(0 if section(sys.argv[1], sys.argv[3]) == section(sys.argv[2], sys.argv[3]) else 1)
PY
for sec in optimizer params; do
    check "big model: the sharded checkpoint's $sec section = the unsharded one's" \
        python3 section.py mu/ckpt-00000003.bin ms/ckpt-00000003.bin $sec
done
for r in 0 1; do
    u=$(peak_of mu.err $r) s=$(peak_of ms.err $r)
    check "rank $r peak RSS ${u:-?} GiB unsharded -> ${s:-?} GiB sharded: at least a third of the state saved" \
        awk -v u="${u:-0}" -v s="${s:-9}" -v m="${moments:-0}" 'BEGIN {exit !(m > 0 && u - s >= m / 3)}'
done

# --- a stop signal to one rank stops every rank after the same step, with one checkpoint ----------------
cat > pid_rank.sh <<'SH'
#!/usr/bin/env bash
echo $$ > "rank${OMPI_COMM_WORLD_RANK}.pid"
exec "$@"
SH
chmod +x pid_rank.sh
long="--set phases.0.steps=300 --set training.checkpoint_every=0 --set training.shard_optimizer=true"
mpi 2 "$BIN" tiny.yaml --set training.run_dir=sl $long > /dev/null 2>&1
rm -f rank*.pid
mpi 2 ./pid_rank.sh "$BIN" tiny.yaml --set training.run_dir=ss $long > /dev/null 2> ss.err &
job=$!
for _ in $(seq 200); do
    n=$(grep -c '"type":"step"' ss/metrics.jsonl 2> /dev/null)
    [ -s rank1.pid ] && [ "${n:-0}" -ge 20 ] && break
    sleep 0.05
done
kill -TERM "$(cat rank1.pid)"
wait $job
rc=$?
stopped=$(sed -n 's/^stopped by a signal to another rank after step \([0-9]*\);.*/\1/p' ss.err)
check "SIGTERM to rank 1 alone: the job exits 0 (rc=$rc), rank 0 says so (after step ${stopped:-?})" \
    test $rc -eq 0 -a -n "$stopped"
check "... checkpoint of that step written" test -s "ss/ckpt-$(printf %08d "${stopped:-0}").bin"
mpi 2 "$BIN" tiny.yaml --set training.run_dir=ss $long --resume auto > /dev/null 2>&1
"$BIN" export ss/ckpt-00000302.bin ss.st > /dev/null 2>&1 && "$BIN" export sl/ckpt-00000302.bin sl.st > /dev/null 2>&1
check "... resumed: bit-identical to the uninterrupted run" cmp -s sl.st/model.safetensors ss.st/model.safetensors

# --- a hung rank: the timeout ends the job ----------------------------------------------------------
cat > hang_rank1.sh <<'SH'
#!/usr/bin/env bash
[ "${OMPI_COMM_WORLD_RANK:-}" = 1 ] && exec sleep 600
exec "$@"
SH
chmod +x hang_rank1.sh
start=$SECONDS
timeout -k 2 4 mpirun --oversubscribe -np 2 ./hang_rank1.sh "$BIN" tiny.yaml --set training.run_dir=rh \
    > /dev/null 2>&1
rc=$?
check "a hung rank is cut off by the timeout (rc=$rc, $((SECONDS - start)) s)" \
    test \( $rc -eq 124 -o $rc -eq 137 \) -a $((SECONDS - start)) -le 10
finish
