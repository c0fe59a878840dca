#!/bin/sh
# install.sh [BUILD_DIR] — installs rewind and its compaction units.
#
#   PREFIX   (default /usr/local)  the binary goes to $DESTDIR$PREFIX/bin
#   DESTDIR  (default empty)       staging root for packaging
#   UNITDIR  (default /lib/systemd/system) under $DESTDIR
#
# The unit's ExecStart names $PREFIX/bin/rewind.  Installs
# rewind-compact@.service / .timer and, if absent, /etc/default/rewind-compact.
# Enable for one store with:
#   systemctl enable --now rewind-compact@$(systemd-escape --path /var/lib/rewind/store).timer
# or use the cron line in contrib/systemd/rewind-compact@.timer.
set -eu
B=${1:-build}
top=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=${PREFIX:-/usr/local}
DESTDIR=${DESTDIR:-}
UNITDIR=${UNITDIR:-/lib/systemd/system}
[ -x "$top/$B/rewind" ] || { echo "install.sh: $top/$B/rewind is missing: run make first" >&2; exit 1; }
install -d "$DESTDIR$PREFIX/bin" "$DESTDIR$UNITDIR" "$DESTDIR/etc/default"
install -m 0755 "$top/$B/rewind" "$DESTDIR$PREFIX/bin/rewind"
sed "s|/usr/local/bin/rewind|$PREFIX/bin/rewind|" "$top/contrib/systemd/rewind-compact@.service" \
	>"$DESTDIR$UNITDIR/rewind-compact@.service"
chmod 0644 "$DESTDIR$UNITDIR/rewind-compact@.service"
install -m 0644 "$top/contrib/systemd/rewind-compact@.timer" "$DESTDIR$UNITDIR/rewind-compact@.timer"
[ -e "$DESTDIR/etc/default/rewind-compact" ] ||
	install -m 0644 "$top/contrib/systemd/rewind-compact.default" "$DESTDIR/etc/default/rewind-compact"
echo "installed $DESTDIR$PREFIX/bin/rewind and rewind-compact@.{service,timer} in $DESTDIR$UNITDIR"
