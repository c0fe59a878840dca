#!/usr/bin/env bash
# metrics.sh — `rewind serve --metrics` and `rewind stats`, end to end:
#  - every scrape parses with prometheus_client's parser and a strict
#    checker of the 0.0.4 grammar (HELP/TYPE before samples, one family
#    block each, label escaping, histogram buckets cumulative to +Inf);
#  - a known workload (nbdsh: N writes of M bytes, zeroes, a trim, K
#    flushes) moves the counters by exactly N, M, K, the zero/trim bytes
#    and the flush histogram count; the other disk's do not move;
#  - rewind_journal_bytes = the sum of the segment file sizes, and
#    rewind_journal_records = the records `rewind list --records` counts;
#  - capture lag is 0 after a flush; `rewind stats --json` gives the same
#    numbers with a server and without one (live figures null then);
#  - 404 / 405 / 431 for bad requests, and the server stays up;
#  - a non-loopback --metrics is refused without --metrics-public;
#  - compaction results land in STORE/compact.stats and the figures;
#  - with the journal's fdatasync held back (REWIND_FAULTS fsync delay),
#    capture lag grows, /healthz turns 503 past --lag-crit and is logged,
#    and both recover after the flush.
. "$(dirname "$0")/functions.sh"
requires curl
have_nbdsh || { echo "SKIP: nbdsh (python3-libnbd) is not installed"; exit 77; }
/usr/bin/python3 -c 'import prometheus_client.parser' 2>/dev/null ||
	{ echo "SKIP: python3-prometheus-client is not installed"; exit 77; }
set -e
rw_setup
"$REWIND" create vm1 --size 32M >/dev/null
"$REWIND" create 'vm2' --size 16M >/dev/null

cat >"$TMP/prom.py" <<'EOF'
# prom.py URL|FILE — parse an exposition strictly; print {"name{labels}": value}
import json, math, re, sys, urllib.request
from prometheus_client.parser import text_string_to_metric_families
src = sys.argv[1]
text = urllib.request.urlopen(src).read().decode() if src.startswith("http") else open(src).read()
NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LV = r'"(?:[^"\\\n]|\\\\|\\"|\\n)*"'
LABELS = r"\{(?:%s=%s(?:,%s=%s)*)?\}" % ("[a-zA-Z_][a-zA-Z0-9_]*", LV, "[a-zA-Z_][a-zA-Z0-9_]*", LV)
VALUE = r"(?:[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)|NaN|[+-]Inf)"
SAMPLE = re.compile(r"^(%s)(%s)? (%s)(?: -?\d+)?$" % (NAME, LABELS, VALUE))
HELP = re.compile(r"^# HELP (%s) (?:[^\\\n]|\\\\|\\n)*$" % NAME)
TYPE = re.compile(r"^# TYPE (%s) (counter|gauge|histogram|summary|untyped)$" % NAME)
assert text.endswith("\n"), "exposition must end with a newline"
types, seen_done, cur = {}, set(), None
for ln in text.split("\n")[:-1]:
    m = HELP.match(ln) or TYPE.match(ln)
    if m:
        fam = m.group(1)
        assert fam not in seen_done or fam == cur, "family %s split in two blocks" % fam
        if ln.startswith("# TYPE"):
            assert fam not in types, "two TYPE lines for " + fam
            types[fam] = m.group(2)
        if cur and cur != fam:
            seen_done.add(cur)
        cur = fam
        continue
    assert not ln.startswith("#"), "bad comment line: " + ln
    m = SAMPLE.match(ln)
    assert m, "line does not match the 0.0.4 grammar: %r" % ln
    base = re.sub(r"_(bucket|sum|count)$", "", m.group(1)) if types.get(re.sub(r"_(bucket|sum|count)$", "", m.group(1))) == "histogram" else m.group(1)
    assert base == cur, "sample %s outside its family block (%s)" % (m.group(1), cur)
out = {}
for fam in text_string_to_metric_families(text):
    assert fam.type == types.get(fam.name, fam.type) or types.get(fam.name + "_total") == fam.type, fam.name
    buckets = {}
    for s in fam.samples:
        lab = ",".join('%s="%s"' % (k, v) for k, v in sorted(s.labels.items()))
        out["%s{%s}" % (s.name, lab)] = s.value
        if s.name.endswith("_bucket"):
            key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            buckets.setdefault(key, []).append((float(s.labels["le"]), s.value))
    for key, b in buckets.items():
        assert b[-1][0] == math.inf, "histogram without +Inf bucket"
        assert all(b[i][1] <= b[i + 1][1] for i in range(len(b) - 1)), "buckets not cumulative"
        lab = ",".join('%s="%s"' % kv for kv in key)
        assert out["%s_count{%s}" % (fam.name, lab)] == b[-1][1], "+Inf != _count"
