//! One `postgres --wal-redo` child: launch, the sandbox message, pipelined requests over stdin/stdout,
//! per-request timeout, death.
//!
//! Requests are framed per docs/walredo.md §3 and written whole under the stdin lock, which also appends the
//! caller's reply slot to a FIFO; 8192-byte replies are taken off stdout and each handed to the oldest slot.
//! So requests from many callers pipeline, and replies match requests by order. Any failure (a write error,
//! EOF, a timeout) kills the process: every waiting caller gets an error and the pool replaces it.
//!
//! Replies are read by a task woken when stdout is readable, and, for a request that is alone in flight on a
//! lightly loaded node, by the caller itself: the child is moved to the caller's CPU, and the caller's thread
//! waits on stdout for up to `reply_wait` (docs/walredo.md, "Waiting for a reply"). Then request and reply are
//! two context switches on one CPU instead of two wake-ups across CPUs, which on some machines cost more than
//! the redo.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
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
    /// How long a request alone in flight on a lightly loaded node waits for its reply in its own thread, with
    /// the child on that thread's CPU, before it leaves the reply to the reader task; zero: never.
    pub reply_wait: Duration,
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

pub struct RedoProcess {
    pid: u32,
    child: std::sync::Mutex<Option<Child>>,
    /// The child's stdin; requests are written whole under this lock.
    stdin: Mutex<ChildStdin>,
    replies: Arc<Replies>,
    timeout: Duration,
    reply_wait: Duration,
    affinity: Affinity,
}

/// The child's stdout and the requests waiting for a reply, oldest first.
struct Replies {
    pid: u32,
    /// Non-blocking (tokio made the pipe so).
    stdout: AsyncFd<OwnedFd>,
    /// The reply being read: its bytes so far.
    partial: std::sync::Mutex<BytesMut>,
    /// Appended to under the stdin lock, in the order the requests are written.
    waiting: std::sync::Mutex<VecDeque<Reply>>,
    dead: AtomicBool,
}

/// Requests waiting for a reply in their own thread right now, in the whole process: at most one, so that
/// such waits never hold up more than one worker thread.
static WAITING_IN_THREAD: AtomicUsize = AtomicUsize::new(0);

/// Holds the one place of `WAITING_IN_THREAD`.
struct InThread;

impl InThread {
    fn enter() -> Option<InThread> {
        (WAITING_IN_THREAD.compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)).ok()?;
        Some(InThread)
    }
}

impl Drop for InThread {
    fn drop(&mut self) {
        WAITING_IN_THREAD.store(0, Ordering::Release);
    }
}

/// The CPU a child is kept on while requests wait for it in their thread: the waiting thread's, so that the
/// request wakes the child on the CPU the thread is leaving and the reply wakes the thread there.
struct Affinity {
    pid: nix::unistd::Pid,
    /// The CPU the child is bound to; -1: none (the CPUs of `all`).
    bound: AtomicI64,
    /// The CPUs the pageserver may run on (the child's at launch).
    all: Option<nix::sched::CpuSet>,
    /// Moving the child failed once (not permitted here): not tried again.
    failed: AtomicBool,
}

impl Affinity {
    fn new(pid: u32) -> Affinity {
        Affinity {
            pid: nix::unistd::Pid::from_raw(pid as i32),
            bound: AtomicI64::new(-1),
            all: nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).ok(),
            failed: AtomicBool::new(false),
        }
    }

    /// Binds the child to the CPU this thread runs on.
    fn follow_this_thread(&self) {
        let Ok(cpu) = nix::sched::sched_getcpu() else {
            return;
        };
        if self.failed.load(Ordering::Relaxed) || self.bound.load(Ordering::Relaxed) == cpu as i64 {
            return;
        }
        let mut set = nix::sched::CpuSet::new();
        if set.set(cpu).is_err() {
            return;
        }
        self.apply(&set, cpu as i64);
    }

    /// Lets the child run on every CPU again.
    fn release(&self) {
        if self.bound.load(Ordering::Relaxed) >= 0
            && let Some(all) = &self.all
        {
            self.apply(all, -1);
        }
    }

    fn apply(&self, set: &nix::sched::CpuSet, bound: i64) {
        match nix::sched::sched_setaffinity(self.pid, set) {
            Ok(()) => {
                self.bound.store(bound, Ordering::Relaxed);
                crate::metrics::WAL_REDO_PROCESS_MOVES.inc();
            }
            Err(e) => {
                self.failed.store(true, Ordering::Relaxed);
                tracing::debug!(pid = %self.pid, error = %e, "cannot set the wal-redo process's CPU; not tried again");
            }
        }
    }
}

