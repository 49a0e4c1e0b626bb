//! The attacks the generated policy must stop, made live by a holder of
//! the cross-account role: its session's requests go through the proxy,
//! which decides each as AWS does with the role's only permission, the
//! installation's policy. Each attack is denied, and beside it a control
//! that differs in the one thing the attack changes is allowed, so the
//! denial is the policy's and not the set-up's.

use anyhow::{bail, Context as _, Result};
use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::{BlockDeviceMapping, EbsBlockDevice, ResourceType, Tag, TagSpecification};
use byoc_operator::account::iam_policy::PolicyOptions;
use byoc_operator::aws::tags::{CLUSTER_UID, INSTALLATION, MANAGED_BY, MANAGED_BY_VALUE};

use crate::support::{record_figure, Ground, ROLE_ARN};

/// This installation, and another one sharing the account.
const ME: &str = "a11ce0000000000a";
const OTHER: &str = "b0b0000000000b0b";
const ACCOUNT: &str = "123456789012";
/// An owner of AMIs other than Amazon and the account.
const OTHER_OWNER: &str = "210987654321";
const LISTED_KEY: &str =
    "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
const UNLISTED_KEY: &str =
    "arn:aws:kms:us-east-1:123456789012:key/9999abcd-12ab-34cd-56ef-1234567890ab";
const ALLOWED_POLICY: &str = "arn:aws:iam::123456789012:policy/byoc-node-extras";
const BOUNDARY: &str = "arn:aws:iam::123456789012:policy/byoc-boundary";
const PERMISSIVE: &str = "arn:aws:iam::aws:policy/AdministratorAccess";

/// The tags of a resource `installation` made (none: made before
/// installations were tagged).
fn made_by(installation: Option<&str>) -> Vec<Tag> {
    let mut tags = vec![
        tag(MANAGED_BY, MANAGED_BY_VALUE),
        tag(CLUSTER_UID, "5a1e0000-0000-4000-8000-000000000001"),
    ];
    if let Some(i) = installation {
        tags.push(tag(INSTALLATION, i));
    }
    tags
}

fn tag(k: &str, v: &str) -> Tag {
    Tag::builder().key(k).value(v).build()
}

fn tagged(t: ResourceType, tags: &[Tag]) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(t)
        .set_tags(Some(tags.to_vec()))
        .build()
}

/// A subnet and a security group in a VPC, all tagged `tags`, made by the
/// account's admin (not judged).
async fn network(
    admin: &aws_sdk_ec2::Client,
    cidr: &str,
    tags: &[Tag],
) -> Result<(String, String)> {
    let vpc = admin
        .create_vpc()
        .cidr_block(cidr)
        .tag_specifications(tagged(ResourceType::Vpc, tags))
        .send()
        .await?;
    let vpc = vpc
        .vpc()
        .and_then(|v| v.vpc_id())
        .context("vpc")?
        .to_string();
    let subnet = admin
        .create_subnet()
        .vpc_id(&vpc)
        .cidr_block(cidr)
        .availability_zone("us-east-1a")
        .tag_specifications(tagged(ResourceType::Subnet, tags))
        .send()
        .await?;
    let subnet = subnet
        .subnet()
        .and_then(|s| s.subnet_id())
        .context("subnet")?
        .to_string();
    let group = admin
        .create_security_group()
        .group_name(format!("nodes-{cidr}"))
        .description("nodes")
        .vpc_id(&vpc)
        .tag_specifications(tagged(ResourceType::SecurityGroup, tags))
        .send()
        .await?;
    let group = group.group_id().context("group")?.to_string();
    Ok((subnet, group))
}

/// One launch as the operator makes it, with what an attack changes.
#[derive(Clone)]
struct Launch {
    image: String,
    subnet: String,
    group: String,
    tags: Vec<Tag>,
    snapshot: Option<String>,
    key: Option<String>,
}

