//! Consent withdrawn: a cluster that reached AWS through another
//! namespace's CloudAccount (borrowed) whose `allowedNamespaces` no longer
//! lists the cluster's namespace. The lender's account is held for it only
//! to delete, and only for a bounded time:
//! - neither the pause annotation nor `deletionPolicy: Retain` keeps its
//!   resources in the lender's account;
//! - the grace period (`--withdrawn-consent-grace`) runs from when the
//!   operator first saw the withdrawal (the `ConsentWithdrawn` condition's
//!   transition time); at its end the operator deletes the cluster's AWS
//!   resources itself, forgets the account, and so lets it go.
//!
//! A cluster of the account's own namespace is always allowed, and an
//! account given back its consent within the grace period is used again.

use std::sync::Arc;
use std::time::Duration;

use kube::api::Api;
use kube::runtime::controller::Action;
use kube::ResourceExt;

use super::cleanup::{self, Deletion};
use super::status::Report;
use super::ClusterContext;
use crate::api::conditions::{self, reason, CONSENT_WITHDRAWN};
use crate::api::{CloudAccount, ComputeCluster, DeletionPolicy};
use crate::Error;

/// A borrowed account's consent, withdrawn from the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Withdrawn {
    /// The lender's account, `namespace/name`.
    pub account: String,
    /// When the grace period ends.
    pub deadline: jiff::Timestamp,
}

/// Whether `account`, the one `cc` reached AWS through, has withdrawn its
/// consent from the cluster's namespace. Pure.
pub fn withdrawn_by(cc: &ComputeCluster, account: &CloudAccount) -> bool {
    crate::account::in_use::Standing::of(account, cc).withdrawn()
}

/// When the grace period of a withdrawal seen `now` ends: counted from the
/// `ConsentWithdrawn` condition already recorded, else from `now`. Pure.
pub fn deadline(cc: &ComputeCluster, grace: Duration, now: jiff::Timestamp) -> jiff::Timestamp {
    let since = cc
        .status
        .as_ref()
        .and_then(|s| {
            s.conditions
                .iter()
                .find(|c| c.type_ == CONSENT_WITHDRAWN && c.status == "True")
        })
        .map(|c| c.last_transition_time.0)
        .unwrap_or(now);
    let grace = jiff::SignedDuration::try_from(grace).unwrap_or(jiff::SignedDuration::MAX);
    since.checked_add(grace).unwrap_or(jiff::Timestamp::MAX)
}

/// The withdrawal of the account `cc` reached AWS through, if it is
/// another namespace's and no longer allows the cluster's. One read of
/// that account; none for a cluster of the account's own namespace.
pub async fn withdrawn(
    ctx: &ClusterContext,
    cc: &ComputeCluster,
) -> Result<Option<Withdrawn>, Error> {
    let Some(recorded) = cc.recorded_account() else {
        return Ok(None);
    };
    if Some(recorded.namespace.as_str()) == cc.namespace().as_deref() {
        return Ok(None);
    }
    let api: Api<CloudAccount> = Api::namespaced(ctx.operator.client.clone(), &recorded.namespace);
    // An account that is gone: the deletion's own checks say what waits.
    let Some(account) = api.get_opt(&recorded.name).await? else {
        return Ok(None);
    };
    if !withdrawn_by(cc, &account) {
        return Ok(None);
    }
    let grace = ctx.operator.settings.withdrawn_consent_grace;
    Ok(Some(Withdrawn {
        account: format!("{}/{}", recorded.namespace, recorded.name),
        deadline: deadline(cc, grace, jiff::Timestamp::now()),
    }))
}

/// A cluster whose consent was withdrawn, not deleted (paused or not):
/// within the grace period it waits, stalled, for its deletion; after it,
/// its AWS resources are deleted and the account is forgotten.
pub async fn hold_or_release(
    cc: Arc<ComputeCluster>,
    ctx: Arc<ClusterContext>,
    w: Withdrawn,
) -> Result<Action, Error> {
    let now = jiff::Timestamp::now();
    let own_ns = cc.namespace().unwrap_or_default();
    if now < w.deadline {
        let message = format!(
            "CloudAccount {} no longer allows namespace {own_ns} (spec.allowedNamespaces): delete this cluster; at {} the operator deletes its AWS resources in that account itself (the pause annotation and deletionPolicy Retain do not keep them there)",
            w.account,
            w.deadline.strftime("%Y-%m-%dT%H:%M:%SZ")
        );
        Report::new(&cc)
            .consent(&ctx.operator, reason::NAMESPACE_NOT_ALLOWED, message)
            .await?;
        let left = Duration::try_from(w.deadline.duration_since(now)).unwrap_or_default();
        return Ok(Action::requeue(left.min(ctx.operator.settings.resync)));
    }
    match cleanup::cleanup(as_deleted(&cc), ctx.clone()).await? {
        Deletion::NotYet(after) => Ok(Action::requeue(after)),
        Deletion::Done => {
            let message = format!(
                "CloudAccount {} withdrew its consent from namespace {own_ns} and the grace period ended: the cluster's AWS resources in that account were deleted and the account let go; delete this cluster, or ask for the namespace to be allowed again",
                w.account
            );
            // Forgotten: what status knew is gone, and the account with it
            // (so nothing holds it for this cluster any more).
            let mut forgotten = (*cc).clone();
            if let Some(s) = forgotten.status.as_mut() {
                s.cloud_account = None;
                s.aws_account_id = None;
                s.network = None;
                s.iam = None;
                s.node_groups.clear();
                s.deletion_blockers.clear();
            }
            Report::new(&forgotten)
                .consent(&ctx.operator, reason::RESOURCES_RELEASED, message)
                .await?;
            Ok(Action::await_change())
        }
    }
}

