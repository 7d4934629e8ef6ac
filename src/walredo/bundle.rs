//! The bundle's manifest, `<bundle>/manifest.json`, written by `walredo-bundle/build.sh`: the sha256 of every
//! file, the target of every symbolic link, and what the bundle was built from (docs/walredo.md). The
//! pageserver checks the bundle against it at start and refuses one that differs, naming the file: a changed
//! byte, a missing file, a file or link the build did not make.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

pub const MANIFEST: &str = "manifest.json";
/// The build's own stamp beside the manifest (its cache key); not part of the bundle's contents.
const STAMP: &str = ".complete";
pub const MANIFEST_FORMAT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error(
        "{}: the walredo bundle has no {MANIFEST} (build it with walredo-bundle/build.sh)",
        .0.display()
    )]
    NoManifest(PathBuf),
    #[error("{}: {msg}", path.display())]
    Malformed { path: PathBuf, msg: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "walredo bundle {}: {file} differs from the manifest (sha256 {got}, the manifest records {expected})",
        bundle.display()
    )]
    Differs {
        bundle: PathBuf,
        file: String,
        expected: String,
        got: String,
    },
    #[error("walredo bundle {}: {file} is in the manifest but missing", bundle.display())]
    Missing { bundle: PathBuf, file: String },
    #[error("walredo bundle {}: {file} is not in the manifest", bundle.display())]
    Extra { bundle: PathBuf, file: String },
    #[error(
        "walredo bundle {}: {file} links to {got:?}, the manifest records {expected:?}",
        bundle.display()
    )]
    LinkDiffers {
        bundle: PathBuf,
        file: String,
        expected: String,
        got: String,
    },
}

#[derive(Debug, Deserialize)]
struct Manifest {
    format_version: u32,
    /// Path below the bundle -> sha256 (64 lowercase hex digits).
    files: BTreeMap<String, String>,
    /// Path below the bundle -> the link's target.
    #[serde(default)]
    symlinks: BTreeMap<String, String>,
}

/// What a verified bundle holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub files: usize,
    pub bytes: u64,
}

/// Checks every file and link under `dir` against its manifest: same set of paths, same sha256, same link
/// targets. The first difference (in path order) is the error.
pub fn verify(dir: &Path) -> Result<Verified, BundleError> {
    let path = dir.join(MANIFEST);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(BundleError::NoManifest(dir.to_path_buf()));
        }
        Err(source) => return Err(BundleError::Io { path, source }),
    };
    let manifest: Manifest = serde_json::from_slice(&text).map_err(|e| BundleError::Malformed {
        path: path.clone(),
        msg: e.to_string(),
    })?;
    if manifest.format_version != MANIFEST_FORMAT_VERSION {
        return Err(BundleError::Malformed {
            path,
            msg: format!("unsupported format_version {}", manifest.format_version),
        });
    }
    let mut found: BTreeMap<String, Entry> = BTreeMap::new();
    walk(dir, dir, &mut found)?;
    let bundle = dir.to_path_buf();
    for file in manifest.files.keys().chain(manifest.symlinks.keys()) {
        if !found.contains_key(file) {
            return Err(BundleError::Missing {
                bundle,
                file: file.clone(),
            });
        }
    }
    let mut verified = Verified { files: 0, bytes: 0 };
    for (file, entry) in found {
        match entry {
            Entry::File(p) => {
                let Some(expected) = manifest.files.get(&file) else {
                    return Err(BundleError::Extra { bundle, file });
                };
                let (got, bytes) = sha256_of(&p)?;
                if got != *expected {
                    return Err(BundleError::Differs {
                        bundle,
                        file,
                        expected: expected.clone(),
                        got,
                    });
                }
                verified.files += 1;
                verified.bytes += bytes;
            }
            Entry::Link(target) => {
                let Some(expected) = manifest.symlinks.get(&file) else {
                    return Err(BundleError::Extra { bundle, file });
                };
                if target != *expected {
                    return Err(BundleError::LinkDiffers {
                        bundle,
                        file,
                        expected: expected.clone(),
                        got: target,
                    });
                }
            }
        }
    }
    Ok(verified)
}

