#!/usr/bin/env bash
# vm_guest.sh — a real guest under libvirt + QEMU (TCG) on rewind, with
# two disks: vda (raw) and vdb (qcow2).
#
# The guest is Debian's cloud kernel with a busybox initramfs
# (tests/e2e/vm/init): each boot it prints blocks 0..3 of each disk as it
# finds them ("RWG READ"), writes them with its boot number (direct I/O +
# fsync), and powers off.  The flow:
#   refusals (unknown domain, unreachable libvirt, a block-device disk)
#   change nothing → vm protect (offline) → boot 1 → vm mark m1 → boot 2 →
#   the XML gains 'rwhold' (guest stays up, ignores ACPI) → boot 3 holds →
#   refusals while running → vm rollback --at mark:m1 --timeout 3s refuses
#   and changes nothing → with --force: domain powered off, disks and XML
#   back to m1 → image (restore --at now) is exactly m1's → boot: the guest
#   reads m1's blocks → vm rollback --undo → image and XML as before the
#   rollback → vm unprotect writes the current contents into the original
#   file and puts the original disk back.
#
# Needs root (libvirtd, QEMU as root so it can open rewind's socket).
# Installs the 'vm' package profile; skips (77) only when the packages or
# the kernel cannot be fetched.  The kernel and initramfs are cached in
# $REWIND_BUILD/vm-guest.
. "$(dirname "$0")/functions.sh"
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
build=${REWIND_BUILD:-$top/build}
. "$here/vm/lib.sh"

# ---------------------------------------------------------------- the guest
# vda: a raw image; vdb: a qcow2 image (flattened to raw on protect,
# written back into the qcow2 on unprotect)
IMG=$TMP/guest.raw
QIMG=$TMP/data.qcow2
truncate -s 8M "$IMG"
for b in 0 1 2 3; do
	printf 'rewind-guest vda boot=0 blk=%d ' "$b" |
		dd of="$IMG" bs=4096 seek="${blkoff[$b]}" conv=notrunc,sync status=none
	printf 'rewind-guest vdb boot=0 blk=%d ' "$b" |
		dd of="$TMP/vdb0.raw" bs=4096 seek="${blkoff[$b]}" conv=notrunc,sync status=none
done
truncate -s 8M "$TMP/vdb0.raw"
qemu-img convert -q -f raw -O qcow2 "$TMP/vdb0.raw" "$QIMG" || fail "make the qcow2 image"

DISK_XML="    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='$IMG'/>
      <target dev='vda' bus='virtio'/>
    </disk>"
QDISK_XML="    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='$QIMG'/>
      <target dev='vdb' bus='virtio'/>
    </disk>"
domxml "$DOM" "" "$DISK_XML
$QDISK_XML" >"$TMP/dom.xml"
V define "$TMP/dom.xml" >/dev/null || fail "virsh define"
domxml "$DOM-blk" "" "$DISK_XML
    <disk type='block' device='disk'>
      <driver name='qemu' type='raw'/>
      <source dev='/dev/rewind-test-no-such-device'/>
      <target dev='vdb' bus='virtio'/>
    </disk>" >"$TMP/blk.xml"
V define "$TMP/blk.xml" >/dev/null || fail "virsh define (block disk)"
# ---------------------------------------------------------------- refusals
before=$(store_state)
expect_fail "unknown domain" "no domain 'rwg-nosuch-$$'" \
	"$REWIND" vm protect --store "$STORE" --connect "$URI" "rwg-nosuch-$$"
expect_fail "libvirt unreachable" "cannot connect to libvirt" \
	"$REWIND" vm protect --store "$STORE" --connect "qemu+unix:///system?socket=$TMP/no-libvirt.sock" "$DOM"
expect_fail "block-device disk" "disk 'vdb': type 'block'" \
	"$REWIND" vm protect --store "$STORE" --connect "$URI" "$DOM-blk"
expect_fail "points of an unprotected domain" "is not protected" \
	"$REWIND" vm points --store "$STORE" "$DOM"
# a running domain: offline protection refuses it (no need to wait for
# its guest: the domain is running as soon as QEMU is)
cp --sparse=always "$IMG" "$TMP/run.raw"
domxml "$DOM-run" " rwhold" "${DISK_XML//guest.raw/run.raw}" |
	sed "s|console.log|console-run.log|g" >"$TMP/run.xml"
