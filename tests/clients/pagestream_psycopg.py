#!/usr/bin/env python3
"""Reads pages through pagestream_v3 with a third-party libpq client: psycopg's binding of libpq itself
(psycopg.pq.PGconn: PQconnectdb, PQexec entering COPY_BOTH, PQputCopyData, PQgetCopyData).

usage: pagestream_psycopg.py <conninfo> <tenant> <timeline> <lsn X/Y> <blocks file> <pages out file>

The blocks file has one request per line, "spcnode dbnode relnode forknum blkno". Each page answer (8192 bytes)
is appended to the out file in request order. Every v3 answer must echo its request (reqid, LSNs, reltag,
blkno) and carry exactly one page; anything else exits non-zero with the reason.
"""
import struct
import sys

from psycopg import pq


def lsn_value(text):
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def main():
    conninfo, tenant, timeline, lsn_text, blocks_path, out_path = sys.argv[1:7]
    lsn = lsn_value(lsn_text)
    conn = pq.PGconn.connect(conninfo.encode())
    if conn.status != pq.ConnStatus.OK:
        sys.exit(f"connect: {conn.error_message.decode()}")
    res = conn.exec_(f"pagestream_v3 {tenant} {timeline}".encode())
    if res.status != pq.ExecStatus.COPY_BOTH:
        sys.exit(f"pagestream_v3: {res.status!r} {conn.error_message.decode()}")
    with open(blocks_path) as blocks, open(out_path, "wb") as out:
        for reqid, line in enumerate(blocks, start=1):
            spc, db, rel, fork, blk = (int(x) for x in line.split())
            body = struct.pack(">IIIBI", spc, db, rel, fork, blk)
            header = struct.pack(">QQQ", reqid, lsn, lsn)
            conn.put_copy_data(bytes([2]) + header + body)
            conn.flush()
            nbytes, data = conn.get_copy_data(0)
            if nbytes <= 0:
                sys.exit(f"request {reqid}: no answer ({nbytes}): {conn.error_message.decode()}")
            data = bytes(data)
            if data[0] != 102:
                message = data[25:].rstrip(bytes(1)).decode(errors="replace")
                sys.exit(f"request {reqid}: answer tag {data[0]}: {message}")
            if data[1:42] != header + body:
                sys.exit(f"request {reqid}: the answer does not echo the request")
            if len(data) != 42 + 8192:
                sys.exit(f"request {reqid}: answer of {len(data)} bytes")
            out.write(data[42:])
    conn.put_copy_end()
    conn.finish()


if __name__ == "__main__":
    main()
