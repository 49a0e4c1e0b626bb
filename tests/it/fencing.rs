//! Fencing: a leader that stops running (frozen past its Lease) sends no
//! AWS write once its successor has started writing. The replicas are
//! processes of the operator with leader election; the proxy's trace says
//! which replica made each call (the SDK's app name is the replica's
//! identity).

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use byoc_operator::aws::pacing::is_write;
use kube::ResourceExt;

use crate::clusters::{apply_example, counts, expected_example, ready_account, wait_running, WAIT};
use crate::operations::{holder, start_replica, wait_leader, LEASE_SECONDS};
use crate::support::{ensure, eventually, install_crds, record_figure, Ground};

/// Whether a traced call wrote to AWS (STS calls never do).
fn writes(op: &str) -> bool {
    op != "AssumeRole" && (is_write("ec2", op) || is_write("iam", op))
}

/// `app`'s writes, in the order the proxy finished them.
fn writes_of(g: &Ground, app: &str) -> Vec<testground::Call> {
    g.proxy
        .trace()
        .into_iter()
        .filter(|c| c.app == app && writes(&c.operation))
        .collect()
}

#[tokio::test]
async fn a_frozen_leader_writes_nothing_after_its_successor_took_over() -> Result<()> {
    let g = Ground::new("fencing").await?;
    install_crds(&g).await?;
    let mut a = start_replica(&g, "replica-a")?;
    wait_leader(&a, "replica-a", WAIT).await?;
    let b = start_replica(&g, "replica-b")?;
    ready_account(&g).await?;
    apply_example(&g)?;
    // Frozen in the middle of provisioning, right after a write.
    eventually("replica-a writing", WAIT, || async {
        Ok((writes_of(&g, "replica-a").len() >= 3).then_some(()))
    })
    .await?;
    a.process.freeze()?;
    let frozen = Instant::now();
    let before = writes_of(&g, "replica-a").len();
    wait_leader(&b, "replica-b", WAIT).await?;
    ensure(
        holder(&g).await?.as_deref() == Some("replica-b"),
        "the Lease names replica-b",
    )?;
    let first = eventually("replica-b's first write", WAIT, || async {
        Ok(writes_of(&g, "replica-b")
            .into_iter()
            .map(|c| c.accepted)
            .min())
    })
    .await?;
    // Thawed: it finds the Lease gone and stops; meanwhile nothing it
    // writes may leave.
    a.process.thaw()?;
    let thawed = frozen.elapsed();
    let end = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = a.process.exit_status()? {
            break status;
        }
        ensure(
            Instant::now() < end,
            "replica-a did not stop after losing the Lease",
        )?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    ensure(
        !status.success(),
        format!("replica-a exited with {status}: leadership lost is an error"),
    )?;
    // A write started after the successor's first one; and one that was
    // already on its way when the process froze (its connection opened
    // before, its answer after): no process can call that one back.
    let (late, on_the_way): (Vec<testground::Call>, Vec<testground::Call>) =
        writes_of(&g, "replica-a")
            .into_iter()
            .filter(|c| c.end > first)
            .partition(|c| c.accepted > first);
    ensure(
        late.is_empty(),
        format!(
            "replica-a started writes after replica-b's first ({first:?} into the trace): {late:?}"
        ),
    )?;
    // The successor finishes: the example as it should be, nothing twice.
    let cc = wait_running(&g, "demo", |_| true).await?;
    let uid = cc.uid().context("uid")?;
    let c = counts(&g, &uid).await?;
    ensure(c == expected_example(3), format!("in moto: {c:?}"))?;
    record_figure(serde_json::json!({
        "suite": "fencing",
        "setup": format!("two operator processes with leader election (lease {LEASE_SECONDS} s); the leader frozen (SIGSTOP) right after its 3rd AWS write while provisioning the example, thawed {:.0} s later, after its successor's first write", thawed.as_secs_f64()),
        "n": 1,
        "figure": format!("AWS writes started by the old leader after the new leader's first: {}; already on their way at the freeze and answered after: {}; the old leader's writes before the freeze: {before}; it stopped on its own (leadership lost); the successor brought the example to running with nothing twice", late.len(), on_the_way.len()),
        "pass": true,
    }))
}
