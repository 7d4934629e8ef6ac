//! One `postgres --wal-redo` child: launch, the sandbox message, pipelined requests over stdin/stdout,
//! per-request timeout, death.
//!
//! Requests are framed per docs/walredo.md §3 and written whole under the stdin lock, which also appends the
//! caller's reply slot to a FIFO; a reader task takes 8192-byte replies off stdout and hands each to the
//! oldest slot. So requests from many callers pipeline, and replies match requests by order. Any failure (a
//! write error, EOF, a timeout) kills the process: every waiting caller gets an error and the pool replaces it.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{Mutex, oneshot};
use tracing::{Instrument, Span, error, info, warn};

use super::isolate::EmptyRoot;
use super::record::BufferTag;
use crate::pg::Lsn;
use crate::pg::constants::BLCKSZ;

/// How to start redo children.
#[derive(Debug, Clone)]
pub struct LaunchConfig {
    /// The postgres binary, `<bundle>/v15/bin/postgres`.
    pub binary: PathBuf,
    /// Its libraries, `<bundle>/v15/lib`.
    pub lib_dir: PathBuf,
    /// (uid, gid) to run as; required when the pageserver runs as root, since PostgreSQL refuses root.
    pub run_as: Option<(u32, u32)>,
    /// The sandbox program ('S' payload).
    pub sandbox: Bytes,
    pub request_timeout: Duration,
    /// The empty root to run in (`super::isolate`); `None`: the host's filesystem, with seccomp only.
    pub empty_root: Option<EmptyRoot>,
    /// Set when entering the empty root failed (the kernel here allows no user namespaces): later launches
    /// of the pool go without it.
    pub empty_root_failed: Arc<AtomicBool>,
}

