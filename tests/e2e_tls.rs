//! TLS terminated by the gateway (rustls): HTTP/2 to clients, HSTS, the plain-http redirect
//! listener, a certificate swapped by SIGHUP while open connections carry on, and the login
//! over https when the browser withholds SameSite=Lax cookies on the IdP's POST (H07).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{free_port, http, Harness, Opts};
use serde_json::json;

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-sk", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl (installed by the test command)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The response head curl prints for `args` (the body is discarded).
fn curl_head(args: &[&str]) -> String {
    let mut all = vec!["-D", "-", "-o", "/dev/null"];
    all.extend_from_slice(args);
    curl(&all)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[test]
fn https_offers_http2_sends_hsts_and_plain_http_is_redirected() {
    let redirect_port = free_port();
    let h = Harness::start_with(Opts {
        tls: true,
        server: format!(
            "hsts_seconds = 31536000\nhsts_include_subdomains = true\nhttp_redirect_listen = \"127.0.0.1:{redirect_port}\""
        ),
        ..Default::default()
    });
    let base = format!("https://127.0.0.1:{}", h.gw_port);
    let head = curl_head(&["--http2", &format!("{base}/public/x")]);
    assert!(head.starts_with("HTTP/2 200"), "{head}");
    assert_eq!(
        header(&head, "strict-transport-security"),
        Some("max-age=31536000; includeSubDomains"),
        "{head}"
    );
    assert_eq!(h.backend.last().path_and_query, "/public/x");
    // HTTP/1.1 clients are still served.
    let head = curl_head(&["--http1.1", &format!("{base}/public/y")]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // The gateway's own answers carry it too: the very first response a visitor gets is the
    // redirect to the IdP, and an error page may be the only one.
    for path in ["/reports", "/_saml/nope", "/_saml/metadata"] {
        let head = curl_head(&[
            "--http1.1",
            "-H",
            "Accept: text/html",
            &format!("{base}{path}"),
        ]);
        assert_eq!(
            header(&head, "strict-transport-security"),
            Some("max-age=31536000; includeSubDomains"),
            "{path}: {head}"
        );
    }

    // Plain http: a redirect to the same path under public_url, whatever Host the client says.
    let r = http::request(
        "GET",
        &format!("http://127.0.0.1:{redirect_port}/reports/view?page=5"),
        &[("Host", "evil.test")],
        b"",
    );
    assert_eq!(r.status, 301);
    assert_eq!(
        r.header("location").as_deref(),
        Some(format!("{base}/reports/view?page=5").as_str())
    );
}

fn make_cert(dir: &std::path::Path, cn: &str) {
    let st = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
        ])
        .arg(format!("/CN={cn}"))
        .arg("-keyout")
        .arg(dir.join("tls-key.pem.new"))
        .arg("-out")
        .arg(dir.join("tls-cert.pem.new"))
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(st.success());
    // Key first, then certificate, each by rename, as a certificate renewal tool does.
    std::fs::rename(dir.join("tls-key.pem.new"), dir.join("tls-key.pem")).unwrap();
    std::fs::rename(dir.join("tls-cert.pem.new"), dir.join("tls-cert.pem")).unwrap();
}

/// A TLS connection that trusts anything (the test only looks at which certificate it got).
fn tls_connect(port: u16) -> openssl::ssl::SslStream<TcpStream> {
    let mut b = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls()).unwrap();
    b.set_verify(openssl::ssl::SslVerifyMode::NONE);
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    b.build().connect("127.0.0.1", tcp).expect("TLS handshake")
}

fn subject_cn(s: &openssl::ssl::SslStream<TcpStream>) -> String {
    let cert = s.ssl().peer_certificate().expect("a certificate");
    let cn = cert
        .subject_name()
        .entries_by_nid(openssl::nid::Nid::COMMONNAME)
        .next()
        .expect("CN");
    String::from_utf8_lossy(cn.data().as_slice()).into_owned()
}

