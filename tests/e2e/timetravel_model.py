#!/usr/bin/env python3
"""timetravel_model.py — workload and verifier for timetravel_model.sh.

  workload  drives a disk served by `rewind serve` with real clients (the
            libnbd Python binding for hundreds of precise requests — single,
            unaligned, zero, trim, FUA, flush, and batches of concurrent
            requests — plus qemu-io commands and a short fio run), and marks
            moments with `rewind mark`.  Every request is bracketed by client
            clock readings taken just before it is sent and just after its
            reply.  Writes the op log (enough to replay the expected disk) to
            STATE.json.
  plan      reads the journal once, assigns every record to the request that
            made it (by the client brackets; the record's ts must fall inside
            its request's bracket, and a single request's record must be
            exactly what was sent), and chooses the points in time:
            seq:N, @ts exactly, @ts-1ns, @ts-1us, @ts+1us, ISO 8601 forms,
            client clock readings between requests, marks, before the first
            write.  Replays the ops on a local model and stores the expected
            image digest at every point.
  verify    restores the disk as-of every point with `rewind restore` and
            compares the image digest and the resolved seq with the model.
  lagprobe  a write, then at once a restore as-of a moment after its reply.

The image digest is sha256 over (block number, block bytes) of every
non-zero 4 KiB block: equal digests mean equal images bit for bit, and a
sparse restored image is read with SEEK_DATA/SEEK_HOLE only where it has data.
"""
import argparse
import concurrent.futures as cf
import datetime
import errno
import hashlib
import json
import os
import random
import subprocess
import sys
import time

BS = 4096
DATA_TYPES = ("write", "zero", "trim")
ZERO_BS = bytes(BS)
CHUNK = 1 << 20
ZERO_CHUNK = bytes(CHUNK)


def die(msg):
    print("FAIL: " + msg, flush=True)
    sys.exit(1)


# ---------------------------------------------------------------- data