print(json.dumps(out))
EOF
prom() { /usr/bin/python3 "$TMP/prom.py" "$@"; }
# get FILE KEY — one value from prom's output
get() { "$PYTHON" -c 'import json,sys; v=json.load(open(sys.argv[1]))[sys.argv[2]]; print(int(v) if v == int(v) else v)' "$1" "$2"; }
jget() { "$PYTHON" -c '
import json, sys
d = json.load(open(sys.argv[1]))
x = [x for x in d["disks"] if x["name"] == sys.argv[2]][0]
for k in sys.argv[3].split("."):
    x = x[k]
print("null" if x is None else int(x) if isinstance(x, (int, float)) and x == int(x) else x)' "$@"; }
seg_bytes() { local t=0 f; for f in "$STORE/disks/$1/journal/"[0-9]*; do [ -f "$f" ] && t=$((t + $(stat -c %s "$f"))); done; echo $t; }


# start_metrics_server [VAR=VALUE...] -- [serve options]: a server with
# --metrics on a random free port (picks another when the port is taken).
start_metrics_server() {
	local envs=() i
	while [ "$1" != -- ]; do envs+=("$1"); shift; done
	shift
	for i in $(seq 1 20); do
		PORT=$((20000 + RANDOM % 40000))
		rm -f "$SOCK"
		env ${envs[@]+"${envs[@]}"} "$REWIND" serve --store "$STORE" \
			--metrics "127.0.0.1:$PORT" "$@" >>"$TMP/server.log" 2>&1 &
		SERVER_PID=$!
		if wait_for_socket "$SOCK"; then return 0; fi
		wait "$SERVER_PID" 2>/dev/null || true
		SERVER_PID=
		grep -q "in use" "$TMP/server.log" || fail "server did not come up"
	done
	fail "no free port"
}
M() { echo "http://127.0.0.1:$PORT$1"; }
code() { curl -s -o /dev/null -w '%{http_code}' "$@"; }

start_metrics_server -- --lag-warn 5s --lag-crit 30s
U=$(uri vm1)
sleep 0.2
prom "$(M /metrics)" >"$TMP/a.json" || fail "first scrape does not parse"
check "scrape parses (prometheus_client + strict 0.0.4 checker)"
expect_eq "rewind_up" "$(get "$TMP/a.json" 'rewind_up{}')" 1
expect_eq "capture lag of an idle disk" "$(get "$TMP/a.json" 'rewind_capture_lag_seconds{disk="vm1"}')" 0

# --- a known workload: 5 writes (M bytes), 2 zeroes, 1 trim, 3 flushes
N=5 K=3
MB=$((4096 + 4096 + 65536 + 1048576 + 12288))
ZB=$((8192 + 1048576)) TB=65536
run_nbdsh -u "$U" -c '
h.pwrite(b"\x01" * 4096, 0)
h.pwrite(b"\x02" * 4096, 8192)
h.flush()
h.pwrite(bytes(range(256)) * 256, 1 << 20)
h.pwrite(b"\x03" * 1048576, 4 << 20)
h.flush()
h.zero(8192, 16384)
h.zero(1048576, 8 << 20)
h.trim(65536, 12 << 20)
h.pwrite(b"\x04" * 12288, 98304)
h.flush()
' || fail "nbdsh workload"
sleep 0.3   # the index follows within ~50 ms
prom "$(M /metrics)" >"$TMP/b.json" || fail "second scrape does not parse"
d() { echo $(( $(get "$TMP/b.json" "$1") - $(get "$TMP/a.json" "$1") )); }
expect_eq "writes_total delta" "$(d 'rewind_writes_total{disk="vm1"}')" $N
expect_eq "write_bytes_total delta" "$(d 'rewind_write_bytes_total{disk="vm1"}')" $MB
expect_eq "flushes_total delta" "$(d 'rewind_flushes_total{disk="vm1"}')" $K
expect_eq "zero_bytes_total delta" "$(d 'rewind_zero_bytes_total{disk="vm1"}')" $ZB
expect_eq "trim_bytes_total delta" "$(d 'rewind_trim_bytes_total{disk="vm1"}')" $TB
expect_eq "flushes_anticipated_total delta (no write+flush run of 4)" \
	"$(d 'rewind_flushes_anticipated_total{disk="vm1"}')" 0
expect_eq "flush histogram count delta" "$(d 'rewind_flush_duration_seconds_count{disk="vm1"}')" $K
expect_eq "errors_total{journal}" "$(get "$TMP/b.json" 'rewind_errors_total{disk="vm1",kind="journal"}')" 0
expect_eq "vm2 writes_total unchanged" "$(d 'rewind_writes_total{disk="vm2"}')" 0
expect_eq "capture lag after the flush" "$(get "$TMP/b.json" 'rewind_capture_lag_seconds{disk="vm1"}')" 0
expect_eq "index lag records" "$(get "$TMP/b.json" 'rewind_index_lag_records{disk="vm1"}')" 0
expect_eq "journal_bytes = sum of segment file sizes" \
	"$(get "$TMP/b.json" 'rewind_journal_bytes{disk="vm1"}')" "$(seg_bytes vm1)"
journal_snapshot
expect_eq "journal_records = rewind list --records" \
	"$(get "$TMP/b.json" 'rewind_journal_records{disk="vm1"}')" "$(journal_field vm1 records)"
expect_eq "journal_segments" "$(get "$TMP/b.json" 'rewind_journal_segments{disk="vm1"}')" \
	"$(ls "$STORE/disks/vm1/journal/" | grep -c '^[0-9]\{20\}$')"
hb=$(get "$TMP/b.json" 'rewind_head_bytes{disk="vm1"}')
[ "$hb" -ge "$MB" ] || fail "head_bytes $hb below what was written"
check "head_bytes $hb >= data written"
cr=$(get "$TMP/b.json" 'rewind_compression_ratio{disk="vm1"}')
"$PYTHON" -c "import sys; sys.exit(0 if float('$cr') > 1 else 1)" || fail "compression ratio $cr"
check "compression ratio $cr > 1 (repetitive data)"

# --- rewind stats --json with the server: the same numbers
"$REWIND" stats --json >"$TMP/s.json" || fail "rewind stats --json"
expect_eq "stats: server" "$("$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["server"])' <"$TMP/s.json")" True
for k in journal_bytes journal_records journal_segments writes_total write_bytes_total flushes_total flushes_anticipated_total zero_bytes_total trim_bytes_total; do
	expect_eq "stats --json $k" "$(jget "$TMP/s.json" vm1 $k)" "$(get "$TMP/b.json" "rewind_$k{disk=\"vm1\"}")"
