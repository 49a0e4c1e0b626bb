//! `byoc-operator connect aws` and `disconnect aws`: a team's admin makes,
//! with one command, the cross-account role a CloudAccount names — its
//! trust policy naming the account's principal and external ID (both from
//! the CloudAccount's status), its permissions as inline policies (ongoing,
//! and setup unless `--ongoing`) — and the account's shared node identity
//! (`nodeInstanceProfileName`). Everything it makes carries the tag
//! `byoc.dev/connected-account` = `NAMESPACE/NAME`; a role or profile of
//! the same name without it is refused and never touched.
//!
//! The decision is pure ([`plan`]); a run makes only the writes its plan
//! lists, so a second run makes none, and what it created is removed again
//! when a later write of the same run fails (nothing is left half-made).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Value};

use crate::account::iam_policy::{self, PolicyOptions, PolicyPart};
use crate::account::in_use;
use crate::api::{AccountPhase, CloudAccount, ComputeCluster};
use crate::aws::admin::{self, ObservedPolicy, ObservedProfile, ObservedRole};
use crate::aws::tags::{CONNECTED, CONNECTED_INSTALLATION, CONNECTED_UID};
use crate::aws::{AwsClients, AwsError};

/// The cross-account role's policies. The ongoing part is inline; the
/// others are customer-managed policies named `<role>-<part>` and attached
/// to it: AWS holds a role's inline policies to 10,240 characters in all,
/// which the parts together pass, and each managed one to 6,144. Any other
/// inline name starting with [`POLICY_PREFIX`], or attached policy named
/// `<role>-` + [`POLICY_PREFIX`]..., is connect's too, and removed when not
/// wanted (the setup part was inline before).
pub const ONGOING_POLICY: &str = "byoc-operator-ongoing";
pub const SETUP_POLICY: &str = "byoc-operator-setup";
/// The storage part (log groups, keys): wanted with `--ongoing` too.
pub const STORAGE_POLICY: &str = "byoc-operator-storage";
/// The nodes' grants ([`iam_policy::nodes_policy`]): made beside the
/// role's setup part, not attached to the role; the operator attaches it
/// to its clusters' node roles.
pub const NODES_POLICY: &str = "byoc-operator-nodes";
const POLICY_PREFIX: &str = "byoc-operator-";

/// The name of the managed policy holding part `part` (e.g.
/// [`SETUP_POLICY`]) of role `role`'s permissions.
pub fn managed_policy_name(role: &str, part: &str) -> String {
    format!("{role}-{part}")
}

/// The ARN of managed policy `name` of AWS account `account`.
pub fn policy_arn(account: &str, name: &str) -> String {
    format!("arn:aws:iam::{account}:policy/{name}")
}

/// The nodes' grants of the account of cross-account role `role_arn`
/// (`arn:aws:iam::ACCOUNT:role/PATH/NAME`): what the operator attaches to
/// its clusters' node roles; none when the ARN is not a role's.
pub fn node_grants_arn(role_arn: &str) -> Option<String> {
    let role = role_name(role_arn)?;
    Some(policy_arn(
        &role.account_id,
        &managed_policy_name(&role.name, NODES_POLICY),
    ))
}
/// Set by `connect` on the CloudAccount: a change that makes the operator
/// verify it again at once.
pub const CONNECTED_AT: &str = "byoc.dev/connected-at";

const EC2_TRUST: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;

#[derive(clap::Args, Debug, Clone)]
pub struct ConnectArgs {
    /// The CloudAccount (NAMESPACE/NAME) to connect, read through the kubeconfig.
    #[arg(long)]
    pub account: String,
    /// The principal the role trusts; default: the CloudAccount's status.principal.
    #[arg(long)]
    pub principal: Option<String>,
    /// The installation's public ID the permissions name; default: the
    /// CloudAccount's status.installation.
    #[arg(long)]
    pub installation: Option<String>,
    /// Attach only the ongoing policy (no IAM write rights) and remove the
    /// setup policy: needs the CloudAccount's nodeInstanceProfileName.
    #[arg(long)]
    pub ongoing: bool,
    /// A managed policy clusters' node roles may get (setup policy's
    /// allow-list); repeatable.
    #[arg(long = "managed-policy-arn")]
    pub managed_policy_arns: Vec<String>,
    /// A role of a brought instance profile the operator may pass; repeatable.
    #[arg(long)]
    pub pass_role: Vec<String>,
    /// A managed policy on the shared node role (e.g.
    /// arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore); repeatable.
    #[arg(long = "node-policy-arn")]
    pub node_policy_arns: Vec<String>,
    /// Print the plan and the documents; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print a CloudFormation template making the same role (and node
    /// identity), and a console quick-create link; change nothing.
    #[arg(long)]
    pub cloudformation: bool,
    /// With --cloudformation: where the template will be hosted (an S3
    /// URL), for the quick-create link.
    #[arg(long)]
    pub template_url: Option<String>,
    /// With --cloudformation: the stack's name in the quick-create link.
    #[arg(long, default_value = "byoc-operator-connect")]
    pub stack_name: String,
    /// How long to wait for the CloudAccount to become ready (0: do not wait).
    #[arg(long, default_value = "5m", value_parser = parse_wait)]
    pub wait: Duration,
}

