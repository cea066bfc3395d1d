//! The render memory budget (`MAX_RENDER_MEMORY_MB`): a weighted semaphore
//! counted in KiB. Each render reserves its estimated peak
//! ([`crate::image::MemoryEstimate::peak`]) before it decodes anything and
//! gives it back when its work has actually stopped — the reservation is
//! moved into the job on the render pool, so a render abandoned at its
//! timeout keeps holding its share until it has noticed the cancel flag and
//! freed its buffers. Renders wait (in FIFO order, so a large one is not
//! starved by small ones) while the budget is spent; one whose estimate alone
//! is over the whole budget is refused instead of waiting forever.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The estimate alone is more than the whole budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverBudget {
    /// Bytes the render needs.
    pub needed: u64,
    /// The whole budget, bytes.
    pub budget: u64,
}

/// Memory shared by the renders running at once.
#[derive(Debug)]
pub struct RenderBudget {
    kib: Arc<Semaphore>,
    total_kib: u32,
    waiting: Arc<AtomicUsize>,
}

/// A share of the budget, given back on drop.
#[derive(Debug)]
pub struct Reservation {
    permit: Option<OwnedSemaphorePermit>,
    budget: Arc<Semaphore>,
    total_kib: u32,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // Give the permits back first, so the gauge shows the freed share.
        drop(self.permit.take());
        in_use_gauge(self.total_kib, &self.budget);
    }
}

fn in_use_gauge(total_kib: u32, kib: &Semaphore) {
    let in_use = u64::from(total_kib).saturating_sub(kib.available_permits() as u64) * 1024;
    metrics::gauge!("mediaflow_render_budget_in_use_bytes").set(in_use as f64);
}

/// Bytes rounded up to whole KiB, at least 1.
fn kib_of(bytes: u64) -> u64 {
    bytes.div_ceil(1024).max(1)
}

impl RenderBudget {
    /// A budget of `bytes` (rounded down to KiB; at most 4 TiB).
    pub fn new(bytes: u64) -> Self {
        let total_kib = (bytes / 1024).min(u64::from(u32::MAX)) as u32;
        metrics::gauge!("mediaflow_render_budget_bytes").set(f64::from(total_kib) * 1024.0);
        metrics::gauge!("mediaflow_render_budget_in_use_bytes").set(0.0);
        metrics::gauge!("mediaflow_render_budget_waiting").set(0.0);
        Self { kib: Arc::new(Semaphore::new(total_kib as usize)), total_kib, waiting: Arc::new(AtomicUsize::new(0)) }
    }

    /// The whole budget, bytes.
    pub fn total_bytes(&self) -> u64 {
        u64::from(self.total_kib) * 1024
    }

    /// Bytes reserved by renders that have not finished.
    pub fn in_use_bytes(&self) -> u64 {
        u64::from(self.total_kib).saturating_sub(self.kib.available_permits() as u64) * 1024
    }

    /// Renders waiting for their share.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Whether `bytes` could ever be reserved.
    pub fn check(&self, bytes: u64) -> Result<(), OverBudget> {
        if kib_of(bytes) > u64::from(self.total_kib) {
            return Err(OverBudget { needed: bytes, budget: self.total_bytes() });
        }
        Ok(())
    }

    /// Reserves `bytes`, waiting while the budget is spent. Cancel-safe: a
    /// dropped wait reserves nothing and leaves the waiting count right.
    pub async fn reserve(&self, bytes: u64) -> Result<Reservation, OverBudget> {
        self.check(bytes)?;
        let kib = kib_of(bytes) as u32;
        let permit = match self.kib.clone().try_acquire_many_owned(kib) {
            Ok(permit) => permit,
            Err(_) => {
                struct Waiting<'a>(&'a AtomicUsize);
                impl Drop for Waiting<'_> {
                    fn drop(&mut self) {
                        let now = self.0.fetch_sub(1, Ordering::SeqCst) - 1;
                        metrics::gauge!("mediaflow_render_budget_waiting").set(now as f64);
                    }
                }
                let now = self.waiting.fetch_add(1, Ordering::SeqCst) + 1;
                metrics::gauge!("mediaflow_render_budget_waiting").set(now as f64);
                let _waiting = Waiting(&self.waiting);
                self.kib.clone().acquire_many_owned(kib).await.expect("the budget semaphore is never closed")
            }
        };
        in_use_gauge(self.total_kib, &self.kib);
        Ok(Reservation { permit: Some(permit), budget: self.kib.clone(), total_kib: self.total_kib })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn reservations_wait_for_freed_memory_and_oversized_ones_are_refused() {
        let budget = Arc::new(RenderBudget::new(10 << 20));
        assert_eq!(budget.total_bytes(), 10 << 20);
        assert_eq!(budget.reserve(11 << 20).await.unwrap_err(), OverBudget { needed: 11 << 20, budget: 10 << 20 });

        let a = budget.reserve(6 << 20).await.unwrap();
        assert_eq!(budget.in_use_bytes(), 6 << 20);
        // 6 + 6 > 10: the second waits until the first is given back.
        let b = budget.clone();
        let second = tokio::spawn(async move { b.reserve(6 << 20).await.map(|r| (r, ())) });
        while budget.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        assert!(!second.is_finished());
        drop(a);
        let (b, ()) = second.await.unwrap().unwrap();
        assert_eq!(budget.waiting(), 0);
        assert_eq!(budget.in_use_bytes(), 6 << 20);
        drop(b);
        assert_eq!(budget.in_use_bytes(), 0);
    }

    #[tokio::test]
    async fn a_cancelled_wait_reserves_nothing() {
        let budget = RenderBudget::new(4 << 20);
        let held = budget.reserve(3 << 20).await.unwrap();
        let wait = budget.reserve(2 << 20);
        assert!(tokio::time::timeout(Duration::from_millis(10), wait).await.is_err());
        assert_eq!(budget.waiting(), 0);
        drop(held);
        assert_eq!(budget.in_use_bytes(), 0);
        // Rounded up to whole KiB, at least one.
        let tiny = budget.reserve(1).await.unwrap();
        assert_eq!(budget.in_use_bytes(), 1024);
        drop(tiny);
    }
}
