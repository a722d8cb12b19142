//! The login flow, from "no session" to "session cookie set", independent of the proxy.
//!
//! start:  remember (request id, return path, browser) under a short RelayState token, send the
//!         browser to the IdP.
//! finish: RelayState -> pending login -> verify the response against its request id -> replay
//!         and browser checks -> provision + replay record + session in one transaction.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use base64::Engine as _;
use rand::RngCore;

use crate::config::{AttributeMap, Config};
use crate::provision::{self, Outcome, Profile, Refusal};
use crate::saml::{SamlAttribute, SamlError, ServiceProvider, VerifiedAssertion};
use crate::session::{self, Sessions};
use crate::store::{Store, StoreError};

/// Logins in flight at once; past this the oldest are forgotten (and must start again).
const MAX_PENDING_LOGINS: u64 = 100_000;

/// A login the gateway started and the IdP has not answered yet.
struct PendingLogin {
    request_id: String,
    return_to: String,
    /// SHA-256 of the browser's state cookie: only that browser may finish this login.
    browser: session::TokenHash,
    finished: AtomicBool,
}

/// Why a login did not finish. `status` and `reason` are for the browser, `Display` for the log.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error(transparent)]
    Saml(#[from] SamlError),
    #[error("the POST has no RelayState")]
    MissingRelayState,
    #[error("RelayState is unknown or expired")]
    UnknownRelayState,
    #[error("the login was started in another browser (state cookie missing or different)")]
    OtherBrowser,
    #[error("assertion {0} was already used")]
    Replay(String),
    #[error("this login request was already answered")]
    AlreadyFinished,
    #[error("user {username} is disabled by an admin")]
    Disabled { username: String, contact: String },
    #[error("user {username} is inactive and reactivation on login is off")]
    Inactive { username: String, contact: String },
    #[error("{what} {value:?} already belongs to another user")]
    Conflict {
        what: &'static str,
        value: String,
        contact: String,
    },
    #[error("required attribute for {field} is missing; candidates {candidates:?}; received {received:?}")]
    MissingAttribute {
        field: &'static str,
        candidates: Vec<String>,
        received: Vec<String>,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl LoginError {
    pub fn status(&self) -> u16 {
        match self {
            LoginError::Disabled { .. }
            | LoginError::Inactive { .. }
            | LoginError::Conflict { .. } => 403,
            LoginError::Store(_) => 503,
            _ => 400,
        }
    }

    pub fn reason(&self) -> String {
        match self {
            LoginError::Saml(e) => e.reason().to_string(),
            LoginError::MissingRelayState | LoginError::UnknownRelayState => {
                "This sign-in has expired or was not started here. Please start again.".into()
            }
            LoginError::OtherBrowser => "This sign-in was started in another browser.".into(),
            LoginError::Replay(_) => "This sign-in answer was already used.".into(),
            LoginError::AlreadyFinished => "This sign-in was already completed.".into(),
            LoginError::Disabled { contact, .. } | LoginError::Inactive { contact, .. } => {
                format!("Your account is disabled here. Please ask {contact} to enable it.")
            }
            LoginError::Conflict { what, contact, .. } => format!(
                "Your {what} already belongs to another account here. Please ask {contact} to sort it out."
            ),
            LoginError::MissingAttribute { field, .. } => format!(
                "The identity provider did not send your {field}. Please tell your administrator."
            ),
            LoginError::Store(_) => "The sign-in could not be saved. Please try again.".into(),
        }
    }
}

/// Where the browser goes to start a login.
pub struct LoginStart {
    pub idp_url: String,
    /// A new state cookie value to set, when the browser had none.
    pub new_state_cookie: Option<String>,
}

/// A finished login.
pub struct LoginDone {
    /// The new session token; `None` when the browser re-posted an answer while already
    /// logged in (back button), which changes nothing.
    pub session_token: Option<String>,
    pub return_to: String,
    pub username: String,
}

pub struct Logins {
    sp: ServiceProvider,
    store: Store,
    sessions: Arc<Sessions>,
    pending: moka::sync::Cache<String, Arc<PendingLogin>>,
    attributes: AttributeMap,
    policy: crate::config::ProvisioningPolicy,
}

fn random_token(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

const RETURN_PATH_ESCAPES: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'<')
    .add(b'>')
    .add(b'`');

/// A return target we are willing to redirect to: a same-origin path, nothing that a browser
/// could read as another host. Anything else becomes `/`.
pub fn safe_return_path(target: &str) -> String {
    let t = target.trim();
    let ok = t.starts_with('/')
        && !t.starts_with("//")
        && !t.starts_with("/\\")
        && !t.chars().any(|c| c.is_control() || c == '\\')
        && {
            // `/%2F%2Fevil` and friends decode to a scheme-relative URL in some stacks.
            let lower = t.to_ascii_lowercase();
            !lower.starts_with("/%2f") && !lower.starts_with("/%5c")
        };
    if ok {
        // Non-ASCII and spaces are escaped so the Location header is plain ASCII.
        percent_encoding::utf8_percent_encode(t, RETURN_PATH_ESCAPES).to_string()
    } else {
        "/".to_string()
    }
}

impl Logins {
    pub fn new(cfg: &Config, sp: ServiceProvider, store: Store, sessions: Arc<Sessions>) -> Logins {
        Logins {
            sp,
            store,
            sessions,
            pending: moka::sync::Cache::builder()
                // Anyone can start a login: bound the memory that costs (~200 bytes each).
                .max_capacity(MAX_PENDING_LOGINS)
                .time_to_live(cfg.sp.login_timeout)
                .build(),
            attributes: cfg.attributes.clone(),
            policy: cfg.provisioning.clone(),
        }
    }

    pub fn sp(&self) -> &ServiceProvider {
        &self.sp
    }

    /// Begin a login that will come back to `return_to`.
    pub fn start(
        &self,
        return_to: &str,
        state_cookie: Option<&str>,
    ) -> Result<LoginStart, LoginError> {
        let (cookie, new_state_cookie) = match state_cookie.filter(|c| c.len() == 22) {
            Some(c) => (c.to_string(), None),
            None => {
                let c = random_token(16);
                (c.clone(), Some(c))
            }
        };
        // 16 random bytes, 22 characters: well under the 80 bytes RelayState allows.
        let relay_state = random_token(16);
        let redirect = self.sp.authn_redirect(&relay_state)?;
        self.pending.insert(
            relay_state,
            Arc::new(PendingLogin {
                request_id: redirect.request_id,
                return_to: safe_return_path(return_to),
                browser: session::hash_token(&cookie),
                finished: AtomicBool::new(false),
            }),
        );
        Ok(LoginStart {
            idp_url: redirect.url,
            new_state_cookie,
        })
    }

    /// Finish a login from the ACS POST.
    pub async fn finish(
        &self,
        saml_response: Option<&str>,
        relay_state: Option<&str>,
        state_cookie: Option<&str>,
        session_cookie: Option<&str>,
        now: i64,
    ) -> Result<LoginDone, LoginError> {
        let saml_response = saml_response.ok_or(SamlError::MissingResponse)?;
        let relay_state = relay_state
            .filter(|r| !r.is_empty())
            .ok_or(LoginError::MissingRelayState)?;
        let pending = self
            .pending
            .get(relay_state)
            .ok_or(LoginError::UnknownRelayState)?;

        let verified = self
            .sp
            .verify_response(saml_response, &pending.request_id)?;
        if verified.weak_algorithm {
            log::warn!(
                "login of {:?} used a SHA-1 signature or digest (allowed by idp.allow_sha1)",
                verified.name_id
            );
        }

        // A replay gets its own answer, before the browser checks; and a browser re-posting
        // its own answer while logged in is just sent back to the app.
        if self
            .store
            .assertion_seen(&verified.idp_entity_id, &verified.assertion_id, now)?
        {
            if let Some(live) = session_cookie.and_then(|c| self.sessions.lookup(c, now)) {
                return Ok(LoginDone {
                    session_token: None,
                    return_to: pending.return_to.clone(),
                    username: live.username.clone(),
                });
            }
            return Err(LoginError::Replay(verified.assertion_id));
        }
        let browser_ok = state_cookie.is_some_and(|c| session::hash_token(c) == pending.browser);
        if !browser_ok {
            return Err(LoginError::OtherBrowser);
        }
        if pending.finished.swap(true, Ordering::SeqCst) {
            return Err(LoginError::AlreadyFinished);
        }

        if let Some(end) = verified.session_not_on_or_after {
            if end.timestamp() <= now {
                // Accepting it would make a session that is already over: a login loop.
                return Err(SamlError::Time(format!(
                    "AuthnStatement SessionNotOnOrAfter {end} has passed; gateway clock {now} (unix)"
                ))
                .into());
            }
        }
        let profile = self.profile(&verified)?;
        let (token, hash) = session::new_token();
        let policy = self.policy.clone();
        let sessions = self.sessions.clone();
        let replay_until = verified.replay_until.timestamp();
        let idp_end = verified.session_not_on_or_after.map(|t| t.timestamp());
        let session_index = verified.session_index.clone();
        let assertion_id = verified.assertion_id.clone();

        let result = self
            .store
            .write(move |tx| {
                if !tx.remember_assertion(&profile.idp, &assertion_id, replay_until, now)? {
                    return Ok(Err(LoginError::Replay(assertion_id)));
                }
                match provision::provision(tx, &profile, &policy, now)? {
                    Outcome::Refused { user, why } => {
                        if let Some(u) = &user {
                            // A disabled or inactive user keeps no live session anywhere.
                            sessions.user_changed(u);
                        }
                        let contact = policy.contact.clone();
                        let username = user.map(|u| u.username).unwrap_or_default();
                        Ok(Err(match why {
                            Refusal::Disabled => LoginError::Disabled { username, contact },
                            Refusal::Inactive => LoginError::Inactive { username, contact },
                            Refusal::UsernameTaken(value) => LoginError::Conflict {
                                what: "username",
                                value,
                                contact,
                            },
                            Refusal::EmailTaken(value) => LoginError::Conflict {
                                what: "e-mail address",
                                value,
                                contact,
                            },
                        }))
                    }
                    Outcome::LoggedIn { user, created } => {
                        let record = sessions.record_for(&user, now, idp_end, session_index);
                        tx.put_session(&hash, &record)?;
                        Ok(Ok((user, record, created)))
                    }
                }
            })
            .await;
        let (user, record, created) = match result {
            Ok(Ok(done)) => done,
            Ok(Err(refused)) => return Err(refused),
            Err(e) => {
                // Nothing was committed: let the browser try the same answer again.
                pending.finished.store(false, Ordering::SeqCst);
                return Err(e.into());
            }
        };
        self.sessions.prime(hash, &record, &user);
        log::info!(
            "login: user {} (id {}, {}) groups {:?}",
            user.username,
            user.id,
            if created { "created" } else { "existing" },
            user.group_names()
        );
        Ok(LoginDone {
            session_token: Some(token),
            return_to: pending.return_to.clone(),
            username: user.username,
        })
    }

    /// Map SAML attributes to the user's fields, as the config lists them.
    fn profile(&self, v: &VerifiedAssertion) -> Result<Profile, LoginError> {
        let map = &self.attributes;
        let username = if map.username.is_empty() {
            v.name_id.clone()
        } else {
            first_value(&v.attributes, &map.username).ok_or_else(|| {
                LoginError::MissingAttribute {
                    field: "username",
                    candidates: map.username.clone(),
                    received: v.attributes.iter().map(|a| a.name.clone()).collect(),
                }
            })?
        };
        let groups = find(&v.attributes, &map.groups).map(|a| {
            let mut g: Vec<String> = a.iter().flat_map(|a| a.values.iter().cloned()).collect();
            g.sort();
            g.dedup();
            g
        });
        Ok(Profile {
            idp: v.idp_entity_id.clone(),
            subject: v.name_id.clone(),
            username,
            display_name: first_value(&v.attributes, &map.display_name),
            email: first_value(&v.attributes, &map.email),
            groups,
        })
    }
}

/// Attributes matching the first candidate name that is present (by Name, then FriendlyName).
fn find<'a>(attrs: &'a [SamlAttribute], candidates: &[String]) -> Option<Vec<&'a SamlAttribute>> {
    for c in candidates {
        let hits: Vec<_> = attrs
            .iter()
            .filter(|a| &a.name == c || a.friendly_name.as_ref() == Some(c))
            .collect();
        if !hits.is_empty() {
            return Some(hits);
        }
    }
    None
}

fn first_value(attrs: &[SamlAttribute], candidates: &[String]) -> Option<String> {
    find(attrs, candidates)?
        .into_iter()
        .flat_map(|a| a.values.iter())
        .map(|v| v.trim())
        .find(|v| !v.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::safe_return_path;

    #[test]
    fn return_targets_stay_on_this_origin() {
        for bad in [
            "https://evil.test/",
            "//evil.test",
            "/\\evil.test",
            "\\/evil.test",
            "http:evil.test",
            "http:%2f%5cevil.test",
            "https:/evil.test",
            "%2F%2Fevil.test",
            "/%2F%2Fevil.test",
            "javascript:alert(1)",
            "https://evil.test@sp.test/",
            "/ok\r\nLocation: https://evil.test",
        ] {
            assert_eq!(safe_return_path(bad), "/", "{bad}");
        }
        assert_eq!(safe_return_path("/ok/path?x=1"), "/ok/path?x=1");
        assert_eq!(safe_return_path("/été?q=a b"), "/%C3%A9t%C3%A9?q=a%20b");
    }
}
