//! Prometheus metrics: reconciles, errors by reason, reconcile duration, AWS
//! calls by service and operation and by AWS account, clusters by phase,
//! time to running, usage, limits, cost, and leadership.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use prometheus_client::encoding::EncodeLabelSet;

use crate::aws::error::THROTTLING;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Metric, Registry};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: &'static str,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AwsCallLabels {
    pub service: String,
    pub operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AwsAccountLabels {
    /// The 12-digit AWS account ID the calls went to.
    pub aws_account: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NamespaceLabels {
    pub namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    pub service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AccountLabels {
    /// The CloudAccount's `namespace/name`.
    pub account: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MeasureLabels {
    /// The CloudAccount's `namespace/name`.
    pub account: String,
    /// `clusters`, `instances`, `vcpus` or `gpus`.
    pub measure: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    /// The CloudAccount's `namespace/name`.
    pub account: String,
    /// `total` or `perNamespace`.
    pub scope: &'static str,
    pub measure: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: String,
}

/// The operator's metrics; cheap to clone (shared inside).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// Each family's series names, as `/metrics` shows them once sampled.
    series: Arc<Vec<String>>,
    reconciles: Family<ControllerLabels, Counter>,
    turned_away: Family<ControllerLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    duration: Family<ControllerLabels, Histogram, fn() -> Histogram>,
    backoff: Family<ControllerLabels, Histogram, fn() -> Histogram>,
    aws_calls: Family<AwsCallLabels, Counter>,
    aws_attempts: Family<AwsCallLabels, Counter>,
    aws_errors: Family<AwsCallLabels, Counter>,
    aws_throttled: Family<AwsCallLabels, Counter>,
    aws_account_calls: Family<AwsAccountLabels, Counter>,
    aws_account_throttled: Family<AwsAccountLabels, Counter>,
    time_to_running: Family<NamespaceLabels, Histogram, fn() -> Histogram>,
    aws_paced: Family<ServiceLabels, Counter>,
    aws_paced_seconds: Family<ServiceLabels, Counter<f64>>,
    resynced: Family<ResultLabels, Counter>,
    clusters: Family<PhaseLabels, Gauge>,
    leaked: Family<AccountLabels, Gauge>,
    usage: Family<MeasureLabels, Gauge>,
    limit: Family<LimitLabels, Gauge>,
    cost: Family<ClusterLabels, Gauge<f64, AtomicU64>>,
    leader: Gauge,
    interruption_messages: Family<KindLabels, Counter>,
    interruption_replaced: Histogram,
    installation: Family<InstallationLabels, Gauge>,
    cluster_phases: Arc<Mutex<HashMap<String, String>>>,
    /// The cost series of each cluster UID.
    cluster_costs: Arc<Mutex<HashMap<String, ClusterLabels>>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InstallationLabels {
    /// The installation's public ID (the `byoc.dev/installation` tag).
    pub installation: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registering {
            registry: Registry::with_prefix("byoc"),
            series: vec![],
        };
        let r = &mut registry;
        let mut metrics = Metrics {
            registry: Arc::default(),
            series: Arc::default(),
            installation: add(r, "installation", "1, labelled with this operator installation's public ID (the byoc.dev/installation tag on everything it creates)", Family::default()),
            reconciles: add(r, "reconciles", "Reconciliations finished", Family::default()),
            turned_away: add(r, "reconciles_turned_away", "Reconciliations put off because their namespace already ran its share of the workers (--namespace-concurrency)", Family::default()),
            errors: add(r, "reconcile_errors", "Reconciliations that failed, by reason", Family::default()),
            duration: add(r, "reconcile_duration_seconds", "Time a reconciliation took", Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.005, 2.0, 14)))),
            backoff: add(r, "requeue_backoff_seconds", "Backoff delays chosen after failed reconciliations", Family::new_with_constructor(|| Histogram::new(exponential_buckets(1.0, 2.0, 10)))),
            aws_calls: add(r, "aws_calls", "AWS API operations called", Family::default()),
            aws_attempts: add(r, "aws_attempts", "AWS API attempts, including the SDK's retries", Family::default()),
            aws_errors: add(r, "aws_call_errors", "AWS API operations that failed", Family::default()),
            aws_throttled: add(r, "aws_throttled", "AWS API attempts AWS answered as throttled (RequestLimitExceeded, Throttling and the like)", Family::default()),
            aws_account_calls: add(r, "aws_account_calls", "AWS API operations a ComputeCluster's work called, by the AWS account they went to", Family::default()),
            aws_account_throttled: add(r, "aws_account_throttled", "AWS API attempts of a ComputeCluster's work that AWS answered as throttled, by the AWS account they went to", Family::default()),
            time_to_running: add(r, "cluster_time_to_running_seconds", "Time a ComputeCluster took to come to running: since its Ready condition last turned false (its creation, or the change that made it not ready)", Family::new_with_constructor(|| Histogram::new(exponential_buckets(1.0, 2.0, 12)))),
            aws_paced: add(r, "aws_paced", "AWS API attempts that waited for the account's client-side rate limit", Family::default()),
            aws_paced_seconds: add(r, "aws_paced_seconds", "Time AWS API attempts waited for the account's client-side rate limit", Family::default()),
            resynced: add(r, "resync_clusters", "Settled ComputeClusters looked at by the shared resync of their account and region: unchanged, changed (reconciled), failed (the shared describe failed; reconciled)", Family::default()),
            clusters: add(r, "compute_clusters", "ComputeClusters by phase", Family::default()),
            leaked: add(r, "leaked_resources", "AWS resources with the operator's tags that belong to no live ComputeCluster, by the CloudAccount they were found through (as `byoc-operator audit` finds them; refreshed at most every resync interval)", Family::default()),
            usage: add(r, "account_usage", "What the ComputeClusters using a CloudAccount hold, by measure (as status.usage)", Family::default()),
            limit: add(r, "account_limit", "A CloudAccount's spec.limits, by scope and measure (absent: no cap)", Family::default()),
            cost: add(r, "cluster_cost_usd_per_hour", "What a ComputeCluster's resources cost per hour at list price, as its status.cost estimates", Family::default()),
            interruption_messages: add(r, "interruption_messages", "Messages of the interruption queues, by what they said (spot-interruption, rebalance-recommendation, state-change, scheduled-maintenance, capacity-reservation-interruption, nothing-to-do, not-ours, malformed)", Family::default()),
            interruption_replaced: add(r, "interruption_replaced_seconds", "Time from AWS's notice that it takes an instance back (or a rebalance the group replaces) to the instance ended with its group's count running again", Histogram::new(exponential_buckets(1.0, 2.0, 10))),
            leader: add(r, "leader", "1 while this process reconciles (holds the Lease, or runs without leader election)", Gauge::default()),
            cluster_phases: Arc::default(),
            cluster_costs: Arc::default(),
        };
        metrics.registry = Arc::new(registry.registry);
        metrics.series = Arc::new(registry.series);
        metrics
    }

    pub fn reconciled(&self, controller: &'static str, took: Duration) {
        let l = ControllerLabels { controller };
        self.reconciles.get_or_create(&l).inc();
        self.duration.get_or_create(&l).observe(took.as_secs_f64());
    }

    /// A reconcile put off: its namespace ran its share of the workers.
    pub fn turned_away(&self, controller: &'static str) {
        self.turned_away
            .get_or_create(&ControllerLabels { controller })
            .inc();
    }

    pub fn failed(&self, controller: &'static str, reason: &str, backoff: Duration) {
        self.errors
            .get_or_create(&ErrorLabels {
                controller,
                reason: reason.to_string(),
            })
            .inc();
        self.backoff
            .get_or_create(&ControllerLabels { controller })
            .observe(backoff.as_secs_f64());
    }

    /// An attempt to `service` waited `wait` for the client-side rate limit.
    pub fn paced(&self, service: &str, wait: Duration) {
        let l = ServiceLabels {
            service: service.to_string(),
        };
        self.aws_paced.get_or_create(&l).inc();
        self.aws_paced_seconds
            .get_or_create(&l)
            .inc_by(wait.as_secs_f64());
    }

    /// An interruption queue's message, read as `kind`.
    pub fn interruption_message(&self, kind: &'static str) {
        self.interruption_messages
            .get_or_create(&KindLabels { kind })
            .inc();
    }

    /// An instance AWS takes back was replaced `took` after the notice.
    pub fn interruption_replaced(&self, took: Duration) {
        self.interruption_replaced.observe(took.as_secs_f64());
    }

    /// The shared resync looked at `count` clusters with `result`.
    pub fn resynced(&self, result: &'static str, count: usize) {
        self.resynced
            .get_or_create(&ResultLabels { result })
            .inc_by(count as u64);
    }

    pub fn set_installation(&self, id: &str) {
        self.installation
            .get_or_create(&InstallationLabels {
                installation: id.to_string(),
            })
            .set(1);
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// What the last audit through `account` found.
    pub fn set_leaked(&self, account: &str, resources: usize) {
        let labels = AccountLabels {
            account: account.to_string(),
        };
        self.leaked
            .get_or_create(&labels)
            .set(i64::try_from(resources).unwrap_or(i64::MAX));
    }

    /// Records what cluster `uid` (`namespace/name`) costs per hour (None:
    /// not known).
    pub fn cluster_cost(&self, uid: &str, namespace: &str, name: &str, hourly: Option<f64>) {
        let labels = ClusterLabels {
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        let mut costs = self.cluster_costs.lock().unwrap_or_else(|e| e.into_inner());
        match hourly {
            Some(usd) => {
                self.cost.get_or_create(&labels).set(usd);
                costs.insert(uid.to_string(), labels);
            }
            None => {
                self.cost.remove(&labels);
                costs.remove(uid);
            }
        }
    }

    /// Records the phase of cluster `uid` (None: the cluster is gone, and
    /// so is its cost series).
    pub fn cluster_phase(&self, uid: &str, phase: Option<&str>) {
        if phase.is_none() {
            let gone = self
                .cluster_costs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(uid);
            if let Some(labels) = gone {
                self.cost.remove(&labels);
            }
        }
        let mut phases = self
            .cluster_phases
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let old = match phase {
            Some(p) => phases.insert(uid.to_string(), p.to_string()),
            None => phases.remove(uid),
        };
        if old.as_deref() == phase {
            return;
        }
        if let Some(old) = old {
            self.clusters
                .get_or_create(&PhaseLabels { phase: old })
                .dec();
        }
        if let Some(new) = phase {
            self.clusters
                .get_or_create(&PhaseLabels {
                    phase: new.to_string(),
                })
                .inc();
        }
    }

    /// A CloudAccount's use and caps (`namespace/name`), as its status
    /// shows them.
    pub fn account_usage(
        &self,
        account: &str,
        usage: crate::api::cloud_account::Usage,
        limits: Option<&crate::api::cloud_account::AccountLimits>,
    ) {
        let measures = |u: crate::api::cloud_account::Usage| {
            [
                ("clusters", u.clusters),
                ("instances", u.instances),
                ("vcpus", u.vcpus),
                ("gpus", u.gpus),
            ]
        };
        for (measure, value) in measures(usage) {
            self.usage
                .get_or_create(&MeasureLabels {
                    account: account.to_string(),
                    measure,
                })
                .set(value);
        }
        for (scope, caps) in [
            ("total", limits.and_then(|l| l.total.as_ref())),
            (
                "perNamespace",
                limits.and_then(|l| l.per_namespace.as_ref()),
            ),
        ] {
            let caps = caps.cloned().unwrap_or_default();
            for (measure, cap) in [
                ("clusters", caps.clusters),
                ("instances", caps.instances),
                ("vcpus", caps.vcpus),
                ("gpus", caps.gpus),
            ] {
                let labels = LimitLabels {
                    account: account.to_string(),
                    scope,
                    measure,
                };
                match cap {
                    Some(cap) => {
                        self.limit.get_or_create(&labels).set(cap);
                    }
                    None => {
                        self.limit.remove(&labels);
                    }
                }
            }
        }
    }

    /// Every series name `/metrics` may show (`byoc_reconciles_total`,
    /// `byoc_reconcile_duration_seconds_bucket`, ...), sampled yet or not:
    /// what alerts and dashboards may read.
    pub fn series_names(&self) -> Vec<String> {
        self.series.to_vec()
    }

    /// The text exposition for `/metrics`.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// An SDK interceptor that counts calls, attempts and failures.
    pub fn aws_interceptor(&self) -> AwsCallCounter {
        AwsCallCounter {
            metrics: self.clone(),
            aws_account: None,
        }
    }

    /// The same, also counting by the AWS account `aws_account` the calls
    /// go to.
    pub fn aws_interceptor_for(&self, aws_account: &str) -> AwsCallCounter {
        AwsCallCounter {
            metrics: self.clone(),
            aws_account: Some(AwsAccountLabels {
                aws_account: aws_account.to_string(),
            }),
        }
    }

    /// A cluster of `namespace` came to running after `took`.
    pub fn came_to_running(&self, namespace: &str, took: Duration) {
        self.time_to_running
            .get_or_create(&NamespaceLabels {
                namespace: namespace.to_string(),
            })
            .observe(took.as_secs_f64());
    }
}

/// Counts AWS calls per service and operation.
#[derive(Clone)]
pub struct AwsCallCounter {
    metrics: Metrics,
    aws_account: Option<AwsAccountLabels>,
}

impl std::fmt::Debug for AwsCallCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AwsCallCounter")
    }
}

