//! The ComputeCluster's status: what was learned, and the one writer that
//! turns an [`Outcome`] into phase, conditions, an Event on a phase change
//! and when to look again — for reconciles and deletion alike.

use std::time::Duration;

use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};

use super::ownership::{self, Recorded};
use super::AccountBlocked;
use crate::api::compute_cluster::{CloudAccountRecord, ClusterCost, StorageStatus};
use crate::api::compute_cluster::{DeletionBlocker, IamStatus, NetworkStatus, NodeGroupStatus};
use crate::api::conditions::{
    self, reason, Desired, ACCOUNT_READY, CONSENT_WITHDRAWN, IAM_READY, NETWORK_READY,
    NODE_GROUPS_READY, PAUSED, READY,
};
use crate::api::{CloudAccount, ClusterPhase, ComputeCluster, ComputeClusterStatus};
use crate::context::{apply_status, Context};
use crate::outcome::{Intent, Outcome};
use crate::Error;

/// What a reconcile learned, filled in as it goes.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    pub network: NetworkStatus,
    pub iam: Option<IamStatus>,
    pub storage: StorageStatus,
    node_groups: Option<Vec<NodeGroupStatus>>,
    pub network_ready: bool,
    /// A refresh of the default images acted on this pass.
    pub image_refresh: Option<String>,
    /// Warnings of this pass: `(reason, note)`, an Event each.
    pub notes: Vec<(&'static str, String)>,
    /// What the cluster waits for (shown in the Reconciling message).
    pub waiting: Vec<String>,
    /// AWS is still creating something of the cluster's: a NAT gateway
    /// pending, or an instance launched and not yet running.
    pub aws_creating: bool,
    /// Peering connections waiting for their peer's owner: what each must do.
    pub peering_pending: Vec<String>,
    /// What the cluster costs, as this pass left it.
    pub cost: Option<ClusterCost>,
}

impl Progress {
    /// The node groups' statuses, when the pass got to them.
    pub fn node_groups(&self) -> Option<&[NodeGroupStatus]> {
        self.node_groups.as_deref()
    }

    pub fn node_groups_mut(&mut self) -> &mut Vec<NodeGroupStatus> {
        self.node_groups.get_or_insert_with(Vec::new)
    }
}

/// Where the cluster is, besides the outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Converging: a transient failure is part of provisioning.
    Converging,
    /// Waiting for its account: a transient failure keeps the phase.
    Waiting,
    /// Being deleted: every outcome is `deleting`.
    Deleting,
}

/// The phase an outcome puts a cluster in.
pub fn phase_of(outcome: &Outcome, stage: Stage, previous: Option<ClusterPhase>) -> ClusterPhase {
    match (stage, outcome) {
        (Stage::Deleting, _) | (_, Outcome::Deleting { .. }) => ClusterPhase::Deleting,
        (_, Outcome::Ready { .. }) => ClusterPhase::Running,
        (_, Outcome::NeedsUser { .. }) => ClusterPhase::Failed,
        (Stage::Waiting, Outcome::Transient { .. }) => previous.unwrap_or(ClusterPhase::Pending),
        (_, Outcome::Progressing { .. } | Outcome::Transient { .. }) => ClusterPhase::Provisioning,
    }
}

/// The outcome of a converge pass that returned `result`; `None` for an
/// error the controller's error policy handles (the Kubernetes API).
pub fn outcome_of(
    result: Result<(), Error>,
    ready: bool,
    waiting: String,
) -> Result<Outcome, Error> {
    match result {
        Ok(()) if ready => Ok(Outcome::Ready {
            reason: reason::RUNNING,
            message: "all parts are ready".into(),
        }),
        Ok(()) => Ok(Outcome::Progressing {
            reason: reason::PROVISIONING,
            message: waiting,
        }),
        Err(e) => Outcome::of_error(&e, Intent::Converge).ok_or(e),
    }
}

