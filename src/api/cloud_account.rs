//! `CloudAccount`: how the operator gets into an AWS account.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::patterns;

/// How to get into an AWS account: base credentials from a Secret (or the
/// operator's own ambient identity), then STS AssumeRole into `roleArn` and
/// each `roleChain` hop. The status shows the identity that was verified with
/// `sts:GetCallerIdentity`. Without `credentialsSecretRef` the operator's own
/// identity is used only in the namespaces the installation lists, only to
/// assume `roleArn`, and only with the external ID it generates
/// (`status.externalId`). While any ComputeCluster uses the account, the
/// account and its credentials Secret carry the finalizer `byoc.dev/in-use`:
/// deleting them waits until those clusters are gone, and their credentials
/// keep working for the clusters' cleanup meanwhile.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "byoc.dev",
    version = "v1alpha1",
    kind = "CloudAccount",
    namespaced,
    status = "CloudAccountStatus",
    shortname = "ca",
    category = "byoc",
    printcolumn = r#"{"name":"Account","type":"string","jsonPath":".status.accountId"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Clusters","type":"integer","jsonPath":".status.clusters"}"#,
    printcolumn = r#"{"name":"External ID","type":"string","priority":1,"jsonPath":".status.externalId"}"#,
    printcolumn = r#"{"name":"Principal","type":"string","priority":1,"jsonPath":".status.principal"}"#,
    printcolumn = r#"{"name":"Instances","type":"integer","priority":1,"jsonPath":".status.usage.instances"}"#,
    printcolumn = r#"{"name":"vCPUs","type":"integer","priority":1,"jsonPath":".status.usage.vcpus"}"#,
    printcolumn = r#"{"name":"GPUs","type":"integer","priority":1,"jsonPath":".status.usage.gpus"}"#,
    printcolumn = r#"{"name":"Price/h","type":"string","priority":1,"jsonPath":".status.usage.pricePerHour"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("!has(self.spec.roleChain) || size(self.spec.roleChain) == 0 || has(self.spec.roleArn)").message("spec.roleChain needs spec.roleArn: the chain starts from the first assumed role").field_path(".spec.roleChain")
)]
#[serde(rename_all = "camelCase")]
pub struct CloudAccountSpec {
    /// AWS region for STS calls and the default region of this account, e.g. `us-east-1`.
    #[schemars(regex(pattern = patterns::REGION))]
    pub region: String,

    /// Secret in the same namespace holding the base credentials:
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, optional `AWS_SESSION_TOKEN`
    /// and optional `EXTERNAL_ID`. Absent: the operator's own identity (env,
    /// web identity / IRSA, container or instance metadata).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretRef>,

    /// Role to assume in the target account, e.g. `arn:aws:iam::123456789012:role/byoc-cross-account`.
    /// Every session (each `roleChain` hop too) is tagged
    /// `byoc.dev/namespace` and `byoc.dev/cloud-account` with this
    /// account's namespace and name; the trust policy `connect` writes
    /// requires the namespace's tag. A role whose trust does not allow
    /// `sts:TagSession` is assumed untagged, and the `Ready` message says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = patterns::ROLE_ARN))]
    pub role_arn: Option<String>,

    /// External ID required by the role's trust policy, only with
    /// Secret-based base credentials (`credentialsSecretRef`); may instead be
    /// given as the Secret key `EXTERNAL_ID`. With the operator's own
    /// identity the operator generates it (`status.externalId`) and a value
    /// here is refused: a tenant could otherwise name another's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 1224), regex(pattern = patterns::EXTERNAL_ID))]
    pub external_id: Option<String>,

    /// Lifetime of each assumed-role session, 900 to 43200 seconds (default 3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 900, max = 43200))]
    pub session_duration_seconds: Option<i32>,

    /// Further roles assumed in order after `roleArn`, each from the previous one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    pub role_chain: Vec<RoleHop>,

    /// Other namespaces whose ComputeClusters may use this account. Default:
    /// none (only this namespace). `"*"` allows every namespace. A namespace
    /// removed keeps the account for its clusters' deletion only, for the
    /// operator's grace period; then their AWS resources are deleted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(length(max = 63), regex(pattern = patterns::NAMESPACE_OR_STAR)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub allowed_namespaces: Vec<String>,

    /// Managed policy set as the permissions boundary of every IAM role the
    /// operator creates through this account (the nodes' roles), e.g.
    /// `arn:aws:iam::123456789012:policy/boundary`, for organisations that
    /// require one on every created role. A role made without it gets it.
    /// Pair it with `byoc-operator iam-policy permissions
    /// --permissions-boundary ARN`, which allows CreateRole only with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = patterns::POLICY_ARN))]
    pub permissions_boundary_arn: Option<String>,

    /// The account's shared node identity: an instance profile (made by
    /// `byoc-operator connect aws`, its role of the same name) that every
    /// ComputeCluster of this account launches its nodes with unless it
    /// brings its own (`iam.instanceProfileName`). The operator then makes
    /// no IAM role or profile through this account, so its role needs no
    /// IAM write right, only `iam:PassRole` of this one role (`byoc-operator
    /// iam-policy permissions --ongoing`). A cluster that asks for a node
    /// role of its own (`iam.managedPolicyArns`) is `Stalled`
    /// (`SharedNodeIdentity`) before any AWS call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), regex(pattern = patterns::IAM_NAME))]
    pub node_instance_profile_name: Option<String>,

    /// AMI owners, beside Amazon and the account itself, whose images node
    /// groups may name (`nodeGroups[].imageId`): 12-digit account IDs. An
    /// image of any other owner is refused before launch (`Stalled`,
    /// `ImageOwnerNotAllowed`). The role's policy must allow the same
    /// owners: `byoc-operator connect aws` puts them in it, `iam-policy
    /// permissions --image-owner ID` prints it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20), inner(regex(pattern = patterns::ACCOUNT_ID)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub image_owners: Vec<String>,

