//! Just-in-time provisioning: what a verified login changes in the directory.
//!
//! Runs inside one store write transaction (see `store::Writer`), so a user, their groups,
//! the audit records and the new session land together or not at all. Refusals are values,
//! not errors, and are decided before anything is written.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

use crate::config::{GroupSync, ProvisioningPolicy};
use crate::store::{GroupSource, Membership, StoreError, Tx, User, UserStatus};

/// What the IdP said about the user, already mapped from SAML attributes.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    pub idp: String,
    /// The immutable user key (the NameID or `identity.key_attribute`), already normalised.
    pub subject: String,
    /// The key as sent, when normalising changed it: users stored under it before case
    /// folding applied are moved to `subject` rather than duplicated.
    pub subject_as_sent: Option<String>,
    pub username: String,
    pub display_name: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub email: Option<String>,
    /// Raw IdP group values, before mapping and filters.
    /// `None`: the assertion carried no group attribute, so memberships are left alone.
    /// `Some(vec![])`: it carried one with no values, so IdP groups are removed.
    pub groups: Option<Vec<String>>,
    /// Entra's overage claim arrived instead of the groups: the list is incomplete, so it
    /// must never be read as "no groups".
    pub groups_overage: bool,
    /// Extra attributes by config key.
    pub extra: BTreeMap<String, String>,
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
    /// The IdP sent the group overage claim and the policy needs the real list.
    GroupOverage,
}

/// What a successful login changed, for the log and the metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub created: bool,
    pub updated: bool,
    pub reactivated: bool,
    pub groups_added: usize,
    pub groups_removed: usize,
}

#[derive(Debug)]
pub enum Outcome {
    LoggedIn {
        user: User,
        changes: Changes,
    },
    /// `user` is `None` when the refused login would have created one.
    Refused {
        user: Option<User>,
        why: Refusal,
    },
}

fn refuse(
    tx: &mut Tx<'_>,
    now: i64,
    user: Option<User>,
    subject: &str,
    why: Refusal,
) -> Result<Outcome, StoreError> {
    let reason = match &why {
        Refusal::Disabled => "disabled by an admin".to_string(),
        Refusal::Inactive => "inactive; reactivation is off".to_string(),
        Refusal::GroupOverage => {
            "the IdP sent the group overage claim and groups.overage = refuse".to_string()
        }
        other => format!("{other:?}"),
    };
    tx.audit(
        now,
        "login refused",
        user.as_ref(),
        json!({"subject": subject, "reason": reason}),
    )?;
    Ok(Outcome::Refused { user, why })
}

