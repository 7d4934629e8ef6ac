//! pageserver: keeps every version of every page of PostgreSQL databases and serves any page at any LSN.
//!
//! The services (docs/architecture.md) share one repository of page versions; this crate holds them all, one module per
//! service. `main.rs` is only the command line: it loads the config, takes the workdir lock and runs
//! [`service::run`].

pub mod auth;
pub mod config;
pub mod durable;
pub mod failpoint;
pub mod http;
pub mod id;
pub mod import;
pub mod inspect;
pub mod logging;
pub mod metrics;
pub mod page_service;
pub mod pagebench;
pub mod pg;
pub mod progress;
pub mod recover;
pub mod remote_storage;
pub mod repository;
pub mod restore;
pub mod service;
pub mod tls;
pub mod wal_archive;
pub mod waldump;
pub mod walingest;
pub mod walreceiver;
pub mod walredo;
pub mod workdir;
