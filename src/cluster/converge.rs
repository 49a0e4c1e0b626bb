//! Apply: runs the steps of `graph::STEPS`, each as soon as the steps it
//! needs are done (a dataflow of shared futures), so independent kinds run
//! concurrently and the pass takes as long as its longest chain of
//! dependent calls. Steps hand what they learn to the steps after them on a
//! board; what was learned goes into `Progress` even when another step
//! fails.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

use futures::future::{join_all, BoxFuture, FutureExt, Shared};
use ipnet::Ipv4Net;

use super::catalog::Catalog;
use super::graph::{self, Shape, Step, STEPS};
use super::kinds::endpoints::{self, EndpointsDone, Placement};
use super::kinds::iam::{self, Iam};
use super::kinds::images;
use super::kinds::nat_gateways::{self, nat_zones};
use super::kinds::node_groups::{self, NodeNetwork};
use super::kinds::peering::{self, PeeringDone};
use super::kinds::route_tables::{self, Table};
use super::kinds::subnets::{self, DesiredSubnet};
use super::kinds::{internet_gateway, key_pairs, security_group, vpc, Pass};
use super::spec::{NetworkPlan, PeeringPlan, ValidatedSpec, Zones};
use super::status::Progress;
use crate::api::compute_cluster::NodeGroupStatus;
use crate::api::conditions::reason;
use crate::api::{EndpointPolicy, NatGateways};
use crate::aws::endpoint::is_gateway;
use crate::aws::nat_gateway::NatState;
use crate::aws::subnet::ObservedSubnet;
use crate::aws::AwsClients;
use crate::Error;

/// A managed network, its zones resolved.
struct Managed {
    cidr: Ipv4Net,
    zones: Vec<String>,
    nat: NatGateways,
    internet: bool,
    endpoints: Vec<String>,
    endpoint_policy: EndpointPolicy,
    peering: Vec<PeeringPlan>,
    desired_subnets: Vec<DesiredSubnet>,
    nat_zones: Vec<String>,
}

/// The network the spec asks for.
enum Layout {
    Managed(Managed),
    Existing {
        vpc_id: String,
        subnet_ids: Vec<String>,
    },
}

async fn layout(catalog: &Catalog, c: &AwsClients, spec: &ValidatedSpec) -> Result<Layout, Error> {
    let (cidr, zones, nat, internet, endpoints, endpoint_policy, peering) = match &spec.network {
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
        nat_zones: nat_zones(nat, &zones),
        zones,
        nat,
        internet,
        endpoints: endpoints.clone(),
        endpoint_policy,
        peering: peering.clone(),
    }))
}

/// What the steps learn, each cell written by one step and read by the
/// steps that need it.
#[derive(Default)]
struct Board {
    vpc: OnceLock<String>,
    dns: OnceLock<()>,
    iam: OnceLock<Iam>,
    images: OnceLock<BTreeMap<String, String>>,
    /// Key pair name by node group.
    keys: OnceLock<BTreeMap<String, String>>,
    addresses: OnceLock<BTreeMap<String, String>>,
    subnets: OnceLock<Vec<ObservedSubnet>>,
    public_ips: OnceLock<()>,
    igw: OnceLock<String>,
    sg: OnceLock<String>,
    nats: OnceLock<BTreeMap<String, (String, NatState)>>,
    tables: OnceLock<Vec<Table>>,
    public_route: OnceLock<()>,
    private_routes: OnceLock<bool>,
    endpoint_group: OnceLock<String>,
    endpoints: OnceLock<EndpointsDone>,
    peering: OnceLock<PeeringDone>,
    peering_routes: OnceLock<()>,
    nodes: OnceLock<Vec<NodeGroupStatus>>,
    /// Unhealthy instances replaced, one line each.
    replaced: OnceLock<Vec<String>>,
}

/// A cell a step reads: written by a step it needs (else the graph is wrong).
fn got<'a, T>(cell: &'a OnceLock<T>, what: &str) -> Result<&'a T, Error> {
    cell.get()
        .ok_or_else(|| Error::Internal(format!("{what} read before the step that learns it ran")))
}

