//! Each part of the proxy's AWS realism profile alone, at AWS's own pace,
//! against the behaviour it exists to catch: a stale describe acted on
//! (duplicates), an instance profile used before it propagates, a deletion
//! that gives up while dependents drain, calls made faster than AWS admits.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use byoc_operator::api::ComputeCluster;
use kube::ResourceExt;
use testground::{Faults, Realism};

use crate::clusters::{
    counts, delete_leaves_nothing, ground_with_account, ready_account, small_cluster_manifest,
    wait_running, wait_running_within, Counts,
};
use crate::support::{ground_with_crds, kubectl_apply, Ground, Operator, OperatorExt};

/// The profile with every part off, at AWS's pace.
fn nothing() -> Realism {
    Realism {
        states: false,
        iam_propagation: false,
        consistency: false,
        draining: false,
        rate_limits: false,
        ..Realism::aws(1.0)
    }
}

fn with(g: &Ground, realism: Realism) {
    g.proxy.set_faults(Faults {
        realism: Some(realism),
        ..Default::default()
    });
}

/// A one-zone cluster with a NAT gateway, a public and a private worker.
fn cluster(name: &str, cidr: &str) -> String {
    format!("apiVersion: byoc.dev/v1alpha1\nkind: ComputeCluster\nmetadata: {{name: {name}}}\nspec:\n  cloudAccountRef: {{name: acme}}\n  region: us-east-1\n  network: {{vpcCidr: {cidr}, availabilityZones: [us-east-1a], natGateways: single}}\n  nodeGroups:\n  - {{name: edge, instanceType: t3.small, count: 1, subnets: public}}\n  - {{name: workers, instanceType: t3.small, count: 1, subnets: private}}\n")
}

fn expected() -> Counts {
    Counts {
        vpcs: 1,
        subnets: 2,
        internet_gateways: 1,
        nat_gateways: 1,
        addresses: 1,
        route_tables: 2,
        security_groups: 1,
        instances: BTreeMap::from([("t3.small".into(), 2)]),
        roles: 1,
        ..Default::default()
    }
}

/// A ground with a ready account, its operator's progress poll longer
/// than the whole test, and `realism` on.
/// The progress poll of `polled_rarely`: a test that shows a cluster is
/// looked at again when AWS is done asserts it well under this.
const POLL: std::time::Duration = std::time::Duration::from_secs(300);

async fn polled_rarely(name: &str, realism: Realism) -> Result<(Ground, Operator)> {
    let g = ground_with_crds(name).await?;
    let poll = format!("{}s", POLL.as_secs());
    let op = Operator::start(&g, &["--progress-poll", &poll], &[])?;
    ready_account(&g).await?;
    with(&g, realism);
    Ok((g, op))
}

fn events(g: &Ground) -> BTreeMap<String, u64> {
    g.proxy.realism_events()
}

#[tokio::test]
async fn a_stale_describe_after_a_create_duplicates_nothing() -> Result<()> {
    let (g, op) = ground_with_account("realism-consistency", &[]).await?;
    // AWS bounds the window by nothing; three times its usual length
    // (3–6 s) outlasts the operator's requeue delays.
    with(
        &g,
        Realism {
            consistency: true,
            scale: 3.0,
            ..nothing()
        },
    );
    kubectl_apply(&g, &cluster("fresh", "10.20.0.0/16"))?;
    let cc = wait_running(&g, "fresh", |_| true)
        .await
        .with_context(|| op.log_tail(20))?;
    let uid = cc.uid().context("uid")?;
    let seen = events(&g);
    println!("consistency at AWS's pace: {seen:?}");
    assert!(
        seen.get("hidden").copied().unwrap_or(0) > 0,
        "the profile hid nothing from a describe: {seen:?}"
    );
    let c = counts(&g, &uid).await?;
    assert_eq!(c, expected(), "in moto: {c:?}, expected {:?}", expected());
    delete_leaves_nothing(&g, "fresh", &uid).await
}