/// How long the cluster took to come to `running` in a pass that reached
/// it (`phase`): since its `Ready` condition last turned false (its
/// creation, or the change that made it not ready), else since its
/// creation. `None` when it was running already, or is not now. Pure.
pub fn time_to_running(
    previous: &ComputeClusterStatus,
    phase: ClusterPhase,
    created: Option<jiff::Timestamp>,
    now: jiff::Timestamp,
) -> Option<Duration> {
    if phase != ClusterPhase::Running || previous.phase == Some(ClusterPhase::Running) {
        return None;
    }
    let not_ready_since = previous
        .conditions
        .iter()
        .find(|c| c.type_ == READY && c.status == "False")
        .map(|c| c.last_transition_time.0);
    let since = not_ready_since.or(created)?;
    Duration::try_from(now.duration_since(since)).ok()
}

/// A step of a pass goes on with what it made, or stopped the pass (its
/// status written) with when to look again.
pub enum Proceed<T> {
    Go(T),
    Stopped(Action),
}

/// Builds and writes the status of one reconcile.
pub struct Report {
    object: ComputeCluster,
    previous: ComputeClusterStatus,
    pub progress: Progress,
    account_ready: Option<Desired>,
    /// `ConsentWithdrawn`, when the pass found it so (`consent.rs`).
    consent: Option<Desired>,
    deletion_blockers: Vec<DeletionBlocker>,
    stage: Stage,
}

impl Report {
    pub fn new(cc: &ComputeCluster) -> Self {
        let previous = cc.status.clone().unwrap_or_default();
        // Start from what is known, so a failure early in this pass keeps it.
        let progress = Progress {
            network: previous.network.clone().unwrap_or_default(),
            iam: previous.iam.clone(),
            storage: previous.storage.clone().unwrap_or_default(),
            ..Progress::default()
        };
        Report {
            object: cc.clone(),
            previous,
            progress,
            account_ready: None,
            consent: None,
            deletion_blockers: vec![],
            stage: Stage::Converging,
        }
    }

    /// A report of the cluster's deletion.
    pub fn deleting(cc: &ComputeCluster) -> Self {
        Report {
            stage: Stage::Deleting,
            ..Report::new(cc)
        }
    }

    pub fn account_ready(&mut self) {
        self.account_ready = Some(Desired::new(
            ACCOUNT_READY,
            true,
            reason::AS_EXPECTED,
            "the CloudAccount is ready",
        ));
    }

    /// What keeps deletion from finishing (listed in status).
    pub fn blocked_by(mut self, blockers: Vec<DeletionBlocker>) -> Self {
        self.deletion_blockers = blockers;
        self
    }

    /// Checks the account the CloudAccount resolved to against the one the
    /// cluster's resources live in, and the installation that made them
    /// against this one; records the AWS account, the CloudAccount and the
    /// installation before the first AWS call through them; stops the pass
    /// when either changed. A cluster that reached AWS before
    /// installations were recorded keeps `installation` unset until its
    /// resources are adopted ([`Report::adopted`]).
    pub async fn record_account(
        mut self,
        ctx: &Context,
        account: &CloudAccount,
        account_id: &str,
    ) -> Result<Proceed<Self>, Error> {
        let installation = ctx.installation.id();
        let recorded = Recorded {
            installation: self.previous.installation.as_deref(),
            aws_account_id: self.previous.aws_account_id.as_deref(),
        };
        if let Some(foreign) = ownership::foreign(recorded, installation, Some(account_id)) {
            let outcome = foreign.outcome(Intent::Converge);
            return self.settle(ctx, outcome).await.map(Proceed::Stopped);
        }
        let record = CloudAccountRecord {
            namespace: account.namespace().unwrap_or_default(),
            name: account.name_any(),
            uid: account.uid().unwrap_or_default(),
        };
        let mut next = self.previous.clone();
        if !self.needs_adoption() {
            next.installation = Some(installation.to_string());
        }
        next.aws_account_id = Some(account_id.to_string());
        next.cloud_account = Some(record);
        if next != self.previous {
            self.previous = next;
            apply_status(&self.api(ctx), &self.object.name_any(), &self.previous).await?;
        }
        Ok(Proceed::Go(self))
    }

    /// The cluster reached AWS before installations were told apart: its
    /// resources lack the installation tag until this pass adopts them.
    pub fn needs_adoption(&self) -> bool {
        self.previous.aws_account_id.is_some() && self.previous.installation.is_none()
    }

