//! IdP metadata from an https URL: fetched at start and on a schedule, checked in full (it
//! must build a working service provider) before it replaces what is in use, and written to
//! `idp.metadata_file` as the last good copy. A failed fetch, a document that does not
//! parse, that has no signing key, that names another entity, or whose validUntil has passed
//! changes nothing: the last good copy stays in use, and the log says why.
//!
//! Shibboleth SP calls this a MetadataProvider with a backing file; like it, a gateway whose
//! IdP is briefly unreachable still starts from the file.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;

use crate::config::{Config, IdpConfig};
use crate::login::Logins;
use crate::saml::{ServiceProvider, SetupError};

/// Largest metadata document fetched; federation aggregates aside, an IdP's is a few KiB.
const MAX_METADATA: usize = 4 * 1024 * 1024;
const TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: {message}")]
    Fetch { url: String, message: String },
    #[error("{url}: the document is not usable: {error}")]
    Unusable { url: String, error: SetupError },
    #[error("{url}: names entity `{got}`, but the metadata in use is for `{expected}`")]
    OtherEntity {
        url: String,
        got: String,
        expected: String,
    },
    #[error("cannot write the last good copy {file}: {error}")]
    Save { file: String, error: std::io::Error },
}

/// At start: fetch, and on success save the copy; on failure fall back to the file if there
/// is one. Returns the service provider to start with.
pub fn at_start(cfg: &Config, idp: &IdpConfig) -> Result<ServiceProvider, SetupError> {
    let Some(url) = &idp.metadata_url else {
        return ServiceProvider::new(cfg, idp);
    };
    let fetched = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| {
            rt.block_on(fetch(url, idp.metadata_ca_file.as_deref()))
                .map_err(|e| e.to_string())
        });
    match fetched {
        Ok(xml) => match ServiceProvider::from_metadata(cfg, idp, &xml, url) {
            Ok(sp) => {
                if let Err(e) = save(&idp.metadata_file, &xml) {
                    log::warn!("{e}");
                }
                log::info!("IdP metadata fetched from {url}");
                Ok(sp)
            }
            Err(e) => {
                log::error!("IdP metadata from {url} is not usable ({e}); starting from the last good copy {}", idp.metadata_file.display());
                ServiceProvider::new(cfg, idp)
            }
        },
        Err(e) => {
            log::error!(
                "IdP metadata could not be fetched ({e}); starting from the last good copy {}",
                idp.metadata_file.display()
            );
            ServiceProvider::new(cfg, idp)
        }
    }
}

/// Refresh every `idp.metadata_refresh`, for the life of the process (its own thread and
/// runtime: a slow IdP never holds up the proxy).
pub fn spawn_refresh(cfg: Arc<Config>, index: usize, logins: Arc<Logins>) {
    let Some(idp) = cfg.idps.get(index).cloned() else {
        return;
    };
    let Some(url) = idp.metadata_url.clone() else {
        return;
    };
    let spawned = std::thread::Builder::new()
        .name("idp-metadata".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    log::error!("IdP metadata refresh cannot start: {e}");
                    return;
                }
            };
            let mut current = std::fs::read_to_string(&idp.metadata_file).unwrap_or_default();
            loop {
                std::thread::sleep(idp.metadata_refresh);
                match rt.block_on(refresh_once(&cfg, &idp, index, &logins, &url, &current)) {
                    Ok(Some(xml)) => current = xml,
                    Ok(None) => log::debug!("IdP metadata at {url} unchanged"),
                    Err(e) => log::error!(
                        "IdP metadata refresh failed, the last good copy stays in use: {e}"
                    ),
                }
                if let Some(until) = logins.idp_sp(index).valid_until() {
                    if until <= chrono::Utc::now() {
                        log::error!("the IdP metadata in use expired at {until} and no valid copy could be fetched from {url}");
                    }
                }
            }
        });
    if let Err(e) = spawned {
        log::error!("IdP metadata refresh cannot start: {e}");
    }
}

