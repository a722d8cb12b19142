//! Encrypted assertions, as real IdPs send them (XML Encryption 1.0/1.1).
//!
//! samael decrypts only AES-128 inside a signed Response and never checks the inner signature,
//! while Entra ID and ADFS sign the assertion, encrypt it and leave the Response unsigned. So
//! the `EncryptedAssertion` is opened here and the plaintext `Assertion` is put back where it
//! was; the result then goes through exactly the same checks and the same samael verification
//! as a plain response. Nothing decrypted is trusted on its own: anyone can encrypt to our
//! public certificate, so either the Assertion inside carries a signature samael verifies, or
//! the Response signature, verified here before decryption, covers the ciphertext.
//!
//! Padding oracles: every failure after the algorithms are known (key transport, key length,
//! padding, GCM tag, UTF-8, well-formedness, "is it one Assertion") is the same
//! `SamlError::Undecryptable`, so a sender learns nothing about where decryption failed.

use openssl::md::{Md, MdRef};
use openssl::pkey::{PKey, Private};
use openssl::rsa::Padding;
use openssl::symm::Cipher;

use super::response::{NS_ASSERTION, NS_DSIG, NS_PROTOCOL};
use super::xml::{assertions, parse};
use super::{SamlError, ServiceProvider};

const NS_XENC: &str = "http://www.w3.org/2001/04/xmlenc#";
const NS_XENC11: &str = "http://www.w3.org/2009/xmlenc11#";

