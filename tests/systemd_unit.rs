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

fn receive(sock: &UnixDatagram, want: &str, within: Duration, log: &Path) -> String {
    let start = Instant::now();
    let mut buf = vec![0u8; 4096];
    loop {
        let left = within.checked_sub(start.elapsed()).unwrap_or_default();
        assert!(
            !left.is_zero(),
            "no {want} within {within:?}; gateway log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        sock.set_read_timeout(Some(left)).unwrap();
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            if msg.lines().any(|l| l == want) {
                return msg;
            }
        }
    }
}

#[test]
fn the_gateway_reports_ready_once_it_accepts_connections_and_stopping_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&socket).unwrap();
    // The demo takes four consecutive ports: gateway, IdP, backend, admin.
    let base = (0..50)
        .map(|_| common::free_port())
        .find(|p| {
            *p < 32000 && (1..4).all(|i| std::net::TcpListener::bind(("127.0.0.1", p + i)).is_ok())
        })
        .expect("four free ports");
    let log = dir.path().join("gateway.log");
    let child = Command::new(env!("CARGO_BIN_EXE_samlgate"))
        .args(["demo", "--port", &base.to_string(), "--data-dir"])
        .arg(dir.path().join("demo"))
        .env("NOTIFY_SOCKET", &socket)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut gw = Running(child);

    let ready = receive(&notify, "READY=1", Duration::from_secs(60), &log);
    assert!(
        ready.contains(&format!("STATUS=listening on 127.0.0.1:{base}")),
        "{ready:?}"
    );
    // READY=1 is a promise: the very first connect after it must succeed.
    std::net::TcpStream::connect(("127.0.0.1", base)).expect("READY=1 before the port accepts");

    let pid = gw.0.id().to_string();
    let kill = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(kill.success());
    receive(&notify, "STOPPING=1", Duration::from_secs(20), &log);
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
