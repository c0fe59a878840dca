#!/usr/bin/env bash
# capture_lost_tail.sh — a journal that lost its tail after the index took
# the records in (what a power loss does to records no flush covered: the
# index commits them once they are written out, head.img holds their
# bytes).  Two disks write in turn, each write followed by a flush; then
# the end of vm1's segment is cut off at a record boundary, as if those
# pages never reached the disk.  The restarted server must:
#   - say so, naming the disk and the seqs;
#   - set every block the lost records touched back in head.img (a write
#     over an older version, a write to a fresh block, a zero over data);
#   - drop the lost records from the index, but keep vm2's record whose
#     seq lies among them (one clock for all disks);
#   - never reuse a lost seq;
# and `rewind verify` must then find the index and journals consistent,
# and a restore as-of now equal the live disk.
. "$(dirname "$0")/functions.sh"
requires qemu-io nbdcopy
have_nbdsh || { echo "SKIP: nbdsh (python3-libnbd) is not installed"; exit 77; }
rw_setup

"$REWIND" create vm1 --size 8M >/dev/null || fail "create vm1"
"$REWIND" create vm2 --size 8M >/dev/null || fail "create vm2"
start_server
run_nbdsh -c "
h1 = nbd.NBD(); h1.connect_uri('$(uri vm1)')
h2 = nbd.NBD(); h2.connect_uri('$(uri vm2)')
def w(h, byte, blk): h.pwrite(bytes([byte]) * 4096, blk * 4096); h.flush()
w(h1, 0x11, 1)
w(h2, 0x21, 1)
w(h1, 0x12, 2)
# vm1 loses everything from here on
w(h1, 0x13, 1)
w(h2, 0x22, 2)
w(h1, 0x14, 3)
h1.zero(4096, 2 * 4096); h1.flush()
h1.shutdown(); h2.shutdown()
" || fail "nbdsh writes"
stop_server
check "two disks written in turn, each write flushed"

