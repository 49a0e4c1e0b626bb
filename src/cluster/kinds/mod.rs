//! One module per AWS kind, each holding that kind's whole life: what of it
//! is observed, the pure decision (`plan`, table-tested with no server), the
//! calls that carry the decision out (`ensure`) and its part of deletion
//! (`delete`). `crate::aws` underneath is thin SDK calls only.

pub mod endpoints;
pub mod iam;
pub mod images;
pub mod internet_gateway;
pub mod key_pairs;
pub mod kms_key;
pub mod log_group;
pub mod nat_gateways;
pub mod node_groups;
pub mod offerings;
pub mod peering;
pub mod route_tables;
pub mod security_group;
pub mod subnets;
pub mod vpc;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use futures::future::BoxFuture;

use crate::aws::endpoint::{self as endpoint_api, EndpointState};
use crate::aws::peering::{self as peering_api, PeeringState};
use crate::aws::tags::{Owned, Scope};
use crate::aws::{
    instance_profile, instances, internet_gateway as igw_api, key_pair, nat_gateway, route_table,
    security_group as sg_api, subnet, vpc as vpc_api, AwsClients, AwsResult, OwnershipTags,
};

use super::catalog::Catalog;
use super::spec::{NetworkPlan, PeeringPlan, ValidatedSpec, Zones};
use super::status::Progress;
use super::user_data::UserData;
use crate::api::compute_cluster::{NetworkStatus, NodeGroupStatus};
use crate::api::{EndpointPolicy, NatGateways};
use crate::aws::nat_gateway::NatState;
use crate::aws::subnet::ObservedSubnet;
use crate::Error;

/// Everything of one cluster's in AWS, described by ownership tag.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub vpcs: Vec<vpc_api::ObservedVpc>,
    pub subnets: Vec<subnet::ObservedSubnet>,
    pub internet_gateways: Vec<igw_api::ObservedInternetGateway>,
    pub addresses: Vec<nat_gateway::ObservedAddress>,
    pub nat_gateways: Vec<nat_gateway::ObservedNatGateway>,
    pub route_tables: Vec<route_table::ObservedRouteTable>,
    pub security_groups: Vec<sg_api::ObservedSecurityGroup>,
    pub instances: Vec<instances::ObservedInstance>,
    pub key_pairs: Vec<key_pair::ObservedKeyPair>,
    pub endpoints: Vec<endpoint_api::ObservedEndpoint>,
    pub peerings: Vec<peering_api::ObservedPeering>,
    /// Routes, in any route table, to the cluster's peering connections
    /// (the cluster's own tables and the peer's it was given).
    pub peering_routes: Vec<route_table::PeeringRoute>,
    pub iam: instance_profile::ObservedIam,
    /// The cluster's log group.
    pub log_group: Option<crate::aws::log_group::ObservedLogGroup>,
    /// A group that is not the cluster's holds its log group's name.
    pub log_group_taken: bool,
    /// The cluster's own key, as its alias names it (perhaps scheduled for
    /// deletion).
    pub kms_key: Option<crate::aws::kms_key::ObservedKey>,
    /// The cluster's alias names a key that is not the cluster's.
    pub kms_key_taken: bool,
}

/// What a description looks at beyond the kinds every pass needs: a
/// converge pass looks only where the spec or the last status says there
/// is something, so clusters that use neither pay no call for them;
/// deletion and audits look everywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Looks {
    /// The cluster's key pairs.
    pub key_pairs: bool,
    /// The managed policies attached to the nodes' role.
    pub role_policies: bool,
    /// The VPC endpoints.
    pub endpoints: bool,
    /// The peering connections and the routes to them.
    pub peering: bool,
    /// The cluster's log group.
    pub logging: bool,
    /// The cluster's KMS key.
    pub storage: bool,
}

impl Looks {
    pub const NONE: Looks = Looks {
        key_pairs: false,
        role_policies: false,
        endpoints: false,
        peering: false,
        logging: false,
        storage: false,
    };

