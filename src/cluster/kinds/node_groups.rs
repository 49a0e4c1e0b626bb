//! Node groups: EC2 instances of ours, tagged with their group. Scaled to
//! each group's count across its subnets, replaced when their type changes
//! (new ones first) or they stop, terminated when their group goes.
//! Terminated first on deletion.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use futures::future::try_join_all;

use super::iam::Iam;
use super::images;
use super::offerings::{self, Offering};
use super::{busy, Deleted, Looks, Pass, PendingResult};
use super::{got, put, Board, Layout, StepInput, StepResult};
use crate::api::compute_cluster::NodeGroupStatus;
use crate::api::conditions::reason;
use crate::api::{HttpTokens, InstanceStatus, Market};
use crate::api::{NodeGroupSpec, SubnetKind};
use crate::aws::instances::{
    self, ImageFacts, InstanceState, Launch, ObservedInstance, RootDevice,
};
use crate::aws::security_group;
use crate::aws::subnet::ObservedSubnet;
use crate::aws::tags::{items, Scope};
use crate::aws::token::client_token;
use crate::aws::{AwsClients, AwsError, AwsResult, OwnershipTags};
use crate::cluster::catalog::Catalog;
use crate::cluster::catching_up::look_briefly;
use crate::cluster::spec::NodeGroup;
use crate::cluster::status::Progress;
use crate::{Brought, Error, MissingNetwork};

/// What to do with one node group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupPlan {
    /// Instances to launch per subnet.
    pub launch: BTreeMap<String, i32>,
    pub terminate: Vec<String>,
}

/// What the groups launch with beyond their spec, settled before the plan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inputs {
    /// The hash of each group's user data, by group name.
    pub user_data: BTreeMap<String, String>,
    /// A brought instance profile's name (`iam.instanceProfileName`).
    pub instance_profile: Option<String>,
    /// The pinned image of each group that names none, by group name.
    pub images: BTreeMap<String, String>,
    /// Instances whose status checks have been impaired for longer than
    /// their group's `healthCheckGracePeriod`.
    pub unhealthy: BTreeSet<String>,
    /// The instances the last status listed, by group: part of a launch's
    /// client token, so the launch that replaces a vanished instance is not
    /// taken for a retry of the one that made it.
    pub recorded: BTreeMap<String, Vec<String>>,
    /// Now, in seconds since the epoch: an instance AWS takes back by then
    /// is ended, not waited for.
    pub now: i64,
}

/// [`launch_config_of`] the group's first type.
#[cfg(test)]
pub fn launch_config(group: &NodeGroupSpec, inputs: &Inputs) -> String {
    launch_config_of(group, group.first_type(), inputs)
}

/// The hash of what a group's instances of `instance_type` are launched
/// with: the type, named image, metadata options, root volume, extra
/// security groups, the hash of its user data, its SSH key and a brought
/// instance profile. An instance tagged with another hash is outdated and
/// replaced. Each of a group's `instanceTypes` has its own, so reordering
/// the list or adding a type replaces nothing. The default image is not
/// part of it: a pinned image is checked apart (see `is_current`).
pub fn launch_config_of(group: &NodeGroupSpec, instance_type: &str, inputs: &Inputs) -> String {
    let metadata = group.metadata_options.clone().unwrap_or_default();
    let mut parts: Vec<String> = vec![
        instance_type.to_string(),
        group.image_id.clone().unwrap_or_default(),
        format!(
            "{:?}/{}",
            metadata.http_tokens, metadata.http_put_response_hop_limit
        ),
    ];
    if let Some(v) = &group.root_volume {
        parts.push(format!(
            "{:?}/{}/{:?}/{:?}/{}/{}",
            v.size_gib,
            v.volume_type.as_str(),
            v.iops,
            v.throughput,
            v.encrypted,
            v.kms_key_id.as_deref().unwrap_or_default()
        ));
    }
    let mut groups = group.additional_security_group_ids.clone();
    groups.sort();
    parts.push(groups.join(","));
    if let Some(hash) = inputs.user_data.get(&group.name) {
        parts.push(format!("user-data/{hash}"));
    }
    if let Some(name) = &group.ssh_key_name {
        parts.push(format!("key-name/{name}"));
    }
    if let Some(key) = &group.ssh_public_key {
        parts.push(format!("public-key/{key}"));
    }
    // Only when brought: the hashes of instances on the operator's own
    // profile stay as they were.
    if let Some(name) = &inputs.instance_profile {
        parts.push(format!("instance-profile/{name}"));
    }
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    client_token("lc", &parts)
}

/// Whether `instance` is of one of the group's types and runs its launch
/// configuration for that type (one launched before instances were tagged
/// with it counts by its type) and, for a group that names no image, its
/// pinned `image`.
fn is_current(
    instance: &ObservedInstance,
    group: &NodeGroupSpec,
    inputs: &Inputs,
    image: Option<&str>,
) -> bool {
    group.types().contains(&instance.instance_type.as_str())
        && instance
            .launch_config
            .as_deref()
            .is_none_or(|c| c == launch_config_of(group, &instance.instance_type, inputs))
        && image.is_none_or(|image| instance.image_id.as_deref().is_none_or(|i| i == image))
}

/// Scales a group to `count`, replaces stopped instances, terminates the
/// newest first when scaling down, and rolls instances of another launch
/// configuration within the group's rollout bounds (see [`roll`]). An
/// instance AWS takes back (marked interrupted) is rolled the same way, a
/// replacement first, and ended at its deadline whatever the bounds.
/// `subnets` are the candidate subnets; launches go where the group has
/// fewest instances.
pub fn plan_group(
    group: &NodeGroupSpec,
    inputs: &Inputs,
    image: Option<&str>,
    instances: &[ObservedInstance],
    subnets: &[String],
) -> GroupPlan {
    let mut plan = GroupPlan::default();
    let want = usize::try_from(group.count).unwrap_or(0);
    let mut live: Vec<&ObservedInstance> = Vec::new();
    for i in instances.iter().filter(|i| i.group == group.name) {
        match i.state {
            InstanceState::Pending | InstanceState::Running => live.push(i),
            InstanceState::Stopping | InstanceState::Stopped => plan.terminate.push(i.id.clone()),
            InstanceState::ShuttingDown | InstanceState::Terminated => {}
        }
    }
    plan.terminate
        .extend(unhealthy_to_replace(group, inputs, &mut live));
    // Past its deadline AWS takes it anyway: ended now.
    let due = |i: &ObservedInstance| i.interrupted.is_some_and(|d| d > 0 && d <= inputs.now);
    plan.terminate
        .extend(live.iter().filter(|i| due(i)).map(|i| i.id.clone()));
    live.retain(|i| !due(i));
    let (mut current, mut outdated): (Vec<&ObservedInstance>, Vec<&ObservedInstance>) = live
        .into_iter()
        .partition(|i| i.interrupted.is_none() && is_current(i, group, inputs, image));
    // Newest first.
    current.sort_by(|a, b| b.launched.cmp(&a.launched).then_with(|| b.id.cmp(&a.id)));
    if current.len() > want {
        let excess = current.len() - want;
        plan.terminate
            .extend(current.drain(..excess).map(|i| i.id.clone()));
    }
    let mut missing = want.saturating_sub(current.len());
    if !outdated.is_empty() {
        let rollout = group.rollout.clone().unwrap_or_default();
        let bounds = Bounds {
            want,
            surge: usize::try_from(rollout.max_surge).unwrap_or(0),
            unavailable: usize::try_from(rollout.max_unavailable).unwrap_or(0),
        };
        // Those not yet running first, then the oldest.
        outdated.sort_by(|a, b| {
            let running = |i: &ObservedInstance| i.state == InstanceState::Running;
            running(a)
                .cmp(&running(b))
                .then(a.launched.cmp(&b.launched))
                .then(a.id.cmp(&b.id))
        });
        let (launch, terminate) = roll(&bounds, &current, &outdated);
        missing = launch;
        plan.terminate.extend(terminate);
    }
    plan.launch = spread(missing, &current, subnets);
    plan
}

