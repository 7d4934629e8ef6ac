//! What a replication connection can fail with. Server errors keep their SQLSTATE so that callers can tell
//! "slot in use" (55006) from "no such role" (28000) without matching on message text.

use std::time::Duration;

/// SQLSTATE `duplicate_object`: CREATE_REPLICATION_SLOT on a name that exists.
pub const SQLSTATE_DUPLICATE_OBJECT: &str = "42710";
/// SQLSTATE `object_in_use`: START_REPLICATION on a slot another walsender holds.
pub const SQLSTATE_OBJECT_IN_USE: &str = "55006";
/// SQLSTATE `invalid_authorization_specification`: e.g. a role that does not exist.
pub const SQLSTATE_INVALID_AUTHORIZATION: &str = "28000";
/// SQLSTATE `invalid_password`.
pub const SQLSTATE_INVALID_PASSWORD: &str = "28P01";

#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error("invalid connection string: {msg}")]
    ConnStr { msg: String },
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("tls to {addr}: {msg}")]
    Tls { addr: String, msg: String },
    #[error("timed out after {after:?} while {during}")]
    Timeout {
        after: Duration,
        during: &'static str,
    },
    #[error("i/o error on the replication connection: {0}")]
    Io(#[from] std::io::Error),
    /// EOF from the server where a message was expected.
    #[error("the server closed the replication connection")]
    Closed,
    /// Authentication failed on our side (e.g. the server asks for a password and none was given, or the
    /// server's SCRAM proof does not check out). The server's own refusals are [`ReplicationError::Server`].
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error("{0}")]
    UnsupportedAuth(String),
    /// An ErrorResponse from the server.
    #[error("server error {code}: {message}{}", detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Server {
        code: String,
        message: String,
        detail: Option<String>,
    },
    /// CREATE_REPLICATION_SLOT on a name that is taken (SQLSTATE 42710).
    #[error("replication slot {slot:?} already exists")]
    SlotExists { slot: String },
    /// Bytes from the server that do not follow the protocol: bad lengths, unknown tags, short payloads,
    /// unexpected messages.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// A feature of the server's answer we do not handle (e.g. base backups with extra tablespaces).
    #[error("{0} is not supported yet")]
    Unsupported(String),
    /// A caller's argument we refuse to put on the wire (e.g. a slot name that is not an identifier).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// An earlier error left the connection in the middle of an exchange; open a new one.
    #[error("the replication connection is unusable after an earlier error")]
    Broken,
}

impl ReplicationError {
    /// The SQLSTATE of a server error, `None` for other errors.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            ReplicationError::Server { code, .. } => Some(code),
            ReplicationError::SlotExists { .. } => Some(SQLSTATE_DUPLICATE_OBJECT),
            _ => None,
        }
    }

    pub(crate) fn protocol(msg: impl Into<String>) -> ReplicationError {
        ReplicationError::Protocol(msg.into())
    }
}
