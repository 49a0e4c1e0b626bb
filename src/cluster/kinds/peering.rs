//! Peering connections (`network.peering`): one connection per peer VPC,
//! accepted by the operator when the peer is in the cluster's own account
//! (in the peer's region) and its policy allows it, else left for the
//! peer's owner (`PeeringPendingAcceptance`);
//! routes to the peer in every route table of the cluster's, and a route
//! back in the peer's tables the spec lists (tables the peer's owner opened
//! with the `byoc.dev/peer-routes` tag) and in no other. Deleted before
//! the route tables: the routes in the peer's tables first, so the peer
//! gets back exactly its old routes.

use std::collections::BTreeSet;

use futures::future::try_join_all;
use ipnet::Ipv4Net;

use super::{Deleted, Pass};
use crate::aws::peering::{self, ObservedPeering, PeeringState};
use crate::aws::route_table::{
    self, ObservedRouteTable, PeerTable, PeeringRoute, PEER_ROUTES, PEER_ROUTES_OPEN,
};
use crate::aws::tags::{items, Scope};
use crate::aws::{AwsClients, AwsResult};
use crate::cluster::catching_up::look_briefly;
use crate::cluster::spec::{overlaps, PeeringPlan, SpecError, ValidatedSpec};
use crate::{Error, MissingNetwork};

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
/// cluster's account and region) must exist and its CIDR blocks must not
/// overlap the cluster's; nothing is made otherwise. A peer in another
/// account or region is checked through the routes the spec lists.
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
        let Some(blocks) = peering::vpc_cidrs(c, vpc_id).await? else {
            return Err(MissingNetwork::PeerVpc {
                vpc_id: vpc_id.clone(),
            }
            .into());
        };
        if let Some(route) = first_overlap(&blocks, cidr) {
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
    let gone = &actions.delete;
    delete_connections(p.c, gone, gone, &p.observed.peering_routes, &[]).await?;
    let region = &p.spec.region;
    let made = try_join_all(actions.keep.iter().map(|(peer, have)| async move {
        let a = asked
            .iter()
            .find(|a| &a.vpc_id == peer)
            .ok_or_else(|| Error::Internal(format!("peering {peer} kept and not asked for")))?;
        let (id, state) = match have {
            Some(h) => (h.id.clone(), h.state),
            None => {
                let id = peering::create(
                    p.c,
                    &p.spec.owner,
                    vpc_id,
                    peer,
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
                match peering::accept(p.c, &id, other_region(a, region)).await {
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
        Ok::<_, Error>((a.clone(), id, state, have.is_none() || accepted, waits))
    }))
    .await?;
    let changed: Vec<String> = made
        .iter()
        .filter(|(_, _, _, changed, _)| *changed)
        .map(|(_, id, ..)| id.clone())
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
    let mut done = PeeringDone::default();
    for (a, id, state, _, waits) in made {
        let seen = now
            .iter()
            .flatten()
            .chain(&p.observed.peerings)
            .find(|c| c.id == id);
        let state = seen.map_or(state, |c| c.state);
        if let (PeeringState::PendingAcceptance, Some(why)) = (state, waits) {
            done.pending.push(pending_acceptance(&a, &id, region, why));
        }
        let destinations = match a.routes.is_empty() {
            true => seen.map(|c| c.peer_cidrs.clone()).unwrap_or_default(),
            false => a.routes.iter().map(|r| r.to_string()).collect(),
        };
        done.connections.push(Connection {
            id,
            state,
            destinations,
            asked: a,
        });
    }
    Ok(done)
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
    pub delete: Vec<PeeringRoute>,
}

/// `own`: the cluster's tables, with every route's target; `peer`: the
/// listed peer tables as found.
pub fn plan_routes(
    wanted: &BTreeSet<Wanted>,
    observed: &[PeeringRoute],
    own: &[ObservedRouteTable],
    peer: &[PeerTable],
) -> Result<RouteActions, Error> {
    let mut actions = RouteActions::default();
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
        let ours_there = observed
            .iter()
            .any(|r| &r.table_id == table && &r.destination == dest);
        let replace = match peer.iter().find(|t| &t.id == table) {
            _ if ours_there => true,
            Some(t) => peer_table_taken(t, dest)?,
            None if own.iter().any(|t| &t.id == table) => false,
            None => {
                return Err(MissingNetwork::PeerRouteTable { id: table.clone() }.into());
            }
        };
        actions
            .set
            .push((table.clone(), dest.clone(), pcx.clone(), replace));
    }
    actions.delete = observed
        .iter()
        .filter(|r| {
            !wanted.contains(&(
                r.table_id.clone(),
                r.destination.clone(),
                r.peering_id.clone(),
            ))
        })
        .filter(|r| {
            !actions
                .set
                .iter()
                .any(|s| s.0 == r.table_id && s.1 == r.destination)
        })
        .cloned()
        .collect();
    Ok(actions)
}

/// A listed peer table takes a route back only when its owner opened it
/// and no route of theirs holds the destination (never replaced).
fn peer_table_taken(t: &PeerTable, dest: &str) -> Result<bool, Error> {
    if !t.open {
        return Err(Error::InvalidSpec(SpecError::PeerTableClosed {
            id: t.id.clone(),
            tag: format!("{PEER_ROUTES}={PEER_ROUTES_OPEN}"),
        }));
    }
    if let Some((_, target)) = t.routes.iter().find(|(d, _)| d == dest) {
        return Err(Error::InvalidSpec(SpecError::PeerRouteTaken {
            id: t.id.clone(),
            destination: dest.to_string(),
            target: target.clone(),
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
    let actions = plan_routes(
        &wanted,
        &p.observed.peering_routes,
        &p.observed.route_tables,
        &peer,
    )?;
    try_join_all(
        actions
            .delete
            .iter()
            .map(|r| route_table::delete_route(p.c, &r.table_id, &r.destination)),
    )
    .await?;
    try_join_all(actions.set.iter().map(|(table, dest, pcx, replace)| {
        route_table::set_route(p.c, table, dest, pcx, *replace)
    }))
    .await?;
    Ok(())
}

/// Deletes the connections `ids`: first the routes to `routes_to` in tables
/// not among `own` (the peer's, which get back exactly their old routes),
/// then the connections (the cluster's own tables go with the cluster).
async fn delete_connections(
    c: &AwsClients,
    ids: &[String],
    routes_to: &[String],
    routes: &[PeeringRoute],
    own: &[String],
) -> AwsResult<()> {
    let theirs = routes
        .iter()
        .filter(|r| routes_to.contains(&r.peering_id) && !own.contains(&r.table_id));
    try_join_all(theirs.map(|r| route_table::delete_route(c, &r.table_id, &r.destination))).await?;
    try_join_all(ids.iter().map(|id| peering::delete(c, id))).await?;
    Ok(())
}

/// Every connection of the cluster's, with the routes to them in the
/// peer's tables.
pub async fn delete(
    c: &AwsClients,
    observed: &[ObservedPeering],
    routes: &[PeeringRoute],
    own_tables: &[ObservedRouteTable],
) -> AwsResult<Deleted> {
    let live: Vec<String> = observed
        .iter()
        .filter(|p| p.state != PeeringState::Gone)
        .map(|p| p.id.clone())
        .collect();
    let own: Vec<String> = own_tables.iter().map(|t| t.id.clone()).collect();
    // The routes to every connection AWS lists, a deleted one's too.
    let all: Vec<String> = observed.iter().map(|p| p.id.clone()).collect();
    delete_connections(c, &live, &all, routes, &own).await?;
    Ok(Deleted::All)
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
        let own = vec![ObservedRouteTable {
            id: "rtb-own".into(),
            public: false,
            zone: None,
            default_target: None,
            associations: vec![],
        }];
        let peer = |id: &str, open: bool, routes: &[(&str, &str)]| PeerTable {
            id: id.into(),
            vpc_id: "vpc-p".into(),
            open,
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

        // A new connection: a route in each table, the peer's opened one included.
        let open = [peer("rtb-peer", true, &[("10.9.0.0/16", "local")])];
        let got = plan_routes(&wanted, &[], &own, &open).expect("routes");
        assert_eq!(got.set.len(), 2);
        assert!(got.set.iter().all(|s| !s.3) && got.delete.is_empty());
        // A table its owner did not open, or one of theirs already routing
        // the cluster's CIDR: refused, nothing set.
        let closed = [peer("rtb-peer", false, &[])];
        assert!(matches!(
            plan_routes(&wanted, &[], &own, &closed),
            Err(Error::InvalidSpec(SpecError::PeerTableClosed { .. }))
        ));
        let taken = [peer("rtb-peer", true, &[("10.0.0.0/16", "tgw-1")])];
        assert!(matches!(
            plan_routes(&wanted, &[], &own, &taken),
            Err(Error::InvalidSpec(SpecError::PeerRouteTaken { .. }))
        ));
        // A listed table AWS does not have.
        assert!(matches!(
            plan_routes(&wanted, &[], &own, &[]),
            Err(Error::ExistingNetwork(_))
        ));
        // In place: nothing to do; a table no longer listed: its route goes.
        let placed = [
            route("rtb-own", "10.9.0.0/16", "pcx-1"),
            route("rtb-peer", "10.0.0.0/16", "pcx-1"),
        ];
        assert_eq!(
            plan_routes(&wanted, &placed, &own, &[]).expect("in place"),
            RouteActions::default()
        );
        let unlisted = wanted_routes(
            &[connection("pcx-1", PeeringState::Active, &[])],
            &tables,
            cidr,
        );
        let got = plan_routes(&unlisted, &placed, &own, &[]).expect("unlisted");
        assert_eq!(got.delete, vec![route("rtb-peer", "10.0.0.0/16", "pcx-1")]);
        // Routes left to a connection deleted out of band: replaced, in the
        // peer's table too (they are ours).
        let stale = [
            route("rtb-own", "10.9.0.0/16", "pcx-0"),
            route("rtb-peer", "10.0.0.0/16", "pcx-0"),
        ];
        let got = plan_routes(&wanted, &stale, &own, &open).expect("stale");
        assert!(got.set.iter().all(|s| s.3), "{got:?}");
        assert!(got.delete.is_empty(), "{got:?}");
    }
}