/// The group's unhealthy instances to replace now, taken out of `live`:
/// the oldest first, at most `maxUnavailable` (or 1) at a time, none while
/// a replacement is still pending.
fn unhealthy_to_replace(
    group: &NodeGroupSpec,
    inputs: &Inputs,
    live: &mut Vec<&ObservedInstance>,
) -> Vec<String> {
    let pending = live
        .iter()
        .filter(|i| i.state == InstanceState::Pending)
        .count();
    let at_once = group
        .rollout
        .as_ref()
        .map_or(0, |r| usize::try_from(r.max_unavailable).unwrap_or(0))
        .max(1);
    let mut unhealthy: Vec<&ObservedInstance> = live
        .iter()
        .filter(|i| i.state == InstanceState::Running && inputs.unhealthy.contains(&i.id))
        .copied()
        .collect();
    unhealthy.sort_by(|a, b| a.launched.cmp(&b.launched).then(a.id.cmp(&b.id)));
    unhealthy.truncate(at_once.saturating_sub(pending));
    let out: Vec<String> = unhealthy.iter().map(|i| i.id.clone()).collect();
    live.retain(|i| !out.contains(&i.id));
    out
}

/// A group's size and rollout bounds.
pub struct Bounds {
    pub want: usize,
    pub surge: usize,
    pub unavailable: usize,
}

/// One step of a rolling replacement: how many to launch and which
/// outdated instances (not running first, then oldest) to terminate, so
/// that live instances never exceed `want + surge` and running ones never
/// drop below `want - unavailable` (once they were there).
pub fn roll(
    b: &Bounds,
    current: &[&ObservedInstance],
    outdated: &[&ObservedInstance],
) -> (usize, Vec<String>) {
    let running = |v: &[&ObservedInstance]| {
        v.iter()
            .filter(|i| i.state == InstanceState::Running)
            .count()
    };
    let mut spare =
        (running(current) + running(outdated)).saturating_sub(b.want.saturating_sub(b.unavailable));
    let mut terminate = Vec::new();
    for i in outdated {
        if i.state == InstanceState::Running {
            if spare == 0 {
                continue;
            }
            spare -= 1;
        }
        terminate.push(i.id.clone());
    }
    let live = current.len() + outdated.len() - terminate.len();
    let launch = b
        .want
        .saturating_sub(current.len())
        .min((b.want + b.surge).saturating_sub(live));
    (launch, terminate)
}

/// `missing` launches over `subnets`, each to the least loaded one (ties to
/// the earlier in the list).
fn spread(
    missing: usize,
    current: &[&ObservedInstance],
    subnets: &[String],
) -> BTreeMap<String, i32> {
    let mut out = BTreeMap::new();
    let mut load: HashMap<&str, usize> = subnets.iter().map(|s| (s.as_str(), 0)).collect();
    for i in current {
        if let Some(n) = load.get_mut(i.subnet_id.as_str()) {
            *n += 1;
        }
    }
    for _ in 0..missing {
        let Some(target) = subnets
            .iter()
            .min_by_key(|s| load.get(s.as_str()).copied().unwrap_or(0))
        else {
            break;
        };
        if let Some(n) = load.get_mut(target.as_str()) {
            *n += 1;
        }
        *out.entry(target.clone()).or_default() += 1;
    }
    out
}

/// Instances of groups that are no longer in the spec.
pub fn orphans(groups: &[NodeGroup], instances: &[ObservedInstance]) -> Vec<String> {
    instances
        .iter()
        .filter(|i| !i.state.is_ending())
        .filter(|i| !groups.iter().any(|g| g.name == i.group))
        .map(|i| i.id.clone())
        .collect()
}

/// The subnet kind a group asks for.
pub fn wants_public(group: &NodeGroupSpec) -> bool {
    group.subnets == SubnetKind::Public
}

/// Subnets of the kind the group asks for; all of them when there is none
/// of that kind (an existing VPC with public subnets only, say).
pub fn candidates(group: &NodeGroupSpec, subnets: &[ObservedSubnet]) -> Vec<String> {
    let public = wants_public(group);
    let fitting: Vec<String> = subnets
        .iter()
        .filter(|s| s.public == public)
        .map(|s| s.id.clone())
        .collect();
    if fitting.is_empty() {
        subnets.iter().map(|s| s.id.clone()).collect()
    } else {
        fitting
    }
}

/// One launch: `count` instances of `group` into `subnet`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchPlan {
    pub group: String,
    pub subnet: String,
    pub count: i32,
    /// The group's instances now and as last recorded (part of the
    /// launch's client token).
    pub existing: Vec<String>,
}

/// The whole decision for the node groups, and their status before it runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeActions {
    pub terminate: Vec<String>,
    pub launch: Vec<LaunchPlan>,
    pub statuses: Vec<NodeGroupStatus>,
}

pub fn plan(
    groups: &[NodeGroup],
    inputs: &Inputs,
    instances: &[ObservedInstance],
    subnets: &[ObservedSubnet],
) -> NodeActions {
    let mut actions = NodeActions {
        terminate: orphans(groups, instances),
        ..Default::default()
    };
    for group in groups {
        let image = match &group.image_id {
            Some(_) => None,
            None => inputs.images.get(&group.name).map(String::as_str),
        };
        let plan = plan_group(group, inputs, image, instances, &candidates(group, subnets));
        let mine: Vec<&ObservedInstance> =
            instances.iter().filter(|i| i.group == group.name).collect();
        let staying: Vec<&&ObservedInstance> = mine
            .iter()
            .filter(|i| i.state == InstanceState::Running && !plan.terminate.contains(&i.id))
            .collect();
        let updated = staying
            .iter()
            .filter(|i| is_current(i, group, inputs, image))
            .count();
        let existing: Vec<String> = mine.iter().map(|i| i.id.clone()).collect();
        let mut known: BTreeSet<String> = existing.iter().cloned().collect();
        known.extend(
            inputs
                .recorded
                .get(&group.name)
                .into_iter()
                .flatten()
                .cloned(),
        );
        let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
        actions.statuses.push(NodeGroupStatus {
            name: group.name.clone(),
            desired: group.count,
            running: count(staying.len()),
            updated: count(updated),
            instance_ids: existing.clone(),
            image_id: group.image_id.clone().or(image.map(String::from)),
            instance_type: image.map(|_| group.first_type().to_string()),
            instances: mine
                .iter()
                .filter(|i| i.state.is_live() && !plan.terminate.contains(&i.id))
                .map(|i| instance_status(i))
                .collect(),
        });
        actions.terminate.extend(plan.terminate);
        actions
            .launch
            .extend(plan.launch.into_iter().map(|(subnet, count)| LaunchPlan {
                group: group.name.clone(),
                subnet,
                count,
                existing: known.iter().cloned().collect(),
            }));
    }
    actions
}

