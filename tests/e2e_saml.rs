//! SAML service-provider cases (../shared/cases/saml-sp.md) that the core covers, and bad
//! input at the ACS, end to end against the pysaml2 IdP.
//!
//! "Rejected" always means: a 400 page with a reason and a correlation id, no session cookie,
//! nothing sent to the backend, no user written, and the detail in the gateway's log.

mod common;

use common::{Browser, Harness, IdpForm, Opts, Response, Rollover};
use serde_json::json;

fn user(name_id: &str) -> serde_json::Value {
    json!({"name_id": name_id, "attributes": {"groups": ["users"]}})
}

/// A logged-out browser that has started a login and holds the IdP's answer.
fn answer(h: &Harness, settings: serde_json::Value) -> (Browser, IdpForm) {
    h.idp_next(settings);
    let mut b = h.browser();
    let (_, form) = b.visit_to_idp(&h.url("/"));
    (b, form)
}

fn assert_rejected(h: &mut Harness, r: &Response, page_says: &str, log_says: &str) {
    assert_eq!(r.status, 400, "{}", r.text());
    let page = r.text();
    assert!(
        page.contains(page_says),
        "page should say {page_says:?}: {page}"
    );
    let cid = r.header("x-correlation-id").expect("correlation id header");
    assert!(page.contains(&cid), "the page shows the correlation id");
    assert!(
        r.all("set-cookie")
            .iter()
            .all(|c| !c.starts_with("samlgate_session=")),
        "no session cookie"
    );
    assert_eq!(h.backend.count(), 0, "nothing reached the backend");
    let log = h.gateway_log();
    let line = log
        .lines()
        .find(|l| l.contains(&cid) && l.contains("login refused"))
        .unwrap_or_else(|| panic!("no log line for {cid}:\n{log}"));
    assert!(
        line.contains(log_says),
        "log should say {log_says:?}: {line}"
    );
}

/// A fresh gateway refuses the IdP's answer made with `settings`, and stores nothing.
fn rejects(settings: serde_json::Value, page_says: &str, log_says: &str) {
    let mut h = Harness::start();
    let (mut b, form) = answer(&h, settings);
    let r = b.post_form(&form);
    assert_rejected(&mut h, &r, page_says, log_says);
    no_users(&mut h);
}

fn no_users(h: &mut Harness) {
    let users = h.with_store(|s| s.users().unwrap());
    assert!(users.is_empty(), "the store is unchanged: {users:?}");
}

#[test]
fn s04_an_unsigned_assertion_beside_a_signed_one_is_rejected_in_either_order() {
    for tamper in [
        "inject_unsigned_assertion_first",
        "inject_unsigned_assertion_last",
    ] {
        rejects(
            json!({"name_id": "alice", "tamper": tamper, "tamper_name_id": "admin"}),
            "structure that is not accepted",
            "exactly one is required",
        );
    }
}

#[test]
fn s06_a_response_without_any_signature_is_rejected() {
    rejects(
        json!({"name_id": "alice", "tamper": "strip_signatures"}),
        "not signed",
        "neither the Response nor the Assertion is signed",
    );
}

#[test]
fn a_nameid_edited_after_signing_is_rejected() {
    rejects(
        json!({"name_id": "alice", "tamper": "edit_name_id", "tamper_name_id": "admin"}),
        "not signed by the identity provider",
        "does not verify",
    );
}

#[test]
fn s08_unsigned_response_with_signed_assertion_is_accepted() {
    let h = Harness::start();
    h.idp_next(json!({"name_id": "alice", "sign_assertion": true, "sign_response": false}));
    let (_, last) = h.browser().login(&h.url("/"));
    assert_eq!(last.status, 200);
    assert_eq!(h.backend.last().one("x-auth-user"), "alice");
}

#[test]
fn signed_response_with_unsigned_assertion_is_accepted_by_default() {
    // S07 under the default "response or assertion signed" policy (Keycloak's default shape).
    let h = Harness::start();
    h.idp_next(json!({"name_id": "alice", "sign_assertion": false, "sign_response": true}));
    let (_, last) = h.browser().login(&h.url("/"));
    assert_eq!(last.status, 200);
}

#[test]
fn s09_sha1_is_rejected_by_default_and_names_the_fix() {
    for settings in [
        json!({"name_id": "alice", "sign_alg": "rsa-sha1"}),
        json!({"name_id": "alice", "sign_alg": "rsa-sha256", "digest_alg": "sha1"}),
    ] {
        rejects(
            settings,
            "signature algorithm that is not allowed",
            "idp.allow_sha1",
        );
    }
}

