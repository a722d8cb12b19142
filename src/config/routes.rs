//! Routes and header contracts: which application a request is for, who may reach it, and
//! exactly which identity headers (and in which encoding) that application is told.
//!
//! Compiled once from `[[routes]]`, `[upstream]` and `[headers]`; the proxy only looks up.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::raw::{RawHeaders, RawRoute};
use super::{normalise_header_name, UpstreamConfig};

#[derive(Debug, Clone)]
pub struct AppRoute {
    pub name: String,
    /// Lower-case `host` or `host:port`; empty = any host.
    pub hosts: Vec<String>,
    /// `/`, or a prefix without a trailing slash; matched per whole segment, ignoring case.
    pub path_prefix: String,
    pub upstream: UpstreamConfig,
    /// DER certificates trusted for an https upstream instead of the system roots.
    pub upstream_ca: Vec<Vec<u8>>,
    /// Path prefixes of this route served without a login.
    pub public_paths: Vec<String>,
    pub access: Access,
    pub headers: HeaderContract,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// No login; no identity is ever forwarded.
    Public,
    /// Any logged-in user.
    Authenticated,
    /// Logged in and a member of at least one of `any_of` (when not empty) and of every
    /// group in `all_of`.
    Groups {
        any_of: Vec<String>,
        all_of: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// UTF-8 bytes outside `!`..`~`, and `%` and `,`, as `%XX`; lists joined by `,`.
    Percent,
    /// Each value a JSON string, each list a JSON array, with every non-ASCII character as a
    /// `\uXXXX` escape, so the header is printable ASCII.
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// Refuse the request with a page that says why (the application never sees a partial
    /// identity).
    Reject,
    /// Drop groups from the end of the sorted list until the headers fit, and say how many
    /// were dropped in the `<groups header>-Truncated` header.
    Truncate,
}

/// What one application is told about the user. A `None` name means that header is not sent.
#[derive(Debug, Clone)]
pub struct HeaderContract {
    pub user: Option<String>,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub groups: Option<String>,
    /// The session's id as the admin API shows it (hex SHA-256 of the token, never the token).
    pub session_id: Option<String>,
    /// (extra attribute key, header name), from `[attributes.extra]`.
    pub extra: Vec<(String, String)>,
    pub encoding: Encoding,
    /// Cap on the identity headers' total size (names and values).
    pub max_bytes: usize,
    pub on_overflow: Overflow,
    /// Set when `on_overflow = "truncate"` and groups are sent.
    pub truncated_header: Option<String>,
    pub jwt: Option<JwtRule>,
}

#[derive(Debug, Clone)]
pub struct JwtRule {
    pub header: String,
    pub audience: String,
    pub ttl_seconds: u64,
}

/// An address block whose peers may tell us the client's address, scheme and host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not an IP address or CIDR block like 10.0.0.0/8"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{s}`: prefix length must be 0 to {max}"))?,
        };
        Ok(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 peer may arrive as ::ffff:a.b.c.d on a dual-stack socket.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Headers an identity header may never be: the proxy or HTTP itself needs them.
pub(super) fn reserved(normalised: &str) -> bool {
    [
        "host",
        "cookie",
        "authorization",
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
        "upgrade",
        "te",
        "trailer",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "expect",
        "forwarded",
    ]
    .contains(&normalised)
        || normalised.starts_with("x-forwarded-")
        || normalised.starts_with("sec-websocket-")
}

/// A configured header name: `""` turns the header off.
fn header_name(key: &str, value: Option<&String>, default: &str) -> Result<Option<String>, String> {
    let v = value.map(String::as_str).unwrap_or(default);
    if v.is_empty() {
        return Ok(None);
    }
    if http::HeaderName::from_bytes(v.as_bytes()).is_err() {
        return Err(format!("{key}: `{v}` is not a valid header name"));
    }
    if reserved(&normalise_header_name(v)) {
        return Err(format!(
            "{key}: `{v}` is a header the proxy needs (Host, Cookie, Authorization, hop-by-hop, Forwarded, X-Forwarded-*, Sec-WebSocket-*)"
        ));
    }
    Ok(Some(v.to_string()))
}

/// The route's `[routes.headers]` over the global `[headers]`, key by key.
fn merged(route: Option<&RawHeaders>, global: &RawHeaders) -> RawHeaders {
    let Some(r) = route else {
        return global.clone();
    };
    let g = global.clone();
    RawHeaders {
        user: r.user.clone().or(g.user),
        email: r.email.clone().or(g.email),
        display_name: r.display_name.clone().or(g.display_name),
        groups: r.groups.clone().or(g.groups),
        session_id: r.session_id.clone().or(g.session_id),
        encoding: r.encoding.clone().or(g.encoding),
        max_bytes: r.max_bytes.or(g.max_bytes),
        on_overflow: r.on_overflow.clone().or(g.on_overflow),
        jwt: r.jwt.clone().or(g.jwt),
        jwt_audience: r.jwt_audience.clone().or(g.jwt_audience),
        jwt_ttl_seconds: r.jwt_ttl_seconds.or(g.jwt_ttl_seconds),
        strip: None,
    }
}

/// Compile one header contract; `at` names the table in messages (`headers`, `routes[1].headers`).
pub fn contract(
    h: &RawHeaders,
    at: &str,
    route_name: &str,
    extra: &[(String, String)],
) -> Result<HeaderContract, (String, String)> {
    let err = |k: &str, m: String| (format!("{at}.{k}"), m);
    let name =
        |k: &str, v: &Option<String>, d: &str| header_name(k, v.as_ref(), d).map_err(|m| err(k, m));
    let user = name("user", &h.user, "X-Auth-User")?;
    let email = name("email", &h.email, "X-Auth-Email")?;
    let display_name = name("display_name", &h.display_name, "X-Auth-Name")?;
    let groups = name("groups", &h.groups, "X-Auth-Groups")?;
    let session_id = name("session_id", &h.session_id, "")?;
    let jwt_header = name("jwt", &h.jwt, "")?;
    let encoding = match h.encoding.as_deref().unwrap_or("percent") {
        "percent" => Encoding::Percent,
        "json" => Encoding::Json,
        other => {
            return Err(err(
                "encoding",
                format!("`{other}` is not one of percent, json"),
            ))
        }
    };
    let max_bytes = h.max_bytes.unwrap_or(16 * 1024);
    if !(256..=1024 * 1024).contains(&max_bytes) {
        return Err(err(
            "max_bytes",
            format!("{max_bytes} is not between 256 and 1048576"),
        ));
    }
    let on_overflow = match h.on_overflow.as_deref().unwrap_or("reject") {
        "reject" => Overflow::Reject,
        "truncate" => Overflow::Truncate,
        other => {
            return Err(err(
                "on_overflow",
                format!("`{other}` is not one of reject, truncate"),
            ))
        }
    };
    let truncated_header = match (&groups, on_overflow) {
        (Some(g), Overflow::Truncate) => Some(format!("{g}-Truncated")),
        _ => None,
    };
    let jwt = match jwt_header {
        None => {
            if h.jwt_audience.is_some() || h.jwt_ttl_seconds.is_some() {
                return Err(err(
                    "jwt",
                    "jwt_audience and jwt_ttl_seconds need jwt = \"<header name>\"".into(),
                ));
            }
            None
        }
        Some(header) => {
            let ttl = h.jwt_ttl_seconds.unwrap_or(60);
            if !(5..=3600).contains(&ttl) {
                return Err(err(
                    "jwt_ttl_seconds",
                    format!("{ttl} is not between 5 and 3600"),
                ));
            }
            Some(JwtRule {
                header,
                audience: h
                    .jwt_audience
                    .clone()
                    .unwrap_or_else(|| route_name.to_string()),
                ttl_seconds: ttl,
            })
        }
    };
    let c = HeaderContract {
        user,
        email,
        display_name,
        groups,
        session_id,
        extra: extra.to_vec(),
        encoding,
        max_bytes,
        on_overflow,
        truncated_header,
        jwt,
    };
    let mut seen: Vec<String> = Vec::new();
    for n in c.names() {
        let n = normalise_header_name(n);
        if seen.contains(&n) {
            return Err(err(
                "user",
                format!("header `{n}` is used twice (identity headers, extra attributes, jwt, session_id)"),
            ));
        }
        seen.push(n);
    }
    Ok(c)
}

impl HeaderContract {
    /// Every header this contract may write.
    pub fn names(&self) -> impl Iterator<Item = &String> {
        [
            &self.user,
            &self.email,
            &self.display_name,
            &self.groups,
            &self.session_id,
            &self.truncated_header,
        ]
        .into_iter()
        .flatten()
        .chain(self.extra.iter().map(|(_, h)| h))
        .chain(self.jwt.iter().map(|j| &j.header))
    }
}

/// Check a public path list entry (shared by `server.public_paths` and routes).
pub fn check_public_path(p: &str, sp_prefix: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!("`{p}` must start with /"));
    }
    if p == "/" {
        return Err(
            "`/` would make the whole application public; list the public prefixes, or give the route access = \"public\"".into(),
        );
    }
    if p.starts_with(sp_prefix) {
        return Err(format!("`{p}` lies under the reserved prefix {sp_prefix}"));
    }
    Ok(())
}

