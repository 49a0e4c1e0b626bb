//! Network reach against the real apiserver and moto through the proxy:
//! VPC endpoints, a private network with no internet at all, and peering
//! with a VPC of the team's — each visible in AWS after `running`, gone
//! after deletion, and the peer left exactly as it was.

use anyhow::{Context as _, Result};
use aws_sdk_ec2::types::{Filter, Tag};
use byoc_operator::api::ComputeCluster;
use kube::ResourceExt;

use crate::clusters::{
    condition_with, counts, delete_and_wait_gone, delete_leaves_nothing, endpoint_of,
    ground_with_account, ready_account, stalled_with, uid_of, wait_running, Counts, WAIT,
};
use crate::support::{
    eventually, ground_with_crds, kubectl_apply, kubectl_byoc, let_use, Ground, Operator,
    OperatorExt,
};

/// A VPC of the team's in the cluster's account, with two route tables of
/// its own: one opened to routes back from the clusters of the test's
/// namespace (`byoc.dev/peer-routes=<installation>/<namespace>`), one not.
struct Peer {
    vpc_id: String,
    open_table: String,
    closed_table: String,
}

async fn peer_vpc(g: &Ground, ec2: &aws_sdk_ec2::Client, cidr: &str) -> Result<Peer> {
    let opened_to = opened_to(g).await?;
    let vpc_id = ec2
        .create_vpc()
        .cidr_block(cidr)
        .send()
        .await?
        .vpc()
        .and_then(|v| v.vpc_id())
        .context("peer VPC ID")?
        .to_string();
    let table = || async {
        let id = ec2
            .create_route_table()
            .vpc_id(&vpc_id)
            .send()
            .await?
            .route_table()
            .and_then(|t| t.route_table_id())
            .context("route table ID")?
            .to_string();
        // A route of the team's own, which must survive everything.
        ec2.create_route()
            .route_table_id(&id)
            .destination_cidr_block("192.168.0.0/16")
            .gateway_id("local")
            .send()
            .await
            .ok();
        anyhow::Ok(id)
    };
    let (open_table, closed_table) = (table().await?, table().await?);
    ec2.create_tags()
        .resources(&open_table)
        .tags(
            Tag::builder()
                .key("byoc.dev/peer-routes")
                .value(&opened_to)
                .build(),
        )
        .send()
        .await?;
    Ok(Peer {
        vpc_id,
        open_table,
        closed_table,
    })
}

/// The value of `byoc.dev/peer-routes` that opens a table to the clusters
/// of the test's namespace.
async fn opened_to(g: &Ground) -> Result<String> {
    Ok(format!(
        "{}/{}",
        crate::support::default_installation(g).await?,
        g.namespace
    ))
}

/// The peer as a test sees it: its VPC and each of its route tables'
/// routes and tags, in a stable order.
async fn snapshot(ec2: &aws_sdk_ec2::Client, vpc_id: &str) -> Result<String> {
    let vpcs = ec2.describe_vpcs().vpc_ids(vpc_id).send().await?;
    let tables = ec2
        .describe_route_tables()
        .filters(Filter::builder().name("vpc-id").values(vpc_id).build())
        .send()
        .await?;
    let mut lines: Vec<String> = vpcs
        .vpcs()
        .iter()
        .map(|v| format!("{:?} {:?} {:?}", v.vpc_id(), v.cidr_block(), v.tags()))
        .collect();
    for t in tables.route_tables() {
        let mut routes: Vec<String> = t
            .routes()
            .iter()
            .map(|r| {
                format!(
                    "{:?}->{:?}{:?}{:?}",
                    r.destination_cidr_block(),
                    r.gateway_id(),
                    r.vpc_peering_connection_id(),
                    r.nat_gateway_id()
                )
            })
            .collect();
        routes.sort();
        lines.push(format!(
            "{:?} {:?} {routes:?}",
            t.route_table_id(),
            t.tags()
        ));
    }
    lines.sort();
    Ok(lines.join("\n"))
}

