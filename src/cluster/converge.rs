//! Apply: one `ensure_<kind>` per kind, each started as soon as the kinds
//! it depends on exist (a dataflow of shared futures), so independent kinds
//! run concurrently and the pass takes as long as its longest chain of
//! dependent calls. The IDs learned are recorded in `Progress` even when
//! another kind fails.

use std::collections::BTreeMap;

use std::future::Future;
use std::sync::Mutex;

use futures::future::{try_join_all, FutureExt};

use super::plan::{self, NetworkPlan, ValidatedSpec, Zones};
use super::status::Progress;
use crate::api::compute_cluster::{NodeGroupStatus, SubnetStatus};
use crate::aws::instances::Launch;
use crate::aws::nat_gateway::NatState;
use crate::aws::route_table::ObservedRouteTable;
use crate::aws::subnet::ObservedSubnet;
use crate::aws::{
    instance_profile, instances, internet_gateway, nat_gateway, route_table, security_group,
    subnet, vpc, AwsClients, Observed,
};
use crate::context::Context;
use crate::Error;

/// Brings AWS to `spec`. `Ok` when every step ran (readiness is in `progress`).
pub async fn converge(
    ctx: &Context,
    c: &AwsClients,
    spec: &ValidatedSpec,
    observed: &Observed,
    progress: &mut Progress,
) -> Result<(), Error> {
    match &spec.network {
        NetworkPlan::Managed { cidr, zones, nat } => {
            let zones = match zones {
                Zones::Named(z) => z.clone(),
                Zones::Count(n) => {
                    let account = format!("{}/{}", spec.account.0, spec.account.1);
                    let all = ctx.available_zones(c, &account, &spec.region).await?;
                    if all.len() < *n {
                        return Err(Error::InvalidSpec(format!(
                            "spec.network.azCount is {n} but region {} has {} available zones",
                            spec.region,
                            all.len()
                        )));
                    }
                    all.into_iter().take(*n).collect()
                }
            };
            let desired_subnets = plan::carve_subnets(*cidr, &zones).map_err(Error::InvalidSpec)?;
            let nat_zones = plan::nat_zones(*nat, &zones);

            // A dataflow, not layers: each kind starts as soon as what it
            // needs exists, so the time to converge follows the longest chain
            // of dependent calls. A failed step records its error and the
            // steps waiting on it stop; the others run to the end.
            let failure: Mutex<Option<Error>> = Mutex::new(None);
            let (failure, cidr_text) = (&failure, cidr.to_string());
            let (desired_subnets, nat_zones) = (&desired_subnets, &nat_zones);
            let known_nats = progress.network.nat_gateway_ids.clone();
            let known_nats = &known_nats;
            let known_vpc = progress.network.vpc_id.clone();

            let vpc = step(failure, ensure_vpc(c, spec, observed, &cidr_text)).shared();
            // DNS attributes for a VPC the status does not know yet: one
            // created now, or adopted after a crash that may have come
            // before they were set. Status learns the VPC once they are.
            let vpc_dns = after(failure, vpc.clone(), move |vpc_id| async move {
                if known_vpc.as_deref() != Some(vpc_id.as_str()) {
                    vpc::enable_dns(c, &vpc_id).await?;
                }
                Ok(())
            })
            .shared();
            let iam = step(failure, ensure_iam(c, spec, observed)).shared();
            let images = step(failure, default_images(ctx, c, spec, observed)).shared();
            let addresses = step(failure, ensure_addresses(c, spec, observed, nat_zones)).shared();
            let subnets = after(failure, vpc.clone(), move |vpc_id| async move {
                ensure_subnets(c, spec, observed, &vpc_id, desired_subnets).await
            })
            .shared();
            let igw = after(failure, vpc.clone(), move |vpc_id| async move {
                ensure_internet_gateway(c, spec, observed, &vpc_id).await
            })
            .shared();
            let sg = after(failure, vpc.clone(), move |vpc_id| async move {
                ensure_security_group(c, spec, observed, &vpc_id).await
            })
            .shared();
            let public_ips = after(failure, subnets.clone(), move |subnets| async move {
                ensure_public_ips(c, &subnets).await
            })
            .shared();
            let nats = after(
                failure,
                futures::future::try_join(subnets.clone(), addresses.clone()),
                move |(subnets, addresses)| async move {
                    let public: Vec<&ObservedSubnet> =
                        subnets.iter().filter(|s| s.public).collect();
                    ensure_nat_gateways(
                        c, spec, observed, nat_zones, &public, &addresses, known_nats,
                    )
                    .await
                },
            )
            .shared();
            let public_rt = after(
                failure,
                futures::future::try_join(vpc.clone(), subnets.clone()),
                |(vpc_id, subnets)| {
                    let igw = igw.clone();
                    async move {
                        let public: Vec<&ObservedSubnet> =
                            subnets.iter().filter(|s| s.public).collect();
                        ensure_public_route_table(c, spec, observed, &vpc_id, igw, &public).await
                    }
                },
            );
            let private_tables = plan::private_route_tables(*nat, &zones);
            let private_rts = after(
                failure,
                futures::future::try_join(vpc.clone(), subnets.clone()),
                |(vpc_id, subnets)| {
                    let (tables, nats) = (&private_tables, nats.clone());
                    async move {
                        ensure_private_route_tables(
                            c, spec, observed, &vpc_id, tables, &subnets, nats,
                        )
                        .await
                    }
                },
            );
            let node_groups = progress.node_groups_mut();
            // Instances need the network's attributes set before they start
            // (public IPs only when a group launches into public subnets).
            let any_public = spec.node_groups.iter().any(plan::wants_public);
            let public_ips_for_nodes = {
                let public_ips = public_ips.clone();
                async move {
                    if any_public {
                        public_ips.await
                    } else {
                        Ok(())
                    }
                }
            };
            let ready_for_nodes = futures::future::try_join3(
                futures::future::try_join3(subnets.clone(), sg.clone(), iam.clone()),
                futures::future::try_join(vpc_dns.clone(), public_ips_for_nodes),
                images.clone(),
            );
            let nodes = after(
                failure,
                ready_for_nodes,
                move |((subnets, sg, iam), _, images)| async move {
                    let network = NodeNetwork {
                        subnets: &subnets,
                        security_group: &sg,
                        iam: &iam,
                        images: &images,
                    };
                    ensure_node_groups(ctx, c, spec, observed, &network, node_groups).await
                },
            );
            // Every step is polled from the start: a shared future runs only
            // when polled, and one whose dependent waits on something else
            // first (the internet gateway behind the route table) would
            // otherwise start late, or never (NAT gateways with no NAT route).
            let (public_rt, private_rts, _, nats, ..) = tokio::join!(
                public_rt,
                private_rts,
                nodes,
                nats.clone(),
                igw.clone(),
                sg.clone(),
                iam.clone(),
                addresses.clone(),
                vpc_dns.clone(),
                public_ips.clone(),
                images.clone(),
            );

            // What was learned, whatever failed.
            if let (Some(Ok(id)), Some(Ok(()))) = (vpc.peek(), vpc_dns.peek()) {
                progress.network.vpc_id = Some(id.clone());
            }
            if let Some(Ok(iam)) = iam.peek() {
                progress.set_iam(iam);
            }
            if let Some(Ok(subnets)) = subnets.peek() {
                progress.network.subnets = subnet_status(subnets);
            }
            if let Some(Ok(id)) = igw.peek() {
                progress.network.internet_gateway_id = Some(id.clone());
            }
            if let Some(Ok(id)) = sg.peek() {
                progress.network.security_group_id = Some(id.clone());
            }
            let mut nats_ready = false;
            if let Ok(nats) = &nats {
                progress.network.nat_gateway_ids =
                    nats.values().map(|(id, _)| id.clone()).collect();
                nats_ready = nats
                    .values()
                    .all(|(_, state)| *state == NatState::Available);
                if !nats_ready {
                    progress
                        .waiting
                        .push("NAT gateways to become available".into());
                }
            }
            if let (Ok(public_rt), Ok((private_ids, routes_done))) = (public_rt, private_rts) {
                progress.network.route_table_ids =
                    std::iter::once(public_rt).chain(private_ids).collect();
                progress.network_ready = nats_ready && routes_done;
            }
            let first_failure = lock(failure).take();
            if let Some(e) = first_failure {
                return Err(e);
            }
        }
        NetworkPlan::Existing { vpc_id, subnet_ids } => {
            let existing = match vpc::verify_existing(c, vpc_id, subnet_ids).await? {
                Ok(found) => found,
                Err(message) => return Err(Error::InvalidSpec(message)),
            };
            let subnets: Vec<ObservedSubnet> = existing
                .into_iter()
                .map(|(id, zone, public)| ObservedSubnet {
                    id,
                    vpc_id: vpc_id.clone(),
                    zone,
                    cidr: String::new(),
                    public,
                    // Not ours to change: as the owner set it.
                    map_public_ip: true,
                })
                .collect();
            progress.network.vpc_id = Some(vpc_id.clone());
            progress.network.subnets = subnet_status(&subnets);
            let (iam, sg, images) = tokio::try_join!(
                ensure_iam(c, spec, observed),
                ensure_security_group(c, spec, observed, vpc_id),
                default_images(ctx, c, spec, observed),
            )?;
            progress.set_iam(&iam);
            progress.network.security_group_id = Some(sg.clone());
            let network = NodeNetwork {
                subnets: &subnets,
                security_group: &sg,
                iam: &iam,
                images: &images,
            };
            ensure_node_groups(ctx, c, spec, observed, &network, progress.node_groups_mut())
                .await?;
            progress.network_ready = true;
        }
    }
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Keeps the first error of a converge pass; the step that failed reports `Err(())`.
fn record(failure: &Mutex<Option<Error>>, e: Error) {
    let mut slot = lock(failure);
    if slot.is_none() {
        *slot = Some(e);
    }
}

/// A step with no prerequisite.
async fn step<T>(
    failure: &Mutex<Option<Error>>,
    work: impl Future<Output = Result<T, Error>>,
) -> Result<T, ()> {
    work.await.map_err(|e| record(failure, e))
}

/// Runs `then` on what `needs` yields; nothing when a prerequisite failed
/// (its error is recorded already).
async fn after<I, T, F, Fut>(
    failure: &Mutex<Option<Error>>,
    needs: impl Future<Output = Result<I, ()>>,
    then: F,
) -> Result<T, ()>
where
    F: FnOnce(I) -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let input = needs.await?;
    then(input).await.map_err(|e| record(failure, e))
}

