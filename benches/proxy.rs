//! samlgate against nginx as a plain reverse proxy, in the same wrk run.
//!
//! `cargo bench --bench proxy` (needs `nginx` and `wrk`: `apt-get install nginx-light wrk`).
//! One nginx serves a small static answer (the backend). In front of it, on equal terms (one
//! worker each, keep-alive to the backend): a second nginx as a plain reverse proxy, and
//! samlgate with a logged-in session. wrk drives each in turn, alternating rounds so that
//! noise on a shared machine hits both; figures are printed as ratios measured in this run.
//! Everything listens on 127.0.0.1.

use std::io::Read;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use samlgate::demo::DevIdp;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_port(port: u16) {
    let t = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "port {port} never opened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Stops a child with SIGTERM (nginx's master then stops its workers; SIGKILL would orphan
/// them) and reaps it.
struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

fn nginx(dir: &Path, name: &str, server: &str) -> Kill {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    let conf = format!(
        "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
events {{ worker_connections 4096; }}\nhttp {{\n access_log off;\n client_body_temp_path {d};\n\
 proxy_temp_path {d};\n fastcgi_temp_path {d};\n uwsgi_temp_path {d};\n scgi_temp_path {d};\n{server}\n}}\n",
        d = d.display()
    );
    std::fs::write(d.join("nginx.conf"), conf).unwrap();
    Kill(
        Command::new("nginx")
            .arg("-c")
            .arg(d.join("nginx.conf"))
            .arg("-p")
            .arg(&d)
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx"),
    )
}

fn http(port: u16, req: String) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::io::Write::write_all(&mut s, req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn header<'a>(resp: &'a str, name: &str) -> &'a str {
    resp.lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then_some(v.trim())
        })
        .unwrap_or_else(|| panic!("no {name} in {resp}"))
}

