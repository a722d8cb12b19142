//! Configuration: the only place the config file is read.
//!
//! `Config::load` parses the TOML once at start, validates every key and compiles it into the
//! types the rest of the gateway uses, so nothing is parsed or defaulted on the request path.
//! Every error names the file, the key and what is wrong with it.

mod raw;
mod routes;

pub use routes::{
    check_public_path, Access, AppRoute, Cidr, Encoding, HeaderContract, JwtRule, Overflow,
};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use raw::{RawConfig, RawIdp};

/// A config problem, phrased for the operator who has to fix the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {error}")]
    Read {
        file: PathBuf,
        error: std::io::Error,
    },
    #[error("{file}: {message}")]
    Syntax { file: PathBuf, message: String },
    #[error("{file}: key `{key}`: {message}")]
    Invalid {
        file: PathBuf,
        key: String,
        message: String,
    },
}

/// Signature algorithms a response may use, as XML-DSig URIs.
pub const RSA_SHA1: &str = "http://www.w3.org/2000/09/xmldsig#rsa-sha1";
pub const SHA1_DIGEST: &str = "http://www.w3.org/2000/09/xmldsig#sha1";

#[derive(Debug, Clone)]
pub struct Config {
    /// The file this came from, for messages.
    pub file: PathBuf,
    pub server: ServerConfig,
    /// In match order (see `routes::order`); `[upstream]`, when given, is the last, catch-all one.
    pub routes: Vec<AppRoute>,
    pub store_path: PathBuf,
    pub session: SessionConfig,
    pub sp: SpConfig,
    /// At least one; the first is the default.
    pub idps: Vec<IdpConfig>,
    pub attributes: AttributeMap,
    pub provisioning: ProvisioningPolicy,
    /// Every identity header name of every route, normalised (lowercase, `_` as `-`): removed
    /// from every client request on every route.
    pub strip_headers: Vec<String>,
    pub identity: IdentityPolicy,
    pub admin: AdminConfig,
    pub jwt: JwtConfig,
    /// text | json | logfmt
    pub log_format: crate::logging::LogFormat,
}

#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// ES256 (P-256) private key, PEM; created (mode 0600) when missing and a route needs it.
    pub key_file: PathBuf,
    pub issuer: String,
    /// Whether any route sends a JWT (only then is a key loaded or made).
    pub used: bool,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Scheme, host and port as browsers see them, without a trailing slash. Every SAML URL
    /// and every redirect is built from this, never from request headers (case S23).
    pub public_url: String,
    pub https: bool,
    pub tls: Option<TlsFiles>,
    pub threads: usize,
    pub grace_period_seconds: u64,
    /// Reserved prefix for the gateway's own endpoints, e.g. `/_saml`.
    pub sp_path_prefix: String,
    /// Peers whose X-Forwarded-For/-Proto/-Host are believed; from anyone else they are
    /// replaced.
    pub trusted_proxies: Vec<Cidr>,
    /// Offer HTTP/2 to TLS clients (ALPN).
    pub http2: bool,
    /// The Strict-Transport-Security value to send, when switched on (https only).
    pub hsts: Option<String>,
    /// A plain-http listener that redirects everything to `public_url`.
    pub http_redirect_listen: Option<SocketAddr>,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// `host:port` to connect to.
    pub address: String,
    pub tls: bool,
    /// Host name for SNI and certificate checks when `tls` is set.
    pub host: String,
}

#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub cookie_name: String,
    /// Cookie that binds a pending login to the browser that started it.
    pub state_cookie_name: String,
    pub idle_timeout: Duration,
    pub absolute_timeout: Duration,
    pub max_cached: u64,
}

#[derive(Debug, Clone)]
pub struct SpConfig {
    pub entity_id: String,
    pub acs_url: String,
    pub metadata_url: String,
    pub login_url: String,
    /// How long an AuthnRequest stays answerable.
    pub login_timeout: Duration,
    /// Keys for encrypted assertions; the first one's certificate is advertised first, all
    /// are tried (rollover).
    pub encryption: Vec<KeyPairFiles>,
    pub require_encrypted_assertions: bool,
    /// Our signing key: signs AuthnRequests (when asked to), LogoutRequests and
    /// LogoutResponses (HTTP-Redirect binding signatures).
    pub signing: Option<KeyPairFiles>,
    pub sign_authn_requests: bool,
    /// Sign the SP metadata document itself.
    pub sign_metadata: bool,
    pub force_authn: bool,
    /// AuthnContextClassRef values to request; empty = none requested.
    pub authn_context: Vec<String>,
    /// exact | minimum | maximum | better
    pub authn_context_comparison: String,
    /// Local logout also logs out at the IdP (when its metadata has a SingleLogoutService).
    pub single_logout: bool,
    pub slo_url: String,
}

/// A private key and its certificate, both PEM files.
#[derive(Debug, Clone)]
pub struct KeyPairFiles {
    pub key: PathBuf,
    pub cert: PathBuf,
}

#[derive(Debug, Clone)]
pub struct IdpConfig {
    /// Where it is in the file (`idp` or `idps[N]`), for messages.
    pub at: String,
    /// Short name, in URLs (`/_saml/login?idp=`) and logs; "default" for a lone `[idp]`.
    pub name: String,
    /// Shown on the discovery page.
    pub display_name: String,
    /// Host names (lower case, with port if not the default) whose visitors go to this IdP
    /// without being asked.
    pub hosts: Vec<String>,
    pub metadata_file: PathBuf,
    /// Allowed SignatureMethod and DigestMethod URIs.
    pub allowed_algorithms: Vec<String>,
    pub allow_sha1: bool,
    pub clock_skew: Duration,
    pub max_issue_delay: Duration,
    /// Which element a valid signature must cover. Never "none".
    pub require_signed: SignedElement,
    /// Accept IdP-initiated (unsolicited) responses.
    pub allow_idp_initiated: bool,
    /// Fetch the metadata from here (https), keeping the last good copy in `metadata_file`.
    pub metadata_url: Option<String>,
    pub metadata_refresh: Duration,
    /// Extra trust anchors (PEM) for the metadata fetch, besides the system's.
    pub metadata_ca_file: Option<PathBuf>,
    /// Signing certificates given in the config (base64 DER), added to the metadata's.
    pub certificates: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignedElement {
    /// The Response or the Assertion (each covers the assertion we read).
    Either,
    Assertion,
    Response,
    Both,
}

/// How a stored field follows the IdP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateRule {
    /// The IdP is authoritative: every login overwrites the stored value.
    Always,
    /// Set when the user is created (or while still empty); an admin owns it afterwards.
    Once,
}