def gen_data(seed, n):
    """Reproducible payload: random, a fill byte, a repeated chunk, or zeroes."""
    r = random.Random(seed)
    k = seed % 5
    if k in (0, 1):
        return r.randbytes(n)
    if k == 2:
        return bytes([r.randrange(1, 256)]) * n
    if k == 3:
        c = r.randbytes(r.choice((7, 64, 512)))
        return (c * (n // len(c) + 1))[:n]
    return bytes(n)  # a WRITE of zero bytes (not WRITE_ZEROES)


def op_bytes(op, blobdir):
    k = op["kind"]
    if k == "write":
        if "pattern" in op:
            return bytes([op["pattern"]]) * op["len"]
        return gen_data(op["seed"], op["len"])
    if k in ("zero", "trim"):
        return bytes(op["len"])
    if k == "blob":
        with open(os.path.join(blobdir, op["file"]), "rb") as f:
            b = f.read()
        assert len(b) == op["len"]
        return b
    raise ValueError(k)


def bhash(blk):
    return hashlib.sha256(blk).digest()


ZERO_H = bhash(ZERO_BS)


def image_digest(blocks):
    """blocks: {block number: sha256 of the block} for non-zero blocks."""
    h = hashlib.sha256()
    h.update(b"".join(b.to_bytes(8, "little") + blocks[b] for b in sorted(blocks)))
    return h.hexdigest()


class Model:
    def __init__(self, size, blobdir, base=None):
        self.buf = bytearray(size)
        self.blocks = {}
        self.blobdir = blobdir
        if base:
            with open(os.path.join(blobdir, base), "rb") as f:
                f.readinto(self.buf)
            mv = memoryview(self.buf)
            for b in range(size // BS):
                hb = bhash(mv[b * BS:(b + 1) * BS])
                if hb != ZERO_H:
                    self.blocks[b] = hb

    def apply(self, op):
        off, n = op["off"], op["len"]
        if n == 0:
            return
        self.buf[off:off + n] = op_bytes(op, self.blobdir)
        mv = memoryview(self.buf)
        for b in range(off // BS, (off + n - 1) // BS + 1):
            hb = bhash(mv[b * BS:(b + 1) * BS])
            if hb == ZERO_H:
                self.blocks.pop(b, None)
            else:
                self.blocks[b] = hb

    def digest(self):
        return image_digest(self.blocks)


def file_digest(path, size):
    st = os.stat(path)
    if st.st_size != size:
        return "size %d, want %d" % (st.st_size, size)
    blocks = {}
    fd = os.open(path, os.O_RDONLY)
    try:
        pos = 0
        while pos < size:
            try:
                d = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:
                    break
                raise
            e_ = os.lseek(fd, d, os.SEEK_HOLE)
            d0 = max(pos, d // BS * BS)
            e1 = min(size, -(-e_ // BS) * BS)
            while d0 < e1:
                n = min(CHUNK, e1 - d0)
                data = os.pread(fd, n, d0)
                if len(data) != n:
                    raise IOError("short read in %s" % path)
                if not (n == CHUNK and data == ZERO_CHUNK):
                    mv = memoryview(data)
                    for i in range(0, n, BS):
                        blk = mv[i:i + BS]
                        if blk != ZERO_BS:
                            blocks[(d0 + i) // BS] = bhash(blk)
                d0 += n
            pos = e1
    finally:
        os.close(fd)
    return image_digest(blocks)


def at_epoch(ns):
    return "@%d.%09d" % (ns // 10**9, ns % 10**9)


def at_iso(ns, variant):
    s, frac = divmod(ns, 10**9)
    if variant == 0:
        t = datetime.datetime.fromtimestamp(s, datetime.timezone.utc)
        return t.strftime("%Y-%m-%dT%H:%M:%S") + ".%09dZ" % frac
    if variant == 1:
        tz = datetime.timezone(datetime.timedelta(hours=5, minutes=30))
        t = datetime.datetime.fromtimestamp(s, tz)
        return t.strftime("%Y-%m-%dT%H:%M:%S") + ".%09d+05:30" % frac
    tz = datetime.timezone(datetime.timedelta(hours=-3))
    t = datetime.datetime.fromtimestamp(s, tz)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + ".%09d-03:00" % frac


def run_rewind(a, *args, check=True):
    r = subprocess.run([a.rewind, *args, "--store", a.store],
                       capture_output=True, text=True)
    if check and r.returncode != 0:
        die("rewind %s: exit %d: %s" % (" ".join(args), r.returncode,
                                        r.stderr.strip()))
    return r


# ---------------------------------------------------------------- workload

def workload(a):
    import nbd
    rnd = random.Random(a.seed)
    size = a.size
    ops = []          # in client order; each has b (sent) and a (replied)
    events = []       # client clock points: (ns, number of ops before)
    marks = []
    blobdir = os.path.dirname(os.path.abspath(a.state))
    t_start = time.time_ns()
    events.append({"ns": t_start, "nops": 0, "why": "before the first write"})

    def connect():
        c = nbd.NBD()
        # unaligned requests on purpose (the server advertises 512 as its
        # minimum block size but must take any byte range)
        c.set_strict_mode(c.get_strict_mode() & ~nbd.STRICT_ALIGN)
        c.connect_uri(a.uri)
        return c

    h = connect()
    if h.get_size() != size:
        die("export size %d, want %d" % (h.get_size(), size))

    hot = min(size // 4, 512 << 10)   # overwritten again and again
    lens = [1, 17, 511, 512, 777, 1000, 1536, 4095, 4096, 4097, 8192,
            12345, 16384, 65536, 65537, 131072]

    def pick_range(maxlen=None):
        n = rnd.choice(lens)
        if maxlen:
            n = min(n, maxlen)
        if rnd.random() < 0.01:
            n = (1 << 20) + 123
        region = hot if rnd.random() < 0.6 else size
        style = rnd.random()
        if style < 0.4:
            off = rnd.randrange(0, max(1, region - n)) // BS * BS
        elif style < 0.6:
            off = rnd.randrange(0, max(1, region - n)) // 512 * 512
        else:
            off = rnd.randrange(0, max(1, region - n))
        if off + n > size:
            n = size - off
        return off, n

    seedc = [a.seed * 100000]

    def nextseed():
        seedc[0] += 1
        return seedc[0]

    def one(kind, off, n, fua=False, extra=0):
        op = {"kind": kind, "off": off, "len": n, "src": "nbd", "fua": fua}
        flags = (nbd.CMD_FLAG_FUA if fua else 0) | extra
        if kind == "write":
            op["seed"] = nextseed()
            data = gen_data(op["seed"], n)
        op["b"] = time.time_ns()
        if kind == "write":
            h.pwrite(data, off, flags)
        elif kind == "zero":
            h.zero(n, off, flags)
        else:
            h.trim(n, off, flags)
        op["a"] = time.time_ns()
        ops.append(op)

    def batch(k):
        # k concurrent writes/zeroes in distinct 64 KiB slots (no two
        # overlap, so each record is matched to its request by range)
        slots = rnd.sample(range(0, size // 65536), k)
        sub = []
        bufs = []
        for s in slots:
            n = rnd.choice((512, 777, 4096, 5000, 32768, 65536))
            off = s * 65536 + rnd.randrange(0, 65536 - n + 1)
            kind = "write" if rnd.random() < 0.8 else "zero"
            op = {"kind": kind, "off": off, "len": n, "src": "nbd-aio"}
            if kind == "write":
                op["seed"] = nextseed()
            sub.append(op)
        b = time.time_ns()
        cookies = []
        for op in sub:
            if op["kind"] == "write":
                buf = nbd.Buffer.from_bytearray(bytearray(gen_data(op["seed"], op["len"])))
                bufs.append(buf)
                cookies.append(h.aio_pwrite(buf, op["off"]))
            else:
                cookies.append(h.aio_zero(op["len"], op["off"]))
        while h.aio_in_flight() > 0:
            h.poll(-1)
        for c in cookies:
            if not h.aio_command_completed(c):
                die("aio command %d did not complete" % c)
        t = time.time_ns()
        ops.append({"kind": "batch", "sub": sub, "b": b, "a": t, "src": "nbd-aio"})

    def mark(label):
        b = time.time_ns()
        run_rewind(a, "mark", a.disk, label)
        t = time.time_ns()
        marks.append({"label": label, "nops": len(ops), "b": b, "a": t})

    def qio(cmd, kind, off, n, pattern=None):
        b = time.time_ns()
        r = subprocess.run(["timeout", "-s", "KILL", "60", "qemu-io", "-f", "raw",
                            "-c", cmd, a.uri], capture_output=True, text=True)
        t = time.time_ns()
        if r.returncode != 0 or "failed" in r.stdout + r.stderr:
            die("qemu-io %r: %s %s" % (cmd, r.stdout, r.stderr))
        if kind is None:
            events.append({"ns": t, "nops": len(ops), "why": "after qemu-io " + cmd})
            return
        op = {"kind": kind, "off": off, "len": n, "src": "qemu-io", "cmd": cmd,
              "b": b, "a": t}
        if pattern is not None:
            op["pattern"] = pattern
        ops.append(op)

    nops = a.ops
    marks_at = set(rnd.sample(range(10, nops - 10), 5))
    mi = 0
    for i in range(nops):
        if i in marks_at:
            mi += 1
            mark("m%d" % mi)
        x = rnd.random()
        if i % 40 == 20:
            batch(rnd.randrange(3, 9))
        elif x < 0.50:
            off, n = pick_range()
            one("write", off, n)
        elif x < 0.62:
            off, n = pick_range()
            one("write", off, n, fua=True)
        elif x < 0.74:
            off, n = pick_range()
            one("zero", off, n, fua=rnd.random() < 0.3,
                extra=nbd.CMD_FLAG_NO_HOLE if rnd.random() < 0.5 else 0)
        elif x < 0.84:
            off, n = pick_range()
            one("trim", off, n)
        else:
            h.flush()
            events.append({"ns": time.time_ns(), "nops": len(ops), "why": "after a flush"})
        if i == nops // 2:
            # a new connection half way
            h.shutdown()
            h = connect()
    h.flush()
    events.append({"ns": time.time_ns(), "nops": len(ops), "why": "after the last flush"})

    # qemu-io: pattern writes (a partial block at an unaligned offset,
    # one straddling two blocks), FUA, zeroes (unaligned: qemu may split
    # them), an aligned discard, flush
    q = hot // 2 // BS * BS
    qio("write -P 0x5a %d 777" % (q + 1000), "write", q + 1000, 777, 0x5a)
    qio("write -P 0xa5 %d 2" % (q + 8191), "write", q + 8191, 2, 0xa5)
    qio("write -f -P 0x11 %d 12k" % (q + 65536), "write", q + 65536, 12288, 0x11)
    qio("write -z %d 5000" % (q + 70000), "zero", q + 70000, 5000)
    qio("discard %d 64k" % (q + 131072), "trim", q + 131072, 65536)
    qio("write -z -u %d 64k" % (q + 262144), "zero", q + 262144, 65536)
    qio("write -P 0xc3 %d 100000" % (q + 300001), "write", q + 300001, 100000, 0xc3)
    qio("flush", None, 0, 0)
    mark("after-qemu-io")

    # fio: random 4k writes with crc32c verify, then the region is read
    # back as the model's contents (fio's data is its own)
    if not a.no_fio:
        foff, fsz = size // 2, a.fio_size
        b = time.time_ns()
        r = subprocess.run(["timeout", "-s", "KILL", "120", "fio", "--name=tt",
                            "--ioengine=nbd", "--uri=" + a.uri, "--rw=randwrite",
                            "--bs=4k", "--offset=%d" % foff, "--size=%d" % fsz,
                            "--iodepth=8", "--verify=crc32c", "--do_verify=1",
                            "--verify_fatal=1", "--randrepeat=0"],
                           capture_output=True, text=True)
        t = time.time_ns()
        if r.returncode != 0 or "err= 0" not in r.stdout:
            die("fio: exit %d\n%s\n%s" % (r.returncode, r.stdout[-2000:], r.stderr[-2000:]))
        h.shutdown()
        h = connect()
        blob = h.pread(fsz, foff)
        with open(os.path.join(blobdir, "fio.bin"), "wb") as f:
            f.write(blob)
        ops.append({"kind": "blob", "off": foff, "len": fsz, "file": "fio.bin",
                    "src": "fio", "b": b, "a": t})
        events.append({"ns": time.time_ns(), "nops": len(ops), "why": "after fio"})

    # a last few requests after fio, so the newest records are small ones
    for _ in range(6):
        off, n = pick_range()
        one(rnd.choice(("write", "write", "zero", "trim")), off, n)
    h.flush()
    mark("end")
    events.append({"ns": time.time_ns(), "nops": len(ops), "why": "the end"})

    # the live disk must equal the model now (separates capture bugs from
    # restore bugs)
    m = Model(size, blobdir, a.base)
    for op in ops:
        for o in (op["sub"] if op["kind"] == "batch" else [op]):
            m.apply(o)
    got = bytearray(size)
    for off in range(0, size, 16 << 20):
        n = min(16 << 20, size - off)
        got[off:off + n] = h.pread(n, off)
    h.shutdown()
    if got != m.buf:
        bad = next(i for i in range(size) if got[i] != m.buf[i])
        die("the live disk differs from the model at byte %d" % bad)

    st = {"size": size, "disk": a.disk, "ops": ops, "events": events,
          "marks": marks, "t_start": t_start, "base": a.base}
    with open(a.state, "w") as f:
        json.dump(st, f)
    nreq = sum(len(o["sub"]) if o["kind"] == "batch" else 1 for o in ops)
    print("workload: %d requests (%d nbd, %d in concurrent batches, %d qemu-io, %s fio), "
          "%d marks; the live disk equals the model" % (
              nreq, sum(1 for o in ops if o["src"] == "nbd"),
              sum(len(o["sub"]) for o in ops if o["kind"] == "batch"),
              sum(1 for o in ops if o["src"] == "qemu-io"),
              "1" if not a.no_fio else "no", len(marks)))


# ---------------------------------------------------------------- plan

def plan(a):
    with open(a.state) as f:
        st = json.load(f)
    blobdir = os.path.dirname(os.path.abspath(a.state))
    r = run_rewind(a, "journal", st["disk"], "--json", "--headers")
    recs = json.loads(r.stdout)["records"]
    recs.sort(key=lambda x: x["seq"])
    if not recs:
        die("empty journal")
    for x, y in zip(recs, recs[1:]):  # (all records, flush markers too)
        if y["seq"] != x["seq"] + 1:
            die("journal seq gap: %d then %d" % (x["seq"], y["seq"]))
        if y["ts_ns"] < x["ts_ns"]:
            die("journal ts goes backwards at seq %d" % y["seq"])
    # FLUSH marker records (a guest flush or FUA) carry no data: they take
    # a seq and a time (so points may resolve to them) but change nothing
    allrecs = recs
    recs = [x for x in allrecs if x["type"] in DATA_TYPES]
    nflush = sum(1 for x in allrecs if x["type"] == "flush")
    ri = 0
    flat = []      # ops in seq order: each with first/last seq
    used = 0
    for op in st["ops"]:
        mine = []
        while ri < len(recs) and recs[ri]["ts_ns"] <= op["a"]:
            if recs[ri]["ts_ns"] < op["b"]:
                die("record seq %d (ts %d, %s %d+%d) falls in no request's "
                    "[sent, replied] window" % (recs[ri]["seq"], recs[ri]["ts_ns"],
                                               recs[ri]["type"], recs[ri]["offset"],
                                               recs[ri]["length"]))
            mine.append(recs[ri])
            ri += 1
        used += len(mine)
        desc = "%s %s %d+%d" % (op["src"], op["kind"], op.get("off", -1), op.get("len", -1))
        if op["kind"] == "batch":
            sub = list(op["sub"])
            if len(mine) != len(sub):
                die("batch of %d requests made %d records" % (len(sub), len(mine)))
            for rec in mine:
                hit = [o for o in sub if o["off"] == rec["offset"] and
                       o["len"] == rec["length"] and o["kind"] == rec["type"]]
                if len(hit) != 1:
                    die("record seq %d (%s %d+%d) matches no request of its batch" % (
                        rec["seq"], rec["type"], rec["offset"], rec["length"]))
                o = dict(hit[0])
                sub.remove(hit[0])
                o["first"] = o["last"] = rec["seq"]
                o["ts"] = rec["ts_ns"]
                flat.append(o)
            continue
        if op["src"] == "nbd":
            if len(mine) != 1:
                die("%s made %d records, want 1" % (desc, len(mine)))
            rec = mine[0]
            if (rec["type"], rec["offset"], rec["length"]) != (op["kind"], op["off"], op["len"]):
                die("%s journaled as %s %d+%d" % (desc, rec["type"], rec["offset"], rec["length"]))
        else:
            if not mine:
                die("%s made no record" % desc)
            lo = op["off"] // BS * BS
            hi = -(-(op["off"] + op["len"]) // BS) * BS
            for rec in mine:
                if rec["offset"] < lo or rec["offset"] + rec["length"] > hi:
                    die("%s made record seq %d outside its range: %s %d+%d" % (
                        desc, rec["seq"], rec["type"], rec["offset"], rec["length"]))
        o = dict(op)
        o["first"], o["last"] = mine[0]["seq"], mine[-1]["seq"]
        o["ts"] = mine[-1]["ts_ns"]
        o["nrec"] = len(mine)
        flat.append(o)
    if used != len(recs):
        x = recs[ri]
        die("record seq %d (ts %d) was made by no request" % (x["seq"], x["ts_ns"]))

    # op index (state) boundaries by seq
    lasts = [o["last"] for o in flat]
    inner = set()
    for o in flat:
        inner.update(range(o["first"], o["last"]))

    import bisect

    def state_of_seq(s):
        if s in inner:
            return None
        return bisect.bisect_right(lasts, s)

    tss = [x["ts_ns"] for x in allrecs]
    seqs = [x["seq"] for x in allrecs]

    def seq_of_time(t):
        i = bisect.bisect_right(tss, t)
        return seqs[i - 1] if i else 0

    # the client's op index -> state index (batches expand in seq order)
    client_state = []
    k = 0
    for op in st["ops"]:
        client_state.append(k)
        k += len(op["sub"]) if op["kind"] == "batch" else 1
    client_state.append(k)

    points = []

    seen = set()

    def add(when, state, seq, kind, t=None):
        if state is None or when in seen:
            return
        seen.add(when)
        points.append({"when": when, "state": state, "seq": seq, "kind": kind, "t": t})

    rot = ["seq", "ts-1us", "ts+1us", "ts", "ts-1ns", "seq", "ts-1us", "ts+1us",
           "iso", "ts-1us", "ts+1us"]
    for i, o in enumerate(flat):
        kind = rot[i % len(rot)]
        if o["src"] in ("qemu-io", "fio"):
            kinds = ["seq", "ts-1us", "ts+1us", "ts"]
        elif i >= len(flat) - 15:
            # the newest states: an offline restore goes backward from
            # head for these (fewer blocks to fix than to rebuild)
            kinds = ["seq", "ts", "ts-1ns", "ts-1us", "ts+1us"]
        elif i % 2 == 1:
            kinds = []     # (the rotation is odd: every kind still comes up)
        else:
            kinds = [kind]
        if o["src"] == "nbd-aio":
            kinds = ["seq"] + (["ts", "ts-1ns"] if i % 2 else [])
        for kind in kinds:
            first_ts = tss[seqs.index(o["first"])]
            if kind == "seq":
                add("seq:%d" % o["last"], state_of_seq(o["last"]), o["last"], kind)
                if o["first"] > 1 and o["src"] != "nbd":
                    add("seq:%d" % (o["first"] - 1), state_of_seq(o["first"] - 1),
                        o["first"] - 1, "seq")
            elif kind == "ts":
                s = seq_of_time(o["ts"])
                add(at_epoch(o["ts"]), state_of_seq(s), s, kind, o["ts"])
            elif kind == "ts-1ns":
                s = seq_of_time(first_ts - 1)
                add(at_epoch(first_ts - 1), state_of_seq(s), s, kind, first_ts - 1)
            elif kind == "ts-1us":
                s = seq_of_time(first_ts - 1000)
                add(at_epoch(first_ts - 1000), state_of_seq(s), s, kind, first_ts - 1000)
            elif kind == "ts+1us":
                s = seq_of_time(o["ts"] + 1000)
                add(at_epoch(o["ts"] + 1000), state_of_seq(s), s, kind, o["ts"] + 1000)
            elif kind == "iso":
                t = o["ts"] + (0 if i % 2 else 500)
                s = seq_of_time(t)
                add(at_iso(t, (i // len(rot)) % 3), state_of_seq(s), s, kind, t)
    # client clock readings: after each reply (before the next request) and
    # the extra events; expected state from the client's own order
    def client_point(when, ns, st_, kind, t):
        # the state is the client's own order; the journal's newest record
        # at that moment must give the same state
        s = seq_of_time(ns)
        if state_of_seq(s) != st_:
            die("client clock %s: %d requests had been answered, but the journal's "
                "records up to then (seq %d) make state %s" % (at_epoch(ns), st_, s,
                                                               state_of_seq(s)))
        add(when, st_, s, kind, t)

    for j, op in enumerate(st["ops"]):
        if j % 10 == 0 or op["kind"] == "batch" or op["src"] != "nbd":
            client_point(at_epoch(op["a"]), op["a"], client_state[j + 1], "client", op["a"])
    for ev in st["events"]:
        client_point(at_epoch(ev["ns"]), ev["ns"], client_state[ev["nops"]], "client", ev["ns"])
    for m in st["marks"]:
        client_point("mark:" + m["label"], m["a"], client_state[m["nops"]], "mark", None)
    add("seq:0", 0, 0, "seq")
    for k, x in enumerate(x for x in allrecs if x["type"] == "flush"):
        if k % 3 == 0:
            add("seq:%d" % x["seq"], state_of_seq(x["seq"]), x["seq"], "seq-flush")

    # expected digests: replay in state order
    need = sorted(set(p["state"] for p in points))
    m = Model(st["size"], blobdir, st.get("base"))
    dig = {}
    k = 0
    for s in need:
        while k < s:
            m.apply(flat[k])
            k += 1
        dig[s] = m.digest()
    final = len(flat)
    while k < final:
        m.apply(flat[k])
        k += 1
    dig[final] = m.digest()
    for p in points:
        p["digest"] = dig[p["state"]]
    out = {"size": st["size"], "disk": st["disk"], "points": points, "base": st.get("base"),
           "final": {"state": final, "seq": flat[-1]["last"], "digest": dig[final]},
           "flat": flat, "recs": [[x["seq"], x["ts_ns"]] for x in allrecs]}
    with open(a.plan, "w") as f:
        json.dump(out, f)
    kinds = {}
    for p in points:
        kinds[p["kind"]] = kinds.get(p["kind"], 0) + 1
    print("plan: %d records (+%d flush markers), %d states, %d points (%s), %d distinct expected images" % (
        len(recs), nflush, final + 1, len(points),
        ", ".join("%s %d" % kv for kv in sorted(kinds.items())), len(set(dig.values()))))


# ---------------------------------------------------------------- verify

def explain(pl, p, path, blobdir):
    """First differing block of a bad restore, and who wrote it."""
    m = Model(pl["size"], blobdir, pl.get("base"))
    for o in pl["flat"][:p["state"]]:
        m.apply(o)
    with open(path, "rb") as f:
        got = f.read()
    for b in range(0, pl["size"], BS):
        if got[b:b + BS] != m.buf[b:b + BS]:
            i = next(j for j in range(b, b + BS) if got[j] != m.buf[j])
            who = [o for o in pl["flat"] if o["off"] <= i < o["off"] + o["len"]]
            desc = ["seq %d %s %s %d+%d" % (o["last"], o["src"], o["kind"], o["off"], o["len"])
                    for o in who]
            return ("first difference at byte %d: got 0x%02x, want 0x%02x; "
                    "requests covering it: %s" % (i, got[i], m.buf[i], "; ".join(desc[-6:])))
    return "no byte differs (digest bug?)"


def verify(a):
    with open(a.plan) as f:
        pl = json.load(f)
    blobdir = os.path.dirname(os.path.abspath(a.plan))
    points = list(pl["points"])
    if a.now:
        fin = pl["final"]
        points.append({"when": "now", "state": fin["state"], "seq": fin["seq"],
                       "digest": fin["digest"], "kind": "now"})
    refuse = []
    if a.horizon:
        # after `rewind compact --before @H`: points at or after H stay
        # exact, points before it are refused; a margin of 1 us around H
        # (and seq == the horizon's own seq) is left out
        hz = int(a.horizon)
        hseq = max([sq for sq, ts in pl["recs"] if ts <= hz] or [0])
        keep = []
        for p in points:
            if p["kind"] == "mark":
                continue
            if p.get("t") is not None:
                if p["t"] >= hz + 1000:
                    keep.append(p)
                elif p["t"] < hz - 1000:
                    refuse.append(p)
            elif p["kind"] in ("seq", "seq-flush", "now"):
                if p["seq"] > hseq:
                    keep.append(p)
                elif p["seq"] < hseq:
                    refuse.append(p)
        # every 3rd of each (the full set was checked before compaction)
        points = keep[::3]
        refuse = refuse[::3]
        print("%s: horizon @%d.%09d (seq %d): %d points after it, %d before it" % (
            a.label, hz // 10**9, hz % 10**9, hseq, len(points), len(refuse)))
    os.makedirs(a.workdir, exist_ok=True)

    def one(i):
        p = points[i]
        out = os.path.join(a.workdir, "p%d.img" % i)
        r = subprocess.run([a.rewind, "restore", "--store", a.store, pl["disk"],
                            "--at", p["when"], "--out", out, "--force", "--json"],
                           capture_output=True, text=True)
        res = {"i": i, "rc": r.returncode, "err": r.stderr.strip()}
        if r.returncode == 0:
            try:
                j = json.loads(r.stdout)
            except ValueError:
                res["rc"] = -1
                res["err"] = "bad JSON: %r" % r.stdout
                return res
            res["seq"] = j["seq"]
            res["dir"] = j.get("direction")
            res["digest"] = file_digest(out, pl["size"])
            if res["digest"] != p["digest"] and a.keep_bad:
                res["why"] = explain(pl, p, out, blobdir)
            os.unlink(out)
        return res

    t0 = time.time()
    bad = []
    dirs = {}
    with cf.ThreadPoolExecutor(max_workers=a.jobs) as ex:
        for res in ex.map(one, range(len(points))):
            p = points[res["i"]]
            if res["rc"] != 0:
                bad.append("%s (%s): exit %d: %s" % (p["when"], p["kind"], res["rc"], res["err"]))
                continue
            dirs[res["dir"]] = dirs.get(res["dir"], 0) + 1
            # "now" resolves to the store's newest seq, which another disk
            # may have moved past this disk's last record
            if res["seq"] != p["seq"] and not (p["kind"] == "now" and res["seq"] > p["seq"]):
                bad.append("%s (%s): resolved to seq %d, want seq %d" % (
                    p["when"], p["kind"], res["seq"], p["seq"]))
            if res["digest"] != p["digest"]:
                bad.append("%s (%s): image differs from the model (state after %d requests, "
                           "seq %d)%s" % (p["when"], p["kind"], p["state"], p["seq"],
                                          ": " + res["why"] if "why" in res else ""))
    for p in refuse:
        r = subprocess.run([a.rewind, "restore", "--store", a.store, pl["disk"], "--at",
                            p["when"], "--out", os.path.join(a.workdir, "refused.img"),
                            "--force"], capture_output=True, text=True)
        if r.returncode == 0 or "restorable range" not in r.stderr:
            bad.append("%s (%s), before the horizon: exit %d, %r (want a refusal naming "
                       "the restorable range)" % (p["when"], p["kind"], r.returncode,
                                                  r.stderr.strip()))
    dt = time.time() - t0
    for b in bad[:25]:
        print("  BAD " + b)
    if bad:
        die("%s: %d of %d restores wrong" % (a.label, len(bad), len(points)))
    print("%s: %d restores as-of %d points equal the model bit for bit and resolve to "
          "the expected seq (%s)%s; %.1fs" % (
              a.label, len(points), len(set(p["when"] for p in points)),
              ", ".join("%s %d" % kv for kv in sorted(dirs.items())),
              "; %d points before the horizon refused" % len(refuse) if a.horizon else "", dt))


# ---------------------------------------------------------------- export

def exportcheck(a):
    """`rewind export NAME --at WHEN --socket PATH` at N points spread over
    the plan; nbdcopy reads the whole export; the image must equal the
    model.  Each export is stopped by its PID (SIGTERM) and must exit 0."""
    with open(a.plan) as f:
        pl = json.load(f)
    os.makedirs(a.workdir, exist_ok=True)
    pts = sorted(pl["points"], key=lambda p: (p["state"], p["when"]))
    n = min(a.rounds, len(pts))
    pick = [pts[i * (len(pts) - 1) // max(1, n - 1)] for i in range(n)]
    bad = []
    t0 = time.time()
    for i, p in enumerate(pick):
        sock = os.path.join(a.sockdir, "x%d.sock" % i)
        out = os.path.join(a.workdir, "x%d.img" % i)
        log = open(os.path.join(a.workdir, "x%d.log" % i), "w")
        proc = subprocess.Popen([a.rewind, "export", "--store", a.store, pl["disk"], "--at",
                                 p["when"], "--socket", sock], stdout=log, stderr=log)
        try:
            for _ in range(3000):
                if os.path.exists(sock) or proc.poll() is not None:
                    break
                time.sleep(0.01)
            if not os.path.exists(sock):
                bad.append("%s: export did not come up (exit %s)" % (p["when"], proc.poll()))
                continue
            r = subprocess.run(["timeout", "-s", "KILL", "120", "nbdcopy",
                                "nbd+unix:///%s?socket=%s" % (pl["disk"], sock), out],
                               capture_output=True, text=True)
            if r.returncode != 0:
                bad.append("%s: nbdcopy: %s" % (p["when"], r.stderr.strip()))
                continue
            d = file_digest(out, pl["size"])
            if d != p["digest"]:
                bad.append("%s (%s): export differs from the model (state after %d requests): %s"
                           % (p["when"], p["kind"], p["state"], explain(pl, p, out, os.path.dirname(os.path.abspath(a.plan)))))
            os.unlink(out)
        finally:
            if proc.poll() is None:
                proc.terminate()
            try:
                rc = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
            log.close()
        if rc != 0:
            with open(os.path.join(a.workdir, "x%d.log" % i)) as f:
                bad.append("%s: export exited %d after SIGTERM: %s" % (p["when"], rc, f.read()[-500:]))
    for b in bad[:10]:
        print("  BAD " + b)
    if bad:
        die("export: %d of %d points wrong" % (len(bad), n))
    print("export: %d exports as-of points spread over the history, read whole with nbdcopy, "
          "equal the model bit for bit (%.1fs)" % (n, time.time() - t0))


# ---------------------------------------------------------------- lag probe

def lagprobe(a):
    """Each round: write a fresh byte, and right after the reply restore
    as-of the client clock; the restored image must hold the byte."""
    import nbd
    h = nbd.NBD()
    h.connect_uri(a.uri)
    off = a.offset
    miss = []
    os.makedirs(a.workdir, exist_ok=True)
    out = os.path.join(a.workdir, "lag.img")
    for i in range(a.rounds):
        v = (i % 250) + 1
        h.pwrite(bytes([v]) * BS, off)
        t = time.time_ns()
        r = subprocess.run([a.rewind, "restore", "--store", a.store, a.disk, "--at",
                            at_epoch(t), "--out", out, "--force", "--json"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            die("restore as-of %s: %s" % (at_epoch(t), r.stderr.strip()))
        with open(out, "rb") as f:
            f.seek(off)
            got = f.read(1)[0]
        if got != v:
            miss.append("round %d: restore --at %s (after the reply) has 0x%02x, want 0x%02x (%s)"
                        % (i, at_epoch(t), got, v, r.stdout.strip()))
    h.shutdown()
    for m in miss[:5]:
        print("  " + m)
    print("lagprobe: %d of %d restores right after a write's reply missed that write" % (
        len(miss), a.rounds))
    sys.exit(3 if miss else 0)


def mkbase(a):
    """The imported base image: extents of data (random, fill, repeated)
    at seeded places, holes elsewhere; written next to the state file."""
    rnd = random.Random(a.seed * 7 + 3)
    n = max(8, a.size // (2 << 20))
    with open(a.out, "wb") as f:
        f.truncate(a.size)
        for i in range(n):
            ln = rnd.choice((4096, 65536, 131072, 131072 + 777))
            off = rnd.randrange(0, a.size - ln) // 512 * 512
            f.seek(off)
            f.write(gen_data(a.seed * 1000 + i, ln))
    print("base image: %d extents in %d MiB" % (n, a.size >> 20))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("mkbase", "workload", "plan", "verify", "lagprobe", "exportcheck"):
        p = sub.add_parser(name)
        p.add_argument("--rewind", required=True)
        p.add_argument("--store", required=True)
        p.add_argument("--disk", default="vm1")
        p.add_argument("--uri")
        p.add_argument("--state")
        p.add_argument("--plan")
        p.add_argument("--size", type=int)
        p.add_argument("--seed", type=int, default=1)
        p.add_argument("--ops", type=int, default=300)
        p.add_argument("--fio-size", type=int, default=1 << 20)
        p.add_argument("--no-fio", action="store_true")
        p.add_argument("--workdir")
        p.add_argument("--jobs", type=int, default=2)
        p.add_argument("--label", default="verify")
        p.add_argument("--now", action="store_true")
        p.add_argument("--keep-bad", action="store_true", default=True)
        p.add_argument("--rounds", type=int, default=20)
        p.add_argument("--offset", type=int, default=0)
        p.add_argument("--base", help="base image (a file next to STATE), imported as the disk")
        p.add_argument("--out")
        p.add_argument("--sockdir")
        p.add_argument("--horizon", help="ns: the store was compacted --before this time")
    a = ap.parse_args()
    {"mkbase": mkbase, "workload": workload, "plan": plan, "verify": verify,
     "lagprobe": lagprobe, "exportcheck": exportcheck}[a.cmd](a)


if __name__ == "__main__":
    main()
