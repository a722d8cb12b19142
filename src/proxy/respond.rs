//! Responses the gateway writes itself: redirects, error pages, JSON 401, metadata.
//! Every error page carries the request's correlation id, which the log line also has.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

pub fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The Strict-Transport-Security value for the gateway's own answers (login redirects, error
/// pages, metadata), which pingora's response filter never sees. Set at start and by each
/// reload, like the value proxied responses get from the live config: one process serves
/// one listener, so a process-wide value is the config's value.
static HSTS: arc_swap::ArcSwapOption<String> = arc_swap::ArcSwapOption::const_empty();

pub fn set_hsts(value: Option<String>) {
    HSTS.store(value.map(std::sync::Arc::new));
}

pub async fn send(
    session: &mut Session,
    status: u16,
    headers: &[(&str, String)],
    content_type: &str,
    body: Bytes,
) -> Result<()> {
    let mut h = ResponseHeader::build(status, Some(headers.len() + 4))?;
    h.insert_header("Content-Type", content_type)?;
    h.insert_header("Content-Length", body.len().to_string())?;
    h.insert_header("Cache-Control", "no-store")?;
    if let Some(hsts) = HSTS.load().as_deref() {
        h.insert_header("Strict-Transport-Security", hsts.as_str())?;
    }
    for (name, value) in headers {
        h.append_header(name.to_string(), value.as_str())?;
    }
    session
        .write_response_header(Box::new(h), body.is_empty())
        .await?;
    if !body.is_empty() {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

pub async fn redirect(
    session: &mut Session,
    status: u16,
    location: &str,
    cookies: &[String],
) -> Result<()> {
    let mut headers = vec![("Location", location.to_string())];
    headers.extend(cookies.iter().map(|c| ("Set-Cookie", c.clone())));
    send(
        session,
        status,
        &headers,
        "text/plain; charset=utf-8",
        Bytes::new(),
    )
    .await
}

/// An HTML page with a short reason and the correlation id; details go to the log only.
pub async fn error_page(
    session: &mut Session,
    status: u16,
    title: &str,
    reason: &str,
    correlation_id: &str,
) -> Result<()> {
    let body = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{t}</title></head>\
<body style=\"font-family:sans-serif;max-width:40em;margin:3em auto\">\
<h1>{t}</h1><p>{r}</p><p><a href=\"/\">Start again</a></p>\
<p style=\"color:#666\">Reference: <code>{c}</code> (give this to your administrator)</p>\
</body></html>\n",
        t = html_escape(title),
        r = html_escape(reason),
        c = html_escape(correlation_id),
    );
    send(
        session,
        status,
        &[("X-Correlation-Id", correlation_id.to_string())],
        "text/html; charset=utf-8",
        Bytes::from(body),
    )
    .await
}

/// 401 for API clients: they cannot follow a redirect to an IdP, so they get the URL instead.
pub async fn login_required_json(
    session: &mut Session,
    login_url: &str,
    correlation_id: &str,
) -> Result<()> {
    let body = serde_json::json!({
        "error": "login_required",
        "login_url": login_url,
        "correlation_id": correlation_id,
    });
    send(
        session,
        401,
        &[
            ("WWW-Authenticate", "SAML".to_string()),
            ("X-Correlation-Id", correlation_id.to_string()),
        ],
        "application/json",
        Bytes::from(body.to_string()),
    )
    .await
}
