//! What a converge pass learned from its steps' board, in the terms status
//! shows: IDs, what is ready, what AWS is still creating, and what the pass
//! did that the user should hear of.

use super::kinds::{images, subnets, Board};
use super::status::Progress;
use crate::api::conditions::reason;
use crate::aws::nat_gateway::NatState;

/// What the pass learned of the endpoints and peering; whether they are
/// in place (every endpoint available, every connection active and routed).
fn learn_reach(b: &Board, progress: &mut Progress) -> bool {
    let endpoints = b.endpoints.get();
    if let Some(e) = endpoints {
        progress.network.endpoint_ids = e.ids.clone();
        if !e.available {
            progress
                .waiting
                .push("VPC endpoints to become available".into());
            progress.aws_creating = true;
        }
    }
    let peering = b.peering.get();
    if let Some(done) = peering {
        progress.network.peering_connection_ids =
            done.connections.iter().map(|c| c.id.clone()).collect();
        progress.peering_pending = done.pending.clone();
        if !done.active() && done.pending.is_empty() {
            progress
                .waiting
                .push("peering connections to become active".into());
            progress.aws_creating = true;
        }
    }
    endpoints.is_some_and(|e| e.available)
        && peering.is_some_and(|d| d.active())
        && b.peering_routes.get().is_some()
}

