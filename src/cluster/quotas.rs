//! Quota pre-flight: before the first create of a cluster and before a
//! scale-up, what the pass would add (a VPC, an internet gateway, Elastic
//! IPs, instance vCPUs by class and market) is held against the account's
//! quotas (Service Quotas) and what the whole region already uses. Short:
//! `Stalled` with `QuotaExceeded` and the numbers, and nothing is created.
//! Quotas Service Quotas cannot tell are not checked; when the caller may
//! not read quotas at all, the pre-flight is skipped (a Warning Event).

use std::collections::BTreeMap;

use futures::future::try_join_all;

use super::kinds::{nat_gateways::nat_zones, Observed};
use super::spec::{NetworkPlan, ValidatedSpec, Zones};
use crate::api::Market;
use crate::aws::quotas::{self, Quota};
use crate::aws::AwsClients;
use crate::Error;

/// What a pass would add.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Demand {
    pub vpcs: usize,
    pub internet_gateways: usize,
    pub addresses: usize,
    /// `(instance type, market) → instances`.
    pub instances: BTreeMap<(String, Market), usize>,
}

impl Demand {
    pub fn is_empty(&self) -> bool {
        self.vpcs == 0
            && self.internet_gateways == 0
            && self.addresses == 0
            && self.instances.is_empty()
    }
}

/// What the spec asks beyond what AWS holds of the cluster's: the network
/// when none exists yet, and each group's missing instances (of its first
/// type and market: what a launch tries first).
pub fn demand(spec: &ValidatedSpec, observed: &Observed) -> Demand {
    let mut d = Demand::default();
    if let NetworkPlan::Managed { zones, nat, .. } = &spec.network {
        if observed.vpcs.is_empty() {
            let zone_count = match zones {
                Zones::Named(z) => z.len(),
                Zones::Count(n) => *n,
            };
            let names: Vec<String> = (0..zone_count).map(|i| i.to_string()).collect();
            d.vpcs = 1;
            d.internet_gateways = 1;
            d.addresses = nat_zones(*nat, &names).len();
        }
    }
    for g in &spec.node_groups {
        let live = observed
            .instances
            .iter()
            .filter(|i| i.group == g.name && i.state.is_live())
            .count();
        let missing = usize::try_from(g.count).unwrap_or(0).saturating_sub(live);
        if missing > 0 {
            let market = g.markets().first().copied().unwrap_or(Market::OnDemand);
            *d.instances
                .entry((g.first_type().to_string(), market))
                .or_default() += missing;
        }
    }
    d
}

/// An instance type's vCPU class: its name and quota codes (on demand, spot).
pub fn vcpu_class(instance_type: &str) -> (&'static str, &'static str, &'static str) {
    let family: String = instance_type
        .chars()
        .take_while(|c| c.is_ascii_lowercase())
        .collect();
    match family.as_str() {
        "g" | "vt" => ("G and VT", "L-DB2E81BA", "L-3819A6DF"),
        "p" => ("P", "L-417A185B", "L-7212CCBC"),
        "x" => ("X", "L-7295265B", "L-E3A00192"),
        "f" => ("F", "L-74FC7D96", "L-88CF9481"),
        "inf" => ("Inf", "L-1945791B", "L-B5D1601B"),
        "dl" => ("DL", "L-6E869C2A", "L-85EED4F7"),
        "trn" => ("Trn", "L-2C3B7624", "L-6B0D517C"),
        _ => ("Standard", "L-1216C47A", "L-34B43A08"),
    }
}

/// One quota to hold a demand against.
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    pub service: &'static str,
    pub code: &'static str,
    /// e.g. `Standard on-demand vCPUs`.
    pub what: String,
    pub needs: i64,
    pub in_use: i64,
}

impl Check {
    /// The shortfall under `quota`, said with the numbers.
    pub fn short_of(&self, quota: f64) -> Option<String> {
        ((self.in_use + self.needs) as f64 > quota).then(|| {
            format!(
                "needs {} {}, quota {}, in use {} ({})",
                self.needs, self.what, quota, self.in_use, self.code
            )
        })
    }
}

/// What the region uses now.
#[derive(Clone, Debug, Default)]
pub struct Usage {
    pub vpcs: usize,
    pub internet_gateways: usize,
    pub addresses: usize,
    /// Every live instance in the region: `(type, spot)`.
    pub instances: Vec<(String, bool)>,
    /// vCPUs by instance type.
    pub vcpus: BTreeMap<String, i32>,
}

