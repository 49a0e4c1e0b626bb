use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use byoc_operator::api::CloudAccount;
use byoc_operator::aws::pacing::{Fence, Limits, Pacing};
use byoc_operator::context::{scoped_api, Context, Settings};
use byoc_operator::installation::{self, Installation, InstallationError};
use byoc_operator::leadership::{Election, Leadership, Shutdown, Stop};
use byoc_operator::metrics::Metrics;
use byoc_operator::{account, cluster};
use clap::{Parser, Subcommand, ValueEnum};
use kube::api::ListParams;
use kube::{Api, Client};

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
    /// Run both controllers (CloudAccount and ComputeCluster).
    Run(RunArgs),
    /// Print the CustomResourceDefinitions as YAML, or write one file per CRD into --dir.
    Crds {
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// List what carries this installation's ownership tags in the AWS
    /// accounts the CloudAccounts reach but belongs to no live
    /// ComputeCluster, with an estimate of its monthly cost; read-only
    /// unless --delete. Another installation's resources and what
    /// deletionPolicy: Retain let go are never counted or touched. Uses the
    /// kubeconfig (KUBECONFIG) and each CloudAccount's credentials (with
    /// your own identity where the account uses the operator's).
    Audit {
        /// Delete the former clusters selected by --cluster or --all, in
        /// dependency order, through the operator's own deletion; asks
        /// first when run on a terminal (unless --yes).
        #[arg(long, requires = "which")]
        delete: bool,
        /// With --delete: a former cluster to delete, by UID (repeatable).
        /// The only way to delete one listed as made before installations
        /// were tagged. A live cluster's UID is refused.
        #[arg(long = "cluster", group = "which")]
        clusters: Vec<String>,
        /// With --delete: every former cluster of this installation listed.
        #[arg(long, group = "which")]
        all: bool,
        /// With --delete: do not ask.
        #[arg(long, short = 'y')]
        yes: bool,
        /// This installation's public ID (`byoc-operator version`); default:
        /// read from the installation Secret. Another installation than
        /// this apiserver's is refused (unless --force).
        #[arg(long)]
        installation: Option<String>,
        #[command(flatten)]
        installation_secret: InstallationArgs,
        /// Act for an installation that is not this apiserver's (another
        /// apiserver's live clusters then look former here).
        #[arg(long)]
        force: bool,
        /// Also look in this region (repeatable); each account's region and
        /// its clusters' regions are always looked in.
        #[arg(long)]
        region: Vec<String>,
        /// How long --delete waits for AWS to finish deleting.
        #[arg(long, default_value = "10m", value_parser = parse_duration)]
        deadline: Duration,
        /// Use only the CloudAccounts of this namespace (clusters of every
        /// namespace still count as live).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
    },
    /// Print a ComputeCluster as a tree: its account and identity, every AWS
    /// resource it owns by kind, node groups and instances, what blocks its
    /// deletion, its conditions. As a kubectl plugin (a `kubectl-byoc` link
    /// on PATH): `kubectl byoc describe computecluster NAME -n NS`.
    Describe {
        #[arg(value_enum)]
        kind: DescribeKind,
        name: String,
        #[arg(short = 'n', long, env = "BYOC_NAMESPACE", default_value = "default")]
        namespace: String,
    },
    /// Print the version and this installation's public ID (read from the
    /// installation Secret through the kubeconfig).
    Version {
        #[command(flatten)]
        installation: InstallationArgs,
    },
    /// Print the IAM policy JSON for the target account's cross-account role:
    /// `permissions` (least privilege) or `trust` (needs --principal, and
    /// --account or --external-id).
    IamPolicy(IamPolicyArgs),
    /// Connect a team's AWS account, run with that account's admin
    /// credentials (the AWS SDK's default chain: profile, SSO,
    /// environment): `connect aws --account NAMESPACE/NAME`.
    Connect {
        #[command(subcommand)]
        cloud: ConnectCloud,
    },
    /// Remove what `connect` made; refused while a cluster uses the account.
    Disconnect {
        #[command(subcommand)]
        cloud: DisconnectCloud,
    },
}

