//! The critical path: the operator's dependency graph priced in calls and
//! at measured call durations, and the longest chain of sequential calls
//! the operator really made.

use byoc_operator::cluster::graph::{self, CriticalPath};

/// Seconds the critical path takes when each step costs what that operation
/// took in `trace` (median), the observe round what its slowest call took.
pub(crate) fn price_at_call_times(chain: &[&str], trace: &[testground::proxy::Call]) -> f64 {
    let secs = |c: &testground::proxy::Call| (c.end - c.start).as_secs_f64();
    let first_write = trace
        .iter()
        .filter(|c| !c.operation.starts_with("Describe") && !c.operation.starts_with("Get"))
        .map(|c| c.start)
        .min()
        .unwrap_or_default();
    let total: f64 = chain
        .iter()
        .map(|step| {
            if step.starts_with("Describe* (observe)") {
                return trace
                    .iter()
                    .filter(|c| c.start < first_write)
                    .map(secs)
                    .fold(0.0, f64::max);
            }
            let operation = step.split(' ').next().unwrap_or(step);
            let mut took: Vec<f64> = trace
                .iter()
                .filter(|c| c.operation == operation)
                .map(secs)
                .collect();
            took.sort_by(f64::total_cmp);
            took.get(took.len() / 2).copied().unwrap_or(0.0)
        })
        .sum();
    (total * 1000.0).round() / 1000.0
}

/// The longest chain of calls each starting after the previous ended: how
/// many AWS round trips the operator made one after another.
pub(crate) fn longest_sequential_chain(trace: &[testground::proxy::Call]) -> (usize, Vec<String>) {
    let mut calls: Vec<&testground::proxy::Call> = trace.iter().collect();
    calls.sort_by_key(|c| c.end);
    let mut best: Vec<(usize, Option<usize>)> = vec![(1, None); calls.len()];
    for i in 0..calls.len() {
        for j in 0..i {
            if calls[j].end <= calls[i].start && best[j].0 + 1 > best[i].0 {
                best[i] = (best[j].0 + 1, Some(j));
            }
        }
    }
    let Some((mut at, (depth, _))) = best
        .iter()
        .enumerate()
        .max_by_key(|(_, (d, _))| *d)
        .map(|(i, b)| (i, *b))
    else {
        return (0, vec![]);
    };
    let mut chain = vec![calls[at].operation.clone()];
    while let Some(prev) = best[at].1 {
        chain.push(calls[prev].operation.clone());
        at = prev;
    }
    chain.reverse();
    (depth, chain)
}

/// The critical path of the reference topology, from the operator's own
/// dependency graph (`byoc_operator::cluster::graph`): the longest chains of
/// calls that wait for each other, calls made at once counted once. The
/// reference topology's node groups are private.
pub(crate) fn critical_path() -> CriticalPath {
    graph::critical_path(false)
}

/// The critical path priced at the measured call durations: the slowest of
/// the longest chains.
pub(crate) fn price_critical_path(path: &CriticalPath, trace: &[testground::proxy::Call]) -> f64 {
    path.chains
        .iter()
        .map(|chain| price_at_call_times(chain, trace))
        .fold(0.0, f64::max)
}

/// The reference topology's time to running under the realism profile if
/// the operator lost nothing: every chain of calls (priced at this run's
/// call times) plus the AWS waits on it — a NAT gateway's pending state
/// after CreateNatGateway; before RunInstances the instance profile's
/// propagation (counted from the create, though the profile is made a few
/// calls in: the bound is the lower for it), after it the instance's
/// pending state. The longest waits the profile drew are `waits`.
pub(crate) fn price_with_waits(
    trace: &[testground::proxy::Call],
    waits: &std::collections::BTreeMap<&'static str, std::time::Duration>,
) -> f64 {
    let wait = |k: &str| waits.get(k).map_or(0.0, |d| d.as_secs_f64());
    graph::chains(false)
        .iter()
        .map(|chain| {
            let at = |op: &str| chain.iter().position(|s| s.starts_with(op));
            let mut total = match at("RunInstances") {
                Some(i) => {
                    price_at_call_times(&chain[..i], trace).max(wait("profile-propagation"))
                        + price_at_call_times(&chain[i..], trace)
                        + wait("instance-pending")
                }
                None => price_at_call_times(chain, trace),
            };
            if at("CreateNatGateway").is_some() {
                total += wait("nat-pending");
            }
            total
        })
        .fold(0.0, f64::max)
}

/// The reference topology's deletion under the realism profile if the
/// operator lost nothing: the longest drain (instances shutting down, NAT
/// gateways deleting; they start together), then the network's four
/// dependent deletes (subnets, internet gateway detach and delete, VPC) at
/// this run's median call time.
pub(crate) fn drain_bound(
    trace: &[testground::proxy::Call],
    waits: &std::collections::BTreeMap<&'static str, std::time::Duration>,
) -> f64 {
    let wait = |k: &str| waits.get(k).map_or(0.0, |d| d.as_secs_f64());
    let mut took: Vec<f64> = trace
        .iter()
        .map(|c| (c.end - c.start).as_secs_f64())
        .collect();
    took.sort_by(f64::total_cmp);
    let median = took.get(took.len() / 2).copied().unwrap_or(0.0);
    wait("shutting-down").max(wait("nat-deleting")) + 4.0 * median
}