/// The most instances one pass launches, the rest in the passes after it:
/// a pass (and the worker running it) is never spent on thousands of
/// launches while other clusters wait. Smaller while the quotas are
/// unknown (the role may not read them), so a request AWS would refuse for
/// want of quota is found after a small batch, not a whole fleet.
pub fn launch_cap(quotas_unknown: bool) -> i32 {
    if quotas_unknown {
        10
    } else {
        100
    }
}

/// The launches of `planned` a pass makes under `cap` instances, in the
/// plan's order (the last one cut to fit).
pub fn capped(planned: Vec<LaunchPlan>, cap: i32) -> Vec<LaunchPlan> {
    let mut left = cap.max(0);
    let mut out = Vec::new();
    for mut plan in planned {
        if left == 0 {
            break;
        }
        plan.count = plan.count.min(left);
        left -= plan.count;
        out.push(plan);
    }
    out
}

/// What node groups launch into.
pub struct NodeNetwork<'a> {
    pub vpc_id: &'a str,
    pub subnets: &'a [ObservedSubnet],
    pub security_group: &'a str,
    pub iam: &'a Iam,
    /// Chosen default images by node group (groups that name one are not here).
    pub images: &'a BTreeMap<String, String>,
    /// SSH key pair names by node group.
    pub key_names: &'a BTreeMap<String, String>,
}

/// The image a launch of `group` uses: its own, or the one chosen for it
/// (see [`super::images`]).
fn image_of(group: &NodeGroupSpec, images: &BTreeMap<String, String>) -> Result<String, Error> {
    group
        .image_id
        .as_ref()
        .or_else(|| images.get(&group.name))
        .cloned()
        .ok_or_else(|| Error::Internal(format!("no image chosen for node group {}", group.name)))
}

/// Carries out the plan.
pub async fn ensure<'a>(
    p: Pass<'a>,
    catalog: &'a Catalog,
    network: &'a NodeNetwork<'a>,
) -> Result<NodeOutcome, Error> {
    let inputs = Inputs {
        user_data: p
            .user_data
            .iter()
            .map(|(group, u)| (group.clone(), u.hash.clone()))
            .collect(),
        instance_profile: p.spec.iam.instance_profile_name.clone(),
        images: network.images.clone(),
        unhealthy: unhealthy(p).await?,
        recorded: p.recorded.instances.clone(),
        now: jiff::Timestamp::now().as_second(),
    };
    let NodeActions {
        terminate,
        launch,
        statuses,
    } = plan(
        &p.spec.node_groups,
        &inputs,
        &p.observed.instances,
        network.subnets,
    );
    check_security_groups(p, network.vpc_id).await?;
    instances::terminate(p.c, &terminate).await?;
    let launch = capped(launch, p.launch_cap);
    let jobs = jobs(p, catalog, network, &launch).await?;
    let launcher = Launcher {
        p,
        catalog,
        network,
        inputs: &inputs,
        key: (p.account_id.to_string(), p.spec.region.clone()),
    };
    let launched = try_join_all(jobs.iter().map(|job| launcher.launch(job))).await?;
    let mut shortfalls = Vec::new();
    let mut new: Vec<(String, String)> = Vec::new();
    for (job, result) in jobs.iter().zip(launched) {
        match result {
            Launched::Ids(ids) => {
                new.extend(ids.into_iter().map(|id| (job.group.name.clone(), id)))
            }
            Launched::Refused(tried) => shortfalls.push(Shortfall {
                group: job.group.name.clone(),
                count: job.plan.count,
                tried,
            }),
        }
    }
    let ids: Vec<String> = new.iter().map(|(_, id)| id.clone()).collect();
    let running = running_soon(p, &ids).await?;
    let statuses = with_launches(statuses, &new, &running, &p.spec.node_groups);
    let replaced = terminate
        .iter()
        .filter(|id| inputs.unhealthy.contains(*id))
        .map(|id| format!("replacing instance {id}: its EC2 status checks are impaired past the group's healthCheckGracePeriod"))
        .collect();
    Ok(NodeOutcome {
        statuses,
        shortfalls,
        replaced,
        launching: running.len() < ids.len(),
    })
}

/// Each planned launch with its group, image and the image's root device
/// (when the group sets its root volume).
async fn jobs<'a>(
    p: Pass<'a>,
    catalog: &Catalog,
    network: &NodeNetwork<'_>,
    launch: &'a [LaunchPlan],
) -> Result<Vec<Job<'a>>, Error> {
    let mut jobs = Vec::new();
    for l in launch {
        let group = p
            .spec
            .node_groups
            .iter()
            .find(|g| g.name == l.group)
            .ok_or_else(|| {
                Error::Internal(format!("a launch for unknown node group {}", l.group))
            })?;
        let image = image_of(group, network.images)?;
        // An image the group names is checked for its owner; the facts
        // also give the root device its settings apply to.
        let facts = match (&group.image_id, &group.root_volume) {
            (None, None) => None,
            _ => Some(catalog.image(p.c, &image).await?),
        };
        if let (Some(_), Some(facts)) = (&group.image_id, &facts) {
            if !images::owner_allowed(&facts.owner, p.account_id, &p.spec.image_owners) {
                return Err(Error::ImageOwnerNotAllowed {
                    group: group.name.clone(),
                    image,
                    owner: facts.owner.clone(),
                });
            }
        }
        let device = facts.filter(|_| group.root_volume.is_some());
        jobs.push(Job {
            group,
            image,
            device,
            plan: l,
        });
    }
    Ok(jobs)
}

/// A group's launch that AWS accepted no offering for.
#[derive(Clone, Debug, PartialEq)]
pub struct Shortfall {
    pub group: String,
    pub count: i32,
    /// Each offering tried and AWS's answer.
    pub tried: Vec<String>,
}

impl std::fmt::Display for Shortfall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: no offering accepted for {} instance(s): {}",
            self.group,
            self.count,
            self.tried.join("; ")
        )
    }
}

/// What a node-group pass did.
pub struct NodeOutcome {
    pub statuses: Vec<NodeGroupStatus>,
    /// What could not be launched because AWS accepted none of a group's
    /// offerings.
    pub shortfalls: Vec<Shortfall>,
    /// One line per unhealthy instance replaced (each becomes an Event).
    pub replaced: Vec<String>,
    /// Some instance launched in the pass was not seen running.
    pub launching: bool,
}

