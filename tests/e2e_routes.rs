//! Several applications behind one gateway (issue 5): routes by host and path, each with its
//! upstream, access policy and header contract; the signed identity JWT; X-Forwarded-* from
//! trusted proxies only; reload on SIGHUP. Real backends on 127.0.0.1 record what arrives.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use common::{http, Backend, Harness, Opts};
use serde_json::json;

/// Log in as `who` with `groups` and return the `Cookie:` value.
fn logged_in(h: &Harness, who: &str, groups: &[&str]) -> String {
    h.idp_next(json!({
        "name_id": who,
        "attributes": {"groups": groups, "displayName": [format!("{who} Doe")], "mail": [format!("{who}@corp.test")]}
    }));
    let mut b = h.browser();
    b.login(&h.url("/"));
    let (v, _) = b.jar.get("samlgate_session").cloned().expect("session");
    format!("samlgate_session={v}")
}

/// GET `path` with `Host: host` and extra header lines.
fn get(h: &Harness, host: &str, path: &str, lines: &[&str]) -> http::Response {
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nAccept: text/html\r\n"
    );
    for l in lines {
        req.push_str(l);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    http::raw(&format!("127.0.0.1:{}", h.gw_port), req.as_bytes())
}

struct Apps {
    h: Harness,
    wiki: Backend,
    docs: Backend,
    ops: Backend,
}

/// The default app (the harness backend) at `/`, a wiki at `/wiki` for group eng with its own
/// header names, JSON encoding, a session id and a JWT; a public docs site on host
/// `docs.test`; an ops console at `/ops` for members of both `ops` and `oncall`.
fn apps(extra_server: &str) -> Apps {
    let wiki = Backend::start();
    let docs = Backend::start();
    let ops = Backend::start();
    let h = Harness::start_with(Opts {
        extra_config: format!(
            r#"{extra_server}
[[routes]]
name = "wiki"
path_prefix = "/wiki"
upstream = "http://127.0.0.1:{wiki}"
access = "groups"
groups_any = ["eng", "writers"]
[routes.headers]
user = "X-Remote-User"
email = ""
groups = "X-Remote-Groups"
session_id = "X-Remote-Session"
encoding = "json"
jwt = "X-Identity-Token"
jwt_audience = "https://wiki.corp.test"
jwt_ttl_seconds = 120

[[routes]]
name = "docs"
hosts = ["docs.test"]
upstream = "http://127.0.0.1:{docs}"
access = "public"

[[routes]]
name = "ops"
path_prefix = "/ops"
upstream = "http://127.0.0.1:{ops}"
groups_all = ["ops", "oncall"]
"#,
            wiki = wiki.port,
            docs = docs.port,
            ops = ops.port,
        ),
        ..Default::default()
    });
    Apps { h, wiki, docs, ops }
}

fn host(h: &Harness) -> String {
    format!("127.0.0.1:{}", h.gw_port)
}

