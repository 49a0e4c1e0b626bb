//! `ComputeCluster`: what the operator builds in an account.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::patterns;

/// A VPC with public and private subnets per availability zone, an internet
/// gateway, NAT gateways, route tables, a security group, an IAM role and
/// instance profile for the nodes, and EC2 node groups, in the account of
/// `cloudAccountRef`. The operator converges AWS to this spec, repairs drift,
/// and on deletion removes everything it created (`deletionPolicy: Delete`).
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "byoc.dev",
    version = "v1alpha1",
    kind = "ComputeCluster",
    namespaced,
    status = "ComputeClusterStatus",
    shortname = "cc",
    category = "byoc",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Region","type":"string","jsonPath":".spec.region"}"#,
    printcolumn = r#"{"name":"VPC","type":"string","jsonPath":".status.network.vpcId"}"#,
    printcolumn = r#"{"name":"Nodes","type":"string","jsonPath":".status.nodes"}"#,
    printcolumn = r#"{"name":"Cost/h","type":"string","priority":1,"jsonPath":".status.cost.perHour"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.network.internet) || self.network.internet || !has(self.nodeGroups) || self.nodeGroups.all(g, !has(g.subnets) || g.subnets != 'public')").message("network.internet: false has no public subnets: a node group cannot ask for subnets: public"))]
pub struct ComputeClusterSpec {
    /// The CloudAccount whose credentials are used.
    pub cloud_account_ref: CloudAccountRef,

    /// AWS region of every resource, e.g. `us-east-1`. Immutable.
    #[schemars(regex(pattern = patterns::REGION))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("region is immutable"))]
    pub region: String,

    /// The network: a managed VPC (`vpcCidr`) or an existing one (`existingVpcId`).
    pub network: NetworkSpec,

    /// The nodes' IAM identity. Without it the operator makes a role and an
    /// instance profile for the nodes, named after the cluster, with no
    /// policy attached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iam: Option<ClusterIam>,

    /// EC2 node groups; names are unique.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub node_groups: Vec<NodeGroupSpec>,

    /// Tags added to every AWS resource, besides the operator's ownership tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[x_kube(validation = Rule::new("self.all(k, size(k) <= 128 && size(self[k]) <= 256 && !k.startsWith('aws:') && !k.startsWith('byoc.dev/'))").message("tag keys must be at most 128 characters, values at most 256, and keys may not start with 'aws:' or 'byoc.dev/'"))]
    #[schemars(length(max = 40))]
    pub tags: BTreeMap<String, String>,

    /// The cluster's CloudWatch Logs log group, `/byoc/<namespace>/<name>`:
    /// made with the cluster's tags and `retentionDays`, put back when
    /// deleted or changed out of band, and deleted with the cluster (kept
    /// with `deletionPolicy: Retain`). Removing the field deletes the
    /// group. The operator's node role gets the account's nodes' grants
    /// (`<role>-byoc-operator-nodes`, made by `connect aws`): its nodes may
    /// write to this group alone. A brought or shared node identity needs
    /// the statement the README shows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<LoggingSpec>,

    /// The cluster's storage. So far its KMS key (`encryption`): present,
    /// the cluster gets a key of its own (rotation on), unless it brings
    /// one. Removing the field schedules the cluster's own key for
    /// deletion, as deleting the cluster does (`deletionPolicy: Retain`
    /// keeps it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageSpec>,

