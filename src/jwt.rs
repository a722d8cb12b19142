//! Signed identity for upstreams that can check it: a short-lived ES256 JWT per route, and the
//! public key as a JWKS document served by the gateway.
//!
//! Headers can be trusted only as far as the network path to the app; a JWT can be verified
//! by the app itself (audience per route, expiry of a minute by default). Signing costs tens
//! of microseconds, so a token is reused for the same identity and route until half its
//! lifetime has passed; a new login (a new `Identity`) always gets a new token.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey};
use openssl::ecdsa::EcdsaSig;
use openssl::nid::Nid;
use openssl::pkey::Private;
use sha2::{Digest, Sha256};

use crate::config::JwtRule;
use crate::session::Identity;

#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("{file}: cannot read the JWT signing key: {error}")]
    Read {
        file: PathBuf,
        error: std::io::Error,
    },
    #[error("{file}: not a P-256 (ES256) private key in PEM: {message}")]
    BadKey { file: PathBuf, message: String },
    #[error("{file}: cannot create the JWT signing key: {error}")]
    Create {
        file: PathBuf,
        error: std::io::Error,
    },
    #[error("signing failed: {0}")]
    Sign(#[from] openssl::error::ErrorStack),
}

/// A signed token, the login and the audience it was made for, and when it expires.
struct Cached {
    id: Arc<Identity>,
    audience: String,
    token: String,
    exp: i64,
}

pub struct Signer {
    key: EcKey<Private>,
    kid: String,
    issuer: String,
    jwks: String,
    cache: moka::sync::Cache<(u64, usize), Arc<Cached>>,
}

impl Signer {
    /// Load the key from `file`, or create it (mode 0600) when missing, so that restarts keep
    /// the key upstreams have cached.
    pub fn load_or_create(file: &Path, issuer: &str) -> Result<Signer, JwtError> {
        let key = match std::fs::read(file) {
            Ok(pem) => {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(file)
                    .map_err(|error| JwtError::Read {
                        file: file.to_path_buf(),
                        error,
                    })?
                    .permissions()
                    .mode();
                if mode & 0o077 != 0 {
                    // Whoever reads it can sign identities every upstream trusts.
                    return Err(JwtError::BadKey {
                        file: file.to_path_buf(),
                        message: format!(
                            "mode {:o} lets other users read the signing key; chmod 600 it",
                            mode & 0o777
                        ),
                    });
                }
                let key = EcKey::private_key_from_pem(&pem).map_err(|e| JwtError::BadKey {
                    file: file.to_path_buf(),
                    message: e.to_string(),
                })?;
                if key.group().curve_name() != Some(Nid::X9_62_PRIME256V1) {
                    return Err(JwtError::BadKey {
                        file: file.to_path_buf(),
                        message: "the curve is not P-256".into(),
                    });
                }
                key
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
                let key = EcKey::generate(&group)?;
                write_private(file, &key.private_key_to_pem()?).map_err(|error| {
                    JwtError::Create {
                        file: file.to_path_buf(),
                        error,
                    }
                })?;
                log::info!("created the JWT signing key {}", file.display());
                key
            }
            Err(error) => {
                return Err(JwtError::Read {
                    file: file.to_path_buf(),
                    error,
                })
            }
        };
        let (x, y) = coordinates(&key)?;
        // RFC 7638 thumbprint as the key id: stable for the key, new for a new key.
        let thumb = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let kid = B64.encode(Sha256::digest(thumb.as_bytes()));
        let jwks = serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig",
            "kid": kid, "x": x, "y": y,
        }]})
        .to_string();
        Ok(Signer {
            key,
            kid,
            issuer: issuer.to_string(),
            jwks,
            cache: moka::sync::Cache::builder().max_capacity(100_000).build(),
        })
    }

    pub fn jwks(&self) -> &str {
        &self.jwks
    }

    /// The token for `id` on route `route` (index), reused while more than half its life is left.
    pub fn token(
        &self,
        id: &Arc<Identity>,
        route: usize,
        rule: &JwtRule,
        now: i64,
    ) -> Result<String, JwtError> {
        let key = (id.user_id, route);
        let half = (rule.ttl_seconds / 2) as i64;
        if let Some(hit) = self.cache.get(&key) {
            // The audience is compared too: a request that chose its route before a reload
            // may have cached a token under an index that now belongs to another app.
            if Arc::ptr_eq(&hit.id, id) && hit.audience == rule.audience && hit.exp - now > half {
                return Ok(hit.token.clone());
            }
        }
        let exp = now + rule.ttl_seconds as i64;
        let token = self.sign(id, rule, now, exp)?;
        self.cache.insert(
            key,
            Arc::new(Cached {
                id: id.clone(),
                audience: rule.audience.clone(),
                token: token.clone(),
                exp,
            }),
        );
        Ok(token)
    }

    /// Forget every cached token (after a reload: route indexes may have moved).
    pub fn clear(&self) {
        self.cache.invalidate_all();
    }

    fn sign(&self, id: &Identity, rule: &JwtRule, now: i64, exp: i64) -> Result<String, JwtError> {
        let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": self.kid});
        let claims = serde_json::json!({
            "iss": self.issuer,
            "sub": id.username,
            "aud": rule.audience,
            "iat": now,
            "nbf": now - 5,
            "exp": exp,
            "uid": id.user_id,
            "email": id.email,
            "name": id.display_name,
            "groups": id.groups,
        });
        let signing_input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let digest = Sha256::digest(signing_input.as_bytes());
        let sig = EcdsaSig::sign(&digest, &self.key)?;
        // JWS wants r || s, each 32 bytes, not DER.
        let mut raw = sig.r().to_vec_padded(32)?;
        raw.extend(sig.s().to_vec_padded(32)?);
        Ok(format!("{signing_input}.{}", B64.encode(raw)))
    }
}