#[derive(clap::Args)]
struct IamPolicyArgs {
    #[arg(value_enum, default_value_t = PolicyKind::Permissions)]
    kind: PolicyKind,
    /// ARN allowed to assume the role (the operator's identity or the Secret's user).
    #[arg(long, required_if_eq("kind", "trust"))]
    principal: Option<String>,
    /// Trust: the CloudAccount (NAMESPACE/NAME) whose generated external
    /// ID (status.externalId) the role requires, read through the kubeconfig.
    #[arg(long, conflicts_with = "external_id")]
    account: Option<String>,
    /// Trust: the external ID the role requires, for an account with
    /// Secret-based credentials (with the operator's own identity, use --account).
    #[arg(long)]
    external_id: Option<String>,
    /// Permissions: a role of a brought instance profile
    /// (`iam.instanceProfileName`) the operator may pass to the nodes;
    /// repeatable.
    #[arg(long)]
    pass_role: Vec<String>,
    /// Permissions: a managed policy node roles may get
    /// (`iam.managedPolicyArns`); repeatable. Default none: no policy
    /// may be attached.
    #[arg(long = "managed-policy-arn")]
    managed_policy_arns: Vec<String>,
    /// Permissions: the permissions boundary every role the operator
    /// creates must carry (the CloudAccount's permissionsBoundaryArn).
    #[arg(long)]
    permissions_boundary: Option<String>,
    /// Permissions: an AMI owner beside amazon and the account itself
    /// (the CloudAccount's imageOwners); repeatable.
    #[arg(long = "image-owner")]
    image_owners: Vec<String>,
    /// Permissions: a KMS key nodes' volumes may be encrypted with (the
    /// CloudAccount's kmsKeyArns); repeatable. AWS's default EBS key needs
    /// none.
    #[arg(long = "kms-key-arn")]
    kms_key_arns: Vec<String>,
    /// Permissions: open the adoption window: resources made before
    /// installations were tagged may be given this installation's tag.
    /// Close it again (generate without it) once the operator has adopted
    /// them.
    #[arg(long)]
    adopt: bool,
    /// Permissions: the nodes' grants policy the operator may attach to
    /// node roles (`iam-policy nodes`, which `connect aws` makes as
    /// `arn:aws:iam::ACCOUNT:policy/<role>-byoc-operator-nodes`).
    #[arg(long)]
    node_grants_arn: Option<String>,
    /// Permissions: this installation's public ID (`byoc-operator
    /// version`); default: read from the installation Secret.
    #[arg(long)]
    installation: Option<String>,
    #[command(flatten)]
    installation_secret: InstallationArgs,
    /// Permissions: only the ongoing policy, for an account whose
    /// clusters share one node identity (needs --node-role): no IAM
    /// write at all, only PassRole of the shared node role.
    #[arg(long, conflicts_with = "setup", requires = "node_role")]
    ongoing: bool,
    /// Permissions: only the setup policy (making each cluster's own
    /// node role and profile), on top of the ongoing one.
    #[arg(long, conflicts_with = "storage")]
    setup: bool,
    /// Permissions: only the storage policy (the clusters' log groups and
    /// keys), on top of the ongoing one.
    #[arg(long, conflicts_with = "ongoing")]
    storage: bool,
    /// Permissions: the role of the account's shared node identity
    /// (the CloudAccount's nodeInstanceProfileName), passed to nodes.
    #[arg(long)]
    node_role: Option<String>,
    /// Operator: an AWS account whose connected roles the operator's
    /// identity may assume; repeatable. Default: any account's (the tag
    /// alone decides).
    #[arg(long = "aws-account")]
    aws_accounts: Vec<String>,
}

#[derive(Subcommand)]
enum ConnectCloud {
    /// Create or update the CloudAccount's cross-account role (trust policy
    /// naming its principal and external ID, permissions) and its shared
    /// node identity, then wait until the CloudAccount is ready.
    Aws(byoc_operator::connect::ConnectArgs),
}