fn put<T>(cell: &OnceLock<T>, value: T) -> Result<(), Error> {
    cell.set(value)
        .map_err(|_| Error::Internal("a converge step ran twice".into()))
}

/// What every step works from.
struct StepInput<'a> {
    pass: Pass<'a>,
    catalog: &'a Catalog,
    layout: &'a Layout,
    /// The VPC, NAT gateways and endpoints status knew before this pass.
    known_vpc: Option<String>,
    known_nats: Vec<String>,
    known_endpoints: Vec<String>,
}

/// Brings AWS to `spec`. `Ok` when every step ran (readiness is in `progress`).
pub async fn converge(
    catalog: &Catalog,
    pass: Pass<'_>,
    progress: &mut Progress,
) -> Result<(), Error> {
    let layout = layout(catalog, pass.c, pass.spec).await?;
    let input = StepInput {
        pass,
        catalog,
        layout: &layout,
        known_vpc: progress.network.vpc_id.clone(),
        known_nats: progress.network.nat_gateway_ids.clone(),
        known_endpoints: progress.network.endpoint_ids.clone(),
    };
    let board = Board::default();
    let failure = run_steps(&input, &board).await;
    learn(&board, pass.recorded, progress);
    failure.map_or(Ok(()), Err)
}

/// Starts every step at once, each waiting for the steps it needs; a
/// failed step records its error and the steps waiting on it stop, the
/// others run to the end. Returns the first error.
async fn run_steps(input: &StepInput<'_>, board: &Board) -> Option<Error> {
    let failure: Mutex<Option<Error>> = Mutex::new(None);
    let shape = shape(input.pass.spec);
    let mut done: BTreeMap<Step, Shared<BoxFuture<'_, bool>>> = BTreeMap::new();
    for def in STEPS {
        let needs: Vec<_> = graph::needs(def, shape)
            .filter_map(|s| done.get(&s).cloned())
            .collect();
        let failure = &failure;
        let step = async move {
            for need in needs {
                if !need.await {
                    return false;
                }
            }
            match run_step(def.step, input, board).await {
                Ok(()) => true,
                Err(e) => {
                    let mut slot = failure.lock().unwrap_or_else(|e| e.into_inner());
                    slot.get_or_insert(e);
                    false
                }
            }
        };
        done.insert(def.step, step.boxed().shared());
    }
    join_all(done.into_values()).await;
    failure.into_inner().unwrap_or_else(|e| e.into_inner())
}

/// What of the graph `spec` uses.
pub fn shape(spec: &ValidatedSpec) -> Shape {
    let public_nodes = spec
        .node_groups
        .iter()
        .any(|g| node_groups::wants_public(g));
    match &spec.network {
        NetworkPlan::Managed {
            nat,
            internet,
            endpoints,
            peering,
            ..
        } => Shape {
            public_nodes,
            internet: *internet,
            nat: *nat != NatGateways::None,
            endpoints: !endpoints.is_empty(),
            peering: !peering.is_empty(),
        },
        NetworkPlan::Existing { .. } => Shape {
            public_nodes,
            internet: true,
            nat: false,
            endpoints: false,
            peering: false,
        },
    }
}