#[derive(clap::Args, Debug, Clone)]
pub struct DisconnectArgs {
    /// The CloudAccount (NAMESPACE/NAME) whose connection is removed.
    #[arg(long)]
    pub account: String,
    /// Print what would be removed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

fn parse_wait(s: &str) -> Result<Duration, String> {
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let span: jiff::Span = s
        .parse()
        .map_err(|e| format!("{s}: not a duration such as 90s or 5m: {e}"))?;
    let secs = span
        .total(jiff::Unit::Second)
        .map_err(|e| format!("{s}: {e}"))?;
    Ok(Duration::from_secs_f64(secs.max(0.0)))
}

/// Why connect or disconnect stopped.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{what} {name} already exists and {whose}; it is left untouched. Name another role in the CloudAccount (spec.roleArn / spec.nodeInstanceProfileName), or delete it yourself")]
    Foreign {
        what: &'static str,
        name: String,
        /// Whose it is: another CloudAccount's, or nobody's that connect knows.
        whose: String,
    },
    #[error("node role {name} does not trust EC2 alone: put back its trust policy or delete it")]
    NodeRoleTrust { name: String },
    #[error("instance profile {name} holds role {roles}: remove it first")]
    ProfileHoldsRole { name: String, roles: String },
    #[error("CloudAccount {account} names no role (spec.roleArn){hint}")]
    NoRole { account: String, hint: &'static str },
    #[error("spec.roleArn {arn} is not a role ARN")]
    NotARole { arn: String },
    #[error("CloudAccount {account} publishes no status.{field} yet: {why}")]
    NotPublished {
        account: String,
        field: &'static str,
        why: &'static str,
    },
    #[error("--ongoing leaves the role no IAM write right, so clusters need the account's shared node identity: set spec.nodeInstanceProfileName on CloudAccount {account} (connect makes it)")]
    NoSharedNodeIdentity { account: String },
    #[error("--account takes NAMESPACE/NAME")]
    AccountName,
    #[error("CloudAccount {account} was not found")]
    NotFound { account: String },
    #[error("your AWS credentials ({arn}) are of account {account}, but the role is to be made in account {role_account}: use that account's admin credentials")]
    OtherAccount {
        arn: String,
        account: String,
        role_account: String,
    },
    #[error("{step} failed: {error}; {undone}")]
    Failed {
        step: String,
        error: String,
        undone: String,
    },
    #[error("CloudAccount {account} was not ready within {deadline:?}: {why}")]
    NotReady {
        account: String,
        deadline: Duration,
        why: String,
    },
    #[error("CloudAccount {account} is used by ComputeCluster {users}: delete them (or point them at another account) first")]
    InUse { account: String, users: String },
    #[error("{0}")]
    Aws(#[from] AwsError),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

type Result<T, E = ConnectError> = std::result::Result<T, E>;

/// The role a CloudAccount names, split into its parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleName {
    pub account_id: String,
    pub path: String,
    pub name: String,
}

/// `arn:PARTITION:iam::ACCOUNT:role/PATH/NAME`.
pub fn role_name(arn: &str) -> Option<RoleName> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [_, _, "iam", "", account, resource] = parts.as_slice() else {
        return None;
    };
    let rest = resource.strip_prefix("role/")?;
    let (path, name) = match rest.rsplit_once('/') {
        Some((path, name)) => (format!("/{path}/"), name),
        None => ("/".to_string(), rest),
    };
    Some(RoleName {
        account_id: account.to_string(),
        path,
        name: name.to_string(),
    })
}

/// What connect wants in the account.
#[derive(Clone, Debug, PartialEq)]
pub struct Wanted {
    /// `NAMESPACE/NAME` of the CloudAccount: the value of the connect tag.
    pub label: String,
    /// The cross-account role's tags: the connect tag, the installation
    /// (which the operator's identity policy requires) and the
    /// CloudAccount's UID.
    pub role_tags: BTreeMap<String, String>,
    pub role: RoleName,
    pub trust: Value,
    /// Inline policies on the cross-account role, by name.
    pub policies: BTreeMap<String, Value>,
    /// Customer-managed policies, by name: attached to it, but for the
    /// nodes' grants ([`Wanted::for_the_role`]).
    pub managed: BTreeMap<String, Value>,
    /// The shared node identity: role and profile of this name.
    pub node: Option<NodeIdentity>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeIdentity {
    pub name: String,
    /// Managed policies on the node role.
    pub policies: Vec<String>,
}

/// What connect found of it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Found {
    pub role: Option<ObservedRole>,
    pub node_role: Option<ObservedRole>,
    pub node_profile: Option<ObservedProfile>,
    /// The managed policies of the role's that exist, by name: those
    /// wanted and those of connect's attached to the role.
    pub managed: BTreeMap<String, ObservedPolicy>,
}

impl Wanted {
    /// The ARN of the role's managed policy `name`.
    pub fn policy_arn(&self, name: &str) -> String {
        policy_arn(&self.role.account_id, name)
    }

    /// Whether managed policy `name` is attached to the role itself (the
    /// nodes' grants are for node roles).
    fn for_the_role(&self, name: &str) -> bool {
        name != managed_policy_name(&self.role.name, NODES_POLICY)
    }

    /// Whether managed policy `arn` is one of connect's for this role.
    fn is_ours(&self, arn: &str) -> bool {
        let account = arn.rsplit_once(":policy/").map(|(account, _)| account);
        account.is_some_and(|a| a.ends_with(&self.role.account_id))
            && named_for(&self.role.name, arn)
    }
}

/// Whether managed policy `arn` is named as connect names role `role`'s.
fn named_for(role: &str, arn: &str) -> bool {
    let prefix = managed_policy_name(role, POLICY_PREFIX);
    arn.rsplit_once(":policy/")
        .is_some_and(|(_, name)| name.starts_with(&prefix))
}

/// One write, in the order they are made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    CreateRole,
    /// A role an earlier connect made, without its installation tags.
    TagRole,
    UpdateTrust,
    PutPolicy(String),
    DeletePolicy(String),
    /// A managed policy made, with its document and connect's tag.
    CreateManaged(String),
    /// A managed policy's document made its default version.
    UpdateManaged(String),
    AttachManaged(String),
    /// A managed policy detached and deleted.
    RemoveManaged(String),
    CreateNodeRole,
    AttachNodePolicy(String),
    DetachNodePolicy(String),
    CreateNodeProfile,
    AddNodeRole,
}

impl Change {
    fn describe(&self, w: &Wanted) -> String {
        let node = w.node.as_ref().map(|n| n.name.as_str()).unwrap_or_default();
        let role = &w.role.name;
        match self {
            Change::CreateRole => {
                format!("create role {role} (trust: {})", trust_summary(&w.trust))
            }
            Change::TagRole => {
                format!("tag role {role} with its installation and CloudAccount UID")
            }
            Change::UpdateTrust => format!(
                "put back role {role}'s trust policy ({})",
                trust_summary(&w.trust)
            ),
            Change::PutPolicy(p) => format!("put inline policy {p} on role {role}"),
            Change::DeletePolicy(p) => format!("delete inline policy {p} from role {role}"),
            Change::CreateManaged(p) => format!("create managed policy {p}"),
            Change::UpdateManaged(p) => format!("put a new version of managed policy {p}"),
            Change::AttachManaged(p) => format!("attach managed policy {p} to role {role}"),
            Change::RemoveManaged(p) => {
                format!("detach managed policy {p} from role {role} and delete it")
            }
            Change::CreateNodeRole => format!("create node role {node} (trusted by EC2)"),
            Change::AttachNodePolicy(a) => format!("attach {a} to node role {node}"),
            Change::DetachNodePolicy(a) => format!("detach {a} from node role {node}"),
            Change::CreateNodeProfile => format!("create instance profile {node}"),
            Change::AddNodeRole => format!("add role {node} to instance profile {node}"),
        }
    }
}

fn trust_summary(trust: &Value) -> String {
    let s = &trust["Statement"][0];
    let principal = s["Principal"]["AWS"].as_str().unwrap_or("?");
    match s["Condition"]["StringEquals"]["sts:ExternalId"].as_str() {
        Some(id) => format!("{principal} with sts:ExternalId {id}"),
        None => format!("{principal}, no external ID"),
    }
}

/// Whether `tags` say connect made it for CloudAccount `label`.
fn connected_for(tags: &BTreeMap<String, String>, label: &str) -> bool {
    tags.get(CONNECTED).map(String::as_str) == Some(label)
}

fn refuse_foreign(
    what: &'static str,
    name: &str,
    tags: &BTreeMap<String, String>,
    label: &str,
) -> Result<()> {
    if connected_for(tags, label) {
        return Ok(());
    }
    let whose = match tags.get(CONNECTED) {
        Some(other) => format!("it was connected for CloudAccount {other}"),
        None => format!("it has no {CONNECTED} tag: `connect` did not make it"),
    };
    Err(ConnectError::Foreign {
        what,
        name: name.to_string(),
        whose,
    })
}

