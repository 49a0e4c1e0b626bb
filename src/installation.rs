//! The installation: what sets one operator installation apart from every
//! other that may share an AWS account with it (staging and production
//! Kubernetes clusters, a team's own copy).
//!
//! A random secret is made once, in a Secret of the operator's namespace: by
//! the chart (generated, or given for a reproducible install), or, run
//! outside the chart, by the operator on its first start.
//! From it come, with HMAC-SHA-256 (output fixed by its standard, so stable
//! across releases):
//! - the public ID, carried by every AWS resource the operator creates as
//!   the tag `byoc.dev/installation` and part of every ownership check;
//! - each CloudAccount's external ID (namespace and name keyed by the
//!   secret): unique per account, stable across re-applies and restores,
//!   and not computable by anyone who cannot read the secret.
//!
//! An installation runs against one apiserver: its Secret names it (the
//! annotation [`APISERVER_ANNOTATION`], the UID of the apiserver's
//! `kube-system` namespace). The same secret on a second apiserver (a copy
//! for GitOps, a restore, a blue/green twin) would take the first's live
//! clusters for former ones; the operator refuses to run there, and `audit`
//! refuses to act there, until the Secret is made that apiserver's.

use hmac::{Hmac, KeyInit, Mac};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::ByteString;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use sha2::Sha256;

/// The key of the installation Secret that holds the secret.
pub const SECRET_KEY: &str = "installation-secret";
/// The Secret's default name, in the operator's namespace.
pub const DEFAULT_SECRET_NAME: &str = "byoc-operator-installation";
/// The least a given secret may hold, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;
/// The prefix of every generated external ID.
pub const EXTERNAL_ID_PREFIX: &str = "byoc-";
/// The installation Secret's annotation naming its apiserver: the UID of
/// that apiserver's `kube-system` namespace.
pub const APISERVER_ANNOTATION: &str = "byoc.dev/apiserver";

/// Where an installation Secret says it belongs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Binding {
    /// To the apiserver it is read from.
    Here,
    /// To none yet (given by the chart without `installation.apiserver`, or
    /// made by a release before the binding): bound on the first start.
    Unbound,
    /// To another apiserver, by its identity.
    Elsewhere(String),
}

/// What `annotation` (the Secret's [`APISERVER_ANNOTATION`]) says, read on
/// the apiserver `here`.
pub fn binding(annotation: Option<&str>, here: &str) -> Binding {
    match annotation.filter(|a| !a.is_empty()) {
        None => Binding::Unbound,
        Some(a) if a == here => Binding::Here,
        Some(a) => Binding::Elsewhere(a.to_string()),
    }
}

/// Why `audit` may not act on this apiserver for the installation it is
/// asked for (`--installation`, if given), with the installation Secret
/// found here (its ID and binding); `None`: it may.
pub fn audit_refusal(
    asked: Option<&str>,
    found: Option<(&str, &Binding)>,
    here: &str,
) -> Option<String> {
    if let Some((_, Binding::Elsewhere(there))) = found {
        return Some(format!("the installation Secret here belongs to another apiserver ({APISERVER_ANNOTATION} {there}, this one is {here}): audit acts only for the installation of the apiserver it talks to (--force to act anyway)"));
    }
    match (asked, found) {
        (Some(asked), None) => Some(format!("--installation {asked}: this apiserver ({here}) has no installation Secret, so nothing says that installation is this apiserver's; audit acts only for the installation of the apiserver it talks to (--force to act anyway)")),
        (Some(asked), Some((id, _))) if asked != id => Some(format!("--installation {asked} is not the installation of this apiserver ({id}): another apiserver's live clusters would look former here; run audit against that installation's apiserver (--force to act anyway)")),
        _ => None,
    }
}

/// One installation's secret and its public ID.
#[derive(Clone)]
pub struct Installation {
    secret: Vec<u8>,
    id: String,
    /// Its Secret's [`APISERVER_ANNOTATION`], as read.
    apiserver: Option<String>,
}

