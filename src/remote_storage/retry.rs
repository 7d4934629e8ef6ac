//! Retries with capped exponential backoff and jitter. Delay before attempt n (n = 0 is the first, which does not
//! wait): `min(base * 2^(n-1), cap)`, times a random factor in [0.5, 1.5), so that many timelines retrying against
//! one struggling server spread out instead of arriving together. Only transient errors are retried.

use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::RemoteError;

#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

/// Upload queue and deletions: they retry forever, so the cap bounds how stale a recovered queue is.
pub const BACKGROUND: Backoff = Backoff {
    base: Duration::from_millis(100),
    cap: Duration::from_secs(10),
};

/// Downloads somebody waits for (a page read of an evicted layer, an attach).
pub const FOREGROUND: Backoff = Backoff {
    base: Duration::from_millis(50),
    cap: Duration::from_secs(2),
};

/// Attempts of a foreground request before its error is returned.
pub const FOREGROUND_ATTEMPTS: u32 = 10;

/// Attempts after which failures are logged as warnings rather than information.
const WARN_AFTER: u32 = 3;

impl Backoff {
    pub fn delay(&self, attempt: u32) -> Duration {
        if attempt == 0 {
            return Duration::ZERO;
        }
        let exp = self
            .base
            .saturating_mul(1u32 << (attempt - 1).min(20))
            .min(self.cap);
        exp.mul_f64(rand::rng().random_range(0.5..1.5))
    }
}

/// Runs `op` until it succeeds, fails with a permanent error, `max_attempts` (None: no limit) are used, or
/// `cancel` fires ([`RemoteError::Cancelled`]). `on_error` sees every failure (for failure counters).
pub async fn retry<T, Fut>(
    what: &str,
    backoff: Backoff,
    max_attempts: Option<u32>,
    cancel: &CancellationToken,
    mut on_error: impl FnMut(&RemoteError),
    mut op: impl FnMut() -> Fut,
) -> Result<T, RemoteError>
where
    Fut: Future<Output = Result<T, RemoteError>>,
{
    let mut attempt = 0u32;
    loop {
        let delay = backoff.delay(attempt);
        if !delay.is_zero() {
            tokio::select! {
                _ = cancel.cancelled() => return Err(RemoteError::Cancelled),
                _ = tokio::time::sleep(delay) => {}
            }
        }
        let result = tokio::select! {
            _ = cancel.cancelled() => return Err(RemoteError::Cancelled),
            r = op() => r,
        };
        match result {
            Ok(v) => {
                if attempt > 0 {
                    info!(
                        what,
                        attempts = attempt + 1,
                        "remote storage request succeeded after retries"
                    );
                }
                return Ok(v);
            }
            Err(e) => {
                on_error(&e);
                attempt += 1;
                let last = max_attempts.is_some_and(|m| attempt >= m);
                if !e.is_transient() || last {
                    return Err(e);
                }
                if attempt >= WARN_AFTER {
                    warn!(what, attempt, error = %e, "remote storage request failed; retrying");
                } else {
                    info!(what, attempt, error = %e, "remote storage request failed; retrying");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_with_jitter() {
        let b = Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
        };
        assert_eq!(b.delay(0), Duration::ZERO);
        for _ in 0..100 {
            let d1 = b.delay(1);
            assert!(
                d1 >= Duration::from_millis(50) && d1 < Duration::from_millis(150),
                "{d1:?}"
            );
            let d3 = b.delay(3);
            assert!(
                d3 >= Duration::from_millis(200) && d3 < Duration::from_millis(600),
                "{d3:?}"
            );
            let d30 = b.delay(30);
            assert!(
                d30 >= Duration::from_millis(500) && d30 < Duration::from_millis(1500),
                "{d30:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_retry_permanent_ones_do_not() {
        let cancel = CancellationToken::new();
        let mut calls = 0;
        let mut seen = 0;
        let r: Result<u32, _> = retry(
            "t",
            FOREGROUND,
            None,
            &cancel,
            |_| seen += 1,
            || {
                calls += 1;
                let c = calls;
                async move {
                    if c < 4 {
                        Err(RemoteError::Transient("503".into()))
                    } else {
                        Ok(c)
                    }
                }
            },
        )
        .await;
        assert_eq!(r.unwrap(), 4);
        assert_eq!(seen, 3);

        let mut calls = 0;
        let r: Result<u32, _> = retry(
            "t",
            FOREGROUND,
            None,
            &cancel,
            |_| {},
            || {
                calls += 1;
                async { Err(RemoteError::Permanent("403".into())) }
            },
        )
        .await;
        assert!(matches!(r, Err(RemoteError::Permanent(_))));
        assert_eq!(calls, 1);

        let mut calls = 0;
        let r: Result<u32, _> = retry(
            "t",
            FOREGROUND,
            Some(3),
            &cancel,
            |_| {},
            || {
                calls += 1;
                async { Err(RemoteError::Timeout(Duration::from_secs(1))) }
            },
        )
        .await;
        assert!(matches!(r, Err(RemoteError::Timeout(_))));
        assert_eq!(calls, 3);

        cancel.cancel();
        let r: Result<u32, _> = retry(
            "t",
            FOREGROUND,
            None,
            &cancel,
            |_| {},
            || async { Err(RemoteError::Transient("x".into())) },
        )
        .await;
        assert!(matches!(r, Err(RemoteError::Cancelled)));
    }
}
