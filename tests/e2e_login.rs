//! End to end: browser -> samlgate -> pysaml2 IdP -> samlgate ACS -> backend, with the real
//! binary, a real redb file and a real backend, all on 127.0.0.1.

mod common;

use common::{Harness, Opts};
use samlgate::store::{GroupSource, UserStatus};
use serde_json::json;

fn alice(groups: &[&str]) -> serde_json::Value {
    json!({
        "name_id": "alice-persistent-7f3a",
        "attributes": {
            "mail": ["alice@corp.test"],
            "displayName": ["Alice Example"],
            "groups": groups,
        }
    })
}

#[test]
fn first_login_creates_user_and_backend_sees_identity_headers() {
    // P01
    let mut h = Harness::start();
    h.idp_next(alice(&["a", "b"]));
    let mut b = h.browser();
    let (acs, last) = b.login(&h.url("/app/home"));
    assert_eq!(last.status, 200, "{}", last.text());
    assert_eq!(last.text(), "backend ok");

    // The session cookie: opaque, HttpOnly, Lax, whole site.
    let set = acs.header("set-cookie").expect("session cookie");
    assert!(set.starts_with("samlgate_session="), "{set}");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Lax") && set.contains("Path=/"),
        "{set}"
    );
    let token = set.split(';').next().unwrap().split_once('=').unwrap().1;
    assert!(token.len() >= 22, "token too short for 128 bits: {token}");

    let seen = h.backend.last();
    assert_eq!(seen.path_and_query, "/app/home");
    assert_eq!(seen.one("x-auth-user"), "alice-persistent-7f3a");
    assert_eq!(seen.one("x-auth-email"), "alice@corp.test");
    assert_eq!(seen.one("x-auth-name"), "Alice%20Example");
    assert_eq!(seen.one("x-auth-groups"), "a,b,everyone");

    let (users, audit) = h.with_store(|s| (s.users().unwrap(), s.audit_events().unwrap()));
    assert_eq!(users.len(), 1);
    let u = &users[0];
    assert_eq!(u.status, UserStatus::Active);
    assert_eq!(u.subject, "alice-persistent-7f3a");
    assert_eq!(u.idp, h.idp_entity());
    let mut groups: Vec<(String, GroupSource)> = u
        .groups
        .iter()
        .map(|m| (m.group.clone(), m.source))
        .collect();
    groups.sort();
    assert_eq!(
        groups,
        vec![
            ("a".into(), GroupSource::Idp),
            ("b".into(), GroupSource::Idp),
            ("everyone".into(), GroupSource::Default)
        ]
    );
    assert!(
        audit
            .iter()
            .any(|e| e.kind == "user created" && e.user_id == Some(u.id)),
        "{audit:?}"
    );
}

#[test]
fn second_login_updates_the_same_user_and_the_headers() {
    // P02, and "one group fewer" from the core issue.
    let mut h = Harness::start();
    h.idp_next(alice(&["a", "b"]));
    h.browser().login(&h.url("/"));

    h.idp_next(json!({
        "name_id": "alice-persistent-7f3a",
        "attributes": {
            "mail": ["alice.new@corp.test"],
            "displayName": ["Alice Renamed"],
            "groups": ["a"],
        }
    }));
    let mut b2 = h.browser();
    let (_, last) = b2.login(&h.url("/x"));
    assert_eq!(last.status, 200);
    let seen = h.backend.last();
    assert_eq!(seen.one("x-auth-email"), "alice.new@corp.test");
    assert_eq!(seen.one("x-auth-name"), "Alice%20Renamed");
    assert_eq!(seen.one("x-auth-groups"), "a,everyone");

    let (users, audit) = h.with_store(|s| (s.users().unwrap(), s.audit_events().unwrap()));
    assert_eq!(users.len(), 1, "no second user: {users:?}");
    let updated = audit
        .iter()
        .find(|e| e.kind == "user updated")
        .expect("audit: user updated");
    let changed = updated.detail["changed"]
        .as_object()
        .expect("changed fields");
    assert!(
        changed.contains_key("email") && changed.contains_key("display_name"),
        "{changed:?}"
    );
    let groups = audit
        .iter()
        .find(|e| e.kind == "groups changed")
        .expect("audit: groups changed");
    assert_eq!(groups.detail["removed"], json!(["b (idp)"]));
}

