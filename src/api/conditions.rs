//! Condition types, reasons and the helpers that keep `lastTransitionTime`
//! honest (it changes only when a condition's status does).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// kstatus: the object has reached its desired state.
pub const READY: &str = "Ready";
/// kstatus: the controller is working towards the desired state.
pub const RECONCILING: &str = "Reconciling";
/// kstatus: progress needs the user (bad spec, denied access, missing Secret).
pub const STALLED: &str = "Stalled";
/// ComputeCluster parts.
pub const NETWORK_READY: &str = "NetworkReady";
pub const IAM_READY: &str = "IamReady";
pub const NODE_GROUPS_READY: &str = "NodeGroupsReady";
/// The referenced CloudAccount is usable by this object.
pub const ACCOUNT_READY: &str = "AccountReady";
/// Reconciliation is paused by the `byoc.dev/paused` annotation.
pub const PAUSED: &str = "Paused";
/// The borrowed CloudAccount a ComputeCluster reached AWS through no longer
/// allows its namespace: it may only be deleted, within a grace period.
pub const CONSENT_WITHDRAWN: &str = "ConsentWithdrawn";
/// A deleted CloudAccount waits for the ComputeClusters that use it.
pub const DELETING: &str = "Deleting";

/// Condition reasons (CamelCase, stable: users and tools match on them).
pub mod reason {
    pub const VERIFIED: &str = "Verified";
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    /// A Secret named in the spec does not carry the label that opts it in
    /// for that use (`byoc.dev/use: credentials` or `user-data`).
    pub const SECRET_NOT_LABELLED: &str = "SecretNotLabelled";
    pub const SECRET_KEY_MISSING: &str = "SecretKeyMissing";
    pub const CREDENTIALS_REJECTED: &str = "CredentialsRejected";
    pub const ASSUME_ROLE_DENIED: &str = "AssumeRoleDenied";
    pub const AWS_UNAVAILABLE: &str = "AwsUnavailable";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const ACCOUNT_NOT_FOUND: &str = "AccountNotFound";
    pub const ACCOUNT_NOT_READY: &str = "AccountNotReady";
    pub const NAMESPACE_NOT_ALLOWED: &str = "NamespaceNotAllowed";
    pub const ACCOUNT_CHANGED: &str = "AccountChanged";
    pub const ACCOUNT_DELETING: &str = "AccountDeleting";
    pub const IN_USE: &str = "InUse";
    pub const DELETION_BLOCKED: &str = "DeletionBlocked";
    pub const PROVISIONING: &str = "Provisioning";
    pub const RUNNING: &str = "Running";
    pub const DELETING: &str = "Deleting";
    pub const AWS_ERROR: &str = "AwsError";
    /// AWS throttled the operator's calls (retried with backoff).
    pub const AWS_THROTTLED: &str = "AwsThrottled";
    /// The Kubernetes API failed (metrics only: no status is written).
    pub const KUBERNETES_API: &str = "KubernetesApi";
    pub const ACCESS_DENIED: &str = "AccessDenied";
    pub const PAUSED: &str = "Paused";
    /// A cluster's AWS resources deleted by the operator when the grace
    /// period after its account's consent was withdrawn ended.
    pub const RESOURCES_RELEASED: &str = "ResourcesReleased";
    /// An existing (bring-your-own) VPC or subnet was not found.
    pub const EXISTING_NETWORK_NOT_FOUND: &str = "ExistingNetworkNotFound";
    /// An IAM role or instance profile of the cluster's name belongs to someone else.
    pub const IAM_NAME_TAKEN: &str = "IamNameTaken";
    /// A name the cluster's log group (or another named resource) must
    /// have is held by something that is not the cluster's.
    pub const NAME_TAKEN: &str = "NameTaken";
    /// No default image for a node group's instance type.
    pub const IMAGE_NOT_FOUND: &str = "ImageNotFound";
    /// An instance type the region does not offer.
    pub const INSTANCE_TYPE_UNKNOWN: &str = "InstanceTypeUnknown";
    /// A node group's user data Secret or key does not exist.
    pub const USER_DATA_NOT_FOUND: &str = "UserDataNotFound";
    /// A node group's user data is over AWS's 16 KB.
    pub const USER_DATA_TOO_LARGE: &str = "UserDataTooLarge";
    /// A key pair named by a node group's `sshKeyName` does not exist.
    pub const KEY_PAIR_NOT_FOUND: &str = "KeyPairNotFound";
    /// A managed policy in `iam.managedPolicyArns` does not exist.
    pub const IAM_POLICY_NOT_FOUND: &str = "IamPolicyNotFound";
    /// The instance profile in `iam.instanceProfileName` does not exist.
    pub const INSTANCE_PROFILE_NOT_FOUND: &str = "InstanceProfileNotFound";
    /// AWS accepted none of a node group's offerings; retried.
    pub const INSUFFICIENT_CAPACITY: &str = "InsufficientCapacity";
    /// The quota pre-flight could not be made: the role may not read
    /// quotas (launches then go in small batches).
    pub const QUOTA_UNKNOWN: &str = "QuotaUnknown";
    /// An instance impaired past its group's grace period is replaced.
    pub const UNHEALTHY_INSTANCE: &str = "UnhealthyInstance";
    /// An AWS quota or limit is reached (vCPUs, VPCs, addresses, ...).
    pub const QUOTA_EXCEEDED: &str = "QuotaExceeded";
    /// A CloudAccount's `spec.limits` would be passed by the cluster.
    pub const LIMIT_EXCEEDED: &str = "LimitExceeded";
    /// A node group replaces its instances with a new launch configuration.
    pub const ROLLING_UPDATE: &str = "RollingUpdate";
    /// A peering connection waits for the peer's owner to accept it.
    pub const PEERING_PENDING_ACCEPTANCE: &str = "PeeringPendingAcceptance";
    /// The operator broke one of its own invariants (a bug to report).
    pub const INTERNAL_ERROR: &str = "InternalError";
    /// `deletionPolicy: Retain`: the AWS resources were let go of.
    pub const RETAINED: &str = "Retained";
    pub const AS_EXPECTED: &str = "AsExpected";
    /// The account's namespace may not use the operator's own identity, or
    /// would get it unchanged (no role to assume).
    pub const AMBIENT_IDENTITY_NOT_ALLOWED: &str = "AmbientIdentityNotAllowed";
    /// A tenant-chosen external ID with the operator's own identity.
    pub const EXTERNAL_ID_NOT_ALLOWED: &str = "ExternalIdNotAllowed";
    /// The cluster's resources were made by another operator installation.
    pub const OTHER_INSTALLATION: &str = "OtherInstallation";
    /// Something brought (an instance profile, a VPC, a subnet, a security
    /// group) belongs to another cluster or installation.
    pub const NOT_OURS_TO_USE: &str = "NotOursToUse";
    /// The cluster asks for a node role of its own under an account whose
    /// nodes share one identity (`nodeInstanceProfileName`).
    pub const SHARED_NODE_IDENTITY: &str = "SharedNodeIdentity";
    /// A node group names an image whose owner is not Amazon, the account
    /// itself or one the CloudAccount lists (`imageOwners`).
    pub const IMAGE_OWNER_NOT_ALLOWED: &str = "ImageOwnerNotAllowed";
    /// A root volume's KMS key, or a brought storage key, is not one the
    /// CloudAccount lists (`kmsKeyArns`).
    pub const KMS_KEY_NOT_LISTED: &str = "KmsKeyNotListed";
    /// A brought storage key (`storage.encryption.kmsKeyArn`) does not
    /// exist or is not enabled.
    pub const KMS_KEY_NOT_USABLE: &str = "KmsKeyNotUsable";
}