    /// Its resources now carry `installation`'s tag: recorded with this
    /// pass's status.
    pub fn adopted(&mut self, installation: &str) {
        self.previous.installation = Some(installation.to_string());
    }

    /// The account cannot be used now: says why, on `AccountReady` too.
    pub async fn account_blocked(
        mut self,
        ctx: &Context,
        blocked: AccountBlocked,
    ) -> Result<Action, Error> {
        self.account_ready = Some(Desired::new(
            ACCOUNT_READY,
            false,
            blocked.reason,
            blocked.message.clone(),
        ));
        if self.stage == Stage::Converging {
            self.stage = Stage::Waiting;
        }
        let outcome = if blocked.stalled {
            Outcome::NeedsUser {
                reason: blocked.reason,
                message: blocked.message,
            }
        } else {
            Outcome::Transient {
                reason: blocked.reason,
                message: blocked.message,
            }
        };
        self.settle(ctx, outcome).await
    }

    /// Reconciliation is paused by the annotation: say so, change nothing
    /// else (phase, parts and `observedGeneration` stay as last reconciled).
    pub async fn paused(self, ctx: &Context) -> Result<(), Error> {
        let already = conditions::is_true(&self.previous.conditions, PAUSED);
        let message = format!(
            "reconciliation is paused by the annotation {}=\"true\"; remove it to resume",
            super::PAUSED_ANNOTATION
        );
        let status = ComputeClusterStatus {
            conditions: conditions::set(
                &self.previous.conditions,
                &Desired::new(PAUSED, true, reason::PAUSED, message.clone()),
                self.object.meta().generation,
                &conditions::now(),
            ),
            ..self.previous.clone()
        };
        apply_status(&self.api(ctx), &self.object.name_any(), &status).await?;
        if !already {
            ctx.publish(&self.object.object_ref(&()), false, reason::PAUSED, message)
                .await;
        }
        Ok(())
    }

    /// The borrowed account withdrew its consent (`consent.rs`): the
    /// cluster is stalled with `reason` (the grace period running, or its
    /// resources released), nothing else changed.
    pub async fn consent(
        mut self,
        ctx: &Context,
        reason: &'static str,
        message: String,
    ) -> Result<(), Error> {
        self.consent = Some(Desired::new(
            CONSENT_WITHDRAWN,
            true,
            reason,
            message.clone(),
        ));
        self.write(ctx, &Outcome::NeedsUser { reason, message })
            .await?;
        Ok(())
    }

    /// `ConsentWithdrawn` as this pass leaves it: the pass's finding, else
    /// given back (False) while the cluster still holds the account it
    /// was withdrawn by, else as it was (a released cluster keeps saying so).
    fn consent_condition(&self) -> Option<Desired> {
        if self.consent.is_some() {
            return self.consent.clone();
        }
        let held = conditions::is_true(&self.previous.conditions, CONSENT_WITHDRAWN);
        (held && self.previous.cloud_account.is_some()).then(|| {
            Desired::new(
                CONSENT_WITHDRAWN,
                false,
                reason::AS_EXPECTED,
                "the CloudAccount allows this namespace again",
            )
        })
    }

    /// Writes the status after convergence ran (or failed).
    /// Writes the outcome of a converge pass that returned `result`: the
    /// outcome's own delay before the next look (`next_look` decides).
    pub async fn finish(self, ctx: &Context, result: Result<(), Error>) -> Result<Duration, Error> {
        let (network, iam, nodes) = self.ready_parts();
        let outcome = outcome_of(result, network && iam && nodes, self.waiting_message())?;
        if let Outcome::Transient { message, .. } = &outcome {
            tracing::info!(name = %self.object.name_any(), error = %message, "transient AWS error; retrying");
        }
        self.write(ctx, &outcome).await
    }

    /// Writes the outcome of a pass that stopped before AWS and says when
    /// to look again: the outcome's own delay.
    pub async fn settle(self, ctx: &Context, outcome: Outcome) -> Result<Action, Error> {
        let after = self.write(ctx, &outcome).await?;
        Ok(Action::requeue(after))
    }

