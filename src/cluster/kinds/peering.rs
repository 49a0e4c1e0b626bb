//! Peering connections (`network.peering`): one connection per peer VPC
//! (never a VPC another cluster or installation made), accepted by the
//! operator when the peer is in the cluster's own account (in the peer's
//! region) and its policy allows it (a VPC of this installation's, or one
//! opened to it), else left for the peer's owner
//! (`PeeringPendingAcceptance`); routes to the peer in every route table of
//! the cluster's, and a route back in the peer's tables the spec lists and
//! in no other: only tables their owner opened to this cluster's namespace
//! (`byoc.dev/peer-routes=<installation>/<namespace>`) where no route
//! overlaps the cluster's CIDR. Each route back is recorded on the
//! connection before it is made, and only recorded ones are ever deleted
//! in a table not the cluster's: the peer's own routes, to the same
//! connection too, stay. Deleted before the route tables: the routes back
//! first, so the peer gets back exactly its old routes.

use std::collections::BTreeSet;

use futures::future::try_join_all;
use ipnet::Ipv4Net;

use super::{busy, Deleted, Looks, Observed, Pass, PendingResult};
use super::{got, put, Board, Managed, StepInput, StepResult};
use crate::api::compute_cluster::NetworkStatus;
use crate::aws::peering::{self, ObservedPeering, PeeringState};
use crate::aws::route_table::{self, PeerTable, PeeringRoute, PEER_ROUTES};
use crate::aws::tags::{items, Scope};
use crate::aws::{AwsClients, AwsResult};
use crate::cluster::catching_up::look_briefly;
use crate::cluster::spec::{overlaps, PeeringPlan, SpecError, ValidatedSpec};
use crate::cluster::status::Progress;
use crate::{Brought, Error, MissingNetwork};

/// The connections to keep, one per peer asked for, and those to delete.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeeringActions {
    /// `(peer VPC, its connection)`; `None`: one is to be requested.
    pub keep: Vec<(String, Option<ObservedPeering>)>,
    /// Connections to peers no longer asked for, and second ones to a peer
    /// (kept: the lowest ID, the same choice every pass).
    pub delete: Vec<String>,
}

pub fn plan(asked: &[PeeringPlan], observed: &[ObservedPeering]) -> PeeringActions {
    let mut live: Vec<&ObservedPeering> = observed
        .iter()
        .filter(|p| p.state != PeeringState::Gone)
        .collect();
    live.sort_by(|a, b| a.id.cmp(&b.id));
    let mut actions = PeeringActions::default();
    let mut served = BTreeSet::new();
    for p in live {
        let wanted = asked.iter().any(|a| a.vpc_id == p.peer_vpc_id);
        if wanted && served.insert(p.peer_vpc_id.clone()) {
            actions.keep.push((p.peer_vpc_id.clone(), Some(p.clone())));
        } else {
            actions.delete.push(p.id.clone());
        }
    }
    for a in asked.iter().filter(|a| !served.contains(&a.vpc_id)) {
        actions.keep.push((a.vpc_id.clone(), None));
    }
    actions.keep.sort_by(|a, b| a.0.cmp(&b.0));
    actions
}

/// Whether the operator accepts the connection itself: the peer is in the
/// cluster's account (`account_id`), in any region.
pub fn accepts_itself(asked: &PeeringPlan, account_id: &str) -> bool {
    asked.owner_id.as_deref().is_none_or(|o| o == account_id)
}

/// The peer's region when it is not the cluster's.
fn other_region<'a>(asked: &'a PeeringPlan, region: &str) -> Option<&'a str> {
    asked.region.as_deref().filter(|r| *r != region)
}

/// Why a connection waits on the peer's owner.
const ANOTHER_ACCOUNT: &str = "the peer is in another account";
const DENIED: &str = "the operator's role may not accept it";

/// What the peer's owner must do, for a connection waiting on them; `why`
/// says why the operator did not accept it itself.
pub fn pending_acceptance(asked: &PeeringPlan, id: &str, region: &str, why: &str) -> String {
    let owner = asked.owner_id.as_deref().unwrap_or("the cluster's account");
    let region = asked.region.as_deref().unwrap_or(region);
    format!(
        "peering connection {id} to {} waits for its acceptance ({why}): in account {owner}, region {region}, run `aws ec2 accept-vpc-peering-connection --vpc-peering-connection-id {id} --region {region}`",
        asked.vpc_id
    )
}

