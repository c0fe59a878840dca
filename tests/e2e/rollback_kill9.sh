#!/usr/bin/env bash
# rollback_kill9.sh — an offline rollback (no server: restore/inplace.c)
# killed with SIGKILL at many instants leaves a store that recovers to a
# state its journal explains, and the rollback run again is exact.
#
# The history after the point spans several steps of the rollback (4 MiB
# of blocks each: data, zeroes, an unaligned write), so kills land while
# one step is journaled, the previous one synced and written into head,
# in the final head fdatasync and in the index commits; every fsync is
# slowed down (REWIND_FAULTS) to spread the rollback over ~0.1 s.  After
# each kill:
#  - the store opens (by `rewind serve`, or by the next rollback itself,
#    alternately) and the disk it serves equals a restore as-of its newest
#    record: head never holds bytes the journal does not;
#  - the rollback run again gives exactly the image as-of the point;
#  - rolling forward to the newest point before the rollbacks (itself a
#    rollback) gives back that image bit for bit.
# At the end, `rewind verify` finds the journal and index consistent.
. "$(dirname "$0")/functions.sh"
requires qemu-io nbdcopy sha256sum
set -e
rw_setup
"$REWIND" create vm1 --size 32M >/dev/null
start_server
U=$(uri vm1)


qemu-io -f raw -c 'write -P 0xaa 0 16M' -c 'write -P 0x11 20M 4M' -c flush "$U" >/dev/null
sleep 0.1
P1=$(last_seq vm1)
qemu-io -f raw -c 'write -P 0xbb 1M 6M' -c 'write -z 9M 3M' -c 'write -P 0xcc 14M 2M' \
	-c 'write -P 0xdd 21M 5M' -c 'write -P 0xee 3000 9000' -c flush "$U" >/dev/null
sleep 0.1
P2=$(last_seq vm1)
stop_server
want=$(restore_sha vm1 "seq:$P1")
newest=$(restore_sha vm1 "seq:$P2")
check "history: point P1 = seq $P1, newest = seq $P2"

round=0
for ms in 0 5 15 30 45 60 75 90 110 130 160 200; do
	round=$((round + 1))
	REWIND_FAULTS="fsync:delay:15" "$REWIND" rollback vm1 --at "seq:$P1" >"$TMP/k.log" 2>&1 &
	pid=$!
	sleep "$(printf '0.%03d' "$ms")"
	kill -9 "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	if grep -q '^rolled disk' "$TMP/k.log"; then at="after it finished"; else at="during it"; fi
	if [ $((round % 2)) -eq 1 ]; then
		# Recovered by the server: head must match the journal.
		start_server
		now=$(last_seq vm1)
		[ "$(live_sha "$U")" = "$(restore_sha vm1 "seq:$now")" ] ||
			fail "kill -9 after $ms ms: the served disk differs from a restore as-of its newest record (seq $now)"
		stop_server
	fi
	# Recovered by the rollback itself (odd rounds: already recovered).
	"$REWIND" rollback vm1 --at "seq:$P1" >"$TMP/rb.log" 2>&1 ||
		{ cat "$TMP/rb.log"; fail "kill -9 after $ms ms: the rollback run again failed"; }
	start_server
	now=$(last_seq vm1)
	[ "$(live_sha "$U")" = "$want" ] || fail "kill -9 after $ms ms: the completed rollback is not exact"
	[ "$(restore_sha vm1 "seq:$now")" = "$want" ] || fail "kill -9 after $ms ms: a restore as-of the newest record is not the point's image"
	stop_server
	# Forward again, for the next round (undoing is a rollback as well).
	"$REWIND" rollback vm1 --at "seq:$P2" >/dev/null 2>&1 || fail "rolling forward to seq $P2"
	start_server
	[ "$(live_sha "$U")" = "$newest" ] || fail "kill -9 after $ms ms: rolling forward did not give back the newest image"
	stop_server
	check "kill -9 after $ms ms ($at): recovered consistent, rollback exact, forward again exact"
done
"$REWIND" verify vm1 >/dev/null || fail "verify after the killed rollbacks"
check "verify clean after $round killed rollbacks"
echo "rollback_kill9: all checks passed"