#[test]
fn routes_choose_the_app_by_host_and_path_and_enforce_their_groups() {
    let a = apps("");
    let h = &a.h;
    let alice = format!("Cookie: {}", logged_in(h, "alice", &["users"]));

    // Not in eng/writers: a 403 that names the groups, for every spelling of the path.
    for path in [
        "/wiki",
        "/wiki/Page",
        "/WIKI/page",
        "//wiki/page",
        "/wiki;x=1/page",
        "/%77iki/page",
    ] {
        let r = get(h, &host(h), path, &[&alice]);
        assert_eq!(r.status, 403, "{path}: {}", r.text());
        let page = r.text();
        assert!(
            page.contains("eng, writers") && page.contains("Reference:"),
            "{page}"
        );
    }
    assert_eq!(a.wiki.count(), 0, "the wiki never saw alice");
    // The ops console needs both groups and says which are missing.
    let r = get(h, &host(h), "/ops/", &[&alice]);
    assert_eq!(r.status, 403);
    assert!(r.text().contains("ops, oncall"), "{}", r.text());
    // The default app is hers.
    let r = get(h, &host(h), "/wikipedia", &[&alice]);
    assert_eq!(r.status, 200);
    assert_eq!(h.backend.last().path_and_query, "/wikipedia");

    let bob = format!("Cookie: {}", logged_in(h, "bob", &["writers", "ops"]));
    let r = get(h, &host(h), "/wiki/Page?x=1", &[&bob]);
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = a.wiki.last();
    assert_eq!(seen.path_and_query, "/wiki/Page?x=1");
    let r = get(h, &host(h), "/ops/", &[&bob]);
    assert_eq!(r.status, 403);
    assert!(
        r.text().contains("oncall") && !r.text().contains("ops, oncall"),
        "only oncall is missing: {}",
        r.text()
    );
    assert_eq!(a.ops.count(), 0);

    // The public docs host needs no login and carries no identity, even with a session.
    let r = get(
        h,
        "docs.test",
        "/guide",
        &["X-Auth-User: admin", "X-Remote-User: admin", &bob],
    );
    assert_eq!(r.status, 200);
    let seen = a.docs.last();
    assert!(
        seen.identity_like().is_empty(),
        "{:?}",
        seen.identity_like()
    );
    assert!(
        seen.all("x-remote-user").is_empty(),
        "another route's header is stripped too"
    );

    // The metrics count the refusals.
    let m = http::request(
        "GET",
        &h.admin_url("/metrics"),
        &[("Authorization", &format!("Bearer {}", h.admin_token()))],
        b"",
    );
    assert!(
        m.text().contains("samlgate_requests_denied_total 8"),
        "{}",
        m.text()
    );
}

#[test]
fn each_route_gets_its_own_header_contract() {
    let a = apps("");
    let h = &a.h;
    h.idp_next(json!({
        "name_id": "carol",
        "attributes": {"groups": ["eng", "CN=Ops,OU=Groups,DC=corp"], "displayName": ["Carøl \"C\" Jones"], "mail": ["carol@corp.test"]}
    }));
    let mut b = h.browser();
    b.login(&h.url("/"));
    let (token, _) = b.jar.get("samlgate_session").cloned().expect("session");
    let cookie = format!("Cookie: samlgate_session={token}");
    let spoof = [
        "X-Remote-User: admin",
        "X_Remote_Groups: admins",
        "X-Auth-User: admin",
        "X-Remote-Session: 00",
        "X-Identity-Token: forged",
    ];
    let mut lines: Vec<&str> = spoof.to_vec();
    lines.push(&cookie);

    let r = get(h, &host(h), "/wiki/x", &lines);
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = a.wiki.last();
    let user: String = serde_json::from_str(&seen.one("x-remote-user")).expect("JSON string");
    assert_eq!(user, "carol");
    let groups: Vec<String> =
        serde_json::from_str(&seen.one("x-remote-groups")).expect("JSON array");
    assert_eq!(groups, ["CN=Ops,OU=Groups,DC=corp", "eng", "everyone"]);
    let name: String = serde_json::from_str(&seen.one("x-auth-name")).expect("JSON string");
    assert_eq!(name, "Carøl \"C\" Jones");
    assert!(
        seen.all("x-auth-email").is_empty(),
        "e-mail is switched off for the wiki"
    );
    assert!(
        seen.all("x-auth-user").is_empty(),
        "the default name is not used here, and the spoof is gone"
    );
    // The session id is the one the admin API lists, never the cookie value.
    let sid = seen.one("x-remote-session");
    assert_ne!(sid, token);
    let sessions = http::request(
        "GET",
        &h.admin_url("/api/sessions"),
        &[("Authorization", &format!("Bearer {}", h.admin_token()))],
        b"",
    );
    assert!(
        sessions.text().contains(&sid),
        "{sid} in {}",
        sessions.text()
    );
    assert_ne!(seen.one("x-identity-token"), "forged");

    // The default route keeps the default contract: percent encoding, X-Auth-*.
    let r = get(h, &host(h), "/", &lines);
    assert_eq!(r.status, 200);
    let seen = h.backend.last();
    assert_eq!(seen.one("x-auth-user"), "carol");
    assert_eq!(
        seen.one("x-auth-groups"),
        "CN=Ops%2COU=Groups%2CDC=corp,eng,everyone"
    );
    for n in [
        "x-remote-user",
        "x-remote-groups",
        "x-remote-session",
        "x-identity-token",
    ] {
        assert!(
            seen.all(n).is_empty(),
            "{n} was stripped and not injected here"
        );
    }
}

