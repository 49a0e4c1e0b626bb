//! IAM as AWS evaluates it, for the proxy. moto checks a policy's actions
//! and `sts:ExternalId` but passes every other condition as met, and judges
//! an EC2 call as one call on `*`. AWS authorizes a request once per
//! resource it touches, each with the condition keys of that resource:
//! `CreateSubnet` is authorized on the new subnet (with the request's tags)
//! *and* on the VPC (with the VPC's own tags).
//!
//! For each request signed by a principal whose policies the ground was
//! given ([`crate::AwsProxy::grant`]), this module says which resources the
//! request touches ([`plan`]), fills their context from the request and from
//! what moto holds of them (tags, VPC, an image's owner, a role's boundary:
//! `testground/moto_server.py`'s facts), and has the evaluator
//! (`testground/iam/evaluate.mjs`) decide: it keeps of each context only the
//! keys AWS's Service Authorization Reference lists for that action and
//! resource type (iam-data), refuses a request whose required resource
//! types were not all named, and evaluates the policies with iam-simulate.
//! A request any authorization of which is not allowed is answered as AWS
//! answers it: `UnauthorizedOperation` (EC2) or `AccessDenied` (IAM).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{ChildStdin, ChildStdout, Command};
use std::sync::Mutex;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::Process;

/// One authorization: an action on one resource, with what is known of it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    pub action: String,
    /// The reference's resource type; none for an action on `*` alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    pub resource: String,
    pub context: BTreeMap<String, Value>,
    /// The resource's own policy, where AWS asks it too (a KMS key's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_policy: Option<Value>,
}

/// The evaluator's answer for one [`Check`].
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    /// `Allowed`, `ImplicitlyDenied` or `ExplicitlyDenied`.
    pub decision: String,
    #[serde(default)]
    pub allowed_by: Vec<String>,
    #[serde(default)]
    pub denied_by: Vec<String>,
    /// The context it was decided in (the reference's keys only).
    #[serde(default)]
    pub context: BTreeMap<String, Value>,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        self.decision == "Allowed"
    }
}

/// A principal whose policies the ground decides by.
#[derive(Clone, Debug, Default)]
pub struct Principal {
    /// The session's ARN (`arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION`).
    pub arn: String,
    /// The role's ARN.
    pub role: String,
    pub account: String,
    /// Its tags (`aws:PrincipalTag`): the session's tags, and a role's own
    /// where a test gives them (an instance's session carries its role's).
    pub tags: BTreeMap<String, String>,
}

/// The evaluator process (Node): one request at a time.
pub struct Evaluator {
    io: Mutex<(ChildStdin, BufReader<ChildStdout>)>,
    _process: Process,
}

impl Evaluator {
    /// Starts `node EVALUATOR` ([`crate::Tools::iam_evaluator`]), its
    /// errors going to `log`.
    pub fn start(log: &Path) -> Result<Evaluator> {
        let tools = crate::Tools::locate()?;
        let mut cmd = Command::new("node");
        cmd.arg(&tools.iam_evaluator);
        let (process, stdin, stdout) = Process::spawn_piped("iam-evaluator", cmd, log)?;
        Ok(Evaluator {
            io: Mutex::new((stdin, BufReader::new(stdout))),
            _process: process,
        })
    }

    /// The decision for each check of one request, in order (refused when
    /// the checks leave out a resource type the action requires).
    pub fn decide(
        &self,
        principal: &Principal,
        policies: &[Value],
        checks: &[Check],
    ) -> Result<Vec<Decision>> {
        self.ask(principal, policies, checks, false)
    }

    /// The decision for each check, each an authorization of its own (a
    /// table of cases, not one request).
    pub fn decide_each(
        &self,
        principal: &Principal,
        policies: &[Value],
        checks: &[Check],
    ) -> Result<Vec<Decision>> {
        self.ask(principal, policies, checks, true)
    }

    fn ask(
        &self,
        principal: &Principal,
        policies: &[Value],
        checks: &[Check],
        rows: bool,
    ) -> Result<Vec<Decision>> {
        let policies: Vec<Value> = policies
            .iter()
            .enumerate()
            .map(|(i, p)| json!({"name": format!("policy-{i}"), "policy": p}))
            .collect();
        let request = json!({
            "principal": principal.arn,
            "account": principal.account,
            "policies": policies,
            "checks": checks,
            "rows": rows,
        });
        let mut io = self
            .io
            .lock()
            .map_err(|_| anyhow!("evaluator lock poisoned"))?;
        let (stdin, stdout) = &mut *io;
        writeln!(stdin, "{request}")?;
        stdin.flush()?;
        let mut line = String::new();
        if stdout.read_line(&mut line)? == 0 {
            bail!("the IAM evaluator exited");
        }
        let answer: Value = serde_json::from_str(&line).context("the evaluator's answer")?;
        if let Some(e) = answer["error"].as_str() {
            bail!("{e}");
        }
        let results: Vec<Decision> = serde_json::from_value(answer["results"].clone())?;
        if results.len() != checks.len() {
            bail!("{} decisions for {} checks", results.len(), checks.len());
        }
        Ok(results)
    }
}

/// What AWS knows of the resources a request names, from moto.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Facts {
    #[serde(default)]
    pub ec2: BTreeMap<String, Ec2Fact>,
    #[serde(default)]
    pub key_pairs: BTreeMap<String, Tagged>,
    #[serde(default)]
    pub roles: BTreeMap<String, RoleFact>,
    #[serde(default)]
    pub profiles: BTreeMap<String, ProfileFact>,
    #[serde(default)]
    pub callers: BTreeMap<String, CallerFact>,
    #[serde(default)]
    pub queues: BTreeMap<String, Tagged>,
    #[serde(default)]
    pub rules: BTreeMap<String, Tagged>,
    #[serde(default)]
    pub log_groups: BTreeMap<String, Tagged>,
    #[serde(default)]
    pub kms_keys: BTreeMap<String, KmsKeyFact>,
}

