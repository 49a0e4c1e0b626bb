//! `byoc-operator describe computecluster NAME -n NS` (also `kubectl byoc
//! describe ...` through a `kubectl-byoc` link): the cluster, its account
//! and verified identity, every AWS resource it owns by kind with ID, state
//! and zone, node groups with their instances, what blocks its deletion, and
//! its conditions — from status plus one tagged describe per kind.

use std::fmt::Write as _;

use aws_config::SdkConfig;
use kube::{Api, Client, ResourceExt};

use crate::account::credentials;
use crate::api::compute_cluster::{ClusterCost, NodeGroupStatus};
use crate::api::{CloudAccount, ComputeCluster};
use crate::aws::endpoint::ObservedEndpoint;
use crate::aws::nat_gateway::NatState;
use crate::aws::peering::ObservedPeering;
use crate::aws::route_table::ObservedRouteTable;
use crate::aws::security_group::{GroupPart, ObservedSecurityGroup};
use crate::aws::{AwsClients, OwnershipTags};
use crate::cluster::kinds::Observed;
use crate::metrics::Metrics;
use crate::Error;

/// Reads the cluster and its account, describes what it owns in AWS (as
/// the account's verified identity), and draws the tree.
pub async fn command(
    client: &Client,
    base: &SdkConfig,
    namespace: &str,
    name: &str,
) -> Result<String, Error> {
    let cc = Api::<ComputeCluster>::namespaced(client.clone(), namespace)
        .get(name)
        .await?;
    let (account_ns, account_name) = cc.account_key();
    let account = Api::<CloudAccount>::namespaced(client.clone(), &account_ns)
        .get_opt(&account_name)
        .await?;
    // The operator's consent decision: an account that does not let the
    // cluster's namespace in is not used to describe it either.
    let at = crate::cluster::spec::AccountRef::from((account_ns, account_name));
    let observed = match &account {
        None => Err("its CloudAccount was not found".to_string()),
        Some(a) => match crate::cluster::refusal(&cc, a, &at) {
            Some(refused) => Err(format!("not described: {}", refused.message)),
            None => describe_aws(client, base, a, &cc).await,
        },
    };
    let mut drawn = tree(
        &cc,
        account.as_ref(),
        observed.as_ref().map(|(o, _)| o).map_err(Clone::clone),
    );
    // The account's interruption queue, under the account.
    if let (Ok((_, Some(queue))), Some(account)) = (&observed, drawn.children.first_mut()) {
        account.children.push(Node::new(queue.clone()));
    }
    Ok(drawn.render())
}

/// The line of the installation's interruption queue in the cluster's
/// account and region, for a cluster with a spot group: its name, its
/// rules, and whether both are as they should be.
async fn queue_line(
    c: &AwsClients,
    installation: &str,
    account_id: &str,
    region: &str,
) -> Result<String, crate::aws::AwsError> {
    use crate::aws::interruption_queue as q;
    use crate::interruption::queue::{self as plan, QueueStep};
    let name = plan::queue_name(installation);
    let arn = format!("arn:aws:sqs:{region}:{account_id}:{name}");
    let want = plan::policy(&arn, &plan::rule_arns(installation, account_id, region));
    let Some(seen) = q::describe_queue(c, &name).await? else {
        return Ok(format!("InterruptionQueue {name}  not made (yet)"));
    };
    let rules = q::describe_rules(c, &plan::rule_prefix(installation)).await?;
    let state = match plan::queue_step(installation, Some(&seen), &want) {
        QueueStep::Keep => "as it should be".to_string(),
        QueueStep::Repair(why) => format!("to put back: {why}"),
        QueueStep::NotOurs(why) => format!("not this installation's: {why}"),
        QueueStep::Create => String::new(),
    };
    let off = plan::rule_steps(installation, &rules, &seen.arn).len();
    Ok(format!(
        "InterruptionQueue {name}  {state}  rules {}/{}{}",
        rules.len().min(crate::interruption::message::MATCHED.len()),
        crate::interruption::message::MATCHED.len(),
        if off > 0 {
            format!(" ({off} to put back)")
        } else {
            String::new()
        }
    ))
}