#[test]
fn the_identity_jwt_verifies_against_the_gateways_jwks() {
    use openssl::bn::{BigNum, BigNumContext};
    use openssl::ec::{EcGroup, EcKey, EcPoint};
    use openssl::ecdsa::EcdsaSig;
    use openssl::nid::Nid;
    use sha2::{Digest, Sha256};

    let a = apps("");
    let h = &a.h;
    let cookie = format!("Cookie: {}", logged_in(h, "dave", &["eng"]));
    assert_eq!(get(h, &host(h), "/wiki/", &[&cookie]).status, 200);
    let jwt = a.wiki.last().one("x-identity-token");

    let jwks = http::request("GET", &h.url("/_saml/jwks.json"), &[], b"");
    assert_eq!(jwks.status, 200);
    let keys = jwks.json();
    let k = &keys["keys"][0];
    assert_eq!(k["alg"], "ES256");
    let coord = |n: &str| BigNum::from_slice(&B64.decode(k[n].as_str().unwrap()).unwrap()).unwrap();
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let mut ctx = BigNumContext::new().unwrap();
    let mut point = EcPoint::new(&group).unwrap();
    point
        .set_affine_coordinates_gfp(&group, &coord("x"), &coord("y"), &mut ctx)
        .unwrap();
    let public = EcKey::from_public_key(&group, &point).unwrap();

    let (input, sig) = jwt.rsplit_once('.').expect("a JWS");
    let raw = B64.decode(sig).unwrap();
    assert_eq!(raw.len(), 64);
    let sig = EcdsaSig::from_private_components(
        BigNum::from_slice(&raw[..32]).unwrap(),
        BigNum::from_slice(&raw[32..]).unwrap(),
    )
    .unwrap();
    assert!(
        sig.verify(&Sha256::digest(input.as_bytes()), &public)
            .unwrap(),
        "signature"
    );
    let part = |i: usize| -> serde_json::Value {
        serde_json::from_slice(&B64.decode(input.split('.').nth(i).unwrap()).unwrap()).unwrap()
    };
    let (head, claims) = (part(0), part(1));
    assert_eq!(head["alg"], "ES256");
    assert_eq!(head["kid"], k["kid"]);
    assert_eq!(claims["sub"], "dave");
    assert_eq!(claims["aud"], "https://wiki.corp.test");
    assert_eq!(claims["iss"], format!("http://127.0.0.1:{}", h.gw_port));
    assert_eq!(claims["groups"], json!(["eng", "everyone"]));
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        120
    );
    // A tampered payload no longer verifies.
    let forged = input.replace(
        input.split('.').nth(1).unwrap(),
        &B64.encode(claims.to_string().replace("dave", "root")),
    );
    assert!(!sig
        .verify(&Sha256::digest(forged.as_bytes()), &public)
        .unwrap());
}

