//! How teams really delete things: a whole namespace at once, a GitOps prune
//! (`kubectl delete -f` of the manifest that created everything), and the
//! CloudAccount first while its clusters still run. kube-controller-manager
//! runs the namespace controller, so namespace deletion is the real one.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use byoc_operator::account::in_use::IN_USE_FINALIZER;
use byoc_operator::api::{AccountPhase, CloudAccount, ComputeCluster};
use k8s_openapi::api::core::v1::Secret;
use kube::api::DeleteParams;
use kube::{Api, ResourceExt};

use crate::clusters::{
    counts, delete_and_wait_gone, example_manifest, ground_with_account, patch_spec,
    small_cluster_manifest, wait_running, Counts,
};
use crate::support::{
    delete_namespace, ensure, eventually, install_crds, kubectl_apply, wait_namespace_gone, Ground,
    Operator, OperatorExt,
};

/// How long a namespace or a manifest may take to be deleted with everything
/// it made in AWS (the reference topology deletes in about 2 s; the rest is
/// the namespace controller's own retry pace).
const GONE_WITHIN: Duration = Duration::from_secs(180);

fn uid(cc: &ComputeCluster) -> Result<String> {
    cc.uid().context("a ComputeCluster without a UID")
}

fn held(finalizers: &[String]) -> bool {
    finalizers.iter().any(|f| f == IN_USE_FINALIZER)
}

/// Fails unless moto holds nothing carrying any of `uids`.
async fn nothing_left(g: &Ground, uids: &[String]) -> Result<()> {
    for uid in uids {
        let left = counts(g, uid).await?;
        ensure(
            left == Counts::default(),
            format!("cluster {uid} left behind: {left:?}"),
        )?;
    }
    Ok(())
}

/// Waits until the CloudAccount `acme` and its Secret `keys` are gone.
async fn wait_account_and_secret_gone(g: &Ground) -> Result<()> {
    let (accounts, secrets) = (g.api::<CloudAccount>(), g.api::<Secret>());
    eventually(
        "the account and its Secret gone",
        crate::clusters::WAIT,
        || async {
            Ok((accounts.get_opt("acme").await?.is_none()
                && secrets.get_metadata_opt("keys").await?.is_none())
            .then_some(()))
        },
    )
    .await
}

/// Waits until the CloudAccount reports `n` clusters using it.
async fn wait_users(api: &Api<CloudAccount>, name: &str, n: i32) -> Result<CloudAccount> {
    eventually(
        &format!("CloudAccount {name} used by {n}"),
        crate::clusters::WAIT,
        || async {
            let a = api.get(name).await?;
            let count = a.status.as_ref().and_then(|s| s.clusters);
            Ok((count == Some(n)).then_some(a))
        },
    )
    .await
}

#[tokio::test]
async fn deleting_the_namespace_removes_every_aws_resource_and_the_namespace() -> Result<()> {
    let (g, op) = ground_with_account("ns-delete", &[]).await?;
    kubectl_apply(
        &g,
        &example_manifest("big")?.replace("natGateways: single", "natGateways: perZone"),
    )?;
    kubectl_apply(&g, &small_cluster_manifest("small", "10.1.0.0/16"))?;
    let big = wait_running(&g, "big", |_| true).await?;
    let small = wait_running(&g, "small", |_| true).await?;
    let uids = [uid(&big)?, uid(&small)?];
    let before = counts(&g, &uids[0]).await?;
    ensure(
        before.nat_gateways == 2 && before.instances() == 4,
        format!("the NAT-per-zone cluster holds {before:?}"),
    )?;
    let account = wait_users(&g.api::<CloudAccount>(), "acme", 2).await?;
    ensure(
        held(account.finalizers()),
        "the used account is not protected",
    )?;

    // One command, as a team removes a namespace.
    let started = Instant::now();
    delete_namespace(&g)?;
    wait_namespace_gone(&g, GONE_WITHIN)
        .await
        .with_context(|| format!("operator log tail:\n{}", log_tail(&op)))?;
    println!(
        "namespace with 2 clusters deleted in {:?}",
        started.elapsed()
    );
    nothing_left(&g, &uids).await
}

