//! The gateway's own TLS certificate, swappable at run time: a SIGHUP reads the files again
//! and new handshakes use the new certificate, while open connections keep theirs.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {file}: {error}")]
    Read { file: String, error: std::io::Error },
    #[error("{file}: {message}")]
    Bad { file: String, message: String },
}

/// Read and check a certificate chain and its key: the chain must parse, the key must be a
/// key rustls can sign with, and the two must belong together.
pub fn load(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|error| TlsError::Read {
            file: p.display().to_string(),
            error,
        })
    };
    let bad = |p: &Path, message: String| TlsError::Bad {
        file: p.display().to_string(),
        message,
    };
    let chain: Vec<_> = rustls_pemfile::certs(&mut &read(cert)?[..])
        .collect::<Result<_, _>>()
        .map_err(|e| bad(cert, format!("not PEM: {e}")))?;
    if chain.is_empty() {
        return Err(bad(cert, "holds no PEM certificate".into()));
    }
    let der = rustls_pemfile::private_key(&mut &read(key)?[..])
        .map_err(|e| bad(key, format!("not PEM: {e}")))?
        .ok_or_else(|| bad(key, "holds no PEM private key".into()))?;
    let provider = rustls::crypto::ring::default_provider();
    let ck = CertifiedKey::from_der(chain, der, &provider)
        .map_err(|e| bad(key, format!("does not go with the certificate: {e}")))?;
    Ok(Arc::new(ck))
}

/// Hands every handshake the current certificate.
#[derive(Debug)]
pub struct Resolver {
    current: ArcSwap<CertifiedKey>,
}

impl Resolver {
    pub fn new(ck: Arc<CertifiedKey>) -> Resolver {
        Resolver {
            current: ArcSwap::new(ck),
        }
    }

    pub fn replace(&self, ck: Arc<CertifiedKey>) {
        self.current.store(ck);
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}
