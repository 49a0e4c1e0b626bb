//! Internet gateways.

use aws_sdk_ec2::types::ResourceType;

use super::settling::RetryNewIds;
use super::tags::{Owned, OwnershipTags, Scope};
use super::{required, AwsClients, AwsError, AwsResult, NotFoundExt, SdkResultExt};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedInternetGateway {
    pub id: String,
    /// VPCs it is attached to.
    pub attached_to: Vec<String>,
}

pub async fn describe(
    c: &AwsClients,
    scope: Scope<'_>,
) -> AwsResult<Vec<Owned<ObservedInternetGateway>>> {
    const OP: &str = "ec2:DescribeInternetGateways";
    let out = owned_items!(
        scope,
        OP,
        c.ec2.describe_internet_gateways().filters(scope.filter()),
        internet_gateways,
        |g| {
            ObservedInternetGateway {
                id: required(g.internet_gateway_id(), OP, "InternetGatewayId")?,
                attached_to: g
                    .attachments()
                    .iter()
                    .filter_map(|a| a.vpc_id().map(str::to_string))
                    .collect(),
            }
        }
    );
    Ok(out)
}

pub async fn create(c: &AwsClients, owner: &OwnershipTags) -> AwsResult<String> {
    let out = c
        .ec2
        .create_internet_gateway()
        .tag_specifications(owner.ec2_spec(ResourceType::InternetGateway, "internet-gateway", &[]))
        .send()
        .await
        .op("ec2:CreateInternetGateway")?;
    Ok(out
        .internet_gateway()
        .and_then(|g| g.internet_gateway_id())
        .ok_or(AwsError::Incomplete {
            operation: "ec2:CreateInternetGateway",
            missing: "InternetGatewayId",
        })?
        .to_string())
}

pub async fn attach(c: &AwsClients, id: &str, vpc_id: &str) -> AwsResult<()> {
    c.ec2
        .attach_internet_gateway()
        .internet_gateway_id(id)
        .vpc_id(vpc_id)
        .customize()
        .retrying_new_ids()
        .send()
        .await
        .op("ec2:AttachInternetGateway")
        .map(|_| ())
}

/// Detaches from every VPC, then deletes.
pub async fn delete(c: &AwsClients, gateway: &ObservedInternetGateway) -> AwsResult<()> {
    for vpc in &gateway.attached_to {
        match c
            .ec2
            .detach_internet_gateway()
            .internet_gateway_id(&gateway.id)
            .vpc_id(vpc)
            .send()
            .await
            .op("ec2:DetachInternetGateway")
        {
            Err(e) if e.is_not_found() || e.code() == Some("Gateway.NotAttached") => {}
            other => {
                other?;
            }
        }
    }
    c.ec2
        .delete_internet_gateway()
        .internet_gateway_id(&gateway.id)
        .send()
        .await
        .op("ec2:DeleteInternetGateway")
        .or_gone()
}
