//! byoc-operator: builds compute clusters in a team's own AWS account.

pub mod account;
pub mod api;
pub mod aws;
pub mod cluster;
pub mod context;
pub mod leadership;
pub mod metrics;
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
    #[error("{0}")]
    InvalidSpec(String),
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
    /// A short label for metrics.
    pub fn metric_reason(&self) -> String {
        match self {
            Error::Kube(_) => "kube".into(),
            Error::Account(e) => e.reason().into(),
            Error::Aws(e) => e.code().unwrap_or("transport").into(),
            Error::InvalidSpec(_) => "invalid_spec".into(),
            Error::Finalizer(_) => "finalizer".into(),
            Error::Yaml(_) => "serialize".into(),
            Error::WatchStopped(_) => "watch_stopped".into(),
            Error::CleanupPending { .. } => "cleanup_pending".into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
