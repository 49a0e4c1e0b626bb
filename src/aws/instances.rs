//! EC2 instances of the node groups, and the default image.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{
    ArchitectureType, BlockDeviceMapping, EbsBlockDevice, Filter, HttpTokensState,
    IamInstanceProfileSpecification, InstanceMarketOptionsRequest, InstanceMetadataEndpointState,
    InstanceMetadataOptionsRequest, InstanceStateName, InstanceType, MarketType, ResourceType,
    SpotInstanceType, SpotMarketOptions, VolumeType,
};

use aws_sdk_ec2::operation::run_instances::RunInstancesError;
use aws_smithy_runtime_api::client::interceptors::context::InterceptorContext;
use aws_smithy_runtime_api::client::retries::classifiers::{
    ClassifyRetry, RetryAction, RetryClassifierPriority,
};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use super::error::is_refusal;
use super::settling::new_ids_retried;
use super::tags::{
    tag_value, Owned, OwnershipTags, Scope, CLUSTER_UID, INSTALLATION, INTERRUPTED, LAUNCH_CONFIG,
    NODE_GROUP,
};
use super::token::client_token;
use super::{required, AwsClients, AwsError, AwsResult, NotFoundExt, SdkResultExt};

/// EC2 instance lifecycle states that matter here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstanceState {
    Pending,
    Running,
    Stopping,
    Stopped,
    ShuttingDown,
    Terminated,
}

impl InstanceState {
    /// Pending or running: counts toward a group's size.
    pub fn is_live(self) -> bool {
        matches!(self, InstanceState::Pending | InstanceState::Running)
    }

    /// Shutting down or terminated: on its way out, nothing left to do.
    pub fn is_ending(self) -> bool {
        matches!(
            self,
            InstanceState::ShuttingDown | InstanceState::Terminated
        )
    }
}

/// An instance of ours as observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedInstance {
    pub id: String,
    pub group: String,
    pub instance_type: String,
    pub state: InstanceState,
    /// Launch time, seconds since the epoch.
    pub launched: i64,
    pub subnet_id: String,
    /// The hash of the launch configuration it was launched with (absent on
    /// instances launched before the operator tagged it).
    pub launch_config: Option<String>,
    /// The SSH key pair it was launched with.
    pub key_name: Option<String>,
    /// The image it was launched from.
    pub image_id: Option<String>,
    /// Its availability zone.
    pub zone: String,
    /// A spot instance (else on demand).
    pub spot: bool,
    /// Marked as taken back by AWS ([`INTERRUPTED`]): by when, in seconds
    /// since the epoch (0: no time given).
    pub interrupted: Option<i64>,
}

/// A filter of instances in any of `states`.
impl ObservedInstance {
    /// An instance of `group` in subnet-1, everything else empty: the start
    /// of a unit test's instance.
    #[cfg(test)]
    pub fn of(id: &str, group: &str, instance_type: &str, state: InstanceState) -> Self {
        ObservedInstance {
            id: id.into(),
            group: group.into(),
            instance_type: instance_type.into(),
            state,
            launched: 0,
            subnet_id: "subnet-1".into(),
            launch_config: None,
            key_name: None,
            image_id: None,
            zone: String::new(),
            spot: false,
            interrupted: None,
        }
    }
}

pub fn in_states(states: &[&str]) -> Filter {
    Filter::builder()
        .name("instance-state-name")
        .set_values(Some(states.iter().map(|s| s.to_string()).collect()))
        .build()
}

