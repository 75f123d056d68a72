#!/usr/bin/env bash
# CLI tests for `prepare` and `show-batch` on the small corpus in tests/fixtures/data: shards and a
# vocab are built, rebuilt identically (also from .gz input), bad inputs are refused with a message
# naming the file and leave no output behind, and show-batch prints and writes a step's examples.
set -u
cd "$(dirname "$0")/.."
: "${BP_BIN:?set BP_BIN to the bert_pretrain binary}"
FIX=$PWD/tests/fixtures/data
T=$(mktemp -d /tmp/bp_data_cli.XXXXXX)
trap 'chmod -R u+rwx "$T" 2>/dev/null; rm -rf "$T"' EXIT
fails=0
ok() { echo "ok   $1"; }
bad() { echo "FAIL $1"; fails=$((fails + 1)); }

# config DIR INPUTS... : writes DIR/cfg.yaml (paths relative to DIR)
config() {
    local dir=$1
    shift
    mkdir -p "$dir"
    local list
    list=$(printf '"%s", ' "$@")
    cat >"$dir/cfg.yaml" <<EOF
model: {preset: bert-tiny, max_position: 128}
data:
  vocab: vocab.txt
  vocab_size: 400
  input: [${list%, }]
  train: shards/train
  eval: shards/eval
  eval_fraction: 0.25
phases:
  - {seq_len: 64, batch_size: 8, steps: 10, max_predictions_per_seq: 10}
  - {seq_len: 128, batch_size: 4, steps: 5, max_predictions_per_seq: 20}
training: {micro_batch: 4, seed: 11, run_dir: run}
EOF
}

# expect_fail NAME DIR WANT_RC WANT_TEXT CMD... : the command fails with that status and message, and
# DIR holds no vocab, shard or temporary file afterwards
expect_fail() {
    local name=$1 dir=$2 want_rc=$3 want=$4
    shift 4
    "$@" >"$T/out" 2>"$T/err"
    local rc=$?
    local left
    left=$(cd "$dir" && find . -name 'vocab.txt' -o -path './shards/*' -o -name '*.tmp.*' | head -3)
    if [ $rc -ne "$want_rc" ]; then
        bad "$name: exit $rc, wanted $want_rc ($(head -c 300 "$T/err"))"
    elif ! grep -qF -- "$want" "$T/err"; then
        bad "$name: message lacks '$want': $(head -c 400 "$T/err")"
    elif [ -n "$left" ]; then
        bad "$name: left output behind: $left"
    else
        ok "$name: $(tail -n 1 "$T/err" | head -c 200)"
    fi
}

# ---------------------------------------------------------------------------------------------
# a good run: builds the vocab, then both shards
config "$T/a" "$FIX/corpus_a.txt" "$FIX/corpus_b.txt"
if "$BP_BIN" prepare "$T/a/cfg.yaml" >"$T/a/summary" 2>"$T/a/progress"; then
    if [ -s "$T/a/vocab.txt" ] && [ -s "$T/a/shards/train" ] && [ -s "$T/a/shards/eval" ] &&
        grep -q "documents  9 " "$T/a/summary" && grep -q "sentences  45 " "$T/a/summary" &&
        grep -q "(built now)" "$T/a/summary" && grep -q "prepare: \[2/2\]" "$T/a/progress"; then
        ok "prepare builds the vocab and both shards: $(grep -E 'train|eval ' "$T/a/summary" | tr -s ' ' | tr '\n' ';')"
    else
        bad "prepare output: $(cat "$T/a/summary" "$T/a/progress")"
    fi
else
    bad "prepare failed: $(cat "$T/a/progress")"
fi
[ -z "$(find "$T/a" -name '*.tmp.*')" ] || bad "temporary files left: $(find "$T/a" -name '*.tmp.*')"

# again with the vocab present: byte-identical shards
mkdir -p "$T/b" && cp "$T/a/vocab.txt" "$T/b/"
config "$T/b" "$FIX/corpus_a.txt" "$FIX/corpus_b.txt"
"$BP_BIN" prepare "$T/b/cfg.yaml" >"$T/b/summary" 2>/dev/null
if cmp -s "$T/a/shards/train" "$T/b/shards/train" && cmp -s "$T/a/shards/eval" "$T/b/shards/eval" &&
    ! grep -q "(built now)" "$T/b/summary"; then
    ok "a second prepare with the vocab present writes identical shards"
else
    bad "second prepare differs"
fi

