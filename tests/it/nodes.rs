//! What node groups launch with: the hardened metadata service by default,
//! root volumes, extra security groups of the user's; a change of any of
//! them replaces the group's instances, new ones first.

use std::cell::Cell;

use anyhow::{Context as _, Result};
use aws_sdk_ec2::types::Instance;
use byoc_operator::api::ComputeCluster;
use kube::ResourceExt;

use crate::clusters::{
    counts, delete_leaves_nothing, ground_with_account, patch_spec, ready_account,
    small_cluster_manifest, stalled_with, uid_of, wait_running, Counts,
};
use crate::support::{
    assert_no_key_material, eventually, ground_with_crds, kubectl_apply, Edited, Ground, Operator,
    OperatorExt,
};

/// The live instances of `group` of the cluster `uid`, as AWS shows them
/// (through the proxy, which keeps new instances pending a while).
async fn instances(g: &Ground, uid: &str, group: &str) -> Result<Vec<Instance>> {
    let ec2 = aws_sdk_ec2::Client::new(&g.aws_through_proxy().await);
    let tag = |k: &str, v: &str| {
        aws_sdk_ec2::types::Filter::builder()
            .name(format!("tag:{k}"))
            .values(v)
            .build()
    };
    let live = aws_sdk_ec2::types::Filter::builder()
        .name("instance-state-name")
        .values("pending")
        .values("running")
        .build();
    let out = ec2
        .describe_instances()
        .filters(tag("byoc.dev/cluster-uid", uid))
        .filters(tag("byoc.dev/node-group", group))
        .filters(live)
        .send()
        .await?;
    Ok(out
        .reservations()
        .iter()
        .flat_map(|r| r.instances().to_vec())
        .collect())
}

/// `(size GiB, type, encrypted, KMS key)` of an instance's root volume.
async fn root_volume(g: &Ground, i: &Instance) -> Result<(i32, String, bool, Option<String>)> {
    let ec2 = aws_sdk_ec2::Client::new(&g.aws().await);
    let id = i
        .block_device_mappings()
        .first()
        .and_then(|m| m.ebs())
        .and_then(|e| e.volume_id())
        .context("no root volume")?;
    let out = ec2.describe_volumes().volume_ids(id).send().await?;
    let v = out.volumes().first().context("volume not found")?;
    Ok((
        v.size().unwrap_or_default(),
        v.volume_type()
            .map(|t| t.as_str().to_string())
            .unwrap_or_default(),
        v.encrypted().unwrap_or_default(),
        v.kms_key_id().map(str::to_string),
    ))
}

/// `(tokens, hop limit)` of an instance's metadata options.
fn metadata(i: &Instance) -> (String, i32) {
    let m = i.metadata_options();
    (
        m.and_then(|m| m.http_tokens())
            .map(|t| t.as_str().to_string())
            .unwrap_or_default(),
        m.and_then(|m| m.http_put_response_hop_limit())
            .unwrap_or_default(),
    )
}

/// What the team lists for the operator, as it lists it: in the
/// CloudAccount `acme` (`spec`, merged) and in its role's policy
/// (`options`).
async fn list_in_account(
    g: &Ground,
    spec: serde_json::Value,
    options: byoc_operator::account::iam_policy::PolicyOptions,
) -> Result<()> {
    g.api::<byoc_operator::api::CloudAccount>()
        .patch(
            "acme",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({ "spec": spec })),
        )
        .await?;
    g.grant(options)
}

/// The team's key for its nodes' root volumes.
const KEY: &str = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";

