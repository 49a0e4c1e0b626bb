//! ComputeCluster helpers shared by the test modules: resource counts in
//! moto by ownership tag, a ready account, waiting for `running`, spec
//! patches and deletion to nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use aws_sdk_ec2::types::Filter;
use byoc_operator::api::{ClusterPhase, ComputeCluster};
use kube::api::{DeleteParams, Patch, PatchParams};

use crate::support::{
    eventually, ground_with_crds, kubectl_apply, Edited, Ground, Operator, OperatorExt,
};

/// How long a test waits for what should come before it calls it lost: a
/// bound against hanging, not a speed goal (those are the benchmark's), with
/// room for a CI machine half as fast as a quiet one.
pub(crate) const WAIT: Duration = Duration::from_secs(240);

/// What moto holds for one cluster UID (live resources only).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub vpcs: usize,
    pub subnets: usize,
    pub internet_gateways: usize,
    pub nat_gateways: usize,
    pub addresses: usize,
    pub route_tables: usize,
    pub security_groups: usize,
    /// instance type → count of pending/running instances.
    pub instances: BTreeMap<String, usize>,
    pub roles: usize,
    /// VPC endpoints not deleted.
    pub endpoints: usize,
    /// Peering connections not deleted.
    pub peerings: usize,
}

impl Counts {
    pub fn instances(&self) -> usize {
        self.instances.values().sum()
    }
}

pub(crate) async fn counts(g: &Ground, uid: &str) -> Result<Counts> {
    counts_as(&g.aws().await, uid).await
}

/// [`counts`] with `config`'s identity (once moto enforces IAM).
pub(crate) async fn counts_as(config: &aws_config::SdkConfig, uid: &str) -> Result<Counts> {
    let ec2 = aws_sdk_ec2::Client::new(config);
    let f = || {
        Filter::builder()
            .name("tag:byoc.dev/cluster-uid")
            .values(uid)
            .build()
    };
    let ours = |tags: &[aws_sdk_ec2::types::Tag]| {
        tags.iter()
            .any(|t| t.key() == Some("byoc.dev/cluster-uid") && t.value() == Some(uid))
    };
    let mut c = Counts {
        vpcs: ec2
            .describe_vpcs()
            .filters(f())
            .send()
            .await?
            .vpcs()
            .iter()
            .filter(|v| ours(v.tags()))
            .count(),
        subnets: ec2
            .describe_subnets()
            .filters(f())
            .send()
            .await?
            .subnets()
            .iter()
            .filter(|s| ours(s.tags()))
            .count(),
        internet_gateways: ec2
            .describe_internet_gateways()
            .filters(f())
            .send()
            .await?
            .internet_gateways()
            .iter()
            .filter(|x| ours(x.tags()))
            .count(),
        nat_gateways: ec2
            .describe_nat_gateways()
            .send()
            .await?
            .nat_gateways()
            .iter()
            .filter(|n| ours(n.tags()))
            .filter(|n| {
                matches!(
                    n.state(),
                    Some(
                        aws_sdk_ec2::types::NatGatewayState::Available
                            | aws_sdk_ec2::types::NatGatewayState::Pending
                    )
                )
            })
            .count(),
        addresses: ec2
            .describe_addresses()
            .filters(f())
            .send()
            .await?
            .addresses()
            .iter()
            .filter(|a| ours(a.tags()))
            .count(),
        route_tables: ec2
            .describe_route_tables()
            .filters(f())
            .send()
            .await?
            .route_tables()
            .iter()
            .filter(|t| ours(t.tags()))
            .count(),
        security_groups: ec2
            .describe_security_groups()
            .filters(f())
            .send()
            .await?
            .security_groups()
            .iter()
            .filter(|s| ours(s.tags()))
            .count(),
        endpoints: ec2
            .describe_vpc_endpoints()
            .filters(f())
            .send()
            .await?
            .vpc_endpoints()
            .iter()
            .filter(|e| ours(e.tags()))
            .filter(|e| e.state().map(|s| s.as_str()) != Some("deleted"))
            .count(),
        peerings: ec2
            .describe_vpc_peering_connections()
            .send()
            .await?
            .vpc_peering_connections()
            .iter()
            .filter(|p| ours(p.tags()))
            .filter(|p| {
                let code = p.status().and_then(|s| s.code()).map(|c| c.as_str());
                !matches!(code, Some("deleted" | "rejected" | "failed" | "expired"))
            })
            .count(),
        ..Default::default()
    };
    let out = ec2.describe_instances().filters(f()).send().await?;
    for r in out.reservations() {
        for i in r.instances() {
            let live = matches!(
                i.state().and_then(|s| s.name()),
                Some(
                    aws_sdk_ec2::types::InstanceStateName::Pending
                        | aws_sdk_ec2::types::InstanceStateName::Running
                )
            );
            if live && ours(i.tags()) {
                *c.instances
                    .entry(
                        i.instance_type()
                            .map(|t| t.as_str().to_string())
                            .unwrap_or_default(),
                    )
                    .or_default() += 1;
            }
        }
    }
    let iam = aws_sdk_iam::Client::new(config);
    let short: String = uid.chars().take(8).collect();
    c.roles = iam
        .list_roles()
        .send()
        .await?
        .roles()
        .iter()
        .filter(|r| r.role_name().ends_with(&short))
        .count();
    Ok(c)
}

