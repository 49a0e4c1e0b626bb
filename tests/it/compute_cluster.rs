//! ComputeCluster against the real apiserver and moto, with the operator as
//! a process: reach `running`, scale, replace, repair drift, survive SIGKILL,
//! use a bring-your-own network, and delete to nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, Result};
use aws_sdk_ec2::types::Filter;
use byoc_operator::api::ComputeCluster;
use kube::ResourceExt;

use crate::clusters::{
    apply_example, counts, delete_and_wait_gone, delete_leaves_nothing, delete_subnet_out_of_band,
    expected_example, ground_with_account, patch_spec, ready_account, small_cluster_manifest,
    wait_counts, wait_gone, wait_running, Counts, WAIT,
};
use crate::support::{
    eventually, ground_with_crds, kubectl_apply, kubectl_apply_in, Edited, Ground, Operator,
    OperatorExt,
};

#[tokio::test]
async fn example_cluster_runs_scales_repairs_and_deletes() -> Result<()> {
    lifecycle("cc-lifecycle", None).await
}

/// The same life against AWS's behaviour as a whole, at a twentieth of
/// AWS's durations: NAT gateways pending 3–6 s and deleting 1.5–3 s,
/// instances pending 0.5–1.5 s and shutting down 1.5–3 s, instance
/// profiles unusable for 0.4–0.6 s, new resources missing from describes
/// (and half the calls naming them NotFound) for 50–100 ms, deletions
/// refused while their dependents drain, EC2's and IAM's rate limits.
#[tokio::test]
async fn example_cluster_lives_the_same_against_aws_realism() -> Result<()> {
    lifecycle("cc-realism", Some(testground::Realism::aws(0.05))).await
}

async fn lifecycle(name: &str, realism: Option<testground::Realism>) -> Result<()> {
    let g = ground_with_crds(name).await?;
    let realistic = realism.is_some();
    g.proxy.set_faults(testground::Faults {
        realism,
        ..Default::default()
    });
    let op = Operator::start(
        &g,
        &["--progress-poll", "1s", "--resync-interval", "3s"],
        &[],
    )?;
    let result = lifecycle_steps(&g).await;
    if realistic {
        println!(
            "under the realism profile: {} calls, {} throttled",
            g.proxy.calls().values().sum::<u64>(),
            g.proxy.throttled()
        );
    }
    result.with_context(|| format!("operator log tail:\n{}", op.log_tail(40)))
}

