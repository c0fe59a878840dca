#!/usr/bin/env bash
# restore.sh BUILD_DIR — the restore benchmark behind `make bench-restore`.
#
# Builds a 4 GiB disk with 2 GiB of history, all written through
# `rewind serve` with real NBD clients from a realistic data file: epoch 0
# is nbdcopy of 1 GiB (an ext4 image of a /usr sample + random, the data
# set of bench/journal.sh, built here if missing) to the start of the disk,
# epochs 1..8 are 128 MiB each of overwrites (4 KiB .. 1 MiB, queue depth
# 16, libnbd) at random places of the whole disk, with a mark after every
# epoch.  Then, with the server stopped:
#
#  (a) full restore as-of a random point of the history (`rewind restore`,
#      which fsyncs its image) against `qemu-img convert -O raw` of a raw
#      copy of head of the same size on the same filesystem, followed by an
#      fsync of its output — same bytes out, same durability.  Target:
#      rewind >= 0.8x qemu-img's speed.
#  (b) rollback of the last 1% of the history (`rewind rollback`), only if
#      the command exists.  Target: <= 2% of the full restore's time.
#  (c) export read throughput: nbdcopy of `rewind export` as-of a point vs
#      nbdcopy of qemu-nbd serving the raw copy, only if `rewind export`
#      exists.  Target >= 0.7x.
#  (d) time from starting `rewind export` to the first byte read, only if
#      it exists.  Target < 100 ms.
#
# REPS (3) interleaved runs, alternating which side goes first; medians of
# the per-rep ratios.  Exits non-zero when a target is missed or a run
# fails.  Knobs (environment): REPS, SIZE_G (4), EPOCHS (8), EPOCH_MIB (128).
set -euo pipefail

B=${1:-build}
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
REWIND="$top/$B/rewind"
REPS=${REPS:-3}
SIZE_G=${SIZE_G:-4}
EPOCHS=${EPOCHS:-8}
EPOCH_MIB=${EPOCH_MIB:-128}
SIZE=$((SIZE_G << 30))
if [ -x /usr/bin/python3 ]; then PY=/usr/bin/python3; else PY=python3; fi

die() { echo "restore.sh: $*" >&2; exit 1; }
for t in qemu-img nbdcopy timeout; do
	command -v "$t" >/dev/null || die "needs '$t' (scripts/deps.sh bench: qemu-utils, libnbd-bin)"
done
"$PY" -c 'import nbd' 2>/dev/null || die "needs the libnbd Python binding (python3-libnbd)"
[ -x "$REWIND" ] || die "no $REWIND; run 'make'"