    /// `Delete` (default) removes every AWS resource the operator created when
    /// this object is deleted; `Retain` leaves them. It may be set on an
    /// object being deleted (when its CloudAccount cannot be used, say): the
    /// object then goes at once, and an Event lists every AWS resource ID
    /// left behind.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// Reference to a CloudAccount.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
pub struct CloudAccountRef {
    /// Name of the CloudAccount.
    #[schemars(length(min = 1, max = 253), regex(pattern = patterns::DNS_SUBDOMAIN))]
    pub name: String,
    /// Its namespace; default this object's. Another namespace works only when
    /// that account lists this one in `allowedNamespaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = patterns::DNS_LABEL))]
    pub namespace: Option<String>,
}

/// The network of a cluster.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.vpcCidr) != has(self.existingVpcId)").message("set exactly one of network.vpcCidr (a managed VPC) or network.existingVpcId (bring your own network)"),
    validation = Rule::new("!(has(self.availabilityZones) && has(self.azCount))").message("set at most one of network.availabilityZones or network.azCount"),
    validation = Rule::new("has(self.existingVpcId) == has(self.existingSubnetIds)").message("network.existingVpcId and network.existingSubnetIds go together"),
    validation = Rule::new("!has(self.existingVpcId) || (!has(self.availabilityZones) && !has(self.azCount) && !has(self.natGateways))").message("with network.existingVpcId the zones come from the existing subnets: availabilityZones, azCount and natGateways do not apply"),
    validation = Rule::new("has(self.vpcCidr) == has(oldSelf.vpcCidr) && has(self.existingVpcId) == has(oldSelf.existingVpcId)").message("a cluster cannot switch between a managed VPC and an existing one"),
    validation = Rule::new("has(self.availabilityZones) == has(oldSelf.availabilityZones) && has(self.azCount) == has(oldSelf.azCount)").message("the availability zones of a cluster are immutable"),
    validation = Rule::new("!has(self.existingVpcId) || (!has(self.endpoints) && !has(self.internet) && !has(self.peering))").message("endpoints, internet and peering are of a managed VPC (network.vpcCidr); an existing VPC is never changed"),
    validation = Rule::new("!has(self.internet) || self.internet || !has(self.natGateways) || self.natGateways == 'none'").message("network.internet: false has no NAT gateway: natGateways must be none or unset"),
    validation = Rule::new("has(self.internet) == has(oldSelf.internet)").message("internet is immutable"),
)]
pub struct NetworkSpec {
    /// IPv4 CIDR of the managed VPC, a /16 to /24 network address, e.g. `10.0.0.0/16`.
    /// Subnets are carved from it. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 18), regex(pattern = patterns::IPV4_CIDR))]
    #[x_kube(
        validation = Rule::new("isCIDR(self) && cidr(self) == cidr(self).masked() && cidr(self).prefixLength() >= 16 && cidr(self).prefixLength() <= 24").message("vpcCidr must be an IPv4 network address with a prefix from /16 to /24, e.g. 10.0.0.0/16"),
        validation = Rule::new("self == oldSelf").message("vpcCidr is immutable"),
    )]
    pub vpc_cidr: Option<String>,

    /// Availability zones to use, e.g. `[us-east-1a, us-east-1b]`. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 6), inner(length(max = 32), regex(pattern = patterns::ZONE)))]
    #[x_kube(
        validation = Rule::new("self == oldSelf").message("availabilityZones is immutable"),
        merge_strategy = ListMerge::Set
    )]
    pub availability_zones: Option<Vec<String>>,

    /// Number of zones to use, the region's first ones (default 2 when no
    /// zones are named). Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 6))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("azCount is immutable"))]
    pub az_count: Option<i32>,

    /// NAT gateways for the private subnets: `none`, `single` (default) or `perZone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat_gateways: Option<NatGateways>,

    /// Ingress rules of the nodes' security group (traffic within the group is always allowed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub ingress: Vec<IngressRule>,

    /// VPC endpoints, by service: `s3` and `dynamodb` are gateway endpoints
    /// on every route table the cluster manages (S3 traffic then goes
    /// through no NAT gateway); the others, e.g. `ecr.api`, `ecr.dkr`, `sts`,
    /// `ssm`, `ec2messages`, `ssmmessages`, `logs`, are interface endpoints
    /// in the private subnets, with private DNS and a security group of
    /// their own that admits HTTPS from the VPC. A managed VPC only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20), inner(length(max = 64), regex(pattern = patterns::ENDPOINT_SERVICE)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub endpoints: Vec<String>,

    /// The policy on every VPC endpoint the cluster makes. `account` (the
    /// default): only principals of the cluster's own AWS account may use
    /// them (`aws:PrincipalAccount`), so credentials of another account
    /// cannot carry data out through them, `internet: false` or not.
    /// `full`: AWS's default policy, anyone's credentials. Changing it
    /// changes the endpoints' policy in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_policy: Option<EndpointPolicy>,

    /// Whether the network reaches the internet (default true). `false`: no
    /// internet gateway, no NAT gateway, no public subnets; the nodes reach
    /// AWS through `endpoints` only. A managed VPC only. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("internet is immutable"))]
    pub internet: Option<bool>,

    /// Peering connections with the team's other VPCs. Their CIDRs must not
    /// overlap the cluster's (refused before anything is made); routes to
    /// them go into the cluster's route tables. A managed VPC only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["vpcId".into()]))]
    pub peering: Vec<Peering>,

    /// An existing VPC to use instead of a managed one; never modified or deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = patterns::VPC_ID))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("existingVpcId is immutable"))]
    pub existing_vpc_id: Option<String>,

    /// Existing subnets of `existingVpcId` for the nodes; never modified or deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 16), inner(regex(pattern = patterns::SUBNET_ID)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub existing_subnet_ids: Option<Vec<String>>,
}