#[test]
fn s09_sha1_is_accepted_only_when_allowed_and_then_logged() {
    let h = Harness::start_with(Opts {
        allow_sha1: true,
        ..Opts::default()
    });
    h.idp_next(json!({"name_id": "alice", "sign_alg": "rsa-sha1", "digest_alg": "sha1"}));
    let (_, last) = h.browser().login(&h.url("/"));
    assert_eq!(last.status, 200);
    let log = h.gateway_log();
    assert!(
        log.contains("allow_sha1 = true"),
        "the loosened setting is logged at start"
    );
    assert!(
        log.contains("used a SHA-1 signature"),
        "each such login is logged"
    );
}

#[test]
fn s16_unsolicited_responses_are_rejected() {
    let mut h = Harness::start();
    h.idp_next(user("alice"));
    let unsolicited = common::request("POST", &h.idp_url("/control/unsolicited"), &[], b"").json();
    let sr = unsolicited["SAMLResponse"].as_str().unwrap().to_string();
    let acs = h.url("/_saml/acs");

    // Posted into a login this browser did start: still unsolicited.
    let mut b = h.browser();
    let (_, form) = b.visit_to_idp(&h.url("/"));
    let r = b.post_acs(&acs, Some(&sr), form.relay_state.as_deref());
    assert_rejected(&mut h, &r, "unsolicited", "IdP-initiated login is off");

    // And as IdP-initiated SSO sends it, with no RelayState at all: refused before any
    // verification, since no login of this gateway is waiting for it.
    let r = h.browser().post_acs(&acs, Some(&sr), None);
    assert_rejected(
        &mut h,
        &r,
        "has expired or was not started here",
        "no RelayState",
    );
    no_users(&mut h);
}

#[test]
fn s17_a_response_to_another_request_or_another_browser_is_rejected() {
    let mut h = Harness::start();
    h.idp_next(user("alice"));
    let mut a = h.browser();
    let (_, form_a) = a.visit_to_idp(&h.url("/"));
    let mut b = h.browser();
    let (_, form_b) = b.visit_to_idp(&h.url("/"));

    // B's answer under A's RelayState: InResponseTo is not A's request.
    let r = a.post_acs(
        &form_b.action,
        Some(&form_b.saml_response),
        form_a.relay_state.as_deref(),
    );
    assert_rejected(
        &mut h,
        &r,
        "does not belong to a sign-in started in this browser",
        "InResponseTo",
    );

    // B's whole answer posted from A's browser: A's state cookie does not match.
    let r = a.post_acs(
        &form_b.action,
        Some(&form_b.saml_response),
        form_b.relay_state.as_deref(),
    );
    assert_rejected(&mut h, &r, "started in another browser", "another browser");

    // An id that was never issued at all.
    let r = h.browser().post_acs(
        &form_a.action,
        Some(&form_a.saml_response),
        Some("never-issued-relay-state"),
    );
    assert_rejected(
        &mut h,
        &r,
        "has expired or was not started here",
        "unknown or expired",
    );
    no_users(&mut h);
}

#[test]
fn s18_a_replayed_response_is_rejected_and_the_replay_cache_is_durable() {
    let mut h = Harness::start();
    h.idp_next(user("alice"));
    let mut first = h.browser();
    let (_, form) = first.visit_to_idp(&h.url("/"));
    let ok = first.post_form(&form);
    assert_eq!(ok.status, 303);
    let seen_before = h.backend.count();

    // The same bytes from a second cookie jar (an attacker who captured the POST).
    let mut second = h.browser();
    let r = second.post_form(&form);
    assert_eq!(r.status, 400);
    assert!(r.text().contains("already used"), "{}", r.text());
    assert!(!second.jar.contains_key("samlgate_session"));
    assert_eq!(h.backend.count(), seen_before);

    // The assertion id is in the redb replay table, so a restart does not forget it.
    let xml = String::from_utf8(
        base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            &form.saml_response,
        )
        .unwrap(),
    )
    .unwrap();
    let start = xml.find("<saml:Assertion").expect("assertion");
    let id_at = xml[start..].find(" ID=\"").unwrap() + start + 5;
    let id = xml[id_at..id_at + xml[id_at..].find('"').unwrap()].to_string();
    let idp = h.idp_entity();
    let seen = h.with_store(move |s| {
        s.assertion_seen(&idp, &id, chrono::Utc::now().timestamp())
            .unwrap()
    });
    assert!(
        seen,
        "the replay cache entry is in the store after a kill -9"
    );
}

#[test]
fn s20_the_same_browser_reposting_its_answer_is_sent_back_to_the_app() {
    let h = Harness::start();
    h.idp_next(user("alice"));
    let mut b = h.browser();
    let (_, form) = b.visit_to_idp(&h.url("/deep"));
    let ok = b.post_form(&form);
    assert_eq!(ok.status, 303);
    let token = b.jar.get("samlgate_session").cloned();
    let again = b.post_form(&form);
    assert_eq!(again.status, 303, "{}", again.text());
    assert_eq!(again.header("location").unwrap(), h.url("/deep"));
    assert!(again.all("set-cookie").is_empty(), "no new session");
    assert_eq!(b.jar.get("samlgate_session").cloned(), token);
}

