//! Route tables, their default routes and subnet associations.

use aws_sdk_ec2::types::ResourceType;

use super::settling::RetryNewIds;
use super::tags::{tag_value, Owned, OwnershipTags, Scope, PART, ZONE};
use super::{required, AwsClients, AwsError, AwsResult, NotFoundExt, SdkResultExt};

pub const DEFAULT_ROUTE: &str = "0.0.0.0/0";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedRouteTable {
    pub id: String,
    pub public: bool,
    pub zone: Option<String>,
    /// Target of the default route: an internet or NAT gateway ID.
    pub default_target: Option<String>,
    /// `(association id, subnet id)`.
    pub associations: Vec<(String, String)>,
}

pub async fn describe(
    c: &AwsClients,
    scope: Scope<'_>,
) -> AwsResult<Vec<Owned<ObservedRouteTable>>> {
    const OP: &str = "ec2:DescribeRouteTables";
    let out = owned_items!(
        scope,
        OP,
        c.ec2.describe_route_tables().filters(scope.filter()),
        route_tables,
        |t| {
            ObservedRouteTable {
                id: required(t.route_table_id(), OP, "RouteTableId")?,
                public: tag_value(t.tags(), PART) == Some("public-route-table"),
                zone: tag_value(t.tags(), ZONE).map(str::to_string),
                default_target: t
                    .routes()
                    .iter()
                    .find(|r| r.destination_cidr_block() == Some(DEFAULT_ROUTE))
                    .and_then(|r| r.gateway_id().or(r.nat_gateway_id()))
                    .map(str::to_string),
                associations: t
                    .associations()
                    .iter()
                    .filter(|a| !a.main().unwrap_or(false))
                    .filter_map(|a| {
                        Some((
                            a.route_table_association_id()?.to_string(),
                            a.subnet_id()?.to_string(),
                        ))
                    })
                    .collect(),
            }
        }
    );
    Ok(out)
}

pub async fn create(
    c: &AwsClients,
    owner: &OwnershipTags,
    vpc_id: &str,
    public: bool,
    zone: Option<&str>,
) -> AwsResult<String> {
    let part = if public {
        "public-route-table"
    } else {
        "private-route-table"
    };
    let extra: Vec<(&str, &str)> = zone.map(|z| vec![(ZONE, z)]).unwrap_or_default();
    let out = c
        .ec2
        .create_route_table()
        .vpc_id(vpc_id)
        .tag_specifications(owner.ec2_spec(ResourceType::RouteTable, part, &extra))
        .customize()
        .retrying_new_ids()
        .send()
        .await
        .op("ec2:CreateRouteTable")?;
    Ok(out
        .route_table()
        .and_then(|t| t.route_table_id())
        .ok_or(AwsError::Incomplete {
            operation: "ec2:CreateRouteTable",
            missing: "RouteTableId",
        })?
        .to_string())
}

/// Points the default route at `target` (`igw-…` or `nat-…`), creating or replacing it.
pub async fn set_default_route(
    c: &AwsClients,
    table_id: &str,
    target: &str,
    exists: bool,
) -> AwsResult<()> {
    set_route(c, table_id, DEFAULT_ROUTE, target, exists).await
}

/// Points the route to `destination` at `target` (`igw-…`, `nat-…` or
/// `pcx-…`), creating it or, when one `exists`, replacing it.
pub async fn set_route(
    c: &AwsClients,
    table_id: &str,
    destination: &str,
    target: &str,
    exists: bool,
) -> AwsResult<()> {
    // The same route either way; only the call differs.
    macro_rules! route {
        ($request:expr, $operation:literal) => {{
            let r = $request
                .route_table_id(table_id)
                .destination_cidr_block(destination);
            let r = match target.split_once('-').map(|(kind, _)| kind) {
                Some("nat") => r.nat_gateway_id(target),
                Some("pcx") => r.vpc_peering_connection_id(target),
                _ => r.gateway_id(target),
            };
            r.customize()
                .retrying_new_ids()
                .send()
                .await
                .op($operation)
                .map(|_| ())
        }};
    }
    if exists {
        route!(c.ec2.replace_route(), "ec2:ReplaceRoute")
    } else {
        route!(c.ec2.create_route(), "ec2:CreateRoute")
    }
}

pub async fn associate(c: &AwsClients, table_id: &str, subnet_id: &str) -> AwsResult<()> {
    c.ec2
        .associate_route_table()
        .route_table_id(table_id)
        .subnet_id(subnet_id)
        .customize()
        .retrying_new_ids()
        .send()
        .await
        .op("ec2:AssociateRouteTable")
        .map(|_| ())
}

