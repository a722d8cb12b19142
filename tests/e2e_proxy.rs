//! Proxy cases (../shared/cases/proxy.md) covered by the core: spoofed identity headers,
//! public paths, the session cookie, API clients without a session, header encoding.

mod common;

use common::{http, Harness};
use serde_json::json;

/// Log in as alice (groups: users) and return the browser's session cookie.
fn logged_in(h: &Harness, groups: &[&str], name: &str) -> String {
    h.idp_next(json!({
        "name_id": "alice",
        "attributes": {"groups": groups, "displayName": [name], "mail": ["alice@corp.test"]}
    }));
    let mut b = h.browser();
    b.login(&h.url("/"));
    let (v, _) = b.jar.get("samlgate_session").cloned().expect("session");
    format!("samlgate_session={v}")
}

fn raw_get(h: &Harness, path: &str, extra_lines: &[&str]) -> http::Response {
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n",
        h.gw_port
    );
    for l in extra_lines {
        req.push_str(l);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    http::raw(&format!("127.0.0.1:{}", h.gw_port), req.as_bytes())
}

#[test]
fn h01_client_sent_identity_headers_never_survive_in_any_spelling() {
    let h = Harness::start_with(common::Opts {
        default_groups: vec![],
        ..Default::default()
    });
    let cookie = logged_in(&h, &["users"], "Alice");
    let cookie_line = format!("Cookie: {cookie}");
    let r = raw_get(
        &h,
        "/spoof",
        &[
            &cookie_line,
            "X-Auth-User: admin",
            "X-Auth-Groups: admins",
            "x-auth-groups: root",
            "X_Auth_Groups: root",
            "X.Auth.User: admin",
            "x~auth-user: admin",
            "X-AUTH-GROUPS: second-line",
            "x_auth_email: boss@corp.test",
            "X-Auth-Name: Mallory",
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = h.backend.last();
    assert_eq!(seen.path_and_query, "/spoof");
    assert_eq!(seen.one("x-auth-user"), "alice");
    assert_eq!(seen.one("x-auth-groups"), "users");
    assert_eq!(seen.one("x-auth-email"), "alice@corp.test");
    assert_eq!(seen.one("x-auth-name"), "Alice");
    let idents = seen.identity_like();
    assert_eq!(
        idents.len(),
        4,
        "exactly the four injected headers: {idents:?}"
    );
    assert!(idents.iter().all(|(n, _)| !n.contains('_')), "{idents:?}");
}

#[test]
fn h02_public_paths_carry_no_identity_at_all() {
    let h = Harness::start();
    let r = raw_get(
        &h,
        "/public/logo.png",
        &[
            "X-Auth-User: admin",
            "X_Auth_User: admin",
            "x-auth-groups: admins",
        ],
    );
    assert_eq!(r.status, 200, "public path needs no login: {}", r.text());
    let seen = h.backend.last();
    assert!(
        seen.identity_like().is_empty(),
        "{:?}",
        seen.identity_like()
    );

    // And a path that only looks public is not (Tomcat and Spring read `..;` as `..`): such a
    // path is refused outright, logged in or not, and never reaches the backend.
    let before = h.backend.count();
    for path in [
        "/public/../admin",
        "/public/..;/admin",
        "/public/%2e%2e/admin",
        "/public\\..\\admin",
        // Dots to a server that decodes twice, or that drops trailing dots and spaces.
        "/public/%252e%252e/admin",
        "/public/.../admin",
        "/public/.%20/admin",
        // A NUL ends the path in C-string stacks.
        "/public/logo.png%00/../../admin",
        "/public/a%00",
        // Not a path: pingora reads it as `/` but would send it upstream as it came.
        "public/../admin",
        "*",
    ] {
        let r = raw_get(&h, path, &["Accept: text/html"]);
        assert_eq!(r.status, 400, "{path} must be refused");
        assert!(r.text().contains("Reference:"), "{}", r.text());
    }
    // Only looks odd, cannot climb: needs a login like any protected path.
    let r = raw_get(&h, "/public//logo.png", &["Accept: text/html"]);
    assert_eq!(r.status, 302);
    assert_eq!(
        h.backend.count(),
        before,
        "none of these reached the backend"
    );
}

#[test]
fn an_absolute_form_target_goes_upstream_as_the_path_it_was_judged_by() {
    let h = Harness::start();
    let target = format!("http://127.0.0.1:{}/public/logo.png?v=2", h.gw_port);
    let r = raw_get(&h, &target, &["X-Auth-User: admin"]);
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = h.backend.last();
    assert_eq!(seen.path_and_query, "/public/logo.png?v=2");
    assert!(
        seen.identity_like().is_empty(),
        "{:?}",
        seen.identity_like()
    );
    // A protected path in absolute form still needs a login.
    let before = h.backend.count();
    let target = format!("http://127.0.0.1:{}/admin", h.gw_port);
    let r = raw_get(&h, &target, &["Accept: text/html"]);
    assert_eq!(r.status, 302);
    assert_eq!(h.backend.count(), before);
}

#[test]
fn h05_the_session_cookie_is_never_forwarded_other_cookies_are() {
    let h = Harness::start();
    let cookie = logged_in(&h, &["users"], "Alice");
    let line = format!("Cookie: theme=dark; {cookie}; lang=en");
    let r = raw_get(
        &h,
        "/with-cookies",
        &[&line, "Cookie: samlgate_session_state=xyz; other=1"],
    );
    assert_eq!(r.status, 200);
    let seen = h.backend.last();
    let cookies = seen.all("cookie").join("; ");
    assert!(
        !cookies.contains("samlgate_session"),
        "gateway cookies leaked: {cookies}"
    );
    for c in ["theme=dark", "lang=en", "other=1"] {
        assert!(cookies.contains(c), "{c} missing from {cookies}");
    }
}

#[test]
fn h09_api_clients_without_a_session_get_401_json_with_the_login_url() {
    let h = Harness::start();
    for lines in [
        vec!["Accept: application/json"],
        vec!["X-Requested-With: XMLHttpRequest"],
        vec!["Sec-Fetch-Mode: cors", "Accept: */*"],
    ] {
        let r = raw_get(&h, "/api/items?x=1", &lines);
        assert_eq!(r.status, 401, "{lines:?}: {}", r.text());
        let body = r.json();
        assert_eq!(body["error"], "login_required");
        let login = body["login_url"].as_str().unwrap();
        assert_eq!(
            login,
            h.url("/_saml/login?return_to=%2Fapi%2Fitems%3Fx%3D1")
        );
    }
    let r = http::request(
        "POST",
        &h.url("/api/items"),
        &[("Content-Type", "application/json")],
        b"{}",
    );
    assert_eq!(r.status, 401);
    assert_eq!(h.backend.count(), 0);

    // The login URL works for a browser and comes back to the API path.
    h.idp_next(json!({"name_id": "alice"}));
    let mut b = h.browser();
    let r = b.get(&h.url("/_saml/login?return_to=%2Fapi%2Fitems%3Fx%3D1"));
    assert_eq!(r.status, 302);
    let page = b.get(&r.header("location").unwrap());
    assert_eq!(page.status, 200);
}

#[test]
fn h06_login_return_targets_off_this_origin_land_on_the_default_page() {
    let h = Harness::start();
    h.idp_next(json!({"name_id": "alice"}));
    for (target, expect) in [
        ("https%3A%2F%2Fevil.test%2F", "/"),
        ("%2F%2Fevil.test", "/"),
        ("%2Fok%2Fpath%3Fx%3D1", "/ok/path?x=1"),
    ] {
        let mut b = h.browser();
        let (_, form) = b.visit_to_idp(&h.url(&format!("/_saml/login?return_to={target}")));
        let r = b.post_form(&form);
        assert_eq!(r.status, 303);
        assert_eq!(r.header("location").unwrap(), h.url(expect), "{target}");
    }
}

/// The decoder the README shows, in Rust: split on ',', percent-decode each item.
fn decode_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(|item| {
            percent_encoding::percent_decode_str(item)
                .decode_utf8()
                .unwrap()
                .into_owned()
        })
        .collect()
}

#[test]
fn h03_h04_awkward_values_travel_reversibly_and_never_split_headers() {
    let h = Harness::start_with(common::Opts {
        default_groups: vec![],
        ..Default::default()
    });
    let groups = [
        "CN=eng,OU=Groups,DC=corp",
        "semi;colon",
        "back\\slash",
        "\"quoted\"",
        " padded ",
        "Ünïcødé",
    ];
    let name = "Alice\r\nX-Auth-Groups: admins";
    let cookie = logged_in(&h, &groups, name);
    let line = format!("Cookie: {cookie}");
    let r = raw_get(&h, "/enc", &[&line]);
    assert_eq!(r.status, 200);
    let seen = h.backend.last();
    let mut got = decode_list(&seen.one("x-auth-groups"));
    let mut want: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    let n = seen.one("x-auth-name");
    assert!(n.bytes().all(|b| (0x21..=0x7e).contains(&b)), "{n:?}");
    // XML itself turns CR LF into LF on the way; nothing else may change.
    assert_eq!(decode_list(&n), vec![name.replace("\r\n", "\n")]);
    assert_eq!(seen.identity_like().len(), 4, "no smuggled header");
}

#[test]
fn the_backend_cannot_set_the_gateways_cookies() {
    let h = Harness::start();
    let r = raw_get(&h, "/public/set-cookies", &[]);
    assert_eq!(r.status, 200);
    let cookies = r.all("set-cookie");
    assert!(
        cookies.iter().any(|c| c.starts_with("app=1")),
        "other cookies pass: {cookies:?}"
    );
    assert!(
        cookies.iter().all(|c| !c.contains("samlgate_")),
        "the backend may not plant a session or state cookie, named or nameless: {cookies:?}"
    );
}

fn curl(args: &[&str]) -> String {
    let out = std::process::Command::new("curl")
        .args(["-sk", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl (installed by the test command)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn tls_is_terminated_by_the_gateway_and_cookies_are_secure() {
    let h = Harness::start_with(common::Opts {
        tls: true,
        ..Default::default()
    });
    let base = format!("https://127.0.0.1:{}", h.gw_port);
    let body = curl(&[
        &format!("{base}/public/over-tls"),
        "-H",
        "X-Auth-User: admin",
    ]);
    assert_eq!(body, "backend ok");
    let seen = h.backend.last();
    assert_eq!(seen.path_and_query, "/public/over-tls");
    assert!(seen.identity_like().is_empty());

    // Over https the login-state cookie must survive the IdP's cross-site POST (H07).
    let head = curl(&[
        "-D",
        "-",
        "-o",
        "/dev/null",
        "-H",
        "Accept: text/html",
        &format!("{base}/app"),
    ]);
    assert!(
        head.starts_with("HTTP/1.1 302") || head.starts_with("HTTP/2 302"),
        "{head}"
    );
    let state = head
        .lines()
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with("set-cookie: __secure-samlgate_session_state=")
        })
        .unwrap_or_else(|| panic!("{head}"));
    assert!(
        state.contains("SameSite=None") && state.contains("Secure") && state.contains("HttpOnly"),
        "{state}"
    );
    // And plain http on the TLS port is not served.
    let plain =
        common::http::request_result("GET", &format!("http://127.0.0.1:{}/public/x", h.gw_port));
    assert!(plain.is_err() || !plain.unwrap().contains("backend ok"));
}
