//! The scenarios: the reference topology (P1, P2, deletion) and many small
//! clusters over many accounts (P3), against the ground.

use super::*;
use crate::critical_path::{
    critical_path, drain_bound, longest_sequential_chain, price_critical_path, price_with_waits,
};
use testground::proxy::Call;

/// The operator as a process, watching `namespace`, reaching AWS through `proxy`.
fn start_operator(
    kube: &Kube,
    namespace: &str,
    proxy: &AwsProxy,
    extra: &[&str],
) -> Result<Operator> {
    let mut op = Operator::launch(testground::OperatorLaunch {
        binary: Path::new(OPERATOR),
        kubeconfig: &kube.kubeconfig,
        aws_endpoint: proxy.endpoint(),
        namespace,
        args: extra,
        env: &[],
        log: kube.dir().join(format!("bench-operator-{namespace}.log")),
    })?;
    op.wait_healthy()?;
    Ok(op)
}

fn metric(op: &Operator, series: &str) -> Result<f64> {
    Ok(testground::metric_sample(&op.metrics()?, series))
}

pub(crate) async fn namespace(client: &Client, name: &str) -> Result<()> {
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await?;
    Ok(())
}

/// A Secret and a CloudAccount `name` in `ns`.
/// The AWS account the bench's reference account assumes a role in.
pub(crate) const REFERENCE_AWS_ACCOUNT: &str = "123456789012";

/// The AWS account of P3's `i`-th CloudAccount: each its own.
pub(crate) fn scale_aws_account(i: usize) -> String {
    format!("{:012}", 200_000_000_000 + i)
}

/// A Secret and a CloudAccount `name` assuming a role in `aws_account`.
pub(crate) async fn account(
    client: &Client,
    ns: &str,
    name: &str,
    aws_account: &str,
) -> Result<()> {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"byoc.dev/use": "credentials"}},
        "stringData": {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    }))?;
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await?;
    let account: CloudAccount = serde_json::from_value(json!({
        "apiVersion": "byoc.dev/v1alpha1", "kind": "CloudAccount",
        "metadata": {"name": name},
        "spec": {"region": "us-east-1", "credentialsSecretRef": {"name": name},
                 "roleArn": format!("arn:aws:iam::{aws_account}:role/byoc-cross-account")}
    }))?;
    Api::<CloudAccount>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &account)
        .await?;
    Ok(())
}

pub(crate) async fn wait_accounts_ready(client: &Client, ns: &str, n: usize) -> Result<()> {
    let api = Api::<CloudAccount>::namespaced(client.clone(), ns);
    let end = Instant::now() + DEADLINE;
    loop {
        let ready = api
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|a| {
                a.status.as_ref().and_then(|s| s.phase)
                    == Some(byoc_operator::api::AccountPhase::Ready)
            })
            .count();
        if ready == n {
            return Ok(());
        }
        if Instant::now() > end {
            bail!("{ready}/{n} CloudAccounts ready after {DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) fn reference_cluster(name: &str, account: &str) -> Result<ComputeCluster> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "byoc.dev/v1alpha1", "kind": "ComputeCluster",
        "metadata": {"name": name},
        "spec": {
            "cloudAccountRef": {"name": account},
            "region": "us-east-1",
            "network": {
                "vpcCidr": "10.0.0.0/16",
                "availabilityZones": ["us-east-1a", "us-east-1b", "us-east-1c"],
                "natGateways": "perZone"
            },
            "nodeGroups": [
                {"name": "general", "instanceType": "t3.large", "count": 3, "subnets": "private"},
                {"name": "compute", "instanceType": "c6i.xlarge", "count": 3, "subnets": "private"}
            ]
        }
    }))?)
}

/// The reference topology with a second choice of type per group.
pub(crate) fn fallback_cluster(name: &str, account: &str) -> Result<ComputeCluster> {
    let mut cc = reference_cluster(name, account)?;
    for (g, second) in cc
        .spec
        .node_groups
        .iter_mut()
        .zip(["m5.large", "c5.xlarge"])
    {
        g.instance_types = vec![std::mem::take(&mut g.instance_type), second.to_string()];
    }
    Ok(cc)
}

pub(crate) fn small_cluster(name: &str, account: &str, i: usize) -> Result<ComputeCluster> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "byoc.dev/v1alpha1", "kind": "ComputeCluster",
        "metadata": {"name": name},
        "spec": {
            "cloudAccountRef": {"name": account},
            "region": "us-east-1",
            "network": {
                "vpcCidr": format!("10.{}.0.0/16", i % 256),
                "availabilityZones": ["us-east-1a"],
                "natGateways": "none"
            },
            "nodeGroups": [{"name": "one", "instanceType": "t3.small", "count": 1, "subnets": "public"}]
        }
    }))?)
}

/// The reach topology: the reference's zones and node groups in a network
/// with no internet, four VPC endpoints (S3's gateway, ECR's and STS's
/// interfaces) and a peering connection with `peer` (10.200.0.0/16).
pub(crate) fn reach_cluster(name: &str, account: &str, peer: &str) -> Result<ComputeCluster> {
    let mut cc = serde_json::to_value(reference_cluster(name, account)?)?;
    cc["spec"]["network"] = json!({
        "vpcCidr": "10.0.0.0/16",
        "availabilityZones": ["us-east-1a", "us-east-1b", "us-east-1c"],
        "internet": false,
        "endpoints": ["s3", "ecr.api", "ecr.dkr", "sts"],
        "peering": [{"vpcId": peer}]
    });
    Ok(serde_json::from_value(cc)?)
}

