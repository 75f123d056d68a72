# tests/lib.sh: what the CLI test scripts share. Source it first thing; it gives
#   $TMP              a scratch directory, removed on exit
#   check NAME CMD    runs CMD; counts a pass, or prints "FAIL: NAME" and counts a failure
#   require NAME CMD  check, and on a failure finish at once (what follows would only fail after it)
#   not CMD           succeeds when CMD fails: check "no FAIL row" not grep -q FAIL <<<"$out"
#   run CMD           runs CMD with its output captured: sets $rc, $out, $err ($TMP/out, $TMP/err)
#   finish            prints "NAME: N passed, N failed" and returns non-zero on any failure
set -u
: "${BP_BIN:?set BP_BIN to the bert_pretrain binary}"
TEST_NAME=$(basename "$0")
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TMP=$(mktemp -d "/tmp/bp_${TEST_NAME%.sh}_XXXXXX")
trap 'rm -rf "$TMP"' EXIT
pass=0
fail=0

check() { # NAME CONDITION...
    local name=$1
    shift
    if "$@"; then
        pass=$((pass + 1))
    else
        fail=$((fail + 1))
        echo "FAIL: $name"
    fi
}

require() { # NAME CONDITION...
    local before=$fail
    check "$@"
    [ "$fail" -eq "$before" ] || { finish; exit 1; }
}

not() { # CMD...
    ! "$@"
}

run() { # CMD...: sets $rc, $out, $err
    "$@" >"$TMP/out" 2>"$TMP/err"
    rc=$?
    out=$(cat "$TMP/out")
    err=$(cat "$TMP/err")
}

finish() {
    echo "$TEST_NAME: $pass passed, $fail failed"
    [ "$fail" -eq 0 ]
}

# tiny_config FILE PHASES TRAINING: the 2-layer, hidden-32 model on tests/fixtures/train's corpus
# that the training tests share (vocab and shards beside FILE); PHASES is the YAML list's lines,
# TRAINING the flow mapping of the training section.
tiny_config() {
    cat >"$1" <<YAML
model: {preset: bert-tiny, layers: 2, hidden: 32, heads: 2, intermediate: 64, max_position: 64}
data: {vocab: vocab.txt, vocab_size: 300, input: [$REPO_ROOT/tests/fixtures/train/corpus.txt],
       train: shards/train, eval: shards/eval, eval_fraction: 0.15, eval_examples: 24}
optimizer: {name: lamb}
schedule: {lr: 2.0e-2, warmup_ratio: 0.1}
phases:
$2
training: $3
YAML
}
