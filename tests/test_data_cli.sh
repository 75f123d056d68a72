#!/usr/bin/env bash
# CLI tests for `prepare` and `show-batch` on the small corpus in tests/fixtures/data: shards and a
# vocab are built, rebuilt identically (also from .gz input), bad inputs are refused with a message
# naming the file and leave no output behind, and show-batch prints and writes a step's examples.
# The pipeline's own guarantees are unit-tested in tests/test_prepare.c; this checks the command.
source "$(dirname "$0")/lib.sh"
FIX=$PWD/tests/fixtures/data
T=$TMP

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

# the vocab, shards and temporaries under DIR (a failed run must leave none)
left_in() { (cd "$1" && find . -name 'vocab.txt' -o -path './shards/*' -o -name '*.tmp.*' | head -3); }
tmp_files_in() { find "$1" -name '*.tmp.*'; }

# expect_fail NAME DIR WANT_RC WANT_TEXT CMD... : the command fails with that status and message, and
# DIR holds no vocab, shard or temporary file afterwards
expect_fail() {
    local name=$1 dir=$2 want_rc=$3 want=$4
    shift 4
    run "$@"
    check "$name: exit $rc, wanted $want_rc ($(head -c 300 "$TMP/err"))" [ "$rc" -eq "$want_rc" ]
    check "$name: the message has '$want' ($(head -c 400 "$TMP/err"))" grep -qF -- "$want" "$TMP/err"
    check "$name: nothing left behind ($(left_in "$dir"))" [ -z "$(left_in "$dir")" ]
}

# ---------------------------------------------------------------------------------------------
# a good run: builds the vocab, then both shards
config "$T/a" "$FIX/corpus_a.txt" "$FIX/corpus_b.txt"
run "$BP_BIN" prepare "$T/a/cfg.yaml"
cp "$TMP/out" "$T/a/summary"
check "prepare exits 0 ($(tail -n 3 "$TMP/err"))" [ "$rc" -eq 0 ]
check "prepare builds the vocab and both shards" [ -s "$T/a/vocab.txt" -a -s "$T/a/shards/train" -a -s "$T/a/shards/eval" ]
check "summary: 9 documents" grep -q "documents  9 " "$T/a/summary"
check "summary: 45 sentences" grep -q "sentences  45 " "$T/a/summary"
check "summary: the vocab was built now" grep -q "(built now)" "$T/a/summary"
check "progress names the second file" grep -q "prepare: \[2/2\]" "$TMP/err"
check "no temporary files left ($(tmp_files_in "$T/a"))" [ -z "$(tmp_files_in "$T/a")" ]

# again with the vocab present: byte-identical shards
mkdir -p "$T/b" && cp "$T/a/vocab.txt" "$T/b/"
config "$T/b" "$FIX/corpus_a.txt" "$FIX/corpus_b.txt"
run "$BP_BIN" prepare "$T/b/cfg.yaml"
check "a second prepare with the vocab present writes an identical train shard" cmp -s "$T/a/shards/train" "$T/b/shards/train"
check "... and an identical eval shard" cmp -s "$T/a/shards/eval" "$T/b/shards/eval"
check "... and does not build the vocab" not grep -q "(built now)" "$TMP/out"

# .gz input gives the same shards as the text
mkdir -p "$T/gz" && cp "$T/a/vocab.txt" "$T/gz/" && gzip -c "$FIX/corpus_b.txt" >"$T/gz/corpus_b.txt.gz"
config "$T/gz" "$FIX/corpus_a.txt" "$T/gz/corpus_b.txt.gz"
run "$BP_BIN" prepare "$T/gz/cfg.yaml"
check "gzip input: exit 0" [ "$rc" -eq 0 ]
check "gzip input gives the same train shard" cmp -s "$T/a/shards/train" "$T/gz/shards/train"
check "gzip input gives the same eval shard" cmp -s "$T/a/shards/eval" "$T/gz/shards/eval"