async fn lifecycle_steps(g: &Ground) -> Result<()> {
    ready_account(g).await?;
    apply_example(g)?;

    // Reaches running; everything exists, tagged, in the numbers the spec asks.
    let cc = wait_running(g, "demo", |_| true).await?;
    let uid = cc.uid().context("uid")?;
    let c = counts(g, &uid).await?;
    let expected = expected_example(3);
    anyhow::ensure!(
        c == expected,
        "resources in moto: {c:?}, expected {expected:?}"
    );
    let status = cc.status.clone().unwrap_or_default();
    let network = status.network.clone().unwrap_or_default();
    anyhow::ensure!(
        network.vpc_id.is_some() && network.subnets.len() == 4,
        "status lacks network IDs"
    );
    anyhow::ensure!(
        status.nodes.as_deref() == Some("4/4"),
        "nodes: {:?}",
        status.nodes
    );
    anyhow::ensure!(
        status.iam.and_then(|i| i.instance_profile_arn).is_some(),
        "status lacks the instance profile"
    );
    // User tags travel with the ownership tags.
    let ec2 = aws_sdk_ec2::Client::new(&g.aws().await);
    let vpc = ec2
        .describe_vpcs()
        .vpc_ids(network.vpc_id.clone().unwrap_or_default())
        .send()
        .await?;
    let tags: Vec<(String, String)> = vpc
        .vpcs()
        .iter()
        .flat_map(|v| v.tags())
        .map(|t| {
            (
                t.key().unwrap_or_default().to_string(),
                t.value().unwrap_or_default().to_string(),
            )
        })
        .collect();
    for (k, v) in [("team", "demo"), ("byoc.dev/managed-by", "byoc-operator")] {
        anyhow::ensure!(
            tags.contains(&(k.into(), v.into())),
            "VPC lacks tag {k}={v}: {tags:?}"
        );
    }

    // Scale 3 → 5 → 1.
    for count in [5, 1] {
        patch_spec(g, "demo", serde_json::json!({"nodeGroups": [
            {"name": "workers", "instanceType": "t3.large", "count": count, "subnets": "private"},
            {"name": "gpu", "instanceType": "g5.xlarge", "count": 1, "spot": true, "subnets": "private"}
        ]}))
        .await?;
        wait_running(g, "demo", |_| true).await?;
        let c = wait_counts(g, &uid, &format!("{count} workers"), |c| {
            c.instances.get("t3.large") == Some(&(count as usize))
        })
        .await?;
        anyhow::ensure!(
            c.instances() == count as usize + 1,
            "after scaling to {count}: {:?}",
            c.instances
        );
    }

    // A new instance type replaces the group's instances.
    patch_spec(g, "demo", serde_json::json!({"nodeGroups": [
        {"name": "workers", "instanceType": "m6i.large", "count": 2, "subnets": "private"},
        {"name": "gpu", "instanceType": "g5.xlarge", "count": 1, "spot": true, "subnets": "private"}
    ]}))
    .await?;
    wait_running(g, "demo", |_| true).await?;
    wait_counts(g, &uid, "workers replaced by m6i.large", |c| {
        c.instances.get("m6i.large") == Some(&2) && !c.instances.contains_key("t3.large")
    })
    .await?;

    // Drift: a subnet, the NAT gateway and an instance deleted out of band come back.
    let before = counts(g, &uid).await?;
    let cc = g.api::<ComputeCluster>().get("demo").await?;
    let network = cc
        .status
        .clone()
        .unwrap_or_default()
        .network
        .unwrap_or_default();
    let public_b = network
        .subnets
        .iter()
        .find(|s| s.public && s.zone == "us-east-1b")
        .context("no public subnet in us-east-1b")?;
    delete_subnet_out_of_band(&ec2, &public_b.id).await?;
    // A public subnet's public IPs switched off.
    let public_a = network
        .subnets
        .iter()
        .find(|s| s.public && s.zone == "us-east-1a")
        .context("no public subnet in us-east-1a")?
        .id
        .clone();
    ec2.modify_subnet_attribute()
        .subnet_id(&public_a)
        .map_public_ip_on_launch(
            aws_sdk_ec2::types::AttributeBooleanValue::builder()
                .value(false)
                .build(),
        )
        .send()
        .await?;
    let nat = network
        .nat_gateway_ids
        .first()
        .context("no NAT gateway in status")?;
    // Through the proxy, which lets go of the gateway's interface as AWS
    // does (moto keeps it).
    aws_sdk_ec2::Client::new(&g.aws_through_proxy().await)
        .delete_nat_gateway()
        .nat_gateway_id(nat)
        .send()
        .await?;
    let victim = cc
        .status
        .as_ref()
        .and_then(|s| s.node_groups.iter().find(|g| g.name == "workers"))
        .and_then(|g| g.instance_ids.first().cloned())
        .context("no worker instance in status")?;
    ec2.terminate_instances()
        .instance_ids(&victim)
        .send()
        .await?;
    let after_drift = counts(g, &uid).await?;
    anyhow::ensure!(
        after_drift.subnets == 3 && after_drift.nat_gateways == 0,
        "the drift did not happen: {after_drift:?}"
    );
    let repaired = wait_counts(g, &uid, "drift repaired", |c| c == &before).await?;
    anyhow::ensure!(repaired == before, "repaired");
    // The status catches up with the repair: running with the new gateway.
    let nat_in_status = |cc: &ComputeCluster| {
        cc.status
            .as_ref()
            .and_then(|s| s.network.as_ref())
            .and_then(|n| n.nat_gateway_ids.first().cloned())
    };
    let cc = wait_running(g, "demo", |cc| {
        nat_in_status(cc).is_some_and(|id| &id != nat)
    })
    .await
    .context("the NAT gateway was not replaced in status")?;
    anyhow::ensure!(
        nat_in_status(&cc).is_some_and(|id| repaired.nat_gateways == 1 && &id != nat),
        "the NAT gateway was not replaced"
    );

    eventually("public IPs on again", WAIT, || async {
        let out = ec2.describe_subnets().subnet_ids(&public_a).send().await?;
        Ok(out
            .subnets()
            .iter()
            .any(|s| s.map_public_ip_on_launch() == Some(true))
            .then_some(()))
    })
    .await?;

    // Deletion leaves nothing with our tags.
    delete_leaves_nothing(g, "demo", &uid).await?;
    Ok(())
}

