//! `byoc-operator audit`: what carries this installation's ownership tags
//! in the AWS accounts its CloudAccounts reach, but belongs to no live
//! ComputeCluster (a finalizer removed by hand, a namespace force-deleted),
//! grouped by former cluster with an estimate of what it costs; with
//! `--delete`, the former clusters it is told (`--cluster UID`, or `--all`
//! it lists) are removed through the controller's own deletion, in order.
//! Read-only otherwise. Also run periodically by the operator for its gauge.
//!
//! What it never counts or touches: another installation's resources (its
//! clusters live in another apiserver), what `deletionPolicy: Retain` let
//! go, and a live cluster's. What was made before installations were
//! tagged cannot be told apart: it is listed as unattributed and deleted
//! only when named with `--cluster`.
//!
//! The installation's interruption queue and rules in a place where no live
//! cluster has a spot group are listed too (the last such cluster's
//! deletion removes them; a finalizer removed by hand does not), and
//! deleted with `--delete --all`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

use crate::account::{credentials, Accounts};
use crate::api::{AccountPhase, CloudAccount, ComputeCluster};
use crate::aws::instances::InstanceState;
use crate::aws::inventory::{self, Tagged};
use crate::aws::nat_gateway::NatState;
use crate::aws::{AwsClients, AwsResult, OwnershipTags};
use crate::cluster::cleanup::delete_pass;
use crate::cluster::kinds::Deleted;
use crate::cluster::kinds::Observed;
use crate::context::Context;
use crate::interruption::{listener, queue};
use crate::leadership::Shutdown;
use crate::metrics::Metrics;
use crate::prices::{Item, PriceBook, Prices, Wanted, HOURS_PER_MONTH};
use crate::Error;

/// What is left of one former cluster in one account and region.
#[derive(Clone, Debug, PartialEq)]
pub struct Leak {
    pub uid: String,
    /// `namespace/name` the cluster had.
    pub cluster: String,
    /// Made before installations were tagged: maybe another installation's.
    pub unattributed: bool,
    pub resources: Vec<LeakedResource>,
    /// This installation's public ID (its deletion finds what carries it,
    /// or no installation tag).
    installation: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LeakedResource {
    pub kind: String,
    pub id: String,
    pub detail: String,
    /// Estimated USD per month, when the price table knows it.
    pub monthly_usd: Option<f64>,
}

impl Leak {
    pub fn monthly_usd(&self) -> f64 {
        // A float sum starts at -0.0: nothing priced reads $0.00, not $-0.00.
        self.resources
            .iter()
            .filter_map(|r| r.monthly_usd)
            .sum::<f64>()
            + 0.0
    }

    /// The ownership tags the deletion code finds its resources by.
    pub fn owner(&self) -> OwnershipTags {
        owner(&self.installation, &self.uid, &self.cluster)
    }
}

/// The ownership tags of `installation`'s cluster `uid` that was `namespace/name`.
pub fn owner(installation: &str, uid: &str, cluster: &str) -> OwnershipTags {
    let (namespace, name) = cluster.split_once('/').unwrap_or(("", cluster));
    OwnershipTags {
        installation: installation.to_string(),
        uid: uid.to_string(),
        namespace: namespace.to_string(),
        name: name.to_string(),
        user: Default::default(),
    }
}

/// The former clusters that resources carrying the operator's tags belong
/// to, with no cluster in `live`, as `installation` sees them. Tags can
/// outlive their resource for a while (a terminated instance's do), so
/// what is really left is then described by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Former {
    /// This installation's (UID → `namespace/name`): leaked.
    pub ours: BTreeMap<String, String>,
    /// Made before installations were tagged (no installation tag on any
    /// of its resources): maybe another installation's.
    pub unattributed: BTreeMap<String, String>,
    /// Let go on purpose with `deletionPolicy: Retain` (UIDs).
    pub retained: BTreeSet<String>,
    /// Another installation's (UIDs): never looked at further.
    pub others: BTreeSet<String>,
}

pub fn leaked(found: &[Tagged], live: &BTreeSet<String>, installation: &str) -> Former {
    let mut by_uid: BTreeMap<&str, Vec<&Tagged>> = BTreeMap::new();
    for t in found.iter().filter(|t| !live.contains(&t.uid)) {
        by_uid.entry(&t.uid).or_default().push(t);
    }
    let mut former = Former::default();
    for (uid, tagged) in by_uid {
        let cluster = tagged
            .iter()
            .map(|t| t.cluster.clone())
            .find(|c| !c.is_empty())
            .unwrap_or_default();
        let tags: BTreeSet<Option<&str>> =
            tagged.iter().map(|t| t.installation.as_deref()).collect();
        if tags.iter().flatten().any(|i| *i != installation) {
            former.others.insert(uid.to_string());
        } else if tagged.iter().any(|t| t.retained) {
            former.retained.insert(uid.to_string());
        } else if tags.contains(&Some(installation)) {
            former.ours.insert(uid.to_string(), cluster);
        } else {
            former.unattributed.insert(uid.to_string(), cluster);
        }
    }
    former
}