# a tiny eval fraction still holds out one document (the last one that went to train)
mkdir -p "$T/tiny" && cp "$T/a/vocab.txt" "$T/tiny/"
config "$T/tiny" "$FIX/corpus_a.txt" "$FIX/corpus_b.txt"
run "$BP_BIN" prepare "$T/tiny/cfg.yaml" --set data.eval_fraction=0.0001
check "eval_fraction 0.0001: exit 0" [ "$rc" -eq 0 ]
check "eval_fraction 0.0001 of 9 documents: 8 train" grep -q "train .*: 8 document(s)" "$TMP/out"
check "eval_fraction 0.0001 of 9 documents: 1 held out" grep -q "eval .*: 1 document(s)" "$TMP/out"

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
expect_fail "empty directory as input" "$T/d" 1 "$T/d/adir: no input files in this directory" "$BP_BIN" prepare "$T/d/cfg.yaml"

if [ "$(id -u)" != 0 ]; then
    mkdir -p "$T/u" && cp "$FIX/corpus_b.txt" "$T/u/secret.txt" && chmod 000 "$T/u/secret.txt"
    config "$T/u" "$FIX/corpus_a.txt" "$T/u/secret.txt"
    expect_fail "unreadable input" "$T/u" 1 "$T/u/secret.txt: cannot open input: Permission denied" \
        "$BP_BIN" prepare "$T/u/cfg.yaml"
else
    echo "skip unreadable input (chmod 000): running as root, which reads any file"
fi

# Latin-1 text: most lines hold bytes that are not UTF-8. With the vocab present prepare's own
# reading refuses it; without, the vocab builder does (the same reader), before anything is written.
mkdir -p "$T/l" "$T/l2"
for i in 1 2 3 4 5 6; do printf 'Le caf\xe9 est tr\xe8s bon, num\xe9ro %d.\n' "$i"; done >"$T/l/latin1.txt"
cp "$T/l/latin1.txt" "$T/l2/"
config "$T/l" "$FIX/corpus_a.txt" "$T/l/latin1.txt"
cp "$T/a/vocab.txt" "$T/l/"
run "$BP_BIN" prepare "$T/l/cfg.yaml"
check "Latin-1 input: exit 1 (got $rc)" [ "$rc" -eq 1 ]
check "Latin-1 input: the message counts the bytes and lines ($err)" grep -qF \
    "$T/l/latin1.txt: not UTF-8 text: 18 of 192 bytes (in 6 of 6 lines) are invalid UTF-8, the first at line 1" "$TMP/err"
check "Latin-1 input: no train shard" [ ! -e "$T/l/shards/train" ]
check "Latin-1 input: no temporary files" [ -z "$(tmp_files_in "$T/l")" ]
config "$T/l2" "$FIX/corpus_a.txt" "$T/l2/latin1.txt"
expect_fail "Latin-1 input, vocab to build" "$T/l2" 1 \
    "$T/l2/latin1.txt: not UTF-8 text: 18 of 192 bytes (in 6 of 6 lines)" "$BP_BIN" prepare "$T/l2/cfg.yaml"

# a truncated gzip stream: the file and the offsets named
mkdir -p "$T/tg" && gzip -c "$FIX/corpus_a.txt" | head -c 300 >"$T/tg/cut.txt.gz"
config "$T/tg" "$FIX/corpus_b.txt" "$T/tg/cut.txt.gz"
expect_fail "truncated gzip input" "$T/tg" 1 "$T/tg/cut.txt.gz: read error after" "$BP_BIN" prepare "$T/tg/cfg.yaml"
check "truncated gzip input: the message gives the file offset" grep -q "at byte [0-9]* of the file" "$TMP/err"

# one stray invalid byte in a large enough file: a warning, and the run goes on
mkdir -p "$T/s" && cp "$T/a/vocab.txt" "$T/s/"
{ cat "$FIX/corpus_a.txt" "$FIX/corpus_a.txt" "$FIX/corpus_a.txt" "$FIX/corpus_a.txt"; printf 'A stray \xff byte.\n'; } >"$T/s/stray.txt"
config "$T/s" "$T/s/stray.txt"
run "$BP_BIN" prepare "$T/s/cfg.yaml"
check "one invalid byte in 129 lines: prepared ($err)" [ "$rc" -eq 0 ]
check "one invalid byte in 129 lines: warned" grep -qF \
    "warning: $T/s/stray.txt: 1 invalid UTF-8 byte(s) in 1 line(s) (the first at line 129) are dropped" "$TMP/err"
check "one invalid byte in 129 lines: counted in the summary" grep -q "invalid UTF-8 in 1 line" "$TMP/out"

