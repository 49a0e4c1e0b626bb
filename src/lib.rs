//! byoc-operator: builds compute clusters in a team's own AWS account.

pub mod account;
pub mod api;
pub mod audit;
pub mod aws;
pub mod cluster;
pub mod connect;
pub mod context;
pub mod describe;
#[cfg(test)]
pub mod fixtures;
pub mod installation;
pub mod interruption;
pub mod leadership;
pub mod metrics;
pub mod outcome;
pub mod prices;
pub mod secret_use;
pub mod triggers;

use crate::account::credentials::AccountError;
use crate::aws::AwsError;

/// Errors of the controllers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Account(#[from] AccountError),
    #[error(transparent)]
    Aws(#[from] AwsError),
    /// The spec asks for something it cannot have.
    #[error(transparent)]
    InvalidSpec(#[from] cluster::spec::SpecError),
    #[error(
        "spec.network.azCount is {wanted} but region {region} has {available} available zones"
    )]
    TooFewZones {
        wanted: usize,
        available: usize,
        region: String,
    },
    /// The bring-your-own VPC, one of its subnets or a security group named
    /// for its nodes is missing.
    #[error(transparent)]
    ExistingNetwork(#[from] MissingNetwork),
    #[error("an IAM role or instance profile named {name} exists and is not this cluster's (no matching byoc.dev/cluster-uid tag)")]
    IamNameTaken { name: String },
    #[error("{what} {name} exists and is not this cluster's (no matching byoc.dev/cluster-uid tag): delete or rename it, or remove the field that asks for it")]
    NameTaken { what: &'static str, name: String },
    #[error("instance type {instance_type} is unknown in region {region}")]
    InstanceTypeUnknown {
        instance_type: String,
        region: String,
    },
    /// A Secret named in the spec is not labelled for that use.
    #[error(transparent)]
    SecretNotLabelled(crate::secret_use::Unread),
    /// A node group's user data Secret or key is missing.
    #[error("Secret {secret} key {key} (userDataSecretRef): {missing}")]
    UserDataNotFound {
        secret: String,
        key: String,
        missing: cluster::user_data::Missing,
    },
    #[error("Secret {secret} key {key} (userDataSecretRef) holds {bytes} bytes; AWS takes at most {max}")]
    UserDataTooLarge {
        secret: String,
        key: String,
        bytes: usize,
        max: usize,
    },
    #[error("managed policy {arn} (iam.managedPolicyArns) does not exist or is not attachable")]
    IamPolicyNotFound { arn: String },
    #[error("the nodes' grants {arn} do not exist: the CloudAccount's role was connected before the operator granted nodes their cluster's log group; run `byoc-operator connect aws` for the account again (or make it from `byoc-operator iam-policy nodes`)")]
    NodeGrantsNotFound { arn: String },
    #[error("KMS key {arn} (storage.encryption.kmsKeyArn) cannot be used: {why}")]
    KmsKeyNotUsable { arn: String, why: String },
    #[error("instance profile {name} (iam.instanceProfileName) does not exist")]
    InstanceProfileNotFound { name: String },
    /// Something brought (an instance profile, a VPC, a subnet, a security
    /// group) was made by the operator for another cluster or installation.
    #[error("{brought} {owner}: a cluster may not {}", .brought.forbids())]
    NotOursToUse {
        brought: Brought,
        owner: aws::tags::Owner,
    },
    /// AWS accepted none of a group's offerings (capacity, offered types):
    /// its state, retried with backoff.
    #[error("{}", cluster::quotas::said(.groups, " | "))]
    InsufficientCapacity {
        groups: Vec<cluster::kinds::node_groups::Shortfall>,
    },
    /// A limit of the CloudAccount (`spec.limits`) the cluster would pass.
    #[error("over the CloudAccount's limit: {0}; nothing more is made until the request or other clusters' use shrinks, or the limit is raised")]
    LimitExceeded(account::limits::Exceeded),
    /// The CloudAccount caps the price per hour and an instance type the
    /// spec asks for has no known price there.
    #[error("the CloudAccount caps pricePerHour, and instance type {instance_type} has no known list price in {region} (neither the AWS Price List API nor the built-in table): choose a priced type, or remove the price cap")]
    Unpriced {
        instance_type: String,
        region: String,
    },
    /// An AWS quota is too small for what the spec asks (with the numbers).
    #[error("{}", cluster::quotas::said(.short, "; "))]
    QuotaExceeded {
        short: Vec<cluster::quotas::QuotaShortfall>,
    },
    /// A key pair named by `sshKeyName` does not exist in the region.
    #[error("key pair {name} (nodeGroups {group}: sshKeyName) does not exist in region {region}")]
    KeyPairNotFound {
        group: String,
        name: String,
        region: String,
    },
    /// No default image for an architecture or instance type.
    #[error("no Amazon Linux 2023 image for {wanted} found")]
    NoDefaultImage { wanted: String },
    /// An image a node group names or was pinned to is not there.
    #[error("image {image_id} was not found")]
    ImageNotFound { image_id: String },
    /// A group names an image of an owner the CloudAccount does not allow.
    #[error("nodeGroups {group}: image {image} belongs to {owner}, not to Amazon, the account itself or an owner the CloudAccount lists (spec.imageOwners); list the owner there and in the role's policy (iam-policy permissions --image-owner {owner}), or name another image")]
    ImageOwnerNotAllowed {
        group: String,
        image: String,
        owner: String,
    },
    /// A describe does not show yet what this process created (AWS is
    /// eventually consistent): the pass waits rather than create again.
    #[error("{}", cluster::catching_up::recent::waiting_for(.unseen))]
    NotVisibleYet {
        /// IDs and how long ago they were made.
        unseen: Vec<(String, std::time::Duration)>,
    },
    /// `audit --delete --cluster UID` named a live cluster.
    #[error("--cluster {uid}: that is the live ComputeCluster {namespace}/{name}; audit never deletes a live cluster's resources (delete the ComputeCluster instead)")]
    LiveCluster {
        uid: String,
        namespace: String,
        name: String,
    },
    /// An invariant of the operator broke: a bug, reported as such.
    #[error("internal error (please report it): {0}")]
    Internal(String),
    #[error("serializing: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),
    /// A watch the controller decides on has ended (the process is stopping).
    #[error("the watch of {watched} stopped")]
    WatchStopped { watched: &'static str },
}

/// What a cluster brings and may use only if it is its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Brought {
    Vpc(String),
    Subnet(String),
    SecurityGroup(String),
    InstanceProfile(String),
    /// A VPC named in `network.peering`.
    PeerVpc(String),
}

impl Brought {
    /// What using another's would be.
    fn forbids(&self) -> &'static str {
        match self {
            Brought::Vpc(_) | Brought::Subnet(_) => "use another's network",
            Brought::PeerVpc(_) => "peer with another's network",
            Brought::SecurityGroup(_) => "use another's",
            Brought::InstanceProfile(_) => "launch nodes as another's",
        }
    }
}

