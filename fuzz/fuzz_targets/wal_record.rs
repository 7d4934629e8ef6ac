//! One WAL record, past the stream decoder's CRC: the record header, block references and images, and the
//! body of every resource manager we parse. Mutations reach the body parsers here, which the CRC would stop in
//! `wal_stream`. Each body is parsed as every supported PostgreSQL version's.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use pageserver::pg::Lsn;
use pageserver::pg::records::parse_body;
use pageserver::pg::waldecoder::RawRecord;
use pageserver::pg::xlogrecord::decode_record;

fuzz_target!(|data: &[u8]| {
    let lsn = Lsn(0x0100_0028);
    let raw = RawRecord {
        lsn,
        end_lsn: Lsn(lsn.0 + ((data.len() as u64 + 7) & !7)),
        bytes: Bytes::copy_from_slice(data),
    };
    if let Ok(rec) = decode_record(&raw) {
        // The body as every supported version's layout (their parsers differ in places).
        for version in pageserver::pg::PgVersion::ALL {
            let _ = parse_body(&rec, version);
        }
        for block in rec.blocks.iter() {
            if let Some(image) = &block.image {
                let _ = image.restore();
            }
        }
    }
});
