//! Credential resolution for a CloudAccount: base credentials (Secret or
//! ambient), then AssumeRole into `roleArn` and each `roleChain` hop, then
//! `sts:GetCallerIdentity` on the final identity.
//!
//! Key material lives only in memory here: it is never logged, and errors
//! name the Secret and the keys, never their values.
//!
//! The operator's own identity is shared by every tenant, so it is lent
//! only under rules a tenant cannot bend ([`Ambient`]): only to the
//! namespaces the installation lists, only to assume a role (never as it
//! is), and only with the external ID the operator generates for the
//! account — a tenant's own choice of external ID would let one namespace
//! assume another's role (the confused deputy).

use std::time::{Duration, SystemTime};

use aws_config::{Region, SdkConfig};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::Credentials;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, ResourceExt};

use crate::api::CloudAccount;
use crate::aws::{sts, AwsError, ErrorClass};
use crate::installation::Installation;
use crate::metrics::Metrics;
use crate::secret_use::{self, SecretUse, Unread};
use crate::Class;
use crate::Reason;

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
    /// The roles whose trust policy refused the session tags (not
    /// allowing `sts:TagSession`), assumed without them.
    pub untagged: Vec<String>,
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
    #[error(transparent)]
    SecretNotLabelled(crate::secret_use::Unread),
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
    #[error("CloudAccounts of namespace {namespace} may not use the operator's own identity: the installation's ambient identity namespaces (run --ambient-identity-namespaces, chart value ambientIdentity.namespaces) do not list it; give spec.credentialsSecretRef instead")]
    AmbientNotAllowed { namespace: String },
    #[error("without spec.roleArn the operator's own identity would be lent as it is: name the role in your account for it to assume (its trust policy requiring sts:ExternalId {external_id}), or give spec.credentialsSecretRef")]
    AmbientNeedsRole { external_id: String },
    #[error("{field} is chosen by the operator when its own identity assumes the role: remove it, and require sts:ExternalId {external_id} (status.externalId) in the role's trust policy")]
    ExternalIdChosen { field: String, external_id: String },
    #[error("AssumeRole into {role} was denied: {error}; the role's trust policy must allow the operator's identity with the condition sts:ExternalId = {external_id} (status.externalId; `byoc-operator iam-policy trust --account NAMESPACE/NAME` prints it)")]
    AmbientAssumeRoleDenied {
        role: String,
        external_id: String,
        error: AwsError,
    },
    #[error(
        "the CloudAccount's status publishes no externalId yet: the operator has not looked at it"
    )]
    ExternalIdNotPublished,
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
    pub fn reason(&self) -> Reason {
        match self {
            AccountError::SecretNotFound { .. } => Reason::SecretNotFound,
            AccountError::SecretNotLabelled(_) => Reason::SecretNotLabelled,
            AccountError::SecretKeyMissing { .. } | AccountError::SecretKeyInvalid { .. } => {
                Reason::SecretKeyMissing
            }
            AccountError::CredentialsRejected { .. } => Reason::CredentialsRejected,
            AccountError::AssumeRoleDenied { .. }
            | AccountError::AmbientAssumeRoleDenied { .. } => Reason::AssumeRoleDenied,
            AccountError::AmbientNotAllowed { .. } | AccountError::AmbientNeedsRole { .. } => {
                Reason::AmbientIdentityNotAllowed
            }
            AccountError::ExternalIdChosen { .. } => Reason::ExternalIdNotAllowed,
            AccountError::Unavailable(_)
            | AccountError::Kube { .. }
            | AccountError::ExternalIdNotPublished => Reason::AwsUnavailable,
        }
    }

    /// Transient errors are retried quietly; the others need the user.
    /// What should happen next: it passes by itself (AWS or the
    /// Kubernetes API unavailable, an external ID not published yet), or
    /// the user must act.
    pub fn class(&self) -> Class {
        match self {
            AccountError::Unavailable(_)
            | AccountError::Kube { .. }
            | AccountError::ExternalIdNotPublished => Class::Transient,
            _ => Class::NeedsUser,
        }
    }
}

/// The rules under which a CloudAccount without `credentialsSecretRef`
/// starts from the operator's own identity.
#[derive(Clone, Copy, Debug)]
pub enum Ambient<'a> {
    /// The operator: `installation` generates the external ID; only the
    /// CloudAccounts of `namespaces` (`*`: all) may use its identity.
    Operator {
        installation: &'a Installation,
        namespaces: &'a [String],
    },
    /// A person's command (describe, audit) acting as the operator would,
    /// with its own identity: the external ID the account's status
    /// publishes (not a secret).
    Published,
}