/// What pricing what `o` holds needs (instances on demand, or spot in
/// their zone; NAT gateways, addresses, interface endpoints), and nothing
/// it does not hold.
pub fn wanted(o: &Observed) -> Wanted {
    let mut w = Wanted::default();
    for i in &o.instances {
        w.instance(&i.instance_type, &i.zone, i.spot);
    }
    let interface = o.endpoints.iter().any(|e| !e.gateway);
    for (item, held) in [
        (Item::NatGateway, !o.nat_gateways.is_empty()),
        (Item::PublicIpv4, !o.addresses.is_empty()),
        (Item::InterfaceEndpoint, interface),
    ] {
        if held {
            w.items.insert(item);
        }
    }
    w
}

/// What is left of `installation`'s former cluster `uid`, as the describe
/// of its kinds shows it, with estimated costs from `book`.
pub fn describe_leak(
    installation: &str,
    uid: &str,
    cluster: &str,
    unattributed: bool,
    o: &Observed,
    book: &PriceBook,
) -> Leak {
    let resources = o
        .resources()
        .into_iter()
        .map(|(kind, id)| {
            let (detail, monthly_usd) = priced(kind, &id, o, book);
            LeakedResource {
                kind: kind.into(),
                id,
                detail,
                monthly_usd,
            }
        })
        .collect();
    Leak {
        uid: uid.to_string(),
        cluster: cluster.to_string(),
        unattributed,
        resources,
        installation: installation.to_string(),
    }
}

/// What the describe says of one resource, and what it costs a month.
fn priced(kind: &str, id: &str, o: &Observed, book: &PriceBook) -> (String, Option<f64>) {
    let monthly =
        |item: Item, count: f64| book.price(&item).map(|p| p.usd * count * HOURS_PER_MONTH);
    match kind {
        "instance" => o
            .instances
            .iter()
            .find(|i| i.id == id)
            .map_or_else(Default::default, |i| {
                let cost = book
                    .instance(&i.instance_type, &i.zone, i.spot)
                    .map(|p| p.usd * HOURS_PER_MONTH)
                    .filter(|_| i.state != InstanceState::Stopped);
                (
                    format!("{}, {:?}", i.instance_type, i.state).to_lowercase(),
                    cost,
                )
            }),
        "nat-gateway" => {
            o.nat_gateways
                .iter()
                .find(|n| n.id == id)
                .map_or_else(Default::default, |n| {
                    let billed = matches!(n.state, NatState::Pending | NatState::Available);
                    let cost = monthly(Item::NatGateway, 1.0).filter(|_| billed);
                    (format!("{:?}", n.state).to_lowercase(), cost)
                })
        }
        "elastic-ip" => (String::new(), monthly(Item::PublicIpv4, 1.0)),
        "vpc-endpoint" => {
            o.endpoints
                .iter()
                .find(|e| e.id == id)
                .map_or_else(Default::default, |e| {
                    let cost = match e.gateway {
                        true => Some(0.0),
                        false => monthly(Item::InterfaceEndpoint, e.subnet_ids.len() as f64),
                    };
                    (e.service.clone(), cost)
                })
        }
        _ => (String::new(), None),
    }
}

/// An installation's interruption queue and rules where no live cluster
/// wants them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LeftQueue {
    /// The queue's name, when SQS has it.
    pub queue: Option<String>,
    pub rules: Vec<String>,
}

impl LeftQueue {
    pub fn count(&self) -> usize {
        usize::from(self.queue.is_some()) + self.rules.len()
    }
}

/// Where a live cluster wants the installation's interruption queue: the
/// (AWS account, region) of each cluster with a spot group. One that has
/// not recorded its account yet stands for every account of its region.
pub struct QueueUse(BTreeSet<(Option<String>, String)>);

impl QueueUse {
    pub fn of(clusters: &[ComputeCluster]) -> Self {
        QueueUse(
            clusters
                .iter()
                .filter(|c| queue::wanted_by(&c.spec.node_groups))
                .map(|c| {
                    let account = c.status.as_ref().and_then(|s| s.aws_account_id.clone());
                    (account, c.spec.region.clone())
                })
                .collect(),
        )
    }

    pub fn wants(&self, account: &str, region: &str) -> bool {
        let region = region.to_string();
        self.0
            .contains(&(Some(account.to_string()), region.clone()))
            || self.0.contains(&(None, region))
    }
}

