//! Sessions: an opaque cookie token, a record in redb keyed by the token's SHA-256, and a moka
//! cache in front so that a logged-in request does no disk I/O and takes no global lock.
//!
//! The idle clock runs in memory; `last_seen` reaches the store at most once a minute per
//! session, through the writer thread, never on the request path.
//!
//! Who a session belongs to and who that user is are cached apart: every session of a user
//! shares one `Identity`, replaced whenever a login changes the user, so a browser that
//! logged in earlier sees the new groups on its next request, not after its session ends.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::config::SessionConfig;
use crate::store::{SessionRecord, Store, StoreError, User, UserStatus};

/// How stale the stored `last_seen` may get before a background write refreshes it.
pub const TOUCH_EVERY_SECS: i64 = 60;
/// A token is 32 random bytes, base64url without padding.
const TOKEN_LEN: usize = 43;

/// A user's group names, sorted, in two allocations whatever their number: every live user
/// keeps an `Identity` in memory, and a `Vec<String>` spends a heap block (and 24 bytes) on
/// each name; at 100,000 users that is the difference that keeps them under 150 MB.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Groups {
    text: Box<str>,
    /// Where each name ends in `text`.
    ends: Box<[u32]>,
}

impl Groups {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn get(&self, i: usize) -> Option<&str> {
        let end = *self.ends.get(i)? as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        self.text.get(start..end)
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        (0..self.len()).map(|i| self.get(i).unwrap_or_default())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.iter().any(|g| g == name)
    }
}

impl<S: AsRef<str>> FromIterator<S> for Groups {
    fn from_iter<I: IntoIterator<Item = S>>(names: I) -> Groups {
        let mut text = String::new();
        let mut ends = Vec::new();
        for n in names {
            text.push_str(n.as_ref());
            // Group names are short; a list past 4 GiB cannot come from a SAML assertion
            // that passed the size limit.
            ends.push(u32::try_from(text.len()).unwrap_or(u32::MAX));
        }
        Groups {
            text: text.into_boxed_str(),
            ends: ends.into_boxed_slice(),
        }
    }
}

impl std::fmt::Debug for Groups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl serde::Serialize for Groups {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

/// Who the user is, as the backend will be told.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub user_id: u64,
    pub username: String,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub groups: Groups,
    /// Extra attributes by config key (`[attributes.extra]`).
    pub attributes: std::collections::BTreeMap<String, String>,
}

impl Identity {
    pub fn of(user: &User) -> Identity {
        Identity {
            user_id: user.id,
            username: user.username.clone(),
            email: user.email.clone(),
            display_name: user.display_name.clone(),
            groups: user.group_names().iter().collect(),
            attributes: user.attributes.clone(),
        }
    }
}

struct LiveSession {
    user_id: u64,
    expires_at: i64,
    last_seen: AtomicI64,
    persisted_last_seen: AtomicI64,
}

pub type TokenHash = [u8; 32];

