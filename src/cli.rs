//! `samlgate users|groups|sessions|audit ...`: the admin commands.
//!
//! Each command becomes one admin API call. With a gateway running, the call goes to its
//! admin listener (redb lets one process hold the file, and the gateway's caches must learn
//! of every change). With none, the same API runs in-process on the store file. The command
//! says on stderr which of the two it used.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::Value;

use crate::config::Config;
use crate::directory::Directory;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("{0}")]
    Store(String),
    #[error("admin API at {addr}: {message}")]
    Remote { addr: String, message: String },
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{0}")]
    Refused(String),
}

#[derive(Debug, Subcommand)]
pub enum UsersCmd {
    /// List users, with filters and paging.
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        group: Option<String>,
        /// Substring of username, e-mail or display name (case-insensitive).
        #[arg(long)]
        search: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long, default_value_t = 0)]
        offset: usize,
    },
    /// Everything about one user (id or username), with sessions.
    Show { user: String },
    /// Set active again.
    Activate { user: String },
    /// Set inactive (a login reactivates if provisioning.reactivate_inactive); ends sessions.
    Deactivate { user: String },
    /// Disable: no login until an admin activates; ends sessions.
    Disable { user: String },
    /// Delete the user, their memberships and sessions.
    Delete { user: String },
    /// Add a local (admin) group membership.
    AddGroup { user: String, group: String },
    /// Remove a local membership (with --any-source, any); ends the user's sessions.
    RemoveGroup {
        user: String,
        group: String,
        #[arg(long)]
        any_source: bool,
    },
    /// Approve a pending IdP membership (groups.require_approval).
    ApproveGroup { user: String, group: String },
    /// Print the whole directory as JSON.
    Export,
    /// Merge a JSON export into the directory (matched by IdP and subject).
    Import { file: PathBuf },
}

#[derive(Debug, Subcommand)]
pub enum GroupsCmd {
    /// Every group with its member count.
    List,
    /// A group's members and where each membership comes from.
    Show { group: String },
}

#[derive(Debug, Subcommand)]
pub enum SessionsCmd {
    /// Live sessions (id = SHA-256 of the token; the token is never stored).
    List {
        #[arg(long)]
        user: Option<String>,
    },
    /// End one session by id, or every session of --user.
    Revoke {
        id: Option<String>,
        #[arg(long)]
        user: Option<String>,
    },
}

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    #[arg(long)]
    pub user: Option<String>,
    #[arg(long)]
    pub kind: Option<String>,
    /// Unix time.
    #[arg(long)]
    pub since: Option<i64>,
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
}

pub enum AdminCommand {
    Users(UsersCmd),
    Groups(GroupsCmd),
    Sessions(SessionsCmd),
    Audit(AuditArgs),
}

/// One API call: method, path (segments already encoded), query, body.
struct Call {
    method: &'static str,
    path: String,
    query: String,
    body: Vec<u8>,
}

