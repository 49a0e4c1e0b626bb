//! Operating the operator: leader election across processes, the metrics
//! endpoint, the pause annotation, and what GitOps tools (Flux's kstatus,
//! Argo CD's health Lua) make of the objects it writes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use byoc_operator::api::ComputeCluster;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::ResourceExt;

use crate::clusters::{
    apply_example, counts, patch_spec, ready_account, wait_counts, wait_running, Counts, WAIT,
};
use crate::support::{eventually, ground_with_crds, kubectl_apply, Ground, Operator, OperatorExt};

pub(crate) const LEASE_SECONDS: u64 = 4;

pub(crate) fn leader_args(g: &Ground) -> Vec<String> {
    [
        "--progress-poll",
        "1s",
        "--leader-election",
        "--lease-name",
        "byoc",
        "--lease-namespace",
        &g.namespace,
        "--lease-duration",
        &format!("{LEASE_SECONDS}s"),
    ]
    .map(String::from)
    .to_vec()
}

pub(crate) fn start_replica(g: &Ground, pod: &str) -> Result<Operator> {
    let args = leader_args(g);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut op = Operator::start(g, &args, &[("POD_NAME", pod)])?;
    let port = op.metrics_port;
    op.process
        .wait_ready(|| testground::http_get(port, "/healthz").is_ok_and(|(s, _)| s == 200))?;
    Ok(op)
}

pub(crate) async fn wait_leader(op: &Operator, who: &str, deadline: Duration) -> Result<()> {
    eventually(&format!("{who} leading"), deadline, || async {
        Ok((op.metric("byoc_leader")? == 1.0).then_some(()))
    })
    .await
}

pub(crate) async fn holder(g: &Ground) -> Result<Option<String>> {
    let lease = g.api::<Lease>().get("byoc").await?;
    Ok(lease.spec.and_then(|s| s.holder_identity))
}

fn aws_calls(op: &Operator) -> Result<f64> {
    op.metric("byoc_aws_calls_total")
}

async fn scale_workers(g: &Ground, count: i32) -> Result<()> {
    patch_spec(g, "demo", serde_json::json!({"nodeGroups": [
        {"name": "workers", "instanceType": "t3.large", "count": count, "subnets": "private"},
        {"name": "gpu", "instanceType": "g5.xlarge", "count": 1, "spot": true, "subnets": "private"}
    ]}))
    .await
}