done
"$REWIND" stats vm1 | grep -q "server running" || fail "rewind stats text"
"$REWIND" stats nosuch >/dev/null 2>&1 && fail "stats of an unknown disk succeeded"
check "rewind stats of an unknown disk fails"

# --- a guest flushing after every write, one request at a time: after
# four such pairs the server syncs ahead of each flush (pairs 5..8)
run_nbdsh -u "$U" -c '
for i in range(8):
    h.pwrite(bytes([i + 1]) * 4096, 65536 * i)
    h.flush()
' || fail "nbdsh write+flush pairs"
prom "$(M /metrics)" >"$TMP/f.json" || fail "scrape after the pairs does not parse"
expect_eq "flushes_anticipated_total after 8 write+flush pairs" \
	"$(( $(get "$TMP/f.json" 'rewind_flushes_anticipated_total{disk="vm1"}') - $(get "$TMP/b.json" 'rewind_flushes_anticipated_total{disk="vm1"}') ))" 4
expect_eq "capture lag after the pairs (the last marker holds no data)" \
	"$(get "$TMP/f.json" 'rewind_capture_lag_seconds{disk="vm1"}')" 0
run_nbdsh -u "$U" -c '
for i in range(8):
    assert h.pread(4096, 65536 * i) == bytes([i + 1]) * 4096
' || fail "the pairs' data read back"
check "the pairs' data reads back"

# --- bad requests get their codes; the server stays up
expect_eq "unknown path" "$(code "$(M /nope)")" 404
expect_eq "POST" "$(code -X POST -d x "$(M /metrics)")" 405
expect_eq "PUT" "$(code -X PUT -d x "$(M /healthz)")" 405
big=$(head -c 65536 /dev/zero | tr '\0' a)
expect_eq "huge header" "$(code -H "X-Big: $big" "$(M /metrics)")" 431
/usr/bin/python3 - "$PORT" <<'EOF' || fail "raw garbage"
import socket, sys
for junk in (b"\x00\xff garbage\r\n\r\n", b"GET /metrics HTTP/9.9\r\n\r\n", b"GET"):
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    s.sendall(junk)
    s.shutdown(socket.SHUT_WR)
    s.settimeout(10)
    while s.recv(4096):
        pass
    s.close()
EOF
expect_eq "after bad requests, /healthz" "$(code "$(M /healthz)")" 200
kill -0 "$SERVER_PID" || fail "server died"
stop_server
check "server exits 0 on SIGTERM (metrics thread stopped)"

# --- without a server
"$REWIND" stats --json >"$TMP/o.json" || fail "offline rewind stats --json"
expect_eq "offline: server" "$("$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["server"])' <"$TMP/o.json")" False
expect_eq "offline: capture lag" "$(jget "$TMP/o.json" vm1 capture_lag_seconds)" null
expect_eq "offline: writes_total" "$(jget "$TMP/o.json" vm1 writes_total)" null
expect_eq "offline: journal_bytes" "$(jget "$TMP/o.json" vm1 journal_bytes)" "$(seg_bytes vm1)"
journal_snapshot
expect_eq "offline: journal_records" "$(jget "$TMP/o.json" vm1 journal_records)" "$(journal_field vm1 records)"
expect_eq "offline: index lag" "$(jget "$TMP/o.json" vm1 index_lag_records)" 0
"$REWIND" stats | grep -q "n/a (no server)" || fail "offline text report lacks n/a"
check "offline text marks live figures n/a (no server)"