# a failing run leaves earlier shards untouched
cp -r "$T/b" "$T/keep"
gzip -c "$FIX/corpus_a.txt" | head -c 200 >"$T/keep/cut.gz"
config "$T/keep" "$FIX/corpus_a.txt" "$T/keep/cut.gz"
run "$BP_BIN" prepare "$T/keep/cfg.yaml"
check "a truncated .gz fails prepare (rc $rc)" [ "$rc" -ne 0 ]
check "... naming the file ($err)" grep -qF "$T/keep/cut.gz: read error" "$TMP/err"
check "... and leaves the earlier train shard as it was" cmp -s "$T/keep/shards/train" "$T/b/shards/train"
check "... and the earlier vocab" cmp -s "$T/keep/vocab.txt" "$T/b/vocab.txt"
check "... and no temporary shard" not grep -q tmp <<<"$(ls "$T/keep/shards")"

# one document cannot be split into train and eval
mkdir -p "$T/one" && head -n 6 "$FIX/corpus_a.txt" >"$T/one/one.txt"
config "$T/one" "$T/one/one.txt"
expect_fail "one document with eval_fraction > 0" "$T/one" 2 "needs at least 2" "$BP_BIN" prepare "$T/one/cfg.yaml"
run "$BP_BIN" prepare "$T/one/cfg.yaml" --set data.eval_fraction=0
check "eval_fraction 0: exit 0 ($err)" [ "$rc" -eq 0 ]
check "eval_fraction 0: no eval shard" [ ! -e "$T/one/shards/eval" ]
check "eval_fraction 0: the summary says so" grep -q "eval       none written" "$TMP/out"

run "$BP_BIN" prepare --help
check "prepare --help exits 0" [ "$rc" -eq 0 ]
check "prepare --help prints the usage" grep -q "usage: bert_pretrain prepare" "$TMP/out"
check "prepare --help explains the eval split" grep -q "data.eval_fraction" "$TMP/out"
run "$BP_BIN" prepare
check "prepare without CONFIG: exit 2" [ "$rc" -eq 2 ]
check "prepare without CONFIG: says so" grep -q "bert_pretrain prepare: missing CONFIG.yaml" "$TMP/err"

# ---------------------------------------------------------------------------------------------
# the shards know which is which: data.train and data.eval swapped is refused before anything runs
run "$BP_BIN" "$T/a/cfg.yaml" --set data.train="$T/a/shards/eval" --set data.eval="$T/a/shards/train"
check "train and eval shards swapped: exit 2" [ "$rc" -eq 2 ]
check "... naming data.train and the likely cause" grep -q "data.train = .*shards/eval is the eval shard.*swapped" "$TMP/err"
check "... and nothing written to the run directory" not test -e "$T/a/run/metrics.jsonl"
run "$BP_BIN" show-batch "$T/a/cfg.yaml" --set data.train="$T/a/shards/eval"
check "show-batch on the eval shard as data.train: exit 2" [ "$rc" -eq 2 ]

# show-batch
C=$T/a/cfg.yaml
run "$BP_BIN" show-batch "$C" --step 2 --n 3
cp "$TMP/out" "$T/show"
check "show-batch exits 0 ($err)" [ "$rc" -eq 0 ]
check "show-batch prints 3 examples" [ "$(grep -c '^example ' "$T/show")" = 3 ]
check "show-batch: step 2 is examples 16..23" grep -q '^step 2 (phase 0, step 2 of it): examples 16\.\.23 ' "$T/show"
check "show-batch decodes [CLS]" grep -q '\[CLS\] ' "$T/show"
check "show-batch marks masked positions" grep -q '\[MASK\](' "$T/show"
check "show-batch gives the NSP label" grep -q 'NSP label [01]' "$T/show"
check "show-batch gives the segment sizes" grep -q 'types: 0 x [0-9]* (\[CLS\] A \[SEP\]), 1 x' "$T/show"
run "$BP_BIN" show-batch "$C" --step 2 --n 3
check "show-batch is deterministic" cmp -s "$T/show" "$TMP/out"
# phase 1 starts at global step 10, example 80, seq_len 128
run "$BP_BIN" show-batch "$C" --phase 1 --step 2 --n 2
cp "$TMP/out" "$T/p1"
run "$BP_BIN" show-batch "$C" --step 12 --n 2
check "--phase 1 --step 2 is global step 12" cmp -s "$T/p1" "$TMP/out"
check "--phase 1 --step 2: examples 88..91, seq_len 128 ($(head -n 1 "$T/p1"))" \
    grep -q 'examples 88\.\.91 of the stream; seq_len 128' "$T/p1"

