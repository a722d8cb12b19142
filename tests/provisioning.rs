//! Provisioning rules against a real redb file, without HTTP or SAML in the way.

use samlgate::config::{Config, GroupSync, ProvisioningPolicy};
use samlgate::provision::{provision, Outcome, Profile};
use samlgate::store::{GroupSource, Store, User};

/// The policy a config file gives, with `extra` TOML appended.
fn policy_with(extra: &str) -> ProvisioningPolicy {
    let text = format!(
        r#"
[server]
public_url = "http://127.0.0.1:8080"
[upstream]
url = "http://127.0.0.1:3000"
[idp]
metadata_file = "idp.xml"
[provisioning]
default_groups = ["everyone"]
contact = "help desk"
{extra}
"#
    );
    Config::parse(std::path::Path::new("t.toml"), &text)
        .expect("config")
        .provisioning
}

fn policy() -> ProvisioningPolicy {
    policy_with("")
}

fn profile(groups: Option<&[&str]>) -> Profile {
    Profile {
        idp: "https://idp.test".into(),
        subject: "subj-1".into(),
        username: "alice".into(),
        display_name: Some("Alice".into()),
        email: Some("alice@corp.test".into()),
        groups: groups.map(|g| g.iter().map(|s| s.to_string()).collect()),
        ..Profile::default()
    }
}

fn login(store: &Store, p: Profile, pol: ProvisioningPolicy) -> User {
    match store
        .write_blocking(move |tx| provision(tx, &p, &pol, 1_700_000_000))
        .unwrap()
    {
        Outcome::LoggedIn { user, .. } => user,
        Outcome::Refused { why, .. } => panic!("refused: {why:?}"),
    }
}

fn memberships(u: &User) -> Vec<(String, GroupSource)> {
    u.groups
        .iter()
        .map(|m| (m.group.clone(), m.source))
        .collect()
}

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("t.redb")).unwrap();
    (dir, s)
}

#[test]
fn p06_with_group_sync_off_memberships_never_change() {
    let (_d, s) = store();
    login(&s, profile(Some(&["eng"])), policy());
    let off = policy_with("[groups]\nsync = \"off\"");
    assert_eq!(off.groups.sync, GroupSync::Off);
    let u = login(&s, profile(Some(&["qa"])), off);
    assert_eq!(
        memberships(&u),
        vec![
            ("eng".into(), GroupSource::Idp),
            ("everyone".into(), GroupSource::Default)
        ]
    );
}

#[test]
fn p09_absent_group_claim_keeps_groups_and_an_empty_one_removes_idp_groups() {
    let (_d, s) = store();
    login(&s, profile(Some(&["eng", "ops"])), policy());
    let u = login(&s, profile(None), policy());
    assert_eq!(
        u.group_names(),
        vec!["eng", "everyone", "ops"],
        "absent: no sync"
    );
    let u = login(&s, profile(Some(&[])), policy());
    assert_eq!(
        memberships(&u),
        vec![("everyone".into(), GroupSource::Default)],
        "zero values"
    );
}

#[test]
fn p09_an_empty_value_never_blanks_a_stored_field() {
    let (_d, s) = store();
    login(&s, profile(Some(&[])), policy());
    let mut p = profile(Some(&[]));
    p.email = Some(String::new());
    p.display_name = None;
    let u = login(&s, p, policy());
    assert_eq!(u.email.as_deref(), Some("alice@corp.test"));
    assert_eq!(u.display_name.as_deref(), Some("Alice"));
}

#[test]
fn default_groups_follow_the_config() {
    let (_d, s) = store();
    login(&s, profile(Some(&[])), policy());
    let changed = ProvisioningPolicy {
        default_groups: vec!["staff".into()],
        ..policy()
    };
    let u = login(&s, profile(Some(&[])), changed);
    assert_eq!(
        memberships(&u),
        vec![("staff".into(), GroupSource::Default)]
    );
}