fn subnet_status(subnets: &[ObservedSubnet]) -> Vec<SubnetStatus> {
    subnets
        .iter()
        .map(|s| SubnetStatus {
            id: s.id.clone(),
            zone: s.zone.clone(),
            public: s.public,
            cidr: (!s.cidr.is_empty()).then(|| s.cidr.clone()),
        })
        .collect()
}

async fn ensure_vpc(
    c: &AwsClients,
    spec: &ValidatedSpec,
    observed: &Observed,
    cidr: &str,
) -> Result<String, Error> {
    // Oldest first: IDs sort by creation within a region well enough to be stable.
    let mut ours: Vec<&str> = observed.vpcs.iter().map(|v| v.id.as_str()).collect();
    ours.sort();
    if let Some(id) = ours.first() {
        if ours.len() > 1 {
            tracing::warn!(vpcs = ?ours, "more than one VPC carries this cluster's tags; using the first");
        }
        return Ok((*id).to_string());
    }
    Ok(vpc::create(c, &spec.owner, cidr).await?)
}

/// The IAM role and instance profile, with the role in the profile.
#[derive(Clone, Debug)]
pub struct Iam {
    pub role_name: String,
    pub profile_arn: String,
}

async fn ensure_iam(
    c: &AwsClients,
    spec: &ValidatedSpec,
    observed: &Observed,
) -> Result<Iam, Error> {
    let o = &observed.iam;
    if o.role_not_ours || o.instance_profile_not_ours {
        return Err(Error::InvalidSpec(format!(
            "an IAM role or instance profile named {} exists and is not this cluster's (no matching {} tag)",
            o.name,
            crate::aws::tags::CLUSTER_UID
        )));
    }
    // The role and the profile are independent; the role joins the profile after.
    let role = async {
        if o.role.is_none() {
            instance_profile::create_role(c, &spec.owner, &o.name).await?;
        }
        Ok::<_, Error>(())
    };
    let profile = async {
        Ok::<_, Error>(match &o.instance_profile {
            Some(arn) => arn.clone(),
            None => instance_profile::create_instance_profile(c, &spec.owner, &o.name).await?,
        })
    };
    let ((), arn) = tokio::try_join!(role, profile)?;
    if !o.profile_roles.iter().any(|r| r == &o.name) {
        instance_profile::add_role(c, &o.name).await?;
    }
    Ok(Iam {
        role_name: o.name.clone(),
        profile_arn: arn,
    })
}

