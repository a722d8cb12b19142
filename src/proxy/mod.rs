//! The pingora side: the only module that sees a `pingora::proxy::Session`.
//!
//! The request path, one hook per stage:
//!   request_filter           our endpoint | route (host + path) -> public | session gate
//!                            -> policy (groups) -> prepare identity headers (contract, JWT)
//!   upstream_peer            the route's upstream
//!   upstream_request_filter  sanitize (strip spoofed headers, our cookies) -> forwarded
//!                            (X-Forwarded-*, trusted proxies only) -> inject identity
//!   request/response_body_filter  an upgraded (WebSocket) connection ends with its session
//!   response_filter          the upstream may not set the gateway's cookies; HSTS
//!   fail_to_proxy            our error page instead of pingora's
//!   logging                  one line per request with the correlation id

mod endpoints;
pub mod forwarded;
pub mod inject;
pub mod policy;
pub mod respond;
pub mod route;
pub mod sanitize;

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, Result};

use crate::config::Config;
use crate::login::Logins;
use crate::session::{Identity, Sessions};
use route::Route;

/// What a reload (SIGHUP) may change: routes, header contracts, trusted proxies, HSTS. Each
/// request takes one snapshot, so it sees one version from start to end.
pub struct Live {
    pub cfg: Arc<Config>,
    /// One per route, in `cfg.routes` order, with its CA list built once.
    peers: Vec<HttpPeer>,
}

/// An upstream that cannot be reached by name: the config names it, so the message does too.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {place}: upstream {address} does not resolve: {reason}")]
pub struct UpstreamError {
    pub file: String,
    /// Where the file names it: `[upstream] url`, or the route's `upstream`.
    pub place: String,
    pub address: String,
    pub reason: String,
}

impl Live {
    /// Resolves every upstream once: at start and at each reload (so a DNS change is seen at
    /// the next SIGHUP). pingora's own resolution panics on a name that does not resolve.
    pub fn new(cfg: Arc<Config>) -> Result<Live, UpstreamError> {
        let mut peers = Vec::with_capacity(cfg.routes.len());
        for r in &cfg.routes {
            let up = &r.upstream;
            let fail = |reason: String| UpstreamError {
                file: cfg.file.display().to_string(),
                // The catch-all route is the `[upstream]` section.
                place: if r.name == "default" && r.path_prefix == "/" && r.hosts.is_empty() {
                    "key `upstream.url`".into()
                } else {
                    format!("route `{}`, key `upstream`", r.name)
                },
                address: up.address.clone(),
                reason,
            };
            let addr = std::net::ToSocketAddrs::to_socket_addrs(up.address.as_str())
                .map_err(|e| fail(e.to_string()))?
                .next()
                .ok_or_else(|| fail("no address".into()))?;
            let mut peer = HttpPeer::new(addr, up.tls, up.host.clone());
            if !r.upstream_ca.is_empty() {
                let cas: Vec<pingora::utils::tls::WrappedX509> = r
                    .upstream_ca
                    .iter()
                    .map(|der| {
                        pingora::utils::tls::WrappedX509::new(der.clone(), |c| {
                            pingora::utils::tls::parse_x509(c)
                        })
                    })
                    .collect();
                peer.options.ca = Some(Arc::from(cas.into_boxed_slice()));
            }
            peers.push(peer);
        }
        Ok(Live { cfg, peers })
    }
}

pub struct Gateway {
    /// The configuration at start: the gateway's own endpoints, cookies and IdPs.
    pub cfg: Arc<Config>,
    pub live: Arc<ArcSwap<Live>>,
    pub logins: Arc<Logins>,
    pub logouts: Arc<crate::logout::Logouts>,
    pub sessions: Arc<Sessions>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub jwt: Option<Arc<crate::jwt::Signer>>,
}

/// Per-request state.
pub struct Ctx {
    correlation_id: String,
    started: Instant,
    route: Route,
    /// The application route (index into `live.cfg.routes`).
    app: Option<usize>,
    live: Option<Arc<Live>>,
    identity: Option<Arc<Identity>>,
    /// Identity headers for the upstream, made in `request_filter` where a refusal can still
    /// be answered.
    inject: inject::Prepared,
    stripped: usize,
    /// An upgrade request's session token: the connection ends when the session does.
    upgraded: Option<Watch>,
    upstream_status: u16,
    /// The client's address as trusted proxies vouch for it (set once the upstream is asked).
    client: Option<std::net::IpAddr>,
}

