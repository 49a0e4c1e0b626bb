//! What a cluster costs (`status.cost`): what it holds, priced from the
//! process's price book (`crate::prices`). Worked out at the end of every
//! pass that converged, from what the pass left in status (the node
//! groups' instances, the NAT gateways) and what it observed (the
//! endpoints); the estimate itself is pure.

use std::collections::BTreeSet;

use crate::api::compute_cluster::{ClusterCost, CostPart, NodeGroupStatus, SubnetKind};
use crate::api::Market;
use crate::aws::endpoint::ObservedEndpoint;
use crate::aws::AwsClients;
use crate::prices::{Item, Price, PriceBook, Prices, Source, Wanted, HOURS_PER_MONTH};

use super::catalog::Catalog;
use super::spec::ValidatedSpec;
use super::status::Progress;

/// A root volume's size when neither the group nor the image says.
const ASSUMED_ROOT_GIB: i32 = 8;

/// What a cluster holds that costs money.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Holding {
    pub groups: Vec<GroupHolding>,
    pub nat_gateways: usize,
    /// Public IPv4 addresses beside the NAT gateways' (instances in public
    /// subnets).
    pub public_addresses: usize,
    /// Zones (subnets) of all interface endpoints together.
    pub interface_endpoint_zones: usize,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct GroupHolding {
    pub name: String,
    /// `(instance type, zone, market)` of each live instance.
    pub instances: Vec<(String, String, Market)>,
    /// Each instance's root volume: GiB and type.
    pub root_gib: i32,
    pub volume_type: String,
}

/// What the pass left: the node groups' instances, the NAT gateways, the
/// interface endpoints; root volumes as the group sets them, else as the
/// image's snapshot has them (the catalog's, looked up once per image).
pub async fn holding(
    c: &AwsClients,
    spec: &ValidatedSpec,
    groups: &[NodeGroupStatus],
    nat_gateways: usize,
    endpoints: &[ObservedEndpoint],
    catalog: &Catalog,
) -> Holding {
    let mut held = Holding {
        nat_gateways,
        interface_endpoint_zones: endpoints
            .iter()
            .filter(|e| !e.gateway)
            .map(|e| e.subnet_ids.len())
            .sum(),
        ..Holding::default()
    };
    for status in groups {
        let Some(group) = spec.node_groups.iter().find(|g| g.spec.name == status.name) else {
            continue;
        };
        let image = match &status.image_id {
            Some(id) => catalog.image(c, id).await.ok(),
            None => None,
        };
        let root = group.spec.root_volume.as_ref();
        let root_gib = root
            .and_then(|v| v.size_gib)
            .or(image.as_ref().and_then(|i| i.size_gib))
            .unwrap_or(ASSUMED_ROOT_GIB);
        let volume_type = match (root, image.and_then(|i| i.volume_type)) {
            (Some(v), _) => v.volume_type.as_str().to_string(),
            (None, Some(t)) => t,
            (None, None) => "gp3".into(),
        };
        if group.spec.subnets == SubnetKind::Public {
            held.public_addresses += status.instances.len();
        }
        held.groups.push(GroupHolding {
            name: status.name.clone(),
            instances: status
                .instances
                .iter()
                .map(|i| (i.instance_type.clone(), i.zone.clone(), i.capacity_type))
                .collect(),
            root_gib,
            volume_type,
        });
    }
    held
}

/// What `held` needs priced.
pub fn wanted(held: &Holding) -> Wanted {
    let mut w = Wanted::default();
    for g in &held.groups {
        for (t, zone, market) in &g.instances {
            w.instance(t, zone, *market == Market::Spot);
        }
        if !g.instances.is_empty() {
            w.items.insert(Item::Volume(g.volume_type.clone()));
        }
    }
    if held.nat_gateways > 0 {
        w.items.insert(Item::NatGateway);
    }
    if held.nat_gateways + held.public_addresses > 0 {
        w.items.insert(Item::PublicIpv4);
    }
    if held.interface_endpoint_zones > 0 {
        w.items.insert(Item::InterfaceEndpoint);
    }
    w
}

