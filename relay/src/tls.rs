//! TLS setup: rustls 0.23 with the ring provider, TLS 1.3 and 1.2, ALPN
//! `http/1.1`, and the certificate behind a resolver that can swap it live.
//!
//! Without configured files the relay makes a self-signed development
//! certificate for `localhost`, `127.0.0.1` and `::1` on first start and keeps
//! it in the data directory as `dev-cert.pem` and `dev-key.pem` (mode 0600).

use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::io::{BufReader, Write as _};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use sha2::{Digest, Sha256};
use tokio_rustls::TlsAcceptor;
use zeroize::Zeroizing;

use crate::config::Config;
use crate::error::RelayError;
use crate::metrics::TLS_RELOADS;

/// File name of the development certificate in the data directory.
pub const DEV_CERT_FILE: &str = "dev-cert.pem";
/// File name of the development certificate's private key in the data directory.
pub const DEV_KEY_FILE: &str = "dev-key.pem";

/// Names the development certificate is valid for.
const DEV_CERT_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Paths of the certificate and key, and whether they are the development certificate.
#[derive(Debug, Clone)]
pub(crate) struct CertSource {
    cert: PathBuf,
    key: PathBuf,
    development: bool,
}

impl CertSource {
    /// Picks the configured files, or the development certificate's files.
    pub(crate) fn from_config(config: &Config) -> Result<CertSource, RelayError> {
        match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Ok(CertSource {
                cert: cert.clone(),
                key: key.clone(),
                development: false,
            }),
            (None, None) => Ok(CertSource {
                cert: config.data_dir.join(DEV_CERT_FILE),
                key: config.data_dir.join(DEV_KEY_FILE),
                development: true,
            }),
            _ => Err(RelayError::IncompleteTlsConfig),
        }
    }

    /// Reads the certificate and key, first making the development certificate if needed.
    pub(crate) fn load(&self, provider: &CryptoProvider) -> Result<Arc<CertifiedKey>, RelayError> {
        if self.development && !(self.cert.exists() && self.key.exists()) {
            write_dev_certificate(&self.cert, &self.key)?;
        }
        let chain = read_certificates(&self.cert)?;
        let key = read_private_key(&self.key)?;
        let certified = CertifiedKey::from_der(chain, key, provider)?;

        let fingerprint = certified
            .cert
            .first()
            .map(|leaf| sha256_fingerprint(leaf))
            .unwrap_or_default();
        tracing::info!(
            path = %self.cert.display(),
            development = self.development,
            sha256 = %fingerprint,
            "TLS certificate loaded"
        );
        Ok(Arc::new(certified))
    }
}

/// Serves the current certificate to every handshake and lets it be replaced.
#[derive(Debug)]
pub(crate) struct CertResolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertResolver {
    fn new(certified: Arc<CertifiedKey>) -> Self {
        CertResolver {
            current: RwLock::new(certified),
        }
    }

    /// Uses `certified` for every later handshake.
    pub(crate) fn replace(&self, certified: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = certified;
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(PoisonError::into_inner),
        ))
    }
}

/// The TLS acceptor with what is needed to reload its certificate.
pub(crate) struct Tls {
    pub(crate) acceptor: TlsAcceptor,
    pub(crate) resolver: Arc<CertResolver>,
    pub(crate) source: CertSource,
    pub(crate) provider: Arc<CryptoProvider>,
}

impl Tls {
    /// Loads the certificate and builds the server configuration.
    pub(crate) fn setup(config: &Config) -> Result<Tls, RelayError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let source = CertSource::from_config(config)?;
        let resolver = Arc::new(CertResolver::new(source.load(&provider)?));

        let mut server = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        server.alpn_protocols = vec![b"http/1.1".to_vec()];

        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            resolver,
            source,
            provider,
        })
    }

    /// Reads the certificate files again and serves them from the next
    /// handshake on. When they cannot be read, or the key does not match the
    /// certificate, the current certificate stays in place. Either way the
    /// outcome is counted in [`TLS_RELOADS`].
    pub(crate) fn reload(&self) -> Result<(), RelayError> {
        match self.source.load(&self.provider) {
            Ok(certified) => {
                self.resolver.replace(certified);
                metrics::counter!(TLS_RELOADS, "result" => "ok").increment(1);
                Ok(())
            }
            Err(error) => {
                metrics::counter!(TLS_RELOADS, "result" => "failed").increment(1);
                Err(error)
            }
        }
    }
}

