//! Which kind of request this is: one of the gateway's own endpoints, a public path, or a
//! protected one. Decided from the path alone, before any session lookup.

use crate::config::ServerConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Acs,
    Metadata,
    Login,
    Logout,
    /// SAML SingleLogoutService: the IdP's LogoutRequest, or its answer to ours.
    Slo,
    /// Under the reserved prefix but not one of ours.
    UnknownSp,
    Public,
    Protected,
}

pub fn classify(path: &str, server: &ServerConfig) -> Route {
    let prefix = server.sp_path_prefix.as_str();
    if let Some(rest) = path.strip_prefix(prefix) {
        if rest.is_empty() || rest.starts_with('/') {
            return match rest {
                "/acs" => Route::Acs,
                "/metadata" => Route::Metadata,
                "/login" => Route::Login,
                "/logout" => Route::Logout,
                "/slo" => Route::Slo,
                _ => Route::UnknownSp,
            };
        }
    }
    let under_public = server.public_paths.iter().any(|p| {
        path.strip_prefix(p.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || p.ends_with('/'))
    });
    if under_public && is_plain(path) {
        return Route::Public;
    }
    Route::Protected
}

/// A path that means the same to every server behind us, so only such paths can be public:
/// nothing but unreserved characters and `/` (no `%`, `;`, `\\`), no `..` anywhere, no `//`.
/// An allow-list, because each stack has its own way to read `..;` (Tomcat, Spring), `%2e`
/// or a backslash as a parent directory; `/public/..;/admin` must not reach `/admin`.
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

    fn server() -> ServerConfig {
        ServerConfig {
            listen: "127.0.0.1:1".parse().unwrap(),
            public_url: "http://127.0.0.1:1".into(),
            https: false,
            tls: None,
            threads: 1,
            grace_period_seconds: 1,
            sp_path_prefix: "/_saml".into(),
            public_paths: vec!["/public".into(), "/health".into()],
        }
    }

    #[test]
    fn public_paths_cannot_be_escaped() {
        let s = server();
        assert_eq!(classify("/public", &s), Route::Public);
        assert_eq!(classify("/public/a.css", &s), Route::Public);
        assert_eq!(classify("/publicity", &s), Route::Protected);
        assert_eq!(classify("/public/../admin", &s), Route::Protected);
        assert_eq!(classify("/public/%2e%2e/admin", &s), Route::Protected);
        assert_eq!(classify("/public/..%2fadmin", &s), Route::Protected);
        assert_eq!(classify("/public\\..\\admin", &s), Route::Protected);
        assert_eq!(classify("/public/..;/admin", &s), Route::Protected);
        assert_eq!(classify("/public;/../admin", &s), Route::Protected);
        assert_eq!(classify("/public/%252e%252e/admin", &s), Route::Protected);
        assert_eq!(classify("/public/./a", &s), Route::Protected);
        assert_eq!(classify("/public/a-b_c.d~e/f.png", &s), Route::Public);
        assert_eq!(classify("/_saml/acs", &s), Route::Acs);
        assert_eq!(classify("/_saml/other", &s), Route::UnknownSp);
        assert_eq!(classify("/_samlx", &s), Route::Protected);
    }
}
