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
# passes every few rounds and at the end.  Then the same for recompression
# (`rewind compact --recompress`) of a journal stored raw: see below.
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

# Recompression (rewind compact --recompress): disk z is written raw
# (--zstd-level 0) with half compressible data; each round resets its
# journal to that raw copy and kills the rewrite at a random moment.
# After each kill every segment is old (version 1) or new (2), the whole
# store verifies, and a sampled point hashes as before; a second run
# finishes.  The index is never touched by recompression, so resetting
# the journal files alone is a valid store.
RZROUNDS=8
[ -n "${REWIND_LONG:-}" ] && RZROUNDS=60
"$REWIND" create --store "$STORE" z --size 64M >/dev/null || fail "create z"
start_server --zstd-level 0
cat >"$TMP/wz.py" <<'EOF2'
import nbd, os, random, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
rnd = random.Random(7); size = h.get_size(); left = 150 << 20
while left > 0:
    n = rnd.choice([16384, 65536, 262144, 1 << 20])
    off = rnd.randrange(0, (size - n) // 4096) * 4096
    b = os.urandom(n // 8) * 8 if rnd.random() < 0.5 else os.urandom(n)
    h.pwrite(b, off); left -= n
    if rnd.random() < 0.05: h.flush()
h.flush(); h.shutdown()
EOF2
PATH=/usr/bin:$PATH python3 "$TMP/wz.py" "$(uri z)" || fail "workload z"
stop_server
JZ=$STORE/disks/z/journal
ZLATEST=$("$REWIND" timeline --store "$STORE" z --json | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["range"]["latest_seq"])')
ZFIRST=$("$REWIND" timeline --store "$STORE" z --json | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["range"]["oldest_seq"])')
declare -A ZSHA
ZPOINTS=($(( ZFIRST + (ZLATEST - ZFIRST) / 3 )) $(( ZFIRST + 2 * (ZLATEST - ZFIRST) / 3 )) $ZLATEST)
for p in "${ZPOINTS[@]}"; do
	"$REWIND" restore --store "$STORE" z --at seq:$p --out "$TMP/r.img" --force >/dev/null || fail "restore z seq:$p"
	ZSHA[$p]=$(sha256sum <"$TMP/r.img" | cut -c1-64)
done
[ "$(ls "$JZ" | wc -l)" -ge 3 ] || fail "z: want >= 3 segments"
rm -rf "$TMP/jz0"; cp -a "$JZ" "$TMP/jz0"
alloc0=$(du -sk "$JZ" | cut -f1)
seg_versions() {  # prints "v1 v2" counts of the segment files of z
	"$PYTHON" - "$JZ" <<'EOF2'
import os, struct, sys
v = {1: 0, 2: 0}
for n in os.listdir(sys.argv[1]):
    if len(n) == 20 and n.isdigit():
        b = open(os.path.join(sys.argv[1], n), 'rb').read(64)
        k = struct.unpack('<I', b[8:12])[0]
        assert k in v, 'segment %s has version %d' % (n, k)
        v[k] += 1
print(v[1], v[2])
EOF2
}
rzkills=0
for i in $(seq 1 $RZROUNDS); do
	rm -rf "$JZ"; cp -a "$TMP/jz0" "$JZ"
	REWIND_FAULTS=$FAULTS "$REWIND" compact --store "$STORE" z --recompress >"$TMP/c.log" 2>&1 &
	cpid=$!
	sleep "0.$(printf '%03d' $((RANDOM % 900)))"
	kill -9 $cpid 2>/dev/null && rzkills=$((rzkills + 1))
	wait $cpid 2>/dev/null
	read -r v1 v2 < <(seg_versions) || fail "z round $i: a segment of another version"
	p=${ZPOINTS[$((RANDOM % ${#ZPOINTS[@]}))]}
	"$REWIND" restore --store "$STORE" z --at seq:$p --out "$TMP/r.img" --force >/dev/null 2>"$TMP/r.err" ||
		fail "z round $i: restore seq:$p after a kill ($v2 segments rewritten): $(cat "$TMP/r.err")"
	[ "$(sha256sum <"$TMP/r.img" | cut -c1-64)" = "${ZSHA[$p]}" ] || fail "z round $i: seq:$p differs after a kill"
	if [ $((i % 4)) -eq 1 ]; then
		"$REWIND" verify --store "$STORE" z >"$TMP/v.log" 2>&1 || fail "z round $i: verify after a kill: $(tail -3 "$TMP/v.log")"
	fi
	"$REWIND" compact --store "$STORE" z --recompress >"$TMP/c2.log" 2>&1 ||
		fail "z round $i: recompression did not finish: $(cat "$TMP/c2.log")"
	read -r v1 v2 < <(seg_versions)
	[ "$v2" -ge 1 ] || fail "z round $i: no segment rewritten"
	ls "$JZ" | grep -q '\.rz$' && fail "z round $i: a .rz copy is left"
done
[ $rzkills -ge $((RZROUNDS / 2)) ] || fail "only $rzkills of $RZROUNDS recompressions were killed mid-run (too fast?)"
alloc1=$(du -sk "$JZ" | cut -f1)
[ "$alloc1" -lt "$alloc0" ] || fail "z: recompression freed nothing ($alloc0 -> $alloc1 KiB)"
for p in "${ZPOINTS[@]}"; do
	"$REWIND" restore --store "$STORE" z --at seq:$p --out "$TMP/r.img" --force >/dev/null || fail "final restore z seq:$p"
	[ "$(sha256sum <"$TMP/r.img" | cut -c1-64)" = "${ZSHA[$p]}" ] || fail "final z seq:$p differs"
done
"$REWIND" verify --store "$STORE" >"$TMP/v.log" 2>&1 || fail "verify after recompression: $(tail -3 "$TMP/v.log")"
check "recompression: $RZROUNDS rounds, $rzkills killed mid-run; journal ${alloc0} -> ${alloc1} KiB; points exact, verify passes"
start_server
PATH=/usr/bin:$PATH python3 "$TMP/w.py" "$(uri z)" 98 2 || fail "write after recompression"
stop_server
check "server restarts on the recompressed journal"
