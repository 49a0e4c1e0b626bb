//! The CRDs: generated files are current, the real apiserver accepts them and
//! the examples, and rejects bad manifests naming the field.

use anyhow::{bail, Result};

use crate::support::{ground_with_crds, kubectl_apply_output, Edited, Ground};

#[test]
fn crds_dir_matches_generated() -> Result<()> {
    let root = testground::repo_root();
    for (file, yaml) in byoc_operator::api::crd_documents()? {
        let on_disk = std::fs::read_to_string(root.join("crds").join(file))?;
        assert_eq!(
            on_disk, yaml,
            "crds/{file} differs from the code: run `cargo run -- crds --dir crds`"
        );
    }
    Ok(())
}

#[tokio::test]
async fn examples_apply() -> Result<()> {
    let g = ground_with_crds("crds-examples").await?;
    let root = testground::repo_root();
    for dir in ["examples", "examples/sandbox"] {
        let out = g
            .kube
            .kubectl()
            .args(["apply", "-n", &g.namespace, "-f"])
            .arg(root.join(dir))
            .output()?;
        assert!(
            out.status.success(),
            "kubectl apply -f {dir}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
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
        "computecluster.byoc.dev/ml",
    ] {
        assert!(
            names.contains(want),
            "`kubectl get byoc` lacks {want}: {names}"
        );
    }
    // Printer columns.
    for (short, columns) in [
        ("cc", &["PHASE", "REGION", "VPC", "NODES", "AGE"][..]),
        ("ca", &["ACCOUNT", "PHASE", "AGE"][..]),
    ] {
        let out = g
            .kube
            .kubectl()
            .args(["get", short, "-n", &g.namespace])
            .output()?;
        let header = String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string();
        for col in columns {
            assert!(
                header.contains(col),
                "`kubectl get {short}` has no {col} column: {header}"
            );
        }
    }
    Ok(())
}

#[path = "../fixtures/cases.rs"]
mod cases;
use cases::compute_cluster as cluster_fixture;

const VALID_ACCOUNT: &str = r#"
apiVersion: byoc.dev/v1alpha1
kind: CloudAccount
metadata: {name: NAME}
spec:
  region: us-east-1
  roleArn: arn:aws:iam::123456789012:role/byoc
"#;

/// `(case, manifest, text the rejection must contain, or `accepted`)`.
/// Each manifest is a valid one with one thing broken: the ComputeCluster
/// cases from the shared fixture, then the CloudAccount ones.
fn invalid_creates() -> Vec<(String, String, String)> {
    let fixture = cluster_fixture();
    let mut rows: Vec<(String, String, String)> = fixture
        .cases
        .iter()
        .map(|c| {
            (
                c.case.clone(),
                c.manifest(&fixture.valid),
                c.apiserver.clone(),
            )
        })
        .collect();
    let ca = |from: &str, to: &str| VALID_ACCOUNT.edited(from, to);
    let accounts: Vec<(&str, String, &str)> = vec![
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
            "negative limit",
            ca("region: us-east-1", "region: us-east-1\n  limits: {perNamespace: {instances: -1}}"),
            "spec.limits.perNamespace.instances",
        ),
        (
            "price cap not a decimal",
            ca("region: us-east-1", "region: us-east-1\n  limits: {total: {pricePerHour: \"$40\"}}"),
            "spec.limits.total.pricePerHour",
        ),
        (
            "limit not a number",
            ca("region: us-east-1", "region: us-east-1\n  limits: {total: {vcpus: many}}"),
            "spec.limits.total.vcpus",
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
        (
            "image owner by alias",
            ca("region: us-east-1", "region: us-east-1\n  imageOwners: [amazon]"),
            "spec.imageOwners[0]",
        ),
        (
            "image owner of eleven digits",
            ca("region: us-east-1", "region: us-east-1\n  imageOwners: [\"12345678901\"]"),
            "spec.imageOwners[0]",
        ),
        (
            "too many image owners",
            ca("region: us-east-1", &format!("region: us-east-1\n  imageOwners: [{}]", (0..21).map(|i| format!("\"{:012}\"", i)).collect::<Vec<_>>().join(", "))),
            "spec.imageOwners",
        ),
        (
            "KMS key by alias ARN",
            ca("region: us-east-1", "region: us-east-1\n  kmsKeyArns: [\"arn:aws:kms:us-east-1:123456789012:alias/team\"]"),
            "spec.kmsKeyArns[0]",
        ),
        (
            "KMS key by bare ID",
            ca("region: us-east-1", "region: us-east-1\n  kmsKeyArns: [1234abcd-12ab-34cd-56ef-1234567890ab]"),
            "spec.kmsKeyArns[0]",
        ),
    ];
    rows.extend(
        accounts
            .into_iter()
            .map(|(case, manifest, expect)| (case.to_string(), manifest, expect.to_string())),
    );
    rows
}

/// `(case, change applied to the stored valid object, rejection text)`.
fn invalid_updates() -> Vec<(&'static str, String, &'static str)> {
    let valid = cluster_fixture().valid;
    let cc = |from: &str, to: &str| valid.edited(from, to);
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
    let g = ground_with_crds("crds-invalid").await?;
    let mut failures = Vec::new();
    let creates = invalid_creates();
    assert!(creates.len() >= 10, "at least ten invalid manifests");
    for (i, (case, manifest, expect)) in creates.iter().enumerate() {
        let out = apply(&g, &manifest.edited("NAME", &format!("bad-{i}")))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Accepted: the operator's validation stalls it (its unit test).
        let as_expected = match expect.as_str() {
            "accepted" => out.status.success(),
            text => !out.status.success() && stderr.contains(text),
        };
        if !as_expected {
            failures.push(format!(
                "{case}: success={} stderr={stderr}",
                out.status.success()
            ));
        }
    }
    for (i, (case, manifest, expect)) in invalid_updates().iter().enumerate() {
        let name = format!("upd-{i}");
        let created = apply(&g, &cluster_fixture().valid.edited("NAME", &name))?;
        if !created.status.success() {
            bail!(
                "valid manifest rejected: {}",
                String::from_utf8_lossy(&created.stderr)
            );
        }
        let out = apply(&g, &manifest.edited("NAME", &name))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || !stderr.contains(expect) {
            failures.push(format!(
                "{case}: success={} stderr={stderr}",
                out.status.success()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "not rejected as expected:\n{}",
        failures.join("\n")
    );
    Ok(())
}