#[test]
fn s24_an_idp_refusal_is_shown_with_its_status() {
    rejects(
        json!({"name_id": "alice", "status": "AuthnFailed"}),
        "identity provider refused",
        "AuthnFailed",
    );
}

#[test]
fn bad_input_at_the_acs_gets_a_400_page_and_changes_nothing() {
    let mut h = Harness::start();
    h.idp_next(user("alice"));
    let mut b = h.browser();
    let (_, form) = b.visit_to_idp(&h.url("/"));
    let rs = form.relay_state.clone();
    let truncated = &form.saml_response[..form.saml_response.len() / 2 - 1];
    let unreadable = "could not be read";
    let expired = "has expired or was not started here";
    let cases: Vec<(Option<&str>, Option<&str>, &str, &str)> = vec![
        (
            Some("this is not SAML at all"),
            rs.as_deref(),
            unreadable,
            "not valid base64",
        ),
        (
            Some("PHJvb3Q+PC9yb290Pg=="),
            rs.as_deref(),
            unreadable,
            "not a samlp:Response",
        ),
        (Some(truncated), rs.as_deref(), unreadable, "SAMLResponse"),
        (None, rs.as_deref(), unreadable, "missing"),
        (Some(&form.saml_response), None, expired, "no RelayState"),
    ];
    for (sr, relay, page_says, log_says) in cases {
        let r = b.post_acs(&form.action, sr, relay);
        assert_rejected(&mut h, &r, page_says, log_says);
    }
    // An empty POST, and a DTD (entity expansion) attempt.
    let r = b.send(
        "POST",
        &form.action,
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"",
    );
    assert_rejected(&mut h, &r, unreadable, "missing");
    let dtd = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        "<!DOCTYPE r [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;\">]><samlp:Response xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\">&b;</samlp:Response>",
    );
    let r = b.post_acs(&form.action, Some(&dtd), rs.as_deref());
    assert_rejected(&mut h, &r, unreadable, "DTD");
    // The genuine answer still works afterwards: nothing was consumed by the junk.
    let ok = b.post_acs(&form.action, Some(&form.saml_response), rs.as_deref());
    assert_eq!(ok.status, 303, "{}", ok.text());
}

#[test]
fn a_get_to_the_acs_is_refused_cleanly() {
    let h = Harness::start();
    let r = h.browser().get(&h.url("/_saml/acs"));
    assert_eq!(r.status, 405);
    assert!(r.header("x-correlation-id").is_some());
}

#[test]
fn sp_metadata_is_served_and_matches_the_cli() {
    let h = Harness::start();
    let served = h.browser().get(&h.url("/_saml/metadata"));
    assert_eq!(served.status, 200);
    let out = std::process::Command::new(common::gateway_bin())
        .args(["metadata", "--config"])
        .arg(&h.config_path)
        .output()
        .unwrap();
    assert_eq!(served.text(), String::from_utf8_lossy(&out.stdout));
    assert!(served
        .text()
        .contains(&format!("Location=\"{}\"", h.url("/_saml/acs"))));
}

#[test]
fn deeply_nested_xml_is_refused_without_harming_the_gateway() {
    // Found by the attack run: a recursive parser on a 5000-deep document overflowed the stack
    // and took the whole gateway down, before any signature check.
    let mut h = Harness::start();
    h.idp_next(user("alice"));
    let mut b = h.browser();
    let (_, form) = b.visit_to_idp(&h.url("/"));
    let deep = format!(
        "<samlp:Response xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\">{}{}</samlp:Response>",
        "<x>".repeat(5000),
        "</x>".repeat(5000)
    );
    let deep = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, deep);
    let r = b.post_acs(&form.action, Some(&deep), form.relay_state.as_deref());
    assert_rejected(&mut h, &r, "could not be read", "nests deeper");
    // Still alive, and the genuine answer still works.
    let ok = b.post_form(&form);
    assert_eq!(ok.status, 303, "{}", ok.text());
}

#[test]
fn s11_every_signing_key_in_the_metadata_is_trusted_in_any_order() {
    for rollover in [
        Rollover::SignerFirst,
        Rollover::SignerLast,
        Rollover::SignerWithoutUse,
    ] {
        let h = Harness::start_with(Opts {
            rollover,
            ..Opts::default()
        });
        h.idp_next(user("alice"));
        let (_, last) = h.browser().login(&h.url("/"));
        assert_eq!(last.status, 200, "{rollover:?}");
    }
}

