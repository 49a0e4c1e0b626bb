//! Capacity AWS refuses: ordered instance types, spot with on-demand
//! fallback, refusals remembered for a while. The proxy plays AWS's
//! refusals (moto has none).

use anyhow::{Context as _, Result};
use byoc_operator::api::{ClusterPhase, ComputeCluster, InstanceStatus, Market};
use kube::ResourceExt;
use testground::{Faults, Refusal};

use crate::clusters::{
    condition_with, delete_leaves_nothing, ground_with_account, patch_spec, small_cluster_manifest,
    uid_of, wait_running,
};
use crate::support::{eventually, kubectl_apply, Edited, Ground, Operator, OperatorExt};

/// A two-zone cluster (public subnets, no NAT) whose one group is `group`.
fn two_zone_manifest(name: &str, cidr: &str, group: &str) -> String {
    small_cluster_manifest(name, cidr)
        .edited(
            "availabilityZones: [us-east-1a]",
            "availabilityZones: [us-east-1a, us-east-1b]",
        )
        .edited(
            "nodeGroups: [{name: workers, instanceType: t3.small, count: 1, subnets: public}]",
            &format!("nodeGroups: [{{name: workers, subnets: public, {group}}}]"),
        )
}

/// `(zone, type, capacity type)` of each instance status shows, sorted.
fn placements(cc: &ComputeCluster) -> Vec<(String, String, Market)> {
    let mut out: Vec<(String, String, Market)> = cc
        .status
        .iter()
        .flat_map(|s| s.node_groups.iter())
        .flat_map(|g| g.instances.iter())
        .map(|i: &InstanceStatus| (i.zone.clone(), i.instance_type.clone(), i.capacity_type))
        .collect();
    out.sort();
    out
}

fn run_instances(g: &Ground) -> u64 {
    g.proxy.calls().get("RunInstances").copied().unwrap_or(0)
}

#[tokio::test]
async fn a_refused_type_falls_back_to_the_next_in_that_zone_only_and_is_not_retried_in_its_window(
) -> Result<()> {
    let (g, _op) =
        ground_with_account("capacity-types", &["--capacity-refusal-ttl", "10m"]).await?;
    g.proxy.set_faults(Faults {
        refusals: vec![Refusal {
            instance_type: Some("m6i.large".into()),
            zone: Some("us-east-1a".into()),
            code: "InsufficientInstanceCapacity".into(),
            ..Default::default()
        }],
        ..Default::default()
    });
    let group = "instanceTypes: [m6i.large, m5.large], count: 2";
    kubectl_apply(&g, &two_zone_manifest("types", "10.30.0.0/16", group))?;
    let landed = |cc: &ComputeCluster, n: usize| {
        let p = placements(cc);
        p.len() == n && p.iter().all(|(zone, ..)| !zone.is_empty())
    };
    let cc = wait_running(&g, "types", |cc| landed(cc, 2)).await?;
    let uid = cc.uid().context("uid")?;
    let want = vec![
        (
            "us-east-1a".to_string(),
            "m5.large".to_string(),
            Market::OnDemand,
        ),
        (
            "us-east-1b".to_string(),
            "m6i.large".to_string(),
            Market::OnDemand,
        ),
    ];
    assert_eq!(placements(&cc), want, "placements: {:?}", placements(&cc));

    // Scaled to 4: one more per zone, and the refused offering is not
    // asked again within its window (two RunInstances, not three).
    let before = run_instances(&g);
    patch_spec(
        &g,
        "types",
        serde_json::json!({"nodeGroups": [{"name": "workers", "subnets": "public",
            "instanceTypes": ["m6i.large", "m5.large"], "count": 4}]}),
    )
    .await?;
    let cc = wait_running(&g, "types", |cc| landed(cc, 4)).await?;
    let calls = run_instances(&g) - before;
    let mut want4 = want.clone();
    want4.extend(want);
    want4.sort();
    assert!(
        placements(&cc) == want4 && calls == 2,
        "placements {:?} after {calls} RunInstances",
        placements(&cc)
    );
    delete_leaves_nothing(&g, "types", &uid).await
}

