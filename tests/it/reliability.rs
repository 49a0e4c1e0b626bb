//! Reliability and security, measured. Each suite asserts its figure and
//! records it (`support::record_figure`); `hack/reliability.sh` runs them
//! with `BYOC_FULL=1` (large N) and writes docs/reliability.md.
//!
//! Every suite uses distinctive credentials and ends by searching the
//! operator's logs and metrics, the Events and every status for them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use byoc_operator::api::{CloudAccount, ComputeCluster};
use kube::api::{DeleteParams, ListParams};
use kube::core::{DynamicObject, GroupVersionKind};
use kube::discovery::ApiResource;
use kube::{Api, ResourceExt};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config as ProptestConfig, RngAlgorithm, TestRng, TestRunner};

use crate::clusters::{
    counts, delete_subnet_out_of_band, example_manifest, expected_example, ready_account_with,
    wait_running_within, Counts, WAIT,
};
use crate::support::{
    assert_no_key_material, assert_no_key_material_in, create_namespace, delete_namespace,
    eventually, full_run, ground_with_crds, kubectl_apply, kubectl_apply_in, record_figure,
    wait_namespace_gone, CrossAccount, Ground, Operator, OperatorExt, SESSION_TOKEN_PREFIX,
};

/// Credentials no suite needs to see again: each is searched for at the end.
const KEY_ID: &str = "AKIARELIABILITY0001";
const SECRET_KEY: &str = "rel1ab1l1ty/secret+key/material/9f8e7d";

/// The ready account `acme`, its Secret holding the suite's keys.
async fn account_acme(g: &Ground) -> Result<()> {
    ready_account_with(
        g,
        &format!("AWS_ACCESS_KEY_ID: {KEY_ID}, AWS_SECRET_ACCESS_KEY: \"{SECRET_KEY}\", EXTERNAL_ID: ext-1"),
    )
    .await
}

fn nodes(cc: &ComputeCluster) -> Option<&str> {
    cc.status.as_ref().and_then(|s| s.nodes.as_deref())
}

/// Waits for `running` at the current generation with `want` nodes.
async fn wait_converged(
    g: &Ground,
    name: &str,
    want: &str,
    deadline: Duration,
) -> Result<ComputeCluster> {
    wait_running_within(g, name, deadline, |cc| nodes(cc) == Some(want)).await
}

fn total_calls(g: &Ground) -> u64 {
    g.proxy.calls().values().sum()
}

fn operator_args() -> Vec<&'static str> {
    // Refusals are not remembered: every launch refused in one zone falls
    // back in another (the crash suite kills during those fallbacks).
    vec![
        "--progress-poll",
        "1s",
        "--resync-interval",
        "5s",
        "--capacity-refusal-ttl",
        "0s",
    ]
}

fn start_operator(g: &Ground) -> Result<Operator> {
    Operator::start(g, &operator_args(), &[])
}

/// The seed of a randomised suite: `BYOC_SEED`, or the clock.
fn seed() -> u64 {
    std::env::var("BYOC_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(1)
        })
}

/// A proptest runner whose draws `seed` repeats.
fn seeded_runner(seed: u64) -> TestRunner {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    TestRunner::new_with_rng(
        ProptestConfig::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
    )
}

/// A run of kill points from a seed: `(phase, calls into the phase)`.
fn kill_schedule(seed: u64, kills: usize) -> Vec<(usize, u64)> {
    let mut runner = seeded_runner(seed);
    // Calls into each phase at which to kill: provisioning ~60 calls,
    // scaling ~15, a rolling replacement of 5 ~30, deletion ~40 (the
    // example against moto).
    let ranges = [1u64..60, 1u64..15, 1u64..30, 1u64..40];
    (0..kills)
        .map(|i| {
            let phase = i % ranges.len();
            let k = ranges[phase]
                .clone()
                .new_tree(&mut runner)
                .map(|t| t.current())
                .unwrap_or(1);
            (phase, k)
        })
        .collect()
}

/// How many of the cluster's workers AWS shows ending or ended.
async fn ended_workers(g: &Ground, uid: &str) -> Result<usize> {
    let states = ["shutting-down", "terminated"];
    let found = crate::clusters::instances_in(g, uid, Some("workers"), &states).await?;
    Ok(found.len())
}

