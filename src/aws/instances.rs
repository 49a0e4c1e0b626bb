//! EC2 instances of the node groups, and the default image.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use aws_sdk_ec2::types::{
    ArchitectureType, Filter, IamInstanceProfileSpecification, InstanceMarketOptionsRequest,
    InstanceStateName, InstanceType, MarketType, ResourceType, SpotInstanceType, SpotMarketOptions,
};

use super::tags::{tag_value, OwnershipTags, NODE_GROUP};
use super::{AwsClients, AwsResult, NotFoundExt, SdkResultExt};
use crate::api::NodeGroupSpec;
use crate::cluster::plan::{InstanceState, ObservedInstance};

/// Instances of the cluster that are not terminated.
pub async fn describe(c: &AwsClients, owner: &OwnershipTags) -> AwsResult<Vec<ObservedInstance>> {
    let live = Filter::builder()
        .name("instance-state-name")
        .values("pending")
        .values("running")
        .values("stopping")
        .values("stopped")
        .values("shutting-down")
        .build();
    let mut out = Vec::new();
    let mut pages = c
        .ec2
        .describe_instances()
        .filters(owner.filter())
        .filters(live)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.op("ec2:DescribeInstances")?;
        for r in page.reservations() {
            for i in r.instances() {
                if !owner.owns(i.tags()) {
                    continue;
                }
                let state = match i.state().and_then(|s| s.name()) {
                    Some(InstanceStateName::Pending) => InstanceState::Pending,
                    Some(InstanceStateName::Running) => InstanceState::Running,
                    Some(InstanceStateName::Stopping) => InstanceState::Stopping,
                    Some(InstanceStateName::Stopped) => InstanceState::Stopped,
                    Some(InstanceStateName::ShuttingDown) => InstanceState::ShuttingDown,
                    _ => InstanceState::Terminated,
                };
                out.push(ObservedInstance {
                    id: i.instance_id().unwrap_or_default().to_string(),
                    group: tag_value(i.tags(), NODE_GROUP)
                        .unwrap_or_default()
                        .to_string(),
                    instance_type: i
                        .instance_type()
                        .map(|t| t.as_str().to_string())
                        .unwrap_or_default(),
                    state,
                    launched: i.launch_time().map(|t| t.secs()).unwrap_or_default(),
                    subnet_id: i.subnet_id().unwrap_or_default().to_string(),
                });
            }
        }
    }
    Ok(out)
}

/// A launch request for one subnet.
pub struct Launch<'a> {
    pub group: &'a NodeGroupSpec,
    pub image_id: &'a str,
    pub subnet_id: &'a str,
    pub security_group_id: &'a str,
    pub instance_profile_arn: &'a str,
    pub count: i32,
    /// Instances of the group that exist now: part of the idempotency token,
    /// so a retry of the same launch returns the same instances.
    pub existing: &'a [String],
}

/// The idempotency token of a launch: the same inputs give the same token.
pub fn client_token(owner: &OwnershipTags, launch: &Launch<'_>) -> String {
    let mut h = DefaultHasher::new();
    (
        &owner.uid,
        &launch.group.name,
        &launch.group.instance_type,
        launch.subnet_id,
        launch.count,
        launch.existing,
    )
        .hash(&mut h);
    let short: String = owner.uid.chars().take(8).collect();
    format!(
        "byoc-{short}-{}-{:016x}",
        launch.group.name.chars().take(20).collect::<String>(),
        h.finish()
    )
}

