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
use byoc_operator::aws::kms_key;
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
pub(crate) async fn connect_node_grants(g: &Ground) -> Result<()> {
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
/// log group of each name, as the ground's evaluator decides (`cluster` put
/// in for the role's cluster tag when given): `(action, resource, allowed)`.
async fn nodes_may(
    g: &Ground,
    role: &str,
    cluster: Option<&str>,
    groups: &[&str],
) -> Result<Vec<(String, String, bool)>> {
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
            checks.push(testground::iam_eval::Check {
                action: action.into(),
                resource_type: Some(kind.into()),
                resource,
                context: BTreeMap::new(),
                resource_policy: None,
            });
        }
    }
    let cluster = cluster.map(|c| ("byoc.dev/cluster", c));
    nodes_decide(g, role, cluster, checks).await
}

/// `checks` decided for an instance of node role `role`: its attached
/// policies, its tags as an instance's session carries them (`tag` put in
/// for one of them when given) added to each check's context.
async fn nodes_decide(
    g: &Ground,
    role: &str,
    tag: Option<(&str, &str)>,
    mut checks: Vec<testground::iam_eval::Check>,
) -> Result<Vec<(String, String, bool)>> {
    use testground::iam_eval::{Evaluator, Principal};
    let c = admin(g).await;
    let got = c.iam.get_role().role_name(role).send().await?;
    let mut tags: BTreeMap<String, String> = (got.role().map(|r| r.tags()).unwrap_or_default())
        .iter()
        .map(|t| (t.key().to_string(), t.value().to_string()))
        .collect();
    if let Some((key, value)) = tag {
        tags.insert(key.into(), value.into());
    }
    let mut policies = Vec::new();
    for arn in attached(g, role).await? {
        if let Some(p) = byoc_operator::aws::admin::get_policy(&c, &arn).await? {
            policies.push(p.document);
        }
    }
    for check in &mut checks {
        for (k, v) in &tags {
            check
                .context
                .insert(format!("aws:PrincipalTag/{k}"), serde_json::json!(v));
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

/// A small cluster with storage: its own key, deleted `window` days after
/// it is asked to be.
fn keyed_cluster(name: &str, cidr: &str, window: i32) -> String {
    small_cluster_manifest(name, cidr).edited(
        "  nodeGroups:",
        &format!("  storage: {{encryption: {{deletionWindowDays: {window}}}}}\n  nodeGroups:"),
    )
}

/// The cluster's key as AWS holds it (through the ground's admin): found
/// by the cluster's alias.
pub(crate) async fn key_of(g: &Ground, alias: &str) -> Result<Option<kms_key::ObservedKey>> {
    Ok(kms_key::by_alias(&admin(g).await, alias).await?)
}

/// Every key made for cluster `uid` of `installation` (by description).
pub(crate) async fn keys_made_for(
    g: &Ground,
    installation: &str,
    uid: &str,
) -> Result<Vec<kms_key::ObservedKey>> {
    let made_for = kms_key::made_for(installation, uid);
    Ok(kms_key::described(&admin(g).await, &made_for).await?)
}

/// The key's deletion date, days from now (rounded).
fn days_left(key: &kms_key::ObservedKey) -> Option<i64> {
    let at: jiff::Timestamp = key.deletion_date.as_deref()?.parse().ok()?;
    let left = at.duration_since(jiff::Timestamp::now()).as_secs();
    Some((left + 43_200) / 86_400)
}

#[tokio::test]
async fn a_clusters_key_is_made_rotated_kept_once_and_only_scheduled_for_deletion() -> Result<()> {
    let (g, op) = ground_with_account("storage-key", &["--resync-interval", "3s"]).await?;
    connect_node_grants(&g).await?;
    kubectl_apply(&g, &keyed_cluster("keyed", "10.73.0.0/16", 7))?;
    let cc = wait_running(&g, "keyed", |cc| {
        let storage = cc.status.as_ref().and_then(|s| s.storage.as_ref());
        storage.is_some_and(|s| s.kms_key_arn.is_some())
    })
    .await
    .with_context(|| op.log_tail(30))?;
    let uid = cc.uid().unwrap_or_default();
    let installation = (cc.status.as_ref())
        .and_then(|s| s.installation.clone())
        .context("no installation in status")?;
    let alias = kms_key::alias_of(&installation, &uid);
    let key = key_of(&g, &alias)
        .await?
        .context("no key behind the alias")?;
    let recorded = cc.status.as_ref().and_then(|s| s.storage.as_ref());
    assert_eq!(
        recorded.and_then(|s| s.kms_key_arn.clone()),
        Some(key.arn.clone())
    );
    assert_eq!(
        (key.state.as_str(), key.rotation),
        ("Enabled", Some(true)),
        "{key:?}"
    );
    assert_eq!(key.tags.get("byoc.dev/cluster-uid"), Some(&uid), "{key:?}");
    // Its policy names the operator's role for this key.
    let policy = (admin(&g)
        .await
        .kms
        .get_key_policy()
        .key_id(&key.id)
        .policy_name("default")
        .send()
        .await?)
        .policy()
        .unwrap_or_default()
        .to_string();
    assert!(policy.contains(crate::support::ROLE_ARN), "{policy}");

    // The nodes' grants: its nodes may use this key (the control), not a
    // key of another cluster's, nor this one as another cluster's node.
    let role = role_of(&cc).context("no node role in status")?;
    assert!(attached(&g, &role).await?.contains(&grants_arn()));
    let other = admin(&g)
        .await
        .kms
        .create_key()
        .tags(
            aws_sdk_kms::types::Tag::builder()
                .tag_key("byoc.dev/cluster-uid")
                .tag_value("another-cluster")
                .build()?,
        )
        .send()
        .await?;
    let other_arn = other
        .key_metadata()
        .and_then(|m| m.arn())
        .unwrap_or_default()
        .to_string();
    let decided = nodes_use_keys(
        &g,
        &role,
        None,
        &[
            &key,
            &kms_key::ObservedKey {
                arn: other_arn.clone(),
                tags: BTreeMap::from([(
                    "byoc.dev/cluster-uid".to_string(),
                    "another-cluster".to_string(),
                )]),
                ..Default::default()
            },
        ],
    )
    .await?;
    let wrong: Vec<String> = (decided.iter())
        .filter(|(_, arn, allowed)| *allowed != (arn == &key.arn))
        .map(|(a, arn, allowed)| format!("{a} on {arn}: allowed {allowed}"))
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    let as_other = nodes_use_keys(&g, &role, Some("another-cluster-uid"), &[&key]).await?;
    assert!(
        as_other.iter().all(|(_, _, allowed)| !allowed),
        "{as_other:?}"
    );

    // Rotation turned off out of band: turned on again by the shared resync.
    let kms = admin(&g).await.kms;
    kms.disable_key_rotation().key_id(&key.id).send().await?;
    eventually("rotation on again", WAIT, || async {
        let now = key_of(&g, &alias).await?;
        Ok(now.filter(|k| k.rotation == Some(true)).map(|_| ()))
    })
    .await?;
    // The alias deleted out of band (as a crash between the key and its
    // alias leaves it): the same key aliased again, never a second one.
    kms.delete_alias().alias_name(&alias).send().await?;
    let again = eventually("the key aliased again", WAIT, || async {
        key_of(&g, &alias).await
    })
    .await?;
    assert_eq!(again.id, key.id, "a second key was made");
    let made = keys_made_for(&g, &installation, &uid).await?;
    assert_eq!(made.len(), 1, "keys made for the cluster: {made:?}");

    // The field removed: the key scheduled for deletion in its window,
    // never deleted at once, and its alias gone.
    let api = g.api::<ComputeCluster>();
    let patch = serde_json::json!({"spec": {"storage": null}});
    api.patch("keyed", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    wait_running(&g, "keyed", |cc| {
        let storage = cc.status.as_ref().and_then(|s| s.storage.as_ref());
        storage.is_none_or(|s| s.kms_key_arn.is_none())
    })
    .await?;
    let old = (keys_made_for(&g, &installation, &uid).await?.into_iter())
        .find(|k| k.id == key.id)
        .context("the key was deleted at once")?;
    assert_eq!(old.state, "PendingDeletion", "{old:?}");
    assert_eq!(days_left(&old), Some(7), "{old:?}");
    assert!(key_of(&g, &alias).await?.is_none(), "the alias is left");

    // Asked again: a new key; the cluster deleted: it is scheduled too,
    // and audit shows both waiting.
    kubectl_apply(&g, &keyed_cluster("keyed", "10.73.0.0/16", 7))?;
    let new = eventually("a new key", WAIT, || async {
        Ok(key_of(&g, &alias).await?.filter(|k| k.state == "Enabled"))
    })
    .await?;
    assert_ne!(new.id, key.id, "the old key was enabled again");
    delete_and_wait_gone(&g, "keyed").await?;
    let made = keys_made_for(&g, &installation, &uid).await?;
    assert_eq!(made.len(), 2, "{made:?}");
    assert!(
        made.iter().all(|k| k.state == "PendingDeletion"),
        "{made:?}"
    );
    let found = byoc(&g, &["audit", "-n", &g.namespace])?;
    for k in &made {
        assert!(found.contains(&format!("KMS key {}", k.id)), "{found}");
    }
    assert!(found.contains("pending deletion"), "{found}");
    assert!(found.contains("nothing leaked"), "{found}");
    record_figure(serde_json::json!({
        "suite": "storage",
        "setup": "a cluster with storage (its own key, a 7-day deletion window) under the generated policy; its rotation turned off and its alias deleted out of band; the field removed, asked again, the cluster deleted",
        "n": 1,
        "figure": "the key made with the cluster's tags, rotation on and a policy naming the operator's role; the evaluator let its nodes use it and not another cluster's key; rotation put back by the shared resync; the alias put back on the same key (one key made, not two); removal and deletion each scheduled a key for deletion in 7 days, never deleted at once, and audit listed both as pending deletion",
        "pass": true,
    }))
}

/// What node role `role`'s attached policies let its instances do with
/// each key, as the ground's evaluator decides (the keys' tags as AWS holds
/// them; `uid` put in for the role's cluster UID tag when given).
async fn nodes_use_keys(
    g: &Ground,
    role: &str,
    uid: Option<&str>,
    keys: &[&kms_key::ObservedKey],
) -> Result<Vec<(String, String, bool)>> {
    let cluster = uid.map(|u| ("byoc.dev/cluster-uid", u));
    let kms = admin(g).await.kms;
    let mut policies = Vec::new();
    for k in keys {
        let got = kms
            .get_key_policy()
            .key_id(&k.arn)
            .policy_name("default")
            .send()
            .await?;
        policies.push(serde_json::from_str::<serde_json::Value>(
            got.policy().unwrap_or("{}"),
        )?);
    }
    let checks = keys
        .iter()
        .zip(policies)
        .flat_map(|(k, policy)| {
            ["kms:Decrypt", "kms:GenerateDataKey"].map(|action| {
                let mut context: BTreeMap<String, serde_json::Value> = (k.tags.iter())
                    .map(|(t, v)| (format!("aws:ResourceTag/{t}"), serde_json::json!(v)))
                    .collect();
                context.insert("kms:CallerAccount".into(), serde_json::json!(ACCOUNT));
                testground::iam_eval::Check {
                    action: action.into(),
                    resource_type: Some("key".into()),
                    resource: k.arn.clone(),
                    context,
                    resource_policy: Some(policy.clone()),
                }
            })
        })
        .collect();
    nodes_decide(g, role, cluster, checks).await
}

/// The policy's part for keys, as AWS evaluates it (the key's own policy
/// asked too): the role makes keys, manages those whose policy names it,
/// aliases only under its installation's names, and can take no key it did
/// not make, tagged or not; each denial beside its allowed control.
#[tokio::test]
async fn the_role_manages_only_the_keys_it_made() -> Result<()> {
    const ME: &str = "a11ce0000000000a";
    let g = ground_with_crds("storage-key-policy").await?;
    let team = admin(&g)
        .await
        .kms
        .create_key()
        .description("a team's own key")
        .send()
        .await?;
    let team = team
        .key_metadata()
        .map(|m| m.key_id().to_string())
        .unwrap_or_default();
    let me = as_role(&g, ME, REGION).await?.kms;
    let denied = |r: &str| r.contains("AccessDenied");
    let tag = |k: &str, v: &str| {
        aws_sdk_kms::types::Tag::builder()
            .tag_key(k)
            .tag_value(v)
            .build()
    };

    // Made, with a policy naming the role: managed, aliased, scheduled.
    let policy = kms_key::key_policy(ACCOUNT, crate::support::ROLE_ARN);
    let own = me
        .create_key()
        .description(kms_key::made_for(ME, "u-1"))
        .policy(policy.to_string())
        .send()
        .await
        .context("control: CreateKey refused")?;
    let own = own
        .key_metadata()
        .map(|m| m.key_id().to_string())
        .unwrap_or_default();
    me.tag_resource()
        .key_id(&own)
        .tags(tag("byoc.dev/cluster-uid", "u-1")?)
        .send()
        .await
        .context("control: tagging its own key refused")?;
    let alias = kms_key::alias_of(ME, "u-1");
    me.create_alias()
        .alias_name(&alias)
        .target_key_id(&own)
        .send()
        .await
        .context("control: aliasing its own key refused")?;
    me.enable_key_rotation()
        .key_id(&own)
        .send()
        .await
        .context("control: rotating its own key refused")?;
    me.describe_key()
        .key_id(&team)
        .send()
        .await
        .context("control: describing a key refused")?;

    // Never another's: not tagged to look its own, aliased, rotated or
    // scheduled for deletion.
    let retag = format!(
        "{:?}",
        me.tag_resource()
            .key_id(&team)
            .tags(tag("byoc.dev/cluster-uid", "u-1")?)
            .send()
            .await
    );
    assert!(denied(&retag), "tagged another's key: {retag}");
    let aliased = format!(
        "{:?}",
        me.create_alias()
            .alias_name(kms_key::alias_of(ME, "u-2"))
            .target_key_id(&team)
            .send()
            .await
    );
    assert!(denied(&aliased), "aliased another's key: {aliased}");
    let rotated = format!("{:?}", me.enable_key_rotation().key_id(&team).send().await);
    assert!(denied(&rotated), "rotated another's key: {rotated}");
    let schedule = |key: &str| {
        me.schedule_key_deletion()
            .key_id(key)
            .pending_window_in_days(7)
            .send()
    };
    let scheduled = format!("{:?}", schedule(&team).await);
    assert!(denied(&scheduled), "scheduled another's key: {scheduled}");
    // Nor an alias outside its installation's names.
    let outside = format!(
        "{:?}",
        me.create_alias()
            .alias_name("alias/team-key")
            .target_key_id(&own)
            .send()
            .await
    );
    assert!(denied(&outside), "an alias outside its names: {outside}");
    // Nor a multi-Region key.
    let multi = format!(
        "{:?}",
        me.create_key()
            .multi_region(true)
            .policy(policy.to_string())
            .send()
            .await
    );
    assert!(denied(&multi), "made a multi-Region key: {multi}");
    schedule(&own)
        .await
        .context("control: scheduling its own key refused")?;
    Ok(())
}
