#!/usr/bin/env bash
# capture_ext4.sh — a real filesystem through `rewind serve`: nbdfuse
# exposes the disk as a file, mkfs.ext4 formats it, a loop mount writes
# files with fsync; after unmount e2fsck -fn is clean; then the server is
# killed with SIGKILL (not stopped), restarted, and the copied-out image
# must still fsck clean and hold the same files.  Needs root, /dev/fuse,
# loop devices, nbdfuse, mkfs.ext4, e2fsck; skips (77) otherwise.
. "$(dirname "$0")/functions.sh"
requires nbdfuse nbdcopy mkfs.ext4 e2fsck sha256sum
[ "$(id -u)" -eq 0 ] || { echo "SKIP: needs root for loop mounts"; exit 77; }
[ -c /dev/fuse ] || { echo "SKIP: no /dev/fuse"; exit 77; }
losetup -f >/dev/null 2>&1 || { echo "SKIP: no free loop device"; exit 77; }
rw_setup
ext4_cleanup() {
	local rc=$?
	umount "$TMP/mnt" 2>/dev/null
	umount "$TMP/fuse" 2>/dev/null || umount -l "$TMP/fuse" 2>/dev/null
	(exit $rc)
	rw_cleanup
}
trap ext4_cleanup EXIT
mkdir -p "$TMP/fuse" "$TMP/mnt"
if is_sanitized; then SIZE=128M; else SIZE=512M; fi
"$REWIND" create vm1 --size $SIZE >/dev/null || fail "create"
start_server

# -s: one FUSE operation at a time.  nbdfuse of libnbd 1.14 counts a
# command in flight only after issuing it, under another mutex than the
# completion's decrement, so with concurrent operations a fast reply can
# find the count at 0 (assertion 'in_flight >= 1' in completion_callback).
timeout -s KILL 300 nbdfuse -s -P "$TMP/nbdfuse.pid" "$TMP/fuse" "$(uri vm1)" &
FUSE_PID=$!
for i in $(seq 1 200); do [ -s "$TMP/nbdfuse.pid" ] && break; sleep 0.05; done
[ -f "$TMP/fuse/nbd" ] || fail "nbdfuse did not mount"
check "nbdfuse exposes vm1 as $TMP/fuse/nbd"
timeout -s KILL 120 mkfs.ext4 -q -F "$TMP/fuse/nbd" || fail "mkfs.ext4"
mount -o loop "$TMP/fuse/nbd" "$TMP/mnt" 2>"$TMP/mount.err" || {
	cat "$TMP/mount.err"; echo "SKIP: loop mount refused here"; exit 77; }
check "mkfs.ext4 and loop mount"
mkdir -p "$TMP/mnt/dir/sub"
for i in 1 2 3 4 5 6; do
	head -c $((i * 1024 * 1024 + i * 1111)) /dev/urandom >"$TMP/mnt/dir/f$i"
done
echo "hello rewind" >"$TMP/mnt/dir/sub/small.txt"
"$PYTHON" - "$TMP/mnt" <<'PY' || fail "fsync"
import os, sys
for root, dirs, files in os.walk(sys.argv[1]):
    for n in files:
        fd = os.open(os.path.join(root, n), os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    fd = os.open(root, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
PY
(cd "$TMP/mnt" && find dir -type f -print0 | sort -z | xargs -0 sha256sum) >"$TMP/sums" || fail "sha256"
rm -f "$TMP/mnt/dir/f6"   # a delete: the filesystem may discard its blocks
sed -i '/dir\/f6$/d' "$TMP/sums"
sync -f "$TMP/mnt"
check "wrote 7 files with fsync, deleted one"
umount "$TMP/mnt" || fail "umount ext4"
timeout -s KILL 120 e2fsck -fn "$TMP/fuse/nbd" >"$TMP/fsck1.log" 2>&1 || { cat "$TMP/fsck1.log"; fail "e2fsck after unmount"; }
check "e2fsck -fn clean after unmount"
umount "$TMP/fuse" || fail "unmount nbdfuse"
wait $FUSE_PID
journal_snapshot
w=$(journal_field vm1 writes)
[ "$w" -gt 0 ] || fail "no writes journaled"
check "journal holds $w writes, $(journal_field vm1 zeroes) zeroes, $(journal_field vm1 trims) trims"

kill9_server
start_server
timeout -s KILL 120 nbdcopy "$(uri vm1)" "$TMP/copy.img" || fail "nbdcopy after kill -9"
timeout -s KILL 120 e2fsck -fn "$TMP/copy.img" >"$TMP/fsck2.log" 2>&1 || { cat "$TMP/fsck2.log"; fail "e2fsck after kill -9"; }
check "after kill -9 and restart, the image fscks clean"
mount -o loop,ro "$TMP/copy.img" "$TMP/mnt" || fail "mount copy"
(cd "$TMP/mnt" && sha256sum -c --quiet "$TMP/sums") || fail "file contents differ after kill -9"
umount "$TMP/mnt"
check "every fsynced file has the same contents after kill -9 and restart"
stop_server
echo "capture_ext4: all checks passed"
