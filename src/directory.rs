//! What an admin can do to the directory: list, show, change status, delete, local groups,
//! approvals, sessions, the audit log, export and import. No HTTP here: the admin listener
//! and the CLI's direct mode (no gateway running) both call these.
//!
//! Every change is one store transaction with its audit record. When a gateway runs, the
//! session caches learn of it in the same call, so a disabled user's next request is refused.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::session::Sessions;
use crate::store::{
    AuditEvent, AuditQuery, GroupSource, Membership, SessionRecord, Store, StoreError, User,
    UserStatus,
};

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("no user {0:?} (give a user id or a username)")]
    NoUser(String),
    #[error("no session {0}")]
    NoSession(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl DirectoryError {
    pub fn status(&self) -> u16 {
        match self {
            DirectoryError::NoUser(_) | DirectoryError::NoSession(_) => 404,
            DirectoryError::Invalid(_) => 400,
            DirectoryError::Store(_) => 503,
        }
    }
}

type Result<T> = std::result::Result<T, DirectoryError>;

#[derive(Debug, Clone, Default, Deserialize)]
pub struct UserFilter {
    pub status: Option<UserStatus>,
    pub group: Option<String>,
    /// Case-insensitive substring of username, e-mail or display name.
    pub q: Option<String>,
    pub offset: Option<usize>,
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct UserPage {
    pub total: usize,
    pub offset: usize,
    pub users: Vec<User>,
}

/// A session as an admin sees it: `id` is the hex SHA-256 of the token (the token itself is
/// never stored, so it cannot be shown).
#[derive(Debug, Serialize, Deserialize)]
pub struct SessionView {
    pub id: String,
    pub user_id: u64,
    pub username: Option<String>,
    pub created_at: i64,
    pub last_seen: i64,
    pub expires_at: i64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct GroupSummary {
    pub group: String,
    pub members: usize,
    pub pending: usize,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct GroupMember {
    pub user_id: u64,
    pub username: String,
    pub source: GroupSource,
    #[serde(default)]
    pub pending: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct GroupView {
    pub group: String,
    pub members: Vec<GroupMember>,
}

pub const EXPORT_FORMAT: &str = "samlgate-directory";

#[derive(Debug, Serialize, Deserialize)]
pub struct Export {
    pub format: String,
    pub version: u32,
    pub exported_at: i64,
    pub users: Vec<User>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ImportReport {
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
    /// (idp, subject, why)
    pub skipped: Vec<(String, String, String)>,
}

pub struct Directory {
    store: Store,
    /// The running gateway's caches; `None` when working on the file directly.
    sessions: Option<Arc<Sessions>>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    /// Who the audit log names as the actor.
    actor: &'static str,
}

fn now() -> i64 {
    crate::proxy::now()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl Directory {
    pub fn new(
        store: Store,
        sessions: Option<Arc<Sessions>>,
        metrics: Option<Arc<crate::metrics::Metrics>>,
        actor: &'static str,
    ) -> Directory {
        Directory {
            store,
            sessions,
            metrics,
            actor,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// A user by `id:<n>`, `name:<username>`, or a bare id or username. A bare value that
    /// is one user's id and another's username is refused as ambiguous: employee numbers
    /// are common usernames, and acting on the wrong person is not recoverable.
    pub fn find(&self, user: &str) -> Result<User> {
        let no = || DirectoryError::NoUser(user.to_string());
        if let Some(id) = user.strip_prefix("id:") {
            let id: u64 = id.parse().map_err(|_| no())?;
            return self.store.user(id)?.ok_or_else(no);
        }
        if let Some(name) = user.strip_prefix("name:") {
            return self.store.user_by_username(name)?.ok_or_else(no);
        }
        let by_name = self.store.user_by_username(user)?;
        let by_id = match user.bytes().all(|b| b.is_ascii_digit()) && !user.is_empty() {
            true => user
                .parse::<u64>()
                .ok()
                .map(|id| self.store.user(id))
                .transpose()?
                .flatten(),
            false => None,
        };
        match (by_id, by_name) {
            (Some(a), Some(b)) if a.id != b.id => Err(DirectoryError::Invalid(format!(
                "{user:?} is user id {} and the username of user id {}: say id:{user} or name:{user}",
                a.id, b.id
            ))),
            (Some(u), _) | (None, Some(u)) => Ok(u),
            (None, None) => Err(no()),
        }
    }

    pub fn users(&self, f: &UserFilter) -> Result<UserPage> {
        let q = f.q.as_ref().map(|q| q.to_lowercase());
        let mut all: Vec<User> = self
            .store
            .users()?
            .into_iter()
            .filter(|u| f.status.is_none_or(|s| u.status == s))
            .filter(|u| {
                f.group
                    .as_ref()
                    .is_none_or(|g| u.groups.iter().any(|m| &m.group == g))
            })
            .filter(|u| {
                q.as_ref().is_none_or(|q| {
                    [Some(&u.username), u.email.as_ref(), u.display_name.as_ref()]
                        .into_iter()
                        .flatten()
                        .any(|v| v.to_lowercase().contains(q))
                })
            })
            .collect();
        all.sort_by_key(|u| u.id);
        let total = all.len();
        let offset = f.offset.unwrap_or(0).min(total);
        let limit = f.limit.unwrap_or(100).clamp(1, 10_000);
        let users = all.into_iter().skip(offset).take(limit).collect();
        Ok(UserPage {
            total,
            offset,
            users,
        })
    }

    /// Tell the running gateway's caches about a committed change.
    fn changed(&self, user: Option<&User>, ended: &[[u8; 32]]) {
        if let Some(s) = &self.sessions {
            s.forget(ended);
            if let Some(u) = user {
                s.user_changed(u);
            }
        }
    }

    /// Set a user's status. Leaving `active` ends every session of the user.
    pub async fn set_status(&self, user: &str, status: UserStatus) -> Result<User> {
        let u = self.find(user)?;
        let actor = self.actor;
        let (user, ended) = self
            .store
            .write(move |tx| {
                let Some(mut u) = tx.user(u.id)? else {
                    return Ok(None);
                };
                if u.status == status {
                    return Ok(Some((u, Vec::new())));
                }
                let from = u.status;
                u.status = status;
                u.updated_at = now();
                tx.put_user(&u)?;
                let ended = if status == UserStatus::Active {
                    Vec::new()
                } else {
                    tx.delete_user_sessions(u.id)?
                };
                let kind = match status {
                    UserStatus::Active => "user activated",
                    UserStatus::Inactive => "user deactivated",
                    UserStatus::Disabled => "user disabled",
                };
                tx.audit(
                    now(),
                    kind,
                    Some(&u),
                    json!({"by": actor, "from": from, "sessions_ended": ended.len()}),
                )?;
                Ok(Some((u, ended)))
            })
            .await?
            .ok_or_else(|| DirectoryError::NoUser(user.to_string()))?;
        self.changed(Some(&user), &ended);
        Ok(user)
    }

    pub async fn delete(&self, user: &str) -> Result<User> {
        let u = self.find(user)?;
        let actor = self.actor;
        let (user, ended) = self
            .store
            .write(move |tx| {
                let Some(u) = tx.user(u.id)? else {
                    return Ok(None);
                };
                let ended = tx.delete_user(&u)?;
                tx.audit(
                    now(),
                    "user deleted",
                    Some(&u),
                    json!({"by": actor, "username": u.username, "email": u.email, "sessions_ended": ended.len()}),
                )?;
                Ok(Some((u, ended)))
            })
            .await?
            .ok_or_else(|| DirectoryError::NoUser(user.to_string()))?;
        if let Some(s) = &self.sessions {
            s.forget(&ended);
            let mut gone = user.clone();
            gone.status = UserStatus::Disabled;
            s.user_changed(&gone);
        }
        Ok(user)
    }

    /// Add a `local` membership (an admin's; no login sync ever removes it).
    pub async fn add_group(&self, user: &str, group: &str) -> Result<User> {
        let group = group.trim().to_string();
        if group.is_empty() {
            return Err(DirectoryError::Invalid("the group name is empty".into()));
        }
        self.edit_groups(user, "group added", move |u| {
            let m = Membership::new(group.clone(), GroupSource::Local);
            if u.groups.contains(&m) {
                return Ok(None);
            }
            u.groups.push(m);
            Ok(Some((json!({"group": group, "source": "local"}), false)))
        })
        .await
    }

    /// Remove a user's memberships of `group`: the `local` one, or with `any_source` every
    /// one (an IdP one comes back at the next login unless the IdP or a filter changes).
    /// Ends the user's sessions, so that no request runs on with the old groups.
    pub async fn remove_group(&self, user: &str, group: &str, any_source: bool) -> Result<User> {
        let group = group.to_string();
        self.edit_groups(user, "group removed", move |u| {
            let before = u.groups.len();
            let sources: Vec<GroupSource> = u
                .groups
                .iter()
                .filter(|m| m.group == group)
                .map(|m| m.source)
                .collect();
            u.groups
                .retain(|m| !(m.group == group && (any_source || m.source == GroupSource::Local)));
            if u.groups.len() == before {
                return Err(DirectoryError::Invalid(if sources.is_empty() {
                    format!("{} is not in {group:?}", u.username)
                } else {
                    format!(
                        "{} is in {group:?} only from {sources:?}, not by an admin; pass --any-source to remove it anyway (an IdP membership returns at the next login unless the IdP or groups.exclude changes)",
                        u.username
                    )
                }));
            }
            Ok(Some((json!({"group": group, "sources": sources}), true)))
        })
        .await
    }

    /// Approve a pending IdP membership (`groups.require_approval`).
    pub async fn approve_group(&self, user: &str, group: &str) -> Result<User> {
        let group = group.to_string();
        self.edit_groups(user, "group approved", move |u| {
            let Some(m) = u.groups.iter_mut().find(|m| m.group == group && m.pending) else {
                return Err(DirectoryError::Invalid(format!(
                    "{} has no pending membership of {group:?}",
                    u.username
                )));
            };
            m.pending = false;
            Ok(Some((json!({"group": group}), false)))
        })
        .await
    }

    /// Apply `edit` to a user's groups in one transaction; it returns the audit detail and
    /// whether the user's sessions must end, or `None` for no change.
    async fn edit_groups<F>(&self, user: &str, kind: &'static str, edit: F) -> Result<User>
    where
        F: FnOnce(&mut User) -> Result<Option<(serde_json::Value, bool)>> + Send + 'static,
    {
        let u = self.find(user)?;
        let actor = self.actor;
        let r = self
            .store
            .write(move |tx| {
                let Some(mut u) = tx.user(u.id)? else {
                    return Ok(Err(DirectoryError::NoUser(u.id.to_string())));
                };
                match edit(&mut u) {
                    Err(e) => Ok(Err(e)),
                    Ok(None) => Ok(Ok((u, Vec::new(), false))),
                    Ok(Some((mut detail, end_sessions))) => {
                        u.groups.sort();
                        u.updated_at = now();
                        tx.put_user(&u)?;
                        let ended = if end_sessions {
                            tx.delete_user_sessions(u.id)?
                        } else {
                            Vec::new()
                        };
                        detail["by"] = json!(actor);
                        detail["sessions_ended"] = json!(ended.len());
                        tx.audit(now(), kind, Some(&u), detail)?;
                        Ok(Ok((u, ended, true)))
                    }
                }
            })
            .await?;
        let (user, ended, changed) = r?;
        if changed {
            if let Some(m) = &self.metrics {
                m.groups_changed(1);
            }
        }
        self.changed(Some(&user), &ended);
        Ok(user)
    }

    pub fn groups(&self) -> Result<Vec<GroupSummary>> {
        let mut by: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for u in self.store.users()? {
            let mut seen = std::collections::BTreeSet::new();
            for m in &u.groups {
                let e = by.entry(m.group.clone()).or_default();
                if m.pending {
                    e.1 += 1;
                } else if seen.insert(&m.group) {
                    e.0 += 1;
                }
            }
        }
        Ok(by
            .into_iter()
            .map(|(group, (members, pending))| GroupSummary {
                group,
                members,
                pending,
            })
            .collect())
    }

    pub fn group(&self, group: &str) -> Result<GroupView> {
        let mut members = Vec::new();
        for u in self.store.users()? {
            for m in u.groups.iter().filter(|m| m.group == group) {
                members.push(GroupMember {
                    user_id: u.id,
                    username: u.username.clone(),
                    source: m.source,
                    pending: m.pending,
                });
            }
        }
        Ok(GroupView {
            group: group.to_string(),
            members,
        })
    }

    pub fn sessions(&self, user: Option<&str>) -> Result<Vec<SessionView>> {
        let only = user.map(|u| self.find(u)).transpose()?.map(|u| u.id);
        let now = now();
        let mut names: BTreeMap<u64, Option<String>> = BTreeMap::new();
        let mut out = Vec::new();
        for (hash, s) in self.store.sessions()? {
            if only.is_some_and(|id| id != s.user_id) || s.expires_at <= now {
                continue;
            }
            let username = match names.get(&s.user_id) {
                Some(n) => n.clone(),
                None => {
                    let n = self.store.user(s.user_id)?.map(|u| u.username);
                    names.insert(s.user_id, n.clone());
                    n
                }
            };
            out.push(view(&hash, &s, username));
        }
        out.sort_by_key(|s| (s.user_id, s.created_at));
        Ok(out)
    }

    pub async fn revoke_session(&self, id: &str) -> Result<()> {
        let hash = unhex(id).ok_or_else(|| DirectoryError::NoSession(id.to_string()))?;
        let record = self
            .store
            .session(&hash)?
            .ok_or_else(|| DirectoryError::NoSession(id.to_string()))?;
        let user = self.store.user(record.user_id)?;
        let actor = self.actor;
        let short: String = id.chars().take(12).collect();
        self.store
            .write(move |tx| {
                tx.delete_session(&hash)?;
                tx.audit(
                    now(),
                    "session revoked",
                    user.as_ref(),
                    json!({"by": actor, "session": short}),
                )
            })
            .await?;
        self.changed(None, &[hash]);
        Ok(())
    }

    pub async fn revoke_user_sessions(&self, user: &str) -> Result<usize> {
        let u = self.find(user)?;
        let actor = self.actor;
        let ended = self
            .store
            .write(move |tx| {
                let ended = tx.delete_user_sessions(u.id)?;
                tx.audit(
                    now(),
                    "sessions revoked",
                    Some(&u),
                    json!({"by": actor, "sessions_ended": ended.len()}),
                )?;
                Ok(ended)
            })
            .await?;
        self.changed(None, &ended);
        Ok(ended.len())
    }

    pub fn audit(&self, q: &AuditQuery) -> Result<Vec<AuditEvent>> {
        Ok(self.store.audit_query(q)?)
    }

    pub fn export(&self) -> Result<Export> {
        Ok(Export {
            format: EXPORT_FORMAT.into(),
            version: 1,
            exported_at: now(),
            users: self.store.users()?,
        })
    }

    /// Merge an export into the directory, matching users by (IdP, subject). Ids are this
    /// store's own; a user whose username or e-mail belongs to someone else is skipped and
    /// reported, never merged into that person.
    pub async fn import(&self, doc: Export) -> Result<ImportReport> {
        if doc.format != EXPORT_FORMAT || doc.version != 1 {
            return Err(DirectoryError::Invalid(format!(
                "not a samlgate directory export (format {:?} version {}; expected {EXPORT_FORMAT:?} version 1)",
                doc.format, doc.version
            )));
        }
        let actor = self.actor;
        let (report, changed) = self
            .store
            .write(move |tx| {
                let mut report = ImportReport::default();
                let mut changed = Vec::new();
                let mut ended = Vec::new();
                for mut incoming in doc.users {
                    let existing = tx.user_by_subject(&incoming.idp, &incoming.subject)?;
                    let me = existing.as_ref().map(|u| u.id);
                    let clash = if tx
                        .username_owner(&incoming.username)?
                        .is_some_and(|o| Some(o) != me)
                    {
                        Some("username belongs to another user")
                    } else if let Some(e) = &incoming.email {
                        tx.email_owner(e)?
                            .is_some_and(|o| Some(o) != me)
                            .then_some("e-mail belongs to another user")
                    } else {
                        None
                    };
                    if let Some(why) = clash {
                        report
                            .skipped
                            .push((incoming.idp, incoming.subject, why.into()));
                        continue;
                    }
                    incoming.groups.sort();
                    incoming.groups.dedup();
                    match existing {
                        Some(old) => {
                            incoming.id = old.id;
                            if incoming == old {
                                report.unchanged += 1;
                                continue;
                            }
                            tx.put_user(&incoming)?;
                            tx.audit(
                                now(),
                                "user imported",
                                Some(&incoming),
                                json!({"by": actor, "replaced": true}),
                            )?;
                            report.updated += 1;
                        }
                        None => {
                            incoming.id = tx.next_user_id()?;
                            tx.put_user(&incoming)?;
                            tx.audit(
                                now(),
                                "user imported",
                                Some(&incoming),
                                json!({"by": actor, "replaced": false}),
                            )?;
                            report.created += 1;
                        }
                    }
                    if incoming.status != UserStatus::Active {
                        ended.extend(tx.delete_user_sessions(incoming.id)?);
                    }
                    changed.push(incoming);
                }
                Ok((report, (changed, ended)))
            })
            .await?;
        let (changed, ended) = changed;
        self.changed(None, &ended);
        for u in &changed {
            self.changed(Some(u), &[]);
        }
        Ok(report)
    }
}

fn view(hash: &[u8; 32], s: &SessionRecord, username: Option<String>) -> SessionView {
    SessionView {
        id: hex(hash),
        user_id: s.user_id,
        username,
        created_at: s.created_at,
        last_seen: s.last_seen,
        expires_at: s.expires_at,
    }
}
