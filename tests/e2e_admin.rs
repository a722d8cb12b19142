//! The admin interface end to end: the `samlgate users|groups|sessions|audit` CLI against a
//! running gateway (through its hyper admin listener) and against the redb file when no
//! gateway runs; health, readiness and metrics; the bearer token.

mod common;

use common::http::request;
use common::{Harness, Opts};
use samlgate::store::UserStatus;
use serde_json::json;

fn alice(groups: &[&str]) -> serde_json::Value {
    json!({
        "name_id": "alice-7f3a",
        "attributes": {
            "mail": ["alice@corp.test"],
            "displayName": ["Alice Example"],
            "groups": groups,
        }
    })
}

/// A request with this browser's cookies: 200 from the backend while the session lives.
fn visit(h: &Harness, b: &mut common::Browser) -> u16 {
    b.get(&h.url("/app")).status
}

#[test]
fn an_admin_manages_a_user_through_the_cli_and_the_gateway_follows_at_once() {
    let h = Harness::start();
    h.idp_next(alice(&["eng"]));
    h.browser().login(&h.url("/app"));
    // She marries; the IdP sends the new name at her next login.
    let mut renamed = alice(&["eng"]);
    renamed["attributes"]["displayName"] = json!(["Alice Married"]);
    h.idp_next(renamed);
    let mut b = h.browser();
    b.login(&h.url("/app"));
    assert_eq!(visit(&h, &mut b), 200);

    // The CLI finds the running gateway and says so.
    let (ok, out, err) = h.cli(&["users", "list"]);
    assert!(ok, "{err}");
    assert!(
        err.contains("a gateway is running; using its admin API"),
        "{err}"
    );
    assert!(
        out.contains("alice-7f3a") && out.contains("alice@corp.test"),
        "{out}"
    );
    assert!(
        out.contains("eng (idp)") && out.contains("everyone (default)"),
        "{out}"
    );
    let out = h.cli_ok(&["users", "list", "--status", "disabled"]);
    assert!(!out.contains("alice-7f3a"), "status filter: {out}");
    let out = h.cli_ok(&["users", "list", "--search", "ALICE@"]);
    assert!(out.contains("alice-7f3a"), "search: {out}");
    let out = h.cli_ok(&["users", "show", "alice-7f3a"]);
    assert!(
        out.contains("2 live") && out.contains("Alice Married"),
        "{out}"
    );

    // A local group reaches the backend on the very next request, no new login.
    h.cli_ok(&["users", "add-group", "alice-7f3a", "ops oncall"]);
    assert_eq!(visit(&h, &mut b), 200);
    assert_eq!(
        h.backend.last().one("x-auth-groups"),
        "eng,everyone,ops%20oncall"
    );
    let out = h.cli_ok(&["groups", "show", "ops oncall"]);
    assert!(out.contains("alice-7f3a") && out.contains("local"), "{out}");

    // Removing a group ends the sessions (the moka cache too): the next request logs in again.
    h.cli_ok(&["users", "remove-group", "alice-7f3a", "ops oncall"]);
    assert_eq!(visit(&h, &mut b), 302);
    // An IdP membership is not removed without --any-source, and the message says why.
    let (ok, _, err) = h.cli(&["users", "remove-group", "alice-7f3a", "eng"]);
    assert!(
        !ok && err.contains("only from") && err.contains("--any-source"),
        "{err}"
    );

    // Deactivate: every session ends at once; reactivation at login is on, so a login works.
    let mut b = h.browser();
    b.login(&h.url("/app"));
    assert_eq!(visit(&h, &mut b), 200);
    let out = h.cli_ok(&["users", "deactivate", "alice-7f3a"]);
    assert!(out.contains("inactive"), "{out}");
    assert_eq!(visit(&h, &mut b), 302, "session ended by deactivation");
    let out = h.cli_ok(&["sessions", "list"]);
    assert!(!out.contains("alice-7f3a"), "no session left: {out}");
    let (_, last) = h.browser().login(&h.url("/app"));
    assert_eq!(last.status, 200, "reactivated by login");

    // Disable: a login is refused whatever the setting.
    h.cli_ok(&["users", "disable", "alice-7f3a"]);
    let mut b2 = h.browser();
    let (_, form) = b2.visit_to_idp(&h.url("/app"));
    assert_eq!(b2.post_form(&form).status, 403);
    h.cli_ok(&["users", "activate", "alice-7f3a"]);

    // Sessions: list with whole ids in JSON, revoke one.
    let mut b3 = h.browser();
    b3.login(&h.url("/app"));
    let out = h.cli_ok(&["sessions", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = list[0]["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 64);
    assert_eq!(visit(&h, &mut b3), 200);
    h.cli_ok(&["sessions", "revoke", &id]);
    assert_eq!(visit(&h, &mut b3), 302);

    // The audit log tells her story, in order.
    let out = h.cli_ok(&["audit", "--user", "alice-7f3a"]);
    let kinds: Vec<&str> = [
        "user created",
        "user updated",
        "group added",
        "group removed",
        "user deactivated",
        "user reactivated",
        "user disabled",
        "login refused",
        "user activated",
        "session revoked",
    ]
    .into_iter()
    .filter(|k| !out.contains(k))
    .collect();
    assert!(kinds.is_empty(), "missing {kinds:?} in\n{out}");
    let created = out.find("user created").unwrap();
    let deactivated = out.find("user deactivated").unwrap();
    let reactivated = out.find("user reactivated").unwrap();
    assert!(created < deactivated && deactivated < reactivated, "{out}");
    assert!(out.contains("\"by\":\"admin api\""), "{out}");
    eprintln!("her life, as `samlgate audit --user alice-7f3a` prints it:\n{out}");

    // Export, then import into the same directory: nothing changes.
    let export = h.cli_ok(&["users", "export"]);
    let doc: serde_json::Value = serde_json::from_str(&export).unwrap();
    assert_eq!(doc["format"], "samlgate-directory");
    assert_eq!(doc["users"].as_array().unwrap().len(), 1);
    let file = h.dir.path().join("export.json");
    std::fs::write(&file, &export).unwrap();
    let out = h.cli_ok(&["users", "import", file.to_str().unwrap()]);
    assert!(out.contains("created 0, updated 0, unchanged 1"), "{out}");
}

#[test]
fn with_no_gateway_running_the_cli_works_on_the_store_file_and_says_so() {
    let mut h = Harness::start();
    h.idp_next(alice(&["eng"]));
    h.browser().login(&h.url("/app"));
    let export = h.cli_ok(&["users", "export"]);
    h.kill_gateway();

    let (ok, out, err) = h.cli(&["users", "list"]);
    assert!(ok, "{err}");
    assert!(
        err.contains("no gateway holds") && err.contains("directly"),
        "{err}"
    );
    assert!(out.contains("alice-7f3a"), "{out}");
    h.cli_ok(&["users", "disable", "alice-7f3a"]);
    let out = h.cli_ok(&["audit", "--kind", "user disabled"]);
    assert!(out.contains("cli (direct)"), "{out}");

    // The gateway starts on the changed file and refuses her.
    h.start_gateway();
    let mut b = h.browser();
    let (_, form) = b.visit_to_idp(&h.url("/app"));
    assert_eq!(b.post_form(&form).status, 403);

    // Import into an empty directory (another gateway) creates her with her groups.
    let other = Harness::start();
    let file = other.dir.path().join("export.json");
    std::fs::write(&file, &export).unwrap();
    let out = other.cli_ok(&["users", "import", file.to_str().unwrap()]);
    assert!(out.contains("created 1"), "{out}");
    let out = other.cli_ok(&["users", "show", "alice-7f3a"]);
    assert!(out.contains("eng (idp)") && out.contains("active"), "{out}");
    let users = {
        let mut other = other;
        other.with_store(|s| s.users().unwrap())
    };
    assert_eq!(users[0].status, UserStatus::Active);
}

#[test]
fn the_api_needs_the_token_and_health_and_metrics_do_not() {
    let h = Harness::start();
    h.idp_next(alice(&["eng"]));
    h.browser().login(&h.url("/app"));
    // A refused login, to see a cause in the metrics.
    h.idp_next(json!({"name_id": "mallory", "tamper": "strip_signatures"}));
    let mut b = h.browser();
    let (_, form) = b.visit_to_idp(&h.url("/app"));
    assert_eq!(b.post_form(&form).status, 400);

    assert_eq!(
        request("GET", &h.admin_url("/healthz"), &[], b"").status,
        200
    );
    assert_eq!(
        request("GET", &h.admin_url("/readyz"), &[], b"").status,
        200
    );
    let m = request("GET", &h.admin_url("/metrics"), &[], b"").text();
    assert!(
        m.contains("samlgate_logins_total{result=\"ok\",cause=\"\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("samlgate_logins_total{result=\"failed\",cause=\"NotSigned\"} 1"),
        "{m}"
    );
    assert!(m.contains("samlgate_users_created_total 1"), "{m}");
    assert!(m.contains("samlgate_sessions_live 1"), "{m}");
    assert!(m.contains("samlgate_request_duration_seconds_count"), "{m}");

    let r = request("GET", &h.admin_url("/api/users"), &[], b"");
    assert_eq!(r.status, 401);
    let r = request(
        "GET",
        &h.admin_url("/api/users"),
        &[("Authorization", "Bearer not-the-token-at-all")],
        b"",
    );
    assert_eq!(r.status, 401);
    let auth = format!("Bearer {}", h.admin_token());
    let r = request(
        "GET",
        &h.admin_url("/api/users"),
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_str(&r.text()).unwrap();
    assert_eq!(v["total"], 1);
    let r = request(
        "POST",
        &h.admin_url("/api/import"),
        &[("Authorization", &auth)],
        b"{not json",
    );
    assert_eq!(r.status, 400, "{}", r.text());

    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(h.dir.path().join("admin.token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the token file is private");
    assert!(
        !h.gateway_log().contains(&h.admin_token()),
        "no token in the log"
    );
}

#[test]
fn a_group_that_needs_approval_reaches_the_backend_only_after_an_admin_approves() {
    let h = Harness::start_with(Opts {
        groups: "require_approval = [\"admins\"]".into(),
        ..Opts::default()
    });
    h.idp_next(alice(&["admins", "eng"]));
    let mut b = h.browser();
    b.login(&h.url("/app"));
    assert_eq!(h.backend.last().one("x-auth-groups"), "eng,everyone");
    let out = h.cli_ok(&["groups", "list"]);
    assert!(
        out.lines()
            .any(|l| l.starts_with("admins") && l.ends_with('1')),
        "{out}"
    );
    h.cli_ok(&["users", "approve-group", "alice-7f3a", "admins"]);
    assert_eq!(visit(&h, &mut b), 200);
    assert_eq!(h.backend.last().one("x-auth-groups"), "admins,eng,everyone");
    // The approval holds at the next login while the IdP keeps sending the group.
    h.browser().login(&h.url("/app"));
    assert_eq!(h.backend.last().one("x-auth-groups"), "admins,eng,everyone");
}
