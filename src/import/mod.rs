//! Import of PostgreSQL 15 data directories into timelines: a directory on disk or a tar stream
//! ([`datadir`]), and the bootstrap of a new timeline from the walredo bundle's initdb ([`initdb`]).
//!
//! The mapping of files to keys, the LSN rules and what is skipped are in docs/repository.md, "Importing a
//! data directory". Invariants: every value of one import is put at one LSN above the timeline's last
//! record and published only when the whole source was read; bad input is an error naming the entry,
//! never a panic; memory stays bounded whatever the size of the data directory.

pub mod datadir;
mod importer;
pub mod initdb;
pub mod names;

pub use datadir::{ImportError, ImportStats, import_dir, import_tar, scan_dir, scan_tar};
pub use initdb::{BootstrapError, bootstrap_timeline};

#[cfg(test)]
mod tests;
