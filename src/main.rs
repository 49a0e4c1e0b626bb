use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "byoc-operator",
    version,
    about = "Builds compute clusters in your own AWS account"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions as YAML, or write one file per CRD into --dir.
    Crds {
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Crds { dir } => write_crds(dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("byoc-operator: {e}");
            ExitCode::FAILURE
        }
    }
}

fn write_crds(dir: Option<PathBuf>) -> Result<(), Box<dyn std::error::Error>> {
    let docs = byoc_operator::api::crd_documents()?;
    match dir {
        Some(dir) => {
            for (file, yaml) in docs {
                std::fs::write(dir.join(file), yaml)?;
            }
        }
        None => {
            let all: Vec<String> = docs.into_iter().map(|(_, y)| y).collect();
            print!("{}", all.join("---\n"));
        }
    }
    Ok(())
}