#[tokio::test]
async fn node_groups_launch_hardened_with_their_volumes_and_groups_and_roll_on_change() -> Result<()>
{
    let (g, _op) = ground_with_account("nodes", &[]).await?;
    let ec2 = aws_sdk_ec2::Client::new(&g.aws().await);
    // The user's own VPC and a security group of theirs in it.
    let vpc = ec2.create_vpc().cidr_block("10.20.0.0/16").send().await?;
    let vpc = vpc
        .vpc()
        .and_then(|v| v.vpc_id())
        .context("vpc")?
        .to_string();
    let subnet = ec2
        .create_subnet()
        .vpc_id(&vpc)
        .cidr_block("10.20.0.0/20")
        .availability_zone("us-east-1a")
        .send()
        .await?;
    let subnet = subnet
        .subnet()
        .and_then(|s| s.subnet_id())
        .context("subnet")?
        .to_string();
    let extra = ec2
        .create_security_group()
        .group_name("monitoring")
        .description("the user's")
        .vpc_id(&vpc)
        .send()
        .await?;
    let extra = extra.group_id().context("group")?.to_string();
    // The team lets the operator use its network and group.
    crate::support::let_use(&g, &ec2, [&vpc, &subnet, &extra]).await?;

    kubectl_apply(
        &g,
        &format!(
            "apiVersion: byoc.dev/v1alpha1\nkind: ComputeCluster\nmetadata: {{name: nodes}}\nspec:\n  cloudAccountRef: {{name: acme}}\n  region: us-east-1\n  network: {{existingVpcId: {vpc}, existingSubnetIds: [{subnet}]}}\n  nodeGroups:\n    - name: gpu\n      instanceType: t3.small\n      count: 1\n      rootVolume: {{sizeGiB: 50, kmsKeyId: {KEY}}}\n      additionalSecurityGroupIds: [{extra}]\n    - {{name: plain, instanceType: t3.small, count: 1}}\n"
        ),
    )?;
    // A key the account does not list: refused before anything is made.
    let refused = stalled_with(&g, "nodes", "KmsKeyNotListed").await?;
    assert!(
        refused.message.contains(KEY) && refused.message.contains("spec.kmsKeyArns"),
        "{}",
        refused.message
    );
    let uid = uid_of(&g, "nodes").await?;
    assert_eq!(
        counts(&g, &uid).await?,
        Counts::default(),
        "made before the key was listed"
    );
    // Listed in the account and in its role's policy: the same cluster runs.
    list_in_account(
        &g,
        serde_json::json!({"kmsKeyArns": [KEY]}),
        byoc_operator::account::iam_policy::PolicyOptions {
            kms_key_arns: vec![KEY.into()],
            ..Default::default()
        },
    )
    .await?;
    let cc: ComputeCluster = wait_running(&g, "nodes", |_| true).await?;
    let uid = cc.uid().context("uid")?;
    let own_group = cc
        .status
        .as_ref()
        .and_then(|s| s.network.as_ref())
        .and_then(|n| n.security_group_id.clone())
        .context("no security group in status")?;

    let gpu = instances(&g, &uid, "gpu").await?;
    let plain = instances(&g, &uid, "plain").await?;
    assert!(gpu.len() == 1 && plain.len() == 1, "one instance per group");
    for i in gpu.iter().chain(&plain) {
        assert_eq!(
            metadata(i),
            ("required".to_string(), 1),
            "not hardened by default: {:?}",
            metadata(i)
        );
    }
    let volume = root_volume(&g, &gpu[0]).await?;
    assert_eq!(
        volume,
        (50, "gp3".to_string(), true, Some(KEY.to_string())),
        "gpu root volume: {volume:?}"
    );
    let mut groups: Vec<&str> = gpu[0]
        .security_groups()
        .iter()
        .filter_map(|s| s.group_id())
        .collect();
    groups.sort();
    let mut want = vec![extra.as_str(), own_group.as_str()];
    want.sort();
    assert_eq!(groups, want, "gpu security groups: {groups:?}");
    let plain_groups: Vec<&str> = plain[0]
        .security_groups()
        .iter()
        .filter_map(|s| s.group_id())
        .collect();
    assert_eq!(
        plain_groups,
        vec![own_group.as_str()],
        "plain security groups: {plain_groups:?}"
    );

    // A launch change rolls that group only, new instance first.
    let (old_gpu, old_plain) = (
        gpu[0].instance_id().context("id")?.to_string(),
        plain[0].instance_id().context("id")?.to_string(),
    );
    patch_spec(
        &g,
        "nodes",
        serde_json::json!({"nodeGroups": [
            {"name": "gpu", "instanceType": "t3.small", "count": 1,
             "rootVolume": {"sizeGiB": 50, "kmsKeyId": KEY},
             "additionalSecurityGroupIds": [extra],
             "metadataOptions": {"httpPutResponseHopLimit": 2}},
            {"name": "plain", "instanceType": "t3.small", "count": 1}
        ]}),
    )
    .await?;
    let rolled = eventually("the gpu group rolled", crate::clusters::WAIT, || async {
        let now = instances(&g, &uid, "gpu").await?;
        let done = now.len() == 1
            && now
                .iter()
                .all(|i| i.instance_id() != Some(old_gpu.as_str()));
        Ok(done.then_some(now))
    })
    .await?;
    assert_eq!(
        metadata(&rolled[0]),
        ("required".to_string(), 2),
        "the new instance's metadata options: {:?}",
        metadata(&rolled[0])
    );
    let plain_now = instances(&g, &uid, "plain").await?;
    assert!(
        plain_now.len() == 1 && plain_now[0].instance_id() == Some(old_plain.as_str()),
        "the plain group was replaced too"
    );
    wait_running(&g, "nodes", |cc| {
        cc.status
            .as_ref()
            .is_some_and(|s| s.node_groups.iter().all(|n| n.running == n.desired))
    })
    .await?;

    // Deleted: nothing of the cluster's left, the user's group untouched.
    delete_leaves_nothing(&g, "nodes", &uid).await?;
    let still = ec2
        .describe_security_groups()
        .group_ids(&extra)
        .send()
        .await?;
    assert_eq!(
        still.security_groups().len(),
        1,
        "the user's security group was deleted"
    );
    Ok(())
}