/// A KMS key as moto holds it, by the reference a request gave.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct KmsKeyFact {
    pub arn: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Its key policy.
    pub policy: Option<Value>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ec2Fact {
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    pub vpc: Option<String>,
    pub owner: Option<String>,
    pub public: Option<bool>,
    pub route_table: Option<String>,
    pub subnet: Option<String>,
    pub peer_vpc: Option<String>,
    pub peer_owner: Option<String>,
    pub peer_region: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Tagged {
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct RoleFact {
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    pub boundary: Option<String>,
    /// The documents of its inline and attached policies.
    #[serde(default)]
    pub policies: Vec<serde_json::Value>,
    /// Its trust policy.
    pub trust: Option<Value>,
    /// Its inline policies by name.
    #[serde(default)]
    pub inline: BTreeMap<String, Value>,
}

/// The IAM user an access key belongs to.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct CallerFact {
    pub arn: String,
    pub account: String,
    #[serde(default)]
    pub policies: Vec<Value>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct ProfileFact {
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub roles: Vec<String>,
}

/// The IDs and names whose facts a request's checks need.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FactsQuery {
    pub account: String,
    pub region: String,
    pub ec2: BTreeSet<String>,
    pub key_pairs: BTreeSet<String>,
    pub roles: BTreeSet<String>,
    pub profiles: BTreeSet<String>,
    /// Access keys whose IAM user to find, in any account.
    pub callers: BTreeSet<String>,
    /// SQS queues by name.
    pub queues: BTreeSet<String>,
    /// EventBridge rules (of the default bus) by name.
    pub rules: BTreeSet<String>,
    /// CloudWatch Logs log groups by name.
    pub log_groups: BTreeSet<String>,
    /// KMS keys by ID, ARN or alias.
    pub kms_keys: BTreeSet<String>,
}

impl FactsQuery {
    fn is_empty(&self) -> bool {
        self.ec2.is_empty()
            && self.key_pairs.is_empty()
            && self.roles.is_empty()
            && self.profiles.is_empty()
            && self.callers.is_empty()
            && self.queues.is_empty()
            && self.rules.is_empty()
            && self.log_groups.is_empty()
            && self.kms_keys.is_empty()
    }
}

/// moto's facts (`POST /moto-api/byoc/facts`).
pub fn facts(upstream: u16, query: &FactsQuery) -> Result<Facts> {
    if query.is_empty() {
        return Ok(Facts::default());
    }
    let body = serde_json::to_string(query)?;
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    write!(
        up,
        "POST /moto-api/byoc/facts HTTP/1.1\r\nHost: 127.0.0.1:{upstream}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = Vec::new();
    up.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!(
            "moto's facts answered {}",
            head.lines().next().unwrap_or_default()
        );
    }
    Ok(serde_json::from_str(body)?)
}

/// What a request touches: the resource, and how it is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// An action on `*` alone (Describe*, List*).
    Any,
    /// A resource the request creates, of this EC2 resource type.
    CreatedEc2(&'static str),
    /// An existing EC2 resource by ID, of this type.
    Ec2(&'static str, String),
    /// A key pair by name.
    KeyPair(String),
    /// An IAM role by name (`created`: by this request).
    Role {
        name: String,
        path: String,
        created: bool,
    },
    /// An instance profile by name.
    Profile {
        name: String,
        path: String,
        created: bool,
    },
    /// A KMS key EC2 uses on the caller's behalf.
    KmsKey(String),
    /// A Service Quotas quota.
    Quota(String),
    /// An SQS queue by name (made by the request, or not).
    Queue(String),
    /// An EventBridge rule of the default bus by name.
    Rule(String),
    /// A CloudWatch Logs log group by name.
    LogGroup(String),
    /// A KMS key a KMS call names (its ID, ARN or an alias of it).
    Kms(String),
    /// The key a `CreateKey` makes.
    NewKms,
    /// A KMS alias by name (`alias/...`).
    KmsAlias(String),
}

/// One action on one target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Touch {
    pub action: String,
    pub target: Target,
}

/// The request's parameters (query protocol, or a JSON body).
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn parse(body: &[u8]) -> Params {
        if body.first() == Some(&b'{') {
            let v: Value = serde_json::from_slice(body).unwrap_or_default();
            let mut pairs = Vec::new();
            flatten("", &v, &mut pairs);
            return Params(pairs);
        }
        Params(
            form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    /// `NAME.1`, `NAME.2`, ... in order.
    pub fn list(&self, name: &str) -> Vec<String> {
        (1..)
            .map_while(|n| self.get(&format!("{name}.{n}")))
            .collect()
    }

    /// The tags of the tag specification for `resource_type`
    /// (`TagSpecification.N.ResourceType`).
    fn tag_spec(&self, resource_type: &str) -> Option<Vec<(String, String)>> {
        (1..)
            .map_while(|n| {
                self.get(&format!("TagSpecification.{n}.ResourceType"))
                    .map(|t| (n, t))
            })
            .find(|(_, t)| t == resource_type)
            .map(|(n, _)| self.tags(&format!("TagSpecification.{n}.Tag")))
    }

    /// `PREFIX.N.Key` / `PREFIX.N.Value` pairs.
    /// The entries of a JSON map `prefix` (`tags` of `{"tags": {K: V}}`).
    fn map(&self, prefix: &str) -> Vec<(String, String)> {
        let prefix = format!("{prefix}.");
        self.0
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(&prefix)?.to_string(), v.clone())))
            .collect()
    }

    fn tags(&self, prefix: &str) -> Vec<(String, String)> {
        self.pairs(prefix, "Key", "Value")
    }

    /// `PREFIX.N.<key>` / `PREFIX.N.<value>` pairs (KMS: `TagKey`, `TagValue`).
    fn pairs(&self, prefix: &str, key: &str, value: &str) -> Vec<(String, String)> {
        (1..)
            .map_while(|n| {
                let k = self.get(&format!("{prefix}.{n}.{key}"))?;
                let v = self
                    .get(&format!("{prefix}.{n}.{value}"))
                    .unwrap_or_default();
                Some((k, v))
            })
            .collect()
    }
}

/// A JSON body as the query protocol names its values: an object's
/// members `A.B`, an array's elements `A.1`, `A.2` (a map's keys kept
/// whole after the first dot: `tags.byoc.dev/cluster`).
fn flatten(path: &str, v: &Value, out: &mut Vec<(String, String)>) {
    let join = |k: &str| match path {
        "" => k.to_string(),
        _ => format!("{path}.{k}"),
    };
    match v {
        Value::Object(m) => m.iter().for_each(|(k, v)| flatten(&join(k), v, out)),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(n, v)| flatten(&join(&(n + 1).to_string()), v, out)),
        Value::String(s) => out.push((path.to_string(), s.clone())),
        Value::Null => {}
        other => out.push((path.to_string(), other.to_string())),
    }
}

/// The EC2 resource type of an ID, by its prefix.
fn ec2_type(id: &str) -> Option<&'static str> {
    Some(match id.split('-').next()? {
        "vpc" => "vpc",
        "subnet" => "subnet",
        "igw" => "internet-gateway",
        "eipalloc" => "elastic-ip",
        "nat" => "natgateway",
        "rtb" => "route-table",
        "sg" => "security-group",
        "i" => "instance",
        "vpce" => "vpc-endpoint",
        "pcx" => "vpc-peering-connection",
        "vol" => "volume",
        "eni" => "network-interface",
        "ami" => "image",
        "snap" => "snapshot",
        "key" => "key-pair",
        _ => return None,
    })
}

/// Why the ground cannot say what a request touches.
#[derive(Debug, thiserror::Error)]
#[error("the ground does not model what {0} touches")]
pub struct Unmodelled(pub String);

