//! The converge pass's dependency graph, declared once as data: each step,
//! what it needs, and the AWS calls it makes one after another when it
//! creates from nothing; and beside it the order of deletion, the same
//! kinds the other way round. `converge` runs the steps by it, `cleanup`
//! deletes by [`DELETION`]; the benchmark prices the critical path (the
//! longest chain of dependent calls).

use std::collections::BTreeMap;

use super::kinds::{
    endpoints, iam, images, internet_gateway, key_pairs, kms_key, log_group, nat_gateways,
    node_groups, peering, route_tables, security_group, subnets, vpc, DeleteFn, LearnFn,
    LeftoverFn, PendingFn, Run,
};

/// One step of a converge pass (each the `ensure` of a kind or part of one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Step {
    Vpc,
    VpcDns,
    Iam,
    Images,
    KeyPairs,
    Addresses,
    Subnets,
    PublicIps,
    InternetGateway,
    SecurityGroup,
    NatGateways,
    RouteTables,
    PublicRoute,
    PrivateRoutes,
    EndpointGroup,
    Endpoints,
    Peering,
    PeeringRoutes,
    LogGroup,
    KmsKey,
    NodeGroups,
}

/// When a need applies, or a step makes calls at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    Always,
    /// Only when a node group launches into public subnets.
    PublicNodes,
    /// Only when the network reaches the internet (`network.internet`).
    Internet,
    /// Only when the network has NAT gateways.
    Nat,
    /// Only in a network without internet: the nodes reach AWS through
    /// the endpoints alone.
    Private,
    /// Only when the spec asks for VPC endpoints.
    WithEndpoints,
    /// Only when the spec asks for peering connections.
    WithPeering,
    /// Only when the spec asks for a log group (`logging`).
    WithLogging,
    /// Only when the spec asks for storage (`storage`: its key).
    WithStorage,
}

/// What of the graph a spec uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub public_nodes: bool,
    pub internet: bool,
    pub nat: bool,
    pub endpoints: bool,
    pub peering: bool,
    pub logging: bool,
    pub storage: bool,
}

impl Shape {
    /// A managed network with internet and a NAT gateway, private nodes,
    /// no endpoints or peering: the benchmark's cluster.
    pub const BASIC: Shape = Shape {
        public_nodes: false,
        internet: true,
        nat: true,
        endpoints: false,
        peering: false,
        logging: false,
        storage: false,
    };

    pub fn holds(&self, when: When) -> bool {
        match when {
            When::Always => true,
            When::PublicNodes => self.public_nodes,
            When::Internet => self.internet,
            When::Nat => self.nat,
            When::Private => !self.internet,
            When::WithEndpoints => self.endpoints,
            When::WithPeering => self.peering,
            When::WithLogging => self.logging,
            When::WithStorage => self.storage,
        }
    }
}

pub struct StepDef {
    pub step: Step,
    /// The step itself, in its kind's module.
    pub run: Run,
    /// Its kind's part of deletion, for a step that makes what
    /// [`DELETION`] removes (`None`: deleted with another kind's, see
    /// [`deleted_with`]).
    pub delete: Option<DeleteFn>,
    /// What its step learned, into the pass's progress, and whether what
    /// it makes is in place (`None`: in place once it ran).
    pub learn: Option<LearnFn>,
    /// What of its kind AWS is still making, for the shared wait.
    pub pending: Option<PendingFn>,
    /// When the step runs. Off it, the executor runs it only to remove
    /// what an older spec made (`leftover`), else it is in place with no
    /// call.
    pub runs: When,
    /// Whether, off its shape, something of an older spec's is left to
    /// remove (`None`: never; nothing the step makes outlives its shape).
    pub leftover: Option<LeftoverFn>,
    /// It is part of the network: the network is ready when every such
    /// step is in place.
    pub network: bool,
    pub needs: &'static [(Step, When)],
    /// The calls it makes in sequence when everything is new (calls it
    /// makes at once count as one).
    pub calls: &'static [&'static str],
}