/// `held` priced from `book`.
pub fn estimate(held: &Holding, book: &PriceBook) -> ClusterCost {
    let mut t = Tally::default();
    for g in held.groups.iter().filter(|g| !g.instances.is_empty()) {
        let prices = g.instances.iter().map(|(ty, zone, market)| {
            let price = book.instance(ty, zone, *market == Market::Spot);
            (price, format!("instance type {ty}"))
        });
        let hourly = prices.fold(0.0, |sum, (p, what)| sum + t.usd(p, "instances", what));
        t.parts.push((format!("instances/{}", g.name), hourly));
        let volume = book.price(&Item::Volume(g.volume_type.clone()));
        let per_gib = t.usd(volume, "volumes", format!("{} volumes", g.volume_type));
        let gib = f64::from(g.root_gib) * g.instances.len() as f64;
        if volume.is_some() {
            t.parts.push((
                format!("volumes/{}", g.name),
                gib * per_gib / HOURS_PER_MONTH,
            ));
        }
    }
    let addresses = held.nat_gateways + held.public_addresses;
    for (item, count, part) in [
        (Item::NatGateway, held.nat_gateways, "nat-gateways"),
        (Item::PublicIpv4, addresses, "public-ipv4"),
        (
            Item::InterfaceEndpoint,
            held.interface_endpoint_zones,
            "interface-endpoints",
        ),
    ] {
        let price = book.price(&item).filter(|_| count > 0);
        if price.is_some() {
            let each = t.usd(price, part, part.to_string());
            t.parts.push((part.to_string(), each * count as f64));
        }
    }
    t.cost()
}

/// An estimate being added up: its parts, what the table priced and what
/// nothing did.
#[derive(Default)]
struct Tally {
    parts: Vec<(String, f64)>,
    from_table: BTreeSet<&'static str>,
    unpriced: BTreeSet<String>,
}

impl Tally {
    /// `price`'s USD (0 when there is none, which is noted as `what`), its
    /// source noted under `part`.
    fn usd(&mut self, price: Option<Price>, part: &'static str, what: String) -> f64 {
        match price {
            Some(p) => {
                if p.source == Source::Table {
                    self.from_table.insert(part);
                }
                p.usd
            }
            None => {
                self.unpriced.insert(what);
                0.0
            }
        }
    }

    fn cost(self) -> ClusterCost {
        let hourly: f64 = self.parts.iter().map(|(_, h)| h).sum();
        let mut basis = "list price".to_string();
        if !self.from_table.is_empty() {
            let table: Vec<&str> = self.from_table.into_iter().collect();
            basis.push_str(&format!(
                "; built-in us-east-1 table for {}",
                table.join(", ")
            ));
        }
        if !self.unpriced.is_empty() {
            let unpriced: Vec<String> = self.unpriced.into_iter().collect();
            basis.push_str(&format!("; not priced: {}", unpriced.join(", ")));
        }
        let parts = self.parts.into_iter();
        ClusterCost {
            per_hour: usd(hourly),
            per_month: format!("{:.2}", hourly * HOURS_PER_MONTH),
            basis,
            parts: parts
                .map(|(part, h)| CostPart {
                    part,
                    per_hour: usd(h),
                })
                .collect(),
        }
    }
}

/// The cost of what a pass left in `progress` and saw of `endpoints` (none
/// when it got no further than the node groups), priced through `c` from
/// the process's prices (cached for every cluster) and the catalog's
/// images.
pub async fn of_pass(
    (prices, catalog): (&Prices, &Catalog),
    c: &AwsClients,
    spec: &ValidatedSpec,
    progress: &Progress,
    endpoints: &[ObservedEndpoint],
) -> Option<ClusterCost> {
    let groups = progress.node_groups()?;
    let nats = progress.network.nat_gateway_ids.len();
    let held = holding(c, spec, groups, nats, endpoints, catalog).await;
    let book = prices.book(c, &spec.region, &wanted(&held)).await;
    Some(estimate(&held, &book))
}

