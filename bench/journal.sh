#!/usr/bin/env bash
# journal.sh BUILD_DIR — the journal benchmark behind `make bench-journal`.
#
# Appends TOTAL (1 GiB) of 4 KiB and of 64 KiB records with a flush every
# 1 MiB through BUILD_DIR/bench/bench_journal and sets the result next to
# fio's buffered sequential write (io_uring, same block size, fdatasync
# every 1 MiB, end_fsync) of the same amount on the same filesystem.
# Runs are interleaved (fio, rewind, rewind without compression, fio, ...)
# REPS times and medians are compared, so a noisy neighbour or a
# writeback storm hits both sides alike.  Then a zstd level table: the
# journal's speed and ratio at each level in LEVELS, and zstd alone on one
# core, which is what JR_ZSTD_LEVEL_DEFAULT is chosen from.
#
# The data is realistic, and built once into BUILD_DIR/bench-data: a
# 512 MiB ext4 image made by `mke2fs -d` from an evenly spaced sample of
# /usr (every k-th file, so binaries, libraries, text and compressed
# archives all appear), followed by 512 MiB from /dev/urandom.
#
# Exits non-zero when a target is missed (64 KiB compressed >= 0.7x fio,
# 4 KiB compressed >= 0.5x fio) or a run fails; a benchmark that only
# prints proves nothing.
#
# Knobs (environment): REPS (3), TOTAL (bytes, 1 GiB), LEVELS
# ("-3 -2 -1 1 2"), LEVEL_REPS (1), BACKEND (uring), POOL (the writer's
# compression workers, jr_writer_opts.compress_threads; nproc), THREADS
# (nproc; 1 = no multi-thread row), SKIP_LEVELS=1.
#
# The target rows are the issue's single appending thread, with the
# writer's POOL compression workers (append queues, workers compress; a
# flush stores raw what no worker has started — raw_when_behind, the
# default: compression never makes a flush wait, so the ratio printed is
# what the journal really got).  Each rep also runs, for comparison, the
# same with the flush compressing those records itself (-c: best ratio,
# flush waits for zstd), the single appender compressing in
# its own thread (no workers: the journal before the workers existed) and
# THREADS appenders without workers (own zstd context each, same flush
# count), as an NBD server with several requests in flight would.  Those
# rows are informational.
set -euo pipefail

B=${1:-build}
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

REPS=${REPS:-3}
TOTAL=${TOTAL:-$((1024 * 1024 * 1024))}
LEVELS=${LEVELS:-"-3 -2 -1 1 2"}
LEVEL_REPS=${LEVEL_REPS:-1}
BACKEND=${BACKEND:-uring}
THREADS=${THREADS:-$(nproc)}
POOL=${POOL:-$(nproc)}
FLUSH=$((1024 * 1024))
DEFAULT_LEVEL=$(sed -n 's/^#define JR_ZSTD_LEVEL_DEFAULT (\{0,1\}\(-\{0,1\}[0-9]*\).*/\1/p' journal/jr.h)
DEFAULT_LEVEL=${DEFAULT_LEVEL:-1}

bin="$top/$B/bench/bench_journal"
data_dir="$top/$B/bench-data"
data="$data_dir/usr-ext4-512m+random-512m.bin"

die() { echo "journal.sh: $*" >&2; exit 1; }

for t in fio mke2fs python3 timeout tar; do
	command -v "$t" >/dev/null || die "needs '$t' (scripts/deps.sh bench)"
done
[ -x "$bin" ] || die "no $bin; run 'make bench-journal'"

# Everything temporary lives under one directory on the filesystem the
# journal and fio write to, removed on any exit.
mkdir -p "$data_dir"
work=$(mktemp -d "$top/$B/bench-journal.XXXXXX")
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------------ data

