//! Graceful shutdown: one broadcast signal and a tracker of every task that
//! must finish before the store writer stops.

use std::future::Future;

use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tokio_util::task::task_tracker::TaskTrackerToken;
use tokio_util::task::TaskTracker;

/// Shared by the accept loop, every connection and every WebSocket task.
#[derive(Debug, Clone, Default)]
pub(crate) struct Shutdown {
    signal: CancellationToken,
    tasks: TaskTracker,
}

impl Shutdown {
    /// Starts the shutdown: the accept loop stops and connections wind down.
    pub(crate) fn trigger(&self) {
        self.signal.cancel();
    }

    /// Returns whether [`Shutdown::trigger`] has been called.
    pub(crate) fn is_triggered(&self) -> bool {
        self.signal.is_cancelled()
    }

    /// Completes once [`Shutdown::trigger`] has been called.
    pub(crate) fn triggered(&self) -> WaitForCancellationFuture<'_> {
        self.signal.cancelled()
    }

    /// Spawns a task that shutdown waits for.
    pub(crate) fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tasks.spawn(task)
    }

    /// Returns a token that shutdown waits for until it is dropped, for tasks
    /// that another library spawns, such as WebSocket handlers.
    pub(crate) fn hold(&self) -> TaskTrackerToken {
        self.tasks.token()
    }

    /// Waits until every tracked task and token is gone.
    pub(crate) async fn wait_for_tasks(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}
