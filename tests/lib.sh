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