# Prints, NUL-separated and relative to /, an evenly spaced sample of the
# regular files under /usr whose 4 KiB-rounded sizes add up to $1 bytes.
sample_usr() {
	python3 - "$1" <<'EOF'
import os, sys
budget = int(sys.argv[1])
files = []
for root, dirs, names in os.walk('/usr'):
    dirs.sort()
    for n in sorted(names):
        p = os.path.join(root, n)
        try:
            st = os.lstat(p)
        except OSError:
            continue
        if not os.path.isfile(p) or os.path.islink(p) or st.st_size == 0:
            continue
        if not os.access(p, os.R_OK):
            continue
        files.append((p, (st.st_size + 4095) // 4096 * 4096))
total = sum(s for _, s in files)
stride = max(1, -(-total // budget))
used = 0
out = sys.stdout.buffer
for i in range(0, len(files), stride):
    p, s = files[i]
    if used + s > budget:
        continue
    used += s
    out.write(p[1:].encode('utf-8', 'surrogateescape') + b'\0')
EOF
}

build_data() {
	local stage="$work/stage" img="$work/usr.img" budget
	echo "building the data set (once): ext4 image of a /usr sample + random" >&2
	# mke2fs -d fails when the content does not fit; shrink until it does.
	for budget in 380 320 260 200; do
		rm -rf "$stage" "$img"
		mkdir -p "$stage"
		sample_usr $((budget * 1024 * 1024)) >"$work/files"
		tar -C / --null -T "$work/files" --ignore-failed-read -cf - 2>/dev/null |
			tar -C "$stage" -xf -
		if mke2fs -q -F -t ext4 -N 65536 -d "$stage" "$img" 512M >/dev/null 2>&1; then
			break
		fi
		rm -f "$img"
	done
	[ -f "$img" ] || die "mke2fs -d could not build the image"
	rm -rf "$stage"
	head -c $((512 * 1024 * 1024)) /dev/urandom >>"$img"
	mv "$img" "$data"
}

if [ ! -f "$data" ] || [ "$(stat -c %s "$data")" -ne $((1024 * 1024 * 1024)) ]; then
	t0=$SECONDS
	build_data
	echo "data set built in $((SECONDS - t0)) s: $data" >&2
fi

# ------------------------------------------------------------------ runs

# fio_run BS — prints fio's write bandwidth (bytes/s; its runtime includes
# the end_fsync) and the mean fdatasync latency in µs.
fio_run() {
	local bs=$1 out="$work/fio.json" f="$work/fio.dat"
	rm -f "$f"
	if ! timeout -s KILL 300 fio --name=seqwrite --filename="$f" \
		--ioengine=io_uring --rw=write --bs="$bs" --size="$TOTAL" \
		--fdatasync=$((FLUSH / bs)) --direct=0 --end_fsync=1 \
		--output-format=json >"$out" 2>"$work/fio.err"; then
		cat "$work/fio.err" >&2
		die "fio failed or timed out (bs $bs)"
	fi
	rm -f "$f"
	python3 -c 'import json,sys; j=json.load(open(sys.argv[1]))["jobs"][0]; print(json.dumps({"mib_s": j["write"]["bw_bytes"] / 1048576, "sync_lat_us": j["sync"]["lat_ns"]["mean"] / 1000}))' "$out"
}

# rw_run BS LEVEL [bench_journal options...] — prints bench_journal's JSON.
rw_run() {
	local bs=$1 level=$2 j="$work/journal" rc=0
	shift 2
	rm -rf "$j"
	timeout -s KILL 300 "$bin" "$@" -- "$j" "$data" "$bs" "$TOTAL" "$FLUSH" \
		"$level" "$BACKEND" >"$work/rw.json" || rc=$?
	rm -rf "$j"
	[ $rc -eq 3 ] && { cat "$work/rw.json"; return 0; }   # level refused
	[ $rc -eq 0 ] || die "bench_journal failed (bs $bs, level $level, exit $rc)"
	cat "$work/rw.json"
}

# zstd_run BS LEVEL TOTAL — zstd alone over the first TOTAL bytes.
zstd_run() {
	"$bin" -m zstd -- "$work/unused" "$data" "$1" "$3" 0 "$2" "$BACKEND" ||
		die "zstd-only run failed (bs $1, level $2)"
}

# Every result is one line "KIND BS REP-OR-LEVEL {json}" in $runs; the
# report at the end reads them all.
runs="$work/runs"
: >"$runs"
record() { local line; line=$("${@:4}") || exit 1; echo "$1 $2 $3 $line" >>"$runs"; }
last() { tail -n1 "$runs" | cut -d' ' -f4- | python3 -c 'import json,sys; print("%.1f" % json.load(sys.stdin)["mib_s"])'; }

t_start=$SECONDS
echo "rewind journal benchmark: $((TOTAL / 1048576)) MiB per run, flush every 1 MiB, backend $BACKEND, $REPS interleaved reps"
echo "filesystem: $(findmnt -n -o FSTYPE,SOURCE -T "$work" | tr -s ' ') ($work)  cpus: $(nproc)  $(fio --version)"
psi() { sed -n 's/^some avg10=[^ ]* avg60=\([^ ]*\).*/\1%/p' /proc/pressure/cpu 2>/dev/null; }
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg), CPU pressure (some, 60 s): $(psi)"
echo "(other work on this machine slows the CPU-bound side, rewind with zstd, the most)"
echo "data: 512 MiB ext4 image of a /usr sample + 512 MiB random ($data)"
echo

# Interleaved, alternating order (fio first on odd reps, last on even ones),
# so drift in the machine's load hits fio and rewind alike; each rewind run
# is compared with the fio run next to it.
for bs in 4096 65536; do
	for rep in $(seq 1 "$REPS"); do
		v=()
		[ "$rep" -eq 1 ] && v=(-v)   # read back and compare once, untimed
		msg="  bs $bs rep $rep:"
		if [ $((rep % 2)) -eq 1 ]; then
			record fio "$bs" "$rep" fio_run "$bs"; msg+=" fio $(last)"
			record rw "$bs" "$rep" rw_run "$bs" "$DEFAULT_LEVEL" -p "$POOL" "${v[@]}"; msg+=" rewind $(last)"
			record cb "$bs" "$rep" rw_run "$bs" "$DEFAULT_LEVEL" -p "$POOL" -c "${v[@]}"; msg+=" compress-behind $(last)"
			record nw "$bs" "$rep" rw_run "$bs" "$DEFAULT_LEVEL" "${v[@]}"; msg+=" no-workers $(last)"
			record raw "$bs" "$rep" rw_run "$bs" 0 "${v[@]}"; msg+=" no-zstd $(last)"
			if [ "$THREADS" -gt 1 ]; then
				record mt "$bs" "$rep" rw_run "$bs" "$DEFAULT_LEVEL" -t "$THREADS" "${v[@]}"; msg+=" $THREADS-thread $(last)"
			fi
		else
			if [ "$THREADS" -gt 1 ]; then
				record mt "$bs" "$rep" rw_run "$bs" "$DEFAULT_LEVEL" -t "$THREADS" "${v[@]}"; msg+=" $THREADS-thread $(last)"
			fi
			record raw "$bs" "$rep" rw_run "$bs" 0 "${v[@]}"; msg+=" no-zstd $(last)"
			record nw "$bs" "$rep" rw_run "$bs" "$DEFAULT_LEVEL" "${v[@]}"; msg+=" no-workers $(last)"
			record cb "$bs" "$rep" rw_run "$bs" "$DEFAULT_LEVEL" -p "$POOL" -c "${v[@]}"; msg+=" compress-behind $(last)"
			record rw "$bs" "$rep" rw_run "$bs" "$DEFAULT_LEVEL" -p "$POOL" "${v[@]}"; msg+=" rewind $(last)"
			record fio "$bs" "$rep" fio_run "$bs"; msg+=" fio $(last)"
		fi
		echo "$msg MiB/s" >&2
	done
done

if [ "${SKIP_LEVELS:-0}" != 1 ]; then
	for bs in 4096 65536; do
		for level in 0 $LEVELS; do
			for rep in $(seq 1 "$LEVEL_REPS"); do
				record lvl "$bs" "$level" rw_run "$bs" "$level" -p "$POOL"
			done
			[ "$level" = 0 ] && continue
			record zstd "$bs" "$level" zstd_run "$bs" "$level" "$TOTAL"
			record zext4 "$bs" "$level" zstd_run "$bs" "$level" $((512 * 1024 * 1024))
		done
		echo "  bs $bs: level table done" >&2
	done
fi

echo
rc=0
python3 - "$runs" "$DEFAULT_LEVEL" "$LEVELS" "$THREADS" "$POOL" >"$work/report" <<'EOF' || rc=$?
import json, statistics, sys
from collections import defaultdict

runs = defaultdict(list)          # (kind, bs, key) -> [json]
for line in open(sys.argv[1]):
    kind, bs, key, js = line.rstrip('\n').split(' ', 3)
    runs[(kind, int(bs), key)].append(json.loads(js))
default = sys.argv[2]
levels = sys.argv[3].split()
pool = int(sys.argv[5])
kinds = [('rw', 'zstd %s, %d workers' % (default, pool)),
         ('cb', 'zstd %s, %d wk, flush zstd' % (default, pool)),
         ('nw', 'zstd %s, no workers' % default),
         ('raw', 'no compression')]
if int(sys.argv[4]) > 1:
    kinds.append(('mt', 'zstd %s, %s appenders' % (default, sys.argv[4])))
med = statistics.median

def reps(kind, bs):
    return {k: v[0] for (kd, b, k), v in runs.items() if kd == kind and b == bs}

targets = {4096: 0.5, 65536: 0.7}
missed = False
fmt = '%-29s %9s %12s %7s %11s %7s %7s %8s'
print('median over reps; ratio = median of the per-rep ratios rewind / adjacent fio run')
print(fmt % ('workload', 'fio MiB/s', 'rewind MiB/s', 'ratio', 'ratio range',
             'target', 'zstd x', 'verdict'))
for bs in (4096, 65536):
    fio = reps('fio', bs)
    fio_mib = med(x['mib_s'] for x in fio.values())
    for kind, name in kinds:
        rw = reps(kind, bs)
        ratios = sorted(rw[k]['mib_s'] / fio[k]['mib_s'] for k in rw)
        ratio = med(ratios)
        cr = med(x['ratio'] for x in rw.values())
        if kind == 'rw':
            tgt = '>=%.1f' % targets[bs]
            ok = ratio >= targets[bs]
            verdict = 'ok' if ok else 'MISS'
            missed |= not ok
        else:
            tgt = verdict = '-'
        print(fmt % ('%d KiB, %s' % (bs // 1024, name), '%.1f' % fio_mib,
                     '%.1f' % med(x['mib_s'] for x in rw.values()),
                     '%.2fx' % ratio, '%.2f-%.2f' % (ratios[0], ratios[-1]),
                     tgt, '%.2f' % cr, verdict))
print()
print('where the time goes (medians, seconds per run): append = compress + crc + queue')
print('(+ write-out when a batch fills), flush = write-out + fdatasync wait; runq =')
print('appending thread runnable but without a CPU; sync ms = mean flush, fio = fdatasync;')
print('append, flush and runq are summed over threads')
fmt2 = '%-29s %6s %7s %7s %6s %6s %6s %6s %7s %7s'
print(fmt2 % ('workload', 'wall', 'append', 'flush', 'runq', 'user', 'sys',
              'syncs', 'sync ms', 'fio ms'))
for bs in (4096, 65536):
    fio = reps('fio', bs)
    for kind, name in kinds:
        rw = list(reps(kind, bs).values())
        m = lambda f: med(x[f] for x in rw)
        print(fmt2 % ('%d KiB, %s' % (bs // 1024, name), '%.2f' % m('seconds'),
                      '%.2f' % m('append_s'), '%.2f' % m('flush_s'),
                      '%.2f' % m('runq_s'), '%.2f' % m('user_s'), '%.2f' % m('sys_s'),
                      '%d' % m('syncs'),
                      '%.2f' % med(x['flush_s'] / max(x['flushes'], 1) * 1000 for x in rw),
                      '%.2f' % (med(x['sync_lat_us'] for x in fio.values()) / 1000)))

if any(k[0] == 'lvl' for k in runs):
    print()
    print('zstd levels on the same data.  journal: jr_writer_append + flush every')
    print('1 MiB with %d workers, median of the runs; zstd alone: ZSTD_compressCCtx per record, no' % pool)
    print('I/O, MiB/s of wall time and per CPU-second (user time; robust to load)')
    fmt3 = '%-6s %6s %13s %8s %9s %13s %12s'
    print(fmt3 % ('level', 'record', 'journal MiB/s', 'zstd x', 'ext4 x',
                  'alone MiB/s', 'MiB/CPU-s'))
    for bs in (4096, 65536):
        for level in ['0'] + levels:
            lv = runs.get(('lvl', bs, level), [])
            z = runs.get(('zstd', bs, level), [None])[0]
            ze = runs.get(('zext4', bs, level), [None])[0]
            if any(x.get('rejected') for x in lv):
                jm = 'refused'
            else:
                jm = '%.1f' % med(x['mib_s'] for x in lv)
            name = 'none' if level == '0' else level + ('*' if level == default else '')
            cr = '%.2f' % (z['ratio'] if z else 1.0)
            print(fmt3 % (name, '%dK' % (bs // 1024), jm, cr,
                          '%.2f' % ze['ratio'] if ze else '1.00',
                          '%.1f' % z['mib_s'] if z else '-',
                          '%.1f' % (z['logical_bytes'] / 1048576 / z['user_s']) if z and z['user_s'] > 0 else '-'))
    print('(* = JR_ZSTD_LEVEL_DEFAULT; ext4 x = ratio on the ext4 half alone)')
sys.exit(10 if missed else 0)
EOF
cat "$work/report"
case $rc in 0) missed=0 ;; 10) missed=1 ;; *) die "the report failed (exit $rc)" ;; esac
echo
echo "benchmark took $((SECONDS - t_start)) s; load average at end: $(cut -d' ' -f1-3 /proc/loadavg), CPU pressure: $(psi)"
if [ "${missed:-0}" -ne 0 ]; then
	echo "journal.sh: a throughput target was missed" >&2
	exit 1
fi
