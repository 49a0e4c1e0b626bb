//! The cluster's security groups (the nodes', and the VPC endpoints') and
//! their ingress rules.

use aws_sdk_ec2::types::{IpPermission, IpRange, ResourceType, UserIdGroupPair};

use super::settling::RetryNewIds;
use super::tags::{claim, tag_value, Claim, Owned, OwnershipTags, Scope, PART};
use super::{required, AwsClients, AwsError, AwsResult, NotFoundExt, SdkResultExt};

/// A security group ingress permission, normalised for comparison.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Permission {
    /// `tcp`, `udp`, `icmp` or `-1` (all).
    pub protocol: String,
    pub from_port: Option<i32>,
    pub to_port: Option<i32>,
    pub source: Source,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    Cidr(String),
    /// The group itself (traffic between nodes).
    Group(String),
}

/// What a group of the cluster's is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupPart {
    Nodes,
    /// The interface VPC endpoints' (HTTPS from the VPC).
    Endpoints,
}

impl GroupPart {
    fn tag(self) -> &'static str {
        match self {
            GroupPart::Nodes => "nodes-security-group",
            GroupPart::Endpoints => "endpoints-security-group",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedSecurityGroup {
    pub id: String,
    pub vpc_id: String,
    pub part: GroupPart,
    pub ingress: Vec<Permission>,
}

pub async fn describe(
    c: &AwsClients,
    scope: Scope<'_>,
) -> AwsResult<Vec<Owned<ObservedSecurityGroup>>> {
    const OP: &str = "ec2:DescribeSecurityGroups";
    let out = owned_items!(
        scope,
        OP,
        c.ec2.describe_security_groups().filters(scope.filter()),
        security_groups,
        |g| {
            ObservedSecurityGroup {
                id: required(g.group_id(), OP, "GroupId")?,
                vpc_id: required(g.vpc_id(), OP, "VpcId")?,
                part: match tag_value(g.tags(), PART) {
                    Some(t) if t == GroupPart::Endpoints.tag() => GroupPart::Endpoints,
                    _ => GroupPart::Nodes,
                },
                ingress: g.ip_permissions().iter().flat_map(permissions_of).collect(),
            }
        }
    );
    Ok(out)
}

/// Splits an AWS permission (several sources) into one per source.
fn permissions_of(p: &IpPermission) -> Vec<Permission> {
    let protocol = p.ip_protocol().unwrap_or("-1").to_string();
    let all = protocol == "-1";
    let (from_port, to_port) = if all {
        (None, None)
    } else {
        (p.from_port(), p.to_port())
    };
    let cidrs = p
        .ip_ranges()
        .iter()
        .filter_map(|r| r.cidr_ip())
        .map(|c| Source::Cidr(c.into()));
    let groups = p
        .user_id_group_pairs()
        .iter()
        .filter_map(|g| g.group_id())
        .map(|g| Source::Group(g.into()));
    cidrs
        .chain(groups)
        .map(|source| Permission {
            protocol: protocol.clone(),
            from_port,
            to_port,
            source,
        })
        .collect()
}

fn to_aws(p: &Permission) -> IpPermission {
    let b = IpPermission::builder().ip_protocol(&p.protocol);
    let b = match (p.from_port, p.to_port) {
        (Some(f), Some(t)) => b.from_port(f).to_port(t),
        _ => b,
    };
    match &p.source {
        Source::Cidr(c) => b.ip_ranges(IpRange::builder().cidr_ip(c).build()),
        Source::Group(g) => b.user_id_group_pairs(UserIdGroupPair::builder().group_id(g).build()),
    }
    .build()
}

/// Which of `ids` exist in `vpc_id`.
/// Which of the security groups `ids` are in `vpc_id`, each with the
/// operator's claim on it when it made it.
pub async fn existing_in_vpc(
    c: &AwsClients,
    vpc_id: &str,
    ids: &[String],
) -> AwsResult<Vec<(String, Option<Claim>)>> {
    let out = c
        .ec2
        .describe_security_groups()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("group-id")
                .set_values(Some(ids.to_vec()))
                .build(),
        )
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("vpc-id")
                .values(vpc_id)
                .build(),
        )
        .send()
        .await
        .op("ec2:DescribeSecurityGroups")?;
    Ok(out
        .security_groups()
        .iter()
        .filter_map(|g| Some((g.group_id()?.to_string(), claim(g.tags()))))
        .collect())
}

pub async fn create(
    c: &AwsClients,
    owner: &OwnershipTags,
    vpc_id: &str,
    name: &str,
    part: GroupPart,
) -> AwsResult<String> {
    let of = match part {
        GroupPart::Nodes => "nodes",
        GroupPart::Endpoints => "VPC endpoints",
    };
    let out = c
        .ec2
        .create_security_group()
        .group_name(name)
        .description(format!(
            "byoc-operator {of} of {}/{}",
            owner.namespace, owner.name
        ))
        .vpc_id(vpc_id)
        .tag_specifications(owner.ec2_spec(ResourceType::SecurityGroup, part.tag(), &[]))
        .customize()
        .retrying_new_ids()
        .send()
        .await
        .op("ec2:CreateSecurityGroup")?;
    Ok(out
        .group_id()
        .ok_or(AwsError::Incomplete {
            operation: "ec2:CreateSecurityGroup",
            missing: "GroupId",
        })?
        .to_string())
}

pub async fn authorize(c: &AwsClients, group_id: &str, add: &[Permission]) -> AwsResult<()> {
    if add.is_empty() {
        return Ok(());
    }
    match c
        .ec2
        .authorize_security_group_ingress()
        .group_id(group_id)
        .set_ip_permissions(Some(add.iter().map(to_aws).collect()))
        .customize()
        .retrying_new_ids()
        .send()
        .await
        .op("ec2:AuthorizeSecurityGroupIngress")
    {
        Err(e) if e.code() == Some("InvalidPermission.Duplicate") => Ok(()),
        other => other.map(|_| ()),
    }
}

pub async fn revoke(c: &AwsClients, group_id: &str, remove: &[Permission]) -> AwsResult<()> {
    if remove.is_empty() {
        return Ok(());
    }
    c.ec2
        .revoke_security_group_ingress()
        .group_id(group_id)
        .set_ip_permissions(Some(remove.iter().map(to_aws).collect()))
        .customize()
        .retrying_new_ids()
        .send()
        .await
        .op("ec2:RevokeSecurityGroupIngress")
        .or_gone()
}

pub async fn delete(c: &AwsClients, id: &str) -> AwsResult<()> {
    c.ec2
        .delete_security_group()
        .group_id(id)
        .send()
        .await
        .op("ec2:DeleteSecurityGroup")
        .or_gone()
}
