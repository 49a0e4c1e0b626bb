//! What every integration test needs: a namespace on the shared apiserver,
//! clients, its own moto, and waiting on conditions with a deadline.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use byoc_operator::account::iam_policy::{permissions_policy, PolicyOptions};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use testground::node::Node;
use testground::{AwsProxy, Kube, Moto};

/// The apiserver a test talks to: the process's shared one, or the control
/// plane of a node the test started (which goes when the last holder drops).
#[derive(Clone)]
pub enum KubeRef {
    Shared(&'static Kube),
    Node(std::sync::Arc<Node>),
    /// An apiserver of the test's own (another Kubernetes cluster).
    Own(std::sync::Arc<Kube>),
}

impl std::ops::Deref for KubeRef {
    type Target = Kube;
    fn deref(&self) -> &Kube {
        match self {
            KubeRef::Shared(k) => k,
            KubeRef::Node(n) => &n.kube,
            KubeRef::Own(k) => k,
        }
    }
}

/// A test's slice of the ground.
pub struct Ground {
    pub kube: KubeRef,
    pub client: Client,
    pub namespace: String,
    pub moto: Moto,
    /// In front of moto: what the operator talks to.
    pub proxy: AwsProxy,
    /// What the cross-account role is granted (see [`Ground::grant`]).
    grants: std::sync::Arc<std::sync::Mutex<Grants>>,
}

/// The cross-account role the tests' CloudAccounts name.
pub const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/byoc-cross-account";

/// The options the role's policy is generated for, and the installations
/// of the operators started so far.
#[derive(Default)]
struct Grants {
    options: PolicyOptions,
    installations: Vec<String>,
}

impl Grants {
    fn add(&mut self, installation: &str) {
        if !self.installations.iter().any(|i| i == installation) {
            self.installations.push(installation.to_string());
        }
    }

    /// `iam-policy permissions` for the options, one per installation,
    /// with the nodes' grants `connect aws` makes beside [`ROLE_ARN`]
    /// unless the options name others.
    fn policies(&self) -> Vec<serde_json::Value> {
        let grants = (self.options.node_grants_arn.clone())
            .or_else(|| byoc_operator::connect::node_grants_arn(ROLE_ARN));
        self.installations
            .iter()
            .map(|i| {
                permissions_policy(&PolicyOptions {
                    installation: i.clone(),
                    node_grants_arn: grants.clone(),
                    ..self.options.clone()
                })
            })
            .collect()
    }
}

impl Ground {
    /// A fresh namespace named after the test, and a moto of its own.
    pub async fn new(test: &str) -> Result<Ground> {
        let kube = tokio::task::spawn_blocking(Kube::shared).await??;
        Ground::on(test, KubeRef::Shared(kube)).await
    }

    /// [`Ground::new`] on `node`'s control plane.
    pub async fn on_node(test: &str, node: std::sync::Arc<Node>) -> Result<Ground> {
        Ground::on(test, KubeRef::Node(node)).await
    }

    /// [`Ground::new`] on an apiserver (and etcd) of its own: another
    /// Kubernetes cluster than every other test's.
    pub async fn on_own_apiserver(test: &str) -> Result<Ground> {
        let kube = tokio::task::spawn_blocking(Kube::start).await??;
        Ground::on(test, KubeRef::Own(std::sync::Arc::new(kube))).await
    }

    async fn on(test: &str, kube: KubeRef) -> Result<Ground> {
        let client = client_for(&kube.kubeconfig).await?;
        let namespace = unique_name(test);
        create_namespace(&client, &namespace).await?;
        let moto = tokio::task::spawn_blocking(Moto::start).await??;
        let proxy = AwsProxy::start(moto.port())?;
        Ok(Ground {
            kube,
            client,
            namespace,
            moto,
            proxy,
            grants: Default::default(),
        })
    }

    /// The cross-account role ([`ROLE_ARN`]) is granted, as its only
    /// permissions, exactly what `iam-policy permissions` prints for
    /// `options` and each installation whose operator this test started
    /// (`options.installation` is ignored): the proxy decides each of its
    /// sessions' requests by that, as AWS does. Every operator started by
    /// [`OperatorExt::start`] is granted this way with default options.
    pub fn grant(&self, options: PolicyOptions) -> Result<()> {
        let mut grants = self.grants.lock().map_err(|_| anyhow!("grants poisoned"))?;
        grants.options = options;
        // No installation known yet: the grant waiting for one (or the
        // next operator's start) takes these options.
        if grants.installations.is_empty() {
            return Ok(());
        }
        self.proxy.grant(ROLE_ARN, grants.policies())
    }

