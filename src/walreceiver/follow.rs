//! Following a primary in one call: create the replication slot (so the primary keeps the WAL from here on),
//! take a base backup over the replication protocol, import it at its start LSN, then stream from there.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tracing::info;

use super::receiver::WalSource;
use super::{ReplicationConnection, ReplicationError};
use crate::id::TimelineId;
use crate::pg::PgVersion;
use crate::repository::tenant::Tenant;
use crate::repository::timeline::Timeline;

#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// `connstr` is shown with its password hidden.
    #[error("WAL source {connstr:?}: {source}")]
    Source {
        connstr: String,
        source: ReplicationError,
    },
    #[error("base backup: {0}")]
    Import(#[from] crate::import::datadir::ImportError),
    #[error(transparent)]
    Tenant(#[from] crate::repository::tenant::TenantError),
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    Version(String),
}

/// The major version of a `server_version` parameter ("18.6", "15.18 (Debian 15.18-0+deb12u1)").
pub fn server_major_version(server_version: &str) -> Option<u32> {
    let digits: String = server_version
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

/// Creates timeline `id` of `tenant` from a base backup of `source`; returns it at the backup's start LSN.
/// The caller starts its receiver, which streams from there (the data is consistent once WAL up to the
/// backup's end LSN is ingested).
pub async fn bootstrap_from_primary(
    tenant: &Tenant,
    id: TimelineId,
    source: &WalSource,
    expected: Option<PgVersion>,
    connect_timeout: Duration,
) -> Result<Arc<Timeline>, FollowError> {
    let shown = super::connstr::redacted(&source.connstr);
    let src = |e| FollowError::Source {
        connstr: shown.clone(),
        source: e,
    };
    let mut conn = ReplicationConnection::connect(&source.connstr, "pageserver", connect_timeout)
        .await
        .map_err(src)?;
    conn.identify_system().await.map_err(src)?;
    let reported = conn
        .parameter("server_version")
        .unwrap_or_default()
        .to_string();
    let version = server_major_version(&reported)
        .ok_or_else(|| {
            FollowError::Version(format!(
                "the WAL source reports server_version {reported:?}"
            ))
        })
        .and_then(|major| {
            PgVersion::from_major(major)
                .map_err(|e| FollowError::Version(format!("the WAL source is {e}")))
        })?;
    if let Some(expected) = expected
        && expected != version
    {
        return Err(FollowError::Version(format!(
            "pg_version {expected} was asked for, the WAL source is PostgreSQL {version}"
        )));
    }
    match conn.create_physical_slot(&source.slot_name, true).await {
        Ok(_) | Err(ReplicationError::SlotExists { .. }) => {}
        Err(e) => return Err(src(e)),
    }
    let spool = tenant.dir().join(format!("basebackup-{id}.tar.tmp"));
    let result = backup_and_import(tenant, id, version, &mut conn, &spool).await;
    let _ = tokio::fs::remove_file(&spool).await;
    if result.is_err() && tenant.timeline(id).is_ok() {
        let _ = tenant.delete_timeline(id).await;
    }
    result
}

async fn backup_and_import(
    tenant: &Tenant,
    id: TimelineId,
    version: PgVersion,
    conn: &mut ReplicationConnection,
    spool: &Path,
) -> Result<Arc<Timeline>, FollowError> {
    let io = |e: std::io::Error| FollowError::Io(format!("{}: {e}", spool.display()));
    let mut file = tokio::fs::File::create(spool).await.map_err(io)?;
    let backup = conn
        .base_backup(&format!("pageserver {id}"), &mut file)
        .await
        .map_err(|e| FollowError::Source {
            connstr: String::new(),
            source: e,
        })?;
    tokio::io::AsyncWriteExt::flush(&mut file)
        .await
        .map_err(io)?;
    drop(file);
    info!(timeline_id = %id, start = %backup.start_lsn, end = %backup.end_lsn, bytes = backup.tar_bytes, "base backup taken");
    let tl = tenant.create_timeline_for_import(id, version).await?;
    let reader = std::io::BufReader::new(std::fs::File::open(spool).map_err(io)?);
    let stats = crate::import::datadir::import_tar_sized(
        &tl,
        reader,
        backup.start_lsn,
        None,
        Some(backup.tar_bytes),
    )
    .await?;
    tl.finish_import(backup.start_lsn)
        .await
        .map_err(|e| FollowError::Io(e.to_string()))?;
    crate::wal_archive::base::archive_base(
        &tl,
        crate::wal_archive::base::BaseSource::Tar(spool.to_path_buf()),
        crate::wal_archive::BaseKind::Basebackup,
        backup.start_lsn,
        None,
        stats.system_identifier,
    )
    .await;
    Ok(tl)
}
