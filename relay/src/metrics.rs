//! Metric names and the process-wide Prometheus recorder.
//!
//! Every name starts with `sealcast_`; counters end in `_total`, durations in
//! `_seconds` and sizes in `_bytes`. `GET /metrics` renders them.

use std::sync::{LazyLock, OnceLock};
use std::time::Duration;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, Counter, Gauge, Unit,
};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

/// Open connections, label `role`: `http` for connections serving HTTP,
/// `publisher` and `follower` for WebSockets upgraded from them.
pub const CONNECTIONS_ACTIVE: &str = "sealcast_connections_active";
/// Connections dropped before serving, label `reason`: `over_capacity`
/// (sent a 503 with `Retry-After`), `over_capacity_dropped` (closed at once
/// because too many 503s were in progress), `tls_handshake_failed`,
/// `tls_handshake_aborted`, `tls_handshake_timeout`,
/// `tls_handshake_slots_busy`, `http_parse_failed` and `http_header_timeout`.
pub const CONNECTIONS_REJECTED: &str = "sealcast_connections_rejected_total";
/// TLS handshakes past their ClientHello that hold one of the
/// `max_handshakes` slots.
pub const TLS_HANDSHAKES_ACTIVE: &str = "sealcast_tls_handshakes_active";
/// Binary messages received on publish sockets.
pub const FRAMES_RECEIVED: &str = "sealcast_frames_received_total";
/// Frames given an offset and handed to the store.
pub const FRAMES_ACCEPTED: &str = "sealcast_frames_accepted_total";
/// Resent frames dropped as duplicates of a stored (stream, sequence number).
pub const FRAMES_DUPLICATE: &str = "sealcast_frames_duplicate_total";
/// Publish-socket messages rejected, label `reason`.
pub const FRAMES_REJECTED: &str = "sealcast_frames_rejected_total";
/// Frames sent to followers.
pub const FRAMES_DELIVERED: &str = "sealcast_frames_delivered_total";
/// Interim frames skipped for followers whose queue is past half full.
pub const FRAMES_SKIPPED: &str = "sealcast_frames_skipped_total";
/// Bytes of binary messages received on publish sockets.
pub const BYTES_RECEIVED: &str = "sealcast_bytes_received_total";
/// Bytes of binary messages sent to followers.
pub const BYTES_DELIVERED: &str = "sealcast_bytes_delivered_total";
/// 1 while the node's NATS connection is up, 0 while it is down. Exported
/// only with `fanout = "nats"`.
pub const FANOUT_CONNECTED: &str = "sealcast_fanout_connected";
/// Connections to NATS made, the first one included.
pub const FANOUT_CONNECTIONS: &str = "sealcast_fanout_connections_total";
/// Messages published to other nodes, label `event`: `frame`, `end`,
/// `publisher`, `device_removed`.
pub const FANOUT_PUBLISHED: &str = "sealcast_fanout_published_total";
/// Messages not published, label `reason`: `outbox_full` or `nats`. The
/// other nodes read such frames from the store.
pub const FANOUT_PUBLISH_FAILURES: &str = "sealcast_fanout_publish_failures_total";
/// Messages received from other nodes, label `event`.
pub const FANOUT_RECEIVED: &str = "sealcast_fanout_received_total";
/// Received messages dropped, and messages NATS dropped for this node,
/// label `reason`: `unknown_subject`, `unknown_event`, `bad_mac`,
/// `malformed` or `slow_consumer`.
pub const FANOUT_REJECTED: &str = "sealcast_fanout_rejected_total";
/// Frames of other nodes read from the store instead of NATS, label
/// `trigger`: `gap`, `reconnect`, `idle`, `load` or `publisher`.
pub const FANOUT_CATCH_UP_FRAMES: &str = "sealcast_fanout_catch_up_frames_total";
/// Time from the start of a store transaction to its COMMIT returning.
pub const STORE_COMMIT_SECONDS: &str = "sealcast_store_commit_seconds";
/// Writes committed together in one transaction.
pub const STORE_COMMIT_BATCH_WRITES: &str = "sealcast_store_commit_batch_writes";
/// Time a WAL checkpoint took, label `mode`: `passive` or `restart`.
pub const STORE_CHECKPOINT_SECONDS: &str = "sealcast_store_checkpoint_seconds";
/// WAL checkpoints that failed, label `mode`.
pub const STORE_CHECKPOINT_FAILURES: &str = "sealcast_store_checkpoint_failures_total";
/// Size of the WAL file after the last checkpoint.
pub const STORE_WAL_BYTES: &str = "sealcast_store_wal_bytes";
/// Store transactions that failed to commit, label `reason`: `disk_full`,
/// `locked`, `io_error` or `other`. No write of such a transaction is
/// acknowledged.
pub const STORE_COMMIT_FAILURES: &str = "sealcast_store_commit_failures_total";
/// Stored values and frames that failed at-rest decryption, label `column`
/// (`table.column`). Each means the database was altered or a row was moved.
pub const STORE_AT_REST_FAILURES: &str = "sealcast_store_at_rest_failures_total";
/// Store writes that failed, label `reason`. Every write of a failed
/// transaction counts with the transaction's reason (`disk_full`, `locked`,
/// `io_error`, `other`). A write refused inside a committed transaction counts
/// as `rejected`, for example a frame whose offset does not follow the stored
/// ones.
pub const STORE_WRITE_FAILURES: &str = "sealcast_store_write_failures_total";
/// Followers moved from live fan-out to catch-up from the store.
pub const FOLLOWERS_DETACHED: &str = "sealcast_followers_detached_total";
/// Followers closed because they could not keep up.
pub const FOLLOWERS_LAGGED: &str = "sealcast_followers_lagged_total";
/// Bytes of frames waiting in all follower queues.
pub const FOLLOWER_QUEUE_BYTES: &str = "sealcast_follower_queue_bytes";
/// Requests with a missing, invalid or forbidden credential, labels
/// `endpoint` and `reason`.
pub const AUTH_FAILURES: &str = "sealcast_auth_failures_total";
/// Invite challenges issued.
pub const INVITE_CHALLENGES: &str = "sealcast_invite_challenges_total";
/// Invite redemptions that succeeded, label `kind`: `new` for a browser that
/// took a place, `renewed` for one that presented its valid follow cookie.
pub const INVITES_REDEEMED: &str = "sealcast_invites_redeemed_total";
/// Invite challenge and redemption requests refused, label `reason`, for
/// example `bad_proof`, `rate_limited` or `browsers_exhausted`.
pub const INVITE_FAILURES: &str = "sealcast_invite_failures_total";
/// Pairing steps the mailbox accepted, label `step`: `open`, `commitment`,
/// `clinician_key`, `joiner_key`, `wrapped_key`, `cancel`.
pub const PAIRING_STEPS: &str = "sealcast_pairing_steps_total";
/// Pairing requests refused, label `reason`, for example `out_of_order`,
/// `expired`, `already_joined` or `invalid_length`.
pub const PAIRING_FAILURES: &str = "sealcast_pairing_failures_total";
/// Follow sockets of removed paired devices that the relay closed, label
/// `trigger`: `removal` when the device was removed through this node,
/// `fanout` when another node announced the removal.
pub const PAIRED_SOCKETS_CLOSED: &str = "sealcast_paired_sockets_closed_total";
/// Sessions created.
pub const SESSIONS_CREATED: &str = "sealcast_sessions_created_total";
/// Sessions ended.
pub const SESSIONS_ENDED: &str = "sealcast_sessions_ended_total";
/// HTTP requests, labels `route` and `status`.
pub const HTTP_REQUESTS: &str = "sealcast_http_requests_total";
/// WebSockets closed by the relay, labels `role` and `code`.
pub const WEBSOCKET_CLOSES: &str = "sealcast_websocket_closes_total";
/// Certificate reloads on SIGHUP, label `result`: `ok`, or `failed` when the
/// files could not be read or do not form a valid pair and the relay kept
/// serving the certificate it had.
pub const TLS_RELOADS: &str = "sealcast_tls_reloads_total";
/// Peers that broke the WebSocket protocol (RFC 6455), label `role`.
pub const WEBSOCKET_PROTOCOL_ERRORS: &str = "sealcast_websocket_protocol_errors_total";

