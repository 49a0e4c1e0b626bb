//! Route tables of the managed network: one public table (default route to
//! the internet gateway) serving the public subnets, and private tables
//! (default route to a NAT gateway, or none) serving the private subnets:
//! one per zone with a NAT gateway per zone, else one for all. Tables and
//! associations need only the VPC and subnets; each default route waits for
//! its gateway. Deleted, associations first, after the NAT gateways.

use std::collections::BTreeMap;

use futures::future::try_join_all;

use super::Pass;
use crate::api::NatGateways;
use crate::aws::nat_gateway::NatState;
use crate::aws::route_table::{self, ObservedRouteTable};
use crate::aws::subnet::ObservedSubnet;
use crate::aws::{AwsClients, AwsResult};
use crate::cluster::status::Progress;
use crate::Error;

use super::nat_gateways::nat_zones;
use super::{got, put, Board, Managed, StepInput, StepResult};

/// Where a table's default route goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteTo {
    InternetGateway,
    /// The NAT gateway of this zone.
    Nat(String),
    /// No default route (a private network without NAT).
    Nowhere,
}

/// A route table the network needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WantedTable {
    pub public: bool,
    /// Set for per-zone private tables.
    pub zone: Option<String>,
    /// The subnets it serves.
    pub serves: Vec<String>,
    pub route_to: RouteTo,
}

/// The tables the layout needs, given the subnets; without `internet`, no
/// public table.
pub fn wanted(
    nat: NatGateways,
    zones: &[String],
    subnets: &[ObservedSubnet],
    internet: bool,
) -> Vec<WantedTable> {
    let serving = |public: bool, zones: &[String]| -> Vec<String> {
        subnets
            .iter()
            .filter(|s| s.public == public && zones.contains(&s.zone))
            .map(|s| s.id.clone())
            .collect()
    };
    let public = WantedTable {
        public: true,
        zone: None,
        serves: serving(true, zones),
        route_to: RouteTo::InternetGateway,
    };
    let private = match nat {
        NatGateways::PerZone => zones
            .iter()
            .map(|z| WantedTable {
                public: false,
                zone: Some(z.clone()),
                serves: serving(false, std::slice::from_ref(z)),
                route_to: RouteTo::Nat(z.clone()),
            })
            .collect(),
        NatGateways::Single | NatGateways::None => vec![WantedTable {
            public: false,
            zone: None,
            serves: serving(false, zones),
            route_to: nat_zones(nat, zones)
                .into_iter()
                .next()
                .map_or(RouteTo::Nowhere, RouteTo::Nat),
        }],
    };
    let public = internet.then_some(public);
    public.into_iter().chain(private).collect()
}

/// What to do about one wanted table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableAction {
    /// The table of ours in its place, if any (else one is created).
    pub existing: Option<String>,
    /// Its default route's target now.
    pub current_target: Option<String>,
    /// Subnets to associate.
    pub associate: Vec<String>,
}

pub fn plan_table(want: &WantedTable, observed: &[ObservedRouteTable]) -> TableAction {
    let existing = observed
        .iter()
        .find(|t| t.public == want.public && (t.public || t.zone == want.zone));
    let associated: Vec<&str> = existing
        .map(|t| t.associations.iter().map(|(_, s)| s.as_str()).collect())
        .unwrap_or_default();
    TableAction {
        existing: existing.map(|t| t.id.clone()),
        current_target: existing.and_then(|t| t.default_target.clone()),
        associate: want
            .serves
            .iter()
            .filter(|s| !associated.contains(&s.as_str()))
            .cloned()
            .collect(),
    }
}

/// A default route to set: `Some(replace)` when it must change (`replace`:
/// there is one to replace), `None` when it points at `to` already.
pub fn route_change(current: Option<&str>, to: &str) -> Option<bool> {
    (current != Some(to)).then_some(current.is_some())
}

/// A table in place: its ID, its default route's target, what it is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    pub id: String,
    pub current_target: Option<String>,
    pub want: WantedTable,
}

/// Every wanted table exists, associated with the subnets it serves.
pub async fn ensure_tables(
    p: Pass<'_>,
    vpc_id: &str,
    wanted: &[WantedTable],
) -> Result<Vec<Table>, Error> {
    try_join_all(wanted.iter().map(|want| async move {
        let action = plan_table(want, &p.observed.route_tables);
        let id = match action.existing {
            Some(id) => id,
            None => {
                route_table::create(
                    p.c,
                    &p.spec.owner,
                    vpc_id,
                    want.public,
                    want.zone.as_deref(),
                )
                .await?
            }
        };
        try_join_all(
            action
                .associate
                .iter()
                .map(|s| route_table::associate(p.c, &id, s)),
        )
        .await?;
        Ok::<_, Error>(Table {
            id,
            current_target: action.current_target,
            want: want.clone(),
        })
    }))
    .await
}

