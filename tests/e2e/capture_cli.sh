#!/usr/bin/env bash
# capture_cli.sh — the store/disk commands of the capture issue as a user
# meets them: --help on stdout with exit 0; init refuses an existing store;
# create parses sizes and rejects bad names; import keeps a sparse image
# sparse and serves its bytes; list --json is valid JSON; a second server
# and a create are refused while a server holds the store, and every error
# names the store or disk involved.
. "$(dirname "$0")/functions.sh"
requires python3 nbdcopy cmp
rw_setup

for c in init create import list serve; do
	out=$("$REWIND" $c --help) || fail "rewind $c --help exit status"
	echo "$out" | grep -q "^usage: rewind $c" || fail "rewind $c --help"
done
check "init/create/import/list/serve --help print usage on stdout, exit 0"

err=$("$REWIND" init --store "$STORE" 2>&1) && fail "init on an existing store succeeded"
echo "$err" | grep -q "$STORE" || fail "init error does not name the store: $err"
check "init refuses an existing store: $err"

"$REWIND" create vm1 --size 512M >/dev/null || fail "create 512M"
"$REWIND" create big --size 20G --block-size 64K >/dev/null || fail "create 20G"
err=$("$REWIND" create vm1 --size 1M 2>&1) && fail "duplicate create succeeded"
echo "$err" | grep -q "vm1" || fail "duplicate error does not name the disk"
check "create: sizes 512M and 20G, duplicate refused: $err"
"$REWIND" create 'bad/name' --size 1M >/dev/null 2>&1; [ $? -eq 2 ] || fail "bad name not a usage error"
"$REWIND" create vm9 --size 12Q >/dev/null 2>&1; [ $? -eq 2 ] || fail "bad size not a usage error"
check "bad names and sizes are usage errors (exit 2)"

# a sparse 256 MiB image with 3 MiB of data in two places
truncate -s 256M "$TMP/img.raw"
head -c 1M /dev/urandom | dd of="$TMP/img.raw" bs=1M seek=10 conv=notrunc status=none
head -c 2M /dev/urandom | dd of="$TMP/img.raw" bs=1M seek=200 conv=notrunc status=none
"$REWIND" import imp "$TMP/img.raw" >/dev/null || fail "import"
used=$(du -k "$STORE/disks/imp/head.img" | cut -f1)
[ "$used" -lt 8192 ] || fail "imported head uses ${used} KiB: not sparse"
check "import of a sparse 256 MiB image uses ${used} KiB"
err=$("$REWIND" import imp2 "$TMP/nope.raw" 2>&1) && fail "import of a missing file succeeded"
echo "$err" | grep -q "nope.raw" || fail "import error does not name the file"

"$REWIND" list --json >"$TMP/list.json" || fail "list --json"
"$PYTHON" - "$TMP/list.json" <<'PY' || fail "list --json content"
import json, sys
d = {x["name"]: x for x in json.load(open(sys.argv[1]))["disks"]}
assert d["vm1"]["size"] == 512 << 20, d["vm1"]
assert d["big"]["size"] == 20 << 30 and d["big"]["block_size"] == 65536, d["big"]
assert d["imp"]["size"] == 256 << 20
PY
"$REWIND" list | grep -q "^imp " || fail "list table"
check "list --json and the table show every disk with size and block size"

start_server
err=$("$REWIND" serve --store "$STORE" --socket "$TMP/other.sock" 2>&1) && fail "second server started"
echo "$err" | grep -q "in use" || fail "second server error: $err"
check "a second server is refused: $(echo "$err" | tail -1 | cut -c26-)"
err=$("$REWIND" create vm2 --size 1M 2>&1) && fail "create while serving succeeded"
check "create while serving is refused: $err"
"$REWIND" list >/dev/null || fail "list while serving"
check "list works while the store is served"
timeout -s KILL 60 nbdcopy "$(uri imp)" "$TMP/back.raw" || fail "nbdcopy imp"
cmp "$TMP/img.raw" "$TMP/back.raw" || fail "imported disk serves different bytes"
check "the imported disk serves the image's bytes"
stop_server
echo "capture_cli: all checks passed"
