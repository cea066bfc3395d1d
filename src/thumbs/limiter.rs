//! Bounded rendering: at most 2N renders hold an original in memory (N on the
//! render pool's threads, N fetched and ready, so fetching overlaps decoding),
//! and at most `queue` wait for a slot; beyond that a render is refused
//! instead of queued, so load can never grow memory without bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overloaded;

/// Render slots and the bounded queue in front of them.
#[derive(Debug)]
pub struct Limiter {
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
}

impl Limiter {
    /// `concurrency` renders at once, `queue` waiting at most.
    pub fn new(concurrency: usize, queue: usize) -> Self {
        let concurrency = concurrency.max(1);
        Self { slots: Arc::new(Semaphore::new(concurrency * 2)), waiting: AtomicUsize::new(0), max_waiting: queue }
    }

    /// A slot to fetch and render in, waiting in the queue if need be.
    pub async fn enter(&self) -> Result<OwnedSemaphorePermit, Overloaded> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(Overloaded);
        }
        // Decrement even if this future is dropped while waiting.
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let _waiting = Waiting(&self.waiting);
        Ok(self.slots.clone().acquire_owned().await.expect("the semaphore is never closed"))
    }

    /// Renders waiting for a slot.
    pub fn queue_depth(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_queue_refuses_instead_of_growing() {
        let limiter = Arc::new(Limiter::new(1, 1));
        let a = limiter.enter().await.unwrap();
        let b = limiter.enter().await.unwrap();
        // Both slots held: the next waits in the queue, the one after is refused.
        let l = limiter.clone();
        let waiter = tokio::spawn(async move { l.enter().await.map(|_| ()) });
        while limiter.queue_depth() == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(limiter.enter().await.err(), Some(Overloaded));
        drop(a);
        assert_eq!(waiter.await.unwrap(), Ok(()));
        assert_eq!(limiter.queue_depth(), 0);
        drop(b);
    }

    #[tokio::test]
    async fn a_cancelled_waiter_leaves_the_queue() {
        let limiter = Limiter::new(1, 4);
        let _a = limiter.enter().await.unwrap();
        let _b = limiter.enter().await.unwrap();
        let wait = limiter.enter();
        assert!(tokio::time::timeout(std::time::Duration::from_millis(10), wait).await.is_err());
        assert_eq!(limiter.queue_depth(), 0);
    }
}
