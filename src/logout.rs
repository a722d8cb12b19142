//! Signing out: here (`/_saml/logout`, then on to the IdP when it has single logout), and
//! from the IdP (its LogoutRequest at `/_saml/slo` ends exactly the sessions it names).
//!
//! The SAML messages are built and verified in `saml::logout`; this module decides which
//! sessions end and records it, like `login` does for sessions that start.

use std::sync::Arc;

use serde_json::json;

use crate::login::Logins;
use crate::saml::{IdpLogoutRequest, SamlError, ServiceProvider, SloMessage};
use crate::session::{hash_token, Sessions, TokenHash};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum LogoutError {
    #[error(transparent)]
    Saml(#[from] SamlError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("LogoutRequest {0} was already used")]
    Replay(String),
}

impl LogoutError {
    pub fn status(&self) -> u16 {
        match self {
            LogoutError::Store(_) => 503,
            _ => 400,
        }
    }

    /// The sentence shown to the browser.
    pub fn reason(&self) -> &'static str {
        match self {
            LogoutError::Saml(SamlError::NotSigned | SamlError::BadSignature) => {
                "The sign-out request is not signed by the identity provider."
            }
            LogoutError::Saml(_) => "The sign-out request was not accepted.",
            LogoutError::Store(_) => "The sign-out could not be saved. Please try again.",
            LogoutError::Replay(_) => "This sign-out request was already used.",
        }
    }
}

/// Where the browser goes after `/_saml/logout`.
pub struct LocalLogout {
    /// Our LogoutRequest at the IdP, when single logout applies.
    pub idp_url: Option<String>,
}

/// What the SingleLogoutService did.
pub enum SloOutcome {
    /// The IdP's request was carried out: answer it at this URL (our LogoutResponse).
    Answer { url: String, ended: usize },
    /// Carried out, but the IdP has no SingleLogoutService to answer at.
    Ended { ended: usize },
    /// The IdP answered our LogoutRequest.
    IdpAnswered { status: String },
}

pub struct Logouts {
    logins: Arc<Logins>,
    store: Store,
    sessions: Arc<Sessions>,
    single_logout: bool,
}

impl Logouts {
    pub fn new(
        logins: Arc<Logins>,
        store: Store,
        sessions: Arc<Sessions>,
        single_logout: bool,
    ) -> Logouts {
        Logouts {
            logins,
            store,
            sessions,
            single_logout,
        }
    }

    /// End this browser's session, and say where to go next.
    pub async fn local(&self, token: Option<&str>, now: i64) -> Result<LocalLogout, StoreError> {
        let Some(token) = token else {
            return Ok(LocalLogout { idp_url: None });
        };
        // Read before ending: our LogoutRequest must repeat the session's NameID and index.
        let record = self.store.session(&hash_token(token)).ok().flatten();
        self.sessions.end(token).await?;
        let Some(record) = record.filter(|_| self.single_logout) else {
            return Ok(LocalLogout { idp_url: None });
        };
        let Some(name_id) = &record.name_id else {
            return Ok(LocalLogout { idp_url: None });
        };
        // The IdP that vouched for this user.
        let sp = match self.store.user(record.user_id).ok().flatten() {
            Some(u) => match self.logins.sp_for_entity(&u.idp) {
                Some(sp) => sp,
                None => return Ok(LocalLogout { idp_url: None }),
            },
            None => return Ok(LocalLogout { idp_url: None }),
        };
        let url = sp
            .logout_request_url(
                name_id,
                record.name_id_format.as_deref(),
                record.session_index.as_deref(),
                to_time(now),
            )
            .unwrap_or_else(|e| {
                // The local session is over either way.
                log::error!("logout: cannot build the LogoutRequest for the IdP: {e}");
                None
            });
        Ok(LocalLogout { idp_url: url })
    }

    /// A message at our SingleLogoutService, verified by `sp` (the IdP it came from).
    pub async fn from_idp(
        &self,
        sp: &ServiceProvider,
        msg: SloMessage,
        now: i64,
    ) -> Result<SloOutcome, LogoutError> {
        let (request, relay_state) = match msg {
            SloMessage::Response { status } => return Ok(SloOutcome::IdpAnswered { status }),
            SloMessage::Request {
                request,
                relay_state,
            } => (request, relay_state),
        };
        let ended = self.end_named(sp, &request, now).await?;
        match sp.logout_response_url(&request.id, true, relay_state.as_deref(), to_time(now))? {
            Some(url) => Ok(SloOutcome::Answer { url, ended }),
            None => Ok(SloOutcome::Ended { ended }),
        }
    }

    /// End the sessions the request names: its NameID, and one of its SessionIndexes when it
    /// lists any. One transaction with the replay record and the audit lines.
    async fn end_named(
        &self,
        sp: &ServiceProvider,
        request: &IdpLogoutRequest,
        now: i64,
    ) -> Result<usize, LogoutError> {
        let idp = sp.idp_entity_id.clone();
        // A NameID means something only at the IdP that issued it.
        let of_this_idp = |uid: u64| {
            self.store
                .user(uid)
                .ok()
                .flatten()
                .is_some_and(|u| u.idp == idp)
        };
        let named: Vec<(TokenHash, u64)> = self
            .store
            .sessions()?
            .into_iter()
            .filter(|(_, s)| s.name_id.as_deref() == Some(request.name_id.as_str()))
            .filter(|(_, s)| {
                request.session_indexes.is_empty()
                    || s.session_index
                        .as_ref()
                        .is_some_and(|i| request.session_indexes.contains(i))
            })
            .map(|(h, s)| (h, s.user_id))
            .filter(|(_, uid)| of_this_idp(*uid))
            .collect();
        let id = request.id.clone();
        let until = request.replay_until.timestamp();
        let indexes = request.session_indexes.clone();
        let hashes: Vec<TokenHash> = named.iter().map(|(h, _)| *h).collect();
        let fresh = self
            .store
            .write(move |tx| {
                if !tx.remember_assertion(&idp, &format!("logout:{id}"), until, now)? {
                    return Ok(false);
                }
                let mut users: Vec<u64> = named.iter().map(|(_, u)| *u).collect();
                users.sort_unstable();
                users.dedup();
                for (hash, _) in &named {
                    tx.delete_session(hash)?;
                }
                for uid in users {
                    let user = tx.user(uid)?;
                    let count = named.iter().filter(|(_, u)| *u == uid).count();
                    tx.audit(
                        now,
                        "sessions ended by the IdP",
                        user.as_ref(),
                        json!({"request": id, "sessions_ended": count, "session_indexes": indexes}),
                    )?;
                }
                Ok(true)
            })
            .await?;
        if !fresh {
            return Err(LogoutError::Replay(request.id.clone()));
        }
        self.sessions.forget(&hashes);
        Ok(hashes.len())
    }
}

fn to_time(now: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(now, 0).unwrap_or_else(chrono::Utc::now)
}
