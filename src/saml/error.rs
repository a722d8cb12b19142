//! Why a SAML message was refused: one variant per check.
//!
//! `Display` is the detail for the log (it may name values from the message, never keys or
//! whole assertions); `reason` is the short sentence a browser is shown.

#[derive(Debug, thiserror::Error)]
pub enum SamlError {
    #[error("SAMLResponse is missing from the POST")]
    MissingResponse,
    #[error("SAMLResponse is {0} bytes, above the limit of {1}")]
    TooLarge(usize, usize),
    #[error("SAMLResponse is not valid base64")]
    BadBase64,
    #[error("SAMLResponse is not well-formed XML: {0}")]
    BadXml(String),
    #[error("the XML nests deeper than {0} elements")]
    TooDeep(usize),
    #[error("the XML carries a document type declaration (DTD), which is never accepted")]
    Dtd,
    #[error("the message root is `{0}`, not a samlp:Response")]
    NotAResponse(String),
    #[error(
        "the Response holds {0} Assertion/EncryptedAssertion elements; exactly one is required"
    )]
    AssertionCount(usize),
    #[error("the Assertion is not a direct child of the Response")]
    AssertionMisplaced,
    #[error("duplicate ID `{0}`: two elements carry it (a signature wrapping attempt)")]
    DuplicateId(String),
    #[error("the message contains an XML comment or processing instruction inside the Assertion")]
    CommentInAssertion,
    #[error("a ds:Signature sits on an element other than the Response or the Assertion")]
    SignatureMisplaced,
    #[error("neither the Response nor the Assertion is signed")]
    NotSigned,
    #[error("idp.require_signed = {required}, but {found}")]
    SignaturePolicy {
        required: &'static str,
        found: &'static str,
    },
    #[error("algorithm {0} is not allowed; the IdP should sign with RSA-SHA256 (or set idp.allow_sha1 = true to accept SHA-1, not recommended)")]
    WeakAlgorithm(String),
    #[error("algorithm {0} is not in idp.allowed_signature_algorithms")]
    AlgorithmNotAllowed(String),
    #[error("the signature does not verify against any signing certificate in the IdP metadata")]
    BadSignature,
    #[error("the IdP refused the login: status {status}{}", sub.as_ref().map(|s| format!(" / {s}")).unwrap_or_default())]
    IdpRefused { status: String, sub: Option<String> },
    #[error("the response carries no InResponseTo (unsolicited, IdP-initiated) and IdP-initiated login is off")]
    Unsolicited,
    #[error("InResponseTo `{got}` does not answer the login request `{expected}` of this browser")]
    InResponseToMismatch { got: String, expected: String },
    #[error("Destination `{got}` differs from this gateway's ACS URL `{expected}`")]
    DestinationMismatch { got: String, expected: String },
    #[error("Recipient `{got}` differs from this gateway's ACS URL `{expected}`")]
    RecipientMismatch { got: String, expected: String },
    #[error("Issuer `{got}` differs from the IdP entity id `{expected}`")]
    IssuerMismatch { got: String, expected: String },
    #[error("the assertion has no AudienceRestriction naming this gateway `{0}`")]
    AudienceMismatch(String),
    #[error("time check failed: {0}")]
    Time(String),
    #[error("the assertion has no bearer SubjectConfirmation with usable data")]
    SubjectConfirmation,
    #[error("the assertion is encrypted, but no [[sp.encryption]] key is configured")]
    NoDecryptionKey,
    #[error("the encrypted assertion could not be decrypted with any [[sp.encryption]] key")]
    Undecryptable,
    #[error("encryption algorithm {0} is not accepted (AES-GCM or AES-CBC, with RSA-OAEP key transport)")]
    EncryptionAlgorithm(String),
    #[error("sp.require_encrypted_assertions is on, but the assertion is not encrypted")]
    EncryptionRequired,
    #[error("the assertion has no NameID")]
    NoNameId,
    #[error("SAML validation failed: {0}")]
    Other(String),
}

