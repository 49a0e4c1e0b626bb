//! VPC peering connections, and the peer VPC's CIDR blocks (read to refuse
//! an overlap before anything is made).

use aws_sdk_ec2::types::ResourceType;

use super::settling::RetryNewIds;
use super::tags::{Owned, OwnershipTags, Scope};
use super::{required, AwsClients, AwsError, AwsResult, NotFoundExt, SdkResultExt};

/// A peering connection's state as the operator acts on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeeringState {
    /// `initiating-request`, `provisioning`: AWS is making it.
    Pending,
    /// `pending-acceptance`: the peer's owner must accept it.
    PendingAcceptance,
    Active,
    /// `deleting`, `deleted`, `rejected`, `failed`, `expired`: nothing
    /// left to act on.
    Gone,
}

impl PeeringState {
    pub fn of(code: &str) -> Self {
        match code {
            "initiating-request" | "provisioning" => PeeringState::Pending,
            "pending-acceptance" => PeeringState::PendingAcceptance,
            "active" => PeeringState::Active,
            _ => PeeringState::Gone,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedPeering {
    pub id: String,
    pub peer_vpc_id: String,
    pub state: PeeringState,
    /// The peer VPC's CIDR blocks, as AWS reports them.
    pub peer_cidrs: Vec<String>,
}

pub async fn describe(c: &AwsClients, scope: Scope<'_>) -> AwsResult<Vec<Owned<ObservedPeering>>> {
    const OP: &str = "ec2:DescribeVpcPeeringConnections";
    let mut out = Vec::new();
    let mut pages = c
        .ec2
        .describe_vpc_peering_connections()
        .filters(scope.filter())
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        for p in page.op(OP)?.vpc_peering_connections() {
            let Some(uid) = scope.owner_of(p.tags()) else {
                continue;
            };
            let accepter = p.accepter_vpc_info();
            let peering = ObservedPeering {
                id: required(p.vpc_peering_connection_id(), OP, "VpcPeeringConnectionId")?,
                peer_vpc_id: accepter
                    .and_then(|a| a.vpc_id())
                    .unwrap_or_default()
                    .to_string(),
                state: PeeringState::of(
                    p.status()
                        .and_then(|s| s.code())
                        .map(|c| c.as_str())
                        .unwrap_or_default(),
                ),
                peer_cidrs: accepter.map(cidrs_of).unwrap_or_default(),
            };
            out.push((uid, peering));
        }
    }
    Ok(out)
}

/// The peer's IPv4 CIDR blocks: the set, or the primary block alone when
/// AWS lists no set.
fn cidrs_of(info: &aws_sdk_ec2::types::VpcPeeringConnectionVpcInfo) -> Vec<String> {
    let set: Vec<String> = info
        .cidr_block_set()
        .iter()
        .filter_map(|b| b.cidr_block().map(str::to_string))
        .collect();
    match set.is_empty() {
        true => info.cidr_block().map(str::to_string).into_iter().collect(),
        false => set,
    }
}

/// The IPv4 CIDR blocks of a VPC the caller can see (a peer in the same
/// account); `None` when it is not visible (another account's).
pub async fn vpc_cidrs(c: &AwsClients, vpc_id: &str) -> AwsResult<Option<Vec<String>>> {
    let out = c
        .ec2
        .describe_vpcs()
        .vpc_ids(vpc_id)
        .send()
        .await
        .op("ec2:DescribeVpcs")
        .found()?;
    Ok(out.and_then(|o| {
        o.vpcs().first().map(|v| {
            v.cidr_block_association_set()
                .iter()
                .filter_map(|a| a.cidr_block().map(str::to_string))
                .collect()
        })
    }))
}

/// Requests a peering connection from `vpc_id` to the peer.
pub async fn create(
    c: &AwsClients,
    owner: &OwnershipTags,
    vpc_id: &str,
    peer_vpc_id: &str,
    peer_owner: Option<&str>,
    peer_region: Option<&str>,
) -> AwsResult<String> {
    const OP: &str = "ec2:CreateVpcPeeringConnection";
    let out = c
        .ec2
        .create_vpc_peering_connection()
        .vpc_id(vpc_id)
        .peer_vpc_id(peer_vpc_id)
        .set_peer_owner_id(peer_owner.map(str::to_string))
        .set_peer_region(peer_region.map(str::to_string))
        .tag_specifications(owner.ec2_spec(
            ResourceType::VpcPeeringConnection,
            "peering",
            &[(super::tags::PEER_VPC, peer_vpc_id)],
        ))
        .customize()
        .retrying_new_ids()
        .send()
        .await
        .op(OP)?;
    Ok(out
        .vpc_peering_connection()
        .and_then(|p| p.vpc_peering_connection_id())
        .ok_or(AwsError::Incomplete {
            operation: OP,
            missing: "VpcPeeringConnectionId",
        })?
        .to_string())
}

/// Accepts a connection whose peer is in the caller's account, in the
/// peer's region (`region`, else the caller's): AWS takes the acceptance
/// only there.
pub async fn accept(c: &AwsClients, id: &str, region: Option<&str>) -> AwsResult<()> {
    let ec2 = match region {
        Some(r) => aws_sdk_ec2::Client::from_conf(
            c.ec2
                .config()
                .to_builder()
                .region(aws_sdk_ec2::config::Region::new(r.to_string()))
                .build(),
        ),
        None => c.ec2.clone(),
    };
    ec2.accept_vpc_peering_connection()
        .vpc_peering_connection_id(id)
        .customize()
        .retrying_new_ids()
        .send()
        .await
        .op("ec2:AcceptVpcPeeringConnection")
        .map(|_| ())
}

pub async fn delete(c: &AwsClients, id: &str) -> AwsResult<()> {
    c.ec2
        .delete_vpc_peering_connection()
        .vpc_peering_connection_id(id)
        .send()
        .await
        .op("ec2:DeleteVpcPeeringConnection")
        .or_gone()
        .map(|_| ())
}
