#!/usr/bin/env bash
# CLI tests for `bert_pretrain tokenize` and `bert_pretrain vocab`: outputs, exit statuses (0 ok,
# 1 runtime failure, 2 usage error), messages that name the file, no partial output on failure.
# Run from the repository root with $BP_BIN set (tests/run_tests.sh does both).
source "$(dirname "$0")/lib.sh"
FIX=tests/fixtures/tokenizer

# --- tokenize ---
run "$BP_BIN" tokenize --help
check "tokenize --help exits 0" [ "$rc" -eq 0 ]
check "tokenize --help prints usage" grep -q "usage: bert_pretrain tokenize" "$TMP/out"

run "$BP_BIN" tokenize </dev/null
check "tokenize without --vocab exits 2" [ "$rc" -eq 2 ]
check "tokenize without --vocab says so" grep -q -- "--vocab is required" "$TMP/err"

run "$BP_BIN" tokenize --vocab "$FIX/vocab_small.txt" --bogus </dev/null
check "tokenize unknown option exits 2" [ "$rc" -eq 2 ]
run "$BP_BIN" tokenize --vocab </dev/null
check "tokenize --vocab without a value exits 2" [ "$rc" -eq 2 ]

printf 'Héllo, WORLD! unaffable 中文\n\nzq running\r\n' >"$TMP/in.txt"
run "$BP_BIN" tokenize --vocab "$FIX/vocab_small.txt" --pieces <"$TMP/in.txt"
check "tokenize --pieces exits 0" [ "$rc" -eq 0 ]
check "tokenize --pieces output" [ "$out" = $'hello , world ! un ##affa ##ble 中 文\n\n[UNK] running' ]

# invalid UTF-8 is dropped as BERT drops it, but never silently: counted on stderr
printf 'caf\xe9 running\nzq\n\xff\xfe running\n' >"$TMP/bad.txt"
run "$BP_BIN" tokenize --vocab "$FIX/vocab_small.txt" --pieces <"$TMP/bad.txt"
check "tokenize with invalid UTF-8 exits 0" [ "$rc" -eq 0 ]
check "tokenize drops the invalid bytes" [ "$out" = $'[UNK] running\n[UNK]\nrunning' ]
check "tokenize counts the invalid bytes on stderr" grep -qx -- \
    "bert_pretrain tokenize: warning: 3 invalid UTF-8 byte(s) in 2 line(s) (the first at line 1) are dropped" "$TMP/err"
run "$BP_BIN" tokenize --vocab "$FIX/vocab_small.txt" <"$TMP/in.txt"
check "tokenize of valid text warns of nothing" [ ! -s "$TMP/err" ]

run "$BP_BIN" tokenize --vocab "$FIX/vocab_small.txt" --pieces --cased <<<"Héllo WORLD"
check "tokenize --cased keeps case and accents" [ "$out" = "Héllo WORLD" ]

# ids are line numbers - 1 of the vocab
run "$BP_BIN" tokenize --vocab "$FIX/vocab_small.txt" <"$TMP/in.txt"
want_ids=""
for p in hello , world ! un "##affa" "##ble" 中 文; do
    id=$(($(grep -nxF -- "$p" "$FIX/vocab_small.txt" | head -1 | cut -d: -f1) - 1))
    want_ids="${want_ids:+$want_ids }$id"
done
check "tokenize ids (default) match the vocab lines" [ "$(head -1 "$TMP/out")" = "$want_ids" ]
check "tokenize: one output line per input line" [ "$(wc -l <"$TMP/out")" -eq 3 ]

# invalid UTF-8 and control bytes never crash
head -c 20000 /dev/urandom >"$TMP/random.bin"
run "$BP_BIN" tokenize --vocab "$FIX/vocab_small.txt" --pieces <"$TMP/random.bin"
check "tokenize survives random bytes" [ "$rc" -eq 0 ]