/// The running instances whose status checks have been impaired for longer
/// than their group's grace period: one status lookup for all of them.
async fn unhealthy(p: Pass<'_>) -> Result<BTreeSet<String>, Error> {
    let running: Vec<&ObservedInstance> = p
        .observed
        .instances
        .iter()
        .filter(|i| i.state == InstanceState::Running)
        .collect();
    if running.is_empty() {
        return Ok(BTreeSet::new());
    }
    let ids: Vec<String> = running.iter().map(|i| i.id.clone()).collect();
    let impaired = instances::impaired(p.c, &ids).await?;
    let now = jiff::Timestamp::now().as_second();
    Ok(running
        .into_iter()
        .filter_map(|i| {
            let since = impaired.get(&i.id)?;
            let group = p.spec.node_groups.iter().find(|g| g.name == i.group)?;
            let grace = i64::try_from(group.grace_period.as_secs()).ok()?;
            (now - since >= grace).then(|| i.id.clone())
        })
        .collect())
}

/// One planned launch with what it launches from.
struct Job<'a> {
    group: &'a NodeGroupSpec,
    image: String,
    /// The image's root device, when the group sets its root volume.
    device: Option<ImageFacts>,
    plan: &'a LaunchPlan,
}

/// What a launch came to.
enum Launched {
    /// The instances AWS started.
    Ids(Vec<String>),
    /// AWS accepted none of the offerings: each tried and AWS's answer.
    Refused(Vec<String>),
}

/// What every launch of a pass shares.
struct Launcher<'a> {
    p: Pass<'a>,
    catalog: &'a Catalog,
    network: &'a NodeNetwork<'a>,
    inputs: &'a Inputs,
    /// Whose refusals apply: `(AWS account, region)`.
    key: (String, String),
}

impl Launcher<'_> {
    /// Launches `job`, trying the group's offerings in order (the planned
    /// zone first, then the group's other zones) until AWS accepts one.
    async fn launch(&self, job: &Job<'_>) -> Result<Launched, Error> {
        let group = job.group;
        let mut subnets = vec![job.plan.subnet.clone()];
        subnets.extend(
            candidates(group, self.network.subnets)
                .into_iter()
                .filter(|s| *s != job.plan.subnet),
        );
        let mut tried = Vec::new();
        for subnet in &subnets {
            let zone = self
                .network
                .subnets
                .iter()
                .find(|s| &s.id == subnet)
                .map(|s| s.zone.as_str())
                .unwrap_or_default();
            for offering in offerings::offerings(group, &[zone]) {
                let refusals = &self.catalog.refusals;
                let count = job.plan.count;
                if let Some((code, age)) = refusals.refused(&self.key, &offering, count) {
                    let again = refusals.ttl().saturating_sub(age).as_secs();
                    tried.push(format!("{offering}: {code} (tried again in {again}s)"));
                    continue;
                }
                match self.run(job, subnet, &offering).await {
                    Ok(ids) => return Ok(Launched::Ids(ids)),
                    Err(e) if offerings::is_refusal(e.code()) => {
                        let code = e.code().unwrap_or_default();
                        tried.push(format!("{offering}: {code}"));
                        refusals.refuse(&self.key, offering, count, code);
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(Launched::Refused(tried))
    }

    async fn run(
        &self,
        job: &Job<'_>,
        subnet: &str,
        offering: &Offering,
    ) -> Result<Vec<String>, crate::aws::AwsError> {
        let group = job.group;
        let mut groups = vec![self.network.security_group.to_string()];
        groups.extend(group.additional_security_group_ids.iter().cloned());
        let encoded = self.p.user_data.get(&group.name).map(|u| u.encoded());
        let metadata = group.metadata_options.clone().unwrap_or_default();
        let root_device = group
            .root_volume
            .as_ref()
            .zip(job.device.as_ref())
            .map(|(v, root)| RootDevice {
                device_name: &root.device_name,
                // The image's own size unless one is set: EC2 takes a
                // mapping without one, but not every EC2 does.
                size_gib: v.size_gib.or(root.size_gib),
                volume_type: v.volume_type.as_str(),
                iops: v.iops,
                throughput: v.throughput,
                encrypted: v.encrypted,
                kms_key_id: v.kms_key_id.as_deref(),
            });
        let config = launch_config_of(group, &offering.instance_type, self.inputs);
        let launch = Launch {
            group: &group.name,
            instance_type: &offering.instance_type,
            spot: offering.market == Market::Spot,
            image_id: &job.image,
            subnet_id: subnet,
            security_group_ids: &groups,
            instance_profile_arn: &self.network.iam.profile_arn,
            http_tokens_required: metadata.http_tokens == HttpTokens::Required,
            http_put_response_hop_limit: metadata.http_put_response_hop_limit,
            root_device,
            launch_config: &config,
            user_data: encoded.as_deref(),
            key_name: self.network.key_names.get(&group.name).map(String::as_str),
            count: job.plan.count,
            existing: &job.plan.existing,
        };
        instances::run(self.p.c, &self.p.spec.owner, &launch).await
    }
}

/// The groups' extra security groups exist in the cluster's VPC (they are
/// the user's: used, never changed).
async fn check_security_groups(p: Pass<'_>, vpc_id: &str) -> Result<(), Error> {
    let mut wanted: Vec<String> = p
        .spec
        .node_groups
        .iter()
        .flat_map(|g| g.additional_security_group_ids.iter().cloned())
        .collect();
    wanted.sort();
    wanted.dedup();
    if wanted.is_empty() {
        return Ok(());
    }
    let found = security_group::existing_in_vpc(p.c, vpc_id, &wanted).await?;
    if let Some(missing) = wanted
        .iter()
        .find(|g| !found.iter().any(|(id, _)| id == *g))
    {
        return Err(MissingNetwork::SecurityGroup {
            id: missing.to_string(),
            vpc_id: vpc_id.to_string(),
        }
        .into());
    }
    for (id, claim) in &found {
        if let Some(owner) = claim
            .as_ref()
            .and_then(|c| p.spec.owner.claim_of_another(c))
        {
            return Err(Error::NotOursToUse {
                brought: Brought::SecurityGroup(id.clone()),
                owner,
            });
        }
    }
    Ok(())
}

/// Instances run within seconds: look again shortly instead of a whole pass
/// later; the new instances running by then (what is still pending is left
/// to the next pass).
async fn running_soon(p: Pass<'_>, new: &[String]) -> Result<Vec<ObservedInstance>, Error> {
    let running = look_briefly(
        || async {
            let now = items(instances::describe(p.c, Scope::Cluster(&p.spec.owner)).await?);
            let running: Vec<ObservedInstance> = now
                .into_iter()
                .filter(|i| new.contains(&i.id) && i.state == InstanceState::Running)
                .collect();
            let all = running.len() == new.len();
            Ok::<_, Error>((running, all))
        },
        !new.is_empty(),
    )
    .await?;
    Ok(running.unwrap_or_default())
}

/// The planned statuses with what the pass's launches came to: each new
/// instance's ID under its group (`(group, ID)`), and those of them already
/// running (of a type the group still asks for) counted running and updated.
pub fn with_launches(
    mut statuses: Vec<NodeGroupStatus>,
    launched: &[(String, String)],
    running: &[ObservedInstance],
    groups: &[NodeGroup],
) -> Vec<NodeGroupStatus> {
    for (group, id) in launched {
        if let Some(s) = statuses.iter_mut().find(|s| s.name == *group) {
            s.instance_ids.push(id.clone());
        }
    }
    for i in running {
        let wanted = groups
            .iter()
            .any(|g| g.name == i.group && g.types().contains(&i.instance_type.as_str()));
        if let Some(s) = statuses
            .iter_mut()
            .find(|s| s.name == i.group)
            .filter(|_| wanted)
        {
            s.running += 1;
            s.updated += 1;
            s.instances.push(instance_status(i));
        }
    }
    statuses
}

fn instance_status(i: &ObservedInstance) -> InstanceStatus {
    InstanceStatus {
        id: i.id.clone(),
        instance_type: i.instance_type.clone(),
        zone: i.zone.clone(),
        capacity_type: if i.spot {
            Market::Spot
        } else {
            Market::OnDemand
        },
    }
}

/// Terminates every instance and looks again briefly.
pub async fn delete(
    c: &AwsClients,
    owner: &OwnershipTags,
    observed: &[ObservedInstance],
) -> AwsResult<Deleted> {
    let live: Vec<String> = observed
        .iter()
        .filter(|i| !i.state.is_ending())
        .map(|i| i.id.clone())
        .collect();
    instances::terminate(c, &live).await?;
    if observed.is_empty() {
        return Ok(Deleted::All);
    }
    let gone = look_briefly(
        || async {
            let gone = instances::describe(c, Scope::Cluster(owner))
                .await?
                .is_empty();
            Ok::<_, AwsError>((gone, gone))
        },
        true,
    )
    .await?;
    Ok(if gone == Some(true) {
        Deleted::All
    } else {
        Deleted::Ending("instances to terminate")
    })
}

/// Step `NodeGroups`: launches and terminations. Nodes without internet
/// reach AWS through the endpoints alone: none launches before those are
/// available. AWS's want of capacity is an error (retried), the statuses
/// kept.
pub fn step<'a>(i: &'a StepInput<'a>, b: &'a Board) -> StepResult<'a> {
    Box::pin(async move {
        if let Layout::Managed(m) = i.layout {
            if !m.internet && b.endpoints.get().is_some_and(|e| !e.available) {
                return Ok(());
            }
        }
        let network = NodeNetwork {
            vpc_id: got(&b.vpc, "the VPC")?,
            subnets: got(&b.subnets, "the subnets")?,
            security_group: got(&b.sg, "the security group")?,
            iam: got(&b.iam, "the instance profile")?,
            images: got(&b.images, "the images")?,
            key_names: got(&b.keys, "the key pairs")?,
        };
        let done = ensure(i.pass, i.catalog, &network).await?;
        put(&b.nodes, done.statuses)?;
        put(&b.replaced, done.replaced)?;
        put(&b.image_refresh, i.pass.recorded.refresh.clone())?;
        put(&b.launching, done.launching)?;
        if done.shortfalls.is_empty() {
            Ok(())
        } else {
            Err(Error::InsufficientCapacity {
                groups: done.shortfalls,
            })
        }
    })
}

/// This kind's part of a deletion pass (its row's `delete`).
pub fn deletion<'a>(
    c: &'a AwsClients,
    owner: &'a crate::aws::OwnershipTags,
    o: &'a super::Observed,
) -> super::DeleteResult<'a> {
    Box::pin(async move { delete(c, owner, &o.instances).await })
}