#[test]
fn s13_a_not_before_within_the_skew_is_accepted() {
    let h = Harness::start();
    h.idp_next(json!({"name_id": "alice", "not_before_offset_seconds": 30}));
    let (_, last) = h.browser().login(&h.url("/"));
    assert_eq!(last.status, 200);
}

#[test]
fn s14_time_bounds_outside_the_skew_are_rejected_naming_the_clock() {
    for (settings, log_says) in [
        (
            json!({"name_id": "alice", "not_before_offset_seconds": 600}),
            "NotBefore",
        ),
        (
            json!({"name_id": "alice", "not_on_or_after_seconds": -600}),
            "NotOnOrAfter",
        ),
        (
            json!({"name_id": "alice", "issue_instant_offset_seconds": 600}),
            "in the future",
        ),
    ] {
        let mut h = Harness::start();
        let (mut b, form) = answer(&h, settings);
        let r = b.post_form(&form);
        assert_rejected(&mut h, &r, "expired or is not yet valid", log_says);
        assert!(
            h.gateway_log().contains("gateway clock"),
            "both clocks named"
        );
        no_users(&mut h);
    }
}

#[test]
fn an_assertion_without_our_audience_is_rejected() {
    for audience in [
        serde_json::Value::Null,
        json!("https://other-sp.test/metadata"),
    ] {
        rejects(
            json!({"name_id": "alice", "audience": audience}),
            "meant for another service",
            "AudienceRestriction",
        );
    }
}

#[test]
fn a_session_the_idp_already_ended_is_not_created() {
    // Accepting it would make a dead session and send the browser round the IdP forever.
    let mut h = Harness::start();
    let (mut b, form) = answer(
        &h,
        json!({"name_id": "alice", "session_not_on_or_after_seconds": -60}),
    );
    let r = b.post_form(&form);
    assert_rejected(&mut h, &r, "expired", "SessionNotOnOrAfter");
}

#[test]
fn s01_a_comment_inside_the_nameid_never_truncates_it() {
    // victim@corp.test<!--x-->.evil.test must never be read as victim@corp.test.
    rejects(
        json!({"name_id": "victim@corp.test.evil.test", "name_id_format": "email", "tamper": "comment_in_name_id"}),
        "structure that is not accepted",
        "comment",
    );
}

#[test]
fn s01_a_comment_inside_a_group_value_never_truncates_it() {
    // admins<!--x-->-readonly must never be read as admins.
    rejects(
        json!({"name_id": "alice", "attributes": {"groups": ["admins-readonly"]}, "tamper": "comment_in_attribute"}),
        "structure that is not accepted",
        "comment",
    );
}

#[test]
fn s02_a_digest_planted_outside_signedinfo_does_not_cover_an_edit() {
    rejects(
        json!({"name_id": "alice", "sign_assertion": false, "sign_response": true,
               "tamper": "plant_digest_in_extensions", "tamper_name_id": "admin"}),
        "not signed by the identity provider",
        "does not verify",
    );
}

#[test]
fn s03_a_second_element_with_the_signed_id_is_rejected() {
    for (sign_assertion, sign_response) in [(true, false), (false, true)] {
        rejects(
            json!({"name_id": "alice", "sign_assertion": sign_assertion,
                   "sign_response": sign_response, "tamper": "duplicate_id"}),
            "structure that is not accepted",
            "duplicate ID",
        );
    }
}

#[test]
fn s05_a_signed_assertion_hidden_in_extensions_does_not_vouch_for_a_forged_one() {
    let mut h = Harness::start();
    // Bob exists with his own groups.
    h.idp_next(
        json!({"name_id": "bob", "attributes": {"groups": ["staff"], "displayName": ["Bob"]}}),
    );
    h.browser().login(&h.url("/"));
    let idp = h.idp_entity();
    let snapshot = move |s: &samlgate::store::Store| {
        (
            s.user_by_subject(&idp, "bob").unwrap().expect("bob"),
            s.users().unwrap().len(),
        )
    };
    let bob_before = h.with_store(snapshot.clone());
    assert_eq!(bob_before.0.group_names(), ["everyone", "staff"]);
    let seen = h.backend.count();

    // Alice's genuine signed assertion moves into samlp:Extensions; an unsigned one for bob,
    // with the groups and name the attacker wants, takes its place.
    let (mut b, form) = answer(
        &h,
        json!({"name_id": "alice", "attributes": {"groups": ["admins"], "displayName": ["Mallory"]},
               "tamper": "move_signed_into_extensions", "tamper_name_id": "bob"}),
    );
    let r = b.post_form(&form);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("structure that is not accepted"),
        "{}",
        r.text()
    );
    assert!(!b.jar.contains_key("samlgate_session"), "no session");
    assert_eq!(h.backend.count(), seen, "nothing reached the backend");
    let bob_after = h.with_store(snapshot);
    assert_eq!(
        format!("{bob_before:?}"),
        format!("{bob_after:?}"),
        "bob untouched, alice not created"
    );
}