/// Before a connection is requested: a peer the operator can see (in the
/// cluster's account and region) must exist, must not be a VPC another
/// cluster or installation made, and its CIDR blocks must not overlap the
/// cluster's; nothing is made otherwise. A peer in another account or
/// region is checked through the routes the spec lists.
pub async fn preflight(
    c: &AwsClients,
    spec: &ValidatedSpec,
    account_id: &str,
    observed: &[ObservedPeering],
) -> Result<(), Error> {
    let Some((cidr, asked)) = spec.network.peering() else {
        return Ok(());
    };
    let actions = plan(asked, observed);
    for (vpc_id, _) in actions.keep.iter().filter(|(_, have)| have.is_none()) {
        let Some(a) = asked.iter().find(|a| &a.vpc_id == vpc_id) else {
            continue;
        };
        // Only a peer in the cluster's own account and region is visible.
        if !accepts_itself(a, account_id) || other_region(a, &spec.region).is_some() {
            continue;
        }
        let Some(peer) = peering::peer_vpc(c, vpc_id).await? else {
            return Err(MissingNetwork::PeerVpc {
                vpc_id: vpc_id.clone(),
            }
            .into());
        };
        if let Some(owner) = (peer.claim.as_ref()).and_then(|c| spec.owner.claim_of_another(c)) {
            return Err(Error::NotOursToUse {
                brought: Brought::PeerVpc(vpc_id.clone()),
                owner,
            });
        }
        if let Some(route) = first_overlap(&peer.cidrs, cidr) {
            return Err(Error::InvalidSpec(SpecError::PeeringOverlap {
                vpc_id: vpc_id.clone(),
                route,
                cidr,
            }));
        }
    }
    Ok(())
}

/// The first of `blocks` that overlaps `cidr`.
pub fn first_overlap(blocks: &[String], cidr: Ipv4Net) -> Option<Ipv4Net> {
    blocks
        .iter()
        .filter_map(|b| b.parse::<Ipv4Net>().ok())
        .find(|b| overlaps(*b, cidr))
}

/// A connection in place.
#[derive(Clone, Debug, PartialEq)]
pub struct Connection {
    pub id: String,
    pub state: PeeringState,
    /// The CIDRs the cluster's tables route to it.
    pub destinations: Vec<String>,
    pub asked: PeeringPlan,
}

/// The connections, and what waits on the peers' owners.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PeeringDone {
    pub connections: Vec<Connection>,
    pub pending: Vec<String>,
}

impl PeeringDone {
    pub fn active(&self) -> bool {
        self.connections
            .iter()
            .all(|c| c.state == PeeringState::Active)
    }
}

/// Requests, accepts and tidies the connections of `vpc_id`.
pub async fn ensure(
    p: Pass<'_>,
    vpc_id: &str,
    asked: &[PeeringPlan],
) -> Result<PeeringDone, Error> {
    let actions = plan(asked, &p.observed.peerings);
    let own = p.observed.route_table_ids();
    let gone = &actions.delete;
    delete_connections(
        p.c,
        gone,
        gone,
        &p.observed.peerings,
        &p.observed.peering_routes,
        &own,
    )
    .await?;
    let made = try_join_all(actions.keep.iter().map(|(peer, have)| async move {
        let a = asked
            .iter()
            .find(|a| &a.vpc_id == peer)
            .ok_or_else(|| Error::Internal(format!("peering {peer} kept and not asked for")))?;
        request_and_accept(p, vpc_id, a, have.as_ref()).await
    }))
    .await?;
    let changed: Vec<String> = made
        .iter()
        .filter(|m| m.changed)
        .map(|m| m.id.clone())
        .collect();
    // Accepted in the same account, AWS makes it active in moments.
    let now = look_briefly(
        || async {
            let now = items(peering::describe(p.c, Scope::Cluster(&p.spec.owner)).await?);
            let settled = changed.iter().all(|id| {
                now.iter()
                    .any(|c| &c.id == id && c.state != PeeringState::Pending)
            });
            Ok::<_, Error>((now, settled))
        },
        !changed.is_empty(),
    )
    .await?;
    let seen: Vec<&ObservedPeering> = now.iter().flatten().chain(&p.observed.peerings).collect();
    Ok(connections(made, &seen, &p.spec.region))
}

/// One asked-for connection after this pass requested or accepted it.
struct Made {
    asked: PeeringPlan,
    id: String,
    state: PeeringState,
    /// Requested or accepted now: its state is worth a brief look.
    changed: bool,
    /// Why its acceptance is someone else's, when it is.
    waits: Option<&'static str>,
}

