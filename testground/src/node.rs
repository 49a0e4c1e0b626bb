//! A node of the ground, as the operator's users run it: kubelet with
//! containerd's CRI (runc underneath, CNI's bridge for the pod network)
//! inside a network namespace the ground makes, registered with a control
//! plane of its own that has what a node needs (see [`Kube`]), and
//! kube-scheduler placing pods on it.
//!
//! The namespace holds the node's address, the `kubernetes` Service's
//! ClusterIP (where pods find the apiserver, as kube-proxy would route it:
//! a [`Bridge`] to the apiserver on loopback) and the pods' bridge. The
//! kubelet refuses a loopback node IP, and nothing of the node reaches the
//! machine's own interfaces.
//!
//! Dropping the node removes its pods as the kubelet does (sandboxes
//! stopped, their network namespaces and mounts released), then stops the
//! kubelet and containerd and deletes the namespace.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};

use crate::netns::{Bridge, Netns};
use crate::{ground_dir, Kube, Process, Tools, SERVICE_IP};

/// The node's name (its kubelet's certificate says `system:node:NAME`).
pub const NAME: &str = "ground-node";
/// The node's address, inside its namespace.
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 89, 0, 2);
/// The pods' network (CNI's bridge and host-local addresses).
const POD_SUBNET: &str = "10.88.0.0/24";
/// The containerd namespace the CRI keeps pods' containers and images in.
const CRI_NAMESPACE: &str = "k8s.io";
/// How long pods may take to go when the node is torn down.
const TEARDOWN_DEADLINE: Duration = Duration::from_secs(60);

pub struct Node {
    kubelet: Process,
    containerd: Process,
    scheduler: Process,
    bridges: Mutex<Vec<Bridge>>,
    apiserver: Bridge,
    pub kube: Kube,
    netns: Arc<Netns>,
    socket: PathBuf,
    dir: tempfile::TempDir,
}

impl Node {
    /// A control plane, the node's namespace, containerd, the kubelet and
    /// the scheduler; returns once the node is Ready with no taint.
    pub fn start() -> Result<Node> {
        let tools = Tools::locate()?;
        let kube = Kube::launch(true)?;
        let dir = ground_dir("node")?;
        let d = dir.path().to_path_buf();
        let netns = Arc::new(Netns::create(&[SERVICE_IP, NODE_IP])?);
        let apiserver = netns.bridge(
            SocketAddr::from((SERVICE_IP, 443)),
            crate::port_of(&kube.server)?,
        )?;

        let socket = d.join("containerd.sock");
        write_runtime_config(&d, &socket, &tools.pause_ref)?;
        let mut cmd = Command::new(&tools.containerd);
        cmd.arg("--config").arg(d.join("containerd.toml"));
        netns.enter(&mut cmd);
        let mut containerd = Process::spawn("containerd (node)", cmd, &d.join("containerd.log"))?;
        let ctr = Ctr {
            program: tools.ctr.clone(),
            socket: socket.clone(),
        };
        containerd.wait_ready(|| socket.exists() && ctr.run(&["version"]).is_ok())?;
        ctr.run(&["images", "import", &tools.pause_image.to_string_lossy()])?;

        let kubeconfig = kube.node_kubeconfig(&format!("https://{SERVICE_IP}:443"))?;
        write_kubelet_config(&d, &socket, &kube.ca_file)?;
        let mut cmd = Command::new(&tools.kubelet);
        cmd.arg(format!("--config={}", d.join("kubelet.yaml").display()))
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!("--root-dir={}", d.join("kubelet").display()))
            .arg(format!("--cert-dir={}", d.join("kubelet-pki").display()))
            .arg(format!("--node-ip={NODE_IP}"))
            .arg(format!("--hostname-override={NAME}"))
            .arg("--v=1");
        netns.enter(&mut cmd);
        let mut kubelet = Process::spawn("kubelet", cmd, &d.join("kubelet.log"))?;

        let mut cmd = Command::new(&tools.kube_scheduler);
        cmd.arg(format!("--kubeconfig={}", kube.kubeconfig.display()))
            .arg("--leader-elect=false")
            .arg("--secure-port=0");
        let scheduler = Process::spawn("kube-scheduler", cmd, &d.join("kube-scheduler.log"))?;