#[derive(Subcommand)]
enum DisconnectCloud {
    /// Delete the role and node identity `connect aws` made for the CloudAccount.
    Aws(byoc_operator::connect::DisconnectArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum DescribeKind {
    #[value(alias = "cc", alias = "computeclusters")]
    Computecluster,
}

#[derive(Clone, Copy, ValueEnum)]
enum PolicyKind {
    Permissions,
    Trust,
    /// The operator's own identity (IRSA or Pod Identity role): it may
    /// assume only roles `connect` made for this installation.
    Operator,
    /// The nodes' grants: the managed policy the operator attaches to a
    /// cluster's node role (`connect aws` makes it as
    /// `<role>-byoc-operator-nodes`).
    Nodes,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "BYOC_NAMESPACE")]
    namespace: Option<String>,
    /// How often a converged ComputeCluster is checked for drift, e.g. `5m`, `30s`.
    #[arg(long, env = "BYOC_RESYNC_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    resync_interval: Duration,
    /// How often a ready CloudAccount is verified again.
    #[arg(long, env = "BYOC_ACCOUNT_VERIFY_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    account_verify_interval: Duration,
    /// How soon to look again while AWS is still creating something.
    #[arg(long, env = "BYOC_PROGRESS_POLL", default_value = "5s", value_parser = parse_duration)]
    progress_poll: Duration,
    /// How long one attempt of an AWS call may take, its wait for the
    /// account's rate limit included; a call makes at most three attempts.
    /// Then it fails as transient. A call whose wait would take more than
    /// half of it is not sent: its pass ends and looks again later.
    #[arg(long, env = "BYOC_AWS_ATTEMPT_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    aws_attempt_timeout: Duration,
    /// Client-side pacing of AWS calls per account and region, as a
    /// multiple of AWS's default request limits (EC2: mutating actions 5 a
    /// second after a burst of 200, non-mutating 20 after 100, RunInstances
    /// 5 after 50 and 2 instances a second after 1000; IAM: writes 2 after
    /// 10, reads 10 after 40). Raise it for an account whose limits AWS
    /// raised; 0 turns pacing off.
    #[arg(long, env = "BYOC_AWS_PACING", default_value_t = 1.0)]
    aws_pacing: f64,
    /// Make no interruption queue (SQS, fed by EventBridge rules) for the
    /// accounts and regions of clusters with spot groups, and listen to
    /// none: AWS's spot warnings and out-of-band stops are then seen at the
    /// next resync, after the instance is gone.
    #[arg(long, env = "BYOC_NO_INTERRUPTION_QUEUE")]
    no_interruption_queue: bool,
    /// How long an offering AWS refused (instance type, zone, spot or
    /// on-demand) is skipped by launches before it is tried again.
    #[arg(long, env = "BYOC_CAPACITY_REFUSAL_TTL", default_value = "3m", value_parser = parse_duration)]
    capacity_refusal_ttl: Duration,
    /// How long a ComputeCluster keeps the CloudAccount of another
    /// namespace it reached AWS through once that account no longer allows
    /// its namespace: time to delete it. Then the operator deletes its AWS
    /// resources in that account itself; neither the pause annotation nor
    /// deletionPolicy Retain keeps them there.
    #[arg(long, env = "BYOC_WITHDRAWN_CONSENT_GRACE", default_value = "24h", value_parser = parse_duration)]
    withdrawn_consent_grace: Duration,
    /// Reconciliations at once, per controller.
    #[arg(long, env = "BYOC_CONCURRENCY", default_value_t = 8)]
    concurrency: u16,
    /// ComputeCluster reconciliations at once per namespace while another
    /// namespace is busy, so one tenant's clusters never hold every worker
    /// (a namespace alone may use them all; deletions are not counted).
    /// Default: half of --concurrency; 0: no limit.
    #[arg(long, env = "BYOC_NAMESPACE_CONCURRENCY")]
    namespace_concurrency: Option<usize>,
    /// Log format.
    #[arg(long, env = "BYOC_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Address of the /metrics, /healthz and /readyz endpoints.
    #[arg(long, env = "BYOC_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Take part in leader election on a Lease: only the holder reconciles.
    #[arg(long, env = "BYOC_LEADER_ELECTION")]
    leader_election: bool,
    /// Name of the Lease.
    #[arg(long, env = "BYOC_LEASE_NAME", default_value = "byoc-operator")]
    lease_name: String,
    /// How often to look for AWS resources of no live ComputeCluster (the
    /// gauge byoc_leaked_resources); never more often than the resync.
    #[arg(long, env = "BYOC_LEAK_AUDIT_INTERVAL", default_value = "15m", value_parser = parse_duration)]
    leak_audit_interval: Duration,
    /// Namespace of the Lease (default: the pod's namespace, else `default`).
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// How long the Lease holds without renewal; a successor takes over
    /// within this long after the leader dies.
    #[arg(long, env = "BYOC_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    lease_duration: Duration,
    #[command(flatten)]
    installation: InstallationArgs,
    /// Namespaces whose CloudAccounts may start from the operator's own
    /// identity (no credentialsSecretRef), comma-separated; `*` for every
    /// namespace. Default: none. Even there it only assumes the account's
    /// roleArn, with the external ID the operator generates.
    #[arg(long, env = "BYOC_AMBIENT_IDENTITY_NAMESPACES", value_delimiter = ',')]
    ambient_identity_namespaces: Vec<String>,
}