/// The ID of the endpoint in `found` whose service name ends with `suffix`.
pub(crate) fn endpoint_of(
    found: &aws_sdk_ec2::operation::describe_vpc_endpoints::DescribeVpcEndpointsOutput,
    suffix: &str,
) -> Result<String> {
    found
        .vpc_endpoints()
        .iter()
        .find(|e| e.service_name().is_some_and(|n| n.ends_with(suffix)))
        .and_then(|e| e.vpc_endpoint_id())
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("no endpoint of {suffix}"))
}

/// A Secret and a ready CloudAccount named `acme`.
pub(crate) async fn ready_account(g: &Ground) -> Result<()> {
    ready_account_with(
        g,
        "AWS_ACCESS_KEY_ID: testing, AWS_SECRET_ACCESS_KEY: testing",
    )
    .await
}

/// [`ready_account`] with the Secret's `stringData` (a YAML flow mapping's body).
pub(crate) async fn ready_account_with(g: &Ground, string_data: &str) -> Result<()> {
    kubectl_apply(
        g,
        &format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: keys, labels: {{byoc.dev/use: credentials}}}}\nstringData: {{{string_data}}}\n"),
    )?;
    kubectl_apply(
        g,
        "apiVersion: byoc.dev/v1alpha1\nkind: CloudAccount\nmetadata: {name: acme}\nspec:\n  region: us-east-1\n  credentialsSecretRef: {name: keys}\n  roleArn: arn:aws:iam::123456789012:role/byoc-cross-account\n",
    )?;
    let api = g.api::<byoc_operator::api::CloudAccount>();
    eventually("CloudAccount acme ready", WAIT, || async {
        let a = api.get("acme").await?;
        Ok(
            (a.status.and_then(|s| s.phase) == Some(byoc_operator::api::AccountPhase::Ready))
                .then_some(()),
        )
    })
    .await
}

/// `examples/sandbox/20-computecluster.yaml` named `name`, using the account `acme`.
pub(crate) fn example_manifest(name: &str) -> Result<String> {
    Ok(std::fs::read_to_string(
        testground::repo_root().join("examples/sandbox/20-computecluster.yaml"),
    )?
    .edited("name: demo\n  region", "name: acme\n  region")
    .edited("name: demo\nspec", &format!("name: {name}\nspec")))
}

/// Applies the example as `demo`.
pub(crate) fn apply_example(g: &Ground) -> Result<()> {
    kubectl_apply(g, &example_manifest("demo")?)
}

/// What moto holds for the example with `workers` t3.large workers (and its
/// one g5.xlarge).
pub(crate) fn expected_example(workers: usize) -> Counts {
    Counts {
        vpcs: 1,
        subnets: 4,
        internet_gateways: 1,
        nat_gateways: 1,
        addresses: 1,
        route_tables: 2,
        security_groups: 1,
        instances: BTreeMap::from([("t3.large".into(), workers), ("g5.xlarge".into(), 1)]),
        roles: 1,
        ..Default::default()
    }
}

pub(crate) async fn wait_running(
    g: &Ground,
    name: &str,
    check: impl Fn(&ComputeCluster) -> bool,
) -> Result<ComputeCluster> {
    wait_running_within(g, name, WAIT, check).await
}

/// Waits for `running` at the current generation and `check`, until `deadline`.
pub(crate) async fn wait_running_within(
    g: &Ground,
    name: &str,
    deadline: Duration,
    check: impl Fn(&ComputeCluster) -> bool,
) -> Result<ComputeCluster> {
    let api = g.api::<ComputeCluster>();
    eventually(
        &format!("ComputeCluster {name} running"),
        deadline,
        || async {
            let cc = api.get(name).await?;
            let status = cc.status.as_ref();
            let running = status.and_then(|s| s.phase) == Some(ClusterPhase::Running)
                && status.and_then(|s| s.observed_generation) == cc.metadata.generation;
            Ok((running && check(&cc)).then_some(cc))
        },
    )
    .await
    .map_err(|e| g.with_denials(e))
}

