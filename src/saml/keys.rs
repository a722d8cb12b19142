//! Our own key pairs (PEM files from the config): decryption keys and the signing key.

use openssl::pkey::{PKey, Private};

use super::SetupError;
use crate::config::KeyPairFiles;

/// A private key and the certificate that publishes it.
pub(super) struct KeyPair {
    key: PKey<Private>,
    /// Base64 DER, as it goes into the SP metadata.
    pub cert_b64: String,
}

impl KeyPair {
    pub fn key(&self) -> &PKey<Private> {
        &self.key
    }
}

/// Load key pairs for config key `what`: every key must be RSA, parse, and match its
/// certificate, or the gateway does not start (a wrong pair would only show up as failed
/// logins or rejected requests at the IdP).
pub(super) fn load(pairs: &[KeyPairFiles], what: &'static str) -> Result<Vec<KeyPair>, SetupError> {
    let bad = |file: &std::path::Path, message: String| SetupError::KeyPair {
        what,
        file: file.display().to_string(),
        message,
    };
    let mut keys = Vec::new();
    for p in pairs {
        let key_pem = std::fs::read(&p.key).map_err(|e| bad(&p.key, e.to_string()))?;
        let key = PKey::private_key_from_pem(&key_pem)
            .map_err(|_| bad(&p.key, "not a PEM private key".into()))?;
        if key.rsa().is_err() {
            return Err(bad(&p.key, "not an RSA key".into()));
        }
        let cert_pem = std::fs::read(&p.cert).map_err(|e| bad(&p.cert, e.to_string()))?;
        let cert = openssl::x509::X509::from_pem(&cert_pem)
            .map_err(|_| bad(&p.cert, "not a PEM certificate".into()))?;
        let matches = cert
            .public_key()
            .map(|pk| pk.public_eq(&key))
            .unwrap_or(false);
        if !matches {
            return Err(bad(
                &p.cert,
                format!("does not belong to the key in {}", p.key.display()),
            ));
        }
        let der = cert
            .to_der()
            .map_err(|_| bad(&p.cert, "cannot be encoded".into()))?;
        use base64::Engine as _;
        keys.push(KeyPair {
            key,
            cert_b64: base64::engine::general_purpose::STANDARD.encode(der),
        });
    }
    Ok(keys)
}
