#!/usr/bin/env bash
# compact_live.sh — compaction beside a live server.
#
# `rewind serve` runs with a writer workload; `rewind compact --before
# seq:H` (slowed down by the syscall seam so it overlaps) runs at the same
# time as restores as-of points >= H, which must match hashes taken before;
# the writer must finish (the server kept accepting writes).  Then
# `serve --retain 1s --compact-every 1s` compacts on its own: the
# restorable range's oldest_seq (rewind timeline --json) moves forward.
. "$(dirname "$0")/functions.sh"

have_nbdsh || { echo "SKIP: nbdsh (python3-libnbd) is not installed"; exit 77; }
requires sha256sum
rw_setup

"$REWIND" create --store "$STORE" d --size 16M >/dev/null || fail "create"
cat >"$TMP/w.py" <<'EOF'
import nbd, os, random, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
rnd = random.Random(int(sys.argv[2])); size = h.get_size()
left = int(sys.argv[3]) << 20
while left > 0:
    off = rnd.randrange(0, size // 4096) * 4096
    n = min(rnd.choice([4096, 65536, 1 << 20]), size - off)
    if rnd.random() < 0.1: h.zero(n, off)
    else: h.pwrite(os.urandom(n), off); left -= n
h.flush(); h.shutdown()
EOF
write() { PATH=/usr/bin:$PATH python3 "$TMP/w.py" "$(uri d)" "$1" "$2"; }
range_field() { "$REWIND" timeline --store "$STORE" d --json | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["range"][sys.argv[1]])' "$1"; }

start_server
write 1 80 || fail "workload 1"
H=$(range_field latest_seq)
write 2 80 || fail "workload 2"
P=$(range_field latest_seq)
segs0=$(ls "$STORE/disks/d/journal" | wc -l)
[ "$segs0" -ge 3 ] || fail "want >= 3 segments, have $segs0"
"$REWIND" restore --store "$STORE" d --at seq:$H --out "$TMP/h.img" >/dev/null || fail "restore H"
"$REWIND" restore --store "$STORE" d --at seq:$P --out "$TMP/p.img" >/dev/null || fail "restore P"
SHA_H=$(sha256sum <"$TMP/h.img" | cut -c1-64) SHA_P=$(sha256sum <"$TMP/p.img" | cut -c1-64)
check "history: H=seq $H, P=seq $P, $segs0 segments; hashes taken"

# Writer, compaction and restores at once.
write 3 60 >"$TMP/w3.log" 2>&1 &
wpid=$!
REWIND_FAULTS=read:delay:5,write:delay:20 "$REWIND" compact --store "$STORE" d --before seq:$H \
	>"$TMP/c.log" 2>&1 &
cpid=$!
n=0
while kill -0 $cpid 2>/dev/null || [ $n -lt 2 ]; do
	for pt in H P; do
		[ $pt = H ] && s=$H want=$SHA_H || { s=$P; want=$SHA_P; }
		"$REWIND" restore --store "$STORE" d --at seq:$s --out "$TMP/r.img" --force >/dev/null 2>"$TMP/r.err" ||
			fail "restore seq:$s during compaction: $(cat "$TMP/r.err")"
		[ "$(sha256sum <"$TMP/r.img" | cut -c1-64)" = "$want" ] || fail "seq:$s differs during compaction"
		n=$((n + 1))
	done
	[ $n -gt 40 ] && break
done
wait $cpid || fail "compaction failed: $(cat "$TMP/c.log")"
grep -q "folded" "$TMP/c.log" || fail "compaction log does not say what it folded: $(cat "$TMP/c.log")"
check "$n restores as-of seq $H and $P exact while compacting"
wait $wpid || fail "the writer failed while compacting: $(cat "$TMP/w3.log")"
check "the server kept accepting writes"
[ "$(range_field oldest_seq)" = "$H" ] || fail "oldest_seq $(range_field oldest_seq), want $H"
"$REWIND" restore --store "$STORE" d --at seq:$((H - 1)) --out "$TMP/x.img" >/dev/null 2>"$TMP/x.err" &&
	fail "a point before the horizon was restored"
grep -q "outside the restorable range" "$TMP/x.err" || fail "refusal message: $(cat "$TMP/x.err")"
segs1=$(ls "$STORE/disks/d/journal" | wc -l)
[ ! -e "$STORE/disks/d/journal/00000000000000000001" ] || fail "no segment reclaimed ($segs0 -> $segs1): $(cat "$TMP/c.log"; ls -l "$STORE/disks/d/journal")"
check "horizon $H, points before it refused, first segment reclaimed ($segs0 -> $segs1 with the writer's new ones)"
stop_server

# The server compacts on its own.
start_server --retain 1s --compact-every 1s
write 4 8 || fail "workload 4"
old=$H
for i in $(seq 1 150); do
	cur=$(range_field oldest_seq)
	# (the horizon moves first; the child logs when it is done)
	[ "$cur" -gt "$old" ] && grep -q "compact: disk 'd'" "$TMP/server.log" && break
	sleep 0.2
done
[ "$cur" -gt "$old" ] || fail "serve --compact-every did not move the horizon ($old)"
grep -q "compact: disk 'd'" "$TMP/server.log" || fail "no compaction in the server log"
check "serve --retain 1s --compact-every 1s moved the horizon $old -> $cur"
stop_server
"$REWIND" verify --store "$STORE" >"$TMP/v.log" 2>&1 || fail "verify: $(tail -3 "$TMP/v.log")"
"$REWIND" restore --store "$STORE" d --at now --out "$TMP/now.img" >/dev/null || fail "restore now"
cmp -s "$TMP/now.img" "$STORE/disks/d/head.img" || fail "as-of now differs from head"
check "verify passes; as-of now equals head"
