//! systemd/samlgate.service as systemd itself reads it, and the readiness protocol the unit's
//! `Type=notify` relies on, spoken by the real binary. Needs /usr/bin/systemd-analyze (Debian
//! package `systemd`, installed by `.ci/install-deps --test`); no running systemd is needed.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The exposure `systemd-analyze security` gave the unit when it was last hardened
/// (systemd 252, Debian 12). A higher figure means a hardening line was lost; a newer systemd
/// that scores new settings may need this revisited, with the reason in the commit.
const MAX_EXPOSURE: f64 = 1.4;

fn unit_text() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/samlgate.service");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The unit, written to `dir` as samlgate.service with one change: `verify` checks that
/// ExecStart's and ExecStartPre's binary exists, and /usr/local/bin/samlgate is not installed
/// on a build machine, so that path (and only that path) becomes the binary cargo just built.
fn installable_unit(dir: &Path, text: &str) -> PathBuf {
    let bin = env!("CARGO_BIN_EXE_samlgate");
    assert!(
        !bin.contains(char::is_whitespace),
        "systemd would split the binary path {bin:?} at its whitespace"
    );
    assert!(text.contains("/usr/local/bin/samlgate "));
    let unit = dir.join("samlgate.service");
    std::fs::write(
        &unit,
        text.replace("/usr/local/bin/samlgate ", &format!("{bin} ")),
    )
    .unwrap();
    unit
}

fn analyze(args: &[&str], unit: &Path) -> (bool, String) {
    let out = Command::new("systemd-analyze")
        .arg("--no-pager")
        .args(args)
        .arg(unit)
        .output()
        .unwrap_or_else(|e| {
            panic!("systemd-analyze: {e} (install the `systemd` package: .ci/install-deps --test)")
        });
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn systemd_analyze_verify_finds_nothing_wrong_with_the_unit() {
    let dir = tempfile::tempdir().unwrap();
    let unit = installable_unit(dir.path(), &unit_text());
    let (ok, out) = analyze(&["verify"], &unit);
    eprintln!("systemd-analyze verify:\n{out}");
    assert!(ok, "{out}");
    // verify may grumble about the host's own units; none of it may be about ours.
    assert!(!out.contains("samlgate.service"), "{out}");

    // The check above can fail: a misspelt key is reported, naming our unit.
    let broken = installable_unit(
        dir.path(),
        &unit_text().replace("Type=notify", "Tpye=notify"),
    );
    let (_, out) = analyze(&["verify"], &broken);
    assert!(
        out.contains("samlgate.service") && out.contains("Tpye"),
        "{out}"
    );
}

#[test]
fn the_units_security_exposure_stays_where_it_was_measured() {
    let dir = tempfile::tempdir().unwrap();
    let unit = installable_unit(dir.path(), &unit_text());
    // --offline reads the file alone instead of asking a running systemd (there is none in CI).
    let (ok, out) = analyze(&["security", "--offline=true"], &unit);
    assert!(ok, "{out}");
    let prefix = "Overall exposure level for samlgate.service: ";
    let line = out
        .lines()
        .find_map(|l| l.split_once(prefix).map(|(_, rest)| rest.to_string()))
        .unwrap_or_else(|| panic!("no overall exposure line in:\n{out}"));
    let score: f64 = line
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("unreadable exposure {line:?}"));
    eprintln!(
        "systemd-analyze security: samlgate.service exposure {score} (at most {MAX_EXPOSURE})"
    );
    for l in out.lines().filter(|l| l.starts_with('✗')) {
        eprintln!("  {l}");
    }
    assert!(
        score <= MAX_EXPOSURE,
        "exposure {score} > {MAX_EXPOSURE}:\n{out}"
    );
}

/// Kills the gateway if the test fails before it stopped it.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The two gateway tests run one at a time: `free_port` hands out consecutive ports, so the
/// TLS test's port could otherwise be one of the four the demo was just promised.
static ONE_GATEWAY: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The first datagram with a line equal to `want`; fails early if the gateway has exited.
fn receive(
    sock: &UnixDatagram,
    want: &str,
    within: Duration,
    gw: &mut Running,
    log: &Path,
) -> String {
    let start = Instant::now();
    let mut buf = vec![0u8; 4096];
    loop {
        let left = within.checked_sub(start.elapsed()).unwrap_or_default();
        let exited = gw.0.try_wait().unwrap();
        // After STOPPING=1 the process may exit at once; the datagram is already queued.
        let gone = exited.is_some() && want != "STOPPING=1";
        assert!(
            !left.is_zero() && !gone,
            "no {want} within {within:?} (exit: {exited:?}); gateway log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        sock.set_read_timeout(Some(left.min(Duration::from_millis(200))))
            .unwrap();
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            if msg.lines().any(|l| l == want) {
                return msg;
            }
        }
    }
}