/// The installation's queue and rules in this place, when there are any.
/// `None` too when the role may not look (connected before the queue's
/// statements): the audit of clusters goes on.
async fn left_queue(c: &AwsClients, installation: &str) -> AwsResult<Option<LeftQueue>> {
    match listener::held(c, installation).await {
        Ok((rules, held)) => {
            let left = LeftQueue {
                queue: held.map(|_| queue::queue_name(installation)),
                rules: rules.into_iter().map(|r| r.name).collect(),
            };
            Ok((left.count() > 0).then_some(left))
        }
        Err(e) if e.is_access_denied() => Ok(None),
        Err(e) => Err(e),
    }
}

/// What one account and region holds for `installation`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Found {
    /// This installation's former clusters' resources, then the
    /// unattributed ones (`Leak::unattributed`).
    pub leaks: Vec<Leak>,
    /// Former clusters let go with `deletionPolicy: Retain`.
    pub retained: usize,
    /// Former clusters of other installations.
    pub others: usize,
    /// The installation's interruption queue and rules, no cluster's.
    pub queue: Option<LeftQueue>,
    /// The installation's keys KMS is to delete (their window running).
    pub pending_keys: Vec<crate::aws::kms_key::ObservedKey>,
}

impl Found {
    /// This installation's leaked resources (the unattributed not counted).
    pub fn ours(&self) -> usize {
        self.leaks
            .iter()
            .filter(|l| !l.unattributed)
            .map(|l| l.resources.len())
            .sum::<usize>()
            + self.queue.as_ref().map_or(0, LeftQueue::count)
    }
}

/// Everything of the operator's in one account and region, and what of it
/// belongs to no cluster in `live`, as `installation` sees it.
/// Costs are at list price in `region`, from `prices`. The installation's
/// interruption queue is looked for unless `queue_wanted`.
pub async fn find(
    c: &AwsClients,
    prices: &Prices,
    region: &str,
    live: &BTreeSet<String>,
    installation: &str,
    queue_wanted: bool,
) -> AwsResult<Found> {
    let mut found = inventory::ec2(c).await?;
    found.extend(inventory::iam_roles(c, "byoc-").await?);
    // A role connected before log groups were in the policy may not list
    // them: the rest is audited.
    match inventory::log_groups(c).await {
        Ok(groups) => found.extend(groups),
        Err(e) if e.is_access_denied() => {}
        Err(e) => return Err(e),
    }
    let pending_keys = match inventory::kms_keys(c, installation).await {
        Ok((keys, pending)) => {
            found.extend(keys);
            pending
        }
        Err(e) if e.is_access_denied() => vec![],
        Err(e) => return Err(e),
    };
    let former = leaked(&found, live, installation);
    let mut out = Found {
        retained: former.retained.len(),
        others: former.others.len(),
        pending_keys,
        ..Found::default()
    };
    let clusters = former
        .ours
        .iter()
        .map(|c| (c, false))
        .chain(former.unattributed.iter().map(|c| (c, true)));
    for ((uid, cluster), unattributed) in clusters {
        let observed = Observed::describe(c, &owner(installation, uid, cluster)).await?;
        let book = prices.book(c, region, &wanted(&observed)).await;
        let leak = describe_leak(installation, uid, cluster, unattributed, &observed, &book);
        if !leak.resources.is_empty() {
            out.leaks.push(leak);
        }
    }
    if !queue_wanted {
        out.queue = left_queue(c, installation).await?;
    }
    Ok(out)
}

/// The report of one account and region.
pub fn report(heading: &str, found: &Found) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{heading}:");
    if found.leaks.is_empty() && found.queue.is_none() {
        let _ = writeln!(out, "  nothing leaked");
    }
    for key in &found.pending_keys {
        let _ = writeln!(
            out,
            "  KMS key {} ({}): pending deletion, deleted by KMS on {} (an admin may cancel it until then)",
            key.id,
            key.description,
            key.deletion_date.as_deref().unwrap_or("?")
        );
    }
    for leak in &found.leaks {
        let whose = if leak.unattributed {
            ", made before installations were tagged: maybe another installation's; deleted only when named with --cluster"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  former cluster {} (uid {}{whose}): {} resources, about ${:.2}/month",
            leak.cluster,
            leak.uid,
            leak.resources.len(),
            leak.monthly_usd()
        );
        for r in &leak.resources {
            let cost = r
                .monthly_usd
                .map(|c| format!("  ~${c:.2}/month"))
                .unwrap_or_default();
            let detail = if r.detail.is_empty() {
                String::new()
            } else {
                format!(" ({})", r.detail)
            };
            let _ = writeln!(out, "    {} {}{detail}{cost}", r.kind, r.id);
        }
    }
    if let Some(q) = &found.queue {
        let _ = writeln!(
            out,
            "  the interruption queue {} and {} rules: no live cluster here has a spot group (deleted with --delete --all)",
            q.queue.as_deref().unwrap_or("(gone)"),
            q.rules.len()
        );
    }
    if found.retained > 0 {
        let _ = writeln!(
            out,
            "  {} former clusters let go with deletionPolicy: Retain (not counted, never deleted)",
            found.retained
        );
    }
    if found.others > 0 {
        let _ = writeln!(
            out,
            "  {} clusters of other operator installations (not counted, never touched)",
            found.others
        );
    }
    out
}

