//! Deletion: every resource carrying the cluster's ownership tag, in the
//! order `graph::DELETION` gives (the creation graph reversed), each kind by
//! its own module's `delete`: instances → key pairs → VPC endpoints →
//! peering connections (and the routes to them) → NAT gateways (their
//! Elastic IPs with them) → route tables → internet gateway → subnets →
//! security group → VPC → instance profile and role. Each pass goes as far as
//! AWS allows and comes back for the rest; not-found is success; nothing
//! untagged is touched. A spec that no longer validates does not block
//! this: only the UID, region and account are used. A pass ends in a value:
//! [`Deletion::Done`] (the finalizer goes) or [`Deletion::NotYet`] (looked
//! at again after the time it carries); an `Err` is a failure.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::{Api, Resource, ResourceExt};

use super::catching_up::recent;
use super::graph::{Step, DELETION};
use super::kinds::{
    endpoints, iam, internet_gateway, key_pairs, nat_gateways, node_groups, peering, route_tables,
    security_group, subnets, vpc, Deleted, Observed,
};
use super::next_look::next_look_deleting;
use super::ownership::{self, Intent, Recorded, LET_GO};
use super::spec::AccountRef;
use super::status::Report;
use super::{use_account, ClusterContext};
use crate::account::credentials::ResolvedAccount;
use crate::api::compute_cluster::DeletionBlocker;
use crate::api::conditions::reason;
use crate::api::{ClusterPhase, ComputeCluster, DeletionPolicy};
use crate::aws::dependents::{self, Dependent};
use crate::aws::tags::OwnershipTags;
use crate::aws::{AwsClients, AwsError, AwsResult};
use crate::outcome::Outcome;
use crate::Error;

/// Where a deletion pass leaves the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deletion {
    /// Nothing of it is left to delete: the finalizer may go.
    Done,
    /// Deletion goes on (its status says what waits): looked at again
    /// after this.
    NotYet(Duration),
}

pub async fn cleanup(cc: Arc<ComputeCluster>, ctx: Arc<ClusterContext>) -> Result<Deletion, Error> {
    let uid = cc.uid().unwrap_or_default();
    // Another installation's resources are never touched: not deleted,
    // not described, not marked.
    let installation = ctx.operator.installation.id();
    if let Some(foreign) = ownership::foreign(recorded_of(&cc), installation, None) {
        if cc.spec.deletion_policy == DeletionPolicy::Retain {
            return Ok(done(&ctx, &uid));
        }
        let outcome = foreign.outcome(Intent::Delete);
        return pending(&ctx, Report::deleting(&cc), outcome).await;
    }
    if cc.spec.deletion_policy == DeletionPolicy::Retain {
        retain(&ctx, &cc).await?;
        return Ok(done(&ctx, &uid));
    }
    // Deletion is a new intent: backoff earned while provisioning does not
    // delay it.
    if cc.status.as_ref().and_then(|s| s.phase) != Some(ClusterPhase::Deleting) {
        ctx.operator.reset_backoff(&uid);
    }
    let Some(recorded) = recorded_account(&ctx, &cc).await? else {
        tracing::info!(name = %cc.name_any(), "no AWS call was ever made for this cluster: nothing to delete");
        return Ok(done(&ctx, &uid));
    };
    let target = DeletionTarget::of(&cc, installation);
    match deletion_account(&ctx, &cc, &target, &recorded).await? {
        ControlFlow::Continue(resolved) => delete_what_is_left(&ctx, &cc, &target, &resolved).await,
        ControlFlow::Break(waits) => Ok(waits),
    }
}

/// The account the cluster's resources are in, usable now; otherwise the
/// deletion waits (its status says for what).
async fn deletion_account(
    ctx: &ClusterContext,
    cc: &ComputeCluster,
    target: &DeletionTarget,
    recorded: &str,
) -> Result<ControlFlow<Deletion, ResolvedAccount>, Error> {
    let resolved = match use_account(ctx, cc, &target.account).await {
        Ok(usable) => usable.resolved,
        Err(blocked) => {
            let message = format!(
                "cannot delete the AWS resources yet: {}; fix the CloudAccount (or its credentials), or {LET_GO}",
                blocked.message
            );
            let outcome = Outcome::NeedsUser {
                reason: blocked.reason,
                message,
            };
            return pending(ctx, Report::deleting(cc), outcome)
                .await
                .map(ControlFlow::Break);
        }
    };
    let installation = ctx.operator.installation.id();
    let was = Recorded {
        aws_account_id: Some(recorded),
        ..recorded_of(cc)
    };
    if let Some(foreign) = ownership::foreign(was, installation, Some(&resolved.account_id)) {
        let outcome = foreign.outcome(Intent::Delete);
        return pending(ctx, Report::deleting(cc), outcome)
            .await
            .map(ControlFlow::Break);
    }
    Ok(ControlFlow::Continue(resolved))
}