/// Latency buckets in seconds, from 100 µs to 10 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Batch size buckets, in writes per transaction.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0,
];

/// Interval of histogram upkeep, which bounds memory when `/metrics` is not scraped.
pub(crate) const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

static FRAME_METRICS: OnceLock<FrameMetrics> = OnceLock::new();

/// Handles of the metrics that change with every frame, registered once so
/// that the frame path skips the recorder's lookup by name.
pub(crate) struct FrameMetrics {
    /// [`FRAMES_RECEIVED`].
    pub(crate) received: Counter,
    /// [`BYTES_RECEIVED`].
    pub(crate) bytes_received: Counter,
    /// [`FRAMES_ACCEPTED`].
    pub(crate) accepted: Counter,
    /// [`FRAMES_DELIVERED`].
    pub(crate) delivered: Counter,
    /// [`BYTES_DELIVERED`].
    pub(crate) bytes_delivered: Counter,
    /// [`FRAMES_SKIPPED`].
    pub(crate) skipped: Counter,
    /// [`FOLLOWER_QUEUE_BYTES`].
    pub(crate) queue_bytes: Gauge,
}

impl FrameMetrics {
    fn register() -> Self {
        FrameMetrics {
            received: counter!(FRAMES_RECEIVED),
            bytes_received: counter!(BYTES_RECEIVED),
            accepted: counter!(FRAMES_ACCEPTED),
            delivered: counter!(FRAMES_DELIVERED),
            bytes_delivered: counter!(BYTES_DELIVERED),
            skipped: counter!(FRAMES_SKIPPED),
            queue_bytes: gauge!(FOLLOWER_QUEUE_BYTES),
        }
    }