/// What `audit` does.
pub struct AuditOptions {
    /// This installation's public ID: only its resources are counted.
    pub installation: String,
    /// Delete what is found and selected (default: only report).
    pub delete: bool,
    /// With `delete`: the former clusters to delete, by UID.
    pub clusters: Vec<String>,
    /// With `delete`: every former cluster of this installation listed
    /// (not the unattributed ones: those only by `clusters`).
    pub all: bool,
    /// Regions to look in besides each account's and its clusters'.
    pub regions: Vec<String>,
    /// How long `--delete` waits for AWS to finish deleting.
    pub deadline: Duration,
    /// Only the CloudAccounts of this namespace.
    pub namespace: Option<String>,
}

/// The accounts and regions to look in: every CloudAccount, in its own
/// region, its clusters' regions and `extra`.
fn places(
    accounts: &[CloudAccount],
    clusters: &[ComputeCluster],
    extra: &[String],
) -> Vec<(usize, String)> {
    let mut out = BTreeSet::new();
    for (i, a) in accounts.iter().enumerate() {
        let key = (a.namespace().unwrap_or_default(), a.name_any());
        out.insert((i, a.spec.region.clone()));
        for c in clusters.iter().filter(|c| c.account_key() == key) {
            out.insert((i, c.spec.region.clone()));
        }
        out.extend(extra.iter().map(|r| (i, r.clone())));
    }
    out.into_iter().collect()
}

impl AuditOptions {
    /// Whether `--delete` is to delete `leak`.
    fn selects(&self, leak: &Leak) -> bool {
        self.delete && ((self.all && !leak.unattributed) || self.clusters.contains(&leak.uid))
    }
}

/// Looks in every account and region; the report, and how many resources
/// were found leaked (after `--delete`: how many are left). Before
/// deleting, `confirm` is shown the report and what is selected, and
/// deletes nothing unless it answers yes. A `--cluster` that is live is an
/// error, and nothing is deleted.
pub async fn command(
    client: &Client,
    base: &SdkConfig,
    opts: &AuditOptions,
    confirm: &mut dyn FnMut(&str, &[&Leak]) -> bool,
) -> Result<(String, usize), Error> {
    let accounts = crate::context::scoped_api::<CloudAccount>(client, opts.namespace.as_deref())
        .list(&ListParams::default())
        .await?
        .items;
    let clusters = Api::<ComputeCluster>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let live: BTreeSet<String> = clusters.iter().filter_map(|c| c.uid()).collect();
    let uses = QueueUse::of(&clusters);
    if let Some(c) = clusters
        .iter()
        .find(|c| c.uid().is_some_and(|u| opts.clusters.contains(&u)))
    {
        return Err(Error::LiveCluster {
            uid: c.uid().unwrap_or_default(),
            namespace: c.namespace().unwrap_or_default(),
            name: c.name_any(),
        });
    }
    let places = places(&accounts, &clusters, &opts.regions)
        .into_iter()
        .map(|(i, region)| (&accounts[i], region));
    let mut looked = look_in(client, base, opts, (&live, &uses), places).await?;
    let selected: Vec<&Leak> = looked
        .found_in
        .iter()
        .flat_map(|(_, _, f)| &f.leaks)
        .filter(|l| opts.selects(l))
        .collect();
    let queues = opts.all && looked.found_in.iter().any(|(_, _, f)| f.queue.is_some());
    if opts.delete && (!selected.is_empty() || queues) && confirm(&looked.out, &selected) {
        let mut out = std::mem::take(&mut looked.out);
        looked.total = delete_selected(opts, (&live, &uses), &looked, &mut out).await?;
        looked.out = out;
    } else if opts.delete {
        let _ = writeln!(looked.out, "nothing deleted");
    }
    let Looked {
        mut out,
        total,
        monthly,
        ..
    } = looked;
    let _ = writeln!(
        out,
        "{total} leaked resources{}; about ${monthly:.2}/month (an estimate at list price, as a cluster's status.cost: instances, NAT gateways, addresses, interface endpoints)",
        if opts.delete { " left" } else { "" }
    );
    Ok((out, total))
}

