//! Quota pre-flight: before the first create of a cluster and before a
//! scale-up, what the pass would add (a VPC, an internet gateway, Elastic
//! IPs, instance vCPUs by class and market) is held against the account's
//! quotas (Service Quotas) and what the whole region already uses. Short:
//! `Stalled` with `QuotaExceeded` and the numbers, and nothing is created.
//! Quotas Service Quotas cannot tell are not checked; when the caller may
//! not read quotas at all, the pre-flight is skipped (a Warning Event).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::future::try_join_all;

use super::catalog::Catalog;
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
    /// Zones that get a NAT gateway (by name, or by index when the zones
    /// are a count: named once the region's zones are known).
    pub nat_zones: Vec<String>,
    /// `(instance type, market) → instances`.
    pub instances: BTreeMap<(String, Market), usize>,
}

impl Demand {
    pub fn is_empty(&self) -> bool {
        self.vpcs == 0
            && self.internet_gateways == 0
            && self.addresses == 0
            && self.nat_zones.is_empty()
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
            let names: Vec<String> = match zones {
                Zones::Named(z) => z.clone(),
                Zones::Count(n) => (0..*n).map(|i| i.to_string()).collect(),
            };
            d.vpcs = 1;
            d.internet_gateways = 1;
            d.nat_zones = nat_zones(*nat, &names);
            d.addresses = d.nat_zones.len();
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
    pub fn short_of(&self, quota: f64) -> Option<QuotaShortfall> {
        ((self.in_use + self.needs) as f64 > quota).then(|| QuotaShortfall {
            check: self.clone(),
            quota,
        })
    }
}

/// A quota too small for what the spec asks.
#[derive(Clone, Debug, PartialEq)]
pub struct QuotaShortfall {
    pub check: Check,
    pub quota: f64,
}

impl std::fmt::Display for QuotaShortfall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.check;
        write!(
            f,
            "needs {} {}, quota {}, in use {} ({})",
            c.needs, c.what, self.quota, c.in_use, c.code
        )
    }
}

/// The shortfalls, said one after another.
pub fn said<T: std::fmt::Display>(items: &[T], separator: &str) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(separator)
}

/// What the region uses now.
#[derive(Clone, Debug, Default)]
pub struct Usage {
    pub vpcs: usize,
    pub internet_gateways: usize,
    pub addresses: usize,
    /// Live NAT gateways by zone.
    pub nat_by_zone: BTreeMap<String, usize>,
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
    for zone in &demand.nat_zones {
        let in_use = usage.nat_by_zone.get(zone).copied().unwrap_or(0);
        out.push(Check {
            service: "vpc",
            code: "L-FE5A380F",
            what: format!("NAT gateways in {zone}"),
            needs: 1,
            in_use: i64::try_from(in_use).unwrap_or(i64::MAX),
        });
    }
    out.extend(vcpu_checks(demand, usage));
    out
}

