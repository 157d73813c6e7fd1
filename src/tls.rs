//! Optional TLS on the front door (`[server.tls] cert`, `key`: PEM files), with rustls and the
//! ring provider. The certificate is held behind a resolver that a reload replaces, so SIGHUP
//! picks up renewed files (e.g. from certbot) without dropping connections.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the certificate chain {path}: {problem}")]
    Cert { path: String, problem: String },
    #[error("cannot read the private key {path}: {problem}")]
    Key { path: String, problem: String },
    #[error("TLS setup failed: {0}")]
    Setup(String),
}

/// The certificate currently served; [`Certificates::reload`] swaps it.
#[derive(Debug)]
pub struct Certificates {
    current: ArcSwap<CertifiedKey>,
}

/// A certificate chain and its key, read and checked to belong together.
pub struct Checked(CertifiedKey);

fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let show = |p: &Path| p.display().to_string();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect())
        .map_err(|e| TlsError::Cert {
            path: show(cert),
            problem: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Cert {
            path: show(cert),
            problem: "no certificate in the file".into(),
        });
    }
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: show(key),
        problem: e.to_string(),
    })?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&der)
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing);
    // A renewed certificate with last year's key would be served and fail every handshake.
    certified.keys_match().map_err(|e| TlsError::Key {
        path: show(key),
        problem: format!(
            "the key does not belong to the certificate {}: {e}",
            show(cert)
        ),
    })?;
    Ok(certified)
}

impl Certificates {
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Self>, TlsError> {
        Ok(Arc::new(Self {
            current: ArcSwap::from_pointee(load(cert, key)?),
        }))
    }

    /// Read and check a certificate and its key without serving them (a reload checks every
    /// setting before it applies any).
    pub fn read(cert: &Path, key: &Path) -> Result<Checked, TlsError> {
        load(cert, key).map(Checked)
    }

    /// Serve a certificate [`Self::read`] accepted.
    pub fn install(&self, checked: Checked) {
        self.current.store(Arc::new(checked.0));
    }

    pub fn server_config(self: &Arc<Self>) -> Result<ServerConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}