pub fn hash_token(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// A fresh session token and its hash.
pub fn new_token() -> (String, TokenHash) {
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let hash = hash_token(&token);
    (token, hash)
}

fn well_formed(token: &str) -> bool {
    token.len() == TOKEN_LEN
        && token
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

pub struct Sessions {
    store: Store,
    cache: moka::sync::Cache<TokenHash, Arc<LiveSession>>,
    /// Active users' identities by user id; absent for users who may not have sessions.
    identities: moka::sync::Cache<u64, Arc<Identity>>,
    /// Tokens known to be no session (ended, or never found in the store), so that a lookup
    /// racing a logout cannot bring the session back, and a flood of made-up tokens costs a
    /// store read each only once. A real token is never in here: tokens are never reused.
    dead: moka::sync::Cache<TokenHash, ()>,
    idle: i64,
    absolute: i64,
    /// Bumped by every committed change told to the caches (`user_changed`, `forget`). A
    /// reader that loaded a user from the store inserts it only if no change was told in
    /// between; otherwise its copy may predate that change (a disable, say) and is dropped.
    generation: AtomicU64,
}

impl Sessions {
    pub fn new(store: Store, cfg: &SessionConfig) -> Sessions {
        Sessions {
            store,
            cache: moka::sync::Cache::builder()
                .max_capacity(cfg.max_cached)
                .time_to_idle(cfg.idle_timeout)
                .build(),
            identities: moka::sync::Cache::builder()
                .max_capacity(cfg.max_cached)
                .time_to_idle(cfg.idle_timeout)
                .build(),
            dead: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(cfg.idle_timeout)
                .build(),
            idle: cfg.idle_timeout.as_secs() as i64,
            absolute: cfg.absolute_timeout.as_secs() as i64,
            generation: AtomicU64::new(0),
        }
    }

    /// The record for a new session; its end is bounded by the IdP's SessionNotOnOrAfter.
    pub fn record_for(
        &self,
        user: &User,
        now: i64,
        idp_end: Option<i64>,
        session_index: Option<String>,
        name_id: Option<(String, Option<String>)>,
    ) -> SessionRecord {
        let mut expires_at = now + self.absolute;
        if let Some(end) = idp_end {
            expires_at = expires_at.min(end);
        }
        SessionRecord {
            user_id: user.id,
            created_at: now,
            expires_at,
            last_seen: now,
            session_index,
            name_id_format: name_id.as_ref().and_then(|(_, f)| f.clone()),
            name_id: name_id.map(|(n, _)| n),
        }
    }

    /// Put a just-committed session in the cache, so its first request needs no read.
    ///
    /// The login's copy of the user may already be stale: the writer commits jobs in batches
    /// and wakes them in any order, so an admin's disable (or another login) of the same user
    /// may have committed after it and told the caches first. So the user and the session
    /// are read back from the store, under the generation check.
    pub fn prime(&self, hash: TokenHash, record: &SessionRecord, user: &User) {
        self.cache.insert(hash, Arc::new(live(record)));
        self.load_identity(user.id);
        let stored = matches!(self.store.session(&hash), Ok(Some(_)));
        if !stored || self.dead.contains_key(&hash) {
            self.cache.invalidate(&hash);
        }
    }

    /// A committed change to `user`: every live session of theirs follows it at once, and a
    /// user who is no longer active loses all sessions.
    pub fn user_changed(&self, user: &User) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        if user.status == UserStatus::Active {
            self.identities
                .insert(user.id, Arc::new(Identity::of(user)));
        } else {
            self.identities.invalidate(&user.id);
        }
    }

    /// Read a user from the store into the identity cache, unless a change is told while
    /// reading (then read again; after three tries leave the cache empty for the next request).
    fn load_identity(&self, user_id: u64) -> Option<Arc<Identity>> {
        for _ in 0..3 {
            let seen = self.generation.load(Ordering::SeqCst);
            let found = match self.store.user(user_id) {
                Ok(Some(user)) if user.status == UserStatus::Active => {
                    Some(Arc::new(Identity::of(&user)))
                }
                Ok(_) => None,
                Err(e) => {
                    log::error!("user lookup failed, treating as logged out: {e}");
                    None
                }
            };
            match &found {
                Some(id) => self.identities.insert(user_id, id.clone()),
                None => self.identities.invalidate(&user_id),
            }
            if self.generation.load(Ordering::SeqCst) == seen {
                return found;
            }
        }
        self.identities.invalidate(&user_id);
        None
    }

    /// Who is behind a cookie value, or `None` if no session or it has ended.
    pub fn lookup(&self, token: &str, now: i64) -> Option<Arc<Identity>> {
        if !well_formed(token) {
            return None;
        }
        let hash = hash_token(token);
        let live = match self.cache.get(&hash) {
            Some(l) => l,
            None if self.dead.contains_key(&hash) => return None,
            None => {
                let Some(l) = self.load(&hash) else {
                    self.dead.insert(hash, ());
                    return None;
                };
                let l = Arc::new(l);
                self.cache.insert(hash, l.clone());
                // A logout that finished while we read must win.
                if self.dead.contains_key(&hash) {
                    self.cache.invalidate(&hash);
                    return None;
                }
                l
            }
        };
        let last = live.last_seen.load(Ordering::Relaxed);
        if now >= live.expires_at || now - last >= self.idle {
            self.end_hash(hash);
            return None;
        }
        live.last_seen.fetch_max(now, Ordering::Relaxed);
        let persisted = live.persisted_last_seen.load(Ordering::Relaxed);
        if now - persisted >= TOUCH_EVERY_SECS
            && live
                .persisted_last_seen
                .compare_exchange(persisted, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.store
                .write_detached(move |tx| tx.touch_session(&hash, now));
        }
        self.identity(live.user_id)
    }

    fn identity(&self, user_id: u64) -> Option<Arc<Identity>> {
        if let Some(id) = self.identities.get(&user_id) {
            return Some(id);
        }
        self.load_identity(user_id)
    }

    fn load(&self, hash: &TokenHash) -> Option<LiveSession> {
        match self.store.session(hash) {
            Ok(record) => record.map(|r| live(&r)),
            Err(e) => {
                log::error!("session lookup failed, treating as logged out: {e}");
                None
            }
        }
    }

    /// End a session (logout). Resolves once the delete is durable, so no later lookup can
    /// load the session back from the store.
    pub async fn end(&self, token: &str) -> Result<(), StoreError> {
        if !well_formed(token) {
            return Ok(());
        }
        let hash = hash_token(token);
        self.dead.insert(hash, ());
        self.cache.invalidate(&hash);
        let done = self.store.write(move |tx| tx.delete_session(&hash)).await;
        // A lookup racing with the delete may have cached it again.
        self.cache.invalidate(&hash);
        done
    }

    /// Sessions ended in the store by someone else (an admin): no lookup may revive them.
    pub fn forget(&self, hashes: &[TokenHash]) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        for h in hashes {
            self.dead.insert(*h, ());
            self.cache.invalidate(h);
        }
    }

    /// Drop an expired session; a reload before the delete lands is refused again by the
    /// same expiry check, so this need not wait.
    fn end_hash(&self, hash: TokenHash) {
        self.dead.insert(hash, ());
        self.cache.invalidate(&hash);
        self.store
            .write_detached(move |tx| tx.delete_session(&hash));
    }
}

