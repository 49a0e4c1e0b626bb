//! Credential resolution for a CloudAccount: base credentials (Secret or
//! ambient), then AssumeRole into `roleArn` and each `roleChain` hop, then
//! `sts:GetCallerIdentity` on the final identity.
//!
//! Key material lives only in memory here: it is never logged, and errors
//! name the Secret and the keys, never their values.

use std::time::{Duration, SystemTime};

use aws_config::{Region, SdkConfig};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::Credentials;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, ResourceExt};

use crate::api::conditions::reason;
use crate::api::CloudAccount;
use crate::aws::{AwsError, ErrorClass};
use crate::metrics::Metrics;

pub const ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
pub const SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";
pub const SESSION_TOKEN: &str = "AWS_SESSION_TOKEN";
pub const EXTERNAL_ID: &str = "EXTERNAL_ID";
/// Default AssumeRole session lifetime.
pub const DEFAULT_SESSION_SECONDS: i32 = 3600;

/// A verified identity and the SDK configuration that acts as it.
#[derive(Clone, Debug)]
pub struct ResolvedAccount {
    /// Acts as the final identity, in the account's region.
    pub config: SdkConfig,
    pub account_id: String,
    pub arn: String,
    /// When the assumed credentials expire (None: they do not, or the SDK refreshes them).
    pub expires: Option<SystemTime>,
}

impl ResolvedAccount {
    /// How long until the credentials are to be refreshed
    /// ([`REFRESH_BEFORE_EXPIRY`] before they expire); `None` when they do not expire.
    pub fn refresh_in(&self) -> Option<Duration> {
        self.expires.map(|expires| {
            expires
                .duration_since(SystemTime::now())
                .unwrap_or_default()
                .saturating_sub(REFRESH_BEFORE_EXPIRY)
        })
    }
}

/// Why an account could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("Secret {namespace}/{name} was not found")]
    SecretNotFound { namespace: String, name: String },
    #[error("Secret {namespace}/{name} has no key {key}")]
    SecretKeyMissing {
        namespace: String,
        name: String,
        key: &'static str,
    },
    #[error("Secret {namespace}/{name}: key {key} is not valid UTF-8")]
    SecretKeyInvalid {
        namespace: String,
        name: String,
        key: &'static str,
    },
    #[error("AWS rejected the base credentials ({source_desc}): {error}")]
    CredentialsRejected {
        source_desc: String,
        error: AwsError,
    },
    #[error("AssumeRole into {role} was denied: {error}")]
    AssumeRoleDenied { role: String, error: AwsError },
    #[error("AWS is unavailable: {0}")]
    Unavailable(AwsError),
    #[error("reading Secret {namespace}/{name}: {source}")]
    Kube {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

impl AccountError {
    /// The condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            AccountError::SecretNotFound { .. } => reason::SECRET_NOT_FOUND,
            AccountError::SecretKeyMissing { .. } | AccountError::SecretKeyInvalid { .. } => {
                reason::SECRET_KEY_MISSING
            }
            AccountError::CredentialsRejected { .. } => reason::CREDENTIALS_REJECTED,
            AccountError::AssumeRoleDenied { .. } => reason::ASSUME_ROLE_DENIED,
            AccountError::Unavailable(_) | AccountError::Kube { .. } => reason::AWS_UNAVAILABLE,
        }
    }

    /// Transient errors are retried quietly; the others need the user.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            AccountError::Unavailable(_) | AccountError::Kube { .. }
        )
    }
}