/// One Elastic IP per NAT zone: a free one, or the one a live NAT gateway of
/// ours holds. An address still held by a gateway that is gone is not waited
/// for: a new one is allocated and the stale one released when AWS lets go.
async fn ensure_addresses(
    c: &AwsClients,
    spec: &ValidatedSpec,
    observed: &Observed,
    nat_zones: &[String],
) -> Result<BTreeMap<String, String>, Error> {
    let held_by = |states: &[NatState]| -> Vec<&str> {
        observed
            .nat_gateways
            .iter()
            .filter(|n| states.contains(&n.state))
            .flat_map(|n| n.allocation_ids.iter().map(String::as_str))
            .collect()
    };
    let live = held_by(&[NatState::Pending, NatState::Available]);
    let deleting = held_by(&[NatState::Deleting]);
    let mut by_zone = BTreeMap::new();
    let mut missing = Vec::new();
    for zone in nat_zones {
        let in_zone: Vec<_> = observed
            .addresses
            .iter()
            .filter(|a| a.zone.as_deref() == Some(zone.as_str()))
            .collect();
        let usable = in_zone
            .iter()
            .find(|a| live.contains(&a.allocation_id.as_str()))
            .or_else(|| in_zone.iter().find(|a| a.association_id.is_none()));
        match usable {
            Some(a) => {
                by_zone.insert(zone.clone(), a.allocation_id.clone());
            }
            None => missing.push(zone.clone()),
        }
    }
    let created = try_join_all(
        missing
            .iter()
            .map(|z| nat_gateway::allocate_address(c, &spec.owner, z)),
    )
    .await?;
    by_zone.extend(missing.into_iter().zip(created));
    for a in &observed.addresses {
        let chosen = by_zone.values().any(|id| id == &a.allocation_id);
        let held = live.contains(&a.allocation_id.as_str())
            || deleting.contains(&a.allocation_id.as_str());
        if !chosen && !held {
            if let Err(e) = nat_gateway::release_address(c, &a.allocation_id).await {
                tracing::info!(allocation = %a.allocation_id, error = %e, "stale Elastic IP not released yet");
            }
        }
    }
    Ok(by_zone)
}

