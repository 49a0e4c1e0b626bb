//! Fair shares of the workers: each namespace runs at most
//! `--namespace-concurrency` ComputeCluster reconciles at once, so one
//! tenant's many clusters never hold every worker while another tenant's
//! wait. A reconcile over its namespace's share does nothing and is looked
//! at again shortly, its worker free for another namespace. Deletions are
//! not counted against the share: a deletion never waits behind creates.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How soon a reconcile turned away by its namespace's share comes back.
pub const TURNED_AWAY: Duration = Duration::from_secs(2);

/// Reconciles running per namespace, against a limit.
#[derive(Debug)]
pub struct Fair {
    limit: usize,
    running: Mutex<HashMap<String, usize>>,
}

/// A namespace's turn: held while the reconcile runs, given back on drop.
#[derive(Debug)]
pub struct Turn {
    fair: Arc<Fair>,
    namespace: Option<String>,
}

impl Fair {
    /// `limit` reconciles at once per namespace (0: no limit).
    pub fn new(limit: usize) -> Arc<Fair> {
        Arc::new(Fair {
            limit,
            running: Mutex::default(),
        })
    }

    /// A turn for a reconcile in `namespace`, or `None` when the namespace
    /// already runs its share. A deletion always gets one, uncounted.
    pub fn enter(self: &Arc<Self>, namespace: &str, deleting: bool) -> Option<Turn> {
        if deleting || self.limit == 0 {
            return Some(Turn {
                fair: self.clone(),
                namespace: None,
            });
        }
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let n = running.entry(namespace.to_string()).or_default();
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(Turn {
            fair: self.clone(),
            namespace: Some(namespace.to_string()),
        })
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let Some(ns) = self.namespace.take() else {
            return;
        };
        let mut running = self.fair.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = running.get_mut(&ns) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                running.remove(&ns);
            }
        }
    }
}

/// The default share: half the workers (at least one), so another
/// namespace always finds some free.
pub fn default_share(concurrency: u16) -> usize {
    usize::from(concurrency).div_ceil(2).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_runs_at_most_its_share_and_deletions_are_not_counted() {
        let fair = Fair::new(2);
        let a1 = fair.enter("a", false);
        let a2 = fair.enter("a", false);
        assert!(a1.is_some() && a2.is_some());
        assert!(
            fair.enter("a", false).is_none(),
            "a third of a: over its share"
        );
        assert!(
            fair.enter("b", false).is_some(),
            "b is not held by a's share"
        );
        assert!(fair.enter("a", true).is_some(), "a deletion always runs");
        drop(a1);
        let again = fair.enter("a", false);
        assert!(again.is_some(), "a turn given back is another's");
        drop((a2, again));
        assert!(
            fair.running.lock().map(|r| r.is_empty()).unwrap_or(false),
            "nothing left counted"
        );
        let unlimited = Fair::new(0);
        let turns: Vec<_> = (0..50).map(|_| unlimited.enter("a", false)).collect();
        assert!(turns.iter().all(Option::is_some), "0: no limit");
    }

    #[test]
    fn the_default_share_is_half_the_workers() {
        assert_eq!(default_share(8), 4);
        assert_eq!(default_share(3), 2);
        assert_eq!(default_share(1), 1);
    }
}
