//! The SAML 2.0 service provider: AuthnRequests out, verified assertions in, SP metadata.
//!
//! Signatures are verified by samael over libxmlsec1; this module adds the checks samael leaves
//! out (see `response.rs`). It knows nothing of HTTP sessions or the user store: it turns bytes
//! into a `VerifiedAssertion` or a `SamlError`.

mod decrypt;
mod error;
mod keys;
mod logout;
pub mod metadata;
mod request;
mod response;
mod xml;

use std::sync::Once;

pub use error::SamlError;
pub use logout::{peek_slo_issuer, IdpLogoutRequest, SloMessage};
pub use request::AuthnRedirect;
pub use response::{peek_issuer, SamlAttribute, VerifiedAssertion};

use samael::metadata::{EntityDescriptor, HTTP_REDIRECT_BINDING};

use crate::config::{Config, IdpConfig};

/// The gateway could not set up its SAML side; `samlgate check` prints these.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{config}: key `{at}.metadata_file`: cannot read {file}: {error}")]
    ReadMetadata {
        config: String,
        at: String,
        file: String,
        error: std::io::Error,
    },
    #[error("{file}: not valid SAML metadata: {message}")]
    ParseMetadata { file: String, message: String },
    #[error("{file}: the IdP metadata has no signing certificate (KeyDescriptor use=\"signing\" or without use) and idp.certificates adds none; refusing to start, since nothing could be verified")]
    NoSigningCertificate { file: String },
    #[error("{file}: the IdP metadata has a certificate that cannot be parsed: {message}")]
    BadCertificate { file: String, message: String },
    #[error("{file}: the IdP metadata has no SingleSignOnService with the HTTP-Redirect binding")]
    NoRedirectSso { file: String },
    #[error("{file}: the IdP metadata has no entityID")]
    NoEntityId { file: String },
    #[error("{file}: the IdP metadata expired (validUntil {valid_until}); get a current copy from the IdP")]
    Expired { file: String, valid_until: String },
    #[error("{file} (key `{what}`): {message}")]
    KeyPair {
        what: &'static str,
        file: String,
        message: String,
    },
}

/// One IdP and our side of the trust: everything needed to start and finish a login.
pub struct ServiceProvider {
    inner: samael::service_provider::ServiceProvider,
    pub idp_entity_id: String,
    /// The `name` of its `[idp]` / `[[idps]]` entry.
    pub idp_name: String,
    pub sso_url: String,
    pub acs_url: String,
    pub entity_id: String,
    allowed_algorithms: Vec<String>,
    require_signed: crate::config::SignedElement,
    /// samael without the IdP's certificates: checks a decrypted assertion's content (times,
    /// audience, recipient, issuer, InResponseTo) when the Response signature that covers it
    /// was verified before decryption and the assertion carries none of its own. Never used
    /// on anything that signature did not cover (`decrypt.rs`).
    content_only: samael::service_provider::ServiceProvider,
    /// With `idp.allow_idp_initiated`: samael as `inner` and `content_only`, but taking
    /// responses that answer no request.
    unsolicited: Option<(
        samael::service_provider::ServiceProvider,
        samael::service_provider::ServiceProvider,
    )>,
    decryption_keys: Vec<keys::KeyPair>,
    /// Signs AuthnRequests (when configured), LogoutRequests and LogoutResponses.
    signing_key: Option<keys::KeyPair>,
    sign_authn_requests: bool,
    sign_metadata: bool,
    force_authn: bool,
    authn_context: Vec<String>,
    authn_context_comparison: String,
    /// The IdP's SingleLogoutService (HTTP-Redirect): Location, and ResponseLocation.
    idp_slo: Option<(String, String)>,
    slo_url: String,
    /// The IdP's signing keys, for HTTP-Redirect binding signatures.
    idp_keys: Vec<openssl::pkey::PKey<openssl::pkey::Public>>,
    require_encryption: bool,
    /// Advertised in the SP metadata.
    name_id_formats: Vec<String>,
    clock_skew: chrono::Duration,
    max_issue_delay: chrono::Duration,
}

type XmlStructuredErrorFunc =
    Option<unsafe extern "C" fn(ctx: *mut std::ffi::c_void, error: *const std::ffi::c_void)>;

extern "C" {
    // libxmlsec1 writes every verification failure to stderr by default; we log our own.
    fn xmlSecErrorsDefaultCallbackEnableOutput(enabled: std::os::raw::c_int);
    // libxml2 prints parser, C14N and XPath complaints to stderr, quoting parts of the
    // message (an ID from a Reference URI, say): attacker text in the log, newlines included.
    // A structured handler replaces that output. Its state is per thread: the default for
    // threads yet to come, and the current thread's.
    fn xmlThrDefSetStructuredErrorFunc(ctx: *mut std::ffi::c_void, handler: XmlStructuredErrorFunc);
    fn xmlSetStructuredErrorFunc(ctx: *mut std::ffi::c_void, handler: XmlStructuredErrorFunc);
}