fn manifest(name: &str, cidr: &str, network_extra: &str) -> String {
    format!(
        "apiVersion: byoc.dev/v1alpha1\nkind: ComputeCluster\nmetadata: {{name: {name}}}\nspec:\n  cloudAccountRef: {{name: acme}}\n  region: us-east-1\n  network:\n    vpcCidr: {cidr}\n    availabilityZones: [us-east-1a, us-east-1b]\n{network_extra}  nodeGroups: [{{name: workers, instanceType: t3.small, count: 1}}]\n"
    )
}

#[tokio::test]
async fn endpoints_a_private_network_and_peering_are_made_shown_and_removed() -> Result<()> {
    let (g, op) = ground_with_account("reach-made", &["--resync-interval", "2s"]).await?;
    let result = made_and_removed(&g).await;
    result.with_context(|| format!("operator log tail:\n{}", op.log_tail(40)))
}

/// The same against AWS's behaviour as a whole at a twentieth of its
/// durations: interface endpoints pending 3–6 s and deleting 1.5–3 s, an
/// accepted connection provisioning 0.1–0.5 s, new endpoints and
/// connections missing from describes for a moment, EC2's rate limits.
#[tokio::test]
async fn reach_lives_the_same_against_aws_realism() -> Result<()> {
    let g = ground_with_crds("reach-realism").await?;
    // A connection is `provisioning` for AWS's 2–10 s, 0.1–0.5 s at this
    // scale: shorter than the shared wait's tick on a loaded machine. Every
    // state lasts at least three ticks, so that each is seen.
    g.proxy.set_faults(testground::Faults {
        realism: Some(testground::Realism {
            shortest_state: std::time::Duration::from_secs(3),
            ..testground::Realism::aws(0.05)
        }),
        ..Default::default()
    });
    let args = ["--progress-poll", "1s", "--resync-interval", "2s"];
    let op = Operator::start(&g, &args, &[])?;
    ready_account(&g).await?;
    let result = made_and_removed(&g).await;
    let events = g.proxy.realism_events();
    let result = result.and_then(|()| {
        let shown = |what: &str| events.get(what).copied().unwrap_or_default();
        anyhow::ensure!(
            shown("pending") > 0 && shown("deleting") > 0 && shown("provisioning") > 0,
            "the profile showed no endpoint or peering state: {events:?}"
        );
        Ok(())
    });
    result.with_context(|| format!("operator log tail:\n{}", op.log_tail(40)))
}