/// The user data of `instance`, decoded.
async fn user_data_of(g: &Ground, instance: &str) -> Result<String> {
    let ec2 = aws_sdk_ec2::Client::new(&g.aws().await);
    let out = ec2
        .describe_instance_attribute()
        .instance_id(instance)
        .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
        .send()
        .await?;
    let encoded = out
        .user_data()
        .and_then(|u| u.value())
        .context("no user data")?;
    Ok(String::from_utf8(aws_smithy_types::base64::decode(
        encoded,
    )?)?)
}

fn boot_secret(content: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: boot, labels: {{byoc.dev/use: user-data}}}}\nstringData:\n  user-data: {}\n",
        serde_json::to_string(content).unwrap_or_default()
    )
}

#[tokio::test]
async fn user_data_from_a_secret_reaches_the_instances_never_the_logs_and_its_change_rolls(
) -> Result<()> {
    let g = ground_with_crds("user-data").await?;
    let op = Operator::start(&g, &["--progress-poll", "1s"], &[("RUST_LOG", "trace")])?;
    ready_account(&g).await?;
    let marker = |n: u32| format!("byoc-marker-{}-{n}", g.namespace);
    let script = |n: u32| format!("#!/bin/sh\necho {}\n", marker(n));
    kubectl_apply(
        &g,
        &small_cluster_manifest("boot", "10.21.0.0/16").edited(
            "subnets: public}]",
            "subnets: public, userDataSecretRef: {name: boot, key: user-data}}]",
        ),
    )?;
    // No Secret yet: stalled, naming it, and nothing made in AWS.
    let clusters = g.api::<ComputeCluster>();
    let stalled = stalled_with(&g, "boot", "UserDataNotFound").await?;
    assert!(
        stalled.message.contains("Secret boot key user-data"),
        "the condition does not name the Secret and key: {}",
        stalled.message
    );
    let uid = clusters.get("boot").await?.uid().context("uid")?;
    assert_eq!(
        counts(&g, &uid).await?,
        Counts::default(),
        "something was made in AWS"
    );

    // The Secret appears (it is watched): the instance boots with it.
    kubectl_apply(&g, &boot_secret(&script(1)))?;
    wait_running(&g, "boot", |_| true).await?;
    let first = instances(&g, &uid, "workers").await?;
    let first = first
        .first()
        .and_then(|i| i.instance_id())
        .context("no instance")?
        .to_string();
    assert_eq!(
        user_data_of(&g, &first).await?,
        script(1),
        "the instance's user data"
    );

    // Its content changes: the group rolls to it.
    kubectl_apply(&g, &boot_secret(&script(2)))?;
    let second = eventually(
        "the group rolled to the new user data",
        crate::clusters::WAIT,
        || async {
            let now = instances(&g, &uid, "workers").await?;
            let ids: Vec<String> = now
                .iter()
                .filter_map(|i| i.instance_id())
                .map(String::from)
                .collect();
            Ok((ids.len() == 1 && ids[0] != first).then(|| ids[0].clone()))
        },
    )
    .await?;
    assert_eq!(
        user_data_of(&g, &second).await?,
        script(2),
        "the new instance's user data"
    );
    wait_running(&g, "boot", |_| true).await?;

    // Never in a log line (at trace), an Event, a status or a metric.
    let encoded: Vec<String> = [script(1), script(2)]
        .iter()
        .map(aws_smithy_types::base64::encode)
        .collect();
    let (m1, m2) = (marker(1), marker(2));
    assert_no_key_material(&g, &op, &[&m1, &m2, &encoded[0], &encoded[1]]).await?;
    delete_leaves_nothing(&g, "boot", &uid).await
}

/// Public keys (test-only, their private halves thrown away).
const KEY_1: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH73m9lZlnmLpuGD++pBvnoBMyz5zK7kBMXmsmSsquZi test1";
const KEY_2: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBCv19aw1SJmRitogpPyybHjG3tCEHmdx9YdQX+AQ/nu test2";

/// Key pair names in moto, and whether each carries the cluster's tag.
async fn key_pairs(g: &Ground, uid: &str) -> Result<Vec<(String, bool)>> {
    let ec2 = aws_sdk_ec2::Client::new(&g.aws().await);
    let out = ec2.describe_key_pairs().send().await?;
    Ok(out
        .key_pairs()
        .iter()
        .map(|k| {
            let ours = k
                .tags()
                .iter()
                .any(|t| t.key() == Some("byoc.dev/cluster-uid") && t.value() == Some(uid));
            (k.key_name().unwrap_or_default().to_string(), ours)
        })
        .collect())
}