/// SIGKILLs `op` once `calls` more AWS calls than `base` have reached AWS,
/// or when `done` holds first; restarts it. Returns the operation the
/// operator sent last before it died.
async fn kill_after_calls(
    g: &Ground,
    op: &mut Operator,
    base: u64,
    calls: u64,
    done: impl Fn() -> bool,
) -> Result<String> {
    let end = Instant::now() + WAIT;
    while total_calls(g) < base + calls && !done() {
        anyhow::ensure!(
            Instant::now() < end,
            "no AWS progress before the kill point"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    op.process.kill();
    let last = g
        .proxy
        .trace()
        .last()
        .map(|c| c.operation.clone())
        .unwrap_or_default();
    *op = start_operator(g)?;
    Ok(last)
}

/// The realism profile's time scale in the suites: a twentieth of AWS's
/// durations (NAT gateways pending 3–6 s, instances 0.5–1.5 s), rate
/// limits refilled twenty times as fast.
const REALISM_SCALE: f64 = 0.05;

#[tokio::test]
async fn crash_safety_sigkill_at_random_points() -> Result<()> {
    let kills = if full_run() { 30 } else { 6 };
    let seed = seed();
    println!("crash safety: {kills} kills, seed {seed} (BYOC_SEED={seed} repeats it)");
    let g = ground_with_crds("crash").await?;
    // Latency spreads the calls out; AWS's behaviour at a twentieth of its
    // pace (states, IAM propagation, eventual consistency, draining, rate
    // limits); no t3.large capacity in one zone, so each worker launch
    // falls back.
    g.proxy.set_faults(testground::Faults {
        latency: Duration::from_millis(30),
        realism: Some(testground::Realism::aws(REALISM_SCALE)),
        refusals: vec![testground::Refusal {
            instance_type: Some("t3.large".into()),
            zone: Some("us-east-1a".into()),
            code: "InsufficientInstanceCapacity".into(),
            ..Default::default()
        }],
        ..Default::default()
    });
    let mut op = start_operator(&g)?;
    account_acme(&g).await?;
    let schedule = kill_schedule(seed, kills);
    let cycles = schedule.len().div_ceil(4);
    let (mut duplicates, mut leaked) = (0usize, 0usize);
    let mut killed_after: BTreeMap<String, usize> = BTreeMap::new();
    let api = g.api::<ComputeCluster>();
    for cycle in 0..cycles {
        let name = format!("crash-{cycle}");
        let points: Vec<(usize, u64)> = schedule.iter().skip(cycle * 4).take(4).copied().collect();
        let point = |phase: usize| points.iter().find(|p| p.0 == phase).map(|p| p.1);

        // Provisioning.
        let base = total_calls(&g);
        kubectl_apply(&g, &example_manifest(&name)?)?;
        if let Some(k) = point(0) {
            let last = kill_after_calls(&g, &mut op, base, k, || false).await?;
            *killed_after.entry(last).or_default() += 1;
        }
        let cc = wait_converged(&g, &name, "4/4", WAIT).await?;
        let uid = cc.uid().context("uid")?;
        let c = counts(&g, &uid).await?;
        if c != expected_example(3) {
            duplicates += 1;
            println!("{name} after provisioning: {c:?}");
        }

        // Scaling 3 → 5 workers.
        let base = total_calls(&g);
        api.patch(
            &name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"spec": {"nodeGroups": [
                {"name": "workers", "instanceType": "t3.large", "count": 5, "subnets": "private"},
                {"name": "gpu", "instanceType": "g5.xlarge", "count": 1, "spot": true, "subnets": "private"}
            ]}})),
        )
        .await?;
        if let Some(k) = point(1) {
            let last = kill_after_calls(&g, &mut op, base, k, || false).await?;
            *killed_after.entry(last).or_default() += 1;
        }
        wait_converged(&g, &name, "6/6", WAIT).await?;
        let c = counts(&g, &uid).await?;
        if c != expected_example(5) {
            duplicates += 1;
            println!("{name} after scaling: {c:?}");
        }

        // A rolling replacement of the 5 workers (a launch change).
        let ended_before = ended_workers(&g, &uid).await?;
        let base = total_calls(&g);
        api.patch(
            &name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"spec": {"nodeGroups": [
                {"name": "workers", "instanceType": "t3.large", "count": 5, "subnets": "private",
                 "metadataOptions": {"httpTokens": "required", "httpPutResponseHopLimit": 2}},
                {"name": "gpu", "instanceType": "g5.xlarge", "count": 1, "spot": true, "subnets": "private"}
            ]}})),
        )
        .await?;
        if let Some(k) = point(2) {
            let last = kill_after_calls(&g, &mut op, base, k, || false).await?;
            *killed_after.entry(last).or_default() += 1;
        }
        wait_running_within(&g, &name, WAIT, |cc| {
            nodes(cc) == Some("6/6")
                && cc.status.as_ref().is_some_and(|s| {
                    s.node_groups
                        .iter()
                        .any(|n| n.name == "workers" && n.updated == 5)
                })
        })
        .await?;
        let c = counts(&g, &uid).await?;
        let ended = ended_workers(&g, &uid).await? - ended_before;
        if c != expected_example(5) || ended != 5 {
            duplicates += 1;
            println!("{name} after rolling: {c:?}, {ended} workers terminated (5 expected)");
        }

        // Deletion.
        let base = total_calls(&g);
        api.delete(&name, &DeleteParams::default()).await?;
        if let Some(k) = point(3) {
            let last = kill_after_calls(&g, &mut op, base, k, || false).await?;
            *killed_after.entry(last).or_default() += 1;
        }
        eventually(&format!("{name} deleted"), WAIT, || async {
            Ok(api.get_opt(&name).await?.is_none().then_some(()))
        })
        .await?;
        let c = counts(&g, &uid).await?;
        if c != Counts::default() {
            leaked += 1;
            println!("{name} after deletion: {c:?}");
        }
    }
    assert_no_key_material(&g, &op, &[KEY_ID, SECRET_KEY, SESSION_TOKEN_PREFIX]).await?;

    // Last, the whole namespace (Secret, account and a running cluster)
    // deleted in one command, with a kill during it.
    let name = "crash-namespace";
    kubectl_apply(&g, &example_manifest(name)?)?;
    let uid = wait_converged(&g, name, "4/4", WAIT)
        .await?
        .uid()
        .context("uid")?;
    let kill_at = (1u64..40)
        .new_tree(&mut seeded_runner(seed.wrapping_add(1)))
        .map(|t| t.current())
        .unwrap_or(1);
    let base = total_calls(&g);
    let started = Instant::now();
    delete_namespace(&g)?;
    let last = kill_after_calls(&g, &mut op, base, kill_at, || false).await?;
    *killed_after.entry(last).or_default() += 1;
    wait_namespace_gone(&g, Duration::from_secs(180)).await?;
    let namespace_gone = started.elapsed();
    let c = counts(&g, &uid).await?;
    if c != Counts::default() {
        leaked += 1;
        println!("{name} after the namespace's deletion: {c:?}");
    }
    let kills = kills + 1;
    record_figure(serde_json::json!({
        "suite": "crash safety",
        "setup": format!("SIGKILL at a random AWS call during provisioning, scaling, a rolling replacement of 5 workers and deletion of the example (4 → 6 instances), then during the deletion of its whole namespace; 30 ms latency, the AWS realism profile at scale 0.05 (NAT gateways pending 3–6 s, instances 0.5–1.5 s, shutting down and deleting drained, profiles unusable 0.4–0.6 s, describes missing new resources 50–100 ms, EC2/IAM rate limits), t3.large refused in us-east-1a (every worker launch falls back to another zone); seed {seed}"),
        "n": kills,
        "figure": format!("{kills} kills over {cycles} create/scale/roll/delete cycles (a roll terminating more than its 5 old workers counts as a duplicate) and one namespace deletion (gone in {:.0} s): {duplicates} duplicated, {leaked} leaked", namespace_gone.as_secs_f64()),
        "killed_after": killed_after,
        "pass": duplicates == 0 && leaked == 0,
    }))?;
    assert!(
        duplicates == 0 && leaked == 0,
        "{duplicates} cycles with duplicates, {leaked} with leaks (seed {seed})"
    );
    Ok(())
}

#[tokio::test]
async fn aws_faults_transient_errors_at_20_percent() -> Result<()> {
    let g = ground_with_crds("faults").await?;
    let op = start_operator(&g)?;
    account_acme(&g).await?;

    // Fault-free baseline: calls to converge and delete.
    kubectl_apply(&g, &example_manifest("calm")?)?;
    let cc = wait_converged(&g, "calm", "4/4", WAIT).await?;
    let calm_uid = cc.uid().context("uid")?;
    g.api::<ComputeCluster>()
        .delete("calm", &DeleteParams::default())
        .await?;
    let api = g.api::<ComputeCluster>();
    eventually("calm deleted", WAIT, || async {
        Ok(api.get_opt("calm").await?.is_none().then_some(()))
    })
    .await?;
    assert_eq!(
        counts(&g, &calm_uid).await?,
        Counts::default(),
        "calm leaked"
    );
    let baseline = total_calls(&g);

    // 20 % of every AWS call fails: throttling, 503, 500, dropped connection.
    g.proxy.reset_calls();
    let attempts_before = op.metric("byoc_aws_attempts_total")?;
    let calls_before = op.metric("byoc_aws_calls_total")?;
    g.proxy.set_faults(testground::Faults {
        error_rate: 0.2,
        realism: Some(testground::Realism::aws(REALISM_SCALE)),
        ..Default::default()
    });
    let started = Instant::now();
    kubectl_apply(&g, &example_manifest("stormy")?)?;
    let cc = wait_converged(&g, "stormy", "4/4", Duration::from_secs(300)).await?;
    let to_running = started.elapsed();
    let uid = cc.uid().context("uid")?;
    let c = counts(&g, &uid).await?;
    assert_eq!(c, expected_example(3), "under faults: {c:?}");
    api.delete("stormy", &DeleteParams::default()).await?;
    eventually("stormy deleted", Duration::from_secs(300), || async {
        Ok(api.get_opt("stormy").await?.is_none().then_some(()))
    })
    .await?;
    let left = counts(&g, &uid).await?;
    assert_eq!(left, Counts::default(), "left behind: {left:?}");
    let faulty = total_calls(&g);
    let injected = g.proxy.injected();
    let attempts = op.metric("byoc_aws_attempts_total")? - attempts_before;
    let calls = op.metric("byoc_aws_calls_total")? - calls_before;
    let backoffs = op.metric("byoc_requeue_backoff_seconds_count")?;
    assert_no_key_material(&g, &op, &[KEY_ID, SECRET_KEY, SESSION_TOKEN_PREFIX]).await?;
    // The stated bound: at most 3x the fault-free requests (no hot loop).
    let bound = baseline * 3;
    record_figure(serde_json::json!({
        "suite": "AWS faults",
        "setup": "20 % of all AWS requests fail transiently (RequestLimitExceeded/Throttling, 503, 500, dropped connection); the AWS realism profile at scale 0.05; the example created and deleted",
        "n": faulty,
        "figure": format!("running in {:.1} s and deleted to zero; {faulty} requests ({injected} failed) vs {baseline} without faults (bound {bound}); SDK attempts {attempts} for {calls} operations; {backoffs} requeues with backoff", to_running.as_secs_f64()),
        "pass": faulty <= bound && attempts > calls,
    }))?;
    assert!(
        faulty <= bound,
        "{faulty} requests under faults, more than {bound} (3x the {baseline} without)"
    );
    assert!(
        attempts > calls,
        "no retry visible in metrics: {attempts} attempts for {calls} operations"
    );
    Ok(())
}