/// Everything needed to compile `[[routes]]`.
pub struct RouteInputs<'a> {
    pub file: &'a Path,
    pub base: &'a Path,
    pub sp_prefix: &'a str,
    pub global_headers: &'a RawHeaders,
    pub extra: &'a [(String, String)],
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Compile one `[[routes]]` entry; errors are (key, message).
pub fn route(raw: &RawRoute, i: usize, inp: &RouteInputs) -> Result<AppRoute, (String, String)> {
    let at = format!("routes[{i}]");
    let err = |k: &str, m: String| (format!("{at}.{k}"), m);
    let name = raw.name.clone().unwrap_or_else(|| format!("route{i}"));
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(err(
            "name",
            format!("`{name}` must be letters, digits, - or _"),
        ));
    }
    let mut hosts = Vec::new();
    for h in &raw.hosts {
        let h = h.trim().to_ascii_lowercase();
        // Requests are matched on the host name alone (any port, no root dot), so a port
        // here would make a route that never matches.
        let bracketed = h.starts_with('[') && h.ends_with(']');
        if h.is_empty()
            || (h.contains(':') && !bracketed)
            || !h
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
        {
            return Err(err(
                "hosts",
                format!(
                    "`{h}` is not a host name (without a port: every port of a host is that host)"
                ),
            ));
        }
        hosts.push(h.trim_end_matches('.').to_string());
    }
    let prefix = raw.path_prefix.clone().unwrap_or_else(|| "/".into());
    let prefix = if prefix == "/" {
        prefix
    } else {
        prefix.trim_end_matches('/').to_string()
    };
    if !prefix.starts_with('/')
        || prefix.contains("..")
        || prefix.contains("//")
        || !prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'.' | b'_' | b'~'))
    {
        return Err(err(
            "path_prefix",
            format!("`{prefix}` must be a plain path like /wiki (letters, digits, / - . _ ~)"),
        ));
    }
    if prefix != "/"
        && prefix
            .to_ascii_lowercase()
            .starts_with(&inp.sp_prefix.to_ascii_lowercase())
    {
        return Err(err(
            "path_prefix",
            format!(
                "`{prefix}` lies under the reserved prefix {}",
                inp.sp_prefix
            ),
        ));
    }
    let url = raw
        .upstream
        .as_deref()
        .ok_or_else(|| err("upstream", "is required, like http://127.0.0.1:3000".into()))?;
    let upstream = super::parse_upstream(url).map_err(|m| err("upstream", m))?;
    let upstream_ca = match &raw.upstream_ca_file {
        None => Vec::new(),
        Some(_) if !upstream.tls => {
            return Err(err(
                "upstream_ca_file",
                "is only for an https:// upstream".into(),
            ))
        }
        Some(f) => load_ca(&resolve(inp.base, f)).map_err(|m| err("upstream_ca_file", m))?,
    };
    let access = match raw.access.as_deref() {
        None | Some("authenticated") if raw.groups_any.is_empty() && raw.groups_all.is_empty() => {
            Access::Authenticated
        }
        None | Some("groups") => {
            if raw.groups_any.is_empty() && raw.groups_all.is_empty() {
                return Err(err(
                    "access",
                    "\"groups\" needs groups_any or groups_all".into(),
                ));
            }
            Access::Groups {
                any_of: raw.groups_any.clone(),
                all_of: raw.groups_all.clone(),
            }
        }
        Some("public") if raw.groups_any.is_empty() && raw.groups_all.is_empty() => Access::Public,
        Some(a @ ("public" | "authenticated")) => {
            return Err(err(
                "access",
                format!("\"{a}\" with groups_any/groups_all: use access = \"groups\""),
            ))
        }
        Some(other) => {
            return Err(err(
                "access",
                format!("`{other}` is not one of public, authenticated, groups"),
            ))
        }
    };
    for p in &raw.public_paths {
        check_public_path(p, inp.sp_prefix).map_err(|m| err("public_paths", m))?;
        if prefix != "/"
            && !p
                .to_ascii_lowercase()
                .starts_with(&prefix.to_ascii_lowercase())
        {
            return Err(err(
                "public_paths",
                format!("`{p}` is not under the route's path_prefix {prefix}"),
            ));
        }
    }
    let h = merged(raw.headers.as_ref(), inp.global_headers);
    if raw.headers.as_ref().is_some_and(|h| h.strip.is_some()) {
        return Err(err(
            "headers.strip",
            "belongs in the global [headers]: every identity header is stripped on every route"
                .into(),
        ));
    }
    let headers = contract(&h, &format!("{at}.headers"), &name, inp.extra)?;
    let _ = inp.file;
    Ok(AppRoute {
        name,
        hosts,
        path_prefix: prefix,
        upstream,
        upstream_ca,
        public_paths: raw.public_paths.clone(),
        access,
        headers,
    })
}