#[tokio::test]
async fn ssh_keys_brought_are_used_and_public_keys_are_imported_owned_and_rolled() -> Result<()> {
    let (g, _op) = ground_with_account("ssh-keys", &[]).await?;
    let ec2 = aws_sdk_ec2::Client::new(&g.aws().await);
    let manifest = |key: &str| {
        small_cluster_manifest("keys", "10.22.0.0/16").edited(
            "nodeGroups: [{name: workers, instanceType: t3.small, count: 1, subnets: public}]",
            &format!("nodeGroups:\n    - {{name: workers, instanceType: t3.small, count: 1, subnets: public, sshPublicKey: \"{key}\"}}\n    - {{name: admin, instanceType: t3.small, count: 1, subnets: public, sshKeyName: alice}}"),
        )
    };
    // A key the schema's pattern admits but whose body is no key: stalled
    // before anything is made (EC2 would refuse it after the network).
    kubectl_apply(&g, &manifest("ssh-ed25519 AAAAnotakeyatall test"))?;
    let stalled = stalled_with(&g, "keys", "InvalidSpec").await?;
    assert!(
        stalled
            .message
            .contains("nodeGroups workers: sshPublicKey is not an OpenSSH public key"),
        "the condition does not name the key: {}",
        stalled.message
    );
    let uid = uid_of(&g, "keys").await?;
    assert_eq!(
        counts(&g, &uid).await?,
        Counts::default(),
        "something was made in AWS"
    );
    // The brought key pair does not exist yet: stalled, naming it, and no
    // instance launched (moto would launch with any name; AWS refuses).
    kubectl_apply(&g, &manifest(KEY_1))?;
    let stalled = stalled_with(&g, "keys", "KeyPairNotFound").await?;
    assert!(
        stalled
            .message
            .contains("key pair alice (nodeGroups admin: sshKeyName)"),
        "the condition does not name the key pair: {}",
        stalled.message
    );
    assert!(
        counts(&g, &uid).await?.instances.is_empty(),
        "an instance was launched"
    );
    let alice = ec2
        .import_key_pair()
        .key_name("alice")
        .public_key_material(aws_smithy_types::Blob::new(KEY_2.as_bytes()))
        .send()
        .await?;
    // The team lets this installation use its key pair.
    let alice = alice.key_pair_id().context("key pair id")?.to_string();
    crate::support::let_use(&g, &ec2, [&alice]).await?;
    let cc = wait_running(&g, "keys", |_| true).await?;
    let uid = cc.uid().context("uid")?;
    let key_of = |i: &Instance| i.key_name().unwrap_or_default().to_string();
    let workers = instances(&g, &uid, "workers").await?;
    let admin = instances(&g, &uid, "admin").await?;
    assert!(
        admin.len() == 1 && key_of(&admin[0]) == "alice",
        "the brought key is not used"
    );
    let owned: Vec<String> = key_pairs(&g, &uid)
        .await?
        .into_iter()
        .filter(|k| k.1)
        .map(|k| k.0)
        .collect();
    assert!(
        owned.len() == 1 && workers.len() == 1 && key_of(&workers[0]) == owned[0],
        "the imported key: {owned:?}, instance key {:?}",
        workers.first().map(key_of)
    );

    // A new public key: imported, the group rolled to it, the old pair gone.
    kubectl_apply(&g, &manifest(KEY_2))?;
    let old = owned[0].clone();
    eventually(
        "rolled to the new key, the old pair deleted",
        crate::clusters::WAIT,
        || async {
            let pairs = key_pairs(&g, &uid).await?;
            let owned: Vec<&String> = pairs.iter().filter(|k| k.1).map(|k| &k.0).collect();
            let now = instances(&g, &uid, "workers").await?;
            let rolled = now.len() == 1
                && owned.len() == 1
                && *owned[0] != old
                && key_of(&now[0]) == *owned[0];
            Ok(rolled.then_some(()))
        },
    )
    .await?;
    let admin_now = instances(&g, &uid, "admin").await?;
    assert!(
        admin_now.len() == 1 && admin_now[0].instance_id() == admin[0].instance_id(),
        "the admin group was replaced too"
    );

    // Deleted: the owned pair goes, the brought one stays.
    delete_leaves_nothing(&g, "keys", &uid).await?;
    let left = key_pairs(&g, &uid).await?;
    assert_eq!(
        left,
        vec![("alice".to_string(), false)],
        "key pairs after deletion: {left:?}"
    );
    Ok(())
}

