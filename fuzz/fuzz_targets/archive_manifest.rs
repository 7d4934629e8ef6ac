//! The WAL archive's sidecar manifests (segment and base) and object names, as downloaded: parsed; a
//! manifest that is accepted must serialize and parse back to the same manifest.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pageserver::wal_archive::manifest::parse_object_name;
use pageserver::wal_archive::{BaseManifest, SegmentManifest};

const SEGMENT: &str = "000000010000000000000001";

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = SegmentManifest::from_json(SEGMENT, data) {
        let again = SegmentManifest::from_json(SEGMENT, &m.to_json()).expect("our own JSON parses");
        assert_eq!(again.to_json(), m.to_json());
    }
    if let Ok(m) = BaseManifest::from_json("base", data) {
        let again = BaseManifest::from_json("base", &m.to_json()).expect("our own JSON parses");
        assert_eq!(again.to_json(), m.to_json());
    }
    if let Ok(name) = std::str::from_utf8(data) {
        let _ = parse_object_name(name, 16 << 20);
    }
});