/// The deletion of a cluster whose consent was withdrawn: what it made in
/// the lender's account is deleted, whatever its `deletionPolicy` says.
pub async fn delete(
    cc: Arc<ComputeCluster>,
    ctx: Arc<ClusterContext>,
    w: &Withdrawn,
) -> Result<Deletion, Error> {
    if cc.spec.deletion_policy == DeletionPolicy::Retain {
        tracing::info!(name = %cc.name_any(), account = %w.account, "deletionPolicy Retain not honoured: the account's consent was withdrawn");
    }
    cleanup::cleanup(as_deleted(&cc), ctx).await
}

/// `cc` as its deletion with `deletionPolicy: Delete` sees it.
fn as_deleted(cc: &ComputeCluster) -> Arc<ComputeCluster> {
    let mut gone = cc.clone();
    gone.spec.deletion_policy = DeletionPolicy::Delete;
    if gone.metadata.deletion_timestamp.is_none() {
        gone.metadata.deletion_timestamp = Some(conditions::now());
    }
    Arc::new(gone)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::compute_cluster::CloudAccountRecord;
    use crate::api::ComputeClusterStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn account(ns: &str, allowed: &[&str]) -> CloudAccount {
        let mut a: CloudAccount = serde_json::from_value(serde_json::json!({
            "apiVersion": "byoc.dev/v1alpha1", "kind": "CloudAccount",
            "metadata": {"name": "acme", "namespace": ns, "uid": "acct-uid"},
            "spec": {"region": "us-east-1"}
        }))
        .expect("a valid CloudAccount");
        a.spec.allowed_namespaces = allowed.iter().map(|s| s.to_string()).collect();
        a
    }

    fn cluster(ns: &str, recorded: Option<(&str, &str)>) -> ComputeCluster {
        let mut cc: ComputeCluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "byoc.dev/v1alpha1", "kind": "ComputeCluster",
            "metadata": {"name": "ml", "namespace": ns},
            "spec": {"cloudAccountRef": {"name": "acme", "namespace": "lender"}, "region": "us-east-1",
                     "network": {"vpcCidr": "10.0.0.0/16", "azCount": 1}, "nodeGroups": []}
        }))
        .expect("a valid ComputeCluster");
        cc.status = Some(ComputeClusterStatus {
            cloud_account: recorded.map(|(ns, uid)| CloudAccountRecord {
                namespace: ns.into(),
                name: "acme".into(),
                uid: uid.into(),
            }),
            ..Default::default()
        });
        cc
    }

    #[test]
    fn consent_is_withdrawn_only_by_the_recorded_lender_that_no_longer_allows() {
        // (cluster namespace, recorded (ns, uid), account allows, withdrawn, why)
        type Row<'a> = (
            &'a str,
            Option<(&'a str, &'a str)>,
            &'a [&'a str],
            bool,
            &'a str,
        );
        let rows: &[Row] = &[
            (
                "borrower",
                Some(("lender", "acct-uid")),
                &[],
                true,
                "revoked",
            ),
            (
                "borrower",
                Some(("lender", "acct-uid")),
                &["borrower"],
                false,
                "still allowed",
            ),
            (
                "borrower",
                Some(("lender", "acct-uid")),
                &["*"],
                false,
                "allowed to all",
            ),
            (
                "borrower",
                Some(("lender", "other-uid")),
                &[],
                false,
                "another account of that name",
            ),
            ("borrower", None, &[], false, "never reached AWS"),
            (
                "lender",
                Some(("lender", "acct-uid")),
                &[],
                false,
                "its own namespace",
            ),
        ];
        for (ns, recorded, allowed, want, why) in rows {
            let got = withdrawn_by(&cluster(ns, *recorded), &account("lender", allowed));
            assert_eq!(got, *want, "{why}");
        }
    }

    #[test]
    fn the_grace_period_runs_from_the_first_sight_of_the_withdrawal() {
        let grace = Duration::from_secs(3600);
        let now = jiff::Timestamp::from_second(10_000).expect("a time");
        let mut cc = cluster("borrower", Some(("lender", "acct-uid")));
        assert_eq!(
            deadline(&cc, grace, now),
            jiff::Timestamp::from_second(13_600).expect("a time"),
            "first seen now"
        );
        let seen = |status: &str| Condition {
            type_: CONSENT_WITHDRAWN.into(),
            status: status.into(),
            reason: reason::NAMESPACE_NOT_ALLOWED.into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: Time(jiff::Timestamp::from_second(1_000).expect("a time")),
        };
        if let Some(s) = cc.status.as_mut() {
            s.conditions = vec![seen("True")];
        }
        assert_eq!(
            deadline(&cc, grace, now),
            jiff::Timestamp::from_second(4_600).expect("a time"),
            "counted from the recorded withdrawal, not from each look"
        );
        if let Some(s) = cc.status.as_mut() {
            s.conditions = vec![seen("False")];
        }
        assert_eq!(
            deadline(&cc, grace, now),
            jiff::Timestamp::from_second(13_600).expect("a time"),
            "a consent given back and withdrawn again starts a new period"
        );
    }
}
