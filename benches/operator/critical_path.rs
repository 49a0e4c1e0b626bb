//! The critical path: the operator's dependency graph priced in calls and
//! at measured call durations, and the longest chain of sequential calls
//! the operator really made.

use std::collections::BTreeMap;
use std::time::Duration;

use byoc_operator::cluster::graph::{self, CriticalPath};
use testground::proxy::Call;

/// The longest of each wait the realism profile drew, by name.
type Waits = BTreeMap<&'static str, Duration>;

/// Seconds the call took.
fn secs(c: &Call) -> f64 {
    (c.end - c.start).as_secs_f64()
}

/// The median of `values` (the upper one of an even count); 0 when empty.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// Seconds of the wait named `name`; 0 when the profile drew none.
fn waited(waits: &Waits, name: &str) -> f64 {
    waits.get(name).map_or(0.0, Duration::as_secs_f64)
}

/// Seconds the critical path takes when each step costs what that operation
/// took in `trace` (median), the observe round what its slowest call took.
pub(crate) fn price_at_call_times(chain: &[&str], trace: &[Call]) -> f64 {
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
            median(
                trace
                    .iter()
                    .filter(|c| c.operation == operation)
                    .map(secs)
                    .collect(),
            )
        })
        .sum();
    (total * 1000.0).round() / 1000.0
}

/// The longest chain of calls each starting after the previous ended: how
/// many AWS round trips the operator made one after another.
pub(crate) fn longest_sequential_chain(trace: &[Call]) -> (usize, Vec<String>) {
    let mut calls: Vec<&Call> = trace.iter().collect();
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
    graph::critical_path(graph::Shape::BASIC)
}

/// The critical path priced at the measured call durations: the slowest of
/// the longest chains.
pub(crate) fn price_critical_path(path: &CriticalPath, trace: &[Call]) -> f64 {
    path.chains
        .iter()
        .map(|chain| price_at_call_times(chain, trace))
        .fold(0.0, f64::max)
}

/// A topology's time to running under the realism profile if the
/// operator lost nothing: every chain of calls of `shape` (priced at this
/// run's call times) plus the AWS waits on it — a NAT gateway's pending
/// state after CreateNatGateway; an interface endpoint's pending state
/// after CreateVpcEndpoint, an accepted peering connection's provisioning
/// after AcceptVpcPeeringConnection; before RunInstances the instance
/// profile's propagation (counted from the create, though the profile is
/// made a few calls in: the bound is the lower for it), after it the
/// instance's pending state. The longest waits the profile drew are
/// `waits`.
pub(crate) fn price_with_waits(shape: graph::Shape, trace: &[Call], waits: &Waits) -> f64 {
    let wait = |name: &str| waited(waits, name);
    // AWS's own waits inside a run of calls.
    let waits_in = |calls: &[&str]| {
        let has = |op: &str| calls.iter().any(|c| c.starts_with(op));
        [
            ("CreateNatGateway", "nat-pending"),
            ("CreateVpcEndpoint", "endpoint-pending"),
            ("AcceptVpcPeeringConnection", "peering-provisioning"),
        ]
        .iter()
        .filter(|(op, _)| has(op))
        .map(|(_, w)| wait(w))
        .sum::<f64>()
    };
    graph::chains(shape)
        .iter()
        .map(
            |chain| match chain.iter().position(|s| s.starts_with("RunInstances")) {
                Some(i) => {
                    let before = price_at_call_times(&chain[..i], trace) + waits_in(&chain[..i]);
                    before.max(wait("profile-propagation"))
                        + price_at_call_times(&chain[i..], trace)
                        + wait("instance-pending")
                }
                None => price_at_call_times(chain, trace) + waits_in(chain),
            },
        )
        .fold(0.0, f64::max)
}

/// The reference topology's deletion under the realism profile if the
/// operator lost nothing: the longest drain (instances shutting down, NAT
/// gateways deleting; they start together), then the network's four
/// dependent deletes (subnets, internet gateway detach and delete, VPC) at
/// this run's median call time.
pub(crate) fn drain_bound(trace: &[Call], waits: &Waits) -> f64 {
    let drain = waited(waits, "shutting-down").max(waited(waits, "nat-deleting"));
    drain + 4.0 * median(trace.iter().map(secs).collect())
}
