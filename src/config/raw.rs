//! The config file as written: a serde mirror of `conf/samlgate.toml`.
//!
//! Every table denies unknown keys, so a typo fails at start instead of being silently ignored.
//! Nothing here is trusted: `super::Config::from_raw` validates and compiles it.

use serde::Deserialize;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub server: RawServer,
    /// The catch-all application; optional when `[[routes]]` cover everything.
    pub upstream: Option<RawUpstream>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub jwt: RawJwt,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub store: RawStore,
    #[serde(default)]
    pub session: RawSession,
    #[serde(default)]
    pub sp: RawSp,
    pub idp: Option<RawIdp>,
    pub idps: Option<Vec<RawIdp>>,
    #[serde(default)]
    pub attributes: RawAttributes,
    #[serde(default)]
    pub provisioning: RawProvisioning,
    #[serde(default)]
    pub headers: RawHeaders,
    #[serde(default)]
    pub identity: RawIdentity,
    #[serde(default)]
    pub groups: RawGroups,
    #[serde(default)]
    pub admin: RawAdmin,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<String>,
    pub public_url: Option<String>,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    pub threads: Option<usize>,
    pub grace_period_seconds: Option<u64>,
    pub sp_path_prefix: Option<String>,
    #[serde(default)]
    pub public_paths: Vec<String>,
    /// Peers (addresses or CIDR blocks) whose X-Forwarded-* headers are believed.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    pub http2: Option<bool>,
    pub hsts_seconds: Option<u64>,
    pub hsts_include_subdomains: Option<bool>,
    /// A plain-http listener that only redirects to `public_url`.
    pub http_redirect_listen: Option<String>,
}

/// One application behind the gateway: where it is, who may reach it, what it is told.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: Option<String>,
    #[serde(default)]
    pub hosts: Vec<String>,
    pub path_prefix: Option<String>,
    pub upstream: Option<String>,
    pub upstream_ca_file: Option<String>,
    pub access: Option<String>,
    #[serde(default)]
    pub groups_any: Vec<String>,
    #[serde(default)]
    pub groups_all: Vec<String>,
    #[serde(default)]
    pub public_paths: Vec<String>,
    pub headers: Option<RawHeaders>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawJwt {
    pub key_file: Option<String>,
    pub issuer: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub format: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub url: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub path: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawSession {
    pub cookie_name: Option<String>,
    pub idle_timeout_seconds: Option<u64>,
    pub absolute_timeout_seconds: Option<u64>,
    pub max_cached: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawSp {
    pub entity_id: Option<String>,
    pub login_timeout_seconds: Option<u64>,
    pub encryption: Option<Vec<RawKeyPair>>,
    pub require_encrypted_assertions: Option<bool>,
    pub signing_key: Option<String>,
    pub signing_cert: Option<String>,
    pub sign_authn_requests: Option<bool>,
    pub sign_metadata: Option<bool>,
    pub force_authn: Option<bool>,
    pub authn_context: Option<Vec<String>>,
    pub authn_context_comparison: Option<String>,
    pub single_logout: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeyPair {
    pub key: String,
    pub cert: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawIdp {
    pub name: Option<String>,
    pub display_name: Option<String>,
    pub hosts: Option<Vec<String>>,
    pub metadata_file: Option<String>,
    pub allowed_signature_algorithms: Option<Vec<String>>,
    pub allow_sha1: Option<bool>,
    pub clock_skew_seconds: Option<u64>,
    pub max_issue_delay_seconds: Option<u64>,
    pub require_signed: Option<String>,
    pub allow_idp_initiated: Option<bool>,
    pub metadata_url: Option<String>,
    pub metadata_refresh_seconds: Option<u64>,
    pub metadata_ca_file: Option<String>,
    pub certificates: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawAttributes {
    pub username: Option<RawField>,
    pub email: Option<RawField>,
    pub display_name: Option<RawField>,
    pub given_name: Option<RawField>,
    pub family_name: Option<RawField>,
    pub groups: Option<RawField>,
    #[serde(default)]
    pub extra: std::collections::BTreeMap<String, RawExtra>,
}

/// A user field: a list of candidate names, or a table with options.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawField {
    Names(Vec<String>),
    Full(RawFieldTable),
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawFieldTable {
    pub names: Option<Vec<String>>,
    pub friendly_name: Option<bool>,
    pub required: Option<bool>,
    pub update: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawExtra {
    pub names: Option<Vec<String>>,
    pub header: Option<String>,
    pub friendly_name: Option<bool>,
    pub required: Option<bool>,
    pub update: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawIdentity {
    pub name_id_formats: Option<Vec<String>>,
    pub key_attribute: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawGroups {
    pub sync: Option<String>,
    #[serde(default)]
    pub map: std::collections::BTreeMap<String, String>,
    pub unmapped: Option<String>,
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub require_approval: Vec<String>,
    pub overage: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub enabled: Option<bool>,
    pub listen: Option<String>,
    pub token_file: Option<String>,
    pub allow_remote: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawProvisioning {
    pub reactivate_inactive: Option<bool>,
    pub default_groups: Option<Vec<String>>,
    pub contact: Option<String>,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawHeaders {
    pub user: Option<String>,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub groups: Option<String>,
    pub session_id: Option<String>,
    pub encoding: Option<String>,
    pub max_bytes: Option<usize>,
    pub on_overflow: Option<String>,
    /// Header carrying a signed JWT of the identity; absent or "" = none.
    pub jwt: Option<String>,
    pub jwt_audience: Option<String>,
    pub jwt_ttl_seconds: Option<u64>,
    /// Only in the global `[headers]`: more names to remove from every client request.
    pub strip: Option<Vec<String>>,
}
