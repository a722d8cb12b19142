//! The admin API's routes, as a plain function from (method, path, query, body) to
//! (status, JSON). The hyper listener calls it for `/api/...`; the CLI calls it in-process
//! when no gateway runs, so both speak exactly the same API.
//!
//! Path segments are percent-decoded after splitting, so a group named `/eng/ops` or
//! `CN=Ops,OU=Groups` travels as one segment.

use serde_json::{json, Value};

use crate::directory::{Directory, DirectoryError, Export, UserFilter};
use crate::store::{AuditQuery, UserStatus};

pub struct ApiResponse {
    pub status: u16,
    pub body: Value,
}

fn ok(body: Value) -> ApiResponse {
    ApiResponse { status: 200, body }
}

fn error(status: u16, message: impl Into<String>) -> ApiResponse {
    ApiResponse {
        status,
        body: json!({"error": message.into()}),
    }
}

fn from_dir(e: DirectoryError) -> ApiResponse {
    if let DirectoryError::Store(s) = &e {
        log::error!("admin api: {s}");
    }
    error(e.status(), e.to_string())
}

fn to_json<T: serde::Serialize>(v: T) -> ApiResponse {
    match serde_json::to_value(v) {
        Ok(v) => ok(v),
        Err(e) => error(500, format!("cannot serialise the answer: {e}")),
    }
}

fn query_map(query: &str) -> std::collections::HashMap<String, String> {
    form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

fn num<T: std::str::FromStr>(
    q: &std::collections::HashMap<String, String>,
    key: &str,
) -> Result<Option<T>, ApiResponse> {
    match q.get(key) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| error(400, format!("query parameter {key}={v:?} is not a number"))),
    }
}

pub async fn handle(
    dir: &Directory,
    method: &str,
    path: &str,
    query: &str,
    body: &[u8],
) -> ApiResponse {
    match route(dir, method, path, query, body).await {
        Ok(r) | Err(r) => r,
    }
}

async fn route(
    dir: &Directory,
    method: &str,
    path: &str,
    query: &str,
    body: &[u8],
) -> Result<ApiResponse, ApiResponse> {
    let Some(rest) = path.strip_prefix("/api/") else {
        return Err(error(404, "not an API path"));
    };
    let segs: Vec<String> = rest
        .split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let q = query_map(query);

    Ok(match (method, segs.as_slice()) {
        ("GET", ["users"]) => {
            let status = match q.get("status").map(String::as_str) {
                None | Some("") => None,
                Some("active") => Some(UserStatus::Active),
                Some("inactive") => Some(UserStatus::Inactive),
                Some("disabled") => Some(UserStatus::Disabled),
                Some(other) => {
                    return Err(error(
                        400,
                        format!("status {other:?} is not one of active, inactive, disabled"),
                    ))
                }
            };
            let f = UserFilter {
                status,
                group: q.get("group").cloned(),
                q: q.get("q").cloned(),
                offset: num(&q, "offset")?,
                limit: num(&q, "limit")?,
            };
            to_json(d(dir.users(&f))?)
        }
        ("GET", ["users", u]) => {
            let user = d(dir.find(u))?;
            let sessions = d(dir.sessions(Some(&user.id.to_string())))?;
            let mut v = serde_json::to_value(&user).unwrap_or_default();
            v["sessions"] = serde_json::to_value(sessions).unwrap_or_default();
            ok(v)
        }
        ("DELETE", ["users", u]) => to_json(d(dir.delete(u).await)?),
        ("POST", ["users", u, action @ ("activate" | "deactivate" | "disable")]) => {
            let status = match *action {
                "activate" => UserStatus::Active,
                "deactivate" => UserStatus::Inactive,
                _ => UserStatus::Disabled,
            };
            to_json(d(dir.set_status(u, status).await)?)
        }
        ("PUT", ["users", u, "groups", g]) => to_json(d(dir.add_group(u, g).await)?),
        ("DELETE", ["users", u, "groups", g]) => {
            let any = q.get("source").is_some_and(|s| s == "any");
            to_json(d(dir.remove_group(u, g, any).await)?)
        }
        ("POST", ["users", u, "groups", g, "approve"]) => {
            to_json(d(dir.approve_group(u, g).await)?)
        }
        ("GET", ["users", u, "sessions"]) => to_json(d(dir.sessions(Some(u)))?),
        ("DELETE", ["users", u, "sessions"]) => json_ended(d(dir.revoke_user_sessions(u).await)?),
        ("GET", ["groups"]) => to_json(d(dir.groups())?),
        ("GET", ["groups", g]) => to_json(d(dir.group(g))?),
        ("GET", ["sessions"]) => to_json(d(dir.sessions(q.get("user").map(String::as_str)))?),
        ("DELETE", ["sessions", id]) => {
            d(dir.revoke_session(id).await)?;
            json_ended(1)
        }
        ("GET", ["audit"]) => {
            let user_id = match q.get("user") {
                Some(u) => Some(d(dir.find(u))?.id),
                None => None,
            };
            let aq = AuditQuery {
                user_id,
                kind: q.get("kind").cloned(),
                since: num(&q, "since")?,
                after_seq: num(&q, "after")?,
                limit: Some(num(&q, "limit")?.unwrap_or(1000)),
            };
            to_json(d(dir.audit(&aq))?)
        }
        ("GET", ["export"]) => to_json(d(dir.export())?),
        ("POST", ["import"]) => {
            let doc: Export = serde_json::from_slice(body)
                .map_err(|e| error(400, format!("the body is not a directory export: {e}")))?;
            to_json(d(dir.import(doc).await)?)
        }
        (_, _) => return Err(error(404, format!("no route {method} {path}"))),
    })
}

fn d<T>(r: Result<T, DirectoryError>) -> Result<T, ApiResponse> {
    r.map_err(from_dir)
}

fn json_ended(n: usize) -> ApiResponse {
    ok(json!({"sessions_ended": n}))
}
