#!/usr/bin/env bash
# compact.sh BUILD_DIR — the compaction benchmark behind `make bench-compact`.
#
# History: a SIZE_G GiB disk (1) gets EPOCHS (2) epochs through `rewind
# serve`: nbdcopy of the bench data set (an ext4 image of a /usr sample +
# random, 1 GiB, built by bench/journal.sh's recipe if missing) at a
# different offset each epoch, so every epoch overwrites data.
#
#  (a) fold rate: with the server stopped, `rewind compact --before seq:S`
#      folds every epoch but the last; rate = journal bytes folded
#      (segments freed, records of folded blocks) / seconds, against
#      `qemu-img convert -O raw` of a same-size raw image (head's copy)
#      followed by fsync — same filesystem.  Target >= 0.5x.
#  (b) effect on writes: fio 4 KiB randwrite, iodepth 32, ioengine=nbd
#      through `rewind serve`, RUNTIME (15) s, p99 completion latency
#      without compaction, then with `rewind compact --retain 1s` running
#      back to back for the whole run (it folds what fio writes), under
#      nice 10 / ionice idle as rewind-compact@.service runs it (which
#      makes it a --background run: SCHED_IDLE, paced writeback).
#      Target: p99 with <= 1.5x p99 without.
#  (a') after (a): `rewind compact --recompress` of the segments that stay
#      (records the server stored raw): records, ratio, bytes freed, time.
# Prints both ratios; exits non-zero when a target is missed or a run
# fails.  Knobs: SIZE_G, EPOCHS, RUNTIME.
set -euo pipefail

B=${1:-build}
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
REWIND="$top/$B/rewind"
SIZE_G=${SIZE_G:-1}
EPOCHS=${EPOCHS:-2}
RUNTIME=${RUNTIME:-15}
if [ -x /usr/bin/python3 ]; then PY=/usr/bin/python3; else PY=python3; fi

die() { echo "compact.sh: $*" >&2; exit 1; }
for t in qemu-img nbdcopy fio timeout bc; do
	command -v "$t" >/dev/null || die "needs '$t' (scripts/deps.sh bench)"
done
fio --enghelp 2>&1 | grep -qw nbd || die "fio lacks the nbd engine"
[ -x "$REWIND" ] || die "no $REWIND; run 'make'"

data="$top/$B/bench-data/usr-ext4-512m+random-512m.bin"
if [ ! -f "$data" ]; then
	mkdir -p "$(dirname "$data")"
	# Same recipe as bench/journal.sh: 512 MiB ext4 of /usr + 512 MiB random.
	tmpi=$(mktemp); truncate -s 512M "$tmpi"
	mkfs.ext4 -q -F -d /usr/share "$tmpi" 2>/dev/null || mkfs.ext4 -q -F "$tmpi"
	{ cat "$tmpi"; head -c 512M /dev/urandom; } >"$data"
	rm -f "$tmpi"
fi
work=$(mktemp -d "$top/$B/bench-compact.XXXXXX")
export REWIND_STORE="$work/store"
cp "$REWIND" "$work/rewind"   # a rebuild during the run must not matter
REWIND="$work/rewind"
SPID=
cleanup() {
	[ -n "$SPID" ] && kill -TERM "$SPID" 2>/dev/null && { wait "$SPID" 2>/dev/null || true; }
	rm -rf "$work"
}
trap cleanup EXIT
now() { date +%s.%N; }
secs() { echo "$2 - $1" | bc -l; }
start_server() {
	rm -f "$REWIND_STORE/rewind.sock"
	"$REWIND" serve "$@" >>"$work/server.log" 2>&1 &
	SPID=$!
	for _ in $(seq 1 3000); do [ -S "$REWIND_STORE/rewind.sock" ] && return 0; sleep 0.01; done
	die "server did not start"
}
stop_server() { kill -TERM "$SPID"; wait "$SPID" || die "server exit"; SPID=; }
range() { "$REWIND" timeline d --json | $PY -c 'import json,sys; print(json.load(sys.stdin)["range"][sys.argv[1]])' "$1"; }
URI="nbd+unix:///d?socket=$REWIND_STORE/rewind.sock"

"$REWIND" init >/dev/null
"$REWIND" create d --size ${SIZE_G}G >/dev/null
start_server
dsize=$(stat -c %s "$data")
for e in $(seq 1 "$EPOCHS"); do
	# place the data set at a different offset each epoch (wrapping)
	off=$(( (e - 1) * (SIZE_G << 30) / (EPOCHS + 1) / 4096 * 4096 ))
	len=$(( dsize < (SIZE_G << 30) - off ? dsize : (SIZE_G << 30) - off ))
	$PY - "$URI" "$data" "$off" "$len" <<'EOF'
import nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
f = open(sys.argv[2], 'rb'); off = int(sys.argv[3]); left = int(sys.argv[4]); pos = 0
while left > 0:
    n = min(1 << 20, left); b = f.read(n)
    if b.count(0) != len(b): h.pwrite(b, off + pos)
    pos += n; left -= n
h.flush(); h.shutdown()
EOF
	[ "$e" -eq $((EPOCHS - 1)) ] && S=$(range latest_seq)
