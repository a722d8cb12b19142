//! SP metadata: what the operator hands to the IdP.

use super::decrypt::ADVERTISED;
use super::ServiceProvider;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

impl ServiceProvider {
    /// The SP's metadata XML. Written by hand rather than through samael so that it states
    /// exactly what this gateway does: it wants signed assertions, takes the HTTP-POST binding
    /// at the ACS, takes logout at its SingleLogoutService (Redirect and POST), accepts the
    /// NameID formats `[identity]` accepts, publishes its signing certificate when it has one,
    /// and, with `[[sp.encryption]]`, its encryption certificates (current first) with the
    /// algorithms it decrypts.
    pub fn sp_metadata_xml(&self) -> String {
        let mut keys = String::new();
        if let Some(k) = &self.signing_key {
            keys.push_str(&format!(
                "    <md:KeyDescriptor use=\"signing\">\n      <ds:KeyInfo><ds:X509Data><ds:X509Certificate>{}</ds:X509Certificate></ds:X509Data></ds:KeyInfo>\n    </md:KeyDescriptor>\n",
                k.cert_b64
            ));
        }
        for k in &self.decryption_keys {
            keys.push_str(&format!(
                "    <md:KeyDescriptor use=\"encryption\">\n      <ds:KeyInfo><ds:X509Data><ds:X509Certificate>{}</ds:X509Certificate></ds:X509Data></ds:KeyInfo>\n",
                k.cert_b64
            ));
            for alg in ADVERTISED {
                keys.push_str(&format!(
                    "      <md:EncryptionMethod Algorithm=\"{alg}\"/>\n"
                ));
            }
            keys.push_str("    </md:KeyDescriptor>\n");
        }
        let formats: String = self
            .name_id_formats
            .iter()
            .map(|f| format!("    <md:NameIDFormat>{}</md:NameIDFormat>\n", esc(f)))
            .collect();
        // With `sp.sign_metadata`: an enveloped signature template, filled in by libxmlsec1.
        let template = match (&self.signing_key, self.sign_metadata) {
            (Some(k), true) => {
                let id = super::request::new_request_id();
                Some((
                    id.clone(),
                    format!(
                        "  <ds:Signature><ds:SignedInfo><ds:CanonicalizationMethod Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/><ds:SignatureMethod Algorithm=\"http://www.w3.org/2001/04/xmldsig-more#rsa-sha256\"/><ds:Reference URI=\"#{id}\"><ds:Transforms><ds:Transform Algorithm=\"http://www.w3.org/2000/09/xmldsig#enveloped-signature\"/><ds:Transform Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/></ds:Transforms><ds:DigestMethod Algorithm=\"http://www.w3.org/2001/04/xmlenc#sha256\"/><ds:DigestValue></ds:DigestValue></ds:Reference></ds:SignedInfo><ds:SignatureValue></ds:SignatureValue><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></ds:Signature>\n",
                        k.cert_b64
                    ),
                ))
            }
            _ => None,
        };
        let xml = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="{entity}"{id}>
{signature}  <md:SPSSODescriptor AuthnRequestsSigned="{signed}" WantAssertionsSigned="true" protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
{keys}    <md:SingleLogoutService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="{slo}"/>
    <md:SingleLogoutService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="{slo}"/>
{formats}    <md:AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="{acs}" index="0" isDefault="true"/>
  </md:SPSSODescriptor>
</md:EntityDescriptor>
"#,
            entity = esc(&self.entity_id),
            acs = esc(&self.acs_url),
            slo = esc(&self.slo_url),
            signed = self.signing_key.is_some() && self.sign_authn_requests,
            id = template
                .as_ref()
                .map(|(id, _)| format!(" ID=\"{id}\""))
                .unwrap_or_default(),
            signature = template.as_ref().map(|(_, t)| t.as_str()).unwrap_or(""),
        );
        match (&self.signing_key, &template) {
            (Some(k), Some(_)) => sign(&xml, k).unwrap_or_else(|e| {
                log::error!("SP metadata could not be signed, served unsigned: {e}");
                xml
            }),
            _ => xml,
        }
    }
}

/// Fill in the signature template with our signing key (libxmlsec1, through samael).
fn sign(xml: &str, key: &super::keys::KeyPair) -> Result<String, String> {
    use samael::crypto::CryptoProvider as _;
    let der = key.key().private_key_to_der().map_err(|e| e.to_string())?;
    samael::crypto::Crypto::sign_xml(xml, &der).map_err(|e| e.to_string())
}