fn labels(cfg: &ConfigBag) -> Option<AwsCallLabels> {
    cfg.load::<Metadata>().map(|m| AwsCallLabels {
        service: m.service().to_string(),
        operation: m.name().to_string(),
    })
}

/// Whether an error answer's body says AWS throttled the call (an XML
/// `<Code>` or a JSON `__type` of one of the throttling codes).
fn throttled(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body);
    THROTTLING.iter().any(|code| {
        text.contains(&format!("<Code>{code}</Code>")) || text.contains(&format!("\"{code}\""))
    })
}

impl Intercept for AwsCallCounter {
    fn name(&self) -> &'static str {
        "AwsCallCounter"
    }

    fn read_before_attempt(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(l) = labels(cfg) {
            self.metrics.aws_attempts.get_or_create(&l).inc();
        }
        Ok(())
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let body = context
            .response()
            .filter(|r| !r.status().is_success())
            .and_then(|r| r.body().bytes());
        if body.is_some_and(throttled) {
            if let Some(l) = labels(cfg) {
                self.metrics.aws_throttled.get_or_create(&l).inc();
            }
            if let Some(a) = &self.aws_account {
                self.metrics.aws_account_throttled.get_or_create(a).inc();
            }
        }
        Ok(())
    }

    fn read_after_execution(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        // Counted here, once per operation: the operation's metadata is not
        // in the config bag yet before execution.
        if let Some(a) = &self.aws_account {
            self.metrics.aws_account_calls.get_or_create(a).inc();
        }
        if let Some(l) = labels(cfg) {
            self.metrics.aws_calls.get_or_create(&l).inc();
            if context.output_or_error().is_some_and(|r| r.is_err()) {
                self.metrics.aws_errors.get_or_create(&l).inc();
            }
        }
        Ok(())
    }
}

