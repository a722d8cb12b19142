//! `samlgate demo`: the gateway, a development IdP and an echo backend, all on 127.0.0.1.
//!
//! DEVELOPMENT ONLY. The IdP here signs whatever username and groups are typed into its form;
//! it exists so that a new user can watch a whole login on one machine. It is started only by
//! the `demo` command and is never reachable from `samlgate run`.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use pingora::services::background::background_service;
use samael::crypto::{CertificateDer, Crypto, CryptoProvider};
use samael::idp::response_builder::{build_response_template, ResponseAttribute};
use samael::idp::sp_extractor::RequiredAttribute;
use samael::idp::{CertificateParams, IdentityProvider, KeyType, Rsa};
use samael::traits::ToXml;

use crate::http_service::{HttpService, Resp};
use crate::proxy::respond::html_escape;

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("demo: {0}")]
    Setup(String),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Start(#[from] crate::server::StartError),
}

const BANNER: &str = "DEVELOPMENT ONLY: this identity provider signs in anyone as anything. Never use it for real users.";

/// The demo's ports: gateway `base`, IdP `base + 1`, backend `base + 2`, admin `base + 3`.
pub fn run(data_dir: &Path, base_port: u16) -> Result<(), DemoError> {
    let setup = |e: String| DemoError::Setup(e);
    std::fs::create_dir_all(data_dir).map_err(|e| setup(format!("{}: {e}", data_dir.display())))?;
    let (gw, idp_port, be_port, admin_port) =
        (base_port, base_port + 1, base_port + 2, base_port + 3);
    // Fail now rather than send browsers to whatever else owns one of these ports.
    let bind = |port: u16| {
        std::net::TcpListener::bind(("127.0.0.1", port)).map_err(|e| {
            setup(format!(
                "127.0.0.1:{port} is not free ({e}); the demo needs {gw} to {admin_port}: pick another --port"
            ))
        })
    };
    for port in [gw, admin_port] {
        bind(port)?;
    }
    let (idp_listener, be_listener) = (bind(idp_port)?, bind(be_port)?);
    let idp_base = format!("http://127.0.0.1:{idp_port}");

    let idp = Arc::new(DevIdp::generate(&idp_base).map_err(setup)?);
    write(&data_dir.join("idp-metadata.xml"), &idp.metadata_xml())?;
    let config_path = data_dir.join("samlgate.toml");
    write(
        &config_path,
        &format!(
            r#"# Written by `samlgate demo`; rewritten on every demo start.
[server]
listen = "127.0.0.1:{gw}"
public_url = "http://127.0.0.1:{gw}"
public_paths = ["/public"]
grace_period_seconds = 1

[upstream]
url = "http://127.0.0.1:{be_port}"

[store]
path = "samlgate.redb"

[idp]
metadata_file = "idp-metadata.xml"

[provisioning]
default_groups = ["everyone"]
contact = "the demo operator"

[admin]
listen = "127.0.0.1:{admin_port}"
token_file = "admin.token"
"#
        ),
    )?;
    let cfg = crate::config::Config::load(&config_path)?;
    let app = crate::server::App::build(cfg)?;

    let services: Vec<Box<dyn pingora::services::ServiceWithDependents>> = vec![
        Box::new(background_service(
            "demo idp",
            HttpService::new(idp_listener, move |req| {
                let idp = idp.clone();
                async move { idp.handle(req).await }
            }),
        )),
        Box::new(background_service(
            "demo backend",
            HttpService::new(be_listener, |req| async move { echo(req) }),
        )),
    ];
    println!("\n  {BANNER}\n");
    println!("  samlgate demo is starting. Open http://127.0.0.1:{gw}/ in a browser.");
    println!("  gateway http://127.0.0.1:{gw}  dev IdP {idp_base}  echo backend http://127.0.0.1:{be_port}");
    println!(
        "  admin API http://127.0.0.1:{admin_port} (try: cargo run -- users list --config {})",
        config_path.display()
    );
    println!("  data and config in {}\n", data_dir.display());
    crate::server::run(app, services)?;
    Ok(())
}

fn write(path: &PathBuf, text: &str) -> Result<(), DemoError> {
    std::fs::write(path, text).map_err(|e| DemoError::Setup(format!("{}: {e}", path.display())))
}

/// IdP metadata for a development IdP at `base` (entity `{base}/idp`, SSO `{base}/sso`).
fn idp_metadata(base: &str, cert: &CertificateDer) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(cert.der_data());
    format!(
        r#"<?xml version="1.0"?>
<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="{base}/idp">
  <md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
    <md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{b64}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>
    <md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="{base}/sso"/>
  </md:IDPSSODescriptor>
</md:EntityDescriptor>
"#
    )
}

