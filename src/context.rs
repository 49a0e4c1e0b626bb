//! What both controllers share: the Kubernetes client, the AWS base
//! configuration, the account cache, per-object backoff, events and status
//! writes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_ec2::types::ArchitectureType;
use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use futures::future::try_join_all;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::account::Accounts;
use crate::aws::{instances, AwsClients};
use crate::metrics::Metrics;
use crate::Error;

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
    /// Watch one namespace only.
    pub namespace: Option<String>,
    /// Reconciles running at once per controller.
    pub concurrency: u16,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            resync: Duration::from_secs(300),
            account_verify_interval: Duration::from_secs(300),
            progress_poll: Duration::from_secs(5),
            namespace: None,
            concurrency: 8,
        }
    }
}

pub struct Context {
    pub client: Client,
    pub aws: SdkConfig,
    pub accounts: Accounts,
    pub settings: Settings,
    pub metrics: Metrics,
    recorder: Recorder,
    backoffs: Mutex<HashMap<String, ExponentialBackoff>>,
    /// Default images by `(region, instance type)`: looked up once.
    images: tokio::sync::Mutex<HashMap<(String, String), String>>,
    /// Available zones by `(CloudAccount namespace/name, region)`: looked up once.
    zones: tokio::sync::Mutex<HashMap<(String, String), Vec<String>>>,
}

impl Context {
    pub fn new(client: Client, aws: SdkConfig, settings: Settings, metrics: Metrics) -> Self {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            accounts: Accounts::new(client.clone(), aws.clone(), metrics.clone()),
            client,
            aws,
            settings,
            metrics,
            backoffs: Mutex::default(),
            images: tokio::sync::Mutex::default(),
            zones: tokio::sync::Mutex::default(),
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

    /// The newest Amazon Linux 2023 image for each of `instance_types` in
    /// `region`: what is not cached costs one architecture lookup for all
    /// and one image lookup per architecture, at once.
    pub async fn default_images(
        &self,
        c: &AwsClients,
        region: &str,
        instance_types: &[String],
    ) -> Result<BTreeMap<String, String>, Error> {
        let key = |t: &str| (region.to_string(), t.to_string());
        let mut found = BTreeMap::new();
        let mut missing = Vec::new();
        {
            let cache = self.images.lock().await;
            for t in instance_types {
                match cache.get(&key(t)) {
                    Some(id) => {
                        found.insert(t.clone(), id.clone());
                    }
                    None if !missing.contains(t) => missing.push(t.clone()),
                    None => {}
                }
            }
        }
        if missing.is_empty() {
            return Ok(found);
        }
        let arches = instances::architectures(c, &missing)
            .await?
            .map_err(Error::InvalidSpec)?;
        let mut distinct: Vec<&ArchitectureType> = arches.values().collect();
        distinct.sort_by_key(|a| a.as_str());
        distinct.dedup();
        let images = try_join_all(distinct.iter().map(|a| instances::newest_image(c, a))).await?;
        let mut by_arch = BTreeMap::new();
        for (arch, image) in distinct.into_iter().zip(images) {
            by_arch.insert(arch.as_str(), image.map_err(Error::InvalidSpec)?);
        }
        let mut cache = self.images.lock().await;
        for (t, arch) in &arches {
            if let Some(id) = by_arch.get(arch.as_str()) {
                cache.insert(key(t), id.clone());
                found.insert(t.clone(), id.clone());
            }
        }
        Ok(found)
    }

    /// The region's available zones as `account` (the CloudAccount's
    /// `namespace/name`) sees them, sorted; looked up once per process.
    pub async fn available_zones(
        &self,
        c: &AwsClients,
        account: &str,
        region: &str,
    ) -> Result<Vec<String>, Error> {
        let key = (account.to_string(), region.to_string());
        // Held across the lookup: clusters asking at once share one call.
        let mut cache = self.zones.lock().await;
        if let Some(zones) = cache.get(&key) {
            return Ok(zones.clone());
        }
        let zones = crate::aws::vpc::zones(c).await?;
        if !zones.is_empty() {
            cache.insert(key, zones.clone());
        }
        Ok(zones)
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
