//! Deletion: every resource carrying the cluster's ownership tag, in reverse
//! dependency order: instances → NAT gateways → Elastic IPs → route tables →
//! internet gateway → subnets → security group → VPC → instance profile →
//! role. Each pass goes as far as AWS allows and comes back for the rest;
//! not-found is success; nothing untagged is touched. A spec that no longer
//! validates does not block this: only the UID, region and account are used.

use std::sync::Arc;

use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};

use futures::future::try_join_all;

use super::converge::settle;
use super::plan::{InstanceState, ValidatedSpec};
use super::{use_account, CONTROLLER};
use crate::api::compute_cluster::DeletionBlocker;
use crate::api::conditions::{self, reason, Desired, READY, RECONCILING, STALLED};
use crate::api::{ClusterPhase, ComputeCluster, ComputeClusterStatus, DeletionPolicy};
use crate::aws::dependents::{self, Dependent};
use crate::aws::nat_gateway::NatState;
use crate::aws::tags::OwnershipTags;
use crate::aws::{
    instance_profile, instances, internet_gateway, nat_gateway, route_table, security_group,
    subnet, vpc, AwsClients, ErrorClass, Observed,
};
use crate::context::{apply_status, Context};
use crate::Error;

pub async fn cleanup(cc: Arc<ComputeCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let uid = cc.uid().unwrap_or_default();
    if cc.spec.deletion_policy == DeletionPolicy::Retain {
        tracing::info!(name = %cc.name_any(), "deletionPolicy Retain: leaving AWS resources");
        ctx.metrics.cluster_phase(&uid, None);
        return Ok(Action::await_change());
    }
    // Deletion is a new intent: backoff earned while provisioning does not
    // delay it.
    if cc.status.as_ref().and_then(|s| s.phase) != Some(ClusterPhase::Deleting) {
        ctx.reset_backoff(&uid);
    }
    let namespace = cc.namespace().unwrap_or_default();
    let Some(recorded) = recorded_account(&ctx, &cc).await? else {
        tracing::info!(name = %cc.name_any(), "no AWS call was ever made for this cluster: nothing to delete");
        ctx.reset_backoff(&uid);
        ctx.metrics.cluster_phase(&uid, None);
        return Ok(Action::await_change());
    };
    let owner = OwnershipTags {
        uid: uid.clone(),
        namespace: namespace.clone(),
        name: cc.name_any(),
        user: Default::default(),
    };
    // Only what deletion needs, read from the raw spec (validation must not block it).
    let target = ValidatedSpec {
        region: cc.spec.region.clone(),
        account: (
            cc.spec
                .cloud_account_ref
                .namespace
                .clone()
                .unwrap_or_else(|| namespace.clone()),
            cc.spec.cloud_account_ref.name.clone(),
        ),
        network: super::plan::NetworkPlan::Existing {
            vpc_id: String::new(),
            subnet_ids: vec![],
        },
        ingress: vec![],
        node_groups: vec![],
        owner: owner.clone(),
        deletion_policy: DeletionPolicy::Delete,
    };
    let resolved = match use_account(&ctx, &cc, &target).await {
        Ok(usable) => usable.resolved,
        Err(blocked) => {
            let message = format!("cannot delete the AWS resources yet: {}", blocked.message);
            write_deleting(&ctx, &cc, blocked.reason, &message, true).await?;
            let backoff = ctx.next_backoff(&uid);
            ctx.metrics.failed(CONTROLLER, blocked.reason, backoff);
            return pending(message, backoff);
        }
    };
    if resolved.account_id != recorded {
        let message = format!(
            "cannot delete: the cluster's AWS resources are in account {recorded}, but spec.cloudAccountRef now resolves to account {}; point it back at account {recorded}",
            resolved.account_id
        );
        write_deleting(&ctx, &cc, reason::ACCOUNT_CHANGED, &message, true).await?;
        let backoff = ctx.next_backoff(&uid);
        ctx.metrics
            .failed(CONTROLLER, reason::ACCOUNT_CHANGED, backoff);
        return pending(message, backoff);
    }
    let c = AwsClients::new(&resolved.config, &target.region, &ctx.metrics);
    let observed = Observed::describe(&c, &owner).await?;
    if observed.is_empty() {
        tracing::info!(name = %cc.name_any(), "every AWS resource is deleted");
        ctx.reset_backoff(&uid);
        ctx.metrics.cluster_phase(&uid, None);
        return Ok(Action::await_change());
    }
    match delete_pass(&c, &owner, &observed).await {
        // Deleted: confirmed by the next look, at once.
        Ok(None) if Observed::describe(&c, &owner).await?.is_empty() => {
            tracing::info!(name = %cc.name_any(), "every AWS resource is deleted");
            ctx.reset_backoff(&uid);
            ctx.metrics.cluster_phase(&uid, None);
            Ok(Action::await_change())
        }
        Ok(remaining) => {
            let remaining = remaining.unwrap_or("AWS to confirm");
            let message = format!("deleting: waiting for {remaining}");
            write_deleting(&ctx, &cc, reason::DELETING, &message, false).await?;
            pending(message, ctx.settings.progress_poll)
        }
        Err(e) if e.class() == ErrorClass::NeedsUser => {
            let message = format!("cannot delete: {e}");
            write_deleting(&ctx, &cc, reason::AWS_ERROR, &message, true).await?;
            let backoff = ctx.next_backoff(&uid);
            ctx.metrics
                .failed(CONTROLLER, e.code().unwrap_or("aws"), backoff);
            pending(message, backoff)
        }
        Err(e) if e.code() == Some("DependencyViolation") => {
            let vpc_ids: Vec<String> = observed.vpcs.iter().map(|v| v.id.clone()).collect();
            let nat_ids: Vec<String> = observed.nat_gateways.iter().map(|n| n.id.clone()).collect();
            let found = dependents::describe(&c, &vpc_ids).await?;
            let blockers = blockers(&uid, &nat_ids, &found);
            if !blockers.is_empty() {
                // Not ours to delete: the user must remove them. Looked at
                // again with backoff (at most every resync) until they go.
                let message = blocked_message(&e, &blockers);
                write_deleting_blocked(
                    &ctx,
                    &cc,
                    reason::DELETION_BLOCKED,
                    &message,
                    true,
                    blockers,
                )
                .await?;
                let backoff = ctx.next_backoff(&uid).min(ctx.settings.resync);
                ctx.metrics
                    .failed(CONTROLLER, reason::DELETION_BLOCKED, backoff);
                return pending(message, backoff);
            }
            // AWS is still letting go of something the pass deleted: that is
            // progress, looked at again after the progress poll, not an
            // error whose backoff grows.
            let message = format!("deleting, waiting for AWS to release: {e}");
            write_deleting(&ctx, &cc, reason::DELETING, &message, false).await?;
            pending(message, ctx.settings.progress_poll)
        }
        Err(e) => {
            let backoff = ctx.next_backoff(&uid);
            ctx.metrics
                .failed(CONTROLLER, e.code().unwrap_or("transport"), backoff);
            let message = format!("deleting, retrying: {e}");
            write_deleting(&ctx, &cc, reason::DELETING, &message, false).await?;
            pending(message, backoff)
        }
    }
}

