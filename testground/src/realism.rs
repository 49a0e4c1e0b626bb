//! AWS's behaviour that moto lacks, as a profile the proxy applies: how
//! long resources take to change state, IAM propagation, eventual
//! consistency, dependencies that drain, and request rate limits. Each part
//! is switchable; every duration is AWS's multiplied by `scale` (rate
//! limits refill `1 / scale` times as fast), so 0.05 keeps a test quick and
//! 1.0 is AWS's own pace.
//!
//! Where the numbers come from (AWS bounds none of the durations; the
//! ranges are what AWS typically takes):
//! - states: a NAT gateway is `pending` for one to two minutes and
//!   `deleting` for about one (EC2 User Guide, "NAT gateways"; Cluster API
//!   Provider AWS waits on it); an instance is `pending` 10–30 s and
//!   `shutting-down` 30–60 s before `terminated` (EC2 User Guide,
//!   "Instance state changes"); an interface VPC endpoint is `pending` for
//!   one to two minutes and `deleting` for about one, a gateway endpoint
//!   is available at once (PrivateLink Guide, "Interface VPC endpoints":
//!   Cluster API Provider AWS and eksctl wait on it); an accepted peering
//!   connection is `provisioning` for a few seconds before `active` (VPC
//!   Peering Guide, "VPC peering connection lifecycle").
//! - IAM propagation: "changes … are not always immediately visible"
//!   (IAM User Guide, "Troubleshoot IAM", eventual consistency); EC2
//!   refuses an instance profile younger than about 10 s with
//!   `InvalidParameterValue` ("Invalid IAM Instance Profile"), which
//!   Karpenter and Cluster API Provider AWS both retry; STS denies a role a
//!   few seconds old.
//! - eventual consistency: for a second or two after a create, describes
//!   may miss the new resource and calls naming it may answer
//!   `Invalid<Kind>ID.NotFound` (EC2 API Reference, "Eventual consistency
//!   in the Amazon EC2 API").
//! - draining: AWS refuses to delete a subnet or security group while an
//!   instance in it is still shutting down, to detach an internet gateway
//!   while the VPC has mapped public addresses, and to release an Elastic
//!   IP a NAT gateway still holds (`InvalidIPAddress.InUse`).
//! - rate limits: EC2's token buckets per account and region (EC2
//!   Developer Guide, "Request throttling for the Amazon EC2 API"):
//!   non-mutating actions 100 tokens refilled at 20/s, mutating 200 at
//!   5/s, RunInstances 50 at 5/s plus its resource bucket of 1000
//!   instances at 2/s, TerminateInstances' resource bucket 1000 at 20/s.
//!   IAM publishes no figures and throttles lower; the profile's IAM
//!   buckets (reads 40 at 10/s, writes 10 at 2/s) are an estimate below
//!   EC2's. Exhausted: `RequestLimitExceeded` (EC2, status 503) or
//!   `Throttling` (IAM, status 400).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

/// Which parts of AWS's behaviour the proxy models, and how fast.
#[derive(Clone, Debug)]
pub struct Realism {
    /// Multiplies every duration (1.0: AWS's).
    pub scale: f64,
    /// NAT gateways and instances pass through `pending`, `deleting` and
    /// `shutting-down`.
    pub states: bool,
    /// New instance profiles and roles are unusable for a while.
    pub iam_propagation: bool,
    /// New resources are missing from describes for a while, and calls
    /// naming them may answer NotFound.
    pub consistency: bool,
    /// Share of calls naming a resource in its consistency window that are
    /// answered NotFound (describes by filter always miss it).
    pub not_found_rate: f64,
    /// Deletions refused while what depends on the resource drains (and
    /// AWS's dependency checks that moto lacks, as `Faults::dependencies`).
    pub draining: bool,
    /// Token buckets per account and region.
    pub rate_limits: bool,
    pub limits: Limits,
    /// No state (`pending`, `provisioning`, `deleting`, `shutting-down`)
    /// lasts less than this, whatever `scale`: a test that must see every
    /// state at a small scale sets it above the operator's poll, so that
    /// seeing a state of a second does not depend on the machine's load.
    pub shortest_state: Duration,
}

impl Realism {
    /// Every part on, at `scale`.
    pub fn aws(scale: f64) -> Self {
        Realism {
            scale,
            states: true,
            iam_propagation: true,
            consistency: true,
            not_found_rate: 0.5,
            draining: true,
            rate_limits: true,
            limits: Limits::default(),
            shortest_state: Duration::ZERO,
        }
    }