fn seg(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

fn query(pairs: &[(&str, Option<String>)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        if let Some(v) = v {
            q.append_pair(k, v);
        }
    }
    q.finish()
}

fn call(method: &'static str, path: String) -> Call {
    Call {
        method,
        path,
        query: String::new(),
        body: Vec::new(),
    }
}

fn to_call(cmd: &AdminCommand) -> Result<Call, CliError> {
    use UsersCmd::*;
    Ok(match cmd {
        AdminCommand::Users(u) => match u {
            List {
                status,
                group,
                search,
                limit,
                offset,
            } => Call {
                query: query(&[
                    ("status", status.clone()),
                    ("group", group.clone()),
                    ("q", search.clone()),
                    ("limit", Some(limit.to_string())),
                    ("offset", Some(offset.to_string())),
                ]),
                ..call("GET", "/api/users".into())
            },
            Show { user } => call("GET", format!("/api/users/{}", seg(user))),
            Activate { user } => call("POST", format!("/api/users/{}/activate", seg(user))),
            Deactivate { user } => call("POST", format!("/api/users/{}/deactivate", seg(user))),
            Disable { user } => call("POST", format!("/api/users/{}/disable", seg(user))),
            Delete { user } => call("DELETE", format!("/api/users/{}", seg(user))),
            AddGroup { user, group } => call(
                "PUT",
                format!("/api/users/{}/groups/{}", seg(user), seg(group)),
            ),
            RemoveGroup {
                user,
                group,
                any_source,
            } => Call {
                query: query(&[("source", any_source.then(|| "any".to_string()))]),
                ..call(
                    "DELETE",
                    format!("/api/users/{}/groups/{}", seg(user), seg(group)),
                )
            },
            ApproveGroup { user, group } => call(
                "POST",
                format!("/api/users/{}/groups/{}/approve", seg(user), seg(group)),
            ),
            Export => call("GET", "/api/export".into()),
            Import { file } => Call {
                body: std::fs::read(file).map_err(|e| CliError::File {
                    path: file.clone(),
                    message: e.to_string(),
                })?,
                ..call("POST", "/api/import".into())
            },
        },
        AdminCommand::Groups(GroupsCmd::List) => call("GET", "/api/groups".into()),
        AdminCommand::Groups(GroupsCmd::Show { group }) => {
            call("GET", format!("/api/groups/{}", seg(group)))
        }
        AdminCommand::Sessions(SessionsCmd::List { user }) => Call {
            query: query(&[("user", user.clone())]),
            ..call("GET", "/api/sessions".into())
        },
        AdminCommand::Sessions(SessionsCmd::Revoke { id, user }) => match (id, user) {
            (Some(id), None) => call("DELETE", format!("/api/sessions/{}", seg(id))),
            (None, Some(u)) => call("DELETE", format!("/api/users/{}/sessions", seg(u))),
            _ => {
                return Err(CliError::Refused(
                    "give either a session id or --user, not both".into(),
                ))
            }
        },
        AdminCommand::Audit(a) => Call {
            query: query(&[
                ("user", a.user.clone()),
                ("kind", a.kind.clone()),
                ("since", a.since.map(|s| s.to_string())),
                ("limit", Some(a.limit.to_string())),
            ]),
            ..call("GET", "/api/audit".into())
        },
    })
}

/// Run an admin command against the gateway named by `config_path`. Prints the result.
pub fn run(config_path: &Path, cmd: AdminCommand, json: bool) -> Result<(), CliError> {
    let cfg = Config::load(config_path)?;
    let c = to_call(&cmd)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Store(format!("cannot start a runtime: {e}")))?;
    let (status, body) = rt.block_on(execute(&cfg, c))?;
    if status >= 400 {
        let msg = body["error"].as_str().unwrap_or("failed").to_string();
        return Err(CliError::Refused(msg));
    }
    if json || matches!(cmd, AdminCommand::Users(UsersCmd::Export)) {
        println!(
            "{}",
            serde_json::to_string_pretty(&body).unwrap_or_default()
        );
    } else {
        print!("{}", render(&cmd, &body));
    }
    Ok(())
}