/// One deletion pass over what AWS shows of the cluster: done when nothing
/// is left, otherwise the deletion goes on (its status says what waits).
async fn delete_what_is_left(
    ctx: &ClusterContext,
    cc: &ComputeCluster,
    target: &DeletionTarget,
    resolved: &ResolvedAccount,
) -> Result<Deletion, Error> {
    let uid = cc.uid().unwrap_or_default();
    let c = AwsClients::new(
        &resolved.config,
        &target.region,
        ctx.operator
            .metrics
            .aws_interceptor_for(&resolved.account_id),
    );
    let owner = &target.owner;
    // Made before installations were tagged: adopted first, so that the
    // deletions are of what carries this installation's tag.
    if cc.status.as_ref().is_some_and(|s| s.installation.is_none()) {
        let iam_name = super::kinds::iam::iam_name(owner);
        crate::aws::inventory::adopt(&c, owner, &iam_name).await?;
    }
    let observed = Observed::describe(&c, owner).await?;
    // A view lacking what this process just created is stale: "nothing
    // left" would leave those behind.
    let unseen = ctx.recent.unseen(&uid, &observed.ids(), Instant::now());
    if !unseen.is_empty() {
        let outcome = Outcome::Deleting {
            reason: reason::DELETING,
            message: recent::waiting_for(&unseen),
        };
        return pending(ctx, Report::deleting(cc), outcome).await;
    }
    if observed.is_empty() {
        tracing::info!(name = %cc.name_any(), "every AWS resource is deleted");
        return Ok(done(ctx, &uid));
    }
    let result = delete_pass(&c, owner, &observed).await;
    // Deleted: confirmed by the next look, at once.
    if matches!(result, Ok(Deleted::All)) && Observed::describe(&c, owner).await?.is_empty() {
        tracing::info!(name = %cc.name_any(), "every AWS resource is deleted");
        return Ok(done(ctx, &uid));
    }
    let (outcome, blockers) = pass_outcome(&c, &uid, &observed, result).await?;
    pending(ctx, Report::deleting(cc).blocked_by(blockers), outcome).await
}

/// What a deletion pass that did not finish comes to, and what blocks it.
async fn pass_outcome(
    c: &AwsClients,
    uid: &str,
    observed: &Observed,
    result: AwsResult<Deleted>,
) -> Result<(Outcome, Vec<DeletionBlocker>), Error> {
    let e = match result {
        Ok(left) => {
            let what = match left {
                Deleted::Ending(what) => what,
                Deleted::All => "AWS to confirm",
            };
            let message = format!("deleting: waiting for {what}");
            return Ok((
                Outcome::Deleting {
                    reason: reason::DELETING,
                    message,
                },
                vec![],
            ));
        }
        Err(e) => e,
    };
    if e.code() == Some("DependencyViolation") {
        let found = blockers_in(c, uid, observed).await?;
        if found.is_empty() {
            // AWS is still letting go of something the pass deleted:
            // progress, looked at again after the progress poll.
            let message = format!("deleting, waiting for AWS to release: {e}");
            return Ok((
                Outcome::Deleting {
                    reason: reason::DELETING,
                    message,
                },
                vec![],
            ));
        }
        // Not ours to delete: the user must remove them.
        let message = blocked_message(&e, &found);
        return Ok((
            Outcome::NeedsUser {
                reason: reason::DELETION_BLOCKED,
                message,
            },
            found,
        ));
    }
    let e = Error::Aws(e);
    match Outcome::of_error(&e, Intent::Delete) {
        Some(outcome) => Ok((outcome, vec![])),
        None => Err(e),
    }
}

/// What the cluster recorded of its resources.
fn recorded_of(cc: &ComputeCluster) -> Recorded<'_> {
    let status = cc.status.as_ref();
    Recorded {
        installation: status.and_then(|s| s.installation.as_deref()),
        aws_account_id: status.and_then(|s| s.aws_account_id.as_deref()),
    }
}