/// A condition to be set; `observedGeneration` and times are filled in by
/// [`merge`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Desired {
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Desired {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }
}

/// Builds the new condition list from the desired ones, keeping each
/// `lastTransitionTime` from `previous` when the status did not change.
/// Conditions of other types in `previous` are dropped: the controller owns
/// the whole list.
pub fn merge(
    previous: &[Condition],
    desired: &[Desired],
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    desired
        .iter()
        .map(|d| {
            let status = if d.status { "True" } else { "False" }.to_string();
            let last_transition_time = previous
                .iter()
                .find(|p| p.type_ == d.type_ && p.status == status)
                .map(|p| p.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                type_: d.type_.to_string(),
                status,
                reason: d.reason.to_string(),
                message: d.message.clone(),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// `previous` with one condition set (added, or replaced in place), the
/// others kept as they are.
pub fn set(
    previous: &[Condition],
    desired: &Desired,
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    let new = merge(previous, std::slice::from_ref(desired), generation, now);
    let mut out: Vec<Condition> = previous
        .iter()
        .filter(|c| c.type_ != desired.type_)
        .cloned()
        .collect();
    out.extend(new);
    out
}

/// The current time, as conditions carry it.
pub fn now() -> Time {
    Time(jiff::Timestamp::now())
}

/// Whether `conditions` has `type_` with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(s: i64) -> Time {
        Time(jiff::Timestamp::from_second(s).expect("valid timestamp"))
    }

    #[test]
    fn transition_time_kept_while_status_unchanged() {
        let first = merge(
            &[],
            &[Desired::new(READY, false, reason::PROVISIONING, "a")],
            Some(1),
            &time(10),
        );
        let second = merge(
            &first,
            &[Desired::new(READY, false, reason::PROVISIONING, "b")],
            Some(2),
            &time(20),
        );
        assert_eq!(second[0].last_transition_time, time(10));
        assert_eq!(second[0].message, "b");
        assert_eq!(second[0].observed_generation, Some(2));
        let third = merge(
            &second,
            &[Desired::new(READY, true, reason::RUNNING, "c")],
            Some(2),
            &time(30),
        );
        assert_eq!(third[0].last_transition_time, time(30));
        assert_eq!(third[0].status, "True");
    }

    #[test]
    fn set_keeps_other_conditions() {
        let ready = merge(
            &[],
            &[Desired::new(READY, true, reason::RUNNING, "ok")],
            Some(1),
            &time(10),
        );
        let paused = Desired::new(PAUSED, true, reason::PAUSED, "paused");
        let both = set(&ready, &paused, Some(2), &time(20));
        assert_eq!(both.len(), 2);
        assert_eq!(both[0], ready[0]);
        let again = set(&both, &paused, Some(3), &time(30));
        assert_eq!(again.len(), 2);
        assert_eq!(again[1].last_transition_time, time(20));
        assert_eq!(again[1].observed_generation, Some(3));
    }
}
