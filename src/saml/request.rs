//! Outgoing AuthnRequests (HTTP-Redirect binding), signed when `sp.sign_authn_requests`.

use rand::RngCore;

use super::{SamlError, ServiceProvider};

/// Where to send the browser, and the request id its answer must carry.
pub struct AuthnRedirect {
    pub request_id: String,
    pub url: String,
}

/// A fresh request id: 128 random bits. samael's own ids carry only 32, too few to be
/// unguessable; the leading `_` keeps the id a valid xs:ID.
pub(super) fn new_request_id() -> String {
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
        req.force_authn = Some(self.force_authn);
        if !self.authn_context.is_empty() {
            use samael::schema::{AuthnContextClassRef, AuthnContextComparison as C};
            req.requested_authn_context = Some(samael::schema::RequestedAuthnContext {
                authn_context_class_refs: Some(
                    self.authn_context
                        .iter()
                        .map(|v| AuthnContextClassRef {
                            value: Some(v.clone()),
                        })
                        .collect(),
                ),
                authn_context_decl_refs: None,
                comparison: Some(match self.authn_context_comparison.as_str() {
                    "minimum" => C::Minimum,
                    "maximum" => C::Maximum,
                    "better" => C::Better,
                    _ => C::Exact,
                }),
            });
        }
        let url = match (&self.signing_key, self.sign_authn_requests) {
            (Some(k), true) => req.signed_redirect(relay_state, k.key()),
            _ => req.redirect(relay_state),
        }
        .map_err(|e| SamlError::Other(format!("cannot encode AuthnRequest: {e}")))?
        .ok_or_else(|| SamlError::Other("AuthnRequest has no destination".into()))?;
        Ok(AuthnRedirect {
            request_id: req.id,
            url: url.to_string(),
        })
    }
}