/// One accepted data encryption algorithm: URI, cipher, and whether it is GCM.
type DataAlgorithm = (&'static str, fn() -> Cipher, bool);

const DATA_ALGORITHMS: &[DataAlgorithm] = &[
    (
        "http://www.w3.org/2009/xmlenc11#aes128-gcm",
        Cipher::aes_128_gcm,
        true,
    ),
    (
        "http://www.w3.org/2009/xmlenc11#aes192-gcm",
        Cipher::aes_192_gcm,
        true,
    ),
    (
        "http://www.w3.org/2009/xmlenc11#aes256-gcm",
        Cipher::aes_256_gcm,
        true,
    ),
    (
        "http://www.w3.org/2001/04/xmlenc#aes128-cbc",
        Cipher::aes_128_cbc,
        false,
    ),
    (
        "http://www.w3.org/2001/04/xmlenc#aes192-cbc",
        Cipher::aes_192_cbc,
        false,
    ),
    (
        "http://www.w3.org/2001/04/xmlenc#aes256-cbc",
        Cipher::aes_256_cbc,
        false,
    ),
];

/// Key transport: RSA-OAEP only. PKCS#1 v1.5 (`rsa-1_5`) is refused: it is the classic
/// Bleichenbacher oracle, and every IdP we target can use OAEP.
const RSA_OAEP_MGF1P: &str = "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p";
const RSA_OAEP: &str = "http://www.w3.org/2009/xmlenc11#rsa-oaep";

/// What the SP metadata offers, in order of preference.
pub(super) const ADVERTISED: &[&str] = &[
    "http://www.w3.org/2009/xmlenc11#aes256-gcm",
    "http://www.w3.org/2009/xmlenc11#aes128-gcm",
    "http://www.w3.org/2001/04/xmlenc#aes256-cbc",
    "http://www.w3.org/2001/04/xmlenc#aes128-cbc",
    RSA_OAEP,
    RSA_OAEP_MGF1P,
];

/// A response whose EncryptedAssertion has been replaced by the plaintext Assertion.
pub(super) struct Opened {
    pub xml: String,
    /// The Response signature was verified before decryption (and then removed, since it
    /// covers the ciphertext, not the plaintext).
    pub response_verified: bool,
    /// That Response signature used a SHA-1 algorithm the operator allowed.
    pub weak_algorithm: bool,
}

impl ServiceProvider {
    /// Open the one `EncryptedAssertion` of a Response, or `None` when there is none.
    pub(super) fn open_encrypted(&self, xml: &str) -> Result<Option<Opened>, SamlError> {
        let doc = parse(xml)?;
        let root = doc.root_element();
        if !root.has_tag_name((NS_PROTOCOL, "Response")) {
            return Ok(None); // reported by `inspect`
        }
        let count = |d: &roxmltree::Document| assertions(d).len();
        let Some(encrypted) = root
            .children()
            .find(|n| n.has_tag_name((NS_ASSERTION, "EncryptedAssertion")))
        else {
            if self.require_encryption && count(&doc) > 0 {
                return Err(SamlError::EncryptionRequired);
            }
            return Ok(None);
        };
        if count(&doc) != 1 {
            return Err(SamlError::AssertionCount(count(&doc)));
        }
        if self.decryption_keys.is_empty() {
            return Err(SamlError::NoDecryptionKey);
        }

        let response_signed = root
            .children()
            .any(|n| n.has_tag_name((NS_DSIG, "Signature")));
        if !response_signed {
            let plain = self.decrypt(encrypted)?;
            let spliced = splice(xml, encrypted.range(), &plain, None);
            check_opened(&spliced)?;
            return Ok(Some(Opened {
                xml: spliced,
                response_verified: false,
                weak_algorithm: false,
            }));
        }

        // The Response signature covers the ciphertext: verify it now, on what samael reduces
        // the message to, and decrypt from that reduced (verified-only) copy.
        let weak_algorithm = self.check_algorithms(root)?;
        let reduced = self.reduce_to_signed(xml)?;
        let rdoc = parse(&reduced)?;
        let rroot = rdoc.root_element();
        if !rroot.has_tag_name((NS_PROTOCOL, "Response")) || count(&rdoc) != 1 {
            // The signature covers something other than the whole Response.
            return Err(SamlError::SignatureMisplaced);
        }
        let renc = rroot
            .children()
            .find(|n| n.has_tag_name((NS_ASSERTION, "EncryptedAssertion")))
            .ok_or(SamlError::AssertionMisplaced)?;
        let plain = self.decrypt(renc)?;
        let signature = rroot
            .children()
            .find(|n| n.has_tag_name((NS_DSIG, "Signature")))
            .map(|n| n.range());
        let spliced = splice(&reduced, renc.range(), &plain, signature);
        check_opened(&spliced)?;
        Ok(Some(Opened {
            xml: spliced,
            response_verified: true,
            weak_algorithm,
        }))
    }

    /// Every SignatureMethod/DigestMethod of the Response's own signature on the allow-list;
    /// true if one of them is an allowed SHA-1.
    fn check_algorithms(&self, root: roxmltree::Node) -> Result<bool, SamlError> {
        let mut weak = false;
        for sig in root
            .children()
            .filter(|n| n.has_tag_name((NS_DSIG, "Signature")))
        {
            for m in sig.descendants().filter(|n| {
                n.has_tag_name((NS_DSIG, "SignatureMethod"))
                    || n.has_tag_name((NS_DSIG, "DigestMethod"))
            }) {
                let alg = m.attribute("Algorithm").unwrap_or("");
                if !self.allowed_algorithms.iter().any(|a| a == alg) {
                    return Err(SamlError::AlgorithmNotAllowed(alg.to_string()));
                }
                weak |= alg.contains("sha1");
            }
        }
        Ok(weak)
    }

    /// The plaintext of one EncryptedAssertion, tried with every key we hold (rollover).
    fn decrypt(&self, encrypted: roxmltree::Node) -> Result<String, SamlError> {
        let data = encrypted
            .children()
            .find(|n| n.has_tag_name((NS_XENC, "EncryptedData")))
            .ok_or(SamlError::Undecryptable)?;
        let data_alg = algorithm(data).ok_or(SamlError::Undecryptable)?;
        let &(_, cipher, gcm) = DATA_ALGORITHMS
            .iter()
            .find(|(uri, _, _)| *uri == data_alg)
            .ok_or_else(|| SamlError::EncryptionAlgorithm(data_alg.to_string()))?;
        let cipher = cipher();
        let ciphertext = cipher_value(data).ok_or(SamlError::Undecryptable)?;

        // The EncryptedKey sits in the EncryptedData's KeyInfo, or beside the EncryptedData.
        let keys: Vec<_> = encrypted
            .descendants()
            .filter(|n| n.has_tag_name((NS_XENC, "EncryptedKey")))
            .collect();
        if keys.is_empty() {
            return Err(SamlError::Undecryptable);
        }
        // Algorithms first: refusing one is not an oracle (the sender chose it).
        let mut transports = Vec::new();
        for k in &keys {
            transports.push((key_transport(*k)?, cipher_value(*k)));
        }
        for (transport, wrapped) in &transports {
            let Some(wrapped) = wrapped else { continue };
            for ours in &self.decryption_keys {
                let Some(session_key) = unwrap_key(ours.key(), transport, wrapped) else {
                    continue;
                };
                if session_key.len() != cipher.key_len() {
                    continue;
                }
                if let Some(plain) = decrypt_data(cipher, gcm, &session_key, &ciphertext) {
                    return String::from_utf8(plain).map_err(|_| SamlError::Undecryptable);
                }
            }
        }
        Err(SamlError::Undecryptable)
    }
}

/// `xml` with `range` replaced by `plain`, and `drop` (a range before or after it) removed.
fn splice(
    xml: &str,
    range: std::ops::Range<usize>,
    plain: &str,
    drop: Option<std::ops::Range<usize>>,
) -> String {
    let plain = plain.trim_start_matches('\u{feff}');
    let plain = match plain.trim_start().strip_prefix("<?xml") {
        Some(rest) => rest.split_once("?>").map(|(_, r)| r).unwrap_or(""),
        None => plain,
    };
    let mut out = String::with_capacity(xml.len() + plain.len());
    let mut cuts = vec![(range, plain)];
    if let Some(d) = drop {
        cuts.push((d, ""));
    }
    cuts.sort_by_key(|(r, _)| r.start);
    let mut at = 0;
    for (r, with) in cuts {
        out.push_str(&xml[at..r.start]);
        out.push_str(with);
        at = r.end;
    }
    out.push_str(&xml[at..]);
    out
}

/// The decrypted document is well-formed and the plaintext became exactly one Assertion, the
/// Response's child. Anything else is reported as `Undecryptable` too (see the module doc).
fn check_opened(xml: &str) -> Result<(), SamlError> {
    if super::response::nesting_exceeds(xml.as_bytes(), super::response::MAX_DEPTH) {
        return Err(SamlError::Undecryptable);
    }
    let doc = parse(xml).map_err(|_| SamlError::Undecryptable)?;
    let root = doc.root_element();
    match assertions(&doc).as_slice() {
        [a] if a.has_tag_name((NS_ASSERTION, "Assertion")) && a.parent_element() == Some(root) => {
            Ok(())
        }
        _ => Err(SamlError::Undecryptable),
    }
}

fn algorithm<'a>(n: roxmltree::Node<'a, 'a>) -> Option<&'a str> {
    n.children()
        .find(|c| c.has_tag_name((NS_XENC, "EncryptionMethod")))
        .and_then(|m| m.attribute("Algorithm"))
}

fn cipher_value(n: roxmltree::Node) -> Option<Vec<u8>> {
    let text: String = n
        .children()
        .find(|c| c.has_tag_name((NS_XENC, "CipherData")))?
        .children()
        .find(|c| c.has_tag_name((NS_XENC, "CipherValue")))?
        .text()?
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text.as_bytes())
        .ok()
}

