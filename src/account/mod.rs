//! The CloudAccount controller and the per-account credential cache that
//! the ComputeCluster controller draws on.

pub mod credentials;
pub mod iam_policy;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_config::SdkConfig;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::Mutex;

use crate::api::conditions::{self, reason, Desired, READY, RECONCILING, STALLED};
use crate::api::{AccountPhase, CloudAccount, CloudAccountStatus};
use crate::context::{apply_status, Context};
use crate::leadership::Shutdown;
use crate::metrics::Metrics;
use crate::Error;
use credentials::{resolve, AccountError, ResolvedAccount, REFRESH_BEFORE_EXPIRY};

pub const CONTROLLER: &str = "cloudaccount";

#[derive(Clone)]
struct Cached {
    generation: Option<i64>,
    resolved: ResolvedAccount,
}

/// Verified identities per CloudAccount. The CloudAccount controller
/// replaces an entry on every verification (so a changed Secret or spec takes
/// effect at once); clusters read it, re-resolving when it is missing, stale
/// or near expiry.
pub struct Accounts {
    client: Client,
    aws: SdkConfig,
    metrics: Metrics,
    cache: Mutex<HashMap<(String, String), Cached>>,
}

impl Accounts {
    pub fn new(client: Client, aws: SdkConfig, metrics: Metrics) -> Self {
        Accounts {
            client,
            aws,
            metrics,
            cache: Mutex::default(),
        }
    }

    fn key(account: &CloudAccount) -> (String, String) {
        (account.namespace().unwrap_or_default(), account.name_any())
    }

    /// Resolves the account afresh and caches the result (drops the entry on failure).
    pub async fn verify(&self, account: &CloudAccount) -> Result<ResolvedAccount, AccountError> {
        let result = resolve(&self.client, &self.aws, &self.metrics, account).await;
        let mut cache = self.cache.lock().await;
        match &result {
            Ok(resolved) => {
                cache.insert(
                    Self::key(account),
                    Cached {
                        generation: account.meta().generation,
                        resolved: resolved.clone(),
                    },
                );
            }
            Err(_) => {
                cache.remove(&Self::key(account));
            }
        }
        result
    }

    /// The account's identity for a cluster's use.
    pub async fn get(&self, account: &CloudAccount) -> Result<ResolvedAccount, AccountError> {
        {
            let cache = self.cache.lock().await;
            if let Some(c) = cache.get(&Self::key(account)) {
                let fresh = c
                    .resolved
                    .expires
                    .is_none_or(|t| t > SystemTime::now() + REFRESH_BEFORE_EXPIRY);
                if c.generation == account.meta().generation && fresh {
                    return Ok(c.resolved.clone());
                }
            }
        }
        self.verify(account).await
    }

    pub async fn forget(&self, account: &CloudAccount) {
        self.cache.lock().await.remove(&Self::key(account));
    }
}

/// Runs the CloudAccount controller until shutdown.
pub async fn run(ctx: Arc<Context>, shutdown: Shutdown) {
    let (accounts, secrets) = (ctx.api::<CloudAccount>(), ctx.api::<Secret>());
    let (store, changes) = crate::triggers::user_changes(accounts);
    let controller = Controller::for_stream(changes, store.clone());
    controller
        .watches(
            secrets,
            watcher::Config::default().any_semantic(),
            move |secret: Secret| {
                let ns = secret.namespace();
                let name = secret.name_any();
                store
                    .state()
                    .into_iter()
                    .filter(|a| {
                        a.namespace() == ns
                            && a.spec
                                .credentials_secret_ref
                                .as_ref()
                                .is_some_and(|r| r.name == name)
                    })
                    .map(|a| ObjectRef::from_obj(&*a))
                    .collect::<Vec<_>>()
            },
        )
        .with_config(ControllerConfig::default().concurrency(ctx.settings.concurrency))
        .graceful_shutdown_on(async move {
            shutdown.stopped().await;
        })
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "cloudaccount reconcile");
            }
        })
        .await;
}