/// What the audit found, place by place: its report so far, the count of
/// this installation's leaked resources, their monthly estimate, and each
/// place's clients with its findings.
struct Looked {
    /// List prices, looked up once per place.
    prices: Prices,
    out: String,
    total: usize,
    monthly: f64,
    found_in: Vec<(Place, AwsClients, Found)>,
    /// Every usable CloudAccount: the place it reaches, whether it is
    /// of a namespace or lent to it, and its clients. A leak is deleted
    /// only through a CloudAccount its cluster's namespace may use.
    through: Vec<Through>,
}

/// A usable CloudAccount as `audit --delete` may go through it.
struct Through {
    place: Place,
    namespace: String,
    spec: crate::api::CloudAccountSpec,
    clients: AwsClients,
}

impl Looked {
    /// The clients to delete what a cluster of `namespace` left in
    /// `place` with: a CloudAccount of that namespace first, else one that
    /// lends itself to it (`allowedNamespaces`); none when no CloudAccount
    /// the namespace may use reaches the place.
    fn through(&self, place: &Place, namespace: &str) -> Option<&AwsClients> {
        let reaching = || self.through.iter().filter(|t| &t.place == place);
        reaching()
            .find(|t| t.namespace == namespace)
            .or_else(|| reaching().find(|t| t.spec.allows_namespace(&t.namespace, namespace)))
            .map(|t| &t.clients)
    }
}

/// An AWS account and region.
type Place = (String, String);

/// Looks in each (CloudAccount, region) once per AWS account and region; a
/// CloudAccount that cannot be used is said so and skipped.
async fn look_in<'a>(
    client: &Client,
    base: &SdkConfig,
    opts: &AuditOptions,
    (live, uses): (&BTreeSet<String>, &QueueUse),
    places: impl Iterator<Item = (&'a CloudAccount, String)>,
) -> Result<Looked, Error> {
    let metrics = Metrics::new();
    let mut seen = BTreeSet::new();
    let mut looked = Looked {
        prices: Prices::default(),
        out: String::new(),
        total: 0,
        monthly: 0.0,
        found_in: Vec::new(),
        through: Vec::new(),
    };
    for (account, region) in places {
        let label = format!(
            "CloudAccount {}/{}",
            account.namespace().unwrap_or_default(),
            account.name_any()
        );
        let ambient = credentials::Ambient::Published;
        let resolved = match credentials::resolve(client, base, &metrics, account, &ambient).await {
            Ok(r) => r,
            Err(e) => {
                let _ = writeln!(looked.out, "{label}: not looked in, it cannot be used: {e}");
                continue;
            }
        };
        let place = (resolved.account_id.clone(), region.clone());
        let c = AwsClients::new(&resolved.config, &region, metrics.aws_interceptor());
        looked.through.push(Through {
            place: place.clone(),
            namespace: account.namespace().unwrap_or_default(),
            spec: account.spec.clone(),
            clients: c.clone(),
        });
        if !seen.insert(place.clone()) {
            continue;
        }
        let wanted = uses.wants(&resolved.account_id, &region);
        let found = find(
            &c,
            &looked.prices,
            &region,
            live,
            &opts.installation,
            wanted,
        )
        .await?;
        let heading = format!(
            "AWS account {} in {region} (through {label}), installation {}",
            resolved.account_id, opts.installation
        );
        looked.out.push_str(&report(&heading, &found));
        looked.monthly += found
            .leaks
            .iter()
            .filter(|l| !l.unattributed)
            .map(Leak::monthly_usd)
            .sum::<f64>();
        looked.total += found.ours();
        looked.found_in.push((place, c, found));
    }
    Ok(looked)
}

/// Deletes the selected leaks, each through a CloudAccount its cluster's
/// namespace may use (never another tenant's: a leak no such account
/// reaches is left, and said so), saying how each went; what is left of
/// this installation's leaks afterwards.
async fn delete_selected(
    opts: &AuditOptions,
    (live, uses): (&BTreeSet<String>, &QueueUse),
    looked: &Looked,
    out: &mut String,
) -> Result<usize, Error> {
    let mut total = 0;
    for (place, c, found) in &looked.found_in {
        for leak in found.leaks.iter().filter(|l| opts.selects(l)) {
            let owner = leak.owner();
            let Some(through) = looked.through(place, &owner.namespace) else {
                let _ = writeln!(
                    out,
                    "not deleted: former cluster {} (uid {}): no CloudAccount namespace {} may use reaches AWS account {} in {}; create one there (or lend one with allowedNamespaces) and run the audit again",
                    leak.cluster, leak.uid, owner.namespace, place.0, place.1
                );
                continue;
            };
            let left = delete_leak(through, &owner, opts.deadline).await?;
            let _ = writeln!(
                out,
                "deleted former cluster {} (uid {}): {}",
                leak.cluster,
                leak.uid,
                if left {
                    "not finished within the deadline"
                } else {
                    "nothing left"
                }
            );
        }
        if let Some(q) = found.queue.as_ref().filter(|_| opts.all) {
            listener::remove(c, &opts.installation).await?;
            let _ = writeln!(
                out,
                "deleted the interruption queue and {} rules in AWS account {} in {}",
                q.rules.len(),
                place.0,
                place.1
            );
        }
        let prices = &looked.prices;
        let wanted = uses.wants(&place.0, &place.1);
        total += find(c, prices, &place.1, live, &opts.installation, wanted)
            .await?
            .ours();
    }
    Ok(total)
}