fn coordinates(key: &EcKey<Private>) -> Result<(String, String), JwtError> {
    let mut ctx = BigNumContext::new()?;
    let mut x = BigNum::new()?;
    let mut y = BigNum::new()?;
    key.public_key()
        .affine_coordinates(key.group(), &mut x, &mut y, &mut ctx)?;
    Ok((
        B64.encode(x.to_vec_padded(32)?),
        B64.encode(y.to_vec_padded(32)?),
    ))
}

fn write_private(file: &Path, pem: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = file.with_extension("tmp");
    // A leftover (or planted) temp file would keep its own mode, or be a symlink: start anew.
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(pem)?;
    f.sync_all()?;
    std::fs::rename(&tmp, file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::ec::EcPoint;

    #[test]
    fn tokens_verify_with_the_published_key_and_are_reused_only_for_the_same_login() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("k.pem");
        let s = Signer::load_or_create(&file, "https://sso.test").unwrap();
        let rule = JwtRule {
            header: "X-Auth-Jwt".into(),
            audience: "wiki".into(),
            ttl_seconds: 60,
        };
        let id = Arc::new(Identity {
            user_id: 7,
            username: "alice".into(),
            email: None,
            display_name: None,
            groups: ["eng"].into_iter().collect(),
            attributes: Default::default(),
        });
        let t = s.token(&id, 0, &rule, 1000).unwrap();
        assert_eq!(s.token(&id, 0, &rule, 1020).unwrap(), t);
        assert_ne!(
            s.token(&id, 0, &rule, 1040).unwrap(),
            t,
            "past half its life"
        );
        let relogin = Arc::new((*id).clone());
        let cached = s.token(&id, 0, &rule, 1041).unwrap();
        // ECDSA signatures are randomised: only a reused token can be equal.
        assert_eq!(s.token(&id, 0, &rule, 1042).unwrap(), cached);
        assert_ne!(
            s.token(&relogin, 0, &rule, 1042).unwrap(),
            cached,
            "a new login, a new token"
        );

        // Verify against the JWKS, as an upstream would.
        let jwks: serde_json::Value = serde_json::from_str(s.jwks()).unwrap();
        let k = &jwks["keys"][0];
        let coord =
            |n: &str| BigNum::from_slice(&B64.decode(k[n].as_str().unwrap()).unwrap()).unwrap();
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let mut ctx = BigNumContext::new().unwrap();
        let mut point = EcPoint::new(&group).unwrap();
        point
            .set_affine_coordinates_gfp(&group, &coord("x"), &coord("y"), &mut ctx)
            .unwrap();
        let public = EcKey::from_public_key(&group, &point).unwrap();
        let (input, sig) = t.rsplit_once('.').unwrap();
        let raw = B64.decode(sig).unwrap();
        let sig = EcdsaSig::from_private_components(
            BigNum::from_slice(&raw[..32]).unwrap(),
            BigNum::from_slice(&raw[32..]).unwrap(),
        )
        .unwrap();
        assert!(sig
            .verify(&Sha256::digest(input.as_bytes()), &public)
            .unwrap());
        let claims: serde_json::Value =
            serde_json::from_slice(&B64.decode(input.split('.').nth(1).unwrap()).unwrap()).unwrap();
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["aud"], "wiki");
        assert_eq!(claims["exp"], 1060);
        let header: serde_json::Value =
            serde_json::from_slice(&B64.decode(input.split('.').next().unwrap()).unwrap()).unwrap();
        assert_eq!(header["kid"], k["kid"]);

        // The same key after a restart.
        let again = Signer::load_or_create(&file, "https://sso.test").unwrap();
        assert_eq!(again.jwks(), s.jwks());
    }

    #[test]
    fn a_cached_token_never_goes_to_another_audience_under_the_same_route_index() {
        let dir = tempfile::tempdir().unwrap();
        let s = Signer::load_or_create(&dir.path().join("k.pem"), "https://sso.test").unwrap();
        let id = Arc::new(Identity {
            user_id: 7,
            username: "alice".into(),
            email: None,
            display_name: None,
            groups: Default::default(),
            attributes: Default::default(),
        });
        let rule = |aud: &str| JwtRule {
            header: "X-Auth-Jwt".into(),
            audience: aud.into(),
            ttl_seconds: 60,
        };
        let wiki = s.token(&id, 3, &rule("wiki"), 1000).unwrap();
        // After a reload, index 3 is the billing app.
        let billing = s.token(&id, 3, &rule("billing"), 1001).unwrap();
        assert_ne!(wiki, billing);
        let claims: serde_json::Value =
            serde_json::from_slice(&B64.decode(billing.split('.').nth(1).unwrap()).unwrap())
                .unwrap();
        assert_eq!(claims["aud"], "billing");
    }

    #[test]
    fn a_key_file_others_can_read_is_refused_and_a_planted_temp_file_is_not_used() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("k.pem");
        // A stale temp file with loose permissions, as a crash or another user may leave.
        let tmp = file.with_extension("tmp");
        std::fs::write(&tmp, "stale").unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
        Signer::load_or_create(&file, "https://sso.test").unwrap();
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Signer::load_or_create(&file, "https://sso.test")
            .err()
            .expect("a readable key is refused");
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }
}