/// A peering connection with another VPC.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Peering {
    /// The peer VPC.
    #[schemars(regex(pattern = patterns::VPC_ID))]
    pub vpc_id: String,
    /// The AWS account of the peer VPC (default the cluster's). A peer in
    /// the cluster's own account is accepted by the operator (in the peer's
    /// region) when its policy allows; any other must be accepted by its
    /// owner (`PeeringPendingAcceptance` says what to do).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = patterns::ACCOUNT_ID))]
    pub owner_id: Option<String>,
    /// The region of the peer VPC (default the cluster's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = patterns::REGION))]
    pub region: Option<String>,
    /// The peer's CIDRs the cluster's route tables route to (default the
    /// peer VPC's CIDR blocks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20), inner(length(max = 18), regex(pattern = patterns::IPV4_CIDR)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub routes: Vec<String>,
    /// Route tables of the peer VPC that get a route back to the cluster's
    /// CIDR. These are not the cluster's: the operator adds exactly that
    /// route (recorded on the connection first) and removes exactly it,
    /// and touches nothing else of them, the owner's own routes to the
    /// connection included. Each must be opened by its owner to the
    /// cluster's namespace with the tag
    /// `byoc.dev/peer-routes=<installation ID>/<namespace>` (the generated
    /// policy allows no table not opened to the installation); one not
    /// opened, or with any route overlapping the cluster's CIDR (but the
    /// default route), is `Stalled`. Default none: the peer's owner routes
    /// back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20), inner(regex(pattern = patterns::ROUTE_TABLE_ID)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub peer_route_table_ids: Vec<String>,
}

/// Who may use the cluster's VPC endpoints.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub enum EndpointPolicy {
    /// Principals of the cluster's own AWS account only.
    #[default]
    Account,
    /// AWS's default full-access policy.
    Full,
}

/// How private subnets reach the internet.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub enum NatGateways {
    /// No NAT gateway: private subnets have no route to the internet.
    None,
    /// One NAT gateway in the first zone, shared by all private subnets.
    #[default]
    Single,
    /// One NAT gateway per zone.
    PerZone,
}

/// One ingress rule.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.protocol == 'all' || self.protocol == 'icmp' || self.fromPort <= self.toPort").message("fromPort must not be greater than toPort"))]
pub struct IngressRule {
    /// `tcp`, `udp`, `icmp` or `all`.
    pub protocol: Protocol,
    /// First port (ICMP: the type, -1 for all).
    #[schemars(range(min = -1, max = 65535))]
    pub from_port: i32,
    /// Last port (ICMP: the code, -1 for all).
    #[schemars(range(min = -1, max = 65535))]
    pub to_port: i32,
    /// Source IPv4 CIDR, e.g. `203.0.113.0/24`.
    #[schemars(length(max = 18), regex(pattern = patterns::IPV4_CIDR))]
    #[x_kube(validation = Rule::new("isCIDR(self) && cidr(self) == cidr(self).masked()").message("cidr must be an IPv4 network address, e.g. 203.0.113.0/24"))]
    pub cidr: String,
}

/// IP protocol of an ingress rule.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
    All,
}

/// The nodes' IAM identity: policies for the role the operator makes, or an
/// instance profile brought by the user.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.instanceProfileName) || !has(self.managedPolicyArns) || size(self.managedPolicyArns) == 0").message("set managedPolicyArns or instanceProfileName, not both: a brought instance profile's role is never changed"))]
pub struct ClusterIam {
    /// Managed policies attached to the nodes' role (AWS's, e.g.
    /// `arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore`, or the
    /// account's own). One removed from the list is detached; all are
    /// detached before the role is deleted. A change replaces no instance:
    /// policies apply to running nodes. A policy that does not exist stalls
    /// the cluster (`IamPolicyNotFound`). IAM allows 10 per role unless its
    /// quota is raised (to at most 20).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20), inner(length(max = 2048), regex(pattern = patterns::POLICY_ARN)))]
    #[x_kube(validation = Rule::new("self.all(p, self.exists_one(q, q == p))").message("managedPolicyArns must not repeat a policy"))]
    pub managed_policy_arns: Vec<String>,
    /// An existing instance profile the nodes launch with instead of the
    /// operator's role and profile: used, never modified or deleted. The
    /// operator's AWS identity needs `iam:PassRole` on its role. One that
    /// does not exist stalls the cluster (`InstanceProfileNotFound`) before
    /// any instance is launched; changing it replaces the instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), regex(pattern = patterns::IAM_NAME))]
    pub instance_profile_name: Option<String>,
}

