#!/usr/bin/env bash
# bench/capture.sh [BUILD_DIR] — guest-visible write throughput of
# `rewind serve` against qemu-nbd serving a raw file (the baseline), same
# machine, same run, same fio jobs (fio's nbd engine over a unix socket).
# Prints IOPS and MiB/s per job and the ratio rewind/qemu-nbd; also the
# compression ratio the journal achieved on compressible data.
# Env: RUNTIME (s per job, default 10), SIZE (default 1G).
set -u
B=${1:-build}
top=$(cd "$(dirname "$0")/.." && pwd)
R=$top/$B/rewind
RUNTIME=${RUNTIME:-10}
SIZE=${SIZE:-1G}
for t in fio qemu-nbd; do
	command -v $t >/dev/null || { echo "bench/capture.sh: needs $t" >&2; exit 1; }
done
fio --enghelp 2>/dev/null | grep -qw nbd || { echo "fio lacks the nbd engine" >&2; exit 1; }
T=$(mktemp -d /tmp/rwbench.XXXXXX)
SPID= QPID=
cleanup() {
	[ -n "$SPID" ] && kill "$SPID" 2>/dev/null && wait "$SPID" 2>/dev/null
	[ -n "$QPID" ] && kill "$QPID" 2>/dev/null && wait "$QPID" 2>/dev/null
	rm -rf "$T"
}
trap cleanup EXIT

JOBS=("randwrite 4k 32 1" "randwrite 4k 32 4" "write 256k 8 1" "write 1m 4 2" "randread 4k 32 1")
run_fio() { # URI RW BS QD NJ [extra] -> "iops mibps"
	fio --name=b --ioengine=nbd --uri="$1" --rw=$2 --bs=$3 --iodepth=$4 \
		--numjobs=$5 --size=256M --offset_increment=256M --time_based \
		--runtime=$RUNTIME --group_reporting --output-format=json ${6:-} 2>/dev/null |
	python3 -c '
import json, sys
t = sys.stdin.read()
j = json.loads(t[t.index("{"):])["jobs"][0]
op = j["write"] if j["write"]["io_bytes"] else j["read"]
print("%.0f %.1f" % (op["iops"], op["bw"] / 1024))'
}

"$R" init --store "$T/s" >/dev/null
"$R" create --store "$T/s" vm1 --size $SIZE >/dev/null
"$R" serve --store "$T/s" 2>"$T/serve.log" & SPID=$!
truncate -s $SIZE "$T/raw.img"
qemu-nbd -f raw -t -k "$T/q.sock" --cache=writeback --aio=threads "$T/raw.img" & QPID=$!
for i in $(seq 1 100); do [ -S "$T/s/rewind.sock" ] && [ -S "$T/q.sock" ] && break; sleep 0.05; done
RU="nbd+unix:///vm1?socket=$T/s/rewind.sock"
QU="nbd+unix:///?socket=$T/q.sock"
printf '%-24s %12s %12s %12s %12s %8s\n' job rewind-IOPS rewind-MiB/s qemu-IOPS qemu-MiB/s ratio
for j in "${JOBS[@]}"; do
	set -- $j
	read -r ri rb < <(run_fio "$RU" "$@")
	read -r qi qb < <(run_fio "$QU" "$@")
	printf '%-24s %12s %12s %12s %12s %8s\n' "$1 bs=$2 qd=$3 jobs=$4" "$ri" "$rb" "$qi" "$qb" \
		"$(python3 -c "print('%.2f' % ($rb / $qb if $qb else 0))")"
done
read -r ri rb < <(run_fio "$RU" write 64k 8 1 "--buffer_compress_percentage=50 --refill_buffers")
read -r qi qb < <(run_fio "$QU" write 64k 8 1 "--buffer_compress_percentage=50 --refill_buffers")
printf '%-24s %12s %12s %12s %12s %8s\n' "write 64k 50%-compr." "$ri" "$rb" "$qi" "$qb" \
	"$(python3 -c "print('%.2f' % ($rb / $qb if $qb else 0))")"
kill "$SPID"; wait "$SPID"; SPID=
grep "compressed" "$T/serve.log" | sed 's/.*info: //'
"$R" list --store "$T/s" --records --json | python3 -c '
import json, sys
d = json.load(sys.stdin)["disks"][0]["journal"]
print("journal: %d records, %.1f MiB logical writes, %.1f MiB stored (ratio %.2f)" % (
    d["records"], d["write_bytes"] / 2**20, d["stored_bytes"] / 2**20,
    d["stored_bytes"] / d["write_bytes"] if d["write_bytes"] else 1))'