/// Where the installation's secret is kept.
#[derive(clap::Args, Clone)]
struct InstallationArgs {
    /// Name of the Secret holding the installation's secret (created on the
    /// first start when missing).
    #[arg(id = "installation_secret", long = "installation-secret", env = "BYOC_INSTALLATION_SECRET", default_value = installation::DEFAULT_SECRET_NAME)]
    secret: String,
    /// Its namespace (default: the operator's: POD_NAMESPACE, else the
    /// pod's, else `default`).
    #[arg(
        id = "installation_namespace",
        long = "installation-namespace",
        env = "BYOC_INSTALLATION_NAMESPACE"
    )]
    namespace: Option<String>,
}

impl InstallationArgs {
    fn namespace(&self) -> String {
        self.namespace
            .clone()
            .or_else(|| {
                std::env::var("POD_NAMESPACE")
                    .ok()
                    .filter(|s| !s.is_empty())
            })
            .or_else(in_cluster_namespace)
            .unwrap_or_else(|| "default".into())
    }

    /// The installation, created on the first start, and this apiserver's
    /// alone.
    async fn for_this_apiserver(&self, client: &Client) -> Result<Installation, InstallationError> {
        Installation::for_this_apiserver(client, &self.namespace(), &self.secret).await
    }

    /// The installation as it is; `None` when it was never created.
    async fn find(&self, client: &Client) -> Result<Option<Installation>, InstallationError> {
        Installation::load(client, &self.namespace(), &self.secret).await
    }

    /// The installation as it is; an error when it was never created.
    async fn load(&self, client: &Client) -> Result<Installation, InstallationError> {
        self.find(client).await?.ok_or_else(|| self.not_found())
    }