/// The single writer runs jobs one after another inside a batch, so this checks that a job
/// sees the user an earlier job of the same batch created; the end-to-end attack run posted
/// ten real ACS requests at once with the same result.
#[test]
fn p14_concurrent_first_logins_of_one_subject_make_one_user() {
    let (_d, s) = store();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let ids: Vec<u64> = rt.block_on(async {
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let s = s.clone();
                tokio::spawn(async move {
                    let p = profile(Some(&["eng"]));
                    match s
                        .write(move |tx| provision(tx, &p, &policy(), 1))
                        .await
                        .unwrap()
                    {
                        Outcome::LoggedIn { user, .. } => user.id,
                        Outcome::Refused { .. } => panic!("refused"),
                    }
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    let users = s.users().unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!(
        users[0].groups.len(),
        2,
        "one membership per group: {:?}",
        users[0].groups
    );
    let created = s
        .audit_events()
        .unwrap()
        .iter()
        .filter(|e| e.kind == "user created")
        .count();
    assert_eq!(created, 1);
}

#[test]
fn a_committed_user_survives_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.redb");
    let s = Store::open(&path).unwrap();
    login(&s, profile(Some(&["eng"])), policy());
    s.close();
    let s = Store::open(&path).unwrap();
    assert_eq!(s.users().unwrap().len(), 1);
    assert!(s
        .user_by_subject("https://idp.test", "subj-1")
        .unwrap()
        .is_some());
}

fn refused(store: &Store, p: Profile) -> samlgate::provision::Refusal {
    let pol = policy();
    match store
        .write_blocking(move |tx| provision(tx, &p, &pol, 1_700_000_100))
        .unwrap()
    {
        Outcome::Refused { why, .. } => why,
        Outcome::LoggedIn { user, .. } => panic!("logged in as {user:?}"),
    }
}

#[test]
fn p13_a_new_subject_with_another_users_email_is_refused_not_linked() {
    use samlgate::provision::Refusal;
    let (_d, s) = store();
    login(&s, profile(Some(&["admins"])), policy());
    let mut mallory = profile(Some(&[]));
    mallory.subject = "subj-2".into();
    mallory.username = "mallory".into();
    mallory.email = Some("ALICE@corp.test".into());
    assert_eq!(
        refused(&s, mallory),
        Refusal::EmailTaken("ALICE@corp.test".into())
    );
    assert_eq!(s.users().unwrap().len(), 1, "no second user");
    let audit = s.audit_events().unwrap();
    assert!(audit.iter().any(|e| e.kind == "login refused"), "{audit:?}");
}

#[test]
fn two_subjects_can_never_share_a_username() {
    // The backend trusts the username header: two people must never arrive as one.
    use samlgate::provision::Refusal;
    let (_d, s) = store();
    login(&s, profile(Some(&["admins"])), policy());
    let mut other = profile(Some(&[]));
    other.subject = "subj-2".into();
    other.email = Some("other@corp.test".into());
    other.username = "Alice".into();
    assert_eq!(
        refused(&s, other.clone()),
        Refusal::UsernameTaken("Alice".into())
    );
    // Nor by renaming an existing user onto it.
    other.username = "bob".into();
    login(&s, other.clone(), policy());
    other.username = "alice".into();
    assert_eq!(refused(&s, other), Refusal::UsernameTaken("alice".into()));
    let users = s.users().unwrap();
    assert_eq!(
        users
            .iter()
            .filter(|u| u.username.eq_ignore_ascii_case("alice"))
            .count(),
        1
    );
}

#[test]
fn a_known_users_email_change_onto_a_taken_address_keeps_the_old_one() {
    let (_d, s) = store();
    login(&s, profile(Some(&[])), policy());
    let mut bob = profile(Some(&[]));
    bob.subject = "subj-2".into();
    bob.username = "bob".into();
    bob.email = Some("bob@corp.test".into());
    login(&s, bob.clone(), policy());
    bob.email = Some("alice@corp.test".into());
    let u = login(&s, bob, policy());
    assert_eq!(u.email.as_deref(), Some("bob@corp.test"));
}

#[test]
fn add_only_sync_adds_idp_groups_and_never_removes_one() {
    let (_d, s) = store();
    let pol = policy_with("[groups]\nsync = \"add_only\"");
    login(&s, profile(Some(&["eng"])), pol.clone());
    let u = login(&s, profile(Some(&["qa"])), pol);
    assert_eq!(
        memberships(&u),
        vec![
            ("eng".into(), GroupSource::Idp),
            ("everyone".into(), GroupSource::Default),
            ("qa".into(), GroupSource::Idp)
        ]
    );
}

#[test]
fn include_and_exclude_filters_take_exact_names_and_whole_name_regexes() {
    let (_d, s) = store();
    let pol =
        policy_with("[groups]\ninclude = [\"eng\", \"regex:app-.*\"]\nexclude = [\"app-legacy\"]");
    let u = login(
        &s,
        profile(Some(&[
            "eng",
            "engineering",
            "app-wiki",
            "app-legacy",
            "my-app-x",
        ])),
        pol,
    );
    assert_eq!(u.group_names(), vec!["app-wiki", "eng", "everyone"]);
}

#[test]
fn a_set_once_field_is_filled_at_creation_and_kept_after() {
    let (_d, s) = store();
    let pol = policy_with(
        "[attributes]\ndisplay_name = { names = [\"displayName\"], update = \"once\" }",
    );
    login(&s, profile(None), pol.clone());
    let mut p = profile(None);
    p.display_name = Some("Alice Renamed".into());
    p.email = Some("alice.new@corp.test".into());
    let u = login(&s, p, pol);
    assert_eq!(u.display_name.as_deref(), Some("Alice"), "set once");
    assert_eq!(
        u.email.as_deref(),
        Some("alice.new@corp.test"),
        "authoritative"
    );
}

#[test]
fn a_group_needing_approval_is_stored_pending_and_not_forwarded() {
    let (_d, s) = store();
    let pol = policy_with("[groups]\nrequire_approval = [\"admins\"]");
    let u = login(&s, profile(Some(&["admins", "eng"])), pol);
    assert!(u.groups.iter().any(|m| m.group == "admins" && m.pending));
    assert_eq!(u.group_names(), vec!["eng", "everyone"]);
}

#[test]
fn the_overage_claim_is_never_read_as_no_groups() {
    let (_d, s) = store();
    login(&s, profile(Some(&["eng"])), policy());
    let mut p = profile(None);
    p.groups_overage = true;
    let u = login(&s, p, policy());
    assert_eq!(u.group_names(), vec!["eng", "everyone"]);
}

#[test]
fn policy_mistakes_fail_at_start_with_the_key() {
    let bad = |extra: &str, key: &str| {
        let text = format!(
            "[server]\npublic_url = \"http://127.0.0.1:8080\"\n[upstream]\nurl = \"http://127.0.0.1:3000\"\n[idp]\nmetadata_file = \"idp.xml\"\n{extra}\n"
        );
        let e = Config::parse(std::path::Path::new("t.toml"), &text)
            .err()
            .unwrap_or_else(|| panic!("{extra:?} must be refused"))
            .to_string();
        assert!(e.contains(key), "{e} should name {key}");
    };
    bad("[groups]\nsync = \"sometimes\"", "groups.sync");
    bad("[groups]\nexclude = [\"regex:(\"]", "groups.exclude");
    bad(
        "[identity]\nname_id_formats = [\"transient\"]",
        "identity.name_id_formats",
    );
    bad(
        "[identity]\nname_id_formats = [\"bogus\"]",
        "identity.name_id_formats",
    );
    bad("[admin]\nlisten = \"0.0.0.0:9180\"", "admin.listen");
    bad(
        "[attributes]\nemail = { names = [\"mail\"], update = \"never\" }",
        "attributes.email",
    );
    bad(
        "[attributes.extra.dept]\nnames = [\"department\"]",
        "attributes.extra",
    );
}

#[test]
fn a_user_stored_under_an_unfolded_address_is_moved_not_duplicated() {
    let (_d, s) = store();
    let mut p = profile(None);
    p.subject = "Alice@Corp.TEST".into();
    let before = login(&s, p, policy());
    let mut p = profile(None);
    p.subject = "alice@corp.test".into();
    p.subject_as_sent = Some("Alice@Corp.TEST".into());
    let after = login(&s, p, policy());
    assert_eq!(after.id, before.id);
    assert_eq!(after.subject, "alice@corp.test");
    assert_eq!(s.users().unwrap().len(), 1);
    assert!(s
        .user_by_subject("https://idp.test", "Alice@Corp.TEST")
        .unwrap()
        .is_none());
    assert_eq!(s.check().unwrap(), Vec::<String>::new());
}

#[test]
fn a_group_taken_off_the_approval_list_stops_waiting() {
    let (_d, s) = store();
    let strict = policy_with("[groups]\nsync = \"add_only\"\nrequire_approval = [\"admins\"]");
    login(&s, profile(Some(&["admins"])), strict);
    let relaxed = policy_with("[groups]\nsync = \"add_only\"");
    let u = login(&s, profile(Some(&["eng"])), relaxed);
    assert_eq!(u.group_names(), vec!["admins", "eng", "everyone"]);
}
