#!/usr/bin/env bash
# export_blockstatus.sh — `rewind export` answers NBD block status
# (base:allocation): the map of holes and data as-of the point is exact
# (nbdinfo --map against the writes made), REQ_ONE gives one extent,
# requests without the negotiated context or past the end get EINVAL, the
# writable `serve` exports do not offer the context, and nbdcopy — which
# skips the holes — still copies out exactly the restored image.
. "$(dirname "$0")/functions.sh"

have_nbdsh || { echo "SKIP: nbdsh (python3-libnbd) is not installed"; exit 77; }
requires qemu-io nbdinfo nbdcopy
rw_setup

"$REWIND" create --store "$STORE" d --size 64M >/dev/null || fail "create"
start_server
qemu-io -f raw "$(uri d)" -c 'write -P 0x11 1M 2M' -c 'write -P 0x22 10M 64k' \
	-c 'write -z 11M 1M' -c 'write -P 0x33 20M 1M' -c 'discard 20M 512k' \
	>/dev/null || fail "qemu-io"
# The writable export does not offer the context.
"$PYTHON" - "$(uri d)" <<'EOF' || fail "serve offered base:allocation"
import nbd, sys
h = nbd.NBD(); h.add_meta_context("base:allocation"); h.connect_uri(sys.argv[1])
sys.exit(1 if h.can_meta_context("base:allocation") else 0)
EOF
stop_server
check "writable export: no metadata context"

XSOCK=$TMP/x.sock
"$REWIND" export --store "$STORE" d --at now --socket "$XSOCK" >>"$TMP/export.log" 2>&1 &
XPID=$!
EXTRA_PIDS="$EXTRA_PIDS $XPID"
for i in $(seq 1 3000); do [ -S "$XSOCK" ] && break; sleep 0.02; done
[ -S "$XSOCK" ] || fail "export did not come up"
XURI="nbd+unix:///d?socket=$XSOCK"

# The as-of map is built in the background; until then all is "data".
want=$'0 1048576 3\n1048576 2097152 0\n3145728 7340032 3\n10485760 65536 0\n10551296 10420224 3\n20971520 524288 3\n21495808 524288 0\n22020096 45088768 3'
got=
for i in $(seq 1 500); do
	got=$(nbdinfo --map "$XURI" | awk '{print $1, $2, $3}')
	[ "$got" = "$want" ] && break
	# Adjacent extents with equal flags may come merged.
	merged=$(printf '%s\n' "$want" | awk '{ if (NR > 1 && $3 == f) { l += $2 } else { if (NR > 1) print o, l, f; o = $1; l = $2; f = $3 } } END { print o, l, f }')
	[ "$got" = "$merged" ] && break
	sleep 0.02
done
[ "$got" = "$want" ] || [ "$got" = "$merged" ] || fail "map differs:
$got
want:
$want"
check "nbdinfo --map: data, zeroed and trimmed ranges and never-written holes as-of the point"

"$PYTHON" - "$XURI" <<'EOF' || fail "protocol checks"
import errno, nbd, sys
h = nbd.NBD(); h.add_meta_context("base:allocation"); h.connect_uri(sys.argv[1])
assert h.can_meta_context("base:allocation")
seen = []
def cb(ctx, off, entries, err):
    seen.append((ctx, off, list(entries)))
h.block_status(64 << 20, 0, cb, nbd.CMD_FLAG_REQ_ONE)
assert len(seen) == 1 and seen[0][0] == "base:allocation", seen
assert len(seen[0][2]) == 2, seen        # one (length, flags) pair
assert seen[0][2] == [1 << 20, 3], seen
# past the end: EINVAL from the server (client checks off)
h.set_strict_mode(0)
try:
    h.block_status(1 << 20, 64 << 20, cb)
    sys.exit("block status past the end succeeded")
except nbd.Error as e:
    assert e.errnum == errno.EINVAL, e
h.shutdown()
# without the context negotiated: EINVAL
h = nbd.NBD(); h.set_strict_mode(0); h.connect_uri(sys.argv[1])
try:
    h.block_status(4096, 0, cb)
    sys.exit("block status without a context succeeded")
except nbd.Error as e:
    assert e.errnum == errno.EINVAL, e
h.shutdown()
EOF
check "REQ_ONE gives one extent; past the end and without the context: EINVAL"

nbdcopy "$XURI" "$TMP/out.img" || fail "nbdcopy"
kill -TERM "$XPID"; wait "$XPID" || fail "export did not stop cleanly"
"$REWIND" restore --store "$STORE" d --at now --out "$TMP/r.img" >/dev/null || fail "restore"
cmp -s "$TMP/out.img" "$TMP/r.img" || fail "nbdcopy of the export differs from the restore"
check "nbdcopy (skipping holes) equals the restored image"
