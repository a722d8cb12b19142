//! Signing out, end to end with the pysaml2 IdP: local logout on to the IdP's single logout,
//! the IdP's own LogoutRequests (Redirect and POST) ending exactly the sessions they name,
//! and signed AuthnRequests with ForceAuthn and a requested AuthnContext.

mod common;

use base64::Engine as _;
use common::{Browser, Harness, Opts};
use serde_json::json;

fn signing() -> Harness {
    Harness::start_with(Opts {
        signing_key: true,
        sp: "sign_authn_requests = true\nforce_authn = true\nauthn_context = [\"urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport\"]\nauthn_context_comparison = \"minimum\"".into(),
        ..Opts::default()
    })
}

/// A browser logged in as `name_id` with the IdP's SessionIndex `index`.
fn logged_in(h: &Harness, name_id: &str, index: &str) -> Browser {
    h.idp_next(
        json!({"name_id": name_id, "session_index": index, "require_signed_requests": true}),
    );
    let mut b = h.browser();
    let (_, last) = b.login(&h.url("/"));
    assert_eq!(last.status, 200);
    b
}

fn still_in(h: &Harness, b: &mut Browser) -> bool {
    b.get(&h.url("/")).status == 200
}

fn logout_request(h: &Harness, body: serde_json::Value) -> serde_json::Value {
    let r = common::request(
        "POST",
        &h.idp_url("/control/logout_request"),
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// The XML inside a Redirect-binding URL's `param`.
fn inflate(url: &str, param: &str) -> String {
    let query = url.split_once('?').unwrap().1;
    let value = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == param)
        .unwrap()
        .1
        .into_owned();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value)
        .unwrap();
    let mut xml = String::new();
    std::io::Read::read_to_string(&mut flate2::read::DeflateDecoder::new(&bytes[..]), &mut xml)
        .unwrap();
    xml
}

#[test]
fn signed_authn_requests_carry_force_authn_and_the_requested_context() {
    let h = signing();
    let _b = logged_in(&h, "alice", "idx-1");
    let last = common::request("GET", &h.idp_url("/control/last_request"), &[], b"").json();
    assert_eq!(last["signed"], true, "{last}");
    assert_eq!(last["force_authn"], "true", "{last}");
    assert_eq!(last["comparison"], "minimum", "{last}");
    assert_eq!(
        last["authn_context"],
        json!(["urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"])
    );
    let meta = common::request("GET", &h.url("/_saml/metadata"), &[], b"").text();
    assert!(meta.contains("AuthnRequestsSigned=\"true\""), "{meta}");
    assert!(
        meta.contains("<md:KeyDescriptor use=\"signing\">"),
        "{meta}"
    );
    assert!(meta.contains("SingleLogoutService"), "{meta}");

    // The IdP's check is live: an unsigned request is refused by it.
    let plain = Harness::start();
    plain.idp_next(json!({"name_id": "alice", "require_signed_requests": true}));
    let mut b = plain.browser();
    let r = b.get(&plain.url("/"));
    let at_idp = b.get(&r.header("location").unwrap());
    assert_eq!(at_idp.status, 400, "{}", at_idp.text());
}

#[test]
fn local_logout_continues_to_the_idp_and_comes_back_signed_out() {
    let mut h = signing();
    let mut b = logged_in(&h, "alice", "idx-1");
    let r = b.get(&h.url("/_saml/logout"));
    assert_eq!(r.status, 302, "{}", r.text());
    let to_idp = r.header("location").unwrap();
    assert!(to_idp.starts_with(&h.idp_url("/slo?")), "{to_idp}");
    assert!(to_idp.contains("&Signature="), "signed: {to_idp}");
    assert!(
        !b.jar.contains_key("samlgate_session"),
        "cookie cleared at once"
    );
    assert!(inflate(&to_idp, "SAMLRequest").contains("idx-1"));

    // The IdP (which requires signed requests) ends its session and answers.
    let at_idp = b.get(&to_idp);
    assert_eq!(at_idp.status, 302, "{}", at_idp.text());
    let seen = common::request("GET", &h.idp_url("/control/last_logout"), &[], b"").json();
    assert_eq!(seen["name_id"], "alice");
    assert_eq!(seen["session_indexes"], json!(["idx-1"]));
    assert_eq!(seen["signed"], true);
    let back = at_idp.header("location").unwrap();
    assert!(
        back.starts_with(&h.url("/_saml/slo?SAMLResponse=")),
        "{back}"
    );
    let done = b.get(&back);
    assert_eq!(done.status, 200, "{}", done.text());
    assert!(done.text().contains("You are signed out"));
    assert!(!done.text().contains("did not confirm"));

    // The session is gone from the store too.
    let sessions = h.with_store(|s| s.sessions().unwrap().len());
    assert_eq!(sessions, 0);
    assert_eq!(b.get(&h.url("/")).status, 302);
}