async fn ensure_subnets(
    c: &AwsClients,
    spec: &ValidatedSpec,
    observed: &Observed,
    vpc_id: &str,
    desired: &[plan::DesiredSubnet],
) -> Result<Vec<ObservedSubnet>, Error> {
    let mut result = Vec::new();
    let mut create = Vec::new();
    for d in desired {
        match observed
            .subnets
            .iter()
            .find(|s| s.vpc_id == vpc_id && s.zone == d.zone && s.public == d.public)
        {
            Some(s) => result.push(s.clone()),
            None => create.push(d),
        }
    }
    let cidrs: Vec<String> = create.iter().map(|d| d.cidr.to_string()).collect();
    let created = try_join_all(
        create
            .iter()
            .zip(&cidrs)
            .map(|(d, cidr)| subnet::create(c, &spec.owner, vpc_id, &d.zone, cidr, d.public)),
    )
    .await?;
    result.extend(created);
    // Order as desired: zone order, public first.
    result.sort_by_key(|s| {
        (
            desired
                .iter()
                .position(|d| d.zone == s.zone && d.public == s.public)
                .unwrap_or(usize::MAX),
            s.id.clone(),
        )
    });
    Ok(result)
}

async fn ensure_internet_gateway(
    c: &AwsClients,
    spec: &ValidatedSpec,
    observed: &Observed,
    vpc_id: &str,
) -> Result<String, Error> {
    let existing = observed
        .internet_gateways
        .iter()
        .find(|g| g.attached_to.iter().any(|v| v == vpc_id))
        .or_else(|| {
            observed
                .internet_gateways
                .iter()
                .find(|g| g.attached_to.is_empty())
        });
    match existing {
        Some(g) if g.attached_to.iter().any(|v| v == vpc_id) => Ok(g.id.clone()),
        Some(g) => {
            internet_gateway::attach(c, &g.id, vpc_id).await?;
            Ok(g.id.clone())
        }
        None => {
            let id = internet_gateway::create(c, &spec.owner).await?;
            internet_gateway::attach(c, &id, vpc_id).await?;
            Ok(id)
        }
    }
}

