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

use crate::config::{
    AttributeMap, Config, FieldRule, IdentityPolicy, NAMEID_EMAIL, NAMEID_UNSPECIFIED,
};
use crate::metrics::Metrics;
use crate::provision::{self, Changes, Outcome, Profile, Refusal};
use crate::saml::{SamlAttribute, SamlError, ServiceProvider, VerifiedAssertion};
use crate::session::{self, Sessions};
use crate::store::{Store, StoreError};

/// Logins in flight at once; past this the oldest are forgotten (and must start again).
const MAX_PENDING_LOGINS: u64 = 100_000;

/// A login the gateway started and the IdP has not answered yet.
struct PendingLogin {
    /// Index of the IdP it was sent to, in `Logins::idps`.
    idp: usize,
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
    #[error("NameID format {format} is not in identity.name_id_formats {accepted:?}")]
    NameIdFormat {
        format: String,
        accepted: Vec<String>,
    },
    #[error("the IdP sent the group overage claim instead of the groups, and the policy needs the groups; at the IdP, emit only groups assigned to the application or filter the claim")]
    GroupOverage { contact: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl LoginError {
    pub fn status(&self) -> u16 {
        match self {
            LoginError::Disabled { .. }
            | LoginError::Inactive { .. }
            | LoginError::Conflict { .. }
            | LoginError::GroupOverage { .. } => 403,
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
            LoginError::NameIdFormat { .. } => {
                "The identity provider sent a kind of user identifier this site does not accept. Please tell your administrator.".into()
            }
            LoginError::GroupOverage { contact } => format!(
                "The identity provider sent too many groups to list. Please ask {contact} to fix the group claim."
            ),
            LoginError::Store(_) => "The sign-in could not be saved. Please try again.".into(),
        }
    }

    /// A short label for the metrics: the check that failed.
    pub fn cause(&self) -> String {
        let debug = match self {
            LoginError::Saml(e) => format!("{e:?}"),
            other => format!("{other:?}"),
        };
        debug
            .split(|c: char| !c.is_ascii_alphanumeric())
            .next()
            .unwrap_or("")
            .to_string()
    }

    /// The IdP's answer was genuine, and a policy refused the user.
    pub fn is_refusal(&self) -> bool {
        self.status() == 403
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
    /// What the login changed in the directory; `None` when it changed nothing (re-post).
    pub changes: Option<Changes>,
}

/// One configured IdP and the service provider that talks to it.
pub struct IdpEntry {
    pub name: String,
    pub display_name: String,
    pub hosts: Vec<String>,
    /// Swapped whole when refreshed IdP metadata is put in use (`idp_metadata.rs`).
    sp: arc_swap::ArcSwap<ServiceProvider>,
}

impl IdpEntry {
    pub fn sp(&self) -> Arc<ServiceProvider> {
        self.sp.load_full()
    }
}

/// Which IdP a login goes to.
pub enum IdpChoice {
    Idp(usize),
    /// Several IdPs and nothing says which: show the discovery page.
    Ask,
}

pub struct Logins {
    /// In config order; the first is the default.
    idps: Vec<IdpEntry>,
    public_url: String,
    store: Store,
    sessions: Arc<Sessions>,
    pending: moka::sync::Cache<String, Arc<PendingLogin>>,
    attributes: AttributeMap,
    identity: IdentityPolicy,
    policy: crate::config::ProvisioningPolicy,
    metrics: Arc<Metrics>,
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
    /// `sps` in the order of `cfg.idps`.
    pub fn new(
        cfg: &Config,
        sps: Vec<ServiceProvider>,
        store: Store,
        sessions: Arc<Sessions>,
        metrics: Arc<Metrics>,
    ) -> Logins {
        let idps = cfg
            .idps
            .iter()
            .zip(sps)
            .map(|(c, sp)| IdpEntry {
                name: c.name.clone(),
                display_name: c.display_name.clone(),
                hosts: c.hosts.clone(),
                sp: arc_swap::ArcSwap::from_pointee(sp),
            })
            .collect();
        Logins {
            idps,
            store,
            sessions,
            pending: moka::sync::Cache::builder()
                // Anyone can start a login: bound the memory that costs (~200 bytes each).
                .max_capacity(MAX_PENDING_LOGINS)
                .time_to_live(cfg.sp.login_timeout)
                .build(),
            attributes: cfg.attributes.clone(),
            identity: cfg.identity.clone(),
            public_url: cfg.server.public_url.clone(),
            policy: cfg.provisioning.clone(),
            metrics,
        }
    }

    /// The default (first) IdP's service provider; what is the same for every IdP (our SP
    /// metadata) comes from here.
    pub fn sp(&self) -> Arc<ServiceProvider> {
        self.idps[0].sp()
    }

    pub fn idps(&self) -> &[IdpEntry] {
        &self.idps
    }

    pub fn idp_sp(&self, index: usize) -> Arc<ServiceProvider> {
        self.idps[index.min(self.idps.len() - 1)].sp()
    }

    /// The service provider for the IdP with this entity id.
    pub fn sp_for_entity(&self, entity_id: &str) -> Option<Arc<ServiceProvider>> {
        self.idps
            .iter()
            .map(IdpEntry::sp)
            .find(|sp| sp.idp_entity_id == entity_id)
    }

    /// The service provider a message claims to come from (by its unverified Issuer), else
    /// the default one, whose checks then refuse it by name.
    pub fn sp_for_issuer(&self, issuer: Option<String>) -> Arc<ServiceProvider> {
        if self.idps.len() == 1 {
            return self.sp();
        }
        issuer
            .and_then(|i| self.sp_for_entity(&i))
            .unwrap_or_else(|| self.sp())
    }

    /// Put a service provider built from refreshed IdP metadata in use. Logins already
    /// started keep their request ids, which do not depend on the metadata.
    pub fn replace_sp(&self, index: usize, sp: ServiceProvider) {
        if let Some(e) = self.idps.get(index) {
            e.sp.store(Arc::new(sp));
        }
    }

    /// The IdP for a login: the one asked for by name, else the one the host belongs to,
    /// else the only one; with several and no hint, the visitor is asked.
    pub fn choose(&self, requested: Option<&str>, host: Option<&str>) -> IdpChoice {
        if let Some(i) = requested.and_then(|n| self.idps.iter().position(|e| e.name == n)) {
            return IdpChoice::Idp(i);
        }
        if let Some(h) = host.map(str::to_ascii_lowercase) {
            if let Some(i) = self.idps.iter().position(|e| e.hosts.contains(&h)) {
                return IdpChoice::Idp(i);
            }
        }
        if self.idps.len() == 1 {
            IdpChoice::Idp(0)
        } else {
            IdpChoice::Ask
        }
    }

    /// Where an IdP-initiated login lands: the RelayState when it is a path here, or a URL
    /// under our public URL (Okta and Entra send either); anything else goes to `/`.
    fn idp_initiated_target(&self, relay_state: Option<&str>) -> String {
        let Some(rs) = relay_state else {
            return "/".into();
        };
        let path = match rs.strip_prefix(self.public_url.as_str()) {
            Some(rest) if rest.starts_with('/') => rest,
            Some("") => "/",
            _ => rs,
        };
        safe_return_path(path)
    }

    /// Begin a login that will come back to `return_to`.
    pub fn start(
        &self,
        idp: usize,
        return_to: &str,
        state_cookie: Option<&str>,
    ) -> Result<LoginStart, LoginError> {
        let idp = idp.min(self.idps.len() - 1);
        let (cookie, new_state_cookie) = match state_cookie.filter(|c| c.len() == 22) {
            Some(c) => (c.to_string(), None),
            None => {
                let c = random_token(16);
                (c.clone(), Some(c))
            }
        };
        // 16 random bytes, 22 characters: well under the 80 bytes RelayState allows.
        let relay_state = random_token(16);
        let redirect = self.idps[idp].sp.load().authn_redirect(&relay_state)?;
        self.pending.insert(
            relay_state,
            Arc::new(PendingLogin {
                idp,
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

    /// Finish a login from the ACS POST, counting the result.
    pub async fn finish(
        &self,
        saml_response: Option<&str>,
        relay_state: Option<&str>,
        state_cookie: Option<&str>,
        session_cookie: Option<&str>,
        now: i64,
    ) -> Result<LoginDone, LoginError> {
        let r = self
            .finish_inner(
                saml_response,
                relay_state,
                state_cookie,
                session_cookie,
                now,
            )
            .await;
        match &r {
            Ok(done) => {
                if let Some(c) = &done.changes {
                    self.metrics.login_ok(c);
                }
            }
            Err(e) => self.metrics.login_not_ok(e.is_refusal(), &e.cause()),
        }
        r
    }

    async fn finish_inner(
        &self,
        saml_response: Option<&str>,
        relay_state: Option<&str>,
        state_cookie: Option<&str>,
        session_cookie: Option<&str>,
        now: i64,
    ) -> Result<LoginDone, LoginError> {
        let saml_response = saml_response.ok_or(SamlError::MissingResponse)?;
        let relay_state = relay_state.filter(|r| !r.is_empty());
        let pending = relay_state.and_then(|r| self.pending.get(r));
        // An unsolicited answer is routed by the Issuer it claims; that IdP's keys then
        // decide whether the claim holds.
        let unsolicited_sp = || match self.idps.len() {
            1 => Some(self.idps[0].sp()),
            _ => crate::saml::peek_issuer(saml_response).and_then(|i| self.sp_for_entity(&i)),
        };
        let (verified, return_to) = match &pending {
            Some(p) => (
                self.idp_sp(p.idp)
                    .verify_response(saml_response, &p.request_id)?,
                p.return_to.clone(),
            ),
            // IdP-initiated, when allowed: the RelayState (if any) is the target, and it
            // passes the same open-redirect check as any return path.
            None => match unsolicited_sp().filter(|sp| sp.allows_idp_initiated()) {
                Some(sp) => (
                    sp.verify_unsolicited(saml_response)?,
                    self.idp_initiated_target(relay_state),
                ),
                None if relay_state.is_none() => return Err(LoginError::MissingRelayState),
                None => return Err(LoginError::UnknownRelayState),
            },
        };
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
                    return_to: return_to.clone(),
                    username: live.username.clone(),
                    changes: None,
                });
            }
            return Err(LoginError::Replay(verified.assertion_id));
        }
        if let Some(pending) = &pending {
            let browser_ok =
                state_cookie.is_some_and(|c| session::hash_token(c) == pending.browser);
            if !browser_ok {
                return Err(LoginError::OtherBrowser);
            }
            if pending.finished.swap(true, Ordering::SeqCst) {
                return Err(LoginError::AlreadyFinished);
            }
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
        let name_id = Some((verified.name_id.clone(), verified.name_id_format.clone()));
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
                            Refusal::GroupOverage => LoginError::GroupOverage { contact },
                        }))
                    }
                    Outcome::LoggedIn { user, changes } => {
                        let record =
                            sessions.record_for(&user, now, idp_end, session_index, name_id);
                        tx.put_session(&hash, &record)?;
                        Ok(Ok((user, record, changes)))
                    }
                }
            })
            .await;
        let (user, record, changes) = match result {
            Ok(Ok(done)) => done,
            Ok(Err(refused)) => return Err(refused),
            Err(e) => {
                // Nothing was committed: let the browser try the same answer again.
                if let Some(p) = &pending {
                    p.finished.store(false, Ordering::SeqCst);
                }
                return Err(e.into());
            }
        };
        self.sessions.prime(hash, &record, &user);
        log::info!(
            "login: user {} (id {}, {}) groups {:?}",
            user.username,
            user.id,
            if changes.created {
                "created"
            } else {
                "existing"
            },
            user.group_names()
        );
        Ok(LoginDone {
            session_token: Some(token),
            return_to,
            username: user.username,
            changes: Some(changes),
        })
    }

    /// Map SAML attributes to the user's fields, as the config lists them, and pick the
    /// user key per the identity policy.
    fn profile(&self, v: &VerifiedAssertion) -> Result<Profile, LoginError> {
        let map = &self.attributes;
        let missing = |field: &'static str, rule: &FieldRule| LoginError::MissingAttribute {
            field,
            candidates: rule.names.clone(),
            received: v.attributes.iter().map(|a| a.name.clone()).collect(),
        };
        let value = |field: &'static str, rule: &FieldRule| -> Result<Option<String>, LoginError> {
            match first_value(&v.attributes, rule) {
                None if rule.required => Err(missing(field, rule)),
                found => Ok(found),
            }
        };

        let format = match v.name_id_format.as_deref() {
            // The SAML 2.0 spelling some IdPs (and samael's own builder) use by mistake.
            None | Some("urn:oasis:names:tc:SAML:2.0:nameid-format:unspecified") => {
                NAMEID_UNSPECIFIED
            }
            Some(f) => f,
        };
        if !self.identity.name_id_formats.iter().any(|f| f == format) {
            return Err(LoginError::NameIdFormat {
                format: format.to_string(),
                accepted: self.identity.name_id_formats.clone(),
            });
        }
        let (key, email_like) = match &self.identity.key_attribute {
            None => {
                // Case folding only for identifiers that are addresses: an opaque persistent
                // id (or a Kerberos principal) may differ in case only, and then it is
                // another person.
                let email_like = format == NAMEID_EMAIL
                    || (format == NAMEID_UNSPECIFIED && looks_like_email(&v.name_id));
                (v.name_id.clone(), email_like)
            }
            Some(attr) => {
                let rule = FieldRule {
                    names: vec![attr.clone()],
                    friendly_name: false,
                    required: true,
                    update: crate::config::UpdateRule::Always,
                };
                let key = value("user key (identity.key_attribute)", &rule)?
                    .ok_or_else(|| missing("user key (identity.key_attribute)", &rule))?;
                let email_like = looks_like_email(&key);
                (key, email_like)
            }
        };
        // ASCII folding only: Unicode case rules would make the Kelvin sign K a `k`, and
        // so one person's address another's.
        let subject = if email_like {
            key.to_ascii_lowercase()
        } else {
            key.clone()
        };
        let subject_as_sent = (subject != key).then_some(key);
        let username = if map.username.names.is_empty() {
            subject.clone()
        } else {
            value("username", &map.username)?.ok_or_else(|| missing("username", &map.username))?
        };

        let group_attrs = find(&v.attributes, &map.groups);
        let groups_overage =
            group_attrs.is_none() && v.attributes.iter().any(|a| a.name == GROUPS_OVERAGE_CLAIM);
        if group_attrs.is_none() && !groups_overage && map.groups.required {
            return Err(missing("groups", &map.groups));
        }
        let groups = group_attrs.map(|a| {
            let mut g: Vec<String> = a.iter().flat_map(|a| a.values.iter().cloned()).collect();
            g.sort();
            g.dedup();
            g
        });
        let mut extra = std::collections::BTreeMap::new();
        for x in &map.extra {
            if let Some(val) = value("an extra attribute", &x.rule)? {
                extra.insert(x.key.clone(), val);
            }
        }
        Ok(Profile {
            idp: v.idp_entity_id.clone(),
            subject,
            subject_as_sent,
            username,
            display_name: value("display name", &map.display_name)?,
            given_name: value("given name", &map.given_name)?,
            family_name: value("family name", &map.family_name)?,
            email: value("e-mail", &map.email)?,
            groups,
            groups_overage,
            extra,
        })
    }
}