/// Instances of the scope that are not terminated.
pub async fn describe(c: &AwsClients, scope: Scope<'_>) -> AwsResult<Vec<Owned<ObservedInstance>>> {
    let live = in_states(&["pending", "running", "stopping", "stopped", "shutting-down"]);
    let mut out = Vec::new();
    let mut pages = c
        .ec2
        .describe_instances()
        .filters(scope.filter())
        .filters(live)
        // AWS's largest page (without it, pages of 100 here).
        .max_results(1000)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.op("ec2:DescribeInstances")?;
        for r in page.reservations() {
            for i in r.instances() {
                let Some(uid) = scope.owner_of(i.tags()) else {
                    continue;
                };
                let state = match i.state().and_then(|s| s.name()) {
                    Some(InstanceStateName::Pending) => InstanceState::Pending,
                    Some(InstanceStateName::Running) => InstanceState::Running,
                    Some(InstanceStateName::Stopping) => InstanceState::Stopping,
                    Some(InstanceStateName::Stopped) => InstanceState::Stopped,
                    Some(InstanceStateName::ShuttingDown) => InstanceState::ShuttingDown,
                    _ => InstanceState::Terminated,
                };
                const OP: &str = "ec2:DescribeInstances";
                let instance = ObservedInstance {
                    id: required(i.instance_id(), OP, "InstanceId")?,
                    // An instance of ours launched without a group tag
                    // belongs to no group: it is terminated as an orphan.
                    group: tag_value(i.tags(), NODE_GROUP)
                        .unwrap_or_default()
                        .to_string(),
                    instance_type: required(
                        i.instance_type().map(|t| t.as_str()),
                        OP,
                        "InstanceType",
                    )?,
                    state,
                    launched: i.launch_time().map(|t| t.secs()).unwrap_or_default(),
                    // Set on every instance in a VPC; absent once terminated.
                    subnet_id: i.subnet_id().unwrap_or_default().to_string(),
                    launch_config: tag_value(i.tags(), LAUNCH_CONFIG).map(str::to_string),
                    key_name: i.key_name().map(str::to_string),
                    image_id: i.image_id().map(str::to_string),
                    zone: i
                        .placement()
                        .and_then(|p| p.availability_zone())
                        .unwrap_or_default()
                        .to_string(),
                    spot: i.instance_lifecycle()
                        == Some(&aws_sdk_ec2::types::InstanceLifecycleType::Spot),
                    interrupted: tag_value(i.tags(), INTERRUPTED)
                        .map(|v| v.parse().unwrap_or_default()),
                };
                out.push((uid, instance));
            }
        }
    }
    Ok(out)
}

/// Of `ids` (running instances), those whose instance or system status
/// checks are impaired, with when (seconds since the epoch) they became so.
pub async fn impaired(c: &AwsClients, ids: &[String]) -> AwsResult<BTreeMap<String, i64>> {
    let mut out = BTreeMap::new();
    for chunk in ids.chunks(100) {
        let request = c
            .ec2
            .describe_instance_status()
            .set_instance_ids(Some(chunk.to_vec()));
        impaired_in(request, &mut out).await?;
    }
    Ok(out)
}

/// [`impaired`] of every running instance in the region, in pages of 1000
/// (the shared resync: one call whatever the number of clusters).
pub async fn impaired_in_region(c: &AwsClients) -> AwsResult<BTreeMap<String, i64>> {
    let mut out = BTreeMap::new();
    impaired_in(c.ec2.describe_instance_status().max_results(1000), &mut out).await?;
    Ok(out)
}

async fn impaired_in(
    request: aws_sdk_ec2::operation::describe_instance_status::builders::DescribeInstanceStatusFluentBuilder,
    out: &mut BTreeMap<String, i64>,
) -> AwsResult<()> {
    const OP: &str = "ec2:DescribeInstanceStatus";
    let mut pages = request.into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.op(OP)?;
        for s in page.instance_statuses() {
            let summaries = [s.instance_status(), s.system_status()];
            let impaired: Vec<&aws_sdk_ec2::types::InstanceStatusSummary> = summaries
                .into_iter()
                .flatten()
                .filter(|x| x.status() == Some(&aws_sdk_ec2::types::SummaryStatus::Impaired))
                .collect();
            if impaired.is_empty() {
                continue;
            }
            let since = impaired
                .iter()
                .flat_map(|x| x.details())
                .filter_map(|d| d.impaired_since().map(|t| t.secs()))
                .min()
                .unwrap_or_else(|| jiff::Timestamp::now().as_second());
            out.insert(required(s.instance_id(), OP, "InstanceId")?, since);
        }
    }
    Ok(())
}

/// The root volume of a launch.
pub struct RootDevice<'a> {
    /// The image's root device name (e.g. `/dev/xvda`).
    pub device_name: &'a str,
    pub size_gib: Option<i32>,
    pub volume_type: &'a str,
    pub iops: Option<i32>,
    pub throughput: Option<i32>,
    pub encrypted: bool,
    pub kms_key_id: Option<&'a str>,
}

