//! The benchmark: a command, not a test (`hack/bench.sh`, or
//! `cargo bench --bench operator -- --help`). Against the real ground (a
//! kube-apiserver + etcd and moto behind the fault proxy) with the operator's
//! release binary as a process, it measures:
//!
//! - P1: time to `running` of the reference topology (3 zones, a NAT gateway
//!   per zone, 2 node groups x 3) with 50 ms per AWS call, against the
//!   critical path (the longest chain of dependent calls x 50 ms);
//! - P2: AWS calls per operation to converge and per resync of a converged
//!   cluster;
//! - P3: many small clusters across many accounts: time until all run, the
//!   operator's CPU seconds and peak RSS (and moto's, to show who is busy);
//! - deletion: time and calls to delete the reference topology.
//!
//! Writes `bench/results.json` and `bench/results.md`. Medians of several
//! runs with min and max: the machine is noisy, ratios matter more.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use byoc_operator::api::{CloudAccount, ClusterPhase, ComputeCluster};
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::json;
use testground::{AwsProxy, Faults, Kube, Moto, Process};

#[derive(Parser)]
#[command(about = "byoc-operator benchmark: time to running, AWS calls, scale, deletion")]
struct Args {
    /// Runs of P1, P2 and deletion (medians are reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Runs of P3.
    #[arg(long, default_value_t = 1)]
    scale_runs: usize,
    /// ComputeClusters in P3.
    #[arg(long, default_value_t = 500)]
    clusters: usize,
    /// CloudAccounts in P3.
    #[arg(long, default_value_t = 20)]
    accounts: usize,
    /// Latency added to every AWS call in P1 and deletion.
    #[arg(long, default_value_t = 50)]
    latency_ms: u64,
    /// Where results.json and results.md go.
    #[arg(long, default_value = "bench")]
    out: PathBuf,
    /// `cargo bench` passes this; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

const OPERATOR: &str = env!("CARGO_BIN_EXE_byoc-operator");
const DEADLINE: Duration = Duration::from_secs(1800);
const SCALE_DEADLINE: Duration = Duration::from_secs(1200);

fn main() -> Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn client_for(path: &Path) -> Result<Client> {
    let kubeconfig = Kubeconfig::read_from(path)?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

async fn run(args: Args) -> Result<()> {
    eprintln!("bench: starting the ground");
    let kube = tokio::task::spawn_blocking(Kube::start).await??;
    let client = client_for(&kube.kubeconfig).await?;
    let crds = testground::repo_root().join("crds");
    for step in [
        vec!["apply", "--server-side", "-f"],
        vec!["wait", "--for=condition=established", "--timeout=60s", "-f"],
    ] {
        let out = kube.kubectl().args(&step).arg(&crds).output()?;
        if !out.status.success() {
            bail!("kubectl {step:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
    }

    let critical = critical_path();
    let mut p1 = vec![];
    for run in 0..args.runs {
        eprintln!("bench: P1/P2/deletion run {}/{}", run + 1, args.runs);
        p1.push(reference_run(&kube, &client, run, &args).await?);
    }
    let (mut p3, mut p3_errors) = (vec![], vec![]);
    for run in 0..args.scale_runs {
        eprintln!(
            "bench: P3 run {}/{}: {} clusters, {} accounts",
            run + 1,
            args.scale_runs,
            args.clusters,
            args.accounts
        );
        // A scale run that does not finish (moto is single-threaded) is
        // reported, and the other figures are still written.
        match scale_run(&kube, &client, run, &args).await {
            Ok(r) => p3.push(r),
            Err(e) => {
                eprintln!("bench: P3 run {} did not finish: {e:#}", run + 1);
                p3_errors.push(format!("{e:#}"));
            }
        }
    }
    let mut results = summarize(&args, &critical, &p1, &p3);
    results["p3_scale"]["unfinished_runs"] = json!(p3_errors);
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(
        args.out.join("results.json"),
        serde_json::to_string_pretty(&results)? + "\n",
    )?;
    std::fs::write(args.out.join("results.md"), markdown(&results))?;
    eprintln!(
        "bench: wrote {} and {}",
        args.out.join("results.json").display(),
        args.out.join("results.md").display()
    );
    Ok(())
}

/// The operator as a process, watching `namespace`, reaching AWS through `proxy`.
struct Operator {
    process: Process,
    metrics_port: u16,
}

impl Operator {
    fn start(kube: &Kube, namespace: &str, proxy: &AwsProxy, extra: &[&str]) -> Result<Operator> {
        let metrics_port = testground::free_port()?;
        let log = kube.dir().join(format!("bench-operator-{namespace}.log"));
        let mut cmd = Command::new(OPERATOR);
        cmd.args(["run", "--namespace", namespace])
            .arg(format!("--metrics-addr=127.0.0.1:{metrics_port}"))
            .args(extra)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("KUBECONFIG", &kube.kubeconfig)
            .env("AWS_ENDPOINT_URL", proxy.endpoint())
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("RUST_LOG", "info")
            .env("BYOC_LOG_FORMAT", "json");
        let mut process = Process::spawn("byoc-operator", cmd, &log)?;
        process.wait_ready(|| {
            testground::http_get(metrics_port, "/healthz").is_ok_and(|(s, _)| s == 200)
        })?;
        Ok(Operator {
            process,
            metrics_port,
        })
    }

    fn metric(&self, series: &str) -> Result<f64> {
        let (_, text) = testground::http_get(self.metrics_port, "/metrics")?;
        Ok(testground::metric_sample(&text, series))
    }
}

/// CPU seconds (user + system, all threads) and peak RSS in MiB of `pid`.
fn usage(pid: u32) -> Result<(f64, f64)> {
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

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

async fn namespace(client: &Client, name: &str) -> Result<()> {
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
const REFERENCE_AWS_ACCOUNT: &str = "123456789012";

/// The AWS account of P3's `i`-th CloudAccount: each its own.
fn scale_aws_account(i: usize) -> String {
    format!("{:012}", 200_000_000_000 + i)
}

/// A Secret and a CloudAccount `name` assuming a role in `aws_account`.
async fn account(client: &Client, ns: &str, name: &str, aws_account: &str) -> Result<()> {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": name},
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

async fn wait_accounts_ready(client: &Client, ns: &str, n: usize) -> Result<()> {
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

fn reference_cluster(name: &str, account: &str) -> Result<ComputeCluster> {
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

fn small_cluster(name: &str, account: &str, i: usize) -> Result<ComputeCluster> {
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

fn is_running(cc: &ComputeCluster) -> bool {
    let s = cc.status.as_ref();
    s.and_then(|s| s.phase) == Some(ClusterPhase::Running)
        && s.and_then(|s| s.observed_generation) == cc.metadata.generation
}

/// One run of the reference topology: P1, P2 and deletion.
#[derive(Debug, Clone)]
struct ReferenceRun {
    to_running: Duration,
    converge_calls: BTreeMap<String, u64>,
    /// Longest chain of calls that did not overlap in time.
    sequential_depth: usize,
    sequential_chain: Vec<String>,
    /// Time from the create to the first AWS call.
    first_call_after: Duration,
    /// Every AWS call until running: operation, start and end in seconds
    /// since the create.
    timeline: Vec<(String, f64, f64)>,
    /// The critical path priced at this run's own call durations (latency
    /// plus moto's service time) instead of the latency alone.
    critical_at_call_times: f64,
    resync_calls: BTreeMap<String, u64>,
    to_deleted: Duration,
    delete_calls: BTreeMap<String, u64>,
}

async fn reference_run(
    kube: &Kube,
    client: &Client,
    run: usize,
    args: &Args,
) -> Result<ReferenceRun> {
    let ns = format!("reference-{run}");
    namespace(client, &ns).await?;
    let moto = tokio::task::spawn_blocking(Moto::start).await??;
    let proxy = AwsProxy::start(moto.port())?;
    let op = Operator::start(kube, &ns, &proxy, &["--resync-interval", "3s"])?;
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
    let end = started + DEADLINE;
    loop {
        if is_running(&api.get("reference").await?) {
            break;
        }
        if Instant::now() > end {
            bail!("the reference cluster did not reach running");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let to_running = started.elapsed();
    let converge_calls = proxy.calls();
    let trace = proxy.trace();
    let (sequential_depth, sequential_chain) = longest_sequential_chain(&trace);
    let since_start = trace.first().map(|c| c.start).unwrap_or_default();
    // The proxy's clock started with the proxy: align with `started`.
    let proxy_age_at_create = proxy_age(&proxy) - started.elapsed();
    let first_call_after = since_start.saturating_sub(proxy_age_at_create);
    let since_create = |d: Duration| {
        let s = d.as_secs_f64() - proxy_age_at_create.as_secs_f64();
        (s * 1000.0).round() / 1000.0
    };
    let timeline = trace
        .iter()
        .map(|c| {
            (
                c.operation.clone(),
                since_create(c.start),
                since_create(c.end),
            )
        })
        .collect();
    let critical_at_call_times = price_at_call_times(&critical_path().chain, &trace);

    // P2: one resync of the converged cluster: the calls between two
    // finished reconciles (the first may be the pass that wrote `running`,
    // counted when it returns, just after the status write).
    let reconciles = "byoc_reconciles_total{controller=\"computecluster\"}";
    let next_reconcile = || async {
        let before = op.metric(reconciles)?;
        let end = Instant::now() + Duration::from_secs(60);
        while op.metric(reconciles)? < before + 1.0 {
            if Instant::now() > end {
                bail!("no resync within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    };
    next_reconcile().await?;
    proxy.reset_calls();
    next_reconcile().await?;
    let resync_calls = proxy.calls();

    // Deletion.
    proxy.reset_calls();
    let started = Instant::now();
    api.delete("reference", &DeleteParams::default()).await?;
    let end = started + DEADLINE;
    while api.get_opt("reference").await?.is_some() {
        if Instant::now() > end {
            bail!("the reference cluster was not deleted");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let to_deleted = started.elapsed();
    let delete_calls = proxy.calls();
    drop(op);
    Ok(ReferenceRun {
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
    })
}

/// moto builds an account's EC2 and IAM state on first use (~3 s of CPU
/// each on this machine; AWS has no such start): touch both in each of
/// `aws_accounts`, straight at moto, before anything is timed.
async fn warm_up(moto: &Moto, aws_accounts: &[String]) -> Result<()> {
    let base = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(moto.endpoint())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_credential_types::Credentials::new(
            "testing", "testing", None, None, "bench",
        ))
        .load()
        .await;
    let sts = aws_sdk_sts::Client::new(&base);
    for aws_account in aws_accounts {
        let assumed = sts
            .assume_role()
            .role_arn(format!("arn:aws:iam::{aws_account}:role/warm-up"))
            .role_session_name("bench-warm-up")
            .send()
            .await
            .context("assuming a role to warm moto up")?;
        let creds = assumed.credentials().context("no credentials")?;
        let config = base
            .to_builder()
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(
                    aws_credential_types::Credentials::new(
                        creds.access_key_id(),
                        creds.secret_access_key(),
                        Some(creds.session_token().to_string()),
                        None,
                        "bench",
                    ),
                ),
            )
            .build();
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

/// How long the proxy has been up (its trace's clock).
fn proxy_age(proxy: &AwsProxy) -> Duration {
    proxy.uptime()
}

/// Seconds the critical path takes when each step costs what that operation
/// took in `trace` (median), the observe round what its slowest call took.
fn price_at_call_times(chain: &[&str], trace: &[testground::proxy::Call]) -> f64 {
    let secs = |c: &testground::proxy::Call| (c.end - c.start).as_secs_f64();
    let first_write = trace
        .iter()
        .filter(|c| !c.operation.starts_with("Describe") && !c.operation.starts_with("Get"))
        .map(|c| c.start)
        .min()
        .unwrap_or_default();
    let total: f64 = chain
        .iter()
        .map(|step| {
            if step.starts_with("Describe* (observe)") {
                return trace
                    .iter()
                    .filter(|c| c.start < first_write)
                    .map(secs)
                    .fold(0.0, f64::max);
            }
            let operation = step.split(' ').next().unwrap_or(step);
            let mut took: Vec<f64> = trace
                .iter()
                .filter(|c| c.operation == operation)
                .map(secs)
                .collect();
            took.sort_by(f64::total_cmp);
            took.get(took.len() / 2).copied().unwrap_or(0.0)
        })
        .sum();
    (total * 1000.0).round() / 1000.0
}

/// The longest chain of calls each starting after the previous ended: how
/// many AWS round trips the operator made one after another.
fn longest_sequential_chain(trace: &[testground::proxy::Call]) -> (usize, Vec<String>) {
    let mut calls: Vec<&testground::proxy::Call> = trace.iter().collect();
    calls.sort_by_key(|c| c.end);
    let mut best: Vec<(usize, Option<usize>)> = vec![(1, None); calls.len()];
    for i in 0..calls.len() {
        for j in 0..i {
            if calls[j].end <= calls[i].start && best[j].0 + 1 > best[i].0 {
                best[i] = (best[j].0 + 1, Some(j));
            }
        }
    }
    let Some((mut at, (depth, _))) = best
        .iter()
        .enumerate()
        .max_by_key(|(_, (d, _))| *d)
        .map(|(i, b)| (i, *b))
    else {
        return (0, vec![]);
    };
    let mut chain = vec![calls[at].operation.clone()];
    while let Some(prev) = best[at].1 {
        chain.push(calls[prev].operation.clone());
        at = prev;
    }
    chain.reverse();
    (depth, chain)
}

/// The critical path of the reference topology: the longest chain of calls
/// that depend on each other, counting calls that could run in parallel once.
/// (Dependencies as AWS imposes them: a subnet needs its VPC, a NAT gateway
/// its public subnet and address, the private default route an available NAT
/// gateway, an instance its subnet, security group and instance profile.)
struct CriticalPath {
    calls: usize,
    chain: Vec<&'static str>,
}

fn critical_path() -> CriticalPath {
    // (step, what it waits for). One describe round first finds what exists.
    let steps: &[(&str, &[&str])] = &[
        ("Describe* (observe)", &[]),
        ("CreateVpc", &["Describe* (observe)"]),
        ("AllocateAddress", &["Describe* (observe)"]),
        ("CreateRole", &["Describe* (observe)"]),
        ("CreateInstanceProfile", &["Describe* (observe)"]),
        ("DescribeImages", &["Describe* (observe)"]),
        ("CreateInternetGateway", &["Describe* (observe)"]),
        (
            "AddRoleToInstanceProfile",
            &["CreateRole", "CreateInstanceProfile"],
        ),
        ("CreateSubnet", &["CreateVpc"]),
        ("ModifyVpcAttribute", &["CreateVpc"]),
        ("ModifySubnetAttribute", &["CreateSubnet"]),
        ("CreateSecurityGroup", &["CreateVpc"]),
        ("CreateRouteTable", &["CreateVpc"]),
        (
            "AttachInternetGateway",
            &["CreateVpc", "CreateInternetGateway"],
        ),
        ("AuthorizeSecurityGroupIngress", &["CreateSecurityGroup"]),
        ("AssociateRouteTable", &["CreateRouteTable", "CreateSubnet"]),
        (
            "CreateRoute (public)",
            &["CreateRouteTable", "AttachInternetGateway"],
        ),
        ("CreateNatGateway", &["CreateSubnet", "AllocateAddress"]),
        ("DescribeNatGateways (available)", &["CreateNatGateway"]),
        (
            "CreateRoute (private, via NAT)",
            &["CreateRouteTable", "DescribeNatGateways (available)"],
        ),
        (
            "RunInstances",
            &[
                "CreateSubnet",
                "ModifyVpcAttribute",
                "CreateSecurityGroup",
                "AddRoleToInstanceProfile",
                "DescribeImages",
            ],
        ),
        ("DescribeInstances (running)", &["RunInstances"]),
    ];
    let mut depth: BTreeMap<&str, (usize, Option<&str>)> = BTreeMap::new();
    for (step, deps) in steps {
        let best = deps
            .iter()
            .filter_map(|d| depth.get(d).map(|(n, _)| (*n, *d)))
            .max();
        depth.insert(
            step,
            (best.map(|b| b.0).unwrap_or(0) + 1, best.map(|b| b.1)),
        );
    }
    let (mut at, (calls, _)) = depth
        .iter()
        .max_by_key(|(_, (n, _))| *n)
        .map(|(k, v)| (*k, *v))
        .unwrap_or(("", (0, None)));
    let mut chain = vec![at];
    while let Some(prev) = depth.get(at).and_then(|(_, p)| *p) {
        chain.push(prev);
        at = prev;
    }
    chain.reverse();
    CriticalPath { calls, chain }
}

#[derive(Debug, Clone)]
struct ScaleRun {
    to_all_running: Duration,
    cpu_seconds: f64,
    peak_rss_mib: f64,
    moto_cpu_seconds: f64,
    apiserver_cpu_seconds: f64,
    aws_calls: u64,
}

async fn scale_run(kube: &Kube, client: &Client, run: usize, args: &Args) -> Result<ScaleRun> {
    let ns = format!("scale-{run}");
    namespace(client, &ns).await?;
    let moto = tokio::task::spawn_blocking(Moto::start).await??;
    let proxy = AwsProxy::start(moto.port())?;
    let aws_accounts: Vec<String> = (0..args.accounts).map(scale_aws_account).collect();
    warm_up(&moto, &aws_accounts).await?;
    let op = Operator::start(kube, &ns, &proxy, &[])?;
    let (moto_cpu0, _) = usage(moto.pid())?;
    let (api_cpu0, _) = usage(kube.pids()[0])?;
    let started = Instant::now();
    futures::stream::iter(0..args.accounts)
        .map(|i| {
            let client = client.clone();
            let ns = ns.clone();
            async move { account(&client, &ns, &format!("acct-{i}"), &scale_aws_account(i)).await }
        })
        .buffer_unordered(8)
        .try_collect::<Vec<_>>()
        .await?;
    let api = Api::<ComputeCluster>::namespaced(client.clone(), &ns);
    futures::stream::iter(0..args.clusters)
        .map(|i| {
            let api = api.clone();
            let accounts = args.accounts;
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
        if running == args.clusters {
            break;
        }
        if Instant::now() > end {
            bail!(
                "{running}/{} clusters running after {SCALE_DEADLINE:?}",
                args.clusters
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let to_all_running = started.elapsed();
    let (cpu_seconds, peak_rss_mib) = usage(op.process.pid())?;
    let (moto_cpu, _) = usage(moto.pid())?;
    let (api_cpu, _) = usage(kube.pids()[0])?;
    Ok(ScaleRun {
        to_all_running,
        cpu_seconds,
        peak_rss_mib,
        moto_cpu_seconds: moto_cpu - moto_cpu0,
        apiserver_cpu_seconds: api_cpu - api_cpu0,
        aws_calls: proxy.calls().values().sum(),
    })
}

/// `{median, min, max}` of `values`.
fn spread(mut values: Vec<f64>) -> serde_json::Value {
    values.sort_by(|a, b| a.total_cmp(b));
    let median = values.get(values.len() / 2).copied().unwrap_or(0.0);
    let round = |x: f64| (x * 1000.0).round() / 1000.0;
    json!({
        "median": round(median),
        "min": round(values.first().copied().unwrap_or(0.0)),
        "max": round(values.last().copied().unwrap_or(0.0)),
        "runs": values.len(),
    })
}

fn is_write(op: &str) -> bool {
    !["Describe", "Get", "List"]
        .iter()
        .any(|p| op.starts_with(p))
}

fn writes(calls: &BTreeMap<String, u64>) -> u64 {
    calls
        .iter()
        .filter(|(o, _)| is_write(o))
        .map(|(_, n)| n)
        .sum()
}

fn reads(calls: &BTreeMap<String, u64>) -> u64 {
    calls
        .iter()
        .filter(|(o, _)| !is_write(o))
        .map(|(_, n)| n)
        .sum()
}

/// The fewest writes that build the reference topology (3 zones, NAT per
/// zone, 2 node groups spread over the zones): one call per resource,
/// association, attribute and rule.
fn minimal_writes() -> BTreeMap<&'static str, u64> {
    BTreeMap::from([
        ("CreateVpc", 1),
        // DNS support and DNS hostnames: one attribute per call.
        ("ModifyVpcAttribute", 2),
        ("CreateSubnet", 6),
        ("ModifySubnetAttribute (public IPs)", 3),
        ("CreateInternetGateway", 1),
        ("AttachInternetGateway", 1),
        ("AllocateAddress", 3),
        ("CreateNatGateway", 3),
        ("CreateRouteTable", 4),
        ("CreateRoute", 4),
        ("AssociateRouteTable", 6),
        ("CreateSecurityGroup", 1),
        ("AuthorizeSecurityGroupIngress", 1),
        ("CreateRole", 1),
        ("CreateInstanceProfile", 1),
        ("AddRoleToInstanceProfile", 1),
        // Each group spread over the three private subnets: one call per subnet.
        ("RunInstances", 6),
    ])
}

fn summarize(
    args: &Args,
    critical: &CriticalPath,
    p1: &[ReferenceRun],
    p3: &[ScaleRun],
) -> serde_json::Value {
    let latency = args.latency_ms as f64 / 1000.0;
    let critical_seconds = (critical.calls as f64 * latency * 1000.0).round() / 1000.0;
    let secs = |f: &dyn Fn(&ReferenceRun) -> Duration| {
        spread(p1.iter().map(|r| f(r).as_secs_f64()).collect())
    };
    let nums = |f: &dyn Fn(&ReferenceRun) -> f64| spread(p1.iter().map(f).collect());
    let typical = p1.get(p1.len() / 2);
    let minimal: u64 = minimal_writes().values().sum();
    // One lookup per kind: tag-filtered describes of VPCs, subnets, internet
    // gateways, addresses, NAT gateways, route tables, security groups and
    // instances; the IAM role and the instance profile by name.
    let kinds = 10.0;
    json!({
        "machine": {
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "operator_build": "release (cargo bench profile)",
            "ground": "kube-apiserver v1.33.13 + etcd v3.5.21, moto 5.2.5 behind the fault proxy, all on loopback",
        },
        "p1_time_to_running": {
            "topology": "3 zones, NAT gateway per zone, 2 node groups x 3 instances",
            "latency_ms_per_call": args.latency_ms,
            "seconds": secs(&|r| r.to_running),
            "critical_path_calls": critical.calls,
            "critical_path_seconds": critical_seconds,
            "critical_path": critical.chain,
            "ratio": nums(&|r| r.to_running.as_secs_f64() / critical_seconds),
            "critical_path_seconds_at_measured_call_times": nums(&|r| r.critical_at_call_times),
            "ratio_at_measured_call_times": nums(&|r| r.to_running.as_secs_f64() / r.critical_at_call_times.max(0.001)),
            "goal_ratio": 1.2,
            "measured_sequential_calls": nums(&|r| r.sequential_depth as f64),
            "measured_sequential_chain": typical.map(|r| r.sequential_chain.clone()).unwrap_or_default(),
            "seconds_before_first_aws_call": secs(&|r| r.first_call_after),
            "timeline_one_run": typical.map(|r| r.timeline.iter().map(|(op, start, end)| json!([op, start, end])).collect::<Vec<_>>()).unwrap_or_default(),
        },
        "p2_aws_calls": {
            "converge_total": nums(&|r| r.converge_calls.values().sum::<u64>() as f64),
            "converge_writes": nums(&|r| writes(&r.converge_calls) as f64),
            "converge_reads": nums(&|r| reads(&r.converge_calls) as f64),
            "minimal_writes": minimal,
            "minimal_writes_by_operation": minimal_writes(),
            "goal_reads": "one tag-filtered describe per kind",
            "kinds": kinds,
            "converge_by_operation": typical.map(|r| r.converge_calls.clone()).unwrap_or_default(),
            "resync_writes": nums(&|r| writes(&r.resync_calls) as f64),
            "resync_reads": nums(&|r| reads(&r.resync_calls) as f64),
            "resync_by_operation": typical.map(|r| r.resync_calls.clone()).unwrap_or_default(),
        },
        "p3_scale": {
            "clusters": args.clusters,
            "accounts": args.accounts,
            "topology": "1 zone, no NAT gateway, 1 node group of 1",
            "seconds_until_all_running": spread(p3.iter().map(|r| r.to_all_running.as_secs_f64()).collect()),
            "operator_cpu_seconds": spread(p3.iter().map(|r| r.cpu_seconds).collect()),
            "operator_peak_rss_mib": spread(p3.iter().map(|r| r.peak_rss_mib).collect()),
            "moto_cpu_seconds": spread(p3.iter().map(|r| r.moto_cpu_seconds).collect()),
            "apiserver_cpu_seconds": spread(p3.iter().map(|r| r.apiserver_cpu_seconds).collect()),
            "aws_calls": spread(p3.iter().map(|r| r.aws_calls as f64).collect()),
            "goal_cpu_seconds": 60,
            "goal_peak_rss_mib": 128,
        },
        "deletion": {
            "seconds": secs(&|r| r.to_deleted),
            "calls": nums(&|r| r.delete_calls.values().sum::<u64>() as f64),
            "by_operation": typical.map(|r| r.delete_calls.clone()).unwrap_or_default(),
        },
    })
}

fn markdown(r: &serde_json::Value) -> String {
    let m = |v: &serde_json::Value| format!("{} ({}–{})", v["median"], v["min"], v["max"]);
    let p1 = &r["p1_time_to_running"];
    let p2 = &r["p2_aws_calls"];
    let p3 = &r["p3_scale"];
    let d = &r["deletion"];
    let met = |ok: bool| if ok { "met" } else { "**missed**" };
    let ratio = p1["ratio"]["median"].as_f64().unwrap_or(f64::MAX);
    let cpu = p3["operator_cpu_seconds"]["median"]
        .as_f64()
        .unwrap_or(f64::MAX);
    let rss = p3["operator_peak_rss_mib"]["median"]
        .as_f64()
        .unwrap_or(f64::MAX);
    let resync_writes = p2["resync_writes"]["max"].as_f64().unwrap_or(f64::MAX);
    let resync_reads = p2["resync_reads"]["median"].as_f64().unwrap_or(f64::MAX);
    let kinds = p2["kinds"].as_f64().unwrap_or(0.0);
    let writes = p2["converge_writes"]["median"].as_f64().unwrap_or(f64::MAX);
    let minimal = p2["minimal_writes"].as_f64().unwrap_or(0.0);
    let reads = p2["converge_reads"]["median"].as_f64().unwrap_or(f64::MAX);
    format!(
        "# Benchmark results\n\n\
         Written by `hack/bench.sh` ({}, release build, {} cores). Median (min–max) of {} runs; P3 of {}.\n\n\
         | figure | measured | goal | |\n|---|---|---|---|\n\
         | P1 time to `running`, reference topology, {} ms per AWS call | {} s | | |\n\
         | P1 critical path ({} dependent calls × {} ms) | {} s | | |\n\
         | P1 ratio (time / critical path) | {} | ≤ 1.2 | {} |\n\
         | P1 critical path at the calls' measured durations (latency + moto's service time) | {} s | | |\n\
         | P1 ratio to that | {} | ≤ 1.2 | {} |\n\
         | P1 sequential AWS round trips the operator made | {} | {} | |\n\
         | P2 writes to converge | {} | {} (one per resource) | {} |\n\
         | P2 reads to converge | {} | {} kinds, one lookup each | {} |\n\
         | P2 writes per resync of a converged cluster | {} | 0 | {} |\n\
         | P2 reads per resync | {} | ≤ {} | {} |\n\
         | P3 {} clusters / {} accounts: until all `running` | {} s | | |\n\
         | P3 operator CPU | {} s | ≤ 60 s | {} |\n\
         | P3 operator peak RSS | {} MiB | ≤ 128 MiB | {} |\n\
         | P3 moto CPU / apiserver CPU | {} s / {} s | | |\n\
         | Deletion of the reference topology | {} s, {} calls | | |\n\n\
         Critical path: {}.\n\n\
         The operator's longest chain of sequential calls (one run): {}.\n\n\
         `results.json` has the calls per operation (converge, resync, deletion).\n{}",
        r["machine"]["ground"].as_str().unwrap_or_default(),
        r["machine"]["cores"],
        p1["seconds"]["runs"],
        p3["seconds_until_all_running"]["runs"],
        p1["latency_ms_per_call"],
        m(&p1["seconds"]),
        p1["critical_path_calls"],
        p1["latency_ms_per_call"],
        p1["critical_path_seconds"],
        m(&p1["ratio"]),
        met(ratio <= 1.2),
        m(&p1["critical_path_seconds_at_measured_call_times"]),
        m(&p1["ratio_at_measured_call_times"]),
        met(p1["ratio_at_measured_call_times"]["median"]
            .as_f64()
            .is_some_and(|r| r <= 1.2)),
        m(&p1["measured_sequential_calls"]),
        p1["critical_path_calls"],
        m(&p2["converge_writes"]),
        minimal,
        met(writes <= minimal),
        m(&p2["converge_reads"]),
        kinds,
        met(reads <= kinds),
        m(&p2["resync_writes"]),
        met(resync_writes == 0.0),
        m(&p2["resync_reads"]),
        kinds,
        met(resync_reads <= kinds),
        p3["clusters"],
        p3["accounts"],
        m(&p3["seconds_until_all_running"]),
        m(&p3["operator_cpu_seconds"]),
        met(cpu <= 60.0),
        m(&p3["operator_peak_rss_mib"]),
        met(rss <= 128.0),
        m(&p3["moto_cpu_seconds"]),
        m(&p3["apiserver_cpu_seconds"]),
        m(&d["seconds"]),
        m(&d["calls"]),
        p1["critical_path"]
            .as_array()
            .map(|a| a.iter().filter_map(|s| s.as_str()).collect::<Vec<_>>().join(" → "))
            .unwrap_or_default(),
        p1["measured_sequential_chain"]
            .as_array()
            .map(|a| a.iter().filter_map(|s| s.as_str()).collect::<Vec<_>>().join(" → "))
            .unwrap_or_default(),
        p3["unfinished_runs"]
            .as_array()
            .filter(|a| !a.is_empty())
            .map(|a| format!(
                "\nP3 runs that did not finish: {}\n",
                a.iter().filter_map(|s| s.as_str()).collect::<Vec<_>>().join("; ")
            ))
            .unwrap_or_default(),
    )
}
