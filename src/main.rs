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
    /// Print the CustomResourceDefinitions as YAML.
    Crds,
}

fn main() -> std::process::ExitCode {
    match Cli::parse().command {
        Command::Crds => match byoc_operator::api::crd_documents() {
            Ok(docs) => {
                let all: Vec<String> = docs.into_iter().map(|(_, y)| y).collect();
                print!("{}", all.join("---\n"));
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("byoc-operator: {e}");
                std::process::ExitCode::FAILURE
            }
        },
    }
}
