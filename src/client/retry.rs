//! Retries with exponential backoff and jitter, for failures that another
//! attempt may cure: connection errors, timeouts, 5xx. A 4xx is an answer,
//! not an accident, and is never retried here.

use std::future::Future;
use std::time::Duration;

use super::ClientError;

/// How often and how patiently to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Attempts in all, the first included (at least 1).
    pub attempts: u32,
    /// The delay before the second attempt; it doubles after each failure.
    pub base_delay: Duration,
    /// The longest delay between two attempts.
    pub max_delay: Duration,
}

impl Default for Retry {
    /// Five attempts, 0.5 s doubling to at most 10 s: about 15 s of outage survived.
    fn default() -> Self {
        Self { attempts: 5, base_delay: Duration::from_millis(500), max_delay: Duration::from_secs(10) }
    }
}

/// A failed attempt, and whether another may succeed.
#[derive(Debug)]
pub struct Transient {
    retry: bool,
    error: ClientError,
}

impl Transient {
    /// A failure; `retry` says whether it is worth another attempt.
    pub fn new(retry: bool, error: ClientError) -> Self {
        Self { retry, error }
    }

    /// A failure no retry can cure.
    pub fn fatal(error: ClientError) -> Self {
        Self { retry: false, error }
    }
}

impl Retry {
    /// The pause after failed attempt `attempt` (0-based): "equal jitter", half
    /// the exponential delay plus a random share of the other half, so that
    /// parts failing together do not come back together.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self.base_delay.saturating_mul(1u32 << attempt.min(16));
        let cap = exp.min(self.max_delay);
        let half = cap / 2;
        half + half.mul_f64(rand::random::<f64>())
    }

    /// Whether attempt `attempt` (0-based) may be followed by another.
    pub fn may_retry(&self, attempt: u32) -> bool {
        attempt + 1 < self.attempts.max(1)
    }

    /// Runs `op(attempt)` until it succeeds, fails for good, or the attempts
    /// are spent; the last error is returned.
    pub async fn run<T, F, Fut>(&self, mut op: F) -> Result<T, ClientError>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, Transient>>,
    {
        let mut attempt = 0;
        loop {
            match op(attempt).await {
                Ok(value) => return Ok(value),
                Err(t) if t.retry && self.may_retry(attempt) => {
                    tokio::time::sleep(self.delay(attempt)).await;
                    attempt += 1;
                }
                Err(t) => return Err(t.error),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_are_capped() {
        let r = Retry { attempts: 5, base_delay: Duration::from_millis(100), max_delay: Duration::from_secs(1) };
        for _ in 0..50 {
            let d0 = r.delay(0);
            assert!(d0 >= Duration::from_millis(50) && d0 <= Duration::from_millis(100), "{d0:?}");
            let d3 = r.delay(3);
            assert!(d3 >= Duration::from_millis(400) && d3 <= Duration::from_millis(800), "{d3:?}");
            assert!(r.delay(30) <= Duration::from_secs(1));
        }
        assert!(r.may_retry(3) && !r.may_retry(4));
    }

    #[tokio::test]
    async fn retries_only_what_may_succeed() {
        let r = Retry { attempts: 3, base_delay: Duration::from_millis(1), max_delay: Duration::from_millis(2) };
        let mut calls = 0;
        let out: Result<(), _> = r
            .run(|_| {
                calls += 1;
                async { Err(Transient::new(true, ClientError::Interrupted)) }
            })
            .await;
        assert!(matches!(out, Err(ClientError::Interrupted)));
        assert_eq!(calls, 3);
        let mut calls = 0;
        let out = r
            .run(|attempt| {
                calls += 1;
                async move { if attempt == 0 { Err(Transient::fatal(ClientError::Interrupted)) } else { Ok(()) } }
            })
            .await;
        assert!(out.is_err());
        assert_eq!(calls, 1);
    }
}
