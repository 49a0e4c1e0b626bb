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
    let mut out = Vec::new();
    let mut pages = c
        .ec2
        .describe_route_tables()
        .filters(scope.filter())
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        for t in page.op(OP)?.route_tables() {
            let Some(uid) = scope.owner_of(t.tags()) else {
                continue;
            };
            let table = ObservedRouteTable {
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
            };
            out.push((uid, table));
        }
    }
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
    let nat = target.starts_with("nat-");
    // The same route either way; only the call differs.
    macro_rules! default_route {
        ($request:expr, $operation:literal) => {{
            let r = $request
                .route_table_id(table_id)
                .destination_cidr_block(DEFAULT_ROUTE);
            let r = if nat {
                r.nat_gateway_id(target)
            } else {
                r.gateway_id(target)
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
        default_route!(c.ec2.replace_route(), "ec2:ReplaceRoute")
    } else {
        default_route!(c.ec2.create_route(), "ec2:CreateRoute")
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
