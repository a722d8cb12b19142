//! The one hardened way this module reads SAML messages: a bounded form field, bounded
//! nesting (checked by a flat scan before any parser recurses), a node limit, and no DTD.

use base64::Engine as _;

use super::response::{nesting_exceeds, MAX_DEPTH, MAX_FORM_FIELD, MAX_NODES, NS_ASSERTION};
use super::SamlError;

/// A POSTed SAML form field (base64, possibly wrapped at 76 columns) as text.
pub(super) fn decode_form_field(field: &str) -> Result<String, SamlError> {
    if field.len() > MAX_FORM_FIELD {
        return Err(SamlError::TooLarge(field.len(), MAX_FORM_FIELD));
    }
    let compact: String = field.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|_| SamlError::BadBase64)?;
    String::from_utf8(bytes).map_err(|_| SamlError::BadXml("not UTF-8".into()))
}

pub(super) fn parse(xml: &str) -> Result<roxmltree::Document<'_>, SamlError> {
    if nesting_exceeds(xml.as_bytes(), MAX_DEPTH) {
        return Err(SamlError::TooDeep(MAX_DEPTH));
    }
    let opts = roxmltree::ParsingOptions {
        allow_dtd: false,
        nodes_limit: MAX_NODES,
    };
    roxmltree::Document::parse_with_options(xml, opts).map_err(|e| match e {
        roxmltree::Error::DtdDetected => SamlError::Dtd,
        e => SamlError::BadXml(e.to_string()),
    })
}

/// Every Assertion and EncryptedAssertion anywhere in the document.
pub(super) fn assertions<'a, 'i>(doc: &'a roxmltree::Document<'i>) -> Vec<roxmltree::Node<'a, 'i>> {
    doc.descendants()
        .filter(|n| {
            n.has_tag_name((NS_ASSERTION, "Assertion"))
                || n.has_tag_name((NS_ASSERTION, "EncryptedAssertion"))
        })
        .collect()
}
