//! Archiving a timeline's base: the data directory it started from, as a zstd-compressed tar with a manifest
//! (its sha256, LSN and system identifier), so that a recovery never runs initdb again or needs the source's
//! layers (docs/wal-archive.md, "The base").

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::manifest::BaseKind;
use crate::pg::Lsn;
use crate::repository::timeline::Timeline;

/// How long a create waits for its base to reach the store before it gives up on archiving it.
const BASE_UPLOAD_BUDGET: Duration = Duration::from_secs(120);

/// Where the base comes from.
pub enum BaseSource {
    /// A data directory (initdb's output).
    Dir(PathBuf),
    /// A tar of one (a base backup).
    Tar(PathBuf),
}

/// Archives the base of `tl` (imported at `lsn`). A failure is logged and leaves the timeline without a base:
/// it serves as usual, and a recovery without `from_lsn` fails closed on the missing base.
pub async fn archive_base(
    tl: &Timeline,
    source: BaseSource,
    kind: BaseKind,
    lsn: Lsn,
    prev: Option<Lsn>,
    system_identifier: u64,
) {
    let Some(archive) = &tl.wal_archive else {
        return;
    };
    let compressed = tokio::task::spawn_blocking(move || match &source {
        BaseSource::Dir(dir) => super::writer::tar_zst_of_dir(dir),
        BaseSource::Tar(tar) => super::writer::zst_of_file(tar),
    })
    .await;
    let zst = match compressed {
        Ok(Ok(z)) => z,
        Ok(Err(e)) => return warn!(error = %e, "cannot compress the base; it is not archived"),
        Err(e) => return warn!(error = %e, "cannot compress the base; it is not archived"),
    };
    let budget = CancellationToken::new();
    let timer = {
        let budget = budget.clone();
        tokio::spawn(async move {
            tokio::time::sleep(BASE_UPLOAD_BUDGET).await;
            budget.cancel();
        })
    };
    let put = archive
        .put_base(
            kind,
            Bytes::from(zst),
            lsn,
            prev,
            system_identifier,
            &budget,
        )
        .await;
    timer.abort();
    if let Err(e) = put {
        warn!(error = %e, "the base was not archived; a recovery of this timeline needs from_lsn");
        archive.set_status(|s| s.last_error = Some(format!("base not archived: {e}")));
    }
}