#[test]
fn s07_the_signature_policy_decides_which_element_must_be_signed() {
    // (policy, sign_assertion, sign_response, accepted)
    let cases = [
        ("assertion", false, true, false),
        ("assertion", true, false, true),
        ("response", true, false, false),
        ("response", false, true, true),
        ("both", true, false, false),
        ("both", false, true, false),
        ("both", true, true, true),
        ("either", true, true, true),
    ];
    for (policy, sign_assertion, sign_response, accepted) in cases {
        let mut h = Harness::start_with(Opts {
            idp: format!("require_signed = \"{policy}\""),
            ..Opts::default()
        });
        let (mut b, form) = answer(
            &h,
            json!({"name_id": "alice", "sign_assertion": sign_assertion, "sign_response": sign_response}),
        );
        let r = b.post_form(&form);
        if accepted {
            assert_eq!(
                r.status,
                303,
                "{policy} {sign_assertion} {sign_response}: {}",
                r.text()
            );
        } else {
            assert_rejected(
                &mut h,
                &r,
                "not signed by the identity provider",
                &format!("require_signed = {policy}"),
            );
            no_users(&mut h);
        }
    }
}

#[test]
fn s10_an_hmac_signature_keyed_with_the_idp_certificate_is_always_rejected() {
    for allow_sha1 in [false, true] {
        let mut h = Harness::start_with(Opts {
            allow_sha1,
            ..Opts::default()
        });
        let (mut b, form) = answer(&h, json!({"name_id": "admin", "tamper": "hmac_signature"}));
        let r = b.post_form(&form);
        assert_rejected(&mut h, &r, "algorithm that is not allowed", "hmac-sha256");
        no_users(&mut h);
    }
}

#[test]
fn s12_a_certificate_inside_the_message_is_not_trusted() {
    for (sign_assertion, sign_response) in [(true, false), (false, true), (true, true)] {
        rejects(
            json!({"name_id": "admin", "sign_with": "attacker",
                   "sign_assertion": sign_assertion, "sign_response": sign_response}),
            "not signed by the identity provider",
            "does not verify",
        );
    }
}

#[test]
fn s15_timestamps_with_fractions_or_offsets_are_accepted() {
    for format in ["millis", "7digits", "offset"] {
        let h = Harness::start();
        h.idp_next(json!({"name_id": "alice", "time_format": format}));
        let (_, last) = h.browser().login(&h.url("/"));
        assert_eq!(last.status, 200, "{format}");
    }
}

/// The SAMLResponse form field as XML, and back.
fn decode(field: &str) -> String {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(field)
        .unwrap();
    String::from_utf8(bytes).unwrap()
}

fn encode(xml: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(xml)
}

#[test]
fn s19_a_signed_assertion_rewrapped_in_a_new_response_is_a_replay() {
    let mut h = Harness::start();
    h.idp_next(user("alice"));
    let mut first = h.browser();
    let (_, form) = first.visit_to_idp(&h.url("/"));
    assert_eq!(first.post_form(&form).status, 303);

    // A new Response around the same signed Assertion (only the Assertion is signed, so the
    // envelope may be rebuilt at will).
    let xml = decode(&form.saml_response);
    let at = xml.find("<samlp:Response").unwrap();
    let id_at = xml[at..].find(" ID=\"").unwrap() + at + 5;
    let old_id = &xml[id_at..id_at + xml[id_at..].find('"').unwrap()];
    let rewrapped = xml.replacen(old_id, "id-rewrapped-0001", 1);
    assert_ne!(rewrapped, xml);
    let mut attacker = h.browser();
    let r = attacker.post_acs(
        &form.action,
        Some(&encode(&rewrapped)),
        form.relay_state.as_deref(),
    );
    assert_rejected(&mut h, &r, "already used", "already used");
}

#[test]
fn s21_an_assertion_from_another_issuer_is_rejected() {
    rejects(
        json!({"name_id": "alice", "assertion_issuer": "http://127.0.0.1:9/other-idp"}),
        "unknown identity provider",
        "http://127.0.0.1:9/other-idp",
    );
}

#[test]
fn s22_destination_and_recipient_must_be_our_acs() {
    for (settings, names) in [
        (
            json!({"name_id": "alice", "destination": "http://127.0.0.1:9/_saml/acs"}),
            "Destination",
        ),
        (
            json!({"name_id": "alice", "recipient": "http://127.0.0.1:9/_saml/acs"}),
            "Recipient",
        ),
    ] {
        let mut h = Harness::start();
        let (mut b, form) = answer(&h, settings);
        let r = b.post_form(&form);
        assert_rejected(
            &mut h,
            &r,
            "meant for another service",
            "http://127.0.0.1:9/_saml/acs",
        );
        let log = h.gateway_log();
        assert!(log.contains(names), "{names} named: {log}");
        assert!(log.contains(&h.url("/_saml/acs")), "our ACS named: {log}");
        no_users(&mut h);
    }
}