#[tokio::test]
async fn bring_your_own_network_is_used_and_left_alone() -> Result<()> {
    let g = ground_with_crds("cc-byo").await?;
    let ec2 = aws_sdk_ec2::Client::new(&g.aws().await);
    // The team's network, and a neighbour's VPC with the same CIDR.
    let vpc = ec2.create_vpc().cidr_block("10.50.0.0/16").send().await?;
    let vpc_id = vpc
        .vpc()
        .and_then(|v| v.vpc_id())
        .context("vpc")?
        .to_string();
    ec2.create_vpc().cidr_block("10.50.0.0/16").send().await?;
    let mut subnet_ids = Vec::new();
    for (zone, cidr) in [
        ("us-east-1a", "10.50.1.0/24"),
        ("us-east-1b", "10.50.2.0/24"),
    ] {
        let s = ec2
            .create_subnet()
            .vpc_id(&vpc_id)
            .availability_zone(zone)
            .cidr_block(cidr)
            .send()
            .await?;
        subnet_ids.push(
            s.subnet()
                .and_then(|s| s.subnet_id())
                .context("subnet")?
                .to_string(),
        );
    }
    // The team lets this installation use them (the policy's condition).
    crate::support::let_use(&g, &ec2, [&vpc_id].into_iter().chain(&subnet_ids)).await?;
    // What "modified" means: identity, addresses, zone, tags and attributes
    // (not counters such as free IP addresses, which instances change).
    let snapshot = || async {
        let sorted_tags = |tags: &[aws_sdk_ec2::types::Tag]| {
            let mut t: Vec<String> = tags
                .iter()
                .map(|t| format!("{:?}={:?}", t.key(), t.value()))
                .collect();
            t.sort();
            t
        };
        let v = ec2.describe_vpcs().send().await?;
        let mut vpcs: Vec<String> = v
            .vpcs()
            .iter()
            .map(|v| {
                format!(
                    "{:?} {:?} {:?}",
                    v.vpc_id(),
                    v.cidr_block(),
                    sorted_tags(v.tags())
                )
            })
            .collect();
        vpcs.sort();
        let s = ec2.describe_subnets().send().await?;
        let mut subnets: Vec<String> = s
            .subnets()
            .iter()
            .map(|s| {
                format!(
                    "{:?} {:?} {:?} {:?} {:?} {:?}",
                    s.subnet_id(),
                    s.vpc_id(),
                    s.cidr_block(),
                    s.availability_zone(),
                    s.map_public_ip_on_launch(),
                    sorted_tags(s.tags())
                )
            })
            .collect();
        subnets.sort();
        Ok::<_, anyhow::Error>((vpcs, subnets))
    };
    let before = snapshot().await?;

    let _op = Operator::start(&g, &["--progress-poll", "1s"], &[])?;
    ready_account(&g).await?;
    kubectl_apply(
        &g,
        &format!(
            "apiVersion: byoc.dev/v1alpha1\nkind: ComputeCluster\nmetadata: {{name: byo}}\nspec:\n  cloudAccountRef: {{name: acme}}\n  region: us-east-1\n  network:\n    existingVpcId: {vpc_id}\n    existingSubnetIds: [{}, {}]\n  nodeGroups:\n    - {{name: cpu, instanceType: m6i.large, count: 2}}\n",
            subnet_ids[0], subnet_ids[1]
        ),
    )?;
    let cc = wait_running(&g, "byo", |_| true).await?;
    let uid = cc.uid().context("uid")?;
    let c = counts(&g, &uid).await?;
    assert!(
        c.vpcs == 0
            && c.subnets == 0
            && c.nat_gateways == 0
            && c.security_groups == 1
            && c.instances() == 2,
        "BYO cluster created the wrong things: {c:?}"
    );
    let status = cc.status.unwrap_or_default().network.unwrap_or_default();
    assert_eq!(
        status.vpc_id.as_deref(),
        Some(vpc_id.as_str()),
        "status names the existing VPC"
    );
    // The instances sit in the given subnets.
    let inst = ec2
        .describe_instances()
        .filters(
            Filter::builder()
                .name("tag:byoc.dev/cluster-uid")
                .values(&uid)
                .build(),
        )
        .send()
        .await?;
    for i in inst.reservations().iter().flat_map(|r| r.instances()) {
        assert!(
            subnet_ids.iter().any(|s| Some(s.as_str()) == i.subnet_id()),
            "an instance outside the given subnets"
        );
    }

    delete_leaves_nothing(&g, "byo", &uid).await?;
    assert_eq!(
        snapshot().await?,
        before,
        "the existing VPC or subnets were modified or deleted"
    );
    Ok(())
}

