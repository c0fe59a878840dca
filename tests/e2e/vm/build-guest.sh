#!/usr/bin/env bash
# build-guest.sh DIR — the test guest for vm_guest.sh, cached in DIR:
#   DIR/vmlinuz       Debian's cloud kernel (apt-get download + dpkg-deb -x;
#                     never installed)
#   DIR/initramfs.gz  busybox-static + the virtio modules + tests/e2e/vm/init
# Rebuilds the initramfs when init changes; fetches the kernel once.
# Exit 0, or 1 with a message (e.g. the mirror is unreachable: exit 3).
set -euo pipefail
dir=$1
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$dir"
cd "$dir"
if [ ! -s vmlinuz ] || [ ! -d kmod ]; then
	# linux-image-cloud-amd64 is a metapackage: fetch the image it depends on
	resolve() { apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'; }
	pkg=$(resolve)
	rm -rf dl x && mkdir dl
	if [ -z "$pkg" ] || ! (cd dl && apt-get download "$pkg" >/dev/null 2>&1); then
		# stale or missing package lists: refresh once and retry
		apt-get update -qq >/dev/null 2>&1 || true
		pkg=$(resolve)
		[ -n "$pkg" ] || { echo "cannot resolve linux-image-cloud-amd64"; exit 3; }
		(cd dl && apt-get download "$pkg" >/dev/null 2>&1) || { echo "cannot download $pkg"; exit 3; }
	fi
	dpkg-deb -x dl/*.deb x
	kver=$(ls x/lib/modules | head -n1)
	rm -rf kmod && mkdir kmod
	for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk; do
		if grep -q "/$m.ko" "x/lib/modules/$kver/modules.builtin"; then
			continue   # built into the kernel
		fi
		f=$(find "x/lib/modules/$kver" -name "$m.ko*" | head -n1)
		[ -n "$f" ] || { echo "module $m not found in $pkg"; exit 1; }
		case "$f" in
		*.ko.xz) xz -dc "$f" >"kmod/$m.ko" ;;
		*.ko.zst) zstd -qdc "$f" >"kmod/$m.ko" ;;
		*) cp "$f" "kmod/$m.ko" ;;
		esac
	done
	cp "x/boot/vmlinuz-$kver" vmlinuz.tmp && mv vmlinuz.tmp vmlinuz
	rm -rf x dl
fi
if [ ! -s initramfs.gz ] || [ "$here/init" -nt initramfs.gz ] || [ /bin/busybox -nt initramfs.gz ]; then
	rm -rf root && mkdir -p root/bin root/lib/modules root/proc root/sys root/dev root/tmp
	cp /bin/busybox root/bin/busybox
	cp kmod/*.ko root/lib/modules/ 2>/dev/null || true
	cp "$here/init" root/init
	chmod 755 root/init root/bin/busybox
	(cd root && find . | cpio -o -H newc --quiet | gzip -1) >initramfs.tmp
	mv initramfs.tmp initramfs.gz
	rm -rf root
fi