#[test]
fn deep_link_survives_the_login_and_relay_state_is_short() {
    // H08
    let h = Harness::start();
    h.idp_next(alice(&["a"]));
    let deep =
        "/reports/view?customers[]=12&projects[]=307&daterange=2024-01-01..2024-12-31&page=5";
    let mut b = h.browser();
    let (redirect, form) = b.visit_to_idp(&h.url(deep));
    let visit_to_idp = redirect.header("location").unwrap();
    let relay = form
        .relay_state
        .clone()
        .expect("RelayState echoed by the IdP");
    assert!(relay.len() <= 80, "RelayState is {} bytes", relay.len());
    assert!(
        !visit_to_idp.contains("reports"),
        "the return path must not travel to the IdP: {visit_to_idp}"
    );
    let acs = b.post_acs(&form.action, Some(&form.saml_response), Some(&relay));
    assert_eq!(acs.status, 303);
    assert_eq!(acs.header("location").unwrap(), h.url(deep));
    let last = b.get(&acs.header("location").unwrap());
    assert_eq!(last.status, 200);
    assert_eq!(h.backend.last().path_and_query, deep);
}

#[test]
fn split_and_multi_valued_group_attributes_give_the_same_groups() {
    // P07
    let h = Harness::start();
    h.idp_next(json!({"name_id": "u1", "attributes": {"groups": ["c", "a", "b"]}}));
    h.browser().login(&h.url("/"));
    let one = h.backend.last().one("x-auth-groups");

    h.idp_next(json!({"name_id": "u2", "attributes": {"groups": ["b", "c", "a"]}, "split_attributes": ["groups"]}));
    h.browser().login(&h.url("/"));
    let split = h.backend.last().one("x-auth-groups");
    assert_eq!(one, "a,b,c,everyone");
    assert_eq!(split, one);
}

#[test]
fn inactive_user_is_reactivated_when_the_setting_allows() {
    // P03
    let mut h = Harness::start();
    h.idp_next(alice(&["a"]));
    h.browser().login(&h.url("/"));
    h.with_store(|s| set_status(s, UserStatus::Inactive));
    let (_, last) = h.browser().login(&h.url("/"));
    assert_eq!(last.status, 200);
    let (users, audit) = h.with_store(|s| (s.users().unwrap(), s.audit_events().unwrap()));
    assert_eq!(users[0].status, UserStatus::Active);
    assert!(audit.iter().any(|e| e.kind == "user reactivated"));
}

fn set_status(s: &samlgate::store::Store, status: UserStatus) {
    let mut u = s.users().unwrap().remove(0);
    u.status = status;
    s.write_blocking(move |tx| tx.put_user(&u)).unwrap();
}

fn refused_login(h: &Harness) {
    let mut b = h.browser();
    let (_, form) = b.visit_to_idp(&h.url("/"));
    let before = h.backend.count();
    let r = b.post_form(&form);
    assert_eq!(r.status, 403, "{}", r.text());
    let page = r.text();
    assert!(
        page.contains("disabled here") && page.contains("the IT help desk"),
        "{page}"
    );
    assert!(
        page.contains("Reference:"),
        "correlation id on the page: {page}"
    );
    assert!(
        r.all("set-cookie")
            .iter()
            .all(|c| !c.starts_with("samlgate_session=")),
        "no session cookie"
    );
    assert!(!b.jar.contains_key("samlgate_session"));
    assert_eq!(h.backend.count(), before, "nothing reaches the backend");
}

#[test]
fn inactive_user_is_refused_when_reactivation_is_off() {
    // P04, first half
    let mut h = Harness::start_with(Opts {
        reactivate_inactive: false,
        ..Opts::default()
    });
    h.idp_next(alice(&["a"]));
    h.browser().login(&h.url("/"));
    h.with_store(|s| set_status(s, UserStatus::Inactive));
    refused_login(&h);
    let users = h.with_store(|s| s.users().unwrap());
    assert_eq!(users[0].status, UserStatus::Inactive, "status unchanged");
}

#[test]
fn admin_disabled_user_is_refused_whatever_the_setting() {
    // P04, second half
    let mut h = Harness::start();
    h.idp_next(alice(&["a"]));
    h.browser().login(&h.url("/"));
    h.with_store(|s| set_status(s, UserStatus::Disabled));
    refused_login(&h);
    let users = h.with_store(|s| s.users().unwrap());
    assert_eq!(users[0].status, UserStatus::Disabled);
}