/// Leaf paths of the base manifests that the corpus mutates.
const CLUSTER_PATHS: &[&str] = &[
    "/spec/region",
    "/spec/cloudAccountRef/name",
    "/spec/network/vpcCidr",
    "/spec/network/availabilityZones",
    "/spec/network/availabilityZones/0",
    "/spec/network/natGateways",
    "/spec/network/ingress/0/fromPort",
    "/spec/network/ingress/0/toPort",
    "/spec/network/ingress/0/cidr",
    "/spec/network/ingress/0/protocol",
    "/spec/nodeGroups/0/name",
    "/spec/nodeGroups/0/instanceType",
    "/spec/nodeGroups/0/count",
    "/spec/nodeGroups/0/imageId",
    "/spec/nodeGroups/0/subnets",
    "/spec/nodeGroups/0/metadataOptions/httpTokens",
    "/spec/nodeGroups/0/metadataOptions/httpPutResponseHopLimit",
    "/spec/nodeGroups/0/rootVolume/sizeGiB",
    "/spec/nodeGroups/0/rootVolume/type",
    "/spec/nodeGroups/0/rootVolume/iops",
    "/spec/nodeGroups/0/rootVolume/throughput",
    "/spec/nodeGroups/0/rootVolume/encrypted",
    "/spec/nodeGroups/0/rootVolume/kmsKeyId",
    "/spec/nodeGroups/0/additionalSecurityGroupIds",
    "/spec/nodeGroups/0/userDataSecretRef",
    "/spec/nodeGroups/0/sshKeyName",
    "/spec/nodeGroups/0/sshPublicKey",
    "/spec/nodeGroups/0/rollout",
    "/spec/nodeGroups/0/interruption",
    "/spec/nodeGroups/0/instanceTypes",
    "/spec/nodeGroups/0/capacityType",
    "/spec/nodeGroups/0/healthCheckGracePeriod",
    "/spec/iam/managedPolicyArns",
    "/spec/iam/instanceProfileName",
    "/spec/nodeGroups",
    "/spec/tags",
    "/spec/deletionPolicy",
    "/spec/network/existingVpcId",
    "/spec/network/azCount",
    "/spec/network/endpoints",
    "/spec/network/endpointPolicy",
    "/spec/network/internet",
    "/spec/network/peering",
    "/spec/logging",
    "/spec/storage",
];

const ACCOUNT_PATHS: &[&str] = &[
    "/spec/region",
    "/spec/roleArn",
    "/spec/externalId",
    "/spec/sessionDurationSeconds",
    "/spec/credentialsSecretRef/name",
    "/spec/roleChain",
    "/spec/allowedNamespaces",
    "/spec/permissionsBoundaryArn",
    "/spec/nodeInstanceProfileName",
    "/spec/imageOwners",
    "/spec/kmsKeyArns",
    "/spec/limits/perNamespace/instances",
    "/spec/limits/total/vcpus",
    "/spec/limits/perNamespace/pricePerHour",
];

fn base_cluster() -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "byoc.dev/v1alpha1",
        "kind": "ComputeCluster",
        "metadata": {"name": "x"},
        "spec": {
            "cloudAccountRef": {"name": "acme"},
            "region": "us-east-1",
            "network": {
                "vpcCidr": "10.0.0.0/16",
                "availabilityZones": ["us-east-1a"],
                "natGateways": "none",
                "ingress": [{"protocol": "tcp", "fromPort": 22, "toPort": 22, "cidr": "203.0.113.0/24"}]
            },
            "iam": {},
            "nodeGroups": [{
                "name": "n", "instanceType": "t3.small", "count": 1, "subnets": "public",
                "metadataOptions": {"httpTokens": "required"},
                "rootVolume": {"sizeGiB": 20}
            }]
        }
    })
}

fn base_account() -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "byoc.dev/v1alpha1",
        "kind": "CloudAccount",
        "metadata": {"name": "x"},
        "spec": {
            "region": "us-east-1",
            "credentialsSecretRef": {"name": "keys"},
            "roleArn": "arn:aws:iam::123456789012:role/byoc-cross-account"
        }
    })
}

/// Values to put at a path: near-valid strings, wrong types, extremes.
fn value_strategy() -> impl Strategy<Value = serde_json::Value> {
    use proptest::prelude::*;
    use serde_json::json;
    prop_oneof![
        "[a-z0-9-]{0,12}".prop_map(|s| json!(s)),
        "[ -~]{0,40}".prop_map(|s| json!(s)),
        "\\PC{0,16}".prop_map(|s| json!(s)),
        (0u8..=255, 0u8..=255, 0u8..=255, 0u8..=255, 0u8..=40)
            .prop_map(|(a, b, c, d, p)| json!(format!("{a}.{b}.{c}.{d}/{p}"))),
        "(us|eu|ap|xx)-(east|west|north)-[0-9][a-z]?".prop_map(|s| json!(s)),
        "(ami|vpc|subnet)-[0-9a-f]{8,17}".prop_map(|s| json!(s)),
        "arn:aws:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_-]{1,20}".prop_map(|s| json!(s)),
        "[a-z][0-9][a-z]?\\.(nano|small|large|huge|[0-9]{1,3}xlarge)".prop_map(|s| json!(s)),
        any::<i64>().prop_map(|n| json!(n)),
        (-5i64..70_000).prop_map(|n| json!(n)),
        any::<bool>().prop_map(|b| json!(b)),
        Just(serde_json::Value::Null),
        Just(json!([])),
        Just(json!({})),
        proptest::collection::vec("[a-z0-9-]{0,10}", 0..4).prop_map(|v| json!(v)),
        proptest::collection::btree_map("[a-zA-Z0-9./:_-]{0,20}", "[ -~]{0,10}", 0..3)
            .prop_map(|m| json!(m)),
    ]
}