#[tokio::test]
async fn sigkill_during_provisioning_converges_without_duplicates() -> Result<()> {
    let g = ground_with_crds("cc-sigkill").await?;
    // Slow AWS down so that there is a "during".
    g.proxy.set_faults(testground::Faults {
        latency: Duration::from_millis(150),
        ..Default::default()
    });
    let mut op = Operator::start(&g, &["--progress-poll", "1s"], &[])?;
    ready_account(&g).await?;
    crate::storage::connect_node_grants(&g).await?;
    let ec2 = aws_sdk_ec2::Client::new(&g.aws().await);
    let peer = ec2.create_vpc().cidr_block("10.19.0.0/16").send().await?;
    let peer = peer.vpc().and_then(|v| v.vpc_id()).context("peer VPC")?;
    // Its owner lets the installation accept the connection into it.
    crate::support::let_use(&g, &ec2, [&peer.to_string()]).await?;
    kubectl_apply(
        &g,
        &format!("apiVersion: byoc.dev/v1alpha1\nkind: ComputeCluster\nmetadata: {{name: crash}}\nspec:\n  cloudAccountRef: {{name: acme}}\n  region: us-east-1\n  network: {{vpcCidr: 10.9.0.0/16, availabilityZones: [us-east-1a, us-east-1b], natGateways: perZone, endpoints: [s3, sts], peering: [{{vpcId: {peer}}}]}}\n  storage: {{}}\n  nodeGroups:\n    - {{name: a, instanceType: t3.small, count: 2}}\n    - {{name: b, instanceType: t3.small, count: 2, subnets: public}}\n"),
    )?;
    // Kill at six points of provisioning, each time starting again.
    // The key first: made at the pass's start, killed before its alias.
    let points = [
        "CreateKey",
        "CreateSubnet",
        "CreateVpcPeeringConnection",
        "CreateNatGateway",
        "CreateVpcEndpoint",
        "RunInstances",
    ];
    for op_name in points {
        eventually(&format!("a {op_name} call"), WAIT, || async {
            Ok((g.proxy.calls().get(op_name).copied().unwrap_or(0) > 0).then_some(()))
        })
        .await?;
        op.process.kill();
        op = Operator::start(&g, &["--progress-poll", "1s"], &[])?;
    }
    let cc = wait_running(&g, "crash", |_| true).await?;
    let uid = cc.uid().context("uid")?;
    let c = counts(&g, &uid).await?;
    let expected = Counts {
        vpcs: 1,
        subnets: 4,
        internet_gateways: 1,
        nat_gateways: 2,
        addresses: 2,
        route_tables: 3,
        // The nodes' and the interface endpoints'.
        security_groups: 2,
        instances: BTreeMap::from([("t3.small".into(), 4)]),
        roles: 1,
        endpoints: 2,
        peerings: 1,
    };
    assert_eq!(c, expected, "after SIGKILLs: {c:?}, expected {expected:?}");
    // One key, made once, aliased.
    let installation = (cc.status.as_ref())
        .and_then(|s| s.installation.clone())
        .unwrap_or_default();
    let keys = crate::storage::keys_made_for(&g, &installation, &uid).await?;
    assert_eq!(keys.len(), 1, "keys made for the cluster: {keys:?}");
    let alias = byoc_operator::aws::kms_key::alias_of(&installation, &uid);
    let aliased = crate::storage::key_of(&g, &alias).await?;
    assert_eq!(aliased.map(|k| k.id), Some(keys[0].id.clone()));
    g.proxy.set_faults(testground::Faults::default());
    delete_leaves_nothing(&g, "crash", &uid).await?;
    Ok(())
}