impl Ambient<'_> {
    /// The external ID for `account`'s role, when its namespace may use the
    /// operator's identity.
    pub fn external_id(&self, account: &CloudAccount) -> Result<String, AccountError> {
        let namespace = account.namespace().unwrap_or_default();
        match self {
            Ambient::Operator {
                installation,
                namespaces,
            } => {
                if !namespaces.iter().any(|n| n == "*" || *n == namespace) {
                    return Err(AccountError::AmbientNotAllowed { namespace });
                }
                Ok(installation.external_id(&namespace, &account.name_any()))
            }
            Ambient::Published => account
                .status
                .as_ref()
                .and_then(|s| s.external_id.clone())
                .ok_or(AccountError::ExternalIdNotPublished),
        }
    }
}

/// The external ID the operator's identity sends for `account`, checked
/// against what the tenant may choose: refused when the spec chooses one
/// (a tenant could otherwise copy another account's), or when no role is
/// named. Pure: no AWS call is made before this passes.
pub fn ambient_external_id(
    ambient: &Ambient<'_>,
    account: &CloudAccount,
) -> Result<String, AccountError> {
    let external_id = ambient.external_id(account)?;
    let spec = &account.spec;
    let chosen = spec
        .external_id
        .as_ref()
        .map(|_| "spec.externalId".to_string())
        .or_else(|| {
            spec.role_chain
                .iter()
                .position(|h| h.external_id.is_some())
                .map(|i| format!("spec.roleChain[{i}].externalId"))
        });
    if let Some(field) = chosen {
        return Err(AccountError::ExternalIdChosen { field, external_id });
    }
    if spec.role_arn.is_none() {
        return Err(AccountError::AmbientNeedsRole { external_id });
    }
    Ok(external_id)
}

/// Resolves `account` to a verified identity. `base` carries the operator's
/// shared HTTP client, endpoint override and ambient credentials chain;
/// `ambient` the rules for lending that identity.
pub async fn resolve(
    client: &Client,
    base: &SdkConfig,
    metrics: &Metrics,
    account: &CloudAccount,
    ambient: &Ambient<'_>,
) -> Result<ResolvedAccount, AccountError> {
    let base = base_identity(client, base, account, ambient).await?;
    resolve_from(&base, account, metrics).await
}

/// [`resolve`], and the principal `account`'s role must trust: who its base
/// credentials are, as a trust policy names them. Learned before any role
/// is assumed (one `sts:GetCallerIdentity` on the base credentials), so it
/// is known while the role cannot be assumed yet, which is when an admin
/// needs it; with no role to assume, the verified identity is the base one
/// and no further call is made. `None` when the base credentials cannot be
/// had or are rejected (the result says why).
pub async fn resolve_with_principal(
    client: &Client,
    base: &SdkConfig,
    metrics: &Metrics,
    account: &CloudAccount,
    ambient: &Ambient<'_>,
) -> (Option<String>, Result<ResolvedAccount, AccountError>) {
    let base = match base_identity(client, base, account, ambient).await {
        Ok(base) => base,
        Err(e) => return (None, Err(e)),
    };
    let assumes = account.spec.role_arn.is_some();
    let before = match assumes {
        true => caller_identity(&base.config, metrics, &base.source)
            .await
            .ok()
            .map(|(_, arn)| trust_principal(&arn)),
        false => None,
    };
    let result = resolve_from(&base, account, metrics).await;
    let principal = before.or_else(|| {
        let verified = result.as_ref().ok().filter(|_| !assumes);
        verified.map(|r| trust_principal(&r.arn))
    });
    (principal, result)
}

/// From the base credentials, through the role chain, to the verified
/// final identity.
async fn resolve_from(
    base: &BaseIdentity,
    account: &CloudAccount,
    metrics: &Metrics,
) -> Result<ResolvedAccount, AccountError> {
    let (config, expires, untagged) = match &account.spec.role_arn {
        Some(role_arn) => assume_roles(account, role_arn, base, metrics).await?,
        None => (base.config.clone(), None, vec![]),
    };
    let (account_id, arn) = caller_identity(&config, metrics, &base.source).await?;
    Ok(ResolvedAccount {
        config,
        account_id,
        arn,
        expires,
        untagged,
    })
}

/// A caller identity as a trust policy's principal: an assumed role's
/// session (`arn:aws:sts::ACCOUNT:assumed-role/NAME/SESSION`) is trusted as
/// its role (`arn:aws:iam::ACCOUNT:role/NAME`); users and roles as they are.
pub fn trust_principal(arn: &str) -> String {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    if let [prefix, partition, "sts", "", account, resource] = parts.as_slice() {
        if let Some(rest) = resource.strip_prefix("assumed-role/") {
            let role = rest.split('/').next().unwrap_or_default();
            return format!("{prefix}:{partition}:iam::{account}:role/{role}");
        }
    }
    arn.to_string()
}

