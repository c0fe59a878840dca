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
# $REWIND_BUILD/vm-guest.  The per-disk `rewind rollback` is used when the
# build has it, else tests/e2e/vm/rollback-shim.sh stands in (loudly).
. "$(dirname "$0")/functions.sh"
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
build=${REWIND_BUILD:-$top/build}

loud_skip() {
	echo "######################################################################"
	echo "### SKIP vm_guest: $*"
	echo "######################################################################"
	echo "SKIP: $*"
	exit 77
}

[ "$(id -u)" -eq 0 ] || loud_skip "needs root (libvirtd and QEMU run as root)"
if ! bash "$top/scripts/deps.sh" vm >/tmp/vm_guest-deps.$$ 2>&1; then
	cat /tmp/vm_guest-deps.$$; rm -f /tmp/vm_guest-deps.$$
	loud_skip "cannot install the 'vm' packages (mirror unreachable?)"
fi
rm -f /tmp/vm_guest-deps.$$
requires virsh libvirtd qemu-system-x86_64 qemu-img cmp

guest=$build/vm-guest
rc=0
bash "$here/vm/build-guest.sh" "$guest" || rc=$?
[ $rc -eq 3 ] && loud_skip "cannot fetch the guest kernel (mirror unreachable?)"
[ $rc -eq 0 ] || { echo "FAIL: building the guest"; exit 1; }

URI=qemu:///system
V() { virsh -q -c "$URI" "$@"; }
DOM=rwg-$$
LIBVIRTD_PID=
vm_cleanup() {
	local rc=$?
	for d in "$DOM" "$DOM-blk" "$DOM-run"; do
		virsh -q -c "$URI" destroy "$d" >/dev/null 2>&1
		virsh -q -c "$URI" undefine "$d" >/dev/null 2>&1
	done
	if [ -n "$LIBVIRTD_PID" ]; then
		kill "$LIBVIRTD_PID" 2>/dev/null
		for _ in $(seq 50); do kill -0 "$LIBVIRTD_PID" 2>/dev/null || break; sleep 0.1; done
	fi
	(exit $rc)
	rw_cleanup
}

# ---------------------------------------------------------------- libvirtd
getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu
getent passwd libvirt-qemu >/dev/null ||
	useradd -r -g libvirt-qemu -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu
mkdir -p /var/log/libvirt /var/lib/libvirt/qemu /var/cache/libvirt /run/libvirt
marker="# rewind tests/e2e/vm_guest.sh"
if ! grep -qF "$marker" /etc/libvirt/qemu.conf 2>/dev/null; then
	# QEMU must open rewind's unix socket and the test's files: run it as
	# root without relabelling; stdio to files (no virtlogd here)
	cat >>/etc/libvirt/qemu.conf <<EOF
$marker
user = "root"
group = "root"
dynamic_ownership = 0
stdio_handler = "file"
security_driver = "none"
EOF
fi
if ! virsh -c "$URI" version >/dev/null 2>&1; then
	libvirtd -d || { echo "FAIL: libvirtd -d"; exit 1; }
	for _ in $(seq 100); do virsh -c "$URI" version >/dev/null 2>&1 && break; sleep 0.1; done
	LIBVIRTD_PID=$(cat /run/libvirtd.pid 2>/dev/null)
	virsh -c "$URI" version >/dev/null 2>&1 || { echo "FAIL: libvirtd did not come up"; exit 1; }
fi

rw_setup
trap vm_cleanup EXIT
check "libvirtd up (${LIBVIRTD_PID:+started by the test, pid $LIBVIRTD_PID}${LIBVIRTD_PID:-already running})"

if "$REWIND" rollback --help >/dev/null 2>&1; then
	check "per-disk rollback: rewind rollback"
else
	echo "######################################################################"
	echo "### NOTE: this build has no 'rewind rollback'; vm rollback runs"
	echo "### tests/e2e/vm/rollback-shim.sh per disk instead"
	echo "######################################################################"
	export REWIND_VM_ROLLBACK=$here/vm/rollback-shim.sh
fi

