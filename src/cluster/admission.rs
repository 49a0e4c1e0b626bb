//! A pass's admission against its CloudAccount's limits
//! (`account::limits`): what the cluster asks for, what the others using
//! the account run, and the ledger's answer, before anything is made.

use std::collections::BTreeMap;

use kube::ResourceExt;

use super::spec::ValidatedSpec;
use super::ClusterContext;
use crate::account::limits::{self, Known, Use};
use crate::api::cloud_account::AccountLimits;
use crate::api::ComputeCluster;
use crate::aws::AwsClients;
use crate::prices::{Item, Wanted};
use crate::Error;

/// vCPUs and GPUs by instance type.
type Shapes = BTreeMap<String, (i64, i64)>;
/// On-demand millionths of a USD an hour, by instance type.
type Prices = BTreeMap<String, i64>;

/// What `spec` asks for: one cluster, its groups' instances, and their
/// vCPUs, GPUs and price at the largest of each group's types. Pure.
pub fn wanted(spec: &ValidatedSpec, shapes: &Shapes, prices: &Prices) -> Use {
    let mut want = Use {
        clusters: 1,
        ..Use::default()
    };
    for g in &spec.node_groups {
        let count = i64::from(g.count.max(0));
        let types = g.types();
        let largest = |pick: &dyn Fn(&str) -> Option<i64>| {
            types.iter().filter_map(|t| pick(t)).max().unwrap_or(0)
        };
        want.instances += count;
        want.vcpus += count * largest(&|t| shapes.get(t).map(|s| s.0));
        want.gpus += count * largest(&|t| shapes.get(t).map(|s| s.1));
        want.micro_usd += count * largest(&|t| prices.get(t).copied());
    }
    want
}

/// What `cc`'s status shows it running: one cluster and its live instances.
/// Pure.
pub fn running(cc: &ComputeCluster, shapes: &Shapes, prices: &Prices) -> Use {
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
        u.micro_usd += prices.get(&i.instance_type).copied().unwrap_or_default();
    }
    u
}

/// The on-demand price of each of `types` in `region`, where the account
/// caps the price; a type of `asked` with no known price is refused.
async fn prices_of(
    ctx: &ClusterContext,
    c: &AwsClients,
    region: &str,
    types: &[String],
    asked: &[String],
) -> Result<Prices, Error> {
    let wanted = Wanted {
        items: types.iter().map(|t| Item::Instance(t.clone())).collect(),
        ..Wanted::default()
    };
    let book = ctx.operator.prices.book(c, region, &wanted).await;
    let mut prices = Prices::new();
    for t in types {
        match book.price(&Item::Instance(t.clone())) {
            Some(p) => {
                prices.insert(t.clone(), (p.usd * 1_000_000.0).round() as i64);
            }
            None if asked.contains(t) => {
                return Err(Error::Unpriced {
                    instance_type: t.clone(),
                    region: region.to_string(),
                })
            }
            None => {}
        }
    }
    Ok(prices)
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
    let asked: Vec<String> = spec
        .node_groups
        .iter()
        .flat_map(|g| g.types().into_iter().map(String::from))
        .collect();
    let (shapes, prices) = match limits {
        Some(limits) => {
            let mut types: Vec<String> = asked
                .iter()
                .cloned()
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
            let shapes = ctx.catalog.shapes(c, &spec.region, &types).await?;
            let prices = match limits::caps_price(limits) {
                true => prices_of(ctx, c, &spec.region, &types, &asked).await?,
                false => Prices::new(),
            };
            (shapes, prices)
        }
        None => (Shapes::new(), Prices::new()),
    };
    let known: Vec<Known> = others
        .iter()
        .map(|o| Known {
            uid: o.uid().unwrap_or_default(),
            namespace: o.namespace().unwrap_or_default(),
            running: running(o, &shapes, &prices),
        })
        .collect();
    ctx.operator
        .ledger
        .admit(
            account,
            limits,
            &uid,
            &cc.namespace().unwrap_or_default(),
            wanted(spec, &shapes, &prices),
            &known,
        )
        .map_err(Error::LimitExceeded)
}