impl Launch {
    async fn run(&self, ec2: &aws_sdk_ec2::Client) -> Result<(), String> {
        let mut req = ec2
            .run_instances()
            .image_id(&self.image)
            .instance_type(aws_sdk_ec2::types::InstanceType::T3Small)
            .min_count(1)
            .max_count(1)
            .subnet_id(&self.subnet)
            .security_group_ids(&self.group)
            .tag_specifications(tagged(ResourceType::Instance, &self.tags))
            .tag_specifications(tagged(ResourceType::Volume, &self.tags));
        if self.snapshot.is_some() || self.key.is_some() {
            req = req.block_device_mappings(
                BlockDeviceMapping::builder()
                    .device_name("/dev/xvda")
                    .ebs(
                        EbsBlockDevice::builder()
                            .set_snapshot_id(self.snapshot.clone())
                            .encrypted(self.key.is_some())
                            .set_kms_key_id(self.key.clone())
                            .volume_size(20)
                            .build(),
                    )
                    .build(),
            );
        }
        req.send().await.map(drop).map_err(|e| code(&e))
    }
}

/// The error code AWS answered (or the error itself).
fn code<E: ProvideErrorMetadata + std::fmt::Debug>(e: &aws_sdk_ec2::error::SdkError<E>) -> String {
    e.as_service_error()
        .and_then(|s| s.code())
        .map_or_else(|| format!("{e:?}"), str::to_string)
}

/// The attacks seen so far, for the figure.
#[derive(Default)]
struct Tally {
    denied: Vec<String>,
    controls: usize,
}

impl Tally {
    /// `attack` was refused with `expected`, and the ground's evaluator
    /// denied one of `actions` on a resource ending in `resource` for it.
    fn denied(
        &mut self,
        g: &Ground,
        attack: &str,
        got: Result<(), String>,
        expected: &str,
        actions: &[&str],
        resource: &str,
    ) -> Result<()> {
        match got {
            Err(code) if code == expected => {}
            other => bail!("{attack}: expected {expected}, got {other:?}"),
        }
        let denials = g.proxy.denials();
        let found = denials.iter().any(|d| {
            actions.contains(&d.action.as_str())
                && d.resource.ends_with(resource)
                && d.ground_error.is_none()
        });
        if !found {
            bail!("{attack}: the evaluator did not deny {actions:?} on …{resource}: {denials:#?}");
        }
        self.denied.push(attack.to_string());
        Ok(())
    }

    fn allowed(&mut self, control: &str, got: Result<(), String>) -> Result<()> {
        got.map_err(|code| anyhow::anyhow!("control {control}: refused with {code}"))?;
        self.controls += 1;
        Ok(())
    }
}