/// What the cluster owns in AWS and, when it has a spot group, the line of
/// its account's interruption queue.
async fn describe_aws(
    client: &Client,
    base: &SdkConfig,
    account: &CloudAccount,
    cc: &ComputeCluster,
) -> Result<(Observed, Option<String>), String> {
    let metrics = Metrics::new();
    let ambient = credentials::Ambient::Published;
    let resolved = credentials::resolve(client, base, &metrics, account, &ambient)
        .await
        .map_err(|e| format!("the CloudAccount cannot be used: {e}"))?;
    let c = AwsClients::new(&resolved.config, &cc.spec.region, metrics.aws_interceptor());
    // What the installation that made it tagged (none before installations were).
    let installation = cc.status.as_ref().and_then(|s| s.installation.clone());
    let owner = OwnershipTags {
        installation: installation.unwrap_or_default(),
        uid: cc.uid().unwrap_or_default(),
        namespace: cc.namespace().unwrap_or_default(),
        name: cc.name_any(),
        user: Default::default(),
    };
    let observed = Observed::describe(&c, &owner)
        .await
        .map_err(|e| e.to_string())?;
    let queue = match crate::interruption::queue::wanted_by(&cc.spec.node_groups) {
        false => None,
        true => Some(
            queue_line(
                &c,
                &owner.installation,
                &resolved.account_id,
                &cc.spec.region,
            )
            .await
            .unwrap_or_else(|e| format!("InterruptionQueue  not described: {e}")),
        ),
    };
    Ok((observed, queue))
}

/// A line of the tree and the lines under it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Node {
    pub label: String,
    pub children: Vec<Node>,
}

impl Node {
    pub fn new(label: impl Into<String>) -> Self {
        Node {
            label: label.into(),
            children: vec![],
        }
    }

    fn with(mut self, children: Vec<Node>) -> Self {
        self.children = children;
        self
    }

    /// Drawn with box characters, as `clusterctl describe` does.
    pub fn render(&self) -> String {
        let mut out = format!("{}\n", self.label);
        draw(&self.children, "", &mut out);
        out
    }
}

fn draw(nodes: &[Node], prefix: &str, out: &mut String) {
    for (i, n) in nodes.iter().enumerate() {
        let last = i + 1 == nodes.len();
        let _ = writeln!(
            out,
            "{prefix}{}{}",
            if last { "└─ " } else { "├─ " },
            n.label
        );
        draw(
            &n.children,
            &format!("{prefix}{}", if last { "   " } else { "│  " }),
            out,
        );
    }
}

/// What AWS said, or why it was not asked.
pub type Seen<'a> = Result<&'a Observed, String>;

/// The tree of one cluster.
pub fn tree(cc: &ComputeCluster, account: Option<&CloudAccount>, seen: Seen<'_>) -> Node {
    let status = cc.status.clone().unwrap_or_default();
    let phase = status
        .phase
        .map(|p| format!("{p:?}").to_lowercase())
        .unwrap_or_else(|| "pending".into());
    let mut top = vec![account_node(cc, account)];
    match seen {
        Ok(o) => top.extend(aws_nodes(o, &status.node_groups)),
        Err(why) => top.push(Node::new(format!("AWS not described: {why}"))),
    }
    if !status.deletion_blockers.is_empty() {
        let blockers = status
            .deletion_blockers
            .iter()
            .map(|b| {
                Node::new(
                    format!("{} {} {}", b.kind, b.id, b.detail)
                        .trim_end()
                        .to_string(),
                )
            })
            .collect();
        top.push(Node::new("DeletionBlockers (not the cluster's: remove them)").with(blockers));
    }
    if let Some(cost) = &status.cost {
        top.push(cost_node(cost));
    }
    let conditions = status
        .conditions
        .iter()
        .map(|c| {
            let message = if c.message.is_empty() {
                String::new()
            } else {
                format!(": {}", c.message)
            };
            Node::new(format!("{} {} {}{message}", c.type_, c.status, c.reason))
        })
        .collect();
    top.push(Node::new("Conditions").with(conditions));
    let ns = cc.metadata.namespace.clone().unwrap_or_default();
    let name = cc.metadata.name.clone().unwrap_or_default();
    Node::new(format!(
        "ComputeCluster {ns}/{name}  phase {phase}  region {}",
        cc.spec.region
    ))
    .with(top)
}