use Step::*;
use When::*;

/// Every step, each after the steps it needs. Before any of them, one
/// round of describes finds what exists.
pub const STEPS: &[StepDef] = &[
    StepDef {
        runs: Always,
        leftover: None,
        step: Vpc,
        run: Run::Any(vpc::step),
        learn: None,
        pending: None,
        network: true,
        delete: Some(vpc::deletion),
        needs: &[],
        calls: &["CreateVpc"],
    },
    StepDef {
        runs: Always,
        leftover: None,
        step: VpcDns,
        run: Run::Managed(vpc::dns_step),
        learn: Some(vpc::learn_dns),
        pending: None,
        network: true,
        delete: None,
        needs: &[(Vpc, Always)],
        calls: &["ModifyVpcAttribute"],
    },
    StepDef {
        runs: Always,
        leftover: None,
        step: Iam,
        run: Run::Any(iam::step),
        learn: Some(iam::learn),
        pending: None,
        network: false,
        delete: Some(iam::deletion),
        needs: &[],
        calls: &["CreateRole", "AddRoleToInstanceProfile"],
    },
    StepDef {
        runs: Always,
        leftover: None,
        step: Images,
        run: Run::Any(images::step),
        learn: None,
        pending: None,
        network: false,
        delete: None,
        needs: &[],
        calls: &["DescribeInstanceTypes", "DescribeImages"],
    },
    StepDef {
        runs: Always,
        leftover: None,
        step: KeyPairs,
        run: Run::Any(key_pairs::step),
        learn: None,
        pending: None,
        network: false,
        delete: Some(key_pairs::deletion),
        needs: &[],
        calls: &["ImportKeyPair"],
    },
    StepDef {
        runs: Nat,
        leftover: Some(nat_gateways::leftover),
        step: Addresses,
        run: Run::Managed(nat_gateways::addresses_step),
        learn: None,
        pending: None,
        network: true,
        delete: None,
        needs: &[],
        calls: &["AllocateAddress"],
    },
    StepDef {
        runs: Always,
        leftover: None,
        step: Subnets,
        run: Run::Managed(subnets::step),
        learn: Some(subnets::learn),
        pending: None,
        network: true,
        delete: Some(subnets::deletion),
        needs: &[(Vpc, Always)],
        calls: &["CreateSubnet"],
    },
    StepDef {
        runs: Internet,
        leftover: None,
        step: PublicIps,
        run: Run::Managed(subnets::public_ips_step),
        learn: None,
        pending: None,
        network: true,
        delete: None,
        needs: &[(Subnets, Always)],
        calls: &["ModifySubnetAttribute"],
    },
    StepDef {
        runs: Internet,
        leftover: None,
        step: InternetGateway,
        run: Run::Managed(internet_gateway::step),
        learn: Some(internet_gateway::learn),
        pending: None,
        network: true,
        delete: Some(internet_gateway::deletion),
        needs: &[(Vpc, Always)],
        calls: &["CreateInternetGateway", "AttachInternetGateway"],
    },
    StepDef {
        runs: Always,
        leftover: None,
        step: SecurityGroup,
        run: Run::Any(security_group::step),
        learn: Some(security_group::learn),
        pending: None,
        network: true,
        delete: Some(security_group::deletion),
        needs: &[(Vpc, Always)],
        calls: &["CreateSecurityGroup", "AuthorizeSecurityGroupIngress"],
    },
    StepDef {
        runs: Nat,
        leftover: Some(nat_gateways::leftover),
        step: NatGateways,
        run: Run::Managed(nat_gateways::step),
        learn: Some(nat_gateways::learn),
        pending: Some(nat_gateways::pending),
        network: true,
        delete: Some(nat_gateways::deletion),
        needs: &[(Subnets, Always), (Addresses, Always)],
        calls: &["CreateNatGateway", "DescribeNatGateways (available)"],
    },
    StepDef {
        runs: Always,
        leftover: None,
        step: RouteTables,
        run: Run::Managed(route_tables::step),
        learn: Some(route_tables::learn),
        pending: None,
        network: true,
        delete: Some(route_tables::deletion),
        needs: &[(Vpc, Always), (Subnets, Always)],
        calls: &["CreateRouteTable", "AssociateRouteTable"],
    },
    StepDef {
        runs: Internet,
        leftover: None,
        step: PublicRoute,
        run: Run::Managed(route_tables::public_route_step),
        learn: None,
        pending: None,
        network: true,
        delete: None,
        needs: &[(RouteTables, Always), (InternetGateway, Always)],
        calls: &["CreateRoute (public)"],
    },
    StepDef {
        runs: Nat,
        leftover: None,
        step: PrivateRoutes,
        run: Run::Managed(route_tables::private_routes_step),
        learn: Some(route_tables::learn_private_routes),
        pending: None,
        network: true,
        delete: None,
        needs: &[(RouteTables, Always), (NatGateways, Always)],
        calls: &["CreateRoute (private, via NAT)"],
    },
    StepDef {
        runs: WithEndpoints,
        leftover: Some(endpoints::leftover),
        step: EndpointGroup,
        run: Run::Managed(endpoints::group_step),
        learn: None,
        pending: None,
        network: true,
        delete: None,
        needs: &[(Vpc, Always)],
        calls: &[
            "CreateSecurityGroup (endpoints)",
            "AuthorizeSecurityGroupIngress",
        ],
    },
    StepDef {
        runs: WithEndpoints,
        leftover: Some(endpoints::leftover),
        step: Step::Endpoints,
        run: Run::Managed(endpoints::step),
        learn: Some(endpoints::learn),
        pending: Some(endpoints::pending),
        network: true,
        delete: Some(endpoints::deletion),
        needs: &[(RouteTables, Always), (EndpointGroup, Always)],
        calls: &["CreateVpcEndpoint", "DescribeVpcEndpoints (available)"],
    },
    StepDef {
        runs: WithPeering,
        leftover: Some(peering::leftover),
        step: Step::Peering,
        run: Run::Managed(peering::step),
        learn: Some(peering::learn),
        pending: Some(peering::pending),
        network: true,
        delete: Some(peering::deletion),
        needs: &[(Vpc, Always)],
        calls: &[
            "CreateVpcPeeringConnection",
            "AcceptVpcPeeringConnection",
            "DescribeVpcPeeringConnections (active)",
        ],
    },
    StepDef {
        runs: WithPeering,
        leftover: Some(peering::leftover),
        step: PeeringRoutes,
        run: Run::Managed(peering::routes_step),
        learn: None,
        pending: None,
        network: true,
        delete: None,
        needs: &[(RouteTables, Always), (Step::Peering, Always)],
        calls: &["CreateRoute (peering)"],
    },
    StepDef {
        runs: WithLogging,
        leftover: Some(log_group::leftover),
        step: LogGroup,
        run: Run::Any(log_group::step),
        learn: Some(log_group::learn),
        pending: None,
        network: false,
        delete: Some(log_group::deletion),
        needs: &[],
        calls: &["CreateLogGroup", "PutRetentionPolicy"],
    },
    StepDef {
        runs: WithStorage,
        leftover: Some(kms_key::leftover),
        step: KmsKey,
        run: Run::Any(kms_key::step),
        learn: Some(kms_key::learn),
        pending: None,
        network: false,
        delete: Some(kms_key::deletion),
        needs: &[],
        calls: &["ListKeys", "CreateKey", "CreateAlias", "EnableKeyRotation"],
    },
    StepDef {
        runs: Always,
        leftover: None,
        step: NodeGroups,
        run: Run::Any(node_groups::step),
        learn: Some(node_groups::learn),
        pending: Some(node_groups::pending),
        network: false,
        delete: Some(node_groups::deletion),
        needs: &[
            (Subnets, Always),
            (SecurityGroup, Always),
            (Iam, Always),
            (VpcDns, Always),
            (Images, Always),
            (KeyPairs, Always),
            (PublicIps, PublicNodes),
            (Step::Endpoints, Private),
        ],
        calls: &["RunInstances", "DescribeInstances (running)"],
    },
];