async fn run_step(step: Step, input: &StepInput<'_>, b: &Board) -> Result<(), Error> {
    let p = input.pass;
    match (step, input.layout) {
        (Step::Iam, _) => put(&b.iam, iam::ensure(p).await?),
        (Step::Images, _) => put(&b.images, images::ensure(p, input.catalog).await?),
        (Step::KeyPairs, _) => put(&b.keys, key_pairs::ensure(p).await?),
        (Step::SecurityGroup, _) => put(
            &b.sg,
            security_group::ensure(p, got(&b.vpc, "the VPC")?).await?,
        ),
        (Step::NodeGroups, Layout::Managed(m))
            if !m.internet && b.endpoints.get().is_some_and(|e| !e.available) =>
        {
            // Nodes without internet reach AWS through the endpoints alone.
            Ok(())
        }
        (Step::NodeGroups, _) => {
            let network = NodeNetwork {
                vpc_id: got(&b.vpc, "the VPC")?,
                subnets: got(&b.subnets, "the subnets")?,
                security_group: got(&b.sg, "the security group")?,
                iam: got(&b.iam, "the instance profile")?,
                images: got(&b.images, "the images")?,
                key_names: got(&b.keys, "the key pairs")?,
            };
            let done = node_groups::ensure(p, input.catalog, &network).await?;
            put(&b.nodes, done.statuses)?;
            put(&b.replaced, done.replaced)?;
            // AWS's state, not the user's: retried, the statuses kept.
            if done.shortfalls.is_empty() {
                Ok(())
            } else {
                Err(Error::InsufficientCapacity {
                    groups: done.shortfalls,
                })
            }
        }
        (Step::Vpc, Layout::Existing { .. }) => existing_network(input, b).await,
        // What an existing network has already, or does not need.
        (_, Layout::Existing { .. }) => Ok(()),
        (step, Layout::Managed(network)) => network_step(step, network, input, b).await,
    }
}

/// The steps that build a managed network.
async fn network_step(
    step: Step,
    m: &Managed,
    input: &StepInput<'_>,
    b: &Board,
) -> Result<(), Error> {
    let p = input.pass;
    match step {
        Step::Vpc => put(&b.vpc, vpc::ensure(p, &m.cidr.to_string()).await?),
        Step::VpcDns => {
            vpc::ensure_dns(p, got(&b.vpc, "the VPC")?, input.known_vpc.as_deref()).await?;
            put(&b.dns, ())
        }
        Step::Addresses => put(
            &b.addresses,
            nat_gateways::ensure_addresses(p, &m.nat_zones).await?,
        ),
        Step::Subnets => {
            let vpc_id = got(&b.vpc, "the VPC")?;
            put(
                &b.subnets,
                subnets::ensure(p, vpc_id, &m.desired_subnets).await?,
            )
        }
        Step::PublicIps => {
            subnets::ensure_public_ips(p, got(&b.subnets, "the subnets")?).await?;
            put(&b.public_ips, ())
        }
        // Without internet: no gateway, so no route to it.
        Step::InternetGateway if !m.internet => Ok(()),
        Step::PublicRoute if !m.internet => put(&b.public_route, ()),
        Step::InternetGateway => put(
            &b.igw,
            internet_gateway::ensure(p, got(&b.vpc, "the VPC")?).await?,
        ),
        Step::EndpointGroup | Step::Endpoints => endpoints_step(step, m, input, b).await,
        Step::Peering | Step::PeeringRoutes => peering_step(step, m, input, b).await,
        Step::NatGateways => put(&b.nats, nat_gateways_step(m, input, b).await?),
        Step::RouteTables | Step::PrivateRoutes => route_step(step, m, input, b).await,
        Step::PublicRoute => route_step(step, m, input, b).await,
        Step::Iam | Step::Images | Step::KeyPairs | Step::SecurityGroup | Step::NodeGroups => {
            Err(Error::Internal(format!("{step:?} is not a network step")))
        }
    }
}

/// The VPC endpoints and their security group.
async fn endpoints_step(
    step: Step,
    m: &Managed,
    input: &StepInput<'_>,
    b: &Board,
) -> Result<(), Error> {
    let p = input.pass;
    let vpc_id = got(&b.vpc, "the VPC")?;
    let interface = m.endpoints.iter().any(|s| !is_gateway(s));
    match step {
        Step::EndpointGroup if !interface => put(&b.endpoint_group, String::new()),
        Step::EndpointGroup => put(
            &b.endpoint_group,
            endpoints::ensure_group(p, vpc_id, &m.cidr.to_string()).await?,
        ),
        _ => {
            let tables = got(&b.tables, "the route tables")?;
            let subnets = got(&b.subnets, "the subnets")?;
            let at = Placement {
                route_table_ids: tables.iter().map(|t| t.id.clone()).collect(),
                private_subnet_ids: subnets
                    .iter()
                    .filter(|s| !s.public)
                    .map(|s| s.id.clone())
                    .collect(),
                security_group_id: got(&b.endpoint_group, "the endpoints' group")?.clone(),
            };
            let (services, policy) = (&m.endpoints, m.endpoint_policy);
            let done = endpoints::ensure(p, vpc_id, services, policy, &at, &input.known_endpoints);
            put(&b.endpoints, done.await?)
        }
    }
}

