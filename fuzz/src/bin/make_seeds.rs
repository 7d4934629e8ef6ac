//! Writes the seed corpus of the fuzz targets into `fuzz/seeds/<target>/` (docs/testing.md, Fuzzing):
//!
//!   make_seeds --wal <WAL segment file>... --remote <remote storage root of a run> --out fuzz/seeds
//!
//! - `wal_stream`: page-aligned pieces of the real segments, each prefixed with its LSN (8 bytes, big-endian)
//!   and a cut byte, as the target reads them;
//! - `wal_record`: the real records of the segments, one per (resource manager, info, has an image) kind;
//! - `index_part`, `archive_manifest`: every `index_part.json*` and archive manifest (`wal/*.json*`) object of
//!   the run's remote storage;
//! - `layer_file`: the checked-in layer fixtures, with the kind byte;
//! - `pagestream_request`: a request of each kind, v2 and v3, as our client encodes them;
//! - `libpq_frontend`: the startup exchanges of psql, of a NeonJWT client and of a pagestream session.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use bytes::BytesMut;
use pageserver::page_service::pagestream::{
    Request, RequestBody, RequestHeader, Version, encode_request,
};
use pageserver::pg::waldecoder::WalStreamDecoder;
use pageserver::pg::xlogrecord::decode_record;
use pageserver::pg::{Lsn, RelFileNode};
use pageserver::walredo::record::SlruKind;

const SEG: u64 = 16 << 20;

fn write(out: &Path, target: &str, name: &str, data: &[u8]) {
    let dir = out.join(target);
    std::fs::create_dir_all(&dir).expect("create seed dir");
    std::fs::write(dir.join(name), data).expect("write seed");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let values = |flag: &str| -> Vec<PathBuf> {
        let found: Vec<PathBuf> = args
            .windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| PathBuf::from(&w[1]))
            .collect();
        assert!(
            !found.is_empty(),
            "usage: make_seeds --wal SEGMENT... --remote DIR --out DIR (missing {flag})"
        );
        found
    };
    let (remote, out) = (values("--remote").remove(0), values("--out").remove(0));
    let mut seen = BTreeSet::new();
    for segment in values("--wal") {
        wal_seeds(&segment, &out, &mut seen);
    }
    println!("wal: {} record kinds", seen.len());
    remote_seeds(&remote, &out);
    layer_seeds(&out);
    pagestream_seeds(&out);
    libpq_seeds(&out);
}

fn wal_seeds(segment: &Path, out: &Path, seen: &mut BTreeSet<(u8, u8, bool)>) {
    let bytes = std::fs::read(segment).expect("read WAL segment");
    let name = segment.file_name().unwrap().to_string_lossy().to_string();
    let segno = u64::from_str_radix(&name[16..24], 16).expect("a WAL segment file name");
    let base = segno * SEG;
    // The used part of the segment (it is zero-filled after the end of WAL).
    let used = bytes
        .chunks(8192)
        .take_while(|p| p.iter().any(|&b| b != 0))
        .count()
        * 8192;
    let pages_per_seed = 4;
    let step = (used / 8192 / 12).max(pages_per_seed) * 8192;
    for (i, at) in (0..used).step_by(step).enumerate() {
        let end = (at + pages_per_seed * 8192).min(used);
        let mut seed = (base + at as u64).to_be_bytes().to_vec();
        seed.push(if i % 2 == 0 { 255 } else { 3 });
        seed.extend_from_slice(&bytes[at..end]);
        write(out, "wal_stream", &format!("{name}-{at:08x}"), &seed);
    }
    let mut decoder = WalStreamDecoder::new(Lsn(base), SEG as u32, pageserver::pg::PgVersion::V15)
        .expect("decoder");
    decoder.feed_bytes(&bytes[..used]);
    while let Ok(Some(raw)) = decoder.poll_decode() {
        let Ok(rec) = decode_record(&raw) else {
            continue;
        };
        let has_image = rec.blocks.iter().any(|b| b.image.is_some());
        if seen.insert((rec.rmid(), rec.rmgr_info(), has_image)) {
            write(
                out,
                "wal_record",
                &format!(
                    "rm{:02}-{:02x}-{}",
                    rec.rmid(),
                    rec.rmgr_info(),
                    has_image as u8
                ),
                &raw.bytes,
            );
        }
    }
}

