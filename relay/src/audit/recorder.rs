//! The audit log of a running relay. Events go to the store's writer
//! thread, which appends them in the same group transaction as frames, so
//! the audit log adds no second writer that the frame writer would have to
//! wait for.
//!
//! Frames are never audited one by one. Followers joining and leaving, the
//! events that come at the rate sockets open and close, are queued without
//! waiting for their commit.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::append::{AuditBatch, CheckpointPolicy};
use super::event::Event;
use super::key::AuditKey;
use crate::metrics::AUDIT_WRITE_FAILURES;
use crate::shutdown::Shutdown;
use crate::store::{Completion, Store, StoreError, WriteOp};

/// Handle to the audit log, cheap to clone.
#[derive(Clone)]
pub(crate) struct AuditLog {
    store: Store,
    key: Arc<AuditKey>,
    policy: CheckpointPolicy,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Starts an audit log that writes through `store` and signs with `key`.
    pub(crate) fn new(store: Store, key: Arc<AuditKey>, policy: CheckpointPolicy) -> AuditLog {
        crate::metrics::describe_audit();
        AuditLog { store, key, policy }
    }

    /// Queues an event and returns without waiting for its commit. A failed
    /// append is logged and counted in `sealcast_audit_write_failures_total`.
    pub(crate) async fn record(&self, event: Event) {
        let action = event.action.as_str();
        let done: Completion = Box::new(move |outcome| {
            if let Err(error) = outcome {
                lost(action, &error);
            }
        });
        self.enqueue(vec![event], false, done).await;
    }

    /// Queues an event and waits until it is committed. A failure is also
    /// logged and counted.
    pub(crate) async fn record_committed(&self, event: Event) -> Result<(), StoreError> {
        let action = event.action.as_str();
        let (sender, receiver) = oneshot::channel();
        let done: Completion = Box::new(move |outcome| {
            if let Err(error) = &outcome {
                lost(action, error);
            }
            let _ = sender.send(outcome);
        });
        self.enqueue(vec![event], false, done).await;
        receiver.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// Signs the head of every stream with entries after its last
    /// checkpoint, and waits for the commit.
    pub(crate) async fn sign_heads(&self) -> Result<(), StoreError> {
        let (sender, receiver) = oneshot::channel();
        let done: Completion = Box::new(move |outcome| {
            let _ = sender.send(outcome);
        });
        self.enqueue(Vec::new(), true, done).await;
        receiver.await.map_err(|_| StoreError::WriterStopped)?
    }

    async fn enqueue(&self, events: Vec<Event>, sign_heads: bool, done: Completion) {
        let batch = AuditBatch {
            events,
            key: self.key.clone(),
            policy: self.policy,
            sign_heads,
        };
        match self.store.reserve().await {
            Ok(permit) => permit.send(WriteOp::Audit { batch, done }),
            Err(error) => done(Err(error)),
        }
    }
}

/// Signs stream heads every `interval` until the relay shuts down.
pub(crate) async fn run_checkpoint_timer(log: AuditLog, interval: Duration, shutdown: Shutdown) {
    let mut ticks = tokio::time::interval(interval);
    ticks.tick().await;
    loop {
        tokio::select! {
            () = shutdown.triggered() => return,
            _ = ticks.tick() => {
                if let Err(error) = log.sign_heads().await {
                    tracing::error!(%error, "failed to sign audit checkpoints");
                }
            }
        }
    }
}

fn lost(action: &'static str, error: &StoreError) {
    metrics::counter!(AUDIT_WRITE_FAILURES).increment(1);
    tracing::error!(%error, action, "failed to append an audit entry");
}