# .gz input gives the same shards as the text
mkdir -p "$T/gz" && cp "$T/a/vocab.txt" "$T/gz/" && gzip -c "$FIX/corpus_b.txt" >"$T/gz/corpus_b.txt.gz"
config "$T/gz" "$FIX/corpus_a.txt" "$T/gz/corpus_b.txt.gz"
if "$BP_BIN" prepare "$T/gz/cfg.yaml" >/dev/null 2>&1 && cmp -s "$T/a/shards/train" "$T/gz/shards/train" &&
    cmp -s "$T/a/shards/eval" "$T/gz/shards/eval"; then
    ok "gzip input gives the same shards"
else
    bad "gzip input"
fi

# a tiny eval fraction still holds out one document (the last one that went to train)
mkdir -p "$T/tiny" && cp "$T/a/vocab.txt" "$T/tiny/"
config "$T/tiny" "$FIX/corpus_a.txt" "$FIX/corpus_b.txt"
if "$BP_BIN" prepare "$T/tiny/cfg.yaml" --set data.eval_fraction=0.0001 >"$T/tiny/summary" 2>/dev/null &&
    grep -q "train .*: 8 document(s)" "$T/tiny/summary" && grep -q "eval .*: 1 document(s)" "$T/tiny/summary"; then
    ok "eval_fraction 0.0001 of 9 documents: 1 held out"
else
    bad "tiny eval fraction: $(cat "$T/tiny/summary")"
fi

# ---------------------------------------------------------------------------------------------
# bad inputs: a clear error naming the file, non-zero exit, nothing written
config "$T/m" "$FIX/corpus_a.txt" "$T/m/nonexistent.txt"
expect_fail "missing input" "$T/m" 1 "$T/m/nonexistent.txt: cannot read input: No such file" \
    "$BP_BIN" prepare "$T/m/cfg.yaml"

mkdir -p "$T/e" && : >"$T/e/empty.txt"
config "$T/e" "$FIX/corpus_a.txt" "$T/e/empty.txt"
expect_fail "empty input" "$T/e" 1 "$T/e/empty.txt: input is empty" "$BP_BIN" prepare "$T/e/cfg.yaml"

# whitespace only: found after the vocab was built, which is removed again
mkdir -p "$T/w" && printf '\n  \n\t\n\n' >"$T/w/blank.txt"
config "$T/w" "$FIX/corpus_a.txt" "$T/w/blank.txt"
expect_fail "blank input (vocab built by the run is removed)" "$T/w" 1 "$T/w/blank.txt: no text" \
    "$BP_BIN" prepare "$T/w/cfg.yaml"

mkdir -p "$T/d/adir"
config "$T/d" "$FIX/corpus_a.txt" "$T/d/adir"
expect_fail "directory as input" "$T/d" 1 "$T/d/adir: input is not a regular file" "$BP_BIN" prepare "$T/d/cfg.yaml"

if [ "$(id -u)" != 0 ]; then
    mkdir -p "$T/u" && cp "$FIX/corpus_b.txt" "$T/u/secret.txt" && chmod 000 "$T/u/secret.txt"
    config "$T/u" "$FIX/corpus_a.txt" "$T/u/secret.txt"
    expect_fail "unreadable input" "$T/u" 1 "$T/u/secret.txt: cannot open input: Permission denied" \
        "$BP_BIN" prepare "$T/u/cfg.yaml"
else
    echo "skip unreadable input (chmod 000): running as root, which reads any file"
fi

# Latin-1 text: most lines hold bytes that are not UTF-8. With the vocab present prepare's own
# check refuses it; without, the vocab builder does, before anything is written.
mkdir -p "$T/l" "$T/l2"
for i in 1 2 3 4 5 6; do printf 'Le caf\xe9 est tr\xe8s bon, num\xe9ro %d.\n' "$i"; done >"$T/l/latin1.txt"
cp "$T/l/latin1.txt" "$T/l2/"
config "$T/l" "$FIX/corpus_a.txt" "$T/l/latin1.txt"
cp "$T/a/vocab.txt" "$T/l/"
"$BP_BIN" prepare "$T/l/cfg.yaml" >/dev/null 2>"$T/err"
rc=$?
if [ $rc -eq 1 ] && grep -qF "$T/l/latin1.txt: not UTF-8 text: 18 of 192 bytes (in 6 of 6 lines) are invalid UTF-8, the first at line 1" "$T/err" &&
    [ ! -e "$T/l/shards/train" ] && [ -z "$(find "$T/l" -name '*.tmp.*')" ]; then
    ok "Latin-1 input: $(tail -n 1 "$T/err" | head -c 200)"
else
    bad "Latin-1 input: exit $rc: $(cat "$T/err")"
fi
config "$T/l2" "$FIX/corpus_a.txt" "$T/l2/latin1.txt"
expect_fail "Latin-1 input, vocab to build" "$T/l2" 1 "$T/l2/latin1.txt: not UTF-8" "$BP_BIN" prepare "$T/l2/cfg.yaml"

