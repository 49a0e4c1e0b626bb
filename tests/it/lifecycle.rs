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
    small_cluster_manifest, stalled_with, wait_gone, wait_running, Counts,
};
use crate::support::{
    byoc, delete_namespace, eventually, ground_with_crds, kubectl_apply, kubectl_byoc,
    wait_namespace_gone, Edited, Ground, Operator, OperatorExt,
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
        anyhow::ensure!(
            left == Counts::default(),
            "cluster {uid} left behind: {left:?}"
        );
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
        &example_manifest("big")?.edited("natGateways: single", "natGateways: perZone"),
    )?;
    kubectl_apply(&g, &small_cluster_manifest("small", "10.1.0.0/16"))?;
    let big = wait_running(&g, "big", |_| true).await?;
    let small = wait_running(&g, "small", |_| true).await?;
    let uids = [uid(&big)?, uid(&small)?];
    let before = counts(&g, &uids[0]).await?;
    assert!(
        before.nat_gateways == 2 && before.instances() == 4,
        "the NAT-per-zone cluster holds {before:?}"
    );
    let account = wait_users(&g.api::<CloudAccount>(), "acme", 2).await?;
    assert!(
        held(account.finalizers()),
        "the used account is not protected"
    );

    // One command, as a team removes a namespace.
    let started = Instant::now();
    delete_namespace(&g)?;
    wait_namespace_gone(&g, GONE_WITHIN)
        .await
        .with_context(|| format!("operator log tail:\n{}", op.log_tail(15)))?;
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
    let g = ground_with_crds("gitops-prune").await?;
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
        assert!(
            out.status.success(),
            "kubectl {verb}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
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
    .with_context(|| format!("operator log tail:\n{}", op.log_tail(15)))?;
    println!("manifest deleted in {:?}", started.elapsed());
    assert!(
        g.api::<Secret>().get_opt("demo-aws-keys").await?.is_none()
            && g.api::<CloudAccount>().get_opt("demo").await?.is_none()
            && g.api::<ComputeCluster>().get_opt("demo").await?.is_none(),
        "kubectl returned with objects left"
    );
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
    assert!(
        secret.metadata.deletion_timestamp.is_some() && held(secret.finalizers()),
        "the Secret of the account in use is not held"
    );

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
    assert_eq!(
        account.status.as_ref().and_then(|s| s.phase),
        Some(AccountPhase::Ready),
        "the account stopped being ready while in use"
    );

    delete_and_wait_gone(&g, "late").await?;
    delete_and_wait_gone(&g, "first").await?;
    nothing_left(&g, &[uid(&first)?]).await?;
    wait_account_and_secret_gone(&g)
        .await
        .with_context(|| format!("operator log tail:\n{}", op.log_tail(15)))
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
    assert!(
        held(secrets.get_metadata("keys").await?.finalizers()),
        "the Secret of the used account is not held"
    );
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
    assert_eq!(
        account.status.and_then(|s| s.phase),
        Some(AccountPhase::Ready),
        "the account is no longer ready"
    );

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
            .edited("natGateways: none", "natGateways: single"),
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
    let eni = foreign_interface(&g, &subnet, Some(&sg)).await?;

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
    .with_context(|| format!("operator log tail:\n{}", op.log_tail(15)))?;
    assert!(
        blocked.contains(&eni) && blocked.contains(&sg),
        "the message does not name the blockers: {blocked}"
    );
    // describe on a cluster mid-deletion: phase, blockers, the condition.
    let tree = byoc(
        &g,
        &["describe", "computecluster", "blocked", "-n", &g.namespace],
    )?;
    for want in [
        "phase deleting".to_string(),
        "DeletionBlockers (not the cluster's: remove them)".to_string(),
        format!("network-interface {eni}"),
        format!("security-group {sg}"),
        format!("VPC {vpc}"),
        "Stalled True DeletionBlocked".to_string(),
    ] {
        assert!(tree.contains(&want), "describe lacks {want:?}:\n{tree}");
    }
    // Never touched: they are not the cluster's.
    let still = ec2
        .describe_network_interfaces()
        .network_interface_ids(&eni)
        .send()
        .await?;
    assert_eq!(
        still.network_interfaces().len(),
        1,
        "the foreign interface was deleted"
    );
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
    .with_context(|| format!("operator log tail:\n{}", op.log_tail(15)))?;
    nothing_left(&g, &[uid]).await
}

/// A network interface in `subnet` (in `group`) that is not the cluster's
/// (no tags), as a workload's load balancer would leave.
async fn foreign_interface(g: &Ground, subnet: &str, group: Option<&str>) -> Result<String> {
    let ec2 = aws_sdk_ec2::Client::new(&g.aws().await);
    Ok(ec2
        .create_network_interface()
        .subnet_id(subnet)
        .set_groups(group.map(|g| vec![g.to_string()]))
        .description("ELB-app-web")
        .send()
        .await?
        .network_interface()
        .and_then(|i| i.network_interface_id())
        .context("no interface ID")?
        .to_string())
}

