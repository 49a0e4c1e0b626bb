//! The test ground: a real kube-apiserver + etcd, with kube-controller-manager
//! running its namespace and garbage-collector controllers (so namespace
//! deletion and owner-reference cleanup behave as in a cluster), and a moto
//! server, on loopback.
//!
//! Binaries are built and cached by `hack/build-ground.sh` (Go module proxy,
//! PyPI); this crate starts them on free ports, waits until they serve, and
//! kills every process it started, by PID, when its handle drops. Each child
//! also gets `PR_SET_PDEATHSIG`, so a test process that dies hard takes its
//! ground with it.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

pub mod containerd;
pub mod events;
pub mod iam_eval;
pub mod netns;
pub mod node;
pub mod prices;
pub mod proxy;
pub mod realism;
pub mod report;
pub use proxy::{AwsProxy, Call, Denial, Faults, Refusal};

/// `base` as the role `role_arn` (with `external_id` when given, and the
/// session `tags`): the session's credentials in a copy of `base`, as any
/// AWS client uses them. moto hands out an account's identity to any role
/// ARN of that account.
pub async fn assumed(
    base: &aws_config::SdkConfig,
    role_arn: &str,
    external_id: Option<&str>,
    tags: &[(&str, &str)],
) -> anyhow::Result<aws_config::SdkConfig> {
    let tags = tags
        .iter()
        .map(|(k, v)| aws_sdk_sts::types::Tag::builder().key(*k).value(*v).build())
        .collect::<Result<Vec<_>, _>>()?;
    let out = aws_sdk_sts::Client::new(base)
        .assume_role()
        .role_arn(role_arn)
        .role_session_name("testground")
        .set_external_id(external_id.map(str::to_string))
        .set_tags((!tags.is_empty()).then_some(tags))
        .send()
        .await?;
    let c = out
        .credentials()
        .ok_or_else(|| anyhow::anyhow!("AssumeRole of {role_arn} answered no credentials"))?;
    Ok(base
        .to_builder()
        .credentials_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(
                aws_credential_types::Credentials::new(
                    c.access_key_id(),
                    c.secret_access_key(),
                    Some(c.session_token().to_string()),
                    None,
                    "assumed",
                ),
            ),
        )
        .build())
}

/// The running instances of cluster `uid` (its `byoc.dev/cluster-uid`
/// tag), as AWS says to `config` (through the proxy: under its realism).
pub async fn running_instances_of(
    config: &aws_config::SdkConfig,
    uid: &str,
) -> anyhow::Result<Vec<String>> {
    use aws_sdk_ec2::types::{Filter, InstanceStateName};
    let out = aws_sdk_ec2::Client::new(config)
        .describe_instances()
        .filters(
            Filter::builder()
                .name("tag:byoc.dev/cluster-uid")
                .values(uid)
                .build(),
        )
        .send()
        .await?;
    Ok(out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter(|i| i.state().and_then(|s| s.name()) == Some(&InstanceStateName::Running))
        .filter_map(|i| i.instance_id().map(str::to_string))
        .collect())
}
pub use realism::Realism;

/// Prefix of every ground's working directory under the temp dir.
const DIR_PREFIX: &str = "byoc-ground-";
/// How long a part of the ground may take to start serving.
const START_DEADLINE: Duration = Duration::from_secs(120);

