//! A local directory as remote storage (tests, single machines, a mounted network file system): the object
//! `k` is the file `<local_path>/k`. An upload writes `<local_path>/.___temp/<random>`, fsyncs it, renames it
//! over the key and fsyncs the directory, so an object is whole or absent, as in S3. Deleting the last object of
//! a directory removes the emptied directories up to the root, so listings never show empty prefixes.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::StreamExt;

use super::{
    Backend, ByteRange, ByteStream, ListingMode, RawListing, RawObject, RemoteError, page_sorted,
};

/// Concurrent requests (the disk, not a server, is the limit).
pub const CONCURRENCY_LIMIT: usize = 100;
/// Temp files of uploads in progress; never listed.
pub(crate) const TEMP_DIR: &str = ".___temp";
const READ_CHUNK: usize = 1 << 20;

pub struct LocalFs {
    root: PathBuf,
}

fn io_error(what: &str, path: &Path, e: io::Error) -> RemoteError {
    let msg = format!("{what} {}: {e}", path.display());
    match e.kind() {
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
            RemoteError::Permanent(msg)
        }
        _ => RemoteError::Transient(msg),
    }
}

impl LocalFs {
    pub fn new(root: &Path) -> Result<LocalFs, RemoteError> {
        fs::create_dir_all(root.join(TEMP_DIR)).map_err(|e| io_error("cannot create", root, e))?;
        Ok(LocalFs {
            root: root.to_path_buf(),
        })
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    /// Every object below the directory part of `prefix`, sorted by key.
    fn walk(&self, prefix: &str) -> Result<Vec<RawObject>, RemoteError> {
        let dir_part = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        let mut out = Vec::new();
        let start = self.root.join(dir_part);
        let mut stack = vec![(start, dir_part.to_string())];
        while let Some((dir, rel)) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) if e.kind() == io::ErrorKind::NotADirectory => continue,
                Err(e) => return Err(io_error("cannot list", &dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| io_error("cannot list", &dir, e))?;
                let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                if rel.is_empty() && name == TEMP_DIR {
                    continue;
                }
                let key = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                let meta = entry
                    .metadata()
                    .map_err(|e| io_error("cannot stat", &entry.path(), e))?;
                if meta.is_dir() {
                    stack.push((entry.path(), key));
                } else if key.starts_with(prefix) {
                    out.push(RawObject {
                        key,
                        size: meta.len(),
                        last_modified: meta.modified().ok(),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn remove_empty_parents(&self, path: &Path) {
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d == self.root || !d.starts_with(&self.root) {
                break;
            }
            // Fails (and stops) at the first directory that still holds something.
            if fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, RemoteError> + Send + 'static,
) -> Result<T, RemoteError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RemoteError::Transient(format!("blocking task failed: {e}")))?
}

impl Backend for LocalFs {
    async fn list_page(
        &self,
        prefix: &str,
        mode: ListingMode,
        max_keys: NonZeroU32,
        continuation: Option<String>,
    ) -> Result<(RawListing, Option<String>), RemoteError> {
        let me = LocalFs {
            root: self.root.clone(),
        };
        let prefix = prefix.to_string();
        blocking(move || {
            let all = me.walk(&prefix)?;
            Ok(page_sorted(
                &all,
                &prefix,
                mode,
                max_keys,
                continuation.as_deref(),
            ))
        })
        .await
    }

    async fn upload(&self, mut body: ByteStream, len: u64, key: &str) -> Result<(), RemoteError> {
        let target = self.path(key);
        let temp = self
            .root
            .join(TEMP_DIR)
            .join(format!("{:016x}", rand::random::<u64>()));
        let mut file = tokio::fs::File::create(&temp)
            .await
            .map_err(|e| io_error("cannot create", &temp, e))?;
        let mut seen = 0u64;
        let result: Result<(), RemoteError> = async {
            use tokio::io::AsyncWriteExt;
            while let Some(chunk) = body.next().await {
                let chunk =
                    chunk.map_err(|e| RemoteError::BadInput(format!("reading the upload: {e}")))?;
                seen += chunk.len() as u64;
                if seen > len {
                    break;
                }
                file.write_all(&chunk)
                    .await
                    .map_err(|e| io_error("cannot write", &temp, e))?;
            }
            if seen != len {
                return Err(RemoteError::BadInput(format!(
                    "the upload body has {seen}{} bytes, not the {len} given",
                    if seen > len { "+" } else { "" }
                )));
            }
            file.sync_all()
                .await
                .map_err(|e| io_error("cannot fsync", &temp, e))?;
            Ok(())
        }
        .await;
        drop(file);
        if let Err(e) = result {
            let _ = fs::remove_file(&temp);
            return Err(e);
        }
        blocking(move || {
            let dir = target.parent().unwrap_or(Path::new("/")).to_path_buf();
            fs::create_dir_all(&dir).map_err(|e| io_error("cannot create", &dir, e))?;
            if let Err(e) = fs::rename(&temp, &target) {
                let _ = fs::remove_file(&temp);
                return Err(io_error("cannot rename to", &target, e));
            }
            crate::durable::fsync_dir(&dir).map_err(|e| io_error("cannot fsync", &dir, e))
        })
        .await
    }

    async fn download(&self, key: &str, range: ByteRange) -> Result<ByteStream, RemoteError> {
        let path = self.path(key);
        let key = key.to_string();
        let (file, remaining) = blocking(move || {
            let mut file = match fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(RemoteError::NotFound(super::RemotePath(key)));
                }
                Err(e) => return Err(io_error("cannot open", &path, e)),
            };
            let size = file
                .metadata()
                .map_err(|e| io_error("cannot stat", &path, e))?
                .len();
            if range.start > size || (range.start == size && size > 0 && !range.is_all()) {
                return Err(RemoteError::BadInput(format!(
                    "range starts at {} but {key} has {size} bytes",
                    range.start
                )));
            }
            file.seek(SeekFrom::Start(range.start))
                .map_err(|e| io_error("cannot seek", &path, e))?;
            let end = range.end.unwrap_or(size).min(size);
            Ok((file, end - range.start))
        })
        .await?;
        // Read in chunks on the blocking pool, one chunk per poll of the consumer.
        let stream =
            futures::stream::unfold((Some(file), remaining), |(file, remaining)| async move {
                let mut file = file?;
                if remaining == 0 {
                    return None;
                }
                let want = remaining.min(READ_CHUNK as u64) as usize;
                let r = tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0u8; want];
                    file.read_exact(&mut buf).map(|()| (file, buf))
                })
                .await
                .unwrap_or_else(|e| Err(io::Error::other(e)));
                Some(match r {
                    Ok((file, buf)) => {
                        (Ok(Bytes::from(buf)), (Some(file), remaining - want as u64))
                    }
                    Err(e) => (Err(e), (None, 0)),
                })
            });
        Ok(Box::pin(stream))
    }

    async fn head(&self, key: &str) -> Result<RawObject, RemoteError> {
        let path = self.path(key);
        let key = key.to_string();
        blocking(move || match fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(RawObject {
                key,
                size: m.len(),
                last_modified: m.modified().ok(),
            }),
            Ok(_) => Err(RemoteError::NotFound(super::RemotePath(key))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(RemoteError::NotFound(super::RemotePath(key)))
            }
            Err(e) => Err(io_error("cannot stat", &path, e)),
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), RemoteError> {
        self.delete_objects(&[key.to_string()]).await
    }

    async fn delete_objects(&self, keys: &[String]) -> Result<(), RemoteError> {
        let paths: Vec<PathBuf> = keys.iter().map(|k| self.path(k)).collect();
        let me = LocalFs {
            root: self.root.clone(),
        };
        blocking(move || {
            for path in paths {
                match fs::remove_file(&path) {
                    Ok(()) => {
                        let dir = path.parent().unwrap_or(Path::new("/"));
                        crate::durable::fsync_dir(dir)
                            .map_err(|e| io_error("cannot fsync", dir, e))?;
                        me.remove_empty_parents(&path);
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_error("cannot delete", &path, e)),
                }
            }
            Ok(())
        })
        .await
    }

    fn max_keys_per_delete(&self) -> usize {
        1000
    }
}