/// The AuthnRequest and RelayState carried by an HTTP-Redirect binding query string (or a
/// whole URL): base64, then raw DEFLATE.
pub fn decode_redirect(
    url_or_query: &str,
) -> Option<(samael::schema::AuthnRequest, Option<String>)> {
    let query = url_or_query
        .split_once('?')
        .map_or(url_or_query, |(_, q)| q);
    let q: HashMap<String, String> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(q.get("SAMLRequest")?)
        .ok()?;
    let mut xml = String::new();
    flate2::read::DeflateDecoder::new(&raw[..])
        .read_to_string(&mut xml)
        .ok()?;
    Some((xml.parse().ok()?, q.get("RelayState").cloned()))
}

fn page(status: u16, content_type: &str, body: String) -> Resp {
    Response::builder()
        .status(status)
        .header("Content-Type", content_type)
        .header("Cache-Control", "no-store")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::from_static(b"error"))))
}

async fn form_body(req: Request<hyper::body::Incoming>) -> HashMap<String, String> {
    let bytes = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    form_urlencoded::parse(&bytes).into_owned().collect()
}

/// The backend: echoes the request line and every header it received.
fn echo(req: Request<hyper::body::Incoming>) -> Resp {
    let mut rows = String::new();
    let mut names: Vec<_> = req.headers().iter().collect();
    names.sort_by_key(|(n, _)| n.as_str());
    for (n, v) in names {
        rows.push_str(&format!(
            "<tr><td><code>{}</code></td><td><code>{}</code></td></tr>\n",
            html_escape(n.as_str()),
            html_escape(&String::from_utf8_lossy(v.as_bytes()))
        ));
    }
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>echo backend</title></head>\
<body style=\"font-family:sans-serif\"><h1>Echo backend</h1><p>This is the application behind samlgate. \
It received <code>{} {}</code> with these headers (identity headers are percent-encoded; see README):</p>\
<table border=\"1\" cellpadding=\"4\">{rows}</table><p><a href=\"/_saml/logout\">Sign out</a></p></body></html>",
        html_escape(req.method().as_str()),
        html_escape(&req.uri().to_string()),
    );
    page(200, "text/html; charset=utf-8", body)
}

/// The development IdP: a fresh RSA key and certificate, signing whatever it is asked to.
/// Also used by the benches to make valid responses.
pub struct DevIdp {
    base: String,
    entity_id: String,
    cert: CertificateDer,
    key_der: Vec<u8>,
}

impl DevIdp {
    pub fn generate(base: &str) -> Result<DevIdp, String> {
        let idp = IdentityProvider::generate_new(KeyType::Rsa(Rsa::Rsa2048))
            .map_err(|e| format!("generating the IdP key: {e}"))?;
        let cert = idp
            .create_certificate(&CertificateParams {
                common_name: "samlgate demo IdP (development only)",
                issuer_name: "samlgate demo IdP (development only)",
                days_until_expiration: 30,
            })
            .map_err(|e| format!("making the IdP certificate: {e}"))?;
        let key_der = idp
            .export_private_key_der()
            .map_err(|e| format!("exporting the IdP key: {e}"))?;
        Ok(DevIdp {
            base: base.to_string(),
            entity_id: format!("{base}/idp"),
            cert,
            key_der,
        })
    }

    pub fn metadata_xml(&self) -> String {
        idp_metadata(&self.base, &self.cert)
    }

    async fn handle(&self, req: Request<hyper::body::Incoming>) -> Resp {
        match (req.method().as_str(), req.uri().path()) {
            ("GET", "/sso") => self.login_form(req.uri().query().unwrap_or("")),
            ("POST", "/sso/login") => {
                let form = form_body(req).await;
                self.answer(&form)
            }
            _ => page(404, "text/plain", "not found".into()),
        }
    }

