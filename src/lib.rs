//! byoc-operator: builds compute clusters in a team's own AWS account.

pub mod api;
pub mod aws;

/// Errors of the operator's top level.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[source] kube::Error),
    #[error("serializing: {0}")]
    Yaml(#[source] serde_yaml_ng::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