/// Where one user field comes from: candidate attribute Names, first present wins.
#[derive(Debug, Clone)]
pub struct FieldRule {
    pub names: Vec<String>,
    /// Also match on FriendlyName. Off by default: FriendlyName is a display hint that no
    /// IdP is bound to keep stable, and two attributes may share one.
    pub friendly_name: bool,
    pub required: bool,
    pub update: UpdateRule,
}

/// An attribute forwarded to the application as a header of its own.
#[derive(Debug, Clone)]
pub struct ExtraAttribute {
    /// The name in the config (`[attributes.extra.<key>]`), also the key in the store.
    pub key: String,
    pub header: String,
    pub rule: FieldRule,
}

#[derive(Debug, Clone)]
pub struct AttributeMap {
    /// No names: the user key (NameID, or `identity.key_attribute`) is the username.
    pub username: FieldRule,
    pub email: FieldRule,
    pub display_name: FieldRule,
    pub given_name: FieldRule,
    pub family_name: FieldRule,
    pub groups: FieldRule,
    pub extra: Vec<ExtraAttribute>,
}

/// Which identifier is the user's immutable key.
#[derive(Debug, Clone)]
pub struct IdentityPolicy {
    /// NameID Format URIs accepted; a NameID without Format counts as `unspecified`.
    pub name_id_formats: Vec<String>,
    /// Use this attribute's value as the key instead of the NameID.
    pub key_attribute: Option<String>,
}

pub const NAMEID_PERSISTENT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent";
pub const NAMEID_EMAIL: &str = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress";
pub const NAMEID_UNSPECIFIED: &str = "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified";
pub const NAMEID_TRANSIENT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient";

fn name_id_format_uri(short: &str) -> Option<&'static str> {
    Some(match short {
        "persistent" => NAMEID_PERSISTENT,
        "emailAddress" | "email" => NAMEID_EMAIL,
        "unspecified" => NAMEID_UNSPECIFIED,
        "transient" => NAMEID_TRANSIENT,
        "windowsDomainQualifiedName" => {
            "urn:oasis:names:tc:SAML:1.1:nameid-format:WindowsDomainQualifiedName"
        }
        "kerberos" => "urn:oasis:names:tc:SAML:2.0:nameid-format:kerberos",
        "X509SubjectName" => "urn:oasis:names:tc:SAML:1.1:nameid-format:X509SubjectName",
        _ => return None,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupSync {
    /// The claim replaces the user's `idp` memberships.
    Full,
    /// The claim adds `idp` memberships and never removes one.
    AddOnly,
    Off,
}

/// A set of group names: exact names and full-match regexes.
#[derive(Debug, Clone, Default)]
pub struct GroupFilter {
    pub exact: Vec<String>,
    pub patterns: Vec<regex::Regex>,
}

impl GroupFilter {
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.patterns.is_empty()
    }

    pub fn matches(&self, group: &str) -> bool {
        self.exact.iter().any(|g| g == group) || self.patterns.iter().any(|r| r.is_match(group))
    }
}

#[derive(Debug, Clone)]
pub struct GroupPolicy {
    pub sync: GroupSync,
    /// IdP value (object id, DN, ...) -> local group name.
    pub map: std::collections::HashMap<String, String>,
    /// Keep values without a mapping (true) or drop them.
    pub keep_unmapped: bool,
    /// Empty: every group passes.
    pub include: GroupFilter,
    pub exclude: GroupFilter,
    /// IdP groups that stay pending until an admin approves the membership.
    pub require_approval: Vec<String>,
    /// Entra's overage claim (too many groups to list): refuse the login instead of keeping
    /// the stored IdP memberships.
    pub refuse_on_overage: bool,
}

impl GroupPolicy {
    /// The local name for an IdP group value, or `None` when it is filtered out.
    pub fn local_name(&self, value: &str) -> Option<String> {
        // Kept exactly as sent (spaces included): the header encoding is reversible.
        if value.trim().is_empty() {
            return None;
        }
        let name = match self.map.get(value) {
            Some(mapped) => mapped.clone(),
            None if self.keep_unmapped => value.to_string(),
            None => return None,
        };
        if !self.include.is_empty() && !self.include.matches(&name) {
            return None;
        }
        if self.exclude.matches(&name) {
            return None;
        }
        Some(name)
    }
}

#[derive(Debug, Clone)]
pub struct ProvisioningPolicy {
    pub reactivate_inactive: bool,
    pub default_groups: Vec<String>,
    /// Whom a refused user should ask; shown on the 403 page.
    pub contact: String,
    pub groups: GroupPolicy,
    /// Fields (`email`, `display_name`, `given_name`, `family_name`, `username`, and extra
    /// attribute keys) that are set once and not overwritten by later logins.
    pub set_once: Vec<String>,
}

impl ProvisioningPolicy {
    pub fn updates_always(&self, field: &str) -> bool {
        !self.set_once.iter().any(|f| f == field)
    }
}

/// The admin, health and metrics listener.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    /// Holds the bearer token; created (mode 0600) with a random token when missing.
    /// Default: `admin.token` next to the store.
    pub token_file: PathBuf,
}

/// Lowercase, and every other character than a letter or digit as `-`: the form in which two
/// spellings of one header compare equal. CGI, PHP and some WSGI stacks read `X_Auth_User`
/// as `X-Auth-User`; lighttpd's CGI turns `.` and `~` into `_` as well.
pub fn normalise_header_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

const DEFAULT_ALGORITHMS: &[&str] = &[
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384",
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512",
    "http://www.w3.org/2001/04/xmlenc#sha256",
    "http://www.w3.org/2001/04/xmldsig-more#sha384",
    "http://www.w3.org/2001/04/xmlenc#sha512",
];

