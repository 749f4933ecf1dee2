//! The sealcast relay: an HTTPS and WebSocket server that fans sealed
//! transcript frames out from a clinician's device to patients' devices and
//! keeps them in a ciphertext-only store.
//!
//! The relay never has a session key. It routes on the frame header, gives
//! every accepted frame a gap-free per-session offset, sends it to followers
//! at once and acknowledges it to the publisher after the store commits it.
//! Followers resume from an offset with no gap or duplicate. The wire format
//! and the API contract live in `sealcast_protocol`; this crate is one
//! implementation of its relay side, with SQLite as the store.
//!
//! Entry points: [`start`] with a [`Config`] returns a [`RelayHandle`];
//! [`cli::main`] is the `sealcast-relay` binary.
//!
//! | module | job |
//! | --- | --- |
//! | `cli` | command line, logging setup, signals |
//! | `admin_cli` | the `admin` and `keys` commands: organizations, users, devices, at-rest keys |
//! | `at_rest` | encryption of stored frames and personal data under a wrapped data key |
//! | [`audit`] | hash-chained audit streams, signed checkpoints, export, retention |
//! | `config` | [`Config`] and [`Limits`] |
//! | [`settings`] | the configuration file, merged with environment variables and flags |
//! | `config_cli`, `serve_args` | the `config` command and the flags of `serve` |
//! | `demo` | the `demo` command: a session streaming the embedded sample |
//! | `server` | [`start`] and [`RelayHandle`] |
//! | `listener` | accept loop, connection cap, 503 over the cap, HTTP/1.1 |
//! | `handshake` | TLS handshakes under a deadline and a cap on concurrent handshakes |
//! | `tls` | rustls setup, development certificate, live certificate swap |
//! | `shutdown` | shutdown signal and task tracking |
//! | `accounts` | organizations, users, devices, tokens, staff sign-in |
//! | `credentials` | random tokens and their hashes |
//! | `http` | routes, authentication, errors, session and invite endpoints |
//! | `invites` | invite challenges, per-client rate limit, follow cookie |
//! | `pairing` | the in-memory pairing mailbox: slots, steps, expiry |
//! | `web` | the patient page at `/join`, embedded, with its security headers |
//! | `ws` | publish and follow sockets |
//! | `hub` | per-session ordering, ring of recent frames, follower queues |
//! | `store` | SQLite schema, group-commit writer thread, read pool |
//! | `metrics` | metric names and the Prometheus recorder |

pub mod accounts;
mod admin_cli;
pub mod at_rest;
pub mod audit;
pub mod cli;
pub mod config;
mod config_cli;
mod credentials;
mod db;
pub mod demo;
pub mod error;
mod fanout;
mod handshake;
mod http;
mod hub;
mod invites;
mod keys_cli;
mod listener;
pub mod metrics;
mod pairing;
mod serve_args;
mod server;
pub mod settings;
mod shutdown;
mod store;
mod store_args;
pub mod tls;
mod web;
mod ws;

pub use config::{AccountsConfig, AuditConfig, Config, Limits};
pub use db::DbError;
pub use error::RelayError;
pub use http::openapi::{document as openapi_document, routes as http_routes};
pub use server::{start, RelayHandle};
pub use store::StoreError;