/// Log in through the gateway with the in-process development IdP; returns the cookie.
fn login(gw: u16, idp: &DevIdp) -> String {
    let r = http(gw, format!("GET / HTTP/1.1\r\nHost: 127.0.0.1:{gw}\r\nAccept: text/html\r\nConnection: close\r\n\r\n"));
    let loc = header(&r, "location");
    let state = header(&r, "set-cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let (req, relay_state) = samlgate::demo::decode_redirect(loc).unwrap();
    let acs = req.assertion_consumer_service_url.clone().unwrap();
    let aud = req.issuer.clone().unwrap().value.unwrap();
    let attrs = vec![("groups".to_string(), "bench".to_string())];
    let signed = idp
        .signed_response(&req.id, &acs, &aud, "bench-user", &attrs)
        .unwrap();
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair(
            "SAMLResponse",
            &base64::engine::general_purpose::STANDARD.encode(signed),
        )
        .append_pair("RelayState", &relay_state.unwrap())
        .finish();
    let r = http(gw, format!(
        "POST /_saml/acs HTTP/1.1\r\nHost: 127.0.0.1:{gw}\r\nCookie: {state}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    assert!(r.starts_with("HTTP/1.1 303"), "login failed: {r}");
    header(&r, "set-cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

struct Run {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
}

fn wrk(port: u16, path: &str, cookie: Option<&str>, conns: u32, secs: u32) -> Run {
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t1",
        &format!("-c{conns}"),
        &format!("-d{secs}s"),
        "--latency",
    ]);
    if let Some(c) = cookie {
        cmd.args(["-H", &format!("Cookie: {c}")]);
    }
    let out = cmd
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect("wrk");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!text.contains("Non-2xx"), "errors in the run:\n{text}");
    let num = |prefix: &str| -> &str {
        text.lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
    };
    let us = |v: &str| -> f64 {
        let (n, mult) = if let Some(n) = v.strip_suffix("us") {
            (n, 1.0)
        } else if let Some(n) = v.strip_suffix("ms") {
            (n, 1000.0)
        } else if let Some(n) = v.strip_suffix('s') {
            (n, 1_000_000.0)
        } else {
            (v, 1.0)
        };
        n.parse::<f64>().unwrap() * mult
    };
    Run {
        rps: num("Requests/sec:").parse().unwrap(),
        p50_us: us(num("50%")),
        p99_us: us(num("99%")),
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo bench` passes --bench; `cargo test --all-targets` does not, and a debug
        // build under test is nothing to measure.
        println!("proxy bench: measured only by `cargo bench --bench proxy`");
        return;
    }
    for tool in ["nginx", "wrk"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| !o.status.success())
            .unwrap_or(true)
        {
            eprintln!(
                "proxy bench skipped: `{tool}` is not installed (apt-get install nginx-light wrk)"
            );
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let (backend, plain, gw) = (free_port(), free_port(), free_port());
    let _be = nginx(
        dir.path(),
        "backend",
        &format!(
        " server {{ listen 127.0.0.1:{backend}; location / {{ return 200 \"backend ok\\n\"; }} }}"
    ),
    );
    let _px = nginx(dir.path(), "proxy", &format!(
        " upstream be {{ server 127.0.0.1:{backend}; keepalive 64; }}\n server {{ listen 127.0.0.1:{plain}; location / {{ proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }}"
    ));

    let idp = DevIdp::generate("http://127.0.0.1:9").unwrap();
    std::fs::write(dir.path().join("idp.xml"), idp.metadata_xml()).unwrap();
    let conf = dir.path().join("samlgate.toml");
    std::fs::write(&conf, format!(
        "[server]\nlisten = \"127.0.0.1:{gw}\"\npublic_url = \"http://127.0.0.1:{gw}\"\nthreads = 1\ngrace_period_seconds = 1\n\
public_paths = [\"/public\"]\n[upstream]\nurl = \"http://127.0.0.1:{backend}\"\n[store]\npath = \"bench.redb\"\n[idp]\nmetadata_file = \"idp.xml\"\n"
    )).unwrap();
    let _gw = Kill(
        Command::new(env!("CARGO_BIN_EXE_samlgate"))
            .args(["run", "--config"])
            .arg(&conf)
            .env("RUST_LOG", "warn")
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    for p in [backend, plain, gw] {
        wait_port(p);
    }
    let cookie = login(gw, &idp);
    // wrk counts redirects as success: make sure both paths really reach the backend.
    for (path, c) in [("/app/page", cookie.as_str()), ("/public/page", "")] {
        let r = http(
            gw,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nCookie: {c}\r\nConnection: close\r\n\r\n"),
        );
        assert!(
            r.starts_with("HTTP/1.1 200") && r.contains("backend ok"),
            "{path}: {r}"
        );
    }

    let rounds = 3;
    println!("wrk -t1 -c50 -d5s, {rounds} alternating rounds (throughput); -c1 (latency)");
    let (mut direct_rps, mut nginx_rps, mut gw_rps, mut public_rps) = (0.0, 0.0, 0.0, 0.0);
    let app = "/app/page";
    for _ in 0..rounds {
        direct_rps += wrk(backend, app, None, 50, 5).rps;
        nginx_rps += wrk(plain, app, None, 50, 5).rps;
        gw_rps += wrk(gw, app, Some(&cookie), 50, 5).rps;
        public_rps += wrk(gw, "/public/page", None, 50, 5).rps;
    }
    let r = rounds as f64;
    let (direct_rps, nginx_rps, gw_rps, public_rps) =
        (direct_rps / r, nginx_rps / r, gw_rps / r, public_rps / r);
    let d = wrk(backend, app, None, 1, 5);
    let n = wrk(plain, app, None, 1, 5);
    let g = wrk(gw, app, Some(&cookie), 1, 5);
    println!("throughput req/s: backend direct {direct_rps:.0}, nginx proxy {nginx_rps:.0}, samlgate logged-in {gw_rps:.0}, samlgate public path {public_rps:.0}");
    println!(
        "samlgate / nginx throughput: {:.2}x   (target >= 0.9x)",
        gw_rps / nginx_rps
    );
    println!("latency at 1 connection, p50 / p99 us: direct {:.0} / {:.0}, nginx {:.0} / {:.0}, samlgate {:.0} / {:.0}",
        d.p50_us, d.p99_us, n.p50_us, n.p99_us, g.p50_us, g.p99_us);
    println!(
        "samlgate added p99 vs direct: {:.0} us   (target < 200 us); nginx added: {:.0} us",
        g.p99_us - d.p99_us,
        n.p99_us - d.p99_us
    );
}
