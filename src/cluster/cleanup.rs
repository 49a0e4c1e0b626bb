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

use kube::{Api, ResourceExt};

use super::catching_up::recent;
use super::graph::deletion_order;
use super::kinds::{Deleted, Observed};
use super::next_look::next_look_deleting;
use super::ownership::{self, DeletionTarget, Intent, Recorded, LET_GO};
use super::status::Report;
use super::{blockers, retain};
use super::{use_account, ClusterContext};
use crate::account::credentials::ResolvedAccount;
use crate::api::compute_cluster::DeletionBlocker;
use crate::api::conditions::reason;
use crate::api::{ClusterPhase, ComputeCluster, DeletionPolicy};
use crate::aws::tags::OwnershipTags;
use crate::aws::{AwsClients, AwsResult};
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
        retain::retain(&ctx, &cc).await?;
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
        let found = blockers::blockers_in(c, uid, observed).await?;
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
        let message = blockers::blocked_message(&e, &found);
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
    for (_, delete) in deletion_order() {
        // Every kind in the order has one (`graph`'s tests).
        let Some(delete) = delete else { continue };
        let left = delete(c, owner, o).await?;
        if left != Deleted::All {
            return Ok(left);
        }
    }
    Ok(Deleted::All)
}