#[tokio::test]
async fn spot_refused_falls_back_to_on_demand_or_says_insufficient_capacity_until_accepted(
) -> Result<()> {
    let (g, _op) = ground_with_account("capacity-spot", &["--capacity-refusal-ttl", "2s"]).await?;
    g.proxy.set_faults(Faults {
        refusals: vec![Refusal {
            spot: Some(true),
            code: "InsufficientInstanceCapacity".into(),
            ..Default::default()
        }],
        ..Default::default()
    });
    let manifest = |name: &str, cidr: &str, capacity: &str| {
        small_cluster_manifest(name, cidr).edited(
            "count: 1, subnets: public}",
            &format!("count: 1, subnets: public, capacityType: {capacity}}}"),
        )
    };
    kubectl_apply(
        &g,
        &manifest("fallback", "10.31.0.0/16", "spotThenOnDemand"),
    )?;
    kubectl_apply(&g, &manifest("spot", "10.32.0.0/16", "spot"))?;

    // spotThenOnDemand: on demand where no spot offering is accepted.
    let cc = wait_running(&g, "fallback", |cc| placements(cc).len() == 1).await?;
    assert_eq!(
        placements(&cc),
        vec![(
            "us-east-1a".to_string(),
            "t3.small".to_string(),
            Market::OnDemand,
        )],
        "spotThenOnDemand landed on {:?}",
        placements(&cc)
    );

    // spot only: not stalled (AWS's state), the condition lists what was tried.
    let said = condition_with(
        &g,
        "spot",
        "NodeGroupsReady",
        "False",
        "InsufficientCapacity",
    )
    .await?;
    assert!(
        said.message
            .contains("spot t3.small in us-east-1a: InsufficientInstanceCapacity"),
        "the condition does not list the offering: {}",
        said.message
    );
    let spot = g.api::<ComputeCluster>().get("spot").await?;
    let status = spot.status.clone().unwrap_or_default();
    assert!(
        status.phase == Some(ClusterPhase::Provisioning)
            && !status
                .conditions
                .iter()
                .any(|c| c.type_ == "Stalled" && c.status == "True"),
        "phase {:?}, conditions {:?}",
        status.phase,
        status.conditions
    );

    // AWS accepts spot again: the group gets its spot instance.
    g.proxy.set_faults(Faults::default());
    let cc = eventually(
        "the spot group recovered",
        crate::clusters::WAIT,
        || async {
            let cc = g.api::<ComputeCluster>().get("spot").await?;
            let running = cc.status.as_ref().and_then(|s| s.phase) == Some(ClusterPhase::Running);
            Ok((running && placements(&cc).len() == 1).then_some(cc))
        },
    )
    .await?;
    assert_eq!(
        placements(&cc)[0].2,
        Market::Spot,
        "recovered onto {:?}",
        placements(&cc)
    );
    for name in ["fallback", "spot"] {
        let uid = uid_of(&g, name).await?;
        delete_leaves_nothing(&g, name, &uid).await?;
    }
    Ok(())
}