    pub const ALL: Looks = Looks {
        key_pairs: true,
        role_policies: true,
        endpoints: true,
        peering: true,
        logging: true,
        storage: true,
    };

    /// What either looks at.
    pub fn or(self, other: Looks) -> Looks {
        Looks {
            key_pairs: self.key_pairs || other.key_pairs,
            role_policies: self.role_policies || other.role_policies,
            endpoints: self.endpoints || other.endpoints,
            peering: self.peering || other.peering,
            logging: self.logging || other.logging,
            storage: self.storage || other.storage,
        }
    }

    /// Empties in `o` what these looks leave out.
    pub fn clear_unlooked(self, o: &mut Observed) {
        if !self.key_pairs {
            o.key_pairs.clear();
        }
        if !self.endpoints {
            o.endpoints.clear();
        }
        if !self.peering {
            o.peerings.clear();
            o.peering_routes.clear();
        }
        if !self.logging {
            o.log_group = None;
            o.log_group_taken = false;
        }
        if !self.storage {
            o.kms_key = None;
            o.kms_key_taken = false;
        }
    }
}

impl Observed {
    /// Describes every kind at once: one tag-filtered call per kind.
    pub async fn describe(c: &AwsClients, owner: &OwnershipTags) -> AwsResult<Observed> {
        Self::describe_kinds(c, owner, Looks::ALL).await
    }

    /// [`Observed::describe`], looking at what `looks` says only.
    pub async fn describe_kinds(
        c: &AwsClients,
        owner: &OwnershipTags,
        looks: Looks,
    ) -> AwsResult<Observed> {
        let name = iam::iam_name(owner);
        let group = log_group::name_of(owner);
        let alias = kms_key::alias_of(owner);
        // Each on the heap: the SDK's futures are large, and callers nest
        // this one deep (a debug build's worker stack overflowed).
        let (mut by_owner, iam, log_group, key) = tokio::try_join!(
            Box::pin(Self::describe_ec2(c, Scope::Cluster(owner), looks)),
            Box::pin(instance_profile::describe(
                c,
                owner,
                &name,
                looks.role_policies
            )),
            Box::pin(when(
                looks.logging,
                crate::aws::log_group::describe(c, &group)
            )),
            Box::pin(when(
                looks.storage,
                crate::aws::kms_key::by_alias(c, &alias)
            )),
        )?;
        let mut observed = by_owner.remove(&owner.uid).unwrap_or_default();
        observed.iam = iam;
        let (ours, taken): (Vec<_>, Vec<_>) =
            key.into_iter().partition(|k| kms_key::is_ours(k, owner));
        observed.kms_key = ours.into_iter().next();
        observed.kms_key_taken = !taken.is_empty();
        let (ours, taken): (Vec<_>, Vec<_>) = log_group
            .into_iter()
            .partition(|g| log_group::is_ours(g, owner));
        observed.log_group = ours.into_iter().next();
        observed.log_group_taken = !taken.is_empty();
        Ok(observed)
    }

    /// The EC2 kinds of `scope` by owning cluster's UID (IAM left empty):
    /// one tag-filtered call per kind (and its pages), at once.
    pub async fn describe_ec2(
        c: &AwsClients,
        scope: Scope<'_>,
        looks: Looks,
    ) -> AwsResult<BTreeMap<String, Observed>> {
        let (ec2, endpoints, peerings) = tokio::try_join!(
            Self::describe_network(c, scope, looks.key_pairs),
            when(looks.endpoints, endpoint_api::describe(c, scope)),
            when(looks.peering, peering_api::describe(c, scope)),
        )?;
        let mut by_owner = ec2;
        // Routes to every connection AWS still lists, deleted ones too: a
        // route left to one is found, replaced or removed.
        let ids: Vec<String> = peerings.iter().map(|(_, p)| p.id.clone()).collect();
        let routes = route_table::peering_routes(c, &ids).await?;
        for (uid, peering) in &peerings {
            let theirs = routes.iter().filter(|r| r.peering_id == peering.id);
            let o = by_owner.entry(uid.clone()).or_default();
            o.peering_routes.extend(theirs.cloned());
        }
        split(&mut by_owner, endpoints, |o| &mut o.endpoints);
        split(&mut by_owner, peerings, |o| &mut o.peerings);
        Ok(by_owner)
    }