/// What `svc:op` with `params` touches, as the reference lists it: created
/// resources, named ones, and the actions AWS authorizes along with it
/// (`ec2:CreateTags` for tags on create, `iam:PassRole` for a profile's
/// role, KMS for an encrypted root volume).
pub fn plan(svc: &str, op: &str, params: &Params) -> std::result::Result<Vec<Touch>, Unmodelled> {
    let mut t = Touches {
        action: format!("{svc}:{op}"),
        out: Vec::new(),
    };
    let id = |name: &str| params.get(name).unwrap_or_default();
    match (svc, op) {
        ("sts", _) => {}
        ("ec2", o) if o.starts_with("Describe") => t.on(Target::Any),
        ("pricing", "GetProducts") => t.on(Target::Any),
        ("servicequotas", "GetServiceQuota") => t.on(Target::Quota(format!(
            "{}/{}",
            id("ServiceCode"),
            id("QuotaCode")
        ))),
        ("ec2", "RunInstances") => run_instances(&mut t, params)?,
        ("ec2", "TerminateInstances") => {
            for i in params.list("InstanceId") {
                t.on(Target::Ec2("instance", i));
            }
        }
        ("ec2", o)
            if !o.starts_with("Describe")
                && (o.contains("VpcEndpoint") || o.contains("VpcPeeringConnection")) =>
        {
            reach(&mut t, op, params)?
        }
        ("iam", _) => iam(&mut t, op, params)?,
        ("sqs", _) => sqs(&mut t, op, params)?,
        ("events", _) => events(&mut t, op, params)?,
        ("logs", _) => logs(&mut t, op, params)?,
        ("kms", _) => kms(&mut t, op, params)?,
        _ => network(&mut t, svc, op, params)?,
    }
    Ok(t.out)
}

/// The touches of one request, each of its action unless said otherwise.
struct Touches {
    action: String,
    out: Vec<Touch>,
}

impl Touches {
    fn on(&mut self, target: Target) {
        let action = self.action.clone();
        self.also(&action, target);
    }

    /// `action`, authorized along with the request's own.
    fn also(&mut self, action: &str, target: Target) {
        self.out.push(Touch {
            action: action.to_string(),
            target,
        });
    }
}

type Planned = std::result::Result<(), Unmodelled>;

/// The network's EC2 calls.
fn network(t: &mut Touches, svc: &str, op: &str, params: &Params) -> Planned {
    let id = |name: &str| params.get(name).unwrap_or_default();
    let ec2 = |t: &'static str, name: &str| Target::Ec2(t, params.get(name).unwrap_or_default());
    match (svc, op) {
        ("ec2", "CreateVpc") => t.on(Target::CreatedEc2("vpc")),
        ("ec2", "CreateSubnet") => {
            t.on(Target::CreatedEc2("subnet"));
            t.on(ec2("vpc", "VpcId"));
        }
        ("ec2", "CreateInternetGateway") => t.on(Target::CreatedEc2("internet-gateway")),
        ("ec2", "AttachInternetGateway" | "DetachInternetGateway") => {
            t.on(ec2("internet-gateway", "InternetGatewayId"));
            t.on(ec2("vpc", "VpcId"));
        }
        ("ec2", "DeleteInternetGateway") => t.on(ec2("internet-gateway", "InternetGatewayId")),
        ("ec2", "AllocateAddress") => t.on(Target::CreatedEc2("elastic-ip")),
        ("ec2", "ReleaseAddress") => t.on(ec2("elastic-ip", "AllocationId")),
        ("ec2", "CreateNatGateway") => {
            t.on(Target::CreatedEc2("natgateway"));
            t.on(ec2("subnet", "SubnetId"));
            if params.get("AllocationId").is_some() {
                t.on(ec2("elastic-ip", "AllocationId"));
            }
        }
        ("ec2", "DeleteNatGateway") => t.on(ec2("natgateway", "NatGatewayId")),
        ("ec2", "CreateRouteTable") => {
            t.on(Target::CreatedEc2("route-table"));
            t.on(ec2("vpc", "VpcId"));
        }
        ("ec2", "DeleteRouteTable" | "CreateRoute" | "ReplaceRoute" | "DeleteRoute") => {
            t.on(ec2("route-table", "RouteTableId"))
        }
        ("ec2", "AssociateRouteTable") => {
            t.on(ec2("route-table", "RouteTableId"));
            if params.get("SubnetId").is_some() {
                t.on(ec2("subnet", "SubnetId"));
            }
        }
        ("ec2", "DisassociateRouteTable") => {
            t.on(ec2("route-table", "AssociationId"));
        }
        ("ec2", "CreateSecurityGroup") => {
            t.on(Target::CreatedEc2("security-group"));
            t.on(ec2("vpc", "VpcId"));
        }
        (
            "ec2",
            "AuthorizeSecurityGroupIngress" | "RevokeSecurityGroupIngress" | "DeleteSecurityGroup",
        ) => t.on(ec2("security-group", "GroupId")),
        ("ec2", "ModifyVpcAttribute" | "DeleteVpc") => t.on(ec2("vpc", "VpcId")),
        ("ec2", "ModifySubnetAttribute" | "DeleteSubnet") => t.on(ec2("subnet", "SubnetId")),
        ("ec2", "ImportKeyPair") => t.on(Target::CreatedEc2("key-pair")),
        ("ec2", "DeleteKeyPair") => t.on(Target::KeyPair(id("KeyName"))),
        ("ec2", "CreateTags") => {
            for r in params.list("ResourceId") {
                match ec2_type(&r) {
                    Some(kind) => t.on(Target::Ec2(kind, r)),
                    None => return Err(Unmodelled(format!("ec2:CreateTags on {r}"))),
                }
            }
        }
        _ => return Err(Unmodelled(t.action.clone())),
    }
    Ok(())
}

/// VPC endpoints and peering connections.
fn reach(t: &mut Touches, op: &str, params: &Params) -> Planned {
    let id = |name: &str| params.get(name).unwrap_or_default();
    let ec2 = |t: &'static str, name: &str| Target::Ec2(t, params.get(name).unwrap_or_default());
    match op {
        "CreateVpcEndpoint" => {
            t.on(Target::CreatedEc2("vpc-endpoint"));
            t.on(ec2("vpc", "VpcId"));
            for s in params.list("SubnetId") {
                t.on(Target::Ec2("subnet", s));
            }
            for table in params.list("RouteTableId") {
                t.on(Target::Ec2("route-table", table));
            }
            for g in params.list("SecurityGroupId") {
                t.on(Target::Ec2("security-group", g));
            }
        }
        "ModifyVpcEndpoint" => {
            t.on(ec2("vpc-endpoint", "VpcEndpointId"));
            for (list, kind) in [
                ("AddSubnetId", "subnet"),
                ("RemoveSubnetId", "subnet"),
                ("AddRouteTableId", "route-table"),
                ("RemoveRouteTableId", "route-table"),
                ("AddSecurityGroupId", "security-group"),
                ("RemoveSecurityGroupId", "security-group"),
            ] {
                for r in params.list(list) {
                    t.on(Target::Ec2(kind, r));
                }
            }
        }
        "DeleteVpcEndpoints" => {
            for e in params.list("VpcEndpointId") {
                t.on(Target::Ec2("vpc-endpoint", e));
            }
        }
        "CreateVpcPeeringConnection" => {
            t.on(Target::CreatedEc2("vpc-peering-connection"));
            t.on(ec2("vpc", "VpcId"));
        }
        "AcceptVpcPeeringConnection" => {
            let pcx = id("VpcPeeringConnectionId");
            t.on(Target::Ec2("vpc-peering-connection", pcx.clone()));
            // The accepter VPC: the connection's peer (from its facts).
            t.on(Target::Ec2("vpc", format!("peer-of:{pcx}")));
        }
        "DeleteVpcPeeringConnection" => {
            t.on(ec2("vpc-peering-connection", "VpcPeeringConnectionId"))
        }
        _ => return Err(Unmodelled(t.action.clone())),
    }
    Ok(())
}