/// What in the cluster's VPCs keeps AWS from deleting them: everything
/// that is not the cluster's, except each VPC's default group, instances on
/// their way out, interfaces of the cluster's instances and NAT gateways
/// (AWS releases those), and interfaces of a foreign instance (the instance
/// is named instead).
pub fn blockers(uid: &str, nat_ids: &[String], found: &[Dependent]) -> Vec<DeletionBlocker> {
    let ours = |d: &Dependent| d.owner_uid.as_deref() == Some(uid);
    let our_instances: Vec<&str> = found
        .iter()
        .filter(|d| d.kind == "instance" && ours(d))
        .map(|d| d.id.as_str())
        .collect();
    found
        .iter()
        .filter(|d| !ours(d) && !d.default_group && !d.ending)
        .filter(|d| d.attached_to.is_none())
        .filter(|d| !nat_ids.iter().any(|n| d.detail.contains(n.as_str())))
        .chain(found.iter().filter(|d| {
            d.attached_to
                .as_deref()
                .is_some_and(|i| !our_instances.contains(&i))
                && !found
                    .iter()
                    .any(|x| Some(x.id.as_str()) == d.attached_to.as_deref())
        }))
        .map(|d| DeletionBlocker {
            kind: d.kind.to_string(),
            id: d.id.clone(),
            detail: d.detail.clone(),
        })
        .collect()
}

