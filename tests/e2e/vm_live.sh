#!/usr/bin/env bash
# vm_live.sh — `rewind vm protect --live`: a running guest moves onto
# rewind without stopping.  The guest (tests/e2e/vm/init, 'rwhold') writes
# its blocks and stays up; protect --live creates empty store disks of the
# same size, starts `rewind serve`, block-copies the disk onto the export
# with synchronous writes and pivots.  Checks: the live and persistent XML
# name the export, the store disk holds exactly the image's contents, the
# initial copy was folded into base (no journal history left from it), and
# after a restart the guest reads its blocks through rewind and its new
# writes are journaled.
. "$(dirname "$0")/functions.sh"
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
build=${REWIND_BUILD:-$top/build}
. "$here/vm/lib.sh"

IMG=$TMP/guest.raw
truncate -s 8M "$IMG"
for b in 0 1 2 3; do
	printf 'rewind-guest vda boot=0 blk=%d ' "$b" |
		dd of="$IMG" bs=4096 seek="${blkoff[$b]}" conv=notrunc,sync status=none
done
domxml "$DOM" " rwhold" "    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='$IMG'/>
      <target dev='vda' bus='virtio'/>
    </disk>" >"$TMP/dom.xml"
V define "$TMP/dom.xml" >/dev/null || fail "virsh define"

expect_fail "--live on a shut-off domain" "--live protects running domains" \
	"$REWIND" vm protect --store "$STORE" --connect "$URI" --live "$DOM"
boot hold
expect_eq "guest read block 0 from its image" "$(guest_read vda 0)" "rewind-guest vda boot=0 blk=0"
cp --sparse=always "$IMG" "$TMP/expect.raw"   # the guest holds: no more writes

"$REWIND" vm protect --store "$STORE" --connect "$URI" --live "$DOM" || fail "vm protect --live"
[ "$(V domstate "$DOM")" = running ] || fail "the domain stopped during protect --live"
V dumpxml "$DOM" | grep -q "protocol='nbd' name='$DOM-vda'" || fail "live XML does not run on the export"
V dumpxml --inactive "$DOM" | grep -q "protocol='nbd' name='$DOM-vda'" || fail "persistent XML not redefined"
check "the running domain pivoted onto the rewind export; persistent XML redefined"
at_now vda "$TMP/now.raw"
cmp "$TMP/expect.raw" "$TMP/now.raw" || fail "the store disk differs from the image"
check "the store disk holds exactly the image's contents"
"$REWIND" list --store "$STORE" --records --json >"$TMP/list.json" || fail "rewind list"
"$REWIND" vm points --store "$STORE" --json "$DOM" >"$TMP/points.json" || fail "vm points"
"$PYTHON" - "$TMP/list.json" "$TMP/points.json" "$DOM-vda" <<'PY' || fail "the initial copy is still restorable history"
import json, sys
d = [x for x in json.load(open(sys.argv[1]))["disks"] if x["name"] == sys.argv[3]][0]
p = json.load(open(sys.argv[2]))["disks"][0]
print("journal after the fold:", d["journal"], "oldest restorable seq:", p["oldest_seq"])
# every record of the copy is at or below the horizon: none is history
assert d["journal"]["last_seq"] >= 1, d
assert p["oldest_seq"] == d["journal"]["last_seq"], (d, p)
PY
check "the initial copy was folded into base"
sleep 0.1
"$REWIND" vm mark --store "$STORE" "$DOM" after-protect >/dev/null || fail "vm mark"
check "marked the domain right after live protection"

# a restart runs on rewind: the guest reads its blocks through the export
V destroy "$DOM" >/dev/null
boot hold
expect_eq "after restart the guest read block 3 through rewind" "$(guest_read vda 3)" "rewind-guest vda boot=1 blk=3"
at_now vda "$TMP/now2.raw"
expect_eq "its new writes are in the store" "$(img_block "$TMP/now2.raw" 3)" "rewind-guest vda boot=2 blk=3"
cmp -s "$TMP/now2.raw" "$IMG" && fail "the original image was written after the pivot"
check "the original image is no longer written"
V destroy "$DOM" >/dev/null

# later writes are in the journal, in order, after the mark
"$REWIND" journal --store "$STORE" "$DOM-vda" --json >"$TMP/journal.json" || fail "rewind journal"
"$REWIND" marks --store "$STORE" "$DOM-vda" --json >"$TMP/marks.json" || fail "rewind marks"
"$PYTHON" - "$TMP/journal.json" "$TMP/marks.json" <<'PY' || fail "journal order after live protection"
import json, sys
recs = json.load(open(sys.argv[1]))["records"]
mark = [m for m in json.load(open(sys.argv[2]))["marks"] if m["label"] == "after-protect"][0]
seqs = [r["seq"] for r in recs]
assert seqs == sorted(set(seqs)), "seqs not strictly increasing"
ts = [r["ts_ns"] for r in recs]
assert ts == sorted(ts), "timestamps go backwards"
after = [r for r in recs if r["seq"] > mark["seq"] and r["type"] == "write"]
assert after, "no write journaled after the mark"
print("writes journaled after the mark:", len(after))
PY
check "the guest's writes after protection are journaled in order"

# a rollback to a point after protection is exact
"$REWIND" vm rollback --store "$STORE" --connect "$URI" "$DOM" --at mark:after-protect --no-start >/dev/null \
	|| fail "vm rollback after live protection"
at_now vda "$TMP/rb.raw"
cmp "$TMP/expect.raw" "$TMP/rb.raw" || fail "rollback to a point after live protection is not exact"
check "rollback to the mark taken after live protection is exact"
echo "vm_live: all checks passed in $SECONDS s"
