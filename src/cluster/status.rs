//! The ComputeCluster's status: what was learned, the phase, conditions,
//! Events on transitions, and when to look again.

use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};

use super::converge::Iam;
use super::AccountBlocked;
use crate::api::compute_cluster::{IamStatus, NetworkStatus, NodeGroupStatus};
use crate::api::conditions::{
    self, reason, Desired, ACCOUNT_READY, IAM_READY, NETWORK_READY, NODE_GROUPS_READY, PAUSED,
    READY, RECONCILING, STALLED,
};
use crate::api::{ClusterPhase, ComputeCluster, ComputeClusterStatus};
use crate::aws::ErrorClass;
use crate::context::{apply_status, Context};
use crate::Error;

/// What a reconcile learned, filled in as it goes.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    pub network: NetworkStatus,
    pub iam: Option<IamStatus>,
    node_groups: Option<Vec<NodeGroupStatus>>,
    pub network_ready: bool,
    /// What the cluster waits for (shown in the Reconciling message).
    pub waiting: Vec<String>,
}

impl Progress {
    pub fn set_iam(&mut self, iam: &Iam) {
        self.iam = Some(IamStatus {
            role_name: Some(iam.role_name.clone()),
            instance_profile_arn: Some(iam.profile_arn.clone()),
        });
    }

    pub fn node_groups_mut(&mut self) -> &mut Vec<NodeGroupStatus> {
        self.node_groups.get_or_insert_with(Vec::new)
    }
}

/// Builds and writes the status of one reconcile.
pub struct Report {
    object: ComputeCluster,
    previous: ComputeClusterStatus,
    pub progress: Progress,
    account_ready: Option<Desired>,
}