impl std::fmt::Debug for Installation {
    /// The secret never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Installation")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InstallationError {
    #[error("installation Secret {namespace}/{name}: key {SECRET_KEY} holds {len} bytes, at least {MIN_SECRET_BYTES} are needed")]
    TooShort {
        namespace: String,
        name: String,
        len: usize,
    },
    #[error("installation Secret {namespace}/{name}: {source}")]
    Kube {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("installation Secret {namespace}/{name} was not found (the operator creates it on its first start)")]
    NotFound { namespace: String, name: String },
    #[error("installation Secret {namespace}/{name} was not found, and this operator may not create Secrets there: the chart makes it (templates/installation.yaml, or the Secret named by installation.secretName made beforehand); run `helm upgrade` of the release, or create it with a key {SECRET_KEY} of at least {MIN_SECRET_BYTES} random bytes")]
    NotMade { namespace: String, name: String },
    #[error("no randomness for a new installation secret: {reason}")]
    Random { reason: String },
    #[error("installation Secret {namespace}/{name} belongs to another apiserver ({APISERVER_ANNOTATION}: {bound}; this apiserver's kube-system namespace has UID {here}): one installation runs against one apiserver, or each would take the other's live clusters for former ones. Give this apiserver an installation of its own (remove the copied Secret, or install with another installation.secret); to move the installation here (a restore), set the chart value installation.apiserver (the Secret's annotation {APISERVER_ANNOTATION}) to {here}")]
    OtherApiserver {
        namespace: String,
        name: String,
        bound: String,
        here: String,
    },
    #[error("the apiserver's identity (the UID of namespace kube-system) could not be read: {0}")]
    Apiserver(#[source] kube::Error),
}

impl InstallationError {
    /// The Kubernetes API failed on the installation Secret `namespace/name`.
    fn kube(namespace: &str, name: &str, source: kube::Error) -> InstallationError {
        InstallationError::Kube {
            namespace: namespace.into(),
            name: name.into(),
            source,
        }
    }
}

impl Installation {
    /// The installation of `secret` (at least [`MIN_SECRET_BYTES`]).
    pub fn from_secret(secret: &[u8]) -> Option<Installation> {
        if secret.len() < MIN_SECRET_BYTES {
            return None;
        }
        let mut installation = Installation {
            secret: secret.to_vec(),
            id: String::new(),
            apiserver: None,
        };
        installation.id = installation.keyed("installation-id", &[])[..16].to_string();
        Some(installation)
    }

    /// The public ID: 16 hex digits, the value of the installation tag.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Where its Secret says it belongs, read on the apiserver `here`.
    pub fn binding(&self, here: &str) -> Binding {
        binding(self.apiserver.as_deref(), here)
    }

    /// The installation of the apiserver `client` talks to, as the operator
    /// runs it: created on the first start (bound to this apiserver), bound
    /// here on the first start after a Secret that names no apiserver, and
    /// refused when its Secret names another.
    pub async fn for_this_apiserver(
        client: &Client,
        namespace: &str,
        name: &str,
    ) -> Result<Installation, InstallationError> {
        let here = apiserver_identity(client).await?;
        let installation = Self::load_or_create(client, namespace, name, &here).await?;
        match installation.binding(&here) {
            Binding::Here => Ok(installation),
            Binding::Elsewhere(bound) => Err(InstallationError::OtherApiserver {
                namespace: namespace.into(),
                name: name.into(),
                bound,
                here,
            }),
            Binding::Unbound => {
                let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
                let patch =
                    serde_json::json!({"metadata": {"annotations": {APISERVER_ANNOTATION: here}}});
                api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(|source| InstallationError::kube(namespace, name, source))?;
                tracing::info!(%namespace, %name, apiserver = %here, "bound the installation to this apiserver");
                Ok(Installation {
                    apiserver: Some(here),
                    ..installation
                })
            }
        }
    }