/// Rolls `group` to `hop_limit` and samples AWS until done: `(lowest
/// running, highest live)` seen, and the passes of status seen rolling.
async fn roll_and_sample(
    g: &Ground,
    uid: &str,
    rollout: serde_json::Value,
    hop_limit: i32,
) -> Result<(usize, usize, bool)> {
    patch_spec(
        g,
        "roll",
        serde_json::json!({"nodeGroups": [{
            "name": "workers", "instanceType": "t3.small", "count": 4, "subnets": "public",
            "rollout": rollout, "metadataOptions": {"httpPutResponseHopLimit": hop_limit}
        }]}),
    )
    .await?;
    let clusters = g.api::<ComputeCluster>();
    let (lowest, highest, said) = (Cell::new(usize::MAX), Cell::new(0), Cell::new(false));
    eventually("the group rolled", crate::clusters::WAIT, || async {
        let now = instances(g, uid, "workers").await?;
        let running = now
            .iter()
            .filter(|i| i.state().and_then(|s| s.name()).map(|n| n.as_str()) == Some("running"))
            .count();
        let rolled = now.iter().filter(|i| metadata(i).1 == hop_limit).count();
        let cc = clusters.get("roll").await?;
        let rolling = cc.status.iter().flat_map(|s| s.conditions.iter()).any(|c| {
            c.type_ == "NodeGroupsReady"
                && c.reason == "RollingUpdate"
                && c.message.contains("of 4 updated")
        });
        lowest.set(lowest.get().min(running));
        highest.set(highest.get().max(now.len()));
        said.set(said.get() || rolling);
        Ok((now.len() == 4 && running == 4 && rolled == 4).then_some(()))
    })
    .await?;
    Ok((lowest.get(), highest.get(), said.get()))
}

#[tokio::test]
async fn a_launch_change_rolls_within_max_surge_and_max_unavailable() -> Result<()> {
    let (g, _op) = ground_with_account("rollout", &[]).await?;
    // Instances take a while to run, as on AWS, so the bounds are tested.
    g.proxy.set_faults(testground::Faults {
        pending: std::time::Duration::from_secs(1),
        ..Default::default()
    });
    kubectl_apply(
        &g,
        &small_cluster_manifest("roll", "10.23.0.0/16").edited("count: 1", "count: 4"),
    )?;
    let cc = wait_running(&g, "roll", |_| true).await?;
    let uid = cc.uid().context("uid")?;

    let surge = roll_and_sample(
        &g,
        &uid,
        serde_json::json!({"maxSurge": 1, "maxUnavailable": 0}),
        2,
    )
    .await?;
    println!(
        "rollout maxSurge 1 / maxUnavailable 0: running at least {}, live at most {}",
        surge.0, surge.1
    );
    assert!(
        surge.0 >= 4 && surge.1 <= 5,
        "surge bounds broken: {surge:?}"
    );
    let unavailable = roll_and_sample(
        &g,
        &uid,
        serde_json::json!({"maxSurge": 0, "maxUnavailable": 1}),
        3,
    )
    .await?;
    println!(
        "rollout maxSurge 0 / maxUnavailable 1: running at least {}, live at most {}",
        unavailable.0, unavailable.1
    );
    assert!(
        unavailable.0 >= 3 && unavailable.1 <= 4,
        "unavailable bounds broken: {unavailable:?}"
    );
    assert!(surge.2 || unavailable.2, "status never said it was rolling");
    let done = wait_running(&g, "roll", |cc| {
        cc.status.as_ref().is_some_and(|s| {
            s.node_groups
                .iter()
                .all(|n| n.updated == 4 && n.running == 4)
        })
    })
    .await?;
    delete_leaves_nothing(&g, "roll", &done.uid().context("uid")?).await
}

/// The managed policies attached to role `name`, sorted.
async fn attached(iam: &aws_sdk_iam::Client, name: &str) -> Result<Vec<String>> {
    let out = iam
        .list_attached_role_policies()
        .role_name(name)
        .send()
        .await?;
    let mut arns: Vec<String> = out
        .attached_policies()
        .iter()
        .filter_map(|p| p.policy_arn().map(String::from))
        .collect();
    arns.sort();
    Ok(arns)
}

/// The instance profile ARN each live instance of the group launched with.
async fn profiles_of(g: &Ground, uid: &str, group: &str) -> Result<Vec<String>> {
    Ok(instances(g, uid, group)
        .await?
        .iter()
        .map(|i| {
            i.iam_instance_profile()
                .and_then(|p| p.arn())
                .unwrap_or_default()
                .to_string()
        })
        .collect())
}