# vm1's records: write, flush, write, flush, then the lost ones.
"$REWIND" journal vm1 --json --headers >"$TMP/j1.json" || fail "journal vm1"
read -r seg at lost_first lost_last < <("$PYTHON" -c '
import json, sys
r = json.load(open(sys.argv[1]))["records"]
print(r[4]["segment"], r[4]["at"], r[4]["seq"], r[-1]["seq"])' "$TMP/j1.json")
[ "$lost_last" -gt "$lost_first" ] || fail "unexpected journal of vm1"
segf=$STORE/disks/vm1/journal/$(printf %020d "$seg")
truncate -s "$at" "$segf" || fail "truncate $segf"
check "cut vm1's journal before seq $lost_first (seqs $lost_first..$lost_last lost)"

start_server
grep -q "disk 'vm1': the journal ends at seq $((lost_first - 1)) but the index holds records up to seq $lost_last" \
	"$TMP/server.log" || fail "no warning naming the lost seqs"
grep -q "disk 'vm1': rewrote 3 blocks of head.img as of seq $((lost_first - 1))" \
	"$TMP/server.log" || fail "head.img repair did not rewrite blocks 1-3"
grep -q "disk 'vm2': the journal ends" "$TMP/server.log" && fail "vm2 lost nothing"
check "the server named the lost records and rewrote 3 blocks"

PATH=/usr/bin:$PATH qemu-io -f raw \
	-c "read -P 0x11 4096 4096" -c "read -P 0x12 8192 4096" \
	-c "read -P 0 12288 4096" "$(uri vm1)" >"$TMP/qio1" 2>&1 &&
	! grep -q "verification failed" "$TMP/qio1" ||
	{ cat "$TMP/qio1"; fail "vm1 does not read as at seq $((lost_first - 1))"; }
PATH=/usr/bin:$PATH qemu-io -f raw \
	-c "read -P 0x21 4096 4096" -c "read -P 0x22 8192 4096" \
	"$(uri vm2)" >"$TMP/qio2" 2>&1 && ! grep -q "verification failed" "$TMP/qio2" ||
	{ cat "$TMP/qio2"; fail "vm2 changed"; }
check "vm1 reads as it was before the lost records; vm2 is untouched"

live1=$(live_sha "$(uri vm1)") || fail "nbdcopy vm1"
run_nbdsh -c "
h = nbd.NBD(); h.connect_uri('$(uri vm1)')
h.pwrite(b'\x15' * 4096, 4 * 4096); h.flush(); h.shutdown()
" || fail "write after the repair"
stop_server
new_seq=$(last_seq vm1)
[ "$new_seq" -gt "$lost_last" ] ||
	fail "the write after the repair got seq $new_seq, reusing a lost seq (<= $lost_last)"
check "the next write got seq $new_seq, after every lost seq"

"$REWIND" verify >"$TMP/verify.txt" 2>&1 || { cat "$TMP/verify.txt"; fail "verify after the repair"; }
check "rewind verify: index and journals agree"
expect_eq "restore vm1 as-of seq $((lost_first - 1)) == live disk after the repair" \
	"$(restore_sha vm1 "seq:$((lost_first - 1))")" "$live1"
"$REWIND" restore vm2 --at now --out "$TMP/v2.img" --force >/dev/null || fail "restore vm2"
"$PYTHON" -c '
import sys
b = open(sys.argv[1], "rb").read()
assert b[4096:8192] == b"\x21" * 4096 and b[8192:12288] == b"\x22" * 4096
' "$TMP/v2.img" || fail "vm2 restored wrong"
check "vm2 restores with its record from inside the lost range"

# Once more on vm2, and this time a restore is the first to open the
# store: it must recover it (as the server would) before reading.
start_server
run_nbdsh -c "
h = nbd.NBD(); h.connect_uri('$(uri vm2)')
h.pwrite(b'\x23' * 4096, 3 * 4096); h.flush()
h.pwrite(b'\x24' * 4096, 1 * 4096); h.flush(); h.shutdown()
" || fail "vm2 writes"
stop_server
"$REWIND" journal vm2 --json --headers >"$TMP/j2.json" || fail "journal vm2"
read -r seg at < <("$PYTHON" -c '
import json, sys
r = [x for x in json.load(open(sys.argv[1]))["records"] if x["type"] == "write"]
print(r[-1]["segment"], r[-1]["at"])' "$TMP/j2.json")
truncate -s "$at" "$STORE/disks/vm2/journal/$(printf %020d "$seg")" || fail "truncate vm2"
"$REWIND" restore vm2 --at now --out "$TMP/v2b.img" --force >/dev/null 2>"$TMP/restore.err" ||
	{ cat "$TMP/restore.err"; fail "restore of a store that lost its tail"; }
grep -q "recovering the store first" "$TMP/restore.err" || fail "restore did not recover the store"
grep -q "disk 'vm2': rewrote 1 blocks of head.img" "$TMP/restore.err" || fail "restore's recovery did not repair head"
"$PYTHON" -c '
import sys
b = open(sys.argv[1], "rb").read()
assert b[4096:8192] == b"\x21" * 4096 and b[12288:16384] == b"\x23" * 4096
' "$TMP/v2b.img" || fail "vm2 restored with the lost write"
"$REWIND" verify >"$TMP/verify.txt" 2>&1 || { cat "$TMP/verify.txt"; fail "verify after the restore's recovery"; }
check "a restore opening the store first recovers it, then restores without the lost write"

# And an export: cut vm1's newest write (0x15 at block 4, made after the
# first repair); the export recovers the store, then serves it read-only.
"$REWIND" journal vm1 --json --headers >"$TMP/j3.json" || fail "journal vm1"
read -r seg at < <("$PYTHON" -c '
import json, sys
r = [x for x in json.load(open(sys.argv[1]))["records"] if x["type"] == "write"]
print(r[-1]["segment"], r[-1]["at"])' "$TMP/j3.json")
truncate -s "$at" "$STORE/disks/vm1/journal/$(printf %020d "$seg")" || fail "truncate vm1"
"$REWIND" export vm1 --at now --socket "$TMP/x.sock" >"$TMP/export.out" 2>"$TMP/export.err" &
EXTRA_PIDS="$EXTRA_PIDS $!"
for _ in $(seq 1 500); do [ -S "$TMP/x.sock" ] && break; sleep 0.02; done
[ -S "$TMP/x.sock" ] || { cat "$TMP/export.err"; fail "export did not start"; }
grep -q "recovering the store first" "$TMP/export.err" || fail "export did not recover the store"
PATH=/usr/bin:$PATH qemu-io -r -f raw -c "read -P 0 16384 4096" -c "read -P 0x11 4096 4096" \
	"nbd+unix:///vm1?socket=$TMP/x.sock" >"$TMP/qio3" 2>&1 && ! grep -q "verification failed" "$TMP/qio3" ||
	{ cat "$TMP/qio3"; fail "the export shows the lost write"; }
check "an export opening the store first recovers it, then serves it without the lost write"
echo "PASS"