impl LaunchConfig {
    fn command(&self, program: &std::path::Path, library_path: &std::ffi::OsStr) -> Command {
        let mut cmd = Command::new(program);
        cmd.arg("--wal-redo")
            .env_clear()
            .env("LD_LIBRARY_PATH", library_path)
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some((uid, gid)) = self.run_as {
            // std drops supplementary groups (setgroups(0)) when it changes the uid as root.
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    /// Starts the child in the empty root: the binary and libraries by their paths inside it.
    fn spawn_in_empty_root(&self, root: &EmptyRoot) -> Result<Child, String> {
        let name = self
            .binary
            .file_name()
            .ok_or("the binary has no file name")?
            .to_string_lossy()
            .into_owned();
        let prepared = root.prepare(self.run_as).map_err(|e| e.to_string())?;
        let mut cmd = self.command(
            &root.inside(&format!("bin/{name}")),
            std::ffi::OsStr::new(&root.library_path()),
        );
        // SAFETY: `enter` makes only system calls on `prepared`, allocated before the fork.
        unsafe {
            cmd.pre_exec(move || super::isolate::enter(&prepared));
        }
        cmd.spawn().map_err(|e| {
            format!("entering the empty root (user, mount and network namespaces): {e}")
        })
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot start {binary}: {msg}")]
    Launch { binary: String, msg: String },
    #[error("redo process {pid} died: {msg}")]
    Died { pid: u32, msg: String },
    #[error("redo process {pid} gave no answer within {timeout:?}; killed")]
    Timeout { pid: u32, timeout: Duration },
}

type Reply = oneshot::Sender<Result<Bytes, ProcessError>>;

struct Pipe {
    stdin: ChildStdin,
    waiting: Arc<std::sync::Mutex<VecDeque<Reply>>>,
}

pub struct RedoProcess {
    pid: u32,
    child: std::sync::Mutex<Option<Child>>,
    pipe: Mutex<Pipe>,
    waiting: Arc<std::sync::Mutex<VecDeque<Reply>>>,
    dead: Arc<AtomicBool>,
    timeout: Duration,
}

impl std::fmt::Debug for RedoProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedoProcess")
            .field("pid", &self.pid)
            .finish()
    }
}

fn put_tag(buf: &mut BytesMut, tag: &BufferTag) {
    buf.put_u8(tag.forknum);
    buf.put_u32(tag.rnode.spc);
    buf.put_u32(tag.rnode.db);
    buf.put_u32(tag.rnode.rel);
    buf.put_u32(tag.blkno);
}

fn put_message(buf: &mut BytesMut, kind: u8, payload_len: usize) {
    buf.put_u8(kind);
    buf.put_i32((payload_len + 4) as i32);
}

/// The bytes of one redo request: B, P if there is a base image, A per record, G.
pub fn encode_request(
    tag: &BufferTag,
    base_image: Option<&[u8]>,
    records: &[(Lsn, &[u8])],
) -> Bytes {
    let size = 22 * 2
        + base_image.map_or(0, |_| 22 + BLCKSZ)
        + records.iter().map(|(_, r)| 13 + r.len()).sum::<usize>();
    let mut buf = BytesMut::with_capacity(size);
    put_message(&mut buf, b'B', 17);
    put_tag(&mut buf, tag);
    if let Some(image) = base_image {
        put_message(&mut buf, b'P', 17 + image.len());
        put_tag(&mut buf, tag);
        buf.put_slice(image);
    }
    for (lsn, rec) in records {
        put_message(&mut buf, b'A', 8 + rec.len());
        buf.put_u64(lsn.0);
        buf.put_slice(rec);
    }
    put_message(&mut buf, b'G', 17);
    put_tag(&mut buf, tag);
    buf.freeze()
}

impl RedoProcess {
    /// Starts a child, sends it the sandbox program, and starts its stdout and stderr readers (in `span`).
    pub async fn launch(
        config: &LaunchConfig,
        span: Span,
    ) -> Result<Arc<RedoProcess>, ProcessError> {
        let launch_err = |msg: String| ProcessError::Launch {
            binary: config.binary.display().to_string(),
            msg,
        };
        let in_empty_root = config
            .empty_root
            .as_ref()
            .filter(|_| !config.empty_root_failed.load(Ordering::Acquire));
        let (mut child, root) = match in_empty_root.map(|r| config.spawn_in_empty_root(r)) {
            Some(Ok(child)) => (child, "empty"),
            other => {
                if let Some(Err(e)) = other {
                    config.empty_root_failed.store(true, Ordering::Release);
                    span.in_scope(|| warn!(error = %e, "wal-redo processes run without the empty root from now on (seccomp only)"));
                }
                let child = config
                    .command(&config.binary, config.lib_dir.as_os_str())
                    .spawn()
                    .map_err(|e| launch_err(e.to_string()))?;
                (child, "host")
            }
        };
        let pid = child.id().unwrap_or(0);
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| launch_err("no stdin".into()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| launch_err("no stdout".into()))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| launch_err("no stderr".into()))?;

        let mut sandbox = BytesMut::with_capacity(5 + config.sandbox.len());
        put_message(&mut sandbox, b'S', config.sandbox.len());
        sandbox.put_slice(&config.sandbox);
        stdin
            .write_all(&sandbox)
            .await
            .map_err(|e| launch_err(format!("sending the sandbox program: {e}")))?;

