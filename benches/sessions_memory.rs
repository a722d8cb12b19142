//! Resident memory of 100,000 live sessions (target: under 150 MB for the whole process).
//!
//! `cargo bench --bench sessions_memory`: writes 100,000 users and sessions to a real redb
//! file, puts every session in the cache as a login would, looks each one up once, and prints
//! the process's resident memory before and after, from /proc/self/status.

use samlgate::config::SessionConfig;
use samlgate::session::{new_token, Sessions};
use samlgate::store::{GroupSource, Membership, Store, User, UserStatus};

const SESSIONS: u64 = 100_000;

/// The allocator the gateway binary runs with (src/main.rs): RSS depends on it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("sessions_memory: measured only by `cargo bench --bench sessions_memory`");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("mem.redb")).unwrap();
    let cfg = SessionConfig {
        cookie_name: "s".into(),
        state_cookie_name: "s_state".into(),
        idle_timeout: std::time::Duration::from_secs(3600),
        absolute_timeout: std::time::Duration::from_secs(8 * 3600),
        max_cached: 1_000_000,
    };
    let sessions = Sessions::new(store.clone(), &cfg);
    let before = rss_kib();
    let now = 1_800_000_000;
    // The browsers' cookies, kept by the bench only to look them up: packed, so the
    // harness adds 4 MB to the figure rather than 7 (a String per token).
    let mut tokens: Vec<[u8; 43]> = Vec::with_capacity(SESSIONS as usize);
    for chunk in 0..(SESSIONS / 10_000) {
        let mut batch = Vec::new();
        for i in 0..10_000 {
            let id = chunk * 10_000 + i + 1;
            let user = User {
                id,
                idp: "https://idp.example.test/idp".into(),
                subject: format!("subject-{id:08}-persistent-opaque-identifier"),
                username: format!("user{id}@corp.example.test"),
                display_name: Some(format!("User Number {id}")),
                email: Some(format!("user{id}@corp.example.test")),
                given_name: None,
                family_name: None,
                attributes: Default::default(),
                status: UserStatus::Active,
                groups: ["everyone", "staff", "engineering", "vpn-users"]
                    .iter()
                    .map(|g| Membership::new(*g, GroupSource::Idp))
                    .collect(),
                created_at: now,
                updated_at: now,
                last_login_at: Some(now),
            };
            let (token, hash) = new_token();
            let record = sessions.record_for(
                &user,
                now,
                None,
                Some(format!("_idx{id}")),
                Some((format!("user{id}@corp.test"), None)),
            );
            batch.push((user, hash, record));
            tokens.push(token.as_bytes().try_into().expect("43-byte token"));
        }
        let rows: Vec<_> = batch.clone();
        store
            .write_blocking(move |tx| {
                for (u, h, r) in &rows {
                    tx.put_user(u)?;
                    tx.put_session(h, r)?;
                }
                Ok(())
            })
            .unwrap();
        for (u, h, r) in &batch {
            sessions.prime(*h, r, u);
        }
    }
    let mut found = 0;
    for t in &tokens {
        let t = std::str::from_utf8(t).expect("base64url");
        found += sessions.lookup(t, now + 10).is_some() as u64;
    }
    assert_eq!(found, SESSIONS);
    let after = rss_kib();
    println!(
        "{SESSIONS} live sessions: process RSS {:.1} MB (before {:.1} MB, +{:.1} MB; target < 150 MB)",
        after as f64 / 1024.0,
        before as f64 / 1024.0,
        (after - before) as f64 / 1024.0
    );
}