async fn made_and_removed(g: &Ground) -> Result<()> {
    let ec2 = aws_sdk_ec2::Client::new(&g.aws().await);
    let peer = peer_vpc(g, &ec2, "10.40.0.0/16").await?;
    // Its owner lets the installation accept a connection into it.
    let_use(g, &ec2, [&peer.vpc_id]).await?;
    let before = snapshot(&ec2, &peer.vpc_id).await?;
    let extra = format!(
        "    internet: false\n    endpoints: [s3, ecr.api, sts]\n    peering:\n      - {{vpcId: {}, peerRouteTableIds: [{}]}}\n",
        peer.vpc_id, peer.open_table
    );
    kubectl_apply(g, &manifest("private", "10.41.0.0/16", &extra))?;
    let cc = wait_running(g, "private", |_| true).await?;
    let uid = cc.uid().context("uid")?;
    let network = cc
        .status
        .as_ref()
        .and_then(|s| s.network.clone())
        .context("network status")?;

    // No way out: no internet gateway, NAT gateway, Elastic IP or public subnet.
    let c = counts(g, &uid).await?;
    assert_eq!(
        (c.internet_gateways, c.nat_gateways, c.addresses),
        (0, 0, 0),
        "{c:?}"
    );
    assert!(
        network.subnets.len() == 2 && network.subnets.iter().all(|s| !s.public),
        "{:?}",
        network.subnets
    );
    assert_eq!((c.endpoints, c.peerings), (3, 1), "{c:?}");

    // The endpoints, each where it belongs.
    let endpoints = ec2
        .describe_vpc_endpoints()
        .set_vpc_endpoint_ids(Some(network.endpoint_ids.clone()))
        .send()
        .await?;
    let mut private: Vec<String> = network.subnets.iter().map(|s| s.id.clone()).collect();
    private.sort();
    let mut services = Vec::new();
    let mut group = None;
    for e in endpoints.vpc_endpoints() {
        let service = e.service_name().unwrap_or_default().to_string();
        if service.ends_with(".s3") {
            let mut tables = e.route_table_ids().to_vec();
            tables.sort();
            let mut ours = network.route_table_ids.clone();
            ours.sort();
            assert_eq!(tables, ours, "the S3 gateway endpoint on every table");
        } else {
            let mut subnets = e.subnet_ids().to_vec();
            subnets.sort();
            assert_eq!(subnets, private, "{service} in the private subnets");
            assert_eq!(e.private_dns_enabled(), Some(true), "{service}");
            let groups: Vec<&str> = e.groups().iter().filter_map(|g| g.group_id()).collect();
            assert_eq!(groups.len(), 1, "{service}: {groups:?}");
            group = groups.first().map(|g| g.to_string());
        }
        services.push(service);
    }
    services.sort();
    assert_eq!(
        services,
        [
            "com.amazonaws.us-east-1.ecr.api",
            "com.amazonaws.us-east-1.s3",
            "com.amazonaws.us-east-1.sts"
        ]
    );
    let group = group.context("the endpoints' security group")?;
    let sg = ec2
        .describe_security_groups()
        .group_ids(&group)
        .send()
        .await?;
    let rules: Vec<String> = sg
        .security_groups()
        .iter()
        .flat_map(|g| g.ip_permissions())
        .flat_map(|p| {
            p.ip_ranges().iter().map(move |r| {
                format!(
                    "{:?} {:?}-{:?} {:?}",
                    p.ip_protocol(),
                    p.from_port(),
                    p.to_port(),
                    r.cidr_ip()
                )
            })
        })
        .collect();
    assert_eq!(
        rules,
        [r#"Some("tcp") Some(443)-Some(443) Some("10.41.0.0/16")"#],
        "HTTPS from the VPC alone"
    );

    // Every endpoint usable by the account's own principals alone (the
    // default `endpointPolicy: account`); `full` puts AWS's default policy
    // on them in place, and `account` puts it back.
    let policies = |wanted: &'static str| {
        let ec2 = ec2.clone();
        let ids = network.endpoint_ids.clone();
        async move {
            let out = ec2
                .describe_vpc_endpoints()
                .set_vpc_endpoint_ids(Some(ids))
                .send()
                .await?;
            let all = out.vpc_endpoints().iter().all(|e| {
                let doc: serde_json::Value =
                    serde_json::from_str(e.policy_document().unwrap_or("null")).unwrap_or_default();
                let principal_account =
                    &doc["Statement"][0]["Condition"]["StringEquals"]["aws:PrincipalAccount"];
                match wanted {
                    "account" => principal_account == "123456789012",
                    _ => principal_account.is_null() && doc["Statement"][0]["Principal"] == "*",
                }
            });
            anyhow::Ok(all.then_some(()))
        }
    };
    policies("account")
        .await?
        .context("an endpoint without the account-only policy")?;
    for wanted in ["full", "account"] {
        crate::clusters::patch_spec(
            g,
            "private",
            serde_json::json!({"network": {"endpointPolicy": wanted}}),
        )
        .await?;
        eventually(&format!("endpoint policies {wanted}"), WAIT, || {
            policies(wanted)
        })
        .await?;
    }

    // The peering connection, active, routed both ways where allowed.
    let pcx = network
        .peering_connection_ids
        .first()
        .context("a peering connection in status")?
        .clone();
    let found = ec2
        .describe_vpc_peering_connections()
        .vpc_peering_connection_ids(&pcx)
        .send()
        .await?;
    let state = found
        .vpc_peering_connections()
        .first()
        .and_then(|p| p.status())
        .and_then(|s| s.code())
        .map(|c| c.as_str().to_string());
    assert_eq!(state.as_deref(), Some("active"));
    let routes_to = |table: String| {
        let ec2 = ec2.clone();
        let pcx = pcx.clone();
        async move {
            let routes = routes_of(&ec2, &table).await?;
            anyhow::Ok(
                (routes.into_iter())
                    .filter(|(_, target)| *target == pcx)
                    .map(|(destination, _)| destination)
                    .collect::<Vec<_>>(),
            )
        }
    };
    for table in &network.route_table_ids {
        assert_eq!(routes_to(table.clone()).await?, ["10.40.0.0/16"], "{table}");
    }
    assert_eq!(
        routes_to(peer.open_table.clone()).await?,
        ["10.41.0.0/16"],
        "the opened peer table routes back"
    );
    assert!(
        routes_to(peer.closed_table.clone()).await?.is_empty(),
        "a table not listed is not touched"
    );

    // Drift: the S3 endpoint detached from a table and the STS one deleted
    // out of band come back on the shared resync.
    let s3 = endpoint_of(&endpoints, ".s3")?;
    let sts = endpoint_of(&endpoints, ".sts")?;
    ec2.modify_vpc_endpoint()
        .vpc_endpoint_id(&s3)
        .set_remove_route_table_ids(Some(network.route_table_ids.clone()))
        .send()
        .await?;
    ec2.delete_vpc_endpoints()
        .vpc_endpoint_ids(&sts)
        .send()
        .await?;
    let repaired = eventually("the endpoints repaired", WAIT, || async {
        let now = ec2
            .describe_vpc_endpoints()
            .filters(
                Filter::builder()
                    .name("vpc-id")
                    .values(network.vpc_id.clone().unwrap_or_default())
                    .build(),
            )
            .send()
            .await?;
        let live: Vec<_> = now
            .vpc_endpoints()
            .iter()
            .filter(|e| e.state().map(|s| s.as_str()) == Some("available"))
            .collect();
        let s3_attached = live.iter().any(|e| {
            e.vpc_endpoint_id() == Some(s3.as_str())
                && e.route_table_ids().len() == network.route_table_ids.len()
        });
        let sts_again = live.iter().any(|e| {
            e.service_name().is_some_and(|n| n.ends_with(".sts"))
                && e.vpc_endpoint_id() != Some(sts.as_str())
        });
        Ok((live.len() == 3 && s3_attached && sts_again).then_some(()))
    });
    repaired.await?;
    let cc = wait_running(g, "private", |cc| {
        cc.status
            .as_ref()
            .and_then(|s| s.network.as_ref())
            .is_some_and(|n| n.endpoint_ids.len() == 3 && !n.endpoint_ids.contains(&sts))
    })
    .await?;
    let network = cc
        .status
        .as_ref()
        .and_then(|s| s.network.clone())
        .context("network status")?;

    // Shown by describe, each with its state.
    let tree = kubectl_byoc(
        g,
        &["describe", "computecluster", "private", "-n", &g.namespace],
    )?;
    for id in network.endpoint_ids.iter().chain([&pcx]) {
        assert!(tree.contains(id.as_str()), "describe lacks {id}:\n{tree}");
    }
    assert!(
        tree.contains("interface  available  2 subnets")
            && tree.contains(&format!(
                "PeeringConnection {pcx}  → {}  active  2 routes",
                peer.vpc_id
            )),
        "{tree}"
    );

    // Deleted: nothing of the cluster's left, the peer exactly as before.
    delete_leaves_nothing(g, "private", &uid).await?;
    assert_eq!(snapshot(&ec2, &peer.vpc_id).await?, before);
    Ok(())
}

