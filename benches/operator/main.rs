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
//! - deletion: time and calls to delete the reference topology;
//! - interruptions: from a spot warning to a replacement `running`, heard
//!   from the interruption queue and by the resync alone.
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
use testground::{AwsProxy, Faults, Kube, Moto, Operator};

mod ack;
mod critical_path;
mod report;
mod scenarios;

use critical_path::critical_path;
use report::{markdown, summarize};
use scenarios::{
    fairness_run, interruption_run, reference_run, resync_scale_run, scale_run, secret_memory_run,
};

#[derive(Parser)]
#[command(about = "byoc-operator benchmark: time to running, AWS calls, scale, deletion")]
struct Args {
    /// Only write results.md again from the results.json in `--out` (no run).
    #[arg(long)]
    report_only: bool,
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
    /// ComputeClusters in P5, all in one AWS account (0: no P5; 200 take
    /// about ten minutes, as AWS's mutating bucket allows).
    #[arg(long, default_value_t = 200)]
    mass_clusters: usize,
    /// Settled clusters in one account whose resync reads are counted, in
    /// turn (empty: not measured).
    #[arg(long, value_delimiter = ',', default_values_t = [1, 100, 500])]
    resync_clusters: Vec<usize>,
    /// Latency added to every AWS call in P1 and deletion.
    #[arg(long, default_value_t = 50)]
    latency_ms: u64,
    /// Time scale of the AWS realism profile in its scenario (1.0: AWS's
    /// own durations; NAT gateways alone are then pending 1–2 minutes).
    #[arg(long, default_value_t = 1.0)]
    realism_scale: f64,
    /// Runs of ACK's ec2-controller on the reference topology, without and
    /// with the realism profile (`hack/build-ground.sh ack` builds it; 0:
    /// not measured).
    #[arg(long, default_value_t = 3)]
    ack_runs: usize,
    #[arg(long, default_value_t = 1)]
    ack_realism_runs: usize,
    /// Secrets in the namespace whose effect on the operator's memory is
    /// measured (0: not measured), and their size in KiB.
    #[arg(long, default_value_t = 5000)]
    secrets: usize,
    #[arg(long, default_value_t = 64)]
    secret_kib: usize,
    /// The fairness figure: clusters in the abusing namespace (0: not
    /// measured), node groups each and instances per group.
    #[arg(long, default_value_t = 8)]
    fairness_abusers: usize,
    #[arg(long, default_value_t = 20)]
    fairness_groups: usize,
    #[arg(long, default_value_t = 500)]
    fairness_per_group: i32,
    /// Runs of the interruption figure (0: not measured): each a spot
    /// warning heard from the queue, then one heard by the resync (up to
    /// its 5 minute interval after the 2 minute reclaim).
    #[arg(long, default_value_t = 1)]
    interruption_runs: usize,
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
    if args.report_only {
        let results =
            serde_json::from_str(&std::fs::read_to_string(args.out.join("results.json"))?)?;
        std::fs::write(args.out.join("results.md"), markdown(&results))?;
        return Ok(());
    }
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

