//! The command line: `check`, `metadata`, and `demo` as a new user meets them.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{free_port, gateway_bin, http};

fn check(config: &std::path::Path) -> (bool, String) {
    let out = Command::new(gateway_bin())
        .args(["check", "--config"])
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn the_example_config_passes_check() {
    let conf = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/samlgate.toml");
    let (ok, out) = check(&conf);
    assert!(ok, "{out}");
    assert!(out.contains("ok"));
}

#[test]
fn the_two_app_routes_example_passes_check() {
    let conf = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/routes.example.toml");
    let (ok, out) = check(&conf);
    assert!(ok, "{out}");
}

#[test]
fn route_mistakes_name_the_route_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
    let good = std::fs::read_to_string(example.join("routes.example.toml")).unwrap();
    std::fs::copy(
        example.join("idp-metadata.example.xml"),
        dir.path().join("idp-metadata.example.xml"),
    )
    .unwrap();
    let cases = [
        (
            good.replace("access = \"groups\"", "access = \"everyone\""),
            "routes[0].access",
        ),
        (
            good.replace(
                "path_prefix = \"/reports\"",
                "path_prefix = \"/reports/../admin\"",
            ),
            "routes[1].path_prefix",
        ),
        (
            good.replace(
                "upstream = \"http://127.0.0.1:3000\"",
                "upstream = \"http://127.0.0.1:3000\"\nupstream_ca_file = \"ca.pem\"",
            ),
            "routes[0].upstream_ca_file",
        ),
        (
            good.replace("encoding = \"json\"", "encoding = \"base64\""),
            "routes[0].headers.encoding",
        ),
        (
            // Requests match on the host name alone: a port here would never match.
            good.replace(
                "hosts = [\"wiki.example.com\"]",
                "hosts = [\"wiki.example.com:8443\"]",
            ),
            "routes[0].hosts",
        ),
        (
            good.replace(
                "user = \"X-Remote-User\"",
                "user = \"X-Forwarded-User\"\nstrip = []",
            ),
            "routes[0].headers.strip",
        ),
        (
            good.replace("email = \"X-Remote-Email\"", "email = \"X-Forwarded-For\""),
            "routes[0].headers.email",
        ),
        (
            good.replace("jwt_ttl_seconds = 120", "jwt_ttl_seconds = 86400"),
            "routes[1].headers.jwt_ttl_seconds",
        ),
        (
            good.replace(
                "trusted_proxies = [\"10.0.0.0/8\"]",
                "trusted_proxies = [\"10.0.0.0/40\"]",
            ),
            "server.trusted_proxies",
        ),
        (
            good.replace(
                "path_prefix = \"/reports\"",
                "path_prefix = \"/\"\nhosts = [\"wiki.example.com\"]",
            ),
            "routes `wiki` and `reports` both claim path / on the same host",
        ),
        (
            good.replace(
                "public_url = \"https://sso.example.com\"",
                "public_url = \"http://sso.example.com\"",
            ),
            "server.hsts_seconds",
        ),
    ];
    for (text, must_name) in cases {
        let path = dir.path().join("samlgate.toml");
        std::fs::write(&path, &text).unwrap();
        let (ok, out) = check(&path);
        assert!(!ok, "a bad config must fail: {must_name}");
        assert!(out.contains(must_name), "names {must_name}: {out}");
        assert!(!out.contains("panicked"), "{out}");
    }
}

#[test]
fn check_names_the_file_the_key_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
    let good = std::fs::read_to_string(example.join("samlgate.toml")).unwrap();
    std::fs::copy(
        example.join("idp-metadata.example.xml"),
        dir.path().join("idp-metadata.example.xml"),
    )
    .unwrap();
    let cases = [
        (good.replace("idle_timeout_seconds = 3600", "idle_timeout_seconds = 5"), "session.idle_timeout_seconds"),
        (good.replace("[upstream]", "[upstream]\ntimeout = 3"), "timeout"),
        (good.replace("clock_skew_seconds = 180", "clock_skew_seconds = 9000"), "idp.clock_skew_seconds"),
        (good.replace("url = \"http://127.0.0.1:3000\"", "url = \"ftp://x\""), "upstream.url"),
        (good.replace("idp-metadata.example.xml", "missing.xml"), "idp.metadata_file"),
        (good.replace("# tls_cert = \"/etc/samlgate/tls/cert.pem\"\n# tls_key = \"/etc/samlgate/tls/key.pem\"", "tls_cert = \"nope.pem\"\ntls_key = \"nope.key\""), "server.tls_cert"),
    ];
    for (text, must_name) in cases {
        let path = dir.path().join("samlgate.toml");
        std::fs::write(&path, text).unwrap();
        let (ok, out) = check(&path);
        assert!(!ok, "a bad config must fail: {must_name}");
        assert!(
            out.contains(&path.display().to_string()),
            "names the file: {out}"
        );
        assert!(out.contains(must_name), "names {must_name}: {out}");
        assert!(!out.contains("panicked"), "{out}");
    }
}