/// A group of identical EC2 instances.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.sshKeyName) && has(self.sshPublicKey))").message("set at most one of sshKeyName or sshPublicKey"))]
#[x_kube(validation = Rule::new("has(self.instanceType) != has(self.instanceTypes)").message("set exactly one of instanceType or instanceTypes"))]
#[x_kube(validation = Rule::new("!self.spot || !has(self.capacityType) || self.capacityType == 'spot'").message("spot: true is the older spelling of capacityType: spot and contradicts the capacityType set"))]
pub struct NodeGroupSpec {
    /// Name, unique in the cluster (a DNS label).
    #[schemars(length(min = 1, max = 40), regex(pattern = patterns::DNS_LABEL))]
    pub name: String,
    /// EC2 instance type, e.g. `t3.large`. Changing it replaces the group's
    /// instances (new ones first). Or `instanceTypes`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 64), regex(pattern = patterns::INSTANCE_TYPE))]
    pub instance_type: String,
    /// Instance types in order of preference (1 to 10, one architecture),
    /// instead of `instanceType`: each launch takes the first type (and
    /// capacity type) AWS accepts in the zone; a type AWS refuses there
    /// (no capacity, not offered) is skipped for a few minutes
    /// (`--capacity-refusal-ttl`), then tried again. Instances of a type
    /// that leaves the list are replaced; reordering replaces nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 10), inner(length(max = 64), regex(pattern = patterns::INSTANCE_TYPE)))]
    #[x_kube(validation = Rule::new("self.all(t, self.exists_one(u, u == t))").message("instanceTypes must not repeat a type"))]
    pub instance_types: Vec<String>,
    /// `onDemand` (default), `spot`, or `spotThenOnDemand`: spot where AWS
    /// accepts a spot offering, on-demand only where it accepts none (the
    /// group goes back to spot through a later replacement, never by
    /// churning running instances).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_type: Option<CapacityType>,
    /// How long an instance's EC2 status checks may be `impaired` before it
    /// is terminated and replaced (default `5m`; e.g. `90s`, `10m`). At most
    /// `rollout.maxUnavailable` (or 1) of a group's instances are replaced
    /// so at a time; an Event names each. Stopped and terminated instances
    /// (a spot interruption) are replaced at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 20), regex(pattern = patterns::DURATION))]
    pub health_check_grace_period: Option<String>,
    /// Number of instances, 0 to 500. Editing it scales the group.
    #[schemars(range(min = 0, max = 500))]
    pub count: i32,
    /// AMI; default the newest Amazon Linux 2023 image for the type's architecture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = patterns::AMI_ID))]
    pub image_id: Option<String>,
    /// Spot instead of on-demand instances: the older spelling of
    /// `capacityType: spot`.
    #[serde(default)]
    pub spot: bool,
    /// Which subnets to place the instances in: `private` (default) or `public`.
    #[serde(default)]
    pub subnets: SubnetKind,
    /// User data of the instances (a cloud-init document or a script): the
    /// key of a Secret in the cluster's namespace, at most 16 KB. Its content
    /// never appears in logs, Events or status; a change to it (the Secret
    /// is watched) replaces the group's instances. A missing Secret or key
    /// stalls the cluster and nothing is launched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data_secret_ref: Option<UserDataSecretRef>,
    /// An existing EC2 key pair for SSH access: used, never modified. One
    /// that does not exist in the region stalls the cluster
    /// (`KeyPairNotFound`) before any instance is launched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255), regex(pattern = patterns::KEY_PAIR_NAME))]
    pub ssh_key_name: Option<String>,
    /// An SSH public key (`ssh-ed25519 AAAA...`, RSA or ECDSA): imported as a
    /// key pair of the cluster's, tagged and deleted with it. One that does
    /// not decode as a key stalls the cluster (`InvalidSpec`). Changing it imports a new
    /// one and replaces the group's instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16384), regex(pattern = patterns::SSH_PUBLIC_KEY))]
    pub ssh_public_key: Option<String>,
    /// The instance metadata service. Default hardened: session tokens
    /// required (IMDSv2 only), hop limit 1. Changing it replaces the
    /// group's instances (new ones first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_options: Option<MetadataOptions>,
    /// The root volume (default: the image's size, gp3, encrypted with the
    /// account's EBS key). Changing it replaces the group's instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_volume: Option<RootVolume>,
    /// How a launch change replaces the group's instances: at most
    /// `maxSurge` (default 1) above the count while it rolls, at most
    /// `maxUnavailable` (default 0) running instances short of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
    /// What AWS's interruption notices, heard through the installation's
    /// queue in the account and region (made while a cluster there has a
    /// spot group), do to the group. Spot and Capacity Reservation
    /// warnings, scheduled maintenance, and instances stopped or ended out
    /// of band are always acted on: a replacement first, within the
    /// rollout bounds, the instance ended by its deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interruption: Option<Interruption>,
    /// Security groups attached beside the cluster's own: existing groups in
    /// the cluster's VPC, used and never modified. Changing the list
    /// replaces the group's instances.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4), inner(length(max = 32), regex(pattern = patterns::SECURITY_GROUP_ID)))]
    #[x_kube(validation = Rule::new("self.all(g, self.exists_one(h, h == g))").message("additionalSecurityGroupIds must not repeat a group"))]
    pub additional_security_group_ids: Vec<String>,
}