fn load_ca(file: &Path) -> Result<Vec<Vec<u8>>, String> {
    let pem = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let certs: Vec<Vec<u8>> = rustls_pemfile::certs(&mut &pem[..])
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{} is not PEM: {e}", file.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", file.display()));
    }
    for c in &certs {
        // pingora parses these again with x509-parser and panics on what it cannot read:
        // both parsers must accept the certificate here, where a mistake can be reported.
        openssl::x509::X509::from_der(c)
            .map_err(|e| format!("{}: a certificate does not parse: {e}", file.display()))?;
        <x509_parser::certificate::X509Certificate as x509_parser::prelude::FromDer<_>>::from_der(
            c,
        )
        .map_err(|e| format!("{}: a certificate does not parse: {e}", file.display()))?;
    }
    Ok(certs)
}

/// Order routes so that the first match is the right one: a route for a named host before
/// one for any host, then the longest path prefix. Two routes that would match exactly the
/// same requests are a mistake in the file.
pub fn order(routes: &mut [AppRoute]) -> Result<(), (String, String)> {
    routes.sort_by_key(|r| (r.hosts.is_empty(), std::cmp::Reverse(r.path_prefix.len())));
    for (i, a) in routes.iter().enumerate() {
        for b in &routes[i + 1..] {
            let same_prefix = a.path_prefix.eq_ignore_ascii_case(&b.path_prefix);
            let shared_host = (a.hosts.is_empty() && b.hosts.is_empty())
                || a.hosts.iter().any(|h| b.hosts.contains(h));
            if same_prefix && shared_host {
                return Err((
                    "routes".into(),
                    format!(
                        "routes `{}` and `{}` both claim path {} on the same host",
                        a.name, b.name, a.path_prefix
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_blocks_match_what_they_say() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains("10.1.200.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.0.9".parse().unwrap()));
        let one = Cidr::parse("127.0.0.1").unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let all6 = Cidr::parse("::/0").unwrap();
        assert!(all6.contains("fe80::1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("example.com").is_err());
    }
}
