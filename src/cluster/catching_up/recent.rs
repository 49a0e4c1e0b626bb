//! What this process created for each cluster and no describe has shown
//! yet. AWS's describes are eventually consistent: right after a create
//! they may not list it, and a pass acting on such a view would create the
//! resource again (or, deleting, declare the cluster gone while it still
//! holds something). A pass whose view lacks a recent creation waits
//! instead. Creates with an idempotency token (instances, NAT gateways)
//! need no such care and are not kept.
//!
//! A creation is kept until a describe shows it, or for `keep` at most (it
//! may have been deleted out of band meanwhile: then drift repair makes it
//! again after that). A restarted process knows nothing of its
//! predecessor's creations; the window it could act on a stale view is the
//! seconds of AWS's consistency delay minus the restart.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a creation is waited for at most: AWS's consistency delay is
/// seconds.
pub const KEEP: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct Recent {
    keep: Duration,
    /// Cluster UID → resource ID → when it was created.
    by_cluster: Mutex<HashMap<String, HashMap<String, Instant>>>,
}

impl Default for Recent {
    fn default() -> Self {
        Recent::new(KEEP)
    }
}

impl Recent {
    pub fn new(keep: Duration) -> Self {
        Recent {
            keep,
            by_cluster: Mutex::default(),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<String, Instant>>> {
        self.by_cluster.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records what a pass of cluster `uid` created.
    pub fn remember(&self, uid: &str, ids: Vec<String>, now: Instant) {
        if ids.is_empty() {
            return;
        }
        let mut map = self.map();
        let created = map.entry(uid.to_string()).or_default();
        for id in ids {
            created.entry(id).or_insert(now);
        }
    }

    /// The recent creations of `uid` that `observed` (every ID a describe
    /// found) lacks, oldest first, with their age. Those it shows, and
    /// those older than `keep`, are forgotten.
    pub fn unseen(&self, uid: &str, observed: &[String], now: Instant) -> Vec<(String, Duration)> {
        let mut map = self.map();
        let Some(created) = map.get_mut(uid) else {
            return vec![];
        };
        created.retain(|id, at| {
            !observed.contains(id) && now.saturating_duration_since(*at) < self.keep
        });
        let mut unseen: Vec<(String, Duration)> = created
            .iter()
            .map(|(id, at)| (id.clone(), now.saturating_duration_since(*at)))
            .collect();
        if created.is_empty() {
            map.remove(uid);
        }
        unseen.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        unseen
    }

    /// Forgets cluster `uid` (it is gone).
    pub fn forget(&self, uid: &str) {
        self.map().remove(uid);
    }
}

/// What a pass waits for, in words.
pub fn waiting_for(unseen: &[(String, Duration)]) -> String {
    let listed: Vec<String> = unseen
        .iter()
        .map(|(id, age)| format!("{id} (created {:.1} s ago)", age.as_secs_f64()))
        .collect();
    format!(
        "waiting for AWS's describes to show what this operator created: {}",
        listed.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_creation_is_waited_for_until_a_describe_shows_it() {
        let recent = Recent::new(Duration::from_secs(30));
        let t0 = Instant::now();
        recent.remember("uid", ids(&["vpc-1", "subnet-1"]), t0);
        let t1 = t0 + Duration::from_secs(1);
        // The describe shows neither: both are waited for.
        let unseen = recent.unseen("uid", &[], t1);
        assert_eq!(
            unseen.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
            vec!["subnet-1", "vpc-1"]
        );
        // It shows the VPC: only the subnet is left, and the VPC is
        // forgotten (a later out-of-band deletion is drift at once).
        let unseen = recent.unseen("uid", &ids(&["vpc-1"]), t1);
        assert_eq!(unseen.len(), 1);
        assert_eq!(unseen[0].0, "subnet-1");
        assert!(recent.unseen("uid", &ids(&["subnet-1"]), t1).is_empty());
        assert!(recent.unseen("uid", &[], t1).is_empty());
    }

    #[test]
    fn a_creation_never_shown_is_given_up_after_keep() {
        let recent = Recent::new(Duration::from_secs(30));
        let t0 = Instant::now();
        recent.remember("uid", ids(&["igw-1"]), t0);
        assert_eq!(
            recent
                .unseen("uid", &[], t0 + Duration::from_secs(29))
                .len(),
            1
        );
        assert!(recent
            .unseen("uid", &[], t0 + Duration::from_secs(30))
            .is_empty());
    }

    #[test]
    fn clusters_are_kept_apart_and_forgotten() {
        let recent = Recent::default();
        let t0 = Instant::now();
        recent.remember("a", ids(&["vpc-a"]), t0);
        recent.remember("b", ids(&["vpc-b"]), t0);
        assert_eq!(recent.unseen("a", &[], t0)[0].0, "vpc-a");
        recent.forget("a");
        assert!(recent.unseen("a", &[], t0).is_empty());
        assert_eq!(recent.unseen("b", &[], t0)[0].0, "vpc-b");
    }

    #[test]
    fn the_wait_names_each_creation_and_its_age() {
        let text = waiting_for(&[("vpc-1".into(), Duration::from_millis(1500))]);
        assert!(text.contains("vpc-1 (created 1.5 s ago)"), "{text}");
    }
}