#[tokio::test]
async fn peering_that_cannot_work_is_stalled_and_makes_nothing() -> Result<()> {
    let (g, op) = ground_with_account("reach-refused", &[]).await?;
    let result = refused(&g).await;
    result.with_context(|| format!("operator log tail:\n{}", op.log_tail(40)))
}

async fn refused(g: &Ground) -> Result<()> {
    let ec2 = aws_sdk_ec2::Client::new(&g.aws().await);
    // A peer whose own CIDR overlaps the cluster's: refused before the
    // cluster's VPC is made.
    let overlapping = peer_vpc(g, &ec2, "10.50.0.0/16").await?;
    let before = snapshot(&ec2, &overlapping.vpc_id).await?;
    let extra = format!("    peering:\n      - {{vpcId: {}}}\n", overlapping.vpc_id);
    kubectl_apply(g, &manifest("overlap", "10.50.0.0/20", &extra))?;
    let stalled = stalled_with(g, "overlap", "InvalidSpec").await?;
    assert!(
        stalled.message.contains("overlaps") && stalled.message.contains(&overlapping.vpc_id),
        "{}",
        stalled.message
    );
    let api = g.api::<ComputeCluster>();
    let uid = api.get("overlap").await?.uid().context("uid")?;
    assert_eq!(counts(g, &uid).await?, Counts::default(), "nothing made");

    // A peer table its owner did not open: refused, and left alone.
    let peer = peer_vpc(g, &ec2, "10.52.0.0/16").await?;
    let_use(g, &ec2, [&peer.vpc_id]).await?;
    let untouched = snapshot(&ec2, &peer.vpc_id).await?;
    let extra = format!(
        "    peering:\n      - {{vpcId: {}, peerRouteTableIds: [{}]}}\n",
        peer.vpc_id, peer.closed_table
    );
    kubectl_apply(g, &manifest("closed", "10.53.0.0/16", &extra))?;
    let stalled = stalled_with(g, "closed", "InvalidSpec").await?;
    assert!(
        stalled.message.contains(&peer.closed_table)
            && stalled
                .message
                .contains(&format!("byoc.dev/peer-routes={}", opened_to(g).await?)),
        "{}",
        stalled.message
    );
    assert_eq!(snapshot(&ec2, &peer.vpc_id).await?, untouched);
    for name in ["overlap", "closed"] {
        delete_and_wait_gone(g, name).await?;
    }
    assert_eq!(snapshot(&ec2, &overlapping.vpc_id).await?, before);
    assert_eq!(snapshot(&ec2, &peer.vpc_id).await?, untouched);
    Ok(())
}

