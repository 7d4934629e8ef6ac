//! Test bed shared by the integration tests: a throwaway PostgreSQL 15 cluster ([`pg::PgCluster`]) and the
//! pageserver binary as a child process ([`pageserver::Pageserver`]). Every guard cleans up in `Drop`, so a
//! failing test leaves no server behind.
//!
//! Each test binary uses a different part of this module.
#![allow(dead_code)]

pub mod compare;
pub mod dump;
pub mod keys;
pub mod objstore;
pub mod pageserver;
pub mod pg;
pub mod proxy;
pub mod recover;
pub mod walsample;
pub mod walsender;
pub mod workload;

use std::net::TcpListener;

/// A loopback port for a server of the test bed: free a moment ago, never handed out before by this process,
/// and below the kernel's ephemeral range (`ip_local_port_range`). A port from `bind(0)` is in that range, so
/// the kernel may give it to an outgoing connection (of a server that is still starting its parts) before
/// the server binds it: `weed mini` then failed with "address already in use".
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let ephemeral_start: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_start.max(10_001));
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    let mut seed =
        std::process::id() as u64 ^ (given.len() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for _ in 0..10_000 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let port = low + ((seed >> 33) % (high - low) as u64) as u16;
        if given.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
    panic!("no free loopback port in {low}..{high}")
}