pub fn provision(
    tx: &mut Tx<'_>,
    profile: &Profile,
    policy: &ProvisioningPolicy,
    now: i64,
) -> Result<Outcome, StoreError> {
    let mut existing = tx.user_by_subject(&profile.idp, &profile.subject)?;
    if existing.is_none() {
        if let Some(raw) = &profile.subject_as_sent {
            if let Some(mut u) = tx.user_by_subject(&profile.idp, raw)? {
                tx.rekey_subject(&mut u, &profile.subject)?;
                tx.audit(
                    now,
                    "user rekeyed",
                    Some(&u),
                    json!({"from": raw, "to": profile.subject}),
                )?;
                existing = Some(u);
            }
        }
    }
    if profile.groups_overage && policy.groups.refuse_on_overage {
        return refuse(tx, now, existing, &profile.subject, Refusal::GroupOverage);
    }
    let Some(mut user) = existing else {
        if let Some(why) = identity_conflict(tx, profile, None)? {
            return refuse(tx, now, None, &profile.subject, why);
        }
        let user = create(tx, profile, policy, now)?;
        return Ok(Outcome::LoggedIn {
            user,
            changes: Changes {
                created: true,
                ..Changes::default()
            },
        });
    };
    let mut changes = Changes::default();

    match user.status {
        UserStatus::Disabled => {
            return refuse(tx, now, Some(user), &profile.subject, Refusal::Disabled)
        }
        UserStatus::Inactive if !policy.reactivate_inactive => {
            return refuse(tx, now, Some(user), &profile.subject, Refusal::Inactive)
        }
        UserStatus::Inactive => {
            user.status = UserStatus::Active;
            user.updated_at = now;
            changes.reactivated = true;
            tx.audit(now, "user reactivated", Some(&user), json!({"by": "login"}))?;
        }
        UserStatus::Active => {}
    }

    if let Some(why) = identity_conflict(tx, profile, Some(user.id))? {
        match why {
            Refusal::UsernameTaken(_) if policy.updates_always("username") => {
                return refuse(tx, now, Some(user), &profile.subject, why);
            }
            // A known user's new address that another user holds: keep the old address.
            Refusal::EmailTaken(_) => {
                log::warn!(
                    "user {}: the IdP sent e-mail {:?}, which belongs to another user; e-mail not updated",
                    user.username,
                    profile.email
                );
            }
            _ => {}
        }
    }
    let email_free = match profile.email.as_deref().filter(|e| !e.is_empty()) {
        Some(e) => tx.email_owner(e)?.is_none_or(|id| id == user.id),
        None => true,
    };

    let mut changed = serde_json::Map::new();
    let mut set = |field: &str, slot: &mut Option<String>, new: &Option<String>| {
        // An empty or missing value never blanks a stored one; a set-once field is only
        // filled while empty.
        if slot.is_some() && !policy.updates_always(field) {
            return;
        }
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
    set("given_name", &mut user.given_name, &profile.given_name);
    set("family_name", &mut user.family_name, &profile.family_name);
    if email_free {
        set("email", &mut user.email, &profile.email);
    }
    for (key, value) in &profile.extra {
        let mut slot = user.attributes.get(key).cloned();
        set(key, &mut slot, &Some(value.clone()));
        if let Some(v) = slot {
            user.attributes.insert(key.clone(), v);
        }
    }
    if !profile.username.is_empty()
        && user.username != profile.username
        && policy.updates_always("username")
        && tx
            .username_owner(&profile.username)?
            .is_none_or(|id| id == user.id)
    {
        changed.insert(
            "username".into(),
            json!({"from": user.username, "to": profile.username}),
        );
        user.username = profile.username.clone();
    }
    if !changed.is_empty() {
        user.updated_at = now;
        changes.updated = true;
        tx.audit(
            now,
            "user updated",
            Some(&user),
            json!({ "changed": changed }),
        )?;
    }

    if profile.groups_overage {
        log::warn!(
            "user {}: the IdP sent the group overage claim (http://schemas.microsoft.com/claims/groups.link) instead of the groups; stored IdP memberships are kept. At the IdP, emit only \"Groups assigned to the application\" or filter the group claim so it stays under the limit",
            user.username
        );
        tx.audit(
            now,
            "group overage",
            Some(&user),
            json!({"kept": user.groups.iter().filter(|m| m.source == GroupSource::Idp).map(|m| &m.group).collect::<Vec<_>>()}),
        )?;
    }
    let (added, removed) = sync_groups(&mut user.groups, profile, policy);
    if !added.is_empty() || !removed.is_empty() {
        user.updated_at = now;
        changes.groups_added = added.len();
        changes.groups_removed = removed.len();
        tx.audit(
            now,
            "groups changed",
            Some(&user),
            json!({"added": added, "removed": removed}),
        )?;
    }

    user.last_login_at = Some(now);
    tx.put_user(&user)?;
    Ok(Outcome::LoggedIn { user, changes })
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
    let nonempty = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
    let mut user = User {
        id: tx.next_user_id()?,
        idp: profile.idp.clone(),
        subject: profile.subject.clone(),
        username: profile.username.clone(),
        display_name: nonempty(&profile.display_name),
        email: nonempty(&profile.email),
        given_name: nonempty(&profile.given_name),
        family_name: nonempty(&profile.family_name),
        attributes: profile
            .extra
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
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
    let gp = &policy.groups;
    let before: BTreeSet<Membership> = groups.iter().cloned().collect();
    let stored_idp: Vec<&Membership> = before
        .iter()
        .filter(|m| m.source == GroupSource::Idp)
        .collect();
    let mut after: BTreeSet<Membership> = before
        .iter()
        .filter(|m| m.source == GroupSource::Local)
        .cloned()
        .collect();

    let claimed: Option<BTreeSet<String>> = match (&profile.groups, gp.sync) {
        (_, GroupSync::Off) => None,
        (Some(values), _) if !profile.groups_overage => {
            Some(values.iter().filter_map(|v| gp.local_name(v)).collect())
        }
        _ => None,
    };
    match claimed {
        // No claim, an incomplete one, or sync off: IdP memberships stay as they are.
        None => after.extend(stored_idp.iter().map(|m| (*m).clone())),
        Some(names) => {
            if gp.sync == GroupSync::AddOnly {
                after.extend(stored_idp.iter().map(|m| (*m).clone()));
            }
            for name in names {
                if after
                    .iter()
                    .any(|m| m.source == GroupSource::Idp && m.group == name)
                {
                    continue;
                }
                // An approval, once given, holds while the IdP keeps sending the group.
                let pending = gp.require_approval.contains(&name)
                    && !stored_idp.iter().any(|m| m.group == name && !m.pending);
                after.insert(Membership {
                    group: name,
                    source: GroupSource::Idp,
                    pending,
                });
            }
        }
    }
    // A group taken off `require_approval` no longer waits, whatever the sync mode.
    let after: BTreeSet<Membership> = after
        .into_iter()
        .map(|mut m| {
            if m.pending && !gp.require_approval.contains(&m.group) {
                m.pending = false;
            }
            m
        })
        .collect();
    let mut after = after;
    after.extend(
        policy
            .default_groups
            .iter()
            .map(|g| Membership::new(g.clone(), GroupSource::Default)),
    );

    let label = |m: &Membership| {
        let pending = if m.pending { ", pending approval" } else { "" };
        format!("{} ({:?}{pending})", m.group, m.source).to_lowercase()
    };
    let added = after.difference(&before).map(label).collect();
    let removed = before.difference(&after).map(label).collect();
    *groups = after.into_iter().collect();
    (added, removed)
}