    // First, while no other namespace holds clusters: its operator watches
    // every namespace.
    let mut fairness = None;
    if args.fairness_abusers > 0 {
        eprintln!(
            "bench: fairness: a tenant's cluster beside {} clusters of {} × {} in another namespace",
            args.fairness_abusers, args.fairness_groups, args.fairness_per_group
        );
        fairness = Some(
            fairness_run(
                &kube,
                &client,
                &args,
                args.fairness_abusers,
                args.fairness_groups,
                args.fairness_per_group,
            )
            .await?,
        );
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
        let ns = format!("scale-{run}");
        match scale_run(&kube, &client, &ns, args.clusters, args.accounts).await {
            Ok(r) => p3.push(r),
            Err(e) => {
                eprintln!("bench: P3 run {} did not finish: {e:#}", run + 1);
                p3_errors.push(format!("{e:#}"));
            }
        }
    }
    let mut p5 = vec![];
    if args.mass_clusters > 0 {
        eprintln!("bench: P5: {} clusters in one account", args.mass_clusters);
        match scale_run(&kube, &client, "mass-0", args.mass_clusters, 1).await {
            Ok(r) => p5.push(r),
            Err(e) => eprintln!("bench: P5 did not finish: {e:#}"),
        }
    }
    let mut resync = vec![];
    if !args.resync_clusters.is_empty() {
        eprintln!(
            "bench: resync reads with {:?} clusters",
            args.resync_clusters
        );
        resync = resync_scale_run(&kube, &client, &args.resync_clusters).await?;
    }
    let mut interruption = vec![];
    for run in 0..args.interruption_runs {
        eprintln!(
            "bench: interruption run {}/{}",
            run + 1,
            args.interruption_runs
        );
        interruption.push(interruption_run(&kube, &client, args.realism_scale, run).await?);
    }
    // The peer's runs come after ours: one of its that times out may leave
    // load behind (a realism run timed out just before a P3 that took 5x
    // its usual time).
    let (mut ack_plain, mut ack_real) = (vec![], vec![]);
    match ack::ack_dir() {
        None if args.ack_runs + args.ack_realism_runs > 0 => {
            eprintln!(
                "bench: ACK's ec2-controller is not built (hack/build-ground.sh ack): not measured"
            )
        }
        None => {}
        Some(dir) => {
            ack::install_crds(&kube, &dir)?;
            let latency = Duration::from_millis(args.latency_ms);
            for run in 0..args.ack_runs + args.ack_realism_runs {
                let real = run >= args.ack_runs;
                eprintln!(
                    "bench: ACK run {}/{} (realism: {real})",
                    run + 1,
                    args.ack_runs + args.ack_realism_runs
                );
                let faults = Faults {
                    latency,
                    realism: real.then(|| testground::Realism::aws(args.realism_scale)),
                    ..Default::default()
                };
                // Under the realism profile AWS's own waits are minutes.
                let deadline = Duration::from_secs(if real { 300 } else { 120 });
                let ns = format!("ack-{run}");
                match ack::ack_run(&kube, &client, &dir, &ns, faults, deadline).await {
                    Ok(r) if real => ack_real.push(r),
                    Ok(r) => ack_plain.push(r),
                    Err(e) => eprintln!("bench: ACK run {} failed: {e:#}", run + 1),
                }
            }
        }
    }
    let mut secret_memory = None;
    if args.secrets > 0 {
        eprintln!(
            "bench: operator memory with {} Secrets of {} KiB",
            args.secrets, args.secret_kib
        );
        secret_memory =
            Some(secret_memory_run(&kube, &client, args.secrets, args.secret_kib).await?);
    }
    let mut results = summarize(&args, &critical, &p1, &p3);
    results["secret_memory"] = report::secret_memory(secret_memory.as_ref());
    results["p3_scale"]["unfinished_runs"] = json!(p3_errors);
    results["p5_mass"] = report::mass(args.mass_clusters, &p5);
    results["ack"] = report::ack(&p1, &ack_plain, &ack_real);
    results["resync_scale"] = report::resync_scale(&resync);
    results["fairness"] = report::fairness(&args, fairness.as_ref());
    results["interruption"] = report::interruption(args.realism_scale, &interruption);
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(
        args.out.join("results.json"),
        serde_json::to_string_pretty(&results)? + "\n",
    )?;
    let before = std::fs::read_to_string(args.out.join("results.md")).unwrap_or_default();
    let report = markdown(&results);
    std::fs::write(args.out.join("results.md"), &report)?;
    eprintln!(
        "bench: wrote {} and {}",
        args.out.join("results.json").display(),
        args.out.join("results.md").display()
    );
    // A figure that was met and is now missed fails the run, after the
    // report is written (so it can be read).
    let regressed = testground::report::regressions(&before, &report);
    if !regressed.is_empty() {
        bail!(
            "figures met before and missed now (fix them, or say why in the change):\n  {}",
            regressed.join("\n  ")
        );
    }
    Ok(())
}