V define "$TMP/run.xml" >/dev/null || fail "virsh define (running domain)"
V start "$DOM-run" >/dev/null || fail "virsh start $DOM-run"
expect_fail "protect a running domain" "is running" \
	"$REWIND" vm protect --store "$STORE" --connect "$URI" "$DOM-run"
V destroy "$DOM-run" >/dev/null
[ "$(store_state)" = "$before" ] || fail "a refusal changed the store"
V dumpxml "$DOM-blk" | grep -q "source file='$IMG'" || fail "refusal changed the domain"
check "refusals left the store and the domains unchanged"

# ---------------------------------------------------------------- protect
V dumpxml --inactive "$DOM" >"$TMP/orig.xml"
"$REWIND" vm protect --store "$STORE" --connect "$URI" "$DOM" || fail "vm protect"
V dumpxml --inactive "$DOM" >"$TMP/prot.xml"
grep -q "protocol='nbd' name='$DOM-vda'" "$TMP/prot.xml" || fail "protected XML lacks the vda export"
grep -q "protocol='nbd' name='$DOM-vdb'" "$TMP/prot.xml" || fail "protected XML lacks the vdb export"
grep -q "transport='unix' socket='$(cd "$STORE" && pwd)/rewind.sock'" "$TMP/prot.xml" ||
	fail "protected XML lacks the socket"
grep -q "guest.raw\|data.qcow2" "$TMP/prot.xml" && fail "protected XML still names an image"
check "protected: vda and vdb (qcow2) are nbd exports '$DOM-vda', '$DOM-vdb' on the store's socket"
expect_fail "protect twice" "already protected" \
	"$REWIND" vm protect --store "$STORE" --connect "$URI" "$DOM"
start_server

boot
expect_eq "boot 1 read vda block 0" "$(guest_read vda 0)" "rewind-guest vda boot=0 blk=0"
expect_eq "boot 1 read vdb block 2 (from the qcow2)" "$(guest_read vdb 2)" "rewind-guest vdb boot=0 blk=2"
"$REWIND" vm mark --store "$STORE" "$DOM" m1 || fail "vm mark m1"
boot
expect_eq "boot 2 read vda block 3" "$(guest_read vda 3)" "rewind-guest vda boot=1 blk=3"
expect_eq "boot 2 read vdb block 1" "$(guest_read vdb 1)" "rewind-guest vdb boot=1 blk=1"
"$REWIND" vm points --store "$STORE" "$DOM" || fail "vm points"
"$REWIND" vm points --store "$STORE" --json "$DOM" >"$TMP/points.json" || fail "vm points --json"
"$PYTHON" - "$TMP/points.json" "$DOM" <<'EOF' || fail "vm points --json content"
import json, sys
p = json.load(open(sys.argv[1]))
assert p["domain"] == sys.argv[2]
assert [d["target"] for d in p["disks"]] == ["vda", "vdb"], p
assert all(d["records"] >= 8 for d in p["disks"]), p   # 2 boots x 4 blocks
m = [d["marks"][0]["ts_ns"] for d in p["disks"]]
assert m[0] == m[1], p                                 # one instant
assert [m["label"] for m in p["marks"]] == ["m1"] and p["marks"][0]["all_disks"], p
assert p["oldest_ns"] <= p["marks"][0]["ts_ns"] <= p["latest_ns"], p
assert p["undo_ns"] is None
EOF
check "vm points --json: two disks, >= 8 records each, mark m1 at one instant on both"

# a configuration change: the guest now stays up after its writes
sed "s|quiet</cmdline>|quiet rwhold</cmdline>|" "$TMP/prot.xml" >"$TMP/hold.xml"
V define "$TMP/hold.xml" >/dev/null || fail "define the rwhold XML"
boot hold
expect_eq "boot 3 read vda block 0" "$(guest_read vda 0)" "rewind-guest vda boot=2 blk=0"
for d in vda vdb; do at_now $d "$TMP/pre-$d.raw"; done  # what the rollback leaves (guest fsynced)
expect_eq "current vdb block 2 before rollback" "$(img_block "$TMP/pre-vdb.raw" 2)" "rewind-guest vdb boot=3 blk=2"

expect_fail "unprotect a running domain" "is running" \
	"$REWIND" vm unprotect --store "$STORE" --connect "$URI" "$DOM"
before=$(store_state)
t0=$SECONDS
expect_fail "rollback of a guest that ignores ACPI, no --force" "did not shut down" \
	"$REWIND" vm rollback --store "$STORE" --connect "$URI" "$DOM" --at mark:m1 --timeout 3s