#[test]
fn s22_behind_a_tls_terminator_the_public_acs_url_is_what_counts() {
    // The gateway listens on plain http; the world reaches it as https://127.0.0.1:8443.
    let public = "https://127.0.0.1:8443";
    let mut h = Harness::start_with(Opts {
        public_url: Some(public.into()),
        ..Opts::default()
    });
    h.idp_next(user("alice"));
    let mut b = h.browser();
    let (_, form) = b.visit_to_idp(&h.url("/deep"));
    assert_eq!(form.action, format!("{public}/_saml/acs"));
    // The terminator forwards the POST to the plain listener.
    let r = b.post_acs(
        &h.url("/_saml/acs"),
        Some(&form.saml_response),
        form.relay_state.as_deref(),
    );
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(r.header("location").unwrap(), format!("{public}/deep"));

    // An answer addressed to the listener's own http address is not for the public ACS.
    h.idp_next(json!({"name_id": "bob", "destination": h.url("/_saml/acs")}));
    let mut b = h.browser();
    let (_, form) = b.visit_to_idp(&h.url("/"));
    let seen = h.backend.count();
    let r = b.post_acs(
        &h.url("/_saml/acs"),
        Some(&form.saml_response),
        form.relay_state.as_deref(),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(h.backend.count(), seen);
    let log = h.gateway_log();
    assert!(
        log.contains("Destination") && log.contains(&format!("{public}/_saml/acs")),
        "{log}"
    );
    let bob = h.with_store(|s| {
        s.user_by_subject(&s.users().unwrap()[0].idp, "bob")
            .unwrap()
    });
    assert!(bob.is_none(), "bob was not created");
}

#[test]
fn s23_forwarded_headers_from_an_untrusted_peer_change_no_url() {
    let h = Harness::start();
    h.idp_next(user("alice"));
    let spoof = [
        ("X-Forwarded-Proto", "http"),
        ("X-Forwarded-Host", "evil.test"),
        ("X-Forwarded-Port", "80"),
        ("Forwarded", "host=evil.test;proto=http"),
        ("Accept", "text/html"),
    ];
    let mut b = h.browser();
    let r = b.send("GET", &h.url("/deep"), &spoof, b"");
    assert_eq!(r.status, 302);
    let location = r.header("location").unwrap();
    assert!(location.starts_with(&h.idp_url("/sso?")), "{location}");
    // The AuthnRequest names our configured ACS.
    let query = location.split_once('?').unwrap().1;
    let request = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "SAMLRequest")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let deflated = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(request)
            .unwrap()
    };
    let mut xml = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::DeflateDecoder::new(&deflated[..]),
        &mut xml,
    )
    .unwrap();
    assert!(
        xml.contains(&format!(
            "AssertionConsumerServiceURL=\"{}\"",
            h.url("/_saml/acs")
        )),
        "{xml}"
    );
    assert!(!xml.contains("evil.test"), "{xml}");

    // The IdP's answer, posted with the same headers, is checked against the configured ACS
    // and sends the browser back to the gateway's own URL.
    let page = b.get(&location);
    let html = page.text();
    let field = |name: &str| {
        let key = format!("name=\"{name}\" value=\"");
        let start = html.find(&key).unwrap() + key.len();
        html[start..start + html[start..].find('"').unwrap()]
            .replace("&#x27;", "'")
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
    };
    let mut ser = form_urlencoded::Serializer::new(String::new());
    ser.append_pair("SAMLResponse", &field("SAMLResponse"));
    ser.append_pair("RelayState", &field("RelayState"));
    let mut headers = spoof.to_vec();
    headers.push(("Content-Type", "application/x-www-form-urlencoded"));
    let r = b.send(
        "POST",
        &h.url("/_saml/acs"),
        &headers,
        ser.finish().as_bytes(),
    );
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(r.header("location").unwrap(), h.url("/deep"));
    for c in r.all("set-cookie") {
        assert!(!c.contains("evil.test"), "{c}");
    }
}

// ---- Encrypted assertions ------------------------------------------------------------------

fn encrypting(keys: usize, sp: &str) -> Harness {
    Harness::start_with(Opts {
        encryption_keys: keys,
        sp: sp.into(),
        ..Opts::default()
    })
}

