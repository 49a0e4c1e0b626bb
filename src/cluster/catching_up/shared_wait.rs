//! The shared wait for what AWS is creating. A pass that leaves something
//! AWS is still making (a NAT gateway pending, an instance launched and not
//! yet running) puts its cluster in its account and region's group. Every
//! second the group asks AWS once per kind that says what of it is pending
//! (the rows of `graph::STEPS` with a `pending`: NAT gateways, instances,
//! and, when a member has them (its looks), VPC endpoints and peering
//! connections), for all its clusters at once (a tag filter of their UIDs),
//! and reconciles each cluster that has nothing pending any more. So the
//! pass that follows a NAT gateway or an instance becoming ready comes
//! within a second of it, at two reads a second per account and region
//! whatever the number of clusters. The progress poll stays as the
//! fallback.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, Stream};
use kube::runtime::reflector::ObjectRef;

use futures::future::try_join_all;

use crate::api::ComputeCluster;
use crate::aws::tags::Scope;
use crate::aws::{AwsClients, AwsResult};
use crate::cluster::graph::STEPS;
use crate::cluster::groups::{Entry, Groups};
use crate::cluster::kinds::Looks;

/// How often a group looks: AWS's creations are counted in tens of
/// seconds, so a second late is a few percent.
pub const TICK: Duration = Duration::from_secs(1);

/// The clusters waiting for AWS, by account and region.
/// Each member's looks: whether its VPC endpoints and peering connections
/// are among what AWS may be making.
pub type Waiting = Groups<Looks>;

/// The groups, each looking every `tick`; the stream yields the clusters
/// with nothing pending any more.
pub fn groups(
    tick: Duration,
    installation: String,
) -> (
    Waiting,
    impl Stream<Item = ObjectRef<ComputeCluster>> + Send + 'static,
) {
    let look = Arc::new(
        move |c: AwsClients, members: BTreeMap<String, Entry<Looks>>| {
            let installation = installation.clone();
            async move {
                let uids: Vec<String> = members.keys().cloned().collect();
                let looks = (members.values()).fold(Looks::NONE, |all, e| all.or(e.member));
                match creating(&c, &installation, &uids, looks).await {
                    Ok(busy) => ready(&uids, &busy),
                    // Each looks for itself on its progress poll.
                    Err(e) => {
                        tracing::debug!(error = %e, "shared wait describe failed");
                        BTreeSet::new()
                    }
                }
            }
            .boxed()
        },
    );
    Groups::new(tick, look)
}

/// The UIDs of `uids` with something AWS is still making: each kind's
/// part of the wait (its row's `pending`) asked at once.
async fn creating(
    c: &AwsClients,
    installation: &str,
    uids: &[String],
    looks: Looks,
) -> AwsResult<BTreeSet<String>> {
    let mut busy = BTreeSet::new();
    for chunk in uids.chunks(200) {
        let scope = Scope::Clusters {
            installation,
            uids: chunk,
        };
        let kinds = STEPS.iter().filter_map(|def| def.pending);
        let found = try_join_all(kinds.map(|pending| pending(c, scope, looks))).await?;
        busy.extend(found.into_iter().flatten());
    }
    Ok(busy)
}

/// The clusters to reconcile: those with nothing pending.
pub fn ready(uids: &[String], busy: &BTreeSet<String>) -> BTreeSet<String> {
    uids.iter()
        .filter(|u| !busy.contains(*u))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_is_ready_when_nothing_of_its_is_pending() {
        let uids: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let busy = BTreeSet::from(["b".to_string(), "z".to_string()]);
        let got: Vec<String> = ready(&uids, &busy).into_iter().collect();
        assert_eq!(got, ["a", "c"]);
        assert!(ready(&[], &busy).is_empty());
    }
}
