//! One module per AWS kind, each holding that kind's whole life: what of it
//! is observed, the pure decision (`plan`, table-tested with no server), the
//! calls that carry the decision out (`ensure`) and its part of deletion
//! (`delete`). `crate::aws` underneath is thin SDK calls only.

pub mod endpoints;
pub mod iam;
pub mod images;
pub mod internet_gateway;
pub mod key_pairs;
pub mod nat_gateways;
pub mod node_groups;
pub mod offerings;
pub mod peering;
pub mod route_tables;
pub mod security_group;
pub mod subnets;
pub mod vpc;

use std::collections::BTreeMap;

use crate::aws::endpoint::{self as endpoint_api, EndpointState};
use crate::aws::peering::{self as peering_api, PeeringState};
use crate::aws::tags::{Owned, Scope};
use crate::aws::{
    instance_profile, instances, internet_gateway as igw_api, key_pair, nat_gateway, route_table,
    security_group as sg_api, subnet, vpc as vpc_api, AwsClients, AwsResult, OwnershipTags,
};

use super::spec::ValidatedSpec;
use super::user_data::UserData;

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
}

impl Looks {
    pub const NONE: Looks = Looks {
        key_pairs: false,
        role_policies: false,
        endpoints: false,
        peering: false,
    };

    pub const ALL: Looks = Looks {
        key_pairs: true,
        role_policies: true,
        endpoints: true,
        peering: true,
    };

    /// What either looks at.
    pub fn or(self, other: Looks) -> Looks {
        Looks {
            key_pairs: self.key_pairs || other.key_pairs,
            role_policies: self.role_policies || other.role_policies,
            endpoints: self.endpoints || other.endpoints,
            peering: self.peering || other.peering,
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
        let (mut by_owner, iam) = tokio::try_join!(
            Self::describe_ec2(c, Scope::Cluster(owner), looks),
            instance_profile::describe(c, owner, &name, looks.role_policies),
        )?;
        let mut observed = by_owner.remove(&owner.uid).unwrap_or_default();
        observed.iam = iam;
        Ok(observed)
    }

    /// The EC2 kinds of `scope` by owning cluster's UID (IAM left empty):
    /// one tag-filtered call per kind (and its pages), at once.
    pub async fn describe_ec2(
        c: &AwsClients,
        scope: Scope<'_>,
        looks: Looks,
    ) -> AwsResult<BTreeMap<String, Observed>> {
        async fn when<T>(
            yes: bool,
            f: impl std::future::Future<Output = AwsResult<Vec<T>>>,
        ) -> AwsResult<Vec<T>> {
            match yes {
                true => f.await,
                false => Ok(vec![]),
            }
        }
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
            async {
                match key_pairs {
                    true => key_pair::describe(c, scope).await,
                    false => Ok(vec![]),
                }
            },
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
        out
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
