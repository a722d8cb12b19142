//! SIGHUP: read the config file again and apply what can change without a restart.
//!
//! The new file is validated in full first; a file with a mistake changes nothing, and the log
//! says why (file, key, problem), exactly as `samlgate check` would. What reloads: routes and
//! their upstreams, policies and header contracts, trusted proxies, HSTS, the log format, and
//! the TLS certificate files (re-read even when the config is unchanged, for certificate renewal).
//! Everything else (listen addresses, store, session cookies, IdPs, SP keys, admin) needs a
//! restart; a change there is logged as ignored.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::proxy::Live;

pub struct Reloader {
    pub file: PathBuf,
    pub live: Arc<ArcSwap<Live>>,
    pub tls: Option<Arc<crate::tls::Resolver>>,
    pub jwt: Option<Arc<crate::jwt::Signer>>,
}

/// Sections a reload cannot apply, as (name, how to compare).
fn restart_only(c: &Config) -> Vec<(&'static str, String)> {
    vec![
        (
            "server (listen, public_url, sp_path_prefix, threads, tls_cert/tls_key paths, http2, http_redirect_listen)",
            format!(
                "{:?}{:?}{:?}{:?}{:?}{:?}{:?}",
                c.server.listen,
                c.server.public_url,
                c.server.sp_path_prefix,
                c.server.threads,
                c.server.tls.as_ref().map(|t| (&t.cert, &t.key)),
                c.server.http2,
                c.server.http_redirect_listen
            ),
        ),
        ("store", format!("{:?}", c.store_path)),
        ("session", format!("{:?}", c.session)),
        ("sp", format!("{:?}", c.sp)),
        ("idp / idps", format!("{:?}", c.idps)),
        (
            "attributes, identity, groups, provisioning",
            format!(
                "{:?}{:?}{:?}",
                c.attributes, c.identity, c.provisioning
            ),
        ),
        ("admin", format!("{:?}", c.admin)),
        // Not `used`: a reload may add or drop JWT routes as long as the key stays.
        ("jwt", format!("{:?}{:?}", c.jwt.key_file, c.jwt.issuer)),
    ]
}

impl Reloader {
    /// One reload. Returns whether the new routing config is in use.
    pub fn reload(&self) -> bool {
        let old = self.live.load_full();
        let new = match Config::load(&self.file) {
            Ok(c) => c,
            Err(e) => {
                log::error!("reload refused, the running config stays in use: {e}");
                return false;
            }
        };
        if new.jwt.used && self.jwt.is_none() {
            log::error!(
                "reload refused: a route now sends a JWT, but the gateway started without a JWT key; restart to add one"
            );
            return false;
        }
        let ignored: Vec<&str> = restart_only(&old.cfg)
            .into_iter()
            .zip(restart_only(&new))
            .filter(|(a, b)| a.1 != b.1)
            .map(|(a, _)| a.0)
            .collect();
        if !ignored.is_empty() {
            log::warn!(
                "reload: changes to {} need a restart and are not applied",
                ignored.join("; ")
            );
        }
        // Everything that can fail is done before anything is swapped: a reload applies whole
        // or not at all.
        let cert = match (&self.tls, &old.cfg.server.tls) {
            (Some(resolver), Some(files)) => match crate::tls::load(&files.cert, &files.key) {
                Ok(ck) => Some((resolver, ck, files.cert.clone())),
                Err(e) => {
                    log::error!(
                        "reload refused, the running config and certificate stay in use: {e}"
                    );
                    return false;
                }
            },
            _ => None,
        };
        // Keep what cannot change from the running config, take the rest from the new one.
        let mut merged = (*old.cfg).clone();
        merged.routes = new.routes;
        merged.strip_headers = new.strip_headers;
        merged.server.trusted_proxies = new.server.trusted_proxies;
        merged.server.hsts = new.server.hsts;
        merged.jwt.used = new.jwt.used;
        let format_changed = merged.log_format != new.log_format;
        merged.log_format = new.log_format;
        let live = match Live::new(Arc::new(merged)) {
            Ok(l) => l,
            Err(e) => {
                log::error!("reload refused, the running config stays in use: {e}");
                return false;
            }
        };

        if let Some((resolver, ck, file)) = cert {
            resolver.replace(ck);
            log::info!("reload: TLS certificate {} re-read", file.display());
        }
        if format_changed {
            log::info!("reload: log format {} from here on", new.log_format);
            crate::logging::init(new.log_format);
        }
        let names: Vec<&str> = live.cfg.routes.iter().map(|r| r.name.as_str()).collect();
        log::info!(
            "reload: {} applied; routes: {}",
            self.file.display(),
            names.join(", ")
        );
        crate::proxy::respond::set_hsts(live.cfg.server.hsts.clone());
        self.live.store(Arc::new(live));
        if let Some(j) = &self.jwt {
            // Cached tokens are per route index, and the indexes may have moved.
            j.clear();
        }
        true
    }
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for Reloader {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                log::error!("cannot listen for SIGHUP, reload is off: {e}");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    log::info!("SIGHUP: reloading {}", self.file.display());
                    if let Err(e) = crate::sd_notify::reloading() {
                        log::warn!("sd_notify: RELOADING=1: {e}");
                    }
                    let status = if self.reload() {
                        "READY=1\nSTATUS=config reloaded"
                    } else {
                        "READY=1\nSTATUS=reload refused, previous config in use (see log)"
                    };
                    if let Err(e) = crate::sd_notify::notify(status) {
                        log::warn!("sd_notify: READY=1: {e}");
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
