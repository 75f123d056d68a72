#!/usr/bin/env bash
# The fuzz smoke (tests/fuzz, docs/fuzzing.md): every libFuzzer target replays each committed
# corpus and regression input once, then fuzzes for FUZZ_SMOKE_SECONDS (default 2) from its corpus,
# so a fixed bug that comes back, or a new crash near the seeds, fails CI. A crash's input is kept
# in build-fuzz/crashes/TARGET/ (commit it under tests/fuzz/regressions/TARGET/ with the fix).
# The targets carry ASan + UBSan themselves, so the sanitizer suite (make test-asan) skips this.
source "$(dirname "$0")/lib.sh"
FUZZ_BUILD=${BP_FUZZ_BUILD:-build-fuzz}
SECONDS_EACH=${FUZZ_SMOKE_SECONDS:-2}
if [ "${BP_TEST_BUILD:-build}" != build ]; then
    echo "test_fuzz.sh: skipped under $BP_TEST_BUILD (make test runs the fuzz smoke)"
    finish
    exit
fi

# log_tail FILE: the sanitizer report of a failed run, not libFuzzer's progress lines
log_tail() { grep -v -E '^#[0-9]+|^INFO:|^MERGE' "$1" | tail -n 40; }

targets=()
for src in tests/fuzz/fuzz_*.c; do
    t=$(basename "$src" .c)
    targets+=("${t#fuzz_}")
done
require "fuzz targets found" test ${#targets[@]} -gt 0
for t in "${targets[@]}"; do
    bin=$FUZZ_BUILD/fuzz_$t
    require "$bin is built (make fuzz-build)" test -x "$bin"
    mapfile -t inputs < <(find tests/fuzz/corpus/"$t" tests/fuzz/regressions/"$t" -type f 2>/dev/null | sort)
    dict=()
    [ -f tests/fuzz/$t.dict ] && dict=(-dict=tests/fuzz/$t.dict)
    "$bin" "${inputs[@]}" > "$TMP/replay_$t.log" 2>&1
    rc=$?
    check "$t: ${#inputs[@]} corpus and regression inputs replay cleanly (rc=$rc)" test $rc -eq 0
    [ $rc -eq 0 ] || log_tail "$TMP/replay_$t.log"
    mkdir -p "$TMP/corpus_$t" "$FUZZ_BUILD/crashes/$t"
    "$bin" "$TMP/corpus_$t" "tests/fuzz/corpus/$t" "${dict[@]}" -max_total_time="$SECONDS_EACH" \
        -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$FUZZ_BUILD/crashes/$t/" > "$TMP/fuzz_$t.log" 2>&1
    rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$TMP/fuzz_$t.log")
    echo "$t: ${#inputs[@]} committed inputs replayed, then ${runs:-?} fuzzed in ${SECONDS_EACH} s"
    check "$t: ${SECONDS_EACH} s of fuzzing, ${runs:-?} inputs, no crash (rc=$rc)" test $rc -eq 0
    [ $rc -eq 0 ] || log_tail "$TMP/fuzz_$t.log"
done
finish