#[tokio::test]
async fn account_of_another_namespace_needs_its_permission() -> Result<()> {
    let g = ground_with_crds("cc-ns").await?;
    let _op = Operator::start(&g, &[], &[])?;
    ready_account(&g).await?;
    // An account in another namespace that allows only "team-x".
    let other = format!("{}-other", g.namespace);
    let out = g
        .kube
        .kubectl()
        .args(["create", "namespace", &other])
        .output()?;
    assert!(out.status.success(), "create namespace");
    kubectl_apply_in(
        &g,
        &other,
        "apiVersion: byoc.dev/v1alpha1\nkind: CloudAccount\nmetadata: {name: shared}\nspec:\n  region: us-east-1\n  allowedNamespaces: [team-x]\n",
    )?;
    kubectl_apply(
        &g,
        &format!("apiVersion: byoc.dev/v1alpha1\nkind: ComputeCluster\nmetadata: {{name: stranger}}\nspec:\n  cloudAccountRef: {{name: shared, namespace: {other}}}\n  region: us-east-1\n  network: {{vpcCidr: 10.0.0.0/16}}\n"),
    )?;
    let api = g.api::<ComputeCluster>();
    let cc = eventually("Stalled", WAIT, || async {
        let cc = api.get("stranger").await?;
        let stalled = cc.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Stalled" && c.status == "True")
        });
        Ok(stalled.then_some(cc))
    })
    .await?;
    let stalled = cc
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Stalled"))
        .context("Stalled")?;
    assert_eq!(
        stalled.reason, "NamespaceNotAllowed",
        "reason {}",
        stalled.reason
    );
    assert!(
        stalled.message.contains("allowedNamespaces"),
        "message {}",
        stalled.message
    );
    assert!(
        !g.proxy.calls().contains_key("CreateVpc"),
        "a VPC was created for a refused cluster"
    );
    // No AWS call was made for it, so it deletes without the account.
    assert!(
        cc.status
            .as_ref()
            .and_then(|s| s.aws_account_id.as_ref())
            .is_none(),
        "an AWS account recorded for a cluster that never reached AWS"
    );
    // An account that does not exist in that namespace gets the same
    // answer: nothing tells which accounts exist where one may not look.
    kubectl_apply(
        &g,
        &format!("apiVersion: byoc.dev/v1alpha1\nkind: ComputeCluster\nmetadata: {{name: prober}}\nspec:\n  cloudAccountRef: {{name: absent, namespace: {other}}}\n  region: us-east-1\n  network: {{vpcCidr: 10.0.0.0/16}}\n"),
    )?;
    let probed = self::stalled(&g, "prober").await?;
    assert_eq!(
        (
            probed.reason.as_str(),
            probed.message.replace("absent", "shared")
        ),
        (stalled.reason.as_str(), stalled.message.clone()),
        "a missing account answers otherwise than one not allowing the namespace"
    );
    delete_and_wait_gone(&g, "prober").await?;
    delete_and_wait_gone(&g, "stranger").await
}

/// The cluster's `Stalled` condition once it is True.
async fn stalled(
    g: &Ground,
    name: &str,
) -> Result<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    let api = g.api::<ComputeCluster>();
    eventually(&format!("{name} Stalled"), WAIT, || async {
        let cc = api.get(name).await?;
        Ok(cc
            .status
            .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Stalled"))
            .filter(|c| c.status == "True"))
    })
    .await
}

#[tokio::test]
async fn pointing_at_another_aws_account_is_refused_until_pointed_back() -> Result<()> {
    let (g, _op) = ground_with_account("cc-moved", &[]).await?;
    // The same keys, assuming a role in another AWS account.
    kubectl_apply(
        &g,
        "apiVersion: byoc.dev/v1alpha1\nkind: CloudAccount\nmetadata: {name: elsewhere}\nspec:\n  region: us-east-1\n  credentialsSecretRef: {name: keys}\n  roleArn: arn:aws:iam::210987654321:role/byoc-cross-account\n",
    )?;
    kubectl_apply(&g, &small_cluster_manifest("moved", "10.4.0.0/16"))?;
    let cc = wait_running(&g, "moved", |_| true).await?;
    let uid = cc.uid().context("uid")?;
    let recorded = cc.status.as_ref().and_then(|s| s.aws_account_id.clone());
    assert_eq!(
        recorded.as_deref(),
        Some("123456789012"),
        "status.awsAccountId {recorded:?}"
    );

    let creates_before = g.proxy.calls().get("CreateVpc").copied().unwrap_or(0);
    patch_spec(
        &g,
        "moved",
        serde_json::json!({"cloudAccountRef": {"name": "elsewhere"}}),
    )
    .await?;
    let c = stalled(&g, "moved").await?;
    assert!(
        c.reason == "AccountChanged" && c.message.contains("210987654321"),
        "Stalled {}: {}",
        c.reason,
        c.message
    );
    // Deletion is held too: it would look in the wrong account.
    g.api::<ComputeCluster>()
        .delete("moved", &Default::default())
        .await?;
    let api = g.api::<ComputeCluster>();
    eventually("deletion held with a message", WAIT, || async {
        let cc = api.get("moved").await?;
        Ok(cc
            .status
            .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Stalled"))
            .filter(|c| c.status == "True" && c.message.starts_with("cannot delete"))
            .map(|_| ()))
    })
    .await?;
    assert!(
        counts(&g, &uid).await?.vpcs == 1
            && g.proxy.calls().get("CreateVpc").copied().unwrap_or(0) == creates_before,
        "the resources were touched while the account was wrong"
    );
    // Pointed back, deletion finishes in the right account.
    patch_spec(
        &g,
        "moved",
        serde_json::json!({"cloudAccountRef": {"name": "acme"}}),
    )
    .await?;
    wait_gone(&g, "moved").await?;
    let left = counts(&g, &uid).await?;
    assert_eq!(left, Counts::default(), "left behind: {left:?}");
    Ok(())
}

