//! What both controllers share: the Kubernetes client, the AWS base
//! configuration, settings, metrics, per-object backoff, events and status
//! writes. Nothing of AWS's or of either controller's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::SdkConfig;
use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::installation::Installation;
use crate::leadership::Shutdown;
use crate::metrics::Metrics;

/// Field manager of every write the operator makes.
pub const MANAGER: &str = "byoc-operator";

/// Operator settings from flags and environment.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Periodic resync of a converged ComputeCluster (drift repair).
    pub resync: Duration,
    /// Periodic re-verification of a ready CloudAccount.
    pub account_verify_interval: Duration,
    /// Requeue delay while AWS is still creating something (NAT gateway, instances).
    pub progress_poll: Duration,
    /// How long a refused offering is skipped.
    pub capacity_refusal_ttl: Duration,
    /// Clusters with spot groups hear AWS's interruptions through a queue
    /// per account and region (`interruption::listener`).
    pub interruption_queue: bool,
    /// Watch one namespace only.
    pub namespace: Option<String>,
    /// Reconciles running at once per controller.
    pub concurrency: u16,
    /// ComputeCluster reconciles running at once per namespace (0: no
    /// limit); deletions are not counted (`cluster::fair`).
    pub namespace_concurrency: usize,
    /// Namespaces whose CloudAccounts may start from the operator's own
    /// identity (`*`: every namespace); elsewhere only from a Secret. The
    /// rule is applied by `account::credentials::Ambient`.
    pub ambient_namespaces: Vec<String>,
    /// How long a cluster keeps a borrowed account after the account no
    /// longer allows its namespace, to be deleted (`cluster::consent`).
    pub withdrawn_consent_grace: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            resync: Duration::from_secs(300),
            account_verify_interval: Duration::from_secs(300),
            progress_poll: Duration::from_secs(5),
            capacity_refusal_ttl: Duration::from_secs(180),
            interruption_queue: true,
            namespace: None,
            concurrency: 8,
            namespace_concurrency: 4,
            ambient_namespaces: vec![],
            withdrawn_consent_grace: Duration::from_secs(24 * 3600),
        }
    }
}

pub struct Context {
    pub client: Client,
    pub aws: SdkConfig,
    /// This installation: tags every resource, keys every external ID.
    pub installation: Installation,
    pub settings: Settings,
    pub metrics: Metrics,
    /// What each cluster holds against its CloudAccount's limits.
    pub ledger: crate::account::limits::Ledger,
    /// List prices, shared by every cluster and `audit`.
    pub prices: crate::prices::Prices,
    /// Use-labelled Secrets as read for both controllers' watches.
    pub secret_reads: crate::triggers::SecretReads,
    recorder: Recorder,
    backoffs: Mutex<HashMap<String, ExponentialBackoff>>,
}

impl Context {
    pub fn new(
        client: Client,
        aws: SdkConfig,
        installation: Installation,
        settings: Settings,
        metrics: Metrics,
    ) -> Self {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        let secret_reads = crate::triggers::SecretReads::new(client.clone());
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            aws,
            installation,
            settings,
            metrics,
            ledger: Default::default(),
            prices: Default::default(),
            secret_reads,
            backoffs: Mutex::default(),
        }
    }

    /// The next retry delay for `key` (an object's UID): exponential with
    /// jitter, 2 s to 5 min.
    pub fn next_backoff(&self, key: &str) -> Duration {
        let mut map = self.backoffs.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(key.to_string())
            .or_insert_with(|| {
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_secs(2))
                    .with_max_delay(Duration::from_secs(300))
                    .with_jitter()
                    .without_max_times()
                    .build()
            })
            .next()
            .unwrap_or(Duration::from_secs(300))
    }

    /// Forgets `key`'s backoff after a success.
    pub fn reset_backoff(&self, key: &str) {
        self.backoffs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// A failed reconcile of `key` by `controller`: the next backoff,
    /// counted in the failure metrics under `reason`.
    pub fn retry_later(&self, controller: &'static str, key: &str, reason: &str) -> Duration {
        let backoff = self.next_backoff(key);
        self.metrics.failed(controller, reason, backoff);
        backoff
    }

    /// Publishes an Event; failures to publish are logged, never fatal.
    pub async fn publish(
        &self,
        object: &ObjectReference,
        warning: bool,
        reason: &str,
        note: String,
    ) {
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, object).await {
            tracing::warn!(error = %e, "publishing an event failed");
        }
    }
}

/// Runs `controller` until `shutdown`, `concurrency` reconciles at once; a
/// failed reconcile is logged at debug (the error policy said more).
pub async fn run_controller<K, F, Fut, P, C>(
    controller: Controller<K>,
    concurrency: u16,
    shutdown: Shutdown,
    reconcile: F,
    error_policy: P,
    ctx: Arc<C>,
) where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + std::fmt::Debug + Unpin + std::hash::Hash + Eq + Clone + Send + Sync,
    F: FnMut(Arc<K>, Arc<C>) -> Fut,
    Fut: std::future::Future<Output = Result<Action, crate::Error>> + Send + 'static,
    P: Fn(Arc<K>, &crate::Error, Arc<C>) -> Action,
    C: Send + Sync + 'static,
{
    let kind = K::kind(&Default::default()).to_string();
    controller
        .with_config(ControllerConfig::default().concurrency(concurrency))
        .graceful_shutdown_on(async move {
            shutdown.stopped().await;
        })
        .run(reconcile, error_policy, ctx)
        .for_each(|result| {
            let kind = kind.clone();
            async move {
                if let Err(e) = result {
                    tracing::debug!(%kind, error = %e, "reconcile");
                }
            }
        })
        .await;
}

/// An API over the operator's scope: one namespace, or all of them.
pub fn scoped_api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

impl Context {
    /// [`scoped_api`] with the operator's `--namespace`.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        scoped_api(&self.client, self.settings.namespace.as_deref())
    }
}

/// Writes `status` with server-side apply on the status subresource.
pub async fn apply_status<K, S>(api: &Api<K>, name: &str, status: &S) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize,
{
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await
    .map(|_| ())
}
