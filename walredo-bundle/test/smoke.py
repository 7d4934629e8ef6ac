#!/usr/bin/env python3
"""Smoke test of the walredo bundle's `postgres --wal-redo` (stdlib only).

Usage: smoke.py [--bundle DIR] [--pg-version 15|18] [--cluster-bin DIR] [--keep]

Without --bundle it runs walredo-bundle/build.sh (a no-op when the bundle is
cached) and uses the directory it prints.  --pg-version (default: the
environment's WALREDO_PG_VERSION, else 15) picks the bundle's v15 or v18.
When run as root, every PostgreSQL program runs as the `postgres` user
(PostgreSQL refuses to run as root).

What it checks:
  * 'S' installs the sandbox (Seccomp: 2 in /proc/<pid>/status);
  * 'H' answers 8192 bytes; B+P+G round-trips a page unchanged;
  * real WAL: records made by a throwaway cluster of the same major version
    replayed with B,A,G (and B,P,A,G) give the cluster's own page, masked as
    PostgreSQL's wal_consistency_checking masks heap pages;
  * garbage 'A' records, a first message other than 'S', and 'X' in the normal
    binary end the process with a non-zero status, without hanging;
  * with postgres-testhooks, 'X' open/socket/execve gets the process killed by
    SIGSYS.
"""

import argparse
import os
import pwd
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

BLCKSZ = 8192
WAL_SEG_SIZE = 16 * 1024 * 1024
HERE = os.path.dirname(os.path.abspath(__file__))
PG_VERSIONS = ("15", "18")
TIMEOUT = 20

# --- seccomp allowlist (x86_64) --------------------------------------------
# The system calls the redo child makes after 'S' (see docs/walredo.md).
ALLOWED_SYSCALLS_X86_64 = {
    "read": 0,
    "write": 1,
    "brk": 12,
    "getpid": 39,
    "exit_group": 231,
}
AUDIT_ARCH_X86_64 = 0xC000003E
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ALLOW = 0x7FFF0000
BPF_LD_W_ABS = 0x20
BPF_JMP_JEQ_K = 0x15
BPF_RET_K = 0x06
SECCOMP_DATA_NR = 0
SECCOMP_DATA_ARCH = 4


def bpf(code, jt, jf, k):
    return struct.pack("=HBBI", code, jt, jf, k)


def allowlist_program(syscalls):
    """Classic BPF: kill unless arch is x86_64 and nr is in `syscalls`."""
    nrs = sorted(syscalls)
    prog = [
        bpf(BPF_LD_W_ABS, 0, 0, SECCOMP_DATA_ARCH),
        # arch mismatch: jump over the nr checks to the kill
        bpf(BPF_JMP_JEQ_K, 0, len(nrs) + 1, AUDIT_ARCH_X86_64),
        bpf(BPF_LD_W_ABS, 0, 0, SECCOMP_DATA_NR),
    ]
    for i, nr in enumerate(nrs):
        # match: jump to the allow at the very end
        prog.append(bpf(BPF_JMP_JEQ_K, len(nrs) - i, 0, nr))
    prog.append(bpf(BPF_RET_K, 0, 0, SECCOMP_RET_KILL_PROCESS))
    prog.append(bpf(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW))
    return b"".join(prog)


def allow_all_program():
    return bpf(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW)


# --- running things as the unprivileged user --------------------------------


def demote_fn():
    if os.geteuid() != 0:
        return None
    pw = pwd.getpwnam("postgres")

    def demote():
        os.setgroups([])
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)

    return demote


def give_to_postgres(path):
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(path, pw.pw_uid, pw.pw_gid)


# --- protocol ----------------------------------------------------------------


def msg(kind, payload=b""):
    return kind + struct.pack(">i", 4 + len(payload)) + payload


def tag(spc, db, rel, fork, blk):
    return struct.pack(">BIIII", fork, spc, db, rel, blk)


