//! The shared wait for what AWS is creating. A pass that leaves a NAT
//! gateway pending or an instance launched and not yet running puts its
//! cluster in its account and region's group. Every second the group asks
//! AWS once for the NAT gateways and once for the instances of all its
//! clusters (a tag filter of their UIDs), and reconciles each cluster that
//! has nothing pending any more, so the pass that follows a NAT gateway or
//! an instance becoming ready comes within a second of it, at two reads a
//! second per account and region whatever the number of clusters. The
//! progress poll stays as the fallback. When a member has VPC endpoints or
//! peering connections (its looks), the same tick asks once for those too:
//! an interface endpoint pending, a connection provisioning.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, Stream};
use kube::runtime::reflector::ObjectRef;

use crate::api::ComputeCluster;
use crate::aws::endpoint::{self, EndpointState};
use crate::aws::instances::{self, InstanceState};
use crate::aws::nat_gateway::{self, NatState};
use crate::aws::peering::{self, PeeringState};
use crate::aws::tags::Scope;
use crate::aws::{AwsClients, AwsResult};
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

/// The UIDs of `uids` with a NAT gateway pending or an instance pending.
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
        let (nats, launched, endpoints, peerings) = tokio::try_join!(
            nat_gateway::describe(c, scope),
            instances::describe(c, scope),
            async {
                match looks.endpoints {
                    true => endpoint::describe(c, scope).await,
                    false => Ok(vec![]),
                }
            },
            async {
                match looks.peering {
                    true => peering::describe(c, scope).await,
                    false => Ok(vec![]),
                }
            },
        )?;
        busy.extend(
            endpoints
                .into_iter()
                .filter(|(_, e)| e.state == EndpointState::Pending)
                .map(|(uid, _)| uid),
        );
        busy.extend(
            peerings
                .into_iter()
                .filter(|(_, p)| p.state == PeeringState::Pending)
                .map(|(uid, _)| uid),
        );
        busy.extend(
            nats.into_iter()
                .filter(|(_, n)| n.state == NatState::Pending)
                .map(|(uid, _)| uid),
        );
        busy.extend(
            launched
                .into_iter()
                .filter(|(_, i)| i.state == InstanceState::Pending)
                .map(|(uid, _)| uid),
        );
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