/// Values the schema lets through at `path` but that cannot work: names
/// that do not exist, zones of other regions, IDs AWS does not hold.
fn plausible_strategy(path: &str) -> proptest::strategy::BoxedStrategy<serde_json::Value> {
    use proptest::prelude::*;
    use serde_json::json;
    let s = |re: &'static str| re.prop_map(|v: String| json!(v)).boxed();
    match path {
        "/spec/region" => s("(eu|ap|sa|me)-(west|south|central)-[1-3]"),
        "/spec/cloudAccountRef/name" | "/spec/credentialsSecretRef/name" => {
            s("[a-z][a-z0-9-]{2,20}")
        }
        "/spec/network/vpcCidr" => (0u8..=255, 0u8..=255, 16u8..=24)
            .prop_map(|(a, b, p)| json!(format!("{a}.{b}.0.0/{p}")))
            .boxed(),
        "/spec/network/availabilityZones" => {
            proptest::collection::vec("(us-west-2|eu-west-1|us-east-1)[a-h]", 1..4)
                .prop_map(|v| json!(v))
                .boxed()
        }
        "/spec/network/availabilityZones/0" => s("(us-west-2|eu-west-1|us-east-1)[a-h]"),
        "/spec/nodeGroups/0/instanceType" => {
            s("[a-z][0-9][a-z]{0,2}\\.(nano|micro|huge|[0-9]{1,2}xlarge)")
        }
        "/spec/nodeGroups/0/imageId" => s("ami-[0-9a-f]{17}"),
        "/spec/nodeGroups/0/count" => (0i64..60).prop_map(|n| json!(n)).boxed(),
        "/spec/network/existingVpcId" => s("vpc-[0-9a-f]{17}"),
        "/spec/nodeGroups/0/metadataOptions/httpPutResponseHopLimit" => {
            (1i64..=64).prop_map(|n| json!(n)).boxed()
        }
        "/spec/nodeGroups/0/rootVolume/sizeGiB" => (1i64..=400).prop_map(|n| json!(n)).boxed(),
        "/spec/nodeGroups/0/rootVolume/type" => s("gp2|gp3|io1|io2"),
        "/spec/nodeGroups/0/rootVolume/kmsKeyId" => s("alias/[a-z]{3,12}"),
        "/spec/iam/managedPolicyArns" => proptest::collection::vec(
            "arn:aws:iam::(aws|[0-9]{12}):policy/[A-Za-z][A-Za-z0-9]{2,30}",
            1..3,
        )
        .prop_map(|v| json!(v))
        .boxed(),
        "/spec/iam/instanceProfileName" => s("[a-z][a-z0-9-]{2,20}"),
        "/spec/nodeGroups/0/instanceTypes" => proptest::collection::vec(
            "[a-z][0-9][a-z]{0,2}\\.(nano|micro|large|huge|[0-9]{1,2}xlarge)",
            1..4,
        )
        .prop_map(|v| json!(v))
        .boxed(),
        "/spec/nodeGroups/0/capacityType" => s("onDemand|spot|spotThenOnDemand"),
        "/spec/nodeGroups/0/healthCheckGracePeriod" => s("[0-9]{1,12}(h|m|s)"),
        "/spec/nodeGroups/0/sshKeyName" => s("[a-z][a-z0-9-]{2,20}"),
        "/spec/nodeGroups/0/sshPublicKey" => s("ssh-ed25519 AAAA[A-Za-z0-9+/]{20,60} [a-z]{1,8}"),
        "/spec/nodeGroups/0/userDataSecretRef" => ("[a-z][a-z0-9-]{2,20}", "[a-zA-Z0-9._-]{1,20}")
            .prop_map(|(name, key)| json!({"name": name, "key": key}))
            .boxed(),
        "/spec/nodeGroups/0/additionalSecurityGroupIds" => {
            proptest::collection::vec("sg-[0-9a-f]{17}", 1..3)
                .prop_map(|v| json!(v))
                .boxed()
        }
        "/spec/network/azCount" => (1i64..8).prop_map(|n| json!(n)).boxed(),
        "/spec/network/endpoints" => {
            proptest::collection::vec("s3|dynamodb|ecr\\.api|ecr\\.dkr|sts|logs", 1..4)
                .prop_map(|v| json!(v))
                .boxed()
        }
        "/spec/network/internet" => any::<bool>().prop_map(|b| json!(b)).boxed(),
        "/spec/network/endpointPolicy" => s("account|full|open|Account"),
        // Peer VPCs AWS does not hold, some with routes overlapping the VPC.
        "/spec/network/peering" => ("vpc-[0-9a-f]{17}", proptest::option::of("10\\.0\\.[0-9]{1,2}\\.0/24"))
            .prop_map(|(vpc, route)| json!([{"vpcId": vpc, "routes": route.into_iter().collect::<Vec<_>>()}]))
            .boxed(),
        // A few other accounts, not hundreds: moto builds each account's
        // state on first use (seconds of CPU, which AWS does not spend), and
        // a new one per manifest starves the suite, not the operator.
        "/spec/roleArn" => {
            s("arn:aws:iam::(210987654321|345678901234|456789012345):role/[A-Za-z0-9_-]{1,20}")
        }
        "/spec/externalId" => s("[A-Za-z0-9+=,.@:/-]{2,40}"),
        "/spec/permissionsBoundaryArn" => {
            s("arn:aws:iam::(123456789012|aws):policy/[A-Za-z0-9_-]{1,20}")
        }
        "/spec/sessionDurationSeconds" => (900i64..=43_200).prop_map(|n| json!(n)).boxed(),
        // Profiles that do not exist: clusters of the account stall before a launch.
        "/spec/nodeInstanceProfileName" => s("[A-Za-z0-9+=,.@_-]{1,40}"),
        // Owners and keys AWS does not hold; listing them allows nothing
        // the policy does not.
        "/spec/imageOwners" => proptest::collection::vec("[0-9]{12}", 1..3)
            .prop_map(|v| json!(v))
            .boxed(),
        "/spec/kmsKeyArns" => proptest::collection::vec(
            "arn:aws:kms:us-east-1:[0-9]{12}:key/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
            1..3,
        )
        .prop_map(|v| json!(v))
        .boxed(),
        _ => value_strategy().boxed(),
    }
}

/// Puts `value` at `pointer`, creating nothing new: a missing parent is left as is.
fn set_at(doc: &mut serde_json::Value, pointer: &str, value: serde_json::Value) {
    if let Some(slot) = doc.pointer_mut(pointer) {
        *slot = value;
        return;
    }
    let (parent, key) = pointer.rsplit_once('/').unwrap_or(("", pointer));
    if let Some(serde_json::Value::Object(map)) = doc.pointer_mut(parent) {
        map.insert(key.to_string(), value);
    }
}