pub async fn run(
    c: &AwsClients,
    owner: &OwnershipTags,
    launch: &Launch<'_>,
) -> AwsResult<Vec<String>> {
    let tags = owner.ec2_spec(
        ResourceType::Instance,
        "node",
        &[(NODE_GROUP, &launch.group.name)],
    );
    let volume_tags = owner.ec2_spec(
        ResourceType::Volume,
        "node-volume",
        &[(NODE_GROUP, &launch.group.name)],
    );
    let mut req = c
        .ec2
        .run_instances()
        .image_id(launch.image_id)
        .instance_type(InstanceType::from(launch.group.instance_type.as_str()))
        .min_count(launch.count)
        .max_count(launch.count)
        .subnet_id(launch.subnet_id)
        .security_group_ids(launch.security_group_id)
        .iam_instance_profile(
            IamInstanceProfileSpecification::builder()
                .arn(launch.instance_profile_arn)
                .build(),
        )
        .client_token(client_token(owner, launch))
        .tag_specifications(tags)
        .tag_specifications(volume_tags);
    if launch.group.spot {
        req = req.instance_market_options(
            InstanceMarketOptionsRequest::builder()
                .market_type(MarketType::Spot)
                .spot_options(
                    SpotMarketOptions::builder()
                        .spot_instance_type(SpotInstanceType::OneTime)
                        .build(),
                )
                .build(),
        );
    }
    let out = req.send().await.op("ec2:RunInstances")?;
    Ok(out
        .instances()
        .iter()
        .filter_map(|i| i.instance_id().map(str::to_string))
        .collect())
}

pub async fn terminate(c: &AwsClients, ids: &[String]) -> AwsResult<()> {
    if ids.is_empty() {
        return Ok(());
    }
    c.ec2
        .terminate_instances()
        .set_instance_ids(Some(ids.to_vec()))
        .send()
        .await
        .op("ec2:TerminateInstances")
        .or_gone()
}

/// The processor architecture of each of `instance_types`, in one call.
/// `Ok(Err(message))` when one is unknown in the region.
pub async fn architectures(
    c: &AwsClients,
    instance_types: &[String],
) -> AwsResult<Result<BTreeMap<String, ArchitectureType>, String>> {
    let types = c
        .ec2
        .describe_instance_types()
        .set_instance_types(Some(
            instance_types
                .iter()
                .map(|t| InstanceType::from(t.as_str()))
                .collect(),
        ))
        .send()
        .await;
    let types = match types.op("ec2:DescribeInstanceTypes") {
        Err(e) if e.class() != super::ErrorClass::Transient => {
            return Ok(Err(format!(
                "instance type {}: {e}",
                instance_types.join(", ")
            )));
        }
        other => other?,
    };
    let mut found = BTreeMap::new();
    for t in types.instance_types() {
        let arch = t
            .processor_info()
            .map(|p| p.supported_architectures())
            .and_then(|a| {
                a.iter()
                    .find(|a| matches!(a, ArchitectureType::Arm64 | ArchitectureType::X8664))
                    .cloned()
            });
        if let (Some(name), Some(arch)) = (t.instance_type(), arch) {
            found.insert(name.as_str().to_string(), arch);
        }
    }
    if let Some(unknown) = instance_types.iter().find(|t| !found.contains_key(*t)) {
        return Ok(Err(format!(
            "instance type {unknown} is unknown in this region"
        )));
    }
    Ok(Ok(found))
}

/// The newest Amazon Linux 2023 image for `arch`.
pub async fn newest_image(
    c: &AwsClients,
    arch: &ArchitectureType,
) -> AwsResult<Result<String, String>> {
    let out = c
        .ec2
        .describe_images()
        .owners("amazon")
        .filters(
            Filter::builder()
                .name("name")
                .values(format!("al2023-ami-2023.*-{}", arch.as_str()))
                .build(),
        )
        .filters(Filter::builder().name("state").values("available").build())
        .send()
        .await
        .op("ec2:DescribeImages")?;
    let newest = out
        .images()
        .iter()
        .filter(|i| i.name().is_some_and(|n| !n.contains("minimal")))
        .max_by(|a, b| {
            a.creation_date()
                .cmp(&b.creation_date())
                .then_with(|| a.name().cmp(&b.name()))
        })
        .and_then(|i| i.image_id());
    Ok(newest
        .map(str::to_string)
        .ok_or_else(|| format!("no Amazon Linux 2023 image for {} found", arch.as_str())))
}
