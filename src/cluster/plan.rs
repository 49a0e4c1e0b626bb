//! Pure planning: a validated spec from the raw object, the topology it asks
//! for, and the diffs between that and what AWS has. No I/O here.

use std::collections::{BTreeMap, HashMap};

use ipnet::Ipv4Net;
use kube::ResourceExt;

use crate::api::{
    ComputeCluster, DeletionPolicy, IngressRule, NatGateways, NodeGroupSpec, Protocol, SubnetKind,
};
use crate::aws::tags::OwnershipTags;

/// Zones when neither `availabilityZones` nor `azCount` is given.
pub const DEFAULT_AZ_COUNT: usize = 2;
/// Extra prefix bits of each subnet: 16 slots, public in 0..8, private in 8..16.
const SUBNET_BITS: u8 = 4;
const PRIVATE_SLOT_OFFSET: u32 = 8;

/// The spec after validation; the reconciler never reads the raw object again.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidatedSpec {
    pub region: String,
    /// `(namespace, name)` of the CloudAccount.
    pub account: (String, String),
    pub network: NetworkPlan,
    pub ingress: Vec<IngressRule>,
    pub node_groups: Vec<NodeGroupSpec>,
    pub owner: OwnershipTags,
    pub deletion_policy: DeletionPolicy,
}

#[derive(Clone, Debug, PartialEq)]
pub enum NetworkPlan {
    Managed {
        cidr: Ipv4Net,
        zones: Zones,
        nat: NatGateways,
    },
    Existing {
        vpc_id: String,
        subnet_ids: Vec<String>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub enum Zones {
    Named(Vec<String>),
    /// The region's first N zones, by name.
    Count(usize),
}

/// Validates what the schema cannot: CIDR parsing, zones in the region.
pub fn validate(cc: &ComputeCluster) -> Result<ValidatedSpec, String> {
    let spec = &cc.spec;
    let namespace = cc.namespace().unwrap_or_default();
    let uid = cc.uid().ok_or("the object has no UID yet")?;
    let network = match (&spec.network.vpc_cidr, &spec.network.existing_vpc_id) {
        (Some(cidr), None) => {
            let cidr: Ipv4Net = cidr
                .parse()
                .map_err(|e| format!("spec.network.vpcCidr {cidr:?} is not an IPv4 CIDR: {e}"))?;
            if cidr.trunc() != cidr || !(16..=24).contains(&cidr.prefix_len()) {
                return Err(format!(
                    "spec.network.vpcCidr {cidr} must be a network address with a prefix from /16 to /24"
                ));
            }
            let zones = match (&spec.network.availability_zones, spec.network.az_count) {
                (Some(named), None) => {
                    if let Some(bad) = named.iter().find(|z| !z.starts_with(&spec.region)) {
                        return Err(format!(
                            "spec.network.availabilityZones: {bad} is not a zone of region {}",
                            spec.region
                        ));
                    }
                    Zones::Named(named.clone())
                }
                (None, Some(n)) => Zones::Count(
                    usize::try_from(n).map_err(|_| "spec.network.azCount must be positive")?,
                ),
                (None, None) => Zones::Count(DEFAULT_AZ_COUNT),
                (Some(_), Some(_)) => {
                    return Err(
                        "set at most one of network.availabilityZones or network.azCount".into(),
                    )
                }
            };
            NetworkPlan::Managed {
                cidr,
                zones,
                nat: spec.network.nat_gateways.unwrap_or_default(),
            }
        }
        (None, Some(vpc_id)) => NetworkPlan::Existing {
            vpc_id: vpc_id.clone(),
            subnet_ids: spec.network.existing_subnet_ids.clone().unwrap_or_default(),
        },
        _ => return Err("set exactly one of network.vpcCidr or network.existingVpcId".into()),
    };
    if let NetworkPlan::Existing { subnet_ids, .. } = &network {
        if subnet_ids.is_empty() {
            return Err("spec.network.existingSubnetIds must name at least one subnet".into());
        }
    }
    Ok(ValidatedSpec {
        region: spec.region.clone(),
        account: (
            spec.cloud_account_ref
                .namespace
                .clone()
                .unwrap_or_else(|| namespace.clone()),
            spec.cloud_account_ref.name.clone(),
        ),
        network,
        ingress: spec.network.ingress.clone(),
        node_groups: spec.node_groups.clone(),
        owner: OwnershipTags {
            uid,
            namespace,
            name: cc.name_any(),
            user: spec.tags.clone(),
        },
        deletion_policy: spec.deletion_policy,
    })
}

/// One subnet the managed network needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredSubnet {
    pub zone: String,
    pub public: bool,
    pub cidr: Ipv4Net,
}

impl DesiredSubnet {
    pub fn part(&self) -> &'static str {
        if self.public {
            "public-subnet"
        } else {
            "private-subnet"
        }
    }
}

