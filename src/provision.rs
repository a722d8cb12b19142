//! Just-in-time provisioning: what a verified login changes in the directory.
//!
//! Runs inside one store write transaction (see `store::Writer`), so a user, their groups,
//! the audit records and the new session land together or not at all. Refusals are values,
//! not errors, and are decided before anything is written.

use std::collections::BTreeSet;

use serde_json::json;

use crate::config::ProvisioningPolicy;
use crate::store::{GroupSource, Membership, StoreError, Tx, User, UserStatus};

/// What the IdP said about the user, already mapped from SAML attributes.
#[derive(Debug, Clone)]
pub struct Profile {
    pub idp: String,
    /// The immutable subject key (the NameID).
    pub subject: String,
    pub username: String,
    pub display_name: Option<String>,
    pub email: Option<String>,
    /// `None`: the assertion carried no group attribute, so memberships are left alone.
    /// `Some(vec![])`: it carried one with no values, so IdP groups are removed.
    pub groups: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Disabled by an admin.
    Disabled,
    /// Inactive, and the policy does not reactivate on login.
    Inactive,
    /// The username belongs to another user; the backend would see two people as one.
    UsernameTaken(String),
    /// A new subject arrived with an e-mail address another user holds; never linked silently.
    EmailTaken(String),
}

#[derive(Debug)]
pub enum Outcome {
    LoggedIn {
        user: User,
        created: bool,
    },
    /// `user` is `None` when the refused login would have created one.
    Refused {
        user: Option<User>,
        why: Refusal,
    },
}

pub fn provision(
    tx: &mut Tx<'_>,
    profile: &Profile,
    policy: &ProvisioningPolicy,
    now: i64,
) -> Result<Outcome, StoreError> {
    let Some(mut user) = tx.user_by_subject(&profile.idp, &profile.subject)? else {
        if let Some(why) = identity_conflict(tx, profile, None)? {
            tx.audit(
                now,
                "login refused",
                None,
                json!({"subject": profile.subject, "reason": format!("{why:?}")}),
            )?;
            return Ok(Outcome::Refused { user: None, why });
        }
        let user = create(tx, profile, policy, now)?;
        return Ok(Outcome::LoggedIn {
            user,
            created: true,
        });
    };

    match user.status {
        UserStatus::Disabled => {
            tx.audit(
                now,
                "login refused",
                Some(&user),
                json!({"reason": "disabled by an admin"}),
            )?;
            return Ok(Outcome::Refused {
                user: Some(user),
                why: Refusal::Disabled,
            });
        }
        UserStatus::Inactive if !policy.reactivate_inactive => {
            tx.audit(
                now,
                "login refused",
                Some(&user),
                json!({"reason": "inactive; reactivation is off"}),
            )?;
            return Ok(Outcome::Refused {
                user: Some(user),
                why: Refusal::Inactive,
            });
        }
        UserStatus::Inactive => {
            user.status = UserStatus::Active;
            user.updated_at = now;
            tx.audit(now, "user reactivated", Some(&user), json!({"by": "login"}))?;
        }
        UserStatus::Active => {}
    }

    if let Some(why) = identity_conflict(tx, profile, Some(user.id))? {
        match why {
            Refusal::UsernameTaken(_) => {
                tx.audit(
                    now,
                    "login refused",
                    Some(&user),
                    json!({"reason": format!("{why:?}")}),
                )?;
                return Ok(Outcome::Refused {
                    user: Some(user),
                    why,
                });
            }
            // A known user's new address that another user holds: keep the old address.
            _ => {
                log::warn!(
                    "user {}: the IdP sent e-mail {:?}, which belongs to another user; e-mail not updated",
                    user.username,
                    profile.email
                );
            }
        }
    }
    let email_free = match profile.email.as_deref().filter(|e| !e.is_empty()) {
        Some(e) => tx.email_owner(e)?.is_none_or(|id| id == user.id),
        None => true,
    };

    let mut changed = serde_json::Map::new();
    let mut set = |field: &str, slot: &mut Option<String>, new: &Option<String>| {
        // An empty or missing value never blanks a stored one.
        if let Some(new) = new.as_ref().filter(|v| !v.is_empty()) {
            if slot.as_ref() != Some(new) {
                changed.insert(field.into(), json!({"from": slot, "to": new}));
                *slot = Some(new.clone());
            }
        }
    };
    set(
        "display_name",
        &mut user.display_name,
        &profile.display_name,
    );
    if email_free {
        set("email", &mut user.email, &profile.email);
    }
    if !profile.username.is_empty() && user.username != profile.username {
        changed.insert(
            "username".into(),
            json!({"from": user.username, "to": profile.username}),
        );
        user.username = profile.username.clone();
    }
    if !changed.is_empty() {
        user.updated_at = now;
        tx.audit(
            now,
            "user updated",
            Some(&user),
            json!({ "changed": changed }),
        )?;
    }

    let (added, removed) = sync_groups(&mut user.groups, profile, policy);
    if !added.is_empty() || !removed.is_empty() {
        user.updated_at = now;
        tx.audit(
            now,
            "groups changed",
            Some(&user),
            json!({"added": added, "removed": removed}),
        )?;
    }

    user.last_login_at = Some(now);
    tx.put_user(&user)?;
    Ok(Outcome::LoggedIn {
        user,
        created: false,
    })
}