/// Drops libxml2's error reports; every failure reaches us as an error value anyway.
unsafe extern "C" fn ignore_xml_error(
    _ctx: *mut std::ffi::c_void,
    _error: *const std::ffi::c_void,
) {
}

fn silence_xmlsec() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: sets process-wide flags / handler pointers in libxmlsec1 and libxml2; the
        // handler is a plain function that touches neither of its arguments.
        unsafe {
            xmlSecErrorsDefaultCallbackEnableOutput(0);
            xmlThrDefSetStructuredErrorFunc(std::ptr::null_mut(), Some(ignore_xml_error));
        }
    });
    silence_libxml2_here();
}

/// The current thread's libxml2 error handler (threads that touched libxml2 before
/// `silence_xmlsec` keep the old default otherwise). Cheap: one thread-local store.
pub(super) fn silence_libxml2_here() {
    // SAFETY: as above.
    unsafe { xmlSetStructuredErrorFunc(std::ptr::null_mut(), Some(ignore_xml_error)) }
}

impl ServiceProvider {
    /// The metadata's validUntil, if it has one.
    pub fn valid_until(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.inner.idp_metadata.valid_until
    }

    /// SHA-256 fingerprints (hex) of the IdP signing certificates in use.
    pub fn idp_key_fingerprints(&self) -> Vec<String> {
        use sha2::Digest as _;
        self.inner
            .idp_signing_certs()
            .ok()
            .flatten()
            .unwrap_or_default()
            .iter()
            .map(|c| {
                sha2::Sha256::digest(c.der_data())
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect()
            })
            .collect()
    }

    /// Verify every signature in `xml` against the IdP's keys (libxmlsec1 through samael)
    /// and return only the signed content.
    fn reduce_to_signed(&self, xml: &str) -> Result<String, SamlError> {
        use samael::crypto::CryptoProvider as _;
        let certs = self
            .inner
            .idp_signing_certs()
            .ok()
            .flatten()
            .unwrap_or_default();
        samael::crypto::Crypto::reduce_xml_to_signed_with_allowed_algorithms(
            xml,
            &certs,
            samael::crypto::ReduceMode::ValidateAndMarkNoAncestors,
            self.inner.allowed_signature_algorithms.as_deref(),
        )
        .map_err(|_| SamlError::BadSignature)
    }

    pub fn allows_idp_initiated(&self) -> bool {
        self.unsolicited.is_some()
    }

    /// From the IdP metadata in `idp.metadata_file` (with `idp.metadata_url`, the last good
    /// copy fetched).
    pub fn new(cfg: &Config, idp: &IdpConfig) -> Result<Self, SetupError> {
        let file = idp.metadata_file.display().to_string();
        let xml = std::fs::read_to_string(&idp.metadata_file).map_err(|error| {
            SetupError::ReadMetadata {
                config: cfg.file.display().to_string(),
                at: idp.at.clone(),
                file: file.clone(),
                error,
            }
        })?;
        Self::from_metadata(cfg, idp, &xml, &file)
    }

