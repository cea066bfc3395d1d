//! Graceful shutdown: SIGTERM and SIGINT stop the listener, in-flight requests
//! and background work (variant writes) finish up to a deadline, then the
//! process exits 0. `/ready` answers 503 from the first signal on.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The service's lifecycle: the shutdown signal and the background tasks that
/// must finish before the process exits.
#[derive(Debug, Clone, Default)]
pub struct Lifecycle {
    shutdown: CancellationToken,
    draining: Arc<AtomicBool>,
    tasks: TaskTracker,
}

impl Lifecycle {
    /// A new lifecycle, not shutting down.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts draining: `/ready` turns 503, the listener stops.
    pub fn shut_down(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.shutdown.cancel();
    }

    /// Whether shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Resolves when shutdown begins.
    pub fn cancelled(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.shutdown.cancelled()
    }

    /// Runs `task` in the background; shutdown waits for it.
    pub fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tasks.spawn(task)
    }

    /// Runs a periodic chore (a sweeper, a job poller) until shutdown begins.
    /// Not awaited like [`Self::spawn`]'s work: it holds nothing that must
    /// finish, and [`Self::wait_for_tasks`] would never see it end.
    pub fn spawn_daemon<F>(&self, chore: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let stop = self.shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = chore => {}
                () = stop.cancelled() => {}
            }
        });
    }

    /// Background tasks still running.
    pub fn pending_tasks(&self) -> usize {
        self.tasks.len()
    }

    /// Waits for background tasks, up to `deadline`; returns whether all finished.
    pub async fn wait_for_tasks(&self, deadline: Duration) -> bool {
        self.tasks.close();
        tokio::time::timeout(deadline, self.tasks.wait()).await.is_ok()
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received, draining"),
        () = term => tracing::info!("SIGTERM received, draining"),
    }
}
