//! CloudAccount against moto with IAM enforcement on: keys, permissions,
//! role trust policies and external IDs are checked for real.

use std::time::Duration;

use anyhow::{Context as _, Result};
use byoc_operator::api::{AccountPhase, CloudAccount};
use k8s_openapi::api::core::v1::Event;
use kube::api::ListParams;

use crate::support::{
    assert_no_key_material, eventually, ground_with_crds, kubectl_apply, CrossAccount, Ground,
    Operator, OperatorExt, SESSION_TOKEN_PREFIX,
};

const WAIT: Duration = Duration::from_secs(60);

fn secret(name: &str, key_id: &str, secret: &str, external_id: Option<&str>) -> String {
    let ext = external_id
        .map(|e| format!("\n  EXTERNAL_ID: {e}"))
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, labels: {{byoc.dev/use: credentials}}}}\nstringData:\n  AWS_ACCESS_KEY_ID: \"{key_id}\"\n  AWS_SECRET_ACCESS_KEY: \"{secret}\"{ext}\n"
    )
}

fn account(name: &str, secret: Option<&str>, role: &str, external_id: Option<&str>) -> String {
    let secret = secret
        .map(|s| format!("\n  credentialsSecretRef: {{name: {s}}}"))
        .unwrap_or_default();
    let ext = external_id
        .map(|e| format!("\n  externalId: {e}"))
        .unwrap_or_default();
    format!(
        "apiVersion: byoc.dev/v1alpha1\nkind: CloudAccount\nmetadata: {{name: {name}}}\nspec:\n  region: us-east-1{secret}\n  roleArn: {role}{ext}\n"
    )
}

/// Waits until the account reaches `phase` and returns it.
async fn wait_phase(g: &Ground, name: &str, phase: AccountPhase) -> Result<CloudAccount> {
    let api = g.api::<CloudAccount>();
    eventually(
        &format!("CloudAccount {name} to be {phase:?}"),
        WAIT,
        || async {
            let a = api.get(name).await?;
            let now = a.status.as_ref().and_then(|s| s.phase);
            Ok((now == Some(phase)).then_some(a))
        },
    )
    .await
}

fn condition<'a>(
    a: &'a CloudAccount,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    a.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

/// Asserts that the account failed, Stalled with `reason`, and that the
/// message contains each of `mentions`.
fn assert_stalled(a: &CloudAccount, reason: &str, mentions: &[&str]) -> Result<()> {
    let stalled = condition(a, "Stalled").context("no Stalled condition")?;
    anyhow::ensure!(
        stalled.status == "True" && stalled.reason == reason,
        "expected Stalled=True/{reason}, got {}/{}: {}",
        stalled.status,
        stalled.reason,
        stalled.message
    );
    for m in mentions {
        anyhow::ensure!(
            stalled.message.contains(m),
            "message does not mention {m}: {}",
            stalled.message
        );
    }
    let ready = condition(a, "Ready").context("no Ready condition")?;
    anyhow::ensure!(ready.status == "False", "Ready should be False");
    Ok(())
}