fn blocked_message(e: &crate::aws::AwsError, blockers: &[DeletionBlocker]) -> String {
    let listed: Vec<String> = blockers
        .iter()
        .map(|b| {
            if b.detail.is_empty() {
                format!("{} {}", b.kind, b.id)
            } else {
                format!("{} {} ({})", b.kind, b.id, b.detail)
            }
        })
        .collect();
    format!(
        "AWS refuses to delete the cluster's network ({}) while {} that {} not the cluster's {} in it: {}; remove {} (the operator never deletes what is not the cluster's) and deletion goes on",
        e.code().unwrap_or("DependencyViolation"),
        if blockers.len() == 1 { "something" } else { "things" },
        if blockers.len() == 1 { "is" } else { "are" },
        if blockers.len() == 1 { "is" } else { "are" },
        listed.join(", "),
        if blockers.len() == 1 { "it" } else { "them" },
    )
}

/// The AWS account recorded in status before the first AWS call. When the
/// cached object has none, a fresh read confirms it, so a status written
/// just before deletion is not missed.
async fn recorded_account(ctx: &Context, cc: &ComputeCluster) -> Result<Option<String>, Error> {
    let recorded = |c: &ComputeCluster| c.status.as_ref().and_then(|s| s.aws_account_id.clone());
    if let Some(id) = recorded(cc) {
        return Ok(Some(id));
    }
    let api: Api<ComputeCluster> =
        Api::namespaced(ctx.client.clone(), &cc.namespace().unwrap_or_default());
    Ok(api
        .get_opt(&cc.name_any())
        .await?
        .as_ref()
        .and_then(recorded))
}

/// Keeps the finalizer: the helper removes it on any `Ok`.
fn pending(message: String, retry_after: std::time::Duration) -> Result<Action, Error> {
    Err(Error::CleanupPending {
        message,
        retry_after,
    })
}

/// One pass in order, each kind's deletes at once; stops at the first kind
/// AWS must finish deleting first (after looking again briefly) and says
/// what that is. `None`: everything is deleted.
async fn delete_pass(
    c: &AwsClients,
    owner: &OwnershipTags,
    o: &Observed,
) -> crate::aws::AwsResult<Option<&'static str>> {
    let live: Vec<String> = o
        .instances
        .iter()
        .filter(|i| i.state != InstanceState::ShuttingDown && i.state != InstanceState::Terminated)
        .map(|i| i.id.clone())
        .collect();
    instances::terminate(c, &live).await?;
    if !o.instances.is_empty() {
        let gone = settle(
            || async {
                let gone = instances::describe(c, owner).await?.is_empty();
                Ok::<_, crate::aws::AwsError>((gone, gone))
            },
            true,
        )
        .await?;
        if gone != Some(true) {
            return Ok(Some("instances to terminate"));
        }
    }
    let deletable: Vec<&str> = o
        .nat_gateways
        .iter()
        .filter(|n| matches!(n.state, NatState::Pending | NatState::Available))
        .map(|n| n.id.as_str())
        .collect();
    try_join_all(deletable.iter().map(|id| nat_gateway::delete(c, id))).await?;
    if o.nat_gateways.iter().any(|n| n.state != NatState::Gone) {
        let gone = settle(
            || async {
                let now = nat_gateway::describe(c, owner).await?;
                let gone = now.iter().all(|n| n.state == NatState::Gone);
                Ok::<_, crate::aws::AwsError>((gone, gone))
            },
            true,
        )
        .await?;
        if gone != Some(true) {
            return Ok(Some("NAT gateways to be deleted"));
        }
    }
    try_join_all(
        o.addresses
            .iter()
            .map(|a| nat_gateway::release_address(c, &a.allocation_id)),
    )
    .await?;
    try_join_all(o.route_tables.iter().map(|t| route_table::delete(c, t))).await?;
    try_join_all(
        o.internet_gateways
            .iter()
            .map(|g| internet_gateway::delete(c, g)),
    )
    .await?;
    try_join_all(o.subnets.iter().map(|s| subnet::delete(c, &s.id))).await?;
    try_join_all(
        o.security_groups
            .iter()
            .map(|g| security_group::delete(c, &g.id)),
    )
    .await?;
    try_join_all(o.vpcs.iter().map(|v| vpc::delete(c, &v.id))).await?;
    instance_profile::delete(c, &o.iam).await?;
    Ok(None)
}