        let waiting = Arc::new(std::sync::Mutex::new(VecDeque::new()));
        let dead = Arc::new(AtomicBool::new(false));
        tokio::spawn(
            read_replies(pid, stdout, waiting.clone(), dead.clone()).instrument(span.clone()),
        );
        tokio::spawn(log_stderr(pid, stderr).instrument(span.clone()));
        span.in_scope(|| info!(pid, root, "launched wal-redo process"));
        Ok(Arc::new(RedoProcess {
            pid,
            child: std::sync::Mutex::new(Some(child)),
            pipe: Mutex::new(Pipe {
                stdin,
                waiting: waiting.clone(),
            }),
            waiting,
            dead,
            timeout: config.request_timeout,
        }))
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    /// Sends an encoded request (see [`encode_request`]) and waits for the page.
    pub async fn request(&self, request: &[u8]) -> Result<Bytes, ProcessError> {
        let rx = {
            let mut pipe = self.pipe.lock().await;
            if self.is_dead() {
                return Err(self.died("already dead"));
            }
            let (tx, rx) = oneshot::channel();
            let waiting = pipe.waiting.clone();
            // In the FIFO before the bytes go out: the reply can come as soon as they are written.
            lock(&waiting).push_back(tx);
            if let Err(e) = pipe
                .stdin
                .write_all(request)
                .await
                .and(pipe.stdin.flush().await)
            {
                self.kill();
                return Err(self.died(&format!("writing the request: {e}")));
            }
            rx
        };
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err(self.died("reply channel closed")),
            Err(_) => {
                error!(pid = self.pid, timeout = ?self.timeout, "wal-redo request timed out; killing the process");
                self.kill();
                Err(ProcessError::Timeout {
                    pid: self.pid,
                    timeout: self.timeout,
                })
            }
        }
    }

    /// A raw message, for tests of the sandbox (the `X` hook of the test binary).
    #[doc(hidden)]
    pub async fn send_raw(&self, bytes: &[u8]) -> std::io::Result<()> {
        let mut pipe = self.pipe.lock().await;
        pipe.stdin.write_all(bytes).await?;
        pipe.stdin.flush().await
    }

    fn died(&self, msg: &str) -> ProcessError {
        ProcessError::Died {
            pid: self.pid,
            msg: msg.to_string(),
        }
    }

    /// Kills the child (SIGKILL) and fails every waiting request.
    pub fn kill(&self) {
        self.dead.store(true, Ordering::Release);
        if let Some(child) = lock(&self.child).as_mut() {
            let _ = child.start_kill();
        }
        fail_all(&self.waiting, self.pid, "killed");
    }

    /// Waits for the child to exit (after a kill or an error); its exit status, if it had one.
    pub async fn wait_exit(&self) -> Option<std::process::ExitStatus> {
        let child = lock(&self.child).take();
        match child {
            Some(mut c) => c.wait().await.ok(),
            None => None,
        }
    }
}

impl Drop for RedoProcess {
    fn drop(&mut self) {
        // kill_on_drop kills the child, and tokio reaps it in the background.
        if let Some(mut child) = lock(&self.child).take() {
            let _ = child.start_kill();
        }
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn fail_all(waiting: &std::sync::Mutex<VecDeque<Reply>>, pid: u32, msg: &str) {
    for tx in lock(waiting).drain(..) {
        let _ = tx.send(Err(ProcessError::Died {
            pid,
            msg: msg.to_string(),
        }));
    }
}

async fn read_replies(
    pid: u32,
    mut stdout: ChildStdout,
    waiting: Arc<std::sync::Mutex<VecDeque<Reply>>>,
    dead: Arc<AtomicBool>,
) {
    loop {
        let mut page = BytesMut::zeroed(BLCKSZ);
        if let Err(e) = stdout.read_exact(&mut page).await {
            dead.store(true, Ordering::Release);
            let msg = if e.kind() == std::io::ErrorKind::UnexpectedEof {
                "exited (see its log lines)".to_string()
            } else {
                format!("reading its output: {e}")
            };
            if !lock(&waiting).is_empty() {
                warn!(pid, "wal-redo process {msg} with requests pending");
            }
            fail_all(&waiting, pid, &msg);
            return;
        }
        let tx = lock(&waiting).pop_front();
        match tx {
            Some(tx) => {
                let _ = tx.send(Ok(page.freeze()));
            }
            None => {
                error!(pid, "wal-redo process sent a page nobody asked for");
                dead.store(true, Ordering::Release);
                return;
            }
        }
    }
}

async fn log_stderr(pid: u32, stderr: tokio::process::ChildStderr) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.contains("LOG:") {
            info!(pid, "wal-redo: {line}");
        } else {
            warn!(pid, "wal-redo: {line}");
        }
    }
}