async fn execute(cfg: &Config, c: Call) -> Result<(u16, Value), CliError> {
    let addr = cfg.admin.listen;
    // redb lets one process hold the file. If we can open it, no gateway runs on it, and
    // whatever listens on the admin address is not ours: it never gets the token.
    match Store::open(&cfg.store_path) {
        Ok(store) => {
            eprintln!(
                "samlgate: no gateway holds {}; working on the store file directly",
                cfg.store_path.display()
            );
            let dir = Directory::new(store.clone(), None, None, "cli (direct)");
            let r = crate::admin::api::handle(&dir, c.method, &c.path, &c.query, &c.body).await;
            drop(dir);
            store.close();
            Ok((r.status, r.body))
        }
        Err(StoreError::Open { message, .. }) if message.contains("another samlgate process") => {
            if !cfg.admin.enabled {
                return Err(CliError::Store(format!(
                    "a running gateway holds {}, and its admin listener is off (admin.enabled = false): enable it, or stop the gateway to work on the file directly",
                    cfg.store_path.display()
                )));
            }
            let stream = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                tokio::net::TcpStream::connect(addr),
            )
            .await
            .map_err(|_| "timed out".to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map_err(|e| CliError::Remote {
                addr: addr.to_string(),
                message: format!(
                    "a running gateway holds {}, but its admin listener does not answer ({e}); is admin.listen the same in its config?",
                    cfg.store_path.display()
                ),
            })?;
            eprintln!("samlgate: a gateway is running; using its admin API at http://{addr}");
            let token =
                std::fs::read_to_string(&cfg.admin.token_file).map_err(|e| CliError::File {
                    path: cfg.admin.token_file.clone(),
                    message: format!("cannot read the admin token: {e}"),
                })?;
            remote(stream, &addr.to_string(), token.trim(), c).await
        }
        Err(e) => Err(CliError::Store(e.to_string())),
    }
}

async fn remote(
    stream: tokio::net::TcpStream,
    addr: &str,
    token: &str,
    c: Call,
) -> Result<(u16, Value), CliError> {
    use http_body_util::{BodyExt, Full};
    let err = |message: String| CliError::Remote {
        addr: addr.to_string(),
        message,
    };
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| err(e.to_string()))?;
    tokio::spawn(conn);
    let uri = if c.query.is_empty() {
        c.path
    } else {
        format!("{}?{}", c.path, c.query)
    };
    let req = hyper::Request::builder()
        .method(c.method)
        .uri(uri)
        .header("Host", addr)
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", "application/json")
        .body(Full::new(bytes::Bytes::from(c.body)))
        .map_err(|e| err(e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| err(e.to_string()))?;
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| err(e.to_string()))?
        .to_bytes();
    let body = serde_json::from_slice(&bytes).map_err(|e| {
        err(format!(
            "answered {status} with a body that is not JSON: {e}"
        ))
    })?;
    Ok((status, body))
}