impl SamlError {
    /// The sentence shown to the user, short and free of message contents.
    pub fn reason(&self) -> &'static str {
        use SamlError::*;
        match self {
            MissingResponse | TooLarge(..) | BadBase64 | BadXml(_) | Dtd | TooDeep(_)
            | NotAResponse(_) => "The sign-in answer could not be read.",
            AssertionCount(_) | AssertionMisplaced | DuplicateId(_) | CommentInAssertion
            | SignatureMisplaced => "The sign-in answer has a structure that is not accepted.",
            NotSigned | BadSignature | SignaturePolicy { .. } => {
                "The sign-in answer is not signed by the identity provider."
            }
            WeakAlgorithm(_) | AlgorithmNotAllowed(_) => {
                "The sign-in answer uses a signature algorithm that is not allowed."
            }
            IdpRefused { .. } => "The identity provider refused the sign-in.",
            Unsolicited => "The sign-in answer was not requested by this gateway (unsolicited).",
            InResponseToMismatch { .. } => {
                "The sign-in answer does not belong to a sign-in started in this browser."
            }
            DestinationMismatch { .. } | RecipientMismatch { .. } | AudienceMismatch(_) => {
                "The sign-in answer was meant for another service."
            }
            IssuerMismatch { .. } => "The sign-in answer comes from an unknown identity provider.",
            Time(_) => "The sign-in answer has expired or is not yet valid.",
            SubjectConfirmation | NoNameId => "The sign-in answer is incomplete.",
            NoDecryptionKey | Undecryptable | EncryptionAlgorithm(_) => {
                "The sign-in answer could not be decrypted."
            }
            EncryptionRequired => "The sign-in answer is not encrypted, which is required here.",
            Other(_) => "The sign-in answer was rejected.",
        }
    }
}

/// samael's errors are not `Send`; they are turned into ours right where they are made.
impl From<samael::service_provider::Error> for SamlError {
    fn from(e: samael::service_provider::Error) -> Self {
        use samael::service_provider::Error as E;
        match e {
            E::DestinationValidationError {
                response_destination,
                sp_acs_url,
            } => SamlError::DestinationMismatch {
                got: response_destination.unwrap_or_default(),
                expected: sp_acs_url.unwrap_or_default(),
            },
            E::AssertionRecipientMismatch {
                assertion_recipient,
                sp_acs_url,
            } => SamlError::RecipientMismatch {
                got: assertion_recipient.unwrap_or_default(),
                expected: sp_acs_url.unwrap_or_default(),
            },
            E::AssertionIssuerMismatch { issuer, entity_id }
            | E::ResponseIssuerMismatch { issuer, entity_id } => SamlError::IssuerMismatch {
                got: issuer.unwrap_or_default(),
                expected: entity_id.unwrap_or_default(),
            },
            E::AssertionExpired { time } => {
                SamlError::Time(format!("assertion IssueInstant too old (limit {time})"))
            }
            E::ResponseExpired { time } => {
                SamlError::Time(format!("response IssueInstant too old (limit {time})"))
            }
            E::AssertionConditionExpired { time } => SamlError::Time(format!(
                "Conditions NotOnOrAfter passed (limit with skew {time})"
            )),
            E::AssertionConditionExpiredBefore { time } => SamlError::Time(format!(
                "Conditions NotBefore not reached (valid from {time} with skew)"
            )),
            E::AssertionSubjectConfirmationExpired { time } => SamlError::Time(format!(
                "SubjectConfirmationData NotOnOrAfter passed (limit with skew {time})"
            )),
            E::AssertionSubjectConfirmationExpiredBefore { time } => SamlError::Time(format!(
                "SubjectConfirmationData NotBefore not reached (valid from {time} with skew)"
            )),
            E::AssertionConditionAudienceRestrictionFailed { requirement } => {
                SamlError::AudienceMismatch(requirement)
            }
            E::AssertionInResponseToInvalid { possible_ids }
            | E::ResponseInResponseToInvalid { possible_ids } => SamlError::InResponseToMismatch {
                got: "(other)".into(),
                expected: possible_ids.join(", "),
            },
            E::AssertionBearerSubjectConfirmationMissing
            | E::AssertionSubjectConfirmationMissing => SamlError::SubjectConfirmation,
            E::ResponseBadStatusCode { code } => SamlError::IdpRefused {
                status: code,
                sub: None,
            },
            E::FailedToValidateSignature => SamlError::BadSignature,
            // samael never decrypts here (decrypt.rs opens assertions first); if it tries, the
            // message still held an encrypted part after opening.
            E::MissingPrivateKeySP | E::EncryptedAssertionsNotYetSupported => {
                SamlError::Undecryptable
            }
            other => SamlError::Other(other.to_string()),
        }
    }
}
