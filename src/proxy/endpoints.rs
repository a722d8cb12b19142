//! The gateway's own endpoints under the reserved prefix, and the gate in front of protected
//! paths. Each turns HTTP into a call on `login::Logins` or `session::Sessions` and back.

use bytes::{Bytes, BytesMut};
use pingora::proxy::Session;
use pingora::Result;

use super::{now, respond, sanitize, Ctx, Gateway};
use crate::login::{safe_return_path, IdpChoice, LoginError};
use crate::logout::{LocalLogout, SloOutcome};

/// Largest ACS POST body read; the SAMLResponse field limit is enforced again by the verifier.
const MAX_ACS_BODY: usize = 768 * 1024;

impl Gateway {
    fn session_cookie(&self, token: &str) -> String {
        self.session_cookie_with(token, "")
    }

    fn clear_session_cookie(&self) -> String {
        self.session_cookie_with("", "; Max-Age=0")
    }

    fn session_cookie_with(&self, value: &str, extra: &str) -> String {
        let secure = if self.cfg.server.https {
            "; Secure"
        } else {
            ""
        };
        format!(
            "{}={value}; Path=/{extra}; HttpOnly; SameSite=Lax{secure}",
            self.cfg.session.cookie_name
        )
    }

    /// The cookie that ties a pending login to this browser. It must reach the ACS on the
    /// IdP's cross-site POST, so over https it is `SameSite=None; Secure`; over plain http
    /// (development) browsers refuse `None` without `Secure`, and `Lax` is what works.
    fn state_cookie(&self, value: &str) -> String {
        format!(
            "{}={}; Path={}/; Max-Age={}; HttpOnly; {}",
            self.cfg.session.state_cookie_name,
            value,
            self.cfg.server.sp_path_prefix,
            self.cfg.sp.login_timeout.as_secs(),
            if self.cfg.server.https {
                "SameSite=None; Secure"
            } else {
                "SameSite=Lax"
            }
        )
    }

    fn login_url(&self, return_to: &str) -> String {
        let q: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("return_to", return_to)
            .finish();
        format!("{}?{}", self.cfg.sp.login_url, q)
    }

    async fn start_login(
        &self,
        session: &mut Session,
        ctx: &Ctx,
        return_to: &str,
        requested_idp: Option<&str>,
    ) -> Result<()> {
        let req = session.req_header();
        let host = req
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri.authority().map(|a| a.as_str()));
        let idp = match self.logins.choose(requested_idp, host) {
            IdpChoice::Idp(i) => i,
            IdpChoice::Ask => return self.discovery_page(session, return_to).await,
        };
        let state = sanitize::cookie(session.req_header(), &self.cfg.session.state_cookie_name)
            .map(str::to_string);
        match self.logins.start(idp, return_to, state.as_deref()) {
            Ok(start) => {
                let cookies: Vec<String> = start
                    .new_state_cookie
                    .iter()
                    .map(|c| self.state_cookie(c))
                    .collect();
                respond::redirect(session, 302, &start.idp_url, &cookies).await
            }
            Err(e) => {
                log::error!(id = ctx.correlation_id.as_str(); "cannot start a login: {e}");
                respond::error_page(
                    session,
                    500,
                    "Sign-in unavailable",
                    &e.reason(),
                    &ctx.correlation_id,
                )
                .await
            }
        }
    }

    /// Several IdPs and nothing to choose by: the visitor picks (Shibboleth's "discovery").
    async fn discovery_page(&self, session: &mut Session, return_to: &str) -> Result<()> {
        let return_to = safe_return_path(return_to);
        let items: String = self
            .logins
            .idps()
            .iter()
            .map(|e| {
                let q: String = form_urlencoded::Serializer::new(String::new())
                    .append_pair("idp", &e.name)
                    .append_pair("return_to", &return_to)
                    .finish();
                format!(
                    "<li><a href=\"{}?{}\">{}</a></li>",
                    respond::html_escape(&self.cfg.sp.login_url),
                    respond::html_escape(&q),
                    respond::html_escape(&e.display_name)
                )
            })
            .collect();
        let body = format!(
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Choose how to sign in</title></head>\
<body style=\"font-family:sans-serif;max-width:40em;margin:3em auto\"><h1>Choose how to sign in</h1><ul>{items}</ul></body></html>\n"
        );
        respond::send(
            session,
            200,
            &[],
            "text/html; charset=utf-8",
            Bytes::from(body),
        )
        .await
    }
}

/// Protected path: let a live session through, otherwise start a login (browsers) or answer
/// 401 with the login URL (API clients and anything that is not a plain navigation).
pub async fn gate(gw: &Gateway, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
    let req = session.req_header();
    if let Some(token) = sanitize::cookie(req, &gw.cfg.session.cookie_name) {
        if let Some(id) = gw.sessions.lookup(token, now()) {
            ctx.identity = Some(id);
            return Ok(false);
        }
    }
    let target = req
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    if wants_api_answer(req) {
        let url = gw.login_url(&safe_return_path(&target));
        respond::login_required_json(session, &url, &ctx.correlation_id).await?;
        return Ok(true);
    }
    gw.start_login(session, ctx, &target, None).await?;
    Ok(true)
}

