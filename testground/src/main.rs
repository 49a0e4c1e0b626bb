//! `testground up`: starts a kube-apiserver + etcd and a moto server on
//! loopback, prints the environment to use them, and keeps them until
//! SIGINT or SIGTERM; every process it started is then killed.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use nix::sys::signal::{SigSet, Signal};
use testground::{Kube, Moto};

#[derive(Parser)]
#[command(about = "byoc-operator's test ground: real kube-apiserver + etcd and moto on loopback")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start the ground and hold it until interrupted.
    Up {
        /// Also write the `export` lines to this file (for scripts).
        #[arg(long)]
        env_file: Option<PathBuf>,
    },
}

fn main() -> Result<()> {
    let Cmd::Up { env_file } = Cli::parse().command;
    // Block the signals before any thread starts so that sigwait below sees them.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.thread_block()?;

    let kube = Kube::start()?;
    let moto = Moto::start()?;
    let env = format!(
        "export KUBECONFIG={}\nexport AWS_ENDPOINT_URL={}\nexport AWS_ACCESS_KEY_ID=testing\nexport AWS_SECRET_ACCESS_KEY=testing\nexport AWS_REGION=us-east-1\n",
        kube.kubeconfig.display(),
        moto.endpoint()
    );
    if let Some(path) = env_file {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &env)?;
        std::fs::rename(&tmp, &path)?;
    }
    println!(
        "# test ground is up: kube-apiserver {} (etcd, apiserver pids {:?}), moto {} (pid {})",
        kube.server,
        kube.pids(),
        moto.endpoint(),
        moto.pid()
    );
    print!("{env}");
    println!("# Ctrl-C or SIGTERM stops it.");
    let sig = signals.wait()?;
    eprintln!("testground: {sig:?}, stopping");
    drop(moto);
    drop(kube);
    Ok(())
}
