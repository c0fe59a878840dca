#!/usr/bin/env python3
"""capture_client.py — a raw NBD client for rewind's end-to-end tests.

Speaks just enough of the protocol (fixed newstyle, NBD_OPT_GO,
structured replies) to drive the server into corners real clients avoid:

  adversarial SOCK DISK SIZE   protocol abuse, each case followed by a
                               liveness check with a fresh connection
  writer SOCK DISK LOG NBLK    kill -9 workload: writes sequence-numbered
                               4 KiB blocks, flushes every 8th write, and
                               appends "ack N" / "flush N" lines to LOG
                               after each reply (runs until the server dies)
  check SOCK DISK LOG NBLK     after a restart: every acknowledged write is
                               there (or the one in flight when it died)

Exit 0 when every check passed, 1 with a message otherwise.
"""
import os
import socket
import struct
import sys
import time

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REPMAGIC = 0x0003E889045565A9
REQ_MAGIC = 0x25609513
SIMPLE = 0x67446698
STRUCT = 0x668E33EF

OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_GO, OPT_SR = 1, 2, 3, 7, 8
CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH, CMD_TRIM, CMD_WZ = 0, 1, 2, 3, 4, 6
FLAG_FUA, FLAG_NO_HOLE, FLAG_FAST_ZERO = 1, 2, 16
EINVAL, ENOSPC, ENOTSUP = 22, 28, 95
BS = 4096


class Closed(Exception):
    pass


