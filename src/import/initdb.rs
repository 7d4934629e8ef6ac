//! Bootstrap of a new timeline: run the walredo bundle's `initdb` into a scratch directory, find the LSN
//! the new cluster ends at, and import the directory there.
//!
//! The LSN: initdb ends with a clean shutdown, so the last WAL record is the shutdown checkpoint and
//! pg_control points at it. The import is at that record's end (8-aligned, where the next record would
//! start), with the record's start as prev_record_lsn, so a compute can start writing WAL right there.
//! (Neon imports at the checkpoint record's start instead; the end is the position a reader of this WAL
//! would call "everything up to here".)
//!
//! The timeline is created at LSN 0 (nothing exists before initdb), filled at the initdb LSN, checkpointed,
//! and only then is `initdb_lsn` committed to its metadata: a timeline whose metadata says `initdb_lsn` 0
//! never finished its bootstrap (a crash in between leaves one; it can be deleted). On any error the
//! timeline is deleted.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tracing::{info, warn};

use super::datadir::{ImportError, ImportStats, import_dir};
use crate::id::TimelineId;
use crate::pg::constants::{RM_XLOG_ID, XLOG_CHECKPOINT_SHUTDOWN};
use crate::pg::control::{ControlFileError, parse_control_file};
use crate::pg::{Lsn, PgVersion};
use crate::repository::metadata::MetadataError;
use crate::repository::tasks::flush::FlushError;
use crate::repository::tenant::{Tenant, TenantError};
use crate::repository::timeline::Timeline;
use crate::waldump::{WaldumpError, collect_segments, for_each_record};

