//! A pass's admission against its CloudAccount's limits
//! (`account::limits`): what the cluster asks for, what the others using
//! the account run, and the ledger's answer, before anything is made.

use std::collections::BTreeMap;

use kube::ResourceExt;

use super::spec::ValidatedSpec;
use super::ClusterContext;
use crate::account::limits::{Known, Use};
use crate::api::cloud_account::AccountLimits;
use crate::api::ComputeCluster;
use crate::aws::AwsClients;
use crate::Error;

/// vCPUs and GPUs by instance type.
type Shapes = BTreeMap<String, (i64, i64)>;

/// What `spec` asks for: one cluster, its groups' instances, and their
/// vCPUs and GPUs at the largest of each group's types. Pure.
pub fn wanted(spec: &ValidatedSpec, shapes: &Shapes) -> Use {
    let mut want = Use {
        clusters: 1,
        ..Use::default()
    };
    for g in &spec.node_groups {
        let count = i64::from(g.count.max(0));
        let largest = |pick: fn(&(i64, i64)) -> i64| {
            g.types()
                .iter()
                .filter_map(|t| shapes.get(*t).map(pick))
                .max()
                .unwrap_or(0)
        };
        want.instances += count;
        want.vcpus += count * largest(|s| s.0);
        want.gpus += count * largest(|s| s.1);
    }
    want
}

/// What `cc`'s status shows it running: one cluster and its live instances.
/// Pure.
pub fn running(cc: &ComputeCluster, shapes: &Shapes) -> Use {
    let mut u = Use {
        clusters: 1,
        ..Use::default()
    };
    for i in cc
        .status
        .iter()
        .flat_map(|s| s.node_groups.iter())
        .flat_map(|g| g.instances.iter())
    {
        let (vcpus, gpus) = shapes.get(&i.instance_type).copied().unwrap_or_default();
        u.instances += 1;
        u.vcpus += vcpus;
        u.gpus += gpus;
    }
    u
}

/// Admits the pass of `cc` (through the account of UID `account`, whose
/// `limits` apply) or refuses it with the limit it would pass. vCPUs and
/// GPUs are looked up (once per type and process) only where the account
/// sets limits.
pub async fn admit(
    ctx: &ClusterContext,
    c: &AwsClients,
    cc: &ComputeCluster,
    spec: &ValidatedSpec,
    account: &str,
    limits: Option<&AccountLimits>,
) -> Result<(), Error> {
    let uid = cc.uid().unwrap_or_default();
    let others: Vec<std::sync::Arc<ComputeCluster>> = ctx
        .clusters
        .state()
        .into_iter()
        .filter(|o| o.uid().as_deref() != Some(uid.as_str()))
        .filter(|o| o.recorded_account().is_some_and(|r| r.uid == account))
        .collect();
    let shapes = match limits {
        Some(_) => {
            let mut types: Vec<String> = spec
                .node_groups
                .iter()
                .flat_map(|g| g.types().into_iter().map(String::from))
                .chain(others.iter().flat_map(|o| {
                    o.status
                        .iter()
                        .flat_map(|s| s.node_groups.iter())
                        .flat_map(|g| g.instances.iter().map(|i| i.instance_type.clone()))
                        .collect::<Vec<_>>()
                }))
                .filter(|t| !t.is_empty())
                .collect();
            types.sort();
            types.dedup();
            ctx.catalog.shapes(c, &spec.region, &types).await?
        }
        None => Shapes::new(),
    };
    let known: Vec<Known> = others
        .iter()
        .map(|o| Known {
            uid: o.uid().unwrap_or_default(),
            namespace: o.namespace().unwrap_or_default(),
            running: running(o, &shapes),
        })
        .collect();
    ctx.operator
        .ledger
        .admit(
            account,
            limits,
            &uid,
            &cc.namespace().unwrap_or_default(),
            wanted(spec, &shapes),
            &known,
        )
        .map_err(Error::LimitExceeded)
}
