//! Which kind of request this is: one of the gateway's own endpoints, or which application
//! route, and whether the path is public there. Decided from the Host and path alone, before
//! any session lookup.

use crate::config::{Access, AppRoute, ServerConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Acs,
    Metadata,
    Login,
    Logout,
    /// SAML SingleLogoutService: the IdP's LogoutRequest, or its answer to ours.
    Slo,
    /// The public keys of the identity JWTs sent upstream.
    Jwks,
    /// Under the reserved prefix but not one of ours.
    UnknownSp,
    /// An application path served without a login.
    Public,
    Protected,
    /// No route claims this host and path.
    NoRoute,
    /// A dot segment (plain, percent-encoded or with `;` parameters) or a backslash: such a
    /// path means different things to different servers, so it is refused.
    BadPath,
}

impl Route {
    /// The name the request log gives it.
    pub fn name(self) -> &'static str {
        match self {
            Route::Acs => "acs",
            Route::Metadata => "metadata",
            Route::Login => "login",
            Route::Logout => "logout",
            Route::Slo => "slo",
            Route::Jwks => "jwks",
            Route::UnknownSp => "unknown_sp",
            Route::Public => "public",
            Route::Protected => "protected",
            Route::NoRoute => "no_route",
            Route::BadPath => "bad_path",
        }
    }
}

/// One of the gateway's endpoints, if the path is under the reserved prefix.
pub fn sp_endpoint(path: &str, server: &ServerConfig) -> Option<Route> {
    let rest = path.strip_prefix(server.sp_path_prefix.as_str())?;
    if !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    Some(match rest {
        "/acs" => Route::Acs,
        "/metadata" => Route::Metadata,
        "/login" => Route::Login,
        "/logout" => Route::Logout,
        "/slo" => Route::Slo,
        "/jwks.json" => Route::Jwks,
        _ => Route::UnknownSp,
    })
}

/// The route for `host` and `path` (index into `routes`) and whether the path is public there.
///
/// Routes are matched on a key that reads the path the way the most lenient server behind us
/// might: percent-decoded, `\` as `/`, `;parameters` dropped from each segment,
/// empty segments collapsed, letters compared without case. So `/Admin`, `//admin`,
/// `/admin;x=1` `/%61dmin` and `/admin%2Fx` all meet the `/admin` route's policy, and any path that a
/// server could resolve upwards (`/public/..;/admin`, `/a/%2e%2e/b`) is refused outright.
pub fn select(routes: &[AppRoute], host: Option<&str>, path: &str) -> (Route, Option<usize>) {
    // Decoded once, all of it: `%61dmin` is `admin` to the server behind us. Most paths have
    // nothing to decode and are matched in place, without allocating.
    let decoded: std::borrow::Cow<str> = if path.bytes().any(|b| b == b'%' || b == b'\\') {
        percent_encoding::percent_decode_str(path)
            .decode_utf8_lossy()
            .replace('\\', "/")
            .into()
    } else {
        path.into()
    };
    let segments = || {
        decoded
            .split('/')
            .map(|seg| seg.split(';').next().unwrap_or(""))
            .filter(|seg| !seg.is_empty())
    };
    if segments().any(|seg| seg == "." || seg == "..") {
        return (Route::BadPath, None);
    }
    let host = host.map(str::trim);
    let hit = routes.iter().position(|r| {
        let host_ok = r.hosts.is_empty()
            || host.is_some_and(|h| r.hosts.iter().any(|x| x.eq_ignore_ascii_case(h)));
        host_ok && prefix_matches(&r.path_prefix, segments())
    });
    let Some(i) = hit else {
        return (Route::NoRoute, None);
    };
    let r = &routes[i];
    let public = r.access == Access::Public
        || (is_plain(path)
            && r.public_paths.iter().any(|p| {
                path.strip_prefix(p.as_str()).is_some_and(|rest| {
                    rest.is_empty() || rest.starts_with('/') || p.ends_with('/')
                })
            }));
    (
        if public {
            Route::Public
        } else {
            Route::Protected
        },
        Some(i),
    )
}

/// Whether the path's segments start with the prefix's, ignoring ASCII case.
fn prefix_matches<'a>(prefix: &str, mut have: impl Iterator<Item = &'a str>) -> bool {
    prefix
        .split('/')
        .filter(|s| !s.is_empty())
        .all(|w| have.next().is_some_and(|h| h.eq_ignore_ascii_case(w)))
}

