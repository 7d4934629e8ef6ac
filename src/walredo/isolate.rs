//! The redo child's empty root (docs/walredo.md §4): before it executes `postgres`, the forked child enters
//! new user, mount and network namespaces, mounts a small tmpfs as its new root holding only the bundle's
//! version directory (read-only, at the prefix the bundle was built for) and a link for the ELF loader, and
//! drops the old root. What the child can reach is then the bundle and nothing else, even before its
//! seccomp filter is installed; and what it runs on is the bundle's own copy of the libraries
//! (`v<N>/lib/system`: glibc, its loader, zlib, lz4, zstd), not the host's.
//!
//! The steps run between fork and exec, so they only make system calls on memory prepared before the fork
//! ([`Prepared`]): no allocation, no locks.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Where the bundle's files are inside the empty root: the `--prefix` that `walredo-bundle/build.sh`
/// compiles into the binaries (their RUNPATH and share dir point below it).
pub const PREFIX: &str = "/pageserver-walredo-bundle";
/// The empty directory of the bundle that the tmpfs is mounted on (it becomes the child's `/`).
pub const MOUNT_POINT: &str = "sandbox-root";
/// The bundle's copies of the host libraries, below `v<N>/lib`.
pub const SYSTEM_LIBS: &str = "system";

#[derive(Debug, thiserror::Error)]
pub enum IsolateError {
    #[error("{}: {msg}", path.display())]
    Bundle { path: PathBuf, msg: String },
}

/// What an isolated launch needs, found in the bundle.
#[derive(Debug, Clone)]
pub struct EmptyRoot {
    /// `<bundle>/sandbox-root`.
    mount_point: PathBuf,
    /// `<bundle>/v15`.
    version_dir: PathBuf,
    /// `v15`.
    version: String,
    /// The loader the binaries ask for (their PT_INTERP), e.g. `/lib64/ld-linux-x86-64.so.2`.
    interpreter: PathBuf,
}

impl EmptyRoot {
    /// Checks that the bundle carries what the empty root needs: the mount point, the system libraries,
    /// the loader of `binary` among them.
    pub fn for_bundle(
        bundle: &Path,
        version: &str,
        binary: &Path,
    ) -> Result<EmptyRoot, IsolateError> {
        let err = |path: &Path, msg: &str| IsolateError::Bundle {
            path: path.to_path_buf(),
            msg: msg.to_string(),
        };
        let mount_point = bundle.join(MOUNT_POINT);
        if !mount_point.is_dir() {
            return Err(err(
                &mount_point,
                "missing (a bundle built before the empty root)",
            ));
        }
        let version_dir = bundle.join(version);
        let interpreter = elf_interpreter(binary).map_err(|msg| err(binary, &msg))?;
        let name = interpreter
            .file_name()
            .ok_or_else(|| err(binary, "its ELF interpreter has no file name"))?;
        let loader = version_dir.join("lib").join(SYSTEM_LIBS).join(name);
        if !loader.is_file() {
            return Err(err(
                &loader,
                "missing: the bundle does not carry the loader its programs need",
            ));
        }
        Ok(EmptyRoot {
            mount_point,
            version_dir,
            version: version.to_string(),
            interpreter,
        })
    }

    /// The path of `<version>/<rel>` as the child sees it.
    pub fn inside(&self, rel: &str) -> PathBuf {
        Path::new(PREFIX).join(&self.version).join(rel)
    }

    /// The library path inside: the system libraries first, then the bundle's own.
    pub fn library_path(&self) -> String {
        format!(
            "{p}/{v}/lib/{SYSTEM_LIBS}:{p}/{v}/lib",
            p = PREFIX,
            v = self.version
        )
    }

