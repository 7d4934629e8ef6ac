//! The workdir: one pageserver at a time owns it, shown by an exclusive lock on `<workdir>/pageserver.pid`.
//!
//! The lock is an advisory `flock` held for the life of the process, so a crash (even `kill -9`) releases it;
//! the file's content, the holder's pid, only serves the error message of a second pageserver.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub const LOCK_FILE_NAME: &str = "pageserver.pid";

#[derive(Debug, thiserror::Error)]
pub enum WorkdirError {
    #[error("workdir {workdir} is in use by another pageserver (pid {pid})")]
    Locked { workdir: PathBuf, pid: String },
    #[error("cannot lock workdir {workdir}: {source}")]
    Io {
        workdir: PathBuf,
        source: std::io::Error,
    },
}

/// Holds the workdir lock until dropped.
#[derive(Debug)]
pub struct WorkdirLock {
    _file: File,
    path: PathBuf,
}

impl WorkdirLock {
    /// Creates `workdir` if needed and locks it, or says which process holds it.
    pub fn acquire(workdir: &Path) -> Result<WorkdirLock, WorkdirError> {
        let io_err = |source| WorkdirError::Io {
            workdir: workdir.to_path_buf(),
            source,
        };
        fs::create_dir_all(workdir).map_err(io_err)?;
        let path = workdir.join(LOCK_FILE_NAME);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                return Err(WorkdirError::Locked {
                    workdir: workdir.to_path_buf(),
                    pid: if pid.is_empty() {
                        "unknown".into()
                    } else {
                        pid.to_string()
                    },
                });
            }
            Err(TryLockError::Error(e)) => return Err(io_err(e)),
        }
        file.set_len(0)
            .and_then(|_| file.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(file, "{}", std::process::id()))
            .and_then(|_| file.sync_all())
            .map_err(io_err)?;
        Ok(WorkdirLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_with_the_pid() {
        let dir = std::env::temp_dir().join(format!("pageserver-lock-test-{}", std::process::id()));
        let first = WorkdirLock::acquire(&dir).unwrap();
        let err = WorkdirLock::acquire(&dir).unwrap_err();
        match err {
            WorkdirError::Locked { pid, .. } => assert_eq!(pid, std::process::id().to_string()),
            other => panic!("unexpected error {other}"),
        }
        drop(first);
        WorkdirLock::acquire(&dir).unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }
}