/// Short names accepted in `idp.allowed_signature_algorithms`.
fn algorithm_uris(short: &str) -> Option<&'static [&'static str]> {
    Some(match short {
        "rsa-sha256" => &["http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"],
        "rsa-sha384" => &["http://www.w3.org/2001/04/xmldsig-more#rsa-sha384"],
        "rsa-sha512" => &["http://www.w3.org/2001/04/xmldsig-more#rsa-sha512"],
        "ecdsa-sha256" => &["http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"],
        "ecdsa-sha384" => &["http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384"],
        "ecdsa-sha512" => &["http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512"],
        "sha256" => &["http://www.w3.org/2001/04/xmlenc#sha256"],
        "sha384" => &["http://www.w3.org/2001/04/xmldsig-more#sha384"],
        "sha512" => &["http://www.w3.org/2001/04/xmlenc#sha512"],
        _ => return None,
    })
}

impl Config {
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|error| ConfigError::Read {
            file: file.to_path_buf(),
            error,
        })?;
        Self::parse(file, &text)
    }

    /// Parse config text; `file` names it in messages and anchors relative paths.
    pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            file: file.to_path_buf(),
            message: e.to_string().trim_end().replace('\n', "\n  "),
        })?;
        Self::from_raw(file, raw)
    }

    fn from_raw(file: &Path, raw: RawConfig) -> Result<Config, ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            file: file.to_path_buf(),
            key: key.to_string(),
            message,
        };
        let base = file.parent().unwrap_or(Path::new("."));
        let resolve = |p: &str| -> PathBuf {
            let p = Path::new(p);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };

        // [server]
        let listen_text = raw.server.listen.unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            invalid(
                "server.listen",
                format!("`{listen_text}` is not an address:port like 127.0.0.1:8080"),
            )
        })?;
        let public_url = raw.server.public_url.ok_or_else(|| {
            invalid(
                "server.public_url",
                "is required: the URL users type, like https://app.example.com".into(),
            )
        })?;
        let public_url = public_url.trim_end_matches('/').to_string();
        let https = if public_url.starts_with("https://") {
            true
        } else if public_url.starts_with("http://") {
            false
        } else {
            return Err(invalid(
                "server.public_url",
                format!("`{public_url}` must start with https:// or http://"),
            ));
        };
        let after_scheme = public_url.split_once("://").map(|x| x.1).unwrap_or("");
        let host_ok = after_scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
        if after_scheme.is_empty() || !host_ok {
            return Err(invalid(
                "server.public_url",
                format!("`{public_url}` must be scheme://host[:port] with no path"),
            ));
        }
        let tls = match (raw.server.tls_cert, raw.server.tls_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                let files = TlsFiles {
                    cert: resolve(&cert),
                    key: resolve(&key),
                };
                check_tls_files(&files).map_err(|m| invalid("server.tls_cert", m))?;
                Some(files)
            }
            (Some(_), None) => {
                return Err(invalid(
                    "server.tls_key",
                    "is required when server.tls_cert is set".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "server.tls_cert",
                    "is required when server.tls_key is set".into(),
                ))
            }
        };
        let threads = raw.server.threads.unwrap_or(2);
        if threads == 0 || threads > 256 {
            return Err(invalid(
                "server.threads",
                format!("{threads} is not between 1 and 256"),
            ));
        }
        let prefix = raw.server.sp_path_prefix.unwrap_or_else(|| "/_saml".into());
        let prefix = prefix.trim_end_matches('/').to_string();
        if !prefix.starts_with('/')
            || prefix.len() < 2
            || !prefix[1..]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        {
            return Err(invalid(
                "server.sp_path_prefix",
                format!("`{prefix}` must be a path like /_saml (letters, digits, - _ . /)"),
            ));
        }
        for p in &raw.server.public_paths {
            check_public_path(p, &prefix).map_err(|m| invalid("server.public_paths", m))?;
        }
        let mut trusted_proxies = Vec::new();
        for t in &raw.server.trusted_proxies {
            trusted_proxies.push(Cidr::parse(t).map_err(|m| invalid("server.trusted_proxies", m))?);
        }
        let http2 = raw.server.http2.unwrap_or(true);
        let hsts = match raw.server.hsts_seconds {
            None | Some(0) => None,
            Some(_) if !https => {
                return Err(invalid(
                    "server.hsts_seconds",
                    "browsers ignore HSTS over http; it needs an https public_url".into(),
                ))
            }
            Some(n) => Some(format!(
                "max-age={n}{}",
                if raw.server.hsts_include_subdomains == Some(true) {
                    "; includeSubDomains"
                } else {
                    ""
                }
            )),
        };
        let http_redirect_listen = match &raw.server.http_redirect_listen {
            None => None,
            Some(_) if !https => {
                return Err(invalid(
                    "server.http_redirect_listen",
                    "redirects to https, so public_url must be https".into(),
                ))
            }
            Some(a) => Some(a.parse::<SocketAddr>().map_err(|_| {
                invalid(
                    "server.http_redirect_listen",
                    format!("`{a}` is not an address:port like 0.0.0.0:80"),
                )
            })?),
        };

        // [store]
        let store_path = resolve(raw.store.path.as_deref().unwrap_or("samlgate.redb"));

        // [session]
        let cookie_name = raw
            .session
            .cookie_name
            .unwrap_or_else(|| "samlgate_session".into());
        if cookie_name.is_empty()
            || !cookie_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(invalid(
                "session.cookie_name",
                format!("`{cookie_name}` must be letters, digits, _ or -"),
            ));
        }
        let idle = raw.session.idle_timeout_seconds.unwrap_or(3600);
        let absolute = raw.session.absolute_timeout_seconds.unwrap_or(8 * 3600);
        if idle < 60 {
            return Err(invalid(
                "session.idle_timeout_seconds",
                format!("{idle} is below the minimum of 60"),
            ));
        }
        if absolute < idle {
            return Err(invalid(
                "session.absolute_timeout_seconds",
                format!("{absolute} is shorter than session.idle_timeout_seconds ({idle})"),
            ));
        }
        // Over https the cookies carry the browser-enforced prefixes: `__Host-` cannot be set by
        // a sibling subdomain or over plain http (no session fixation by cookie tossing), and
        // `__Secure-` (the state cookie has a narrower Path, which `__Host-` forbids) at least
        // needs a secure origin.
        let (cookie_name, state_cookie_name) = if https {
            (
                format!("__Host-{cookie_name}"),
                format!("__Secure-{cookie_name}_state"),
            )
        } else {
            (cookie_name.clone(), format!("{cookie_name}_state"))
        };
        let session = SessionConfig {
            state_cookie_name,
            cookie_name,
            idle_timeout: Duration::from_secs(idle),
            absolute_timeout: Duration::from_secs(absolute),
            max_cached: match raw.session.max_cached.unwrap_or(1_000_000) {
                0 => return Err(invalid("session.max_cached", "must be at least 1".into())),
                n => n,
            },
        };

        // [sp]
        let sp_base = format!("{public_url}{prefix}");
        let login_timeout = raw.sp.login_timeout_seconds.unwrap_or(600);
        if !(30..=3600).contains(&login_timeout) {
            return Err(invalid(
                "sp.login_timeout_seconds",
                format!("{login_timeout} is not between 30 and 3600"),
            ));
        }
        let sp = SpConfig {
            entity_id: raw
                .sp
                .entity_id
                .unwrap_or_else(|| format!("{sp_base}/metadata")),
            acs_url: format!("{sp_base}/acs"),
            metadata_url: format!("{sp_base}/metadata"),
            login_url: format!("{sp_base}/login"),
            login_timeout: Duration::from_secs(login_timeout),
            encryption: raw
                .sp
                .encryption
                .unwrap_or_default()
                .iter()
                .map(|p| KeyPairFiles {
                    key: resolve(&p.key),
                    cert: resolve(&p.cert),
                })
                .collect(),
            require_encrypted_assertions: raw.sp.require_encrypted_assertions.unwrap_or(false),
            signing: match (&raw.sp.signing_key, &raw.sp.signing_cert) {
                (Some(key), Some(cert)) => Some(KeyPairFiles {
                    key: resolve(key),
                    cert: resolve(cert),
                }),
                (None, None) => None,
                (Some(_), None) => {
                    return Err(invalid(
                        "sp.signing_cert",
                        "is required when sp.signing_key is set".into(),
                    ))
                }
                (None, Some(_)) => {
                    return Err(invalid(
                        "sp.signing_key",
                        "is required when sp.signing_cert is set".into(),
                    ))
                }
            },
            sign_authn_requests: raw.sp.sign_authn_requests.unwrap_or(false),
            sign_metadata: raw.sp.sign_metadata.unwrap_or(false),
            force_authn: raw.sp.force_authn.unwrap_or(false),
            authn_context: raw.sp.authn_context.clone().unwrap_or_default(),
            authn_context_comparison: match raw.sp.authn_context_comparison.as_deref() {
                None => "exact".into(),
                Some(c @ ("exact" | "minimum" | "maximum" | "better")) => c.into(),
                Some(other) => {
                    return Err(invalid(
                        "sp.authn_context_comparison",
                        format!("`{other}` is not one of exact, minimum, maximum, better"),
                    ))
                }
            },
            single_logout: raw.sp.single_logout.unwrap_or(true),
            slo_url: format!("{sp_base}/slo"),
        };
        for (set, key) in [
            (sp.sign_authn_requests, "sp.sign_authn_requests"),
            (sp.sign_metadata, "sp.sign_metadata"),
        ] {
            if set && sp.signing.is_none() {
                return Err(invalid(
                    key,
                    "is true, but sp.signing_key / sp.signing_cert are not set".into(),
                ));
            }
        }
        if sp.require_encrypted_assertions && sp.encryption.is_empty() {
            return Err(invalid(
                "sp.require_encrypted_assertions",
                "is true, but no [[sp.encryption]] key is configured to decrypt with".into(),
            ));
        }

        // [idp], or [[idps]] for several
        let idps = match (raw.idp, raw.idps) {
            (Some(one), None) => vec![parse_idp(one, "idp", file, &resolve)?],
            (None, Some(many)) if !many.is_empty() => {
                let mut out: Vec<IdpConfig> = Vec::new();
                for (i, r) in many.into_iter().enumerate() {
                    let at = format!("idps[{}]", i + 1);
                    let idp = parse_idp(r, &at, file, &resolve)?;
                    if out.iter().any(|o| o.name == idp.name) {
                        return Err(invalid(
                            &format!("{at}.name"),
                            format!("`{}` names two IdPs", idp.name),
                        ));
                    }
                    if let Some(h) = idp
                        .hosts
                        .iter()
                        .find(|h| out.iter().any(|o| o.hosts.contains(h)))
                    {
                        return Err(invalid(
                            &format!("{at}.hosts"),
                            format!("host `{h}` is given to two IdPs"),
                        ));
                    }
                    if out.iter().any(|o| o.metadata_file == idp.metadata_file) {
                        return Err(invalid(
                            &format!("{at}.metadata_file"),
                            "is the file of another IdP".into(),
                        ));
                    }
                    out.push(idp);
                }
                out
            }
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "idps",
                    "use either [idp] (one IdP) or [[idps]] (several), not both".into(),
                ))
            }
            (None, _) => {
                return Err(invalid(
                    "idp",
                    "is required: an [idp] section (or [[idps]] for several IdPs)".into(),
                ))
            }
        };

        // [attributes]
        let a = raw.attributes;
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let username = field_rule(a.username, &[], "attributes.username")
            .map_err(|m| invalid("attributes.username", m))?;
        let email = field_rule(
            a.email,
            &names(&[
                "mail",
                "email",
                "urn:oid:0.9.2342.19200300.100.1.3",
                "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
            ]),
            "attributes.email",
        )
        .map_err(|m| invalid("attributes.email", m))?;
        let display_name = field_rule(
            a.display_name,
            &names(&[
                "displayName",
                "urn:oid:2.16.840.1.113730.3.1.241",
                "http://schemas.microsoft.com/identity/claims/displayname",
            ]),
            "attributes.display_name",
        )
        .map_err(|m| invalid("attributes.display_name", m))?;
        let given_name = field_rule(
            a.given_name,
            &names(&[
                "givenName",
                "urn:oid:2.5.4.42",
                "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/givenname",
            ]),
            "attributes.given_name",
        )
        .map_err(|m| invalid("attributes.given_name", m))?;
        let family_name = field_rule(
            a.family_name,
            &names(&[
                "sn",
                "surname",
                "urn:oid:2.5.4.4",
                "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/surname",
            ]),
            "attributes.family_name",
        )
        .map_err(|m| invalid("attributes.family_name", m))?;
        let groups_rule = field_rule(
            a.groups,
            &names(&[
                "groups",
                "memberOf",
                "urn:oid:1.3.6.1.4.1.5923.1.5.1.1",
                "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups",
                "http://schemas.xmlsoap.org/claims/Group",
            ]),
            "attributes.groups",
        )
        .map_err(|m| invalid("attributes.groups", m))?;
        if groups_rule.update == UpdateRule::Once {
            return Err(invalid(
                "attributes.groups",
                "`update = \"once\"` does not apply to groups; use groups.sync".into(),
            ));
        }
        let mut extra = Vec::new();
        for (key, x) in a.extra {
            if key.is_empty()
                || !key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                || [
                    "username",
                    "email",
                    "display_name",
                    "given_name",
                    "family_name",
                    "groups",
                ]
                .contains(&key.as_str())
            {
                return Err(invalid(
                    "attributes.extra",
                    format!(
                        "`{key}` must be letters, digits, _ or - and not a built-in field name"
                    ),
                ));
            }
            let Some(header) = x
                .header
                .filter(|h| http::HeaderName::from_bytes(h.as_bytes()).is_ok())
            else {
                return Err(invalid(
                    "attributes.extra",
                    format!("`{key}`: `header` is required and must be a valid header name"),
                ));
            };
            let rule = field_rule(
                Some(raw::RawField::Full(raw::RawFieldTable {
                    names: x.names,
                    friendly_name: x.friendly_name,
                    required: x.required,
                    update: x.update,
                })),
                &[],
                "attributes.extra",
            )
            .map_err(|m| invalid("attributes.extra", format!("`{key}`: {m}")))?;
            if rule.names.is_empty() {
                return Err(invalid(
                    "attributes.extra",
                    format!("`{key}`: `names` must list at least one attribute name"),
                ));
            }
            extra.push(ExtraAttribute { key, header, rule });
        }
        let mut set_once = Vec::new();
        for (field, rule) in [
            ("username", &username),
            ("email", &email),
            ("display_name", &display_name),
            ("given_name", &given_name),
            ("family_name", &family_name),
        ] {
            if rule.update == UpdateRule::Once {
                set_once.push(field.to_string());
            }
        }
        set_once.extend(
            extra
                .iter()
                .filter(|x| x.rule.update == UpdateRule::Once)
                .map(|x| x.key.clone()),
        );
        let attributes = AttributeMap {
            username,
            email,
            display_name,
            given_name,
            family_name,
            groups: groups_rule,
            extra,
        };

        // [identity]
        let mut name_id_formats = Vec::new();
        for f in raw
            .identity
            .name_id_formats
            .unwrap_or_else(|| names(&["persistent", "emailAddress", "unspecified"]))
        {
            let uri = if f.starts_with("urn:") {
                f.clone()
            } else {
                name_id_format_uri(&f)
                    .ok_or_else(|| {
                        invalid(
                            "identity.name_id_formats",
                            format!("unknown format `{f}` (known: persistent, emailAddress, unspecified, transient, windowsDomainQualifiedName, kerberos, X509SubjectName, or a full urn:)"),
                        )
                    })?
                    .to_string()
            };
            name_id_formats.push(uri);
        }
        if name_id_formats.is_empty() {
            return Err(invalid(
                "identity.name_id_formats",
                "must list at least one format".into(),
            ));
        }
        let key_attribute = raw.identity.key_attribute.filter(|k| !k.trim().is_empty());
        if key_attribute.is_none() && name_id_formats.iter().any(|f| f == NAMEID_TRANSIENT) {
            return Err(invalid(
                "identity.name_id_formats",
                "`transient` changes at every login and would create a new user each time; accept it only together with identity.key_attribute".into(),
            ));
        }
        let identity = IdentityPolicy {
            name_id_formats,
            key_attribute,
        };

        // [provisioning] and [groups]
        let p = raw.provisioning;
        let default_groups = p.default_groups.unwrap_or_default();
        if let Some(g) = default_groups.iter().find(|g| g.trim().is_empty()) {
            return Err(invalid(
                "provisioning.default_groups",
                format!("`{g}` is an empty group name"),
            ));
        }
        let g = raw.groups;
        let sync = match g.sync.as_deref().unwrap_or("full") {
            "full" => GroupSync::Full,
            "add_only" => GroupSync::AddOnly,
            "off" => GroupSync::Off,
            other => {
                return Err(invalid(
                    "groups.sync",
                    format!("`{other}` is not one of full, add_only, off"),
                ))
            }
        };
        let keep_unmapped = match g.unmapped.as_deref().unwrap_or("keep") {
            "keep" => true,
            "drop" => false,
            other => {
                return Err(invalid(
                    "groups.unmapped",
                    format!("`{other}` is not one of keep, drop"),
                ))
            }
        };
        if let Some((k, _)) = g
            .map
            .iter()
            .find(|(k, v)| k.trim().is_empty() || v.trim().is_empty())
        {
            return Err(invalid(
                "groups.map",
                format!("`{k}`: neither the IdP value nor the local name may be empty"),
            ));
        }
        let refuse_on_overage = match g.overage.as_deref().unwrap_or("keep") {
            "keep" => false,
            "refuse" => true,
            other => {
                return Err(invalid(
                    "groups.overage",
                    format!("`{other}` is not one of keep, refuse"),
                ))
            }
        };
        let group_policy = GroupPolicy {
            sync,
            map: g.map.into_iter().collect(),
            keep_unmapped,
            include: group_filter(&g.include).map_err(|m| invalid("groups.include", m))?,
            exclude: group_filter(&g.exclude).map_err(|m| invalid("groups.exclude", m))?,
            require_approval: g.require_approval,
            // Where groups are required, an incomplete list is no list.
            refuse_on_overage: refuse_on_overage || attributes.groups.required,
        };
        let provisioning = ProvisioningPolicy {
            reactivate_inactive: p.reactivate_inactive.unwrap_or(true),
            default_groups,
            contact: p.contact.unwrap_or_else(|| "your administrator".into()),
            groups: group_policy,
            set_once,
        };

        // [admin]
        let ad = raw.admin;
        let admin_listen_text = ad.listen.unwrap_or_else(|| "127.0.0.1:9180".into());
        let admin_listen: SocketAddr = admin_listen_text.parse().map_err(|_| {
            invalid(
                "admin.listen",
                format!("`{admin_listen_text}` is not an address:port like 127.0.0.1:9180"),
            )
        })?;
        if !admin_listen.ip().is_loopback() {
            if ad.allow_remote != Some(true) {
                return Err(invalid(
                    "admin.listen",
                    format!("`{admin_listen}` is not a loopback address; the admin API manages every user, so listening beyond this host needs admin.allow_remote = true (and a firewall)"),
                ));
            }
            log::warn!(
                "{}: admin.allow_remote = true: the admin API listens on {admin_listen}",
                file.display()
            );
        }
        let admin = AdminConfig {
            enabled: ad.enabled.unwrap_or(true),
            listen: admin_listen,
            // Next to the store by default: the state directory is writable under systemd,
            // /etc is not.
            token_file: match ad.token_file.as_deref() {
                Some(p) => resolve(p),
                None => store_path
                    .parent()
                    .unwrap_or(Path::new("."))
                    .join("admin.token"),
            },
        };

        // [headers] and [[routes]]
        let extra_headers: Vec<(String, String)> = attributes
            .extra
            .iter()
            .map(|x| (x.key.clone(), x.header.clone()))
            .collect();
        let global_headers = raw.headers;
        let default_contract =
            routes::contract(&global_headers, "headers", "default", &extra_headers)
                .map_err(|(k, m)| invalid(&k, m))?;
        for x in &attributes.extra {
            let n = normalise_header_name(&x.header);
            if http::HeaderName::from_bytes(x.header.as_bytes()).is_err() {
                return Err(invalid(
                    "attributes.extra",
                    format!("`{}`: `{}` is not a valid header name", x.key, x.header),
                ));
            }
            if default_contract
                .names()
                .filter(|h| normalise_header_name(h) == n)
                .count()
                > 1
                || routes::reserved(&n)
            {
                return Err(invalid(
                    "attributes.extra",
                    format!("`{}`: header `{}` is a built-in identity header, another extra's header, or one the proxy needs (Host, Cookie, Authorization, hop-by-hop, Forwarded)", x.key, x.header),
                ));
            }
        }
        let inputs = routes::RouteInputs {
            file,
            base,
            sp_prefix: &prefix,
            global_headers: &global_headers,
            extra: &extra_headers,
        };
        let mut app_routes = Vec::new();
        for (i, r) in raw.routes.iter().enumerate() {
            app_routes.push(routes::route(r, i, &inputs).map_err(|(k, m)| invalid(&k, m))?);
        }
        match raw.upstream {
            Some(up) => {
                let url = up.url.ok_or_else(|| {
                    invalid(
                        "upstream.url",
                        "is required, like http://127.0.0.1:3000".into(),
                    )
                })?;
                app_routes.push(AppRoute {
                    name: "default".into(),
                    hosts: Vec::new(),
                    path_prefix: "/".into(),
                    upstream: parse_upstream(&url).map_err(|m| invalid("upstream.url", m))?,
                    upstream_ca: Vec::new(),
                    public_paths: raw.server.public_paths.clone(),
                    access: Access::Authenticated,
                    headers: default_contract.clone(),
                });
            }
            None if app_routes.is_empty() => {
                return Err(invalid(
                    "upstream.url",
                    "is required (or [[routes]] entries), like http://127.0.0.1:3000".into(),
                ))
            }
            None => {
                if !raw.server.public_paths.is_empty() {
                    return Err(invalid(
                        "server.public_paths",
                        "applies to [upstream]; with [[routes]] only, give each route its public_paths".into(),
                    ));
                }
            }
        }
        routes::order(&mut app_routes).map_err(|(k, m)| invalid(&k, m))?;
        let mut strip_headers: Vec<String> = [
            "X-Auth-User",
            "X-Auth-Email",
            "X-Auth-Name",
            "X-Auth-Groups",
        ]
        .into_iter()
        .map(String::from)
        .chain(default_contract.names().cloned())
        .chain(app_routes.iter().flat_map(|r| r.headers.names().cloned()))
        .map(|n| normalise_header_name(&n))
        .collect();
        for s in global_headers.strip.iter().flatten() {
            if http::HeaderName::from_bytes(s.as_bytes()).is_err() {
                return Err(invalid(
                    "headers.strip",
                    format!("`{s}` is not a valid header name"),
                ));
            }
            strip_headers.push(normalise_header_name(s));
        }
        strip_headers.sort();
        strip_headers.dedup();

        // [jwt] and [log]
        let jwt = JwtConfig {
            key_file: match raw.jwt.key_file.as_deref() {
                Some(p) => resolve(p),
                None => store_path
                    .parent()
                    .unwrap_or(Path::new("."))
                    .join("jwt-es256-key.pem"),
            },
            issuer: raw.jwt.issuer.unwrap_or_else(|| public_url.clone()),
            used: app_routes.iter().any(|r| r.headers.jwt.is_some()),
        };
        let log_format = match raw.log.format {
            None => crate::logging::LogFormat::Text,
            Some(f) => f.parse().map_err(|e: crate::logging::UnknownLogFormat| {
                invalid("log.format", e.to_string())
            })?,
        };

        Ok(Config {
            file: file.to_path_buf(),
            server: ServerConfig {
                listen,
                public_url,
                https,
                tls,
                threads,
                grace_period_seconds: raw.server.grace_period_seconds.unwrap_or(10),
                sp_path_prefix: prefix,
                trusted_proxies,
                http2,
                hsts,
                http_redirect_listen,
            },
            routes: app_routes,
            store_path,
            session,
            sp,
            idps,
            attributes,
            provisioning,
            strip_headers,
            identity,
            admin,
            jwt,
            log_format,
        })
    }
}

