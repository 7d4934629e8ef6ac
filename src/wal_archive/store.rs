//! Where a timeline's archive objects live: `<timeline prefix>wal/` in remote storage, or, on a node without
//! remote storage, the same keys below the tenant directory (`<tenant dir>/timelines/<tl>/wal/`).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::remote_storage::retry::{self, BACKGROUND, FOREGROUND, FOREGROUND_ATTEMPTS};
use crate::remote_storage::{
    ByteRange, GenericRemoteStorage, ListingMode, RemoteError, RemotePath,
};

/// One object of a listing: its name below `wal/`.
#[derive(Clone, Debug)]
pub struct StoredObject {
    pub name: String,
    pub size: u64,
    pub last_modified: Option<SystemTime>,
}

#[derive(Clone, Debug)]
pub struct ArchiveStore {
    storage: GenericRemoteStorage,
    /// Ends with `wal/`.
    prefix: String,
    /// In the workdir (a node without remote storage): the directory `storage` keeps its keys below (the
    /// tenant directory). None: `storage` is the node's remote storage.
    local_root: Option<PathBuf>,
}

impl ArchiveStore {
    /// The node's remote storage.
    pub fn remote(storage: GenericRemoteStorage, timeline_prefix: &str) -> ArchiveStore {
        ArchiveStore {
            storage,
            prefix: format!("{timeline_prefix}wal/"),
            local_root: None,
        }
    }

    /// The workdir, on a node without remote storage: the keys below `root` (the tenant directory).
    pub fn workdir(root: &Path, timeline_prefix: &str) -> Result<ArchiveStore, RemoteError> {
        Ok(ArchiveStore {
            storage: GenericRemoteStorage::local(root)?,
            prefix: format!("{timeline_prefix}wal/"),
            local_root: Some(root.to_path_buf()),
        })
    }

    /// Whether the store is the node's remote storage; otherwise it is the workdir, where
    /// [`link_file`](Self::link_file) stores a spool file.
    pub fn is_remote(&self) -> bool {
        self.local_root.is_none()
    }

    /// In the workdir: stores `file` (complete, fsynced, never written again) as `name` by a hard link under a
    /// temporary name renamed into place. No copy and no second hash; `file` stays until the caller removes
    /// it, so a crash at any point leaves it to be stored again.
    pub async fn link_file(&self, name: &str, file: &Path) -> std::io::Result<()> {
        let Some(root) = &self.local_root else {
            return Err(std::io::Error::other(
                "the WAL archive's store is not local",
            ));
        };
        let target = root.join(format!("{}{name}", self.prefix));
        let temp = root
            .join(crate::remote_storage::local::TEMP_DIR)
            .join(format!("{:016x}", rand::random::<u64>()));
        let file = file.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let dir = target.parent().unwrap_or(Path::new("/")).to_path_buf();
            std::fs::create_dir_all(&dir)?;
            match std::fs::hard_link(&file, &temp) {
                Ok(()) => {}
                // A workdir whose timeline directories are mounted apart: copy (and fsync) instead.
                Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => {
                    let copied = std::fs::copy(&file, &temp)
                        .and_then(|_| std::fs::File::open(&temp)?.sync_all());
                    if let Err(e) = copied {
                        let _ = std::fs::remove_file(&temp);
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
            if let Err(e) = std::fs::rename(&temp, &target) {
                let _ = std::fs::remove_file(&temp);
                return Err(e);
            }
            crate::durable::fsync_dir(&dir)
        })
        .await
        .map_err(std::io::Error::other)?
    }

    fn path(&self, name: &str) -> Result<RemotePath, RemoteError> {
        RemotePath::new(format!("{}{name}", self.prefix))
    }

    /// Where `name` lives, for messages.
    pub fn describe(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Every object of the archive, retried as a foreground request.
    pub async fn list(&self) -> Result<Vec<StoredObject>, RemoteError> {
        let listing = foreground("list WAL archive", || {
            self.storage
                .list(Some(&self.prefix), ListingMode::NoDelimiter)
        })
        .await?;
        Ok(listing
            .keys
            .into_iter()
            .filter_map(|o| {
                let name = o.key.as_str().strip_prefix(&self.prefix)?.to_string();
                (!name.contains('/')).then_some(StoredObject {
                    name,
                    size: o.size,
                    last_modified: o.last_modified,
                })
            })
            .collect())
    }

    /// The whole object, retried as a foreground request.
    pub async fn get(&self, name: &str) -> Result<Bytes, RemoteError> {
        let path = self.path(name)?;
        foreground("download from WAL archive", || {
            self.storage.download_bytes(&path, ByteRange::ALL)
        })
        .await
    }

    /// Uploads, retrying transient errors until `cancel`.
    pub async fn put(
        &self,
        name: &str,
        data: Bytes,
        cancel: &CancellationToken,
        on_error: impl FnMut(&RemoteError),
    ) -> Result<(), RemoteError> {
        let path = self.path(name)?;
        retry::retry(
            "upload to WAL archive",
            BACKGROUND,
            None,
            cancel,
            on_error,
            || self.storage.upload_bytes(data.clone(), &path),
        )
        .await
    }

    /// Deletes the objects (missing ones are no error), retrying transient errors until `cancel`.
    pub async fn delete(
        &self,
        names: &[String],
        cancel: &CancellationToken,
    ) -> Result<(), RemoteError> {
        let paths = names
            .iter()
            .map(|n| self.path(n))
            .collect::<Result<Vec<_>, _>>()?;
        retry::retry(
            "delete from WAL archive",
            BACKGROUND,
            None,
            cancel,
            |_| {},
            || self.storage.delete_objects(&paths),
        )
        .await
    }
}

async fn foreground<T, Fut>(what: &str, f: impl FnMut() -> Fut) -> Result<T, RemoteError>
where
    Fut: Future<Output = Result<T, RemoteError>>,
{
    let never = CancellationToken::new();
    retry::retry(
        what,
        FOREGROUND,
        Some(FOREGROUND_ATTEMPTS),
        &never,
        |_| {},
        f,
    )
    .await
}