# a truncated gzip stream
mkdir -p "$T/tg" && gzip -c "$FIX/corpus_a.txt" | head -c 300 >"$T/tg/cut.txt.gz"
config "$T/tg" "$FIX/corpus_b.txt" "$T/tg/cut.txt.gz"
expect_fail "truncated gzip input" "$T/tg" 1 "$T/tg/cut.txt.gz: read error" "$BP_BIN" prepare "$T/tg/cfg.yaml"

# one stray invalid byte in a large enough file: a warning, and the run goes on
mkdir -p "$T/s" && cp "$T/a/vocab.txt" "$T/s/"
{ cat "$FIX/corpus_a.txt" "$FIX/corpus_a.txt" "$FIX/corpus_a.txt" "$FIX/corpus_a.txt"; printf 'A stray \xff byte.\n'; } >"$T/s/stray.txt"
config "$T/s" "$T/s/stray.txt"
if "$BP_BIN" prepare "$T/s/cfg.yaml" >"$T/s/summary" 2>"$T/s/err" &&
    grep -qF "warning: $T/s/stray.txt: 1 invalid UTF-8 byte(s) in 1 line(s) (the first at line 129) are dropped" "$T/s/err" &&
    grep -q "invalid UTF-8 in 1 line" "$T/s/summary"; then
    ok "one invalid byte in 129 lines: warned, counted, prepared"
else
    bad "stray byte: $(cat "$T/s/err")"
fi

# a failing run leaves earlier shards untouched
cp -r "$T/b" "$T/keep"
gzip -c "$FIX/corpus_a.txt" | head -c 200 >"$T/keep/cut.gz"
config "$T/keep" "$FIX/corpus_a.txt" "$T/keep/cut.gz"
"$BP_BIN" prepare "$T/keep/cfg.yaml" >/dev/null 2>"$T/err"
rc=$?
if [ $rc -ne 0 ] && grep -qF "$T/keep/cut.gz: read error" "$T/err" && cmp -s "$T/keep/shards/train" "$T/b/shards/train" && cmp -s "$T/keep/vocab.txt" "$T/b/vocab.txt" &&
    ! ls "$T/keep/shards" | grep -q tmp; then
    ok "a truncated .gz fails prepare and leaves the earlier vocab and shards as they were: $(tail -n 1 "$T/err")"
else
    bad "failed prepare changed existing output (rc $rc): $(cat "$T/err")"
fi

# one document cannot be split into train and eval
mkdir -p "$T/one" && head -n 6 "$FIX/corpus_a.txt" >"$T/one/one.txt"
config "$T/one" "$T/one/one.txt"
expect_fail "one document with eval_fraction > 0" "$T/one" 2 "needs at least 2" "$BP_BIN" prepare "$T/one/cfg.yaml"
"$BP_BIN" prepare "$T/one/cfg.yaml" --set data.eval_fraction=0 >"$T/one/summary" 2>&1 &&
    [ ! -e "$T/one/shards/eval" ] && grep -q "eval       none written" "$T/one/summary" &&
    ok "eval_fraction 0: train shard only" || bad "eval_fraction 0: $(cat "$T/one/summary")"

"$BP_BIN" prepare --help | grep -q "usage: bert_pretrain prepare" && ok "prepare --help" || bad "prepare --help"
"$BP_BIN" prepare >/dev/null 2>&1
[ $? -eq 2 ] && ok "prepare without CONFIG: exit 2" || bad "prepare without CONFIG"

# ---------------------------------------------------------------------------------------------
# show-batch
C=$T/a/cfg.yaml
if "$BP_BIN" show-batch "$C" --step 2 --n 3 >"$T/show" 2>"$T/err"; then
    n_ex=$(grep -c '^example ' "$T/show")
    if [ "$n_ex" = 3 ] && grep -q '^step 2 (phase 0, step 2 of it): examples 16\.\.23 ' "$T/show" &&
        grep -q '\[CLS\] ' "$T/show" && grep -q '\[MASK\](' "$T/show" && grep -q 'NSP label [01]' "$T/show" &&
        grep -q 'types: 0 x [0-9]* (\[CLS\] A \[SEP\]), 1 x' "$T/show"; then
        ok "show-batch prints step 2's examples 16..18"
    else
        bad "show-batch output: $(head -c 800 "$T/show")"
    fi
else
    bad "show-batch failed: $(cat "$T/err")"
