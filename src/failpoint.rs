//! Fault injection for crash tests. With `PAGESERVER_FAILPOINT=<name>[@<n>]` in the environment, the process
//! aborts (as abruptly as `kill -9`: no destructors, no flush) the n-th time (default: the first) execution
//! reaches [`hit`] with that name. Unset, a hit costs one atomic load.
//!
//! Points: `layer-before-rename` (a layer file written, not yet renamed), `metadata-before-rename`,
//! `flush-before-commit` (an L0 layer durable, metadata not yet naming it), `compaction-before-commit`,
//! `swap-before-delete` (metadata committed, replaced layer files not yet deleted), `gc-before-delete` (only
//! counted by GC passes that remove layers).

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