/// A launch request for one subnet.
pub struct Launch<'a> {
    pub group: &'a str,
    pub instance_type: &'a str,
    pub spot: bool,
    pub image_id: &'a str,
    pub subnet_id: &'a str,
    pub security_group_ids: &'a [String],
    pub instance_profile_arn: &'a str,
    /// IMDSv2 only (session tokens required).
    pub http_tokens_required: bool,
    pub http_put_response_hop_limit: i32,
    pub root_device: Option<RootDevice<'a>>,
    /// The hash of the launch configuration, tagged on the instances.
    pub launch_config: &'a str,
    /// User data, base64 (never logged).
    pub user_data: Option<&'a str>,
    pub key_name: Option<&'a str>,
    pub count: i32,
    /// Instances of the group that exist now: part of the idempotency token,
    /// so a retry of the same launch returns the same instances.
    pub existing: &'a [String],
}

/// The idempotency token of a launch: the same inputs give the same token.
pub fn launch_token(owner: &OwnershipTags, launch: &Launch<'_>) -> String {
    let short: String = owner.uid.chars().take(8).collect();
    let group: String = launch.group.chars().take(20).collect();
    let count = launch.count.to_string();
    let mut parts = vec![
        owner.uid.as_str(),
        launch.group,
        launch.instance_type,
        launch.subnet_id,
        launch.launch_config,
        &count,
    ];
    parts.extend(launch.existing.iter().map(String::as_str));
    client_token(&format!("byoc-{short}-{group}"), &parts)
}

pub async fn run(
    c: &AwsClients,
    owner: &OwnershipTags,
    launch: &Launch<'_>,
) -> AwsResult<Vec<String>> {
    let tags = owner.ec2_spec(
        ResourceType::Instance,
        "node",
        &[
            (NODE_GROUP, launch.group),
            (LAUNCH_CONFIG, launch.launch_config),
        ],
    );
    let volume_tags = owner.ec2_spec(
        ResourceType::Volume,
        "node-volume",
        &[(NODE_GROUP, launch.group)],
    );
    let mut req = c
        .ec2
        .run_instances()
        .image_id(launch.image_id)
        .instance_type(InstanceType::from(launch.instance_type))
        .min_count(launch.count)
        .max_count(launch.count)
        .subnet_id(launch.subnet_id)
        .set_security_group_ids(Some(launch.security_group_ids.to_vec()))
        .metadata_options(metadata_options(launch))
        .set_block_device_mappings(launch.root_device.as_ref().map(|d| vec![root_mapping(d)]))
        .set_user_data(launch.user_data.map(str::to_string))
        .set_key_name(launch.key_name.map(str::to_string))
        .iam_instance_profile(
            IamInstanceProfileSpecification::builder()
                .arn(launch.instance_profile_arn)
                .build(),
        )
        .client_token(launch_token(owner, launch))
        .tag_specifications(tags)
        .tag_specifications(volume_tags);
    if launch.spot {
        req = req.instance_market_options(spot_once());
    }
    let out = req
        .customize()
        .config_override(
            new_ids_retried::<RunInstancesError>().retry_classifier(RefusalsAreAnswers),
        )
        .send()
        .await
        .op("ec2:RunInstances")
        .map_err(AwsError::missing_reference)?;
    Ok(out
        .instances()
        .iter()
        .filter_map(|i| i.instance_id().map(str::to_string))
        .collect())
}

/// The instance metadata service: on, IMDSv2 tokens required or not, and
/// the hop limit.
fn metadata_options(launch: &Launch<'_>) -> InstanceMetadataOptionsRequest {
    InstanceMetadataOptionsRequest::builder()
        .http_endpoint(InstanceMetadataEndpointState::Enabled)
        .http_tokens(if launch.http_tokens_required {
            HttpTokensState::Required
        } else {
            HttpTokensState::Optional
        })
        .http_put_response_hop_limit(launch.http_put_response_hop_limit)
        .build()
}

