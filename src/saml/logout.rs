//! Single logout messages (HTTP-Redirect and HTTP-POST bindings).
//!
//! Outgoing: our LogoutRequest when a user signs out here, and our LogoutResponse to the IdP's
//! request, both over HTTP-Redirect and signed when `sp.signing_key` is set.
//!
//! Incoming: the IdP's LogoutRequest must be signed, always. Over HTTP-Redirect the signature
//! is over the query string exactly as it arrived (re-encoding it, as samael's verifier does,
//! breaks IdPs whose percent-encoding differs); over HTTP-POST it is an XML signature verified
//! by samael + libxmlsec1, and the request is read from what samael reduced it to. Either
//! way the request is read only after its signature verified. The IdP's LogoutResponse to our
//! request grants nothing (the local session is already gone), so it is only read and logged.

use std::io::{Read, Write};

use base64::Engine as _;
use chrono::{DateTime, Utc};
use openssl::hash::MessageDigest;

use super::response::{nesting_exceeds, MAX_DEPTH, NS_ASSERTION, NS_DSIG, NS_PROTOCOL};
use super::xml::parse;
use super::{SamlError, ServiceProvider};

/// Largest inflated message read; a LogoutRequest is well under 4 KiB.
const MAX_INFLATED: u64 = 64 * 1024;
const STATUS_SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";

/// A LogoutRequest from the IdP whose signature has been verified.
#[derive(Debug, Clone)]
pub struct IdpLogoutRequest {
    pub id: String,
    pub name_id: String,
    /// Empty: every session of that NameID.
    pub session_indexes: Vec<String>,
    /// Until when the request could be replayed (for the replay cache).
    pub replay_until: DateTime<Utc>,
}

/// What arrived at our SingleLogoutService.
#[derive(Debug)]
pub enum SloMessage {
    Request {
        request: IdpLogoutRequest,
        relay_state: Option<String>,
    },
    /// The IdP's answer to our LogoutRequest.
    Response { status: String },
}

impl ServiceProvider {
    /// Whether the IdP's metadata has a SingleLogoutService we can send to.
    pub fn idp_has_slo(&self) -> bool {
        self.idp_slo.is_some()
    }