/// Not a top-level browser navigation: a redirect to the IdP would be useless to it.
fn wants_api_answer(req: &pingora::http::RequestHeader) -> bool {
    let header = |n: &str| {
        req.headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase()
    };
    let method_ok = req.method == http::Method::GET || req.method == http::Method::HEAD;
    // A WebSocket (or any upgrade) cannot follow a redirect to the IdP either.
    let upgrade = req.headers.contains_key(http::header::UPGRADE);
    let accept = header("accept");
    !method_ok
        || upgrade
        || req.headers.contains_key("x-requested-with")
        || (accept.contains("application/json") && !accept.contains("text/html"))
        || header("sec-fetch-mode") == "cors"
}

pub async fn login(gw: &Gateway, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
    let query = session.req_header().uri.query().unwrap_or("").to_string();
    let param = |name: &str| {
        form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    let return_to = param("return_to").unwrap_or_else(|| "/".into());
    let idp = param("idp");
    gw.start_login(session, ctx, &return_to, idp.as_deref())
        .await
}

pub async fn acs(gw: &Gateway, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
    let cid = ctx.correlation_id.clone();
    if session.req_header().method != http::Method::POST {
        return respond::error_page(
            session,
            405,
            "Method not allowed",
            "The sign-in endpoint takes the identity provider's POST only.",
            &cid,
        )
        .await;
    }
    let mut body = BytesMut::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_ACS_BODY {
                    log::warn!(id = cid.as_str(); "ACS body above {MAX_ACS_BODY} bytes refused");
                    return respond::error_page(
                        session,
                        413,
                        "Sign-in failed",
                        "The sign-in answer is too large.",
                        &cid,
                    )
                    .await;
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => {
                log::warn!(id = cid.as_str(); "ACS body unreadable: {e}");
                return respond::error_page(
                    session,
                    400,
                    "Sign-in failed",
                    "The sign-in answer could not be read.",
                    &cid,
                )
                .await;
            }
        }
    }
    let mut saml_response = None;
    let mut relay_state = None;
    for (k, v) in form_urlencoded::parse(&body) {
        match &*k {
            "SAMLResponse" if saml_response.is_none() => saml_response = Some(v.into_owned()),
            "RelayState" if relay_state.is_none() => relay_state = Some(v.into_owned()),
            _ => {}
        }
    }
    let req = session.req_header();
    let state = sanitize::cookie(req, &gw.cfg.session.state_cookie_name).map(str::to_string);
    let current = sanitize::cookie(req, &gw.cfg.session.cookie_name).map(str::to_string);

    let result = gw
        .logins
        .finish(
            saml_response.as_deref(),
            relay_state.as_deref(),
            state.as_deref(),
            current.as_deref(),
            now(),
        )
        .await;
    match result {
        Ok(done) => {
            let location = format!("{}{}", gw.cfg.server.public_url, done.return_to);
            let cookies: Vec<String> = done
                .session_token
                .iter()
                .map(|t| gw.session_cookie(t))
                .collect();
            // The path only: a query string may carry the application's own tokens.
            log::info!(
                id = cid.as_str();
                "login finished for {} -> {}",
                done.username,
                done.return_to.split('?').next().unwrap_or("/")
            );
            respond::redirect(session, 303, &location, &cookies).await
        }
        Err(e) => {
            log::warn!(id = cid.as_str(); "login refused: {e}");
            let title = match &e {
                LoginError::Disabled { .. } | LoginError::Inactive { .. } => "Account disabled",
                _ => "Sign-in failed",
            };
            respond::error_page(session, e.status(), title, &e.reason(), &cid).await
        }
    }
}