[ "$(V domstate "$DOM")" = running ] || fail "the refused rollback stopped the domain"
[ "$(store_state)" = "$before" ] || fail "the refused rollback changed the store"
[ -e "$STORE/vm/$DOM/undo" ] && fail "the refused rollback recorded an undo point"
check "refused rollback: domain still running, store unchanged ($((SECONDS - t0)) s)"

# ---------------------------------------------------------------- rollback
"$REWIND" vm rollback --store "$STORE" --connect "$URI" "$DOM" --at mark:m1 \
	--timeout 3s --force --no-start | tee "$TMP/rb.out" || fail "vm rollback --force"
grep -q "rolled domain '$DOM' back" "$TMP/rb.out" || fail "rollback report"
[ "$(V domstate "$DOM")" = "shut off" ] || fail "domain not off after rollback --no-start"
for d in vda vdb; do
	"$REWIND" restore --store "$STORE" "$DOM-$d" --at mark:m1 --out "$TMP/m1-$d.raw" >/dev/null || fail "restore $d m1"
	at_now $d "$TMP/after-$d.raw"
	cmp "$TMP/m1-$d.raw" "$TMP/after-$d.raw" || fail "after rollback $d differs from mark m1"
	for b in 0 1 2 3; do
		[ "$(img_block "$TMP/after-$d.raw" $b)" = "rewind-guest $d boot=1 blk=$b" ] || fail "$d block $b after rollback"
	done
done
check "after rollback both whole disks equal mark m1 (blocks hold boot=1)"
V dumpxml --inactive "$DOM" | grep -q rwhold && fail "rollback did not bring back the XML of m1"
check "rollback redefined the domain with its XML as of m1 (no rwhold)"
boot
for d in vda vdb; do
	for b in 0 1 2 3; do
		expect_eq "guest after rollback read $d block $b" "$(guest_read $d $b)" "rewind-guest $d boot=1 blk=$b"
	done
done

# ---------------------------------------------------------------- undo
"$REWIND" vm rollback --store "$STORE" --connect "$URI" "$DOM" --undo --json >"$TMP/undo.json" ||
	fail "vm rollback --undo"
cat "$TMP/undo.json"
for d in vda vdb; do
	at_now $d "$TMP/undone-$d.raw"
	cmp "$TMP/pre-$d.raw" "$TMP/undone-$d.raw" || fail "after --undo $d differs from before the rollback"
done
check "after --undo both whole disks equal their state before the rollback"
V dumpxml --inactive "$DOM" | grep -q rwhold || fail "--undo did not bring back the XML (rwhold)"
check "--undo brought back the XML in force before the rollback"
[ "$(V domstate "$DOM")" = "shut off" ] || fail "--undo started a domain that was off"
"$REWIND" vm points --store "$STORE" "$DOM" | grep -q "undo point" || fail "points lacks the undo point"

# ---------------------------------------------------------------- unprotect
expect_fail "unprotect while served" "rewind serve" \
	"$REWIND" vm unprotect --store "$STORE" --connect "$URI" "$DOM"
stop_server
"$REWIND" vm unprotect --store "$STORE" --connect "$URI" "$DOM" || fail "vm unprotect"
cmp "$TMP/pre-vda.raw" "$IMG" || fail "unprotect did not write the current contents into the raw image"
qemu-img convert -f qcow2 -O raw "$QIMG" "$TMP/back-vdb.raw" || fail "read the qcow2 back"
cmp "$TMP/pre-vdb.raw" "$TMP/back-vdb.raw" || fail "unprotect did not write the current contents into the qcow2"
[ "$(qemu-img info --output=json "$QIMG" | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["format"])')" = qcow2 ] ||
	fail "the qcow2 image changed format"
V dumpxml --inactive "$DOM" | grep -q "source file='$IMG'" || fail "unprotect did not restore the vda XML"
V dumpxml --inactive "$DOM" | grep -q "source file='$QIMG'" || fail "unprotect did not restore the vdb XML"
V dumpxml --inactive "$DOM" | grep -q rwhold || fail "unprotect lost the current configuration"
[ -e "$STORE/vm/$DOM" ] && fail "vm state still in place after unprotect"
check "unprotect: raw and qcow2 images hold the current contents, original disks back, config kept"
echo "vm_guest: all checks passed in $SECONDS s"