fn remote_seeds(root: &Path, out: &Path) {
    let mut stack = vec![root.to_path_buf()];
    let (mut indexes, mut manifests) = (0, 0);
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read remote dir") {
            let path = entry.expect("entry").path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if path.is_dir() {
                stack.push(path);
            } else if name.starts_with("index_part.json") {
                indexes += 1;
                let data = std::fs::read(&path).unwrap();
                write(out, "index_part", &format!("{indexes:03}-{name}"), &data);
            } else if path.parent().is_some_and(|p| p.ends_with("wal")) && name.contains(".json") {
                manifests += 1;
                let data = std::fs::read(&path).unwrap();
                write(
                    out,
                    "archive_manifest",
                    &format!("{manifests:03}-{name}"),
                    &data,
                );
            }
        }
    }
    println!("remote: {indexes} indexes, {manifests} manifests");
}

fn layer_seeds(out: &Path) {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../src/repository/layers/fixtures");
    for entry in std::fs::read_dir(fixtures).expect("layer fixtures") {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let kind = if name.matches('-').count() == 2 {
            0u8
        } else {
            1
        };
        let mut seed = vec![kind];
        seed.extend(std::fs::read(&path).unwrap());
        write(
            out,
            "layer_file",
            if kind == 0 { "delta" } else { "image" },
            &seed,
        );
    }
}

fn pagestream_seeds(out: &Path) {
    let rel = RelFileNode {
        spc: 1663,
        db: 5,
        rel: 1259,
    };
    let hdr = RequestHeader {
        reqid: 7,
        request_lsn: Lsn(0x1_6B37_4D48),
        not_modified_since: Lsn(0x1_6B37_0000),
    };
    let bodies = [
        ("exists", RequestBody::Exists { rel, fork: 0 }),
        ("nblocks", RequestBody::Nblocks { rel, fork: 2 }),
        (
            "getpage",
            RequestBody::GetPage {
                rel,
                fork: 0,
                blkno: 3,
            },
        ),
        ("dbsize", RequestBody::DbSize { db: 5 }),
        (
            "slru",
            RequestBody::GetSlruSegment {
                kind: SlruKind::Clog,
                segno: 0,
            },
        ),
    ];
    for (name, body) in bodies {
        for (version, v) in [(Version::V2, "v2"), (Version::V3, "v3")] {
            let mut buf = BytesMut::new();
            encode_request(version, &Request { hdr, body }, &mut buf);
            write(out, "pagestream_request", &format!("{v}-{name}"), &buf);
        }
    }
}

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend(((body.len() + 4) as u32).to_be_bytes());
    m.extend(body);
    m
}

fn startup(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = 196_608u32.to_be_bytes().to_vec();
    for (k, v) in params {
        body.extend(k.as_bytes());
        body.push(0);
        body.extend(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut m = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    m.extend(body);
    m
}

fn libpq_seeds(out: &Path) {
    let ssl_request = [0u8, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    let mut psql = ssl_request.to_vec();
    psql.extend(startup(&[
        ("user", "cloud_admin"),
        ("database", "postgres"),
        ("application_name", "psql"),
        ("client_encoding", "UTF8"),
    ]));
    psql.extend(msg(
        b'Q',
        b"fullbackup e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5 f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6\0",
    ));
    psql.extend(msg(b'X', b""));
    write(out, "libpq_frontend", "psql", &psql);

    let mut jwt = startup(&[("user", "pageserver"), ("application_name", "compute")]);
    jwt.extend(msg(
        b'p',
        b"eyJhbGciOiJFZERTQSJ9.eyJzY29wZSI6InRlbmFudCJ9.c2lnbmF0dXJl\0",
    ));
    jwt.extend(msg(b'Q', b"set neon.protocol_version = 3\0"));
    write(out, "libpq_frontend", "jwt", &jwt);

    let mut stream = startup(&[("user", "pageserver")]);
    stream.extend(msg(
        b'Q',
        b"pagestream_v3 e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5 f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6\0",
    ));
    let mut req = BytesMut::new();
    let rel = RelFileNode {
        spc: 1663,
        db: 5,
        rel: 1259,
    };
    let hdr = RequestHeader {
        reqid: 1,
        request_lsn: Lsn(0x16B_374D48),
        not_modified_since: Lsn(0x16B_374D48),
    };
    encode_request(
        Version::V3,
        &Request {
            hdr,
            body: RequestBody::GetPage {
                rel,
                fork: 0,
                blkno: 0,
            },
        },
        &mut req,
    );
    stream.extend(msg(b'd', &req));
    stream.extend(msg(b'c', b""));
    stream.extend(msg(b'X', b""));
    write(out, "libpq_frontend", "pagestream", &stream);
    let mut cancel = 16u32.to_be_bytes().to_vec();
    cancel.extend(80_877_102u32.to_be_bytes());
    cancel.extend([0, 0, 1, 2, 0, 0, 0, 0]);
    write(out, "libpq_frontend", "cancel", &cancel);
}