/// A user field's rule from its raw form; `default` names apply when the key is absent.
fn field_rule(
    raw: Option<raw::RawField>,
    default: &[String],
    _key: &str,
) -> Result<FieldRule, String> {
    let t = match raw {
        None => raw::RawFieldTable::default(),
        Some(raw::RawField::Names(names)) => raw::RawFieldTable {
            names: Some(names),
            ..Default::default()
        },
        Some(raw::RawField::Full(t)) => t,
    };
    let names = t.names.unwrap_or_else(|| default.to_vec());
    if let Some(n) = names.iter().find(|n| n.trim().is_empty()) {
        return Err(format!("`{n}` is an empty attribute name"));
    }
    let update = match t.update.as_deref().unwrap_or("always") {
        "always" => UpdateRule::Always,
        "once" => UpdateRule::Once,
        other => return Err(format!("update `{other}` is not one of always, once")),
    };
    Ok(FieldRule {
        names,
        friendly_name: t.friendly_name.unwrap_or(false),
        required: t.required.unwrap_or(false),
        update,
    })
}

/// Exact names, and `regex:<pattern>` entries matched against the whole group name.
fn group_filter(entries: &[String]) -> Result<GroupFilter, String> {
    let mut f = GroupFilter::default();
    for e in entries {
        match e.strip_prefix("regex:") {
            Some(pattern) => {
                let r = regex::Regex::new(&format!("^(?:{pattern})$"))
                    .map_err(|err| format!("`{e}` is not a valid regex: {err}"))?;
                f.patterns.push(r);
            }
            None if e.trim().is_empty() => return Err("an empty group name".into()),
            None => f.exact.push(e.clone()),
        }
    }
    Ok(f)
}