    /// How long `range` (AWS's seconds) lasts for resource `id`: each
    /// resource draws its own point of the range, the same every time.
    pub fn lasts(&self, range: (f64, f64), id: &str) -> Duration {
        let (low, high) = range;
        let secs = (low + fraction(id) * (high - low)) * self.scale;
        Duration::from_secs_f64(secs.max(0.0))
    }

    /// How long a state of `range` (AWS's seconds) lasts for resource `id`:
    /// as [`Realism::lasts`], never less than `shortest_state`.
    pub fn state_lasts(&self, range: (f64, f64), id: &str) -> Duration {
        self.lasts(range, id).max(self.shortest_state)
    }
}

/// AWS's durations in seconds: (shortest, longest).
pub const NAT_PENDING: (f64, f64) = (60.0, 120.0);
pub const NAT_DELETING: (f64, f64) = (30.0, 60.0);
pub const INSTANCE_PENDING: (f64, f64) = (10.0, 30.0);
pub const INSTANCE_SHUTTING_DOWN: (f64, f64) = (30.0, 60.0);
pub const PROFILE_PROPAGATION: (f64, f64) = (8.0, 12.0);
pub const ROLE_PROPAGATION: (f64, f64) = (3.0, 6.0);
pub const CONSISTENCY: (f64, f64) = (1.0, 2.0);
pub const ENDPOINT_PENDING: (f64, f64) = (60.0, 120.0);
pub const ENDPOINT_DELETING: (f64, f64) = (30.0, 60.0);
pub const PEERING_PROVISIONING: (f64, f64) = (2.0, 10.0);

/// A token bucket's shape: how many it holds, how many come back a second.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Shape {
    pub capacity: f64,
    pub refill: f64,
}

/// The buckets of one account (per region for EC2).
#[derive(Clone, Debug)]
pub struct Limits {
    pub ec2_non_mutating: Shape,
    pub ec2_mutating: Shape,
    pub run_instances: Shape,
    pub run_instances_resource: Shape,
    pub terminate_instances_resource: Shape,
    pub iam_read: Shape,
    pub iam_write: Shape,
}

impl Default for Limits {
    fn default() -> Self {
        let shape = |capacity, refill| Shape { capacity, refill };
        Limits {
            ec2_non_mutating: shape(100.0, 20.0),
            ec2_mutating: shape(200.0, 5.0),
            run_instances: shape(50.0, 5.0),
            run_instances_resource: shape(1000.0, 2.0),
            terminate_instances_resource: shape(1000.0, 20.0),
            iam_read: shape(40.0, 10.0),
            iam_write: shape(10.0, 2.0),
        }
    }
}

/// The buckets a call draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BucketKind {
    Ec2NonMutating,
    Ec2Mutating,
    RunInstances,
    RunInstancesResource,
    TerminateInstancesResource,
    IamRead,
    IamWrite,
}

impl Limits {
    /// Every bucket's size and refill rate times `factor`.
    pub fn times(&self, factor: f64) -> Self {
        let t = |s: Shape| Shape {
            capacity: s.capacity * factor,
            refill: s.refill * factor,
        };
        Limits {
            ec2_non_mutating: t(self.ec2_non_mutating),
            ec2_mutating: t(self.ec2_mutating),
            run_instances: t(self.run_instances),
            run_instances_resource: t(self.run_instances_resource),
            terminate_instances_resource: t(self.terminate_instances_resource),
            iam_read: t(self.iam_read),
            iam_write: t(self.iam_write),
        }
    }

    pub fn shape(&self, kind: BucketKind) -> Shape {
        match kind {
            BucketKind::Ec2NonMutating => self.ec2_non_mutating,
            BucketKind::Ec2Mutating => self.ec2_mutating,
            BucketKind::RunInstances => self.run_instances,
            BucketKind::RunInstancesResource => self.run_instances_resource,
            BucketKind::TerminateInstancesResource => self.terminate_instances_resource,
            BucketKind::IamRead => self.iam_read,
            BucketKind::IamWrite => self.iam_write,
        }
    }
}