    /// Everything [`enter`] needs, as C strings, for a child running as `run_as` (uid, gid), or as we do.
    pub fn prepare(&self, run_as: Option<(u32, u32)>) -> Result<Prepared, IsolateError> {
        let (uid, gid) = ids(run_as);
        let root = &self.mount_point;
        let in_root = |inner: &Path| root.join(inner.strip_prefix("/").unwrap_or(inner));
        let prefix_dir = in_root(Path::new(PREFIX));
        let version_mount = prefix_dir.join(&self.version);
        let interp_link = in_root(&self.interpreter);
        let interp_dir = interp_link
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| root.clone());
        let interp_target = self.inside(&format!(
            "lib/{SYSTEM_LIBS}/{}",
            self.interpreter
                .file_name()
                .unwrap_or(OsStr::new(""))
                .to_string_lossy()
        ));
        Ok(Prepared {
            uid_map: CString::new(format!("{uid} {uid} 1")).expect("no NUL"),
            gid_map: CString::new(format!("{gid} {gid} 1")).expect("no NUL"),
            root: c(root)?,
            prefix_dir: c(&prefix_dir)?,
            version_mount: c(&version_mount)?,
            version_dir: c(&self.version_dir)?,
            interp_dir: c(&interp_dir)?,
            interp_link: c(&interp_link)?,
            interp_target: c(&interp_target)?,
            put_old: c(&root.join("old"))?,
            initdb: None,
        })
    }

    /// The bundle's shell, for initdb's `popen`.
    fn shell(&self) -> PathBuf {
        self.version_dir.join("lib").join(SYSTEM_LIBS).join("sh")
    }

    /// Whether initdb can run in the empty root with `locale`: the bundle carries a shell, and the locale
    /// is C or POSIX or one whose data the bundle carries (`lib/system/locale`, C.UTF-8 as built).
    pub fn can_run_initdb(&self, locale: &str) -> bool {
        if !self.shell().is_file() {
            return false;
        }
        let dir = self
            .version_dir
            .join("lib")
            .join(SYSTEM_LIBS)
            .join("locale");
        match locale {
            "C" | "POSIX" => true,
            l => dir.join(l).is_dir() || dir.join(normalized_locale(l)).is_dir(),
        }
    }

    /// The locale directory inside (glibc's LOCPATH).
    pub fn locale_path(&self) -> String {
        format!("{PREFIX}/{}/lib/{SYSTEM_LIBS}/locale", self.version)
    }

    /// [`prepare`](Self::prepare) for initdb, with the host's `data_dir` (owned by the user it runs as)
    /// at `/data`.
    pub fn prepare_initdb(
        &self,
        run_as: Option<(u32, u32)>,
        data_dir: &Path,
    ) -> Result<Prepared, IsolateError> {
        let mut prepared = self.prepare(run_as)?;
        let (uid, gid) = ids(run_as);
        let text = |t: String| CString::new(t).expect("no NUL");
        let root = &self.mount_point;
        prepared.initdb = Some(InitdbExtras {
            bin_dir: c(&root.join("bin"))?,
            sh_link: c(&root.join("bin/sh"))?,
            sh_target: c(&self.inside(&format!("lib/{SYSTEM_LIBS}/sh")))?,
            dev_dir: c(&root.join("dev"))?,
            devices: [
                (c"/dev/null", c(&root.join("dev/null"))?),
                (c"/dev/urandom", c(&root.join("dev/urandom"))?),
            ],
            etc_dir: c(&root.join("etc"))?,
            files: [
                (
                    c(&root.join("etc/passwd"))?,
                    text(format!("initdb:x:{uid}:{gid}::/data:/bin/sh\n")),
                ),
                (
                    c(&root.join("etc/group"))?,
                    text(format!("initdb:x:{gid}:\n")),
                ),
                (
                    c(&root.join("etc/nsswitch.conf"))?,
                    text("passwd: files\ngroup: files\n".into()),
                ),
            ],
            data_mount: c(&root.join("data"))?,
            data_dir: c(data_dir)?,
        });
        Ok(prepared)
    }
}

/// glibc's normalized form of a locale name: the codeset in lower case without punctuation
/// (`C.UTF-8` -> `C.utf8`), as it looks for the locale's directory.
fn normalized_locale(locale: &str) -> String {
    match locale.split_once('.') {
        Some((lang, rest)) => {
            let (codeset, modifier) = rest
                .split_once('@')
                .map_or((rest, None), |(c, m)| (c, Some(m)));
            let codeset: String = codeset
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .map(|c| c.to_ascii_lowercase())
                .collect();
            match modifier {
                Some(m) => format!("{lang}.{codeset}@{m}"),
                None => format!("{lang}.{codeset}"),
            }
        }
        None => locale.to_string(),
    }
}

/// The C strings of [`enter`], made before the fork.
#[derive(Debug)]
pub struct Prepared {
    uid_map: CString,
    gid_map: CString,
    root: CString,
    prefix_dir: CString,
    version_mount: CString,
    version_dir: CString,
    interp_dir: CString,
    interp_link: CString,
    interp_target: CString,
    put_old: CString,
    /// What initdb needs beyond the redo child's root, if this is initdb's.
    initdb: Option<InitdbExtras>,
}