/// RSA-OAEP parameters: the OAEP digest, the MGF1 digest, the label.
struct Transport {
    digest: &'static MdRef,
    mgf1: &'static MdRef,
    label: Option<Vec<u8>>,
}

fn key_transport(k: roxmltree::Node) -> Result<Transport, SamlError> {
    let method = k
        .children()
        .find(|c| c.has_tag_name((NS_XENC, "EncryptionMethod")))
        .ok_or(SamlError::Undecryptable)?;
    let alg = method.attribute("Algorithm").unwrap_or("");
    let digest_uri = method
        .children()
        .find(|c| c.has_tag_name((NS_DSIG, "DigestMethod")))
        .and_then(|d| d.attribute("Algorithm"));
    let digest = match digest_uri {
        None | Some("http://www.w3.org/2000/09/xmldsig#sha1") => Md::sha1(),
        Some("http://www.w3.org/2001/04/xmlenc#sha256") => Md::sha256(),
        Some("http://www.w3.org/2001/04/xmldsig-more#sha384") => Md::sha384(),
        Some("http://www.w3.org/2001/04/xmlenc#sha512") => Md::sha512(),
        Some(other) => return Err(SamlError::EncryptionAlgorithm(other.to_string())),
    };
    let mgf1 = match alg {
        RSA_OAEP_MGF1P => Md::sha1(),
        RSA_OAEP => match method
            .children()
            .find(|c| c.has_tag_name((NS_XENC11, "MGF")))
            .and_then(|m| m.attribute("Algorithm"))
        {
            None | Some("http://www.w3.org/2009/xmlenc11#mgf1sha1") => Md::sha1(),
            Some("http://www.w3.org/2009/xmlenc11#mgf1sha256") => Md::sha256(),
            Some("http://www.w3.org/2009/xmlenc11#mgf1sha384") => Md::sha384(),
            Some("http://www.w3.org/2009/xmlenc11#mgf1sha512") => Md::sha512(),
            Some(other) => return Err(SamlError::EncryptionAlgorithm(other.to_string())),
        },
        other => return Err(SamlError::EncryptionAlgorithm(other.to_string())),
    };
    let label = method
        .children()
        .find(|c| c.has_tag_name((NS_XENC, "OAEPparams")))
        .and_then(|p| p.text())
        .map(|t| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.decode(t.trim().as_bytes())
        })
        .transpose()
        .map_err(|_| SamlError::Undecryptable)?;
    Ok(Transport {
        digest,
        mgf1,
        label,
    })
}