async fn ensure_security_group(
    c: &AwsClients,
    spec: &ValidatedSpec,
    observed: &Observed,
    vpc_id: &str,
) -> Result<String, Error> {
    let existing = observed.security_groups.iter().find(|g| g.vpc_id == vpc_id);
    let (id, current) = match existing {
        Some(g) => (g.id.clone(), g.ingress.clone()),
        None => (
            security_group::create(c, &spec.owner, vpc_id, &plan::iam_name(&spec.owner)).await?,
            vec![],
        ),
    };
    let desired = plan::desired_permissions(&spec.ingress, &id);
    let (add, remove) = plan::diff_permissions(&desired, &current);
    security_group::authorize(c, &id, &add).await?;
    security_group::revoke(c, &id, &remove).await?;
    Ok(id)
}

/// NAT gateways per zone: `zone → (id, state)`.
async fn ensure_nat_gateways(
    c: &AwsClients,
    spec: &ValidatedSpec,
    observed: &Observed,
    nat_zones: &[String],
    public_subnets: &[&ObservedSubnet],
    addresses: &BTreeMap<String, String>,
    known: &[String],
) -> Result<BTreeMap<String, (String, NatState)>, Error> {
    let mut out = BTreeMap::new();
    let mut create = Vec::new();
    for zone in nat_zones {
        let live = observed.nat_gateways.iter().find(|n| {
            n.zone.as_deref() == Some(zone.as_str())
                && matches!(n.state, NatState::Pending | NatState::Available)
        });
        match live {
            Some(n) => {
                out.insert(zone.clone(), (n.id.clone(), n.state));
            }
            None => create.push(zone.clone()),
        }
    }
    // NAT gateways of zones that no longer need one.
    for n in &observed.nat_gateways {
        let unwanted = n.zone.as_ref().is_none_or(|z| !nat_zones.contains(z));
        if unwanted && matches!(n.state, NatState::Pending | NatState::Available) {
            nat_gateway::delete(c, &n.id).await?;
        }
    }
    let created = try_join_all(create.iter().map(|zone| async move {
        let subnet = public_subnets
            .iter()
            .find(|s| &s.zone == zone)
            .ok_or_else(|| {
                Error::InvalidSpec(format!("no public subnet in {zone} for its NAT gateway"))
            })?;
        let allocation = addresses.get(zone).ok_or_else(|| {
            Error::InvalidSpec(format!("no Elastic IP for the NAT gateway in {zone}"))
        })?;
        // The same inputs, including the gateways known before (status), give
        // the same token: a retry after a crash returns the gateway created
        // then, while replacing one deleted out of band gets a new token.
        let mut h = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(&(&spec.owner.uid, zone, allocation, known), &mut h);
        let token = format!("byoc-nat-{:016x}", std::hash::Hasher::finish(&h));
        let id = nat_gateway::create(c, &spec.owner, zone, &subnet.id, allocation, &token).await?;
        Ok::<_, Error>((zone.clone(), id))
    }))
    .await?;
    let new: Vec<String> = created.iter().map(|(_, id)| id.clone()).collect();
    for (zone, id) in created {
        out.insert(zone, (id, NatState::Pending));
    }
    // Usually a minute or two on AWS; look again shortly in case it is
    // quicker, so the private routes need not wait for the next pass.
    let states = settle(
        || async {
            let now = nat_gateway::describe(c, &spec.owner).await?;
            let states: Vec<(String, NatState)> = now
                .into_iter()
                .filter(|n| new.contains(&n.id))
                .map(|n| (n.id, n.state))
                .collect();
            let all = states
                .iter()
                .filter(|(_, s)| *s == NatState::Available)
                .count()
                == new.len();
            Ok::<_, Error>((states, all))
        },
        !new.is_empty(),
    )
    .await?;
    for (id, state) in states.unwrap_or_default() {
        if let Some(entry) = out.values_mut().find(|(known, _)| *known == id) {
            entry.1 = state;
        }
    }
    Ok(out)
}