/// A path that means the same to every server behind us, so only such paths can be public
/// by `public_paths`: nothing but unreserved characters and `/` (no `%`, `;`, `\\`), no `..`
/// anywhere, no `//`. An allow-list, because each stack has its own way to read `..;`
/// (Tomcat, Spring), `%2e` or a backslash as a parent directory; `/public/..;/admin` must
/// not reach `/admin`.
fn is_plain(path: &str) -> bool {
    path.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'.' | b'_' | b'~'))
        && !path.contains("..")
        && !path.contains("//")
        && !path.split('/').any(|seg| seg == ".")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn config(extra: &str) -> Config {
        config_with("", extra)
    }

    fn config_with(server: &str, extra: &str) -> Config {
        let dir = tempfile::tempdir().unwrap();
        let meta = dir.path().join("idp.xml");
        std::fs::write(&meta, include_str!("../../conf/idp-metadata.example.xml")).unwrap();
        let text = format!(
            "[server]\npublic_url = \"http://127.0.0.1:1\"\n{server}\n[idp]\nmetadata_file = \"idp.xml\"\n{extra}"
        );
        Config::parse(&dir.path().join("samlgate.toml"), &text).unwrap()
    }

    fn classify(cfg: &Config, path: &str) -> Route {
        sp_endpoint(path, &cfg.server).unwrap_or_else(|| select(&cfg.routes, None, path).0)
    }

    #[test]
    fn public_paths_cannot_be_escaped() {
        let s = config_with(
            "public_paths = [\"/public\", \"/health\"]",
            "[upstream]\nurl = \"http://127.0.0.1:2\"\n",
        );
        assert_eq!(classify(&s, "/public"), Route::Public);
        assert_eq!(classify(&s, "/public/a.css"), Route::Public);
        assert_eq!(classify(&s, "/publicity"), Route::Protected);
        assert_eq!(classify(&s, "/public/../admin"), Route::BadPath);
        assert_eq!(classify(&s, "/public/%2e%2e/admin"), Route::BadPath);
        assert_eq!(classify(&s, "/public/..%2fadmin"), Route::BadPath);
        assert_eq!(classify(&s, "/public\\..\\admin"), Route::BadPath);
        assert_eq!(classify(&s, "/public/..;/admin"), Route::BadPath);
        assert_eq!(classify(&s, "/public;/../admin"), Route::BadPath);
        assert_eq!(classify(&s, "/public/%252e%252e/admin"), Route::Protected);
        assert_eq!(classify(&s, "/public/./a"), Route::BadPath);
        assert_eq!(classify(&s, "/public/a-b_c.d~e/f.png"), Route::Public);
        assert_eq!(classify(&s, "/public//a"), Route::Protected);
        assert_eq!(classify(&s, "/_saml/acs"), Route::Acs);
        assert_eq!(classify(&s, "/_saml/jwks.json"), Route::Jwks);
        assert_eq!(classify(&s, "/_saml/other"), Route::UnknownSp);
        assert_eq!(classify(&s, "/_samlx"), Route::Protected);
    }

    #[test]
    fn the_strictest_route_meets_every_spelling_of_its_path() {
        let s = config(
            "[upstream]\nurl = \"http://127.0.0.1:2\"\n\
             [[routes]]\nname = \"admin\"\npath_prefix = \"/admin\"\nupstream = \"http://127.0.0.1:3\"\ngroups_any = [\"admins\"]\n\
             [[routes]]\nname = \"docs\"\nhosts = [\"docs.test\"]\nupstream = \"http://127.0.0.1:4\"\naccess = \"public\"\n",
        );
        let name = |host: Option<&str>, p: &str| {
            let (_, i) = select(&s.routes, host, p);
            i.map(|i| s.routes[i].name.clone()).unwrap_or_default()
        };
        for p in [
            "/admin",
            "/admin/",
            "/Admin/users",
            "//admin",
            "/admin;jsessionid=1/x",
            "/%61dmin",
            "\\admin",
        ] {
            let got = name(None, p);
            assert_eq!(got, "admin", "{p}");
        }
        assert_eq!(select(&s.routes, None, "/x%2f..%2fadmin").0, Route::BadPath);
        assert_eq!(name(None, "/administrator"), "default");
        assert_eq!(name(None, "/"), "default");
        assert_eq!(name(Some("DOCS.test"), "/admin"), "docs");
        assert_eq!(select(&s.routes, Some("docs.test"), "/x").0, Route::Public);
        assert_eq!(name(Some("other.test"), "/x"), "default");
    }

    #[test]
    fn without_a_catch_all_unknown_hosts_get_no_route() {
        let s = config(
            "[[routes]]\nname = \"wiki\"\nhosts = [\"wiki.test\"]\nupstream = \"http://127.0.0.1:3\"\n",
        )
        .routes;
        assert_eq!(select(&s, Some("wiki.test"), "/a").1, Some(0));
        assert_eq!(select(&s, Some("evil.test"), "/a").0, Route::NoRoute);
        assert_eq!(select(&s, None, "/a").0, Route::NoRoute);
    }
}