struct Watch {
    token: String,
    checked: Instant,
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn correlation_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            correlation_id: correlation_id(),
            started: Instant::now(),
            route: Route::Protected,
            app: None,
            live: None,
            identity: None,
            inject: Vec::new(),
            stripped: 0,
            upgraded: None,
            upstream_status: 0,
            client: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let live = self.live.load_full();
        ctx.live = Some(live.clone());
        match route::target_form(session.req_header().raw_path()) {
            route::TargetForm::Origin => {}
            route::TargetForm::Absolute => {
                let origin_form = session
                    .req_header()
                    .uri
                    .path_and_query()
                    .map_or_else(|| "/".to_string(), |pq| pq.as_str().to_string());
                session
                    .req_header_mut()
                    .set_raw_path(origin_form.as_bytes())?;
            }
            route::TargetForm::Refused => {
                ctx.route = Route::BadPath;
                return self.bad_path(session, ctx).await;
            }
        }
        let path = session.req_header().uri.path();
        if let Some(r) = route::sp_endpoint(path, &self.cfg.server) {
            ctx.route = r;
            return self.endpoint(r, session, ctx).await.map(|_| true);
        }
        let (r, app) = route::select(&live.cfg.routes, host_of(session.req_header()), path);
        ctx.route = r;
        ctx.app = app;
        match (r, app) {
            (Route::Public, Some(_)) => Ok(false),
            (Route::Protected, Some(i)) => {
                if endpoints::gate(self, session, ctx).await? {
                    return Ok(true);
                }
                self.admit(session, ctx, &live, i).await
            }
            (Route::BadPath, _) => self.bad_path(session, ctx).await,
            _ => respond::error_page(
                session,
                404,
                "Not found",
                "No application is configured at this address.",
                &ctx.correlation_id,
            )
            .await
            .map(|_| true),
        }
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let peer = ctx
            .live
            .as_ref()
            .zip(ctx.app)
            .and_then(|(l, i)| l.peers.get(i));
        match peer {
            Some(p) => Ok(Box::new(p.clone())),
            None => Error::e_explain(pingora::ErrorType::InternalError, "no route chosen"),
        }
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let Some(live) = ctx.live.clone() else {
            return Error::e_explain(pingora::ErrorType::InternalError, "no config snapshot");
        };
        ctx.stripped = sanitize::strip(upstream_request, &live.cfg);
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let scheme = if self.cfg.server.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let origin = forwarded::origin(
            upstream_request,
            peer,
            scheme,
            &live.cfg.server.trusted_proxies,
        );
        forwarded::apply(upstream_request, &origin);
        ctx.client = origin.client;
        if ctx.identity.is_some() {
            inject::apply(upstream_request, &ctx.inject);
        }
        Ok(())
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        self.still_logged_in(ctx)
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<std::time::Duration>> {
        self.still_logged_in(ctx).map(|_| None)
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.upstream_status = upstream_response.status.as_u16();
        if let Some(live) = &ctx.live {
            sanitize::strip_set_cookies(upstream_response, &live.cfg);
            if let Some(h) = &live.cfg.server.hsts {
                upstream_response.insert_header("Strict-Transport-Security", h.as_str())?;
            }
        }
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        // A client that went away is routine; anything else is worth an operator's eye.
        if matches!(e.esource(), pingora::ErrorSource::Downstream) {
            log::info!(
                id = ctx.correlation_id.as_str();
                "client side ended the request: {e}"
            );
        } else {
            log::error!(id = ctx.correlation_id.as_str(); "proxy error: {e}");
        }
        let code = match e.esource() {
            pingora::ErrorSource::Upstream => 502,
            pingora::ErrorSource::Downstream => 400,
            _ => 500,
        };
        let (title, reason) = if code == 502 {
            (
                "Application unavailable",
                "The application behind this gateway did not answer.",
            )
        } else {
            ("Request failed", "The request could not be handled.")
        };
        // Once a response (or a 101 and an upgraded stream) is under way, a page would only
        // corrupt it: the connection just ends.
        if session.response_written().is_none() {
            let _ = respond::error_page(session, code, title, reason, &ctx.correlation_id).await;
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Ctx) {
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        let user = ctx
            .identity
            .as_ref()
            .map(|id| id.username.as_str())
            .unwrap_or("-");
        let app = ctx
            .live
            .as_ref()
            .zip(ctx.app)
            .and_then(|(l, i)| l.cfg.routes.get(i))
            .map(|r| r.name.as_str())
            .unwrap_or("-");
        let micros = ctx.started.elapsed().as_micros() as u64;
        self.metrics.request(micros);
        if !log::log_enabled!(target: "samlgate::request", log::Level::Info) {
            return;
        }
        let client = ctx.client.or_else(|| {
            session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip())
        });
        let client = client.map_or_else(|| "-".to_string(), |c| c.to_string());
        // A refused target is logged as it came (pingora's reading of `admin/users` is `/`),
        // without its query.
        let raw = (ctx.route == Route::BadPath)
            .then(|| String::from_utf8_lossy(session.req_header().raw_path()).into_owned());
        let path = match &raw {
            Some(r) => r.split('?').next().unwrap_or(""),
            None => session.req_header().uri.path(),
        };
        // The path only: a query string can carry tokens. Fields, not text in the message, so
        // a JSON or logfmt pipeline filters on `user` or `status` without parsing.
        log::info!(
            target: "samlgate::request",
            id = ctx.correlation_id.as_str(),
            method = session.req_header().method.as_str(),
            path = path,
            route = ctx.route.name(),
            app = app,
            user = user,
            client = client.as_str(),
            status = status,
            upstream_status = ctx.upstream_status,
            stripped = ctx.stripped,
            us = micros;
            "request"
        );
    }
}