    /// The external ID the operator sends when its own identity assumes a
    /// role for the CloudAccount `namespace/name`: `byoc-` and 40 hex digits
    /// (160 bits), within STS's alphabet and length.
    pub fn external_id(&self, namespace: &str, name: &str) -> String {
        let mac = self.keyed("external-id", &[namespace, name]);
        format!("{EXTERNAL_ID_PREFIX}{}", &mac[..40])
    }

    /// Hex HMAC-SHA-256 of `purpose` and `parts` (each followed by a NUL,
    /// so `["ab", "c"]` and `["a", "bc"]` differ).
    fn keyed(&self, purpose: &str, parts: &[&str]) -> String {
        // HMAC takes a key of any length.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.secret) else {
            unreachable!("HMAC accepts keys of every length")
        };
        mac.update(purpose.as_bytes());
        mac.update(&[0]);
        for part in parts {
            mac.update(part.as_bytes());
            mac.update(&[0]);
        }
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Reads the installation Secret `namespace/name`; `None` when it does not exist.
    pub async fn load(
        client: &Client,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Installation>, InstallationError> {
        let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let secret = api
            .get_opt(name)
            .await
            .map_err(|source| InstallationError::kube(namespace, name, source))?;
        let Some(secret) = secret else {
            return Ok(None);
        };
        let apiserver = secret
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(APISERVER_ANNOTATION).cloned());
        let bytes = secret
            .data
            .and_then(|mut d| d.remove(SECRET_KEY))
            .map(|b| b.0)
            .unwrap_or_default();
        Installation::from_secret(&bytes)
            .map(|i| Some(Installation { apiserver, ..i }))
            .ok_or(InstallationError::TooShort {
                namespace: namespace.into(),
                name: name.into(),
                len: bytes.len(),
            })
    }

    /// [`Installation::load`], or, on the first start outside the chart (which
    /// makes the Secret and grants no `create`), a new random secret written
    /// to the Secret, bound to the apiserver `here`. Two replicas
    /// starting at once agree: the second's create is refused and it reads
    /// the first's.
    async fn load_or_create(
        client: &Client,
        namespace: &str,
        name: &str,
        here: &str,
    ) -> Result<Installation, InstallationError> {
        if let Some(found) = Self::load(client, namespace, name).await? {
            return Ok(found);
        }
        let mut secret = [0u8; MIN_SECRET_BYTES];
        getrandom::fill(&mut secret).map_err(|e| InstallationError::Random {
            reason: e.to_string(),
        })?;
        let object = Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                labels: Some([("app.kubernetes.io/name".into(), "byoc-operator".into())].into()),
                annotations: Some([(APISERVER_ANNOTATION.into(), here.into())].into()),
                ..Default::default()
            },
            data: Some([(SECRET_KEY.into(), ByteString(secret.to_vec()))].into()),
            immutable: Some(true),
            ..Default::default()
        };
        let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
        match api.create(&PostParams::default(), &object).await {
            Ok(_) => tracing::info!(%namespace, %name, "created the installation Secret"),
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            // The chart's RBAC: the Secret is the chart's to make.
            Err(kube::Error::Api(s)) if s.code == 403 => {
                return Err(InstallationError::NotMade {
                    namespace: namespace.into(),
                    name: name.into(),
                })
            }
            Err(source) => return Err(InstallationError::kube(namespace, name, source)),
        }
        Self::load(client, namespace, name)
            .await?
            .ok_or(InstallationError::NotFound {
                namespace: namespace.into(),
                name: name.into(),
            })
    }
}