#[tokio::test]
async fn deleting_the_applied_manifest_removes_everything() -> Result<()> {
    // The sandbox example, as one multi-document manifest a GitOps tool
    // applies and later prunes.
    let g = Ground::new("gitops-prune").await?;
    install_crds(&g).await?;
    let op = Operator::start(&g, &["--progress-poll", "1s"], &[])?;
    let dir = testground::repo_root().join("examples/sandbox");
    let mut docs = vec![];
    for file in [
        "00-secret.yaml",
        "10-cloudaccount.yaml",
        "20-computecluster.yaml",
    ] {
        docs.push(std::fs::read_to_string(dir.join(file))?);
    }
    let manifest = g.kube.dir().join(format!("{}.yaml", g.namespace));
    std::fs::write(&manifest, docs.join("\n---\n"))?;
    let run = |verb: &str, extra: &[&str]| -> Result<()> {
        let out = g
            .kube
            .kubectl()
            .args([verb, "-n", &g.namespace, "-f"])
            .arg(&manifest)
            .args(extra)
            .output()?;
        ensure(
            out.status.success(),
            format!("kubectl {verb}: {}", String::from_utf8_lossy(&out.stderr)),
        )
    };
    run("apply", &[])?;
    let demo = wait_running(&g, "demo", |_| true).await?;
    let uid = uid(&demo)?;

    // Everything at once; kubectl waits until every object is gone.
    let started = Instant::now();
    run(
        "delete",
        &[&format!("--timeout={}s", GONE_WITHIN.as_secs())],
    )
    .with_context(|| format!("operator log tail:\n{}", log_tail(&op)))?;
    println!("manifest deleted in {:?}", started.elapsed());
    ensure(
        g.api::<Secret>().get_opt("demo-aws-keys").await?.is_none()
            && g.api::<CloudAccount>().get_opt("demo").await?.is_none()
            && g.api::<ComputeCluster>().get_opt("demo").await?.is_none(),
        "kubectl returned with objects left",
    )?;
    nothing_left(&g, &[uid]).await
}

#[tokio::test]
async fn an_account_deleted_first_waits_for_its_clusters() -> Result<()> {
    let (g, op) = ground_with_account("account-first", &[]).await?;
    kubectl_apply(&g, &small_cluster_manifest("first", "10.2.0.0/16"))?;
    let first = wait_running(&g, "first", |_| true).await?;
    let accounts = g.api::<CloudAccount>();
    let secrets = g.api::<Secret>();
    wait_users(&accounts, "acme", 1).await?;

    accounts.delete("acme", &DeleteParams::default()).await?;
    secrets.delete("keys", &DeleteParams::default()).await?;
    let waiting = format!("waiting for 1 ComputeCluster: {}/first", g.namespace);
    eventually(
        "the account waiting for its cluster",
        crate::clusters::WAIT,
        || async {
            let a = accounts.get("acme").await?;
            let deleting = a.status.as_ref().and_then(|s| {
                s.conditions
                    .iter()
                    .find(|c| c.type_ == "Deleting" && c.status == "True")
            });
            Ok(deleting
                .is_some_and(|c| c.reason == "InUse" && c.message.starts_with(&waiting))
                .then_some(()))
        },
    )
    .await?;
    let secret = secrets.get_metadata("keys").await?;
    ensure(
        secret.metadata.deletion_timestamp.is_some() && held(secret.finalizers()),
        "the Secret of the account in use is not held",
    )?;

    // The cluster keeps working: it scales, with the account's credentials.
    patch_spec(
        &g,
        "first",
        serde_json::json!({"nodeGroups": [{"name": "workers", "instanceType": "t3.small", "count": 2, "subnets": "public"}]}),
    )
    .await?;
    wait_running(&g, "first", |cc| {
        cc.status
            .as_ref()
            .is_some_and(|s| s.node_groups.iter().any(|n| n.running == 2))
    })
    .await?;

    // A new cluster is refused the account being deleted, and is waited for.
    kubectl_apply(&g, &small_cluster_manifest("late", "10.3.0.0/16"))?;
    let clusters = g.api::<ComputeCluster>();
    eventually(
        "the late cluster refused",
        crate::clusters::WAIT,
        || async {
            let cc = clusters.get("late").await?;
            let status = cc.status.unwrap_or_default();
            let stalled = status.conditions.iter().any(|c| {
                c.type_ == "Stalled" && c.status == "True" && c.reason == "AccountDeleting"
            });
            Ok((stalled && status.aws_account_id.is_none()).then_some(()))
        },
    )
    .await?;
    let account = wait_users(&accounts, "acme", 2).await?;
    ensure(
        account.status.as_ref().and_then(|s| s.phase) == Some(AccountPhase::Ready),
        "the account stopped being ready while in use",
    )?;

    delete_and_wait_gone(&g, "late").await?;
    delete_and_wait_gone(&g, "first").await?;
    nothing_left(&g, &[uid(&first)?]).await?;
    wait_account_and_secret_gone(&g)
        .await
        .with_context(|| format!("operator log tail:\n{}", log_tail(&op)))
}