#[tokio::test]
async fn leader_election_one_reconciles_and_hands_over() -> Result<()> {
    let g = ground_with_crds("leader").await?;
    let mut a = start_replica(&g, "replica-a")?;
    wait_leader(&a, "replica-a", WAIT).await?;
    let mut b = start_replica(&g, "replica-b")?;
    assert_eq!(
        holder(&g).await?.as_deref(),
        Some("replica-a"),
        "the Lease names replica-a"
    );

    ready_account(&g).await?;
    apply_example(&g)?;
    let cc = wait_running(&g, "demo", |_| true).await?;
    let uid = cc.uid().context("uid")?;
    let (calls_a, calls_b) = (aws_calls(&a)?, aws_calls(&b)?);
    assert!(
        calls_a > 0.0 && calls_b == 0.0 && b.metric("byoc_leader")? == 0.0,
        "AWS calls: leader {calls_a}, follower {calls_b}; only the leader may reconcile"
    );

    // SIGTERM: the leader finishes, releases the Lease and exits 0; the
    // follower takes over.
    let stopped = Instant::now();
    a.process.terminate()?;
    let end = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = a.process.exit_status()? {
            break status;
        }
        assert!(Instant::now() < end, "replica-a did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "replica-a exited with {status}");
    wait_leader(&b, "replica-b", WAIT).await?;
    let after_sigterm = stopped.elapsed();
    assert_eq!(
        holder(&g).await?.as_deref(),
        Some("replica-b"),
        "the Lease names replica-b"
    );
    scale_workers(&g, 4).await?;
    wait_running(&g, "demo", |cc| {
        cc.status.as_ref().and_then(|s| s.nodes.as_deref()) == Some("5/5")
    })
    .await?;
    assert!(
        aws_calls(&b)? > 0.0,
        "replica-b reconciles after the handover"
    );

    // SIGKILL: no release; a third replica takes over once the Lease expires.
    let c = start_replica(&g, "replica-c")?;
    let killed = Instant::now();
    b.process.kill();
    wait_leader(&c, "replica-c", WAIT).await?;
    let after_sigkill = killed.elapsed();
    scale_workers(&g, 2).await?;
    wait_running(&g, "demo", |cc| {
        cc.status.as_ref().and_then(|s| s.nodes.as_deref()) == Some("3/3")
    })
    .await?;
    wait_counts(&g, &uid, "3 instances", |c| c.instances() == 3).await?;
    println!(
        "leader handover: {:.1} s after SIGTERM, {:.1} s after SIGKILL (lease {LEASE_SECONDS} s)",
        after_sigterm.as_secs_f64(),
        after_sigkill.as_secs_f64()
    );
    // The successor waits for the Lease to expire, and for no longer than
    // that plus one renewal attempt.
    let bound = Duration::from_secs(LEASE_SECONDS + 3);
    assert!(
        after_sigkill <= bound && after_sigterm <= bound,
        "handover took {after_sigterm:?} / {after_sigkill:?}, more than {bound:?}"
    );
    Ok(())
}

#[tokio::test]
async fn metrics_endpoint_serves_the_operator_metrics() -> Result<()> {
    let g = ground_with_crds("metrics").await?;
    let op = Operator::start(&g, &["--progress-poll", "1s"], &[])?;
    ready_account(&g).await?;
    apply_example(&g)?;
    wait_running(&g, "demo", |_| true).await?;
    // An account that cannot be verified: an error with its reason.
    kubectl_apply(
        &g,
        "apiVersion: byoc.dev/v1alpha1\nkind: CloudAccount\nmetadata: {name: broken}\nspec:\n  region: us-east-1\n  credentialsSecretRef: {name: missing}\n",
    )?;
    let text = eventually("the SecretNotFound error counted", WAIT, || async {
        let text = op.metrics()?;
        Ok((crate::support::sample(
            &text,
            r#"byoc_reconcile_errors_total{controller="cloudaccount",reason="SecretNotFound"}"#,
        ) >= 1.0)
            .then_some(text))
    })
    .await?;
    let sample = |s: &str| crate::support::sample(&text, s);
    for (series, ok) in [
        (
            "byoc_reconciles_total{controller=\"computecluster\"}",
            sample("byoc_reconciles_total{controller=\"computecluster\"}") >= 1.0,
        ),
        (
            "byoc_reconciles_total{controller=\"cloudaccount\"}",
            sample("byoc_reconciles_total{controller=\"cloudaccount\"}") >= 1.0,
        ),
        (
            "byoc_reconcile_duration_seconds_count",
            sample("byoc_reconcile_duration_seconds_count") >= 1.0,
        ),
        (
            "byoc_requeue_backoff_seconds_count",
            sample("byoc_requeue_backoff_seconds_count") >= 1.0,
        ),
        (
            "byoc_compute_clusters{phase=\"running\"} = 1",
            sample("byoc_compute_clusters{phase=\"running\"}") == 1.0,
        ),
        ("byoc_leader = 1", sample("byoc_leader") == 1.0),
        (
            "byoc_cluster_time_to_running_seconds_count: the one cluster, once",
            sample(&format!(
                "byoc_cluster_time_to_running_seconds_count{{namespace=\"{}\"}}",
                g.namespace
            )) == 1.0,
        ),
    ] {
        assert!(ok, "/metrics: {series} not as expected:\n{text}");
    }
    // AWS calls by service and operation match what reached AWS, per
    // operation (no faults: one call, one request), once no call is in
    // flight: the proxy's counts are the same before and after the scrape.
    let compare = |text: &str, proxy: &BTreeMap<String, u64>| -> Result<usize> {
        let mut compared = 0;
        for line in text
            .lines()
            .filter(|l| l.starts_with("byoc_aws_calls_total{"))
        {
            let (series, value) = line.rsplit_once(' ').context("sample")?;
            let op_name = series
                .split("operation=\"")
                .nth(1)
                .and_then(|s| s.split('"').next())
                .context("operation label")?;
            assert!(series.contains("service=\""), "no service label: {series}");
            let seen = proxy.get(op_name).copied().unwrap_or(0) as f64;
            let counted: f64 = value.parse()?;
            assert_eq!(
                counted, seen,
                "{op_name}: the operator counted {counted}, AWS saw {seen}"
            );
            compared += 1;
        }
        Ok(compared)
    };
    let (compared, text) = eventually("metrics equal to the calls AWS saw", WAIT, || async {
        let before = g.proxy.calls();
        let text = op.metrics()?;
        if g.proxy.calls() != before {
            return Ok(None);
        }
        Ok(Some((compare(&text, &before)?, text)))
    })
    .await?;
    assert!(
        compared >= 10 && text.contains("operation=\"AssumeRole\""),
        "only {compared} operations counted (STS included?):\n{text}"
    );
    // By AWS account: every call of the cluster's work (all but the
    // account's own STS calls), under the one account it went to.
    let samples = |prefix: &str| -> Vec<(String, f64)> {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit_once(' '))
            .map(|(series, v)| (series.to_string(), v.parse().unwrap_or(f64::NAN)))
            .collect()
    };
    let by_account = samples("byoc_aws_account_calls_total{");
    let work: f64 = samples("byoc_aws_calls_total{")
        .iter()
        .filter(|(series, _)| !series.contains("service=\"STS\""))
        .map(|(_, v)| v)
        .sum();
    // The account of `ready_account`'s role.
    let account_id = "123456789012";
    assert_eq!(
        by_account,
        vec![(
            format!("byoc_aws_account_calls_total{{aws_account=\"{account_id}\"}}"),
            work
        )],
        "calls by AWS account against the calls of the cluster's work:\n{text}"
    );
    for path in ["/healthz", "/readyz"] {
        let (status, _) = testground::http_get(op.metrics_port, path)?;
        assert_eq!(status, 200, "{path} answered {status}");
    }
    Ok(())
}

