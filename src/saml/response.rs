//! Incoming Responses: from the POSTed form field to a `VerifiedAssertion`.
//!
//! The order is fixed and each step only narrows what the next one sees:
//! 1. size and base64 limits;
//! 2. `inspect`: one hardened parse (no DTD, node limit) of the whole document to enforce what
//!    samael does not: exactly one Assertion and it is the Response's child, unique IDs,
//!    signatures only on the Response or the Assertion, every algorithm on the allow-list, no
//!    comments inside the Assertion, the Response-level Status, Destination, Issuer and
//!    InResponseTo (samael skips these when only the Assertion is signed);
//! 3. samael + libxmlsec1 verify the signature and the assertion conditions, and hand back only
//!    the signed content;
//! 4. the identity is read from what samael returned, never from the document of step 2.

use chrono::{DateTime, Utc};

use super::{SamlError, ServiceProvider};

pub(super) const NS_PROTOCOL: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
pub(super) const NS_ASSERTION: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
pub(super) const NS_DSIG: &str = "http://www.w3.org/2000/09/xmldsig#";
const STATUS_SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";

/// Largest SAMLResponse form field we read (base64 text).
pub const MAX_FORM_FIELD: usize = 512 * 1024;
/// Largest parsed document, in nodes; a real response has a few hundred.
pub(super) const MAX_NODES: u32 = 20_000;
/// Deepest element nesting accepted; a real response nests about ten deep. The XML parsers
/// after this point recurse per level, so an unbounded depth would exhaust the stack.
pub(super) const MAX_DEPTH: usize = 64;

/// One attribute as the IdP sent it; several elements with one Name are merged.
#[derive(Debug, Clone)]
pub struct SamlAttribute {
    pub name: String,
    pub friendly_name: Option<String>,
    pub values: Vec<String>,
}

/// An assertion whose signature, issuer, audience, recipient, times and InResponseTo have all
/// been checked. Only `ServiceProvider::verify_response` can build one.
#[derive(Debug, Clone)]
pub struct VerifiedAssertion {
    pub assertion_id: String,
    pub idp_entity_id: String,
    pub name_id: String,
    pub name_id_format: Option<String>,
    pub attributes: Vec<SamlAttribute>,
    pub session_index: Option<String>,
    pub session_not_on_or_after: Option<DateTime<Utc>>,
    /// Until when this assertion could still be replayed: its latest NotOnOrAfter plus skew.
    pub replay_until: DateTime<Utc>,
    /// The message used a SHA-1 algorithm that the operator allowed; logged on every login.
    pub weak_algorithm: bool,
    _sealed: Sealed,
}

#[derive(Debug, Clone)]
struct Sealed;

/// What the structural pass learned about the message.
struct Envelope {
    assertion_id: String,
    weak_algorithm: bool,
    assertion_signed: bool,
}

impl ServiceProvider {
    /// Verify a POSTed SAMLResponse that must answer the AuthnRequest `expected_request_id`.
    pub fn verify_response(
        &self,
        form_field: &str,
        expected_request_id: &str,
    ) -> Result<VerifiedAssertion, SamlError> {
        self.verify(form_field, Some(expected_request_id))
    }

    /// Verify an IdP-initiated (unsolicited) SAMLResponse: it must answer no request at all.
    /// Refused unless `idp.allow_idp_initiated`.
    pub fn verify_unsolicited(&self, form_field: &str) -> Result<VerifiedAssertion, SamlError> {
        if self.unsolicited.is_none() {
            return Err(SamlError::Unsolicited);
        }
        self.verify(form_field, None)
    }

