//! The first stage for everything that goes upstream: remove every client-sent copy of an
//! identity header, in any spelling, and the gateway's own cookies. Runs on every proxied
//! request, public paths included, so a header can only come from `inject`.

use pingora::http::{RequestHeader, ResponseHeader};

use crate::config::Config;

/// Whether `name` spells `normalised` (see `config::normalise_header_name`), compared byte by
/// byte so that the per-request path allocates nothing.
fn same_header(name: &str, normalised: &str) -> bool {
    name.len() == normalised.len()
        && name.bytes().zip(normalised.bytes()).all(|(a, b)| {
            // Every byte but a letter or digit counts as `-`: CGI-style gateways turn `.`,
            // `~` and `_` alike into `_`, so `X.Auth.User` is `HTTP_X_AUTH_USER` there.
            let a = if a.is_ascii_alphanumeric() {
                a.to_ascii_lowercase()
            } else {
                b'-'
            };
            a == b
        })
}

/// Remove spoofable headers and our cookies. Returns how many identity headers were stripped.
pub fn strip(req: &mut RequestHeader, cfg: &Config) -> usize {
    let names: Vec<http::HeaderName> = req
        .headers
        .keys()
        .filter(|name| {
            cfg.strip_headers
                .iter()
                .any(|n| same_header(name.as_str(), n))
        })
        .cloned()
        .collect();
    let stripped = names.len();
    for name in names {
        // `remove_header` drops every value under that name, case-preserved map included.
        req.remove_header(&name);
    }
    strip_cookies(
        req,
        &[&cfg.session.cookie_name, &cfg.session.state_cookie_name],
    );
    stripped
}

/// Rewrite the Cookie header(s) without our cookies; other cookies pass untouched, byte for
/// byte (values need not be UTF-8).
fn strip_cookies(req: &mut RequestHeader, ours: &[&str]) {
    let mut kept: Vec<Vec<u8>> = Vec::new();
    let mut changed = false;
    for v in req.headers.get_all(http::header::COOKIE).iter() {
        for part in v.as_bytes().split(|b| *b == b';') {
            let part = part.trim_ascii();
            if part.is_empty() {
                continue;
            }
            let name = part
                .split(|b| *b == b'=')
                .next()
                .unwrap_or(part)
                .trim_ascii();
            if ours.iter().any(|o| o.as_bytes().eq_ignore_ascii_case(name)) {
                changed = true;
            } else {
                kept.push(part.to_vec());
            }
        }
    }
    if !changed {
        return;
    }
    req.remove_header(&http::header::COOKIE);
    if !kept.is_empty() {
        // Joined with "; " as RFC 6265 asks of a single Cookie header.
        if let Ok(v) = http::HeaderValue::from_bytes(&kept.join(&b"; "[..])) {
            let _ = req.insert_header(http::header::COOKIE, v);
        }
    }
}

/// The value of one cookie from the request, if present once or more (first wins).
pub fn cookie<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
    req.headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(';'))
        .filter_map(|p| p.trim().split_once('='))
        .find(|(n, _)| n.trim() == name)
        .map(|(_, v)| v.trim())
}

/// Drop any `Set-Cookie` from the upstream that would set or clear the gateway's own cookies:
/// only the gateway decides who is logged in.
pub fn strip_set_cookies(resp: &mut ResponseHeader, cfg: &Config) {
    let ours = [&cfg.session.cookie_name, &cfg.session.state_cookie_name];
    let all: Vec<http::HeaderValue> = resp
        .headers
        .get_all(http::header::SET_COOKIE)
        .iter()
        .cloned()
        .collect();
    let is_ours = |v: &http::HeaderValue| {
        let name = sent_back_name(v.as_bytes());
        ours.iter().any(|o| o.as_bytes().eq_ignore_ascii_case(name))
    };
    if !all.iter().any(is_ours) {
        return;
    }
    resp.remove_header(&http::header::SET_COOKIE);
    for v in all.into_iter().filter(|v| !is_ours(v)) {
        let _ = resp.append_header(http::header::SET_COOKIE, v);
    }
    log::warn!("the upstream tried to set the gateway's own cookie; dropped");
}

/// The name a browser will send this Set-Cookie back under (RFC 6265bis 5.6): a pair without
/// `=`, or with nothing before it, makes a nameless cookie, which the browser sends as its bare
/// value; so `=samlgate_session=x` comes back as `samlgate_session=x`. Quotes and spaces
/// around the name are ignored too, as lenient cookie parsers do.
fn sent_back_name(set_cookie: &[u8]) -> &[u8] {
    let pair = set_cookie.split(|b| *b == b';').next().unwrap_or(b"");
    let sent = match pair.iter().position(|b| *b == b'=') {
        Some(i) if !pair[..i].trim_ascii().is_empty() => pair,
        Some(i) => &pair[i + 1..],
        None => pair,
    };
    let name = sent
        .split(|b| *b == b'=')
        .next()
        .unwrap_or(b"")
        .trim_ascii();
    name.strip_prefix(b"\"")
        .and_then(|n| n.strip_suffix(b"\""))
        .unwrap_or(name)
        .trim_ascii()
}

#[cfg(test)]
mod tests {
    use super::{same_header, sent_back_name};

    #[test]
    fn a_set_cookie_is_judged_by_the_name_the_browser_sends_it_back_under() {
        for (set, name) in [
            (&b"samlgate_session=x; Path=/"[..], &b"samlgate_session"[..]),
            (b" SAMLGATE_SESSION =x", b"SAMLGATE_SESSION"),
            (b"=samlgate_session=planted; Path=/", b"samlgate_session"),
            (b" = samlgate_session_state=x", b"samlgate_session_state"),
            (b"samlgate_session; Path=/", b"samlgate_session"),
            (b"\"samlgate_session\"=x", b"samlgate_session"),
            (b"app=1; Path=/", b"app"),
            (b"app=samlgate_session=1", b"app"),
        ] {
            assert_eq!(
                sent_back_name(set),
                name,
                "{}",
                String::from_utf8_lossy(set)
            );
        }
    }

    #[test]
    fn header_spellings_match_without_allocating() {
        assert!(same_header("x_auth_groups", "x-auth-groups"));
        assert!(same_header("X-AUTH-GROUPS", "x-auth-groups"));
        assert!(!same_header("x-auth-group", "x-auth-groups"));
        assert!(!same_header("x-auth-groupz", "x-auth-groups"));
    }
}