impl std::fmt::Display for Brought {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Brought::Vpc(id) => write!(f, "existing VPC {id}"),
            Brought::Subnet(id) => write!(f, "existing subnet {id}"),
            Brought::SecurityGroup(id) => {
                write!(f, "security group {id} (additionalSecurityGroupIds)")
            }
            Brought::InstanceProfile(name) => {
                write!(f, "instance profile {name} (iam.instanceProfileName)")
            }
            Brought::PeerVpc(id) => write!(f, "peer VPC {id} (network.peering)"),
        }
    }
}

/// A part of a bring-your-own network that AWS does not have.
#[derive(Debug, thiserror::Error)]
pub enum MissingNetwork {
    #[error("existing VPC {vpc_id} was not found")]
    Vpc { vpc_id: String },
    #[error("existing subnet {id} was not found in VPC {vpc_id}")]
    Subnet { id: String, vpc_id: String },
    #[error("security group {id} (additionalSecurityGroupIds) was not found in VPC {vpc_id}")]
    SecurityGroup { id: String, vpc_id: String },
    #[error(
        "peer VPC {vpc_id} (network.peering) was not found in the cluster's account and region"
    )]
    PeerVpc { vpc_id: String },
    #[error("route table {id} (network.peering peerRouteTableIds) was not found")]
    PeerRouteTable { id: String },
}

