//! Durable small files: the one atomic write of the workdir's JSON files (tenant.json, wal_sources.json,
//! timeline metadata). A file is written to `<name>.tmp` with its final mode, fsynced, renamed over `<name>`
//! and its directory fsynced: after a crash at any moment the file is either the old or the new one, never a
//! mix, and a leftover `<name>.tmp` is ignored and removed by the next load.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of files that hold secrets (WAL source passwords): owner only.
pub const SECRET_MODE: u32 = 0o600;
/// Mode of every other file the pageserver writes.
pub const PLAIN_MODE: u32 = 0o644;

/// Replaces `<dir>/<name>` with `body` atomically, the file getting `mode`. The fail point
/// `<name>-before-rename` fires between the fsync of the temp file and the rename.
pub fn write_atomic(dir: &Path, name: &str, body: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    // The umask may have narrowed the mode at creation; a secret file must never be wider than asked.
    f.set_permissions(fs::Permissions::from_mode(mode))?;
    f.write_all(body)?;
    f.sync_all()?;
    drop(f);
    crate::failpoint::hit(&format!("{name}-before-rename"));
    fs::rename(&tmp, dir.join(name))?;
    fsync_dir(dir)
}

/// fsync of a directory, so that renames and creations in it are durable.
pub fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// A file that holds a secret (a password, a private key) and that its group or others may access: its mode,
/// for an error that tells the operator to `chmod 600` it. Such a file is refused, never silently narrowed:
/// someone may already have read it, and the operator has to know.
pub fn secret_file_too_open(path: &Path) -> std::io::Result<Option<u32>> {
    let mode = fs::metadata(path)?.permissions().mode() & 0o7777;
    Ok((mode & 0o077 != 0).then_some(mode))
}

/// An error text that carries ENOSPC ("No space left on device") or EDQUOT ("Disk quota exceeded"). Errors
/// reach the WAL receiver and the background tasks as text; the `(os error N)` suffix that `std::io::Error`
/// always prints survives every wrapping.
pub fn mentions_disk_full(text: &str) -> bool {
    [nix::errno::Errno::ENOSPC, nix::errno::Errno::EDQUOT]
        .iter()
        .any(|e| text.contains(&format!("(os error {})", *e as i32)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_sets_the_mode_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        write_atomic(dir.path(), "f.json", b"one", SECRET_MODE).unwrap();
        write_atomic(dir.path(), "f.json", b"two", SECRET_MODE).unwrap();
        let path = dir.path().join("f.json");
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!dir.path().join("f.json.tmp").exists());
        assert_eq!(secret_file_too_open(&path).unwrap(), None);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(secret_file_too_open(&path).unwrap(), Some(0o644));
    }

    #[test]
    fn disk_full_in_error_texts() {
        let enospc = std::io::Error::from_raw_os_error(nix::errno::Errno::ENOSPC as i32);
        assert!(super::mentions_disk_full(&format!(
            "ingest: ephemeral file x: {enospc}"
        )));
        let edquot = std::io::Error::from_raw_os_error(nix::errno::Errno::EDQUOT as i32);
        assert!(super::mentions_disk_full(&edquot.to_string()));
        let eio = std::io::Error::from_raw_os_error(nix::errno::Errno::EIO as i32);
        assert!(!super::mentions_disk_full(&eio.to_string()));
        assert!(!super::mentions_disk_full("(os error 280)"));
    }
}