fn parse_upstream(url: &str) -> Result<UpstreamConfig, String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else {
        return Err(format!("`{url}` must start with http:// or https://"));
    };
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') {
        return Err(format!("`{url}` must be scheme://host[:port] with no path"));
    }
    let (host, address) = match authority.rsplit_once(':') {
        Some((h, port)) if !h.ends_with(']') || authority.starts_with('[') => {
            port.parse::<u16>()
                .map_err(|_| format!("`{url}`: `{port}` is not a port number"))?;
            (
                h.trim_matches(['[', ']']).to_string(),
                authority.to_string(),
            )
        }
        _ => {
            let port = if tls { 443 } else { 80 };
            (authority.to_string(), format!("{authority}:{port}"))
        }
    };
    Ok(UpstreamConfig { address, tls, host })
}

/// pingora panics on unreadable TLS files, so they are checked here first, with a message.
fn check_tls_files(files: &TlsFiles) -> Result<(), String> {
    let cert = std::fs::read(&files.cert)
        .map_err(|e| format!("cannot read {}: {e}", files.cert.display()))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut &cert[..])
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{} is not PEM: {e}", files.cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", files.cert.display()));
    }
    let key = std::fs::read(&files.key)
        .map_err(|e| format!("cannot read {}: {e}", files.key.display()))?;
    match rustls_pemfile::private_key(&mut &key[..]) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(format!("{} holds no PEM private key", files.key.display())),
        Err(e) => Err(format!("{} is not PEM: {e}", files.key.display())),
    }
}