/// Why a pass could not go on, in the user's words. Its [`Reason::as_str`]
/// is the condition reason, the Event reason and the label of the failure
/// metrics, all from [`Error::classify`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    InvalidSpec,
    ExistingNetworkNotFound,
    IamNameTaken,
    NameTaken,
    InstanceTypeUnknown,
    ImageNotFound,
    ImageOwnerNotAllowed,
    UserDataNotFound,
    UserDataTooLarge,
    KeyPairNotFound,
    QuotaExceeded,
    LimitExceeded,
    IamPolicyNotFound,
    InstanceProfileNotFound,
    KmsKeyNotUsable,
    NotOursToUse,
    InternalError,
    AccessDenied,
    /// Any other AWS error: the user's (a parameter AWS refuses) or passing.
    AwsError,
    /// AWS throttled the caller.
    AwsThrottled,
    InsufficientCapacity,
    /// AWS has not caught up with what was just made.
    Provisioning,
    SecretNotFound,
    SecretNotLabelled,
    SecretKeyMissing,
    CredentialsRejected,
    AssumeRoleDenied,
    AmbientIdentityNotAllowed,
    ExternalIdNotAllowed,
    AwsUnavailable,
    /// The Kubernetes API failed (handled by the controller's error policy).
    KubernetesApi,
    /// Deletion goes on (the finalizer stays).
    Deleting,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        use crate::api::conditions::reason as r;
        match self {
            Reason::InvalidSpec => r::INVALID_SPEC,
            Reason::ExistingNetworkNotFound => r::EXISTING_NETWORK_NOT_FOUND,
            Reason::IamNameTaken => r::IAM_NAME_TAKEN,
            Reason::NameTaken => r::NAME_TAKEN,
            Reason::InstanceTypeUnknown => r::INSTANCE_TYPE_UNKNOWN,
            Reason::ImageNotFound => r::IMAGE_NOT_FOUND,
            Reason::ImageOwnerNotAllowed => r::IMAGE_OWNER_NOT_ALLOWED,
            Reason::UserDataNotFound => r::USER_DATA_NOT_FOUND,
            Reason::UserDataTooLarge => r::USER_DATA_TOO_LARGE,
            Reason::KeyPairNotFound => r::KEY_PAIR_NOT_FOUND,
            Reason::QuotaExceeded => r::QUOTA_EXCEEDED,
            Reason::LimitExceeded => r::LIMIT_EXCEEDED,
            Reason::IamPolicyNotFound => r::IAM_POLICY_NOT_FOUND,
            Reason::InstanceProfileNotFound => r::INSTANCE_PROFILE_NOT_FOUND,
            Reason::KmsKeyNotUsable => r::KMS_KEY_NOT_USABLE,
            Reason::NotOursToUse => r::NOT_OURS_TO_USE,
            Reason::InternalError => r::INTERNAL_ERROR,
            Reason::AccessDenied => r::ACCESS_DENIED,
            Reason::AwsError => r::AWS_ERROR,
            Reason::AwsThrottled => r::AWS_THROTTLED,
            Reason::InsufficientCapacity => r::INSUFFICIENT_CAPACITY,
            Reason::Provisioning => r::PROVISIONING,
            Reason::SecretNotFound => r::SECRET_NOT_FOUND,
            Reason::SecretNotLabelled => r::SECRET_NOT_LABELLED,
            Reason::SecretKeyMissing => r::SECRET_KEY_MISSING,
            Reason::CredentialsRejected => r::CREDENTIALS_REJECTED,
            Reason::AssumeRoleDenied => r::ASSUME_ROLE_DENIED,
            Reason::AmbientIdentityNotAllowed => r::AMBIENT_IDENTITY_NOT_ALLOWED,
            Reason::ExternalIdNotAllowed => r::EXTERNAL_ID_NOT_ALLOWED,
            Reason::AwsUnavailable => r::AWS_UNAVAILABLE,
            Reason::KubernetesApi => r::KUBERNETES_API,
            Reason::Deleting => r::DELETING,
        }
    }
}