    fn verify(
        &self,
        form_field: &str,
        expected_request_id: Option<&str>,
    ) -> Result<VerifiedAssertion, SamlError> {
        if form_field.is_empty() {
            return Err(SamlError::MissingResponse);
        }
        super::silence_libxml2_here();
        let xml = super::xml::decode_form_field(form_field)?;

        if nesting_exceeds(xml.as_bytes(), MAX_DEPTH) {
            return Err(SamlError::TooDeep(MAX_DEPTH));
        }
        let now = Utc::now();
        // An EncryptedAssertion is opened first; from here on the message is checked as if
        // the IdP had sent the Assertion in the clear.
        let (xml, response_verified, outer_weak) = match self.open_encrypted(&xml)? {
            Some(o) => (o.xml, o.response_verified, o.weak_algorithm),
            None => (xml, false, false),
        };
        let envelope = self.inspect(&xml, expected_request_id, now, response_verified)?;

        // The Response signature of an encrypted message was verified before decryption; if
        // the Assertion has no signature of its own, samael checks only its content.
        let content_only = response_verified && !envelope.assertion_signed;
        let samael = match (&self.unsolicited, expected_request_id, content_only) {
            (_, Some(_), false) => &self.inner,
            (_, Some(_), true) => &self.content_only,
            (Some((inner, _)), None, false) => inner,
            (Some((_, content)), None, true) => content,
            (None, None, _) => return Err(SamlError::Unsolicited),
        };
        let expected: Vec<&str> = expected_request_id.into_iter().collect();
        let assertion = samael
            .parse_xml_response(&xml, expected_request_id.map(|_| &expected[..]))
            .map_err(|e| match SamlError::from(e) {
                SamlError::Time(m) => SamlError::Time(format!(
                    "{m}; gateway clock {}",
                    now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                )),
                other => other,
            })?;

        if assertion.id != envelope.assertion_id {
            // samael returned content other than the one Assertion we inspected.
            return Err(SamlError::AssertionMisplaced);
        }
        self.read_assertion(assertion, envelope.weak_algorithm || outer_weak)
    }

