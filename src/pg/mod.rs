//! PostgreSQL knowledge, versions 15 and 18 (their differences in [`version`]): LSNs, WAL pages and records, record bodies, and the constants they are
//! built from. Everything here reads untrusted bytes: parsers return typed errors and never panic.

pub mod constants;
pub mod control;
pub mod lsn;
pub mod mask;
pub mod page;
pub mod pglz;
pub mod reader;
pub mod records;
pub mod version;
pub mod waldecoder;
pub mod walgen;
pub mod xlogrecord;

#[cfg(test)]
mod testwal;
#[cfg(test)]
mod waldecoder_proptests;

pub use lsn::Lsn;
pub use records::{RecordBody, parse_body};
pub use version::PgVersion;
pub use waldecoder::{RawRecord, WalDecodeError, WalStreamDecoder};
pub use xlogrecord::{
    BlockImage, BlockRef, Compression, DecodedRecord, RelFileNode, decode_record,
};