/// The peering connections and the routes to them.
async fn peering_step(
    step: Step,
    m: &Managed,
    input: &StepInput<'_>,
    b: &Board,
) -> Result<(), Error> {
    let p = input.pass;
    match step {
        Step::Peering => {
            let vpc_id = got(&b.vpc, "the VPC")?;
            put(&b.peering, peering::ensure(p, vpc_id, &m.peering).await?)
        }
        _ => {
            let done = got(&b.peering, "the peering connections")?;
            let tables: Vec<String> = got(&b.tables, "the route tables")?
                .iter()
                .map(|t| t.id.clone())
                .collect();
            peering::ensure_routes(p, done, &tables, m.cidr).await?;
            put(&b.peering_routes, ())
        }
    }
}

/// The NAT gateways, in the public subnets, with the Elastic IPs.
async fn nat_gateways_step(
    m: &Managed,
    input: &StepInput<'_>,
    b: &Board,
) -> Result<BTreeMap<String, (String, NatState)>, Error> {
    let subnets = got(&b.subnets, "the subnets")?;
    let public: Vec<&ObservedSubnet> = subnets.iter().filter(|s| s.public).collect();
    let addresses = got(&b.addresses, "the Elastic IPs")?;
    nat_gateways::ensure_gateways(
        input.pass,
        &m.nat_zones,
        &public,
        addresses,
        &input.known_nats,
    )
    .await
}

/// The route tables, the public route through the internet gateway, and
/// the private routes through the NAT gateways.
async fn route_step(
    step: Step,
    m: &Managed,
    input: &StepInput<'_>,
    b: &Board,
) -> Result<(), Error> {
    let p = input.pass;
    match step {
        Step::RouteTables => {
            let subnets = got(&b.subnets, "the subnets")?;
            let wanted = route_tables::wanted(m.nat, &m.zones, subnets, m.internet);
            let tables = route_tables::ensure_tables(p, got(&b.vpc, "the VPC")?, &wanted).await?;
            put(&b.tables, tables)
        }
        Step::PublicRoute => {
            let (tables, igw) = (
                got(&b.tables, "the route tables")?,
                got(&b.igw, "the gateway")?,
            );
            route_tables::ensure_public_route(p, tables, igw).await?;
            put(&b.public_route, ())
        }
        Step::PrivateRoutes => {
            let (tables, nats) = (
                got(&b.tables, "the route tables")?,
                got(&b.nats, "the NATs")?,
            );
            put(
                &b.private_routes,
                route_tables::ensure_private_routes(p, tables, nats).await?,
            )
        }
        _ => Err(Error::Internal(format!("{step:?} is not a route step"))),
    }
}

/// A bring-your-own network: checked, never changed; its subnets are what
/// the nodes launch into.
async fn existing_network(input: &StepInput<'_>, b: &Board) -> Result<(), Error> {
    let Layout::Existing { vpc_id, subnet_ids } = input.layout else {
        return Err(Error::Internal(
            "an existing network step on a managed network".into(),
        ));
    };
    put(
        &b.subnets,
        vpc::existing(input.pass, vpc_id, subnet_ids).await?,
    )?;
    in_place_already(b)?;
    put(&b.vpc, vpc_id.clone())
}

/// What a bring-your-own network has already, or does not need: every
/// network step after its subnets, in place.
fn in_place_already(b: &Board) -> Result<(), Error> {
    put(&b.dns, ())?;
    put(&b.nats, BTreeMap::new())?;
    put(&b.tables, vec![])?;
    put(&b.public_route, ())?;
    put(&b.private_routes, true)?;
    // No endpoint or peering connection asked for: none to wait for.
    put(
        &b.endpoints,
        EndpointsDone {
            ids: vec![],
            available: true,
        },
    )?;
    put(&b.peering, PeeringDone::default())?;
    put(&b.peering_routes, ())
}