data_dir="$top/$B/bench-data"
data="$data_dir/usr-ext4-512m+random-512m.bin"
work=$(mktemp -d "$top/$B/bench-restore.XXXXXX")
export REWIND_STORE="$work/store"
# a private copy: a rebuild of the tree during the run must not pull the
# binary away
cp "$REWIND" "$work/rewind"
REWIND="$work/rewind"
pids=()
cleanup() {
	local p
	for p in "${pids[@]}"; do
		kill -TERM "$p" 2>/dev/null && { wait "$p" 2>/dev/null || true; }
	done
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

has_cmd() { "$REWIND" --help | grep -q "^  $1 "; }
now() { date +%s.%N; }
secs() { echo "$2 - $1" | bc -l; }

# wait_sock PATH PID
wait_sock() {
	local i
	for i in $(seq 1 6000); do
		[ -S "$1" ] && return 0
		kill -0 "$2" 2>/dev/null || return 1
		sleep 0.01
	done
	return 1
}

# ------------------------------------------------------------------ data
if [ ! -f "$data" ] || [ "$(stat -c %s "$data")" -ne $((1 << 30)) ]; then
	# `make bench-journal` builds it (an ext4 image of a /usr sample +
	# random); without it, a stand-in of the same shape: a tar of /usr
	# files padded to 512 MiB, then 512 MiB random
	echo "building a stand-in data set (run make bench-journal for the real one)" >&2
	mkdir -p "$data_dir"
	tmpd="$work/data.tmp"
	(find /usr -type f -readable -size -4M -print0 2>/dev/null | tar --null -T - -cf - 2>/dev/null || true) |
		head -c $((512 << 20)) >"$tmpd"
	truncate -s $((512 << 20)) "$tmpd"
	head -c $((512 << 20)) /dev/urandom >>"$tmpd"
	mv "$tmpd" "$data"
fi

echo "rewind restore benchmark: ${SIZE_G} GiB disk, history: 1 GiB nbdcopy + $EPOCHS x $EPOCH_MIB MiB overwrites, $REPS interleaved reps"
echo "filesystem: $(findmnt -n -o FSTYPE,SOURCE -T "$work" | tr -s ' ') ($work)  cpus: $(nproc)  load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "data: $data"

# ------------------------------------------------------------------ history
"$REWIND" init >/dev/null
"$REWIND" create vm1 --size "$SIZE" >/dev/null
"$REWIND" serve >"$work/serve.log" 2>&1 &
spid=$!
pids+=("$spid")
wait_sock "$REWIND_STORE/rewind.sock" "$spid" || { cat "$work/serve.log"; die "server did not start"; }
uri="nbd+unix:///vm1?socket=$REWIND_STORE/rewind.sock"

t0=$(now)
timeout -s KILL 600 nbdcopy "$data" "$uri" || die "nbdcopy epoch 0"
"$REWIND" mark vm1 epoch0 >/dev/null
echo "  epoch 0: nbdcopy 1 GiB in $(printf %.1f "$(secs "$t0" "$(now)")") s" >&2
for e in $(seq 1 "$EPOCHS"); do
	t0=$(now)
	timeout -s KILL 600 "$PY" - "$uri" "$data" "$e" $((EPOCH_MIB << 20)) "$SIZE" <<'EOF' || die "epoch $e"
import nbd, os, random, sys
uri, data, epoch, total, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
r = random.Random(epoch)
fd = os.open(data, os.O_RDONLY)
dsize = os.fstat(fd).st_size
h = nbd.NBD()
h.connect_uri(uri)
live = {}
def reap():
    while True:
        try:
            c = h.aio_peek_command_completed()
        except nbd.Error:
            return
        if not c:
            return
        h.aio_command_completed(c)
        live.pop(c, None)
done = 0
while done < total:
    n = r.choice((4096, 16384, 65536, 262144, 1048576))
    off = r.randrange(0, size - n) // 4096 * 4096
    src = r.randrange(0, dsize - n) // 4096 * 4096
    buf = nbd.Buffer.from_bytearray(bytearray(os.pread(fd, n, src)))
    while h.aio_in_flight() >= 16:
        h.poll(-1)
        reap()
    live[h.aio_pwrite(buf, off)] = buf
    done += n
while h.aio_in_flight() > 0:
    h.poll(-1)
reap()
h.flush()
h.shutdown()
EOF
	"$REWIND" mark vm1 "epoch$e" >/dev/null
	echo "  epoch $e: $EPOCH_MIB MiB of overwrites in $(printf %.1f "$(secs "$t0" "$(now)")") s" >&2
done
kill -TERM "$spid"
wait "$spid" || die "server exited $? on SIGTERM"
pids=()
"$REWIND" journal vm1 --summary --headers | tail -n 1
head="$REWIND_STORE/disks/vm1/head.img"
echo "head: $(du -h --apparent-size "$head" | cut -f1) apparent, $(du -h "$head" | cut -f1) allocated"
cp --sparse=always "$head" "$work/head.raw"
sync -f "$work/head.raw"
"$REWIND" journal vm1 --json --headers >"$work/journal.json"
read -r first_ts last_ts last_seq < <("$PY" -c '
import json, sys
s = json.load(open(sys.argv[1]))["summary"]
print(s["first_ts_ns"], s["last_ts_ns"], s["last_seq"])' "$work/journal.json")

# a random point of the history after epoch 0 (seeded per rep; a point
# inside the initial 1 GiB copy would make restoring it unfairly cheap),
# as the @EPOCH time of a random record
e0=$("$REWIND" marks vm1 --json | "$PY" -c '
import json, sys
print([m["seq"] for m in json.load(sys.stdin)["marks"] if m["label"] == "epoch0"][0])')
point() {
	"$PY" -c '
import json, random, sys
recs = [r for r in json.load(open(sys.argv[1]))["records"] if r["seq"] > int(sys.argv[2])]
t = random.Random(1000 + int(sys.argv[3])).choice(recs)["ts_ns"]
print("@%d.%09d" % (t // 10**9, t % 10**9))' "$work/journal.json" "$e0" "$1"
}

runs="$work/runs"
: >"$runs"

# ------------------------------------------------------------------ (a)
run_qemu() {
	rm -f "$work/q.raw"
	local t0 t1
	t0=$(now)
	timeout -s KILL 600 qemu-img convert -f raw -O raw "$work/head.raw" "$work/q.raw" || die "qemu-img convert"
	sync "$work/q.raw"
	t1=$(now)
	echo "a qemu $1 $(secs "$t0" "$t1") $(du -B1 "$work/q.raw" | cut -f1)" >>"$runs"
	rm -f "$work/q.raw"
}
run_restore() {
	rm -f "$work/r.raw"
	local t0 t1 at
	at=$(point "$1")
	t0=$(now)
	timeout -s KILL 600 "$REWIND" restore vm1 --at "$at" --out "$work/r.raw" --json >"$work/r.json" || die "rewind restore --at $at"
	t1=$(now)
	[ "$(stat -c %s "$work/r.raw")" -eq "$SIZE" ] || die "restored image has the wrong size"
	rm -f "$work/r.raw"
	echo "a rewind $1 $(secs "$t0" "$t1") $(tr -d ' ' <"$work/r.json")" >>"$runs"
}
for rep in $(seq 1 "$REPS"); do
	if [ $((rep % 2)) -eq 1 ]; then run_qemu "$rep"; run_restore "$rep"; else run_restore "$rep"; run_qemu "$rep"; fi
	echo "  (a) rep $rep: $(grep "^a qemu $rep " "$runs" | cut -d' ' -f4 | xargs printf 'qemu-img %.2f s') $(grep "^a rewind $rep " "$runs" | cut -d' ' -f4 | xargs printf 'rewind %.2f s')" >&2
done

# ------------------------------------------------------------------ (b)
if has_cmd rollback; then
	# the last 1% of the history: as-of the seq 1% of the records back
	back=$((last_seq - last_seq / 100))
	for rep in $(seq 1 "$REPS"); do
		t0=$(now)
		timeout -s KILL 600 "$REWIND" rollback vm1 --at "seq:$back" >"$work/rb.log" 2>&1 || { cat "$work/rb.log"; die "rewind rollback"; }
		t1=$(now)
		echo "b rewind $rep $(secs "$t0" "$t1")" >>"$runs"
		# a rollback is history too: the next rep rolls back the last 1%
		# of the history as it now stands
		back=$(( $("$REWIND" journal vm1 --summary --json --headers | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["summary"]["last_seq"])') ))
		back=$((back - last_seq / 100))
	done
fi

# ------------------------------------------------------------------ (c), (d)
if has_cmd export; then
	command -v qemu-nbd >/dev/null || die "needs qemu-nbd (qemu-utils)"
	# one Python process spawns the export, so its own start-up is not
	# counted: first byte = spawn to the first 512 bytes read (connecting
	# as soon as the socket exists); then nbdcopy reads it all
	run_export() {
		local at
		at=$(point "$1")
		rm -f "$work/exp.sock"
		"$PY" - "$REWIND" "$at" "$work/exp.sock" "$work/exp.log" "$1" >>"$runs" <<'PYX' || { cat "$work/exp.log"; die "rewind export"; }
import nbd, os, subprocess, sys, time
rw, at, sock, logp, rep = sys.argv[1:6]
log = open(logp, "w")
t0 = time.monotonic()
p = subprocess.Popen([rw, "export", "vm1", "--at", at, "--socket", sock], stdout=log, stderr=log)
try:
    while True:
        if p.poll() is not None:
            sys.exit("export exited %d" % p.returncode)
        try:
            h = nbd.NBD()
            h.connect_unix(sock)
            break
        except nbd.Error:
            if time.monotonic() - t0 > 60:
                raise
            time.sleep(0.0005)
    h.pread(512, 0)
    t1 = time.monotonic()
    h.shutdown()
    subprocess.run(["timeout", "-s", "KILL", "600", "nbdcopy",
                    "nbd+unix:///vm1?socket=" + sock, "null:"], check=True)
    t2 = time.monotonic()
finally:
    if p.poll() is None:
        p.terminate()
    p.wait()
print("d rewind %s %.6f" % (rep, t1 - t0))
print("c rewind %s %.6f" % (rep, t2 - t1))
PYX
	}
	run_qemunbd() {
		local sock="$work/qn.sock" t0 t1 p
		rm -f "$sock"
		qemu-nbd -t -r -f raw -x vm1 -k "$sock" "$work/head.raw" &
		p=$!
		pids+=("$p")
		wait_sock "$sock" "$p" || die "qemu-nbd did not start"
		t0=$(now)
		timeout -s KILL 600 nbdcopy "nbd+unix:///vm1?socket=$sock" null: || die "nbdcopy from qemu-nbd"
		t1=$(now)
		kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true
		echo "c qemu $1 $(secs "$t0" "$t1")" >>"$runs"
	}
	for rep in $(seq 1 "$REPS"); do
		if [ $((rep % 2)) -eq 1 ]; then run_qemunbd "$rep"; run_export "$rep"; else run_export "$rep"; run_qemunbd "$rep"; fi
	done
fi

# ------------------------------------------------------------------ report
echo
rc=0
"$PY" - "$runs" "$SIZE" "$(has_cmd rollback && echo 1 || echo 0)" "$(has_cmd export && echo 1 || echo 0)" <<'EOF' || rc=$?
import json, statistics, sys
from collections import defaultdict
runs = defaultdict(dict)
for line in open(sys.argv[1]):
    f = line.split()
    runs[(f[0], f[1])][int(f[2])] = float(f[3])
size = int(sys.argv[2])
have_rb, have_exp = sys.argv[3] == "1", sys.argv[4] == "1"
med = statistics.median
mib = size / 1048576
fmt = "%-34s %16s %18s %8s %9s %7s"
print("medians over reps; ratio = median of the per-rep ratios")
print(fmt % ("measure", "rewind", "peer", "ratio", "target", "verdict"))
missed = False
q, r = runs[("a", "qemu")], runs[("a", "rewind")]
ratios = [q[k] / r[k] for k in r if k in q]
ra = med(ratios)
ok = ra >= 0.8
missed |= not ok
print(fmt % ("(a) full restore, %d GiB" % (size >> 30),
             "%.2fs %4.0fMiB/s" % (med(r.values()), mib / med(r.values())),
             "qemu-img %.2fs" % med(q.values()), "%.2fx" % ra, ">=0.80x",
             "ok" if ok else "MISS"))
if have_rb:
    b = runs[("b", "rewind")]
    frac = med(b.values()) / med(r.values())
    ok = frac <= 0.02
    missed |= not ok
    print(fmt % ("(b) rollback of the last 1%", "%.3fs" % med(b.values()),
                 "restore %.2fs" % med(r.values()), "%.2f%%" % (100 * frac), "<=2%",
                 "ok" if ok else "MISS"))
else:
    print(fmt % ("(b) rollback of the last 1%", "-", "-", "-", "<=2%", "n/a: no 'rewind rollback'"))
if have_exp:
    ce, cq = runs[("c", "rewind")], runs[("c", "qemu")]
    rc_ = med([cq[k] / ce[k] for k in ce if k in cq])
    ok = rc_ >= 0.7
    missed |= not ok
    print(fmt % ("(c) export read, nbdcopy", "%.2fs %4.0fMiB/s" % (med(ce.values()), mib / med(ce.values())),
                 "qemu-nbd %.2fs" % med(cq.values()), "%.2fx" % rc_, ">=0.70x", "ok" if ok else "MISS"))
    d = med(runs[("d", "rewind")].values())
    ok = d < 0.1
    missed |= not ok
    print(fmt % ("(d) export start to first byte", "%.1fms" % (d * 1000), "-", "-", "<100ms",
                 "ok" if ok else "MISS"))
else:
    print(fmt % ("(c) export read, nbdcopy", "-", "-", "-", ">=0.70x", "n/a: no 'rewind export'"))
    print(fmt % ("(d) export start to first byte", "-", "-", "-", "<100ms", "n/a: no 'rewind export'"))
dirs = []
for line in open(sys.argv[1]):
    f = line.split(" ", 4)
    if f[0] == "a" and f[1] == "rewind" and len(f) > 4:
        j = json.loads(f[4])
        dirs.append("rep %s: rewind seq %d %s %.2fs, %.0f MiB of data" % (
            f[2], j["seq"], j["direction"], j["seconds"], j["bytes_written"] / 1048576))
    if f[0] == "a" and f[1] == "qemu" and len(f) > 4:
        dirs.append("rep %s: qemu-img %.0f MiB allocated" % (f[2], int(f[4]) / 1048576))
print("runs: " + "; ".join(dirs))
# per-rep figures, for ranges (the medians above are what the targets use)
rep = lambda xs: ", ".join("%.2f" % v for v in xs)
print("per rep: (a) ratio %s" % rep(sorted(ratios)))
if have_rb:
    print("per rep: (b) rollback s %s" % rep(sorted(runs[("b", "rewind")].values())))
if have_exp:
    print("per rep: (c) ratio %s; (d) ms %s" % (
        rep(sorted(cq[k] / ce[k] for k in ce if k in cq)),
        rep(sorted(1000 * v for v in runs[("d", "rewind")].values()))))
sys.exit(1 if missed else 0)
EOF
# the host is often shared: say how busy it was by the end, too
echo "load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ $rc -eq 0 ]; then echo "bench-restore: every target met"; else echo "bench-restore: a target was missed"; fi
exit $rc
