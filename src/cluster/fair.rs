//! Fair shares of the workers: while another namespace is busy, each
//! namespace runs at most `--namespace-concurrency` ComputeCluster
//! reconciles at once, so one tenant's many clusters never hold every
//! worker while another tenant's wait. A reconcile over its namespace's
//! share does nothing and is looked at again shortly, its worker free for
//! another namespace. A namespace alone (no other reconciled within
//! [`BUSY`]) may use every worker: a share kept for nobody would only slow
//! it. Deletions are not counted against the share: a deletion never waits
//! behind creates.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How soon a reconcile turned away by its namespace's share comes back.
pub const TURNED_AWAY: Duration = Duration::from_secs(2);

/// How long a namespace counts as busy after its last reconcile: longer
/// than its clusters' progress poll, so a namespace whose clusters are
/// provisioning stays busy between their passes.
pub const BUSY: Duration = Duration::from_secs(30);

/// Reconciles running per namespace, against a limit.
#[derive(Debug)]
pub struct Fair {
    limit: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    running: HashMap<String, usize>,
    /// When each namespace last asked for a turn.
    seen: HashMap<String, Instant>,
}

/// A namespace's turn: held while the reconcile runs, given back on drop.
#[derive(Debug)]
pub struct Turn {
    fair: Arc<Fair>,
    namespace: Option<String>,
}

impl Fair {
    /// `limit` reconciles at once per namespace while another is busy (0:
    /// no limit).
    pub fn new(limit: usize) -> Arc<Fair> {
        Arc::new(Fair {
            limit,
            state: Mutex::default(),
        })
    }

    /// A turn for a reconcile in `namespace`, or `None` when the namespace
    /// already runs its share and another namespace is busy. A deletion
    /// always gets one, uncounted.
    pub fn enter(self: &Arc<Self>, namespace: &str, deleting: bool) -> Option<Turn> {
        self.enter_at(namespace, deleting, Instant::now())
    }

    fn enter_at(self: &Arc<Self>, namespace: &str, deleting: bool, now: Instant) -> Option<Turn> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.seen.insert(namespace.to_string(), now);
        state
            .seen
            .retain(|_, at| now.saturating_duration_since(*at) < BUSY);
        if deleting || self.limit == 0 {
            return Some(Turn {
                fair: self.clone(),
                namespace: None,
            });
        }
        let alone = state.seen.len() == 1;
        let n = state.running.entry(namespace.to_string()).or_default();
        if *n >= self.limit && !alone {
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
        let mut state = self.fair.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = state.running.get_mut(&ns) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                state.running.remove(&ns);
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
    fn a_namespace_runs_at_most_its_share_while_another_is_busy_and_deletions_are_not_counted() {
        let t0 = Instant::now();
        let fair = Fair::new(2);
        // b is busy: a is held to its share.
        let b = fair.enter_at("b", false, t0);
        assert!(b.is_some());
        let a1 = fair.enter_at("a", false, t0);
        let a2 = fair.enter_at("a", false, t0);
        assert!(a1.is_some() && a2.is_some());
        assert!(
            fair.enter_at("a", false, t0).is_none(),
            "a third of a while b is busy: over its share"
        );
        assert!(
            fair.enter_at("b", false, t0).is_some(),
            "b is not held by a's share"
        );
        assert!(
            fair.enter_at("a", true, t0).is_some(),
            "a deletion always runs"
        );
        drop(a1);
        let again = fair.enter_at("a", false, t0);
        assert!(again.is_some(), "a turn given back is another's");
        // b quiet for longer than BUSY: a alone may use every worker.
        let later = t0 + BUSY + Duration::from_secs(1);
        let more: Vec<_> = (0..6).map(|_| fair.enter_at("a", false, later)).collect();
        assert!(more.iter().all(Option::is_some), "a alone is not held");
        // b back: a's next over its share waits again.
        assert!(fair.enter_at("b", false, later).is_some());
        assert!(
            fair.enter_at("a", false, later).is_none(),
            "b busy again: a over its share is turned away"
        );
        drop((a2, again, b, more));
        assert!(
            fair.state
                .lock()
                .map(|s| s.running.is_empty())
                .unwrap_or(false),
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
