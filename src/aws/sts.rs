//! STS: assuming a role, and asking who credentials are. Which roles, in
//! which order, with which external ID, and what a refusal means for the
//! CloudAccount are decided in `account::credentials`.

use std::time::SystemTime;

use aws_config::SdkConfig;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::Credentials;
use aws_smithy_runtime_api::client::interceptors::Intercept;

use super::{AwsError, AwsResult, SdkResultExt};

/// What one AssumeRole asks for.
#[derive(Clone, Debug)]
pub struct AssumeRole<'a> {
    pub role_arn: &'a str,
    pub session_name: &'a str,
    pub duration_seconds: i32,
    pub external_id: Option<String>,
    /// Session tags (key, value): a trust policy may require them
    /// (`aws:RequestTag/...`), and must allow `sts:TagSession` to take them.
    pub tags: &'a [(&'a str, String)],
}

/// Assumes `ask.role_arn` as `config`: the same configuration acting as the
/// role's session, and when the session's credentials expire. `observer`
/// sees the call.
pub async fn assume_role(
    config: &SdkConfig,
    observer: impl Intercept + 'static,
    ask: &AssumeRole<'_>,
) -> AwsResult<(SdkConfig, Option<SystemTime>)> {
    let out = client(config, observer)
        .assume_role()
        .role_arn(ask.role_arn)
        .role_session_name(ask.session_name)
        .duration_seconds(ask.duration_seconds)
        .set_external_id(ask.external_id.clone())
        .set_tags(session_tags(ask.tags)?)
        .send()
        .await
        .op("sts:AssumeRole")?;
    let c = out.credentials().ok_or(AwsError::Incomplete {
        operation: "sts:AssumeRole",
        missing: "credentials",
    })?;
    let expires = SystemTime::try_from(*c.expiration()).ok();
    let creds = Credentials::new(
        c.access_key_id(),
        c.secret_access_key(),
        Some(c.session_token().to_string()),
        expires,
        "byoc-assume-role",
    );
    let config = config
        .to_builder()
        .credentials_provider(SharedCredentialsProvider::new(creds))
        .build();
    Ok((config, expires))
}

fn session_tags(tags: &[(&str, String)]) -> AwsResult<Option<Vec<aws_sdk_sts::types::Tag>>> {
    if tags.is_empty() {
        return Ok(None);
    }
    tags.iter()
        .map(|(k, v)| {
            aws_sdk_sts::types::Tag::builder()
                .key(*k)
                .value(v)
                .build()
                .map_err(|_| AwsError::Incomplete {
                    operation: "sts:AssumeRole",
                    missing: "a session tag's key or value",
                })
        })
        .collect::<AwsResult<Vec<_>>>()
        .map(Some)
}

/// Who `config`'s credentials are: `(account ID, ARN)`. An answer without
/// either is AWS's fault (`Incomplete`, retried): an empty account ID must
/// never reach a status.
pub async fn caller_identity(
    config: &SdkConfig,
    observer: impl Intercept + 'static,
) -> AwsResult<(String, String)> {
    const OP: &str = "sts:GetCallerIdentity";
    let out = client(config, observer)
        .get_caller_identity()
        .send()
        .await
        .op(OP)?;
    let incomplete = |missing| AwsError::Incomplete {
        operation: OP,
        missing,
    };
    let account = out.account().ok_or_else(|| incomplete("Account"))?;
    let arn = out.arn().ok_or_else(|| incomplete("Arn"))?;
    Ok((account.to_string(), arn.to_string()))
}

fn client(config: &SdkConfig, observer: impl Intercept + 'static) -> aws_sdk_sts::Client {
    aws_sdk_sts::Client::from_conf(
        aws_sdk_sts::config::Builder::from(config)
            .interceptor(observer)
            .build(),
    )
}