    /// [`Ground::grant`]'s options with `installation` added.
    pub fn grant_installation(&self, installation: &str) -> Result<()> {
        let mut grants = self.grants.lock().map_err(|_| anyhow!("grants poisoned"))?;
        grants.add(installation);
        self.proxy.grant(ROLE_ARN, grants.policies())
    }

    /// [`Ground::grant`]'s options for `installation` alone.
    pub fn grant_only(&self, installation: &str) -> Result<()> {
        let mut grants = self.grants.lock().map_err(|_| anyhow!("grants poisoned"))?;
        grants.installations = vec![installation.to_string()];
        self.proxy.grant(ROLE_ARN, grants.policies())
    }

    /// Each installation its own role: [`ROLE_ARN`] keeps `installation`'s
    /// policy alone, and `role_arn` gets `other`'s alone (the options of
    /// [`Ground::grant`] for both): two installations sharing an account,
    /// each through the role connected for it.
    pub fn grant_apart(&self, installation: &str, role_arn: &str, other: &str) -> Result<()> {
        let mut grants = self.grants.lock().map_err(|_| anyhow!("grants poisoned"))?;
        grants.installations = vec![installation.to_string()];
        self.proxy.grant(ROLE_ARN, grants.policies())?;
        let apart = Grants {
            options: grants.options.clone(),
            installations: vec![other.to_string()],
        };
        self.proxy.grant(role_arn, apart.policies())
    }

    /// The installation whose Secret is `secret` is granted once the
    /// operator has made it; the role's requests wait for it till then.
    pub fn grant_when_made(&self, secret: (String, String)) -> Result<()> {
        let kube = self.kube.clone();
        let grants = self.grants.clone();
        self.proxy.hold(
            ROLE_ARN,
            std::sync::Arc::new(move || {
                let Some(id) = installation_id(&kube, &secret)? else {
                    return Ok(None);
                };
                let mut grants = grants.lock().map_err(|_| anyhow!("grants poisoned"))?;
                grants.add(&id);
                Ok(Some(grants.policies()))
            }),
        )
    }

