//! The listeners: one per AWS account and region some cluster of this
//! installation runs in, run by the leader only (inside the cluster
//! controller) and fenced like every write. Each makes the queue and its
//! rules (and puts them back where changed), long-polls the queue, and acts
//! on what a message says:
//! - an instance AWS takes back (spot, Capacity Reservation, maintenance):
//!   marked `byoc.dev/interrupted=<deadline>` on the instance itself before
//!   the message is deleted (the mark outlives a leader change), and its
//!   cluster reconciled now: the node groups' plan launches the
//!   replacement under the surge bound and ends the instance at its
//!   deadline;
//! - an instance stopped or ended: its cluster reconciled now;
//! - a rebalance recommendation: as the instance's group says
//!   (`interruption.rebalance`): nothing (`ignore`), or marked with no
//!   deadline and replaced (`replace`);
//! - an instance of no cluster of this installation (checked against AWS's
//!   tags, so a launch no status lists yet is found), a message that asks
//!   nothing, or a malformed one: counted and deleted.
//!
//! The clusters tell the listeners which account and region they use on
//! each pass ([`Listeners::want`]) and let go when deleted
//! ([`Listeners::release`]); a queue no cluster uses is deleted with its
//! rules.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use futures::channel::mpsc::UnboundedSender;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use tokio::task::{AbortHandle, JoinSet};

use super::message::{read, Notice, Read, Reclaim, MATCHED};
use super::queue::{self, QueueStep, RuleStep};
use crate::api::{ComputeCluster, Market, Rebalance};
use crate::aws::instances::{InstanceState, ObservedInstance};
use crate::aws::interruption_queue::{self as aws_queue, ObservedQueue, ObservedRule, QueueSpec};
use crate::aws::{instances, AwsClients, AwsResult};
use crate::context::Context;

/// How often a listener makes sure its queue and rules are as they should
/// be (and how soon it tries again after a failure).
pub const ENSURE_EVERY: Duration = Duration::from_secs(300);
/// How long one receive waits for a message: SQS's longest, within the
/// attempt timeout of every AWS call.
const LONG_POLL: Duration = Duration::from_secs(10);
/// How long a listener waits after its first failure in a row; each next
/// one doubles it, up to [`ENSURE_EVERY`] (a role without the queue's
/// permissions is not asked every few seconds).
const AFTER_FAILURE: Duration = Duration::from_secs(5);

/// The wait after `failures` failures in a row.
fn after_failures(failures: u32) -> Duration {
    AFTER_FAILURE
        .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1)))
        .min(ENSURE_EVERY)
}

/// One AWS account and region.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Place {
    pub account_id: String,
    pub region: String,
}

struct Entry {
    /// The latest identity a cluster's pass resolved for the place.
    config: SdkConfig,
    /// The clusters (UIDs) that use it.
    users: BTreeSet<String>,
    task: Option<AbortHandle>,
}

/// Who uses which account and region, and the listener of each.
#[derive(Default)]
pub struct Listeners {
    places: Mutex<BTreeMap<Place, Entry>>,
    changed: tokio::sync::Notify,
    /// Instances AWS said it takes back, with their cluster's UID and when
    /// the notice came: until replaced.
    noticed: Mutex<HashMap<String, (String, Instant)>>,
}