run "$BP_BIN" show-batch "$C" --step 1 --n 4 --out "$T/batch.safetensors"
check "show-batch --out exits 0 ($err)" [ "$rc" -eq 0 ]
check "show-batch --out says what it wrote" grep -q "wrote $T/batch.safetensors: 4 example(s) x seq_len 64" "$TMP/out"
if command -v python3 >/dev/null; then
    check "--out writes the batch tensors (checked by python3)" python3 - "$T/batch.safetensors" <<'EOF'
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

# show-batch refuses what it cannot show
expect_show_fail() {
    local name=$1 want_rc=$2 want=$3
    shift 3
    run "$BP_BIN" show-batch "$@"
    check "$name: exit $rc, wanted $want_rc" [ "$rc" -eq "$want_rc" ]
    check "$name: the message has '$want' ($(head -c 400 "$TMP/err"))" grep -qF -- "$want" "$TMP/err"
}
expect_show_fail "show-batch past the last step" 2 "the run has 15 steps" "$C" --step 15
expect_show_fail "show-batch --n above the batch" 2 "step 0 has 8 examples" "$C" --n 9
expect_show_fail "show-batch --phase out of range" 2 "--phase 2: the config has 2 phase(s)" "$C" --phase 2
expect_show_fail "show-batch bad --step" 2 "--step 'x' must be an integer in [0, " "$C" --step x
expect_show_fail "show-batch negative --step" 2 "--step '-1' must be an integer in [0, " "$C" --step=-1
expect_show_fail "show-batch --n 0" 2 "--n '0' must be an integer in [1, " "$C" --n 0

# a vocab other than the shard's
cp -r "$T/a" "$T/v" && sed -i '$ s/$/_changed/' "$T/v/vocab.txt"
expect_show_fail "show-batch with another vocab" 1 "$T/v/shards/train: built with a vocab of" "$T/v/cfg.yaml"
check "the vocab mismatch message names the vocab file" grep -qF "but $T/v/vocab.txt has" "$TMP/err"
# damaged shards
cp -r "$T/a" "$T/t" && truncate -s -5 "$T/t/shards/train"
expect_show_fail "show-batch on a truncated shard" 1 "$T/t/shards/train: truncated shard" "$T/t/cfg.yaml"
cp -r "$T/a" "$T/f" && printf '\x55' | dd of="$T/f/shards/train" bs=1 seek=200 conv=notrunc 2>/dev/null
expect_show_fail "show-batch on a bit-flipped shard" 1 "$T/f/shards/train: damaged shard: token section CRC32 mismatch" "$T/f/cfg.yaml"
rm -f "$T/a/shards/train"
expect_show_fail "show-batch without shards" 1 "cannot open shard: No such file or directory. HINT: run \`bert_pretrain prepare CONFIG\` first" "$C"

# JSONL: a bad record within data.max_bad_records is a warning and a summary line; above it an
# error naming the first at FILE:LINE, with nothing written
mkdir -p "$T/j"
for i in $(seq 1 30); do printf '{"text": "The cat sat on the mat %d. A dog ran."}\n' "$i"; done >"$T/j/c.jsonl"
sed -i '5s/.*/{"text": 5}/' "$T/j/c.jsonl"
config "$T/j" "$T/j/c.jsonl"
cp "$T/a/vocab.txt" "$T/j/"
run "$BP_BIN" prepare "$T/j/cfg.yaml" --set data.input_format=jsonl --set data.max_bad_records=0.1
check "jsonl: exit 0 ($(head -c 300 "$TMP/err"))" [ "$rc" -eq 0 ]
check "jsonl: the warning names the first bad record" grep -qF "the first at $T/j/c.jsonl:5: the field is not a string" "$TMP/err"
check "jsonl: the summary counts it" grep -qF "bad records 1 of 30 skipped" "$TMP/out"
rm -rf "$T/j/shards"
expect_fail "jsonl above max_bad_records" "$T/j/shards" 1 "1 of 30 JSONL records are bad" \
    "$BP_BIN" prepare "$T/j/cfg.yaml" --set data.input_format=jsonl --set data.max_bad_records=0.01

finish