    /// `e`, with what the proxy refused on IAM's behalf so far (one line
    /// each) when it refused anything: why a wait may have timed out.
    pub fn with_denials(&self, e: anyhow::Error) -> anyhow::Error {
        let denials: String = self
            .proxy
            .denials()
            .iter()
            .map(|d| format!("- {d}\n"))
            .collect();
        if denials.is_empty() {
            e
        } else {
            e.context(format!("refused on IAM's behalf:\n{denials}"))
        }
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// An AWS SDK config for test-side checks against this test's moto.
    pub async fn aws(&self) -> aws_config::SdkConfig {
        self.aws_at(self.moto.endpoint()).await
    }

    /// [`Ground::aws`] through the proxy: AWS as the operator sees it
    /// (pending states, faults).
    pub async fn aws_through_proxy(&self) -> aws_config::SdkConfig {
        self.aws_at(self.proxy.endpoint()).await
    }

    async fn aws_at(&self, endpoint: String) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(endpoint)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_credential_types::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .load()
            .await
    }
}

/// Creates the namespace `name`.
pub async fn create_namespace(client: &Client, name: &str) -> Result<()> {
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
        .await
        .with_context(|| format!("creating namespace {name}"))?;
    Ok(())
}

/// `kubectl delete namespace` of the test's namespace, as a team removes
/// one: a single command that does not wait.
pub fn delete_namespace(g: &Ground) -> Result<()> {
    let out = g
        .kube
        .kubectl()
        .args(["delete", "namespace", &g.namespace, "--wait=false"])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "kubectl delete namespace: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Waits until the test's namespace is gone.
pub async fn wait_namespace_gone(g: &Ground, deadline: Duration) -> Result<()> {
    let namespaces = Api::<Namespace>::all(g.client.clone());
    eventually("the namespace gone", deadline, || async {
        Ok(namespaces
            .get_opt(&g.namespace)
            .await?
            .is_none()
            .then_some(()))
    })
    .await
}

/// A kube client from a kubeconfig file.
pub async fn client_for(path: &std::path::Path) -> Result<Client> {
    let kubeconfig = Kubeconfig::read_from(path)?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

/// A DNS label from a test name, unique within this process.
pub fn unique_name(test: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let base: String = test
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(40)
        .collect();
    format!(
        "{}-{}",
        base.trim_matches('-'),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Polls `check` until it yields `Some`, failing after `deadline` with the
/// last state it saw.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let end = Instant::now() + deadline;
    loop {
        let last = match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => "condition not met".to_string(),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() > end {
            bail!("timed out after {deadline:?} waiting for {what}; last: {last}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A ground for `test` with the CRDs installed: where most tests start.
pub async fn ground_with_crds(test: &str) -> Result<Ground> {
    let g = Ground::new(test).await?;
    install_crds(&g).await?;
    Ok(g)
}

/// Installs `crds/` into the shared apiserver (once per test process), or
/// into a test's own, and waits until they are established.
pub async fn install_crds(g: &Ground) -> Result<()> {
    static DONE: std::sync::OnceLock<std::result::Result<(), String>> = std::sync::OnceLock::new();
    match &g.kube {
        KubeRef::Shared(kube) => {
            let kube: &'static Kube = kube;
            tokio::task::spawn_blocking(move || DONE.get_or_init(|| apply_crds(kube)).clone())
                .await?
                .map_err(|e| anyhow!(e))
        }
        KubeRef::Own(kube) => {
            let kube = kube.clone();
            tokio::task::spawn_blocking(move || apply_crds(&kube))
                .await?
                .map_err(|e| anyhow!(e))
        }
        KubeRef::Node(_) => bail!("a node's control plane gets the CRDs from the chart"),
    }
}

/// `kubectl apply` of `crds/`, then a wait until they are established.
fn apply_crds(kube: &Kube) -> std::result::Result<(), String> {
    let dir = testground::repo_root().join("crds");
    let run = |args: &[&str]| -> std::result::Result<(), String> {
        let out = kube
            .kubectl()
            .args(args)
            .arg(&dir)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "kubectl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    };
    run(&["apply", "--server-side", "-f"])?;
    run(&["wait", "--for=condition=established", "--timeout=60s", "-f"])
}

/// The operator binary, run as a process against this test's namespace and moto.
pub use testground::Operator;

/// Starts `byoc-operator run` watching the test's namespace. The process's
/// own AWS identity (ambient) is moto's test keys unless `env` overrides it.
pub trait OperatorExt: Sized {
    fn start(g: &Ground, args: &[&str], env: &[(&str, &str)]) -> Result<Self>;
    /// [`OperatorExt::start`] watching `namespace`.
    fn start_in(g: &Ground, namespace: &str, args: &[&str], env: &[(&str, &str)]) -> Result<Self>;
    /// The value of one sample in `/metrics` (`name{labels}` as printed),
    /// 0 when absent.
    fn metric(&self, series: &str) -> Result<f64>;
    /// Everything the operator has logged so far.
    fn log(&self) -> String;
    /// The last `n` lines of [`OperatorExt::log`].
    fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl OperatorExt for Operator {
    fn start(g: &Ground, args: &[&str], env: &[(&str, &str)]) -> Result<Operator> {
        Self::start_in(g, &g.namespace, args, env)
    }

    fn start_in(
        g: &Ground,
        namespace: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Operator> {
        let log = g
            .kube
            .dir()
            .join(format!("operator-{}-{}.log", namespace, unique_name("run")));
        // Its role is judged by its installation's policy from its first
        // call: granted now when the installation's Secret exists, else
        // held until the operator has made it.
        let secret = installation_secret(args, env);
        match installation_id(&g.kube, &secret)? {
            Some(id) => g.grant_installation(&id)?,
            None => g.grant_when_made(secret)?,
        }
        let mut env = env.to_vec();
        if !env.iter().any(|(k, _)| *k == "RUST_LOG") {
            env.insert(
                0,
                (
                    "RUST_LOG",
                    "debug,hyper=info,h2=info,rustls=info,tower=info",
                ),
            );
        }
        testground::Operator::launch(testground::OperatorLaunch {
            binary: std::path::Path::new(env!("CARGO_BIN_EXE_byoc-operator")),
            kubeconfig: &g.kube.kubeconfig,
            aws_endpoint: g.proxy.endpoint(),
            namespace,
            args,
            env: &env,
            log,
        })
    }

    fn metric(&self, series: &str) -> Result<f64> {
        Ok(sample(&self.metrics()?, series))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.process.log_path()).unwrap_or_default()
    }
}

/// The installation Secret (name, namespace) an operator started with
/// `args` and `env` uses.
fn installation_secret(args: &[&str], env: &[(&str, &str)]) -> (String, String) {
    let arg = |flag: &str, var: &str| {
        args.windows(2)
            .find(|w| w[0] == flag)
            .map(|w| w[1].to_string())
            .or_else(|| {
                env.iter()
                    .find(|(k, _)| *k == var)
                    .map(|(_, v)| v.to_string())
            })
    };
    let name = arg("--installation-secret", "BYOC_INSTALLATION_SECRET")
        .unwrap_or_else(|| byoc_operator::installation::DEFAULT_SECRET_NAME.into());
    let namespace = arg("--installation-namespace", "BYOC_INSTALLATION_NAMESPACE")
        .or_else(|| {
            env.iter()
                .find(|(k, _)| *k == "POD_NAMESPACE")
                .map(|(_, v)| v.to_string())
        })
        .unwrap_or_else(|| "default".into());
    (name, namespace)
}

/// The public ID of the installation whose Secret is `(name, namespace)`;
/// none while the Secret does not exist.
fn installation_id(kube: &Kube, (name, namespace): &(String, String)) -> Result<Option<String>> {
    let key = byoc_operator::installation::SECRET_KEY;
    let out = kube
        .kubectl()
        .args([
            "-n",
            namespace,
            "get",
            "secret",
            name,
            "--ignore-not-found",
            "-o",
            "json",
        ])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "reading Secret {namespace}/{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    // The operator's own secret is random bytes: read them as bytes.
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_slice(&out.stdout)?;
    let bytes = secret
        .data
        .and_then(|d| d.get(key).cloned())
        .with_context(|| format!("Secret {namespace}/{name} has no {key}"))?;
    byoc_operator::installation::Installation::from_secret(&bytes.0)
        .map(|i| Some(i.id().to_string()))
        .with_context(|| format!("Secret {namespace}/{name} holds too short a secret"))
}

/// The ID of the installation of an operator started with no installation
/// arguments (the shared apiserver's default), made now when missing.
pub async fn default_installation(g: &Ground) -> Result<String> {
    let secret = installation_secret(&[], &[]);
    if let Some(id) = installation_id(&g.kube, &secret)? {
        return Ok(id);
    }
    let fresh = format!(
        "ground-{}-{:032}",
        unique_name("installation"),
        std::process::id()
    );
    let key = byoc_operator::installation::SECRET_KEY;
    // Another test may make it at the same time: either one stands.
    let _ = g
        .kube
        .kubectl()
        .args(["-n", &secret.1, "create", "secret", "generic", &secret.0])
        .arg(format!("--from-literal={key}={fresh}"))
        .output()?;
    installation_id(&g.kube, &secret)?.context("the installation Secret was not made")
}

/// Tags brought EC2 resources (VPCs, subnets, groups, key pairs by ID)
/// `byoc.dev/usable-by` with the default
/// installation's ID, as a team does so that the generated policy lets the
/// operator use them.
pub async fn let_use<'a>(
    g: &Ground,
    ec2: &aws_sdk_ec2::Client,
    ids: impl IntoIterator<Item = &'a String>,
) -> Result<()> {
    let installation = default_installation(g).await?;
    ec2.create_tags()
        .set_resources(Some(ids.into_iter().cloned().collect()))
        .tags(
            aws_sdk_ec2::types::Tag::builder()
                .key(byoc_operator::account::iam_policy::USABLE_BY)
                .value(installation)
                .build(),
        )
        .send()
        .await?;
    Ok(())
}

/// Runs a command of the operator binary (`audit`, `describe`, ...) as a
/// person would, against this test's apiserver and AWS: its output, or an
/// error with what it printed.
pub fn byoc(g: &Ground, args: &[&str]) -> Result<String> {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_byoc-operator"));
    command_output(command_env(g, &mut cmd).args(args))
}

/// [`byoc`] with more environment (e.g. a person's AWS keys); its output
/// whether it succeeded or not.
pub fn byoc_with(g: &Ground, env: &[(&str, &str)], args: &[&str]) -> Result<std::process::Output> {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_byoc-operator"));
    command_env(g, &mut cmd)
        .envs(env.iter().copied())
        .args(args);
    Ok(cmd.output()?)
}

/// [`byoc_with`] ended after `deadline` if it has not ended by itself (a
/// command expected to refuse at once, such as `run`, that may not).
pub fn byoc_within(g: &Ground, deadline: Duration, args: &[&str]) -> Result<std::process::Output> {
    let mut cmd = std::process::Command::new("timeout");
    cmd.arg(format!("{}s", deadline.as_secs()))
        .arg(env!("CARGO_BIN_EXE_byoc-operator"));
    command_env(g, &mut cmd).args(args);
    Ok(cmd.output()?)
}

/// `kubectl byoc ARGS`: the binary found by kubectl as a plugin, through a
/// `kubectl-byoc` link on PATH.
pub fn kubectl_byoc(g: &Ground, args: &[&str]) -> Result<String> {
    let dir = g.kube.dir().join(format!("plugin-{}", unique_name("byoc")));
    std::fs::create_dir_all(&dir)?;
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_byoc-operator"),
        dir.join("kubectl-byoc"),
    )?;
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // kubectl finds a plugin only when its name comes first (no flags before).
    let mut cmd = std::process::Command::new(&testground::Tools::locate()?.kubectl);
    command_env(g, &mut cmd).env("PATH", path).arg("byoc");
    command_output(cmd.args(args))
}

fn command_env<'a>(
    g: &Ground,
    cmd: &'a mut std::process::Command,
) -> &'a mut std::process::Command {
    cmd.env("KUBECONFIG", &g.kube.kubeconfig)
        .env("AWS_ENDPOINT_URL", g.proxy.endpoint())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
}

fn command_output(cmd: &mut std::process::Command) -> Result<String> {
    let out = cmd.output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    anyhow::ensure!(
        out.status.success(),
        "{cmd:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout)
}

/// The value of `series` in a Prometheus text exposition (see
/// [`testground::metric_sample`]).
pub fn sample(text: &str, series: &str) -> f64 {
    testground::metric_sample(text, series)
}

/// IAM set up in moto as a real cross-account arrangement, then enforced:
/// a base user that may only assume roles, a role trusting that user with an
/// external ID, a role trusting nobody, and an admin for test-side checks.
pub struct CrossAccount {
    /// The user the base keys are of (allowed only sts:AssumeRole).
    pub base_arn: String,
    pub base_key_id: String,
    pub base_secret: String,
    /// Keys of a user allowed everything: the control that shows a denial
    /// is the policy's.
    pub allowed_key_id: String,
    pub allowed_secret: String,
    pub role_arn: String,
    pub external_id: String,
    pub untrusting_role_arn: String,
    pub admin: aws_config::SdkConfig,
    /// The admin's keys, for commands run as a person with them.
    pub admin_key_id: String,
    pub admin_secret: String,
}

impl CrossAccount {
    /// Sets it up on a fresh ground with the CRDs, then has the proxy make
    /// it hold as on AWS: a role must exist to be assumed, and moto's IAM
    /// enforcement sees each request signed as it re-encodes it.
    pub async fn enforced(test: &str) -> Result<(Ground, CrossAccount)> {
        let g = ground_with_crds(test).await?;
        let x = CrossAccount::set_up(&g).await?;
        g.proxy.set_faults(testground::Faults {
            roles_must_exist: true,
            resign: true,
            ..Default::default()
        });
        Ok((g, x))
    }

    pub async fn set_up(g: &Ground) -> Result<CrossAccount> {
        let iam = aws_sdk_iam::Client::new(&g.aws().await);
        let allow_all = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;
        let assume_only = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"sts:AssumeRole","Resource":"*"}]}"#;

        let user = |name: &'static str, policy: &'static str| {
            let iam = iam.clone();
            async move {
                let u = iam.create_user().user_name(name).send().await?;
                iam.put_user_policy()
                    .user_name(name)
                    .policy_name("p")
                    .policy_document(policy)
                    .send()
                    .await?;
                let k = iam.create_access_key().user_name(name).send().await?;
                let k = k.access_key().context("no access key")?;
                let arn = u.user().map(|u| u.arn().to_string()).unwrap_or_default();
                Ok::<_, anyhow::Error>((
                    arn,
                    k.access_key_id().to_string(),
                    k.secret_access_key().to_string(),
                ))
            }
        };
        let (base_arn, base_key_id, base_secret) = user("byoc-base", assume_only).await?;
        let (_, admin_key, admin_secret) = user("test-admin", allow_all).await?;
        let (_, allowed_key_id, allowed_secret) = user("byoc-allowed", allow_all).await?;

        let external_id = "ext-4711".to_string();
        let trust = serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Effect": "Allow",
                "Principal": {"AWS": &base_arn},
                "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"sts:ExternalId": external_id}}
            }]
        })
        .to_string();
        let role = |name: &'static str, trust: String| {
            let iam = iam.clone();
            async move {
                let r = iam
                    .create_role()
                    .role_name(name)
                    .assume_role_policy_document(trust)
                    .send()
                    .await?;
                iam.put_role_policy()
                    .role_name(name)
                    .policy_name("p")
                    .policy_document(allow_all)
                    .send()
                    .await?;
                Ok::<_, anyhow::Error>(r.role().map(|r| r.arn().to_string()).unwrap_or_default())
            }
        };
        let role_arn = role("byoc-cross-account", trust).await?;
        let nobody = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:user/someone-else"},"Action":"sts:AssumeRole"}]}"#;
        let untrusting_role_arn = role("byoc-untrusting", nobody.to_string()).await?;