/// One IdP's settings; `at` is where they are in the file (`idp` or `idps[N]`).
fn parse_idp(
    raw: RawIdp,
    at: &str,
    file: &Path,
    resolve: &dyn Fn(&str) -> PathBuf,
) -> Result<IdpConfig, ConfigError> {
    let invalid = |key: &str, message: String| ConfigError::Invalid {
        file: file.to_path_buf(),
        key: key.to_string(),
        message,
    };
    let metadata_file = raw.metadata_file.ok_or_else(|| {
        invalid(
            &format!("{at}.metadata_file"),
            "is required: the IdP's SAML metadata XML".into(),
        )
    })?;
    let metadata_file = resolve(&metadata_file);
    let allow_sha1 = raw.allow_sha1.unwrap_or(false);
    let mut allowed_algorithms: Vec<String> = match raw.allowed_signature_algorithms {
        None => DEFAULT_ALGORITHMS.iter().map(|s| s.to_string()).collect(),
        Some(list) => {
            let mut out = Vec::new();
            for name in &list {
                let uris = algorithm_uris(name).ok_or_else(|| {
                    invalid(
                        &format!("{at}.allowed_signature_algorithms"),
                        format!("unknown algorithm `{name}` (known: rsa-sha256, rsa-sha384, rsa-sha512, ecdsa-sha256, ecdsa-sha384, ecdsa-sha512, sha256, sha384, sha512; SHA-1 only through allow_sha1)"),
                    )
                })?;
                out.extend(uris.iter().map(|s| s.to_string()));
            }
            out
        }
    };
    if allow_sha1 {
        log::warn!(
            "{}: {at}.allow_sha1 = true: RSA-SHA1 signatures and SHA-1 digests are accepted; every such login is logged",
            file.display()
        );
        allowed_algorithms.push(RSA_SHA1.into());
        allowed_algorithms.push(SHA1_DIGEST.into());
    }
    let skew = raw.clock_skew_seconds.unwrap_or(180);
    if skew > 600 {
        return Err(invalid(
            &format!("{at}.clock_skew_seconds"),
            format!("{skew} is above the cap of 600"),
        ));
    }
    let issue_delay = raw.max_issue_delay_seconds.unwrap_or(300);
    if !(10..=3600).contains(&issue_delay) {
        return Err(invalid(
            &format!("{at}.max_issue_delay_seconds"),
            format!("{issue_delay} is not between 10 and 3600"),
        ));
    }
    let require_signed = match raw.require_signed.as_deref().unwrap_or("either") {
        "either" => SignedElement::Either,
        "assertion" => SignedElement::Assertion,
        "response" => SignedElement::Response,
        "both" => SignedElement::Both,
        other => {
            return Err(invalid(
                &format!("{at}.require_signed"),
                format!("`{other}` is not one of either, assertion, response, both (an unsigned answer is never accepted)"),
            ))
        }
    };
    let metadata_url = match raw.metadata_url {
        None => None,
        Some(u) if u.starts_with("https://") => Some(u),
        Some(u) if u.starts_with("http://") => {
            return Err(invalid(
                &format!("{at}.metadata_url"),
                format!("`{u}` is plain http: the metadata decides which keys are trusted, so it is fetched over https only"),
            ))
        }
        Some(u) => {
            return Err(invalid(
                &format!("{at}.metadata_url"),
                format!("`{u}` is not an https:// URL"),
            ))
        }
    };
    let refresh = raw.metadata_refresh_seconds.unwrap_or(3600);
    if refresh < 5 {
        return Err(invalid(
            &format!("{at}.metadata_refresh_seconds"),
            format!("{refresh} is below the minimum of 5"),
        ));
    }
    let mut certificates = Vec::new();
    for (i, text) in raw.certificates.unwrap_or_default().iter().enumerate() {
        let b64 = certificate_base64(text).map_err(|why| {
            invalid(
                &format!("{at}.certificates"),
                format!("entry {}: {why}", i + 1),
            )
        })?;
        certificates.push(b64);
    }
    let allow_idp_initiated = raw.allow_idp_initiated.unwrap_or(false);
    if allow_idp_initiated {
        log::warn!(
            "{}: {at}.allow_idp_initiated = true: unsolicited logins are accepted; they cannot be tied to the browser that posts them (login CSRF), replay protection still holds",
            file.display()
        );
    }
    let name = raw.name.clone().unwrap_or_else(|| "default".into());
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
    {
        return Err(invalid(
            &format!("{at}.name"),
            format!("`{name}`: letters, digits, `-` and `_` only (it goes into URLs)"),
        ));
    }
    Ok(IdpConfig {
        at: at.to_string(),
        display_name: raw.display_name.clone().unwrap_or_else(|| name.clone()),
        name,
        hosts: raw
            .hosts
            .clone()
            .unwrap_or_default()
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
        metadata_url,
        metadata_refresh: Duration::from_secs(refresh),
        metadata_ca_file: raw.metadata_ca_file.as_deref().map(resolve),
        certificates,
        allow_idp_initiated,
        require_signed,
        metadata_file,
        allowed_algorithms,
        allow_sha1,
        clock_skew: Duration::from_secs(skew),
        max_issue_delay: Duration::from_secs(issue_delay),
    })
}

