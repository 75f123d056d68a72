#!/usr/bin/env bash
# Runs every test program (C unit tests built from tests/test_*.c under $BP_TEST_BUILD/tests) and
# every CLI test script (tests/test_*.sh, which use $BP_BIN), and ends with one line
# "N passed, N failed". Exits non-zero when anything failed.
set -u
cd "$(dirname "$0")/.."
: "${BP_BIN:?set BP_BIN to the bert_pretrain binary}"
: "${BP_TEST_BUILD:=build}"
export BP_BIN BP_TEST_BUILD
pass=0; fail=0; failed=()
for t in "$BP_TEST_BUILD"/tests/test_* tests/test_*.sh; do
    [ -e "$t" ] || continue
    case "$t" in *.d|*.o) continue ;; esac
    name=$(basename "$t")
    echo "=== $name"
    if [[ "$t" == *.sh ]]; then bash "$t"; else "$t"; fi
    rc=$?
    if [ $rc -eq 0 ]; then pass=$((pass + 1)); else fail=$((fail + 1)); failed+=("$name (exit $rc)"); fi
done
echo
for f in "${failed[@]+"${failed[@]}"}"; do echo "FAILED: $f"; done
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
