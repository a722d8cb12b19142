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
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="{entity}">
  <md:SPSSODescriptor AuthnRequestsSigned="{signed}" WantAssertionsSigned="true" protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
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
        )
    }
}
