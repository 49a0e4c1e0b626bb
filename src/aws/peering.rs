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
    /// The routes back the operator made in the peer's tables, recorded on
    /// the connection before each was made ([`ROUTE_BACK`] tags): table →
    /// destination. No other route in a table not the cluster's is ever
    /// deleted (its owner's, to the same connection, stay).
    pub routes_back: std::collections::BTreeMap<String, String>,
}

/// Prefix of the connection's tag that records a route back:
/// `byoc.dev/route-back/<route table ID>` = the destination.
pub const ROUTE_BACK: &str = "byoc.dev/route-back/";

/// The tag key that records a route back in `table`.
fn route_back_key(table: &str) -> String {
    format!("{ROUTE_BACK}{table}")
}

/// The routes back recorded in `tags`.
fn routes_back(tags: &[aws_sdk_ec2::types::Tag]) -> std::collections::BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| {
            let table = t.key()?.strip_prefix(ROUTE_BACK)?;
            Some((table.to_string(), t.value()?.to_string()))
        })
        .collect()
}

/// Records, on connection `id`, a route back about to be made in a peer's
/// `table` (written first: a crash after the route cannot lose track of it).
pub async fn record_route_back(
    c: &AwsClients,
    id: &str,
    table: &str,
    destination: &str,
) -> AwsResult<()> {
    c.ec2
        .create_tags()
        .resources(id)
        .tags(
            aws_sdk_ec2::types::Tag::builder()
                .key(route_back_key(table))
                .value(destination)
                .build(),
        )
        .send()
        .await
        .op("ec2:CreateTags")
        .map(|_| ())
}

/// Forgets a route back once it is deleted (or found gone).
pub async fn forget_route_back(c: &AwsClients, id: &str, table: &str) -> AwsResult<()> {
    c.ec2
        .delete_tags()
        .resources(id)
        .tags(
            aws_sdk_ec2::types::Tag::builder()
                .key(route_back_key(table))
                .build(),
        )
        .send()
        .await
        .op("ec2:DeleteTags")
        .or_gone()
        .map(|_| ())
}

pub async fn describe(c: &AwsClients, scope: Scope<'_>) -> AwsResult<Vec<Owned<ObservedPeering>>> {
    const OP: &str = "ec2:DescribeVpcPeeringConnections";
    let out = owned_items!(
        scope,
        OP,
        c.ec2
            .describe_vpc_peering_connections()
            .filters(scope.filter()),
        vpc_peering_connections,
        |p| {
            let accepter = p.accepter_vpc_info();
            ObservedPeering {
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
                routes_back: routes_back(p.tags()),
            }
        }
    );
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

/// A peer VPC as the preflight needs it: its IPv4 CIDR blocks, and the
/// cluster and installation that made it, if the operator did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerVpc {
    pub cidrs: Vec<String>,
    pub claim: Option<super::tags::Claim>,
}

/// The VPC `vpc_id` when the caller can see it (a peer in the same
/// account); `None` when it is not visible (another account's).
pub async fn peer_vpc(c: &AwsClients, vpc_id: &str) -> AwsResult<Option<PeerVpc>> {
    let vpc = super::vpc::by_id(c, vpc_id).await?;
    Ok(vpc.map(|v| PeerVpc {
        cidrs: v
            .cidr_block_association_set()
            .iter()
            .filter_map(|a| a.cidr_block().map(str::to_string))
            .collect(),
        claim: super::tags::claim(v.tags()),
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