#[test]
fn encrypted_assertions_are_accepted_in_the_shapes_real_idps_send() {
    let h = encrypting(1, "");
    // (data, key transport, OAEP digest, sign_assertion, sign_response)
    let shapes = [
        ("aes256-cbc", "rsa-oaep-mgf1p", None, true, false), // Entra ID, ADFS
        ("aes128-cbc", "rsa-oaep-mgf1p", None, true, false),
        ("aes128-gcm", "rsa-oaep-mgf1p", Some("sha256"), true, false),
        ("aes256-gcm", "rsa-oaep", Some("sha256"), true, false),
        ("aes256-gcm", "rsa-oaep-mgf1p", None, false, true), // Keycloak: signed document
        ("aes256-cbc", "rsa-oaep-mgf1p", None, true, true),
    ];
    for (i, (data, key, digest, sign_assertion, sign_response)) in shapes.into_iter().enumerate() {
        let name = format!("enc-user-{i}");
        h.idp_next(json!({"name_id": name, "attributes": {"groups": ["staff"]},
            "encrypt": true, "enc_data": data, "enc_key": key, "enc_digest": digest,
            "sign_assertion": sign_assertion, "sign_response": sign_response}));
        let mut b = h.browser();
        let (_, form) = b.visit_to_idp(&h.url("/"));
        assert!(
            decode(&form.saml_response).contains("EncryptedAssertion"),
            "the IdP encrypted"
        );
        let r = b.post_form(&form);
        assert_eq!(r.status, 303, "{data} {key}: {}", r.text());
        b.get(&h.url("/"));
        let seen = h.backend.last();
        assert_eq!(seen.one("x-auth-user"), name);
        assert_eq!(seen.one("x-auth-groups"), "everyone,staff");
    }
}

#[test]
fn every_encryption_key_is_tried_and_advertised() {
    let h = encrypting(2, "");
    let meta = common::request("GET", &h.url("/_saml/metadata"), &[], b"").text();
    assert_eq!(
        meta.matches("<md:KeyDescriptor use=\"encryption\">")
            .count(),
        2,
        "{meta}"
    );
    assert!(
        meta.contains("aes256-gcm") && meta.contains("rsa-oaep"),
        "{meta}"
    );
    for cert in [1, 0] {
        h.idp_next(
            json!({"name_id": format!("rollover-{cert}"), "encrypt": true, "enc_cert": cert}),
        );
        let (_, last) = h.browser().login(&h.url("/"));
        assert_eq!(last.status, 200, "encrypted to key {cert}");
    }
}

#[test]
fn every_decryption_failure_looks_the_same() {
    let mut h = encrypting(1, "");
    for (data, tamper) in [
        ("aes256-cbc", "flip_ciphertext"),
        ("aes256-gcm", "flip_ciphertext"),
        ("aes256-cbc", "flip_key"),
    ] {
        let (mut b, form) = answer(
            &h,
            json!({"name_id": "alice", "encrypt": true, "enc_data": data, "enc_tamper": tamper}),
        );
        let r = b.post_form(&form);
        assert_rejected(
            &mut h,
            &r,
            "could not be decrypted.",
            "could not be decrypted with any [[sp.encryption]] key",
        );
    }
    no_users(&mut h);
}

#[test]
fn encrypted_but_unsigned_or_pkcs1_v15_is_rejected() {
    let mut h = encrypting(1, "");
    // Anyone can encrypt to our public certificate: what is inside must still be signed.
    let (mut b, form) = answer(
        &h,
        json!({"name_id": "admin", "encrypt": true, "sign_assertion": false, "sign_response": false}),
    );
    let r = b.post_form(&form);
    assert_rejected(
        &mut h,
        &r,
        "not signed",
        "neither the Response nor the Assertion",
    );
    // A Response signature by a key listed nowhere, over an unsigned encrypted assertion.
    let (mut b, form) = answer(
        &h,
        json!({"name_id": "admin", "encrypt": true, "sign_assertion": false, "sign_response": true,
               "sign_with": "attacker"}),
    );
    let r = b.post_form(&form);
    assert_rejected(&mut h, &r, "not signed", "does not verify");
    // PKCS#1 v1.5 key transport (Bleichenbacher) is refused by name.
    let (mut b, form) = answer(
        &h,
        json!({"name_id": "alice", "encrypt": true, "enc_key": "rsa-1_5"}),
    );
    let r = b.post_form(&form);
    assert_rejected(
        &mut h,
        &r,
        "could not be decrypted",
        "xmlenc#rsa-1_5 is not accepted",
    );
    no_users(&mut h);
}

#[test]
fn encryption_can_be_required_and_a_missing_key_is_named() {
    let mut h = encrypting(1, "require_encrypted_assertions = true");
    let (mut b, form) = answer(&h, user("alice"));
    let r = b.post_form(&form);
    assert_rejected(&mut h, &r, "not encrypted", "require_encrypted_assertions");
    no_users(&mut h);

    // The IdP still encrypts to a key the gateway no longer has.
    h.edit_config("require_encrypted_assertions = true", "");
    h.edit_config(
        "[[sp.encryption]]\nkey = \"sp-enc-0-key.pem\"\ncert = \"sp-enc-0-cert.pem\"\n",
        "",
    );
    h.restart_gateway();
    let (mut b, form) = answer(&h, json!({"name_id": "alice", "encrypt": true}));
    let r = b.post_form(&form);
    assert_rejected(
        &mut h,
        &r,
        "could not be decrypted",
        "no [[sp.encryption]] key is configured",
    );
}

