//! Wiring: config -> SAML SP -> store -> sessions -> logins -> pingora, in that order. A
//! failure at any step is a typed error with the file and key, before a socket is opened.

use std::sync::Arc;

use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::services::background::background_service;

use crate::admin::Admin;
use crate::config::Config;
use crate::directory::Directory;
use crate::http_service::HttpService;
use crate::login::Logins;
use crate::logout::Logouts;
use crate::metrics::Metrics;
use crate::proxy::Gateway;
use crate::saml;
use crate::session::Sessions;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Saml(#[from] saml::SetupError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{file}: key `server.tls_cert`: {message}")]
    Tls { file: String, message: String },
    #[error("{file}: key `jwt.key_file`: {error}")]
    Jwt {
        file: String,
        error: crate::jwt::JwtError,
    },
    #[error("{file}: key `server.tls_cert`: {error}")]
    TlsFiles {
        file: String,
        error: crate::tls::TlsError,
    },
    #[error(transparent)]
    Upstream(#[from] crate::proxy::UpstreamError),
    #[error("{file}: key `server.http_redirect_listen`: cannot listen on {addr}: {error}")]
    Redirect {
        file: String,
        addr: std::net::SocketAddr,
        error: std::io::Error,
    },
    #[error("{file}: {error}")]
    Admin {
        file: String,
        error: crate::admin::AdminError,
    },
}

/// Everything a running gateway holds, built and checked before anything listens.
pub struct App {
    pub cfg: Arc<Config>,
    pub store: Store,
    pub sessions: Arc<Sessions>,
    pub logins: Arc<Logins>,
    pub logouts: Arc<Logouts>,
    pub metrics: Arc<Metrics>,
    pub jwt: Option<Arc<crate::jwt::Signer>>,
    /// The admin listener, bound at build time so a taken port fails the start.
    admin: Option<(std::net::TcpListener, Arc<Admin>)>,
    tls: Option<Arc<crate::tls::Resolver>>,
    redirect: Option<std::net::TcpListener>,
}

impl App {
    pub fn build(cfg: Config) -> Result<App, StartError> {
        let sps = cfg
            .idps
            .iter()
            .map(|idp| crate::idp_metadata::at_start(&cfg, idp))
            .collect::<Result<Vec<_>, _>>()?;
        let file = cfg.file.display().to_string();
        let jwt = if cfg.jwt.used {
            let signer = crate::jwt::Signer::load_or_create(&cfg.jwt.key_file, &cfg.jwt.issuer)
                .map_err(|error| StartError::Jwt {
                    file: file.clone(),
                    error,
                })?;
            Some(Arc::new(signer))
        } else {
            None
        };
        let tls = match &cfg.server.tls {
            Some(t) => Some(Arc::new(crate::tls::Resolver::new(
                crate::tls::load(&t.cert, &t.key).map_err(|error| StartError::TlsFiles {
                    file: file.clone(),
                    error,
                })?,
            ))),
            None => None,
        };
        let redirect =
            match cfg.server.http_redirect_listen {
                Some(addr) => Some(std::net::TcpListener::bind(addr).map_err(|error| {
                    StartError::Redirect {
                        file: file.clone(),
                        addr,
                        error,
                    }
                })?),
                None => None,
            };
        let store = Store::open(&cfg.store_path)?;
        let sessions = Arc::new(Sessions::new(store.clone(), &cfg.session));
        let metrics = Arc::new(Metrics::default());
        let logins = Arc::new(Logins::new(
            &cfg,
            sps,
            store.clone(),
            sessions.clone(),
            metrics.clone(),
        ));
        let logouts = Arc::new(Logouts::new(
            logins.clone(),
            store.clone(),
            sessions.clone(),
            cfg.sp.single_logout,
        ));
        let admin = if cfg.admin.enabled {
            let file = cfg.file.display().to_string();
            let token =
                crate::admin::load_or_create_token(&cfg.admin.token_file).map_err(|error| {
                    StartError::Admin {
                        file: file.clone(),
                        error,
                    }
                })?;
            let listener = crate::admin::bind(cfg.admin.listen)
                .map_err(|error| StartError::Admin { file, error })?;
            let directory = Directory::new(
                store.clone(),
                Some(sessions.clone()),
                Some(metrics.clone()),
                "admin api",
            );
            Some((
                listener,
                Arc::new(Admin {
                    directory,
                    metrics: metrics.clone(),
                    token,
                }),
            ))
        } else {
            None
        };
        Ok(App {
            cfg: Arc::new(cfg),
            store,
            sessions,
            logins,
            logouts,
            metrics,
            jwt,
            admin,
            tls,
            redirect,
        })
    }
}

/// Removes expired sessions and replay-cache entries every few minutes.
struct Janitor {
    store: Store,
    idle_secs: i64,
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for Janitor {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(300));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let idle = self.idle_secs;
                    let now = crate::proxy::now();
                    match self.store.write(move |tx| tx.purge_expired(now, idle)).await {
                        Ok(n) if n > 0 => log::info!("store: purged {n} expired sessions and replay entries"),
                        Ok(_) => {}
                        Err(e) => log::warn!("store: purge failed: {e}"),
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Tells systemd (`Type=notify`) when the gateway really serves, and when it starts stopping.
/// "Ready" is judged from outside, by connecting to the proxy's address, because pingora binds
/// its listeners inside its own runtimes and reports nothing back; a unit ordered `After=`
/// samlgate then never meets a refused connection.
struct SdNotify {
    listen: std::net::SocketAddr,
    /// The probe completes a TLS handshake where the proxy terminates TLS.
    tls: bool,
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for SdNotify {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            // Not under systemd: nothing to probe. Waiting rather than returning keeps
            // pingora's "service exited" line out of every non-systemd start.
            let _ = shutdown.changed().await;
            return;
        }
        // A wildcard address cannot be connected to portably; its loopback twin is the same socket.
        let mut probe = self.listen;
        if probe.ip().is_unspecified() {
            probe.set_ip(match probe {
                std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let attempt = tokio::time::timeout(
                std::time::Duration::from_millis(500),
                crate::sd_notify::accepts(probe, self.tls),
            );
            tokio::select! {
                r = attempt => if let Ok(Ok(_)) = r { break },
                _ = shutdown.changed() => return,
            }
            if tokio::time::Instant::now() >= deadline {
                // No READY=1: systemd's start timeout then fails the unit, which is the truth.
                log::error!("sd_notify: {probe} did not accept a connection within 10 s");
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let status = format!("READY=1\nSTATUS=listening on {}", self.listen);
        if let Err(e) = crate::sd_notify::notify(&status) {
            log::warn!("sd_notify: READY=1: {e}");
        }
        let _ = shutdown.changed().await;
        if let Err(e) = crate::sd_notify::notify("STOPPING=1") {
            log::warn!("sd_notify: STOPPING=1: {e}");
        }
    }
}

/// Build the pingora server for `app`; `extra` adds background services (the demo's).
pub fn run(
    app: App,
    extra: Vec<Box<dyn pingora::services::ServiceWithDependents>>,
) -> Result<(), StartError> {
    let cfg = app.cfg.clone();
    let conf = ServerConf {
        threads: cfg.server.threads,
        work_stealing: false,
        grace_period_seconds: Some(cfg.server.grace_period_seconds),
        graceful_shutdown_timeout_seconds: Some(cfg.server.grace_period_seconds),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    for i in 0..cfg.idps.len() {
        crate::idp_metadata::spawn_refresh(cfg.clone(), i, app.logins.clone());
    }

    crate::proxy::respond::set_hsts(cfg.server.hsts.clone());
    let live = Arc::new(arc_swap::ArcSwap::from_pointee(crate::proxy::Live::new(
        cfg.clone(),
    )?));
    let gateway = Gateway {
        cfg: cfg.clone(),
        live: live.clone(),
        logins: app.logins.clone(),
        logouts: app.logouts.clone(),
        sessions: app.sessions.clone(),
        metrics: app.metrics.clone(),
        jwt: app.jwt.clone(),
    };
    let mut proxy = pingora::proxy::http_proxy_service(&server.configuration, gateway);
    let listen = cfg.server.listen.to_string();
    match &app.tls {
        None => proxy.add_tcp(&listen),
        Some(resolver) => {
            let mut settings =
                pingora::listeners::tls::TlsSettings::with_callbacks(Box::new(NoCallbacks))
                    .map_err(|e| StartError::Tls {
                        file: cfg.file.display().to_string(),
                        message: e.to_string(),
                    })?;
            settings.set_cert_resolver(resolver.clone());
            if cfg.server.http2 {
                settings.enable_h2();
            }
            proxy.add_tls_with_settings(&listen, None, settings);
        }
    }
    server.add_service(proxy);
    server.add_service(background_service(
        "sd_notify",
        SdNotify {
            listen: cfg.server.listen,
            tls: cfg.server.tls.is_some(),
        },
    ));
    server.add_service(background_service(
        "store janitor",
        Janitor {
            store: app.store.clone(),
            // The stored last_seen lags the real one by up to TOUCH_EVERY_SECS.
            idle_secs: cfg.session.idle_timeout.as_secs() as i64 + crate::session::TOUCH_EVERY_SECS,
        },
    ));
    if let Some((listener, admin)) = app.admin {
        log::info!(
            "admin API, /healthz, /readyz and /metrics on http://{}",
            cfg.admin.listen
        );
        server.add_service(background_service(
            "admin",
            HttpService::new(listener, move |req| admin.clone().handle(req)),
        ));
    }
    server.add_service(background_service(
        "config reload",
        crate::reload::Reloader {
            file: cfg.file.clone(),
            live,
            tls: app.tls.clone(),
            jwt: app.jwt.clone(),
        },
    ));
    if let Some(listener) = app.redirect {
        let target = cfg.server.public_url.clone();
        log::info!(
            "redirecting plain http on {:?} to {target}",
            listener.local_addr().ok()
        );
        server.add_service(background_service(
            "http redirect",
            HttpService::new(listener, move |req| {
                let target = target.clone();
                async move { https_redirect(&target, &req) }
            }),
        ));
    }
    for svc in extra {
        server.add_boxed_service(svc);
    }
    log::info!(
        "samlgate listening on {} ({}), routes {}, IdP {}",
        cfg.server.listen,
        cfg.server.public_url,
        cfg.routes
            .iter()
            .map(|r| format!("{} -> {}", r.name, r.upstream.address))
            .collect::<Vec<_>>()
            .join(", "),
        app.logins
            .idps()
            .iter()
            .map(|e| format!("{} ({})", e.name, e.sp().idp_entity_id))
            .collect::<Vec<_>>()
            .join(", ")
    );
    server.run_forever()
}

/// The TLS listener needs a callbacks value to take a certificate resolver; we need none.
struct NoCallbacks;

#[async_trait::async_trait]
impl pingora::listeners::TlsAccept for NoCallbacks {}

/// 301 to the same path and query under `public_url` (never to the Host the client named).
fn https_redirect(
    public_url: &str,
    req: &hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .filter(|p| p.starts_with('/') && !p.starts_with("//"))
        .unwrap_or("/");
    hyper::Response::builder()
        .status(301)
        .header("Location", format!("{public_url}{pq}"))
        .header("Content-Length", "0")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap_or_default()
}
