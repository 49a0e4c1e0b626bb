//! Validate: the raw object becomes a typed spec that the rest of the
//! reconcile reads instead of it. Pure: no I/O here.

use std::time::Duration;

use ipnet::Ipv4Net;
use kube::ResourceExt;

use crate::api::{
    CloudAccount, ClusterIam, ComputeCluster, EndpointPolicy, IngressRule, NatGateways,
    NetworkSpec, NodeGroupSpec, Peering,
};
use crate::aws::tags::OwnershipTags;

/// Zones when neither `availabilityZones` nor `azCount` is given.
pub const DEFAULT_AZ_COUNT: usize = 2;

/// A CloudAccount, by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountRef {
    pub namespace: String,
    pub name: String,
}

impl From<(String, String)> for AccountRef {
    fn from((namespace, name): (String, String)) -> Self {
        AccountRef { namespace, name }
    }
}

impl std::fmt::Display for AccountRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The spec after validation; the reconciler never reads the raw object again.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidatedSpec {
    pub region: String,
    /// The CloudAccount.
    pub account: AccountRef,
    pub network: NetworkPlan,
    pub ingress: Vec<IngressRule>,
    pub node_groups: Vec<NodeGroup>,
    pub iam: ClusterIam,
    pub owner: OwnershipTags,
    /// The permissions boundary the CloudAccount requires on every role
    /// the operator creates (`permissionsBoundaryArn`); set once the
    /// account is dereferenced.
    pub permissions_boundary: Option<String>,
    /// Image owners the CloudAccount allows beside Amazon and the account
    /// itself (`imageOwners`); set once the account is dereferenced.
    pub image_owners: Vec<String>,
    /// The cluster's log group (`logging`; `None`: none).
    pub logging: Option<crate::api::compute_cluster::LoggingSpec>,
    /// The cluster's KMS key (`storage`; `None`: none).
    pub key: Option<ClusterKey>,
    /// The identity the operator acts through in the account (the
    /// CloudAccount's role, else its base identity), which the policy of
    /// the cluster's own key names; set once the account is dereferenced.
    pub key_manager: Option<String>,
    /// The nodes' grants of the CloudAccount's role (made by `connect
    /// aws`), attached to the operator's node role while the cluster has
    /// something to grant; set once the account is dereferenced (none: the
    /// account names no role).
    pub node_grants: Option<String>,
}

/// The key a cluster's storage is encrypted with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterKey {
    /// Its own, deleted this many days after it is asked to be.
    Own { window_days: i32 },
    /// Brought by ARN: described, never changed.
    Brought(String),
}