/// Paths of the ground's binaries, as built by `hack/build-ground.sh`.
#[derive(Debug, Clone)]
pub struct Tools {
    pub kube_apiserver: PathBuf,
    /// Runs only the namespace and garbage-collector controllers here.
    pub kube_controller_manager: PathBuf,
    pub etcd: PathBuf,
    pub moto_server: PathBuf,
    pub helm: PathBuf,
    pub kubectl: PathBuf,
    /// `hack/gitops-check`: kstatus and Argo CD's Lua health runtime.
    pub gitops_check: PathBuf,
    /// containerd and its client, from Debian's packages (runc underneath).
    pub containerd: PathBuf,
    pub ctr: PathBuf,
    /// The node's kubelet and the scheduler that places pods on it, from
    /// the same build as the apiserver.
    pub kubelet: PathBuf,
    pub kube_scheduler: PathBuf,
    /// The node's pause image (OCI layout tarball) and the name it has.
    pub pause_image: PathBuf,
    pub pause_ref: String,
    /// The proxy's IAM evaluator (`testground/iam/evaluate.mjs` beside its
    /// installed packages), run by Node.
    pub iam_evaluator: PathBuf,
    /// cfn-lint, which `connect aws --cloudformation`'s template must pass.
    pub cfn_lint: PathBuf,
    /// promtool, which checks and unit-tests the chart's alert rules.
    pub promtool: PathBuf,
}

impl Tools {
    /// Builds what is missing (a no-op when cached) and returns the paths.
    /// The result is computed once per process.
    pub fn locate() -> Result<&'static Tools> {
        static TOOLS: OnceLock<std::result::Result<Tools, String>> = OnceLock::new();
        TOOLS
            .get_or_init(|| Self::from_build_script().map_err(|e| format!("{e:#}")))
            .as_ref()
            .map_err(|e| anyhow!("{e}"))
    }

    fn from_build_script() -> Result<Tools> {
        let script = repo_root().join("hack/build-ground.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg("env")
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("running {}", script.display()))?;
        if !out.status.success() {
            bail!("{} failed (see its message above)", script.display());
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let get = |key: &str| -> Result<PathBuf> {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("export {key}=")))
                .map(|v| PathBuf::from(v.trim_matches('"')))
                .ok_or_else(|| anyhow!("{} printed no {key}", script.display()))
        };
        Ok(Tools {
            kube_apiserver: get("BYOC_KUBE_APISERVER")?,
            kube_controller_manager: get("BYOC_KUBE_CONTROLLER_MANAGER")?,
            etcd: get("BYOC_ETCD")?,
            moto_server: get("BYOC_MOTO_SERVER")?,
            helm: get("BYOC_HELM")?,
            kubectl: get("BYOC_KUBECTL")?,
            gitops_check: get("BYOC_GITOPS_CHECK")?,
            containerd: get("BYOC_CONTAINERD")?,
            ctr: get("BYOC_CTR")?,
            kubelet: get("BYOC_KUBELET")?,
            kube_scheduler: get("BYOC_KUBE_SCHEDULER")?,
            pause_image: get("BYOC_PAUSE_IMAGE")?,
            pause_ref: get("BYOC_PAUSE_REF")?.to_string_lossy().into_owned(),
            iam_evaluator: get("BYOC_IAM_EVALUATOR")?,
            cfn_lint: get("BYOC_CFN_LINT")?,
            promtool: get("BYOC_PROMTOOL")?,
        })
    }
}

/// The repository root: the nearest directory holding `hack/build-ground.sh`
/// above the package cargo runs (or the working directory). Found at run
/// time: checkouts share one target directory, so a path compiled in could
/// name another checkout.
pub fn repo_root() -> PathBuf {
    let start = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::current_dir().ok())
        .unwrap_or_else(|| PathBuf::from("."));
    start
        .ancestors()
        .find(|d| d.join("hack/build-ground.sh").is_file())
        .map(Path::to_path_buf)
        .unwrap_or(start)
}