#[tokio::test]
async fn a_holder_of_the_role_cannot_turn_it_against_the_account() -> Result<()> {
    let g = Ground::new("attacks").await?;
    let admin_config = g.aws().await;
    let admin = aws_sdk_ec2::Client::new(&admin_config);
    let admin_iam = aws_sdk_iam::Client::new(&admin_config);

    // What the account holds: this installation's network and another's,
    // Amazon's image and another owner's, a snapshot of the account's.
    let (my_subnet, my_group) = network(&admin, "10.1.0.0/24", &made_by(Some(ME))).await?;
    let (other_subnet, other_group) = network(&admin, "10.2.0.0/24", &made_by(Some(OTHER))).await?;
    let (old_subnet, _) = network(&admin, "10.3.0.0/24", &made_by(None)).await?;
    let amazon = admin.describe_images().owners("amazon").send().await?;
    let amazon = amazon
        .images()
        .iter()
        .find_map(|i| i.image_id())
        .context("an Amazon image")?
        .to_string();
    let foreign = g
        .moto
        .foreign_image(ACCOUNT, "us-east-1", OTHER_OWNER, &amazon)?;
    let volume = admin
        .create_volume()
        .availability_zone("us-east-1a")
        .size(20)
        .send()
        .await?;
    let snapshot = admin
        .create_snapshot()
        .volume_id(volume.volume_id().context("volume")?)
        .send()
        .await?;
    let snapshot = snapshot.snapshot_id().context("snapshot")?.to_string();
    // The node roles' allowed policy and boundary, the cross-account role
    // itself and a node role of this installation.
    let document = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}"#;
    for arn in [ALLOWED_POLICY, BOUNDARY] {
        let name = arn.rsplit('/').next().unwrap_or_default();
        admin_iam
            .create_policy()
            .policy_name(name)
            .policy_document(document)
            .send()
            .await?;
    }
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    let iam_tag = |k: &str, v: &str| aws_sdk_iam::types::Tag::builder().key(k).value(v).build();
    admin_iam
        .create_role()
        .role_name("byoc-cross-account")
        .assume_role_policy_document(trust)
        .tags(iam_tag("byoc.dev/connected-account", "team/acme")?)
        .send()
        .await?;
    admin_iam
        .create_role()
        .role_name("byoc-nodes-ml")
        .assume_role_policy_document(trust)
        .permissions_boundary(BOUNDARY)
        .tags(iam_tag(MANAGED_BY, MANAGED_BY_VALUE)?)
        .tags(iam_tag(INSTALLATION, ME)?)
        .send()
        .await?;

    // The role's only permission: this installation's policy.
    let options = PolicyOptions {
        managed_policy_arns: vec![ALLOWED_POLICY.into()],
        permissions_boundary: Some(BOUNDARY.into()),
        kms_key_arns: vec![LISTED_KEY.into()],
        ..Default::default()
    };
    g.grant(options.clone())?;
    g.grant_installation(ME)?;
    let role = testground::assumed(&g.aws_through_proxy().await, ROLE_ARN, None, &[]).await?;
    let ec2 = aws_sdk_ec2::Client::new(&role);
    let iam = aws_sdk_iam::Client::new(&role);
    let mut tally = Tally::default();
    const EC2_DENIED: &str = "UnauthorizedOperation";
    // A launch is authorized per resource, its tags on create as well;
    // a volume's key through KMS as EC2 uses it.
    const RUN: &[&str] = &["ec2:RunInstances", "ec2:CreateTags"];
    const KMS: &[&str] = &[
        "kms:CreateGrant",
        "kms:GenerateDataKeyWithoutPlaintext",
        "kms:Decrypt",
        "kms:DescribeKey",
    ];

    let control = Launch {
        image: amazon.clone(),
        subnet: my_subnet.clone(),
        group: my_group.clone(),
        tags: made_by(Some(ME)),
        snapshot: None,
        key: None,
    };
    tally.allowed(
        "a launch into this installation's network",
        control.run(&ec2).await,
    )?;

    // Another installation's subnet, or its nodes' security group.
    let attack = Launch {
        subnet: other_subnet.clone(),
        ..control.clone()
    };
    tally.denied(
        &g,
        "launch into another installation's subnet",
        attack.run(&ec2).await,
        EC2_DENIED,
        RUN,
        &format!("subnet/{other_subnet}"),
    )?;
    let attack = Launch {
        group: other_group.clone(),
        ..control.clone()
    };
    tally.denied(
        &g,
        "launch with another installation's security group",
        attack.run(&ec2).await,
        EC2_DENIED,
        RUN,
        &format!("security-group/{other_group}"),
    )?;
    // Another owner's image, or a snapshot.
    let attack = Launch {
        image: foreign.clone(),
        ..control.clone()
    };
    tally.denied(
        &g,
        "boot another owner's image",
        attack.run(&ec2).await,
        EC2_DENIED,
        RUN,
        &format!("image/{foreign}"),
    )?;
    let attack = Launch {
        snapshot: Some(snapshot.clone()),
        ..control.clone()
    };
    tally.denied(
        &g,
        "boot from a snapshot",
        attack.run(&ec2).await,
        EC2_DENIED,
        RUN,
        &format!("snapshot/{snapshot}"),
    )?;
    // An instance minted with another installation's tags, or without one.
    let attack = Launch {
        tags: made_by(Some(OTHER)),
        ..control.clone()
    };
    tally.denied(
        &g,
        "mint an instance with another installation's tags",
        attack.run(&ec2).await,
        EC2_DENIED,
        RUN,
        "instance/*",
    )?;
    let attack = Launch {
        tags: made_by(None),
        ..control.clone()
    };
    tally.denied(
        &g,
        "mint an instance without the installation tag",
        attack.run(&ec2).await,
        EC2_DENIED,
        RUN,
        "instance/*",
    )?;
    // A KMS key not listed; the listed one is the control.
    let listed = Launch {
        key: Some(LISTED_KEY.into()),
        ..control.clone()
    };
    tally.allowed("a root volume with the listed key", listed.run(&ec2).await)?;
    let attack = Launch {
        key: Some(UNLISTED_KEY.into()),
        ..control.clone()
    };
    tally.denied(
        &g,
        "encrypt with a key not listed",
        attack.run(&ec2).await,
        EC2_DENIED,
        KMS,
        UNLISTED_KEY.rsplit(':').next().unwrap_or_default(),
    )?;

    // IAM: attach to the cross-account role; swap a boundary.
    let attach = |role: &'static str| {
        let iam = iam.clone();
        async move {
            iam.attach_role_policy()
                .role_name(role)
                .policy_arn(ALLOWED_POLICY)
                .send()
                .await
                .map(drop)
                .map_err(|e| code(&e))
        }
    };
    tally.allowed(
        "attach an allowed policy to this installation's node role",
        attach("byoc-nodes-ml").await,
    )?;
    tally.denied(
        &g,
        "attach a policy to the cross-account role",
        attach("byoc-cross-account").await,
        "AccessDenied",
        &["iam:AttachRolePolicy"],
        "role/byoc-cross-account",
    )?;
    let boundary = |arn: &'static str| {
        let iam = iam.clone();
        async move {
            iam.put_role_permissions_boundary()
                .role_name("byoc-nodes-ml")
                .permissions_boundary(arn)
                .send()
                .await
                .map(drop)
                .map_err(|e| code(&e))
        }
    };
    tally.allowed("put the required boundary", boundary(BOUNDARY).await)?;
    tally.denied(
        &g,
        "swap the boundary for a permissive one",
        boundary(PERMISSIVE).await,
        "AccessDenied",
        &["iam:PutRolePermissionsBoundary"],
        "role/byoc-nodes-ml",
    )?;

    // Adoption: never of another installation's; of an untagged one only
    // while the admin keeps the window open.
    let adopt = |id: String| {
        let ec2 = ec2.clone();
        async move {
            ec2.create_tags()
                .resources(id)
                .tags(tag(INSTALLATION, ME))
                .send()
                .await
                .map(drop)
                .map_err(|e| code(&e))
        }
    };
    tally.denied(
        &g,
        "adopt an untagged resource with the window closed",
        adopt(old_subnet.clone()).await,
        EC2_DENIED,
        &["ec2:CreateTags"],
        &format!("subnet/{old_subnet}"),
    )?;
    g.grant(PolicyOptions {
        adopt: true,
        ..options.clone()
    })?;
    tally.denied(
        &g,
        "adopt another installation's resource",
        adopt(other_subnet.clone()).await,
        EC2_DENIED,
        &["ec2:CreateTags"],
        &format!("subnet/{other_subnet}"),
    )?;
    tally.allowed(
        "adopt an untagged resource with the window open",
        adopt(old_subnet.clone()).await,
    )?;

    record_figure(serde_json::json!({
        "suite": "attacks",
        "setup": "a holder of the cross-account role, its only permission the installation's generated policy (a managed-policy allow-list, a boundary, one listed KMS key), every request decided by the ground's IAM evaluator; another installation's network, another owner's public image, a snapshot, the cross-account role and a node role of the installation in the account",
        "n": tally.denied.len() + tally.controls,
        "figure": format!("{} attacks denied as AWS denies them ({}); {} controls, each differing from an attack in the one thing it changes, allowed", tally.denied.len(), tally.denied.join("; "), tally.controls),
        "pass": true,
    }))
}
