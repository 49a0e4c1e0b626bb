//! VPC endpoints: gateway endpoints (S3, DynamoDB) on route tables and
//! interface endpoints in subnets.

use aws_sdk_ec2::types::{ResourceType, VpcEndpointType};

use super::settling::RetryNewIds;
use super::tags::{Owned, OwnershipTags, Scope};
use super::{required, AwsClients, AwsError, AwsResult, NotFoundExt, SdkResultExt};

/// The services AWS offers as gateway endpoints; every other is an
/// interface endpoint.
pub const GATEWAY_SERVICES: &[&str] = &["s3", "dynamodb"];

/// Whether `service` (`s3`, `ecr.dkr`) is a gateway endpoint's.
pub fn is_gateway(service: &str) -> bool {
    GATEWAY_SERVICES.contains(&service)
}

/// AWS's name of a service in a region: `com.amazonaws.us-east-1.s3`.
pub fn service_name(region: &str, service: &str) -> String {
    format!("com.amazonaws.{region}.{service}")
}

/// The service of an AWS service name in `region`, when it is one.
pub fn service_of<'a>(region: &str, name: &'a str) -> Option<&'a str> {
    name.strip_prefix("com.amazonaws.")?
        .strip_prefix(region)?
        .strip_prefix('.')
}

/// An endpoint's state as the operator acts on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointState {
    /// `pendingAcceptance`, `pending`: AWS is making it.
    Pending,
    Available,
    /// `deleting`: AWS is removing it (its network interfaces still hold
    /// the subnets and security group).
    Deleting,
    /// `deleted`, `rejected`, `failed`, `expired`: nothing left to act on.
    Gone,
}

impl EndpointState {
    /// Pending or available: serving, or about to.
    pub fn is_live(self) -> bool {
        matches!(self, EndpointState::Pending | EndpointState::Available)
    }
}

