//! What keeps AWS from deleting a cluster's network: everything in its
//! VPCs that is not the cluster's, named in status so its owner can remove
//! it (the operator never deletes what is not the cluster's).

use crate::api::compute_cluster::DeletionBlocker;
use crate::aws::dependents::{self, Dependent};
use crate::aws::{AwsClients, AwsError, AwsResult};

use super::kinds::Observed;

/// What in the cluster's VPCs is not the cluster's and keeps AWS from
/// deleting them, looked up when AWS says something does.
pub async fn blockers_in(
    c: &AwsClients,
    uid: &str,
    observed: &Observed,
) -> AwsResult<Vec<DeletionBlocker>> {
    let vpc_ids: Vec<String> = observed.vpcs.iter().map(|v| v.id.clone()).collect();
    let nat_ids: Vec<String> = observed.nat_gateways.iter().map(|n| n.id.clone()).collect();
    let found = dependents::describe(c, &vpc_ids).await?;
    Ok(blockers(uid, &nat_ids, &found))
}

/// What in the cluster's VPCs keeps AWS from deleting them: everything
/// that is not the cluster's, except each VPC's default group, instances on
/// their way out, interfaces of the cluster's instances and NAT gateways
/// (AWS releases those), and interfaces of a foreign instance (the instance
/// is named instead).
pub fn blockers(uid: &str, nat_ids: &[String], found: &[Dependent]) -> Vec<DeletionBlocker> {
    let ours = |d: &Dependent| d.owner_uid.as_deref() == Some(uid);
    let our_instances: Vec<&str> = found
        .iter()
        .filter(|d| d.kind == "instance" && ours(d))
        .map(|d| d.id.as_str())
        .collect();
    found
        .iter()
        .filter(|d| !ours(d) && !d.default_group && !d.ending)
        .filter(|d| d.attached_to.is_none())
        .filter(|d| !nat_ids.iter().any(|n| d.detail.contains(n.as_str())))
        .chain(found.iter().filter(|d| {
            d.attached_to
                .as_deref()
                .is_some_and(|i| !our_instances.contains(&i))
                && !found
                    .iter()
                    .any(|x| Some(x.id.as_str()) == d.attached_to.as_deref())
        }))
        .map(|d| DeletionBlocker {
            kind: d.kind.to_string(),
            id: d.id.clone(),
            detail: d.detail.clone(),
        })
        .collect()
}

pub fn blocked_message(e: &AwsError, blockers: &[DeletionBlocker]) -> String {
    let listed: Vec<String> = blockers
        .iter()
        .map(|b| {
            if b.detail.is_empty() {
                format!("{} {}", b.kind, b.id)
            } else {
                format!("{} {} ({})", b.kind, b.id, b.detail)
            }
        })
        .collect();
    format!(
        "AWS refuses to delete the cluster's network ({}) while {} that {} not the cluster's {} in it: {}; remove {} (the operator never deletes what is not the cluster's) and deletion goes on",
        e.code().unwrap_or("DependencyViolation"),
        if blockers.len() == 1 { "something" } else { "things" },
        if blockers.len() == 1 { "is" } else { "are" },
        if blockers.len() == 1 { "is" } else { "are" },
        listed.join(", "),
        if blockers.len() == 1 { "it" } else { "them" },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(kind: &'static str, id: &str, owner: Option<&str>) -> Dependent {
        Dependent {
            kind,
            id: id.into(),
            detail: String::new(),
            owner_uid: owner.map(String::from),
            attached_to: None,
            default_group: false,
            ending: false,
        }
    }

    #[test]
    fn blockers_are_what_is_not_the_clusters() {
        let ours = Some("uid-1");
        let attached = |mut d: Dependent, to: &str| {
            d.attached_to = Some(to.into());
            d
        };
        let rows: Vec<(Dependent, bool, &str)> = vec![
            (
                dep("security-group", "sg-ours", ours),
                false,
                "the cluster's group",
            ),
            (
                Dependent {
                    default_group: true,
                    ..dep("security-group", "sg-default", None)
                },
                false,
                "the VPC's default group",
            ),
            (
                dep("security-group", "sg-elb", None),
                true,
                "a load balancer's group",
            ),
            (
                dep("network-interface", "eni-elb", None),
                true,
                "a free interface",
            ),
            (
                dep("network-interface", "eni-other", Some("uid-2")),
                true,
                "another cluster's interface",
            ),
            (
                dep("instance", "i-ours", ours),
                false,
                "the cluster's instance",
            ),
            (
                attached(dep("network-interface", "eni-of-ours", None), "i-ours"),
                false,
                "an interface of the cluster's instance",
            ),
            (
                dep("instance", "i-foreign", None),
                true,
                "a foreign instance",
            ),
            (
                attached(
                    dep("network-interface", "eni-of-foreign", None),
                    "i-foreign",
                ),
                false,
                "a foreign instance's interface: the instance is named",
            ),
            (
                attached(dep("network-interface", "eni-orphan", None), "i-unseen"),
                true,
                "an interface of an instance not seen in the VPC",
            ),
            (
                Dependent {
                    ending: true,
                    ..dep("instance", "i-ending", None)
                },
                false,
                "a foreign instance on its way out",
            ),
            (
                Dependent {
                    detail: "Interface for NAT Gateway nat-ours".into(),
                    ..dep("network-interface", "eni-nat", None)
                },
                false,
                "the interface of the cluster's NAT gateway",
            ),
        ];
        let found: Vec<Dependent> = rows.iter().map(|r| r.0.clone()).collect();
        let got: Vec<String> = blockers("uid-1", &["nat-ours".into()], &found)
            .into_iter()
            .map(|b| b.id)
            .collect();
        for (d, blocks, why) in &rows {
            assert_eq!(got.contains(&d.id), *blocks, "{}: {why}", d.id);
        }
    }
}
