//! A tenant's pool of redo processes. It starts empty and grows with load: a request goes to the live process
//! with the fewest requests in flight (the lowest slot on a tie, so a light load stays on one process), and when
//! every live process is busy one more is launched in the background, up to `size`. A process idle for
//! `idle_timeout` is killed ("0 s": never), so an idle tenant holds none. A failed child is killed and the
//! request retried once on another; shutdown kills them all.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Notify;
use tracing::{Instrument, Span, info, warn};

use super::process::{LaunchConfig, ProcessError, RedoProcess};

#[derive(Debug, Clone, thiserror::Error)]
pub enum PoolError {
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error("the tenant's redo pool is shut down")]
    ShutDown,
}

enum Slot {
    Empty,
    Launching,
    Live {
        process: Arc<RedoProcess>,
        /// Requests holding this process (chosen and not yet answered).
        users: usize,
        /// When `users` last fell to 0 (or the launch).
        idle_since: Instant,
    },
}

struct Inner {
    config: LaunchConfig,
    span: Span,
    idle_timeout: Duration,
    slots: std::sync::Mutex<Vec<Slot>>,
    closed: AtomicBool,
    /// Woken when a launch ends (either way) and at shutdown.
    launched: Notify,
    reaper_started: AtomicBool,
}

enum Choice {
    Use(usize, Arc<RedoProcess>),
    LaunchHere(usize),
    Wait,
}

pub struct RedoPool {
    inner: Arc<Inner>,
}

/// A chosen process; dropping it (also when the request is cancelled) gives it back.
struct Lease {
    inner: Arc<Inner>,
    slot: usize,
    process: Arc<RedoProcess>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut slots = self.inner.lock_slots();
        if let Slot::Live {
            process,
            users,
            idle_since,
        } = &mut slots[self.slot]
            && Arc::ptr_eq(process, &self.process)
        {
            *users = users.saturating_sub(1);
            if *users == 0 {
                *idle_since = Instant::now();
            }
        }
    }
}

impl Inner {
    fn lock_slots(&self) -> std::sync::MutexGuard<'_, Vec<Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Picks the process for one request (reserving it), or says to launch the first one, or to wait for a
    /// launch in progress. Starts a background launch when every live process is busy.
    fn choose(self: &Arc<Self>) -> Result<Choice, PoolError> {
        let mut slots = self.lock_slots();
        if self.closed.load(Ordering::Acquire) {
            return Err(PoolError::ShutDown);
        }
        let mut best: Option<(usize, usize)> = None;
        let mut empty = None;
        let mut launching = false;
        for (i, slot) in slots.iter_mut().enumerate() {
            if let Slot::Live { process, .. } = slot
                && process.is_dead()
            {
                process.kill();
                *slot = Slot::Empty;
            }
            match slot {
                Slot::Empty => {
                    empty.get_or_insert(i);
                }
                Slot::Launching => launching = true,
                Slot::Live { users, .. } => {
                    if best.is_none_or(|(_, fewest)| *users < fewest) {
                        best = Some((i, *users));
                    }
                }
            }
        }
        match (best, empty) {
            (Some((i, busy)), empty) => {
                if busy > 0
                    && !launching
                    && let Some(e) = empty
                {
                    slots[e] = Slot::Launching;
                    let inner = self.clone();
                    tokio::spawn(
                        async move {
                            if let Err(e) = inner.launch_into(e, false).await {
                                warn!(error = %e, "could not grow the wal-redo pool");
                            }
                        }
                        .instrument(self.span.clone()),
                    );
                }
                let Slot::Live { process, users, .. } = &mut slots[i] else {
                    unreachable!("best is a live slot");
                };
                *users += 1;
                Ok(Choice::Use(i, process.clone()))
            }
            (None, _) if launching => Ok(Choice::Wait),
            (None, Some(e)) => {
                slots[e] = Slot::Launching;
                Ok(Choice::LaunchHere(e))
            }
            (None, None) => Ok(Choice::Wait),
        }
    }

    /// Launches a process into `slot` (marked Launching by the caller); with `reserve`, the caller holds it.
    async fn launch_into(
        self: &Arc<Self>,
        slot: usize,
        reserve: bool,
    ) -> Result<Arc<RedoProcess>, PoolError> {
        let launched = RedoProcess::launch(&self.config, self.span.clone()).await;
        let result = {
            let mut slots = self.lock_slots();
            match launched {
                Ok(p) if self.closed.load(Ordering::Acquire) => {
                    p.kill();
                    slots[slot] = Slot::Empty;
                    Err(PoolError::ShutDown)
                }
                Ok(p) => {
                    slots[slot] = Slot::Live {
                        process: p.clone(),
                        users: usize::from(reserve),
                        idle_since: Instant::now(),
                    };
                    Ok(p)
                }
                Err(e) => {
                    slots[slot] = Slot::Empty;
                    Err(e.into())
                }
            }
        };
        self.launched.notify_waiters();
        if result.is_ok()
            && !self.idle_timeout.is_zero()
            && !self.reaper_started.swap(true, Ordering::AcqRel)
        {
            tokio::spawn(
                reap_idle(Arc::downgrade(self), self.idle_timeout).instrument(self.span.clone()),
            );
        }
        result
    }

