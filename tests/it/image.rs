//! The operator's image as a node runs it: assembled by `hack/image.sh`
//! from the binary the tests run (the debug build: a release build would
//! add a cold compile to CI), imported into a containerd of the test's own
//! and run by digest under runc, as uid 65532 on a read-only root.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde_json::Value;

use crate::clusters::{
    delete_leaves_nothing, ready_account, small_cluster_manifest, wait_running, WAIT,
};
use crate::support::{
    eventually, ground_with_crds, kubectl_apply, record_figure, unique_name, Edited, Ground,
};

/// Builds the image from the tests' binary into `out`: its digest.
pub(crate) fn build_image(out: &Path) -> Result<String> {
    let root = testground::repo_root();
    let run = std::process::Command::new("bash")
        .arg(root.join("hack/image.sh"))
        .arg(env!("CARGO_BIN_EXE_byoc-operator"))
        .arg(out)
        .output()?;
    anyhow::ensure!(
        run.status.success(),
        "hack/image.sh: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    Ok(String::from_utf8_lossy(&run.stdout).trim().to_string())
}

/// The Dockerfile's last stage: `(USER, EXPOSE, ENTRYPOINT, CMD)`.
fn dockerfile_runtime() -> Result<(String, String, Value, Value)> {
    let text = std::fs::read_to_string(testground::repo_root().join("Dockerfile"))?;
    let last = text
        .rsplit_once("\nFROM ")
        .map(|(_, stage)| stage)
        .context("no stage")?;
    let directive = |name: &str| -> Result<String> {
        last.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .map(|v| v.trim().to_string())
            .with_context(|| format!("no {name} in the Dockerfile's last stage"))
    };
    Ok((
        directive("USER")?,
        directive("EXPOSE")?,
        serde_json::from_str(&directive("ENTRYPOINT")?)?,
        serde_json::from_str(&directive("CMD")?)?,
    ))
}

#[test]
fn the_image_built_here_is_the_one_the_dockerfile_describes() -> Result<()> {
    let out = std::env::temp_dir().join(unique_name("byoc-image"));
    let digest = build_image(&out)?;
    let again = build_image(&out)?;
    assert!(
        digest.starts_with("sha256:") && digest == again,
        "not reproducible: {digest} then {again}"
    );
    let config: Value = serde_json::from_str(&std::fs::read_to_string(out.join("config.json"))?)?;
    std::fs::remove_dir_all(&out)?;
    let c = &config["config"];
    let (user, expose, entrypoint, cmd) = dockerfile_runtime()?;
    assert_eq!(c["User"], user.as_str(), "User {} vs {user}", c["User"]);
    assert!(
        c["ExposedPorts"].get(format!("{expose}/tcp")).is_some(),
        "ExposedPorts {} vs EXPOSE {expose}",
        c["ExposedPorts"]
    );
    assert_eq!(
        c["Entrypoint"], entrypoint,
        "Entrypoint {}",
        c["Entrypoint"]
    );
    assert_eq!(c["Cmd"], cmd, "Cmd {}", c["Cmd"]);
    Ok(())
}

/// A kubeconfig and its files the container's user (65532) can read:
/// copies of the ground's admin credentials in `dir`.
fn readable_kubeconfig(g: &Ground, dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    let mut text = std::fs::read_to_string(&g.kube.kubeconfig)?;
    for name in ["ca.crt", "admin.crt", "admin.key"] {
        let from = g.kube.dir().join(name);
        let to = dir.join(name);
        std::fs::copy(&from, &to)?;
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o644))?;
        text = text.edited(&from.display().to_string(), &to.display().to_string());
    }
    let path = dir.join("kubeconfig");
    std::fs::write(&path, text)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
    Ok(path)
}

/// `/proc/PID/status`'s `Uid:` line: real, effective, saved, filesystem.
pub(crate) fn uids(pid: u32) -> Result<Vec<u32>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .context("no Uid line")?
        .split_whitespace()
        .filter_map(|u| u.parse().ok())
        .collect())
}

/// Whether the process's root filesystem is mounted read-only (its
/// `/proc/PID/mountinfo` entry for `/`).
pub(crate) fn root_read_only(pid: u32) -> Result<bool> {
    let info = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))?;
    let root = info
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/"))
        .context("no root mount")?;
    let options = root.split_whitespace().nth(5).unwrap_or_default();
    Ok(options.split(',').any(|o| o == "ro"))
}

#[tokio::test]
async fn the_operator_image_runs_as_nonroot_on_a_read_only_root_and_reconciles() -> Result<()> {
    let g = ground_with_crds("image").await?;
    let runtime = testground::containerd::Containerd::start()?;
    let image_dir = runtime.dir().join("image");
    let digest = build_image(&image_dir)?;
    let imported = runtime.import(&image_dir.join("image.tar"))?;
    assert!(imported.contains(&digest), "imported: {imported}");
    // Referenced by digest, as the chart's image.digest does.
    let reference = format!("byoc.dev/byoc-operator@{digest}");
    runtime.ctr(&["images", "tag", "byoc.dev/byoc-operator:local", &reference])?;
    let creds = runtime.dir().join("creds");
    let kubeconfig = readable_kubeconfig(&g, &creds)?;
    let port = testground::free_port()?;
    let metrics = format!("127.0.0.1:{port}");
    let ns = g.namespace.clone();
    let endpoint = g.proxy.endpoint();
    let kubeconfig_s = kubeconfig.display().to_string();
    runtime.run(
        &reference,
        "operator",
        &[&creds],
        &[
            ("KUBECONFIG", kubeconfig_s.as_str()),
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("BYOC_INSTALLATION_NAMESPACE", ns.as_str()),
        ],
        &[
            "/usr/local/bin/byoc-operator",
            "run",
            "--namespace",
            &ns,
            "--metrics-addr",
            &metrics,
            "--progress-poll",
            "1s",
        ],
    )?;
    eventually("the container's /readyz", WAIT, || async {
        Ok(testground::http_get(port, "/readyz")
            .ok()
            .filter(|(status, _)| *status == 200)
            .map(|_| ()))
    })
    .await?;
    let pid = runtime.pid("operator")?;
    let ids = uids(pid)?;
    assert!(
        !ids.is_empty() && ids.iter().all(|u| *u == 65532),
        "the container's process runs as {ids:?}"
    );
    assert!(root_read_only(pid)?, "the container's root is writable");

    // The operator in the container does its work.
    ready_account(&g).await?;
    kubectl_apply(&g, &small_cluster_manifest("boxed", "10.70.0.0/16"))?;
    let cc = wait_running(&g, "boxed", |_| true).await?;
    let uid = cc.metadata.uid.clone().unwrap_or_default();
    delete_leaves_nothing(&g, "boxed", &uid).await?;
    let (status, text) = testground::http_get(port, "/metrics")?;
    assert!(
        status == 200 && text.contains("byoc_reconciles"),
        "no metrics from the container"
    );
    runtime.remove("operator");
    record_figure(serde_json::json!({
        "suite": "image",
        "setup": "the image assembled by hack/image.sh from the tests' binary (no registry), imported into a containerd of the test's own and run by digest under runc, host network, read-only root",
        "n": 1,
        "figure": format!("{digest}: the process ran as uid {ids:?} on a read-only root; ready through /readyz; a cluster to running and deleted to zero"),
        "pass": true,
    }))
}