/// RunInstances: what it creates, what it launches into and from, and
/// what is authorized along with it.
fn run_instances(t: &mut Touches, params: &Params) -> Planned {
    let ec2 = |t: &'static str, name: &str| Target::Ec2(t, params.get(name).unwrap_or_default());
    t.on(Target::CreatedEc2("instance"));
    t.on(Target::CreatedEc2("network-interface"));
    t.on(Target::CreatedEc2("volume"));
    t.on(ec2("image", "ImageId"));
    let mut subnets = params.list("SubnetId");
    subnets.extend(params.get("SubnetId"));
    subnets.extend(params.get("NetworkInterface.1.SubnetId"));
    for s in subnets {
        t.on(Target::Ec2("subnet", s));
    }
    let mut groups = params.list("SecurityGroupId");
    groups.extend(params.list("NetworkInterface.1.SecurityGroupId"));
    for g in groups {
        t.on(Target::Ec2("security-group", g));
    }
    if let Some(k) = params.get("KeyName") {
        t.on(Target::KeyPair(k));
    }
    for n in 1.. {
        if params
            .get(&format!("BlockDeviceMapping.{n}.DeviceName"))
            .is_none()
        {
            break;
        }
        if let Some(s) = params.get(&format!("BlockDeviceMapping.{n}.Ebs.SnapshotId")) {
            t.on(Target::Ec2("snapshot", s));
        }
        if let Some(key) = params.get(&format!("BlockDeviceMapping.{n}.Ebs.KmsKeyId")) {
            for kms in [
                "kms:CreateGrant",
                "kms:GenerateDataKeyWithoutPlaintext",
                "kms:Decrypt",
                "kms:DescribeKey",
            ] {
                t.also(kms, Target::KmsKey(key.clone()));
            }
        }
    }
    if params.get("LaunchTemplate.LaunchTemplateId").is_some()
        || params.get("LaunchTemplate.LaunchTemplateName").is_some()
    {
        return Err(Unmodelled("ec2:RunInstances with a launch template".into()));
    }
    let profile = params
        .get("IamInstanceProfile.Arn")
        .and_then(|a| a.rsplit('/').next().map(str::to_string))
        .or_else(|| params.get("IamInstanceProfile.Name"));
    if let Some(p) = profile {
        // The profile's role is passed to EC2.
        t.also(
            "iam:PassRole",
            Target::Role {
                name: format!("role-of:{p}"),
                path: "/".into(),
                created: false,
            },
        );
    }
    Ok(())
}

/// IAM roles and instance profiles.
fn iam(t: &mut Touches, op: &str, params: &Params) -> Planned {
    let id = |name: &str| params.get(name).unwrap_or_default();
    match op {
        "ListRoles" | "GetAccountAuthorizationDetails" => t.on(Target::Any),
        "CreateRole" => t.on(Target::Role {
            name: id("RoleName"),
            path: params.get("Path").unwrap_or_else(|| "/".into()),
            created: true,
        }),
        "CreateInstanceProfile" => t.on(Target::Profile {
            name: id("InstanceProfileName"),
            path: params.get("Path").unwrap_or_else(|| "/".into()),
            created: true,
        }),
        "GetRole"
        | "ListAttachedRolePolicies"
        | "DeleteRole"
        | "TagRole"
        | "PutRolePermissionsBoundary"
        | "AttachRolePolicy"
        | "DetachRolePolicy"
        | "DeleteRolePolicy"
        | "GetRolePolicy"
        | "ListRolePolicies"
        | "PutRolePolicy"
        | "UpdateAssumeRolePolicy"
        | "UntagRole"
        | "ListRoleTags" => t.on(Target::Role {
            name: id("RoleName"),
            path: "/".into(),
            created: false,
        }),
        "GetInstanceProfile"
        | "DeleteInstanceProfile"
        | "TagInstanceProfile"
        | "RemoveRoleFromInstanceProfile"
        | "AddRoleToInstanceProfile" => {
            t.on(Target::Profile {
                name: id("InstanceProfileName"),
                path: "/".into(),
                created: false,
            });
            if op == "AddRoleToInstanceProfile" {
                // AWS: the caller must be allowed to pass the role added.
                t.also(
                    "iam:PassRole",
                    Target::Role {
                        name: id("RoleName"),
                        path: "/".into(),
                        created: false,
                    },
                );
            }
        }
        _ => return Err(Unmodelled(t.action.clone())),
    }
    Ok(())
}

/// SQS: every call but listing names its queue (`QueueName`, or the last
/// part of `QueueUrl`); a batch is authorized as its single action, and a
/// queue made with tags needs `sqs:TagQueue` too (AWS's SQS guide).
fn sqs(t: &mut Touches, op: &str, params: &Params) -> Planned {
    let queue = params
        .get("QueueName")
        .or_else(|| {
            let url = params.get("QueueUrl")?;
            url.rsplit('/').next().map(str::to_string)
        })
        .unwrap_or_default();
    match op {
        "ListQueues" => t.on(Target::Any),
        "CreateQueue" => {
            t.on(Target::Queue(queue.clone()));
            if !params.map("tags").is_empty() {
                t.also("sqs:TagQueue", Target::Queue(queue));
            }
        }
        "DeleteMessageBatch" => t.also("sqs:DeleteMessage", Target::Queue(queue)),
        "SendMessageBatch" => t.also("sqs:SendMessage", Target::Queue(queue)),
        "ChangeMessageVisibilityBatch" => {
            t.also("sqs:ChangeMessageVisibility", Target::Queue(queue))
        }
        "GetQueueUrl"
        | "GetQueueAttributes"
        | "SetQueueAttributes"
        | "ListQueueTags"
        | "TagQueue"
        | "UntagQueue"
        | "ReceiveMessage"
        | "DeleteMessage"
        | "DeleteQueue"
        | "PurgeQueue"
        | "SendMessage"
        | "ChangeMessageVisibility" => t.on(Target::Queue(queue)),
        _ => return Err(Unmodelled(t.action.clone())),
    }
    Ok(())
}

/// EventBridge rules of the default bus, named by `Name`, `Rule` or a
/// rule ARN.
fn events(t: &mut Touches, op: &str, params: &Params) -> Planned {
    let rule = params
        .get("Name")
        .or_else(|| params.get("Rule"))
        .or_else(|| {
            let arn = params.get("ResourceARN")?;
            arn.split_once(":rule/").map(|(_, n)| n.to_string())
        })
        .unwrap_or_default();
    match op {
        "ListRules" => t.on(Target::Any),
        "PutRule"
        | "DescribeRule"
        | "DeleteRule"
        | "EnableRule"
        | "DisableRule"
        | "PutTargets"
        | "RemoveTargets"
        | "ListTargetsByRule"
        | "TagResource"
        | "UntagResource"
        | "ListTagsForResource" => t.on(Target::Rule(rule)),
        _ => return Err(Unmodelled(t.action.clone())),
    }
    Ok(())
}