    /// KMS keys, by ARN, that nodes' root volumes may be encrypted with
    /// (`rootVolume.kmsKeyId`, as this ARN or the key's ID); AWS's default
    /// EBS key needs no listing. A key not listed is refused before
    /// anything is made (`Stalled`, `KmsKeyNotListed`). The role's policy
    /// must allow the same keys: `byoc-operator connect aws` puts them in
    /// it, `iam-policy permissions --kms-key-arn ARN` prints it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20), inner(regex(pattern = patterns::KMS_KEY_ARN)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub kms_key_arns: Vec<String>,

    /// Caps on what the ComputeClusters using this account may hold: per
    /// namespace using it, and in total. Checked before a cluster's pass
    /// makes anything, against what every other cluster holds, and never
    /// overshot by passes running at once; a cluster that would pass one
    /// is `Stalled` (`LimitExceeded`, naming the limit, the use and the
    /// request) and what it runs is left alone. What they hold is
    /// `status.usage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<AccountLimits>,
}

/// `spec.limits`: caps per namespace and in total.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AccountLimits {
    /// What the clusters of any one namespace may hold together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_namespace: Option<Caps>,
    /// What all the clusters using the account may hold together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<Caps>,
}

/// Caps, each optional (absent: no cap). A node group counts its `count`
/// instances, each with the vCPUs and GPUs of the largest of its types.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Caps {
    /// ComputeClusters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub clusters: Option<i64>,
    /// EC2 instances over all node groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub instances: Option<i64>,
    /// vCPUs of those instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub vcpus: Option<i64>,
    /// GPUs of those instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub gpus: Option<i64>,
    /// USD per hour of those instances at their on-demand list price (a
    /// spot instance counts at it too: the most it is charged), as a
    /// decimal string (`"40"`, `"12.5"`). Prices as in a cluster's
    /// `status.cost`; an instance type with no known price is refused under
    /// this cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 12), regex(pattern = patterns::USD))]
    pub price_per_hour: Option<String>,
}

/// What the ComputeClusters using an account hold, against `spec.limits`
/// (vCPUs and GPUs are counted where the account sets limits).
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub clusters: i64,
    pub instances: i64,
    pub vcpus: i64,
    pub gpus: i64,
    /// USD per hour of the instances at on-demand list price (counted where
    /// the account caps `pricePerHour`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_per_hour: Option<String>,
}

/// A Secret in the same namespace as the object naming it.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
pub struct SecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253), regex(pattern = patterns::DNS_SUBDOMAIN))]
    pub name: String,
}

/// One further AssumeRole hop.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RoleHop {
    /// Role to assume from the previous identity.
    #[schemars(regex(pattern = patterns::ROLE_ARN))]
    pub role_arn: String,
    /// External ID for this role's trust policy (Secret-based base
    /// credentials only; with the operator's own identity every hop gets
    /// the generated `status.externalId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 1224), regex(pattern = patterns::EXTERNAL_ID))]
    pub external_id: Option<String>,
}

/// Observed state of a CloudAccount.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CloudAccountStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Account ID of the final identity, from `sts:GetCallerIdentity`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// The external ID the operator sends when its own identity assumes
    /// `roleArn` (and every `roleChain` hop): generated from the
    /// installation's secret and this account's namespace and name, stable
    /// across re-applies and restores. The role's trust policy must require
    /// it (`sts:ExternalId`). Not a secret; absent with Secret-based
    /// credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// The principal a role's trust policy must name for this account: the
    /// identity of the base credentials (the operator's own, or the
    /// Secret's user), as an IAM ARN (an assumed role's session is given as
    /// its role). Learned before any role is assumed, so it shows while the
    /// role does not exist yet; `byoc-operator connect aws` trusts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// Public ID of the operator installation that verifies this account
    /// (`byoc-operator version`): the `byoc.dev/installation` tag it puts
    /// on what it creates, which the generated permissions policy names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installation: Option<String>,
    /// ARN of the final identity (the assumed role's session when a role is used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arn: Option<String>,
    /// `pending` until first verified, then `ready` or `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<AccountPhase>,
    /// How many ComputeClusters use this account. While any does, the
    /// account and its Secret are kept from deletion (`byoc.dev/in-use`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clusters: Option<i32>,
    /// What the clusters using the account hold (each as admitted against
    /// `spec.limits`: its desired shape), as this operator counts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// `Ready`, `Reconciling` and `Stalled` (kstatus); `Deleting` while a
    /// deleted account waits for the clusters that use it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// Lifecycle of a CloudAccount.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AccountPhase {
    Pending,
    Ready,
    Failed,
}

impl CloudAccountSpec {
    /// Whether a ComputeCluster in `namespace` may use an account that lives
    /// in `own_namespace`.
    pub fn allows_namespace(&self, own_namespace: &str, namespace: &str) -> bool {
        namespace == own_namespace
            || self
                .allowed_namespaces
                .iter()
                .any(|n| n == "*" || n == namespace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_default_to_own_only() {
        let mut spec = CloudAccountSpec {
            region: "us-east-1".into(),
            ..Default::default()
        };
        assert!(spec.allows_namespace("a", "a"));
        assert!(!spec.allows_namespace("a", "b"));
        spec.allowed_namespaces = vec!["b".into()];
        assert!(spec.allows_namespace("a", "b"));
        assert!(!spec.allows_namespace("a", "c"));
        spec.allowed_namespaces = vec!["*".into()];
        assert!(spec.allows_namespace("a", "c"));
    }
}
