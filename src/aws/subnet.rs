//! Subnets.

use aws_sdk_ec2::types::{AttributeBooleanValue, ResourceType};

use super::settling::RetryNewIds;
use super::tags::{tag_value, Owned, OwnershipTags, Scope, PART, ZONE};
use super::{required, AwsClients, AwsError, AwsResult, NotFoundExt, SdkResultExt};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedSubnet {
    pub id: String,
    pub vpc_id: String,
    pub zone: String,
    pub cidr: String,
    pub public: bool,
    /// Instances launched here get a public IPv4 address.
    pub map_public_ip: bool,
}

pub async fn describe(c: &AwsClients, scope: Scope<'_>) -> AwsResult<Vec<Owned<ObservedSubnet>>> {
    const OP: &str = "ec2:DescribeSubnets";
    let out = owned_items!(
        scope,
        OP,
        c.ec2.describe_subnets().filters(scope.filter()),
        subnets,
        |s| {
            ObservedSubnet {
                id: required(s.subnet_id(), OP, "SubnetId")?,
                vpc_id: required(s.vpc_id(), OP, "VpcId")?,
                zone: required(
                    tag_value(s.tags(), ZONE).or(s.availability_zone()),
                    OP,
                    "AvailabilityZone",
                )?,
                cidr: required(s.cidr_block(), OP, "CidrBlock")?,
                public: tag_value(s.tags(), PART) == Some("public-subnet"),
                map_public_ip: s.map_public_ip_on_launch().unwrap_or(false),
            }
        }
    );
    Ok(out)
}

pub async fn create(
    c: &AwsClients,
    owner: &OwnershipTags,
    vpc_id: &str,
    zone: &str,
    cidr: &str,
    public: bool,
) -> AwsResult<ObservedSubnet> {
    let part = if public {
        "public-subnet"
    } else {
        "private-subnet"
    };
    let out = c
        .ec2
        .create_subnet()
        .vpc_id(vpc_id)
        .availability_zone(zone)
        .cidr_block(cidr)
        .tag_specifications(owner.ec2_spec(ResourceType::Subnet, part, &[(ZONE, zone)]))
        .customize()
        .retrying_new_ids()
        .send()
        .await
        .op("ec2:CreateSubnet")?;
    let id = out
        .subnet()
        .and_then(|s| s.subnet_id())
        .ok_or(AwsError::Incomplete {
            operation: "ec2:CreateSubnet",
            missing: "SubnetId",
        })?
        .to_string();
    Ok(ObservedSubnet {
        id,
        vpc_id: vpc_id.to_string(),
        zone: zone.to_string(),
        cidr: cidr.to_string(),
        public,
        map_public_ip: false,
    })
}

/// Instances launched in the subnet get a public IPv4 address (public subnets).
pub async fn map_public_ip(c: &AwsClients, id: &str) -> AwsResult<()> {
    c.ec2
        .modify_subnet_attribute()
        .subnet_id(id)
        .map_public_ip_on_launch(AttributeBooleanValue::builder().value(true).build())
        .customize()
        .retrying_new_ids()
        .send()
        .await
        .op("ec2:ModifySubnetAttribute")?;
    Ok(())
}

pub async fn delete(c: &AwsClients, id: &str) -> AwsResult<()> {
    c.ec2
        .delete_subnet()
        .subnet_id(id)
        .send()
        .await
        .op("ec2:DeleteSubnet")
        .or_gone()
}