/// `Cost  $0.3541/h  $258.49/month  (list price)` with a line per part.
fn cost_node(cost: &ClusterCost) -> Node {
    let parts = cost
        .parts
        .iter()
        .map(|p| Node::new(format!("{}  ${}/h", p.part, p.per_hour)))
        .collect();
    Node::new(format!(
        "Cost  ${}/h  ${}/month  ({})",
        cost.per_hour, cost.per_month, cost.basis
    ))
    .with(parts)
}

fn account_node(cc: &ComputeCluster, account: Option<&CloudAccount>) -> Node {
    let (ns, name) = cc.account_key();
    let Some(a) = account else {
        return Node::new(format!("CloudAccount {ns}/{name}  not found"));
    };
    let s = a.status.clone().unwrap_or_default();
    let phase = s
        .phase
        .map(|p| format!("{p:?}").to_lowercase())
        .unwrap_or_else(|| "pending".into());
    let identity = match (&s.account_id, &s.arn) {
        (Some(id), Some(arn)) => format!("  account {id} as {arn}"),
        _ => String::new(),
    };
    let node = Node::new(format!("CloudAccount {ns}/{name}  {phase}{identity}"));
    match (&a.spec.limits, s.usage) {
        (Some(limits), usage) => node.with(vec![Node::new(limits_line(
            limits,
            &usage.unwrap_or_default(),
        ))]),
        (None, _) => node,
    }
}

/// `limits: total instances 3/3, perNamespace vcpus …/8`: each cap set,
/// with what the account's clusters hold of it.
fn limits_line(
    limits: &crate::api::cloud_account::AccountLimits,
    usage: &crate::api::cloud_account::Usage,
) -> String {
    let mut parts = vec![];
    for (scope, caps) in [
        ("total", &limits.total),
        ("perNamespace", &limits.per_namespace),
    ] {
        let Some(c) = caps else { continue };
        let count = |n: Option<i64>| n.map(|n| n.to_string());
        let price = usage.price_per_hour.as_deref().unwrap_or("0");
        for (what, cap, used) in [
            ("clusters", count(c.clusters), usage.clusters.to_string()),
            ("instances", count(c.instances), usage.instances.to_string()),
            ("vcpus", count(c.vcpus), usage.vcpus.to_string()),
            ("gpus", count(c.gpus), usage.gpus.to_string()),
            (
                "pricePerHour",
                c.price_per_hour.as_ref().map(|p| format!("${p}")),
                format!("${price}"),
            ),
        ] {
            if let Some(cap) = cap {
                // Per namespace the account's whole use is an upper bound.
                let held = if scope == "total" {
                    format!("{used}/")
                } else {
                    format!("≤{used}/")
                };
                parts.push(format!("{scope} {what} {held}{cap}"));
            }
        }
    }
    format!("limits: {}", parts.join(", "))
}

fn aws_nodes(o: &Observed, groups: &[NodeGroupStatus]) -> Vec<Node> {
    let mut iam = Vec::new();
    iam.extend(o.iam.role.iter().map(|r| Node::new(format!("Role {r}"))));
    iam.extend(
        o.iam
            .instance_profile
            .iter()
            .map(|arn| Node::new(format!("InstanceProfile {arn}"))),
    );
    iam.extend(
        o.key_pairs
            .iter()
            .map(|k| Node::new(format!("KeyPair {}", k.name))),
    );
    let mut out = vec![
        Node::new("Network").with(network_nodes(o)),
        Node::new("Access").with(iam),
    ];
    let key = o.kms_key.iter().map(|k| {
        let how = match (k.pending_deletion(), k.rotation) {
            (true, _) => format!(
                "pending deletion on {}",
                k.deletion_date.as_deref().unwrap_or("?")
            ),
            (false, Some(true)) => "rotated yearly".to_string(),
            (false, _) => "not rotated".to_string(),
        };
        Node::new(format!("KmsKey {}  {how}", k.id))
    });
    let storage: Vec<Node> = (o.log_group.iter())
        .map(|g| {
            let kept = match g.retention_days {
                Some(days) => format!("kept {days} days"),
                None => "kept forever".to_string(),
            };
            Node::new(format!("LogGroup {}  {kept}", g.name))
        })
        .chain(key)
        .collect();
    if !storage.is_empty() {
        out.push(Node::new("Storage").with(storage));
    }
    out.extend(node_group_nodes(o, groups));
    out
}

