//! Provisioning cases end to end (P06, P08, P10, P11, P12, P15 and the identity policy):
//! the pysaml2 IdP, the real gateway binary and its redb file.

mod common;

use common::{Harness, Opts};
use samlgate::store::{GroupSource, User};
use serde_json::json;

fn groups_of(u: &User) -> Vec<(String, GroupSource)> {
    let mut g: Vec<_> = u
        .groups
        .iter()
        .map(|m| (m.group.clone(), m.source))
        .collect();
    g.sort();
    g
}

fn g(name: &str, source: GroupSource) -> (String, GroupSource) {
    (name.to_string(), source)
}

#[test]
fn p06_with_group_sync_off_a_login_changes_no_membership() {
    let mut h = Harness::start();
    h.idp_next(json!({"name_id": "bob", "attributes": {"groups": ["eng"]}}));
    h.browser().login(&h.url("/"));
    h.cli_ok(&["users", "add-group", "bob", "ops-oncall"]);
    h.kill_gateway();
    h.edit_config("sync = \"full\"", "sync = \"off\"");
    h.start_gateway();
    h.idp_next(json!({"name_id": "bob", "attributes": {"groups": ["qa"]}}));
    let (_, last) = h.browser().login(&h.url("/"));
    assert_eq!(last.status, 200);
    assert_eq!(
        h.backend.last().one("x-auth-groups"),
        "eng,everyone,ops-oncall"
    );
    let users = h.with_store(|s| s.users().unwrap());
    assert_eq!(
        groups_of(&users[0]),
        vec![
            g("eng", GroupSource::Idp),
            g("everyone", GroupSource::Default),
            g("ops-oncall", GroupSource::Local)
        ]
    );
}

#[test]
fn p08_three_ways_to_send_an_email_give_the_same_email() {
    let mut h = Harness::start_with(Opts {
        extra_config: r#"
[attributes]
email = ["urn:oid:0.9.2342.19200300.100.1.3", "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress", "email"]
given_name = { names = ["givenName"], friendly_name = true }
"#
        .into(),
        ..Opts::default()
    });
    let senders = [
        (
            "shib-user",
            "urn:oid:0.9.2342.19200300.100.1.3",
            Some("mail"),
        ),
        (
            "entra-user",
            "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
            None,
        ),
        ("okta-user", "email", None),
    ];
    for (subject, attr, friendly) in senders {
        let mut settings = json!({
            "name_id": subject,
            "attributes": {attr: [format!("{subject}@corp.test")], "urn:oid:2.5.4.42": ["Gina"]},
        });
        if let Some(f) = friendly {
            settings["friendly_names"] = json!({attr: f, "urn:oid:2.5.4.42": "givenName"});
        }
        h.idp_next(settings);
        let (_, last) = h.browser().login(&h.url("/"));
        assert_eq!(last.status, 200, "{subject}: {}", last.text());
        assert_eq!(
            h.backend.last().one("x-auth-email"),
            format!("{subject}@corp.test")
        );
    }
    let users = h.with_store(|s| s.users().unwrap());
    assert_eq!(users.len(), 3);
    for u in &users {
        assert_eq!(
            u.email.as_deref(),
            Some(format!("{}@corp.test", u.subject).as_str())
        );
    }
    // FriendlyName matched only where the config allows it (given_name here).
    let shib = users.iter().find(|u| u.subject == "shib-user").unwrap();
    assert_eq!(shib.given_name.as_deref(), Some("Gina"));
    let okta = users.iter().find(|u| u.subject == "okta-user").unwrap();
    assert_eq!(
        okta.given_name, None,
        "no FriendlyName sent, no match by Name"
    );
}

#[test]
fn p08_a_missing_required_attribute_is_named_with_the_attributes_received() {
    let mut h = Harness::start_with(Opts {
        extra_config: "[attributes]\nemail = { names = [\"mail\"], required = true }\n".into(),
        ..Opts::default()
    });
    h.idp_next(json!({"name_id": "nomail", "attributes": {"email": ["x@corp.test"], "cn": ["X"]}}));
    let mut b = h.browser();
    let (_, form) = b.visit_to_idp(&h.url("/"));
    let r = b.post_form(&form);
    assert_eq!(r.status, 400);
    assert!(
        r.text().contains("did not send your e-mail"),
        "{}",
        r.text()
    );
    let log = h.gateway_log();
    let line = log
        .lines()
        .find(|l| l.contains("required attribute for e-mail"))
        .expect("log line");
    assert!(
        line.contains("\"mail\"") && line.contains("\"email\"") && line.contains("\"cn\""),
        "{line}"
    );
    assert!(h.with_store(|s| s.users().unwrap()).is_empty());
}