async fn interface_exists(g: &Ground, id: &str) -> Result<bool> {
    let ec2 = aws_sdk_ec2::Client::new(&g.aws().await);
    let found = ec2
        .describe_network_interfaces()
        .network_interface_ids(id)
        .send()
        .await?;
    Ok(found.network_interfaces().len() == 1)
}

/// The status's first VPC and subnet IDs.
fn network_ids(cc: &ComputeCluster) -> Result<(String, String)> {
    let network = cc
        .status
        .as_ref()
        .and_then(|s| s.network.clone())
        .context("no network")?;
    let subnet = network
        .subnets
        .first()
        .map(|s| s.id.clone())
        .context("no subnet")?;
    Ok((network.vpc_id.context("no VPC")?, subnet))
}

#[tokio::test]
async fn audit_finds_what_a_cluster_left_when_its_finalizer_was_removed_and_deletes_only_that(
) -> Result<()> {
    let (g, mut op) = ground_with_account("audit", &[]).await?;
    let ns = g.namespace.clone();
    kubectl_apply(&g, &small_cluster_manifest("kept", "10.7.0.0/16"))?;
    kubectl_apply(
        &g,
        &small_cluster_manifest("orphan", "10.8.0.0/16").edited(
            "natGateways: none",
            "natGateways: single, endpoints: [s3, ecr.api]",
        ),
    )?;
    let kept = wait_running(&g, "kept", |_| true).await?;
    let orphan = wait_running(&g, "orphan", |_| true).await?;
    let (kept_uid, orphan_uid) = (uid(&kept)?, uid(&orphan)?);

    // Healthy clusters: nothing to report.
    let healthy = byoc(&g, &["audit", "-n", &ns])?;
    assert!(
        healthy.contains("nothing leaked") && healthy.contains("\n0 leaked resources"),
        "healthy clusters reported:\n{healthy}"
    );

    // describe, through kubectl's plugin mechanism, on a running cluster.
    let (kept_vpc, kept_subnet) = network_ids(&kept)?;
    let instance = kept
        .status
        .as_ref()
        .and_then(|s| s.node_groups.first())
        .and_then(|g| g.instance_ids.first().cloned())
        .context("no instance")?;
    let tree = kubectl_byoc(&g, &["describe", "computecluster", "kept", "-n", &ns])?;
    for want in [
        format!("ComputeCluster {ns}/kept  phase running  region us-east-1"),
        format!("CloudAccount {ns}/acme  ready  account 123456789012"),
        format!("VPC {kept_vpc}  10.7.0.0/16"),
        format!("Subnet {kept_subnet}  us-east-1a  public"),
        "NodeGroup workers  1/1 running".to_string(),
        format!("Instance {instance}  t3.small  running"),
        "Ready True Running".to_string(),
    ] {
        assert!(tree.contains(&want), "describe lacks {want:?}:\n{tree}");
    }

    // The finalizer removed by hand while the operator is down: the object
    // goes, everything it made stays in AWS.
    op.process.kill();
    crate::clusters::orphan(&g, &ns, "orphan").await?;
    let left = counts(&g, &orphan_uid).await?;
    assert!(
        left.vpcs == 1 && left.nat_gateways == 1 && left.instances() == 1 && left.endpoints == 2,
        "{left:?}"
    );
    let (orphan_vpc, orphan_subnet) = network_ids(&orphan)?;
    let foreign = foreign_interface(&g, &orphan_subnet, None).await?;

    // The running operator finds them too (the gauge).
    let op = Operator::start(
        &g,
        &["--resync-interval", "1s", "--leak-audit-interval", "1s"],
        &[],
    )?;
    let gauge = format!("byoc_leaked_resources{{account=\"{ns}/acme\"}}");
    let leaked = eventually("the leak gauge set", crate::clusters::WAIT, || async {
        let n = op.metric(&gauge)?;
        Ok((n > 0.0).then_some(n))
    })
    .await?;

    let found = byoc(&g, &["audit", "-n", &ns])?;
    // Both audits read the account's roles with their tags in one paged
    // GetAccountAuthorizationDetails, not a ListRoles and a GetRole each.
    let listed = g
        .proxy
        .calls()
        .get("ListRoles")
        .copied()
        .unwrap_or_default();
    assert_eq!(listed, 0, "the audits listed roles one by one");
    let nat = orphan
        .status
        .as_ref()
        .and_then(|s| s.network.as_ref())
        .and_then(|n| n.nat_gateway_ids.first().cloned())
        .context("no NAT gateway")?;
    let ecr = orphan_endpoint(&g, &orphan, ".ecr.api").await?;
    for want in [
        format!("former cluster {ns}/orphan (uid {orphan_uid})"),
        orphan_vpc.clone(),
        orphan_subnet.clone(),
        format!("{nat} (available)  ~$32.85/month"),
        format!("vpc-endpoint {ecr} (ecr.api)  ~$7.30/month"),
        // A NAT gateway, its Elastic IP, a t3.small and an interface
        // endpoint in one zone (the S3 gateway endpoint costs nothing).
        "about $58.98/month".to_string(),
    ] {
        assert!(found.contains(&want), "audit lacks {want:?}:\n{found}");
    }
    assert!(
        !found.contains(&kept_uid) && !found.contains(&foreign),
        "audit reported what is not leaked:\n{found}"
    );

    let kept_before = counts(&g, &kept_uid).await?;
    let deleted = byoc(
        &g,
        &["audit", "--delete", "--all", "-n", &ns, "--deadline", "3m"],
    )?;
    assert!(
        deleted.contains("0 leaked resources left"),
        "audit --delete left something:\n{deleted}"
    );
    nothing_left(&g, &[orphan_uid]).await?;
    assert!(
        interface_exists(&g, &foreign).await?,
        "audit --delete removed an interface that is not the cluster's"
    );
    let listed = found.lines().filter(|l| l.starts_with("    ")).count();
    assert_eq!(
        leaked as usize, listed,
        "the gauge said {leaked}, the audit listed {listed}"
    );
    eventually(
        "the leak gauge back to 0",
        crate::clusters::WAIT,
        || async { Ok((op.metric(&gauge)? == 0.0).then_some(())) },
    )
    .await?;
    assert_eq!(
        counts(&g, &kept_uid).await?,
        kept_before,
        "audit --delete touched a live cluster"
    );
    Ok(())
}

