//! Which Secrets the operator reads: only those their owner labelled for
//! the use (`byoc.dev/use: credentials` or `user-data`). Naming a Secret in
//! a spec is not enough: whoever may write a CloudAccount or a
//! ComputeCluster may not thereby read (through the instances' user data,
//! or the account it reaches) a Secret its owner never meant for this.
//! Unlabelled Secrets are not read at all: the content is fetched with a
//! label selector, so the apiserver never sends it.

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};

/// The label that opts a Secret in, and its values.
pub const USE_LABEL: &str = "byoc.dev/use";

/// What a Secret is read for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretUse {
    /// A CloudAccount's `credentialsSecretRef`.
    Credentials,
    /// A node group's `userDataSecretRef`.
    UserData,
}

impl SecretUse {
    /// The label's value that allows this use.
    pub fn value(self) -> &'static str {
        match self {
            SecretUse::Credentials => "credentials",
            SecretUse::UserData => "user-data",
        }
    }

    /// The spec field that names the Secret.
    pub fn field(self) -> &'static str {
        match self {
            SecretUse::Credentials => "credentialsSecretRef",
            SecretUse::UserData => "userDataSecretRef",
        }
    }
}

/// Why a named Secret is not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unread {
    #[error("Secret {namespace}/{name} was not found")]
    NotFound { namespace: String, name: String },
    #[error("Secret {namespace}/{name} ({field}) is not labelled for the operator's use: its owner opts it in with the label {USE_LABEL}={value} (kubectl label secret {name} -n {namespace} {USE_LABEL}={value})", field = usage.field(), value = usage.value())]
    NotLabelled {
        namespace: String,
        name: String,
        usage: SecretUse,
    },
}

/// The label selector of every Secret the operator may read (any use): what
/// its Secret watch lists.
pub fn any_use_selector() -> String {
    USE_LABEL.to_string()
}

/// The Secret `name` of `api`'s namespace when it is labelled for `usage`.
pub async fn read(
    api: &Api<Secret>,
    namespace: &str,
    name: &str,
    usage: SecretUse,
) -> Result<Result<Secret, Unread>, kube::Error> {
    let labelled = ListParams::default()
        .labels(&format!("{USE_LABEL}={}", usage.value()))
        .fields(&format!("metadata.name={name}"));
    if let Some(secret) = api.list(&labelled).await?.items.into_iter().next() {
        return Ok(Ok(secret));
    }
    // Told apart by its metadata alone: the content is never fetched.
    let (namespace, name) = (namespace.to_string(), name.to_string());
    Ok(Err(match api.get_metadata_opt(&name).await? {
        None => Unread::NotFound { namespace, name },
        Some(_) => Unread::NotLabelled {
            namespace,
            name,
            usage,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_names_the_label_to_add() {
        let e = Unread::NotLabelled {
            namespace: "team-a".into(),
            name: "db".into(),
            usage: SecretUse::UserData,
        };
        let m = e.to_string();
        assert!(
            m.contains("byoc.dev/use=user-data")
                && m.contains("userDataSecretRef")
                && m.contains("kubectl label secret db -n team-a"),
            "{m}"
        );
    }
}