#[test]
fn metadata_without_a_signing_certificate_refuses_to_start() {
    // NOTES trap 1: samael would accept anything if the metadata had no signing key.
    let dir = tempfile::tempdir().unwrap();
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
    let meta = std::fs::read_to_string(example.join("idp-metadata.example.xml")).unwrap();
    let start = meta.find("<md:KeyDescriptor").unwrap();
    let end = meta.find("</md:KeyDescriptor>").unwrap() + "</md:KeyDescriptor>".len();
    let stripped = format!("{}{}", &meta[..start], &meta[end..]);
    std::fs::write(dir.path().join("idp-metadata.example.xml"), stripped).unwrap();
    std::fs::copy(
        example.join("samlgate.toml"),
        dir.path().join("samlgate.toml"),
    )
    .unwrap();
    let (ok, out) = check(&dir.path().join("samlgate.toml"));
    assert!(!ok);
    assert!(out.contains("no signing certificate"), "{out}");
}

#[test]
fn the_demo_logs_a_user_in_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    // Three consecutive free ports: retry a few bases.
    let base = (0..20)
        .map(|_| free_port())
        .find(|p| {
            *p < 65000
                && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok()
                && std::net::TcpListener::bind(("127.0.0.1", p + 2)).is_ok()
        })
        .expect("three free ports");
    let mut demo = Command::new(gateway_bin())
        .args(["demo", "--port", &base.to_string(), "--data-dir"])
        .arg(dir.path().join("demo"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(demo.stdout.take().unwrap());
    let mut banner = String::new();
    for _ in 0..6 {
        out.read_line(&mut banner).unwrap();
    }
    assert!(banner.contains("DEVELOPMENT ONLY"), "{banner}");
    assert!(
        banner.contains(&format!("http://127.0.0.1:{base}/")),
        "{banner}"
    );
    for p in [base, base + 1, base + 2] {
        let t = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", p)).is_err() {
            assert!(t.elapsed().as_secs() < 30, "port {p} never opened");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    let gw = format!("http://127.0.0.1:{base}");
    let mut b = common::Harness::browser_only();
    let r = b.get(&format!("{gw}/hello?x=1"));
    assert_eq!(r.status, 302);
    let form = b.get(&r.header("location").unwrap()).text();
    assert!(form.contains("DEVELOPMENT ONLY"));
    let field = |name: &str| {
        let key = format!("name=\"{name}\" value=\"");
        let s = form.find(&key).unwrap() + key.len();
        form[s..s + form[s..].find('"').unwrap()].replace("&amp;", "&")
    };
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("request_id", &field("request_id"))
        .append_pair("acs", &field("acs"))
        .append_pair("audience", &field("audience"))
        .append_pair("relay_state", &field("relay_state"))
        .append_pair("username", "dora")
        .append_pair("display_name", "Dora Demo")
        .append_pair("email", "dora@example.test")
        .append_pair("groups", "staff, ops")
        .finish();
    let signed = http::request(
        "POST",
        &format!("http://127.0.0.1:{}/sso/login", base + 1),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        body.as_bytes(),
    )
    .text();
    let value = |name: &str| {
        let key = format!("name=\"{name}\" value=\"");
        let s = signed.find(&key).unwrap() + key.len();
        signed[s..s + signed[s..].find('"').unwrap()].to_string()
    };
    let acs = b.post_acs(
        &format!("{gw}/_saml/acs"),
        Some(&value("SAMLResponse")),
        Some(&value("RelayState")),
    );
    assert_eq!(acs.status, 303, "{}", acs.text());
    let page = b.get(&acs.header("location").unwrap()).text();
    assert!(
        page.contains("x-auth-user") && page.contains("dora"),
        "{page}"
    );
    assert!(page.contains("everyone,ops,staff"), "{page}");
    let _ = demo.kill();
    let _ = demo.wait();
}