#[tokio::test]
async fn verifies_identity_and_reports_each_failure() -> Result<()> {
    let g = ground_with_crds("ca-verify").await?;
    let x = CrossAccount::set_up(&g).await?;
    let op = Operator::start(&g, &[], &[("RUST_LOG", "trace")])?;

    kubectl_apply(
        &g,
        &secret("keys", &x.base_key_id, &x.base_secret, Some(&x.external_id)),
    )?;
    kubectl_apply(&g, &secret("no-secret-key", &x.base_key_id, "", None))?;
    kubectl_apply(
        &g,
        &secret(
            "bogus",
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            None,
        ),
    )?;
    kubectl_apply(&g, &account("good", Some("keys"), &x.role_arn, None))?;
    kubectl_apply(
        &g,
        &account(
            "wrong-external-id",
            Some("keys"),
            &x.role_arn,
            Some("not-the-id"),
        ),
    )?;
    kubectl_apply(
        &g,
        &account("untrusted", Some("keys"), &x.untrusting_role_arn, None),
    )?;
    kubectl_apply(
        &g,
        &account("missing-secret", Some("nowhere"), &x.role_arn, None),
    )?;
    kubectl_apply(
        &g,
        &account("missing-key", Some("no-secret-key"), &x.role_arn, None),
    )?;
    kubectl_apply(&g, &account("rejected", Some("bogus"), &x.role_arn, None))?;

    let good = wait_phase(&g, "good", AccountPhase::Ready).await?;
    let status = good.status.clone().unwrap_or_default();
    assert_eq!(
        status.account_id.as_deref(),
        Some("123456789012"),
        "accountId: {:?}",
        status.account_id
    );
    let expected_arn = format!("assumed-role/byoc-cross-account/byoc.{}.good", g.namespace);
    assert!(
        status
            .arn
            .as_deref()
            .is_some_and(|a| a.contains(&expected_arn)),
        "arn {:?} is not the assumed role's session",
        status.arn
    );
    assert!(
        condition(&good, "Ready").is_some_and(|c| c.status == "True"),
        "Ready=True"
    );
    assert_eq!(
        status.observed_generation, good.metadata.generation,
        "observedGeneration"
    );

    let a = wait_phase(&g, "wrong-external-id", AccountPhase::Failed).await?;
    assert_stalled(&a, "AssumeRoleDenied", &[&x.role_arn, "AccessDenied"])?;
    let a = wait_phase(&g, "untrusted", AccountPhase::Failed).await?;
    assert_stalled(&a, "AssumeRoleDenied", &[&x.untrusting_role_arn])?;
    let a = wait_phase(&g, "missing-secret", AccountPhase::Failed).await?;
    assert_stalled(&a, "SecretNotFound", &[&format!("{}/nowhere", g.namespace)])?;
    let a = wait_phase(&g, "missing-key", AccountPhase::Failed).await?;
    assert_stalled(
        &a,
        "SecretKeyMissing",
        &["AWS_SECRET_ACCESS_KEY", "no-secret-key"],
    )?;
    let a = wait_phase(&g, "rejected", AccountPhase::Failed).await?;
    assert_stalled(&a, "CredentialsRejected", &["bogus"])?;

    // A warning Event for a failure, a normal one for success.
    let events = g.api::<Event>().list(&ListParams::default()).await?.items;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("Verified")),
        "no Verified event"
    );
    assert!(
        events.iter().any(|e| {
            e.reason.as_deref() == Some("AssumeRoleDenied") && e.type_.as_deref() == Some("Warning")
        }),
        "no AssumeRoleDenied warning event"
    );

    assert_no_key_material(
        &g,
        &op,
        &[&x.base_secret, &x.base_key_id, SESSION_TOKEN_PREFIX],
    )
    .await
}

#[tokio::test]
async fn rotating_the_secret_reverifies_without_restart() -> Result<()> {
    let g = ground_with_crds("ca-rotate").await?;
    let x = CrossAccount::set_up(&g).await?;
    let mut op = Operator::start(&g, &[], &[("RUST_LOG", "trace")])?;
    let pid = op.process.pid();

    // Start with keys AWS does not know.
    kubectl_apply(
        &g,
        &secret(
            "keys",
            "AKIAIOSFODNN7EXAMPLE",
            "not-a-real-secret-key-0000000000000000",
            Some(&x.external_id),
        ),
    )?;
    kubectl_apply(&g, &account("acct", Some("keys"), &x.role_arn, None))?;
    let a = wait_phase(&g, "acct", AccountPhase::Failed).await?;
    assert_stalled(&a, "CredentialsRejected", &["keys"])?;

    // Rotate in the real keys: verified without a restart.
    kubectl_apply(
        &g,
        &secret("keys", &x.base_key_id, &x.base_secret, Some(&x.external_id)),
    )?;
    let a = wait_phase(&g, "acct", AccountPhase::Ready).await?;
    assert!(
        a.status
            .and_then(|s| s.arn)
            .is_some_and(|arn| arn.contains("assumed-role/byoc-cross-account")),
        "not the assumed role"
    );

    // Rotate to keys that were revoked in IAM: fails again, at once.
    let iam = aws_sdk_iam::Client::new(&x.admin);
    iam.delete_access_key()
        .user_name("byoc-base")
        .access_key_id(&x.base_key_id)
        .send()
        .await?;
    kubectl_apply(
        &g,
        &secret(
            "keys",
            &x.base_key_id,
            &x.base_secret,
            Some("rotated-marker"),
        ),
    )?;
    let a = wait_phase(&g, "acct", AccountPhase::Failed).await?;
    assert_stalled(&a, "CredentialsRejected", &[])?;

    op.process.check_alive()?;
    assert_eq!(op.process.pid(), pid, "the operator was restarted");
    assert_no_key_material(
        &g,
        &op,
        &[&x.base_secret, &x.base_key_id, SESSION_TOKEN_PREFIX],
    )
    .await?;
    Ok(())
}