/// Requests the connection to `a`'s VPC unless there is one (`have`), and
/// accepts it when that is the operator's to do.
async fn request_and_accept(
    p: Pass<'_>,
    vpc_id: &str,
    a: &PeeringPlan,
    have: Option<&ObservedPeering>,
) -> Result<Made, Error> {
    let (id, state) = match have {
        Some(h) => (h.id.clone(), h.state),
        None => {
            let id = peering::create(
                p.c,
                &p.spec.owner,
                vpc_id,
                &a.vpc_id,
                a.owner_id.as_deref(),
                a.region.as_deref(),
            )
            .await?;
            (id, PeeringState::Pending)
        }
    };
    let ours_to_accept = accepts_itself(a, p.account_id);
    let (accepted, denied) = match (state, ours_to_accept) {
        (PeeringState::Pending | PeeringState::PendingAcceptance, true) => {
            match peering::accept(p.c, &id, other_region(a, &p.spec.region)).await {
                Ok(()) => (true, false),
                // Not the operator's to accept after all: the owner does.
                Err(e) if e.is_access_denied() => (false, true),
                Err(e) => return Err(e.into()),
            }
        }
        _ => (false, false),
    };
    let waits = match (ours_to_accept, denied) {
        (false, _) => Some(ANOTHER_ACCOUNT),
        (true, true) => Some(DENIED),
        (true, false) => None,
    };
    Ok(Made {
        asked: a.clone(),
        id,
        state,
        changed: have.is_none() || accepted,
        waits,
    })
}

/// The connections as last `seen`, their destinations, and what waits on
/// the peers' owners.
fn connections(made: Vec<Made>, seen: &[&ObservedPeering], region: &str) -> PeeringDone {
    let mut done = PeeringDone::default();
    for m in made {
        let found = seen.iter().find(|c| c.id == m.id);
        let state = found.map_or(m.state, |c| c.state);
        if let (PeeringState::PendingAcceptance, Some(why)) = (state, m.waits) {
            done.pending
                .push(pending_acceptance(&m.asked, &m.id, region, why));
        }
        let destinations = match m.asked.routes.is_empty() {
            true => found.map(|c| c.peer_cidrs.clone()).unwrap_or_default(),
            false => m.asked.routes.iter().map(|r| r.to_string()).collect(),
        };
        done.connections.push(Connection {
            id: m.id,
            state,
            destinations,
            asked: m.asked,
        });
    }
    done
}

/// One route a connection needs: `(table, destination, connection)`.
pub type Wanted = (String, String, String);

/// The routes to the active connections: each destination in each of the
/// cluster's tables, and the cluster's CIDR in each listed peer table.
pub fn wanted_routes(
    connections: &[Connection],
    tables: &[String],
    cidr: Ipv4Net,
) -> BTreeSet<Wanted> {
    let mut out = BTreeSet::new();
    for c in connections
        .iter()
        .filter(|c| c.state == PeeringState::Active)
    {
        for t in tables {
            for d in &c.destinations {
                out.insert((t.clone(), d.clone(), c.id.clone()));
            }
        }
        for t in &c.asked.peer_route_table_ids {
            out.insert((t.clone(), cidr.to_string(), c.id.clone()));
        }
    }
    out
}

/// What the routes need: create (or replace, in the cluster's own
/// tables), and routes to the connections no longer wanted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteActions {
    /// `(table, destination, connection, replace)`.
    pub set: Vec<(String, String, String, bool)>,
    /// Routes back to record on their connection before they are set:
    /// `(connection, table, destination)`.
    pub record: Vec<(String, String, String)>,
    pub delete: Vec<PeeringRoute>,
    /// Records of routes back deleted now or found gone: `(connection,
    /// table)`.
    pub forget: Vec<(String, String)>,
}

/// Whom a peer's table must be opened to for this cluster's routes back,
/// and what a route back must not overlap.
#[derive(Clone, Copy, Debug)]
pub struct RoutesBack<'a> {
    /// The [`PEER_ROUTES`] value naming the cluster's installation and
    /// namespace.
    pub opened_to: &'a str,
    pub cidr: Ipv4Net,
}

/// Whether the operator made route `r`: it is in one of the cluster's
/// tables `own`, or a route back recorded on its connection. Any other
/// route to a connection is its table owner's, and never the operator's
/// to delete or wait for.
pub fn made_by_operator(r: &PeeringRoute, own: &[String], peerings: &[ObservedPeering]) -> bool {
    own.contains(&r.table_id) || recorded(peerings, r)
}

/// Whether `r` is a route back the operator recorded making on its
/// connection (in `peerings`).
fn recorded(peerings: &[ObservedPeering], r: &PeeringRoute) -> bool {
    peerings
        .iter()
        .any(|p| p.id == r.peering_id && p.routes_back.get(&r.table_id) == Some(&r.destination))
}