/// CloudWatch Logs: a log group by `logGroupName`, or by the ARN a
/// tagging call names; listing on `*`.
fn logs(t: &mut Touches, op: &str, params: &Params) -> Planned {
    let group = params
        .get("logGroupName")
        .or_else(|| {
            let arn = params.get("resourceArn")?;
            let (_, name) = arn.split_once(":log-group:")?;
            Some(name.trim_end_matches(":*").to_string())
        })
        .unwrap_or_default();
    match op {
        "DescribeLogGroups" => t.on(Target::Any),
        "CreateLogGroup" => {
            t.on(Target::LogGroup(group.clone()));
            if !params.map("tags").is_empty() {
                t.also("logs:TagResource", Target::LogGroup(group));
            }
        }
        "PutRetentionPolicy"
        | "DeleteRetentionPolicy"
        | "DeleteLogGroup"
        | "ListTagsForResource"
        | "TagResource"
        | "UntagResource"
        | "DescribeLogStreams" => t.on(Target::LogGroup(group)),
        _ => return Err(Unmodelled(t.action.clone())),
    }
    Ok(())
}

/// KMS: a key by the ID, ARN or alias a call names; an alias call on the
/// alias and on the key it names (or names now); listings on `*`.
fn kms(t: &mut Touches, op: &str, params: &Params) -> Planned {
    let key = params.get("KeyId").unwrap_or_default();
    match op {
        "ListKeys" | "ListAliases" => t.on(Target::Any),
        "CreateKey" => {
            t.on(Target::NewKms);
            if params.get("Tags.1.TagKey").is_some() {
                t.also("kms:TagResource", Target::NewKms);
            }
        }
        "CreateAlias" | "DeleteAlias" => {
            let alias = params.get("AliasName").unwrap_or_default();
            let target = match op {
                "CreateAlias" => params.get("TargetKeyId").unwrap_or_default(),
                _ => alias.clone(),
            };
            t.on(Target::KmsAlias(alias));
            t.on(Target::Kms(target));
        }
        "DescribeKey"
        | "ListResourceTags"
        | "TagResource"
        | "UntagResource"
        | "EnableKeyRotation"
        | "DisableKeyRotation"
        | "GetKeyRotationStatus"
        | "ScheduleKeyDeletion"
        | "CancelKeyDeletion"
        | "Encrypt"
        | "Decrypt"
        | "GenerateDataKey" => t.on(Target::Kms(key)),
        _ => return Err(Unmodelled(t.action.clone())),
    }
    Ok(())
}

/// The IAM user access key `key` belongs to, in any account (moto's
/// facts of `account` look through every account's users).
pub fn user_of_key(upstream: u16, account: &str, key: &str) -> Result<Option<CallerFact>> {
    let q = FactsQuery {
        account: account.to_string(),
        region: "us-east-1".into(),
        callers: [key.to_string()].into(),
        ..Default::default()
    };
    Ok(facts(upstream, &q)?.callers.remove(key))
}

/// The facts `touches` need.
fn facts_query(touches: &[Touch], account: &str, region: &str) -> FactsQuery {
    let mut q = FactsQuery {
        account: account.into(),
        region: region.into(),
        ..Default::default()
    };
    for t in touches {
        match &t.target {
            Target::Ec2(_, id) => {
                let id = id.strip_prefix("peer-of:").unwrap_or(id);
                q.ec2.insert(id.to_string());
            }
            Target::KeyPair(name) => {
                q.key_pairs.insert(name.clone());
            }
            Target::Role { name, created, .. } if !created => match name.strip_prefix("role-of:") {
                Some(profile) => {
                    q.profiles.insert(profile.to_string());
                }
                None => {
                    q.roles.insert(name.clone());
                }
            },
            Target::Profile { name, created, .. } if !created => {
                q.profiles.insert(name.clone());
            }
            Target::Queue(name) => {
                q.queues.insert(name.clone());
            }
            Target::Rule(name) => {
                q.rules.insert(name.clone());
            }
            Target::LogGroup(name) => {
                q.log_groups.insert(name.clone());
            }
            Target::Kms(key) => {
                q.kms_keys.insert(key.clone());
            }
            _ => {}
        }
    }
    q
}

fn tag_context(
    ctx: &mut BTreeMap<String, Value>,
    prefixes: &[&str],
    tags: &BTreeMap<String, String>,
) {
    for (k, v) in tags {
        for p in prefixes {
            ctx.insert(format!("{p}/{k}"), json!(v));
        }
    }
}

fn request_tags(ctx: &mut BTreeMap<String, Value>, tags: &[(String, String)]) {
    for (k, v) in tags {
        ctx.insert(format!("aws:RequestTag/{k}"), json!(v));
    }
    if !tags.is_empty() {
        let keys: Vec<&String> = tags.iter().map(|(k, _)| k).collect();
        ctx.insert("aws:TagKeys".into(), json!(keys));
    }
}

/// The checks for `touches`: ARNs and contexts from the request, the
/// principal and what moto holds of the resources, asked of `lookup` (once
/// for what the request names, again for what those facts name: a
/// connection's peer VPC, a profile's role).
pub fn checks(
    svc: &str,
    op: &str,
    params: &Params,
    principal: &Principal,
    region: &str,
    touches: &[Touch],
    lookup: &dyn Fn(&FactsQuery) -> Result<Facts>,
) -> Result<Vec<Check>> {
    let account = &principal.account;
    let base = base_context(svc, principal, region);
    let j = Judging {
        op,
        params,
        region,
        account,
        facts: lookup(&facts_query(touches, account, region))?,
        lookup,
        base,
    };
    let mut out = Vec::new();
    for t in touches {
        let mut ctx = j.base.clone();
        let c = &mut ctx;
        let (resource_type, resource) = match &t.target {
            Target::Any => (None, "*".to_string()),
            Target::Quota(q) => (
                Some("quota".to_string()),
                format!("arn:aws:servicequotas:{region}:{account}:{q}"),
            ),
            Target::CreatedEc2(rtype) => j.created_ec2(rtype, c, &mut out),
            Target::Ec2(rtype, id) => j.existing_ec2(rtype, id, c)?,
            Target::KeyPair(name) => j.key_pair(name, c),
            Target::KmsKey(key) => j.kms_key(&t.action, key, c),
            Target::Role {
                name,
                path,
                created,
            } => j.role(&t.action, (name, path, *created), c)?,
            Target::Profile {
                name,
                path,
                created,
            } => j.profile(&t.action, (name, path, *created), c),
            Target::Queue(name) => j.queue(name, c),
            Target::Rule(name) => j.rule(name, c),
            Target::LogGroup(name) => j.log_group(name, c),
            Target::Kms(key) => j.kms(key, c),
            Target::NewKms => j.new_kms(&t.action, c),
            Target::KmsAlias(name) => (
                Some("alias".to_string()),
                format!("arn:aws:kms:{region}:{account}:{name}"),
            ),
        };
        // A KMS key's policy is asked too: its own as moto holds it, else
        // the default one (the account's IAM policies decide), which a key
        // made with no policy has.
        let own = match &t.target {
            Target::Kms(key) => (j.facts.kms_keys.get(key)).and_then(|k| k.policy.clone()),
            _ => None,
        };
        let keyed = matches!(
            t.target,
            Target::KmsKey(_) | Target::Kms(_) | Target::NewKms
        );
        let resource_policy = (keyed && t.action != "kms:CreateKey").then(|| {
            own.unwrap_or_else(|| {
                json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
                    "Principal": {"AWS": format!("arn:aws:iam::{account}:root")},
                    "Action": "kms:*", "Resource": "*"}]})
            })
        });
        out.push(Check {
            action: t.action.clone(),
            resource_type,
            resource,
            context: ctx,
            resource_policy,
        });
    }
    Ok(out)
}

