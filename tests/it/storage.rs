//! Each cluster's storage, keys, logs and names. So far its CloudWatch Logs
//! log group (`spec.logging`): made by the operator under the generated
//! policy as AWS evaluates it (the proxy decides each call), put back when
//! deleted or changed out of band (the shared resync), removed with the
//! field and with the cluster, and a group of its name that is not the
//! cluster's never touched; its nodes granted that group alone (the nodes'
//! grants attached to their role, decided by the ground's evaluator).

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context as _, Result};
use byoc_operator::api::ComputeCluster;
use byoc_operator::aws::log_group::{self, ObservedLogGroup};
use byoc_operator::aws::AwsClients;
use kube::api::{Patch, PatchParams};
use kube::ResourceExt;

use crate::clusters::{
    delete_and_wait_gone, ground_with_account, orphan, small_cluster_manifest, stalled_with,
    wait_running, WAIT,
};
use crate::support::{
    as_role, byoc, eventually, ground_with_crds, kubectl_apply, record_figure, Edited, Ground,
    OperatorExt,
};

const REGION: &str = "us-east-1";
const ACCOUNT: &str = "123456789012";

/// The nodes' grants of the ground's cross-account role.
fn grants_arn() -> String {
    byoc_operator::connect::node_grants_arn(crate::support::ROLE_ARN).unwrap_or_default()
}

/// The nodes' grants, made as `connect aws` makes them beside the role.
async fn connect_node_grants(g: &Ground) -> Result<()> {
    let arn = grants_arn();
    let name = arn.rsplit_once('/').map(|(_, n)| n).unwrap_or_default();
    let label = BTreeMap::from([(
        "byoc.dev/connected-account".to_string(),
        format!("{}/acme", g.namespace),
    )]);
    let doc = byoc_operator::account::iam_policy::nodes_policy();
    byoc_operator::aws::admin::create_policy(&admin(g).await, name, &doc, &label, "test").await?;
    Ok(())
}

/// The managed policies attached to role `role` (through the ground's admin).
async fn attached(g: &Ground, role: &str) -> Result<Vec<String>> {
    Ok(byoc_operator::aws::instance_profile::attached_policies(&admin(g).await, role).await?)
}

/// What node role `role`'s attached policies let its instances do to the
/// log group of each name, as the ground's evaluator decides (the role's
/// tags, as an instance's session carries them, with `cluster` put in for
/// its cluster tag when given): per group, `(action, allowed)`.
async fn nodes_may(
    g: &Ground,
    role: &str,
    cluster: Option<&str>,
    groups: &[&str],
) -> Result<Vec<(String, String, bool)>> {
    use testground::iam_eval::{Check, Evaluator, Principal};
    let c = admin(g).await;
    let got = c.iam.get_role().role_name(role).send().await?;
    let mut tags: BTreeMap<String, String> = (got.role().map(|r| r.tags()).unwrap_or_default())
        .iter()
        .map(|t| (t.key().to_string(), t.value().to_string()))
        .collect();
    if let Some(cluster) = cluster {
        tags.insert("byoc.dev/cluster".into(), cluster.into());
    }
    let mut policies = Vec::new();
    for arn in attached(g, role).await? {
        if let Some(p) = byoc_operator::aws::admin::get_policy(&c, &arn).await? {
            policies.push(p.document);
        }
    }
    let context: BTreeMap<String, serde_json::Value> = (tags.iter())
        .map(|(k, v)| (format!("aws:PrincipalTag/{k}"), serde_json::json!(v)))
        .collect();
    let mut checks = Vec::new();
    for group in groups {
        let at = format!("arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{group}");
        for (action, kind, resource) in [
            (
                "logs:CreateLogStream",
                "log-stream",
                format!("{at}:log-stream:i-0"),
            ),
            (
                "logs:PutLogEvents",
                "log-stream",
                format!("{at}:log-stream:i-0"),
            ),
            ("logs:DescribeLogStreams", "log-group", format!("{at}:*")),
        ] {
            checks.push(Check {
                action: action.into(),
                resource_type: Some(kind.into()),
                resource,
                context: context.clone(),
                resource_policy: None,
            });
        }
    }
    let principal = Principal {
        arn: format!("arn:aws:sts::{ACCOUNT}:assumed-role/{role}/i-0"),
        role: format!("arn:aws:iam::{ACCOUNT}:role/{role}"),
        account: ACCOUNT.into(),
        tags,
    };
    let log =
        std::env::temp_dir().join(format!("{}.log", crate::support::unique_name("iam-nodes")));
    let decisions = Evaluator::start(&log)?.decide_each(&principal, &policies, &checks)?;
    Ok(checks
        .iter()
        .zip(decisions)
        .map(|(c, d)| (c.action.clone(), c.resource.clone(), d.allowed()))
        .collect())
}

