#!/usr/bin/env bash
# run-tests.sh BUILD_DIR — runs every CUnit suite (BUILD_DIR/tests/test_*)
# and every end-to-end script (tests/e2e/*.sh) against BUILD_DIR/rewind.
# Prints one line per test and closes with "N passed, N failed, N skipped";
# exits non-zero when anything failed.  An e2e script exits 77 to skip.
set -u
B=${1:-build}
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top" || exit 1
export REWIND="$top/$B/rewind" REWIND_BUILD="$top/$B"
case "$B" in *san*) export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ;; esac
logdir="$top/$B/test-logs"
mkdir -p "$logdir"
pass=0 fail=0 skip=0 failed=()
run() {
	local name=$1; shift
	local log="$logdir/$name.log" t0=$SECONDS rc
	"$@" >"$log" 2>&1
	rc=$?
	local dt=$((SECONDS - t0))
	if [ $rc -eq 0 ]; then
		pass=$((pass + 1)); printf '  PASS  %-40s %4ds\n' "$name" "$dt"
	elif [ $rc -eq 77 ]; then
		skip=$((skip + 1)); printf '  SKIP  %-40s %s\n' "$name" "$(tail -n1 "$log")"
	else
		fail=$((fail + 1)); failed+=("$name")
		printf '  FAIL  %-40s %4ds (exit %d, log %s)\n' "$name" "$dt" "$rc" "$log"
		tail -n 30 "$log" | sed 's/^/        | /'
	fi
}
echo "== $B: unit suites"
for t in "$B"/tests/test_*; do
	[ -x "$t" ] || continue
	run "$(basename "$t")" "$t"
done
echo "== $B: end-to-end scripts"
for s in tests/e2e/*.sh; do
	[ -f "$s" ] || continue
	[ "$(basename "$s")" = functions.sh ] && continue   # shared helpers
	run "e2e-$(basename "$s" .sh)" bash "$s"
done
echo "$B: $pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ]