/// Registers `metric` under `name` and hands it back.
/// The registry being filled, and the series names of what it holds.
struct Registering {
    registry: Registry,
    series: Vec<String>,
}

fn add<M: Metric + Clone>(r: &mut Registering, name: &str, help: &str, metric: M) -> M {
    use prometheus_client::metrics::MetricType;
    let full = format!("byoc_{name}");
    let suffixes: &[&str] = match metric.metric_type() {
        MetricType::Counter => &["_total"],
        MetricType::Histogram => &["_bucket", "_sum", "_count"],
        _ => &[""],
    };
    r.series
        .extend(suffixes.iter().map(|s| format!("{full}{s}")));
    r.registry.register(name, help, metric.clone());
    metric
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_names_are_what_metrics_shows_once_sampled() {
        let m = Metrics::new();
        m.reconciled("computecluster", Duration::from_millis(5));
        m.turned_away("computecluster");
        m.cluster_phase("uid", Some("running"));
        let text = m.encode().unwrap_or_default();
        let names = m.series_names();
        for shown in [
            "byoc_reconciles_total",
            "byoc_reconcile_duration_seconds_bucket",
            "byoc_reconciles_turned_away_total",
            "byoc_compute_clusters",
            "byoc_leader",
        ] {
            assert!(
                text.contains(&format!("{shown}{{")) || text.contains(&format!("{shown} ")),
                "{shown} not in /metrics"
            );
            assert!(
                names.iter().any(|n| n == shown),
                "{shown} not among {names:?}"
            );
        }
    }

    #[test]
    fn throttling_is_read_from_xml_and_json_error_bodies() {
        assert!(throttled(b"<Response><Errors><Error><Code>RequestLimitExceeded</Code></Error></Errors></Response>"));
        assert!(throttled(
            b"<ErrorResponse><Error><Code>Throttling</Code></Error></ErrorResponse>"
        ));
        assert!(throttled(
            br#"{"__type":"ThrottlingException","message":"slow down"}"#
        ));
        assert!(!throttled(b"<Response><Errors><Error><Code>InvalidVpcID.NotFound</Code></Error></Errors></Response>"));
        assert!(!throttled(b"<Error><Code>VpcLimitExceeded</Code></Error>"));
    }
}