/// A route table of ours, the one observed or a new one, with `serves`
/// associated: its ID and the target of its default route, if any.
async fn ensure_route_table(
    c: &AwsClients,
    spec: &ValidatedSpec,
    existing: Option<&ObservedRouteTable>,
    vpc_id: &str,
    (public, zone): (bool, Option<&str>),
    serves: impl Iterator<Item = &ObservedSubnet>,
) -> Result<(String, Option<String>), Error> {
    let (id, target, associated) = match existing {
        Some(t) => (
            t.id.clone(),
            t.default_target.clone(),
            t.associations.clone(),
        ),
        None => (
            route_table::create(c, &spec.owner, vpc_id, public, zone).await?,
            None,
            vec![],
        ),
    };
    try_join_all(
        serves
            .filter(|s| !associated.iter().any(|(_, sid)| sid == &s.id))
            .map(|s| route_table::associate(c, &id, &s.id)),
    )
    .await?;
    Ok((id, target))
}

/// Points the table's default route at `to` unless it does already.
async fn ensure_default_route(
    c: &AwsClients,
    table: &str,
    current: Option<&str>,
    to: &str,
) -> Result<(), Error> {
    if current != Some(to) {
        route_table::set_default_route(c, table, to, current.is_some()).await?;
    }
    Ok(())
}

/// The public route table: the table and its associations need only the VPC
/// and subnets; the default route waits for the internet gateway (`igw`).
async fn ensure_public_route_table(
    c: &AwsClients,
    spec: &ValidatedSpec,
    observed: &Observed,
    vpc_id: &str,
    igw: impl Future<Output = Result<String, ()>>,
    public_subnets: &[&ObservedSubnet],
) -> Result<String, Error> {
    let existing = observed.route_tables.iter().find(|t| t.public);
    let serves = public_subnets.iter().copied();
    let (id, target) = ensure_route_table(c, spec, existing, vpc_id, (true, None), serves).await?;
    // A failed gateway has its error recorded already.
    if let Ok(igw) = igw.await {
        ensure_default_route(c, &id, target.as_deref(), &igw).await?;
    }
    Ok(id)
}

