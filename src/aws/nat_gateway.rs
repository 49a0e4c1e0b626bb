//! NAT gateways and their Elastic IPs.

use aws_sdk_ec2::types::{DomainType, NatGateway, NatGatewayState, ResourceType};

use super::settling::RetryNewIds;
use super::tags::{tag_value, Owned, OwnershipTags, Scope, ZONE};
use super::{required, AwsClients, AwsError, AwsResult, NotFoundExt, SdkResultExt};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedAddress {
    pub allocation_id: String,
    pub zone: Option<String>,
    /// Set while the address is in use (by a NAT gateway).
    pub association_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedNatGateway {
    pub id: String,
    pub zone: Option<String>,
    pub subnet_id: String,
    pub state: NatState,
    pub allocation_ids: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatState {
    Pending,
    Available,
    Deleting,
    /// Failed: replaced by a new gateway; AWS removes it by itself.
    Gone,
}

/// Elastic IPs (DescribeAddresses has no pages: one answer holds all).
pub async fn describe_addresses(
    c: &AwsClients,
    scope: Scope<'_>,
) -> AwsResult<Vec<Owned<ObservedAddress>>> {
    const OP: &str = "ec2:DescribeAddresses";
    let out = c
        .ec2
        .describe_addresses()
        .filters(scope.filter())
        .send()
        .await
        .op(OP)?;
    out.addresses()
        .iter()
        .filter_map(|a| Some((scope.owner_of(a.tags())?, a)))
        .map(|(uid, a)| {
            let address = ObservedAddress {
                allocation_id: required(a.allocation_id(), OP, "AllocationId")?,
                zone: tag_value(a.tags(), ZONE).map(str::to_string),
                association_id: a.association_id().map(str::to_string),
            };
            Ok((uid, address))
        })
        .collect()
}

pub async fn allocate_address(
    c: &AwsClients,
    owner: &OwnershipTags,
    zone: &str,
) -> AwsResult<String> {
    let out = c
        .ec2
        .allocate_address()
        .domain(DomainType::Vpc)
        .tag_specifications(owner.ec2_spec(ResourceType::ElasticIp, "nat-eip", &[(ZONE, zone)]))
        .send()
        .await
        .op("ec2:AllocateAddress")?;
    Ok(out
        .allocation_id()
        .ok_or(AwsError::Incomplete {
            operation: "ec2:AllocateAddress",
            missing: "AllocationId",
        })?
        .to_string())
}

pub async fn release_address(c: &AwsClients, allocation_id: &str) -> AwsResult<()> {
    c.ec2
        .release_address()
        .allocation_id(allocation_id)
        .send()
        .await
        .op("ec2:ReleaseAddress")
        .or_gone()
}

pub async fn describe(
    c: &AwsClients,
    scope: Scope<'_>,
) -> AwsResult<Vec<Owned<ObservedNatGateway>>> {
    const OP: &str = "ec2:DescribeNatGateways";
    let request = c.ec2.describe_nat_gateways().filter(scope.filter());
    // Deleted gateways linger in describe answers for a while: they are gone.
    let deleted = |n: &NatGateway| n.state() == Some(&NatGatewayState::Deleted);
    let out = owned_items!(scope, OP, request, nat_gateways, |n| where !deleted(n) => {
        ObservedNatGateway {
            id: required(n.nat_gateway_id(), OP, "NatGatewayId")?,
            zone: tag_value(n.tags(), ZONE).map(str::to_string),
            subnet_id: required(n.subnet_id(), OP, "SubnetId")?,
            state: match n.state() {
                Some(NatGatewayState::Available) => NatState::Available,
                Some(NatGatewayState::Pending) => NatState::Pending,
                Some(NatGatewayState::Deleting) => NatState::Deleting,
                _ => NatState::Gone,
            },
            allocation_ids: n
                .nat_gateway_addresses()
                .iter()
                .filter_map(|a| a.allocation_id().map(str::to_string))
                .collect(),
        }
    });
    Ok(out)
}

/// Creates a NAT gateway; `client_token` makes a retried create return the
/// first gateway instead of a second one.
pub async fn create(
    c: &AwsClients,
    owner: &OwnershipTags,
    zone: &str,
    subnet_id: &str,
    allocation_id: &str,
    client_token: &str,
) -> AwsResult<String> {
    let out = c
        .ec2
        .create_nat_gateway()
        .subnet_id(subnet_id)
        .allocation_id(allocation_id)
        .client_token(client_token)
        .tag_specifications(owner.ec2_spec(
            ResourceType::Natgateway,
            "nat-gateway",
            &[(ZONE, zone)],
        ))
        .customize()
        .retrying_new_ids()
        .send()
        .await
        .op("ec2:CreateNatGateway")?;
    Ok(out
        .nat_gateway()
        .and_then(|n| n.nat_gateway_id())
        .ok_or(AwsError::Incomplete {
            operation: "ec2:CreateNatGateway",
            missing: "NatGatewayId",
        })?
        .to_string())
}

pub async fn delete(c: &AwsClients, id: &str) -> AwsResult<()> {
    c.ec2
        .delete_nat_gateway()
        .nat_gateway_id(id)
        .send()
        .await
        .op("ec2:DeleteNatGateway")
        .or_gone()
}