/// `deletionPolicy: Retain`: says in status and an Event which AWS
/// resources are left behind (what status knows, and what AWS shows when
/// the account can still be used), then lets go.
async fn retain(ctx: &ClusterContext, cc: &ComputeCluster) -> Result<(), Error> {
    let status = cc.status.clone().unwrap_or_default();
    let Some(account_id) = status.aws_account_id.clone() else {
        tracing::info!(name = %cc.name_any(), "deletionPolicy Retain: no AWS call was ever made");
        return Ok(());
    };
    let brought = cc
        .spec
        .iam
        .as_ref()
        .and_then(|i| i.instance_profile_name.as_ref());
    let mut ids = status_ids(&status, brought.is_some());
    let target = DeletionTarget::of(cc, ctx.operator.installation.id());
    if let Ok(usable) = use_account(ctx, cc, &target.account).await {
        if usable.resolved.account_id == account_id {
            let c = AwsClients::new(
                &usable.resolved.config,
                &target.region,
                ctx.operator.metrics.aws_interceptor_for(&account_id),
            );
            if let Ok(observed) = Observed::describe(&c, &target.owner).await {
                // Let go on purpose: marked so that no audit counts them
                // as leaked. Best effort: the Event lists them either way.
                let ec2: Vec<String> = observed
                    .resources()
                    .into_iter()
                    .filter(|(kind, _)| {
                        !matches!(*kind, "key-pair" | "instance-profile" | "iam-role")
                    })
                    .map(|(_, id)| id)
                    .collect();
                let iam = observed.iam.role.as_deref();
                if let Err(e) = crate::aws::inventory::mark_retained(&c, &ec2, iam).await {
                    tracing::warn!(name = %cc.name_any(), error = %e, "marking the retained resources failed");
                }
                ids.extend(observed.ids());
            }
        }
    }
    ids.sort();
    ids.dedup();
    let message = if ids.is_empty() {
        "deletionPolicy Retain: nothing of the cluster's was known to be left in AWS".to_string()
    } else {
        format!(
            "deletionPolicy Retain: left in AWS account {account_id}, region {}, no longer managed: {}",
            target.region,
            ids.join(", ")
        )
    };
    tracing::info!(name = %cc.name_any(), %message, "letting go of the AWS resources");
    let outcome = Outcome::Deleting {
        reason: reason::RETAINED,
        message: message.clone(),
    };
    Report::deleting(cc).write(&ctx.operator, &outcome).await?;
    if status.phase == Some(ClusterPhase::Deleting) {
        // The writer publishes on a phase change only.
        ctx.operator
            .publish(&cc.object_ref(&()), true, reason::RETAINED, message)
            .await;
    }
    Ok(())
}

/// Every AWS resource ID status knows of the cluster's own (a brought
/// instance profile and its role are the user's).
pub fn status_ids(s: &crate::api::ComputeClusterStatus, brought_profile: bool) -> Vec<String> {
    let mut ids = Vec::new();
    if let Some(n) = &s.network {
        ids.extend(n.vpc_id.iter().cloned());
        ids.extend(n.subnets.iter().map(|s| s.id.clone()));
        ids.extend(n.internet_gateway_id.iter().cloned());
        ids.extend(n.nat_gateway_ids.iter().cloned());
        ids.extend(n.route_table_ids.iter().cloned());
        ids.extend(n.security_group_id.iter().cloned());
    }
    if let Some(iam) = s.iam.as_ref().filter(|_| !brought_profile) {
        ids.extend(iam.role_name.iter().cloned());
        ids.extend(iam.instance_profile_arn.iter().cloned());
    }
    ids.extend(
        s.node_groups
            .iter()
            .flat_map(|g| g.instance_ids.iter().cloned()),
    );
    ids
}

/// Every AWS resource is gone (or left on purpose): the finalizer goes.
fn done(ctx: &ClusterContext, uid: &str) -> Deletion {
    ctx.operator.reset_backoff(uid);
    ctx.operator.ledger.release(uid);
    ctx.recent.forget(uid);
    ctx.operator.metrics.cluster_phase(uid, None);
    Deletion::Done
}