/// What the pass learned of the endpoints and peering; whether they are
/// in place (every endpoint available, every connection active and routed).
fn learn_reach(b: &Board, progress: &mut Progress) -> bool {
    let endpoints = b.endpoints.get();
    if let Some(e) = endpoints {
        progress.network.endpoint_ids = e.ids.clone();
        if !e.available {
            progress
                .waiting
                .push("VPC endpoints to become available".into());
            progress.aws_creating = true;
        }
    }
    let peering = b.peering.get();
    if let Some(done) = peering {
        progress.network.peering_connection_ids =
            done.connections.iter().map(|c| c.id.clone()).collect();
        progress.peering_pending = done.pending.clone();
        if !done.active() && done.pending.is_empty() {
            progress
                .waiting
                .push("peering connections to become active".into());
            progress.aws_creating = true;
        }
    }
    endpoints.is_some_and(|e| e.available)
        && peering.is_some_and(|d| d.active())
        && b.peering_routes.get().is_some()
}

/// What the pass learned, whatever failed.
fn learn(b: &Board, recorded: &images::Recorded, progress: &mut Progress) {
    if let Some(iam) = b.iam.get() {
        progress.set_iam(iam);
    }
    let network = &mut progress.network;
    if let (Some(id), Some(())) = (b.vpc.get(), b.dns.get()) {
        network.vpc_id = Some(id.clone());
    }
    if let Some(subnets) = b.subnets.get() {
        network.subnets = subnets::status(subnets);
    }
    if let Some(id) = b.igw.get() {
        network.internet_gateway_id = Some(id.clone());
    }
    if let Some(id) = b.sg.get() {
        network.security_group_id = Some(id.clone());
    }
    let mut nats_ready = false;
    if let Some(nats) = b.nats.get() {
        network.nat_gateway_ids = nats.values().map(|(id, _)| id.clone()).collect();
        nats_ready = nats
            .values()
            .all(|(_, state)| *state == NatState::Available);
        if !nats_ready {
            progress
                .waiting
                .push("NAT gateways to become available".into());
            progress.aws_creating |= nats.values().any(|(_, s)| *s == NatState::Pending);
        }
    }
    if let Some(tables) = b.tables.get() {
        progress.network.route_table_ids = tables.iter().map(|t| t.id.clone()).collect();
    }
    let reach = learn_reach(b, progress);
    progress.network_ready = reach
        && nats_ready
        && b.public_route.get().is_some()
        && b.private_routes.get() == Some(&true);
    if let Some(nodes) = b.nodes.get() {
        *progress.node_groups_mut() = nodes.clone();
        // Launched and not running yet.
        progress.aws_creating |= nodes
            .iter()
            .any(|g| g.instances.len() > usize::try_from(g.running).unwrap_or(0));
        let replaced = b.replaced.get().into_iter().flatten();
        progress
            .notes
            .extend(replaced.map(|n| (reason::UNHEALTHY_INSTANCE, n.clone())));
        // Acted on with the pins it gave, written in the same status.
        if let Some(value) = &recorded.refresh {
            progress.image_refresh = Some(value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{InstanceStatus, Market};

    /// A group of `launched` instances, `running` of them running.
    fn group(launched: usize, running: i32) -> NodeGroupStatus {
        NodeGroupStatus {
            name: "workers".into(),
            desired: 2,
            running,
            instances: (0..launched)
                .map(|i| InstanceStatus {
                    id: format!("i-{i}"),
                    instance_type: "t3.large".into(),
                    zone: "us-east-1a".into(),
                    capacity_type: Market::OnDemand,
                })
                .collect(),
            ..Default::default()
        }
    }

    fn nats(state: NatState) -> BTreeMap<String, (String, NatState)> {
        BTreeMap::from([("us-east-1a".into(), ("nat-1".into(), state))])
    }

    /// What `learn` makes of a board, in the terms status shows.
    #[derive(Debug, PartialEq)]
    struct Learned {
        vpc: bool,
        network_ready: bool,
        aws_creating: bool,
        waiting: usize,
        nodes: bool,
        image_refresh: bool,
    }

    #[test]
    fn what_a_pass_learns_from_its_steps() {
        let learned = |fill: &dyn Fn(&Board), refresh: Option<&str>| {
            let board = Board::default();
            fill(&board);
            let recorded = images::Recorded {
                refresh: refresh.map(str::to_string),
                ..Default::default()
            };
            let mut progress = Progress::default();
            learn(&board, &recorded, &mut progress);
            Learned {
                vpc: progress.network.vpc_id.is_some(),
                network_ready: progress.network_ready,
                aws_creating: progress.aws_creating,
                waiting: progress.waiting.len(),
                nodes: progress.node_groups().is_some(),
                image_refresh: progress.image_refresh.is_some(),
            }
        };
        let routed = |b: &Board, state: NatState, private: bool| {
            let _ = b.nats.set(nats(state));
            let _ = b.public_route.set(());
            let _ = b.private_routes.set(private);
            let _ = b.endpoints.set(EndpointsDone {
                ids: vec![],
                available: true,
            });
            let _ = b.peering.set(PeeringDone::default());
            let _ = b.peering_routes.set(());
        };
        let nothing = Learned {
            vpc: false,
            network_ready: false,
            aws_creating: false,
            waiting: 0,
            nodes: false,
            image_refresh: false,
        };
        type Fill = Box<dyn Fn(&Board)>;
        let rows: Vec<(&str, Fill, Option<&str>, Learned)> = vec![
            (
                "a pass that learned nothing",
                Box::new(|_| {}),
                None,
                Learned { ..nothing },
            ),
            (
                "a VPC whose DNS step did not run is not recorded",
                Box::new(|b| {
                    let _ = b.vpc.set("vpc-1".into());
                }),
                None,
                Learned { ..nothing },
            ),
            (
                "a VPC with its DNS settings",
                Box::new(|b| {
                    let _ = b.vpc.set("vpc-1".into());
                    let _ = b.dns.set(());
                }),
                None,
                Learned {
                    vpc: true,
                    ..nothing
                },
            ),
            (
                "a NAT gateway pending: AWS is creating, the network waits",
                Box::new(move |b| routed(b, NatState::Pending, true)),
                None,
                Learned {
                    aws_creating: true,
                    waiting: 1,
                    ..nothing
                },
            ),
            (
                "every route in place through an available NAT gateway",
                Box::new(move |b| routed(b, NatState::Available, true)),
                None,
                Learned {
                    network_ready: true,
                    ..nothing
                },
            ),
            (
                "private routes not all in place",
                Box::new(move |b| routed(b, NatState::Available, false)),
                None,
                Learned { ..nothing },
            ),
            (
                "instances launched and not running yet",
                Box::new(|b| {
                    let _ = b.nodes.set(vec![group(2, 1)]);
                }),
                None,
                Learned {
                    aws_creating: true,
                    nodes: true,
                    ..nothing
                },
            ),
            (
                "every instance running; the refresh asked for is acted on",
                Box::new(|b| {
                    let _ = b.nodes.set(vec![group(2, 2)]);
                }),
                Some("1"),
                Learned {
                    nodes: true,
                    image_refresh: true,
                    ..nothing
                },
            ),
            (
                "a bring-your-own network: ready with its subnets alone",
                Box::new(|b| {
                    let _ = in_place_already(b);
                }),
                None,
                Learned {
                    network_ready: true,
                    ..nothing
                },
            ),
            (
                "endpoints still pending: AWS is creating, the network waits",
                Box::new(move |b| {
                    let _ = b.endpoints.set(EndpointsDone {
                        ids: vec!["vpce-1".into()],
                        available: false,
                    });
                    routed(b, NatState::Available, true);
                }),
                None,
                Learned {
                    aws_creating: true,
                    waiting: 1,
                    ..nothing
                },
            ),
            (
                "no node step ran: a refresh is not acted on",
                Box::new(|_| {}),
                Some("1"),
                Learned { ..nothing },
            ),
        ];
        for (why, fill, refresh, want) in rows {
            assert_eq!(learned(&*fill, refresh), want, "{why}");
        }
    }
}
