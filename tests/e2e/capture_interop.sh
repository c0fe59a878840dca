#!/usr/bin/env bash
# capture_interop.sh — real NBD clients against `rewind serve`: nbdinfo,
# nbdcopy, qemu-io, qemu-img, nbdsh, fio; after each client, the journal
# must hold exactly the writes the client made (count and bytes), and at
# the end the server stops cleanly and `rewind verify` finds the index
# consistent with the journals.
. "$(dirname "$0")/functions.sh"
requires nbdinfo nbdcopy qemu-io qemu-img python3 cmp
rw_setup

if is_sanitized; then BIG=256M; BIGB=$((256 << 20)); FIOSZ=8M; else BIG=1G; BIGB=$((1 << 30)); FIOSZ=32M; fi
"$REWIND" create vm1 --size $BIG >/dev/null || fail "create vm1"
"$REWIND" create vm2 --size 64M >/dev/null || fail "create vm2"
"$REWIND" create vm3 --size 128M >/dev/null || fail "create vm3"
PORT=$((20000 + RANDOM % 20000))
start_server --listen 127.0.0.1:$PORT

# --- nbdinfo: size and flags
nbdinfo --json "$(uri vm1)" >"$TMP/info.json" || fail "nbdinfo"
"$PYTHON" - "$TMP/info.json" "$BIGB" <<'PY' || fail "nbdinfo flags"
import json, sys
e = json.load(open(sys.argv[1]))["exports"][0]
want = {"export-size": int(sys.argv[2]), "can_flush": True, "can_fua": True,
        "can_trim": True, "can_zero": True, "can_fast_zero": True,
        "can_multi_conn": True, "is_read_only": False,
        "block_size_minimum": 512, "block_size_maximum": 32 << 20}
bad = {k: (e.get(k), v) for k, v in want.items() if e.get(k) != v}
if bad:
    print("mismatch:", bad); sys.exit(1)
PY
check "nbdinfo: size $BIG, flush/fua/trim/zero/fast-zero/multi-conn, block sizes"
nbdinfo --list "$(uri vm1)" | grep -q 'export="vm2"' || fail "nbdinfo --list"
check "nbdinfo --list shows every disk"
nbdinfo "nbd://127.0.0.1:$PORT/vm2" | grep -q "export-size: 67108864" || fail "TCP"
check "TCP listener serves vm2"

# --- nbdcopy in and out
# openssl's AES-CTR stream is random-looking data at a few GB/s;
# /dev/urandom is several times slower
if command -v openssl >/dev/null 2>&1; then
	openssl enc -aes-128-ctr -pass pass:rewind$RANDOM -nosalt -pbkdf2 </dev/zero 2>/dev/null | head -c $BIGB >"$TMP/big.img"
else
	head -c $BIGB /dev/urandom >"$TMP/big.img"
fi
[ "$(stat -c %s "$TMP/big.img")" = $BIGB ] || fail "test image"
t0=$(date +%s.%N)
timeout -s KILL 300 nbdcopy "$TMP/big.img" "$(uri vm1)" || fail "nbdcopy in"
t1=$(date +%s.%N)
timeout -s KILL 300 nbdcopy "$(uri vm1)" "$TMP/back.img" || fail "nbdcopy out"
t2=$(date +%s.%N)
cmp "$TMP/big.img" "$TMP/back.img" || fail "nbdcopy round trip differs"
check "nbdcopy $BIG in ($(echo "$t1 - $t0" | bc -l | cut -c1-5)s) and out ($(echo "$t2 - $t1" | bc -l | cut -c1-5)s), cmp equal"
rm -f "$TMP/back.img"
journal_snapshot
wb=$(journal_field vm1 write_bytes); zb=$(journal_field vm1 zero_bytes)
expect_eq "vm1 journal write+zero bytes after nbdcopy" $((wb + zb)) $BIGB
expect_eq "vm1 journal trims" "$(journal_field vm1 trims)" 0

# --- qemu-io: write -P, write -f (FUA), write -z, discard, read -P
QIO=(-c 'write -P 0xab 0 64k' -c 'write -f -P 0xcd 64k 64k' -c 'write -z 128k 64k'
     -c 'discard 192k 64k' -c 'write -P 0x11 1M 4k' -c 'write -z -u 2M 128k')
timeout -s KILL 60 qemu-io -f raw "${QIO[@]}" "$(uri vm2)" >"$TMP/qio.log" || fail "qemu-io writes"
timeout -s KILL 60 qemu-io -f raw -c 'read -P 0xab 0 64k' -c 'read -P 0xcd 64k 64k' \
	-c 'read -P 0 128k 128k' -c 'read -P 0x11 1M 4k' -c 'read -P 0 2M 128k' \
	"$(uri vm2)" >"$TMP/qio2.log" || fail "qemu-io read -P"
