//! What a cluster costs (`status.cost`), priced through the policy the
//! cross-account role is granted: the Price List API and the spot price
//! history as the ground serves them (`testground/prices.json`).

use anyhow::{Context as _, Result};
use byoc_operator::api::compute_cluster::ClusterCost;
use byoc_operator::api::{ComputeCluster, Market};

use crate::clusters::{apply_example, ground_with_account, wait_running};
use crate::support::*;

/// A part's USD per hour, as status shows it.
fn part(cost: &ClusterCost, name: &str) -> Option<f64> {
    let p = cost.parts.iter().find(|p| p.part == name)?;
    p.per_hour.parse().ok()
}

fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 0.00006)
}

#[tokio::test]
async fn the_example_clusters_cost_is_its_parts_at_the_grounds_list_prices() -> Result<()> {
    let (g, op) = ground_with_account("cost", &[]).await?;
    apply_example(&g)?;
    let has_cost = |cc: &ComputeCluster| cc.status.as_ref().is_some_and(|s| s.cost.is_some());
    let demo = wait_running(&g, "demo", has_cost).await?;
    let status = demo.status.clone().context("no status")?;
    let cost = status.cost.clone().context("no cost")?;
    let f = testground::prices::fixture();
    let region = "us-east-1";

    // What the example holds, from its status: three t3.large on demand,
    // one g5.xlarge on spot (priced in its zone), one NAT gateway with its
    // Elastic IP, and every instance's root volume.
    let group = |name: &str| status.node_groups.iter().find(|g| g.name == name);
    let workers = group("workers").context("no workers")?;
    let gpu = group("gpu").context("no gpu group")?;
    assert!(
        workers.instances.len() == 3
            && workers
                .instances
                .iter()
                .all(|i| i.capacity_type == Market::OnDemand),
        "{workers:?}"
    );
    let spot = gpu.instances.first().context("no gpu instance")?;
    assert_eq!(spot.capacity_type, Market::Spot);

    // The root volumes are the image's (the example sets none): its size
    // and type as EC2 describes the image.
    let image_id = workers.image_id.clone().context("no pinned image")?;
    let ec2 = aws_sdk_ec2::Client::new(&g.aws().await);
    let images = ec2.describe_images().image_ids(&image_id).send().await?;
    let image = images.images().first().context("image not found")?;
    let root = image
        .block_device_mappings()
        .iter()
        .find(|m| m.device_name() == image.root_device_name())
        .and_then(|m| m.ebs())
        .context("the image has no root volume")?;
    let gib = f64::from(root.volume_size().unwrap_or(8));
    let volume_type = root.volume_type().map_or("gp3", |t| t.as_str());
    let per_gib_hour = f.volume(region, volume_type) / 730.0;

    let want = [
        ("instances/workers", 3.0 * f.instance(region, "t3.large")),
        ("instances/gpu", f.spot(&spot.zone, "g5.xlarge")),
        ("volumes/workers", 3.0 * gib * per_gib_hour),
        ("volumes/gpu", gib * per_gib_hour),
        ("nat-gateways", f.nat_gateway(region)),
        ("public-ipv4", f.public_ipv4(region)),
    ];
    for (name, usd) in want {
        assert!(
            close(part(&cost, name), usd),
            "{name}: {:?}, want {usd:.4} from the fixture: {cost:?}",
            part(&cost, name)
        );
    }
    assert_eq!(cost.parts.len(), want.len(), "{cost:?}");
    let total: f64 = want.iter().map(|(_, usd)| usd).sum();
    let per_hour: f64 = cost.per_hour.parse()?;
    assert!((per_hour - total).abs() < 0.0001, "{cost:?}, want {total}");
    let per_month: f64 = cost.per_month.parse()?;
    assert!((per_month - total * 730.0).abs() < 0.01, "{cost:?}");
    // Every price came from AWS (the table stood in for nothing): the
    // spot price is not the on-demand one, and the basis says so.
    assert_eq!(cost.basis, "list price", "{cost:?}");
    assert!(f.spot(&spot.zone, "g5.xlarge") < f.instance(region, "g5.xlarge"));

    // `describe` shows it per part, and the metric carries it.
    let described = byoc(
        &g,
        &["describe", "computecluster", "demo", "-n", &g.namespace],
    )?;
    assert!(
        described.contains(&format!(
            "Cost  ${}/h  ${}/month  (list price)",
            cost.per_hour, cost.per_month
        )) && described.contains(&format!(
            "instances/gpu  ${}/h",
            cost.parts
                .iter()
                .find(|p| p.part == "instances/gpu")
                .map(|p| p.per_hour.clone())
                .unwrap_or_default()
        )),
        "{described}"
    );
    let series = format!(
        "byoc_cluster_cost_usd_per_hour{{namespace=\"{}\",name=\"demo\"}}",
        g.namespace
    );
    let metric = op.metric(&series)?;
    assert!((metric - per_hour).abs() < 0.0001, "{series} = {metric}");
    Ok(())
}