/// initdb takes about a second; this only guards against a hung child.
const INITDB_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("cannot run initdb: {0}")]
    Setup(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("initdb failed ({status}): {stderr}")]
    Initdb { status: String, stderr: String },
    #[error("initdb did not finish within {0:?}")]
    InitdbTimeout(Duration),
    #[error("cannot read the WAL initdb wrote: {0}")]
    Wal(#[from] WaldumpError),
    #[error("{path}: {source}")]
    ControlFile {
        path: PathBuf,
        source: ControlFileError,
    },
    #[error("unexpected WAL from initdb: {0}")]
    UnexpectedWal(String),
    #[error(transparent)]
    Tenant(#[from] TenantError),
    #[error(transparent)]
    Import(#[from] ImportError),
    #[error(transparent)]
    Flush(#[from] FlushError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("bootstrap task panicked: {0}")]
    Panicked(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BootstrapError + '_ {
    move |source| BootstrapError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Runs initdb, creates timeline `timeline_id` of `tenant` from its output, and removes the scratch
/// directory. Returns the timeline and the LSN it starts at (its `initdb_lsn` and `last_record_lsn`).
pub async fn bootstrap_timeline(
    tenant: &Tenant,
    timeline_id: TimelineId,
    version: PgVersion,
    bundle_dir: &Path,
    superuser: &str,
    locale: &str,
    run_as_user: &str,
) -> Result<(Arc<Timeline>, Lsn), BootstrapError> {
    let initdb = run_initdb(version, bundle_dir, superuser, locale, run_as_user).await?;
    let result = import_initdb_dir(tenant, timeline_id, initdb.pgdata()).await;
    if let Ok(done) = &result {
        if done.timeline.upload_queue.is_some() {
            archive_initdb(&done.timeline, initdb.pgdata()).await;
        }
        crate::wal_archive::base::archive_base(
            &done.timeline,
            crate::wal_archive::base::BaseSource::Dir(initdb.pgdata().to_path_buf()),
            crate::wal_archive::BaseKind::Initdb,
            done.lsn,
            Some(done.stats.control_checkpoint_lsn),
            done.stats.system_identifier,
        )
        .await;
    }
    initdb.remove().await;
    let done = result?;
    info!(timeline = %timeline_id, lsn = %done.lsn, relations = done.stats.relations,
          blocks = done.stats.blocks, "bootstrapped timeline from initdb");
    Ok((done.timeline, done.lsn))
}

/// With remote storage: the initdb output as `<timeline dir>/initdb.tar.zst` (a tar of the data directory,
/// zstd-compressed), uploaded once by the upload queue, which then removes the local copy (a load finding it
/// schedules the upload again). So a later attach or recovery never needs to run initdb. A failure here is
/// logged, not fatal: the timeline itself is complete.
async fn archive_initdb(timeline: &Arc<Timeline>, pgdata: &Path) {
    let path = timeline
        .dir()
        .join(crate::remote_storage::index::INITDB_ARCHIVE_NAME);
    let (src, dst) = (pgdata.to_path_buf(), path.clone());
    let made = tokio::task::spawn_blocking(move || write_initdb_archive(&src, &dst)).await;
    match made {
        Ok(Ok(())) => timeline.schedule_initdb_upload(),
        Ok(Err(e)) => warn!(error = %e, "cannot archive the initdb output; it is not uploaded"),
        Err(e) => warn!(error = %e, "cannot archive the initdb output; it is not uploaded"),
    }
}

fn write_initdb_archive(pgdata: &Path, dst: &Path) -> std::io::Result<()> {
    let tmp = dst.with_extension("zst.tmp");
    let file = std::fs::File::create(&tmp)?;
    let encoder = zstd::Encoder::new(file, 3)?;
    let mut tar = tar::Builder::new(encoder);
    tar.follow_symlinks(false);
    tar.append_dir_all(".", pgdata)?;
    let file = tar.into_inner()?.finish()?;
    file.sync_all()?;
    std::fs::rename(&tmp, dst)?;
    if let Some(dir) = dst.parent() {
        crate::durable::fsync_dir(dir)?;
    }
    Ok(())
}

/// A new cluster made by initdb, in a scratch directory that is removed on drop.
#[derive(Debug)]
pub struct InitdbDir {
    scratch: PathBuf,
    pgdata: PathBuf,
    in_empty_root: bool,
}

impl InitdbDir {
    pub fn pgdata(&self) -> &Path {
        &self.pgdata
    }

    /// Whether initdb ran in the bundle's empty root (on the bundle's own libraries) rather than on the
    /// host's filesystem.
    pub fn in_empty_root(&self) -> bool {
        self.in_empty_root
    }

    /// Removes the scratch directory off the async workers.
    pub async fn remove(mut self) {
        let scratch = std::mem::take(&mut self.scratch);
        let _ = tokio::task::spawn_blocking(move || remove_scratch(&scratch)).await;
    }
}

impl Drop for InitdbDir {
    fn drop(&mut self) {
        // Empty once `remove` took it.
        if !self.scratch.as_os_str().is_empty() {
            remove_scratch(&self.scratch);
        }
    }
}

fn remove_scratch(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        warn!(dir = %dir.display(), error = %e, "cannot remove the initdb scratch directory");
    }
}

/// Runs `<bundle>/v<N>/bin/initdb` of `version` into a new scratch directory under the system temp dir: environment
/// cleared but for the bundle's library path and the locale; as `run_as_user` when we are root (PostgreSQL
/// refuses root), on a directory that user owns. In the bundle's empty root (docs/walredo.md §4) when the
/// bundle and the locale allow it and the kernel lets us make the namespaces; else on the host.
pub async fn run_initdb(
    version: PgVersion,
    bundle_dir: &Path,
    superuser: &str,
    locale: &str,
    run_as_user: &str,
) -> Result<InitdbDir, BootstrapError> {
    let version_dir = bundle_dir.join(version.bundle_dir_name());
    let initdb = version_dir.join("bin").join("initdb");
    if !initdb.exists() {
        return Err(BootstrapError::Setup(format!(
            "{} does not exist (build the bundle with walredo-bundle/build.sh)",
            initdb.display()
        )));
    }
    let run_as = unprivileged_user(run_as_user)?;
    let mut dir = make_scratch_dir(run_as)?;
    let args = |pgdata: &Path| {
        [
            "-D".into(),
            pgdata.as_os_str().to_owned(),
            "-U".into(),
            superuser.into(),
            "--encoding=UTF8".into(),
            format!("--locale={locale}").into(),
            "--no-sync".into(),
            "--no-instructions".into(),
        ]
    };
    let command = |program: &Path| {
        let mut cmd = tokio::process::Command::new(program);
        cmd.env_clear()
            .env("LC_ALL", locale)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        if let Some((uid, gid)) = run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd
    };

    let empty_root = crate::walredo::isolate::EmptyRoot::for_bundle(
        bundle_dir,
        &version.bundle_dir_name(),
        &initdb,
    )
    .ok()
    .filter(|root| root.can_run_initdb(locale));
    let mut spawned = None;
    if let Some(root) = empty_root {
        let prepared = root
            .prepare_initdb(run_as, &dir.scratch)
            .map_err(|e| BootstrapError::Setup(e.to_string()))?;
        let mut cmd = command(&root.inside("bin/initdb"));
        cmd.args(args(Path::new("/data/pgdata")))
            .env("LD_LIBRARY_PATH", root.library_path())
            .env("LOCPATH", root.locale_path())
            .current_dir("/");
        // SAFETY: `enter` makes only system calls on `prepared`, allocated before the fork.
        unsafe {
            cmd.pre_exec(move || crate::walredo::isolate::enter(&prepared));
        }
        match cmd.spawn() {
            Ok(child) => {
                dir.in_empty_root = true;
                spawned = Some(child);
            }
            Err(e) => warn!(error = %e, "initdb runs on the host: entering the empty root failed"),
        }
    }
    let child = match spawned {
        Some(child) => child,
        None => {
            let mut cmd = command(&initdb);
            cmd.args(args(dir.pgdata()))
                .env("LD_LIBRARY_PATH", version_dir.join("lib"))
                // The unprivileged user may not be allowed into our working directory.
                .current_dir(&dir.scratch);
            cmd.spawn().map_err(io_err(&initdb))?
        }
    };
    let output = tokio::time::timeout(INITDB_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| BootstrapError::InitdbTimeout(INITDB_TIMEOUT))?
        .map_err(io_err(&initdb))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(20).collect();
        return Err(BootstrapError::Initdb {
            status: output.status.to_string(),
            stderr: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        });
    }
    info!(
        root = if dir.in_empty_root { "empty" } else { "host" },
        "initdb finished"
    );
    Ok(dir)
}

/// (uid, gid) of `name` when we are root; None otherwise.
fn unprivileged_user(name: &str) -> Result<Option<(u32, u32)>, BootstrapError> {
    if !nix::unistd::Uid::effective().is_root() {
        return Ok(None);
    }
    let user = nix::unistd::User::from_name(name)
        .map_err(|e| BootstrapError::Setup(format!("cannot look up user {name:?}: {e}")))?
        .ok_or_else(|| {
            BootstrapError::Setup(format!(
                "running as root, initdb needs an unprivileged user, and {name:?} does not exist"
            ))
        })?;
    if user.uid.is_root() {
        return Err(BootstrapError::Setup(format!("user {name:?} is root")));
    }
    Ok(Some((user.uid.as_raw(), user.gid.as_raw())))
}

/// `<tmp>/pageserver-initdb-<pid>-<n>`, mode 0700, owned by `owner`.
fn make_scratch_dir(owner: Option<(u32, u32)>) -> Result<InitdbDir, BootstrapError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let scratch = std::env::temp_dir().join(format!(
        "pageserver-initdb-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    // A leftover of an earlier process with the same pid.
    remove_scratch(&scratch);
    std::fs::create_dir(&scratch).map_err(io_err(&scratch))?;
    let dir = InitdbDir {
        pgdata: scratch.join("pgdata"),
        scratch,
        in_empty_root: false,
    };
    std::fs::set_permissions(&dir.scratch, std::fs::Permissions::from_mode(0o700))
        .map_err(io_err(&dir.scratch))?;
    if let Some((uid, gid)) = owner {
        nix::unistd::chown(
            &dir.scratch,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        )
        .map_err(|e| io_err(&dir.scratch)(e.into()))?;
    }
    Ok(dir)
}

/// Where the WAL of a fresh initdb cluster ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitdbLsn {
    /// Start of the last record, the shutdown checkpoint (pg_control's `checkPoint`).
    pub checkpoint_start: Lsn,
    /// Its end: the LSN to import at.
    pub end: Lsn,
    /// The PostgreSQL version of the cluster (its pg_control's).
    pub version: PgVersion,
}

/// Decodes the cluster's pg_wal to its last record, which must be a shutdown checkpoint that pg_control
/// names, with its redo point at itself.
pub fn find_initdb_lsn(pgdata: &Path) -> Result<InitdbLsn, BootstrapError> {
    let segments = collect_segments(&[pgdata.join("pg_wal")])?;
    let mut last = None;
    for_each_record(&segments, |rec| {
        last = Some((rec.lsn, rec.end_lsn, rec.rmid(), rec.rmgr_info()));
        Ok(())
    })?;
    let (start, end, rmid, info) =
        last.ok_or_else(|| BootstrapError::UnexpectedWal("no WAL records".into()))?;
    if rmid != RM_XLOG_ID || info != XLOG_CHECKPOINT_SHUTDOWN {
        return Err(BootstrapError::UnexpectedWal(format!(
            "the last record, at {start}, is not a shutdown checkpoint (rmgr {rmid}, info {info:#04x})"
        )));
    }
    let path = pgdata.join("global/pg_control");
    let bytes = std::fs::read(&path).map_err(io_err(&path))?;
    let control = parse_control_file(&bytes)
        .map_err(|source| BootstrapError::ControlFile { path, source })?;
    if control.checkpoint_lsn != start || control.checkpoint.redo != start {
        return Err(BootstrapError::UnexpectedWal(format!(
            "pg_control names the checkpoint at {} with redo at {}, but the last record starts at {start}",
            control.checkpoint_lsn, control.checkpoint.redo
        )));
    }
    Ok(InitdbLsn {
        checkpoint_start: start,
        end,
        version: control.version,
    })
}

/// A timeline made from an initdb directory.
#[derive(Debug)]
pub struct Bootstrapped {
    pub timeline: Arc<Timeline>,
    pub lsn: Lsn,
    pub stats: ImportStats,
}

/// Creates timeline `timeline_id` from the initdb cluster at `pgdata` (left in place): see the module doc.
pub async fn import_initdb_dir(
    tenant: &Tenant,
    timeline_id: TimelineId,
    pgdata: &Path,
) -> Result<Bootstrapped, BootstrapError> {
    let dir = pgdata.to_path_buf();
    let lsn = tokio::task::spawn_blocking(move || find_initdb_lsn(&dir))
        .await
        .map_err(|e| BootstrapError::Panicked(e.to_string()))??;
    let timeline = tenant
        .create_timeline_for_import(timeline_id, lsn.version)
        .await?;
    match fill(&timeline, pgdata, lsn).await {
        Ok(stats) => Ok(Bootstrapped {
            timeline,
            lsn: lsn.end,
            stats,
        }),
        Err(e) => {
            drop(timeline);
            if let Err(de) = tenant.delete_timeline(timeline_id).await {
                warn!(timeline = %timeline_id, error = %de, "cannot delete the timeline of a failed bootstrap");
            }
            Err(e)
        }
    }
}

async fn fill(
    timeline: &Arc<Timeline>,
    pgdata: &Path,
    lsn: InitdbLsn,
) -> Result<ImportStats, BootstrapError> {
    let stats = import_dir(timeline, pgdata, lsn.end, Some(lsn.checkpoint_start)).await?;
    if stats.control_checkpoint_lsn != lsn.checkpoint_start {
        return Err(BootstrapError::UnexpectedWal(format!(
            "pg_control changed during the import: checkpoint at {}, expected {}",
            stats.control_checkpoint_lsn, lsn.checkpoint_start
        )));
    }
    timeline.finish_import(lsn.end).await?;
    Ok(stats)
}