#[test]
fn forwarded_headers_come_from_trusted_proxies_only_and_reload_applies_without_a_restart() {
    let mut a = apps("");
    let h = &mut a.h;
    let cookie = format!("Cookie: {}", logged_in(h, "erin", &["eng"]));
    let spoof = [
        "X-Forwarded-For: 203.0.113.9",
        "X-Forwarded-Proto: https",
        "X-Forwarded-Host: evil.test",
        "Forwarded: for=203.0.113.9",
        "X-Real-IP: 203.0.113.9",
    ];
    let mut lines: Vec<&str> = spoof.to_vec();
    lines.push(&cookie);
    assert_eq!(get(h, &host(h), "/x", &lines).status, 200);
    let seen = h.backend.last();
    assert_eq!(seen.one("x-forwarded-for"), "127.0.0.1");
    assert_eq!(seen.one("x-forwarded-proto"), "http");
    assert_eq!(seen.one("x-forwarded-host"), host(h));
    assert_eq!(seen.one("x-real-ip"), "127.0.0.1");
    assert!(seen.all("forwarded").is_empty());

    // Trust the loopback proxy and open the ops console to eng, then SIGHUP.
    let log_before = h.gateway_log().len();
    h.edit_config(
        "grace_period_seconds = 1\n",
        "grace_period_seconds = 1\ntrusted_proxies = [\"127.0.0.0/8\"]\n",
    );
    h.edit_config(
        "groups_all = [\"ops\", \"oncall\"]",
        "groups_any = [\"eng\"]",
    );
    h.signal_gateway("HUP");
    h.wait_for_log("reload: ");
    assert!(
        h.gateway_log()[log_before..].contains("applied"),
        "{}",
        h.gateway_log()
    );
    assert_eq!(
        get(h, &host(h), "/x", &lines).status,
        200,
        "the same session still works"
    );
    let seen = h.backend.last();
    assert_eq!(seen.one("x-forwarded-for"), "203.0.113.9, 127.0.0.1");
    assert_eq!(seen.one("x-forwarded-proto"), "https");
    assert_eq!(seen.one("x-forwarded-host"), "evil.test");
    assert_eq!(seen.one("x-real-ip"), "203.0.113.9");
    assert_eq!(
        get(h, &host(h), "/ops/", &[&cookie]).status,
        200,
        "the new policy is in force"
    );
    assert_eq!(a.ops.count(), 1);

    // A broken file changes nothing and the log says where the mistake is.
    h.edit_config(
        "groups_any = [\"eng\"]",
        "groups_any = [\"eng\"]\naccess = \"everyone\"",
    );
    let before = h.gateway_log().len();
    h.signal_gateway("HUP");
    let new = h.wait_for_log_after(before, "reload refused");
    assert!(new.contains("routes[2].access"), "{new}");
    assert_eq!(
        get(h, &host(h), "/ops/", &[&cookie]).status,
        200,
        "the last good config stays"
    );
    // A change that needs a restart is named, and not applied; the rest still is.
    h.edit_config("access = \"everyone\"", "");
    h.edit_config("path = \"samlgate.redb\"", "path = \"elsewhere.redb\"");
    let before = h.gateway_log().len();
    h.signal_gateway("HUP");
    let new = h.wait_for_log_after(before, "need a restart");
    assert!(new.contains("store"), "{new}");
    assert_eq!(get(h, &host(h), "/ops/", &[&cookie]).status, 200);
    assert!(!h.dir.path().join("elsewhere.redb").exists());
}

/// Found by the attack run: a public route nested in a protected app was reachable through
/// every loose spelling of its prefix, which a case-sensitive or non-decoding upstream serves
/// as the protected app.
#[test]
fn loose_spellings_of_a_public_route_inside_a_protected_app_need_a_login() {
    let app = common::Backend::start();
    let h = Harness::start_with(Opts {
        extra_config: format!(
            "[[routes]]\nname = \"app\"\npath_prefix = \"/app\"\nupstream = \"http://127.0.0.1:{p}\"\n\
             [[routes]]\nname = \"app-assets\"\npath_prefix = \"/app/assets\"\nupstream = \"http://127.0.0.1:{p}\"\naccess = \"public\"\n",
            p = app.port
        ),
        ..Default::default()
    });
    let r = http::request("GET", &h.url("/app/assets/logo.png"), &[], b"");
    assert_eq!(r.status, 200, "the exact spelling is public");
    let before = app.count();
    for path in [
        "/app/ASSETS/reports",
        "/app/Assets/reports",
        "/app/assets%2Freports",
        "/app/assets%252Freports",
        "/app/assets./reports",
        "/app/assets%20/reports",
        "/app/assets..;x/reports",
        "/app/assets\\reports",
        "/app/%61ssets%2Freports",
    ] {
        let r = http::request("GET", &h.url(path), &[("Accept", "text/html")], b"");
        assert_eq!(r.status, 302, "{path} needs a login");
    }
    assert_eq!(app.count(), before, "none reached the upstream");
}