    fn noop() -> Self {
        FrameMetrics {
            received: Counter::noop(),
            bytes_received: Counter::noop(),
            accepted: Counter::noop(),
            delivered: Counter::noop(),
            bytes_delivered: Counter::noop(),
            skipped: Counter::noop(),
            queue_bytes: Gauge::noop(),
        }
    }
}

/// Returns the frame path's metric handles. Before [`install`] has run they
/// record nothing, as the relay has no recorder yet.
pub(crate) fn frame_metrics() -> &'static FrameMetrics {
    static NOOP: LazyLock<FrameMetrics> = LazyLock::new(FrameMetrics::noop);
    match HANDLE.get() {
        Some(_) => FRAME_METRICS.get_or_init(FrameMetrics::register),
        None => &NOOP,
    }
}

/// Installs the Prometheus recorder for this process, or returns the one an
/// earlier relay in the same process installed.
///
/// When another recorder already owns the process, the relay still serves
/// `/metrics` from a recorder of its own, which then stays empty.
pub(crate) fn install() -> PrometheusHandle {
    HANDLE.get_or_init(build_and_install).clone()
}

fn build_and_install() -> PrometheusHandle {
    let installed = builder()
        .and_then(PrometheusBuilder::install_recorder)
        .map_err(|error| error.to_string());
    let handle = installed.unwrap_or_else(|error| {
        tracing::warn!(%error, "failed to install the metrics recorder: /metrics stays empty");
        PrometheusBuilder::new().build_recorder().handle()
    });
    describe();
    initialize_series();
    handle
}

/// Label values of the series that [`initialize_series`] exports at zero.
/// They mirror the values the call sites use.
const CONNECTION_ROLES: [&str; 3] = ["http", "publisher", "follower"];
const REJECTED_CONNECTION_REASONS: [&str; 5] = [
    "over_capacity",
    "tls_handshake_failed",
    "tls_handshake_timeout",
    "http_parse_failed",
    "http_header_timeout",
];
const REJECTED_FRAME_REASONS: [&str; 7] = [
    "malformed",
    "unsupported_version",
    "wrong_session",
    "sequence_gap",
    "session_ended",
    "text_message",
    "too_big",
];
const INVITE_FAILURE_REASONS: [&str; 9] = [
    "malformed",
    "not_json",
    "rate_limited",
    "challenges_full",
    "unknown_invite",
    "no_verifier",
    "session_ended",
    "browsers_exhausted",
    "bad_proof",
];