/// USD per hour, to a hundredth of a cent.
fn usd(hourly: f64) -> String {
    format!("{hourly:.4}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aws(usd: f64) -> Price {
        Price {
            usd,
            source: Source::Aws,
        }
    }

    fn group(name: &str, instances: &[(&str, &str, Market)], gib: i32) -> GroupHolding {
        GroupHolding {
            name: name.into(),
            instances: instances
                .iter()
                .map(|(t, z, m)| (t.to_string(), z.to_string(), *m))
                .collect(),
            root_gib: gib,
            volume_type: "gp3".into(),
        }
    }

    #[test]
    fn a_clusters_cost_adds_its_instances_at_their_market_price_and_its_network() {
        let held = Holding {
            groups: vec![
                group(
                    "cpu",
                    &[
                        ("m5.large", "eu-west-1a", Market::OnDemand),
                        ("m5.large", "eu-west-1b", Market::OnDemand),
                    ],
                    20,
                ),
                group("gpu", &[("g5.xlarge", "eu-west-1a", Market::Spot)], 100),
                group("empty", &[], 20),
            ],
            nat_gateways: 1,
            public_addresses: 0,
            interface_endpoint_zones: 2,
        };
        let w = wanted(&held);
        assert!(w.items.contains(&Item::Instance("g5.xlarge".into())));
        assert_eq!(
            w.spot.iter().collect::<Vec<_>>(),
            [&("g5.xlarge".to_string(), "eu-west-1a".to_string())]
        );
        let book = PriceBook::with([
            (Item::Instance("m5.large".into()), aws(0.107)),
            (Item::Instance("g5.xlarge".into()), aws(1.123)),
            (Item::Volume("gp3".into()), aws(0.088)),
            (Item::NatGateway, aws(0.048)),
            (Item::PublicIpv4, aws(0.005)),
            (Item::InterfaceEndpoint, aws(0.011)),
        ])
        .with_spot("g5.xlarge", "eu-west-1a", aws(0.41));
        let cost = estimate(&held, &book);
        let part = |name: &str| {
            let p = cost.parts.iter().find(|p| p.part == name);
            p.map(|p| p.per_hour.parse::<f64>().unwrap_or(-1.0))
        };
        assert_eq!(part("instances/cpu"), Some(0.214));
        assert_eq!(part("instances/gpu"), Some(0.41));
        assert_eq!(part("instances/empty"), None);
        // 140 GiB at 0.088 a GB-month: 12.32 a month.
        assert_eq!(part("volumes/cpu"), Some(0.0048));
        assert_eq!(part("volumes/gpu"), Some(0.0121));
        assert_eq!(part("nat-gateways"), Some(0.048));
        assert_eq!(part("public-ipv4"), Some(0.005));
        assert_eq!(part("interface-endpoints"), Some(0.022));
        let total = 0.214 + 0.41 + 12.32 / 730.0 + 0.048 + 0.005 + 0.022;
        assert_eq!(cost.per_hour, format!("{total:.4}"));
        assert_eq!(cost.per_month, format!("{:.2}", total * 730.0));
        assert_eq!(cost.basis, "list price");
    }

    #[test]
    fn the_basis_names_what_the_table_priced_and_what_nothing_priced() {
        let held = Holding {
            groups: vec![group(
                "odd",
                &[
                    ("x9.unknown", "us-east-1a", Market::OnDemand),
                    ("t3.large", "us-east-1a", Market::Spot),
                ],
                8,
            )],
            nat_gateways: 1,
            ..Holding::default()
        };
        let book = PriceBook::with([(Item::NatGateway, aws(0.045))]);
        let cost = estimate(&held, &book);
        assert_eq!(
            cost.basis,
            "list price; built-in us-east-1 table for instances, public-ipv4, volumes; not priced: instance type x9.unknown"
        );
        // The spot instance without a quote is priced at its on-demand price.
        let instances = cost.parts.iter().find(|p| p.part == "instances/odd");
        assert_eq!(instances.map(|p| p.per_hour.as_str()), Some("0.0832"));
    }
}