/// Deletes what the former cluster `owner` left, through the controller's
/// deletion passes, until nothing is left or `deadline` passes; whether
/// something is left.
async fn delete_leak(
    c: &AwsClients,
    owner: &OwnershipTags,
    deadline: Duration,
) -> Result<bool, Error> {
    let until = Instant::now() + deadline;
    loop {
        let observed = Observed::describe(c, owner).await?;
        if observed.is_empty() {
            return Ok(false);
        }
        if Instant::now() > until {
            return Ok(true);
        }
        match delete_pass(c, owner, &observed).await {
            Ok(Deleted::All) => {}
            // AWS must finish something first (or lets go of it soon).
            Ok(Deleted::Ending(_)) => tokio::time::sleep(Duration::from_secs(2)).await,
            Err(e) if e.code() == Some("DependencyViolation") => {
                tokio::time::sleep(Duration::from_secs(2)).await
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// In the running operator: every `interval` (never more often than the
/// resync interval), what each ready CloudAccount in scope reaches in its
/// region is audited and the gauge `byoc_leaked_resources` set. A
/// namespace-scoped operator counts only former clusters of its namespace.
pub async fn watch(
    ctx: Arc<Context>,
    accounts: Arc<Accounts>,
    interval: Duration,
    shutdown: Shutdown,
) {
    let interval = interval.max(ctx.settings.resync);
    let stopped = shutdown.stopped();
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            () = tokio::time::sleep(interval) => {}
        }
        if let Err(e) = audit_in_scope(&ctx, &accounts).await {
            tracing::info!(error = %e, "leak audit not finished; tried again next interval");
        }
    }
}

async fn audit_in_scope(ctx: &Context, accounts: &Accounts) -> Result<(), Error> {
    let clusters = ctx
        .api::<ComputeCluster>()
        .list(&ListParams::default())
        .await?
        .items;
    let live: BTreeSet<String> = clusters.iter().filter_map(|c| c.uid()).collect();
    let uses = QueueUse::of(&clusters);
    for account in ctx
        .api::<CloudAccount>()
        .list(&ListParams::default())
        .await?
        .items
    {
        if account.status.as_ref().and_then(|s| s.phase) != Some(AccountPhase::Ready) {
            continue;
        }
        let label = format!(
            "{}/{}",
            account.namespace().unwrap_or_default(),
            account.name_any()
        );
        let resolved = match accounts.get(&account).await {
            Ok(r) => r,
            Err(e) => {
                tracing::info!(account = %label, error = %e, "leak audit skipped");
                continue;
            }
        };
        let c = AwsClients::new(
            &resolved.config,
            &account.spec.region,
            ctx.metrics.aws_interceptor_for(&resolved.account_id),
        );
        let in_scope = |l: &&Leak| {
            let ns = l.owner().namespace;
            !l.unattributed
                && ctx
                    .settings
                    .namespace
                    .as_deref()
                    .is_none_or(|scope| scope == ns)
        };
        let region = &account.spec.region;
        // With the queue off, one left from before is wanted by nothing.
        let wanted = ctx.settings.interruption_queue && uses.wants(&resolved.account_id, region);
        let all = find(
            &c,
            &ctx.prices,
            region,
            &live,
            ctx.installation.id(),
            wanted,
        )
        .await?;
        let queue = all.queue.as_ref().map_or(0, LeftQueue::count);
        let found: usize = all
            .leaks
            .iter()
            .filter(in_scope)
            .map(|l| l.resources.len())
            .sum::<usize>()
            + queue;
        if found > 0 {
            tracing::warn!(account = %label, resources = found, "AWS resources of no live ComputeCluster found; see byoc-operator audit");
        }
        ctx.metrics.set_leaked(&label, found);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::instances::ObservedInstance;
    use crate::aws::nat_gateway::{ObservedAddress, ObservedNatGateway};

    fn tagged(kind: &str, id: &str, uid: &str) -> Tagged {
        Tagged {
            kind: kind.into(),
            id: id.into(),
            uid: uid.into(),
            cluster: format!("team-a/{uid}"),
            installation: Some("ours".into()),
            retained: false,
        }
    }

    #[test]
    fn leaks_are_this_installations_clusters_no_live_one_owns() {
        let of = |installation: Option<&str>, t: Tagged| Tagged {
            installation: installation.map(String::from),
            ..t
        };
        let retained = |t: Tagged| Tagged {
            retained: true,
            ..t
        };
        let found = vec![
            tagged("vpc", "vpc-live", "live"),
            tagged("vpc", "vpc-gone", "gone"),
            tagged("natgateway", "nat-gone", "gone"),
            tagged("iam-role", "byoc-team-a-other-1234", "other"),
            // Another installation's running cluster (not live here).
            of(Some("theirs"), tagged("vpc", "vpc-prod", "prod")),
            // Let go with Retain.
            retained(tagged("vpc", "vpc-kept", "kept")),
            tagged("subnet", "subnet-kept", "kept"),
            // Made before installations were tagged.
            of(None, tagged("vpc", "vpc-old", "old")),
            // Half adopted: ours.
            of(None, tagged("vpc", "vpc-half", "half")),
            tagged("subnet", "subnet-half", "half"),
        ];
        let live: BTreeSet<String> = ["live".to_string()].into();
        let former = leaked(&found, &live, "ours");
        let names = |m: &BTreeMap<String, String>| m.keys().cloned().collect::<Vec<_>>();
        assert_eq!(names(&former.ours), ["gone", "half", "other"]);
        assert_eq!(former.ours["gone"], "team-a/gone");
        assert_eq!(names(&former.unattributed), ["old"]);
        assert_eq!(former.retained, BTreeSet::from(["kept".to_string()]));
        assert_eq!(former.others, BTreeSet::from(["prod".to_string()]));
        // The other installation sees it the other way round.
        let theirs = leaked(&found, &live, "theirs");
        assert_eq!(names(&theirs.ours), ["prod"]);
        assert!(theirs.others.contains("gone"));
        assert_eq!(
            leaked(&found[..1], &live, "ours"),
            Former::default(),
            "a healthy cluster reports nothing"
        );
    }

    #[test]
    fn delete_selects_what_it_is_told_and_never_the_unattributed_by_all() {
        let leak = |uid: &str, unattributed| Leak {
            uid: uid.into(),
            cluster: format!("a/{uid}"),
            unattributed,
            resources: vec![],
            installation: "ours".into(),
        };
        let opts = |delete, all, clusters: &[&str]| AuditOptions {
            installation: "ours".into(),
            delete,
            clusters: clusters.iter().map(|c| c.to_string()).collect(),
            all,
            regions: vec![],
            deadline: Duration::from_secs(1),
            namespace: None,
        };
        let (ours, old) = (leak("u1", false), leak("u2", true));
        // (options, selects ours, selects the unattributed)
        let rows = [
            (opts(false, true, &["u1", "u2"]), false, false),
            (opts(true, false, &[]), false, false),
            (opts(true, true, &[]), true, false),
            (opts(true, false, &["u1"]), true, false),
            (opts(true, false, &["u2"]), false, true),
            (opts(true, true, &["u2"]), true, true),
        ];
        for (i, (o, want_ours, want_old)) in rows.into_iter().enumerate() {
            assert_eq!(
                (o.selects(&ours), o.selects(&old)),
                (want_ours, want_old),
                "row {i}"
            );
        }
    }

    use crate::aws::endpoint::{is_gateway, EndpointState, ObservedEndpoint};

    #[test]
    fn costs_are_estimated_for_what_bills() {
        // The built-in table's prices: what stands in for the API's.
        let table = PriceBook::default();
        let observed = Observed {
            instances: vec![
                ObservedInstance::of("i-1", "cpu", "m6i.large", InstanceState::Running),
                ObservedInstance::of("i-gone", "cpu", "m6i.large", InstanceState::Terminated),
            ],
            nat_gateways: vec![ObservedNatGateway {
                id: "nat-1".into(),
                zone: None,
                subnet_id: "subnet-1".into(),
                state: NatState::Available,
                allocation_ids: vec![],
            }],
            addresses: vec![ObservedAddress {
                allocation_id: "eipalloc-1".into(),
                zone: None,
                association_id: None,
            }],
            vpcs: vec![crate::aws::vpc::ObservedVpc {
                id: "vpc-1".into(),
                cidr: "10.0.0.0/16".into(),
            }],
            ..Default::default()
        };
        let endpoint = |id: &str, service: &str, subnets: usize| ObservedEndpoint {
            id: id.into(),
            service: service.into(),
            gateway: is_gateway(service),
            state: EndpointState::Available,
            route_table_ids: vec![],
            subnet_ids: (0..subnets).map(|i| format!("subnet-{i}")).collect(),
            security_group_ids: vec![],
            policy: None,
        };
        let with_endpoints = Observed {
            endpoints: vec![
                endpoint("vpce-1", "ecr.api", 2),
                endpoint("vpce-2", "s3", 0),
            ],
            ..Default::default()
        };
        let priced: Vec<(String, Option<f64>)> =
            describe_leak("ours", "e", "team-a/e", false, &with_endpoints, &table)
                .resources
                .iter()
                .map(|r| (r.id.clone(), r.monthly_usd))
                .collect();
        assert_eq!(
            priced,
            vec![
                ("vpce-1".to_string(), Some(0.01 * 2.0 * 730.0)),
                ("vpce-2".to_string(), Some(0.0))
            ],
            "an interface endpoint bills per zone, a gateway one nothing"
        );
        let leak = describe_leak("ours", "gone", "team-a/gone", false, &observed, &table);
        let priced: Vec<(&str, Option<f64>)> = leak
            .resources
            .iter()
            .map(|r| (r.id.as_str(), r.monthly_usd))
            .collect();
        assert_eq!(
            priced,
            vec![
                ("i-1", Some(0.096 * 730.0)),
                ("nat-1", Some(0.045 * 730.0)),
                ("eipalloc-1", Some(0.005 * 730.0)),
                ("vpc-1", None)
            ],
            "a terminated instance is not left"
        );
        assert!(
            (leak.monthly_usd() - 106.58).abs() < 0.01,
            "{}",
            leak.monthly_usd()
        );
        assert_eq!(leak.owner().namespace, "team-a");
        assert_eq!(leak.owner().name, "gone");
        let found = Found {
            leaks: vec![leak],
            retained: 1,
            others: 2,
            queue: Some(LeftQueue {
                queue: Some("byoc-i-interruptions".into()),
                rules: vec!["byoc-i-interruption-spot".into()],
            }),
            pending_keys: vec![],
        };
        assert_eq!(found.ours(), 4 + 2, "the queue and its rule count");
        let text = report("account 1, us-east-1", &found);
        assert!(
            text.contains("the interruption queue byoc-i-interruptions and 1 rules: no live cluster here has a spot group"),
            "{text}"
        );
        assert!(
            text.contains(
                "former cluster team-a/gone (uid gone): 4 resources, about $106.58/month"
            ),
            "{text}"
        );
        assert!(
            text.contains("instance i-1 (m6i.large, running)  ~$70.08/month"),
            "{text}"
        );
        assert!(
            text.contains("1 former clusters let go with deletionPolicy: Retain"),
            "{text}"
        );
        assert!(
            text.contains("2 clusters of other operator installations"),
            "{text}"
        );
        assert!(report("x", &Found::default()).contains("nothing leaked"));
        let only_queue = Found {
            queue: Some(LeftQueue::default()),
            ..Found::default()
        };
        assert!(!report("x", &only_queue).contains("nothing leaked"));
        assert!(
            describe_leak("i", "x", "a/x", false, &Observed::default(), &table)
                .resources
                .is_empty()
        );
    }

    #[test]
    fn the_queue_is_wanted_where_a_spot_cluster_runs_or_may_run() {
        let cluster = |market: &str, account: Option<&str>, region: &str| -> ComputeCluster {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "byoc.dev/v1alpha1", "kind": "ComputeCluster",
                "metadata": {"name": "c", "namespace": "n"},
                "spec": {
                    "cloudAccountRef": {"name": "a"}, "region": region,
                    "network": {"vpcCidr": "10.0.0.0/16", "availabilityZones": [format!("{region}a")]},
                    "nodeGroups": [{"name": "g", "instanceType": "t3.small", "count": 1, "capacityType": market}]
                },
                "status": {"awsAccountId": account}
            }))
            .expect("a cluster")
        };
        let uses = QueueUse::of(&[
            cluster("spot", Some("111111111111"), "us-east-1"),
            cluster("onDemand", Some("222222222222"), "us-east-1"),
            cluster("spotThenOnDemand", None, "eu-west-1"),
        ]);
        assert!(uses.wants("111111111111", "us-east-1"));
        assert!(
            !uses.wants("222222222222", "us-east-1"),
            "no spot group there"
        );
        assert!(!uses.wants("111111111111", "us-west-2"));
        assert!(
            uses.wants("333333333333", "eu-west-1"),
            "a spot cluster whose account is not recorded yet holds its region's"
        );
    }
}