/// The public keys upstreams verify identity JWTs with (an empty set when no route sends one).
pub async fn jwks(gw: &Gateway, session: &mut Session) -> Result<()> {
    let body = gw
        .jwt
        .as_ref()
        .map(|s| s.jwks().to_string())
        .unwrap_or_else(|| r#"{"keys":[]}"#.to_string());
    respond::send(
        session,
        200,
        &[],
        "application/jwk-set+json",
        Bytes::from(body),
    )
    .await
}

pub async fn metadata(gw: &Gateway, session: &mut Session) -> Result<()> {
    let xml = gw.logins.sp().sp_metadata_xml();
    respond::send(
        session,
        200,
        &[],
        "application/samlmetadata+xml",
        Bytes::from(xml),
    )
    .await
}

pub async fn logout(gw: &Gateway, session: &mut Session, ctx: &Ctx) -> Result<()> {
    let token =
        sanitize::cookie(session.req_header(), &gw.cfg.session.cookie_name).map(str::to_string);
    match gw.logouts.local(token.as_deref(), now()).await {
        Err(e) => {
            log::error!(
                id = ctx.correlation_id.as_str();
                "logout: the session could not be deleted: {e}"
            );
            respond::error_page(
                session,
                503,
                "Sign-out failed",
                "The sign-out could not be saved. Please try again.",
                &ctx.correlation_id,
            )
            .await
        }
        Ok(LocalLogout { idp_url: Some(url) }) => {
            log::info!(
                id = ctx.correlation_id.as_str();
                "logout: on to the IdP's single logout"
            );
            respond::redirect(session, 302, &url, &[gw.clear_session_cookie()]).await
        }
        Ok(LocalLogout { idp_url: None }) => signed_out(gw, session, None).await,
    }
}

/// The IdP at our SingleLogoutService: its LogoutRequest (Redirect or POST binding), or its
/// LogoutResponse to ours. Every failure is a 400 page (503 if the store failed), never a 500.
pub async fn slo(gw: &Gateway, session: &mut Session, ctx: &Ctx) -> Result<()> {
    let cid = ctx.correlation_id.clone();
    let sp;
    let parsed = if session.req_header().method == http::Method::GET {
        let query = session.req_header().uri.query().unwrap_or("").to_string();
        sp = gw
            .logins
            .sp_for_issuer(crate::saml::peek_slo_issuer(Some(&query), None));
        sp.slo_redirect(&query, chrono::Utc::now())
    } else if session.req_header().method == http::Method::POST {
        let body = match read_body(session, MAX_ACS_BODY).await {
            Ok(b) => b,
            Err(why) => {
                log::warn!(id = cid.as_str(); "SLO body refused: {why}");
                return respond::error_page(session, 400, "Sign-out failed", why, &cid).await;
            }
        };
        let (mut request, mut response, mut relay) = (None, None, None);
        for (k, v) in form_urlencoded::parse(&body) {
            match &*k {
                "SAMLRequest" if request.is_none() => request = Some(v.into_owned()),
                "SAMLResponse" if response.is_none() => response = Some(v.into_owned()),
                "RelayState" if relay.is_none() => relay = Some(v.into_owned()),
                _ => {}
            }
        }
        sp = gw.logins.sp_for_issuer(crate::saml::peek_slo_issuer(
            None,
            request.as_deref().or(response.as_deref()),
        ));
        sp.slo_post(
            request.as_deref(),
            response.as_deref(),
            relay.as_deref(),
            chrono::Utc::now(),
        )
    } else {
        return respond::error_page(
            session,
            405,
            "Method not allowed",
            "The sign-out endpoint takes GET and POST only.",
            &cid,
        )
        .await;
    };
    let outcome = match parsed {
        Ok(msg) => gw.logouts.from_idp(&sp, msg, now()).await,
        Err(e) => Err(e.into()),
    };
    match outcome {
        Ok(SloOutcome::Answer { url, ended }) => {
            log::info!(id = cid.as_str(); "single logout from the IdP: {ended} sessions ended");
            respond::redirect(session, 302, &url, &[gw.clear_session_cookie()]).await
        }
        Ok(SloOutcome::Ended { ended }) => {
            log::info!(id = cid.as_str(); "single logout from the IdP: {ended} sessions ended (the IdP has no SingleLogoutService to answer)");
            signed_out(gw, session, None).await
        }
        Ok(SloOutcome::IdpAnswered { status }) => {
            if status.ends_with(":Success") {
                log::info!(id = cid.as_str(); "the IdP confirmed the single logout");
                signed_out(gw, session, None).await
            } else {
                log::warn!(id = cid.as_str(); "the IdP answered the single logout with {status}");
                let note = "You are signed out here, but the identity provider did not confirm that it signed you out too.";
                signed_out(gw, session, Some(note)).await
            }
        }
        Err(e) => {
            log::warn!(id = cid.as_str(); "sign-out request refused: {e}");
            respond::error_page(session, e.status(), "Sign-out failed", e.reason(), &cid).await
        }
    }
}

async fn signed_out(gw: &Gateway, session: &mut Session, note: Option<&str>) -> Result<()> {
    let note = note.map(|n| format!("<p>{n}</p>")).unwrap_or_default();
    let body = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Signed out</title></head>\
<body style=\"font-family:sans-serif;max-width:40em;margin:3em auto\"><h1>You are signed out</h1>{note}\
<p><a href=\"/\">Sign in again</a></p></body></html>\n"
    );
    respond::send(
        session,
        200,
        &[("Set-Cookie", gw.clear_session_cookie())],
        "text/html; charset=utf-8",
        Bytes::from(body),
    )
    .await
}

/// A request body of at most `limit` bytes, or why not.
async fn read_body(
    session: &mut Session,
    limit: usize,
) -> std::result::Result<BytesMut, &'static str> {
    let mut body = BytesMut::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err("The request is too large.");
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(_) => return Err("The request could not be read."),
        }
    }
}