/// A public and a private subnet per zone, carved deterministically: zone i
/// gets slot i (public) and slot 8+i (private) of the VPC split 16 ways.
pub fn carve_subnets(cidr: Ipv4Net, zones: &[String]) -> Result<Vec<DesiredSubnet>, String> {
    let prefix = cidr.prefix_len() + SUBNET_BITS;
    if prefix > 28 {
        return Err(format!(
            "{cidr} is too small to carve /{prefix} subnets (AWS allows /28 at most)"
        ));
    }
    if zones.len() > PRIVATE_SLOT_OFFSET as usize {
        return Err(format!("at most {PRIVATE_SLOT_OFFSET} zones"));
    }
    let slots: Vec<Ipv4Net> = cidr.subnets(prefix).map_err(|e| e.to_string())?.collect();
    let mut out = Vec::new();
    for (i, zone) in zones.iter().enumerate() {
        for (public, slot) in [(true, i), (false, i + PRIVATE_SLOT_OFFSET as usize)] {
            let cidr = *slots.get(slot).ok_or("subnet slot out of range")?;
            out.push(DesiredSubnet {
                zone: zone.clone(),
                public,
                cidr,
            });
        }
    }
    Ok(out)
}

/// Zones that get a NAT gateway.
pub fn nat_zones(nat: NatGateways, zones: &[String]) -> Vec<String> {
    match nat {
        NatGateways::None => vec![],
        NatGateways::Single => zones.iter().take(1).cloned().collect(),
        NatGateways::PerZone => zones.to_vec(),
    }
}

/// A private route table: `zone` is Some for per-zone tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrivateRouteTable {
    pub zone: Option<String>,
    /// Zone of the NAT gateway its default route goes to (None: no default route).
    pub nat_zone: Option<String>,
    /// Zones whose private subnets it serves.
    pub serves: Vec<String>,
}

pub fn private_route_tables(nat: NatGateways, zones: &[String]) -> Vec<PrivateRouteTable> {
    match nat {
        NatGateways::PerZone => zones
            .iter()
            .map(|z| PrivateRouteTable {
                zone: Some(z.clone()),
                nat_zone: Some(z.clone()),
                serves: vec![z.clone()],
            })
            .collect(),
        NatGateways::Single | NatGateways::None => vec![PrivateRouteTable {
            zone: None,
            nat_zone: nat_zones(nat, zones).into_iter().next(),
            serves: zones.to_vec(),
        }],
    }
}

/// EC2 instance lifecycle states that matter here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstanceState {
    Pending,
    Running,
    Stopping,
    Stopped,
    ShuttingDown,
    Terminated,
}

/// An instance of ours as observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedInstance {
    pub id: String,
    pub group: String,
    pub instance_type: String,
    pub state: InstanceState,
    /// Launch time, seconds since the epoch.
    pub launched: i64,
    pub subnet_id: String,
}

/// What to do with one node group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupPlan {
    /// Instances to launch per subnet.
    pub launch: BTreeMap<String, i32>,
    pub terminate: Vec<String>,
}

