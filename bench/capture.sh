#!/usr/bin/env bash
# bench/capture.sh [BUILD_DIR] — guest-visible I/O of `rewind serve` against
# qemu-nbd (-f raw --cache=writeback, the baseline) and nbdkit's file
# plugin, same machine, same run, same fio jobs (fio's nbd engine over a
# unix socket).  Every run of every job gets a fresh 4 GiB image (a fresh
# store for rewind); the three servers run interleaved (the order rotates
# per run) RUNS times, and the table shows the median and the range of
# MiB/s (IOPS for 4 KiB jobs) and the ratio of medians rewind/peer.
#
# Jobs (the issue's list, plus the 4-connection random write): 4 KiB
# random write QD1 and QD32, each also with a flush after every write
# (fio --fsync=1); 4 KiB random write QD32 on 4 connections; 64 KiB and
# 1 MiB sequential write QD8; 4 KiB random read QD32; 1 MiB sequential
# read QD8.  Read jobs first fill their range with an untimed 1 MiB write.
#
# Then: server RSS (VmRSS and VmHWM) after 1 GiB of 1 MiB writes to a
# 4 GiB disk, for all three servers; and journal bytes per guest byte
# (segment file bytes / logical bytes written, from the store) for each
# rewind write job, median over runs.
#
# Last, the disk under the images, measured on the same file system in
# the same run, because it bounds what any server that keeps every guest
# byte can do: sustained sequential write (dd oflag=direct, 2 GiB) — the
# most a journal can absorb once the page cache's dirty limit is reached
# (qemu-nbd overwriting one 256 MiB range in the page cache is not bound
# by it) — and 4 KiB write + fdatasync at QD1 (fio psync), overwriting
# written blocks (one data write and one cache flush per cycle: the floor
# of a flush after every write) and into a fresh sparse file (every write
# allocates, so every fdatasync also commits the file system's journal:
# what nbdkit's file plugin pays).
#
# Env: RUNTIME (s per job, default 5), RUNS (default 3), JOBS (a subset:
# space-separated job names from the table), RAW=FILE (append every
# measurement as a line, for later analysis), NO_RSS=1 (skip the RSS
# measurement), NO_DISK=1 (skip the disk measurement).  A longer RUNTIME
# (e.g. RUNTIME=20 JOBS=sw64k-qd8) shows the sequential write jobs at
# the disk's sustained rate instead of the page cache's.
set -u
B=${1:-build}
top=$(cd "$(dirname "$0")/.." && pwd)
R=$top/$B/rewind
RUNTIME=${RUNTIME:-5}
RUNS=${RUNS:-3}
DISK=4G
for t in fio qemu-nbd nbdkit python3; do
	command -v $t >/dev/null || { echo "bench/capture.sh: needs $t" >&2; exit 1; }
done
fio --enghelp 2>/dev/null | grep -qw nbd || { echo "fio lacks the nbd engine" >&2; exit 1; }
T=$(mktemp -d /tmp/rwbench.XXXXXX)
PID=
stop_server() {
	[ -n "$PID" ] || return 0
	kill "$PID" 2>/dev/null
	wait "$PID" 2>/dev/null
	PID=
}
cleanup() { stop_server; rm -rf "$T"; }
trap cleanup EXIT

# name rw bs qd numjobs fio-extra
ALLJOBS=(
	"rw4k-qd1 randwrite 4k 1 1"
	"rw4k-qd32 randwrite 4k 32 1"
	"rw4k-qd1-flush randwrite 4k 1 1 --fsync=1"
	"rw4k-qd32-flush randwrite 4k 32 1 --fsync=1"
	"rw4k-qd32x4conn randwrite 4k 32 4"
	"sw64k-qd8 write 64k 8 1"
	"sw1m-qd8 write 1m 8 1"
	"rr4k-qd32 randread 4k 32 1"
	"sr1m-qd8 read 1m 8 1"
)
SERVERS=(rewind qemu nbdkit)

