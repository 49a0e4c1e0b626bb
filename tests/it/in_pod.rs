//! The operator as users run it: its image (built here, no registry) on a
//! real node of the ground (kubelet, containerd's CRI, a pod network; see
//! `testground::node`), installed by `helm install` of the chart with two
//! replicas and leader election.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use byoc_operator::api::ComputeCluster;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, ListParams};
use kube::ResourceExt;
use testground::node::Node;

use crate::clusters::expected_example;
use crate::clusters::{
    counts, delete_leaves_nothing, ready_account, small_cluster_manifest, wait_running_within,
    Counts, WAIT,
};
use crate::fencing::{
    example_waiting_for_its_nat_gateway, example_waiting_for_its_vpc, first_write_of, writes_of,
};
use crate::image::{build_image, root_read_only, uids};
use crate::support::{eventually, kubectl_apply, record_figure, Ground};

const RELEASE: &str = "byoc-operator";
const SELECTOR: &str = "app.kubernetes.io/instance=byoc-operator";
/// Time for pods to start, roll or hand over on the node.
const POD_WAIT: Duration = Duration::from_secs(360);
const LEASE: &str = "4s";

/// A node, a namespace on its control plane, and the operator's image
/// loaded into its runtime: the image's digest.
async fn node_ground(test: &str) -> Result<(Arc<Node>, Ground, String)> {
    let node = Arc::new(tokio::task::spawn_blocking(Node::start).await??);
    let g = Ground::on_node(test, Arc::clone(&node)).await?;
    let dir = g.kube.dir().join("image");
    let digest = build_image(&dir)?;
    node.load_image(&dir.join("image.tar"), "byoc.dev/byoc-operator")?;
    Ok((node, g, digest))
}

/// `helm ARGS` against the node's control plane.
fn helm(g: &Ground, args: &[&str]) -> Result<String> {
    let mut cmd = crate::chart::helm(g)?;
    cmd.args(args);
    crate::chart::run(cmd)
}

/// `helm install` (or `upgrade`) of the chart, the image by digest, AWS
/// through the proxy as the node's pods reach it; waits for the rollout.
fn install(g: &Ground, verb: &str, digest: &str, aws: SocketAddr, extra: &[&str]) -> Result<()> {
    // The pods' role is judged by their installation's policy, from the
    // Secret the chart's operator makes (`<release>-installation`).
    g.grant_when_made((format!("{RELEASE}-installation"), g.namespace.clone()))?;
    let chart = testground::repo_root().join("charts/byoc-operator");
    let chart = chart.to_string_lossy();
    let digest = format!("image.digest={digest}");
    let endpoint = format!("aws.endpointUrl=http://{aws}");
    let mut args = vec![
        verb,
        RELEASE,
        &chart,
        "--namespace",
        &g.namespace,
        "--set",
        "image.repository=byoc.dev/byoc-operator",
        "--set",
        &digest,
        "--set",
        "image.pullPolicy=Never",
        "--set",
        &endpoint,
        "--set",
        "extraEnv[0].name=AWS_EC2_METADATA_DISABLED",
        "--set-string",
        "extraEnv[0].value=true",
        "--set",
        "watchNamespace=",
        "--set",
        "progressPoll=1s",
    ];
    let lease = format!("leaderElection.leaseDuration={LEASE}");
    args.extend(["--set", &lease, "--wait", "--timeout", "3m"]);
    args.extend(extra);
    helm(g, &args).map(drop)
}

