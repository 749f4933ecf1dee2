//! TLS client settings shared by HTTP requests and WebSockets.
//!
//! rustls with the ring provider, TLS 1.3 and 1.2 with rustls' default
//! (AEAD-only) cipher suites. The trusted roots are either the CA
//! certificates of one PEM file (`--ca-cert`, for a relay with a private or
//! self-signed certificate) or, without one, the Mozilla roots bundled by
//! `webpki-roots`. The two are never combined, so a relay started with a
//! private CA cannot be impersonated with a public certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

use crate::error::ClientError;

/// Trusted roots for connecting to a relay.
#[derive(Clone)]
pub struct TlsSettings {
    roots: Arc<RootCertStore>,
    source: Option<PathBuf>,
}

impl TlsSettings {
    /// Trusts the CA certificates in `ca_cert` when given, else the bundled Mozilla roots.
    pub fn new(ca_cert: Option<&Path>) -> Result<Self, ClientError> {
        match ca_cert {
            Some(path) => Self::from_ca_file(path),
            None => Ok(Self::public_roots()),
        }
    }

    /// Trusts the bundled Mozilla roots.
    pub fn public_roots() -> Self {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        TlsSettings {
            roots: Arc::new(roots),
            source: None,
        }
    }

    /// Trusts only the certificates in a PEM file.
    pub fn from_ca_file(path: &Path) -> Result<Self, ClientError> {
        let pem = std::fs::read(path).map_err(|err| ClientError::CaCertificate {
            path: path.to_path_buf(),
            reason: err.to_string(),
        })?;
        let roots = roots_from_pem(&pem).map_err(|reason| ClientError::CaCertificate {
            path: path.to_path_buf(),
            reason,
        })?;
        Ok(TlsSettings {
            roots: Arc::new(roots),
            source: Some(path.to_path_buf()),
        })
    }

    /// Trusts the certificates in PEM text, for callers that hold a certificate in memory.
    pub fn from_ca_pem(pem: &[u8]) -> Result<Self, ClientError> {
        let roots = roots_from_pem(pem).map_err(|reason| ClientError::CaCertificate {
            path: PathBuf::from("<memory>"),
            reason,
        })?;
        Ok(TlsSettings {
            roots: Arc::new(roots),
            source: None,
        })
    }

    /// Client configuration for HTTP requests, offering HTTP/2 and HTTP/1.1 by ALPN.
    pub fn http_config(&self) -> Result<ClientConfig, ClientError> {
        let mut config = self.base_config()?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }

    /// Client configuration for WebSockets, which need HTTP/1.1.
    pub fn websocket_config(&self) -> Result<Arc<ClientConfig>, ClientError> {
        let mut config = self.base_config()?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    fn base_config(&self) -> Result<ClientConfig, ClientError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|err| ClientError::Tls(err.to_string()))?
            .with_root_certificates(self.roots.clone())
            .with_no_client_auth();
        Ok(config)
    }
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("roots", &self.roots.len())
            .field("source", &self.source)
            .finish()
    }
}

fn roots_from_pem(pem: &[u8]) -> Result<RootCertStore, String> {
    let certificates: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<_, _>>()
        .map_err(|err| format!("the PEM text is malformed: {err}"))?;
    if certificates.is_empty() {
        return Err(
            "the file has no CERTIFICATE block: pass the relay's certificate in PEM format".into(),
        );
    }

    let mut roots = RootCertStore::empty();
    for certificate in certificates {
        roots
            .add(certificate)
            .map_err(|err| format!("a certificate is invalid: {err}"))?;
    }
    Ok(roots)
}

/// Finds a rustls certificate error inside an I/O error from a TLS handshake.
pub(crate) fn certificate_error(error: &std::io::Error) -> Option<String> {
    let inner = error.get_ref()?;
    match inner.downcast_ref::<rustls::Error>()? {
        rustls::Error::InvalidCertificate(reason) => Some(format!("{reason:?}")),
        rustls::Error::NoCertificatesPresented => Some("the relay sent no certificate".into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed_pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn pem_with_certificate_loads() {
        let settings = TlsSettings::from_ca_pem(self_signed_pem().as_bytes()).unwrap();
        assert_eq!(settings.roots.len(), 1);
        let config = settings.websocket_config().unwrap();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    #[test]
    fn pem_without_certificate_is_rejected() {
        let err = TlsSettings::from_ca_pem(b"not a certificate\n").unwrap_err();
        assert!(err.to_string().contains("no CERTIFICATE block"), "{err}");
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = TlsSettings::new(Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn public_roots_are_loaded() {
        assert!(TlsSettings::public_roots().roots.len() > 50);
        let config = TlsSettings::public_roots().http_config().unwrap();
        assert_eq!(config.alpn_protocols[0], b"h2".to_vec());
    }
}