    fn not_found(&self) -> InstallationError {
        InstallationError::NotFound {
            namespace: self.namespace(),
            name: self.secret.clone(),
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d: jiff::SignedDuration = s
        .parse()
        .map_err(|e| format!("not a duration like 30s or 5m: {e}"))?;
    Duration::try_from(d).map_err(|_| "a duration must not be negative".to_string())
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Crds { dir } => write_crds(dir),
        Command::IamPolicy(args) => iam_policy(args),
        Command::Version { installation } => block_on(version(installation)),
        Command::Connect {
            cloud: ConnectCloud::Aws(args),
        } => block_on(async move { Ok(byoc_operator::connect::connect(args).await?) }),
        Command::Disconnect {
            cloud: DisconnectCloud::Aws(args),
        } => block_on(async move { Ok(byoc_operator::connect::disconnect(args).await?) }),
        Command::Run(args) => block_on(run(args)),
        Command::Audit {
            delete,
            clusters,
            all,
            yes,
            installation,
            installation_secret,
            force,
            region,
            deadline,
            namespace,
        } => {
            let opts = byoc_operator::audit::AuditOptions {
                installation: installation.unwrap_or_default(),
                delete,
                clusters,
                all,
                regions: region,
                deadline,
                namespace,
            };
            block_on(audit(opts, installation_secret, yes, force))
        }
        Command::Describe {
            kind: DescribeKind::Computecluster,
            name,
            namespace,
        } => block_on(describe(namespace, name)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("byoc-operator: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `byoc-operator iam-policy`: the permissions or trust policy as JSON.
fn iam_policy(args: IamPolicyArgs) -> Result<(), Box<dyn std::error::Error>> {
    let IamPolicyArgs {
        kind,
        principal,
        account,
        external_id,
        pass_role,
        managed_policy_arns,
        permissions_boundary,
        image_owners,
        kms_key_arns,
        adopt,
        node_grants_arn,
        installation,
        installation_secret,
        ongoing,
        setup,
        storage,
        node_role,
        aws_accounts,
    } = args;
    use byoc_operator::account::iam_policy;
    let part = match (ongoing, setup) {
        (true, _) => iam_policy::PolicyPart::Ongoing,
        (_, true) => iam_policy::PolicyPart::Setup,
        _ if storage => iam_policy::PolicyPart::Storage,
        _ => iam_policy::PolicyPart::All,
    };
    let installation = || match installation.clone() {
        Some(id) => Ok(id),
        None => block_on_value(async {
            let client = Client::try_default().await?;
            Ok(installation_secret.load(&client).await?.id().to_string())
        }),
    };
    let doc = match kind {
        PolicyKind::Operator => {
            installation().map(|id| iam_policy::operator_policy(&id, &aws_accounts))
        }
        PolicyKind::Permissions => installation().map(|installation| {
            let options = iam_policy::PolicyOptions {
                installation,
                managed_policy_arns,
                permissions_boundary,
                pass_roles: pass_role,
                shared_node_role: node_role,
                image_owners,
                kms_key_arns,
                adopt,
                node_grants_arn,
            };
            iam_policy::policy_part(&options, part)
        }),
        PolicyKind::Nodes => Ok(iam_policy::nodes_policy()),
        PolicyKind::Trust => {
            let principal = principal.unwrap_or_default();
            match (account, external_id) {
                (Some(account), _) => {
                    let namespace = account.split_once('/').map(|(ns, _)| ns.to_string());
                    block_on_value(published_external_id(account)).map(|id| {
                        iam_policy::trust_policy(&principal, Some(&id), namespace.as_deref())
                    })
                }
                (None, Some(id)) => Ok(iam_policy::trust_policy(&principal, Some(&id), None)),
                (None, None) => Err("a trust policy needs --account NAMESPACE/NAME (the operator's identity) or --external-id (Secret-based credentials)".into()),
            }
        }
    };
    doc.and_then(|doc| {
        serde_json::to_string_pretty(&doc)
            .map(|s| println!("{s}"))
            .map_err(Into::into)
    })
}

fn block_on(
    work: impl std::future::Future<Output = Result<(), Box<dyn std::error::Error>>>,
) -> Result<(), Box<dyn std::error::Error>> {
    block_on_value(work)
}

fn block_on_value<T>(
    work: impl std::future::Future<Output = Result<T, Box<dyn std::error::Error>>>,
) -> Result<T, Box<dyn std::error::Error>> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(work)
}

/// `byoc-operator version`: the release, and the installation's public ID
/// when the kubeconfig reaches the installation Secret.
async fn version(installation: InstallationArgs) -> Result<(), Box<dyn std::error::Error>> {
    println!("byoc-operator {}", env!("CARGO_PKG_VERSION"));
    let client = Client::try_default().await?;
    let found = installation.load(&client).await?;
    println!("installation {}", found.id());
    Ok(())
}

/// The generated external ID a CloudAccount's status publishes.
async fn published_external_id(account: String) -> Result<String, Box<dyn std::error::Error>> {
    let (namespace, name) = account
        .split_once('/')
        .ok_or("--account takes NAMESPACE/NAME")?;
    let client = Client::try_default().await?;
    let found = Api::<CloudAccount>::namespaced(client, namespace)
        .get(name)
        .await
        .map_err(|e| format!("CloudAccount {account}: {e}"))?;
    found
        .status
        .and_then(|s| s.external_id)
        .ok_or_else(|| format!("CloudAccount {account} publishes no status.externalId: it has Secret-based credentials (use --external-id), its namespace may not use the operator's identity, or the operator has not looked at it yet (see its conditions)").into())
}

async fn audit(
    mut opts: byoc_operator::audit::AuditOptions,
    installation: InstallationArgs,
    yes: bool,
    force: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    use std::io::{BufRead, IsTerminal, Write};
    let client = Client::try_default().await?;
    // Only this apiserver's installation, unless forced.
    let here = installation::apiserver_identity(&client).await?;
    let found = installation.find(&client).await?;
    let asked = Some(opts.installation.as_str()).filter(|i| !i.is_empty());
    let bound = found.as_ref().map(|i| (i.id(), i.binding(&here)));
    let refusal = installation::audit_refusal(asked, bound.as_ref().map(|(id, b)| (*id, b)), &here);
    if let (Some(refusal), false) = (refusal, force) {
        return Err(refusal.into());
    }
    if opts.installation.is_empty() {
        opts.installation = found
            .as_ref()
            .map(|i| i.id().to_string())
            .ok_or_else(|| installation.not_found())?;
    }
    // On a terminal, the person sees what would go and says yes first.
    let ask = !yes && std::io::stdin().is_terminal();
    let mut confirm = |report: &str, selected: &[&byoc_operator::audit::Leak]| {
        if !ask {
            return true;
        }
        print!("{report}");
        println!("to delete:");
        for l in selected {
            println!(
                "  former cluster {} (uid {}): {} resources",
                l.cluster,
                l.uid,
                l.resources.len()
            );
        }
        print!(
            "delete these {} former clusters' AWS resources? [y/N] ",
            selected.len()
        );
        let _ = std::io::stdout().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        matches!(answer.trim(), "y" | "Y" | "yes")
    };
    let (report, _) = byoc_operator::audit::command(
        &client,
        &byoc_operator::aws::config::from_environment("us-east-1").await,
        &opts,
        &mut confirm,
    )
    .await?;
    print!("{report}");
    Ok(())
}

async fn describe(namespace: String, name: String) -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::try_default().await?;
    let tree = byoc_operator::describe::command(
        &client,
        &byoc_operator::aws::config::from_environment("us-east-1").await,
        &namespace,
        &name,
    )
    .await?;
    print!("{tree}");
    Ok(())
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

/// Targets whose verbose logs carry credentials or wire bodies (the SDK's
/// endpoint resolution and auth print the identity; trace-level HTTP logs
/// print AssumeRole responses and Secrets). Capped whatever `RUST_LOG` says;
/// a cap lowers the level, never raises it.
const CAPPED_TARGETS: &[&str] = &[
    "aws_smithy_runtime::client::orchestrator::endpoints=info",
    "aws_smithy_runtime::client::orchestrator::auth=info",
    "aws_smithy_runtime::client::orchestrator=debug",
    "aws_smithy_runtime::client::identity=info",
    "aws_smithy_runtime_api=debug",
    "aws_smithy_http_client=debug",
    "aws_sigv4=info",
    "aws_config=debug",
    "kube_client=debug",
    "hyper=info",
    "hyper_util=info",
    "h2=info",
    "rustls=info",
    "tower=info",
];

fn init_logging(format: LogFormat) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{filter::FilterExt, Layer};
    let requested = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,kube=warn,aws_config=warn,aws_smithy_runtime=warn")
    });
    // The caps only lower what RUST_LOG asks for: an event passes when both
    // the request and the cap allow it (a cap never turns a target on).
    let caps = CAPPED_TARGETS
        .join(",")
        .parse::<tracing_subscriber::filter::Targets>()
        .unwrap_or_default()
        .with_default(tracing::Level::TRACE);
    let filter = requested.and(caps);
    let registry = tracing_subscriber::registry();
    match format {
        LogFormat::Json => registry
            .with(tracing_subscriber::fmt::layer().json().with_filter(filter))
            .init(),
        LogFormat::Text => registry
            .with(tracing_subscriber::fmt::layer().with_filter(filter))
            .init(),
    }
}

async fn run(args: RunArgs) -> Result<(), Box<dyn std::error::Error>> {
    init_logging(args.log_format);
    let client = Client::try_default().await?;

    check_crds(&client, args.namespace.as_deref()).await?;
    let metrics = Metrics::new();
    // With leader election, no AWS write leaves before the Lease is held,
    // nor after it could have passed to another process.
    let fence = if args.leader_election {
        Fence::closed()
    } else {
        Fence::open()
    };
    let pacing = Arc::new(pacing(&args, &metrics, fence.clone()));
    let aws = aws_base(&pacing, &Election::default_identity()).await;
    let installation = args.installation.for_this_apiserver(&client).await?;
    metrics.set_installation(installation.id());
    let listener = tokio::net::TcpListener::bind(args.metrics_addr).await?;
    tracing::info!(addr = %listener.local_addr()?, namespace = ?args.namespace, installation = installation.id(), "byoc-operator starting");
    let server = tokio::spawn(serve_probes(listener, metrics.clone()));

    let (shutdown, stop) = Shutdown::on_signals();
    let leadership = if args.leader_election {
        match lead(&args, &client, &shutdown, fence.clone()).await? {
            Some(l) => Some(l),
            None => {
                server.abort();
                tracing::info!("byoc-operator stopped before it led");
                return Ok(());
            }
        }
    } else {
        None
    };
    metrics.set_leader(true);

    let ctx = Arc::new(Context::new(
        client,
        aws,
        installation,
        settings(&args),
        metrics.clone(),
    ));
    let controllers = run_controllers(ctx, pacing, args.leak_audit_interval, shutdown.clone());
    tokio::select! {
        _ = controllers => {}
        _ = stop_when_lost(leadership.as_ref(), &stop) => {}
    }
    metrics.set_leader(false);
    server.abort();
    if shutdown.state() == Stop::LeadershipLost {
        return Err("leadership lost: another process holds the Lease".into());
    }
    if let Some(l) = leadership {
        l.release().await;
    }
    tracing::info!("byoc-operator stopped");
    Ok(())
}

/// Both controllers and the leak audit, until shutdown.
async fn run_controllers(
    ctx: Arc<Context>,
    pacing: Arc<Pacing>,
    leak_audit_interval: Duration,
    shutdown: Shutdown,
) {
    let accounts = Arc::new(account::Accounts::new(&ctx, pacing));
    tokio::join!(
        account::run(ctx.clone(), accounts.clone(), shutdown.clone()),
        cluster::run(ctx.clone(), accounts.clone(), shutdown.clone()),
        byoc_operator::audit::watch(ctx, accounts, leak_audit_interval, shutdown)
    );
}

/// Returns once the Lease is lost (never without leader election), having
/// told every controller to stop.
async fn stop_when_lost(leadership: Option<&Leadership>, stop: &tokio::sync::watch::Sender<Stop>) {
    match leadership {
        Some(l) => {
            l.lost().await;
            tracing::error!("leadership lost; stopping");
            stop.send_replace(Stop::LeadershipLost);
        }
        None => std::future::pending().await,
    }
}

/// The controllers' settings, from the command line.
fn settings(args: &RunArgs) -> Settings {
    Settings {
        resync: args.resync_interval,
        account_verify_interval: args.account_verify_interval,
        progress_poll: args.progress_poll,
        capacity_refusal_ttl: args.capacity_refusal_ttl,
        interruption_queue: !args.no_interruption_queue,
        namespace: args.namespace.clone(),
        concurrency: args.concurrency,
        namespace_concurrency: args
            .namespace_concurrency
            .unwrap_or_else(|| byoc_operator::cluster::fair::default_share(args.concurrency)),
        ambient_namespaces: args.ambient_identity_namespaces.clone(),
        withdrawn_consent_grace: args.withdrawn_consent_grace,
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` until aborted.
async fn serve_probes(listener: tokio::net::TcpListener, metrics: Metrics) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .with_state(metrics);
    axum::serve(listener, app).await
}

/// Fails fast, and clearly, when the CRDs are missing.
async fn check_crds(
    client: &Client,
    namespace: Option<&str>,
) -> Result<(), Box<dyn std::error::Error>> {
    let probe: Api<CloudAccount> = scoped_api(client, namespace);
    match probe.list(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => {
            Err("the byoc.dev CRDs are not installed in this cluster: run `kubectl apply -f crds/` (or install the Helm chart) first".into())
        }
        Err(other) => Err(format!("cannot list CloudAccounts: {other}").into()),
    }
}

/// The Lease, once held; `None` when the process stopped before it led.
async fn lead(
    args: &RunArgs,
    client: &Client,
    shutdown: &Shutdown,
    fence: Arc<Fence>,
) -> Result<Option<Leadership>, Box<dyn std::error::Error>> {
    let election = Election {
        lease_name: args.lease_name.clone(),
        lease_namespace: args
            .lease_namespace
            .clone()
            .or_else(in_cluster_namespace)
            .unwrap_or_else(|| "default".into()),
        identity: Election::default_identity(),
        lease_duration: args.lease_duration,
        field_manager: format!("{}-lease", byoc_operator::context::MANAGER),
    };
    let held = Leadership::acquire(client.clone(), &election, shutdown)
        .await
        .map_err(|e| {
            format!(
                "leader election on Lease {}/{}: {e}",
                election.lease_namespace, election.lease_name
            )
        })?;
    if held.is_some() {
        // Writes may leave from the first reconcile on.
        byoc_operator::leadership::refresh_fence(client, &election, &fence).await;
        tokio::spawn(byoc_operator::leadership::keep_fence(
            client.clone(),
            election,
            fence,
        ));
    }
    Ok(held)
}

/// One AWS base configuration: shared HTTP client, the endpoint override
/// (AWS_ENDPOINT_URL) and the ambient credentials chain. Every account's
/// configuration derives from it. The region is always set per account.
/// A call AWS never answers must not hold a reconcile for ever: each
/// attempt gets --aws-attempt-timeout (kept by the pacing HTTP client,
/// after any wait for a token), and a call makes at most three; then it
/// fails as a transient transport error and the object is retried with
/// backoff (`aws::config::operator_base`).
async fn aws_base(pacing: &Pacing, identity: &str) -> aws_config::SdkConfig {
    byoc_operator::aws::config::operator_base(pacing.unpaced(), &app_name(identity)).await
}

/// Pacing per AWS account as `--aws-pacing` asks, around the SDK's
/// default HTTPS client.
fn pacing(args: &RunArgs, metrics: &Metrics, fence: Arc<Fence>) -> Pacing {
    let limits = (args.aws_pacing > 0.0).then(|| Limits::aws(args.aws_pacing));
    let https = byoc_operator::aws::config::https_client();
    let metrics = metrics.clone();
    Pacing::new(
        limits,
        https,
        args.aws_attempt_timeout,
        Arc::new(move |service: &str, wait| metrics.paced(service, wait)),
        fence,
    )
}

/// The SDK's app name for this process: its leader-election identity, in
/// the characters and length an app name allows.
fn app_name(identity: &str) -> String {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    identity
        .chars()
        .map(|c| if allowed(c) { c } else { '-' })
        .take(50)
        .collect()
}

/// The namespace of the pod the operator runs in, if it runs in one.
fn in_cluster_namespace() -> Option<String> {
    std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

async fn serve_metrics(State(metrics): State<Metrics>) -> (StatusCode, String) {
    match metrics.encode() {
        Ok(text) => (StatusCode::OK, text),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every subcommand's arguments are consistent (unique names, valid
    /// groups): clap checks it only when the command is parsed.
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