/// What the pass learned, whatever failed.
pub fn learn(b: &Board, recorded: &images::Recorded, progress: &mut Progress) {
    if let Some(iam) = b.iam.get() {
        progress.set_iam(iam);
    }
    let network = &mut progress.network;
    if let (Some(id), Some(())) = (b.vpc.get(), b.dns.get()) {
        network.vpc_id = Some(id.clone());
    }
    if let Some(subnets) = b.subnets.get() {
        network.subnets = subnets::status(subnets);
    }
    if let Some(id) = b.igw.get() {
        network.internet_gateway_id = Some(id.clone());
    }
    if let Some(id) = b.sg.get() {
        network.security_group_id = Some(id.clone());
    }
    let mut nats_ready = false;
    if let Some(nats) = b.nats.get() {
        network.nat_gateway_ids = nats.values().map(|(id, _)| id.clone()).collect();
        nats_ready = nats
            .values()
            .all(|(_, state)| *state == NatState::Available);
        if !nats_ready {
            progress
                .waiting
                .push("NAT gateways to become available".into());
            progress.aws_creating |= nats.values().any(|(_, s)| *s == NatState::Pending);
        }
    }
    if let Some(tables) = b.tables.get() {
        progress.network.route_table_ids = tables.iter().map(|t| t.id.clone()).collect();
    }
    let reach = learn_reach(b, progress);
    progress.network_ready = reach
        && nats_ready
        && b.public_route.get().is_some()
        && b.private_routes.get() == Some(&true);
    if let Some(nodes) = b.nodes.get() {
        *progress.node_groups_mut() = nodes.clone();
        // Launched and not running yet.
        progress.aws_creating |= nodes
            .iter()
            .any(|g| g.instances.len() > usize::try_from(g.running).unwrap_or(0));
        let replaced = b.replaced.get().into_iter().flatten();
        progress
            .notes
            .extend(replaced.map(|n| (reason::UNHEALTHY_INSTANCE, n.clone())));
        // Acted on with the pins it gave, written in the same status.
        if let Some(value) = &recorded.refresh {
            progress.image_refresh = Some(value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::compute_cluster::NodeGroupStatus;
    use crate::api::{InstanceStatus, Market};
    use crate::cluster::kinds::endpoints::EndpointsDone;
    use crate::cluster::kinds::peering::PeeringDone;
    use crate::cluster::kinds::vpc::in_place_already;
    use std::collections::BTreeMap;

    /// A group of `launched` instances, `running` of them running.
    fn group(launched: usize, running: i32) -> NodeGroupStatus {
        NodeGroupStatus {
            name: "workers".into(),
            desired: 2,
            running,
            instances: (0..launched)
                .map(|i| InstanceStatus {
                    id: format!("i-{i}"),
                    instance_type: "t3.large".into(),
                    zone: "us-east-1a".into(),
                    capacity_type: Market::OnDemand,
                })
                .collect(),
            ..Default::default()
        }
    }

    fn nats(state: NatState) -> BTreeMap<String, (String, NatState)> {
        BTreeMap::from([("us-east-1a".into(), ("nat-1".into(), state))])
    }

    /// What `learn` makes of a board, in the terms status shows.
    #[derive(Debug, PartialEq)]
    struct Learned {
        vpc: bool,
        network_ready: bool,
        aws_creating: bool,
        waiting: usize,
        nodes: bool,
        image_refresh: bool,
    }

    #[test]
    fn what_a_pass_learns_from_its_steps() {
        let learned = |fill: &dyn Fn(&Board), refresh: Option<&str>| {
            let board = Board::default();
            fill(&board);
            let recorded = images::Recorded {
                refresh: refresh.map(str::to_string),
                ..Default::default()
            };
            let mut progress = Progress::default();
            learn(&board, &recorded, &mut progress);
            Learned {
                vpc: progress.network.vpc_id.is_some(),
                network_ready: progress.network_ready,
                aws_creating: progress.aws_creating,
                waiting: progress.waiting.len(),
                nodes: progress.node_groups().is_some(),
                image_refresh: progress.image_refresh.is_some(),
            }
        };
        let routed = |b: &Board, state: NatState, private: bool| {
            let _ = b.nats.set(nats(state));
            let _ = b.public_route.set(());
            let _ = b.private_routes.set(private);
            let _ = b.endpoints.set(EndpointsDone {
                ids: vec![],
                available: true,
            });
            let _ = b.peering.set(PeeringDone::default());
            let _ = b.peering_routes.set(());
        };
        let nothing = Learned {
            vpc: false,
            network_ready: false,
            aws_creating: false,
            waiting: 0,
            nodes: false,
            image_refresh: false,
        };
        type Fill = Box<dyn Fn(&Board)>;
        let rows: Vec<(&str, Fill, Option<&str>, Learned)> = vec![
            (
                "a pass that learned nothing",
                Box::new(|_| {}),
                None,
                Learned { ..nothing },
            ),
            (
                "a VPC whose DNS step did not run is not recorded",
                Box::new(|b| {
                    let _ = b.vpc.set("vpc-1".into());
                }),
                None,
                Learned { ..nothing },
            ),
            (
                "a VPC with its DNS settings",
                Box::new(|b| {
                    let _ = b.vpc.set("vpc-1".into());
                    let _ = b.dns.set(());
                }),
                None,
                Learned {
                    vpc: true,
                    ..nothing
                },
            ),
            (
                "a NAT gateway pending: AWS is creating, the network waits",
                Box::new(move |b| routed(b, NatState::Pending, true)),
                None,
                Learned {
                    aws_creating: true,
                    waiting: 1,
                    ..nothing
                },
            ),
            (
                "every route in place through an available NAT gateway",
                Box::new(move |b| routed(b, NatState::Available, true)),
                None,
                Learned {
                    network_ready: true,
                    ..nothing
                },
            ),
            (
                "private routes not all in place",
                Box::new(move |b| routed(b, NatState::Available, false)),
                None,
                Learned { ..nothing },
            ),
            (
                "instances launched and not running yet",
                Box::new(|b| {
                    let _ = b.nodes.set(vec![group(2, 1)]);
                }),
                None,
                Learned {
                    aws_creating: true,
                    nodes: true,
                    ..nothing
                },
            ),
            (
                "every instance running; the refresh asked for is acted on",
                Box::new(|b| {
                    let _ = b.nodes.set(vec![group(2, 2)]);
                }),
                Some("1"),
                Learned {
                    nodes: true,
                    image_refresh: true,
                    ..nothing
                },
            ),
            (
                "a bring-your-own network: ready with its subnets alone",
                Box::new(|b| {
                    let _ = in_place_already(b);
                }),
                None,
                Learned {
                    network_ready: true,
                    ..nothing
                },
            ),
            (
                "endpoints still pending: AWS is creating, the network waits",
                Box::new(move |b| {
                    let _ = b.endpoints.set(EndpointsDone {
                        ids: vec!["vpce-1".into()],
                        available: false,
                    });
                    routed(b, NatState::Available, true);
                }),
                None,
                Learned {
                    aws_creating: true,
                    waiting: 1,
                    ..nothing
                },
            ),
            (
                "no node step ran: a refresh is not acted on",
                Box::new(|_| {}),
                Some("1"),
                Learned { ..nothing },
            ),
        ];
        for (why, fill, refresh, want) in rows {
            assert_eq!(learned(&*fill, refresh), want, "{why}");
        }
    }
}