#[tokio::test]
async fn cluster_without_nat_gateways_runs_and_deletes() -> Result<()> {
    let (g, _op) = ground_with_account("cc-no-nat", &[]).await?;
    kubectl_apply(&g, &small_cluster_manifest("plain", "10.3.0.0/16"))?;
    let cc = wait_running(&g, "plain", |_| true).await?;
    let uid = cc.uid().context("uid")?;
    let c = counts(&g, &uid).await?;
    assert!(
        c.nat_gateways == 0 && c.addresses == 0 && c.instances() == 1,
        "resources in moto: {c:?}"
    );
    delete_leaves_nothing(&g, "plain", &uid).await
}

#[tokio::test]
async fn az_count_takes_the_first_zones_and_asks_aws_once() -> Result<()> {
    let (g, _op) = ground_with_account("cc-azcount", &[]).await?;
    for (name, cidr) in [("two-a", "10.5.0.0/16"), ("two-b", "10.6.0.0/16")] {
        kubectl_apply(
            &g,
            &small_cluster_manifest(name, cidr)
                .edited("availabilityZones: [us-east-1a]", "azCount: 2"),
        )?;
    }
    for name in ["two-a", "two-b"] {
        let cc = wait_running(&g, name, |_| true).await?;
        let zones: std::collections::BTreeSet<String> = cc
            .status
            .and_then(|s| s.network)
            .map(|n| n.subnets.into_iter().map(|s| s.zone).collect())
            .unwrap_or_default();
        assert_eq!(
            zones,
            ["us-east-1a".to_string(), "us-east-1b".to_string()].into(),
            "{name}: subnets in {zones:?}"
        );
    }
    let asked = g
        .proxy
        .calls()
        .get("DescribeAvailabilityZones")
        .copied()
        .unwrap_or(0);
    assert_eq!(
        asked, 1,
        "DescribeAvailabilityZones called {asked} times for two clusters of one account"
    );
    Ok(())
}

#[tokio::test]
async fn an_aws_call_that_hangs_times_out_and_is_retried() -> Result<()> {
    let (g, _op) = ground_with_account("cc-hang", &["--aws-attempt-timeout", "1s"]).await?;
    // AWS answers nothing within the attempt timeout.
    g.proxy.set_faults(testground::Faults {
        latency: Duration::from_secs(4),
        ..Default::default()
    });
    kubectl_apply(&g, &small_cluster_manifest("slow", "10.7.0.0/16"))?;
    let api = g.api::<ComputeCluster>();
    let waiting = eventually("a transient AWS error reported", WAIT, || async {
        let cc = api.get("slow").await?;
        Ok(cc
            .status
            .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Reconciling"))
            .filter(|c| c.status == "True" && c.reason == "AwsError"))
    })
    .await?;
    assert!(
        waiting.message.contains("retrying"),
        "Reconciling: {}",
        waiting.message
    );
    // AWS answers again: the next retry converges.
    g.proxy.set_faults(testground::Faults::default());
    let cc = wait_running(&g, "slow", |_| true).await?;
    let uid = cc.uid().context("uid")?;
    // Calls the operator gave up on may still have happened: adopted, not doubled.
    let c = counts(&g, &uid).await?;
    assert!(
        c.vpcs == 1 && c.subnets == 2 && c.security_groups == 1 && c.instances() == 1,
        "resources in moto: {c:?}"
    );
    delete_leaves_nothing(&g, "slow", &uid).await
}