        g.moto.enforce_iam()?;
        let admin = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(g.moto.endpoint())
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_credential_types::Credentials::new(
                admin_key.clone(),
                admin_secret.clone(),
                None,
                None,
                "test",
            ))
            .load()
            .await;
        Ok(CrossAccount {
            base_arn,
            base_key_id,
            base_secret,
            allowed_key_id,
            allowed_secret,
            role_arn,
            external_id,
            untrusting_role_arn,
            admin,
            admin_key_id: admin_key,
            admin_secret,
        })
    }
}

/// `kubectl apply -n <namespace> <args> -f -` with `manifest` on stdin; the
/// output is returned as is, so callers can expect failures.
pub fn kubectl_apply_output(
    g: &Ground,
    namespace: &str,
    args: &[&str],
    manifest: &str,
) -> Result<std::process::Output> {
    use std::io::Write;
    let mut child = g
        .kube
        .kubectl()
        .args(["apply", "-n", namespace])
        .args(args)
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(manifest.as_bytes())?;
    }
    Ok(child.wait_with_output()?)
}

/// Applies a YAML manifest in `namespace`; fails when kubectl does.
pub fn kubectl_apply_in(g: &Ground, namespace: &str, manifest: &str) -> Result<()> {
    let out = kubectl_apply_output(g, namespace, &[], manifest)?;
    anyhow::ensure!(
        out.status.success(),
        "kubectl apply failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Applies a YAML manifest in the test namespace; fails when kubectl does.
pub fn kubectl_apply(g: &Ground, manifest: &str) -> Result<()> {
    kubectl_apply_in(g, &g.namespace, manifest)
}

/// moto's assumed-role session tokens start with this.
pub const SESSION_TOKEN_PREFIX: &str = "FQoGZXIvYXdzEBYaD";

/// Fails when any of `needles` (key IDs, secret keys, session-token
/// prefixes) appears in the operator's log or metrics, the namespace's
/// Events, or the status of any CloudAccount or ComputeCluster.
pub async fn assert_no_key_material(g: &Ground, op: &Operator, needles: &[&str]) -> Result<()> {
    assert_no_key_material_in(g, &g.namespace, op, needles).await
}

/// [`assert_no_key_material`] for an operator watching `namespace`.
pub async fn assert_no_key_material_in(
    g: &Ground,
    namespace: &str,
    op: &Operator,
    needles: &[&str],
) -> Result<()> {
    use byoc_operator::api::{CloudAccount, ComputeCluster};
    use k8s_openapi::api::events::v1::Event;
    use kube::api::ListParams;
    let log = op.log();
    anyhow::ensure!(
        log.contains("cloudaccount"),
        "the operator log is empty: nothing was checked"
    );
    let metrics = op.metrics().unwrap_or_default();
    anyhow::ensure!(
        metrics.contains("byoc_reconciles"),
        "the metrics are empty: nothing was checked"
    );
    let events = Api::<Event>::namespaced(g.client.clone(), namespace)
        .list(&ListParams::default())
        .await?;
    let events = serde_json::to_string(&events.items)?;
    let accounts: Vec<_> = Api::<CloudAccount>::namespaced(g.client.clone(), namespace)
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|a| a.status)
        .collect();
    let clusters: Vec<_> = Api::<ComputeCluster>::namespaced(g.client.clone(), namespace)
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|c| c.status)
        .collect();
    let statuses = serde_json::to_string(&(accounts, clusters))?;
    for needle in needles.iter().filter(|n| !n.is_empty()) {
        for (place, text) in [
            ("operator log", &log),
            ("metrics", &metrics),
            ("Events", &events),
            ("status", &statuses),
        ] {
            anyhow::ensure!(!text.contains(needle), "key material found in the {place}");
        }
    }
    Ok(())
}

