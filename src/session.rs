//! Sessions: an opaque cookie token, a record in redb keyed by the token's SHA-256, and a moka
//! cache in front so that a logged-in request does no disk I/O and takes no global lock.
//!
//! The idle clock runs in memory; `last_seen` reaches the store at most once a minute per
//! session, through the writer thread, never on the request path.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::config::SessionConfig;
use crate::store::{SessionRecord, Store, StoreError, User};

/// How stale the stored `last_seen` may get before a background write refreshes it.
const TOUCH_EVERY_SECS: i64 = 60;
/// A token is 32 random bytes, base64url without padding.
const TOKEN_LEN: usize = 43;

/// Who the user is, as the backend will be told.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub user_id: u64,
    pub username: String,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub groups: Vec<String>,
}

impl Identity {
    pub fn of(user: &User) -> Identity {
        Identity {
            user_id: user.id,
            username: user.username.clone(),
            email: user.email.clone(),
            display_name: user.display_name.clone(),
            groups: user.group_names(),
        }
    }
}

pub struct LiveSession {
    pub identity: Identity,
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
    idle: i64,
    absolute: i64,
}

impl Sessions {
    pub fn new(store: Store, cfg: &SessionConfig) -> Sessions {
        Sessions {
            store,
            cache: moka::sync::Cache::builder()
                .max_capacity(cfg.max_cached)
                .time_to_idle(cfg.idle_timeout)
                .build(),
            idle: cfg.idle_timeout.as_secs() as i64,
            absolute: cfg.absolute_timeout.as_secs() as i64,
        }
    }

    /// The record for a new session; its end is bounded by the IdP's SessionNotOnOrAfter.
    pub fn record_for(
        &self,
        user: &User,
        now: i64,
        idp_end: Option<i64>,
        session_index: Option<String>,
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
        }
    }

    /// Put a just-committed session in the cache, so its first request needs no read.
    pub fn prime(&self, hash: TokenHash, record: &SessionRecord, user: &User) {
        self.cache.insert(hash, Arc::new(live(record, user)));
    }

    /// The live session for a cookie value, or `None` if there is none or it has ended.
    pub fn lookup(&self, token: &str, now: i64) -> Option<Arc<LiveSession>> {
        if !well_formed(token) {
            return None;
        }
        let hash = hash_token(token);
        let live = match self.cache.get(&hash) {
            Some(l) => l,
            None => {
                let l = Arc::new(self.load(&hash)?);
                self.cache.insert(hash, l.clone());
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
        Some(live)
    }

    fn load(&self, hash: &TokenHash) -> Option<LiveSession> {
        let read = || -> Result<Option<LiveSession>, StoreError> {
            let Some(record) = self.store.session(hash)? else {
                return Ok(None);
            };
            let Some(user) = self.store.user(record.user_id)? else {
                return Ok(None);
            };
            if user.status != crate::store::UserStatus::Active {
                return Ok(None);
            }
            Ok(Some(live(&record, &user)))
        };
        match read() {
            Ok(l) => l,
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
        self.cache.invalidate(&hash);
        let done = self.store.write(move |tx| tx.delete_session(&hash)).await;
        // A lookup racing with the delete may have cached it again.
        self.cache.invalidate(&hash);
        done
    }

    /// Drop an expired session; a reload before the delete lands is refused again by the
    /// same expiry check, so this need not wait.
    fn end_hash(&self, hash: TokenHash) {
        self.cache.invalidate(&hash);
        self.store
            .write_detached(move |tx| tx.delete_session(&hash));
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle as u64)
    }
}

fn live(record: &SessionRecord, user: &User) -> LiveSession {
    LiveSession {
        identity: Identity::of(user),
        expires_at: record.expires_at,
        last_seen: AtomicI64::new(record.last_seen),
        persisted_last_seen: AtomicI64::new(record.last_seen),
    }
}
