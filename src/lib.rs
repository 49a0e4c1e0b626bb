//! byoc-operator: builds compute clusters in a team's own AWS account.

pub mod account;
pub mod api;
pub mod audit;
pub mod aws;
pub mod cluster;
pub mod connect;
pub mod context;
pub mod describe;
pub mod installation;
pub mod leadership;
pub mod metrics;
pub mod outcome;
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
    #[error("{0}")]
    InvalidSpec(String),
    #[error(
        "spec.network.azCount is {wanted} but region {region} has {available} available zones"
    )]
    TooFewZones {
        wanted: usize,
        available: usize,
        region: String,
    },
    /// The bring-your-own VPC or one of its subnets is missing.
    #[error("{0}")]
    ExistingNetwork(String),
    #[error("an IAM role or instance profile named {0} exists and is not this cluster's (no matching byoc.dev/cluster-uid tag)")]
    IamNameTaken(String),
    #[error("instance type {instance_type} is unknown in region {region}")]
    InstanceTypeUnknown {
        instance_type: String,
        region: String,
    },
    /// A node group's user data Secret or key is missing.
    #[error("{0}")]
    UserDataNotFound(String),
    #[error("{0}")]
    UserDataTooLarge(String),
    #[error("managed policy {0} (iam.managedPolicyArns) does not exist or is not attachable")]
    IamPolicyNotFound(String),
    #[error("instance profile {0} (iam.instanceProfileName) does not exist")]
    InstanceProfileNotFound(String),
    /// Something brought (an instance profile, a VPC, a subnet, a security
    /// group) was made by the operator for another cluster or installation.
    #[error("{0}")]
    NotOursToUse(String),
    /// AWS accepted none of a group's offerings (capacity, offered types):
    /// its state, retried with backoff.
    #[error("{0}")]
    InsufficientCapacity(String),
    /// An AWS quota is too small for what the spec asks (with the numbers).
    #[error("{0}")]
    QuotaExceeded(String),
    /// A key pair named by `sshKeyName` does not exist in the region.
    #[error("key pair {name} (nodeGroups {group}: sshKeyName) does not exist in region {region}")]
    KeyPairNotFound {
        group: String,
        name: String,
        region: String,
    },
    #[error("no Amazon Linux 2023 image for {0} found")]
    NoImage(String),
    /// A describe does not show yet what this process created (AWS is
    /// eventually consistent): the pass waits rather than create again.
    #[error("{0}")]
    NotVisibleYet(String),
    /// An invariant of the operator broke: a bug, reported as such.
    #[error("internal error (please report it): {0}")]
    Internal(String),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("serializing: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),
    /// A watch the controller decides on has ended (the process is stopping).
    #[error("the watch of {0} stopped")]
    WatchStopped(&'static str),
    /// Deletion goes on: the finalizer must stay until AWS is empty, and the
    /// finalizer helper keeps it only when cleanup returns an error.
    #[error("deletion in progress: {message}")]
    CleanupPending {
        message: String,
        retry_after: std::time::Duration,
    },
}

impl Error {
    /// The condition reason of an error the user must act on; `None` for
    /// one that passes by itself (retried with backoff).
    pub fn needs_user(&self) -> Option<&'static str> {
        use crate::api::conditions::reason;
        match self {
            Error::InvalidSpec(_) | Error::TooFewZones { .. } => Some(reason::INVALID_SPEC),
            Error::ExistingNetwork(_) => Some(reason::EXISTING_NETWORK_NOT_FOUND),
            Error::IamNameTaken(_) => Some(reason::IAM_NAME_TAKEN),
            Error::InstanceTypeUnknown { .. } => Some(reason::INSTANCE_TYPE_UNKNOWN),
            Error::NoImage(_) => Some(reason::IMAGE_NOT_FOUND),
            Error::UserDataNotFound(_) => Some(reason::USER_DATA_NOT_FOUND),
            Error::UserDataTooLarge(_) => Some(reason::USER_DATA_TOO_LARGE),
            Error::KeyPairNotFound { .. } => Some(reason::KEY_PAIR_NOT_FOUND),
            Error::QuotaExceeded(_) => Some(reason::QUOTA_EXCEEDED),
            Error::IamPolicyNotFound(_) => Some(reason::IAM_POLICY_NOT_FOUND),
            Error::InstanceProfileNotFound(_) => Some(reason::INSTANCE_PROFILE_NOT_FOUND),
            Error::NotOursToUse(_) => Some(reason::NOT_OURS_TO_USE),
            Error::Internal(_) => Some(reason::INTERNAL_ERROR),
            Error::Aws(e) if aws::error::is_quota(e.code()) => Some(reason::QUOTA_EXCEEDED),
            Error::Aws(e) if e.class() == aws::ErrorClass::NeedsUser => {
                Some(if e.is_access_denied() {
                    reason::ACCESS_DENIED
                } else {
                    reason::AWS_ERROR
                })
            }
            Error::Account(e) if !e.is_transient() => Some(e.reason()),
            _ => None,
        }
    }

    /// A short label for metrics.
    pub fn metric_reason(&self) -> String {
        match self {
            Error::Kube(_) => "kube".into(),
            Error::Account(e) => e.reason().into(),
            Error::Aws(e) => e.code().unwrap_or("transport").into(),
            Error::InvalidSpec(_) | Error::TooFewZones { .. } => "invalid_spec".into(),
            Error::ExistingNetwork(_) => "existing_network".into(),
            Error::IamNameTaken(_) => "iam_name_taken".into(),
            Error::InstanceTypeUnknown { .. } => "instance_type_unknown".into(),
            Error::NoImage(_) => "no_image".into(),
            Error::NotVisibleYet(_) => "not_visible_yet".into(),
            Error::UserDataNotFound(_) => "user_data_not_found".into(),
            Error::UserDataTooLarge(_) => "user_data_too_large".into(),
            Error::KeyPairNotFound { .. } => "key_pair_not_found".into(),
            Error::InsufficientCapacity(_) => "insufficient_capacity".into(),
            Error::QuotaExceeded(_) => "quota_exceeded".into(),
            Error::IamPolicyNotFound(_) => "iam_policy_not_found".into(),
            Error::InstanceProfileNotFound(_) => "instance_profile_not_found".into(),
            Error::NotOursToUse(_) => "not_ours_to_use".into(),
            Error::Internal(_) => "internal".into(),
            Error::Finalizer(_) => "finalizer".into(),
            Error::Yaml(_) => "serialize".into(),
            Error::WatchStopped(_) => "watch_stopped".into(),
            Error::CleanupPending { .. } => "cleanup_pending".into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
