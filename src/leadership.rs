//! Leader election on a `coordination.k8s.io/v1` Lease, and the one shutdown
//! signal both controllers stop on: SIGTERM/SIGINT, or leadership lost.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;

use crate::aws::pacing::Fence;

/// How the operator takes part in leader election.
#[derive(Clone, Debug)]
pub struct Election {
    pub lease_name: String,
    pub lease_namespace: String,
    /// This process's name in the Lease (`holderIdentity`).
    pub identity: String,
    /// How long a lease holds without renewal; a successor takes over at most
    /// this long after the holder dies.
    pub lease_duration: Duration,
    /// The field manager of the Lease's writes.
    pub field_manager: String,
}

impl Election {
    /// The identity of this process: the pod's name, or host and PID.
    pub fn default_identity() -> String {
        std::env::var("POD_NAME").unwrap_or_else(|_| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "byoc-operator".into());
            format!("{host}-{}", std::process::id())
        })
    }
}

/// Why the controllers stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    Running,
    /// SIGTERM or SIGINT: finish what runs, release the lease, exit 0.
    Signal,
    /// Another process holds the lease now: stop at once and exit non-zero,
    /// so the pod restarts as a follower.
    LeadershipLost,
}

/// A shutdown signal shared by every part of the process.
#[derive(Clone)]
pub struct Shutdown {
    rx: watch::Receiver<Stop>,
}

impl Shutdown {
    /// Starts listening for SIGTERM and SIGINT.
    pub fn on_signals() -> (Shutdown, watch::Sender<Stop>) {
        let (tx, rx) = watch::channel(Stop::Running);
        let signal_tx = tx.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown signal received");
            signal_tx.send_if_modified(|s| {
                let first = *s == Stop::Running;
                if first {
                    *s = Stop::Signal;
                }
                first
            });
        });
        (Shutdown { rx }, tx)
    }

    /// Resolves when the process should stop.
    pub async fn stopped(mut self) -> Stop {
        match self.rx.wait_for(|s| *s != Stop::Running).await {
            Ok(s) => *s,
            Err(_) => Stop::Signal,
        }
    }

    pub fn state(&self) -> Stop {
        *self.rx.borrow()
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the operator");
            let _ = ctrl_c.await;
        }
    }
}

/// Leadership held by this process.
pub struct Leadership {
    manager: LeaseManager,
}

impl Leadership {
    /// Waits until this process holds the Lease. `None` when shutdown came first.
    pub async fn acquire(
        client: Client,
        election: &Election,
        shutdown: &Shutdown,
    ) -> Result<Option<Leadership>, LeaseManagerError> {
        let seconds = election.lease_duration.as_secs().max(3);
        let manager = LeaseManagerBuilder::new(client, &election.lease_name)
            .with_namespace(&election.lease_namespace)
            .with_identity(&election.identity)
            .with_duration(seconds)
            // Renew when a third of the lease is left.
            .with_grace((seconds / 3).max(1))
            .with_field_manager(&election.field_manager)
            .build()
            .await?;
        tracing::info!(lease = %election.lease_name, namespace = %election.lease_namespace, identity = %election.identity, "waiting for leadership");
        let mut retry = Duration::from_millis(500);
        loop {
            tokio::select! {
                changed = manager.changed() => match changed {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, ?retry, "cannot take part in leader election; retrying");
                        tokio::time::sleep(retry).await;
                        retry = (retry * 2).min(election.lease_duration);
                    }
                },
                _ = shutdown.clone().stopped() => return Ok(None),
            }
        }
        tracing::info!(identity = %election.identity, "leadership acquired");
        Ok(Some(Leadership { manager }))
    }

    /// Resolves when leadership is lost, or cannot be renewed: renewal starts
    /// a third of the lease before expiry, so a failed renewal ends the
    /// leadership here before any successor can take the Lease.
    pub async fn lost(&self) {
        loop {
            match self.manager.changed().await {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    tracing::error!(error = %e, "renewing the lease failed");
                    return;
                }
            }
        }
    }

    /// Gives the Lease up so that a successor need not wait for it to expire.
    pub async fn release(self) {
        match self.manager.release().await {
            Ok(()) => tracing::info!("lease released"),
            Err(e) => tracing::warn!(error = %e, "releasing the lease failed"),
        }
    }
}

/// How far before the Lease could pass to a successor this process stops
/// writing to AWS: a tenth of the lease, at least a second (clock drift
/// between nodes, and a request already on its way).
pub fn fence_margin(lease_duration: Duration) -> Duration {
    (lease_duration / 10).max(Duration::from_secs(1))
}

/// When this process must stop writing, as the Lease shows it: its last
/// renewal plus its duration, less the margin; `None` when another holds it.
pub fn writes_until(lease: &Lease, identity: &str, lease_duration: Duration) -> Option<SystemTime> {
    let spec = lease.spec.as_ref()?;
    if spec.holder_identity.as_deref() != Some(identity) {
        return None;
    }
    let renewed = SystemTime::from(spec.renew_time.as_ref()?.0);
    let duration = spec
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map_or(lease_duration, Duration::from_secs)
        .min(lease_duration);
    renewed
        .checked_add(duration)?
        .checked_sub(fence_margin(lease_duration))
}

/// Keeps `fence` open while the Lease shows this process's renewals: reads
/// the Lease four times a lease, each read with a deadline of a quarter
/// lease. A read that fails or hangs extends nothing, so the fence closes
/// by itself in time; another holder closes it at once.
pub async fn keep_fence(client: Client, election: Election, fence: Arc<Fence>) {
    let every = fence_period(&election);
    loop {
        tokio::time::sleep(every).await;
        refresh_fence(&client, &election, &fence).await;
    }
}

/// How often the fence is refreshed, and how long one read may take.
fn fence_period(election: &Election) -> Duration {
    (election.lease_duration / 4).max(Duration::from_millis(250))
}

/// One read of the Lease, and the fence set from it.
pub async fn refresh_fence(client: &Client, election: &Election, fence: &Fence) {
    let api: Api<Lease> = Api::namespaced(client.clone(), &election.lease_namespace);
    let every = fence_period(election);
    match tokio::time::timeout(every, api.get(&election.lease_name)).await {
        Ok(Ok(lease)) => match writes_until(&lease, &election.identity, election.lease_duration) {
            Some(until) => fence.hold_until(until),
            None => {
                tracing::warn!(lease = %election.lease_name, "the Lease is not ours: AWS writes stop");
                fence.close();
            }
        },
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "reading the Lease failed; AWS writes stop when it runs out")
        }
        Err(_) => {
            tracing::warn!(
                ?every,
                "reading the Lease took too long; AWS writes stop when it runs out"
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    fn lease(holder: &str, renewed: SystemTime, seconds: i32) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                renew_time: jiff::Timestamp::try_from(renewed).ok().map(MicroTime),
                lease_duration_seconds: Some(seconds),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn writes_stop_a_margin_before_the_lease_could_pass() {
        let renewed = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let d = Duration::from_secs(15);
        assert_eq!(
            writes_until(&lease("a", renewed, 15), "a", d),
            Some(renewed + Duration::from_millis(13_500))
        );
        assert_eq!(
            writes_until(&lease("b", renewed, 15), "a", d),
            None,
            "another holds it"
        );
        // A Lease written with a longer duration than ours is not trusted past ours.
        assert_eq!(
            writes_until(&lease("a", renewed, 600), "a", d),
            Some(renewed + Duration::from_millis(13_500))
        );
        assert_eq!(fence_margin(Duration::from_secs(3)), Duration::from_secs(1));
    }
}