/// Entra ID sends this instead of the groups when a user has more than 150.
pub const GROUPS_OVERAGE_CLAIM: &str = "http://schemas.microsoft.com/claims/groups.link";

/// `local@domain.tld`, no spaces: the shape of an e-mail address.
fn looks_like_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !s.chars().any(char::is_whitespace)
}

/// Attributes matching the first candidate name that is present (by Name, and by
/// FriendlyName when the rule allows it).
fn find<'a>(attrs: &'a [SamlAttribute], rule: &FieldRule) -> Option<Vec<&'a SamlAttribute>> {
    for c in &rule.names {
        let hits: Vec<_> = attrs
            .iter()
            .filter(|a| &a.name == c || (rule.friendly_name && a.friendly_name.as_ref() == Some(c)))
            .collect();
        if !hits.is_empty() {
            return Some(hits);
        }
    }
    if !rule.friendly_name {
        if let Some(a) = attrs.iter().find(|a| {
            a.friendly_name
                .as_ref()
                .is_some_and(|f| rule.names.contains(f))
        }) {
            log::warn!(
                "attribute {:?} has FriendlyName {:?}, which the config lists, but matching on FriendlyName is off for this field: add {:?} to its names, or set friendly_name = true",
                a.name,
                a.friendly_name,
                a.name
            );
        }
    }
    None
}

fn first_value(attrs: &[SamlAttribute], rule: &FieldRule) -> Option<String> {
    find(attrs, rule)?
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