    /// Our LogoutRequest for one session, as the URL to send the browser to; `None` when the
    /// IdP has no SingleLogoutService.
    pub fn logout_request_url(
        &self,
        name_id: &str,
        name_id_format: Option<&str>,
        session_index: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Option<String>, SamlError> {
        let Some((location, _)) = &self.idp_slo else {
            return Ok(None);
        };
        let format = name_id_format
            .map(|f| format!(" Format=\"{}\"", esc(f)))
            .unwrap_or_default();
        let index = session_index
            .map(|i| format!("<samlp:SessionIndex>{}</samlp:SessionIndex>", esc(i)))
            .unwrap_or_default();
        let xml = format!(
            "<samlp:LogoutRequest xmlns:samlp=\"{NS_PROTOCOL}\" xmlns:saml=\"{NS_ASSERTION}\" ID=\"{}\" Version=\"2.0\" IssueInstant=\"{}\" Destination=\"{}\"><saml:Issuer>{}</saml:Issuer><saml:NameID{format}>{}</saml:NameID>{index}</samlp:LogoutRequest>",
            super::request::new_request_id(),
            now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            esc(location),
            esc(&self.entity_id),
            esc(name_id),
        );
        self.redirect_url(location, "SAMLRequest", &xml, None)
            .map(Some)
    }

    /// Our LogoutResponse to the IdP's request `in_response_to`.
    pub fn logout_response_url(
        &self,
        in_response_to: &str,
        success: bool,
        relay_state: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Option<String>, SamlError> {
        let Some((_, location)) = &self.idp_slo else {
            return Ok(None);
        };
        let status = if success {
            STATUS_SUCCESS
        } else {
            "urn:oasis:names:tc:SAML:2.0:status:Responder"
        };
        let xml = format!(
            "<samlp:LogoutResponse xmlns:samlp=\"{NS_PROTOCOL}\" xmlns:saml=\"{NS_ASSERTION}\" ID=\"{}\" Version=\"2.0\" IssueInstant=\"{}\" Destination=\"{}\" InResponseTo=\"{}\"><saml:Issuer>{}</saml:Issuer><samlp:Status><samlp:StatusCode Value=\"{status}\"/></samlp:Status></samlp:LogoutResponse>",
            super::request::new_request_id(),
            now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            esc(location),
            esc(in_response_to),
            esc(&self.entity_id),
        );
        self.redirect_url(location, "SAMLResponse", &xml, relay_state)
            .map(Some)
    }

    /// `location?param=<deflated, base64>&RelayState=..`, signed when we have a key.
    fn redirect_url(
        &self,
        location: &str,
        param: &str,
        xml: &str,
        relay_state: Option<&str>,
    ) -> Result<String, SamlError> {
        let mut deflated = Vec::new();
        {
            let mut enc =
                flate2::write::DeflateEncoder::new(&mut deflated, flate2::Compression::default());
            enc.write_all(xml.as_bytes())
                .and_then(|_| enc.finish().map(|_| ()))
                .map_err(|e| SamlError::Other(format!("cannot deflate {param}: {e}")))?;
        }
        let mut url: url::Url = location
            .parse()
            .map_err(|e| SamlError::Other(format!("IdP SLO location `{location}`: {e}")))?;
        url.query_pairs_mut().append_pair(
            param,
            &base64::engine::general_purpose::STANDARD.encode(&deflated),
        );
        if let Some(rs) = relay_state.filter(|r| !r.is_empty()) {
            url.query_pairs_mut().append_pair("RelayState", rs);
        }
        if let Some(k) = &self.signing_key {
            url = samael::crypto::sign_url(url, k.key())
                .map_err(|e| SamlError::Other(format!("cannot sign {param}: {e}")))?;
        }
        Ok(url.to_string())
    }

    /// A GET at our SingleLogoutService (HTTP-Redirect binding), from its raw query string.
    pub fn slo_redirect(
        &self,
        raw_query: &str,
        now: DateTime<Utc>,
    ) -> Result<SloMessage, SamlError> {
        let mut fields: Vec<(&str, &str)> = Vec::new();
        for pair in raw_query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if fields.iter().any(|(seen, _)| *seen == k) {
                return Err(SamlError::BadXml(format!("query parameter {k} repeated")));
            }
            fields.push((k, v));
        }
        let get = |k: &str| fields.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
        let (param, raw_message) = match (get("SAMLRequest"), get("SAMLResponse")) {
            (Some(m), None) => ("SAMLRequest", m),
            (None, Some(m)) => ("SAMLResponse", m),
            _ => return Err(SamlError::MissingResponse),
        };
        let relay_state = get("RelayState").map(decode_component).transpose()?;
        let signed = match (get("SigAlg"), get("Signature")) {
            (Some(alg), Some(sig)) => {
                // The signed octets: the parameters in this order, exactly as received.
                let mut octets = format!("{param}={raw_message}");
                if let Some(rs) = get("RelayState") {
                    octets.push_str(&format!("&RelayState={rs}"));
                }
                octets.push_str(&format!("&SigAlg={alg}"));
                let alg = decode_component(alg)?;
                let sig = base64::engine::general_purpose::STANDARD
                    .decode(decode_component(sig)?.trim())
                    .map_err(|_| SamlError::BadBase64)?;
                self.verify_query_signature(&alg, octets.as_bytes(), &sig)?;
                true
            }
            (None, None) => false,
            _ => return Err(SamlError::BadSignature),
        };
        let xml = inflate(raw_message)?;
        if param == "SAMLResponse" {
            return self.read_logout_response(&xml);
        }
        if !signed {
            return Err(SamlError::NotSigned);
        }
        let request = self.read_logout_request(&xml, now)?;
        Ok(SloMessage::Request {
            request,
            relay_state,
        })
    }

    /// A POST at our SingleLogoutService (HTTP-POST binding).
    pub fn slo_post(
        &self,
        saml_request: Option<&str>,
        saml_response: Option<&str>,
        relay_state: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<SloMessage, SamlError> {
        let field = saml_request
            .or(saml_response)
            .ok_or(SamlError::MissingResponse)?;
        super::silence_libxml2_here();
        let xml = super::xml::decode_form_field(field)?;
        if saml_request.is_none() {
            return self.read_logout_response(&xml);
        }
        if nesting_exceeds(xml.as_bytes(), MAX_DEPTH) {
            return Err(SamlError::TooDeep(MAX_DEPTH));
        }
        // Structure first (one signature, on the request itself, allowed algorithms), then
        // libxmlsec1 through samael; the request is read from the verified reduction.
        {
            let doc = parse(&xml)?;
            let root = doc.root_element();
            let sigs: Vec<_> = doc
                .descendants()
                .filter(|n| n.has_tag_name((NS_DSIG, "Signature")))
                .collect();
            match sigs.as_slice() {
                [] => return Err(SamlError::NotSigned),
                [s] if s.parent_element() == Some(root) => {}
                _ => return Err(SamlError::SignatureMisplaced),
            }
            for m in sigs[0].descendants().filter(|n| {
                n.has_tag_name((NS_DSIG, "SignatureMethod"))
                    || n.has_tag_name((NS_DSIG, "DigestMethod"))
            }) {
                let alg = m.attribute("Algorithm").unwrap_or("");
                if !self.allowed_algorithms.iter().any(|a| a == alg) {
                    return Err(SamlError::AlgorithmNotAllowed(alg.to_string()));
                }
            }
        }
        let reduced = self.reduce_to_signed(&xml)?;
        let request = self.read_logout_request(&reduced, now)?;
        Ok(SloMessage::Request {
            request,
            relay_state: relay_state.map(str::to_string),
        })
    }

    fn verify_query_signature(
        &self,
        alg: &str,
        octets: &[u8],
        sig: &[u8],
    ) -> Result<(), SamlError> {
        if !self.allowed_algorithms.iter().any(|a| a == alg) {
            return Err(SamlError::AlgorithmNotAllowed(alg.to_string()));
        }
        let digest = match alg {
            "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256" => MessageDigest::sha256(),
            "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384" => MessageDigest::sha384(),
            "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512" => MessageDigest::sha512(),
            crate::config::RSA_SHA1 => MessageDigest::sha1(),
            other => {
                return Err(SamlError::AlgorithmNotAllowed(format!(
                    "{other} (for HTTP-Redirect)"
                )))
            }
        };
        let ok = self.idp_keys.iter().any(|key| {
            openssl::sign::Verifier::new(digest, key)
                .and_then(|mut v| v.verify_oneshot(sig, octets))
                .unwrap_or(false)
        });
        if ok {
            Ok(())
        } else {
            Err(SamlError::BadSignature)
        }
    }

    fn read_logout_request(
        &self,
        xml: &str,
        now: DateTime<Utc>,
    ) -> Result<IdpLogoutRequest, SamlError> {
        let doc = parse(xml)?;
        let root = doc.root_element();
        if !root.has_tag_name((NS_PROTOCOL, "LogoutRequest")) {
            return Err(SamlError::NotAResponse(root.tag_name().name().to_string()));
        }
        let issuer = root
            .children()
            .find(|n| n.has_tag_name((NS_ASSERTION, "Issuer")))
            .and_then(|n| n.text())
            .map(str::trim)
            .unwrap_or("");
        if issuer != self.idp_entity_id {
            return Err(SamlError::IssuerMismatch {
                got: issuer.to_string(),
                expected: self.idp_entity_id.clone(),
            });
        }
        if let Some(dest) = root.attribute("Destination") {
            if dest != self.slo_url {
                return Err(SamlError::DestinationMismatch {
                    got: dest.to_string(),
                    expected: self.slo_url.clone(),
                });
            }
        }
        let id = root
            .attribute("ID")
            .filter(|i| !i.is_empty())
            .ok_or_else(|| SamlError::BadXml("LogoutRequest without ID".into()))?;
        let time = |name: &str| -> Result<Option<DateTime<Utc>>, SamlError> {
            root.attribute(name)
                .map(|t| {
                    DateTime::parse_from_rfc3339(t)
                        .map(|t| t.with_timezone(&Utc))
                        .map_err(|_| {
                            SamlError::Time(format!(
                                "LogoutRequest {name} `{t}` is not a valid time"
                            ))
                        })
                })
                .transpose()
        };
        let clock = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let issued = time("IssueInstant")?
            .ok_or_else(|| SamlError::Time("LogoutRequest without IssueInstant".into()))?;
        if issued > now + self.clock_skew || issued + self.max_issue_delay + self.clock_skew < now {
            return Err(SamlError::Time(format!(
                "LogoutRequest IssueInstant {issued} is outside the accepted window; gateway clock {clock}"
            )));
        }
        if let Some(end) = time("NotOnOrAfter")? {
            if end + self.clock_skew <= now {
                return Err(SamlError::Time(format!(
                    "LogoutRequest NotOnOrAfter {end} has passed; gateway clock {clock}"
                )));
            }
        }
        if root
            .children()
            .any(|n| n.has_tag_name((NS_ASSERTION, "EncryptedID")))
        {
            return Err(SamlError::Other(
                "LogoutRequest with an EncryptedID is not supported".into(),
            ));
        }
        let name_id = root
            .children()
            .find(|n| n.has_tag_name((NS_ASSERTION, "NameID")))
            .and_then(|n| n.text())
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(SamlError::NoNameId)?;
        let session_indexes = root
            .children()
            .filter(|n| n.has_tag_name((NS_PROTOCOL, "SessionIndex")))
            .filter_map(|n| n.text())
            .map(|t| t.trim().to_string())
            .collect();
        Ok(IdpLogoutRequest {
            id: id.to_string(),
            name_id: name_id.to_string(),
            session_indexes,
            replay_until: issued + self.max_issue_delay + self.clock_skew,
        })
    }

    fn read_logout_response(&self, xml: &str) -> Result<SloMessage, SamlError> {
        let doc = parse(xml)?;
        let root = doc.root_element();
        if !root.has_tag_name((NS_PROTOCOL, "LogoutResponse")) {
            return Err(SamlError::NotAResponse(root.tag_name().name().to_string()));
        }
        let status = root
            .children()
            .find(|n| n.has_tag_name((NS_PROTOCOL, "Status")))
            .and_then(|s| {
                s.children()
                    .find(|n| n.has_tag_name((NS_PROTOCOL, "StatusCode")))
            })
            .and_then(|c| c.attribute("Value"))
            .unwrap_or("")
            .to_string();
        Ok(SloMessage::Response { status })
    }
}

/// A Redirect-binding message parameter (percent-encoded, base64, deflated) as XML.
fn inflate(raw: &str) -> Result<String, SamlError> {
    let message = decode_component(raw)?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(message.trim())
        .map_err(|_| SamlError::BadBase64)?;
    let mut xml = String::new();
    flate2::read::DeflateDecoder::new(&bytes[..])
        .take(MAX_INFLATED + 1)
        .read_to_string(&mut xml)
        .map_err(|_| SamlError::BadXml("not a deflated UTF-8 message".into()))?;
    if xml.len() as u64 > MAX_INFLATED {
        return Err(SamlError::TooLarge(xml.len(), MAX_INFLATED as usize));
    }
    Ok(xml)
}

/// The Issuer a message at our SingleLogoutService claims, unverified: only to pick which
/// IdP's keys then verify it. `raw_query` for HTTP-Redirect, `form_field` (SAMLRequest or
/// SAMLResponse) for HTTP-POST.
pub fn peek_slo_issuer(raw_query: Option<&str>, form_field: Option<&str>) -> Option<String> {
    let xml = match (raw_query, form_field) {
        (Some(q), _) => {
            let raw = q.split('&').find_map(|p| {
                p.strip_prefix("SAMLRequest=")
                    .or_else(|| p.strip_prefix("SAMLResponse="))
            })?;
            inflate(raw).ok()?
        }
        (None, Some(f)) => super::xml::decode_form_field(f).ok()?,
        (None, None) => return None,
    };
    super::response::peek_xml_issuer(&xml)
}

/// One percent-encoded query component, decoded (`+` is a space, as in forms).
fn decode_component(raw: &str) -> Result<String, SamlError> {
    let plus = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| SamlError::BadXml("query parameter is not UTF-8".into()))
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