#[test]
fn group_sync_replaces_only_idp_memberships() {
    // P05
    let mut h = Harness::start();
    h.idp_next(json!({"name_id": "bob", "attributes": {"groups": ["eng"]}}));
    h.browser().login(&h.url("/"));
    h.with_store(|s| {
        let mut u = s.users().unwrap().remove(0);
        u.groups.push(samlgate::store::Membership::new(
            "ops-oncall",
            GroupSource::Local,
        ));
        u.groups.sort();
        s.write_blocking(move |tx| tx.put_user(&u)).unwrap();
    });
    h.idp_next(json!({"name_id": "bob", "attributes": {"groups": ["qa"]}}));
    h.browser().login(&h.url("/"));
    assert_eq!(
        h.backend.last().one("x-auth-groups"),
        "everyone,ops-oncall,qa"
    );
    let users = h.with_store(|s| s.users().unwrap());
    let mut got: Vec<(String, GroupSource)> = users[0]
        .groups
        .iter()
        .map(|m| (m.group.clone(), m.source))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("everyone".into(), GroupSource::Default),
            ("ops-oncall".into(), GroupSource::Local),
            ("qa".into(), GroupSource::Idp)
        ]
    );
}

#[test]
fn a_session_survives_a_gateway_restart() {
    let mut h = Harness::start();
    h.idp_next(alice(&["a"]));
    let mut b = h.browser();
    b.login(&h.url("/"));
    h.restart_gateway();
    let r = b.get(&h.url("/after-restart"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(h.backend.last().one("x-auth-user"), "alice-persistent-7f3a");
}

#[test]
fn logout_ends_the_session() {
    // With single logout on (the default, and this IdP has a SingleLogoutService) the browser
    // goes on to the IdP; with it off, it gets the signed-out page. Either way the session
    // is over here at once.
    for single_logout in [true, false] {
        let h = Harness::start_with(Opts {
            sp: format!("single_logout = {single_logout}"),
            ..Opts::default()
        });
        h.idp_next(alice(&["a"]));
        let mut b = h.browser();
        b.login(&h.url("/"));
        let old = b
            .jar
            .get("samlgate_session")
            .cloned()
            .expect("session cookie");
        let out = b.get(&h.url("/_saml/logout"));
        if single_logout {
            assert_eq!(out.status, 302);
            assert!(out
                .header("location")
                .unwrap()
                .starts_with(&h.idp_url("/slo?")));
        } else {
            assert_eq!(out.status, 200);
            assert!(out.text().contains("You are signed out"));
        }
        assert!(
            !b.jar.contains_key("samlgate_session"),
            "the cookie is cleared"
        );
        // The old token itself is dead, not just forgotten by this browser.
        b.jar.insert("samlgate_session".into(), old);
        let r = b.get(&h.url("/again"));
        assert_eq!(r.status, 302, "logged out: back to the IdP");
    }
}

#[test]
fn an_earlier_session_follows_the_users_latest_login() {
    // Browser A logged in as admin-capable alice; her groups then shrink at the IdP and she
    // logs in from browser B. A must not keep the old groups until its session ends.
    let h = Harness::start();
    h.idp_next(alice(&["a", "admins"]));
    let mut a = h.browser();
    a.login(&h.url("/"));
    assert_eq!(h.backend.last().one("x-auth-groups"), "a,admins,everyone");
    h.idp_next(alice(&["a"]));
    h.browser().login(&h.url("/"));
    let r = a.get(&h.url("/from-a"));
    assert_eq!(r.status, 200);
    let seen = h.backend.last();
    assert_eq!(seen.path_and_query, "/from-a");
    assert_eq!(seen.one("x-auth-groups"), "a,everyone");
}

#[test]
fn a_user_disabled_in_the_store_has_no_live_session() {
    let mut h = Harness::start();
    h.idp_next(alice(&["a"]));
    let mut a = h.browser();
    a.login(&h.url("/"));
    h.with_store(|s| set_status(s, UserStatus::Disabled));
    let r = a.get(&h.url("/still-in"));
    assert_eq!(
        r.status, 302,
        "the session of a disabled user is not honoured"
    );
}