grep -q "Pattern verification failed" "$TMP/qio2.log" && fail "qemu-io pattern"
check "qemu-io write -P, write -f (FUA), write -z, discard, read -P"
journal_snapshot
expect_eq "vm2 journal writes" "$(journal_field vm2 writes)" 3
expect_eq "vm2 journal write bytes" "$(journal_field vm2 write_bytes)" $((64 * 1024 * 2 + 4096))
expect_eq "vm2 journal zero+trim records" $(( $(journal_field vm2 zeroes) + $(journal_field vm2 trims) )) 3
expect_eq "vm2 journal zero+trim bytes" $(( $(journal_field vm2 zero_bytes) + $(journal_field vm2 trim_bytes) )) $((64 * 1024 * 2 + 128 * 1024))

# --- qemu-img compare against a reference made by the same commands
truncate -s 64M "$TMP/ref.raw"
qemu-io -f raw "${QIO[@]}" "$TMP/ref.raw" >/dev/null || fail "reference"
timeout -s KILL 60 qemu-img compare -f raw -F raw "$TMP/ref.raw" "$(uri vm2)" >/dev/null \
	|| fail "qemu-img compare"
check "qemu-img compare: vm2 equals the reference image"

# --- nbdsh: option-level negotiation
if have_nbdsh; then
	run_nbdsh -c "
import nbd
h.set_opt_mode(True)
h.connect_unix('$SOCK')
names = []
h.opt_list(lambda n, d: names.append(n))
assert sorted(names) == ['vm1', 'vm2', 'vm3'], names
h.set_export_name('vm2')
h.opt_info()
assert h.get_size() == 64 << 20
assert h.get_block_size(nbd.SIZE_MAXIMUM) == 32 << 20
h.set_export_name('no-such-disk')
try:
    h.opt_info()
    raise SystemExit('opt_info of a missing disk succeeded')
except nbd.Error:
    pass
h.set_export_name('vm2')
h.opt_go()
assert h.can_multi_conn() and h.can_fua() and h.can_fast_zero()
assert h.pread(4096, 0) == b'\xab' * 4096
h.shutdown()
" || fail "nbdsh option negotiation"
	check "nbdsh: opt_list, opt_info (known and unknown disk), opt_go, pread"
else
	echo "note: nbdsh not installed, option-level nbdsh checks skipped"
fi

# --- fio with verify, QD 32, 2 connections
if command -v fio >/dev/null 2>&1 && fio --enghelp 2>/dev/null | grep -qw nbd; then
	journal_snapshot
	before=$(journal_field vm3 writes)
	timeout -s KILL 180 fio --name=v --ioengine=nbd --uri="$(uri vm3)" \
		--rw=randwrite --bs=4k --iodepth=32 --numjobs=2 --size=$FIOSZ \
		--offset_increment=$FIOSZ --verify=crc32c --do_verify=1 \
		--verify_fatal=1 --group_reporting >"$TMP/fio.log" 2>&1 \
		|| { cat "$TMP/fio.log"; fail "fio verify"; }
	grep -q "err= 0" "$TMP/fio.log" || fail "fio reported errors"
	n=$(( $(numfmt --from=iec ${FIOSZ}) * 2 / 4096 ))
	check "fio nbd randwrite QD32 x 2 connections, crc32c verify passed"
	journal_snapshot
	expect_eq "vm3 journal writes after fio" $(( $(journal_field vm3 writes) - before )) $n
else
	echo "note: fio without the nbd engine, fio checks skipped"
fi

stop_server
check "server stopped cleanly on SIGTERM (exit 0)"
if "$REWIND" verify --help >/dev/null 2>&1; then
	"$REWIND" verify --store "$STORE" >"$TMP/verify.log" 2>&1 || { cat "$TMP/verify.log"; fail "rewind verify"; }
	check "rewind verify: index consistent with journals"
fi
journal_snapshot
hs=$(journal_field vm1 head_synced_seq); ls=$(journal_field vm1 last_seq)
[ "$hs" -ge "$ls" ] || fail "head_synced_seq $hs < last seq $ls after clean stop"
check "head_synced_seq covers the journal after a clean stop"

# restart: the data is still there
start_server
timeout -s KILL 300 nbdcopy "$(uri vm1)" "$TMP/back.img" || fail "nbdcopy after restart"
cmp "$TMP/big.img" "$TMP/back.img" || fail "content after restart differs"
check "after restart vm1 reads back what nbdcopy wrote"
stop_server
echo "capture_interop: all checks passed"