#[tokio::test]
async fn node_role_policies_follow_the_list_and_a_brought_instance_profile_is_used_untouched(
) -> Result<()> {
    let (g, _op) = ground_with_account("node-iam", &[]).await?;
    // The admin lists the team's profile's role to be passed
    // (`--pass-role`) and the policies its nodes may get
    // (`--managed-policy-arn`).
    let managed = ["nodes-logs", "nodes-s3", "nodes-missing"]
        .map(|p| format!("arn:aws:iam::123456789012:policy/{p}"));
    g.grant(byoc_operator::account::iam_policy::PolicyOptions {
        pass_roles: vec!["arn:aws:iam::123456789012:role/team-nodes".into()],
        managed_policy_arns: managed.to_vec(),
        ..Default::default()
    })?;
    // AWS refuses to delete a role with policies attached; moto does not.
    g.proxy.set_faults(testground::Faults {
        dependencies: true,
        ..Default::default()
    });
    let iam = aws_sdk_iam::Client::new(&g.aws().await);
    let manifest = |block: &str| {
        small_cluster_manifest("roles", "10.23.0.0/16")
            .edited("  nodeGroups:", &format!("  iam: {block}\n  nodeGroups:"))
    };

    // A brought profile that does not exist yet: stalled, nothing launched.
    kubectl_apply(&g, &manifest("{instanceProfileName: team-nodes}"))?;
    let stalled = stalled_with(&g, "roles", "InstanceProfileNotFound").await?;
    assert!(
        stalled.message.contains("instance profile team-nodes"),
        "the condition does not name the profile: {}",
        stalled.message
    );
    let clusters = g.api::<ComputeCluster>();
    let uid = clusters.get("roles").await?.uid().context("uid")?;
    assert!(
        counts(&g, &uid).await?.instances.is_empty(),
        "an instance was launched"
    );

    // It appears (the user's, untagged): the nodes launch with it, and the
    // operator makes no role or profile of its own.
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    iam.create_role()
        .role_name("team-nodes")
        .assume_role_policy_document(trust)
        .send()
        .await?;
    let brought = iam
        .create_instance_profile()
        .instance_profile_name("team-nodes")
        .send()
        .await?
        .instance_profile()
        .map(|p| p.arn().to_string())
        .context("no profile ARN")?;
    iam.add_role_to_instance_profile()
        .instance_profile_name("team-nodes")
        .role_name("team-nodes")
        .send()
        .await?;
    let snapshot = || async {
        let profile = iam
            .get_instance_profile()
            .instance_profile_name("team-nodes")
            .send()
            .await?;
        let role = iam.get_role().role_name("team-nodes").send().await?;
        anyhow::Ok(format!(
            "{:?} {:?} {:?}",
            profile.instance_profile(),
            role.role(),
            attached(&iam, "team-nodes").await?
        ))
    };
    let before = snapshot().await?;
    let cc = wait_running(&g, "roles", |_| true).await?;
    assert_eq!(
        profiles_of(&g, &uid, "workers").await?,
        vec![brought.clone()],
        "the nodes do not use the brought profile"
    );
    let status_iam = cc.status.and_then(|s| s.iam).context("no iam status")?;
    assert!(
        status_iam.instance_profile_arn.as_deref() == Some(brought.as_str())
            && status_iam.role_name.as_deref() == Some("team-nodes"),
        "status.iam: {status_iam:?}"
    );
    assert_eq!(counts(&g, &uid).await?.roles, 0, "a role of the operator's");

    // The operator's role with two of the account's policies instead: made,
    // the policies attached, the group rolled onto its profile.
    let mut policies = Vec::new();
    for name in ["nodes-logs", "nodes-s3"] {
        let out = iam
            .create_policy()
            .policy_name(name)
            .policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}"#)
            .send()
            .await?;
        policies.push(
            out.policy()
                .and_then(|p| p.arn())
                .context("no ARN")?
                .to_string(),
        );
    }
    let list = |arns: &[&str]| format!("{{managedPolicyArns: [{}]}}", arns.join(", "));
    kubectl_apply(&g, &manifest(&list(&[&policies[0], &policies[1]])))?;
    let role = eventually(
        "the operator's role with both policies",
        crate::clusters::WAIT,
        || async {
            let cc = clusters.get("roles").await?;
            let s = cc.status.and_then(|s| s.iam).unwrap_or_default();
            let Some(role) = s.role_name.filter(|r| r.starts_with("byoc-")) else {
                return Ok(None);
            };
            let rolled = profiles_of(&g, &uid, "workers").await?
                == vec![s.instance_profile_arn.clone().unwrap_or_default()];
            Ok((rolled && attached(&iam, &role).await? == policies).then_some(role))
        },
    )
    .await?;
    let nodes = instances(&g, &uid, "workers").await?;

    // A policy that does not exist: stalled, naming it.
    let missing = policies[0].edited("nodes-logs", "nodes-missing");
    kubectl_apply(&g, &manifest(&list(&[&policies[1], &missing])))?;
    let stalled = stalled_with(&g, "roles", "IamPolicyNotFound").await?;
    assert!(
        stalled.message.contains(&missing),
        "the condition does not name the policy: {}",
        stalled.message
    );

    // One removed from the list: detached; no instance replaced.
    kubectl_apply(&g, &manifest(&list(&[&policies[1]])))?;
    eventually(
        "the removed policy detached",
        crate::clusters::WAIT,
        || async {
            let cc = clusters.get("roles").await?;
            let ready = cc.status.as_ref().is_some_and(|s| {
                s.phase == Some(byoc_operator::api::ClusterPhase::Running)
                    && s.iam
                        .as_ref()
                        .is_some_and(|i| i.managed_policy_arns == vec![policies[1].clone()])
            });
            Ok((ready && attached(&iam, &role).await? == vec![policies[1].clone()]).then_some(()))
        },
    )
    .await?;
    let ids = |v: &[Instance]| {
        v.iter()
            .map(|i| i.instance_id().unwrap_or_default().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(&instances(&g, &uid, "workers").await?),
        ids(&nodes),
        "a policy change replaced instances"
    );

    // Deleted: the role goes (its policy detached first: AWS, as the proxy
    // plays it, refuses to delete a role with policies attached).
    let refused = aws_sdk_iam::Client::new(&g.aws_through_proxy().await)
        .delete_role()
        .role_name(&role)
        .send()
        .await;
    assert_eq!(
        refused
            .as_ref()
            .err()
            .and_then(|e| e.as_service_error())
            .and_then(|e| e.meta().code()),
        Some("DeleteConflict"),
        "DeleteRole with a policy attached: {refused:?}"
    );
    delete_leaves_nothing(&g, "roles", &uid).await?;
    assert!(
        iam.get_role().role_name(&role).send().await.is_err(),
        "the operator's role is left"
    );
    let after = snapshot().await?;
    assert_eq!(
        before, after,
        "the brought profile changed:\n{before}\n{after}"
    );
    Ok(())
}

