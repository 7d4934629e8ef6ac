//! Fault injection for crash tests. With `PAGESERVER_FAILPOINT=<name>[@<n>]` in the environment, the process
//! aborts (as abruptly as `kill -9`: no destructors, no flush) the n-th time (default: the first) execution
//! reaches [`hit`] with that name. Unset, a hit costs one atomic load.
//!
//! Points: `layer-before-rename` (a layer file written, not yet renamed), `metadata-before-rename`,
//! `flush-before-commit` (an L0 layer durable, metadata not yet naming it), `compaction-before-commit`,
//! `swap-before-delete` (metadata committed, replaced layer files not yet deleted), `gc-before-delete` (only
//! counted by GC passes that remove layers).
//!
//! Pauses, for tests that act while a job runs: with `PAGESERVER_FAILPOINT_PAUSE=<name>=<ms>`, every
//! [`pause`] with that name sleeps that long. Point: `recover-after-segment` (after each replayed segment).
//!
//! A simulated pageserver bug, for the recovery tests: `PAGESERVER_FAULT_CORRUPT_PAGES=<timeline id>:<key>,...`
//! (keys as 36 hex digits) makes reads of those keys on that timeline return the page with one byte flipped
//! ([`corrupt_page`]).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

static CONFIG: OnceLock<Option<(String, u64)>> = OnceLock::new();
static HITS: AtomicU64 = AtomicU64::new(0);

fn config() -> &'static Option<(String, u64)> {
    CONFIG.get_or_init(|| {
        let value = std::env::var("PAGESERVER_FAILPOINT").ok()?;
        match value.split_once('@') {
            Some((name, n)) => Some((name.to_string(), n.parse().unwrap_or(1))),
            None => Some((value, 1)),
        }
    })
}

/// Aborts the process if `name` is the configured fail point and this is its n-th hit.
pub fn hit(name: &str) {
    if let Some((point, at)) = config()
        && point == name
        && HITS.fetch_add(1, Ordering::AcqRel) + 1 == *at
    {
        eprintln!("failpoint {name}: aborting the process");
        std::process::abort();
    }
}

static PAUSE: OnceLock<Option<(String, u64)>> = OnceLock::new();

/// Sleeps if `name` is the configured pause point (see the module doc).
pub async fn pause(name: &str) {
    let conf = PAUSE.get_or_init(|| {
        let value = std::env::var("PAGESERVER_FAILPOINT_PAUSE").ok()?;
        let (point, ms) = value.split_once('=')?;
        Some((point.to_string(), ms.parse().ok()?))
    });
    if let Some((point, ms)) = conf
        && point == name
    {
        tokio::time::sleep(std::time::Duration::from_millis(*ms)).await;
    }
}

static CORRUPT: OnceLock<Vec<(String, String)>> = OnceLock::new();

/// The byte a simulated bug flips in a corrupted page: in the tuple data at the end of a full heap page.
pub const CORRUPT_OFFSET: usize = 8192 - 100;

fn corrupt_list() -> &'static Vec<(String, String)> {
    CORRUPT.get_or_init(|| {
        let Ok(value) = std::env::var("PAGESERVER_FAULT_CORRUPT_PAGES") else {
            return Vec::new();
        };
        value
            .split(',')
            .filter_map(|e| {
                let (t, k) = e.trim().split_once(':')?;
                Some((t.to_ascii_lowercase(), k.to_ascii_uppercase()))
            })
            .collect()
    })
}

/// Whether any page corruption is configured (a read checks this before naming its key).
pub fn corruption_configured() -> bool {
    !corrupt_list().is_empty()
}

/// Flips one byte of `page` if `(timeline, key)` is configured in `PAGESERVER_FAULT_CORRUPT_PAGES`.
pub fn corrupt_page(timeline: &str, key: &str, page: &mut bytes::Bytes) {
    let list = corrupt_list();
    if list.is_empty() || page.len() <= CORRUPT_OFFSET {
        return;
    }
    if list
        .iter()
        .any(|(t, k)| t == timeline && k.eq_ignore_ascii_case(key))
    {
        let mut v = page.to_vec();
        v[CORRUPT_OFFSET] ^= 0xFF;
        *page = bytes::Bytes::from(v);
    }
}