pub(crate) async fn wait_counts(
    g: &Ground,
    uid: &str,
    what: &str,
    check: impl Fn(&Counts) -> bool,
) -> Result<Counts> {
    eventually(what, WAIT, || async {
        let c = counts(g, uid).await?;
        if check(&c) {
            Ok(Some(c))
        } else {
            Err(anyhow::anyhow!("moto holds {c:?}"))
        }
    })
    .await
}

pub(crate) async fn patch_spec(g: &Ground, name: &str, spec: serde_json::Value) -> Result<()> {
    g.api::<ComputeCluster>()
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "spec": spec })),
        )
        .await?;
    Ok(())
}

pub(crate) async fn delete_and_wait_gone(g: &Ground, name: &str) -> Result<()> {
    g.api::<ComputeCluster>()
        .delete(name, &DeleteParams::default())
        .await?;
    wait_gone(g, name).await
}

/// Waits until the ComputeCluster `name` is `Stalled` with `reason`: the condition.
pub(crate) async fn stalled_with(
    g: &Ground,
    name: &str,
    reason: &str,
) -> Result<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    condition_with(g, name, "Stalled", "True", reason).await
}

/// Waits until the ComputeCluster `name` has condition `type_` at
/// `status` with `reason`.
pub(crate) async fn condition_with(
    g: &Ground,
    name: &str,
    type_: &str,
    status: &str,
    reason: &str,
) -> Result<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    condition_within(g, name, WAIT, (type_, status, reason)).await
}

/// [`condition_with`] with its own deadline.
pub(crate) async fn condition_within(
    g: &Ground,
    name: &str,
    deadline: Duration,
    (type_, status, reason): (&str, &str, &str),
) -> Result<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    let api = g.api::<ComputeCluster>();
    eventually(
        &format!("{name}: {type_} {status} with {reason}"),
        deadline,
        || async {
            let cc = api.get(name).await?;
            Ok(cc
                .status
                .unwrap_or_default()
                .conditions
                .into_iter()
                .find(|c| c.type_ == type_ && c.status == status && c.reason == reason))
        },
    )
    .await
    .map_err(|e| g.with_denials(e))
}

/// Waits until the ComputeCluster `name` no longer exists.
pub(crate) async fn wait_gone(g: &Ground, name: &str) -> Result<()> {
    let api = g.api::<ComputeCluster>();
    eventually(&format!("ComputeCluster {name} gone"), WAIT, || async {
        Ok(api.get_opt(name).await?.is_none().then_some(()))
    })
    .await
}

/// Deletes the cluster `namespace/name` and removes its finalizer by hand
/// while no operator runs: what it made stays in AWS, no cluster owns it.
pub(crate) async fn orphan(g: &Ground, namespace: &str, name: &str) -> Result<()> {
    let api: kube::Api<ComputeCluster> = kube::Api::namespaced(g.client.clone(), namespace);
    api.delete(name, &DeleteParams::default()).await?;
    api.patch_metadata(
        name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"finalizers": null}})),
    )
    .await?;
    eventually(&format!("{namespace}/{name} gone"), WAIT, || async {
        Ok(api.get_opt(name).await?.is_none().then_some(()))
    })
    .await
}

/// A ground with the CRDs, the operator (progress poll 1 s, then `args`)
/// and the ready account `acme`.
pub(crate) async fn ground_with_account(test: &str, args: &[&str]) -> Result<(Ground, Operator)> {
    let g = ground_with_crds(test).await?;
    let args: Vec<&str> = ["--progress-poll", "1s"]
        .iter()
        .chain(args)
        .copied()
        .collect();
    let op = Operator::start(&g, &args, &[])?;
    ready_account(&g).await?;
    Ok((g, op))
}

/// A one-zone ComputeCluster without NAT gateways and one public t3.small,
/// using the account `acme`.
pub(crate) fn small_cluster_manifest(name: &str, vpc_cidr: &str) -> String {
    format!("apiVersion: byoc.dev/v1alpha1\nkind: ComputeCluster\nmetadata: {{name: {name}}}\nspec:\n  cloudAccountRef: {{name: acme}}\n  region: us-east-1\n  network: {{vpcCidr: {vpc_cidr}, availabilityZones: [us-east-1a], natGateways: none}}\n  nodeGroups: [{{name: workers, instanceType: t3.small, count: 1, subnets: public}}]\n")
}

