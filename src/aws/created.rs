//! The IDs that a client's creates answered: the creates AWS offers no
//! idempotency token for (VPC, subnet, internet gateway, route table,
//! security group, Elastic IP), and those whose token holds what was known
//! before: the instances a launch made (its token holds the instances the
//! group had) and a NAT gateway (its token holds the gateways in status),
//! so a pass that misses the new ones would ask for a create of its own. AWS's describes are eventually
//! consistent: for a moment after a create they may not list what it made,
//! and a pass that trusted such a describe would create it again. Whoever
//! owns the client keeps these IDs until a describe shows them.

use std::sync::{Arc, Mutex};

use aws_sdk_ec2::operation::{
    allocate_address::AllocateAddressOutput, create_internet_gateway::CreateInternetGatewayOutput,
    create_nat_gateway::CreateNatGatewayOutput, create_route_table::CreateRouteTableOutput,
    create_security_group::CreateSecurityGroupOutput, create_subnet::CreateSubnetOutput,
    create_vpc::CreateVpcOutput, run_instances::RunInstancesOutput,
};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::FinalizerInterceptorContextRef;
use aws_smithy_runtime_api::client::interceptors::context::Output;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

/// An SDK interceptor collecting created IDs; clones share the collection.
#[derive(Clone, Debug, Default)]
pub struct CreatedIds(Arc<Mutex<Vec<String>>>);

impl CreatedIds {
    /// The IDs collected since the last take.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The IDs a create's output names, for the tracked creates.
fn created_ids(output: &Output) -> Vec<String> {
    if let Some(o) = output.downcast_ref::<RunInstancesOutput>() {
        let ids = o.instances().iter().filter_map(|i| i.instance_id());
        return ids.map(str::to_string).collect();
    }
    created_id(output).into_iter().collect()
}

/// The ID a create's output names, for the tracked creates of one resource.
fn created_id(output: &Output) -> Option<String> {
    let id = if let Some(o) = output.downcast_ref::<CreateVpcOutput>() {
        o.vpc().and_then(|v| v.vpc_id())
    } else if let Some(o) = output.downcast_ref::<CreateSubnetOutput>() {
        o.subnet().and_then(|s| s.subnet_id())
    } else if let Some(o) = output.downcast_ref::<CreateInternetGatewayOutput>() {
        o.internet_gateway().and_then(|g| g.internet_gateway_id())
    } else if let Some(o) = output.downcast_ref::<CreateRouteTableOutput>() {
        o.route_table().and_then(|t| t.route_table_id())
    } else if let Some(o) = output.downcast_ref::<CreateSecurityGroupOutput>() {
        o.group_id()
    } else if let Some(o) = output.downcast_ref::<AllocateAddressOutput>() {
        o.allocation_id()
    } else if let Some(o) = output.downcast_ref::<CreateNatGatewayOutput>() {
        o.nat_gateway().and_then(|n| n.nat_gateway_id())
    } else {
        None
    };
    id.map(str::to_string)
}

impl Intercept for CreatedIds {
    fn name(&self) -> &'static str {
        "CreatedIds"
    }

    fn read_after_execution(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(Ok(output)) = context.output_or_error() {
            let ids = created_ids(output);
            if !ids.is_empty() {
                self.0.lock().unwrap_or_else(|e| e.into_inner()).extend(ids);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ec2::types::{Subnet, Vpc};

    #[test]
    fn tracked_creates_name_their_id_and_others_none() {
        let vpc = CreateVpcOutput::builder()
            .vpc(Vpc::builder().vpc_id("vpc-1").build())
            .build();
        assert_eq!(created_id(&Output::erase(vpc)), Some("vpc-1".into()));
        let subnet = CreateSubnetOutput::builder()
            .subnet(Subnet::builder().subnet_id("subnet-1").build())
            .build();
        assert_eq!(created_id(&Output::erase(subnet)), Some("subnet-1".into()));
        let sg = CreateSecurityGroupOutput::builder()
            .group_id("sg-1")
            .build();
        assert_eq!(created_id(&Output::erase(sg)), Some("sg-1".into()));
        let nat = CreateNatGatewayOutput::builder()
            .nat_gateway(
                aws_sdk_ec2::types::NatGateway::builder()
                    .nat_gateway_id("nat-1")
                    .build(),
            )
            .build();
        assert_eq!(created_id(&Output::erase(nat)), Some("nat-1".into()));
        assert_eq!(created_id(&Output::erase(String::from("x"))), None);
        let launch = RunInstancesOutput::builder()
            .instances(
                aws_sdk_ec2::types::Instance::builder()
                    .instance_id("i-1")
                    .build(),
            )
            .instances(
                aws_sdk_ec2::types::Instance::builder()
                    .instance_id("i-2")
                    .build(),
            )
            .build();
        assert_eq!(created_ids(&Output::erase(launch)), ["i-1", "i-2"]);
    }
}