fn live(record: &SessionRecord) -> LiveSession {
    LiveSession {
        user_id: record.user_id,
        expires_at: record.expires_at,
        last_seen: AtomicI64::new(record.last_seen),
        persisted_last_seen: AtomicI64::new(record.last_seen),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn groups_keep_every_name_exactly_in_order() {
        let names = ["CN=eng,OU=Groups", "", "Ünïcødé", "staff"];
        let g: Groups = names.iter().collect();
        assert_eq!(g.len(), 4);
        assert_eq!(g.iter().collect::<Vec<_>>(), names);
        assert_eq!(g.get(1), Some(""));
        assert_eq!(g.get(4), None);
        assert!(g.contains("staff") && !g.contains("Staff"));
        assert_eq!(
            serde_json::to_string(&g).unwrap(),
            serde_json::to_string(&names).unwrap()
        );
        let none = Groups::default();
        assert!(none.is_empty() && none.iter().next().is_none());
    }

    use super::*;
    use crate::store::{User, UserStatus};

    fn setup(idle: u64, absolute: u64) -> (tempfile::TempDir, Sessions, User) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let cfg = SessionConfig {
            cookie_name: "s".into(),
            state_cookie_name: "s_state".into(),
            idle_timeout: std::time::Duration::from_secs(idle),
            absolute_timeout: std::time::Duration::from_secs(absolute),
            max_cached: 100,
        };
        let user = User {
            id: 7,
            idp: "i".into(),
            subject: "s".into(),
            username: "alice".into(),
            display_name: None,
            email: None,
            given_name: None,
            family_name: None,
            attributes: Default::default(),
            status: UserStatus::Active,
            groups: vec![],
            created_at: 0,
            updated_at: 0,
            last_login_at: None,
        };
        let u = user.clone();
        store.write_blocking(move |tx| tx.put_user(&u)).unwrap();
        (dir, Sessions::new(store, &cfg), user)
    }

    fn login(s: &Sessions, user: &User, now: i64, idp_end: Option<i64>) -> String {
        let (token, hash) = new_token();
        let record = s.record_for(user, now, idp_end, None, None);
        let r = record.clone();
        s.store
            .write_blocking(move |tx| tx.put_session(&hash, &r))
            .unwrap();
        s.prime(hash, &record, user);
        token
    }

    #[test]
    fn idle_timeout_ends_a_session_and_activity_keeps_it() {
        let (_d, s, user) = setup(600, 3600);
        let t = login(&s, &user, 1000, None);
        assert!(s.lookup(&t, 1500).is_some(), "active within idle time");
        assert!(
            s.lookup(&t, 2050).is_some(),
            "the last request reset the idle clock"
        );
        assert!(s.lookup(&t, 2650).is_none(), "idle for 600 s");
        assert!(s.lookup(&t, 2651).is_none(), "and stays ended");
    }

    #[test]
    fn absolute_timeout_and_the_idp_end_bound_a_session() {
        let (_d, s, user) = setup(600, 1200);
        let t = login(&s, &user, 1000, None);
        assert!(s.lookup(&t, 1500).is_some());
        assert!(s.lookup(&t, 2000).is_some());
        assert!(
            s.lookup(&t, 2200).is_none(),
            "absolute timeout despite activity"
        );
        let t = login(&s, &user, 1000, Some(1100));
        assert!(s.lookup(&t, 1099).is_some());
        assert!(s.lookup(&t, 1100).is_none(), "SessionNotOnOrAfter");
    }

    #[test]
    fn malformed_or_unknown_tokens_are_nobody() {
        let (_d, s, _) = setup(600, 1200);
        assert!(s.lookup("short", 1).is_none());
        assert!(s.lookup(&"A".repeat(43), 1).is_none());
        assert!(s.lookup(&format!("{}\r\n", "A".repeat(41)), 1).is_none());
    }

    #[test]
    fn a_deactivated_user_loses_every_session_at_once() {
        let (_d, s, mut user) = setup(600, 3600);
        let t = login(&s, &user, 1000, None);
        assert_eq!(s.lookup(&t, 1001).unwrap().username, "alice");
        user.status = UserStatus::Inactive;
        let u = user.clone();
        s.store.write_blocking(move |tx| tx.put_user(&u)).unwrap();
        s.user_changed(&user);
        assert!(s.lookup(&t, 1002).is_none());
    }
}