/// The ID of `cc`'s endpoint whose service name ends with `suffix`.
async fn orphan_endpoint(g: &Ground, cc: &ComputeCluster, suffix: &str) -> Result<String> {
    let ids = cc
        .status
        .as_ref()
        .and_then(|s| s.network.as_ref())
        .map(|n| n.endpoint_ids.clone())
        .unwrap_or_default();
    let found = aws_sdk_ec2::Client::new(&g.aws().await)
        .describe_vpc_endpoints()
        .set_vpc_endpoint_ids(Some(ids))
        .send()
        .await?;
    crate::clusters::endpoint_of(&found, suffix)
}

#[tokio::test]
async fn a_deletion_stuck_on_its_account_lets_go_with_retain_and_lists_what_is_left() -> Result<()>
{
    let (g, mut op) = ground_with_account("retain", &[]).await?;
    kubectl_apply(&g, &small_cluster_manifest("stuck", "10.9.0.0/16"))?;
    let cc = wait_running(&g, "stuck", |_| true).await?;
    let uid = uid(&cc)?;
    let (vpc, subnet) = network_ids(&cc)?;

    // The account's role is refused from now on, and the operator restarts
    // without the credentials it verified before.
    op.process.kill();
    g.proxy.set_faults(testground::Faults {
        roles_must_exist: true,
        ..Default::default()
    });
    let op = Operator::start(&g, &["--progress-poll", "1s"], &[])?;
    let clusters = g.api::<ComputeCluster>();
    clusters.delete("stuck", &DeleteParams::default()).await?;
    let stuck = stalled_with(&g, "stuck", "AccountNotReady")
        .await
        .with_context(|| format!("operator log tail:\n{}", op.log_tail(15)))?;
    assert!(
        stuck.message.contains("fix the CloudAccount")
            && stuck.message.contains("spec.deletionPolicy: Retain"),
        "the condition does not say how to go on: {}",
        stuck.message
    );

    // The user lets go: the object goes, AWS keeps everything, and an
    // Event lists what is left.
    patch_spec(&g, "stuck", serde_json::json!({"deletionPolicy": "Retain"})).await?;
    wait_gone(&g, "stuck").await?;
    assert_eq!(counts(&g, &uid).await?.vpcs, 1, "the VPC is gone");
    let note = crate::support::event_note(&g, "Retained", "").await?;
    assert!(
        note.contains(&vpc) && note.contains(&subnet) && note.contains("account 123456789012"),
        "the Event does not list what is left: {note}"
    );

    // The account works again: the audit finds the rest (the account could
    // not be reached to mark it retained) and removes it when told.
    g.proxy.set_faults(testground::Faults::default());
    let deleted = byoc(
        &g,
        &[
            "audit",
            "--delete",
            "--cluster",
            &uid,
            "-n",
            &g.namespace,
            "--deadline",
            "3m",
        ],
    )?;
    assert!(
        deleted.contains(&vpc) && deleted.contains("0 leaked resources left"),
        "audit --delete after Retain:\n{deleted}"
    );
    nothing_left(&g, &[uid]).await
}