/// The writes that bring `found` to `wanted`. Refused, before any write,
/// when a name is taken by something connect did not make for this account.
pub fn plan(wanted: &Wanted, found: &Found) -> Result<Vec<Change>> {
    let mut steps = plan_role(wanted, found)?;
    if let Some(node) = &wanted.node {
        steps.extend(plan_node(node, found, &wanted.label)?);
    }
    Ok(steps)
}

/// The cross-account role's steps: made, or its trust and inline policies
/// brought to what is wanted.
fn plan_role(wanted: &Wanted, found: &Found) -> Result<Vec<Change>> {
    let mut steps = Vec::new();
    match &found.role {
        None => {
            steps.push(Change::CreateRole);
            steps.extend(wanted.policies.keys().cloned().map(Change::PutPolicy));
            steps.extend(plan_managed(wanted, found, &[])?);
        }
        Some(role) => {
            refuse_foreign("role", &wanted.role.name, &role.tags, &wanted.label)?;
            if (wanted.role_tags.iter()).any(|(k, v)| role.tags.get(k) != Some(v)) {
                steps.push(Change::TagRole);
            }
            if role.trust != wanted.trust {
                steps.push(Change::UpdateTrust);
            }
            // Before any inline change: a part moving from inline to
            // managed is never missing in between.
            steps.extend(plan_managed(wanted, found, &role.attached)?);
            for (name, doc) in &wanted.policies {
                if role.inline.get(name) != Some(doc) {
                    steps.push(Change::PutPolicy(name.clone()));
                }
            }
            for name in role.inline.keys() {
                if name.starts_with(POLICY_PREFIX) && !wanted.policies.contains_key(name) {
                    steps.push(Change::DeletePolicy(name.clone()));
                }
            }
        }
    }
    Ok(steps)
}

/// The managed policies' steps: each wanted one made (or its document put
/// back) and attached; connect's others, attached to the role, removed.
fn plan_managed(wanted: &Wanted, found: &Found, attached: &[String]) -> Result<Vec<Change>> {
    let mut steps = Vec::new();
    for (name, doc) in &wanted.managed {
        let arn = wanted.policy_arn(name);
        match found.managed.get(name) {
            None => steps.push(Change::CreateManaged(name.clone())),
            Some(policy) => {
                // A template's policy (CloudFormation tags none) attached
                // to the role connect knows as this account's, or its
                // nodes' grants (attached to none), is the account's.
                let template = !policy.tags.contains_key(CONNECTED)
                    && (attached.contains(&arn) || !wanted.for_the_role(name));
                if !template {
                    refuse_foreign("managed policy", name, &policy.tags, &wanted.label)?;
                }
                if policy.document != *doc {
                    steps.push(Change::UpdateManaged(name.clone()));
                }
            }
        }
        if wanted.for_the_role(name) && !attached.contains(&arn) {
            steps.push(Change::AttachManaged(name.clone()));
        }
    }
    for (name, policy) in &found.managed {
        if wanted.managed.contains_key(name) || !wanted.is_ours(&policy.arn) {
            continue;
        }
        if connected_for(&policy.tags, &wanted.label) {
            steps.push(Change::RemoveManaged(name.clone()));
        }
    }
    Ok(steps)
}

/// The shared node identity's steps: its role (trusting EC2 alone, with the
/// wanted managed policies) and instance profile.
fn plan_node(node: &NodeIdentity, found: &Found, label: &str) -> Result<Vec<Change>> {
    let mut steps = Vec::new();
    let trust: Value = serde_json::from_str(EC2_TRUST).unwrap_or(Value::Null);
    match &found.node_role {
        None => {
            steps.push(Change::CreateNodeRole);
            steps.extend(node.policies.iter().cloned().map(Change::AttachNodePolicy));
        }
        Some(role) => {
            refuse_foreign("role", &node.name, &role.tags, label)?;
            if role.trust != trust {
                return Err(ConnectError::NodeRoleTrust {
                    name: node.name.clone(),
                });
            }
            for arn in &node.policies {
                if !role.attached.contains(arn) {
                    steps.push(Change::AttachNodePolicy(arn.clone()));
                }
            }
            for arn in &role.attached {
                if !node.policies.contains(arn) {
                    steps.push(Change::DetachNodePolicy(arn.clone()));
                }
            }
        }
    }
    match &found.node_profile {
        None => {
            steps.push(Change::CreateNodeProfile);
            steps.push(Change::AddNodeRole);
        }
        Some(profile) => {
            refuse_foreign("instance profile", &node.name, &profile.tags, label)?;
            if !profile.roles.contains(&node.name) {
                if !profile.roles.is_empty() {
                    return Err(ConnectError::ProfileHoldsRole {
                        name: node.name.clone(),
                        roles: profile.roles.join(", "),
                    });
                }
                steps.push(Change::AddNodeRole);
            }
        }
    }
    Ok(steps)
}

/// The trust policy: `principal` may assume the role with `external_id`
/// (none: Secret-based credentials whose account gives none), in sessions
/// tagged with the CloudAccount's `namespace`.
pub fn trust(principal: &str, external_id: Option<&str>, namespace: &str) -> Value {
    iam_policy::trust_policy(principal, external_id, Some(namespace))
}

/// Everything connect needs from the CloudAccount and the flags.
#[derive(Clone, Debug)]
pub struct Inputs {
    pub wanted: Wanted,
    pub options: PolicyOptions,
    pub external_id: Option<String>,
    pub principal: String,
    pub region: String,
}

/// Reads what connect needs from the CloudAccount: refused, with what to
/// do, when the account cannot be connected.
pub async fn inputs(client: &Client, args: &ConnectArgs, account: &CloudAccount) -> Result<Inputs> {
    let label = format!(
        "{}/{}",
        account.namespace().unwrap_or_default(),
        account.name_any()
    );
    let spec = &account.spec;
    let (role, principal, installation) = named_and_published(args, account, &label)?;
    let external_id = external_id_of(client, account, &label).await?;
    if args.ongoing && spec.node_instance_profile_name.is_none() {
        return Err(ConnectError::NoSharedNodeIdentity { account: label });
    }
    let grants = managed_policy_name(&role.name, NODES_POLICY);
    let options = PolicyOptions {
        installation,
        managed_policy_arns: args.managed_policy_arns.clone(),
        permissions_boundary: spec.permissions_boundary_arn.clone(),
        pass_roles: args.pass_role.clone(),
        shared_node_role: spec.node_instance_profile_name.clone(),
        image_owners: spec.image_owners.clone(),
        kms_key_arns: spec.kms_key_arns.clone(),
        adopt: false,
        node_grants_arn: (!args.ongoing).then(|| policy_arn(&role.account_id, &grants)),
    };
    let (policies, managed) = role_policies(&options, &role.name, args.ongoing);
    let node = spec
        .node_instance_profile_name
        .as_ref()
        .map(|name| NodeIdentity {
            name: name.clone(),
            policies: args.node_policy_arns.clone(),
        });
    Ok(Inputs {
        wanted: Wanted {
            role_tags: role_tags(
                &label,
                &options.installation,
                &account.uid().unwrap_or_default(),
            ),
            label,
            trust: trust(
                &principal,
                external_id.as_deref(),
                &account.namespace().unwrap_or_default(),
            ),
            role,
            policies,
            managed,
            node,
        },
        options,
        external_id,
        principal,
        region: spec.region.clone(),
    })
}