/// Where the chain starts: the Secret's keys, or the operator's own identity.
struct BaseIdentity {
    config: SdkConfig,
    /// Said in errors: which credentials AWS rejected.
    source: String,
    /// How the external ID of each hop is chosen.
    external_id: HopExternalId,
}

enum HopExternalId {
    /// The tenant's (Secret-based base credentials, which the tenant owns):
    /// each hop's from the spec; the first's may come from the Secret.
    Chosen { from_secret: Option<String> },
    /// The operator's own identity: the generated one, on every hop.
    Generated(String),
}

async fn base_identity(
    client: &Client,
    base: &SdkConfig,
    account: &CloudAccount,
    ambient: &Ambient<'_>,
) -> Result<BaseIdentity, AccountError> {
    let namespace = account.namespace().unwrap_or_default();
    let region = Region::new(account.spec.region.clone());
    let Some(secret_ref) = &account.spec.credentials_secret_ref else {
        let external_id = ambient_external_id(ambient, account)?;
        return Ok(BaseIdentity {
            config: base.to_builder().region(region).build(),
            source: "the operator's own identity".to_string(),
            external_id: HopExternalId::Generated(external_id),
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
        external_id: HopExternalId::Chosen {
            from_secret: keys.external_id,
        },
    })
}

/// AssumeRole through `role_arn` and then each hop of `spec.roleChain`,
/// each with the session tags naming the CloudAccount: the last hop's
/// configuration, when its credentials expire, and the roles that refused
/// the tags. A role whose trust policy does not allow `sts:TagSession`
/// (one connected before the tags) is asked again once without them; one
/// that requires them refuses both.
async fn assume_roles(
    account: &CloudAccount,
    role_arn: &str,
    base: &BaseIdentity,
    metrics: &Metrics,
) -> Result<(SdkConfig, Option<SystemTime>, Vec<String>), AccountError> {
    let spec = &account.spec;
    let (first_external_id, generated) = match &base.external_id {
        HopExternalId::Chosen { from_secret } => {
            (spec.external_id.clone().or(from_secret.clone()), None)
        }
        HopExternalId::Generated(id) => (Some(id.clone()), Some(id.clone())),
    };
    let hops = std::iter::once((role_arn.to_string(), first_external_id)).chain(
        spec.role_chain.iter().map(|h| {
            let external_id = generated.clone().or_else(|| h.external_id.clone());
            (h.role_arn.clone(), external_id)
        }),
    );
    let session = session_name(
        &account.namespace().unwrap_or_default(),
        &account.name_any(),
    );
    let duration = spec
        .session_duration_seconds
        .unwrap_or(DEFAULT_SESSION_SECONDS);
    let tags = session_tags(account);
    let (mut config, mut expires, mut untagged) = (base.config.clone(), None, vec![]);
    for (i, (role, external_id)) in hops.enumerate() {
        let mut ask = sts::AssumeRole {
            role_arn: &role,
            session_name: &session,
            duration_seconds: duration,
            external_id,
            tags: &tags,
        };
        let mut assumed = sts::assume_role(&config, metrics.aws_interceptor(), &ask).await;
        if assumed
            .as_ref()
            .is_err_and(|e| e.class() != ErrorClass::Transient)
        {
            ask.tags = &[];
            let bare = sts::assume_role(&config, metrics.aws_interceptor(), &ask).await;
            if bare.is_ok() {
                tracing::info!(%role, "the role's trust policy refuses session tags; assumed without them (connect again to pin the namespace)");
                untagged.push(role.clone());
                assumed = bare;
            }
        }
        (config, expires) = match assumed {
            Ok((config, expires)) => (config, expires),
            Err(e) => return Err(hop_failed(i, role, e, base, generated.as_deref())),
        };
    }
    Ok((config, expires, untagged))
}

/// The session tags of every AssumeRole of `account`: its namespace and name.
fn session_tags(account: &CloudAccount) -> [(&'static str, String); 2] {
    [
        (
            crate::aws::tags::SESSION_NAMESPACE,
            account.namespace().unwrap_or_default(),
        ),
        (crate::aws::tags::SESSION_ACCOUNT, account.name_any()),
    ]
}

/// Why hop `i` (to `role`) failed: AWS unavailable, the base keys (only the
/// first hop's denial can be theirs), or the role's trust.
fn hop_failed(
    i: usize,
    role: String,
    e: AwsError,
    base: &BaseIdentity,
    generated: Option<&str>,
) -> AccountError {
    if e.class() == ErrorClass::Transient {
        return AccountError::Unavailable(e);
    }
    if i == 0 && is_rejected_credentials(&e) {
        return AccountError::CredentialsRejected {
            source_desc: base.source.clone(),
            error: e,
        };
    }
    match generated {
        Some(external_id) => AccountError::AmbientAssumeRoleDenied {
            role,
            external_id: external_id.to_string(),
            error: e,
        },
        None => AccountError::AssumeRoleDenied { role, error: e },
    }
}

/// Who the credentials are: `(account ID, ARN)`.
async fn caller_identity(
    config: &SdkConfig,
    metrics: &Metrics,
    source: &str,
) -> Result<(String, String), AccountError> {
    sts::caller_identity(config, metrics.aws_interceptor())
        .await
        .map_err(|e| match e.class() {
            ErrorClass::Transient => AccountError::Unavailable(e),
            _ => AccountError::CredentialsRejected {
                source_desc: source.to_string(),
                error: e,
            },
        })
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
    let api = Api::<Secret>::namespaced(client.clone(), namespace);
    let secret = secret_use::read(&api, namespace, name, SecretUse::Credentials)
        .await
        .map_err(|source| AccountError::Kube {
            namespace: namespace.into(),
            name: name.into(),
            source,
        })?
        .map_err(|unread| match unread {
            Unread::NotFound { namespace, name } => {
                AccountError::SecretNotFound { namespace, name }
            }
            labelled @ Unread::NotLabelled { .. } => AccountError::SecretNotLabelled(labelled),
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
    fn an_assumed_role_is_trusted_as_its_role() {
        assert_eq!(
            trust_principal("arn:aws:sts::123456789012:assumed-role/byoc-operator/i-0abc"),
            "arn:aws:iam::123456789012:role/byoc-operator"
        );
        assert_eq!(
            trust_principal("arn:aws-cn:sts::123456789012:assumed-role/r/s"),
            "arn:aws-cn:iam::123456789012:role/r"
        );
        let user = "arn:aws:iam::123456789012:user/byoc-base";
        assert_eq!(trust_principal(user), user);
        assert_eq!(trust_principal("not an arn"), "not an arn");
    }

    fn account(ns: &str, spec: serde_json::Value) -> CloudAccount {
        let mut a = CloudAccount::new("acme", serde_json::from_value(spec).expect("a spec"));
        a.metadata.namespace = Some(ns.into());
        a
    }

    #[test]
    fn the_operators_identity_is_lent_only_under_its_rules() {
        let installation = Installation::from_secret(&[3; 32]).expect("long enough");
        let namespaces = vec!["team-a".to_string()];
        let ambient = Ambient::Operator {
            installation: &installation,
            namespaces: &namespaces,
        };
        let role = "arn:aws:iam::123456789012:role/byoc";
        let generated = installation.external_id("team-a", "acme");
        // (namespace, spec, Ok(external ID) or Err(reason))
        let rows: Vec<(&str, serde_json::Value, Result<&str, Reason>)> = vec![
            (
                "team-a",
                serde_json::json!({"region": "us-east-1", "roleArn": role}),
                Ok(&generated),
            ),
            (
                "team-b",
                serde_json::json!({"region": "us-east-1", "roleArn": role}),
                Err(Reason::AmbientIdentityNotAllowed),
            ),
            (
                "team-a",
                serde_json::json!({"region": "us-east-1"}),
                Err(Reason::AmbientIdentityNotAllowed),
            ),
            (
                "team-a",
                serde_json::json!({"region": "us-east-1", "roleArn": role, "externalId": "chosen"}),
                Err(Reason::ExternalIdNotAllowed),
            ),
            (
                "team-a",
                serde_json::json!({"region": "us-east-1", "roleArn": role,
                    "roleChain": [{"roleArn": role, "externalId": "chosen"}]}),
                Err(Reason::ExternalIdNotAllowed),
            ),
        ];
        for (i, (ns, spec, want)) in rows.into_iter().enumerate() {
            let got = ambient_external_id(&ambient, &account(ns, spec));
            match (got, want) {
                (Ok(id), Ok(want)) => assert_eq!(id, want, "row {i}"),
                (Err(e), Err(want)) => assert_eq!(e.reason(), want, "row {i}: {e}"),
                (got, want) => panic!("row {i}: got {got:?}, want {want:?}"),
            }
        }
        // Every namespace with `*`; a person's command reads the status.
        let all = vec!["*".to_string()];
        let star = Ambient::Operator {
            installation: &installation,
            namespaces: &all,
        };
        let other = account(
            "team-z",
            serde_json::json!({"region": "us-east-1", "roleArn": role}),
        );
        assert_eq!(
            ambient_external_id(&star, &other).ok(),
            Some(installation.external_id("team-z", "acme"))
        );
        assert!(matches!(
            Ambient::Published.external_id(&other),
            Err(AccountError::ExternalIdNotPublished)
        ));
    }

    #[test]
    fn session_name_is_valid_for_sts() {
        assert_eq!(session_name("team-a", "acme"), "byoc.team-a.acme");
        let long = session_name(&"n".repeat(63), &"x".repeat(63));
        assert_eq!(long.len(), 64);
    }
}