    /// Writes the outcome; returns when to look again.
    pub async fn write(self, ctx: &Context, outcome: &Outcome) -> Result<Duration, Error> {
        let uid = self.object.uid().unwrap_or_default();
        let after = outcome.requeue(ctx, super::CONTROLLER, &uid, ctx.settings.resync);
        let phase = phase_of(outcome, self.stage, self.previous.phase);
        let status = self.status(phase, outcome);
        apply_status(&self.api(ctx), &self.object.name_any(), &status).await?;
        for (reason, note) in &self.progress.notes {
            ctx.publish(&self.object.object_ref(&()), true, reason, note.clone())
                .await;
        }
        ctx.metrics.cluster_phase(&uid, Some(phase_name(phase)));
        let created = self.object.meta().creation_timestamp.as_ref().map(|t| t.0);
        if let Some(took) = time_to_running(&self.previous, phase, created, jiff::Timestamp::now())
        {
            let namespace = self.object.namespace().unwrap_or_default();
            ctx.metrics.came_to_running(&namespace, took);
        }
        if let Some(cost) = &status.cost {
            let namespace = self.object.namespace().unwrap_or_default();
            let name = self.object.name_any();
            let hourly = cost.per_hour.parse::<f64>().ok();
            ctx.metrics.cluster_cost(&uid, &namespace, &name, hourly);
        }
        if self.previous.phase != Some(phase) {
            let note = outcome.message().to_string();
            ctx.publish(
                &self.object.object_ref(&()),
                outcome.is_warning(),
                outcome.reason(),
                note,
            )
            .await;
        }
        Ok(after)
    }

    fn api(&self, ctx: &Context) -> Api<ComputeCluster> {
        Api::namespaced(
            ctx.client.clone(),
            &self.object.namespace().unwrap_or_default(),
        )
    }

    /// What AWS is still creating of the cluster's (see `Progress`).
    pub fn aws_creating(&self) -> bool {
        self.progress.aws_creating
    }

    /// Every part is ready: a pass that did not fail comes out `running`.
    pub fn parts_ready(&self) -> bool {
        let (network, iam, nodes) = self.ready_parts();
        network && iam && nodes
    }

    /// `(network, iam, node groups)` ready.
    fn ready_parts(&self) -> (bool, bool, bool) {
        let p = &self.progress;
        let iam = p
            .iam
            .as_ref()
            .is_some_and(|i| i.instance_profile_arn.is_some());
        let nodes = p.node_groups.as_ref().is_some_and(|groups| {
            groups.iter().all(|g| {
                g.running == g.desired
                    && g.updated == g.desired
                    && g.instance_ids.len() == g.desired as usize
            })
        });
        (p.network_ready, iam, nodes)
    }

    fn waiting_message(&self) -> String {
        let (network, iam, nodes) = self.ready_parts();
        let mut parts = self.progress.waiting.clone();
        if !network && parts.is_empty() {
            parts.push("the network".into());
        }
        if !iam {
            parts.push("the IAM role and instance profile".into());
        }
        if !nodes {
            parts.push(format!(
                "node groups ({} instances running)",
                self.nodes_summary()
            ));
        }
        format!("waiting for {}", parts.join(", "))
    }

    fn nodes_summary(&self) -> String {
        let groups = self
            .progress
            .node_groups
            .as_deref()
            .unwrap_or(&self.previous.node_groups);
        let running: i32 = groups.iter().map(|g| g.running).sum();
        let desired: i32 = self.object.spec.node_groups.iter().map(|g| g.count).sum();
        format!("{running}/{desired}")
    }

