#!/usr/bin/env bash
# timetravel_ext4.sh — time travel with a real guest filesystem.  A disk is
# served by `rewind serve`, exposed as a file by nbdfuse, formatted ext4 and
# loop-mounted.  Four epochs: each writes, overwrites, appends, truncates,
# renames and deletes files (with fsync), then unmounts (and fsyncs the
# nbdfuse file, an NBD flush) so the filesystem is clean, records the list
# of files and their sha256, and marks the moment with `rewind mark`.  Then
# the disk is restored as-of every mark — with the server running and again
# after it stopped — and each restored image must pass `e2fsck -fn` and hold
# exactly the files of its epoch (same names, same contents, nothing from a
# later epoch).  A restore at the mark's @EPOCH time must equal the mark's.
# Needs root, /dev/fuse, loop devices, nbdfuse, mkfs.ext4, e2fsck; skips (77)
# otherwise.
set -euo pipefail
. "$(dirname "$0")/functions.sh"
set -euo pipefail
requires nbdfuse mkfs.ext4 e2fsck sha256sum losetup mount umount
[ "$(id -u)" -eq 0 ] || { echo "SKIP: needs root for loop mounts"; exit 77; }
[ -c /dev/fuse ] || { echo "SKIP: no /dev/fuse"; exit 77; }
losetup -f >/dev/null 2>&1 || { echo "SKIP: no free loop device"; exit 77; }
rw_setup
cp "$REWIND" "$TMP/rewind"   # a private copy: a rebuild of the tree must not remove it mid-run
REWIND=$TMP/rewind
FUSE_PID=
ext4_cleanup() {
	local rc=$?
	set +e   # rw_cleanup's `wait` on a killed server is non-zero: keep going to rm -rf
	umount "$TMP/mnt" 2>/dev/null || true
	umount "$TMP/rmnt" 2>/dev/null || true
	if mountpoint -q "$TMP/fuse" 2>/dev/null; then
		umount "$TMP/fuse" 2>/dev/null || umount -l "$TMP/fuse" 2>/dev/null || true
	fi
	if [ -n "$FUSE_PID" ] && kill -0 "$FUSE_PID" 2>/dev/null; then
		kill -9 "$FUSE_PID" 2>/dev/null || true
	fi
	(exit $rc)
	rw_cleanup
}
trap ext4_cleanup EXIT
mkdir -p "$TMP/fuse" "$TMP/mnt" "$TMP/rmnt" "$TMP/img"
if is_sanitized; then SIZE=128M; else SIZE=256M; fi
"$REWIND" create vm1 --size $SIZE >/dev/null || fail "create"
start_server

# -s: one FUSE operation at a time.  nbdfuse of libnbd 1.14 counts a
# command in flight only after issuing it, under another mutex than the
# completion's decrement, so with concurrent operations a fast reply can
# find the count at 0 (assertion 'in_flight >= 1' in completion_callback).
timeout -s KILL 600 nbdfuse -s -P "$TMP/nbdfuse.pid" "$TMP/fuse" "$(uri vm1)" &
FUSE_PID=$!
for i in $(seq 1 200); do [ -s "$TMP/nbdfuse.pid" ] && break; sleep 0.05; done
[ -f "$TMP/fuse/nbd" ] || fail "nbdfuse did not mount"
check "nbdfuse exposes vm1 ($SIZE) as $TMP/fuse/nbd"
timeout -s KILL 120 mkfs.ext4 -q -F -b 4096 "$TMP/fuse/nbd" || fail "mkfs.ext4"
sync "$TMP/fuse/nbd"

