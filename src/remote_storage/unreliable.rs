//! Fault injection for tests (`test_remote_failures_probability`): a share of requests fails with what a real
//! object store does under stress: a 503 "slow down", a reset connection, a timeout. Half of the failures
//! happen before the request is sent, half after it ran: the caller cannot tell whether an upload or a delete
//! took effect, as with a connection lost while waiting for the response. Never configured in production: it
//! exists so that tests can check that retries, the upload queue and attach survive all of it with real servers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::Rng;
use tracing::debug;

use super::{RemoteError, RequestKind};

pub(crate) struct Faults {
    percent: u8,
    injected: AtomicU64,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Fault {
    /// Fails before the request is sent; else after it ran.
    pub before: bool,
    kind: FaultKind,
}

#[derive(Clone, Copy, Debug)]
enum FaultKind {
    SlowDown,
    Reset,
    Timeout,
}

impl Faults {
    pub fn new(percent: u8) -> Faults {
        Faults {
            percent: percent.min(100),
            injected: AtomicU64::new(0),
        }
    }

    /// Whether this request fails, and how.
    pub fn roll(&self, kind: RequestKind, what: &str) -> Option<Fault> {
        let mut rng = rand::rng();
        if rng.random_range(0..100u8) >= self.percent {
            return None;
        }
        let n = self.injected.fetch_add(1, Ordering::Relaxed);
        let fault = Fault {
            before: rng.random_bool(0.5),
            kind: match n % 3 {
                0 => FaultKind::SlowDown,
                1 => FaultKind::Reset,
                _ => FaultKind::Timeout,
            },
        };
        debug!(
            op = kind.as_str(),
            key = what,
            ?fault,
            "injecting a remote storage fault"
        );
        crate::metrics::REMOTE_FAULTS_INJECTED.inc();
        Some(fault)
    }
}

impl Fault {
    /// The error to return; a timeout first waits a little (not the whole timeout: tests would crawl).
    pub async fn error(&self, timeout: Duration) -> RemoteError {
        match self.kind {
            FaultKind::SlowDown => RemoteError::Transient(
                "injected fault: 503 SlowDown, please reduce your request rate".into(),
            ),
            FaultKind::Reset => {
                RemoteError::Transient("injected fault: connection reset by peer".into())
            }
            FaultKind::Timeout => {
                tokio::time::sleep(timeout.min(Duration::from_millis(200))).await;
                RemoteError::Timeout(timeout)
            }
        }
    }
}