/// Whether waiting in the thread can help: with one CPU there is nothing to gain over the reader task.
fn several_cpus() -> bool {
    static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get())) > 1
}

impl Replies {
    /// Reads what stdout holds and hands every complete page to the oldest waiting request. Ends with the
    /// error that stopped it: `WouldBlock` when stdout is empty for now; on EOF or a read error, or a page
    /// nobody asked for, every waiting request has failed and the process is marked dead.
    fn drain(&self, partial: &mut BytesMut) -> std::io::Error {
        loop {
            if partial.capacity() < BLCKSZ {
                partial.reserve(BLCKSZ);
            }
            let want = BLCKSZ - partial.len();
            let spare = &mut partial.spare_capacity_mut()[..want];
            // SAFETY: `spare` is `want` writable bytes that read(2) fills; only the bytes it reports are used.
            let n = unsafe {
                nix::libc::read(self.stdout.as_raw_fd(), spare.as_mut_ptr().cast(), want)
            };
            let e = match n {
                n if n > 0 => {
                    // SAFETY: read(2) wrote `n` bytes at the end of `partial`.
                    unsafe { partial.set_len(partial.len() + n as usize) };
                    if partial.len() == BLCKSZ {
                        let page = partial.split().freeze();
                        let tx = lock(&self.waiting).pop_front();
                        match tx {
                            Some(tx) => {
                                let _ = tx.send(Ok(page));
                            }
                            None => {
                                error!(
                                    pid = self.pid,
                                    "wal-redo process sent a page nobody asked for"
                                );
                                self.fail("sent a page nobody asked for");
                                return std::io::Error::other("a page nobody asked for");
                            }
                        }
                    }
                    continue;
                }
                0 => std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
                _ => std::io::Error::last_os_error(),
            };
            match e.kind() {
                std::io::ErrorKind::Interrupted => continue,
                std::io::ErrorKind::WouldBlock => return e,
                std::io::ErrorKind::UnexpectedEof => self.fail("exited (see its log lines)"),
                _ => self.fail(&format!("reading its output: {e}")),
            }
            return e;
        }
    }

    /// Marks the process dead and fails every waiting request.
    fn fail(&self, msg: &str) {
        self.dead.store(true, Ordering::Release);
        if !lock(&self.waiting).is_empty() {
            warn!(
                pid = self.pid,
                "wal-redo process {msg} with requests pending"
            );
        }
        fail_all(&self.waiting, self.pid, msg);
    }
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