/// The role the cluster's status names.
fn role_of(cc: &ComputeCluster) -> Option<String> {
    cc.status.as_ref()?.iam.as_ref()?.role_name.clone()
}

/// A small cluster with a log group kept `days` days.
fn logged_cluster(name: &str, cidr: &str, days: i32) -> String {
    small_cluster_manifest(name, cidr).edited(
        "  nodeGroups:",
        &format!("  logging: {{retentionDays: {days}}}\n  nodeGroups:"),
    )
}

/// The ground's admin clients (straight to moto).
async fn admin(g: &Ground) -> AwsClients {
    let metrics = byoc_operator::metrics::Metrics::new();
    AwsClients::new(&g.aws().await, REGION, metrics.aws_interceptor())
}

/// Log group `name` as AWS holds it (through the ground's admin).
async fn group(g: &Ground, name: &str) -> Result<Option<ObservedLogGroup>> {
    Ok(log_group::describe(&admin(g).await, name).await?)
}

/// Waits until log group `name` is as `check` says.
async fn group_until(
    g: &Ground,
    name: &str,
    what: &str,
    check: impl Fn(Option<&ObservedLogGroup>) -> bool,
) -> Result<Option<ObservedLogGroup>> {
    eventually(&format!("log group {name}: {what}"), WAIT, || async {
        let now = group(g, name).await?;
        Ok(check(now.as_ref()).then_some(now))
    })
    .await
}