async fn pods(g: &Ground) -> Result<Vec<Pod>> {
    Ok(g.api::<Pod>()
        .list(&ListParams::default().labels(SELECTOR))
        .await?
        .items)
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pod_ip(p: &Pod) -> Result<std::net::IpAddr> {
    p.status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .context("no pod IP")?
        .parse()
        .context("pod IP")
}

fn container_id(p: &Pod) -> Result<String> {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .and_then(|c| c.container_id.clone())
        .context("no container ID")
}

/// The operator's pods that are ready, once there are `n` and no other.
async fn ready_pods(g: &Ground, n: usize) -> Result<Vec<Pod>> {
    eventually(&format!("{n} ready operator pods"), POD_WAIT, || async {
        let all = pods(g).await?;
        let live: Vec<Pod> = all
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        Ok((live.len() == n && live.iter().all(ready)).then_some(live))
    })
    .await
}

/// The Lease holder (a pod's name), once one holds it.
async fn leader(g: &Ground) -> Result<String> {
    eventually("a Lease holder", POD_WAIT, || async {
        let lease = g.api::<Lease>().get_opt(RELEASE).await?;
        Ok(lease
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
            .filter(|h| !h.is_empty()))
    })
    .await
}

/// The pod IPs the metrics Service's endpoints call ready.
async fn ready_endpoints(g: &Ground) -> Result<Vec<String>> {
    let slices = g
        .api::<EndpointSlice>()
        .list(
            &ListParams::default().labels(&format!("kubernetes.io/service-name={RELEASE}-metrics")),
        )
        .await?;
    let mut ips: Vec<String> = slices
        .items
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
        .flat_map(|e| e.addresses.clone())
        .collect();
    ips.sort();
    Ok(ips)
}

#[tokio::test]
async fn the_chart_runs_two_replicas_on_a_node_that_build_and_delete_a_cluster() -> Result<()> {
    let started = Instant::now();
    let (node, g, digest) = node_ground("in-pod").await?;
    let ground_ready = started.elapsed();
    let aws = node.expose(g.proxy.port())?;
    install(&g, "install", &digest, aws, &[])?;
    let pods_now = ready_pods(&g, 2).await?;
    let leading = leader(&g).await?;
    assert!(
        pods_now.iter().any(|p| p.name_any() == leading),
        "the Lease holder {leading} is not one of the pods"
    );

    // Ready through its probe, the Service's endpoints list both pods.
    let mut ips: Vec<String> = pods_now
        .iter()
        .map(|p| pod_ip(p).map(|ip| ip.to_string()))
        .collect::<Result<_>>()?;
    ips.sort();
    eventually(
        "both pods in the Service's ready endpoints",
        WAIT,
        || async { Ok((ready_endpoints(&g).await? == ips).then_some(())) },
    )
    .await?;

    // From the node: the container's process runs as 65532 on a read-only root.
    for p in &pods_now {
        let pid = node.container_pid(&container_id(p)?)?;
        let ids = uids(pid)?;
        assert!(
            !ids.is_empty() && ids.iter().all(|u| *u == 65532),
            "{} runs as {ids:?}",
            p.name_any()
        );
        assert!(root_read_only(pid)?, "{}'s root is writable", p.name_any());
    }

    // A cluster, the leader pod deleted while it builds it.
    ready_account(&g).await?;
    g.proxy.set_faults(testground::Faults {
        hold_answers: [("CreateRouteTable".to_string(), Duration::from_secs(2))].into(),
        ..Default::default()
    });
    kubectl_apply(&g, &small_cluster_manifest("boxed", "10.71.0.0/16"))?;
    let uid = eventually("the cluster's VPC", WAIT, || async {
        let cc = g.api::<ComputeCluster>().get("boxed").await?;
        let uid = cc.uid().unwrap_or_default();
        Ok((counts(&g, &uid).await?.vpcs > 0).then_some(uid))
    })
    .await?;
    g.api::<Pod>()
        .delete(&leading, &DeleteParams::default())
        .await?;
    let successor = eventually("a new Lease holder", POD_WAIT, || async {
        Ok(leader(&g).await.ok().filter(|h| *h != leading))
    })
    .await?;
    let running = wait_running_within(&g, "boxed", POD_WAIT, |_| true).await?;
    g.proxy.set_faults(testground::Faults::default());
    let built = counts(&g, &uid).await?;
    // One zone, no NAT: a public and a private subnet and route table each.
    let expected = Counts {
        vpcs: 1,
        subnets: 2,
        internet_gateways: 1,
        route_tables: 2,
        security_groups: 1,
        instances: [("t3.small".to_string(), 1)].into(),
        roles: 1,
        ..Counts::default()
    };
    assert_eq!(built, expected, "after the hand-over, in moto: {built:?}");
    assert!(
        running
            .status
            .as_ref()
            .and_then(|s| s.installation.clone())
            .is_some(),
        "status names the installation"
    );

    // Metrics from the leader's pod port: the Lease holder's pod says it
    // leads (the holder read again at each look, as it may move on).
    eventually(
        "the Lease holder's pod reporting byoc_leader 1",
        WAIT,
        || async {
            let holder = leader(&g).await?;
            let lead_pod = g.api::<Pod>().get(&holder).await?;
            let port = node.reach(SocketAddr::new(pod_ip(&lead_pod)?, 8080))?;
            let (status, text) = testground::http_get(port.port(), "/metrics")?;
            Ok(
                (status == 200 && testground::metric_sample(&text, "byoc_leader") == 1.0)
                    .then_some(()),
            )
        },
    )
    .await?;

    // helm upgrade of a value rolls the Deployment; nothing made twice.
    let before: Vec<String> = ready_pods(&g, 2)
        .await?
        .iter()
        .map(|p| p.name_any())
        .collect();
    install(&g, "upgrade", &digest, aws, &["--set", "concurrency=4"])?;
    let after = eventually("the rolled pods", POD_WAIT, || async {
        let now = ready_pods(&g, 2).await?;
        Ok(now
            .iter()
            .all(|p| !before.contains(&p.name_any()))
            .then_some(now))
    })
    .await?;
    leader(&g).await?;
    assert_eq!(
        counts(&g, &uid).await?,
        built,
        "the upgrade changed what AWS holds"
    );

    // helm uninstall keeps the CRDs and the cluster (and what it made in
    // AWS); a new install takes it over.
    helm(
        &g,
        &["uninstall", RELEASE, "--namespace", &g.namespace, "--wait"],
    )?;
    eventually("the operator's pods gone", POD_WAIT, || async {
        Ok(pods(&g).await?.is_empty().then_some(()))
    })
    .await?;
    let kept = g.api::<ComputeCluster>().get("boxed").await?;
    assert!(
        kept.finalizers().iter().any(|f| f.starts_with("byoc.dev")),
        "the cluster kept its finalizer"
    );
    assert_eq!(
        counts(&g, &uid).await?,
        built,
        "uninstalling the operator changed what AWS holds"
    );
    install(&g, "install", &digest, aws, &[])?;
    ready_pods(&g, 2).await?;
    delete_leaves_nothing(&g, "boxed", &uid).await?;
    helm(
        &g,
        &["uninstall", RELEASE, "--namespace", &g.namespace, "--wait"],
    )?;
    record_figure(serde_json::json!({
        "suite": "in-pod",
        "setup": "the image built here, loaded into the node's containerd; helm install of the chart, 2 replicas, lease 4 s; the leader pod deleted while it built a cluster; helm upgrade of a value; helm uninstall and install again",
        "n": 1,
        "figure": format!("ground with a Ready node in {:.0} s; {} → {successor} took over and finished with nothing twice ({built:?}); the upgrade rolled both pods ({}); uninstall kept the CRDs, the cluster and its AWS resources; a new install deleted it to zero; whole test {:.0} s", ground_ready.as_secs_f64(), leading, after.len(), started.elapsed().as_secs_f64()),
        "pass": true,
    }))?;
    Ok(())
}

/// A node with the chart installed (two replicas, lease [`LEASE`]) and the
/// account ready: the node, the ground, and the leading pod.
async fn installed(test: &str) -> Result<(Arc<Node>, Ground, Pod)> {
    let (node, g, digest) = node_ground(test).await?;
    let aws = node.expose(g.proxy.port())?;
    install(&g, "install", &digest, aws, &[])?;
    let all = ready_pods(&g, 2).await?;
    let leading = leader(&g).await?;
    let pod = all
        .into_iter()
        .find(|p| p.name_any() == leading)
        .with_context(|| format!("the Lease holder {leading} is not one of the pods"))?;
    ready_account(&g).await?;
    Ok((node, g, pod))
}

/// The Lease holder once it is another than `old`.
async fn successor(g: &Ground, old: &str) -> Result<String> {
    eventually("a new Lease holder", POD_WAIT, || async {
        Ok(leader(g).await.ok().filter(|h| h != old))
    })
    .await
}

#[tokio::test]
async fn a_frozen_leader_pod_writes_nothing_after_its_successor_and_leaves_the_endpoints(
) -> Result<()> {
    let (node, g, old) = installed("in-pod-frozen").await?;
    let old_name = old.name_any();
    let old_ip = pod_ip(&old)?.to_string();
    let container = container_id(&old)?;
    let uid = example_waiting_for_its_vpc(&g).await?;
    // The runtime's pause: the container's cgroup frozen, probes unanswered.
    node.freeze_container(&container)?;
    let frozen = Instant::now();
    let before = writes_of(&g, &old_name).len();
    let new = successor(&g, &old_name).await?;
    let first = first_write_of(&g, &new).await?;
    // Its readiness probe fails: the Service stops sending to it.
    eventually(
        "the frozen pod out of the ready endpoints",
        POD_WAIT,
        || async {
            let ips = ready_endpoints(&g).await?;
            Ok((!ips.is_empty() && !ips.contains(&old_ip)).then_some(()))
        },
    )
    .await?;
    let out_of_endpoints = frozen.elapsed();
    node.thaw_container(&container)?;
    // Thawed, it finds the Lease gone and exits (the kubelet restarts it);
    // meanwhile nothing it writes may leave.
    eventually("the old leader's container restarted", POD_WAIT, || async {
        let p = g.api::<Pod>().get(&old_name).await?;
        let restarts = p
            .status
            .and_then(|s| s.container_statuses)
            .and_then(|c| c.first().map(|c| c.restart_count))
            .unwrap_or(0);
        Ok((restarts > 0).then_some(()))
    })
    .await?;
    let late: Vec<testground::Call> = writes_of(&g, &old_name)
        .into_iter()
        .filter(|c| c.accepted > first)
        .collect();
    assert!(
        late.is_empty(),
        "{old_name} started writes after {new}'s first ({first:?}): {late:?}"
    );
    wait_running_within(&g, "demo", POD_WAIT, |_| true).await?;
    let c = counts(&g, &uid).await?;
    assert_eq!(c, expected_example(3), "in moto: {c:?}");
    // Restarted and ready again, it is back in the endpoints.
    eventually(
        "the restarted pod back in the ready endpoints",
        POD_WAIT,
        || async { Ok(ready_endpoints(&g).await?.contains(&old_ip).then_some(())) },
    )
    .await?;
    record_figure(serde_json::json!({
        "suite": "fencing",
        "setup": format!("the chart on the node: two operator pods (lease {LEASE}); the leader's container frozen (containerd's pause) while it waited for the answer to its CreateVpc (held 1.5 s by the proxy), thawed once its readiness probe had failed"),
        "n": 1,
        "figure": format!("AWS writes started by the old leader pod after the new leader's first: {}; its writes before the freeze: {before}; out of the Service's ready endpoints {:.0} s after the freeze; thawed, it exited and was restarted; the successor brought the example to running with nothing twice", late.len(), out_of_endpoints.as_secs_f64()),
        "pass": true,
    }))
}

#[tokio::test]
async fn a_leader_pod_cut_off_from_the_apiserver_stops_writing_before_its_successor_starts(
) -> Result<()> {
    let (node, g, old) = installed("in-pod-cut").await?;
    let old_name = old.name_any();
    let uid = example_waiting_for_its_nat_gateway(&g).await?;
    node.cut_from_apiserver(pod_ip(&old)?);
    let before = writes_of(&g, &old_name).len();
    let new = successor(&g, &old_name).await?;
    let first = first_write_of(&g, &new).await?;
    wait_running_within(&g, "demo", POD_WAIT, |_| true).await?;
    let late_writes = || -> Vec<testground::Call> {
        writes_of(&g, &old_name)
            .into_iter()
            .filter(|c| c.accepted > first)
            .collect()
    };
    let held_back = "AWS write not sent";
    eventually(
        "the cut-off pod's next write, sent or held back",
        WAIT,
        || async {
            Ok((!late_writes().is_empty()
                || node.pod_logs(&g.namespace, &old_name).contains(held_back))
            .then_some(()))
        },
    )
    .await?;
    let late = late_writes();
    assert!(
        late.is_empty(),
        "{old_name}, cut off, started writes after {new}'s first ({first:?}): {late:?}"
    );
    let fenced = node
        .pod_logs(&g.namespace, &old_name)
        .matches(held_back)
        .count();
    let c = counts(&g, &uid).await?;
    assert_eq!(c, expected_example(3), "in moto: {c:?}");
    record_figure(serde_json::json!({
        "suite": "fencing",
        "setup": format!("the chart on the node: two operator pods (lease {LEASE}); the leader pod's apiserver traffic held for ever at the node (its connections up, nothing carried) while it waited for the answer to its CreateNatGateway (held 7 s by the proxy)"),
        "n": 1,
        "figure": format!("AWS writes started by the cut-off leader pod after its successor's first: {}; writes it held back itself (fence): {fenced}; its writes before the cut: {before}; the successor brought the example to running with nothing twice", late.len()),
        "pass": true,
    }))
}

#[tokio::test]
async fn with_host_network_the_pod_runs_on_the_nodes_address() -> Result<()> {
    let (node, g, digest) = node_ground("in-pod-host").await?;
    let aws = node.expose(g.proxy.port())?;
    install(
        &g,
        "install",
        &digest,
        aws,
        &["--set", "hostNetwork=true", "--set", "replicaCount=1"],
    )?;
    let pod = ready_pods(&g, 1).await?.remove(0);
    let ip = pod_ip(&pod)?;
    assert_eq!(
        ip,
        testground::node::NODE_IP,
        "the pod's IP is {ip}, not the node's"
    );
    let port = node.reach(SocketAddr::new(ip, 8080))?;
    let (status, _) = testground::http_get(port.port(), "/readyz")?;
    assert_eq!(status, 200, "/readyz on the node's port: HTTP {status}");
    leader(&g).await?;
    Ok(())
}