/// The Host a request is for (HTTP/2 sends it as the URI's authority).
fn host_of(req: &RequestHeader) -> Option<&str> {
    req.headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
}

/// How often an upgraded connection re-checks its session.
const UPGRADED_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

impl Gateway {
    /// 400 for a path that servers behind us could read in more than one way.
    async fn bad_path(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        respond::error_page(
            session,
            400,
            "Address not accepted",
            "This address has a form that different servers read differently (a `.` or `..` segment, perhaps encoded, a control character, or a target that is not a path), so this gateway does not pass it on.",
            &ctx.correlation_id,
        )
        .await
        .map(|_| true)
    }

    async fn endpoint(&self, r: Route, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        match r {
            Route::Acs => endpoints::acs(self, session, ctx).await,
            Route::Metadata => endpoints::metadata(self, session).await,
            Route::Login => endpoints::login(self, session, ctx).await,
            Route::Logout => endpoints::logout(self, session, ctx).await,
            Route::Slo => endpoints::slo(self, session, ctx).await,
            Route::Jwks => endpoints::jwks(self, session).await,
            _ => {
                respond::error_page(
                    session,
                    404,
                    "Not found",
                    "No such page.",
                    &ctx.correlation_id,
                )
                .await
            }
        }
    }

    /// A logged-in user on route `i`: the route's group policy, then the identity headers its
    /// contract asks for. `Ok(true)` when the request was answered here (refused).
    async fn admit(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        live: &Live,
        i: usize,
    ) -> Result<bool> {
        let (Some(id), Some(r)) = (ctx.identity.clone(), live.cfg.routes.get(i)) else {
            return Error::e_explain(pingora::ErrorType::InternalError, "admit without identity");
        };
        if let Err(denied) = policy::check(&r.name, &r.access, &id.groups) {
            log::info!(
                id = ctx.correlation_id.as_str();
                "{} refused on route {}: {}",
                id.username,
                r.name,
                denied.reason()
            );
            self.metrics.denied();
            respond::error_page(
                session,
                403,
                "Access denied",
                &denied.reason(),
                &ctx.correlation_id,
            )
            .await?;
            return Ok(true);
        }
        let token = sanitize::cookie(session.req_header(), &self.cfg.session.cookie_name)
            .unwrap_or("")
            .to_string();
        let session_id = r
            .headers
            .session_id
            .as_ref()
            .map(|_| hex(&crate::session::hash_token(&token)));
        let jwt = match (&r.headers.jwt, &self.jwt) {
            (Some(rule), Some(signer)) => match signer.token(&id, i, rule, now()) {
                Ok(t) => Some(t),
                Err(e) => {
                    log::error!(id = ctx.correlation_id.as_str(); "cannot sign the identity JWT: {e}");
                    return respond::error_page(
                        session,
                        500,
                        "Gateway error",
                        "The gateway could not vouch for your identity to this application.",
                        &ctx.correlation_id,
                    )
                    .await
                    .map(|_| true);
                }
            },
            _ => None,
        };
        match inject::prepare(&id, &r.headers, session_id.as_deref(), jwt.as_deref()) {
            Ok(h) => ctx.inject = h,
            Err(big) => {
                log::warn!(
                    id = ctx.correlation_id.as_str();
                    "identity of {} needs {} header bytes on route {}, over its max_bytes {} (on_overflow = reject)",
                    id.username,
                    big.bytes,
                    r.name,
                    big.max
                );
                respond::error_page(
                    session,
                    403,
                    "Access denied",
                    "Your account has more groups than this application can be told about. Ask your administrator (the route's headers.max_bytes).",
                    &ctx.correlation_id,
                )
                .await?;
                return Ok(true);
            }
        }
        if session
            .req_header()
            .headers
            .contains_key(http::header::UPGRADE)
        {
            ctx.upgraded = Some(Watch {
                token,
                checked: Instant::now(),
            });
        }
        Ok(false)
    }

    /// For upgraded connections: end the connection once its session has ended (logout,
    /// revocation, disabled user, timeout). Checked at most once a second, on traffic.
    fn still_logged_in(&self, ctx: &mut Ctx) -> Result<()> {
        let Some(w) = ctx.upgraded.as_mut() else {
            return Ok(());
        };
        if w.checked.elapsed() < UPGRADED_CHECK {
            return Ok(());
        }
        w.checked = Instant::now();
        if self.sessions.lookup(&w.token, now()).is_some() {
            return Ok(());
        }
        log::info!(
            id = ctx.correlation_id.as_str();
            "session ended: closing the upgraded connection"
        );
        Error::e_explain(
            pingora::ErrorType::HTTPStatus(401),
            "session ended on an upgraded connection",
        )
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