# start_server NAME: a fresh image / store; sets PID and URI
start_server() {
	rm -rf "$T/s" "$T/raw.img" "$T/q.sock" "$T/k.sock"
	local sock
	case $1 in
	rewind)
		"$R" init --store "$T/s" >/dev/null &&
		"$R" create --store "$T/s" vm1 --size $DISK >/dev/null || exit 1
		"$R" serve --store "$T/s" 2>>"$T/serve.log" & PID=$!
		sock=$T/s/rewind.sock URI="nbd+unix:///vm1?socket=$sock" ;;
	qemu)
		truncate -s $DISK "$T/raw.img"
		qemu-nbd -f raw -t -k "$T/q.sock" --cache=writeback --aio=threads \
			"$T/raw.img" & PID=$!
		sock=$T/q.sock URI="nbd+unix:///?socket=$sock" ;;
	nbdkit)
		truncate -s $DISK "$T/raw.img"
		nbdkit -f -U "$T/k.sock" file "$T/raw.img" & PID=$!
		sock=$T/k.sock URI="nbd+unix:///?socket=$sock" ;;
	esac
	for _ in $(seq 1 200); do [ -S "$sock" ] && return 0; sleep 0.05; done
	echo "bench/capture.sh: $1 did not start" >&2
	exit 1
}

# run_fio URI RW BS QD NJ [extra...] -> "iops mibps"
run_fio() {
	local uri=$1 rw=$2 bs=$3 qd=$4 nj=$5
	shift 5
	timeout -s KILL $((RUNTIME + 60)) fio --name=b --ioengine=nbd --uri="$uri" \
		--rw=$rw --bs=$bs --iodepth=$qd --numjobs=$nj --size=256M \
		--offset_increment=256M --time_based --runtime=$RUNTIME \
		--group_reporting --output-format=json "$@" 2>/dev/null |
	python3 -c '
import json, sys
t = sys.stdin.read()
try:
    j = json.loads(t[t.index("{"):])["jobs"][0]
    op = j["write"] if j["write"]["io_bytes"] else j["read"]
    print("%.0f %.2f" % (op["iops"], op["bw"] / 1024))
except Exception:
    print("0 0")'
}

fill() { # URI NJ: write the jobs' ranges once (untimed)
	timeout -s KILL 120 fio --name=f --ioengine=nbd --uri="$1" --rw=write \
		--bs=1m --iodepth=8 --numjobs=$2 --size=256M --offset_increment=256M \
		>/dev/null 2>&1
}

journal_ratio() { # of the stopped rewind store: journal bytes / guest bytes
	local jb
	jb=$(du -sb --apparent-size "$T/s/disks/vm1/journal" | cut -f1)
	"$R" list --store "$T/s" --records --json | python3 -c '
import json, sys
d = json.load(sys.stdin)["disks"][0]["journal"]
print("%.4f" % (int(sys.argv[1]) / d["write_bytes"] if d["write_bytes"] else 0))' "$jb"
}

sel=()
for j in "${ALLJOBS[@]}"; do
	set -- $j
	if [ -z "${JOBS:-}" ] || [[ " $JOBS " == *" $1 "* ]]; then sel+=("$j"); fi
done
OUT=$T/results
: >"$OUT"
echo "capture benchmark: ${#sel[@]} jobs x ${#SERVERS[@]} servers x $RUNS runs, ${RUNTIME}s each" >&2
for run in $(seq 1 "$RUNS"); do
	for j in "${sel[@]}"; do
		set -- $j
		name=$1 rw=$2 bs=$3 qd=$4 nj=$5
		shift 5
		for k in 0 1 2; do  # rotate the order per run
			srv=${SERVERS[$(( (k + run) % 3 ))]}
			start_server $srv
			case $rw in *read) fill "$URI" "$nj" ;; esac
			read -r iops mibs < <(run_fio "$URI" $rw $bs $qd $nj "$@")
			stop_server
			ratio=-
			if [ $srv = rewind ] && [[ $rw != *read ]]; then
				ratio=$(journal_ratio)
				[ -n "$ratio" ] || ratio=-
			fi
			echo "$run $name $srv $iops $mibs $ratio" >>"$OUT"
			printf '  run %d %-18s %-7s %9s IOPS %9s MiB/s\n' "$run" "$name" \
				"$srv" "$iops" "$mibs" >&2
		done
	done
done
[ -n "${RAW:-}" ] && cat "$OUT" >>"$RAW"

