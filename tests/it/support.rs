//! What every integration test needs: a namespace on the shared apiserver,
//! clients, its own moto, and waiting on conditions with a deadline.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use testground::{Kube, Moto};

/// A test's slice of the ground.
pub struct Ground {
    pub kube: &'static Kube,
    pub client: Client,
    pub namespace: String,
    pub moto: Moto,
}

impl Ground {
    /// A fresh namespace named after the test, and a moto of its own.
    pub async fn new(test: &str) -> Result<Ground> {
        let kube = tokio::task::spawn_blocking(Kube::shared).await??;
        let client = client_for(&kube.kubeconfig).await?;
        let namespace = unique_name(test);
        Api::<Namespace>::all(client.clone())
            .create(
                &PostParams::default(),
                &Namespace {
                    metadata: ObjectMeta {
                        name: Some(namespace.clone()),
                        ..Default::default()
                    },
                    ..Default::default()
                },
            )
            .await
            .with_context(|| format!("creating namespace {namespace}"))?;
        let moto = tokio::task::spawn_blocking(Moto::start).await??;
        Ok(Ground {
            kube,
            client,
            namespace,
            moto,
        })
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
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(self.moto.endpoint())
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_credential_types::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .load()
            .await
    }
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

/// `Err` unless `cond`, with `msg`.
pub fn ensure(cond: bool, msg: impl Into<String>) -> Result<()> {
    if cond {
        Ok(())
    } else {
        Err(anyhow!(msg.into()))
    }
}

/// Installs `crds/` into the shared apiserver (once per test process) and
/// waits until they are established.
pub async fn install_crds(g: &Ground) -> Result<()> {
    static DONE: std::sync::OnceLock<std::result::Result<(), String>> = std::sync::OnceLock::new();
    let kube = g.kube;
    tokio::task::spawn_blocking(move || {
        DONE.get_or_init(|| {
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
        })
        .clone()
        .map_err(|e| anyhow!(e))
    })
    .await?
}
