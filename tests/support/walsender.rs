//! A fake walsender for WAL that no real PostgreSQL writes (hostile records): it answers IDENTIFY_SYSTEM as a
//! given system, says the slot exists, and streams one record from wherever START_REPLICATION asks.

use std::io::{Read, Write};
use std::net::TcpStream;

use pageserver::pg::constants::DEFAULT_WAL_SEGMENT_SIZE;
use pageserver::pg::walgen::{normalize_lsn, page_header};
use pageserver::pg::{Lsn, PgVersion};

pub fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

pub fn ready() -> Vec<u8> {
    msg(b'Z', b"I")
}

/// A one-row result of text columns.
pub fn row(names: &[&str], values: &[&str]) -> Vec<u8> {
    let mut desc = (names.len() as u16).to_be_bytes().to_vec();
    for n in names {
        desc.extend_from_slice(n.as_bytes());
        desc.push(0);
        desc.extend_from_slice(&[0; 6]); // table oid, column number
        desc.extend_from_slice(&25u32.to_be_bytes()); // text
        desc.extend_from_slice(&(-1i16).to_be_bytes());
        desc.extend_from_slice(&(-1i32).to_be_bytes());
        desc.extend_from_slice(&0u16.to_be_bytes());
    }
    let mut data = (values.len() as u16).to_be_bytes().to_vec();
    for v in values {
        data.extend_from_slice(&(v.len() as u32).to_be_bytes());
        data.extend_from_slice(v.as_bytes());
    }
    let mut out = msg(b'T', &desc);
    out.extend(msg(b'D', &data));
    out.extend(msg(b'C', b"SELECT 1\0"));
    out.extend(ready());
    out
}

pub fn read_message(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 5];
    s.read_exact(&mut head).ok()?;
    let len = u32::from_be_bytes(head[1..5].try_into().unwrap()) as usize;
    let mut body = vec![0u8; len.checked_sub(4)?];
    s.read_exact(&mut body).ok()?;
    Some((head[0], body))
}

/// The WAL from `start`: padding to the next record start, then `record`, with page headers where it
/// crosses pages.
pub fn wal_from(start: Lsn, sysid: u64, record: &[u8]) -> Vec<u8> {
    let seg = DEFAULT_WAL_SEGMENT_SIZE;
    let mut out = Vec::new();
    if start.block_offset() == 0 {
        page_header(&mut out, PgVersion::V15, start, seg, sysid, 0);
    }
    let rec_start = normalize_lsn(start, seg);
    out.resize((rec_start.0 - start.0) as usize, 0);
    let mut rest = record;
    loop {
        let at = Lsn(start.0 + out.len() as u64);
        let room = (8192 - at.block_offset()) as usize;
        let n = room.min(rest.len());
        out.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        if rest.is_empty() {
            return out;
        }
        let at = Lsn(start.0 + out.len() as u64);
        page_header(&mut out, PgVersion::V15, at, seg, sysid, rest.len() as u32);
    }
}

/// A walsender that answers IDENTIFY_SYSTEM (as system `sysid`: the timeline's WAL archive refuses another),
/// says the slot exists, and streams `record` (built from the
/// start LSN and the timeline's prev record) from wherever START_REPLICATION asks; then holds the connection.
pub fn fake_walsender(
    sysid: u64,
    prev: Lsn,
    record: impl Fn(Lsn) -> Vec<u8> + Send + 'static,
) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { return };
            let record = &record;
            let _ = (|| -> Option<()> {
                let mut len = [0u8; 4];
                s.read_exact(&mut len).ok()?;
                let mut startup = vec![0u8; u32::from_be_bytes(len) as usize - 4];
                s.read_exact(&mut startup).ok()?;
                let mut hello = msg(b'R', &0u32.to_be_bytes());
                hello.extend(msg(b'S', b"server_version\x0015.18\x00"));
                hello.extend(ready());
                s.write_all(&hello).ok()?;
                loop {
                    let (tag, body) = read_message(&mut s)?;
                    if tag != b'Q' {
                        continue;
                    }
                    let q = String::from_utf8_lossy(&body);
                    if q.starts_with("IDENTIFY_SYSTEM") {
                        s.write_all(&row(
                            &["systemid", "timeline", "xlogpos", "dbname"],
                            &[&sysid.to_string(), "1", "0/10000000", ""],
                        ))
                        .ok()?;
                    } else if q.starts_with("CREATE_REPLICATION_SLOT") {
                        let mut e = msg(
                            b'E',
                            b"SERROR\0C42710\0Mreplication slot \"ps\" already exists\0\0",
                        );
                        e.extend(ready());
                        s.write_all(&e).ok()?;
                    } else if q.starts_with("START_REPLICATION") {
                        let lsn_text = q.split_whitespace().nth(4)?;
                        let start: Lsn = lsn_text.trim_end_matches('\0').parse().ok()?;
                        let wal = wal_from(start, sysid, &record(prev));
                        let end = start.0 + wal.len() as u64;
                        let mut copy = msg(b'W', &[0, 0, 0]);
                        let mut data = vec![b'w'];
                        data.extend_from_slice(&start.0.to_be_bytes());
                        data.extend_from_slice(&end.to_be_bytes());
                        data.extend_from_slice(&0u64.to_be_bytes());
                        data.extend_from_slice(&wal);
                        copy.extend(msg(b'd', &data));
                        s.write_all(&copy).ok()?;
                        // Hold the stream; answer nothing more (status updates are read and dropped).
                        while read_message(&mut s).is_some() {}
                        return None;
                    } else {
                        let mut e = msg(b'E', b"SERROR\0C42601\0Munexpected\0\0");
                        e.extend(ready());
                        s.write_all(&e).ok()?;
                    }
                }
            })();
        }
    });
    port
}