#[tokio::test]
async fn a_clusters_log_group_is_made_put_back_and_removed_and_anothers_never_touched() -> Result<()>
{
    let (g, mut op) = ground_with_account("storage-logs", &["--resync-interval", "3s"]).await?;
    let ns = g.namespace.clone();
    connect_node_grants(&g).await?;
    let name = format!("/byoc/{ns}/logged");
    kubectl_apply(&g, &logged_cluster("logged", "10.70.0.0/16", 14))?;
    let cc = wait_running(&g, "logged", |cc| {
        let storage = cc.status.as_ref().and_then(|s| s.storage.as_ref());
        storage.and_then(|s| s.log_group.as_deref()) == Some(name.as_str())
    })
    .await
    .with_context(|| op.log_tail(30))?;
    let uid = cc.uid().unwrap_or_default();
    let made = group(&g, &name).await?.context("no log group")?;
    assert_eq!(made.retention_days, Some(14), "{made:?}");
    assert_eq!(
        made.tags.get("byoc.dev/cluster-uid").map(String::as_str),
        Some(uid.as_str()),
        "{made:?}"
    );

    // The nodes' grants, on the node role: its instances may write this
    // group (the control) and no other: not another cluster's, not one
    // outside /byoc/, and not this one as another cluster's node.
    let role = role_of(&cc).context("no node role in status")?;
    let held = attached(&g, &role).await?;
    assert!(held.contains(&grants_arn()), "{role} holds {held:?}");
    let other = format!("/byoc/{ns}/other");
    let outside = format!("/team/{ns}/logged");
    let decided = nodes_may(&g, &role, None, &[&name, &other, &outside]).await?;
    let wrong: Vec<String> = (decided.iter())
        .filter(|(_, r, allowed)| *allowed != r.contains(&format!("{name}:")))
        .map(|(a, r, allowed)| format!("{a} on {r}: allowed {allowed}"))
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    let as_other = nodes_may(&g, &role, Some(&format!("{ns}/other")), &[&name]).await?;
    assert!(
        as_other.iter().all(|(_, _, allowed)| !allowed),
        "another cluster's node on this group: {as_other:?}"
    );

    // Changed out of band: put back by the shared resync.
    let admin = admin(&g).await.logs;
    admin
        .put_retention_policy()
        .log_group_name(&name)
        .retention_in_days(1)
        .send()
        .await?;
    group_until(&g, &name, "retention put back", |g| {
        g.is_some_and(|g| g.retention_days == Some(14))
    })
    .await?;
    // Deleted out of band: made again, with its tags.
    admin
        .delete_log_group()
        .log_group_name(&name)
        .send()
        .await?;
    let again = group_until(&g, &name, "made again", |g| {
        g.is_some_and(|g| g.retention_days == Some(14))
    })
    .await?
    .context("gone")?;
    assert_eq!(
        again.tags.get("byoc.dev/cluster-uid").map(String::as_str),
        Some(uid.as_str())
    );

    // A group of a cluster's name that is not the cluster's: stalled,
    // the group untouched. The control is the cluster above.
    let taken = format!("/byoc/{ns}/taken");
    admin
        .create_log_group()
        .log_group_name(&taken)
        .set_tags(Some(HashMap::from([(
            "team".to_string(),
            "own".to_string(),
        )])))
        .send()
        .await?;
    kubectl_apply(&g, &logged_cluster("taken", "10.71.0.0/16", 30))?;
    let stalled = stalled_with(&g, "taken", "NameTaken").await?;
    assert!(stalled.message.contains(&taken), "{}", stalled.message);
    // Its nodes are not granted the team's group (their role is made all
    // the same: the other steps run on).
    let api = g.api::<ComputeCluster>();
    let taken_role = eventually("the taken cluster's node role", WAIT, || async {
        Ok(role_of(&api.get("taken").await?))
    })
    .await?;
    let held = attached(&g, &taken_role).await?;
    assert!(!held.contains(&grants_arn()), "{taken_role} holds {held:?}");
    let theirs = group(&g, &taken).await?.context("the team's group went")?;
    assert_eq!(theirs.retention_days, None, "the team's group was changed");
    assert!(
        !theirs.tags.contains_key("byoc.dev/cluster-uid"),
        "{theirs:?}"
    );

    // The field removed: the group goes, and status says so.
    let patch = serde_json::json!({"spec": {"logging": null}});
    api.patch("logged", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    wait_running(&g, "logged", |cc| {
        cc.status
            .as_ref()
            .and_then(|s| s.storage.as_ref())
            .is_none()
    })
    .await?;
    group_until(&g, &name, "deleted with the field", |g| g.is_none()).await?;
    let held = attached(&g, &role).await?;
    assert!(
        !held.contains(&grants_arn()),
        "grants kept without the group: {held:?}"
    );

    // Asked again, then deleted with the cluster; the team's stays.
    kubectl_apply(&g, &logged_cluster("logged", "10.70.0.0/16", 14))?;
    group_until(&g, &name, "made again", |g| g.is_some()).await?;
    delete_and_wait_gone(&g, "logged").await?;
    assert!(group(&g, &name).await?.is_none(), "left after deletion");
    delete_and_wait_gone(&g, "taken").await?;
    assert!(
        group(&g, &taken).await?.is_some(),
        "the team's group deleted"
    );

    // Never lost: a cluster orphaned by hand (finalizer removed while the
    // operator is down) leaves its group, which `audit` lists and
    // `audit --delete` removes.
    kubectl_apply(&g, &logged_cluster("orphaned", "10.72.0.0/16", 7))?;
    let lost = format!("/byoc/{ns}/orphaned");
    wait_running(&g, "orphaned", |_| true).await?;
    // The operator down, so no deletion pass starts meanwhile.
    op.process.kill();
    orphan(&g, &ns, "orphaned").await?;
    assert!(group(&g, &lost).await?.is_some(), "no group left");
    let found = byoc(&g, &["audit", "-n", &ns])?;
    assert!(found.contains(&lost), "audit lacks the group:\n{found}");
    assert!(
        !found.contains(&taken),
        "audit lists the team's group:\n{found}"
    );
    assert!(!found.contains("$-0.00"), "a negative zero price:\n{found}");
    let deleted = byoc(
        &g,
        &["audit", "--delete", "--all", "-n", &ns, "--deadline", "3m"],
    )?;
    assert!(deleted.contains("0 leaked resources left"), "{deleted}");
    assert!(
        group(&g, &lost).await?.is_none(),
        "audit --delete left the group"
    );
    assert!(
        group(&g, &taken).await?.is_some(),
        "audit deleted the team's group"
    );
    record_figure(serde_json::json!({
        "suite": "storage",
        "setup": "a cluster with logging (14 days) under the generated policy; the group changed and deleted out of band; a group of another cluster's name made by a team",
        "n": 1,
        "figure": "the group made with the cluster's tags and retention, and the nodes' grants attached to its node role: the evaluator let its nodes write that group and not another cluster's, one outside /byoc/, or this one as another cluster's node; its retention and then the group itself put back by the shared resync, deleted (the grants detached) with the field and with the cluster; the team's group left as it was, its cluster stalled NameTaken and its node role not granted; an orphaned cluster's group listed by audit and removed by audit --delete, the team's kept",
        "pass": true,
    }))
}

/// The policy's part for log groups, as AWS evaluates it: the role makes
/// groups only tagged as its installation's, and changes or deletes only
/// those; each denial beside the same call allowed on its own group.
#[tokio::test]
async fn the_role_makes_and_deletes_only_its_installations_log_groups() -> Result<()> {
    const ME: &str = "a11ce0000000000a";
    const OTHER: &str = "b0b0000000000b0b";
    let g = ground_with_crds("storage-policy").await?;
    let ours = |installation: &str| {
        HashMap::from([
            (
                "byoc.dev/managed-by".to_string(),
                "byoc-operator".to_string(),
            ),
            (
                "byoc.dev/installation".to_string(),
                installation.to_string(),
            ),
        ])
    };
    let make =
        |c: &aws_sdk_cloudwatchlogs::Client, name: &str, tags: Option<HashMap<String, String>>| {
            c.create_log_group()
                .log_group_name(name)
                .set_tags(tags)
                .send()
        };
    let other = as_role(&g, OTHER, REGION).await?.logs;
    make(&other, "/byoc/team/theirs", Some(ours(OTHER))).await?;
    let me = as_role(&g, ME, REGION).await?.logs;
    let denied = |r: &str| r.contains("AccessDenied");

    // Made: only with this installation's tags, only under /byoc/.
    make(&me, "/byoc/team/mine", Some(ours(ME)))
        .await
        .context("control: its own group refused")?;
    let untagged = format!("{:?}", make(&me, "/byoc/team/untagged", None).await);
    assert!(denied(&untagged), "made untagged: {untagged}");
    let as_other = format!(
        "{:?}",
        make(&me, "/byoc/team/as-other", Some(ours(OTHER))).await
    );
    assert!(denied(&as_other), "made as another's: {as_other}");
    let outside = format!("{:?}", make(&me, "/team/outside", Some(ours(ME))).await);
    assert!(denied(&outside), "made outside /byoc/: {outside}");

    // Changed and deleted: only its own.
    let retention = |name: &str| {
        me.put_retention_policy()
            .log_group_name(name)
            .retention_in_days(7)
            .send()
    };
    retention("/byoc/team/mine")
        .await
        .context("control: its own group's retention refused")?;
    let theirs = format!("{:?}", retention("/byoc/team/theirs").await);
    assert!(denied(&theirs), "changed another's: {theirs}");
    let delete = |name: &str| me.delete_log_group().log_group_name(name).send();
    let theirs = format!("{:?}", delete("/byoc/team/theirs").await);
    assert!(denied(&theirs), "deleted another's: {theirs}");
    // Nor tagged as its own to take it.
    let arn = format!("arn:aws:logs:{REGION}:123456789012:log-group:/byoc/team/theirs");
    let retag = me
        .tag_resource()
        .resource_arn(&arn)
        .set_tags(Some(ours(ME)))
        .send()
        .await;
    assert!(
        denied(&format!("{retag:?}")),
        "retagged another's: {retag:?}"
    );
    delete("/byoc/team/mine")
        .await
        .context("control: its own group's deletion refused")?;
    Ok(())
}