const OVERAGE: &str = "http://schemas.microsoft.com/claims/groups.link";

#[test]
fn p10_the_entra_overage_claim_keeps_stored_groups_and_tells_the_admin() {
    let mut h = Harness::start();
    h.idp_next(json!({"name_id": "big", "attributes": {"groups": ["eng"]}}));
    h.browser().login(&h.url("/"));
    h.idp_next(json!({"name_id": "big", "attributes": {
        OVERAGE: ["https://graph.windows.net/tenant/users/big/getMemberObjects"]}}));
    let (_, last) = h.browser().login(&h.url("/"));
    assert_eq!(last.status, 200);
    assert_eq!(h.backend.last().one("x-auth-groups"), "eng,everyone");
    let log = h.gateway_log();
    assert!(
        log.contains("overage") && log.contains("Groups assigned to the application"),
        "{log}"
    );
    let (users, audit) = h.with_store(|s| (s.users().unwrap(), s.audit_events().unwrap()));
    assert!(groups_of(&users[0]).contains(&g("eng", GroupSource::Idp)));
    assert!(audit.iter().any(|e| e.kind == "group overage"));
}

#[test]
fn p10_where_groups_are_required_the_overage_claim_refuses_the_login() {
    let mut h = Harness::start_with(Opts {
        groups: "overage = \"refuse\"".into(),
        ..Opts::default()
    });
    h.idp_next(json!({"name_id": "big", "attributes": {OVERAGE: ["https://graph.example/x"]}}));
    let mut b = h.browser();
    let (_, form) = b.visit_to_idp(&h.url("/"));
    let r = b.post_form(&form);
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("too many groups"), "{}", r.text());
    assert!(h.with_store(|s| s.users().unwrap()).is_empty());
}

#[test]
fn p11_object_ids_map_to_names_and_unmapped_ones_are_dropped_as_configured() {
    let eng = "5f8a1c2e-7d41-4b1d-9c3a-0d2e6f7a8b9c";
    let other = "0b1c2d3e-0000-4000-8000-123456789abc";
    let mut h = Harness::start_with(Opts {
        groups: format!(
            "map = {{ \"{eng}\" = \"eng\" }}\nunmapped = \"drop\"\nexclude = [\"regex:Domain .*\"]"
        ),
        ..Opts::default()
    });
    h.idp_next(json!({"name_id": "gid", "attributes": {"groups": [eng, other, "Domain Users"]}}));
    h.browser().login(&h.url("/"));
    assert_eq!(h.backend.last().one("x-auth-groups"), "eng,everyone");
    h.kill_gateway();
    h.edit_config("unmapped = \"drop\"", "unmapped = \"keep\"");
    h.start_gateway();
    h.browser().login(&h.url("/"));
    assert_eq!(
        h.backend.last().one("x-auth-groups"),
        format!("{other},eng,everyone"),
        "kept unmapped, still excluded Domain Users"
    );
    let users = h.with_store(|s| s.users().unwrap());
    assert!(!users[0]
        .groups
        .iter()
        .any(|m| m.group == eng || m.group.starts_with("Domain")));
}

#[test]
fn p12_email_nameids_fold_case_and_opaque_persistent_ids_never_do() {
    let mut h = Harness::start();
    h.idp_next(json!({"name_id": "alice@corp.test", "name_id_format": "email"}));
    h.browser().login(&h.url("/"));
    h.idp_next(json!({"name_id": "Alice@Corp.TEST", "name_id_format": "email"}));
    let (_, last) = h.browser().login(&h.url("/"));
    assert_eq!(last.status, 200);
    assert_eq!(h.backend.last().one("x-auth-user"), "alice@corp.test");

    h.idp_next(json!({"name_id": "AbC123xyz", "name_id_format": "persistent"}));
    h.browser().login(&h.url("/"));
    h.idp_next(json!({"name_id": "abc123xyz", "name_id_format": "persistent"}));
    let mut b = h.browser();
    let (_, form) = b.visit_to_idp(&h.url("/"));
    // Another subject; its username differs from the first only in case, so it is refused
    // rather than shown to the backend as the same person.
    assert_eq!(b.post_form(&form).status, 403);

    let users = h.with_store(|s| s.users().unwrap());
    let subjects: Vec<&str> = users.iter().map(|u| u.subject.as_str()).collect();
    assert_eq!(subjects, vec!["alice@corp.test", "AbC123xyz"]);
}