#[tokio::test]
async fn a_price_cap_admits_what_fits_at_list_price_and_names_dollars_when_full() -> Result<()> {
    let (g, op) = ground_with_account(
        "price-cap",
        &["--concurrency", "4", "--namespace-concurrency", "4"],
    )
    .await?;
    // t3.small is $0.0208 an hour in the ground's prices: two fit under
    // $0.05, three do not.
    let f = testground::prices::fixture();
    let small = f.instance("us-east-1", "t3.small");
    assert!(2.0 * small <= 0.05 && 3.0 * small > 0.05);
    let accounts = g.api::<byoc_operator::api::CloudAccount>();
    let cap = serde_json::json!({"total": {"pricePerHour": "0.05"}});
    crate::clusters::set_limits(&g, cap).await?;
    let names = crate::clusters::apply_small_clusters(&g, "priced", 3, 70)?;
    let (running, refused) = eventually(
        "two running, one over the price cap",
        crate::clusters::WAIT,
        || async {
            let (running, refused) = crate::clusters::running_and_over_limit(&g, &names).await?;
            Ok((running.len() == 2 && refused.len() == 1).then_some((running, refused)))
        },
    )
    .await
    .with_context(|| op.log_tail(20))?;
    let (waiting, message) = refused[0].clone();
    assert!(
        message.contains("limits.total.pricePerHour is $0.05: other clusters hold $0.0416 and this one asks for $0.0208"),
        "{message}"
    );
    let usage = eventually("the account's usage", crate::clusters::WAIT, || async {
        let a = accounts.get("acme").await?;
        Ok(a.status.and_then(|s| s.usage).filter(|u| u.clusters == 2))
    })
    .await?;
    assert_eq!(usage.price_per_hour.as_deref(), Some("0.0416"), "{usage:?}");

    // Control: with one deleted, the waiting one fits and runs.
    let first = crate::clusters::uid_of(&g, &running[0]).await?;
    crate::clusters::delete_leaves_nothing(&g, &running[0], &first).await?;
    wait_running(&g, &waiting, |_| true)
        .await
        .with_context(|| op.log_tail(20))?;
    Ok(())
}

#[tokio::test]
async fn a_per_namespace_price_cap_holds_each_namespace_to_its_own_share() -> Result<()> {
    let g = ground_with_crds("ns-price-cap").await?;
    let (a, b) = (g.namespace.clone(), format!("{}-b", g.namespace));
    create_namespace(&g.client, &b).await?;
    // An operator watching each namespace: one for all namespaces would
    // take up the clusters of the other tests sharing this apiserver.
    let op = Operator::start(&g, &["--progress-poll", "1s"], &[])?;
    let _op_b = Operator::start_in(&g, &b, &["--progress-poll", "1s"], &[])?;
    crate::clusters::ready_account(&g).await?;
    // t3.small is $0.0208 an hour in the ground's prices: one fits under
    // $0.03 a namespace, two do not.
    let f = testground::prices::fixture();
    let small = f.instance("us-east-1", "t3.small");
    assert!(small <= 0.03 && 2.0 * small > 0.03);
    g.api::<byoc_operator::api::CloudAccount>()
        .patch(
            "acme",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"spec": {
                "allowedNamespaces": [b],
                "limits": {"perNamespace": {"pricePerHour": "0.03"}},
            }})),
        )
        .await?;
    let names = crate::clusters::apply_small_clusters(&g, "own", 2, 84)?;
    let (_, refused) = eventually(
        "one of namespace A's two running, the other over its share",
        crate::clusters::WAIT,
        || async {
            let (running, refused) = crate::clusters::running_and_over_limit(&g, &names).await?;
            Ok((running.len() == 1 && refused.len() == 1).then_some((running, refused)))
        },
    )
    .await
    .with_context(|| op.log_tail(20))?;
    let (waiting, message) = refused[0].clone();
    assert!(
        message.contains("limits.perNamespace.pricePerHour is $0.03")
            && message.contains("asks for $0.0208"),
        "{message}"
    );
    // Control: namespace B's share is its own. Its cluster runs through
    // the same account while A's second still waits.
    let borrowed = crate::clusters::small_cluster_manifest("other", "10.86.0.0/16").edited(
        "cloudAccountRef: {name: acme}",
        &format!("cloudAccountRef: {{name: acme, namespace: {a}}}"),
    );
    kubectl_apply_in(&g, &b, &borrowed)?;
    let in_b = kube::Api::<ComputeCluster>::namespaced(g.client.clone(), &b);
    eventually(
        "namespace B's cluster running",
        crate::clusters::WAIT,
        || async {
            let cc = in_b.get("other").await?;
            let running =
                cc.status.and_then(|s| s.phase) == Some(byoc_operator::api::ClusterPhase::Running);
            Ok(running.then_some(()))
        },
    )
    .await
    .with_context(|| op.log_tail(20))?;
    let (_, still) = crate::clusters::running_and_over_limit(&g, &names).await?;
    assert_eq!(
        still.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
        vec![waiting],
        "namespace B's cluster counted against A's share, or A's waiting one ran"
    );
    Ok(())
}
