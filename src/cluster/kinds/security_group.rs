//! The nodes' security group: the spec's ingress rules plus all traffic
//! between the nodes; rules added out of band are revoked. Deleted after the
//! instances that use it.

use futures::future::try_join_all;

use super::{got, put, Board, StepInput, StepResult};
use super::{iam::iam_name, Pass};
use crate::api::{IngressRule, Protocol};
use crate::aws::security_group::{self, GroupPart, ObservedSecurityGroup, Permission, Source};
use crate::aws::{AwsClients, AwsResult};
use crate::cluster::status::Progress;
use crate::Error;

/// The ingress the nodes' group should have: the spec's rules and all
/// traffic from the group itself.
pub fn desired_permissions(ingress: &[IngressRule], group_id: &str) -> Vec<Permission> {
    let mut out: Vec<Permission> = ingress
        .iter()
        .map(|r| {
            let (protocol, ports) = match r.protocol {
                Protocol::Tcp => ("tcp", Some((r.from_port, r.to_port))),
                Protocol::Udp => ("udp", Some((r.from_port, r.to_port))),
                Protocol::Icmp => ("icmp", Some((r.from_port, r.to_port))),
                Protocol::All => ("-1", None),
            };
            Permission {
                protocol: protocol.into(),
                from_port: ports.map(|p| p.0),
                to_port: ports.map(|p| p.1),
                source: Source::Cidr(r.cidr.clone()),
            }
        })
        .collect();
    out.push(Permission {
        protocol: "-1".into(),
        from_port: None,
        to_port: None,
        source: Source::Group(group_id.into()),
    });
    out.sort();
    out.dedup();
    out
}

/// The rules to authorize and to revoke.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleActions {
    pub authorize: Vec<Permission>,
    pub revoke: Vec<Permission>,
}

pub fn plan(ingress: &[IngressRule], group_id: &str, observed: &[Permission]) -> RuleActions {
    difference(&desired_permissions(ingress, group_id), observed)
}

/// What brings `observed` to `desired`.
pub fn difference(desired: &[Permission], observed: &[Permission]) -> RuleActions {
    RuleActions {
        authorize: desired
            .iter()
            .filter(|p| !observed.contains(p))
            .cloned()
            .collect(),
        revoke: observed
            .iter()
            .filter(|p| !desired.contains(p))
            .cloned()
            .collect(),
    }
}

/// The nodes' group in `vpc_id`.
pub async fn ensure(p: Pass<'_>, vpc_id: &str) -> Result<String, Error> {
    let name = iam_name(&p.spec.owner);
    ensure_group(p, vpc_id, GroupPart::Nodes, &name, |id| {
        desired_permissions(&p.spec.ingress, id)
    })
    .await
}

/// The cluster's group of `part` in `vpc_id`, made (as `name`) when
/// missing, its ingress brought to `desired` (given the group's ID).
pub async fn ensure_group(
    p: Pass<'_>,
    vpc_id: &str,
    part: GroupPart,
    name: &str,
    desired: impl Fn(&str) -> Vec<Permission>,
) -> Result<String, Error> {
    let existing = p
        .observed
        .security_groups
        .iter()
        .find(|g| g.vpc_id == vpc_id && g.part == part);
    let (id, current) = match existing {
        Some(g) => (g.id.clone(), g.ingress.clone()),
        None => (
            security_group::create(p.c, &p.spec.owner, vpc_id, name, part).await?,
            vec![],
        ),
    };
    let actions = difference(&desired(&id), &current);
    security_group::authorize(p.c, &id, &actions.authorize).await?;
    security_group::revoke(p.c, &id, &actions.revoke).await?;
    Ok(id)
}

pub async fn delete(c: &AwsClients, observed: &[ObservedSecurityGroup]) -> AwsResult<()> {
    try_join_all(observed.iter().map(|g| security_group::delete(c, &g.id))).await?;
    Ok(())
}

/// Step `SecurityGroup`: the nodes' group and its rules.
pub fn step<'a>(i: &'a StepInput<'a>, b: &'a Board) -> StepResult<'a> {
    Box::pin(async move { put(&b.sg, ensure(i.pass, got(&b.vpc, "the VPC")?).await?) })
}

/// This kind's part of a deletion pass (its row's `delete`).
pub fn deletion<'a>(
    c: &'a AwsClients,
    _: &'a crate::aws::OwnershipTags,
    o: &'a super::Observed,
) -> super::DeleteResult<'a> {
    super::at_once(delete(c, &o.security_groups))
}

/// Row `SecurityGroup`'s learning: its ID.
pub fn learn(b: &Board, p: &mut Progress) -> bool {
    let id = b.sg.get();
    id.map(|id| p.network.security_group_id = Some(id.clone()))
        .is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(port: i32, cidr: &str) -> IngressRule {
        IngressRule {
            protocol: Protocol::Tcp,
            from_port: port,
            to_port: port,
            cidr: cidr.into(),
        }
    }

    fn tcp(port: i32, cidr: &str) -> Permission {
        Permission {
            protocol: "tcp".into(),
            from_port: Some(port),
            to_port: Some(port),
            source: Source::Cidr(cidr.into()),
        }
    }

    fn nodes(group: &str) -> Permission {
        Permission {
            protocol: "-1".into(),
            from_port: None,
            to_port: None,
            source: Source::Group(group.into()),
        }
    }

    #[test]
    fn plan_authorizes_what_is_missing_and_revokes_strays() {
        let ssh = rule(22, "203.0.113.0/24");
        // (spec rules, observed, authorize, revoke, why)
        type Row<'a> = (
            Vec<IngressRule>,
            Vec<Permission>,
            Vec<Permission>,
            Vec<Permission>,
            &'a str,
        );
        let rows: Vec<Row> = vec![
            (
                vec![],
                vec![],
                vec![nodes("sg-1")],
                vec![],
                "a new group: node-to-node traffic",
            ),
            (
                vec![ssh.clone()],
                vec![nodes("sg-1")],
                vec![tcp(22, "203.0.113.0/24")],
                vec![],
                "a rule added to the spec",
            ),
            (
                vec![ssh.clone()],
                vec![
                    nodes("sg-1"),
                    tcp(22, "203.0.113.0/24"),
                    tcp(80, "0.0.0.0/0"),
                ],
                vec![],
                vec![tcp(80, "0.0.0.0/0")],
                "a rule added out of band is revoked",
            ),
            (
                vec![ssh.clone(), ssh.clone()],
                vec![nodes("sg-1"), tcp(22, "203.0.113.0/24")],
                vec![],
                vec![],
                "a rule written twice is one permission",
            ),
            (
                vec![],
                vec![nodes("sg-old")],
                vec![nodes("sg-1")],
                vec![nodes("sg-old")],
                "node traffic refers to the group itself",
            ),
        ];
        for (ingress, observed, authorize, revoke, why) in rows {
            assert_eq!(
                plan(&ingress, "sg-1", &observed),
                RuleActions { authorize, revoke },
                "{why}"
            );
        }
    }
}