/// The images the live instances of the group run, sorted.
async fn images_of(g: &Ground, uid: &str, group: &str) -> Result<Vec<String>> {
    let mut images: Vec<String> = instances(g, uid, group)
        .await?
        .iter()
        .map(|i| i.image_id().unwrap_or_default().to_string())
        .collect();
    images.sort();
    Ok(images)
}

/// The newest Amazon Linux 2023 x86_64 image as the operator finds it.
async fn newest_default(ec2: &aws_sdk_ec2::Client) -> Result<(String, String)> {
    let out = ec2
        .describe_images()
        .owners("amazon")
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("name")
                .values("al2023-ami-2023.*-x86_64")
                .build(),
        )
        .send()
        .await?;
    out.images()
        .iter()
        .filter(|i| i.name().is_some_and(|n| !n.contains("minimal")))
        .max_by(|a, b| {
            a.creation_date()
                .cmp(&b.creation_date())
                .then_with(|| a.name().cmp(&b.name()))
        })
        .map(|i| {
            (
                i.image_id().unwrap_or_default().to_string(),
                i.name().unwrap_or_default().to_string(),
            )
        })
        .context("no default image")
}

#[tokio::test]
async fn the_default_image_is_pinned_across_restarts_and_refreshed_only_when_asked() -> Result<()> {
    let (g, op) = ground_with_account("image-pin", &[]).await?;
    // Amazon publishing a newer image is played by an image the account
    // copies, which the proxy answers as Amazon's.
    g.proxy.set_faults(testground::Faults {
        own_images_as_amazon: true,
        ..Default::default()
    });
    kubectl_apply(&g, &small_cluster_manifest("pin", "10.24.0.0/16"))?;
    let cc = wait_running(&g, "pin", |_| true).await?;
    let uid = cc.uid().context("uid")?;
    let proxied = aws_sdk_ec2::Client::new(&g.aws_through_proxy().await);
    let (first, name) = newest_default(&proxied).await?;
    let pinned = |cc: &ComputeCluster| {
        cc.status
            .as_ref()
            .and_then(|s| s.node_groups.first())
            .and_then(|n| n.image_id.clone())
    };
    assert!(
        pinned(&cc).as_deref() == Some(first.as_str())
            && images_of(&g, &uid, "workers").await? == vec![first.clone()],
        "pinned {:?}, expected {first}",
        pinned(&cc)
    );

    // Amazon publishes a newer image (control: the operator's query finds it).
    let ec2 = aws_sdk_ec2::Client::new(&g.aws().await);
    let newer_name = name.replacen("al2023-ami-2023.", "al2023-ami-2023.99.", 1);
    let newer = ec2
        .copy_image()
        .source_image_id(&first)
        .source_region("us-east-1")
        .name(&newer_name)
        .send()
        .await?
        .image_id()
        .context("no image ID")?
        .to_string();
    assert_eq!(
        newest_default(&proxied).await?.0,
        newer,
        "the newer image is not what a default lookup finds"
    );

    // A restart and a scale-up: the new instance runs the pinned image.
    drop(op);
    let _op = Operator::start(&g, &["--progress-poll", "1s"], &[])?;
    crate::clusters::patch_spec(
        &g,
        "pin",
        serde_json::json!({"nodeGroups": [{"name": "workers", "instanceType": "t3.small", "count": 2, "subnets": "public"}]}),
    )
    .await?;
    let cc = wait_running(&g, "pin", |cc| {
        cc.status
            .as_ref()
            .and_then(|s| s.node_groups.first())
            .is_some_and(|n| n.running == 2)
    })
    .await?;
    assert!(
        images_of(&g, &uid, "workers").await? == vec![first.clone(), first.clone()]
            && pinned(&cc).as_deref() == Some(first.as_str()),
        "after a restart and a scale-up: {:?}, pinned {:?}",
        images_of(&g, &uid, "workers").await?,
        pinned(&cc)
    );

    // The refresh asked for: the group rolls to the newer image.
    let clusters = g.api::<ComputeCluster>();
    clusters
        .patch(
            "pin",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({
                "metadata": {"annotations": {"byoc.dev/refresh-images": "1"}}
            })),
        )
        .await?;
    eventually(
        "rolled to the newer image",
        crate::clusters::WAIT,
        || async {
            let cc = clusters.get("pin").await?;
            let s = cc.status.clone().unwrap_or_default();
            let done = pinned(&cc).as_deref() == Some(newer.as_str())
                && s.image_refresh.as_deref() == Some("1")
                && s.phase == Some(byoc_operator::api::ClusterPhase::Running)
                && images_of(&g, &uid, "workers").await? == vec![newer.clone(), newer.clone()];
            Ok(done.then_some(()))
        },
    )
    .await?;
    delete_leaves_nothing(&g, "pin", &uid).await
}