    /// The network, instance and key-pair kinds of `scope` by owner.
    async fn describe_network(
        c: &AwsClients,
        scope: Scope<'_>,
        key_pairs: bool,
    ) -> AwsResult<BTreeMap<String, Observed>> {
        let (vpcs, subnets, igws, addresses, nats, route_tables, sgs, instances, key_pairs) = tokio::try_join!(
            vpc_api::describe(c, scope),
            subnet::describe(c, scope),
            igw_api::describe(c, scope),
            nat_gateway::describe_addresses(c, scope),
            nat_gateway::describe(c, scope),
            route_table::describe(c, scope),
            sg_api::describe(c, scope),
            instances::describe(c, scope),
            when(key_pairs, key_pair::describe(c, scope)),
        )?;
        let mut by_owner: BTreeMap<String, Observed> = BTreeMap::new();
        split(&mut by_owner, vpcs, |o| &mut o.vpcs);
        split(&mut by_owner, subnets, |o| &mut o.subnets);
        split(&mut by_owner, igws, |o| &mut o.internet_gateways);
        split(&mut by_owner, addresses, |o| &mut o.addresses);
        split(&mut by_owner, nats, |o| &mut o.nat_gateways);
        split(&mut by_owner, route_tables, |o| &mut o.route_tables);
        split(&mut by_owner, sgs, |o| &mut o.security_groups);
        split(&mut by_owner, instances, |o| &mut o.instances);
        split(&mut by_owner, key_pairs, |o| &mut o.key_pairs);
        Ok(by_owner)
    }
}

/// `f`'s answer when a kind is `looked` at; nothing (no call) otherwise.
pub async fn when<T: Default>(
    looked: bool,
    f: impl std::future::Future<Output = AwsResult<T>>,
) -> AwsResult<T> {
    match looked {
        true => f.await,
        false => Ok(T::default()),
    }
}

/// Each owner's items into its part of the view.
fn split<T>(
    by_owner: &mut BTreeMap<String, Observed>,
    items: Vec<Owned<T>>,
    field: fn(&mut Observed) -> &mut Vec<T>,
) {
    for (uid, item) in items {
        field(by_owner.entry(uid).or_default()).push(item);
    }
}