    async fn acquire(self: &Arc<Self>) -> Result<Lease, PoolError> {
        loop {
            let notified = self.launched.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (slot, process) = match self.choose()? {
                Choice::Use(slot, p) => (slot, p),
                Choice::LaunchHere(slot) => (slot, self.launch_into(slot, true).await?),
                Choice::Wait => {
                    notified.await;
                    continue;
                }
            };
            return Ok(Lease {
                inner: self.clone(),
                slot,
                process,
            });
        }
    }
}

/// Kills processes idle for `timeout`, checking a few times per timeout, until the pool is dropped or closed.
async fn reap_idle(pool: Weak<Inner>, timeout: Duration) {
    let tick = (timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(10));
    loop {
        tokio::time::sleep(tick).await;
        let Some(inner) = pool.upgrade() else { return };
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        let idle: Vec<Arc<RedoProcess>> = {
            let mut slots = inner.lock_slots();
            let mut idle = Vec::new();
            for slot in slots.iter_mut() {
                if let Slot::Live {
                    process,
                    users: 0,
                    idle_since,
                } = slot
                    && idle_since.elapsed() >= timeout
                {
                    idle.push(process.clone());
                    *slot = Slot::Empty;
                }
            }
            idle
        };
        drop(inner);
        for p in idle {
            info!(pid = p.pid(), idle = ?timeout, "stopping an idle wal-redo process");
            p.kill();
            p.wait_exit().await;
        }
    }
}

impl RedoPool {
    /// A pool of at most `size` processes (at least one) logging in `span` (the tenant's); a process idle for
    /// `idle_timeout` is stopped (zero: never).
    pub fn new(config: LaunchConfig, size: usize, idle_timeout: Duration, span: Span) -> RedoPool {
        RedoPool {
            inner: Arc::new(Inner {
                config,
                span,
                idle_timeout,
                slots: std::sync::Mutex::new((0..size.max(1)).map(|_| Slot::Empty).collect()),
                closed: AtomicBool::new(false),
                launched: Notify::new(),
                reaper_started: AtomicBool::new(false),
            }),
        }
    }

    /// Sends an encoded request; on failure the process is killed and the request retried once on another.
    pub async fn request(&self, request: &[u8]) -> Result<Bytes, PoolError> {
        let mut attempt = 0;
        loop {
            let lease = self.inner.acquire().await?;
            match lease.process.request(request).await {
                Ok(page) => return Ok(page),
                Err(e) => {
                    lease.process.kill();
                    drop(lease);
                    if self.inner.closed.load(Ordering::Acquire) {
                        return Err(PoolError::ShutDown);
                    }
                    attempt += 1;
                    if attempt > 1 {
                        return Err(e.into());
                    }
                    self.inner.span.in_scope(
                        || warn!(error = %e, "wal-redo failed; retrying on a new process"),
                    );
                }
            }
        }
    }

    /// Pids of the live processes.
    pub async fn pids(&self) -> Vec<u32> {
        self.inner
            .lock_slots()
            .iter()
            .filter_map(|s| match s {
                Slot::Live { process, .. } if !process.is_dead() => Some(process.pid()),
                _ => None,
            })
            .collect()
    }

    /// Kills every process and refuses further requests; returns when they have exited.
    pub async fn shutdown(&self) {
        self.inner.closed.store(true, Ordering::Release);
        let live: Vec<Arc<RedoProcess>> = self
            .inner
            .lock_slots()
            .iter_mut()
            .filter_map(|s| match std::mem::replace(s, Slot::Empty) {
                Slot::Live { process, .. } => Some(process),
                Slot::Launching => {
                    // launch_into sees `closed` and kills what it launched.
                    *s = Slot::Launching;
                    None
                }
                Slot::Empty => None,
            })
            .collect();
        self.inner.launched.notify_waiters();
        for p in live {
            p.kill();
            p.wait_exit().await;
        }
    }

    /// The process the next request would use, launched if needed (for tests and diagnostics).
    pub async fn any_process(&self) -> Result<Arc<RedoProcess>, PoolError> {
        Ok(self.inner.acquire().await?.process.clone())
    }
}