/// One keep-alive request on an open connection; the backend answers "backend ok".
fn keep_alive_get(s: &mut openssl::ssl::SslStream<TcpStream>, path: &str) -> String {
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("backend ok") {
        let n = s.read(&mut buf).expect("read");
        assert!(
            n > 0,
            "connection closed: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn sighup_swaps_the_certificate_and_open_connections_carry_on() {
    let h = Harness::start_with(Opts {
        tls: true,
        ..Default::default()
    });
    let mut open = tls_connect(h.gw_port);
    assert_eq!(subject_cn(&open), "tls");
    assert!(keep_alive_get(&mut open, "/public/1").starts_with("HTTP/1.1 200"));

    make_cert(h.dir.path(), "tls-renewed");
    h.signal_gateway("HUP");
    h.wait_for_log("TLS certificate");

    let fresh = tls_connect(h.gw_port);
    assert_eq!(
        subject_cn(&fresh),
        "tls-renewed",
        "new handshakes get the new certificate"
    );
    assert!(
        keep_alive_get(&mut open, "/public/2").starts_with("HTTP/1.1 200"),
        "the connection opened before the reload still works"
    );

    // A broken certificate file on reload keeps the working one.
    std::fs::write(h.dir.path().join("tls-cert.pem"), "not a certificate").unwrap();
    let before = h.gateway_log().len();
    h.signal_gateway("HUP");
    let new = h.wait_for_log_after(before, "reload refused");
    assert!(new.contains("tls-cert.pem"), "{new}");
    assert_eq!(subject_cn(&tls_connect(h.gw_port)), "tls-renewed");

    // A renewal that replaced the certificate but not its key (they no longer match), in the
    // same reload as a new public route: the whole reload is refused, the route included.
    let dir = h.dir.path();
    let keep_key = std::fs::read(dir.join("tls-key.pem")).unwrap();
    make_cert(dir, "tls-mismatched");
    std::fs::write(dir.join("tls-key.pem"), keep_key).unwrap();
    let text = std::fs::read_to_string(&h.config_path).unwrap();
    std::fs::write(
        &h.config_path,
        format!(
            "{text}\n[[routes]]\nname = \"extra\"\npath_prefix = \"/extra\"\naccess = \"public\"\nupstream = \"http://127.0.0.1:{}\"\n",
            h.backend.port
        ),
    )
    .unwrap();
    let before = h.gateway_log().len();
    h.signal_gateway("HUP");
    let new = h.wait_for_log_after(before, "certificate stay in use");
    assert!(!new.contains("applied"), "{new}");
    assert_eq!(subject_cn(&tls_connect(h.gw_port)), "tls-renewed");
    let mut s = tls_connect(h.gw_port);
    write!(
        s,
        "GET /extra/x HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/html\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut got = String::new();
    let _ = s.read_to_string(&mut got);
    assert!(
        got.starts_with("HTTP/1.1 302"),
        "the refused reload's public route is not in use: {got}"
    );
}

#[test]
fn h07_login_over_https_needs_only_the_samesite_none_state_cookie() {
    let h = Harness::start_with(Opts {
        tls: true,
        ..Default::default()
    });
    let base = format!("https://127.0.0.1:{}", h.gw_port);
    // The IdP's answer arrives as a cross-site POST: a browser sends only SameSite=None
    // cookies with it. Start two logins; the state cookie is all the first one keeps.
    let start = || {
        let head = curl_head(&[
            "--http1.1",
            "-H",
            "Accept: text/html",
            &format!("{base}/reports?id=7"),
        ]);
        assert!(head.starts_with("HTTP/1.1 302"), "{head}");
        let state = head
            .lines()
            .find_map(|l| {
                l.strip_prefix("set-cookie: ")
                    .or_else(|| l.strip_prefix("Set-Cookie: "))
            })
            .filter(|c| c.contains("SameSite=None") && c.contains("Secure"))
            .unwrap_or_else(|| panic!("a SameSite=None; Secure state cookie: {head}"))
            .split(';')
            .next()
            .unwrap()
            .to_string();
        let idp = header(&head, "location").unwrap().to_string();
        h.idp_next(json!({"name_id": "alice", "attributes": {"groups": ["users"]}}));
        let mut b = h.browser();
        let page = b.get(&idp).text();
        let value = |name: &str| {
            let key = format!("name=\"{name}\" value=\"");
            let s = page.find(&key).unwrap() + key.len();
            let e = page[s..].find('"').unwrap() + s;
            page[s..e]
                .replace("&#x27;", "'")
                .replace("&quot;", "\"")
                .replace("&amp;", "&")
        };
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("SAMLResponse", &value("SAMLResponse"))
            .append_pair("RelayState", &value("RelayState"))
            .finish();
        (state, form)
    };
    let (state, form) = start();
    let acs = format!("{base}/_saml/acs");
    let head = curl_head(&[
        "--http1.1",
        "-H",
        &format!("Cookie: {state}"),
        "--data",
        &form,
        &acs,
    ]);
    assert!(head.starts_with("HTTP/1.1 303"), "login completes: {head}");
    assert_eq!(
        header(&head, "location"),
        Some(format!("{base}/reports?id=7").as_str())
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("set-cookie: __host-samlgate_session="),
        "{head}"
    );

    // Without the state cookie (another browser replaying the form) the same binding refuses it.
    let (_, form) = start();
    let head = curl_head(&["--http1.1", "--data", &form, &acs]);
    assert!(
        head.starts_with("HTTP/1.1 400") || head.starts_with("HTTP/1.1 403"),
        "{head}"
    );
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("__host-samlgate_session="),
        "{head}"
    );
}