impl ClusterKey {
    fn of(storage: &crate::api::compute_cluster::StorageSpec) -> ClusterKey {
        let e = storage.encryption.clone().unwrap_or_default();
        match e.kms_key_arn {
            Some(arn) => ClusterKey::Brought(arn),
            None => ClusterKey::Own {
                window_days: e.deletion_window_days.unwrap_or(
                    crate::api::compute_cluster::EncryptionSpec::DEFAULT_DELETION_WINDOW_DAYS,
                ),
            },
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum NetworkPlan {
    Managed {
        cidr: Ipv4Net,
        zones: Zones,
        nat: NatGateways,
        /// An internet gateway and public subnets (`network.internet`).
        internet: bool,
        /// The VPC endpoints' services, sorted.
        endpoints: Vec<String>,
        /// Who may use them.
        endpoint_policy: EndpointPolicy,
        /// The peering connections.
        peering: Vec<PeeringPlan>,
    },
    Existing {
        vpc_id: String,
        subnet_ids: Vec<String>,
    },
}

impl NetworkPlan {
    /// A managed network's CIDR and peering connections.
    pub fn peering(&self) -> Option<(Ipv4Net, &[PeeringPlan])> {
        match self {
            NetworkPlan::Managed { cidr, peering, .. } if !peering.is_empty() => {
                Some((*cidr, peering))
            }
            _ => None,
        }
    }
}

/// A peering connection as validated: its routes parsed, none overlapping
/// the cluster's CIDR.
#[derive(Clone, Debug, PartialEq)]
pub struct PeeringPlan {
    pub vpc_id: String,
    /// The peer's account, when not the cluster's.
    pub owner_id: Option<String>,
    /// The peer's region, when not the cluster's.
    pub region: Option<String>,
    /// The peer's CIDRs to route to; empty: the peer VPC's own blocks.
    pub routes: Vec<Ipv4Net>,
    pub peer_route_table_ids: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Zones {
    Named(Vec<String>),
    /// The region's first N zones, by name.
    Count(usize),
}

/// Tag key prefixes a cluster's `tags` may not use: AWS's and the
/// operator's (its ownership tags).
const RESERVED_TAG_PREFIXES: &[&str] = &["aws:", "byoc.dev/"];

/// What the apiserver's schema cannot check in a ComputeCluster's spec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("spec.tags: key {0} is reserved (keys may not start with 'aws:' or 'byoc.dev/')")]
    ReservedTag(String),
    #[error("the object has no UID yet")]
    NoUid,
    #[error("set exactly one of network.vpcCidr or network.existingVpcId")]
    NetworkSource,
    #[error("spec.network.existingSubnetIds must name at least one subnet")]
    NoExistingSubnets,
    #[error("spec.network.vpcCidr {cidr:?} is not an IPv4 CIDR: {problem}")]
    CidrSyntax { cidr: String, problem: String },
    #[error("spec.network.vpcCidr {cidr} must be a network address with a prefix from /16 to /24")]
    CidrRange { cidr: Ipv4Net },
    #[error("spec.network.availabilityZones: {zone} is not a zone of region {region}")]
    ZoneOutsideRegion { zone: String, region: String },
    #[error("spec.network.azCount must be positive")]
    AzCount,
    #[error("{cidr} is too small to carve /{prefix} subnets (AWS allows /28 at most)")]
    CidrTooSmall { cidr: Ipv4Net, prefix: u8 },
    #[error("at most {max} zones")]
    TooManyZones { max: u32 },
    #[error("set at most one of network.availabilityZones or network.azCount")]
    ZonesTwice,
    #[error("spec.network.peering {vpc_id}: route {route:?} is not an IPv4 CIDR")]
    PeeringRoute { vpc_id: String, route: String },
    #[error("spec.network.peering {vpc_id}: {route} overlaps the cluster's vpcCidr {cidr}; peered VPCs need ranges that do not overlap")]
    PeeringOverlap {
        vpc_id: String,
        route: Ipv4Net,
        cidr: Ipv4Net,
    },
    #[error("spec.network.peering: route table {id} (peerRouteTableIds) is not open to this cluster's routes back; its owner tags it {tag} to allow them")]
    PeerTableClosed { id: String, tag: String },
    #[error("spec.network.peering: route table {id} (peerRouteTableIds) already routes {destination}, which overlaps the cluster's vpcCidr {cidr}; a route back would take over traffic its owner sends elsewhere, so none is made")]
    PeerRouteTaken {
        id: String,
        destination: String,
        cidr: String,
    },
    #[error("nodeGroups {group}: healthCheckGracePeriod is not a duration like 90s or 5m")]
    GracePeriod { group: String },
    #[error("nodeGroups {group}: sshPublicKey {problem}")]
    SshPublicKey {
        group: String,
        problem: SshKeyProblem,
    },
    #[error("nodeGroups {group}: instanceTypes must share one architecture ({first} and {other} do not)")]
    MixedArchitectures {
        group: String,
        first: String,
        other: String,
    },
}

/// Why an `sshPublicKey` is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SshKeyProblem {
    #[error("is not an OpenSSH public key ({0})")]
    NotOpenSsh(String),
    #[error("has algorithm {0}, which EC2 does not import")]
    Algorithm(String),
}

/// A node group after validation: its spec, with what was parsed from it.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeGroup {
    pub spec: NodeGroupSpec,
    /// How long an instance may fail its status checks before it is
    /// replaced (`healthCheckGracePeriod`, default 5 minutes).
    pub grace_period: Duration,
}

impl NodeGroup {
    fn validate(group: &NodeGroupSpec) -> Result<NodeGroup, SpecError> {
        let grace_period = grace_period(group).ok_or_else(|| SpecError::GracePeriod {
            group: group.name.clone(),
        })?;
        if let Some(key) = &group.ssh_public_key {
            check_ssh_public_key(key).map_err(|problem| SpecError::SshPublicKey {
                group: group.name.clone(),
                problem,
            })?;
        }
        Ok(NodeGroup {
            spec: group.clone(),
            grace_period,
        })
    }

    /// A group whose spec is taken as valid: the unit tests' groups.
    #[cfg(test)]
    pub fn of(spec: NodeGroupSpec) -> NodeGroup {
        NodeGroup {
            grace_period: grace_period(&spec).unwrap_or(DEFAULT_GRACE_PERIOD),
            spec,
        }
    }
}

/// A validated group reads as its spec.
impl std::ops::Deref for NodeGroup {
    type Target = NodeGroupSpec;