fn unwrap_key(key: &PKey<Private>, t: &Transport, wrapped: &[u8]) -> Option<Vec<u8>> {
    let mut ctx = openssl::pkey_ctx::PkeyCtx::new(key).ok()?;
    ctx.decrypt_init().ok()?;
    ctx.set_rsa_padding(Padding::PKCS1_OAEP).ok()?;
    ctx.set_rsa_oaep_md(t.digest).ok()?;
    ctx.set_rsa_mgf1_md(t.mgf1).ok()?;
    if let Some(label) = &t.label {
        ctx.set_rsa_oaep_label(label).ok()?;
    }
    let mut out = Vec::new();
    ctx.decrypt_to_vec(wrapped, &mut out).ok()?;
    Some(out)
}

/// AES-GCM: 12-byte IV, ciphertext, 16-byte tag. AES-CBC: 16-byte IV, ciphertext, with the
/// XML Encryption padding (the last byte counts the padding bytes; the others are arbitrary).
fn decrypt_data(cipher: Cipher, gcm: bool, key: &[u8], data: &[u8]) -> Option<Vec<u8>> {
    if gcm {
        if data.len() < 12 + 16 {
            return None;
        }
        let (iv, rest) = data.split_at(12);
        let (body, tag) = rest.split_at(rest.len() - 16);
        openssl::symm::decrypt_aead(cipher, key, Some(iv), &[], body, tag).ok()
    } else {
        let block = cipher.block_size();
        if data.len() < 2 * block || !data.len().is_multiple_of(block) {
            return None;
        }
        let (iv, body) = data.split_at(block);
        let mut c =
            openssl::symm::Crypter::new(cipher, openssl::symm::Mode::Decrypt, key, Some(iv))
                .ok()?;
        c.pad(false);
        let mut out = vec![0; body.len() + block];
        let mut n = c.update(body, &mut out).ok()?;
        n += c.finalize(&mut out[n..]).ok()?;
        out.truncate(n);
        let pad = *out.last()? as usize;
        if pad == 0 || pad > block || pad > out.len() {
            return None;
        }
        out.truncate(out.len() - pad);
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cbc(key: &[u8], iv: &[u8], padded: &[u8]) -> Vec<u8> {
        let mut c = openssl::symm::Crypter::new(
            Cipher::aes_128_cbc(),
            openssl::symm::Mode::Encrypt,
            key,
            Some(iv),
        )
        .unwrap();
        c.pad(false);
        let mut out = vec![0; padded.len() + 16];
        let n = c.update(padded, &mut out).unwrap();
        out.truncate(n);
        [iv, &out].concat()
    }

    #[test]
    fn cbc_padding_follows_xml_encryption_and_refuses_nonsense() {
        let (key, iv) = ([7u8; 16], [9u8; 16]);
        // XML Encryption padding: arbitrary bytes, then the count.
        let mut block = b"<a/>".to_vec();
        block.extend([0xAA; 11]);
        block.push(12);
        let plain = decrypt_data(Cipher::aes_128_cbc(), false, &key, &cbc(&key, &iv, &block));
        assert_eq!(plain.as_deref(), Some(&b"<a/>"[..]));
        for last in [0u8, 17, 255] {
            let mut bad = block.clone();
            *bad.last_mut().unwrap() = last;
            let data = cbc(&key, &iv, &bad);
            assert!(decrypt_data(Cipher::aes_128_cbc(), false, &key, &data).is_none());
        }
        // Short or ragged input is refused before any decryption.
        assert!(decrypt_data(Cipher::aes_128_cbc(), false, &key, &[0; 20]).is_none());
        assert!(decrypt_data(Cipher::aes_128_gcm(), true, &key, &[0; 27]).is_none());
    }

    #[test]
    fn splicing_replaces_the_encrypted_part_and_drops_the_spent_signature() {
        let xml = "<R><S/><E>x</E></R>";
        let out = splice(xml, 7..15, "<?xml version=\"1.0\"?><A/>", Some(3..7));
        assert_eq!(out, "<R><A/></R>");
    }
}
