//! The embedded store: users, group memberships, sessions, the replay cache and the audit log,
//! in one redb file. No HTTP, no SAML: callers hand in plain values.
//!
//! Locking: redb allows one write transaction at a time. All writes go through one writer
//! thread (`writer.rs`) that commits queued jobs together, so many logins share one durable
//! fsync instead of queueing for a lock each. Reads run anywhere, concurrently, on snapshots.
//! Records are JSON (serde_json) so that a field added later reads old rows with its default.

mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

pub use writer::Writer;

/// redb's page cache. Its default (1 GiB) lets the cache of written pages grow with the
/// directory (250 MB RSS at 100,000 sessions); hot data lives in the moka caches in front,
/// and 8 MiB measured the same login throughput (benches/paths.rs, sessions_memory.rs).
const STORE_CACHE_BYTES: usize = 8 * 1024 * 1024;

const USERS: TableDefinition<u64, &[u8]> = TableDefinition::new("users");
/// `idp \n subject` -> user id: the immutable key of a user.
const SUBJECTS: TableDefinition<&str, u64> = TableDefinition::new("subjects");
/// SHA-256 of the session token -> session record. The token itself is never stored.
const SESSIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("sessions");
/// `idp \n assertion id` -> unix time until which it must stay refused.
const REPLAY: TableDefinition<&str, i64> = TableDefinition::new("replay");
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Case-folded username -> user id: the backend trusts the username header, so no two users
/// may share one.
const USERNAMES: TableDefinition<&str, u64> = TableDefinition::new("usernames");
/// Case-folded e-mail -> user id, so a new subject never silently takes over an address.
const EMAILS: TableDefinition<&str, u64> = TableDefinition::new("emails");
/// user id (8 bytes, big-endian) ++ session token hash -> (): a user's sessions, so that
/// disabling or deleting a user ends them all in the same transaction.
const USER_SESSIONS: TableDefinition<&[u8], ()> = TableDefinition::new("user_sessions");

fn user_session_key(user_id: u64, token_hash: &[u8; 32]) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..8].copy_from_slice(&user_id.to_be_bytes());
    k[8..].copy_from_slice(token_hash);
    k
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: cannot open: {message}")]
    Open { path: PathBuf, message: String },
    #[error("store: {0}")]
    Db(String),
    #[error("store: a record is unreadable: {0}")]
    Corrupt(String),
    #[error("store: the write was not committed because another write in its batch failed; retry")]
    BatchAborted,
    #[error("store: the write was not performed (the log has the cause)")]
    NotWritten,
}