/// A key of a Secret in the cluster's namespace.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
pub struct UserDataSecretRef {
    #[schemars(length(min = 1, max = 253), regex(pattern = patterns::DNS_SUBDOMAIN))]
    pub name: String,
    #[schemars(length(min = 1, max = 253), regex(pattern = patterns::SECRET_KEY))]
    pub key: String,
}

/// What the group does with AWS's interruption notices.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Interruption {
    /// A rebalance recommendation (a spot instance at higher risk of
    /// interruption): `ignore` (default), or `replace` it as a warning is,
    /// with no deadline: a replacement first, then the instance ended.
    #[serde(default)]
    pub rebalance: Rebalance,
}

/// What a rebalance recommendation does.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Rebalance {
    #[default]
    Ignore,
    Replace,
}

/// Bounds of a rolling replacement.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.maxSurge) ? self.maxSurge : 1) > 0 || (has(self.maxUnavailable) && self.maxUnavailable > 0)").message("rollout needs maxSurge or maxUnavailable above 0"))]
pub struct Rollout {
    /// Instances above the count while it rolls (0 to 100, default 1).
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 100))]
    pub max_surge: i32,
    /// Running instances short of the count while it rolls (0 to 100, default 0).
    #[serde(default)]
    #[schemars(range(min = 0, max = 100))]
    pub max_unavailable: i32,
}

impl Default for Rollout {
    fn default() -> Self {
        Rollout {
            max_surge: 1,
            max_unavailable: 0,
        }
    }
}

/// Instance metadata service options.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MetadataOptions {
    /// `required` (default): only IMDSv2 session requests are answered;
    /// `optional`: IMDSv1 too.
    #[serde(default)]
    pub http_tokens: HttpTokens,
    /// How many network hops a metadata response may travel, 1 (default) to
    /// 64; 2 lets containers on a bridge network reach it.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 64))]
    pub http_put_response_hop_limit: i32,
}

fn one() -> i32 {
    1
}

impl Default for MetadataOptions {
    fn default() -> Self {
        MetadataOptions {
            http_tokens: HttpTokens::Required,
            http_put_response_hop_limit: 1,
        }
    }
}

/// Whether the metadata service requires session tokens.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum HttpTokens {
    #[default]
    Required,
    Optional,
}

