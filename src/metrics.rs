//! Counters for `/metrics`, in the Prometheus text format.
//!
//! The request path touches only atomics (one histogram bucket, the sum and the count); the
//! rarer events (failed logins by cause) take a short lock. Rendering reads them all.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use crate::provision::Changes;

/// Upper bounds of the request latency buckets, in microseconds.
const LATENCY_BUCKETS_US: [u64; 12] = [
    250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000, 5_000_000,
];

#[derive(Default)]
pub struct Metrics {
    logins_ok: AtomicU64,
    /// (result, cause) -> count; result is `refused` (a policy said no) or `failed`.
    logins_not_ok: Mutex<BTreeMap<(&'static str, String), u64>>,
    users_created: AtomicU64,
    users_updated: AtomicU64,
    users_reactivated: AtomicU64,
    group_changes: AtomicU64,
    requests_denied: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    latency_sum_us: AtomicU64,
    latency_count: AtomicU64,
}

impl Metrics {
    pub fn login_ok(&self, c: &Changes) {
        self.logins_ok.fetch_add(1, Relaxed);
        if c.created {
            self.users_created.fetch_add(1, Relaxed);
        }
        if c.updated {
            self.users_updated.fetch_add(1, Relaxed);
        }
        if c.reactivated {
            self.users_reactivated.fetch_add(1, Relaxed);
        }
        self.group_changes
            .fetch_add((c.groups_added + c.groups_removed) as u64, Relaxed);
    }

    /// A login that did not end in a session. `refused`: the IdP's answer was genuine but a
    /// policy said no; otherwise it failed a check.
    pub fn login_not_ok(&self, refused: bool, cause: &str) {
        let result = if refused { "refused" } else { "failed" };
        if let Ok(mut m) = self.logins_not_ok.lock() {
            *m.entry((result, cause.to_string())).or_default() += 1;
        }
    }

    /// A logged-in request refused by a route's policy (groups, header size).
    pub fn denied(&self) {
        self.requests_denied.fetch_add(1, Relaxed);
    }

    /// Group memberships changed by an admin (counted with those from logins).
    pub fn groups_changed(&self, n: u64) {
        self.group_changes.fetch_add(n, Relaxed);
    }

    pub fn request(&self, micros: u64) {
        let i = LATENCY_BUCKETS_US
            .iter()
            .position(|b| micros <= *b)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        self.latency_buckets[i].fetch_add(1, Relaxed);
        self.latency_sum_us.fetch_add(micros, Relaxed);
        self.latency_count.fetch_add(1, Relaxed);
    }

    /// The exposition text; `sessions_live` and `users_total` are read from the store by
    /// the caller.
    pub fn render(&self, sessions_live: u64, users_total: u64) -> String {
        let mut o = String::new();
        let counter = |o: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        let _ = writeln!(
            o,
            "# HELP samlgate_logins_total Logins by result and, when not ok, by cause.\n# TYPE samlgate_logins_total counter"
        );
        let _ = writeln!(
            o,
            "samlgate_logins_total{{result=\"ok\",cause=\"\"}} {}",
            self.logins_ok.load(Relaxed)
        );
        if let Ok(m) = self.logins_not_ok.lock() {
            for ((result, cause), n) in m.iter() {
                let _ = writeln!(
                    o,
                    "samlgate_logins_total{{result=\"{result}\",cause=\"{}\"}} {n}",
                    cause.replace(['\\', '"', '\n'], "_")
                );
            }
        }
        counter(
            &mut o,
            "samlgate_users_created_total",
            "Users created by a first login.",
            self.users_created.load(Relaxed),
        );
        counter(
            &mut o,
            "samlgate_users_updated_total",
            "Logins that changed a user's fields.",
            self.users_updated.load(Relaxed),
        );
        counter(
            &mut o,
            "samlgate_users_reactivated_total",
            "Inactive users reactivated by a login.",
            self.users_reactivated.load(Relaxed),
        );
        counter(
            &mut o,
            "samlgate_group_membership_changes_total",
            "Group memberships added or removed (logins and admins).",
            self.group_changes.load(Relaxed),
        );
        counter(
            &mut o,
            "samlgate_requests_denied_total",
            "Logged-in requests refused by a route's policy (groups, identity header size).",
            self.requests_denied.load(Relaxed),
        );
        let _ = writeln!(
            o,
            "# HELP samlgate_sessions_live Sessions in the store (ended ones leave at the next purge).\n# TYPE samlgate_sessions_live gauge\nsamlgate_sessions_live {sessions_live}"
        );
        let _ = writeln!(
            o,
            "# HELP samlgate_users Users in the directory.\n# TYPE samlgate_users gauge\nsamlgate_users {users_total}"
        );
        let _ = writeln!(
            o,
            "# HELP samlgate_request_duration_seconds Time from request to response end, every proxied or gateway request.\n# TYPE samlgate_request_duration_seconds histogram"
        );
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BUCKETS_US.iter().enumerate() {
            cumulative += self.latency_buckets[i].load(Relaxed);
            let _ = writeln!(
                o,
                "samlgate_request_duration_seconds_bucket{{le=\"{}\"}} {cumulative}",
                *bound as f64 / 1e6
            );
        }
        cumulative += self.latency_buckets[LATENCY_BUCKETS_US.len()].load(Relaxed);
        let _ = writeln!(
            o,
            "samlgate_request_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
        );
        let _ = writeln!(
            o,
            "samlgate_request_duration_seconds_sum {}\nsamlgate_request_duration_seconds_count {}",
            self.latency_sum_us.load(Relaxed) as f64 / 1e6,
            self.latency_count.load(Relaxed)
        );
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_counts_match() {
        let m = Metrics::default();
        m.request(100);
        m.request(3_000);
        m.request(10_000_000);
        m.login_not_ok(false, "BadSignature");
        let text = m.render(4, 2);
        assert!(text.contains("samlgate_request_duration_seconds_bucket{le=\"0.00025\"} 1"));
        assert!(text.contains("samlgate_request_duration_seconds_bucket{le=\"0.005\"} 2"));
        assert!(text.contains("samlgate_request_duration_seconds_bucket{le=\"+Inf\"} 3"));
        assert!(text.contains("samlgate_request_duration_seconds_count 3"));
        assert!(text.contains("samlgate_logins_total{result=\"failed\",cause=\"BadSignature\"} 1"));
        assert!(text.contains("samlgate_sessions_live 4"));
    }
}
