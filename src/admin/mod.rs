//! The admin listener (hyper), apart from the proxy: `/healthz`, `/readyz`, `/metrics`, and
//! the admin API under `/api/` behind a bearer token.
//!
//! Health and metrics need no token: they say nothing about any user, and monitoring agents
//! rarely carry secrets. The listener is loopback-only unless the config says otherwise.

pub mod api;

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, Response};

use crate::directory::Directory;
use crate::http_service::Resp;
use crate::metrics::Metrics;

/// An import of a large directory fits; anything bigger is refused before it is read.
const MAX_BODY: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("admin token file {path}: {message}")]
    Token { path: String, message: String },
    #[error("admin.listen {addr}: cannot listen: {error}")]
    Listen {
        addr: std::net::SocketAddr,
        error: std::io::Error,
    },
}

/// The token in `path`, created (mode 0600, 256 random bits) when the file does not exist.
pub fn load_or_create_token(path: &Path) -> Result<String, AdminError> {
    let err = |message: String| AdminError::Token {
        path: path.display().to_string(),
        message,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let token = text.trim().to_string();
            if token.len() < 16 {
                return Err(err(format!(
                    "holds {} characters; a token needs at least 16",
                    token.len()
                )));
            }
            Ok(token)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use base64::Engine as _;
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let token =
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
            }
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| err(format!("cannot create: {e}")))?;
            writeln!(f, "{token}").map_err(|e| err(e.to_string()))?;
            log::info!(
                "admin: created a new API token in {} (mode 0600)",
                path.display()
            );
            Ok(token)
        }
        Err(e) => Err(err(format!("cannot read: {e}"))),
    }
}

pub fn bind(addr: std::net::SocketAddr) -> Result<std::net::TcpListener, AdminError> {
    std::net::TcpListener::bind(addr).map_err(|error| AdminError::Listen { addr, error })
}

pub struct Admin {
    pub directory: Directory,
    pub metrics: Arc<Metrics>,
    pub token: String,
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn reply(status: u16, content_type: &str, body: String) -> Resp {
    Response::builder()
        .status(status)
        .header("Content-Type", content_type)
        .header("Cache-Control", "no-store")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::from_static(b"error"))))
}

fn json_reply(status: u16, v: &serde_json::Value) -> Resp {
    let mut body = serde_json::to_string_pretty(v).unwrap_or_default();
    body.push('\n');
    reply(status, "application/json", body)
}

impl Admin {
    pub async fn handle(self: Arc<Self>, req: Request<hyper::body::Incoming>) -> Resp {
        let method = req.method().as_str().to_string();
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        match (method.as_str(), path.as_str()) {
            ("GET", "/healthz") => return reply(200, "text/plain", "ok\n".into()),
            ("GET", "/readyz") => {
                return match self.directory.store().session_count() {
                    Ok(_) => reply(200, "text/plain", "ready\n".into()),
                    Err(e) => reply(503, "text/plain", format!("not ready: {e}\n")),
                }
            }
            ("GET", "/metrics") => {
                let store = self.directory.store();
                let sessions = store.session_count().unwrap_or(0);
                let users = store.user_count().unwrap_or(0);
                return reply(
                    200,
                    "text/plain; version=0.0.4",
                    self.metrics.render(sessions, users),
                );
            }
            _ => {}
        }
        if !path.starts_with("/api/") {
            return json_reply(404, &serde_json::json!({"error": "not found"}));
        }
        let presented = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !constant_time_eq(presented.trim().as_bytes(), self.token.as_bytes()) {
            log::warn!("admin: {method} {path} refused: missing or wrong bearer token");
            return json_reply(
                401,
                &serde_json::json!({"error": "missing or wrong bearer token (Authorization: Bearer <the token in admin.token_file>)"}),
            );
        }
        let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return json_reply(
                    413,
                    &serde_json::json!({"error": format!("the body could not be read (limit {MAX_BODY} bytes): {e}")}),
                )
            }
        };
        let r = api::handle(&self.directory, &method, &path, &query, &body).await;
        if method != "GET" && r.status < 300 {
            log::info!("admin: {method} {path} -> {}", r.status);
        }
        json_reply(r.status, &r.body)
    }
}