class Redo:
    """One `postgres --wal-redo` child process."""

    def __init__(self, binary, lib_dir, program=None):
        env = {"LD_LIBRARY_PATH": lib_dir}
        self.proc = subprocess.Popen(
            [binary, "--wal-redo", "--tenant-shard-id", "smoke"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd="/",
            preexec_fn=demote_fn(),
        )
        if program is not None:
            self.send(msg(b"S", program))

    def send(self, data):
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def read_page(self):
        data = b""
        while len(data) < BLCKSZ:
            chunk = self.proc.stdout.read(BLCKSZ - len(data))
            if not chunk:
                raise AssertionError(
                    "redo process closed stdout after %d bytes; stderr: %s"
                    % (len(data), self.finish_stderr())
                )
            data += chunk
        return data

    def seccomp_mode(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("Seccomp:"):
                    return line.split(":", 1)[1].strip()
        return None

    def close_and_wait(self):
        """Close stdin (EOF) and return (returncode, stderr)."""
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        rc = self.proc.wait(timeout=TIMEOUT)
        return rc, self.proc.stderr.read().decode(errors="replace")

    def wait_dead(self):
        """The process is expected to die by itself; return (rc, stderr)."""
        try:
            rc = self.proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("redo process did not exit within %ds" % TIMEOUT)
        return rc, self.proc.stderr.read().decode(errors="replace")

    def finish_stderr(self):
        try:
            self.proc.kill()
            self.proc.wait(timeout=TIMEOUT)
            return self.proc.stderr.read().decode(errors="replace")
        except Exception as e:  # best effort, for messages only
            return "<%s>" % e

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# --- a throwaway PostgreSQL cluster as the source of real WAL -----------------


def cache_dir():
    """Where scripts/postgres-build.sh installs (the scripts' cache root)."""
    if os.environ.get("PAGESERVER_CACHE_DIR"):
        return os.environ["PAGESERVER_CACHE_DIR"]
    if os.geteuid() == 0:
        return "/var/cache/pageserver"
    return os.path.join(os.path.expanduser("~"), ".cache", "pageserver")


def cluster_bin_candidates(version):
    """Debian's PostgreSQL of that major version, then the one
    scripts/postgres-build.sh installs."""
    return [
        "/usr/lib/postgresql/%s/bin" % version,
        os.path.join(cache_dir(), "postgresql", version, "bin"),
    ]


def pg_bin_dir(version, bundle_bin, choice=None):
    """Binaries for the WAL-producing cluster: --cluster-bin, else the first
    of cluster_bin_candidates() that has initdb, else the bundle's own initdb
    and postgres (a full postgres; single-user mode is all this needs)."""
    if choice:
        return choice
    for bindir in cluster_bin_candidates(version):
        if os.path.exists(os.path.join(bindir, "initdb")):
            return bindir
    return bundle_bin


def run_pg(args, env, **kw):
    return subprocess.run(
        args, env=env, preexec_fn=demote_fn(), capture_output=True, timeout=120, **kw
    )


def single_user(bindir, data, env, sql_lines):
    """Run SQL in single-user mode; return the printed values in order."""
    script = "".join(line + "\n" for line in sql_lines)
    r = run_pg(
        [os.path.join(bindir, "postgres"), "--single", "-D", data, "-c", "fsync=off",
         "postgres"],
        env,
        input=script.encode(),
    )
    out = r.stdout.decode()
    if r.returncode != 0 or "ERROR" in r.stderr.decode():
        raise AssertionError("single-user mode failed: %s\n%s" % (out, r.stderr.decode()))
    return re.findall(r'^\s*\d+: \S+ = "([^"]*)"', out, re.M)


def parse_lsn(text):
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def maxalign(n):
    return (n + 7) & ~7


def page_header_size(seg, page_start):
    xlp_info = struct.unpack_from("<H", seg, page_start + 2)[0]
    return 40 if xlp_info & 0x0002 else 24  # XLP_LONG_HEADER


def read_record(seg, seg_start_lsn, lsn):
    """Return (record bytes, end LSN) of the WAL record starting at `lsn`."""
    pos = lsn - seg_start_lsn
    out = bytearray()
    need = 24  # header first, then xl_tot_len
    while len(out) < need:
        if pos % BLCKSZ == 0:
            pos += page_header_size(seg, pos)
        take = min(BLCKSZ - pos % BLCKSZ, need - len(out))
        out += seg[pos:pos + take]
        pos += take
        if need == 24 and len(out) >= 4:
            need = struct.unpack_from("<I", out, 0)[0]
            if need < 24:
                raise AssertionError("bad xl_tot_len %d at %X" % (need, lsn))
    return bytes(out), seg_start_lsn + maxalign(pos)


def next_record_lsn(seg, seg_start_lsn, end_lsn):
    pos = end_lsn - seg_start_lsn
    if pos % BLCKSZ == 0:
        pos += page_header_size(seg, pos)
    return seg_start_lsn + pos


def first_block_ref(rec):
    """(spc, db, rel, fork, blk) of block 0 of an XLogRecord, or None."""
    p = 24
    if rec[p] != 0:  # block id 0 comes first when present
        return None
    fork_flags = rec[p + 1]
    has_image = fork_flags & 0x10
    has_data = fork_flags & 0x20  # noqa: F841 (documented layout)
    same_rel = fork_flags & 0x80
    p += 4  # id, fork_flags, data_length
    if has_image:
        bimg_info = rec[p + 4]
        p += 5
        if bimg_info & 0x01 and bimg_info & 0x1C:  # HAS_HOLE and compressed
            p += 2
    if same_rel:
        return None
    spc, db, rel = struct.unpack_from("<III", rec, p)
    blk = struct.unpack_from("<I", rec, p + 12)[0]
    return spc, db, rel, fork_flags & 0x0F, blk


def heap_insert_records(seg, seg_start, start, end, rel):
    """XLOG_HEAP_INSERT records for block 0 of `rel` in [start, end):
    a list of (record bytes, end LSN, xl_info)."""
    found = []
    lsn = start
    while lsn < end:
        rec, rec_end = read_record(seg, seg_start, lsn)
        info, rmid = rec[16], rec[17]
        if rmid == 10 and (info & 0x70) == 0x00 and first_block_ref(rec) == rel + (0, 0):
            found.append((rec, rec_end, info))
        lsn = next_record_lsn(seg, seg_start, rec_end)
    return found


def block_refs(rec):
    """[(spc, db, rel, fork, blk)] for every block reference of an XLogRecord."""
    refs = []
    p, rel = 24, None
    tot = len(rec)
    datatotal = 0  # block data and images follow the headers: stop where they begin
    while p < tot - datatotal:
        block_id = rec[p]
        if block_id == 255:  # XLR_BLOCK_ID_DATA_SHORT: main data header, end of headers
            break
        if block_id in (254, 253):  # DATA_LONG ends headers; ORIGIN has payload
            if block_id == 254:
                break
            p += 3
            continue
        if block_id == 252:  # XLR_BLOCK_ID_TOPLEVEL_XID
            p += 5
            continue
        fork_flags = rec[p + 1]
        datatotal += struct.unpack_from("<H", rec, p + 2)[0]
        p += 4
        if fork_flags & 0x10:  # BKPBLOCK_HAS_IMAGE
            datatotal += struct.unpack_from("<H", rec, p)[0]
            bimg_info = rec[p + 4]
            p += 5
            if bimg_info & 0x01 and bimg_info & 0x1C:
                p += 2
        if not fork_flags & 0x80:  # not BKPBLOCK_SAME_REL
            rel = struct.unpack_from("<III", rec, p)
            p += 12
        blk = struct.unpack_from("<I", rec, p)[0]
        p += 4
        refs.append(rel + (fork_flags & 0x0F, blk))
    return refs


def heap_records_for(seg, seg_start, start, end, rel):
    """Heap/heap2 records in [start, end) referencing any block of `rel`, and
    full-page images of its blocks (XLOG_FPI_FOR_HINT: a cluster with data
    checksums, 18's default, logs hint-bit changes so): a list of (record
    bytes, end LSN, block refs)."""
    found = []
    lsn = start
    while lsn < end:
        rec, rec_end = read_record(seg, seg_start, lsn)
        refs = block_refs(rec)
        replayable = rec[17] in (9, 10) or (rec[17] == 0 and rec[16] & 0xF0 in (0xA0, 0xB0))
        if replayable and any(r[:3] == rel for r in refs):
            found.append((rec, rec_end, refs))
        lsn = next_record_lsn(seg, seg_start, rec_end)
    return found


def read_segment(data, lsn):
    segno = lsn // WAL_SEG_SIZE
    seg_name = "%08X%08X%08X" % (1, segno >> 8, segno & 0xFF)
    with open(os.path.join(data, "pg_wal", seg_name), "rb") as f:
        return f.read(), segno * WAL_SEG_SIZE


def make_update_wal(bindir, data, env):
    """In the cluster made by make_real_wal: fill page 0 of a new table, then
    update a row so that its new version goes to a new page 1.  The update
    record references page 1 (WILL_INIT) as block 0 and page 0 as block 1.
    Return (rel, records, {blkno: page as written at the final checkpoint})."""
    vals = single_user(bindir, data, env, [
        "CREATE TABLE u(a int, b text) WITH (fillfactor = 100)",
        "CHECKPOINT",
        "SELECT pg_current_wal_insert_lsn()",
        "INSERT INTO u SELECT g, repeat('x', 500) FROM generate_series(1, 15) g",
        "UPDATE u SET b = repeat('y', 500) WHERE a = 1",
        "CHECKPOINT",
        "SELECT pg_current_wal_insert_lsn()",
        "SELECT pg_relation_filenode('u')",
        "SELECT oid FROM pg_database WHERE datname = current_database()",
        "SELECT pg_relation_size('u') / 8192",
    ])
    start, end = parse_lsn(vals[0]), parse_lsn(vals[1])
    rel = (1663, int(vals[3]), int(vals[2]))
    if int(vals[4]) != 2:
        raise AssertionError("table u has %s pages, expected 2" % vals[4])
    seg, seg_start = read_segment(data, start)
    if (end - 1) // WAL_SEG_SIZE != start // WAL_SEG_SIZE:
        raise AssertionError("records span two WAL segments; rerun")
    records = heap_records_for(seg, seg_start, start, end, rel)
    last = records[-1][2]
    if [r[4] for r in last] != [1, 0]:
        raise AssertionError("expected the update to reference blocks 1 and 0, got %r" % last)
    pages = {}
    with open(os.path.join(data, "base", str(rel[1]), str(rel[2])), "rb") as f:
        for blk in (0, 1):
            pages[blk] = f.read(BLCKSZ)
    return rel, records, pages


def make_real_wal(bindir, workdir, lib_dir):
    """Create a cluster and a fresh table, then insert three rows:
      1. right after a checkpoint into the new table: INSERT+INIT_PAGE,
      2. into the same page: a plain INSERT,
      3. after another checkpoint, with wal_compression=zstd: an INSERT
         carrying a compressed full-page image.
    Return (rel, [(record, end LSN, info)] * 3, [page after 2, page after 3],
    make_update_wal(...)) where the pages are block 0 as the cluster wrote it
    at checkpoints."""
    data = os.path.join(workdir, "pgdata")
    env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C"}
    if lib_dir:  # the bundle's initdb finds libpq only this way
        env["LD_LIBRARY_PATH"] = lib_dir
    r = run_pg(
        [os.path.join(bindir, "initdb"), "-D", data, "-U", "postgres", "-A", "trust",
         "--no-sync", "-E", "UTF8", "--locale=C"],
        env,
    )
    if r.returncode != 0:
        raise AssertionError("initdb failed: %s" % r.stderr.decode())
    vals = single_user(bindir, data, env, [
        "CREATE TABLE t(a int)",
        "CHECKPOINT",
        "SELECT pg_current_wal_insert_lsn()",
        "INSERT INTO t VALUES (1)",
        "INSERT INTO t VALUES (2)",
        "CHECKPOINT",
        "SELECT pg_current_wal_insert_lsn()",
        "SELECT pg_relation_filenode('t')",
        "SELECT oid FROM pg_database WHERE datname = current_database()",
    ])
    start, end, relnode, dboid = parse_lsn(vals[0]), parse_lsn(vals[1]), int(vals[2]), int(vals[3])
    rel = (1663, dboid, relnode)
    path = os.path.join(data, "base", str(dboid), str(relnode))
    with open(path, "rb") as f:
        page2 = f.read(BLCKSZ)
    vals = single_user(bindir, data, env, [
        "SET wal_compression = zstd",
        "INSERT INTO t VALUES (3)",
        "CHECKPOINT",
        "SELECT pg_current_wal_insert_lsn()",
    ])
    end3 = parse_lsn(vals[0])
    with open(path, "rb") as f:
        page3 = f.read(BLCKSZ)

    segno = start // WAL_SEG_SIZE
    if end3 // WAL_SEG_SIZE != segno:
        raise AssertionError("records span two WAL segments; rerun")
    seg_name = "%08X%08X%08X" % (1, segno >> 8, segno & 0xFF)
    with open(os.path.join(data, "pg_wal", seg_name), "rb") as f:
        seg = f.read()
    seg_start = segno * WAL_SEG_SIZE
    records = heap_insert_records(seg, seg_start, start, end3, rel)
    kinds = [(info & 0x80 != 0, has_image(rec)) for rec, _, info in records]
    if kinds != [(True, False), (False, False), (False, True)]:
        raise AssertionError("expected INSERT+INIT, INSERT, INSERT with image; got %r" % kinds)
    return rel, records, [page2, page3], make_update_wal(bindir, data, env)


def has_image(rec):
    return rec[24] == 0 and bool(rec[25] & 0x10)


def mask_heap_page(page):
    """Mask what wal_consistency_checking masks on heap pages that matter here:
    LSN, checksum, prune xid, page hint flags, tuple hint bits."""
    p = bytearray(page)
    p[0:10] = b"\0" * 10  # pd_lsn, pd_checksum
    flags = struct.unpack_from("<H", p, 10)[0] & ~0x0003  # PD_HAS_FREE_LINES, PD_PAGE_FULL
    struct.pack_into("<H", p, 10, flags)
    p[20:24] = b"\0" * 4  # pd_prune_xid
    pd_lower = struct.unpack_from("<H", p, 12)[0]
    for off in range(24, pd_lower, 4):
        lp = struct.unpack_from("<I", p, off)[0]
        lp_off, lp_flags = lp & 0x7FFF, (lp >> 15) & 0x3
        if lp_flags == 1:  # LP_NORMAL
            infomask = struct.unpack_from("<H", p, lp_off + 20)[0] & ~0x0F00
            struct.pack_into("<H", p, lp_off + 20, infomask)
    return bytes(p)


# --- the checks ----------------------------------------------------------------


class Smoke:
    def __init__(self, bundle, version, keep, cluster_bin=None):
        self.version = version
        self.cluster_bin = cluster_bin
        self.bin = os.path.join(bundle, "v" + version, "bin")
        self.lib = os.path.join(bundle, "v" + version, "lib")
        self.postgres = os.path.join(self.bin, "postgres")
        self.testhooks = os.path.join(self.bin, "postgres-testhooks")
        self.program = allowlist_program(ALLOWED_SYSCALLS_X86_64.values())
        self.keep = keep
        self.passed = 0
        self.failed = 0

    def redo(self, binary=None, program="default"):
        if program == "default":
            program = self.program
        return Redo(binary or self.postgres, self.lib, program)

    def check(self, name, fn):
        try:
            fn()
        except Exception as e:  # report and go on with the other checks
            self.failed += 1
            print("FAIL %s: %s" % (name, e))
        else:
            self.passed += 1
            print("ok   %s" % name)

    def expect_death(self, r, want_rc=None, want_in_stderr=None):
        rc, err = r.wait_dead()
        if rc == 0:
            raise AssertionError("exited 0; stderr: %s" % err)
        if want_rc is not None and rc != want_rc:
            raise AssertionError("returncode %d, expected %d; stderr: %s" % (rc, want_rc, err))
        if want_in_stderr and want_in_stderr not in err:
            raise AssertionError("stderr lacks %r: %s" % (want_in_stderr, err))

    # individual checks

    def t_sandbox_ping(self):
        r = self.redo()
        try:
            r.send(msg(b"H"))
            if r.read_page() != b"\0" * BLCKSZ:
                raise AssertionError("ping did not return a zero page")
            mode = r.seccomp_mode()
            if mode != "2":
                raise AssertionError("Seccomp: %s, expected 2" % mode)
            rc, err = r.close_and_wait()
            if rc != 0:
                raise AssertionError("EOF exit status %d: %s" % (rc, err))
        finally:
            r.kill()

    def t_push_get(self):
        page = bytearray(os.urandom(BLCKSZ))
        # a plausible page header so the buffer manager would accept it on re-read
        struct.pack_into("<HHHHHI", page, 10, 0, 24, 8192, 8192, 0x2004, 0)
        page = bytes(page)
        t = tag(1663, 5, 16384, 0, 7)
        r = self.redo()
        try:
            r.send(msg(b"B", t) + msg(b"P", t + page) + msg(b"G", t))
            got = r.read_page()
            if got != page:
                raise AssertionError("page changed on the round trip")
            # a second request on the same process starts from scratch
            t2 = tag(1663, 5, 16384, 0, 8)
            r.send(msg(b"B", t2) + msg(b"P", t2 + page[::-1]) + msg(b"G", t2))
            if r.read_page() != page[::-1]:
                raise AssertionError("second page changed on the round trip")
            rc, err = r.close_and_wait()
            if rc != 0:
                raise AssertionError("EOF exit status %d: %s" % (rc, err))
        finally:
            r.kill()

    def t_real_redo(self):
        workdir = tempfile.mkdtemp(prefix="walredo-smoke-")
        give_to_postgres(workdir)
        try:
            bindir = pg_bin_dir(self.version, self.bin, self.cluster_bin)
            print("     WAL from a cluster of %s" % bindir)
            rel, records, (page2, page3), update = make_real_wal(
                bindir, workdir, self.lib if bindir == self.bin else None)
            self.update_wal = update
            t = tag(rel[0], rel[1], rel[2], 0, 0)
            a1, a2, a3 = [msg(b"A", struct.pack(">Q", e) + rec) for rec, e, _ in records]
            end2 = records[1][1]
            r = self.redo()
            try:
                # no base image: the first record initializes the page
                r.send(msg(b"B", t) + a1 + a2 + msg(b"G", t))
                page = r.read_page()
                if mask_heap_page(page) != mask_heap_page(page2):
                    raise AssertionError("B,A,A,G page differs from the cluster's page")
                if struct.unpack_from("<II", page, 0) != (end2 >> 32, end2 & 0xFFFFFFFF):
                    raise AssertionError("page LSN is not the end of the last record")
                # base image = page after the first record, then the second record
                r.send(msg(b"B", t) + a1 + msg(b"G", t))
                after1 = r.read_page()
                r.send(msg(b"B", t) + msg(b"P", t + after1) + a2 + msg(b"G", t))
                if mask_heap_page(r.read_page()) != mask_heap_page(page2):
                    raise AssertionError("B,P,A,G page differs from the cluster's page")
                # a zstd-compressed full-page image, alone and after the others
                r.send(msg(b"B", t) + a3 + msg(b"G", t))
                if mask_heap_page(r.read_page()) != mask_heap_page(page3):
                    raise AssertionError("B,A(FPI),G page differs from the cluster's page")
                r.send(msg(b"B", t) + a1 + a2 + a3 + msg(b"G", t))
                if mask_heap_page(r.read_page()) != mask_heap_page(page3):
                    raise AssertionError("B,A,A,A(FPI),G page differs from the cluster's page")
                # records for block 0 leave block 1 alone (the filter skips them)
                other = tag(rel[0], rel[1], rel[2], 0, 1)
                r.send(msg(b"B", other) + msg(b"P", other + after1) + a2 + a3 + msg(b"G", other))
                if r.read_page() != after1:
                    raise AssertionError("records for block 0 changed block 1")
                rc, err = r.close_and_wait()
                if rc != 0:
                    raise AssertionError("EOF exit status %d: %s" % (rc, err))
            finally:
                r.kill()
        finally:
            if self.keep:
                print("     kept %s" % workdir)
            else:
                shutil.rmtree(workdir, ignore_errors=True)

    def t_multi_block_record(self):
        """Each page of a two-page UPDATE, replayed alone, equals the cluster's."""
        if getattr(self, "update_wal", None) is None:
            raise AssertionError("needs the cluster of the real WAL check")
        rel, records, pages = self.update_wal
        r = self.redo()
        try:
            for blk in (0, 1):
                t = tag(rel[0], rel[1], rel[2], 0, blk)
                stream = msg(b"B", t)
                for rec, end, refs in records:
                    if rel + (0, blk) in refs:
                        stream += msg(b"A", struct.pack(">Q", end) + rec)
                r.send(stream + msg(b"G", t))
                if mask_heap_page(r.read_page()) != mask_heap_page(pages[blk]):
                    raise AssertionError("page %d differs from the cluster's page" % blk)
            rc, err = r.close_and_wait()
            if rc != 0:
                raise AssertionError("EOF exit status %d: %s" % (rc, err))
        finally:
            r.kill()

    def t_garbage_records(self):
        t = tag(1663, 5, 16384, 0, 0)
        junk = os.urandom(200)

        def header(tot_len, rmid, info=0):
            return struct.pack("<IIQBBHI", tot_len, 0, 0, info, rmid, 0, 0)

        cases = {
            "random bytes": junk,
            "random body": header(200, 10) + junk[24:],
            "bad block id": header(200, 10) + b"\xab" * 176,
            "block data past the end": header(40, 10) + b"\x00\x20\xe8\x03" + b"\x00" * 12,
            "unknown rmgr": header(40, 200) + b"\xff\x0e" + junk[:14],
            "commit record": header(40, 1) + b"\xff\x0e" + junk[:14],
            "short": b"\x01\x02",
        }
        for name, rec in cases.items():
            r = self.redo()
            try:
                r.send(msg(b"B", t) + msg(b"A", struct.pack(">Q", 0x1000000) + rec))
                try:
                    self.expect_death(r, want_rc=1)
                except AssertionError as e:
                    raise AssertionError("%s: %s" % (name, e))
            finally:
                r.kill()

    def t_first_message_not_sandbox(self):
        r = self.redo(program=None)
        try:
            r.send(msg(b"H"))
            self.expect_death(r, want_rc=1, want_in_stderr="sandbox program expected")
        finally:
            r.kill()

    def t_bad_sandbox_programs(self):
        cases = {
            "empty": b"",
            "not a multiple of 8": b"\0" * 12,
            "too long": allow_all_program() * 4097,
            "invalid instruction": bpf(0xFFFF, 0, 0, 0),
        }
        for name, prog in cases.items():
            r = self.redo(program=None)
            try:
                r.send(msg(b"S", prog) + msg(b"H"))
                try:
                    self.expect_death(r, want_rc=1)
                except AssertionError as e:
                    raise AssertionError("%s: %s" % (name, e))
            finally:
                r.kill()

    def t_x_rejected_by_normal_binary(self):
        r = self.redo()
        try:
            r.send(msg(b"X", b"open\0"))
            self.expect_death(r, want_rc=1, want_in_stderr="invalid message type")
        finally:
            r.kill()

    def t_testhooks_killed(self):
        for what in ("open", "socket", "execve"):
            # without a sandbox the hook's system call just fails or succeeds
            r = self.redo(self.testhooks, program=allow_all_program())
            try:
                r.send(msg(b"X", what.encode() + b"\0") + msg(b"H"))
                r.read_page()
                rc, err = r.close_and_wait()
                if rc != 0 or "not stopped by the sandbox" not in err:
                    raise AssertionError("%s without sandbox: rc %d, %s" % (what, rc, err))
            finally:
                r.kill()
            r = self.redo(self.testhooks)
            try:
                r.send(msg(b"H"))
                r.read_page()
                r.send(msg(b"X", what.encode() + b"\0"))
                try:
                    self.expect_death(r, want_rc=-signal.SIGSYS)
                except AssertionError as e:
                    raise AssertionError("%s: %s" % (what, e))
            finally:
                r.kill()

    def run(self):
        self.check("sandbox installed, ping answers, EOF exits 0", self.t_sandbox_ping)
        self.check("B+P+G round-trips pages", self.t_push_get)
        self.check("real WAL redo matches PostgreSQL's page", self.t_real_redo)
        self.check("two-page UPDATE replayed one page at a time", self.t_multi_block_record)
        self.check("garbage 'A' records end the process", self.t_garbage_records)
        self.check("first message must be 'S'", self.t_first_message_not_sandbox)
        self.check("bad sandbox programs are refused", self.t_bad_sandbox_programs)
        self.check("normal binary rejects 'X'", self.t_x_rejected_by_normal_binary)
        self.check("testhooks: open/socket/execve killed by SIGSYS", self.t_testhooks_killed)
        print("%d passed, %d failed" % (self.passed, self.failed))
        return self.failed == 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", help="bundle directory (default: run build.sh)")
    ap.add_argument("--pg-version", choices=PG_VERSIONS,
                    default=os.environ.get("WALREDO_PG_VERSION", "15"),
                    help="the bundle's major version to test (default: $WALREDO_PG_VERSION, else 15)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary cluster")
    ap.add_argument("--cluster-bin", help="bin dir of the same major version for the WAL-producing "
                    "cluster (default: %s, else %s, if present, else the bundle's)"
                    % tuple(cluster_bin_candidates("<version>")))
    args = ap.parse_args()
    if args.pg_version not in PG_VERSIONS:
        ap.error("WALREDO_PG_VERSION must be one of %s" % ", ".join(PG_VERSIONS))
    if os.uname().machine != "x86_64":
        print("smoke.py builds an x86_64 seccomp program; skipping on %s" % os.uname().machine)
        return 0
    bundle = args.bundle
    if bundle is None:
        out = subprocess.run([os.path.join(HERE, "..", "build.sh")], check=True,
                             stdout=subprocess.PIPE).stdout.decode()
        bundle = out.strip().splitlines()[-1]
    if not os.path.exists(os.path.join(bundle, "v" + args.pg_version, "bin", "postgres")):
        print("the bundle %s has no v%s" % (bundle, args.pg_version))
        return 1
    print("PostgreSQL %s of %s" % (args.pg_version, bundle))
    start = time.time()
    ok = Smoke(bundle, args.pg_version, args.keep, args.cluster_bin).run()
    print("(%.1fs)" % (time.time() - start))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
