//! A mutation fuzzer over the ACS input (proptest; cargo-fuzz needs a nightly toolchain this
//! project does not assume). Genuine responses from the pysaml2 IdP, in every signing and
//! encryption shape, are mutated (bit flips, deletions, duplications, inserted XML fragments,
//! text replaced by "admin", base64 damage) and handed to the in-process service provider.
//!
//! The properties: `verify_response` never panics, and whatever it accepts carries exactly the
//! identity the IdP signed. A short run is part of the test suite; a long one:
//!
//!     SAMLGATE_FUZZ_SECONDS=600 cargo test --release --test fuzz_acs -- --nocapture

mod common;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{Harness, Opts};
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, RngAlgorithm, TestRng, TestRunner};
use serde_json::json;

struct Genuine {
    xml: Vec<u8>,
    request_id: String,
    name_id: String,
    attributes: Vec<(String, Vec<String>)>,
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Delete(usize, usize),
    Duplicate(usize, usize, usize),
    Insert(usize, usize),
    ReplaceText(usize),
    Truncate(usize),
    Base64Damage(usize),
}

/// Fragments that have broken SAML service providers before.
const FRAGMENTS: &[&str] = &[
    "<!--x-->",
    "<?pi x?>",
    "<!DOCTYPE r [<!ENTITY e \"admin\">]>",
    "&e;",
    "<saml:Assertion xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" ID=\"dup\"><saml:Subject><saml:NameID>admin</saml:NameID></saml:Subject></saml:Assertion>",
    "<ds:Signature xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"/>",
    "<samlp:Extensions xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\"><x ID=\"id-1\"/></samlp:Extensions>",
    " ID=\"dup\"",
    " xmlns:saml=\"urn:evil\"",
    "</saml:Assertion>",
    "<saml:NameID>admin</saml:NameID>",
    "<![CDATA[admin]]>",
    "\u{0}",
    "\u{feff}",
    "<saml:EncryptedAssertion xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\"/>",
];

fn mutation() -> impl Strategy<Value = Mutation> {
    let pos = 0usize..100_000;
    prop_oneof![
        3 => (pos.clone(), any::<u8>()).prop_map(|(p, b)| Mutation::Flip(p, b)),
        2 => (pos.clone(), 1usize..200).prop_map(|(p, n)| Mutation::Delete(p, n)),
        2 => (pos.clone(), 1usize..2000, pos.clone()).prop_map(|(p, n, to)| Mutation::Duplicate(p, n, to)),
        4 => (pos.clone(), 0..FRAGMENTS.len()).prop_map(|(p, f)| Mutation::Insert(p, f)),
        4 => (0usize..200).prop_map(Mutation::ReplaceText),
        1 => pos.clone().prop_map(Mutation::Truncate),
        1 => pos.prop_map(Mutation::Base64Damage),
    ]
}

fn apply(xml: &[u8], mutations: &[Mutation]) -> String {
    let mut x = xml.to_vec();
    let mut b64_damage = None;
    for m in mutations {
        let at = |p: usize, len: usize| if len == 0 { 0 } else { p % len };
        match *m {
            Mutation::Flip(p, b) if !x.is_empty() => {
                let i = at(p, x.len());
                x[i] ^= b.max(1);
            }
            Mutation::Delete(p, n) if !x.is_empty() => {
                let i = at(p, x.len());
                let end = (i + n).min(x.len());
                x.drain(i..end);
            }
            Mutation::Duplicate(p, n, to) if !x.is_empty() => {
                let i = at(p, x.len());
                let part = x[i..(i + n).min(x.len())].to_vec();
                let j = at(to, x.len() + 1);
                x.splice(j..j, part);
            }
            Mutation::Insert(p, f) => {
                let j = at(p, x.len() + 1);
                x.splice(j..j, FRAGMENTS[f].bytes());
            }
            Mutation::ReplaceText(k) => {
                // The k-th text between tags becomes "admin". Offsets are taken on the bytes
                // themselves: a lossy UTF-8 copy (earlier flips may leave invalid bytes) has
                // other lengths, which once sent the splice past the end.
                let texts: Vec<(usize, usize)> = x
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| **b == b'>')
                    .filter_map(|(i, _)| {
                        let end = x[i + 1..].iter().position(|b| *b == b'<')? + i + 1;
                        (end > i + 1).then_some((i + 1, end))
                    })
                    .collect();
                if !texts.is_empty() {
                    let (a, b) = texts[k % texts.len()];
                    x.splice(a..b, b"admin".iter().copied());
                }
            }
            Mutation::Truncate(p) => {
                let i = at(p, x.len() + 1);
                x.truncate(i);
            }
            Mutation::Base64Damage(p) => b64_damage = Some(p),
            _ => {}
        }
    }
    let mut field = base64::engine::general_purpose::STANDARD.encode(&x);
    if let Some(p) = b64_damage {
        let i = p % (field.len() + 1);
        field.insert(i, '*');
    }
    field
}

