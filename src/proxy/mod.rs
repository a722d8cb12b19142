//! The pingora side: the only module that sees a `pingora::proxy::Session`.
//!
//! The request path, one hook per stage:
//!   request_filter           route -> (our endpoint | public | session gate)
//!   upstream_peer            the configured upstream
//!   upstream_request_filter  sanitize (strip spoofed headers, our cookies) -> inject identity
//!   response_filter          the upstream may not set the gateway's cookies
//!   fail_to_proxy            our error page instead of pingora's
//!   logging                  one line per request with the correlation id

mod endpoints;
pub mod inject;
pub mod respond;
pub mod route;
pub mod sanitize;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, Result};

use crate::config::Config;
use crate::login::Logins;
use crate::session::{Identity, Sessions};
use route::Route;

pub struct Gateway {
    pub cfg: Arc<Config>,
    pub logins: Arc<Logins>,
    pub logouts: Arc<crate::logout::Logouts>,
    pub sessions: Arc<Sessions>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Per-request state.
pub struct Ctx {
    correlation_id: String,
    started: Instant,
    route: Route,
    identity: Option<Arc<Identity>>,
    stripped: usize,
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
            identity: None,
            stripped: 0,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        ctx.route = route::classify(session.req_header().uri.path(), &self.cfg.server);
        match ctx.route {
            Route::Public => Ok(false),
            Route::Protected => endpoints::gate(self, session, ctx).await,
            Route::Acs => endpoints::acs(self, session, ctx).await.map(|_| true),
            Route::Metadata => endpoints::metadata(self, session).await.map(|_| true),
            Route::Login => endpoints::login(self, session, ctx).await.map(|_| true),
            Route::Logout => endpoints::logout(self, session, ctx).await.map(|_| true),
            Route::Slo => endpoints::slo(self, session, ctx).await.map(|_| true),
            Route::UnknownSp => respond::error_page(
                session,
                404,
                "Not found",
                "No such page.",
                &ctx.correlation_id,
            )
            .await
            .map(|_| true),
        }
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let up = &self.cfg.upstream;
        Ok(Box::new(HttpPeer::new(
            up.address.as_str(),
            up.tls,
            up.host.clone(),
        )))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.stripped = sanitize::strip(upstream_request, &self.cfg);
        if let Some(id) = &ctx.identity {
            inject::apply(upstream_request, id, &self.cfg.headers);
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        _ctx: &mut Ctx,
    ) -> Result<()> {
        sanitize::strip_set_cookies(upstream_response, &self.cfg);
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        // A client that went away is routine; anything else is worth an operator's eye.
        if matches!(e.esource(), pingora::ErrorSource::Downstream) {
            log::info!(
                "[{}] client side ended the request: {e}",
                ctx.correlation_id
            );
        } else {
            log::error!("[{}] proxy error: {e}", ctx.correlation_id);
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
        let _ = respond::error_page(session, code, title, reason, &ctx.correlation_id).await;
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
        let micros = ctx.started.elapsed().as_micros() as u64;
        self.metrics.request(micros);
        log::info!(
            "request id={} method={} path={} route={:?} user={} status={} stripped={} us={}",
            ctx.correlation_id,
            session.req_header().method,
            session.req_header().uri.path(),
            ctx.route,
            user,
            status,
            ctx.stripped,
            micros
        );
    }
}
