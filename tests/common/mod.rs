//! Test harness: a real pysaml2 IdP (tests/idp/pysaml2_idp.py), the real gateway binary with a
//! temp config and redb file, and a real backend that records what it receives. Everything
//! listens on 127.0.0.1 only. A `Browser` plays the user with its own cookie jar.
#![allow(dead_code)]

pub mod http;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use http::{request, Response};

/// A free port on 127.0.0.1, chosen below the kernel's ephemeral range (32768 and up here):
/// a port handed out by `bind(0)` and released can be taken again at once by any outgoing
/// connection, before the server under test binds it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let seed = (std::process::id() as u16).wrapping_mul(7919) % 12000;
    let _ = NEXT.compare_exchange(0, 20000 + seed, Ordering::SeqCst, Ordering::SeqCst);
    loop {
        let mut p = NEXT.fetch_add(1, Ordering::SeqCst);
        if p >= 32000 {
            NEXT.store(20000, Ordering::SeqCst);
            p = 20000;
        }
        if TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

/// The Python that has pysaml2: `SAMLGATE_TEST_PYTHON`, else the venv the test script makes.
fn python() -> PathBuf {
    if let Ok(p) = std::env::var("SAMLGATE_TEST_PYTHON") {
        return p.into();
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-venv/bin/python");
    if venv.exists() {
        return venv;
    }
    "python3".into()
}

/// One request as the backend saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path_and_query: String,
    /// Every header line, lowercase name, in order, duplicates kept.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Seen {
    pub fn all(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n == &name.to_ascii_lowercase())
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }
    pub fn one(&self, name: &str) -> String {
        let all = self.all(name);
        assert_eq!(
            all.len(),
            1,
            "expected exactly one {name} header, got {all:?}"
        );
        all[0].clone()
    }
    /// Every header whose name, lowercased with `_` as `-`, starts with `x-auth`.
    pub fn identity_like(&self) -> Vec<(String, String)> {
        self.headers
            .iter()
            .filter(|(n, _)| {
                let n: String = n
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                    .collect();
                n.starts_with("x-auth")
            })
            .map(|(n, v)| (n.clone(), String::from_utf8_lossy(v).into_owned()))
            .collect()
    }
}

/// A backend on 127.0.0.1 that records every request and answers 200 "backend ok".
pub struct Backend {
    pub port: u16,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Backend {
    pub fn start() -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind backend");
        let port = listener.local_addr().expect("addr").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let rec = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let rec = rec.clone();
                std::thread::spawn(move || http::serve_recording(stream, rec));
            }
        });
        Backend { port, seen }
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    pub fn last(&self) -> Seen {
        self.requests()
            .last()
            .cloned()
            .expect("the backend received a request")
    }

    pub fn count(&self) -> usize {
        self.seen.lock().expect("lock").len()
    }
}

/// Key rollover (S11): the IdP metadata lists K1 and K2 and the IdP signs with K2.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Rollover {
    /// One key, K1.
    None,
    /// Metadata lists K2 (the signer) first, then K1.
    SignerFirst,
    /// Metadata lists K1 first, then K2 (the signer).
    SignerLast,
    /// As `SignerFirst`, and K2's KeyDescriptor has no `use` while K1's says "signing".
    SignerWithoutUse,
}

/// Gateway settings a test may change.
#[derive(Clone)]
pub struct Opts {
    pub default_groups: Vec<String>,
    pub reactivate_inactive: bool,
    pub sync_groups: bool,
    pub allow_sha1: bool,
    pub public_paths: Vec<String>,
    /// Key rollover: which of two keys in the IdP metadata signs.
    pub rollover: Rollover,
    /// Terminate TLS in the gateway (rustls) with a fresh self-signed certificate; the public
    /// URL is then https.
    pub tls: bool,
    /// TOML appended to the generated config (sections the harness does not write).
    pub extra_config: String,
    /// Lines added to the `[groups]` section.
    pub groups: String,
    /// Lines added to the `[idp]` section.
    pub idp: String,
    /// The public URL when it is not the gateway's own address (a TLS terminator in front).
    pub public_url: Option<String>,
    /// How many `[[sp.encryption]]` key pairs to make (sp-enc-0, sp-enc-1, ...).
    pub encryption_keys: usize,
    /// Lines added to the `[sp]` section.
    pub sp: String,
    /// Lines added to the `[server]` section.
    pub server: String,
    /// Give the SP a signing key pair (sp-sign-key.pem, sp-sign-cert.pem).
    pub signing_key: bool,
    /// A second IdP ("partner", for Host `partner.test`): the config then has two `[[idps]]`,
    /// the first named "corp".
    pub second_idp: bool,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            default_groups: vec!["everyone".into()],
            reactivate_inactive: true,
            sync_groups: true,
            allow_sha1: false,
            public_paths: vec!["/public".into()],
            rollover: Rollover::None,
            tls: false,
            extra_config: String::new(),
            groups: String::new(),
            idp: String::new(),
            public_url: None,
            encryption_keys: 0,
            sp: String::new(),
            server: String::new(),
            signing_key: false,
            second_idp: false,
        }
    }
}

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub idp_port: u16,
    pub gw_port: u16,
    pub admin_port: u16,
    pub backend: Backend,
    idp: Child,
    /// The second IdP and its port (`Opts::second_idp`).
    idp2: Option<(Child, u16)>,
    gateway: Option<Child>,
    pub config_path: PathBuf,
    pub store_path: PathBuf,
}