/// initdb runs `/bin/sh` (popen, system), writes `/dev/null`, reads `/dev/urandom` (PostgreSQL's strong
/// random without OpenSSL), looks up its user, and writes its cluster: `/bin/sh` (the bundle's shell),
/// `/dev/null` and `/dev/urandom` (the host's, bind-mounted), `/etc/passwd`, `/etc/group` and
/// `/etc/nsswitch.conf` of one line each, and the host's scratch directory at `/data`.
#[derive(Debug)]
struct InitdbExtras {
    bin_dir: CString,
    sh_link: CString,
    sh_target: CString,
    dev_dir: CString,
    /// (host device, its file in the root): /dev/null and /dev/urandom.
    devices: [(&'static std::ffi::CStr, CString); 2],
    etc_dir: CString,
    files: [(CString, CString); 3],
    data_mount: CString,
    data_dir: CString,
}

/// `run_as`, or our own effective uid and gid.
fn ids(run_as: Option<(u32, u32)>) -> (u32, u32) {
    run_as.unwrap_or((
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    ))
}

/// A path as a C string for the steps after the fork.
fn c(p: &Path) -> Result<CString, IsolateError> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| IsolateError::Bundle {
        path: p.to_path_buf(),
        msg: "contains a NUL byte".into(),
    })
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Writes `data` to `path` opened with `flags` (and O_WRONLY, O_CLOEXEC; mode 0644 if created), in one write.
fn write_file(path: &std::ffi::CStr, flags: libc::c_int, data: &std::ffi::CStr) -> io::Result<()> {
    // SAFETY: both are NUL-terminated and live across the calls.
    unsafe {
        let fd = libc::open(
            path.as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC | flags,
            0o644,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let bytes = data.to_bytes();
        let n = libc::write(fd, bytes.as_ptr().cast(), bytes.len());
        let err = io::Error::last_os_error();
        libc::close(fd);
        if n != bytes.len() as isize {
            return Err(err);
        }
    }
    Ok(())
}

/// Bind-mounts `source` on `target`.
fn bind(source: &std::ffi::CStr, target: &std::ffi::CStr) -> io::Result<()> {
    // SAFETY: NUL-terminated paths; no data argument.
    check(unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    })
}

fn make_dir(dir: &std::ffi::CStr) -> io::Result<()> {
    // SAFETY: a NUL-terminated path.
    let r = unsafe { libc::mkdir(dir.as_ptr(), 0o755) };
    if r != 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST) {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Enters the namespaces and the empty root. Runs in the forked child before exec, after it took its
/// final uid and gid; only system calls, on memory of `p`.
///
/// # Safety
/// Call only in a forked child before exec (it changes the process's namespaces and root).
pub unsafe fn enter(p: &Prepared) -> io::Result<()> {
    let none = std::ptr::null::<libc::c_char>();
    // SAFETY: plain system calls on NUL-terminated strings that outlive them.
    unsafe {
        check(libc::unshare(
            libc::CLONE_NEWUSER | libc::CLONE_NEWNS | libc::CLONE_NEWNET,
        ))?;
        // A changed uid left the process non-dumpable, and its /proc files root's: make them ours again to
        // write the maps (exec resets the flag by its own rules).
        check(libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0))?;
        write_file(c"/proc/self/setgroups", 0, c"deny")?;
        write_file(c"/proc/self/uid_map", 0, &p.uid_map)?;
        write_file(c"/proc/self/gid_map", 0, &p.gid_map)?;
        // Nothing mounted here propagates back to the host.
        check(libc::mount(
            none,
            c"/".as_ptr(),
            none,
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ))?;
        check(libc::mount(
            c"tmpfs".as_ptr(),
            p.root.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            c"size=64k,nr_inodes=64,mode=0755".as_ptr().cast(),
        ))?;
        for dir in [&p.prefix_dir, &p.version_mount, &p.interp_dir, &p.put_old] {
            make_dir(dir)?;
        }
        check(libc::symlink(
            p.interp_target.as_ptr(),
            p.interp_link.as_ptr(),
        ))?;
        if let Some(i) = &p.initdb {
            for dir in [&i.bin_dir, &i.dev_dir, &i.etc_dir, &i.data_mount] {
                make_dir(dir)?;
            }
            check(libc::symlink(i.sh_target.as_ptr(), i.sh_link.as_ptr()))?;
            for (device, file) in &i.devices {
                write_file(file, libc::O_CREAT | libc::O_EXCL, c"")?;
                bind(device, file)?;
            }
            for (path, text) in &i.files {
                write_file(path, libc::O_CREAT | libc::O_EXCL, text)?;
            }
            bind(&i.data_dir, &i.data_mount)?;
        }
        bind(&p.version_dir, &p.version_mount)?;
        check(libc::mount(
            none,
            p.version_mount.as_ptr(),
            none,
            libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
            std::ptr::null(),
        ))?;
        check(
            libc::syscall(libc::SYS_pivot_root, p.root.as_ptr(), p.put_old.as_ptr()) as libc::c_int,
        )?;
        check(libc::chdir(c"/".as_ptr()))?;
        check(libc::umount2(c"/old".as_ptr(), libc::MNT_DETACH))?;
        check(libc::rmdir(c"/old".as_ptr()))?;
        check(libc::mount(
            none,
            c"/".as_ptr(),
            none,
            libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        ))?;
    }
    Ok(())
}

/// The program interpreter an ELF executable asks for (its PT_INTERP), from its program headers.
pub fn elf_interpreter(path: &Path) -> Result<PathBuf, String> {
    // The headers, the program headers and the interpreter's name lead any executable a linker makes: read
    // only its start (this runs at every pool creation; postgres is megabytes).
    const HEAD: u64 = 64 * 1024;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(std::fs::File::open(path).map_err(|e| e.to_string())?, HEAD),
        &mut bytes,
    )
    .map_err(|e| e.to_string())?;
    let get = |off: usize, len: usize| -> Result<&[u8], String> {
        bytes
            .get(off..off.checked_add(len).ok_or("offset overflow")?)
            .ok_or_else(|| {
                "truncated ELF file (or its headers beyond the first 64 KiB)".to_string()
            })
    };
    if get(0, 4)? != b"\x7fELF" {
        return Err("not an ELF file".into());
    }
    if get(4, 1)? != [2] || get(5, 1)? != [1] {
        return Err("not a 64-bit little-endian ELF file".into());
    }
    let u16_at = |off| get(off, 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u64_at = |off| get(off, 8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
    let phoff = u64_at(0x20)? as usize;
    let phentsize = u16_at(0x36)? as usize;
    let phnum = u16_at(0x38)? as usize;
    for i in 0..phnum {
        let ph = phoff
            .checked_add(i.checked_mul(phentsize).ok_or("overflow")?)
            .ok_or("overflow")?;
        const PT_INTERP: u32 = 3;
        let kind = get(ph, 4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))?;
        if kind == PT_INTERP {
            let off = u64_at(ph + 8)? as usize;
            let size = u64_at(ph + 32)? as usize;
            let raw = get(off, size)?;
            let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
            if raw.is_empty() || raw[0] != b'/' || raw.contains(&0) {
                return Err("its ELF interpreter is not an absolute path".into());
            }
            return Ok(PathBuf::from(OsStr::from_bytes(raw)));
        }
    }
    Err("a static executable (no ELF interpreter)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locale_names_normalize_as_glibc_does() {
        assert_eq!(normalized_locale("C.UTF-8"), "C.utf8");
        assert_eq!(normalized_locale("en_US.UTF-8@euro"), "en_US.utf8@euro");
        assert_eq!(normalized_locale("C"), "C");
    }

    #[test]
    fn the_interpreter_of_a_dynamic_executable() {
        // Any dynamically linked program of the host does: the test binary itself.
        let me = std::env::current_exe().unwrap();
        let interp = elf_interpreter(&me).unwrap();
        assert!(interp.is_absolute(), "{}", interp.display());
        assert!(interp.exists(), "{}", interp.display());
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("x");
        std::fs::write(&bad, b"#!/bin/sh\n").unwrap();
        assert_eq!(elf_interpreter(&bad).unwrap_err(), "not an ELF file");
        let mut elf = std::fs::read(&me).unwrap();
        elf.truncate(100);
        std::fs::write(&bad, &elf).unwrap();
        assert!(elf_interpreter(&bad).is_err());
    }
}