    fn part_conditions(&self) -> Vec<Desired> {
        let (network, iam, nodes) = self.ready_parts();
        let part = |type_: &'static str, ok: bool, what: &str| {
            if ok {
                Desired::new(type_, true, reason::AS_EXPECTED, format!("{what} ready"))
            } else {
                Desired::new(
                    type_,
                    false,
                    reason::PROVISIONING,
                    format!("{what} not ready yet"),
                )
            }
        };
        let rolling: Vec<String> = self
            .progress
            .node_groups
            .iter()
            .flatten()
            .filter(|g| g.updated < g.desired && g.running > g.updated)
            .map(|g| format!("{}: {} of {} updated", g.name, g.updated, g.desired))
            .collect();
        let node_groups = if rolling.is_empty() {
            part(NODE_GROUPS_READY, nodes, "node groups")
        } else {
            Desired::new(
                NODE_GROUPS_READY,
                false,
                reason::ROLLING_UPDATE,
                rolling.join("; "),
            )
        };
        let network = match self.progress.peering_pending.is_empty() {
            true => part(NETWORK_READY, network, "network"),
            false => Desired::new(
                NETWORK_READY,
                false,
                reason::PEERING_PENDING_ACCEPTANCE,
                self.progress.peering_pending.join("; "),
            ),
        };
        let mut desired = vec![
            network,
            part(IAM_READY, iam, "IAM role and instance profile"),
            node_groups,
        ];
        desired.extend(self.account_ready.clone());
        desired
    }

    fn status(&self, phase: ClusterPhase, outcome: &Outcome) -> ComputeClusterStatus {
        let generation = self.object.meta().generation;
        let now = conditions::now();
        if self.stage == Stage::Deleting {
            // What was built stays in status until it is gone.
            return ComputeClusterStatus {
                observed_generation: generation,
                phase: Some(phase),
                deletion_blockers: self.deletion_blockers.clone(),
                conditions: conditions::merge(
                    &self.previous.conditions,
                    &outcome
                        .conditions()
                        .into_iter()
                        .chain(self.consent_condition())
                        .collect::<Vec<_>>(),
                    generation,
                    &now,
                ),
                ..self.previous.clone()
            };
        }
        let mut desired = self.part_conditions();
        if outcome.reason() == reason::INSUFFICIENT_CAPACITY {
            desired.retain(|d| d.type_ != NODE_GROUPS_READY);
            desired.push(Desired::new(
                NODE_GROUPS_READY,
                false,
                reason::INSUFFICIENT_CAPACITY,
                outcome.message(),
            ));
        }
        desired.extend(outcome.conditions());
        desired.extend(self.consent_condition());
        ComputeClusterStatus {
            observed_generation: generation,
            aws_account_id: self.previous.aws_account_id.clone(),
            cloud_account: self.previous.cloud_account.clone(),
            installation: self.previous.installation.clone(),
            phase: Some(phase),
            network: Some(self.progress.network.clone()).filter(|n| n != &NetworkStatus::default()),
            iam: self.progress.iam.clone(),
            storage: Some(self.progress.storage.clone()).filter(|s| s != &StorageStatus::default()),
            nodes: Some(self.nodes_summary()),
            cost: self
                .progress
                .cost
                .clone()
                .or_else(|| self.previous.cost.clone()),
            node_groups: self
                .progress
                .node_groups
                .clone()
                .unwrap_or_else(|| self.previous.node_groups.clone()),
            image_refresh: self
                .progress
                .image_refresh
                .clone()
                .or_else(|| self.previous.image_refresh.clone()),
            deletion_blockers: vec![],
            conditions: conditions::merge(&self.previous.conditions, &desired, generation, &now),
        }
    }
}

