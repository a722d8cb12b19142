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
    /// The admin listener, bound at build time so a taken port fails the start.
    admin: Option<(std::net::TcpListener, Arc<Admin>)>,
}

impl App {
    pub fn build(cfg: Config) -> Result<App, StartError> {
        let sps = cfg
            .idps
            .iter()
            .map(|idp| crate::idp_metadata::at_start(&cfg, idp))
            .collect::<Result<Vec<_>, _>>()?;
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
            admin,
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

    let gateway = Gateway {
        cfg: cfg.clone(),
        logins: app.logins.clone(),
        logouts: app.logouts.clone(),
        sessions: app.sessions.clone(),
        metrics: app.metrics.clone(),
    };
    let mut proxy = pingora::proxy::http_proxy_service(&server.configuration, gateway);
    let listen = cfg.server.listen.to_string();
    match &cfg.server.tls {
        None => proxy.add_tcp(&listen),
        Some(tls) => proxy
            .add_tls(
                &listen,
                &tls.cert.display().to_string(),
                &tls.key.display().to_string(),
            )
            .map_err(|e| StartError::Tls {
                file: cfg.file.display().to_string(),
                message: e.to_string(),
            })?,
    }
    server.add_service(proxy);
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
    for svc in extra {
        server.add_boxed_service(svc);
    }
    log::info!(
        "samlgate listening on {} ({}), upstream {}, IdP {}",
        cfg.server.listen,
        cfg.server.public_url,
        cfg.upstream.address,
        app.logins
            .idps()
            .iter()
            .map(|e| format!("{} ({})", e.name, e.sp().idp_entity_id))
            .collect::<Vec<_>>()
            .join(", ")
    );
    server.run_forever()
}