macro_rules! db_error {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::Db(e.to_string()) }
        }
    )*};
}
db_error!(
    redb::Error,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserStatus {
    Active,
    /// Deactivated (e.g. by a directory sync); may be reactivated by a login per policy.
    Inactive,
    /// Disabled by an admin: a login never reactivates it.
    Disabled,
}

/// Who put a user in a group; a sync touches only its own source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupSource {
    Idp,
    Default,
    Local,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Membership {
    pub group: String,
    pub source: GroupSource,
    /// Waiting for an admin's approval (`groups.require_approval`): stored, not forwarded.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pending: bool,
}

impl Membership {
    pub fn new(group: impl Into<String>, source: GroupSource) -> Membership {
        Membership {
            group: group.into(),
            source,
            pending: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: u64,
    pub idp: String,
    pub subject: String,
    pub username: String,
    pub display_name: Option<String>,
    pub email: Option<String>,
    #[serde(default)]
    pub given_name: Option<String>,
    #[serde(default)]
    pub family_name: Option<String>,
    /// Extra attributes (`[attributes.extra]`), by config key.
    #[serde(default)]
    pub attributes: std::collections::BTreeMap<String, String>,
    pub status: UserStatus,
    /// Sorted, one entry per (group, source).
    pub groups: Vec<Membership>,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_login_at: Option<i64>,
}

impl User {
    /// Distinct group names, sorted, pending approvals left out: what the backend is told.
    pub fn group_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .groups
            .iter()
            .filter(|m| !m.pending)
            .map(|m| m.group.clone())
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub user_id: u64,
    pub created_at: i64,
    /// Absolute end, already bounded by the IdP's SessionNotOnOrAfter.
    pub expires_at: i64,
    pub last_seen: i64,
    pub session_index: Option<String>,
    /// The NameID (and its Format) exactly as the IdP sent it: single logout names sessions
    /// by it, and our own LogoutRequest must repeat it.
    #[serde(default)]
    pub name_id: Option<String>,
    #[serde(default)]
    pub name_id_format: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub seq: u64,
    pub at: i64,
    pub kind: String,
    pub user_id: Option<u64>,
    pub subject: Option<String>,
    pub detail: serde_json::Value,
}

/// A filter over the audit log.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AuditQuery {
    pub user_id: Option<u64>,
    pub kind: Option<String>,
    /// Unix time: only events at or after it.
    pub since: Option<i64>,
    /// Only events with a higher sequence number (for following the log).
    pub after_seq: Option<u64>,
    pub limit: Option<usize>,
}

/// The form in which two usernames or e-mail addresses are the same.
fn fold(s: &str) -> String {
    s.trim().to_lowercase()
}

fn subject_key(idp: &str, subject: &str) -> String {
    format!("{idp}\n{subject}")
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Serialising these plain structs cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

fn decode<T: for<'a> Deserialize<'a>>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// The open store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    writer: Writer,
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let open_err = |message: String| StoreError::Open {
            path: path.to_path_buf(),
            message,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
        }
        let db = redb::Builder::new()
            .set_cache_size(STORE_CACHE_BYTES)
            .create(path)
            .map_err(|e| {
                let m = e.to_string();
                if m.contains("already open") {
                    open_err(format!("{m}: another samlgate process holds this file"))
                } else {
                    open_err(m)
                }
            })?;
        // Create every table once so read transactions never meet TableDoesNotExist.
        let txn = db.begin_write()?;
        txn.open_table(USERS)?;
        txn.open_table(SUBJECTS)?;
        txn.open_table(SESSIONS)?;
        txn.open_table(REPLAY)?;
        txn.open_table(AUDIT)?;
        txn.open_table(META)?;
        txn.open_table(USERNAMES)?;
        txn.open_table(EMAILS)?;
        txn.open_table(USER_SESSIONS)?;
        // Stores written before the per-user session index existed: build it once, so that
        // ending a user's sessions reaches the old ones too.
        if txn
            .open_table(META)?
            .get("user_sessions_indexed")?
            .is_none()
        {
            let sessions = txn.open_table(SESSIONS)?;
            let mut index = txn.open_table(USER_SESSIONS)?;
            for row in sessions.iter()? {
                let (k, v) = row?;
                let (Ok(hash), Ok(s)) = (
                    <[u8; 32]>::try_from(k.value()),
                    decode::<SessionRecord>(v.value()),
                ) else {
                    continue;
                };
                index.insert(&user_session_key(s.user_id, &hash)[..], ())?;
            }
            txn.open_table(META)?.insert("user_sessions_indexed", 1)?;
        }
        txn.commit()?;
        let db = Arc::new(db);
        Ok(Store {
            writer: Writer::start(db.clone()),
            db,
        })
    }

    /// Close the file: queued writes are committed, then the lock on it is released, so
    /// another process may open it. Waits until every clone of this `Store` is dropped.
    pub fn close(self) {
        let Store { db, writer } = self;
        drop(db);
        writer.close();
    }

    /// Run `f` in a write transaction shared with other queued writes; resolves once durable.
    pub async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.writer.write(f).await
    }

    /// `write` for code that is not async (CLI, tests).
    pub fn write_blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.writer.write_blocking(f)
    }

    /// Queue a write without waiting for it.
    pub fn write_detached<F>(&self, f: F)
    where
        F: FnOnce(&mut Tx<'_>) -> Result<(), StoreError> + Send + 'static,
    {
        self.writer.write_detached(f)
    }

    pub fn session(&self, token_hash: &[u8; 32]) -> Result<Option<SessionRecord>, StoreError> {
        let r = self.db.begin_read()?;
        let t = r.open_table(SESSIONS)?;
        let found = t.get(&token_hash[..])?.map(|v| v.value().to_vec());
        found.map(|b| decode(&b)).transpose()
    }

    pub fn user(&self, id: u64) -> Result<Option<User>, StoreError> {
        let r = self.db.begin_read()?;
        let t = r.open_table(USERS)?;
        let found = t.get(id)?.map(|v| v.value().to_vec());
        found.map(|b| decode(&b)).transpose()
    }

    pub fn user_by_subject(&self, idp: &str, subject: &str) -> Result<Option<User>, StoreError> {
        let r = self.db.begin_read()?;
        let id = r
            .open_table(SUBJECTS)?
            .get(subject_key(idp, subject).as_str())?
            .map(|v| v.value());
        match id {
            Some(id) => self.user(id),
            None => Ok(None),
        }
    }

    pub fn users(&self) -> Result<Vec<User>, StoreError> {
        let r = self.db.begin_read()?;
        let t = r.open_table(USERS)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (_, v) = row?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    pub fn audit_events(&self) -> Result<Vec<AuditEvent>, StoreError> {
        self.audit_query(&AuditQuery::default())
    }

    /// Audit events oldest first, filtered. With `after_seq` (following the log) the oldest
    /// `limit` events after it; without, the newest `limit` that match.
    pub fn audit_query(&self, q: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        let r = self.db.begin_read()?;
        let t = r.open_table(AUDIT)?;
        let limit = q.limit.unwrap_or(usize::MAX);
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let matches = |ev: &AuditEvent| {
            (q.user_id.is_none() || ev.user_id == q.user_id)
                && q.kind.as_deref().is_none_or(|k| ev.kind == k)
                && q.since.is_none_or(|since| ev.at >= since)
        };
        match q.after_seq {
            Some(after) => {
                let Some(start) = after.checked_add(1) else {
                    return Ok(out);
                };
                for row in t.range(start..)? {
                    let (_, v) = row?;
                    let ev: AuditEvent = decode(v.value())?;
                    if matches(&ev) {
                        out.push(ev);
                        if out.len() >= limit {
                            break;
                        }
                    }
                }
            }
            None => {
                for row in t.iter()?.rev() {
                    let (_, v) = row?;
                    let ev: AuditEvent = decode(v.value())?;
                    if matches(&ev) {
                        out.push(ev);
                        if out.len() >= limit {
                            break;
                        }
                    }
                }
                out.reverse();
            }
        }
        Ok(out)
    }

    pub fn user_by_username(&self, username: &str) -> Result<Option<User>, StoreError> {
        let r = self.db.begin_read()?;
        let id = r
            .open_table(USERNAMES)?
            .get(fold(username).as_str())?
            .map(|v| v.value());
        match id {
            Some(id) => self.user(id),
            None => Ok(None),
        }
    }

    /// Every stored session with its token hash (never the token: it is not stored).
    pub fn sessions(&self) -> Result<Vec<([u8; 32], SessionRecord)>, StoreError> {
        let r = self.db.begin_read()?;
        let t = r.open_table(SESSIONS)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (k, v) = row?;
            let Ok(hash) = <[u8; 32]>::try_from(k.value()) else {
                continue;
            };
            out.push((hash, decode(v.value())?));
        }
        Ok(out)
    }

    pub fn user_count(&self) -> Result<u64, StoreError> {
        use redb::ReadableTableMetadata;
        let r = self.db.begin_read()?;
        Ok(r.open_table(USERS)?.len()?)
    }

    pub fn session_count(&self) -> Result<u64, StoreError> {
        use redb::ReadableTableMetadata;
        let r = self.db.begin_read()?;
        Ok(r.open_table(SESSIONS)?.len()?)
    }

    /// Cross-checks the tables against each other. Returns one line per inconsistency; an
    /// empty list means every index points at a user, and every session at a live user.
    pub fn check(&self) -> Result<Vec<String>, StoreError> {
        let r = self.db.begin_read()?;
        let users = r.open_table(USERS)?;
        let mut problems = Vec::new();
        for row in users.iter()? {
            let (k, v) = row?;
            match decode::<User>(v.value()) {
                Ok(u) if u.id != k.value() => {
                    problems.push(format!("user row {} holds id {}", k.value(), u.id))
                }
                Ok(_) => {}
                Err(e) => problems.push(format!("user row {}: {e}", k.value())),
            }
        }
        for (table, def) in [
            ("subjects", SUBJECTS),
            ("usernames", USERNAMES),
            ("emails", EMAILS),
        ] {
            for row in r.open_table(def)?.iter()? {
                let (k, v) = row?;
                if users.get(v.value())?.is_none() {
                    problems.push(format!(
                        "{table}: {:?} points at missing user {}",
                        k.value(),
                        v.value()
                    ));
                }
            }
        }
        let index = r.open_table(USER_SESSIONS)?;
        let sessions = r.open_table(SESSIONS)?;
        for row in sessions.iter()? {
            let (k, v) = row?;
            match decode::<SessionRecord>(v.value()) {
                Ok(s) if users.get(s.user_id)?.is_none() => {
                    problems.push(format!("a session points at missing user {}", s.user_id))
                }
                Ok(s) => {
                    let indexed = <[u8; 32]>::try_from(k.value())
                        .ok()
                        .map(|h| index.get(&user_session_key(s.user_id, &h)[..]))
                        .transpose()?
                        .flatten()
                        .is_some();
                    if !indexed {
                        problems.push(format!(
                            "a session of user {} is not in the index",
                            s.user_id
                        ));
                    }
                }
                Err(e) => problems.push(format!("a session row: {e}")),
            }
        }
        for row in index.iter()? {
            let (k, _) = row?;
            let hash = k.value().get(8..).unwrap_or_default();
            if sessions.get(hash)?.is_none() {
                problems.push("the session index names a missing session".into());
            }
        }
        Ok(problems)
    }

    /// Whether an assertion id is in the replay cache; the authoritative check is the insert
    /// in `Tx::remember_assertion`, this one only gives an early, precise answer.
    pub fn assertion_seen(
        &self,
        idp: &str,
        assertion_id: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let r = self.db.begin_read()?;
        let t = r.open_table(REPLAY)?;
        let until = t
            .get(subject_key(idp, assertion_id).as_str())?
            .map(|v| v.value());
        Ok(until.is_some_and(|u| u > now))
    }
}