/// The buckets `op` of `service` draws from, and how many tokens of each.
pub fn buckets(service: &str, op: &str, body: &[u8]) -> Vec<(BucketKind, f64)> {
    let reads = ["Describe", "Get", "List"];
    let read = reads.iter().any(|p| op.starts_with(p));
    match service {
        "ec2" if op == "RunInstances" => {
            let count = param(body, "MaxCount")
                .and_then(|c| c.parse::<f64>().ok())
                .unwrap_or(1.0);
            vec![
                (BucketKind::RunInstances, 1.0),
                (BucketKind::RunInstancesResource, count),
            ]
        }
        "ec2" if op == "TerminateInstances" => {
            let count = form_urlencoded::parse(body)
                .filter(|(k, _)| k.starts_with("InstanceId."))
                .count()
                .max(1) as f64;
            vec![
                (BucketKind::Ec2Mutating, 1.0),
                (BucketKind::TerminateInstancesResource, count),
            ]
        }
        "ec2" if read => vec![(BucketKind::Ec2NonMutating, 1.0)],
        "ec2" => vec![(BucketKind::Ec2Mutating, 1.0)],
        "iam" if read => vec![(BucketKind::IamRead, 1.0)],
        "iam" => vec![(BucketKind::IamWrite, 1.0)],
        _ => vec![],
    }
}

/// A token bucket's level.
#[derive(Clone, Debug)]
pub struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    pub fn full(shape: Shape, now: Instant) -> Self {
        Bucket {
            tokens: shape.capacity,
            at: now,
        }
    }

    /// Refills for the time since the last look (`refill / scale` a second).
    fn refill(&mut self, shape: Shape, scale: f64, now: Instant) {
        let rate = shape.refill / scale.max(1e-9);
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(shape.capacity);
        self.at = now;
    }
}

/// Every bucket of every account, region and kind, as AWS keeps them.
#[derive(Default)]
pub struct RateLimits {
    buckets: HashMap<(String, String, BucketKind), Bucket>,
    /// Tokens each bucket gave to calls it admitted.
    spent: HashMap<(String, String, BucketKind), f64>,
}

impl RateLimits {
    /// Takes what a call needs from each of its buckets, or nothing at all
    /// when one of them lacks it (the call is throttled).
    pub fn admit(
        &mut self,
        r: &Realism,
        account: &str,
        region: &str,
        needs: &[(BucketKind, f64)],
        now: Instant,
    ) -> bool {
        let mut enough = true;
        for (kind, n) in needs {
            let shape = r.limits.shape(*kind);
            let key = (account.to_string(), region.to_string(), *kind);
            let b = self
                .buckets
                .entry(key)
                .or_insert_with(|| Bucket::full(shape, now));
            b.refill(shape, r.scale, now);
            enough &= b.tokens >= *n;
        }
        if enough {
            for (kind, n) in needs {
                let key = (account.to_string(), region.to_string(), *kind);
                if let Some(b) = self.buckets.get_mut(&key) {
                    b.tokens -= n;
                }
                *self.spent.entry(key).or_default() += n;
            }
        }
        enough
    }

    /// The least time the calls admitted so far could have taken with the
    /// buckets full at the start: for each bucket, what was spent beyond its
    /// capacity over its refill rate; the slowest bucket, and which.
    pub fn bound(&self, r: &Realism) -> (Duration, Option<(String, BucketKind)>) {
        let mut worst = (Duration::ZERO, None);
        for ((account, _, kind), spent) in &self.spent {
            let shape = r.limits.shape(*kind);
            let rate = shape.refill / r.scale.max(1e-9);
            let secs = (spent - shape.capacity).max(0.0) / rate;
            let d = Duration::from_secs_f64(secs);
            if d > worst.0 {
                worst = (d, Some((account.clone(), *kind)));
            }
        }
        worst
    }
}

/// A NAT gateway being deleted and what it still holds.
#[derive(Clone, Debug)]
pub struct DeletingNat {
    pub since: Instant,
    pub subnet: String,
    pub vpc: String,
    pub allocations: Vec<String>,
}

/// What the proxy knows of AWS's clock: when each resource was made,
/// terminated or deleted, when IAM objects changed, whose keys are whose.
#[derive(Default)]
pub struct World {
    /// Creation time of every EC2 resource made through the proxy, by ID.
    pub born: HashMap<String, Instant>,
    /// When each instance was terminated.
    pub terminated: HashMap<String, Instant>,
    pub deleting_nats: HashMap<String, DeletingNat>,
    /// Interface VPC endpoints made through the proxy (gateway ones are
    /// available at once).
    pub interface_endpoints: HashSet<String>,
    /// When each VPC endpoint was deleted.
    pub deleted_endpoints: HashMap<String, Instant>,
    /// When each peering connection was accepted.
    pub accepted: HashMap<String, Instant>,
    /// When each instance profile was made or last given a role, by name.
    pub profiles: HashMap<String, Instant>,
    /// When each role was made, by ARN.
    pub roles: HashMap<String, Instant>,
    /// The account of each access key STS handed out.
    pub accounts: HashMap<String, String>,
    pub limits: RateLimits,
    /// Calls answered as throttled.
    pub throttled: u64,
    /// What the profile did, counted by what (an error code it answered,
    /// `hidden` for an item left out of a describe, a state it showed).
    pub events: BTreeMap<String, u64>,
}