/// A one-time spot request.
fn spot_once() -> InstanceMarketOptionsRequest {
    InstanceMarketOptionsRequest::builder()
        .market_type(MarketType::Spot)
        .spot_options(
            SpotMarketOptions::builder()
                .spot_instance_type(SpotInstanceType::OneTime)
                .build(),
        )
        .build()
}

/// A refusal of RunInstances (no capacity for the offering, not offered in
/// the zone) is an answer: the caller tries another offering at once. AWS
/// sends some with status 500, which the SDK would otherwise retry.
#[derive(Debug)]
struct RefusalsAreAnswers;

impl ClassifyRetry for RefusalsAreAnswers {
    fn classify_retry(&self, ctx: &InterceptorContext) -> RetryAction {
        let code = ctx
            .output_or_error()
            .and_then(|r| r.err())
            .and_then(|e| e.as_operation_error())
            .and_then(|e| e.downcast_ref::<RunInstancesError>())
            .and_then(|e| e.code());
        match is_refusal(code) {
            true => RetryAction::RetryForbidden,
            false => RetryAction::NoActionIndicated,
        }
    }

    fn name(&self) -> &'static str {
        "refusals of an offering are answers"
    }

    fn priority(&self) -> RetryClassifierPriority {
        // First: forbidding a retry ends the classification.
        RetryClassifierPriority::run_before(RetryClassifierPriority::http_status_code_classifier())
    }
}

fn root_mapping(d: &RootDevice<'_>) -> BlockDeviceMapping {
    BlockDeviceMapping::builder()
        .device_name(d.device_name)
        .ebs(
            EbsBlockDevice::builder()
                .set_volume_size(d.size_gib)
                .volume_type(VolumeType::from(d.volume_type))
                .set_iops(d.iops)
                .set_throughput(d.throughput)
                .encrypted(d.encrypted)
                .set_kms_key_id(d.kms_key_id.map(str::to_string))
                .delete_on_termination(true)
                .build(),
        )
        .build()
}

/// What a launch needs to know of `image_id`: its root device and owner
/// (`None` if the region has no such image).
pub async fn image_facts(c: &AwsClients, image_id: &str) -> AwsResult<Option<ImageFacts>> {
    let out = c
        .ec2
        .describe_images()
        .image_ids(image_id)
        .send()
        .await
        .op("ec2:DescribeImages")
        .found()?;
    Ok(out.and_then(|o| {
        let image = o.images().first()?;
        let name = image.root_device_name()?;
        let root = image
            .block_device_mappings()
            .iter()
            .find(|m| m.device_name() == Some(name))
            .and_then(|m| m.ebs());
        let size_gib = root.and_then(|e| e.volume_size());
        let volume_type = root
            .and_then(|e| e.volume_type())
            .map(|t| t.as_str().to_string());
        // As IAM's `ec2:Owner` names it: `amazon` for Amazon's images.
        let owner = match image.image_owner_alias() {
            Some(alias @ ("amazon" | "aws-marketplace")) => alias,
            _ => image.owner_id()?,
        };
        Some(ImageFacts {
            device_name: name.to_string(),
            size_gib,
            volume_type,
            owner: owner.to_string(),
        })
    }))
}

/// An image's root device (its name and the size of its snapshot) and its
/// owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageFacts {
    pub device_name: String,
    pub size_gib: Option<i32>,
    /// The type of that snapshot's volume (`gp3`, `gp2`, `standard`, ...).
    pub volume_type: Option<String>,
    /// `amazon`, `aws-marketplace` or the owning account's ID.
    pub owner: String,
}

/// Marks `ids` as taken back by AWS at `deadline` (seconds since the
/// epoch; 0: no time given).
pub async fn mark_interrupted(c: &AwsClients, ids: &[String], deadline: i64) -> AwsResult<()> {
    c.ec2
        .create_tags()
        .set_resources(Some(ids.to_vec()))
        .tags(
            aws_sdk_ec2::types::Tag::builder()
                .key(INTERRUPTED)
                .value(deadline.to_string())
                .build(),
        )
        .send()
        .await
        .op("ec2:CreateTags")
        .map(|_| ())
}