/// What every authorization of a request is judged with: who asks, where,
/// over TLS.
fn base_context(svc: &str, principal: &Principal, region: &str) -> Ctx {
    let mut base = BTreeMap::new();
    base.insert("aws:PrincipalArn".to_string(), json!(principal.role));
    base.insert("aws:PrincipalAccount".to_string(), json!(principal.account));
    base.insert("aws:PrincipalType".to_string(), json!("AssumedRole"));
    base.insert("aws:RequestedRegion".to_string(), json!(region));
    base.insert("aws:SecureTransport".to_string(), json!("true"));
    tag_context(&mut base, &["aws:PrincipalTag"], &principal.tags);
    if svc == "ec2" {
        base.insert("ec2:Region".to_string(), json!(region));
    }
    base
}

/// An authorization's resource type and ARN.
type Judged = (Option<String>, String);

/// A request context being filled.
type Ctx = BTreeMap<String, Value>;

/// An IAM name, path, and whether the request creates it.
type Named<'a> = (&'a String, &'a String, bool);

/// What every authorization of one request is judged with.
struct Judging<'a> {
    op: &'a str,
    params: &'a Params,
    region: &'a str,
    account: &'a str,
    facts: Facts,
    lookup: &'a dyn Fn(&FactsQuery) -> Result<Facts>,
    base: Ctx,
}

impl Judging<'_> {
    fn ec2_arn(&self, t: &str, id: &str) -> String {
        let (region, account) = (self.region, self.account);
        match t {
            "image" | "snapshot" => format!("arn:aws:ec2:{region}::{t}/{id}"),
            _ => format!("arn:aws:ec2:{region}:{account}:{t}/{id}"),
        }
    }

    /// Facts of what the first look did not ask for (a connection's peer
    /// VPC, a profile's role).
    fn more(&self, q: FactsQuery) -> Result<Facts> {
        (self.lookup)(&FactsQuery {
            account: self.account.to_string(),
            region: self.region.into(),
            ..q
        })
    }

    /// A resource the request creates: its request tags and attributes,
    /// and the CreateTags AWS authorizes along with tags on create.
    fn created_ec2(&self, rtype: &str, ctx: &mut Ctx, out: &mut Vec<Check>) -> Judged {
        let params = self.params;
        let tags = params.tag_spec(rtype).unwrap_or_default();
        request_tags(ctx, &tags);
        if rtype == "instance" {
            for (key, param) in [
                ("ec2:InstanceType", "InstanceType"),
                ("ec2:InstanceMarketType", "InstanceMarketOptions.MarketType"),
            ] {
                if let Some(v) = params.get(param) {
                    ctx.insert(key.into(), json!(v));
                }
            }
        }
        if rtype == "volume" {
            let encrypted = params
                .get("BlockDeviceMapping.1.Ebs.Encrypted")
                .unwrap_or_else(|| "false".into());
            ctx.insert("ec2:Encrypted".into(), json!(encrypted));
        }
        if !tags.is_empty() {
            // Tags on create: AWS authorizes CreateTags on the new
            // resource too, with the creating action.
            let mut tag_ctx = self.base.clone();
            request_tags(&mut tag_ctx, &tags);
            tag_ctx.insert("ec2:CreateAction".into(), json!(self.op));
            out.push(Check {
                action: "ec2:CreateTags".into(),
                resource_type: Some(rtype.to_string()),
                resource: self.ec2_arn(rtype, "*"),
                context: tag_ctx,
                resource_policy: None,
            });
        }
        (Some(rtype.to_string()), self.ec2_arn(rtype, "*"))
    }

    /// An existing EC2 resource: its tags, its VPC and the condition keys
    /// of its type.
    fn existing_ec2(&self, rtype: &str, id: &str, ctx: &mut Ctx) -> Result<Judged> {
        let (id, fact) = match id.strip_prefix("peer-of:") {
            Some(pcx) => {
                let peer = self
                    .facts
                    .ec2
                    .get(pcx)
                    .and_then(|f| f.peer_vpc.clone())
                    .unwrap_or_default();
                let q = FactsQuery {
                    ec2: [peer.clone()].into(),
                    ..Default::default()
                };
                let fact = self.more(q)?.ec2.remove(&peer).unwrap_or_default();
                (peer, fact)
            }
            None => (
                id.to_string(),
                self.facts.ec2.get(id).cloned().unwrap_or_default(),
            ),
        };
        // A route table's association names its table.
        let rid = match (&fact.route_table, rtype) {
            (Some(table), "route-table") => table.clone(),
            _ => id,
        };
        tag_context(ctx, &["aws:ResourceTag", "ec2:ResourceTag"], &fact.tags);
        if let Some(vpc) = &fact.vpc {
            ctx.insert("ec2:Vpc".into(), json!(self.ec2_arn("vpc", vpc)));
        }
        let id_key = match rtype {
            "vpc" => Some("ec2:VpcID"),
            "subnet" => Some("ec2:SubnetID"),
            "security-group" => Some("ec2:SecurityGroupID"),
            "route-table" => Some("ec2:RouteTableID"),
            "image" => Some("ec2:ImageID"),
            _ => None,
        };
        if let Some(key) = id_key {
            ctx.insert(key.into(), json!(rid));
        }
        if rtype == "image" {
            ctx.insert("ec2:ImageType".into(), json!("machine"));
            if let Some(p) = fact.public {
                ctx.insert("ec2:Public".into(), json!(p.to_string()));
            }
        }
        if let (Some(o), "image" | "snapshot") = (&fact.owner, rtype) {
            ctx.insert("ec2:Owner".into(), json!(o));
        }
        if self.op == "CreateTags" {
            request_tags(ctx, &self.params.tags("Tag"));
        }
        Ok((Some(rtype.to_string()), self.ec2_arn(rtype, &rid)))
    }

    fn key_pair(&self, name: &str, ctx: &mut Ctx) -> Judged {
        let tags = self
            .facts
            .key_pairs
            .get(name)
            .map(|k| k.tags.clone())
            .unwrap_or_default();
        tag_context(ctx, &["aws:ResourceTag", "ec2:ResourceTag"], &tags);
        ctx.insert("ec2:KeyPairName".into(), json!(name));
        (Some("key-pair".to_string()), self.ec2_arn("key-pair", name))
    }

    /// A KMS key EC2 uses on the caller's behalf (an encrypted volume).
    fn kms_key(&self, action: &str, key: &str, ctx: &mut Ctx) -> Judged {
        let (region, account) = (self.region, self.account);
        ctx.insert(
            "kms:ViaService".into(),
            json!(format!("ec2.{region}.amazonaws.com")),
        );
        ctx.insert("kms:CallerAccount".into(), json!(account));
        if action == "kms:CreateGrant" {
            ctx.insert("kms:GrantIsForAWSResource".into(), json!("true"));
        }
        let arn = if key.starts_with("arn:") {
            key.to_string()
        } else {
            format!("arn:aws:kms:{region}:{account}:key/{key}")
        };
        (Some("key".to_string()), arn)
    }

    /// A key a KMS call names: its tags and aliases, as moto holds them.
    fn kms(&self, key: &str, ctx: &mut Ctx) -> Judged {
        let (region, account) = (self.region, self.account);
        let arn = match self.facts.kms_keys.get(key) {
            Some(k) => {
                tag_context(ctx, &["aws:ResourceTag"], &k.tags);
                ctx.insert("kms:ResourceAliases".into(), json!(k.aliases));
                k.arn.clone()
            }
            None if key.starts_with("arn:") => key.to_string(),
            None => format!("arn:aws:kms:{region}:{account}:key/{key}"),
        };
        if matches!(self.op, "TagResource") {
            request_tags(ctx, &self.params.pairs("Tags", "TagKey", "TagValue"));
        }
        (Some("key".to_string()), arn)
    }

    /// The key `CreateKey` makes: the request's tags (`kms:CreateKey` is
    /// on `*`; the tags it sets are also a `kms:TagResource` of the key).
    fn new_kms(&self, action: &str, ctx: &mut Ctx) -> Judged {
        request_tags(ctx, &self.params.pairs("Tags", "TagKey", "TagValue"));
        // What the request asks for, AWS's defaults where it says nothing.
        for (key, param, default) in [
            ("kms:KeySpec", "KeySpec", "SYMMETRIC_DEFAULT"),
            ("kms:KeyUsage", "KeyUsage", "ENCRYPT_DECRYPT"),
            ("kms:KeyOrigin", "Origin", "AWS_KMS"),
            ("kms:MultiRegion", "MultiRegion", "false"),
        ] {
            let value = self.params.get(param).unwrap_or_else(|| default.into());
            ctx.insert(key.into(), json!(value));
        }
        match action {
            "kms:CreateKey" => (None, "*".to_string()),
            _ => {
                let (region, account) = (self.region, self.account);
                (
                    Some("key".to_string()),
                    format!("arn:aws:kms:{region}:{account}:key/new"),
                )
            }
        }
    }

    /// A role: its tags (or the request's, made now), its boundary, the
    /// policy attached, the service it is passed to.
    fn role(
        &self,
        action: &str,
        (name, path, created): Named<'_>,
        ctx: &mut Ctx,
    ) -> Result<Judged> {
        let params = self.params;
        let (name, fact) = match name.strip_prefix("role-of:") {
            Some(profile) => {
                let role = self
                    .facts
                    .profiles
                    .get(profile)
                    .and_then(|p| p.roles.first().cloned())
                    .unwrap_or_default();
                let q = FactsQuery {
                    roles: [role.clone()].into(),
                    ..Default::default()
                };
                let fact = self.more(q)?.roles.remove(&role).unwrap_or_default();
                (role, fact)
            }
            None => (
                name.clone(),
                self.facts.roles.get(name).cloned().unwrap_or_default(),
            ),
        };
        match created {
            true => request_tags(ctx, &params.tags("Tags.member")),
            false => tag_context(ctx, &["aws:ResourceTag", "iam:ResourceTag"], &fact.tags),
        }
        if action == "iam:TagRole" {
            request_tags(ctx, &params.tags("Tags.member"));
        }
        let boundary = match action {
            "iam:CreateRole" | "iam:PutRolePermissionsBoundary" => {
                params.get("PermissionsBoundary")
            }
            _ => fact.boundary.clone(),
        };
        if let Some(b) = boundary {
            ctx.insert("iam:PermissionsBoundary".into(), json!(b));
        }
        if let Some(p) = params.get("PolicyArn") {
            ctx.insert("iam:PolicyARN".into(), json!(p));
        }
        if action == "iam:PassRole" {
            ctx.insert("iam:PassedToService".into(), json!("ec2.amazonaws.com"));
        }
        let account = self.account;
        Ok((
            Some("role".to_string()),
            format!("arn:aws:iam::{account}:role{path}{name}"),
        ))
    }

    fn profile(&self, action: &str, (name, path, created): Named<'_>, ctx: &mut Ctx) -> Judged {
        if created {
            request_tags(ctx, &self.params.tags("Tags.member"));
        } else {
            let tags = self
                .facts
                .profiles
                .get(name)
                .map(|p| p.tags.clone())
                .unwrap_or_default();
            tag_context(ctx, &["aws:ResourceTag"], &tags);
        }
        if action == "iam:TagInstanceProfile" {
            request_tags(ctx, &self.params.tags("Tags.member"));
        }
        let account = self.account;
        (
            Some("instance-profile".to_string()),
            format!("arn:aws:iam::{account}:instance-profile{path}{name}"),
        )
    }
}