/// Scales a group to `count`, replaces instances of another type (new ones
/// first, old ones once enough new ones run), replaces stopped instances,
/// and terminates the newest first when scaling down. `subnets` are the
/// candidate subnets; launches go where the group has fewest instances.
pub fn plan_node_group(
    group: &NodeGroupSpec,
    instances: &[ObservedInstance],
    subnets: &[String],
) -> GroupPlan {
    let mut plan = GroupPlan::default();
    let want = usize::try_from(group.count).unwrap_or(0);
    let mut live: Vec<&ObservedInstance> = Vec::new();
    for i in instances.iter().filter(|i| i.group == group.name) {
        match i.state {
            InstanceState::Pending | InstanceState::Running => live.push(i),
            InstanceState::Stopping | InstanceState::Stopped => plan.terminate.push(i.id.clone()),
            InstanceState::ShuttingDown | InstanceState::Terminated => {}
        }
    }
    let (mut current, outdated): (Vec<&ObservedInstance>, Vec<&ObservedInstance>) = live
        .into_iter()
        .partition(|i| i.instance_type == group.instance_type);
    // Newest first.
    current.sort_by(|a, b| b.launched.cmp(&a.launched).then_with(|| b.id.cmp(&a.id)));

    if current.len() > want {
        let excess = current.len() - want;
        plan.terminate
            .extend(current.drain(..excess).map(|i| i.id.clone()));
    }
    let running_current = current
        .iter()
        .filter(|i| i.state == InstanceState::Running)
        .count();
    if !outdated.is_empty() && running_current >= want {
        plan.terminate.extend(outdated.iter().map(|i| i.id.clone()));
    }
    let missing = want.saturating_sub(current.len());
    if missing > 0 && !subnets.is_empty() {
        let mut load: HashMap<&str, usize> = subnets.iter().map(|s| (s.as_str(), 0)).collect();
        for i in &current {
            if let Some(n) = load.get_mut(i.subnet_id.as_str()) {
                *n += 1;
            }
        }
        for _ in 0..missing {
            // Least loaded subnet; ties go to the earlier one in the list.
            let Some(target) = subnets
                .iter()
                .min_by_key(|s| load.get(s.as_str()).copied().unwrap_or(0))
            else {
                break;
            };
            if let Some(n) = load.get_mut(target.as_str()) {
                *n += 1;
            }
            *plan.launch.entry(target.clone()).or_default() += 1;
        }
    }
    plan
}

/// Instances of groups that are no longer in the spec.
pub fn orphaned_instances(groups: &[NodeGroupSpec], instances: &[ObservedInstance]) -> Vec<String> {
    instances
        .iter()
        .filter(|i| {
            !matches!(
                i.state,
                InstanceState::ShuttingDown | InstanceState::Terminated
            )
        })
        .filter(|i| !groups.iter().any(|g| g.name == i.group))
        .map(|i| i.id.clone())
        .collect()
}

/// The subnet kind a group asks for.
pub fn wants_public(group: &NodeGroupSpec) -> bool {
    group.subnets == SubnetKind::Public
}

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

/// The ingress the nodes' group should have: the spec's rules and all
/// traffic from the group itself.
pub fn desired_permissions(ingress: &[IngressRule], group_id: &str) -> Vec<Permission> {
    let mut out: Vec<Permission> = ingress
        .iter()
        .map(|r| {
            let (protocol, ports) = match r.protocol {
                Protocol::Tcp => ("tcp", Some((r.from_port, r.to_port))),
                Protocol::Udp => ("udp", Some((r.from_port, r.to_port))),
                Protocol::Icmp => ("icmp", Some((r.from_port, r.to_port))),
                Protocol::All => ("-1", None),
            };
            Permission {
                protocol: protocol.into(),
                from_port: ports.map(|p| p.0),
                to_port: ports.map(|p| p.1),
                source: Source::Cidr(r.cidr.clone()),
            }
        })
        .collect();
    out.push(Permission {
        protocol: "-1".into(),
        from_port: None,
        to_port: None,
        source: Source::Group(group_id.into()),
    });
    out.sort();
    out.dedup();
    out
}