#[tokio::test]
async fn a_peer_of_another_account_waits_for_its_owner_one_of_another_region_does_not() -> Result<()>
{
    let (g, op) = ground_with_account("reach-accept", &[]).await?;
    let result = accepted(&g).await;
    result.with_context(|| format!("operator log tail:\n{}", op.log_tail(40)))
}

/// Once the cluster `name` waits for its connection's acceptance
/// (`NetworkReady=False`, `PeeringPendingAcceptance`): the condition and
/// the connection.
async fn waiting_for_acceptance(
    g: &Ground,
    name: &str,
) -> Result<(
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition,
    String,
)> {
    let waiting =
        condition_with(g, name, "NetworkReady", "False", "PeeringPendingAcceptance").await?;
    Ok((waiting, connection_of(g, name).await?))
}

/// The first peering connection status names.
async fn connection_of(g: &Ground, name: &str) -> Result<String> {
    let cc = g.api::<ComputeCluster>().get(name).await?;
    cc.status
        .as_ref()
        .and_then(|s| s.network.as_ref())
        .and_then(|n| n.peering_connection_ids.first().cloned())
        .context("the connection in status")
}

async fn accepted(g: &Ground) -> Result<()> {
    let config = g.aws().await;
    // In another region of the cluster's own account: the operator accepts
    // it there, and the cluster runs routed to the peer.
    let west = aws_sdk_ec2::Client::from_conf(
        aws_sdk_ec2::config::Builder::from(&config)
            .region(aws_sdk_ec2::config::Region::new("us-west-2"))
            .build(),
    );
    let peer = peer_vpc(g, &west, "10.60.0.0/16").await?;
    let_use(g, &west, [&peer.vpc_id]).await?;
    let extra = format!(
        "    peering:\n      - {{vpcId: {}, region: us-west-2, routes: [10.60.0.0/16]}}\n",
        peer.vpc_id
    );
    kubectl_apply(g, &manifest("west", "10.61.0.0/16", &extra))?;
    let cc = wait_running(g, "west", |_| true).await?;
    let pcx = connection_of(g, "west").await?;
    assert_routed(g, &cc, &pcx, "10.60.0.0/16").await?;

    // In another account: the operator does not accept it; it says what
    // the peer's owner must do, with the connection's ID.
    let other = "210987654321";
    let owner = format!("arn:aws:iam::{other}:role/peer-owner");
    let theirs = aws_sdk_ec2::Client::new(&testground::assumed(&config, &owner, None, &[]).await?);
    let peer = peer_vpc(g, &theirs, "10.62.0.0/16").await?;
    let extra = format!(
        "    peering:\n      - {{vpcId: {}, ownerId: \"{other}\", routes: [10.62.0.0/16]}}\n",
        peer.vpc_id
    );
    kubectl_apply(g, &manifest("theirs", "10.63.0.0/16", &extra))?;
    let (waiting, pcx) = waiting_for_acceptance(g, "theirs").await?;
    assert!(
        waiting.message.contains(&pcx)
            && waiting.message.contains("accept-vpc-peering-connection")
            && waiting.message.contains(&format!("account {other}")),
        "{}",
        waiting.message
    );
    // Accepted by its owner: routed, and running.
    theirs
        .accept_vpc_peering_connection()
        .vpc_peering_connection_id(&pcx)
        .send()
        .await?;
    let cc = wait_running(g, "theirs", |_| true).await?;
    assert_routed(g, &cc, &pcx, "10.62.0.0/16").await?;

    // In the cluster's own account, but not opened to the installation:
    // the policy denies the acceptance (the control is `west` above), so
    // the connection waits for the VPC's owner; once they open the VPC,
    // the operator accepts it.
    let ec2 = aws_sdk_ec2::Client::new(&config);
    let unopened = peer_vpc(g, &ec2, "10.64.0.0/16").await?;
    let extra = format!(
        "    peering:\n      - {{vpcId: {}, routes: [10.64.0.0/16]}}\n",
        unopened.vpc_id
    );
    kubectl_apply(g, &manifest("unopened", "10.65.0.0/16", &extra))?;
    let (waiting, pcx) = waiting_for_acceptance(g, "unopened").await?;
    assert!(
        waiting.message.contains(&pcx) && waiting.message.contains("may not accept"),
        "{}",
        waiting.message
    );
    let denied = g.proxy.denials();
    assert!(
        denied
            .iter()
            .any(|d| d.action == "ec2:AcceptVpcPeeringConnection"
                && d.resource.ends_with(&format!("vpc/{}", unopened.vpc_id))),
        "the acceptance was not denied by the policy: {denied:?}"
    );
    let_use(g, &ec2, [&unopened.vpc_id]).await?;
    let cc = wait_running(g, "unopened", |_| true).await?;
    assert_routed(g, &cc, &pcx, "10.64.0.0/16").await?;
    for name in ["west", "theirs", "unopened"] {
        let uid = uid_of(g, name).await?;
        delete_leaves_nothing(g, name, &uid).await?;
    }
    Ok(())
}