/// The gateway started with `args` and `$NOTIFY_SOCKET` bound in `dir`; its stderr in gateway.log.
fn start_notifying(dir: &Path, args: &[&std::ffi::OsStr]) -> (Running, UnixDatagram, PathBuf) {
    let socket = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&socket).unwrap();
    let log = dir.join("gateway.log");
    let child = Command::new(env!("CARGO_BIN_EXE_samlgate"))
        .args(args)
        .env("NOTIFY_SOCKET", &socket)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    (Running(child), notify, log)
}

/// READY=1 naming `port`, a connect that succeeds right after it, a SIGHUP reload reported as
/// RELOADING=1 then READY=1, then SIGTERM -> STOPPING=1 and
/// a clean exit.
fn ready_then_stopping(gw: &mut Running, notify: &UnixDatagram, log: &Path, port: u16, tls: bool) {
    let ready = receive(notify, "READY=1", Duration::from_secs(60), gw, log);
    assert!(
        ready.contains(&format!("STATUS=listening on 127.0.0.1:{port}")),
        "{ready:?}"
    );
    // READY=1 is a promise: the very first connect after it must succeed.
    if tls {
        // A whole handshake (curl -k: the certificate is for another name): a bare TCP connect
        // would itself put a handshake error into the log the TLS test inspects.
        let out = Command::new("curl")
            .args(["-sfk", "-o", "/dev/null"])
            .arg(format!("https://127.0.0.1:{port}/_saml/metadata"))
            .output()
            .expect("curl (installed by .ci/install-deps --test)");
        assert!(
            out.status.success(),
            "READY=1 before TLS is served: {out:?}"
        );
    } else {
        std::net::TcpStream::connect(("127.0.0.1", port)).expect("READY=1 before the port accepts");
    }

    // `systemctl reload`: RELOADING=1 with the monotonic timestamp systemd wants, then READY=1.
    let pid = gw.0.id().to_string();
    let hup = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    assert!(hup.success());
    let reloading = receive(notify, "RELOADING=1", Duration::from_secs(20), gw, log);
    let usec = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(usec.is_some_and(|u| u > 0), "{reloading:?}");
    let again = receive(notify, "READY=1", Duration::from_secs(20), gw, log);
    assert!(again.contains("STATUS=config reloaded"), "{again:?}");

    let kill = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(kill.success());
    receive(notify, "STOPPING=1", Duration::from_secs(20), gw, log);
    let start = Instant::now();
    let status = loop {
        if let Some(status) = gw.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "still running 30 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}

#[test]
fn the_gateway_reports_ready_once_it_accepts_connections_and_stopping_on_sigterm() {
    let _one = ONE_GATEWAY.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    // The demo takes four consecutive ports: gateway, IdP, backend, admin.
    let base = (0..50)
        .map(|_| common::free_port())
        .find(|p| {
            *p < 32000 && (1..4).all(|i| std::net::TcpListener::bind(("127.0.0.1", p + i)).is_ok())
        })
        .expect("four free ports");
    let data = dir.path().join("demo");
    let (mut gw, notify, log) = start_notifying(
        dir.path(),
        &[
            "demo".as_ref(),
            "--port".as_ref(),
            base.to_string().as_ref(),
            "--data-dir".as_ref(),
            data.as_os_str(),
        ],
    );
    ready_then_stopping(&mut gw, &notify, &log, base, false);
}

#[test]
fn over_tls_the_readiness_probe_completes_its_handshake_and_leaves_no_error_in_the_log() {
    let _one = ONE_GATEWAY.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
    std::fs::copy(
        conf.join("idp-metadata.example.xml"),
        dir.path().join("idp-metadata.example.xml"),
    )
    .unwrap();
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=gateway.example.test",
            "-keyout",
            "tls-key.pem",
            "-out",
            "tls-cert.pem",
        ])
        .current_dir(dir.path())
        .output()
        .expect("openssl (installed by .ci/install-deps --test)");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let (port, admin) = (common::free_port(), common::free_port());
    let example = std::fs::read_to_string(conf.join("samlgate.toml")).unwrap();
    let config = example
        .replace(
            "listen = \"127.0.0.1:8080\"",
            &format!("listen = \"127.0.0.1:{port}\"\ntls_cert = \"tls-cert.pem\"\ntls_key = \"tls-key.pem\""),
        )
        .replace(
            "public_url = \"http://127.0.0.1:8080\"",
            &format!("public_url = \"https://127.0.0.1:{port}\""),
        )
        .replace("grace_period_seconds = 10", "grace_period_seconds = 1")
        .replace("listen = \"127.0.0.1:9180\"", &format!("listen = \"127.0.0.1:{admin}\""));
    assert!(config.contains("tls_cert") && config.contains(&admin.to_string()));
    let path = dir.path().join("samlgate.toml");
    std::fs::write(&path, config).unwrap();

    let (mut gw, notify, log) = start_notifying(
        dir.path(),
        &["run".as_ref(), "--config".as_ref(), path.as_os_str()],
    );
    ready_then_stopping(&mut gw, &notify, &log, port, true);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains(&format!("https://127.0.0.1:{port}")),
        "{text}"
    );
    assert!(
        !text.contains("handshake error") && !text.contains(" ERROR "),
        "{text}"
    );
}