fi
"$BP_BIN" show-batch "$C" --step 2 --n 3 >"$T/show2" 2>&1
cmp -s "$T/show" "$T/show2" && ok "show-batch is deterministic" || bad "show-batch differs between runs"
# phase 1 starts at global step 10, example 80, seq_len 128
"$BP_BIN" show-batch "$C" --phase 1 --step 2 --n 2 >"$T/p1" 2>&1
"$BP_BIN" show-batch "$C" --step 12 --n 2 >"$T/g12" 2>&1
if cmp -s "$T/p1" "$T/g12" && grep -q 'examples 88\.\.91 of the stream; seq_len 128' "$T/p1"; then
    ok "--phase 1 --step 2 is global step 12 (examples 88..91, seq_len 128)"
else
    bad "--phase: $(head -n 2 "$T/p1")"
fi

if "$BP_BIN" show-batch "$C" --step 1 --n 4 --out "$T/batch.safetensors" >/dev/null 2>"$T/err"; then
    if command -v python3 >/dev/null; then
        if python3 - "$T/batch.safetensors" <<'EOF'; then ok "--out writes the batch tensors (checked by python3)"; else bad "--out tensors"; fi
import json, struct, sys
raw = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
h = json.loads(raw[8:8 + n])
want = {"input_ids": [4, 64], "token_type_ids": [4, 64], "attention_mask": [4, 64],
        "masked_lm_positions": [4, 10], "masked_lm_ids": [4, 10], "masked_lm_weights": [4, 10],
        "next_sentence_labels": [4]}
for name, shape in want.items():
    assert h[name]["dtype"] == "I32" and h[name]["shape"] == shape, (name, h[name])
data = raw[8 + n:]
def tensor(name):
    b, e = h[name]["data_offsets"]
    return struct.unpack("<%di" % ((e - b) // 4), data[b:e])
ids, att, pos, w = tensor("input_ids"), tensor("attention_mask"), tensor("masked_lm_positions"), tensor("masked_lm_weights")
for r in range(4):
    real = sum(att[r * 64:(r + 1) * 64])
    preds = [p for p, x in zip(pos[r * 10:(r + 1) * 10], w[r * 10:(r + 1) * 10]) if x]
    assert preds == sorted(preds) and all(0 < p < real - 1 for p in preds), preds
    assert len(preds) == min(10, max(1, round(real * 0.15))), (len(preds), real)
assert set(tensor("next_sentence_labels")) <= {0, 1}
EOF
    else
        echo "skip checking --out contents: python3 not found"
    fi
else
    bad "show-batch --out: $(cat "$T/err")"
fi

# show-batch refuses what it cannot show
expect_show_fail() {
    local name=$1 want_rc=$2 want=$3
    shift 3
    "$BP_BIN" show-batch "$@" >/dev/null 2>"$T/err"
    local rc=$?
    if [ $rc -eq "$want_rc" ] && grep -qF -- "$want" "$T/err"; then ok "$name: $(head -c 200 "$T/err")"
    else bad "$name: exit $rc: $(head -c 400 "$T/err")"; fi
}
expect_show_fail "show-batch past the last step" 2 "the run has 15 steps" "$C" --step 15
expect_show_fail "show-batch --n above the batch" 2 "step 0 has 8 examples" "$C" --n 9
expect_show_fail "show-batch --phase out of range" 2 "--phase 2: the config has 2 phase(s)" "$C" --phase 2
expect_show_fail "show-batch bad --step" 2 "--step needs a non-negative integer" "$C" --step x

# a vocab other than the shard's
cp -r "$T/a" "$T/v" && sed -i '$ s/$/_changed/' "$T/v/vocab.txt"
expect_show_fail "show-batch with another vocab" 1 "$T/v/shards/train: built with a vocab of" "$T/v/cfg.yaml"
grep -qF "but $T/v/vocab.txt has" "$T/err" || bad "the vocab mismatch message names the vocab file"
# damaged shards
cp -r "$T/a" "$T/t" && truncate -s -5 "$T/t/shards/train"
expect_show_fail "show-batch on a truncated shard" 1 "$T/t/shards/train: truncated shard" "$T/t/cfg.yaml"
cp -r "$T/a" "$T/f" && printf '\x55' | dd of="$T/f/shards/train" bs=1 seek=200 conv=notrunc 2>/dev/null
expect_show_fail "show-batch on a bit-flipped shard" 1 "$T/f/shards/train: damaged shard: token section CRC32 mismatch" "$T/f/cfg.yaml"
rm -f "$T/a/shards/train"
expect_show_fail "show-batch without shards" 1 "cannot open shard: No such file or directory. HINT: run \`bert_pretrain prepare CONFIG\` first" "$C"

echo
if [ $fails -ne 0 ]; then
    echo "test_data_cli: $fails failure(s)"
    exit 1
fi
echo "test_data_cli: all passed"
