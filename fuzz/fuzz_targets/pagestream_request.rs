//! A pagestream request (the CopyData payload of a `pagestream_v2|v3` session), in both versions; a request
//! that parses must encode back to the same bytes.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pageserver::page_service::pagestream::{Version, encode_request, parse_request};

fuzz_target!(|data: &[u8]| {
    for version in [Version::V2, Version::V3] {
        if let Ok(req) = parse_request(version, data) {
            let mut out = BytesMut::new();
            encode_request(version, &req, &mut out);
            assert_eq!(&out[..], data, "{version:?} request does not round-trip");
        }
    }
});