/// Exports every unlabelled counter and gauge, and the failure counters whose
/// label values form a small fixed set, at zero from the start. Alerts on
/// `increase()` and dashboards then see a series before the first event
/// instead of none.
fn initialize_series() {
    let counters = [
        FRAMES_RECEIVED,
        FRAMES_ACCEPTED,
        FRAMES_DUPLICATE,
        FRAMES_DELIVERED,
        FRAMES_SKIPPED,
        BYTES_RECEIVED,
        BYTES_DELIVERED,
        STORE_COMMIT_FAILURES,
        STORE_WRITE_FAILURES,
        FOLLOWERS_DETACHED,
        FOLLOWERS_LAGGED,
        INVITE_CHALLENGES,
        SESSIONS_CREATED,
        SESSIONS_ENDED,
        REFRESH_REUSE,
        AUDIT_WRITE_FAILURES,
    ];
    for name in counters {
        counter!(name).increment(0);
    }

    gauge!(FOLLOWER_QUEUE_BYTES).increment(0.0);
    for role in CONNECTION_ROLES {
        gauge!(CONNECTIONS_ACTIVE, "role" => role).increment(0.0);
    }

    for reason in REJECTED_CONNECTION_REASONS {
        counter!(CONNECTIONS_REJECTED, "reason" => reason).increment(0);
    }
    for reason in REJECTED_FRAME_REASONS {
        counter!(FRAMES_REJECTED, "reason" => reason).increment(0);
    }
    for reason in INVITE_FAILURE_REASONS {
        counter!(INVITE_FAILURES, "reason" => reason).increment(0);
    }
    for role in ["publisher", "follower"] {
        counter!(WEBSOCKET_PROTOCOL_ERRORS, "role" => role).increment(0);
    }
    for mode in ["passive", "restart"] {
        counter!(STORE_CHECKPOINT_FAILURES, "mode" => mode).increment(0);
    }
    for outcome in ["ok", "failed"] {
        counter!(RETENTION_RUNS, "outcome" => outcome).increment(0);
    }
    for stream in ["application", "admin"] {
        counter!(AUDIT_ENTRIES, "stream" => stream).increment(0);
        counter!(AUDIT_CHECKPOINTS, "stream" => stream).increment(0);
    }
    for kind in ["new", "renewed"] {
        counter!(INVITES_REDEEMED, "kind" => kind).increment(0);
    }
    for kind in ["sessions", "frames", "browser_credentials", "audit_entries"] {
        counter!(RETENTION_DELETED, "kind" => kind).increment(0);
    }
    for trigger in ["admin_route", "recheck"] {
        counter!(SOCKETS_REVOKED, "trigger" => trigger).increment(0);
    }
    for trigger in ["removal", "fanout"] {
        counter!(PAIRED_SOCKETS_CLOSED, "trigger" => trigger).increment(0);
    }

    counter!(FANOUT_CONNECTIONS).increment(0);
    for event in ["frame", "end", "publisher", "device_removed"] {
        counter!(FANOUT_PUBLISHED, "event" => event).increment(0);
        counter!(FANOUT_RECEIVED, "event" => event).increment(0);
    }
    for reason in ["outbox_full", "nats"] {
        counter!(FANOUT_PUBLISH_FAILURES, "reason" => reason).increment(0);
    }
    for reason in [
        "unknown_subject",
        "unknown_event",
        "bad_mac",
        "malformed",
        "slow_consumer",
    ] {
        counter!(FANOUT_REJECTED, "reason" => reason).increment(0);
    }
    for trigger in ["gap", "reconnect", "idle", "load", "publisher"] {
        counter!(FANOUT_CATCH_UP_FRAMES, "trigger" => trigger).increment(0);
    }

    counter!(RATE_LIMITED, "endpoint" => "any", "scope" => "failed_credentials").increment(0);
    // The frame reader's own label; other columns appear on their first failure.
    counter!(STORE_AT_REST_FAILURES, "column" => "frames.frame").increment(0);
}

fn builder() -> Result<PrometheusBuilder, BuildError> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)?
        .set_buckets_for_metric(
            Matcher::Full(STORE_COMMIT_BATCH_WRITES.into()),
            BATCH_BUCKETS,
        )
}