pub fn phase_name(phase: ClusterPhase) -> &'static str {
    match phase {
        ClusterPhase::Pending => "pending",
        ClusterPhase::Provisioning => "provisioning",
        ClusterPhase::Running => "running",
        ClusterPhase::Deleting => "deleting",
        ClusterPhase::Failed => "failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::AwsError;

    /// Against a mocked apiserver: each outcome is written as its phase
    /// and kstatus conditions, with one Event of its kind, and comes back
    /// as its next look.
    #[tokio::test]
    async fn an_outcome_is_written_as_its_phase_conditions_event_and_next_look() {
        let object = serde_json::json!({
            "apiVersion": "byoc.dev/v1alpha1", "kind": "ComputeCluster",
            "metadata": {"name": "demo", "namespace": "team-a", "uid": "uid-1", "generation": 2},
            "spec": {"cloudAccountRef": {"name": "acme"}, "region": "us-east-1",
                     "network": {"vpcCidr": "10.0.0.0/16"}},
        });
        let cc: ComputeCluster = serde_json::from_value(object.clone()).expect("a valid cluster");
        let (client, apiserver) = crate::fixtures::apiserver(object);
        let ctx = crate::fixtures::context(client);
        let m = || "m".to_string();
        // (stage, outcome, phase, [Ready, Reconciling, Stalled], warning)
        let rows = [
            (
                Stage::Converging,
                Outcome::Ready {
                    reason: reason::RUNNING,
                    message: m(),
                },
                "running",
                ["True", "False", "False"],
                false,
            ),
            (
                Stage::Converging,
                Outcome::Progressing {
                    reason: reason::PROVISIONING,
                    message: m(),
                },
                "provisioning",
                ["False", "True", "False"],
                false,
            ),
            (
                Stage::Converging,
                Outcome::NeedsUser {
                    reason: reason::ACCESS_DENIED,
                    message: m(),
                },
                "failed",
                ["False", "False", "True"],
                true,
            ),
            (
                Stage::Converging,
                Outcome::Transient {
                    reason: reason::AWS_THROTTLED,
                    message: m(),
                },
                "provisioning",
                ["False", "True", "False"],
                false,
            ),
            (
                Stage::Deleting,
                Outcome::Deleting {
                    reason: reason::DELETING,
                    message: m(),
                },
                "deleting",
                ["False", "True", "False"],
                false,
            ),
        ];
        for (stage, outcome, phase, conditions, warning) in rows {
            let report = Report {
                stage,
                ..Report::new(&cc)
            };
            let after = report.write(&ctx, &outcome).await.expect("written");
            let written = apiserver.status_writes().pop().expect("a status write");
            assert_eq!(written["phase"], phase, "{outcome:?}");
            let status_of = |t: &str| {
                written["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|c| c["type"] == t)
                    .map(|c| (c["status"].clone(), c["reason"].clone()))
            };
            for (t, want) in [READY, "Reconciling", "Stalled"].iter().zip(conditions) {
                assert_eq!(
                    status_of(t),
                    Some((want.into(), outcome.reason().into())),
                    "{outcome:?}: {t}"
                );
            }
            let event = apiserver.events().pop().expect("an Event");
            assert_eq!(event["reason"], outcome.reason(), "{outcome:?}");
            assert_eq!(event["type"], if warning { "Warning" } else { "Normal" });
            let s = &ctx.settings;
            match &outcome {
                Outcome::Ready { .. } => assert_eq!(after, s.resync),
                Outcome::Progressing { .. } | Outcome::Deleting { .. } => {
                    assert_eq!(after, s.progress_poll)
                }
                _ => assert!(after > Duration::ZERO && after < s.resync, "{after:?}"),
            }
        }
        // The failures are counted with their reasons; progress is not.
        let metrics = ctx.metrics.encode().expect("metrics");
        for (reason, counted) in [
            (reason::ACCESS_DENIED, true),
            (reason::AWS_THROTTLED, true),
            (reason::PROVISIONING, false),
        ] {
            let series = format!(
                "byoc_reconcile_errors_total{{controller=\"computecluster\",reason=\"{reason}\"}} 1"
            );
            assert_eq!(metrics.contains(&series), counted, "{series}\n{metrics}");
        }
    }

    #[test]
    fn time_to_running_counts_from_the_last_time_ready_turned_false() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
        let at = |s: i64| jiff::Timestamp::from_second(s).expect("a time");
        let ready = |status: &str, since: i64| Condition {
            type_: READY.into(),
            status: status.into(),
            last_transition_time: Time(at(since)),
            reason: "R".into(),
            message: String::new(),
            observed_generation: None,
        };
        let was = |phase: Option<ClusterPhase>, conditions: Vec<Condition>| ComputeClusterStatus {
            phase,
            conditions,
            ..Default::default()
        };
        let secs = |d: Option<Duration>| d.map(|d| d.as_secs());
        let provisioning = Some(ClusterPhase::Provisioning);
        let now = at(1_000);
        // New: from its creation.
        assert_eq!(
            secs(time_to_running(
                &was(None, vec![]),
                ClusterPhase::Running,
                Some(at(900)),
                now
            )),
            Some(100)
        );
        // Scaled up (not ready since 960): from that change, not creation.
        let scaled = was(provisioning, vec![ready("False", 960)]);
        assert_eq!(
            secs(time_to_running(
                &scaled,
                ClusterPhase::Running,
                Some(at(100)),
                now
            )),
            Some(40)
        );
        // Running already, or not running now: nothing observed.
        let running = was(Some(ClusterPhase::Running), vec![ready("True", 500)]);
        assert_eq!(
            time_to_running(&running, ClusterPhase::Running, Some(at(100)), now),
            None
        );
        assert_eq!(
            time_to_running(&scaled, ClusterPhase::Provisioning, Some(at(100)), now),
            None
        );
        // Nothing to count from.
        assert_eq!(
            time_to_running(&was(None, vec![]), ClusterPhase::Running, None, now),
            None
        );
    }

    #[test]
    fn outcomes_of_a_pass() {
        let aws = |code: &str| {
            Error::Aws(AwsError::Service {
                operation: "ec2:RunInstances",
                code: code.into(),
                message: "m".into(),
                class: crate::aws::error::classify(code, "m", Some(400)),
            })
        };
        // (result, ready, reason, phase, why)
        type Row<'a> = (Result<(), Error>, bool, &'a str, ClusterPhase, &'a str);
        let rows: Vec<Row> = vec![
            (
                Ok(()),
                true,
                reason::RUNNING,
                ClusterPhase::Running,
                "converged",
            ),
            (
                Ok(()),
                false,
                reason::PROVISIONING,
                ClusterPhase::Provisioning,
                "AWS still creating",
            ),
            (
                Err(Error::InvalidSpec(
                    crate::cluster::spec::SpecError::ZonesTwice,
                )),
                false,
                reason::INVALID_SPEC,
                ClusterPhase::Failed,
                "bad spec",
            ),
            (
                Err(Error::IamNameTaken { name: "n".into() }),
                false,
                reason::IAM_NAME_TAKEN,
                ClusterPhase::Failed,
                "a name collision is not a spec error",
            ),
            (
                Err(Error::NoDefaultImage { wanted: "t".into() }),
                false,
                reason::IMAGE_NOT_FOUND,
                ClusterPhase::Failed,
                "no image",
            ),
            (
                Err(Error::Internal("x".into())),
                false,
                reason::INTERNAL_ERROR,
                ClusterPhase::Failed,
                "a bug says so",
            ),
            (
                Err(aws("UnauthorizedOperation")),
                false,
                reason::ACCESS_DENIED,
                ClusterPhase::Failed,
                "denied",
            ),
            (
                Err(aws("VcpuLimitExceeded")),
                false,
                reason::QUOTA_EXCEEDED,
                ClusterPhase::Failed,
                "quota",
            ),
            (
                Err(Error::InsufficientCapacity {
                    groups: vec![crate::cluster::kinds::node_groups::Shortfall {
                        group: "workers".into(),
                        count: 1,
                        tried: vec![],
                    }],
                }),
                false,
                reason::INSUFFICIENT_CAPACITY,
                ClusterPhase::Provisioning,
                "no capacity: AWS's state, retried",
            ),
            (
                Err(aws("RequestLimitExceeded")),
                false,
                reason::AWS_THROTTLED,
                ClusterPhase::Provisioning,
                "throttled: provisioning",
            ),
        ];
        for (result, ready, want_reason, want_phase, why) in rows {
            let outcome = outcome_of(result, ready, "waiting".into()).expect(why);
            assert_eq!(outcome.reason(), want_reason, "{why}");
            assert_eq!(
                phase_of(&outcome, Stage::Converging, Some(ClusterPhase::Running)),
                want_phase,
                "{why}"
            );
            assert_eq!(
                phase_of(&outcome, Stage::Deleting, None),
                ClusterPhase::Deleting,
                "{why}"
            );
        }
        let waiting = Outcome::Transient {
            reason: reason::ACCOUNT_NOT_READY,
            message: String::new(),
        };
        assert_eq!(
            phase_of(&waiting, Stage::Waiting, Some(ClusterPhase::Running)),
            ClusterPhase::Running,
            "waiting for the account keeps the phase"
        );
        assert_eq!(
            phase_of(&waiting, Stage::Waiting, None),
            ClusterPhase::Pending
        );
        let kube = Error::WatchStopped { watched: "x" };
        assert!(
            outcome_of(Err(kube), false, String::new()).is_err(),
            "left to the error policy"
        );
    }
}