/// `(to authorize, to revoke)`.
pub fn diff_permissions(
    desired: &[Permission],
    observed: &[Permission],
) -> (Vec<Permission>, Vec<Permission>) {
    let add = desired
        .iter()
        .filter(|p| !observed.contains(p))
        .cloned()
        .collect();
    let remove = observed
        .iter()
        .filter(|p| !desired.contains(p))
        .cloned()
        .collect();
    (add, remove)
}

/// IAM role and instance profile name: `byoc-<ns>-<name>-<uid8>`, at most 64 characters.
pub fn iam_name(owner: &OwnershipTags) -> String {
    let uid8: String = owner
        .uid
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(8)
        .collect();
    let mut base = format!("byoc-{}-{}", owner.namespace, owner.name);
    base.truncate(64 - 1 - uid8.len());
    format!("{base}-{uid8}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(count: i32, instance_type: &str) -> NodeGroupSpec {
        NodeGroupSpec {
            name: "workers".into(),
            instance_type: instance_type.into(),
            count,
            image_id: None,
            spot: false,
            subnets: SubnetKind::Private,
        }
    }

    fn inst(
        id: &str,
        t: &str,
        state: InstanceState,
        launched: i64,
        subnet: &str,
    ) -> ObservedInstance {
        ObservedInstance {
            id: id.into(),
            group: "workers".into(),
            instance_type: t.into(),
            state,
            launched,
            subnet_id: subnet.into(),
        }
    }

    fn subnets() -> Vec<String> {
        vec!["subnet-a".into(), "subnet-b".into()]
    }

    #[test]
    fn carves_deterministic_non_overlapping_subnets() {
        let zones = vec!["us-east-1a".to_string(), "us-east-1b".to_string()];
        let s = carve_subnets("10.0.0.0/16".parse().expect("cidr"), &zones).expect("carve");
        let cidrs: Vec<String> = s
            .iter()
            .map(|d| format!("{}:{}:{}", d.zone, d.public, d.cidr))
            .collect();
        assert_eq!(
            cidrs,
            vec![
                "us-east-1a:true:10.0.0.0/20",
                "us-east-1a:false:10.0.128.0/20",
                "us-east-1b:true:10.0.16.0/20",
                "us-east-1b:false:10.0.144.0/20"
            ]
        );
        let small = carve_subnets("10.0.0.0/24".parse().expect("cidr"), &zones).expect("carve /24");
        assert!(small.iter().all(|d| d.cidr.prefix_len() == 28));
        assert!(carve_subnets("10.0.0.0/25".parse().expect("cidr"), &zones).is_err());
    }

    #[test]
    fn nat_layouts() {
        let zones = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        assert!(nat_zones(NatGateways::None, &zones).is_empty());
        assert_eq!(nat_zones(NatGateways::Single, &zones), vec!["a"]);
        assert_eq!(nat_zones(NatGateways::PerZone, &zones).len(), 3);
        let single = private_route_tables(NatGateways::Single, &zones);
        assert_eq!(single.len(), 1);
        assert_eq!(single[0].nat_zone.as_deref(), Some("a"));
        assert_eq!(single[0].serves.len(), 3);
        let none = private_route_tables(NatGateways::None, &zones);
        assert_eq!(none[0].nat_zone, None);
        let per = private_route_tables(NatGateways::PerZone, &zones);
        assert_eq!(per.len(), 3);
        assert_eq!(per[1].nat_zone.as_deref(), Some("b"));
    }

    #[test]
    fn scales_up_spreading_over_subnets() {
        let have = vec![inst(
            "i-1",
            "t3.large",
            InstanceState::Running,
            1,
            "subnet-a",
        )];
        let plan = plan_node_group(&group(5, "t3.large"), &have, &subnets());
        // 1 existing in a + 4 new: 3 and 2, as even as five can be.
        let a = 1 + plan.launch.get("subnet-a").copied().unwrap_or(0);
        let b = plan.launch.get("subnet-b").copied().unwrap_or(0);
        assert_eq!(a + b, 5);
        assert!((a - b).abs() <= 1, "a={a} b={b}");
        assert!(plan.terminate.is_empty());
    }

    #[test]
    fn scales_down_newest_first() {
        let have = vec![
            inst("i-1", "t3.large", InstanceState::Running, 1, "subnet-a"),
            inst("i-2", "t3.large", InstanceState::Running, 3, "subnet-b"),
            inst("i-3", "t3.large", InstanceState::Running, 2, "subnet-a"),
        ];
        let plan = plan_node_group(&group(1, "t3.large"), &have, &subnets());
        assert_eq!(plan.terminate, vec!["i-2", "i-3"]);
        assert!(plan.launch.is_empty());
    }

    #[test]
    fn replaces_type_new_before_old() {
        let old = vec![
            inst("i-1", "t3.large", InstanceState::Running, 1, "subnet-a"),
            inst("i-2", "t3.large", InstanceState::Running, 1, "subnet-b"),
        ];
        let first = plan_node_group(&group(2, "m6i.large"), &old, &subnets());
        assert_eq!(first.launch.values().sum::<i32>(), 2);
        assert!(
            first.terminate.is_empty(),
            "old ones stay until new ones run"
        );

        let mut both = old.clone();
        both.push(inst(
            "i-3",
            "m6i.large",
            InstanceState::Pending,
            5,
            "subnet-a",
        ));
        both.push(inst(
            "i-4",
            "m6i.large",
            InstanceState::Running,
            5,
            "subnet-b",
        ));
        let waiting = plan_node_group(&group(2, "m6i.large"), &both, &subnets());
        assert!(waiting.launch.is_empty() && waiting.terminate.is_empty());

        both[2].state = InstanceState::Running;
        let done = plan_node_group(&group(2, "m6i.large"), &both, &subnets());
        assert_eq!(done.terminate, vec!["i-1", "i-2"]);
    }

    #[test]
    fn replaces_stopped_and_ignores_terminated() {
        let have = vec![
            inst("i-1", "t3.large", InstanceState::Stopped, 1, "subnet-a"),
            inst("i-2", "t3.large", InstanceState::Terminated, 1, "subnet-a"),
            inst("i-3", "t3.large", InstanceState::Running, 1, "subnet-b"),
        ];
        let plan = plan_node_group(&group(2, "t3.large"), &have, &subnets());
        assert_eq!(plan.terminate, vec!["i-1"]);
        assert_eq!(plan.launch.values().sum::<i32>(), 1);
        assert_eq!(plan.launch.get("subnet-a"), Some(&1));
    }

    #[test]
    fn orphans_are_instances_of_removed_groups() {
        let mut other = inst("i-9", "t3.large", InstanceState::Running, 1, "subnet-a");
        other.group = "gone".into();
        let have = vec![
            inst("i-1", "t3.large", InstanceState::Running, 1, "subnet-a"),
            other,
        ];
        assert_eq!(
            orphaned_instances(&[group(1, "t3.large")], &have),
            vec!["i-9"]
        );
    }

    #[test]
    fn security_group_diff() {
        let ingress = vec![IngressRule {
            protocol: Protocol::Tcp,
            from_port: 22,
            to_port: 22,
            cidr: "203.0.113.0/24".into(),
        }];
        let desired = desired_permissions(&ingress, "sg-1");
        assert_eq!(desired.len(), 2);
        let stray = Permission {
            protocol: "tcp".into(),
            from_port: Some(80),
            to_port: Some(80),
            source: Source::Cidr("0.0.0.0/0".into()),
        };
        let observed = vec![desired[0].clone(), stray.clone()];
        let (add, remove) = diff_permissions(&desired, &observed);
        assert_eq!(add, vec![desired[1].clone()]);
        assert_eq!(remove, vec![stray]);
    }

    #[test]
    fn iam_names_fit() {
        let owner = OwnershipTags {
            uid: "0123abcd-ef".into(),
            namespace: "n".repeat(63),
            name: "x".repeat(63),
            user: Default::default(),
        };
        let name = iam_name(&owner);
        assert!(name.len() <= 64, "{name}");
        assert!(name.ends_with("-0123abcd"));
    }
}