        // into_owned_fd hands the pipe back in blocking mode; replies are read without blocking.
        let stdout = stdout
            .into_owned_fd()
            .and_then(|fd| {
                use nix::fcntl::{FcntlArg, OFlag, fcntl};
                let flags = OFlag::from_bits_retain(fcntl(&fd, FcntlArg::F_GETFL)?);
                fcntl(&fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
                Ok(fd)
            })
            .map_err(|e| launch_err(format!("watching its output: {e}")))?;
        // SAFETY: an OwnedFd's descriptor stays open and the same until the AsyncFd drops it.
        let stdout =
            unsafe { AsyncFd::register_with_interest(stdout, tokio::io::Interest::READABLE) }
                .map_err(|e| launch_err(format!("watching its output: {e}")))?;
        let replies = Arc::new(Replies {
            pid,
            stdout,
            partial: std::sync::Mutex::new(BytesMut::with_capacity(BLCKSZ)),
            waiting: std::sync::Mutex::new(VecDeque::new()),
            dead: AtomicBool::new(false),
        });
        tokio::spawn(read_replies(replies.clone()).instrument(span.clone()));
        tokio::spawn(log_stderr(pid, stderr).instrument(span.clone()));
        span.in_scope(|| info!(pid, root, "launched wal-redo process"));
        Ok(Arc::new(RedoProcess {
            pid,
            child: std::sync::Mutex::new(Some(child)),
            stdin: Mutex::new(stdin),
            replies,
            timeout: config.request_timeout,
            reply_wait: config.reply_wait,
            affinity: Affinity::new(pid),
        }))
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn is_dead(&self) -> bool {
        self.replies.dead.load(Ordering::Acquire)
    }

    /// Sends an encoded request (see [`encode_request`]) and waits for the page.
    pub async fn request(&self, request: &[u8]) -> Result<Bytes, ProcessError> {
        let (mut rx, in_thread) = {
            let mut stdin = self.stdin.lock().await;
            if self.is_dead() {
                return Err(self.died("already dead"));
            }
            let (tx, rx) = oneshot::channel();
            // In the FIFO before the bytes go out: the reply can come as soon as they are written.
            let alone = {
                let mut waiting = lock(&self.replies.waiting);
                waiting.push_back(tx);
                waiting.len() == 1
            };
            // Wait in this thread only on a lightly loaded node: under load the worker thread has other
            // requests to serve, and the child is better left free to run on any CPU.
            let light = alone
                && !self.reply_wait.is_zero()
                && crate::metrics::PAGE_REQUESTS_IN_FLIGHT.load(Ordering::Relaxed) <= 1
                && several_cpus();
            let in_thread = if light { InThread::enter() } else { None };
            if in_thread.is_some() {
                self.affinity.follow_this_thread();
            } else {
                self.affinity.release();
            }
            if let Err(e) = stdin.write_all(request).await.and(stdin.flush().await) {
                self.kill();
                return Err(self.died(&format!("writing the request: {e}")));
            }
            (rx, in_thread)
        };
        if let Some(_place) = in_thread
            && let Some(reply) = self.wait_in_thread(&mut rx)
        {
            return reply;
        }
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

    /// The reply, if it comes within `reply_wait` while this thread waits on stdout for it (blocking the
    /// thread: only for a request alone in flight on a lightly loaded node). The child runs on this thread's
    /// CPU meanwhile; the reader task may take the reply off first, which `rx` then has.
    fn wait_in_thread(
        &self,
        rx: &mut oneshot::Receiver<Result<Bytes, ProcessError>>,
    ) -> Option<Result<Bytes, ProcessError>> {
        use nix::poll::{PollFd, PollFlags, ppoll};
        use std::os::fd::AsFd;
        let deadline = Instant::now() + self.reply_wait;
        loop {
            // Take what stdout holds, unless the reader task is doing so.
            let drained = (self.replies.partial.try_lock())
                .ok()
                .map(|mut partial| self.replies.drain(&mut partial).kind());
            match rx.try_recv() {
                Ok(reply) => {
                    crate::metrics::WAL_REDO_REPLIES_IN_THREAD.inc();
                    return Some(reply);
                }
                Err(oneshot::error::TryRecvError::Closed) => {
                    return Some(Err(self.died("reply channel closed")));
                }
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                crate::metrics::WAL_REDO_THREAD_WAITS_EXPIRED.inc();
                return None;
            }
            match drained {
                Some(std::io::ErrorKind::WouldBlock) => {
                    let mut fds = [PollFd::new(
                        self.replies.stdout.get_ref().as_fd(),
                        PollFlags::POLLIN,
                    )];
                    // Readable, the deadline or a signal: each is looked at on the next turn.
                    let _ = ppoll(&mut fds, Some(left.into()), None);
                }
                // The process failed: `rx` holds the error on the next turn.
                Some(_) => {}
                None => std::thread::yield_now(),
            }
        }
    }

    /// A raw message, for tests of the sandbox (the `X` hook of the test binary).
    #[doc(hidden)]
    pub async fn send_raw(&self, bytes: &[u8]) -> std::io::Result<()> {
        let mut stdin = self.stdin.lock().await;
        stdin.write_all(bytes).await?;
        stdin.flush().await
    }

    fn died(&self, msg: &str) -> ProcessError {
        ProcessError::Died {
            pid: self.pid,
            msg: msg.to_string(),
        }
    }

    /// Kills the child (SIGKILL) and fails every waiting request.
    pub fn kill(&self) {
        self.replies.dead.store(true, Ordering::Release);
        if let Some(child) = lock(&self.child).as_mut() {
            let _ = child.start_kill();
        }
        fail_all(&self.replies.waiting, self.pid, "killed");
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

/// Takes replies off stdout whenever it is readable, until EOF or an error.
async fn read_replies(replies: Arc<Replies>) {
    loop {
        let mut ready = match replies.stdout.readable().await {
            Ok(ready) => ready,
            Err(e) => {
                replies.fail(&format!("watching its output: {e}"));
                return;
            }
        };
        let drained = ready.try_io(|_| {
            let mut partial = lock(&replies.partial);
            Err::<(), _>(replies.drain(&mut partial))
        });
        match drained {
            // Empty for now: readiness cleared, wait again.
            Err(_would_block) => {}
            Ok(Err(_)) | Ok(Ok(())) => return,
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