    fn inspect(
        &self,
        xml: &str,
        expected_request_id: Option<&str>,
        now: DateTime<Utc>,
        response_verified: bool,
    ) -> Result<Envelope, SamlError> {
        let doc = super::xml::parse(xml)?;
        let root = doc.root_element();
        if !(root.has_tag_name((NS_PROTOCOL, "Response"))) {
            return Err(SamlError::NotAResponse(root.tag_name().name().to_string()));
        }

        // Status first: a refusal carries no assertion, and deserves its own page.
        if let Some(code) = root
            .children()
            .find(|n| n.has_tag_name((NS_PROTOCOL, "Status")))
            .and_then(|s| {
                s.children()
                    .find(|n| n.has_tag_name((NS_PROTOCOL, "StatusCode")))
            })
        {
            let status = code.attribute("Value").unwrap_or("").to_string();
            if status != STATUS_SUCCESS {
                let sub = code
                    .children()
                    .find(|n| n.has_tag_name((NS_PROTOCOL, "StatusCode")))
                    .and_then(|n| n.attribute("Value"))
                    .map(str::to_string);
                return Err(SamlError::IdpRefused { status, sub });
            }
        }

        // Exactly one Assertion or EncryptedAssertion anywhere, and it is the Response's child.
        let assertions = super::xml::assertions(&doc);
        if assertions.len() != 1 {
            return Err(SamlError::AssertionCount(assertions.len()));
        }
        let assertion = assertions[0];
        if assertion.parent_element() != Some(root) {
            return Err(SamlError::AssertionMisplaced);
        }
        if assertion.has_tag_name((NS_ASSERTION, "EncryptedAssertion")) {
            // Only reachable if opening it did not replace it; never read it as is.
            return Err(SamlError::Undecryptable);
        }

        // IDs are what signatures point at; a second element with the same ID is a wrapping
        // attack waiting for a lax resolver.
        let mut ids = std::collections::HashSet::new();
        for n in doc.descendants().filter(|n| n.is_element()) {
            for a in n.attributes() {
                if matches!(a.name(), "ID" | "Id" | "id") && !ids.insert(a.value()) {
                    return Err(SamlError::DuplicateId(a.value().to_string()));
                }
            }
        }

        if assertion.descendants().any(|n| n.is_comment() || n.is_pi()) {
            return Err(SamlError::CommentInAssertion);
        }

        // Signatures: only on the Response or the Assertion, only allowed algorithms.
        let (mut response_signed, mut assertion_signed) = (false, false);
        let mut weak = false;
        for sig in doc
            .descendants()
            .filter(|n| n.has_tag_name((NS_DSIG, "Signature")))
        {
            let parent = sig.parent_element();
            if parent != Some(root) && parent != Some(assertion) {
                return Err(SamlError::SignatureMisplaced);
            }
            for m in sig.descendants().filter(|n| {
                n.has_tag_name((NS_DSIG, "SignatureMethod"))
                    || n.has_tag_name((NS_DSIG, "DigestMethod"))
            }) {
                let alg = m.attribute("Algorithm").unwrap_or("");
                let is_sha1 = alg.ends_with("sha1");
                if !self.allowed_algorithms.iter().any(|a| a == alg) {
                    return Err(if is_sha1 {
                        SamlError::WeakAlgorithm(alg.to_string())
                    } else {
                        SamlError::AlgorithmNotAllowed(alg.to_string())
                    });
                }
                weak |= is_sha1;
            }
            if parent == Some(root) {
                response_signed = true;
            } else {
                assertion_signed = true;
            }
        }
        // Every signature present must verify (samael checks each one), so what is present
        // here is what will have been verified; a Response signature over an encrypted
        // assertion was verified before decryption and removed.
        response_signed |= response_verified;
        use crate::config::SignedElement as E;
        let found = match (response_signed, assertion_signed) {
            (false, false) => return Err(SamlError::NotSigned),
            (true, false) => "only the Response is signed",
            (false, true) => "only the Assertion is signed",
            (true, true) => "both are signed",
        };
        let required = match self.require_signed {
            E::Either => None,
            E::Assertion if !assertion_signed => Some("assertion"),
            E::Response if !response_signed => Some("response"),
            E::Both if !(assertion_signed && response_signed) => Some("both"),
            _ => None,
        };
        if let Some(required) = required {
            return Err(SamlError::SignaturePolicy { required, found });
        }

        // Response-level fields that samael does not check when only the Assertion is signed.
        if let Some(dest) = root.attribute("Destination") {
            if dest != self.acs_url {
                return Err(SamlError::DestinationMismatch {
                    got: dest.to_string(),
                    expected: self.acs_url.clone(),
                });
            }
        }
        if let Some(issuer) = root
            .children()
            .find(|n| n.has_tag_name((NS_ASSERTION, "Issuer")))
            .and_then(|n| n.text())
        {
            if issuer.trim() != self.idp_entity_id {
                return Err(SamlError::IssuerMismatch {
                    got: issuer.to_string(),
                    expected: self.idp_entity_id.clone(),
                });
            }
        }
        let confirmation_irt = assertion
            .descendants()
            .find(|n| n.has_tag_name((NS_ASSERTION, "SubjectConfirmationData")))
            .and_then(|n| n.attribute("InResponseTo"));
        match (
            root.attribute("InResponseTo"),
            confirmation_irt,
            expected_request_id,
        ) {
            (None, None, Some(_)) => return Err(SamlError::Unsolicited),
            (Some(got), _, Some(expected)) | (None, Some(got), Some(expected))
                if got != expected =>
            {
                return Err(SamlError::InResponseToMismatch {
                    got: got.to_string(),
                    expected: expected.to_string(),
                })
            }
            // IdP-initiated: an answer to some request is never accepted as unsolicited
            // (it was meant for a login that a browser started somewhere).
            (Some(got), _, None) | (None, Some(got), None) => {
                return Err(SamlError::InResponseToMismatch {
                    got: got.to_string(),
                    expected: "none (an IdP-initiated login answers no request)".into(),
                })
            }
            _ => {}
        }

        // samael checks that IssueInstant is not too old, but not that it is not in the future.
        for (what, node) in [("Response", root), ("Assertion", assertion)] {
            let Some(text) = node.attribute("IssueInstant") else {
                continue;
            };
            let at = DateTime::parse_from_rfc3339(text).map_err(|_| {
                SamlError::Time(format!("{what} IssueInstant `{text}` is not a valid time"))
            })?;
            if at.with_timezone(&Utc) > now + self.clock_skew {
                return Err(SamlError::Time(format!(
                    "{what} IssueInstant {text} is in the future: gateway clock {}, allowed skew {} s",
                    now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    self.clock_skew.num_seconds()
                )));
            }
        }

        // The bearer profile requires an audience; samael checks it only when present.
        let audiences: Vec<&str> = assertion
            .children()
            .filter(|n| n.has_tag_name((NS_ASSERTION, "Conditions")))
            .flat_map(|c| c.children())
            .filter(|n| n.has_tag_name((NS_ASSERTION, "AudienceRestriction")))
            .flat_map(|r| r.children())
            .filter(|n| n.has_tag_name((NS_ASSERTION, "Audience")))
            .filter_map(|n| n.text())
            .map(str::trim)
            .collect();
        if !audiences.contains(&self.entity_id.as_str()) {
            return Err(SamlError::AudienceMismatch(self.entity_id.clone()));
        }

        Ok(Envelope {
            assertion_id: assertion.attribute("ID").unwrap_or("").to_string(),
            weak_algorithm: weak,
            assertion_signed,
        })
    }

