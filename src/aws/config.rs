//! The SDK configurations everything else starts from: the environment's
//! endpoint and credential chain, as the SDK finds them.

use aws_config::{AppName, BehaviorVersion, Region, SdkConfig};
use aws_smithy_runtime_api::client::http::SharedHttpClient;

/// A person's command (`audit`, `describe`, `connect`) in `region`: the
/// environment's endpoint and credentials chain, the SDK's own client and
/// timeouts.
pub async fn from_environment(region: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region.to_string()))
        .load()
        .await
}

/// The HTTPS client every AWS call of the operator goes through (inside
/// its pacing): the SDK's own, over rustls.
pub fn https_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .build_https()
}

/// The operator's base: the environment's endpoint and credentials chain
/// (its own identity), every call through `http` (pacing and the fence),
/// named `app` in AWS's records (CloudTrail's userAgent). The SDK's check
/// of upload throughput is off: it starts before the wait for a pacing
/// token, and would time a paced request out; the attempt timeout bounds a
/// stalled upload instead.
pub async fn operator_base(http: SharedHttpClient, app: &str) -> SdkConfig {
    let mut loader =
        aws_config::defaults(BehaviorVersion::latest()).region(Region::new("us-east-1"));
    if let Ok(app) = AppName::new(app.to_string()) {
        loader = loader.app_name(app);
    }
    loader
        .http_client(http)
        .stalled_stream_protection(
            aws_config::stalled_stream_protection::StalledStreamProtectionConfig::enabled()
                .upload_enabled(false)
                .build(),
        )
        .load()
        .await
}