/// Start the pysaml2 IdP script on `port`; it writes its metadata to `meta` and reads the SP's
/// from `sp_meta`.
fn start_idp(
    port: u16,
    key: &Path,
    cert: &Path,
    meta: &Path,
    sp_meta: &Path,
    extra_cert: Option<&Path>,
    signer_last: bool,
) -> Child {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/idp/pysaml2_idp.py");
    let mut idp = Command::new(python())
        .arg(&script)
        .args(["--port", &port.to_string()])
        .arg("--key")
        .arg(key)
        .arg("--cert")
        .arg(cert)
        .arg("--metadata-out")
        .arg(meta)
        .arg("--sp-metadata")
        .arg(sp_meta)
        .args(
            extra_cert
                .iter()
                .flat_map(|c| [std::ffi::OsStr::new("--extra-cert"), c.as_os_str()]),
        )
        .args(signer_last.then_some("--signer-last"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the pysaml2 IdP (is pysaml2 installed? run the README's test command)");
    let mut line = String::new();
    BufReader::new(idp.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("IdP stdout");
    assert_eq!(line.trim(), "READY", "the pysaml2 IdP did not start");
    idp
}

pub fn gateway_bin() -> &'static str {
    env!("CARGO_BIN_EXE_samlgate")
}

impl Harness {
    pub fn start() -> Harness {
        Self::start_with(Opts::default())
    }

    pub fn start_with(opts: Opts) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let keypair = |name: &str| {
            let key = d.join(format!("{name}-key.pem"));
            let cert = d.join(format!("{name}-cert.pem"));
            let st = Command::new("openssl")
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                ])
                .arg(format!("/CN={name}"))
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&cert)
                .stderr(Stdio::null())
                .status()
                .expect("openssl");
            assert!(st.success(), "openssl could not make a key");
            (key, cert)
        };
        let (key, cert) = keypair("idp-k1");
        // With rollover, K2 signs and K1 is the extra (older) key in the metadata.
        let (key, cert, extra) = if opts.rollover != Rollover::None {
            let (k2, c2) = keypair("idp-k2");
            (k2, c2, Some(cert))
        } else {
            (key, cert, None)
        };

        let idp_port = free_port();
        let gw_port = free_port();
        let admin_port = free_port();
        let idp_meta = d.join("idp-metadata.xml");
        let sp_meta = d.join("sp-metadata.xml");
        let idp = start_idp(
            idp_port,
            &key,
            &cert,
            &idp_meta,
            &sp_meta,
            extra.as_deref(),
            opts.rollover == Rollover::SignerLast,
        );
        if opts.rollover == Rollover::SignerWithoutUse {
            // The signing key (listed first) loses its `use`; the other keeps use="signing".
            let meta = std::fs::read_to_string(&idp_meta).expect("IdP metadata");
            let edited = meta.replacen("KeyDescriptor use=\"signing\"", "KeyDescriptor", 1);
            assert_ne!(meta, edited, "metadata edit");
            std::fs::write(&idp_meta, edited).expect("write IdP metadata");
        }

        let idp2 = opts.second_idp.then(|| {
            let (k, c) = keypair("idp2");
            let port = free_port();
            let child = start_idp(
                port,
                &k,
                &c,
                &d.join("idp2-metadata.xml"),
                &sp_meta,
                None,
                false,
            );
            (child, port)
        });
        let idp_section = if opts.second_idp {
            format!(
                "[[idps]]\nname = \"corp\"\ndisplay_name = \"Corp IdP\"\nmetadata_file = \"idp-metadata.xml\"\nallow_sha1 = {}\n{}\n\n[[idps]]\nname = \"partner\"\ndisplay_name = \"Partner IdP\"\nhosts = [\"partner.test\"]\nmetadata_file = \"idp2-metadata.xml\"\n",
                opts.allow_sha1, opts.idp
            )
        } else {
            format!(
                "[idp]\nmetadata_file = \"idp-metadata.xml\"\nallow_sha1 = {}\n{}\n",
                opts.allow_sha1, opts.idp
            )
        };

        let tls_lines = if opts.tls {
            let (_, _) = keypair("tls");
            "tls_cert = \"tls-cert.pem\"\ntls_key = \"tls-key.pem\"\n"
        } else {
            ""
        };
        let scheme = if opts.tls { "https" } else { "http" };
        let mut encryption = String::new();
        if opts.signing_key {
            keypair("sp-sign");
            encryption.push_str(
                "signing_key = \"sp-sign-key.pem\"\nsigning_cert = \"sp-sign-cert.pem\"\n",
            );
        }
        for i in 0..opts.encryption_keys {
            keypair(&format!("sp-enc-{i}"));
            encryption.push_str(&format!(
                "[[sp.encryption]]\nkey = \"sp-enc-{i}-key.pem\"\ncert = \"sp-enc-{i}-cert.pem\"\n"
            ));
        }
        let backend = Backend::start();
        let store_path = d.join("samlgate.redb");
        let config_path = d.join("samlgate.toml");
        let list = |v: &[String]| {
            v.iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        std::fs::write(
            &config_path,
            format!(
                r#"[server]
listen = "127.0.0.1:{gw_port}"
public_url = "{public_url}"
{tls_lines}public_paths = [{public}]
grace_period_seconds = 1
{server_extra}

[upstream]
url = "http://127.0.0.1:{be}"

[sp]
{sp_extra}
{encryption}

[store]
path = "samlgate.redb"

{idp_section}

[provisioning]
default_groups = [{groups}]
reactivate_inactive = {react}
contact = "the IT help desk"

[groups]
sync = "{sync}"
{groups_extra}

[admin]
listen = "127.0.0.1:{admin_port}"
token_file = "admin.token"

{extra}
"#,
                public = list(&opts.public_paths),
                be = backend.port,
                groups = list(&opts.default_groups),
                react = opts.reactivate_inactive,
                sync = if opts.sync_groups { "full" } else { "off" },
                extra = opts.extra_config,
                groups_extra = opts.groups,
                sp_extra = opts.sp,
                server_extra = opts.server,
                public_url = opts
                    .public_url
                    .clone()
                    .unwrap_or_else(|| format!("{scheme}://127.0.0.1:{gw_port}")),
            ),
        )
        .expect("write config");

        let out = Command::new(gateway_bin())
            .args(["metadata", "--config"])
            .arg(&config_path)
            .output()
            .expect("samlgate metadata");
        assert!(
            out.status.success(),
            "samlgate metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(&sp_meta, &out.stdout).expect("write SP metadata");

        let mut h = Harness {
            dir,
            idp_port,
            gw_port,
            admin_port,
            backend,
            idp,
            idp2,
            gateway: None,
            config_path,
            store_path,
        };
        h.start_gateway();
        h
    }

    pub fn start_gateway(&mut self) {
        assert!(self.gateway.is_none());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("gateway.log"))
            .expect("log file");
        let child = Command::new(gateway_bin())
            .args(["run", "--config"])
            .arg(&self.config_path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start samlgate");
        self.gateway = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.gw_port)).is_err() {
            let exited = self
                .gateway
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                panic!(
                    "samlgate did not start on 127.0.0.1:{} ({exited:?}); its log:\n{}",
                    self.gw_port,
                    self.gateway_log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL the gateway: nothing gets a chance to flush, so what survives was committed.
    pub fn kill_gateway(&mut self) {
        if let Some(mut c) = self.gateway.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart_gateway(&mut self) {
        self.kill_gateway();
        self.start_gateway();
    }

    /// Send a signal (`HUP`, `TERM`, ...) to the running gateway.
    pub fn signal_gateway(&self, sig: &str) {
        let pid = self.gateway.as_ref().expect("gateway running").id();
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .expect("kill");
        assert!(st.success(), "kill -{sig} {pid}");
    }

    /// Wait up to `limit` for the gateway process to exit; its status, or `None` if it still runs.
    pub fn wait_gateway_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            let c = self.gateway.as_mut()?;
            if let Ok(Some(st)) = c.try_wait() {
                self.gateway = None;
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait until the gateway's log contains `needle` (reloads and the like are asynchronous).
    pub fn wait_for_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.gateway_log();
            if log.contains(needle) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "the gateway never logged {needle:?}; its log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait until the gateway's log, from byte `from` on, contains `needle`; that part of it.
    /// For a second reload whose message an earlier one already wrote.
    pub fn wait_for_log_after(&self, from: usize, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.gateway_log();
            let new = log.get(from..).unwrap_or("");
            if new.contains(needle) {
                return new.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "the gateway never logged {needle:?} after byte {from}; its log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The gateway's log so far (for asserting that details reach the log).
    pub fn gateway_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }

    /// Open the real redb file while the gateway is stopped.
    pub fn with_store<T>(&mut self, f: impl FnOnce(&samlgate::store::Store) -> T) -> T {
        let was_running = self.gateway.is_some();
        self.kill_gateway();
        let store = samlgate::store::Store::open(&self.store_path).expect("open store");
        let out = f(&store);
        store.close();
        if was_running {
            self.start_gateway();
        }
        out
    }

    /// Run `samlgate <args> --config <this harness's config>`: (success, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(gateway_bin())
            .args(args)
            .arg("--config")
            .arg(&self.config_path)
            .output()
            .expect("run samlgate");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `cli` that must succeed; returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.cli(args);
        assert!(ok, "samlgate {args:?} failed:\n{out}\n{err}");
        out
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.admin_port, path)
    }

    /// The admin token the gateway created at its first start.
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("admin.token"))
            .expect("admin token file")
            .trim()
            .to_string()
    }

    /// Rewrite the config file (the gateway reads it at its next start).
    pub fn edit_config(&self, from: &str, to: &str) {
        let text = std::fs::read_to_string(&self.config_path).expect("config");
        let edited = text.replacen(from, to, 1);
        assert_ne!(text, edited, "config edit {from:?}");
        std::fs::write(&self.config_path, edited).expect("write config");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.gw_port, path)
    }

    pub fn idp_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.idp_port, path)
    }

    pub fn idp_entity(&self) -> String {
        self.idp_url("/idp")
    }

    /// The second IdP's URL (`Opts::second_idp`).
    pub fn idp2_url(&self, path: &str) -> String {
        let port = self.idp2.as_ref().expect("second_idp").1;
        format!("http://127.0.0.1:{port}{path}")
    }

    pub fn idp2_next(&self, settings: serde_json::Value) {
        let r = request(
            "POST",
            &self.idp2_url("/control/next"),
            &[("Content-Type", "application/json")],
            settings.to_string().as_bytes(),
        );
        assert_eq!(r.status, 200, "IdP control: {}", r.text());
    }

    /// Set what the IdP puts in its next responses (see tests/idp/pysaml2_idp.py).
    pub fn idp_next(&self, settings: serde_json::Value) {
        let r = request(
            "POST",
            &self.idp_url("/control/next"),
            &[("Content-Type", "application/json")],
            settings.to_string().as_bytes(),
        );
        assert_eq!(r.status, 200, "IdP control: {}", r.text());
    }

    pub fn browser(&self) -> Browser {
        Self::browser_only()
    }

    /// A browser for tests that run no harness (the demo).
    pub fn browser_only() -> Browser {
        Browser {
            jar: HashMap::new(),
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.kill_gateway();
        let _ = self.idp.kill();
        let _ = self.idp.wait();
        if let Some((c, _)) = &mut self.idp2 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A browser: follows what a browser follows, keeps cookies (name -> (value, path)).
pub struct Browser {
    pub jar: HashMap<String, (String, String)>,
}

/// The auto-POST form an IdP answers with.
#[derive(Debug, Clone)]
pub struct IdpForm {
    pub action: String,
    pub saml_response: String,
    pub relay_state: Option<String>,
}

fn html_unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

fn input_value(html: &str, name: &str) -> Option<String> {
    let key = format!("name=\"{name}\" value=\"");
    let start = html.find(&key)? + key.len();
    let end = html[start..].find('"')? + start;
    Some(html_unescape(&html[start..end]))
}

impl Browser {
    fn cookie_header(&self, path: &str) -> Option<String> {
        let v: Vec<String> = self
            .jar
            .iter()
            .filter(|(_, (_, p))| path.starts_with(p.as_str()))
            .map(|(n, (v, _))| format!("{n}={v}"))
            .collect();
        (!v.is_empty()).then(|| v.join("; "))
    }

    fn keep_cookies(&mut self, r: &Response) {
        for sc in r.all("set-cookie") {
            let mut parts = sc.split(';');
            let Some((name, value)) = parts.next().and_then(|nv| nv.split_once('=')) else {
                continue;
            };
            let mut path = "/".to_string();
            let mut delete = false;
            for attr in parts {
                let attr = attr.trim();
                if let Some(p) = attr.strip_prefix("Path=") {
                    path = p.to_string();
                }
                if attr == "Max-Age=0" {
                    delete = true;
                }
            }
            if delete {
                self.jar.remove(name.trim());
            } else {
                self.jar
                    .insert(name.trim().to_string(), (value.to_string(), path));
            }
        }
    }

    /// One request with this browser's cookies (127.0.0.1 only, so no domain logic).
    pub fn send(
        &mut self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        let path = url
            .splitn(4, '/')
            .nth(3)
            .map(|p| format!("/{p}"))
            .unwrap_or_else(|| "/".into());
        let mut h: Vec<(&str, &str)> = headers.to_vec();
        let cookie = self.cookie_header(&path);
        if let Some(c) = &cookie {
            h.push(("Cookie", c));
        }
        let r = request(method, url, &h, body);
        self.keep_cookies(&r);
        r
    }

    pub fn get(&mut self, url: &str) -> Response {
        self.send("GET", url, &[("Accept", "text/html")], b"")
    }

    /// Visit a protected URL while logged out and come back with the IdP's form.
    pub fn visit_to_idp(&mut self, url: &str) -> (Response, IdpForm) {
        let r = self.get(url);
        assert_eq!(
            r.status,
            302,
            "expected a redirect to the IdP, got {} {}",
            r.status,
            r.text()
        );
        let visit_to_idp = r.header("location").expect("Location");
        let page = self.get(&visit_to_idp);
        assert_eq!(
            page.status,
            200,
            "IdP answered {}: {}",
            page.status,
            page.text()
        );
        let html = page.text();
        let key = "action=\"";
        let start = html.find(key).expect("form action") + key.len();
        let end = html[start..].find('"').expect("action end") + start;
        let form = IdpForm {
            action: html_unescape(&html[start..end]),
            saml_response: input_value(&html, "SAMLResponse").expect("SAMLResponse input"),
            relay_state: input_value(&html, "RelayState"),
        };
        (r, form)
    }

    /// POST a form to the ACS as the IdP's page would.
    pub fn post_acs(
        &mut self,
        action: &str,
        saml_response: Option<&str>,
        relay_state: Option<&str>,
    ) -> Response {
        let mut ser = form_urlencoded::Serializer::new(String::new());
        if let Some(s) = saml_response {
            ser.append_pair("SAMLResponse", s);
        }
        if let Some(r) = relay_state {
            ser.append_pair("RelayState", r);
        }
        let body = ser.finish();
        self.send(
            "POST",
            action,
            &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Accept", "text/html"),
            ],
            body.as_bytes(),
        )
    }

    /// `post_form` for a gateway that may be killed mid-way: `None` if no answer came.
    pub fn post_acs_result(&mut self, form: &IdpForm) -> Option<Response> {
        let mut ser = form_urlencoded::Serializer::new(String::new());
        ser.append_pair("SAMLResponse", &form.saml_response);
        if let Some(r) = &form.relay_state {
            ser.append_pair("RelayState", r);
        }
        let body = ser.finish();
        let cookie = self.cookie_header("/_saml/acs");
        let mut h = vec![("Content-Type", "application/x-www-form-urlencoded")];
        if let Some(c) = &cookie {
            h.push(("Cookie", c));
        }
        http::try_request("POST", &form.action, &h, body.as_bytes())
    }

    /// POST the IdP's form to the ACS unchanged, as its auto-submit would.
    pub fn post_form(&mut self, form: &IdpForm) -> Response {
        self.post_acs(
            &form.action,
            Some(&form.saml_response),
            form.relay_state.as_deref(),
        )
    }

    /// The whole login: protected URL -> IdP -> ACS -> 303 -> the URL again. Returns the ACS
    /// answer and the final answer.
    pub fn login(&mut self, url: &str) -> (Response, Response) {
        let (_, form) = self.visit_to_idp(url);
        let acs = self.post_acs(
            &form.action,
            Some(&form.saml_response),
            form.relay_state.as_deref(),
        );
        assert_eq!(
            acs.status,
            303,
            "ACS answered {}: {}",
            acs.status,
            acs.text()
        );
        let next = acs.header("location").expect("Location after login");
        let last = self.get(&next);
        (acs, last)
    }
}
