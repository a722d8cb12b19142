//! Outgoing AuthnRequests (HTTP-Redirect binding).

use rand::RngCore;

use super::{SamlError, ServiceProvider};

/// Where to send the browser, and the request id its answer must carry.
pub struct AuthnRedirect {
    pub request_id: String,
    pub url: String,
}

/// A fresh request id: 128 random bits. samael's own ids carry only 32, too few to be
/// unguessable; the leading `_` keeps the id a valid xs:ID.
fn new_request_id() -> String {
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    let mut id = String::with_capacity(33);
    id.push('_');
    for x in b {
        id.push_str(&format!("{x:02x}"));
    }
    id
}

impl ServiceProvider {
    /// Build an AuthnRequest for the IdP and the redirect URL that carries it.
    pub fn authn_redirect(&self, relay_state: &str) -> Result<AuthnRedirect, SamlError> {
        let mut req = self
            .inner
            .make_authentication_request(&self.sso_url)
            .map_err(|e| SamlError::Other(format!("cannot build AuthnRequest: {e}")))?;
        req.id = new_request_id();
        let url = req
            .redirect(relay_state)
            .map_err(|e| SamlError::Other(format!("cannot encode AuthnRequest: {e}")))?
            .ok_or_else(|| SamlError::Other("AuthnRequest has no destination".into()))?;
        Ok(AuthnRedirect {
            request_id: req.id,
            url: url.to_string(),
        })
    }
}