/// `own`: the cluster's tables (those observed and those this pass made);
/// `peer`: the listed peer tables as found; `peerings`: the connections
/// with the routes back recorded on them.
pub fn plan_routes(
    wanted: &BTreeSet<Wanted>,
    observed: &[PeeringRoute],
    own: &[String],
    peer: &[PeerTable],
    peerings: &[ObservedPeering],
    back: RoutesBack<'_>,
) -> Result<RouteActions, Error> {
    let mut actions = RouteActions::default();
    let is_own = |table: &str| own.iter().any(|t| t == table);
    let have = |w: &Wanted| {
        observed
            .iter()
            .any(|r| r.table_id == w.0 && r.destination == w.1 && r.peering_id == w.2)
    };
    for w in wanted.iter().filter(|w| !have(w)) {
        let (table, dest, pcx) = w;
        // A route of ours to another connection (one deleted out of band)
        // is replaced wherever it is; anything else in a peer's table is
        // theirs and never replaced.
        let ours_there = observed.iter().any(|r| {
            &r.table_id == table && &r.destination == dest && made_by_operator(r, own, peerings)
        });
        let replace = match peer.iter().find(|t| &t.id == table) {
            _ if ours_there => true,
            Some(t) => peer_table_taken(t, back)?,
            None if is_own(table) => false,
            None => {
                return Err(MissingNetwork::PeerRouteTable { id: table.clone() }.into());
            }
        };
        if !is_own(table) {
            actions
                .record
                .push((pcx.clone(), table.clone(), dest.clone()));
        }
        actions
            .set
            .push((table.clone(), dest.clone(), pcx.clone(), replace));
    }
    actions.delete = unwanted(wanted, observed, &actions.set, own, peerings);
    actions.forget = forgotten(wanted, observed, &actions.delete, peerings);
    Ok(actions)
}

/// The routes the operator made that are no longer wanted and that no
/// route being set takes the place of.
fn unwanted(
    wanted: &BTreeSet<Wanted>,
    observed: &[PeeringRoute],
    set: &[(String, String, String, bool)],
    own: &[String],
    peerings: &[ObservedPeering],
) -> Vec<PeeringRoute> {
    observed
        .iter()
        .filter(|r| {
            !wanted.contains(&(
                r.table_id.clone(),
                r.destination.clone(),
                r.peering_id.clone(),
            ))
        })
        .filter(|r| {
            !set.iter()
                .any(|s| s.0 == r.table_id && s.1 == r.destination)
        })
        .filter(|r| made_by_operator(r, own, peerings))
        .cloned()
        .collect()
}

/// The records of routes back to let go: a record goes once its route is
/// deleted, or is found gone and no longer wanted.
fn forgotten(
    wanted: &BTreeSet<Wanted>,
    observed: &[PeeringRoute],
    deleted: &[PeeringRoute],
    peerings: &[ObservedPeering],
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in peerings {
        for table in p.routes_back.keys() {
            let gone_now = deleted
                .iter()
                .any(|r| r.peering_id == p.id && &r.table_id == table);
            let still = observed
                .iter()
                .any(|r| r.peering_id == p.id && &r.table_id == table);
            let wanted_there = wanted.iter().any(|w| w.2 == p.id && &w.0 == table);
            if gone_now || (!still && !wanted_there) {
                out.push((p.id.clone(), table.clone()));
            }
        }
    }
    out
}

/// A listed peer table takes a route back only when its owner opened it to
/// this cluster's installation and namespace, and no route of theirs
/// overlaps the cluster's CIDR (an equal one or a wider one, which the
/// route back would take traffic from, or a narrower one). The default
/// route (0.0.0.0/0) reaches no private address, and does not count.
fn peer_table_taken(t: &PeerTable, back: RoutesBack<'_>) -> Result<bool, Error> {
    if t.opened_to.as_deref() != Some(back.opened_to) {
        return Err(Error::InvalidSpec(SpecError::PeerTableClosed {
            id: t.id.clone(),
            tag: format!("{PEER_ROUTES}={}", back.opened_to),
        }));
    }
    let overlapping = t.routes.iter().find_map(|(d, _)| {
        let net = d.parse::<Ipv4Net>().ok()?;
        (net.prefix_len() > 0 && overlaps(net, back.cidr)).then_some(net)
    });
    if let Some(net) = overlapping {
        return Err(Error::InvalidSpec(SpecError::PeerRouteTaken {
            id: t.id.clone(),
            destination: net.to_string(),
            cidr: back.cidr.to_string(),
        }));
    }
    Ok(false)
}