async fn ensure_route(p: Pass<'_>, table: &Table, to: &str) -> Result<(), Error> {
    if let Some(replace) = route_change(table.current_target.as_deref(), to) {
        route_table::set_default_route(p.c, &table.id, to, replace).await?;
    }
    Ok(())
}

/// The public table's default route to the internet gateway.
pub async fn ensure_public_route(p: Pass<'_>, tables: &[Table], igw: &str) -> Result<(), Error> {
    for t in tables
        .iter()
        .filter(|t| t.want.route_to == RouteTo::InternetGateway)
    {
        ensure_route(p, t, igw).await?;
    }
    Ok(())
}

/// The private tables' default routes to available NAT gateways; whether
/// every one is in place (a pending gateway is waited for by the next pass).
pub async fn ensure_private_routes(
    p: Pass<'_>,
    tables: &[Table],
    nats: &BTreeMap<String, (String, NatState)>,
) -> Result<bool, Error> {
    let results = try_join_all(tables.iter().map(|t| async move {
        let RouteTo::Nat(zone) = &t.want.route_to else {
            return Ok::<_, Error>(true);
        };
        match nats.get(zone) {
            Some((nat_id, NatState::Available)) => ensure_route(p, t, nat_id).await.map(|()| true),
            _ => Ok(false),
        }
    }))
    .await?;
    Ok(results.into_iter().all(|done| done))
}

pub async fn delete(c: &AwsClients, observed: &[ObservedRouteTable]) -> AwsResult<()> {
    try_join_all(observed.iter().map(|t| route_table::delete(c, t))).await?;
    Ok(())
}

/// Step `RouteTables`: the tables and their associations.
pub fn step<'a>(m: &'a Managed, i: &'a StepInput<'a>, b: &'a Board) -> StepResult<'a> {
    Box::pin(async move {
        let subnets = got(&b.subnets, "the subnets")?;
        let wanted = wanted(m.nat, &m.zones, subnets, m.internet);
        let tables = ensure_tables(i.pass, got(&b.vpc, "the VPC")?, &wanted).await?;
        put(&b.tables, tables)
    })
}

/// Step `PublicRoute`: through the internet gateway (none without
/// internet).
pub fn public_route_step<'a>(m: &'a Managed, i: &'a StepInput<'a>, b: &'a Board) -> StepResult<'a> {
    Box::pin(async move {
        if m.internet {
            let (tables, igw) = (
                got(&b.tables, "the route tables")?,
                got(&b.igw, "the gateway")?,
            );
            ensure_public_route(i.pass, tables, igw).await?;
        }
        put(&b.public_route, ())
    })
}

/// Step `PrivateRoutes`: through the NAT gateways.
pub fn private_routes_step<'a>(
    _: &'a Managed,
    i: &'a StepInput<'a>,
    b: &'a Board,
) -> StepResult<'a> {
    Box::pin(async move {
        let (tables, nats) = (
            got(&b.tables, "the route tables")?,
            got(&b.nats, "the NATs")?,
        );
        put(
            &b.private_routes,
            ensure_private_routes(i.pass, tables, nats).await?,
        )
    })
}

/// This kind's part of a deletion pass (its row's `delete`).
pub fn deletion<'a>(
    c: &'a AwsClients,
    _: &'a crate::aws::OwnershipTags,
    o: &'a super::Observed,
) -> super::DeleteResult<'a> {
    super::at_once(delete(c, &o.route_tables))
}

/// Row `RouteTables`'s learning: their IDs.
pub fn learn(b: &Board, p: &mut Progress) -> bool {
    let tables = b.tables.get();
    tables
        .map(|t| p.network.route_table_ids = t.iter().map(|t| t.id.clone()).collect())
        .is_some()
}