#[derive(Debug, Default)]
struct CorpusOutcome {
    rejected: usize,
    rejected_as_500: usize,
    stalled: usize,
    converged: usize,
    undecided: Vec<String>,
    deleted: usize,
    /// Accepted objects whose deletion did not finish.
    stuck: Vec<String>,
}

/// The operator's last log messages naming the object `name` (for a failure's report).
fn last_lines_about(log: &str, name: &str) -> String {
    let quoted = format!("/{name}.");
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&quoted) || l.contains(&format!("\"{name}\"")))
        .filter(|l| !l.contains("\"level\":\"DEBUG\"") && !l.contains("\"level\":\"TRACE\""))
        .collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

/// Manifests applied, decided and deleted together.
const CORPUS_BATCH: usize = 25;

/// Waits until the object is `"stalled"` (Stalled with a message) or
/// `"converged"` (Ready) at its current generation.
async fn decided(api: &Api<DynamicObject>, name: &str) -> Result<&'static str> {
    // moto builds an AWS account's state on its first use (seconds of CPU):
    // a corpus that names many accounts at once can make AssumeRole time
    // out for a while, which the operator rightly retries (Reconciling).
    eventually(
        &format!("{name} decided"),
        Duration::from_secs(180),
        || async {
            let o = api.get(name).await?;
            let status = &o.data["status"];
            let cond = |t: &str| {
                status["conditions"]
                    .as_array()
                    .and_then(|cs| cs.iter().find(|c| c["type"] == t))
                    .cloned()
            };
            if status["observedGeneration"].as_i64() != o.metadata.generation {
                return Ok(None);
            }
            if let Some(c) = cond("Stalled").filter(|c| c["status"] == "True") {
                let message = c["message"].as_str().unwrap_or_default();
                return Ok((!message.is_empty()).then_some("stalled"));
            }
            Ok(cond("Ready")
                .filter(|c| c["status"] == "True")
                .map(|_| "converged"))
        },
    )
    .await
}

#[tokio::test]
async fn bad_input_corpus_is_rejected_or_stalled() -> Result<()> {
    let cases = if full_run() { 200 } else { 48 };
    let g = ground_with_crds("bad-input").await?;
    // Roles must exist, as on AWS: a made-up roleArn is denied.
    aws_sdk_iam::Client::new(&g.aws().await)
        .create_role()
        .role_name("byoc-cross-account")
        .assume_role_policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"*"},"Action":"sts:AssumeRole"}]}"#)
        .send()
        .await?;
    g.proxy.set_faults(testground::Faults {
        roles_must_exist: true,
        realism: Some(testground::Realism::aws(REALISM_SCALE)),
        ..Default::default()
    });
    let mut op = Operator::start(&g, &["--progress-poll", "1s"], &[])?;
    account_acme(&g).await?;

    let seed = seed();
    println!("bad input: {cases} manifests, seed {seed} (BYOC_SEED={seed} repeats it)");
    let mut runner = seeded_runner(seed);
    let strategy = (
        proptest::bool::weighted(0.7),
        0usize..CLUSTER_PATHS.len(),
        0usize..ACCOUNT_PATHS.len(),
        proptest::collection::vec(value_strategy(), 1..3),
        proptest::bool::weighted(0.5),
    );
    let gvk = |kind: &str| GroupVersionKind::gvk("byoc.dev", "v1alpha1", kind);
    let api_of = |kind: &str| -> Api<DynamicObject> {
        Api::namespaced_with(
            g.client.clone(),
            &g.namespace,
            &ApiResource::from_gvk(&gvk(kind)),
        )
    };
    let mut outcome = CorpusOutcome::default();
    // In batches: each batch's accepted objects are decided, then deleted,
    // so AWS holds one batch's clusters at a time.
    for batch in (0..cases).collect::<Vec<_>>().chunks(CORPUS_BATCH) {
        let mut accepted: Vec<(&str, String, String)> = vec![];
        for &i in batch {
            let (cluster, cp, ap, values, plausible) = strategy
                .new_tree(&mut runner)
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .current();
            let (mut doc, kind, paths) = if cluster {
                (base_cluster(), "ComputeCluster", CLUSTER_PATHS)
            } else {
                (base_account(), "CloudAccount", ACCOUNT_PATHS)
            };
            let name = format!("bad-{i}");
            doc["metadata"]["name"] = serde_json::json!(name);
            let mut what = vec![];
            for (j, mut v) in values.into_iter().enumerate() {
                let path = paths[(if cluster { cp } else { ap } + j * 7) % paths.len()];
                if plausible {
                    v = plausible_strategy(path)
                        .new_tree(&mut runner)
                        .map_err(|e| anyhow::anyhow!("{e}"))?
                        .current();
                }
                what.push(format!("{path}={v}"));
                set_at(&mut doc, path, v);
            }
            let obj: DynamicObject = serde_json::from_value(doc)?;
            // Server-side apply with strict field validation, as
            // `kubectl apply --server-side` sends it.
            let params = kube::api::PatchParams::apply("bad-input").validation_strict();
            match api_of(kind)
                .patch(&name, &params, &kube::api::Patch::Apply(&obj))
                .await
            {
                Err(kube::Error::Api(e)) if (400..500).contains(&e.code) => {
                    assert!(!e.message.is_empty(), "a rejection without a message");
                    outcome.rejected += 1;
                }
                // The apiserver answers a value of the wrong JSON type with 500
                // "failed to create typed patch object" (its field manager runs
                // before validation); still a refusal naming the field.
                Err(kube::Error::Api(e))
                    if e.code == 500
                        && e.message.contains("failed to create typed patch object") =>
                {
                    outcome.rejected += 1;
                    outcome.rejected_as_500 += 1;
                }
                Err(e) => return Err(e).context(format!("creating {name}: {}", what.join(", "))),
                Ok(_) => accepted.push((kind, name, what.join(", "))),
            }
        }

        // Every accepted object ends decided: Stalled with a message, or Ready.
        for (kind, name, what) in &accepted {
            match decided(&api_of(kind), name).await {
                Ok("stalled") => outcome.stalled += 1,
                Ok(_) => {
                    println!("converged: {kind} {name}: {what}");
                    outcome.converged += 1
                }
                Err(e) => {
                    let status = api_of(kind)
                        .get_opt(name)
                        .await?
                        .map(|o| o.data["status"].clone());
                    outcome.undecided.push(format!(
                        "{kind} {name} ({what}): {e}\nstatus: {}\noperator's last words on it:\n{}",
                        status.unwrap_or_default(),
                        last_lines_about(&op.log(), name)
                    ))
                }
            }
            op.process.check_alive()?;
        }
        // And can be deleted, whatever it holds: clusters first, as a user
        // would, then accounts.
        for kind in ["ComputeCluster", "CloudAccount"] {
            let api = api_of(kind);
            let names: Vec<_> = accepted.iter().filter(|a| a.0 == kind).collect();
            for (_, name, _) in &names {
                api.delete(name, &DeleteParams::default()).await?;
            }
            for (_, name, what) in names {
                let gone = eventually(&format!("{kind} {name} gone"), WAIT, || async {
                    Ok(api.get_opt(name).await?.is_none().then_some(()))
                })
                .await;
                match gone {
                    Ok(()) => outcome.deleted += 1,
                    Err(e) => {
                        let status = api.get_opt(name).await?.map(|o| o.data["status"].clone());
                        outcome.stuck.push(format!(
                            "{kind} {name} ({what}): {e}\nstatus: {}\noperator's last words on it:\n{}",
                            status.unwrap_or_default(),
                            last_lines_about(&op.log(), name)
                        ))
                    }
                }
            }
        }
    }
    assert!(!op.log().contains("panicked"), "the operator panicked");

    // The operator still serves others: a valid cluster reaches running.
    kubectl_apply(
        &g,
        &serde_json::to_string(&{
            let mut c = base_cluster();
            c["metadata"]["name"] = serde_json::json!("control");
            c
        })?,
    )?;
    let control_started = Instant::now();
    let control = wait_converged(&g, "control", "1/1", Duration::from_secs(300)).await;
    let control_took = control_started.elapsed().as_secs_f64();
    assert_no_key_material(&g, &op, &[KEY_ID, SECRET_KEY, SESSION_TOKEN_PREFIX]).await?;
    op.process.check_alive()?;
    record_figure(serde_json::json!({
        "suite": "bad input",
        "setup": format!("property-based corpus (proptest): one to two fields of a valid ComputeCluster or CloudAccount replaced, half by wrong types, odd strings and extremes, half by values the schema admits but AWS cannot honour (zones of other regions, absent AMIs, VPCs, accounts, Secrets, unknown instance types); server-side apply with strict field validation; applied, decided and deleted in batches of 25; seed {seed}"),
        "n": cases,
        "figure": format!(
            "{cases} manifests: {} rejected by the apiserver ({} of them wrong JSON types, answered 500 by its field manager), {} Stalled with a message, {} valid and converged, {} undecided; {} of the accepted deleted, {} stuck in deletion; no panic; a valid cluster created afterwards {}",
            outcome.rejected,
            outcome.rejected_as_500,
            outcome.stalled,
            outcome.converged,
            outcome.undecided.len(),
            outcome.deleted,
            outcome.stuck.len(),
            if control.is_ok() { format!("reached running in {control_took:.1} s") } else { "did not reach running within 300 s".into() }
        ),
        "pass": outcome.undecided.is_empty() && outcome.stuck.is_empty() && control.is_ok(),
    }))?;
    control?;
    assert!(
        outcome.undecided.is_empty(),
        "undecided:\n{}",
        outcome.undecided.join("\n")
    );
    assert!(
        outcome.stuck.is_empty(),
        "not deleted:\n{}",
        outcome.stuck.join("\n")
    );
    Ok(())
}