/// Where a cluster that did not come to `running` stopped: its status, the
/// Events of its namespace, the calls AWS refused, and the operator's last
/// words, so that a pass left to the poll says why.
async fn where_it_stopped(g: &Ground, op: &Operator, name: &str) -> String {
    let cc = g.api::<ComputeCluster>().get(name).await;
    let status = cc.map(|c| serde_json::to_string(&c.status).unwrap_or_default());
    let api = g.api::<k8s_openapi::api::events::v1::Event>();
    let said: Vec<String> = match api.list(&Default::default()).await {
        Ok(list) => list
            .items
            .into_iter()
            .map(|e| format!("{:?} {:?}: {:?}", e.type_, e.reason, e.note))
            .collect(),
        Err(e) => vec![format!("no Events: {e}")],
    };
    format!(
        "status: {status:?}\nEvents: {said:#?}\nrefused by the profile: {:?}\noperator log tail:\n{}",
        events(g),
        op.log_tail(20)
    )
}

#[tokio::test]
async fn a_call_naming_what_was_just_made_is_retried_within_the_pass() -> Result<()> {
    // A pass ended by AWS not knowing a new ID yet would be looked at
    // again only after the poll.
    let (g, op) = polled_rarely(
        "realism-retry",
        Realism {
            consistency: true,
            ..nothing()
        },
    )
    .await?;
    kubectl_apply(&g, &cluster("retried", "10.27.0.0/16"))?;
    // Before the poll: a pass that ended on a refusal would be looked at
    // again only after it. A quiet machine takes 10–20 s; the margin is
    // for a loaded one with the IAM evaluator judging every call.
    let cc = match wait_running_within(&g, "retried", POLL * 4 / 5, |_| true).await {
        Ok(cc) => cc,
        Err(e) => return Err(e.context(where_it_stopped(&g, &op, "retried").await)),
    };
    let seen = events(&g);
    println!("consistency at AWS's pace, calls retried: {seen:?}");
    let refused: u64 = seen
        .iter()
        .filter(|(code, _)| code.ends_with("NotFound"))
        .map(|(_, n)| n)
        .sum();
    assert!(
        refused > 0,
        "no call was refused for naming a new resource: {seen:?}"
    );
    let uid = cc.uid().context("uid")?;
    assert_eq!(
        counts(&g, &uid).await?,
        expected(),
        "the cluster's resources"
    );
    with(&g, nothing());
    delete_leaves_nothing(&g, "retried", &uid).await
}

#[tokio::test]
async fn an_instance_profile_too_new_for_ec2_delays_the_launch_only() -> Result<()> {
    let (g, op) = ground_with_account("realism-iam", &[]).await?;
    with(
        &g,
        Realism {
            iam_propagation: true,
            ..nothing()
        },
    );
    kubectl_apply(&g, &small_cluster_manifest("young", "10.21.0.0/16"))?;
    // The profile is refused for 8–12 s after its creation; the backoff
    // after each refusal is at most 20 s.
    let cc = wait_running(&g, "young", |_| true)
        .await
        .with_context(|| op.log_tail(20))?;
    let seen = events(&g);
    println!("IAM propagation at AWS's pace: {seen:?}");
    assert!(
        seen.get("InvalidParameterValue").copied().unwrap_or(0) > 0,
        "no launch was refused for a young profile: {seen:?}"
    );
    // Waiting for IAM is not the user's to fix: never Stalled (which
    // publishes a Warning Event as the phase turns `failed`).
    let events = g.api::<k8s_openapi::api::events::v1::Event>();
    let warnings: Vec<String> = events
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("young"))
        .map(|e| format!("{:?}: {:?}", e.reason, e.note))
        .collect();
    assert!(
        warnings.is_empty(),
        "the cluster warned while IAM propagated: {warnings:?}"
    );
    let uid = cc.uid().context("uid")?;
    delete_leaves_nothing(&g, "young", &uid).await
}

#[tokio::test]
async fn a_cluster_waiting_for_aws_is_looked_at_when_aws_is_done_not_on_the_poll() -> Result<()> {
    let (g, op) = polled_rarely(
        "realism-wait",
        Realism {
            states: true,
            scale: 0.1,
            ..nothing()
        },
    )
    .await?;
    kubectl_apply(&g, &cluster("waited", "10.26.0.0/16"))?;
    // NAT gateways pending 6–12 s, then instances 1–3 s: on the poll alone
    // the first pass that leaves the NAT gateway pending would be followed
    // by the next after the poll.
    let cc = wait_running(&g, "waited", |_| true)
        .await
        .with_context(|| op.log_tail(20))?;
    // Counted from the proxy's trace: the route through the NAT gateway
    // follows its creation by AWS's pending time, not by the poll.
    let trace = g.proxy.trace();
    let nat_made = trace
        .iter()
        .filter(|c| c.operation == "CreateNatGateway")
        .map(|c| c.end)
        .min()
        .context("no CreateNatGateway in the trace")?;
    let last_route = trace
        .iter()
        .filter(|c| c.operation == "CreateRoute")
        .map(|c| c.accepted)
        .max()
        .context("no CreateRoute in the trace")?;
    let waited = last_route.saturating_sub(nat_made);
    let waits = g.proxy.longest_waits();
    println!("the private route {waited:?} after the NAT gateway, with a {POLL:?} progress poll; AWS's waits {waits:?}");
    assert!(waited < POLL / 3, "the route through the NAT gateway came {waited:?} after it: on the poll, not when AWS was done");
    assert_eq!(
        counts(&g, &cc.uid().context("uid")?).await?,
        expected(),
        "the cluster's resources"
    );
    with(&g, nothing());
    delete_leaves_nothing(&g, "waited", &cc.uid().context("uid")?).await
}