/// Resolves `account` to a verified identity. `base` carries the operator's
/// shared HTTP client, endpoint override and ambient credentials chain.
pub async fn resolve(
    client: &Client,
    base: &SdkConfig,
    metrics: &Metrics,
    account: &CloudAccount,
) -> Result<ResolvedAccount, AccountError> {
    let sts_client = |config: &SdkConfig| {
        aws_sdk_sts::Client::from_conf(
            aws_sdk_sts::config::Builder::from(config)
                .interceptor(metrics.aws_interceptor())
                .build(),
        )
    };
    let base = base_identity(client, base, account).await?;
    let (config, expires) = match &account.spec.role_arn {
        Some(role_arn) => assume_roles(account, role_arn, &base, sts_client).await?,
        None => (base.config.clone(), None),
    };
    let (account_id, arn) = caller_identity(&sts_client(&config), &base.source).await?;
    Ok(ResolvedAccount {
        config,
        account_id,
        arn,
        expires,
    })
}

/// Where the chain starts: the Secret's keys, or the operator's own identity.
struct BaseIdentity {
    config: SdkConfig,
    /// Said in errors: which credentials AWS rejected.
    source: String,
    /// The Secret's external ID, used when the spec gives none.
    external_id: Option<String>,
}

async fn base_identity(
    client: &Client,
    base: &SdkConfig,
    account: &CloudAccount,
) -> Result<BaseIdentity, AccountError> {
    let namespace = account.namespace().unwrap_or_default();
    let region = Region::new(account.spec.region.clone());
    let Some(secret_ref) = &account.spec.credentials_secret_ref else {
        return Ok(BaseIdentity {
            config: base.to_builder().region(region).build(),
            source: "the operator's own identity".to_string(),
            external_id: None,
        });
    };
    let keys = read_secret(client, &namespace, &secret_ref.name).await?;
    let creds = Credentials::new(
        keys.access_key_id,
        keys.secret_access_key,
        keys.session_token,
        None,
        "byoc-secret",
    );
    Ok(BaseIdentity {
        config: base
            .to_builder()
            .region(region)
            .credentials_provider(SharedCredentialsProvider::new(creds))
            .build(),
        source: format!("Secret {namespace}/{}", secret_ref.name),
        external_id: keys.external_id,
    })
}

/// AssumeRole through `role_arn` and then each hop of `spec.roleChain`:
/// the last hop's configuration and when its credentials expire.
async fn assume_roles(
    account: &CloudAccount,
    role_arn: &str,
    base: &BaseIdentity,
    sts_client: impl Fn(&SdkConfig) -> aws_sdk_sts::Client,
) -> Result<(SdkConfig, Option<SystemTime>), AccountError> {
    let spec = &account.spec;
    let first_external_id = spec.external_id.clone().or(base.external_id.clone());
    let hops = std::iter::once((role_arn.to_string(), first_external_id)).chain(
        spec.role_chain
            .iter()
            .map(|h| (h.role_arn.clone(), h.external_id.clone())),
    );
    let session = session_name(
        &account.namespace().unwrap_or_default(),
        &account.name_any(),
    );
    let duration = spec
        .session_duration_seconds
        .unwrap_or(DEFAULT_SESSION_SECONDS);
    let (mut config, mut expires) = (base.config.clone(), None);
    for (i, (role, external_id)) in hops.enumerate() {
        let out = sts_client(&config)
            .assume_role()
            .role_arn(&role)
            .role_session_name(&session)
            .duration_seconds(duration)
            .set_external_id(external_id)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("sts:AssumeRole", e));
        let out = match out {
            Ok(out) => out,
            Err(e) if e.class() == ErrorClass::Transient => {
                return Err(AccountError::Unavailable(e))
            }
            // The first hop's denial may be the base keys' fault.
            Err(e) if i == 0 && is_rejected_credentials(&e) => {
                return Err(AccountError::CredentialsRejected {
                    source_desc: base.source.clone(),
                    error: e,
                })
            }
            Err(e) => return Err(AccountError::AssumeRoleDenied { role, error: e }),
        };
        let c = out
            .credentials()
            .ok_or(AccountError::Unavailable(AwsError::Incomplete {
                operation: "sts:AssumeRole",
                missing: "credentials",
            }))?;
        expires = SystemTime::try_from(*c.expiration()).ok();
        let creds = Credentials::new(
            c.access_key_id(),
            c.secret_access_key(),
            Some(c.session_token().to_string()),
            expires,
            "byoc-assume-role",
        );
        config = config
            .to_builder()
            .credentials_provider(SharedCredentialsProvider::new(creds))
            .build();
    }
    Ok((config, expires))
}

