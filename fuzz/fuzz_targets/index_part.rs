//! `index_part.json` as downloaded from remote storage: parsed and validated; one that is accepted must
//! serialize and parse back to the same index.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pageserver::id::TimelineId;
use pageserver::remote_storage::index::IndexPart;

fuzz_target!(|data: &[u8]| {
    let timeline = TimelineId([0xab; 16]);
    if let Ok(index) = IndexPart::from_json(data, timeline) {
        let again = IndexPart::from_json(&index.to_json(), timeline).expect("our own JSON parses");
        assert_eq!(again.to_json(), index.to_json());
    }
});