def recvall(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise Closed("server closed the connection")
        buf += chunk
    return buf


def connect(path, timeout=20):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    return s


def greet(s):
    magic, opt, gflags = struct.unpack(">QQH", recvall(s, 18))
    assert magic == NBDMAGIC and opt == IHAVEOPT, "bad greeting"
    s.sendall(struct.pack(">I", 1))  # FIXED_NEWSTYLE
    return gflags


def send_opt(s, opt, data=b""):
    s.sendall(struct.pack(">QII", IHAVEOPT, opt, len(data)) + data)


def read_opt_reply(s):
    magic, opt, rtype, rlen = struct.unpack(">QIII", recvall(s, 20))
    assert magic == REPMAGIC, "bad option reply magic"
    return opt, rtype, recvall(s, rlen)


class Conn:
    """A connected, negotiated NBD session (GO + structured replies)."""

    def __init__(self, path, disk, structured=True):
        self.s = connect(path)
        greet(self.s)
        self.structured = False
        if structured:
            send_opt(self.s, OPT_SR)
            _, rtype, _ = read_opt_reply(self.s)
            self.structured = rtype == 1
        name = disk.encode()
        send_opt(self.s, OPT_GO, struct.pack(">I", len(name)) + name +
                 struct.pack(">H", 0))
        self.size = None
        while True:
            _, rtype, data = read_opt_reply(self.s)
            if rtype == 1:
                break
            if rtype & 0x80000000:
                raise Closed("GO refused: 0x%x %r" % (rtype, data))
            if rtype == 3 and struct.unpack(">H", data[:2])[0] == 0:
                self.size, self.eflags = struct.unpack(">QH", data[2:12])
        self.handle = 0

    def request(self, cmd, off, length, data=b"", flags=0, magic=REQ_MAGIC):
        self.handle += 1
        self.s.sendall(struct.pack(">IHHQQI", magic, flags, cmd, self.handle,
                                   off, length) + data)
        return self.handle

    def reply(self, want_len=0):
        """Returns (error, data) for the next reply."""
        magic = struct.unpack(">I", recvall(self.s, 4))[0]
        if magic == SIMPLE:
            err, _h = struct.unpack(">IQ", recvall(self.s, 12))
            data = recvall(self.s, want_len) if (err == 0 and want_len) else b""
            return err, data
        assert magic == STRUCT, "bad reply magic 0x%x" % magic
        data, err = b"", 0
        while True:
            flags, rtype, _h, length = struct.unpack(">HHQI", recvall(self.s, 16))
            payload = recvall(self.s, length)
            if rtype == 1:
                data += payload[8:]
            elif rtype & 0x8000:
                err = struct.unpack(">I", payload[:4])[0]
            if flags & 1:
                return err, data
            magic = struct.unpack(">I", recvall(self.s, 4))[0]

    def cmd(self, cmd, off, length, data=b"", flags=0):
        self.request(cmd, off, length, data, flags)
        return self.reply(length if cmd == CMD_READ else 0)

    def close(self):
        try:
            self.request(CMD_DISC, 0, 0)
        except OSError:
            pass
        self.s.close()


# ------------------------------------------------------------ adversarial

checks = 0


def ok(what):
    global checks
    checks += 1
    print("ok   %s" % what)


def fail(what):
    print("FAIL %s" % what)
    sys.exit(1)


def expect(cond, what):
    if cond:
        ok(what)
    else:
        fail(what)


def alive(path, disk, tag):
    """A fresh client can write and read back."""
    c = Conn(path, disk)
    pat = os.urandom(BS)
    e, _ = c.cmd(CMD_WRITE, 0, BS, pat)
    e2, back = c.cmd(CMD_READ, 0, BS)
    c.close()
    expect(e == 0 and e2 == 0 and back == pat, "alive after %s" % tag)


def closed_soon(s, secs=5):
    """The server dropped s within secs (reads EOF or reset)."""
    s.settimeout(secs)
    try:
        while True:
            if not s.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def adversarial(path, disk, size):
    size = int(size)

    # 1. Option claiming 4 GiB: rejected at once, nothing read or allocated.
    s = connect(path)
    greet(s)
    s.sendall(struct.pack(">QII", IHAVEOPT, OPT_GO, 0xFFFFFFFF))
    t0 = time.time()
    _, rtype, _ = read_opt_reply(s)
    expect(rtype == 0x80000009, "4 GiB option answered NBD_REP_ERR_TOO_BIG")
    expect(closed_soon(s) and time.time() - t0 < 5,
           "4 GiB option: connection dropped at once")
    s.close()
    alive(path, disk, "huge option")

    # 2. Bad option magic: hard disconnect.
    s = connect(path)
    greet(s)
    s.sendall(struct.pack(">QII", 0x1122334455667788, OPT_GO, 0))
    expect(closed_soon(s), "bad option magic: disconnected")
    s.close()

    # 3. Unknown client flags: disconnect.
    s = connect(path)
    recvall(s, 18)
    s.sendall(struct.pack(">I", 0x80))
    expect(closed_soon(s), "unknown client flags: disconnected")
    s.close()

    # 4. Unknown export, long export name (4096), over-long name (4097).
    for name, what in ((b"nope", "unknown export"),
                       (b"a" * 4096, "4096-byte export name"),
                       (b"../" * 1000 + b"etc/passwd", "path-like export name")):
        s = connect(path)
        greet(s)
        send_opt(s, OPT_GO, struct.pack(">I", len(name)) + name +
                 struct.pack(">H", 0))
        _, rtype, msg = read_opt_reply(s)
        expect(rtype == 0x80000006, "%s: NBD_REP_ERR_UNKNOWN (%s)" %
               (what, msg.decode(errors="replace")[:40]))
        s.close()
    s = connect(path)
    greet(s)
    name = b"b" * 4097
    send_opt(s, OPT_GO, struct.pack(">I", len(name)) + name + struct.pack(">H", 0))
    _, rtype, _ = read_opt_reply(s)
    expect(rtype == 0x80000003, "4097-byte export name: NBD_REP_ERR_INVALID")
    # name length field larger than the option
    send_opt(s, OPT_GO, struct.pack(">I", 1000) + b"vm")
    _, rtype, _ = read_opt_reply(s)
    expect(rtype == 0x80000003, "name length past option end: ERR_INVALID")
    send_opt(s, 99, b"xyz")
    _, rtype, _ = read_opt_reply(s)
    expect(rtype == 0x80000001, "unknown option 99: NBD_REP_ERR_UNSUP")
    send_opt(s, OPT_LIST)
    names = []
    while True:
        _, rtype, data = read_opt_reply(s)
        if rtype != 2:
            break
        names.append(data[4:4 + struct.unpack(">I", data[:4])[0]].decode())
    expect(rtype == 1 and disk in names, "NBD_OPT_LIST names %s" % disk)
    send_opt(s, OPT_ABORT)
    _, rtype, _ = read_opt_reply(s)
    expect(rtype == 1, "NBD_OPT_ABORT acknowledged")
    s.close()
    alive(path, disk, "option abuse")

    # 5. Transmission phase abuse on one connection that must survive.
    c = Conn(path, disk)
    e, _ = c.cmd(CMD_WRITE, size - BS, 2 * BS, b"\0" * 2 * BS)
    expect(e == ENOSPC, "write past the end: ENOSPC")
    e, _ = c.cmd(CMD_READ, size, BS)
    expect(e == EINVAL, "read past the end: EINVAL")
    e, _ = c.cmd(CMD_WRITE, 0xFFFFFFFFFFFFF000, BS, b"x" * BS)
    expect(e == ENOSPC, "write with offset+length overflow: ENOSPC")
    e, _ = c.cmd(CMD_READ, 0xFFFFFFFFFFFFFFFF, 2)
    expect(e == EINVAL, "read with offset+length overflow: EINVAL")
    e, _ = c.cmd(CMD_TRIM, 0xFFFFFFFFFFFFF000, 0xFFFFFFFF)
    expect(e == ENOSPC, "trim with overflow: ENOSPC")
    e, _ = c.cmd(17, 0, BS)
    expect(e == EINVAL, "unknown command 17: EINVAL")
    e, _ = c.cmd(CMD_WRITE, 0, BS, b"y" * BS, flags=0x40)
    expect(e == EINVAL, "write with unknown flag 0x40: EINVAL")
    e, _ = c.cmd(CMD_FLUSH, 4096, 0)
    expect(e == EINVAL, "flush with nonzero offset: EINVAL")
    e, _ = c.cmd(CMD_READ, 0, 0)
    expect(e == EINVAL, "zero-length read: EINVAL")
    e, _ = c.cmd(CMD_READ, 0, 33 * 1024 * 1024)
    expect(e == EINVAL, "33 MiB read: EINVAL")
    big = 33 * 1024 * 1024
    e, _ = c.cmd(CMD_WRITE, 0, big, b"\x5a" * big)
    expect(e == EINVAL, "33 MiB write: payload skipped, EINVAL")
    e, _ = c.cmd(CMD_WZ, 0, BS, flags=FLAG_FAST_ZERO | FLAG_NO_HOLE)
    expect(e in (0, ENOTSUP), "fast zero: answered (%d)" % e)
    e, data = c.cmd(CMD_READ, 0, BS)
    expect(e == 0 and data == b"\0" * BS if e == 0 else True,
           "fast zero left zeroes")
    e, _ = c.cmd(CMD_FLUSH, 0, 0)
    expect(e == 0, "connection still works after every bad request")
    c.close()

    # 6. Oversize write beyond what we skip: disconnect.
    c = Conn(path, disk)
    c.request(CMD_WRITE, 0, 0xFFFFFFFF)
    expect(closed_soon(c.s), "4 GiB write: disconnected without reading it")
    c.s.close()
    alive(path, disk, "oversize write")

    # 7. Bad request magic: disconnect.
    c = Conn(path, disk)
    c.request(CMD_READ, 0, BS, magic=0xDEADBEEF)
    expect(closed_soon(c.s), "bad request magic: disconnected")
    c.s.close()

    # 8. Mid-request disconnect: half a write is never journaled.
    c = Conn(path, disk)
    marker = b"\xee" * BS
    e, _ = c.cmd(CMD_WRITE, 8 * BS, BS, b"\x11" * BS)
    c.request(CMD_WRITE, 8 * BS, BS)
    c.s.sendall(marker[:1000])
    c.s.close()
    time.sleep(0.2)
    c = Conn(path, disk)
    e, data = c.cmd(CMD_READ, 8 * BS, BS)
    c.close()
    expect(e == 0 and data == b"\x11" * BS,
           "write cut mid-payload left the block as before")
    alive(path, disk, "mid-request disconnect")

    # 9. Out-of-order / pipelined: 64 requests in flight on one socket.
    c = Conn(path, disk)
    pats = {}
    for i in range(64):
        p = bytes([i]) * BS
        pats[i] = p
        c.request(CMD_WRITE, (16 + i) * BS, BS, p)
    errs = [c.reply()[0] for _ in range(64)]
    c.request(CMD_FLUSH, 0, 0)
    errs.append(c.reply()[0])
    good = all(e == 0 for e in errs)
    for i in range(64):
        e, d = c.cmd(CMD_READ, (16 + i) * BS, BS)
        good = good and e == 0 and d == pats[i]
    c.close()
    expect(good, "64 pipelined writes answered and read back")
    print("%d checks passed" % checks)


def handshake_timeout(path, disk, secs):
    """A client that stalls in the handshake is dropped after the deadline."""
    s = connect(path, timeout=int(secs) + 20)
    greet(s)
    s.sendall(struct.pack(">QI", IHAVEOPT, OPT_GO))  # half an option header
    t0 = time.time()
    dropped = closed_soon(s, int(secs) + 10)
    dt = time.time() - t0
    expect(dropped and dt < int(secs) + 5,
           "stalled handshake dropped after %.1fs (deadline %ss)" % (dt, secs))
    alive(path, disk, "handshake timeout")


def conn_cap(path, disk, cap):
    """Above the cap a new connection is closed; below it, it works."""
    cap = int(cap)
    held = [connect(path) for _ in range(cap)]
    for h in held:
        greet(h)
    extra = connect(path)
    expect(closed_soon(extra), "connection %d refused (cap %d)" % (cap + 1, cap))
    extra.close()
    for h in held:
        h.close()
    time.sleep(0.5)
    alive(path, disk, "connection cap")


# ------------------------------------------------------------ kill -9

def block_of(i, nblk):
    return (i * 7919) % nblk


def payload(i):
    head = struct.pack(">QQ", 0x5245574E44424C4B, i)  # "REWNDBLK", i
    return (head * (BS // 16))


def writer(path, disk, log, nblk):
    nblk = int(nblk)
    start = 1
    if os.path.exists(log):
        with open(log) as f:
            for line in f:
                parts = line.split()
                if parts and parts[0] in ("ack", "issue"):
                    start = max(start, int(parts[1]) + 1)
    out = open(log, "a", buffering=1)
    try:
        c = Conn(path, disk)
    except (OSError, Closed):
        return
    i = start
    try:
        while True:
            out.write("issue %d\n" % i)
            fua = 0
            e, _ = c.cmd(CMD_WRITE, block_of(i, nblk) * BS, BS, payload(i),
                         flags=fua)
            if e:
                out.write("error %d %d\n" % (i, e))
                return
            out.write("ack %d\n" % i)
            if i % 8 == 0:
                e, _ = c.cmd(CMD_FLUSH, 0, 0)
                if e == 0:
                    out.write("flush %d\n" % i)
            i += 1
    except (OSError, Closed, AssertionError, struct.error):
        pass


def check(path, disk, log, nblk, *more):
    """more: further DISK LOG pairs checked in the same run."""
    for i in range(0, len(more) - 1, 2):
        check(path, more[i], more[i + 1], nblk)
    nblk = int(nblk)
    acked, issued, flushed, base_acked = set(), set(), 0, 0
    with open(log) as f:
        for line in f:
            parts = line.split()
            if len(parts) < 2:
                continue
            n = int(parts[1])
            if parts[0] == "acked-total":
                # total so far, and how many "ack" lines below repeat it
                base_acked = n - int(parts[2])
                continue
            if parts[0] == "ack":
                acked.add(n)
            elif parts[0] == "issue":
                issued.add(n)
            elif parts[0] == "flush":
                flushed = max(flushed, n)
    last = {}     # block -> newest acknowledged write
    pending = {}  # block -> writes issued but never acknowledged
    for n in sorted(issued):
        b = block_of(n, nblk)
        if n in acked:
            last[b] = n
            pending.pop(b, None)
        else:
            pending.setdefault(b, set()).add(n)
    c = Conn(path, disk)
    bad = 0
    for b, n in sorted(last.items()):
        e, data = c.cmd(CMD_READ, b * BS, BS)
        if e:
            fail("read of block %d failed: %d" % (b, e))
        got = struct.unpack(">QQ", data[:16])[1] if data[:8] == payload(0)[:8] else 0
        if data == payload(n) or (got in pending.get(b, ()) and data == payload(got)):
            continue
        bad += 1
        print("block %d: expected write %d, found %r" % (b, n, data[:16]))
    c.close()
    if bad:
        fail("%d blocks lost acknowledged writes" % bad)
    print("ok   %s: %d acknowledged writes (%d flushed) all present over %d "
          "blocks" % (disk, len(acked), flushed, len(last)))
    # Compact the log to what later checks need (newest acknowledged write
    # and unacknowledged ones per block), so long campaigns stay linear.
    # The writer is not running while we check.
    tmp = log + ".tmp"
    with open(tmp, "w") as f:
        f.write("acked-total %d %d\n" % (len(acked) + base_acked, len(last)))
        if flushed:
            f.write("flush %d\n" % flushed)
        for b in sorted(set(last) | set(pending)):
            if b in last:
                f.write("issue %d\nack %d\n" % (last[b], last[b]))
            for n in sorted(pending.get(b, ())):
                f.write("issue %d\n" % n)
    os.replace(tmp, log)


# ------------------------------------------------------------ failures

def sticky(path, disk):
    """Writes and flushes until something fails (a fault armed in the
    server); from then on every write and flush must fail too, with EIO,
    while reads keep working."""
    c = Conn(path, disk)
    first = None
    for i in range(200):
        e, _ = c.cmd(CMD_WRITE, i * BS, BS, payload(i + 1))
        if e == 0:
            e, _ = c.cmd(CMD_FLUSH, 0, 0)
        if e:
            first = (i, e)
            break
    if first is None:
        fail("no failure happened: the fault was not armed?")
    ok("first failure at write/flush %d: error %d" % first)
    for j in range(5):
        e, _ = c.cmd(CMD_WRITE, (300 + j) * BS, BS, payload(1000 + j))
        if e != 5:
            fail("write after a failed sync answered %d, want EIO (5)" % e)
        e, _ = c.cmd(CMD_FLUSH, 0, 0)
        if e != 5:
            fail("flush after a failed sync answered %d, want EIO (5)" % e)
    ok("after the failed sync, writes and flushes keep failing with EIO")
    e, _ = c.cmd(CMD_READ, 0, BS)
    expect(e == 0, "reads still work")
    c.close()
    c = Conn(path, disk)
    e, _ = c.cmd(CMD_WRITE, 400 * BS, BS, payload(2000))
    expect(e == 5, "a new connection is refused writes too (EIO)")
    c.close()
    print("flushed-ok %d" % first[0])


def fill(path, disk, log):
    """Writes distinct blocks, flushing every 16, until the server answers
    ENOSPC; logs what was flushed.  Later failures must come quickly."""
    c = Conn(path, disk)
    out = open(log, "w", buffering=1)
    i, flushed = 0, 0
    while True:
        e, _ = c.cmd(CMD_WRITE, i * BS, BS, os.urandom(16) + payload(i + 1)[16:])
        if e:
            break
        i += 1
        if i % 16 == 0:
            e, _ = c.cmd(CMD_FLUSH, 0, 0)
            if e:
                break
            flushed = i
            out.write("flushed %d\n" % flushed)
        if i > 1000000:
            fail("the filesystem never filled")
    expect(e == ENOSPC, "full filesystem: write answered ENOSPC after %d "
           "writes (%d flushed)" % (i, flushed))
    t0 = time.time()
    for j in range(10):
        e, _ = c.cmd(CMD_WRITE, j * BS, BS, payload(j + 1))
        if e == 0:
            continue  # space may come back (punched or freed); fine
        if e not in (ENOSPC, 5):
            fail("write on a full filesystem answered %d" % e)
    expect(time.time() - t0 < 5, "further writes answered quickly")
    c.close()


def check_fill(path, disk, log):
    flushed = 0
    with open(log) as f:
        for line in f:
            flushed = int(line.split()[1])
    c = Conn(path, disk)
    for i in range(flushed):
        e, data = c.cmd(CMD_READ, i * BS, BS)
        if e or data[16:] != payload(i + 1)[16:]:
            fail("flushed block %d lost after the disk filled" % i)
    c.close()
    ok("all %d flushed blocks readable after restart" % flushed)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    try:
        {"adversarial": adversarial, "writer": writer, "check": check,
         "handshake-timeout": handshake_timeout,
         "conn-cap": conn_cap, "sticky": sticky, "fill": fill,
         "check-fill": check_fill,
         "adversarial-alive": lambda p, d: alive(p, d, "restart")}[cmd](*args)
    except (Closed, AssertionError, OSError) as e:
        fail("%s: %s" % (cmd, e))
