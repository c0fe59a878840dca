#!/usr/bin/env bash
# capture_adversarial.sh — protocol abuse against `rewind serve`, each case
# followed by a liveness check: huge option length, bad magics, unknown
# flags, commands and exports, oversize and overflowing requests, a client
# vanishing mid-write, pipelining, a stalled handshake, the connection
# cap.  Then: the journal holds exactly the writes that were answered
# with success, and the server still stops cleanly.
. "$(dirname "$0")/functions.sh"
requires python3
rw_setup
"$REWIND" create vm1 --size 64M >/dev/null || fail "create"
start_server --handshake-timeout 2s --max-conns 8

# Regression (idle_server_spins): the housekeeping thread's timed wait once
# used a CLOCK_MONOTONIC deadline on a CLOCK_REALTIME condition variable and
# spun at 100% CPU.  An idle server must use (almost) no CPU.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$SERVER_PID/stat"; }
if [ -r "/proc/$SERVER_PID/stat" ]; then
	sleep 0.5; c0=$(cpu_ticks); sleep 2; c1=$(cpu_ticks)
	[ $((c1 - c0)) -le 20 ] || fail "idle server used $((c1 - c0)) CPU ticks in 2 s"
	check "idle server used $((c1 - c0)) CPU ticks in 2 s"
fi

timeout -s KILL 120 "$PYTHON" "$CLIENT" adversarial "$SOCK" vm1 $((64 << 20)) || fail "adversarial cases"
timeout -s KILL 60 "$PYTHON" "$CLIENT" handshake-timeout "$SOCK" vm1 2 || fail "handshake deadline"
timeout -s KILL 60 "$PYTHON" "$CLIENT" conn-cap "$SOCK" vm1 8 || fail "connection cap"
grep -q "option 7 claims 4294967295 bytes" "$TMP/server.log" || fail "huge option not logged"
grep -q "connection cap (8) reached" "$TMP/server.log" || fail "cap not logged"
grep -q "handshake failed: deadline passed" "$TMP/server.log" || fail "deadline not logged"
check "server log names the rejected option, the deadline and the cap"

# Successful writes: 6 liveness writes, 1 before the cut write, 64
# pipelined; the cut write and every refused request left nothing.
sleep 0.3
journal_snapshot
expect_eq "journal writes" "$(journal_field vm1 writes)" 71
expect_eq "journal write bytes" "$(journal_field vm1 write_bytes)" $((71 * 4096))
z=$(( $(journal_field vm1 zeroes) + $(journal_field vm1 trims) ))
[ "$z" -le 1 ] || fail "unexpected zero/trim records: $z"
check "no refused request reached the journal"
stop_server
check "server stopped cleanly after the abuse"
echo "capture_adversarial: all checks passed"