fn condition<'a>(
    cc: &'a ComputeCluster,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    cc.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
}

async fn set_paused(g: &Ground, paused: bool) -> Result<()> {
    let value = if paused {
        serde_json::json!("true")
    } else {
        serde_json::Value::Null
    };
    g.api::<ComputeCluster>()
        .patch(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(
                serde_json::json!({"metadata": {"annotations": {"byoc.dev/paused": value}}}),
            ),
        )
        .await?;
    Ok(())
}

/// Waits until the operator has seen the current generation while paused.
async fn wait_paused_at_current_generation(g: &Ground) -> Result<ComputeCluster> {
    let api = g.api::<ComputeCluster>();
    eventually("Paused=True for the current generation", WAIT, || async {
        let cc = api.get("demo").await?;
        let seen = condition(&cc, "Paused")
            .filter(|c| c.status == "True")
            .and_then(|c| c.observed_generation);
        Ok((seen.is_some() && seen == cc.metadata.generation).then_some(cc))
    })
    .await
}

#[tokio::test]
async fn paused_cluster_is_left_alone_until_resumed() -> Result<()> {
    let g = ground_with_crds("paused").await?;
    let _op = Operator::start(
        &g,
        &["--progress-poll", "1s", "--resync-interval", "2s"],
        &[],
    )?;
    ready_account(&g).await?;
    apply_example(&g)?;
    let cc = wait_running(&g, "demo", |_| true).await?;
    let uid = cc.uid().context("uid")?;

    // Paused, then scaled: the operator sees the change and leaves AWS alone.
    set_paused(&g, true).await?;
    wait_paused_at_current_generation(&g).await?;
    let run_instances = |g: &Ground| g.proxy.calls().get("RunInstances").copied().unwrap_or(0);
    let launched = run_instances(&g);
    scale_workers(&g, 5).await?;
    let cc = wait_paused_at_current_generation(&g).await?;
    let status = cc.status.clone().unwrap_or_default();
    assert!(
        status.observed_generation < cc.metadata.generation,
        "a paused cluster's observedGeneration must not move"
    );
    assert!(
        run_instances(&g) == launched && counts(&g, &uid).await?.instances() == 4,
        "a paused cluster was scaled"
    );
    let events = g.api::<Event>().list(&ListParams::default()).await?;
    assert!(
        events
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("Paused")),
        "no Paused Event"
    );

    // Resumed: the change is applied.
    set_paused(&g, false).await?;
    let cc = wait_running(&g, "demo", |cc| {
        cc.status.as_ref().and_then(|s| s.nodes.as_deref()) == Some("6/6")
    })
    .await?;
    assert!(
        condition(&cc, "Paused").is_none(),
        "the Paused condition stays after resuming"
    );

    // Paused deletion: the finalizer holds and AWS keeps everything.
    set_paused(&g, true).await?;
    wait_paused_at_current_generation(&g).await?;
    g.api::<ComputeCluster>()
        .delete("demo", &DeleteParams::default())
        .await?;
    wait_paused_at_current_generation(&g).await?;
    let held = counts(&g, &uid).await?;
    assert!(
        held.vpcs == 1 && held.instances() == 6,
        "a paused deletion removed resources: {held:?}"
    );
    set_paused(&g, false).await?;
    let api = g.api::<ComputeCluster>();
    eventually("ComputeCluster demo gone", WAIT, || async {
        Ok(api.get_opt("demo").await?.is_none().then_some(()))
    })
    .await?;
    let left = counts(&g, &uid).await?;
    assert_eq!(left, Counts::default(), "left behind: {left:?}");
    Ok(())
}

