#!/usr/bin/env bash
# demo.sh BUILD_DIR — rewind's main job, end to end, in about ten seconds:
# create a store and a disk, serve it over NBD, write to it with a real
# client (qemu-io), mark a moment, write more, then rewind: restore the disk
# as of the mark, check it byte for byte, and show the timeline.
set -euo pipefail
B=${1:-build}
top=$(cd "$(dirname "$0")/.." && pwd)
REWIND="$top/$B/rewind"
work=$(mktemp -d "${TMPDIR:-/tmp}/rewind-demo.XXXXXX")
export REWIND_STORE="$work/store"
server_pid=
cleanup() {
	if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
		kill -TERM "$server_pid" 2>/dev/null || true
		wait "$server_pid" 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

step "a store and a 256 MiB disk"
run "$REWIND" init
run "$REWIND" create vm1 --size 256M
run "$REWIND" list

step "serve it over NBD (unix socket $REWIND_STORE/rewind.sock)"
"$REWIND" serve >"$work/serve.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do [ -S "$REWIND_STORE/rewind.sock" ] && break; sleep 0.1; done
[ -S "$REWIND_STORE/rewind.sock" ] || { cat "$work/serve.log"; exit 1; }
uri="nbd+unix:///vm1?socket=$REWIND_STORE/rewind.sock"
run nbdinfo "$uri" | sed -n '1,12p'

step "the guest writes 8 MiB of 0xaa, flushes"
run qemu-io -f raw -c 'write -P 0xaa 0 8M' -c flush "$uri"
run "$REWIND" journal vm1 --summary

step "mark this moment"
sleep 0.2
run "$REWIND" mark vm1 before-upgrade

step "the 'upgrade' overwrites 4 MiB with 0xbb and zeroes 1 MiB"
sleep 0.2
run qemu-io -f raw -c 'write -P 0xbb 2M 4M' -c 'write -z 7M 1M' -c flush "$uri"
run "$REWIND" journal vm1 --summary

step "rewind: restore the disk as of the mark"
run "$REWIND" restore vm1 --at mark:before-upgrade --out "$work/before.img"
run qemu-io -f raw -r -c 'read -P 0xaa 0 8M' -c 'read -P 0 8M 248M' "$work/before.img"
echo "restored image: $(du -h --apparent-size "$work/before.img" | cut -f1) apparent, $(du -h "$work/before.img" | cut -f1) allocated (sparse)"

step "and the live disk still holds the newer data"
run qemu-io -f raw -r -c 'read -P 0xbb 2M 4M' -c 'read -P 0 7M 1M' "$uri"

step "roll the live disk itself back to the mark (the server keeps running)"
run "$REWIND" rollback vm1 --at mark:before-upgrade | tee "$work/rollback.out"
run qemu-io -f raw -r -c 'read -P 0xaa 0 8M' "$uri"

step "changed your mind? the rollback is history too: undo it"
undo=$(sed -n 's/^undo with: //p' "$work/rollback.out")
run "$REWIND" ${undo#rewind }
run qemu-io -f raw -r -c 'read -P 0xbb 2M 4M' -c 'read -P 0 7M 1M' "$uri"

step "timeline"
run "$REWIND" timeline vm1 --width 60

if "$REWIND" --help | grep -q '^  stats'; then
	step "stats"
	run "$REWIND" stats vm1
fi
echo
echo "demo done: every write was journaled, and the disk went back in time exactly."