    fn read_assertion(
        &self,
        a: samael::schema::Assertion,
        weak_algorithm: bool,
    ) -> Result<VerifiedAssertion, SamlError> {
        let name_id = a
            .subject
            .as_ref()
            .and_then(|s| s.name_id.as_ref())
            .filter(|n| !n.value.trim().is_empty())
            .ok_or(SamlError::NoNameId)?;

        let mut attributes: Vec<SamlAttribute> = Vec::new();
        for stmt in a.attribute_statements.iter().flatten() {
            for attr in &stmt.attributes {
                let Some(name) = attr.name.as_deref().filter(|n| !n.is_empty()) else {
                    log::warn!(
                        "assertion {}: ignoring an Attribute without a Name (FriendlyName {:?})",
                        a.id,
                        attr.friendly_name
                    );
                    continue;
                };
                let values = attr
                    .values
                    .iter()
                    .filter_map(|v| v.value.clone())
                    .collect::<Vec<_>>();
                match attributes.iter_mut().find(|x| x.name == name) {
                    Some(existing) => existing.values.extend(values),
                    None => attributes.push(SamlAttribute {
                        name: name.to_string(),
                        friendly_name: attr.friendly_name.clone(),
                        values,
                    }),
                }
            }
        }

        let authn = a.authn_statements.iter().flatten().next();
        let skew = self.clock_skew;
        // As long as any check would still pass: samael accepts an IssueInstant up to
        // max_issue_delay old, and the NotOnOrAfters bound the rest.
        let mut replay_until = a.issue_instant + self.max_issue_delay;
        if let Some(t) = a.conditions.as_ref().and_then(|c| c.not_on_or_after) {
            replay_until = replay_until.max(t);
        }
        for sc in a
            .subject
            .iter()
            .flat_map(|s| s.subject_confirmations.iter().flatten())
        {
            if let Some(t) = sc
                .subject_confirmation_data
                .as_ref()
                .and_then(|d| d.not_on_or_after)
            {
                replay_until = replay_until.max(t);
            }
        }

        Ok(VerifiedAssertion {
            assertion_id: a.id.clone(),
            idp_entity_id: self.idp_entity_id.clone(),
            name_id: name_id.value.trim().to_string(),
            name_id_format: name_id.format.clone(),
            attributes,
            session_index: authn.and_then(|s| s.session_index.clone()),
            session_not_on_or_after: authn.and_then(|s| s.session_not_on_or_after),
            replay_until: replay_until + skew,
            weak_algorithm,
            _sealed: Sealed,
        })
    }
}