# RSS after 1 GiB of writes to a 4 GiB disk.
RSS=$T/rss
: >"$RSS"
[ -n "${NO_RSS:-}" ] && SERVERS_RSS=() || SERVERS_RSS=("${SERVERS[@]}")
for srv in "${SERVERS_RSS[@]}"; do
	start_server $srv
	timeout -s KILL 300 fio --name=r --ioengine=nbd --uri="$URI" --rw=write \
		--bs=1m --iodepth=8 --size=1G >/dev/null 2>&1
	echo "$srv $(awk '/^VmRSS/ { r = $2 } /^VmHWM/ { h = $2 } END { print r, h }' \
		/proc/$PID/status)" >>"$RSS"
	stop_server
done

# The disk itself (see the header).
DISKF=$T/disk
: >"$DISKF"
if [ -z "${NO_DISK:-}" ]; then
	dd if=/dev/zero of="$T/dd.img" bs=1M count=2048 oflag=direct 2>&1 |
		awk '/copied/ { for (i = 1; i <= NF; i++) if ($i == "s,") s = $(i - 1)
				print "seq", 2048 / s }' >>"$DISKF"
	rm -f "$T/dd.img"
	disk_fio() { # NAME: 4 KiB randwrite + fdatasync, QD1, on $T/df.img
		timeout -s KILL $((RUNTIME + 60)) fio --name=d --filename="$T/df.img" \
			--ioengine=psync --rw=randwrite --bs=4k --size=256M \
			--fdatasync=1 --time_based --runtime=$RUNTIME \
			--output-format=json 2>/dev/null | python3 -c '
import json, sys
t = sys.stdin.read()
try:
    print(sys.argv[1], "%.0f" % json.loads(t[t.index("{"):])["jobs"][0]["write"]["iops"])
except Exception:
    pass' "$1" >>"$DISKF"
	}
	rm -f "$T/df.img"
	truncate -s 256M "$T/df.img"
	disk_fio fsync-alloc
	dd if=/dev/zero of="$T/df.img" bs=1M count=256 conv=fdatasync 2>/dev/null
	disk_fio fsync-overwrite
	rm -f "$T/df.img"
fi

python3 - "$OUT" "$RSS" "$RUNS" "$DISKF" <<'EOF'
import sys, statistics as st
res, rss, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
data, jr, order = {}, {}, []
for line in open(res):
    run, name, srv, iops, mibs, ratio = line.split()
    if name not in order:
        order.append(name)
    v = float(iops) if name.startswith(("rw4k", "rr4k")) else float(mibs)
    data.setdefault((name, srv), []).append(v)
    if ratio != "-":
        jr.setdefault(name, []).append(float(ratio))
def cell(name, srv):
    v = data.get((name, srv), [0])
    return st.median(v), min(v), max(v)
print("capture benchmark (medians of %d runs; range in brackets; 4k jobs in IOPS, others MiB/s)" % runs)
print("%-18s %26s %26s %26s %8s %8s" % ("job", "rewind", "qemu-nbd", "nbdkit-file", "/qemu", "/nbdkit"))
for name in order:
    cs = [cell(name, s) for s in ("rewind", "qemu", "nbdkit")]
    f = lambda c: ("%9.0f [%6.0f-%6.0f]" if name.startswith(("rw4k", "rr4k"))
                   else "%9.1f [%6.1f-%6.1f]") % c
    r = lambda a, b: "%.2f" % (a / b) if b else "-"
    print("%-18s %26s %26s %26s %8s %8s" % (name, f(cs[0]), f(cs[1]), f(cs[2]),
          r(cs[0][0], cs[1][0]), r(cs[0][0], cs[2][0])))
print()
print("server RSS after 1 GiB of 1 MiB writes to a 4 GiB disk (MiB): ", end="")
print(", ".join("%s %.1f (peak %.1f)" % (l.split()[0], int(l.split()[1]) / 1024,
      int(l.split()[2]) / 1024) for l in open(rss) if len(l.split()) == 3))
if jr:
    print("journal bytes per guest byte (median): " +
          ", ".join("%s %.4f" % (n, st.median(v)) for n, v in jr.items()))
dk = dict(l.split() for l in open(sys.argv[4]) if len(l.split()) == 2)
if dk:
    print("the disk itself: sustained write %s MiB/s (dd oflag=direct); "
          "4 KiB write+fdatasync QD1: %s/s overwriting, %s/s allocating" %
          tuple("%.0f" % float(dk[k]) if k in dk else "-"
                for k in ("seq", "fsync-overwrite", "fsync-alloc")))
EOF
