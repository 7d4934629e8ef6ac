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

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}