# --- compaction results are recorded for every process
"$REWIND" compact --retain 1h >/dev/null || fail "rewind compact"
"$REWIND" stats --json --retain 1h >"$TMP/c.json"
expect_eq "compaction runs ok" "$(jget "$TMP/c.json" vm1 compaction_runs_total.ok)" 1
[ "$(jget "$TMP/c.json" vm1 compaction_last_success_timestamp_seconds)" != null ] || fail "no last success"
expect_eq "backlog with --retain 1h" "$(jget "$TMP/c.json" vm1 compaction_backlog_bytes)" 0
expect_eq "backlog without retention" "$(jget "$TMP/o.json" vm1 compaction_backlog_bytes)" null

# --- loopback only unless --metrics-public
if "$REWIND" serve --store "$STORE" --metrics 0.0.0.0:1 >"$TMP/pub.log" 2>&1; then
	fail "non-loopback --metrics accepted"
fi
grep -q "loopback" "$TMP/pub.log" || fail "refusal does not say why: $(cat "$TMP/pub.log")"
check "non-loopback --metrics refused without --metrics-public"

# --- capture lag with the journal's fdatasync held back
start_metrics_server REWIND_FAULTS=fsync:delay:2500 -- --lag-warn 1s --lag-crit 2s --head-sync 1h
expect_eq "healthz before" "$(code "$(M /healthz)")" 200
run_nbdsh -u "$U" -c 'h.pwrite(b"\x05" * 4096, 0)' || fail "write"
sleep 2.6
prom "$(M /metrics)" >"$TMP/l.json"
lag=$(get "$TMP/l.json" 'rewind_capture_lag_seconds{disk="vm1"}')
"$PYTHON" -c "import sys; sys.exit(0 if float('$lag') >= 2 else 1)" || fail "lag $lag < 2 s"
check "capture lag grows while nothing is durable ($lag s)"
expect_eq "healthz past --lag-crit" "$(code "$(M /healthz)")" 503
curl -s "$(M /healthz)" | grep -q "capture lag" || fail "healthz does not say why"
"$REWIND" stats vm1 | grep -q "critical" || fail "stats does not show the critical state"
grep -q "critical: disk 'vm1': capture lag" "$TMP/server.log" || fail "crossing not logged"
check "crossing logged, visible in /healthz and rewind stats"
run_nbdsh -u "$U" -c 'h.flush()' || fail "flush"
sleep 0.7
prom "$(M /metrics)" >"$TMP/m.json"
expect_eq "capture lag after the flush" "$(get "$TMP/m.json" 'rewind_capture_lag_seconds{disk="vm1"}')" 0
expect_eq "healthz after the flush" "$(code "$(M /healthz)")" 200
grep -q "disk 'vm1': back to normal" "$TMP/server.log" || fail "recovery not logged"
fl=$(get "$TMP/m.json" 'rewind_flush_duration_seconds_bucket{disk="vm1",le="2.5"}')
expect_eq "the slow flush is above the 2.5 s bucket" "$fl" 0
kill9_server || true   # a clean stop would wait for more delayed fsyncs

# --- history cut below --history-warn of the retention is an event
start_metrics_server -- --retain 1h --compact-every 1h --history-warn 80%
expect_eq "healthz with full history" "$(code "$(M /healthz)")" 200
run_nbdsh -u "$U" -c 'h.pwrite(b"\x06" * 4096, 0); h.flush()' || fail "write"
sleep 0.3
"$REWIND" compact --before now vm1 >/dev/null || fail "compact --before now"
for i in $(seq 1 50); do
	grep -q "warning: disk 'vm1': history" "$TMP/server.log" && break
	sleep 0.1
done
grep -q "warning: disk 'vm1': history" "$TMP/server.log" || fail "history cut not logged"
"$REWIND" stats vm1 | grep -q "warning: disk 'vm1': history" || fail "stats does not show it"
expect_eq "healthz on a warning (not critical)" "$(code "$(M /healthz)")" 200
curl -s "$(M /healthz)" | grep -q "warning: disk 'vm1': history" || fail "healthz does not list the warning"
prom "$(M /metrics)" >"$TMP/h.json"
expect_eq "rewind_health of vm1" "$(get "$TMP/h.json" 'rewind_health{disk="vm1"}')" 1
check "history below 80% of the retention: logged, in stats, /healthz, rewind_health"
stop_server
check "done"
