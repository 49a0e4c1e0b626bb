//! The only module that talks to AWS: one file per kind of resource. Each
//! describes by ownership tag, creates with the tags attached atomically,
//! and deletes only what carries them.

pub mod dependents;
pub mod error;
pub mod instance_profile;
pub mod instances;
pub mod internet_gateway;
pub mod nat_gateway;
pub mod route_table;
pub mod security_group;
pub mod subnet;
pub mod tags;
pub mod vpc;

use aws_config::{Region, SdkConfig};

pub use error::{AwsError, AwsResult, ErrorClass, NotFoundExt, SdkResultExt};
pub use tags::OwnershipTags;

use crate::metrics::Metrics;

/// EC2 and IAM clients acting as one account in one region, counting calls.
#[derive(Clone, Debug)]
pub struct AwsClients {
    pub ec2: aws_sdk_ec2::Client,
    pub iam: aws_sdk_iam::Client,
}

impl AwsClients {
    pub fn new(config: &SdkConfig, region: &str, metrics: &Metrics) -> Self {
        let ec2 = aws_sdk_ec2::config::Builder::from(config)
            .region(Region::new(region.to_string()))
            .interceptor(metrics.aws_interceptor())
            .build();
        let iam = aws_sdk_iam::config::Builder::from(config)
            .interceptor(metrics.aws_interceptor())
            .build();
        AwsClients {
            ec2: aws_sdk_ec2::Client::from_conf(ec2),
            iam: aws_sdk_iam::Client::from_conf(iam),
        }
    }
}

/// Everything of one cluster's in AWS, described by ownership tag.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub vpcs: Vec<vpc::ObservedVpc>,
    pub subnets: Vec<subnet::ObservedSubnet>,
    pub internet_gateways: Vec<internet_gateway::ObservedInternetGateway>,
    pub addresses: Vec<nat_gateway::ObservedAddress>,
    pub nat_gateways: Vec<nat_gateway::ObservedNatGateway>,
    pub route_tables: Vec<route_table::ObservedRouteTable>,
    pub security_groups: Vec<security_group::ObservedSecurityGroup>,
    pub instances: Vec<crate::cluster::plan::ObservedInstance>,
    pub iam: instance_profile::ObservedIam,
}

impl Observed {
    /// Describes every kind at once: one tag-filtered call per kind.
    pub async fn describe(clients: &AwsClients, owner: &OwnershipTags) -> AwsResult<Observed> {
        let (vpcs, subnets, igws, addresses, nats, route_tables, sgs, instances, iam) = tokio::try_join!(
            vpc::describe(clients, owner),
            subnet::describe(clients, owner),
            internet_gateway::describe(clients, owner),
            nat_gateway::describe_addresses(clients, owner),
            nat_gateway::describe(clients, owner),
            route_table::describe(clients, owner),
            security_group::describe(clients, owner),
            instances::describe(clients, owner),
            instance_profile::describe(clients, owner),
        )?;
        Ok(Observed {
            vpcs,
            subnets,
            internet_gateways: igws,
            addresses,
            nat_gateways: nats,
            route_tables,
            security_groups: sgs,
            instances,
            iam,
        })
    }

    /// Whether nothing of the cluster's is left.
    pub fn is_empty(&self) -> bool {
        self.vpcs.is_empty()
            && self.subnets.is_empty()
            && self.internet_gateways.is_empty()
            && self.addresses.is_empty()
            && self
                .nat_gateways
                .iter()
                .all(|n| n.state == nat_gateway::NatState::Gone)
            && self.route_tables.is_empty()
            && self.security_groups.is_empty()
            && self.instances.is_empty()
            && self.iam.role.is_none()
            && self.iam.instance_profile.is_none()
    }
}
