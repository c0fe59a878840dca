# lib.sh — shared by the vm_*.sh end-to-end scripts (source it after
# functions.sh, with here/top/build set): package profile, guest build,
# libvirtd, the temporary store, and helpers to boot the test guest and
# read what it printed.  Sets URI, DOM (rwg-PID), V (virsh), blkoff, and
# a cleanup trap that destroys/undefines $DOM, $DOM-blk and $DOM-run,
# stops a libvirtd the script started, and then runs rw_cleanup.
loud_skip() {
	echo "######################################################################"
	echo "### SKIP $(basename "$0" .sh): $*"
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
	# a server `vm protect --live` started for the test's store
	if [ -n "${STORE:-}" ] && [ -f "$STORE/vm/serve.pid" ]; then
		local spid
		spid=$(cat "$STORE/vm/serve.pid")
		[ -n "$spid" ] && kill "$spid" 2>/dev/null
		for _ in $(seq 100); do kill -0 "$spid" 2>/dev/null || break; sleep 0.1; done
	fi
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

# vm rollback runs the per-disk `rewind rollback` in a child process
"$REWIND" rollback --help >/dev/null 2>&1 || fail "this build has no 'rewind rollback'"

blkoff=(0 1 700 2047)      # the guest's blocks (4 KiB block numbers), see init

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

