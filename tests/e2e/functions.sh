# functions.sh — shared helpers for rewind's end-to-end scripts.
#
# Source it first:  . "$(dirname "$0")/functions.sh"
# It needs REWIND (absolute path of the rewind binary); run-tests.sh sets
# it and REWIND_BUILD.  Every script gets a private temporary directory
# ($TMP) with a fresh store ($STORE), a server it starts and stops by PID
# ($SERVER_PID), and a trap that kills that server and removes $TMP on
# any exit.  Exit 77 means "skipped" (a client tool is missing).

set -u
: "${REWIND:?set REWIND to the rewind binary}"
CLIENT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/capture_client.py"
SERVER_PID=
EXTRA_PIDS=   # other processes a script started (exports ...): killed on exit
TMP=
# The system python starts in milliseconds; a version-manager shim on PATH
# can take most of a second, which matters in the kill -9 loop.
if [ -x /usr/bin/python3 ]; then PYTHON=/usr/bin/python3; else PYTHON=python3; fi

# requires TOOL... — skip the script (exit 77) when a tool is missing.
requires() {
	local t
	for t in "$@"; do
		if ! command -v "$t" >/dev/null 2>&1; then
			echo "SKIP: '$t' is not installed"
			exit 77
		fi
	done
}

# is_sanitized — true for the ASan/UBSan build (slower: use smaller sizes).
is_sanitized() {
	case "${REWIND_BUILD:-}" in *san*) return 0 ;; esac
	return 1
}

fail() {
	echo "FAIL: $*"
	if [ -n "$TMP" ] && [ -f "$TMP/server.log" ]; then
		echo "--- server log (last 40 lines)"
		tail -n 40 "$TMP/server.log"
	fi
	exit 1
}

check() {
	printf "ok   [%3ds] %s\n" "$SECONDS" "$*"
}

rw_cleanup() {
	local rc=$? p
	for p in $EXTRA_PIDS; do
		kill -9 "$p" 2>/dev/null && wait "$p" 2>/dev/null || true
	done
	if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
		kill -9 "$SERVER_PID" 2>/dev/null
		wait "$SERVER_PID" 2>/dev/null || true
	fi
	SERVER_PID=
	if [ -n "$TMP" ]; then
		# an nbdfuse mount left behind would make rm fail: best effort
		fusermount3 -u "$TMP/fuse" 2>/dev/null || fusermount -u "$TMP/fuse" 2>/dev/null || true
		rm -rf "$TMP"
	fi
	exit $rc
}

# rw_setup — temporary directory, fresh store, cleanup trap.
rw_setup() {
	TMP=$(mktemp -d "${TMPDIR:-/tmp}/rwe2e.XXXXXX") || exit 1
	STORE=$TMP/s
	SOCK=$STORE/rewind.sock
	export REWIND_STORE=$STORE
	trap rw_cleanup EXIT
	trap 'exit 130' INT TERM
	"$REWIND" init --store "$STORE" >/dev/null || fail "rewind init"
}

# start_server [serve options] — starts the server, waits for its socket.
start_server() {
	rm -f "$SOCK"
	"$REWIND" serve --store "$STORE" "$@" >>"$TMP/server.log" 2>&1 &
	SERVER_PID=$!
	wait_for_socket "$SOCK" || fail "server did not come up"
}

# wait_for_socket PATH — up to 60 s (recovery under ASan can be slow).
wait_for_socket() {
	local i
	for i in $(seq 1 3000); do
		[ -S "$1" ] && return 0
		kill -0 "$SERVER_PID" 2>/dev/null || return 1
		sleep 0.02
	done
	return 1
}

# stop_server — SIGTERM, and the server must exit 0 (clean shutdown; under
# ASan this also means no leak was reported).
stop_server() {
	[ -n "$SERVER_PID" ] || return 0
	kill -TERM "$SERVER_PID"
	local rc=0
	wait "$SERVER_PID" || rc=$?
	SERVER_PID=
	[ $rc -eq 0 ] || fail "server exited $rc after SIGTERM"
	grep -q "closed cleanly" "$TMP/server.log" || fail "no clean shutdown in log"
}

# kill9_server — crash the server.
kill9_server() {
	[ -n "$SERVER_PID" ] || return 0
	kill -9 "$SERVER_PID" 2>/dev/null
	wait "$SERVER_PID" 2>/dev/null || true   # 137: must not trip set -e
	SERVER_PID=
}

# uri DISK — the NBD URI of a disk on the test server.
uri() {
	echo "nbd+unix:///$1?socket=$SOCK"
}

# journal_snapshot — records `rewind list --records --json` (it reads every
# record header of every journal) for journal_field to pick from.
journal_snapshot() {
	"$REWIND" list --store "$STORE" --records --json >"$TMP/journal.json" \
		|| fail "rewind list --records --json"
}

# journal_field DISK FIELD — a number from the last journal_snapshot.
journal_field() {
	"$PYTHON" -c '
import json, sys
d = [x for x in json.load(sys.stdin)["disks"] if x["name"] == sys.argv[1]][0]
print(d["journal"][sys.argv[2]] if sys.argv[2] in d["journal"] else d[sys.argv[2]])' "$1" "$2" <"$TMP/journal.json"
}

# last_seq DISK — the newest seq in DISK's journal (header-only scan).
last_seq() {
	"$REWIND" journal "$1" --summary --json --headers | "$PYTHON" -c \
		'import json,sys; print(json.load(sys.stdin)["summary"]["last_seq"])'
}

# sha_of FILE — its SHA-256, hex.
sha_of() { sha256sum <"$1" | cut -c1-64; }

# live_sha URI — SHA-256 of what an NBD client reads from URI now.
live_sha() { nbdcopy "$1" "$TMP/live.img" && sha_of "$TMP/live.img"; }

# restore_sha DISK AT — SHA-256 of `rewind restore DISK --at AT`.
restore_sha() {
	"$REWIND" restore "$1" --at "$2" --out "$TMP/r.img" --force >/dev/null &&
		sha_of "$TMP/r.img"
}

# expect_eq WHAT GOT WANT
expect_eq() {
	[ "$2" = "$3" ] || fail "$1: got '$2', want '$3'"
	check "$1 = $3"
}

# nbdsh runs "python3 -m nbd": the Debian python3-libnbd module lives in
# the system python, which may not be the first python3 on PATH.
have_nbdsh() {
	command -v nbdsh >/dev/null 2>&1 && PATH=/usr/bin:$PATH python3 -c 'import nbd' 2>/dev/null
}
run_nbdsh() {
	PATH=/usr/bin:$PATH nbdsh "$@"
}