#[tokio::test]
async fn impaired_instances_are_replaced_after_their_grace_one_at_a_time() -> Result<()> {
    let (g, _op) = ground_with_account("capacity-health", &["--resync-interval", "1s"]).await?;
    kubectl_apply(
        &g,
        &small_cluster_manifest("health", "10.33.0.0/16").edited(
            "count: 1, subnets: public}",
            "count: 3, subnets: public, healthCheckGracePeriod: 4s}",
        ),
    )?;
    let cc = wait_running(&g, "health", |cc| {
        cc.status.as_ref().and_then(|s| s.nodes.as_deref()) == Some("3/3")
    })
    .await?;
    let uid = cc.uid().context("uid")?;
    let before = crate::clusters::running_instances(&g, &uid).await?;
    let sick: Vec<String> = before.iter().take(2).cloned().collect();
    let started = std::time::Instant::now();
    g.proxy.set_faults(Faults {
        impaired: sick.clone(),
        ..Default::default()
    });
    // Sampled until both are replaced: none goes before its grace, and
    // never more than one of the three is down at once (maxUnavailable 0).
    let lowest = std::cell::Cell::new(usize::MAX);
    let first_gone = std::cell::Cell::new(None);
    eventually(
        "both impaired instances replaced",
        crate::clusters::WAIT,
        || async {
            let now = crate::clusters::running_instances(&g, &uid).await?;
            lowest.set(lowest.get().min(now.len()));
            let gone = sick.iter().filter(|id| !now.contains(id)).count();
            if gone > 0 && first_gone.get().is_none() {
                first_gone.set(Some(started.elapsed()));
            }
            Ok((gone == 2 && now.len() == 3).then_some(()))
        },
    )
    .await?;
    let first = first_gone.get().context("never replaced")?;
    println!(
        "impaired replacement: first gone after {:.1} s (grace 4 s), at least {} of 3 running",
        first.as_secs_f64(),
        lowest.get()
    );
    assert!(
        first >= std::time::Duration::from_secs(4) && lowest.get() >= 2,
        "first gone after {first:?}, lowest running {}",
        lowest.get()
    );
    let note = crate::support::event_note(&g, "UnhealthyInstance", &sick[0]).await?;
    assert!(note.contains("impaired"), "the Event: {note}");
    delete_leaves_nothing(&g, "health", &uid).await
}

#[tokio::test]
async fn a_quota_short_by_one_vcpu_stalls_before_any_create_and_a_denied_quota_api_warns(
) -> Result<()> {
    let (g, op) = ground_with_account("capacity-quota", &[]).await?;
    let quota = |vcpus: f64| Faults {
        quotas: [("L-1216C47A".to_string(), vcpus)].into_iter().collect(),
        ..Default::default()
    };
    // One t3.small is 2 vCPUs; the region runs none: a quota of 1 is short.
    g.proxy.set_faults(quota(1.0));
    g.proxy.reset_calls();
    kubectl_apply(&g, &small_cluster_manifest("quota", "10.34.0.0/16"))?;
    let stalled = crate::clusters::stalled_with(&g, "quota", "QuotaExceeded").await?;
    assert_eq!(
        stalled.message, "needs 2 Standard on-demand vCPUs, quota 1, in use 0 (L-1216C47A)",
        "the condition: {}",
        stalled.message
    );
    let creates: Vec<String> = g
        .proxy
        .calls()
        .into_keys()
        .filter(|op| {
            ["Create", "Run", "Allocate", "Import", "Add", "Attach"]
                .iter()
                .any(|p| op.starts_with(p))
        })
        .collect();
    assert!(
        creates.is_empty(),
        "created before the quota check: {creates:?}"
    );

    // Exactly enough (the control): it converges.
    g.proxy.set_faults(quota(2.0));
    let cc = wait_running(&g, "quota", |_| true).await?;
    let uid = cc.uid().context("uid")?;

    // Quotas denied to the role: a warning, and the scale-up goes on in
    // small batches (a
    // new operator: quotas read are kept for minutes).
    g.proxy.set_faults(Faults {
        quotas_denied: true,
        ..Default::default()
    });
    drop(op);
    let _op = Operator::start(&g, &["--progress-poll", "1s"], &[])?;
    patch_spec(
        &g,
        "quota",
        serde_json::json!({"nodeGroups": [{"name": "workers", "instanceType": "t3.small", "count": 2, "subnets": "public"}]}),
    )
    .await?;
    wait_running(&g, "quota", |cc| {
        cc.status.as_ref().and_then(|s| s.nodes.as_deref()) == Some("2/2")
    })
    .await?;
    let note = crate::support::event_note(&g, "QuotaUnknown", "").await?;
    assert!(
        note.contains("servicequotas:GetServiceQuota") && note.contains("capped at 10 instances"),
        "the Event: {note}"
    );
    delete_leaves_nothing(&g, "quota", &uid).await
}