#[test]
fn an_idp_logout_request_ends_exactly_the_sessions_it_names() {
    for binding in ["redirect", "post"] {
        let mut h = signing();
        let mut a1 = logged_in(&h, "alice", "idx-a1");
        let mut a2 = logged_in(&h, "alice", "idx-a2");
        let mut bob = logged_in(&h, "bob", "idx-b1");

        // One of alice's sessions, by SessionIndex, in some other browser (front channel).
        let msg = logout_request(
            &h,
            json!({"name_id": "alice", "session_indexes": ["idx-a1"], "binding": binding, "relay_state": "rs-1"}),
        );
        let mut carrier = h.browser();
        let r = match binding {
            "redirect" => carrier.get(msg["url"].as_str().unwrap()),
            _ => carrier.post_acs_like(&msg),
        };
        assert_eq!(r.status, 302, "{binding}: {}", r.text());
        let answer = r.header("location").unwrap();
        assert!(answer.starts_with(&h.idp_url("/slo?")), "{answer}");
        assert!(
            answer.contains("RelayState=rs-1") && answer.contains("&Signature="),
            "{answer}"
        );
        let xml = inflate(&answer, "SAMLResponse");
        assert!(
            xml.contains("LogoutResponse") && xml.contains("status:Success"),
            "{xml}"
        );
        assert!(!still_in(&h, &mut a1), "{binding}: the named session ended");
        assert!(
            still_in(&h, &mut a2),
            "{binding}: alice's other session lives"
        );
        assert!(still_in(&h, &mut bob), "{binding}: bob is untouched");

        // No SessionIndex: every session of that NameID.
        let msg = logout_request(&h, json!({"name_id": "alice", "binding": binding}));
        let r = match binding {
            "redirect" => h.browser().get(msg["url"].as_str().unwrap()),
            _ => h.browser().post_acs_like(&msg),
        };
        assert_eq!(r.status, 302, "{}", r.text());
        assert!(!still_in(&h, &mut a2));
        assert!(still_in(&h, &mut bob));
        let audit = h.with_store(|s| s.audit_events().unwrap());
        let ended: Vec<_> = audit
            .iter()
            .filter(|e| e.kind == "sessions ended by the IdP")
            .collect();
        assert_eq!(ended.len(), 2, "{ended:?}");
    }
}