/// A small cluster with a gateway endpoint and a peering connection with
/// `peer`: what the shared resync reads grows by those kinds.
pub(crate) fn resync_cluster(
    name: &str,
    account: &str,
    i: usize,
    peer: &str,
) -> Result<ComputeCluster> {
    let mut cc = serde_json::to_value(small_cluster(name, account, i)?)?;
    cc["spec"]["network"]["endpoints"] = json!(["s3"]);
    cc["spec"]["network"]["peering"] = json!([{"vpcId": peer}]);
    Ok(serde_json::from_value(cc)?)
}

pub(crate) fn is_running(cc: &ComputeCluster) -> bool {
    let s = cc.status.as_ref();
    s.and_then(|s| s.phase) == Some(ClusterPhase::Running)
        && s.and_then(|s| s.observed_generation) == cc.metadata.generation
}

/// Waits, looking every 10 ms, until ComputeCluster `name` is running;
/// fails after `end`.
async fn until_running(api: &Api<ComputeCluster>, name: &str, end: Instant) -> Result<()> {
    while !is_running(&api.get(name).await?) {
        if Instant::now() > end {
            bail!("the {name} cluster did not reach running");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// Waits, looking every 10 ms, until ComputeCluster `name` is gone; fails
/// after `end`.
async fn until_gone(api: &Api<ComputeCluster>, name: &str, end: Instant) -> Result<()> {
    while api.get_opt(name).await?.is_some() {
        if Instant::now() > end {
            bail!("the {name} cluster was not deleted");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// Waits until the shared resync has found `clusters` clusters unchanged
/// `ticks` more times (one interval looks at each settled cluster once).
pub(crate) async fn settled_ticks(op: &Operator, clusters: usize, ticks: usize) -> Result<()> {
    let unchanged = "byoc_resync_clusters_total{result=\"unchanged\"}";
    let before = metric(op, unchanged)?;
    let want = before + (clusters * ticks) as f64;
    let end = Instant::now() + Duration::from_secs(300);
    while metric(op, unchanged)? < want {
        if Instant::now() > end {
            bail!("the shared resync did not find {clusters} clusters unchanged {ticks} times within 300 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// One run of the reference topology: P1, P2 and deletion.
#[derive(Debug, Clone)]
pub(crate) struct ReferenceRun {
    pub(crate) to_running: Duration,
    pub(crate) converge_calls: BTreeMap<String, u64>,
    /// Longest chain of calls that did not overlap in time.
    pub(crate) sequential_depth: usize,
    pub(crate) sequential_chain: Vec<String>,
    /// Time from the create to the first AWS call.
    pub(crate) first_call_after: Duration,
    /// Every AWS call until running: operation, start and end in seconds
    /// since the create.
    pub(crate) timeline: Vec<(String, f64, f64)>,
    /// The critical path priced at this run's own call durations (latency
    /// plus moto's service time) instead of the latency alone.
    pub(crate) critical_at_call_times: f64,
    pub(crate) resync_calls: BTreeMap<String, u64>,
    pub(crate) to_deleted: Duration,
    pub(crate) delete_calls: BTreeMap<String, u64>,
    /// The reference topology with each group's first type refused in
    /// every zone: time to running, and RunInstances made.
    pub(crate) fallback_to_running: Duration,
    pub(crate) fallback_run_instances: u64,
    /// The same topology under the AWS realism profile: time to running,
    /// what AWS's waits alone would take (s), calls and throttled ones.
    pub(crate) realistic_to_running: Duration,
    pub(crate) realistic_bound: f64,
    pub(crate) realistic_calls: u64,
    pub(crate) realistic_throttled: u64,
    /// Its calls (operation, start, end) and AWS's waits (what, made,
    /// ended), in seconds after the create.
    pub(crate) realistic_timeline: Vec<(String, f64, f64)>,
    pub(crate) realistic_waits: Vec<(String, f64, f64)>,
    /// Its deletion, and what the drains alone would take (s).
    pub(crate) realistic_to_deleted: Duration,
    pub(crate) realistic_drain_bound: f64,
    /// The reach topology under the profile: time to running, what its
    /// calls and AWS's waits alone would take (s), its calls.
    pub(crate) reach_to_running: Duration,
    pub(crate) reach_bound: f64,
    pub(crate) reach_calls: u64,
}

pub(crate) async fn reference_run(
    kube: &Kube,
    client: &Client,
    run: usize,
    args: &Args,
) -> Result<ReferenceRun> {
    let ns = format!("reference-{run}");
    namespace(client, &ns).await?;
    let moto = tokio::task::spawn_blocking(Moto::start).await??;
    let proxy = AwsProxy::start(moto.port())?;
    let op = start_operator(kube, &ns, &proxy, &["--resync-interval", "3s"])?;
    account(client, &ns, "acct", REFERENCE_AWS_ACCOUNT).await?;
    wait_accounts_ready(client, &ns, 1).await?;
    warm_up(&moto, &[REFERENCE_AWS_ACCOUNT.to_string()]).await?;

    proxy.set_faults(Faults {
        latency: Duration::from_millis(args.latency_ms),
        ..Default::default()
    });
    proxy.reset_calls();
    let api = Api::<ComputeCluster>::namespaced(client.clone(), &ns);
    let started = Instant::now();
    api.create(
        &PostParams::default(),
        &reference_cluster("reference", "acct")?,
    )
    .await?;
    until_running(&api, "reference", started + DEADLINE).await?;
    let to_running = started.elapsed();
    let converge_calls = proxy.calls();
    let trace = proxy.trace();
    let (sequential_depth, sequential_chain) = longest_sequential_chain(&trace);
    let since_start = trace.first().map(|c| c.start).unwrap_or_default();
    // The proxy's clock started with the proxy: align with `started`.
    let proxy_age_at_create = proxy_age(&proxy) - started.elapsed();
    let first_call_after = since_start.saturating_sub(proxy_age_at_create);
    let timeline = timeline_of(&trace, proxy_age_at_create);
    let critical_at_call_times = price_critical_path(&critical_path(), &trace);

    // P2: one resync of the converged cluster: the calls of one shared
    // resync interval that found it unchanged, after one that did.
    settled_ticks(&op, 1, 1).await?;
    proxy.reset_calls();
    settled_ticks(&op, 1, 1).await?;
    let resync_calls = proxy.calls();

    // Deletion.
    proxy.reset_calls();
    let started = Instant::now();
    api.delete("reference", &DeleteParams::default()).await?;
    until_gone(&api, "reference", started + DEADLINE).await?;
    let to_deleted = started.elapsed();
    let delete_calls = proxy.calls();

    // The reference topology under the AWS realism profile, then its
    // deletion, each against what AWS's waits alone would take (before
    // the fallback scenario, whose refusals the operator remembers).
    proxy.set_faults(Faults {
        latency: Duration::from_millis(args.latency_ms),
        realism: Some(testground::Realism::aws(args.realism_scale)),
        ..Default::default()
    });
    proxy.reset_calls();
    let started = Instant::now();
    api.create(
        &PostParams::default(),
        &reference_cluster("realistic", "acct")?,
    )
    .await?;
    until_running(&api, "realistic", started + DEADLINE).await?;
    let realistic_to_running = started.elapsed();
    let proxy_age_at_create = proxy_age(&proxy) - started.elapsed();
    let realistic_timeline = timeline_of(&proxy.trace(), proxy_age_at_create);
    let realistic_waits = proxy
        .waits_drawn()
        .into_iter()
        .map(|(id, made, ends)| {
            (
                id,
                seconds_after(made, proxy_age_at_create),
                seconds_after(ends, proxy_age_at_create),
            )
        })
        .collect();
    let realistic_bound = price_with_waits(
        byoc_operator::cluster::graph::Shape::BASIC,
        &proxy.trace(),
        &proxy.longest_waits(),
    );
    let realistic_calls: u64 = proxy.calls().values().sum();
    let realistic_throttled = proxy.throttled();
    proxy.reset_calls();
    let started = Instant::now();
    api.delete("realistic", &DeleteParams::default()).await?;
    until_gone(&api, "realistic", started + DEADLINE).await?;
    let realistic_to_deleted = started.elapsed();
    let realistic_drain_bound = drain_bound(&proxy.trace(), &proxy.longest_waits());

    // The reach topology under the same profile: endpoints, no internet,
    // a peering connection accepted by the operator.
    let peer = peer_vpc(&moto, REFERENCE_AWS_ACCOUNT, "10.200.0.0/16").await?;
    proxy.reset_calls();
    let started = Instant::now();
    api.create(
        &PostParams::default(),
        &reach_cluster("reach", "acct", &peer)?,
    )
    .await?;
    until_running(&api, "reach", started + DEADLINE).await?;
    let reach_to_running = started.elapsed();
    let reach_shape = byoc_operator::cluster::graph::Shape {
        public_nodes: false,
        internet: false,
        nat: false,
        endpoints: true,
        peering: true,
        logging: false,
        storage: false,
    };
    let reach_bound = price_with_waits(reach_shape, &proxy.trace(), &proxy.longest_waits());
    let reach_calls: u64 = proxy.calls().values().sum();
    api.delete("reach", &DeleteParams::default()).await?;
    until_gone(&api, "reach", Instant::now() + DEADLINE).await?;

    // The same topology with each group's first-choice type refused in
    // every zone (the operator's refusal memory is empty for them).
    let refused = |t: &str| testground::Refusal {
        instance_type: Some(t.into()),
        code: "InsufficientInstanceCapacity".into(),
        ..Default::default()
    };
    proxy.set_faults(Faults {
        latency: Duration::from_millis(args.latency_ms),
        refusals: vec![refused("t3.large"), refused("c6i.xlarge")],
        ..Default::default()
    });
    proxy.reset_calls();
    let started = Instant::now();
    api.create(
        &PostParams::default(),
        &fallback_cluster("fallback", "acct")?,
    )
    .await?;
    until_running(&api, "fallback", started + DEADLINE).await?;
    let fallback_to_running = started.elapsed();
    let fallback_run_instances = proxy.calls().get("RunInstances").copied().unwrap_or(0);
    api.delete("fallback", &DeleteParams::default()).await?;
    until_gone(&api, "fallback", started + 2 * DEADLINE).await?;

    drop(op);
    Ok(ReferenceRun {
        reach_to_running,
        reach_bound,
        reach_calls,
        realistic_to_running,
        realistic_bound,
        realistic_calls,
        realistic_throttled,
        realistic_timeline,
        realistic_waits,
        realistic_to_deleted,
        realistic_drain_bound,
        to_running,
        converge_calls,
        sequential_depth,
        sequential_chain,
        first_call_after,
        timeline,
        critical_at_call_times,
        resync_calls,
        to_deleted,
        delete_calls,
        fallback_to_running,
        fallback_run_instances,
    })
}

/// moto builds an account's EC2 and IAM state on first use (~3 s of CPU
/// each on this machine; AWS has no such start): touch both in each of
/// `aws_accounts`, straight at moto, before anything is timed.
pub(crate) async fn warm_up(moto: &Moto, aws_accounts: &[String]) -> Result<()> {
    for aws_account in aws_accounts {
        let config = account_config(moto, aws_account).await?;
        aws_sdk_ec2::Client::new(&config)
            .describe_vpcs()
            .send()
            .await
            .context("warming moto's EC2")?;
        aws_sdk_iam::Client::new(&config)
            .list_roles()
            .send()
            .await
            .context("warming moto's IAM")?;
    }
    Ok(())
}

/// Straight at moto, as its default account.
pub(crate) async fn moto_config(moto: &Moto) -> aws_config::SdkConfig {
    config_at(moto.endpoint()).await
}

/// At `endpoint` (moto, or the proxy before it), as moto's default account.
async fn config_at(endpoint: String) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_credential_types::Credentials::new(
            "testing", "testing", None, None, "bench",
        ))
        .load()
        .await
}

/// Straight at moto, as `aws_account` (an assumed role there).
async fn account_config(moto: &Moto, aws_account: &str) -> Result<aws_config::SdkConfig> {
    let role = format!("arn:aws:iam::{aws_account}:role/warm-up");
    testground::assumed(&moto_config(moto).await, &role, None, &[])
        .await
        .context("assuming a role in moto")
}

/// A VPC of the team's to peer with, made straight in moto in `aws_account`.
pub(crate) async fn peer_vpc(moto: &Moto, aws_account: &str, cidr: &str) -> Result<String> {
    let config = account_config(moto, aws_account).await?;
    let out = aws_sdk_ec2::Client::new(&config)
        .create_vpc()
        .cidr_block(cidr)
        .send()
        .await?;
    Ok(out
        .vpc()
        .and_then(|v| v.vpc_id())
        .context("no peer VPC ID")?
        .to_string())
}

/// How long the proxy has been up (its trace's clock).
/// Seconds from `origin` to `at` (both on the proxy's clock), to the
/// millisecond.
fn seconds_after(at: Duration, origin: Duration) -> f64 {
    ((at.as_secs_f64() - origin.as_secs_f64()) * 1000.0).round() / 1000.0
}

/// The calls of `trace` as (operation, start, end) in seconds after
/// `origin` on the proxy's clock.
fn timeline_of(trace: &[Call], origin: Duration) -> Vec<(String, f64, f64)> {
    trace
        .iter()
        .map(|c| {
            (
                c.operation.clone(),
                seconds_after(c.start, origin),
                seconds_after(c.end, origin),
            )
        })
        .collect()
}

pub(crate) fn proxy_age(proxy: &AwsProxy) -> Duration {
    proxy.uptime()
}

#[derive(Debug, Clone)]
pub(crate) struct ScaleRun {
    pub(crate) to_all_running: Duration,
    pub(crate) cpu_seconds: f64,
    pub(crate) peak_rss_mib: f64,
    pub(crate) moto_cpu_seconds: f64,
    pub(crate) apiserver_cpu_seconds: f64,
    pub(crate) aws_calls: u64,
    /// Calls AWS's rate limits refused.
    pub(crate) throttled: u64,
    /// The least time AWS's buckets allow for the calls made (each bucket's
    /// spending past its capacity over its refill rate; the slowest), and
    /// which bucket that was.
    pub(crate) bucket_bound: Duration,
    pub(crate) bucket: String,
}

/// Quotas of an account built for many clusters (AWS allows 5 VPCs per
/// region by default; moto answers that): raised.
fn raised_quotas() -> BTreeMap<String, f64> {
    ["L-F678F1CE", "L-A4707A72", "L-0263D0A3", "L-1216C47A"]
        .iter()
        .map(|code| (code.to_string(), 10_000.0))
        .collect()
}

/// `clusters` small clusters over `accounts` AWS accounts, created at once
/// by direct API posts, against AWS's rate limits (the realism profile's
/// buckets alone, at AWS's default sizes), the operator pacing itself at
/// its defaults.
pub(crate) async fn scale_run(
    kube: &Kube,
    client: &Client,
    ns: &str,
    clusters: usize,
    accounts: usize,
) -> Result<ScaleRun> {
    namespace(client, ns).await?;
    let moto = tokio::task::spawn_blocking(Moto::start).await??;
    let proxy = AwsProxy::start(moto.port())?;
    proxy.set_faults(Faults {
        quotas: raised_quotas(),
        realism: Some(testground::Realism {
            states: false,
            iam_propagation: false,
            consistency: false,
            draining: false,
            ..testground::Realism::aws(1.0)
        }),
        ..Default::default()
    });
    let aws_accounts: Vec<String> = (0..accounts).map(scale_aws_account).collect();
    warm_up(&moto, &aws_accounts).await?;
    let op = start_operator(kube, ns, &proxy, &[])?;
    let (moto_cpu0, _) = usage(moto.pid())?;
    let (api_cpu0, _) = usage(kube.pids()[0])?;
    let started = Instant::now();
    futures::stream::iter(0..accounts)
        .map(|i| {
            let client = client.clone();
            async move { account(&client, ns, &format!("acct-{i}"), &scale_aws_account(i)).await }
        })
        .buffer_unordered(8)
        .try_collect::<Vec<_>>()
        .await?;
    let api = Api::<ComputeCluster>::namespaced(client.clone(), ns);
    futures::stream::iter(0..clusters)
        .map(|i| {
            let api = api.clone();
            async move {
                let cc = small_cluster(&format!("c-{i}"), &format!("acct-{}", i % accounts), i)?;
                api.create(&PostParams::default(), &cc).await?;
                Ok::<_, anyhow::Error>(())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    let end = started + SCALE_DEADLINE;
    loop {
        let list = api.list(&ListParams::default()).await?;
        let running = list.items.iter().filter(|c| is_running(c)).count();
        if running == clusters {
            break;
        }
        if Instant::now() > end {
            bail!("{running}/{clusters} clusters running after {SCALE_DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let to_all_running = started.elapsed();
    let (cpu_seconds, peak_rss_mib) = usage(op.process.pid())?;
    let (moto_cpu, _) = usage(moto.pid())?;
    let (api_cpu, _) = usage(kube.pids()[0])?;
    let (bucket_bound, bucket) = proxy.rate_bound();
    Ok(ScaleRun {
        throttled: proxy.throttled(),
        bucket_bound,
        bucket: bucket
            .map(|(account, kind)| format!("{kind:?} of account {account}"))
            .unwrap_or_default(),
        to_all_running,
        cpu_seconds,
        peak_rss_mib,
        moto_cpu_seconds: moto_cpu - moto_cpu0,
        apiserver_cpu_seconds: api_cpu - api_cpu0,
        aws_calls: proxy.calls().values().sum(),
    })
}

/// CPU seconds (user + system, all threads) and peak RSS in MiB of `pid`.
pub(crate) fn usage(pid: u32) -> Result<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command (which is in parentheses and may hold spaces).
    let rest = stat
        .rsplit_once(") ")
        .map(|(_, r)| r)
        .context("/proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|u| u.parse::<f64>().ok())
        .zip(fields.get(12).and_then(|s| s.parse::<f64>().ok()))
        .map(|(u, s)| u + s)
        .context("utime/stime")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let hwm_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    Ok((ticks / clock_ticks(), hwm_kib / 1024.0))
}

pub(crate) fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// Resync reads of one interval with `clusters` settled clusters in one
/// account.
#[derive(Debug, Clone)]
pub(crate) struct ResyncPoint {
    pub(crate) clusters: usize,
    pub(crate) reads: u64,
    pub(crate) by_operation: BTreeMap<String, u64>,
    /// Clusters the interval found changed (each then described itself).
    pub(crate) changed: f64,
    /// Clusters the interval could not look at (a shared describe failed:
    /// each then described itself).
    pub(crate) failed: f64,
}

/// Settled clusters in one account, `counts` of them in turn (ascending):
/// the AWS reads of one resync interval at each count. The clusters are
/// made unpaced and without rate limits: provisioning is not measured here.
pub(crate) async fn resync_scale_run(
    kube: &Kube,
    client: &Client,
    counts: &[usize],
) -> Result<Vec<ResyncPoint>> {
    let ns = "resync-scale";
    namespace(client, ns).await?;
    let moto = tokio::task::spawn_blocking(Moto::start).await??;
    let proxy = AwsProxy::start(moto.port())?;
    proxy.set_faults(Faults {
        quotas: raised_quotas(),
        ..Default::default()
    });
    let aws_account = scale_aws_account(0);
    warm_up(&moto, std::slice::from_ref(&aws_account)).await?;
    let op = start_operator(
        kube,
        ns,
        &proxy,
        &["--resync-interval", "10s", "--aws-pacing", "0"],
    )?;
    account(client, ns, "acct-0", &aws_account).await?;
    wait_accounts_ready(client, ns, 1).await?;
    // Outside every cluster's 10.i.0.0/16.
    let peer = peer_vpc(&moto, &aws_account, "172.31.0.0/16").await?;
    let api = Api::<ComputeCluster>::namespaced(client.clone(), ns);
    let mut made = 0;
    let mut points = vec![];
    for &n in counts {
        futures::stream::iter(made..n)
            .map(|i| {
                let (api, peer) = (api.clone(), peer.clone());
                async move {
                    let cc = resync_cluster(&format!("r-{i}"), "acct-0", i, &peer)?;
                    api.create(&PostParams::default(), &cc).await?;
                    Ok::<_, anyhow::Error>(())
                }
            })
            .buffer_unordered(16)
            .try_collect::<Vec<_>>()
            .await?;
        made = made.max(n);
        let end = Instant::now() + SCALE_DEADLINE;
        loop {
            let list = api.list(&ListParams::default()).await?;
            if list.items.iter().filter(|c| is_running(c)).count() == made {
                break;
            }
            if Instant::now() > end {
                // The counts reached so far are the figures.
                eprintln!("bench: {made} clusters not running after {SCALE_DEADLINE:?}; resync measured up to {:?}", points.last().map(|p: &ResyncPoint| p.clusters));
                return Ok(points);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        eprintln!("bench: resync with {made} settled clusters");
        settled_ticks(&op, made, 2).await?;
        let changed = "byoc_resync_clusters_total{result=\"changed\"}";
        let failed = "byoc_resync_clusters_total{result=\"failed\"}";
        let (changed_before, failed_before) = (metric(&op, changed)?, metric(&op, failed)?);
        proxy.reset_calls();
        settled_ticks(&op, made, 1).await?;
        let by_operation = proxy.calls();
        points.push(ResyncPoint {
            clusters: made,
            reads: crate::report::reads(&by_operation),
            by_operation,
            changed: metric(&op, changed)? - changed_before,
            failed: metric(&op, failed)? - failed_before,
        });
    }
    Ok(points)
}

/// The operator's memory with many large Secrets in its namespace.
#[derive(Debug, Clone)]
pub(crate) struct SecretMemory {
    pub(crate) secrets: usize,
    pub(crate) kib: usize,
    /// Peak RSS of an operator started with none, and of one started with
    /// them all there, each after `SETTLE` (its initial lists and a
    /// CloudAccount verified).
    pub(crate) none_mib: f64,
    pub(crate) with_mib: f64,
    /// Peak RSS of the first operator after the Secrets were created while it ran.
    pub(crate) created_while_running_mib: f64,
}

/// How long an operator runs before its memory is read.
const SETTLE: Duration = Duration::from_secs(20);

/// `secrets` Secrets of `kib` KiB each in one namespace: the operator's peak
/// RSS without them, after they were created while it ran, and when it
/// starts with them there.
pub(crate) async fn secret_memory_run(
    kube: &Kube,
    client: &Client,
    secrets: usize,
    kib: usize,
) -> Result<SecretMemory> {
    let ns = "secret-memory";
    namespace(client, ns).await?;
    let moto = tokio::task::spawn_blocking(Moto::start).await??;
    let proxy = AwsProxy::start(moto.port())?;
    account(client, ns, "acct", "123456789012").await?;
    // The memory is read after a fixed window of work, not on a condition:
    // it is the figure, not a synchronisation.
    async fn settled(op: &Operator) -> Result<f64> {
        tokio::time::sleep(SETTLE).await;
        Ok(usage(op.process.pid())?.1)
    }
    let first = start_operator(kube, ns, &proxy, &[])?;
    let none_mib = settled(&first).await?;
    let api = Api::<Secret>::namespaced(client.clone(), ns);
    let payload = "x".repeat(kib * 1024);
    futures::stream::iter(0..secrets)
        .map(|i| {
            let (api, payload) = (api.clone(), payload.clone());
            async move {
                let secret = Secret {
                    metadata: ObjectMeta {
                        name: Some(format!("bulk-{i}")),
                        ..Default::default()
                    },
                    string_data: Some([("data".to_string(), payload)].into()),
                    ..Default::default()
                };
                api.create(&PostParams::default(), &secret).await?;
                Ok::<_, anyhow::Error>(())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    let created_while_running_mib = settled(&first).await?;
    drop(first);
    let second = start_operator(kube, ns, &proxy, &[])?;
    let with_mib = settled(&second).await?;
    drop(second);
    Api::<Namespace>::all(client.clone())
        .delete(ns, &DeleteParams::default())
        .await?;
    Ok(SecretMemory {
        secrets,
        kib,
        none_mib,
        with_mib,
        created_while_running_mib,
    })
}

/// A tenant's cluster made and deleted with the operator to itself, then
/// beside another namespace abusing it (`abusers` clusters of `groups`
/// node groups × `per_group` instances, through an account whose quotas
/// cannot be read, so each pass launches a capped batch and comes back).
#[derive(Debug, Clone)]
pub(crate) struct FairnessRun {
    /// Time to `running` and to deleted, each cycle, alone.
    pub(crate) alone: Vec<(Duration, Duration)>,
    /// The same beside the abusing namespace.
    pub(crate) beside: Vec<(Duration, Duration)>,
    /// Of each cycle's time to `running` and to deleted, the part during
    /// which a call of the tenant's AWS account was at the ground (the
    /// rest is the operator's own: queues, workers, pacing, the
    /// apiserver), alone.
    pub(crate) alone_at_aws: Vec<(Duration, Duration)>,
    /// The same beside the abusing namespace.
    pub(crate) beside_at_aws: Vec<(Duration, Duration)>,
    /// Instances the abusing namespace's clusters had launched by the end.
    pub(crate) abusive_launched: u64,
    /// Reconciles the fair share put off.
    pub(crate) turned_away: f64,
}

/// The tenant's and the abuser's AWS accounts.
const TENANT_AWS_ACCOUNT: &str = "300000000001";
const ABUSER_AWS_ACCOUNT: &str = "300000000002";

pub(crate) async fn fairness_run(
    kube: &Kube,
    client: &Client,
    args: &Args,
    abusers: usize,
    groups: usize,
    per_group: i32,
) -> Result<FairnessRun> {
    let (tenant, abuse) = ("fair-tenant", "fair-abuse");
    namespace(client, tenant).await?;
    namespace(client, abuse).await?;
    // Each AWS account served by its own moto, as AWS serves accounts
    // apart: what the tenant's calls wait for is the operator's doing, not
    // one moto process busy with the abuser's launches.
    let moto = tokio::task::spawn_blocking(Moto::start).await??;
    let abusers_moto = tokio::task::spawn_blocking(Moto::start).await??;
    let proxy = AwsProxy::start_per_account(
        moto.port(),
        [(ABUSER_AWS_ACCOUNT.to_string(), abusers_moto.port())].into(),
    )?;
    proxy.set_faults(Faults {
        latency: Duration::from_millis(args.latency_ms),
        quotas_denied: true,
        ..Default::default()
    });
    warm_up(&moto, &[TENANT_AWS_ACCOUNT.into()]).await?;
    warm_up(&abusers_moto, &[ABUSER_AWS_ACCOUNT.into()]).await?;
    // One operator for every namespace, at its defaults.
    let op = start_operator(kube, "", &proxy, &[])?;
    account(client, tenant, "tenant", TENANT_AWS_ACCOUNT).await?;
    account(client, abuse, "abuse", ABUSER_AWS_ACCOUNT).await?;
    wait_accounts_ready(client, tenant, 1).await?;
    wait_accounts_ready(client, abuse, 1).await?;
    let api = Api::<ComputeCluster>::namespaced(client.clone(), tenant);
    // Each cycle's times, and its three instants on the proxy's clock.
    let cycle = |name: String, i: usize| {
        let (api, proxy) = (api.clone(), &proxy);
        async move {
            let started = Instant::now();
            let at_start = proxy.uptime();
            let end = started + DEADLINE;
            api.create(&PostParams::default(), &small_cluster(&name, "tenant", i)?)
                .await?;
            until_running(&api, &name, end).await?;
            let running = started.elapsed();
            let at_running = proxy.uptime();
            let deleting = Instant::now();
            api.delete(&name, &Default::default()).await?;
            until_gone(&api, &name, end).await?;
            let times = (running, deleting.elapsed());
            Ok::<_, anyhow::Error>((times, [at_start, at_running, proxy.uptime()]))
        }
    };
    const CYCLES: usize = 3;
    let mut alone = vec![];
    for i in 0..CYCLES {
        alone.push(cycle(format!("alone-{i}"), i).await?);
    }
    // The abuse: every group of every cluster asks for `per_group`.
    let abusive = Api::<ComputeCluster>::namespaced(client.clone(), abuse);
    for i in 0..abusers {
        let mut cc = serde_json::to_value(small_cluster(&format!("big-{i}"), "abuse", 100 + i)?)?;
        cc["spec"]["nodeGroups"] = json!((0..groups)
            .map(|g| json!({"name": format!("g{g}"), "instanceType": "t3.micro", "count": per_group, "subnets": "public"}))
            .collect::<Vec<_>>());
        abusive
            .create(&PostParams::default(), &serde_json::from_value(cc)?)
            .await?;
    }
    // Under way: each abusive cluster has launched.
    let end = Instant::now() + DEADLINE;
    while proxy.calls().get("RunInstances").copied().unwrap_or(0) < abusers as u64 {
        if Instant::now() > end {
            bail!("the abusive clusters never launched");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut beside = vec![];
    for i in 0..CYCLES {
        beside.push(cycle(format!("beside-{i}"), 10 + i).await?);
    }
    let trace = proxy.trace();
    let at_aws = |cycles: &[((Duration, Duration), [Duration; 3])]| {
        cycles
            .iter()
            .map(|(_, [a, b, c])| {
                (
                    at_aws(&trace, TENANT_AWS_ACCOUNT, *a, *b),
                    at_aws(&trace, TENANT_AWS_ACCOUNT, *b, *c),
                )
            })
            .collect::<Vec<_>>()
    };
    let (alone_at_aws, beside_at_aws) = (at_aws(&alone), at_aws(&beside));
    let times = |cycles: Vec<((Duration, Duration), [Duration; 3])>| {
        cycles.into_iter().map(|(t, _)| t).collect::<Vec<_>>()
    };
    let (alone, beside) = (times(alone), times(beside));
    let abusive_launched = proxy.calls().get("RunInstances").copied().unwrap_or(0);
    let turned_away = metric(
        &op,
        "byoc_reconciles_turned_away_total{controller=\"computecluster\"}",
    )?;
    // The abuse ends with the run: its clusters are let go unfinished.
    drop(op);
    for i in 0..abusers {
        let name = format!("big-{i}");
        abusive
            .patch(
                &name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({"metadata": {"finalizers": null}})),
            )
            .await?;
        abusive.delete(&name, &Default::default()).await?;
    }
    Ok(FairnessRun {
        alone,
        beside,
        alone_at_aws,
        beside_at_aws,
        abusive_launched,
        turned_away,
    })
}

/// How much of `from..to` (the proxy's clock) some call of AWS account
/// `account` was in flight: the union of its calls' spans within it.
fn at_aws(trace: &[Call], account: &str, from: Duration, to: Duration) -> Duration {
    let mut spans: Vec<(Duration, Duration)> = trace
        .iter()
        .filter(|c| c.session.contains(&format!(":{account}:")))
        .map(|c| (c.start.max(from), c.end.min(to)))
        .filter(|(a, b)| a < b)
        .collect();
    spans.sort();
    let mut total = Duration::ZERO;
    let mut open: Option<(Duration, Duration)> = None;
    for (a, b) in spans {
        open = match open {
            Some((s, e)) if a <= e => Some((s, e.max(b))),
            Some((s, e)) => {
                total += e - s;
                Some((a, b))
            }
            None => Some((a, b)),
        };
    }
    total + open.map_or(Duration::ZERO, |(s, e)| e - s)
}

/// The interruption figure: AWS's spot warning for one instance of a spot
/// group, the time until its replacement runs (as AWS says), heard from the
/// interruption queue and, with the queue off, only by the resync.
#[derive(Debug, Clone)]
pub(crate) struct InterruptionRun {
    pub(crate) queue: Duration,
    pub(crate) resync: Duration,
    /// AWS's reclaim after its warning, at the profile's scale.
    pub(crate) reclaim: Duration,
}

/// A spot group of 2 (t3.small, else t3.medium; surge 1) under the realism
/// profile at `scale`, its operator at its defaults (a 5 minute resync):
/// the warning is emitted as EC2 emits it and the instance reclaimed 120 s
/// (scaled) later. Once with the interruption queue, once without.
pub(crate) async fn interruption_run(
    kube: &Kube,
    client: &Client,
    scale: f64,
    run: usize,
) -> Result<InterruptionRun> {
    let moto = tokio::task::spawn_blocking(Moto::start).await??;
    let proxy = AwsProxy::start(moto.port())?;
    warm_up(&moto, &[REFERENCE_AWS_ACCOUNT.to_string()]).await?;
    let reclaim = testground::events::SPOT_WARNING.mul_f64(scale);
    let heard = |path: &str, extra: &'static [&'static str]| {
        let ns = format!("interruption-{path}-{run}");
        let (moto, proxy) = (&moto, &proxy);
        async move { replaced_after_warning(kube, client, moto, proxy, &ns, extra, scale).await }
    };
    let queue = heard("queue", &[]).await?;
    let resync = heard("resync", &["--no-interruption-queue"]).await?;
    Ok(InterruptionRun {
        queue,
        resync,
        reclaim,
    })
}

fn spot_cluster(name: &str, account: &str) -> Result<ComputeCluster> {
    let mut cc = serde_json::to_value(small_cluster(name, account, 61)?)?;
    cc["spec"]["nodeGroups"] = json!([{
        "name": "spot", "instanceTypes": ["t3.small", "t3.medium"], "count": 2,
        "subnets": "public", "capacityType": "spot"
    }]);
    Ok(serde_json::from_value(cc)?)
}

/// Waits until the operator's queue and its rules, each with its target,
/// are in moto.
async fn queue_made(moto: &Moto) -> Result<()> {
    let config = moto_config(moto).await;
    let end = Instant::now() + DEADLINE;
    let rules = byoc_operator::interruption::message::MATCHED.len();
    while !testground::events::delivering(&config, "byoc-", "byoc-", rules).await? {
        if Instant::now() > end {
            bail!("the interruption queue and its rules not made within {DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// One path of [`interruption_run`] in namespace `ns`: the time from the
/// warning to a replacement `running`.
async fn replaced_after_warning(
    kube: &Kube,
    client: &Client,
    moto: &Moto,
    proxy: &AwsProxy,
    ns: &str,
    extra: &[&str],
    scale: f64,
) -> Result<Duration> {
    proxy.set_faults(Faults::default());
    namespace(client, ns).await?;
    let op = start_operator(kube, ns, proxy, extra)?;
    account(client, ns, "acct", REFERENCE_AWS_ACCOUNT).await?;
    let api = Api::<ComputeCluster>::namespaced(client.clone(), ns);
    api.create(&PostParams::default(), &spot_cluster("spot", "acct")?)
        .await?;
    until_running(&api, "spot", Instant::now() + DEADLINE).await?;
    let uid = api.get("spot").await?.metadata.uid.context("no UID")?;
    let through_proxy = config_at(proxy.endpoint()).await;
    let before = testground::running_instances_of(&through_proxy, &uid).await?;
    let victim = before.first().context("no instance running")?.clone();
    if extra.is_empty() {
        queue_made(moto).await?;
    }
    proxy.set_faults(Faults {
        realism: Some(testground::Realism::aws(scale)),
        ..Default::default()
    });
    let reclaim = testground::events::SPOT_WARNING.mul_f64(scale);
    let warned = Instant::now();
    moto.interrupt_spot(REFERENCE_AWS_ACCOUNT, "us-east-1", &victim, reclaim)?;
    let end = warned + DEADLINE;
    // Looked at twice a second: a share of the account's DescribeInstances
    // budget the operator does not miss.
    while !testground::running_instances_of(&through_proxy, &uid)
        .await?
        .iter()
        .any(|i| !before.contains(i))
    {
        if Instant::now() > end {
            bail!("no replacement running {DEADLINE:?} after the warning ({ns})");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let took = warned.elapsed();
    eprintln!("bench: {ns}: a replacement running {took:?} after the warning");
    // AWS's reclaim of the first path comes during the second (moto serves
    // both); the second's is past by the time the resync has heard it.
    proxy.set_faults(Faults::default());
    api.delete("spot", &DeleteParams::default()).await?;
    until_gone(&api, "spot", Instant::now() + DEADLINE).await?;
    drop(op);
    Ok(took)
}
