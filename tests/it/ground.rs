//! The ground is real: an apiserver that stores, watches and authorizes, and
//! a moto that the AWS SDK reaches through `AWS_ENDPOINT_URL` alone.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use k8s_openapi::ByteString;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};

use crate::support::{client_for, Ground};

#[tokio::test]
async fn apiserver_stores_watches_and_authorizes() -> Result<()> {
    let g = Ground::new("ground-apiserver").await?;

    // A Secret round-trips through etcd.
    let secrets = g.api::<Secret>();
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("keys".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "k".to_string(),
            ByteString(b"v".to_vec()),
        )])),
        ..Default::default()
    };
    secrets.create(&PostParams::default(), &secret).await?;
    let read = secrets.get("keys").await?;
    assert_eq!(
        read.data.and_then(|d| d.get("k").cloned()),
        Some(ByteString(b"v".to_vec())),
        "Secret data did not round-trip"
    );

    // A ConfigMap change arrives through a watch.
    let cms = g.api::<ConfigMap>();
    let cm = |value: &str| ConfigMap {
        metadata: ObjectMeta {
            name: Some("watched".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("state".to_string(), value.to_string())])),
        ..Default::default()
    };
    cms.create(&PostParams::default(), &cm("before")).await?;
    let mut stream = watcher(
        cms.clone(),
        watcher::Config::default().fields("metadata.name=watched"),
    )
    .applied_objects()
    .boxed();
    let first = tokio::time::timeout(Duration::from_secs(30), stream.try_next())
        .await
        .context("no initial watch event")??;
    assert!(first.is_some(), "watch ended");
    cms.patch(
        "watched",
        &PatchParams::apply("ground-test").force(),
        &Patch::Apply(serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap", "data": {"state": "after"}
        })),
    )
    .await?;
    let changed = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(obj) = stream.try_next().await? {
            if obj
                .data
                .as_ref()
                .and_then(|d| d.get("state"))
                .map(String::as_str)
                == Some("after")
            {
                return Ok::<_, anyhow::Error>(true);
            }
        }
        Ok(false)
    })
    .await
    .context("the change did not arrive through the watch")??;
    assert!(changed, "watch ended before the change arrived");

    // A ServiceAccount's token authenticates, and RBAC denies it Secrets.
    g.api::<ServiceAccount>()
        .create(
            &PostParams::default(),
            &ServiceAccount {
                metadata: ObjectMeta {
                    name: Some("nobody".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await?;
    let out = g
        .kube
        .kubectl()
        .args([
            "create",
            "token",
            "nobody",
            "-n",
            &g.namespace,
            "--duration=10m",
        ])
        .output()?;
    assert!(
        out.status.success(),
        "kubectl create token failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout)?.trim().to_string();
    let path = g
        .kube
        .token_kubeconfig(&format!("nobody-{}", g.namespace), &token)?;
    let as_nobody = client_for(&path).await?;
    let denied = kube::Api::<Secret>::namespaced(as_nobody.clone(), &g.namespace)
        .list(&Default::default())
        .await;
    match denied {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => anyhow::bail!("expected 403 Forbidden for the ServiceAccount, got {other:?}"),
    }
    // ... while the same token is authenticated (a review of its own access works).
    let who = as_nobody.apiserver_version().await;
    assert!(who.is_ok(), "token not usable: {who:?}");
    Ok(())
}

/// Runs the child test below in a new process whose only AWS configuration is
/// the environment: `AWS_ENDPOINT_URL` and static test credentials.
#[tokio::test]
async fn moto_reached_through_aws_endpoint_url() -> Result<()> {
    let g = Ground::new("ground-moto").await?;
    let exe = std::env::current_exe()?;
    let out = tokio::process::Command::new(exe)
        .args([
            "--exact",
            "ground::vpc_from_env_only",
            "--ignored",
            "--nocapture",
        ])
        .env_remove("AWS_PROFILE")
        .env("AWS_ENDPOINT_URL", g.moto.endpoint())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The VPC the child made is in this test's moto.
    let ec2 = aws_sdk_ec2::Client::new(&g.aws().await);
    let vpcs = ec2.describe_vpcs().send().await?;
    assert!(
        vpcs.vpcs()
            .iter()
            .any(|v| v.cidr_block() == Some("10.42.0.0/16")),
        "the child's VPC is not in moto"
    );
    Ok(())
}

#[tokio::test]
#[ignore = "run by moto_reached_through_aws_endpoint_url with the environment set"]
async fn vpc_from_env_only() -> Result<()> {
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let ec2 = aws_sdk_ec2::Client::new(&config);
    let created = ec2.create_vpc().cidr_block("10.42.0.0/16").send().await?;
    let id = created
        .vpc()
        .and_then(|v| v.vpc_id())
        .context("no VPC id")?
        .to_string();
    let described = ec2.describe_vpcs().vpc_ids(&id).send().await?;
    assert_eq!(described.vpcs().len(), 1, "VPC not described");
    Ok(())
}

/// The proxy is faithful where moto is not: a repeated ClientToken returns
/// the first launch, new NAT gateways stay pending for a while, and
/// AssumeRole of an absent role is denied.
#[tokio::test]
async fn proxy_adds_what_moto_lacks() -> Result<()> {
    let g = Ground::new("proxy-fidelity").await?;
    g.proxy.set_faults(testground::Faults {
        pending: Duration::from_secs(2),
        roles_must_exist: true,
        ..Default::default()
    });
    let config = g.aws_through_proxy().await;
    let ec2 = aws_sdk_ec2::Client::new(&config);
    let launch = || {
        ec2.run_instances()
            .image_id("ami-12c6146b")
            .instance_type(aws_sdk_ec2::types::InstanceType::T3Small)
            .min_count(1)
            .max_count(1)
            .client_token("same-token")
            .send()
    };
    let ids = |o: aws_sdk_ec2::operation::run_instances::RunInstancesOutput| -> Vec<String> {
        o.instances()
            .iter()
            .filter_map(|i| i.instance_id().map(str::to_string))
            .collect()
    };
    let (first, second) = (ids(launch().await?), ids(launch().await?));
    assert!(
        !first.is_empty() && first == second,
        "a repeated ClientToken launched again: {first:?} then {second:?}"
    );
    let all = ec2.describe_instances().send().await?;
    let count: usize = all.reservations().iter().map(|r| r.instances().len()).sum();
    assert_eq!(
        count, 1,
        "{count} instances after two launches with one token"
    );

    let vpc = ec2.create_vpc().cidr_block("10.0.0.0/16").send().await?;
    let vpc = vpc.vpc().and_then(|v| v.vpc_id()).context("vpc")?;
    let subnet = ec2
        .create_subnet()
        .vpc_id(vpc)
        .cidr_block("10.0.0.0/24")
        .send()
        .await?;
    let subnet = subnet
        .subnet()
        .and_then(|s| s.subnet_id())
        .context("subnet")?;
    let eip = ec2.allocate_address().send().await?;
    let nat = ec2
        .create_nat_gateway()
        .subnet_id(subnet)
        .allocation_id(eip.allocation_id().context("eip")?)
        .send()
        .await?;
    let nat = nat
        .nat_gateway()
        .and_then(|n| n.nat_gateway_id())
        .context("nat")?;
    let state = || async {
        let out = ec2
            .describe_nat_gateways()
            .nat_gateway_ids(nat)
            .send()
            .await?;
        Ok::<_, anyhow::Error>(
            out.nat_gateways()
                .first()
                .and_then(|n| n.state().map(|s| s.as_str().to_string()))
                .unwrap_or_default(),
        )
    };
    let early = state().await?;
    assert_eq!(
        early, "pending",
        "a new NAT gateway is {early}, not pending"
    );
    crate::support::eventually(
        "the NAT gateway available",
        Duration::from_secs(30),
        || async { Ok((state().await? == "available").then_some(())) },
    )
    .await?;

    let sts = aws_sdk_sts::Client::new(&config);
    let denied = sts
        .assume_role()
        .role_arn("arn:aws:iam::123456789012:role/not-there")
        .role_session_name("s")
        .send()
        .await;
    let code = denied
        .err()
        .and_then(|e| e.into_service_error().meta().code().map(str::to_string));
    assert_eq!(
        code.as_deref(),
        Some("AccessDenied"),
        "AssumeRole of an absent role: {code:?}"
    );
    Ok(())
}
