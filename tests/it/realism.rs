//! Each part of the proxy's AWS realism profile alone, at AWS's own pace,
//! against the behaviour it exists to catch: a stale describe acted on
//! (duplicates), an instance profile used before it propagates, a deletion
//! that gives up while dependents drain, calls made faster than AWS admits.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use kube::ResourceExt;
use testground::{Faults, Realism};

use crate::clusters::{counts, delete_leaves_nothing, ground_with_account, wait_running, Counts};
use crate::support::{ensure, kubectl_apply, Ground, OperatorExt};

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
    }
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
    ensure(
        seen.get("hidden").copied().unwrap_or(0) > 0,
        format!("the profile hid nothing from a describe: {seen:?}"),
    )?;
    let c = counts(&g, &uid).await?;
    ensure(
        c == expected(),
        format!("in moto: {c:?}, expected {:?}", expected()),
    )?;
    delete_leaves_nothing(&g, "fresh", &uid).await
}
