//! Errors that stop the relay from starting or reloading its certificate.
//!
//! Errors of a single request or socket never end up here: they close that
//! connection only. The store has its own [`crate::store::StoreError`].

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use thiserror::Error;

use crate::at_rest::AtRestError;
use crate::store::StoreError;

/// A failure to start the relay or reload its certificate.
#[derive(Debug, Error)]
pub enum RelayError {
    /// The data directory could not be created or secured.
    #[error("failed to prepare data directory {path}: {source}: check its permissions or pass another --data-dir")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// Only one of the certificate and key paths was given.
    #[error(
        "--tls-cert and --tls-key must be given together, or neither for a development certificate"
    )]
    IncompleteTlsConfig,
    /// A certificate or key file could not be read or written.
    #[error("failed to access TLS file {path}: {source}")]
    TlsFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A certificate file contains no certificate.
    #[error("no PEM certificate found in {path}: expected a -----BEGIN CERTIFICATE----- block")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A key file contains no private key.
    #[error("no PEM private key found in {path}: expected a PKCS#8, PKCS#1 or SEC1 key block")]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// rustls rejected the certificate, the key or the protocol setup.
    #[error("invalid TLS configuration: {0}: check that the key matches the certificate")]
    Tls(#[from] rustls::Error),
    /// The development certificate could not be generated.
    #[error("failed to generate the development certificate: {0}")]
    DevCertificate(#[from] rcgen::Error),
    /// The NATS connection of `fanout = "nats"` could not be set up.
    #[error("failed to set up the NATS connection: {0}: check nats_url")]
    Fanout(String),
    /// A limit is out of range or inconsistent with another.
    #[error("invalid setting {name}: {reason}")]
    InvalidLimit {
        /// The key path in the configuration file, such as `limits.max_connections`.
        name: &'static str,
        /// The problem and the fix.
        reason: String,
    },
    /// `--public-url` is not an http or https URL.
    #[error("invalid public URL {0:?}: it must start with https:// (or http:// behind a proxy)")]
    PublicUrl(String),
    /// The listening socket could not be bound.
    #[error("failed to listen on {addr}: {source}: choose another --listen address or port")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: io::Error,
    },
    /// The ops listener's socket could not be bound.
    #[error("failed to listen on {addr} for /healthz, /readyz and /metrics: {source}: choose another ops_listen address or port")]
    BindOps {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: io::Error,
    },
    /// The store could not be opened or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The at-rest key configuration is invalid.
    #[error(transparent)]
    AtRest(#[from] AtRestError),
    /// The audit key or audit log could not be set up.
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    /// Sign-in mail cannot be set up.
    #[error("failed to set up sign-in mail: {0}")]
    Mail(String),
    /// The node's audit key is not the one that signed the store's checkpoints.
    #[error("{0}")]
    AuditKeyMismatch(String),
}