impl Observed {
    /// Every resource ID the describe found: the live ones, and instances
    /// shutting down and NAT gateways failed or deleted (seen too).
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.resources().into_iter().map(|(_, id)| id).collect();
        ids.extend(self.instances.iter().map(|i| i.id.clone()));
        ids.extend(self.nat_gateways.iter().map(|n| n.id.clone()));
        ids
    }

    /// Every live resource as `(kind, ID)`: what a cluster has in AWS (for
    /// what `Retain` leaves, what an audit lists). Billed kinds first.
    pub fn resources(&self) -> Vec<(&'static str, String)> {
        let mut out: Vec<(&'static str, String)> = Vec::new();
        let live_instances = self.instances.iter().filter(|i| !i.state.is_ending());
        out.extend(live_instances.map(|i| ("instance", i.id.clone())));
        let live_nats = self
            .nat_gateways
            .iter()
            .filter(|n| n.state != nat_gateway::NatState::Gone);
        out.extend(live_nats.map(|n| ("nat-gateway", n.id.clone())));
        out.extend(
            self.addresses
                .iter()
                .map(|a| ("elastic-ip", a.allocation_id.clone())),
        );
        let live_endpoints = self
            .endpoints
            .iter()
            .filter(|e| e.state != EndpointState::Gone);
        out.extend(live_endpoints.map(|e| ("vpc-endpoint", e.id.clone())));
        let live_peerings = self
            .peerings
            .iter()
            .filter(|p| p.state != PeeringState::Gone);
        out.extend(live_peerings.map(|p| ("peering-connection", p.id.clone())));
        out.extend(self.vpcs.iter().map(|v| ("vpc", v.id.clone())));
        out.extend(self.subnets.iter().map(|s| ("subnet", s.id.clone())));
        out.extend(
            self.internet_gateways
                .iter()
                .map(|g| ("internet-gateway", g.id.clone())),
        );
        out.extend(
            self.route_tables
                .iter()
                .map(|t| ("route-table", t.id.clone())),
        );
        out.extend(
            self.security_groups
                .iter()
                .map(|g| ("security-group", g.id.clone())),
        );
        out.extend(self.key_pairs.iter().map(|k| ("key-pair", k.name.clone())));
        out.extend(
            self.iam
                .instance_profile
                .iter()
                .map(|a| ("instance-profile", a.clone())),
        );
        out.extend(self.iam.role.iter().map(|r| ("iam-role", r.clone())));
        out.extend(self.log_group.iter().map(|g| ("log-group", g.name.clone())));
        out.extend(self.own_live_key().map(|k| ("kms-key", k.id.clone())));
        out
    }

    /// The cluster's own key, unless it is scheduled for deletion (then it
    /// is as good as gone: KMS deletes it when the window ends).
    pub fn own_live_key(&self) -> Option<&crate::aws::kms_key::ObservedKey> {
        (self.kms_key.as_ref()).filter(|k| !k.pending_deletion())
    }

    /// The IDs of the cluster's route tables.
    pub fn route_table_ids(&self) -> Vec<String> {
        self.route_tables.iter().map(|t| t.id.clone()).collect()
    }

    /// Whether nothing of the cluster's is left.
    pub fn is_empty(&self) -> bool {
        let own = self.route_table_ids();
        self.vpcs.is_empty()
            && self.subnets.is_empty()
            && self.internet_gateways.is_empty()
            && self.addresses.is_empty()
            && self
                .nat_gateways
                .iter()
                .all(|n| n.state == nat_gateway::NatState::Gone)
            && self.route_tables.is_empty()
            && self.security_groups.is_empty()
            && self.instances.is_empty()
            && self.key_pairs.is_empty()
            && self
                .endpoints
                .iter()
                .all(|e| e.state == EndpointState::Gone)
            && self.peerings.iter().all(|p| p.state == PeeringState::Gone)
            && !(self.peering_routes.iter())
                .any(|r| peering::made_by_operator(r, &own, &self.peerings))
            && self.iam.role.is_none()
            && self.iam.instance_profile.is_none()
            && self.log_group.is_none()
            && self.own_live_key().is_none()
    }
}

/// What one converge pass works from: the clients, the validated spec,
/// what AWS held at its start, and the node groups' user data.
#[derive(Clone, Copy)]
pub struct Pass<'a> {
    pub c: &'a AwsClients,
    pub spec: &'a ValidatedSpec,
    pub observed: &'a Observed,
    pub user_data: &'a BTreeMap<String, UserData>,
    /// Pinned images and a pending refresh, as the object says.
    pub recorded: &'a images::Recorded,
    /// The account's ID, as verified.
    pub account_id: &'a str,
    /// The most instances the pass launches (`node_groups::launch_cap`).
    pub launch_cap: i32,
}

/// What one kind's deletion left, after looking again briefly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deleted {
    /// Nothing of the kind is left.
    All,
    /// AWS is still deleting some, named for the status ("instances to
    /// terminate"); the kinds after it wait.
    Ending(&'static str),
}

/// A managed network, its zones resolved.
pub struct Managed {
    pub cidr: ipnet::Ipv4Net,
    pub zones: Vec<String>,
    pub nat: NatGateways,
    pub internet: bool,
    pub endpoints: Vec<String>,
    pub endpoint_policy: EndpointPolicy,
    pub peering: Vec<PeeringPlan>,
    pub desired_subnets: Vec<subnets::DesiredSubnet>,
    pub nat_zones: Vec<String>,
}

/// The network the spec asks for.
pub enum Layout {
    Managed(Managed),
    Existing {
        vpc_id: String,
        subnet_ids: Vec<String>,
    },
}