/// The root EBS volume of each instance.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.throughput) || !has(self.type) || self.type == 'gp3'").message("rootVolume.throughput is for gp3 volumes only"))]
#[x_kube(validation = Rule::new("!has(self.iops) || !has(self.type) || self.type != 'gp2'").message("rootVolume.iops cannot be set for gp2 volumes"))]
#[x_kube(validation = Rule::new("!has(self.type) || (self.type != 'io1' && self.type != 'io2') || has(self.iops)").message("rootVolume.iops is required for io1 and io2 volumes"))]
#[x_kube(validation = Rule::new("!has(self.kmsKeyId) || !has(self.encrypted) || self.encrypted").message("rootVolume.kmsKeyId needs encrypted: true"))]
pub struct RootVolume {
    /// Size in GiB, 1 to 16384 (at least the image's size); default the image's.
    #[serde(default, rename = "sizeGiB", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 16384))]
    pub size_gib: Option<i32>,
    /// Volume type: `gp3` (default), `gp2`, `io1` or `io2`.
    #[serde(default, rename = "type")]
    pub volume_type: VolumeType,
    /// Provisioned IOPS: gp3 3000 to 16000, io1/io2 (required) 100 to 256000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100, max = 256000))]
    pub iops: Option<i32>,
    /// Throughput in MiB/s, gp3 only: 125 to 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 125, max = 1000))]
    pub throughput: Option<i32>,
    /// Encrypted at rest (default true).
    #[serde(default = "yes")]
    pub encrypted: bool,
    /// KMS key that encrypts it (ID, alias or ARN); default the account's
    /// EBS key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256), regex(pattern = patterns::KMS_KEY))]
    pub kms_key_id: Option<String>,
}

fn yes() -> bool {
    true
}

/// EBS volume types a root volume may have.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum VolumeType {
    #[default]
    Gp3,
    Gp2,
    Io1,
    Io2,
}

impl VolumeType {
    pub fn as_str(self) -> &'static str {
        match self {
            VolumeType::Gp3 => "gp3",
            VolumeType::Gp2 => "gp2",
            VolumeType::Io1 => "io1",
            VolumeType::Io2 => "io2",
        }
    }
}

/// How a group's instances are bought.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub enum CapacityType {
    OnDemand,
    Spot,
    SpotThenOnDemand,
}

impl NodeGroupSpec {
    /// The instance types in order of preference (`instanceType` alone, or
    /// `instanceTypes`).
    pub fn types(&self) -> Vec<&str> {
        match self.instance_types.is_empty() {
            true => vec![self.instance_type.as_str()],
            false => self.instance_types.iter().map(String::as_str).collect(),
        }
    }

    /// A group named `workers` of `count` instances of `instance_type`,
    /// all else default: the unit tests' group.
    #[cfg(test)]
    pub fn workers(count: i32, instance_type: &str) -> Self {
        NodeGroupSpec {
            name: "workers".into(),
            instance_type: instance_type.into(),
            count,
            ..Default::default()
        }
    }

    /// The first instance type: the one the default image is resolved for.
    pub fn first_type(&self) -> &str {
        self.instance_types
            .first()
            .map(String::as_str)
            .unwrap_or(&self.instance_type)
    }

    /// The capacity types to try, in order: spot offerings before any
    /// on-demand one for `spotThenOnDemand`.
    pub fn markets(&self) -> Vec<Market> {
        match (self.capacity_type, self.spot) {
            (Some(CapacityType::Spot), _) | (None, true) => vec![Market::Spot],
            (Some(CapacityType::SpotThenOnDemand), _) => vec![Market::Spot, Market::OnDemand],
            (Some(CapacityType::OnDemand), _) | (None, false) => vec![Market::OnDemand],
        }
    }
}

/// Where an instance was bought.
#[derive(
    JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
#[serde(rename_all = "camelCase")]
pub enum Market {
    OnDemand,
    Spot,
}

impl Market {
    pub fn as_str(self) -> &'static str {
        match self {
            Market::OnDemand => "onDemand",
            Market::Spot => "spot",
        }
    }
}

/// Public or private subnets.
#[derive(
    JsonSchema,
    Deserialize,
    Serialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Default,
    Hash,
    PartialOrd,
    Ord,
)]
#[serde(rename_all = "lowercase")]
pub enum SubnetKind {
    #[default]
    Private,
    Public,
}

/// What happens to AWS resources when the ComputeCluster is deleted.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeletionPolicy {
    /// Remove everything the operator created.
    #[default]
    Delete,
    /// Leave the AWS resources; only the finalizer is removed.
    Retain,
}

