//! The two paths the targets are about, measured in-process on a real redb file:
//! - `logged_in_request`: cookie -> session (moka hit) -> strip spoofed headers -> inject
//!   identity headers into the upstream request. No disk, no global lock.
//! - `acs_login`: a full ACS: XML-DSig verify (samael + libxmlsec1) -> replay record ->
//!   provision the user -> create the session, durably committed. Run one at a time and 64 at
//!   a time, where group commit lets logins share fsyncs.
//!
//! `cargo bench --bench paths`; figures are per iteration, and per login for the batch.

use std::sync::Arc;

use base64::Engine as _;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use pingora::http::RequestHeader;

use samlgate::config::Config;
use samlgate::demo::DevIdp;
use samlgate::login::Logins;
use samlgate::proxy::{inject, now, sanitize};
use samlgate::saml::ServiceProvider;
use samlgate::session::Sessions;
use samlgate::store::Store;

struct Rig {
    _dir: tempfile::TempDir,
    cfg: Config,
    idp: DevIdp,
    sessions: Arc<Sessions>,
    logins: Arc<Logins>,
}

fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let idp = DevIdp::generate("http://127.0.0.1:9").unwrap();
    std::fs::write(dir.path().join("idp.xml"), idp.metadata_xml()).unwrap();
    let path = dir.path().join("bench.toml");
    let text = r#"
[server]
public_url = "https://app.example.test"
[upstream]
url = "http://127.0.0.1:3000"
[store]
path = "bench.redb"
[idp]
metadata_file = "idp.xml"
[provisioning]
default_groups = ["everyone"]
"#;
    let cfg = Config::parse(&path, text).unwrap();
    let sp = ServiceProvider::new(&cfg, &cfg.idps[0]).unwrap();
    let store = Store::open(&cfg.store_path).unwrap();
    let sessions = Arc::new(Sessions::new(store.clone(), &cfg.session));
    let logins = Arc::new(Logins::new(
        &cfg,
        vec![sp],
        store.clone(),
        sessions.clone(),
        Default::default(),
    ));
    Rig {
        _dir: dir,
        cfg,
        idp,
        sessions,
        logins,
    }
}

/// Start a login the way a browser would, and have the IdP answer it.
struct Answer {
    saml_response: String,
    relay_state: String,
    state_cookie: String,
}

fn answer(rig: &Rig, user: &str) -> Answer {
    let start = rig.logins.start(0, "/", None).unwrap();
    let (req, relay_state) = samlgate::demo::decode_redirect(&start.idp_url).unwrap();
    let attrs = vec![
        ("mail".to_string(), format!("{user}@corp.test")),
        ("displayName".to_string(), format!("User {user}")),
        ("groups".to_string(), "eng".to_string()),
        ("groups".to_string(), "staff".to_string()),
    ];
    let signed = rig
        .idp
        .signed_response(
            &req.id,
            &rig.cfg.sp.acs_url,
            &rig.cfg.sp.entity_id,
            user,
            &attrs,
        )
        .unwrap();
    Answer {
        saml_response: base64::engine::general_purpose::STANDARD.encode(signed),
        relay_state: relay_state.unwrap(),
        state_cookie: start.new_state_cookie.unwrap(),
    }
}

fn finish(rig: &Rig, rt: &tokio::runtime::Runtime, a: Answer) -> String {
    rt.block_on(rig.logins.finish(
        Some(&a.saml_response),
        Some(&a.relay_state),
        Some(&a.state_cookie),
        None,
        now(),
    ))
    .unwrap()
    .session_token
    .unwrap()
}

fn benches(c: &mut Criterion) {
    let rig = rig();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // --- a logged-in request ---
    let token = finish(&rig, &rt, answer(&rig, "alice"));
    let mut template = RequestHeader::build("GET", b"/app/page?x=1", None).unwrap();
    template.insert_header("Host", "app.example.test").unwrap();
    template.insert_header("Accept", "text/html").unwrap();
    template.insert_header("User-Agent", "bench/1.0").unwrap();
    template
        .insert_header(
            "Cookie",
            format!("theme=dark; {}={token}", rig.cfg.session.cookie_name),
        )
        .unwrap();
    template.insert_header("X-Auth-User", "admin").unwrap();
    // The same work as a logged-in request through the proxy: cookie, session cache, strip,
    // route policy, identity headers.
    c.bench_function("logged_in_request", |b| {
        b.iter_batched_ref(
            || template.clone(),
            |req| {
                let token = sanitize::cookie(req, &rig.cfg.session.cookie_name).unwrap();
                let live = rig.sessions.lookup(token, now()).unwrap();
                sanitize::strip(req, &rig.cfg);
                let route = &rig.cfg.routes[0];
                let access =
                    samlgate::proxy::policy::check(&route.name, &route.access, &live.groups);
                assert!(access.is_ok());
                let headers = inject::prepare(&live, &route.headers, None, None).unwrap();
                inject::apply(req, &headers);
            },
            BatchSize::SmallInput,
        )
    });

    // --- full logins ---
    let mut n = 0u64;
    let mut next_user = || {
        n += 1;
        format!("user{n}")
    };
    let mut g = c.benchmark_group("acs_login");
    g.sample_size(20);
    g.throughput(Throughput::Elements(1));
    g.bench_function("one_at_a_time", |b| {
        b.iter_batched(
            || answer(&rig, &next_user()),
            |a| finish(&rig, &rt, a),
            BatchSize::SmallInput,
        )
    });
    const CONCURRENT: usize = 64;
    g.throughput(Throughput::Elements(CONCURRENT as u64));
    g.bench_function("64_concurrent", |b| {
        b.iter_batched(
            || {
                (0..CONCURRENT)
                    .map(|_| answer(&rig, &next_user()))
                    .collect::<Vec<_>>()
            },
            |answers| {
                rt.block_on(async {
                    let tasks: Vec<_> = answers
                        .into_iter()
                        .map(|a| {
                            let logins = rig.logins.clone();
                            tokio::spawn(async move {
                                logins
                                    .finish(
                                        Some(&a.saml_response),
                                        Some(&a.relay_state),
                                        Some(&a.state_cookie),
                                        None,
                                        now(),
                                    )
                                    .await
                                    .map(|_| ())
                                    .map_err(|e| e.to_string())
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.unwrap().unwrap();
                    }
                })
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(paths, benches);
criterion_main!(paths);
