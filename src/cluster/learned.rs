//! What a converge pass learned from its steps' board, in the terms status
//! shows: each row's `learn` (IDs, what AWS is still making, what the pass
//! did that the user should hear of), and whether the network is ready.

use std::collections::BTreeMap;

use super::graph::{Step, STEPS};
use super::kinds::{Board, Ran};
use super::status::Progress;

/// What the pass learned, whatever failed. The network is ready when each
/// of its steps is in place: not called (nothing to do), or run to the end
/// with its learning saying so.
pub fn learn(b: &Board, ran: &BTreeMap<Step, Ran>, progress: &mut Progress) {
    let mut network_ready = true;
    for def in STEPS {
        let in_place = def.learn.is_none_or(|learn| learn(b, progress));
        let ready = match ran.get(&def.step) {
            Some(Ran::InPlace) => true,
            Some(Ran::Done) => in_place,
            Some(Ran::Failed) | None => false,
        };
        network_ready &= ready || !def.network;
    }
    progress.network_ready = network_ready;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::compute_cluster::NodeGroupStatus;
    use crate::api::{InstanceStatus, Market};
    use crate::aws::nat_gateway::NatState;
    use crate::cluster::kinds::endpoints::EndpointsDone;
    use crate::cluster::kinds::peering::PeeringDone;
    use crate::cluster::kinds::Run;

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

    /// Every step came out as `ran`.
    fn every(ran: Ran) -> BTreeMap<Step, Ran> {
        STEPS.iter().map(|d| (d.step, ran)).collect()
    }

    /// Every step ran, but `these`, which came out as `ran`.
    fn but(these: &[Step], ran: Ran) -> BTreeMap<Step, Ran> {
        let mut all = every(Ran::Done);
        all.extend(these.iter().map(|s| (*s, ran)));
        all
    }

    /// Every network cell a managed network's pass writes, its NAT
    /// gateway in `state` and its private routes `private`.
    fn network(b: &Board, state: NatState, private: bool) {
        let _ = b.vpc.set("vpc-1".into());
        let _ = b.dns.set(());
        let _ = b.subnets.set(vec![]);
        let _ = b.igw.set("igw-1".into());
        let _ = b.sg.set("sg-1".into());
        let _ = b.tables.set(vec![]);
        let _ = b.nats.set(nats(state));
        let _ = b.public_route.set(());
        let _ = b.private_routes.set(private);
        let _ = b.endpoints.set(EndpointsDone {
            ids: vec![],
            available: true,
        });
        let _ = b.peering.set(PeeringDone::default());
        let _ = b.peering_routes.set(());
    }

    #[test]
    fn what_a_pass_learns_from_its_steps() {
        let learned = |fill: &dyn Fn(&Board), ran: &BTreeMap<Step, Ran>| {
            let board = Board::default();
            fill(&board);
            let mut progress = Progress::default();
            learn(&board, ran, &mut progress);
            Learned {
                vpc: progress.network.vpc_id.is_some(),
                network_ready: progress.network_ready,
                aws_creating: progress.aws_creating,
                waiting: progress.waiting.len(),
                nodes: progress.node_groups().is_some(),
                image_refresh: progress.image_refresh.is_some(),
            }
        };
        let nothing = Learned {
            vpc: false,
            network_ready: false,
            aws_creating: false,
            waiting: 0,
            nodes: false,
            image_refresh: false,
        };
        let ready = Learned {
            vpc: true,
            network_ready: true,
            ..nothing
        };
        // Off the spec's shape: no NAT gateway.
        let no_nat = [Step::Addresses, Step::NatGateways, Step::PrivateRoutes];
        // A bring-your-own network: the managed network's steps not called.
        let owners: Vec<Step> = (STEPS.iter())
            .filter(|d| matches!(d.run, Run::Managed(_)))
            .map(|d| d.step)
            .collect();
        type Fill = Box<dyn Fn(&Board)>;
        let rows: Vec<(&str, Fill, BTreeMap<Step, Ran>, Learned)> = vec![
            (
                "a pass whose every step failed",
                Box::new(|_| {}),
                every(Ran::Failed),
                Learned { ..nothing },
            ),
            (
                "a VPC whose DNS step failed is not recorded",
                Box::new(|b| {
                    let _ = b.vpc.set("vpc-1".into());
                }),
                but(&[Step::VpcDns], Ran::Failed),
                Learned { ..nothing },
            ),
            (
                "every route in place through an available NAT gateway",
                Box::new(|b| network(b, NatState::Available, true)),
                every(Ran::Done),
                Learned { ..ready },
            ),
            (
                "a NAT gateway pending: AWS is creating, the network waits",
                Box::new(|b| network(b, NatState::Pending, true)),
                every(Ran::Done),
                Learned {
                    vpc: true,
                    aws_creating: true,
                    waiting: 1,
                    ..nothing
                },
            ),
            (
                "private routes not all in place",
                Box::new(|b| network(b, NatState::Available, false)),
                every(Ran::Done),
                Learned {
                    vpc: true,
                    ..nothing
                },
            ),
            (
                "a network step that failed: the network is not ready",
                Box::new(|b| network(b, NatState::Available, true)),
                but(&[Step::SecurityGroup], Ran::Failed),
                Learned {
                    vpc: true,
                    ..nothing
                },
            ),
            (
                "no NAT gateway asked for: its steps are in place uncalled",
                Box::new(|b| {
                    let _ = (b.vpc.set("vpc-1".into()), b.dns.set(()));
                    let _ = (b.subnets.set(vec![]), b.igw.set("igw-1".into()));
                    let _ = (b.sg.set("sg-1".into()), b.tables.set(vec![]));
                    let _ = (b.public_route.set(()), b.peering_routes.set(()));
                    let done = EndpointsDone {
                        ids: vec![],
                        available: true,
                    };
                    let _ = (b.endpoints.set(done), b.peering.set(Default::default()));
                }),
                but(&no_nat, Ran::InPlace),
                Learned { ..ready },
            ),
            (
                "a bring-your-own network: ready with its VPC and subnets",
                Box::new(|b| {
                    let _ = (b.vpc.set("vpc-1".into()), b.dns.set(()));
                    let _ = (b.subnets.set(vec![]), b.sg.set("sg-1".into()));
                }),
                but(&owners, Ran::InPlace),
                Learned { ..ready },
            ),
            (
                "endpoints still pending: AWS is creating, the network waits",
                Box::new(|b| {
                    let _ = b.endpoints.set(EndpointsDone {
                        ids: vec!["vpce-1".into()],
                        available: false,
                    });
                    network(b, NatState::Available, true);
                }),
                every(Ran::Done),
                Learned {
                    vpc: true,
                    aws_creating: true,
                    waiting: 1,
                    ..nothing
                },
            ),
            (
                "instances launched and not running yet",
                Box::new(|b| {
                    let _ = b.nodes.set(vec![group(2, 1)]);
                }),
                but(&[Step::Vpc], Ran::Failed),
                Learned {
                    aws_creating: true,
                    nodes: true,
                    ..nothing
                },
            ),
            (
                "an instance launched that no describe shows yet",
                Box::new(|b| {
                    let _ = b.nodes.set(vec![group(1, 1)]);
                    let _ = b.launching.set(true);
                }),
                but(&[Step::Vpc], Ran::Failed),
                Learned {
                    aws_creating: true,
                    nodes: true,
                    ..nothing
                },
            ),
            (
                "every instance running; the refresh the nodes acted on",
                Box::new(|b| {
                    let _ = b.nodes.set(vec![group(2, 2)]);
                    let _ = b.image_refresh.set(Some("1".into()));
                }),
                but(&[Step::Vpc], Ran::Failed),
                Learned {
                    nodes: true,
                    image_refresh: true,
                    ..nothing
                },
            ),
        ];
        for (why, fill, ran, want) in rows {
            assert_eq!(learned(&*fill, &ran), want, "{why}");
        }
    }
}
