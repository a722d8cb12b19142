//! Admin operations and store queries against a real redb file, without HTTP.

use samlgate::directory::Directory;
use samlgate::store::{AuditQuery, GroupSource, Membership, Store, User, UserStatus};

fn user(id: u64, username: &str) -> User {
    User {
        id,
        idp: "https://idp.test".into(),
        subject: format!("subject-{id}"),
        username: username.into(),
        display_name: None,
        email: None,
        given_name: None,
        family_name: None,
        attributes: Default::default(),
        status: UserStatus::Active,
        groups: vec![Membership::new("eng", GroupSource::Idp)],
        created_at: 0,
        updated_at: 0,
        last_login_at: None,
    }
}

fn setup(users: Vec<User>) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("d.redb")).unwrap();
    store
        .write_blocking(move |tx| {
            for u in &users {
                tx.put_user(u)?;
            }
            Ok(())
        })
        .unwrap();
    (dir, store)
}

#[test]
fn a_number_that_is_one_users_id_and_anothers_username_is_refused_as_ambiguous() {
    let (_d, store) = setup(vec![user(1, "alice"), user(2, "1")]);
    let dir = Directory::new(store, None, None, "test");
    let e = dir.find("1").unwrap_err().to_string();
    assert!(e.contains("id:1") && e.contains("name:1"), "{e}");
    assert_eq!(dir.find("id:1").unwrap().username, "alice");
    assert_eq!(dir.find("name:1").unwrap().id, 2);
    assert_eq!(dir.find("2").unwrap().id, 2, "only an id: no ambiguity");
    assert_eq!(dir.find("ALICE").unwrap().id, 1);
    assert!(dir.find("id:x").is_err() && dir.find("nobody").is_err());
}

#[test]
fn following_the_audit_log_returns_the_oldest_events_after_the_mark() {
    let (_d, store) = setup(vec![]);
    store
        .write_blocking(|tx| {
            for i in 0..10 {
                tx.audit(i, "tick", None, serde_json::json!({ "i": i }))?;
            }
            Ok(())
        })
        .unwrap();
    let q = |after: Option<u64>, limit: Option<usize>| {
        store
            .audit_query(&AuditQuery {
                after_seq: after,
                limit,
                ..Default::default()
            })
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        q(Some(3), Some(2)),
        vec![4, 5],
        "the next events, not the newest"
    );
    assert_eq!(q(None, Some(2)), vec![9, 10], "without a mark: the newest");
    assert_eq!(q(Some(u64::MAX), Some(5)), Vec::<u64>::new());
    assert_eq!(q(None, Some(0)), Vec::<u64>::new());
}

#[test]
fn disabling_a_user_ends_every_session_and_leaves_the_store_consistent() {
    let (_d, store) = setup(vec![user(1, "alice"), user(2, "bob")]);
    store
        .write_blocking(|tx| {
            for (i, uid) in [(1u8, 1u64), (2, 1), (3, 2)] {
                let rec = samlgate::store::SessionRecord {
                    user_id: uid,
                    created_at: 0,
                    expires_at: i64::MAX,
                    last_seen: 0,
                    session_index: None,
                    name_id: None,
                    name_id_format: None,
                };
                tx.put_session(&[i; 32], &rec)?;
            }
            Ok(())
        })
        .unwrap();
    let dir = Directory::new(store.clone(), None, None, "test");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(dir.set_status("alice", UserStatus::Disabled))
        .unwrap();
    assert!(store.session(&[1; 32]).unwrap().is_none());
    assert!(store.session(&[2; 32]).unwrap().is_none());
    assert!(store.session(&[3; 32]).unwrap().is_some(), "bob keeps his");
    rt.block_on(dir.delete("bob")).unwrap();
    assert!(store.session(&[3; 32]).unwrap().is_none());
    assert_eq!(store.check().unwrap(), Vec::<String>::new());
}
