//! WAL receiver: follows a PostgreSQL 15 primary (or a safekeeper speaking vanilla walsender replication)
//! over physical streaming replication (docs/operations.md, Following a primary).
//!
//! This part is the replication *client*: a libpq connection in replication mode written on
//! postgres-protocol's message codecs over a tokio `TcpStream` (tokio-postgres has no physical replication).
//! It runs the commands the receiver needs (IDENTIFY_SYSTEM, CREATE/READ/DROP_REPLICATION_SLOT,
//! START_REPLICATION, BASE_BACKUP) and turns the COPY BOTH stream into [`ReplicationMessage`]s.
//!
//! ```text
//!  connect ──> idle ──simple query──> idle            (server errors keep it idle)
//!                │ └──BASE_BACKUP──> tar to caller ─> idle
//!                └──START_REPLICATION──> WalStream: XLogData / Keepalive in, status updates out
//!                                                   ends on CopyDone (Ok(None)), EOF, ErrorResponse
//! ```
//!
//! Invariants:
//! - bytes from the server are untrusted: frames longer than [`MAX_MESSAGE_LEN`] (1 GiB) are refused
//!   before they are buffered, and every malformed message is a [`ReplicationError::Protocol`], never a
//!   panic;
//! - streamed WAL is contiguous: each XLogData starts where the previous one ended (checked);
//! - the flush position we report is the caller's: the slot keeps all WAL after it, so the caller must
//!   only report what is durable;
//! - a connection left mid-exchange by an error refuses further commands ([`ReplicationError::Broken`]).
//!
//! TLS follows the connection string's `sslmode` as libpq does (`tls.rs`): `disable` and `allow` connect in
//! plaintext, `prefer` takes TLS when the server offers it, `require` insists on it (verifying the chain when
//! `sslrootcert` is given, as libpq does), `verify-ca` verifies the chain and `verify-full` also the host name.
//!
//! Not supported yet: Unix-domain sockets, following timeline switches, base backups of clusters with
//! extra tablespaces.

mod basebackup;
pub mod client;
pub(crate) mod connstr;
mod error;
pub mod follow;
mod message;
pub mod receiver;
pub mod sources;
mod stream;
mod tls;
pub(crate) mod wire;

pub use basebackup::BaseBackup;
pub use client::{ReplicationConnection, SystemId};
pub use connstr::{ConnConfig, SslMode};
pub use error::{
    ReplicationError, SQLSTATE_DUPLICATE_OBJECT, SQLSTATE_INVALID_AUTHORIZATION,
    SQLSTATE_INVALID_PASSWORD, SQLSTATE_OBJECT_IN_USE,
};
pub use message::{ReplicationMessage, encode_status_update, pg_now_micros};
pub use stream::{StatusSender, WalStream};
pub use wire::MAX_MESSAGE_LEN;
