#!/usr/bin/env bash
# compact_crash.sh — kill -9 `rewind compact` at random moments (DESIGN.md
# invariant 6).
#
# A store with history (several 64 MiB segments of random writes, zeroes
# and trims through `rewind serve`); sample points are restored and hashed
# up front.  Then, for each of N targets spread over history (N = 50,
# REWIND_LONG: 500): `rewind compact --before seq:T` runs slowed down by
# the syscall seam (REWIND_FAULTS delays reads, writes and syncs) and is
# killed with SIGKILL after a random delay.  After each kill:
#   - no journal byte was reclaimed before base and index were durable:
#     every missing segment has its last seq <= base_seq (horizon file);
#   - base_seq <= horizon_seq, and the index's oldest point is the horizon;
#   - sampled points >= the horizon restore to their pre-computed sha256,
#     and a point below it is refused;
# then compact runs again, undisturbed, and must reach T.  `rewind verify`
# passes every few rounds and at the end.
. "$(dirname "$0")/functions.sh"

have_nbdsh || { echo "SKIP: nbdsh (python3-libnbd) is not installed"; exit 77; }
requires sha256sum
rw_setup

ROUNDS=50
[ -n "${REWIND_LONG:-}" ] && ROUNDS=500
DISK=16M MB_PER_ROUND=52 NROUND=4