        let ready = "{.status.conditions[?(@.type==\"Ready\")].status}/{.spec.taints}";
        kubelet.wait_ready(|| {
            kube.kubectl()
                .args(["get", "node", NAME, "-o", &format!("jsonpath={ready}")])
                .stderr(Stdio::null())
                .output()
                .is_ok_and(|o| o.stdout == b"True/")
        })?;
        Ok(Node {
            kubelet,
            containerd,
            scheduler,
            bridges: Mutex::default(),
            apiserver,
            kube,
            netns,
            socket,
            dir,
        })
    }

    /// Its working directory (logs; pods' logs under `pod-logs/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn ctr(&self) -> Ctr {
        Ctr {
            program: Tools::locate()
                .map(|t| t.ctr.clone())
                .unwrap_or_else(|_| "ctr".into()),
            socket: self.socket.clone(),
        }
    }

    /// Loads an OCI image tarball into the node's CRI under `name`, with
    /// its digest reference (`name@sha256:…`) so pods can name it by digest.
    pub fn load_image(&self, tarball: &Path, name: &str) -> Result<()> {
        self.ctr().run(&[
            "images",
            "import",
            "--base-name",
            name,
            "--digests",
            &tarball.to_string_lossy(),
        ])?;
        Ok(())
    }

    /// Where the node's pods reach `loopback_port` of the machine's
    /// loopback (e.g. the AWS proxy): `NODE_IP:port`, for as long as the
    /// node lives.
    pub fn expose(&self, loopback_port: u16) -> Result<SocketAddr> {
        let at = SocketAddr::from((NODE_IP, loopback_port));
        let bridge = self.netns.bridge(at, loopback_port)?;
        self.bridges
            .lock()
            .map_err(|_| anyhow!("bridges lock poisoned"))?
            .push(bridge);
        Ok(at)
    }

    /// A loopback port that reaches `inside` (e.g. a pod's metrics port);
    /// it stops when the returned bridge drops.
    pub fn reach(&self, inside: SocketAddr) -> Result<Bridge> {
        self.netns.reach(inside)
    }

    /// Cuts `pod_ip` off the apiserver: its open and new connections stay
    /// up but carry nothing, as behind a partition.
    pub fn cut_from_apiserver(&self, pod_ip: IpAddr) {
        self.apiserver.cut(pod_ip);
    }

    /// The PID, on this machine, of a container's process
    /// (`containerd://ID` as a pod's status names it, or the bare ID).
    pub fn container_pid(&self, container: &str) -> Result<u32> {
        let id = container.trim_start_matches("containerd://");
        let tasks = self.ctr().run(&["tasks", "ls"])?;
        tasks
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                Some((f.next()?, f.next()?))
            })
            .find(|(task, _)| *task == id)
            .and_then(|(_, pid)| pid.parse().ok())
            .ok_or_else(|| anyhow!("no running task for container {id}:\n{tasks}"))
    }

    /// Freezes a container (the runtime's pause: its cgroup frozen), as a
    /// stalled node would.
    pub fn freeze_container(&self, container: &str) -> Result<()> {
        let id = container.trim_start_matches("containerd://");
        self.ctr().run(&["tasks", "pause", id]).map(drop)
    }

    pub fn thaw_container(&self, container: &str) -> Result<()> {
        let id = container.trim_start_matches("containerd://");
        self.ctr().run(&["tasks", "resume", id]).map(drop)
    }

    /// What the containers of pod `namespace/name` wrote, all attempts.
    pub fn pod_logs(&self, namespace: &str, name: &str) -> String {
        let prefix = format!("{namespace}_{name}_");
        let mut out = String::new();
        let Ok(pods) = std::fs::read_dir(self.dir.path().join("pod-logs")) else {
            return out;
        };
        for pod in pods.flatten() {
            if !pod.file_name().to_string_lossy().starts_with(&prefix) {
                continue;
            }
            for container in std::fs::read_dir(pod.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                for log in std::fs::read_dir(container.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    out.push_str(&std::fs::read_to_string(log.path()).unwrap_or_default());
                }
            }
        }
        out
    }

    /// Removes every pod as the kubelet does, then whatever is left.
    fn teardown(&mut self) {
        self.kube.stop_controllers();
        let _ = self
            .kube
            .kubectl()
            .args(["delete", "pods", "--all", "--all-namespaces"])
            .args(["--force", "--grace-period=0", "--wait=false"])
            .arg("--request-timeout=10s")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let ctr = self.ctr();
        let deadline = Instant::now() + TEARDOWN_DEADLINE;
        while Instant::now() < deadline && !ctr.sandboxes_gone() {
            std::thread::sleep(Duration::from_millis(200));
        }
        self.kubelet.kill();
        self.scheduler.kill();
        ctr.remove_all();
        self.containerd.kill();
        unmount_under(self.dir.path());
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// `ctr` against the node's containerd, in the CRI's namespace.
struct Ctr {
    program: PathBuf,
    socket: PathBuf,
}

impl Ctr {
    fn run(&self, args: &[&str]) -> Result<String> {
        crate::containerd::ctr(&self.program, &self.socket, CRI_NAMESPACE, args)
    }

    /// No task runs (every pod's sandbox stopped), or containerd answers no more.
    fn sandboxes_gone(&self) -> bool {
        self.run(&["tasks", "ls"])
            .map(|t| {
                t.lines()
                    .skip(1)
                    .all(|l| l.split_whitespace().nth(2) == Some("STOPPED"))
            })
            .unwrap_or(true)
    }

    /// Kills and deletes every task and container left.
    fn remove_all(&self) {
        let Ok(containers) = self.run(&["containers", "ls", "-q"]) else {
            return;
        };
        for id in containers.lines().filter(|l| !l.is_empty()) {
            let _ = self.run(&["tasks", "kill", "-s", "SIGKILL", id]);
            let _ = self.run(&["tasks", "delete", "-f", id]);
            let _ = self.run(&["containers", "delete", id]);
        }
    }
}

/// Unmounts (lazily, innermost first) whatever is still mounted under
/// `dir`: the kubelet's volumes and its root, containerd's pod network
/// namespaces and root filesystems.
fn unmount_under(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = dir.to_string_lossy().into_owned();
    let mut points: Vec<&str> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let Ok(c) = std::ffi::CString::new(p) else {
            continue;
        };
        // SAFETY: umount2(2) on a path string we own.
        unsafe {
            libc::umount2(c.as_ptr(), libc::MNT_DETACH);
        }
    }
}