/// The role the account names, and the principal and installation it
/// publishes (or the arguments give): refused, with what to do, when one
/// is missing.
fn named_and_published(
    args: &ConnectArgs,
    account: &CloudAccount,
    label: &str,
) -> Result<(RoleName, String, String)> {
    let status = account.status.clone().unwrap_or_default();
    let arn = account
        .spec
        .role_arn
        .as_deref()
        .ok_or_else(|| ConnectError::NoRole {
            account: label.to_string(),
            hint: ": set the role to make, e.g. arn:aws:iam::ACCOUNT:role/byoc-cross-account",
        })?;
    let role = role_name(arn).ok_or_else(|| ConnectError::NotARole { arn: arn.into() })?;
    let unpublished = |field, why| ConnectError::NotPublished {
        account: label.to_string(),
        field,
        why,
    };
    let principal = (args.principal.clone().or(status.principal)).ok_or_else(|| {
        unpublished("principal", "the operator has not looked at it, or its base credentials are refused (see its conditions); or give --principal")
    })?;
    let installation = (args.installation.clone().or(status.installation)).ok_or_else(|| {
        unpublished(
            "installation",
            "the operator has not looked at it; or give --installation (`byoc-operator version`)",
        )
    })?;
    Ok((role, principal, installation))
}

/// The external ID the role's trust must require: the one the operator
/// publishes, the spec's, or the account's Secret's.
async fn external_id_of(
    client: &Client,
    account: &CloudAccount,
    label: &str,
) -> Result<Option<String>> {
    let spec = &account.spec;
    let published = account.status.as_ref().and_then(|s| s.external_id.as_ref());
    match (published, &spec.external_id, &spec.credentials_secret_ref) {
        (Some(id), _, _) | (None, Some(id), _) => Ok(Some(id.clone())),
        (None, None, Some(secret)) => {
            let ns = account.namespace().unwrap_or_default();
            secret_external_id(client, &ns, &secret.name).await
        }
        (None, None, None) => Err(ConnectError::NotPublished {
            account: label.to_string(),
            field: "externalId",
            why: "its namespace may not use the operator's identity, or the operator has not looked at it (see its conditions)",
        }),
    }
}

/// The role's inline policies by name (the ongoing part), and its managed
/// ones (the setup part, unless `ongoing` alone is asked for).
type Policies = BTreeMap<String, Value>;

fn role_policies(options: &PolicyOptions, role: &str, ongoing: bool) -> (Policies, Policies) {
    let mut inline = BTreeMap::new();
    inline.insert(
        ONGOING_POLICY.to_string(),
        iam_policy::policy_part(options, PolicyPart::Ongoing),
    );
    let mut managed = BTreeMap::new();
    managed.insert(
        managed_policy_name(role, STORAGE_POLICY),
        iam_policy::policy_part(options, PolicyPart::Storage),
    );
    if !ongoing {
        managed.insert(
            managed_policy_name(role, SETUP_POLICY),
            iam_policy::policy_part(options, PolicyPart::Setup),
        );
        managed.insert(
            managed_policy_name(role, NODES_POLICY),
            iam_policy::nodes_policy(),
        );
    }
    (inline, managed)
}

/// The Secret key `EXTERNAL_ID`, when the account's Secret has one.
async fn secret_external_id(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<String>> {
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), namespace);
    let Some(secret) = secrets.get_opt(name).await? else {
        return Ok(None);
    };
    Ok(secret
        .data
        .and_then(|d| d.get(crate::account::credentials::EXTERNAL_ID).cloned())
        .and_then(|v| String::from_utf8(v.0).ok()))
}

async fn cloud_account(client: &Client, account: &str) -> Result<CloudAccount> {
    let (namespace, name) = account.split_once('/').ok_or(ConnectError::AccountName)?;
    Api::<CloudAccount>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await?
        .ok_or_else(|| ConnectError::NotFound {
            account: account.to_string(),
        })
}

async fn observe(c: &AwsClients, wanted: &Wanted) -> Result<Found> {
    let node = wanted.node.as_ref().map(|n| n.name.as_str());
    let (role, node_role, node_profile) = tokio::try_join!(
        admin::get_role(c, &wanted.role.name),
        async {
            match node {
                Some(n) => admin::get_role(c, n).await,
                None => Ok(None),
            }
        },
        async {
            match node {
                Some(n) => admin::get_instance_profile(c, n).await,
                None => Ok(None),
            }
        },
    )?;
    let attached = role
        .as_ref()
        .map(|r| r.attached.clone())
        .unwrap_or_default();
    let wanted_arns = wanted.managed.keys().map(|n| wanted.policy_arn(n));
    let ours = attached.into_iter().filter(|a| wanted.is_ours(a));
    let mut arns: Vec<String> = wanted_arns.chain(ours).collect();
    arns.sort();
    arns.dedup();
    let mut managed = BTreeMap::new();
    for arn in arns {
        if let Some(policy) = admin::get_policy(c, &arn).await? {
            let name = arn.rsplit_once('/').map(|(_, n)| n.to_string());
            managed.insert(name.unwrap_or_default(), policy);
        }
    }
    Ok(Found {
        role,
        node_role,
        node_profile,
        managed,
    })
}

/// The admin's clients, refused when they are of another account than the role's.
async fn admin_clients(region: &str, role: &RoleName) -> Result<AwsClients> {
    let config = crate::aws::config::from_environment(region).await;
    let (account, arn) = admin::caller_identity(&config).await?;
    if account != role.account_id {
        return Err(ConnectError::OtherAccount {
            arn,
            account,
            role_account: role.account_id.clone(),
        });
    }
    let metrics = crate::metrics::Metrics::new();
    Ok(AwsClients::new(&config, region, metrics.aws_interceptor()))
}

fn tags(label: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(CONNECTED.to_string(), label.to_string())])
}

/// The cross-account role's tags.
pub fn role_tags(label: &str, installation: &str, uid: &str) -> BTreeMap<String, String> {
    let mut t = tags(label);
    t.insert(CONNECTED_INSTALLATION.into(), installation.into());
    t.insert(CONNECTED_UID.into(), uid.into());
    t
}

/// Makes the steps in order; when one fails, removes what this run
/// created, and says which call failed.
async fn apply(c: &AwsClients, w: &Wanted, steps: &[Change]) -> Result<()> {
    let mut created: Vec<&Change> = Vec::new();
    for step in steps {
        match make(c, w, step).await {
            Ok(()) => {
                println!("done: {}", step.describe(w));
                if matches!(
                    step,
                    Change::CreateRole
                        | Change::CreateNodeRole
                        | Change::CreateNodeProfile
                        | Change::CreateManaged(_)
                ) {
                    created.push(step);
                }
            }
            Err(e) => {
                let mut left = Vec::new();
                for made in created.iter().rev() {
                    if let Err(undo) = unmake(c, w, made).await {
                        left.push(format!("{} ({undo})", made.describe(w)));
                    }
                }
                let undone = if created.is_empty() {
                    "nothing was made".to_string()
                } else if left.is_empty() {
                    "what this run made was removed again".to_string()
                } else {
                    format!("could not remove again: {}", left.join("; "))
                };
                return Err(ConnectError::Failed {
                    step: step.describe(w),
                    error: e.to_string(),
                    undone,
                });
            }
        }
    }
    Ok(())
}