enum Entry {
    File(PathBuf),
    Link(String),
}

/// Every file and link below `dir` by its path relative to `root` (`/`-separated), but the manifest and
/// the build stamp at the top.
fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Entry>) -> Result<(), BundleError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BundleError::Io { path, source }
    };
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        let rel = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .to_string_lossy()
            .into_owned();
        if dir == root && (rel == MANIFEST || rel == STAMP) {
            continue;
        }
        let kind = entry.file_type().map_err(io(&path))?;
        if kind.is_symlink() {
            let target = std::fs::read_link(&path).map_err(io(&path))?;
            out.insert(rel, Entry::Link(target.to_string_lossy().into_owned()));
        } else if kind.is_dir() {
            walk(root, &path, out)?;
        } else {
            out.insert(rel, Entry::File(path));
        }
    }
    Ok(())
}

fn sha256_of(path: &Path) -> Result<(String, u64), BundleError> {
    let io = |source| BundleError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    let hex: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((hex, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let v = dir.path().join("v15");
        std::fs::create_dir_all(v.join("bin")).unwrap();
        std::fs::create_dir_all(v.join("lib")).unwrap();
        std::fs::write(v.join("bin/postgres"), b"elf").unwrap();
        std::fs::write(v.join("lib/libpq.so.5.15"), b"lib").unwrap();
        std::os::unix::fs::symlink("libpq.so.5.15", v.join("lib/libpq.so.5")).unwrap();
        std::fs::write(dir.path().join(STAMP), b"key").unwrap();
        let sha = |b: &[u8]| -> String {
            Sha256::digest(b)
                .iter()
                .map(|x| format!("{x:02x}"))
                .collect()
        };
        let manifest = serde_json::json!({
            "format_version": 1,
            "versions": {"15": {"postgresql": "15.18"}},
            "files": {"v15/bin/postgres": sha(b"elf"), "v15/lib/libpq.so.5.15": sha(b"lib")},
            "symlinks": {"v15/lib/libpq.so.5": "libpq.so.5.15"},
        });
        std::fs::write(dir.path().join(MANIFEST), manifest.to_string()).unwrap();
        dir
    }

    #[test]
    fn a_bundle_as_built_verifies() {
        let b = bundle();
        assert_eq!(verify(b.path()).unwrap(), Verified { files: 2, bytes: 6 });
    }

    #[test]
    fn every_difference_is_named() {
        let b = bundle();
        std::fs::write(b.path().join("v15/bin/postgres"), b"elg").unwrap();
        let e = verify(b.path()).unwrap_err().to_string();
        assert!(
            e.contains("v15/bin/postgres differs from the manifest"),
            "{e}"
        );

        let b = bundle();
        std::fs::write(b.path().join("v15/lib/extra.so"), b"x").unwrap();
        let e = verify(b.path()).unwrap_err().to_string();
        assert!(e.contains("v15/lib/extra.so is not in the manifest"), "{e}");

        let b = bundle();
        std::fs::remove_file(b.path().join("v15/lib/libpq.so.5.15")).unwrap();
        let e = verify(b.path()).unwrap_err().to_string();
        assert!(
            e.contains("v15/lib/libpq.so.5.15 is in the manifest but missing"),
            "{e}"
        );

        let b = bundle();
        let link = b.path().join("v15/lib/libpq.so.5");
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink("/usr/lib/libpq.so.5", &link).unwrap();
        let e = verify(b.path()).unwrap_err().to_string();
        assert!(
            e.contains("v15/lib/libpq.so.5 links to \"/usr/lib/libpq.so.5\""),
            "{e}"
        );

        let b = bundle();
        std::fs::remove_file(b.path().join(MANIFEST)).unwrap();
        assert!(matches!(verify(b.path()), Err(BundleError::NoManifest(_))));

        let b = bundle();
        std::fs::write(
            b.path().join(MANIFEST),
            b"{\"format_version\": 2, \"files\": {}}",
        )
        .unwrap();
        let e = verify(b.path()).unwrap_err().to_string();
        assert!(e.contains("unsupported format_version 2"), "{e}");
    }
}