/// Instances moto runs (pending or running) of every cluster of the test.
async fn live_instances(g: &Ground, uids: &[String]) -> Result<usize> {
    let mut n = 0;
    for uid in uids {
        n += crate::clusters::counts(g, uid)
            .await?
            .instances
            .values()
            .sum::<usize>();
    }
    Ok(n)
}

#[tokio::test]
async fn an_accounts_limit_is_never_passed_by_passes_at_once_and_frees_with_a_deletion(
) -> Result<()> {
    let (g, op) = ground_with_account(
        "limits",
        &["--concurrency", "8", "--namespace-concurrency", "8"],
    )
    .await?;
    // At most three instances through the account, and 8 vCPUs (t3.small
    // has 2): one of four one-instance clusters applied at once must wait.
    let accounts = g.api::<byoc_operator::api::CloudAccount>();
    let limits = serde_json::json!({"total": {"instances": 3}, "perNamespace": {"vcpus": 8}});
    crate::clusters::set_limits(&g, limits).await?;
    let names = crate::clusters::apply_small_clusters(&g, "lim", 4, 60)?;
    let mut uids = vec![];
    for n in &names {
        uids.push(uid_of(&g, n).await?);
    }
    // Three run; the fourth is Stalled naming the limit, the use and the request.
    let (running, refused) = eventually(
        "three running, one over the limit",
        crate::clusters::WAIT,
        || async {
            let (running, refused) = crate::clusters::running_and_over_limit(&g, &names).await?;
            // Never more than the limit, at any look.
            let live = live_instances(&g, &uids).await?;
            anyhow::ensure!(live <= 3, "{live} instances under a limit of 3");
            Ok((running.len() == 3 && refused.len() == 1).then_some((running, refused)))
        },
    )
    .await
    .with_context(|| op.log_tail(20))?;
    let (waiting, message) = refused[0].clone();
    assert!(
        message.contains("limits.total.instances is 3")
            && message.contains("other clusters hold 3")
            && message.contains("asks for 1"),
        "{message}"
    );
    assert_eq!(
        live_instances(&g, &uids).await?,
        3,
        "the one over the limit launched"
    );
    let waiting_uid = uid_of(&g, &waiting).await?;
    assert_eq!(
        crate::clusters::counts(&g, &waiting_uid).await?.vpcs,
        0,
        "the refused cluster made something"
    );
    let usage = eventually("the account's usage", crate::clusters::WAIT, || async {
        let a = accounts.get("acme").await?;
        Ok(a.status
            .and_then(|s| s.usage)
            .filter(|u| u.instances == 3 && u.clusters == 3))
    })
    .await?;
    assert_eq!(usage.vcpus, 6, "three t3.small: {usage:?}");

    // Control: one deleted, the waiting one fits and runs; still never
    // more than three.
    delete_leaves_nothing(&g, &running[0], &uid_of(&g, &running[0]).await?).await?;
    wait_running(&g, &waiting, |_| true)
        .await
        .with_context(|| op.log_tail(20))?;
    let uids: Vec<String> = {
        let mut u = vec![];
        for n in names.iter().filter(|n| **n != running[0]) {
            u.push(uid_of(&g, n).await?);
        }
        u
    };
    assert_eq!(live_instances(&g, &uids).await?, 3);
    for n in names.iter().filter(|n| **n != running[0]) {
        delete_leaves_nothing(&g, n, &uid_of(&g, n).await?).await?;
    }
    Ok(())
}