impl Listeners {
    fn places(&self) -> std::sync::MutexGuard<'_, BTreeMap<Place, Entry>> {
        self.places.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Cluster `uid` uses `place` as `config` (the identity its pass
    /// resolved, kept for the listener's calls).
    pub fn want(&self, uid: &str, place: Place, config: &SdkConfig) {
        let mut places = self.places();
        let entry = places.entry(place).or_insert_with(|| Entry {
            config: config.clone(),
            users: BTreeSet::new(),
            task: None,
        });
        entry.config = config.clone();
        if entry.users.insert(uid.to_string()) && entry.task.is_none() {
            self.changed.notify_one();
        }
    }

    /// Cluster `uid` is gone.
    pub fn release(&self, uid: &str) {
        let mut places = self.places();
        let mut emptied = false;
        for entry in places.values_mut() {
            emptied |= entry.users.remove(uid) && entry.users.is_empty();
        }
        if emptied {
            self.changed.notify_one();
        }
    }

    fn noticed(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Instant)>> {
        self.noticed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What a pass of cluster `uid` saw of its instances: each noticed
    /// instance of it that has ended while its group had `count` others
    /// running was replaced; how long after its notice each was.
    pub fn replaced(
        &self,
        uid: &str,
        seen: &[ObservedInstance],
        counts: &[(String, i32)],
    ) -> Vec<Duration> {
        let mut noticed = self.noticed();
        let done: Vec<String> = noticed
            .iter()
            .filter(|(_, (owner, _))| owner == uid)
            .filter(|(id, _)| {
                let Some(i) = seen.iter().find(|i| &i.id == *id) else {
                    return true;
                };
                let running = seen
                    .iter()
                    .filter(|o| o.group == i.group && o.id != i.id)
                    .filter(|o| o.state == InstanceState::Running && o.interrupted.is_none())
                    .count();
                let want = counts
                    .iter()
                    .find(|(g, _)| *g == i.group)
                    .map_or(0, |(_, n)| *n);
                i.state.is_ending() && i32::try_from(running).unwrap_or(i32::MAX) >= want
            })
            .map(|(id, _)| id.clone())
            .collect();
        done.iter()
            .filter_map(|id| noticed.remove(id))
            .map(|(_, at)| at.elapsed())
            .collect()
    }

    fn config(&self, place: &Place) -> Option<SdkConfig> {
        self.places().get(place).map(|e| e.config.clone())
    }
}

/// What every listener shares.
struct Shared {
    ctx: Arc<Context>,
    listeners: Arc<Listeners>,
    clusters: Store<ComputeCluster>,
    heard: UnboundedSender<ObjectRef<ComputeCluster>>,
    /// Told of each spot offering AWS takes back.
    interrupted: OfferingInterrupted,
}

/// Told of a spot offering (instance type, zone) AWS takes back in a place:
/// launches skip it a while, so the replacement takes the group's next
/// type, zone or on demand.
pub type OfferingInterrupted = Arc<dyn Fn(&Place, &str, &str) + Send + Sync>;

/// Starts a listener for each place in use and, for each no longer used,
/// stops it and deletes its queue and rules; until the process stops.
pub async fn supervise(
    ctx: Arc<Context>,
    listeners: Arc<Listeners>,
    clusters: Store<ComputeCluster>,
    heard: UnboundedSender<ObjectRef<ComputeCluster>>,
    interrupted: OfferingInterrupted,
) {
    let shared = Arc::new(Shared {
        ctx,
        listeners: listeners.clone(),
        clusters,
        heard,
        interrupted,
    });
    // Dropped with this future: every listener stops with the controller.
    let mut tasks = JoinSet::new();
    loop {
        while tasks.try_join_next().is_some() {}
        let (start, stop) = {
            let mut places = listeners.places();
            let start: Vec<Place> = places
                .iter()
                .filter(|(_, e)| !e.users.is_empty() && e.task.is_none())
                .map(|(p, _)| p.clone())
                .collect();
            let stop: Vec<(Place, Entry)> = {
                let unused: Vec<Place> = places
                    .iter()
                    .filter(|(_, e)| e.users.is_empty())
                    .map(|(p, _)| p.clone())
                    .collect();
                unused
                    .into_iter()
                    .filter_map(|p| places.remove(&p).map(|e| (p, e)))
                    .collect()
            };
            for place in &start {
                if let Some(e) = places.get_mut(place) {
                    e.task = Some(tasks.spawn(listen(shared.clone(), place.clone())));
                }
            }
            (start, stop)
        };
        for place in &start {
            tracing::info!(account = %place.account_id, region = %place.region, "interruption listener started");
        }
        for (place, entry) in stop {
            if let Some(task) = entry.task {
                task.abort();
            }
            let c = clients(&shared.ctx, &place, &entry.config);
            match remove(&c, shared.ctx.installation.id()).await {
                Ok(()) => {
                    tracing::info!(account = %place.account_id, region = %place.region, "no cluster uses the account and region: interruption queue and rules deleted")
                }
                Err(e) => {
                    tracing::warn!(account = %place.account_id, region = %place.region, error = %e, "deleting the interruption queue and rules failed; audit lists them")
                }
            }
        }
        listeners.changed.notified().await;
    }
}

fn clients(ctx: &Context, place: &Place, config: &SdkConfig) -> AwsClients {
    AwsClients::new(
        config,
        &place.region,
        ctx.metrics.aws_interceptor_for(&place.account_id),
    )
}

/// One place's listener, until aborted.
async fn listen(shared: Arc<Shared>, place: Place) {
    let installation = shared.ctx.installation.id().to_string();
    let mut ensured: Option<(Instant, String)> = None;
    let mut failures = 0;
    loop {
        let Some(config) = shared.listeners.config(&place) else {
            return;
        };
        let c = clients(&shared.ctx, &place, &config);
        let url = match &ensured {
            Some((at, url)) if at.elapsed() < ENSURE_EVERY => url.clone(),
            _ => match ensure(&c, &installation, &place).await {
                Ok(url) => {
                    ensured = Some((Instant::now(), url.clone()));
                    url
                }
                Err(e) => {
                    failures += 1;
                    let wait = after_failures(failures);
                    tracing::warn!(account = %place.account_id, region = %place.region, error = %e, ?wait, "making the interruption queue failed; trying again");
                    tokio::time::sleep(wait).await;
                    continue;
                }
            },
        };
        match aws_queue::receive(&c, &url, LONG_POLL).await {
            Ok(messages) => {
                failures = 0;
                for m in messages {
                    if let Err(e) = act(&shared, &c, &place, &m.body).await {
                        // Left in the queue: seen again once its
                        // visibility timeout passes.
                        tracing::warn!(error = %e, "acting on an interruption message failed; it is read again later");
                        continue;
                    }
                    if let Err(e) = aws_queue::delete_message(&c, &url, &m.receipt).await {
                        tracing::warn!(error = %e, "deleting an interruption message failed");
                    }
                }
            }
            Err(e) => {
                failures += 1;
                let wait = after_failures(failures);
                tracing::warn!(error = %e, ?wait, "receiving interruption messages failed");
                ensured = None;
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Makes the queue and its rules as they should be: the queue's URL.
async fn ensure(c: &AwsClients, installation: &str, place: &Place) -> Result<String, String> {
    let name = queue::queue_name(installation);
    let arn = format!("arn:aws:sqs:{}:{}:{name}", place.region, place.account_id);
    let policy = queue::policy(
        &arn,
        &queue::rule_arns(installation, &place.account_id, &place.region),
    );
    let tags: HashMap<String, String> = queue::tags(installation);
    let spec = QueueSpec {
        name: &name,
        tags: &tags,
        policy: &policy,
        retention: queue::RETENTION,
    };
    let seen = aws_queue::describe_queue(c, &name)
        .await
        .map_err(|e| e.to_string())?;
    let url = match queue::queue_step(installation, seen.as_ref(), &policy) {
        QueueStep::Create => aws_queue::create_queue(c, &spec)
            .await
            .map_err(|e| e.to_string())?,
        QueueStep::Repair(why) => {
            let url = seen.map(|q| q.url).unwrap_or_default();
            tracing::info!(queue = %name, %why, "interruption queue put back");
            aws_queue::repair_queue(c, &url, &spec)
                .await
                .map_err(|e| e.to_string())?;
            url
        }
        QueueStep::Keep => seen.map(|q| q.url).unwrap_or_default(),
        QueueStep::NotOurs(why) => return Err(why),
    };
    let rules = aws_queue::describe_rules(c, &queue::rule_prefix(installation))
        .await
        .map_err(|e| e.to_string())?;
    for step in queue::rule_steps(installation, &rules, &arn) {
        let done = match step {
            RuleStep::Put(label) => {
                let Some((_, source, detail_type)) = MATCHED.iter().find(|(l, _, _)| *l == label)
                else {
                    continue;
                };
                aws_queue::put_rule(
                    c,
                    &queue::rule_name(installation, label),
                    &queue::pattern(source, detail_type),
                    &tags,
                    &arn,
                )
                .await
                .map(|_| ())
            }
            RuleStep::Delete(name) => aws_queue::delete_rule(c, &name).await,
        };
        done.map_err(|e| e.to_string())?;
    }
    Ok(url)
}

/// The installation's rules and queue in this account and region: those
/// named like its own that carry its tags.
pub async fn held(
    c: &AwsClients,
    installation: &str,
) -> AwsResult<(Vec<ObservedRule>, Option<ObservedQueue>)> {
    let mut rules = aws_queue::describe_rules(c, &queue::rule_prefix(installation)).await?;
    rules.retain(|r| queue::is_ours(installation, &r.tags));
    let held = aws_queue::describe_queue(c, &queue::queue_name(installation)).await?;
    Ok((
        rules,
        held.filter(|q| queue::is_ours(installation, &q.tags)),
    ))
}

/// Deletes the installation's rules, then its queue.
pub async fn remove(c: &AwsClients, installation: &str) -> AwsResult<()> {
    let (rules, held) = held(c, installation).await?;
    for rule in rules {
        aws_queue::delete_rule(c, &rule.name).await?;
    }
    if let Some(q) = held {
        aws_queue::delete_queue(c, &q.url).await?;
    }
    Ok(())
}

/// Acts on one message; `Ok` when it may be deleted.
async fn act(shared: &Shared, c: &AwsClients, place: &Place, body: &str) -> AwsResult<()> {
    let said = read(body);
    let (instances, deadline) = match &said {
        Read::Malformed { why } => {
            tracing::warn!(%why, "malformed interruption message deleted");
            shared.ctx.metrics.interruption_message(said.kind());
            return Ok(());
        }
        Read::Nothing => {
            shared.ctx.metrics.interruption_message(said.kind());
            return Ok(());
        }
        Read::Notice(Notice::Rebalance { instance }) => {
            if !rebalance_replaces(shared, instance) {
                shared.ctx.metrics.interruption_message(said.kind());
                return Ok(());
            }
            // Replaced as a warning is, with no deadline.
            (vec![instance.clone()], Some(0))
        }
        Read::Notice(Notice::Reclaimed { instances, at, .. }) => {
            (instances.clone(), Some(at.map_or(0, |t| t.as_second())))
        }
        Read::Notice(Notice::Gone { instance, .. }) => (vec![instance.clone()], None),
    };
    let owners = owners(shared, c, &instances).await?;
    if owners.is_empty() {
        shared.ctx.metrics.interruption_message("not-ours");
        return Ok(());
    }
    shared.ctx.metrics.interruption_message(said.kind());
    let ours: Vec<String> = owners.keys().cloned().collect();
    if let Some(deadline) = deadline {
        instances::mark_interrupted(c, &ours, deadline).await?;
    }
    if matches!(
        said,
        Read::Notice(Notice::Reclaimed {
            why: Reclaim::Spot,
            ..
        })
    ) {
        skip_offerings(shared, place, &ours);
    }
    let mut by_cluster: HashMap<ObjectRef<ComputeCluster>, Vec<String>> = HashMap::new();
    for (id, cluster) in owners {
        by_cluster.entry(cluster).or_default().push(id);
    }
    for (cluster, ids) in by_cluster {
        tell(shared, &cluster, &ids, deadline.is_some(), said.kind()).await;
    }
    Ok(())
}

/// Reconciles `cluster` now and says why in an Event; an instance AWS takes
/// back (`reclaimed`) is timed until replaced.
async fn tell(
    shared: &Shared,
    cluster: &ObjectRef<ComputeCluster>,
    ids: &[String],
    reclaimed: bool,
    kind: &str,
) {
    let _ = shared.heard.unbounded_send(cluster.clone());
    let Some(cc) = shared.clusters.get(cluster) else {
        return;
    };
    let list = ids.join(", ");
    let note = match reclaimed {
        true => {
            let uid = cc.uid().unwrap_or_default();
            let mut noticed = shared.listeners.noticed();
            for id in ids {
                noticed.insert(id.clone(), (uid.clone(), Instant::now()));
            }
            format!("AWS takes back {list} ({kind}): replacing now")
        }
        false => format!("{list} stopped or ended out of band: replacing now"),
    };
    shared
        .ctx
        .publish(&cc.object_ref(&()), true, "Interrupted", note)
        .await;
}

/// The spot offerings (type and zone) of `ids`, as their clusters' statuses
/// show them, told as interrupted.
fn skip_offerings(shared: &Shared, place: &Place, ids: &[String]) {
    for cc in shared.clusters.state() {
        let listed = cc
            .status
            .iter()
            .flat_map(|s| &s.node_groups)
            .flat_map(|g| &g.instances);
        for i in listed.filter(|i| ids.contains(&i.id) && i.capacity_type == Market::Spot) {
            (shared.interrupted)(place, &i.instance_type, &i.zone);
        }
    }
}

/// Whether the group `instance` belongs to (by its cluster's status) asks
/// a rebalance recommendation to replace it.
fn rebalance_replaces(shared: &Shared, instance: &str) -> bool {
    shared.clusters.state().iter().any(|cc| {
        let group = cc
            .status
            .iter()
            .flat_map(|s| &s.node_groups)
            .find(|g| g.instance_ids.iter().any(|i| i == instance));
        group.is_some_and(|g| {
            cc.spec.node_groups.iter().any(|spec| {
                spec.name == g.name
                    && spec.interruption.as_ref().map(|i| i.rebalance) == Some(Rebalance::Replace)
            })
        })
    })
}

/// The cluster of each of `ids` that is this installation's: by the
/// clusters' statuses, else by the instances' tags in AWS (a launch no
/// status lists yet).
async fn owners(
    shared: &Shared,
    c: &AwsClients,
    ids: &[String],
) -> AwsResult<BTreeMap<String, ObjectRef<ComputeCluster>>> {
    let clusters = shared.clusters.state();
    let mut out = BTreeMap::new();
    for cc in &clusters {
        let listed = cc
            .status
            .iter()
            .flat_map(|s| &s.node_groups)
            .flat_map(|g| &g.instance_ids);
        for id in listed.filter(|id| ids.contains(id)) {
            out.insert(id.clone(), ObjectRef::from_obj(cc.as_ref()));
        }
    }
    let unknown: Vec<String> = ids
        .iter()
        .filter(|id| !out.contains_key(*id))
        .cloned()
        .collect();
    if unknown.is_empty() {
        return Ok(out);
    }
    let by_uid = instances::owners(c, shared.ctx.installation.id(), &unknown).await?;
    for (id, uid) in by_uid {
        if let Some(cc) = clusters
            .iter()
            .find(|cc| cc.uid().as_deref() == Some(uid.as_str()))
        {
            out.insert(id, ObjectRef::from_obj(cc.as_ref()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::instances::InstanceState::{Running, ShuttingDown};

    fn inst(id: &str, state: InstanceState, marked: bool) -> ObservedInstance {
        let mut i = ObservedInstance::of(id, "workers", "t3.small", state);
        i.interrupted = marked.then_some(0);
        i
    }

    #[test]
    fn failures_in_a_row_are_retried_ever_later_up_to_the_ensure_interval() {
        let waits: Vec<u64> = (1..=8).map(|n| after_failures(n).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(after_failures(u32::MAX), ENSURE_EVERY);
    }

    #[test]
    fn a_noticed_instance_counts_as_replaced_once_ended_with_its_group_whole() {
        let l = Listeners::default();
        l.noticed()
            .insert("i-1".into(), ("uid-a".into(), Instant::now()));
        let counts = [("workers".to_string(), 2)];
        let rows: [(&[ObservedInstance], usize, &str); 4] = [
            (
                &[inst("i-1", Running, true), inst("i-2", Running, false)],
                0,
                "still running",
            ),
            (
                &[inst("i-1", ShuttingDown, true), inst("i-2", Running, false)],
                0,
                "ended, the group short of its count",
            ),
            (
                &[
                    inst("i-1", ShuttingDown, true),
                    inst("i-2", Running, false),
                    inst("i-3", Running, false),
                ],
                1,
                "ended, the group whole",
            ),
            (&[], 0, "counted once"),
        ];
        for (seen, want, why) in rows {
            assert_eq!(l.replaced("uid-a", seen, &counts).len(), want, "{why}");
        }
        l.noticed()
            .insert("i-9".into(), ("uid-b".into(), Instant::now()));
        assert!(
            l.replaced("uid-a", &[], &counts).is_empty(),
            "another cluster's"
        );
        assert_eq!(l.replaced("uid-b", &[], &counts).len(), 1, "gone from AWS");
    }
}