impl World {
    pub fn count(&mut self, what: &str, n: u64) {
        if n > 0 {
            *self.events.entry(what.to_string()).or_default() += n;
        }
    }

    /// Whether `id` was made within its consistency window.
    pub fn fresh(&self, r: &Realism, id: &str, now: Instant) -> bool {
        self.born
            .get(id)
            .is_some_and(|t| now.saturating_duration_since(*t) < r.lasts(CONSISTENCY, id))
    }

    /// Instances still shutting down (terminated, not yet `terminated`).
    pub fn shutting_down(&self, r: &Realism, now: Instant) -> HashSet<String> {
        self.terminated
            .iter()
            .filter(|(id, t)| {
                now.saturating_duration_since(**t) < r.state_lasts(INSTANCE_SHUTTING_DOWN, id)
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// NAT gateways still `deleting`.
    pub fn deleting(&self, r: &Realism, now: Instant) -> Vec<(&String, &DeletingNat)> {
        self.deleting_nats
            .iter()
            .filter(|(id, n)| {
                now.saturating_duration_since(n.since) < r.state_lasts(NAT_DELETING, id)
            })
            .collect()
    }

    /// Interface endpoints still `pending`.
    pub fn pending_endpoints(&self, r: &Realism, now: Instant) -> Vec<String> {
        self.young(r, "vpce-", ENDPOINT_PENDING, now)
            .into_iter()
            .filter(|id| self.interface_endpoints.contains(id))
            .collect()
    }

    /// Interface endpoints still `deleting`.
    pub fn deleting_endpoints(&self, r: &Realism, now: Instant) -> Vec<String> {
        within(&self.deleted_endpoints, r, ENDPOINT_DELETING, now)
            .into_iter()
            .filter(|id| self.interface_endpoints.contains(id))
            .collect()
    }

    /// Accepted peering connections still `provisioning`.
    pub fn provisioning(&self, r: &Realism, now: Instant) -> Vec<String> {
        within(&self.accepted, r, PEERING_PROVISIONING, now)
    }

    /// Resources whose IDs start with `prefix` still in their first state
    /// (e.g. `pending`), which lasts `range`.
    pub fn young(&self, r: &Realism, prefix: &str, range: (f64, f64), now: Instant) -> Vec<String> {
        self.born
            .iter()
            .filter(|(id, _)| id.starts_with(prefix))
            .filter(|(id, t)| now.saturating_duration_since(**t) < r.state_lasts(range, id))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Why AWS would refuse this deletion while something drains, if it would.
    pub fn drain_refusal(
        &self,
        r: &Realism,
        op: &str,
        body: &[u8],
        now: Instant,
    ) -> Option<(&'static str, String)> {
        let deleting = self.deleting(r, now);
        let in_vpc = |vpc: &str| deleting.iter().any(|(_, n)| n.vpc == vpc);
        match op {
            "DeleteSubnet" => {
                let id = param(body, "SubnetId")?;
                deleting.iter().any(|(_, n)| n.subnet == id).then(|| {
                    (
                        "DependencyViolation",
                        format!("The subnet '{id}' has dependencies and cannot be deleted."),
                    )
                })
            }
            "DetachInternetGateway" => {
                let vpc = param(body, "VpcId")?;
                in_vpc(&vpc).then(|| {
                    ("DependencyViolation", format!("Network {vpc} has some mapped public address(es). Please unmap those public address(es) before detaching the gateway."))
                })
            }
            "DeleteVpc" => {
                let vpc = param(body, "VpcId")?;
                in_vpc(&vpc).then(|| {
                    (
                        "DependencyViolation",
                        format!("The vpc '{vpc}' has dependencies and cannot be deleted."),
                    )
                })
            }
            "ReleaseAddress" => {
                let id = param(body, "AllocationId")?;
                deleting
                    .iter()
                    .any(|(_, n)| n.allocations.contains(&id))
                    .then(|| ("InvalidIPAddress.InUse", format!("Address {id} is in use.")))
            }
            _ => None,
        }
    }
}

/// The IDs of `since` whose time is less than `range` ago.
fn within(
    since: &HashMap<String, Instant>,
    r: &Realism,
    range: (f64, f64),
    now: Instant,
) -> Vec<String> {
    since
        .iter()
        .filter(|(id, t)| now.saturating_duration_since(**t) < r.state_lasts(range, id))
        .map(|(id, _)| id.clone())
        .collect()
}

/// The IDs a successful create answered, for the creates the profile tracks.
pub fn created_ids(op: &str, response: &str) -> Vec<String> {
    let tag = match op {
        "CreateVpc" => "vpcId",
        "CreateSubnet" => "subnetId",
        "CreateInternetGateway" => "internetGatewayId",
        "CreateRouteTable" => "routeTableId",
        "CreateSecurityGroup" => "groupId",
        "AllocateAddress" => "allocationId",
        "CreateNatGateway" => "natGatewayId",
        "CreateVpcEndpoint" => "vpcEndpointId",
        "CreateVpcPeeringConnection" => "vpcPeeringConnectionId",
        "RunInstances" => "instanceId",
        _ => return vec![],
    };
    let ids = element_values(response, tag);
    if op == "RunInstances" {
        ids
    } else {
        ids.into_iter().take(1).collect()
    }
}

/// AWS's not-found code for an ID, by its prefix.
pub fn not_found_code(id: &str) -> Option<&'static str> {
    let (prefix, _) = id.split_once('-')?;
    Some(match prefix {
        "vpc" => "InvalidVpcID.NotFound",
        "subnet" => "InvalidSubnetID.NotFound",
        "igw" => "InvalidInternetGatewayID.NotFound",
        "rtb" => "InvalidRouteTableID.NotFound",
        "sg" => "InvalidGroup.NotFound",
        "eipalloc" => "InvalidAllocationID.NotFound",
        "nat" => "NatGatewayNotFound",
        "vpce" => "InvalidVpcEndpointId.NotFound",
        "pcx" => "InvalidVpcPeeringConnectionID.NotFound",
        "i" => "InvalidInstanceID.NotFound",
        _ => return None,
    })
}

/// The set and ID element of each item a describe lists.
pub fn described_items(op: &str) -> Option<(&'static str, &'static str)> {
    Some(match op {
        "DescribeVpcs" => ("vpcSet", "vpcId"),
        "DescribeSubnets" => ("subnetSet", "subnetId"),
        "DescribeInternetGateways" => ("internetGatewaySet", "internetGatewayId"),
        "DescribeRouteTables" => ("routeTableSet", "routeTableId"),
        "DescribeSecurityGroups" => ("securityGroupInfo", "groupId"),
        "DescribeAddresses" => ("addressesSet", "allocationId"),
        "DescribeNatGateways" => ("natGatewaySet", "natGatewayId"),
        "DescribeInstances" => ("instancesSet", "instanceId"),
        "DescribeVpcEndpoints" => ("vpcEndpointSet", "vpcEndpointId"),
        "DescribeVpcPeeringConnections" => ("vpcPeeringConnectionSet", "vpcPeeringConnectionId"),
        _ => return None,
    })
}

/// `body` without the items of every `<set>` whose own ID (the first
/// `<id_tag>` in the item) `hide` says to leave out.
pub fn without_items(body: &str, set: &str, id_tag: &str, hide: impl Fn(&str) -> bool) -> String {
    let (open, close) = (format!("<{set}>"), format!("</{set}>"));
    let mut out = String::with_capacity(body.len());
    let mut rest = body;
    while let Some(start) = rest.find(&open) {
        let inner_start = start + open.len();
        let Some(len) = rest[inner_start..].find(&close) else {
            break;
        };
        out.push_str(&rest[..inner_start]);
        let inner = &rest[inner_start..inner_start + len];
        for item in top_level_items(inner) {
            let own = first_element(item, id_tag);
            if !own.as_deref().is_some_and(&hide) {
                out.push_str(item);
            }
        }
        rest = &rest[inner_start + len..];
    }
    out.push_str(rest);
    out
}

/// The `<item>…</item>` children of a set's inner text, nested items kept
/// inside their parent.
fn top_level_items(inner: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut depth, mut start, mut at) = (0usize, None, 0usize);
    while at < inner.len() {
        let rest = &inner[at..];
        if rest.starts_with("<item>") {
            if depth == 0 {
                start = Some(at);
            }
            depth += 1;
            at += "<item>".len();
        } else if rest.starts_with("</item>") {
            depth = depth.saturating_sub(1);
            at += "</item>".len();
            if depth == 0 {
                if let Some(s) = start.take() {
                    items.push(&inner[s..at]);
                }
            }
        } else {
            at += rest.chars().next().map_or(1, char::len_utf8);
        }
    }
    items
}

/// The first value among `body`'s parameters that `hit` accepts.
pub fn first_param_value(body: &[u8], hit: impl Fn(&str) -> bool) -> Option<String> {
    form_urlencoded::parse(body)
        .map(|(_, v)| v.into_owned())
        .find(|v| hit(v))
}

/// The account an STS answer's credentials act as: (access key, account).
pub fn assumed_account(response: &str) -> Option<(String, String)> {
    let key = first_element(response, "AccessKeyId")?;
    let arn = first_element(response, "Arn")?;
    let account = arn.split(':').nth(4)?.to_string();
    Some((key, account))
}

/// The access key and region of a signed request's credential scope
/// (`Credential=KEY/DATE/REGION/SERVICE/aws4_request`).
pub fn credential_scope(head: &str) -> Option<(String, String)> {
    let auth = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("authorization:"))?;
    let scope = auth.split("Credential=").nth(1)?;
    let scope = scope.split([',', ' ']).next()?;
    let mut parts = scope.split('/');
    let key = parts.next()?.to_string();
    let region = parts.nth(1)?.to_string();
    Some((key, region))
}

/// A form parameter of a query-protocol request body, decoded.
pub fn param(body: &[u8], name: &str) -> Option<String> {
    form_urlencoded::parse(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The text of every `<tag>…</tag>` element.
pub fn element_values(text: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    text.split(&open)
        .skip(1)
        .filter_map(|rest| rest.split_once(&close).map(|(v, _)| v.trim().to_string()))
        .collect()
}

/// The value of the first `<tag>` element in `text`.
pub fn first_element(text: &str, tag: &str) -> Option<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let rest = text.split_once(&open)?.1;
    rest.split_once(&close).map(|(v, _)| v.trim().to_string())
}

/// A stable point in [0, 1) for `key` (FNV-1a, then splitmix64).
pub fn fraction(key: &str) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    unit_random(h)
}

/// A deterministic pseudo-random number in [0, 1) for `n` (splitmix64).
pub fn unit_random(n: u64) -> f64 {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn realism() -> Realism {
        Realism::aws(1.0)
    }

    #[test]
    fn durations_stay_in_range_and_are_stable_per_resource() {
        let r = Realism::aws(0.5);
        for id in ["nat-1", "nat-2", "i-abc", "vpc-9"] {
            let d = r.lasts(NAT_PENDING, id);
            assert!(
                d >= Duration::from_secs(30) && d <= Duration::from_secs(60),
                "{d:?}"
            );
            assert_eq!(d, r.lasts(NAT_PENDING, id));
        }
        assert_ne!(r.lasts(NAT_PENDING, "nat-1"), r.lasts(NAT_PENDING, "nat-2"));
    }

    #[test]
    fn buckets_follow_ec2s_categories() {
        let run = b"Action=RunInstances&MaxCount=3&MinCount=3";
        assert_eq!(
            buckets("ec2", "RunInstances", run),
            vec![
                (BucketKind::RunInstances, 1.0),
                (BucketKind::RunInstancesResource, 3.0)
            ]
        );
        let term = b"Action=TerminateInstances&InstanceId.1=i-1&InstanceId.2=i-2";
        assert_eq!(
            buckets("ec2", "TerminateInstances", term)[1],
            (BucketKind::TerminateInstancesResource, 2.0)
        );
        assert_eq!(
            buckets("ec2", "DescribeVpcs", b""),
            vec![(BucketKind::Ec2NonMutating, 1.0)]
        );
        assert_eq!(
            buckets("ec2", "CreateVpc", b""),
            vec![(BucketKind::Ec2Mutating, 1.0)]
        );
        assert_eq!(
            buckets("iam", "GetRole", b""),
            vec![(BucketKind::IamRead, 1.0)]
        );
        assert_eq!(
            buckets("iam", "CreateRole", b""),
            vec![(BucketKind::IamWrite, 1.0)]
        );
        assert!(buckets("sts", "AssumeRole", b"").is_empty());
    }

    #[test]
    fn a_bucket_admits_its_capacity_then_its_refill_rate() {
        let r = realism();
        let mut limits = RateLimits::default();
        let t0 = Instant::now();
        let needs = [(BucketKind::Ec2Mutating, 1.0)];
        let admitted = (0..250)
            .filter(|_| limits.admit(&r, "111", "us-east-1", &needs, t0))
            .count();
        assert_eq!(admitted, 200);
        // Two seconds refill 10 tokens at 5/s.
        let t2 = t0 + Duration::from_secs(2);
        let later = (0..20)
            .filter(|_| limits.admit(&r, "111", "us-east-1", &needs, t2))
            .count();
        assert_eq!(later, 10);
        // Another account and another region have their own buckets.
        assert!(limits.admit(&r, "222", "us-east-1", &needs, t2));
        assert!(limits.admit(&r, "111", "eu-west-1", &needs, t2));
    }

    #[test]
    fn the_bound_is_the_slowest_buckets_spending_past_its_capacity() {
        let r = realism();
        let mut limits = RateLimits::default();
        let t0 = Instant::now();
        let write = [(BucketKind::IamWrite, 1.0)];
        let mutate = [(BucketKind::Ec2Mutating, 1.0)];
        // 30 IAM writes: 10 from the bucket, 20 at 2/s = 10 s; 210 EC2
        // mutations: 200 from the bucket, 10 at 5/s = 2 s.
        for i in 0..30 {
            assert!(limits.admit(&r, "1", "global", &write, t0 + Duration::from_secs(i)));
        }
        for i in 0..210 {
            assert!(limits.admit(&r, "1", "r", &mutate, t0 + Duration::from_secs(i)));
        }
        // A refused call spends nothing.
        let lots = [(BucketKind::IamWrite, 1000.0)];
        assert!(!limits.admit(&r, "1", "global", &lots, t0 + Duration::from_secs(30)));
        let (bound, which) = limits.bound(&r);
        assert_eq!(bound, Duration::from_secs(10));
        assert_eq!(which, Some(("1".to_string(), BucketKind::IamWrite)));
    }

    #[test]
    fn a_call_short_of_one_bucket_takes_from_none() {
        let r = realism();
        let mut limits = RateLimits::default();
        let now = Instant::now();
        let big = [
            (BucketKind::RunInstances, 1.0),
            (BucketKind::RunInstancesResource, 1001.0),
        ];
        assert!(!limits.admit(&r, "1", "r", &big, now));
        // The request bucket kept its token: 50 single launches pass.
        let one = [
            (BucketKind::RunInstances, 1.0),
            (BucketKind::RunInstancesResource, 1.0),
        ];
        let admitted = (0..60)
            .filter(|_| limits.admit(&r, "1", "r", &one, now))
            .count();
        assert_eq!(admitted, 50);
    }

    #[test]
    fn scale_speeds_up_the_refill() {
        let r = Realism::aws(0.1);
        let mut limits = RateLimits::default();
        let t0 = Instant::now();
        let needs = [(BucketKind::IamWrite, 1.0)];
        while limits.admit(&r, "1", "", &needs, t0) {}
        // 1 s at scale 0.1 is 10 s of AWS's: 20 tokens at 2/s.
        let t1 = t0 + Duration::from_secs(1);
        let admitted = (0..30)
            .filter(|_| limits.admit(&r, "1", "", &needs, t1))
            .count();
        assert_eq!(admitted, 10, "capped by the bucket's capacity");
    }

    #[test]
    fn fresh_items_leave_describes_and_nested_items_stay() {
        let body = "<DescribeSubnetsResponse><subnetSet><item><subnetId>subnet-1</subnetId><tagSet><item><key>a</key></item></tagSet></item><item><subnetId>subnet-2</subnetId><tagSet><item><key>b</key></item></tagSet></item></subnetSet></DescribeSubnetsResponse>";
        let out = without_items(body, "subnetSet", "subnetId", |id| id == "subnet-1");
        assert_eq!(element_values(&out, "subnetId"), vec!["subnet-2"]);
        assert!(out.contains("<key>b</key>") && !out.contains("<key>a</key>"));
        assert!(out.ends_with("</subnetSet></DescribeSubnetsResponse>"));
        // Every instancesSet (one per reservation) is filtered.
        let body = "<reservationSet><item><instancesSet><item><instanceId>i-1</instanceId></item></instancesSet></item><item><instancesSet><item><instanceId>i-2</instanceId></item></instancesSet></item></reservationSet>";
        let out = without_items(body, "instancesSet", "instanceId", |id| id == "i-2");
        assert_eq!(element_values(&out, "instanceId"), vec!["i-1"]);
    }

    #[test]
    fn creates_and_their_ids() {
        let resp = "<CreateVpcResponse><vpc><vpcId>vpc-1</vpcId><cidrBlockAssociationSet><item><vpcId>vpc-1</vpcId></item></cidrBlockAssociationSet></vpc></CreateVpcResponse>";
        assert_eq!(created_ids("CreateVpc", resp), vec!["vpc-1"]);
        let run = "<instancesSet><item><instanceId>i-1</instanceId></item><item><instanceId>i-2</instanceId></item></instancesSet>";
        assert_eq!(created_ids("RunInstances", run), vec!["i-1", "i-2"]);
        assert!(created_ids("DescribeVpcs", resp).is_empty());
        assert_eq!(
            not_found_code("subnet-0a"),
            Some("InvalidSubnetID.NotFound")
        );
        assert_eq!(not_found_code("i-0a"), Some("InvalidInstanceID.NotFound"));
        assert_eq!(not_found_code("ami-0a"), None);
    }

    #[test]
    fn freshness_ends_with_the_window() {
        let r = realism();
        let mut w = World::default();
        let t0 = Instant::now();
        w.born.insert("vpc-1".into(), t0);
        assert!(w.fresh(&r, "vpc-1", t0 + Duration::from_millis(900)));
        assert!(!w.fresh(&r, "vpc-1", t0 + Duration::from_secs(2)));
        assert!(!w.fresh(&r, "vpc-2", t0));
    }

    #[test]
    fn a_deleting_nat_gateway_holds_its_subnet_address_and_vpc() {
        let r = realism();
        let mut w = World::default();
        let t0 = Instant::now();
        w.deleting_nats.insert(
            "nat-1".into(),
            DeletingNat {
                since: t0,
                subnet: "subnet-1".into(),
                vpc: "vpc-1".into(),
                allocations: vec!["eipalloc-1".into()],
            },
        );
        let soon = t0 + Duration::from_secs(5);
        let code = |op: &str, body: &[u8], at| w.drain_refusal(&r, op, body, at).map(|(c, _)| c);
        assert_eq!(
            code("DeleteSubnet", b"SubnetId=subnet-1", soon),
            Some("DependencyViolation")
        );
        assert_eq!(code("DeleteSubnet", b"SubnetId=subnet-2", soon), None);
        assert_eq!(
            code("ReleaseAddress", b"AllocationId=eipalloc-1", soon),
            Some("InvalidIPAddress.InUse")
        );
        assert_eq!(
            code(
                "DetachInternetGateway",
                b"InternetGatewayId=igw-1&VpcId=vpc-1",
                soon
            ),
            Some("DependencyViolation")
        );
        assert_eq!(
            code("DeleteVpc", b"VpcId=vpc-1", soon),
            Some("DependencyViolation")
        );
        // Deleted for good after at most a minute.
        let later = t0 + Duration::from_secs(61);
        assert_eq!(code("DeleteSubnet", b"SubnetId=subnet-1", later), None);
        assert_eq!(
            code("ReleaseAddress", b"AllocationId=eipalloc-1", later),
            None
        );
    }

    #[test]
    fn shutting_down_lasts_its_range() {
        let r = realism();
        let mut w = World::default();
        let t0 = Instant::now();
        w.terminated.insert("i-1".into(), t0);
        assert!(w
            .shutting_down(&r, t0 + Duration::from_secs(29))
            .contains("i-1"));
        assert!(w.shutting_down(&r, t0 + Duration::from_secs(61)).is_empty());
    }

    #[test]
    fn keys_accounts_and_regions_are_read_from_the_wire() {
        let sts = "<AssumeRoleResult><Credentials><AccessKeyId>ASIAX</AccessKeyId></Credentials><AssumedRoleUser><Arn>arn:aws:sts::210987654321:assumed-role/r/s</Arn></AssumedRoleUser></AssumeRoleResult>";
        assert_eq!(
            assumed_account(sts),
            Some(("ASIAX".into(), "210987654321".into()))
        );
        let head = "POST / HTTP/1.1\r\nAuthorization: AWS4-HMAC-SHA256 Credential=AKID/20261124/eu-west-1/ec2/aws4_request, SignedHeaders=host, Signature=x\r\n";
        assert_eq!(
            credential_scope(head),
            Some(("AKID".into(), "eu-west-1".into()))
        );
    }
}