/// The cluster's Stalled condition `(reason, message)` once it is stalled.
async fn stalled_reason(api: &Api<ComputeCluster>, name: &str) -> Result<(String, String)> {
    eventually(&format!("{name} stalled"), WAIT, || async {
        let cc = api.get(name).await?;
        let conditions = cc
            .status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default();
        match conditions
            .iter()
            .find(|c| c.type_ == "Stalled" && c.status == "True")
        {
            Some(c) => Ok(Some((c.reason.clone(), c.message.clone()))),
            None => Err(anyhow::anyhow!(
                "conditions: {:?}",
                conditions
                    .iter()
                    .map(|c| format!("{}={} {}: {}", c.type_, c.status, c.reason, c.message))
                    .collect::<Vec<_>>()
            )),
        }
    })
    .await
}

fn creates(g: &Ground) -> u64 {
    g.proxy
        .calls()
        .iter()
        .filter(|(op, _)| {
            [
                "Create",
                "Run",
                "Allocate",
                "Authorize",
                "Associate",
                "Attach",
                "Put",
                "Add",
            ]
            .iter()
            .any(|p| op.starts_with(p))
        })
        .map(|(_, n)| n)
        .sum()
}

#[tokio::test]
async fn wrong_access_ends_in_a_clear_condition_and_creates_nothing() -> Result<()> {
    let (g, x) = CrossAccount::enforced("wrong-access").await?;
    let other = format!("{}-other", g.namespace);
    create_namespace(&g.client, &other).await?;
    let op = Operator::start(&g, &operator_args(), &[])?;
    // Each operator watches one namespace: a second one serves the other.

    let keys = |name: &str, id: &str, secret: &str| {
        format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, labels: {{byoc.dev/use: credentials}}}}\nstringData: {{AWS_ACCESS_KEY_ID: \"{id}\", AWS_SECRET_ACCESS_KEY: \"{secret}\"}}\n")
    };
    let account = |name: &str, secret: &str, role: Option<&str>, external_id: &str| {
        let role = role
            .map(|r| format!("\n  roleArn: {r}\n  externalId: {external_id}"))
            .unwrap_or_default();
        format!("apiVersion: byoc.dev/v1alpha1\nkind: CloudAccount\nmetadata: {{name: {name}}}\nspec:\n  region: us-east-1\n  credentialsSecretRef: {{name: {secret}}}{role}\n")
    };
    let cluster = |name: &str, account: &str, account_ns: Option<&str>| {
        let ns = account_ns
            .map(|n| format!(", namespace: {n}"))
            .unwrap_or_default();
        format!("apiVersion: byoc.dev/v1alpha1\nkind: ComputeCluster\nmetadata: {{name: {name}}}\nspec:\n  cloudAccountRef: {{name: {account}{ns}}}\n  region: us-east-1\n  network: {{vpcCidr: 10.0.0.0/16, availabilityZones: [us-east-1a], natGateways: none}}\n  nodeGroups: [{{name: workers, instanceType: t3.small, count: 1, subnets: public}}]\n")
    };
    kubectl_apply(&g, &keys("base", &x.base_key_id, &x.base_secret))?;
    let cases: Vec<(&str, String, String)> = vec![
        (
            "wrong external ID",
            account("wrong-external-id", "base", Some(&x.role_arn), "not-the-id"),
            "AssumeRoleDenied".into(),
        ),
        (
            "role that does not exist",
            account(
                "no-such-role",
                "base",
                Some("arn:aws:iam::123456789012:role/byoc-does-not-exist"),
                &x.external_id,
            ),
            "AssumeRoleDenied".into(),
        ),
        (
            "role that does not trust the keys",
            account(
                "untrusting",
                "base",
                Some(&x.untrusting_role_arn),
                &x.external_id,
            ),
            "AssumeRoleDenied".into(),
        ),
        (
            "keys without EC2 permissions",
            account("assume-only-keys", "base", None, ""),
            "AccessDenied|CredentialsRejected".into(),
        ),
        (
            "Secret in another namespace",
            account("secret-elsewhere", "only-in-other-namespace", None, ""),
            "SecretNotFound".into(),
        ),
    ];
    kubectl_apply_in(
        &g,
        &other,
        &keys("only-in-other-namespace", &x.base_key_id, &x.base_secret),
    )?;
    for (i, (_, acct, _)) in cases.iter().enumerate() {
        kubectl_apply(&g, acct)?;
        let name = acct
            .split("metadata: {name: ")
            .nth(1)
            .and_then(|s| s.split('}').next())
            .unwrap_or_default()
            .to_string();
        kubectl_apply(&g, &cluster(&format!("c{i}"), &name, None))?;
    }
    // A CloudAccount (valid) that does not allow the other namespace.
    kubectl_apply(
        &g,
        &format!("apiVersion: byoc.dev/v1alpha1\nkind: CloudAccount\nmetadata: {{name: good}}\nspec:\n  region: us-east-1\n  credentialsSecretRef: {{name: base}}\n  roleArn: {}\n  externalId: {}\n", x.role_arn, x.external_id),
    )?;
    let other_op = Operator::start_in(&g, &other, &operator_args(), &[])?;
    kubectl_apply_in(&g, &other, &cluster("borrower", "good", Some(&g.namespace)))?;

    let api = g.api::<ComputeCluster>();
    let mut rows = vec![];
    let mut wrong = vec![];
    for (i, (label, _, want)) in cases.iter().enumerate() {
        let (reason, message) = stalled_reason(&api, &format!("c{i}")).await?;
        rows.push(String::new());
        // The cluster names the account's problem; the account names the cause.
        let account_name = cases[i]
            .1
            .split("name: ")
            .nth(1)
            .and_then(|s| s.split('}').next())
            .unwrap_or_default();
        let acct = g.api::<CloudAccount>().get(account_name).await?;
        let acct_reason = acct
            .status
            .as_ref()
            .and_then(|s| {
                s.conditions
                    .iter()
                    .find(|c| c.type_ == "Stalled" && c.status == "True")
            })
            .map(|c| c.reason.clone())
            .unwrap_or_default();
        // An account that verifies (the keys may assume the role, but lack
        // EC2 rights) is not stalled: say so rather than leave it blank.
        let acct_shown = if acct_reason.is_empty() {
            "verified".to_string()
        } else {
            acct_reason.clone()
        };
        let wanted = |r: &str| want.split('|').any(|w| w == r);
        if !wanted(&reason) && !wanted(&acct_reason) {
            wrong.push(format!(
                "{label}: cluster {reason} ({message}), account {acct_shown}; want {want}"
            ));
        }
        if message.is_empty() {
            wrong.push(format!("{label}: no message"));
        }
        if let Some(row) = rows.last_mut() {
            *row = format!("{label}: cluster {reason}, account {acct_shown}");
        }
    }
    let other_api: Api<ComputeCluster> = Api::namespaced(g.client.clone(), &other);
    let (reason, _) = stalled_reason(&other_api, "borrower").await?;
    rows.push(format!("CloudAccount not allowing the namespace: {reason}"));
    if reason != "NamespaceNotAllowed" {
        wrong.push(format!("borrower: {reason}, want NamespaceNotAllowed"));
    }
    let created = creates(&g);

    // The control: the same set-up with keys allowed EC2 (and IAM)
    // converges under enforcement, so each denial above is the policy's,
    // not a signature moto could not check.
    kubectl_apply(&g, &keys("allowed", &x.allowed_key_id, &x.allowed_secret))?;
    kubectl_apply(&g, &account("allowed-keys", "allowed", None, ""))?;
    kubectl_apply(&g, &cluster("control", "allowed-keys", None))?;
    let control = wait_converged(&g, "control", "1/1", Duration::from_secs(180))
        .await
        .map(|_| "converged".to_string())
        .unwrap_or_else(|e| format!("did not converge: {e:#}"));
    let resigned = g.proxy.resigned();
    rows.push(format!(
        "control, keys allowed everything: {control} ({resigned} requests re-signed for moto)"
    ));
    if control != "converged" {
        wrong.push(format!("control: {control}"));
    }
    let needles = [
        x.base_key_id.as_str(),
        x.base_secret.as_str(),
        x.allowed_key_id.as_str(),
        x.allowed_secret.as_str(),
        SESSION_TOKEN_PREFIX,
    ];
    assert_no_key_material(&g, &op, &needles).await?;
    assert_no_key_material_in(&g, &other, &other_op, &needles).await?;
    record_figure(serde_json::json!({
        "suite": "wrong access",
        "setup": "moto with IAM enforcement (requests re-signed by the proxy over moto's re-encoding of the form): base keys allowed only sts:AssumeRole; roles with an external-ID condition; a control with keys allowed everything",
        "n": rows.len(),
        "figure": format!("{} cases, each Stalled with its reason, and the control ({}); {created} AWS create calls before the control", rows.len(), rows.join("; ")),
        "pass": wrong.is_empty() && created == 0,
    }))?;
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(created, 0, "{created} AWS create calls were made");
    Ok(())
}