/// Row `PrivateRoutes`'s learning: every route through a NAT gateway is in
/// place (none waits for its gateway).
pub fn learn_private_routes(b: &Board, _: &mut Progress) -> bool {
    b.private_routes.get() == Some(&true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet(id: &str, zone: &str, public: bool) -> ObservedSubnet {
        ObservedSubnet {
            id: id.into(),
            vpc_id: "vpc-1".into(),
            zone: zone.into(),
            cidr: String::new(),
            public,
            map_public_ip: public,
        }
    }

    fn subnets() -> Vec<ObservedSubnet> {
        vec![
            subnet("pub-a", "a", true),
            subnet("priv-a", "a", false),
            subnet("pub-b", "b", true),
            subnet("priv-b", "b", false),
        ]
    }

    fn zones() -> Vec<String> {
        vec!["a".into(), "b".into()]
    }

    fn table(
        id: &str,
        public: bool,
        zone: Option<&str>,
        target: Option<&str>,
        associated: &[&str],
    ) -> ObservedRouteTable {
        ObservedRouteTable {
            id: id.into(),
            public,
            zone: zone.map(String::from),
            default_target: target.map(String::from),
            associations: associated
                .iter()
                .map(|s| (format!("assoc-{s}"), s.to_string()))
                .collect(),
        }
    }

    #[test]
    fn wanted_tables_per_layout() {
        let summary = |nat| -> Vec<(bool, Option<String>, Vec<String>, RouteTo)> {
            wanted(nat, &zones(), &subnets(), true)
                .into_iter()
                .map(|t| (t.public, t.zone, t.serves, t.route_to))
                .collect()
        };
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let public = (true, None, s(&["pub-a", "pub-b"]), RouteTo::InternetGateway);
        assert_eq!(
            summary(NatGateways::PerZone),
            vec![
                public.clone(),
                (
                    false,
                    Some("a".into()),
                    s(&["priv-a"]),
                    RouteTo::Nat("a".into())
                ),
                (
                    false,
                    Some("b".into()),
                    s(&["priv-b"]),
                    RouteTo::Nat("b".into())
                ),
            ]
        );
        assert_eq!(
            summary(NatGateways::Single),
            vec![
                public.clone(),
                (
                    false,
                    None,
                    s(&["priv-a", "priv-b"]),
                    RouteTo::Nat("a".into())
                )
            ]
        );
        assert_eq!(
            summary(NatGateways::None),
            vec![
                public,
                (false, None, s(&["priv-a", "priv-b"]), RouteTo::Nowhere)
            ]
        );
        let private = subnets()
            .into_iter()
            .filter(|s| !s.public)
            .collect::<Vec<_>>();
        let no_internet: Vec<_> = wanted(NatGateways::None, &zones(), &private, false)
            .into_iter()
            .map(|t| (t.public, t.zone, t.serves, t.route_to))
            .collect();
        assert_eq!(
            no_internet,
            vec![(false, None, s(&["priv-a", "priv-b"]), RouteTo::Nowhere)],
            "without internet: one private table, no public one"
        );
    }

    #[test]
    fn plan_table_adopts_and_associates_what_is_missing() {
        let per_zone = wanted(NatGateways::PerZone, &zones(), &subnets(), true);
        let (public, private_b) = (&per_zone[0], &per_zone[2]);
        // (wanted, observed, existing, target, associate, why)
        type Row<'a> = (
            &'a WantedTable,
            Vec<ObservedRouteTable>,
            Option<&'a str>,
            Option<&'a str>,
            Vec<&'a str>,
            &'a str,
        );
        let rows: Vec<Row> = vec![
            (
                public,
                vec![],
                None,
                None,
                vec!["pub-a", "pub-b"],
                "a new table",
            ),
            (
                public,
                vec![table("rtb-1", true, None, None, &["pub-a"])],
                Some("rtb-1"),
                None,
                vec!["pub-b"],
                "a crash between associations: the rest associated",
            ),
            (
                private_b,
                vec![table("rtb-a", false, Some("a"), Some("nat-a"), &["priv-a"])],
                None,
                None,
                vec!["priv-b"],
                "another zone's table is not this one",
            ),
            (
                private_b,
                vec![table("rtb-b", false, Some("b"), Some("nat-b"), &["priv-b"])],
                Some("rtb-b"),
                Some("nat-b"),
                vec![],
                "converged",
            ),
        ];
        for (want, observed, existing, target, associate, why) in rows {
            let got = plan_table(want, &observed);
            assert_eq!(got.existing.as_deref(), existing, "{why}");
            assert_eq!(got.current_target.as_deref(), target, "{why}");
            assert_eq!(got.associate, associate, "{why}");
        }
    }

    #[test]
    fn route_changes() {
        assert_eq!(route_change(None, "igw-1"), Some(false), "created");
        assert_eq!(route_change(Some("igw-1"), "igw-1"), None, "in place");
        assert_eq!(
            route_change(Some("nat-old"), "nat-new"),
            Some(true),
            "a replaced gateway: replaced"
        );
    }
}