/// Who the credentials are: `(account ID, ARN)`.
async fn caller_identity(
    sts: &aws_sdk_sts::Client,
    source: &str,
) -> Result<(String, String), AccountError> {
    const OP: &str = "sts:GetCallerIdentity";
    let identity = match sts.get_caller_identity().send().await {
        Ok(out) => out,
        Err(e) => {
            let e = AwsError::from_sdk(OP, e);
            return Err(if e.class() == ErrorClass::Transient {
                AccountError::Unavailable(e)
            } else {
                AccountError::CredentialsRejected {
                    source_desc: source.to_string(),
                    error: e,
                }
            });
        }
    };
    // An answer without them is AWS's fault, retried: an empty account ID
    // must never reach a status.
    let incomplete = |missing| {
        AccountError::Unavailable(AwsError::Incomplete {
            operation: OP,
            missing,
        })
    };
    Ok((
        identity
            .account()
            .ok_or_else(|| incomplete("Account"))?
            .to_string(),
        identity.arn().ok_or_else(|| incomplete("Arn"))?.to_string(),
    ))
}

fn is_rejected_credentials(e: &AwsError) -> bool {
    matches!(
        e.code(),
        Some(
            "InvalidClientTokenId"
                | "SignatureDoesNotMatch"
                | "ExpiredToken"
                | "AuthFailure"
                | "UnrecognizedClientException"
        )
    )
}

struct SecretKeys {
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
    external_id: Option<String>,
}

async fn read_secret(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<SecretKeys, AccountError> {
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|source| AccountError::Kube {
            namespace: namespace.into(),
            name: name.into(),
            source,
        })?
        .ok_or_else(|| AccountError::SecretNotFound {
            namespace: namespace.into(),
            name: name.into(),
        })?;
    let data = secret.data.unwrap_or_default();
    let get = |key: &'static str| -> Result<Option<String>, AccountError> {
        match data.get(key) {
            None => Ok(None),
            Some(v) => String::from_utf8(v.0.clone())
                .map(|s| Some(s.trim().to_string()))
                .map_err(|_| AccountError::SecretKeyInvalid {
                    namespace: namespace.into(),
                    name: name.into(),
                    key,
                }),
        }
    };
    let required = |key: &'static str| -> Result<String, AccountError> {
        get(key)?
            .filter(|v| !v.is_empty())
            .ok_or_else(|| AccountError::SecretKeyMissing {
                namespace: namespace.into(),
                name: name.into(),
                key,
            })
    };
    Ok(SecretKeys {
        access_key_id: required(ACCESS_KEY_ID)?,
        secret_access_key: required(SECRET_ACCESS_KEY)?,
        session_token: get(SESSION_TOKEN)?.filter(|v| !v.is_empty()),
        external_id: get(EXTERNAL_ID)?.filter(|v| !v.is_empty()),
    })
}

/// AssumeRole session name that says who is calling: `byoc.<ns>.<name>`,
/// limited to STS's 64 characters of `[\w+=,.@-]`.
pub fn session_name(namespace: &str, name: &str) -> String {
    let raw = format!("byoc.{namespace}.{name}");
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "+=,.@-_".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect()
}

/// How long before expiry assumed credentials are refreshed.
pub const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_name_is_valid_for_sts() {
        assert_eq!(session_name("team-a", "acme"), "byoc.team-a.acme");
        let long = session_name(&"n".repeat(63), &"x".repeat(63));
        assert_eq!(long.len(), 64);
    }
}
