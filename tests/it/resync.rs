//! The shared resync: settled clusters of one account and region cost one
//! describe per kind per interval together, not one set each, and drift in
//! one of them still reconciles that one.

use std::time::Duration;

use anyhow::{Context as _, Result};
use kube::ResourceExt;

use crate::clusters::{ground_with_account, small_cluster_manifest, wait_running};
use crate::support::{eventually, kubectl_apply, Ground, Operator, OperatorExt};

const INTERVAL: &str = "2s";
const CLUSTERS: usize = 4;

fn resynced(op: &Operator, result: &str) -> Result<f64> {
    op.metric(&format!(
        "byoc_resync_clusters_total{{result=\"{result}\"}}"
    ))
}

/// Waits until the shared resync has looked at `n` more clusters as
/// unchanged than it had when called.
pub(crate) async fn unchanged_grows_by(op: &Operator, n: usize) -> Result<()> {
    let start = resynced(op, "unchanged")?;
    eventually(
        &format!("{n} more clusters resynced unchanged"),
        Duration::from_secs(60),
        || async { Ok((resynced(op, "unchanged")? >= start + n as f64).then_some(())) },
    )
    .await
}

fn calls(g: &Ground, op: &str) -> u64 {
    g.proxy.calls().get(op).copied().unwrap_or_default()
}

#[tokio::test]
async fn settled_clusters_of_one_account_share_one_describe_per_kind() -> Result<()> {
    let (g, op) = ground_with_account("resync-shared", &["--resync-interval", INTERVAL]).await?;
    let names: Vec<String> = (0..CLUSTERS).map(|i| format!("steady-{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        kubectl_apply(
            &g,
            &small_cluster_manifest(name, &format!("10.{}.0.0/16", 40 + i)),
        )?;
    }
    let mut uids = Vec::new();
    for name in &names {
        let cc = wait_running(&g, name, |_| true)
            .await
            .with_context(|| op.log_tail(20))?;
        uids.push(cc.uid().context("no uid")?);
    }
    // Settled: every cluster resynced unchanged at least twice.
    unchanged_grows_by(&op, 2 * CLUSTERS).await?;

    // Three intervals of steady state.
    g.proxy.reset_calls();
    let changed = resynced(&op, "changed")?;
    unchanged_grows_by(&op, 3 * CLUSTERS).await?;
    let shared = calls(&g, "GetAccountAuthorizationDetails");
    let vpcs = calls(&g, "DescribeVpcs");
    let instances = calls(&g, "DescribeInstances");
    let per_cluster = calls(&g, "GetRole");
    println!(
        "{CLUSTERS} settled clusters over {shared} shared resyncs: DescribeVpcs {vpcs}, DescribeInstances {instances}, GetRole {per_cluster}; all calls {:?}",
        g.proxy.calls()
    );
    assert_eq!(
        resynced(&op, "changed")?,
        changed,
        "a settled cluster was found changed with nothing changing"
    );
    assert!(
        (3..=5).contains(&shared),
        "{shared} shared IAM describes over three intervals"
    );
    // One per kind per interval for all of them, not one per cluster.
    assert!(
        vpcs == shared && instances == shared,
        "DescribeVpcs {vpcs} and DescribeInstances {instances} for {shared} intervals"
    );
    assert_eq!(
        per_cluster, 0,
        "{per_cluster} per-cluster IAM describes in steady state"
    );
    // Every read of the interval is one per kind, as for a single cluster:
    // a cluster leaving the shared resync to look for itself would read
    // some kind twice in an interval (the 500-cluster regression).
    let per_kind: Vec<(String, u64)> = g
        .proxy
        .calls()
        .into_iter()
        .filter(|(op, _)| {
            ["Describe", "Get", "List"]
                .iter()
                .any(|p| op.starts_with(p))
        })
        .filter(|(_, n)| *n > shared)
        .collect();
    assert!(
        per_kind.is_empty(),
        "reads more often than once per interval ({shared} intervals): {per_kind:?}"
    );

    // Drift in one cluster reconciles that one.
    let victim = &names[1];
    let api = g.api::<byoc_operator::api::ComputeCluster>();
    let before = api.get(victim).await?;
    let instance = before
        .status
        .as_ref()
        .and_then(|s| s.node_groups.first())
        .and_then(|g| g.instance_ids.first().cloned())
        .context("no instance in status")?;
    g.proxy.reset_calls();
    aws_sdk_ec2::Client::new(&g.aws().await)
        .terminate_instances()
        .instance_ids(&instance)
        .send()
        .await?;
    wait_running(&g, victim, |cc| {
        cc.status
            .as_ref()
            .and_then(|s| s.node_groups.first())
            .is_some_and(|g| g.instance_ids.len() == 1 && g.instance_ids[0] != instance)
    })
    .await
    .with_context(|| {
        let log = op.log();
        let notes: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("\"level\":\"INFO\"") || l.contains("\"level\":\"WARN\""))
            .collect();
        format!(
            "resynced changed {:?} failed {:?}; calls {:?}; {}",
            resynced(&op, "changed"),
            resynced(&op, "failed"),
            g.proxy.calls(),
            notes[notes.len().saturating_sub(15)..].join("\n")
        )
    })?;
    let launched = calls(&g, "RunInstances");
    let per_cluster = calls(&g, "GetRole");
    println!("drift in {victim}: RunInstances {launched}, per-cluster IAM describes {per_cluster}");
    assert_eq!(launched, 1, "{launched} launches to replace one instance");
    // Its own passes only (the repair, and the one that confirms it): the
    // other clusters were not reconciled.
    assert!(
        (1..CLUSTERS as u64).contains(&per_cluster),
        "{per_cluster} per-cluster describes for drift in one of {CLUSTERS} clusters"
    );
    Ok(())
}
