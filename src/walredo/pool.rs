//! A tenant's pool of redo processes: up to `size` children, launched lazily, requests spread round-robin
//! (each child also pipelines), a failed child killed and replaced with one retry, all of them killed at
//! shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;
use tokio::sync::Mutex;
use tracing::{Span, warn};

use super::process::{LaunchConfig, ProcessError, RedoProcess};

#[derive(Debug, Clone, thiserror::Error)]
pub enum PoolError {
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error("the tenant's redo pool is shut down")]
    ShutDown,
}

pub struct RedoPool {
    config: LaunchConfig,
    span: Span,
    slots: Vec<Mutex<Option<Arc<RedoProcess>>>>,
    next: AtomicUsize,
    closed: AtomicBool,
}

impl RedoPool {
    /// A pool of at most `size` processes (at least one) logging in `span` (the tenant's).
    pub fn new(config: LaunchConfig, size: usize, span: Span) -> RedoPool {
        RedoPool {
            config,
            span,
            slots: (0..size.max(1)).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        }
    }

    /// The live process of a slot, launching one if the slot is empty or its process died.
    async fn process(&self, slot: usize) -> Result<Arc<RedoProcess>, PoolError> {
        let mut guard = self.slots[slot].lock().await;
        if self.closed.load(Ordering::Acquire) {
            return Err(PoolError::ShutDown);
        }
        if let Some(p) = guard.as_ref()
            && !p.is_dead()
        {
            return Ok(p.clone());
        }
        if let Some(old) = guard.take() {
            old.kill();
        }
        let p = RedoProcess::launch(&self.config, self.span.clone()).await?;
        *guard = Some(p.clone());
        Ok(p)
    }

    /// Sends an encoded request; on failure the process is killed and the request retried once on a new one.
    pub async fn request(&self, request: &[u8]) -> Result<Bytes, PoolError> {
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut attempt = 0;
        loop {
            let process = self.process(slot).await?;
            match process.request(request).await {
                Ok(page) => return Ok(page),
                Err(e) => {
                    process.kill();
                    if self.closed.load(Ordering::Acquire) {
                        return Err(PoolError::ShutDown);
                    }
                    attempt += 1;
                    if attempt > 1 {
                        return Err(e.into());
                    }
                    self.span.in_scope(
                        || warn!(error = %e, "wal-redo failed; retrying on a new process"),
                    );
                }
            }
        }
    }

    /// Pids of the live processes.
    pub async fn pids(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        for slot in &self.slots {
            if let Some(p) = slot.lock().await.as_ref()
                && !p.is_dead()
            {
                pids.push(p.pid());
            }
        }
        pids
    }

    /// Kills every process and refuses further requests; returns when they have exited.
    pub async fn shutdown(&self) {
        self.closed.store(true, Ordering::Release);
        for slot in &self.slots {
            let taken = slot.lock().await.take();
            if let Some(p) = taken {
                p.kill();
                p.wait_exit().await;
            }
        }
    }

    /// The process serving the next request, launched if needed (for tests and diagnostics).
    pub async fn any_process(&self) -> Result<Arc<RedoProcess>, PoolError> {
        self.process(0).await
    }
}
