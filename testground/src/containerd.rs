//! A containerd of the test's own (its root, state and socket in a
//! temporary directory; runc underneath), to run the operator's image as a
//! node would: imported from its OCI tarball, addressed by digest.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};

use crate::{ground_dir, Process, Tools};

/// The containerd namespace the tests' containers live in.
const NAMESPACE: &str = "byoc";

/// `ctr` (the program at `program`) against the containerd at `socket`, in
/// containerd namespace `namespace`: its output.
pub(crate) fn ctr(program: &Path, socket: &Path, namespace: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .arg("-a")
        .arg(socket)
        .args(["-n", namespace])
        .args(args)
        .output()
        .context("running ctr")?;
    if !out.status.success() {
        bail!(
            "ctr {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub struct Containerd {
    _process: Process,
    socket: PathBuf,
    ctr: PathBuf,
    running: Mutex<Vec<String>>,
    dir: tempfile::TempDir,
}

impl Containerd {
    pub fn start() -> Result<Containerd> {
        let tools = Tools::locate()?;
        let dir = ground_dir("containerd")?;
        let root = dir.path();
        let socket = root.join("containerd.sock");
        let config = root.join("config.toml");
        // Only what running an image needs: no CRI (no kubelet here), no
        // metrics listener.
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{}\"\nstate = \"{}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{}\"\n",
                root.join("root").display(),
                root.join("state").display(),
                socket.display()
            ),
        )?;
        let mut cmd = Command::new(&tools.containerd);
        cmd.arg("--config").arg(&config);
        let mut process = Process::spawn("containerd", cmd, &root.join("containerd.log"))?;
        let ctr = tools.ctr.clone();
        let probe = socket.clone();
        process.wait_ready(|| {
            probe.exists()
                && Command::new(&ctr)
                    .arg("-a")
                    .arg(&probe)
                    .arg("version")
                    .output()
                    .is_ok_and(|o| o.status.success())
        })?;
        Ok(Containerd {
            _process: process,
            socket,
            ctr: tools.ctr.clone(),
            running: Mutex::default(),
            dir,
        })
    }

    /// `ctr ARGS` against this containerd, in the tests' namespace: its output.
    pub fn ctr(&self, args: &[&str]) -> Result<String> {
        ctr(&self.ctr, &self.socket, NAMESPACE, args)
    }

    /// Imports an OCI image layout tarball; the images it names by digest.
    pub fn import(&self, tarball: &Path) -> Result<String> {
        let path = tarball.to_string_lossy().to_string();
        self.ctr(&["images", "import", "--digests", &path])
    }

    /// Runs `image` as container `id`, detached, on the host's network,
    /// its root filesystem read-only, with `mounts` bound read-only at the
    /// same paths, `env`, and `args` as its process.
    pub fn run(
        &self,
        image: &str,
        id: &str,
        mounts: &[&Path],
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Result<()> {
        let mut all: Vec<String> = vec![
            "run".into(),
            "-d".into(),
            "--net-host".into(),
            "--read-only".into(),
        ];
        for m in mounts {
            all.push("--mount".into());
            all.push(format!(
                "type=bind,src={0},dst={0},options=rbind:ro",
                m.display()
            ));
        }
        for (k, v) in env {
            all.push("--env".into());
            all.push(format!("{k}={v}"));
        }
        all.push(image.into());
        all.push(id.into());
        all.extend(args.iter().map(|a| a.to_string()));
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        self.ctr(&refs)?;
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(id.to_string());
        Ok(())
    }

    /// The host PID of container `id`'s process.
    pub fn pid(&self, id: &str) -> Result<u32> {
        let listed = self.ctr(&["tasks", "ls"])?;
        listed
            .lines()
            .skip(1)
            .find_map(|l| {
                let mut f = l.split_whitespace();
                (f.next() == Some(id)).then(|| f.next().and_then(|p| p.parse().ok()))?
            })
            .with_context(|| format!("no task {id}: {listed}"))
    }

    /// Stops and removes container `id` (its runc shim goes with it).
    pub fn remove(&self, id: &str) {
        let _ = self.ctr(&["tasks", "kill", "-s", "SIGKILL", id]);
        for _ in 0..50 {
            if self.ctr(&["tasks", "delete", id]).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.ctr(&["containers", "delete", id]);
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|r| r != id);
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Containerd {
    /// Containers first: a shim outlives a containerd killed under it.
    fn drop(&mut self) {
        let running = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for id in running {
            self.remove(&id);
        }
    }
}