    /// From IdP metadata text; `file` names where it came from in errors.
    pub fn from_metadata(
        cfg: &Config,
        idp: &IdpConfig,
        xml: &str,
        file: &str,
    ) -> Result<Self, SetupError> {
        silence_xmlsec();
        let file = file.to_string();
        // The metadata is operator-supplied but still parsed without DTDs.
        if let Err(e) = roxmltree::Document::parse(xml) {
            return Err(SetupError::ParseMetadata {
                file,
                message: e.to_string(),
            });
        }
        let mut idp_metadata =
            xml.parse::<EntityDescriptor>()
                .map_err(|e| SetupError::ParseMetadata {
                    file: file.clone(),
                    message: e.to_string(),
                })?;
        // A KeyDescriptor without `use` serves both purposes (SAML metadata spec, 2.4.1.1), but
        // samael only falls back to such keys when no key says "signing". Mark them, so that
        // every signing-capable key counts (key rollover often mixes the two forms).
        for d in idp_metadata.idp_sso_descriptors.iter_mut().flatten() {
            for k in &mut d.key_descriptors {
                if k.key_use.as_deref().is_none_or(str::is_empty) {
                    k.key_use = Some("signing".into());
                }
            }
        }
        if let Some(until) = idp_metadata.valid_until {
            if until <= chrono::Utc::now() {
                return Err(SetupError::Expired {
                    file,
                    valid_until: until.to_rfc3339(),
                });
            }
        }
        // Certificates given in the config join the metadata's signing keys.
        if !idp.certificates.is_empty() {
            let d = idp_metadata
                .idp_sso_descriptors
                .as_mut()
                .and_then(|v| v.first_mut())
                .ok_or_else(|| SetupError::NoRedirectSso { file: file.clone() })?;
            for b64 in &idp.certificates {
                d.key_descriptors.push(samael::metadata::KeyDescriptor {
                    key_use: Some("signing".into()),
                    key_info: samael::key_info::KeyInfo {
                        id: None,
                        x509_data: Some(samael::key_info::X509Data {
                            certificates: vec![b64.clone()],
                        }),
                    },
                    encryption_methods: None,
                });
            }
        }
        let idp_entity_id = idp_metadata
            .entity_id
            .clone()
            .ok_or_else(|| SetupError::NoEntityId { file: file.clone() })?;

        let skew = chrono::Duration::seconds(idp.clock_skew.as_secs() as i64);
        let inner = samael::service_provider::ServiceProvider {
            entity_id: Some(cfg.sp.entity_id.clone()),
            metadata_url: Some(cfg.sp.metadata_url.clone()),
            acs_url: Some(cfg.sp.acs_url.clone()),
            slo_url: None,
            idp_metadata,
            allow_idp_initiated: false,
            max_issue_delay: chrono::Duration::seconds(idp.max_issue_delay.as_secs() as i64),
            max_clock_skew: skew,
            allowed_signature_algorithms: samael_algorithms(&idp.allowed_algorithms),
            ..Default::default()
        };
        // Trap: with no signing certificate samael skips verification entirely.
        match inner.idp_signing_certs() {
            Ok(Some(certs)) if !certs.is_empty() => {}
            Ok(_) => return Err(SetupError::NoSigningCertificate { file }),
            Err(e) => {
                return Err(SetupError::BadCertificate {
                    file,
                    message: e.to_string(),
                })
            }
        }
        let sso_url = inner
            .sso_binding_location(HTTP_REDIRECT_BINDING)
            .ok_or_else(|| SetupError::NoRedirectSso { file: file.clone() })?;

        let mut content_only = inner.clone();
        for d in content_only
            .idp_metadata
            .idp_sso_descriptors
            .iter_mut()
            .flatten()
        {
            d.key_descriptors.clear();
        }
        let decryption_keys = keys::load(&cfg.sp.encryption, "sp.encryption")?;
        let signing_key = keys::load(cfg.sp.signing.as_slice(), "sp.signing_key")?.pop();
        let idp_slo = inner
            .idp_metadata
            .idp_sso_descriptors
            .iter()
            .flatten()
            .flat_map(|d| d.single_logout_services.iter())
            .find(|s| s.binding == HTTP_REDIRECT_BINDING)
            .map(|s| {
                let response = s
                    .response_location
                    .clone()
                    .unwrap_or_else(|| s.location.clone());
                (s.location.clone(), response)
            });
        let idp_keys = inner
            .idp_signing_certs()
            .ok()
            .flatten()
            .unwrap_or_default()
            .iter()
            .filter_map(|c| openssl::x509::X509::from_der(c.der_data()).ok())
            .filter_map(|c| c.public_key().ok())
            .collect();

        let unsolicited = idp.allow_idp_initiated.then(|| {
            let mut a = inner.clone();
            let mut b = content_only.clone();
            a.allow_idp_initiated = true;
            b.allow_idp_initiated = true;
            (a, b)
        });
        Ok(ServiceProvider {
            idp_name: idp.name.clone(),
            unsolicited,
            content_only,
            decryption_keys,
            require_encryption: cfg.sp.require_encrypted_assertions,
            signing_key,
            sign_authn_requests: cfg.sp.sign_authn_requests,
            sign_metadata: cfg.sp.sign_metadata,
            force_authn: cfg.sp.force_authn,
            authn_context: cfg.sp.authn_context.clone(),
            authn_context_comparison: cfg.sp.authn_context_comparison.clone(),
            idp_slo,
            slo_url: cfg.sp.slo_url.clone(),
            idp_keys,
            name_id_formats: cfg.identity.name_id_formats.clone(),
            inner,
            idp_entity_id,
            sso_url,
            acs_url: cfg.sp.acs_url.clone(),
            entity_id: cfg.sp.entity_id.clone(),
            allowed_algorithms: idp.allowed_algorithms.clone(),
            require_signed: idp.require_signed,
            clock_skew: skew,
            max_issue_delay: chrono::Duration::seconds(idp.max_issue_delay.as_secs() as i64),
        })
    }
}

/// samael's own allow-list, as defence in depth: `response.rs` checks every SignatureMethod
/// and DigestMethod against the configured list before samael runs. samael cannot express
/// RSA-SHA1, so when the operator allows SHA-1 samael's list is lifted and ours alone holds.
fn samael_algorithms(uris: &[String]) -> Option<Vec<samael::crypto::AllowedSignatureAlgorithm>> {
    use samael::crypto::AllowedSignatureAlgorithm as A;
    if uris.iter().any(|u| u == crate::config::RSA_SHA1) {
        return None;
    }
    let all = [
        A::RsaSha256,
        A::RsaSha384,
        A::RsaSha512,
        A::EcdsaSha256,
        A::EcdsaSha384,
        A::EcdsaSha512,
    ];
    Some(
        all.into_iter()
            .filter(|a| uris.iter().any(|u| u == a.signature_uri()))
            .collect(),
    )
}