/// The routes to the connections, in the cluster's tables `tables` and the
/// listed peer tables.
pub async fn ensure_routes(
    p: Pass<'_>,
    done: &PeeringDone,
    tables: &[String],
    cidr: Ipv4Net,
) -> Result<(), Error> {
    let wanted = wanted_routes(&done.connections, tables, cidr);
    let listed: Vec<String> = done
        .connections
        .iter()
        .flat_map(|c| c.asked.peer_route_table_ids.clone())
        .collect();
    let missing_back = wanted.iter().any(|w| {
        listed.contains(&w.0)
            && !p
                .observed
                .peering_routes
                .iter()
                .any(|r| r.table_id == w.0 && r.peering_id == w.2)
    });
    let peer = match missing_back {
        true => route_table::peer_tables(p.c, &listed).await?,
        false => vec![],
    };
    let opened_to = route_table::opened_to(&p.spec.owner.installation, &p.spec.owner.namespace);
    // The cluster's tables: those observed, and those this pass made (not
    // observed yet, and no peer's).
    let mut own = p.observed.route_table_ids();
    own.extend(tables.iter().cloned());
    let actions = plan_routes(
        &wanted,
        &p.observed.peering_routes,
        &own,
        &peer,
        &p.observed.peerings,
        RoutesBack {
            opened_to: &opened_to,
            cidr,
        },
    )?;
    try_join_all(
        actions
            .delete
            .iter()
            .map(|r| route_table::delete_route(p.c, &r.table_id, &r.destination)),
    )
    .await?;
    try_join_all(
        (actions.forget.iter()).map(|(pcx, table)| peering::forget_route_back(p.c, pcx, table)),
    )
    .await?;
    try_join_all(
        (actions.record.iter())
            .map(|(pcx, table, dest)| peering::record_route_back(p.c, pcx, table, dest)),
    )
    .await?;
    try_join_all(actions.set.iter().map(|(table, dest, pcx, replace)| {
        route_table::set_route(p.c, table, dest, pcx, *replace)
    }))
    .await?;
    Ok(())
}

/// Deletes the connections `ids`: first the routes to `routes_to` that the
/// operator made (in the cluster's tables `own`, and the routes back
/// recorded on `peerings`: the peer gets back exactly its old routes, its
/// own stay), then the connections.
async fn delete_connections(
    c: &AwsClients,
    ids: &[String],
    routes_to: &[String],
    peerings: &[ObservedPeering],
    routes: &[PeeringRoute],
    own: &[String],
) -> AwsResult<()> {
    let ours = routes
        .iter()
        .filter(|r| routes_to.contains(&r.peering_id) && made_by_operator(r, own, peerings));
    try_join_all(ours.map(|r| route_table::delete_route(c, &r.table_id, &r.destination))).await?;
    try_join_all(ids.iter().map(|id| peering::delete(c, id))).await?;
    Ok(())
}

/// Every connection of the cluster's, with the routes back recorded on
/// them (the cluster's own tables go with the cluster).
pub async fn delete(
    c: &AwsClients,
    observed: &[ObservedPeering],
    routes: &[PeeringRoute],
) -> AwsResult<Deleted> {
    let live: Vec<String> = observed
        .iter()
        .filter(|p| p.state != PeeringState::Gone)
        .map(|p| p.id.clone())
        .collect();
    // The routes back of every connection AWS lists, a deleted one's too.
    let all: Vec<String> = observed.iter().map(|p| p.id.clone()).collect();
    delete_connections(c, &live, &all, observed, routes, &[]).await?;
    Ok(Deleted::All)
}

/// Step `Peering`: the peering connections.
pub fn step<'a>(m: &'a Managed, i: &'a StepInput<'a>, b: &'a Board) -> StepResult<'a> {
    Box::pin(async move {
        let vpc_id = got(&b.vpc, "the VPC")?;
        put(&b.peering, ensure(i.pass, vpc_id, &m.peering).await?)
    })
}

/// Step `PeeringRoutes`: the routes to the connections, and back.
pub fn routes_step<'a>(m: &'a Managed, i: &'a StepInput<'a>, b: &'a Board) -> StepResult<'a> {
    Box::pin(async move {
        let done = got(&b.peering, "the peering connections")?;
        let tables: Vec<String> = got(&b.tables, "the route tables")?
            .iter()
            .map(|t| t.id.clone())
            .collect();
        ensure_routes(i.pass, done, &tables, m.cidr).await?;
        put(&b.peering_routes, ())
    })
}

