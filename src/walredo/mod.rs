//! WAL redo: rebuilding a page from a base image and the records that changed it (docs/walredo.md).
//!
//! Records of PostgreSQL's own resource managers are replayed by `postgres --wal-redo` children (the bundle
//! of `walredo-bundle/`, docs/walredo.md), one pool per tenant and PostgreSQL version ([`pool::RedoPool`],
//! made at the first request of a timeline of that version; each version's children are its bundle's
//! `v<N>/bin/postgres`), each child sandboxed
//! with the seccomp program of [`sandbox`] and run as an unprivileged user when we are root. The few records
//! the pageserver owns (visibility-map bits, CLOG, multixacts) are applied in Rust ([`native`]).
//!
//! A request's records are applied in order; consecutive PostgreSQL records go to a child in one request
//! (B, P, A..., G), Rust-side records are applied on the page in between. The repository sees only the
//! [`RedoManager`] trait, so its tests can use a deterministic fake.
//!
//! Invariants: a child only ever changes the page it was asked for; a child that errs, dies or times out is
//! killed, its callers get an error, and the next request gets a fresh child; a tenant's children die with
//! the tenant ([`PostgresRedoManager::shutdown`]).

pub mod bundle;
pub mod isolate;
pub mod native;
pub mod pool;
pub mod process;
pub mod record;
pub mod sandbox;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use tracing::Span;

pub use record::{BufferTag, PageId, SlruKind, WalRecord};

use crate::pg::constants::BLCKSZ;
use crate::pg::{Lsn, PgVersion};
use pool::{PoolError, RedoPool};
use process::LaunchConfig;

/// Rebuild one page.
#[derive(Debug, Clone)]
pub struct RedoRequest {
    /// The version of the timeline's WAL: which bundle's children replay it.
    pub pg_version: PgVersion,
    pub page: PageId,
    /// The page before the first record; `None` if the first record initialises it.
    pub base_image: Option<Bytes>,
    /// Records in LSN order, each with its end LSN.
    pub records: Vec<(Lsn, WalRecord)>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum RedoError {
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error(transparent)]
    Native(#[from] native::NativeError),
    #[error("PostgreSQL records for {0:?}, which is not a relation page")]
    NotARelationPage(PageId),
    #[error("cannot set up WAL redo: {0}")]
    Setup(String),
}

pub type RedoFuture<'a> = Pin<Box<dyn Future<Output = Result<Bytes, RedoError>> + Send + 'a>>;

/// What the repository needs from WAL redo.
pub trait RedoManager: Send + Sync {
    fn redo(&self, request: RedoRequest) -> RedoFuture<'_>;
}

/// Settings of a tenant's redo.
#[derive(Debug, Clone)]
pub struct RedoConfig {
    /// The bundle: `<dir>/v<N>/bin/postgres`, `<dir>/v<N>/lib` per PostgreSQL version.
    pub bundle_dir: std::path::PathBuf,
    /// The binary under `v<N>/bin`; `postgres`, or `postgres-testhooks` in sandbox tests.
    pub binary_name: String,
    /// User to run the children as when the pageserver runs as root.
    pub run_as_user: String,
    pub pool_size: usize,
    /// A child idle this long is stopped; zero: never.
    pub idle_timeout: Duration,
    pub request_timeout: Duration,
    /// How long a request alone in flight waits for its reply in its own thread (`process::LaunchConfig`).
    pub reply_wait: Duration,
    /// Run each child in an empty root of its own, in new user, mount and network namespaces
    /// (`isolate`); when the kernel refuses, the children run on the host's filesystem, with a warning.
    pub empty_root: bool,
}

impl RedoConfig {
    fn version_dir(&self, version: PgVersion) -> std::path::PathBuf {
        self.bundle_dir.join(version.bundle_dir_name())
    }

    fn launch_config(&self, version: PgVersion) -> Result<LaunchConfig, RedoError> {
        let dir = self.version_dir(version);
        let binary = dir.join("bin").join(&self.binary_name);
        if !binary.exists() {
            return Err(RedoError::Setup(format!(
                "{} does not exist (build the bundle with walredo-bundle/build.sh and set pg_distrib_dir)",
                binary.display()
            )));
        }
        let run_as = if nix::unistd::Uid::effective().is_root() {
            let user = nix::unistd::User::from_name(&self.run_as_user)
                .map_err(|e| RedoError::Setup(format!("cannot look up user {}: {e}", self.run_as_user)))?
                .ok_or_else(|| {
                    RedoError::Setup(format!(
                        "running as root, redo children need an unprivileged user, and {:?} does not exist",
                        self.run_as_user
                    ))
                })?;
            if user.uid.is_root() {
                return Err(RedoError::Setup(format!(
                    "walredo user {:?} is root",
                    self.run_as_user
                )));
            }
            Some((user.uid.as_raw(), user.gid.as_raw()))
        } else {
            None
        };
        let sandbox = sandbox::program_bytes().map_err(|e| RedoError::Setup(e.to_string()))?;
        let empty_root = if self.empty_root {
            match isolate::EmptyRoot::for_bundle(
                &self.bundle_dir,
                &version.bundle_dir_name(),
                &binary,
            ) {
                Ok(root) => Some(root),
                Err(e) => {
                    tracing::warn!(error = %e, "wal-redo processes run without the empty root (seccomp only)");
                    None
                }
            }
        } else {
            None
        };
        Ok(LaunchConfig {
            empty_root,
            empty_root_failed: Default::default(),
            binary,
            lib_dir: dir.join("lib"),
            run_as,
            sandbox: sandbox.into(),
            request_timeout: self.request_timeout,
            reply_wait: self.reply_wait,
        })
    }
}

/// Redo through a tenant's pools of `postgres --wal-redo` children (one per PostgreSQL version), plus the
/// Rust-side records.
pub struct PostgresRedoManager {
    config: RedoConfig,
    span: Span,
    /// Per version of [`PgVersion::ALL`]: its pool, made at the first request of that version.
    pools: [std::sync::OnceLock<Result<RedoPool, RedoError>>; PgVersion::ALL.len()],
    closed: std::sync::atomic::AtomicBool,
}

impl PostgresRedoManager {
    /// A manager for one tenant; `span` carries the tenant id into the children's log lines. The bundle must
    /// hold at least PostgreSQL 15's redo binary, whose pool is set up here (so a broken setup shows at once);
    /// the other versions' pools are set up at their first request.
    pub fn new(config: &RedoConfig, span: Span) -> Result<PostgresRedoManager, RedoError> {
        let manager = PostgresRedoManager {
            config: config.clone(),
            span,
            pools: Default::default(),
            closed: Default::default(),
        };
        if let Err(e) = manager.pool(PgVersion::V15) {
            return Err(e.clone());
        }
        Ok(manager)
    }

