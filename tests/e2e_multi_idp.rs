//! Two IdPs in one gateway (two pysaml2 IdPs with their own keys): the discovery page, the
//! choice by host, users kept apart by IdP, and no answer or logout crossing over.

mod common;

use common::{Harness, Opts};
use serde_json::json;

fn two_idps() -> Harness {
    Harness::start_with(Opts {
        second_idp: true,
        ..Opts::default()
    })
}

fn link(page: &str, text: &str) -> String {
    let at = page
        .find(text)
        .unwrap_or_else(|| panic!("no {text:?} in {page}"));
    let start = page[..at].rfind("href=\"").unwrap() + 6;
    let end = page[start..].find('"').unwrap() + start;
    page[start..end].replace("&amp;", "&")
}

#[test]
fn the_visitor_chooses_the_idp_and_each_idp_vouches_only_for_its_own_users() {
    let mut h = two_idps();
    h.idp_next(json!({"name_id": "carol", "attributes": {"groups": ["corp-staff"]}}));
    h.idp2_next(json!({"name_id": "dave", "attributes": {"groups": ["partners"]}}));

    // Nothing says which IdP: a discovery page with both.
    let mut b = h.browser();
    let page = b.get(&h.url("/deep"));
    assert_eq!(page.status, 200, "{}", page.text());
    let html = page.text();
    assert!(
        html.contains("Corp IdP") && html.contains("Partner IdP"),
        "{html}"
    );
    let to_partner = link(&html, "Partner IdP");
    assert!(to_partner.contains("idp=partner") && to_partner.contains("return_to=%2Fdeep"));

    // The partner's link starts a login there, and back at /deep.
    let r = b.get(&to_partner);
    assert_eq!(r.status, 302);
    let at_idp = r.header("location").unwrap();
    assert!(at_idp.starts_with(&h.idp2_url("/sso?")), "{at_idp}");
    let page = b.get(&at_idp);
    let html = page.text();
    let field = |name: &str| {
        let key = format!("name=\"{name}\" value=\"");
        let start = html.find(&key).unwrap() + key.len();
        html[start..start + html[start..].find('"').unwrap()].to_string()
    };
    let (sr, rs) = (field("SAMLResponse"), field("RelayState"));
    let done = b.post_acs(&h.url("/_saml/acs"), Some(&sr), Some(&rs));
    assert_eq!(done.status, 303, "{}", done.text());
    assert_eq!(done.header("location").unwrap(), h.url("/deep"));
    b.get(&h.url("/deep"));
    assert_eq!(h.backend.last().one("x-auth-user"), "dave");
    let partner = h.idp2_url("/idp");
    let dave = h.with_store(move |s| s.user_by_subject(&partner, "dave").unwrap());
    assert!(dave.is_some(), "dave belongs to the partner IdP");

    // The corp IdP through the same page.
    let mut c = h.browser();
    let page = c.get(&h.url("/")).text();
    let r = c.get(&link(&page, "Corp IdP"));
    assert!(r
        .header("location")
        .unwrap()
        .starts_with(&h.idp_url("/sso?")));
    let page = c.get(&r.header("location").unwrap()).text();
    let key = "name=\"SAMLResponse\" value=\"";
    let start = page.find(key).unwrap() + key.len();
    let corp_answer = page[start..start + page[start..].find('"').unwrap()].to_string();

    // The corp answer posted into the partner login of a third browser: refused, since the
    // partner's keys do not sign it and its Issuer is not the partner.
    let mut x = h.browser();
    let page = x.get(&h.url("/")).text();
    let r = x.get(&link(&page, "Partner IdP"));
    let page = x.get(&r.header("location").unwrap()).text();
    let rs_key = "name=\"RelayState\" value=\"";
    let start = page.find(rs_key).unwrap() + rs_key.len();
    let partner_rs = page[start..start + page[start..].find('"').unwrap()].to_string();
    let crossed = x.post_acs(&h.url("/_saml/acs"), Some(&corp_answer), Some(&partner_rs));
    assert_eq!(crossed.status, 400, "{}", crossed.text());
    assert!(!x.jar.contains_key("samlgate_session"));
}

#[test]
fn the_host_picks_the_idp_without_asking() {
    let h = two_idps();
    let raw =
        "GET /app HTTP/1.1\r\nHost: partner.test\r\nAccept: text/html\r\nConnection: close\r\n\r\n";
    let r = common::http::raw(&format!("127.0.0.1:{}", h.gw_port), raw.as_bytes());
    assert_eq!(r.status, 302, "{}", r.text());
    assert!(r
        .header("location")
        .unwrap()
        .starts_with(&h.idp2_url("/sso?")));
}

#[test]
fn a_logout_request_from_one_idp_never_ends_another_idps_sessions() {
    let h = Harness::start_with(Opts {
        second_idp: true,
        signing_key: true,
        ..Opts::default()
    });
    h.idp_next(json!({"name_id": "carol"}));
    let mut b = h.browser();
    let page = b.get(&h.url("/")).text();
    let r = b.get(&link(&page, "Corp IdP"));
    let page = b.get(&r.header("location").unwrap()).text();
    let field = |name: &str| {
        let key = format!("name=\"{name}\" value=\"");
        let start = page.find(&key).unwrap() + key.len();
        page[start..start + page[start..].find('"').unwrap()].to_string()
    };
    let done = b.post_acs(
        &h.url("/_saml/acs"),
        Some(&field("SAMLResponse")),
        Some(&field("RelayState")),
    );
    assert_eq!(done.status, 303);

    // The partner IdP, correctly signed by itself, names carol: nothing of corp's ends.
    let msg = common::request(
        "POST",
        &h.idp2_url("/control/logout_request"),
        &[("Content-Type", "application/json")],
        json!({"name_id": "carol"}).to_string().as_bytes(),
    )
    .json();
    let r = h.browser().get(msg["url"].as_str().unwrap());
    assert_eq!(r.status, 302, "{}", r.text());
    let seen = h.backend.count();
    assert_eq!(b.get(&h.url("/")).status, 200);
    assert_eq!(h.backend.count(), seen + 1, "carol is still signed in");

    // Corp's own request does end it.
    let msg = common::request(
        "POST",
        &h.idp_url("/control/logout_request"),
        &[("Content-Type", "application/json")],
        json!({"name_id": "carol"}).to_string().as_bytes(),
    )
    .json();
    assert_eq!(h.browser().get(msg["url"].as_str().unwrap()).status, 302);
    let r = b.get(&h.url("/"));
    assert!(
        r.text().contains("Choose how to sign in"),
        "now carol is out, and asked where to sign in again: {}",
        r.text()
    );
}