#[test]
fn transient_nameids_are_refused_unless_another_key_is_configured() {
    let mut h = Harness::start();
    h.idp_next(json!({"name_id": "_tr4ns13nt", "name_id_format": "transient"}));
    let mut b = h.browser();
    let (_, form) = b.visit_to_idp(&h.url("/"));
    let r = b.post_form(&form);
    assert_eq!(r.status, 400);
    assert!(h
        .gateway_log()
        .contains("is not in identity.name_id_formats"));
    assert!(h.with_store(|s| s.users().unwrap()).is_empty());
}

#[test]
fn a_key_attribute_keeps_one_user_across_changing_nameids() {
    let oid = "http://schemas.microsoft.com/identity/claims/objectidentifier";
    let mut h = Harness::start_with(Opts {
        extra_config: format!(
            "[identity]\nname_id_formats = [\"transient\", \"persistent\"]\nkey_attribute = \"{oid}\"\n[attributes]\nusername = [\"upn\"]\n"
        ),
        ..Opts::default()
    });
    for nid in ["_t1", "_t2", "_t3"] {
        h.idp_next(json!({"name_id": nid, "name_id_format": "transient",
            "attributes": {oid: ["8c1f-oid"], "upn": ["carol@corp.test"]}}));
        let (_, last) = h.browser().login(&h.url("/"));
        assert_eq!(last.status, 200);
    }
    let users = h.with_store(|s| s.users().unwrap());
    assert_eq!(
        users.len(),
        1,
        "never pile up users from changing identifiers"
    );
    assert_eq!(users[0].subject, "8c1f-oid");
    assert_eq!(users[0].username, "carol@corp.test");
}

#[test]
fn an_extra_attribute_travels_as_its_own_header_and_a_client_copy_is_stripped() {
    let h = Harness::start_with(Opts {
        extra_config: "[attributes.extra.department]\nnames = [\"department\"]\nheader = \"X-Auth-Department\"\n".into(),
        ..Opts::default()
    });
    h.idp_next(json!({"name_id": "dora", "attributes": {"department": ["R&D Ünit"]}}));
    let mut b = h.browser();
    b.login(&h.url("/"));
    assert_eq!(h.backend.last().one("x-auth-department"), "R&D%20%C3%9Cnit");
    let r = b.send(
        "GET",
        &h.url("/public/x"),
        &[("X_Auth_Department", "Finance")],
        b"",
    );
    assert_eq!(r.status, 200);
    assert!(
        h.backend.last().all("x-auth-department").is_empty(),
        "stripped on a public path"
    );
}

#[test]
fn p15_kill_9_during_a_storm_of_first_logins_loses_nothing_committed() {
    let mut h = Harness::start();
    h.idp_next(
        json!({"name_id": "storm", "unique_name_id": true, "attributes": {"groups": ["g1", "g2"]}}),
    );
    // Each browser takes its IdP form first; the storm is the ACS posts.
    let forms: Vec<_> = (0..40)
        .map(|_| {
            let mut b = h.browser();
            let (_, form) = b.visit_to_idp(&h.url("/"));
            (b, form)
        })
        .collect();
    let tokens = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut threads = Vec::new();
    for (mut b, form) in forms {
        let tokens = tokens.clone();
        threads.push(std::thread::spawn(move || {
            let r = b.post_acs_result(&form);
            if let Some(set) = r.and_then(|r| r.header("set-cookie")) {
                if let Some(v) = set.strip_prefix("samlgate_session=") {
                    let token = v.split(';').next().unwrap_or("").to_string();
                    tokens.lock().unwrap().push(token);
                }
            }
        }));
    }
    std::thread::sleep(std::time::Duration::from_millis(150));
    h.kill_gateway();
    for t in threads {
        let _ = t.join();
    }
    let tokens = tokens.lock().unwrap().clone();
    h.start_gateway();
    let (problems, found, users) = h.with_store(|s| {
        let found: Vec<bool> = tokens
            .iter()
            .map(|t| {
                let rec = s.session(&samlgate::session::hash_token(t)).unwrap();
                rec.is_some_and(|r| s.user(r.user_id).unwrap().is_some())
            })
            .collect();
        (s.check().unwrap(), found, s.users().unwrap())
    });
    assert!(problems.is_empty(), "store inconsistent: {problems:?}");
    assert!(
        found.iter().all(|f| *f),
        "a login that got a session lost it or its user"
    );
    for u in &users {
        let names: Vec<String> = u.group_names();
        assert_eq!(
            names,
            vec!["everyone", "g1", "g2"],
            "whole user or none: {u:?}"
        );
    }
    eprintln!(
        "P15: {} of 40 logins got a session before the kill; {} users in the store",
        tokens.len(),
        users.len()
    );
}