impl Layout {
    /// The spec's network, its zones resolved (a zone count from what the
    /// region offers).
    pub async fn of(
        catalog: &Catalog,
        c: &AwsClients,
        spec: &ValidatedSpec,
    ) -> Result<Layout, Error> {
        let (cidr, zones, nat, internet, endpoints, endpoint_policy, peering) = match &spec.network
        {
            NetworkPlan::Existing { vpc_id, subnet_ids } => {
                return Ok(Layout::Existing {
                    vpc_id: vpc_id.clone(),
                    subnet_ids: subnet_ids.clone(),
                })
            }
            NetworkPlan::Managed {
                cidr,
                zones,
                nat,
                internet,
                endpoints,
                endpoint_policy,
                peering,
            } => (
                *cidr,
                zones,
                *nat,
                *internet,
                endpoints,
                *endpoint_policy,
                peering,
            ),
        };
        let zones = match zones {
            Zones::Named(z) => z.clone(),
            Zones::Count(n) => {
                let account = spec.account.to_string();
                let all = catalog.available_zones(c, &account, &spec.region).await?;
                if all.len() < *n {
                    return Err(Error::TooFewZones {
                        wanted: *n,
                        available: all.len(),
                        region: spec.region.clone(),
                    });
                }
                all.into_iter().take(*n).collect()
            }
        };
        Ok(Layout::Managed(Managed {
            cidr,
            desired_subnets: subnets::carve(cidr, &zones, internet).map_err(Error::InvalidSpec)?,
            nat_zones: nat_gateways::nat_zones(nat, &zones),
            zones,
            nat,
            internet,
            endpoints: endpoints.clone(),
            endpoint_policy,
            peering: peering.clone(),
        }))
    }
}

/// What the steps of a converge pass learn, each cell written by one step
/// and read by the steps that need it.
#[derive(Default)]
pub struct Board {
    pub vpc: OnceLock<String>,
    pub dns: OnceLock<()>,
    pub iam: OnceLock<iam::Iam>,
    pub images: OnceLock<BTreeMap<String, String>>,
    /// Key pair name by node group.
    pub keys: OnceLock<BTreeMap<String, String>>,
    pub addresses: OnceLock<BTreeMap<String, String>>,
    pub subnets: OnceLock<Vec<ObservedSubnet>>,
    pub public_ips: OnceLock<()>,
    pub igw: OnceLock<String>,
    pub sg: OnceLock<String>,
    pub nats: OnceLock<BTreeMap<String, (String, NatState)>>,
    pub tables: OnceLock<Vec<route_tables::Table>>,
    pub public_route: OnceLock<()>,
    pub private_routes: OnceLock<bool>,
    pub endpoint_group: OnceLock<String>,
    pub endpoints: OnceLock<endpoints::EndpointsDone>,
    pub peering: OnceLock<peering::PeeringDone>,
    pub peering_routes: OnceLock<()>,
    pub log_group: OnceLock<log_group::LogGroupDone>,
    pub kms_key: OnceLock<kms_key::KeyDone>,
    pub nodes: OnceLock<Vec<NodeGroupStatus>>,
    /// Unhealthy instances replaced, one line each.
    pub replaced: OnceLock<Vec<String>>,
    /// The refresh of the default images the node groups acted on.
    pub image_refresh: OnceLock<Option<String>>,
    /// Instances this pass launched that no describe showed running yet
    /// (still `pending`, or not in a describe at all for AWS's first
    /// seconds): AWS is still starting them.
    pub launching: OnceLock<bool>,
}

/// A cell a step reads: written by a step it needs (else the graph is wrong).
pub fn got<'a, T>(cell: &'a OnceLock<T>, what: &str) -> Result<&'a T, Error> {
    cell.get()
        .ok_or_else(|| Error::Internal(format!("{what} read before the step that learns it ran")))
}

/// Writes a step's cell, once.
pub fn put<T>(cell: &OnceLock<T>, value: T) -> Result<(), Error> {
    cell.set(value)
        .map_err(|_| Error::Internal("a converge step ran twice".into()))
}