/// Returns the table IDs and whether every default route is in place.
/// Tables and associations need only the VPC and subnets; the default
/// routes wait for the NAT gateways (`nats`).
#[allow(clippy::too_many_arguments)]
async fn ensure_private_route_tables<N>(
    c: &AwsClients,
    spec: &ValidatedSpec,
    observed: &Observed,
    vpc_id: &str,
    tables: &[plan::PrivateRouteTable],
    subnets: &[ObservedSubnet],
    nats: N,
) -> Result<(Vec<String>, bool), Error>
where
    N: Future<Output = Result<BTreeMap<String, (String, NatState)>, ()>> + Clone,
{
    let results = try_join_all(tables.iter().map(|want| {
        let nats = nats.clone();
        async move {
            let existing = observed
                .route_tables
                .iter()
                .find(|t| !t.public && t.zone == want.zone);
            let serves = subnets
                .iter()
                .filter(|s| !s.public && want.serves.contains(&s.zone));
            let place = (false, want.zone.as_deref());
            let (id, target) = ensure_route_table(c, spec, existing, vpc_id, place, serves).await?;
            let mut done = true;
            if let Some(nat_zone) = &want.nat_zone {
                match nats.await.ok().as_ref().and_then(|n| n.get(nat_zone)) {
                    Some((nat_id, NatState::Available)) => {
                        ensure_default_route(c, &id, target.as_deref(), nat_id).await?;
                    }
                    _ => done = false,
                }
            }
            Ok::<_, Error>((id, done))
        }
    }))
    .await?;
    let done = results.iter().all(|(_, d)| *d);
    Ok((results.into_iter().map(|(id, _)| id).collect(), done))
}

/// Public subnets launch instances with a public IPv4 address; set where a
/// subnet lacks it (just created, or changed out of band).
async fn ensure_public_ips(c: &AwsClients, subnets: &[ObservedSubnet]) -> Result<(), Error> {
    try_join_all(
        subnets
            .iter()
            .filter(|s| s.public && !s.map_public_ip)
            .map(|s| subnet::map_public_ip(c, &s.id)),
    )
    .await?;
    Ok(())
}

/// The default image of each node group that names none and looks short of
/// live instances, looked up together before the network exists (cached per
/// region and instance type). A group this misses looks its
/// image up when it launches.
async fn default_images(
    ctx: &Context,
    c: &AwsClients,
    spec: &ValidatedSpec,
    observed: &Observed,
) -> Result<BTreeMap<String, String>, Error> {
    let needed: Vec<_> = spec
        .node_groups
        .iter()
        .filter(|g| g.image_id.is_none())
        .filter(|g| {
            let have = observed
                .instances
                .iter()
                .filter(|i| i.group == g.name && i.instance_type == g.instance_type)
                .filter(|i| {
                    matches!(
                        i.state,
                        plan::InstanceState::Pending | plan::InstanceState::Running
                    )
                })
                .count();
            have < usize::try_from(g.count).unwrap_or(0)
        })
        .collect();
    if needed.is_empty() {
        return Ok(BTreeMap::new());
    }
    let types: Vec<String> = needed.iter().map(|g| g.instance_type.clone()).collect();
    let images = ctx.default_images(c, &spec.region, &types).await?;
    Ok(needed
        .iter()
        .filter_map(|g| Some((g.name.clone(), images.get(&g.instance_type)?.clone())))
        .collect())
}

/// What node groups launch into.
struct NodeNetwork<'a> {
    subnets: &'a [ObservedSubnet],
    security_group: &'a str,
    iam: &'a Iam,
    /// Default images by node group (groups that name one are not here).
    images: &'a BTreeMap<String, String>,
}