/// The owning cluster's UID, by the installation's tags, of each of `ids`
/// AWS holds (an instance of another installation, or no one's, is not
/// listed): where a message names an instance no status lists yet.
pub async fn owners(
    c: &AwsClients,
    installation: &str,
    ids: &[String],
) -> AwsResult<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut pages = c
        .ec2
        .describe_instances()
        .filters(
            Filter::builder()
                .name("instance-id")
                .set_values(Some(ids.to_vec()))
                .build(),
        )
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        for r in page.op("ec2:DescribeInstances")?.reservations() {
            for i in r.instances() {
                let (Some(id), Some(uid)) = (i.instance_id(), tag_value(i.tags(), CLUSTER_UID))
                else {
                    continue;
                };
                if tag_value(i.tags(), INSTALLATION) == Some(installation) {
                    out.insert(id.to_string(), uid.to_string());
                }
            }
        }
    }
    Ok(out)
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

/// What the region says of each of `instance_types` it knows, a hundred a
/// call. AWS refuses a whole call that names an unknown type: that call's
/// types are left out (the spec check reports an unknown type, not the
/// lookups that use this).
pub async fn describe_types(
    c: &AwsClients,
    instance_types: &[String],
) -> AwsResult<Vec<aws_sdk_ec2::types::InstanceTypeInfo>> {
    let mut found = Vec::new();
    for chunk in instance_types.chunks(100) {
        let types = c
            .ec2
            .describe_instance_types()
            .set_instance_types(Some(
                chunk
                    .iter()
                    .map(|t| InstanceType::from(t.as_str()))
                    .collect(),
            ))
            .send()
            .await
            .op("ec2:DescribeInstanceTypes");
        match types {
            Err(e)
                if e.code()
                    .is_some_and(|c| c.starts_with("InvalidInstanceType")) => {}
            other => found.extend(other?.instance_types().iter().cloned()),
        }
    }
    Ok(found)
}

/// vCPUs and GPUs of each of `instance_types` the region knows.
pub async fn shapes(
    c: &AwsClients,
    instance_types: &[String],
) -> AwsResult<BTreeMap<String, (i64, i64)>> {
    let mut found = BTreeMap::new();
    for t in describe_types(c, instance_types).await? {
        let Some(name) = t.instance_type() else {
            continue;
        };
        let vcpus = t.v_cpu_info().and_then(|v| v.default_v_cpus()).unwrap_or(0);
        let gpus: i32 = t
            .gpu_info()
            .map(|g| g.gpus().iter().filter_map(|d| d.count()).sum())
            .unwrap_or(0);
        found.insert(
            name.as_str().to_string(),
            (i64::from(vcpus), i64::from(gpus)),
        );
    }
    Ok(found)
}

/// The processor architecture of each of `instance_types` the region
/// knows (AWS's name: `arm64`, `x86_64`); a type it does not know is
/// absent.
pub async fn architectures(
    c: &AwsClients,
    instance_types: &[String],
) -> AwsResult<BTreeMap<String, String>> {
    let mut found = BTreeMap::new();
    for t in describe_types(c, instance_types).await? {
        let arch = t
            .processor_info()
            .map(|p| p.supported_architectures())
            .and_then(|a| {
                a.iter()
                    .find(|a| matches!(a, ArchitectureType::Arm64 | ArchitectureType::X8664))
                    .cloned()
            });
        if let (Some(name), Some(arch)) = (t.instance_type(), arch) {
            found.insert(name.as_str().to_string(), arch.as_str().to_string());
        }
    }
    Ok(found)
}

/// The newest Amazon Linux 2023 image for `arch`, if the region has one.
pub async fn newest_image(c: &AwsClients, arch: &str) -> AwsResult<Option<String>> {
    let out = c
        .ec2
        .describe_images()
        .owners("amazon")
        .filters(
            Filter::builder()
                .name("name")
                .values(format!("al2023-ami-2023.*-{arch}"))
                .build(),
        )
        .filters(Filter::builder().name("state").values("available").build())
        .send()
        .await
        .op("ec2:DescribeImages")?;
    Ok(out
        .images()
        .iter()
        .filter(|i| i.name().is_some_and(|n| !n.contains("minimal")))
        .max_by(|a, b| {
            a.creation_date()
                .cmp(&b.creation_date())
                .then_with(|| a.name().cmp(&b.name()))
        })
        .and_then(|i| i.image_id())
        .map(str::to_string))
}