/// One write transaction, as seen by a job. The helpers keep table names and encodings here.
pub struct Tx<'a> {
    txn: &'a WriteTransaction,
}

impl Tx<'_> {
    pub fn user_by_subject(&self, idp: &str, subject: &str) -> Result<Option<User>, StoreError> {
        let id = self
            .txn
            .open_table(SUBJECTS)?
            .get(subject_key(idp, subject).as_str())?
            .map(|v| v.value());
        let Some(id) = id else { return Ok(None) };
        self.user(id)
    }

    pub fn user(&self, id: u64) -> Result<Option<User>, StoreError> {
        match self.txn.open_table(USERS)?.get(id)? {
            Some(v) => Ok(Some(decode(v.value())?)),
            None => Ok(None),
        }
    }

    fn next(&mut self, counter: &str) -> Result<u64, StoreError> {
        let mut t = self.txn.open_table(META)?;
        let n = t.get(counter)?.map(|v| v.value()).unwrap_or(0) + 1;
        t.insert(counter, n)?;
        Ok(n)
    }

    pub fn next_user_id(&mut self) -> Result<u64, StoreError> {
        self.next("next_user_id")
    }

    /// Insert or replace a user, keeping the subject, username and e-mail indexes in step.
    /// Callers check `username_owner`/`email_owner` first; this overwrites an index entry.
    pub fn put_user(&mut self, user: &User) -> Result<(), StoreError> {
        let old = self.user(user.id)?;
        self.txn
            .open_table(USERS)?
            .insert(user.id, encode(user).as_slice())?;
        self.txn
            .open_table(SUBJECTS)?
            .insert(subject_key(&user.idp, &user.subject).as_str(), user.id)?;
        let mut names = self.txn.open_table(USERNAMES)?;
        let mut emails = self.txn.open_table(EMAILS)?;
        if let Some(old) = &old {
            if fold(&old.username) != fold(&user.username) {
                names.remove(fold(&old.username).as_str())?;
            }
            if let Some(e) = old
                .email
                .as_deref()
                .filter(|e| Some(*e) != user.email.as_deref())
            {
                emails.remove(fold(e).as_str())?;
            }
        }
        names.insert(fold(&user.username).as_str(), user.id)?;
        if let Some(e) = &user.email {
            emails.insert(fold(e).as_str(), user.id)?;
        }
        Ok(())
    }

    /// Move a user to a new subject key (the same person, identified in a new normal form).
    pub fn rekey_subject(&mut self, user: &mut User, subject: &str) -> Result<(), StoreError> {
        self.txn
            .open_table(SUBJECTS)?
            .remove(subject_key(&user.idp, &user.subject).as_str())?;
        user.subject = subject.to_string();
        self.put_user(user)
    }

    /// The user who holds this username (compared case-insensitively), if any.
    pub fn username_owner(&self, username: &str) -> Result<Option<u64>, StoreError> {
        let t = self.txn.open_table(USERNAMES)?;
        let id = t.get(fold(username).as_str())?.map(|v| v.value());
        Ok(id)
    }

    /// The user who holds this e-mail address (compared case-insensitively), if any.
    pub fn email_owner(&self, email: &str) -> Result<Option<u64>, StoreError> {
        let t = self.txn.open_table(EMAILS)?;
        let id = t.get(fold(email).as_str())?.map(|v| v.value());
        Ok(id)
    }

    pub fn audit(
        &mut self,
        at: i64,
        kind: &str,
        user: Option<&User>,
        detail: serde_json::Value,
    ) -> Result<(), StoreError> {
        let seq = self.next("next_audit_seq")?;
        let ev = AuditEvent {
            seq,
            at,
            kind: kind.to_string(),
            user_id: user.map(|u| u.id),
            subject: user.map(|u| u.subject.clone()),
            detail,
        };
        self.txn
            .open_table(AUDIT)?
            .insert(seq, encode(&ev).as_slice())?;
        Ok(())
    }

    /// Record an assertion id as used. Returns false if it was already used (a replay).
    pub fn remember_assertion(
        &mut self,
        idp: &str,
        assertion_id: &str,
        until: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let key = subject_key(idp, assertion_id);
        let mut t = self.txn.open_table(REPLAY)?;
        if t.get(key.as_str())?.is_some_and(|u| u.value() > now) {
            return Ok(false);
        }
        t.insert(key.as_str(), until)?;
        Ok(true)
    }

    pub fn put_session(
        &mut self,
        token_hash: &[u8; 32],
        s: &SessionRecord,
    ) -> Result<(), StoreError> {
        self.txn
            .open_table(SESSIONS)?
            .insert(&token_hash[..], encode(s).as_slice())?;
        self.txn
            .open_table(USER_SESSIONS)?
            .insert(&user_session_key(s.user_id, token_hash)[..], ())?;
        Ok(())
    }

    pub fn delete_session(&mut self, token_hash: &[u8; 32]) -> Result<(), StoreError> {
        let old = self
            .txn
            .open_table(SESSIONS)?
            .remove(&token_hash[..])?
            .map(|v| v.value().to_vec());
        if let Some(Ok(s)) = old.map(|b| decode::<SessionRecord>(&b)) {
            self.txn
                .open_table(USER_SESSIONS)?
                .remove(&user_session_key(s.user_id, token_hash)[..])?;
        }
        Ok(())
    }

    /// End every session of a user. Returns their token hashes, for the caches.
    pub fn delete_user_sessions(&mut self, user_id: u64) -> Result<Vec<[u8; 32]>, StoreError> {
        let mut index = self.txn.open_table(USER_SESSIONS)?;
        let from = user_session_key(user_id, &[0; 32]);
        let to = user_session_key(user_id, &[0xff; 32]);
        let keys: Vec<Vec<u8>> = index
            .range(&from[..]..=&to[..])?
            .filter_map(|row| row.ok())
            .map(|(k, _)| k.value().to_vec())
            .collect();
        let mut sessions = self.txn.open_table(SESSIONS)?;
        let mut hashes = Vec::new();
        for k in keys {
            index.remove(k.as_slice())?;
            if let Ok(hash) = <[u8; 32]>::try_from(&k[8..]) {
                sessions.remove(&hash[..])?;
                hashes.push(hash);
            }
        }
        Ok(hashes)
    }

    pub fn user_by_username(&self, username: &str) -> Result<Option<User>, StoreError> {
        match self.username_owner(username)? {
            Some(id) => self.user(id),
            None => Ok(None),
        }
    }

    /// Remove a user, their indexes and sessions. Returns the ended sessions' token hashes.
    pub fn delete_user(&mut self, user: &User) -> Result<Vec<[u8; 32]>, StoreError> {
        let hashes = self.delete_user_sessions(user.id)?;
        self.txn.open_table(USERS)?.remove(user.id)?;
        self.txn
            .open_table(SUBJECTS)?
            .remove(subject_key(&user.idp, &user.subject).as_str())?;
        self.txn
            .open_table(USERNAMES)?
            .remove(fold(&user.username).as_str())?;
        if let Some(e) = &user.email {
            let mut emails = self.txn.open_table(EMAILS)?;
            let owner = emails.get(fold(e).as_str())?.map(|v| v.value());
            if owner == Some(user.id) {
                emails.remove(fold(e).as_str())?;
            }
        }
        Ok(hashes)
    }

    /// Persist a later `last_seen`, if the session still exists.
    pub fn touch_session(
        &mut self,
        token_hash: &[u8; 32],
        last_seen: i64,
    ) -> Result<(), StoreError> {
        let mut t = self.txn.open_table(SESSIONS)?;
        // An unreadable row is skipped, not an error: this job shares its batch with logins.
        let current: Option<SessionRecord> = match t.get(&token_hash[..])? {
            Some(v) => decode(v.value()).ok(),
            None => None,
        };
        if let Some(mut s) = current {
            if last_seen > s.last_seen {
                s.last_seen = last_seen;
                t.insert(&token_hash[..], encode(&s).as_slice())?;
            }
        }
        Ok(())
    }

    /// Drop expired sessions and replay entries. Returns how many rows went.
    pub fn purge_expired(&mut self, now: i64, idle_secs: i64) -> Result<usize, StoreError> {
        let mut n = 0;
        {
            let mut t = self.txn.open_table(SESSIONS)?;
            let dead: Vec<Vec<u8>> = t
                .iter()?
                .filter_map(|row| row.ok())
                .filter(|(_, v)| {
                    decode::<SessionRecord>(v.value())
                        .map(|s| s.expires_at <= now || s.last_seen + idle_secs <= now)
                        .unwrap_or(true)
                })
                .map(|(k, _)| k.value().to_vec())
                .collect();
            for k in dead {
                if let Some(Ok(s)) = t
                    .remove(k.as_slice())?
                    .map(|v| decode::<SessionRecord>(v.value()))
                {
                    if let Ok(hash) = <[u8; 32]>::try_from(k.as_slice()) {
                        self.txn
                            .open_table(USER_SESSIONS)?
                            .remove(&user_session_key(s.user_id, &hash)[..])?;
                    }
                }
                n += 1;
            }
        }
        let mut t = self.txn.open_table(REPLAY)?;
        let dead: Vec<String> = t
            .iter()?
            .filter_map(|row| row.ok())
            .filter(|(_, v)| v.value() <= now)
            .map(|(k, _)| k.value().to_string())
            .collect();
        for k in dead {
            t.remove(k.as_str())?;
            n += 1;
        }
        Ok(n)
    }
}
