//! The converge pass's dependency graph, declared once as data: each step,
//! what it needs, and the AWS calls it makes one after another when it
//! creates from nothing; and beside it the order of deletion, the same
//! kinds the other way round. `converge` runs the steps by it, `cleanup`
//! deletes by [`DELETION`]; the benchmark prices the critical path (the
//! longest chain of dependent calls).

use std::collections::BTreeMap;

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
    NodeGroups,
}

/// When a need applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    Always,
    /// Only when a node group launches into public subnets.
    PublicNodes,
}

pub struct StepDef {
    pub step: Step,
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
        step: Vpc,
        needs: &[],
        calls: &["CreateVpc"],
    },
    StepDef {
        step: VpcDns,
        needs: &[(Vpc, Always)],
        calls: &["ModifyVpcAttribute"],
    },
    StepDef {
        step: Iam,
        needs: &[],
        calls: &["CreateRole", "AddRoleToInstanceProfile"],
    },
    StepDef {
        step: Images,
        needs: &[],
        calls: &["DescribeInstanceTypes", "DescribeImages"],
    },
    StepDef {
        step: KeyPairs,
        needs: &[],
        calls: &["ImportKeyPair"],
    },
    StepDef {
        step: Addresses,
        needs: &[],
        calls: &["AllocateAddress"],
    },
    StepDef {
        step: Subnets,
        needs: &[(Vpc, Always)],
        calls: &["CreateSubnet"],
    },
    StepDef {
        step: PublicIps,
        needs: &[(Subnets, Always)],
        calls: &["ModifySubnetAttribute"],
    },
    StepDef {
        step: InternetGateway,
        needs: &[(Vpc, Always)],
        calls: &["CreateInternetGateway", "AttachInternetGateway"],
    },
    StepDef {
        step: SecurityGroup,
        needs: &[(Vpc, Always)],
        calls: &["CreateSecurityGroup", "AuthorizeSecurityGroupIngress"],
    },
    StepDef {
        step: NatGateways,
        needs: &[(Subnets, Always), (Addresses, Always)],
        calls: &["CreateNatGateway", "DescribeNatGateways (available)"],
    },
    StepDef {
        step: RouteTables,
        needs: &[(Vpc, Always), (Subnets, Always)],
        calls: &["CreateRouteTable", "AssociateRouteTable"],
    },
    StepDef {
        step: PublicRoute,
        needs: &[(RouteTables, Always), (InternetGateway, Always)],
        calls: &["CreateRoute (public)"],
    },
    StepDef {
        step: PrivateRoutes,
        needs: &[(RouteTables, Always), (NatGateways, Always)],
        calls: &["CreateRoute (private, via NAT)"],
    },
    StepDef {
        step: NodeGroups,
        needs: &[
            (Subnets, Always),
            (SecurityGroup, Always),
            (Iam, Always),
            (VpcDns, Always),
            (Images, Always),
            (KeyPairs, Always),
            (PublicIps, PublicNodes),
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
    NatGateways,
    RouteTables,
    InternetGateway,
    Subnets,
    SecurityGroup,
    Vpc,
    Iam,
];

/// Needs that bind creation only: AWS deletes a NAT gateway that routes
/// still point to (they go blackhole), so the NAT gateways, the slowest to
/// delete, start before the route tables holding their routes.
pub const CREATION_ONLY: &[(Step, Step)] = &[(PrivateRoutes, NatGateways)];

/// The step of [`DELETION`] that removes what `step` made (its settings go
/// with the resource: DNS with the VPC, public IPs with the subnets, the
/// Elastic IPs with their NAT gateways, routes with their tables); `None`
/// for a step that makes nothing to delete.
pub fn deleted_with(step: Step) -> Option<Step> {
    match step {
        Images => None,
        VpcDns => Some(Vpc),
        PublicIps => Some(Subnets),
        Addresses => Some(NatGateways),
        PublicRoute | PrivateRoutes => Some(RouteTables),
        other => Some(other),
    }
}

/// The round of describes every pass starts with.
pub const OBSERVE: &str = "Describe* (observe)";

/// The steps a step waits for, given whether any node group is public.
pub fn needs(def: &StepDef, public_nodes: bool) -> impl Iterator<Item = Step> + '_ {
    def.needs
        .iter()
        .filter(move |(_, when)| *when == Always || public_nodes)
        .map(|(step, _)| *step)
}

/// The longest chains of calls that wait for each other (as long as each
/// other: which one is slowest depends on how long AWS takes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CriticalPath {
    pub calls: usize,
    pub chains: Vec<Vec<&'static str>>,
}

pub fn critical_path(public_nodes: bool) -> CriticalPath {
    let longest = chains(public_nodes);
    let calls = longest.iter().map(Vec::len).max().unwrap_or(1);
    CriticalPath {
        calls,
        chains: longest.into_iter().filter(|c| c.len() == calls).collect(),
    }
}

/// Per step, the longest chain of calls that ends with it (which chain
/// takes longest depends on how long AWS takes, e.g. a NAT gateway's
/// pending state on its chain).
pub fn chains(public_nodes: bool) -> Vec<Vec<&'static str>> {
    let mut longest: BTreeMap<Step, Vec<&'static str>> = BTreeMap::new();
    for def in STEPS {
        let before = needs(def, public_nodes)
            .filter_map(|s| longest.get(&s))
            .max_by_key(|chain| chain.len())
            .cloned()
            .unwrap_or_else(|| vec![OBSERVE]);
        let chain: Vec<&'static str> = before
            .into_iter()
            .chain(def.calls.iter().copied())
            .collect();
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
        assert_eq!(seen.len(), 15);
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
        let path = critical_path(false);
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
        assert_eq!(critical_path(true).calls, 6);
    }
}