#[tokio::test]
async fn a_deletion_waits_for_instances_and_nat_gateways_to_drain() -> Result<()> {
    let (g, op) = ground_with_account("realism-drain", &[]).await?;
    // With a NAT gateway, whose deletion the operator waits for before
    // its address and subnet; without one, where the subnet and group are
    // deleted while the instance still shuts down.
    kubectl_apply(&g, &cluster("drain", "10.22.0.0/16"))?;
    kubectl_apply(&g, &small_cluster_manifest("bare", "10.23.0.0/16"))?;
    let mut uids = Vec::new();
    for name in ["drain", "bare"] {
        let cc = wait_running(&g, name, |_| true).await?;
        uids.push(cc.uid().context("uid")?);
    }
    // A quarter of AWS's pace: instances shut down for 7.5–15 s, the NAT
    // gateway deletes for 7.5–15 s, and what they hold is refused meanwhile.
    with(
        &g,
        Realism {
            states: true,
            draining: true,
            scale: 0.25,
            ..nothing()
        },
    );
    let (drain, bare) = tokio::join!(
        delete_leaves_nothing(&g, "drain", &uids[0]),
        delete_leaves_nothing(&g, "bare", &uids[1])
    );
    drain.and(bare).with_context(|| op.log_tail(20))?;
    let seen = events(&g);
    println!("draining at a quarter of AWS's pace: {seen:?}");
    let refused = |code: &str| seen.get(code).copied().unwrap_or(0);
    assert!(refused("deleting") > 0 && refused("DependencyViolation") > 0, "no NAT gateway was deleting, or no deletion was refused while an instance shut down: {seen:?}");
    Ok(())
}

/// AWS's request limits at a fifth of their size and rate, in the proxy and
/// in the operator's pacing alike (as for an account whose limits the
/// operator is told).
const LIMITS_FACTOR: &str = "0.2";

#[tokio::test]
async fn clusters_provisioning_at_once_stay_within_the_accounts_rate_limits() -> Result<()> {
    let (g, op) = ground_with_account("realism-rate", &["--aws-pacing", LIMITS_FACTOR]).await?;
    let factor: f64 = LIMITS_FACTOR.parse()?;
    with(
        &g,
        Realism {
            rate_limits: true,
            limits: testground::realism::Limits::default().times(factor),
            ..nothing()
        },
    );
    g.proxy.reset_calls();
    let names = ["rate-a", "rate-b", "rate-c"];
    for (i, name) in names.iter().enumerate() {
        kubectl_apply(
            &g,
            &small_cluster_manifest(name, &format!("10.{}.0.0/16", 30 + i)),
        )?;
    }
    for name in names {
        wait_running(&g, name, |_| true)
            .await
            .with_context(|| op.log_tail(20))?;
    }
    let calls: u64 = g.proxy.calls().values().sum();
    let throttled = g.proxy.throttled();
    let share = throttled as f64 / calls.max(1) as f64;
    let paced = ["ec2", "iam"]
        .iter()
        .map(|s| op.metric(&format!("byoc_aws_paced_total{{service=\"{s}\"}}")))
        .sum::<Result<f64>>()?;
    println!(
        "3 clusters at once under a fifth of AWS's limits: {calls} calls, {throttled} throttled ({:.1} %), {paced} paced",
        share * 100.0
    );
    // Unpaced (--aws-pacing 0), the same 3 clusters made 228 calls, 41
    // throttled (18 %).
    assert!(share < 0.05, "{throttled} of {calls} calls throttled");
    assert!(paced > 0.0, "no call waited for the account's buckets");
    Ok(())
}