/// Observed state of a ComputeCluster.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ComputeClusterStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The AWS account the cluster's resources live in. Recorded before the
    /// first call to AWS; while it is absent nothing was created, and
    /// deletion needs no AWS access. Deletion and later passes refuse a
    /// CloudAccount that resolves to another account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_account_id: Option<String>,
    /// The CloudAccount the cluster reached AWS through, recorded before its
    /// first call with it. Consent is bound to this account alone: a
    /// deleting cluster may still use it after it stopped allowing the
    /// namespace, and it is kept in use (`byoc.dev/in-use`) for this
    /// cluster; pointing `cloudAccountRef` at an account that does not
    /// allow the namespace is refused whatever AWS account it reaches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_account: Option<CloudAccountRecord>,
    /// The public ID of the operator installation whose resources these
    /// are (their `byoc.dev/installation` tag). Another installation's
    /// operator refuses the cluster (`OtherInstallation`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installation: Option<String>,
    /// `pending`, `provisioning`, `running`, `deleting` or `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ClusterPhase>,
    /// IDs of the network resources, as learned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkStatus>,
    /// The nodes' IAM role and instance profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iam: Option<IamStatus>,
    /// The cluster's storage, key, log group and DNS zone, as learned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageStatus>,
    /// Per node group: desired and running instances.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub node_groups: Vec<NodeGroupStatus>,
    /// The value of the `byoc.dev/refresh-images` annotation last acted on:
    /// a new value re-resolves the default image of every group that names
    /// no `imageId`, and those that get a newer one roll to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_refresh: Option<String>,
    /// While AWS refuses to delete the cluster's network because of things
    /// that are not the cluster's (a load balancer's interface or security
    /// group left by a workload, a foreign instance): each of them. The
    /// operator never deletes them; once they are gone, deletion goes on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deletion_blockers: Vec<DeletionBlocker>,
    /// `running/desired` instances over all groups, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<String>,
    /// What the cluster's resources cost, estimated at list price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<ClusterCost>,
    /// `Ready`, `Reconciling`, `Stalled` and one per part; `Paused` under
    /// the pause annotation; `ConsentWithdrawn` when the CloudAccount of
    /// another namespace it reached AWS through no longer allows its
    /// namespace (reason `NamespaceNotAllowed` while the grace period runs,
    /// `ResourcesReleased` once the operator deleted its resources there).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// The cluster's log group.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LoggingSpec {
    /// How many days CloudWatch Logs keeps the cluster's log events: one of
    /// the values AWS accepts (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180,
    /// 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653).
    /// Default 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self in [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653]").message("logging.retentionDays must be one of the values CloudWatch Logs accepts: 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288 or 3653"))]
    pub retention_days: Option<i32>,
}

impl LoggingSpec {
    pub const DEFAULT_RETENTION_DAYS: i32 = 30;

    pub fn retention_days(&self) -> i32 {
        self.retention_days.unwrap_or(Self::DEFAULT_RETENTION_DAYS)
    }
}

/// The cluster's storage.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.encryption) && has(self.encryption.kmsKeyArn)) == (has(oldSelf.encryption) && has(oldSelf.encryption.kmsKeyArn))").message("storage.encryption.kmsKeyArn cannot be added or removed: what the cluster's key encrypts is not moved to another key"))]
pub struct StorageSpec {
    /// The key the cluster's storage is encrypted with. Absent, or without
    /// `kmsKeyArn`: a key of the cluster's own, `alias/byoc-<installation>-<uid>`,
    /// made with the cluster's tags and yearly rotation, its use left to the
    /// account's IAM policies (the default key policy), shown in
    /// `status.storage.kmsKeyArn`. On deletion it is scheduled for
    /// deletion after `deletionWindowDays`, never deleted at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionSpec>,
}

/// The cluster's key.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.kmsKeyArn) || !has(self.deletionWindowDays)").message("storage.encryption.deletionWindowDays is for the cluster's own key: a brought key (kmsKeyArn) is never deleted"))]
pub struct EncryptionSpec {
    /// A key brought by the team, by ARN: used, never changed or deleted.
    /// The CloudAccount must list it (`kmsKeyArns`). Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), regex(pattern = patterns::KMS_KEY_ARN))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("storage.encryption.kmsKeyArn is immutable"))]
    pub kms_key_arn: Option<String>,
    /// Days KMS waits, once the cluster's own key is scheduled for deletion
    /// (the cluster deleted, or `storage` removed), before deleting it: 7
    /// to 30, default 30. Until then an admin may cancel the deletion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 7, max = 30))]
    pub deletion_window_days: Option<i32>,
}

impl EncryptionSpec {
    pub const DEFAULT_DELETION_WINDOW_DAYS: i32 = 30;
}