/// A snapshot of the resources in `vpc_ids` that are not ours (tagged with
/// none of `ours`, the clusters' UIDs): their IDs, CIDRs, rules and tags.
async fn foreign_snapshot(
    ec2: &aws_sdk_ec2::Client,
    vpc_ids: &[String],
    ours: &[String],
) -> Result<String> {
    let mine = |tags: &[aws_sdk_ec2::types::Tag]| {
        tags.iter().any(|t| {
            t.key() == Some("byoc.dev/cluster-uid")
                && ours.iter().any(|u| Some(u.as_str()) == t.value())
        })
    };
    let vpcs = ec2
        .describe_vpcs()
        .set_vpc_ids(Some(vpc_ids.to_vec()))
        .send()
        .await?;
    let filter = aws_sdk_ec2::types::Filter::builder()
        .name("vpc-id")
        .set_values(Some(vpc_ids.to_vec()))
        .build();
    let subnets = ec2
        .describe_subnets()
        .filters(filter.clone())
        .send()
        .await?;
    let groups = ec2
        .describe_security_groups()
        .filters(filter.clone())
        .send()
        .await?;
    let tables = ec2.describe_route_tables().filters(filter).send().await?;
    let mut lines = vec![];
    for v in vpcs.vpcs().iter().filter(|v| !mine(v.tags())) {
        lines.push(format!(
            "vpc {:?} {:?} {:?}",
            v.vpc_id(),
            v.cidr_block(),
            v.tags()
        ));
    }
    for s in subnets.subnets().iter().filter(|s| !mine(s.tags())) {
        lines.push(format!(
            "subnet {:?} {:?} {:?}",
            s.subnet_id(),
            s.cidr_block(),
            s.tags()
        ));
    }
    for sg in groups.security_groups().iter().filter(|g| !mine(g.tags())) {
        lines.push(format!(
            "sg {:?} {:?} {:?}",
            sg.group_id(),
            sg.ip_permissions(),
            sg.tags()
        ));
    }
    for t in tables.route_tables().iter().filter(|t| !mine(t.tags())) {
        lines.push(format!(
            "rt {:?} {:?} {:?} {:?}",
            t.route_table_id(),
            t.routes(),
            t.associations().len(),
            t.tags()
        ));
    }
    lines.sort();
    Ok(lines.join("\n"))
}

