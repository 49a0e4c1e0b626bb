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
use testground::{AwsProxy, Faults, Kube, Moto, Operator};

mod critical_path;
mod report;
mod scenarios;

use critical_path::critical_path;
use report::{markdown, summarize};
use scenarios::{reference_run, scale_run};

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
    /// Time scale of the AWS realism profile in its scenario (1.0: AWS's
    /// own durations; NAT gateways alone are then pending 1–2 minutes).
    #[arg(long, default_value_t = 1.0)]
    realism_scale: f64,
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