/// An owner of AMIs other than Amazon and the cluster's account.
const OTHER_OWNER: &str = "210987654321";

#[tokio::test]
async fn an_image_of_an_owner_the_account_does_not_list_is_refused_and_boots_once_listed(
) -> Result<()> {
    let (g, _op) = ground_with_account("image-owner", &[]).await?;
    let ec2 = aws_sdk_ec2::Client::new(&g.aws().await);
    let amazon = ec2.describe_images().owners("amazon").send().await?;
    let amazon = amazon
        .images()
        .iter()
        .find_map(|i| i.image_id())
        .context("an Amazon image")?
        .to_string();
    let theirs = g
        .moto
        .foreign_image("123456789012", "us-east-1", OTHER_OWNER, &amazon)?;
    let manifest = small_cluster_manifest("imaged", "10.30.0.0/16").edited(
        "instanceType: t3.small,",
        &format!("instanceType: t3.small, imageId: {theirs},"),
    );
    assert!(manifest.contains(&theirs), "{manifest}");
    kubectl_apply(&g, &manifest)?;
    // Not listed: refused before a launch, and the policy would deny the
    // launch too (the table of tests/it/iam.rs).
    let refused = stalled_with(&g, "imaged", "ImageOwnerNotAllowed").await?;
    assert!(
        refused.message.contains(&theirs)
            && refused.message.contains(OTHER_OWNER)
            && refused.message.contains("spec.imageOwners"),
        "{}",
        refused.message
    );
    let uid = uid_of(&g, "imaged").await?;
    assert!(
        counts(&g, &uid).await?.instances.is_empty(),
        "launched from an image of an owner not listed"
    );
    // Listed in the account and in its role's policy: it boots.
    list_in_account(
        &g,
        serde_json::json!({"imageOwners": [OTHER_OWNER]}),
        byoc_operator::account::iam_policy::PolicyOptions {
            image_owners: vec![OTHER_OWNER.into()],
            ..Default::default()
        },
    )
    .await?;
    let cc = wait_running(&g, "imaged", |_| true).await?;
    let image = cc
        .status
        .as_ref()
        .and_then(|s| s.node_groups.first())
        .and_then(|n| n.image_id.clone());
    assert_eq!(image.as_deref(), Some(theirs.as_str()));
    delete_leaves_nothing(&g, "imaged", &uid).await
}