/// The vCPU quotas: what the launches ask for, by instance class and
/// market, beside what running instances of that class use.
fn vcpu_checks(demand: &Demand, usage: &Usage) -> Vec<Check> {
    let mut out = Vec::new();
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

/// Values looked up lately, by key, each for a while.
struct Recent<V> {
    ttl: Duration,
    values: Mutex<HashMap<String, (V, Instant)>>,
}

impl<V: Clone> Recent<V> {
    fn new(ttl: Duration) -> Self {
        Recent {
            ttl,
            values: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, key: &str) -> Option<V> {
        let values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        values
            .get(key)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(v, _)| v.clone())
    }

    fn forget(&self, key: &str) {
        let mut values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        values.remove(key);
    }

    fn put(&self, key: &str, value: V) {
        let mut values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        values.retain(|_, (_, at)| at.elapsed() < self.ttl);
        values.insert(key.to_string(), (value, Instant::now()));
    }

    /// The value of `key`, looked up with `find` unless known lately.
    async fn or_find<F, Fut>(&self, key: &str, find: F) -> Result<V, Error>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<V, crate::aws::AwsError>>,
    {
        if let Some(v) = self.get(key) {
            return Ok(v);
        }
        let v = find().await?;
        self.put(key, v.clone());
        Ok(v)
    }
}

/// What the pre-flight looked up lately, per account and region: quotas
/// change rarely (kept 5 minutes), the region's usage often (kept 30 s, so
/// clusters created together in one account share one look; the
/// pre-flight is a guard, AWS's own limit errors stay the last word), vCPUs
/// per instance type never.
pub struct QuotaMemory {
    quotas: Recent<Quota>,
    network: Recent<(usize, usize, usize)>,
    nats: Recent<BTreeMap<String, usize>>,
    instances: Recent<Vec<(String, bool)>>,
    vcpus: Recent<i32>,
}

impl Default for QuotaMemory {
    fn default() -> Self {
        let usage = Duration::from_secs(30);
        QuotaMemory {
            quotas: Recent::new(Duration::from_secs(300)),
            network: Recent::new(usage),
            nats: Recent::new(usage),
            instances: Recent::new(usage),
            vcpus: Recent::new(Duration::MAX),
        }
    }
}

/// The pre-flight of one pass. `Ok(Some(note))` when it was skipped
/// because the caller may not read quotas.
pub async fn preflight(
    c: &AwsClients,
    catalog: &Catalog,
    memory: &QuotaMemory,
    spec: &ValidatedSpec,
    observed: &Observed,
) -> Result<Option<String>, Error> {
    let mut demand = demand(spec, observed);
    if demand.is_empty() {
        return Ok(None);
    }
    let place = format!("{}/{}", spec.account, spec.region);
    if let (
        false,
        NetworkPlan::Managed {
            zones: Zones::Count(_),
            ..
        },
    ) = (demand.nat_zones.is_empty(), &spec.network)
    {
        // The region's first zones, as the network will take them.
        let account = spec.account.to_string();
        let all = catalog.available_zones(c, &account, &spec.region).await?;
        demand.nat_zones = demand
            .nat_zones
            .iter()
            .filter_map(|i| all.get(i.parse::<usize>().ok()?).cloned())
            .collect();
    }
    // The quotas concerned follow from the demand alone: looked up at once
    // with the usage.
    let wanted = checks(&demand, &Usage::default());
    let quotas = try_join_all(wanted.iter().map(|k| {
        let key = format!("{place}/{}/{}", k.service, k.code);
        async move {
            memory
                .quotas
                .or_find(&key, || quotas::get(c, k.service, k.code))
                .await
        }
    }));
    let (quotas, usage) = tokio::try_join!(quotas, usage(c, memory, &place, &demand))?;
    let mut short = Vec::new();
    for (check, quota) in checks(&demand, &usage).iter().zip(quotas) {
        match quota {
            Quota::Denied => {
                return Ok(Some(
                    "quota pre-flight skipped: the role may not read Service Quotas (servicequotas:GetServiceQuota)"
                        .into(),
                ))
            }
            Quota::Unknown => {}
            Quota::Value(v) => {
                if let Some(s) = check.short_of(v) {
                    // Looked up again next time: the user may raise it.
                    let key = format!("{place}/{}/{}", check.service, check.code);
                    memory.quotas.forget(&key);
                    memory.instances.forget(&place);
                    memory.network.forget(&place);
                    memory.nats.forget(&place);
                    short.push(s);
                }
            }
        }
    }
    match short.is_empty() {
        true => Ok(None),
        false => Err(Error::QuotaExceeded { short }),
    }
}

/// What the region uses of what `demand` needs: lookups only for those,
/// and only those not made lately.
async fn usage(
    c: &AwsClients,
    memory: &QuotaMemory,
    place: &str,
    demand: &Demand,
) -> Result<Usage, Error> {
    let network = async {
        match demand.vpcs + demand.internet_gateways + demand.addresses {
            0 => Ok((0, 0, 0)),
            _ => {
                memory
                    .network
                    .or_find(place, || quotas::network_in_region(c))
                    .await
            }
        }
    };
    let nats = async {
        match demand.nat_zones.is_empty() {
            true => Ok(BTreeMap::new()),
            false => {
                memory
                    .nats
                    .or_find(place, || quotas::nat_gateways_by_zone(c))
                    .await
            }
        }
    };
    let instances = async {
        match demand.instances.is_empty() {
            true => Ok(vec![]),
            false => {
                memory
                    .instances
                    .or_find(place, || quotas::instances_in_region(c))
                    .await
            }
        }
    };
    // The asked types' vCPUs meanwhile: a new region holds no other.
    let asked: Vec<String> = demand.instances.keys().map(|(t, _)| t.clone()).collect();
    let asked_vcpus = vcpus_of(c, memory, &asked);
    let ((vpcs, addresses, gateways), instances, nat_by_zone, mut vcpus) =
        tokio::try_join!(network, instances, nats, asked_vcpus)?;
    let others: Vec<String> = instances
        .iter()
        .map(|(t, _)| t.clone())
        .filter(|t| !vcpus.contains_key(t))
        .collect();
    vcpus.extend(vcpus_of(c, memory, &others).await?);
    Ok(Usage {
        vpcs,
        internet_gateways: gateways,
        addresses,
        nat_by_zone,
        instances,
        vcpus,
    })
}

/// vCPUs of `types`, each looked up once per process.
async fn vcpus_of(
    c: &AwsClients,
    memory: &QuotaMemory,
    types: &[String],
) -> Result<BTreeMap<String, i32>, Error> {
    let mut known = BTreeMap::new();
    let mut missing: Vec<String> = Vec::new();
    for t in types {
        match memory.vcpus.get(t) {
            Some(v) => {
                known.insert(t.clone(), v);
            }
            None if !missing.contains(t) => missing.push(t.clone()),
            None => {}
        }
    }
    if !missing.is_empty() {
        for (t, v) in quotas::vcpus(c, &missing).await? {
            memory.vcpus.put(&t, v);
            known.insert(t, v);
        }
    }
    Ok(known)
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
            nat_zones: vec!["us-east-1a".into(), "us-east-1b".into()],
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
            nat_by_zone: BTreeMap::from([("us-east-1a".into(), 5)]),
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
                ("NAT gateways in us-east-1a".to_string(), 1, 5),
                ("NAT gateways in us-east-1b".to_string(), 1, 0),
                ("G and VT spot vCPUs".to_string(), 4, 4),
                ("Standard on-demand vCPUs".to_string(), 16, 2),
            ]
        );
        let standard = &checks(&demand, &usage)[6];
        assert_eq!(standard.short_of(18.0), None, "exactly enough");
        assert_eq!(
            standard.short_of(17.0).map(|s| s.to_string()).as_deref(),
            Some("needs 16 Standard on-demand vCPUs, quota 17, in use 2 (L-1216C47A)"),
            "one short"
        );
    }
}