/// One refresh: `Ok(Some(new text))` when something changed and is now in use.
async fn refresh_once(
    cfg: &Config,
    idp: &IdpConfig,
    index: usize,
    logins: &Logins,
    url: &str,
    current: &str,
) -> Result<Option<String>, FetchError> {
    let xml = fetch(url, idp.metadata_ca_file.as_deref()).await?;
    if xml == current {
        return Ok(None);
    }
    let sp = ServiceProvider::from_metadata(cfg, idp, &xml, url).map_err(|error| {
        FetchError::Unusable {
            url: url.into(),
            error,
        }
    })?;
    let old = logins.idp_sp(index);
    if sp.idp_entity_id != old.idp_entity_id {
        return Err(FetchError::OtherEntity {
            url: url.into(),
            got: sp.idp_entity_id.clone(),
            expected: old.idp_entity_id.clone(),
        });
    }
    let changes = describe_changes(&old, &sp);
    save(&idp.metadata_file, &xml)?;
    logins.replace_sp(index, sp);
    log::warn!(
        "IdP metadata from {url} changed and is now in use: {}",
        if changes.is_empty() {
            "no change in keys or endpoints".to_string()
        } else {
            changes.join("; ")
        }
    );
    Ok(Some(xml))
}

/// What an operator needs to know about a new metadata document.
fn describe_changes(old: &ServiceProvider, new: &ServiceProvider) -> Vec<String> {
    let (a, b): (BTreeSet<String>, BTreeSet<String>) = (
        old.idp_key_fingerprints().into_iter().collect(),
        new.idp_key_fingerprints().into_iter().collect(),
    );
    let mut out = Vec::new();
    for f in b.difference(&a) {
        out.push(format!("signing key added (SHA-256 {f})"));
    }
    for f in a.difference(&b) {
        out.push(format!("signing key removed (SHA-256 {f})"));
    }
    if old.sso_url != new.sso_url {
        out.push(format!("SSO URL {} -> {}", old.sso_url, new.sso_url));
    }
    if old.valid_until() != new.valid_until() {
        out.push(format!(
            "validUntil {:?} -> {:?}",
            old.valid_until(),
            new.valid_until()
        ));
    }
    out
}

/// Write `xml` to `file` so that a crash leaves either the old or the new copy, never half.
fn save(file: &Path, xml: &str) -> Result<(), FetchError> {
    let err = |error| FetchError::Save {
        file: file.display().to_string(),
        error,
    };
    let tmp = file.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(err)?;
    f.write_all(xml.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, file).map_err(err)?;
    if let Some(dir) = file.parent().and_then(|d| std::fs::File::open(d).ok()) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// GET an https URL with certificate verification (system roots, plus `ca_file`).
pub async fn fetch(url: &str, ca_file: Option<&Path>) -> Result<String, FetchError> {
    let fail = |message: String| FetchError::Fetch {
        url: url.to_string(),
        message,
    };
    let uri: http::Uri = url.parse().map_err(|e| fail(format!("bad URL: {e}")))?;
    if uri.scheme_str() != Some("https") {
        return Err(fail("only https is fetched".into()));
    }
    let host = uri
        .host()
        .ok_or_else(|| fail("no host".into()))?
        .to_string();
    let port = uri.port_u16().unwrap_or(443);

    let mut roots = rustls::RootCertStore::empty();
    if let Ok(native) = rustls_native_certs::load_native_certs() {
        roots.add_parsable_certificates(native);
    }
    if let Some(ca) = ca_file {
        let pem = std::fs::read(ca).map_err(|e| fail(format!("{}: {e}", ca.display())))?;
        let certs: Vec<_> = rustls_pemfile::certs(&mut &pem[..])
            .collect::<Result<_, _>>()
            .map_err(|e| fail(format!("{}: {e}", ca.display())))?;
        roots.add_parsable_certificates(certs);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(host.clone())
        .map_err(|e| fail(format!("bad host name: {e}")))?;

    let work = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| fail(format!("connect: {e}")))?;
        let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
            .connect(name, tcp)
            .await
            .map_err(|e| fail(format!("TLS: {e}")))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| fail(format!("HTTP: {e}")))?;
        tokio::spawn(conn);
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let req = http::Request::get(path)
            .header(http::header::HOST, &host)
            .header(
                http::header::ACCEPT,
                "application/samlmetadata+xml, application/xml",
            )
            .body(Empty::<Bytes>::new())
            .map_err(|e| fail(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| fail(format!("HTTP: {e}")))?;
        if resp.status() != http::StatusCode::OK {
            return Err(fail(format!("HTTP status {}", resp.status())));
        }
        let body = Limited::new(resp.into_body(), MAX_METADATA)
            .collect()
            .await
            .map_err(|e| fail(format!("body: {e}")))?
            .to_bytes();
        String::from_utf8(body.to_vec()).map_err(|_| fail("not UTF-8".into()))
    };
    tokio::time::timeout(TIMEOUT, work)
        .await
        .map_err(|_| fail(format!("no answer within {} s", TIMEOUT.as_secs())))?
}