/// The order deletion removes the kinds in, each named by the step that
/// makes it: a kind only after every kind that needs it (the forward
/// needs, reversed), except where AWS lets the needed one go first
/// ([`CREATION_ONLY`]). Instances and NAT gateways take AWS a while to
/// delete: a pass stops after either while AWS still deletes it.
pub const DELETION: &[Step] = &[
    NodeGroups,
    KeyPairs,
    LogGroup,
    KmsKey,
    Step::Endpoints,
    Step::Peering,
    NatGateways,
    RouteTables,
    InternetGateway,
    Subnets,
    SecurityGroup,
    Vpc,
    Iam,
];

/// The kinds' deletes in [`DELETION`]'s order.
pub fn deletion_order() -> impl Iterator<Item = (Step, Option<DeleteFn>)> {
    DELETION.iter().map(|step| {
        let row = STEPS.iter().find(|d| d.step == *step);
        (*step, row.and_then(|d| d.delete))
    })
}

/// Needs that bind creation only: AWS deletes a NAT gateway that routes
/// still point to (they go blackhole), so the NAT gateways, the slowest to
/// delete, start before the route tables holding their routes.
pub const CREATION_ONLY: &[(Step, Step)] = &[(PrivateRoutes, NatGateways)];

/// The step of [`DELETION`] that removes what `step` made (its settings go
/// with the resource: DNS with the VPC, public IPs with the subnets, the
/// Elastic IPs with their NAT gateways, routes with their tables, the
/// endpoints' group with the nodes', the routes in a peer's tables with
/// their peering connection); `None`
/// for a step that makes nothing to delete.
pub fn deleted_with(step: Step) -> Option<Step> {
    match step {
        Images => None,
        VpcDns => Some(Vpc),
        PublicIps => Some(Subnets),
        Addresses => Some(NatGateways),
        PublicRoute | PrivateRoutes => Some(RouteTables),
        EndpointGroup => Some(SecurityGroup),
        PeeringRoutes => Some(Step::Peering),
        other => Some(other),
    }
}