/// AWS is still starting the instance: what the shared wait goes by (the
/// pass counts instances launched and not running).
pub fn making(state: InstanceState) -> bool {
    state == InstanceState::Pending
}

/// Row `NodeGroups`'s learning: the groups' statuses, whether AWS is still
/// starting some, the instances replaced, and the image refresh acted on.
pub fn learn(b: &Board, p: &mut Progress) -> bool {
    let Some(nodes) = b.nodes.get() else {
        return false;
    };
    *p.node_groups_mut() = nodes.clone();
    // Seen and not running, or launched and not seen running: a launch
    // AWS does not show yet is AWS's to finish (the shared wait), never
    // the progress poll's.
    let starting = (nodes.iter())
        .any(|g| g.instances.len() > usize::try_from(g.running).unwrap_or(0))
        || b.launching.get() == Some(&true);
    p.aws_creating |= starting;
    let replaced = b.replaced.get().into_iter().flatten();
    p.notes
        .extend(replaced.map(|n| (reason::UNHEALTHY_INSTANCE, n.clone())));
    // Acted on with the pins it gave, written in the same status.
    if let Some(Some(value)) = b.image_refresh.get() {
        p.image_refresh = Some(value.clone());
    }
    !starting
}

/// Row `NodeGroups`'s part of the shared wait.
pub fn pending<'a>(c: &'a AwsClients, scope: Scope<'a>, _: Looks) -> PendingResult<'a> {
    busy(true, instances::describe(c, scope), |i| making(i.state))
}

#[cfg(test)]
mod tests {
    use super::*;
    use InstanceState::*;

    fn group(count: i32, instance_type: &str) -> NodeGroupSpec {
        NodeGroupSpec::workers(count, instance_type)
    }

    fn inst(
        id: &str,
        t: &str,
        state: InstanceState,
        launched: i64,
        subnet: &str,
    ) -> ObservedInstance {
        ObservedInstance {
            launched,
            subnet_id: subnet.into(),
            launch_config: Some(launch_config(&group(1, t), &Inputs::default())),
            ..ObservedInstance::of(id, "workers", t, state)
        }
    }

    fn subnets() -> Vec<String> {
        vec!["subnet-a".into(), "subnet-b".into()]
    }

    /// `(launches per subnet, terminated)` of a plan.
    fn summary(p: &GroupPlan) -> (Vec<(&str, i32)>, Vec<&str>) {
        (
            p.launch.iter().map(|(s, n)| (s.as_str(), *n)).collect(),
            p.terminate.iter().map(String::as_str).collect(),
        )
    }