# a vocab without [UNK]: a clear error naming the file and the token, exit 1
grep -vx '\[UNK\]' "$FIX/vocab_small.txt" >"$TMP/nounk.txt"
run "$BP_BIN" tokenize --vocab "$TMP/nounk.txt" </dev/null
check "vocab without [UNK] exits 1" [ "$rc" -eq 1 ]
check "vocab without [UNK] names file and token" grep -q "$TMP/nounk.txt: the vocab has no \[UNK\]" "$TMP/err"
run "$BP_BIN" tokenize --vocab "$TMP/missing.txt" </dev/null
check "missing vocab exits 1" [ "$rc" -eq 1 ]
check "missing vocab named" grep -q "$TMP/missing.txt: cannot open" "$TMP/err"

# --- vocab ---
run "$BP_BIN" vocab --help
check "vocab --help exits 0" [ "$rc" -eq 0 ]
check "vocab --help names the merge criterion" grep -q "Merge criterion: pair frequency" "$TMP/out"

run "$BP_BIN" vocab --input "$FIX/train.txt" --out "$TMP/v.txt"
check "vocab without --size exits 2" [ "$rc" -eq 2 ]
run "$BP_BIN" vocab --input "$FIX/train.txt" --size abc --out "$TMP/v.txt"
check "vocab --size abc exits 2" [ "$rc" -eq 2 ]
run "$BP_BIN" vocab --input --size 100 --out "$TMP/v.txt"
check "vocab --input without files exits 2" [ "$rc" -eq 2 ]
run "$BP_BIN" vocab --input "$FIX/train.txt" --size 20 --out "$TMP/v.txt"
check "vocab --size below the alphabet exits 2" [ "$rc" -eq 2 ]
check "vocab --size below the alphabet: no output" [ ! -e "$TMP/v.txt" ]

run "$BP_BIN" vocab --input "$FIX/train.txt" "$TMP/nonexistent.txt" --size 300 --out "$TMP/v.txt"
check "vocab with a missing input exits 1" [ "$rc" -eq 1 ]
check "vocab names the missing input" grep -q "$TMP/nonexistent.txt: cannot open" "$TMP/err"
check "vocab with a missing input: no output" [ ! -e "$TMP/v.txt" ]

head -c 5000 /dev/urandom >"$TMP/binary.dat"
run "$BP_BIN" vocab --input "$FIX/train.txt" "$TMP/binary.dat" --size 300 --out "$TMP/v.txt"
check "vocab from a binary file exits 1" [ "$rc" -eq 1 ]
check "vocab names the non-UTF-8 file" grep -q "$TMP/binary.dat: not UTF-8 text" "$TMP/err"
check "vocab from a binary file: no output" [ ! -e "$TMP/v.txt" ]

gzip -c "$FIX/train.txt" >"$TMP/train.txt.gz"
run "$BP_BIN" vocab --input "$TMP/train.txt.gz" --size 300 --out "$TMP/v.txt"
check "vocab from .gz exits 0" [ "$rc" -eq 0 ]
check "vocab from .gz = the reference" cmp -s "$TMP/v.txt" "$FIX/vocab_built_uncased.txt"
check "vocab prints a summary" grep -q "tokens written to $TMP/v.txt" "$TMP/err"
run "$BP_BIN" vocab --input "$FIX/train.txt" --size 300 --out "$TMP/v_cased.txt" --cased
check "vocab --cased = the reference" cmp -s "$TMP/v_cased.txt" "$FIX/vocab_built_cased.txt"

# the built vocab tokenizes its own training text without [UNK]
run "$BP_BIN" vocab --input "$FIX/train.txt" --size 180 --min-count 1 --out "$TMP/v180.txt"
check "vocab --min-count 1 --size 180 gives 180 lines" [ "$(wc -l <"$TMP/v180.txt")" -eq 180 ]
run "$BP_BIN" tokenize --vocab "$TMP/v180.txt" --pieces <"$FIX/train.txt"
check "training text tokenizes" [ "$rc" -eq 0 ]
check "training text has no [UNK]" not grep -q '\[UNK\]' "$TMP/out"

finish