    /// The pool of `version`'s children, made on first use.
    pub fn pool(&self, version: PgVersion) -> Result<&RedoPool, &RedoError> {
        let at = PgVersion::ALL
            .iter()
            .position(|v| *v == version)
            .unwrap_or_default();
        self.pools[at]
            .get_or_init(|| {
                let launch = self.config.launch_config(version)?;
                let span =
                    tracing::info_span!(parent: &self.span, "walredo", pg_version = %version);
                let pool = RedoPool::new(
                    launch,
                    self.config.pool_size,
                    self.config.idle_timeout,
                    span,
                );
                Ok(pool)
            })
            .as_ref()
    }

    /// The pools made so far.
    fn pools(&self) -> impl Iterator<Item = &RedoPool> {
        self.pools
            .iter()
            .filter_map(|p| p.get().and_then(|r| r.as_ref().ok()))
    }

    /// Process ids of every child of every version.
    pub async fn pids(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        for pool in self.pools() {
            pids.extend(pool.pids().await);
        }
        pids
    }

    /// Kills the tenant's children; later requests fail.
    pub async fn shutdown(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        for pool in self.pools() {
            pool.shutdown().await;
        }
    }

    async fn redo_impl(&self, request: RedoRequest) -> Result<Bytes, RedoError> {
        let RedoRequest {
            pg_version,
            page: id,
            base_image,
            records,
        } = request;
        let mut page: Option<Bytes> = base_image;
        let mut i = 0;
        while i < records.len() {
            let run_end = records[i..]
                .iter()
                .position(|(_, r)| r.is_postgres() != records[i].1.is_postgres())
                .map_or(records.len(), |n| i + n);
            let run = &records[i..run_end];
            if records[i].1.is_postgres() {
                let PageId::Rel(tag) = id else {
                    return Err(RedoError::NotARelationPage(id));
                };
                let raw: Vec<(Lsn, &[u8])> = run
                    .iter()
                    .filter_map(|(lsn, r)| match r {
                        WalRecord::Postgres { rec, .. } => Some((*lsn, &rec[..])),
                        _ => None,
                    })
                    .collect();
                // A record that initialises the page makes any earlier image irrelevant.
                let base = if run[0].1.will_init() {
                    None
                } else {
                    page.as_deref()
                };
                let encoded = process::encode_request(&tag, base, &raw);
                let pool = self.pool(pg_version).map_err(|e| e.clone())?;
                if self.closed.load(std::sync::atomic::Ordering::Acquire) {
                    // A pool made after shutdown() must not start children.
                    pool.shutdown().await;
                }
                page = Some(pool.request(&encoded).await?);
            } else {
                let mut buf = match &page {
                    Some(p) => p.to_vec(),
                    None => {
                        return Err(native::NativeError::NoBaseImage {
                            record: "a Rust-applied record",
                        }
                        .into());
                    }
                };
                for (_, rec) in run {
                    native::apply(id, &mut buf, rec)?;
                }
                page = Some(buf.into());
            }
            i = run_end;
        }
        page.ok_or(RedoError::Native(native::NativeError::NoBaseImage {
            record: "an empty request",
        }))
    }
}

impl RedoManager for PostgresRedoManager {
    fn redo(&self, request: RedoRequest) -> RedoFuture<'_> {
        Box::pin(async move {
            let started = std::time::Instant::now();
            let result = self.redo_impl(request).await;
            crate::metrics::REDO_SECONDS.observe(started.elapsed());
            result
        })
    }
}

/// The bundle dir from `$PAGESERVER_WALREDO_BUNDLE` (set by scripts/test.sh), for tests and tools.
pub fn bundle_from_env() -> Option<std::path::PathBuf> {
    std::env::var_os("PAGESERVER_WALREDO_BUNDLE")
        .map(std::path::PathBuf::from)
        .filter(|p| Path::new(p).join("v15/bin/postgres").exists())
}

/// An all-zero page.
pub fn zero_page() -> Bytes {
    Bytes::from(vec![0u8; BLCKSZ])
}