/// A process of the ground; killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Starts `cmd` with stdout and stderr going to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Process> {
        let file = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        cmd.stdout(file.try_clone()?)
            .stderr(file)
            .stdin(Stdio::null());
        Self::spawn_as(name, cmd, log)
    }

    /// Starts `cmd` talking through pipes (its stdin and stdout), its
    /// stderr going to `log`.
    pub fn spawn_piped(
        name: &str,
        mut cmd: Command,
        log: &Path,
    ) -> Result<(Process, std::process::ChildStdin, std::process::ChildStdout)> {
        let file = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        cmd.stdout(Stdio::piped())
            .stderr(file)
            .stdin(Stdio::piped());
        let mut process = Self::spawn_as(name, cmd, log)?;
        let stdin = process.child.stdin.take().context("no stdin pipe")?;
        let stdout = process.child.stdout.take().context("no stdout pipe")?;
        Ok((process, stdin, stdout))
    }

    fn spawn_as(name: &str, mut cmd: Command, log: &Path) -> Result<Process> {
        // Its own process group: a terminal's Ctrl-C reaches the process
        // that started the ground (which stops it in order, the node's pods
        // first), not each part at once.
        // SAFETY: prctl and setpgid are async-signal-safe and touch no
        // memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0
                    || libc::setpgid(0, 0) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let program = format!("{:?}", cmd.get_program());
        let child = spawn_from_lifetime_thread(cmd)
            .with_context(|| format!("starting {name} ({program})"))?;
        record_pid(child.id(), name);
        Ok(Process {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Fails with the log's tail when the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}); last lines of {}:\n{}",
                self.name,
                self.log.display(),
                tail(&self.log, 30)
            );
        }
        Ok(())
    }

    /// Polls `ready` until it returns true, failing when the process exits or
    /// the deadline passes.
    pub fn wait_ready(&mut self, mut ready: impl FnMut() -> bool) -> Result<()> {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            self.check_alive()?;
            if ready() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not become ready within {:?}; last lines of {}:\n{}",
                    self.name,
                    START_DEADLINE,
                    self.log.display(),
                    tail(&self.log, 30)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM (the process may shut down gracefully).
    pub fn terminate(&self) -> Result<()> {
        self.signal(libc::SIGTERM, "SIGTERM")
    }

    /// Freezes it (SIGSTOP): it runs no instruction until [`Process::thaw`],
    /// as a process paused by a long GC, a stalled node or a debugger.
    pub fn freeze(&self) -> Result<()> {
        self.signal(libc::SIGSTOP, "SIGSTOP")
    }

    /// Lets a frozen process run again (SIGCONT).
    pub fn thaw(&self) -> Result<()> {
        self.signal(libc::SIGCONT, "SIGCONT")
    }

    fn signal(&self, signal: libc::c_int, name: &str) -> Result<()> {
        let pid = libc::pid_t::try_from(self.child.id())?;
        // SAFETY: kill(2) on a child we started and have not reaped.
        if unsafe { libc::kill(pid, signal) } != 0 {
            bail!(
                "{name} to {}: {}",
                self.name,
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }

    /// The exit status, once the process has exited.
    pub fn exit_status(&mut self) -> Result<Option<std::process::ExitStatus>> {
        Ok(self.child.try_wait()?)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Spawns on one thread that lives as long as the process. PR_SET_PDEATHSIG
/// fires when the *thread* that spawned a child exits, and test threads and
/// tokio's blocking pool come and go; this thread ends only with the process.
fn spawn_from_lifetime_thread(cmd: Command) -> std::io::Result<Child> {
    type Job = (Command, std::sync::mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<std::sync::Mutex<std::sync::mpsc::Sender<Job>>> = OnceLock::new();
    let sender = SPAWNER
        .get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel::<Job>();
            let _ = std::thread::Builder::new()
                .name("testground-spawner".into())
                .spawn(move || {
                    for (mut cmd, reply) in rx {
                        let _ = reply.send(cmd.spawn());
                    }
                });
            std::sync::Mutex::new(tx)
        })
        .lock()
        .map_err(|_| std::io::Error::other("spawner lock poisoned"))?
        .clone();
    let (reply, answer) = std::sync::mpsc::channel();
    sender
        .send((cmd, reply))
        .map_err(|_| std::io::Error::other("spawner thread is gone"))?;
    answer
        .recv()
        .map_err(|_| std::io::Error::other("spawner thread is gone"))?
}

/// Appends `pid name` to the file named by `BYOC_PID_LOG`, when set, so that
/// the test script can prove afterwards that no process outlived the tests.
fn record_pid(pid: u32, name: &str) {
    if let Some(path) = std::env::var_os("BYOC_PID_LOG") {
        if let Ok(mut f) = fs::OpenOptions::new().append(true).create(true).open(path) {
            let _ = writeln!(f, "{pid} {name}");
        }
    }
}

/// The last `n` lines of a file, for error messages.
/// `byoc-operator run` as a process against the ground: the one launcher
/// of the tests and the benchmark.
pub struct Operator {
    pub process: Process,
    /// Port of `/metrics`, `/healthz` and `/readyz`.
    pub metrics_port: u16,
}

/// What an operator process is started with.
pub struct OperatorLaunch<'a> {
    /// The `byoc-operator` binary.
    pub binary: &'a Path,
    pub kubeconfig: &'a Path,
    /// AWS as the operator reaches it (the proxy).
    pub aws_endpoint: String,
    /// The one namespace it watches (empty: every namespace).
    pub namespace: &'a str,
    /// More arguments of `run`.
    pub args: &'a [&'a str],
    /// More environment (overriding the defaults below).
    pub env: &'a [(&'a str, &'a str)],
    /// Where its log goes.
    pub log: PathBuf,
}

impl Operator {
    /// Starts it with a clean environment: its own AWS identity (ambient)
    /// is moto's test keys unless `env` says otherwise; JSON logs.
    pub fn launch(launch: OperatorLaunch<'_>) -> Result<Operator> {
        let metrics_port = free_port()?;
        let mut cmd = Command::new(launch.binary);
        cmd.arg("run");
        if !launch.namespace.is_empty() {
            cmd.args(["--namespace", launch.namespace]);
        }
        cmd.arg(format!("--metrics-addr=127.0.0.1:{metrics_port}"))
            .args(launch.args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("KUBECONFIG", launch.kubeconfig)
            .env("AWS_ENDPOINT_URL", &launch.aws_endpoint)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("RUST_LOG", "info")
            .env("BYOC_LOG_FORMAT", "json");
        for (k, v) in launch.env {
            cmd.env(k, v);
        }
        let process = Process::spawn("byoc-operator", cmd, &launch.log)?;
        Ok(Operator {
            process,
            metrics_port,
        })
    }

    /// Waits until `/healthz` answers.
    pub fn wait_healthy(&mut self) -> Result<()> {
        let port = self.metrics_port;
        self.process
            .wait_ready(|| http_get(port, "/healthz").is_ok_and(|(s, _)| s == 200))
    }

    /// The `/metrics` text.
    pub fn metrics(&self) -> Result<String> {
        let (status, body) = http_get(self.metrics_port, "/metrics")?;
        if status != 200 {
            bail!("/metrics answered {status}");
        }
        Ok(body)
    }
}

pub fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A free TCP port on 127.0.0.1 (released before use; fine for tests).
/// The port of a URL such as `https://127.0.0.1:PORT`.
pub fn port_of(url: &str) -> Result<u16> {
    url.rsplit_once(':')
        .and_then(|(_, p)| p.trim_end_matches('/').parse().ok())
        .ok_or_else(|| anyhow!("no port in {url}"))
}

pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

/// A working directory for one ground; removes those of processes that are gone.
fn ground_dir(kind: &str) -> Result<tempfile::TempDir> {
    let tmp = std::env::temp_dir();
    if let Ok(entries) = fs::read_dir(&tmp) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let Some(rest) = name.strip_prefix(DIR_PREFIX) else {
                continue;
            };
            let pid = rest.split('-').nth(1).and_then(|p| p.parse::<i32>().ok());
            if let Some(pid) = pid {
                let gone = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
                    == Err(nix::errno::Errno::ESRCH);
                if gone {
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
    }
    Ok(tempfile::Builder::new()
        .prefix(&format!("{DIR_PREFIX}{kind}-{}-", std::process::id()))
        .tempdir()?)
}

/// A real kube-apiserver backed by its own etcd, and a kube-controller-manager
/// with the namespace and garbage-collector controllers.
/// The Services' range; its first address is the `kubernetes` Service's.
const SERVICE_RANGE: &str = "10.0.0.0/24";
/// The `kubernetes` Service's ClusterIP: pods reach the apiserver there.
pub const SERVICE_IP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 0, 0, 1);
/// What a ground with a node runs in kube-controller-manager.
const NODE_CONTROLLERS: &str = "--controllers=namespace-controller,garbage-collector-controller,\
deployment-controller,replicaset-controller,endpoints-controller,endpointslice-controller,\
serviceaccount-controller,root-ca-certificate-publisher-controller,node-lifecycle-controller";

#[derive(Debug)]
pub struct Kube {
    // Dropped in order: the controller manager, then the apiserver, then etcd.
    controller_manager: Process,
    apiserver: Process,
    etcd: Process,
    /// Admin kubeconfig (client cert in `system:masters`).
    pub kubeconfig: PathBuf,
    /// `https://127.0.0.1:PORT`
    pub server: String,
    /// PEM of the CA that signed the serving and client certificates.
    pub ca_file: PathBuf,
    dir: tempfile::TempDir,
}

impl Kube {
    pub fn start() -> Result<Kube> {
        Kube::launch(false)
    }

    /// With `for_node`, the apiserver and controllers a node needs as well:
    /// ServiceAccount admission (projected tokens), the Node authorizer, and
    /// the controllers behind Deployments, Service endpoints, namespaces'
    /// root CA and node readiness.
    pub(crate) fn launch(for_node: bool) -> Result<Kube> {
        let tools = Tools::locate()?;
        let dir = ground_dir("kube")?;
        let d = dir.path();
        let certs = Certs::write(d)?;

        let (etcd, client_url) = start_etcd(tools, d)?;
        let port = free_port()?;
        let server = format!("https://127.0.0.1:{port}");
        let api_cmd = apiserver_command(tools, d, &certs, (&client_url, port), for_node);
        let mut apiserver =
            Process::spawn("kube-apiserver", api_cmd, &d.join("kube-apiserver.log"))?;

        let kubeconfig = d.join("kubeconfig");
        fs::write(
            &kubeconfig,
            kubeconfig_yaml(&server, &certs.ca_cert, &certs.admin_cert, &certs.admin_key),
        )?;
        let kubectl = tools.kubectl.clone();
        let kc = kubeconfig.clone();
        apiserver.wait_ready(|| {
            Command::new(&kubectl)
                .arg(format!("--kubeconfig={}", kc.display()))
                .args(["get", "--raw=/readyz", "--request-timeout=2s"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        })?;

        // Namespace deletion and garbage collection exist only here. It needs
        // no serving port: the tests see its work in the apiserver.
        let mut cm_cmd = Command::new(&tools.kube_controller_manager);
        cm_cmd
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(if for_node {
                NODE_CONTROLLERS
            } else {
                "--controllers=namespace-controller,garbage-collector-controller"
            })
            .arg(format!("--root-ca-file={}", certs.ca_cert.display()))
            .arg("--leader-elect=false")
            .arg("--secure-port=0")
            .arg("--use-service-account-credentials=false")
            .arg("--v=1");
        let mut controller_manager = Process::spawn(
            "kube-controller-manager",
            cm_cmd,
            &d.join("kube-controller-manager.log"),
        )?;
        controller_manager.check_alive()?;
        Ok(Kube {
            controller_manager,
            apiserver,
            etcd,
            kubeconfig,
            server,
            ca_file: certs.ca_cert,
            dir,
        })
    }

    /// One apiserver per test process, started on a thread that lives as long
    /// as the process (so PDEATHSIG fires only when the process ends).
    pub fn shared() -> Result<&'static Kube> {
        static SHARED: OnceLock<std::result::Result<&'static Kube, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| {
                let (tx, rx) = std::sync::mpsc::channel();
                std::thread::Builder::new()
                    .name("testground-kube".into())
                    .spawn(move || {
                        let started = Kube::start().map(|k| &*Box::leak(Box::new(k)));
                        let _ = tx.send(started.map_err(|e| format!("{e:#}")));
                        loop {
                            std::thread::park();
                        }
                    })
                    .map_err(|e| e.to_string())?;
                rx.recv().map_err(|e| e.to_string())?
            })
            .clone()
            .map_err(|e| anyhow!("{e}"))
    }

    /// A `kubectl` command using the admin kubeconfig.
    pub fn kubectl(&self) -> Command {
        let kubectl = Tools::locate()
            .map(|t| t.kubectl.clone())
            .unwrap_or_else(|_| "kubectl".into());
        let mut cmd = Command::new(kubectl);
        cmd.arg(format!("--kubeconfig={}", self.kubeconfig.display()));
        cmd
    }

    /// Writes a kubeconfig that authenticates with `token` (e.g. from
    /// `kubectl create token`) instead of the admin certificate.
    pub fn token_kubeconfig(&self, name: &str, token: &str) -> Result<PathBuf> {
        let path = self.dir.path().join(format!("kubeconfig-{name}"));
        let yaml = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: ground\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: {name}\n  user:\n    token: {token}\ncontexts:\n- name: ground\n  context: {{cluster: ground, user: {name}}}\ncurrent-context: ground\n",
            self.server,
            self.ca_file.display()
        );
        fs::write(&path, yaml)?;
        Ok(path)
    }

    /// A kubeconfig for the node's kubelet (its own certificate) reaching
    /// the apiserver at `server`.
    pub(crate) fn node_kubeconfig(&self, server: &str) -> Result<PathBuf> {
        let d = self.dir.path();
        let path = d.join("kubeconfig-node");
        fs::write(
            &path,
            kubeconfig_yaml(
                server,
                &self.ca_file,
                &d.join("node.crt"),
                &d.join("node.key"),
            ),
        )?;
        Ok(path)
    }

    /// Stops kube-controller-manager (e.g. so that nothing re-creates the
    /// pods a node's teardown removes).
    pub(crate) fn stop_controllers(&mut self) {
        self.controller_manager.kill();
    }

    /// The apiserver's, etcd's and the controller manager's PIDs, in that order.
    pub fn pids(&self) -> [u32; 3] {
        [
            self.apiserver.pid(),
            self.etcd.pid(),
            self.controller_manager.pid(),
        ]
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

fn kubeconfig_yaml(server: &str, ca: &Path, cert: &Path, key: &Path) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: ground\n  cluster:\n    server: {server}\n    certificate-authority: {}\nusers:\n- name: admin\n  user:\n    client-certificate: {}\n    client-key: {}\ncontexts:\n- name: ground\n  context: {{cluster: ground, user: admin, namespace: default}}\ncurrent-context: ground\n",
        ca.display(),
        cert.display(),
        key.display()
    )
}