async fn make(c: &AwsClients, w: &Wanted, step: &Change) -> Result<(), AwsError> {
    let node = w.node.as_ref().map(|n| n.name.as_str()).unwrap_or_default();
    let label = &w.label;
    match step {
        Change::CreateRole => {
            let description = format!("byoc-operator: CloudAccount {label}");
            admin::create_role(
                c,
                &w.role.name,
                &w.role.path,
                &w.trust,
                &w.role_tags,
                &description,
            )
            .await
        }
        Change::TagRole => admin::tag_role(c, &w.role.name, &w.role_tags).await,
        Change::UpdateTrust => admin::update_trust(c, &w.role.name, &w.trust).await,
        Change::PutPolicy(p) => match w.policies.get(p) {
            Some(doc) => admin::put_inline(c, &w.role.name, p, doc).await,
            None => Ok(()),
        },
        Change::DeletePolicy(p) => admin::delete_inline(c, &w.role.name, p).await,
        Change::CreateManaged(p) => {
            let doc = w.managed.get(p).unwrap_or(&Value::Null);
            let description = format!("byoc-operator: CloudAccount {label}");
            admin::create_policy(c, p, doc, &tags(label), &description).await
        }
        Change::UpdateManaged(p) => {
            let doc = w.managed.get(p).unwrap_or(&Value::Null);
            admin::set_policy_document(c, &w.policy_arn(p), doc).await
        }
        Change::AttachManaged(p) => admin::attach(c, &w.role.name, &w.policy_arn(p)).await,
        Change::RemoveManaged(p) => admin::delete_policy(c, &w.role.name, &w.policy_arn(p)).await,
        Change::CreateNodeRole => {
            let trust: Value = serde_json::from_str(EC2_TRUST).unwrap_or(Value::Null);
            let description =
                format!("byoc-operator: shared node identity of CloudAccount {label}");
            admin::create_role(c, node, "/", &trust, &tags(label), &description).await
        }
        Change::AttachNodePolicy(a) => admin::attach(c, node, a).await,
        Change::DetachNodePolicy(a) => admin::detach(c, node, a).await,
        Change::CreateNodeProfile => admin::create_instance_profile(c, node, &tags(label)).await,
        Change::AddNodeRole => crate::aws::instance_profile::add_role(c, node).await,
    }
}

/// Removes what a create step made (with what was put on it since).
async fn unmake(c: &AwsClients, w: &Wanted, step: &Change) -> Result<(), AwsError> {
    let node = w.node.as_ref().map(|n| n.name.as_str()).unwrap_or_default();
    match step {
        Change::CreateRole => delete_role_fully(c, &w.role.name, &w.label).await,
        Change::CreateManaged(p) => admin::delete_policy(c, &w.role.name, &w.policy_arn(p)).await,
        Change::CreateNodeRole => delete_role_fully(c, node, &w.label).await,
        Change::CreateNodeProfile => delete_profile_fully(c, node).await,
        _ => Ok(()),
    }
}

/// Deletes role `name` with its inline policies; detaches its managed
/// ones, and deletes those connect made for it for CloudAccount `label`.
async fn delete_role_fully(c: &AwsClients, name: &str, label: &str) -> Result<(), AwsError> {
    if let Some(role) = admin::get_role(c, name).await? {
        for policy in role.inline.keys() {
            admin::delete_inline(c, name, policy).await?;
        }
        for arn in &role.attached {
            let made = match named_for(name, arn) {
                true => admin::get_policy(c, arn).await?,
                false => None,
            };
            match made.filter(|p| connected_for(&p.tags, label)) {
                Some(_) => admin::delete_policy(c, name, arn).await?,
                None => admin::detach(c, name, arn).await?,
            }
        }
    }
    admin::delete_role(c, name).await
}

async fn delete_profile_fully(c: &AwsClients, name: &str) -> Result<(), AwsError> {
    if let Some(profile) = admin::get_instance_profile(c, name).await? {
        for role in &profile.roles {
            admin::remove_role(c, name, role).await?;
        }
    }
    admin::delete_instance_profile(c, name).await
}

/// `connect aws`.
pub async fn connect(args: ConnectArgs) -> Result<()> {
    let client = Client::try_default().await?;
    let account = cloud_account(&client, &args.account).await?;
    let inputs = inputs(&client, &args, &account).await?;
    let w = &inputs.wanted;
    if args.cloudformation {
        let template = cloudformation(&inputs);
        println!(
            "{}",
            serde_json::to_string_pretty(&template).unwrap_or_default()
        );
        eprintln!(
            "{}",
            quick_create_url(&inputs, args.template_url.as_deref(), &args.stack_name)
        );
        return Ok(());
    }
    let c = admin_clients(&inputs.region, &w.role).await?;
    let found = observe(&c, w).await?;
    let steps = plan(w, &found)?;
    if args.dry_run {
        print_plan(w, &steps);
        return Ok(());
    }
    if steps.is_empty() {
        println!(
            "role {} is as connect makes it: nothing to change",
            w.role.name
        );
    }
    apply(&c, w, &steps).await?;
    let arn = format!(
        "arn:aws:iam::{}:role{}{}",
        w.role.account_id, w.role.path, w.role.name
    );
    println!("role {arn} trusts {}", trust_summary(&w.trust));
    if let Some(node) = &w.node {
        println!(
            "shared node identity: instance profile {} (role {})",
            node.name, node.name
        );
    }
    if args.wait.is_zero() {
        return Ok(());
    }
    wait_ready(&client, &account, args.wait).await
}

fn print_plan(w: &Wanted, steps: &[Change]) {
    if steps.is_empty() {
        println!("nothing to change");
    }
    for step in steps {
        println!("would {}", step.describe(w));
    }
    let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default();
    println!(
        "--- trust policy of role {}\n{}",
        w.role.name,
        pretty(&w.trust)
    );
    for (name, doc) in &w.policies {
        println!("--- inline policy {name}\n{}", pretty(doc));
    }
    for (name, doc) in &w.managed {
        println!("--- managed policy {name}\n{}", pretty(doc));
    }
}