/// Every route table of `cc` routes `cidr` to the connection `pcx`.
async fn assert_routed(g: &Ground, cc: &ComputeCluster, pcx: &str, cidr: &str) -> Result<()> {
    let tables = cc
        .status
        .as_ref()
        .and_then(|s| s.network.as_ref())
        .map(|n| n.route_table_ids.clone())
        .unwrap_or_default();
    let ec2 = aws_sdk_ec2::Client::new(&g.aws().await);
    let found = ec2
        .describe_route_tables()
        .set_route_table_ids(Some(tables.clone()))
        .send()
        .await?;
    let routed = found
        .route_tables()
        .iter()
        .filter(|t| {
            t.routes().iter().any(|r| {
                r.vpc_peering_connection_id() == Some(pcx)
                    && r.destination_cidr_block() == Some(cidr)
            })
        })
        .count();
    assert!(!tables.is_empty());
    assert_eq!(
        routed,
        tables.len(),
        "every table of the cluster's routes {cidr} to {pcx}"
    );
    Ok(())
}

/// The routes of `table`: `(destination, target)`.
async fn routes_of(ec2: &aws_sdk_ec2::Client, table: &str) -> Result<Vec<(String, String)>> {
    let out = ec2
        .describe_route_tables()
        .route_table_ids(table)
        .send()
        .await?;
    let t = out.route_tables().first().context("no such table")?;
    Ok(t.routes()
        .iter()
        .map(|r| {
            let target = r
                .vpc_peering_connection_id()
                .or(r.gateway_id())
                .unwrap_or_default();
            (
                r.destination_cidr_block().unwrap_or_default().to_string(),
                target.to_string(),
            )
        })
        .collect())
}