/// Whether the profile's username or e-mail already belongs to a user other than `me`.
fn identity_conflict(
    tx: &Tx<'_>,
    profile: &Profile,
    me: Option<u64>,
) -> Result<Option<Refusal>, StoreError> {
    if let Some(owner) = tx.username_owner(&profile.username)? {
        if Some(owner) != me {
            return Ok(Some(Refusal::UsernameTaken(profile.username.clone())));
        }
    }
    if let Some(email) = profile.email.as_deref().filter(|e| !e.is_empty()) {
        if let Some(owner) = tx.email_owner(email)? {
            if Some(owner) != me {
                return Ok(Some(Refusal::EmailTaken(email.to_string())));
            }
        }
    }
    Ok(None)
}

fn create(
    tx: &mut Tx<'_>,
    profile: &Profile,
    policy: &ProvisioningPolicy,
    now: i64,
) -> Result<User, StoreError> {
    let mut user = User {
        id: tx.next_user_id()?,
        idp: profile.idp.clone(),
        subject: profile.subject.clone(),
        username: profile.username.clone(),
        display_name: profile.display_name.clone().filter(|v| !v.is_empty()),
        email: profile.email.clone().filter(|v| !v.is_empty()),
        status: UserStatus::Active,
        groups: Vec::new(),
        created_at: now,
        updated_at: now,
        last_login_at: Some(now),
    };
    sync_groups(&mut user.groups, profile, policy);
    tx.put_user(&user)?;
    tx.audit(
        now,
        "user created",
        Some(&user),
        json!({
            "username": user.username,
            "email": user.email,
            "display_name": user.display_name,
            "groups": user.groups,
        }),
    )?;
    Ok(user)
}

/// Bring `idp` and `default` memberships in line with the login and the policy; `local` ones
/// belong to admins and are never touched. Returns (added, removed) as "group (source)".
fn sync_groups(
    groups: &mut Vec<Membership>,
    profile: &Profile,
    policy: &ProvisioningPolicy,
) -> (Vec<String>, Vec<String>) {
    let before: BTreeSet<Membership> = groups.iter().cloned().collect();
    let mut after: BTreeSet<Membership> = before
        .iter()
        .filter(|m| m.source == GroupSource::Local)
        .cloned()
        .collect();

    let idp_groups: Vec<Membership> = match (&profile.groups, policy.sync_groups) {
        (Some(values), true) => values
            .iter()
            // Kept exactly as sent (spaces included): the header encoding is reversible.
            .filter(|v| !v.trim().is_empty())
            .map(|g| Membership {
                group: g.clone(),
                source: GroupSource::Idp,
            })
            .collect(),
        // No claim, or sync off: IdP memberships stay as they are.
        _ => before
            .iter()
            .filter(|m| m.source == GroupSource::Idp)
            .cloned()
            .collect(),
    };
    after.extend(idp_groups);
    after.extend(policy.default_groups.iter().map(|g| Membership {
        group: g.clone(),
        source: GroupSource::Default,
    }));

    let label = |m: &Membership| format!("{} ({:?})", m.group, m.source).to_lowercase();
    let added = after.difference(&before).map(label).collect();
    let removed = before.difference(&after).map(label).collect();
    *groups = after.into_iter().collect();
    (added, removed)
}