    fn deref(&self) -> &NodeGroupSpec {
        &self.spec
    }
}

const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(300);

/// `healthCheckGracePeriod`, or its default; `None` when it does not parse.
fn grace_period(group: &NodeGroupSpec) -> Option<Duration> {
    match &group.health_check_grace_period {
        None => Some(DEFAULT_GRACE_PERIOD),
        Some(text) => text
            .parse::<jiff::SignedDuration>()
            .ok()
            .and_then(|d| Duration::try_from(d).ok()),
    }
}

/// Validates what the schema cannot: CIDR parsing, zones in the region,
/// durations, SSH keys, architectures. `installation`: the public ID every
/// resource is tagged with.
pub fn validate(cc: &ComputeCluster, installation: &str) -> Result<ValidatedSpec, SpecError> {
    let spec = &cc.spec;
    let namespace = cc.namespace().unwrap_or_default();
    let uid = cc.uid().ok_or(SpecError::NoUid)?;
    let network = match (&spec.network.vpc_cidr, &spec.network.existing_vpc_id) {
        (Some(cidr), None) => managed_network(&spec.network, cidr, &spec.region)?,
        (None, Some(vpc_id)) => {
            let subnet_ids = spec.network.existing_subnet_ids.clone().unwrap_or_default();
            if subnet_ids.is_empty() {
                return Err(SpecError::NoExistingSubnets);
            }
            NetworkPlan::Existing {
                vpc_id: vpc_id.clone(),
                subnet_ids,
            }
        }
        _ => return Err(SpecError::NetworkSource),
    };
    let node_groups = spec
        .node_groups
        .iter()
        .map(NodeGroup::validate)
        .collect::<Result<_, _>>()?;
    // Also refused by the schema: checked again, as these keys are the
    // operator's ownership and AWS's own.
    if let Some(key) = spec
        .tags
        .keys()
        .find(|k| RESERVED_TAG_PREFIXES.iter().any(|p| k.starts_with(p)))
    {
        return Err(SpecError::ReservedTag(key.clone()));
    }
    Ok(ValidatedSpec {
        region: spec.region.clone(),
        account: cc.account_key().into(),
        network,
        ingress: spec.network.ingress.clone(),
        node_groups,
        iam: spec.iam.clone().unwrap_or_default(),
        owner: OwnershipTags {
            installation: installation.to_string(),
            uid,
            namespace,
            name: cc.name_any(),
            user: spec.tags.clone(),
        },
        permissions_boundary: None,
        image_owners: vec![],
        logging: spec.logging.clone(),
        key: spec.storage.as_ref().map(ClusterKey::of),
        key_manager: None,
        node_grants: None,
    })
}

fn managed_network(
    network: &NetworkSpec,
    cidr: &str,
    region: &str,
) -> Result<NetworkPlan, SpecError> {
    let cidr: Ipv4Net = cidr
        .parse()
        .map_err(|e: ipnet::AddrParseError| SpecError::CidrSyntax {
            cidr: cidr.to_string(),
            problem: e.to_string(),
        })?;
    if cidr.trunc() != cidr || !(16..=24).contains(&cidr.prefix_len()) {
        return Err(SpecError::CidrRange { cidr });
    }
    let zones = match (&network.availability_zones, network.az_count) {
        (Some(named), None) => {
            if let Some(bad) = named.iter().find(|z| !z.starts_with(region)) {
                return Err(SpecError::ZoneOutsideRegion {
                    zone: bad.clone(),
                    region: region.to_string(),
                });
            }
            Zones::Named(named.clone())
        }
        (None, Some(n)) => Zones::Count(usize::try_from(n).map_err(|_| SpecError::AzCount)?),
        (None, None) => Zones::Count(DEFAULT_AZ_COUNT),
        (Some(_), Some(_)) => return Err(SpecError::ZonesTwice),
    };
    let internet = network.internet.unwrap_or(true);
    let mut endpoints = network.endpoints.clone();
    endpoints.sort();
    endpoints.dedup();
    let peering = network
        .peering
        .iter()
        .map(|p| peering_plan(p, cidr))
        .collect::<Result<_, _>>()?;
    Ok(NetworkPlan::Managed {
        cidr,
        zones,
        // Without internet, no NAT gateway (the schema refuses one asked for).
        nat: match internet {
            true => network.nat_gateways.unwrap_or_default(),
            false => NatGateways::None,
        },
        internet,
        endpoints,
        endpoint_policy: network.endpoint_policy.unwrap_or_default(),
        peering,
    })
}

/// A peering connection's routes parsed and checked against the cluster's
/// CIDR: an overlap is refused before anything is made.
fn peering_plan(p: &Peering, cidr: Ipv4Net) -> Result<PeeringPlan, SpecError> {
    let routes = p
        .routes
        .iter()
        .map(|r| {
            r.parse::<Ipv4Net>().map_err(|_| SpecError::PeeringRoute {
                vpc_id: p.vpc_id.clone(),
                route: r.clone(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(route) = routes.iter().find(|r| overlaps(**r, cidr)) {
        return Err(SpecError::PeeringOverlap {
            vpc_id: p.vpc_id.clone(),
            route: *route,
            cidr,
        });
    }
    Ok(PeeringPlan {
        vpc_id: p.vpc_id.clone(),
        owner_id: p.owner_id.clone(),
        region: p.region.clone(),
        routes,
        peer_route_table_ids: p.peer_route_table_ids.clone(),
    })
}

/// Whether two IPv4 networks share an address.
pub fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// An OpenSSH public key line whose body decodes as a key of the named
/// algorithm: the schema checks the shape only, and EC2 refuses anything
/// else after the network has been built.
fn check_ssh_public_key(key: &str) -> Result<(), SshKeyProblem> {
    let parsed = ssh_key::PublicKey::from_openssh(key)
        .map_err(|e| SshKeyProblem::NotOpenSsh(e.to_string()))?;
    match parsed.algorithm() {
        ssh_key::Algorithm::Rsa { .. }
        | ssh_key::Algorithm::Ed25519
        | ssh_key::Algorithm::Ecdsa { .. } => Ok(()),
        other => Err(SshKeyProblem::Algorithm(other.to_string())),
    }
}

/// A cluster asking for a node role of its own from an account that gives
/// its clusters a shared node identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CloudAccount {namespace}/{name} gives its clusters the shared node identity {shared} (spec.nodeInstanceProfileName), and its role is not meant to create IAM roles: iam.managedPolicyArns asks for a node role of this cluster's own; attach the policies to the shared role {shared}, or bring an instance profile (iam.instanceProfileName)")]
pub struct SharedIdentityRefused {
    pub namespace: String,
    pub name: String,
    pub shared: String,
}

/// The account's shared node identity (`nodeInstanceProfileName`) for a
/// cluster that brings none of its own: the nodes launch with it and no IAM
/// role or profile is made. A cluster asking for a node role of its own
/// (`iam.managedPolicyArns`) is refused: the account's role is not meant to
/// create one. Pure: decided before any AWS call.
pub fn shared_node_identity(
    spec: &mut ValidatedSpec,
    account: &CloudAccount,
) -> Result<(), SharedIdentityRefused> {
    let Some(shared) = &account.spec.node_instance_profile_name else {
        return Ok(());
    };
    if !spec.iam.managed_policy_arns.is_empty() {
        let AccountRef { namespace, name } = spec.account.clone();
        return Err(SharedIdentityRefused {
            namespace,
            name,
            shared: shared.clone(),
        });
    }
    if spec.iam.instance_profile_name.is_none() {
        spec.iam.instance_profile_name = Some(shared.clone());
    }
    Ok(())
}

/// A root volume's key, or a brought storage key, that the CloudAccount
/// does not list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {key} is not a key CloudAccount {namespace}/{name} lists (spec.kmsKeyArns), so its role may not use it: name a listed key by its ARN or key ID, or list the key's ARN there and in the role's policy (iam-policy permissions --kms-key-arn ARN)")]
pub struct KeyNotListed {
    pub namespace: String,
    pub name: String,
    /// Where the spec names it.
    pub field: String,
    pub key: String,
}

/// AWS's default EBS key, which nodes may use without listing it.
const DEFAULT_EBS_KEY: &str = "alias/aws/ebs";

/// What the CloudAccount lets nodes use beside AWS's own: the image owners
/// (`imageOwners`, checked at launch, when the image is known) and the
/// root volumes' KMS keys (`kmsKeyArns`, checked here: a key is listed by
/// its ARN, and may be named by that ARN or its key ID). Pure: decided
/// before any AWS call.
pub fn account_allowances(
    spec: &mut ValidatedSpec,
    account: &CloudAccount,
) -> Result<(), KeyNotListed> {
    spec.image_owners = account.spec.image_owners.clone();
    let listed = &account.spec.kms_key_arns;
    let volumes = spec.node_groups.iter().filter_map(|g| {
        let key = g.spec.root_volume.as_ref()?.kms_key_id.as_deref()?;
        Some((
            format!("nodeGroups {}: rootVolume.kmsKeyId", g.spec.name),
            key,
        ))
    });
    let storage = match &spec.key {
        Some(ClusterKey::Brought(arn)) => {
            Some(("storage.encryption.kmsKeyArn".to_string(), arn.as_str()))
        }
        _ => None,
    };
    for (field, key) in volumes.chain(storage) {
        let named =
            |arn: &String| arn == key || arn.rsplit_once(":key/").is_some_and(|(_, id)| id == key);
        if key != DEFAULT_EBS_KEY && !listed.iter().any(named) {
            let AccountRef { namespace, name } = spec.account.clone();
            return Err(KeyNotListed {
                namespace,
                name,
                field,
                key: key.to_string(),
            });
        }
    }
    Ok(())
}

/// The bad-input cases shared with the apiserver's test.
#[cfg(test)]
#[path = "../../tests/fixtures/cases.rs"]
mod cases;

#[cfg(test)]
mod tests {
    use super::cases;
    use super::check_ssh_public_key;
    use super::{
        shared_node_identity, AccountRef, ClusterIam, NetworkPlan, OwnershipTags, ValidatedSpec,
    };
    use crate::api::{CloudAccount, CloudAccountSpec};

    fn account(shared: Option<&str>) -> CloudAccount {
        CloudAccount::new(
            "acme",
            CloudAccountSpec {
                region: "us-east-1".into(),
                node_instance_profile_name: shared.map(str::to_string),
                ..Default::default()
            },
        )
    }

    fn spec(iam: ClusterIam) -> ValidatedSpec {
        ValidatedSpec {
            region: "us-east-1".into(),
            account: AccountRef {
                namespace: "team".into(),
                name: "acme".into(),
            },
            network: NetworkPlan::Existing {
                vpc_id: "vpc-1".into(),
                subnet_ids: vec![],
            },
            ingress: vec![],
            node_groups: vec![],
            iam,
            owner: OwnershipTags {
                installation: "i".into(),
                uid: "u".into(),
                namespace: "team".into(),
                name: "c".into(),
                user: Default::default(),
            },
            permissions_boundary: None,
            image_owners: vec![],
            logging: None,
            key: None,
            key_manager: None,
            node_grants: None,
        }
    }

    #[test]
    fn root_volume_keys_are_only_those_the_account_lists() {
        const ARN: &str =
            "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        let with_key = |key: Option<&str>| {
            let mut s = spec(ClusterIam::default());
            let mut group = crate::api::NodeGroupSpec::workers(1, "t3.small");
            group.root_volume = key.map(|k| {
                serde_json::from_value(serde_json::json!({"kmsKeyId": k})).unwrap_or_else(|e| {
                    panic!("a root volume: {e}");
                })
            });
            s.node_groups = vec![super::NodeGroup {
                spec: group,
                grace_period: std::time::Duration::from_secs(300),
            }];
            s
        };
        let mut listing = account(None);
        listing.spec.kms_key_arns = vec![ARN.into()];
        listing.spec.image_owners = vec!["210987654321".into()];
        for (key, account, allowed) in [
            (None, &account(None), true),
            (Some("alias/aws/ebs"), &account(None), true),
            (Some(ARN), &listing, true),
            (Some("1234abcd-12ab-34cd-56ef-1234567890ab"), &listing, true),
            (Some(ARN), &account(None), false),
            (Some("alias/team"), &listing, false),
            (
                Some("arn:aws:kms:us-east-1:123456789012:key/other"),
                &listing,
                false,
            ),
        ] {
            let mut s = with_key(key);
            let said = super::account_allowances(&mut s, account);
            assert_eq!(said.is_ok(), allowed, "{key:?}: {said:?}");
            if let Err(e) = said {
                let text = e.to_string();
                assert!(
                    text.contains("spec.kmsKeyArns") && text.contains("--kms-key-arn"),
                    "{text}"
                );
            }
            assert_eq!(s.image_owners, account.spec.image_owners);
        }
    }

    #[test]
    fn the_shared_node_identity_serves_clusters_that_bring_none() {
        let none = ClusterIam::default();
        let mut s = spec(none.clone());
        assert_eq!(shared_node_identity(&mut s, &account(None)), Ok(()));
        assert_eq!(s.iam, none, "no shared identity: the cluster makes its own");
        let mut s = spec(none);
        assert_eq!(
            shared_node_identity(&mut s, &account(Some("shared"))),
            Ok(())
        );
        assert_eq!(s.iam.instance_profile_name.as_deref(), Some("shared"));
        let brought = ClusterIam {
            instance_profile_name: Some("own".into()),
            ..Default::default()
        };
        let mut s = spec(brought.clone());
        assert_eq!(
            shared_node_identity(&mut s, &account(Some("shared"))),
            Ok(())
        );
        assert_eq!(s.iam, brought, "a brought profile is kept");
        let mut s = spec(ClusterIam {
            managed_policy_arns: vec!["arn:aws:iam::aws:policy/P".into()],
            ..Default::default()
        });
        let refused = shared_node_identity(&mut s, &account(Some("shared")))
            .expect_err("a node role of its own is refused")
            .to_string();
        assert!(
            refused.contains("iam.managedPolicyArns")
                && refused.contains("nodeInstanceProfileName"),
            "{refused}"
        );
        assert!(
            shared_node_identity(&mut s, &account(None)).is_ok(),
            "without a shared identity the cluster's own role is made"
        );
    }

    /// What validate says of a manifest: `ok`, `unreadable` or its error.
    fn verdict(manifest: &str) -> String {
        let Ok(mut cc) = serde_yaml_ng::from_str::<crate::api::ComputeCluster>(manifest) else {
            return "unreadable".into();
        };
        cc.metadata.uid = Some("uid-1".into());
        cc.metadata.namespace = Some("team".into());
        match super::validate(&cc, "installation-1") {
            Ok(_) => "ok".into(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn validate_table_from_the_shared_fixture() {
        let fixture = cases::compute_cluster();
        assert_eq!(verdict(&fixture.valid), "ok", "the valid manifest");
        let mut wrong = Vec::new();
        for c in &fixture.cases {
            assert!(
                fixture.valid.contains(&c.from),
                "{}: the valid manifest has no {:?}",
                c.case,
                c.from
            );
            let got = verdict(&c.manifest(&fixture.valid));
            let matches = match c.validate.as_str() {
                "ok" | "unreadable" => got == c.validate,
                text => got.contains(text),
            };
            if !matches {
                wrong.push(format!(
                    "{}: expected {:?}, got {got:?}",
                    c.case, c.validate
                ));
            }
            if c.apiserver == "accepted" {
                assert_ne!(got, "ok", "{}: neither layer refuses it", c.case);
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn overlapping_networks() {
        let net = |s: &str| s.parse::<ipnet::Ipv4Net>().expect("a CIDR");
        let rows = [
            ("10.0.0.0/16", "10.1.0.0/16", false, "side by side"),
            ("10.0.0.0/16", "10.0.128.0/17", true, "inside"),
            ("10.0.128.0/17", "10.0.0.0/16", true, "around"),
            ("10.0.0.0/16", "10.0.0.0/16", true, "the same"),
            ("10.0.0.0/24", "10.0.1.0/24", false, "adjacent"),
            ("172.16.0.0/12", "172.31.255.0/24", true, "at the end"),
        ];
        for (a, b, want, why) in rows {
            assert_eq!(super::overlaps(net(a), net(b)), want, "{why}");
        }
    }

    #[test]
    fn ssh_public_keys() {
        let ed25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBUe8WXdciTjIF9A4ssgb5fI76msqWQ00GpX7iDC6DnX user@host";
        assert_eq!(check_ssh_public_key(ed25519), Ok(()));
        for bad in [
            // Right prefix, random body: what the schema's pattern admits.
            "ssh-ed25519 AAAAabcdefghijklmnopqrstuvwx user",
            // The body of an ed25519 key under another algorithm's name.
            "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIBUe8WXdciTjIF9A4ssgb5fI76msqWQ00GpX7iDC6DnX",
            // A truncated body.
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBUe8WXdciTjIF9A4ssgb5fI76msq",
            "",
        ] {
            let err = check_ssh_public_key(bad).expect_err(bad);
            assert!(
                matches!(err, super::SshKeyProblem::NotOpenSsh(_)),
                "{bad}: {err}"
            );
        }
    }
}