done
[ "$EPOCHS" -ge 2 ] || S=$(range latest_seq)
stop_server
jbytes=$(du -sb "$REWIND_STORE/disks/d/journal" | cut -f1)
echo "history: $EPOCHS epochs, journal $((jbytes >> 20)) MiB, folding up to seq $S"

# (a) fold rate vs qemu-img convert.
sync
t0=$(now)
"$REWIND" compact d --before seq:$S --no-recompress --json >"$work/c.json"
t1=$(now)
folded=$($PY -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["bytes"] if d["bytes"] else d["data_bytes"]+d["hole_bytes"])' "$work/c.json")
fold_s=$(secs "$t0" "$t1")
cp --sparse=never "$REWIND_STORE/disks/d/head.img" "$work/src.raw"
sync
t0=$(now)
qemu-img convert -f raw -O raw "$work/src.raw" "$work/dst.raw"
sync -f "$work/dst.raw" 2>/dev/null || sync
t1=$(now)
q_s=$(secs "$t0" "$t1")
rm -f "$work/src.raw" "$work/dst.raw"
fold_rate=$(echo "$folded / 1048576 / $fold_s" | bc -l)
q_rate=$(echo "($SIZE_G * 1024) / $q_s" | bc -l)
r_a=$(echo "$fold_rate / $q_rate" | bc -l)
printf "(a) fold: %.0f MiB of history in %.2fs = %.1f MiB/s; qemu-img convert %d GiB: %.2fs = %.1f MiB/s; ratio %.2fx (target >= 0.5x)\n" \
	"$(echo "$folded / 1048576" | bc -l)" "$fold_s" "$fold_rate" "$SIZE_G" "$q_s" "$q_rate" "$r_a"

# (a') recompression of what stays (records the server stored raw).
"$REWIND" compact d --recompress --json >"$work/rz.json"
$PY - "$work/rz.json" <<'EOF2'
import json, sys
z = json.load(open(sys.argv[1]))["recompress"]
print("(a') recompression: %d of %d raw records in %d segments (%d rewritten): payload ratio %.2f -> %.2f, "
      "freed %.0f MiB of %.0f MiB allocated, %.2fs" % (z["recompressed"], z["raw_records"], z["segments"],
      z["rewritten"], z["ratio_before"], z["ratio_after"], z["bytes_freed"] / 1048576,
      z["allocated_before"] / 1048576, z["seconds"]))
EOF2

# (b) fio p99 with and without compaction.
fio_p99() {  # prints p99 clat in microseconds
	timeout -s KILL $((RUNTIME + 60)) fio --name=rw --ioengine=nbd --uri="$URI" \
		--rw=randwrite --bs=4k --iodepth=32 --time_based --runtime="$RUNTIME" \
		--output-format=json --output="$work/fio.json" >/dev/null 2>&1 || die "fio failed"
	$PY -c 'import json,sys; j=json.load(open(sys.argv[1]))["jobs"][0]["write"]; print(j["clat_ns"]["percentile"]["99.000000"]/1000, j["iops"])' "$work/fio.json"
}
start_server
read -r p99_0 iops_0 < <(fio_p99)
# compaction back to back during the second run
( end=$(( $(date +%s) + RUNTIME + 2 )); n=0
  while [ "$(date +%s)" -lt $end ]; do nice -n 10 ionice -c 3 "$REWIND" compact d --retain 1s --json >>"$work/cc.json" 2>>"$work/cc.log" || true; n=$((n + 1)); done
  echo $n >"$work/ncompact" ) &
cpid=$!
read -r p99_1 iops_1 < <(fio_p99)
wait $cpid
stop_server
ncomp=$(cat "$work/ncompact")
sed 's/^/    /' "$work/cc.log" | tail -5
folded_b=$(grep -c "compact: disk '.*horizon" "$work/cc.log" || true)
mib_b=$($PY -c 'import json,sys
t = 0
for l in open(sys.argv[1]):
    try: d = json.loads(l)
    except ValueError: continue
    t += d["data_bytes"] + d["hole_bytes"]
print(t >> 20)' "$work/cc.json" 2>/dev/null || echo 0)
r_b=$(echo "$p99_1 / $p99_0" | bc -l)
printf "(b) fio 4k randwrite QD32 %ss: p99 %.0f us (%.0f IOPS) without, %.0f us (%.0f IOPS) with %d background compactions (%d folded, %s MiB of blocks); ratio %.2fx (target <= 1.5x); load %s\n" \
	"$RUNTIME" "$p99_0" "$iops_0" "$p99_1" "$iops_1" "$ncomp" "$folded_b" "$mib_b" "$r_b" "$(cut -d' ' -f1-3 /proc/loadavg)"
miss=0
[ "$(echo "$r_a >= 0.5" | bc -l)" = 1 ] || { echo "MISS: fold rate ratio $r_a < 0.5"; miss=1; }
[ "$(echo "$r_b <= 1.5" | bc -l)" = 1 ] || { echo "MISS: p99 ratio $r_b > 1.5"; miss=1; }
exit $miss
