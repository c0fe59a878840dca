#!/usr/bin/env bash
# capture_kill9.sh — kill -9 campaign: a client writes sequence-numbered
# blocks (a flush every 8th write) while the server is killed with SIGKILL
# at random moments, over and over.  After each restart (journal recovery,
# head replay, index catch-up) every acknowledged write must be on the
# disk — the newest acknowledged version of each block, or the write that
# was in flight at the kill.  Two disks are written at once (one store-wide
# seq clock, two journals recovered per restart).  50 kills in `make test`,
# 500 with REWIND_LONG set.  Finally a clean stop and `rewind verify`.
. "$(dirname "$0")/functions.sh"
requires python3
rw_setup
KILLS=${REWIND_KILLS:-50}
[ -n "${REWIND_LONG:-}" ] && KILLS=500
NBLK=512
"$REWIND" create vm1 --size 16M >/dev/null || fail "create"
"$REWIND" create vm2 --size 16M >/dev/null || fail "create"
LOG=$TMP/writes.log
LOG2=$TMP/writes2.log
: >"$LOG"; : >"$LOG2"
start_server
t0=$SECONDS
for r in $(seq 1 "$KILLS"); do
	timeout -s KILL 60 "$PYTHON" "$CLIENT" writer "$SOCK" vm1 "$LOG" $NBLK &
	wpid=$!
	timeout -s KILL 60 "$PYTHON" "$CLIENT" writer "$SOCK" vm2 "$LOG2" $NBLK &
	wpid2=$!
	# wait until this round's writer has an acknowledged write, let it
	# run 0..150 ms more, then SIGKILL the server
	before=$(grep -c '^ack' "$LOG" 2>/dev/null || true)
	for i in $(seq 1 400); do
		[ "$(grep -c '^ack' "$LOG" 2>/dev/null || true)" -gt "${before:-0}" ] && break
		sleep 0.025
	done
	sleep "0.$(printf '%03d' $((RANDOM % 150)))"
	kill9_server
	wait $wpid $wpid2
	start_server
	timeout -s KILL 60 "$PYTHON" "$CLIENT" check "$SOCK" vm1 "$LOG" $NBLK vm2 "$LOG2" >"$TMP/check.out" \
		|| { cat "$TMP/check.out"; fail "round $r: acknowledged writes lost"; }
done
# the check compacts each log and keeps the running total in its first line
acks=$(awk '/^acked-total/ {print $2}' "$LOG"); acks2=$(awk '/^acked-total/ {print $2}' "$LOG2")
flushed=$(awk '/^flush/ {print $2}' "$LOG")
check "$KILLS kill -9 rounds in $((SECONDS - t0))s: $acks + $acks2 acknowledged writes on 2 disks (vm1 flushed through write $flushed), none lost"
grep -q "replayed" "$TMP/server.log" && check "recovery replayed journal tails into head.img ($(grep -c replayed "$TMP/server.log") times)"
journal_snapshot
[ "$(journal_field vm1 writes)" -ge "$acks" ] || fail "journal holds fewer writes than were acknowledged"
[ "$(journal_field vm2 writes)" -ge "$acks2" ] || fail "vm2 journal holds fewer writes than were acknowledged"
check "journals hold >= $acks and >= $acks2 writes ($(journal_field vm1 writes), $(journal_field vm2 writes))"
stop_server
if "$REWIND" verify --help >/dev/null 2>&1; then
	"$REWIND" verify --store "$STORE" >"$TMP/verify.log" 2>&1 || { cat "$TMP/verify.log"; fail "rewind verify after the campaign"; }
	check "rewind verify: index consistent with the journal after $KILLS crashes"
fi
echo "capture_kill9: all checks passed"