async fn ensure_node_groups(
    ctx: &Context,
    c: &AwsClients,
    spec: &ValidatedSpec,
    observed: &Observed,
    network: &NodeNetwork<'_>,
    statuses: &mut Vec<NodeGroupStatus>,
) -> Result<(), Error> {
    let (subnets, sg, iam) = (network.subnets, network.security_group, network.iam);
    let orphans = plan::orphaned_instances(&spec.node_groups, &observed.instances);
    instances::terminate(c, &orphans).await?;

    let mut launches = Vec::new();
    let mut terminate = Vec::new();
    statuses.clear();
    for group in &spec.node_groups {
        let public = plan::wants_public(group);
        let mut candidates: Vec<String> = subnets
            .iter()
            .filter(|s| s.public == public)
            .map(|s| s.id.clone())
            .collect();
        if candidates.is_empty() {
            candidates = subnets.iter().map(|s| s.id.clone()).collect();
        }
        let plan = plan::plan_node_group(group, &observed.instances, &candidates);
        let mine: Vec<_> = observed
            .instances
            .iter()
            .filter(|i| i.group == group.name)
            .collect();
        let running = mine
            .iter()
            .filter(|i| {
                i.instance_type == group.instance_type && i.state == plan::InstanceState::Running
            })
            .filter(|i| !plan.terminate.contains(&i.id))
            .count();
        statuses.push(NodeGroupStatus {
            name: group.name.clone(),
            desired: group.count,
            running: i32::try_from(running).unwrap_or(i32::MAX),
            instance_ids: mine.iter().map(|i| i.id.clone()).collect(),
        });
        terminate.extend(plan.terminate.clone());
        if !plan.launch.is_empty() {
            let existing: Vec<String> = mine.iter().map(|i| i.id.clone()).collect();
            launches.push((group, plan.launch, existing));
        }
    }
    instances::terminate(c, &terminate).await?;

    let mut jobs = Vec::new();
    for (group, per_subnet, existing) in &launches {
        let image = match (&group.image_id, network.images.get(&group.name)) {
            (Some(id), _) | (None, Some(id)) => id.clone(),
            (None, None) => {
                let types = [group.instance_type.clone()];
                let images = ctx.default_images(c, &spec.region, &types).await?;
                images.get(&group.instance_type).cloned().ok_or_else(|| {
                    Error::InvalidSpec(format!(
                        "no image for instance type {}",
                        group.instance_type
                    ))
                })?
            }
        };
        for (subnet_id, count) in per_subnet {
            jobs.push((
                group,
                image.clone(),
                subnet_id.clone(),
                *count,
                existing.clone(),
            ));
        }
    }
    let launched = try_join_all(jobs.iter().map(
        |(group, image, subnet_id, count, existing)| async move {
            let launch = Launch {
                group,
                image_id: image,
                subnet_id,
                security_group_id: sg,
                instance_profile_arn: &iam.profile_arn,
                count: *count,
                existing,
            };
            instances::run(c, &spec.owner, &launch).await
        },
    ))
    .await?;
    let new: Vec<String> = launched.iter().flatten().cloned().collect();
    for ((group, ..), ids) in jobs.iter().zip(launched) {
        if let Some(s) = statuses.iter_mut().find(|s| s.name == group.name) {
            s.instance_ids.extend(ids);
        }
    }
    // Instances run within seconds: look again shortly instead of a whole
    // pass later; what is still pending is left to the next pass.
    let running = settle(
        || async {
            let now = instances::describe(c, &spec.owner).await?;
            let running: Vec<(String, String)> = now
                .into_iter()
                .filter(|i| new.contains(&i.id) && i.state == plan::InstanceState::Running)
                .map(|i| (i.group, i.instance_type))
                .collect();
            let all = running.len() == new.len();
            Ok::<_, Error>((running, all))
        },
        !new.is_empty(),
    )
    .await?;
    for (group, instance_type) in running.unwrap_or_default() {
        let wanted = spec
            .node_groups
            .iter()
            .any(|g| g.name == group && g.instance_type == instance_type);
        if let Some(s) = statuses
            .iter_mut()
            .find(|s| s.name == group)
            .filter(|_| wanted)
        {
            s.running += 1;
        }
    }
    Ok(())
}

/// Looks again a few times right after a create or delete (at once, then
/// after 0.1, 0.2 and 0.4 s), until `check` says it is done; returns the last
/// result. `None` when `enabled` is false. A quick AWS then needs no second
/// pass; a slow one costs four describes.
pub(super) async fn settle<T, E, F, Fut>(check: F, enabled: bool) -> Result<Option<T>, E>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(T, bool), E>>,
{
    if !enabled {
        return Ok(None);
    }
    let mut delay = std::time::Duration::ZERO;
    let mut last = None;
    for _ in 0..4 {
        tokio::time::sleep(delay).await;
        let (value, done) = check().await?;
        last = Some(value);
        if done {
            break;
        }
        delay = (delay * 2).max(std::time::Duration::from_millis(100));
    }
    Ok(last)
}