/// The full reliability run (`BYOC_FULL=1`, `hack/reliability.sh`): large N.
pub fn full_run() -> bool {
    std::env::var("BYOC_FULL").is_ok_and(|v| v == "1")
}

/// Prints a suite's figure and, when `BYOC_FIGURES` names a file, appends it
/// there as a JSON line (`hack/reliability.sh` turns those into
/// docs/reliability.md).
pub fn record_figure(figure: serde_json::Value) -> Result<()> {
    println!("FIGURE {figure}");
    if let Ok(path) = std::env::var("BYOC_FIGURES") {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {path}"))?;
        writeln!(f, "{figure}")?;
    }
    Ok(())
}

/// The note of the first Event in the test's namespace with `reason` whose
/// note holds `holding`, once there is one.
pub async fn event_note(g: &Ground, reason: &str, holding: &str) -> Result<String> {
    let events = g.api::<k8s_openapi::api::events::v1::Event>();
    eventually(
        &format!("a {reason} Event"),
        crate::clusters::WAIT,
        || async {
            let list = events.list(&Default::default()).await?;
            Ok(list
                .items
                .into_iter()
                .filter(|e| e.reason.as_deref() == Some(reason))
                .filter_map(|e| e.note)
                .find(|n| n.contains(holding)))
        },
    )
    .await
}