/// The quotas `demand` is held against, given `usage`.
pub fn checks(demand: &Demand, usage: &Usage) -> Vec<Check> {
    let mut out = Vec::new();
    let network = [
        ("vpc", "L-F678F1CE", "VPCs", demand.vpcs, usage.vpcs),
        (
            "vpc",
            "L-A4707A72",
            "internet gateways",
            demand.internet_gateways,
            usage.internet_gateways,
        ),
        (
            "ec2",
            "L-0263D0A3",
            "Elastic IPs",
            demand.addresses,
            usage.addresses,
        ),
    ];
    for (service, code, what, needs, in_use) in network {
        if needs > 0 {
            out.push(Check {
                service,
                code,
                what: what.to_string(),
                needs: i64::try_from(needs).unwrap_or(i64::MAX),
                in_use: i64::try_from(in_use).unwrap_or(i64::MAX),
            });
        }
    }
    let vcpus = |t: &str| i64::from(usage.vcpus.get(t).copied().unwrap_or(0));
    let mut by_class: BTreeMap<(&'static str, Market), (i64, &'static str)> = BTreeMap::new();
    for ((t, market), n) in &demand.instances {
        let (class, on_demand, spot) = vcpu_class(t);
        let code = if *market == Market::Spot {
            spot
        } else {
            on_demand
        };
        let n = i64::try_from(*n).unwrap_or(i64::MAX);
        by_class.entry((class, *market)).or_insert((0, code)).0 += vcpus(t) * n;
    }
    for ((class, market), (needs, code)) in by_class {
        let in_use: i64 = usage
            .instances
            .iter()
            .filter(|(t, spot)| vcpu_class(t).0 == class && *spot == (market == Market::Spot))
            .map(|(t, _)| vcpus(t))
            .sum();
        let market = match market {
            Market::Spot => "spot",
            Market::OnDemand => "on-demand",
        };
        out.push(Check {
            service: "ec2",
            code,
            what: format!("{class} {market} vCPUs"),
            needs,
            in_use,
        });
    }
    out
}

/// The pre-flight of one pass. `Ok(Some(note))` when it was skipped
/// because the caller may not read quotas.
pub async fn preflight(
    c: &AwsClients,
    spec: &ValidatedSpec,
    observed: &Observed,
) -> Result<Option<String>, Error> {
    let demand = demand(spec, observed);
    if demand.is_empty() {
        return Ok(None);
    }
    let usage = usage(c, &demand).await?;
    let checks = checks(&demand, &usage);
    let quotas = try_join_all(checks.iter().map(|k| quotas::get(c, k.service, k.code))).await?;
    let mut short = Vec::new();
    for (check, quota) in checks.iter().zip(quotas) {
        match quota {
            Quota::Denied => {
                return Ok(Some(
                    "quota pre-flight skipped: the role may not read Service Quotas (servicequotas:GetServiceQuota)"
                        .into(),
                ))
            }
            Quota::Unknown => {}
            Quota::Value(v) => short.extend(check.short_of(v)),
        }
    }
    match short.is_empty() {
        true => Ok(None),
        false => Err(Error::QuotaExceeded(short.join("; "))),
    }
}

/// What the region uses of what `demand` needs: lookups only for those.
async fn usage(c: &AwsClients, demand: &Demand) -> Result<Usage, Error> {
    let mut usage = Usage::default();
    let network = async {
        match demand.vpcs + demand.internet_gateways + demand.addresses {
            0 => Ok((0, 0, 0)),
            _ => quotas::network_in_region(c).await,
        }
    };
    let instances = async {
        match demand.instances.is_empty() {
            true => Ok(vec![]),
            false => quotas::instances_in_region(c).await,
        }
    };
    let ((vpcs, addresses, gateways), instances) = tokio::try_join!(network, instances)?;
    let mut types: Vec<String> = instances.iter().map(|(t, _)| t.clone()).collect();
    types.extend(demand.instances.keys().map(|(t, _)| t.clone()));
    types.sort();
    types.dedup();
    if !types.is_empty() {
        usage.vcpus = quotas::vcpus(c, &types).await?;
    }
    usage.vpcs = vpcs;
    usage.addresses = addresses;
    usage.internet_gateways = gateways;
    usage.instances = instances;
    Ok(usage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(vcpu_class("m6i.large").0, "Standard");
        assert_eq!(vcpu_class("t3.small").0, "Standard");
        assert_eq!(vcpu_class("g5.xlarge").1, "L-DB2E81BA");
        assert_eq!(vcpu_class("inf2.xlarge").0, "Inf");
        assert_eq!(vcpu_class("p4d.24xlarge").2, "L-7212CCBC");
    }

    #[test]
    fn checks_add_what_is_asked_to_what_the_region_uses() {
        let demand = Demand {
            vpcs: 1,
            internet_gateways: 1,
            addresses: 2,
            instances: BTreeMap::from([
                (("m5.xlarge".to_string(), Market::OnDemand), 3),
                (("t3.large".to_string(), Market::OnDemand), 2),
                (("g5.xlarge".to_string(), Market::Spot), 1),
            ]),
        };
        let usage = Usage {
            vpcs: 4,
            internet_gateways: 1,
            addresses: 3,
            instances: vec![
                ("t3.large".into(), false),
                ("t3.large".into(), true),
                ("g5.xlarge".into(), true),
            ],
            vcpus: BTreeMap::from([
                ("m5.xlarge".into(), 4),
                ("t3.large".into(), 2),
                ("g5.xlarge".into(), 4),
            ]),
        };
        let got: Vec<(String, i64, i64)> = checks(&demand, &usage)
            .into_iter()
            .map(|c| (c.what, c.needs, c.in_use))
            .collect();
        assert_eq!(
            got,
            vec![
                ("VPCs".to_string(), 1, 4),
                ("internet gateways".to_string(), 1, 1),
                ("Elastic IPs".to_string(), 2, 3),
                ("G and VT spot vCPUs".to_string(), 4, 4),
                ("Standard on-demand vCPUs".to_string(), 16, 2),
            ]
        );
        let standard = &checks(&demand, &usage)[4];
        assert_eq!(standard.short_of(18.0), None, "exactly enough");
        assert_eq!(
            standard.short_of(17.0).as_deref(),
            Some("needs 16 Standard on-demand vCPUs, quota 17, in use 2 (L-1216C47A)"),
            "one short"
        );
    }
}
