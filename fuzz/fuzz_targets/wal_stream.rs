//! The WAL stream decoder on arbitrary bytes, fed in arbitrary pieces: page headers, records across pages
//! and segments, CRCs; then every record it returns is decoded and its body parsed, and its full-page images
//! restored (pglz, lz4, zstd). The first 8 bytes are the LSN the stream starts at (made page-aligned), the
//! ninth how the rest is cut into pieces.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pageserver::pg::Lsn;
use pageserver::pg::records::parse_body;
use pageserver::pg::waldecoder::WalStreamDecoder;
use pageserver::pg::xlogrecord::decode_record;

const SEG: u32 = 16 << 20;

fuzz_target!(|data: &[u8]| {
    let [l0, l1, l2, l3, l4, l5, l6, l7, cut, rest @ ..] = data else {
        return;
    };
    let start = Lsn(u64::from_be_bytes([*l0, *l1, *l2, *l3, *l4, *l5, *l6, *l7]) & !8191);
    let Ok(mut decoder) = WalStreamDecoder::new(start, SEG, pageserver::pg::PgVersion::V15) else {
        return;
    };
    let piece = (*cut as usize).max(1) * 97;
    for chunk in rest.chunks(piece) {
        decoder.feed_bytes(chunk);
        loop {
            match decoder.poll_decode() {
                Ok(Some(raw)) => {
                    if let Ok(rec) = decode_record(&raw) {
                        let _ = parse_body(&rec, pageserver::pg::PgVersion::V15);
                        for block in rec.blocks.iter() {
                            if let Some(image) = &block.image {
                                let _ = image.restore();
                            }
                        }
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    let _ = decoder.finish();
});