/// Writes the deletion's status: not done yet, looked at again as
/// `next_look_deleting` says.
async fn pending(
    ctx: &ClusterContext,
    report: Report,
    outcome: Outcome,
) -> Result<Deletion, Error> {
    let after = report.write(&ctx.operator, &outcome).await?;
    let blocked = outcome.reason() == reason::DELETION_BLOCKED;
    Ok(Deletion::NotYet(next_look_deleting(
        after,
        blocked,
        ctx.operator.settings.resync,
    )))
}

/// What a deletion works from, none of it validated (a spec that no longer
/// validates must not block it): the region (immutable), the account the
/// reference names (checked against the account status recorded), and the
/// ownership tags of the cluster's identity.
pub struct DeletionTarget {
    pub region: String,
    pub account: AccountRef,
    pub owner: OwnershipTags,
}

impl DeletionTarget {
    fn of(cc: &ComputeCluster, installation: &str) -> Self {
        DeletionTarget {
            region: cc.spec.region.clone(),
            account: cc.account_key().into(),
            owner: OwnershipTags {
                installation: installation.to_string(),
                uid: cc.uid().unwrap_or_default(),
                namespace: cc.namespace().unwrap_or_default(),
                name: cc.name_any(),
                user: Default::default(),
            },
        }
    }
}

/// What in the cluster's VPCs is not the cluster's and keeps AWS from
/// deleting them, looked up when AWS says something does.
async fn blockers_in(
    c: &AwsClients,
    uid: &str,
    observed: &Observed,
) -> AwsResult<Vec<DeletionBlocker>> {
    let vpc_ids: Vec<String> = observed.vpcs.iter().map(|v| v.id.clone()).collect();
    let nat_ids: Vec<String> = observed.nat_gateways.iter().map(|n| n.id.clone()).collect();
    let found = dependents::describe(c, &vpc_ids).await?;
    Ok(blockers(uid, &nat_ids, &found))
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

fn blocked_message(e: &AwsError, blockers: &[DeletionBlocker]) -> String {
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
async fn recorded_account(
    ctx: &ClusterContext,
    cc: &ComputeCluster,
) -> Result<Option<String>, Error> {
    let recorded = |c: &ComputeCluster| c.status.as_ref().and_then(|s| s.aws_account_id.clone());
    if let Some(id) = recorded(cc) {
        return Ok(Some(id));
    }
    let api: Api<ComputeCluster> = Api::namespaced(
        ctx.operator.client.clone(),
        &cc.namespace().unwrap_or_default(),
    );
    Ok(api
        .get_opt(&cc.name_any())
        .await?
        .as_ref()
        .and_then(recorded))
}

/// One pass in the order `graph::DELETION` declares, each kind's deletes at
/// once; stops at the first kind
/// AWS must finish deleting first (after looking again briefly) and says
/// what that is.
pub async fn delete_pass(
    c: &AwsClients,
    owner: &OwnershipTags,
    o: &Observed,
) -> AwsResult<Deleted> {
    for step in DELETION {
        let left = match step {
            Step::NodeGroups => node_groups::delete(c, owner, &o.instances).await?,
            Step::NatGateways => {
                nat_gateways::delete(c, owner, &o.nat_gateways, &o.addresses).await?
            }
            Step::KeyPairs => all(key_pairs::delete(c, &o.key_pairs).await)?,
            Step::Endpoints => endpoints::delete(c, owner, &o.endpoints).await?,
            Step::Peering => peering::delete(c, &o.peerings, &o.peering_routes).await?,
            Step::RouteTables => all(route_tables::delete(c, &o.route_tables).await)?,
            Step::InternetGateway => all(internet_gateway::delete(c, &o.internet_gateways).await)?,
            Step::Subnets => all(subnets::delete(c, &o.subnets).await)?,
            Step::SecurityGroup => all(security_group::delete(c, &o.security_groups).await)?,
            Step::Vpc => all(vpc::delete(c, &o.vpcs).await)?,
            Step::Iam => all(iam::delete(c, &o.iam).await)?,
            // Made by another kind's step: deleted with it (`deleted_with`).
            Step::VpcDns
            | Step::Images
            | Step::Addresses
            | Step::PublicIps
            | Step::PublicRoute
            | Step::PrivateRoutes
            | Step::EndpointGroup
            | Step::PeeringRoutes => Deleted::All,
        };
        if left != Deleted::All {
            return Ok(left);
        }
    }
    Ok(Deleted::All)
}

/// A kind whose deletes AWS does at once.
fn all(deleted: AwsResult<()>) -> AwsResult<Deleted> {
    deleted.map(|()| Deleted::All)
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