struct Certs {
    ca_cert: PathBuf,
    serving_cert: PathBuf,
    serving_key: PathBuf,
    admin_cert: PathBuf,
    admin_key: PathBuf,
    node_cert: PathBuf,
    node_key: PathBuf,
    sa_key: PathBuf,
    sa_public: PathBuf,
}

impl Certs {
    fn write(dir: &Path) -> Result<Certs> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "byoc-testground-ca");
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let mut serving = CertificateParams::new(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            SERVICE_IP.to_string(),
            "kubernetes.default.svc".to_string(),
        ])?;
        serving
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        let serving_key = KeyPair::generate()?;
        let serving_cert = serving.signed_by(&serving_key, &issuer)?;

        let mut admin = CertificateParams::new(Vec::<String>::new())?;
        admin.distinguished_name.push(DnType::CommonName, "admin");
        admin
            .distinguished_name
            .push(DnType::OrganizationName, "system:masters");
        let admin_key = KeyPair::generate()?;
        let admin_cert = admin.signed_by(&admin_key, &issuer)?;

        // The node's kubelet: its user and group as the Node authorizer expects.
        let mut node = CertificateParams::new(Vec::<String>::new())?;
        node.distinguished_name
            .push(DnType::CommonName, format!("system:node:{}", node::NAME));
        node.distinguished_name
            .push(DnType::OrganizationName, "system:nodes");
        let node_key = KeyPair::generate()?;
        let node_cert = node.signed_by(&node_key, &issuer)?;

        let sa_key = KeyPair::generate()?;

        let out = Certs {
            ca_cert: dir.join("ca.crt"),
            serving_cert: dir.join("serving.crt"),
            serving_key: dir.join("serving.key"),
            admin_cert: dir.join("admin.crt"),
            admin_key: dir.join("admin.key"),
            node_cert: dir.join("node.crt"),
            node_key: dir.join("node.key"),
            sa_key: dir.join("sa.key"),
            sa_public: dir.join("sa.pub"),
        };
        fs::write(&out.ca_cert, ca_cert.pem())?;
        fs::write(&out.serving_cert, serving_cert.pem())?;
        fs::write(&out.serving_key, serving_key.serialize_pem())?;
        fs::write(&out.admin_cert, admin_cert.pem())?;
        fs::write(&out.admin_key, admin_key.serialize_pem())?;
        fs::write(&out.node_cert, node_cert.pem())?;
        fs::write(&out.node_key, node_key.serialize_pem())?;
        fs::write(&out.sa_key, sa_key.serialize_pem())?;
        fs::write(&out.sa_public, sa_key.public_key_pem())?;
        Ok(out)
    }
}