fn network_nodes(o: &Observed) -> Vec<Node> {
    let mut network: Vec<Node> = Vec::new();
    network.extend(
        o.vpcs
            .iter()
            .map(|v| Node::new(format!("VPC {}  {}", v.id, v.cidr))),
    );
    network.extend(o.subnets.iter().map(|s| {
        let kind = if s.public { "public" } else { "private" };
        Node::new(format!("Subnet {}  {}  {kind}  {}", s.id, s.zone, s.cidr))
    }));
    network.extend(o.internet_gateways.iter().map(|g| {
        Node::new(format!(
            "InternetGateway {}  attached to {}",
            g.id,
            list(&g.attached_to)
        ))
    }));
    network.extend(
        o.nat_gateways
            .iter()
            .filter(|n| n.state != NatState::Gone)
            .map(|n| {
                let zone = n.zone.as_deref().unwrap_or("?");
                Node::new(format!(
                    "NatGateway {}  {zone}  {}",
                    n.id,
                    format!("{:?}", n.state).to_lowercase()
                ))
            }),
    );
    network.extend(o.addresses.iter().map(|a| {
        Node::new(format!(
            "ElasticIP {}  {}",
            a.allocation_id,
            a.zone.as_deref().unwrap_or("?")
        ))
    }));
    network.extend(o.route_tables.iter().map(route_table_node));
    network.extend(o.security_groups.iter().map(security_group_node));
    network.extend(o.endpoints.iter().map(endpoint_node));
    network.extend(o.peerings.iter().map(|p| peering_node(o, p)));
    network
}

fn route_table_node(t: &ObservedRouteTable) -> Node {
    let place = t
        .zone
        .as_deref()
        .unwrap_or(if t.public { "public" } else { "private" });
    let route = t
        .default_target
        .as_deref()
        .map(|r| format!("  0.0.0.0/0 → {r}"))
        .unwrap_or_default();
    Node::new(format!(
        "RouteTable {}  {place}  {} subnets{route}",
        t.id,
        t.associations.len()
    ))
}

fn security_group_node(g: &ObservedSecurityGroup) -> Node {
    let part = match g.part {
        GroupPart::Nodes => "nodes",
        GroupPart::Endpoints => "endpoints",
    };
    Node::new(format!(
        "SecurityGroup {}  {part}  {} ingress rules",
        g.id,
        g.ingress.len()
    ))
}

fn endpoint_node(e: &ObservedEndpoint) -> Node {
    let (kind, at) = match e.gateway {
        true => (
            "gateway",
            format!("{} route tables", e.route_table_ids.len()),
        ),
        false => ("interface", format!("{} subnets", e.subnet_ids.len())),
    };
    let state = format!("{:?}", e.state).to_lowercase();
    Node::new(format!(
        "VpcEndpoint {}  {}  {kind}  {state}  {at}",
        e.id, e.service
    ))
}

fn peering_node(o: &Observed, p: &ObservedPeering) -> Node {
    let state = format!("{:?}", p.state).to_lowercase();
    let routes = o
        .peering_routes
        .iter()
        .filter(|r| r.peering_id == p.id)
        .count();
    Node::new(format!(
        "PeeringConnection {}  → {}  {state}  {routes} routes",
        p.id, p.peer_vpc_id
    ))
}