# ---------------------------------------------------------------- the guest
# vda: a raw image; vdb: a qcow2 image (flattened to raw on protect,
# written back into the qcow2 on unprotect)
IMG=$TMP/guest.raw
QIMG=$TMP/data.qcow2
truncate -s 8M "$IMG"
blkoff=(0 1 700 2047)      # the guest's blocks (4 KiB block numbers), see init
for b in 0 1 2 3; do
	printf 'rewind-guest vda boot=0 blk=%d ' "$b" |
		dd of="$IMG" bs=4096 seek="${blkoff[$b]}" conv=notrunc,sync status=none
	printf 'rewind-guest vdb boot=0 blk=%d ' "$b" |
		dd of="$TMP/vdb0.raw" bs=4096 seek="${blkoff[$b]}" conv=notrunc,sync status=none
done
truncate -s 8M "$TMP/vdb0.raw"
qemu-img convert -q -f raw -O qcow2 "$TMP/vdb0.raw" "$QIMG" || fail "make the qcow2 image"

domxml() { # NAME CMDLINE-EXTRA DISKS-XML
	cat <<EOF
<domain type='qemu'>
  <name>$1</name>
  <memory unit='MiB'>192</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>$guest/vmlinuz</kernel>
    <initrd>$guest/initramfs.gz</initrd>
    <cmdline>console=ttyS0 panic=-1 quiet$2</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
$3
    <serial type='file'><source path='$TMP/console.log'/><target port='0'/></serial>
    <console type='file'><source path='$TMP/console.log'/><target type='serial' port='0'/></console>
    <memballoon model='none'/>
  </devices>
</domain>
EOF
}
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

# boot [EXPECT-HOLD] — start the domain, wait until it is off (or holding)
boot() {
	: >"$TMP/console.log"
	V start "$DOM" >/dev/null || fail "virsh start $DOM"
	local i
	for i in $(seq 1 600); do
		if [ "${1:-}" = hold ]; then
			grep -q "RWG HOLD" "$TMP/console.log" 2>/dev/null && break
		else
			[ "$(V domstate "$DOM" 2>/dev/null)" = "shut off" ] && break
		fi
		sleep 0.2
	done
	[ $i -lt 600 ] || { cat "$TMP/console.log"; fail "guest did not finish in 120 s"; }
	grep -q "RWG ERROR" "$TMP/console.log" && { cat "$TMP/console.log"; fail "guest reported an error"; }
	grep -q "RWG DONE" "$TMP/console.log" || { cat "$TMP/console.log"; fail "guest did not finish its writes"; }
	return 0
}
# guest_read DEV B — what the guest found in block B of DEV at its last boot
guest_read() { sed -n "s/^RWG READ $1 $2 //p" "$TMP/console.log" | tr -d '\r' | sed 's/ *$//'; }
# img_block FILE B — block B of an image, as text
img_block() { dd if="$1" bs=4096 skip="${blkoff[$2]}" count=1 status=none | tr -d '\000' | sed 's/ *$//'; }
# at_now DEV FILE — the disk's current contents
at_now() { "$REWIND" restore --store "$STORE" "$DOM-$1" --at now --out "$2" --force >/dev/null || fail "restore $1 --at now"; }
# store_state — disks, sizes, indexed seqs, marks and vm/ files (not the
# head-sync seq, which moves on its own while served)
store_state() {
	"$REWIND" list --store "$STORE" 2>&1 | awk '{print $1, $2, $3, $4, $5, $6}'
	local d
	for d in $("$REWIND" list --store "$STORE" 2>/dev/null | awk 'NR > 1 {print $1}'); do
		"$REWIND" marks --store "$STORE" "$d" 2>&1
	done
	ls -R "$STORE/vm" 2>/dev/null
}
expect_fail() { # WHAT WORDS CMD... — exit 1 with WORDS in the message
	local what=$1 words=$2 out rc=0; shift 2
	out=$("$@" 2>&1) || rc=$?
	[ $rc -eq 1 ] || fail "$what: exit $rc, want 1 (output: $out)"
	case "$out" in *"$words"*) ;; *) fail "$what: message lacks '$words': $out" ;; esac
	check "$what: $(echo "$out" | head -n1 | cut -c1-110)"
}

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