#[tokio::test]
async fn ownership_foreign_resources_survive_create_repair_and_delete() -> Result<()> {
    let g = ground_with_crds("ownership").await?;
    let op = start_operator(&g)?;
    account_acme(&g).await?;
    let ec2 = aws_sdk_ec2::Client::new(&g.aws().await);
    let tag = |k: &str, v: &str| aws_sdk_ec2::types::Tag::builder().key(k).value(v).build();
    let spec = |kind: aws_sdk_ec2::types::ResourceType, tags: Vec<aws_sdk_ec2::types::Tag>| {
        aws_sdk_ec2::types::TagSpecification::builder()
            .resource_type(kind)
            .set_tags(Some(tags))
            .build()
    };
    // A neighbour with our CIDR; a VPC tagged as an earlier cluster of the
    // same name (another UID); a bring-your-own VPC with a subnet.
    let neighbour = ec2
        .create_vpc()
        .cidr_block("10.0.0.0/16")
        .tag_specifications(spec(
            aws_sdk_ec2::types::ResourceType::Vpc,
            vec![tag("Name", "neighbour")],
        ))
        .send()
        .await?;
    let twin = ec2
        .create_vpc()
        .cidr_block("10.0.0.0/16")
        .tag_specifications(spec(
            aws_sdk_ec2::types::ResourceType::Vpc,
            vec![
                tag("byoc.dev/managed-by", "byoc-operator"),
                tag(
                    "byoc.dev/cluster-uid",
                    "00000000-0000-0000-0000-000000000000",
                ),
                tag("byoc.dev/cluster", &format!("{}/owned", g.namespace)),
            ],
        ))
        .send()
        .await?;
    let byo = ec2.create_vpc().cidr_block("10.9.0.0/16").send().await?;
    let id = |v: &aws_sdk_ec2::operation::create_vpc::CreateVpcOutput| {
        v.vpc()
            .and_then(|v| v.vpc_id())
            .unwrap_or_default()
            .to_string()
    };
    let (neighbour, twin, byo) = (id(&neighbour), id(&twin), id(&byo));
    let mut foreign_subnets = vec![];
    for (vpc, cidr) in [
        (&neighbour, "10.0.0.0/20"),
        (&twin, "10.0.0.0/20"),
        (&byo, "10.9.0.0/20"),
        (&byo, "10.9.16.0/20"),
    ] {
        let s = ec2
            .create_subnet()
            .vpc_id(vpc)
            .cidr_block(cidr)
            .availability_zone("us-east-1a")
            .send()
            .await?;
        foreign_subnets.push(
            s.subnet()
                .and_then(|s| s.subnet_id())
                .unwrap_or_default()
                .to_string(),
        );
    }
    // The team lets this installation use its brought network.
    crate::support::let_use(&g, &ec2, [&byo, &foreign_subnets[2], &foreign_subnets[3]]).await?;
    let vpcs = vec![neighbour.clone(), twin.clone(), byo.clone()];
    let before = foreign_snapshot(&ec2, &vpcs, &[]).await?;

    // A managed cluster named like the twin's owner, and a BYO cluster.
    kubectl_apply(&g, &example_manifest("owned")?)?;
    kubectl_apply(
        &g,
        &format!("apiVersion: byoc.dev/v1alpha1\nkind: ComputeCluster\nmetadata: {{name: byo}}\nspec:\n  cloudAccountRef: {{name: acme}}\n  region: us-east-1\n  network:\n    existingVpcId: {byo}\n    existingSubnetIds: [{}, {}]\n  nodeGroups: [{{name: workers, instanceType: t3.small, count: 2, subnets: private}}]\n", foreign_subnets[2], foreign_subnets[3]),
    )?;
    let owned = wait_converged(&g, "owned", "4/4", WAIT).await?;
    let byo_cluster = wait_converged(&g, "byo", "2/2", WAIT).await?;
    let ours = vec![
        owned.uid().context("uid")?,
        byo_cluster.uid().context("uid")?,
    ];
    let after_create = foreign_snapshot(&ec2, &vpcs, &ours).await?;

    // Drift repair: one of ours deleted out of band comes back.
    let target = owned
        .status
        .as_ref()
        .and_then(|s| s.network.as_ref())
        .and_then(|n| {
            n.subnets
                .iter()
                .find(|s| s.public && s.zone == "us-east-1b")
        })
        .map(|s| s.id.clone())
        .context("a public subnet in us-east-1b in status")?;
    delete_subnet_out_of_band(&ec2, &target).await?;
    let api = g.api::<ComputeCluster>();
    eventually("the subnet repaired", WAIT, || async {
        let cc = api.get("owned").await?;
        let ids: Vec<String> = cc
            .status
            .and_then(|s| s.network)
            .map(|n| n.subnets.into_iter().map(|s| s.id).collect())
            .unwrap_or_default();
        Ok((ids.len() == 4 && !ids.contains(&target)).then_some(()))
    })
    .await?;
    let after_repair = foreign_snapshot(&ec2, &vpcs, &ours).await?;

    // Delete both clusters.
    let owned_uid = ours[0].clone();
    for name in ["owned", "byo"] {
        api.delete(name, &DeleteParams::default()).await?;
    }
    eventually("both deleted", WAIT, || async {
        let left = api.list(&ListParams::default()).await?.items.len();
        Ok((left == 0).then_some(()))
    })
    .await?;
    let ours_left = counts(&g, &owned_uid).await?;
    // The audit names the twin (tagged as a former cluster's) and nothing
    // untagged; it changes nothing.
    let audit = crate::support::byoc(&g, &["audit", "-n", &g.namespace])?;
    let untagged_named = [&neighbour, &byo]
        .into_iter()
        .chain(&foreign_subnets)
        .any(|id| audit.contains(id.as_str()));
    assert!(
        audit.contains(&twin) && !untagged_named,
        "the audit named the wrong things:\n{audit}"
    );
    let after_delete = foreign_snapshot(&ec2, &vpcs, &ours).await?;
    let changed: Vec<&str> = [
        ("create", &after_create),
        ("drift repair", &after_repair),
        ("delete", &after_delete),
    ]
    .iter()
    .filter(|(_, s)| **s != before)
    .map(|(w, _)| *w)
    .collect();
    assert_no_key_material(&g, &op, &[KEY_ID, SECRET_KEY, SESSION_TOKEN_PREFIX]).await?;
    let foreign = before.lines().count();
    record_figure(serde_json::json!({
        "suite": "ownership",
        "setup": "in the same account: a neighbour VPC with the cluster's CIDR, a VPC tagged as an earlier cluster of the same name (other UID), a bring-your-own VPC with two subnets; a managed and a BYO cluster created, a subnet deleted out of band and repaired, both deleted, then `audit` (which names only the tagged twin)",
        "n": foreign,
        "figure": format!("{foreign} foreign resources; changed by {}; {} of ours left after deletion", if changed.is_empty() { "nothing".to_string() } else { changed.join(", ") }, if ours_left == Counts::default() { 0 } else { 1 }),
        "pass": changed.is_empty() && ours_left == Counts::default(),
    }))?;
    assert!(changed.is_empty(), "foreign resources changed by: {changed:?}\nbefore:\n{before}\nafter create:\n{after_create}");
    assert_eq!(ours_left, Counts::default(), "left behind: {ours_left:?}");
    Ok(())
}
