#!/usr/bin/env bash
# rollback-shim.sh --store STORE DISK --at WHEN — a stand-in for the
# per-disk `rewind rollback` in builds that do not have it yet (set as
# $REWIND_VM_ROLLBACK by vm_guest.sh).  It is exact but not cheap: it
# restores DISK as-of WHEN to a file and writes the whole file through the
# running server (every block becomes a journaled write), where the real
# command rewrites only the blocks written after WHEN.
set -euo pipefail
[ "${1:-}" = --help ] && { echo "usage: rollback-shim.sh --store STORE DISK --at WHEN"; exit 0; }
[ $# -eq 5 ] && [ "$1" = --store ] && [ "$4" = --at ] || { echo "rollback-shim: bad arguments: $*" >&2; exit 2; }
store=$2 disk=$3 at=$5
tmp=$(mktemp "$store/.shim-$disk.XXXXXX")
trap 'rm -f "$tmp"' EXIT
"$REWIND" restore --store "$store" "$disk" --at "$at" --out "$tmp" --force >/dev/null
qemu-img convert -n -f raw -O raw "$tmp" "nbd+unix:///$disk?socket=$store/rewind.sock"
echo "rollback-shim: disk '$disk' rolled back to $at (whole disk rewritten)"