async fn write_deleting(
    ctx: &Context,
    cc: &ComputeCluster,
    reason: &'static str,
    message: &str,
    stalled: bool,
) -> Result<(), Error> {
    write_deleting_blocked(ctx, cc, reason, message, stalled, vec![]).await
}

async fn write_deleting_blocked(
    ctx: &Context,
    cc: &ComputeCluster,
    reason: &'static str,
    message: &str,
    stalled: bool,
    deletion_blockers: Vec<DeletionBlocker>,
) -> Result<(), Error> {
    let previous = cc.status.clone().unwrap_or_default();
    let generation = cc.meta().generation;
    let status = ComputeClusterStatus {
        observed_generation: generation,
        phase: Some(ClusterPhase::Deleting),
        deletion_blockers,
        conditions: conditions::merge(
            &previous.conditions,
            &[
                Desired::new(READY, false, reason, message),
                Desired::new(
                    RECONCILING,
                    !stalled,
                    reason,
                    if stalled { "" } else { message },
                ),
                Desired::new(STALLED, stalled, reason, if stalled { message } else { "" }),
            ],
            generation,
            &conditions::now(),
        ),
        ..previous.clone()
    };
    let api: Api<ComputeCluster> =
        Api::namespaced(ctx.client.clone(), &cc.namespace().unwrap_or_default());
    apply_status(&api, &cc.name_any(), &status).await?;
    ctx.metrics
        .cluster_phase(&cc.uid().unwrap_or_default(), Some("deleting"));
    if previous.phase != Some(ClusterPhase::Deleting) {
        ctx.publish(&cc.object_ref(&()), stalled, reason, message.to_string())
            .await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(kind: &'static str, id: &str, owner: Option<&str>) -> Dependent {
        Dependent {
            kind,
            id: id.into(),
            detail: String::new(),
            owner_uid: owner.map(String::from),
            attached_to: None,
            default_group: false,
            ending: false,
        }
    }

    #[test]
    fn blockers_are_what_is_not_the_clusters() {
        let ours = Some("uid-1");
        let attached = |mut d: Dependent, to: &str| {
            d.attached_to = Some(to.into());
            d
        };
        let rows: Vec<(Dependent, bool, &str)> = vec![
            (
                dep("security-group", "sg-ours", ours),
                false,
                "the cluster's group",
            ),
            (
                Dependent {
                    default_group: true,
                    ..dep("security-group", "sg-default", None)
                },
                false,
                "the VPC's default group",
            ),
            (
                dep("security-group", "sg-elb", None),
                true,
                "a load balancer's group",
            ),
            (
                dep("network-interface", "eni-elb", None),
                true,
                "a free interface",
            ),
            (
                dep("network-interface", "eni-other", Some("uid-2")),
                true,
                "another cluster's interface",
            ),
            (
                dep("instance", "i-ours", ours),
                false,
                "the cluster's instance",
            ),
            (
                attached(dep("network-interface", "eni-of-ours", None), "i-ours"),
                false,
                "an interface of the cluster's instance",
            ),
            (
                dep("instance", "i-foreign", None),
                true,
                "a foreign instance",
            ),
            (
                attached(
                    dep("network-interface", "eni-of-foreign", None),
                    "i-foreign",
                ),
                false,
                "a foreign instance's interface: the instance is named",
            ),
            (
                attached(dep("network-interface", "eni-orphan", None), "i-unseen"),
                true,
                "an interface of an instance not seen in the VPC",
            ),
            (
                Dependent {
                    ending: true,
                    ..dep("instance", "i-ending", None)
                },
                false,
                "a foreign instance on its way out",
            ),
            (
                Dependent {
                    detail: "Interface for NAT Gateway nat-ours".into(),
                    ..dep("network-interface", "eni-nat", None)
                },
                false,
                "the interface of the cluster's NAT gateway",
            ),
        ];
        let found: Vec<Dependent> = rows.iter().map(|r| r.0.clone()).collect();
        let got: Vec<String> = blockers("uid-1", &["nat-ours".into()], &found)
            .into_iter()
            .map(|b| b.id)
            .collect();
        for (d, blocks, why) in &rows {
            assert_eq!(got.contains(&d.id), *blocks, "{}: {why}", d.id);
        }
    }
}
