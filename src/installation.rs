//! The installation: what sets one operator installation apart from every
//! other that may share an AWS account with it (staging and production
//! Kubernetes clusters, a team's own copy).
//!
//! A random secret is created once, on the first start, in a Secret of the
//! operator's namespace (or given by the chart for a reproducible install).
//! From it come, with HMAC-SHA-256 (output fixed by its standard, so stable
//! across releases):
//! - the public ID, carried by every AWS resource the operator creates as
//!   the tag `byoc.dev/installation` and part of every ownership check;
//! - each CloudAccount's external ID (namespace and name keyed by the
//!   secret): unique per account, stable across re-applies and restores,
//!   and not computable by anyone who cannot read the secret.

use hmac::{Hmac, KeyInit, Mac};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{ObjectMeta, PostParams};
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

/// One installation's secret and its public ID.
#[derive(Clone)]
pub struct Installation {
    secret: Vec<u8>,
    id: String,
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
    #[error("no randomness for a new installation secret: {0}")]
    Random(String),
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
        };
        installation.id = installation.keyed("installation-id", &[])[..16].to_string();
        Some(installation)
    }

    /// The public ID: 16 hex digits, the value of the installation tag.
    pub fn id(&self) -> &str {
        &self.id
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
            .map_err(|source| InstallationError::Kube {
                namespace: namespace.into(),
                name: name.into(),
                source,
            })?;
        let Some(secret) = secret else {
            return Ok(None);
        };
        let bytes = secret
            .data
            .and_then(|mut d| d.remove(SECRET_KEY))
            .map(|b| b.0)
            .unwrap_or_default();
        Installation::from_secret(&bytes)
            .map(Some)
            .ok_or(InstallationError::TooShort {
                namespace: namespace.into(),
                name: name.into(),
                len: bytes.len(),
            })
    }

    /// [`Installation::load`], or, on the first start, a new random secret
    /// written to the Secret. Two replicas starting at once agree: the
    /// second's create is refused and it reads the first's.
    pub async fn load_or_create(
        client: &Client,
        namespace: &str,
        name: &str,
    ) -> Result<Installation, InstallationError> {
        if let Some(found) = Self::load(client, namespace, name).await? {
            return Ok(found);
        }
        let mut secret = [0u8; MIN_SECRET_BYTES];
        getrandom::fill(&mut secret).map_err(|e| InstallationError::Random(e.to_string()))?;
        let object = Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                labels: Some([("app.kubernetes.io/name".into(), "byoc-operator".into())].into()),
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
            Err(source) => {
                return Err(InstallationError::Kube {
                    namespace: namespace.into(),
                    name: name.into(),
                    source,
                })
            }
        }
        Self::load(client, namespace, name)
            .await?
            .ok_or(InstallationError::NotFound {
                namespace: namespace.into(),
                name: name.into(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