/// Nudges the operator to verify the account again (IAM takes seconds to
/// make a new role assumable) until it is ready or `deadline` passes.
async fn wait_ready(client: &Client, account: &CloudAccount, deadline: Duration) -> Result<()> {
    let namespace = account.namespace().unwrap_or_default();
    let name = account.name_any();
    let api: Api<CloudAccount> = Api::namespaced(client.clone(), &namespace);
    let start = Instant::now();
    let mut nudged: Option<Instant> = None;
    loop {
        let now = api.get(&name).await?;
        let status = now.status.clone().unwrap_or_default();
        let current = status.observed_generation == now.metadata.generation;
        let nudge_seen = nudged.is_some_and(|_| current);
        if status.phase == Some(AccountPhase::Ready) && (nudge_seen || nudged.is_none()) {
            let arn = status.arn.unwrap_or_default();
            println!("CloudAccount {namespace}/{name} is ready: verified as {arn}");
            return Ok(());
        }
        if start.elapsed() >= deadline {
            let why = status
                .conditions
                .iter()
                .find(|c| c.type_ == "Ready")
                .map(|c| c.message.clone())
                .unwrap_or_else(|| "not verified yet".into());
            return Err(ConnectError::NotReady {
                account: format!("{namespace}/{name}"),
                deadline,
                why,
            });
        }
        if nudged.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
            let stamp = jiff::Timestamp::now().to_string();
            let patch = json!({"metadata": {"annotations": {CONNECTED_AT: stamp}}});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            nudged = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `disconnect aws`.
pub async fn disconnect(args: DisconnectArgs) -> Result<()> {
    let client = Client::try_default().await?;
    let account = cloud_account(&client, &args.account).await?;
    let users = users(&client, &account).await?;
    if !users.is_empty() {
        return Err(ConnectError::InUse {
            account: args.account.clone(),
            users: users.join(", "),
        });
    }
    let label = args.account.clone();
    let arn = account.spec.role_arn.clone().unwrap_or_default();
    let role = role_name(&arn).ok_or_else(|| ConnectError::NoRole {
        account: label.clone(),
        hint: "",
    })?;
    let c = admin_clients(&account.spec.region, &role).await?;
    let node = account.spec.node_instance_profile_name.clone();
    let mut removals: Vec<(String, &str, String)> = Vec::new();
    if let Some(n) = &node {
        removals.push(("instance profile".into(), "profile", n.clone()));
        removals.push(("node role".into(), "role", n.clone()));
    }
    removals.push(("role".into(), "role", role.name.clone()));
    for (what, kind, name) in removals {
        let tags = match kind {
            "profile" => admin::get_instance_profile(&c, &name)
                .await?
                .map(|p| p.tags),
            _ => admin::get_role(&c, &name).await?.map(|r| r.tags),
        };
        let Some(tags) = tags else {
            println!("{what} {name}: not there");
            continue;
        };
        if !connected_for(&tags, &label) {
            println!("{what} {name}: not made by connect for CloudAccount {label}; left untouched");
            continue;
        }
        if args.dry_run {
            println!("would delete {what} {name}");
            continue;
        }
        match kind {
            "profile" => delete_profile_fully(&c, &name).await?,
            _ => delete_role_fully(&c, &name, &label).await?,
        }
        println!("deleted {what} {name}");
    }
    remove_node_grants(&c, &role, &label, args.dry_run).await
}

/// Deletes the nodes' grants connect made for the role (refused by AWS
/// while a node role still holds it: a retained cluster's).
async fn remove_node_grants(
    c: &AwsClients,
    role: &RoleName,
    label: &str,
    dry_run: bool,
) -> Result<()> {
    let name = managed_policy_name(&role.name, NODES_POLICY);
    let arn = policy_arn(&role.account_id, &name);
    match admin::get_policy(c, &arn).await? {
        None => println!("managed policy {name}: not there"),
        Some(p) if !connected_for(&p.tags, label) => {
            println!("managed policy {name}: not made by connect for CloudAccount {label}; left untouched")
        }
        Some(_) if dry_run => println!("would delete managed policy {name}"),
        Some(_) => {
            admin::delete_policy(c, &role.name, &arn).await?;
            println!("deleted managed policy {name}");
        }
    }
    Ok(())
}

/// The ComputeClusters (of every namespace) that use the account, as the
/// controller counts them ([`in_use::users`]).
async fn users(client: &Client, account: &CloudAccount) -> Result<Vec<String>> {
    let all: Api<ComputeCluster> = Api::all(client.clone());
    let listed = all.list(&ListParams::default()).await?;
    Ok(in_use::users(account, &listed.items))
}

/// Placeholders put through the policy generator and turned into the
/// template's parameters.
const CF_BOUNDARY: &str = "@@PermissionsBoundaryArn@@";
const CF_MANAGED: &str = "@@ManagedPolicyArns@@";
const CF_NODE_GRANTS: &str = "@@NodeGrantsArn@@";

/// A CloudFormation template making what `connect` makes: the role with
/// the same trust and inline policies, and the shared node identity.
/// Parameters (defaults: what `connect` would use): the principal, the
/// external ID, the role's name, the managed policy allow-list, the
/// permissions boundary.
pub fn cloudformation(i: &Inputs) -> Value {
    let w = &i.wanted;
    let (policies, managed) = cf_policies(i);
    let mut trust = w.trust.clone();
    for statement in trust["Statement"].as_array_mut().into_iter().flatten() {
        statement["Principal"]["AWS"] = json!({"Ref": "PrincipalArn"});
    }
    if i.external_id.is_some() {
        trust["Statement"][0]["Condition"]["StringEquals"]["sts:ExternalId"] =
            json!({"Ref": "ExternalId"});
    }
    let tags: Vec<Value> = (w.role_tags.iter())
        .map(|(k, v)| json!({"Key": k, "Value": v}))
        .collect();
    let parameters = cf_parameters(i);
    let mut resources = json!({
        "CrossAccountRole": {
            "Type": "AWS::IAM::Role",
            "Properties": {
                "RoleName": {"Ref": "RoleName"},
                "Path": w.role.path,
                "Description": format!("byoc-operator: CloudAccount {}", w.label),
                "AssumeRolePolicyDocument": trust,
                "Policies": policies,
                "Tags": tags,
            }
        }
    });
    for (id, policy) in managed {
        resources[id] = policy;
    }
    let mut outputs = json!({
        "RoleArn": {"Value": {"Fn::GetAtt": ["CrossAccountRole", "Arn"]}},
    });
    if let Some(node) = &w.node {
        let ec2: Value = serde_json::from_str(EC2_TRUST).unwrap_or(Value::Null);
        resources["NodeRole"] = json!({
            "Type": "AWS::IAM::Role",
            "Properties": {"RoleName": node.name, "AssumeRolePolicyDocument": ec2,
                "ManagedPolicyArns": node.policies, "Tags": tags}
        });
        resources["NodeInstanceProfile"] = json!({
            "Type": "AWS::IAM::InstanceProfile",
            "Properties": {"InstanceProfileName": node.name, "Roles": [{"Ref": "NodeRole"}]}
        });
        outputs["NodeInstanceProfileName"] = json!({"Value": {"Ref": "NodeInstanceProfile"}});
    }
    if i.external_id.is_some() {
        outputs["ExternalId"] = json!({"Value": {"Ref": "ExternalId"}});
    }
    json!({
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": format!("byoc-operator: the cross-account role of CloudAccount {}", w.label),
        "Parameters": parameters,
        "Conditions": {
            "HasBoundary": {"Fn::Not": [{"Fn::Equals": [{"Ref": "PermissionsBoundaryArn"}, ""]}]}
        },
        "Resources": resources,
        "Outputs": outputs,
    })
}

/// The role's inline policies, and its managed policies as the template's
/// resources by logical ID (the setup part, attached to the role, and the
/// nodes' grants), with the template's parameters in them.
fn cf_policies(i: &Inputs) -> (Vec<Value>, BTreeMap<&'static str, Value>) {
    let mut options = i.options.clone();
    if !options.managed_policy_arns.is_empty() {
        options.managed_policy_arns = vec![CF_MANAGED.into()];
    }
    options.permissions_boundary = Some(CF_BOUNDARY.into());
    if options.node_grants_arn.is_some() {
        options.node_grants_arn = Some(CF_NODE_GRANTS.into());
    }
    let part = |p| parameterised(iam_policy::policy_part(&options, p));
    let inline = (i.wanted.policies.keys())
        .map(|name| json!({"PolicyName": name, "PolicyDocument": part(PolicyPart::Ongoing)}))
        .collect();
    let role = &i.wanted.role.name;
    let parts = [
        ("SetupPolicy", SETUP_POLICY, part(PolicyPart::Setup), true),
        (
            "StoragePolicy",
            STORAGE_POLICY,
            part(PolicyPart::Storage),
            true,
        ),
        (
            "NodesPolicy",
            NODES_POLICY,
            iam_policy::nodes_policy(),
            false,
        ),
    ];
    let mut managed = BTreeMap::new();
    for (id, suffix, document, attached) in parts {
        if !i
            .wanted
            .managed
            .contains_key(&managed_policy_name(role, suffix))
        {
            continue;
        }
        let mut properties = json!({
            "ManagedPolicyName": {"Fn::Sub": managed_policy_name("${RoleName}", suffix)},
            "Description": format!("byoc-operator: CloudAccount {}", i.wanted.label),
            "PolicyDocument": document,
        });
        if attached {
            properties["Roles"] = json!([{"Ref": "CrossAccountRole"}]);
        }
        managed.insert(
            id,
            json!({"Type": "AWS::IAM::ManagedPolicy", "Properties": properties}),
        );
    }
    (inline, managed)
}

/// The template's parameters, defaulting to this account's values.
fn cf_parameters(i: &Inputs) -> Value {
    let w = &i.wanted;
    let mut parameters = json!({
        "PrincipalArn": {"Type": "String", "Default": i.principal,
            "Description": "The identity the role trusts: the CloudAccount's status.principal"},
        "RoleName": {"Type": "String", "Default": w.role.name,
            "Description": "The role's name: the last part of the CloudAccount's spec.roleArn"},
        "PermissionsBoundaryArn": {"Type": "String",
            "Default": i.options.permissions_boundary.clone().unwrap_or_default(),
            "Description": "The boundary every node role must carry (the CloudAccount's permissionsBoundaryArn); empty: none"},
    });
    if let Some(id) = &i.external_id {
        parameters["ExternalId"] = json!({"Type": "String", "Default": id,
            "Description": "The external ID the role requires: the CloudAccount's status.externalId"});
    }
    if !i.options.managed_policy_arns.is_empty() {
        parameters["ManagedPolicyArns"] = json!({"Type": "CommaDelimitedList",
            "Default": i.options.managed_policy_arns.join(","),
            "Description": "Managed policies node roles may get (iam.managedPolicyArns)"});
    }
    parameters
}

/// The placeholders of a generated policy turned into the template's
/// parameters; a condition key given the boundary placeholder is dropped
/// when no boundary is given.
fn parameterised(v: Value) -> Value {
    match v {
        Value::String(s) if s == CF_BOUNDARY => {
            json!({"Fn::If": ["HasBoundary", {"Ref": "PermissionsBoundaryArn"}, {"Ref": "AWS::NoValue"}]})
        }
        Value::String(s) if s == CF_NODE_GRANTS => {
            let name = managed_policy_name("${RoleName}", NODES_POLICY);
            json!({"Fn::Sub": policy_arn("${AWS::AccountId}", &name)})
        }
        Value::Array(items) if items.len() == 1 && items[0] == CF_MANAGED => {
            json!({"Ref": "ManagedPolicyArns"})
        }
        Value::Array(items) => Value::Array(items.into_iter().map(parameterised).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, parameterised(v)))
                .collect(),
        ),
        other => other,
    }
}