impl EndpointState {
    fn of(state: &str) -> Self {
        match state.to_ascii_lowercase().as_str() {
            "pending" | "pendingacceptance" => EndpointState::Pending,
            "available" => EndpointState::Available,
            "deleting" => EndpointState::Deleting,
            _ => EndpointState::Gone,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedEndpoint {
    pub id: String,
    /// The service after `com.amazonaws.<region>.`, or the whole name of a
    /// service of another region.
    pub service: String,
    pub gateway: bool,
    pub state: EndpointState,
    pub route_table_ids: Vec<String>,
    pub subnet_ids: Vec<String>,
    pub security_group_ids: Vec<String>,
    /// Its policy document, parsed (none when AWS gave none, or not JSON).
    pub policy: Option<serde_json::Value>,
}

pub async fn describe(c: &AwsClients, scope: Scope<'_>) -> AwsResult<Vec<Owned<ObservedEndpoint>>> {
    const OP: &str = "ec2:DescribeVpcEndpoints";
    let region = c
        .ec2
        .config()
        .region()
        .map(|r| r.to_string())
        .unwrap_or_default();
    let out = owned_items!(
        scope,
        OP,
        c.ec2.describe_vpc_endpoints().filters(scope.filter()),
        vpc_endpoints,
        |e| {
            let name = required(e.service_name(), OP, "ServiceName")?;
            ObservedEndpoint {
                id: required(e.vpc_endpoint_id(), OP, "VpcEndpointId")?,
                service: service_of(&region, &name).unwrap_or(&name).to_string(),
                gateway: e.vpc_endpoint_type() == Some(&VpcEndpointType::Gateway),
                state: EndpointState::of(e.state().map(|s| s.as_str()).unwrap_or_default()),
                route_table_ids: e.route_table_ids().to_vec(),
                subnet_ids: e.subnet_ids().to_vec(),
                security_group_ids: e
                    .groups()
                    .iter()
                    .filter_map(|g| g.group_id().map(str::to_string))
                    .collect(),
                policy: e
                    .policy_document()
                    .and_then(|d| serde_json::from_str(d).ok()),
            }
        }
    );
    Ok(out)
}

/// Where an endpoint is attached: a gateway endpoint's route tables, an
/// interface endpoint's subnets and security group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attachments {
    Gateway {
        route_table_ids: Vec<String>,
    },
    Interface {
        subnet_ids: Vec<String>,
        security_group_id: String,
    },
}

/// An endpoint to make: where, with which policy, and the token that makes
/// a retried create the same one.
pub struct NewEndpoint<'a> {
    pub at: &'a Attachments,
    pub policy: &'a serde_json::Value,
    pub token: &'a str,
}

/// Creates the endpoint of `service` in `vpc_id`.
pub async fn create(
    c: &AwsClients,
    owner: &OwnershipTags,
    vpc_id: &str,
    region: &str,
    service: &str,
    new: NewEndpoint<'_>,
) -> AwsResult<String> {
    let NewEndpoint { at, policy, token } = new;
    const OP: &str = "ec2:CreateVpcEndpoint";
    let req = c
        .ec2
        .create_vpc_endpoint()
        .vpc_id(vpc_id)
        .policy_document(policy.to_string())
        .service_name(service_name(region, service))
        .client_token(token)
        .tag_specifications(owner.ec2_spec(
            ResourceType::VpcEndpoint,
            "endpoint",
            &[(super::tags::ENDPOINT_SERVICE, service)],
        ));
    let req = match at {
        Attachments::Gateway { route_table_ids } => req
            .vpc_endpoint_type(VpcEndpointType::Gateway)
            .set_route_table_ids(Some(route_table_ids.clone())),
        Attachments::Interface {
            subnet_ids,
            security_group_id,
        } => req
            .vpc_endpoint_type(VpcEndpointType::Interface)
            .set_subnet_ids(Some(subnet_ids.clone()))
            .security_group_ids(security_group_id)
            .private_dns_enabled(true),
    };
    let out = req.customize().retrying_new_ids().send().await.op(OP)?;
    Ok(out
        .vpc_endpoint()
        .and_then(|e| e.vpc_endpoint_id())
        .ok_or(AwsError::Incomplete {
            operation: OP,
            missing: "VpcEndpointId",
        })?
        .to_string())
}

/// Adds and removes route tables (a gateway endpoint) or subnets (an
/// interface endpoint).
pub async fn modify(
    c: &AwsClients,
    id: &str,
    gateway: bool,
    add: &[String],
    remove: &[String],
) -> AwsResult<()> {
    let req = c.ec2.modify_vpc_endpoint().vpc_endpoint_id(id);
    let req = if gateway {
        req.set_add_route_table_ids(Some(add.to_vec()))
            .set_remove_route_table_ids(Some(remove.to_vec()))
    } else {
        req.set_add_subnet_ids(Some(add.to_vec()))
            .set_remove_subnet_ids(Some(remove.to_vec()))
    };
    req.customize()
        .retrying_new_ids()
        .send()
        .await
        .op("ec2:ModifyVpcEndpoint")
        .map(|_| ())
}

/// Puts `policy` on endpoint `id` in place of what it has.
pub async fn set_policy(c: &AwsClients, id: &str, policy: &serde_json::Value) -> AwsResult<()> {
    c.ec2
        .modify_vpc_endpoint()
        .vpc_endpoint_id(id)
        .policy_document(policy.to_string())
        .send()
        .await
        .op("ec2:ModifyVpcEndpoint")
        .map(|_| ())
}

pub async fn delete(c: &AwsClients, ids: &[String]) -> AwsResult<()> {
    if ids.is_empty() {
        return Ok(());
    }
    c.ec2
        .delete_vpc_endpoints()
        .set_vpc_endpoint_ids(Some(ids.to_vec()))
        .send()
        .await
        .op("ec2:DeleteVpcEndpoints")
        .or_gone()
}
