//! VPCs.

use aws_sdk_ec2::types::{AttributeBooleanValue, Filter, ResourceType, Vpc};

use super::settling::RetryNewIds;
use super::tags::{claim, Claim, Owned, OwnershipTags, Scope};
use super::{required, AwsClients, AwsError, AwsResult, NotFoundExt, SdkResultExt};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedVpc {
    pub id: String,
    pub cidr: String,
}

pub async fn describe(c: &AwsClients, scope: Scope<'_>) -> AwsResult<Vec<Owned<ObservedVpc>>> {
    const OP: &str = "ec2:DescribeVpcs";
    let out = owned_items!(
        scope,
        OP,
        c.ec2.describe_vpcs().filters(scope.filter()),
        vpcs,
        |v| {
            ObservedVpc {
                id: required(v.vpc_id(), OP, "VpcId")?,
                cidr: required(v.cidr_block(), OP, "CidrBlock")?,
            }
        }
    );
    Ok(out)
}

/// Creates the VPC (DNS is turned on by `enable_dns`, a separate call).
pub async fn create(c: &AwsClients, owner: &OwnershipTags, cidr: &str) -> AwsResult<String> {
    let out = c
        .ec2
        .create_vpc()
        .cidr_block(cidr)
        .tag_specifications(owner.ec2_spec(ResourceType::Vpc, "vpc", &[]))
        .send()
        .await
        .op("ec2:CreateVpc")?;
    let id = out
        .vpc()
        .and_then(|v| v.vpc_id())
        .ok_or(AwsError::Incomplete {
            operation: "ec2:CreateVpc",
            missing: "VpcId",
        })?
        .to_string();
    Ok(id)
}

/// DNS resolution and DNS hostnames on, as instances need them; the two
/// attributes go in separate calls (AWS takes one per call), concurrently.
pub async fn enable_dns(c: &AwsClients, id: &str) -> AwsResult<()> {
    let on = || AttributeBooleanValue::builder().value(true).build();
    let support = c
        .ec2
        .modify_vpc_attribute()
        .vpc_id(id)
        .enable_dns_support(on())
        .customize()
        .retrying_new_ids()
        .send();
    let hostnames = c
        .ec2
        .modify_vpc_attribute()
        .vpc_id(id)
        .enable_dns_hostnames(on())
        .customize()
        .retrying_new_ids()
        .send();
    let (support, hostnames) = tokio::join!(support, hostnames);
    support.op("ec2:ModifyVpcAttribute")?;
    hostnames.op("ec2:ModifyVpcAttribute")?;
    Ok(())
}

pub async fn delete(c: &AwsClients, id: &str) -> AwsResult<()> {
    c.ec2
        .delete_vpc()
        .vpc_id(id)
        .send()
        .await
        .op("ec2:DeleteVpc")
        .or_gone()
}

/// A subnet of an existing (bring-your-own) VPC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExistingSubnet {
    pub id: String,
    pub zone: String,
    /// Launches get a public IPv4 address (as the VPC's owner set it).
    pub public: bool,
    /// The operator made it (for some cluster): whose.
    pub claim: Option<Claim>,
}

/// A brought VPC and its subnets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExistingVpc {
    /// The operator made the VPC (for some cluster): whose.
    pub claim: Option<Claim>,
    pub subnets: Vec<ExistingSubnet>,
}

/// The VPC `vpc_id`, by its ID (not by tag); `None` when the caller cannot
/// see it (it does not exist, or is another account's).
pub async fn by_id(c: &AwsClients, vpc_id: &str) -> AwsResult<Option<Vpc>> {
    let out = c
        .ec2
        .describe_vpcs()
        .vpc_ids(vpc_id)
        .send()
        .await
        .op("ec2:DescribeVpcs")
        .found()?;
    Ok(out.and_then(|o| o.vpcs.and_then(|v| v.into_iter().next())))
}

/// An existing VPC and its subnets; `None` when the VPC does not exist.
pub async fn existing_subnets(c: &AwsClients, vpc_id: &str) -> AwsResult<Option<ExistingVpc>> {
    let Some(vpc) = by_id(c, vpc_id).await? else {
        return Ok(None);
    };
    let vpc_claim = claim(vpc.tags());
    const OP: &str = "ec2:DescribeSubnets";
    let out = c
        .ec2
        .describe_subnets()
        .filters(Filter::builder().name("vpc-id").values(vpc_id).build())
        .send()
        .await
        .op(OP)?;
    out.subnets()
        .iter()
        .map(|s| {
            Ok(ExistingSubnet {
                id: required(s.subnet_id(), OP, "SubnetId")?,
                zone: required(s.availability_zone(), OP, "AvailabilityZone")?,
                public: s.map_public_ip_on_launch().unwrap_or(false),
                claim: claim(s.tags()),
            })
        })
        .collect::<AwsResult<Vec<_>>>()
        .map(|subnets| {
            Some(ExistingVpc {
                claim: vpc_claim,
                subnets,
            })
        })
}

/// The region's available zones, sorted by name.
pub async fn zones(c: &AwsClients) -> AwsResult<Vec<String>> {
    let out = c
        .ec2
        .describe_availability_zones()
        .filters(Filter::builder().name("state").values("available").build())
        .send()
        .await
        .op("ec2:DescribeAvailabilityZones")?;
    let mut zones: Vec<String> = out
        .availability_zones()
        .iter()
        .filter_map(|z| z.zone_name().map(str::to_string))
        .collect();
    zones.sort();
    Ok(zones)
}