fn time(t: &Value) -> String {
    t.as_i64()
        .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
        .map(|d| d.format("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_else(|| "-".into())
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn groups_line(user: &Value) -> String {
    user["groups"]
        .as_array()
        .map(|gs| {
            gs.iter()
                .map(|m| {
                    let pending = if m["pending"].as_bool() == Some(true) {
                        ", pending"
                    } else {
                        ""
                    };
                    format!("{} ({}{pending})", s(&m["group"]), s(&m["source"]))
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

fn user_line(u: &Value) -> String {
    format!(
        "{:>5}  {:<24} {:<9} {:<30} {}\n",
        s(&u["id"]),
        s(&u["username"]),
        s(&u["status"]),
        s(&u["email"]),
        groups_line(u)
    )
}

/// Human-readable output; `--json` prints the API's answer instead.
fn render(cmd: &AdminCommand, body: &Value) -> String {
    let mut out = String::new();
    match cmd {
        AdminCommand::Users(UsersCmd::List { .. }) => {
            out.push_str(&format!(
                "{:>5}  {:<24} {:<9} {:<30} GROUPS\n",
                "ID", "USERNAME", "STATUS", "E-MAIL"
            ));
            for u in body["users"].as_array().into_iter().flatten() {
                out.push_str(&user_line(u));
            }
            let shown = body["users"].as_array().map(|a| a.len()).unwrap_or(0);
            out.push_str(&format!(
                "({shown} of {} users, from offset {})\n",
                s(&body["total"]),
                s(&body["offset"])
            ));
        }
        AdminCommand::Users(UsersCmd::Show { .. }) => {
            for (k, label) in [
                ("id", "id"),
                ("username", "username"),
                ("status", "status"),
                ("email", "e-mail"),
                ("display_name", "name"),
                ("given_name", "given name"),
                ("family_name", "family name"),
                ("idp", "IdP"),
                ("subject", "subject"),
            ] {
                out.push_str(&format!("{label:<12} {}\n", s(&body[k])));
            }
            if let Some(attrs) = body["attributes"].as_object().filter(|a| !a.is_empty()) {
                for (k, v) in attrs {
                    out.push_str(&format!("{:<12} {}\n", k, s(v)));
                }
            }
            out.push_str(&format!("{:<12} {}\n", "groups", groups_line(body)));
            out.push_str(&format!(
                "{:<12} {}\n",
                "created",
                time(&body["created_at"])
            ));
            out.push_str(&format!(
                "{:<12} {}\n",
                "last login",
                time(&body["last_login_at"])
            ));
            let sessions = body["sessions"].as_array().map(|a| a.len()).unwrap_or(0);
            out.push_str(&format!("{:<12} {sessions} live\n", "sessions"));
        }
        AdminCommand::Users(UsersCmd::Delete { .. }) => {
            out.push_str(&format!(
                "deleted {} (id {})\n",
                s(&body["username"]),
                s(&body["id"])
            ));
        }
        AdminCommand::Users(UsersCmd::Import { .. }) => {
            out.push_str(&format!(
                "created {}, updated {}, unchanged {}, skipped {}\n",
                s(&body["created"]),
                s(&body["updated"]),
                s(&body["unchanged"]),
                body["skipped"].as_array().map(|a| a.len()).unwrap_or(0)
            ));
            for sk in body["skipped"].as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "  skipped {} {}: {}\n",
                    s(&sk[0]),
                    s(&sk[1]),
                    s(&sk[2])
                ));
            }
        }
        AdminCommand::Users(_) => out.push_str(&user_line(body)),
        AdminCommand::Groups(GroupsCmd::List) => {
            out.push_str(&format!(
                "{:<32} {:>7} {:>7}\n",
                "GROUP", "MEMBERS", "PENDING"
            ));
            for g in body.as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "{:<32} {:>7} {:>7}\n",
                    s(&g["group"]),
                    s(&g["members"]),
                    s(&g["pending"])
                ));
            }
        }
        AdminCommand::Groups(GroupsCmd::Show { .. }) => {
            out.push_str(&format!("{}\n", s(&body["group"])));
            for m in body["members"].as_array().into_iter().flatten() {
                let pending = if m["pending"].as_bool() == Some(true) {
                    " (pending approval)"
                } else {
                    ""
                };
                out.push_str(&format!(
                    "  {:>5}  {:<24} {}{pending}\n",
                    s(&m["user_id"]),
                    s(&m["username"]),
                    s(&m["source"])
                ));
            }
        }
        AdminCommand::Sessions(SessionsCmd::List { .. }) => {
            out.push_str(&format!(
                "{:<16} {:<20} {:<21} {:<21} EXPIRES\n",
                "ID", "USER", "CREATED", "LAST SEEN"
            ));
            for x in body.as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "{:<16} {:<20} {:<21} {:<21} {}\n",
                    s(&x["id"]).chars().take(16).collect::<String>(),
                    s(&x["username"]),
                    time(&x["created_at"]),
                    time(&x["last_seen"]),
                    time(&x["expires_at"])
                ));
            }
            out.push_str("(ids are shortened; --json shows whole ids for `sessions revoke`)\n");
        }
        AdminCommand::Sessions(SessionsCmd::Revoke { .. }) => {
            out.push_str(&format!(
                "{} session(s) ended\n",
                s(&body["sessions_ended"])
            ));
        }
        AdminCommand::Audit(_) => {
            for e in body.as_array().into_iter().flatten() {
                let who = match (e["user_id"].as_u64(), e["subject"].as_str()) {
                    (Some(id), Some(sub)) => format!("user {id} ({sub})"),
                    _ => "-".into(),
                };
                out.push_str(&format!(
                    "{}  #{:<5} {:<18} {:<28} {}\n",
                    time(&e["at"]),
                    s(&e["seq"]),
                    s(&e["kind"]),
                    who,
                    e["detail"]
                ));
            }
        }
    }
    out
}