    #[test]
    fn plan_group_table() {
        let large = "t3.large";
        // (spec, observed, launches per subnet, terminated, why)
        type Row<'a> = (
            NodeGroupSpec,
            Vec<ObservedInstance>,
            Vec<(&'a str, i32)>,
            Vec<&'a str>,
            &'a str,
        );
        let rows: Vec<Row> = vec![
            (
                group(2, large),
                vec![],
                vec![("subnet-a", 1), ("subnet-b", 1)],
                vec![],
                "a new group spreads",
            ),
            (
                group(5, large),
                vec![inst("i-1", large, Running, 1, "subnet-a")],
                vec![("subnet-a", 2), ("subnet-b", 2)],
                vec![],
                "scale up: as even as five can be",
            ),
            (
                group(1, large),
                vec![
                    inst("i-1", large, Running, 1, "subnet-a"),
                    inst("i-2", large, Running, 3, "subnet-b"),
                    inst("i-3", large, Running, 2, "subnet-a"),
                ],
                vec![],
                vec!["i-2", "i-3"],
                "scale down: newest first",
            ),
            (
                group(2, large),
                vec![
                    inst("i-1", large, Stopped, 1, "subnet-a"),
                    inst("i-2", large, Terminated, 1, "subnet-a"),
                    inst("i-3", large, Running, 1, "subnet-b"),
                ],
                vec![("subnet-a", 1)],
                vec!["i-1"],
                "a stopped instance is replaced, a terminated one ignored",
            ),
            (
                group(2, large),
                vec![
                    inst("i-1", large, Pending, 1, "subnet-a"),
                    inst("i-2", large, Running, 1, "subnet-b"),
                ],
                vec![],
                vec![],
                "a crash after the launch: the pending instances count, nothing launched twice",
            ),
            (
                group(2, "m6i.large"),
                vec![
                    inst("i-1", large, Running, 1, "subnet-a"),
                    inst("i-2", large, Running, 1, "subnet-b"),
                ],
                vec![("subnet-a", 1)],
                vec![],
                "a type change: a new one first (surge 1), old ones stay",
            ),
            (
                group(2, "m6i.large"),
                vec![
                    inst("i-1", large, Running, 1, "subnet-a"),
                    inst("i-2", large, Running, 1, "subnet-b"),
                    inst("i-3", "m6i.large", Pending, 5, "subnet-a"),
                    inst("i-4", "m6i.large", Running, 5, "subnet-b"),
                ],
                vec![],
                vec!["i-1"],
                "a type change: an old one goes for each new one running",
            ),
            (
                group(2, "m6i.large"),
                vec![
                    inst("i-1", large, Running, 1, "subnet-a"),
                    inst("i-2", large, Running, 1, "subnet-b"),
                    inst("i-3", "m6i.large", Running, 5, "subnet-a"),
                    inst("i-4", "m6i.large", Running, 5, "subnet-b"),
                ],
                vec![],
                vec!["i-1", "i-2"],
                "a type change: old ones go once the new ones run",
            ),
        ];
        for (spec, observed, launch, terminate, why) in rows {
            let plan = plan_group(&spec, &Inputs::default(), None, &observed, &subnets());
            assert_eq!(summary(&plan), (launch, terminate), "{why}");
        }
    }

    #[test]
    fn launch_config_changes_with_what_instances_are_launched_with() {
        use crate::api::{MetadataOptions, RootVolume, VolumeType};
        let base = group(2, "t3.large");
        let with = |f: &dyn Fn(&mut NodeGroupSpec)| {
            let mut g = base.clone();
            f(&mut g);
            launch_config(&g, &Inputs::default())
        };
        let volume = RootVolume {
            size_gib: Some(100),
            volume_type: VolumeType::Gp3,
            iops: None,
            throughput: None,
            encrypted: true,
            kms_key_id: None,
        };
        // (change, rolls, why)
        let rows: Vec<(String, bool, &str)> = vec![
            (with(&|_| {}), false, "nothing changed"),
            (
                with(&|g| g.count = 5),
                false,
                "scaling is not a launch change",
            ),
            (
                with(&|g| g.metadata_options = Some(MetadataOptions::default())),
                false,
                "the defaults spelled out",
            ),
            (
                with(&|g| g.instance_type = "m6i.large".into()),
                true,
                "type",
            ),
            (
                with(&|g| g.image_id = Some("ami-0123456789abcdef0".into())),
                true,
                "a named image",
            ),
            (
                with(&|g| {
                    g.metadata_options = Some(MetadataOptions {
                        http_put_response_hop_limit: 2,
                        ..Default::default()
                    })
                }),
                true,
                "metadata options",
            ),
            (
                with(&|g| g.root_volume = Some(volume.clone())),
                true,
                "a root volume",
            ),
            (
                with(&|g| g.additional_security_group_ids = vec!["sg-1".into()]),
                true,
                "an extra security group",
            ),
        ];
        let first = launch_config(&base, &Inputs::default());
        let user_data = |hash: &str| Inputs {
            user_data: BTreeMap::from([(base.name.clone(), hash.to_string())]),
            ..Default::default()
        };
        assert_ne!(launch_config(&base, &user_data("ud-1")), first, "user data");
        assert_ne!(
            launch_config(&base, &user_data("ud-1")),
            launch_config(&base, &user_data("ud-2")),
            "its change"
        );
        let profile = |name: &str| Inputs {
            instance_profile: Some(name.into()),
            ..Default::default()
        };
        assert_ne!(
            launch_config(&base, &profile("p1")),
            first,
            "a brought profile"
        );
        assert_ne!(
            launch_config(&base, &profile("p1")),
            launch_config(&base, &profile("p2")),
            "another brought profile"
        );
        assert!(first.starts_with("lc-") && first.len() == 19, "{first}");
        for (config, rolls, why) in rows {
            assert_eq!(config != first, rolls, "{why}");
        }
        let order = |ids: &[&str]| {
            let mut g = base.clone();
            g.additional_security_group_ids = ids.iter().map(|s| s.to_string()).collect();
            launch_config(&g, &Inputs::default())
        };
        assert_eq!(
            order(&["sg-1", "sg-2"]),
            order(&["sg-2", "sg-1"]),
            "the order of groups does not matter"
        );
    }

    #[test]
    fn outdated_launch_configs_are_replaced_new_first() {
        let spec = group(2, "t3.large");
        let mut old = vec![
            inst("i-1", "t3.large", Running, 1, "subnet-a"),
            inst("i-2", "t3.large", Running, 1, "subnet-b"),
        ];
        for i in &mut old {
            i.launch_config = Some("lc-0000000000000000".into());
        }
        let first = plan_group(&spec, &Inputs::default(), None, &old, &subnets());
        assert_eq!(
            summary(&first),
            (vec![("subnet-a", 1)], vec![]),
            "a new one first"
        );
        let mut legacy = old.clone();
        for i in &mut legacy {
            i.launch_config = None;
        }
        let untouched = plan_group(&spec, &Inputs::default(), None, &legacy, &subnets());
        assert_eq!(
            summary(&untouched),
            (vec![], vec![]),
            "instances from before the tag stay"
        );
        let mut both = old.clone();
        both.push(inst("i-3", "t3.large", Running, 5, "subnet-a"));
        both.push(inst("i-4", "t3.large", Running, 5, "subnet-b"));
        let done = plan_group(&spec, &Inputs::default(), None, &both, &subnets());
        assert_eq!(
            summary(&done),
            (vec![], vec!["i-1", "i-2"]),
            "old ones go once the new run"
        );
    }

