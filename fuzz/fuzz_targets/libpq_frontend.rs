//! What a page service client sends: the startup packet (with SSL, GSS and cancel requests), then frontend
//! messages (queries, CopyData, passwords, ...), read by the page service's bounded reader until the bytes end
//! or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pageserver::page_service::pq::{PqReader, Startup};

fuzz_target!(|data: &[u8]| {
    futures::executor::block_on(async {
        let mut reader = PqReader::new(data);
        loop {
            match reader.startup().await {
                Ok(Startup::Params(_)) => break,
                Ok(Startup::SslRequest | Startup::GssEncRequest) => continue,
                Err(_) => return,
            }
        }
        while reader.read().await.is_ok() {}
    });
});