/// What every step works from.
pub struct StepInput<'a> {
    pub pass: Pass<'a>,
    pub catalog: &'a Catalog,
    pub layout: &'a Layout,
    /// The network as status knew it before this pass.
    pub known: NetworkStatus,
}

/// What a step's result is: the board cells it wrote, or why not.
pub type StepResult<'a> = BoxFuture<'a, Result<(), Error>>;

/// What a kind's part of a deletion pass comes to.
pub type DeleteResult<'a> = BoxFuture<'a, AwsResult<Deleted>>;

/// A kind's part of a deletion pass: everything of its kind in `Observed`.
pub type DeleteFn = for<'a> fn(&'a AwsClients, &'a OwnershipTags, &'a Observed) -> DeleteResult<'a>;

/// The deletion of a kind whose deletes AWS does at once: nothing of it is
/// left once they are made.
pub fn at_once<'a>(
    deletes: impl std::future::Future<Output = AwsResult<()>> + Send + 'a,
) -> DeleteResult<'a> {
    Box::pin(async move { deletes.await.map(|()| Deleted::All) })
}

/// How a row of `graph::STEPS` runs its step.
#[derive(Clone, Copy)]
pub enum Run {
    /// On any network.
    Any(for<'a> fn(&'a StepInput<'a>, &'a Board) -> StepResult<'a>),
    /// On a managed network; a bring-your-own network has what it makes
    /// already, or does not need it (`vpc::step` checks that network).
    Managed(for<'a> fn(&'a Managed, &'a StepInput<'a>, &'a Board) -> StepResult<'a>),
}

impl Run {
    /// The step, unless the network is one it has nothing to do in.
    pub fn start<'a>(self, input: &'a StepInput<'a>, board: &'a Board) -> Option<StepResult<'a>> {
        match (self, input.layout) {
            (Run::Any(run), _) => Some(run(input, board)),
            (Run::Managed(run), Layout::Managed(m)) => Some(run(m, input, board)),
            (Run::Managed(_), Layout::Existing { .. }) => None,
        }
    }
}

/// How a step of a pass came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ran {
    /// It ran to the end.
    Done,
    /// It had nothing to do, so was not called: off the spec's shape with
    /// nothing of an older spec's to remove, or the part of a
    /// bring-your-own network that is the owner's.
    InPlace,
    /// It failed, or a step it needs did.
    Failed,
}

/// A row's learning: what its step wrote on the board, into the pass's
/// progress (IDs, what it waits for, whether AWS is still making it);
/// whether what the step makes is in place. Called whatever the pass came
/// to: a failed step may have learned something.
pub type LearnFn = fn(&Board, &mut Progress) -> bool;

/// A row's part of the shared wait: the clusters of `scope` that have
/// something of the kind AWS is still making (looking only where `looks`
/// says).
pub type PendingFn = for<'a> fn(&'a AwsClients, Scope<'a>, Looks) -> PendingResult<'a>;

/// The owners of the clusters a row's part of the shared wait found busy.
pub type PendingResult<'a> = BoxFuture<'a, AwsResult<Vec<String>>>;

/// A row's part of the shared wait: when `looked` (the members have the
/// kind), the owners (cluster UIDs) of the items `describe` finds that AWS
/// is still `making`.
pub fn busy<'a, T: 'a>(
    looked: bool,
    describe: impl std::future::Future<Output = AwsResult<Vec<Owned<T>>>> + Send + 'a,
    making: fn(&T) -> bool,
) -> PendingResult<'a> {
    Box::pin(async move {
        if !looked {
            return Ok(vec![]);
        }
        let items = describe.await?;
        let busy = items.into_iter().filter(|(_, item)| making(item));
        Ok(busy.map(|(uid, _)| uid).collect())
    })
}

/// Whether a step off the spec's shape has something of an older spec's
/// to remove (an Elastic IP after NAT was turned off), in what the pass
/// observed or what status knew: it runs only then.
pub type LeftoverFn = fn(&Observed, &NetworkStatus) -> bool;
