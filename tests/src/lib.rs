//! Helpers for sealcast's end-to-end tests: spawning the real `sealcast-relay`
//! and `sealcast` binaries (with line-by-line output for the CLI), locating
//! the real transcripts, and scanning
//! files and logs for material that must never appear in them. Tests of bad
//! input also use raw TLS and WebSocket clients, direct edits of a stopped
//! relay's store, metrics scrapes and the relay's resident memory. Pairing
//! tests put a proxy that swaps public keys between a device and the relay. Audit
//! tests read and tamper with the audit tables and run the audit commands.
//! Authorship tests put a proxy that withholds a stream's last frames
//! between a follower and the relay.
//! Tests that play both people of a pairing drive `sealcast` processes line
//! by line.
//! Tests of hostile networks open many slow or half-finished connections.
//! Cluster tests run several relay nodes on one data directory, with a NATS
//! server of their own and a TCP load balancer in front.
//!
//! The tests themselves live in `tests/tests/`, one file per behaviour.

// This crate exists only to support tests, where a failed step must stop
// the test with a message, so panicking helpers are the right tool.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod audit;
pub mod balancer;
pub mod blackhole;
pub mod cli;
pub mod cluster;
pub mod cluster_clinician;
pub mod database;
pub mod faults;
pub mod forwarding_proxy;
pub mod key_swap_proxy;
pub mod leaks;
pub mod memory;
pub mod metrics;
pub mod nats;
pub mod postgres_server;
pub mod process;
pub mod raw_socket;
pub mod raw_tls;
pub mod sample;
pub mod session;
pub mod slow_peer;
pub mod smtp_sink;
pub mod staff;
pub mod store;
pub mod store_fault;
pub mod streaming;
pub mod transcripts;
pub mod wire_socket;
pub mod withholding_proxy;