fn write_dev_certificate(cert_path: &Path, key_path: &Path) -> Result<(), RelayError> {
    let key_pair = KeyPair::generate()?;
    let names: Vec<String> = DEV_CERT_NAMES.iter().map(|name| name.to_string()).collect();
    let mut params = CertificateParams::new(names)?;
    let mut subject = DistinguishedName::new();
    subject.push(DnType::CommonName, "sealcast relay development certificate");
    params.distinguished_name = subject;
    let cert = params.self_signed(&key_pair)?;

    let key_pem = Zeroizing::new(key_pair.serialize_pem());
    write_file(key_path, key_pem.as_bytes(), 0o600)?;
    write_file(cert_path, cert.pem().as_bytes(), 0o644)?;
    tracing::info!(path = %cert_path.display(), "made a self-signed development certificate");
    Ok(())
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), RelayError> {
    let error = |source| RelayError::TlsFile {
        path: path.to_path_buf(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(error)?;
    // The mode above applies only to a new file: tighten an existing one too.
    fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode)).map_err(error)?;
    file.write_all(contents).map_err(error)?;
    file.sync_all().map_err(error)
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, RelayError> {
    let file = fs::File::open(path).map_err(|source| RelayError::TlsFile {
        path: path.to_path_buf(),
        source,
    })?;
    let chain = rustls_pemfile::certs(&mut BufReader::new(file))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| RelayError::TlsFile {
            path: path.to_path_buf(),
            source,
        })?;
    if chain.is_empty() {
        return Err(RelayError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(chain)
}

fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, RelayError> {
    let file = fs::File::open(path).map_err(|source| RelayError::TlsFile {
        path: path.to_path_buf(),
        source,
    })?;
    rustls_pemfile::private_key(&mut BufReader::new(file))
        .map_err(|source| RelayError::TlsFile {
            path: path.to_path_buf(),
            source,
        })?
        .ok_or_else(|| RelayError::NoPrivateKey {
            path: path.to_path_buf(),
        })
}

/// SHA-256 of a DER certificate as colon-separated uppercase hex, the form
/// browsers and `openssl x509 -fingerprint -sha256` show.
pub(crate) fn sha256_fingerprint(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    let mut text = String::with_capacity(digest.len() * 3);
    for (index, byte) in digest.iter().enumerate() {
        if index > 0 {
            text.push(':');
        }
        let _ = write!(text, "{byte:02X}");
    }
    text
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn dev_config(dir: &Path) -> Config {
        Config {
            data_dir: dir.to_path_buf(),
            ..Config::default()
        }
    }

    #[test]
    fn dev_certificate_made_once_with_private_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let config = dev_config(dir.path());
        let provider = rustls::crypto::ring::default_provider();
        let source = CertSource::from_config(&config).unwrap();

        let first = source.load(&provider).unwrap();
        let second = source.load(&provider).unwrap();
        assert_eq!(first.cert, second.cert);

        let mode = fs::metadata(dir.path().join(DEV_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn half_configured_tls_is_rejected() {
        let config = Config {
            tls_cert: Some(PathBuf::from("cert.pem")),
            ..Config::default()
        };
        assert!(matches!(
            CertSource::from_config(&config),
            Err(RelayError::IncompleteTlsConfig)
        ));
    }

    #[test]
    fn missing_key_block_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.pem");
        fs::write(&path, "no pem here").unwrap();
        assert!(matches!(
            read_private_key(&path),
            Err(RelayError::NoPrivateKey { .. })
        ));
        assert!(matches!(
            read_certificates(&path),
            Err(RelayError::NoCertificate { .. })
        ));
    }

    #[test]
    fn fingerprint_format() {
        let text = sha256_fingerprint(b"abc");
        assert_eq!(text.len(), 32 * 3 - 1);
        assert!(text.starts_with("BA:78:16:BF"));
    }
}
