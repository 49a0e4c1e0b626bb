//! `deletionPolicy: Retain`: the cluster lets go of its AWS resources,
//! saying which in status and an Event, and marking them so that no audit
//! counts them as leaked.

use kube::{Resource, ResourceExt};

use super::kinds::Observed;
use super::ownership::DeletionTarget;
use super::status::Report;
use super::{use_account, ClusterContext};
use crate::api::conditions::reason;
use crate::api::{ClusterPhase, ComputeCluster};
use crate::aws::AwsClients;
use crate::outcome::Outcome;
use crate::Error;

/// `deletionPolicy: Retain`: says in status and an Event which AWS
/// resources are left behind (what status knows, and what AWS shows when
/// the account can still be used), then lets go.
pub async fn retain(ctx: &ClusterContext, cc: &ComputeCluster) -> Result<(), Error> {
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
                        !matches!(
                            *kind,
                            "key-pair" | "instance-profile" | "iam-role" | "log-group" | "kms-key"
                        )
                    })
                    .map(|(_, id)| id)
                    .collect();
                let iam = observed.iam.role.as_deref();
                if let Err(e) = crate::aws::inventory::mark_retained(&c, &ec2, iam).await {
                    tracing::warn!(name = %cc.name_any(), error = %e, "marking the retained resources failed");
                }
                if let Some(key) = observed.own_live_key() {
                    if let Err(e) = crate::aws::kms_key::mark_retained(&c, &key.id).await {
                        tracing::warn!(name = %cc.name_any(), error = %e, "marking the retained key failed");
                    }
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