fn describe() {
    describe_gauge!(CONNECTIONS_ACTIVE, "Open connections by role.");
    describe_counter!(
        CONNECTIONS_REJECTED,
        "Connections dropped before serving, by reason."
    );
    describe_gauge!(
        TLS_HANDSHAKES_ACTIVE,
        "TLS handshakes holding a handshake slot."
    );

    describe_counter!(FRAMES_RECEIVED, "Binary messages received from publishers.");
    describe_counter!(
        FRAMES_ACCEPTED,
        "Frames given an offset and handed to the store."
    );
    describe_counter!(FRAMES_DUPLICATE, "Resent frames dropped as duplicates.");
    describe_counter!(FRAMES_REJECTED, "Publisher messages rejected, by reason.");
    describe_counter!(FRAMES_DELIVERED, "Frames sent to followers.");
    describe_counter!(
        FRAMES_SKIPPED,
        "Interim frames skipped for lagging followers."
    );

    describe_counter!(
        BYTES_RECEIVED,
        Unit::Bytes,
        "Bytes received from publishers."
    );
    describe_counter!(BYTES_DELIVERED, Unit::Bytes, "Bytes sent to followers.");

    describe_histogram!(
        STORE_COMMIT_SECONDS,
        Unit::Seconds,
        "Store transaction latency."
    );
    describe_histogram!(STORE_COMMIT_BATCH_WRITES, "Writes per store transaction.");
    describe_counter!(
        STORE_COMMIT_FAILURES,
        "Store transactions that failed, by reason."
    );
    describe_histogram!(
        STORE_CHECKPOINT_SECONDS,
        Unit::Seconds,
        "WAL checkpoint time, by mode."
    );
    describe_counter!(
        STORE_CHECKPOINT_FAILURES,
        "WAL checkpoints that failed, by mode."
    );
    describe_gauge!(
        STORE_WAL_BYTES,
        Unit::Bytes,
        "WAL file size after the last checkpoint."
    );
    describe_counter!(STORE_WRITE_FAILURES, "Store writes that failed, by reason.");
    describe_counter!(
        STORE_AT_REST_FAILURES,
        "Stored values that failed at-rest decryption, by table and column."
    );

    describe_gauge!(FANOUT_CONNECTED, "1 while the NATS connection is up.");
    describe_counter!(FANOUT_CONNECTIONS, "Connections to NATS made.");
    describe_counter!(
        FANOUT_PUBLISHED,
        "Messages published to other nodes, by event."
    );
    describe_counter!(
        FANOUT_PUBLISH_FAILURES,
        "Messages to other nodes not published, by reason."
    );
    describe_counter!(
        FANOUT_RECEIVED,
        "Messages received from other nodes, by event."
    );
    describe_counter!(
        FANOUT_REJECTED,
        "Messages from other nodes dropped, by reason."
    );
    describe_counter!(
        FANOUT_CATCH_UP_FRAMES,
        "Frames of other nodes read from the store, by trigger."
    );

    describe_counter!(
        FOLLOWERS_DETACHED,
        "Followers switched to catch-up from the store."
    );
    describe_counter!(TLS_RELOADS, "Certificate reloads, by result.");
    describe_counter!(FOLLOWERS_LAGGED, "Followers closed for falling behind.");
    describe_gauge!(
        FOLLOWER_QUEUE_BYTES,
        Unit::Bytes,
        "Bytes waiting in follower queues."
    );

    describe_counter!(
        AUTH_FAILURES,
        "Requests with a missing or invalid credential."
    );
    describe_counter!(INVITE_CHALLENGES, "Invite challenges issued.");
    describe_counter!(INVITES_REDEEMED, "Invite redemptions, new or renewed.");
    describe_counter!(
        INVITE_FAILURES,
        "Invite challenge and redemption requests refused, by reason."
    );
    describe_counter!(PAIRING_STEPS, "Pairing steps accepted, by step.");
    describe_counter!(PAIRING_FAILURES, "Pairing requests refused, by reason.");
    describe_counter!(
        PAIRED_SOCKETS_CLOSED,
        "Follow sockets of removed paired devices closed, by trigger."
    );
    describe_counter!(SESSIONS_CREATED, "Sessions created.");
    describe_counter!(SESSIONS_ENDED, "Sessions ended.");
    describe_counter!(HTTP_REQUESTS, "HTTP requests by route and status.");
    describe_counter!(
        WEBSOCKET_CLOSES,
        "WebSockets closed by the relay, by role and code."
    );
    describe_counter!(
        WEBSOCKET_PROTOCOL_ERRORS,
        "Peers that broke the WebSocket protocol, by role."
    );
}