    #[test]
    fn roll_stays_within_its_bounds() {
        let at = |id: &str, state| inst(id, "t3.large", state, 1, "subnet-a");
        // (surge, unavailable, current, outdated, launched, terminated, why)
        type Row<'a> = (
            usize,
            usize,
            Vec<ObservedInstance>,
            Vec<ObservedInstance>,
            usize,
            Vec<&'a str>,
            &'a str,
        );
        let four_old = || {
            (1..=4)
                .map(|n| at(&format!("o-{n}"), Running))
                .collect::<Vec<_>>()
        };
        let rows: Vec<Row> = vec![
            (
                1,
                0,
                vec![],
                four_old(),
                1,
                vec![],
                "surge 1: one new first, none gone",
            ),
            (
                1,
                0,
                vec![at("n-1", Pending)],
                four_old(),
                0,
                vec![],
                "surge 1: wait while the new one starts",
            ),
            (
                1,
                0,
                vec![at("n-1", Running)],
                four_old(),
                1,
                vec!["o-1"],
                "surge 1: it runs, one old goes, the next comes",
            ),
            (
                0,
                1,
                vec![],
                four_old(),
                1,
                vec!["o-1"],
                "unavailable 1: one old goes, its successor comes",
            ),
            (
                0,
                1,
                vec![at("n-1", Pending)],
                four_old()[1..].to_vec(),
                0,
                vec![],
                "unavailable 1: wait while it starts",
            ),
            (2, 0, vec![], four_old(), 2, vec![], "surge 2: two at once"),
            (
                1,
                0,
                vec![
                    at("n-1", Running),
                    at("n-2", Running),
                    at("n-3", Running),
                    at("n-4", Running),
                ],
                vec![at("o-4", Running)],
                0,
                vec!["o-4"],
                "the last old one goes",
            ),
            (
                1,
                0,
                vec![],
                vec![at("o-1", Pending), at("o-2", Running)],
                4,
                vec!["o-1"],
                "short of the count: an old one not running yet goes at once, the rest come",
            ),
        ];
        for (surge, unavailable, current, outdated, launch, terminate, why) in rows {
            let b = Bounds {
                want: 4,
                surge,
                unavailable,
            };
            let (c, o): (Vec<&ObservedInstance>, Vec<&ObservedInstance>) =
                (current.iter().collect(), outdated.iter().collect());
            let (got_launch, got_terminate) = roll(&b, &c, &o);
            assert_eq!(
                (
                    got_launch,
                    got_terminate.iter().map(String::as_str).collect::<Vec<_>>()
                ),
                (launch, terminate),
                "{why}"
            );
            let live = c.len() + o.len() - got_terminate.len() + got_launch;
            assert!(live <= 4 + surge, "{why}: {live} live");
        }
    }

    #[test]
    fn a_new_pinned_image_rolls_the_group_and_is_reported() {
        let on = |id: &str, image: &str| {
            let mut i = inst(id, "t3.large", Running, 1, "subnet-a");
            i.image_id = Some(image.into());
            i
        };
        let spec = group(2, "t3.large");
        let old = vec![on("i-1", "ami-old"), on("i-2", "ami-old")];
        let kept = plan_group(&spec, &Inputs::default(), Some("ami-old"), &old, &subnets());
        assert_eq!(summary(&kept), (vec![], vec![]), "pinned: nothing moves");
        let rolled = plan_group(&spec, &Inputs::default(), Some("ami-new"), &old, &subnets());
        assert_eq!(
            summary(&rolled),
            (vec![("subnet-a", 1)], vec![]),
            "a new pin: one new instance first"
        );
        let mut named = spec.clone();
        named.image_id = Some("ami-named".into());
        let inputs = Inputs {
            images: BTreeMap::from([("workers".into(), "ami-new".into())]),
            ..Default::default()
        };
        let status = |g: &NodeGroupSpec| {
            let actions = plan(&[NodeGroup::of(g.clone())], &inputs, &old, &[]);
            actions
                .statuses
                .first()
                .map(|s| (s.updated, s.image_id.clone(), s.instance_type.clone()))
        };
        assert_eq!(
            status(&spec),
            Some((0, Some("ami-new".into()), Some("t3.large".into()))),
            "the pin and its type are reported; instances on the old image are not updated"
        );
        assert_eq!(
            status(&named).map(|s| (s.1, s.2)),
            Some((Some("ami-named".into()), None)),
            "a named image is reported, no pin"
        );
    }

    #[test]
    fn unhealthy_instances_are_replaced_a_few_at_a_time() {
        let running = |id: &str, launched| inst(id, "t3.large", Running, launched, "subnet-a");
        let sick = |ids: &[&str]| Inputs {
            unhealthy: ids.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let three = vec![running("i-1", 1), running("i-2", 2), running("i-3", 3)];
        let spec = group(3, "t3.large");
        let one = plan_group(&spec, &sick(&["i-3", "i-2"]), None, &three, &subnets());
        assert_eq!(
            summary(&one),
            (vec![("subnet-b", 1)], vec!["i-2"]),
            "the oldest unhealthy one, replaced"
        );
        let mut wider = spec.clone();
        wider.rollout = Some(crate::api::Rollout {
            max_surge: 1,
            max_unavailable: 2,
        });
        let two = plan_group(&wider, &sick(&["i-3", "i-2"]), None, &three, &subnets());
        assert_eq!(
            summary(&two).1,
            vec!["i-2", "i-3"],
            "maxUnavailable 2 at once"
        );
        let mut in_flight = three.clone();
        in_flight[0] = inst("i-1", "t3.large", Pending, 4, "subnet-b");
        let wait = plan_group(&spec, &sick(&["i-3"]), None, &in_flight, &subnets());
        assert_eq!(
            summary(&wait),
            (vec![], vec![]),
            "none while a replacement is pending"
        );
    }

    #[test]
    fn an_interrupted_instance_is_replaced_first_and_ended_at_its_deadline() {
        let running = |id: &str, launched| inst(id, "t3.large", Running, launched, "subnet-a");
        let marked = |id: &str, deadline| {
            let mut i = running(id, 1);
            i.interrupted = Some(deadline);
            i
        };
        let at = |now| Inputs {
            now,
            ..Default::default()
        };
        let spec = group(2, "t3.large");
        type Row<'a> = (
            Vec<ObservedInstance>,
            i64,
            (Vec<(&'a str, i32)>, Vec<&'a str>),
            &'a str,
        );
        let rows: Vec<Row> = vec![
            (
                vec![marked("i-1", 1000), running("i-2", 2)],
                900,
                (vec![("subnet-b", 1)], vec![]),
                "a replacement first (surge 1), the marked one kept until then",
            ),
            (
                vec![
                    marked("i-1", 1000),
                    running("i-2", 2),
                    inst("i-3", "t3.large", Pending, 3, "subnet-b"),
                ],
                900,
                (vec![], vec![]),
                "the replacement pending: nothing more (surge bound)",
            ),
            (
                vec![marked("i-1", 1000), running("i-2", 2), running("i-3", 3)],
                900,
                (vec![], vec!["i-1"]),
                "the replacement running: the marked one ended",
            ),
            (
                vec![marked("i-1", 1000), running("i-2", 2)],
                1000,
                (vec![("subnet-b", 1)], vec!["i-1"]),
                "its deadline reached: ended now, whatever the bounds",
            ),
            (
                vec![marked("i-1", 0), running("i-2", 2)],
                i64::MAX,
                (vec![("subnet-b", 1)], vec![]),
                "no deadline given (rebalance): replaced first, never ended by time",
            ),
        ];
        for (instances, now, want, why) in rows {
            let plan = plan_group(&spec, &at(now), None, &instances, &subnets());
            assert_eq!(summary(&plan), want, "{why}");
        }
    }

    #[test]
    fn plan_terminates_orphans_and_reports_the_groups() {
        let mut orphan = inst("i-9", "t3.large", Running, 1, "subnet-a");
        orphan.group = "gone".into();
        let mut ending = inst("i-8", "t3.large", ShuttingDown, 1, "subnet-a");
        ending.group = "gone".into();
        let observed = vec![
            inst("i-1", "t3.large", Running, 1, "subnet-a"),
            orphan,
            ending,
        ];
        let subnet = |id: &str, public| ObservedSubnet {
            id: id.into(),
            vpc_id: "vpc-1".into(),
            zone: "a".into(),
            cidr: String::new(),
            public,
            map_public_ip: public,
        };
        let subnets = vec![
            subnet("subnet-pub", true),
            subnet("subnet-a", false),
            subnet("subnet-b", false),
        ];
        let actions = plan(
            &[NodeGroup::of(group(2, "t3.large"))],
            &Inputs::default(),
            &observed,
            &subnets,
        );
        assert_eq!(
            actions.terminate,
            vec!["i-9"],
            "the removed group's live instance"
        );
        assert_eq!(
            actions.launch,
            vec![LaunchPlan {
                group: "workers".into(),
                subnet: "subnet-b".into(),
                count: 1,
                existing: vec!["i-1".into()],
            }],
            "one more, into the private subnet with fewest"
        );
        assert_eq!(
            actions.statuses,
            vec![NodeGroupStatus {
                name: "workers".into(),
                desired: 2,
                running: 1,
                updated: 1,
                instance_ids: vec!["i-1".into()],
                instances: vec![InstanceStatus {
                    id: "i-1".into(),
                    instance_type: "t3.large".into(),
                    zone: String::new(),
                    capacity_type: Market::OnDemand,
                }],
                ..Default::default()
            }]
        );
    }

    #[test]
    fn replacing_a_vanished_instance_is_not_a_retry_of_its_launch() {
        let subnets = vec![ObservedSubnet {
            id: "subnet-a".into(),
            vpc_id: "vpc-1".into(),
            zone: "a".into(),
            cidr: String::new(),
            public: false,
            map_public_ip: false,
        }];
        let recorded = |ids: &[&str]| Inputs {
            recorded: BTreeMap::from([(
                "workers".to_string(),
                ids.iter().map(|s| s.to_string()).collect(),
            )]),
            ..Default::default()
        };
        let existing = |inputs: &Inputs, observed: &[ObservedInstance]| {
            let actions = plan(
                &[NodeGroup::of(group(2, "t3.large"))],
                inputs,
                observed,
                &subnets,
            );
            actions.launch.first().map(|l| l.existing.clone())
        };
        let live = vec![inst("i-1", "t3.large", Running, 1, "subnet-a")];
        // (inputs, observed, the launch's instances in its token)
        let rows = [
            // The first launch: nothing before it.
            (recorded(&[]), vec![], Some(vec![])),
            // A crash before the status was written: the same token.
            (Inputs::default(), vec![], Some(vec![])),
            // Both instances vanished after they were recorded.
            (
                recorded(&["i-1", "i-2"]),
                vec![],
                Some(vec!["i-1".into(), "i-2".into()]),
            ),
            // One left, one vanished.
            (
                recorded(&["i-1", "i-2"]),
                live,
                Some(vec!["i-1".into(), "i-2".into()]),
            ),
        ];
        for (i, (inputs, observed, want)) in rows.iter().enumerate() {
            assert_eq!(&existing(inputs, observed), want, "row {i}");
        }
    }

    #[test]
    fn candidates_fall_back_to_every_subnet() {
        let subnet = |id: &str, public| ObservedSubnet {
            id: id.into(),
            vpc_id: "vpc-1".into(),
            zone: "a".into(),
            cidr: String::new(),
            public,
            map_public_ip: public,
        };
        let public_only = vec![subnet("subnet-pub", true)];
        assert_eq!(
            candidates(&group(1, "t3.large"), &public_only),
            vec!["subnet-pub"]
        );
    }

    #[test]
    fn a_pass_launches_at_most_its_cap() {
        let plan = |group: &str, count| LaunchPlan {
            group: group.into(),
            subnet: "subnet-a".into(),
            count,
            existing: vec![],
        };
        let counts = |plans: Vec<LaunchPlan>| -> Vec<(String, i32)> {
            plans.into_iter().map(|p| (p.group, p.count)).collect()
        };
        let planned = vec![plan("a", 60), plan("b", 60), plan("c", 5)];
        assert_eq!(
            counts(capped(planned.clone(), 100)),
            vec![("a".into(), 60), ("b".into(), 40)],
            "the last launch cut to fit, the rest left for the next pass"
        );
        assert_eq!(
            counts(capped(planned.clone(), 500)).len(),
            3,
            "under the cap: all"
        );
        assert_eq!(
            counts(capped(planned, launch_cap(true))),
            vec![("a".into(), 10)],
            "quotas unknown: a small batch"
        );
        assert!(launch_cap(true) < launch_cap(false));
    }

    #[test]
    fn launches_complete_the_planned_statuses() {
        let planned = |running| NodeGroupStatus {
            name: "workers".into(),
            desired: 3,
            running,
            updated: running,
            ..Default::default()
        };
        let groups = [NodeGroup::of(group(3, "t3.large"))];
        let launched = vec![
            ("workers".to_string(), "i-new1".to_string()),
            ("workers".to_string(), "i-new2".to_string()),
            ("gone".to_string(), "i-other".to_string()),
        ];
        let up = |id: &str, t: &str| inst(id, t, Running, 1, "subnet-a");
        // (running by now, running and updated, IDs recorded, why)
        let rows = [
            (vec![], 1, 2, "launched, none running yet"),
            (vec![up("i-new1", "t3.large")], 2, 2, "one running already"),
            (
                vec![up("i-new1", "t3.large"), up("i-new2", "m5.large")],
                2,
                2,
                "a type the group no longer asks for is not counted",
            ),
        ];
        for (running, counted, ids, why) in rows {
            let got = with_launches(vec![planned(1)], &launched, &running, &groups);
            assert_eq!(
                got.len(),
                1,
                "{why}: a launch of no planned group adds none"
            );
            assert_eq!(
                (got[0].running, got[0].updated),
                (counted, counted),
                "{why}"
            );
            assert_eq!(got[0].instance_ids.len(), ids, "{why}");
            assert_eq!(
                got[0].instances.len(),
                usize::try_from(counted - 1).unwrap_or(0),
                "{why}"
            );
        }
    }
}