fn genuine_responses(h: &Harness) -> Vec<Genuine> {
    let base = json!({"name_id": "alice@corp.test", "name_id_format": "email",
        "attributes": {"groups": ["staff", "admins-readonly"], "displayName": ["Alice"]},
        "not_on_or_after_seconds": 3600});
    let shapes = [
        json!({}),
        json!({"sign_assertion": false, "sign_response": true}),
        json!({"sign_assertion": true, "sign_response": true}),
        json!({"encrypt": true, "enc_data": "aes256-cbc"}),
        json!({"encrypt": true, "enc_data": "aes128-gcm", "sign_assertion": false, "sign_response": true}),
    ];
    let mut out = Vec::new();
    for shape in shapes {
        let mut s = base.clone();
        for (k, v) in shape.as_object().unwrap() {
            s[k] = v.clone();
        }
        h.idp_next(s);
        let (_, form) = h.browser().visit_to_idp(&h.url("/"));
        let xml = base64::engine::general_purpose::STANDARD
            .decode(&form.saml_response)
            .unwrap();
        let text = String::from_utf8(xml.clone()).unwrap();
        let at = text.find("InResponseTo=\"").unwrap() + 14;
        let request_id = text[at..at + text[at..].find('"').unwrap()].to_string();
        out.push(Genuine {
            xml,
            request_id,
            name_id: "alice@corp.test".into(),
            attributes: vec![
                ("displayName".into(), vec!["Alice".into()]),
                (
                    "groups".into(),
                    vec!["staff".into(), "admins-readonly".into()],
                ),
            ],
        });
    }
    out
}

#[test]
fn the_acs_never_panics_and_accepts_only_what_the_idp_signed() {
    let h = Harness::start_with(Opts {
        encryption_keys: 1,
        idp: "max_issue_delay_seconds = 3600".into(),
        ..Opts::default()
    });
    let config = samlgate::config::Config::load(&h.config_path).expect("config");
    let sp =
        samlgate::saml::ServiceProvider::new(&config, &config.idps[0]).expect("service provider");
    let corpus = genuine_responses(&h);

    // Every genuine response verifies unmutated (so mutations start from accepted input).
    for g in &corpus {
        let field = apply(&g.xml, &[]);
        let v = sp
            .verify_response(&field, &g.request_id)
            .expect("genuine response");
        assert_eq!(v.name_id, g.name_id);
    }

    let seconds: u64 = std::env::var("SAMLGATE_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let config = RunnerConfig {
        cases: if seconds == 0 { 400 } else { 2000 },
        failure_persistence: None,
        ..RunnerConfig::default()
    };
    // A runner counts its successes across `run` calls, so each round gets a fresh one, with
    // its own seed (printed, so a failure can be replayed with SAMLGATE_FUZZ_SEED).
    let base_seed: u64 = std::env::var("SAMLGATE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("fuzz_acs: seed {base_seed}");
    let mut round = 0u64;
    let strategy = (0..corpus.len(), prop::collection::vec(mutation(), 1..4));
    // The runner takes an `Fn`: counters go through cells.
    let (cases, accepted) = (Cell::new(0u64), Cell::new(0u64));
    let causes: RefCell<BTreeMap<String, u64>> = RefCell::default();
    let started = Instant::now();
    loop {
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&base_seed.to_le_bytes());
        seed[8..16].copy_from_slice(&round.to_le_bytes());
        round += 1;
        let mut runner = TestRunner::new_with_rng(
            config.clone(),
            TestRng::from_seed(RngAlgorithm::ChaCha, &seed),
        );
        let result = runner.run(&strategy, |(i, mutations)| {
            let g = &corpus[i];
            let field = apply(&g.xml, &mutations);
            cases.set(cases.get() + 1);
            match sp.verify_response(&field, &g.request_id) {
                Ok(v) => {
                    accepted.set(accepted.get() + 1);
                    prop_assert_eq!(&v.name_id, &g.name_id, "accepted a changed identity");
                    let mut got: Vec<(String, Vec<String>)> = v
                        .attributes
                        .iter()
                        .map(|a| (a.name.clone(), a.values.clone()))
                        .collect();
                    got.sort();
                    prop_assert_eq!(&got, &g.attributes, "accepted changed attributes");
                }
                Err(e) => {
                    let cause = format!("{e:?}");
                    let cause = cause
                        .split(['(', ' ', '{'])
                        .next()
                        .unwrap_or("")
                        .to_string();
                    *causes.borrow_mut().entry(cause).or_default() += 1;
                }
            }
            Ok(())
        });
        if let Err(e) = result {
            panic!("{e}");
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (cases, accepted, causes) = (cases.get(), accepted.get(), causes.into_inner());
    println!(
        "fuzz_acs: {cases} cases in {elapsed:.0} s ({:.0}/s), {accepted} accepted (identity unchanged), no panic",
        cases as f64 / elapsed
    );
    println!("fuzz_acs: refusals by cause: {causes:?}");
}
