//! Retention: deleting expired sessions with everything stored for them,
//! and audit entries older than the audit retention period.
//!
//! A session is expired when it ended, or, still open, received its last
//! frame (or was created, without frames) longer ago than the content
//! retention period. Its frames, browser credentials and the session row,
//! which contains the invite's hash, go in one transaction, so no session is
//! ever half deleted. Audit entries go as whole prefixes of a stream behind
//! a signed anchor, see [`crate::store::audit`]. Each run is recorded in
//! the admin stream with its counts.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::append::{append, CheckpointPolicy};
use super::entry::Stream;
use super::event::{Action, Event};
use super::key::AuditKey;
use crate::db::{db_params, Backend, Db};
use crate::metrics::{RETENTION_DELETED, RETENTION_RUNS};
use crate::shutdown::Shutdown;
use crate::store::audit as audit_store;
use crate::store::{now_millis, open_migrated_writer, StoreError};

/// Sessions deleted per transaction, which bounds how long one retention
/// transaction keeps the frame writer from the write lock.
const SESSIONS_PER_TRANSACTION: usize = 50;

/// Delay between a relay's start and its first retention run.
const FIRST_RUN_DELAY: Duration = Duration::from_secs(60);

/// How long content and audit entries are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Age after which an ended or idle session is deleted with its frames,
    /// invite and browser credentials.
    pub content: Duration,
    /// Age after which audit entries are removed behind a signed anchor.
    pub audit: Duration,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        RetentionPolicy {
            content: Duration::from_secs(7 * DAY_SECONDS),
            audit: Duration::from_secs(6 * 366 * DAY_SECONDS),
        }
    }
}

const DAY_SECONDS: u64 = 24 * 60 * 60;

/// Counts of what one retention run deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RetentionOutcome {
    pub(crate) sessions: u64,
    pub(crate) frames: u64,
    pub(crate) browser_credentials: u64,
    pub(crate) audit_entries: BTreeMap<Stream, u64>,
    /// Unix milliseconds before which content and audit entries expired.
    pub(crate) content_cutoff: i64,
    pub(crate) audit_cutoff: i64,
}

/// Runs retention once at time `now` and records the run in the admin
/// stream as `actor`.
pub(crate) fn run_once(
    conn: &Db,
    key: &AuditKey,
    policy: RetentionPolicy,
    now: i64,
    actor: &str,
) -> Result<RetentionOutcome, StoreError> {
    let mut outcome = RetentionOutcome {
        content_cutoff: now.saturating_sub(millis(policy.content)),
        audit_cutoff: now.saturating_sub(millis(policy.audit)),
        ..RetentionOutcome::default()
    };
    while delete_expired_sessions(conn, outcome.content_cutoff, &mut outcome)? {}
    for stream in Stream::ALL {
        let removed = remove_expired_audit(conn, key, stream, outcome.audit_cutoff, now)?;
        outcome.audit_entries.insert(stream, removed);
    }

    let mut event = Event::new(Action::RetentionRun, actor)
        .detail("sessions_deleted", outcome.sessions)
        .detail("frames_deleted", outcome.frames)
        .detail("browser_credentials_deleted", outcome.browser_credentials)
        .detail("content_cutoff", outcome.content_cutoff)
        .detail("audit_cutoff", outcome.audit_cutoff);
    for (stream, removed) in &outcome.audit_entries {
        event = event.detail(&format!("audit_{stream}_entries_removed"), removed);
    }
    append(conn, key, CheckpointPolicy::default(), &[event], now)?;

    record_metrics(&outcome);
    Ok(outcome)
}

/// Runs retention every `interval` until shutdown, on the blocking pool
/// with a connection of its own to the database of `backend`.
pub(crate) async fn run_periodically(
    backend: Backend,
    key: Arc<AuditKey>,
    policy: RetentionPolicy,
    interval: Duration,
    shutdown: Shutdown,
) {
    // The first run waits a little, so that it does not compete for the
    // write lock with a relay that is just filling up after a restart.
    let first = tokio::time::Instant::now() + interval.min(FIRST_RUN_DELAY);
    let mut ticks = tokio::time::interval_at(first, interval);
    loop {
        tokio::select! {
            () = shutdown.triggered() => return,
            _ = ticks.tick() => {}
        }
        let backend = backend.clone();
        let key = key.clone();
        let ran = tokio::task::spawn_blocking(move || run_in(&backend, &key, policy)).await;
        match ran {
            Ok(Ok(outcome)) => tracing::info!(
                sessions = outcome.sessions,
                frames = outcome.frames,
                browser_credentials = outcome.browser_credentials,
                audit_entries = outcome.audit_entries.values().sum::<u64>(),
                "retention run finished"
            ),
            Ok(Err(error)) => {
                metrics::counter!(RETENTION_RUNS, "outcome" => "failed").increment(1);
                tracing::error!(%error, "retention run failed: retrying at the next interval");
            }
            Err(error) => {
                metrics::counter!(RETENTION_RUNS, "outcome" => "failed").increment(1);
                tracing::error!(%error, "retention task failed: retrying at the next interval");
            }
        }
    }
}