async fn tag(ec2: &aws_sdk_ec2::Client, id: &str, key: &str, value: &str) -> Result<()> {
    ec2.create_tags()
        .resources(id)
        .tags(Tag::builder().key(key).value(value).build())
        .send()
        .await?;
    Ok(())
}

#[tokio::test]
async fn peering_reaches_only_what_its_owner_opened_and_touches_only_its_own_routes() -> Result<()>
{
    let (g, op) = ground_with_account("reach-consent", &[]).await?;
    let result = consent(&g).await;
    result.with_context(|| format!("operator log tail:\n{}", op.log_tail(40)))
}

async fn consent(g: &Ground) -> Result<()> {
    let ec2 = aws_sdk_ec2::Client::new(&g.aws().await);
    // Another cluster's VPC as a peer: refused, without naming whose it is.
    kubectl_apply(g, &manifest("first", "10.70.0.0/16", ""))?;
    let first = wait_running(g, "first", |_| true).await?;
    let first_vpc = first
        .status
        .as_ref()
        .and_then(|s| s.network.as_ref())
        .and_then(|n| n.vpc_id.clone())
        .context("first's VPC")?;
    let extra = format!("    peering:\n      - {{vpcId: {first_vpc}}}\n");
    kubectl_apply(g, &manifest("squatter", "10.71.0.0/16", &extra))?;
    let refused = stalled_with(g, "squatter", "NotOursToUse").await?;
    let first_uid = first.uid().context("uid")?;
    assert!(
        refused.message.contains(&first_vpc) && !refused.message.contains(&first_uid),
        "{}",
        refused.message
    );
    let squatter = uid_of(g, "squatter").await?;
    assert_eq!(
        counts(g, &squatter).await?,
        Counts::default(),
        "nothing made"
    );

    // The team's VPC: a table opened to another namespace (and one opened
    // by the old value `allowed`) is not open to this cluster.
    let peer = peer_vpc(g, &ec2, "10.72.0.0/16").await?;
    let_use(g, &ec2, [&peer.vpc_id]).await?;
    let mine = opened_to(g).await?;
    let others = format!("{}-other", mine);
    tag(&ec2, &peer.open_table, "byoc.dev/peer-routes", &others).await?;
    // A route of the team's to a wider range the cluster's CIDR falls in
    // (a hijack if a more specific route were put beside it).
    let igw = ec2
        .create_internet_gateway()
        .send()
        .await?
        .internet_gateway()
        .and_then(|i| i.internet_gateway_id())
        .context("igw")?
        .to_string();
    ec2.attach_internet_gateway()
        .internet_gateway_id(&igw)
        .vpc_id(&peer.vpc_id)
        .send()
        .await?;
    ec2.create_route()
        .route_table_id(&peer.open_table)
        .destination_cidr_block("10.0.0.0/8")
        .gateway_id(&igw)
        .send()
        .await?;
    let extra = format!(
        "    peering:\n      - {{vpcId: {}, peerRouteTableIds: [{}]}}\n",
        peer.vpc_id, peer.open_table
    );
    kubectl_apply(g, &manifest("peered", "10.73.0.0/16", &extra))?;
    let closed = stalled_with(g, "peered", "InvalidSpec").await?;
    assert!(
        closed
            .message
            .contains(&format!("byoc.dev/peer-routes={mine}")),
        "{}",
        closed.message
    );
    // Opened to this namespace: now the overlapping route refuses it, and
    // its target is not told.
    tag(&ec2, &peer.open_table, "byoc.dev/peer-routes", &mine).await?;
    let taken = eventually("the overlap refused", WAIT, || async {
        let cc = g.api::<ComputeCluster>().get("peered").await?;
        Ok(cc
            .status
            .unwrap_or_default()
            .conditions
            .into_iter()
            .find(|c| {
                c.type_ == "Stalled" && c.status == "True" && c.message.contains("10.0.0.0/8")
            }))
    })
    .await?;
    assert!(
        taken.message.contains("overlaps") && !taken.message.contains(&igw),
        "{}",
        taken.message
    );
    assert!(
        !routes_of(&ec2, &peer.open_table)
            .await?
            .iter()
            .any(|(d, _)| d == "10.73.0.0/16"),
        "a route back was put beside the team's wider route"
    );
    // Control: the team removes its wider route; the route back is made.
    ec2.delete_route()
        .route_table_id(&peer.open_table)
        .destination_cidr_block("10.0.0.0/8")
        .send()
        .await?;
    let cc = wait_running(g, "peered", |_| true).await?;
    let pcx = connection_of(g, "peered").await?;
    assert_routed(g, &cc, &pcx, "10.72.0.0/16").await?;
    assert!(
        routes_of(&ec2, &peer.open_table)
            .await?
            .contains(&("10.73.0.0/16".to_string(), pcx.clone())),
        "no route back in the opened table"
    );

    // The team routes back by hand in a table it did not list, and a
    // narrower range in the listed one: theirs, never deleted.
    for (table, dest) in [
        (&peer.closed_table, "10.73.0.0/16"),
        (&peer.open_table, "10.73.8.0/24"),
    ] {
        ec2.create_route()
            .route_table_id(table)
            .destination_cidr_block(dest)
            .vpc_peering_connection_id(&pcx)
            .send()
            .await?;
    }
    let theirs = |routes: &[(String, String)], dest: &str| {
        routes.iter().any(|(d, t)| d == dest && t == &pcx)
    };
    // A pass over the cluster (a spec change) leaves them.
    crate::clusters::patch_spec(g, "peered", serde_json::json!({"tags": {"pass": "2"}})).await?;
    eventually("the next pass", WAIT, || async {
        let cc = g.api::<ComputeCluster>().get("peered").await?;
        let seen = cc.status.as_ref().and_then(|s| s.observed_generation);
        let running = cc.status.as_ref().and_then(|s| s.phase)
            == Some(byoc_operator::api::ClusterPhase::Running);
        Ok((seen == cc.metadata.generation && running).then_some(()))
    })
    .await?;
    assert!(theirs(
        &routes_of(&ec2, &peer.closed_table).await?,
        "10.73.0.0/16"
    ));
    assert!(theirs(
        &routes_of(&ec2, &peer.open_table).await?,
        "10.73.8.0/24"
    ));
    // Deleted: the recorded route back goes; the team's routes stay.
    if let Err(e) = delete_and_wait_gone(g, "peered").await {
        let cc = g.api::<ComputeCluster>().get("peered").await?;
        return Err(e.context(format!("{:?}", cc.status.map(|s| s.conditions))));
    }
    let open_routes = routes_of(&ec2, &peer.open_table).await?;
    assert!(
        !open_routes.iter().any(|(d, _)| d == "10.73.0.0/16"),
        "the route back was left: {open_routes:?}"
    );
    assert!(theirs(&open_routes, "10.73.8.0/24"), "{open_routes:?}");
    assert!(theirs(
        &routes_of(&ec2, &peer.closed_table).await?,
        "10.73.0.0/16"
    ));
    for name in ["squatter", "first"] {
        delete_and_wait_gone(g, name).await?;
    }
    Ok(())
}