/// Applies at once `n` clusters of [`small_cluster_manifest`] named
/// `<prefix>-<i>`, in 10.<`octet` + i>.0.0/16; their names.
pub(crate) fn apply_small_clusters(
    g: &Ground,
    prefix: &str,
    n: usize,
    octet: usize,
) -> Result<Vec<String>> {
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    let manifests: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, name)| small_cluster_manifest(name, &format!("10.{}.0.0/16", octet + i)))
        .collect();
    kubectl_apply(g, &manifests.join("---\n"))?;
    Ok(names)
}

/// Sets the account `acme`'s `spec.limits`.
pub(crate) async fn set_limits(g: &Ground, limits: serde_json::Value) -> Result<()> {
    g.api::<byoc_operator::api::CloudAccount>()
        .patch(
            "acme",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"spec": {"limits": limits}})),
        )
        .await?;
    Ok(())
}

/// Of the clusters `names`, those `running`, and those `Stalled` over an
/// account limit (`LimitExceeded`) with the condition's message.
pub(crate) async fn running_and_over_limit(
    g: &Ground,
    names: &[String],
) -> Result<(Vec<String>, Vec<(String, String)>)> {
    let api = g.api::<ComputeCluster>();
    let (mut running, mut refused) = (vec![], vec![]);
    for n in names {
        let status = api.get(n).await?.status.unwrap_or_default();
        if status.phase == Some(byoc_operator::api::ClusterPhase::Running) {
            running.push(n.clone());
        }
        if let Some(c) = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Stalled" && c.status == "True" && c.reason == "LimitExceeded")
        {
            refused.push((n.clone(), c.message.clone()));
        }
    }
    Ok((running, refused))
}

/// The UID of the ComputeCluster `name` of the test's namespace.
pub(crate) async fn uid_of(g: &Ground, name: &str) -> Result<String> {
    g.api::<ComputeCluster>()
        .get(name)
        .await?
        .metadata
        .uid
        .ok_or_else(|| anyhow::anyhow!("ComputeCluster {name} has no UID"))
}

/// Deletes the cluster, waits until the object is gone, and asserts that
/// nothing carrying its UID is left in moto.
pub(crate) async fn delete_leaves_nothing(g: &Ground, name: &str, uid: &str) -> Result<()> {
    delete_and_wait_gone(g, name).await?;
    let left = counts(g, uid).await?;
    anyhow::ensure!(left == Counts::default(), "left behind: {left:?}");
    Ok(())
}

/// Deletes a subnet behind the operator's back (its route table association
/// first, as AWS requires).
pub(crate) async fn delete_subnet_out_of_band(
    ec2: &aws_sdk_ec2::Client,
    subnet: &str,
) -> Result<()> {
    let rts = ec2
        .describe_route_tables()
        .filters(
            Filter::builder()
                .name("association.subnet-id")
                .values(subnet)
                .build(),
        )
        .send()
        .await?;
    for a in rts.route_tables().iter().flat_map(|t| t.associations()) {
        if a.subnet_id() == Some(subnet) {
            ec2.disassociate_route_table()
                .association_id(a.route_table_association_id().unwrap_or_default())
                .send()
                .await?;
        }
    }
    ec2.delete_subnet().subnet_id(subnet).send().await?;
    Ok(())
}

/// Running instances of the cluster `uid`, as moto holds them, oldest first.
pub(crate) async fn running_instances(g: &Ground, uid: &str) -> Result<Vec<String>> {
    let found = instances_in(g, uid, None, &["running"]).await?;
    Ok(found.into_iter().map(|(_, id)| id).collect())
}

/// `(launch time, ID)` of the cluster `uid`'s instances (of `group`, when
/// given) in any of `states`, as moto holds them, oldest first.
pub(crate) async fn instances_in(
    g: &Ground,
    uid: &str,
    group: Option<&str>,
    states: &[&str],
) -> Result<Vec<(i64, String)>> {
    let ec2 = aws_sdk_ec2::Client::new(&g.aws().await);
    let filter = |name: &str, values: &[&str]| {
        Filter::builder()
            .name(name)
            .set_values(Some(values.iter().map(|v| v.to_string()).collect()))
            .build()
    };
    let mut req = ec2
        .describe_instances()
        .filters(filter("tag:byoc.dev/cluster-uid", &[uid]))
        .filters(filter("instance-state-name", states));
    if let Some(group) = group {
        req = req.filters(filter("tag:byoc.dev/node-group", &[group]));
    }
    let out = req.send().await?;
    let mut found: Vec<(i64, String)> = out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .map(|i| {
            (
                i.launch_time().map(|t| t.secs()).unwrap_or_default(),
                i.instance_id().unwrap_or_default().to_string(),
            )
        })
        .collect();
    found.sort();
    Ok(found)
}