"$REWIND" create --store "$STORE" d --size $DISK >/dev/null || fail "create"
start_server
cat >"$TMP/w.py" <<'EOF'
import nbd, os, random, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
rnd = random.Random(int(sys.argv[2])); size = h.get_size()
left = int(sys.argv[3]) << 20
while left > 0:
    off = rnd.randrange(0, size // 4096) * 4096
    k = rnd.random()
    n = min(rnd.choice([4096, 16384, 65536, 1 << 20]), size - off)
    if k < 0.1: h.zero(n, off)
    elif k < 0.15: h.trim(n, off)
    else:
        if rnd.random() < 0.5: n = max(512, n - rnd.randrange(0, 4096) // 512 * 512)
        h.pwrite(os.urandom(n), off); left -= n
    if rnd.random() < 0.02: h.flush()
h.flush(); h.shutdown()
EOF
for r in $(seq 1 $NROUND); do
	PATH=/usr/bin:$PATH python3 "$TMP/w.py" "$(uri d)" $r $MB_PER_ROUND || fail "workload round $r"
done
stop_server

latest() { "$REWIND" timeline --store "$STORE" d --json | "$PYTHON" -c 'import json,sys; r=json.load(sys.stdin)["range"]; print(r[sys.argv[1]])' "$1"; }
LATEST=$(latest latest_seq)
J=$STORE/disks/d/journal
SEGS=($(ls "$J"))
[ ${#SEGS[@]} -ge 3 ] || fail "want >= 3 segments, have ${#SEGS[@]}"
check "history: $LATEST records in ${#SEGS[@]} segments"

# Sample points: 7 spread over history (the last is the newest), hashed up front.
declare -A SHA
POINTS=()
for i in $(seq 0 6); do
	p=$(( (LATEST * i) / 6 )); [ $p -lt 1 ] && p=1
	POINTS+=($p)
done
for p in "${POINTS[@]}"; do
	"$REWIND" restore --store "$STORE" d --at seq:$p --out "$TMP/r.img" --force >/dev/null || fail "restore seq:$p"
	SHA[$p]=$(sha256sum <"$TMP/r.img" | cut -c1-64)
done
check "${#POINTS[@]} points restored and hashed"

# last seq of each segment (one disk: seqs of a store are this disk's).
declare -A LAST
for i in $(seq 0 $((${#SEGS[@]} - 1))); do
	if [ $i -lt $((${#SEGS[@]} - 1)) ]; then
		LAST[${SEGS[$i]}]=$((10#${SEGS[$((i + 1))]} - 1))
	else
		LAST[${SEGS[$i]}]=$LATEST
	fi
done

horizon_field() {  # FIELD: horizon_seq | base_seq from disks/d/horizon
	[ -f "$STORE/disks/d/horizon" ] || { echo 0; return; }
	"$PYTHON" - "$STORE/disks/d/horizon" "$1" <<'EOF'
import struct, sys
b = open(sys.argv[1], 'rb').read()
assert len(b) == 44 and b[:8] == b'RWHORIZ1', 'bad horizon file'
_, _, hs, ht, bs = struct.unpack('<IIQQQ', b[8:40])
print(hs if sys.argv[2] == 'horizon_seq' else bs)
EOF
}

FAULTS="read:delay:1,write:delay:3,fsync:delay:20"
is_sanitized && FAULTS="read:delay:1,write:delay:2,fsync:delay:10"
kills=0 done_before=0 checked=0
for i in $(seq 1 $ROUNDS); do
	T=$(( (LATEST * 85 * i) / (100 * ROUNDS) )); [ $T -lt 1 ] && T=1
	REWIND_FAULTS=$FAULTS "$REWIND" compact --store "$STORE" d --before seq:$T \
		>"$TMP/c.log" 2>&1 &
	cpid=$!
	sleep "0.$(printf '%03d' $((RANDOM % 300)))"
	if kill -9 $cpid 2>/dev/null; then kills=$((kills + 1)); else done_before=$((done_before + 1)); fi
	wait $cpid 2>/dev/null
	# Invariants after the kill.
	hz=$(horizon_field horizon_seq) bs=$(horizon_field base_seq)
	[ "$bs" -le "$hz" ] || fail "round $i: base_seq $bs > horizon $hz"
	for s in "${SEGS[@]}"; do
		if [ ! -e "$J/$s" ] && [ "${LAST[$s]}" -gt "$bs" ]; then
			fail "round $i: segment $s (last seq ${LAST[$s]}) reclaimed but base_seq is $bs"
		fi
	done
	# A sampled point (at or after the horizon: exact; before: refused).
	for k in 1; do
		p=${POINTS[$((RANDOM % ${#POINTS[@]}))]}
		if [ $p -lt "$hz" ]; then
			"$REWIND" restore --store "$STORE" d --at seq:$p --out "$TMP/r.img" --force >/dev/null 2>&1 &&
				fail "round $i: seq:$p below the horizon $hz was restored"
			continue
		fi
		"$REWIND" restore --store "$STORE" d --at seq:$p --out "$TMP/r.img" --force >/dev/null 2>"$TMP/r.err" ||
			fail "round $i: restore seq:$p (horizon $hz, base $bs): $(cat "$TMP/r.err")"
		got=$(sha256sum <"$TMP/r.img" | cut -c1-64)
		[ "$got" = "${SHA[$p]}" ] || fail "round $i: seq:$p differs after a kill (horizon $hz, base $bs)"
		checked=$((checked + 1))
	done
	# Finish the job.
	"$REWIND" compact --store "$STORE" d --before seq:$T >"$TMP/c2.log" 2>&1 ||
		fail "round $i: compaction did not finish: $(cat "$TMP/c2.log")"
	hz=$(horizon_field horizon_seq) bs=$(horizon_field base_seq)
	[ "$hz" -ge $T ] && [ "$bs" = "$hz" ] || fail "round $i: after finishing, horizon $hz base $bs, want $T"
	[ "$(latest oldest_seq)" = "$hz" ] || fail "round $i: index oldest_seq $(latest oldest_seq) != horizon $hz"
	if [ $((i % 10)) -eq 0 ]; then
		"$REWIND" verify --store "$STORE" >"$TMP/v.log" 2>&1 || fail "round $i: verify: $(tail -3 "$TMP/v.log")"
	fi
done
check "$ROUNDS rounds: $kills killed mid-run, $done_before finished before the kill, $checked restores exact"
[ $kills -ge $((ROUNDS / 2)) ] || fail "only $kills of $ROUNDS compactions were killed mid-run (too fast?)"
left=$(ls "$J" | wc -l)
[ "$left" -lt ${#SEGS[@]} ] || fail "no segment was reclaimed"
check "segments: ${#SEGS[@]} -> $left"
for p in "${POINTS[@]}"; do
	[ $p -ge "$hz" ] || continue
	"$REWIND" restore --store "$STORE" d --at seq:$p --out "$TMP/r.img" --force >/dev/null || fail "final restore seq:$p"
	[ "$(sha256sum <"$TMP/r.img" | cut -c1-64)" = "${SHA[$p]}" ] || fail "final seq:$p differs"
done
"$REWIND" verify --store "$STORE" >"$TMP/v.log" 2>&1 || fail "final verify: $(tail -3 "$TMP/v.log")"
check "every sampled point >= horizon $hz exact; verify passes"
# The server starts on the compacted journal and takes writes.
start_server
PATH=/usr/bin:$PATH python3 "$TMP/w.py" "$(uri d)" 99 2 || fail "write after compaction"
stop_server
check "server restarts on the compacted journal"