/// A certificate as PEM or bare base64 (the two forms IdP admin pages hand out), checked to
/// be an X.509 certificate, as base64 DER on one line.
fn certificate_base64(text: &str) -> Result<String, String> {
    use base64::Engine as _;
    let body: String = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("-----"))
        .collect::<String>()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body.as_bytes())
        .map_err(|_| "not PEM or base64".to_string())?;
    openssl::x509::X509::from_der(&der).map_err(|_| "not an X.509 certificate".to_string())?;
    Ok(base64::engine::general_purpose::STANDARD.encode(der))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[server]
public_url = "http://127.0.0.1:8080"
[upstream]
url = "http://127.0.0.1:3000"
[idp]
metadata_file = "idp.xml"
"#;

    #[test]
    fn minimal_config_gets_strict_defaults() {
        let c = Config::parse(Path::new("/etc/samlgate/x.toml"), MINIMAL).unwrap();
        assert_eq!(c.sp.acs_url, "http://127.0.0.1:8080/_saml/acs");
        assert_eq!(c.idps[0].metadata_file, Path::new("/etc/samlgate/idp.xml"));
        assert!(!c.idps[0].allow_sha1);
        assert!(!c.idps[0]
            .allowed_algorithms
            .iter()
            .any(|a| a.contains("sha1")));
        assert_eq!(c.routes[0].upstream.address, "127.0.0.1:3000");
    }

    #[test]
    fn no_setting_allows_an_unsigned_answer_or_an_hmac_signature() {
        assert_eq!(
            Config::parse(Path::new("x.toml"), MINIMAL).unwrap().idps[0].require_signed,
            SignedElement::Either
        );
        for (key, value, says) in [
            ("require_signed", "\"none\"", "never accepted"),
            ("require_signed", "\"\"", "never accepted"),
            (
                "allowed_signature_algorithms",
                "[\"hmac-sha256\"]",
                "unknown algorithm",
            ),
        ] {
            let text = MINIMAL.replace("[idp]", &format!("[idp]\n{key} = {value}"));
            let e = Config::parse(Path::new("x.toml"), &text)
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("idp.{key}")) && e.contains(says), "{e}");
        }
    }

    #[test]
    fn unknown_key_names_file_and_key() {
        let text = MINIMAL.replace("[upstream]", "[upstream]\nurll = 1");
        let e = Config::parse(Path::new("conf/x.toml"), &text)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("conf/x.toml:"), "{e}");
        assert!(e.contains("urll"), "{e}");
    }

    #[test]
    fn bad_value_names_key_and_reason() {
        let text = MINIMAL.replace("http://127.0.0.1:8080", "ftp://x");
        let e = Config::parse(Path::new("c.toml"), &text)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("server.public_url") && e.contains("https://"),
            "{e}"
        );
        let text = format!("{MINIMAL}\n[session]\nidle_timeout_seconds = 5\n");
        let e = Config::parse(Path::new("c.toml"), &text)
            .unwrap_err()
            .to_string();
        assert!(e.contains("session.idle_timeout_seconds"), "{e}");
    }

    #[test]
    fn header_spellings_normalise_together() {
        assert_eq!(normalise_header_name("X_Auth_Groups"), "x-auth-groups");
        assert_eq!(normalise_header_name("x-AUTH-groups"), "x-auth-groups");
        // lighttpd's CGI/FastCGI turns every such character into `_`.
        assert_eq!(normalise_header_name("X.Auth~Groups"), "x-auth-groups");
    }
}