/// The spec's groups (as status counts them), and any group AWS still has
/// instances of.
fn node_group_nodes(o: &Observed, groups: &[NodeGroupStatus]) -> Vec<Node> {
    let mut names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
    for i in &o.instances {
        if !names.contains(&i.group.as_str()) {
            names.push(&i.group);
        }
    }
    names
        .into_iter()
        .map(|name| {
            let counts = groups
                .iter()
                .find(|g| g.name == name)
                .map(|g| format!("  {}/{} running", g.running, g.desired))
                .unwrap_or_else(|| "  (not in the spec)".into());
            let instances = o
                .instances
                .iter()
                .filter(|i| i.group == name)
                .map(|i| {
                    let state = format!("{:?}", i.state).to_lowercase();
                    Node::new(format!(
                        "Instance {}  {}  {state}  {}",
                        i.id, i.instance_type, i.subnet_id
                    ))
                })
                .collect();
            Node::new(format!("NodeGroup {name}{counts}")).with(instances)
        })
        .collect()
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "nothing".into()
    } else {
        items.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::compute_cluster::{
        ComputeClusterStatus, CostPart, DeletionBlocker, NodeGroupStatus,
    };
    use crate::aws::instances::{InstanceState, ObservedInstance};
    use crate::aws::vpc::ObservedVpc;

    fn cluster(status: ComputeClusterStatus) -> ComputeCluster {
        let mut cc: ComputeCluster = serde_yaml_ng::from_str(
            "apiVersion: byoc.dev/v1alpha1\nkind: ComputeCluster\nmetadata: {name: ml, namespace: team-a}\nspec:\n  cloudAccountRef: {name: acme}\n  region: us-east-1\n  network: {vpcCidr: 10.0.0.0/16}\n  nodeGroups: [{name: cpu, instanceType: t3.large, count: 1}]\n",
        )
        .expect("cluster");
        cc.status = Some(status);
        cc
    }

    #[test]
    fn tree_shows_resources_groups_blockers_and_conditions() {
        let status = ComputeClusterStatus {
            node_groups: vec![NodeGroupStatus {
                name: "cpu".into(),
                desired: 1,
                running: 1,
                updated: 1,
                instance_ids: vec!["i-1".into()],
                ..Default::default()
            }],
            deletion_blockers: vec![DeletionBlocker {
                kind: "network-interface".into(),
                id: "eni-9".into(),
                detail: "ELB app/web".into(),
            }],
            cost: Some(ClusterCost {
                per_hour: "0.0882".into(),
                per_month: "64.39".into(),
                basis: "list price".into(),
                parts: vec![
                    CostPart {
                        part: "instances/cpu".into(),
                        per_hour: "0.0832".into(),
                    },
                    CostPart {
                        part: "public-ipv4".into(),
                        per_hour: "0.0050".into(),
                    },
                ],
            }),
            ..Default::default()
        };
        let observed = Observed {
            vpcs: vec![ObservedVpc {
                id: "vpc-1".into(),
                cidr: "10.0.0.0/16".into(),
            }],
            instances: vec![ObservedInstance::of(
                "i-1",
                "cpu",
                "t3.large",
                InstanceState::Running,
            )],
            ..Default::default()
        };
        let text = tree(&cluster(status.clone()), None, Ok(&observed)).render();
        // A log group: its own branch, absent without one.
        let logged = Observed {
            log_group: Some(crate::aws::log_group::ObservedLogGroup {
                name: "/byoc/team-a/ml".into(),
                retention_days: Some(14),
                ..Default::default()
            }),
            ..observed.clone()
        };
        let with_logs = tree(&cluster(status), None, Ok(&logged)).render();
        assert!(
            with_logs.contains("├─ Storage\n│  └─ LogGroup /byoc/team-a/ml  kept 14 days"),
            "{with_logs}"
        );
        assert!(!text.contains("Storage"), "{text}");
        let want = "ComputeCluster team-a/ml  phase pending  region us-east-1
├─ CloudAccount team-a/acme  not found
├─ Network
│  └─ VPC vpc-1  10.0.0.0/16
├─ Access
├─ NodeGroup cpu  1/1 running
│  └─ Instance i-1  t3.large  running  subnet-1
├─ DeletionBlockers (not the cluster's: remove them)
│  └─ network-interface eni-9 ELB app/web
├─ Cost  $0.0882/h  $64.39/month  (list price)
│  ├─ instances/cpu  $0.0832/h
│  └─ public-ipv4  $0.0050/h
└─ Conditions
";
        assert_eq!(text, want);
        let unseen = tree(
            &cluster(ComputeClusterStatus::default()),
            None,
            Err("CloudAccount not ready".into()),
        )
        .render();
        assert!(
            unseen.contains("├─ AWS not described: CloudAccount not ready"),
            "{unseen}"
        );
    }

    #[test]
    fn limits_are_shown_with_what_is_held() {
        use crate::api::cloud_account::{AccountLimits, Caps, Usage};
        let limits = AccountLimits {
            total: Some(Caps {
                instances: Some(3),
                ..Default::default()
            }),
            per_namespace: Some(Caps {
                vcpus: Some(8),
                price_per_hour: Some("2.5".into()),
                ..Default::default()
            }),
        };
        let usage = Usage {
            clusters: 3,
            instances: 3,
            vcpus: 6,
            gpus: 0,
            price_per_hour: Some("0.2496".into()),
        };
        assert_eq!(
            limits_line(&limits, &usage),
            "limits: total instances 3/3, perNamespace vcpus ≤6/8, perNamespace pricePerHour ≤$0.2496/$2.5"
        );
    }
}