/// Counts one open connection of a role in [`CONNECTIONS_ACTIVE`] until dropped.
#[derive(Debug)]
pub(crate) struct ActiveConnection {
    role: &'static str,
}

impl ActiveConnection {
    /// Increments the gauge for `role`.
    pub(crate) fn open(role: &'static str) -> Self {
        gauge!(CONNECTIONS_ACTIVE, "role" => role).increment(1.0);
        ActiveConnection { role }
    }
}

impl Drop for ActiveConnection {
    fn drop(&mut self) {
        gauge!(CONNECTIONS_ACTIVE, "role" => self.role).decrement(1.0);
    }
}

// Accounts and staff sign-in.

/// Refresh tokens presented again after use. Each revokes its sign-in.
pub const REFRESH_REUSE: &str = "sealcast_refresh_token_reuse_total";
/// Requests refused by a rate limit, labels `endpoint` and `scope` (`ip` or
/// `account`, or `failed_credentials` with `endpoint` `any` for a client
/// blocked after too many 401 responses).
pub const RATE_LIMITED: &str = "sealcast_rate_limited_total";
/// Sign-in steps, labels `step` (`started`, `confirmed`, `approved`,
/// `second_factor`, `refreshed`) and `outcome` (`ok` or a failure reason).
pub const SIGN_INS: &str = "sealcast_sign_ins_total";
/// Staff sockets closed because their device or user was revoked, label
/// `trigger` (`admin_route` or `recheck`).
pub const SOCKETS_REVOKED: &str = "sealcast_sockets_revoked_total";

/// Describes the accounts metrics, once when accounts are opened.
pub(crate) fn describe_accounts() {
    describe_counter!(
        REFRESH_REUSE,
        "Refresh tokens used twice; each revokes its sign-in."
    );
    describe_counter!(
        RATE_LIMITED,
        "Requests refused by a rate limit, by endpoint and scope."
    );
    describe_counter!(SIGN_INS, "Sign-in steps by step and outcome.");
    describe_counter!(
        SOCKETS_REVOKED,
        "Staff sockets closed because their credential was revoked."
    );
}

// Audit log and retention.

/// Audit entries appended, label `stream`.
pub const AUDIT_ENTRIES: &str = "sealcast_audit_entries_total";
/// Audit events that could not be appended after every retry.
pub const AUDIT_WRITE_FAILURES: &str = "sealcast_audit_write_failures_total";
/// Audit checkpoints signed, label `stream`.
pub const AUDIT_CHECKPOINTS: &str = "sealcast_audit_checkpoints_total";
/// Retention runs, label `outcome` (`ok` or `failed`).
pub const RETENTION_RUNS: &str = "sealcast_retention_runs_total";
/// Rows deleted by retention runs, label `kind` (`sessions`, `frames`,
/// `browser_credentials`, `audit_entries`).
pub const RETENTION_DELETED: &str = "sealcast_retention_deleted_total";

/// Describes the audit and retention metrics, once when the audit log starts.
pub(crate) fn describe_audit() {
    describe_counter!(AUDIT_ENTRIES, "Audit entries appended, by stream.");
    describe_counter!(
        AUDIT_WRITE_FAILURES,
        "Audit events that could not be appended after every retry."
    );
    describe_counter!(AUDIT_CHECKPOINTS, "Audit checkpoints signed, by stream.");
    describe_counter!(RETENTION_RUNS, "Retention runs, by outcome.");
    describe_counter!(
        RETENTION_DELETED,
        "Rows deleted by retention runs, by kind."
    );
}