#[test]
fn unsigned_forged_tampered_stale_or_replayed_logout_requests_end_nothing() {
    let h = signing();
    let mut alice = logged_in(&h, "alice", "idx-a1");
    let cases = [
        (json!({"name_id": "alice", "sign": "none"}), "not signed"),
        (
            json!({"name_id": "alice", "sign": "none", "binding": "post"}),
            "not signed",
        ),
        (
            json!({"name_id": "alice", "sign": "attacker"}),
            "not signed",
        ),
        (
            json!({"name_id": "alice", "sign": "attacker", "binding": "post"}),
            "not signed",
        ),
        (
            json!({"name_id": "bob", "binding": "post", "tamper_name_id": "alice"}),
            "not signed",
        ),
        (
            json!({"name_id": "alice", "issue_instant_offset_seconds": -7200}),
            "not accepted",
        ),
    ];
    for (body, page_says) in cases {
        let msg = logout_request(&h, body.clone());
        let mut b = h.browser();
        let r = match msg.get("url") {
            Some(url) => b.get(url.as_str().unwrap()),
            None => b.post_acs_like(&msg),
        };
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(r.text().contains(page_says), "{body}: {}", r.text());
        let cid = r.header("x-correlation-id").unwrap();
        assert!(h.gateway_log().contains(&cid), "logged");
        assert!(still_in(&h, &mut alice), "{body}: alice's session survives");
    }

    // A genuine request works once; the same URL again is a replay.
    let msg = logout_request(&h, json!({"name_id": "nobody"}));
    let url = msg["url"].as_str().unwrap();
    assert_eq!(h.browser().get(url).status, 302);
    let again = h.browser().get(url);
    assert_eq!(again.status, 400);
    assert!(again.text().contains("already used"), "{}", again.text());

    // Garbage never gets a 500.
    for q in [
        "",
        "SAMLRequest=%%%",
        "SAMLRequest=AAAA&SigAlg=x",
        "SAMLRequest=AAAA&SAMLResponse=AAAA",
        "SAMLRequest=AAAA&SigAlg=http%3A%2F%2Fwww.w3.org%2F2001%2F04%2Fxmldsig-more%23rsa-sha256&Signature=AAAA",
        "SAMLResponse=not-base64!",
    ] {
        let r = h.browser().get(&h.url(&format!("/_saml/slo?{q}")));
        assert_eq!(r.status, 400, "{q}: {}", r.text());
    }
    let r = h
        .browser()
        .post_acs(&h.url("/_saml/slo"), Some("PD94"), None);
    assert_eq!(r.status, 400);
    assert!(still_in(&h, &mut alice));
}

trait PostForm {
    fn post_acs_like(&mut self, msg: &serde_json::Value) -> common::Response;
}

impl PostForm for Browser {
    /// POST the IdP's LogoutRequest form as its auto-submitting page would.
    fn post_acs_like(&mut self, msg: &serde_json::Value) -> common::Response {
        let mut ser = form_urlencoded::Serializer::new(String::new());
        ser.append_pair("SAMLRequest", msg["SAMLRequest"].as_str().unwrap());
        if let Some(rs) = msg["RelayState"].as_str() {
            ser.append_pair("RelayState", rs);
        }
        self.send(
            "POST",
            msg["action"].as_str().unwrap(),
            &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Accept", "text/html"),
            ],
            ser.finish().as_bytes(),
        )
    }
}

#[test]
fn sp_metadata_can_be_signed_and_xmlsec1_verifies_it() {
    let h = Harness::start_with(Opts {
        signing_key: true,
        sp: "sign_metadata = true".into(),
        ..Opts::default()
    });
    let meta = common::request("GET", &h.url("/_saml/metadata"), &[], b"").text();
    assert!(
        meta.contains("<ds:SignatureValue>")
            && !meta.contains("<ds:SignatureValue></ds:SignatureValue>"),
        "{meta}"
    );
    let verify = |text: &str| {
        let file = h.dir.path().join("check-metadata.xml");
        std::fs::write(&file, text).unwrap();
        std::process::Command::new("xmlsec1")
            .args(["--verify", "--pubkey-cert-pem"])
            .arg(h.dir.path().join("sp-sign-cert.pem"))
            .args([
                "--id-attr:ID",
                "urn:oasis:names:tc:SAML:2.0:metadata:EntityDescriptor",
            ])
            .arg(&file)
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(verify(&meta), "xmlsec1 verifies the signed metadata");
    let forged = meta.replace("/_saml/acs", "/_saml/evil");
    assert_ne!(forged, meta);
    assert!(!verify(&forged), "an edited copy does not verify");

    // The IdP reads the signed document like any other.
    h.idp_next(json!({"name_id": "alice"}));
    std::fs::write(h.dir.path().join("sp-metadata.xml"), &meta).unwrap();
    let (_, last) = h.browser().login(&h.url("/"));
    assert_eq!(last.status, 200);
}