/// This kind's part of a deletion pass (its row's `delete`).
pub fn deletion<'a>(
    c: &'a AwsClients,
    _: &'a crate::aws::OwnershipTags,
    o: &'a super::Observed,
) -> super::DeleteResult<'a> {
    Box::pin(async move { delete(c, &o.peerings, &o.peering_routes).await })
}

/// AWS is still making the connection: what the shared wait goes by. A
/// connection pending acceptance is not AWS's to finish: the shared wait
/// hands its cluster back at its next tick, so that the pass accepts it
/// when that is the operator's to do, or says whose it is.
pub fn making(state: PeeringState) -> bool {
    state == PeeringState::Pending
}

/// Rows `Peering` and `PeeringRoutes` off their shape: connections or
/// routes an older spec made, or connections status still names.
pub fn leftover(o: &Observed, known: &NetworkStatus) -> bool {
    let own = o.route_table_ids();
    o.peerings.iter().any(|p| p.state != PeeringState::Gone)
        || (o.peering_routes.iter()).any(|r| made_by_operator(r, &own, &o.peerings))
        || !known.peering_connection_ids.is_empty()
}

/// Row `Peering`'s learning: the connections, what waits on their peers'
/// owners, and whether every one is active.
pub fn learn(b: &Board, p: &mut Progress) -> bool {
    let Some(done) = b.peering.get() else {
        return false;
    };
    p.network.peering_connection_ids = done.connections.iter().map(|c| c.id.clone()).collect();
    p.peering_pending = done.pending.clone();
    // Not active and no person's acceptance awaited: AWS's to finish, or
    // the operator's to accept on the shared wait's next tick.
    if !done.active() && done.pending.is_empty() {
        p.waiting
            .push("peering connections to become active".into());
        p.aws_creating = true;
    }
    done.active()
}