impl Judging<'_> {
    /// A queue: its tags where it exists, the request's where it sets them.
    fn queue(&self, name: &str, ctx: &mut Ctx) -> Judged {
        if let Some(q) = self.facts.queues.get(name) {
            tag_context(ctx, &["aws:ResourceTag"], &q.tags);
        }
        if matches!(self.op, "CreateQueue" | "TagQueue") {
            let tags = match self.op {
                "CreateQueue" => self.params.map("tags"),
                _ => self.params.map("Tags"),
            };
            request_tags(ctx, &tags);
        }
        let (region, account) = (self.region, self.account);
        (
            Some("queue".to_string()),
            format!("arn:aws:sqs:{region}:{account}:{name}"),
        )
    }

    /// A log group: its tags where it exists, the request's where it sets
    /// them.
    fn log_group(&self, name: &str, ctx: &mut Ctx) -> Judged {
        if let Some(g) = self.facts.log_groups.get(name) {
            tag_context(ctx, &["aws:ResourceTag"], &g.tags);
        }
        if matches!(self.op, "CreateLogGroup" | "TagResource") {
            request_tags(ctx, &self.params.map("tags"));
        }
        let (region, account) = (self.region, self.account);
        (
            Some("log-group".to_string()),
            format!("arn:aws:logs:{region}:{account}:log-group:{name}"),
        )
    }

    /// A rule: its tags where it exists, the request's where it sets them.
    fn rule(&self, name: &str, ctx: &mut Ctx) -> Judged {
        if let Some(r) = self.facts.rules.get(name) {
            tag_context(ctx, &["aws:ResourceTag"], &r.tags);
        }
        if matches!(self.op, "PutRule" | "TagResource") {
            request_tags(ctx, &self.params.tags("Tags"));
        }
        if self.op == "PutTargets" {
            let targets: Vec<String> = (1..)
                .map_while(|n| self.params.get(&format!("Targets.{n}.Arn")))
                .collect();
            // A list key (ArrayOfARN), whatever the number of targets.
            ctx.insert("events:TargetArn".into(), json!(targets));
        }
        let (region, account) = (self.region, self.account);
        (
            Some("rule-on-default-event-bus".to_string()),
            format!("arn:aws:events:{region}:{account}:rule/{name}"),
        )
    }
}

/// The account and name of a role's ARN.
fn role_of(arn: &str) -> Option<(String, String)> {
    let (account, path) = arn.strip_prefix("arn:aws:iam::")?.split_once(":role/")?;
    let name = path.rsplit('/').next().unwrap_or(path);
    Some((account.to_string(), name.to_string()))
}