/// The identity of the apiserver `client` talks to: the UID of its
/// `kube-system` namespace (made with the cluster; a new cluster, a restore
/// included, has another).
pub async fn apiserver_identity(client: &Client) -> Result<String, InstallationError> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let found = namespaces
        .get("kube-system")
        .await
        .map_err(InstallationError::Apiserver)?;
    found.metadata.uid.ok_or_else(|| {
        InstallationError::Apiserver(kube::Error::Service(
            "namespace kube-system has no UID".into(),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_installation_is_refused_on_an_apiserver_it_does_not_name() {
        assert_eq!(binding(Some("uid-a"), "uid-a"), Binding::Here);
        assert_eq!(binding(None, "uid-a"), Binding::Unbound);
        assert_eq!(binding(Some(""), "uid-a"), Binding::Unbound);
        assert_eq!(
            binding(Some("uid-b"), "uid-a"),
            Binding::Elsewhere("uid-b".into())
        );
        let here = Binding::Here;
        let elsewhere = Binding::Elsewhere("uid-b".into());
        // audit: this apiserver's installation, asked for or not.
        assert_eq!(audit_refusal(None, Some(("id-1", &here)), "uid-a"), None);
        assert_eq!(
            audit_refusal(Some("id-1"), Some(("id-1", &here)), "uid-a"),
            None
        );
        assert_eq!(
            audit_refusal(Some("id-1"), Some(("id-1", &Binding::Unbound)), "uid-a"),
            None
        );
        // Another installation, none here, or a copied Secret: refused.
        for (asked, found) in [
            (Some("id-2"), Some(("id-1", &here))),
            (Some("id-2"), None),
            (None, Some(("id-1", &elsewhere))),
            (Some("id-1"), Some(("id-1", &elsewhere))),
        ] {
            let said = audit_refusal(asked, found, "uid-a");
            assert!(
                said.as_deref().is_some_and(|s| s.contains("--force")),
                "{asked:?} {found:?}: {said:?}"
            );
        }
    }

    fn installation(byte: u8) -> Installation {
        Installation::from_secret(&[byte; MIN_SECRET_BYTES]).expect("long enough")
    }

    #[test]
    fn ids_are_stable_and_differ_per_secret() {
        let a = installation(1);
        // Known values: they must never change between releases (every
        // resource and every trust policy carries them).
        assert_eq!(a.id(), KNOWN_ID);
        assert_eq!(a.external_id("team-a", "acme"), KNOWN_EXTERNAL_ID);
        assert_eq!(a.id().len(), 16);
        let b = installation(2);
        assert_ne!(a.id(), b.id());
        assert_ne!(
            a.external_id("team-a", "acme"),
            b.external_id("team-a", "acme")
        );
    }

    #[test]
    fn external_ids_are_per_account_and_fit_sts() {
        let a = installation(1);
        let id = a.external_id("team-a", "acme");
        assert_ne!(id, a.external_id("team-b", "acme"));
        assert_ne!(id, a.external_id("team-a", "other"));
        // Parts are separated: namespace "team-a" + name "cme" is another account.
        assert_ne!(
            a.external_id("team-a", "acme"),
            a.external_id("team-ac", "me")
        );
        assert_eq!(id.len(), EXTERNAL_ID_PREFIX.len() + 40);
        assert!(fits_sts(&id), "{id}");
        // Not the public ID, nor derivable from it by a prefix.
        assert!(!id.contains(a.id()));
    }

    #[test]
    fn a_short_secret_is_refused() {
        assert!(Installation::from_secret(&[7; MIN_SECRET_BYTES - 1]).is_none());
        assert!(Installation::from_secret(b"").is_none());
    }

    #[test]
    fn debug_shows_no_secret() {
        let shown = format!("{:?}", installation(0xab));
        assert!(!shown.contains("171"), "{shown}");
        assert!(shown.contains(installation(0xab).id()));
    }

    /// STS's external ID alphabet: `[\w+=,.@:/-]`, 2 to 1224 characters.
    fn fits_sts(id: &str) -> bool {
        (2..=1224).contains(&id.len())
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_+=,.@:/-".contains(c))
    }

    /// HMAC-SHA-256 over `installation-id\0` keyed by 32 bytes of 1, first 16 hex digits
    /// (as Python's `hmac` computes it).
    const KNOWN_ID: &str = "31729952d84296b5";
    /// Likewise over `external-id\0team-a\0acme\0`, first 40 hex digits.
    const KNOWN_EXTERNAL_ID: &str = "byoc-1904d09b182347a15e142f22bdcebea1a638fa50";
}