/// Row `Peering`'s part of the shared wait, for clusters that have any.
pub fn pending<'a>(c: &'a AwsClients, scope: Scope<'a>, looks: Looks) -> PendingResult<'a> {
    let peerings = peering::describe(c, scope);
    busy(looks.peering, peerings, |p| making(p.state))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(vpc: &str, tables: &[&str]) -> PeeringPlan {
        PeeringPlan {
            vpc_id: vpc.into(),
            owner_id: None,
            region: None,
            routes: vec![],
            peer_route_table_ids: tables.iter().map(|t| t.to_string()).collect(),
        }
    }

    fn seen(id: &str, vpc: &str, state: PeeringState) -> ObservedPeering {
        ObservedPeering {
            id: id.into(),
            peer_vpc_id: vpc.into(),
            state,
            peer_cidrs: vec!["10.9.0.0/16".into()],
            routes_back: Default::default(),
        }
    }

    #[test]
    fn one_connection_per_peer_asked_for() {
        use PeeringState::*;
        // (asked, observed, kept (peer, connection), deleted, why)
        type Row<'a> = (
            Vec<&'a str>,
            Vec<ObservedPeering>,
            Vec<(&'a str, Option<&'a str>)>,
            Vec<&'a str>,
            &'a str,
        );
        let rows: Vec<Row> = vec![
            (vec!["vpc-p"], vec![], vec![("vpc-p", None)], vec![], "a new peer: requested"),
            (
                vec!["vpc-p"],
                vec![seen("pcx-1", "vpc-p", Active)],
                vec![("vpc-p", Some("pcx-1"))],
                vec![],
                "in place",
            ),
            (
                vec!["vpc-p"],
                vec![seen("pcx-2", "vpc-p", Active), seen("pcx-1", "vpc-p", PendingAcceptance)],
                vec![("vpc-p", Some("pcx-1"))],
                vec!["pcx-2"],
                "a second connection to a peer (a crash between request and status): the lowest ID kept",
            ),
            (
                vec![],
                vec![seen("pcx-1", "vpc-p", Active)],
                vec![],
                vec!["pcx-1"],
                "a peer no longer asked for",
            ),
            (
                vec!["vpc-p"],
                vec![seen("pcx-1", "vpc-p", Gone)],
                vec![("vpc-p", None)],
                vec![],
                "deleted out of band: requested again",
            ),
        ];
        for (asked_for, observed, kept, deleted, why) in rows {
            let asked_for: Vec<PeeringPlan> = asked_for.iter().map(|v| asked(v, &[])).collect();
            let got = plan(&asked_for, &observed);
            let got_kept: Vec<(String, Option<String>)> = got
                .keep
                .iter()
                .map(|(v, c)| (v.clone(), c.as_ref().map(|c| c.id.clone())))
                .collect();
            let want_kept: Vec<(String, Option<String>)> = kept
                .iter()
                .map(|(v, c)| (v.to_string(), c.map(str::to_string)))
                .collect();
            assert_eq!(
                (got_kept, got.delete),
                (
                    want_kept,
                    deleted.iter().map(|d| d.to_string()).collect::<Vec<_>>()
                ),
                "{why}"
            );
        }
    }

    #[test]
    fn the_operator_accepts_only_in_its_own_account_and_region() {
        let with = |owner: Option<&str>, region: Option<&str>| PeeringPlan {
            owner_id: owner.map(str::to_string),
            region: region.map(str::to_string),
            ..asked("vpc-p", &[])
        };
        let own = "111111111111";
        assert!(accepts_itself(&with(None, None), own));
        assert!(accepts_itself(&with(Some(own), Some("us-east-1")), own));
        assert!(
            accepts_itself(&with(None, Some("us-west-2")), own),
            "in another region of the account: accepted there"
        );
        assert!(!accepts_itself(&with(Some("222222222222"), None), own));
        let west = with(None, Some("us-west-2"));
        assert_eq!(other_region(&west, "us-east-1"), Some("us-west-2"));
        assert_eq!(other_region(&west, "us-west-2"), None);
        let said = pending_acceptance(
            &with(Some("222222222222"), None),
            "pcx-1",
            "us-east-1",
            ANOTHER_ACCOUNT,
        );
        assert!(
            said.contains("account 222222222222, region us-east-1")
                && said.contains("--vpc-peering-connection-id pcx-1"),
            "{said}"
        );
    }

    #[test]
    fn an_overlapping_peer_block_is_found() {
        let cidr: Ipv4Net = "10.0.0.0/16".parse().expect("cidr");
        let blocks = |b: &[&str]| b.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(first_overlap(&blocks(&["10.1.0.0/16"]), cidr), None);
        assert_eq!(
            first_overlap(&blocks(&["10.1.0.0/16", "10.0.128.0/17"]), cidr),
            Some("10.0.128.0/17".parse().expect("cidr"))
        );
        assert_eq!(
            first_overlap(&blocks(&["10.0.0.0/8"]), cidr),
            Some("10.0.0.0/8".parse().expect("cidr"))
        );
    }

    #[test]
    fn routes_go_where_they_are_wanted_and_nowhere_else() {
        let cidr: Ipv4Net = "10.0.0.0/16".parse().expect("cidr");
        let connection = |id: &str, state, tables: &[&str]| Connection {
            id: id.into(),
            state,
            destinations: vec!["10.9.0.0/16".into()],
            asked: asked("vpc-p", tables),
        };
        let own = vec!["rtb-own".to_string()];
        let peer = |id: &str, opened: Option<&str>, routes: &[(&str, &str)]| PeerTable {
            id: id.into(),
            vpc_id: "vpc-p".into(),
            opened_to: opened.map(str::to_string),
            routes: routes
                .iter()
                .map(|(d, t)| (d.to_string(), t.to_string()))
                .collect(),
        };
        let route = |table: &str, dest: &str, pcx: &str| PeeringRoute {
            table_id: table.into(),
            destination: dest.into(),
            peering_id: pcx.into(),
        };
        let tables = vec!["rtb-own".to_string()];
        let active = [connection("pcx-1", PeeringState::Active, &["rtb-peer"])];
        let wanted = wanted_routes(&active, &tables, cidr);
        assert_eq!(
            wanted,
            BTreeSet::from([
                ("rtb-own".into(), "10.9.0.0/16".into(), "pcx-1".into()),
                ("rtb-peer".into(), "10.0.0.0/16".into(), "pcx-1".into()),
            ])
        );
        let pending = [connection(
            "pcx-1",
            PeeringState::PendingAcceptance,
            &["rtb-peer"],
        )];
        assert!(
            wanted_routes(&pending, &tables, cidr).is_empty(),
            "no route before the connection is active"
        );

        const TO: &str = "inst-a/team-a";
        let back = RoutesBack {
            opened_to: TO,
            cidr,
        };
        let with_back = |id: &str, tables: &[&str]| ObservedPeering {
            routes_back: tables
                .iter()
                .map(|t| (t.to_string(), "10.0.0.0/16".to_string()))
                .collect(),
            ..seen(id, "vpc-p", PeeringState::Active)
        };
        let plan = |wanted: &BTreeSet<Wanted>,
                    observed: &[PeeringRoute],
                    peer: &[PeerTable],
                    peerings: &[ObservedPeering]| {
            plan_routes(wanted, observed, &own, peer, peerings, back)
        };
        let untracked = [seen("pcx-1", "vpc-p", PeeringState::Active)];

        // A new connection: a route in each table, the peer's opened one
        // included, and that one recorded on the connection first.
        let open = [peer(
            "rtb-peer",
            Some(TO),
            &[("10.9.0.0/16", "local"), ("0.0.0.0/0", "igw-1")],
        )];
        let got = plan(&wanted, &[], &open, &untracked).expect("routes");
        assert_eq!(got.set.len(), 2);
        assert!(got.set.iter().all(|s| !s.3) && got.delete.is_empty());
        assert_eq!(
            got.record,
            vec![("pcx-1".into(), "rtb-peer".into(), "10.0.0.0/16".into())]
        );
        // A table its owner did not open to this namespace (opened to no
        // one, to another namespace, or by the old value `allowed`), or one
        // of theirs routing anything the cluster's CIDR overlaps: refused,
        // nothing set.
        for opened in [
            None,
            Some("inst-a/team-b"),
            Some("inst-b/team-a"),
            Some("allowed"),
        ] {
            let closed = [peer("rtb-peer", opened, &[])];
            assert!(
                matches!(
                    plan(&wanted, &[], &closed, &untracked),
                    Err(Error::InvalidSpec(SpecError::PeerTableClosed { .. }))
                ),
                "{opened:?}"
            );
        }
        for route in ["10.0.0.0/16", "10.0.0.0/8", "10.0.5.0/24"] {
            let taken = [peer("rtb-peer", Some(TO), &[(route, "tgw-1")])];
            match plan(&wanted, &[], &taken, &untracked) {
                Err(Error::InvalidSpec(e @ SpecError::PeerRouteTaken { .. })) => {
                    assert!(!e.to_string().contains("tgw-1"), "the target was told: {e}")
                }
                other => panic!("{route}: {other:?}"),
            }
        }
        // A table of the cluster's this pass made (not observed yet): its
        // route is set, not taken for a missing peer table.
        let fresh = vec!["rtb-own".to_string(), "rtb-new".to_string()];
        let with_new = wanted_routes(&active, &fresh, cidr);
        let got = plan_routes(&with_new, &[], &fresh, &open, &untracked, back).expect("fresh");
        assert!(got.set.iter().any(|s| s.0 == "rtb-new"), "{got:?}");
        // A listed table AWS does not have.
        assert!(matches!(
            plan(&wanted, &[], &[], &untracked),
            Err(Error::ExistingNetwork(_))
        ));
        // In place: nothing to do; a table no longer listed: its recorded
        // route goes, and then its record.
        let placed = [
            route("rtb-own", "10.9.0.0/16", "pcx-1"),
            route("rtb-peer", "10.0.0.0/16", "pcx-1"),
        ];
        let tracked = [with_back("pcx-1", &["rtb-peer"])];
        assert_eq!(
            plan(&wanted, &placed, &[], &tracked).expect("in place"),
            RouteActions::default()
        );
        let unlisted = wanted_routes(
            &[connection("pcx-1", PeeringState::Active, &[])],
            &tables,
            cidr,
        );
        let got = plan(&unlisted, &placed, &[], &tracked).expect("unlisted");
        assert_eq!(got.delete, vec![route("rtb-peer", "10.0.0.0/16", "pcx-1")]);
        assert_eq!(got.forget, vec![("pcx-1".into(), "rtb-peer".into())]);
        // The peer's owner's own routes to the connection, in a table not
        // listed or with another destination: never deleted.
        let theirs = [
            route("rtb-own", "10.9.0.0/16", "pcx-1"),
            route("rtb-peer", "10.0.0.0/16", "pcx-1"),
            route("rtb-other", "10.0.0.0/16", "pcx-1"),
            route("rtb-peer-2", "10.0.1.0/24", "pcx-1"),
        ];
        let got = plan(&unlisted, &theirs, &[], &untracked).expect("theirs");
        assert!(got.delete.is_empty() && got.forget.is_empty(), "{got:?}");
        // Routes left to a connection deleted out of band: replaced, in the
        // peer's table too where recorded (they are ours).
        let stale = [
            route("rtb-own", "10.9.0.0/16", "pcx-0"),
            route("rtb-peer", "10.0.0.0/16", "pcx-0"),
        ];
        let gone = [
            with_back("pcx-0", &["rtb-peer"]),
            seen("pcx-1", "vpc-p", PeeringState::Active),
        ];
        let got = plan(&wanted, &stale, &open, &gone).expect("stale");
        assert!(got.set.iter().all(|s| s.3), "{got:?}");
        assert!(got.delete.is_empty(), "{got:?}");
    }
}