    /// Decode the AuthnRequest and show a form to pick who to be.
    fn login_form(&self, query: &str) -> Resp {
        let q: HashMap<String, String> = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let request = decode_redirect(query).map(|(r, _)| r);
        let Some(request) = request else {
            return page(400, "text/plain", "no valid SAMLRequest".into());
        };
        let acs = request
            .assertion_consumer_service_url
            .clone()
            .unwrap_or_default();
        let sp = request
            .issuer
            .as_ref()
            .and_then(|i| i.value.clone())
            .unwrap_or_default();
        let hidden = |n: &str, v: &str| {
            format!(
                "<input type=\"hidden\" name=\"{n}\" value=\"{}\">",
                html_escape(v)
            )
        };
        let body = format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>Demo IdP</title></head>\
<body style=\"font-family:sans-serif;max-width:40em;margin:2em auto\">\
<p style=\"background:#c00;color:#fff;padding:1em;font-weight:bold\">{BANNER}</p>\
<h1>Demo identity provider</h1><p>Signing in to <code>{sp}</code></p>\
<form method=\"post\" action=\"/sso/login\">{h1}{h2}{h3}{h4}\
<p><label>Username <input name=\"username\" value=\"alice\"></label></p>\
<p><label>Display name <input name=\"display_name\" value=\"Alice Example\"></label></p>\
<p><label>E-mail <input name=\"email\" value=\"alice@example.test\"></label></p>\
<p><label>Groups (comma-separated) <input name=\"groups\" value=\"staff, engineering\"></label></p>\
<p><button type=\"submit\">Sign in</button></p></form></body></html>",
            sp = html_escape(&sp),
            h1 = hidden("request_id", &request.id),
            h2 = hidden("acs", &acs),
            h3 = hidden("audience", &sp),
            h4 = hidden(
                "relay_state",
                q.get("RelayState").map(String::as_str).unwrap_or("")
            ),
        );
        page(200, "text/html; charset=utf-8", body)
    }

    /// A signed Response (XML) answering `request_id`, for `username` with `(name, value)`
    /// attributes. The whole Response is signed, with RSA-SHA256 and a SHA-256 digest.
    pub fn signed_response(
        &self,
        request_id: &str,
        acs: &str,
        audience: &str,
        username: &str,
        attributes: &[(String, String)],
    ) -> Result<String, String> {
        let attributes: Vec<ResponseAttribute> = attributes
            .iter()
            .map(|(n, v)| ResponseAttribute {
                required_attribute: RequiredAttribute {
                    name: n.clone(),
                    format: Some("urn:oasis:names:tc:SAML:2.0:attrname-format:basic".into()),
                },
                value: v.as_str(),
            })
            .collect();
        let mut response = build_response_template(
            &self.cert,
            username,
            audience,
            &self.entity_id,
            acs,
            request_id,
            &attributes,
        );
        // samael's template digests with SHA-1 and gives the bearer confirmation no expiry;
        // the gateway (rightly) refuses both.
        if let Some(sig) = response.signature.as_mut() {
            for r in &mut sig.signed_info.reference {
                r.digest_method.algorithm = samael::signature::DigestAlgorithm::Sha256;
            }
        }
        let expiry = chrono::Utc::now() + chrono::Duration::minutes(5);
        if let Some(a) = response.assertion.as_mut() {
            for sc in a
                .subject
                .iter_mut()
                .flat_map(|s| s.subject_confirmations.iter_mut().flatten())
            {
                if let Some(d) = sc.subject_confirmation_data.as_mut() {
                    d.not_on_or_after = Some(expiry);
                }
            }
        }
        let xml = response.to_string().map_err(|e| e.to_string())?;
        Crypto::sign_xml(xml.as_str(), &self.key_der).map_err(|e| e.to_string())
    }

    /// Sign a response for the form's user and auto-POST it to the gateway's ACS.
    fn answer(&self, form: &HashMap<String, String>) -> Resp {
        let get = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
        let username = get("username").trim();
        if username.is_empty() {
            return page(400, "text/plain", "username is required".into());
        }
        let attributes: Vec<(String, String)> =
            std::iter::once(("displayName".to_string(), get("display_name").to_string()))
                .chain(std::iter::once((
                    "mail".to_string(),
                    get("email").to_string(),
                )))
                .chain(
                    get("groups")
                        .split(',')
                        .map(str::trim)
                        .filter(|g| !g.is_empty())
                        .map(|g| ("groups".to_string(), g.to_string())),
                )
                .collect();
        let acs = get("acs");
        let signed = match self.signed_response(
            get("request_id"),
            acs,
            get("audience"),
            username,
            &attributes,
        ) {
            Ok(s) => s,
            Err(e) => return page(500, "text/plain", format!("signing failed: {e}")),
        };
        let b64 = base64::engine::general_purpose::STANDARD.encode(signed.as_bytes());
        let body = format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>Signing in</title></head>\
<body onload=\"document.forms[0].submit()\"><p style=\"background:#c00;color:#fff;padding:1em\">{BANNER}</p>\
<form method=\"post\" action=\"{acs}\"><input type=\"hidden\" name=\"SAMLResponse\" value=\"{b64}\">\
<input type=\"hidden\" name=\"RelayState\" value=\"{rs}\"><noscript><button>Continue</button></noscript></form></body></html>",
            acs = html_escape(acs),
            rs = html_escape(get("relay_state")),
        );
        page(200, "text/html; charset=utf-8", body)
    }
}