#[test]
fn an_encrypted_assertion_under_a_response_signature_still_has_its_content_checked() {
    // Signed Response, unsigned encrypted Assertion (Keycloak's "sign documents" shape): the
    // signature is verified before decryption, and samael then checks the content.
    for (settings, page_says, log_says) in [
        (
            json!({"audience": "https://other-sp.test"}),
            "meant for another service",
            "AudienceRestriction",
        ),
        (
            json!({"recipient": "http://127.0.0.1:9/_saml/acs"}),
            "meant for another service",
            "Recipient",
        ),
        (
            json!({"not_on_or_after_seconds": -600}),
            "expired",
            "NotOnOrAfter",
        ),
        (
            json!({"assertion_issuer": "http://127.0.0.1:9/other-idp"}),
            "unknown identity provider",
            "other-idp",
        ),
    ] {
        let mut h = encrypting(1, "");
        let mut s = json!({"name_id": "alice", "encrypt": true, "enc_data": "aes256-gcm",
                           "sign_assertion": false, "sign_response": true});
        for (k, v) in settings.as_object().unwrap() {
            s[k] = v.clone();
        }
        let (mut b, form) = answer(&h, s);
        let r = b.post_form(&form);
        assert_rejected(&mut h, &r, page_says, log_says);
        no_users(&mut h);
    }
}

#[test]
fn idp_initiated_login_when_allowed_keeps_replay_and_redirect_checks() {
    let mut h = Harness::start_with(Opts {
        idp: "allow_idp_initiated = true".into(),
        ..Opts::default()
    });
    assert!(
        h.gateway_log().contains("allow_idp_initiated = true"),
        "the loosening is logged"
    );
    let unsolicited = |h: &Harness| {
        let r = common::request("POST", &h.idp_url("/control/unsolicited"), &[], b"").json();
        r["SAMLResponse"].as_str().unwrap().to_string()
    };
    let acs = h.url("/_saml/acs");
    h.idp_next(user("alice"));
    for (relay, lands) in [
        (Some("/deep?x=1".to_string()), h.url("/deep?x=1")),
        (Some(h.url("/from-okta")), h.url("/from-okta")),
        (Some("https://evil.test/x".to_string()), h.url("/")),
        (Some("//evil.test/x".to_string()), h.url("/")),
        (None, h.url("/")),
    ] {
        let sr = unsolicited(&h);
        let mut b = h.browser();
        let r = b.post_acs(&acs, Some(&sr), relay.as_deref());
        assert_eq!(r.status, 303, "{relay:?}: {}", r.text());
        assert_eq!(r.header("location").unwrap(), lands, "{relay:?}");
        assert!(b.jar.contains_key("samlgate_session"));

        // The same answer again, from another browser: a replay.
        let again = h.browser().post_acs(&acs, Some(&sr), relay.as_deref());
        assert_eq!(again.status, 400);
        assert!(again.text().contains("already used"), "{}", again.text());
    }

    // An answer to a request some browser started is never taken as unsolicited.
    let mut other = h.browser();
    let (_, form) = other.visit_to_idp(&h.url("/"));
    let r = h
        .browser()
        .post_acs(&acs, Some(&form.saml_response), Some("/deep"));
    assert_rejected(
        &mut h,
        &r,
        "does not belong to a sign-in",
        "answers no request",
    );
}

#[test]
fn attacker_text_in_a_reference_never_reaches_the_log() {
    // libxml2 quotes a bad XPath (built from a Reference URI) on stderr, which is the log:
    // a `'` and an encoded newline would let a sender write lines of their own there.
    let mut h = Harness::start();
    let (mut b, form) = answer(&h, user("alice"));
    let xml = decode(&form.saml_response);
    let at = xml.find("URI=\"#").expect("a Reference") + 6;
    let forged = format!(
        "{}'&#10;[2026-01-01T00:00:00Z INFO  samlgate] INJECTED-LOG-LINE {}",
        &xml[..at],
        &xml[at..]
    );
    let r = b.post_acs(
        &form.action,
        Some(&encode(&forged)),
        form.relay_state.as_deref(),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let log = h.gateway_log();
    assert!(!log.contains("INJECTED-LOG-LINE"), "{log}");
    assert!(
        !log.contains("XPath error") && !log.contains("C14N error"),
        "{log}"
    );
    no_users(&mut h);
}
