//! Service Quotas, and what the whole account uses of them in a region
//! (every instance, VPC, address and gateway: not only ours).

use std::collections::BTreeMap;

use aws_sdk_ec2::types::Filter;

use super::{AwsClients, AwsResult, SdkResultExt};

/// A quota's value as Service Quotas answers it.
#[derive(Clone, Debug, PartialEq)]
pub enum Quota {
    Value(f64),
    /// Service Quotas does not know it here (a region or service without
    /// it): not checked.
    Unknown,
    /// The caller may not read quotas: the pre-flight is skipped.
    Denied,
}

pub async fn get(c: &AwsClients, service: &str, code: &str) -> AwsResult<Quota> {
    let out = c
        .quotas
        .get_service_quota()
        .service_code(service)
        .quota_code(code)
        .send()
        .await
        .op("servicequotas:GetServiceQuota");
    match out {
        Ok(out) => Ok(out
            .quota()
            .and_then(|q| q.value())
            .map_or(Quota::Unknown, Quota::Value)),
        Err(e) if e.is_access_denied() || e.code() == Some("AccessDeniedException") => {
            Ok(Quota::Denied)
        }
        Err(e) if e.is_not_found() || e.code() == Some("NoSuchResourceException") => {
            Ok(Quota::Unknown)
        }
        Err(e) => Err(e),
    }
}

/// Every live instance in the region as `(instance type, spot)`.
pub async fn instances_in_region(c: &AwsClients) -> AwsResult<Vec<(String, bool)>> {
    let live = super::instances::in_states(&["pending", "running", "stopping", "stopped"]);
    let mut pages = c
        .ec2
        .describe_instances()
        .filters(live)
        .into_paginator()
        .send();
    let mut out = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.op("ec2:DescribeInstances")?;
        for i in page.reservations().iter().flat_map(|r| r.instances()) {
            if let Some(t) = i.instance_type() {
                let spot = i.instance_lifecycle()
                    == Some(&aws_sdk_ec2::types::InstanceLifecycleType::Spot);
                out.push((t.as_str().to_string(), spot));
            }
        }
    }
    Ok(out)
}

/// Default vCPUs of each of `types` (those the region knows).
pub async fn vcpus(c: &AwsClients, types: &[String]) -> AwsResult<BTreeMap<String, i32>> {
    let mut out = BTreeMap::new();
    for t in super::instances::describe_types(c, types).await? {
        if let (Some(name), Some(v)) = (
            t.instance_type(),
            t.v_cpu_info().and_then(|v| v.default_v_cpus()),
        ) {
            out.insert(name.as_str().to_string(), v);
        }
    }
    Ok(out)
}

/// How many VPCs, Elastic IPs and internet gateways the region holds.
pub async fn network_in_region(c: &AwsClients) -> AwsResult<(usize, usize, usize)> {
    let (vpcs, addresses, gateways) = tokio::try_join!(
        async {
            c.ec2
                .describe_vpcs()
                .send()
                .await
                .op("ec2:DescribeVpcs")
                .map(|o| o.vpcs().len())
        },
        async {
            c.ec2
                .describe_addresses()
                .send()
                .await
                .op("ec2:DescribeAddresses")
                .map(|o| o.addresses().len())
        },
        async {
            c.ec2
                .describe_internet_gateways()
                .send()
                .await
                .op("ec2:DescribeInternetGateways")
                .map(|o| o.internet_gateways().len())
        },
    )?;
    Ok((vpcs, addresses, gateways))
}

/// Live (pending or available) NAT gateways of the region, by zone.
pub async fn nat_gateways_by_zone(c: &AwsClients) -> AwsResult<BTreeMap<String, usize>> {
    let live = Filter::builder()
        .name("state")
        .values("pending")
        .values("available")
        .build();
    let gateways = c
        .ec2
        .describe_nat_gateways()
        .filter(live)
        .send()
        .await
        .op("ec2:DescribeNatGateways")?;
    let subnets: Vec<String> = gateways
        .nat_gateways()
        .iter()
        .filter_map(|n| n.subnet_id().map(str::to_string))
        .collect();
    if subnets.is_empty() {
        return Ok(BTreeMap::new());
    }
    let zones = c
        .ec2
        .describe_subnets()
        .set_subnet_ids(Some(subnets.clone()))
        .send()
        .await
        .op("ec2:DescribeSubnets")?;
    let zone_of: BTreeMap<&str, &str> = zones
        .subnets()
        .iter()
        .filter_map(|s| Some((s.subnet_id()?, s.availability_zone()?)))
        .collect();
    let mut out = BTreeMap::new();
    for s in &subnets {
        if let Some(zone) = zone_of.get(s.as_str()) {
            *out.entry(zone.to_string()).or_default() += 1;
        }
    }
    Ok(out)
}