impl Report {
    pub fn new(cc: &ComputeCluster) -> Self {
        let previous = cc.status.clone().unwrap_or_default();
        // Start from what is known, so a failure early in this pass keeps it.
        let progress = Progress {
            network: previous.network.clone().unwrap_or_default(),
            iam: previous.iam.clone(),
            node_groups: None,
            network_ready: false,
            waiting: vec![],
        };
        Report {
            object: cc.clone(),
            previous,
            progress,
            account_ready: None,
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

    /// Checks the account the CloudAccount resolved to against the one the
    /// cluster's resources live in, and records it before the first AWS
    /// call. `Err` carries the action when the account changed.
    pub async fn record_account(
        mut self,
        ctx: &Context,
        account_id: &str,
    ) -> Result<Self, Result<Action, Error>> {
        match self.previous.aws_account_id.as_deref() {
            Some(id) if id == account_id => Ok(self),
            Some(id) => {
                let message = format!(
                    "the cluster's AWS resources are in account {id}, but spec.cloudAccountRef now resolves to account {account_id}; point it back at account {id}"
                );
                Err(self.stalled(ctx, reason::ACCOUNT_CHANGED, message).await)
            }
            None => {
                self.previous.aws_account_id = Some(account_id.to_string());
                let ns = self.object.namespace().unwrap_or_default();
                let api: Api<ComputeCluster> = Api::namespaced(ctx.client.clone(), &ns);
                match apply_status(&api, &self.object.name_any(), &self.previous).await {
                    Ok(()) => Ok(self),
                    Err(e) => Err(Err(e.into())),
                }
            }
        }
    }

    /// The user must act: the spec, or something AWS refused.
    pub async fn stalled(
        self,
        ctx: &Context,
        reason: &'static str,
        message: String,
    ) -> Result<Action, Error> {
        let backoff = ctx.next_backoff(&self.uid());
        ctx.metrics.failed(super::CONTROLLER, reason, backoff);
        self.write(
            ctx,
            ClusterPhase::Failed,
            Outcome::Stalled { reason, message },
        )
        .await?;
        Ok(Action::requeue(backoff))
    }

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
        if blocked.stalled {
            return self.stalled(ctx, blocked.reason, blocked.message).await;
        }
        let backoff = ctx.next_backoff(&self.uid());
        ctx.metrics
            .failed(super::CONTROLLER, blocked.reason, backoff);
        let phase = self.previous.phase.unwrap_or(ClusterPhase::Pending);
        self.write(
            ctx,
            phase,
            Outcome::Waiting {
                reason: blocked.reason,
                message: blocked.message,
            },
        )
        .await?;
        Ok(Action::requeue(backoff))
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
        let ns = self.object.namespace().unwrap_or_default();
        let api: Api<ComputeCluster> = Api::namespaced(ctx.client.clone(), &ns);
        apply_status(&api, &self.object.name_any(), &status).await?;
        if !already {
            ctx.publish(&self.object.object_ref(&()), false, reason::PAUSED, message)
                .await;
        }
        Ok(())
    }

    /// Writes the status after convergence ran (or failed).
    pub async fn finish(self, ctx: &Context, result: Result<(), Error>) -> Result<Action, Error> {
        match result {
            Ok(()) => {
                let ready = self.ready_parts();
                if ready.0 && ready.1 && ready.2 {
                    ctx.reset_backoff(&self.uid());
                    self.write(ctx, ClusterPhase::Running, Outcome::Converged)
                        .await?;
                    Ok(Action::requeue(ctx.settings.resync))
                } else {
                    ctx.reset_backoff(&self.uid());
                    let waiting = self.waiting_message();
                    self.write(
                        ctx,
                        ClusterPhase::Provisioning,
                        Outcome::Waiting {
                            reason: reason::PROVISIONING,
                            message: waiting,
                        },
                    )
                    .await?;
                    Ok(Action::requeue(ctx.settings.progress_poll))
                }
            }
            Err(Error::InvalidSpec(message)) => {
                self.stalled(ctx, reason::INVALID_SPEC, message).await
            }
            Err(Error::Aws(e)) if e.class() == ErrorClass::NeedsUser => {
                let reason = if e
                    .code()
                    .is_some_and(|c| c.contains("Unauthorized") || c.contains("AccessDenied"))
                {
                    reason::ACCESS_DENIED
                } else {
                    reason::AWS_ERROR
                };
                self.stalled(ctx, reason, e.to_string()).await
            }
            Err(Error::Aws(e)) => {
                let backoff = ctx.next_backoff(&self.uid());
                ctx.metrics
                    .failed(super::CONTROLLER, e.code().unwrap_or("transport"), backoff);
                tracing::info!(name = %self.object.name_any(), error = %e, ?backoff, "transient AWS error; retrying");
                self.write(
                    ctx,
                    ClusterPhase::Provisioning,
                    Outcome::Waiting {
                        reason: reason::AWS_ERROR,
                        message: format!("retrying after a transient AWS error: {e}"),
                    },
                )
                .await?;
                Ok(Action::requeue(backoff))
            }
            Err(other) => Err(other),
        }
    }

    fn uid(&self) -> String {
        self.object.uid().unwrap_or_default()
    }

    /// `(network, iam, node groups)` ready.
    fn ready_parts(&self) -> (bool, bool, bool) {
        let p = &self.progress;
        let iam = p
            .iam
            .as_ref()
            .is_some_and(|i| i.instance_profile_arn.is_some() && i.role_name.is_some());
        let nodes = p.node_groups.as_ref().is_some_and(|groups| {
            groups
                .iter()
                .all(|g| g.running == g.desired && g.instance_ids.len() == g.desired as usize)
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

    async fn write(
        self,
        ctx: &Context,
        phase: ClusterPhase,
        outcome: Outcome,
    ) -> Result<(), Error> {
        let generation = self.object.meta().generation;
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
        let mut desired = vec![
            part(NETWORK_READY, network, "network"),
            part(IAM_READY, iam, "IAM role and instance profile"),
            part(NODE_GROUPS_READY, nodes, "node groups"),
        ];
        if let Some(a) = &self.account_ready {
            desired.push(a.clone());
        }
        match &outcome {
            Outcome::Converged => desired.extend([
                Desired::new(READY, true, reason::RUNNING, "all parts are ready"),
                Desired::new(RECONCILING, false, reason::RUNNING, ""),
                Desired::new(STALLED, false, reason::RUNNING, ""),
            ]),
            Outcome::Waiting { reason, message } => desired.extend([
                Desired::new(READY, false, reason, message.clone()),
                Desired::new(RECONCILING, true, reason, message.clone()),
                Desired::new(STALLED, false, reason, ""),
            ]),
            Outcome::Stalled { reason, message } => desired.extend([
                Desired::new(READY, false, reason, message.clone()),
                Desired::new(RECONCILING, false, reason, ""),
                Desired::new(STALLED, true, reason, message.clone()),
            ]),
        }
        let node_groups = self
            .progress
            .node_groups
            .clone()
            .unwrap_or_else(|| self.previous.node_groups.clone());
        let status = ComputeClusterStatus {
            observed_generation: generation,
            aws_account_id: self.previous.aws_account_id.clone(),
            phase: Some(phase),
            network: Some(self.progress.network.clone()).filter(|n| n != &NetworkStatus::default()),
            iam: self.progress.iam.clone(),
            nodes: Some(self.nodes_summary()),
            node_groups,
            deletion_blockers: vec![],
            conditions: conditions::merge(
                &self.previous.conditions,
                &desired,
                generation,
                &conditions::now(),
            ),
        };
        let ns = self.object.namespace().unwrap_or_default();
        let api: Api<ComputeCluster> = Api::namespaced(ctx.client.clone(), &ns);
        apply_status(&api, &self.object.name_any(), &status).await?;
        ctx.metrics
            .cluster_phase(&self.uid(), Some(phase_name(phase)));
        if self.previous.phase != Some(phase) {
            let (warning, reason, note) = match &outcome {
                Outcome::Converged => (false, reason::RUNNING, "all parts are ready".to_string()),
                Outcome::Waiting { reason, message } => (false, *reason, message.clone()),
                Outcome::Stalled { reason, message } => (true, *reason, message.clone()),
            };
            ctx.publish(&self.object.object_ref(&()), warning, reason, note)
                .await;
        }
        Ok(())
    }
}

enum Outcome {
    Converged,
    Waiting {
        reason: &'static str,
        message: String,
    },
    Stalled {
        reason: &'static str,
        message: String,
    },
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
