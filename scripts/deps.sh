#!/usr/bin/env bash
# deps.sh PROFILE — make sure the Debian packages a profile needs are present.
# As root, installs the missing ones with apt-get; otherwise prints the exact
# apt-get line and fails.  Profiles: build, test, bench, vm.
set -euo pipefail

build_pkgs=(gcc make pkg-config liburing-dev liblmdb-dev libzstd-dev libcunit1-dev libvirt-dev libxml2-dev libmicrohttpd-dev)
test_pkgs=(qemu-utils libnbd-bin python3-libnbd nbdkit fio e2fsprogs lmdb-utils zstd python3 curl python3-prometheus-client bc util-linux tzdata)
bench_pkgs=(fio e2fsprogs qemu-utils nbdkit libnbd-bin python3-libnbd)
# vm: a real guest under libvirt + QEMU (TCG) for tests/e2e/vm_guest.sh
vm_pkgs=(libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86 qemu-utils busybox-static cpio)

case "${1:-build}" in
build) want=("${build_pkgs[@]}") ;;
test) want=("${build_pkgs[@]}" "${test_pkgs[@]}") ;;
bench) want=("${build_pkgs[@]}" "${bench_pkgs[@]}") ;;
vm) want=("${build_pkgs[@]}" "${vm_pkgs[@]}") ;;
*) echo "deps.sh: unknown profile '$1'" >&2; exit 2 ;;
esac

missing=()
for p in "${want[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$p")
	fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

line="apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
	echo "rewind needs these Debian packages: ${missing[*]}" >&2
	echo "run as root:  apt-get update && $line" >&2
	exit 1
fi
echo "installing: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null || apt-get update
$line >/dev/null || $line