fn run_in(
    backend: &Backend,
    key: &AuditKey,
    policy: RetentionPolicy,
) -> Result<RetentionOutcome, StoreError> {
    let conn = open_migrated_writer(backend)?;
    run_once(&conn, key, policy, now_millis(), super::event::ACTOR_RELAY)
}

/// Deletes up to [`SESSIONS_PER_TRANSACTION`] expired sessions in one
/// transaction. Returns whether it found any, so more may remain.
fn delete_expired_sessions(
    conn: &Db,
    cutoff: i64,
    outcome: &mut RetentionOutcome,
) -> Result<bool, StoreError> {
    let tx = conn
        .begin_write()
        .map_err(StoreError::db("begin a retention transaction"))?;
    let expired = tx
        .query_all(
            "SELECT session_id FROM sessions AS s
            WHERE (s.ended_at IS NOT NULL AND s.ended_at < ?1)
               OR (s.ended_at IS NULL AND COALESCE(
                    (SELECT received_at FROM frames AS f WHERE f.session_id = s.session_id
                     ORDER BY f.frame_offset DESC LIMIT 1),
                    s.created_at) < ?1)
            LIMIT ?2",
            db_params![cutoff, SESSIONS_PER_TRANSACTION as i64],
            |row| row.get::<Vec<u8>>(0),
        )
        .map_err(StoreError::db("find expired sessions"))?;

    for session_id in &expired {
        let delete = |sql: &str, what: &'static str| {
            tx.execute(sql, db_params![session_id])
                .map_err(StoreError::db(what))
        };
        outcome.frames += delete(
            "DELETE FROM frames WHERE session_id = ?1",
            "delete an expired session's frames",
        )? as u64;
        delete(
            "DELETE FROM streams WHERE session_id = ?1",
            "delete an expired session's stream positions",
        )?;
        outcome.browser_credentials += delete(
            "DELETE FROM browser_credentials WHERE session_id = ?1",
            "delete an expired session's browser credentials",
        )? as u64;
        delete(
            "DELETE FROM paired_devices WHERE session_id = ?1",
            "delete an expired session's paired devices",
        )?;
        // An open session's paired devices may still have wrapped keys,
        // which reference the session too.
        delete(
            "DELETE FROM paired_device_keys WHERE session_id = ?1",
            "delete an expired session's wrapped keys",
        )?;
        outcome.sessions += delete(
            "DELETE FROM sessions WHERE session_id = ?1",
            "delete an expired session",
        )? as u64;
    }
    tx.commit()
        .map_err(StoreError::db("commit a retention transaction"))?;
    Ok(!expired.is_empty())
}

/// Removes the prefix of `stream` recorded before `cutoff` behind a signed
/// anchor. Returns the number of entries removed.
fn remove_expired_audit(
    conn: &Db,
    key: &AuditKey,
    stream: Stream,
    cutoff: i64,
    now: i64,
) -> Result<u64, StoreError> {
    let tx = conn
        .begin_write()
        .map_err(StoreError::db("begin an audit retention transaction"))?;
    let Some((seq, hash)) = audit_store::expired_prefix(&tx, stream, cutoff)? else {
        return Ok(0);
    };
    let removed = audit_store::count_through(&tx, stream, seq)?;
    let anchor = key.anchor(stream, seq, hash, removed, now);
    let deleted = audit_store::remove_through(&tx, &anchor)?;
    tx.commit()
        .map_err(StoreError::db("commit an audit retention transaction"))?;
    tracing::info!(%stream, through = seq, removed = deleted, "expired audit entries removed behind a signed anchor");
    Ok(deleted)
}

fn record_metrics(outcome: &RetentionOutcome) {
    metrics::counter!(RETENTION_RUNS, "outcome" => "ok").increment(1);
    for (kind, count) in [
        ("sessions", outcome.sessions),
        ("frames", outcome.frames),
        ("browser_credentials", outcome.browser_credentials),
        ("audit_entries", outcome.audit_entries.values().sum()),
    ] {
        metrics::counter!(RETENTION_DELETED, "kind" => kind).increment(count);
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
