//! The CRDs: generated files are current, the real apiserver accepts them and
//! the examples, and rejects bad manifests naming the field.

use anyhow::{bail, Result};

use crate::support::{ensure, install_crds, kubectl_apply_output, Ground};

#[test]
fn crds_dir_matches_generated() -> Result<()> {
    let root = testground::repo_root();
    for (file, yaml) in byoc_operator::api::crd_documents()? {
        let on_disk = std::fs::read_to_string(root.join("crds").join(file))?;
        ensure(
            on_disk == yaml,
            format!("crds/{file} differs from the code: run `cargo run -- crds --dir crds`"),
        )?;
    }
    Ok(())
}

#[tokio::test]
async fn examples_apply() -> Result<()> {
    let g = Ground::new("crds-examples").await?;
    install_crds(&g).await?;
    let root = testground::repo_root();
    for dir in ["examples", "examples/sandbox"] {
        let out = g
            .kube
            .kubectl()
            .args(["apply", "-n", &g.namespace, "-f"])
            .arg(root.join(dir))
            .output()?;
        ensure(
            out.status.success(),
            format!(
                "kubectl apply -f {dir}: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        )?;
    }
    let out = g
        .kube
        .kubectl()
        .args(["get", "byoc", "-n", &g.namespace, "-o", "name"])
        .output()?;
    let names = String::from_utf8_lossy(&out.stdout);
    for want in [
        "cloudaccount.byoc.dev/demo",
        "cloudaccount.byoc.dev/acme-ambient",
        "computecluster.byoc.dev/demo",
        "computecluster.byoc.dev/byo",
        "computecluster.byoc.dev/gpu",
    ] {
        ensure(
            names.contains(want),
            format!("`kubectl get byoc` lacks {want}: {names}"),
        )?;
    }
    // Printer columns.
    let out = g
        .kube
        .kubectl()
        .args(["get", "cc", "-n", &g.namespace])
        .output()?;
    let header = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    for col in ["PHASE", "REGION", "VPC", "NODES", "AGE"] {
        ensure(
            header.contains(col),
            format!("`kubectl get cc` has no {col} column: {header}"),
        )?;
    }
    let out = g
        .kube
        .kubectl()
        .args(["get", "ca", "-n", &g.namespace])
        .output()?;
    let header = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    for col in ["ACCOUNT", "PHASE", "AGE"] {
        ensure(
            header.contains(col),
            format!("`kubectl get ca` has no {col} column: {header}"),
        )?;
    }
    Ok(())
}

const VALID_CLUSTER: &str = r#"
apiVersion: byoc.dev/v1alpha1
kind: ComputeCluster
metadata: {name: NAME}
spec:
  cloudAccountRef: {name: acme}
  region: us-east-1
  network:
    vpcCidr: 10.0.0.0/16
    azCount: 2
  nodeGroups:
    - {name: workers, instanceType: t3.large, count: 3}
"#;

const VALID_ACCOUNT: &str = r#"
apiVersion: byoc.dev/v1alpha1
kind: CloudAccount
metadata: {name: NAME}
spec:
  region: us-east-1
  roleArn: arn:aws:iam::123456789012:role/byoc
"#;

/// `(case, manifest, text the rejection must contain)`. Each manifest is
/// the valid one with one thing broken.
fn invalid_creates() -> Vec<(&'static str, String, &'static str)> {
    let cc = |from: &str, to: &str| VALID_CLUSTER.replace(from, to);
    let ca = |from: &str, to: &str| VALID_ACCOUNT.replace(from, to);
    vec![
        ("bad CIDR", cc("vpcCidr: 10.0.0.0/16", "vpcCidr: 10.0.0.300/16"), "spec.network.vpcCidr"),
        ("CIDR not a network address", cc("vpcCidr: 10.0.0.0/16", "vpcCidr: 10.0.0.1/16"), "spec.network.vpcCidr"),
        ("CIDR too large", cc("vpcCidr: 10.0.0.0/16", "vpcCidr: 10.0.0.0/8"), "spec.network.vpcCidr"),
        ("negative count", cc("count: 3", "count: -1"), "spec.nodeGroups[0].count"),
        ("count too large", cc("count: 3", "count: 100000"), "spec.nodeGroups[0].count"),
        ("unknown NAT mode", cc("azCount: 2", "azCount: 2\n    natGateways: sometimes"), "spec.network.natGateways"),
        (
            "both vpcCidr and existingVpcId",
            cc("azCount: 2", "existingVpcId: vpc-0123456789abcdef0\n    existingSubnetIds: [subnet-0123456789abcdef0]"),
            "exactly one of network.vpcCidr",
        ),
        ("neither vpcCidr nor existingVpcId", cc("vpcCidr: 10.0.0.0/16", "ingress: []"), "exactly one of network.vpcCidr"),
        ("zones and azCount", cc("azCount: 2", "azCount: 2\n    availabilityZones: [us-east-1a]"), "at most one of"),
        ("bad region", cc("region: us-east-1", "region: Mars"), "spec.region"),
        ("bad instance type", cc("instanceType: t3.large", "instanceType: large"), "spec.nodeGroups[0].instanceType"),
        ("bad AMI", cc("count: 3}", "count: 3, imageId: ubuntu}"), "spec.nodeGroups[0].imageId"),
        (
            "both an SSH key name and a public key",
            cc("count: 3}", "count: 3, sshKeyName: alice, sshPublicKey: \"ssh-ed25519 AAAA a\"}"),
            "set at most one of sshKeyName or sshPublicKey",
        ),
        (
            "not an SSH public key",
            cc("count: 3}", "count: 3, sshPublicKey: \"-----BEGIN RSA PRIVATE KEY-----\"}"),
            "spec.nodeGroups[0].sshPublicKey",
        ),
        (
            "a rollout that cannot move",
            cc("count: 3}", "count: 3, rollout: {maxSurge: 0, maxUnavailable: 0}}"),
            "rollout needs maxSurge or maxUnavailable above 0",
        ),
        (
            "a surge over 100",
            cc("count: 3}", "count: 3, rollout: {maxSurge: 101}}"),
            "spec.nodeGroups[0].rollout.maxSurge",
        ),
        (
            "user data key with a space",
            cc("count: 3}", "count: 3, userDataSecretRef: {name: boot, key: \"user data\"}}"),
            "spec.nodeGroups[0].userDataSecretRef.key",
        ),
        (
            "user data without a key",
            cc("count: 3}", "count: 3, userDataSecretRef: {name: boot}}"),
            "spec.nodeGroups[0].userDataSecretRef.key",
        ),
        (
            "IMDS tokens neither required nor optional",
            cc("count: 3}", "count: 3, metadataOptions: {httpTokens: sometimes}}"),
            "spec.nodeGroups[0].metadataOptions.httpTokens",
        ),
        (
            "IMDS hop limit out of range",
            cc("count: 3}", "count: 3, metadataOptions: {httpPutResponseHopLimit: 65}}"),
            "spec.nodeGroups[0].metadataOptions.httpPutResponseHopLimit",
        ),
        (
            "root volume of size 0",
            cc("count: 3}", "count: 3, rootVolume: {sizeGiB: 0}}"),
            "spec.nodeGroups[0].rootVolume.sizeGiB",
        ),
        (
            "unknown volume type",
            cc("count: 3}", "count: 3, rootVolume: {type: sc1}}"),
            "spec.nodeGroups[0].rootVolume.type",
        ),
        (
            "throughput on gp2",
            cc("count: 3}", "count: 3, rootVolume: {type: gp2, throughput: 200}}"),
            "rootVolume.throughput is for gp3 volumes only",
        ),
        (
            "io2 without iops",
            cc("count: 3}", "count: 3, rootVolume: {type: io2}}"),
            "rootVolume.iops is required for io1 and io2 volumes",
        ),
        (
            "KMS key on an unencrypted volume",
            cc("count: 3}", "count: 3, rootVolume: {encrypted: false, kmsKeyId: alias/nodes}}"),
            "rootVolume.kmsKeyId needs encrypted: true",
        ),
        (
            "bad KMS key",
            cc("count: 3}", "count: 3, rootVolume: {kmsKeyId: \"my key\"}}"),
            "spec.nodeGroups[0].rootVolume.kmsKeyId",
        ),
        (
            "bad extra security group",
            cc("count: 3}", "count: 3, additionalSecurityGroupIds: [default]}"),
            "spec.nodeGroups[0].additionalSecurityGroupIds[0]",
        ),
        (
            "extra security group twice",
            cc("count: 3}", "count: 3, additionalSecurityGroupIds: [sg-0123456789abcdef0, sg-0123456789abcdef0]}"),
            "additionalSecurityGroupIds must not repeat a group",
        ),
        (
            "duplicate node group",
            cc("count: 3}", "count: 3}\n    - {name: workers, instanceType: t3.large, count: 1}"),
            "spec.nodeGroups: duplicate entries for key [name=\"workers\"]",
        ),
        (
            "both an instance type and a list",
            cc("count: 3}", "count: 3, instanceTypes: [m5.large]}"),
            "set exactly one of instanceType or instanceTypes",
        ),
        (
            "neither an instance type nor a list",
            cc("instanceType: t3.large, ", ""),
            "set exactly one of instanceType or instanceTypes",
        ),
        (
            "an empty type list",
            cc("instanceType: t3.large, ", "instanceTypes: [], "),
            "spec.nodeGroups[0].instanceTypes",
        ),
        (
            "a type twice",
            cc("instanceType: t3.large, ", "instanceTypes: [m5.large, m5.large], "),
            "instanceTypes must not repeat a type",
        ),
        (
            "eleven types",
            cc("instanceType: t3.large, ", "instanceTypes: [a1.large, a1.xlarge, m5.large, m5.xlarge, m6i.large, m6i.xlarge, c5.large, c5.xlarge, r5.large, r5.xlarge, t3.large], "),
            "spec.nodeGroups[0].instanceTypes",
        ),
        (
            "a grace period that is no duration",
            cc("count: 3}", "count: 3, healthCheckGracePeriod: soon}"),
            "spec.nodeGroups[0].healthCheckGracePeriod",
        ),
        (
            "unknown capacity type",
            cc("count: 3}", "count: 3, capacityType: reserved}"),
            "spec.nodeGroups[0].capacityType",
        ),
        (
            "spot: true against capacityType onDemand",
            cc("count: 3}", "count: 3, spot: true, capacityType: onDemand}"),
            "spot: true is the older spelling of capacityType: spot",
        ),
        (
            "node role policies and a brought profile",
            cc("  nodeGroups:", "  iam: {managedPolicyArns: [\"arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore\"], instanceProfileName: team-nodes}\n  nodeGroups:"),
            "set managedPolicyArns or instanceProfileName, not both",
        ),
        (
            "not a policy ARN",
            cc("  nodeGroups:", "  iam: {managedPolicyArns: [\"arn:aws:iam::aws:role/AmazonSSMManagedInstanceCore\"]}\n  nodeGroups:"),
            "spec.iam.managedPolicyArns[0]",
        ),
        (
            "a policy twice",
            cc("  nodeGroups:", "  iam: {managedPolicyArns: [\"arn:aws:iam::aws:policy/A\", \"arn:aws:iam::aws:policy/A\"]}\n  nodeGroups:"),
            "managedPolicyArns must not repeat a policy",
        ),
        (
            "bad instance profile name",
            cc("  nodeGroups:", "  iam: {instanceProfileName: \"team nodes\"}\n  nodeGroups:"),
            "spec.iam.instanceProfileName",
        ),
        ("reserved tag", cc("nodeGroups:", "tags: {\"aws:owner\": x}\n  nodeGroups:"), "spec.tags"),
        ("ingress ports reversed", cc("azCount: 2", "azCount: 2\n    ingress: [{protocol: tcp, fromPort: 23, toPort: 22, cidr: 0.0.0.0/0}]"), "fromPort must not be greater"),
        ("bad ARN", ca("arn:aws:iam::123456789012:role/byoc", "arn:aws:iam::12:role/byoc"), "spec.roleArn"),
        ("session too long", ca("region: us-east-1", "region: us-east-1\n  sessionDurationSeconds: 99999"), "spec.sessionDurationSeconds"),
        ("missing region", ca("region: us-east-1\n", ""), "spec.region"),
        (
            "chain without roleArn",
            ca("roleArn: arn:aws:iam::123456789012:role/byoc", "roleChain: [{roleArn: \"arn:aws:iam::123456789012:role/x\"}]"),
            "spec.roleChain needs spec.roleArn",
        ),
        (
            "bad allowed namespace",
            ca("region: us-east-1", "region: us-east-1\n  allowedNamespaces: [\"Team_B\"]"),
            "spec.allowedNamespaces[0]",
        ),
        (
            "boundary not a policy ARN",
            ca("region: us-east-1", "region: us-east-1\n  permissionsBoundaryArn: arn:aws:iam::123456789012:role/boundary"),
            "spec.permissionsBoundaryArn",
        ),
        (
            "boundary of no account",
            ca("region: us-east-1", "region: us-east-1\n  permissionsBoundaryArn: arn:aws:iam::12:policy/boundary"),
            "spec.permissionsBoundaryArn",
        ),
        (
            "node instance profile name with a slash",
            ca("region: us-east-1", "region: us-east-1\n  nodeInstanceProfileName: teams/nodes"),
            "spec.nodeInstanceProfileName",
        ),
        (
            "empty node instance profile name",
            ca("region: us-east-1", "region: us-east-1\n  nodeInstanceProfileName: \"\""),
            "spec.nodeInstanceProfileName",
        ),
        (
            "node instance profile name too long",
            ca("region: us-east-1", &format!("region: us-east-1\n  nodeInstanceProfileName: {}", "n".repeat(129))),
            "spec.nodeInstanceProfileName",
        ),
    ]
}

/// `(case, change applied to the stored valid object, rejection text)`.
fn invalid_updates() -> Vec<(&'static str, String, &'static str)> {
    let cc = |from: &str, to: &str| VALID_CLUSTER.replace(from, to);
    vec![
        ("changed region", cc("region: us-east-1", "region: us-west-2"), "region is immutable"),
        ("changed vpcCidr", cc("vpcCidr: 10.0.0.0/16", "vpcCidr: 10.1.0.0/16"), "vpcCidr is immutable"),
        ("changed azCount", cc("azCount: 2", "azCount: 3"), "azCount is immutable"),
        (
            "switch to an existing VPC",
            cc("vpcCidr: 10.0.0.0/16\n    azCount: 2", "existingVpcId: vpc-0123456789abcdef0\n    existingSubnetIds: [subnet-0123456789abcdef0]"),
            "cannot switch",
        ),
    ]
}

fn apply(g: &Ground, manifest: &str) -> Result<std::process::Output> {
    kubectl_apply_output(
        g,
        &g.namespace,
        &["--server-side", "--field-manager=test"],
        manifest,
    )
}

#[tokio::test]
async fn invalid_manifests_rejected_naming_the_field() -> Result<()> {
    let g = Ground::new("crds-invalid").await?;
    install_crds(&g).await?;
    let mut failures = Vec::new();
    let creates = invalid_creates();
    ensure(creates.len() >= 10, "at least ten invalid manifests")?;
    for (i, (case, manifest, expect)) in creates.iter().enumerate() {
        let out = apply(&g, &manifest.replace("NAME", &format!("bad-{i}")))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || !stderr.contains(expect) {
            failures.push(format!(
                "{case}: success={} stderr={stderr}",
                out.status.success()
            ));
        }
    }
    for (i, (case, manifest, expect)) in invalid_updates().iter().enumerate() {
        let name = format!("upd-{i}");
        let created = apply(&g, &VALID_CLUSTER.replace("NAME", &name))?;
        if !created.status.success() {
            bail!(
                "valid manifest rejected: {}",
                String::from_utf8_lossy(&created.stderr)
            );
        }
        let out = apply(&g, &manifest.replace("NAME", &name))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || !stderr.contains(expect) {
            failures.push(format!(
                "{case}: success={} stderr={stderr}",
                out.status.success()
            ));
        }
    }
    ensure(
        failures.is_empty(),
        format!("not rejected as expected:\n{}", failures.join("\n")),
    )
}