/// The console link that opens the template's stack with the parameters
/// filled in (the template must be hosted at `template_url`).
pub fn quick_create_url(i: &Inputs, template_url: Option<&str>, stack_name: &str) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("templateURL", template_url.unwrap_or("TEMPLATE_URL"));
    query.append_pair("stackName", stack_name);
    query.append_pair("param_PrincipalArn", &i.principal);
    query.append_pair("param_RoleName", &i.wanted.role.name);
    if let Some(id) = &i.external_id {
        query.append_pair("param_ExternalId", id);
    }
    if let Some(b) = &i.options.permissions_boundary {
        query.append_pair("param_PermissionsBoundaryArn", b);
    }
    if !i.options.managed_policy_arns.is_empty() {
        query.append_pair(
            "param_ManagedPolicyArns",
            &i.options.managed_policy_arns.join(","),
        );
    }
    let link = format!(
        "https://console.aws.amazon.com/cloudformation/home?region={}#/stacks/create/review?{}",
        i.region,
        query.finish()
    );
    match template_url {
        Some(_) => format!("quick-create link: {link}"),
        None => format!("quick-create link (host the template and give --template-url): {link}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted(node: bool) -> Wanted {
        Wanted {
            label: "team/acme".into(),
            role_tags: role_tags("team/acme", "inst-a", "uid-1"),
            role: RoleName {
                account_id: "123456789012".into(),
                path: "/".into(),
                name: "byoc-connected".into(),
            },
            trust: trust(
                "arn:aws:iam::123456789012:user/op",
                Some("byoc-x"),
                "team-a",
            ),
            policies: BTreeMap::from([(ONGOING_POLICY.to_string(), json!({"Statement": [1]}))]),
            managed: BTreeMap::from([(SETUP.to_string(), json!({"Statement": [2]}))]),
            node: node.then(|| NodeIdentity {
                name: "byoc-shared-nodes".into(),
                policies: vec!["arn:aws:iam::aws:policy/A".into()],
            }),
        }
    }

    /// The setup part's managed policy of `wanted`'s role.
    const SETUP: &str = "byoc-connected-byoc-operator-setup";

    fn as_found(w: &Wanted) -> Found {
        let tags = tags(&w.label);
        let managed: BTreeMap<String, ObservedPolicy> = (w.managed.iter())
            .map(|(name, doc)| {
                let p = ObservedPolicy {
                    arn: w.policy_arn(name),
                    document: doc.clone(),
                    tags: tags.clone(),
                };
                (name.clone(), p)
            })
            .collect();
        Found {
            role: Some(ObservedRole {
                arn: "arn".into(),
                trust: w.trust.clone(),
                tags: w.role_tags.clone(),
                inline: w.policies.clone(),
                attached: managed.values().map(|p| p.arn.clone()).collect(),
            }),
            managed,
            node_role: w.node.as_ref().map(|n| ObservedRole {
                arn: "arn".into(),
                trust: serde_json::from_str(EC2_TRUST).unwrap_or_default(),
                tags: tags.clone(),
                inline: BTreeMap::new(),
                attached: n.policies.clone(),
            }),
            node_profile: w.node.as_ref().map(|n| ObservedProfile {
                arn: "arn".into(),
                roles: vec![n.name.clone()],
                tags: tags.clone(),
            }),
        }
    }

    #[test]
    fn role_arns_split_into_account_path_and_name() {
        assert_eq!(
            role_name("arn:aws:iam::123456789012:role/byoc-cross-account"),
            Some(RoleName {
                account_id: "123456789012".into(),
                path: "/".into(),
                name: "byoc-cross-account".into()
            })
        );
        assert_eq!(
            role_name("arn:aws:iam::123456789012:role/teams/a/byoc"),
            Some(RoleName {
                account_id: "123456789012".into(),
                path: "/teams/a/".into(),
                name: "byoc".into()
            })
        );
        assert_eq!(role_name("arn:aws:iam::123456789012:user/x"), None);
    }

    #[test]
    fn a_fresh_account_gets_everything_and_a_connected_one_nothing() {
        let w = wanted(true);
        let steps = plan(&w, &Found::default()).unwrap_or_default();
        assert_eq!(
            steps,
            [
                Change::CreateRole,
                Change::PutPolicy(ONGOING_POLICY.into()),
                Change::CreateManaged(SETUP.into()),
                Change::AttachManaged(SETUP.into()),
                Change::CreateNodeRole,
                Change::AttachNodePolicy("arn:aws:iam::aws:policy/A".into()),
                Change::CreateNodeProfile,
                Change::AddNodeRole,
            ]
        );
        assert_eq!(
            plan(&w, &as_found(&w)).unwrap_or(vec![Change::CreateRole]),
            []
        );
        // A role an earlier connect made, with the connect tag alone: its
        // installation and UID tags are added (the operator's identity
        // policy requires the first).
        let mut earlier = as_found(&w);
        if let Some(role) = earlier.role.as_mut() {
            role.tags = tags(&w.label);
        }
        assert_eq!(plan(&w, &earlier).unwrap_or_default(), [Change::TagRole]);
    }

    #[test]
    fn what_changed_out_of_band_is_put_back_and_the_setup_policy_dropped_when_ongoing() {
        let w = wanted(false);
        let mut found = as_found(&w);
        if let Some(role) = found.role.as_mut() {
            role.inline
                .insert(ONGOING_POLICY.into(), json!({"Statement": ["*"]}));
            role.inline.insert("teams-own".into(), json!({}));
            role.trust = trust("arn:aws:iam::123456789012:user/someone", None, "team-a");
        }
        assert_eq!(
            plan(&w, &found).unwrap_or_default(),
            [
                Change::UpdateTrust,
                Change::PutPolicy(ONGOING_POLICY.into())
            ]
        );
        let mut ongoing = wanted(false);
        ongoing.managed.remove(SETUP);
        assert_eq!(
            plan(&ongoing, &as_found(&w)).unwrap_or_default(),
            [Change::RemoveManaged(SETUP.into())]
        );
        // The managed policy's document changed, or detached: put back.
        let mut found = as_found(&w);
        if let Some(p) = found.managed.get_mut(SETUP) {
            p.document = json!({"Statement": ["*"]});
        }
        if let Some(role) = found.role.as_mut() {
            role.attached.clear();
        }
        assert_eq!(
            plan(&w, &found).unwrap_or_default(),
            [
                Change::UpdateManaged(SETUP.into()),
                Change::AttachManaged(SETUP.into())
            ]
        );
    }

    /// A role an earlier connect gave the setup part inline: the managed
    /// policy is made and attached before the inline one goes.
    #[test]
    fn an_inline_setup_policy_moves_to_a_managed_one_never_missing_in_between() {
        let w = wanted(false);
        let mut found = as_found(&w);
        found.managed.clear();
        if let Some(role) = found.role.as_mut() {
            role.attached.clear();
            role.inline
                .insert(SETUP_POLICY.into(), json!({"Statement": [2]}));
        }
        assert_eq!(
            plan(&w, &found).unwrap_or_default(),
            [
                Change::CreateManaged(SETUP.into()),
                Change::AttachManaged(SETUP.into()),
                Change::DeletePolicy(SETUP_POLICY.into())
            ]
        );
        // A policy of that name connect did not make is refused: another
        // account's, or nobody's and not attached to the role.
        let mut other = as_found(&w);
        if let Some(p) = other.managed.get_mut(SETUP) {
            p.tags = tags("other/acme");
        }
        assert!(plan(&w, &other).is_err());
        let mut loose = as_found(&w);
        if let Some(p) = loose.managed.get_mut(SETUP) {
            p.tags.clear();
        }
        if let Some(role) = loose.role.as_mut() {
            role.attached.clear();
        }
        assert!(plan(&w, &loose).is_err());
        // A template's (CloudFormation tags none), attached to the role:
        // the account's.
        let mut stacked = as_found(&w);
        if let Some(p) = stacked.managed.get_mut(SETUP) {
            p.tags.clear();
        }
        assert_eq!(plan(&w, &stacked).unwrap_or(vec![Change::CreateRole]), []);
    }

    #[test]
    fn a_name_taken_by_what_connect_did_not_make_for_this_account_is_refused() {
        let w = wanted(true);
        for label in [None, Some("other/acme")] {
            let mut found = as_found(&w);
            if let Some(role) = found.role.as_mut() {
                role.tags = label.map(tags).unwrap_or_default();
            }
            let refused = plan(&w, &found);
            assert!(
                matches!(&refused, Err(e @ ConnectError::Foreign { .. }) if e.to_string().contains("left untouched")),
                "{refused:?}"
            );
            let mut found = as_found(&w);
            if let Some(profile) = found.node_profile.as_mut() {
                profile.tags = label.map(tags).unwrap_or_default();
            }
            assert!(plan(&w, &found).is_err(), "profile tagged {label:?}");
        }
    }

    #[test]
    fn the_template_takes_the_documents_connect_puts() {
        let options = PolicyOptions {
            installation: "inst".into(),
            managed_policy_arns: vec!["arn:aws:iam::aws:policy/A".into()],
            permissions_boundary: None,
            pass_roles: vec![],
            shared_node_role: None,
            ..Default::default()
        };
        let i = Inputs {
            wanted: wanted(false),
            options,
            external_id: Some("byoc-x".into()),
            principal: "arn:aws:iam::123456789012:user/op".into(),
            region: "us-east-1".into(),
        };
        let t = cloudformation(&i);
        let role = &t["Resources"]["CrossAccountRole"]["Properties"];
        assert_eq!(
            role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]["AWS"],
            json!({"Ref": "PrincipalArn"})
        );
        assert_eq!(t["Parameters"]["ExternalId"]["Default"], "byoc-x");
        let text = t.to_string();
        assert!(text.contains(r#"{"Ref":"ManagedPolicyArns"}"#), "{text}");
        assert!(!text.contains("@@"), "a placeholder is left: {text}");
        let url = quick_create_url(&i, Some("https://s3.amazonaws.com/b/t.json"), "s");
        assert!(url.contains("param_ExternalId=byoc-x"), "{url}");
    }
}