/// The round of describes every pass starts with.
pub const OBSERVE: &str = "Describe* (observe)";

/// The steps a step waits for in a spec of `shape`.
pub fn needs(def: &StepDef, shape: Shape) -> impl Iterator<Item = Step> + '_ {
    def.needs
        .iter()
        .filter(move |(_, when)| shape.holds(*when))
        .map(|(step, _)| *step)
}

/// The longest chains of calls that wait for each other (as long as each
/// other: which one is slowest depends on how long AWS takes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CriticalPath {
    pub calls: usize,
    pub chains: Vec<Vec<&'static str>>,
}

pub fn critical_path(shape: Shape) -> CriticalPath {
    let longest = chains(shape);
    let calls = longest.iter().map(Vec::len).max().unwrap_or(1);
    CriticalPath {
        calls,
        chains: longest.into_iter().filter(|c| c.len() == calls).collect(),
    }
}

/// Per step, the longest chain of calls that ends with it (which chain
/// takes longest depends on how long AWS takes, e.g. a NAT gateway's
/// pending state on its chain).
pub fn chains(shape: Shape) -> Vec<Vec<&'static str>> {
    let mut longest: BTreeMap<Step, Vec<&'static str>> = BTreeMap::new();
    for def in STEPS {
        let before = needs(def, shape)
            .filter_map(|s| longest.get(&s))
            .max_by_key(|chain| chain.len())
            .cloned()
            .unwrap_or_else(|| vec![OBSERVE]);
        let calls = def.calls.iter().filter(|_| shape.holds(def.runs));
        let chain: Vec<&'static str> = before.into_iter().chain(calls.copied()).collect();
        longest.insert(def.step, chain);
    }
    longest.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_once_after_what_it_needs() {
        let mut seen: Vec<Step> = Vec::new();
        for def in STEPS {
            assert!(!seen.contains(&def.step), "{:?} declared twice", def.step);
            for (need, _) in def.needs {
                assert!(
                    seen.contains(need),
                    "{:?} needs {need:?}, declared after it",
                    def.step
                );
            }
            seen.push(def.step);
        }
        assert_eq!(seen.len(), 21);
    }

    #[test]
    fn the_kinds_in_the_deletion_order_are_those_rows_that_delete() {
        for (step, delete) in deletion_order() {
            assert!(delete.is_some(), "{step:?} is deleted without a delete");
        }
        for def in STEPS {
            assert_eq!(
                def.delete.is_some(),
                deleted_with(def.step) == Some(def.step),
                "{:?}: a delete exactly when the step's kind is deleted on its own",
                def.step
            );
            assert_eq!(
                def.delete.is_some(),
                DELETION.contains(&def.step),
                "{:?}",
                def.step
            );
        }
    }

    #[test]
    fn each_kind_is_deleted_only_after_everything_that_needs_it() {
        let at = |s: Step| DELETION.iter().position(|d| *d == s);
        for def in STEPS {
            let Some(mine) = deleted_with(def.step) else {
                continue;
            };
            assert!(at(mine).is_some(), "{:?} is never deleted", def.step);
            for (need, _) in def.needs {
                let Some(theirs) = deleted_with(*need).filter(|t| *t != mine) else {
                    continue;
                };
                if CREATION_ONLY.contains(&(def.step, *need)) {
                    continue;
                }
                assert!(
                    at(mine) < at(theirs),
                    "{:?} needs {need:?}: {mine:?} must be deleted before {theirs:?}",
                    def.step
                );
            }
        }
        let mut once = DELETION.to_vec();
        once.dedup();
        assert_eq!(once.len(), DELETION.len(), "a kind deleted twice");
    }

    #[test]
    fn critical_path_of_a_new_network() {
        let path = critical_path(Shape::BASIC);
        assert!(
            path.chains.contains(&vec![
                OBSERVE,
                "CreateVpc",
                "CreateSubnet",
                "CreateNatGateway",
                "DescribeNatGateways (available)",
                "CreateRoute (private, via NAT)"
            ]),
            "{path:?}"
        );
        assert_eq!(path.calls, 6);
        assert!(path.chains.iter().all(|c| c.len() == 6 && c[0] == OBSERVE));
        // Public nodes wait for the subnets' public IP setting too; the
        // NAT chain stays the longest.
        let public_nodes = Shape {
            public_nodes: true,
            ..Shape::BASIC
        };
        assert_eq!(critical_path(public_nodes).calls, 6);
    }

    #[test]
    fn critical_path_of_a_private_network_with_endpoints_and_peering() {
        let shape = Shape {
            internet: false,
            nat: false,
            endpoints: true,
            peering: true,
            ..Shape::BASIC
        };
        let path = critical_path(shape);
        assert_eq!(
            path.chains,
            vec![vec![
                OBSERVE,
                "CreateVpc",
                "CreateSubnet",
                "CreateRouteTable",
                "AssociateRouteTable",
                "CreateVpcEndpoint",
                "DescribeVpcEndpoints (available)",
                "RunInstances",
                "DescribeInstances (running)"
            ]],
            "private nodes wait for the endpoints"
        );
        let no_calls_of = |what: &str| path.chains.iter().flatten().all(|c| !c.contains(what));
        assert!(no_calls_of("Nat") && no_calls_of("InternetGateway"));
        // With internet, the nodes do not wait for the endpoints.
        let with_internet = critical_path(Shape {
            internet: true,
            nat: true,
            ..shape
        });
        assert_eq!(with_internet.calls, 7, "{with_internet:?}");
    }
}
