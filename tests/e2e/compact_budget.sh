#!/usr/bin/env bash
# compact_budget.sh — the journal size budget of `rewind serve`.
#
# --max-journal with --over-budget refuse: every write acknowledged before
# the budget was reached stays (head and restore match the model), later
# writes get ENOSPC — nothing half-journaled — and the server takes
# writes again, without a restart, once a compaction freed space.
# --over-budget compact: the scheduled compaction folds past --retain
# until the journal fits.  Options that do not go together are refused.
. "$(dirname "$0")/functions.sh"

have_nbdsh || { echo "SKIP: nbdsh (python3-libnbd) is not installed"; exit 77; }
rw_setup

usage_rc() { "$REWIND" serve --store "$STORE" "$@" >/dev/null 2>&1; echo $?; }
[ "$(usage_rc --max-journal 10M)" = 2 ] || fail "--max-journal without a policy was accepted"
[ "$(usage_rc --over-budget refuse)" = 2 ] || fail "--over-budget without a budget was accepted"
[ "$(usage_rc --max-journal 10M --over-budget maybe)" = 2 ] || fail "a bad policy was accepted"
[ "$(usage_rc --max-journal 10M --over-budget compact)" = 2 ] ||
	fail "--over-budget compact without the scheduled compaction was accepted"
[ "$(usage_rc --max-journal 0 --over-budget refuse)" = 2 ] || fail "a zero budget was accepted"
check "option combinations that do not go together are refused"

"$REWIND" create --store "$STORE" d --size 64M >/dev/null || fail "create"
BUDGET=$((96 << 20))
journal_bytes() { stat -c %s "$STORE"/disks/d/journal/* | awk '{s += $1} END {print s + 0}'; }

cat >"$TMP/w.py" <<'EOF'
# w.py URI MODEL MAX — 1 MiB random writes, each flushed, until one fails
# or MAX were made; the model image gets every acknowledged one.
import errno, nbd, os, sys, time
h = nbd.NBD(); h.connect_uri(sys.argv[1])
size = h.get_size()
model = bytearray(open(sys.argv[2], 'rb').read()) if os.path.exists(sys.argv[2]) else bytearray(size)
acked, refused = 0, 0
for i in range(int(sys.argv[3])):
    off = (i * 7 << 20) % size
    buf = os.urandom(1 << 20)
    try:
        h.pwrite(buf, off)
    except nbd.Error as e:
        refused = e.errnum
        break
    h.flush()
    model[off:off + len(buf)] = buf
    acked += 1
    time.sleep(0.005)
open(sys.argv[2], 'wb').write(model)
h.shutdown()
print(acked, refused)
EOF

# --- refuse --------------------------------------------------------------
start_server --max-journal $BUDGET --over-budget refuse
read -r acked refused < <(PATH=/usr/bin:$PATH python3 "$TMP/w.py" "$(uri d)" "$TMP/model" 600) ||
	fail "writer failed"
[ "$refused" = 28 ] || fail "no ENOSPC after $acked MiB (errno '$refused')"
[ "$acked" -ge 90 ] || fail "refused after only $acked MiB (budget 96 MiB)"
[ "$(journal_bytes)" -ge $BUDGET ] || fail "refused at $(journal_bytes) journal bytes, under the budget"
grep -q "refusing writes with ENOSPC" "$TMP/server.log" || fail "the refusal was not logged"
ob=$("$REWIND" stats --store "$STORE" d --json | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["disks"][0]["journal_over_budget"])')
[ "$ob" = 1 ] || fail "stats: journal_over_budget is '$ob', want 1"
check "writes refused with ENOSPC after $acked MiB acknowledged (journal $(journal_bytes) bytes)"

# Nothing acknowledged was lost, nothing refused was applied.
nbdcopy "$(uri d)" "$TMP/head.img" || fail "nbdcopy out"
cmp -s "$TMP/head.img" "$TMP/model" || fail "the disk differs from the acknowledged writes"
"$REWIND" restore --store "$STORE" d --at now --out "$TMP/r.img" --force >/dev/null ||
	fail "restore while refusing"
cmp -s "$TMP/r.img" "$TMP/model" || fail "restore of the latest point differs from the acknowledged writes"
check "disk and latest restore equal every acknowledged write"

# A compaction frees sealed segments; writes resume without a restart.
"$REWIND" compact --store "$STORE" d --before now >"$TMP/c.log" 2>&1 ||
	fail "compaction: $(cat "$TMP/c.log")"
[ "$(journal_bytes)" -lt $BUDGET ] || fail "compaction left $(journal_bytes) journal bytes"
ok=
for i in $(seq 1 100); do
	read -r a r < <(PATH=/usr/bin:$PATH python3 "$TMP/w.py" "$(uri d)" "$TMP/model" 1)
	[ "$a" = 1 ] && { ok=1; break; }
	sleep 0.2
done
[ -n "$ok" ] || fail "writes still refused after the compaction freed space"
grep -q "accepting writes again" "$TMP/server.log" || fail "the resumption was not logged"
ob=$("$REWIND" stats --store "$STORE" d --json | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["disks"][0]["journal_over_budget"])')
[ "$ob" = 0 ] || fail "stats: journal_over_budget is '$ob' after the compaction, want 0"
check "after compaction (journal $(journal_bytes) bytes) writes are accepted again"
stop_server
"$REWIND" verify --store "$STORE" >"$TMP/v.log" 2>&1 || fail "verify: $(tail -3 "$TMP/v.log")"
"$REWIND" restore --store "$STORE" d --at now --out "$TMP/r.img" --force >/dev/null || fail "restore"
cmp -s "$TMP/r.img" "$TMP/model" || fail "latest restore differs after the compaction"
check "verify passes; the latest point equals the model"

# --- compact -------------------------------------------------------------
start_server --retain 1000d --compact-every 1s --max-journal $BUDGET --over-budget compact
read -r acked refused < <(PATH=/usr/bin:$PATH python3 "$TMP/w.py" "$(uri d)" "$TMP/model" 200) ||
	fail "writer failed"
[ "$refused" = 0 ] || fail "a write failed (errno $refused) with --over-budget compact"
# The current segment cannot be freed: the job gets the journal under the
# budget or down to it.
fits=
for i in $(seq 1 150); do
	[ "$(journal_bytes)" -le $((BUDGET + (64 << 20))) ] && { fits=1; break; }
	sleep 0.2
done
[ -n "$fits" ] || fail "journal still $(journal_bytes) bytes with --over-budget compact"
stop_server
oldest=$("$REWIND" timeline --store "$STORE" d --json | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["range"]["oldest_seq"])')
[ "$oldest" -gt 1 ] || fail "the horizon did not move (oldest seq $oldest)"
"$REWIND" restore --store "$STORE" d --at now --out "$TMP/r.img" --force >/dev/null || fail "restore"
cmp -s "$TMP/r.img" "$TMP/model" || fail "latest restore differs after budget compaction"
check "$acked MiB written with --over-budget compact: journal $(journal_bytes) bytes, oldest seq $oldest, latest exact"