async fn reconcile(account: Arc<CloudAccount>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let namespace = account.namespace().unwrap_or_default();
    let name = account.name_any();
    let uid = account.uid().unwrap_or_default();
    let api: Api<CloudAccount> = Api::namespaced(ctx.client.clone(), &namespace);
    let previous = account.status.clone().unwrap_or_default();
    let generation = account.meta().generation;

    if account.meta().deletion_timestamp.is_some() {
        ctx.accounts.forget(&account).await;
        return Ok(Action::await_change());
    }

    let result = ctx.accounts.verify(&account).await;
    let (status, action, event) = match &result {
        Ok(resolved) => {
            ctx.reset_backoff(&uid);
            let mut next = ctx.settings.account_verify_interval;
            if let Some(expires) = resolved.expires {
                let until = expires
                    .duration_since(SystemTime::now())
                    .unwrap_or_default()
                    .saturating_sub(REFRESH_BEFORE_EXPIRY);
                next = next.min(until.max(Duration::from_secs(10)));
            }
            let message = format!(
                "verified as {} in account {}",
                resolved.arn, resolved.account_id
            );
            let status = CloudAccountStatus {
                observed_generation: generation,
                account_id: Some(resolved.account_id.clone()),
                arn: Some(resolved.arn.clone()),
                phase: Some(AccountPhase::Ready),
                conditions: conditions::merge(
                    &previous.conditions,
                    &[
                        Desired::new(READY, true, reason::VERIFIED, message.clone()),
                        Desired::new(RECONCILING, false, reason::VERIFIED, ""),
                        Desired::new(STALLED, false, reason::VERIFIED, ""),
                    ],
                    generation,
                    &conditions::now(),
                ),
            };
            (
                status,
                Action::requeue(next),
                (false, reason::VERIFIED, message),
            )
        }
        Err(e) => {
            let backoff = ctx.next_backoff(&uid);
            ctx.metrics.failed(CONTROLLER, e.reason(), backoff);
            let message = e.to_string();
            tracing::info!(%namespace, %name, reason = e.reason(), error = %message, "cloudaccount not verified");
            let status = if e.is_transient() {
                CloudAccountStatus {
                    observed_generation: generation,
                    phase: Some(previous.phase.unwrap_or(AccountPhase::Pending)),
                    conditions: conditions::merge(
                        &previous.conditions,
                        &[
                            Desired::new(READY, false, e.reason(), message.clone()),
                            Desired::new(
                                RECONCILING,
                                true,
                                e.reason(),
                                format!("retrying: {message}"),
                            ),
                            Desired::new(STALLED, false, e.reason(), ""),
                        ],
                        generation,
                        &conditions::now(),
                    ),
                    ..previous.clone()
                }
            } else {
                CloudAccountStatus {
                    observed_generation: generation,
                    account_id: None,
                    arn: None,
                    phase: Some(AccountPhase::Failed),
                    conditions: conditions::merge(
                        &previous.conditions,
                        &[
                            Desired::new(READY, false, e.reason(), message.clone()),
                            Desired::new(RECONCILING, false, e.reason(), ""),
                            Desired::new(STALLED, true, e.reason(), message.clone()),
                        ],
                        generation,
                        &conditions::now(),
                    ),
                }
            };
            (
                status,
                Action::requeue(backoff),
                (true, e.reason(), message),
            )
        }
    };
    apply_status(&api, &name, &status).await?;
    if previous.phase != status.phase {
        let (warning, reason, note) = event;
        ctx.publish(&account.object_ref(&()), warning, reason, note)
            .await;
    }
    ctx.metrics.reconciled(CONTROLLER, started.elapsed());
    Ok(action)
}

fn error_policy(account: Arc<CloudAccount>, error: &Error, ctx: Arc<Context>) -> Action {
    let backoff = ctx.next_backoff(&account.uid().unwrap_or_default());
    ctx.metrics
        .failed(CONTROLLER, &error.metric_reason(), backoff);
    tracing::warn!(name = %account.name_any(), error = %error, "cloudaccount reconcile failed");
    Action::requeue(backoff)
}