fn write_runtime_config(d: &Path, socket: &Path, pause_ref: &str) -> Result<()> {
    let cni = d.join("cni");
    std::fs::create_dir_all(&cni)?;
    std::fs::write(
        cni.join("10-pods.conflist"),
        format!(
            r#"{{"cniVersion":"0.4.0","name":"pods","plugins":[{{"type":"bridge","bridge":"pods0","isGateway":true,"ipMasq":false,"ipam":{{"type":"host-local","dataDir":"{}","ranges":[[{{"subnet":"{POD_SUBNET}"}}]],"routes":[{{"dst":"0.0.0.0/0"}}]}}}},{{"type":"loopback"}}]}}"#,
            d.join("ipam").display()
        ),
    )?;
    // The CRI on; negative OOM scores are clamped to containerd's own (root
    // here may not lower them); pods' network namespaces under the state
    // directory, so a teardown finds them.
    std::fs::write(
        d.join("containerd.toml"),
        format!(
            r#"version = 2
root = "{root}"
state = "{state}"
[grpc]
  address = "{socket}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause_ref}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
"#,
            root = d.join("root").display(),
            state = d.join("state").display(),
            socket = socket.display(),
            cni = cni.display(),
        ),
    )?;
    Ok(())
}

fn write_kubelet_config(d: &Path, socket: &Path, ca: &Path) -> Result<()> {
    // cgroupfs (cgroup v1, no systemd here), no QoS cgroup tree, no swap
    // check; eviction and image GC thresholds out of reach, so a full disk
    // on the test machine does not evict the operator or remove its image.
    // In-place resize off: without pod cgroups the kubelet's resize path
    // dereferences none (a nil-pointer panic in 1.33) when containerd 1.6
    // reports no resources for a running container.
    std::fs::write(
        d.join("kubelet.yaml"),
        format!(
            r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: "{NODE_IP}"
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
containerRuntimeEndpoint: "unix://{socket}"
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: false}}
  x509: {{clientCAFile: "{ca}"}}
authorization: {{mode: AlwaysAllow}}
evictionHard: {{memory.available: "1Mi", nodefs.available: "1%", imagefs.available: "1%"}}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
podLogsDir: "{logs}"
resolvConf: ""
healthzPort: 0
readOnlyPort: 0
fileCheckFrequency: 10s
featureGates: {{InPlacePodVerticalScaling: false}}
"#,
            socket = socket.display(),
            ca = ca.display(),
            logs = d.join("pod-logs").display(),
        ),
    )?;
    Ok(())
}
