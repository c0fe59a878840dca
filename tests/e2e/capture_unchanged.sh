#!/usr/bin/env bash
# capture_unchanged.sh — `serve --skip-unchanged`: a write of bytes the disk
# already holds is acknowledged (and read back) without growing the journal,
# a write that changes even one byte is journaled, FUA still works, and
# every restorable point stays exact.  Without the option every write is
# journaled.
. "$(dirname "$0")/functions.sh"
requires qemu-io
set -e
rw_setup
"$REWIND" create vm1 --size 16M >/dev/null
records() { "$REWIND" journal vm1 --summary --json | "$PYTHON" -c 'import json,sys; s=json.load(sys.stdin)["summary"]; print(s["writes"])'; }

start_server --skip-unchanged
U=$(uri vm1)
qemu-io -f raw -c 'write -P 0xaa 0 1M' -c flush "$U" >/dev/null
sleep 0.1
expect_eq "writes journaled after the first write" "$(records)" 1
# The same bytes again, a sub-range, and with FUA: nothing new.
qemu-io -f raw -c 'write -P 0xaa 0 1M' -c 'write -P 0xaa 4096 8192' \
	-c 'write -f -P 0xaa 65536 4096' -c flush "$U" >/dev/null
sleep 0.1
expect_eq "writes journaled after rewriting identical bytes" "$(records)" 1
# One changed byte is a real write.
qemu-io -f raw -c 'write -P 0xab 512 512' -c flush "$U" >/dev/null
sleep 0.1
expect_eq "writes journaled after a changed sector" "$(records)" 2
qemu-io -f raw -r -c 'read -P 0xaa 0 512' -c 'read -P 0xab 512 512' -c 'read -P 0xaa 1024 1047552' "$U" \
	| grep -q 'Pattern verification failed' && fail "read back differs"
"$REWIND" restore vm1 --at seq:1 --out "$TMP/p1.img" >/dev/null
qemu-io -f raw -r -c 'read -P 0xaa 0 1M' "$TMP/p1.img" | grep -q 'Pattern verification failed' && fail "restore as-of seq 1"
check "reads and restores exact with skipped writes"
stop_server

# Without the option, identical rewrites are history like any write.
start_server
qemu-io -f raw -c 'write -P 0xaa 0 1M' -c flush "$U" >/dev/null
sleep 0.1
expect_eq "writes journaled without --skip-unchanged" "$(records)" 3
stop_server
echo "capture_unchanged: all checks passed"