/// An edit of a manifest or text a test makes (`replace`), failing the test
/// when what it replaces is not there: a fixture changed under the test
/// would otherwise leave the text as it was, and the test test nothing.
pub trait Edited {
    fn edited(&self, from: &str, to: &str) -> String;
}

impl Edited for str {
    #[track_caller]
    fn edited(&self, from: &str, to: &str) -> String {
        assert!(
            self.contains(from),
            "the edit's pattern {from:?} is not in:\n{self}"
        );
        self.replace(from, to)
    }
}

/// Clients acting as the cross-account role, whose only permission is
/// `installation`'s generated policy.
pub async fn as_role(
    g: &Ground,
    installation: &str,
    region: &str,
) -> Result<byoc_operator::aws::AwsClients> {
    let admin = g.aws_through_proxy().await;
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":"sts:AssumeRole"}]}"#;
    let iam = aws_sdk_iam::Client::new(&admin);
    if iam
        .get_role()
        .role_name("byoc-cross-account")
        .send()
        .await
        .is_err()
    {
        iam.create_role()
            .role_name("byoc-cross-account")
            .assume_role_policy_document(trust)
            .send()
            .await?;
    }
    g.grant(PolicyOptions::default())?;
    g.grant_only(installation)?;
    let role = testground::assumed(&admin, ROLE_ARN, None, &[]).await?;
    let metrics = byoc_operator::metrics::Metrics::new();
    Ok(byoc_operator::aws::AwsClients::new(
        &role,
        region,
        metrics.aws_interceptor(),
    ))
}