/// What an AssumeRole asks of the role's trust policy: `sts:AssumeRole`
/// in the request's context (external ID, session name, session tags),
/// and `sts:TagSession` when it tags the session.
fn trust_checks(params: &Params, role_arn: &str, trust: &Value) -> Vec<Check> {
    let mut context = BTreeMap::new();
    if let Some(id) = params.get("ExternalId") {
        context.insert("sts:ExternalId".to_string(), json!(id));
    }
    if let Some(name) = params.get("RoleSessionName") {
        context.insert("sts:RoleSessionName".to_string(), json!(name));
    }
    let tags = params.tags("Tags.member");
    request_tags(&mut context, &tags);
    let check = |action: &str| Check {
        action: action.into(),
        resource_type: Some("role".into()),
        resource: role_arn.to_string(),
        context: context.clone(),
        resource_policy: Some(trust.clone()),
    };
    let mut checks = vec![check("sts:AssumeRole")];
    if !tags.is_empty() {
        checks.push(check("sts:TagSession"));
    }
    checks
}

/// How AWS refuses an authorization: the error code and its message.
/// The caller of a judged AssumeRole, and the first authorization not
/// allowed, if any.
pub type TrustJudged = (Principal, Option<(Check, Decision)>);

/// An AssumeRole as AWS authorizes it: the role's trust policy decides,
/// with the caller's own policies (which alone never let a caller in that
/// the trust policy does not name), in the request's context (external
/// ID, session name, session tags); a tagged request is authorized for
/// `sts:TagSession` too. `session`: the caller when the ground knows the
/// key as a session; else the IAM user moto holds the key of. `None`: not
/// judged (a caller or role moto does not hold), else the caller and the
/// first check not allowed, if any.
pub fn judge_assume_role(
    upstream: u16,
    evaluator: &Evaluator,
    session: Option<Principal>,
    access_key: &str,
    params: &Params,
) -> Result<Option<TrustJudged>> {
    let role_arn = params.get("RoleArn").unwrap_or_default();
    let Some((role_account, role_name)) = role_of(&role_arn) else {
        return Ok(None);
    };
    let ask = |account: &str, role: &str| {
        facts(
            upstream,
            &FactsQuery {
                account: account.to_string(),
                region: "us-east-1".into(),
                roles: [role.to_string()].into(),
                ..Default::default()
            },
        )
    };
    let (caller, policies) = match session {
        Some(p) => {
            let own = p.role.rsplit('/').next().unwrap_or_default().to_string();
            let mut f = ask(&p.account, &own)?;
            let policies = f.roles.remove(&own).map(|r| r.policies).unwrap_or_default();
            (p, policies)
        }
        None => match user_of_key(upstream, &role_account, access_key)? {
            Some(user) => (
                Principal {
                    arn: user.arn.clone(),
                    role: user.arn,
                    account: user.account,
                    tags: BTreeMap::new(),
                },
                user.policies,
            ),
            None => return Ok(None),
        },
    };
    let Some(trust) = ask(&role_account, &role_name)?
        .roles
        .remove(&role_name)
        .and_then(|r| r.trust)
    else {
        return Ok(None);
    };
    let checks = trust_checks(params, &role_arn, &trust);
    // The role's account is the resource's; the caller's is in its ARN.
    let judged_as = Principal {
        account: role_account,
        ..caller.clone()
    };
    let decisions = evaluator.decide(&judged_as, &policies, &checks)?;
    let denied = checks
        .into_iter()
        .zip(decisions)
        .find(|(_, d)| !d.allowed());
    Ok(Some((caller, denied)))
}

pub fn refusal(svc: &str, principal: &Principal, check: &Check) -> (&'static str, String) {
    let because = format!(
        "because no identity-based policy allows the {} action",
        check.action
    );
    match svc {
        "ec2" => (
            "UnauthorizedOperation",
            format!(
                "You are not authorized to perform this operation. User: {} is not authorized to perform: {} on resource: {} {because}",
                principal.arn, check.action, check.resource
            ),
        ),
        _ => (
            "AccessDenied",
            format!(
                "User: {} is not authorized to perform: {} on resource: {} {because}",
                principal.arn, check.action, check.resource
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touches(svc: &str, op: &str, body: &str) -> Vec<(String, Target)> {
        plan(svc, op, &Params::parse(body.as_bytes()))
            .unwrap_or_default()
            .into_iter()
            .map(|t| (t.action, t.target))
            .collect()
    }

    #[test]
    fn a_create_in_a_vpc_touches_the_new_resource_and_the_vpc() {
        let t = touches(
            "ec2",
            "CreateSubnet",
            "Action=CreateSubnet&VpcId=vpc-1&CidrBlock=10.0.0.0%2F24",
        );
        assert_eq!(
            t,
            [
                ("ec2:CreateSubnet".into(), Target::CreatedEc2("subnet")),
                (
                    "ec2:CreateSubnet".into(),
                    Target::Ec2("vpc", "vpc-1".into())
                ),
            ]
        );
    }

    #[test]
    fn a_launch_touches_image_subnet_groups_key_and_passes_the_profile_role() {
        let t = touches(
            "ec2",
            "RunInstances",
            "ImageId=ami-1&SubnetId=subnet-1&SecurityGroupId.1=sg-1&KeyName=k&IamInstanceProfile.Arn=arn%3Aaws%3Aiam%3A%3A1%3Ainstance-profile%2Fbyoc-p&BlockDeviceMapping.1.DeviceName=%2Fdev%2Fxvda&BlockDeviceMapping.1.Ebs.KmsKeyId=k1",
        );
        let names: Vec<String> = t.iter().map(|(a, t)| format!("{a} {t:?}")).collect();
        for want in [
            "ec2:RunInstances CreatedEc2(\"instance\")",
            "ec2:RunInstances Ec2(\"image\", \"ami-1\")",
            "ec2:RunInstances Ec2(\"subnet\", \"subnet-1\")",
            "ec2:RunInstances Ec2(\"security-group\", \"sg-1\")",
            "ec2:RunInstances KeyPair(\"k\")",
            "kms:CreateGrant KmsKey(\"k1\")",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
        }
        assert!(names
            .iter()
            .any(|n| n.starts_with("iam:PassRole") && n.contains("role-of:byoc-p")));
    }

    #[test]
    fn an_unknown_call_is_not_guessed() {
        assert!(plan("ec2", "CreateLaunchTemplate", &Params::parse(b"")).is_err());
        assert!(plan("ec2", "CreateTags", &Params::parse(b"ResourceId.1=fpga-1")).is_err());
    }

    #[test]
    fn tags_on_create_are_the_requests_for_that_type_only() {
        let p = Params::parse(b"TagSpecification.1.ResourceType=instance&TagSpecification.1.Tag.1.Key=a&TagSpecification.1.Tag.1.Value=1&TagSpecification.2.ResourceType=volume&TagSpecification.2.Tag.1.Key=b&TagSpecification.2.Tag.1.Value=2");
        assert_eq!(p.tag_spec("volume"), Some(vec![("b".into(), "2".into())]));
        assert_eq!(p.tag_spec("instance"), Some(vec![("a".into(), "1".into())]));
        assert_eq!(p.tag_spec("subnet"), None);
    }
}