/// The Issuer a SAMLResponse form field claims (the Response's, else its Assertion's), read
/// without verifying anything: only to pick which IdP's keys will then verify it.
pub fn peek_issuer(form_field: &str) -> Option<String> {
    peek_xml_issuer(&super::xml::decode_form_field(form_field).ok()?)
}

/// The Issuer of a SAML protocol message's root, else of its Assertion; unverified.
pub(super) fn peek_xml_issuer(xml: &str) -> Option<String> {
    let doc = super::xml::parse(xml).ok()?;
    let root = doc.root_element();
    let issuer_of = |n: roxmltree::Node| {
        n.children()
            .find(|c| c.has_tag_name((NS_ASSERTION, "Issuer")))
            .and_then(|i| i.text())
            .map(|t| t.trim().to_string())
    };
    issuer_of(root).or_else(|| {
        root.children()
            .find(|c| c.has_tag_name((NS_ASSERTION, "Assertion")))
            .and_then(issuer_of)
    })
}

/// Whether element nesting goes deeper than `limit`, found by a flat scan that builds nothing.
/// Malformed input is left for the parser to reject; this only bounds depth.
pub(super) fn nesting_exceeds(xml: &[u8], limit: usize) -> bool {
    fn skip_past(xml: &[u8], from: usize, end: &[u8]) -> usize {
        xml[from..]
            .windows(end.len())
            .position(|w| w == end)
            .map(|p| from + p + end.len())
            .unwrap_or(xml.len())
    }
    let mut depth = 0usize;
    let mut i = 0;
    while i < xml.len() {
        if xml[i] != b'<' {
            i += 1;
            continue;
        }
        let rest = &xml[i..];
        if rest.starts_with(b"<!--") {
            i = skip_past(xml, i + 4, b"-->");
        } else if rest.starts_with(b"<![CDATA[") {
            i = skip_past(xml, i + 9, b"]]>");
        } else if rest.starts_with(b"<?") {
            i = skip_past(xml, i + 2, b"?>");
        } else if rest.starts_with(b"</") {
            depth = depth.saturating_sub(1);
            i = skip_past(xml, i + 2, b">");
        } else if rest.starts_with(b"<!") {
            i = skip_past(xml, i + 2, b">");
        } else {
            // A start tag: find its end, honouring quoted attribute values (which may hold '>').
            let mut j = i + 1;
            let mut quote = None;
            while j < xml.len() {
                let c = xml[j];
                match quote {
                    Some(q) if c == q => quote = None,
                    Some(_) => {}
                    None if c == b'"' || c == b'\'' => quote = Some(c),
                    None if c == b'>' => break,
                    None => {}
                }
                j += 1;
            }
            if xml.get(j.wrapping_sub(1)) != Some(&b'/') {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            i = j + 1;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::nesting_exceeds;

    #[test]
    fn nesting_depth_is_bounded_without_parsing() {
        let deep = format!("<r>{}{}</r>", "<x>".repeat(100), "</x>".repeat(100));
        assert!(nesting_exceeds(deep.as_bytes(), 64));
        let flat = format!("<r>{}</r>", "<x a='>'/><y>t</y><!-- <z> -->".repeat(1000));
        assert!(!nesting_exceeds(flat.as_bytes(), 64));
        let real = "<a><b><c attr=\"x>y\"><d/></c></b><![CDATA[<e><f>]]></a>";
        assert!(!nesting_exceeds(real.as_bytes(), 3));
        assert!(nesting_exceeds(real.as_bytes(), 2));
    }
}
