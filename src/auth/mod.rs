//! Authentication of the two listeners, Neon's model (docs/operations.md, Security).
//!
//! Each listener has its own `*_auth_type`: `Trust` lets everyone in, `NeonJWT` asks for a JSON Web Token
//! signed with Ed25519 (EdDSA, the only algorithm accepted) by a key whose public half is in
//! `auth_validation_public_key_path`: a PEM file, or a directory whose every regular file is one (Neon's
//! `libs/utils/src/auth.rs`). A token is tried against each key; the first that verifies it wins. Keys are
//! reloaded from the same path by `POST /v1/reload_auth_validation_keys`, without a restart; a reload that
//! finds no valid key keeps the old ones.
//!
//! The claims are `{"scope": ..., "tenant_id": ...}` (and optionally `exp`, checked when present, and Neon's
//! `endpoint_id`, ignored). The permission check ([`check_permission`]) is the only decision:
//! - scope `pageserverapi` may do everything;
//! - scope `tenant` may do what concerns the tenant named by its `tenant_id` claim, nothing else, and nothing
//!   that concerns no tenant (listing or creating tenants);
//! - every other scope of Neon's (`safekeeperdata`, `admin`, ...) is refused here.
//!
//! Invariants: a token or password never reaches a log line or an error message (errors name what was wrong
//! with it, never its text); the check runs at the edge, before any tenant is looked up, so a refused caller
//! learns nothing of which tenants exist.

mod claims;
mod keys;

pub use claims::{Claims, Scope, check_permission};
pub use keys::{JwtAuth, encode_token};

/// Why a caller is not let in. The texts are safe to send to the caller and to log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credentials at all (HTTP 401).
    #[error("missing authorization: a JWT is required ({0})")]
    Missing(&'static str),
    /// Credentials of the wrong shape (HTTP 401).
    #[error("malformed authorization: {0}")]
    Malformed(&'static str),
    /// A token that no key verifies, or expired, or whose claims do not parse (HTTP 403).
    #[error("JWT authentication error: {0}")]
    InvalidToken(String),
    /// A valid token that does not allow this (HTTP 403).
    #[error("forbidden: {0}")]
    Forbidden(String),
}

/// Errors of loading the validation keys.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not an Ed25519 public key in PEM form: {msg}")]
    BadKey {
        path: std::path::PathBuf,
        msg: String,
    },
    #[error("{path} holds no public key (a file, or a directory of PEM files, is expected)")]
    NoKeys { path: std::path::PathBuf },
}