pub async fn disassociate(c: &AwsClients, association_id: &str) -> AwsResult<()> {
    c.ec2
        .disassociate_route_table()
        .association_id(association_id)
        .send()
        .await
        .op("ec2:DisassociateRouteTable")
        .or_gone()
}

/// Disassociates, then deletes.
pub async fn delete(c: &AwsClients, table: &ObservedRouteTable) -> AwsResult<()> {
    for (association, _) in &table.associations {
        disassociate(c, association).await?;
    }
    c.ec2
        .delete_route_table()
        .route_table_id(&table.id)
        .send()
        .await
        .op("ec2:DeleteRouteTable")
        .or_gone()
}

/// Tag by which a team opens one of its own route tables to routes back
/// to the clusters of one namespace of one installation
/// (`<installation>/<namespace>`, [`opened_to`]) that peer with it
/// (`peerRouteTableIds`); the generated policy lets the operator change no
/// other table it does not own, and only this installation's.
pub const PEER_ROUTES: &str = "byoc.dev/peer-routes";

/// The [`PEER_ROUTES`] value that opens a table to the clusters of
/// `namespace` of `installation`.
pub fn opened_to(installation: &str, namespace: &str) -> String {
    format!("{installation}/{namespace}")
}

/// A route, in any table, to a peering connection.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PeeringRoute {
    pub table_id: String,
    pub destination: String,
    pub peering_id: String,
}

/// Every route to one of the peering connections `ids`, in any table the
/// caller sees: one call (none without connections).
pub async fn peering_routes(c: &AwsClients, ids: &[String]) -> AwsResult<Vec<PeeringRoute>> {
    const OP: &str = "ec2:DescribeRouteTables";
    if ids.is_empty() {
        return Ok(vec![]);
    }
    let filter = aws_sdk_ec2::types::Filter::builder()
        .name("route.vpc-peering-connection-id")
        .set_values(Some(ids.to_vec()))
        .build();
    let mut out = Vec::new();
    let mut pages = c
        .ec2
        .describe_route_tables()
        .filters(filter)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        for t in page.op(OP)?.route_tables() {
            let table_id = required(t.route_table_id(), OP, "RouteTableId")?;
            for r in t.routes() {
                let (Some(dest), Some(pcx)) =
                    (r.destination_cidr_block(), r.vpc_peering_connection_id())
                else {
                    continue;
                };
                if ids.iter().any(|i| i == pcx) {
                    out.push(PeeringRoute {
                        table_id: table_id.clone(),
                        destination: dest.to_string(),
                        peering_id: pcx.to_string(),
                    });
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// A route table of the peer's, as far as routes back need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerTable {
    pub id: String,
    pub vpc_id: String,
    /// Its [`PEER_ROUTES`] tag: whom its owner opened it to.
    pub opened_to: Option<String>,
    /// `(destination, target)` of each IPv4 route.
    pub routes: Vec<(String, String)>,
}

/// The listed tables that exist and the caller sees.
pub async fn peer_tables(c: &AwsClients, ids: &[String]) -> AwsResult<Vec<PeerTable>> {
    const OP: &str = "ec2:DescribeRouteTables";
    if ids.is_empty() {
        return Ok(vec![]);
    }
    let filter = aws_sdk_ec2::types::Filter::builder()
        .name("route-table-id")
        .set_values(Some(ids.to_vec()))
        .build();
    let out = c
        .ec2
        .describe_route_tables()
        .filters(filter)
        .send()
        .await
        .op(OP)?;
    out.route_tables()
        .iter()
        .map(|t| {
            Ok(PeerTable {
                id: required(t.route_table_id(), OP, "RouteTableId")?,
                vpc_id: t.vpc_id().unwrap_or_default().to_string(),
                opened_to: tag_value(t.tags(), PEER_ROUTES).map(str::to_string),
                routes: t
                    .routes()
                    .iter()
                    .filter_map(|r| {
                        let dest = r.destination_cidr_block()?;
                        let target = r
                            .gateway_id()
                            .or(r.nat_gateway_id())
                            .or(r.vpc_peering_connection_id())
                            .or(r.transit_gateway_id())
                            .or(r.network_interface_id())
                            .or(r.instance_id())
                            .unwrap_or("unknown");
                        Some((dest.to_string(), target.to_string()))
                    })
                    .collect(),
            })
        })
        .collect()
}

pub async fn delete_route(c: &AwsClients, table_id: &str, destination: &str) -> AwsResult<()> {
    c.ec2
        .delete_route()
        .route_table_id(table_id)
        .destination_cidr_block(destination)
        .send()
        .await
        .op("ec2:DeleteRoute")
        .or_gone()
}
