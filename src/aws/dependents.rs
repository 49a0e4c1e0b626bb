//! What else is in a cluster's VPCs: network interfaces, security groups and
//! instances, whoever owns them. Read when AWS refuses a deletion
//! (`DependencyViolation`), to say what blocks it; nothing here changes
//! anything.

use super::tags::CLUSTER_UID;
use super::{AwsClients, AwsResult, SdkResultExt};
use aws_sdk_ec2::types::{Filter, Tag};

/// One thing found in the VPCs, with the cluster UID it is tagged with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dependent {
    /// `network-interface`, `security-group` or `instance`.
    pub kind: &'static str,
    pub id: String,
    /// Its description, name or type, for people.
    pub detail: String,
    /// The `byoc.dev/cluster-uid` tag, when it has one.
    pub owner_uid: Option<String>,
    /// The instance an interface is attached to.
    pub attached_to: Option<String>,
    /// A security group named `default` (every VPC has one).
    pub default_group: bool,
    /// An instance that is `shutting-down` or `terminated`.
    pub ending: bool,
}

fn owner_of(tags: &[Tag]) -> Option<String> {
    tags.iter()
        .find(|t| t.key() == Some(CLUSTER_UID))
        .and_then(|t| t.value())
        .map(String::from)
}

/// Every network interface, security group and instance in `vpc_ids`.
pub async fn describe(c: &AwsClients, vpc_ids: &[String]) -> AwsResult<Vec<Dependent>> {
    if vpc_ids.is_empty() {
        return Ok(vec![]);
    }
    let in_vpcs = |name: &str| {
        Filter::builder()
            .name(name)
            .set_values(Some(vpc_ids.to_vec()))
            .build()
    };
    let (interfaces, groups, reservations) = tokio::try_join!(
        async {
            c.ec2
                .describe_network_interfaces()
                .filters(in_vpcs("vpc-id"))
                .send()
                .await
                .op("ec2:DescribeNetworkInterfaces")
        },
        async {
            c.ec2
                .describe_security_groups()
                .filters(in_vpcs("vpc-id"))
                .send()
                .await
                .op("ec2:DescribeSecurityGroups")
        },
        async {
            c.ec2
                .describe_instances()
                .filters(in_vpcs("vpc-id"))
                .send()
                .await
                .op("ec2:DescribeInstances")
        },
    )?;
    let mut found: Vec<Dependent> = interfaces
        .network_interfaces()
        .iter()
        .filter_map(interface)
        .collect();
    found.extend(groups.security_groups().iter().filter_map(group));
    found.extend(
        reservations
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .filter_map(instance),
    );
    Ok(found)
}

fn interface(i: &aws_sdk_ec2::types::NetworkInterface) -> Option<Dependent> {
    Some(Dependent {
        kind: "network-interface",
        id: i.network_interface_id()?.into(),
        detail: i
            .description()
            .filter(|d| !d.is_empty())
            .map(String::from)
            .or_else(|| i.interface_type().map(|t| t.as_str().to_string()))
            .unwrap_or_default(),
        owner_uid: owner_of(i.tag_set()),
        attached_to: i
            .attachment()
            .and_then(|a| a.instance_id())
            .map(String::from),
        default_group: false,
        ending: false,
    })
}

fn group(g: &aws_sdk_ec2::types::SecurityGroup) -> Option<Dependent> {
    let name = g.group_name().unwrap_or_default();
    Some(Dependent {
        kind: "security-group",
        id: g.group_id()?.into(),
        detail: name.into(),
        owner_uid: owner_of(g.tags()),
        attached_to: None,
        default_group: name == "default",
        ending: false,
    })
}

fn instance(i: &aws_sdk_ec2::types::Instance) -> Option<Dependent> {
    let state = i
        .state()
        .and_then(|s| s.name())
        .map(|s| s.as_str().to_string());
    Some(Dependent {
        kind: "instance",
        id: i.instance_id()?.into(),
        detail: format!(
            "{}, {}",
            i.instance_type().map(|t| t.as_str()).unwrap_or("?"),
            state.as_deref().unwrap_or("?")
        ),
        owner_uid: owner_of(i.tags()),
        attached_to: None,
        default_group: false,
        ending: matches!(state.as_deref(), Some("shutting-down" | "terminated")),
    })
}