#[tokio::test]
async fn an_unused_account_and_its_secret_are_let_go() -> Result<()> {
    // The last cluster gone: the account and its Secret are let go while
    // the account stays ready for the next one.
    let (g, _op) = ground_with_account("account-release", &[]).await?;
    let accounts = g.api::<CloudAccount>();
    let secrets = g.api::<Secret>();
    kubectl_apply(&g, &small_cluster_manifest("solo", "10.4.0.0/16"))?;
    wait_running(&g, "solo", |_| true).await?;
    wait_users(&accounts, "acme", 1).await?;
    ensure(
        held(secrets.get_metadata("keys").await?.finalizers()),
        "the Secret of the used account is not held",
    )?;
    delete_and_wait_gone(&g, "solo").await?;
    let account = wait_users(&accounts, "acme", 0).await?;
    eventually(
        "the account and Secret let go",
        crate::clusters::WAIT,
        || async {
            let a = accounts.get("acme").await?;
            let s = secrets.get_metadata("keys").await?;
            Ok((!held(a.finalizers()) && !held(s.finalizers())).then_some(()))
        },
    )
    .await?;
    ensure(
        account.status.and_then(|s| s.phase) == Some(AccountPhase::Ready),
        "the account is no longer ready",
    )?;

    // Unused: deleted at once, the Secret too.
    accounts.delete("acme", &DeleteParams::default()).await?;
    secrets.delete("keys", &DeleteParams::default()).await?;
    wait_account_and_secret_gone(&g).await
}

#[tokio::test]
async fn a_deletion_blocked_by_what_is_not_the_clusters_says_so_and_finishes_after() -> Result<()> {
    let (g, op) = ground_with_account("blocked-delete", &[]).await?;
    // AWS's dependency checks, which moto lacks.
    g.proxy.set_faults(testground::Faults {
        dependencies: true,
        ..Default::default()
    });
    kubectl_apply(
        &g,
        &small_cluster_manifest("blocked", "10.6.0.0/16")
            .replace("natGateways: none", "natGateways: single"),
    )?;
    let cc = wait_running(&g, "blocked", |_| true).await?;
    let uid = uid(&cc)?;
    let network = cc.status.and_then(|s| s.network).context("no network")?;
    let vpc = network.vpc_id.context("no VPC")?;
    let subnet = network
        .subnets
        .first()
        .map(|s| s.id.clone())
        .context("no subnet")?;

    // What a workload's load balancer leaves behind: a security group and
    // a network interface in the cluster's subnet, not the cluster's.
    let ec2 = aws_sdk_ec2::Client::new(&g.aws().await);
    let sg = ec2
        .create_security_group()
        .group_name("k8s-elb-web")
        .description("load-balancer")
        .vpc_id(&vpc)
        .send()
        .await?
        .group_id()
        .context("no group ID")?
        .to_string();
    let eni = ec2
        .create_network_interface()
        .subnet_id(&subnet)
        .groups(&sg)
        .description("ELB-app-web")
        .send()
        .await?
        .network_interface()
        .and_then(|i| i.network_interface_id())
        .context("no interface ID")?
        .to_string();

    let clusters = g.api::<ComputeCluster>();
    clusters.delete("blocked", &DeleteParams::default()).await?;
    let blocked = eventually("the blockers listed", crate::clusters::WAIT, || async {
        let cc = clusters.get("blocked").await?;
        let status = cc.status.unwrap_or_default();
        let listed: Vec<String> = status
            .deletion_blockers
            .iter()
            .map(|b| b.id.clone())
            .collect();
        let stalled = status
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Stalled" && c.status == "True" && c.reason == "DeletionBlocked");
        Ok(stalled
            .filter(|_| listed.contains(&eni) && listed.contains(&sg) && listed.len() == 2)
            .map(|c| c.message))
    })
    .await
    .with_context(|| format!("operator log tail:\n{}", log_tail(&op)))?;
    ensure(
        blocked.contains(&eni) && blocked.contains(&sg),
        format!("the message does not name the blockers: {blocked}"),
    )?;
    // Never touched: they are not the cluster's.
    let still = ec2
        .describe_network_interfaces()
        .network_interface_ids(&eni)
        .send()
        .await?;
    ensure(
        still.network_interfaces().len() == 1,
        "the foreign interface was deleted",
    )?;
    ec2.describe_security_groups().group_ids(&sg).send().await?;

    // The user removes them: deletion goes on and finishes.
    ec2.delete_network_interface()
        .network_interface_id(&eni)
        .send()
        .await?;
    ec2.delete_security_group().group_id(&sg).send().await?;
    eventually("the cluster deleted", crate::clusters::WAIT, || async {
        match clusters.get_opt("blocked").await? {
            None => Ok(Some(())),
            Some(cc) => Err(anyhow::anyhow!(
                "status: {}",
                serde_json::to_string(&cc.status)?
            )),
        }
    })
    .await
    .with_context(|| format!("operator log tail:\n{}", log_tail(&op)))?;
    nothing_left(&g, &[uid]).await
}

fn log_tail(op: &Operator) -> String {
    let log = op.log();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}