/// A moto server (AWS API emulator) on its own port.
#[derive(Debug)]
pub struct Moto {
    process: Process,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Moto {
    pub fn start() -> Result<Moto> {
        let tools = Tools::locate()?;
        let dir = ground_dir("moto")?;
        let port = free_port()?;
        // moto's server with its tags indexed (`testground/moto_server.py`
        // says why), on the venv's Python.
        let mut cmd = Command::new(tools.moto_server.with_file_name("python3"));
        cmd.arg(repo_root().join("testground/moto_server.py"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        let mut process = Process::spawn("moto", cmd, &dir.path().join("moto.log"))?;
        process
            .wait_ready(|| http_request(port, "GET", "/moto-api/", "").is_ok_and(|s| s < 500))?;
        Ok(Moto {
            process,
            port,
            _dir: dir,
        })
    }

    /// `http://127.0.0.1:PORT`, for `AWS_ENDPOINT_URL`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Drops all of moto's state.
    pub fn reset(&self) -> Result<()> {
        let status = http_request(self.port, "POST", "/moto-api/reset", "")?;
        if status != 200 {
            bail!("moto reset answered HTTP {status}");
        }
        Ok(())
    }

    /// Turns on moto's IAM enforcement: from now on every request must be
    /// signed with keys moto issued, and is checked against IAM policies and
    /// role trust policies (including `sts:ExternalId` conditions).
    pub fn enforce_iam(&self) -> Result<()> {
        let status = http_request(self.port, "POST", "/moto-api/reset-auth", "0")?;
        if status != 200 {
            bail!("moto reset-auth answered HTTP {status}");
        }
        Ok(())
    }

    /// A public image of `owner` (another account, or `aws-marketplace`'s
    /// sellers) in `account`'s `region`, made like `source`: moto holds only
    /// Amazon's. Its ID.
    pub fn foreign_image(
        &self,
        account: &str,
        region: &str,
        owner: &str,
        source: &str,
    ) -> Result<String> {
        let body = serde_json::json!({"account": account, "region": region, "owner": owner, "source": source});
        let (status, text) = http_exchange(
            self.port,
            "POST",
            "/moto-api/byoc/foreign-image",
            &body.to_string(),
        )?;
        if status != 200 {
            bail!("moto's foreign-image answered HTTP {status}: {text}");
        }
        let answer: serde_json::Value = serde_json::from_str(&text)?;
        answer["imageId"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("moto's foreign-image gave no imageId: {text}"))
    }
}

/// The value of `series` (a metric name with its labels, as printed) in a
/// Prometheus text exposition; 0 when absent. With no labels given, the
/// samples of every label set are summed.
pub fn metric_sample(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(name, _)| {
            *name == series || (!series.contains('{') && name.starts_with(&format!("{series}{{")))
        })
        .filter_map(|(_, v)| v.parse::<f64>().ok())
        .fold(0.0, |a, b| a + b)
}

/// A small HTTP/1.1 request on loopback; returns the status code.
pub fn http_request(port: u16, method: &str, path: &str, body: &str) -> Result<u16> {
    http_exchange(port, method, path, body).map(|(status, _)| status)
}

/// `GET path` on loopback; returns the status code and the body.
pub fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    http_exchange(port, "GET", path, "")
}

fn http_exchange(port: u16, method: &str, path: &str, body: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("no HTTP status in the answer from port {port}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// etcd for the ground, ready, and its client URL.
fn start_etcd(tools: &Tools, d: &Path) -> Result<(Process, String)> {
    let (client_port, peer_port) = (free_port()?, free_port()?);
    let client_url = format!("http://127.0.0.1:{client_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let mut etcd_cmd = Command::new(&tools.etcd);
    etcd_cmd
        .arg("--name=ground")
        .arg(format!("--data-dir={}", d.join("etcd").display()))
        .arg(format!("--listen-client-urls={client_url}"))
        .arg(format!("--advertise-client-urls={client_url}"))
        .arg(format!("--listen-peer-urls={peer_url}"))
        .arg(format!("--initial-advertise-peer-urls={peer_url}"))
        .arg(format!("--initial-cluster=ground={peer_url}"))
        .arg("--unsafe-no-fsync=true")
        .arg("--log-level=warn");
    let mut etcd = Process::spawn("etcd", etcd_cmd, &d.join("etcd.log"))?;
    etcd.wait_ready(|| port_open(client_port))?;

    Ok((etcd, client_url))
}

/// The ground's kube-apiserver, on `port` over etcd at `client_url`; with
/// the Node authorizer and ServiceAccount admission when it serves a node.
fn apiserver_command(
    tools: &Tools,
    d: &Path,
    certs: &Certs,
    (client_url, port): (&str, u16),
    for_node: bool,
) -> Command {
    let server = format!("https://127.0.0.1:{port}");
    let mut api_cmd = Command::new(&tools.kube_apiserver);
    api_cmd
        .arg(format!("--etcd-servers={client_url}"))
        .arg("--advertise-address=127.0.0.1")
        .arg("--bind-address=127.0.0.1")
        .arg(format!("--secure-port={port}"))
        .arg(format!(
            "--cert-dir={}",
            d.join("apiserver-certs").display()
        ))
        .arg(format!("--tls-cert-file={}", certs.serving_cert.display()))
        .arg(format!(
            "--tls-private-key-file={}",
            certs.serving_key.display()
        ))
        .arg(format!("--client-ca-file={}", certs.ca_cert.display()))
        .arg(format!("--service-account-issuer={server}"))
        .arg(format!(
            "--service-account-key-file={}",
            certs.sa_public.display()
        ))
        .arg(format!(
            "--service-account-signing-key-file={}",
            certs.sa_key.display()
        ))
        .arg(format!("--service-cluster-ip-range={SERVICE_RANGE}"))
        .arg("--allow-privileged=true")
        .arg("--enable-priority-and-fairness=false")
        .arg("--v=1");
    if for_node {
        api_cmd.arg("--authorization-mode=Node,RBAC");
    } else {
        api_cmd
            .arg("--authorization-mode=RBAC")
            .arg("--disable-admission-plugins=ServiceAccount");
    }
    api_cmd
}