/// `(status, message)` by `Kind/name`, from `gitops-check` on the namespace's
/// byoc objects.
fn gitops_health(g: &Ground, check: &[&str]) -> Result<BTreeMap<String, (String, String)>> {
    let objects = g
        .kube
        .kubectl()
        .args([
            "get",
            "computeclusters,cloudaccounts",
            "-n",
            &g.namespace,
            "-o",
            "json",
        ])
        .output()?;
    anyhow::ensure!(objects.status.success(), "kubectl get failed");
    let tools = testground::Tools::locate()?;
    let mut child = std::process::Command::new(&tools.gitops_check)
        .args(check)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        stdin.write_all(&objects.stdout)?;
    }
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "gitops-check: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut map = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        map.insert(
            format!("{}/{}", s("kind"), s("name")),
            (s("status"), s("message")),
        );
    }
    Ok(map)
}

#[tokio::test]
async fn gitops_health_follows_the_conditions() -> Result<()> {
    let g = ground_with_crds("gitops").await?;
    let _op = Operator::start(&g, &["--progress-poll", "1s"], &[])?;
    ready_account(&g).await?;
    apply_example(&g)?;
    let cc = wait_running(&g, "demo", |_| true).await?;
    // The operator writes status and its finalizer, never spec: a GitOps
    // tool sees no drift it did not cause.
    for entry in cc.metadata.managed_fields.iter().flatten() {
        let fields = entry
            .fields_v1
            .as_ref()
            .map(|f| f.0.to_string())
            .unwrap_or_default();
        let manager = entry.manager.as_deref().unwrap_or_default();
        assert!(
            !fields.contains("\"f:spec\"") || manager.starts_with("kubectl"),
            "{manager} wrote spec fields: {fields}"
        );
    }

    // A failed account, a cluster stalled on it, and one held provisioning by
    // AWS failing every launch transiently.
    kubectl_apply(
        &g,
        "apiVersion: byoc.dev/v1alpha1\nkind: CloudAccount\nmetadata: {name: broken}\nspec:\n  region: us-east-1\n  credentialsSecretRef: {name: missing}\n",
    )?;
    let small = |name: &str, account: &str, cidr: &str| {
        format!(
            "apiVersion: byoc.dev/v1alpha1\nkind: ComputeCluster\nmetadata: {{name: {name}}}\nspec:\n  cloudAccountRef: {{name: {account}}}\n  region: us-east-1\n  network: {{vpcCidr: {cidr}, availabilityZones: [us-east-1a], natGateways: none}}\n  nodeGroups: [{{name: workers, instanceType: t3.small, count: 1, subnets: public}}]\n"
        )
    };
    kubectl_apply(&g, &small("stalled", "broken", "10.1.0.0/16"))?;
    g.proxy.set_faults(testground::Faults {
        error_rate: 1.0,
        operations: vec!["RunInstances".into()],
        ..Default::default()
    });
    kubectl_apply(&g, &small("launching", "acme", "10.2.0.0/16"))?;
    let api = g.api::<ComputeCluster>();
    eventually("launching retries a transient error", WAIT, || async {
        let cc = api.get("launching").await?;
        Ok(condition(&cc, "Reconciling")
            .is_some_and(|c| c.status == "True" && c.reason == "AwsError")
            .then_some(()))
    })
    .await?;
    eventually("stalled is stalled", WAIT, || async {
        let cc = api.get("stalled").await?;
        Ok(condition(&cc, "Stalled")
            .is_some_and(|c| c.status == "True")
            .then_some(()))
    })
    .await?;
    // demo paused with a change it has not acted on.
    set_paused(&g, true).await?;
    scale_workers(&g, 4).await?;
    wait_paused_at_current_generation(&g).await?;

    let lua = testground::repo_root().join("charts/byoc-operator/gitops/health.lua");
    let lua = lua.to_string_lossy().into_owned();
    let argo = gitops_health(&g, &["argocd", &lua])?;
    let kstatus = gitops_health(&g, &["kstatus"])?;
    let expected = [
        ("CloudAccount/acme", "Healthy", "Current"),
        ("CloudAccount/broken", "Degraded", "Failed"),
        ("ComputeCluster/stalled", "Degraded", "Failed"),
        ("ComputeCluster/launching", "Progressing", "InProgress"),
        ("ComputeCluster/demo", "Suspended", "InProgress"),
    ];
    let mut wrong = vec![];
    for (object, argo_want, kstatus_want) in expected {
        let a = argo.get(object).cloned().unwrap_or_default();
        let k = kstatus.get(object).cloned().unwrap_or_default();
        println!(
            "{object}: Argo CD {} ({}), kstatus {} ({})",
            a.0, a.1, k.0, k.1
        );
        if a.0 != argo_want || k.0 != kstatus_want {
            wrong.push(format!(
                "{object}: Argo CD {a:?} (want {argo_want}), kstatus {k:?} (want {kstatus_want})"
            ));
        }
    }
    // Resumed (and AWS well again), demo converges: healthy to both.
    g.proxy.set_faults(testground::Faults::default());
    set_paused(&g, false).await?;
    wait_running(&g, "demo", |_| true).await?;
    let argo = gitops_health(&g, &["argocd", &lua])?;
    let kstatus = gitops_health(&g, &["kstatus"])?;
    let demo = "ComputeCluster/demo";
    if argo.get(demo).map(|s| s.0.as_str()) != Some("Healthy")
        || kstatus.get(demo).map(|s| s.0.as_str()) != Some("Current")
    {
        wrong.push(format!(
            "demo running: Argo CD {:?}, kstatus {:?}",
            argo.get(demo),
            kstatus.get(demo)
        ));
    }

    // The shipped argocd-cm snippet carries health.lua unchanged.
    let snippet = std::fs::read_to_string(
        testground::repo_root().join("charts/byoc-operator/gitops/argocd-cm-patch.yaml"),
    )?;
    let snippet: serde_json::Value = serde_yaml_ng::from_str(&snippet)?;
    let script = std::fs::read_to_string(&lua)?;
    for kind in ["CloudAccount", "ComputeCluster"] {
        let key = format!("resource.customizations.health.byoc.dev_{kind}");
        if snippet["data"][&key].as_str() != Some(script.as_str()) {
            wrong.push(format!(
                "argocd-cm-patch.yaml {key} differs from health.lua (run hack/argocd-cm.sh)"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    Ok(())
}