fs_mount() {
	mount -o loop "$TMP/fuse/nbd" "$TMP/mnt" 2>"$TMP/mount.err" || {
		cat "$TMP/mount.err"; echo "SKIP: loop mount refused here"; exit 77; }
}
# everything the filesystem wrote reaches the server before the mark:
# unmount (a clean filesystem), then fsync the nbdfuse file (NBD FLUSH)
fs_umount() {
	umount "$TMP/mnt" || fail "umount ext4"
	sync "$TMP/fuse/nbd" || fail "fsync of the nbdfuse file"
}
fsync_all() {
	"$PYTHON" - "$TMP/mnt" <<'PY' || fail "fsync"
import os, sys
for root, dirs, files in os.walk(sys.argv[1]):
    for n in files:
        p = os.path.join(root, n)
        if os.path.islink(p):
            continue
        fd = os.open(p, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    fd = os.open(root, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
PY
}
# manifest DIR — every directory, file (with size and sha256) and symlink
manifest() {
	(cd "$1" && find . -path ./lost+found -prune -o -printf '%y %p %s %l\n' | grep -v '^d \. ' | sort
	 cd "$1" && find . -path ./lost+found -prune -o -type f -print0 | sort -z | xargs -0 -r sha256sum)
}
rnd() { head -c "$1" /dev/urandom; }

fs_mount
check "mkfs.ext4 and loop mount"

# --- epoch 1: a tree of files
mkdir -p "$TMP/mnt/etc" "$TMP/mnt/var/log" "$TMP/mnt/home/u"
for i in 1 2 3 4 5; do rnd $((i * 300000 + i * 77)) >"$TMP/mnt/home/u/data$i"; done
echo "version=1" >"$TMP/mnt/etc/app.conf"
seq 1 20000 >"$TMP/mnt/var/log/app.log"
rnd 3000000 >"$TMP/mnt/var/big.bin"
ln -s ../../etc/app.conf "$TMP/mnt/home/u/conf"
fsync_all
manifest "$TMP/mnt" >"$TMP/m1.list"
fs_umount
"$REWIND" mark vm1 m1 >/dev/null || fail "mark m1"
date +%s.%N >"$TMP/t1"
check "epoch 1: $(grep -c '^f \./' "$TMP/m1.list") files written, unmounted, marked m1"

# --- epoch 2: overwrite in place, append, new files, delete, rename
fs_mount
dd if=/dev/urandom of="$TMP/mnt/var/big.bin" bs=4096 seek=100 count=50 conv=notrunc,fsync status=none
seq 20001 30000 >>"$TMP/mnt/var/log/app.log"
echo "version=2" >"$TMP/mnt/etc/app.conf"
rm -f "$TMP/mnt/home/u/data2"
mv "$TMP/mnt/home/u/data3" "$TMP/mnt/home/u/data3.old"
mkdir -p "$TMP/mnt/srv/db"
for i in 1 2 3; do rnd $((i * 500000)) >"$TMP/mnt/srv/db/table$i"; done
fsync_all
manifest "$TMP/mnt" >"$TMP/m2.list"
fs_umount
"$REWIND" mark vm1 m2 >/dev/null || fail "mark m2"
date +%s.%N >"$TMP/t2"
check "epoch 2: overwrite, append, rename, delete, new files; marked m2"

# --- epoch 3: truncate, delete a tree, rewrite many small files, fstrim
fs_mount
truncate -s 1000000 "$TMP/mnt/var/big.bin"
rm -rf "$TMP/mnt/home/u"
mkdir -p "$TMP/mnt/tmp/small"
for i in $(seq 1 200); do echo "small file $i $RANDOM" >"$TMP/mnt/tmp/small/f$i"; done
rnd 1234567 >"$TMP/mnt/srv/db/table2"
fsync_all
fstrim "$TMP/mnt" 2>/dev/null || true   # discards through loop → nbdfuse → NBD TRIM, when supported
manifest "$TMP/mnt" >"$TMP/m3.list"
fs_umount
"$REWIND" mark vm1 m3 >/dev/null || fail "mark m3"
date +%s.%N >"$TMP/t3"
check "epoch 3: truncate, rm -rf a tree, 200 small files, fstrim; marked m3"

# --- epoch 4: back to a few files, all else deleted
fs_mount
rm -rf "$TMP/mnt/tmp" "$TMP/mnt/srv/db/table1"
echo "version=4" >"$TMP/mnt/etc/app.conf"
rnd 2000000 >"$TMP/mnt/var/big.bin"
fsync_all
manifest "$TMP/mnt" >"$TMP/m4.list"
fs_umount
"$REWIND" mark vm1 m4 >/dev/null || fail "mark m4"
check "epoch 4: deletes and rewrites; marked m4"
umount "$TMP/fuse" || fail "unmount nbdfuse"
wait "$FUSE_PID" 2>/dev/null || true
FUSE_PID=

"$REWIND" marks vm1
"$REWIND" journal vm1 --summary --headers | tail -n 1
for k in 1 2 3; do
	for j in $(seq $((k + 1)) 4); do
		cmp -s "$TMP/m$k.list" "$TMP/m$j.list" && fail "epochs $k and $j have the same manifest: the test is too weak"
	done
done

# check_image IMG K WHAT — e2fsck clean and exactly epoch K's files
check_image() {
	local img=$1 k=$2 what=$3
	timeout -s KILL 120 e2fsck -fn "$img" >"$TMP/fsck.log" 2>&1 || {
		cat "$TMP/fsck.log"; fail "$what: e2fsck -fn on the image as-of m$k"; }
	mount -o loop,ro "$img" "$TMP/rmnt" || fail "$what: mount the image as-of m$k"
	manifest "$TMP/rmnt" >"$TMP/got.list"
	umount "$TMP/rmnt"
	diff -u "$TMP/m$k.list" "$TMP/got.list" >"$TMP/diff" || {
		head -n 40 "$TMP/diff"; fail "$what: the image as-of m$k does not hold epoch $k's files"; }
}

# --- restore as-of every mark while the server runs
for k in 1 2 3 4; do
	"$REWIND" restore vm1 --at "mark:m$k" --out "$TMP/img/live$k.img" >/dev/null || fail "restore mark:m$k"
	check_image "$TMP/img/live$k.img" $k live
	check "live: as-of mark m$k: e2fsck -fn clean, exactly epoch $k's $(grep -c '^f \./' "$TMP/m$k.list") files with the same sha256"
done
for k in 1 2 3; do
	"$REWIND" restore vm1 --at "@$(cat "$TMP/t$k")" --out "$TMP/img/t.img" --force >/dev/null || fail "restore @t$k"
	cmp -s "$TMP/img/t.img" "$TMP/img/live$k.img" || fail "as-of @EPOCH just after mark m$k differs from mark:m$k"
done
rm -f "$TMP/img/t.img"
check "live: as-of the @EPOCH just after each mark equals the mark's image"

# --- and after the server stopped (the store lock is free: restores may go backward from head)
stop_server
check "server stopped cleanly"
for k in 4 3 2 1; do
	"$REWIND" restore vm1 --at "mark:m$k" --out "$TMP/img/off.img" --force --json >"$TMP/r.json" || fail "offline restore mark:m$k"
	cmp -s "$TMP/img/off.img" "$TMP/img/live$k.img" || {
		check_image "$TMP/img/off.img" $k offline
		fail "offline as-of m$k differs from the live restore byte for byte"; }
	check "offline: as-of mark m$k equals the live restore byte for byte ($(sed 's/.*"direction":"\([a-z]*\)".*/\1/' "$TMP/r.json"))"
done
"$REWIND" restore vm1 --at now --out "$TMP/img/now.img" >/dev/null || fail "restore now"
check_image "$TMP/img/now.img" 4 "offline now"
check "offline: as-of now holds epoch 4's files"
echo "timetravel_ext4: all checks passed (4 marks; 12 restores: 5 fsck'd and compared file by file, 7 byte for byte; ${SECONDS}s)"
