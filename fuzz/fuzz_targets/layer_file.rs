//! A delta or image layer file (the first byte picks which), opened and read whole: footer, index, every
//! block and value, every key's values. Corruption must be an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pageserver::pg::Lsn;
use pageserver::repository::layers::{DeltaLayer, ImageLayer};

const DELTA: &str = "000000067F00000005000040000000000000-000000067F0000000500004000000000000A__0000000000000100-0000000000000200";
const IMAGE: &str =
    "000000067F00000005000040000000000000-000000067F0000000500004000000000000A__0000000000000200";

fuzz_target!(|data: &[u8]| {
    let [kind, file @ ..] = data else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let delta = kind & 1 == 0;
    let path = dir.path().join(if delta { DELTA } else { IMAGE });
    std::fs::write(&path, file).expect("write layer");
    if delta {
        let Ok(layer) = DeltaLayer::open(&path) else {
            return;
        };
        for entry in layer.iter() {
            if entry.is_err() {
                break;
            }
        }
        let keys = layer.keys().unwrap_or_default();
        for key in keys {
            let _ = layer.get_values(key, Lsn(0)..Lsn(u64::MAX));
            let _ = layer.get_values_newest_first(key, Lsn(0)..Lsn(u64::MAX));
        }
    } else {
        let Ok(layer) = ImageLayer::open(&path) else {
            return;
        };
        let mut keys = Vec::new();
        for entry in layer.iter() {
            match entry {
                Ok((key, _)) => keys.push(key),
                Err(_) => break,
            }
        }
        for key in keys {
            let _ = layer.get(key);
        }
    }
});