/// What should happen next after an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// The user must act (`Stalled`); retried with backoff in case they did.
    NeedsUser,
    /// It passes by itself; retried with backoff.
    Transient,
    /// AWS throttled the caller; retried with backoff.
    Throttled,
    /// AWS has not caught up with what was just made: progress, looked at
    /// again after the progress poll, no backoff.
    CatchingUp,
}

impl Error {
    /// The one classification of every error: its reason and what happens
    /// next. Conditions, Events, failure metrics and requeues follow it.
    pub fn classify(&self) -> (Reason, Class) {
        use Class::{CatchingUp, NeedsUser, Transient};
        match self {
            Error::Kube(_) | Error::Yaml(_) | Error::WatchStopped { .. } => {
                (Reason::KubernetesApi, Transient)
            }
            Error::Account(e) => (e.reason(), e.class()),
            Error::Aws(e) => aws_class(e),
            Error::InvalidSpec(_) | Error::TooFewZones { .. } => (Reason::InvalidSpec, NeedsUser),
            Error::ExistingNetwork(_) => (Reason::ExistingNetworkNotFound, NeedsUser),
            Error::IamNameTaken { .. } => (Reason::IamNameTaken, NeedsUser),
            Error::NameTaken { .. } => (Reason::NameTaken, NeedsUser),
            Error::InstanceTypeUnknown { .. } => (Reason::InstanceTypeUnknown, NeedsUser),
            Error::NoDefaultImage { .. } | Error::ImageNotFound { .. } => {
                (Reason::ImageNotFound, NeedsUser)
            }
            Error::ImageOwnerNotAllowed { .. } => (Reason::ImageOwnerNotAllowed, NeedsUser),
            Error::UserDataNotFound { .. } => (Reason::UserDataNotFound, NeedsUser),
            Error::SecretNotLabelled(_) => (Reason::SecretNotLabelled, NeedsUser),
            Error::UserDataTooLarge { .. } => (Reason::UserDataTooLarge, NeedsUser),
            Error::KeyPairNotFound { .. } => (Reason::KeyPairNotFound, NeedsUser),
            Error::QuotaExceeded { .. } => (Reason::QuotaExceeded, NeedsUser),
            Error::LimitExceeded(_) | Error::Unpriced { .. } => (Reason::LimitExceeded, NeedsUser),
            Error::IamPolicyNotFound { .. } | Error::NodeGrantsNotFound { .. } => {
                (Reason::IamPolicyNotFound, NeedsUser)
            }
            Error::KmsKeyNotUsable { .. } => (Reason::KmsKeyNotUsable, NeedsUser),
            Error::InstanceProfileNotFound { .. } => (Reason::InstanceProfileNotFound, NeedsUser),
            Error::NotOursToUse { .. } => (Reason::NotOursToUse, NeedsUser),
            Error::Internal(_) => (Reason::InternalError, NeedsUser),
            // A command's refusal (audit), never a condition.
            Error::LiveCluster { .. } => (Reason::InvalidSpec, NeedsUser),
            Error::InsufficientCapacity { .. } => (Reason::InsufficientCapacity, Transient),
            Error::NotVisibleYet { .. } => (Reason::Provisioning, CatchingUp),
        }
    }
}