/// The cluster's storage, keys, logs and names, as learned.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StorageStatus {
    /// The cluster's CloudWatch Logs log group (`spec.logging`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_group: Option<String>,
    /// The ARN of the cluster's KMS key (`spec.storage.encryption`): its
    /// own, or the one it brought.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_arn: Option<String>,
}

/// An estimate of what a cluster's resources cost, in USD at AWS's list
/// prices for its region: instances (on demand, or the spot price of their
/// zone), NAT gateways, public IPv4 addresses, interface endpoints and the
/// instances' root volumes. No discounts, savings plans, data processed or
/// transferred.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterCost {
    /// USD per hour, all parts.
    pub per_hour: String,
    /// USD per month (730 hours).
    pub per_month: String,
    /// Where the prices come from: `list price` (the AWS Price List API and
    /// EC2's spot price history), or which parts were priced from the
    /// operator's built-in table of us-east-1 prices, or not at all.
    pub basis: String,
    /// USD per hour of each part.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<CostPart>,
}

/// One part of a cluster's cost.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CostPart {
    /// `instances/<group>`, `volumes/<group>`, `nat-gateways`,
    /// `public-ipv4`, `interface-endpoints`.
    pub part: String,
    /// USD per hour.
    pub per_hour: String,
}

/// A CloudAccount, exactly: its UID tells a re-created account of the same
/// name apart.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CloudAccountRecord {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl CloudAccountRecord {
    /// Whether `account` is the one recorded.
    pub fn is(&self, account: &super::CloudAccount) -> bool {
        use kube::ResourceExt;
        account.namespace().as_deref() == Some(self.namespace.as_str())
            && account.name_any() == self.name
            && account.uid().as_deref() == Some(self.uid.as_str())
    }
}

/// Something that is not the cluster's and keeps AWS from deleting it.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DeletionBlocker {
    /// `network-interface`, `security-group` or `instance`.
    pub kind: String,
    /// Its AWS ID.
    pub id: String,
    /// Its description, name, or type and state.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// Lifecycle of a ComputeCluster.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ClusterPhase {
    Pending,
    Provisioning,
    Running,
    Deleting,
    Failed,
}

/// Network resource IDs.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpc_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnets: Vec<SubnetStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internet_gateway_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nat_gateway_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route_table_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_group_id: Option<String>,
    /// The VPC endpoints (`network.endpoints`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoint_ids: Vec<String>,
    /// The peering connections (`network.peering`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peering_connection_ids: Vec<String>,
}

/// One subnet in use.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SubnetStatus {
    pub id: String,
    pub zone: String,
    pub public: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
}

/// The nodes' IAM identity.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct IamStatus {
    /// The nodes' role (with a brought instance profile: the role in it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_profile_arn: Option<String>,
    /// Managed policies attached to the operator's role.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub managed_policy_arns: Vec<String>,
}

/// One node group's instances.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NodeGroupStatus {
    pub name: String,
    pub desired: i32,
    pub running: i32,
    /// Running instances on the group's current launch configuration.
    #[serde(default)]
    pub updated: i32,
    /// The image the group launches: its `imageId`, or the default image
    /// resolved once and pinned here (scale-ups and replacements use it,
    /// across operator restarts, until a refresh is asked for with the
    /// `byoc.dev/refresh-images` annotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// The instance type the image is pinned for: another type (maybe
    /// another architecture) resolves the default image again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    /// Where each live instance landed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<InstanceStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instance_ids: Vec<String>,
}

/// One instance of a node group.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    pub id: String,
    #[serde(rename = "type")]
    pub instance_type: String,
    pub zone: String,
    pub capacity_type: Market,
}

impl ComputeCluster {
    /// `(namespace, name)` of the CloudAccount it refers to: the
    /// reference's namespace, else the cluster's own.
    pub fn account_key(&self) -> (String, String) {
        let r = &self.spec.cloud_account_ref;
        let namespace = r
            .namespace
            .clone()
            .or_else(|| self.metadata.namespace.clone())
            .unwrap_or_default();
        (namespace, r.name.clone())
    }

    /// The CloudAccount it reached AWS through, when recorded.
    pub fn recorded_account(&self) -> Option<&CloudAccountRecord> {
        self.status.as_ref()?.cloud_account.as_ref()
    }

    /// Whether it has made AWS calls (its resources need its account).
    pub fn reached_aws(&self) -> bool {
        self.status
            .as_ref()
            .is_some_and(|s| s.aws_account_id.is_some())
    }
}
