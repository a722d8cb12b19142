//! IdP metadata from an https URL (served by `openssl s_server -WWW` on 127.0.0.1), refreshed
//! with a last good copy on disk; and IdP certificates given in the config.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, Harness, Opts};
use serde_json::json;

struct Https {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Https {
    /// A self-signed server certificate for 127.0.0.1, then `openssl s_server -WWW` serving
    /// the files of a fresh directory.
    fn start(dir: tempfile::TempDir, port: u16) -> Https {
        let d = dir.path();
        if !d.join("tls-cert.pem").exists() {
            let st = Command::new("openssl")
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                ])
                .args(["-subj", "/CN=127.0.0.1"])
                .args(["-addext", "subjectAltName=IP:127.0.0.1"])
                .args(["-addext", "basicConstraints=critical,CA:FALSE"])
                .args(["-addext", "extendedKeyUsage=serverAuth"])
                .arg("-keyout")
                .arg(d.join("tls-key.pem"))
                .arg("-out")
                .arg(d.join("tls-cert.pem"))
                .stderr(Stdio::null())
                .status()
                .expect("openssl");
            assert!(st.success());
        }
        let child = Command::new("openssl")
            .args(["s_server", "-WWW", "-quiet", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-cert", "tls-cert.pem", "-key", "tls-key.pem"])
            .current_dir(d)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_server");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "s_server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Https { child, dir, port }
    }

    fn serve(&self, text: &str) {
        let tmp = self.dir.path().join("served.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(tmp, self.dir.path().join("served.xml")).unwrap();
    }

    fn stop(mut self) -> (tempfile::TempDir, u16) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        (self.dir, self.port)
    }
}

/// Wait until the gateway's log has `what` at least `times` times.
fn wait_for_log(h: &Harness, what: &str, times: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while h.gateway_log().matches(what).count() < times {
        assert!(
            Instant::now() < deadline,
            "no {what:?} in the log:\n{}",
            h.gateway_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn login_works(h: &Harness, name: &str) -> bool {
    h.idp_next(json!({"name_id": name}));
    let mut b = h.browser();
    let (_, form) = b.visit_to_idp(&h.url("/"));
    b.post_form(&form).status == 303
}

#[test]
fn metadata_from_a_url_is_refreshed_and_a_bad_copy_never_replaces_a_good_one() {
    let https = Https::start(tempfile::tempdir().unwrap(), free_port());
    let url = format!("https://127.0.0.1:{}/served.xml", https.port);
    let ca = https.dir.path().join("tls-cert.pem");
    let mut h = Harness::start_with(Opts {
        idp: format!(
            "metadata_url = \"{url}\"\nmetadata_ca_file = {:?}\nmetadata_refresh_seconds = 5",
            ca.display().to_string()
        ),
        ..Opts::default()
    });
    // Nothing served yet: the gateway started from the file, and said so.
    wait_for_log(&h, "starting from the last good copy", 1);
    assert!(login_works(&h, "alice"));
    let genuine = std::fs::read_to_string(h.dir.path().join("idp-metadata.xml")).unwrap();

    // Garbage, another entity, an expired document: each refused, the good copy stays.
    let expired = genuine.replacen(
        "<md:EntityDescriptor ",
        "<md:EntityDescriptor validUntil=\"2020-01-01T00:00:00Z\" ",
        1,
    );
    assert_ne!(expired, genuine);
    let other = genuine.replace(&h.idp_entity(), "http://127.0.0.1:9/other-idp");
    for (i, (served, says)) in [
        ("<md:EntityDescriptor", "not usable"),
        (
            other.as_str(),
            "names entity `http://127.0.0.1:9/other-idp`",
        ),
        (expired.as_str(), "expired"),
    ]
    .into_iter()
    .enumerate()
    {
        https.serve(served);
        wait_for_log(&h, "the last good copy stays in use", i + 1);
        assert!(
            h.gateway_log().contains(says),
            "{says}: {}",
            h.gateway_log()
        );
        assert!(login_works(&h, "alice"), "still the good copy");
        assert_eq!(
            std::fs::read_to_string(h.dir.path().join("idp-metadata.xml")).unwrap(),
            genuine,
            "the copy on disk is untouched"
        );
    }

    // A rollover to a key the IdP does not sign with: put in use, logged, saved.
    let other_key = {
        let d = h.dir.path();
        let st = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=k2"])
            .arg("-keyout")
            .arg(d.join("k2-key.pem"))
            .arg("-out")
            .arg(d.join("k2-cert.pem"))
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
        let pem = std::fs::read_to_string(d.join("k2-cert.pem")).unwrap();
        pem.lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<String>()
    };
    let start = genuine.find("<ds:X509Certificate>").unwrap() + "<ds:X509Certificate>".len();
    let end = genuine[start..].find('<').unwrap() + start;
    let rolled = format!("{}{}{}", &genuine[..start], other_key, &genuine[end..]);
    https.serve(&rolled);
    wait_for_log(&h, "changed and is now in use", 1);
    let log = h.gateway_log();
    assert!(
        log.contains("signing key added") && log.contains("signing key removed"),
        "{log}"
    );
    assert!(
        !login_works(&h, "alice"),
        "the IdP's old key is no longer trusted"
    );
    assert_eq!(
        std::fs::read_to_string(h.dir.path().join("idp-metadata.xml")).unwrap(),
        rolled,
        "the new copy is on disk"
    );

    // The URL goes away: a restart runs from the last good copy.
    let (dir, port) = https.stop();
    h.restart_gateway();
    wait_for_log(&h, "starting from the last good copy", 2);
    assert!(!login_works(&h, "alice"), "started from the rolled copy");

    // And back: the genuine document is fetched again and trusted.
    let https = Https::start(dir, port);
    https.serve(&genuine);
    wait_for_log(&h, "changed and is now in use", 2);
    assert!(login_works(&h, "alice"));
    https.stop();
}

#[test]
fn idp_certificates_can_be_given_in_the_config_as_pem_or_bare_base64() {
    let mut h = Harness::start();
    let meta_path = h.dir.path().join("idp-metadata.xml");
    let meta = std::fs::read_to_string(&meta_path).unwrap();
    // The metadata loses its keys; the config supplies the certificate instead.
    let start = meta.find("<md:KeyDescriptor").unwrap();
    let end = meta.rfind("</md:KeyDescriptor>").unwrap() + "</md:KeyDescriptor>".len();
    std::fs::write(&meta_path, format!("{}{}", &meta[..start], &meta[end..])).unwrap();
    let pem = std::fs::read_to_string(h.dir.path().join("idp-k1-cert.pem")).unwrap();
    let bare: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();

    for (i, form) in [format!("{pem:?}"), format!("{bare:?}")]
        .into_iter()
        .enumerate()
    {
        let config = std::fs::read_to_string(&h.config_path).unwrap();
        let config = match config.find("certificates = ") {
            Some(at) => {
                let line_end = config[at..].find('\n').unwrap() + at;
                format!(
                    "{}certificates = [{form}]{}",
                    &config[..at],
                    &config[line_end..]
                )
            }
            None => config.replacen("[idp]\n", &format!("[idp]\ncertificates = [{form}]\n"), 1),
        };
        std::fs::write(&h.config_path, config).unwrap();
        h.restart_gateway();
        assert!(login_works(&h, &format!("user{i}")), "form {i}");
    }

    // Not a certificate: the start fails naming the key.
    h.edit_config("certificates = [", "certificates = [\"bm90IGEgY2VydA==\", ");
    h.kill_gateway();
    let out = Command::new(common::gateway_bin())
        .args(["check", "--config"])
        .arg(&h.config_path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("idp.certificates") && err.contains("entry 1"),
        "{err}"
    );
}
