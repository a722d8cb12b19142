//! Who may reach a route: the route's `Access` against the user's groups. Plain data in,
//! a reason out; the page is written by `respond`.

use crate::config::Access;
use crate::session::Groups;

/// Why a logged-in user may not use a route, in words the user can pass on.
#[derive(Debug, PartialEq, Eq)]
pub struct Denied {
    pub route: String,
    /// The user is in none of these (and needs one).
    pub needs_one_of: Vec<String>,
    /// The user lacks these (and needs all).
    pub missing: Vec<String>,
}

impl Denied {
    pub fn reason(&self) -> String {
        let mut parts = Vec::new();
        if !self.needs_one_of.is_empty() {
            parts.push(format!(
                "membership in one of these groups: {}",
                self.needs_one_of.join(", ")
            ));
        }
        if !self.missing.is_empty() {
            parts.push(format!(
                "membership in these groups, which your account lacks: {}",
                self.missing.join(", ")
            ));
        }
        format!(
            "This application ({}) requires {}. Ask your administrator for access.",
            self.route,
            parts.join("; and ")
        )
    }
}

pub fn check(route: &str, access: &Access, groups: &Groups) -> Result<(), Denied> {
    let Access::Groups { any_of, all_of } = access else {
        return Ok(());
    };
    let has = |g: &String| groups.contains(g);
    let needs_one_of = if any_of.is_empty() || any_of.iter().any(has) {
        Vec::new()
    } else {
        any_of.clone()
    };
    let missing: Vec<String> = all_of.iter().filter(|g| !has(g)).cloned().collect();
    if needs_one_of.is_empty() && missing.is_empty() {
        Ok(())
    } else {
        Err(Denied {
            route: route.to_string(),
            needs_one_of,
            missing,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn gs(v: &[&str]) -> Groups {
        v.iter().collect()
    }

    #[test]
    fn any_of_and_all_of_name_exactly_what_is_missing() {
        let a = Access::Groups {
            any_of: g(&["eng", "ops"]),
            all_of: g(&["staff", "vpn"]),
        };
        assert!(check("wiki", &a, &gs(&["ops", "staff", "vpn"])).is_ok());
        let d = check("wiki", &a, &gs(&["staff"])).unwrap_err();
        assert_eq!(d.needs_one_of, g(&["eng", "ops"]));
        assert_eq!(d.missing, g(&["vpn"]));
        assert!(d.reason().contains("eng, ops") && d.reason().contains("vpn"));
        // Group names are compared exactly: no case folding, no prefix match.
        assert!(check("wiki", &a, &gs(&["ENG", "staff", "vpn"])).is_err());
        assert!(check("x", &Access::Authenticated, &Groups::default()).is_ok());
    }
}
