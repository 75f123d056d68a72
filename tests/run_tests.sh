#!/usr/bin/env bash
# Runs every test program (C unit tests built from tests/test_*.c under $BP_TEST_BUILD/tests) and
# every CLI test script (tests/test_*.sh, which use $BP_BIN), showing their output as it comes.
# Then a summary: a line per program with the cases it ran, their results and its time; the case
# totals; and last the line "N passed, N failed", counting programs. A program passes when it exits
# 0 and reports its cases (cmocka's "[==========] N test(s) run." with "[  PASSED  ] N test(s).",
# or tests/lib.sh's "NAME: N passed, N failed") with none failed: one that crashes or reports no
# count fails, and its line says why. Exits non-zero when anything failed.
set -u
cd "$(dirname "$0")/.."
: "${BP_BIN:?set BP_BIN to the bert_pretrain binary}"
: "${BP_TEST_BUILD:=build}"
export BP_BIN BP_TEST_BUILD
LOGS=$(mktemp -d /tmp/bp_run_tests_XXXXXX)
trap 'rm -rf "$LOGS"' EXIT

# run_one PROGRAM: runs it with its stdout and stderr shown and also kept apart in $LOGS/out and
# $LOGS/err. Apart, because a cmocka program's stdout is block-buffered into a pipe: merged, a
# buffer flush can put a stderr line inside its count line. Returns the program's exit status.
run_one() {
    local cmd=("$1")
    [[ "$1" == *.sh ]] && cmd=(bash "$1")
    ( "${cmd[@]}" 2>&1 1>&3 3>&- | tee "$LOGS/err" >&2; exit "${PIPESTATUS[0]}" ) 3>&1 |
        tee "$LOGS/out"
    return "${PIPESTATUS[0]}"
}

# case_counts NAME: "RUN PASSED FAILED SKIPPED" from the output of the program NAME just run, or
# nothing when it reported no count. A cmocka case neither passed nor skipped counts as failed.
case_counts() {
    cat "$LOGS/out" "$LOGS/err" | awk -v name="$1" '
        /^\[==========\] [0-9]+ test\(s\) run\.$/ { run += $2; cmocka = 1 }
        /^\[  PASSED  \] [0-9]+ test\(s\)\.$/ { passed += $4 }
        /^\[  SKIPPED \] [0-9]+ test\(s\)/ { skipped += $4 }
        index($0, name ": ") == 1 {
            rest = substr($0, length(name) + 3)
            if (rest ~ /^[0-9]+ passed, [0-9]+ failed$/) {
                split(rest, f, " ")
                script_passed += f[1]; script_failed += f[3]; script = 1
            }
        }
        END {
            if (cmocka) print run, passed + 0, run - passed - skipped, skipped + 0
            else if (script) print script_passed + script_failed, script_passed, script_failed, 0
        }'
}

# exit_reason RC: the exit status in words
exit_reason() {
    if [ "$1" -gt 128 ]; then echo "exit $1, killed by SIG$(kill -l "$(($1 - 128))" 2>/dev/null)"
    else echo "exit $1"; fi
}

progs_passed=0; progs_failed=0
cases_passed=0; cases_failed=0; cases_skipped=0; uncounted=()
summary=()
for t in "$BP_TEST_BUILD"/tests/test_* tests/test_*.sh; do
    [ -e "$t" ] || continue
    case "$t" in *.d|*.o) continue ;; esac
    name=$(basename "$t")
    echo "=== $name"
    start=${EPOCHREALTIME/./}
    run_one "$t"
    rc=$?
    us=$((${EPOCHREALTIME/./} - start))
    printf -v took '%4d.%d s' $((us / 1000000)) $((us / 100000 % 10))
    counts=$(case_counts "$name")
    ok=1
    if [ -z "$counts" ]; then
        ok=0
        uncounted+=("$name")
        what="no case count ($(exit_reason $rc))"
    else
        read -r n_run n_pass n_fail n_skip <<<"$counts"
        cases_passed=$((cases_passed + n_pass))
        cases_failed=$((cases_failed + n_fail))
        cases_skipped=$((cases_skipped + n_skip))
        what="$n_run cases: $n_pass passed, $n_fail failed"
        [ "$n_skip" -gt 0 ] && what+=", $n_skip skipped"
        # a failed case explains a non-zero exit; otherwise the exit status is the news
        if [ "$n_fail" -gt 0 ]; then ok=0
        elif [ $rc -ne 0 ]; then ok=0; what+="; $(exit_reason $rc)"; fi
    fi
    if [ $ok -eq 1 ]; then progs_passed=$((progs_passed + 1)); mark=ok; else
        progs_failed=$((progs_failed + 1)); mark=FAIL; fi
    printf -v line '%-4s %-22s %-52s %s' "$mark" "$name" "$what" "$took"
    summary+=("$line")
done
echo
printf '%s\n' "${summary[@]+"${summary[@]}"}"
line="cases: $cases_passed passed, $cases_failed failed"
[ $cases_skipped -gt 0 ] && line+=", $cases_skipped skipped"
[ ${#uncounted[@]} -gt 0 ] && line+="; no count from ${uncounted[*]}"
echo "$line"
echo "$progs_passed passed, $progs_failed failed"
[ $progs_failed -eq 0 ]
