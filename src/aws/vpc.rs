//! VPCs.

use aws_sdk_ec2::types::{AttributeBooleanValue, Filter, ResourceType};

use super::tags::OwnershipTags;
use super::{AwsClients, AwsError, AwsResult, NotFoundExt, SdkResultExt};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedVpc {
    pub id: String,
    pub cidr: String,
}

pub async fn describe(c: &AwsClients, owner: &OwnershipTags) -> AwsResult<Vec<ObservedVpc>> {
    let out = c
        .ec2
        .describe_vpcs()
        .filters(owner.filter())
        .send()
        .await
        .op("ec2:DescribeVpcs")?;
    Ok(out
        .vpcs()
        .iter()
        .filter(|v| owner.owns(v.tags()))
        .map(|v| ObservedVpc {
            id: v.vpc_id().unwrap_or_default().to_string(),
            cidr: v.cidr_block().unwrap_or_default().to_string(),
        })
        .collect())
}

/// Creates the VPC with DNS support and hostnames on.
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
        .send();
    let hostnames = c
        .ec2
        .modify_vpc_attribute()
        .vpc_id(id)
        .enable_dns_hostnames(on())
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

/// An existing (bring-your-own) VPC and subnets: checks they exist and the
/// subnets belong to the VPC. Returns `(subnet id, zone, public)`.
pub async fn verify_existing(
    c: &AwsClients,
    vpc_id: &str,
    subnet_ids: &[String],
) -> AwsResult<Result<Vec<(String, String, bool)>, String>> {
    let vpcs = c
        .ec2
        .describe_vpcs()
        .vpc_ids(vpc_id)
        .send()
        .await
        .op("ec2:DescribeVpcs");
    match vpcs {
        Err(e) if e.is_not_found() => {
            return Ok(Err(format!("existing VPC {vpc_id} was not found")))
        }
        Err(e) => return Err(e),
        Ok(out) if out.vpcs().is_empty() => {
            return Ok(Err(format!("existing VPC {vpc_id} was not found")))
        }
        Ok(_) => {}
    }
    let out = c
        .ec2
        .describe_subnets()
        .filters(Filter::builder().name("vpc-id").values(vpc_id).build())
        .send()
        .await
        .op("ec2:DescribeSubnets")?;
    let mut found = Vec::new();
    for id in subnet_ids {
        match out
            .subnets()
            .iter()
            .find(|s| s.subnet_id() == Some(id.as_str()))
        {
            Some(s) => found.push((
                id.clone(),
                s.availability_zone().unwrap_or_default().to_string(),
                s.map_public_ip_on_launch().unwrap_or(false),
            )),
            None => {
                return Ok(Err(format!(
                    "existing subnet {id} was not found in VPC {vpc_id}"
                )))
            }
        }
    }
    Ok(Ok(found))
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