/// An AWS error: AWS catching up, a quota, the caller's permissions, the
/// request itself, throttling, or a passing failure.
fn aws_class(e: &AwsError) -> (Reason, Class) {
    use Class::{CatchingUp, NeedsUser, Throttled, Transient};
    if e.is_settling() {
        (Reason::Provisioning, CatchingUp)
    } else if aws::error::is_quota(e.code()) {
        (Reason::QuotaExceeded, NeedsUser)
    } else if e.class() == aws::ErrorClass::NeedsUser {
        let reason = if e.is_access_denied() {
            Reason::AccessDenied
        } else {
            Reason::AwsError
        };
        (reason, NeedsUser)
    } else if e.is_throttling() {
        (Reason::AwsThrottled, Throttled)
    } else {
        (Reason::AwsError, Transient)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::AwsError;

    fn aws(code: &str, status: u16) -> Error {
        Error::Aws(AwsError::Service {
            operation: "ec2:CreateVpc",
            code: code.into(),
            message: String::new(),
            class: aws::error::classify(code, "", Some(status)),
        })
    }

    #[test]
    fn every_error_has_one_reason_and_class() {
        use Class::*;
        let rows = [
            (
                aws("UnauthorizedOperation", 403),
                Reason::AccessDenied,
                NeedsUser,
            ),
            (
                aws("VpcLimitExceeded", 400),
                Reason::QuotaExceeded,
                NeedsUser,
            ),
            (
                aws("InvalidParameterCombination", 400),
                Reason::AwsError,
                NeedsUser,
            ),
            (
                aws("RequestLimitExceeded", 503),
                Reason::AwsThrottled,
                Throttled,
            ),
            (aws("ServiceUnavailable", 503), Reason::AwsError, Transient),
            (
                aws("InvalidVpcID.NotFound", 400),
                Reason::Provisioning,
                CatchingUp,
            ),
            (
                Error::InvalidSpec(cluster::spec::SpecError::ZonesTwice),
                Reason::InvalidSpec,
                NeedsUser,
            ),
            (
                Error::ExistingNetwork(MissingNetwork::Vpc {
                    vpc_id: "vpc-1".into(),
                }),
                Reason::ExistingNetworkNotFound,
                NeedsUser,
            ),
            (
                Error::NotOursToUse {
                    brought: Brought::Subnet("subnet-1".into()),
                    owner: aws::tags::Owner::Cluster("u".into()),
                },
                Reason::NotOursToUse,
                NeedsUser,
            ),
            (
                Error::NotVisibleYet { unseen: vec![] },
                Reason::Provisioning,
                CatchingUp,
            ),
            (
                Error::InsufficientCapacity { groups: vec![] },
                Reason::InsufficientCapacity,
                Transient,
            ),
            (
                Error::Internal("x".into()),
                Reason::InternalError,
                NeedsUser,
            ),
            (
                Error::WatchStopped { watched: "x" },
                Reason::KubernetesApi,
                Transient,
            ),
        ];
        for (error, reason, class) in rows {
            assert_eq!(error.classify(), (reason, class), "{error}");
        }
    }

    #[test]
    fn brought_and_owner_say_what_is_wrong_and_not_whose_it_is() {
        let e = Error::NotOursToUse {
            brought: Brought::InstanceProfile("p".into()),
            owner: aws::tags::Owner::Installation("abc".into()),
        };
        assert_eq!(
            e.to_string(),
            "instance profile p (iam.instanceProfileName) belongs to another operator installation: a cluster may not launch nodes as another's"
        );
        let e = Error::NotOursToUse {
            brought: Brought::PeerVpc("vpc-1".into()),
            owner: aws::tags::Owner::Cluster("uid-of-another".into()),
        };
        assert_eq!(
            e.to_string(),
            "peer VPC vpc-1 (network.peering) belongs to another ComputeCluster: a cluster may not peer with another's network"
        );
    }
}
